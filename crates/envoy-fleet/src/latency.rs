//! The time from a route edit (its file written) until each Envoy routes by the new rule,
//! seen through real requests.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use remora_envoy::type_url::ROUTE;
use remora_model::input::ObjectKey;
use remora_xds::{SyncRegistry, sync::TypeSync};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::{
    FleetError,
    fleet::{Fleet, FleetOptions, Probe},
    load_average,
    mesh::Version,
    procfs::Process,
};

/// The pause between two edits, so one edit's stragglers never overlap the next.
const BETWEEN_CHANGES: Duration = Duration::from_secs(1);
/// How long the fleet's CPU use is watched while it has nothing to do.
const IDLE_WINDOW: Duration = Duration::from_secs(1);

/// What the latency benchmark runs.
#[derive(Clone, Debug)]
pub struct LatencyOptions {
    /// The fleet.
    pub fleet: FleetOptions,
    /// Route edits to time, one after the other (each switches the default subset).
    pub changes: usize,
    /// The pause between two requests to one Envoy: the resolution of the timings.
    pub probe_every: Duration,
    /// How long after an edit every Envoy must route by it.
    pub change_timeout: Duration,
}

/// One route edit, timed from the moment its file was written.
#[derive(Clone, Debug)]
pub struct Change {
    /// The subset the default rule was switched to.
    pub to: Version,
    /// For each Envoy that routed by the new rule in time: when its first answer came from
    /// the new backend.
    pub routed: Vec<Duration>,
    /// The Envoys that did not, with their last answer.
    pub missing: Vec<(ObjectKey, String)>,
    /// Answers that came from neither backend, or failed, while the edit spread.
    pub unexpected: u32,
    /// When local mode sent the new route config to the first proxy of the fleet: the
    /// folder poll, the debounce, the model and the publish.
    pub first_sent: Option<Duration>,
    /// When local mode had the last proxy's ACK of it.
    pub last_acked: Option<Duration>,
    /// Encoded bytes of the route configs the edit changed for one proxy of the fleet: what
    /// local mode re-sent to each Envoy.
    pub changed_bytes: usize,
    /// CPU time every Envoy used together from the write until the last one routed.
    pub envoy_cpu: Duration,
    /// CPU time this process used meanwhile: local mode, the backends and the requests.
    pub own_cpu: Duration,
}

/// A run of the latency benchmark in one protocol flavour.
#[derive(Clone, Debug)]
pub struct LatencyRun {
    /// The options it ran with.
    pub options: LatencyOptions,
    /// From the start until every Envoy routed by the first rule.
    pub ready_after: Duration,
    /// How long reading the folder takes, as local mode does on every change it sees.
    pub folder_read: Duration,
    /// CPU time the whole fleet used in one second with nothing to do, before the edits.
    pub idle_envoy_cpu: Duration,
    /// Each edit.
    pub changes: Vec<Change>,
    /// Each Envoy's RSS after the last edit, in KiB.
    pub rss_kib: Vec<u64>,
    /// The 1-minute load average at the start and at the end.
    pub load: (Option<f64>, Option<f64>),
}

/// Starts the fleet, waits until it routes, times `changes` edits, and stops it.
pub async fn run(options: &LatencyOptions) -> Result<LatencyRun, FleetError> {
    let load_start = load_average();
    let (mut fleet, ready_after) = Fleet::start_synced(&options.fleet).await?;
    let folder_read = fleet.time_folder_read().await?;
    let idle_envoy_cpu = {
        let before = fleet.envoy_cpu();
        tokio::time::sleep(IDLE_WINDOW).await;
        fleet.envoy_cpu().saturating_sub(before)
    };
    let mut changes = Vec::with_capacity(options.changes);
    for i in 0..options.changes {
        if i > 0 {
            tokio::time::sleep(BETWEEN_CHANGES).await;
        }
        changes.push(change(&mut fleet, options).await?);
        fleet.check_running()?;
    }
    let rss_kib = fleet
        .envoys_mut()
        .iter()
        .filter_map(|e| e.process().rss_kib())
        .collect();
    fleet.stop().await;
    Ok(LatencyRun {
        options: options.clone(),
        ready_after,
        folder_read,
        idle_envoy_cpu,
        changes,
        rss_kib,
        load: (load_start, load_average()),
    })
}

/// One edit: the route file rewritten, then every Envoy asked until it answers from the new
/// backend.
async fn change(fleet: &mut Fleet, options: &LatencyOptions) -> Result<Change, FleetError> {
    let before = fleet.current();
    let to = before.other();
    let proxies: Vec<ObjectKey> = (0..fleet.mesh().proxies())
        .map(|i| fleet.mesh().proxy(i))
        .collect();
    // Every proxy of the fleet has the same outbound config; the first one stands for all.
    let first = fleet.mesh().proxy(0);
    let routes_before = fleet.route_configs(&first);
    let status = fleet.status();
    let sent_before = proxies
        .iter()
        .map(|p| route_sync(&status, p).and_then(|t| t.sent))
        .collect();
    let watch_deadline = Instant::now() + options.change_timeout;
    let watcher = tokio::spawn(watch_acks(status, proxies, sent_before, watch_deadline));

    let cpu_before = (fleet.envoy_cpu(), Process::Own.cpu_time());
    let written = fleet.switch_route()?;
    info!(to = to.label(), "wrote the route file");
    let probe = Probe {
        host: fleet.mesh().echo_host().into(),
        header: None,
        want: to.backend().into(),
        before: Some(before.backend().into()),
        every: options.probe_every,
        deadline: written + options.change_timeout,
    };
    let probed = fleet.probe_all(&probe).await;
    let envoy_cpu = fleet.envoy_cpu().saturating_sub(cpu_before.0);
    let own_cpu = Process::Own
        .cpu_time()
        .zip(cpu_before.1)
        .map_or(Duration::ZERO, |(after, before)| {
            after.saturating_sub(before)
        });
    let changed_bytes = changed_bytes(&routes_before, fleet.route_configs(&first));
    let (mut routed, mut missing, mut unexpected) = (Vec::new(), Vec::new(), 0);
    for p in probed {
        unexpected += p.unexpected;
        match p.outcome {
            Ok(at) => routed.push(at.saturating_duration_since(written)),
            Err(last) => missing.push((fleet.mesh().proxy(p.index), last)),
        }
    }
    let acks = watcher.await.unwrap_or_else(|e| {
        warn!(error = %e, "the watch of the proxies' ACKs failed; reporting none");
        Acks::default()
    });
    let since = |at: Instant| at.saturating_duration_since(written);
    Ok(Change {
        to,
        routed,
        missing,
        unexpected,
        first_sent: acks.first_sent.map(since),
        last_acked: acks.last_acked.map(since),
        changed_bytes,
        envoy_cpu,
        own_cpu,
    })
}

/// The encoded bytes of the route configs in `after` that are new or changed since `before`.
fn changed_bytes(
    before: &BTreeMap<String, (String, usize)>,
    after: BTreeMap<String, (String, usize)>,
) -> usize {
    after
        .into_iter()
        .filter(|(name, (version, _))| before.get(name).is_none_or(|(v, _)| v != version))
        .map(|(_, (_, bytes))| bytes)
        .sum()
}

/// When local mode sent a new route config to the first proxy, and had the last one's ACK.
#[derive(Clone, Copy, Debug, Default)]
struct Acks {
    first_sent: Option<Instant>,
    last_acked: Option<Instant>,
}

/// Watches local mode's record of the proxies' route configs until each proxy has ACKed a
/// version other than the one it held (`before`), or until `deadline`.
async fn watch_acks(
    status: Arc<SyncRegistry>,
    proxies: Vec<ObjectKey>,
    before: Vec<Option<String>>,
    deadline: Instant,
) -> Acks {
    let mut changes = status.changes();
    let mut acks = Acks::default();
    loop {
        let now = Instant::now();
        let routes: Vec<Option<TypeSync>> =
            proxies.iter().map(|p| route_sync(&status, p)).collect();
        let mut sent = routes.iter().zip(&before).map(|(t, b)| moved_on(t, b));
        if acks.first_sent.is_none() && sent.clone().any(|t| t.is_some()) {
            acks.first_sent = Some(now);
        }
        if sent.all(|t| t.is_some_and(|t| t.acked == t.sent)) {
            acks.last_acked = Some(now);
            return acks;
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            // The deadline passed, or local mode is gone.
            Ok(Err(_)) | Err(_) => return acks,
        }
    }
}

/// The status of a proxy's route configs if it was sent a version other than `before`.
fn moved_on<'a>(now: &'a Option<TypeSync>, before: &Option<String>) -> Option<&'a TypeSync> {
    now.as_ref()
        .filter(|t| t.sent.is_some() && t.sent != *before)
}

fn route_sync(status: &SyncRegistry, proxy: &ObjectKey) -> Option<TypeSync> {
    status.get(proxy)?.types.get(ROUTE).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(entries: &[(&str, &str, usize)]) -> BTreeMap<String, (String, usize)> {
        entries
            .iter()
            .map(|(n, v, b)| ((*n).to_owned(), ((*v).to_owned(), *b)))
            .collect()
    }

    #[test]
    fn only_new_and_changed_route_configs_count_as_re_sent() {
        let before = configs(&[("8080", "a", 100), ("9090", "b", 50)]);
        let after = configs(&[("8080", "c", 120), ("9090", "b", 50), ("8081", "d", 7)]);
        assert_eq!(changed_bytes(&before, after), 127);
    }
}
