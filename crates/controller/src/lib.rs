//! The controller: one watch per kind of Kubernetes object feeds the model, every change is
//! published to the proxies over xDS, and the holder of the lease writes what happened back
//! into the status of the CRDs.
//!
//! Every replica watches and serves xDS, so proxies can connect to any of them; only the
//! leader writes status.
#![forbid(unsafe_code)]

pub mod admin;
pub mod endpoints;
pub mod inject;
pub mod leader;
pub mod metrics;
pub mod pods;
pub mod reconcile;
pub mod rollout;
pub mod watches;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, StatefulSet},
    core::v1::{Endpoints, Namespace, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::{WatchStreamExt, reflector, watcher},
};
use remora_admin::ProxiesService;
use remora_api::{SidecarPolicy, TrafficRoute};
use remora_envoy::Options;
use remora_inputs::convert;
use remora_model::{
    Mesh,
    input::{Event, MeshSettings, Object, ObjectKey},
};
use remora_runtime::{Debounce, Publisher, SharedMesh};
use remora_xds::{AdsServer, SnapshotCache, StatusRegistry};
use tokio::{
    net::TcpListener,
    sync::{Notify, mpsc, watch},
    task::JoinHandle,
};
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{info, warn};

use crate::{
    admin::Readiness, endpoints::EndpointApi, leader::LeaseConfig, metrics::Metrics,
    pods::PodFacts, reconcile::Reconciler,
};

#[derive(Clone, Debug)]
pub struct Config {
    /// Serves ADS and the remora.v1 API.
    pub xds_addr: SocketAddr,
    /// Serves `/healthz`, `/readyz` and `/metrics`.
    pub admin_addr: SocketAddr,
    pub settings: MeshSettings,
    /// `None`: no election; this replica writes status (one replica, or a test).
    pub lease: Option<LeaseConfig>,
    pub debounce: Debounce,
    /// How often status is recomputed when nothing in the cluster changed, to pick up
    /// proxies' ACKs and NACKs.
    pub status_interval: Duration,
    /// The validating admission webhook every replica serves (`None`: not served).
    pub webhook: Option<remora_webhook::Config>,
    /// Sidecar injection, served by that webhook on its pod path (`None`: not served).
    pub inject: Option<inject::InjectConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Lease(#[from] leader::LeaseError),
    #[error(transparent)]
    Inject(#[from] inject::StartError),
}

/// What status and rollouts need of each pod with a sidecar or a workload, by pod.
pub type ProxyPods = Arc<RwLock<HashMap<ObjectKey, PodFacts>>>;

/// A running controller. [`Controller::stop`] shuts it down gracefully (streams drained,
/// lease released); dropping it stops everything at once, as a crash would, and leaves the
/// lease to expire.
pub struct Controller {
    pub xds_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub xds: Arc<StatusRegistry>,
    pub metrics: Arc<Metrics>,
    pub ready: Arc<Readiness>,
    stop: watch::Sender<bool>,
    leading: Option<watch::Receiver<bool>>,
    lease_task: Option<leader::LeaseTask>,
    identity: String,
    servers: Vec<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

/// How long connections get to close on shutdown before they are cut.
const DRAIN: Duration = Duration::from_secs(2);

impl Controller {
    /// Whether this replica writes status now.
    pub fn is_leader(&self) -> bool {
        self.leading.as_ref().is_none_or(|l| *l.borrow())
    }

    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
        // Dropping the last receiver makes the lease manager release the lease, so the
        // next replica takes over now rather than when the lease expires.
        self.leading = None;
        if let Some(task) = self.lease_task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(DRAIN, leader::released(task, &self.identity))
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        for mut s in self.servers.drain(..) {
            if tokio::time::timeout(DRAIN, &mut s).await.is_err() {
                s.abort();
                let _ = s.await;
            }
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        for t in self.servers.iter().chain(&self.tasks) {
            t.abort();
        }
        // A crash: the lease is not released, and expires.
        if let Some(t) = &self.lease_task {
            t.abort();
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Listen { addr, source })?;
    Ok((listener, bound))
}

/// Starts the controller. It serves at once; readiness waits until every watch has listed
/// its objects and the first config is published (proxies that connect earlier wait for
/// their snapshot rather than getting a partial one).
pub async fn start(client: Client, config: Config) -> Result<Controller, Error> {
    let (stop, stopped) = watch::channel(false);
    let cache = SnapshotCache::new();
    let xds = StatusRegistry::new();
    let metrics = Arc::new(Metrics::new());
    let mesh = Arc::new(SharedMesh::new(Mesh::new(config.settings.clone())));
    let proxy_pods: ProxyPods = Arc::default();

    let (leading, lease_task) = match &config.lease {
        Some(lease) => {
            let (leading, task) = leader::elect(client.clone(), lease.clone()).await?;
            (Some(leading), Some(task))
        }
        None => (None, None),
    };

    let (tx, rx) = mpsc::channel::<Vec<Event>>(64);
    let mut tasks = Vec::new();
    let mut flags = Vec::new();
    let mut flag = |kind: &'static str| {
        let f = Arc::new(AtomicBool::new(false));
        flags.push((kind, f.clone()));
        f
    };
    let wc = watcher::Config::default;

    tasks.push(tokio::spawn(watches::run(
        "Namespace",
        watcher(Api::<Namespace>::all(client.clone()), wc()).default_backoff(),
        |n: &Namespace| convert::namespace(n).map(|o| vec![o]),
        tx.clone(),
        flag("Namespace"),
    )));
    tasks.push(tokio::spawn(watches::run(
        "Service",
        watcher(Api::<Service>::all(client.clone()), wc()).default_backoff(),
        |s: &Service| convert::service(s).map(|o| vec![o]),
        tx.clone(),
        flag("Service"),
    )));
    let pods = proxy_pods.clone();
    let mut facts = pods::FactsTracker::default();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), wc())
        .default_backoff()
        .inspect(move |item| {
            if let Ok(event) = item {
                facts.observe(&mut pods.write().unwrap_or_else(|e| e.into_inner()), event);
            }
        });
    tasks.push(tokio::spawn(watches::run(
        "Pod",
        pod_events,
        |p: &Pod| convert::pod(p).map(|o| vec![o]),
        tx.clone(),
        flag("Pod"),
    )));
    let endpoint_api = EndpointApi::discover(&client).await;
    tasks.push(match endpoint_api {
        EndpointApi::SlicesV1 => tokio::spawn(watches::run(
            "EndpointSlice",
            watcher(Api::<EndpointSlice>::all(client.clone()), wc()).default_backoff(),
            |s: &EndpointSlice| convert::endpoint_slice(s).map(|o| vec![o]),
            tx.clone(),
            flag("EndpointSlice"),
        )),
        EndpointApi::SlicesV1beta1 => {
            let resource = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("discovery.k8s.io", "v1beta1", "EndpointSlice"),
                "endpointslices",
            );
            tokio::spawn(watches::run(
                "EndpointSlice",
                watcher(
                    Api::<DynamicObject>::all_with(client.clone(), &resource),
                    wc(),
                )
                .default_backoff(),
                |s: &DynamicObject| {
                    let json = serde_json::to_value(s).unwrap_or_default();
                    convert::endpoint_slice_v1beta1(&json).map(|o| vec![o])
                },
                tx.clone(),
                flag("EndpointSlice"),
            ))
        }
        EndpointApi::Endpoints => tokio::spawn(watches::run(
            "Endpoints",
            watcher(Api::<Endpoints>::all(client.clone()), wc()).default_backoff(),
            convert::endpoints,
            tx.clone(),
            flag("Endpoints"),
        )),
    });
    // The CRD watches also fill the stores the reconciler reads objects from.
    let (routes, route_writer) = reflector::store::<TrafficRoute>();
    tasks.push(tokio::spawn(watches::run(
        "TrafficRoute",
        reflector(
            route_writer,
            watcher(Api::<TrafficRoute>::all(client.clone()), wc()).default_backoff(),
        ),
        |r: &TrafficRoute| Ok(vec![Object::TrafficRoute(Box::new(r.clone()))]),
        tx.clone(),
        flag("TrafficRoute"),
    )));
    let (policies, policy_writer) = reflector::store::<SidecarPolicy>();
    tasks.push(tokio::spawn(watches::run(
        "SidecarPolicy",
        reflector(
            policy_writer,
            watcher(Api::<SidecarPolicy>::all(client.clone()), wc()).default_backoff(),
        ),
        |p: &SidecarPolicy| Ok(vec![Object::SidecarPolicy(Box::new(p.clone()))]),
        tx.clone(),
        flag("SidecarPolicy"),
    )));
    // Rollouts read workloads from stores; until those listed a workload would look
    // deleted, so they count for readiness like the model's watches.
    let (deployments, task) = workload_store::<Deployment>(&client, flag("Deployment"), tx.clone());
    tasks.push(task);
    let (statefulsets, task) =
        workload_store::<StatefulSet>(&client, flag("StatefulSet"), tx.clone());
    tasks.push(task);
    let (daemonsets, task) = workload_store::<DaemonSet>(&client, flag("DaemonSet"), tx.clone());
    tasks.push(task);
    drop(tx);
    let workloads = rollout::Workloads {
        deployments,
        statefulsets,
        daemonsets,
    };
    let eviction = match client.apiserver_version().await {
        Ok(info) => rollout::EvictionVersion::for_server(&info),
        Err(e) => {
            warn!(error = %e, "cannot read the API server's version; evicting with policy/v1");
            rollout::EvictionVersion::V1
        }
    };
    let ready = Arc::new(Readiness {
        watches: flags,
        published: AtomicBool::new(false),
    });

    // The model: batches in, snapshots out.
    let changed = Arc::new(Notify::new());
    tasks.push(tokio::spawn(apply_loop(
        rx,
        config.debounce,
        mesh.clone(),
        Publisher::new(cache.clone(), Options::default(), |_| None),
        ready.clone(),
        metrics.clone(),
        changed.clone(),
    )));

    // Injection answers from the same model and policy store as everything else.
    let mut webhook = config.webhook.clone();
    if let (Some(webhook), Some(inject)) = (&mut webhook, &config.inject) {
        let injector = inject::MeshInjector {
            settings: inject.settings.clone(),
            layout: inject::layout(&client, inject.layout).await?,
            control_plane: inject.control_plane.clone(),
            mesh: mesh.clone(),
            policies: policies.clone(),
            ready: ready.clone(),
            metrics: metrics.clone(),
        };
        info!(layout = ?injector.layout, "sidecar injection served");
        webhook.injector = Some(Arc::new(injector));
    }

    let reconciler = Reconciler {
        client: client.clone(),
        mesh: mesh.clone(),
        cache: cache.clone(),
        xds: xds.clone(),
        routes,
        policies,
        proxy_pods,
        workloads,
        executor: rollout::Executor::new(client.clone(), eviction),
        metrics: metrics.clone(),
    };
    tasks.push(tokio::spawn(reconcile::run(
        reconciler,
        leading.clone(),
        ready.clone(),
        changed,
        config.status_interval,
    )));

    let (xds_listener, xds_addr) = bind(config.xds_addr).await?;
    let (admin_listener, admin_addr) = bind(config.admin_addr).await?;
    let mut stop_xds = stopped.clone();
    let grpc = tonic::transport::Server::builder()
        .add_service(AdsServer::new(cache, xds.clone(), stopped.clone()).into_service())
        .add_service(ProxiesService::new(xds.clone(), mesh).into_service())
        .serve_with_incoming_shutdown(TcpListenerStream::new(xds_listener), async move {
            let _ = stop_xds.wait_for(|s| *s).await;
        });
    let mut servers = vec![
        tokio::spawn(async move {
            if let Err(e) = grpc.await {
                warn!(error = %e, "xDS server stopped");
            }
        }),
        tokio::spawn({
            let router = admin::router(ready.clone(), metrics.clone(), xds.clone());
            async move {
                if let Err(e) = admin::serve(admin_listener, router, stopped).await {
                    warn!(error = %e, "admin server stopped");
                }
            }
        }),
    ];
    if let Some(webhook) = webhook {
        let mut stop_webhook = stop.subscribe();
        servers.push(tokio::spawn(async move {
            // The webhook is a first line of defence only: without it the reconcilers
            // still report invalid objects, so xDS and status keep running while it
            // retries (the API server may be unreachable when the replica starts).
            let mut backoff = Duration::from_secs(1);
            while !*stop_webhook.borrow() {
                let mut stop_this = stop_webhook.clone();
                let stopped = async move {
                    let _ = stop_this.wait_for(|s| *s).await;
                };
                match remora_webhook::run(client.clone(), webhook.clone(), stopped).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::error!(error = %e, retry_in = ?backoff, "the admission webhook cannot start");
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop_webhook.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }));
    }
    info!(%xds_addr, %admin_addr, endpoints = ?endpoint_api, "controller serving");
    Ok(Controller {
        xds_addr,
        admin_addr,
        xds,
        metrics,
        ready,
        stop,
        leading,
        lease_task,
        identity: config.lease.map(|l| l.identity).unwrap_or_default(),
        servers,
        tasks,
    })
}

/// A reflector store of every `K` in the cluster, and the task that keeps it filled;
/// `listed` is set once the first list is in, and an empty batch then goes to the model's
/// loop, which publishes the first config once everything listed: in a quiet cluster no
/// other batch may come to make it look.
fn workload_store<K>(
    client: &Client,
    listed: Arc<AtomicBool>,
    model: mpsc::Sender<Vec<Event>>,
) -> (reflector::Store<K>, JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let stream = reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            // Field ownership is the bulk of these objects and nothing here reads it.
            .modify(|o| o.meta_mut().managed_fields = None),
    );
    let ready = store.clone();
    let task = tokio::spawn(async move {
        let mark = async {
            if ready.wait_until_ready().await.is_ok() {
                listed.store(true, Ordering::Release);
                let _ = model.send(Vec::new()).await;
            }
        };
        let drain = stream.for_each(|e| {
            if let Err(e) = e {
                warn!(kind = %K::kind(&()), error = %e, "workload watch failed; retrying");
            }
            std::future::ready(())
        });
        tokio::join!(mark, drain);
    });
    (store, task)
}

/// Applies debounced batches of events to the model and publishes what changed. Until
/// every watch has listed, batches are applied but nothing is published: a proxy must not
/// get a config computed from half the cluster.
async fn apply_loop(
    mut rx: mpsc::Receiver<Vec<Event>>,
    debounce: Debounce,
    mesh: Arc<SharedMesh>,
    mut publisher: Publisher,
    ready: Arc<Readiness>,
    metrics: Arc<Metrics>,
    changed: Arc<Notify>,
) {
    let listed = |r: &Readiness| r.watches.iter().all(|(_, f)| f.load(Ordering::Acquire));
    while let Some(batch) = debounce.next_batch(&mut rx).await {
        let started = Instant::now();
        let mut m = mesh.lock();
        let changes = m.apply(batch);
        if !ready.published.load(Ordering::Acquire) {
            if listed(&ready) {
                publisher.publish_all(&m);
                ready.published.store(true, Ordering::Release);
                metrics.pushes.inc_by(m.proxies().count() as u64);
                info!(proxies = m.proxies().count(), "initial config published");
            }
        } else {
            publisher.publish(&m, &changes);
            metrics.pushes.inc_by(changes.proxies().len() as u64);
        }
        drop(m);
        metrics
            .push_seconds
            .observe(started.elapsed().as_secs_f64());
        changed.notify_one();
    }
}
