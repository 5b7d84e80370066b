//! `TrafficRoute`: how traffic to a Service is routed. Shaped after Gateway API's `HTTPRoute`
//! (and its GAMMA use for Services) so the field names are familiar.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    Duration,
    validation::{Problems, Validate, ValidationErrors},
};

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

/// A Service whose traffic a route governs.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// The Service's name.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The Service's namespace; defaults to the route's own namespace.
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

/// Conditions on a request. All that are given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatch {
    /// The request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// Request headers; all must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub headers: Vec<HeaderMatch>,
    /// Query parameters; all must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub query_params: Vec<QueryParamMatch>,
    /// The request method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::schema::no_null_in_enum)]
    pub method: Option<HttpMethod>,
}

/// How a request path is matched.
#[derive(KubeSchema, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("self.type == 'RegularExpression' || self.value.startsWith('/')").message("an Exact or PathPrefix path must start with '/'"))]
#[serde(rename_all = "camelCase")]
pub struct PathMatch {
    /// `Exact`, `PathPrefix` (whole path segments: `/api` matches `/api` and `/api/v1`, not
    /// `/apis`) or `RegularExpression` (RE2 syntax, must match the whole path).
    #[serde(default, rename = "type")]
    pub kind: PathMatchType,
    /// The path, or the regular expression.
    #[schemars(length(min = 1, max = 1024))]
    pub value: String,
}

impl Default for PathMatch {
    fn default() -> Self {
        PathMatch {
            kind: PathMatchType::PathPrefix,
            value: "/".into(),
        }
    }
}

/// How a path is compared: Exact, PathPrefix or RegularExpression.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
pub enum PathMatchType {
    Exact,
    #[default]
    PathPrefix,
    RegularExpression,
}

/// How a header or query value is compared: Exact or RegularExpression (RE2, whole value).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
pub enum StringMatchType {
    #[default]
    Exact,
    RegularExpression,
}

/// A condition on one request header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(default, rename = "type")]
    pub kind: StringMatchType,
    /// The header's name, case-insensitive.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// The value, or the regular expression it must match.
    #[schemars(length(max = 4096))]
    pub value: String,
}

/// A condition on one query parameter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueryParamMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(default, rename = "type")]
    pub kind: StringMatchType,
    /// The parameter's name, case-sensitive.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// The value, or the regular expression it must match.
    #[schemars(length(max = 1024))]
    pub value: String,
}

/// An HTTP method: GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE or PATCH.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Connect => "CONNECT",
            HttpMethod::Options => "OPTIONS",
            HttpMethod::Trace => "TRACE",
            HttpMethod::Patch => "PATCH",
        }
    }
}

/// A destination: a Service, or the subset of its pods that carry the given labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    /// The Service's name.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The Service's namespace; defaults to the route's own namespace.
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

/// Header changes. Names are case-insensitive.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderModifier {
    /// Headers to set, replacing any value already there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub set: Vec<HttpHeader>,
    /// Headers to add, keeping values already there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub add: Vec<HttpHeader>,
    /// Names of headers to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct HttpHeader {
    /// The header's name.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// The header's value.
    #[schemars(length(max = 4096))]
    pub value: String,
}

/// A rewrite of a forwarded request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UrlRewrite {
    /// The Host header to send upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub hostname: Option<String>,
    /// The path to send upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

/// A new path: either the whole path, or the part a `PathPrefix` match matched. Give exactly one.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.replaceFullPath) != has(self.replacePrefixMatch)").message("give exactly one of replaceFullPath and replacePrefixMatch"))]
#[serde(rename_all = "camelCase")]
pub struct PathModifier {
    /// Replaces the whole path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub replace_full_path: Option<String>,
    /// Replaces the prefix that the rule's `PathPrefix` match matched; every match of the
    /// rule must then be a `PathPrefix` match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub replace_prefix_match: Option<String>,
}

/// An HTTP redirect. Parts not given are kept from the request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Redirect {
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::schema::no_null_in_enum)]
    pub scheme: Option<RedirectScheme>,
    /// The host to redirect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub hostname: Option<String>,
    /// The path to redirect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    /// The port to redirect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// 301, 302 (default), 303, 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i32>,
}

/// The scheme of a redirect: http or https.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RedirectScheme {
    Http,
    Https,
}

/// A copy of traffic sent to another Service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Mirror {
    /// The Service that receives the copies.
    pub backend_ref: MirrorBackend,
    /// The share of matching requests to copy, 0 to 100.
    #[serde(default = "default_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub percent: i32,
}

fn default_percent() -> i32 {
    100
}

/// The Service a mirror sends to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MirrorBackend {
    /// The Service's name.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The Service's namespace; defaults to the route's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Service port; defaults to the port the request arrived on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// Request timeouts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// How long the whole request may take, retries included, before the client gets a 504.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Duration>,
    /// How long one attempt at a backend may take; at most `request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<Duration>,
}

/// When and how often a failed request is tried again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    /// Attempts after the first, 0 to 10.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10))]
    pub attempts: i32,
    /// The time limit of each attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    /// The first wait between attempts; it grows exponentially up to ten times this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
    /// Which failures are retried. Empty means connect-failure, refused-stream and
    /// unavailable-like 5xx answers (`gateway-error`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub retry_on: Vec<RetryOn>,
    /// HTTP status codes that are retried, in addition to `retryOn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(range(min = 400, max = 599)))]
    pub codes: Vec<i32>,
}

/// A failure that is retried: 5xx (any 5xx answer), gateway-error (502, 503, 504), reset
/// (the connection broke), connect-failure, refused-stream, retriable-4xx (409).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum RetryOn {
    #[serde(rename = "5xx")]
    ServerError,
    #[serde(rename = "gateway-error")]
    GatewayError,
    #[serde(rename = "reset")]
    Reset,
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    #[serde(rename = "refused-stream")]
    RefusedStream,
    #[serde(rename = "retriable-4xx")]
    Retriable4xx,
}

impl RetryOn {
    /// The name Envoy's `retry_on` uses, which is also the name users write.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryOn::ServerError => "5xx",
            RetryOn::GatewayError => "gateway-error",
            RetryOn::Reset => "reset",
            RetryOn::ConnectFailure => "connect-failure",
            RetryOn::RefusedStream => "refused-stream",
            RetryOn::Retriable4xx => "retriable-4xx",
        }
    }
}

/// Faults injected into requests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    /// Delays a share of requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    /// Answers a share of requests with an error status instead of forwarding them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

/// An injected delay.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FaultDelay {
    /// How long to hold each delayed request.
    pub fixed_delay: Duration,
    /// The share of requests to delay, 0 to 100.
    #[serde(default = "default_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub percent: i32,
}

/// An injected error.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FaultAbort {
    /// The HTTP status to answer with, 200 to 599.
    #[schemars(range(min = 200, max = 599))]
    pub http_status: i32,
    /// The share of requests to abort, 0 to 100.
    #[serde(default = "default_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub percent: i32,
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

/// What the controller observed about the route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficRouteStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`, `ResolvedRefs` and `Programmed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// How the proxies this route configures took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxies: Option<ProxyCounts>,
}

/// Proxy counts for one generation of a route.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyCounts {
    /// Proxies whose config this route changes.
    pub affected: i32,
    /// Of those, the ones that acknowledged it.
    pub acked: i32,
    /// Of those, the ones that rejected it (see the `Programmed` condition for the message).
    pub nacked: i32,
}

const REDIRECT_CODES: [i32; 5] = [301, 302, 303, 307, 308];

impl Validate for TrafficRouteSpec {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut p = Problems::default();
        if self.parent_refs.is_empty() {
            p.add(
                "spec.parentRefs",
                "name at least one Service whose traffic this route governs",
            );
        }
        let mut parents = BTreeSet::new();
        for (i, parent) in self.parent_refs.iter().enumerate() {
            let path = format!("spec.parentRefs[{i}]");
            p.dns_label(&format!("{path}.name"), &parent.name);
            if let Some(ns) = &parent.namespace {
                p.dns_label(&format!("{path}.namespace"), ns);
            }
            if let Some(port) = parent.port {
                p.port(&format!("{path}.port"), port);
            }
            if !parents.insert(parent) {
                p.add(path, "this parent is listed twice; remove the duplicate");
            }
        }
        if self.http.is_empty() && self.tcp.is_empty() {
            p.add("spec", "a route needs at least one rule in http or tcp");
        }
        let mut names = BTreeSet::new();
        for (i, rule) in self.http.iter().enumerate() {
            let path = format!("spec.http[{i}]");
            rule_name(&mut p, &mut names, &path, rule.name.as_deref());
            validate_http_rule(&mut p, &path, rule);
        }
        for (i, rule) in self.tcp.iter().enumerate() {
            let path = format!("spec.tcp[{i}]");
            rule_name(&mut p, &mut names, &path, rule.name.as_deref());
            if rule.backend_refs.is_empty() {
                p.add(
                    format!("{path}.backendRefs"),
                    "a tcp rule needs at least one backendRef",
                );
            }
            backends(&mut p, &path, &rule.backend_refs);
        }
        p.finish()
    }
}

impl Validate for TrafficRoute {
    fn validate(&self) -> Result<(), ValidationErrors> {
        self.spec.validate()
    }
}

fn rule_name<'a>(
    p: &mut Problems,
    names: &mut BTreeSet<&'a str>,
    path: &str,
    name: Option<&'a str>,
) {
    if let Some(name) = name {
        p.dns_label(&format!("{path}.name"), name);
        if !names.insert(name) {
            p.add(
                format!("{path}.name"),
                format!(
                    "rule name {name:?} is used twice in this route; rule names must be unique"
                ),
            );
        }
    }
}

fn validate_http_rule(p: &mut Problems, path: &str, rule: &HttpRule) {
    for (j, m) in rule.matches.iter().enumerate() {
        let mpath = format!("{path}.matches[{j}]");
        if let Some(pm) = &m.path {
            let vpath = format!("{mpath}.path.value");
            match pm.kind {
                PathMatchType::RegularExpression => p.regex(&vpath, &pm.value),
                PathMatchType::Exact | PathMatchType::PathPrefix => {
                    if !pm.value.starts_with('/') {
                        p.add(
                            vpath,
                            format!(
                                "{:?} must start with '/' (write \"/{}\")",
                                pm.value, pm.value
                            ),
                        );
                    } else if pm.value.contains(['?', '#']) {
                        p.add(vpath, "a path match cannot contain '?' or '#'; match query parameters with queryParams");
                    }
                }
            }
        }
        let mut header_names = BTreeSet::new();
        for (k, h) in m.headers.iter().enumerate() {
            let hpath = format!("{mpath}.headers[{k}]");
            p.http_header_name(&format!("{hpath}.name"), &h.name);
            if !header_names.insert(h.name.to_ascii_lowercase()) {
                p.add(
                    format!("{hpath}.name"),
                    format!(
                        "header {:?} is matched twice in one match; combine the conditions",
                        h.name
                    ),
                );
            }
            if h.kind == StringMatchType::RegularExpression {
                p.regex(&format!("{hpath}.value"), &h.value);
            }
        }
        let mut query_names = BTreeSet::new();
        for (k, q) in m.query_params.iter().enumerate() {
            let qpath = format!("{mpath}.queryParams[{k}]");
            if !query_names.insert(q.name.as_str()) {
                p.add(format!("{qpath}.name"), format!("query parameter {:?} is matched twice in one match; combine the conditions", q.name));
            }
            if q.kind == StringMatchType::RegularExpression {
                p.regex(&format!("{qpath}.value"), &q.value);
            }
        }
    }

    match (&rule.redirect, rule.backend_refs.is_empty()) {
        (Some(_), false) => p.add(
            format!("{path}.redirect"),
            "a rule either redirects or forwards to backendRefs, not both: remove one",
        ),
        (None, true) => p.add(
            format!("{path}.backendRefs"),
            "a rule needs backendRefs to forward to, or a redirect",
        ),
        _ => {}
    }
    backends(p, path, &rule.backend_refs);

    for (field, modifier) in [
        ("requestHeaders", &rule.request_headers),
        ("responseHeaders", &rule.response_headers),
    ] {
        if let Some(m) = modifier {
            header_modifier(p, &format!("{path}.{field}"), m);
        }
    }

    if let Some(rewrite) = &rule.rewrite {
        if rule.redirect.is_some() {
            p.add(
                format!("{path}.rewrite"),
                "a redirect cannot be combined with a rewrite; put the new path in redirect.path",
            );
        }
        if let Some(pm) = &rewrite.path {
            path_modifier(p, &format!("{path}.rewrite.path"), pm);
            if pm.replace_prefix_match.is_some() {
                let all_prefix = !rule.matches.is_empty()
                    && rule.matches.iter().all(|m| {
                        m.path
                            .as_ref()
                            .is_some_and(|pm| pm.kind == PathMatchType::PathPrefix)
                    });
                if !all_prefix {
                    p.add(
                        format!("{path}.rewrite.path.replacePrefixMatch"),
                        "replacePrefixMatch needs every match of the rule to have a PathPrefix path match; add one or use replaceFullPath",
                    );
                }
            }
        }
    }

    if let Some(redirect) = &rule.redirect {
        let rpath = format!("{path}.redirect");
        if let Some(code) = redirect.status_code
            && !REDIRECT_CODES.contains(&code)
        {
            p.add(
                format!("{rpath}.statusCode"),
                format!("{code} is not a redirect status: use 301, 302, 303, 307 or 308"),
            );
        }
        if let Some(port) = redirect.port {
            p.port(&format!("{rpath}.port"), port);
        }
        if let Some(pm) = &redirect.path {
            path_modifier(p, &format!("{rpath}.path"), pm);
        }
    }

    if let Some(mirror) = &rule.mirror {
        let mpath = format!("{path}.mirror");
        p.dns_label(
            &format!("{mpath}.backendRef.name"),
            &mirror.backend_ref.name,
        );
        if let Some(ns) = &mirror.backend_ref.namespace {
            p.dns_label(&format!("{mpath}.backendRef.namespace"), ns);
        }
        if let Some(port) = mirror.backend_ref.port {
            p.port(&format!("{mpath}.backendRef.port"), port);
        }
        p.percent(&format!("{mpath}.percent"), mirror.percent);
    }

    let mut request_timeout = None;
    if let Some(t) = &rule.timeouts {
        let tpath = format!("{path}.timeouts");
        request_timeout = p.duration(&format!("{tpath}.request"), &t.request);
        let backend = p.duration(&format!("{tpath}.backendRequest"), &t.backend_request);
        if let (Some(req), Some(backend)) = (request_timeout, backend)
            && !req.is_zero()
            && backend > req
        {
            p.add(
                format!("{tpath}.backendRequest"),
                "backendRequest cannot be longer than request; shorten it or raise request",
            );
        }
    }

    if let Some(retry) = &rule.retry {
        validate_retry(p, &format!("{path}.retry"), retry, request_timeout);
    }

    if let Some(fault) = &rule.fault {
        let fpath = format!("{path}.fault");
        if fault.delay.is_none() && fault.abort.is_none() {
            p.add(fpath.clone(), "a fault needs a delay, an abort or both");
        }
        if let Some(delay) = &fault.delay {
            p.duration(
                &format!("{fpath}.delay.fixedDelay"),
                &Some(delay.fixed_delay.clone()),
            );
            p.percent(&format!("{fpath}.delay.percent"), delay.percent);
        }
        if let Some(abort) = &fault.abort {
            if !(200..=599).contains(&abort.http_status) {
                p.add(
                    format!("{fpath}.abort.httpStatus"),
                    format!(
                        "{} is not an HTTP status: use 200 to 599, e.g. 503",
                        abort.http_status
                    ),
                );
            }
            p.percent(&format!("{fpath}.abort.percent"), abort.percent);
        }
    }
}

pub(crate) fn validate_retry(
    p: &mut Problems,
    path: &str,
    retry: &Retry,
    request_timeout: Option<std::time::Duration>,
) {
    if !(0..=10).contains(&retry.attempts) {
        p.add(
            format!("{path}.attempts"),
            format!("{} retries is out of range: use 0 to 10", retry.attempts),
        );
    }
    let per_try = p.duration(&format!("{path}.perTryTimeout"), &retry.per_try_timeout);
    p.duration(&format!("{path}.backoff"), &retry.backoff);
    if let (Some(per_try), Some(req)) = (per_try, request_timeout)
        && !req.is_zero()
        && per_try > req
    {
        p.add(
            format!("{path}.perTryTimeout"),
            "perTryTimeout is longer than timeouts.request, so no retry could ever run; shorten it",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, on) in retry.retry_on.iter().enumerate() {
        if !seen.insert(on) {
            p.add(
                format!("{path}.retryOn[{i}]"),
                format!("{:?} is listed twice; remove the duplicate", on.as_str()),
            );
        }
    }
    for (i, code) in retry.codes.iter().enumerate() {
        if !(400..=599).contains(code) {
            p.add(
                format!("{path}.codes[{i}]"),
                format!("{code} is not a retriable status: use 400 to 599"),
            );
        }
    }
}

fn backends(p: &mut Problems, path: &str, refs: &[BackendRef]) {
    let mut total: i64 = 0;
    for (i, b) in refs.iter().enumerate() {
        let bpath = format!("{path}.backendRefs[{i}]");
        p.dns_label(&format!("{bpath}.name"), &b.name);
        if let Some(ns) = &b.namespace {
            p.dns_label(&format!("{bpath}.namespace"), ns);
        }
        if let Some(port) = b.port {
            p.port(&format!("{bpath}.port"), port);
        }
        if !(0..=1_000_000).contains(&b.weight) {
            p.add(
                format!("{bpath}.weight"),
                format!(
                    "{} is out of range: use a weight from 0 to 1000000",
                    b.weight
                ),
            );
        } else {
            total += i64::from(b.weight);
        }
        for (k, v) in &b.subset {
            p.label_key(&format!("{bpath}.subset"), k);
            p.label_value(&format!("{bpath}.subset.{k}"), v);
        }
    }
    if !refs.is_empty() && total == 0 {
        p.add(format!("{path}.backendRefs"), "every weight is 0, so no traffic could be sent; give at least one backend a weight above 0");
    }
}

fn header_modifier(p: &mut Problems, path: &str, m: &HeaderModifier) {
    let mut set_names = BTreeSet::new();
    for (i, h) in m.set.iter().enumerate() {
        p.http_header_name(&format!("{path}.set[{i}].name"), &h.name);
        if !set_names.insert(h.name.to_ascii_lowercase()) {
            p.add(
                format!("{path}.set[{i}].name"),
                format!("header {:?} is set twice; keep one", h.name),
            );
        }
    }
    for (i, h) in m.add.iter().enumerate() {
        p.http_header_name(&format!("{path}.add[{i}].name"), &h.name);
    }
    for (i, name) in m.remove.iter().enumerate() {
        p.http_header_name(&format!("{path}.remove[{i}]"), name);
        if set_names.contains(&name.to_ascii_lowercase()) {
            p.add(
                format!("{path}.remove[{i}]"),
                format!("header {name:?} is both set and removed; keep one"),
            );
        }
    }
}

fn path_modifier(p: &mut Problems, path: &str, m: &PathModifier) {
    match (&m.replace_full_path, &m.replace_prefix_match) {
        (Some(_), Some(_)) | (None, None) => p.add(
            path,
            "give exactly one of replaceFullPath and replacePrefixMatch",
        ),
        (Some(v), None) | (None, Some(v)) => {
            if !v.starts_with('/') {
                p.add(path, format!("the new path {v:?} must start with '/'"));
            }
        }
    }
}
