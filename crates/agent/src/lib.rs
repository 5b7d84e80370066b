//! The identity agent beside each sidecar (`remora agent`).
//!
//! It makes the workload's key in the pod, gets a certificate for the pod's SPIFFE ID from
//! the control plane (`remora.v1.Identity/Certify`: first proved by the pod's projected
//! ServiceAccount token, then by the certificate itself), renews it at about half its
//! lifetime, and serves it with the trust bundle to the pod's Envoy over SDS on a Unix socket
//! ([`remora_envoy::sds`] has the names). The key never leaves the pod.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod renew;
mod sds;
mod secrets;
mod sotw;

use std::{future::Future, path::PathBuf, time::Duration};

use remora_identity::SpiffeId;
use tokio::sync::oneshot;
use tokio_rustls::rustls::pki_types::ServerName;

use client::CaClient;
pub use remora_identity::TrustBundle;
use renew::Keeper;
pub use renew::{MIN_RENEW_DELAY, RENEW_JITTER, RETRY_MAX, renew_delay};
pub use sds::{SdsError, bind, serve};
pub use secrets::{Publisher, Secrets};

/// Where the kubelet puts the pod's projected token for the `remora` audience.
pub const DEFAULT_TOKEN_FILE: &str = "/var/run/secrets/remora/tokens/token";
/// How long the SDS server gets to close its streams when the agent stops.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// What the agent needs to know.
#[derive(Clone, Debug)]
pub struct Config {
    /// The control plane's gRPC port, `host:port`.
    pub control_plane: String,
    /// The name the control plane's certificate must be valid for.
    pub server_name: String,
    /// The roots the control plane's certificate must chain to.
    pub trust: TrustBundle,
    /// The pod's projected ServiceAccount token (audience `remora`), read at each use.
    pub token_file: PathBuf,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's service account.
    pub service_account: String,
    /// Where to serve SDS.
    pub sds_socket: PathBuf,
    /// The mesh's trust domain.
    pub trust_domain: String,
}

/// Why the agent cannot run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The SDS server could not start or stopped.
    #[error(transparent)]
    Sds(#[from] SdsError),
    /// The control plane's name is not a DNS name or an IP address.
    #[error(
        "server name {0:?} is not a DNS name or IP address; give the control plane's Service DNS name"
    )]
    ServerName(String),
    /// The control plane's address is not `host:port`.
    #[error("control plane address {0:?} is not host:port (e.g. remora.remora-system.svc:18000)")]
    Address(String),
    /// The identity settings do not make a SPIFFE ID.
    #[error(
        "namespace {namespace:?}, service account {service_account:?} and trust domain \
         {trust_domain:?} make no SPIFFE ID; set them from the pod (REMORA_POD_NAMESPACE, \
         REMORA_SERVICE_ACCOUNT) and the mesh's trust domain"
    )]
    Identity {
        /// The namespace given.
        namespace: String,
        /// The service account given.
        service_account: String,
        /// The trust domain given.
        trust_domain: String,
    },
    /// The pod's name is empty.
    #[error("the pod's name is empty; set it from the pod (REMORA_POD_NAME)")]
    Pod,
    /// A task of the agent panicked.
    #[error("the SDS server task failed: {0}")]
    Task(String),
}

impl Config {
    /// The workload's SPIFFE ID.
    pub fn spiffe_id(&self) -> Result<SpiffeId, AgentError> {
        let id = SpiffeId::new(&self.trust_domain, &self.namespace, &self.service_account);
        // Parsing the written form checks every part as the CA and Envoy will read it.
        id.to_string()
            .parse::<SpiffeId>()
            .map_err(|_| AgentError::Identity {
                namespace: self.namespace.clone(),
                service_account: self.service_account.clone(),
                trust_domain: self.trust_domain.clone(),
            })
    }

    /// The part of the agent that gets and renews certificates.
    fn keeper(&self) -> Result<Keeper, AgentError> {
        let id = self.spiffe_id()?;
        if self.pod.is_empty() {
            return Err(AgentError::Pod);
        }
        let server_name = ServerName::try_from(self.server_name.clone())
            .map_err(|_| AgentError::ServerName(self.server_name.clone()))?;
        let address_ok = self
            .control_plane
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !address_ok {
            return Err(AgentError::Address(self.control_plane.clone()));
        }
        let client = CaClient::new(
            self.control_plane.clone(),
            server_name,
            self.trust.clone(),
            self.token_file.clone(),
        );
        Ok(Keeper::new(
            client,
            id,
            format!("{}/{}", self.namespace, self.pod),
        ))
    }
}

/// Runs the agent until `shutdown` completes: serves SDS at once (Envoy's requests wait for
/// the first certificate), gets the certificate and keeps it fresh.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let keeper = config.keeper()?;
    let listener = sds::bind(&config.sds_socket)?;
    let (publisher, secrets) = Publisher::new();
    let (stop, stopped) = oneshot::channel::<()>();
    let mut server = tokio::spawn(sds::serve(listener, secrets, async {
        // A dropped sender is a stop too.
        let _stop = stopped.await;
    }));
    tracing::info!(
        socket = %config.sds_socket.display(),
        control_plane = %config.control_plane,
        "serving SDS; getting the workload certificate"
    );
    tokio::select! {
        () = shutdown => {}
        never = keeper.run(publisher) => match never {},
        ended = &mut server => return joined(ended),
    }
    // The keeper and its publisher are gone: the open SDS streams end, and the server stops.
    tracing::info!("stopping: closing the SDS streams");
    drop(stop);
    match tokio::time::timeout(STOP_TIMEOUT, &mut server).await {
        Ok(ended) => joined(ended),
        Err(_) => {
            server.abort();
            tracing::warn!("the SDS server did not stop in time; cut it");
            Ok(())
        }
    }
}

fn joined(ended: Result<Result<(), SdsError>, tokio::task::JoinError>) -> Result<(), AgentError> {
    ended
        .map_err(|e| AgentError::Task(e.to_string()))?
        .map_err(AgentError::from)
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use remora_identity::MeshCa;

    use super::*;

    fn config() -> Config {
        let ca = MeshCa::generate("cluster.local", SystemTime::now()).expect("a CA");
        Config {
            control_plane: "remora.remora-system.svc:18000".into(),
            server_name: "remora.remora-system.svc".into(),
            trust: ca.bundle().clone(),
            token_file: DEFAULT_TOKEN_FILE.into(),
            namespace: "shop".into(),
            pod: "web-0".into(),
            service_account: "reviews".into(),
            sds_socket: "/nonexistent/socket".into(),
            trust_domain: "cluster.local".into(),
        }
    }

    #[test]
    fn the_identity_is_the_pods_service_account_in_the_trust_domain() {
        let id = config().spiffe_id().expect("an ID");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/reviews");
        assert!(config().keeper().is_ok());
    }

    #[test]
    fn settings_that_cannot_work_are_refused_before_anything_runs() {
        let refused = |change: fn(&mut Config)| {
            let mut c = config();
            change(&mut c);
            c.keeper().map(|_| ()).expect_err("refused")
        };
        let e = refused(|c| c.service_account.clear());
        assert!(matches!(e, AgentError::Identity { .. }), "{e}");
        let e = refused(|c| c.trust_domain = "Cluster.Local".into());
        assert!(matches!(e, AgentError::Identity { .. }), "{e}");
        let e = refused(|c| c.pod.clear());
        assert!(matches!(e, AgentError::Pod), "{e}");
        let e = refused(|c| c.server_name = "not a name!".into());
        assert!(matches!(e, AgentError::ServerName(_)), "{e}");
        for address in ["remora", "remora:http", ":18000"] {
            let mut c = config();
            c.control_plane = address.into();
            let e = c.keeper().map(|_| ()).expect_err("refused");
            assert!(matches!(e, AgentError::Address(_)), "{address}: {e}");
        }
    }

    #[tokio::test]
    async fn run_stops_at_once_on_a_socket_it_cannot_make() {
        let ended = run(config(), std::future::pending()).await;
        assert!(
            matches!(ended, Err(AgentError::Sds(SdsError::Socket { .. }))),
            "{ended:?}"
        );
    }
}
