//! Remora's admission webhooks. The validating one checks `TrafficRoute`, `SidecarPolicy` and `AccessPolicy`
//! with the same `validate()` the reconcilers run, answered before an object is stored, so
//! `kubectl apply` and a GitOps sync fail at once with every field path and its fix. The
//! mutating one ([`MUTATE_PODS_PATH`]) adds the sidecar to Pods as a [`PodInjector`] says.
//!
//! [`run`] is what the controller starts: it makes sure the CA exists (a Secret shared by
//! the replicas), signs this replica's serving certificate, serves HTTPS on [`PATH`] (and
//! the pod path when given an injector) and keeps the `caBundle` of the webhook
//! configurations pointing at that CA.
//! [`serve`] is the server alone, for tests and for callers with their own certificates.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod certs;
pub mod cluster;
mod mutate;
mod review;
mod run;
mod server;

pub use certs::{Ca, CertError, TlsIdentity, service_sans};
pub use mutate::{InjectFailure, MUTATE_PODS_PATH, PodInjector, Unavailable, review_pod};
pub use review::review;
pub use run::{Certificates, Config, run};
pub use server::{Limits, PATH, replace_cert, serve, serving_cert};

/// What stopped the webhook, naming the object or address involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A certificate or key could not be made or read.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// A call to the API server failed.
    #[error("cannot {what}: {source}")]
    Kube {
        /// What was attempted, e.g. `read Secret remora-webhook-ca`.
        what: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
    /// The Secret named for the certificates does not exist.
    #[error(
        "Secret {0} does not exist; create it (e.g. with cert-manager) or let the controller generate its CA"
    )]
    MissingSecret(String),
    /// A Secret lacks a key, or the key's value is not UTF-8.
    #[error(
        "Secret {secret} has no usable {key:?} (UTF-8 PEM); fix it, or delete it to have a new CA generated"
    )]
    SecretKey {
        /// The Secret's name.
        secret: String,
        /// The key in its `data`, e.g. `tls.crt`.
        key: &'static str,
    },
    /// A webhook configuration whose `caBundle` should be kept does not exist.
    #[error(
        "{kind} {name} does not exist; install the chart with the webhook enabled, or stop \
         naming it in the controller's settings"
    )]
    MissingWebhookConfiguration {
        /// `ValidatingWebhookConfiguration` or `MutatingWebhookConfiguration`.
        kind: &'static str,
        /// The configuration's name.
        name: String,
    },
    /// The server could not listen on its address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}
