//! What one access log entry says an audit rule would have denied. The proxies log only the
//! requests (and connections) a shadow engine denied (`remora_envoy::audit`): its metadata
//! names the rule, its TLS properties the caller.

use std::sync::Arc;

use envoy_types::pb::{
    envoy::data::accesslog::v3::{
        AccessLogCommon, tls_properties::certificate_properties::subject_alt_name::San,
    },
    google::protobuf::{Struct, value::Kind},
};
use remora_envoy::audit::{
    DENIED, RBAC_METADATA, SHADOW_ALLOW_RESULT, SHADOW_DENY_POLICY, SHADOW_DENY_RESULT,
};
use remora_model::config::parse_rule_name;

use crate::Denial;

/// Joins the names of the allow rules a would-be denial counts under.
pub const RULE_SEPARATOR: char = ',';

/// A caller without a certificate.
pub const UNAUTHENTICATED: &str = "unauthenticated";

/// The would-be denials one entry records: none when the request was denied for real (an
/// enforced rule's decision comes after the shadow's), one per audited step that denied it.
/// `audited_allow`: the names of the allow rules the proxy only audits, whose policies a
/// request none of its allow rules allows counts for.
pub fn denials(
    common: &AccessLogCommon,
    enforced_denial: bool,
    audited_allow: &[Arc<str>],
) -> Vec<Denial> {
    if enforced_denial {
        return Vec::new();
    }
    let source = caller(common);
    let metadata = common.metadata.as_ref();
    let mut out = Vec::new();
    for namespace in RBAC_METADATA {
        let Some(fields) = metadata.and_then(|m| m.filter_metadata.get(namespace)) else {
            continue;
        };
        if string(fields, SHADOW_DENY_RESULT) == Some(DENIED)
            && let Some(rule) = string(fields, SHADOW_DENY_POLICY)
        {
            out.extend(denial(rule, &source));
        }
        if string(fields, SHADOW_ALLOW_RESULT) == Some(DENIED) {
            out.extend(allow_denials(audited_allow, &source));
        }
    }
    out
}

/// The caller's SPIFFE ID: the first URI SAN of its certificate.
fn caller(common: &AccessLogCommon) -> String {
    common
        .tls_properties
        .as_ref()
        .and_then(|t| t.peer_certificate_properties.as_ref())
        .and_then(|p| {
            p.subject_alt_name.iter().find_map(|s| match &s.san {
                Some(San::Uri(uri)) => Some(uri.clone()),
                _ => None,
            })
        })
        .unwrap_or_else(|| UNAUTHENTICATED.to_owned())
}

fn string<'a>(fields: &'a Struct, key: &str) -> Option<&'a str> {
    match fields.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s),
        _ => None,
    }
}

/// A rule named `<namespace>/<policy>/<rule>`.
fn denial(rule: &str, source: &str) -> Option<Denial> {
    let (policy, rule) = parse_rule_name(rule)?;
    Some(Denial {
        policy,
        rule: rule.to_owned(),
        source: source.to_owned(),
    })
}

/// What none of the audited allow rules allows counts once for each policy that has them,
/// under their names joined.
fn allow_denials(rules: &[Arc<str>], source: &str) -> Vec<Denial> {
    let mut by_policy: Vec<Denial> = Vec::new();
    for d in rules.iter().filter_map(|r| denial(r, source)) {
        match by_policy.iter_mut().find(|p| p.policy == d.policy) {
            Some(p) => {
                p.rule.push(RULE_SEPARATOR);
                p.rule.push_str(&d.rule);
            }
            None => by_policy.push(d),
        }
    }
    by_policy
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::pb::{
        envoy::{
            config::core::v3::Metadata,
            data::accesslog::v3::{
                TlsProperties,
                tls_properties::{CertificateProperties, certificate_properties::SubjectAltName},
            },
        },
        google::protobuf::Value,
    };

    use remora_model::input::ObjectKey;

    use super::*;

    fn entry(fields: &[(&str, &str)], caller: Option<&str>) -> AccessLogCommon {
        let fields = fields
            .iter()
            .map(|(k, v)| {
                let value = Value {
                    kind: Some(Kind::StringValue((*v).into())),
                };
                ((*k).to_owned(), value)
            })
            .collect();
        AccessLogCommon {
            metadata: Some(Metadata {
                filter_metadata: HashMap::from([(RBAC_METADATA[0].to_owned(), Struct { fields })]),
                ..Default::default()
            }),
            tls_properties: caller.map(|uri| TlsProperties {
                peer_certificate_properties: Some(CertificateProperties {
                    subject_alt_name: vec![SubjectAltName {
                        san: Some(San::Uri(uri.into())),
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn d(policy: &str, rule: &str, source: &str) -> Denial {
        Denial {
            policy: ObjectKey::new("shop", policy),
            rule: rule.into(),
            source: source.into(),
        }
    }

    #[test]
    fn a_shadow_deny_names_its_rule_and_the_caller() {
        let legacy = "spiffe://cluster.local/ns/shop/sa/legacy";
        let e = entry(
            &[
                (SHADOW_DENY_RESULT, DENIED),
                (SHADOW_DENY_POLICY, "shop/payments/no-legacy"),
            ],
            Some(legacy),
        );
        assert_eq!(
            denials(&e, false, &[]),
            [d("payments", "no-legacy", legacy)]
        );
        assert_eq!(
            denials(&e, true, &[]),
            [],
            "denied for real: no would-be denial"
        );
    }

    #[test]
    fn what_no_audited_allow_rule_allows_counts_for_each_of_their_policies() {
        let e = entry(
            &[
                (SHADOW_ALLOW_RESULT, DENIED),
                (SHADOW_DENY_RESULT, "allowed"),
            ],
            None,
        );
        let audited: Vec<Arc<str>> = [
            "shop/payments/reads",
            "shop/payments/health",
            "shop/orders/all",
        ]
        .map(Arc::from)
        .into();
        assert_eq!(
            denials(&e, false, &audited),
            [
                d("payments", "reads,health", UNAUTHENTICATED),
                d("orders", "all", UNAUTHENTICATED)
            ]
        );
    }
}
