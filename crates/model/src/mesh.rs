//! The index of the mesh and its incremental update. Events mark what they may affect;
//! [`Mesh::apply`] then recomputes only that, in dependency order, and reports which proxies
//! and which of their resources changed.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    mem,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
};

use remora_api::{
    SidecarPolicySpec, Validate, sidecar_policy::SidecarPolicy, traffic_route::TrafficRoute,
};

use crate::{
    class::{Class, ClassKey, Delta, Env, SharedCache},
    config::{
        BindAddress, Cluster, ClusterEndpoints, Direction, Discovery, Endpoint, Forward, Listener,
        ListenerProtocol, ProxyConfig, Resource, ResourceKey, ResourceType, Route, RouteAction,
        RouteConfig, Target, Versioned, VirtualHost, WeightedCluster,
    },
    input::{
        ContainerPort, EndpointSlice, Event, Kind, Labels, MeshSettings, Object, ObjectKey, Pod,
        Protocol, Service,
    },
    policy::{self, Defaults, PolicyState},
    routing::{self, AcceptedRoute, ClusterKey, Problem, RouteState, ServiceRouting},
    selector,
    store::{LabelSets, Links},
};

/// Content hashes of resources, by key: what a proxy or class holds, to diff.
type Versions = BTreeMap<ResourceKey, u64>;

/// Which proxies changed, and which of their resources (added, changed or removed).
///
/// Proxies that changed alike are reported as one group sharing one set of resource keys:
/// a route change that reaches ten thousand proxies costs one set, not ten thousand.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Disjoint groups: every proxy of a group saw exactly the group's resources change,
    /// besides what `own` lists for it.
    pub groups: Vec<Group>,
    /// Changes to a proxy's own resources (its inbound side).
    pub own: BTreeMap<ObjectKey, BTreeSet<ResourceKey>>,
    /// Proxies that no longer exist (deleted, or their pod lost its sidecar).
    pub gone: BTreeSet<ObjectKey>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Group {
    pub proxies: Arc<BTreeSet<ObjectKey>>,
    pub resources: Arc<BTreeSet<ResourceKey>>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.own.is_empty() && self.gone.is_empty()
    }

    /// Every proxy whose config changed (the gone ones excepted).
    pub fn proxies(&self) -> BTreeSet<&ObjectKey> {
        self.groups
            .iter()
            .flat_map(|g| g.proxies.iter())
            .chain(self.own.keys())
            .collect()
    }

    /// The resources of one proxy that changed.
    pub fn resources_of(&self, proxy: &ObjectKey) -> BTreeSet<&ResourceKey> {
        self.groups
            .iter()
            .filter(|g| g.proxies.contains(proxy))
            .flat_map(|g| g.resources.iter())
            .chain(self.own.get(proxy).into_iter().flatten())
            .collect()
    }
}

#[derive(Default)]
struct Dirty {
    /// Services whose routing must be recomputed.
    routing: BTreeSet<ObjectKey>,
    /// Services whose endpoints (or the labels of the pods behind them) changed.
    endpoints: BTreeSet<ObjectKey>,
    /// Pods whose governing policy or inbound config may have changed.
    pods: BTreeSet<ObjectKey>,
    /// Policies whose accepted spec changed, so their classes rebuild.
    policies: BTreeSet<ObjectKey>,
}

struct ProxyState {
    class: ClassKey,
    inbound: BTreeMap<ResourceKey, Resource>,
}

/// A pod as the index keeps it: what the model reads of it, its labels shared with every
/// pod that has the same ones.
struct StoredPod {
    labels: Arc<Labels>,
    ip: Option<IpAddr>,
    sidecar: bool,
    ports: Box<[ContainerPort]>,
}

impl StoredPod {
    fn new(pod: Pod, label_sets: &mut LabelSets) -> StoredPod {
        StoredPod {
            labels: label_sets.intern(&pod.labels),
            ip: pod.ip,
            sidecar: pod.sidecar,
            ports: pod.ports.into(),
        }
    }

    /// Whether `pod` says nothing new (its service account the model never reads).
    fn same(&self, pod: &Pod) -> bool {
        *self.labels == pod.labels
            && self.ip == pod.ip
            && self.sidecar == pod.sidecar
            && *self.ports == *pod.ports
    }
}

struct EndpointsEntry {
    /// How many classes use the cluster: the entry goes when the last one stops.
    users: u32,
    resource: Arc<Versioned<ClusterEndpoints>>,
}

/// The mesh: inputs, and every proxy's config derived from them.
#[derive(Default)]
pub struct Mesh {
    settings: MeshSettings,
    namespaces: BTreeMap<String, Labels>,
    services: BTreeMap<ObjectKey, Service>,
    slices: BTreeMap<ObjectKey, EndpointSlice>,
    /// Service → the names of its slices (in its namespace).
    slices_of: Links<String>,
    /// Pod → the names of the slices listing it (in its namespace).
    pod_slices: Links<String>,
    pods: BTreeMap<ObjectKey, StoredPod>,
    label_sets: LabelSets,
    policies: BTreeMap<ObjectKey, PolicyState>,
    routes: BTreeMap<ObjectKey, RouteState>,
    /// Service → the routes naming it as a parent.
    routes_of: Links<ObjectKey>,

    routing: BTreeMap<ObjectKey, Arc<ServiceRouting>>,
    /// Service → the Services whose routing names it as a backend or mirror.
    referenced_by: Links<ObjectKey>,
    classes: BTreeMap<ClassKey, Class>,
    proxies: BTreeMap<ObjectKey, ProxyState>,
    endpoints: BTreeMap<ClusterKey, EndpointsEntry>,
    cache: SharedCache,
    dirty: Dirty,
}

impl Mesh {
    pub fn new(settings: MeshSettings) -> Mesh {
        Mesh {
            settings,
            ..Mesh::default()
        }
    }

    pub fn settings(&self) -> &MeshSettings {
        &self.settings
    }

    /// Applies a batch of events and returns what changed. A batch (the initial list of a
    /// watch, or a debounced burst) is cheaper than the same events one by one.
    pub fn apply(&mut self, events: impl IntoIterator<Item = Event>) -> Changes {
        for event in events {
            match event {
                Event::Upsert(object) => self.upsert(object),
                Event::Delete(kind, key) => self.delete(kind, &key),
            }
        }
        self.flush()
    }

    /// The proxies the mesh knows, in order.
    pub fn proxies(&self) -> impl Iterator<Item = &ObjectKey> {
        self.proxies.keys()
    }

    /// Everything one proxy runs.
    pub fn proxy_config(&self, proxy: &ObjectKey) -> Option<ProxyConfig> {
        let state = self.proxies.get(proxy)?;
        let class = self.classes.get(&state.class)?;
        let mut resources = class.resources.clone();
        resources.extend(state.inbound.iter().map(|(k, v)| (k.clone(), v.clone())));
        for key in class.cluster_refs.keys() {
            if let Some(e) = self.endpoints.get(key) {
                resources.insert(
                    ResourceKey {
                        kind: ResourceType::Endpoints,
                        name: e.resource.value.cluster.clone(),
                    },
                    Resource::Endpoints(e.resource.clone()),
                );
            }
        }
        Some(ProxyConfig { resources })
    }

    /// The class a proxy belongs to (its namespace and governing policy): every proxy of one
    /// class has the same [`Mesh::class_config`].
    pub fn proxy_class(&self, proxy: &ObjectKey) -> Option<(&str, Option<&ObjectKey>)> {
        let class = &self.proxies.get(proxy)?.class;
        Some((&class.namespace, class.policy.as_ref()))
    }

    /// The part of a proxy's config its whole class shares: outbound listeners, route
    /// configs and clusters, and the endpoints of those clusters.
    pub fn class_config(&self, proxy: &ObjectKey) -> Option<ProxyConfig> {
        self.class_config_of(proxy, &ResourceType::ALL)
    }

    /// The resources of some kinds only of [`Mesh::class_config`]: after a change that
    /// touched a few route configs, those, not the class's thousands of clusters.
    pub fn class_config_of(
        &self,
        proxy: &ObjectKey,
        kinds: &[ResourceType],
    ) -> Option<ProxyConfig> {
        let class = self.classes.get(&self.proxies.get(proxy)?.class)?;
        let mut resources = BTreeMap::new();
        for &kind in kinds {
            if kind == ResourceType::Endpoints {
                for key in class.cluster_refs.keys() {
                    if let Some(e) = self.endpoints.get(key) {
                        resources.insert(
                            ResourceKey {
                                kind,
                                name: e.resource.value.cluster.clone(),
                            },
                            Resource::Endpoints(e.resource.clone()),
                        );
                    }
                }
                continue;
            }
            // Keys sort by kind first, so one kind is one range.
            let first = ResourceKey {
                kind,
                name: Arc::from(""),
            };
            resources.extend(
                class
                    .resources
                    .range(first..)
                    .take_while(|(k, _)| k.kind == kind)
                    .map(|(k, r)| (k.clone(), r.clone())),
            );
        }
        Some(ProxyConfig { resources })
    }

    /// The part of a proxy's config that is its own: what brings traffic to its application.
    pub fn own_config(&self, proxy: &ObjectKey) -> Option<ProxyConfig> {
        let state = self.proxies.get(proxy)?;
        Some(ProxyConfig {
            resources: state.inbound.clone(),
        })
    }

    /// The policy governing a proxy.
    pub fn proxy_policy(&self, proxy: &ObjectKey) -> Option<&ObjectKey> {
        self.proxies.get(proxy)?.class.policy.as_ref()
    }

    /// The policy that would govern a pod with `labels` in `namespace`. The pod need not
    /// exist: the injector asks while the pod is being created, the rollout for a workload's
    /// pod template.
    pub fn policy_for(&self, namespace: &str, labels: &Labels) -> Option<&ObjectKey> {
        policy::resolve(
            &self.settings,
            self.policies.values(),
            namespace,
            labels,
            self.namespaces.get(namespace),
        )
        .map(|p| &p.key)
    }

    /// The spec of a policy that is in effect: its last one that passed validation.
    pub fn policy_spec(&self, policy: &ObjectKey) -> Option<&SidecarPolicySpec> {
        self.policies.get(policy)?.accepted.as_ref()
    }

    /// A namespace's labels, if the model has seen the namespace.
    pub fn namespace_labels(&self, namespace: &str) -> Option<&Labels> {
        self.namespaces.get(namespace)
    }

    /// The `metadata.generation` of the route the model holds: what a status computed
    /// from the model describes.
    pub fn route_generation(&self, route: &ObjectKey) -> Option<i64> {
        self.routes.get(route)?.generation
    }

    /// The `metadata.generation` of the policy the model holds.
    pub fn policy_generation(&self, policy: &ObjectKey) -> Option<i64> {
        self.policies.get(policy)?.generation
    }

    /// Whether the model holds this route or policy at all (status waits until it does).
    pub fn has_route(&self, route: &ObjectKey) -> bool {
        self.routes.contains_key(route)
    }

    pub fn has_policy(&self, policy: &ObjectKey) -> bool {
        self.policies.contains_key(policy)
    }

    /// Whether a pod with a sidecar is in the mesh.
    pub fn has_proxy(&self, proxy: &ObjectKey) -> bool {
        self.proxies.contains_key(proxy)
    }

    /// Whether the model holds this pod, with or without a sidecar.
    pub fn has_pod(&self, pod: &ObjectKey) -> bool {
        self.pods.contains_key(pod)
    }

    /// Validation problems of a route's latest spec (the previous valid spec stays in effect).
    pub fn route_validation(&self, route: &ObjectKey) -> Option<&[remora_api::FieldError]> {
        self.routes.get(route).map(|r| r.problems.as_slice())
    }

    /// Validation problems of a policy's latest spec (the previous valid spec stays in effect).
    pub fn policy_validation(&self, policy: &ObjectKey) -> Option<&[remora_api::FieldError]> {
        self.policies.get(policy).map(|p| p.problems.as_slice())
    }

    /// Resolution problems of a route: missing backends, conflicts, and subsets that select
    /// no ready endpoint.
    pub fn route_problems(&self, route: &ObjectKey) -> Vec<Problem> {
        let Some(state) = self.routes.get(route) else {
            return Vec::new();
        };
        let mut out = BTreeSet::new();
        for (parent, _) in state.parents() {
            let Some(r) = self.routing.get(&parent) else {
                out.insert(Problem::BackendNotFound {
                    path: "spec.parentRefs".into(),
                    service: parent,
                });
                continue;
            };
            out.extend(
                r.problems
                    .iter()
                    .filter(|(k, _)| k == route)
                    .map(|(_, p)| p.clone()),
            );
            for (port, governing) in &r.governed_by {
                if governing != route {
                    continue;
                }
                let own = ClusterKey::new(&self.settings, parent.clone(), *port, Arc::default());
                for key in r
                    .clusters
                    .iter()
                    .filter(|k| !k.subset.is_empty() && **k != own)
                {
                    // Clusters no proxy uses have no entry; status still wants the answer.
                    let empty = match self.endpoints.get(key) {
                        Some(e) => e.resource.value.endpoints.is_empty(),
                        None => self.cluster_endpoints(key).value.endpoints.is_empty(),
                    };
                    if empty {
                        out.insert(Problem::SubsetEmpty {
                            service: key.service.clone(),
                            subset: (*key.subset).clone(),
                        });
                    }
                }
            }
        }
        out.into_iter().collect()
    }

    /// Proxies whose config a route shapes: those that reach one of its parent Services.
    pub fn route_proxies(&self, route: &ObjectKey) -> BTreeSet<ObjectKey> {
        let Some(state) = self.routes.get(route) else {
            return BTreeSet::new();
        };
        let parents: Vec<ObjectKey> = state.parents().map(|(p, _)| p).collect();
        self.classes
            .values()
            .filter(|c| {
                parents
                    .iter()
                    .any(|p| c.reaches(p) && self.routing.contains_key(p))
            })
            .flat_map(|c| c.members.iter().cloned())
            .collect()
    }

    fn upsert(&mut self, object: Object) {
        match object {
            Object::Namespace(ns) => {
                if self.namespaces.get(&ns.name) != Some(&ns.labels) {
                    self.mark_namespace_pods(&ns.name);
                    self.namespaces.insert(ns.name, ns.labels);
                }
            }
            Object::Service(svc) => {
                let key = svc.key();
                if self.services.get(&key) != Some(&svc) {
                    self.services.insert(key.clone(), svc);
                    self.mark_service(&key);
                }
            }
            Object::EndpointSlice(slice) => {
                let key = ObjectKey::new(&slice.namespace, &slice.name);
                let old = self.slices.get(&key);
                if old == Some(&slice) {
                    return;
                }
                let service = ObjectKey::new(&slice.namespace, &slice.service);
                // Readiness and addresses change far more often than the pods a slice lists,
                // and then its relations stay as they are.
                let same_pods = old.is_some_and(|o| {
                    o.service == slice.service
                        && o.endpoints
                            .iter()
                            .map(|e| &e.pod)
                            .eq(slice.endpoints.iter().map(|e| &e.pod))
                });
                if !same_pods {
                    self.remove_slice(&key);
                    for pod in slice.endpoints.iter().filter_map(|e| e.pod.as_ref()) {
                        self.pod_slices
                            .insert(ObjectKey::new(&slice.namespace, pod), slice.name.clone());
                    }
                    self.slices_of.insert(service.clone(), slice.name.clone());
                }
                self.dirty.endpoints.insert(service);
                self.slices.insert(key, slice);
            }
            Object::Pod(pod) => {
                let key = ObjectKey::new(&pod.namespace, &pod.name);
                let old = self.pods.get(&key);
                if old.is_some_and(|o| o.same(&pod)) {
                    return;
                }
                if old.is_none_or(|o| *o.labels != pod.labels) {
                    self.mark_pod_endpoints(&key);
                }
                if pod.sidecar || self.proxies.contains_key(&key) {
                    self.dirty.pods.insert(key.clone());
                }
                let pod = StoredPod::new(pod, &mut self.label_sets);
                self.pods.insert(key, pod);
            }
            Object::SidecarPolicy(policy) => self.upsert_policy(*policy),
            Object::TrafficRoute(route) => self.upsert_route(*route),
        }
    }

    fn delete(&mut self, kind: Kind, key: &ObjectKey) {
        match kind {
            Kind::Namespace => {
                if self.namespaces.remove(&key.name).is_some() {
                    self.mark_namespace_pods(&key.name);
                }
            }
            Kind::Service => {
                if self.services.remove(key).is_some() {
                    self.mark_service(key);
                }
            }
            Kind::EndpointSlice => self.remove_slice(key),
            Kind::Pod => {
                if self.pods.remove(key).is_some() {
                    self.mark_pod_endpoints(key);
                    if self.proxies.contains_key(key) {
                        self.dirty.pods.insert(key.clone());
                    }
                }
            }
            Kind::SidecarPolicy => {
                if self.policies.remove(key).is_some() {
                    self.mark_policy_scope(key);
                }
            }
            Kind::TrafficRoute => {
                if let Some(old) = self.routes.remove(key) {
                    self.mark_route_parents(&old);
                    for (parent, _) in old.parents() {
                        self.routes_of.remove(&parent, key);
                    }
                }
            }
        }
    }

    fn upsert_policy(&mut self, policy: SidecarPolicy) {
        let key = ObjectKey::new(
            policy.metadata.namespace.clone().unwrap_or_default(),
            policy.metadata.name.clone().unwrap_or_default(),
        );
        let previous = self.policies.get(&key).and_then(|p| p.accepted.clone());
        let (accepted, problems) = match policy.spec.validate() {
            Ok(()) => (Some(policy.spec), Vec::new()),
            // A broken edit never replaces a working policy: the last valid spec stays.
            Err(e) => (previous.clone(), e.0),
        };
        let changed = accepted != previous || !self.policies.contains_key(&key);
        self.policies.insert(
            key.clone(),
            PolicyState {
                key: key.clone(),
                created: policy.metadata.creation_timestamp,
                generation: policy.metadata.generation,
                accepted,
                problems,
            },
        );
        if changed {
            self.mark_policy_scope(&key);
        }
    }

    fn upsert_route(&mut self, route: TrafficRoute) {
        let key = ObjectKey::new(
            route.metadata.namespace.clone().unwrap_or_default(),
            route.metadata.name.clone().unwrap_or_default(),
        );
        let previous = self.routes.get(&key).and_then(|r| r.accepted.clone());
        let (accepted, problems) = match route.spec.validate() {
            Ok(()) => (
                Some(AcceptedRoute::new(&key.namespace, &route.spec)),
                Vec::new(),
            ),
            // A broken edit never replaces a working route: the last valid spec stays.
            Err(e) => (previous.clone(), e.0),
        };
        let state = RouteState {
            key: key.clone(),
            created: route.metadata.creation_timestamp,
            generation: route.metadata.generation,
            accepted,
            problems,
        };
        if let Some(old) = self.routes.get(&key) {
            if old.accepted == state.accepted && old.created == state.created {
                self.routes.insert(key, state);
                return;
            }
            let old = old.clone();
            self.mark_route_parents(&old);
            for (parent, _) in old.parents() {
                self.routes_of.remove(&parent, &key);
            }
        }
        for (parent, _) in state.parents() {
            self.routes_of.insert(parent, key.clone());
        }
        self.mark_route_parents(&state);
        self.routes.insert(key, state);
    }

    fn remove_slice(&mut self, key: &ObjectKey) {
        let Some(old) = self.slices.remove(key) else {
            return;
        };
        let service = ObjectKey::new(&old.namespace, &old.service);
        self.slices_of.remove(&service, &old.name);
        for pod in old.endpoints.iter().filter_map(|e| e.pod.as_ref()) {
            self.pod_slices
                .remove(&ObjectKey::new(&old.namespace, pod), &old.name);
        }
        self.dirty.endpoints.insert(service);
    }

    fn mark_service(&mut self, key: &ObjectKey) {
        self.dirty.routing.insert(key.clone());
        self.dirty.endpoints.insert(key.clone());
        self.dirty
            .routing
            .extend(self.referenced_by.of(key).cloned());
    }

    fn mark_route_parents(&mut self, route: &RouteState) {
        for (parent, _) in route.parents() {
            self.dirty.routing.insert(parent);
        }
    }

    fn mark_pod_endpoints(&mut self, pod: &ObjectKey) {
        for slice in self.pod_slices.of(pod) {
            if let Some(s) = self.slices.get(&ObjectKey::new(&pod.namespace, slice)) {
                self.dirty
                    .endpoints
                    .insert(ObjectKey::new(&s.namespace, &s.service));
            }
        }
    }

    fn mark_namespace_pods(&mut self, namespace: &str) {
        let pods = self
            .pods
            .range(ObjectKey::new(namespace, "")..)
            .take_while(|(k, _)| k.namespace == namespace);
        self.dirty
            .pods
            .extend(pods.filter(|(_, p)| p.sidecar).map(|(k, _)| k.clone()));
        self.dirty.pods.extend(
            self.proxies
                .range(ObjectKey::new(namespace, "")..)
                .take_while(|(k, _)| k.namespace == namespace)
                .map(|(k, _)| k.clone()),
        );
    }

    fn mark_policy_scope(&mut self, policy: &ObjectKey) {
        self.dirty.policies.insert(policy.clone());
        if policy.namespace == self.settings.root_namespace {
            let all: Vec<String> = self
                .pods
                .keys()
                .map(|p| p.namespace.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            for ns in all {
                self.mark_namespace_pods(&ns);
            }
        } else {
            self.mark_namespace_pods(&policy.namespace.clone());
        }
    }

    fn defaults_for(&self, policy: Option<&ObjectKey>) -> Arc<Defaults> {
        let spec = policy
            .and_then(|p| self.policies.get(p))
            .and_then(|p| p.accepted.as_ref());
        Arc::new(spec.map(Defaults::from_spec).unwrap_or_default())
    }

    fn flush(&mut self) -> Changes {
        let dirty = mem::take(&mut self.dirty);
        let mut class_changes: BTreeMap<ClassKey, BTreeSet<ResourceKey>> = BTreeMap::new();
        // Net change in the number of classes using each cluster. A class may drop a cluster
        // for one Service and take it again for another in the same update; only the sum
        // counts, so an entry still in use is never dropped and rebuilt on the way.
        let mut cluster_users: HashMap<ClusterKey, i32> = HashMap::new();

        // Proxies that may move: remember their class and their own resources, and what the
        // classes they are in look like now, to diff afterwards.
        let before: BTreeMap<ObjectKey, Option<(ClassKey, Versions)>> = dirty
            .pods
            .iter()
            .map(|p| {
                let state = self.proxies.get(p);
                (
                    p.clone(),
                    state.map(|s| (s.class.clone(), versions(&s.inbound))),
                )
            })
            .collect();
        let class_before: BTreeMap<ClassKey, Versions> = before
            .values()
            .flatten()
            .map(|(c, _)| c)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|c| (c.clone(), self.class_versions(c)))
            .collect();

        // 1. Routing of the Services that may have changed.
        let mut changed_services = BTreeSet::new();
        for svc in &dirty.routing {
            let new = self.services.get(svc).map(|service| {
                let routes: Vec<&RouteState> = self
                    .routes_of
                    .of(svc)
                    .filter_map(|r| self.routes.get(r))
                    .filter(|r| r.accepted.is_some())
                    .collect();
                routing::resolve(
                    &self.settings,
                    service,
                    &routes,
                    &self.services,
                    &mut self.label_sets,
                )
            });
            let old = self.routing.get(svc);
            if old.map(|o| o.hash) == new.as_ref().map(|n| n.hash) && old.is_some() == new.is_some()
            {
                continue;
            }
            if let Some(old) = self.routing.remove(svc) {
                for b in &old.references {
                    self.referenced_by.remove(b, svc);
                }
            }
            self.cache.forget(svc);
            if let Some(new) = new {
                for b in &new.references {
                    self.referenced_by.insert(b.clone(), svc.clone());
                }
                self.routing.insert(svc.clone(), Arc::new(new));
            }
            changed_services.insert(svc.clone());
        }

        // 2. Policies whose spec changed: their classes rebuild from scratch below.
        let rebuild: BTreeSet<ClassKey> = self
            .classes
            .keys()
            .filter(|k| {
                k.policy
                    .as_ref()
                    .is_some_and(|p| dirty.policies.contains(p))
            })
            .cloned()
            .collect();

        // 3. Proxies: the class each belongs to now, and its inbound config.
        let mut new_classes = BTreeSet::new();
        let mut left: BTreeSet<ClassKey> = BTreeSet::new();
        for key in &dirty.pods {
            let pod = self.pods.get(key).filter(|p| p.sidecar);
            let new_class = pod.map(|pod| ClassKey {
                namespace: key.namespace.clone(),
                policy: policy::resolve(
                    &self.settings,
                    self.policies.values(),
                    &key.namespace,
                    &pod.labels,
                    self.namespaces.get(&key.namespace),
                )
                .map(|p| p.key.clone()),
            });
            let old_class = self.proxies.get(key).map(|p| p.class.clone());
            if old_class != new_class
                && let Some(old) = &old_class
                && let Some(c) = self.classes.get_mut(old)
            {
                Arc::make_mut(&mut c.members).remove(key);
                left.insert(old.clone());
            }
            match (pod, new_class) {
                (Some(pod), Some(class_key)) => {
                    if !self.classes.contains_key(&class_key) {
                        let defaults = self.defaults_for(class_key.policy.as_ref());
                        self.classes
                            .insert(class_key.clone(), Class::new(class_key.clone(), defaults));
                        new_classes.insert(class_key.clone());
                    }
                    let class = self.classes.get_mut(&class_key).expect("inserted above");
                    Arc::make_mut(&mut class.members).insert(key.clone());
                    let inbound = inbound_resources(pod, &class.defaults);
                    self.proxies.insert(
                        key.clone(),
                        ProxyState {
                            class: class_key,
                            inbound,
                        },
                    );
                }
                _ => {
                    self.proxies.remove(key);
                }
            }
        }

        // 4. Classes: drop the empty ones, build new ones, rebuild those whose policy changed,
        //    and apply changed Services to the rest.
        let protocols = |k: &ClusterKey| {
            self.services
                .get(&k.service)
                .and_then(|s| s.port(k.port))
                .map(|p| p.protocol)
        };
        let env = Env {
            settings: &self.settings,
            protocols: &protocols,
        };
        for key in &left {
            if self.classes.get(key).is_some_and(|c| c.members.is_empty()) {
                let mut class = self.classes.remove(key).expect("present");
                // The class is gone: only the clusters it released matter.
                let mut delta = Delta::untracked();
                class.clear(&env, &mut self.cache, &mut delta);
                for (c, d) in delta.cluster_refs {
                    *cluster_users.entry(c).or_default() += d;
                }
            }
        }
        for (key, class) in self.classes.iter_mut() {
            // Every member of a new class joined it in this update and is reported through
            // the difference to the class it left, so its class-wide changes go unused.
            let new = new_classes.contains(key);
            let mut delta = if new {
                Delta::untracked()
            } else {
                Delta::default()
            };
            if new_classes.contains(key) || rebuild.contains(key) {
                if rebuild.contains(key) && !new_classes.contains(key) {
                    class.clear(&env, &mut self.cache, &mut delta);
                    let defaults = Arc::new(
                        key.policy
                            .as_ref()
                            .and_then(|p| self.policies.get(p))
                            .and_then(|p| p.accepted.as_ref())
                            .map(Defaults::from_spec)
                            .unwrap_or_default(),
                    );
                    *class = Class::rebuilt_from(class, defaults);
                }
                for (svc, routing) in &self.routing {
                    class.set_service(&env, &mut self.cache, svc, Some(routing), &mut delta);
                }
            } else {
                for svc in &changed_services {
                    class.set_service(
                        &env,
                        &mut self.cache,
                        svc,
                        self.routing.get(svc),
                        &mut delta,
                    );
                }
            }
            class.finish(&mut delta);
            if !new {
                let changed = delta.changed(class);
                if !changed.is_empty() {
                    class_changes
                        .entry(key.clone())
                        .or_default()
                        .extend(changed);
                }
            }
            for (c, d) in delta.cluster_refs {
                *cluster_users.entry(c).or_default() += d;
            }
        }

        // 5. Endpoints: follow which classes use each cluster, then recompute the ones whose
        //    Service's endpoints changed.
        let mut recompute: BTreeSet<ClusterKey> = BTreeSet::new();
        for (cluster, d) in cluster_users {
            match self.endpoints.get_mut(&cluster) {
                Some(e) => {
                    let users = i64::from(e.users) + i64::from(d);
                    debug_assert!(users >= 0, "more classes released {cluster:?} than used it");
                    if users <= 0 {
                        self.endpoints.remove(&cluster);
                    } else {
                        e.users = u32::try_from(users).unwrap_or(u32::MAX);
                    }
                }
                None if d > 0 => {
                    let resource = self.cluster_endpoints(&cluster);
                    self.endpoints.insert(
                        cluster,
                        EndpointsEntry {
                            users: d.unsigned_abs(),
                            resource,
                        },
                    );
                }
                None => {}
            }
        }
        for svc in &dirty.endpoints {
            let start = ClusterKey::new(&self.settings, svc.clone(), 0, Arc::default());
            recompute.extend(
                self.endpoints
                    .range(start..)
                    .take_while(|(k, _)| k.service == *svc)
                    .map(|(k, _)| k.clone()),
            );
        }
        for cluster in recompute {
            let resource = self.cluster_endpoints(&cluster);
            let entry = self.endpoints.get_mut(&cluster).expect("listed above");
            if entry.resource.hash != resource.hash {
                let rkey = ResourceKey {
                    kind: ResourceType::Endpoints,
                    name: resource.value.cluster.clone(),
                };
                entry.resource = resource;
                // Few clusters change at once and classes are few, so asking each class
                // beats keeping a list of users per cluster in memory.
                for class in self.classes.values() {
                    if class.cluster_refs.contains_key(&cluster) {
                        class_changes
                            .entry(class.key.clone())
                            .or_default()
                            .insert(rkey.clone());
                    }
                }
            }
        }

        // 6. Report: class-wide changes for the members that stayed; for proxies that joined
        //    a class, the difference between the class they left (if any) and the one they
        //    joined, once per such pair; then each dirty proxy's own resources.
        let mut changes = Changes::default();
        let mut moved: BTreeMap<(Option<&ClassKey>, &ClassKey), BTreeSet<ObjectKey>> =
            BTreeMap::new();
        for (pod, was) in &before {
            let Some(now) = self.proxies.get(pod) else {
                if was.is_some() {
                    changes.gone.insert(pod.clone());
                }
                continue;
            };
            let old_class = was.as_ref().map(|(c, _)| c);
            if old_class != Some(&now.class) {
                moved
                    .entry((old_class, &now.class))
                    .or_default()
                    .insert(pod.clone());
            }
            let empty = BTreeMap::new();
            let own = diff(
                was.as_ref().map_or(&empty, |(_, v)| v),
                &versions(&now.inbound),
            );
            if !own.is_empty() {
                changes.own.insert(pod.clone(), own);
            }
        }
        let joined: BTreeSet<&ObjectKey> = moved.values().flatten().collect();
        for (class_key, keys) in class_changes {
            let Some(class) = self.classes.get(&class_key) else {
                continue;
            };
            let proxies = if class.members.iter().any(|m| joined.contains(m)) {
                Arc::new(
                    class
                        .members
                        .iter()
                        .filter(|m| !joined.contains(m))
                        .cloned()
                        .collect(),
                )
            } else {
                class.members.clone()
            };
            if !proxies.is_empty() {
                changes.groups.push(Group {
                    proxies,
                    resources: Arc::new(keys),
                });
            }
        }
        for ((from, to), proxies) in moved {
            let resources = match from.and_then(|c| class_before.get(c)) {
                Some(was) => diff(was, &self.class_versions(to)),
                // New proxies get everything: no hashes to compare.
                None => self.class_resources(to).map(|(k, _)| k).collect(),
            };
            if !resources.is_empty() {
                changes.groups.push(Group {
                    proxies: Arc::new(proxies),
                    resources: Arc::new(resources),
                });
            }
        }
        changes
    }

    /// What a class's proxies hold besides their own resources, with content hashes.
    fn class_versions(&self, key: &ClassKey) -> Versions {
        self.class_resources(key).collect()
    }

    /// A class's resources with their hashes (endpoints last).
    fn class_resources(&self, key: &ClassKey) -> impl Iterator<Item = (ResourceKey, u64)> {
        let class = self.classes.get(key);
        let endpoints = class
            .into_iter()
            .flat_map(|c| c.cluster_refs.keys())
            .filter_map(|cluster| {
                let e = self.endpoints.get(cluster)?;
                let key = ResourceKey {
                    kind: ResourceType::Endpoints,
                    name: e.resource.value.cluster.clone(),
                };
                Some((key, e.resource.hash))
            });
        class
            .into_iter()
            .flat_map(|c| c.resources.iter())
            .map(|(k, r)| (k.clone(), r.hash()))
            .chain(endpoints)
    }

    /// The ready endpoints of a cluster: its Service's slices, the port matching by name,
    /// narrowed to the pods whose labels fit the subset.
    fn cluster_endpoints(&self, key: &ClusterKey) -> Arc<Versioned<ClusterEndpoints>> {
        let name = key.name.clone();
        let mut endpoints = BTreeSet::new();
        let service_port = self
            .services
            .get(&key.service)
            .and_then(|s| s.port(key.port));
        if let Some(sp) = service_port {
            for slice in self
                .slices_of
                .of(&key.service)
                .filter_map(|s| self.slices.get(&ObjectKey::new(&key.service.namespace, s)))
            {
                let Some(port) = slice
                    .ports
                    .iter()
                    .find(|p| p.name == sp.name)
                    .map(|p| p.port)
                else {
                    continue;
                };
                for e in slice.endpoints.iter().filter(|e| e.ready) {
                    if !key.subset.is_empty() {
                        let labels = e
                            .pod
                            .as_ref()
                            .and_then(|p| self.pods.get(&ObjectKey::new(&slice.namespace, p)));
                        if !labels
                            .is_some_and(|p| selector::subset_contains(&key.subset, &p.labels))
                        {
                            continue;
                        }
                    }
                    endpoints.insert(Endpoint {
                        address: SocketAddr::new(e.address, port),
                        zone: e.zone.clone(),
                    });
                }
            }
        }
        Versioned::new(ClusterEndpoints {
            cluster: name,
            endpoints: endpoints.into_iter().collect(),
        })
    }
}

impl Class {
    /// An empty class with new defaults and the members of `old`.
    fn rebuilt_from(old: &Class, defaults: Arc<Defaults>) -> Class {
        let mut class = Class::new(old.key.clone(), defaults);
        class.members = old.members.clone();
        class
    }
}

fn versions(resources: &BTreeMap<ResourceKey, Resource>) -> Versions {
    resources
        .iter()
        .map(|(k, r)| (k.clone(), r.hash()))
        .collect()
}

/// The keys added, changed or removed between two versioned sets.
fn diff(old: &Versions, new: &Versions) -> BTreeSet<ResourceKey> {
    let mut out: BTreeSet<ResourceKey> = new
        .iter()
        .filter(|(k, h)| old.get(*k) != Some(*h))
        .map(|(k, _)| k.clone())
        .collect();
    out.extend(old.keys().filter(|k| !new.contains_key(*k)).cloned());
    out
}

/// The listeners, routes and clusters that bring traffic to the pod's own application.
fn inbound_resources(pod: &StoredPod, defaults: &Defaults) -> BTreeMap<ResourceKey, Resource> {
    let mut out = BTreeMap::new();
    let Some(ip) = pod.ip else {
        return out;
    };
    let mut ports: Vec<_> = pod
        .ports
        .iter()
        .filter(|p| defaults.intercepts_inbound(p.port))
        .collect();
    ports.sort_by_key(|p| p.port);
    ports.dedup_by_key(|p| p.port);
    for p in ports {
        let name: Arc<str> = format!("inbound|{}", p.port).into();
        let cluster = Cluster {
            name: name.clone(),
            connect_timeout: defaults.connect_timeout,
            discovery: Discovery::Static(vec![SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                p.port,
            )]),
            outlier_detection: None,
            circuit_breaker: None,
            http2: p.protocol == Protocol::Http2,
        };
        let target = vec![WeightedCluster {
            target: Target::Cluster(name.clone()),
            weight: 1,
        }];
        let protocol = if p.protocol.is_http() {
            let route = RouteConfig {
                name: name.clone(),
                virtual_hosts: [Versioned::new(VirtualHost {
                    name: "inbound".into(),
                    domains: vec!["*".into()],
                    routes: vec![Route {
                        name: "inbound".into(),
                        matches: vec![],
                        action: RouteAction::Forward(Forward {
                            clusters: target,
                            timeout: None,
                            retry: None,
                            rewrite: None,
                            mirrors: vec![],
                        }),
                        request_headers: Default::default(),
                        response_headers: Default::default(),
                        fault: None,
                    }],
                })]
                .into_iter()
                .collect(),
            };
            out.insert(
                ResourceKey {
                    kind: ResourceType::RouteConfig,
                    name: name.clone(),
                },
                Resource::RouteConfig(Versioned::new(route)),
            );
            ListenerProtocol::Http {
                route_config: name.clone(),
            }
        } else {
            ListenerProtocol::Tcp { clusters: target }
        };
        let listener = Listener {
            name: name.clone(),
            direction: Direction::Inbound,
            address: BindAddress::Ip(ip),
            port: p.port,
            protocol,
            access_log: defaults.access_log,
        };
        out.insert(
            ResourceKey {
                kind: ResourceType::Listener,
                name: name.clone(),
            },
            Resource::Listener(Versioned::new(listener)),
        );
        out.insert(
            ResourceKey {
                kind: ResourceType::Cluster,
                name,
            },
            Resource::Cluster(Versioned::new(cluster)),
        );
    }
    out
}
