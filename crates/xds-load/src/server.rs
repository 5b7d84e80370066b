//! The server role: the control plane under test, in a process of its own so that its memory
//! and CPU time are its own. It builds a synthetic mesh and publishes every proxy's snapshot
//! through the runtime's `Pipeline`, serves ADS on loopback as the control plane does, and
//! on each command from the driver makes the next change ([`crate::scenario`]) and reports
//! which proxies must receive what, and how many bytes of it (see [`crate::protocol`]).
//!
//! The pipeline runs on the main thread, the ADS streams on a Tokio runtime
//! beside it: a change is computed while the streams keep being served, as in the running
//! control plane.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io::{self, BufRead, BufWriter, Write},
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use remora_envoy::Options;
use remora_model::{
    config::ResourceKey,
    input::{Event, MeshSettings, ObjectKey},
};
use remora_runtime::{Pipeline, Serving, drain};
use remora_synthetic::Synthetic;
use remora_xds::{Refusal, Refusals};
use remora_xds_load::{hostile::Plan, procfs, shape_for};
use tokio::{net::TcpSocket, sync::watch};

use crate::{
    Error,
    protocol::{self, Changed, Expect, Line, Ready},
    scenario::{Change, ChangeKind, Changes},
};

/// Connections waiting to be accepted. Linux caps it at `net.core.somaxconn` (4096 by
/// default); the driver connects fewer at once.
const BACKLOG: u32 = 4096;

/// What the server role is started with.
#[derive(Clone, Debug)]
pub struct ServeArgs {
    pub proxies: usize,
    pub egress: bool,
    pub response_budget_mib: usize,
    pub settings: MeshSettings,
    pub change_kind: ChangeKind,
    /// Whether hostile clients join the fleet: the server then holds exactly the fleet's
    /// connections and theirs.
    pub hostile: bool,
}

pub fn serve(args: ServeArgs) -> Result<(), Error> {
    init_logs();
    // Every proxy holds one connection, plus a margin for everything else.
    procfs::ensure_open_files(args.proxies as u64 + 256).map_err(Error::Limits)?;
    let synthetic = Synthetic::new(shape_for(args.proxies, args.egress));
    let (mut pipeline, mut ready) = publish(&synthetic, args.settings);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let listener = {
        let _entered = runtime.enter();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let socket = TcpSocket::new_v4().map_err(Error::Listen)?;
        socket.bind(addr).map_err(Error::Listen)?;
        socket.listen(BACKLOG).map_err(Error::Listen)?
    };
    ready.port = listener.local_addr().map_err(Error::Listen)?.port();
    let (stop, stopped) = watch::channel(false);
    // Simulated proxies present no certificates: the benchmark measures distribution.
    let mut serving = Serving::insecure();
    if args.hostile {
        serving.limits.connections = args.proxies + Plan::for_fleet(args.proxies).connections();
    }
    let refusals = serving.refusals.clone();
    let server = {
        // `serve` starts its accept loop as it is called, so within the runtime.
        let _entered = runtime.enter();
        runtime.spawn(pipeline.state().serve(
            listener,
            stopped,
            args.response_budget_mib.saturating_mul(1024 * 1024),
            serving,
        ))
    };

    let mut out = BufWriter::new(io::stdout().lock());
    let known: Vec<_> = pipeline.state().mesh.lock().proxies().cloned().collect();
    for p in &known {
        writeln!(out, "{}", Line::Proxy(p.clone().to_string())).map_err(Error::Pipe)?;
    }
    writeln!(out, "{}", Line::Ready(ready)).map_err(Error::Pipe)?;
    out.flush().map_err(Error::Pipe)?;
    let changes = Changes::new(&synthetic, args.change_kind);
    let places: Places = known.into_iter().enumerate().map(|(i, p)| (p, i)).collect();
    let answered = answer(&mut pipeline, changes, &places, &refusals, &mut out);

    stop.send_replace(true);
    runtime.block_on(async {
        if let Some(Err(e)) = drain(server).await {
            eprintln!("xds-load serve: the server ended with an error: {e}");
        }
    });
    runtime.shutdown_timeout(remora_runtime::DRAIN);
    answered
}

/// The server's warnings (a stream it closes, a proxy that stopped reading) go to standard
/// error, which the driver shares; `RUST_LOG` may ask for more, as of the `remora` binary.
fn init_logs() {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Err(_) => EnvFilter::new("warn"),
        Ok(wanted) => EnvFilter::try_new(&wanted).unwrap_or_else(|e| {
            eprintln!("xds-load serve: RUST_LOG={wanted:?} is no filter ({e}); logging warnings");
            EnvFilter::new("warn")
        }),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .init();
}

/// Builds the synthetic mesh and publishes every proxy's snapshot, measuring both.
fn publish(synthetic: &Synthetic, settings: MeshSettings) -> (Pipeline, Ready) {
    let pid = std::process::id();
    let rss = || procfs::memory(pid).unwrap_or_default().rss_kib;
    let rss_start_kib = rss();
    let mut pipeline = Pipeline::new(settings, Options::default(), |_| None);
    // The initial report of changes is of no use here: everything is published below.
    let build = pipeline
        .apply(synthetic.objects().into_iter().map(Event::Upsert))
        .apply;
    let rss_built_kib = rss();
    // Progress for whoever watches a long start; the driver reads only stdout.
    eprintln!(
        "xds-load serve: mesh of {} proxies built in {:.2} s, RSS {} MiB; publishing",
        synthetic.shape().pods,
        build.as_secs_f64(),
        rss_built_kib / 1024
    );
    let start = Instant::now();
    pipeline.open();
    let publish = start.elapsed();
    let state = pipeline.state();
    let known: Vec<_> = state.mesh.lock().proxies().cloned().collect();
    let resources: usize = known
        .iter()
        .filter_map(|p| state.cache.get(p))
        .map(|s| s.len())
        .sum();
    let ready = Ready {
        port: 0,
        build,
        publish,
        rss_start_kib,
        rss_built_kib,
        rss_published_kib: rss(),
        heap_published_kib: crate::heap_kib(),
        resources_per_proxy: resources / known.len().max(1),
    };
    (pipeline, ready)
}

/// Answers the driver's commands on standard input until it says quit.
fn answer(
    pipeline: &mut Pipeline,
    mut changes: Changes<'_>,
    places: &Places,
    refusals: &Refusals,
    out: &mut impl Write,
) -> Result<(), Error> {
    for command in io::stdin().lock().lines() {
        let command = command.map_err(Error::Pipe)?;
        match command.trim() {
            protocol::CHANGE => change(pipeline, changes.next_change(), places, out)?,
            protocol::HEAP => {
                let heap = Line::Heap(crate::heap_kib(), crate::heap_peak_kib());
                writeln!(out, "{heap}").map_err(Error::Pipe)?;
            }
            protocol::REFUSED => {
                let counts = Refusal::ALL
                    .iter()
                    .map(|r| (r.as_str().to_owned(), refusals.get(*r)))
                    .collect();
                writeln!(out, "{}", Line::Refused(counts)).map_err(Error::Pipe)?;
            }
            protocol::QUIT => break,
            other => eprintln!("xds-load serve: unknown command {other:?}"),
        }
        out.flush().map_err(Error::Pipe)?;
    }
    Ok(())
}

/// Each proxy's place among the `proxy` lines, by which change reports name it.
type Places = HashMap<ObjectKey, usize>;

/// What a change report says of one resource: type, name, version and length.
type Wanted = (&'static str, Arc<str>, Option<String>, usize);

/// Applies one change and reports which proxies must receive what.
fn change(
    pipeline: &mut Pipeline,
    change: Change,
    places: &Places,
    out: &mut impl Write,
) -> Result<(), Error> {
    let step = pipeline.apply(change.events);
    let affected = step.changes.proxies();
    let changed = Changed {
        what: change.what,
        apply: step.apply,
        publish: step.publish,
        affected: affected.len(),
    };
    writeln!(out, "{}", Line::Changed(changed)).map_err(Error::Pipe)?;
    let cache = &pipeline.state().cache;
    let groups: HashMap<&ObjectKey, &BTreeSet<ResourceKey>> = step
        .changes
        .groups
        .iter()
        .flat_map(|g| g.proxies.iter().map(move |p| (p, &*g.resources)))
        .collect();
    let mut wanted: BTreeMap<Wanted, Vec<usize>> = BTreeMap::new();
    for proxy in affected {
        let place = *places
            .get(proxy)
            .ok_or_else(|| Error::Protocol(format!("{proxy} is no proxy the driver knows")))?;
        let snapshot = cache.get(proxy).unwrap_or_default();
        let keys = groups
            .get(proxy)
            .into_iter()
            .copied()
            .flatten()
            .chain(step.changes.own.get(proxy).into_iter().flatten())
            .collect::<BTreeSet<_>>();
        for key in keys {
            let type_url = remora_envoy::type_url(key.kind);
            let resource = snapshot.get(type_url, &key.name);
            let version = resource.map(|r| r.version.clone());
            let bytes = resource.map_or(0, |r| r.any.value.len());
            wanted
                .entry((type_url, key.name.clone(), version, bytes))
                .or_default()
                .push(place);
        }
    }
    for ((type_url, name, version, bytes), proxies) in wanted {
        let expect = Expect {
            proxies,
            type_url: type_url.into(),
            name: name.to_string(),
            version,
            bytes,
        };
        writeln!(out, "{}", Line::Expect(expect)).map_err(Error::Pipe)?;
    }
    writeln!(out, "{}", Line::Done).map_err(Error::Pipe)
}
