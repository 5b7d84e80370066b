//! The Argo CD health scripts in `gitops/argocd/remora.dev/` run on statuses this crate
//! computes, so a change of condition, reason or message that a script relies on fails here.

mod lua;

use std::collections::BTreeMap;

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use remora_api::{
    FieldError,
    sidecar_policy::{RolloutPhase, RolloutStatus},
};
use remora_status::{
    AccessFacts, PolicyFacts, ProxyTally, RouteFacts, access_policy_status, policy_status,
    route_status,
};
use serde::Serialize;
use serde_json::{Value, json};

use lua::{Health, health};

fn now() -> Time {
    Time(Timestamp::from_second(1_700_000_000).expect("a valid time"))
}

/// The object Argo CD would see: the kind at `generation`, with `status` if any.
fn object(kind: &str, generation: i64, status: Option<&impl Serialize>) -> Value {
    let mut obj = json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": kind,
        "metadata": {"name": "web", "namespace": "demo", "generation": generation},
        "spec": {},
    });
    if let Some(status) = status {
        obj["status"] = serde_json::to_value(status).expect("a status serializes");
    }
    obj
}

/// A condition of a serialized status, as Kubernetes' type.
fn condition(obj: &Value, type_: &str) -> Condition {
    let all: Vec<Condition> =
        serde_json::from_value(obj["status"]["conditions"].clone()).expect("conditions");
    all.into_iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {obj:#}"))
}

/// The health a script should report when `type_` holds the object back: that condition's
/// type, status and reason, then its message. `reason` pins what the script keys on.
fn held_back(status: &str, obj: &Value, type_: &str, reason: &str) -> Health {
    let c = condition(obj, type_);
    assert_eq!(c.reason, reason, "{c:?}");
    Health {
        status: status.into(),
        message: format!("{} is {} ({}): {}", c.type_, c.status, c.reason, c.message),
    }
}

/// Healthy, with the `Ready` condition's message.
fn healthy(obj: &Value) -> Health {
    let ready = condition(obj, "Ready");
    assert_eq!(ready.status, "True", "{ready:?}");
    Health {
        status: "Healthy".into(),
        message: ready.message,
    }
}

fn progressing(message: &str) -> Health {
    Health {
        status: "Progressing".into(),
        message: message.into(),
    }
}

fn nack(affected: i32, acked: i32) -> ProxyTally {
    ProxyTally {
        affected,
        acked,
        nacked: 1,
        first_nack: Some((
            "demo/web-0".into(),
            "Proto constraint validation failed: \"route\" must not be empty".into(),
        )),
    }
}

fn acked(affected: i32, acked: i32) -> ProxyTally {
    ProxyTally {
        affected,
        acked,
        ..ProxyTally::default()
    }
}

fn invalid() -> Vec<FieldError> {
    vec![FieldError {
        path: "spec.http[0].name".into(),
        message: "must be unique\nacross the route".into(),
        ..FieldError::default()
    }]
}

/// The scenarios TrafficRoute and AccessPolicy share; `status` computes the object of that
/// kind at generation 2 from a generation, validation problems and proxy counts.
fn route_like(kind: &str, noun: &str, status: impl Fn(i64, &[FieldError], ProxyTally) -> Value) {
    let fine = status(2, &[], acked(2, 2));
    assert_eq!(health(kind, &fine), healthy(&fine));

    let bad = status(2, &invalid(), acked(2, 2));
    assert_eq!(
        health(kind, &bad),
        held_back("Degraded", &bad, "Accepted", "Invalid")
    );

    let rejected = status(2, &[], nack(2, 1));
    assert_eq!(
        health(kind, &rejected),
        held_back("Degraded", &rejected, "Programmed", "RejectedByProxy")
    );

    let pending = status(2, &[], acked(3, 1));
    assert_eq!(
        health(kind, &pending),
        held_back("Progressing", &pending, "Programmed", "Pending")
    );

    let behind = status(1, &[], acked(2, 2));
    assert_eq!(
        health(kind, &behind),
        progressing(
            "Waiting for the Remora controller to observe generation 2 (the status describes 1)."
        )
    );

    let new = object(kind, 1, None::<&()>);
    assert_eq!(
        health(kind, &new),
        progressing(&format!(
            "Waiting for the Remora controller to report the {noun}'s status."
        ))
    );
}

#[test]
fn a_traffic_route_is_healthy_only_when_accepted_and_programmed() {
    route_like(
        "TrafficRoute",
        "route",
        |generation, validation, proxies| {
            let facts = RouteFacts {
                generation: Some(generation),
                validation,
                proxies,
                ..RouteFacts::default()
            };
            object("TrafficRoute", 2, Some(&route_status(&facts, None, now())))
        },
    );
}

#[test]
fn an_access_policy_is_healthy_only_when_accepted_and_programmed() {
    route_like(
        "AccessPolicy",
        "policy",
        |generation, validation, proxies| {
            let facts = AccessFacts {
                generation: Some(generation),
                validation,
                proxies,
                ..AccessFacts::default()
            };
            let status = access_policy_status(&facts, None, now());
            object("AccessPolicy", 2, Some(&status))
        },
    );
}

/// The facts of a SidecarPolicy whose status describes `generation`, with two proxies
/// half-way from v1.39.0 to v1.40.0 and its rollout in `phase`.
fn sidecar_facts(generation: i64, phase: RolloutPhase) -> PolicyFacts<'static> {
    PolicyFacts {
        generation: Some(generation),
        matched_proxies: 2,
        matched_workloads: 1,
        versions: BTreeMap::from([("v1.40.0".to_owned(), 1), ("v1.39.0".to_owned(), 1)]),
        proxies: acked(2, 2),
        rollout: RolloutStatus {
            phase,
            target_version: "v1.40.0".into(),
            previous_version: Some("v1.39.0".into()),
            message: Some("Wave 1 of 2: waiting for demo/web's pods.".into()),
            ..RolloutStatus::default()
        },
        ..PolicyFacts::default()
    }
}

/// The SidecarPolicy at generation 2 with the status of `facts`.
fn sidecar_policy(facts: &PolicyFacts<'_>) -> Value {
    object("SidecarPolicy", 2, Some(&policy_status(facts, None, now())))
}

fn sidecar_health(obj: &Value) -> Health {
    health("SidecarPolicy", obj)
}

#[test]
fn a_sidecar_policy_is_healthy_once_its_rollout_is_complete() {
    let mut facts = sidecar_facts(2, RolloutPhase::Complete);
    facts.versions = BTreeMap::from([("v1.40.0".to_owned(), 2)]);
    facts.rollout.message = None;
    let done = sidecar_policy(&facts);
    assert_eq!(sidecar_health(&done), healthy(&done));
}

#[test]
fn a_sidecar_policy_progresses_while_its_rollout_runs_or_the_controller_lags() {
    let rolling = sidecar_policy(&sidecar_facts(2, RolloutPhase::Progressing));
    assert_eq!(
        sidecar_health(&rolling),
        held_back("Progressing", &rolling, "Progressing", "RollingOut")
    );
    let behind = sidecar_policy(&sidecar_facts(1, RolloutPhase::Complete));
    assert_eq!(
        sidecar_health(&behind),
        progressing(
            "Waiting for the Remora controller to observe generation 2 (the status describes 1)."
        )
    );
    let new = object("SidecarPolicy", 1, None::<&()>);
    assert_eq!(
        sidecar_health(&new),
        progressing("Waiting for the Remora controller to report the policy's status.")
    );
}

#[test]
fn a_sidecar_policy_is_degraded_when_invalid_rejected_or_rolled_back() {
    let problems = invalid();
    let bad = sidecar_policy(&PolicyFacts {
        validation: &problems,
        ..sidecar_facts(2, RolloutPhase::Complete)
    });
    assert_eq!(
        sidecar_health(&bad),
        held_back("Degraded", &bad, "Accepted", "Invalid")
    );
    // A NACK during a rollout: the rejection is what a person must see.
    let rejected = sidecar_policy(&PolicyFacts {
        proxies: nack(2, 1),
        ..sidecar_facts(2, RolloutPhase::Progressing)
    });
    assert_eq!(
        sidecar_health(&rejected),
        held_back("Degraded", &rejected, "Degraded", "RejectedByProxy")
    );
    let mut facts = sidecar_facts(2, RolloutPhase::RolledBack);
    facts.rollout.message = Some("Rolled back demo/web to v1.39.0.".into());
    let rolled_back = sidecar_policy(&facts);
    assert_eq!(
        sidecar_health(&rolled_back),
        held_back("Degraded", &rolled_back, "Degraded", "RolledBack")
    );
}

#[test]
fn a_paused_rollout_suspends_a_sidecar_policy() {
    let mut facts = sidecar_facts(2, RolloutPhase::Paused);
    facts.rollout.message = Some("Paused by spec.rollout.paused.".into());
    let paused = sidecar_policy(&facts);
    assert_eq!(
        sidecar_health(&paused),
        held_back("Suspended", &paused, "Progressing", "Paused")
    );
}
