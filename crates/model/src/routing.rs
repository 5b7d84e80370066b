//! How traffic to one Service is routed, resolved from the `TrafficRoute` that governs each of
//! its ports. As in Gateway API's mesh binding (GAMMA), a route in the Service's own
//! namespace (a producer route) applies to every client, and a route in another namespace (a
//! consumer route) only to the clients in that namespace, for whom it replaces the producer
//! route on the ports it names. So one Service has a routing per namespace with consumer
//! routes for it, and one for everybody else. Policy defaults are applied later, per class of
//! proxies.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use remora_api::{TrafficRouteSpec, gateway::PathMap};

use self::rules::Ctx;
use crate::{
    config::{Route, content_hash},
    input::{Labels, MeshSettings, ObjectKey, Protocol, Service},
    store::LabelSets,
};

mod rules;

/// How a `ReferenceGrant` names the kind of a `TrafficRoute`: (group, kind).
pub const TRAFFIC_ROUTE: (&str, &str) = (remora_api::GROUP, "TrafficRoute");

/// The kinds of route that feed the one internal route form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteKind {
    /// Remora's `TrafficRoute`: a request no rule matches goes to the Service.
    #[default]
    TrafficRoute,
    /// Gateway API's `HTTPRoute`: a request no rule matches gets a 404.
    HttpRoute,
    /// Gateway API's `GRPCRoute`: likewise (gRPC reads a 404 as `UNIMPLEMENTED`); it
    /// governs a port before routes of the other kinds.
    GrpcRoute,
}

impl RouteKind {
    /// How a `ReferenceGrant` names this kind: (group, kind).
    pub fn group_kind(self) -> (&'static str, &'static str) {
        match self {
            RouteKind::TrafficRoute => TRAFFIC_ROUTE,
            RouteKind::HttpRoute => (remora_api::gateway::GROUP, "HTTPRoute"),
            RouteKind::GrpcRoute => (remora_api::gateway::GROUP, "GRPCRoute"),
        }
    }

    /// Whether a request no rule matches goes to the Service (else it gets a 404).
    pub fn falls_through(self) -> bool {
        self == RouteKind::TrafficRoute
    }
}

/// A route: its kind and its namespace and name (an `HTTPRoute` and a `TrafficRoute` may
/// share those).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    /// Its kind.
    pub kind: RouteKind,
    /// Its namespace and name.
    pub key: ObjectKey,
}

impl RouteKey {
    /// A `TrafficRoute`'s key.
    pub fn traffic(key: ObjectKey) -> RouteKey {
        RouteKey {
            kind: RouteKind::TrafficRoute,
            key,
        }
    }

    /// Its namespace.
    pub fn namespace(&self) -> &str {
        &self.key.namespace
    }
}

// A TrafficRoute by its namespace and name alone, as before other kinds fed the model.
impl From<&ObjectKey> for RouteKey {
    fn from(key: &ObjectKey) -> RouteKey {
        RouteKey::traffic(key.clone())
    }
}

impl From<&RouteKey> for RouteKey {
    fn from(key: &RouteKey) -> RouteKey {
        key.clone()
    }
}

/// `namespace/name` for a `TrafficRoute`, `httproute:namespace/name` and
/// `grpcroute:namespace/name` for the others: it names Envoy routes too, so it has no spaces.
impl std::fmt::Display for RouteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            RouteKind::TrafficRoute => write!(f, "{}", self.key),
            RouteKind::HttpRoute => write!(f, "httproute:{}", self.key),
            RouteKind::GrpcRoute => write!(f, "grpcroute:{}", self.key),
        }
    }
}

/// Whether the route (first key) may send traffic to the Service (second key) in another
/// namespace: a `ReferenceGrant` there admits it.
pub(crate) type Permitted<'a> = &'a dyn Fn(&RouteKey, &ObjectKey) -> bool;

/// A route as the model keeps it: the last spec that passed validation stays in effect
/// while a newer, broken one is reported.
#[derive(Clone, Debug)]
pub struct RouteState {
    /// The route's key.
    pub key: RouteKey,
    /// Its creation time: of two routes governing one Service port, the older wins.
    pub created: Option<Time>,
    /// The `metadata.generation` of the latest spec seen, valid or not.
    pub generation: Option<i64>,
    /// The spec in effect; `None` if no spec of this route ever passed validation.
    pub accepted: Option<AcceptedRoute>,
    /// Why the latest spec failed validation; empty when it passed.
    pub problems: Vec<remora_api::FieldError>,
}

/// A route's accepted spec, kept as its JSON encoding. Decoded, a spec takes about 3 KiB
/// (a map per subset, every optional field of every rule), a tenth of that encoded, and the
/// whole spec is read only when its Services' routing is resolved again. The parents,
/// which every update of the route reads, are kept decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedRoute {
    parents: Box<[(ObjectKey, Option<u16>)]>,
    /// Equal specs encode alike (fields in declaration order, maps sorted), so comparing
    /// encodings compares specs.
    json: Box<str>,
    /// For a route converted from another API, where the paths of the spec came from, so
    /// problems name the user's own fields.
    paths: Option<Box<PathMap>>,
}

impl AcceptedRoute {
    /// `namespace` is the route's own, where parents without one are.
    pub fn new(namespace: &str, spec: &TrafficRouteSpec) -> AcceptedRoute {
        let parents = spec
            .parent_refs
            .iter()
            .map(|p| {
                (
                    ObjectKey::new(p.namespace.as_deref().unwrap_or(namespace), &p.name),
                    p.port.and_then(|p| u16::try_from(p).ok()),
                )
            })
            .collect();
        let json = k8s_openapi::serde_json::to_string(spec)
            .expect("a route spec encodes as JSON")
            .into();
        AcceptedRoute {
            parents,
            json,
            paths: None,
        }
    }

    /// The same, converted from another API with `paths` to the user's fields.
    pub fn with_paths(self, paths: Option<PathMap>) -> AcceptedRoute {
        AcceptedRoute {
            paths: paths.map(Box::new),
            ..self
        }
    }

    /// A problem found resolving this spec, naming the user's own fields.
    pub fn user_problem(&self, problem: Problem) -> Problem {
        match &self.paths {
            Some(paths) => problem.map_path(|p| paths.user_path(p)),
            None => problem,
        }
    }

    /// The accepted spec, decoded again.
    pub fn spec(&self) -> TrafficRouteSpec {
        k8s_openapi::serde_json::from_str(&self.json).expect("decodes what `new` encoded")
    }
}

impl RouteState {
    /// The Services (with an optional port) this route's accepted spec governs.
    pub fn parents(&self) -> impl Iterator<Item = (ObjectKey, Option<u16>)> + '_ {
        self.accepted.iter().flat_map(|a| a.parents.iter().cloned())
    }

    /// `GRPCRoute`s first (Gateway API: an `HTTPRoute` on a `GRPCRoute`'s parent is
    /// `Conflicted`), then oldest first, then by namespace and name; objects without a
    /// timestamp (never stored by an API server) last.
    fn order(&self) -> (bool, bool, Option<k8s_openapi::jiff::Timestamp>, &RouteKey) {
        (
            self.key.kind != RouteKind::GrpcRoute,
            self.created.is_none(),
            self.created.as_ref().map(|t| t.0),
            &self.key,
        )
    }
}

/// Identifies a cluster: a Service port, optionally narrowed to the pods with some labels.
///
/// Shared, not copied: every class that uses a cluster holds the same key, which keeps the
/// index small when dozens of classes reach thousands of clusters.
#[derive(Clone, Debug)]
pub struct ClusterKey(Arc<ClusterId>);

impl std::hash::Hash for ClusterKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

// Compared by content, and at once when both sides share the key, which is the common case.
impl PartialEq for ClusterKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for ClusterKey {}

impl Ord for ClusterKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return std::cmp::Ordering::Equal;
        }
        self.0.cmp(&other.0)
    }
}

impl PartialOrd for ClusterKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// What a [`ClusterKey`] names.
#[derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterId {
    /// The Service the cluster sends to.
    pub service: ObjectKey,
    /// The Service port.
    pub port: u16,
    /// Shared with every other holder of the same labels.
    pub subset: Arc<Labels>,
    /// Follows from the fields above; kept so every route and class naming the cluster
    /// shares one string.
    pub name: Arc<str>,
}

impl std::ops::Deref for ClusterKey {
    type Target = ClusterId;

    fn deref(&self) -> &ClusterId {
        &self.0
    }
}

impl ClusterKey {
    /// The key of `service`'s `port`, narrowed to the pods with the `subset` labels (none:
    /// the whole Service), named as its cluster is.
    pub fn new(
        settings: &MeshSettings,
        service: ObjectKey,
        port: u16,
        subset: Arc<Labels>,
    ) -> ClusterKey {
        let labels: Vec<String> = subset.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let name = format!(
            "outbound|{port}|{}|{}.{}.svc.{}",
            labels.join(","),
            service.name,
            service.namespace,
            settings.cluster_domain
        )
        .into();
        ClusterKey(Arc::new(ClusterId {
            service,
            port,
            subset,
            name,
        }))
    }
}

/// A problem found while resolving a route: data for status, never a panic.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Problem {
    /// A backend or mirror names a Service that does not exist.
    BackendNotFound {
        /// Where in the route's spec (`spec.http[0].backendRefs[1]`).
        path: String,
        /// The Service named.
        service: ObjectKey,
    },
    /// A backend or mirror names a Service in another namespace that no `ReferenceGrant`
    /// there opens to the route's namespace.
    RefNotPermitted {
        /// Where in the route's spec.
        path: String,
        /// The Service named.
        service: ObjectKey,
        /// The route's namespace, which a grant must admit.
        from: String,
        /// The route's kind, which a grant must name.
        kind: RouteKind,
    },
    /// A backend names a port its Service does not have.
    BackendPortNotFound {
        /// Where in the route's spec.
        path: String,
        /// The Service named.
        service: ObjectKey,
        /// The port named (or the parent's port, when the backend names none).
        port: u16,
    },
    /// Another route governs this Service port already.
    Conflicted {
        /// The parent Service.
        service: ObjectKey,
        /// Its port both routes claim.
        port: u16,
        /// The route that governs the port: a GRPCRoute, else the older one.
        winner: RouteKey,
    },
    /// A parent names a port the Service does not have.
    ParentPortNotFound {
        /// The parent Service.
        service: ObjectKey,
        /// The port named.
        port: u16,
    },
    /// A backend's subset selects no ready endpoint, so its share of traffic fails.
    SubsetEmpty {
        /// The backend Service.
        service: ObjectKey,
        /// The subset's labels.
        subset: Labels,
    },
    /// HTTP rules on a TCP port, or TCP rules on an HTTP port.
    ProtocolMismatch {
        /// The parent Service.
        service: ObjectKey,
        /// Its port.
        port: u16,
        /// Which rules are ignored, and how to fix it.
        detail: String,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let subset = |s: &Labels| {
            s.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Problem::BackendNotFound { path, service } => {
                write!(f, "{path}: Service {service} does not exist")
            }
            Problem::RefNotPermitted {
                path,
                service,
                from,
                kind,
            } => {
                let (group, kind) = kind.group_kind();
                write!(
                    f,
                    "{path}: Service {service} is in another namespace and no ReferenceGrant \
                     in {} admits {kind}s from {from}; add one there (from: group {group}, \
                     kind {kind}, namespace {from}; to: kind Service)",
                    service.namespace
                )
            }
            Problem::BackendPortNotFound {
                path,
                service,
                port,
            } => write!(f, "{path}: Service {service} has no port {port}"),
            Problem::Conflicted {
                service,
                port,
                winner,
            } => {
                let why = if winner.kind == RouteKind::GrpcRoute {
                    "a GRPCRoute, which goes before other kinds"
                } else {
                    "older"
                };
                write!(
                    f,
                    "Service {service} port {port} is already routed by {winner} ({why})"
                )
            }
            Problem::ParentPortNotFound { service, port } => {
                write!(f, "spec.parentRefs: Service {service} has no port {port}")
            }
            Problem::SubsetEmpty { service, subset: s } => write!(
                f,
                "the subset {} of Service {service} selects no ready endpoint",
                subset(s)
            ),
            Problem::ProtocolMismatch {
                service,
                port,
                detail,
            } => write!(f, "Service {service} port {port}: {detail}"),
        }
    }
}

/// A route that claims a Service port another route governs, as the governing route sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Outranked {
    /// The route that does not govern the port.
    pub route: RouteKey,
    /// The Service.
    pub service: ObjectKey,
    /// Its port.
    pub port: u16,
}

impl std::fmt::Display for Outranked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "route {} on Service {} port {}",
            self.route, self.service, self.port
        )
    }
}

impl Problem {
    /// The same problem, its spec path (if it has one) mapped by `map`.
    fn map_path(self, map: impl Fn(&str) -> String) -> Problem {
        match self {
            Problem::BackendNotFound { path, service } => Problem::BackendNotFound {
                path: map(&path),
                service,
            },
            Problem::RefNotPermitted {
                path,
                service,
                from,
                kind,
            } => Problem::RefNotPermitted {
                path: map(&path),
                service,
                from,
                kind,
            },
            Problem::BackendPortNotFound {
                path,
                service,
                port,
            } => Problem::BackendPortNotFound {
                path: map(&path),
                service,
                port,
            },
            other => other,
        }
    }
}

/// What one Service port does with traffic.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortRouting {
    /// Routes in order, the last one catching everything else. Timeouts and retries left
    /// `None` take the policy's defaults later.
    Http {
        /// The routes, in the order they are tried.
        routes: Vec<Route>,
    },
    /// Connections split between clusters by weight.
    Tcp {
        /// Clusters and their relative weights; without a route, the Service's own alone.
        clusters: Vec<(ClusterKey, u32)>,
    },
}

/// The resolved routing of one Service.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceRouting {
    /// The Service.
    pub service: ObjectKey,
    /// Its cluster IP, which outbound TCP listeners bind (`None`: headless).
    pub cluster_ip: Option<std::net::IpAddr>,
    /// The addresses clients send to when they call it, sorted: its cluster IP, or for a
    /// headless Service the addresses of its endpoints (ready or not). Captured traffic is
    /// told apart by them.
    pub addresses: Vec<std::net::IpAddr>,
    /// Each port's protocol and routing, by port.
    pub ports: BTreeMap<u16, (Protocol, PortRouting)>,
    /// Every cluster the routing sends to (for its own ports, backends and mirrors).
    pub clusters: BTreeSet<ClusterKey>,
    /// The route governing each port, if any, by port.
    pub governed_by: Vec<(u16, RouteKey)>,
    /// Every Service named as a backend or mirror, found or not, sorted: when one of them
    /// appears, changes or goes, this routing is resolved again.
    pub references: Vec<ObjectKey>,
    /// What went wrong resolving it, by the route at fault; sorted.
    pub problems: Vec<(RouteKey, Problem)>,
    /// A hash of everything above but `references`: equal hashes, equal routing.
    pub hash: u64,
}

/// A Service's routing as each namespace's clients see it.
#[derive(Clone, Debug)]
pub struct ServiceRoutings {
    /// The producer routes' routing: for every namespace without consumer routes.
    pub producer: Arc<ServiceRouting>,
    /// The routing of each namespace with consumer routes for the Service, sorted by
    /// namespace. Usually none, which costs no allocation.
    pub consumers: Vec<(String, Arc<ServiceRouting>)>,
}

impl ServiceRoutings {
    /// The routing the clients in `namespace` use.
    pub fn for_clients_in(&self, namespace: &str) -> &Arc<ServiceRouting> {
        self.consumers
            .binary_search_by(|(ns, _)| ns.as_str().cmp(namespace))
            .map_or(&self.producer, |i| &self.consumers[i].1)
    }

    /// Every routing, the producer's first.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ServiceRouting>> {
        std::iter::once(&self.producer).chain(self.consumers.iter().map(|(_, r)| r))
    }

    /// Whether `other` routes every client alike.
    pub fn same(&self, other: &ServiceRoutings) -> bool {
        self.producer.hash == other.producer.hash
            && self.consumers.len() == other.consumers.len()
            && self
                .consumers
                .iter()
                .zip(&other.consumers)
                .all(|((a, ra), (b, rb))| a == b && ra.hash == rb.hash)
    }

    /// Keeps the routings of `old` that did not change, so the classes holding them see
    /// the same `Arc` and skip them.
    pub fn reuse(&mut self, old: &ServiceRoutings) {
        if old.producer.hash == self.producer.hash {
            self.producer = old.producer.clone();
        }
        for (ns, r) in &mut self.consumers {
            if let Some((_, o)) = old.consumers.iter().find(|(o, _)| o == ns)
                && o.hash == r.hash
            {
                *r = o.clone();
            }
        }
    }
}

/// Resolves a Service's routing for every client namespace. `routes` are the accepted
/// routes naming it as a parent.
pub(crate) fn resolve_all(
    settings: &MeshSettings,
    service: &Service,
    routes: &[&RouteState],
    permitted: Permitted<'_>,
    services: &BTreeMap<ObjectKey, Service>,
    addresses: Vec<std::net::IpAddr>,
    label_sets: &mut LabelSets,
) -> ServiceRoutings {
    let mut routes: Vec<&RouteState> = routes.to_vec();
    routes.sort_by(|a, b| a.order().cmp(&b.order()));
    let consumers: BTreeSet<&str> = routes
        .iter()
        .map(|r| r.key.namespace())
        .filter(|ns| *ns != service.namespace)
        .collect();
    let mut resolve = |clients: Option<&str>| {
        Arc::new(resolve(
            settings,
            service,
            &routes,
            permitted,
            clients,
            services,
            addresses.clone(),
            label_sets,
        ))
    };
    ServiceRoutings {
        producer: resolve(None),
        consumers: consumers
            .into_iter()
            .map(|ns| (ns.to_owned(), resolve(Some(ns))))
            .collect(),
    }
}

/// Resolves the routing of the clients in `consumers` (`None`: of every namespace without
/// consumer routes). `routes` are sorted oldest first.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
fn resolve(
    settings: &MeshSettings,
    service: &Service,
    routes: &[&RouteState],
    permitted: Permitted<'_>,
    consumers: Option<&str>,
    services: &BTreeMap<ObjectKey, Service>,
    addresses: Vec<std::net::IpAddr>,
    label_sets: &mut LabelSets,
) -> ServiceRouting {
    let key = service.key();
    let mut out = ServiceRouting {
        service: key.clone(),
        cluster_ip: service.cluster_ip,
        addresses,
        ports: BTreeMap::new(),
        clusters: BTreeSet::new(),
        governed_by: Vec::new(),
        references: Vec::new(),
        problems: Vec::new(),
        hash: 0,
    };
    let in_namespace = |ns: &str| -> Vec<&RouteState> {
        routes
            .iter()
            .copied()
            .filter(|r| r.key.namespace() == ns)
            .collect()
    };
    let producers = in_namespace(&service.namespace);
    let consumers = consumers.map(in_namespace).unwrap_or_default();

    for route in producers.iter().chain(&consumers) {
        for (parent, port) in route.parents().filter(|(p, _)| *p == key) {
            if let Some(port) = port
                && service.port(port).is_none()
            {
                out.problems.push((
                    route.key.clone(),
                    Problem::ParentPortNotFound {
                        service: parent,
                        port,
                    },
                ));
            }
        }
    }

    for sp in &service.ports {
        let own = ClusterKey::new(
            settings,
            key.clone(),
            sp.port,
            label_sets.intern(&Labels::new()),
        );
        out.clusters.insert(own.clone());
        // The clients' own routes for the port replace the producer's.
        let winner = governing(&consumers, &key, sp.port, &mut out.problems)
            .or_else(|| governing(&producers, &key, sp.port, &mut out.problems));
        let spec = winner
            .and_then(|w| w.accepted.as_ref())
            .map(AcceptedRoute::spec);
        let mut ctx = Ctx {
            settings,
            route: winner.map(|w| &w.key),
            parent: &key,
            permitted,
            services,
            port: sp.port,
            clusters: &mut out.clusters,
            references: &mut out.references,
            problems: &mut out.problems,
            label_sets,
        };
        let routing = ctx.port_routing(&key, sp.protocol, spec.as_ref(), &own);
        if let Some(w) = winner {
            out.governed_by.push((sp.port, w.key.clone()));
        }
        out.ports.insert(sp.port, (sp.protocol, routing));
    }
    out.seal();
    out
}

/// The route governing a port of `service`: the first of `routes` (sorted oldest first)
/// naming it. Every later one is conflicted.
fn governing<'r>(
    routes: &[&'r RouteState],
    service: &ObjectKey,
    port: u16,
    problems: &mut Vec<(RouteKey, Problem)>,
) -> Option<&'r RouteState> {
    let mut governing = routes.iter().copied().filter(|r| {
        r.parents()
            .any(|(p, pp)| p == *service && pp.is_none_or(|pp| pp == port))
    });
    let winner = governing.next()?;
    for loser in governing {
        problems.push((
            loser.key.clone(),
            Problem::Conflicted {
                service: service.clone(),
                port,
                winner: winner.key.clone(),
            },
        ));
    }
    Some(winner)
}

impl ServiceRouting {
    /// Sorts what was collected and computes the hash: the routing is complete.
    fn seal(&mut self) {
        self.problems.sort();
        self.problems.dedup();
        self.governed_by.sort();
        self.references.sort();
        self.references.dedup();
        // A routing lives until its Service or routes change: no spare capacity.
        self.problems.shrink_to_fit();
        self.governed_by.shrink_to_fit();
        self.references.shrink_to_fit();
        self.hash = content_hash(&(
            &self.service,
            &self.cluster_ip,
            &self.addresses,
            &self.ports,
            &self.clusters,
            &self.governed_by,
            &self.problems,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_accepted_spec_decodes_to_what_was_accepted() {
        let spec: TrafficRouteSpec = k8s_openapi::serde_json::from_value(
            k8s_openapi::serde_json::json!({
                "parentRefs": [{"name": "web", "port": 80}, {"name": "api", "namespace": "b"}],
                "http": [
                    {
                        "name": "canary",
                        "matches": [{
                            "path": {"type": "RegularExpression", "value": "/v[0-9]+/.*"},
                            "headers": [{"name": "X-Group", "value": "beta"}],
                            "queryParams": [{"name": "debug", "value": "1"}],
                            "method": "GET"
                        }],
                        "backendRefs": [
                            {"name": "web", "subset": {"version": "v2"}, "weight": 10},
                            {"name": "web", "port": 8080, "weight": 0}
                        ],
                        "requestHeaders": {"set": [{"name": "a", "value": "b"}], "remove": ["c"]},
                        "rewrite": {"path": {"replacePrefixMatch": "/"}},
                        "mirror": {"backendRef": {"name": "shadow", "namespace": "c"}, "percent": 5},
                        "timeouts": {"request": "5s", "backendRequest": "1s"},
                        "retry": {"attempts": 2, "retryOn": ["5xx", "reset"], "codes": [503]},
                        "fault": {"delay": {"fixedDelay": "1s", "percent": 5}}
                    },
                    {"redirect": {"scheme": "https", "statusCode": 301}}
                ],
                "tcp": [{"backendRefs": [{"name": "db"}]}]
            }),
        )
        .expect("a valid spec");
        let accepted = AcceptedRoute::new("a", &spec);
        assert_eq!(accepted.spec(), spec);
        assert_eq!(accepted, AcceptedRoute::new("a", &spec.clone()));
        let state = RouteState {
            key: RouteKey::traffic(ObjectKey::new("a", "r")),
            created: None,
            generation: None,
            accepted: Some(accepted),
            problems: vec![],
        };
        assert_eq!(
            state.parents().collect::<Vec<_>>(),
            [
                (ObjectKey::new("a", "web"), Some(80)),
                (ObjectKey::new("b", "api"), None)
            ]
        );
    }
}
