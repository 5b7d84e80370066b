//! The rules of the route governing a Service port, translated into routes, their
//! backends resolved to clusters; what cannot be resolved is recorded as a problem.

use std::collections::{BTreeMap, BTreeSet};

use remora_api::{
    TrafficRouteSpec,
    traffic_route::{self as api, BackendRef, HttpRule, PathMatchType, StringMatchType},
};

use super::{ClusterKey, Permitted, PortRouting, Problem, RouteKey, RouteKind};
use crate::{
    config::{
        Fault, Forward, HeaderChanges, Mirror, PathMatch, PathRewrite, Redirect, Rewrite, Route,
        RouteAction, RouteMatch, StringMatch, Target, ValueMatch, WeightedCluster,
    },
    input::{Labels, MeshSettings, ObjectKey, Protocol, Service},
    policy::retry_policy,
    store::LabelSets,
};

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

/// One port of a Service being resolved, and where what it finds is collected.
pub(super) struct Ctx<'a> {
    pub settings: &'a MeshSettings,
    /// The route governing the port, if any.
    pub route: Option<&'a RouteKey>,
    /// The Service being routed.
    pub parent: &'a ObjectKey,
    pub permitted: Permitted<'a>,
    pub services: &'a BTreeMap<ObjectKey, Service>,
    pub port: u16,
    pub clusters: &'a mut BTreeSet<ClusterKey>,
    pub references: &'a mut Vec<ObjectKey>,
    pub problems: &'a mut Vec<(RouteKey, Problem)>,
    pub label_sets: &'a mut LabelSets,
}

impl Ctx<'_> {
    /// The port's routing: the governing `spec`'s rules of the port's protocol, then the
    /// Service's `own` cluster for everything else.
    pub fn port_routing(
        &mut self,
        service: &ObjectKey,
        protocol: Protocol,
        spec: Option<&TrafficRouteSpec>,
        own: &ClusterKey,
    ) -> PortRouting {
        if protocol.is_http() {
            let mut routes = Vec::with_capacity(spec.map_or(0, |s| s.http.len()) + 1);
            if let Some(spec) = spec {
                if protocol != Protocol::Http2
                    && self.route.is_some_and(|r| r.kind == RouteKind::GrpcRoute)
                {
                    self.problem(Problem::ProtocolMismatch {
                        service: service.clone(),
                        port: self.port,
                        detail: "a GRPCRoute needs an HTTP/2 port: set appProtocol \
                                 kubernetes.io/h2c or grpc, or name the port grpc-*"
                            .into(),
                    });
                }
                if !spec.tcp.is_empty() {
                    self.problem(Problem::ProtocolMismatch {
                        service: service.clone(),
                        port: self.port,
                        detail: "tcp rules are ignored on an HTTP port".into(),
                    });
                }
                for (i, rule) in spec.http.iter().enumerate() {
                    routes.push(self.http_rule(i, rule));
                }
            }
            // A Gateway API route answers 404 to what no rule matches.
            if self.route.is_none_or(|r| r.kind.falls_through()) {
                routes.push(default_route(own));
            }
            PortRouting::Http { routes }
        } else {
            let rule = spec.and_then(|s| s.tcp.first());
            if spec.is_some_and(|s| !s.http.is_empty()) {
                self.problem(Problem::ProtocolMismatch {
                    service: service.clone(),
                    port: self.port,
                    detail: "http rules are ignored on a TCP port; name the port http-* or set appProtocol".into(),
                });
            }
            let clusters = match rule {
                Some(rule) => self.tcp_backends(rule),
                None => vec![(own.clone(), 1)],
            };
            PortRouting::Tcp { clusters }
        }
    }

    fn problem(&mut self, p: Problem) {
        if let Some(route) = self.route {
            self.problems.push((route.clone(), p));
        }
    }

    fn route_ns(&self) -> &str {
        self.route.map(RouteKey::namespace).unwrap_or_default()
    }

    /// Whether the governing route may send to `service`: one in its own namespace, or the
    /// Service it routes (whose clients reach it already), or one a grant opens to it.
    fn may_send_to(&self, service: &ObjectKey) -> bool {
        let Some(route) = self.route else {
            return true;
        };
        service.namespace == route.namespace()
            || service == self.parent
            || (self.permitted)(route, service)
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
        if !self.may_send_to(&service) {
            let from = self.route_ns().to_owned();
            let kind = self.route.map(|r| r.kind).unwrap_or_default();
            self.problem(Problem::RefNotPermitted {
                path,
                service,
                from,
                kind,
            });
            return None;
        }
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

    /// Where a backend resolved to (or did not) sends traffic. Gateway API answers 500 for
    /// an `HTTPRoute`'s invalid backend; a `GRPCRoute`'s gets `UNAVAILABLE`, which is what
    /// gRPC reads in the 503 of a `TrafficRoute`'s.
    fn target(&self, cluster: Option<ClusterKey>) -> Target {
        match cluster {
            Some(k) => Target::Cluster(k.name.clone()),
            None if self.route.is_some_and(|r| r.kind == RouteKind::HttpRoute) => Target::Invalid,
            None => Target::Unresolved,
        }
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
                (self.target(key), b.weight.unsigned_abs())
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
            Some(r) => RouteAction::Redirect(redirect(r)),
            None => RouteAction::Forward(self.forward(&path, rule)),
        };
        Route {
            name,
            matches: rule.matches.iter().map(route_match).collect(),
            action,
            request_headers: header_changes(rule.request_headers.as_ref()),
            response_headers: header_changes(rule.response_headers.as_ref()),
            fault: rule.fault.as_ref().map(fault),
        }
    }

    fn forward(&mut self, path: &str, rule: &HttpRule) -> Forward {
        let mut clusters: Vec<_> = self
            .backends(path, &rule.backend_refs)
            .into_iter()
            .map(|(target, weight)| WeightedCluster { target, weight })
            .collect();
        clusters.shrink_to_fit();
        let mirrors = rule
            .mirror
            .iter()
            .map(|m| {
                let key = self.cluster(
                    format!("{path}.mirror.backendRef"),
                    &m.backend_ref.name,
                    m.backend_ref.namespace.as_ref(),
                    m.backend_ref.port,
                    &Labels::new(),
                );
                Mirror {
                    cluster: self.target(key),
                    percent: m.percent.clamp(0, 100).unsigned_abs(),
                }
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
        Forward {
            clusters,
            timeout: dur(timeouts.and_then(|t| t.request.as_ref())),
            retry,
            rewrite: rule.rewrite.as_ref().map(|r| Rewrite {
                host: r.hostname.clone(),
                path: r.path.as_ref().and_then(path_rewrite),
            }),
            mirrors,
        }
    }
}

fn redirect(r: &api::Redirect) -> Redirect {
    Redirect {
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
    }
}

fn fault(f: &api::Fault) -> Fault {
    Fault {
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
    }
}

fn path_rewrite(m: &api::PathModifier) -> Option<PathRewrite> {
    match (&m.replace_full_path, &m.replace_prefix_match) {
        (Some(p), _) => Some(PathRewrite::Full(p.clone())),
        (None, Some(p)) => Some(PathRewrite::Prefix(p.clone())),
        (None, None) => None,
    }
}

fn route_match(m: &api::HttpMatch) -> RouteMatch {
    let string_match = |name: String, kind: StringMatchType, v: &str| StringMatch {
        name,
        value: match kind {
            StringMatchType::Exact => ValueMatch::Exact(v.to_owned()),
            StringMatchType::RegularExpression => ValueMatch::Regex(v.to_owned()),
        },
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
        // Header names are case-insensitive, query parameter names are not.
        headers: m
            .headers
            .iter()
            .map(|h| string_match(h.name.to_ascii_lowercase(), h.kind, &h.value))
            .collect(),
        query_params: m
            .query_params
            .iter()
            .map(|q| string_match(q.name.clone(), q.kind, &q.value))
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
