//! The words of a step: the status message and the Events' notes, rendered from what the
//! step decided.

use remora_api::sidecar_policy::FailedWorkload;

use crate::{
    Note,
    evaluate::{Evaluation, Verdict},
    rollout::Rollout,
};

fn note(warning: bool, reason: &'static str, message: String) -> Note {
    Note {
        warning,
        reason,
        message,
    }
}

/// Up to three failed workloads with their reasons, and how many more.
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

/// The spec cannot be rolled out (`why`).
pub(crate) fn refused(why: &str) -> Note {
    note(true, "RolloutRefused", why.to_owned())
}

pub(crate) fn refused_message(policy: &str, target: &str, why: &str) -> String {
    format!("No rollout of sidecar {target} for {policy}: {why}")
}

/// Nothing to roll: all `workloads` get `target` as their pods are created.
pub(crate) fn settled_message(target: &str, workloads: usize) -> String {
    format!("Sidecar {target} is rolled out: all {workloads} workloads get it")
}

/// A rollout to `superseded` under way gave way to one to `target`.
pub(crate) fn superseded(superseded: &str, target: &str) -> Note {
    note(
        false,
        "Superseded",
        format!(
            "The rollout of sidecar {superseded} was superseded by {target}; its workloads go \
             back into the queue"
        ),
    )
}

/// A new rollout from `previous` to `target`, held before wave 1 when `paused`.
pub(crate) fn started(target: &str, previous: &str, paused: bool) -> Note {
    if paused {
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
    }
}

impl Rollout<'_> {
    /// The Events of an evaluated step, in the order things happened.
    pub(crate) fn notes(&self, e: &Evaluation, verdict: &Verdict) -> Vec<Note> {
        let target = self.target.version;
        let total_waves = self.targets.len();
        let mut notes = Vec::new();
        if e.resumed {
            let message = format!("The rollout of sidecar {target} resumed");
            notes.push(note(false, "Resumed", message));
        }
        if *verdict == (Verdict::Progressing { recovered: true }) {
            let message = "The failed workloads are healthy again; the rollout continues";
            notes.push(note(false, "Resumed", message.to_owned()));
        }
        for pass in &e.waves_passed {
            let wave = pass.wave + 1;
            notes.push(note(
                false,
                "WavePassed",
                format!("Wave {wave} of {total_waves} passed its health gate on sidecar {target}"),
            ));
            if let Some(next) = pass.next {
                let message = format!("Wave {} of {total_waves} started", next + 1);
                notes.push(note(false, "WaveStarted", message));
            }
        }
        notes.extend(self.verdict_notes(e, verdict));
        notes
    }

    /// The Events that announce the verdict itself, unless it is old news.
    fn verdict_notes(&self, e: &Evaluation, verdict: &Verdict) -> Vec<Note> {
        let target = self.target.version;
        let wave = self.wave_number(e.passed);
        let total_waves = self.targets.len();
        let why = describe(&e.failures);
        match verdict {
            Verdict::Complete => {
                let message = format!(
                    "Sidecar {target} runs on all {} workloads",
                    self.workloads.len()
                );
                vec![note(false, "RolloutComplete", message)]
            }
            Verdict::RollBack => vec![
                note(
                    true,
                    "GateFailed",
                    format!("Wave {wave} of {total_waves} failed its health gate: {why}"),
                ),
                note(true, "RolledBack", self.message(e, verdict)),
            ],
            Verdict::Failing { news: true } => vec![note(
                true,
                "GateFailed",
                format!(
                    "Wave {wave} of {total_waves} failed its health gate; the rollout is \
                     paused: {why}"
                ),
            )],
            Verdict::Paused { news: true } => {
                let message = format!("The rollout of sidecar {target} is paused");
                vec![note(false, "Paused", message)]
            }
            Verdict::Failing { news: false }
            | Verdict::Paused { news: false }
            | Verdict::Progressing { .. } => Vec::new(),
        }
    }

    /// The status message of an evaluated step.
    pub(crate) fn message(&self, e: &Evaluation, verdict: &Verdict) -> String {
        let (target, previous) = (self.target.version, self.previous.version);
        let (wave, total_waves) = (self.wave_number(e.passed), self.targets.len());
        let (passed, workloads) = (e.passed, self.workloads.len());
        let where_ =
            format!("wave {wave} of {total_waves}, {passed} of {workloads} workloads updated");
        let why = describe(&e.failures);
        match verdict {
            Verdict::Complete => {
                format!("Sidecar {target} is rolled out: all {workloads} workloads run it")
            }
            Verdict::RollBack => format!(
                "Wave {wave} of {total_waves} failed its health gate ({why}): its {} workloads \
                 went back to sidecar {previous}; the {passed} workloads of earlier waves stay \
                 on {target}. Fix the cause, then change the sidecar spec to roll out again",
                e.reached.len() - passed,
            ),
            Verdict::Failing { .. } => format!(
                "Paused at {where_}: the health gate failed ({why}); fix the cause and the \
                 rollout continues by itself"
            ),
            Verdict::Paused { .. } => format!(
                "Paused at {where_} by spec.rollout.paused; workloads under way finish; set it \
                 to false to resume"
            ),
            Verdict::Progressing { .. } => format!(
                "Rolling out sidecar {target} (from {previous}): {where_}, {} under way",
                e.in_progress
            ),
        }
    }
}
