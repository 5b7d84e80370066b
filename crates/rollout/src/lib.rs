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
#![warn(missing_docs)]

mod evaluate;
mod health;
mod render;
mod revision;
mod rollout;
mod step;
#[cfg(test)]
mod tests;
mod types;

pub use remora_api::sidecar_policy::WorkloadRef;
pub use revision::{revision, revision_of, version_for};
pub use step::step;
pub use types::{Action, Input, Note, PodFacts, ProxyHealth, RESTART_ANNOTATION, Step, Workload};
