//! Local mode: the control plane with no cluster. A folder of YAML is the cluster's state; it
//! is polled for changes (cheap, and works on every file system), each change becomes upserts
//! and deletes, and the rest is the same pipeline the controller runs.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{DefaultHasher, Hash, Hasher},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use remora_admin::ProxiesService;
use remora_envoy::Options;
use remora_inputs::{Loaded, load_dir};
use remora_model::{
    Mesh,
    input::{Event, Kind, MeshSettings, Object, ObjectKey},
};
use remora_xds::{AdsServer, SnapshotCache, StatusRegistry};
use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{info, warn};

use crate::{Debounce, Publisher, SharedMesh};

#[derive(Clone, Debug)]
pub struct LocalConfig {
    pub dir: PathBuf,
    /// Serves ADS and the remora.v1 API.
    pub xds_addr: SocketAddr,
    /// How often the folder is checked for changes.
    pub poll: Duration,
    pub debounce: Debounce,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    Load(#[from] remora_inputs::LoadError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running local control plane; dropping it stops everything.
pub struct Running {
    pub xds_addr: SocketAddr,
    pub cache: Arc<SnapshotCache>,
    pub status: Arc<StatusRegistry>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

/// How long connections get to close on shutdown before they are cut.
const DRAIN: Duration = Duration::from_secs(2);

impl Running {
    /// Ends every stream (proxies keep their config and reconnect to the next control plane),
    /// stops serving and waits until the address is free again.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(mut server) = self.server.take()
            && tokio::time::timeout(DRAIN, &mut server).await.is_err()
        {
            server.abort();
            // A cancelled task reports an error here; that is the expected outcome.
            let _ = server.await;
        }
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
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

/// Starts local mode: the first load is applied and published before the server accepts
/// connections, so the first proxy to connect gets the whole config.
pub async fn start(config: LocalConfig) -> Result<Running, LocalError> {
    let mut folder = Folder::new(config.dir.clone());
    let first = folder.load()?;
    let addresses = Arc::new(RwLock::new(pod_ips(&first)));
    let ips = addresses.clone();
    let cache = SnapshotCache::new();
    let status = StatusRegistry::new();
    // Each local proxy binds its outbound listeners to its own pod address, so several can
    // share one machine.
    let mut publisher = Publisher::new(cache.clone(), Options::default(), move |proxy| {
        ips.read()
            .unwrap_or_else(|e| e.into_inner())
            .get(proxy)
            .copied()
    });
    let mesh = Arc::new(SharedMesh::new(Mesh::new(MeshSettings::default())));
    {
        let mut m = mesh.lock();
        m.apply(folder.events(first));
        publisher.publish_all(&m);
        info!(proxies = m.proxies().count(), "initial config computed");
    }

    let listener =
        TcpListener::bind(config.xds_addr)
            .await
            .map_err(|source| LocalError::Listen {
                addr: config.xds_addr,
                source,
            })?;
    let xds_addr = listener.local_addr().map_err(|source| LocalError::Listen {
        addr: config.xds_addr,
        source,
    })?;
    let (stop, stopped) = watch::channel(false);
    let mut stop_server = stopped.clone();
    let server = tonic::transport::Server::builder()
        .add_service(AdsServer::new(cache.clone(), status.clone(), stopped).into_service())
        .add_service(ProxiesService::new(status.clone(), mesh.clone()).into_service())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            let _ = stop_server.wait_for(|s| *s).await;
        });
    let server = tokio::spawn(async move {
        if let Err(e) = server.await {
            warn!(error = %e, "xDS server stopped");
        }
    });
    info!(%xds_addr, dir = %config.dir.display(), "local mode serving");

    let (tx, mut rx) = mpsc::channel::<Vec<Event>>(16);
    let poll = config.poll;
    let watcher = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(poll);
        loop {
            ticker.tick().await;
            if !folder.changed() {
                continue;
            }
            match folder.load() {
                Ok(loaded) => {
                    *addresses.write().unwrap_or_else(|e| e.into_inner()) = pod_ips(&loaded);
                    let events = folder.events(loaded);
                    if !events.is_empty() && tx.send(events).await.is_err() {
                        return;
                    }
                }
                Err(e) => warn!(error = %e, "cannot reload the folder; keeping the last config"),
            }
        }
    });
    let debounce = config.debounce;
    let model = tokio::spawn(async move {
        while let Some(batch) = debounce.next_batch(&mut rx).await {
            let mut m = mesh.lock();
            let changes = m.apply(batch);
            info!(
                proxies = changes.proxies().len(),
                gone = changes.gone.len(),
                "config changed"
            );
            publisher.publish(&m, &changes);
        }
    });
    Ok(Running {
        xds_addr,
        cache,
        status,
        stop,
        server: Some(server),
        tasks: vec![watcher, model],
    })
}

fn pod_ips(objects: &[Object]) -> HashMap<ObjectKey, IpAddr> {
    objects
        .iter()
        .filter_map(|o| match o {
            Object::Pod(p) => Some((o.key(), p.ip?)),
            _ => None,
        })
        .collect()
}

/// The folder and what was last read from it.
struct Folder {
    dir: PathBuf,
    /// Every file with its modification time and size when last read.
    stamp: BTreeMap<PathBuf, (SystemTime, u64)>,
    /// Every object last read, with a hash of its content to tell changes apart.
    objects: BTreeMap<(Kind, ObjectKey), u64>,
}

impl Folder {
    fn new(dir: PathBuf) -> Self {
        Folder {
            dir,
            stamp: BTreeMap::new(),
            objects: BTreeMap::new(),
        }
    }

    fn changed(&self) -> bool {
        stamp(&self.dir) != self.stamp
    }

    /// Reads the folder, logging the documents that cannot be used.
    fn load(&mut self) -> Result<Vec<Object>, remora_inputs::LoadError> {
        self.stamp = stamp(&self.dir);
        let Loaded {
            objects, problems, ..
        } = load_dir(&self.dir)?;
        for p in problems {
            warn!(problem = %p, "skipped a document");
        }
        Ok(objects)
    }

    /// The events that turn the previous state into `objects`.
    fn events(&mut self, objects: Vec<Object>) -> Vec<Event> {
        let mut next = BTreeMap::new();
        let mut events = Vec::new();
        for o in objects {
            let id = (o.kind(), o.key());
            let mut h = DefaultHasher::new();
            format!("{o:?}").hash(&mut h);
            let hash = h.finish();
            if self.objects.get(&id) != Some(&hash) {
                events.push(Event::Upsert(o));
            }
            next.insert(id, hash);
        }
        for id in self.objects.keys() {
            if !next.contains_key(id) {
                events.push(Event::Delete(id.0, id.1.clone()));
            }
        }
        self.objects = next;
        events
    }
}

fn stamp(dir: &Path) -> BTreeMap<PathBuf, (SystemTime, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else {
                out.insert(
                    path,
                    (
                        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        meta.len(),
                    ),
                );
            }
        }
    }
    out
}
