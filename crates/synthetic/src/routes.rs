//! The routes of a synthetic mesh: a mix of the kinds real meshes have, each with a
//! weighted split a change can move.

use std::collections::BTreeMap;

use remora_api::{
    TrafficRoute, TrafficRouteSpec,
    traffic_route::{
        BackendRef, HeaderMatch, HeaderModifier, HttpHeader, HttpMatch, HttpMethod, HttpRule,
        ParentRef, PathMatch, PathMatchType, Retry, RetryOn, StringMatchType, TcpRule, Timeouts,
    },
};
use remora_model::input::Object;
use remora_test_support::labels;

use crate::{HTTP_PORT, STREAM_ROUTE, ServicePlan, Synthetic, created, rng::SplitMix64};

/// The kinds of route the generator writes; each has a weighted split whose weights
/// [`Synthetic::route_change`] moves.
#[derive(Clone, Copy, Debug)]
enum RouteKind {
    /// Beta users to v2, everyone else split between v1 and v2.
    Canary,
    /// An API version by path and header to v2, mobile clients by a header regex.
    HeaderMatch,
    /// A legacy path to a shared Service in another namespace, and a share of all traffic.
    CrossNamespace,
    /// Writes with their own timeout, retries on specific codes, and a tagging header.
    Resilience,
}

impl Synthetic {
    /// Route `i`, with `shift` added to the second backend's weight of its split.
    pub(crate) fn route_object(&self, i: usize, shift: i32) -> Object {
        let s = &self.shape;
        let plan = &self.services[i % s.services];
        let port = &plan.ports()[(i / s.services) % 2];
        let mut rng = SplitMix64::stream(s.seed, STREAM_ROUTE, i);
        let canary = [1, 5, 10, 20, 50][rng.below(5)] + shift;
        let kind = match rng.below(100) {
            0..40 => RouteKind::Canary,
            40..65 => RouteKind::HeaderMatch,
            65..85 => RouteKind::CrossNamespace,
            _ => RouteKind::Resilience,
        };
        let v1 = |w| subset_backend(&plan.name, "v1", w);
        let v2 = |w| subset_backend(&plan.name, "v2", w);
        let (http, tcp) = if port.protocol.is_http() {
            (self.http_rules(kind, plan, &mut rng, canary), vec![])
        } else {
            (
                vec![],
                vec![TcpRule {
                    name: Some("split".into()),
                    backend_refs: vec![v1(100 - canary), v2(canary)],
                }],
            )
        };
        let spec = TrafficRouteSpec {
            parent_refs: vec![ParentRef {
                name: plan.name.clone(),
                namespace: None,
                port: Some(i32::from(port.port)),
            }],
            http,
            tcp,
        };
        let name = format!(
            "{}-{}",
            plan.name,
            port.name.as_deref().unwrap_or("default")
        );
        let mut route = TrafficRoute::new(&name, spec);
        route.metadata.namespace = Some(plan.namespace.clone());
        route.metadata.creation_timestamp = created(i);
        route.metadata.generation = Some(1 + i64::from(shift != 0));
        Object::TrafficRoute(Box::new(route))
    }

    fn http_rules(
        &self,
        kind: RouteKind,
        plan: &ServicePlan,
        rng: &mut SplitMix64,
        canary: i32,
    ) -> Vec<HttpRule> {
        let v1 = |w| subset_backend(&plan.name, "v1", w);
        let v2 = |w| subset_backend(&plan.name, "v2", w);
        let split = HttpRule {
            name: Some("split".into()),
            backend_refs: vec![v1(100 - canary), v2(canary)],
            ..Default::default()
        };
        match kind {
            RouteKind::Canary => canary_rules(plan, split),
            RouteKind::HeaderMatch => header_match_rules(plan, split),
            RouteKind::CrossNamespace => {
                cross_namespace_rules(plan, self.shared_service(rng), canary)
            }
            RouteKind::Resilience => resilience_rules(plan, split),
        }
    }

    /// A Service in one of the shared namespaces (the first ones).
    fn shared_service(&self, rng: &mut SplitMix64) -> &ServicePlan {
        let shared = self
            .services
            .partition_point(|p| p.ns < self.shape.shared_namespaces);
        &self.services[rng.below(shared.max(1))]
    }
}

fn subset_backend(service: &str, version: &str, weight: i32) -> BackendRef {
    BackendRef {
        name: service.into(),
        namespace: None,
        port: None,
        weight,
        subset: labels(&[("version", version)]),
    }
}

fn header_match(name: &str, kind: StringMatchType, value: &str) -> HttpMatch {
    HttpMatch {
        headers: vec![HeaderMatch {
            kind,
            name: name.into(),
            value: value.into(),
        }],
        ..Default::default()
    }
}

/// `split` is the rule dividing everyone else between v1 and v2.
fn canary_rules(plan: &ServicePlan, split: HttpRule) -> Vec<HttpRule> {
    vec![
        HttpRule {
            name: Some("beta".into()),
            matches: vec![header_match("x-user-group", StringMatchType::Exact, "beta")],
            backend_refs: vec![subset_backend(&plan.name, "v2", 1)],
            ..Default::default()
        },
        HttpRule {
            timeouts: Some(Timeouts {
                request: Some("5s".into()),
                backend_request: None,
            }),
            retry: Some(Retry {
                attempts: 2,
                per_try_timeout: Some("500ms".into()),
                ..Default::default()
            }),
            ..split
        },
    ]
}

fn header_match_rules(plan: &ServicePlan, split: HttpRule) -> Vec<HttpRule> {
    vec![
        HttpRule {
            name: Some("api-v2".into()),
            matches: vec![HttpMatch {
                path: Some(PathMatch {
                    kind: PathMatchType::PathPrefix,
                    value: "/api/v2".into(),
                }),
                headers: vec![HeaderMatch {
                    kind: StringMatchType::Exact,
                    name: "x-api-version".into(),
                    value: "2".into(),
                }],
                ..Default::default()
            }],
            backend_refs: vec![subset_backend(&plan.name, "v2", 1)],
            ..Default::default()
        },
        HttpRule {
            name: Some("mobile".into()),
            matches: vec![header_match(
                "user-agent",
                StringMatchType::RegularExpression,
                ".*(Android|iPhone).*",
            )],
            backend_refs: vec![subset_backend(&plan.name, "v1", 1)],
            ..Default::default()
        },
        split,
    ]
}

/// A legacy path to `shared`, and `canary` percent of the rest.
fn cross_namespace_rules(plan: &ServicePlan, shared: &ServicePlan, canary: i32) -> Vec<HttpRule> {
    let shared_backend = |weight| BackendRef {
        name: shared.name.clone(),
        namespace: Some(shared.namespace.clone()),
        port: Some(i32::from(HTTP_PORT)),
        weight,
        subset: BTreeMap::new(),
    };
    vec![
        HttpRule {
            name: Some("legacy".into()),
            matches: vec![HttpMatch {
                path: Some(PathMatch {
                    kind: PathMatchType::PathPrefix,
                    value: "/legacy".into(),
                }),
                ..Default::default()
            }],
            backend_refs: vec![shared_backend(1)],
            ..Default::default()
        },
        HttpRule {
            name: Some("split".into()),
            backend_refs: vec![
                BackendRef {
                    name: plan.name.clone(),
                    namespace: None,
                    port: None,
                    weight: 100 - canary,
                    subset: BTreeMap::new(),
                },
                shared_backend(canary),
            ],
            ..Default::default()
        },
    ]
}

fn resilience_rules(plan: &ServicePlan, split: HttpRule) -> Vec<HttpRule> {
    vec![
        HttpRule {
            name: Some("writes".into()),
            matches: vec![HttpMatch {
                method: Some(HttpMethod::Post),
                ..Default::default()
            }],
            backend_refs: vec![subset_backend(&plan.name, "v1", 1)],
            timeouts: Some(Timeouts {
                request: Some("10s".into()),
                backend_request: Some("3s".into()),
            }),
            retry: Some(Retry {
                attempts: 3,
                backoff: Some("25ms".into()),
                retry_on: vec![RetryOn::Reset, RetryOn::ConnectFailure],
                codes: vec![503],
                ..Default::default()
            }),
            ..Default::default()
        },
        HttpRule {
            request_headers: Some(HeaderModifier {
                set: vec![HttpHeader {
                    name: "x-served-by".into(),
                    value: plan.name.clone(),
                }],
                ..Default::default()
            }),
            ..split
        },
    ]
}
