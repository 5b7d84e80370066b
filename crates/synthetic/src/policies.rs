//! The policies of a synthetic mesh: fleet-wide traffic defaults, and optionally a policy
//! per namespace that adds an egress scope.

use remora_api::{
    SidecarPolicy, SidecarPolicySpec,
    sidecar_policy::{
        AccessLog, CircuitBreaker, EgressScope, OutlierDetection, ProxySpec, RolloutStrategy,
        TrafficDefaults,
    },
    traffic_route::Retry,
};
use remora_model::input::Object;

use crate::{Synthetic, created, namespace_name};

/// A valid policy spec that sets nothing but the proxy: no selectors, no traffic defaults.
pub fn policy_spec() -> SidecarPolicySpec {
    SidecarPolicySpec {
        selector: None,
        namespace_selector: None,
        proxy: ProxySpec {
            image: "envoyproxy/envoy".into(),
            version: "v1.40.0".into(),
            resources: None,
            log_level: Default::default(),
            concurrency: None,
            interception: Default::default(),
        },
        extra_containers: vec![],
        volumes: vec![],
        traffic: TrafficDefaults::default(),
        egress: None,
        mtls: Default::default(),
        rollout: RolloutStrategy::default(),
    }
}

impl Synthetic {
    /// A namespace's own policy: the fleet defaults plus an egress scope of its own namespace
    /// and the shared ones. It must repeat the defaults, since policies never merge.
    pub(crate) fn egress_spec(&self) -> SidecarPolicySpec {
        let mut hosts = vec!["./*".to_string()];
        hosts.extend(
            (0..self.shape.shared_namespaces.min(self.shape.namespaces))
                .map(|k| format!("{}/*", namespace_name(&self.shape, k))),
        );
        SidecarPolicySpec {
            egress: Some(EgressScope { hosts }),
            ..fleet_spec()
        }
    }
}

/// The fleet-wide traffic defaults: what a platform team typically sets for everyone.
pub(crate) fn fleet_spec() -> SidecarPolicySpec {
    SidecarPolicySpec {
        traffic: TrafficDefaults {
            connect_timeout: Some("2s".into()),
            request_timeout: Some("15s".into()),
            retries: Some(Retry {
                attempts: 2,
                ..Default::default()
            }),
            outlier_detection: Some(OutlierDetection {
                consecutive_errors: 5,
                interval: Some("10s".into()),
                base_ejection_time: Some("30s".into()),
                max_ejection_percent: 50,
            }),
            circuit_breaker: Some(CircuitBreaker {
                max_connections: Some(1024),
                max_pending_requests: Some(1024),
                max_requests: Some(4096),
                max_retries: Some(3),
            }),
            access_log: Some(AccessLog::default()),
        },
        ..policy_spec()
    }
}

pub(crate) fn policy(namespace: &str, name: &str, spec: SidecarPolicySpec) -> Object {
    let mut p = SidecarPolicy::new(name, spec);
    p.metadata.namespace = Some(namespace.into());
    p.metadata.creation_timestamp = created(0);
    p.metadata.generation = Some(1);
    Object::SidecarPolicy(Box::new(p))
}
