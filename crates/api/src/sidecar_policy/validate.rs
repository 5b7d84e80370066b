//! The checks on a `SidecarPolicy` that the schema cannot express.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Container;

use super::{
    EgressScope, PROXY_CONTAINER, ProxySpec, RolloutStrategy, SharedVolume, SidecarPolicy,
    SidecarPolicySpec, TrafficDefaults,
    version::{check_proxy_version, is_version},
};
use crate::{
    traffic_route::validate_retry,
    validation::{FieldError, Problems, Validate, ValidationErrors, ValidationSettings},
};

impl Validate for SidecarPolicySpec {
    /// A policy has no setting to respect: it names no regexes.
    fn validate_with(&self, _: &ValidationSettings) -> Result<(), ValidationErrors> {
        let mut p = Problems::default();
        if let Some(s) = &self.selector {
            p.label_selector("spec.selector", s);
        }
        if let Some(s) = &self.namespace_selector {
            p.label_selector("spec.namespaceSelector", s);
        }
        validate_proxy(&mut p, &self.proxy);
        validate_extra_containers(&mut p, &self.extra_containers);
        validate_volumes(&mut p, &self.volumes);
        validate_traffic(&mut p, &self.traffic);
        if let Some(egress) = &self.egress {
            validate_egress(&mut p, egress);
        }
        validate_rollout(&mut p, &self.rollout);
        p.finish()
    }
}

impl Validate for SidecarPolicy {
    fn validate_with(&self, settings: &ValidationSettings) -> Result<(), ValidationErrors> {
        self.spec.validate_with(settings)
    }

    fn warnings(&self) -> Vec<FieldError> {
        proxy_tag_warnings(&self.spec.proxy)
    }
}

/// Envoy's official image repository, as Docker Hub names it with and without its registry.
const ENVOY_IMAGE: [&str; 3] = [
    "envoyproxy/envoy",
    "docker.io/envoyproxy/envoy",
    "index.docker.io/envoyproxy/envoy",
];

/// Envoy tags its releases `v1.40.0` (and `distroless-v1.40.0`), never `1.40.0`: without the
/// `v` every injected pod would fail to pull its sidecar image.
fn proxy_tag_warnings(proxy: &ProxySpec) -> Vec<FieldError> {
    let version = proxy.version.as_str();
    if !ENVOY_IMAGE.contains(&proxy.image.as_str())
        || version.starts_with('v')
        || !is_version(version)
    {
        return Vec::new();
    }
    vec![FieldError {
        path: "spec.proxy.version".into(),
        message: format!(
            "{image} publishes no tag {version:?}: its release tags start with v; \
             write v{version} or injected pods will fail to pull {image}:{version}",
            image = proxy.image
        ),
        ..FieldError::default()
    }]
}

fn validate_proxy(p: &mut Problems, proxy: &ProxySpec) {
    let image = proxy.image.as_str();
    let last_segment = image.rsplit('/').next().unwrap_or(image);
    if image.trim().is_empty() {
        p.add(
            "spec.proxy.image",
            "give the proxy image repository, e.g. envoyproxy/envoy",
        );
    } else if image.contains('@') || last_segment.contains(':') {
        p.add("spec.proxy.image", format!("{image:?} carries a tag or digest; give the repository only and put the tag in spec.proxy.version"));
    } else if image.chars().any(char::is_whitespace) {
        p.add(
            "spec.proxy.image",
            format!(
                "{image:?} contains white space; give an image repository such as envoyproxy/envoy"
            ),
        );
    }
    if !is_version(&proxy.version) {
        p.add(
            "spec.proxy.version",
            format!(
                "{:?} is not a version: use MAJOR.MINOR.PATCH such as v1.40.0",
                proxy.version
            ),
        );
    } else if let Err(e) = check_proxy_version(&proxy.version) {
        p.add("spec.proxy.version", e.to_string());
    }
    if let Some(c) = proxy.concurrency
        && !(1..=64).contains(&c)
    {
        p.add(
            "spec.proxy.concurrency",
            format!("{c} worker threads is out of range: use 1 to 64"),
        );
    }
    let i = &proxy.interception;
    p.port_list("spec.proxy.interception.inboundPorts", &i.inbound_ports);
    p.port_list(
        "spec.proxy.interception.excludeInboundPorts",
        &i.exclude_inbound_ports,
    );
    p.port_list(
        "spec.proxy.interception.excludeOutboundPorts",
        &i.exclude_outbound_ports,
    );
    for (n, port) in i.exclude_inbound_ports.iter().enumerate() {
        if i.inbound_ports.contains(port) {
            p.add(
                format!("spec.proxy.interception.excludeInboundPorts[{n}]"),
                format!("port {port} is both intercepted and excluded; remove it from one list"),
            );
        }
    }
    for (n, cidr) in i.exclude_outbound_cidrs.iter().enumerate() {
        if !is_cidr(cidr) {
            p.add(
                format!("spec.proxy.interception.excludeOutboundCidrs[{n}]"),
                format!(
                    "{cidr:?} is not a CIDR: write an address and prefix length such as 10.0.0.0/8"
                ),
            );
        }
    }
}

fn validate_extra_containers(p: &mut Problems, containers: &[Container]) {
    let mut names = BTreeSet::new();
    for (i, c) in containers.iter().enumerate() {
        let path = format!("spec.extraContainers[{i}]");
        p.dns_label(&format!("{path}.name"), &c.name);
        if c.name == PROXY_CONTAINER {
            p.add(
                format!("{path}.name"),
                format!("{PROXY_CONTAINER:?} is the proxy's own container name; choose another"),
            );
        }
        if !names.insert(c.name.as_str()) {
            p.add(
                format!("{path}.name"),
                format!(
                    "container name {:?} is used twice; names must be unique",
                    c.name
                ),
            );
        }
        if c.image.as_deref().is_none_or(|s| s.trim().is_empty()) {
            p.add(format!("{path}.image"), "an extra container needs an image");
        }
    }
}

fn validate_volumes(p: &mut Problems, volumes: &[SharedVolume]) {
    let mut names = BTreeSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let sources = [
            v.empty_dir.is_some(),
            v.config_map.is_some(),
            v.secret.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            p.add(
                format!("spec.volumes[{i}]"),
                "give exactly one of emptyDir, configMap and secret",
            );
        }
        let path = format!("spec.volumes[{i}].name");
        p.dns_label(&path, &v.name);
        if !names.insert(v.name.as_str()) {
            p.add(
                path,
                format!(
                    "volume name {:?} is used twice; names must be unique",
                    v.name
                ),
            );
        }
    }
}

fn validate_traffic(p: &mut Problems, t: &TrafficDefaults) {
    p.duration("spec.traffic.connectTimeout", &t.connect_timeout);
    let request = p.duration("spec.traffic.requestTimeout", &t.request_timeout);
    if let Some(r) = &t.retries {
        validate_retry(p, "spec.traffic.retries", r, request);
    }
    if let Some(o) = &t.outlier_detection {
        if o.consecutive_errors < 1 {
            p.add(
                "spec.traffic.outlierDetection.consecutiveErrors",
                "use at least 1",
            );
        }
        p.duration("spec.traffic.outlierDetection.interval", &o.interval);
        p.duration(
            "spec.traffic.outlierDetection.baseEjectionTime",
            &o.base_ejection_time,
        );
        p.percent(
            "spec.traffic.outlierDetection.maxEjectionPercent",
            o.max_ejection_percent,
        );
    }
    if let Some(cb) = &t.circuit_breaker {
        for (field, v, min) in [
            ("maxConnections", cb.max_connections, 1),
            ("maxPendingRequests", cb.max_pending_requests, 1),
            ("maxRequests", cb.max_requests, 1),
            ("maxRetries", cb.max_retries, 0),
        ] {
            if let Some(v) = v
                && v < min
            {
                p.add(
                    format!("spec.traffic.circuitBreaker.{field}"),
                    format!("{v} is too low: use at least {min}"),
                );
            }
        }
    }
}

fn validate_egress(p: &mut Problems, egress: &EgressScope) {
    if egress.hosts.is_empty() {
        p.add("spec.egress.hosts", "list at least one destination such as \"./*\", or remove egress to allow every Service");
    }
    let mut seen = BTreeSet::new();
    for (i, host) in egress.hosts.iter().enumerate() {
        let path = format!("spec.egress.hosts[{i}]");
        let valid = host.split_once('/').is_some_and(|(ns, svc)| {
            (ns == "*" || ns == "." || crate::validation::is_dns_label(ns))
                && (svc == "*" || crate::validation::is_dns_label(svc))
        });
        if !valid {
            p.add(path.clone(), format!("{host:?} is not <namespace>/<service>: write e.g. \"./*\", \"payments/checkout\" or \"*/*\""));
        }
        if !seen.insert(host.as_str()) {
            p.add(
                path,
                format!("{host:?} is listed twice; remove the duplicate"),
            );
        }
    }
}

fn validate_rollout(p: &mut Problems, r: &RolloutStrategy) {
    if r.waves.is_empty() {
        p.add(
            "spec.rollout.waves",
            "give at least one wave, e.g. [{percent: 100}]",
        );
    }
    let mut last_percent = 0;
    for (i, w) in r.waves.iter().enumerate() {
        let path = format!("spec.rollout.waves[{i}]");
        match (w.count, w.percent) {
            (Some(_), Some(_)) | (None, None) => p.add(path, "give exactly one of count and percent"),
            (Some(c), None) if c < 1 => p.add(format!("{path}.count"), format!("{c} workloads is too few: use at least 1")),
            (None, Some(pc)) if !(1..=100).contains(&pc) => p.add(format!("{path}.percent"), format!("{pc} is not a percentage: use 1 to 100")),
            (None, Some(pc)) if pc < last_percent => p.add(
                format!("{path}.percent"),
                format!("waves must not shrink: {pc}% comes after {last_percent}%; order the waves by size"),
            ),
            (None, Some(pc)) => last_percent = pc,
            _ => {}
        }
    }
    if let Some(last) = r.waves.last()
        && last.percent != Some(100)
    {
        p.add(
            format!("spec.rollout.waves[{}]", r.waves.len() - 1),
            "the last wave must reach every workload; end the list with {percent: 100}",
        );
    }
    if !(1..=1000).contains(&r.max_concurrent) {
        p.add(
            "spec.rollout.maxConcurrent",
            format!("{} is out of range: use 1 to 1000", r.max_concurrent),
        );
    }
    let min_ready = p.duration(
        "spec.rollout.healthGate.minReady",
        &Some(r.health_gate.min_ready.clone()),
    );
    let timeout = p.duration(
        "spec.rollout.healthGate.timeout",
        &Some(r.health_gate.timeout.clone()),
    );
    if let (Some(min_ready), Some(timeout)) = (min_ready, timeout)
        && timeout <= min_ready
    {
        p.add(
            "spec.rollout.healthGate.timeout",
            "the timeout must be longer than minReady, or no wave could ever pass; raise it",
        );
    }
}

fn is_cidr(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else {
        return false;
    };
    let Ok(len) = len.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => len <= 32,
        Ok(std::net::IpAddr::V6(_)) => len <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sidecar_policy::{Interception, LogLevel};

    #[test]
    fn validate_refuses_versions_outside_the_window() {
        let mut p = Problems::default();
        validate_proxy(&mut p, &proxy("envoyproxy/envoy", "v1.37.0"));
        let errors = p.finish().expect_err("1.37 is refused").to_string();
        assert!(errors.contains("spec.proxy.version"), "{errors}");
        assert!(errors.contains("1.38 through 1.40"), "{errors}");
    }

    fn proxy(image: &str, version: &str) -> ProxySpec {
        ProxySpec {
            image: image.into(),
            version: version.into(),
            resources: None,
            log_level: LogLevel::Info,
            concurrency: None,
            interception: Interception::default(),
        }
    }

    #[test]
    fn envoys_official_image_without_a_v_tag_is_a_warning_naming_the_tag_to_write() {
        for image in ["envoyproxy/envoy", "docker.io/envoyproxy/envoy"] {
            let warnings = proxy_tag_warnings(&proxy(image, "1.40.0"));
            assert_eq!(warnings.len(), 1, "{image}: {warnings:?}");
            assert_eq!(warnings[0].path, "spec.proxy.version");
            assert!(
                warnings[0].message.contains("write v1.40.0"),
                "{warnings:?}"
            );
        }
    }

    #[test]
    fn a_v_tag_or_another_image_has_no_warning() {
        assert!(proxy_tag_warnings(&proxy("envoyproxy/envoy", "v1.40.0")).is_empty());
        assert!(proxy_tag_warnings(&proxy("registry.example/envoy", "1.40.0")).is_empty());
        // An invalid version is an error already; a warning would only repeat it.
        assert!(proxy_tag_warnings(&proxy("envoyproxy/envoy", "latest")).is_empty());
    }

    #[test]
    fn cidrs() {
        assert!(is_cidr("10.0.0.0/8"));
        assert!(is_cidr("fd00::/64"));
        assert!(!is_cidr("10.0.0.0"));
        assert!(!is_cidr("10.0.0.0/33"));
        assert!(!is_cidr("cluster/8"));
    }

    #[test]
    fn default_rollout_is_valid() {
        let mut p = Problems::default();
        validate_rollout(&mut p, &RolloutStrategy::default());
        assert!(p.finish().is_ok());
    }
}
