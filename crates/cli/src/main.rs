//! `remora`: one binary for the control plane and its tools.
#![forbid(unsafe_code)]

mod agent;
mod analyze;
mod bootstrap;
mod check;
mod cluster;
mod compute;
mod controller;
mod diff;
mod init_network;
mod live;
mod local;
mod output;
mod overview;
mod plugin;
mod regex_limit;
mod rollout;
mod status;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

/// jemalloc, whose background threads hand memory freed after a burst (a mass initial sync
/// of thousands of proxies) back to the system within seconds; glibc's allocator kept
/// hundreds of MiB of it resident (BENCHMARKS.md §3).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "remora",
    version,
    about = "Remora, a service-mesh control plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compute every proxy's config from a folder of manifests and print it, with any
    /// problem found in the routes and policies. Needs no cluster.
    Compute {
        /// The folder of Kubernetes YAML (Namespaces, Services, EndpointSlices, Pods,
        /// SidecarPolicies, TrafficRoutes) describing the mesh.
        #[arg(long, default_value = "examples/local")]
        dir: PathBuf,
        /// Show only this proxy (NAMESPACE/POD).
        #[arg(long)]
        proxy: Option<String>,
        #[command(flatten)]
        regex: regex_limit::RegexLimit,
    },
    /// Report every problem in a folder of manifests or in the live cluster under its rule
    /// code (docs/analyze.md); exits 1 when one fails the run, for CI.
    Analyze(analyze::Args),
    /// Check the cluster before installing (--pre) and the installed Remora after: the API
    /// server's version and features, CRDs, webhooks, the controller's pods, proxy versions.
    Check(check::Args),
    /// Show what applying manifests (a file, a folder, or `-` for stdin) would change in
    /// every proxy's Envoy config, against the live cluster or a folder; exits 1 on changes.
    Diff(diff::Args),
    /// Write the Envoy bootstrap a sidecar starts with: its identity, where the control
    /// plane is, and its admin port.
    Bootstrap(bootstrap::Args),
    /// Run the control plane with no cluster: a folder of YAML is the cluster's state,
    /// reloaded when it changes, served to Envoys over xDS.
    Local(local::Args),
    /// Run the control plane in a Kubernetes cluster (what the Helm chart starts).
    Controller(Box<controller::Args>),
    /// List the connected proxies and whether each holds its latest config (per type:
    /// SYNCED, STALE, NACKED with Envoy's message).
    ProxyStatus(status::StatusArgs),
    /// The mesh at a glance: every SidecarPolicy, TrafficRoute and AccessPolicy with its
    /// Ready condition, proxy counts and rollout; exits 1 when one is not Ready or its status
    /// is stale, 2 when it cannot tell.
    Status(overview::Args),
    /// Print the config the control plane computed for one proxy: its resources, or all of
    /// it as JSON or YAML.
    ProxyConfig(status::ConfigArgs),
    /// Follow and steer a SidecarPolicy's sidecar rollout: status (--watch), pause, resume,
    /// undo.
    Rollout(rollout::Args),
    /// Redirect this network namespace's TCP traffic through the proxy (the injected init
    /// container runs it; needs NET_ADMIN and NET_RAW): nat rules for IPv4 and IPv6.
    InitNetwork(init_network::Args),
    /// The identity agent beside each sidecar: gets the pod's workload certificate from the
    /// control plane, renews it, and serves it to Envoy over SDS on a Unix socket.
    Agent(agent::Args),
}

fn main() -> ExitCode {
    match plugin::parse::<Cli>().command {
        Command::Compute { dir, proxy, regex } => {
            compute::run(&dir, proxy.as_deref(), regex.validation())
        }
        Command::Analyze(args) => analyze::run(&args),
        Command::Bootstrap(args) => bootstrap::run(&args),
        Command::Check(args) => check::run(&args),
        Command::Diff(args) => diff::run(&args),
        Command::Local(args) => {
            init_logs();
            local::run(&args)
        }
        Command::Controller(args) => controller::run(&args),
        Command::ProxyStatus(args) => status::status(&args),
        Command::Status(args) => overview::run(&args),
        Command::ProxyConfig(args) => status::config(&args),
        Command::Rollout(args) => rollout::run(&args),
        Command::InitNetwork(args) => {
            init_logs();
            init_network::run(&args)
        }
        Command::Agent(args) => {
            init_logs();
            agent::run(&args)
        }
    }
}

/// Logs go to standard error, coloured only on a terminal; `RUST_LOG` picks what (default:
/// info). A `RUST_LOG` that is no
/// filter is said, not silently replaced.
fn init_logs() {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Err(_) => EnvFilter::new("info"),
        Ok(wanted) => EnvFilter::try_new(&wanted).unwrap_or_else(|e| {
            eprintln!("remora: RUST_LOG={wanted:?} is not a tracing filter ({e}); logging at info");
            EnvFilter::new("info")
        }),
    };
    // Colours only for a person at a terminal: in a file or a pipe the escapes are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

/// One subcommand's flags, parsed as its command line would be, for the tests.
#[cfg(test)]
fn parse_flags<A: clap::Args>(flags: &[&str]) -> A {
    let command = A::augment_args(clap::Command::new("remora"));
    let matches = command
        .try_get_matches_from(["remora"].iter().chain(flags))
        .expect("flags");
    A::from_arg_matches(&matches).expect("flags")
}
