//! How traffic to one Service is routed, resolved from the `TrafficRoute` that governs each of
//! its ports. This part does not depend on who sends the traffic; policy defaults are applied
//! later, per class of proxies.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use remora_api::{
    TrafficRouteSpec,
    traffic_route::{self as api, BackendRef, HttpRule, PathMatchType, StringMatchType},
};

use crate::{
    config::{
        Fault, Forward, HeaderChanges, Mirror, PathMatch, PathRewrite, Redirect, Rewrite, Route,
        RouteAction, RouteMatch, StringMatch, Target, ValueMatch, WeightedCluster, content_hash,
    },
    input::{Labels, MeshSettings, ObjectKey, Protocol, Service},
    policy::retry_policy,
    store::LabelSets,
};

/// A route as the model keeps it: the last spec that passed validation stays in effect
/// while a newer, broken one is reported.
#[derive(Clone, Debug)]
pub struct RouteState {
    pub key: ObjectKey,
    pub created: Option<Time>,
    pub generation: Option<i64>,
    pub accepted: Option<AcceptedRoute>,
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
        AcceptedRoute { parents, json }
    }

    pub fn spec(&self) -> TrafficRouteSpec {
        k8s_openapi::serde_json::from_str(&self.json).expect("decodes what `new` encoded")
    }
}

impl RouteState {
    /// The Services (with an optional port) this route's accepted spec governs.
    pub fn parents(&self) -> impl Iterator<Item = (ObjectKey, Option<u16>)> + '_ {
        self.accepted.iter().flat_map(|a| a.parents.iter().cloned())
    }

    /// Oldest first, then by namespace and name; objects without a timestamp (never stored
    /// by an API server) last.
    fn order(&self) -> (bool, Option<k8s_openapi::jiff::Timestamp>, &ObjectKey) {
        (
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
    pub service: ObjectKey,
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
    BackendNotFound { path: String, service: ObjectKey },
    /// A backend names a port its Service does not have.
    BackendPortNotFound {
        path: String,
        service: ObjectKey,
        port: u16,
    },
    /// Another route governs this Service port already.
    Conflicted {
        service: ObjectKey,
        port: u16,
        winner: ObjectKey,
    },
    /// A parent names a port the Service does not have.
    ParentPortNotFound { service: ObjectKey, port: u16 },
    /// A backend's subset selects no ready endpoint, so its share of traffic fails.
    SubsetEmpty { service: ObjectKey, subset: Labels },
    /// HTTP rules on a TCP port, or TCP rules on an HTTP port.
    ProtocolMismatch {
        service: ObjectKey,
        port: u16,
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
            Problem::BackendPortNotFound {
                path,
                service,
                port,
            } => write!(f, "{path}: Service {service} has no port {port}"),
            Problem::Conflicted {
                service,
                port,
                winner,
            } => write!(
                f,
                "Service {service} port {port} is already routed by the older route {winner}"
            ),
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

/// What one Service port does with traffic.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortRouting {
    /// Routes in order, the last one catching everything else. Timeouts and retries left
    /// `None` take the policy's defaults later.
    Http {
        routes: Vec<Route>,
    },
    Tcp {
        clusters: Vec<(ClusterKey, u32)>,
    },
}

/// The resolved routing of one Service.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceRouting {
    pub service: ObjectKey,
    pub cluster_ip: Option<std::net::IpAddr>,
    pub ports: BTreeMap<u16, (Protocol, PortRouting)>,
    /// Every cluster the routing sends to (for its own ports, backends and mirrors).
    pub clusters: BTreeSet<ClusterKey>,
    /// The route governing each port, if any, by port.
    pub governed_by: Vec<(u16, ObjectKey)>,
    /// Every Service named as a backend or mirror, found or not, sorted: when one of them
    /// appears, changes or goes, this routing is resolved again.
    pub references: Vec<ObjectKey>,
    pub problems: Vec<(ObjectKey, Problem)>,
    pub hash: u64,
}

/// Resolves a Service's routing. `routes` are the accepted routes naming it as a parent.
pub(crate) fn resolve(
    settings: &MeshSettings,
    service: &Service,
    routes: &[&RouteState],
    services: &BTreeMap<ObjectKey, Service>,
    label_sets: &mut LabelSets,
) -> ServiceRouting {
    let key = service.key();
    let mut out = ServiceRouting {
        service: key.clone(),
        cluster_ip: service.cluster_ip,
        ports: BTreeMap::new(),
        clusters: BTreeSet::new(),
        governed_by: Vec::new(),
        references: Vec::new(),
        problems: Vec::new(),
        hash: 0,
    };
    let mut routes: Vec<&RouteState> = routes.to_vec();
    routes.sort_by(|a, b| a.order().cmp(&b.order()));

    for route in &routes {
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
        let mut governing = routes.iter().filter(|r| {
            r.parents()
                .any(|(p, port)| p == key && port.is_none_or(|port| port == sp.port))
        });
        let winner = governing.next();
        if let Some(winner) = winner {
            for loser in governing {
                out.problems.push((
                    loser.key.clone(),
                    Problem::Conflicted {
                        service: key.clone(),
                        port: sp.port,
                        winner: winner.key.clone(),
                    },
                ));
            }
        }
        let spec = winner
            .and_then(|w| w.accepted.as_ref())
            .map(AcceptedRoute::spec);
        let spec = spec.as_ref();
        let mut ctx = Ctx {
            settings,
            route: winner.map(|w| &w.key),
            services,
            port: sp.port,
            clusters: &mut out.clusters,
            references: &mut out.references,
            problems: &mut out.problems,
            label_sets,
        };
        let routing = if sp.protocol.is_http() {
            let mut routes = Vec::with_capacity(spec.map_or(0, |s| s.http.len()) + 1);
            if let Some(spec) = spec {
                if !spec.tcp.is_empty() {
                    ctx.problem(Problem::ProtocolMismatch {
                        service: key.clone(),
                        port: sp.port,
                        detail: "tcp rules are ignored on an HTTP port".into(),
                    });
                }
                for (i, rule) in spec.http.iter().enumerate() {
                    routes.push(ctx.http_rule(i, rule));
                }
            }
            routes.push(default_route(&own));
            PortRouting::Http { routes }
        } else {
            let rule = spec.and_then(|s| s.tcp.first());
            if spec.is_some_and(|s| !s.http.is_empty()) {
                ctx.problem(Problem::ProtocolMismatch {
                    service: key.clone(),
                    port: sp.port,
                    detail: "http rules are ignored on a TCP port; name the port http-* or set appProtocol".into(),
                });
            }
            let clusters = match rule {
                Some(rule) => ctx.tcp_backends(rule),
                None => vec![(own.clone(), 1)],
            };
            PortRouting::Tcp { clusters }
        };
        if let Some(w) = winner {
            out.governed_by.push((sp.port, w.key.clone()));
        }
        out.ports.insert(sp.port, (sp.protocol, routing));
    }
    out.problems.sort();
    out.problems.dedup();
    out.governed_by.sort();
    out.references.sort();
    out.references.dedup();
    // A routing lives until its Service or routes change: no spare capacity.
    out.problems.shrink_to_fit();
    out.governed_by.shrink_to_fit();
    out.references.shrink_to_fit();
    out.hash = content_hash(&(
        &out.service,
        &out.cluster_ip,
        &out.ports,
        &out.clusters,
        &out.governed_by,
        &out.problems,
    ));
    out
}

fn default_route(own: &ClusterKey) -> Route {
    Route {
        name: "default".into(),
        matches: vec![],
        action: RouteAction::Forward(Forward {
            clusters: vec![WeightedCluster {
                target: Target::Cluster(own.name.clone()),
                weight: 1,
            }],
            timeout: None,
            retry: None,
            rewrite: None,
            mirrors: vec![],
        }),
        request_headers: HeaderChanges::default(),
        response_headers: HeaderChanges::default(),
        fault: None,
    }
}

struct Ctx<'a> {
    settings: &'a MeshSettings,
    route: Option<&'a ObjectKey>,
    services: &'a BTreeMap<ObjectKey, Service>,
    port: u16,
    clusters: &'a mut BTreeSet<ClusterKey>,
    references: &'a mut Vec<ObjectKey>,
    problems: &'a mut Vec<(ObjectKey, Problem)>,
    label_sets: &'a mut LabelSets,
}

impl Ctx<'_> {
    fn problem(&mut self, p: Problem) {
        if let Some(route) = self.route {
            self.problems.push((route.clone(), p));
        }
    }

    fn route_ns(&self) -> &str {
        self.route.map(|r| r.namespace.as_str()).unwrap_or_default()
    }

    /// Resolves a backend to a cluster, or records why it cannot be.
    fn cluster(
        &mut self,
        path: String,
        name: &str,
        namespace: Option<&String>,
        port: Option<i32>,
        subset: &Labels,
    ) -> Option<ClusterKey> {
        let service = ObjectKey::new(namespace.map_or(self.route_ns(), |n| n.as_str()), name);
        let port = port
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(self.port);
        self.references.push(service.clone());
        let Some(svc) = self.services.get(&service) else {
            self.problem(Problem::BackendNotFound { path, service });
            return None;
        };
        if svc.port(port).is_none() {
            self.problem(Problem::BackendPortNotFound {
                path,
                service,
                port,
            });
            return None;
        }
        let key = ClusterKey::new(self.settings, service, port, self.label_sets.intern(subset));
        // One key per cluster in a routing, however many rules name it.
        let key = self.clusters.get(&key).cloned().unwrap_or(key);
        self.clusters.insert(key.clone());
        Some(key)
    }

    fn backends(&mut self, path: &str, refs: &[BackendRef]) -> Vec<(Target, u32)> {
        refs.iter()
            .enumerate()
            .filter(|(_, b)| b.weight > 0)
            .map(|(i, b)| {
                let key = self.cluster(
                    format!("{path}.backendRefs[{i}]"),
                    &b.name,
                    b.namespace.as_ref(),
                    b.port,
                    &b.subset,
                );
                (target(key), b.weight.unsigned_abs())
            })
            .collect()
    }

    fn tcp_backends(&mut self, rule: &api::TcpRule) -> Vec<(ClusterKey, u32)> {
        let mut out = Vec::new();
        for (i, b) in rule
            .backend_refs
            .iter()
            .enumerate()
            .filter(|(_, b)| b.weight > 0)
        {
            let path = format!("spec.tcp[0].backendRefs[{i}]");
            if let Some(key) = self.cluster(path, &b.name, b.namespace.as_ref(), b.port, &b.subset)
            {
                out.push((key, b.weight.unsigned_abs()));
            }
        }
        out.shrink_to_fit();
        out
    }

    fn http_rule(&mut self, index: usize, rule: &HttpRule) -> Route {
        let path = format!("spec.http[{index}]");
        let route_name = self.route.map(ToString::to_string).unwrap_or_default();
        let name = format!(
            "{route_name}/{}",
            rule.name.clone().unwrap_or_else(|| index.to_string())
        );
        let action = match &rule.redirect {
            Some(r) => RouteAction::Redirect(Redirect {
                scheme: r.scheme.map(|s| match s {
                    api::RedirectScheme::Http => "http",
                    api::RedirectScheme::Https => "https",
                }),
                host: r.hostname.clone(),
                path: r.path.as_ref().and_then(path_rewrite),
                port: r.port.and_then(|p| u16::try_from(p).ok()),
                status: r
                    .status_code
                    .and_then(|c| u16::try_from(c).ok())
                    .unwrap_or(302),
            }),
            None => {
                let mut clusters: Vec<_> = self
                    .backends(&path, &rule.backend_refs)
                    .into_iter()
                    .map(|(target, weight)| WeightedCluster { target, weight })
                    .collect();
                clusters.shrink_to_fit();
                let mirrors = rule
                    .mirror
                    .iter()
                    .map(|m| Mirror {
                        cluster: target(self.cluster(
                            format!("{path}.mirror.backendRef"),
                            &m.backend_ref.name,
                            m.backend_ref.namespace.as_ref(),
                            m.backend_ref.port,
                            &Labels::new(),
                        )),
                        percent: m.percent.clamp(0, 100).unsigned_abs(),
                    })
                    .collect();
                let dur = |d: Option<&remora_api::Duration>| d.and_then(|d| d.parse().ok());
                let timeouts = rule.timeouts.as_ref();
                let mut retry = rule.retry.as_ref().map(retry_policy);
                if let (Some(r), Some(backend)) = (
                    retry.as_mut(),
                    dur(timeouts.and_then(|t| t.backend_request.as_ref())),
                ) && r.per_try_timeout.is_none()
                {
                    r.per_try_timeout = Some(backend);
                }
                RouteAction::Forward(Forward {
                    clusters,
                    timeout: dur(timeouts.and_then(|t| t.request.as_ref())),
                    retry,
                    rewrite: rule.rewrite.as_ref().map(|r| Rewrite {
                        host: r.hostname.clone(),
                        path: r.path.as_ref().and_then(path_rewrite),
                    }),
                    mirrors,
                })
            }
        };
        Route {
            name,
            matches: rule.matches.iter().map(route_match).collect(),
            action,
            request_headers: header_changes(rule.request_headers.as_ref()),
            response_headers: header_changes(rule.response_headers.as_ref()),
            fault: rule.fault.as_ref().map(|f| Fault {
                delay: f.delay.as_ref().and_then(|d| {
                    d.fixed_delay
                        .parse()
                        .ok()
                        .map(|t| (t, d.percent.clamp(0, 100).unsigned_abs()))
                }),
                abort: f.abort.as_ref().map(|a| {
                    (
                        u16::try_from(a.http_status).unwrap_or(503),
                        a.percent.clamp(0, 100).unsigned_abs(),
                    )
                }),
            }),
        }
    }
}

/// Where a backend resolved to (or did not) sends traffic.
fn target(cluster: Option<ClusterKey>) -> Target {
    cluster.map_or(Target::Unresolved, |k| Target::Cluster(k.name.clone()))
}

fn path_rewrite(m: &api::PathModifier) -> Option<PathRewrite> {
    match (&m.replace_full_path, &m.replace_prefix_match) {
        (Some(p), _) => Some(PathRewrite::Full(p.clone())),
        (None, Some(p)) => Some(PathRewrite::Prefix(p.clone())),
        (None, None) => None,
    }
}

fn route_match(m: &api::HttpMatch) -> RouteMatch {
    let value = |kind: StringMatchType, v: &str| match kind {
        StringMatchType::Exact => ValueMatch::Exact(v.to_owned()),
        StringMatchType::RegularExpression => ValueMatch::Regex(v.to_owned()),
    };
    RouteMatch {
        path: match &m.path {
            None => PathMatch::Any,
            Some(p) => match p.kind {
                PathMatchType::Exact => PathMatch::Exact(p.value.clone()),
                PathMatchType::PathPrefix if p.value == "/" => PathMatch::Any,
                PathMatchType::PathPrefix => PathMatch::Prefix(p.value.clone()),
                PathMatchType::RegularExpression => PathMatch::Regex(p.value.clone()),
            },
        },
        headers: m
            .headers
            .iter()
            .map(|h| StringMatch {
                name: h.name.to_ascii_lowercase(),
                value: value(h.kind, &h.value),
            })
            .collect(),
        query_params: m
            .query_params
            .iter()
            .map(|q| StringMatch {
                name: q.name.clone(),
                value: value(q.kind, &q.value),
            })
            .collect(),
        method: m.method.map(|m| m.as_str()),
    }
}

fn header_changes(m: Option<&api::HeaderModifier>) -> HeaderChanges {
    let Some(m) = m else {
        return HeaderChanges::default();
    };
    let pairs = |v: &[api::HttpHeader]| {
        v.iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
            .collect()
    };
    HeaderChanges {
        set: pairs(&m.set),
        add: pairs(&m.add),
        remove: m.remove.iter().map(|h| h.to_ascii_lowercase()).collect(),
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
            key: ObjectKey::new("a", "r"),
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
