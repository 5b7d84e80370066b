//! The access log service the proxies stream their audit entries to: the edge where gRPC
//! becomes [`Denial`]s in the shared [`AuditLog`].

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::SystemTime,
};

use envoy_types::pb::envoy::service::accesslog::v3::{
    StreamAccessLogsMessage, StreamAccessLogsResponse,
    access_log_service_server::{AccessLogService, AccessLogServiceServer},
    stream_access_logs_message::LogEntries,
};
use remora_api::access_policy::AuditedDenial;
use remora_envoy::{audit::is_enforced_denial, node::proxy_of};
use remora_identity::Peer;
use remora_model::input::ObjectKey;
use remora_xds::Admission;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info_span};

use crate::{AuditWindow, Counted, Denial, entry::denials};

/// The would-be denials of every proxy this replica serves, shared with the status pass.
#[derive(Debug, Default)]
pub struct AuditLog {
    window: Mutex<AuditWindow>,
}

impl AuditLog {
    fn window(&self) -> MutexGuard<'_, AuditWindow> {
        // Plain counts: a panic elsewhere leaves them fit to use.
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one would-be denial at `at`.
    pub fn record(&self, at: SystemTime, denial: Denial) {
        self.window().record(at, denial, 1);
    }

    /// What `policy`'s audit rules would have denied in the window ending `now`.
    pub fn denials(&self, policy: &ObjectKey, now: SystemTime) -> Vec<AuditedDenial> {
        self.window().denials(policy, now)
    }

    /// What this replica counted, to report to the others.
    pub fn snapshot(&self) -> Vec<Counted> {
        self.window().snapshot()
    }

    /// This replica's counts with the other replicas' `reports` added: the whole fleet's.
    pub fn with<'a>(&self, reports: impl IntoIterator<Item = &'a [Counted]>) -> AuditWindow {
        let mut all = self.window().clone();
        for counted in reports {
            all.add(counted);
        }
        all
    }

    /// Forgets what fell out of the window, and says how many entries were refused because
    /// the window was full.
    pub fn prune(&self, now: SystemTime) -> u64 {
        let mut w = self.window();
        w.prune(now);
        w.dropped()
    }
}

/// The names of the allow rules a proxy only audits (`<ns>/<policy>/<rule>`), from the
/// model: a request the proxy reports none of its allow rules allows counts under them.
pub type AuditedAllow = Arc<dyn Fn(&ObjectKey) -> Vec<Arc<str>> + Send + Sync>;

/// `envoy.service.accesslog.v3.AccessLogService`, admitting a stream as ADS does: under
/// [`Admission::Certificate`], only the pod the client certificate names may report.
pub struct AuditService {
    log: Arc<AuditLog>,
    admission: Admission,
    audited_allow: AuditedAllow,
    stop: watch::Receiver<bool>,
}

impl AuditService {
    /// The service, counting into `log`, ending every stream once `stop` turns true.
    pub fn new(
        log: Arc<AuditLog>,
        admission: Admission,
        audited_allow: AuditedAllow,
        stop: watch::Receiver<bool>,
    ) -> AccessLogServiceServer<AuditService> {
        AccessLogServiceServer::new(AuditService {
            log,
            admission,
            audited_allow,
            stop,
        })
    }

    /// Reads a stream until it ends, the proxy's first message having said who it is.
    async fn read(
        &self,
        peer: Option<Peer>,
        mut stream: Streaming<StreamAccessLogsMessage>,
    ) -> Result<(), Status> {
        let mut proxy: Option<ObjectKey> = None;
        while let Some(message) = stream.message().await? {
            if proxy.is_none() {
                let node = message
                    .identifier
                    .as_ref()
                    .and_then(|i| i.node.as_ref())
                    .ok_or_else(|| Status::invalid_argument("the first message names no node"))?;
                let key = proxy_of(node).map_err(|e| Status::invalid_argument(e.to_string()))?;
                self.admission.admit(peer.as_ref(), &key)?;
                debug!(proxy = %key, "audit stream opened");
                proxy = Some(key);
            }
            if let Some(proxy) = &proxy {
                self.count(proxy, message);
            }
        }
        Ok(())
    }

    fn count(&self, proxy: &ObjectKey, message: StreamAccessLogsMessage) {
        let now = SystemTime::now();
        // Asked once per message, and only when some entry needs it.
        let mut audited: Option<Vec<Arc<str>>> = None;
        let mut audited_allow = || {
            audited
                .get_or_insert_with(|| (self.audited_allow)(proxy))
                .clone()
        };
        let found: Vec<Denial> = match message.log_entries {
            Some(LogEntries::HttpLogs(logs)) => logs
                .log_entry
                .iter()
                .flat_map(|e| {
                    let details = e.response.as_ref().map_or("", |r| &r.response_code_details);
                    let common = e.common_properties.clone().unwrap_or_default();
                    denials(&common, is_enforced_denial(details), &audited_allow())
                })
                .collect(),
            Some(LogEntries::TcpLogs(logs)) => logs
                .log_entry
                .iter()
                .flat_map(|e| {
                    let common = e.common_properties.clone().unwrap_or_default();
                    let enforced = is_enforced_denial(&common.connection_termination_details);
                    denials(&common, enforced, &audited_allow())
                })
                .collect(),
            None => Vec::new(),
        };
        for d in found {
            self.log.record(now, d);
        }
    }
}

#[tonic::async_trait]
impl AccessLogService for AuditService {
    async fn stream_access_logs(
        &self,
        request: Request<Streaming<StreamAccessLogsMessage>>,
    ) -> Result<Response<StreamAccessLogsResponse>, Status> {
        let peer = request.extensions().get::<Peer>().cloned();
        let mut stop = self.stop.clone();
        let read = self.read(peer, request.into_inner());
        tokio::select! {
            result = read.instrument(info_span!("audit stream")) => result?,
            // The proxy reconnects to another replica, as its ADS stream does.
            _ = stop.wait_for(|s| *s) => {}
        }
        Ok(Response::new(StreamAccessLogsResponse {}))
    }
}
