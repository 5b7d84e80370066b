//! Condition types and reasons, named once so the reconcilers, the CLI and tests agree.

/// The object is valid and the controller will act on it.
pub const ACCEPTED: &str = "Accepted";
/// Every Service and subset the route names exists (routes only).
pub const RESOLVED_REFS: &str = "ResolvedRefs";
/// The affected proxies received and acknowledged this generation (routes only).
pub const PROGRAMMED: &str = "Programmed";
/// A rollout of a new sidecar version is under way (policies only).
pub const PROGRESSING: &str = "Progressing";
/// Every matched workload runs the policy's current sidecar (policies only).
pub const ROLLED_OUT: &str = "RolledOut";
/// Something needs a person: a failed health gate, a rollback, NACKing proxies (policies only).
pub const DEGRADED: &str = "Degraded";
/// The summary Flux reads: True when the object's latest generation is accepted and in
/// effect with nothing under way; False names the condition that holds it back.
pub const READY: &str = "Ready";
/// kstatus's "work under way" (its InProgress): True while what holds the object back is a
/// wait, such as proxies yet to acknowledge or a rollout running.
pub const RECONCILING: &str = "Reconciling";
/// kstatus's "needs a person" (its Failed): True while what holds the object back will not
/// pass by itself: an invalid spec, a NACK, a failed rollout.
pub const STALLED: &str = "Stalled";

/// Reasons, in the `CamelCase` form Kubernetes conditions use.
pub mod reason {
    /// `Ready` is True: nothing holds the object back.
    pub const READY: &str = "Ready";
    /// `Accepted` is True: the spec passed validation.
    pub const ACCEPTED: &str = "Accepted";
    /// `Accepted` is False: the spec failed validation; the message lists each field.
    pub const INVALID: &str = "Invalid";
    /// `ResolvedRefs` is True: every reference resolves.
    pub const RESOLVED: &str = "Resolved";
    /// A route that goes first (a GRPCRoute, else the older) already claims the Service port.
    pub const CONFLICTED: &str = "Conflicted";
    /// A backend in another namespace that no `ReferenceGrant` there opens to the route
    /// (Gateway API's reason).
    pub const REF_NOT_PERMITTED: &str = "RefNotPermitted";
    /// A Service, or a port of one, that the route names does not exist.
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    /// A subset the route names selects no endpoint.
    pub const SUBSET_EMPTY: &str = "SubsetEmpty";
    /// `Programmed` is True: every affected proxy acknowledged the config (or none is affected).
    pub const PROGRAMMED: &str = "Programmed";
    /// Some affected proxies have not acknowledged the config yet.
    pub const PENDING: &str = "Pending";
    /// At least one proxy rejected (NACKed) the config it was sent.
    pub const REJECTED_BY_PROXY: &str = "RejectedByProxy";
    /// A rollout is moving workloads to the new sidecar.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// The rollout is paused, by the spec or after a failed health gate.
    pub const PAUSED: &str = "Paused";
    /// The rollout finished: every workload it covers runs the new sidecar.
    pub const COMPLETE: &str = "Complete";
    /// A wave's workloads did not pass their health gate in time.
    pub const HEALTH_GATE_FAILED: &str = "HealthGateFailed";
    /// A failed health gate returned the workloads to the previous sidecar.
    pub const ROLLED_BACK: &str = "RolledBack";
    /// The policy's proxy version is one this control plane cannot configure.
    pub const UNSUPPORTED_VERSION: &str = "UnsupportedVersion";
}
