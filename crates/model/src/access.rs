//! Access policies: which rules protect a workload, in the form its sidecar enforces.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use remora_api::{
    AccessPolicySpec, FieldError,
    access_policy::{AccessAction, AccessMode, AccessRule as ApiRule, AccessSource, AccessTarget},
    spiffe::{DEFAULT_TRUST_DOMAIN, SpiffeId},
    traffic_route::{PathMatchType, StringMatchType},
};

use crate::{
    config::{
        AccessRule, Authorization, Caller, HttpConditions, IdentityMatch, PathMatch, StringMatch,
        ValueMatch, rule_name,
    },
    input::{Labels, MeshSettings, ObjectKey},
    selector,
};

/// An access policy as the index keeps it.
#[derive(Clone, Debug)]
pub struct AccessPolicyState {
    /// Its key.
    pub key: ObjectKey,
    /// When it was created.
    pub created: Option<Time>,
    /// The `metadata.generation` of the latest spec seen, valid or not.
    pub generation: Option<i64>,
    /// The spec in effect; `None` if no spec of it ever passed validation.
    pub accepted: Option<AccessPolicySpec>,
    /// Why the latest spec failed validation; empty when it passed.
    pub problems: Vec<FieldError>,
}

impl AccessPolicyState {
    /// Whether it protects a workload in `namespace` with `labels`: its own namespace's, or
    /// every namespace's from the root namespace, as its selector says.
    pub fn protects(&self, settings: &MeshSettings, namespace: &str, labels: &Labels) -> bool {
        let in_scope =
            self.key.namespace == namespace || self.key.namespace == settings.root_namespace;
        in_scope
            && self.accepted.as_ref().is_some_and(|spec| {
                spec.selector
                    .as_ref()
                    .is_none_or(|s| selector::matches(s, labels))
            })
    }
}

/// The rules of `policies` (those that protect one workload, in key order), sorted into
/// the steps that evaluate them; `None` when they have no rules for it.
pub(crate) fn authorization<'a>(
    settings: &MeshSettings,
    policies: impl Iterator<Item = &'a AccessPolicyState>,
) -> Option<Arc<Authorization>> {
    let trust_domain = settings
        .identity
        .as_ref()
        .map_or(DEFAULT_TRUST_DOMAIN, |i| i.trust_domain.as_str());
    let mut out = Authorization::default();
    let (mut allow, mut audit_allow) = (Vec::new(), Vec::new());
    let mut has_allow = false;
    let mut has_audit_allow = false;
    for policy in policies {
        let Some(spec) = &policy.accepted else {
            continue;
        };
        for rule in &spec.rules {
            let compiled = compile(trust_domain, &policy.key, rule);
            match (rule.mode_in(spec.mode), rule.action) {
                (AccessMode::Enforce, AccessAction::Deny) => out.deny.extend(compiled),
                (AccessMode::Audit, AccessAction::Deny) => out.audit_deny.extend(compiled),
                (AccessMode::Enforce, AccessAction::Allow) => {
                    has_allow = true;
                    allow.extend(compiled);
                }
                (AccessMode::Audit, AccessAction::Allow) => {
                    has_audit_allow = true;
                    audit_allow.extend(compiled);
                }
            }
        }
    }
    if has_audit_allow {
        out.audit_allow = Some(allow.iter().cloned().chain(audit_allow).collect());
    }
    if has_allow {
        out.allow = Some(allow);
    }
    (!out.is_empty()).then(|| Arc::new(out))
}

/// One rule as a proxy matches it; `None` when no caller can match it (its `from` entries
/// each ask for what cannot hold together, such as an identity outside the namespaces
/// they name).
fn compile(trust_domain: &str, policy: &ObjectKey, rule: &ApiRule) -> Option<AccessRule> {
    let from: Vec<Caller> = rule
        .from
        .iter()
        .filter_map(|s| caller(trust_domain, &policy.namespace, s))
        .collect();
    if from.is_empty() && !rule.from.is_empty() {
        return None;
    }
    let to = rule.to.as_ref();
    Some(AccessRule {
        name: rule_name(policy, &rule.name),
        from,
        ports: to
            .map(|t| {
                t.ports
                    .iter()
                    .filter_map(|&p| u16::try_from(p).ok())
                    .collect()
            })
            .unwrap_or_default(),
        http: to.and_then(http),
    })
}

/// One `from` entry: its fields must all hold, so its identities, service accounts and
/// namespaces narrow each other down to one list of IDs or prefixes.
fn caller(trust_domain: &str, namespace: &str, s: &AccessSource) -> Option<Caller> {
    let accounts = s.service_accounts.iter().map(|a| {
        let (ns, name) = a.split_once('/').unwrap_or((namespace, a));
        SpiffeId::new(trust_domain, ns, name).to_string()
    });
    let exact: Option<Vec<String>> = match (s.identities.is_empty(), s.service_accounts.is_empty())
    {
        (true, true) => None,
        (false, true) => Some(s.identities.clone()),
        (true, false) => Some(accounts.collect()),
        (false, false) => Some(accounts.filter(|id| s.identities.contains(id)).collect()),
    };
    let in_namespaces = |id: &String| {
        s.namespaces.is_empty()
            || id
                .parse::<SpiffeId>()
                .is_ok_and(|id| s.namespaces.contains(&id.namespace))
    };
    let identities: Vec<IdentityMatch> = match exact {
        Some(ids) => {
            let ids: Vec<_> = ids.into_iter().filter(in_namespaces).collect();
            if ids.is_empty() {
                return None;
            }
            ids.into_iter().map(IdentityMatch::Exact).collect()
        }
        None => s
            .namespaces
            .iter()
            .map(|ns| {
                let prefix = SpiffeId::trust_domain_prefix(trust_domain);
                IdentityMatch::Prefix(format!("{prefix}ns/{ns}/sa/"))
            })
            .collect(),
    };
    let authenticated = if identities.is_empty() {
        s.authenticated
    } else {
        Some(true)
    };
    Some(Caller {
        identities,
        authenticated,
    })
}

fn http(to: &AccessTarget) -> Option<HttpConditions> {
    let http = to.http.as_ref()?;
    Some(HttpConditions {
        paths: http
            .paths
            .iter()
            .map(|p| match p.kind {
                PathMatchType::Exact => PathMatch::Exact(p.value.clone()),
                // Validation refuses regexes here; a prefix is the kind left.
                _ => PathMatch::Prefix(p.value.clone()),
            })
            .collect(),
        methods: http.methods.iter().map(|m| m.as_str()).collect(),
        hosts: http.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        headers: http
            .headers
            .iter()
            .map(|h| StringMatch {
                name: h.name.to_ascii_lowercase(),
                value: match h.kind {
                    StringMatchType::Exact => ValueMatch::Exact(h.value.clone()),
                    StringMatchType::RegularExpression => ValueMatch::Regex(h.value.clone()),
                },
            })
            .collect(),
    })
}
