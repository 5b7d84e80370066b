//! The webhook as the controller runs it: certificates from the cluster, the server, and
//! the upkeep that keeps the `caBundle` right and the serving certificate current.

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use k8s_openapi::api::{
    admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration},
    core::v1::Secret,
};
use kube::{Api, Client};
use remora_api::ValidationSettings;
use remora_identity::CurrentCert;
use tokio::{net::TcpListener, time::Instant};

use crate::{
    Error, PodInjector,
    certs::{TlsIdentity, service_sans},
    cluster::{ensure_ca, ensure_ca_bundle, read_tls_secret},
    server::{Limits, replace_cert, serve, serving_cert},
};

/// How often the Secret and the webhook configuration are checked again: a Helm upgrade or
/// a GitOps sync may reset `caBundle`, cert-manager may renew the certificate.
const RECHECK: Duration = Duration::from_secs(60);
/// A generated serving certificate is replaced after this long, well before it expires.
const REISSUE_AFTER: Duration = Duration::from_secs(180 * 24 * 3600);

/// Where the webhook listens and how it gets its certificates.
#[derive(Clone, Debug)]
pub struct Config {
    /// The address the HTTPS server listens on.
    pub addr: SocketAddr,
    /// The controller's namespace: where its Service and the Secrets live.
    pub namespace: String,
    /// The Service the webhook configuration points at; its DNS names go into the
    /// serving certificate.
    pub service_name: String,
    /// The ValidatingWebhookConfiguration whose `caBundle` is kept right.
    pub webhook_name: String,
    /// The MutatingWebhookConfiguration of sidecar injection, whose `caBundle` is kept right
    /// too (`None`: no such configuration, or someone else keeps it).
    pub mutating_webhook_name: Option<String>,
    /// Answers pod reviews on [`crate::MUTATE_PODS_PATH`] (`None`: that path is not served).
    pub injector: Option<Arc<dyn PodInjector>>,
    /// More names for the serving certificate (IP addresses become IP SANs).
    pub extra_sans: Vec<String>,
    /// Where the serving certificate comes from.
    pub certificates: Certificates,
    /// What validating takes from the control plane (the controller sets it from its mesh
    /// settings, which the proxies' bootstraps follow too).
    pub validation: ValidationSettings,
}

/// Where the webhook's serving certificate comes from.
#[derive(Clone, Debug)]
pub enum Certificates {
    /// The CA lives in this Secret (the first replica creates it); each replica signs its
    /// own serving certificate with it and keeps `caBundle` set to it.
    Generated {
        /// The name of the Secret, in the controller's namespace.
        ca_secret: String,
    },
    /// A `kubernetes.io/tls` Secret someone else keeps (e.g. cert-manager), only read. When
    /// it has a `ca.crt`, `caBundle` is kept set to it; otherwise it is left alone (e.g. to
    /// cert-manager's CA injector).
    Provided {
        /// The name of the Secret, in the controller's namespace.
        secret: String,
    },
}

/// Runs the webhook until `shutdown` completes. Fails only when it cannot start (no CA, no
/// certificate, the address is taken); later API errors are logged and retried.
pub async fn run(
    client: Client,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &config.namespace);
    let configs = Configurations {
        validating: Api::all(client.clone()),
        mutating: Api::all(client),
    };
    let loaded = load(&secrets, &config).await?;
    let cert = serving_cert(&loaded.identity)?;
    let listener = TcpListener::bind(config.addr)
        .await
        .map_err(|source| Error::Bind {
            addr: config.addr,
            source,
        })?;
    tracing::info!(
        addr = %config.addr,
        webhook = %config.webhook_name,
        injection = config.injector.is_some(),
        "admission webhook listening"
    );
    let upkeep = upkeep(&secrets, &configs, &config, &cert, loaded);
    let limits = Limits {
        validation: config.validation,
        ..Limits::default()
    };
    tokio::select! {
        served = serve(listener, cert.clone(), config.injector.clone(), limits, shutdown) => Ok(served?),
        never = upkeep => match never {},
    }
}

/// The webhook configurations whose `caBundle` is kept right.
struct Configurations {
    validating: Api<ValidatingWebhookConfiguration>,
    mutating: Api<MutatingWebhookConfiguration>,
}

/// The serving identity in use and what it came from.
struct Loaded {
    identity: TlsIdentity,
    ca_bundle: Option<String>,
    issued: Instant,
}

async fn load(secrets: &Api<Secret>, config: &Config) -> Result<Loaded, Error> {
    match &config.certificates {
        Certificates::Generated { ca_secret } => {
            let ca = ensure_ca(secrets, ca_secret).await?;
            let mut sans = service_sans(&config.service_name, &config.namespace);
            sans.extend(config.extra_sans.iter().cloned());
            Ok(Loaded {
                identity: ca.issue(&sans)?,
                ca_bundle: Some(ca.cert_pem().to_owned()),
                issued: Instant::now(),
            })
        }
        Certificates::Provided { secret } => {
            let (identity, ca_bundle) = read_tls_secret(secrets, secret).await?;
            Ok(Loaded {
                identity,
                ca_bundle,
                issued: Instant::now(),
            })
        }
    }
}

async fn upkeep(
    secrets: &Api<Secret>,
    configs: &Configurations,
    config: &Config,
    cert: &CurrentCert,
    mut current: Loaded,
) -> Infallible {
    loop {
        if let Some(ca) = &current.ca_bundle {
            if let Err(e) = ensure_ca_bundle(&configs.validating, &config.webhook_name, ca).await {
                tracing::warn!(error = %e, "cannot keep the webhook caBundle right; retrying");
            }
            if let Some(name) = &config.mutating_webhook_name
                && let Err(e) = ensure_ca_bundle(&configs.mutating, name, ca).await
            {
                tracing::warn!(error = %e, "cannot keep the injection webhook caBundle right; retrying");
            }
        }
        tokio::time::sleep(RECHECK).await;
        match load(secrets, config).await {
            Ok(fresh) => {
                // A generated certificate is re-signed each time, so compare what it was
                // signed from; a provided one is compared as it is.
                let changed = match config.certificates {
                    Certificates::Generated { .. } => {
                        fresh.ca_bundle != current.ca_bundle
                            || current.issued.elapsed() > REISSUE_AFTER
                    }
                    Certificates::Provided { .. } => {
                        fresh.identity.cert_chain_pem != current.identity.cert_chain_pem
                            || fresh.ca_bundle != current.ca_bundle
                    }
                };
                if changed {
                    match replace_cert(cert, &fresh.identity) {
                        Ok(()) => {
                            tracing::info!("the webhook serves a new certificate");
                            current = fresh;
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot use the new certificate"),
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot re-read the webhook certificates; retrying")
            }
        }
    }
}
