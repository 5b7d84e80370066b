//! The spec edits of `pause`, `resume` and `undo`, as JSON merge patch bodies: each names
//! only the field it changes, so the rest of the spec (and whoever manages it) is untouched.

use kube::ResourceExt;
use remora_api::SidecarPolicy;
use serde_json::{Value, json};

use super::view::View;

/// `spec.rollout.paused` set to `paused`.
pub fn paused(paused: bool) -> Value {
    json!({"spec": {"rollout": {"paused": paused}}})
}

/// What `undo` does to a policy.
#[derive(Debug, PartialEq)]
pub enum Undo {
    /// Send `body` to move `spec.proxy.version` from `from` to `to`.
    Patch {
        from: String,
        to: String,
        body: Value,
    },
    /// The spec asks for the previous version already.
    AlreadyThere(String),
}

/// Returns the policy to the version its current rollout replaces. The body carries the
/// policy's `resourceVersion`, so the API server refuses it (409) when the spec changed
/// since the status was read: the previous version would belong to another rollout.
pub fn undo(policy: &SidecarPolicy) -> Result<Undo, String> {
    let view = View::of(policy);
    let name = format!("sidecarpolicy {}/{}", view.namespace, view.policy);
    if let Some(lag) = view.lag() {
        return Err(format!(
            "{name}: {lag}, so which version it replaces is not known yet; try again shortly"
        ));
    }
    let rollout = view
        .rollout
        .ok_or_else(|| format!("{name} has no rollout to undo: the controller reported none"))?;
    let to = rollout.previous_version.clone().ok_or_else(|| {
        format!(
            "{name}: the rollout of {} has no previous version to return to (it is the \
             policy's first); set spec.proxy.version in Git instead",
            rollout.target_version
        )
    })?;
    let from = view.version.to_owned();
    if from == to {
        return Ok(Undo::AlreadyThere(to));
    }
    let body = json!({
        "metadata": {"resourceVersion": policy.resource_version()},
        "spec": {"proxy": {"version": to}},
    });
    Ok(Undo::Patch { from, to, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy at generation 2, resourceVersion 41, asking for `version`, with `rollout`
    /// reported for `observed`.
    fn policy(version: &str, observed: i64, rollout: Value) -> SidecarPolicy {
        serde_json::from_value(json!({
            "apiVersion": "remora.dev/v1alpha1", "kind": "SidecarPolicy",
            "metadata": {"name": "fleet", "namespace": "demo", "generation": 2,
                "resourceVersion": "41"},
            "spec": {"proxy": {"image": "envoyproxy/envoy", "version": version}},
            "status": {"observedGeneration": observed, "rollout": rollout},
        }))
        .expect("a SidecarPolicy")
    }

    fn rollout(previous: Option<&str>) -> Value {
        json!({"phase": "Progressing", "targetVersion": "v1.40.0", "previousVersion": previous,
            "wave": 1, "totalWaves": 3, "updatedWorkloads": 0, "totalWorkloads": 4})
    }

    #[test]
    fn pause_and_resume_set_only_the_paused_flag() {
        assert_eq!(paused(true), json!({"spec": {"rollout": {"paused": true}}}));
        assert_eq!(
            paused(false),
            json!({"spec": {"rollout": {"paused": false}}})
        );
    }

    #[test]
    fn undo_sets_the_previous_version_on_the_spec_read() {
        let p = policy("v1.40.0", 2, rollout(Some("v1.39.0")));
        assert_eq!(
            undo(&p),
            Ok(Undo::Patch {
                from: "v1.40.0".into(),
                to: "v1.39.0".into(),
                body: json!({
                    "metadata": {"resourceVersion": "41"},
                    "spec": {"proxy": {"version": "v1.39.0"}},
                }),
            })
        );
    }

    #[test]
    fn undo_refuses_a_first_rollout_a_policy_without_one_and_a_stale_status() {
        let first = undo(&policy("v1.40.0", 2, rollout(None))).expect_err("no previous");
        assert!(
            first.contains("no previous version to return to"),
            "{first}"
        );
        let none = undo(&policy("v1.40.0", 2, Value::Null)).expect_err("no rollout");
        assert!(none.contains("has no rollout to undo"), "{none}");
        let stale = undo(&policy("v1.41.0", 1, rollout(Some("v1.39.0")))).expect_err("stale");
        assert!(
            stale.contains("has not yet reported on generation 2"),
            "{stale}"
        );
    }

    #[test]
    fn undo_of_a_policy_already_at_the_previous_version_changes_nothing() {
        let p = policy("v1.39.0", 2, rollout(Some("v1.39.0")));
        assert_eq!(undo(&p), Ok(Undo::AlreadyThere("v1.39.0".into())));
    }
}
