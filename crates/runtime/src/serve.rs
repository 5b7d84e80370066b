//! The control plane's gRPC port (ADS, the proxies' audit log and the `remora.v1` API) and
//! the shutdown of the tasks that serve it.

use std::{fmt::Display, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use remora_admin::{Access, Certificates, Open, ProxiesService};
use remora_audit::{AuditLog, AuditService, AuditedAllow};
use remora_xds::{Admission, AdsServer, Limits, Refusal, Refusals, StreamAge};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tonic::service::Routes;
use tracing::{error, warn};

use remora_identity::serve::{ConnectionCap, Transport, incoming};

use crate::pipeline::PipelineState;

/// How long connections get to close on shutdown before they are cut.
pub const DRAIN: Duration = Duration::from_secs(2);

/// How the gRPC port is secured, what else it serves, and how long its ADS streams live.
pub struct Serving {
    /// TLS, or plaintext where nothing else can reach the port.
    pub transport: Transport,
    /// What an ADS stream must show before it is served.
    pub admission: Admission,
    /// Who may use the `remora.v1.Proxies` API.
    pub access: Arc<dyn Access>,
    /// The proxies' certificates, which the API lists with them (`None`: no identities).
    pub certificates: Option<Arc<dyn Certificates>>,
    /// More services on the same port (the controller's certificate service).
    pub more: Option<Routes>,
    /// How long an ADS stream lives before its proxy is sent to reconnect (a connection is
    /// told to go away at the maximum age too); a clone counts the streams ended by age.
    pub stream_age: StreamAge,
    /// What each client may hold of the server.
    pub limits: Limits,
    /// Every client cut off, counted by why; the caller keeps a clone to read.
    pub refusals: Refusals,
    /// Where the proxies' reports of what audit rules would have denied are counted; the
    /// caller keeps a clone to read.
    pub audit: Arc<AuditLog>,
}

/// How often an idle connection is pinged, and how long the answer may take.
const KEEPALIVE: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Streams of any service one connection may hold (hyper's default, which tonic lifts).
const MAX_STREAMS: u32 = 200;

impl Serving {
    /// Plaintext, and open to everyone: `remora local --insecure` on a laptop, benchmarks.
    pub fn insecure() -> Serving {
        Serving {
            transport: Transport::Plaintext,
            admission: Admission::Open,
            access: Arc::new(Open),
            certificates: None,
            more: None,
            stream_age: StreamAge::default(),
            limits: Limits::default(),
            refusals: Refusals::default(),
            audit: Arc::default(),
        }
    }
}

impl PipelineState {
    /// Serves ADS and the `remora.v1` API on `listener`, as `serving` says, until `stop`
    /// turns true: then every stream ends (proxies keep their config and reconnect to
    /// another control plane) and the future completes once the connections closed.
    /// `response_budget`: bytes of responses built but not yet written, across all streams.
    pub fn serve(
        &self,
        listener: TcpListener,
        stop: watch::Receiver<bool>,
        response_budget: usize,
        serving: Serving,
    ) -> impl Future<Output = Result<(), tonic::transport::Error>> + Send + 'static {
        let mut stopped = stop.clone();
        let mesh = self.mesh.clone();
        let audited_allow: AuditedAllow = Arc::new(move |proxy| {
            let authz = mesh.lock().proxy_authorization(proxy);
            authz.map(|a| a.audited_allow_rules()).unwrap_or_default()
        });
        let audit = AuditService::new(
            serving.audit.clone(),
            serving.admission,
            audited_allow,
            stop.clone(),
        );
        let ads = AdsServer::new(self.cache.clone(), self.status.clone(), stop)
            .response_budget(response_budget)
            .admission(serving.admission)
            .stream_age(serving.stream_age.clone())
            .limits(serving.limits.clone())
            .refusals(serving.refusals.clone())
            .into_service();
        let refusals = serving.refusals.clone();
        let cap = ConnectionCap {
            max: serving.limits.connections,
            refused: Arc::new(move || refusals.count(Refusal::Connection)),
        };
        let mut proxies =
            ProxiesService::new(self.fleet.clone(), self.mesh.clone(), serving.access);
        if let Some(certificates) = serving.certificates {
            proxies = proxies.with_certificates(certificates);
        }
        let mut routes = serving.more.unwrap_or_default();
        routes = routes
            .add_service(ads)
            .add_service(proxies.into_service())
            .add_service(audit);
        tonic::transport::Server::builder()
            // GOAWAY at the maximum age, before the stream ends at its age plus jitter: the
            // proxy then reconnects over a new connection (see `remora_xds::StreamAge`).
            .max_connection_age(serving.stream_age.max())
            // A peer that stops answering pings is gone: its connection and streams close
            // instead of holding their state until TCP gives up.
            .http2_keepalive_interval(Some(KEEPALIVE))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            // Beyond this the connection refuses streams itself; ADS streams are held to
            // `limits.streams_per_connection` before that, and counted.
            .max_concurrent_streams(Some(MAX_STREAMS))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming(listener, serving.transport, cap), async move {
                // A dropped sender is a stop too.
                let _stopped = stopped.wait_for(|s| *s).await;
            })
    }
}

/// Listens on `addr`, and says on which address (the port the system chose for port 0).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

/// Runs a server in a task of its own; an error that ends it is logged.
pub fn spawn_server<E: Display>(
    what: &'static str,
    server: impl Future<Output = Result<(), E>> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = server.await {
            error!(server = what, error = %e, "server stopped");
        }
    })
}

/// Waits up to [`DRAIN`] for a stopping task, then cuts it. Returns its output when it
/// finished by itself; a panic is logged.
pub async fn drain<T>(mut task: JoinHandle<T>) -> Option<T> {
    match tokio::time::timeout(DRAIN, &mut task).await {
        Ok(joined) => report(joined),
        Err(_) => {
            warn!(waited = ?DRAIN, "a task did not stop in time; cutting it");
            cancel(task).await
        }
    }
}

/// Cancels a task and waits until it is gone. Returns its output if it had finished; a
/// panic is logged (a cancellation is the expected outcome, not an error).
pub async fn cancel<T>(task: JoinHandle<T>) -> Option<T> {
    task.abort();
    report(task.await)
}

fn report<T>(joined: Result<T, tokio::task::JoinError>) -> Option<T> {
    match joined {
        Ok(out) => Some(out),
        Err(e) if e.is_panic() => {
            error!(error = %e, "a task panicked");
            None
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_returns_what_a_finished_task_gave() {
        let task = tokio::spawn(async { 7 });
        assert_eq!(drain(task).await, Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn drain_cuts_a_task_that_does_not_stop() {
        let task = tokio::spawn(std::future::pending::<u8>());
        assert_eq!(drain(task).await, None);
    }

    #[tokio::test]
    async fn cancel_reports_a_panicked_task_as_no_output() {
        let task = tokio::spawn(async { panic!("boom") });
        tokio::task::yield_now().await;
        assert_eq!(cancel::<()>(task).await, None);
    }
}
