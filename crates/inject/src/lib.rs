//! Sidecar injection without I/O: [`decide`] says whether a pod gets the proxy and why not,
//! [`patch`] says how (RFC 6902 operations the mutating webhook returns).
//!
//! Both take plain data: the pod as submitted, its namespace's labels, the governing
//! `SidecarPolicy`, the version the rollout state picked for the pod's workload, and the
//! layout the API server supports.

#![forbid(unsafe_code)]

mod bootstrap;
mod container;
mod decide;
mod layout;
mod patch;

use k8s_openapi::api::core::v1::Pod;
use remora_api::{SidecarPolicy, sidecar_policy::proxy_container};

pub use bootstrap::{ADMIN_PORT, ControlPlane, READINESS_PATH, READINESS_PORT, bootstrap};
pub use decide::{Decision, Settings, SkipReason, decide};
pub use layout::{Layout, ServerVersion};
pub use patch::{JsonPatchOp, patch, pointer_token};

/// A pod annotation: `"false"` keeps the pod out of the mesh.
pub const INJECT_ANNOTATION: &str = "sidecar.remora.dev/inject";
/// Written on injection: the proxy version the pod got, for the rollout's version histogram.
pub const VERSION_ANNOTATION: &str = "sidecar.remora.dev/version";
/// Written on injection: the revision of the sidecar the pod got (`remora_rollout::revision_of`
/// the spec in effect with the version injected), which rollouts judge the pod by.
pub const REVISION_ANNOTATION: &str = "sidecar.remora.dev/revision";
/// Written on injection: `namespace/name` of the policy that governed the pod then.
pub const POLICY_ANNOTATION: &str = "sidecar.remora.dev/policy";

/// What to inject into one pod.
#[derive(Clone, Copy, Debug)]
pub struct Injection<'a> {
    /// The policy that governs the pod.
    pub policy: &'a SidecarPolicy,
    /// The proxy version (image tag) for the pod's workload. During a rollout the rollout
    /// state decides it, so it may differ from `policy.spec.proxy.version`.
    pub version: &'a str,
    /// The revision of the sidecar with `version` under `policy.spec`, written for rollouts
    /// to tell pods of one version but another spec apart.
    pub revision: &'a str,
    pub layout: Layout,
    pub control_plane: &'a ControlPlane,
}

/// Why a pod cannot be injected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InjectError {
    #[error(
        "{field}: the pod already has a container named {name:?}, which the sidecar injection \
         adds; rename the container (or the SidecarPolicy's extra container)"
    )]
    NameTaken { field: String, name: String },
    #[error(
        "{field}: port {port} belongs to the injected proxy; move the container to another \
         port, or opt the pod out with {INJECT_ANNOTATION}=\"false\""
    )]
    PortTaken { field: String, port: i32 },
    #[error(
        "{field}: the pod already has a volume named {name:?}, which the SidecarPolicy adds for \
         its sidecars; rename the pod's volume (or the policy's)"
    )]
    VolumeTaken { field: String, name: String },
    #[error("the API server reports version {field} {value:?}, which is not a number")]
    ServerVersion { field: &'static str, value: String },
}

/// Whether the pod carries the proxy, in either layout: the mark of an injected pod.
fn has_proxy(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(proxy_container).is_some()
}

#[cfg(test)]
mod tests;
