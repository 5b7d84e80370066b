//! What `remora rollout status` shows of a policy, as pure functions of the object read.

use std::fmt::Write as _;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use remora_api::{
    SidecarPolicy, conditions,
    sidecar_policy::{RolloutPhase, RolloutStatus},
};
use serde::Serialize;

/// The conditions that say how a rollout goes, in the order they are shown.
const SHOWN: [&str; 3] = [
    conditions::PROGRESSING,
    conditions::DEGRADED,
    conditions::READY,
];

/// One policy's rollout as printed: also the document of `-o json|yaml`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct View<'a> {
    pub policy: String,
    pub namespace: String,
    pub generation: Option<i64>,
    /// The generation the status describes; behind `generation` until the controller saw
    /// the latest spec.
    pub observed_generation: Option<i64>,
    /// The sidecar version the spec asks for.
    pub version: &'a str,
    /// `spec.rollout.paused`.
    pub paused: bool,
    pub rollout: Option<&'a RolloutStatus>,
    pub conditions: Vec<&'a Condition>,
}

/// How a watched rollout ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    RolledBack,
    Failed,
}

impl<'a> View<'a> {
    pub fn of(policy: &'a SidecarPolicy) -> View<'a> {
        let status = policy.status.as_ref();
        let all = status.map(|s| s.conditions.as_slice()).unwrap_or_default();
        View {
            policy: policy.name_any(),
            namespace: policy.namespace().unwrap_or_default(),
            generation: policy.metadata.generation,
            observed_generation: status.and_then(|s| s.observed_generation),
            version: &policy.spec.proxy.version,
            paused: policy.spec.rollout.paused,
            rollout: status.and_then(|s| s.rollout.as_ref()),
            conditions: SHOWN
                .iter()
                .filter_map(|t| all.iter().find(|c| c.type_ == *t))
                .collect(),
        }
    }

    /// Whether the status describes the spec as it is now: until then its phase may be the
    /// previous rollout's (a `Complete` from before an edit is no answer).
    fn is_current(&self) -> bool {
        matches!((self.observed_generation, self.generation), (Some(o), Some(g)) if o >= g)
    }

    /// The end of the rollout, once the status says so about the current spec.
    pub fn outcome(&self) -> Option<Outcome> {
        if !self.is_current() {
            return None;
        }
        match self.rollout?.phase {
            RolloutPhase::Complete => Some(Outcome::Complete),
            RolloutPhase::RolledBack => Some(Outcome::RolledBack),
            RolloutPhase::Failed => Some(Outcome::Failed),
            RolloutPhase::Progressing | RolloutPhase::Paused => None,
        }
    }

    /// Why the controller's word is not in yet, when it is not.
    pub fn lag(&self) -> Option<String> {
        if self.is_current() {
            return None;
        }
        let generation = self.generation.unwrap_or_default();
        Some(match self.observed_generation {
            Some(o) => format!(
                "the status describes generation {o}; the controller has not yet reported on \
                 generation {generation}"
            ),
            None => format!("the controller has not yet reported on generation {generation}"),
        })
    }

    /// The full report, for people.
    pub fn table(&self) -> String {
        let mut out = format!("SidecarPolicy {}/{}\n", self.namespace, self.policy);
        let mut row = |label: &str, value: &str| {
            let _ = writeln!(out, "  {label:<10} {value}");
        };
        row("Version:", self.version);
        row("Paused:", if self.paused { "yes" } else { "no" });
        match self.rollout {
            None => row("Rollout:", "none reported yet"),
            Some(r) => {
                row("Phase:", &format!("{:?}", r.phase));
                row("Target:", &r.target_version);
                row(
                    "Previous:",
                    r.previous_version.as_deref().unwrap_or("(none)"),
                );
                row("Wave:", &format!("{} of {}", r.wave, r.total_waves));
                row(
                    "Updated:",
                    &format!("{} of {} workloads", r.updated_workloads, r.total_workloads),
                );
                if let Some(m) = &r.message {
                    row("Message:", m);
                }
            }
        }
        if let Some(lag) = self.lag() {
            row("Note:", &lag);
        }
        let failed = self.rollout.map(|r| r.failed_workloads.as_slice());
        if let Some(failed) = failed.filter(|f| !f.is_empty()) {
            out.push_str("Failed workloads:\n");
            for w in failed {
                let _ = writeln!(out, "  {}/{}/{}: {}", w.kind, w.namespace, w.name, w.reason);
            }
        }
        if !self.conditions.is_empty() {
            out.push_str("Conditions:\n");
            out.push_str(&conditions_table(&self.conditions));
        }
        out
    }

    /// One line for `--watch`: enough to see each step without the whole report.
    pub fn line(&self) -> String {
        let Some(r) = self.rollout else {
            return self
                .lag()
                .unwrap_or_else(|| "no rollout reported yet".to_owned());
        };
        let mut line = format!(
            "{:?}  wave {}/{}  updated {}/{}  {} -> {}",
            r.phase,
            r.wave,
            r.total_waves,
            r.updated_workloads,
            r.total_workloads,
            r.previous_version.as_deref().unwrap_or("(none)"),
            r.target_version,
        );
        if !r.failed_workloads.is_empty() {
            let _ = write!(line, "  failed {}", r.failed_workloads.len());
        }
        if let Some(m) = &r.message {
            let _ = write!(line, "  {m}");
        }
        if let Some(lag) = self.lag() {
            let _ = write!(line, "  ({lag})");
        }
        line
    }
}

/// Aligned TYPE, STATUS, REASON and MESSAGE columns, indented under their heading.
fn conditions_table(conditions: &[&Condition]) -> String {
    let rows: Vec<[&str; 4]> = std::iter::once(["TYPE", "STATUS", "REASON", "MESSAGE"])
        .chain(
            conditions
                .iter()
                .map(|c| [&*c.type_, &*c.status, &*c.reason, &*c.message]),
        )
        .collect();
    let width = |i: usize| rows.iter().map(|r| r[i].len()).max().unwrap_or_default();
    let (w0, w1, w2) = (width(0), width(1), width(2));
    let mut out = String::new();
    for [t, s, r, m] in rows {
        let line = format!("  {t:<w0$}  {s:<w1$}  {r:<w2$}  {m}");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A policy at generation 3 asking for v1.40.0, its status as given.
    fn policy(status: serde_json::Value) -> SidecarPolicy {
        serde_json::from_value(json!({
            "apiVersion": "remora.dev/v1alpha1", "kind": "SidecarPolicy",
            "metadata": {"name": "fleet", "namespace": "demo", "generation": 3},
            "spec": {"proxy": {"image": "envoyproxy/envoy", "version": "v1.40.0"}},
            "status": status,
        }))
        .expect("a SidecarPolicy")
    }

    fn condition(type_: &str, status: &str, reason: &str, message: &str) -> serde_json::Value {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-01-01T00:00:00Z"})
    }

    fn rolling(phase: &str, observed: i64) -> SidecarPolicy {
        policy(json!({
            "observedGeneration": observed,
            "conditions": [
                condition("Ready", "False", "RollingOut", "wave 2 of 3"),
                condition("Accepted", "True", "Accepted", ""),
                condition("Progressing", "True", "RollingOut", "wave 2 of 3"),
            ],
            "rollout": {
                "phase": phase, "targetVersion": "v1.40.0", "previousVersion": "v1.39.0",
                "wave": 2, "totalWaves": 3, "updatedWorkloads": 1, "totalWorkloads": 4,
                "failedWorkloads": [{"kind": "Deployment", "namespace": "demo", "name": "web",
                    "reason": "not Ready within 10m"}],
                "message": "waiting for wave 2's health gate",
            },
        }))
    }

    #[test]
    fn the_table_shows_the_rollout_its_failures_and_the_rollout_conditions() {
        assert_eq!(
            View::of(&rolling("Progressing", 3)).table(),
            "SidecarPolicy demo/fleet\n\
             \x20 Version:   v1.40.0\n\
             \x20 Paused:    no\n\
             \x20 Phase:     Progressing\n\
             \x20 Target:    v1.40.0\n\
             \x20 Previous:  v1.39.0\n\
             \x20 Wave:      2 of 3\n\
             \x20 Updated:   1 of 4 workloads\n\
             \x20 Message:   waiting for wave 2's health gate\n\
             Failed workloads:\n\
             \x20 Deployment/demo/web: not Ready within 10m\n\
             Conditions:\n\
             \x20 TYPE         STATUS  REASON      MESSAGE\n\
             \x20 Progressing  True    RollingOut  wave 2 of 3\n\
             \x20 Ready        False   RollingOut  wave 2 of 3\n"
        );
    }

    #[test]
    fn a_policy_without_status_says_nothing_is_reported_yet() {
        let p = policy(json!(null));
        let view = View::of(&p);
        assert_eq!(
            view.table(),
            "SidecarPolicy demo/fleet\n\
             \x20 Version:   v1.40.0\n\
             \x20 Paused:    no\n\
             \x20 Rollout:   none reported yet\n\
             \x20 Note:      the controller has not yet reported on generation 3\n"
        );
        assert_eq!(
            view.line(),
            "the controller has not yet reported on generation 3"
        );
        assert_eq!(view.outcome(), None);
    }

    #[test]
    fn a_watch_line_holds_phase_wave_counts_versions_failures_and_message() {
        assert_eq!(
            View::of(&rolling("Paused", 3)).line(),
            "Paused  wave 2/3  updated 1/4  v1.39.0 -> v1.40.0  failed 1  \
             waiting for wave 2's health gate"
        );
    }

    #[test]
    fn only_a_status_of_the_current_generation_ends_a_watch() {
        let outcome = |phase, observed| View::of(&rolling(phase, observed)).outcome();
        assert_eq!(outcome("Complete", 3), Some(Outcome::Complete));
        assert_eq!(outcome("RolledBack", 3), Some(Outcome::RolledBack));
        assert_eq!(outcome("Failed", 3), Some(Outcome::Failed));
        assert_eq!(outcome("Progressing", 3), None);
        assert_eq!(outcome("Paused", 3), None);
        // The previous spec's rollout finished; the edit's has not been reported.
        assert_eq!(outcome("Complete", 2), None);
        let stale = rolling("Complete", 2);
        assert!(
            View::of(&stale).line().ends_with(
                "(the status describes generation 2; the controller has not yet reported on \
                 generation 3)"
            ),
            "{}",
            View::of(&stale).line()
        );
    }

    #[test]
    fn the_document_for_scripts_holds_the_rollout_status_as_the_api_spells_it() {
        let p = rolling("Progressing", 3);
        let doc = serde_json::to_value(View::of(&p)).expect("json");
        assert_eq!(doc["policy"], "fleet");
        assert_eq!(doc["observedGeneration"], 3);
        assert_eq!(doc["rollout"]["previousVersion"], "v1.39.0");
        assert_eq!(
            doc["rollout"]["failedWorkloads"][0]["reason"],
            "not Ready within 10m"
        );
        let types: Vec<&str> = doc["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["type"].as_str())
            .collect();
        assert_eq!(types, ["Progressing", "Ready"]);
    }
}
