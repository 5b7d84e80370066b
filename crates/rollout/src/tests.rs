use std::collections::BTreeSet;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use proptest::prelude::*;
use remora_api::{
    SidecarPolicySpec,
    sidecar_policy::{
        FailureAction,
        RolloutPhase::{Complete, Failed, Paused, Progressing, RolledBack},
        RolloutStatus,
    },
};
use serde_json::json;

use super::*;
use crate::{
    health::{self, Health, Wanted},
    step::{gate_durations, wave_targets},
};

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(1_800_000_000 + secs).expect("in range"))
}

fn spec_with(version: &str, rollout: serde_json::Value) -> SidecarPolicySpec {
    serde_json::from_value(json!({
        "proxy": {"image": "envoyproxy/envoy", "version": version},
        "rollout": rollout,
    }))
    .expect("a spec")
}

/// Waves 1 / 10% / 50% / 100%, a 30s minReady and a 10m timeout.
fn spec(version: &str, max_concurrent: i32) -> SidecarPolicySpec {
    spec_with(
        version,
        json!({
            "waves": [{"count": 1}, {"percent": 10}, {"percent": 50}, {"percent": 100}],
            "maxConcurrent": max_concurrent,
            "healthGate": {"minReady": "30s", "timeout": "10m"},
        }),
    )
}

fn name(i: usize) -> String {
    format!("w{i:02}")
}

fn wref(i: usize) -> WorkloadRef {
    WorkloadRef::new("Deployment", "shop", &name(i))
}

/// A pod injected under the tests' base proxy spec at `version`.
fn pod(name: &str, version: &str, ready_since: Option<i64>) -> PodFacts {
    PodFacts {
        name: name.to_owned(),
        version: Some(version.to_owned()),
        revision: Some(revision_of(&spec(version, 1), version)),
        ready_since: ready_since.map(at),
        terminating: false,
        proxy: ProxyHealth::Acked,
    }
}

/// `n` workloads of two replicas each, all on `version` and long Ready; listed in reverse so
/// the engine's own ordering is what the tests see.
fn fleet(n: usize, version: &str) -> Vec<Workload> {
    (0..n)
        .rev()
        .map(|i| Workload {
            workload: wref(i),
            desired: 2,
            stamp: None,
            pods: (0..2)
                .map(|p| pod(&format!("{}-{p}", name(i)), version, Some(-10_000)))
                .collect(),
        })
        .collect()
}

/// A stored status that completed `version`.
fn completed(version: &str, workloads: &[Workload]) -> RolloutStatus {
    step(&Input {
        policy: "shop/sidecars",
        spec: &spec(version, 1),
        previous: None,
        workloads,
        now: at(-20_000),
    })
    .status
}

/// Plays the controller and the kubelet: writes the status, then carries out the actions;
/// replacement pods get what the webhook would give them and turn Ready at once unless the
/// workload is in `broken`.
struct Sim {
    spec: SidecarPolicySpec,
    status: Option<RolloutStatus>,
    fleet: Vec<Workload>,
    now: i64,
    broken: BTreeSet<WorkloadRef>,
    generation: usize,
}

impl Sim {
    fn new(n: usize, from: &str, to: SidecarPolicySpec) -> Sim {
        let fleet = fleet(n, from);
        Sim {
            status: Some(completed(from, &fleet)),
            spec: to,
            fleet,
            now: 0,
            broken: BTreeSet::new(),
            generation: 0,
        }
    }

    fn step(&mut self) -> Step {
        let s = self.peek();
        self.status = Some(s.status.clone());
        self.apply(&s.actions);
        s
    }

    /// A step whose result is neither written nor carried out.
    fn peek(&self) -> Step {
        step(&Input {
            policy: "shop/sidecars",
            spec: &self.spec,
            previous: self.status.as_ref(),
            workloads: &self.fleet,
            now: at(self.now),
        })
    }

    fn fresh_pod(&mut self, w: &WorkloadRef) -> PodFacts {
        self.generation += 1;
        let version = version_for(&self.spec, self.status.as_ref(), w).to_owned();
        let ready = (!self.broken.contains(w)).then_some(self.now);
        PodFacts {
            revision: Some(revision_of(&self.spec, &version)),
            ..pod(&format!("{}-g{}", w.name, self.generation), &version, ready)
        }
    }

    fn apply(&mut self, actions: &[Action]) {
        for a in actions {
            match a {
                Action::Restart { workload, stamp } => {
                    let i = self.index(workload);
                    let replicas = self.fleet[i].desired;
                    let pods = (0..replicas).map(|_| self.fresh_pod(workload)).collect();
                    self.fleet[i].stamp = Some(stamp.clone());
                    self.fleet[i].pods = pods;
                }
                Action::Evict { workload, pod } => {
                    let i = self.index(workload);
                    let fresh = self.fresh_pod(workload);
                    let w = &mut self.fleet[i];
                    w.pods.retain(|p| &p.name != pod);
                    w.pods.push(fresh);
                }
            }
        }
    }

    fn index(&self, w: &WorkloadRef) -> usize {
        self.fleet
            .iter()
            .position(|x| &x.workload == w)
            .expect("a known workload")
    }

    fn workload(&mut self, w: &WorkloadRef) -> &mut Workload {
        let i = self.index(w);
        &mut self.fleet[i]
    }

    fn status(&self) -> &RolloutStatus {
        self.status.as_ref().expect("stepped")
    }

    fn reached(&self) -> Vec<WorkloadRef> {
        self.status().reached.clone()
    }
}

fn restarted(actions: &[Action]) -> Vec<WorkloadRef> {
    actions
        .iter()
        .map(|a| match a {
            Action::Restart { workload, .. } | Action::Evict { workload, .. } => workload.clone(),
        })
        .collect()
}

fn reasons(events: &[Note]) -> Vec<&'static str> {
    events.iter().map(|e| e.reason).collect()
}

#[test]
fn without_a_stored_rollout_there_is_nothing_to_roll() {
    let workloads = fleet(3, "1.39.0");
    let spec = spec("1.40.0", 1);
    let s = step(&Input {
        policy: "shop/sidecars",
        spec: &spec,
        previous: None,
        workloads: &workloads,
        now: at(0),
    });
    assert!(s.actions.is_empty());
    assert_eq!(s.status.phase, Complete);
    assert_eq!(s.status.revision, revision(&spec));
    assert_eq!(
        (s.status.updated_workloads, s.status.total_workloads),
        (3, 3)
    );
    assert_eq!(version_for(&spec, Some(&s.status), &wref(1)), "1.40.0");

    // A status written before rollouts existed has no revision: also nothing to roll.
    let old = RolloutStatus {
        phase: Complete,
        target_version: "1.38.0".into(),
        ..Default::default()
    };
    assert_eq!(version_for(&spec, Some(&old), &wref(1)), "1.40.0");
    let s = step(&Input {
        policy: "shop/sidecars",
        spec: &spec,
        previous: Some(&old),
        workloads: &workloads,
        now: at(0),
    });
    assert_eq!((s.status.phase, s.actions.len()), (Complete, 0));
}

#[test]
fn waves_reach_workloads_in_order_after_each_gate() {
    let mut sim = Sim::new(10, "1.39.0", spec("1.40.0", 10));
    let s = sim.step();
    // 10% of 10 is the canary's 1 again, so that wave is left out.
    assert_eq!((s.status.wave, s.status.total_waves), (1, 3));
    assert_eq!(restarted(&s.actions), [wref(0)]);
    assert_eq!(reasons(&s.events), ["WaveStarted"]);
    assert_eq!(s.status.previous_version.as_deref(), Some("1.39.0"));
    match &s.actions[0] {
        Action::Restart { stamp, .. } => assert!(stamp.starts_with("1.40.0/"), "{stamp}"),
        other => panic!("{other:?}"),
    }

    // Ready for 29s is not minReady yet.
    sim.now = 29;
    let s = sim.step();
    assert!(s.actions.is_empty());
    assert_eq!((s.status.wave, s.status.reached.len()), (1, 1));

    sim.now = 30;
    let s = sim.step();
    assert_eq!(reasons(&s.events), ["WavePassed", "WaveStarted"]);
    assert_eq!(s.status.wave, 2);
    assert_eq!(s.status.wave_started_at, Some(at(30)));
    assert_eq!(restarted(&s.actions), (1..5).map(wref).collect::<Vec<_>>());
    assert_eq!(s.status.updated_workloads, 1);

    sim.now = 60;
    let s = sim.step();
    assert_eq!(s.status.wave, 3);
    assert_eq!(restarted(&s.actions), (5..10).map(wref).collect::<Vec<_>>());

    sim.now = 90;
    let s = sim.step();
    assert_eq!(s.status.phase, Complete);
    assert_eq!(reasons(&s.events), ["WavePassed", "RolloutComplete"]);
    assert_eq!(s.status.updated_workloads, 10);
    assert!(s.status.reached.is_empty());
    assert_eq!(sim.reached().len(), 0);
    let again = sim.step();
    assert!(again.actions.is_empty() && again.events.is_empty());
    assert_eq!(again.status.phase, Complete);
}

#[test]
fn max_concurrent_bounds_the_workloads_under_way() {
    let spec = spec_with(
        "1.40.0",
        json!({"waves": [{"percent": 100}], "maxConcurrent": 3}),
    );
    let mut sim = Sim::new(10, "1.39.0", spec);
    let s = sim.step();
    assert_eq!(restarted(&s.actions), [wref(0), wref(1), wref(2)]);
    sim.now = 10;
    assert!(sim.step().actions.is_empty(), "none is healthy yet");
    sim.now = 30;
    let s = sim.step();
    assert_eq!(restarted(&s.actions), [wref(3), wref(4), wref(5)]);
}

#[test]
fn a_gate_timeout_rolls_back_only_the_wave() {
    let mut sim = Sim::new(10, "1.39.0", spec("1.40.0", 10));
    sim.broken.insert(wref(0));
    sim.step();
    sim.now = 600;
    let s = sim.step();
    assert_eq!(s.status.phase, Progressing, "not past the timeout yet");
    sim.now = 601;
    let s = sim.step();
    assert_eq!(s.status.phase, RolledBack);
    assert_eq!(reasons(&s.events), ["GateFailed", "RolledBack"]);
    assert!(s.events.iter().all(|e| e.warning));
    assert_eq!(s.status.failed_workloads.len(), 1);
    assert_eq!(s.status.failed_workloads[0].name, "w00");
    assert_eq!(
        s.status.failed_workloads[0].reason,
        "2 of 2 pods not Ready after 10m"
    );
    assert!(s.status.reached.is_empty());
    match &s.actions[..] {
        [Action::Restart { workload, stamp }] => {
            assert_eq!(workload, &wref(0));
            assert!(stamp.starts_with("1.39.0/"), "{stamp}");
        }
        other => panic!("{other:?}"),
    }
    // Nothing else was touched and everything not reached gets the previous version.
    for i in 1..10 {
        assert_eq!(sim.fleet[sim.index(&wref(i))].stamp, None);
        assert_eq!(
            version_for(&sim.spec, sim.status.as_ref(), &wref(i)),
            "1.39.0"
        );
    }
    assert_eq!(
        version_for(&sim.spec, sim.status.as_ref(), &wref(0)),
        "1.39.0"
    );

    sim.now = 700;
    let s = sim.step();
    assert_eq!(s.status.phase, RolledBack, "stays until the spec changes");
    assert!(s.actions.is_empty() && s.events.is_empty());
}

#[test]
fn a_rollback_leaves_earlier_waves_on_the_target_and_is_reissued() {
    let mut sim = Sim::new(10, "1.39.0", spec("1.40.0", 10));
    sim.step();
    sim.now = 30;
    sim.broken.insert(wref(3));
    let started = sim.step();
    assert_eq!(started.status.wave, 2);
    sim.now = 30 + 601;
    let s = sim.peek();
    assert_eq!(s.status.phase, RolledBack);
    assert_eq!(s.status.reached, [wref(0)]);
    assert_eq!(restarted(&s.actions), (1..5).map(wref).collect::<Vec<_>>());
    assert!(
        s.status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("the 1 workloads of earlier waves stay on 1.40.0")),
        "{:?}",
        s.status.message
    );
    // The controller wrote the status and crashed before acting: the rollback comes again.
    sim.status = Some(s.status.clone());
    let again = sim.peek();
    assert_eq!(again.status.phase, RolledBack);
    assert_eq!(
        restarted(&again.actions),
        (1..5).map(wref).collect::<Vec<_>>()
    );
    sim.apply(&again.actions);
    assert!(sim.peek().actions.is_empty());
    assert_eq!(
        version_for(&sim.spec, sim.status.as_ref(), &wref(0)),
        "1.40.0"
    );
}

#[test]
fn a_nack_fails_the_gate_at_once() {
    let mut sim = Sim::new(10, "1.39.0", spec("1.40.0", 10));
    sim.step();
    sim.now = 5;
    sim.workload(&wref(0)).pods[1].proxy =
        ProxyHealth::Nacked("unknown field \"foo\" in listener".into());
    let s = sim.step();
    assert_eq!(s.status.phase, RolledBack);
    let reason = &s.status.failed_workloads[0].reason;
    assert!(
        reason.starts_with("proxy on pod w00-g2 rejected its config: unknown field"),
        "{reason}"
    );
}

#[test]
fn pause_on_failure_waits_and_then_continues() {
    let mut spec = spec("1.40.0", 10);
    spec.rollout.on_failure = FailureAction::Pause;
    let mut sim = Sim::new(10, "1.39.0", spec);
    sim.broken.insert(wref(0));
    sim.step();
    sim.now = 601;
    let s = sim.step();
    assert_eq!(s.status.phase, Paused);
    assert_eq!(reasons(&s.events), ["GateFailed"]);
    assert_eq!(s.status.reached, [wref(0)]);
    assert!(s.actions.is_empty());
    sim.now = 700;
    let s = sim.step();
    assert_eq!((s.status.phase, s.events.len()), (Paused, 0));

    // A person fixes the pods; once Ready for minReady the rollout moves on by itself.
    for p in &mut sim.workload(&wref(0)).pods {
        p.ready_since = Some(at(700));
    }
    sim.now = 730;
    let s = sim.step();
    assert_eq!(s.status.phase, Progressing);
    assert_eq!(reasons(&s.events), ["Resumed", "WavePassed", "WaveStarted"]);
    assert!(s.status.failed_workloads.is_empty());
    assert_eq!(restarted(&s.actions), (1..5).map(wref).collect::<Vec<_>>());
}

#[test]
fn spec_paused_stops_new_workloads_and_resumes() {
    let mut sim = Sim::new(10, "1.39.0", spec("1.40.0", 10));
    sim.step();
    sim.spec.rollout.paused = true;
    sim.now = 30;
    let s = sim.step();
    assert_eq!(s.status.phase, Paused);
    assert!(s.events.iter().any(|e| e.reason == "Paused"));
    assert!(s.actions.is_empty(), "{:?}", s.actions);
    assert!(
        s.status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("set it to false"))
    );
    sim.now = 5_000;
    let s = sim.step();
    assert_eq!(
        (s.status.phase, s.events.len(), s.actions.len()),
        (Paused, 0, 0)
    );
    sim.spec.rollout.paused = false;
    let s = sim.step();
    assert_eq!(s.status.phase, Progressing);
    assert_eq!(reasons(&s.events), ["Resumed"]);
    assert_eq!(restarted(&s.actions), (1..5).map(wref).collect::<Vec<_>>());
    assert_eq!(s.status.wave_started_at, Some(at(5_000)));
}

/// A version change made together with `paused: true` (the GitOps way to stage it) starts
/// nothing and says it is paused, not that a wave started.
#[test]
fn a_rollout_staged_paused_waits_before_wave_one() {
    let mut to = spec("1.40.0", 10);
    to.rollout.paused = true;
    let mut sim = Sim::new(3, "1.39.0", to);
    let s = sim.step();
    assert_eq!(s.status.phase, Paused);
    assert_eq!(reasons(&s.events), ["Paused"]);
    assert!(s.actions.is_empty(), "{:?}", s.actions);
    assert!(s.status.reached.is_empty());
    sim.spec.rollout.paused = false;
    sim.now = 10;
    let s = sim.step();
    assert_eq!(s.status.phase, Progressing);
    assert_eq!(reasons(&s.events), ["Resumed"]);
    assert_eq!(restarted(&s.actions), [wref(0)]);
}

#[test]
fn a_restarted_controller_resumes_at_the_same_wave() {
    let mut sim = Sim::new(10, "1.39.0", spec("1.40.0", 10));
    sim.step();
    sim.now = 30;
    let before = sim.step();
    sim.now = 40;
    // Same status, same fleet: a new controller process sees exactly what the old one left.
    let resumed = sim.peek();
    assert_eq!(resumed.status.wave, before.status.wave);
    assert_eq!(resumed.status.reached, before.status.reached);
    assert_eq!(
        resumed.status.wave_started_at,
        before.status.wave_started_at
    );
    assert!(resumed.actions.is_empty(), "{:?}", resumed.actions);
    assert!(resumed.events.is_empty());
}

#[test]
fn a_lost_action_is_issued_again_and_only_until_it_took() {
    let mut sim = Sim::new(10, "1.39.0", spec("1.40.0", 10));
    let first = sim.peek();
    // Written, then the controller died before patching the workload.
    sim.status = Some(first.status.clone());
    sim.now = 3;
    let again = sim.peek();
    assert_eq!(again.actions, first.actions);
    assert!(again.events.is_empty());
    // The patch landed but the pods are not replaced yet: nothing more to do.
    sim.workload(&wref(0)).stamp = match &first.actions[0] {
        Action::Restart { stamp, .. } => Some(stamp.clone()),
        other => panic!("{other:?}"),
    };
    assert!(sim.peek().actions.is_empty());
}

#[test]
fn a_workload_already_on_the_target_gets_no_action() {
    let mut sim = Sim::new(3, "1.39.0", spec("1.40.0", 1));
    let on_target = revision(&sim.spec);
    for p in &mut sim.workload(&wref(0)).pods {
        p.version = Some("1.40.0".into());
        p.revision = Some(on_target.clone());
    }
    let s = sim.step();
    // The canary was healthy on arrival, so its wave passed and the next one began.
    assert_eq!(s.status.reached, [wref(0), wref(1)]);
    assert_eq!(restarted(&s.actions), [wref(1)]);
    assert_eq!(
        reasons(&s.events),
        ["WaveStarted", "WavePassed", "WaveStarted"]
    );
}

#[test]
fn a_new_version_supersedes_a_rollout_under_way() {
    let mut sim = Sim::new(10, "1.39.0", spec("1.40.0", 10));
    sim.step();
    sim.now = 30;
    sim.step();
    assert_eq!(sim.reached().len(), 5);
    sim.spec = spec("1.40.1", 10);
    // Before the controller steps, the webhook already gives the last completed version.
    assert_eq!(
        version_for(&sim.spec, sim.status.as_ref(), &wref(3)),
        "1.39.0"
    );
    sim.now = 40;
    let s = sim.step();
    assert_eq!(reasons(&s.events), ["Superseded", "WaveStarted"]);
    assert_eq!(s.status.target_version, "1.40.1");
    assert_eq!(s.status.previous_version.as_deref(), Some("1.39.0"));
    assert_eq!((s.status.wave, s.status.updated_workloads), (1, 0));
    assert_eq!(s.status.reached, [wref(0)]);
    assert_eq!(
        version_for(&sim.spec, sim.status.as_ref(), &wref(3)),
        "1.39.0"
    );
    assert_eq!(
        version_for(&sim.spec, sim.status.as_ref(), &wref(0)),
        "1.40.1"
    );
}

#[test]
fn version_for_follows_every_transition() {
    let mut sim = Sim::new(3, "1.39.0", spec("1.40.0", 1));
    let v = |sim: &Sim, i| version_for(&sim.spec, sim.status.as_ref(), &wref(i)).to_owned();
    assert_eq!(
        version_for(&sim.spec, None, &wref(0)),
        "1.40.0",
        "no status: the spec"
    );
    assert_eq!((v(&sim, 0), v(&sim, 2)), ("1.39.0".into(), "1.39.0".into()));
    sim.step();
    assert_eq!((v(&sim, 0), v(&sim, 1)), ("1.40.0".into(), "1.39.0".into()));
    sim.now = 30;
    sim.step();
    assert_eq!((v(&sim, 1), v(&sim, 2)), ("1.40.0".into(), "1.39.0".into()));
    sim.now = 60;
    sim.step();
    sim.now = 90;
    let s = sim.step();
    assert_eq!(s.status.phase, Complete);
    assert_eq!(v(&sim, 2), "1.40.0");
    // A spec edit that needs no restart leaves the versions alone.
    sim.spec.rollout.max_concurrent = 5;
    sim.spec.traffic.connect_timeout = Some("2s".into());
    assert_eq!(v(&sim, 2), "1.40.0");
}

#[test]
fn evict_mode_evicts_one_pod_per_workload_while_the_others_are_ready() {
    let spec = spec_with(
        "1.40.0",
        json!({"waves": [{"percent": 100}], "maxConcurrent": 2, "method": "Evict"}),
    );
    let mut sim = Sim::new(3, "1.39.0", spec);
    sim.broken.insert(wref(0));
    let s = sim.step();
    assert_eq!(
        s.actions,
        [
            Action::Evict {
                workload: wref(0),
                pod: "w00-0".into()
            },
            Action::Evict {
                workload: wref(1),
                pod: "w01-0".into()
            },
        ]
    );
    // w00's replacement is not Ready: its other old pod must wait. w01's is Ready.
    sim.now = 5;
    let s = sim.step();
    assert_eq!(
        s.actions,
        [Action::Evict {
            workload: wref(1),
            pod: "w01-1".into()
        }]
    );
    // A pod already terminating and not yet replaced blocks the next eviction too.
    sim.workload(&wref(1))
        .pods
        .push(pod("extra", "1.39.0", None));
    sim.workload(&wref(1)).desired = 3;
    sim.workload(&wref(1)).pods[0].terminating = true;
    assert!(
        !sim.peek()
            .actions
            .iter()
            .any(|a| matches!(a, Action::Evict { workload, .. } if *workload == wref(1)))
    );
}

#[test]
fn a_version_outside_the_window_starts_nothing() {
    let mut sim = Sim::new(3, "1.39.0", spec("1.41.0", 1));
    let s = sim.step();
    assert_eq!(s.status.phase, Failed);
    assert!(s.actions.is_empty());
    assert_eq!(reasons(&s.events), ["RolloutRefused"]);
    let m = s.status.message.as_deref().unwrap_or_default();
    assert!(
        m.contains("spec.proxy.version") && m.contains("1.38 through 1.40"),
        "{m}"
    );
    assert_eq!(
        version_for(&sim.spec, sim.status.as_ref(), &wref(0)),
        "1.39.0"
    );
    let s = sim.step();
    assert_eq!((s.status.phase, s.events.len()), (Failed, 0));

    // Fixed: the rollout starts from the last completed version.
    sim.spec = spec("1.40.0", 1);
    let s = sim.step();
    assert_eq!(s.status.phase, Progressing);
    assert_eq!(s.status.previous_version.as_deref(), Some("1.39.0"));
    assert_eq!(restarted(&s.actions), [wref(0)]);
}

#[test]
fn workloads_that_come_and_go_join_or_leave_the_queue() {
    let mut sim = Sim::new(4, "1.39.0", spec("1.40.0", 10));
    sim.step();
    sim.now = 30;
    sim.step();
    assert_eq!(sim.reached(), [wref(0), wref(1)]);
    sim.fleet.retain(|w| w.workload != wref(1));
    let late = WorkloadRef::new("Deployment", "shop", "w015");
    let mut w = fleet(6, "1.39.0").remove(0);
    w.workload = late.clone();
    sim.fleet.push(w);
    sim.now = 40;
    let s = sim.step();
    assert_eq!(s.status.total_workloads, 4);
    assert_eq!(s.status.reached, [wref(0), late.clone()]);
    assert_eq!(s.status.updated_workloads, 1);
    assert_eq!(restarted(&s.actions), [late]);
}

/// `to` with only the proxy's resources changed.
fn resized(mut to: SidecarPolicySpec) -> SidecarPolicySpec {
    to.proxy.resources =
        Some(serde_json::from_value(json!({"requests": {"cpu": "200m"}})).expect("resources"));
    to
}

fn evict_spec(version: &str) -> SidecarPolicySpec {
    spec_with(
        version,
        json!({"waves": [{"percent": 100}], "maxConcurrent": 2, "method": "Evict",
            "healthGate": {"minReady": "30s", "timeout": "10m"}}),
    )
}

/// Steps (30s apart, past minReady) until the rollout leaves Progressing.
fn run_out(sim: &mut Sim) -> Step {
    for _ in 0..50 {
        sim.now += 30;
        let s = sim.step();
        if s.status.phase != Progressing {
            return s;
        }
    }
    panic!("still progressing: {:?}", sim.status);
}

#[test]
fn a_resources_only_change_evicts_the_old_pods() {
    let mut sim = Sim::new(2, "1.40.0", resized(evict_spec("1.40.0")));
    let s = sim.step();
    assert_eq!(s.status.phase, Progressing);
    assert_eq!(s.status.previous_version.as_deref(), Some("1.40.0"));
    assert_eq!(
        s.actions,
        [
            Action::Evict {
                workload: wref(0),
                pod: "w00-0".into()
            },
            Action::Evict {
                workload: wref(1),
                pod: "w01-0".into()
            },
        ]
    );
    let s = run_out(&mut sim);
    assert_eq!(s.status.phase, Complete);
    let want = revision(&sim.spec);
    for w in &sim.fleet {
        assert_eq!(w.pods.len(), 2);
        for p in &w.pods {
            assert!(p.name.contains("-g"), "{} was never evicted", p.name);
            assert_eq!(
                (p.version.as_deref(), p.revision.as_deref()),
                (Some("1.40.0"), Some(want.as_str()))
            );
        }
    }
}

#[test]
fn a_resources_only_restart_waits_for_pods_of_the_new_revision() {
    let mut sim = Sim::new(3, "1.40.0", resized(spec("1.40.0", 1)));
    let first = sim.peek();
    assert_eq!(restarted(&first.actions), [wref(0)]);
    // The template is patched but the old pods still run: they are on the version, yet the
    // gate must not pass on them.
    sim.status = Some(first.status.clone());
    sim.workload(&wref(0)).stamp = match &first.actions[0] {
        Action::Restart { stamp, .. } => Some(stamp.clone()),
        other => panic!("{other:?}"),
    };
    sim.now = 60;
    let s = sim.step();
    assert_eq!((s.status.wave, s.status.reached.len()), (1, 1));
    assert!(s.events.is_empty() && s.actions.is_empty(), "{s:?}");
    sim.now = 601 + 60;
    let s = sim.peek();
    assert_eq!(s.status.phase, RolledBack);
    assert_eq!(
        s.status.failed_workloads[0].reason,
        format!(
            "2 of 2 pods still run 1.40.0 at outdated revision {} after 10m",
            revision(&spec("1.40.0", 1))
        )
    );

    // The new pods arrive: the gate passes once they are Ready for minReady.
    sim.now = 60;
    sim.apply(&first.actions);
    sim.now = 90;
    let s = sim.step();
    assert_eq!(reasons(&s.events), ["WavePassed", "WaveStarted"]);
    assert_eq!(restarted(&s.actions), [wref(1)]);
}

#[test]
fn a_pod_without_a_revision_is_judged_by_its_version() {
    let mut sim = Sim::new(3, "1.39.0", spec("1.40.0", 1));
    for w in &mut sim.fleet {
        for p in &mut w.pods {
            p.revision = None;
        }
    }
    for p in &mut sim.workload(&wref(0)).pods {
        p.version = Some("1.40.0".into());
    }
    let s = sim.step();
    // w00's unannotated pods run the target version, so it needs nothing; w01's run the
    // old one and are restarted.
    assert_eq!(s.status.reached, [wref(0), wref(1)]);
    assert_eq!(restarted(&s.actions), [wref(1)]);

    // Unannotated pods on the version pass a resources-only change: nothing tells them apart.
    let mut sim = Sim::new(2, "1.40.0", resized(evict_spec("1.40.0")));
    for w in &mut sim.fleet {
        for p in &mut w.pods {
            p.revision = None;
        }
    }
    let s = sim.step();
    assert_eq!(s.status.phase, Complete);
    assert!(s.actions.is_empty());
}

#[test]
fn a_rollback_is_judged_by_the_previous_revision() {
    let mut to = resized(evict_spec("1.40.0"));
    to.rollout.max_concurrent = 1;
    to.rollout.waves =
        serde_json::from_value(json!([{"count": 1}, {"percent": 100}])).expect("waves");
    let mut sim = Sim::new(3, "1.39.0", to);
    sim.broken.insert(wref(0));
    sim.step();
    sim.now = 601;
    let s = sim.step();
    assert_eq!(s.status.phase, RolledBack);
    assert_eq!(
        s.actions,
        [Action::Evict {
            workload: wref(0),
            pod: "w00-g1".into()
        }]
    );
    sim.broken.clear();
    sim.now += 30;
    sim.step();
    // The replacement gets the previous version under the current spec, and that counts as
    // rolled back: it is not evicted again. The pod from before the rollout runs the
    // previous version already and is left alone.
    let pods: Vec<(&str, Option<&str>, Option<&str>)> = sim.fleet[sim.index(&wref(0))]
        .pods
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_deref(), p.revision.as_deref()))
        .collect();
    let old = revision(&spec("1.39.0", 1));
    let previous = revision_of(&sim.spec, "1.39.0");
    assert_eq!(
        pods,
        [
            ("w00-1", Some("1.39.0"), Some(old.as_str())),
            ("w00-g2", Some("1.39.0"), Some(previous.as_str())),
        ]
    );
    sim.now += 30;
    let s = sim.peek();
    assert_eq!(s.status.phase, RolledBack);
    assert!(s.actions.is_empty(), "{:?}", s.actions);
    // Workloads the rollout never reached were left alone.
    assert_eq!(sim.workload(&wref(1)).pods, fleet(3, "1.39.0")[1].pods);
}

#[test]
fn revision_is_stable_and_ignores_what_needs_no_restart() {
    let base = spec("1.40.0", 1);
    assert_eq!(revision(&base), "f3a88a538a");
    let mut edited = base.clone();
    edited.rollout.paused = true;
    edited.rollout.max_concurrent = 7;
    edited.traffic.request_timeout = Some("3s".into());
    assert_eq!(revision(&edited), revision(&base));
    let mut resized = base.clone();
    resized.proxy.concurrency = Some(4);
    assert_ne!(revision(&resized), revision(&base));
    assert_eq!(revision(&resized).len(), 10);
    // A pod on another version under the same spec: the spec's revision with that version.
    assert_eq!(revision_of(&base, "1.40.0"), revision(&base));
    assert_eq!(revision_of(&base, "1.39.0"), revision(&spec("1.39.0", 7)));
    // A shared volume is part of the sidecar: adding one restarts.
    let mut with_volume = base.clone();
    with_volume.volumes =
        vec![serde_json::from_value(json!({"name": "logs", "emptyDir": {}})).expect("a volume")];
    assert_ne!(revision(&with_volume), revision(&base));
}

#[test]
fn wave_targets_skip_empty_waves_and_cover_everyone() {
    let s = spec("1.40.0", 1);
    assert_eq!(wave_targets(&s, 10), [1, 5, 10]);
    assert_eq!(wave_targets(&s, 200), [1, 20, 100, 200]);
    assert_eq!(wave_targets(&s, 1), [1]);
    assert!(wave_targets(&s, 0).is_empty());
    let counts = spec_with("1.40.0", json!({"waves": [{"count": 50}, {"percent": 90}]}));
    assert_eq!(wave_targets(&counts, 10), [10]);
}

proptest! {
    /// Whatever the pods do, a step never leaves more than maxConcurrent reached workloads of
    /// the wave unhealthy by its own doing: it only reaches new ones while slots are free.
    #[test]
    fn never_more_than_max_concurrent_under_way(
        max_concurrent in 1i32..4,
        delays in proptest::collection::vec(0i64..120, 1..40),
        broken in proptest::collection::btree_set(0usize..12, 0..3),
    ) {
        let mut sim = Sim::new(12, "1.39.0", spec("1.40.0", max_concurrent));
        sim.broken = broken.iter().copied().map(wref).collect();
        for d in delays {
            sim.now += d;
            let before: BTreeSet<WorkloadRef> = sim.reached().into_iter().collect();
            let s = sim.step();
            let (min_ready, _) = gate_durations(&sim.spec).expect("valid gate");
            let limit = usize::try_from(max_concurrent).unwrap_or(1);
            let new = s.status.reached.iter().filter(|r| !before.contains(*r)).count();
            let under_way = s.status.reached.iter().filter(|r| {
                let w = &sim.fleet[sim.index(r)];
                let want = Wanted::new(&sim.spec, "1.40.0");
                health::judge(w, &want, &at(sim.now), min_ready, None) != Health::Healthy
            }).count();
            prop_assert!(new <= limit);
            prop_assert!(under_way <= limit, "{under_way} under way");
            if s.status.phase != Progressing {
                break;
            }
        }
    }
}
