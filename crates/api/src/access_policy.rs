//! `AccessPolicy`: who may call a workload, and what, enforced by its sidecar on the way in.

mod status;
mod validate;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use status::{AccessPolicyStatus, AuditedDenial};

use crate::traffic_route::{HeaderMatch, HttpMethod, PathMatch};

/// Says who may call the selected workloads, and what: rules that allow or deny by the
/// caller's verified identity, the port, and for HTTP the path, method, host and headers.
/// Each workload's sidecar enforces them on the way in; a denied HTTP request gets `403`
/// with the body `RBAC: access denied`, a denied TCP connection is closed.
///
/// Evaluation, for one request to one workload, over the rules of every policy that selects
/// it (those of its namespace, and those of the mesh's root namespace, which reach every
/// namespace):
/// 1. if an `Enforce` rule with action `Deny` matches, the request is denied;
/// 2. else, if the workload has any `Enforce` rule with action `Allow` (on any port), the
///    request is allowed only when one of them matches;
/// 3. else it is allowed.
///
/// `Audit` rules are evaluated the same way beside these, change nothing, and count the
/// requests they would have denied in the policy's status.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "remora.dev",
    version = "v1alpha1",
    kind = "AccessPolicy",
    plural = "accesspolicies",
    namespaced,
    status = "AccessPolicyStatus",
    shortname = "ap",
    category = "remora",
    doc = "Who may call the selected workloads, and what: allow and deny rules by caller identity, port, path, method, host and headers, enforced by their sidecars, with an audit mode.",
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".spec.mode",
        description = "Enforce, or Audit: evaluated and counted, not enforced"
    ),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status",
        description = "Whether the policy is valid and in effect"
    ),
    printcolumn(
        name = "Programmed",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Programmed\")].status",
        description = "Whether the affected proxies acknowledged this generation"
    ),
    printcolumn(
        name = "Workloads",
        type_ = "integer",
        json_path = ".status.workloads",
        description = "Meshed pods the policy protects"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicySpec {
    /// The workloads (pods) it protects, by label. Without a selector it protects every
    /// meshed pod in its namespace; in the mesh's root namespace, in every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,

    /// `Enforce` (the default) applies the rules; `Audit` only counts what they would have
    /// denied, in `status.audit`. A rule may set its own mode.
    #[serde(default)]
    pub mode: AccessMode,

    /// The rules, each with a name unique within the policy.
    #[schemars(length(min = 1, max = 64))]
    pub rules: Vec<AccessRule>,
}

/// Whether rules are enforced or only evaluated and counted.
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
#[schemars(transform = crate::schema::plain_enum)]
pub enum AccessMode {
    /// The rules decide: a denied request gets 403, a denied connection is closed.
    #[default]
    Enforce,
    /// A dry run: the rules change no response; the requests they would have denied are
    /// counted in the policy's status.
    Audit,
}

/// What a matching rule does.
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
#[schemars(transform = crate::schema::plain_enum)]
pub enum AccessAction {
    /// Allows what it matches. A workload with any allow rule denies what none allows.
    #[default]
    Allow,
    /// Denies what it matches, whatever any allow rule says.
    Deny,
}

/// One rule: which callers (`from`), to what (`to`), and whether they are allowed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessRule {
    /// A name unique within the policy; it names the rule in metrics and status.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,

    /// `Allow` (the default) or `Deny`.
    #[serde(default)]
    pub action: AccessAction,

    /// This rule's own mode; without it, the policy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::schema::no_null_in_enum)]
    pub mode: Option<AccessMode>,

    /// The callers it applies to: any one entry must match. Without entries, any caller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub from: Vec<AccessSource>,

    /// What is called. Without it, anything on any port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<AccessTarget>,
}

/// Callers. Every field given must hold; within a list, any one value. An entry that names
/// identities, service accounts or namespaces matches only callers that proved who they are
/// with a mesh certificate (mutual TLS).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessSource {
    /// SPIFFE IDs, e.g. `spiffe://cluster.local/ns/shop/sa/orders`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub identities: Vec<String>,

    /// Service accounts, as `<name>` (in the policy's namespace) or `<namespace>/<name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub service_accounts: Vec<String>,

    /// Namespaces whose workloads are meant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub namespaces: Vec<String>,

    /// `true`: only callers with a mesh certificate; `false`: only callers without one
    /// (plaintext, which a `Permissive` workload accepts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticated: Option<bool>,
}

/// What is called. Every field given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessTarget {
    /// The workload's ports (the ports its containers listen on, not a Service's); any one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub ports: Vec<i32>,

    /// HTTP requests only. On a port that does not carry HTTP, an `Allow` rule with these
    /// conditions allows nothing, and a `Deny` rule denies on its other conditions alone:
    /// a TCP connection has no request to look at, and the safe side is to refuse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<AccessHttp>,
}

/// Conditions on an HTTP request. Every field given must hold; within a list, any one value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessHttp {
    /// Paths, `Exact` or `PathPrefix` (whole segments: `/api` takes `/api/v1`, not `/apis`),
    /// compared without the query string.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub paths: Vec<PathMatch>,

    /// Methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 9))]
    pub methods: Vec<HttpMethod>,

    /// Hosts the request names (its `Host` or `:authority`, with or without a port), exact
    /// or `*.` followed by a domain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub hosts: Vec<String>,

    /// Request headers; all must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub headers: Vec<HeaderMatch>,
}

impl AccessRule {
    /// The mode this rule runs in, given its policy's.
    pub fn mode_in(&self, policy: AccessMode) -> AccessMode {
        self.mode.unwrap_or(policy)
    }

    /// Whether the rule looks into HTTP requests.
    pub fn needs_http(&self) -> bool {
        self.to.as_ref().is_some_and(|t| t.http.is_some())
    }
}
