//! The driver role: starts the server role as a child process, connects the simulated fleet,
//! waits until every proxy holds its whole config, then asks for route changes one at a time
//! and measures how long each affected proxy takes to ACK its new config. Every wait is
//! bounded, and the server's memory is watched throughout, so a run that goes wrong ends
//! with a message instead of a hang or an exhausted machine.

use std::{
    collections::HashMap,
    future::Future,
    pin::pin,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use remora_xds::{ProxyId, snapshot::served_type};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
    sync::{Semaphore, mpsc, watch},
    task::JoinHandle,
};
use tonic::transport::Endpoint;

use crate::{
    Error,
    catalog::Catalog,
    fleet::{self, Expected, Fleet, Logged, Mode, Note, Outcome, Round},
    procfs,
    protocol::{self, Changed, Line, Ready},
    report::{ChangeResult, Report, Sample},
    server::shape_for,
};

/// After the last affected proxy converged, how long to go on listening for responses that
/// should not come (to unaffected proxies, or more to affected ones).
const GRACE: Duration = Duration::from_secs(1);
/// After the last proxy synced, how long to wait before sampling the server, so what it
/// still had to do for the last ACKs is done.
const SETTLE: Duration = Duration::from_secs(1);
/// How often the server's memory is checked against the limit.
const WATCH_EVERY: Duration = Duration::from_millis(200);
/// How long the proxies and the server get to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Proxies whose problem is spelled out when a phase fails.
const EXAMPLES: usize = 3;

#[derive(Clone, Debug)]
pub struct RunArgs {
    pub proxies: usize,
    pub mode: Mode,
    pub egress: bool,
    pub changes: u32,
    pub connect_concurrency: usize,
    pub build_timeout: Duration,
    pub sync_timeout: Duration,
    pub change_timeout: Duration,
    pub max_server_rss_kib: u64,
    pub response_budget_mib: usize,
}

pub fn run(args: RunArgs) -> Result<String, Error> {
    // Every proxy holds one connection, plus a margin; the server inherits the limit.
    procfs::ensure_open_files(args.proxies as u64 + 256).map_err(Error::Limits)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let report = runtime.block_on(drive(args))?;
    Ok(report.render())
}

/// The server process and the pipes to it.
struct Server {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    watch: Watch,
}

/// Bounds the driver's waits: in time, and by the server's memory.
#[derive(Clone, Copy)]
struct Watch {
    pid: u32,
    max_rss_kib: u64,
}

impl Server {
    fn start(args: &RunArgs) -> Result<Server, Error> {
        let exe = std::env::current_exe().map_err(Error::Spawn)?;
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .arg("--proxies")
            .arg(args.proxies.to_string())
            .arg("--response-budget-mib")
            .arg(args.response_budget_mib.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // A driver that fails or is interrupted takes the server with it.
            .kill_on_drop(true);
        if args.egress {
            command.arg("--egress");
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

    async fn command(&mut self, command: &str) -> Result<(), Error> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .map_err(Error::Pipe)?;
        self.stdin.flush().await.map_err(Error::Pipe)
    }

    /// The server's heap in use and its peak so far, in KiB.
    async fn heap_kib(&mut self) -> Result<(u64, u64), Error> {
        self.command(protocol::HEAP).await?;
        let line = self
            .lines
            .next_line()
            .await
            .map_err(Error::Pipe)?
            .ok_or(Error::ServerExited("reported its heap"))?;
        match line.parse().map_err(Error::Protocol)? {
            Line::Heap(kib, peak) => Ok((kib, peak)),
            other => Err(Error::Protocol(format!("expected the heap, got {other}"))),
        }
    }

    fn sample(&self) -> Sample {
        Sample {
            cpu: procfs::cpu_time(self.watch.pid).unwrap_or_default(),
            memory: procfs::memory(self.watch.pid).unwrap_or_default(),
        }
    }

    /// Asks the server to stop, and makes sure it has.
    async fn quit(mut self) {
        let _ = self.command(protocol::QUIT).await;
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

impl Watch {
    /// Runs `work` for at most `timeout`, failing early if the server's memory goes over the
    /// limit (it would otherwise take the whole machine down with it).
    async fn bounded<T>(
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

/// The fleet's tasks and the handles that steer them.
struct Running {
    tasks: Vec<JoinHandle<Outcome>>,
    notes: mpsc::UnboundedReceiver<Note>,
    round: watch::Sender<Round>,
    stop: watch::Sender<bool>,
}

impl Running {
    /// Stops every proxy and returns what each logged, in proxy order.
    async fn stop(self) -> Result<Vec<Outcome>, Error> {
        self.stop.send_replace(true);
        let mut outcomes = Vec::with_capacity(self.tasks.len());
        let deadline = Instant::now() + STOP_TIMEOUT;
        for task in self.tasks {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, task).await {
                Ok(Ok(outcome)) => outcomes.push(outcome),
                Ok(Err(e)) => return Err(Error::Proxy(format!("a proxy task failed: {e}"))),
                Err(_) => {
                    return Err(Error::Timeout {
                        phase: "stopping the proxies",
                        after: STOP_TIMEOUT,
                    });
                }
            }
        }
        Ok(outcomes)
    }
}

async fn drive(args: RunArgs) -> Result<Report, Error> {
    let mut server = Server::start(&args)?;
    let watch = server.watch;
    let (proxies, ready) = watch
        .bounded(
            "the server to build and publish the mesh",
            args.build_timeout,
            read_ready(&mut server.lines),
        )
        .await?;
    let at_ready = server.sample();
    let index: HashMap<String, usize> = proxies
        .iter()
        .enumerate()
        .map(|(i, p)| (p.to_string(), i))
        .collect();

    let mut running = connect(&args, &ready, &proxies)?;
    let started = Instant::now();
    let synced = watch
        .bounded(
            "the proxies to connect and sync",
            args.sync_timeout,
            wait_synced(&mut running.notes, proxies.len()),
        )
        .await;
    let last_synced = match synced {
        Ok(at) => at,
        Err(e) => return Err(diagnose(e, running, &proxies).await),
    };
    let connect_and_sync = last_synced.saturating_duration_since(started);
    tokio::time::sleep(SETTLE).await;
    let synced = server.sample();
    let driver_synced_heap_kib = crate::heap_kib();
    let (synced_heap_kib, synced_heap_peak_kib) = watch
        .bounded("the server's heap", STOP_TIMEOUT, server.heap_kib())
        .await?;

    let mut changes = Vec::new();
    let mut affected_by_round = Vec::new();
    for number in 1..=args.changes {
        match change(&mut server, &mut running, &index, number, &args).await {
            Ok((result, affected)) => {
                changes.push(result);
                affected_by_round.push(affected);
            }
            Err(e) => return Err(diagnose(e, running, &proxies).await),
        }
    }
    let end = server.sample();
    let (_, end_heap_peak_kib) = watch
        .bounded("the server's heap", STOP_TIMEOUT, server.heap_kib())
        .await?;
    let outcomes = running.stop().await?;
    server.quit().await;

    // What the proxies logged, by round: responses to affected and unaffected proxies.
    for ((number, result), affected) in (1..).zip(&mut changes).zip(&affected_by_round) {
        for (i, outcome) in outcomes.iter().enumerate() {
            let got = outcome.log.iter().filter(|l| l.round == number).count();
            if affected.contains_key(&i) {
                result.responses_affected += got;
            } else {
                result.responses_unaffected += got;
                result.unaffected_hit += usize::from(got > 0);
            }
        }
    }
    let me = std::process::id();
    Ok(Report {
        proxies: args.proxies,
        mode: args.mode,
        shape: shape_for(args.proxies, args.egress),
        ready,
        at_ready,
        connect_and_sync,
        synced,
        synced_heap_kib,
        synced_heap_peak_kib,
        end_heap_peak_kib,
        changes,
        end,
        driver_synced_heap_kib,
        driver: Sample {
            cpu: procfs::cpu_time(me).unwrap_or_default(),
            memory: procfs::memory(me).unwrap_or_default(),
        },
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
    })
}

/// The proxies the server knows, then its readiness.
async fn read_ready(
    lines: &mut Lines<BufReader<ChildStdout>>,
) -> Result<(Vec<ProxyId>, Ready), Error> {
    let mut proxies = Vec::new();
    loop {
        let line = lines
            .next_line()
            .await
            .map_err(Error::Pipe)?
            .ok_or(Error::ServerExited("was ready"))?;
        match line.parse().map_err(Error::Protocol)? {
            Line::Proxy(p) => {
                let (namespace, name) = p
                    .split_once('/')
                    .ok_or_else(|| Error::Protocol(format!("not a proxy id: {p:?}")))?;
                proxies.push(ProxyId::new(namespace, name));
            }
            Line::Ready(ready) => return Ok((proxies, ready)),
            other => return Err(Error::Protocol(format!("unexpected before ready: {other}"))),
        }
    }
}

/// Starts one task per proxy; they connect at most `connect_concurrency` at a time.
fn connect(args: &RunArgs, ready: &Ready, proxies: &[ProxyId]) -> Result<Running, Error> {
    let endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{}", ready.port))
        .map_err(Error::Endpoint)?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true);
    let (notes_tx, notes) = mpsc::unbounded_channel();
    let (round, round_rx) = watch::channel(Round::default());
    let (stop, stop_rx) = watch::channel(false);
    let fleet = Arc::new(Fleet {
        endpoint,
        mode: args.mode,
        catalog: Catalog::default(),
        connecting: Semaphore::new(args.connect_concurrency.max(1)),
        notes: notes_tx,
        round: round_rx,
        stop: stop_rx,
    });
    let tasks = proxies
        .iter()
        .enumerate()
        .map(|(i, p)| tokio::spawn(fleet::run(fleet.clone(), i, p.clone())))
        .collect();
    Ok(Running {
        tasks,
        notes,
        round,
        stop,
    })
}

/// Waits until `count` proxies are synced; returns when the last one was.
async fn wait_synced(
    notes: &mut mpsc::UnboundedReceiver<Note>,
    count: usize,
) -> Result<Instant, Error> {
    let mut synced = 0;
    let mut last = Instant::now();
    while synced < count {
        match notes.recv().await {
            Some(Note::Synced { at, .. }) => {
                synced += 1;
                last = last.max(at);
            }
            Some(Note::Failed { error, .. }) => return Err(Error::Proxy(error)),
            Some(Note::Converged { .. }) => {}
            None => return Err(Error::Proxy("every proxy task ended".into())),
        }
    }
    Ok(last)
}

type Expectations = Arc<HashMap<usize, Vec<Expected>>>;

/// One route change: ask for it, learn from the server what each affected proxy must get,
/// wait until each has ACKed it, then listen a little longer for responses that should not
/// come.
async fn change(
    server: &mut Server,
    running: &mut Running,
    index: &HashMap<String, usize>,
    number: u32,
    args: &RunArgs,
) -> Result<(ChangeResult, Expectations), Error> {
    let watch = server.watch;
    let before = server.sample();
    let started = Instant::now();
    running.round.send_replace(Round {
        number,
        started: Some(started),
        expected: None,
    });
    server.command(protocol::CHANGE).await?;
    let (changed, expected) = watch
        .bounded(
            "the server to apply and publish the change",
            args.change_timeout,
            read_change(&mut server.lines, index),
        )
        .await?;
    let expected: Expectations = Arc::new(expected);
    running
        .round
        .send_modify(|r| r.expected = Some(expected.clone()));
    let mut convergence = Vec::with_capacity(expected.len());
    watch
        .bounded(
            "the affected proxies to converge",
            args.change_timeout,
            wait_converged(
                &mut running.notes,
                number,
                started,
                expected.len(),
                &mut convergence,
            ),
        )
        .await?;
    tokio::time::sleep(GRACE).await;
    let after = server.sample();
    Ok((
        ChangeResult {
            route: changed.route,
            apply: changed.apply,
            publish: changed.publish,
            affected: changed.affected,
            convergence,
            server_cpu: after.cpu.saturating_sub(before.cpu),
            responses_affected: 0,
            responses_unaffected: 0,
            unaffected_hit: 0,
        },
        expected,
    ))
}

/// The server's report of a change: the summary, then what each affected proxy must get.
async fn read_change(
    lines: &mut Lines<BufReader<ChildStdout>>,
    index: &HashMap<String, usize>,
) -> Result<(Changed, HashMap<usize, Vec<Expected>>), Error> {
    let mut changed = None;
    let mut expected: HashMap<usize, Vec<Expected>> = HashMap::new();
    loop {
        let line = lines
            .next_line()
            .await
            .map_err(Error::Pipe)?
            .ok_or(Error::ServerExited("reported the change"))?;
        match line.parse().map_err(Error::Protocol)? {
            Line::Changed(c) => changed = Some(c),
            Line::Expect(e) => {
                let proxy = *index
                    .get(&e.proxy)
                    .ok_or_else(|| Error::Protocol(format!("unknown proxy {:?}", e.proxy)))?;
                let type_url = served_type(&e.type_url)
                    .ok_or_else(|| Error::Protocol(format!("unknown type {:?}", e.type_url)))?;
                let version = e
                    .version
                    .map(|v| u64::from_str_radix(&v, 16))
                    .transpose()
                    .map_err(|_| Error::Protocol(format!("bad version in {line:?}")))?;
                expected.entry(proxy).or_default().push(Expected {
                    type_url,
                    name: e.name.into(),
                    version,
                });
            }
            Line::Done => {
                let changed = changed
                    .ok_or_else(|| Error::Protocol("a change report without summary".into()))?;
                if changed.affected != expected.len() {
                    return Err(Error::Protocol(format!(
                        "the server counted {} affected proxies but listed {}",
                        changed.affected,
                        expected.len()
                    )));
                }
                return Ok((changed, expected));
            }
            other => return Err(Error::Protocol(format!("unexpected in a change: {other}"))),
        }
    }
}

/// Waits until `count` proxies have converged in round `number`, adding each one's time
/// since `started` to `times` (which tells, after a timeout, how many had).
async fn wait_converged(
    notes: &mut mpsc::UnboundedReceiver<Note>,
    number: u32,
    started: Instant,
    count: usize,
    times: &mut Vec<Duration>,
) -> Result<(), Error> {
    while times.len() < count {
        match notes.recv().await {
            Some(Note::Converged { round, at, .. }) if round == number => {
                times.push(at.saturating_duration_since(started));
            }
            Some(Note::Failed { error, .. }) => return Err(Error::Proxy(error)),
            Some(_) => {}
            None => return Err(Error::Proxy("every proxy task ended".into())),
        }
    }
    Ok(())
}

/// Stops the fleet after a failure and adds what the first few proxies that were not done
/// had: during a change, the ones that did not converge and what they received; before, the
/// ones without a complete config and what they miss.
async fn diagnose(error: Error, running: Running, proxies: &[ProxyId]) -> Error {
    let round = running.round.borrow().clone();
    let Ok(outcomes) = running.stop().await else {
        return error;
    };
    let mut pending = Vec::new();
    match &round.expected {
        Some(expected) => {
            let mut affected: Vec<_> = expected.iter().collect();
            affected.sort_by_key(|(i, _)| **i);
            for (&i, wants) in affected {
                let log = &outcomes[i].log;
                if fleet::converged_at(log, round.number, wants).is_none() {
                    pending.push(format!(
                        "{} expected {}, received {}",
                        proxies[i],
                        describe_expected(wants),
                        describe_log(log, round.number)
                    ));
                }
            }
        }
        None => {
            for (i, o) in outcomes.iter().enumerate() {
                if let Some(why) = &o.incomplete {
                    pending.push(format!("{}: {why}", proxies[i]));
                }
            }
        }
    }
    if pending.is_empty() {
        return error;
    }
    Error::Diagnosed {
        error: Box::new(error),
        count: pending.len(),
        examples: pending
            .into_iter()
            .take(EXAMPLES)
            .collect::<Vec<_>>()
            .join("\n  "),
    }
}

fn describe_expected(wants: &[Expected]) -> String {
    wants
        .iter()
        .map(|w| match w.version {
            Some(v) => format!("{} {}@{v:016x}", short(w.type_url), w.name),
            None => format!("{} {} removed", short(w.type_url), w.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_log(log: &[Logged], round: u32) -> String {
    let got: Vec<String> = log
        .iter()
        .filter(|l| l.round == round)
        .map(|l| {
            let carried: Vec<String> = l
                .carried
                .entries()
                .iter()
                .map(|e| format!("{}@{:016x}", e.name, e.version))
                .collect();
            format!("{} [{}]", short(l.type_url), carried.join(", "))
        })
        .collect();
    if got.is_empty() {
        "nothing".into()
    } else {
        got.join("; ")
    }
}

/// A type URL's message name: `RouteConfiguration` for RDS.
fn short(type_url: &str) -> &str {
    type_url.rsplit('.').next().unwrap_or(type_url)
}
