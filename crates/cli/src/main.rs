//! `remora`: one binary for the control plane and its tools.
#![forbid(unsafe_code)]

mod bootstrap;
mod compute;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

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
    },
    /// Write the Envoy bootstrap a sidecar starts with: its identity, where the control
    /// plane is, and its admin port.
    Bootstrap(bootstrap::Args),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Compute { dir, proxy } => compute::run(&dir, proxy.as_deref()),
        Command::Bootstrap(args) => bootstrap::run(&args),
    }
}
