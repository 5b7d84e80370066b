//! How a sidecar change rolls out: waves, restarts and health gates.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Duration;

/// How a sidecar change rolls across the selected workloads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStrategy {
    /// The waves, in order. Each gives how many of the matched workloads have been updated
    /// once it completes: a `count` of workloads or a `percent` of all of them. The last wave
    /// must reach 100%.
    #[serde(default = "default_waves")]
    #[schemars(length(min = 1, max = 16))]
    pub waves: Vec<Wave>,
    /// The most workloads restarted at the same time within a wave.
    #[serde(default = "default_max_concurrent")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_concurrent: i32,
    /// How workloads are restarted: `Restart` patches a pod-template annotation as
    /// `kubectl rollout restart` does; `Evict` evicts pods through the Eviction API, honouring
    /// PodDisruptionBudgets and leaving objects that Git owns untouched.
    #[serde(default)]
    pub method: RestartMethod,
    /// What must hold before the next wave starts.
    #[serde(default)]
    pub health_gate: HealthGate,
    /// What happens when a health gate fails: `Rollback` (default) returns the wave's
    /// workloads to the previous sidecar; `Pause` stops and waits for a person.
    #[serde(default)]
    pub on_failure: FailureAction,
    /// Stops the rollout after the workloads under way; set back to false to resume.
    #[serde(default)]
    pub paused: bool,
}

impl Default for RolloutStrategy {
    fn default() -> Self {
        RolloutStrategy {
            waves: default_waves(),
            max_concurrent: default_max_concurrent(),
            method: RestartMethod::default(),
            health_gate: HealthGate::default(),
            on_failure: FailureAction::default(),
            paused: false,
        }
    }
}

fn default_waves() -> Vec<Wave> {
    vec![
        Wave {
            count: Some(1),
            percent: None,
        },
        Wave {
            count: None,
            percent: Some(25),
        },
        Wave {
            count: None,
            percent: Some(100),
        },
    ]
}

fn default_max_concurrent() -> i32 {
    5
}

/// One rollout wave: give `count` or `percent`, not both.
#[derive(KubeSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.count) != has(self.percent)").message("give exactly one of count and percent"))]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    /// Workloads updated once this wave is done (a canary wave is `count: 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub count: Option<i32>,
    /// Percent of the matched workloads updated once this wave is done, rounded up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub percent: Option<i32>,
}

/// How a workload is restarted: Restart or Evict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::plain_enum)]
pub enum RestartMethod {
    /// Patches a pod-template annotation, as `kubectl rollout restart` does.
    #[default]
    Restart,
    /// Evicts pods through the Eviction API, honouring PodDisruptionBudgets.
    Evict,
}

/// What a failed health gate does: Rollback or Pause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::plain_enum)]
pub enum FailureAction {
    /// Returns the wave's workloads to the previous sidecar.
    #[default]
    Rollback,
    /// Stops the rollout and waits for a person.
    Pause,
}

/// The checks between waves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthGate {
    /// How long every updated pod must stay Ready, with its proxy connected and acknowledging
    /// config and no NACKs, before the wave counts as healthy.
    #[serde(default = "default_min_ready")]
    pub min_ready: Duration,
    /// The wave fails when it is not healthy within this time.
    #[serde(default = "default_gate_timeout")]
    pub timeout: Duration,
}

impl Default for HealthGate {
    fn default() -> Self {
        HealthGate {
            min_ready: default_min_ready(),
            timeout: default_gate_timeout(),
        }
    }
}

fn default_min_ready() -> Duration {
    "30s".into()
}

fn default_gate_timeout() -> Duration {
    "10m".into()
}
