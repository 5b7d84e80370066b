//! Central, wave-based sidecar upgrades as pure functions.
//!
//! The controller calls [`step`] every few seconds for each `SidecarPolicy` with the stored
//! `status.rollout` and the state of the workloads the policy governs; it writes the returned
//! status first and then carries out the returned actions. Every fact needed to resume lives
//! in that status, so a controller that crashed between the two calls [`step`] again and gets
//! the same wave back, with any action that may have been lost issued again. The mutating
//! webhook calls [`version_for`] to pick the proxy version of a new pod.
//!
//! Semantics:
//! - Without a stored rollout (a new policy, or a status written before rollouts existed)
//!   there is nothing to roll: the rollout is `Complete` and new pods get the spec's version.
//! - A sidecar spec whose [`revision`] differs from the stored one starts a rollout from the
//!   last version that completed. A rollout under way is superseded: the workloads it reached
//!   go back into the queue and meanwhile get that last completed version.
//! - Workloads are reached in [`WorkloadRef`] order (namespace, name, kind). Waves are
//!   cumulative targets; waves that add nothing are left out and the last covers everyone.
//!   Within a wave at most `maxConcurrent` reached workloads are not yet healthy.
//! - A wave passes its health gate when each of its workloads has `desired` live pods on the
//!   target, each Ready for `minReady` with its proxy not NACKing or waiting for config, and
//!   no live pod on another version. A NACK fails the gate at once; otherwise it fails when
//!   the wave's timeout passes, counted from when the wave last reached a workload (so one
//!   reached late in a wave still gets the whole timeout).
//! - A failed gate rolls the wave's workloads back (`Rollback`; earlier waves stay on the
//!   target) or pauses until the wave turns healthy by itself (`Pause`).
//! - Pods are told apart by the sidecar revision they report ([`revision_of`] the spec with
//!   the version they got), so a change that keeps the version (resources, log level, extra
//!   containers) moves and gates them like a version change. A pod injected before the
//!   revision annotation existed is judged by its version alone.

#![forbid(unsafe_code)]

mod health;
#[cfg(test)]
mod tests;

use std::{collections::BTreeSet, time::Duration};

use k8s_openapi::{api::core::v1::Container, apimachinery::pkg::apis::meta::v1::Time};
use remora_api::{
    SidecarPolicySpec,
    sidecar_policy::{
        FailedWorkload, FailureAction, ProxySpec, RestartMethod, RolloutPhase, RolloutStatus,
        SharedVolume, check_proxy_version,
    },
};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use remora_api::sidecar_policy::WorkloadRef;

use health::{Health, Wanted};

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
    /// The [`revision_of`] the sidecar the pod got (annotation `sidecar.remora.dev/revision`);
    /// `None` for a pod injected before that annotation existed, judged by `version` then.
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

/// Everything [`step`] needs, all plain data.
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
fn baseline(stored: &RolloutStatus) -> Option<&str> {
    if stored.phase == RolloutPhase::Complete {
        Some(&stored.target_version)
    } else {
        stored.previous_version.as_deref()
    }
}

/// The next step of the policy's rollout.
pub fn step(input: &Input) -> Step {
    let spec = input.spec;
    let target = spec.proxy.version.as_str();
    let rev = revision(spec);
    let mut workloads: Vec<&Workload> = input.workloads.iter().collect();
    workloads.sort_by(|a, b| a.workload.cmp(&b.workload));
    workloads.dedup_by(|a, b| a.workload == b.workload);
    let stored = input.previous.filter(|s| !s.revision.is_empty());
    let mut events = Vec::new();

    let starting = stored.is_some_and(|s| s.revision != rev || s.phase == RolloutPhase::Failed);
    let previous = match stored {
        Some(s) if starting => baseline(s),
        Some(s) => s.previous_version.as_deref(),
        None => None,
    };
    let refusal = match (check_proxy_version(target), gate_durations(spec)) {
        (Ok(()), Ok(gate)) => Ok(gate),
        (Err(e), _) => Err(e.to_string()),
        (Ok(()), Err(e)) => Err(e),
    };
    let (min_ready, timeout) = match refusal {
        Ok(gate) => gate,
        Err(why) => {
            let already =
                stored.is_some_and(|s| s.revision == rev && s.phase == RolloutPhase::Failed);
            if !already {
                events.push(note(true, "RolloutRefused", why.clone()));
            }
            let mut status = base_status(&rev, target, previous, &workloads, spec);
            status.phase = RolloutPhase::Failed;
            status.wave = 0;
            status.updated_workloads = 0;
            status.message = Some(format!(
                "No rollout of sidecar {target} for {}: {why}",
                input.policy
            ));
            return Step {
                status,
                actions: Vec::new(),
                events,
            };
        }
    };

    let Some(stored) = stored else {
        return settled(&rev, target, None, &workloads, spec, events);
    };
    if starting
        && stored.revision != rev
        && matches!(
            stored.phase,
            RolloutPhase::Progressing | RolloutPhase::Paused
        )
    {
        events.push(note(
            false,
            "Superseded",
            format!(
                "The rollout of sidecar {} was superseded by {target}; its workloads go \
                 back into the queue",
                stored.target_version
            ),
        ));
    }
    let previous = match previous {
        Some(previous) => previous,
        // A policy's first sidecar needs no rollout: pods get it as they are created.
        None if starting => return settled(&rev, target, None, &workloads, spec, events),
        None => target,
    };
    let rollout = Rollout {
        input,
        targets: wave_targets(spec, workloads.len()),
        workloads,
        target: Wanted::new(spec, target),
        previous: Wanted::new(spec, previous),
        min_ready,
        timeout,
    };
    if starting {
        // A new rollout inherits nothing; its pause state is the spec's, so no event repeats.
        let fresh = RolloutStatus {
            phase: if spec.rollout.paused {
                RolloutPhase::Paused
            } else {
                RolloutPhase::Progressing
            },
            ..RolloutStatus::default()
        };
        events.push(if spec.rollout.paused {
            note(
                false,
                "Paused",
                format!(
                    "The rollout of sidecar {target} (from {previous}) waits before wave 1: \
                     spec.rollout.paused is true"
                ),
            )
        } else {
            note(
                false,
                "WaveStarted",
                format!("Rolling out sidecar {target} (from {previous}): wave 1 started"),
            )
        });
        return rollout.progress(&fresh, true, events);
    }
    match stored.phase {
        RolloutPhase::Complete => settled(
            &rev,
            target,
            stored.previous_version.as_deref(),
            &rollout.workloads,
            spec,
            events,
        ),
        RolloutPhase::RolledBack => rollout.rolled_back(stored, events),
        _ => rollout.progress(stored, false, events),
    }
}

fn gate_durations(spec: &SidecarPolicySpec) -> Result<(Duration, Duration), String> {
    let gate = &spec.rollout.health_gate;
    let min_ready = gate
        .min_ready
        .parse()
        .map_err(|e| format!("spec.rollout.healthGate.minReady: {e}"))?;
    let timeout = gate
        .timeout
        .parse()
        .map_err(|e| format!("spec.rollout.healthGate.timeout: {e}"))?;
    Ok((min_ready, timeout))
}

fn note(warning: bool, reason: &'static str, message: String) -> Note {
    Note {
        warning,
        reason,
        message,
    }
}

/// Cumulative workload counts per wave, empty waves left out, the last covering everyone.
fn wave_targets(spec: &SidecarPolicySpec, total: usize) -> Vec<usize> {
    let mut targets = Vec::new();
    let mut last = 0;
    for wave in &spec.rollout.waves {
        let want = match (wave.count, wave.percent) {
            (Some(c), _) => usize::try_from(c).unwrap_or(0),
            (None, Some(p)) => (usize::try_from(p).unwrap_or(0) * total).div_ceil(100),
            (None, None) => 0,
        }
        .min(total);
        if want > last {
            targets.push(want);
            last = want;
        }
    }
    if last < total {
        targets.push(total);
    }
    targets
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn base_status(
    rev: &str,
    target: &str,
    previous: Option<&str>,
    workloads: &[&Workload],
    spec: &SidecarPolicySpec,
) -> RolloutStatus {
    let total_waves = count(wave_targets(spec, workloads.len()).len());
    RolloutStatus {
        phase: RolloutPhase::Complete,
        target_version: target.to_owned(),
        previous_version: previous.map(str::to_owned),
        revision: rev.to_owned(),
        reached: Vec::new(),
        wave_started_at: None,
        wave: total_waves,
        total_waves,
        updated_workloads: count(workloads.len()),
        total_workloads: count(workloads.len()),
        failed_workloads: Vec::new(),
        message: None,
    }
}

/// Nothing to roll: every workload is at (or gets, as its pods are created) the target.
fn settled(
    rev: &str,
    target: &str,
    previous: Option<&str>,
    workloads: &[&Workload],
    spec: &SidecarPolicySpec,
    events: Vec<Note>,
) -> Step {
    let mut status = base_status(rev, target, previous, workloads, spec);
    status.message = Some(format!(
        "Sidecar {target} is rolled out: all {} workloads get it",
        workloads.len()
    ));
    Step {
        status,
        actions: Vec::new(),
        events,
    }
}

/// One rollout being stepped: the fleet in order and what the spec asks of it.
struct Rollout<'a> {
    input: &'a Input<'a>,
    workloads: Vec<&'a Workload>,
    target: Wanted<'a>,
    previous: Wanted<'a>,
    targets: Vec<usize>,
    min_ready: Duration,
    timeout: Duration,
}

impl<'a> Rollout<'a> {
    fn stamp(&self) -> String {
        format!("{}/{}", self.target.version, self.target.revision)
    }

    fn rollback_stamp(&self) -> String {
        format!(
            "{}/{}-rollback",
            self.previous.version, self.target.revision
        )
    }

    fn find(&self, w: &WorkloadRef) -> Option<&'a Workload> {
        self.workloads
            .binary_search_by(|x| x.workload.cmp(w))
            .ok()
            .map(|i| self.workloads[i])
    }

    /// The stored reached list without workloads that disappeared, and how many of them had
    /// passed their gate (the stored `updatedWorkloads` counts a prefix of the list).
    fn present(&self, stored: &RolloutStatus) -> (Vec<WorkloadRef>, usize) {
        let passed = usize::try_from(stored.updated_workloads).unwrap_or(0);
        let mut seen = BTreeSet::new();
        let mut reached = Vec::new();
        let mut b = 0;
        for (i, w) in stored.reached.iter().enumerate() {
            if self.find(w).is_some() && seen.insert(w) {
                reached.push(w.clone());
                if i < passed {
                    b += 1;
                }
            }
        }
        (reached, b)
    }

    fn judge(&self, w: &Workload, want: &Wanted, timed_out: bool) -> Health {
        health::judge(
            w,
            want,
            &self.input.now,
            self.min_ready,
            timed_out.then_some(self.input.spec.rollout.health_gate.timeout.0.as_str()),
        )
    }

    /// The action that moves `w` to `want`, if it still needs one. A Restart is issued
    /// again only when the stamp is not yet on the template (a lost action).
    fn action(&self, w: &Workload, want: &Wanted, stamp: String) -> Option<Action> {
        match self.input.spec.rollout.method {
            RestartMethod::Restart => (!health::all_on(w, want)
                && w.stamp.as_deref() != Some(stamp.as_str()))
            .then(|| Action::Restart {
                workload: w.workload.clone(),
                stamp,
            }),
            RestartMethod::Evict => health::eviction(w, want).map(|pod| Action::Evict {
                workload: w.workload.clone(),
                pod,
            }),
        }
    }

    fn wave_of(&self, passed: usize) -> Option<usize> {
        self.targets.iter().position(|&t| t > passed)
    }

    fn elapsed(&self, since: &Time) -> Duration {
        Duration::try_from(self.input.now.0.duration_since(since.0)).unwrap_or(Duration::ZERO)
    }

    fn status(
        &self,
        phase: RolloutPhase,
        reached: Vec<WorkloadRef>,
        passed: usize,
    ) -> RolloutStatus {
        let total = self.workloads.len();
        let wave = self.wave_of(passed).map_or(self.targets.len(), |k| k + 1);
        RolloutStatus {
            phase,
            target_version: self.target.version.to_owned(),
            previous_version: Some(self.previous.version.to_owned()),
            revision: self.target.revision.clone(),
            reached,
            wave_started_at: None,
            wave: count(wave),
            total_waves: count(self.targets.len()),
            updated_workloads: count(passed),
            total_workloads: count(total),
            failed_workloads: Vec::new(),
            message: None,
        }
    }

    /// Progressing or Paused: evaluate the wave, move on when it passed, reach more.
    fn progress(&self, stored: &RolloutStatus, fresh: bool, mut events: Vec<Note>) -> Step {
        let now = &self.input.now;
        let rollout = &self.input.spec.rollout;
        let spec_paused = rollout.paused;
        let max_concurrent = usize::try_from(rollout.max_concurrent).unwrap_or(1).max(1);
        let was_failing =
            stored.phase == RolloutPhase::Paused && !stored.failed_workloads.is_empty();
        let was_paused = stored.phase == RolloutPhase::Paused && !was_failing;
        let (mut reached, mut passed) = self.present(stored);
        let mut started = match (&stored.wave_started_at, fresh) {
            (Some(t), false) => t.clone(),
            _ => now.clone(),
        };
        if was_paused && !spec_paused {
            // The clock stood still while nothing could be reached.
            started = now.clone();
            events.push(note(
                false,
                "Resumed",
                format!("The rollout of sidecar {} resumed", self.target.version),
            ));
        }
        // Where a recovery's Resumed goes, once the loop below knows the wave is healthy.
        let resumed_at = events.len();
        let mut failures: Vec<FailedWorkload> = Vec::new();
        let mut in_progress = 0;
        while let Some(k) = self.wave_of(passed) {
            let timed_out = self.elapsed(&started) > self.timeout;
            in_progress = 0;
            failures.clear();
            for r in &reached[passed..] {
                let Some(w) = self.find(r) else { continue };
                match self.judge(w, &self.target, timed_out) {
                    Health::Healthy => {}
                    Health::Waiting => in_progress += 1,
                    Health::Failed(reason) => failures.push(FailedWorkload {
                        kind: r.kind.clone(),
                        namespace: r.namespace.clone(),
                        name: r.name.clone(),
                        reason,
                    }),
                }
            }
            if !failures.is_empty() {
                break;
            }
            if in_progress == 0 && reached.len() >= self.targets[k] {
                passed = reached.len();
                events.push(note(
                    false,
                    "WavePassed",
                    format!(
                        "Wave {} of {} passed its health gate on sidecar {}",
                        k + 1,
                        self.targets.len(),
                        self.target.version
                    ),
                ));
                if let Some(next) = self.wave_of(passed) {
                    started = now.clone();
                    events.push(note(
                        false,
                        "WaveStarted",
                        format!("Wave {} of {} started", next + 1, self.targets.len()),
                    ));
                }
                continue;
            }
            if spec_paused || in_progress >= max_concurrent {
                break;
            }
            let mut added = false;
            let taken: BTreeSet<WorkloadRef> = reached.iter().cloned().collect();
            for w in self
                .workloads
                .iter()
                .filter(|w| !taken.contains(&w.workload))
            {
                if reached.len() >= self.targets[k] || in_progress >= max_concurrent {
                    break;
                }
                reached.push(w.workload.clone());
                added = true;
                if self.judge(w, &self.target, false) != Health::Healthy {
                    in_progress += 1;
                }
            }
            if !added {
                break;
            }
            // A workload reached late in the wave gets the whole timeout.
            started = now.clone();
        }

        if !failures.is_empty() && self.input.spec.rollout.on_failure == FailureAction::Rollback {
            return self.roll_back(reached, passed, failures, events);
        }
        let mut actions = Vec::new();
        for r in &reached {
            if let Some(w) = self.find(r)
                && let Some(a) = self.action(w, &self.target, self.stamp())
            {
                actions.push(a);
            }
        }
        let total_waves = self.targets.len();
        let failing = !failures.is_empty();
        let (phase, message) = if self.wave_of(passed).is_none() {
            events.push(note(
                false,
                "RolloutComplete",
                format!(
                    "Sidecar {} runs on all {} workloads",
                    self.target.version,
                    self.workloads.len()
                ),
            ));
            (
                RolloutPhase::Complete,
                format!(
                    "Sidecar {} is rolled out: all {} workloads run it",
                    self.target.version,
                    self.workloads.len()
                ),
            )
        } else {
            let wave = self.wave_of(passed).map_or(total_waves, |k| k + 1);
            let where_ = format!(
                "wave {wave} of {total_waves}, {passed} of {} workloads updated",
                self.workloads.len()
            );
            if failing {
                if !was_failing {
                    events.push(note(
                        true,
                        "GateFailed",
                        format!(
                            "Wave {wave} of {total_waves} failed its health gate; the rollout \
                             is paused: {}",
                            describe(&failures)
                        ),
                    ));
                }
                (
                    RolloutPhase::Paused,
                    format!(
                        "Paused at {where_}: the health gate failed ({}); fix the cause and \
                         the rollout continues by itself",
                        describe(&failures)
                    ),
                )
            } else if spec_paused {
                if !was_paused {
                    events.push(note(
                        false,
                        "Paused",
                        format!("The rollout of sidecar {} is paused", self.target.version),
                    ));
                }
                (
                    RolloutPhase::Paused,
                    format!(
                        "Paused at {where_} by spec.rollout.paused; workloads under way \
                         finish; set it to false to resume"
                    ),
                )
            } else {
                if was_failing {
                    events.insert(
                        resumed_at,
                        note(
                            false,
                            "Resumed",
                            "The failed workloads are healthy again; the rollout continues"
                                .to_owned(),
                        ),
                    );
                }
                (
                    RolloutPhase::Progressing,
                    format!(
                        "Rolling out sidecar {} (from {}): {where_}, {in_progress} under way",
                        self.target.version, self.previous.version
                    ),
                )
            }
        };
        let complete = phase == RolloutPhase::Complete;
        let mut status = self.status(phase, if complete { Vec::new() } else { reached }, passed);
        status.wave_started_at = (!complete).then_some(started);
        status.failed_workloads = failures;
        status.message = Some(message);
        Step {
            status,
            actions,
            events,
        }
    }

    /// The failed wave's workloads go back to the previous version; earlier waves stay.
    fn roll_back(
        &self,
        mut reached: Vec<WorkloadRef>,
        passed: usize,
        failures: Vec<FailedWorkload>,
        mut events: Vec<Note>,
    ) -> Step {
        let wave = self.wave_of(passed).map_or(self.targets.len(), |k| k + 1);
        let rolled = reached.split_off(passed);
        let mut actions = Vec::new();
        for r in &rolled {
            if let Some(w) = self.find(r)
                && let Some(a) = self.action(w, &self.previous, self.rollback_stamp())
            {
                actions.push(a);
            }
        }
        let why = describe(&failures);
        events.push(note(
            true,
            "GateFailed",
            format!(
                "Wave {wave} of {} failed its health gate: {why}",
                self.targets.len()
            ),
        ));
        let message = format!(
            "Wave {wave} of {} failed its health gate ({why}): its {} workloads went back to \
             sidecar {}; the {passed} workloads of earlier waves stay on {}. Fix the cause, then \
             change the sidecar spec to roll out again",
            self.targets.len(),
            rolled.len(),
            self.previous.version,
            self.target.version
        );
        events.push(note(true, "RolledBack", message.clone()));
        let mut status = self.status(RolloutPhase::RolledBack, reached, passed);
        status.wave = count(wave);
        status.failed_workloads = failures;
        status.message = Some(message);
        Step {
            status,
            actions,
            events,
        }
    }

    /// RolledBack stays until the spec changes; rollback actions lost in a crash are issued
    /// again until the rolled-back workloads run the previous version.
    fn rolled_back(&self, stored: &RolloutStatus, events: Vec<Note>) -> Step {
        let (reached, _) = self.present(stored);
        let taken: BTreeSet<&WorkloadRef> = reached.iter().collect();
        let mut actions = Vec::new();
        for w in &self.workloads {
            let action = if taken.contains(&w.workload) {
                self.action(w, &self.target, self.stamp())
            } else if self.rolled_back_here(w) {
                self.action(w, &self.previous, self.rollback_stamp())
            } else {
                None
            };
            actions.extend(action);
        }
        let passed = reached.len();
        let mut status = self.status(RolloutPhase::RolledBack, reached, passed);
        status.wave = stored.wave;
        status.failed_workloads = stored
            .failed_workloads
            .iter()
            .filter(|f| {
                self.find(&WorkloadRef::new(&f.kind, &f.namespace, &f.name))
                    .is_some()
            })
            .cloned()
            .collect();
        status.message = stored.message.clone();
        Step {
            status,
            actions,
            events,
        }
    }

    /// Whether this rollout moved `w` and then rolled it back: its template still carries
    /// this rollout's stamp (Restart), or it still has pods running the target (Evict). Anything
    /// else is left untouched.
    fn rolled_back_here(&self, w: &Workload) -> bool {
        match self.input.spec.rollout.method {
            RestartMethod::Restart => w.stamp.as_deref() == Some(self.stamp().as_str()),
            RestartMethod::Evict => w
                .pods
                .iter()
                .any(|p| !p.terminating && health::runs(p, &self.target)),
        }
    }
}

fn describe(failures: &[FailedWorkload]) -> String {
    let mut parts: Vec<String> = failures
        .iter()
        .take(3)
        .map(|f| format!("{}/{}/{}: {}", f.kind, f.namespace, f.name, f.reason))
        .collect();
    if failures.len() > 3 {
        parts.push(format!("and {} more", failures.len() - 3));
    }
    parts.join("; ")
}
