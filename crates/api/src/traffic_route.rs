//! `TrafficRoute`: how traffic to a Service is routed. Shaped after Gateway API's `HTTPRoute`
//! (and its GAMMA use for Services) so the field names are familiar.

mod filters;
mod matches;
mod resilience;
mod status;
mod validate;

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use filters::{
    HeaderModifier, HttpHeader, Mirror, MirrorBackend, PathModifier, Redirect, RedirectScheme,
    UrlRewrite,
};
pub use matches::{
    HeaderMatch, HttpMatch, HttpMethod, PathMatch, PathMatchType, QueryParamMatch, StringMatchType,
};
pub use resilience::{Fault, FaultAbort, FaultDelay, Retry, RetryOn, Timeouts};
pub use status::{ProxyCounts, TrafficRouteStatus};
pub(crate) use validate::validate_retry;

/// Routes the traffic that meshed clients send to one or more Services: matches on path,
/// headers, query parameters and method; weighted splits between Services or subsets of
/// their pods; retries, timeouts, fault injection, mirroring and header changes.
///
/// When several routes name the same Service port, the oldest one (then the one whose
/// namespace/name sorts first) governs it; the others report `Accepted=False` with reason
/// `Conflicted` for that parent.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "remora.dev",
    version = "v1alpha1",
    kind = "TrafficRoute",
    plural = "trafficroutes",
    namespaced,
    status = "TrafficRouteStatus",
    shortname = "troute",
    category = "remora",
    doc = "Routes the traffic meshed clients send to a Service: matches, weighted splits, retries, timeouts, faults, mirroring.",
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status",
        description = "Whether the route is valid and in effect"
    ),
    printcolumn(
        name = "Resolved",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"ResolvedRefs\")].status",
        description = "Whether every backend Service and subset exists"
    ),
    printcolumn(
        name = "Programmed",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Programmed\")].status",
        description = "Whether the affected proxies acknowledged this generation"
    ),
    printcolumn(
        name = "Synced",
        type_ = "integer",
        json_path = ".status.proxies.acked",
        description = "Proxies that acknowledged this generation"
    ),
    printcolumn(
        name = "Affected",
        type_ = "integer",
        json_path = ".status.proxies.affected",
        description = "Proxies this route configures"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("(has(self.http) && size(self.http) > 0) || (has(self.tcp) && size(self.tcp) > 0)").message("a route needs at least one rule in http or tcp"))]
#[serde(rename_all = "camelCase")]
pub struct TrafficRouteSpec {
    /// The Services whose traffic this route governs. Without a port the route applies to
    /// every port of the Service.
    #[schemars(length(min = 1, max = 16))]
    pub parent_refs: Vec<ParentRef>,

    /// HTTP rules, tried in order; the first whose matches fit a request handles it. A
    /// request that no rule matches goes to the Service itself, as without a route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub http: Vec<HttpRule>,

    /// TCP rules for ports that do not carry HTTP. Only the first rule is used per port; it
    /// splits connections between its backends by weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub tcp: Vec<TcpRule>,
}

/// A Service whose traffic a route governs. As in Gateway API's mesh binding, a Service in
/// the route's own namespace takes the route for every client (a producer route); a Service
/// in another namespace takes it only for the clients in the route's namespace (a consumer
/// route), for whom it replaces the Service's producer route on the ports it names.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// The Service's name.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The Service's namespace; defaults to the route's own namespace. Another namespace
    /// makes this a consumer route: it applies to the callers in the route's namespace only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// One port of the Service; without it the route applies to all of its ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// One HTTP rule: which requests it takes (`matches`) and what happens to them.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("!(has(self.redirect) && has(self.backendRefs) && size(self.backendRefs) > 0)").message("a rule either redirects or forwards to backendRefs, not both: remove one"))]
#[x_kube(validation = Rule::new("has(self.redirect) || (has(self.backendRefs) && self.backendRefs.exists(b, !has(b.weight) || b.weight > 0))").message("a rule needs a redirect or at least one backendRef with a weight above 0"))]
#[x_kube(validation = Rule::new("!(has(self.redirect) && has(self.rewrite))").message("a redirect cannot be combined with a rewrite"))]
#[serde(rename_all = "camelCase")]
pub struct HttpRule {
    /// A name for the rule, unique within the route. It appears in metrics and status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub name: Option<String>,

    /// Which requests the rule takes: a request matches when any one entry matches (each
    /// entry's conditions must all hold). No entries means every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub matches: Vec<HttpMatch>,

    /// Where matching requests go, split by weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub backend_refs: Vec<BackendRef>,

    /// Changes to request headers before the request is forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderModifier>,

    /// Changes to response headers before the response returns to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderModifier>,

    /// Rewrites the host or path of a forwarded request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<UrlRewrite>,

    /// Answers with an HTTP redirect instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,

    /// Sends a copy of matching requests to another Service; its responses are discarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,

    /// Timeouts for matching requests; they override the policy's traffic defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,

    /// Retries for matching requests; they override the policy's traffic defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,

    /// Faults injected into matching requests, for testing resilience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
}

/// A TCP rule: connections are split between the backends by weight.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("self.backendRefs.exists(b, !has(b.weight) || b.weight > 0)").message("a tcp rule needs at least one backendRef with a weight above 0"))]
#[serde(rename_all = "camelCase")]
pub struct TcpRule {
    /// A name for the rule, unique within the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub name: Option<String>,
    /// Where connections go, split by weight.
    #[schemars(length(min = 1, max = 16))]
    pub backend_refs: Vec<BackendRef>,
}

/// A destination: a Service, or the subset of its pods that carry the given labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    /// The Service's name.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The Service's namespace; defaults to the route's own namespace. Another namespace
    /// makes this a consumer route: it applies to the callers in the route's namespace only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Service port to send to; defaults to the port the request arrived on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// This backend's share of the traffic, relative to the others in the rule. 0 sends it
    /// nothing (useful to drain a version without deleting the entry).
    #[serde(default = "default_weight")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub weight: i32,
    /// Pod labels that narrow the Service to a subset, e.g. `version: v2`. Empty means every
    /// pod of the Service.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subset: BTreeMap<String, String>,
}

fn default_weight() -> i32 {
    1
}

/// Mirrors and faults take every matching request unless a percent is given.
fn default_percent() -> i32 {
    100
}
