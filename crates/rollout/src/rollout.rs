//! One rollout being stepped: the fleet in order, the sidecar it moves to and from, and the
//! questions every phase asks of them.

use std::{collections::BTreeSet, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use remora_api::sidecar_policy::{RestartMethod, RolloutPhase, RolloutStatus, WorkloadRef};

use crate::{
    Action, Input, Workload,
    health::{self, Health, Wanted},
    step::wave_targets,
};

/// One rollout being stepped: the fleet in order and what the spec asks of it.
pub(crate) struct Rollout<'a> {
    pub(crate) input: &'a Input<'a>,
    /// Sorted by [`WorkloadRef`], without duplicates.
    pub(crate) workloads: &'a [&'a Workload],
    pub(crate) target: Wanted<'a>,
    pub(crate) previous: Wanted<'a>,
    /// Cumulative workload counts per wave.
    pub(crate) targets: Vec<usize>,
    pub(crate) min_ready: Duration,
    pub(crate) timeout: Duration,
}

impl<'a> Rollout<'a> {
    /// A rollout from `previous` to the spec's version; `gate` is `(minReady, timeout)`.
    pub(crate) fn new(
        input: &'a Input<'a>,
        workloads: &'a [&'a Workload],
        previous: &'a str,
        (min_ready, timeout): (Duration, Duration),
    ) -> Self {
        let spec = input.spec;
        Rollout {
            input,
            targets: wave_targets(spec, workloads.len()),
            workloads,
            target: Wanted::new(spec, &spec.proxy.version),
            previous: Wanted::new(spec, previous),
            min_ready,
            timeout,
        }
    }

    pub(crate) fn stamp(&self) -> String {
        format!("{}/{}", self.target.version, self.target.revision)
    }

    pub(crate) fn rollback_stamp(&self) -> String {
        format!(
            "{}/{}-rollback",
            self.previous.version, self.target.revision
        )
    }

    pub(crate) fn find(&self, w: &WorkloadRef) -> Option<&'a Workload> {
        self.workloads
            .binary_search_by(|x| x.workload.cmp(w))
            .ok()
            .map(|i| self.workloads[i])
    }

    /// The stored reached list without workloads that disappeared, and how many of them had
    /// passed their gate (the stored `updatedWorkloads` counts a prefix of the list).
    pub(crate) fn present(&self, stored: &RolloutStatus) -> (Vec<WorkloadRef>, usize) {
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

    pub(crate) fn judge(&self, w: &Workload, want: &Wanted, timed_out: bool) -> Health {
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
    pub(crate) fn action(&self, w: &Workload, want: &Wanted, stamp: String) -> Option<Action> {
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

    /// The actions that move the workloads `to_move` to `want`, marked with `stamp`.
    pub(crate) fn actions(
        &self,
        to_move: &[WorkloadRef],
        want: &Wanted,
        stamp: &str,
    ) -> Vec<Action> {
        to_move
            .iter()
            .filter_map(|r| self.action(self.find(r)?, want, stamp.to_owned()))
            .collect()
    }

    /// Whether this rollout moved `w` and then rolled it back: its template still carries
    /// this rollout's stamp (Restart), or it still has pods running the target (Evict). Anything
    /// else is left untouched.
    pub(crate) fn rolled_back_here(&self, w: &Workload) -> bool {
        match self.input.spec.rollout.method {
            RestartMethod::Restart => w.stamp.as_deref() == Some(self.stamp().as_str()),
            RestartMethod::Evict => w
                .pods
                .iter()
                .any(|p| !p.terminating && health::runs(p, &self.target)),
        }
    }

    /// The index of the wave under way once `passed` workloads passed; `None` when all did.
    pub(crate) fn wave_of(&self, passed: usize) -> Option<usize> {
        self.targets.iter().position(|&t| t > passed)
    }

    /// The wave under way once `passed` workloads passed, counted from 1 (the last when all
    /// did).
    pub(crate) fn wave_number(&self, passed: usize) -> usize {
        self.wave_of(passed).map_or(self.targets.len(), |k| k + 1)
    }

    pub(crate) fn elapsed(&self, since: &Time) -> Duration {
        Duration::try_from(self.input.now.0.duration_since(since.0)).unwrap_or(Duration::ZERO)
    }

    pub(crate) fn status(
        &self,
        phase: RolloutPhase,
        reached: Vec<WorkloadRef>,
        passed: usize,
    ) -> RolloutStatus {
        RolloutStatus {
            phase,
            target_version: self.target.version.to_owned(),
            previous_version: Some(self.previous.version.to_owned()),
            revision: self.target.revision.clone(),
            reached,
            wave_started_at: None,
            wave: count(self.wave_number(passed)),
            total_waves: count(self.targets.len()),
            updated_workloads: count(passed),
            total_workloads: count(self.workloads.len()),
            failed_workloads: Vec::new(),
            message: None,
        }
    }
}

/// A count as the status's `int32`.
pub(crate) fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
