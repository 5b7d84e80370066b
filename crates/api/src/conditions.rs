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

/// Reasons, in the `CamelCase` form Kubernetes conditions use.
pub mod reason {
    pub const ACCEPTED: &str = "Accepted";
    pub const INVALID: &str = "Invalid";
    pub const RESOLVED: &str = "Resolved";
    pub const CONFLICTED: &str = "Conflicted";
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    pub const SUBSET_EMPTY: &str = "SubsetEmpty";
    pub const PROGRAMMED: &str = "Programmed";
    pub const PENDING: &str = "Pending";
    pub const REJECTED_BY_PROXY: &str = "RejectedByProxy";
    pub const ROLLING_OUT: &str = "RollingOut";
    pub const PAUSED: &str = "Paused";
    pub const COMPLETE: &str = "Complete";
    pub const HEALTH_GATE_FAILED: &str = "HealthGateFailed";
    pub const ROLLED_BACK: &str = "RolledBack";
    pub const UNSUPPORTED_VERSION: &str = "UnsupportedVersion";
}
