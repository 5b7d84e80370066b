//! The entry point: from the stored status and the fleet now to the next [`Step`], by phase.

use std::{collections::BTreeSet, time::Duration};

use remora_api::{
    SidecarPolicySpec,
    sidecar_policy::{RolloutPhase, RolloutStatus, WorkloadRef, check_proxy_version},
};

use crate::{
    Input, Note, Step, Workload,
    evaluate::Verdict,
    render,
    revision::{baseline, revision},
    rollout::{Rollout, count},
};

/// The next step of the policy's rollout.
pub fn step(input: &Input) -> Step {
    let ctx = Context::new(input);
    let stored = ctx.stored;
    let starting =
        stored.is_some_and(|s| s.revision != ctx.revision || s.phase == RolloutPhase::Failed);
    let previous = match stored {
        Some(s) if starting => baseline(s),
        Some(s) => s.previous_version.as_deref(),
        None => None,
    };
    let gate = check_proxy_version(ctx.target())
        .map_err(|e| e.to_string())
        .and_then(|()| gate_durations(input.spec));
    let gate = match gate {
        Ok(gate) => gate,
        Err(why) => return ctx.refused(previous, &why),
    };
    let Some(stored) = stored else {
        return ctx.settled(None, Vec::new());
    };
    let mut events = Vec::new();
    let under_way = matches!(
        stored.phase,
        RolloutPhase::Progressing | RolloutPhase::Paused
    );
    if starting && stored.revision != ctx.revision && under_way {
        events.push(render::superseded(&stored.target_version, ctx.target()));
    }
    let previous = match previous {
        Some(previous) => previous,
        // A policy's first sidecar needs no rollout: pods get it as they are created.
        None if starting => return ctx.settled(None, events),
        None => ctx.target(),
    };
    let rollout = Rollout::new(input, &ctx.workloads, previous, gate);
    if starting {
        // A new rollout inherits nothing; its pause state is the spec's, so no event repeats.
        let paused = input.spec.rollout.paused;
        let fresh = RolloutStatus {
            phase: if paused {
                RolloutPhase::Paused
            } else {
                RolloutPhase::Progressing
            },
            ..RolloutStatus::default()
        };
        events.push(render::started(ctx.target(), previous, paused));
        return rollout.progress(&fresh, true, events);
    }
    match stored.phase {
        RolloutPhase::Complete => ctx.settled(stored.previous_version.as_deref(), events),
        RolloutPhase::RolledBack => rollout.rolled_back(stored, events),
        _ => rollout.progress(stored, false, events),
    }
}

/// The health gate's `(minReady, timeout)` as the spec writes them.
pub(crate) fn gate_durations(spec: &SidecarPolicySpec) -> Result<(Duration, Duration), String> {
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

/// Cumulative workload counts per wave, empty waves left out, the last covering everyone.
pub(crate) fn wave_targets(spec: &SidecarPolicySpec, total: usize) -> Vec<usize> {
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

/// A step's input as the steps read it: the fleet in order and the stored rollout, if any.
struct Context<'a> {
    input: &'a Input<'a>,
    /// The spec's [`revision`].
    revision: String,
    /// Sorted by workload, without duplicates.
    workloads: Vec<&'a Workload>,
    /// The stored rollout, unless it predates rollouts (no revision).
    stored: Option<&'a RolloutStatus>,
}

impl<'a> Context<'a> {
    fn new(input: &'a Input<'a>) -> Self {
        let mut workloads: Vec<&Workload> = input.workloads.iter().collect();
        workloads.sort_by(|a, b| a.workload.cmp(&b.workload));
        workloads.dedup_by(|a, b| a.workload == b.workload);
        Context {
            input,
            revision: revision(input.spec),
            workloads,
            stored: input.previous.filter(|s| !s.revision.is_empty()),
        }
    }

    fn target(&self) -> &'a str {
        &self.input.spec.proxy.version
    }

    /// Every workload on the target, coming from `previous`.
    fn status(&self, previous: Option<&str>) -> RolloutStatus {
        let total_waves = count(wave_targets(self.input.spec, self.workloads.len()).len());
        RolloutStatus {
            phase: RolloutPhase::Complete,
            target_version: self.target().to_owned(),
            previous_version: previous.map(str::to_owned),
            revision: self.revision.clone(),
            reached: Vec::new(),
            wave_started_at: None,
            wave: total_waves,
            total_waves,
            updated_workloads: count(self.workloads.len()),
            total_workloads: count(self.workloads.len()),
            failed_workloads: Vec::new(),
            message: None,
        }
    }

    /// Nothing to roll: every workload is at (or gets, as its pods are created) the target.
    fn settled(&self, previous: Option<&str>, events: Vec<Note>) -> Step {
        let mut status = self.status(previous);
        status.message = Some(render::settled_message(self.target(), self.workloads.len()));
        Step {
            status,
            actions: Vec::new(),
            events,
        }
    }

    /// The spec cannot be rolled out (`why`): Failed, announced once per revision.
    fn refused(&self, previous: Option<&str>, why: &str) -> Step {
        let already = self
            .stored
            .is_some_and(|s| s.revision == self.revision && s.phase == RolloutPhase::Failed);
        let mut status = self.status(previous);
        status.phase = RolloutPhase::Failed;
        status.wave = 0;
        status.updated_workloads = 0;
        status.message = Some(render::refused_message(
            self.input.policy,
            self.target(),
            why,
        ));
        Step {
            status,
            actions: Vec::new(),
            events: if already {
                Vec::new()
            } else {
                vec![render::refused(why)]
            },
        }
    }
}

impl Rollout<'_> {
    /// Progressing or Paused: evaluate the wave, move on when it passed, reach more; a
    /// failed gate may roll the wave's workloads back (earlier waves stay).
    fn progress(&self, stored: &RolloutStatus, fresh: bool, mut events: Vec<Note>) -> Step {
        let (e, verdict) = self.evaluate(stored, fresh);
        events.extend(self.notes(&e, &verdict));
        let message = self.message(&e, &verdict);
        let mut reached = e.reached;
        let (actions, mut status) = if verdict == Verdict::RollBack {
            let rolled = reached.split_off(e.passed);
            let actions = self.actions(&rolled, &self.previous, &self.rollback_stamp());
            (actions, self.status(verdict.phase(), reached, e.passed))
        } else {
            let actions = self.actions(&reached, &self.target, &self.stamp());
            let complete = verdict == Verdict::Complete;
            if complete {
                reached.clear();
            }
            let mut status = self.status(verdict.phase(), reached, e.passed);
            status.wave_started_at = (!complete).then_some(e.started);
            (actions, status)
        };
        status.failed_workloads = e.failures;
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
        let taken: BTreeSet<_> = reached.iter().collect();
        let mut actions = Vec::new();
        for w in self.workloads {
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
}
