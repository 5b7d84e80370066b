//! `HTTPRoute` (`gateway.networking.k8s.io/v1`) with Service parents, converted to the one
//! route form the model resolves.

use serde::{Deserialize, Serialize};

use super::{Object, ParentReference, PathMap, is_service_backend};
use crate::{
    Duration, FieldError, TrafficRouteSpec, Validate, ValidationErrors, ValidationSettings,
    traffic_route::{
        BackendRef, HeaderModifier, HttpMatch, HttpRule, Mirror, ParentRef, PathMatchType,
        Redirect, Retry, Timeouts, UrlRewrite,
    },
};

/// An `HTTPRoute`.
pub type HttpRoute = Object<HttpRouteSpec>;

/// The spec of an `HTTPRoute`, as far as Remora reads it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// Where the route attaches: Services for the mesh, Gateways for others.
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    /// Host names; a mesh route is chosen by the Service called, so they are not read.
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// The rules.
    #[serde(default)]
    pub rules: Vec<HttpRouteRule>,
}

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
    pub filters: Vec<HttpRouteFilter>,
    /// Where it sends them; none: to the parent Service.
    #[serde(default)]
    pub backend_refs: Vec<HttpBackendRef>,
    /// Request and backend timeouts.
    #[serde(default)]
    pub timeouts: Option<Timeouts>,
    /// Retries.
    #[serde(default)]
    pub retry: Option<HttpRouteRetry>,
}

/// A filter: its `type` says which one of the other fields holds its config.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteFilter {
    /// `RequestHeaderModifier`, `ResponseHeaderModifier`, `URLRewrite`, `RequestRedirect`,
    /// `RequestMirror`, or one Remora does not implement.
    #[serde(rename = "type")]
    pub kind: String,
    /// For `RequestHeaderModifier`.
    #[serde(default)]
    pub request_header_modifier: Option<HeaderModifier>,
    /// For `ResponseHeaderModifier`.
    #[serde(default)]
    pub response_header_modifier: Option<HeaderModifier>,
    /// For `URLRewrite`.
    #[serde(default, rename = "urlRewrite")]
    pub url_rewrite: Option<UrlRewrite>,
    /// For `RequestRedirect`.
    #[serde(default)]
    pub request_redirect: Option<Redirect>,
    /// For `RequestMirror`.
    #[serde(default)]
    pub request_mirror: Option<GatewayMirror>,
}

/// `RequestMirror`'s config.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayMirror {
    /// Where copies go.
    pub backend_ref: HttpBackendRef,
    /// The share of requests copied; all when absent.
    #[serde(default)]
    pub percent: Option<i32>,
}

/// A backend of a rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpBackendRef {
    /// The backend's group; a Service's is `""`, the default.
    #[serde(default)]
    pub group: Option<String>,
    /// The backend's kind; `Service`, the default.
    #[serde(default)]
    pub kind: Option<String>,
    /// Its name.
    pub name: String,
    /// Its namespace; the route's own when absent.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The Service port.
    #[serde(default)]
    pub port: Option<i32>,
    /// Its relative share; 1 when absent.
    #[serde(default)]
    pub weight: Option<i32>,
    /// Filters for this backend only (not implemented by Remora).
    #[serde(default)]
    pub filters: Vec<HttpRouteFilter>,
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

/// A route in its internal form, with the map from its paths to the user's.
#[derive(Clone, Debug, PartialEq)]
pub struct Converted {
    /// The route as the model resolves it.
    pub spec: TrafficRouteSpec,
    /// Where each part of it came from.
    pub paths: PathMap,
}

impl HttpRouteSpec {
    /// Whether a parent is a Service: only those routes are the mesh's.
    pub fn has_service_parent(&self) -> bool {
        self.parent_refs.iter().any(ParentReference::is_service)
    }

    /// The route in its internal form, validated, every problem at the user's path.
    pub fn to_internal(
        &self,
        settings: &ValidationSettings,
    ) -> Result<Converted, ValidationErrors> {
        let mut c = Conversion::default();
        let spec = c.spec(self);
        let mut errors = c.errors;
        if let Err(e) = spec.validate_with(settings) {
            errors.extend(e.0.into_iter().map(|f| FieldError {
                path: c.paths.user_path(&f.path),
                message: f.message,
            }));
        }
        if errors.is_empty() {
            Ok(Converted {
                spec,
                paths: c.paths,
            })
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

/// A conversion in progress: the paths mapped so far and what cannot be converted.
#[derive(Default)]
struct Conversion {
    paths: PathMap,
    errors: Vec<FieldError>,
}

impl Conversion {
    fn error(&mut self, path: String, message: impl Into<String>) {
        self.errors.push(FieldError {
            path,
            message: message.into(),
        });
    }

    fn spec(&mut self, route: &HttpRouteSpec) -> TrafficRouteSpec {
        let mut parent_refs = Vec::new();
        for (i, p) in route.parent_refs.iter().enumerate() {
            if !p.is_service() {
                continue;
            }
            let path = format!("spec.parentRefs[{i}]");
            if p.section_name.is_some() {
                self.error(
                    format!("{path}.sectionName"),
                    "Remora binds to a Service port by number: set port instead of sectionName",
                );
            }
            self.paths
                .add(format!("spec.parentRefs[{}]", parent_refs.len()), path);
            parent_refs.push(ParentRef {
                name: p.name.clone(),
                namespace: p.namespace.clone(),
                port: p.port,
            });
        }
        let mut http = Vec::new();
        for (i, rule) in ordered(&route.rules) {
            self.paths.add(
                format!("spec.http[{}]", http.len()),
                format!("spec.rules[{i}]"),
            );
            let at = http.len();
            http.push(self.rule(i, at, rule, &parent_refs));
        }
        TrafficRouteSpec {
            parent_refs,
            http,
            tcp: Vec::new(),
        }
    }

    /// Rule `i` of the user's route, as internal rule `at`.
    fn rule(
        &mut self,
        i: usize,
        at: usize,
        rule: &HttpRouteRule,
        parents: &[ParentRef],
    ) -> HttpRule {
        let (user, internal) = (format!("spec.rules[{i}]"), format!("spec.http[{at}]"));
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
            self.filter(&mut out, &format!("{user}.filters[{j}]"), &internal, f);
        }
        for (k, b) in rule.backend_refs.iter().enumerate() {
            let path = format!("{user}.backendRefs[{k}]");
            if !b.filters.is_empty() {
                self.error(
                    format!("{path}.filters"),
                    "Remora does not implement filters on one backend: move them to the rule",
                );
            }
            if let Some(backend) = self.backend(&path, b) {
                out.backend_refs.push(backend);
            }
        }
        // In the mesh, a rule that names no backend sends to the Service it is for.
        if rule.backend_refs.is_empty() && out.redirect.is_none() {
            match parents {
                [parent] => out.backend_refs.push(BackendRef {
                    name: parent.name.clone(),
                    namespace: parent.namespace.clone(),
                    port: None,
                    weight: 1,
                    subset: Default::default(),
                }),
                _ => self.error(
                    format!("{user}.backendRefs"),
                    "a rule without backendRefs sends to its parent Service; with several \
                     parents, name the backends",
                ),
            }
        }
        out
    }

    fn backend(&mut self, path: &str, b: &HttpBackendRef) -> Option<BackendRef> {
        if !is_service_backend(b.group.as_deref(), b.kind.as_deref()) {
            self.error(
                format!("{path}.kind"),
                "Remora sends to Services only: set kind Service (group \"\")",
            );
            return None;
        }
        Some(BackendRef {
            name: b.name.clone(),
            namespace: b.namespace.clone(),
            port: b.port,
            weight: b.weight.unwrap_or(1),
            subset: Default::default(),
        })
    }

    /// Puts one filter's config into the internal rule, mapping its path.
    fn filter(&mut self, out: &mut HttpRule, path: &str, internal: &str, f: &HttpRouteFilter) {
        let put = |this: &mut Conversion, field: &str, config: &str, set: bool| {
            if set {
                this.error(
                    format!("{path}.type"),
                    format!("a rule takes one {} filter: merge them", f.kind),
                );
            }
            this.paths
                .add(format!("{internal}.{field}"), format!("{path}.{config}"));
        };
        let missing = |this: &mut Conversion, config: &str| {
            this.error(
                format!("{path}.{config}"),
                format!("a {} filter needs its {config} settings", f.kind),
            );
        };
        match f.kind.as_str() {
            "RequestHeaderModifier" => match &f.request_header_modifier {
                Some(m) => {
                    put(
                        self,
                        "requestHeaders",
                        "requestHeaderModifier",
                        out.request_headers.is_some(),
                    );
                    out.request_headers = Some(m.clone());
                }
                None => missing(self, "requestHeaderModifier"),
            },
            "ResponseHeaderModifier" => match &f.response_header_modifier {
                Some(m) => {
                    put(
                        self,
                        "responseHeaders",
                        "responseHeaderModifier",
                        out.response_headers.is_some(),
                    );
                    out.response_headers = Some(m.clone());
                }
                None => missing(self, "responseHeaderModifier"),
            },
            "URLRewrite" => match &f.url_rewrite {
                Some(r) => {
                    put(self, "rewrite", "urlRewrite", out.rewrite.is_some());
                    out.rewrite = Some(r.clone());
                }
                None => missing(self, "urlRewrite"),
            },
            "RequestRedirect" => match &f.request_redirect {
                Some(r) => {
                    put(self, "redirect", "requestRedirect", out.redirect.is_some());
                    out.redirect = Some(r.clone());
                }
                None => missing(self, "requestRedirect"),
            },
            "RequestMirror" => match &f.request_mirror {
                Some(m) => {
                    put(self, "mirror", "requestMirror", out.mirror.is_some());
                    let b = &m.backend_ref;
                    if !is_service_backend(b.group.as_deref(), b.kind.as_deref()) {
                        self.error(
                            format!("{path}.requestMirror.backendRef.kind"),
                            "Remora mirrors to Services only: set kind Service (group \"\")",
                        );
                    }
                    out.mirror = Some(Mirror {
                        backend_ref: crate::traffic_route::MirrorBackend {
                            name: b.name.clone(),
                            namespace: b.namespace.clone(),
                            port: b.port,
                        },
                        percent: m.percent.unwrap_or(100),
                    });
                }
                None => missing(self, "requestMirror"),
            },
            other => self.error(
                format!("{path}.type"),
                format!("Remora does not implement the {other} filter: remove it"),
            ),
        }
    }
}

/// The rules in the order Gateway API gives their matches precedence: an exact path, then
/// the longest prefix, then a method, then more headers, then more query parameters; rule
/// order breaks ties. A rule with several matches stays one rule, ranked by its strongest.
fn ordered(rules: &[HttpRouteRule]) -> Vec<(usize, &HttpRouteRule)> {
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
