//! The plain data a step reads and returns.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use remora_api::{
    SidecarPolicySpec,
    sidecar_policy::{RolloutStatus, WorkloadRef},
};

/// The pod-template annotation a `Restart` action sets, as `kubectl rollout restart` does
/// with its own; its value names the version and revision it restarted for.
pub const RESTART_ANNOTATION: &str = "sidecar.remora.dev/restarted-for";

/// A workload the policy governs, as the controller sees it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub workload: WorkloadRef,
    /// Replicas wanted (for a DaemonSet, the nodes it should run on).
    pub desired: i32,
    /// The pod template's [`RESTART_ANNOTATION`], `None` when absent.
    pub stamp: Option<String>,
    pub pods: Vec<PodFacts>,
}

/// One pod of a workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFacts {
    pub name: String,
    /// The sidecar version the pod got (annotation `sidecar.remora.dev/version`); `None`
    /// when it has no sidecar, which counts as not running any version.
    pub version: Option<String>,
    /// The [`revision_of`](crate::revision_of) the sidecar the pod got (annotation
    /// `sidecar.remora.dev/revision`); `None` for a pod injected before that annotation
    /// existed, judged by `version` then.
    pub revision: Option<String>,
    /// Since when the pod has been Ready; `None` when it is not Ready.
    pub ready_since: Option<Time>,
    pub terminating: bool,
    pub proxy: ProxyHealth,
}

/// What the xDS server knows of the pod's proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyHealth {
    Acked,
    /// The proxy rejected its config, with Envoy's message.
    Nacked(String),
    /// Connected to this replica, config sent but not acknowledged yet.
    Pending,
    /// Not connected to this replica: judged by readiness alone, since the proxy's readiness
    /// probe passes only once it has its first config.
    Unknown,
}

/// Everything [`step`](crate::step) needs, all plain data.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// `namespace/name` of the policy, for messages.
    pub policy: &'a str,
    pub spec: &'a SidecarPolicySpec,
    /// The stored `status.rollout`.
    pub previous: Option<&'a RolloutStatus>,
    /// Every workload the policy governs now, in any order.
    pub workloads: &'a [Workload],
    pub now: Time,
}

/// What to write and what to do, in that order.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub status: RolloutStatus,
    pub actions: Vec<Action>,
    pub events: Vec<Note>,
}

/// Something the controller does after writing the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Set `spec.template.metadata.annotations[RESTART_ANNOTATION] = stamp`.
    Restart {
        workload: WorkloadRef,
        stamp: String,
    },
    /// Evict the pod through the Eviction API; a refusal (a PodDisruptionBudget) is retried
    /// at the next step, which asks again.
    Evict { workload: WorkloadRef, pod: String },
}

/// A Kubernetes Event to record on the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    /// CamelCase: WaveStarted, WavePassed, GateFailed, RolledBack, Paused, Resumed,
    /// Superseded, RolloutComplete, RolloutRefused.
    pub reason: &'static str,
    pub message: String,
}
