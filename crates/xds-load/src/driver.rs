//! The driver role: starts the server role as a child process, connects the simulated fleet,
//! waits until every proxy holds its whole config, then asks for changes one at a time and
//! measures how long each affected proxy takes to ACK its new config, and what it was sent. Every wait is
//! bounded, and the server's memory is watched throughout, so a run that goes wrong ends
//! with a message instead of a hang or an exhausted machine.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use remora_model::input::ObjectKey;
use remora_xds::{Refusal, snapshot::served_type};
use remora_xds_load::{
    fleet::{Expected, Mode, Outcome, Round, Want},
    hostile::{Hostile, Plan},
    procfs,
    running::{FleetSpec, Running, STOP_TIMEOUT},
    shape_for,
    stats::percentile,
};
use tokio::{
    io::{BufReader, Lines},
    process::ChildStdout,
};

use crate::{
    Error,
    child::{Server, next_line},
    diagnose::diagnose,
    protocol::{self, Changed, Line, Ready},
    report::{ChangeResult, HostileResult, Report, Sample},
    scenario::{AddressingFlag, ChangeKind},
};

/// After the last affected proxy converged, how long to go on listening for responses that
/// should not come (to unaffected proxies, or more to affected ones).
const GRACE: Duration = Duration::from_secs(1);
/// After the last proxy synced, how long to wait before sampling the server, so what it
/// still had to do for the last ACKs is done.
const SETTLE: Duration = Duration::from_secs(1);
/// How long the server may take, after the changes or its last count, to count another
/// refusal of the hostile clients: the write timeout (30 s) of those that never read, and a
/// margin.
const REFUSALS_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Clone, Debug)]
pub struct RunArgs {
    pub proxies: usize,
    pub mode: Mode,
    pub egress: bool,
    pub addressing: AddressingFlag,
    pub change_kind: ChangeKind,
    pub changes: u32,
    pub connect_concurrency: usize,
    pub build_timeout: Duration,
    pub sync_timeout: Duration,
    pub change_timeout: Duration,
    pub max_server_rss_kib: u64,
    pub response_budget_mib: usize,
    pub hostile: bool,
}

pub fn run(args: RunArgs) -> Result<String, Error> {
    // Every proxy holds one connection, plus a margin; the server inherits the limit.
    procfs::ensure_open_files(args.proxies as u64 + 256).map_err(Error::Limits)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    // Driven on a worker, not on this thread: each of thousands of proxies' notes would
    // otherwise wake this thread from its futex, a system call and a context switch each,
    // on the cores the server is measured on.
    let report = match runtime.block_on(runtime.spawn(drive(args))) {
        Ok(report) => report?,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    Ok(report.render())
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

    let server_address = SocketAddr::from((Ipv4Addr::LOCALHOST, ready.port));
    let mut running = connect(&args, server_address, &proxies);
    let started = Instant::now();
    let synced = watch
        .bounded(
            "the proxies to connect and sync",
            args.sync_timeout,
            async { Ok(running.wait_synced(proxies.len()).await?) },
        )
        .await;
    let last_synced = match synced {
        Ok(at) => at,
        Err(e) => return Err(diagnose(e, running, &proxies).await),
    };
    let connect_and_sync = last_synced.saturating_duration_since(started);
    // Progress for whoever watches a long run (or profiles its changes); the report goes to
    // stdout.
    eprintln!(
        "xds-load: {} proxies synced in {:.1} s; {} changes to go",
        proxies.len(),
        connect_and_sync.as_secs_f64(),
        args.changes
    );
    tokio::time::sleep(SETTLE).await;
    let synced = server.sample();
    let driver_synced_heap_kib = crate::heap_kib();
    let (synced_heap_kib, synced_heap_peak_kib) = watch
        .bounded("the server's heap", STOP_TIMEOUT, server.heap_kib())
        .await?;

    let hostile = if args.hostile {
        Some(hostile_set_up(&mut server, server_address, &proxies).await?)
    } else {
        None
    };

    let mut changes = Vec::new();
    let mut affected_by_round = Vec::new();
    for number in 1..=args.changes {
        match change(&mut server, &mut running, proxies.len(), number, &args).await {
            Ok((result, affected)) => {
                changes.push(result);
                affected_by_round.push(affected);
            }
            Err(e) => return Err(diagnose(e, running, &proxies).await),
        }
    }
    let hostile = match hostile {
        Some((clients, plan, held)) => {
            let result = hostile_refused(&mut server, plan, held, &args).await;
            clients.stop().await;
            Some(result?)
        }
        None => None,
    };
    let end = server.sample();
    let (_, end_heap_peak_kib) = watch
        .bounded("the server's heap", STOP_TIMEOUT, server.heap_kib())
        .await?;
    let outcomes = running.stop().await?;
    server.quit().await;

    count_responses(&mut changes, &affected_by_round, &outcomes);
    let me = std::process::id();
    Ok(Report {
        proxies: args.proxies,
        mode: args.mode,
        addressing: args.addressing,
        change_kind: args.change_kind,
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
            cpu: own_cpu(),
            memory: procfs::memory(me).unwrap_or_default(),
        },
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        hostile,
    })
}

/// The CPU this process (the driver and its simulated fleet) has used so far.
fn own_cpu() -> Duration {
    procfs::cpu_time(std::process::id()).unwrap_or_default()
}

/// Starts the hostile clients and waits until each is set up; returns them, their plan, and
/// the server's sample then.
async fn hostile_set_up(
    server: &mut Server,
    address: SocketAddr,
    proxies: &[ObjectKey],
) -> Result<(Hostile, Plan, Sample), Error> {
    let plan = Plan::for_fleet(proxies.len());
    let mut clients = Hostile::start(address, proxies, plan);
    server
        .watch
        .bounded("the hostile clients to set up", STOP_TIMEOUT * 4, async {
            Ok(clients.set_up(plan.extra_connections).await?)
        })
        .await?;
    eprintln!("xds-load: hostile clients set up: {plan:?}");
    Ok((clients, plan, server.sample()))
}

/// Waits until the server counted every refusal the hostile clients cause, and samples it
/// then. Those that never read meet the write timeout last, and only a few at a time: each
/// first waits for room in the budget for its answer. So the wait is bounded for each
/// refusal counted, not for all of them.
async fn hostile_refused(
    server: &mut Server,
    plan: Plan,
    held: Sample,
    args: &RunArgs,
) -> Result<HostileResult, Error> {
    let expected = plan.expected();
    let wanted: u64 = expected.iter().map(|(_, n)| n).sum();
    let watch = server.watch;
    let mut before = None;
    let counted = loop {
        let next = watch
            .bounded(
                "the server to count another refusal",
                REFUSALS_TIMEOUT,
                async {
                    loop {
                        let counted = server.refused().await?;
                        let progress = refusals_toward(&expected, &counted);
                        if progress == wanted || before != Some(progress) {
                            return Ok((progress, counted));
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
            )
            .await;
        match next {
            Ok((progress, counted)) if progress == wanted => break counted,
            Ok((progress, _)) => before = Some(progress),
            Err(Error::Timeout { .. }) => {
                return Err(Error::Uncounted(format!(
                    "expected {expected:?}, counted {:?}",
                    server.refused().await?
                )));
            }
            Err(e) => return Err(e),
        }
    };
    let counts: Vec<_> = expected
        .iter()
        .map(|(r, n)| (r.as_str(), *n, count_of(&counted, *r)))
        .collect();
    if let Some((reason, expected, counted)) = counts.iter().find(|(_, e, c)| c != e) {
        return Err(Error::Uncounted(format!(
            "{counted} refusals of {reason}, where the hostile clients cause {expected}"
        )));
    }
    Ok(HostileResult {
        plan,
        held,
        refused: server.sample(),
        counts,
        max_rss_kib: args.max_server_rss_kib,
    })
}

/// How many of the `expected` refusals are `counted`, each reason up to what it expects.
fn refusals_toward(expected: &[(Refusal, u64)], counted: &[(String, u64)]) -> u64 {
    expected
        .iter()
        .map(|(reason, n)| count_of(counted, *reason).min(*n))
        .sum()
}

/// The refusals of `reason` the server counted.
fn count_of(counted: &[(String, u64)], reason: Refusal) -> u64 {
    counted
        .iter()
        .find(|(r, _)| r == reason.as_str())
        .map_or(0, |(_, n)| *n)
}

/// Adds to each change what the proxies logged in its round: the responses to affected and
/// to unaffected proxies, and the bytes each affected proxy received.
fn count_responses(
    changes: &mut [ChangeResult],
    affected_by_round: &[Expectations],
    outcomes: &[Outcome],
) {
    for ((number, result), affected) in (1..).zip(changes).zip(affected_by_round) {
        for (i, outcome) in outcomes.iter().enumerate() {
            let logged = || outcome.log.iter().filter(|l| l.round == number);
            let got = logged().count();
            if affected.contains_key(&i) {
                result.responses_affected += got;
                result
                    .received_bytes
                    .push(logged().map(|l| l.bytes as u64).sum());
            } else {
                result.responses_unaffected += got;
                result.unaffected_hit += usize::from(got > 0);
            }
        }
    }
}

/// The proxies the server knows, then its readiness.
async fn read_ready(
    lines: &mut Lines<BufReader<ChildStdout>>,
) -> Result<(Vec<ObjectKey>, Ready), Error> {
    let mut proxies = Vec::new();
    loop {
        let line = next_line(lines, "was ready").await?;
        match line.parse().map_err(Error::Protocol)? {
            Line::Proxy(p) => {
                let (namespace, name) = p
                    .split_once('/')
                    .ok_or_else(|| Error::Protocol(format!("not a proxy id: {p:?}")))?;
                proxies.push(ObjectKey::new(namespace, name));
            }
            Line::Ready(ready) => return Ok((proxies, ready)),
            other => return Err(Error::Protocol(format!("unexpected before ready: {other}"))),
        }
    }
}

/// Starts the fleet against the server; the proxies connect at most `connect_concurrency`
/// at a time.
fn connect(args: &RunArgs, server: SocketAddr, proxies: &[ObjectKey]) -> Running {
    let spec = FleetSpec {
        servers: vec![server],
        mode: args.mode,
        connect_concurrency: args.connect_concurrency,
    };
    Running::start(spec, proxies)
}

type Expectations = Arc<HashMap<usize, Vec<Expected>>>;

/// One change: ask for it, learn from the server what each affected proxy must get,
/// wait until each has ACKed it, then listen a little longer for responses that should not
/// come.
async fn change(
    server: &mut Server,
    running: &mut Running,
    proxies: usize,
    number: u32,
    args: &RunArgs,
) -> Result<(ChangeResult, Expectations), Error> {
    let watch = server.watch;
    let before = server.sample();
    let driver_before = own_cpu();
    let started = Instant::now();
    running.start_round(Round {
        number,
        started: Some(started),
        expected: None,
    });
    server.command(protocol::CHANGE).await?;
    let (changed, expected) = watch
        .bounded(
            "the server to apply and publish the change",
            args.change_timeout,
            read_change(&mut server.lines, proxies),
        )
        .await?;
    let expected: Expectations = Arc::new(expected);
    let changed_bytes: Vec<u64> = expected
        .values()
        .map(|wants| wants.iter().map(|w| w.bytes as u64).sum())
        .collect();
    // Said before the wait, so a change that never converges still tells what it sent.
    let mut sorted = changed_bytes.clone();
    sorted.sort_unstable();
    eprintln!(
        "xds-load: change {number} ({}): {} proxies affected, {} bytes of changed resources \
         each (median); waiting for them to converge",
        changed.what,
        changed.affected,
        percentile(&sorted, 50).unwrap_or(0),
    );
    running.expect(expected.clone());
    let mut convergence = Vec::with_capacity(expected.len());
    let count = expected.len();
    watch
        .bounded(
            "the affected proxies to converge",
            args.change_timeout,
            async {
                Ok(running
                    .wait_converged(number, started, count, &mut convergence)
                    .await?)
            },
        )
        .await?;
    let convergence = convergence.into_iter().map(|(_, after)| after).collect();
    tokio::time::sleep(GRACE).await;
    let after = server.sample();
    Ok((
        ChangeResult {
            what: changed.what,
            apply: changed.apply,
            publish: changed.publish,
            affected: changed.affected,
            convergence,
            server_cpu: after.cpu.saturating_sub(before.cpu),
            driver_cpu: own_cpu().saturating_sub(driver_before),
            changed_bytes,
            received_bytes: Vec::new(),
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
    proxies: usize,
) -> Result<(Changed, HashMap<usize, Vec<Expected>>), Error> {
    let mut changed = None;
    let mut expected: HashMap<usize, Vec<Expected>> = HashMap::new();
    loop {
        let line = next_line(lines, "reported the change").await?;
        match line.parse().map_err(Error::Protocol)? {
            Line::Changed(c) => changed = Some(c),
            Line::Expect(e) => {
                let type_url = served_type(&e.type_url)
                    .ok_or_else(|| Error::Protocol(format!("unknown type {:?}", e.type_url)))?;
                let want = match e.version {
                    Some(v) => Want::Version(
                        u64::from_str_radix(&v, 16)
                            .map_err(|_| Error::Protocol(format!("bad version in {line:?}")))?,
                    ),
                    None => Want::Removed,
                };
                let name: Arc<str> = e.name.into();
                for proxy in e.proxies {
                    if proxy >= proxies {
                        return Err(Error::Protocol(format!("unknown proxy {proxy}")));
                    }
                    expected.entry(proxy).or_default().push(Expected {
                        type_url,
                        name: name.clone(),
                        want,
                        bytes: e.bytes,
                    });
                }
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
