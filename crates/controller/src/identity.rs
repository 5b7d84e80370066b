//! Workload identities in a cluster: the mesh CA from its Secret (created by the first replica
//! that finds none), the certificate service on the gRPC port, the control plane's own serving
//! certificate from that CA (renewed at half its life), and the TLS the port is served with.
//! A changed Secret (a bring-your-own intermediate, a root rotation) is picked up within
//! [`RELOAD_EVERY`]: new certificates come from the new CA, the port trusts the new bundle,
//! and pods injected from then on get it.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::{
    Api, Client,
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use remora_admin::{Certificate, Certificates};
use remora_api::spiffe::SpiffeId;
use remora_ca::{
    CaMetrics, IdentityService, Issuances, Refusals, SecretError, SharedCa,
    TokenReviewAuthenticator, load_or_create, mesh_ca_from_secret,
};
use remora_identity::{
    CertifiedIdentity, CurrentCert, Grant, MeshCa, PkiError,
    serve::{TlsServing, Transport},
    tls::{ClientAuth, server_config},
};
use remora_inject::MeshIdentity;
use remora_model::input::ObjectKey;
use remora_runtime::Serving;
use remora_xds::Admission;
use tokio::{sync::watch, task::JoinHandle};
use tonic::service::Routes;
use tracing::{info, warn};

use crate::access::RbacAccess;

/// The Secret holding the mesh CA when none is named.
pub const DEFAULT_CA_SECRET: &str = "remora-mesh-ca";
/// How often the CA's Secret is read again, for a rotation or a new intermediate.
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);

/// How the control plane gives workloads their identities.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// The trust domain of every SPIFFE ID, e.g. `cluster.local`.
    pub trust_domain: String,
    /// The control plane's namespace, where the CA's Secret lives.
    pub namespace: String,
    /// The CA's Secret (`kubernetes.io/tls`: tls.crt, tls.key, ca.crt).
    pub ca_secret: String,
    /// How long a workload's certificate is valid (renewed at half that).
    pub cert_ttl: Duration,
    /// The control plane's own service account: its SPIFFE ID, which proxies check.
    pub service_account: String,
    /// The names and addresses proxies and agents reach the control plane by, for its
    /// serving certificate.
    pub server_names: Vec<String>,
}

/// Why identities could not start.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The CA's Secret could not be read, created or used.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The control plane's serving certificate could not be made.
    #[error("cannot issue the control plane's serving certificate: {0}")]
    Serving(#[from] PkiError),
}

/// Identities, running: what the gRPC port is served with, what injected pods are given, and
/// the task that keeps both current.
pub struct Identities {
    /// TLS, proxies admitted by their certificates, the API behind RBAC, the certificate
    /// service beside them.
    pub serving: Serving,
    /// What the injector gives each new pod (the trust bundle follows the Secret).
    pub mesh: watch::Receiver<MeshIdentity>,
    /// Renews the serving certificate and reloads the Secret.
    pub task: JoinHandle<()>,
}

/// Loads (or creates) the CA and starts serving identities, counting into `metrics` and
/// recording each pod's latest certificate in `issuances`.
pub async fn start(
    client: &Client,
    config: IdentityConfig,
    metrics: CaMetrics,
    issuances: Issuances,
) -> Result<Identities, IdentityError> {
    let ca = load_or_create(
        client.clone(),
        &config.namespace,
        &config.ca_secret,
        &config.trust_domain,
    )
    .await?;
    let own = SpiffeId::new(
        &config.trust_domain,
        &config.namespace,
        &config.service_account,
    );
    let cert = CurrentCert::default();
    let not_after = renew_serving(&ca, &own, &config, &cert)?;
    let tls = TlsServing::new(server_config(
        cert.clone(),
        ca.bundle(),
        ClientAuth::Optional,
    )?);
    let (mesh_tx, mesh) = watch::channel(MeshIdentity {
        trust_domain: config.trust_domain.clone(),
        trust_bundle: ca.bundle().to_pem(),
        control_plane_id: own.clone(),
    });
    let shared = SharedCa::new(ca);
    let service = IdentityService::new(
        shared.clone(),
        Arc::new(TokenReviewAuthenticator::new(client.clone())),
    )
    .with_ttl(config.cert_ttl)
    .with_metrics(metrics)
    .with_issuances(issuances.clone())
    .with_refusals(Arc::new(PodEvents(Recorder::new(
        client.clone(),
        Reporter::from("remora-controller"),
    ))));
    let keeper = Keeper {
        secrets: Api::namespaced(client.clone(), &config.namespace),
        config,
        own,
        shared,
        cert,
        tls: tls.clone(),
        mesh: mesh_tx,
    };
    let task = tokio::spawn(keeper.run(not_after));
    let serving = Serving {
        transport: Transport::Tls(tls),
        admission: Admission::Certificate,
        access: Arc::new(RbacAccess::new(client.clone())),
        certificates: Some(Arc::new(IssuedCertificates(issuances))),
        more: Some(Routes::new(service.into_service())),
        // The controller sets these from its config.
        stream_age: Default::default(),
        limits: Default::default(),
        refusals: Default::default(),
        audit: Default::default(),
    };
    Ok(Identities {
        serving,
        mesh,
        task,
    })
}

/// A known pod's refused certificate request, as a Warning Event on the pod: its owner sees
/// why its sidecar has no certificate. Best effort, like every Event.
struct PodEvents(Recorder);

impl Refusals for PodEvents {
    fn refused(&self, namespace: &str, pod: &str, reason: &'static str, message: &str) {
        let recorder = self.0.clone();
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(namespace.into()),
            name: Some(pod.into()),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: "CertificateRefused".into(),
            note: Some(format!("{reason}: {message}")),
            action: "Certify".into(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                warn!(error = %e, "event not published");
            }
        });
    }
}

/// The certificates the API lists with the proxies: what this replica's CA issued.
struct IssuedCertificates(Issuances);

impl Certificates for IssuedCertificates {
    fn certificate(&self, proxy: &ObjectKey) -> Option<Certificate> {
        let latest = self.0.latest(&proxy.to_string(), SystemTime::now())?;
        Some(Certificate {
            id: latest.id.to_string(),
            not_after: latest.not_after,
        })
    }
}

/// A new serving certificate for the control plane from `ca`, in `cert`; when it expires.
fn renew_serving(
    ca: &MeshCa,
    own: &SpiffeId,
    config: &IdentityConfig,
    cert: &CurrentCert,
) -> Result<SystemTime, PkiError> {
    let grant = Grant {
        id: own.clone(),
        subject: format!("{}/{}", config.namespace, config.service_account),
        ttl: config.cert_ttl,
    };
    let (issued, key) = ca.issue_serving(&grant, &config.server_names, SystemTime::now())?;
    cert.set(&CertifiedIdentity::new(&issued, &key)?);
    info!(id = %own, not_after = ?issued.not_after, "the control plane's serving certificate");
    Ok(issued.not_after)
}

/// Keeps the CA, the serving certificate and the bundle current.
struct Keeper {
    secrets: Api<Secret>,
    config: IdentityConfig,
    own: SpiffeId,
    shared: SharedCa,
    cert: CurrentCert,
    tls: TlsServing,
    mesh: watch::Sender<MeshIdentity>,
}

impl Keeper {
    async fn run(self, mut not_after: SystemTime) {
        let mut renew_at = half_life(not_after, self.config.cert_ttl);
        loop {
            tokio::time::sleep(RELOAD_EVERY).await;
            let changed = self.reload().await;
            if changed || SystemTime::now() >= renew_at {
                match renew_serving(&self.shared.get(), &self.own, &self.config, &self.cert) {
                    Ok(expires) => not_after = expires,
                    // The old certificate serves until it expires; tried again next round.
                    Err(e) => warn!(error = %e, ?not_after, "cannot renew the serving certificate"),
                }
                renew_at = half_life(not_after, self.config.cert_ttl);
            }
        }
    }

    /// Reads the Secret again; true when it holds another CA or bundle than the one in use.
    async fn reload(&self) -> bool {
        let secret = match self.secrets.get_opt(&self.config.ca_secret).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                warn!(secret = %self.config.ca_secret, "the mesh CA's Secret is gone; signing with the CA in memory");
                return false;
            }
            Err(e) => {
                warn!(error = %e, "cannot read the mesh CA's Secret");
                return false;
            }
        };
        let ca = match mesh_ca_from_secret(&secret, &self.config.trust_domain) {
            Ok(ca) => ca,
            Err(e) => {
                warn!(error = %e, "the mesh CA's Secret is unusable; signing with the CA in memory");
                return false;
            }
        };
        let current = self.shared.get();
        if ca.to_pem().cert_chain == current.to_pem().cert_chain && ca.bundle() == current.bundle()
        {
            return false;
        }
        match server_config(self.cert.clone(), ca.bundle(), ClientAuth::Optional) {
            Ok(config) => self.tls.replace(config),
            Err(e) => {
                warn!(error = %e, "cannot serve with the new trust bundle");
                return false;
            }
        }
        info!(
            roots = ca.bundle().roots().len(),
            "the mesh CA changed; reloaded"
        );
        self.mesh
            .send_modify(|m| m.trust_bundle = ca.bundle().to_pem());
        self.shared.set(ca);
        true
    }
}

/// When a certificate valid for `ttl` up to `not_after` is renewed: half-way through.
fn half_life(not_after: SystemTime, ttl: Duration) -> SystemTime {
    not_after.checked_sub(ttl / 2).unwrap_or(not_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_renewed_half_way_through_its_life() {
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ttl = Duration::from_secs(86_400);
        assert_eq!(half_life(end, ttl), end - Duration::from_secs(43_200));
    }
}
