//! `envoy-fleet`: real Envoys against local mode on one machine.
//!
//! `envoy-fleet latency` starts 50 Envoys (one per proxy pod of a 200-Service synthetic
//! mesh), edits one route by replacing its file in the polled folder, and reports how long
//! after the write each Envoy routed by the new rule, in SotW and in delta.
//! `envoy-fleet memory` reads what a sidecar holds with the config of the 1,000-Service
//! reference mesh, unscoped and egress-scoped. Both print Markdown for BENCHMARKS.md.
//!
//! Build it in release mode: `cargo build --release -p remora-envoy-fleet`; `envoy` comes
//! from `ENVOY_BIN` or `PATH` (`source scripts/env.sh`).
#![forbid(unsafe_code)]

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use remora_envoy_fleet::{
    FleetError,
    envoy::{self, EnvoyOptions},
    fleet::FleetOptions,
    latency::{self, LatencyOptions},
    memory::{self, MemoryOptions},
    report,
};

/// The allocator of the `remora` binary, so local mode runs here as `remora local` does.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "envoy-fleet",
    about = "Real Envoys against local mode, on loopback"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Times a route edit from its file write until every Envoy routes by it.
    Latency {
        #[command(flatten)]
        fleet: FleetArgs,
        /// Which xDS flavour the Envoys speak; `both` runs the fleet twice.
        #[arg(long, value_enum, default_value_t = Mode::Both)]
        mode: Mode,
        /// Route edits to time, one after the other.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
        changes: u32,
        /// Milliseconds between two requests to one Envoy: the resolution of the timings. Each
        /// request costs the Envoys CPU the edit needs too (at 20 ms, 2,500 requests a second
        /// for 50 Envoys).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1000))]
        probe_every_ms: u64,
        /// Seconds every Envoy has to route by an edit.
        #[arg(long, default_value_t = 30)]
        change_timeout_s: u64,
    },
    /// Reads each Envoy's memory once it holds the whole config.
    Memory {
        #[command(flatten)]
        fleet: FleetArgs,
        /// Which xDS flavour the Envoys speak.
        #[arg(long, value_enum, default_value_t = Mode::Sotw)]
        mode: Mode,
        /// Which meshes: without egress scopes, with them, or one after the other.
        #[arg(long, value_enum, default_value_t = Scope::Both)]
        scope: Scope,
        /// Milliseconds between the last ACK and the reading.
        #[arg(long, default_value_t = 2000)]
        settle_ms: u64,
    },
}

#[derive(clap::Args)]
struct FleetArgs {
    /// Envoy processes, each the sidecar of its own proxy pod. Default: 50 for `latency`,
    /// 2 for `memory`.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    envoys: Option<u32>,
    /// Services of the synthetic mesh (10 pods and 2 routes each). Default: 200 for
    /// `latency`, 1,000 (the reference mesh) for `memory`.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    services: Option<u32>,
    /// Give every namespace an egress scope (latency only; `memory` has `--scope`).
    #[arg(long)]
    egress: bool,
    /// Give the synthetic mesh's own pods (10 per Service) sidecars too: no Envoy runs for
    /// them, but local mode computes and publishes their config as it would for real ones.
    #[arg(long)]
    workload_sidecars: bool,
    /// Envoy's worker threads; the injector gives a sidecar 2.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    concurrency: u32,
    /// How often local mode checks the folder, in milliseconds (`remora local`'s default).
    #[arg(long, default_value_t = u64::try_from(remora_local::DEFAULT_POLL.as_millis()).unwrap_or(u64::MAX))]
    poll_ms: u64,
    /// Seconds every Envoy has to get its config and route by it.
    #[arg(long, default_value_t = 300)]
    startup_timeout_s: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Sotw,
    Delta,
    Both,
}

impl Mode {
    fn deltas(self) -> &'static [bool] {
        match self {
            Mode::Sotw => &[false],
            Mode::Delta => &[true],
            Mode::Both => &[false, true],
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scope {
    Unscoped,
    Egress,
    Both,
}

impl Scope {
    fn egress(self) -> &'static [bool] {
        match self {
            Scope::Unscoped => &[false],
            Scope::Egress => &[true],
            Scope::Both => &[false, true],
        }
    }
}

impl FleetArgs {
    fn options(&self, defaults: (u32, u32), envoy: EnvoyOptions) -> FleetOptions {
        FleetOptions {
            envoys: self.envoys.unwrap_or(defaults.0) as usize,
            services: self.services.unwrap_or(defaults.1) as usize,
            egress: self.egress,
            workload_sidecars: self.workload_sidecars,
            envoy,
            poll: Duration::from_millis(self.poll_ms.max(10)),
            startup_timeout: Duration::from_secs(self.startup_timeout_s),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("envoy-fleet: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        // On its own task, so that Ctrl-C is heard while local mode computes a large mesh.
        let mut work = tokio::spawn(run(cli.command));
        let done = tokio::select! {
            done = &mut work => done,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("envoy-fleet: interrupted; stopping the Envoys");
                work.abort();
                // Returns once the run is dropped: its Envoys killed, its folder removed.
                let _ = work.await;
                return ExitCode::from(130);
            }
        };
        match done {
            Ok(Ok(true)) => ExitCode::SUCCESS,
            Ok(Ok(false)) => {
                eprintln!("envoy-fleet: some Envoys never routed by an edit (see above)");
                ExitCode::FAILURE
            }
            Ok(Err(e)) => {
                eprintln!("envoy-fleet: {e}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("envoy-fleet: the run failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Runs the command and prints its reports; `false` if an Envoy missed an edit.
async fn run(command: Command) -> Result<bool, FleetError> {
    let bin = envoy::find_envoy()?;
    println!(
        "Envoy {} ({}); {} cores\n",
        envoy::version(&bin)?,
        bin.display(),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let envoy_options = |delta, concurrency| EnvoyOptions {
        bin: bin.clone(),
        delta,
        concurrency,
    };
    let mut all_routed = true;
    match command {
        Command::Latency {
            fleet,
            mode,
            changes,
            probe_every_ms,
            change_timeout_s,
        } => {
            for &delta in mode.deltas() {
                let options = LatencyOptions {
                    fleet: fleet.options((50, 200), envoy_options(delta, fleet.concurrency)),
                    changes: changes as usize,
                    probe_every: Duration::from_millis(probe_every_ms),
                    change_timeout: Duration::from_secs(change_timeout_s),
                };
                let run = latency::run(&options).await?;
                all_routed &= run.changes.iter().all(|c| c.missing.is_empty());
                println!("{}", report::latency(&run));
            }
        }
        Command::Memory {
            fleet,
            mode,
            scope,
            settle_ms,
        } => {
            for &delta in mode.deltas() {
                for &egress in scope.egress() {
                    let mut options =
                        fleet.options((2, 1_000), envoy_options(delta, fleet.concurrency));
                    options.egress = egress;
                    let run = memory::run(&MemoryOptions {
                        fleet: options,
                        settle: Duration::from_millis(settle_ms),
                    })
                    .await?;
                    println!("{}", report::memory(&run));
                }
            }
        }
    }
    Ok(all_routed)
}
