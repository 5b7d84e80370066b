//! Deciding a Progressing or Paused rollout's step: which waves pass their gate, which
//! workloads are reached next, and what that makes of the rollout. The outcome is data; the
//! words for the status and the Events are rendered from it elsewhere.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use remora_api::sidecar_policy::{
    FailedWorkload, FailureAction, RolloutPhase, RolloutStatus, WorkloadRef,
};

use crate::{health::Health, rollout::Rollout};

/// What evaluating the rollout found this step.
#[derive(Debug)]
pub(crate) struct Evaluation {
    /// Workloads reached so far, in order; the first `passed` passed their wave's gate.
    pub(crate) reached: Vec<WorkloadRef>,
    pub(crate) passed: usize,
    /// When the wave under way last reached a workload: its timeout counts from then.
    pub(crate) started: Time,
    /// Reached workloads of the wave under way that are not healthy yet.
    pub(crate) in_progress: usize,
    /// The wave's workloads that failed its gate.
    pub(crate) failures: Vec<FailedWorkload>,
    /// `spec.rollout.paused` was turned off since the last step.
    pub(crate) resumed: bool,
    /// The waves that passed their gate in this step, in order.
    pub(crate) waves_passed: Vec<WavePass>,
}

/// A wave (0-based) that passed its gate, and the wave that started after it, if any.
#[derive(Debug)]
pub(crate) struct WavePass {
    pub(crate) wave: usize,
    pub(crate) next: Option<usize>,
}

/// What an [`Evaluation`] makes of the rollout.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Every wave passed.
    Complete,
    /// The wave failed its gate and `onFailure` is `Rollback`.
    RollBack,
    /// The wave failed its gate and the rollout waits for it to heal; `news` unless it was
    /// waiting already.
    Failing { news: bool },
    /// Held by `spec.rollout.paused`; `news` unless it was held already.
    Paused { news: bool },
    /// Under way; `recovered` when a failed gate healed since the last step.
    Progressing { recovered: bool },
}

impl Verdict {
    /// The phase the status shows (a rollback has its own step).
    pub(crate) fn phase(&self) -> RolloutPhase {
        match self {
            Verdict::Complete => RolloutPhase::Complete,
            Verdict::RollBack => RolloutPhase::RolledBack,
            Verdict::Failing { .. } | Verdict::Paused { .. } => RolloutPhase::Paused,
            Verdict::Progressing { .. } => RolloutPhase::Progressing,
        }
    }
}

/// Why a stored rollout was paused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Halt {
    BySpec,
    OnFailedGate,
}

fn halt(stored: &RolloutStatus) -> Option<Halt> {
    match stored.phase {
        RolloutPhase::Paused if stored.failed_workloads.is_empty() => Some(Halt::BySpec),
        RolloutPhase::Paused => Some(Halt::OnFailedGate),
        _ => None,
    }
}

impl Rollout<'_> {
    /// Evaluates the waves from `stored` (a `fresh` one carries no clock) and judges the
    /// outcome.
    pub(crate) fn evaluate(&self, stored: &RolloutStatus, fresh: bool) -> (Evaluation, Verdict) {
        let now = &self.input.now;
        let resumed = halt(stored) == Some(Halt::BySpec) && !self.input.spec.rollout.paused;
        let (reached, passed) = self.present(stored);
        let mut started = match (&stored.wave_started_at, fresh) {
            (Some(t), false) => t.clone(),
            _ => now.clone(),
        };
        if resumed {
            // The clock stood still while nothing could be reached.
            started = now.clone();
        }
        let mut e = Evaluation {
            reached,
            passed,
            started,
            in_progress: 0,
            failures: Vec::new(),
            resumed,
            waves_passed: Vec::new(),
        };
        self.walk(&mut e);
        let verdict = self.verdict(&e, halt(stored));
        (e, verdict)
    }

    /// Passes every wave whose gate holds and reaches more workloads while slots are free.
    fn walk(&self, e: &mut Evaluation) {
        let now = &self.input.now;
        let rollout = &self.input.spec.rollout;
        let max_concurrent = usize::try_from(rollout.max_concurrent).unwrap_or(1).max(1);
        while let Some(k) = self.wave_of(e.passed) {
            let timed_out = self.elapsed(&e.started) > self.timeout;
            (e.in_progress, e.failures) = self.gate(&e.reached[e.passed..], timed_out);
            if !e.failures.is_empty() {
                break;
            }
            if e.in_progress == 0 && e.reached.len() >= self.targets[k] {
                e.passed = e.reached.len();
                let next = self.wave_of(e.passed);
                if next.is_some() {
                    e.started = now.clone();
                }
                e.waves_passed.push(WavePass { wave: k, next });
                continue;
            }
            if rollout.paused
                || e.in_progress >= max_concurrent
                || !self.reach(e, self.targets[k], max_concurrent)
            {
                break;
            }
            // A workload reached late in the wave gets the whole timeout.
            e.started = now.clone();
        }
    }

    /// The wave's health gate over its reached workloads: how many are under way, and which
    /// failed.
    fn gate(&self, wave: &[WorkloadRef], timed_out: bool) -> (usize, Vec<FailedWorkload>) {
        let mut in_progress = 0;
        let mut failures = Vec::new();
        for r in wave {
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
        (in_progress, failures)
    }

    /// Reaches the next workloads in order until the wave has `target` of them or
    /// `max_concurrent` are under way. Whether it reached any.
    fn reach(&self, e: &mut Evaluation, target: usize, max_concurrent: usize) -> bool {
        let taken: BTreeSet<WorkloadRef> = e.reached.iter().cloned().collect();
        let mut added = false;
        for w in self
            .workloads
            .iter()
            .filter(|w| !taken.contains(&w.workload))
        {
            if e.reached.len() >= target || e.in_progress >= max_concurrent {
                break;
            }
            e.reached.push(w.workload.clone());
            added = true;
            if self.judge(w, &self.target, false) != Health::Healthy {
                e.in_progress += 1;
            }
        }
        added
    }

    fn verdict(&self, e: &Evaluation, before: Option<Halt>) -> Verdict {
        let failing = !e.failures.is_empty();
        if failing && self.input.spec.rollout.on_failure == FailureAction::Rollback {
            Verdict::RollBack
        } else if self.wave_of(e.passed).is_none() {
            Verdict::Complete
        } else if failing {
            Verdict::Failing {
                news: before != Some(Halt::OnFailedGate),
            }
        } else if self.input.spec.rollout.paused {
            Verdict::Paused {
                news: before != Some(Halt::BySpec),
            }
        } else {
            Verdict::Progressing {
                recovered: before == Some(Halt::OnFailedGate),
            }
        }
    }
}
