//! `remora controller`: the control plane in a cluster, as the Helm chart runs it.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use remora_api::spiffe::DEFAULT_TRUST_DOMAIN;
use remora_controller::{
    Config,
    fleet::FleetConfig,
    identity::{DEFAULT_CA_SECRET, IdentityConfig},
    inject::InjectConfig,
    leader::LeaseConfig,
    start,
};
use remora_identity::DEFAULT_CERT_TTL;
use remora_inject::{ControlPlane, Layout, Settings};
use remora_model::{
    config::Addressing,
    input::{IdentitySettings, MeshSettings},
};
use remora_runtime::Debounce;
use tokio::signal::unix::{SignalKind, signal};

use crate::regex_limit::RegexLimit;

/// Where the chart tells the controller which Service its certificates name; `remora
/// proxy-status` reads it from the controller pod's spec too.
pub const WEBHOOK_SERVICE_ENV: &str = "REMORA_WEBHOOK_SERVICE";
/// The Service's name when nothing says otherwise.
pub const DEFAULT_SERVICE: &str = "remora";
/// Where the chart tells the controller the mesh CA's Secret.
pub const MESH_CA_SECRET_ENV: &str = "REMORA_MESH_CA_SECRET";

#[derive(clap::Args)]
pub struct Args {
    /// Where ADS and the remora.v1 API listen.
    #[arg(long, default_value = "0.0.0.0:18000")]
    xds_addr: SocketAddr,
    /// Where /healthz, /readyz and /metrics listen.
    #[arg(long, default_value = "0.0.0.0:9090")]
    admin_addr: SocketAddr,
    /// `json` for log collectors, `text` for people.
    #[arg(long, default_value = "json", value_parser = ["json", "text"])]
    log_format: String,
    /// A level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// The mesh's root namespace, where mesh-wide policies live.
    #[arg(long, env = "REMORA_ROOT_NAMESPACE", default_value = "remora-system")]
    root_namespace: String,
    /// The Lease the replicas compete for, in this pod's namespace.
    #[arg(long, env = "REMORA_LEASE_NAME", default_value = "remora-controller")]
    lease_name: String,
    /// This replica's namespace (from the downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "remora-system")]
    namespace: String,
    /// This replica's identity in the Lease (from the downward API).
    #[arg(long, env = "POD_NAME")]
    pod_name: String,
    /// How long a leader's lease lasts without renewal, in seconds.
    #[arg(long, default_value_t = 15)]
    lease_duration_secs: u64,
    /// How long before expiry the leader renews, in seconds.
    #[arg(long, default_value_t = 5)]
    lease_grace_secs: u64,
    /// Write status without electing a leader (one replica only).
    #[arg(long)]
    no_leader_election: bool,
    /// How long an ADS stream lives before its proxy is told to reconnect (plus up to a
    /// tenth more), so that proxies spread back over a replica that restarted, in seconds.
    #[arg(long, default_value_t = remora_xds::DEFAULT_MAX_STREAM_AGE.as_secs())]
    max_stream_age_secs: u64,
    /// xDS connections one replica holds at once (TLS handshakes included); more are
    /// closed as they are accepted and counted.
    #[arg(long, default_value_t = remora_xds::limits::DEFAULT_CONNECTIONS)]
    xds_max_connections: usize,
    /// ADS streams one connection may hold at once.
    #[arg(long, default_value_t = remora_xds::limits::DEFAULT_STREAMS_PER_CONNECTION)]
    xds_max_streams_per_connection: usize,
    /// ADS streams one proxy may hold at once, over all its connections.
    #[arg(long, default_value_t = remora_xds::limits::DEFAULT_STREAMS_PER_PROXY)]
    xds_max_streams_per_proxy: usize,
    /// Seconds a new ADS stream has for its first request, and a started request has to
    /// arrive in full.
    #[arg(long, default_value_t = remora_xds::limits::DEFAULT_REQUEST_DEADLINE.as_secs())]
    xds_request_deadline_secs: u64,
    /// Resource names an ADS stream may subscribe to, per type.
    #[arg(long, default_value_t = remora_xds::limits::DEFAULT_SUBSCRIPTIONS)]
    xds_max_subscriptions: usize,
    #[command(flatten)]
    regex: RegexLimit,
    /// Quiet time that closes a batch of cluster events, in milliseconds.
    #[arg(long, default_value_t = 100)]
    debounce_ms: u64,
    /// The longest an event waits for its batch to close, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    max_delay_ms: u64,
    /// Where the validating admission webhook listens (HTTPS); unset: no webhook.
    #[arg(long, env = "REMORA_WEBHOOK_ADDR")]
    webhook_addr: Option<SocketAddr>,
    /// The Service the webhook configuration points at (its DNS names go into the
    /// serving certificate).
    #[arg(long, env = WEBHOOK_SERVICE_ENV, default_value = DEFAULT_SERVICE)]
    webhook_service: String,
    /// The ValidatingWebhookConfiguration whose caBundle the controller keeps right.
    #[arg(
        long,
        env = "REMORA_WEBHOOK_CONFIGURATION",
        default_value = "remora-validation"
    )]
    webhook_configuration: String,
    /// The Secret holding the webhook's CA, created by the first replica that finds none.
    #[arg(
        long,
        env = "REMORA_WEBHOOK_CA_SECRET",
        default_value = "remora-webhook-ca"
    )]
    webhook_ca_secret: String,
    /// A TLS Secret someone else keeps (e.g. cert-manager); the CA is then not generated.
    #[arg(long, env = "REMORA_WEBHOOK_TLS_SECRET")]
    webhook_tls_secret: Option<String>,
    /// The MutatingWebhookConfiguration of sidecar injection. Set (with the webhook's
    /// address): the webhook injects pods, and its caBundle is kept right.
    #[arg(long, env = "REMORA_MUTATING_WEBHOOK_CONFIGURATION")]
    mutating_webhook_configuration: Option<String>,
    /// Where injected sidecars go: `auto` (native sidecars from Kubernetes 1.29, by the API
    /// server's version), `native`, or `classic` (for nodes older than the API server).
    #[arg(long, env = "REMORA_INJECT_LAYOUT", default_value = "auto", value_parser = ["auto", "native", "classic"])]
    inject_layout: String,
    /// The host injected proxies reach xDS at; unset: the webhook Service's cluster DNS name.
    #[arg(long, env = "REMORA_XDS_SERVICE_HOST")]
    xds_service_host: Option<String>,
    /// The port injected proxies reach xDS at (the Service's port).
    #[arg(long, env = "REMORA_XDS_SERVICE_PORT", default_value_t = 18000)]
    xds_service_port: u16,
    /// Injected proxies use incremental (delta) xDS instead of state of the world.
    #[arg(long, env = "REMORA_XDS_DELTA")]
    xds_delta: bool,
    /// The image of the init container injected pods get (`remora init-network`, which
    /// redirects their traffic through the proxy): the control plane's own.
    #[arg(long, default_value = DEFAULT_INIT_IMAGE)]
    init_image: String,
    /// The trust domain of every workload's SPIFFE ID (`spiffe://<trust domain>/ns/…/sa/…`).
    #[arg(long, env = "REMORA_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// The Secret (in this namespace) holding the mesh CA: tls.crt, tls.key and ca.crt. The
    /// first replica that finds none creates a root there; put an intermediate of your own
    /// PKI there (cert-manager writes this shape) to sign with it instead.
    #[arg(long, env = MESH_CA_SECRET_ENV, default_value = DEFAULT_CA_SECRET)]
    mesh_ca_secret: String,
    /// How long a workload's certificate is valid, in seconds; agents renew at half that.
    #[arg(long, env = "REMORA_CERT_TTL_SECONDS", default_value_t = DEFAULT_CERT_TTL.as_secs())]
    cert_ttl_seconds: u64,
    /// The control plane's ServiceAccount (from the downward API): its SPIFFE ID, which the
    /// proxies check the control plane's certificate for.
    #[arg(long, env = "REMORA_SERVICE_ACCOUNT", default_value = "remora")]
    service_account: String,
}

/// This build's own image, as the Helm chart names it.
const DEFAULT_INIT_IMAGE: &str = concat!("ghcr.io/remora-mesh/remora:", env!("CARGO_PKG_VERSION"));

pub fn run(args: &Args) -> ExitCode {
    if let Err(e) = init_logs(&args.log_format, &args.log_level) {
        eprintln!("remora controller: {e}");
        return ExitCode::FAILURE;
    }
    let config = config(args);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("remora controller: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        // Kubernetes stops a pod with SIGTERM: without a handler it would die mid-stream and
        // keep its lease until it expired.
        let mut term = match signal(SignalKind::terminate()) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot handle SIGTERM; refusing to run without a graceful shutdown");
                return ExitCode::FAILURE;
            }
        };
        let client = match kube::Client::try_default().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "no Kubernetes client (in-cluster config or KUBECONFIG)");
                return ExitCode::FAILURE;
            }
        };
        let controller = match start(client, config).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            interrupted = tokio::signal::ctrl_c() => {
                if let Err(e) = interrupted {
                    tracing::error!(error = %e, "cannot wait for Ctrl-C; stopping");
                }
            }
        }
        tracing::info!("shutting down: draining xDS streams and releasing the lease");
        controller.stop().await;
        ExitCode::SUCCESS
    })
}

/// The controller's config from its command line.
fn config(args: &Args) -> Config {
    let settings = MeshSettings {
        root_namespace: args.root_namespace.clone(),
        // Injected pods get `remora init-network`: their traffic reaches the capture listeners.
        addressing: Addressing::Captured,
        // Every pod gets a workload certificate: sidecars speak mutual TLS to each other.
        identity: Some(IdentitySettings {
            trust_domain: args.trust_domain.clone(),
        }),
        validation: args.regex.validation(),
        ..MeshSettings::default()
    };
    let inject = args
        .mutating_webhook_configuration
        .is_some()
        .then(|| InjectConfig {
            settings: Settings {
                control_plane_namespace: args.namespace.clone(),
                mesh_label: settings.mesh_label.clone(),
            },
            layout: match args.inject_layout.as_str() {
                "native" => Some(Layout::Native),
                "classic" => Some(Layout::Classic),
                _ => None,
            },
            control_plane: ControlPlane {
                xds_host: args.xds_service_host.clone().unwrap_or_else(|| {
                    format!(
                        "{}.{}.svc.{}",
                        args.webhook_service, args.namespace, settings.cluster_domain
                    )
                }),
                xds_port: args.xds_service_port,
                delta: args.xds_delta,
                image: args.init_image.clone(),
                identity: None,
            },
        });
    let identity = identity(args, &settings.cluster_domain, inject.as_ref());
    Config {
        xds_addr: args.xds_addr,
        health_addr: args.admin_addr,
        identity: Some(identity),
        settings,
        lease: (!args.no_leader_election).then(|| LeaseConfig {
            namespace: args.namespace.clone(),
            name: args.lease_name.clone(),
            identity: args.pod_name.clone(),
            duration: Duration::from_secs(args.lease_duration_secs),
            grace: Duration::from_secs(args.lease_grace_secs),
        }),
        max_stream_age: Duration::from_secs(args.max_stream_age_secs),
        xds_limits: remora_xds::Limits {
            connections: args.xds_max_connections.max(1),
            streams_per_connection: args.xds_max_streams_per_connection.max(1),
            streams_per_proxy: args.xds_max_streams_per_proxy.max(1),
            first_request: Duration::from_secs(args.xds_request_deadline_secs.max(1)),
            partial_message: Duration::from_secs(args.xds_request_deadline_secs.max(1)),
            subscriptions: args.xds_max_subscriptions,
        },
        // Replicas that elect a leader report their proxies to it, beside the Lease.
        fleet: (!args.no_leader_election).then(|| {
            let prefix = format!("{}-proxies", args.lease_name);
            FleetConfig::new(&args.namespace, &args.pod_name, &prefix)
        }),
        debounce: Debounce {
            window: Duration::from_millis(args.debounce_ms),
            max_delay: Duration::from_millis(args.max_delay_ms.max(args.debounce_ms)),
        },
        status_interval: Duration::from_secs(2),
        discovery_interval: Duration::from_secs(30),
        webhook: args.webhook_addr.map(|addr| remora_webhook::Config {
            addr,
            namespace: args.namespace.clone(),
            service_name: args.webhook_service.clone(),
            webhook_name: args.webhook_configuration.clone(),
            mutating_webhook_name: args.mutating_webhook_configuration.clone(),
            // The controller attaches it from `inject`.
            injector: None,
            extra_sans: Vec::new(),
            certificates: match &args.webhook_tls_secret {
                Some(secret) => remora_webhook::Certificates::Provided {
                    secret: secret.clone(),
                },
                None => remora_webhook::Certificates::Generated {
                    ca_secret: args.webhook_ca_secret.clone(),
                },
            },
            // The controller sets it from `settings`.
            validation: Default::default(),
        }),
        inject,
    }
}

/// A bad `--log-level` is an error that names the flag, not a silent `info`.
fn init_logs(format: &str, level: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| {
        format!("--log-level {level:?} is not a level (error, warn, info, debug, trace) or a tracing filter: {e}")
    })?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    Ok(())
}

/// Workload identities: always on in a cluster. The serving certificate names the Service
/// (every form of its DNS name) and the host injected proxies are given.
fn identity(args: &Args, cluster_domain: &str, inject: Option<&InjectConfig>) -> IdentityConfig {
    let service = format!("{}.{}", args.webhook_service, args.namespace);
    let mut server_names = vec![
        service.clone(),
        format!("{service}.svc"),
        format!("{service}.svc.{cluster_domain}"),
    ];
    if let Some(host) = inject.map(|i| &i.control_plane.xds_host)
        && !server_names.contains(host)
    {
        server_names.push(host.clone());
    }
    IdentityConfig {
        trust_domain: args.trust_domain.clone(),
        namespace: args.namespace.clone(),
        ca_secret: args.mesh_ca_secret.clone(),
        cert_ttl: Duration::from_secs(args.cert_ttl_seconds.max(60)),
        service_account: args.service_account.clone(),
        server_names,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_of(flags: &[&str]) -> Config {
        let line: Vec<&str> = ["--pod-name", "remora-0"]
            .iter()
            .chain(flags)
            .copied()
            .collect();
        config(&crate::parse_flags(&line))
    }

    #[test]
    fn injected_pods_run_the_controllers_own_image_and_are_captured() {
        let injecting = ["--mutating-webhook-configuration", "remora-injection"];
        let image = |c: Config| c.inject.expect("injection").control_plane.image;
        let default = config_of(&injecting);
        assert_eq!(default.settings.addressing, Addressing::Captured);
        assert_eq!(
            image(default),
            format!("ghcr.io/remora-mesh/remora:{}", env!("CARGO_PKG_VERSION"))
        );
        let mut flags = injecting.to_vec();
        flags.extend(["--init-image", "registry.example/remora:dev"]);
        assert_eq!(image(config_of(&flags)), "registry.example/remora:dev");
    }
}
