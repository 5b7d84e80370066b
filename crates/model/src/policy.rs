//! Which `SidecarPolicy` governs a proxy, and what it means for the proxy's outbound config.

use std::{cmp::Ordering, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use remora_api::{
    SidecarPolicySpec,
    sidecar_policy::{
        AccessLogFormat, EgressScope, MtlsMode, UnknownDestinations, proxy_port_role,
    },
    traffic_route::Retry,
};

use crate::{
    config::{CircuitBreaker, OutlierDetection, RetryPolicy, content_hash},
    input::{Labels, MeshSettings, ObjectKey},
    selector,
};

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A policy as the model keeps it: the last spec that passed validation stays in effect
/// while a newer, broken one is reported.
#[derive(Clone, Debug)]
pub struct PolicyState {
    /// The policy's key.
    pub key: ObjectKey,
    /// Its creation time: older policies take precedence.
    pub created: Option<Time>,
    /// The `metadata.generation` of the latest spec seen, valid or not.
    pub generation: Option<i64>,
    /// The spec in effect; `None` if no spec of this policy ever passed validation.
    pub accepted: Option<SidecarPolicySpec>,
    /// Why the latest spec failed validation; empty when it passed.
    pub problems: Vec<remora_api::FieldError>,
}

/// Whether a policy covers a pod, given the pod's namespace labels.
fn covers(
    settings: &MeshSettings,
    policy: &PolicyState,
    spec: &SidecarPolicySpec,
    pod_ns: &str,
    pod_labels: &Labels,
    ns_labels: Option<&Labels>,
) -> bool {
    let in_scope = if policy.key.namespace == pod_ns {
        true
    } else if policy.key.namespace == settings.root_namespace {
        let Some(ns_labels) = ns_labels else {
            return false;
        };
        match &spec.namespace_selector {
            Some(sel) => selector::matches(sel, ns_labels),
            None => ns_labels
                .get(&settings.mesh_label)
                .is_some_and(|v| v == "enabled"),
        }
    } else {
        false
    };
    in_scope
        && spec
            .selector
            .as_ref()
            .is_none_or(|sel| selector::matches(sel, pod_labels))
}

/// The documented precedence: namespace-local over root, a selector over none, older over
/// newer, then by name. `Less` means `a` wins.
fn precedence(pod_ns: &str, a: &PolicyState, b: &PolicyState) -> Ordering {
    let local = |p: &PolicyState| p.key.namespace != pod_ns;
    let unselective = |p: &PolicyState| p.accepted.as_ref().is_none_or(|s| s.selector.is_none());
    // A missing timestamp only happens for objects that never reached an API server; they
    // sort after every stamped one so the order stays total and stable.
    let created = |p: &PolicyState| (p.created.is_none(), p.created.as_ref().map(|t| t.0));
    local(a)
        .cmp(&local(b))
        .then(unselective(a).cmp(&unselective(b)))
        .then(created(a).cmp(&created(b)))
        .then(a.key.cmp(&b.key))
}

/// The policy that governs a pod in `pod_ns` with `pod_labels`, if any.
pub fn resolve<'a>(
    settings: &MeshSettings,
    policies: impl Iterator<Item = &'a PolicyState>,
    pod_ns: &str,
    pod_labels: &Labels,
    ns_labels: Option<&Labels>,
) -> Option<&'a PolicyState> {
    policies
        .filter(|p| {
            p.accepted
                .as_ref()
                .is_some_and(|spec| covers(settings, p, spec, pod_ns, pod_labels, ns_labels))
        })
        .min_by(|a, b| precedence(pod_ns, a, b))
}

/// What a policy contributes to outbound config, reduced to what the model uses.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Defaults {
    /// For every cluster (5 s unless the policy says otherwise).
    pub connect_timeout: Duration,
    /// For routes that set none; `None` means no limit.
    pub request_timeout: Option<Duration>,
    /// For routes that set none.
    pub retry: Option<RetryPolicy>,
    /// For every outbound cluster.
    pub outlier_detection: Option<OutlierDetection>,
    /// For every outbound cluster.
    pub circuit_breaker: Option<CircuitBreaker>,
    /// The format of every listener's access log; `None` logs nothing.
    pub access_log: Option<AccessLogFormat>,
    /// `<namespace>/<name>` patterns of the Services the proxies may reach (`*` for any,
    /// `.` for the proxy's own namespace); `None` reaches every Service.
    pub egress: Option<Vec<String>>,
    /// The inbound ports whose connections reach the proxy.
    pub inbound: InboundPorts,
    /// What captured outbound traffic the mesh does not route meets.
    pub unknown_destinations: UnknownDestinations,
    /// Whether the proxies take mutual TLS only, beside plaintext, or not at all (and then
    /// never originate it either); only with workload identity.
    pub mtls: MtlsMode,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: None,
            retry: None,
            outlier_detection: None,
            circuit_breaker: None,
            access_log: None,
            egress: None,
            inbound: InboundPorts::default(),
            unknown_destinations: UnknownDestinations::Passthrough,
            mtls: MtlsMode::Permissive,
        }
    }
}

impl Defaults {
    /// Reads a validated spec; values validation would have rejected cannot occur.
    pub fn from_spec(spec: &SidecarPolicySpec) -> Defaults {
        let t = &spec.traffic;
        let dur = |d: &Option<remora_api::Duration>| d.as_ref().and_then(|d| d.parse().ok());
        Defaults {
            connect_timeout: dur(&t.connect_timeout).unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            request_timeout: dur(&t.request_timeout).filter(|d| !d.is_zero()),
            retry: t.retries.as_ref().map(retry_policy),
            outlier_detection: t.outlier_detection.as_ref().map(|o| OutlierDetection {
                consecutive_errors: o.consecutive_errors.max(1).unsigned_abs(),
                interval: dur(&o.interval).unwrap_or(Duration::from_secs(10)),
                base_ejection_time: dur(&o.base_ejection_time).unwrap_or(Duration::from_secs(30)),
                max_ejection_percent: o.max_ejection_percent.clamp(0, 100).unsigned_abs(),
            }),
            circuit_breaker: t.circuit_breaker.as_ref().map(|c| {
                let v = |x: Option<i32>| x.map(i32::unsigned_abs);
                CircuitBreaker {
                    max_connections: v(c.max_connections),
                    max_pending_requests: v(c.max_pending_requests),
                    max_requests: v(c.max_requests),
                    max_retries: v(c.max_retries),
                }
            }),
            access_log: t.access_log.as_ref().map(|a| a.format),
            egress: spec.egress.as_ref().map(|e: &EgressScope| e.hosts.clone()),
            inbound: InboundPorts::from_spec(spec),
            unknown_destinations: spec.proxy.interception.unknown_destinations,
            mtls: spec.mtls.mode,
        }
    }

    /// A content hash: equal defaults have equal ids, which is what lets classes share
    /// pieces of config built from them.
    pub fn id(&self) -> u64 {
        content_hash(self)
    }

    /// Whether the egress scope lets a proxy in `namespace` reach `service`.
    pub fn reaches(&self, namespace: &str, service: &ObjectKey) -> bool {
        let Some(hosts) = &self.egress else {
            return true;
        };
        hosts.iter().any(|h| {
            let Some((ns, name)) = h.split_once('/') else {
                return false;
            };
            let ns_ok = match ns {
                "*" => true,
                "." => service.namespace == namespace,
                ns => service.namespace == ns,
            };
            ns_ok && (name == "*" || name == service.name)
        })
    }
}

/// The inbound ports of a pod whose connections `remora init-network` redirects to the
/// proxy, which serves them: every port unless the policy lists some, less those it
/// excludes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct InboundPorts {
    /// The only ports intercepted; empty intercepts every port.
    pub only: Vec<u16>,
    /// Ports never intercepted.
    pub except: Vec<u16>,
}

impl InboundPorts {
    /// The policy's `proxy.interception` ports.
    pub fn from_spec(spec: &SidecarPolicySpec) -> InboundPorts {
        let ports = |v: &[i32]| v.iter().filter_map(|p| u16::try_from(*p).ok()).collect();
        let i = &spec.proxy.interception;
        InboundPorts {
            only: ports(&i.inbound_ports),
            except: ports(&i.exclude_inbound_ports),
        }
    }

    /// Whether connections to this port of the pod reach the proxy, which then serves it.
    /// The proxy's own ports never count: a chain for a capture port would send the
    /// proxy's connections to itself.
    pub fn intercepts(&self, port: u16) -> bool {
        (self.only.is_empty() || self.only.contains(&port))
            && !self.except.contains(&port)
            && proxy_port_role(port.into()).is_none()
    }
}

/// A retry as a policy or a route rule states it, with conditions defaulted (connection
/// failures and gateway errors), sorted and deduplicated, and attempts capped at 10.
pub fn retry_policy(r: &Retry) -> RetryPolicy {
    let dur = |d: &Option<remora_api::Duration>| d.as_ref().and_then(|d| d.parse().ok());
    let mut retry_on: Vec<&'static str> = if r.retry_on.is_empty() {
        vec!["connect-failure", "refused-stream", "gateway-error"]
    } else {
        r.retry_on.iter().map(|o| o.as_str()).collect()
    };
    retry_on.sort_unstable();
    retry_on.dedup();
    let mut status_codes: Vec<u32> = r.codes.iter().map(|c| c.unsigned_abs()).collect();
    status_codes.sort_unstable();
    status_codes.dedup();
    RetryPolicy {
        attempts: r.attempts.clamp(0, 10).unsigned_abs(),
        per_try_timeout: dur(&r.per_try_timeout),
        backoff: dur(&r.backoff),
        retry_on,
        status_codes,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::LabelSelector, jiff::Timestamp};

    use super::*;
    use crate::input::Pod;

    fn spec(
        selector: Option<&[(&str, &str)]>,
        ns_selector: Option<&[(&str, &str)]>,
    ) -> SidecarPolicySpec {
        let sel = |pairs: &[(&str, &str)]| LabelSelector {
            match_labels: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            match_expressions: None,
        };
        SidecarPolicySpec {
            selector: selector.map(sel),
            namespace_selector: ns_selector.map(sel),
            ..remora_synthetic::policy_spec()
        }
    }

    fn policy(ns: &str, name: &str, created_secs: i64, spec: SidecarPolicySpec) -> PolicyState {
        PolicyState {
            key: ObjectKey::new(ns, name),
            created: Some(Time(Timestamp::from_second(created_secs).expect("time"))),
            generation: Some(1),
            accepted: Some(spec),
            problems: vec![],
        }
    }

    fn pod(ns: &str, labels: &[(&str, &str)]) -> Pod {
        Pod {
            namespace: ns.into(),
            name: "p".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            service_account: "default".into(),
            ip: None,
            sidecar: true,
            ports: vec![],
        }
    }

    fn winner(policies: &[PolicyState], pod: &Pod, ns_labels: &[(&str, &str)]) -> Option<String> {
        let ns: BTreeMap<String, String> = ns_labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve(
            &MeshSettings::default(),
            policies.iter(),
            &pod.namespace,
            &pod.labels,
            Some(&ns),
        )
        .map(|p| p.key.to_string())
    }

    const MESH: &[(&str, &str)] = &[("remora.dev/mesh", "enabled")];

    #[test]
    fn namespace_local_beats_root() {
        let policies = [
            policy(
                "remora-system",
                "fleet",
                1,
                spec(Some(&[("app", "web")]), None),
            ),
            policy("shop", "local", 9, spec(None, None)),
        ];
        assert_eq!(
            winner(&policies, &pod("shop", &[("app", "web")]), MESH),
            Some("shop/local".into())
        );
    }

    #[test]
    fn selector_beats_no_selector_then_oldest_then_name() {
        let policies = [
            policy("shop", "all", 1, spec(None, None)),
            policy("shop", "web-new", 5, spec(Some(&[("app", "web")]), None)),
            policy("shop", "web-old", 3, spec(Some(&[("app", "web")]), None)),
            policy("shop", "web-old-b", 3, spec(Some(&[("app", "web")]), None)),
        ];
        assert_eq!(
            winner(&policies, &pod("shop", &[("app", "web")]), &[]),
            Some("shop/web-old".into())
        );
        assert_eq!(
            winner(&policies, &pod("shop", &[("app", "db")]), &[]),
            Some("shop/all".into())
        );
    }

    #[test]
    fn root_policies_need_opt_in_or_a_namespace_selector() {
        let fleet = [policy("remora-system", "fleet", 1, spec(None, None))];
        assert_eq!(
            winner(&fleet, &pod("shop", &[]), MESH),
            Some("remora-system/fleet".into())
        );
        assert_eq!(winner(&fleet, &pod("shop", &[]), &[]), None);
        let selected = [policy(
            "remora-system",
            "team",
            1,
            spec(None, Some(&[("team", "a")])),
        )];
        assert_eq!(
            winner(&selected, &pod("shop", &[]), &[("team", "a")]),
            Some("remora-system/team".into())
        );
        assert_eq!(winner(&selected, &pod("shop", &[]), &[("team", "b")]), None);
        // A policy in an ordinary namespace never reaches across namespaces.
        let other = [policy(
            "payments",
            "p",
            1,
            spec(None, Some(&[("team", "a")])),
        )];
        assert_eq!(winner(&other, &pod("shop", &[]), &[("team", "a")]), None);
    }

    #[test]
    fn a_rejected_policy_governs_nothing() {
        let mut broken = policy("shop", "broken", 1, spec(None, None));
        broken.accepted = None;
        let policies = [
            broken,
            policy("remora-system", "fleet", 5, spec(None, None)),
        ];
        assert_eq!(
            winner(&policies, &pod("shop", &[]), MESH),
            Some("remora-system/fleet".into())
        );
    }

    #[test]
    fn egress_scope() {
        let d = Defaults {
            egress: Some(vec!["./*".into(), "payments/checkout".into()]),
            ..Defaults::default()
        };
        assert!(d.reaches("shop", &ObjectKey::new("shop", "cart")));
        assert!(d.reaches("shop", &ObjectKey::new("payments", "checkout")));
        assert!(!d.reaches("shop", &ObjectKey::new("payments", "ledger")));
        assert!(!d.reaches("shop", &ObjectKey::new("other", "cart")));
        assert!(Defaults::default().reaches("shop", &ObjectKey::new("any", "thing")));
        let all = Defaults {
            egress: Some(vec!["*/*".into()]),
            ..Defaults::default()
        };
        assert!(all.reaches("shop", &ObjectKey::new("x", "y")));
    }
}
