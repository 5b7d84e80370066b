//! What one sidecar costs in memory with the config of a mesh: each Envoy's resident memory
//! and what its own allocator says it holds, once it has ACKed the whole config.

use std::time::Duration;

use remora_model::input::ObjectKey;

use crate::{
    FleetError,
    fleet::{Fleet, FleetOptions},
    load_average,
};

/// The stats read from each Envoy.
const STATS: &str = r"^(server\.memory_(allocated|heap_size)|cluster_manager\.active_clusters|listener_manager\.total_listeners_active)$";

/// What the memory benchmark runs.
#[derive(Clone, Debug)]
pub struct MemoryOptions {
    /// The fleet.
    pub fleet: FleetOptions,
    /// The wait between the last ACK and the reading, for Envoy to finish what the config
    /// set off (e.g. draining replaced listeners).
    pub settle: Duration,
}

/// One Envoy's memory with the whole config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvoyMemory {
    /// The proxy it is the sidecar of.
    pub proxy: ObjectKey,
    /// The process's resident memory (`VmRSS`), in KiB.
    pub rss_kib: u64,
    /// `server.memory_allocated`: bytes Envoy's allocator has handed out and not taken back.
    pub allocated: u64,
    /// `server.memory_heap_size`: bytes its allocator has reserved.
    pub heap_size: u64,
    /// `cluster_manager.active_clusters`.
    pub clusters: u64,
    /// `listener_manager.total_listeners_active`.
    pub listeners: u64,
}

/// A run of the memory benchmark.
#[derive(Clone, Debug)]
pub struct MemoryRun {
    /// The options it ran with.
    pub options: MemoryOptions,
    /// From the start until every Envoy routed by the echo route.
    pub ready_after: Duration,
    /// Each Envoy's reading.
    pub envoys: Vec<EnvoyMemory>,
    /// The 1-minute load average at the start and at the end.
    pub load: (Option<f64>, Option<f64>),
}

/// Starts the fleet, waits until every Envoy routes and has ACKed everything, lets it
/// settle, reads each Envoy's memory, and stops it.
pub async fn run(options: &MemoryOptions) -> Result<MemoryRun, FleetError> {
    let load_start = load_average();
    let (mut fleet, ready_after) = Fleet::start_synced(&options.fleet).await?;
    tokio::time::sleep(options.settle).await;
    fleet.check_running()?;
    let mut envoys = Vec::new();
    for envoy in fleet.envoys_mut() {
        let stats = envoy.stats(STATS).await?;
        let missing = |what: &str| FleetError::Admin {
            proxy: envoy.proxy().clone(),
            detail: format!("{what} is missing"),
        };
        let stat = |name: &str| stats.get(name).copied().ok_or_else(|| missing(name));
        envoys.push(EnvoyMemory {
            proxy: envoy.proxy().clone(),
            rss_kib: envoy
                .process()
                .rss_kib()
                .ok_or_else(|| missing("VmRSS in /proc/<pid>/status"))?,
            allocated: stat("server.memory_allocated")?,
            heap_size: stat("server.memory_heap_size")?,
            clusters: stat("cluster_manager.active_clusters")?,
            listeners: stat("listener_manager.total_listeners_active")?,
        });
    }
    fleet.stop().await;
    Ok(MemoryRun {
        options: options.clone(),
        ready_after,
        envoys,
        load: (load_start, load_average()),
    })
}
