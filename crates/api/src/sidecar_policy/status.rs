//! What the controller reports about a policy and its rollout.

use std::{cmp::Ordering, fmt};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the controller observed about the policy and the fleet it governs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`, `Progressing`, `RolledOut`, `Degraded`, and their summaries:
    /// `Ready`, and kstatus's `Reconciling` and `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Workloads (Deployments, StatefulSets, DaemonSets) this policy governs.
    #[serde(default)]
    pub matched_workloads: i32,
    /// Pods with a sidecar this policy governs.
    #[serde(default)]
    pub matched_proxies: i32,
    /// How many of those proxies run each sidecar version, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<VersionCount>,
    /// The rollout of the current sidecar spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// What the governed workloads accept, when the mesh has workload identities: the mode
    /// in effect and how many workloads run in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MtlsCount>,
}

/// Workloads by mutual TLS mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MtlsCount {
    /// The mode in effect for the policy's workloads (its `spec.mtls.mode`).
    pub mode: super::MtlsMode,
    /// How many workloads run in it.
    pub workloads: i32,
}

/// Proxies running one version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionCount {
    /// The sidecar version.
    pub version: String,
    /// Proxies running it.
    pub proxies: i32,
}

/// Where a rollout stands. Everything a restarted controller needs to resume is here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Progressing, Paused, Complete, RolledBack or Failed.
    pub phase: RolloutPhase,
    /// The version being rolled out.
    pub target_version: String,
    /// The version it replaces, which a rollback returns to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,
    /// A short fingerprint of the sidecar being rolled out (proxy image, version, resources,
    /// log level, concurrency, interception and extra containers). A new value starts a new
    /// rollout; traffic, egress and rollout settings do not change it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision: String,
    /// The workloads moved to the target version (restart issued, or done), in the order they
    /// were reached. Workloads not listed keep the previous version, even when their pods are
    /// recreated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reached: Vec<WorkloadRef>,
    /// When the wave under way began, or last reached another workload (so one reached late
    /// in a wave still gets the whole timeout); its health gate times out counting from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_started_at: Option<Time>,
    /// The wave under way, counting from 1.
    pub wave: i32,
    /// Waves in this rollout (waves that would add no workload are left out).
    pub total_waves: i32,
    /// Workloads that run the target version and passed their wave's health gate.
    pub updated_workloads: i32,
    /// Workloads the rollout covers.
    pub total_workloads: i32,
    /// Workloads that failed their health gate, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_workloads: Vec<FailedWorkload>,
    /// A sentence for a person: what is happening or what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A workload a policy governs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    /// Deployment, StatefulSet or DaemonSet.
    pub kind: String,
    /// The workload's namespace.
    pub namespace: String,
    /// The workload's name.
    pub name: String,
}

impl WorkloadRef {
    /// A reference to the workload of that kind (`Deployment`, ...), namespace and name.
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        WorkloadRef {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

// Namespace first, as people list workloads; the rollout order follows it.
impl Ord for WorkloadRef {
    fn cmp(&self, other: &Self) -> Ordering {
        (&self.namespace, &self.name, &self.kind).cmp(&(&other.namespace, &other.name, &other.kind))
    }
}

impl PartialOrd for WorkloadRef {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// The phase of a rollout: Progressing, Paused, Complete, RolledBack or Failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::plain_enum)]
pub enum RolloutPhase {
    /// Waves are under way.
    #[default]
    Progressing,
    /// Stopped by `spec.rollout.paused` or by a failed health gate; waits for a person.
    Paused,
    /// Every wave passed its health gate.
    Complete,
    /// A failed health gate returned the reached workloads to the previous version.
    RolledBack,
    /// The spec cannot be rolled out, e.g. its proxy version is unsupported; the message says why.
    Failed,
}

/// A workload that failed its health gate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedWorkload {
    /// Deployment, StatefulSet or DaemonSet.
    pub kind: String,
    /// The workload's namespace.
    pub namespace: String,
    /// The workload's name.
    pub name: String,
    /// Why it failed.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_sort_by_namespace_then_name_then_kind() {
        let mut refs = [
            WorkloadRef::new("StatefulSet", "b", "a"),
            WorkloadRef::new("Deployment", "b", "a"),
            WorkloadRef::new("Deployment", "a", "z"),
        ];
        refs.sort();
        let shown: Vec<String> = refs.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["Deployment/a/z", "Deployment/b/a", "StatefulSet/b/a"]
        );
    }
}
