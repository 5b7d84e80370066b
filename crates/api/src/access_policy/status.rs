//! What the controller reports about an access policy.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::traffic_route::ProxyCounts;

/// What the controller observed about the policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`, `ResolvedRefs`, `Programmed`, and their summaries:
    /// `Ready`, and kstatus's `Reconciling` and `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Meshed pods the policy protects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads: Option<i32>,
    /// How the proxies of those pods took this generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxies: Option<ProxyCounts>,
    /// What the policy's `Audit` rules would have denied lately, by rule and caller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit: Vec<AuditedDenial>,
}

/// Requests an `Audit` rule would have denied, from one caller, in the window the
/// controller counts over (the last ten minutes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditedDenial {
    /// The rule's name; for requests that no allow rule allows, the allow rules' names,
    /// joined by `,`.
    pub rule: String,
    /// The caller's SPIFFE ID, or `unauthenticated`.
    pub source: String,
    /// How many requests (or TCP connections).
    pub requests: i64,
    /// A sentence for people, e.g. "would have denied 37 requests from
    /// spiffe://cluster.local/ns/shop/sa/legacy in the last 10 minutes".
    pub message: String,
}
