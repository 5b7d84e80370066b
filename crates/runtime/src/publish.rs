//! From the model's changes to the proxies' snapshots. Resources are translated once per
//! content and shared by every proxy that holds them: ten thousand proxies of one class cost
//! one translation of their common clusters, not ten thousand.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use remora_envoy::{Options, translate, unresolved_cluster};
use remora_model::{
    Changes, Mesh,
    config::{ProxyConfig, Resource, ResourceType, RouteAction, Target},
    input::ObjectKey,
};
use remora_xds::{ProxyId, Snapshot, SnapshotCache, snapshot};

/// Picks the address a proxy's outbound listeners bind to (`None`: the wildcard).
type BindOutbound = Box<dyn Fn(&ObjectKey) -> Option<IpAddr> + Send + Sync>;

/// (kind, content hash, bind address for outbound listeners).
type TranslationKey = (ResourceType, u64, Option<IpAddr>);

pub struct Publisher {
    cache: Arc<SnapshotCache>,
    base: Options,
    /// The address a proxy's outbound listeners bind to, when not the wildcard (local mode
    /// runs every proxy on one machine, each on its own loopback address).
    bind_outbound: BindOutbound,
    translated: HashMap<TranslationKey, Arc<remora_xds::Resource>>,
    /// Size of `translated` after the last pruning, to prune only when it has doubled.
    pruned_at: usize,
}

impl Publisher {
    pub fn new(
        cache: Arc<SnapshotCache>,
        base: Options,
        bind_outbound: impl Fn(&ObjectKey) -> Option<IpAddr> + Send + Sync + 'static,
    ) -> Self {
        Publisher {
            cache,
            base,
            bind_outbound: Box::new(bind_outbound),
            translated: HashMap::new(),
            pruned_at: 0,
        }
    }

    /// Publishes a new snapshot for every proxy `changes` names.
    pub fn publish(&mut self, mesh: &Mesh, changes: &Changes) {
        for proxy in &changes.gone {
            self.cache.remove(&proxy_id(proxy));
        }
        for proxy in changes.proxies() {
            self.publish_one(mesh, proxy);
        }
        self.prune();
    }

    /// Publishes every proxy the mesh knows (at start-up).
    pub fn publish_all(&mut self, mesh: &Mesh) {
        let proxies: Vec<ObjectKey> = mesh.proxies().cloned().collect();
        for proxy in &proxies {
            self.publish_one(mesh, proxy);
        }
        self.prune();
    }

    fn publish_one(&mut self, mesh: &Mesh, proxy: &ObjectKey) {
        let Some(config) = mesh.proxy_config(proxy) else {
            self.cache.remove(&proxy_id(proxy));
            return;
        };
        let bind = (self.bind_outbound)(proxy);
        let snapshot = self.snapshot(&config, bind);
        self.cache.set(&proxy_id(proxy), Arc::new(snapshot));
    }

    fn snapshot(&mut self, config: &ProxyConfig, bind: Option<IpAddr>) -> Snapshot {
        let mut snapshot = Snapshot::default();
        let mut unresolved = false;
        for resource in config.resources.values() {
            if let Resource::RouteConfig(rc) = resource {
                unresolved |= rc.value.virtual_hosts.iter().any(|vh| {
                    vh.value.routes.iter().any(|r| match &r.action {
                        RouteAction::Forward(f) => {
                            f.clusters.iter().any(|c| c.target == Target::Unresolved)
                                || f.mirrors.iter().any(|m| m.cluster == Target::Unresolved)
                        }
                        RouteAction::Redirect(_) => false,
                    })
                });
            }
            let kind = resource.kind();
            let key = (
                kind,
                resource.hash(),
                bind.filter(|_| kind == ResourceType::Listener),
            );
            let translated = match self.translated.get(&key) {
                Some(t) => t.clone(),
                None => {
                    let options = Options {
                        bind_outbound_to: key.2,
                        ..self.base.clone()
                    };
                    let t = Arc::new(xds_resource(translate(resource, &options)));
                    self.translated.insert(key, t.clone());
                    t
                }
            };
            snapshot.insert(remora_envoy::type_url(kind), translated);
        }
        if unresolved {
            snapshot.insert(
                snapshot::CLUSTER,
                Arc::new(xds_resource(unresolved_cluster())),
            );
        }
        snapshot
    }

    /// Drops translations no snapshot holds any more.
    fn prune(&mut self) {
        if self.translated.len() > 2 * self.pruned_at.max(1024) {
            self.translated.retain(|_, r| Arc::strong_count(r) > 1);
            self.pruned_at = self.translated.len();
        }
    }
}

fn xds_resource(r: remora_envoy::EnvoyResource) -> remora_xds::Resource {
    remora_xds::Resource {
        name: r.name,
        version: r.version,
        body: r.any,
    }
}

pub fn proxy_id(key: &ObjectKey) -> ProxyId {
    ProxyId::new(&key.namespace, &key.name)
}
