//! The controller: one watch per kind of Kubernetes object feeds the model, every change is
//! published to the proxies over xDS, and the holder of the lease writes what happened back
//! into the status of the CRDs.
//!
//! Every replica watches and serves xDS, so proxies can connect to any of them; only the
//! leader writes status.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
mod access_status;
mod admission;
pub mod audit_report;
pub mod endpoints;
pub mod fleet;
pub mod gateway;
mod gateway_status;
pub mod health;
pub mod identity;
pub mod inject;
mod judged;
pub mod leader;
pub mod metrics;
pub mod pods;
mod process;
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
    time::Duration,
};

use futures::StreamExt as _;
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, StatefulSet},
    core::v1::{Namespace, Pod, Service},
};
use kube::{Client, runtime::reflector::Store};
use remora_api::{AccessPolicy, SidecarPolicy, TrafficRoute};
use remora_envoy::Options;
use remora_fleet::Fleet;
use remora_inputs::convert;
use remora_model::input::{Event, MeshSettings, Object, ObjectKey};
use remora_runtime::{
    Debounce, Pipeline, PipelineState, Published, Serving, cancel, drain, spawn_server,
};
use remora_xds::{DEFAULT_RESPONSE_BUDGET, Limits, StreamAge, SyncRegistry};
use tokio::{
    net::TcpListener,
    sync::{Notify, mpsc, watch},
    task::JoinHandle,
};
use tracing::{info, warn};

use crate::{
    endpoints::EndpointApi,
    health::Readiness,
    leader::LeaseConfig,
    metrics::Metrics,
    pods::PodFacts,
    reconcile::Reconciler,
    watches::{Watches, one},
};

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Serves ADS and the remora.v1 API.
    pub xds_addr: SocketAddr,
    /// Serves `/healthz`, `/readyz` and `/metrics`.
    pub health_addr: SocketAddr,
    /// Settings of the mesh as a whole, for the model.
    pub settings: MeshSettings,
    /// `None`: no election; this replica writes status (one replica, or a test).
    pub lease: Option<LeaseConfig>,
    /// Where replicas report their proxies to each other (`None`: a single replica, which
    /// knows every proxy itself).
    pub fleet: Option<fleet::FleetConfig>,
    /// How long an ADS stream lives before its proxy is sent to reconnect (plus a jitter of
    /// up to a tenth), so that proxies spread back over replicas that restarted.
    pub max_stream_age: Duration,
    /// What each xDS client may hold of a replica (connections, streams, deadlines,
    /// subscriptions); refusals are counted in `remora_xds_refused_total`.
    pub xds_limits: Limits,
    /// How cluster events are batched into model updates.
    pub debounce: Debounce,
    /// How often status is recomputed when nothing in the cluster changed, to pick up
    /// proxies' ACKs and NACKs.
    pub status_interval: Duration,
    /// How often API discovery is asked again for a Gateway API kind that was not installed.
    pub discovery_interval: Duration,
    /// The validating admission webhook every replica serves (`None`: not served).
    pub webhook: Option<remora_webhook::Config>,
    /// Sidecar injection, served by that webhook on its pod path (`None`: not served).
    pub inject: Option<inject::InjectConfig>,
    /// Workload identities: the mesh CA, TLS on the gRPC port, proxies authenticated, the
    /// API behind RBAC (`None`: plaintext and open, for tests that exercise other parts).
    pub identity: Option<identity::IdentityConfig>,
}

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The xDS or the health address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Leader election could not start.
    #[error(transparent)]
    Lease(#[from] leader::LeaseError),
    /// Sidecar injection could not choose its layout.
    #[error(transparent)]
    Inject(#[from] inject::StartError),
    /// Workload identities could not start (the mesh CA, the serving certificate).
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
}

/// What status and rollouts need of each pod with a sidecar or a workload, by pod.
pub type ProxyPods = Arc<RwLock<HashMap<ObjectKey, PodFacts>>>;

/// A running controller. [`Controller::stop`] shuts it down gracefully (streams drained,
/// lease released); dropping it stops everything at once, as a crash would, and leaves the
/// lease to expire.
pub struct Controller {
    /// The address ADS and the remora.v1 API are served on (the port actually bound when the
    /// config asked for 0).
    pub xds_addr: SocketAddr,
    /// The address `/healthz`, `/readyz` and `/metrics` are served on.
    pub health_addr: SocketAddr,
    /// What each proxy connected to this replica has ACKed or NACKed.
    pub xds: Arc<SyncRegistry>,
    /// Every proxy of the fleet, on whichever replica.
    pub fleet: Arc<Fleet>,
    /// What `/metrics` reports.
    pub metrics: Arc<Metrics>,
    /// What `/readyz` waits for.
    pub ready: Arc<Readiness>,
    stop: watch::Sender<bool>,
    client: Client,
    reporting: Option<fleet::FleetConfig>,
    leading: Option<watch::Receiver<bool>>,
    lease_task: Option<leader::LeaseTask>,
    identity: String,
    servers: Vec<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Controller {
    /// Whether this replica writes status now.
    pub fn is_leader(&self) -> bool {
        self.leading.as_ref().is_none_or(|l| *l.borrow())
    }

    /// Stops the tasks, releases the lease (or leaves it to expire if that takes longer than
    /// [`remora_runtime::DRAIN`]), then drains the servers' streams.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        for t in self.tasks.drain(..) {
            cancel(t).await;
        }
        // Dropping the last receiver makes the lease manager release the lease, so the
        // next replica takes over now rather than when the lease expires.
        self.leading = None;
        if let Some(task) = self.lease_task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(
                remora_runtime::DRAIN,
                leader::released(task, &self.identity),
            )
            .await
            .is_err()
            {
                warn!("the lease was not released in time; it will expire");
                abort.abort();
            }
        }
        for s in self.servers.drain(..) {
            drain(s).await;
        }
        if let Some(reporting) = &self.reporting {
            fleet::withdraw(&self.client, reporting).await;
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
    remora_runtime::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })
}

/// Starts the controller. It serves at once; readiness waits until every watch has listed
/// its objects and the first config is published (proxies that connect earlier wait for
/// their snapshot rather than getting a partial one).
pub async fn start(client: Client, config: Config) -> Result<Controller, Error> {
    let (stop, stopped) = watch::channel(false);
    let metrics = Arc::new(Metrics::new());
    let mut pipeline = Pipeline::new(config.settings.clone(), Options::default(), |_| None);
    if let Some(f) = &config.fleet {
        pipeline = pipeline.with_replica(&f.replica, f.expiry);
    }
    let state = pipeline.state().clone();
    let (leading, lease_task) = match &config.lease {
        Some(lease) => {
            let (leading, task) = leader::elect(client.clone(), lease.clone()).await?;
            (Some(leading), Some(task))
        }
        None => (None, None),
    };

    let (tx, rx) = mpsc::channel::<Vec<Event>>(64);
    let cluster = Cluster::watch(client.clone(), tx, config.discovery_interval).await;
    let ready = Arc::new(Readiness {
        watches: cluster.listed,
        published: AtomicBool::new(false),
    });
    let mut tasks = cluster.tasks;
    let changed = Arc::new(Notify::new());
    if let Some(f) = &config.fleet {
        let fleet = state.fleet.clone();
        let (leading, changed) = (leading.clone(), changed.clone());
        tasks.extend(fleet::start(
            &client,
            f,
            fleet,
            leading,
            changed,
            metrics.clone(),
        ));
    }
    tasks.push(tokio::spawn(run_model(
        pipeline,
        rx,
        config.debounce,
        ready.clone(),
        metrics.clone(),
        changed.clone(),
    )));

    let (serving, mesh_identity) = match config.identity.clone() {
        Some(c) => {
            let certificates = metrics.certificates.clone();
            let identities =
                identity::start(&client, c, certificates, metrics.issuances.clone()).await?;
            tasks.push(identities.task);
            (identities.serving, Some(identities.mesh))
        }
        None => (Serving::insecure(), None),
    };
    let mut serving = serving;
    serving.stream_age = StreamAge::new(config.max_stream_age);
    serving.limits = config.xds_limits.clone();
    metrics.track_stream_age(serving.stream_age.clone());
    metrics.track_refusals(serving.refusals.clone());
    let audit = serving.audit.clone();
    let audit_fleet = config.fleet.as_ref().map(|f| audit_report::AuditFleet {
        remote: Arc::default(),
        replica: f.replica.clone(),
        expiry: f.expiry,
    });
    if let (Some(f), Some(a)) = (&config.fleet, &audit_fleet) {
        tasks.extend(audit_report::start(
            &client,
            f,
            audit.clone(),
            a.remote.clone(),
        ));
    }
    let webhook = with_injector(
        &client,
        &config,
        &state,
        &cluster.policies,
        &ready,
        &metrics,
        mesh_identity,
    )
    .await?;
    let reconciler = Reconciler {
        client: client.clone(),
        mesh: state.mesh.clone(),
        cache: state.cache.clone(),
        fleet: state.fleet.clone(),
        routes: cluster.routes,
        gateway_routes: cluster.gateway_routes,
        policies: cluster.policies,
        access_policies: cluster.access_policies,
        audit,
        audit_fleet,
        proxy_pods: cluster.proxy_pods,
        workloads: cluster.workloads,
        executor: rollout::Executor::new(client.clone(), eviction_version(&client).await),
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
    let (health_listener, health_addr) = bind(config.health_addr).await?;
    let router = health::router(ready.clone(), metrics.clone(), state.status.clone());
    let mut servers = vec![
        spawn_server(
            "xDS",
            state.serve(
                xds_listener,
                stopped.clone(),
                DEFAULT_RESPONSE_BUDGET,
                serving,
            ),
        ),
        spawn_server(
            "health",
            health::serve(health_listener, router, stopped.clone()),
        ),
    ];
    if let Some(webhook) = webhook {
        servers.push(tokio::spawn(admission::serve(
            client.clone(),
            webhook,
            stopped,
        )));
    }
    info!(%xds_addr, %health_addr, endpoints = ?cluster.endpoint_api, "controller serving");
    Ok(Controller {
        xds_addr,
        health_addr,
        xds: state.status,
        fleet: state.fleet,
        metrics,
        ready,
        stop,
        client: client.clone(),
        reporting: config.fleet.clone(),
        leading,
        lease_task,
        identity: config.lease.map(|l| l.identity).unwrap_or_default(),
        servers,
        tasks,
    })
}

/// What the controller watches in the cluster, and the stores some watches keep.
struct Cluster {
    listed: watches::Listed,
    tasks: Vec<JoinHandle<()>>,
    endpoint_api: EndpointApi,
    routes: Store<TrafficRoute>,
    gateway_routes: Vec<gateway::RouteStore>,
    policies: Store<SidecarPolicy>,
    access_policies: Store<AccessPolicy>,
    workloads: rollout::Workloads,
    proxy_pods: ProxyPods,
}

impl Cluster {
    /// Starts one watch per kind, each feeding `model`.
    async fn watch(
        client: Client,
        model: mpsc::Sender<Vec<Event>>,
        discovery_interval: Duration,
    ) -> Cluster {
        let endpoint_api = EndpointApi::discover(&client).await;
        let mut w = Watches::new(client, model.clone());
        w.watch(|n: &Namespace| convert::namespace(n).map(one));
        w.watch(|s: &Service| convert::service(s).map(one));
        // Pod facts follow the pod watch's own events: the model's come a debounce later.
        let proxy_pods = ProxyPods::default();
        let (pods, mut facts) = (proxy_pods.clone(), pods::FactsTracker::default());
        let pod_events = w.stream::<Pod>().inspect(move |item| {
            if let Ok(event) = item {
                facts.observe(&mut pods.write().unwrap_or_else(|e| e.into_inner()), event);
            }
        });
        w.watch_stream("Pod", pod_events, |p: &Pod| convert::pod(p).map(one));
        endpoint_api.watch(&mut w);
        // The CRD watches also fill the stores the reconciler and the injector read.
        let routes =
            w.watch_stored(|r: &TrafficRoute| Ok(vec![Object::TrafficRoute(Box::new(r.clone()))]));
        let policies = w
            .watch_stored(|p: &SidecarPolicy| Ok(vec![Object::SidecarPolicy(Box::new(p.clone()))]));
        let access_policies =
            w.watch_stored(|p: &AccessPolicy| Ok(vec![Object::AccessPolicy(Box::new(p.clone()))]));
        let gateway_routes = gateway::watch(&mut w, &model, discovery_interval).await;
        let workloads = rollout::Workloads {
            deployments: w.store::<Deployment>(),
            statefulsets: w.store::<StatefulSet>(),
            daemonsets: w.store::<DaemonSet>(),
        };
        let (listed, tasks) = w.finish();
        Cluster {
            listed,
            tasks,
            endpoint_api,
            routes,
            gateway_routes,
            policies,
            access_policies,
            workloads,
            proxy_pods,
        }
    }
}

/// Applies debounced batches to the model and publishes what changed. The pipeline opens
/// once every watch has listed.
async fn run_model(
    pipeline: Pipeline,
    events: mpsc::Receiver<Vec<Event>>,
    debounce: Debounce,
    ready: Arc<Readiness>,
    metrics: Arc<Metrics>,
    changed: Arc<Notify>,
) {
    let listed = ready.clone();
    let all_listed = move || {
        listed
            .watches
            .iter()
            .all(|(_, f)| f.load(Ordering::Acquire))
    };
    pipeline
        .run(events, debounce, all_listed, |step| {
            if let Published::All(proxies) = step.published {
                ready.published.store(true, Ordering::Release);
                info!(proxies, "initial config published");
            }
            metrics.pushes.inc_by(step.published.proxies() as u64);
            metrics
                .push_seconds
                .observe((step.apply + step.publish).as_secs_f64());
            changed.notify_one();
        })
        .await;
}

/// The webhook's config, validating under the mesh's settings, with the sidecar injector
/// attached when injection is configured. Injection answers from the same model and policy
/// store as everything else.
async fn with_injector(
    client: &Client,
    config: &Config,
    state: &PipelineState,
    policies: &Store<SidecarPolicy>,
    ready: &Arc<Readiness>,
    metrics: &Arc<Metrics>,
    identity: Option<watch::Receiver<remora_inject::MeshIdentity>>,
) -> Result<Option<remora_webhook::Config>, Error> {
    let mut webhook = config.webhook.clone();
    if let Some(webhook) = &mut webhook {
        webhook.validation = config.settings.validation;
    }
    if let (Some(webhook), Some(inject)) = (&mut webhook, &config.inject) {
        let injector = inject::MeshInjector {
            settings: inject.settings.clone(),
            layout: inject::layout(client, inject.layout).await?,
            control_plane: inject.control_plane.clone(),
            validation: config.settings.validation,
            identity,
            mesh: state.mesh.clone(),
            policies: policies.clone(),
            ready: ready.clone(),
            metrics: metrics.clone(),
        };
        info!(layout = ?injector.layout, "sidecar injection served");
        webhook.injector = Some(Arc::new(injector));
    }
    Ok(webhook)
}

/// The Eviction API version this server takes.
async fn eviction_version(client: &Client) -> rollout::EvictionVersion {
    match client.apiserver_version().await {
        Ok(info) => rollout::EvictionVersion::for_server(&info),
        Err(e) => {
            warn!(error = %e, "cannot read the API server's version; evicting with policy/v1");
            rollout::EvictionVersion::V1
        }
    }
}
