//! `remora local`: the control plane on a folder of YAML, until interrupted.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use remora_local::{DEFAULT_DEBOUNCE, DEFAULT_POLL, LocalConfig, start};
use remora_model::config::Addressing;
use remora_runtime::Debounce;

use crate::regex_limit::RegexLimit;

#[derive(clap::Args)]
pub struct Args {
    /// The folder of manifests that stands for the cluster; edits are picked up live.
    #[arg(long, default_value = "examples/local")]
    dir: PathBuf,
    /// Where ADS and the remora.v1 API listen.
    #[arg(long, default_value = "127.0.0.1:15010")]
    xds_addr: SocketAddr,
    /// How often to check the folder for changes, in milliseconds.
    #[arg(long, default_value_t = millis(DEFAULT_POLL))]
    poll_ms: u64,
    /// Quiet time that closes a batch of changes, in milliseconds.
    #[arg(long, default_value_t = millis(DEFAULT_DEBOUNCE.window))]
    debounce_ms: u64,
    /// The longest a change waits for its batch to close, in milliseconds.
    #[arg(long, default_value_t = millis(DEFAULT_DEBOUNCE.max_delay))]
    max_delay_ms: u64,
    /// Serve pods whose traffic `remora init-network` redirects to their proxy (capture
    /// listeners, as in a cluster; needs pods in network namespaces, see `scripts/demo
    /// --pods`). Without it, applications call their proxy on loopback and nothing needs root.
    #[arg(long)]
    captured: bool,
    /// Serve xDS and the remora.v1 API in plaintext, to anyone who can reach the address,
    /// with no workload identities: fit for a laptop's loopback only. Local mode has no
    /// other way; the flag says you know (a cluster install serves TLS and authenticates
    /// every proxy and caller).
    #[arg(long)]
    insecure: bool,
    #[command(flatten)]
    regex: RegexLimit,
}

/// Why `remora local` will not start without `--insecure`.
const INSECURE_REQUIRED: &str = "local mode serves xDS and its API in plaintext to anyone who can reach --xds-addr, \
     with no workload identities; pass --insecure to run it that way (on a laptop)";

pub fn run(args: &Args) -> ExitCode {
    if !args.insecure {
        eprintln!("remora local: {INSECURE_REQUIRED}");
        return ExitCode::from(2);
    }
    let config = config(args);
    let addressing = config.addressing;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("remora local: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let running = match start(config).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("remora local: {e}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!(
            "remora local: serving xDS on {} ({addressing:?} addressing; Ctrl-C stops); try `remora proxy-status --server {}`",
            running.xds_addr, running.xds_addr
        );
        let waited = tokio::signal::ctrl_c().await;
        running.stop().await;
        match waited {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("remora local: cannot wait for Ctrl-C ({e}); stopped");
                ExitCode::FAILURE
            }
        }
    })
}

/// Local mode's config from its command line.
fn config(args: &Args) -> LocalConfig {
    LocalConfig {
        dir: args.dir.clone(),
        xds_addr: args.xds_addr,
        poll: Duration::from_millis(args.poll_ms.max(10)),
        debounce: Debounce {
            window: Duration::from_millis(args.debounce_ms),
            max_delay: Duration::from_millis(args.max_delay_ms.max(args.debounce_ms)),
        },
        addressing: if args.captured {
            Addressing::Captured
        } else {
            Addressing::Explicit
        },
        validation: args.regex.validation(),
    }
}

/// A default duration as the flag's milliseconds.
const fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addressing_of(flags: &[&str]) -> Addressing {
        config(&crate::parse_flags(flags)).addressing
    }

    #[test]
    fn local_mode_is_explicit_unless_asked_to_serve_captured_pods() {
        assert_eq!(addressing_of(&[]), Addressing::Explicit);
        assert_eq!(addressing_of(&["--captured"]), Addressing::Captured);
    }
}
