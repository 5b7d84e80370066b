//! `remora agent`: the identity agent beside each sidecar. It gets the pod's workload
//! certificate from the control plane, keeps it fresh, and serves it to Envoy over SDS,
//! until SIGTERM or Ctrl-C.

use std::{path::PathBuf, process::ExitCode};

use remora_agent::{Config, DEFAULT_TOKEN_FILE, TrustBundle};
use remora_api::spiffe::DEFAULT_TRUST_DOMAIN;
use remora_envoy::sds::SDS_SOCKET;
use tokio::signal::unix::{SignalKind, signal};

#[derive(clap::Args)]
pub struct Args {
    /// The control plane's gRPC port, host:port.
    #[arg(long, env = "REMORA_CONTROL_PLANE")]
    control_plane: String,
    /// The name the control plane's certificate must be valid for (its Service's DNS name);
    /// default: the host of --control-plane.
    #[arg(long, env = "REMORA_SERVER_NAME")]
    server_name: Option<String>,
    /// A file of the PEM roots the control plane's certificate must chain to.
    #[arg(long, conflicts_with = "ca_bundle")]
    ca_bundle_file: Option<PathBuf>,
    /// The same roots as PEM text (what the injector puts in the pod's environment).
    #[arg(long, env = "REMORA_CA_BUNDLE", hide_env_values = true)]
    ca_bundle: Option<String>,
    /// The pod's projected ServiceAccount token (audience remora), read at each use.
    #[arg(long, env = "REMORA_TOKEN_FILE", default_value = DEFAULT_TOKEN_FILE)]
    token_file: PathBuf,
    /// The pod's namespace.
    #[arg(long, env = "REMORA_POD_NAMESPACE")]
    namespace: String,
    /// The pod's name.
    #[arg(long, env = "REMORA_POD_NAME")]
    pod: String,
    /// The pod's service account.
    #[arg(long, env = "REMORA_SERVICE_ACCOUNT")]
    service_account: String,
    /// Where to serve SDS to the pod's Envoy (a Unix socket).
    #[arg(long, default_value = SDS_SOCKET)]
    sds_socket: PathBuf,
    /// The mesh's trust domain.
    #[arg(long, env = "REMORA_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
}

pub fn run(args: &Args) -> ExitCode {
    let config = match config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("remora agent: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("remora agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        // The kubelet stops the pod with SIGTERM: without a handler the agent would die
        // without closing Envoy's SDS streams.
        let mut term = match signal(SignalKind::terminate()) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot handle SIGTERM");
                return ExitCode::FAILURE;
            }
        };
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                interrupted = tokio::signal::ctrl_c() => {
                    if let Err(e) = interrupted {
                        tracing::error!(error = %e, "cannot wait for Ctrl-C; stopping");
                    }
                }
            }
        };
        match remora_agent::run(config, stop).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "the agent stopped");
                ExitCode::FAILURE
            }
        }
    })
}

/// The agent's config from its flags (and their environment variables).
fn config(args: &Args) -> Result<Config, String> {
    let pem = bundle_pem(args)?;
    let trust = TrustBundle::from_pem(&pem).map_err(|e| format!("the CA bundle: {e}"))?;
    Ok(Config {
        control_plane: args.control_plane.clone(),
        server_name: server_name(args),
        trust,
        token_file: args.token_file.clone(),
        namespace: args.namespace.clone(),
        pod: args.pod.clone(),
        service_account: args.service_account.clone(),
        sds_socket: args.sds_socket.clone(),
        trust_domain: args.trust_domain.clone(),
    })
}

fn bundle_pem(args: &Args) -> Result<String, String> {
    match (&args.ca_bundle_file, &args.ca_bundle) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --ca-bundle-file {}: {e}", path.display())),
        (None, Some(pem)) => Ok(pem.clone()),
        (None, None) => Err(
            "no CA bundle: pass --ca-bundle-file or set REMORA_CA_BUNDLE to the mesh's root \
             certificates (PEM)"
                .into(),
        ),
    }
}

/// `--server-name`, else the host of `--control-plane`.
fn server_name(args: &Args) -> String {
    args.server_name.clone().unwrap_or_else(|| {
        let host = args
            .control_plane
            .rsplit_once(':')
            .map_or(args.control_plane.as_str(), |(host, _)| host);
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDENTITY: [&str; 6] = [
        "--namespace",
        "shop",
        "--pod",
        "web-0",
        "--service-account",
        "reviews",
    ];

    fn args(extra: &[&str]) -> Args {
        let mut flags = vec!["--control-plane", "remora.remora-system.svc:18000"];
        flags.extend(IDENTITY);
        flags.extend(extra);
        crate::parse_flags(&flags)
    }

    #[test]
    fn defaults_are_the_pods_paths_and_the_default_trust_domain() {
        let a = args(&["--ca-bundle", "PEM"]);
        assert_eq!(a.token_file, PathBuf::from(DEFAULT_TOKEN_FILE));
        assert_eq!(a.sds_socket, PathBuf::from(SDS_SOCKET));
        assert_eq!(a.trust_domain, "cluster.local");
        assert_eq!(server_name(&a), "remora.remora-system.svc");
        assert_eq!(bundle_pem(&a), Ok("PEM".to_owned()));
    }

    #[test]
    fn the_server_name_can_be_given() {
        let a = args(&["--server-name", "remora.example"]);
        assert_eq!(server_name(&a), "remora.example");
    }

    #[test]
    fn a_missing_bundle_says_how_to_give_one() {
        let err = bundle_pem(&args(&[])).expect_err("no bundle");
        assert!(err.contains("--ca-bundle-file"), "{err}");
        assert!(err.contains("REMORA_CA_BUNDLE"), "{err}");
    }

    #[test]
    fn an_unreadable_bundle_file_is_named() {
        let err = bundle_pem(&args(&["--ca-bundle-file", "/nonexistent/roots.pem"]))
            .expect_err("no file");
        assert!(err.contains("/nonexistent/roots.pem"), "{err}");
    }

    #[test]
    fn a_bundle_that_is_not_pem_is_refused_before_starting() {
        let err = config(&args(&["--ca-bundle", "not a certificate"]))
            .map(|_| ())
            .expect_err("not PEM");
        assert!(err.starts_with("the CA bundle:"), "{err}");
    }
}
