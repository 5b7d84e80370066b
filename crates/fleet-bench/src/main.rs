//! `fleet-bench`: how soon a route's status counts every proxy's ACK when two controller
//! replicas share the fleet (issue 14).
//!
//! `fleet-bench run --proxies 10000` writes a synthetic mesh of that many sidecar pods into
//! a real API server (`e2e/cluster/with-cluster` starts one), starts two controller replicas
//! as child processes (`fleet-bench replica`: the controller in-process, with a Lease and
//! fleet reports, plaintext xDS since simulated proxies hold no certificates), connects the
//! simulated proxies of `remora-xds-load`, half to each replica, and once every proxy is
//! synced and the route's status counts them all, edits one TrafficRoute through the API a
//! few times. For each edit it reports when each proxy ACKed the change, when each replica's
//! report showed its proxies' ACKs, when a watch first saw the route's status count them
//! all, and what each replica wrote to the API server. Everything it created is deleted
//! again, on failure too. The output is Markdown, ready for BENCHMARKS.md.
//!
//! Build it in release mode: `scripts/bench-fleet-status --proxies 10000`.
#![forbid(unsafe_code)]

mod cluster;
mod http;
mod knobs;
mod mesh;
mod metrics;
mod observe;
mod replica;
mod report;
mod run;
mod target;
mod timeline;

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use remora_xds_load::fleet::Mode;

use crate::{knobs::Knobs, replica::ReplicaArgs, run::RunArgs};

/// The `remora` binary's allocator: the replicas run here as `remora controller` runs.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "fleet-bench",
    about = "Fleet-wide status under HA: two replicas, simulated proxies, a real API server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the benchmark against the cluster `e2e/cluster/with-cluster` provides.
    Run {
        /// Sidecar pods, each a simulated proxy; the mesh is the reference mesh scaled to
        /// this many.
        #[arg(long, default_value_t = 10_000)]
        proxies: usize,
        /// The flavour of ADS the proxies speak.
        #[arg(long, value_enum, default_value_t = Mode::Sotw)]
        mode: Mode,
        /// Leave out the per-namespace egress scopes: every proxy holds every Service.
        #[arg(long)]
        unscoped: bool,
        /// The route edited: route `i` of the synthetic mesh. By default the first whose
        /// edit changes a route config of every proxy (a route of a shared namespace's
        /// Service, which every egress scope reaches).
        #[arg(long)]
        route: Option<usize>,
        /// Edits to measure, one after the other; odd ones move the route's split, even ones
        /// move it back.
        #[arg(long, default_value_t = 3)]
        changes: u32,
        /// Seconds to wait after each edit's status is complete before the next edit (the
        /// replicas' writes meanwhile count to the edit's).
        #[arg(long, default_value_t = 5)]
        settle_secs: u64,
        /// Seconds of idle fleet, after the sync and before the first edit, whose writes
        /// are reported as the steady state.
        #[arg(long, default_value_t = 15)]
        idle_secs: u64,
        /// API calls in flight while the mesh is written.
        #[arg(long, default_value_t = 32)]
        create_concurrency: usize,
        /// Proxies connecting at the same time.
        #[arg(long, default_value_t = 256)]
        connect_concurrency: usize,
        /// Seconds to write the mesh and start the replicas.
        #[arg(long, default_value_t = 900)]
        setup_timeout: u64,
        /// Seconds for the proxies to sync and the status to count them all.
        #[arg(long, default_value_t = 600)]
        sync_timeout: u64,
        /// Seconds one edit may take to be ACKed and counted.
        #[arg(long, default_value_t = 120)]
        change_timeout: u64,
        #[command(flatten)]
        knobs: Knobs,
    },
    /// One controller replica, started by `run`: prints its ports, stops when its standard
    /// input ends or says `quit`.
    Replica(ReplicaArgs),
}

/// Warnings go to standard error (the replicas share the driver's); `RUST_LOG` may ask for
/// more.
fn init_logs(role: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Err(_) => EnvFilter::new("warn"),
        Ok(wanted) => EnvFilter::try_new(&wanted).unwrap_or_else(|e| {
            eprintln!("{role}: RUST_LOG={wanted:?} is no filter ({e}); logging warnings");
            EnvFilter::new("warn")
        }),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run {
            proxies,
            mode,
            unscoped,
            route,
            changes,
            settle_secs,
            idle_secs,
            create_concurrency,
            connect_concurrency,
            setup_timeout,
            sync_timeout,
            change_timeout,
            knobs,
        } => {
            init_logs("fleet-bench");
            let args = RunArgs {
                proxies,
                mode,
                egress: !unscoped,
                route,
                changes,
                settle: Duration::from_secs(settle_secs),
                idle: Duration::from_secs(idle_secs),
                create_concurrency,
                connect_concurrency,
                setup_timeout: Duration::from_secs(setup_timeout),
                sync_timeout: Duration::from_secs(sync_timeout),
                change_timeout: Duration::from_secs(change_timeout),
                knobs,
            };
            match run::run(args) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("fleet-bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Replica(args) => replica::serve(args),
    }
}
