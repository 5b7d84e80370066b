//! Proxies in one namespace governed by one policy see the same outbound world, so their
//! outbound config is computed once per such class and shared. A class is updated one
//! Service at a time, which is what keeps a route change cheap.

mod captured;
mod explicit;
mod host;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    mem,
    sync::Arc,
};

use remora_api::sidecar_policy::MtlsMode;

use self::host::{HostNames, virtual_host};
use crate::{
    config::{
        Addressing, Cluster, Discovery, FilterChains, Resource, ResourceKey, ResourceType, Route,
        Target, Versioned, VirtualHost, VirtualHosts, WeightedCluster,
    },
    input::{MeshSettings, ObjectKey, Protocol},
    mesh::Peers,
    policy::Defaults,
    routing::{ClusterKey, ServiceRouting},
};

/// A class of proxies: same namespace, same governing policy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClassKey {
    pub namespace: String,
    pub policy: Option<ObjectKey>,
}

/// (port, routing hash, defaults id, host names): everything a virtual host depends on.
type VhostInputs = (u16, u64, u64, HostNames);
/// (cluster, defaults id, http2, hash of the accepted peers or 0): everything a cluster
/// depends on.
type ClusterInputs = (ClusterKey, u64, bool, u64);

/// Memoized pieces shared between classes, per Service, keyed by every input so a stale
/// entry can never be returned.
#[derive(Default)]
pub(crate) struct SharedCache {
    vhosts: BTreeMap<ObjectKey, HashMap<VhostInputs, Arc<Versioned<VirtualHost>>>>,
    clusters: BTreeMap<ObjectKey, HashMap<ClusterInputs, Arc<Versioned<Cluster>>>>,
}

impl SharedCache {
    /// Drops everything derived from `service`.
    pub(crate) fn forget(&mut self, service: &ObjectKey) {
        self.vhosts.remove(service);
        self.clusters.remove(service);
    }

    /// Drops the clusters of `service`, whose accepted peers changed.
    pub(crate) fn forget_clusters(&mut self, service: &ObjectKey) {
        self.clusters.remove(service);
    }
}

/// What a class needs from the rest of the mesh while it updates.
pub(crate) struct Env<'a> {
    pub settings: &'a MeshSettings,
    pub protocols: &'a dyn Fn(&ClusterKey) -> Option<Protocol>,
    /// The identities a caller of a Service accepts (`None`: no meshed pod behind it).
    pub peers: &'a dyn Fn(&ObjectKey) -> Option<&'a Peers>,
}

pub(crate) struct Class {
    pub key: ClassKey,
    pub defaults: Arc<Defaults>,
    defaults_id: u64,
    /// Shared with the `Changes` that report them, so a report costs no copy.
    pub members: Arc<BTreeSet<ObjectKey>>,
    /// Explicit listeners per port, or capture listeners with a chain per destination.
    addressing: Addressing,
    /// The Services this class reaches, with the routing last applied for each.
    reach: BTreeMap<ObjectKey, Arc<ServiceRouting>>,
    /// Explicit: the virtual hosts of each outbound HTTP port.
    http: BTreeMap<u16, VirtualHosts>,
    /// Captured: the outbound capture listener's filter chains.
    chains: FilterChains,
    pub cluster_refs: BTreeMap<ClusterKey, u32>,
    /// Outbound listeners, route configs and clusters (endpoints are shared mesh-wide).
    pub resources: BTreeMap<ResourceKey, Resource>,
}

/// One update of a class in progress: what it touched, and what is left to do when it
/// finishes. Several Services can be applied in one update, and a resource one of them
/// drops another may bring back unchanged, so changes are judged by comparing the first
/// and the final state of every touched resource.
#[derive(Default)]
pub(crate) struct ClassUpdate {
    /// The hash each touched resource had before the update (`None`: absent).
    before: BTreeMap<ResourceKey, Option<u64>>,
    /// Cluster keys this class started (+1) or stopped (-1) using.
    pub cluster_refs: Vec<(ClusterKey, i32)>,
    /// HTTP ports whose route config must be rebuilt when the update finishes: once per
    /// port, however many of its Services changed (explicit addressing).
    ports: BTreeSet<u16>,
    /// Whether the capture listener's chains changed (captured addressing).
    listener: bool,
    /// Set when nobody will ask what changed (a class being built or dropped), which spares
    /// recording the previous state of every resource.
    untracked: bool,
}

impl ClassUpdate {
    pub fn untracked() -> ClassUpdate {
        ClassUpdate {
            untracked: true,
            ..ClassUpdate::default()
        }
    }

    /// The resources of `class` that really differ from before the update. A cluster that
    /// appeared or disappeared also changes the class's view of its endpoints. Call after
    /// [`Class::finish`].
    pub fn changed(&self, class: &Class) -> BTreeSet<ResourceKey> {
        debug_assert!(!self.untracked, "changes asked of an untracked update");
        let mut changed = BTreeSet::new();
        for (key, before) in &self.before {
            let after = class.resources.get(key).map(Resource::hash);
            if after == *before {
                continue;
            }
            if key.kind == ResourceType::Cluster && after.is_some() != before.is_some() {
                changed.insert(ResourceKey {
                    kind: ResourceType::Endpoints,
                    name: key.name.clone(),
                });
            }
            changed.insert(key.clone());
        }
        changed
    }
}

impl Class {
    pub fn new(key: ClassKey, defaults: Arc<Defaults>, addressing: Addressing) -> Class {
        Class {
            key,
            defaults_id: defaults.id(),
            defaults,
            members: Arc::default(),
            addressing,
            reach: BTreeMap::new(),
            http: BTreeMap::new(),
            chains: FilterChains::default(),
            cluster_refs: BTreeMap::new(),
            resources: BTreeMap::new(),
        }
    }

    pub fn reaches(&self, service: &ObjectKey) -> bool {
        self.defaults.reaches(&self.key.namespace, service)
    }

    /// Applies the current routing of one Service (`None`: it is gone).
    pub fn set_service(
        &mut self,
        env: &Env<'_>,
        cache: &mut SharedCache,
        service: &ObjectKey,
        routing: Option<&Arc<ServiceRouting>>,
        update: &mut ClassUpdate,
    ) {
        let routing = routing.filter(|_| self.reaches(service));
        let old = self.reach.remove(service);
        if let (Some(old), Some(new)) = (&old, routing)
            && Arc::ptr_eq(old, new)
        {
            self.reach.insert(service.clone(), old.clone());
            return;
        }
        let change = (old.as_deref(), routing.map(|r| &**r));
        match self.addressing {
            Addressing::Explicit => self.set_explicit(env, cache, service, change, update),
            Addressing::Captured => self.set_captured(env, cache, service, change, update),
        }
        if let Some(new) = routing {
            for c in &new.clusters {
                self.ref_cluster(env, cache, c, update);
            }
            self.reach.insert(service.clone(), new.clone());
        }
        // Released after the new references are taken, so a cluster both old and new
        // routing use never disappears for a moment (which would report it as changed).
        if let Some(old) = &old {
            for c in &old.clusters {
                self.unref_cluster(c, update);
            }
        }
    }

    /// The virtual host of one HTTP port of a Service, shared with every class that has
    /// the same defaults and sees the Service from the same side of its namespace.
    fn virtual_host(
        &self,
        env: &Env<'_>,
        cache: &mut SharedCache,
        routing: &ServiceRouting,
        port: u16,
        routes: &[Route],
    ) -> Arc<Versioned<VirtualHost>> {
        let service = &routing.service;
        let names = match self.addressing {
            Addressing::Captured => HostNames::Any,
            Addressing::Explicit if service.namespace == self.key.namespace => {
                HostNames::SameNamespace
            }
            Addressing::Explicit => HostNames::OtherNamespace,
        };
        cache
            .vhosts
            .entry(service.clone())
            .or_default()
            .entry((port, routing.hash, self.defaults_id, names))
            .or_insert_with(|| {
                Versioned::new(virtual_host(
                    env.settings,
                    service,
                    routing.cluster_ip,
                    port,
                    names,
                    routes,
                    &self.defaults,
                ))
            })
            .clone()
    }

    /// Ends an update: rebuilds the route configs of the ports it touched (explicit), or the
    /// capture listener if its chains changed or it is not there yet (captured).
    pub fn finish(&mut self, update: &mut ClassUpdate) {
        for port in mem::take(&mut update.ports) {
            self.rebuild_port(port, update);
        }
        if self.addressing != Addressing::Captured {
            return;
        }
        let listener = ResourceKey {
            kind: ResourceType::Listener,
            name: captured::OUTBOUND_LISTENER.into(),
        };
        if mem::take(&mut update.listener) || !self.resources.contains_key(&listener) {
            self.put_capture_listener(update);
        }
    }

    /// Empties the class and gives it new defaults, keeping its members: its policy changed,
    /// and every Service is applied again afterwards.
    pub fn reset(
        &mut self,
        env: &Env<'_>,
        cache: &mut SharedCache,
        defaults: Arc<Defaults>,
        update: &mut ClassUpdate,
    ) {
        self.clear(env, cache, update);
        let mut class = Class::new(self.key.clone(), defaults, self.addressing);
        class.members = mem::take(&mut self.members);
        *self = class;
    }

    /// Drops every Service, leaving an empty class (used before a full rebuild and when the
    /// class disappears, so cluster references are released).
    pub fn clear(&mut self, env: &Env<'_>, cache: &mut SharedCache, update: &mut ClassUpdate) {
        let services: Vec<ObjectKey> = self.reach.keys().cloned().collect();
        for s in services {
            self.set_service(env, cache, &s, None, update);
        }
        // The emptied ports are removed from this class now, so their removal is recorded
        // against it even if a rebuilt class takes its place.
        for port in mem::take(&mut update.ports) {
            self.rebuild_port(port, update);
        }
        if self.addressing == Addressing::Captured {
            update.listener = false;
            self.remove_capture_listener(update);
        }
    }

    fn ref_cluster(
        &mut self,
        env: &Env<'_>,
        cache: &mut SharedCache,
        key: &ClusterKey,
        update: &mut ClassUpdate,
    ) {
        let count = self.cluster_refs.entry(key.clone()).or_insert(0);
        *count += 1;
        if *count > 1 {
            return;
        }
        self.put_cluster(env, cache, key, update);
        update.cluster_refs.push((key.clone(), 1));
    }

    /// Puts the cluster of `key` as the class sees it now, shared with every class that
    /// sees it alike.
    fn put_cluster(
        &mut self,
        env: &Env<'_>,
        cache: &mut SharedCache,
        key: &ClusterKey,
        update: &mut ClassUpdate,
    ) {
        let http2 = (env.protocols)(key) == Some(Protocol::Http2);
        // A proxy with mutual TLS disabled originates none either.
        let peers = (self.defaults.mtls != MtlsMode::Disabled)
            .then(|| (env.peers)(&key.service))
            .flatten();
        let cluster = cache
            .clusters
            .entry(key.service.clone())
            .or_default()
            .entry((
                key.clone(),
                self.defaults_id,
                http2,
                peers.map_or(0, |p| p.hash),
            ))
            .or_insert_with(|| {
                Versioned::new(Cluster {
                    name: key.name.clone(),
                    connect_timeout: self.defaults.connect_timeout,
                    discovery: Discovery::Eds,
                    outlier_detection: self.defaults.outlier_detection.clone(),
                    circuit_breaker: self.defaults.circuit_breaker.clone(),
                    http2,
                    mtls: peers.map(|p| p.mtls.clone()),
                })
            })
            .clone();
        let name = cluster.value.name.clone();
        self.put(
            ResourceType::Cluster,
            name,
            Some(Resource::Cluster(cluster)),
            update,
        );
    }

    /// Puts again the clusters the class uses of `services`, whose accepted peers changed.
    pub fn refresh_clusters(
        &mut self,
        env: &Env<'_>,
        cache: &mut SharedCache,
        services: &BTreeSet<ObjectKey>,
        update: &mut ClassUpdate,
    ) {
        for svc in services {
            let first = ClusterKey::new(env.settings, svc.clone(), 0, Arc::default());
            let keys: Vec<ClusterKey> = self
                .cluster_refs
                .range(first..)
                .take_while(|(k, _)| k.service == *svc)
                .map(|(k, _)| k.clone())
                .collect();
            for key in keys {
                self.put_cluster(env, cache, &key, update);
            }
        }
    }

    fn unref_cluster(&mut self, key: &ClusterKey, update: &mut ClassUpdate) {
        let Some(count) = self.cluster_refs.get_mut(key) else {
            return;
        };
        *count -= 1;
        if *count > 0 {
            return;
        }
        self.cluster_refs.remove(key);
        self.put(ResourceType::Cluster, key.name.clone(), None, update);
        update.cluster_refs.push((key.clone(), -1));
    }

    /// Stores or removes a resource, remembering what it was before the update began.
    fn put(
        &mut self,
        kind: ResourceType,
        name: Arc<str>,
        resource: Option<Resource>,
        update: &mut ClassUpdate,
    ) {
        let key = ResourceKey { kind, name };
        if update.untracked {
            match resource {
                Some(r) => self.resources.insert(key, r),
                None => self.resources.remove(&key),
            };
            return;
        }
        let previous = match resource {
            Some(r) => self.resources.insert(key.clone(), r),
            None => self.resources.remove(&key),
        };
        update
            .before
            .entry(key)
            .or_insert_with(|| previous.as_ref().map(Resource::hash));
    }
}

/// A split by cluster key, as the model's weighted targets.
fn weighted(clusters: &[(ClusterKey, u32)]) -> Vec<WeightedCluster> {
    clusters
        .iter()
        .map(|(k, w)| WeightedCluster {
            target: Target::Cluster(k.name.clone()),
            weight: *w,
        })
        .collect()
}
