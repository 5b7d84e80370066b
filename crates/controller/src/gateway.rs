//! Gateway API kinds (`gateway.networking.k8s.io`) belong to the user or their platform,
//! who may install them before Remora, after it, or never. Each is watched once API
//! discovery shows it: found at start, its first list counts for readiness (a route's
//! cross-namespace backends must not be refused for a moment at start); found later, by
//! asking discovery again every interval, its watch starts then, without a restart.

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::{
        WatchStreamExt, reflector,
        reflector::{Store, store::Writer},
        watcher,
    },
};
use remora_api::gateway::GROUP;
use remora_inputs::convert::{self, Unusable};
use remora_model::{
    input::{Event, Object},
    routing::RouteKind,
};
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{info, warn};

use crate::watches::{self, Convert, Watches, json, one};

/// A Gateway API kind the model reads.
#[derive(Clone, Copy, Debug)]
pub struct GatewayKind {
    /// Its kind, as manifests and logs name it.
    pub kind: &'static str,
    /// Its resource name (plural).
    pub plural: &'static str,
    /// The versions read, newest first, all with the same schema for what Remora reads.
    pub(crate) versions: &'static [&'static str],
    /// What becomes of one object.
    convert: Convert<DynamicObject>,
    /// For a route kind, how the model keys it; its status is written.
    pub route: Option<RouteKind>,
}

/// Opens a namespace's Services to routes elsewhere.
pub const REFERENCE_GRANT: GatewayKind = GatewayKind {
    kind: "ReferenceGrant",
    plural: "referencegrants",
    versions: &["v1", "v1beta1"],
    convert: |o| convert::reference_grant(&json(o)).map(one),
    route: None,
};

/// Routes HTTP; its status is written in `v1`, which every bundle from Gateway API 1.0
/// serves.
pub const HTTP_ROUTE: GatewayKind = GatewayKind {
    kind: "HTTPRoute",
    plural: "httproutes",
    versions: &["v1"],
    convert: |o| convert::http_route(&json(o)).map(one),
    route: Some(RouteKind::HttpRoute),
};

/// Routes gRPC; `v1` since Gateway API 1.1.
pub const GRPC_ROUTE: GatewayKind = GatewayKind {
    kind: "GRPCRoute",
    plural: "grpcroutes",
    versions: &["v1"],
    convert: |o| convert::grpc_route(&json(o)).map(one),
    route: Some(RouteKind::GrpcRoute),
};

impl GatewayKind {
    /// The API resource of this kind at `version`.
    pub fn resource(&self, version: &str) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(GROUP, version, self.kind),
            self.plural,
        )
    }

    /// What the model takes of one object of this kind.
    pub fn objects(&self, o: &DynamicObject) -> Result<Vec<Object>, Unusable> {
        (self.convert)(o)
    }

    /// The newest version of this kind the server serves, if any. A discovery error other
    /// than "not served" is logged and counts as not served now; the next look tries again.
    pub async fn served(&self, client: &Client) -> Option<&'static str> {
        for version in self.versions {
            match client
                .list_api_group_resources(&format!("{GROUP}/{version}"))
                .await
            {
                Ok(list) if list.resources.iter().any(|r| r.name == self.plural) => {
                    return Some(version);
                }
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    warn!(kind = self.kind, %version, error = %e, "API discovery failed");
                }
            }
        }
        None
    }

    /// Every object of this kind in the cluster, at `version`, kept in `store` as well.
    fn stream(
        &self,
        client: &Client,
        version: &str,
        store: Writer<DynamicObject>,
    ) -> impl futures::Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>> + Send + use<>
    {
        let api = Api::<DynamicObject>::all_with(client.clone(), &self.resource(version));
        reflector(
            store,
            watcher(api, watcher::Config::default()).default_backoff(),
        )
    }
}

/// The routes of one Gateway API kind in the cluster, for their status (empty while the
/// kind is not installed).
#[derive(Clone)]
pub struct RouteStore {
    /// Their kind.
    pub kind: GatewayKind,
    /// How the model keys them.
    pub route: RouteKind,
    /// The routes as last listed or watched.
    pub store: Store<DynamicObject>,
}

/// Starts the watch of each kind served now; for the others, a task that asks discovery
/// again every `interval` and starts the watch once the kind appears.
pub async fn watch(
    watches: &mut Watches,
    model: &mpsc::Sender<Vec<Event>>,
    interval: Duration,
) -> Vec<RouteStore> {
    let mut routes = Vec::new();
    for kind in [REFERENCE_GRANT, HTTP_ROUTE, GRPC_ROUTE] {
        let writer = Writer::new(kind.resource(kind.versions[0]));
        if let Some(route) = kind.route {
            routes.push(RouteStore {
                kind,
                route,
                store: writer.as_reader(),
            });
        }
        let client = watches.client().clone();
        match kind.served(&client).await {
            Some(version) => {
                info!(kind = kind.kind, %version, "watching Gateway API kind");
                let stream = kind.stream(&client, version, writer);
                watches.watch_stream(kind.kind, stream, kind.convert);
            }
            None => {
                info!(
                    kind = kind.kind,
                    every = ?interval,
                    "Gateway API kind not installed; looking for it again periodically"
                );
                let task = watch_when_installed(kind, client, writer, model.clone(), interval);
                watches.spawn(task);
            }
        }
    }
    routes
}

/// Waits for `kind` to be served, then watches it until the model goes.
fn watch_when_installed(
    kind: GatewayKind,
    client: Client,
    store: Writer<DynamicObject>,
    model: mpsc::Sender<Vec<Event>>,
    interval: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let version = loop {
            tokio::time::sleep(interval).await;
            if model.is_closed() {
                return;
            }
            if let Some(version) = kind.served(&client).await {
                break version;
            }
        };
        info!(kind = kind.kind, %version, "Gateway API kind installed: watching it");
        // Readiness passed long ago: this flag is for the watch's own use only.
        let listed = Arc::new(AtomicBool::new(false));
        let stream = kind.stream(&client, version, store);
        watches::run(kind.kind.into(), stream, kind.convert, model, listed).await;
    })
}
