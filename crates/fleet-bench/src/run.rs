//! The run: the mesh into the API server, two replicas, the fleet split between them, then
//! route edits one after the other, each followed until every proxy ACKed it and a watch saw
//! the route's status count them all. Every wait is bounded, and what the run created (the
//! mesh's namespaces, the replicas, the fleet) is gone again when it returns, whatever
//! happened.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use remora_api::TrafficRoute;
use remora_controller::endpoints::EndpointApi;
use remora_model::input::Object;
use remora_synthetic::Synthetic;
use remora_xds::snapshot::ROUTE;
use remora_xds_load::{
    fleet::{Expected, Mode, Round, Want},
    pending, procfs,
    running::{FleetError, FleetSpec, Running},
    shape_for,
};
use serde_json::json;

use crate::{
    cluster::{self, ClusterError},
    knobs::Knobs,
    mesh::ApiMesh,
    metrics::Scrape,
    observe::{ReportWatch, RouteWatch},
    replica::{Replica, ReplicaArgs, ReplicaError, Sample},
    report::{ChangeResult, Report, Window},
    target::{self, Target, TargetError},
    timeline::{self, RouteSeen},
};

/// The mesh's root namespace, and the replicas' (Lease and reports): apart from
/// `remora-system`, which someone else's control plane may use on the same cluster.
const ROOT: &str = "fleet-bench-system";
/// The replicas; proxy `i` connects to replica `i % 2`.
const REPLICAS: [&str; 2] = ["replica-a", "replica-b"];

/// What a run is asked for.
#[derive(Clone, Debug)]
pub struct RunArgs {
    pub proxies: usize,
    pub mode: Mode,
    pub egress: bool,
    pub route: Option<usize>,
    pub changes: u32,
    pub settle: Duration,
    pub idle: Duration,
    pub create_concurrency: usize,
    pub connect_concurrency: usize,
    pub setup_timeout: Duration,
    pub sync_timeout: Duration,
    pub change_timeout: Duration,
    pub knobs: Knobs,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Limits(String),
    #[error("cannot start the Tokio runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("waited {after:?} for {phase}, in vain{detail}")]
    Timeout {
        phase: &'static str,
        after: Duration,
        /// What had happened by then.
        detail: String,
    },
    #[error("{0}")]
    Watch(&'static str),
    #[error("interrupted")]
    Interrupted,
    #[error("{error}\n{count} proxies were not done, for example:\n  {examples}")]
    Diagnosed {
        error: Box<Error>,
        count: usize,
        examples: String,
    },
}

/// Runs the benchmark; returns its report, as Markdown.
pub fn run(args: RunArgs) -> Result<String, Error> {
    // Every proxy holds one connection, plus a margin; the replicas inherit the limit.
    procfs::ensure_open_files(args.proxies as u64 + 1024).map_err(Error::Limits)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(in_cluster(args))
}

async fn in_cluster(args: RunArgs) -> Result<String, Error> {
    let client = cluster::client().await?;
    let synthetic = Synthetic::new(shape_for(args.proxies, args.egress));
    let target = target::pick(&synthetic, args.route)?;
    let slices = EndpointApi::discover(&client).await;
    let mesh = ApiMesh::new(&synthetic, ROOT, &std::process::id().to_string(), slices);
    let namespaces = mesh.namespace_names();
    cluster::preflight(&client, &namespaces).await?;
    cluster::install_crds(&client).await?;
    let outcome = tokio::select! {
        outcome = bench(&client, &args, &synthetic, &mesh, &target) => outcome,
        _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
    };
    eprintln!("fleet-bench: deleting the run's namespaces");
    let left = cluster::teardown(&client, &namespaces).await;
    if !left.is_empty() {
        eprintln!("fleet-bench: namespaces still there after teardown: {left:?}");
    }
    outcome.map(|mut report| {
        report.left = left;
        report.render()
    })
}

/// Runs `work` for at most `after`.
async fn bounded<T>(
    phase: &'static str,
    after: Duration,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(after, work).await.unwrap_or_else(|_| {
        Err(Error::Timeout {
            phase,
            after,
            detail: String::new(),
        })
    })
}

/// Writes the mesh, starts the replicas and measures; stops the replicas whatever happened.
async fn bench(
    client: &Client,
    args: &RunArgs,
    synthetic: &Synthetic,
    mesh: &ApiMesh,
    target: &Target,
) -> Result<Report, Error> {
    let load_start = load_average();
    let (objects, calls) = mesh.counts();
    eprintln!("fleet-bench: writing {objects} objects ({calls} API calls)");
    let written = bounded("the mesh to be written", args.setup_timeout, async {
        Ok(cluster::create(client, mesh, args.create_concurrency).await?)
    })
    .await?;
    eprintln!(
        "fleet-bench: mesh written in {:.1} s; starting the replicas",
        written.as_secs_f64()
    );
    let mut replicas = Vec::new();
    for name in REPLICAS {
        let replica = ReplicaArgs {
            name: name.to_owned(),
            namespace: mesh.root.clone(),
            root_namespace: mesh.root.clone(),
            knobs: args.knobs.clone(),
        };
        match Replica::start(&replica).await {
            Ok(r) => replicas.push(r),
            Err(e) => {
                stop_replicas(replicas).await;
                return Err(e.into());
            }
        }
    }
    let outcome = with_replicas(client, args, synthetic, mesh, target, &replicas).await;
    stop_replicas(replicas).await;
    let mut report = outcome?;
    report.setup = (objects, calls, written);
    report.load = (load_start, load_average());
    Ok(report)
}

async fn stop_replicas(replicas: Vec<Replica>) {
    for r in replicas {
        if let Err(e) = r.stop().await {
            eprintln!("fleet-bench: {e}");
        }
    }
}

/// What the measuring needs at hand.
struct Bench<'a> {
    client: &'a Client,
    args: &'a RunArgs,
    synthetic: &'a Synthetic,
    mesh: &'a ApiMesh,
    replicas: &'a [Replica],
    route: RouteWatch,
    reports: ReportWatch,
    /// The edited route, and its namespace and name.
    target: &'a Target,
    route_key: (String, String),
}

/// With the replicas up: waits for them, runs the fleet, measures; stops the fleet.
async fn with_replicas(
    client: &Client,
    args: &RunArgs,
    synthetic: &Synthetic,
    mesh: &ApiMesh,
    target: &Target,
    replicas: &[Replica],
) -> Result<Report, Error> {
    let leader = bounded(
        "the replicas to be ready and elect a leader",
        args.setup_timeout,
        async { leader_of(replicas).await },
    )
    .await?;
    let route = &mesh.routes[target.index];
    let namespace = route.metadata.namespace.clone().unwrap_or_default();
    let name = route.metadata.name.clone().unwrap_or_default();
    let mut bench = Bench {
        client,
        args,
        synthetic,
        mesh,
        replicas,
        route: RouteWatch::start(client, &namespace, &name),
        reports: ReportWatch::start(client, &mesh.root),
        target,
        route_key: (namespace, name),
    };
    let at_start = scrape(replicas).await?;
    let started = Instant::now();
    let spec = FleetSpec {
        servers: replicas.iter().map(|r| r.xds).collect(),
        mode: args.mode,
        connect_concurrency: args.connect_concurrency,
    };
    let mut running = Running::start(spec, &mesh.proxies);
    match bench.measure(&mut running, leader, started, at_start).await {
        Ok(report) => {
            if let Err(e) = running.stop().await {
                eprintln!("fleet-bench: stopping the fleet: {e}");
            }
            Ok(report)
        }
        Err(error) => Err(match pending::diagnose(running, &mesh.proxies).await {
            Some(p) => Error::Diagnosed {
                error: Box::new(error),
                count: p.count,
                examples: p.examples,
            },
            None => error,
        }),
    }
}

/// Waits until every replica is ready and one of them leads; returns its index.
async fn leader_of(replicas: &[Replica]) -> Result<usize, Error> {
    loop {
        let mut ready = true;
        for r in replicas {
            ready &= r.ready().await?;
        }
        let scrapes = scrape(replicas).await?;
        let leaders: Vec<usize> = (0..scrapes.len()).filter(|i| scrapes[*i].leader).collect();
        if let ([leader], true) = (&leaders[..], ready) {
            return Ok(*leader);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn scrape(replicas: &[Replica]) -> Result<Vec<Scrape>, Error> {
    let mut out = Vec::with_capacity(replicas.len());
    for r in replicas {
        out.push(r.scrape().await?);
    }
    Ok(out)
}

fn since(after: &[Scrape], before: &[Scrape]) -> Vec<Scrape> {
    after.iter().zip(before).map(|(a, b)| a.since(b)).collect()
}

fn samples(replicas: &[Replica]) -> Vec<Sample> {
    replicas.iter().map(Replica::sample).collect()
}

/// The 1-minute load average.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

impl Bench<'_> {
    /// The run once the replicas are up: sync, idle, the edits, the end.
    async fn measure(
        &mut self,
        running: &mut Running,
        leader: usize,
        started: Instant,
        at_start: Vec<Scrape>,
    ) -> Result<Report, Error> {
        let args = self.args;
        let synced = self.sync(running, leader, started, at_start).await?;
        eprintln!(
            "fleet-bench: idle for {:?}, then {} edits",
            args.idle, args.changes
        );
        let idle_start = Instant::now();
        tokio::time::sleep(args.idle).await;
        let after_idle = scrape(self.replicas).await?;
        let idle = Window {
            took: idle_start.elapsed(),
            per_replica: since(&after_idle, &synced.scrape),
        };
        let mut changes = Vec::new();
        for number in 1..=args.changes {
            changes.push(self.change(running, number).await?);
        }
        let end = scrape(self.replicas).await?;
        let run = Window {
            took: idle_start.elapsed(),
            per_replica: since(&end, &synced.scrape),
        };
        let me = std::process::id();
        Ok(Report {
            proxies: self.mesh.proxies.len(),
            mode: args.mode,
            shape: self.synthetic.shape().clone(),
            knobs: args.knobs.changed(),
            route: format!("{}/{}", self.route_key.0, self.route_key.1),
            route_config: self.target.route_config.clone(),
            affected: synced.affected,
            replicas: REPLICAS.iter().map(|r| (*r).to_owned()).collect(),
            leader,
            // The mesh's writing and the load are `bench`'s to fill in.
            setup: (0, 0, Duration::ZERO),
            connect_and_sync: synced.connect_and_sync,
            first_status: synced.first_status,
            quiet: synced.quiet,
            sync: synced.window,
            idle,
            run,
            reports_synced: synced.reports,
            reports_end: timeline::objects_at(&self.reports.events(), Instant::now()),
            synced_samples: synced.samples,
            end_samples: samples(self.replicas),
            changes,
            driver: Sample {
                cpu: procfs::cpu_time(me).unwrap_or_default(),
                memory: procfs::memory(me).unwrap_or_default(),
            },
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            load: (0.0, 0.0),
            left: Vec::new(),
        })
    }

    /// Until every proxy is synced, the route's status counts them all, and the leader has
    /// written every other status of the synced fleet.
    async fn sync(
        &mut self,
        running: &mut Running,
        leader: usize,
        started: Instant,
        at_start: Vec<Scrape>,
    ) -> Result<Synced, Error> {
        let n = self.mesh.proxies.len();
        let timeout = self.args.sync_timeout;
        let last_synced = bounded("the proxies to connect and sync", timeout, async {
            Ok(running.wait_synced(n).await?)
        })
        .await?;
        let connect_and_sync = last_synced.saturating_duration_since(started);
        eprintln!(
            "fleet-bench: {n} proxies synced in {:.1} s; waiting for the status to count them",
            connect_and_sync.as_secs_f64()
        );
        let generation = self.generation().await?;
        let phase = "the status to count every proxy";
        let counted = self.status(started, generation, timeout, phase).await?;
        let window = Window {
            took: counted.at.saturating_duration_since(started),
            per_replica: since(&scrape(self.replicas).await?, &at_start),
        };
        eprintln!("fleet-bench: waiting for the leader's status writes to stop");
        let phase = "the leader's status writes to stop";
        let quiet = bounded(phase, timeout, self.quiet(leader)).await?;
        Ok(Synced {
            connect_and_sync,
            first_status: counted.at.saturating_duration_since(last_synced),
            quiet: quiet.saturating_duration_since(counted.at),
            affected: counted.affected,
            window,
            scrape: scrape(self.replicas).await?,
            samples: samples(self.replicas),
            reports: timeline::objects_at(&self.reports.events(), Instant::now()),
        })
    }

    /// Waits until the leader writes no status for a whole status interval and a second
    /// (every route's status written for the synced fleet, not only the edited one's);
    /// returns when it last wrote.
    async fn quiet(&self, leader: usize) -> Result<Instant, Error> {
        let interval = Duration::from_millis(self.args.knobs.status_interval_ms);
        let written = |s: &Scrape| s.route_status_writes + s.policy_status_writes;
        let mut last = Instant::now();
        let mut before = written(&self.replicas[leader].scrape().await?);
        loop {
            tokio::time::sleep(interval + Duration::from_secs(1)).await;
            let now = written(&self.replicas[leader].scrape().await?);
            if now == before {
                return Ok(last);
            }
            (before, last) = (now, Instant::now());
        }
    }

    /// The edited route's generation now.
    async fn generation(&self) -> Result<i64, Error> {
        let (namespace, name) = &self.route_key;
        let api: Api<TrafficRoute> = Api::namespaced(self.client.clone(), namespace);
        let route = api.get(name).await.map_err(|source| ClusterError::Api {
            what: format!("reading route {namespace}/{name}"),
            source,
        })?;
        Ok(route.metadata.generation.unwrap_or(1))
    }

    /// The first status since `since` that counts every proxy's ACK of `generation`.
    async fn status(
        &mut self,
        since: Instant,
        generation: i64,
        timeout: Duration,
        phase: &'static str,
    ) -> Result<RouteSeen, Error> {
        let n = self.mesh.proxies.len();
        let found = tokio::time::timeout(
            timeout,
            self.route.first(since, |s| s.counts_all(generation, n)),
        )
        .await;
        match found {
            Ok(Ok(seen)) => Ok(seen),
            Ok(Err(why)) => Err(Error::Watch(why)),
            Err(_) => {
                let last = self.route.since(since).pop();
                Err(Error::Timeout {
                    phase,
                    after: timeout,
                    detail: format!("; the last status seen: {last:?}, generation {generation}"),
                })
            }
        }
    }

    /// One edit: set the round (the proxies note what they hold), edit the route, wait for
    /// every ACK and for the status, settle, then work out where the time went.
    async fn change(&mut self, running: &mut Running, number: u32) -> Result<ChangeResult, Error> {
        let n = self.mesh.proxies.len();
        let want = Expected {
            type_url: ROUTE,
            name: self.target.route_config.as_str().into(),
            want: Want::Changed,
            bytes: 0,
        };
        let expected: HashMap<usize, Vec<Expected>> =
            (0..n).map(|i| (i, vec![want.clone()])).collect();
        let before = scrape(self.replicas).await?;
        let cpu_before = samples(self.replicas);
        let started = Instant::now();
        running.start_round(Round {
            number,
            started: Some(started),
            expected: Some(Arc::new(expected)),
        });
        let generation = self.edit(number).await?;
        let edit_call = started.elapsed();
        let mut acks = Vec::with_capacity(n);
        let converged = tokio::time::timeout(
            self.args.change_timeout,
            running.wait_converged(number, started, n, &mut acks),
        )
        .await;
        match converged {
            Ok(result) => result?,
            Err(_) => {
                return Err(Error::Timeout {
                    phase: "every proxy to ACK the edit",
                    after: self.args.change_timeout,
                    detail: format!("; {} of {n} did", acks.len()),
                });
            }
        }
        let seen = self
            .status(
                started,
                generation,
                self.args.change_timeout,
                "the status to count every ACK of the edit",
            )
            .await?;
        eprintln!(
            "fleet-bench: edit {number}: last ACK at {:.2} s, status complete at {:.2} s",
            acks.iter()
                .map(|(_, d)| *d)
                .max()
                .unwrap_or_default()
                .as_secs_f64(),
            seen.at.saturating_duration_since(started).as_secs_f64()
        );
        tokio::time::sleep(self.args.settle).await;
        let after = scrape(self.replicas).await?;
        let cpu = cpu_before
            .iter()
            .zip(samples(self.replicas))
            .map(|(b, a)| a.cpu.saturating_sub(b.cpu))
            .collect();
        let edit = Edit {
            number,
            generation,
            started,
            edit_call,
            acks,
            seen,
            window: Window {
                took: started.elapsed(),
                per_replica: since(&after, &before),
            },
            cpu,
        };
        Ok(self.analyse(edit))
    }

    /// Edits the route: odd edits move its split, even ones move it back. Returns the new
    /// generation.
    async fn edit(&self, number: u32) -> Result<i64, Error> {
        let i = self.target.index;
        let object = if number % 2 == 1 {
            self.synthetic.route_change(i)
        } else {
            self.synthetic.route(i)
        };
        let Object::TrafficRoute(route) = object else {
            unreachable!("a synthetic route is a TrafficRoute")
        };
        let (namespace, name) = &self.route_key;
        let api: Api<TrafficRoute> = Api::namespaced(self.client.clone(), namespace);
        let patch = Patch::Merge(json!({"spec": route.spec}));
        let edited = api
            .patch(name, &PatchParams::default(), &patch)
            .await
            .map_err(|source| ClusterError::Api {
                what: format!("editing route {namespace}/{name}"),
                source,
            })?;
        Ok(edited.metadata.generation.unwrap_or_default())
    }

    /// Where the time of one edit went, from the ACKs and the watched events.
    fn analyse(&self, edit: Edit) -> ChangeResult {
        let Edit {
            number,
            generation,
            started,
            edit_call,
            acks,
            seen,
            window,
            cpu,
        } = edit;
        let (n, replicas) = (self.mesh.proxies.len(), REPLICAS.len());
        let events = self.reports.events();
        let before = timeline::acked_by_reports(&events, started);
        let after = |at: Instant| at.saturating_duration_since(started);
        let mut last_ack = vec![Duration::ZERO; replicas];
        for (proxy, at) in &acks {
            let r = proxy % replicas;
            last_ack[r] = last_ack[r].max(*at);
        }
        let mut caught_up = Vec::new();
        let mut report_writes = Vec::new();
        for (r, name) in REPLICAS.iter().enumerate() {
            let count = share(n, replicas, r);
            let at = timeline::reports_caught_up(&events, name, &before, started, count);
            caught_up.push(at.map(after));
            let writes = timeline::writes_between(&events, name, started, seen.at);
            report_writes.push(writes.into_iter().map(after).collect());
        }
        ChangeResult {
            number,
            generation,
            edit_call,
            acks: acks.into_iter().map(|(_, d)| d).collect(),
            last_ack,
            caught_up,
            report_writes,
            status: after(seen.at),
            states: self
                .route
                .since(started)
                .into_iter()
                .filter(|s| s.at <= seen.at)
                .map(|s| (after(s.at), s))
                .collect(),
            window,
            cpu,
        }
    }
}

/// The synced fleet, before the first edit.
struct Synced {
    connect_and_sync: Duration,
    /// From the last proxy synced to the first status that counted them all.
    first_status: Duration,
    /// From that status to the leader's last status write of the sync.
    quiet: Duration,
    /// Proxies that status counted as affected.
    affected: i32,
    /// From the fleet's start to that status.
    window: Window,
    /// The replicas' counters, and their processes, once quiet.
    scrape: Vec<Scrape>,
    samples: Vec<Sample>,
    /// Each replica's report objects then.
    reports: BTreeMap<String, Vec<usize>>,
}

/// What one edit measured, before it is worked out.
struct Edit {
    number: u32,
    generation: i64,
    started: Instant,
    edit_call: Duration,
    acks: Vec<(usize, Duration)>,
    seen: RouteSeen,
    window: Window,
    cpu: Vec<Duration>,
}

/// How many of `n` proxies connect to replica `r` of `replicas` (proxy `i` to `i % replicas`).
fn share(n: usize, replicas: usize, r: usize) -> usize {
    (n + replicas - 1 - r) / replicas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_split_over_the_replicas_by_index() {
        assert_eq!((share(10_000, 2, 0), share(10_000, 2, 1)), (5_000, 5_000));
        assert_eq!((share(5, 2, 0), share(5, 2, 1)), (3, 2));
        assert_eq!(share(1, 2, 1), 0);
    }
}
