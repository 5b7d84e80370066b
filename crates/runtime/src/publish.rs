//! From the model's changes to the proxies' snapshots. Resources are translated once per
//! content and shared by every proxy that holds them: ten thousand proxies of one class cost
//! one translation of their common clusters, not ten thousand.

mod members;
mod pool;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

use remora_envoy::{Caches, EnvoyResource, Options, translate_with, unresolved_cluster};
use remora_model::{
    Changes, Mesh,
    config::{ProxyConfig, Resource, ResourceKey, ResourceType, RouteAction, Target},
    input::ObjectKey,
};
use remora_xds::{
    Snapshot, SnapshotCache,
    snapshot::{self, Layer, PUSH_ORDER, ResourceMap, Resources},
};

use members::Members;
use pool::{LayerPool, Patch};

/// Picks the address a proxy's outbound listeners bind to (`None`: the wildcard).
type BindOutbound = Box<dyn Fn(&ObjectKey) -> Option<IpAddr> + Send + Sync>;

/// (kind, content hash, bind address for outbound listeners).
type TranslationKey = (ResourceType, u64, Option<IpAddr>);

/// Proxies alike in these hold the same outbound resources: the model's class (namespace and
/// governing policy) and the address their outbound listeners bind to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ClassId {
    namespace: String,
    policy: Option<ObjectKey>,
    bind: Option<IpAddr>,
}

/// The class of one proxy after another, allocated only where it differs from the class
/// of the proxy before: a change names its proxies in name order, so namespace by
/// namespace, and ten thousand proxies of fifty classes need fifty.
#[derive(Default)]
struct ClassCursor {
    last: Option<ClassId>,
}

impl ClassCursor {
    /// The class of `proxy`, whose outbound listeners bind to `bind`, and whether it
    /// differs from the class this last gave; `None` for a proxy the mesh has no class for.
    fn of(
        &mut self,
        mesh: &Mesh,
        proxy: &ObjectKey,
        bind: Option<IpAddr>,
    ) -> Option<(&ClassId, bool)> {
        let (namespace, policy) = mesh.proxy_class(proxy)?;
        let same = self.last.as_ref().is_some_and(|last| {
            last.namespace == namespace && last.policy.as_ref() == policy && last.bind == bind
        });
        if !same {
            self.last = Some(ClassId {
                namespace: namespace.to_owned(),
                policy: policy.cloned(),
                bind,
            });
        }
        self.last.as_ref().map(|class| (class, !same))
    }
}

/// Translated resources by type.
type Translated = BTreeMap<&'static str, ResourceMap>;

/// What every proxy of a class shares, translated.
#[derive(Default)]
struct ClassLayers {
    /// By type. Kept between publishes so that a type whose content did not change keeps
    /// its `Arc`, every proxy of the class holds one map instead of a copy each, and its
    /// digest is computed once here, not once per proxy.
    layers: BTreeMap<&'static str, Arc<Layer>>,
    /// The route configs with a target that did not resolve: while there is one, the class
    /// has the cluster such targets point to.
    unresolved: BTreeSet<String>,
}

impl ClassLayers {
    /// The layer of one type (the empty one for a type the class has none of).
    fn layer(&self, type_url: &str) -> Arc<Layer> {
        self.layers
            .get(type_url)
            .cloned()
            .unwrap_or_else(Layer::empty)
    }
}

/// Turns the model's changes into new snapshots in the cache, keeping what it translated
/// for the next publish.
pub struct Publisher {
    cache: Arc<SnapshotCache>,
    base: Options,
    /// The address a proxy's outbound listeners bind to, when not the wildcard (local mode
    /// runs every proxy on one machine, each on its own loopback address).
    bind_outbound: BindOutbound,
    translated: HashMap<TranslationKey, Arc<EnvoyResource>>,
    /// Size of `translated` after the last pruning, to prune only when it has doubled.
    pruned_at: usize,
    /// A route config's virtual hosts and a capture listener's chains (one per Service, one
    /// per Service port), encoded once each across every class.
    caches: Caches,
    classes: HashMap<ClassId, ClassLayers>,
    /// Which class each proxy is in: a class goes with its last proxy.
    members: Members,
    /// One layer per content, whatever classes hold it.
    pool: LayerPool,
    unresolved: Arc<EnvoyResource>,
}

/// The shared resources each class saw change in one publish; `None`: any of any class may
/// have.
type ClassChanges = Option<HashMap<ClassId, BTreeSet<ResourceKey>>>;

impl Publisher {
    /// A publisher into `cache`, translating with `base`; `bind_outbound` picks the address a
    /// proxy's outbound listeners bind to (`None`: the wildcard).
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
            caches: Caches::default(),
            classes: HashMap::new(),
            members: Members::default(),
            pool: LayerPool::default(),
            unresolved: Arc::new(unresolved_cluster()),
        }
    }

    /// Publishes a new snapshot for every proxy `changes` names. Only what changed is
    /// rebuilt: a class's shared resources that its proxies saw change, and a proxy's own
    /// resources when they changed; the rest is taken from what was published before.
    pub fn publish(&mut self, mesh: &Mesh, changes: &Changes) {
        for proxy in &changes.gone {
            self.forget(proxy);
        }
        let mut cursor = ClassCursor::default();
        // Per class, what any of its proxies saw change: a proxy that just joined a class
        // may have seen other changes than the class's other members.
        let mut changed: HashMap<ClassId, BTreeSet<ResourceKey>> = HashMap::new();
        for group in &changes.groups {
            let mut classes = HashSet::new();
            for proxy in group.proxies.iter() {
                let bind = (self.bind_outbound)(proxy);
                // Only a class other than the last proxy's can be new to the group.
                if let Some((class, new)) = cursor.of(mesh, proxy, bind)
                    && (new || classes.is_empty())
                    && !classes.contains(class)
                {
                    classes.insert(class.clone());
                }
            }
            for class in classes {
                changed
                    .entry(class)
                    .or_default()
                    .extend(group.resources.iter().cloned());
            }
        }
        let classes: ClassChanges = Some(changed);
        let mut built = HashSet::new();
        for proxy in changes.proxies() {
            let own = changes.own.contains_key(proxy);
            let bind = (self.bind_outbound)(proxy);
            let class = cursor.of(mesh, proxy, bind).map(|(class, _)| class);
            self.publish_one(mesh, proxy, class, &classes, own, &mut built);
        }
        self.prune();
    }

    /// Publishes every proxy the mesh knows (at start-up).
    pub fn publish_all(&mut self, mesh: &Mesh) {
        let proxies: Vec<ObjectKey> = mesh.proxies().cloned().collect();
        let mut cursor = ClassCursor::default();
        let mut built = HashSet::new();
        for proxy in &proxies {
            let bind = (self.bind_outbound)(proxy);
            let class = cursor.of(mesh, proxy, bind).map(|(class, _)| class);
            self.publish_one(mesh, proxy, class, &None, true, &mut built);
        }
        self.prune();
    }

    /// `built` names the classes whose shared part this publish has already brought up to
    /// date: a change that reaches a thousand proxies of one class builds it once. `class`:
    /// the proxy's (`None`: the mesh has none for it, and the proxy is forgotten). `own`:
    /// whether the proxy's own resources may have changed.
    fn publish_one(
        &mut self,
        mesh: &Mesh,
        proxy: &ObjectKey,
        class: Option<&ClassId>,
        classes: &ClassChanges,
        own: bool,
        built: &mut HashSet<ClassId>,
    ) {
        let id = proxy.clone();
        let Some(class) = class else {
            self.forget(&id);
            return;
        };
        if !built.contains(class) {
            let changed = classes.as_ref().map(|by_class| {
                static NONE: BTreeSet<ResourceKey> = BTreeSet::new();
                by_class.get(class).unwrap_or(&NONE)
            });
            if !self.update_class(mesh, proxy, class, changed) {
                self.forget(&id);
                return;
            }
            built.insert(class.clone());
        }
        // What was published last stands where it is still current: the proxy's own
        // resources unless they changed, and each type whose shared layer did not.
        let last = (!own)
            .then(|| self.cache.get(&id))
            .flatten()
            .filter(|s| !s.is_empty());
        let mut fresh_own = match &last {
            Some(_) => BTreeMap::new(),
            None => {
                let Some(config) = mesh.own_config(proxy) else {
                    self.forget(&id);
                    return;
                };
                self.translate_all(&config, class.bind).0
            }
        };
        let Some(shared) = self.classes.get(class) else {
            self.forget(&id);
            return;
        };
        let snapshot = Snapshot::new(PUSH_ORDER.into_iter().map(|type_url| {
            let layer = shared.layer(type_url);
            let set = match &last {
                Some(last) if Arc::ptr_eq(last.set(type_url).shared(), &layer) => {
                    last.set(type_url).clone()
                }
                Some(last) => last.set(type_url).over(layer),
                None => Resources::new(layer, fresh_own.remove(type_url).unwrap_or_default()),
            };
            (type_url, set)
        }));
        self.cache.set(&id, Arc::new(snapshot));
        self.members.join(&id, class);
    }

    /// Takes a proxy out of the cache and of its class.
    fn forget(&mut self, proxy: &ObjectKey) {
        self.cache.remove(proxy);
        self.members.leave(proxy);
    }

    /// Brings a class's shared part up to date: the resources of `changed` (every resource
    /// for a class not built yet, or when `None`), each layer kept where its content is
    /// unchanged; a changed layer remembers what changed, so streams diff only that. False
    /// when the mesh has no class for the proxy.
    fn update_class(
        &mut self,
        mesh: &Mesh,
        proxy: &ObjectKey,
        class: &ClassId,
        changed: Option<&BTreeSet<ResourceKey>>,
    ) -> bool {
        let next = match (self.classes.remove(class), changed) {
            (Some(old), Some(changed)) => self.patch_class(mesh, proxy, class.bind, old, changed),
            (old, _) => self.build_class(mesh, proxy, class.bind, old),
        };
        match next {
            Some(next) => {
                self.classes.insert(class.clone(), next);
                true
            }
            None => false,
        }
    }

    /// A class's shared part translated whole, each layer replacing `old`'s.
    fn build_class(
        &mut self,
        mesh: &Mesh,
        proxy: &ObjectKey,
        bind: Option<IpAddr>,
        old: Option<ClassLayers>,
    ) -> Option<ClassLayers> {
        let config = mesh.class_config(proxy)?;
        let mut old = old.unwrap_or_default();
        let (mut fresh, unresolved) = self.translate_all(&config, bind);
        if !unresolved.is_empty() {
            fresh
                .entry(snapshot::CLUSTER)
                .or_default()
                .insert(self.unresolved.name.clone(), self.unresolved.clone());
        }
        let mut layers = BTreeMap::new();
        for type_url in PUSH_ORDER {
            let map = fresh.remove(type_url).unwrap_or_default();
            let layer = match old.layers.remove(type_url) {
                Some(older) => Layer::next(&older, map),
                None => Arc::new(Layer::new(map)),
            };
            layers.insert(type_url, self.pool.share(layer));
        }
        Some(ClassLayers { layers, unresolved })
    }

    /// `old` with the resources of `changed` as the class has them now. Endpoints are taken
    /// by kind (the model keeps them by cluster, not by key), the rest one by one.
    fn patch_class(
        &mut self,
        mesh: &Mesh,
        proxy: &ObjectKey,
        bind: Option<IpAddr>,
        mut old: ClassLayers,
        changed: &BTreeSet<ResourceKey>,
    ) -> Option<ClassLayers> {
        let (endpoints, keyed): (Vec<&ResourceKey>, Vec<&ResourceKey>) = changed
            .iter()
            .partition(|k| k.kind == ResourceType::Endpoints);
        let mut patches: BTreeMap<&'static str, Patch> = BTreeMap::new();
        for (key, resource) in mesh.class_resources(proxy, keyed)? {
            let type_url = remora_envoy::type_url(key.kind);
            if key.kind == ResourceType::RouteConfig {
                old.unresolved.remove(&*key.name);
            }
            let entry = match resource {
                Some(resource) => {
                    let (translated, unresolved) = self.translate(&resource, bind);
                    if unresolved {
                        old.unresolved.insert(key.name.to_string());
                    }
                    (translated.name.clone(), Some(translated))
                }
                None => (key.name.to_string(), None),
            };
            patches.entry(type_url).or_default().push(entry);
        }
        // The cluster for unresolved targets is there while some route config needs it.
        let needed = !old.unresolved.is_empty();
        let held = old
            .layers
            .get(snapshot::CLUSTER)
            .is_some_and(|l| l.map().contains_key(&self.unresolved.name));
        if needed != held {
            patches.entry(snapshot::CLUSTER).or_default().push((
                self.unresolved.name.clone(),
                needed.then(|| self.unresolved.clone()),
            ));
        }
        for (type_url, patch) in patches {
            let layer = self.pool.patched(&old.layer(type_url), patch);
            old.layers.insert(type_url, layer);
        }
        if !endpoints.is_empty() {
            let config = mesh.class_config_of(proxy, &[ResourceType::Endpoints])?;
            let (mut fresh, _) = self.translate_all(&config, bind);
            let map = fresh.remove(snapshot::ENDPOINT).unwrap_or_default();
            let layer = self
                .pool
                .share(Layer::next(&old.layer(snapshot::ENDPOINT), map));
            old.layers.insert(snapshot::ENDPOINT, layer);
        }
        Some(old)
    }

    /// Translates every resource of `config`; with them, the route configs that have a
    /// target that did not resolve.
    fn translate_all(
        &mut self,
        config: &ProxyConfig,
        bind: Option<IpAddr>,
    ) -> (Translated, BTreeSet<String>) {
        let mut out = Translated::new();
        let mut unresolved = BTreeSet::new();
        for resource in config.resources.values() {
            let (translated, has_unresolved) = self.translate(resource, bind);
            if has_unresolved {
                unresolved.insert(translated.name.clone());
            }
            out.entry(remora_envoy::type_url(resource.kind()))
                .or_default()
                .insert(translated.name.clone(), translated);
        }
        (out, unresolved)
    }

    /// One resource translated (once per content), and whether it is a route config with a
    /// target that did not resolve.
    fn translate(
        &mut self,
        resource: &Resource,
        bind: Option<IpAddr>,
    ) -> (Arc<EnvoyResource>, bool) {
        let unresolved = match resource {
            Resource::RouteConfig(rc) => rc.value.virtual_hosts.iter().any(|vh| {
                vh.value.routes.iter().any(|r| match &r.action {
                    RouteAction::Forward(f) => {
                        f.clusters.iter().any(|c| c.target == Target::Unresolved)
                            || f.mirrors.iter().any(|m| m.cluster == Target::Unresolved)
                    }
                    RouteAction::Redirect(_) => false,
                })
            }),
            _ => false,
        };
        let kind = resource.kind();
        let key = (
            kind,
            resource.hash(),
            bind.filter(|_| kind == ResourceType::Listener),
        );
        if let Some(t) = self.translated.get(&key) {
            return (t.clone(), unresolved);
        }
        let options = Options {
            bind_outbound_to: key.2,
            ..self.base.clone()
        };
        let t = Arc::new(translate_with(resource, &options, &mut self.caches));
        self.translated.insert(key, t.clone());
        (t, unresolved)
    }

    /// Drops the classes no proxy is in, and translations no snapshot holds any more.
    fn prune(&mut self) {
        let members = &self.members;
        self.classes.retain(|class, _| members.has(class));
        self.pool.settle();
        if self.translated.len() > 2 * self.pruned_at.max(1024) {
            self.translated.retain(|_, r| Arc::strong_count(r) > 1);
            self.pruned_at = self.translated.len();
            self.caches.sweep();
        }
    }
}

#[cfg(test)]
mod tests {
    use remora_model::{
        config::Addressing,
        input::{Event, Kind, MeshSettings, Object},
    };
    use remora_synthetic::{Shape, Synthetic};

    use super::*;

    /// The small mesh the tests publish: four namespaces, one of them shared.
    fn synthetic(egress: bool) -> Synthetic {
        Synthetic::new(Shape {
            namespaces: 4,
            shared_namespaces: 1,
            services: 12,
            pods: 40,
            routes: 20,
            egress,
            seed: 7,
        })
    }

    fn mesh(addressing: Addressing) -> Mesh {
        Mesh::new(MeshSettings {
            addressing,
            ..MeshSettings::default()
        })
    }

    fn publisher(cache: &Arc<SnapshotCache>) -> Publisher {
        Publisher::new(cache.clone(), Options::default(), |_| None)
    }

    /// The small mesh without egress scopes, captured, and every proxy of it published.
    fn published_unscoped() -> (Synthetic, Mesh, Arc<SnapshotCache>, Publisher) {
        let synthetic = synthetic(false);
        let mut mesh = mesh(Addressing::Captured);
        drop(mesh.apply(synthetic.objects().into_iter().map(Event::Upsert)));
        let cache = SnapshotCache::new();
        let mut publisher = publisher(&cache);
        publisher.publish_all(&mesh);
        (synthetic, mesh, cache, publisher)
    }

    /// Every proxy's snapshot as names and versions by type.
    fn content(mesh: &Mesh, cache: &SnapshotCache) -> BTreeMap<String, Vec<(String, String)>> {
        mesh.proxies()
            .map(|p| {
                let snapshot = cache.get(p).unwrap_or_default();
                let entries = PUSH_ORDER
                    .into_iter()
                    .flat_map(|t| {
                        snapshot
                            .of_type(t)
                            .map(move |(n, r)| (format!("{t} {n}"), r.version.clone()))
                    })
                    .collect();
                (p.clone().to_string(), entries)
            })
            .collect()
    }

    /// Publishing only what changed, step after step, leaves every proxy with what
    /// publishing the whole mesh afresh gives it.
    #[test]
    fn publishing_changes_gives_what_publishing_everything_afresh_gives() {
        for (egress, addressing) in [false, true]
            .into_iter()
            .flat_map(|e| [(e, Addressing::Explicit), (e, Addressing::Captured)])
        {
            let synthetic = synthetic(egress);
            let objects = synthetic.objects();
            let mut mesh = mesh(addressing);
            drop(mesh.apply(objects.iter().cloned().map(Event::Upsert)));
            let cache = SnapshotCache::new();
            let mut incremental = publisher(&cache);
            incremental.publish_all(&mesh);

            let pod = objects
                .iter()
                .find(|o| matches!(o, Object::Pod(_)))
                .cloned()
                .expect("a pod");
            let policy = objects
                .iter()
                .rfind(|o| matches!(o, Object::SidecarPolicy(_)))
                .cloned()
                .expect("a policy");
            let shared = synthetic.service_key(0).expect("a shared Service");
            let service = objects
                .iter()
                .find(|o| matches!(o, Object::Service(_)) && o.key() == shared)
                .cloned()
                .expect("the Service");
            let steps: Vec<Vec<Event>> = vec![
                vec![Event::Upsert(synthetic.route_change(3))],
                vec![Event::Upsert(synthetic.endpoint_change(2))],
                vec![
                    Event::Upsert(synthetic.route(3)),
                    Event::Upsert(synthetic.endpoint_slice(2)),
                ],
                // Routes whose backend is gone point to the cluster for unresolved targets.
                vec![Event::Delete(Kind::Service, shared)],
                vec![Event::Upsert(service)],
                vec![Event::Delete(Kind::Pod, pod.key())],
                vec![Event::Upsert(pod)],
                // A route edited to a backend that does not exist: the route configs change,
                // the clusters do not, and the cluster for unresolved targets appears.
                vec![Event::Upsert(to_missing_backend(synthetic.route(5)))],
                vec![Event::Upsert(synthetic.route(5))],
                vec![Event::Delete(Kind::SidecarPolicy, policy.key())],
                vec![Event::Upsert(policy)],
            ];
            let mut saw_unresolved = false;
            for (i, step) in steps.into_iter().enumerate() {
                let changes = mesh.apply(step);
                incremental.publish(&mesh, &changes);
                let fresh_cache = SnapshotCache::new();
                publisher(&fresh_cache).publish_all(&mesh);
                let got = content(&mesh, &cache);
                assert_eq!(
                    got,
                    content(&mesh, &fresh_cache),
                    "egress {egress}, {addressing:?}, step {i}"
                );
                saw_unresolved |= got
                    .values()
                    .flatten()
                    .any(|(n, _)| n.ends_with(&format!(" {}", unresolved_cluster().name)));
                for p in mesh.proxies() {
                    let id = p.clone();
                    assert_eq!(
                        cache.get(&id),
                        fresh_cache.get(&id),
                        "set versions, step {i}"
                    );
                }
            }
            assert!(saw_unresolved, "some step made a target unresolved");
        }
    }

    /// Without egress scopes, proxies of every namespace hold one layer per type, not a
    /// copy per class, also after a change.
    #[test]
    fn classes_of_equal_content_hold_one_layer() {
        let (synthetic, mut mesh, cache, mut publisher) = published_unscoped();
        for (step, route) in [None, Some(synthetic.route_change(3))]
            .into_iter()
            .enumerate()
        {
            if let Some(route) = route {
                let changes = mesh.apply([Event::Upsert(route)]);
                publisher.publish(&mesh, &changes);
            }
            for type_url in [snapshot::CLUSTER, snapshot::ROUTE] {
                let held: Vec<(String, Arc<Layer>)> = mesh
                    .proxies()
                    .map(|p| {
                        let snapshot = cache.get(p).expect("a snapshot");
                        (p.namespace.clone(), snapshot.set(type_url).shared().clone())
                    })
                    .collect();
                let namespaces: BTreeSet<&str> = held.iter().map(|(ns, _)| ns.as_str()).collect();
                assert!(namespaces.len() > 1, "proxies of several namespaces");
                let (_, first) = &held[0];
                assert!(!first.map().is_empty(), "{type_url} shared");
                for (ns, layer) in &held {
                    assert!(Arc::ptr_eq(first, layer), "{type_url} of {ns}, step {step}");
                }
            }
        }
    }

    /// The model groups a change's proxies class by class; a group of proxies of several
    /// classes (each of which the change reaches) brings every one of them up to date.
    #[test]
    fn a_group_of_several_classes_changes_each() {
        let (synthetic, mut mesh, cache, mut incremental) = published_unscoped();
        let mut changes = mesh.apply([Event::Upsert(synthetic.route_change(3))]);
        let resources = changes.groups[0].resources.clone();
        assert!(
            changes.groups.iter().all(|g| g.resources == resources),
            "a route change reaches every class alike"
        );
        let proxies: BTreeSet<ObjectKey> = changes
            .groups
            .iter()
            .flat_map(|g| g.proxies.iter().cloned())
            .collect();
        let namespaces: BTreeSet<&str> = proxies.iter().map(|p| p.namespace.as_str()).collect();
        assert!(namespaces.len() > 1, "proxies of several classes");
        changes.groups.truncate(1);
        changes.groups[0].proxies = Arc::new(proxies);
        incremental.publish(&mesh, &changes);
        let fresh_cache = SnapshotCache::new();
        publisher(&fresh_cache).publish_all(&mesh);
        assert_eq!(content(&mesh, &cache), content(&mesh, &fresh_cache));
    }

    fn to_missing_backend(route: Object) -> Object {
        let Object::TrafficRoute(mut route) = route else {
            unreachable!("a route")
        };
        let rule = route.spec.http.first_mut().expect("an HTTP rule");
        rule.backend_refs.truncate(1);
        rule.backend_refs[0].name = "no-such-service".into();
        Object::TrafficRoute(route)
    }
}
