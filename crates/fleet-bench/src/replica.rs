//! A controller replica: the child process that runs it (`fleet-bench replica`), and the
//! driver's handle on it. A process of its own, as in a cluster, so its CPU time and memory
//! are its own; the driver hears its ports on its standard output and stops it by closing
//! its standard input (the replica then stops as on SIGTERM: streams drained, Lease
//! released, its reports withdrawn).

use std::{
    io::Write as _,
    net::SocketAddr,
    process::{ExitCode, Stdio},
    time::Duration,
};

use remora_xds_load::procfs::{self, Memory};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    process::{Child, ChildStdin, Command},
};
use tracing::error;

use crate::{http, knobs::Knobs, metrics::Scrape};

/// What a replica says on its standard output once it serves.
const SERVING: &str = "serving";
/// What stops it, beside the end of its standard input.
const QUIT: &str = "quit";
/// How long a replica may take to start serving, and to stop.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The replica role's command line.
#[derive(clap::Args, Clone, Debug)]
pub struct ReplicaArgs {
    /// The replica's name: its identity in the Lease, and in its reports.
    #[arg(long)]
    pub name: String,
    /// The control plane's namespace: the Lease and the reports.
    #[arg(long)]
    pub namespace: String,
    /// The mesh's root namespace.
    #[arg(long)]
    pub root_namespace: String,
    #[command(flatten)]
    pub knobs: Knobs,
}

/// Runs one replica until its standard input ends or says quit.
pub fn serve(args: ReplicaArgs) -> ExitCode {
    crate::init_logs("fleet-bench replica");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fleet-bench replica: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let client = match kube::Client::try_default().await {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "no Kubernetes client (KUBECONFIG)");
                return ExitCode::FAILURE;
            }
        };
        let config = args
            .knobs
            .config(&args.name, &args.namespace, &args.root_namespace);
        let controller = match remora_controller::start(client, config).await {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "the controller cannot start");
                return ExitCode::FAILURE;
            }
        };
        let said = writeln!(
            std::io::stdout(),
            "{SERVING}\t{}\t{}",
            controller.xds_addr.port(),
            controller.health_addr.port()
        )
        .and_then(|()| std::io::stdout().flush());
        if let Err(e) = said {
            error!(error = %e, "cannot tell the driver this replica's ports; stopping");
            controller.stop().await;
            return ExitCode::FAILURE;
        }
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        loop {
            match lines.next_line().await {
                Ok(Some(line)) if line.trim() != QUIT => continue,
                Ok(_) => break,
                Err(e) => {
                    error!(error = %e, "cannot read standard input; stopping");
                    break;
                }
            }
        }
        controller.stop().await;
        ExitCode::SUCCESS
    })
}

/// Why a replica could not be started, asked or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The process did not start.
    #[error("cannot start replica {name}: {source}")]
    Spawn {
        /// The replica.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// It ended, or said something else, before it served.
    #[error("replica {name} did not start serving: {why} (its log is on standard error)")]
    Start {
        /// The replica.
        name: String,
        /// What happened instead.
        why: String,
    },
    /// It did not stop as asked.
    #[error("replica {name} did not stop cleanly: {why}")]
    Stop {
        /// The replica.
        name: String,
        /// What happened instead.
        why: String,
    },
    /// Its health port did not answer.
    #[error("replica {name}: {source}")]
    Http {
        /// The replica.
        name: String,
        /// Why.
        source: http::HttpError,
    },
}

/// A replica as the driver sees it.
pub struct Replica {
    /// Its name.
    pub name: String,
    /// Where it serves ADS.
    pub xds: SocketAddr,
    health: SocketAddr,
    pid: u32,
    child: Child,
    stdin: ChildStdin,
}

/// A process's CPU time and memory at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// User and system time so far.
    pub cpu: Duration,
    /// Resident memory now and at its peak.
    pub memory: Memory,
}

impl Replica {
    /// Starts replica `name` and waits until it serves.
    pub async fn start(args: &ReplicaArgs) -> Result<Replica, ReplicaError> {
        let name = args.name.clone();
        let spawn = |source| ReplicaError::Spawn {
            name: name.clone(),
            source,
        };
        let exe = std::env::current_exe().map_err(spawn)?;
        let mut child = Command::new(exe)
            .arg("replica")
            .args(["--name", &args.name])
            .args(["--namespace", &args.namespace])
            .args(["--root-namespace", &args.root_namespace])
            .args(args.knobs.flags())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // A driver that fails or is interrupted takes its replicas with it.
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn)?;
        let failed = |why: String| ReplicaError::Start {
            name: name.clone(),
            why,
        };
        let (Some(pid), Some(stdin), Some(stdout)) =
            (child.id(), child.stdin.take(), child.stdout.take())
        else {
            return Err(failed("it exited at once".into()));
        };
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| failed(format!("nothing said within {START_TIMEOUT:?}")))?
            .map_err(|e| failed(format!("cannot read its output: {e}")))?
            .ok_or_else(|| failed("it exited".into()))?;
        let (xds, health) =
            parse_serving(&line).ok_or_else(|| failed(format!("it said {line:?}")))?;
        Ok(Replica {
            name,
            xds,
            health,
            pid,
            child,
            stdin,
        })
    }

    /// Whether `/readyz` says it is ready: every watch listed, the first config published.
    pub async fn ready(&self) -> Result<bool, ReplicaError> {
        let (status, _) = http::get(self.health, "/readyz")
            .await
            .map_err(|source| self.http(source))?;
        Ok(status == 200)
    }

    /// Its counters now.
    pub async fn scrape(&self) -> Result<Scrape, ReplicaError> {
        let (_, body) = http::get(self.health, "/metrics")
            .await
            .map_err(|source| self.http(source))?;
        Ok(Scrape::parse(&body))
    }

    fn http(&self, source: http::HttpError) -> ReplicaError {
        ReplicaError::Http {
            name: self.name.clone(),
            source,
        }
    }

    /// Its CPU time and memory now (zero once it is gone).
    pub fn sample(&self) -> Sample {
        Sample {
            cpu: procfs::cpu_time(self.pid).unwrap_or_default(),
            memory: procfs::memory(self.pid).unwrap_or_default(),
        }
    }

    /// Asks it to stop gracefully, and makes sure it has (killing it after a while).
    pub async fn stop(mut self) -> Result<(), ReplicaError> {
        // A replica already gone cannot take the command; the wait below tells.
        let asked = self.stdin.write_all(format!("{QUIT}\n").as_bytes()).await;
        drop(self.stdin);
        let why = match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => return Ok(()),
            Ok(Ok(status)) => format!("it exited with {status}"),
            Ok(Err(e)) => format!("cannot wait for it: {e}"),
            Err(_) => {
                let killed = self.child.kill().await;
                format!(
                    "it was still running after {STOP_TIMEOUT:?} (asked to quit: {asked:?}); \
                     killed: {killed:?}"
                )
            }
        };
        Err(ReplicaError::Stop {
            name: self.name,
            why,
        })
    }
}

/// The ports of a `serving` line.
fn parse_serving(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let mut fields = line.split('\t');
    if fields.next()? != SERVING {
        return None;
    }
    let mut port = || fields.next()?.parse::<u16>().ok();
    let (xds, health) = (port()?, port()?);
    let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
    Some((at(xds), at(health)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serving_line_gives_both_ports_on_loopback() {
        let (xds, health) = parse_serving("serving\t18000\t9090").expect("ports");
        assert_eq!(xds.to_string(), "127.0.0.1:18000");
        assert_eq!(health.to_string(), "127.0.0.1:9090");
        assert_eq!(parse_serving("serving\t18000"), None);
        assert_eq!(parse_serving("ready\t1\t2"), None);
    }
}
