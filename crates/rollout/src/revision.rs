//! Which sidecar a pod gets: the revision fingerprint, and the version the webhook injects
//! while a rollout is under way.

use k8s_openapi::api::core::v1::Container;
use remora_api::{
    SidecarPolicySpec,
    sidecar_policy::{ProxySpec, RolloutPhase, RolloutStatus, SharedVolume, WorkloadRef},
};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// A short fingerprint of the sidecar a pod gets: proxy image, version, resources, log level,
/// concurrency, interception, extra containers and shared volumes. Traffic, egress and rollout settings are
/// left out because they need no restart. SHA-256 of the JSON encoding (fields in declaration
/// order, maps sorted), first 10 hex digits: the same on every build.
pub fn revision(spec: &SidecarPolicySpec) -> String {
    revision_of(spec, &spec.proxy.version)
}

/// The [`revision`] of the sidecar a pod gets under `spec` with the proxy at `version`: during
/// a rollout a workload not reached yet gets the previous version with the spec's other
/// fields, and this is what its pods are annotated with and judged by.
pub fn revision_of(spec: &SidecarPolicySpec, version: &str) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Sidecar<'a> {
        proxy: &'a ProxySpec,
        extra_containers: &'a [Container],
        // Left out when empty, so revisions from before volumes existed stay the same.
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        volumes: &'a [SharedVolume],
    }
    let proxy = ProxySpec {
        version: version.to_owned(),
        ..spec.proxy.clone()
    };
    let encoded = serde_json::to_vec(&Sidecar {
        proxy: &proxy,
        extra_containers: &spec.extra_containers,
        volumes: &spec.volumes,
    })
    .expect("plain data with string map keys always encodes");
    Sha256::digest(&encoded)
        .iter()
        .take(5)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The proxy version a new pod of `workload` gets under `spec` and the stored rollout status.
pub fn version_for<'a>(
    spec: &'a SidecarPolicySpec,
    status: Option<&'a RolloutStatus>,
    workload: &WorkloadRef,
) -> &'a str {
    let Some(s) = status.filter(|s| !s.revision.is_empty()) else {
        return &spec.proxy.version;
    };
    if s.revision != revision(spec) {
        // The controller has not stepped yet: the new rollout will start from this version.
        return baseline(s).unwrap_or(&spec.proxy.version);
    }
    if s.phase == RolloutPhase::Complete || s.reached.contains(workload) {
        &s.target_version
    } else {
        s.previous_version.as_deref().unwrap_or(&s.target_version)
    }
}

/// The last version that completed, which a rollout replacing `stored` starts from.
pub(crate) fn baseline(stored: &RolloutStatus) -> Option<&str> {
    if stored.phase == RolloutPhase::Complete {
        Some(&stored.target_version)
    } else {
        stored.previous_version.as_deref()
    }
}
