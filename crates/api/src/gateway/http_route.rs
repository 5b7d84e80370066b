//! `HTTPRoute` (`gateway.networking.k8s.io/v1`) with Service parents, converted to the one
//! route form the model resolves.

use serde::{Deserialize, Serialize};

use super::{
    BackendReference, Object, RouteFilter, RouteSpec,
    convert::{self, Conversion, Converted},
};
use crate::{
    Duration, ValidationErrors, ValidationSettings,
    traffic_route::{HttpMatch, HttpRule, ParentRef, PathMatchType, Retry, Timeouts},
};

/// An `HTTPRoute`.
pub type HttpRoute = Object<HttpRouteSpec>;

/// The spec of an `HTTPRoute`, as far as Remora reads it.
pub type HttpRouteSpec = RouteSpec<HttpRouteRule>;

/// One rule of an `HTTPRoute`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRule {
    /// Its name, unique in the route.
    #[serde(default)]
    pub name: Option<String>,
    /// The requests it takes; none: every request.
    #[serde(default)]
    pub matches: Vec<HttpMatch>,
    /// What it does to the requests it takes.
    #[serde(default)]
    pub filters: Vec<RouteFilter>,
    /// Where it sends them; none: to the parent Service.
    #[serde(default)]
    pub backend_refs: Vec<BackendReference>,
    /// Request and backend timeouts.
    #[serde(default)]
    pub timeouts: Option<Timeouts>,
    /// Retries.
    #[serde(default)]
    pub retry: Option<HttpRouteRetry>,
}

/// Gateway API's retry: how often, on which status codes, with what backoff.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRetry {
    /// Retry attempts.
    #[serde(default)]
    pub attempts: Option<i32>,
    /// The response codes retried.
    #[serde(default)]
    pub codes: Vec<i32>,
    /// The time between attempts.
    #[serde(default)]
    pub backoff: Option<Duration>,
}

impl HttpRouteSpec {
    /// The route in its internal form, validated, every problem at the user's path.
    pub fn to_internal(
        &self,
        settings: &ValidationSettings,
    ) -> Result<Converted, ValidationErrors> {
        convert::convert(&self.parent_refs, ordered(&self.rules), rule_of, settings)
    }
}

/// The filters an `HTTPRoute` takes.
const FILTERS: &[&str] = &[
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "URLRewrite",
    "RequestRedirect",
    "RequestMirror",
];

/// The user's rule at `user` as the internal rule at `internal`.
fn rule_of(
    c: &mut Conversion,
    (user, internal): (&str, &str),
    rule: &HttpRouteRule,
    parents: &[ParentRef],
) -> HttpRule {
    let mut out = HttpRule {
        name: rule.name.clone(),
        matches: rule.matches.clone(),
        timeouts: rule.timeouts.clone(),
        retry: rule.retry.as_ref().map(|r| Retry {
            attempts: r.attempts.unwrap_or(1),
            codes: r.codes.clone(),
            backoff: r.backoff.clone(),
            ..Retry::default()
        }),
        ..HttpRule::default()
    };
    for (j, f) in rule.filters.iter().enumerate() {
        let path = format!("{user}.filters[{j}]");
        c.filter(&mut out, (&path, internal), f, ("HTTPRoute", FILTERS));
    }
    c.backends(user, &rule.backend_refs, parents, &mut out);
    out
}

/// The rules in the order Gateway API gives their matches precedence: an exact path, then
/// the longest prefix, then a method, then more headers, then more query parameters; rule
/// order breaks ties. A rule with several matches stays one rule, ranked by its strongest.
fn ordered(rules: &[HttpRouteRule]) -> convert::Ordered<'_, HttpRouteRule> {
    let mut out: Vec<(usize, &HttpRouteRule)> = rules.iter().enumerate().collect();
    out.sort_by_key(|(_, r)| {
        let implicit = HttpMatch::default();
        let matches = if r.matches.is_empty() {
            std::slice::from_ref(&implicit)
        } else {
            &r.matches[..]
        };
        matches.iter().map(precedence).min().expect("at least one")
    });
    out
}

/// A match's precedence: lower sorts first.
fn precedence(
    m: &HttpMatch,
) -> (
    u8,
    std::cmp::Reverse<usize>,
    bool,
    std::cmp::Reverse<usize>,
    std::cmp::Reverse<usize>,
) {
    let (kind, len) = match &m.path {
        Some(p) => (
            match p.kind {
                PathMatchType::Exact => 0,
                PathMatchType::PathPrefix => 1,
                PathMatchType::RegularExpression => 2,
            },
            p.value.len(),
        ),
        None => (1, 1),
    };
    (
        kind,
        std::cmp::Reverse(len),
        m.method.is_none(),
        std::cmp::Reverse(m.headers.len()),
        std::cmp::Reverse(m.query_params.len()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrafficRouteSpec;

    fn spec(v: serde_json::Value) -> HttpRouteSpec {
        serde_json::from_value(v).expect("an HTTPRoute spec")
    }

    fn convert(v: serde_json::Value) -> Result<TrafficRouteSpec, Vec<String>> {
        spec(v)
            .to_internal(&ValidationSettings::default())
            .map(|c| c.spec)
            .map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn a_route_converts_to_the_internal_form() {
        let internal = convert(serde_json::json!({
            "parentRefs": [
                {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"},
                {"group": "", "kind": "Service", "name": "reviews", "port": 9080}
            ],
            "hostnames": ["ignored.example"],
            "rules": [{
                "name": "v2",
                "matches": [{"path": {"type": "PathPrefix", "value": "/v2"},
                             "headers": [{"name": "x-team", "value": "a"}]}],
                "filters": [
                    {"type": "RequestHeaderModifier",
                     "requestHeaderModifier": {"set": [{"name": "x-via", "value": "mesh"}]}},
                    {"type": "URLRewrite",
                     "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}
                ],
                "backendRefs": [{"name": "reviews-v2", "port": 9080, "weight": 3},
                                {"kind": "Service", "name": "reviews-v1", "port": 9080}],
                "timeouts": {"request": "5s"},
                "retry": {"attempts": 2, "codes": [503]}
            }]
        }))
        .expect("converts");
        assert_eq!(internal.parent_refs.len(), 1, "the Gateway is not ours");
        assert_eq!(internal.parent_refs[0].port, Some(9080));
        let rule = &internal.http[0];
        assert_eq!(rule.name.as_deref(), Some("v2"));
        assert_eq!(rule.matches[0].headers[0].name, "x-team");
        assert_eq!(
            rule.request_headers.as_ref().expect("set").set[0].value,
            "mesh"
        );
        let rewrite = rule.rewrite.as_ref().and_then(|r| r.path.as_ref());
        assert_eq!(
            rewrite.and_then(|p| p.replace_prefix_match.as_deref()),
            Some("/")
        );
        let weights: Vec<_> = rule
            .backend_refs
            .iter()
            .map(|b| (b.name.as_str(), b.weight))
            .collect();
        assert_eq!(weights, [("reviews-v2", 3), ("reviews-v1", 1)]);
        assert_eq!(
            rule.retry.as_ref().map(|r| (r.attempts, r.codes.clone())),
            Some((2, vec![503]))
        );
    }

    #[test]
    fn a_mirror_filter_becomes_the_rules_mirror() {
        let internal = convert(serde_json::json!({
            "parentRefs": [{"kind": "Service", "name": "echo"}],
            "rules": [
                {"filters": [{"type": "RequestMirror",
                              "requestMirror": {"backendRef": {"name": "shadow", "port": 8080}}}]},
                {"filters": [{"type": "RequestMirror",
                              "requestMirror": {"backendRef": {"name": "shadow", "namespace": "qa"},
                                                "percent": 25}}]}
            ]
        }))
        .expect("converts");
        let mirrors: Vec<_> = internal
            .http
            .iter()
            .map(|r| {
                let m = r.mirror.as_ref().expect("a mirror");
                let b = &m.backend_ref;
                (b.name.as_str(), b.namespace.as_deref(), b.port, m.percent)
            })
            .collect();
        assert_eq!(
            mirrors,
            [
                ("shadow", None, Some(8080), 100),
                ("shadow", Some("qa"), None, 25)
            ],
            "all requests when no percent is given"
        );
    }

    #[test]
    fn a_rule_without_backends_sends_to_its_parent() {
        let internal = convert(serde_json::json!({
            "parentRefs": [{"kind": "Service", "name": "echo", "namespace": "mesh"}],
            "rules": [{"filters": [{"type": "ResponseHeaderModifier",
                                     "responseHeaderModifier": {"set": [{"name": "x", "value": "y"}]}}]}]
        }))
        .expect("converts");
        let b = &internal.http[0].backend_refs[0];
        assert_eq!(
            (b.name.as_str(), b.namespace.as_deref()),
            ("echo", Some("mesh"))
        );
    }

    #[test]
    fn problems_name_the_users_fields() {
        let errors = convert(serde_json::json!({
            "parentRefs": [{"kind": "Service", "name": "echo", "sectionName": "http"}],
            "rules": [
                {"backendRefs": [{"name": "echo"}]},
                {"matches": [{"path": {"type": "Exact", "value": "api"}}],
                 "filters": [
                    {"type": "CORS"},
                    {"type": "RequestRedirect", "requestRedirect": {"statusCode": 301}}
                 ],
                 "backendRefs": [{"name": "echo", "filters": [{"type": "RequestHeaderModifier"}]},
                                 {"group": "example.com", "kind": "Bucket", "name": "b"}]}
            ]
        }))
        .expect_err("refused");
        let paths: Vec<&str> = errors
            .iter()
            .map(|e| e.split(": ").next().expect("a path"))
            .collect();
        for expected in [
            "spec.parentRefs[0].sectionName",
            "spec.rules[1].filters[0].type",
            "spec.rules[1].backendRefs[0].filters",
            "spec.rules[1].backendRefs[1].kind",
            "spec.rules[1].matches[0].path.value",
            "spec.rules[1].filters[1].requestRedirect",
        ] {
            assert!(paths.contains(&expected), "{expected} in {errors:#?}");
        }
        assert!(
            !paths.iter().any(|p| p.contains("spec.http")),
            "{errors:#?}"
        );
    }

    #[test]
    fn rules_are_ordered_by_gateway_api_precedence() {
        let internal = convert(serde_json::json!({
            "parentRefs": [{"kind": "Service", "name": "echo"}],
            "rules": [
                {"name": "all"},
                {"name": "short", "matches": [{"path": {"type": "PathPrefix", "value": "/a"}}]},
                {"name": "long", "matches": [{"path": {"type": "PathPrefix", "value": "/abc"}}]},
                {"name": "exact", "matches": [{"path": {"type": "Exact", "value": "/a"}}]},
                {"name": "get", "matches": [{"path": {"type": "PathPrefix", "value": "/a"}, "method": "GET"}]}
            ]
        }))
        .expect("converts");
        let names: Vec<_> = internal
            .http
            .iter()
            .map(|r| r.name.as_deref().unwrap_or(""))
            .collect();
        assert_eq!(names, ["exact", "long", "get", "short", "all"]);
    }

    #[test]
    fn only_service_parents_make_a_mesh_route() {
        let gateway_only = spec(serde_json::json!({"parentRefs": [{"name": "edge"}], "rules": []}));
        assert!(!gateway_only.has_service_parent());
        let legacy = spec(serde_json::json!({
            "parentRefs": [{"group": super::super::GROUP, "kind": "Service", "name": "echo"}], "rules": []
        }));
        assert!(legacy.has_service_parent());
    }
}
