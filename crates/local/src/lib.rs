//! Local mode: the control plane with no cluster. A folder of YAML is the cluster's state; it
//! is polled for changes (cheap, and works on every file system), each change becomes upserts
//! and deletes, and the rest is the same [`Pipeline`] the controller runs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod folder;
mod problems;

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Duration,
};

use problems::ProblemLog;
use remora_api::ValidationSettings;
use remora_envoy::Options;
use remora_model::{
    config::Addressing,
    input::{Event, MeshSettings, Object, ObjectKey},
};
use remora_runtime::{Debounce, Pipeline, Serving, SharedMesh, cancel, drain, spawn_server};
use remora_xds::{DEFAULT_RESPONSE_BUDGET, SnapshotCache, SyncRegistry};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tracing::{info, warn};

use crate::folder::{Folder, Objects};

/// How often local mode checks its folder by default: a `stat` of each manifest, cheap
/// enough to do often, so an edit is picked up within a tenth of a second.
pub const DEFAULT_POLL: Duration = Duration::from_millis(100);

/// Local mode's default batching. Each poll already sends one batch, so the quiet time only
/// gathers an edit that spans polls (an editor saving several files).
pub const DEFAULT_DEBOUNCE: Debounce = Debounce {
    window: Duration::from_millis(20),
    max_delay: Duration::from_secs(1),
};

/// How local mode runs.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// The folder of YAML that stands for the cluster's state.
    pub dir: PathBuf,
    /// Serves ADS and the remora.v1 API.
    pub xds_addr: SocketAddr,
    /// How often the folder is checked for changes.
    pub poll: Duration,
    /// How the folder's changes are batched into model updates.
    pub debounce: Debounce,
    /// Explicit (the default) needs no privileges: proxies listen on their pods' loopback
    /// addresses. Captured serves pods whose traffic `remora init-network` redirects, as in
    /// a cluster.
    pub addressing: Addressing,
    /// What validating routes takes from the control plane: the regex limit proxies
    /// enforce (their bootstraps must say the same, e.g. `remora bootstrap`'s).
    pub validation: ValidationSettings,
}

/// Why local mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The folder could not be read.
    #[error(transparent)]
    Load(#[from] remora_inputs::LoadError),
    /// The xDS address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A running local control plane; dropping it stops everything.
pub struct Running {
    /// The address ADS is served on (the port actually bound when the config asked for 0).
    pub xds_addr: SocketAddr,
    /// The snapshots served, one per proxy.
    pub cache: Arc<SnapshotCache>,
    /// What each connected proxy has ACKed or NACKed.
    pub status: Arc<SyncRegistry>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Ends every stream (proxies keep their config and reconnect to the next control plane),
    /// stops serving and waits until the address is free again.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(server) = self.server.take() {
            drain(server).await;
        }
        for t in self.tasks.drain(..) {
            cancel(t).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        for t in self.server.iter().chain(&self.tasks) {
            t.abort();
        }
    }
}

/// Each local proxy binds its outbound listeners to its own pod address, so several can share
/// one machine (explicit addressing; capture listeners bind every address of their pod).
type Addresses = Arc<RwLock<HashMap<ObjectKey, IpAddr>>>;

/// Starts local mode: the first load is applied and published before the server accepts
/// connections, so the first proxy to connect gets the whole config.
pub async fn start(config: LocalConfig) -> Result<Running, LocalError> {
    let mut folder = Folder::new(config.dir.clone());
    let first = folder.load()?;
    let addresses: Addresses = Arc::new(RwLock::new(pod_ips(&first)));
    let ips = addresses.clone();
    let settings = MeshSettings {
        addressing: config.addressing,
        validation: config.validation,
        ..MeshSettings::default()
    };
    let mut pipeline = Pipeline::new(settings, Options::default(), move |proxy| {
        ips.read()
            .unwrap_or_else(|e| e.into_inner())
            .get(proxy)
            .copied()
    });
    pipeline.apply(folder.events(first));
    let proxies = pipeline.open().proxies();
    info!(proxies, "initial config computed");
    let mut documents = ProblemLog::new("folder");
    documents.update(folder.problems());
    let mesh = pipeline.state().mesh.clone();
    let mut objects = ProblemLog::new("mesh");
    objects.update(mesh_problems(&mesh));

    let (listener, xds_addr) = remora_runtime::bind(config.xds_addr)
        .await
        .map_err(|source| LocalError::Listen {
            addr: config.xds_addr,
            source,
        })?;
    let state = pipeline.state().clone();
    let (stop, stopped) = watch::channel(false);
    let server = spawn_server(
        "xDS",
        // Plaintext and open: local mode runs on a laptop's loopback (`remora local
        // --insecure`); a cluster install serves TLS and authenticates every caller.
        state.serve(
            listener,
            stopped,
            DEFAULT_RESPONSE_BUDGET,
            Serving::insecure(),
        ),
    );
    info!(%xds_addr, dir = %config.dir.display(), addressing = ?config.addressing, "local mode serving");

    let (tx, rx) = mpsc::channel::<Vec<Event>>(16);
    let poller = tokio::spawn(poll(folder, documents, config.poll, addresses, tx));
    let model = tokio::spawn(pipeline.run(
        rx,
        config.debounce,
        || true,
        move |step| {
            info!(
                proxies = step.changes.proxies().len(),
                gone = step.changes.gone.len(),
                "config changed"
            );
            objects.update(mesh_problems(&mesh));
        },
    ));
    Ok(Running {
        xds_addr,
        cache: state.cache,
        status: state.status,
        stop,
        server: Some(server),
        tasks: vec![poller, model],
    })
}

/// Every problem of the mesh's objects (invalid fields, conflicts, unresolved references).
fn mesh_problems(mesh: &SharedMesh) -> Vec<String> {
    mesh.lock()
        .problems()
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Checks the folder every `every` and sends what changed, until the pipeline is gone.
async fn poll(
    mut folder: Folder,
    mut documents: ProblemLog,
    every: Duration,
    addresses: Addresses,
    tx: mpsc::Sender<Vec<Event>>,
) {
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        if !folder.changed() {
            continue;
        }
        match folder.load() {
            Ok(loaded) => {
                documents.update(folder.problems());
                *addresses.write().unwrap_or_else(|e| e.into_inner()) = pod_ips(&loaded);
                let events = folder.events(loaded);
                if !events.is_empty() && tx.send(events).await.is_err() {
                    return;
                }
            }
            Err(e) => warn!(error = %e, "cannot reload the folder; keeping the last config"),
        }
    }
}

fn pod_ips(objects: &Objects) -> HashMap<ObjectKey, IpAddr> {
    objects
        .iter()
        .filter_map(|(o, _)| match o {
            Object::Pod(p) => Some((o.key(), p.ip?)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use remora_xds::snapshot::LISTENER;

    use super::*;

    /// The listeners local mode serves web-0 of `examples/local`.
    async fn web_listeners(addressing: Addressing) -> Vec<String> {
        let config = LocalConfig {
            dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/local"),
            xds_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            // The first load is all this test reads: no reload comes within it.
            poll: Duration::from_secs(3600),
            debounce: Debounce::default(),
            addressing,
            validation: ValidationSettings::default(),
        };
        let running = start(config).await.expect("local mode starts");
        let snapshot = running
            .cache
            .get(&ObjectKey::new("demo", "web-0"))
            .expect("web-0 is published before the server accepts");
        let names = snapshot.of_type(LISTENER).map(|(n, _)| n.clone()).collect();
        running.stop().await;
        names
    }

    #[tokio::test]
    async fn explicit_addressing_gives_a_listener_per_port_and_captured_the_capture_listeners() {
        assert_eq!(
            web_listeners(Addressing::Explicit).await,
            ["inbound|8080", "outbound|8000", "outbound|9080"]
        );
        assert_eq!(
            web_listeners(Addressing::Captured).await,
            ["inbound", "outbound"]
        );
    }
}
