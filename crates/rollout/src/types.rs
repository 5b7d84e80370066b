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
    /// Which workload this is.
    pub workload: WorkloadRef,
    /// Replicas wanted (for a DaemonSet, the nodes it should run on).
    pub desired: i32,
    /// The pod template's [`RESTART_ANNOTATION`], `None` when absent.
    pub stamp: Option<String>,
    /// Its pods, terminating ones included.
    pub pods: Vec<PodFacts>,
}

/// One pod of a workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFacts {
    /// The pod's name, which an `Evict` action names.
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
    /// Being deleted: no longer counted as live.
    pub terminating: bool,
    /// How the pod's proxy stands with the xDS server.
    pub proxy: ProxyHealth,
}

/// What the xDS server knows of the pod's proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyHealth {
    /// Runs the config published for it now: every type it asked for acknowledged.
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
    /// The policy's spec, whose sidecar is the rollout's target.
    pub spec: &'a SidecarPolicySpec,
    /// The stored `status.rollout`.
    pub previous: Option<&'a RolloutStatus>,
    /// Every workload the policy governs now, in any order.
    pub workloads: &'a [Workload],
    /// The clock the health gate's `minReady` and timeout are measured against.
    pub now: Time,
}

/// What to write and what to do, in that order.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The new `status.rollout`, to write first.
    pub status: RolloutStatus,
    /// What to do to the workloads once the status is written.
    pub actions: Vec<Action>,
    /// The Events this step is worth, in order.
    pub events: Vec<Note>,
}

/// Something the controller does after writing the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Set `spec.template.metadata.annotations[RESTART_ANNOTATION] = stamp`.
    Restart {
        /// The workload whose pod template gets the annotation.
        workload: WorkloadRef,
        /// The annotation's value: the version moved to and the revision of the rollout that
        /// moves it.
        stamp: String,
    },
    /// Evict the pod through the Eviction API; a refusal (a PodDisruptionBudget) is retried
    /// at the next step, which asks again.
    Evict {
        /// The workload the pod belongs to.
        workload: WorkloadRef,
        /// The name of the pod to evict.
        pod: String,
    },
}

/// A Kubernetes Event to record on the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// A Warning Event rather than a Normal one.
    pub warning: bool,
    /// CamelCase: WaveStarted, WavePassed, GateFailed, RolledBack, Paused, Resumed,
    /// Superseded, RolloutComplete, RolloutRefused.
    pub reason: &'static str,
    /// What happened, for a person.
    pub message: String,
}
