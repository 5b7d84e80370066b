//! The index: the objects the model reads, as it stores them, and the relations between
//! them. Plain data: applying an event reports what it touched, and the mesh decides what
//! that makes dirty. Nothing here is derived config.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use remora_api::{
    TrafficRouteSpec, Validate,
    gateway::{Converted, PathMap},
    sidecar_policy::{MtlsMode, SidecarPolicy},
    spiffe::SpiffeId,
};

use crate::{
    access::{self, AccessPolicyState},
    config::Authorization,
    config::{ClusterEndpoints, Endpoint, Versioned},
    input::{
        ContainerPort, Endpoint as SliceEndpoint, EndpointSlice, Event, Kind, Labels, MeshSettings,
        Object, ObjectKey, Pod, Protocol, ReferenceGrant, Service,
    },
    policy::{self, Defaults, InboundPorts, PolicyState},
    routing::{self, AcceptedRoute, ClusterKey, RouteKey, RouteKind, RouteState, ServiceRoutings},
    selector,
    store::{LabelSets, Links},
};

/// Whether a pod takes mutual TLS on a port (workload identity, its mode, its interception).
pub(crate) type TakesMtls<'a> = &'a dyn Fn(&ObjectKey, u16) -> bool;

/// What applying an event changed, for the mesh to mark what depends on it.
#[derive(Debug)]
pub(crate) enum Touched {
    /// A namespace's labels, which decide the policy governing its pods.
    Namespace(String),
    /// A Service: its own routing and endpoints, and the routing of those naming it.
    Service(ObjectKey),
    /// The endpoints of these Services (one of their slices changed).
    Endpoints(Vec<ObjectKey>),
    /// A pod, and the Services whose subsets its labels may change (`sidecar`: it carries
    /// one now).
    Pod {
        key: ObjectKey,
        sidecar: bool,
        endpoints: Vec<ObjectKey>,
    },
    /// A policy's accepted spec, or whether it exists.
    Policy(ObjectKey),
    /// The routing of these Services (the parents of a route, before and after).
    Routing(Vec<ObjectKey>),
    /// The grants of a namespace, which decide whether routes elsewhere may send to its
    /// Services.
    Grants(String),
    /// An access policy's accepted spec, or whether it exists.
    Access(ObjectKey),
}

/// A pod as the index keeps it: what the model reads of it, its labels shared with every
/// pod that has the same ones.
pub(crate) struct StoredPod {
    pub labels: Arc<Labels>,
    pub ip: Option<IpAddr>,
    pub sidecar: bool,
    pub ports: Box<[ContainerPort]>,
    /// What its certificate names, with workload identity.
    pub service_account: Box<str>,
}

impl StoredPod {
    fn new(pod: Pod, label_sets: &mut LabelSets) -> StoredPod {
        StoredPod {
            labels: label_sets.intern(&pod.labels),
            ip: pod.ip,
            sidecar: pod.sidecar,
            ports: pod.ports.into(),
            service_account: pod.service_account.into(),
        }
    }

    /// Whether `pod` says nothing new.
    fn same(&self, pod: &Pod) -> bool {
        *self.labels == pod.labels
            && self.ip == pod.ip
            && self.sidecar == pod.sidecar
            && *self.ports == *pod.ports
            && *self.service_account == *pod.service_account
    }
}

/// The inputs of the mesh.
#[derive(Default)]
pub(crate) struct Index {
    pub settings: MeshSettings,
    pub namespaces: BTreeMap<String, Labels>,
    pub services: BTreeMap<ObjectKey, Service>,
    slices: BTreeMap<ObjectKey, EndpointSlice>,
    /// Service → the names of its slices (in its namespace).
    slices_of: Links<String>,
    /// Pod → the names of the slices listing it (in its namespace).
    pod_slices: Links<String>,
    pub pods: BTreeMap<ObjectKey, StoredPod>,
    label_sets: LabelSets,
    pub policies: BTreeMap<ObjectKey, PolicyState>,
    pub routes: BTreeMap<RouteKey, RouteState>,
    /// Service → the routes naming it as a parent.
    routes_of: Links<RouteKey>,
    pub grants: BTreeMap<ObjectKey, ReferenceGrant>,
    pub access: BTreeMap<ObjectKey, AccessPolicyState>,
}

impl Index {
    pub fn new(settings: MeshSettings) -> Index {
        Index {
            settings,
            ..Index::default()
        }
    }

    /// Stores what an event says; `None` when it says nothing new.
    pub fn apply(&mut self, event: Event) -> Option<Touched> {
        match event {
            Event::Upsert(object) => self.upsert(object),
            Event::Delete(kind, key) => self.delete(kind, &key),
        }
    }

    fn upsert(&mut self, object: Object) -> Option<Touched> {
        match object {
            Object::Namespace(ns) => {
                if self.namespaces.get(&ns.name) == Some(&ns.labels) {
                    return None;
                }
                self.namespaces.insert(ns.name.clone(), ns.labels);
                Some(Touched::Namespace(ns.name))
            }
            Object::Service(svc) => {
                let key = svc.key();
                if self.services.get(&key) == Some(&svc) {
                    return None;
                }
                self.services.insert(key.clone(), svc);
                Some(Touched::Service(key))
            }
            Object::EndpointSlice(slice) => self.upsert_slice(slice),
            Object::Pod(pod) => self.upsert_pod(pod),
            Object::SidecarPolicy(policy) => self.upsert_policy(*policy),
            Object::AccessPolicy(policy) => self.upsert_access(*policy),
            Object::TrafficRoute(route) => {
                let route = *route;
                let key = RouteKey::traffic(ObjectKey::from_meta(&route.metadata));
                let checked = route.spec.validate_with(&self.settings.validation);
                let checked = checked.map(|()| (route.spec, None)).map_err(|e| e.0);
                self.upsert_route(key, &route.metadata, checked)
            }
            Object::HttpRoute(route) => {
                let (meta, spec) = (&route.metadata, &route.spec);
                let checked = spec
                    .has_service_parent()
                    .then(|| spec.to_internal(self.validation()));
                self.upsert_gateway_route(RouteKind::HttpRoute, meta, checked)
            }
            Object::GrpcRoute(route) => {
                let (meta, spec) = (&route.metadata, &route.spec);
                let checked = spec
                    .has_service_parent()
                    .then(|| spec.to_internal(self.validation()));
                self.upsert_gateway_route(RouteKind::GrpcRoute, meta, checked)
            }
            Object::ReferenceGrant(grant) => {
                let key = ObjectKey::new(&grant.namespace, &grant.name);
                if self.grants.get(&key) == Some(&grant) {
                    return None;
                }
                let namespace = key.namespace.clone();
                self.grants.insert(key, grant);
                Some(Touched::Grants(namespace))
            }
        }
    }

    fn delete(&mut self, kind: Kind, key: &ObjectKey) -> Option<Touched> {
        match kind {
            Kind::Namespace => {
                self.namespaces.remove(&key.name)?;
                Some(Touched::Namespace(key.name.clone()))
            }
            Kind::Service => {
                self.services.remove(key)?;
                Some(Touched::Service(key.clone()))
            }
            Kind::EndpointSlice => Some(Touched::Endpoints(vec![self.remove_slice(key)?])),
            Kind::Pod => {
                self.pods.remove(key)?;
                Some(Touched::Pod {
                    key: key.clone(),
                    sidecar: false,
                    endpoints: self.services_behind(key),
                })
            }
            Kind::SidecarPolicy => {
                self.policies.remove(key)?;
                Some(Touched::Policy(key.clone()))
            }
            Kind::TrafficRoute => self.delete_route(&RouteKey::traffic(key.clone())),
            Kind::HttpRoute | Kind::GrpcRoute => self.delete_route(&RouteKey {
                kind: if kind == Kind::HttpRoute {
                    RouteKind::HttpRoute
                } else {
                    RouteKind::GrpcRoute
                },
                key: key.clone(),
            }),
            Kind::AccessPolicy => {
                self.access.remove(key)?;
                Some(Touched::Access(key.clone()))
            }
            Kind::ReferenceGrant => {
                self.grants.remove(key)?;
                Some(Touched::Grants(key.namespace.clone()))
            }
        }
    }

    fn upsert_slice(&mut self, slice: EndpointSlice) -> Option<Touched> {
        let key = ObjectKey::new(&slice.namespace, &slice.name);
        let old = self.slices.get(&key);
        if old == Some(&slice) {
            return None;
        }
        let service = ObjectKey::new(&slice.namespace, &slice.service);
        // Readiness and addresses change far more often than the pods a slice lists, and
        // then its relations stay as they are.
        let same_pods = old.is_some_and(|o| {
            o.service == slice.service
                && o.endpoints
                    .iter()
                    .map(|e| &e.pod)
                    .eq(slice.endpoints.iter().map(|e| &e.pod))
        });
        let mut services = Vec::new();
        if !same_pods {
            services.extend(self.remove_slice(&key));
            for pod in slice.endpoints.iter().filter_map(|e| e.pod.as_ref()) {
                self.pod_slices
                    .insert(ObjectKey::new(&slice.namespace, pod), slice.name.clone());
            }
            self.slices_of.insert(service.clone(), slice.name.clone());
        }
        services.push(service);
        self.slices.insert(key, slice);
        Some(Touched::Endpoints(services))
    }

    fn upsert_pod(&mut self, pod: Pod) -> Option<Touched> {
        let key = ObjectKey::new(&pod.namespace, &pod.name);
        let old = self.pods.get(&key);
        if old.is_some_and(|o| o.same(&pod)) {
            return None;
        }
        // Labels decide subsets; the service account, the identities a Service's callers
        // accept.
        let endpoints = if old
            .is_none_or(|o| *o.labels != pod.labels || *o.service_account != *pod.service_account)
        {
            self.services_behind(&key)
        } else {
            Vec::new()
        };
        let sidecar = pod.sidecar;
        let pod = StoredPod::new(pod, &mut self.label_sets);
        self.pods.insert(key.clone(), pod);
        Some(Touched::Pod {
            key,
            sidecar,
            endpoints,
        })
    }

    fn upsert_policy(&mut self, policy: SidecarPolicy) -> Option<Touched> {
        let key = ObjectKey::from_meta(&policy.metadata);
        let previous = self.policies.get(&key).and_then(|p| p.accepted.clone());
        let (accepted, problems) = match policy.spec.validate_with(&self.settings.validation) {
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
        changed.then_some(Touched::Policy(key))
    }

    fn upsert_access(&mut self, policy: remora_api::AccessPolicy) -> Option<Touched> {
        let key = ObjectKey::from_meta(&policy.metadata);
        let previous = self.access.get(&key).and_then(|p| p.accepted.clone());
        let (accepted, problems) = match policy.spec.validate_with(&self.settings.validation) {
            Ok(()) => (Some(policy.spec), Vec::new()),
            // A broken edit never replaces working rules: the last valid spec stays.
            Err(e) => (previous.clone(), e.0),
        };
        let changed = accepted != previous || !self.access.contains_key(&key);
        self.access.insert(
            key.clone(),
            AccessPolicyState {
                key: key.clone(),
                created: policy.metadata.creation_timestamp,
                generation: policy.metadata.generation,
                accepted,
                problems,
            },
        );
        changed.then_some(Touched::Access(key))
    }

    /// The rules that protect a workload in `namespace` with `labels`.
    pub fn authorization_for<'a>(
        &'a self,
        namespace: &'a str,
        labels: &Labels,
    ) -> Option<Arc<Authorization>> {
        let root = &self.settings.root_namespace;
        let in_namespace = |ns: &'a str| {
            self.access
                .range(ObjectKey::new(ns, "")..)
                .take_while(move |(k, _)| k.namespace == ns)
                .map(|(_, p)| p)
        };
        let local = (namespace != root.as_str()).then(|| in_namespace(namespace));
        let policies = in_namespace(root)
            .chain(local.into_iter().flatten())
            .filter(|p| p.protects(&self.settings, namespace, labels));
        access::authorization(&self.settings, policies)
    }

    fn delete_route(&mut self, key: &RouteKey) -> Option<Touched> {
        let old = self.routes.remove(key)?;
        self.unlink_route(&old);
        Some(Touched::Routing(old.parents().map(|(p, _)| p).collect()))
    }

    /// Stores a Gateway API route, `checked` being its conversion, or `None` when it has no
    /// Service parent: a route for Gateways only is another controller's.
    fn upsert_gateway_route(
        &mut self,
        kind: RouteKind,
        meta: &ObjectMeta,
        checked: Option<Result<Converted, remora_api::ValidationErrors>>,
    ) -> Option<Touched> {
        let key = RouteKey {
            kind,
            key: ObjectKey::from_meta(meta),
        };
        match checked {
            None => self.delete_route(&key),
            Some(c) => {
                let checked = c.map(|c| (c.spec, Some(c.paths))).map_err(|e| e.0);
                self.upsert_route(key, meta, checked)
            }
        }
    }

    fn validation(&self) -> &remora_api::ValidationSettings {
        &self.settings.validation
    }

    /// Stores a route of any kind, `checked` being its spec in the internal form if it
    /// passed validation.
    fn upsert_route(
        &mut self,
        key: RouteKey,
        meta: &ObjectMeta,
        checked: Result<(TrafficRouteSpec, Option<PathMap>), Vec<remora_api::FieldError>>,
    ) -> Option<Touched> {
        let previous = self.routes.get(&key).and_then(|r| r.accepted.clone());
        let (accepted, problems) = match checked {
            Ok((spec, paths)) => (
                Some(AcceptedRoute::new(key.namespace(), &spec).with_paths(paths)),
                Vec::new(),
            ),
            // A broken edit never replaces a working route: the last valid spec stays.
            Err(e) => (previous.clone(), e),
        };
        let state = RouteState {
            key: key.clone(),
            created: meta.creation_timestamp.clone(),
            generation: meta.generation,
            accepted,
            problems,
        };
        let mut parents = Vec::new();
        if let Some(old) = self.routes.get(&key) {
            if old.accepted == state.accepted && old.created == state.created {
                self.routes.insert(key, state);
                return None;
            }
            let old = old.clone();
            parents.extend(old.parents().map(|(p, _)| p));
            self.unlink_route(&old);
        }
        for (parent, _) in state.parents() {
            self.routes_of.insert(parent.clone(), key.clone());
            parents.push(parent);
        }
        self.routes.insert(key, state);
        Some(Touched::Routing(parents))
    }

    fn unlink_route(&mut self, route: &RouteState) {
        for (parent, _) in route.parents() {
            self.routes_of.remove(&parent, &route.key);
        }
    }

    /// Removes a slice and its relations; returns its Service, whose endpoints changed.
    fn remove_slice(&mut self, key: &ObjectKey) -> Option<ObjectKey> {
        let old = self.slices.remove(key)?;
        let service = ObjectKey::new(&old.namespace, &old.service);
        self.slices_of.remove(&service, &old.name);
        for pod in old.endpoints.iter().filter_map(|e| e.pod.as_ref()) {
            self.pod_slices
                .remove(&ObjectKey::new(&old.namespace, pod), &old.name);
        }
        Some(service)
    }

    /// The Services of the slices listing a pod.
    pub fn services_behind(&self, pod: &ObjectKey) -> Vec<ObjectKey> {
        self.pod_slices
            .of(pod)
            .filter_map(|slice| self.slices.get(&ObjectKey::new(&pod.namespace, slice)))
            .map(|s| ObjectKey::new(&s.namespace, &s.service))
            .collect()
    }

    /// The pods of a namespace that carry a sidecar.
    pub fn sidecar_pods_in<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a ObjectKey> {
        self.pods
            .range(ObjectKey::new(namespace, "")..)
            .take_while(move |(k, _)| k.namespace == namespace)
            .filter(|(_, p)| p.sidecar)
            .map(|(k, _)| k)
    }

    /// Every namespace that has a pod, once.
    pub fn pod_namespaces(&self) -> BTreeSet<String> {
        self.pods.keys().map(|p| p.namespace.clone()).collect()
    }

    /// The policy that would govern a pod with `labels` in `namespace`.
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

    /// What a policy's accepted spec means for the proxies it governs.
    pub fn defaults_for(&self, policy: Option<&ObjectKey>) -> Arc<Defaults> {
        let spec = policy
            .and_then(|p| self.policies.get(p))
            .and_then(|p| p.accepted.as_ref());
        Arc::new(spec.map(Defaults::from_spec).unwrap_or_default())
    }

    /// Where a proxy under `policy` takes mutual TLS: on the ports its pod has redirected to
    /// it, if the mesh has workload identity and the policy's mode is not `Disabled`.
    pub fn inbound_mtls(&self, policy: Option<&ObjectKey>) -> Option<InboundPorts> {
        self.settings.mtls()?;
        let spec = policy
            .and_then(|p| self.policies.get(p))
            .and_then(|p| p.accepted.as_ref());
        match spec {
            Some(s) if s.mtls.mode == MtlsMode::Disabled => None,
            Some(s) => Some(InboundPorts::from_spec(s)),
            None => Some(InboundPorts::default()),
        }
    }

    /// The protocol of the Service port a cluster sends to.
    pub fn protocol(&self, cluster: &ClusterKey) -> Option<Protocol> {
        self.services
            .get(&cluster.service)
            .and_then(|s| s.port(cluster.port))
            .map(|p| p.protocol)
    }

    /// A Service's routing for every client namespace, from the accepted routes naming it
    /// (`None`: it does not exist).
    pub fn resolve_routing(&mut self, service: &ObjectKey) -> Option<ServiceRoutings> {
        let svc = self.services.get(service)?;
        let routes: Vec<&RouteState> = self
            .routes_of
            .of(service)
            .filter_map(|r| self.routes.get(r))
            .filter(|r| r.accepted.is_some())
            .collect();
        let addresses = match svc.cluster_ip {
            Some(ip) => vec![ip],
            None => self.endpoint_addresses(service),
        };
        let grants = &self.grants;
        let permitted = |route: &RouteKey, backend: &ObjectKey| {
            grants
                .range(ObjectKey::new(&backend.namespace, "")..)
                .take_while(|(k, _)| k.namespace == backend.namespace)
                .any(|(_, g)| g.admits(route.kind.group_kind(), route.namespace(), &backend.name))
        };
        Some(routing::resolve_all(
            &self.settings,
            svc,
            &routes,
            &permitted,
            &self.services,
            addresses,
            &mut self.label_sets,
        ))
    }

    /// Every address the slices of `service` list, ready or not, sorted.
    fn endpoint_addresses(&self, service: &ObjectKey) -> Vec<IpAddr> {
        let addresses: BTreeSet<IpAddr> = self
            .slices_of
            .of(service)
            .filter_map(|s| self.slices.get(&ObjectKey::new(&service.namespace, s)))
            .flat_map(|slice| slice.endpoints.iter().map(|e| e.address))
            .collect();
        addresses.into_iter().collect()
    }

    /// Whether `service` is headless: its routing depends on its endpoints' addresses.
    pub fn is_headless(&self, service: &ObjectKey) -> bool {
        self.services
            .get(service)
            .is_some_and(|s| s.cluster_ip.is_none())
    }

    /// The ready endpoints of a cluster: its Service's slices, the port matching by name,
    /// narrowed to the pods whose labels fit the subset. With `mtls` (workload identity),
    /// an endpoint is marked as taking mutual TLS when it says so of its pod and port.
    pub fn cluster_endpoints(
        &self,
        key: &ClusterKey,
        mtls: Option<TakesMtls<'_>>,
    ) -> Arc<Versioned<ClusterEndpoints>> {
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
                let ready = slice.endpoints.iter().filter(|e| e.ready);
                for e in ready.filter(|e| self.in_subset(key, &slice.namespace, e)) {
                    let mtls = mtls.is_some_and(|takes| {
                        e.pod
                            .as_ref()
                            .is_some_and(|p| takes(&ObjectKey::new(&slice.namespace, p), port))
                    });
                    endpoints.insert(Endpoint {
                        address: SocketAddr::new(e.address, port),
                        zone: e.zone.clone(),
                        mtls,
                    });
                }
            }
        }
        Versioned::new(ClusterEndpoints {
            cluster: key.name.clone(),
            endpoints: endpoints.into_iter().collect(),
        })
    }

    /// The identities a caller of `service` accepts: the service accounts of the pods its
    /// slices list (ready or not, so a pod's identity is accepted before it takes traffic)
    /// that `meshed` names, in `trust_domain`, sorted, each once.
    pub fn peer_identities(
        &self,
        service: &ObjectKey,
        trust_domain: &str,
        meshed: &dyn Fn(&ObjectKey) -> bool,
    ) -> Vec<SpiffeId> {
        let ns = &service.namespace;
        let ids: BTreeSet<SpiffeId> = self
            .slices_of
            .of(service)
            .filter_map(|s| self.slices.get(&ObjectKey::new(ns, s)))
            .flat_map(|slice| slice.endpoints.iter().filter_map(|e| e.pod.as_ref()))
            .map(|pod| ObjectKey::new(ns, pod))
            .filter(|pod| meshed(pod))
            .filter_map(|pod| self.pods.get(&pod))
            .map(|pod| SpiffeId::new(trust_domain, ns, &pod.service_account))
            .collect();
        ids.into_iter().collect()
    }

    /// Whether an endpoint's pod has the labels of the cluster's subset (any endpoint is in
    /// the whole Service).
    fn in_subset(&self, key: &ClusterKey, namespace: &str, e: &SliceEndpoint) -> bool {
        if key.subset.is_empty() {
            return true;
        }
        let pod = e
            .pod
            .as_ref()
            .and_then(|p| self.pods.get(&ObjectKey::new(namespace, p)));
        pod.is_some_and(|p| selector::subset_contains(&key.subset, &p.labels))
    }
}
