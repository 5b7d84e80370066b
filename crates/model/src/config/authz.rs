//! Who may call a proxy's workload: the rules of the access policies that select it, in the
//! order its sidecar evaluates them.

use std::sync::Arc;

use serde::Serialize;

use super::{PathMatch, StringMatch};
use crate::input::ObjectKey;

/// The effective rules of one workload, by the step that evaluates them (see
/// `remora_api::AccessPolicy`): enforced denies, then enforced allows; beside them, on the
/// side, the same two steps as they would be with the `Audit` rules enforced too.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Authorization {
    /// Enforced `Deny` rules: a request one matches is refused.
    pub deny: Vec<AccessRule>,
    /// Enforced `Allow` rules; `Some` once the workload has one, and then a request none of
    /// them matches is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<AccessRule>>,
    /// `Audit` rules with action `Deny`: a request one matches is counted, not refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audit_deny: Vec<AccessRule>,
    /// `Some` when the workload has `Audit` rules with action `Allow`: the allow rules as
    /// they would be with those enforced (the enforced ones, then the audited ones); a
    /// request none of them matches is counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_allow: Option<Vec<AccessRule>>,
}

impl Authorization {
    /// The names of the allow rules only audited: what none of the allow rules (enforced or
    /// audited) allows would have been denied by these.
    pub fn audited_allow_rules(&self) -> Vec<Arc<str>> {
        let enforced = self.allow.as_deref().unwrap_or_default();
        self.audit_allow
            .iter()
            .flatten()
            .filter(|r| !enforced.iter().any(|a| a.name == r.name))
            .map(|r| r.name.clone())
            .collect()
    }

    /// Whether it decides or counts anything at all.
    pub fn is_empty(&self) -> bool {
        self.deny.is_empty()
            && self.allow.is_none()
            && self.audit_deny.is_empty()
            && self.audit_allow.is_none()
    }
}

/// A rule's name as proxies, metrics and status carry it: `<namespace>/<policy>/<rule>`.
pub fn rule_name(policy: &ObjectKey, rule: &str) -> Arc<str> {
    format!("{}/{}/{rule}", policy.namespace, policy.name).into()
}

/// The policy and rule a [`rule_name`] names; `None` for a name it did not make.
pub fn parse_rule_name(name: &str) -> Option<(ObjectKey, &str)> {
    let mut parts = name.splitn(3, '/');
    let (namespace, policy, rule) = (parts.next()?, parts.next()?, parts.next()?);
    Some((ObjectKey::new(namespace, policy), rule))
}

/// One rule, as a proxy matches it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct AccessRule {
    /// Its [`rule_name`]: unique in a workload's rules, and what metrics and status call it.
    pub name: Arc<str>,
    /// The callers it applies to, any one; empty: every caller.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Caller>,
    /// The workload's ports it applies to, any one; empty: every port.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Conditions on HTTP requests; `Some` makes the rule one for HTTP only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpConditions>,
}

/// Callers: every condition given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Caller {
    /// The caller's SPIFFE ID from its certificate, any one; empty: any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<IdentityMatch>,
    /// `Some(true)`: with a mesh certificate; `Some(false)`: without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authenticated: Option<bool>,
}

/// A condition on the caller's SPIFFE ID.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum IdentityMatch {
    /// Exactly this ID (an identity, or a service account's).
    Exact(String),
    /// IDs starting with this (`spiffe://<trust domain>/ns/<namespace>/sa/`: a namespace).
    Prefix(String),
}

/// Conditions on an HTTP request: every field given must hold; within one, any value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct HttpConditions {
    /// Paths (`Exact` or `Prefix`), without the query string.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathMatch>,
    /// Methods.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<&'static str>,
    /// Hosts, exact or `*.<domain>`, with or without a port.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Headers (names lowercased), all of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<StringMatch>,
}
