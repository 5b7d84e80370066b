//! Fleet-wide proxy state in the API server. Each replica writes its report (what
//! `remora_fleet::report` makes of its own proxies) into ConfigMaps of the control plane's
//! namespace that it alone writes, `<prefix>-<replica>-<shard>`, labelled
//! [`REPORT_LABEL`]; every replica watches them all into its [`Fleet`], so the leader judges
//! status and rollout gates, and any replica answers `proxy-status`, for the whole fleet.
//!
//! Failure modes: writes are paced (at most one per `min_interval`), so a burst of ACKs
//! reaches the leader after the shards' writes, not one write per ACK; a replica renews its
//! report every `heartbeat` even when nothing changed, and one that stops renewing (crashed,
//! cut off from the API server) stops counting after `expiry`, when the leader deletes its
//! objects; a replica that stops gracefully withdraws its own. While the API server is
//! unreachable, the leader keeps judging from the last reports it saw until they expire;
//! its own proxies are always live.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures::StreamExt as _;
use k8s_openapi::{api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    runtime::{WatchStreamExt as _, watcher},
};
use remora_fleet::{Fleet, Report, Shard, report};
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
    time::Instant,
};
use tracing::{debug, warn};

use crate::metrics::Metrics;

/// The label of every report object; its value is the replica that writes it.
pub const REPORT_LABEL: &str = "remora.dev/proxy-report";

const BODY: &str = "proxies";
const REPLICA: &str = "replica";
const RENEWED: &str = "renewed";
const MANAGER: &str = "remora-fleet";

/// Where and how often this replica reports.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// The control plane's namespace, where the reports live.
    pub namespace: String,
    /// This replica's name (its pod).
    pub replica: String,
    /// Objects are named `<prefix>-<replica>-<shard>`.
    pub prefix: String,
    /// The least time between two API writes of this replica's report.
    pub min_interval: Duration,
    /// How often an unchanged report is renewed.
    pub heartbeat: Duration,
    /// How long a report that is not renewed counts.
    pub expiry: Duration,
}

impl FleetConfig {
    /// Reports named after `prefix` for `replica` in `namespace`: at most four writes a
    /// second, renewed every 10 s, expired after 30 s.
    pub fn new(namespace: &str, replica: &str, prefix: &str) -> FleetConfig {
        FleetConfig {
            namespace: namespace.to_owned(),
            replica: replica.to_owned(),
            prefix: prefix.to_owned(),
            min_interval: Duration::from_millis(250),
            heartbeat: Duration::from_secs(10),
            expiry: remora_fleet::DEFAULT_EXPIRY,
        }
    }

    /// What the names of this replica's objects begin with.
    fn own_prefix(&self) -> String {
        format!("{}-{}-", self.prefix, self.replica)
    }

    fn name(&self, shard: usize) -> String {
        format!("{}{shard}", self.own_prefix())
    }
}

/// Starts reporting this replica's proxies, watching every replica's reports into `fleet`
/// (waking `changed` on each), and, while `leading`, deleting expired reports.
pub fn start(
    client: &Client,
    config: &FleetConfig,
    fleet: Arc<Fleet>,
    leading: Option<watch::Receiver<bool>>,
    changed: Arc<Notify>,
    metrics: Arc<Metrics>,
) -> Vec<JoinHandle<()>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &config.namespace);
    vec![
        tokio::spawn(report_loop(
            api.clone(),
            config.clone(),
            fleet.clone(),
            metrics.clone(),
        )),
        tokio::spawn(observe(api.clone(), fleet.clone(), changed)),
        tokio::spawn(collect(api, config.clone(), fleet, leading, metrics)),
    ]
}

/// Deletes this replica's report objects: it stops, and its proxies go elsewhere.
pub async fn withdraw(client: &Client, config: &FleetConfig) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &config.namespace);
    let mine = ListParams::default().labels(&format!("{REPORT_LABEL}={}", config.replica));
    match api.list_metadata(&mine).await {
        Ok(list) => {
            for o in list.items {
                delete(&api, &o.name_any()).await;
            }
        }
        Err(e) => warn!(error = %e, "cannot list this replica's proxy reports to withdraw them"),
    }
}

/// Writes the shards that changed since they were last written, paced, and renews the
/// report every heartbeat.
async fn report_loop(
    api: Api<ConfigMap>,
    config: FleetConfig,
    fleet: Arc<Fleet>,
    metrics: Arc<Metrics>,
) {
    let mut changes = fleet.local().changes();
    let mut written = left_behind(&api, &config).await;
    let mut pace = Pace::new(config.min_interval);
    let mut renewed = Instant::now();
    loop {
        changes.mark_seen();
        let shards = report::shards(&fleet.local().all());
        let count = shards.len();
        // Nothing is written yet on the first pass (or only what an earlier run left, never
        // equal to a body), so every shard is stale then: no flag is needed for it.
        let renew = renewed.elapsed() >= config.heartbeat;
        for shard in &shards {
            let stale = written.get(&shard.index) != Some(&shard.body);
            let renewal = renew && shard.index == 0;
            if !(stale || renewal) {
                continue;
            }
            pace.wait().await;
            // Built again after the wait, so that the ACKs of a burst that came during the
            // round go out with it rather than a round later.
            let shard = report::shard(&fleet.local().all(), shard.index, count);
            let ok = apply(&api, &config, &shard).await;
            metrics.report_write("apply", ok);
            if ok {
                written.insert(shard.index, shard.body);
                renewed = Instant::now();
            }
        }
        let gone: Vec<usize> = written.range(count..).map(|(i, _)| *i).collect();
        for index in gone {
            pace.wait().await;
            metrics.report_write("delete", delete(&api, &config.name(index)).await);
            written.remove(&index);
        }
        let next_renewal = renewed + config.heartbeat;
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = tokio::time::sleep_until(next_renewal) => {}
        }
    }
}

/// The shards a previous run under this name left (a restarted container keeps its pod's
/// name), as written with nothing: each is rewritten or deleted, never left to speak for
/// proxies that are gone.
async fn left_behind(api: &Api<ConfigMap>, config: &FleetConfig) -> BTreeMap<usize, String> {
    let mine = ListParams::default().labels(&format!("{REPORT_LABEL}={}", config.replica));
    let prefix = config.own_prefix();
    match api.list_metadata(&mine).await {
        Ok(list) => list
            .items
            .iter()
            .filter_map(|o| o.name_any().strip_prefix(&prefix)?.parse().ok())
            .map(|index| (index, String::new()))
            .collect(),
        Err(e) => {
            warn!(error = %e, "cannot list what this replica reported before; rewriting what it reports now");
            BTreeMap::new()
        }
    }
}

/// At most one write per interval.
struct Pace {
    interval: Duration,
    next: Instant,
}

impl Pace {
    fn new(interval: Duration) -> Pace {
        Pace {
            interval,
            next: Instant::now(),
        }
    }

    async fn wait(&mut self) {
        tokio::time::sleep_until(self.next).await;
        self.next = Instant::now() + self.interval;
    }
}

async fn apply(api: &Api<ConfigMap>, config: &FleetConfig, shard: &Shard) -> bool {
    let name = config.name(shard.index);
    let object = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([
                (REPORT_LABEL.to_owned(), config.replica.clone()),
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    "remora".to_owned(),
                ),
            ])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            (REPLICA.to_owned(), config.replica.clone()),
            (
                RENEWED.to_owned(),
                k8s_openapi::jiff::Timestamp::now().to_string(),
            ),
            (BODY.to_owned(), shard.body.clone()),
        ])),
        ..Default::default()
    };
    let params = PatchParams::apply(MANAGER).force();
    match api.patch(&name, &params, &Patch::Apply(&object)).await {
        Ok(_) => true,
        Err(e) => {
            warn!(object = %name, error = %e, "proxy report not written; written again on the next change or renewal");
            false
        }
    }
}

async fn delete(api: &Api<ConfigMap>, name: &str) -> bool {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => true,
        Err(kube::Error::Api(e)) if e.code == 404 => true,
        Err(e) => {
            warn!(object = %name, error = %e, "proxy report not deleted");
            false
        }
    }
}

/// The report an object holds; `None` (logged) when it is not one this version reads.
fn decode(object: &ConfigMap) -> Option<Report> {
    let name = object.name_any();
    let data = object.data.as_ref()?;
    let renewed = data
        .get(RENEWED)
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map(SystemTime::from);
    let (Some(replica), Some(renewed), Some(body)) = (data.get(REPLICA), renewed, data.get(BODY))
    else {
        warn!(object = %name, "a proxy report without its replica, renewal time or body; ignored");
        return None;
    };
    match report::decode(body) {
        Ok(proxies) => Some(Report {
            replica: replica.clone(),
            renewed,
            proxies,
        }),
        Err(e) => {
            warn!(object = %name, error = %e, "a proxy report this version cannot read; ignored");
            None
        }
    }
}

/// Watches every replica's report objects into `fleet`. A re-list forgets the objects it
/// no longer lists.
async fn observe(api: Api<ConfigMap>, fleet: Arc<Fleet>, changed: Arc<Notify>) {
    let config = watcher::Config::default().labels(REPORT_LABEL);
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    let mut known: BTreeSet<String> = BTreeSet::new();
    let mut listing: BTreeSet<String> = BTreeSet::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                let name = o.name_any();
                listing.insert(name.clone());
                known.insert(name.clone());
                match decode(&o) {
                    Some(report) => fleet.observe(&name, report),
                    None => fleet.forget(&name),
                }
            }
            Ok(watcher::Event::Delete(o)) => {
                let name = o.name_any();
                known.remove(&name);
                fleet.forget(&name);
            }
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitDone) => {
                for name in known.difference(&listing) {
                    fleet.forget(name);
                }
                known = std::mem::take(&mut listing);
            }
            Err(e) => {
                warn!(error = %e, "watching proxy reports; retrying");
                continue;
            }
        }
        changed.notify_one();
    }
}

/// While leading, deletes the reports of replicas that stopped renewing them.
async fn collect(
    api: Api<ConfigMap>,
    config: FleetConfig,
    fleet: Arc<Fleet>,
    leading: Option<watch::Receiver<bool>>,
    metrics: Arc<Metrics>,
) {
    loop {
        tokio::time::sleep(config.heartbeat).await;
        if !leading.as_ref().is_none_or(|l| *l.borrow()) {
            continue;
        }
        for name in fleet.expired(SystemTime::now()) {
            debug!(object = %name, "deleting an expired proxy report");
            let ok = delete(&api, &name).await;
            metrics.report_write("delete", ok);
        }
    }
}
