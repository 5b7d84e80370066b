//! How a proxy reports what its `Audit` access rules would have denied: a gRPC access log
//! to the control plane (the bootstrap's xDS cluster) with a filter that passes only the
//! requests and connections a shadow RBAC engine denied. The control plane reads the
//! entries back with the keys named here (`remora-audit`).

use envoy_types::pb::envoy::{
    config::{
        accesslog::v3::{
            AccessLog, AccessLogFilter, MetadataFilter, OrFilter, access_log,
            access_log_filter::FilterSpecifier,
        },
        core::v3::{ApiVersion, GrpcService, grpc_service},
    },
    extensions::access_loggers::grpc::v3::{
        CommonGrpcAccessLogConfig, HttpGrpcAccessLogConfig, TcpGrpcAccessLogConfig,
    },
    r#type::matcher::v3::{
        MetadataMatcher, StringMatcher, ValueMatcher,
        metadata_matcher::{PathSegment, path_segment},
        string_matcher::MatchPattern,
        value_matcher,
    },
};
use envoy_types::pb::google::protobuf::{Any, BoolValue};
use remora_model::config::Authorization;

use crate::{bootstrap::XDS_CLUSTER, proto};

/// The access log's name, which the control plane sees on each stream.
pub const LOG_NAME: &str = "remora-audit";
/// Where the RBAC filters, HTTP and network, put their dynamic metadata (whatever the
/// filters' own names).
pub const RBAC_METADATA: [&str; 2] = ["envoy.filters.http.rbac", "envoy.filters.network.rbac"];
/// A shadow engine's verdict that would have refused the request.
pub const DENIED: &str = "denied";
/// The audited deny rules' verdict: [`crate::rbac::AUDIT_DENY_PREFIX`] and Envoy's key.
pub const SHADOW_DENY_RESULT: &str = "remora_audit_deny_shadow_engine_result";
/// The audited deny rule that matched.
pub const SHADOW_DENY_POLICY: &str = "remora_audit_deny_shadow_effective_policy_id";
/// The audited allow rules' verdict ([`crate::rbac::AUDIT_ALLOW_PREFIX`]): `denied` when none of
/// them, nor an enforced one, allows the request.
pub const SHADOW_ALLOW_RESULT: &str = "remora_audit_allow_shadow_engine_result";
/// Whether Envoy's details of a response (or of a closed connection) say an enforced RBAC
/// rule refused it: then no audit rule's verdict is a would-be denial.
pub fn is_enforced_denial(details: &str) -> bool {
    details.starts_with("rbac_access_denied")
}

/// The audit log of every inbound HTTP connection manager: it logs nothing until a shadow
/// engine denies, so it costs nothing where no audit rule is (and is there before one comes,
/// so that audit rules change the routes alone).
pub(crate) fn http_log() -> AccessLog {
    let config = HttpGrpcAccessLogConfig {
        common_config: Some(common()),
        ..Default::default()
    };
    logger("envoy.access_loggers.http_grpc", proto::any(&config), 0)
}

/// The audit log of a TCP proxy protected by `authz`, if it has audit rules.
pub(crate) fn tcp_log(authz: &Authorization) -> Option<AccessLog> {
    let audits = !authz.audit_deny.is_empty() || authz.audit_allow.is_some();
    audits.then(|| {
        let config = TcpGrpcAccessLogConfig {
            common_config: Some(common()),
        };
        logger("envoy.access_loggers.tcp_grpc", proto::any(&config), 1)
    })
}

fn logger(name: &str, config: Any, rbac: usize) -> AccessLog {
    AccessLog {
        name: name.to_owned(),
        filter: Some(denied_by_a_shadow(RBAC_METADATA[rbac])),
        config_type: Some(access_log::ConfigType::TypedConfig(config)),
    }
}

fn common() -> CommonGrpcAccessLogConfig {
    CommonGrpcAccessLogConfig {
        log_name: LOG_NAME.to_owned(),
        grpc_service: Some(GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: XDS_CLUSTER.to_owned(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        transport_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

/// Passes an entry when either shadow engine said `denied`.
fn denied_by_a_shadow(namespace: &str) -> AccessLogFilter {
    let denied = |key: &str| AccessLogFilter {
        filter_specifier: Some(FilterSpecifier::MetadataFilter(MetadataFilter {
            matcher: Some(MetadataMatcher {
                filter: namespace.to_owned(),
                path: vec![PathSegment {
                    segment: Some(path_segment::Segment::Key(key.to_owned())),
                }],
                value: Some(ValueMatcher {
                    match_pattern: Some(value_matcher::MatchPattern::StringMatch(StringMatcher {
                        match_pattern: Some(MatchPattern::Exact(DENIED.to_owned())),
                        ignore_case: false,
                    })),
                }),
                invert: false,
            }),
            match_if_key_not_found: Some(BoolValue { value: false }),
        })),
    };
    AccessLogFilter {
        filter_specifier: Some(FilterSpecifier::OrFilter(OrFilter {
            filters: vec![denied(SHADOW_DENY_RESULT), denied(SHADOW_ALLOW_RESULT)],
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac;

    #[test]
    fn the_keys_are_the_shadow_prefixes_envoy_writes_before_its_own() {
        assert_eq!(
            SHADOW_DENY_RESULT,
            format!("{}shadow_engine_result", rbac::AUDIT_DENY_PREFIX)
        );
        assert_eq!(
            SHADOW_DENY_POLICY,
            format!("{}shadow_effective_policy_id", rbac::AUDIT_DENY_PREFIX)
        );
        assert_eq!(
            SHADOW_ALLOW_RESULT,
            format!("{}shadow_engine_result", rbac::AUDIT_ALLOW_PREFIX)
        );
    }

    #[test]
    fn only_tcp_proxies_with_audit_rules_report() {
        assert!(tcp_log(&Authorization::default()).is_none());
        let authz = Authorization {
            audit_allow: Some(vec![]),
            ..Authorization::default()
        };
        let log = tcp_log(&authz).expect("a log");
        assert_eq!(log.name, "envoy.access_loggers.tcp_grpc");
        assert_eq!(http_log().name, "envoy.access_loggers.http_grpc");
    }
}
