//! From the model's changes to the proxies' snapshots. Resources are translated once per
//! content and shared by every proxy that holds them: ten thousand proxies of one class cost
//! one translation of their common clusters, not ten thousand.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

use remora_envoy::{Options, translate, unresolved_cluster};
use remora_model::{
    Changes, Mesh,
    config::{ProxyConfig, Resource, ResourceType, RouteAction, Target},
    input::ObjectKey,
};
use remora_xds::{
    ProxyId, Snapshot, SnapshotCache,
    snapshot::{self, Layer, PUSH_ORDER, ResourceMap, Resources},
};

/// Picks the address a proxy's outbound listeners bind to (`None`: the wildcard).
type BindOutbound = Box<dyn Fn(&ObjectKey) -> Option<IpAddr> + Send + Sync>;

/// (kind, content hash, bind address for outbound listeners).
type TranslationKey = (ResourceType, u64, Option<IpAddr>);

/// (namespace, governing policy, bind address for outbound listeners): proxies alike in
/// these hold the same outbound resources.
type ClassId = (String, Option<ObjectKey>, Option<IpAddr>);

/// Translated resources by type.
type Translated = BTreeMap<&'static str, ResourceMap>;

pub struct Publisher {
    cache: Arc<SnapshotCache>,
    base: Options,
    /// The address a proxy's outbound listeners bind to, when not the wildcard (local mode
    /// runs every proxy on one machine, each on its own loopback address).
    bind_outbound: BindOutbound,
    translated: HashMap<TranslationKey, Arc<remora_xds::Resource>>,
    /// Size of `translated` after the last pruning, to prune only when it has doubled.
    pruned_at: usize,
    /// The part of its proxies' snapshots each class shares, by type. Kept between publishes
    /// so that a type whose content did not change keeps its `Arc`, and every proxy of the
    /// class holds one map instead of a copy each; its digest is computed once here, not
    /// once per proxy.
    classes: HashMap<ClassId, BTreeMap<&'static str, Arc<Layer>>>,
    unresolved: Arc<remora_xds::Resource>,
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
            classes: HashMap::new(),
            unresolved: Arc::new(xds_resource(unresolved_cluster())),
        }
    }

    /// Publishes a new snapshot for every proxy `changes` names.
    pub fn publish(&mut self, mesh: &Mesh, changes: &Changes) {
        for proxy in &changes.gone {
            self.cache.remove(&proxy_id(proxy));
        }
        let mut built = HashSet::new();
        for proxy in changes.proxies() {
            self.publish_one(mesh, proxy, &mut built);
        }
        self.prune();
    }

    /// Publishes every proxy the mesh knows (at start-up).
    pub fn publish_all(&mut self, mesh: &Mesh) {
        let proxies: Vec<ObjectKey> = mesh.proxies().cloned().collect();
        let mut built = HashSet::new();
        for proxy in &proxies {
            self.publish_one(mesh, proxy, &mut built);
        }
        self.prune();
    }

    /// `built` names the classes whose shared part this publish has already brought up to
    /// date: a change that reaches a thousand proxies of one class builds it once.
    fn publish_one(&mut self, mesh: &Mesh, proxy: &ObjectKey, built: &mut HashSet<ClassId>) {
        let (Some((namespace, policy)), Some(own)) =
            (mesh.proxy_class(proxy), mesh.own_config(proxy))
        else {
            self.cache.remove(&proxy_id(proxy));
            return;
        };
        let bind = (self.bind_outbound)(proxy);
        let class: ClassId = (namespace.to_owned(), policy.cloned(), bind);
        if !built.contains(&class) {
            let Some(config) = mesh.class_config(proxy) else {
                self.cache.remove(&proxy_id(proxy));
                return;
            };
            self.update_class(&class, &config, bind);
            built.insert(class.clone());
        }
        let shared = self.classes.get(&class).cloned().unwrap_or_default();
        let mut own = self.translate_all(&own, bind);
        let snapshot = Snapshot::new(PUSH_ORDER.into_iter().map(|type_url| {
            let shared = shared.get(type_url).cloned().unwrap_or_else(Layer::empty);
            (
                type_url,
                Resources::new(shared, own.remove(type_url).unwrap_or_default()),
            )
        }));
        self.cache.set(&proxy_id(proxy), Arc::new(snapshot));
    }

    /// Brings a class's shared part up to date, keeping each type's map where its content
    /// is unchanged.
    fn update_class(&mut self, class: &ClassId, config: &ProxyConfig, bind: Option<IpAddr>) {
        let fresh = self.translate_all(config, bind);
        let old = self.classes.remove(class).unwrap_or_default();
        let shared = fresh
            .into_iter()
            .map(|(type_url, map)| match old.get(type_url) {
                Some(kept) if same(kept.map(), &map) => (type_url, kept.clone()),
                _ => (type_url, Arc::new(Layer::new(map))),
            })
            .collect();
        self.classes.insert(class.clone(), shared);
    }

    /// Translates every resource of `config`, and adds the cluster that unresolved route
    /// targets point to when a route config has one.
    fn translate_all(&mut self, config: &ProxyConfig, bind: Option<IpAddr>) -> Translated {
        let mut out = Translated::new();
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
            out.entry(remora_envoy::type_url(kind))
                .or_default()
                .insert(translated.name.clone(), translated);
        }
        if unresolved {
            out.entry(snapshot::CLUSTER)
                .or_default()
                .insert(self.unresolved.name.clone(), self.unresolved.clone());
        }
        out
    }

    /// Drops translations and class parts no snapshot holds any more.
    fn prune(&mut self) {
        self.classes
            .retain(|_, types| types.values().any(|m| Arc::strong_count(m) > 1));
        if self.translated.len() > 2 * self.pruned_at.max(1024) {
            self.translated.retain(|_, r| Arc::strong_count(r) > 1);
            self.pruned_at = self.translated.len();
        }
    }
}

/// Whether two maps hold the same resources (equal versions mean equal content).
fn same(a: &ResourceMap, b: &ResourceMap) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((na, ra), (nb, rb))| {
            na == nb && (Arc::ptr_eq(ra, rb) || ra.version == rb.version)
        })
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
