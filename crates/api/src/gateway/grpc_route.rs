//! `GRPCRoute` (`gateway.networking.k8s.io/v1`) with Service parents, converted to the one
//! route form the model resolves. A gRPC call is an HTTP/2 `POST` to `/<service>/<method>`,
//! so a method match becomes a path match.

use std::cmp::Reverse;

use serde::{Deserialize, Serialize};

use super::{
    BackendReference, Object, RouteFilter, RouteSpec,
    convert::{self, Conversion, Converted},
};
use crate::{
    ValidationErrors, ValidationSettings,
    traffic_route::{
        HeaderMatch, HttpMatch, HttpRule, ParentRef, PathMatch, PathMatchType, StringMatchType,
    },
};

/// A `GRPCRoute`.
pub type GrpcRoute = Object<GrpcRouteSpec>;

/// The spec of a `GRPCRoute`, as far as Remora reads it.
pub type GrpcRouteSpec = RouteSpec<GrpcRouteRule>;

/// One rule of a `GRPCRoute`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteRule {
    /// Its name, unique in the route.
    #[serde(default)]
    pub name: Option<String>,
    /// The calls it takes; none: every call.
    #[serde(default)]
    pub matches: Vec<GrpcRouteMatch>,
    /// What it does to the calls it takes.
    #[serde(default)]
    pub filters: Vec<RouteFilter>,
    /// Where it sends them; none: to the parent Service.
    #[serde(default)]
    pub backend_refs: Vec<BackendReference>,
}

/// Conditions on a call; all that are given must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteMatch {
    /// The gRPC service and method.
    #[serde(default)]
    pub method: Option<GrpcMethodMatch>,
    /// Request headers (metadata); all must match.
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
}

/// A condition on the gRPC service and method: at least one of them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcMethodMatch {
    /// `Exact` (default) or `RegularExpression` (RE2), for both names.
    #[serde(default, rename = "type")]
    pub kind: StringMatchType,
    /// The fully qualified service, e.g. `shop.v1.Orders`; any when absent.
    #[serde(default)]
    pub service: Option<String>,
    /// The method, e.g. `Place`; any when absent.
    #[serde(default)]
    pub method: Option<String>,
}

/// The filters a `GRPCRoute` takes.
const FILTERS: &[&str] = &[
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestMirror",
];

impl GrpcRouteSpec {
    /// The route in its internal form, validated, every problem at the user's path.
    pub fn to_internal(
        &self,
        settings: &ValidationSettings,
    ) -> Result<Converted, ValidationErrors> {
        convert::convert(&self.parent_refs, ordered(&self.rules), rule_of, settings)
    }
}

/// The user's rule at `user` as the internal rule at `internal`.
fn rule_of(
    c: &mut Conversion,
    (user, internal): (&str, &str),
    rule: &GrpcRouteRule,
    parents: &[ParentRef],
) -> HttpRule {
    let mut out = HttpRule {
        name: rule.name.clone(),
        ..HttpRule::default()
    };
    for (j, m) in rule.matches.iter().enumerate() {
        let at = format!("{user}.matches[{j}].method");
        let path = m.method.as_ref().and_then(|m| path_of(c, &at, m));
        c.paths
            .add(format!("{internal}.matches[{j}].path.value"), at.clone());
        c.paths.add(format!("{internal}.matches[{j}].path"), at);
        out.matches.push(HttpMatch {
            path,
            headers: m.headers.clone(),
            ..HttpMatch::default()
        });
    }
    for (j, f) in rule.filters.iter().enumerate() {
        let path = format!("{user}.filters[{j}]");
        c.filter(&mut out, (&path, internal), f, ("GRPCRoute", FILTERS));
    }
    c.backends(user, &rule.backend_refs, parents, &mut out);
    out
}

/// The path condition a method match stands for.
fn path_of(c: &mut Conversion, at: &str, m: &GrpcMethodMatch) -> Option<PathMatch> {
    let (service, method) = (m.service.as_deref(), m.method.as_deref());
    if service.is_none() && method.is_none() {
        c.error(at.to_owned(), "name a service, a method or both");
        return None;
    }
    if let Some(value) = m.regex_path() {
        return Some(PathMatch {
            kind: PathMatchType::RegularExpression,
            value,
        });
    }
    let mut valid = true;
    if let Some(s) = service.filter(|s| !is_service_name(s)) {
        c.error(
            format!("{at}.service"),
            format!(
                "{s:?} is not a gRPC service name: dot-separated identifiers, e.g. shop.v1.Orders"
            ),
        );
        valid = false;
    }
    if let Some(m) = method.filter(|m| !is_identifier(m)) {
        c.error(
            format!("{at}.method"),
            format!("{m:?} is not a gRPC method name: an identifier, e.g. Place"),
        );
        valid = false;
    }
    let (kind, value) = match (service, method) {
        (Some(s), Some(m)) => (PathMatchType::Exact, format!("/{s}/{m}")),
        // Whole segments: `/shop.Orders` matches `/shop.Orders/Place`, not `/shop.OrdersX/…`.
        (Some(s), None) => (PathMatchType::PathPrefix, format!("/{s}")),
        (None, Some(m)) => (PathMatchType::RegularExpression, format!("/[^/]+/{m}")),
        (None, None) => return None,
    };
    valid.then_some(PathMatch { kind, value })
}

impl GrpcMethodMatch {
    /// For `type: RegularExpression`, the path regex it stands for (either name absent:
    /// any).
    pub(crate) fn regex_path(&self) -> Option<String> {
        let any = "[^/]+";
        (self.kind == StringMatchType::RegularExpression).then(|| {
            format!(
                "/(?:{})/(?:{})",
                self.service.as_deref().unwrap_or(any),
                self.method.as_deref().unwrap_or(any)
            )
        })
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`: a protobuf identifier, which needs no escaping in a regex.
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Dot-separated identifiers, optionally with a leading dot.
fn is_service_name(s: &str) -> bool {
    s.strip_prefix('.')
        .unwrap_or(s)
        .split('.')
        .all(is_identifier)
}

/// The rules in the order Gateway API gives their matches precedence: the longest service,
/// then the longest method, then more headers; rule order breaks ties. A rule with several
/// matches stays one rule, ranked by its strongest.
fn ordered(rules: &[GrpcRouteRule]) -> convert::Ordered<'_, GrpcRouteRule> {
    let mut out: Vec<(usize, &GrpcRouteRule)> = rules.iter().enumerate().collect();
    out.sort_by_key(|(_, r)| r.matches.iter().map(precedence).min().unwrap_or_default());
    out
}

/// A match's precedence: lower sorts first.
fn precedence(m: &GrpcRouteMatch) -> (Reverse<usize>, Reverse<usize>, Reverse<usize>) {
    let len = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let (service, method) = m
        .method
        .as_ref()
        .map_or((0, 0), |m| (len(&m.service), len(&m.method)));
    (Reverse(service), Reverse(method), Reverse(m.headers.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrafficRouteSpec;

    fn convert(v: serde_json::Value) -> Result<TrafficRouteSpec, Vec<String>> {
        let spec: GrpcRouteSpec = serde_json::from_value(v).expect("a GRPCRoute spec");
        spec.to_internal(&ValidationSettings::default())
            .map(|c| c.spec)
            .map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    fn paths(spec: &TrafficRouteSpec) -> Vec<Option<(PathMatchType, &str)>> {
        spec.http
            .iter()
            .flat_map(|r| &r.matches)
            .map(|m| m.path.as_ref().map(|p| (p.kind, p.value.as_str())))
            .collect()
    }

    #[test]
    fn method_matches_become_path_matches() {
        let internal = convert(serde_json::json!({
            "parentRefs": [{"kind": "Service", "name": "orders", "port": 9090}],
            "rules": [{
                "matches": [
                    {"method": {"service": "shop.v1.Orders", "method": "Place"}},
                    {"method": {"service": "shop.v1.Orders"}},
                    {"method": {"method": "Cancel"}},
                    {"method": {"type": "RegularExpression", "service": "shop\\.v[0-9]+\\.Orders"}},
                    {"headers": [{"name": "x-team", "value": "a"}]}
                ],
                "backendRefs": [{"name": "orders-v2", "port": 9090}]
            }]
        }))
        .expect("converts");
        use PathMatchType::*;
        assert_eq!(
            paths(&internal),
            [
                Some((Exact, "/shop.v1.Orders/Place")),
                Some((PathPrefix, "/shop.v1.Orders")),
                Some((RegularExpression, "/[^/]+/Cancel")),
                Some((RegularExpression, "/(?:shop\\.v[0-9]+\\.Orders)/(?:[^/]+)")),
                None,
            ]
        );
        assert_eq!(internal.http[0].matches[4].headers[0].name, "x-team");
        assert_eq!(internal.http[0].backend_refs[0].name, "orders-v2");
    }

    #[test]
    fn problems_name_the_users_fields() {
        let errors = convert(serde_json::json!({
            "parentRefs": [{"kind": "Service", "name": "orders"}],
            "rules": [{
                "matches": [
                    {"method": {}},
                    {"method": {"service": "shop/v1", "method": "Place me"}},
                    {"method": {"type": "RegularExpression", "method": "(unclosed"}}
                ],
                "filters": [{"type": "URLRewrite", "urlRewrite": {"hostname": "x"}},
                            {"type": "RequestHeaderModifier"}]
            }]
        }))
        .expect_err("refused");
        let paths: Vec<&str> = errors
            .iter()
            .map(|e| e.split(": ").next().expect("a path"))
            .collect();
        for expected in [
            "spec.rules[0].matches[0].method",
            "spec.rules[0].matches[1].method.service",
            "spec.rules[0].matches[1].method.method",
            "spec.rules[0].matches[2].method",
            "spec.rules[0].filters[0].type",
            "spec.rules[0].filters[1].requestHeaderModifier",
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
            "parentRefs": [{"kind": "Service", "name": "orders"}],
            "rules": [
                {"name": "all"},
                {"name": "headers", "matches": [{"headers": [{"name": "x", "value": "y"}]}]},
                {"name": "method", "matches": [{"method": {"method": "Place"}}]},
                {"name": "service", "matches": [{"method": {"service": "shop.Orders"}}]},
                {"name": "both", "matches": [{"method": {"service": "shop.Orders", "method": "Place"}}]}
            ]
        }))
        .expect("converts");
        let names: Vec<_> = internal
            .http
            .iter()
            .map(|r| r.name.as_deref().unwrap_or(""))
            .collect();
        assert_eq!(names, ["both", "service", "method", "headers", "all"]);
    }

    #[test]
    fn names_are_checked_as_protobuf_does() {
        assert!(is_service_name("shop.v1.Orders") && is_service_name(".shop.Orders"));
        assert!(!is_service_name("shop..Orders") && !is_service_name("1shop"));
        assert!(is_identifier("_Place2") && !is_identifier("") && !is_identifier("a-b"));
    }
}
