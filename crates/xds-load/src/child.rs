//! The server role as the driver runs it: a child process, steered through its standard
//! input and heard through its standard output ([`crate::protocol`]), with every wait on it
//! bounded in time and by its memory.

use std::{future::Future, pin::pin, process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};

use remora_xds_load::{procfs, running::STOP_TIMEOUT};

use crate::{
    Error,
    driver::RunArgs,
    protocol::{self, Line},
    report::Sample,
};

/// How often the server's memory is checked against the limit.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// The server process and the pipes to it.
pub struct Server {
    child: Child,
    stdin: ChildStdin,
    pub lines: Lines<BufReader<ChildStdout>>,
    pub watch: Watch,
}

/// Bounds the driver's waits: in time, and by the server's memory.
#[derive(Clone, Copy)]
pub struct Watch {
    pid: u32,
    max_rss_kib: u64,
}

impl Server {
    pub fn start(args: &RunArgs) -> Result<Server, Error> {
        let exe = std::env::current_exe().map_err(Error::Spawn)?;
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .arg("--proxies")
            .arg(args.proxies.to_string())
            .arg("--response-budget-mib")
            .arg(args.response_budget_mib.to_string())
            .arg("--addressing")
            .arg(args.addressing.name())
            .arg("--change-kind")
            .arg(args.change_kind.name())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // A driver that fails or is interrupted takes the server with it.
            .kill_on_drop(true);
        if args.egress {
            command.arg("--egress");
        }
        if args.hostile {
            command.arg("--hostile");
        }
        let mut child = command.spawn().map_err(Error::Spawn)?;
        let pid = child.id().ok_or(Error::ServerExited("started"))?;
        let stdin = child.stdin.take().ok_or(Error::ServerExited("started"))?;
        let stdout = child.stdout.take().ok_or(Error::ServerExited("started"))?;
        Ok(Server {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            watch: Watch {
                pid,
                max_rss_kib: args.max_server_rss_kib,
            },
        })
    }

    pub async fn command(&mut self, command: &str) -> Result<(), Error> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .map_err(Error::Pipe)?;
        self.stdin.flush().await.map_err(Error::Pipe)
    }

    /// The server's heap in use and its peak so far, in KiB.
    pub async fn heap_kib(&mut self) -> Result<(u64, u64), Error> {
        self.command(protocol::HEAP).await?;
        let line = next_line(&mut self.lines, "reported its heap").await?;
        match line.parse().map_err(Error::Protocol)? {
            Line::Heap(kib, peak) => Ok((kib, peak)),
            other => Err(Error::Protocol(format!("expected the heap, got {other}"))),
        }
    }

    /// The clients the server refused so far, by reason.
    pub async fn refused(&mut self) -> Result<Vec<(String, u64)>, Error> {
        self.command(protocol::REFUSED).await?;
        let line = next_line(&mut self.lines, "reported its refusals").await?;
        match line.parse().map_err(Error::Protocol)? {
            Line::Refused(counts) => Ok(counts),
            other => Err(Error::Protocol(format!("expected refusals, got {other}"))),
        }
    }

    pub fn sample(&self) -> Sample {
        Sample {
            cpu: procfs::cpu_time(self.watch.pid).unwrap_or_default(),
            memory: procfs::memory(self.watch.pid).unwrap_or_default(),
        }
    }

    /// Asks the server to stop, and makes sure it has.
    pub async fn quit(mut self) {
        // A server already gone cannot take the command; the wait below says whether it is.
        let asked = self.command(protocol::QUIT).await;
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            if let Err(e) = asked {
                eprintln!("xds-load: the server did not take quit ({e}); killing it");
            }
            if let Err(e) = self.child.kill().await {
                eprintln!("xds-load: cannot kill the server process: {e}");
            }
        }
    }
}

impl Watch {
    /// Runs `work` for at most `timeout`, failing early if the server's memory goes over the
    /// limit (it would otherwise take the whole machine down with it).
    pub async fn bounded<T>(
        self,
        phase: &'static str,
        timeout: Duration,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let mut work = pin!(work);
        let deadline = tokio::time::sleep(timeout);
        let mut deadline = pin!(deadline);
        let mut watch = tokio::time::interval(WATCH_EVERY);
        loop {
            tokio::select! {
                result = &mut work => return result,
                _ = &mut deadline => return Err(Error::Timeout { phase, after: timeout }),
                _ = watch.tick() => {
                    let rss_kib = procfs::memory(self.pid).map_or(0, |m| m.rss_kib);
                    if rss_kib > self.max_rss_kib {
                        return Err(Error::ServerMemory {
                            phase,
                            rss_mib: rss_kib / 1024,
                            limit_mib: self.max_rss_kib / 1024,
                        });
                    }
                }
            }
        }
    }
}

/// The server's next line; `what` says what it was expected to have done, should it have
/// exited instead.
pub async fn next_line(
    lines: &mut Lines<BufReader<ChildStdout>>,
    what: &'static str,
) -> Result<String, Error> {
    lines
        .next_line()
        .await
        .map_err(Error::Pipe)?
        .ok_or(Error::ServerExited(what))
}
