//! `xds-load`: how fast the control plane distributes a change to thousands of proxies, and
//! what holding them costs.
//!
//! `xds-load run --proxies 10000 --mode delta` starts the control plane as a child process
//! (`xds-load serve`, so its memory and CPU time are measured on their own), opens one ADS
//! stream per proxy of a synthetic mesh, each on its own HTTP/2 connection over loopback,
//! waits until every proxy holds its whole config, then changes one route (or adds and
//! deletes a Service) a few times and reports, per change, how long each affected proxy
//! took to ACK its new config, how many bytes it was sent, and what the server spent. The
//! output is Markdown, ready for BENCHMARKS.md.
//!
//! Build it in release mode: `cargo run --release -p remora-xds-load -- run --proxies 1000`.
#![forbid(unsafe_code)]

mod child;
mod diagnose;
mod driver;
mod protocol;
mod report;
mod scenario;
mod server;

use std::{process::ExitCode, time::Duration};

use cap::Cap;
use clap::{Parser, Subcommand};
use remora_model::input::MeshSettings;
use remora_xds_load::{fleet::Mode, running::FleetError};

use crate::{
    driver::RunArgs,
    scenario::{AddressingFlag, ChangeKind},
    server::ServeArgs,
};

/// Counts the bytes the process has allocated and not freed, so the server can report its
/// heap beside its RSS: what is resident but not allocated is the allocator's overhead and
/// the freed memory it keeps. The allocator is the `remora` binary's, jemalloc.
#[global_allocator]
static HEAP: Cap<tikv_jemallocator::Jemalloc> = Cap::new(tikv_jemallocator::Jemalloc, usize::MAX);

/// Heap bytes allocated and not yet freed, in KiB.
pub fn heap_kib() -> u64 {
    (HEAP.allocated() / 1024) as u64
}

/// The most heap bytes ever allocated at once, in KiB.
pub fn heap_peak_kib() -> u64 {
    (HEAP.max_allocated() / 1024) as u64
}

#[derive(Parser)]
#[command(name = "xds-load", about = "Load test of the xDS server on loopback")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the benchmark: starts the server, connects the proxies, changes a route, reports.
    Run {
        #[command(flatten)]
        mesh: MeshArgs,
        #[arg(long, value_enum, default_value_t = Mode::Sotw)]
        mode: Mode,
        /// Changes to measure, one after the other; each makes the change of
        /// `--change-kind`, or undoes it.
        #[arg(long, default_value_t = 3)]
        changes: u32,
        /// Proxies connecting at the same time.
        #[arg(long, default_value_t = 256)]
        connect_concurrency: usize,
        /// Seconds the server may take to build and publish the mesh.
        #[arg(long, default_value_t = 900)]
        build_timeout: u64,
        /// Seconds the proxies may take to connect and sync.
        #[arg(long, default_value_t = 600)]
        sync_timeout: u64,
        /// Seconds one change may take, to be reported and then to converge.
        #[arg(long, default_value_t = 120)]
        change_timeout: u64,
        /// Stop when the server's resident memory exceeds this many MiB, before it takes the
        /// machine's memory from everything else.
        #[arg(long, default_value_t = 12_288)]
        max_server_rss_mib: u64,
    },
    /// The server role, started by `run`: speaks to the driver on stdin and stdout.
    Serve {
        #[command(flatten)]
        mesh: MeshArgs,
    },
}

/// What both roles are told: the mesh, how it is served, and what changes.
#[derive(clap::Args, Clone, Debug)]
struct MeshArgs {
    /// Proxies to connect; the mesh is the reference mesh scaled to this many pods.
    #[arg(long, default_value_t = 1_000)]
    proxies: usize,
    /// Give every namespace an egress scope (its own and the shared namespaces), which
    /// bounds each proxy's config and the reach of a change.
    #[arg(long)]
    egress: bool,
    /// How the proxies are addressed: `captured` is what a cluster runs, `explicit` what
    /// local mode runs (a route config per port holding every Service's virtual host).
    #[arg(long, value_enum, default_value_t = AddressingFlag::Captured)]
    addressing: AddressingFlag,
    /// What each change is: a route's split moved (and back), or a Service added (and
    /// deleted).
    #[arg(long, value_enum, default_value_t = ChangeKind::Route)]
    change_kind: ChangeKind,
    /// The server's budget of responses not yet written, all streams together.
    #[arg(long, default_value_t = DEFAULT_BUDGET_MIB)]
    response_budget_mib: usize,
    /// Hostile clients join the fleet once it is synced and stay through the changes
    /// (`remora_xds_load::hostile`); the run fails unless the server counts every refusal
    /// they cause.
    #[arg(long)]
    hostile: bool,
}

const DEFAULT_BUDGET_MIB: usize = remora_xds::DEFAULT_RESPONSE_BUDGET / (1024 * 1024);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Limits(String),
    #[error("cannot start the Tokio runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen on loopback: {0}")]
    Listen(std::io::Error),
    #[error("cannot start the server process: {0}")]
    Spawn(std::io::Error),
    #[error("the pipe between driver and server failed: {0}")]
    Pipe(std::io::Error),
    #[error("the server process exited before it {0}")]
    ServerExited(&'static str),
    #[error("{0}")]
    Protocol(String),
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error("waited {after:?} for {phase}, in vain")]
    Timeout {
        phase: &'static str,
        after: Duration,
    },
    #[error(
        "the server's RSS reached {rss_mib} MiB, over the limit of {limit_mib} MiB \
         (--max-server-rss-mib), while waiting for {phase}"
    )]
    ServerMemory {
        phase: &'static str,
        rss_mib: u64,
        limit_mib: u64,
    },
    #[error("the hostile clients: {0}")]
    Hostile(#[from] remora_xds_load::hostile::HostileError),
    #[error("the server did not count every refusal: {0}")]
    Uncounted(String),
    #[error("{error}\n{count} proxies were not done, for example:\n  {examples}")]
    Diagnosed {
        error: Box<Error>,
        count: usize,
        examples: String,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run {
            mesh,
            mode,
            changes,
            connect_concurrency,
            build_timeout,
            sync_timeout,
            change_timeout,
            max_server_rss_mib,
        } => driver::run(RunArgs {
            proxies: mesh.proxies,
            mode,
            egress: mesh.egress,
            addressing: mesh.addressing,
            change_kind: mesh.change_kind,
            changes,
            connect_concurrency,
            build_timeout: Duration::from_secs(build_timeout),
            sync_timeout: Duration::from_secs(sync_timeout),
            change_timeout: Duration::from_secs(change_timeout),
            max_server_rss_kib: max_server_rss_mib.saturating_mul(1024),
            response_budget_mib: mesh.response_budget_mib,
            hostile: mesh.hostile,
        })
        .map(|report| print!("{report}")),
        Command::Serve { mesh } => server::serve(ServeArgs {
            proxies: mesh.proxies,
            egress: mesh.egress,
            response_budget_mib: mesh.response_budget_mib,
            settings: MeshSettings {
                addressing: mesh.addressing.addressing(),
                ..MeshSettings::default()
            },
            change_kind: mesh.change_kind,
            hostile: mesh.hostile,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xds-load: {e}");
            ExitCode::FAILURE
        }
    }
}
