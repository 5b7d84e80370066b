//! Sidecar injection without I/O: [`decide`] says whether a pod gets the proxy and why not,
//! [`patch`] says how (RFC 6902 operations the mutating webhook returns).
//!
//! Both take plain data: the pod as submitted, its namespace's labels, the governing
//! `SidecarPolicy`, the version the rollout state picked for the pod's workload, and the
//! layout the API server supports.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

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
    /// Where the sidecars go in the pod.
    pub layout: Layout,
    /// Where the injected proxy finds the control plane.
    pub control_plane: &'a ControlPlane,
}

/// Why a pod cannot be injected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InjectError {
    /// A container of the pod already has the name of one the injection adds.
    #[error(
        "{field}: the pod already has a container named {name:?}, which the sidecar injection \
         adds; rename the container (or the SidecarPolicy's extra container)"
    )]
    NameTaken {
        /// The path of the clashing name, e.g. `spec.containers[1].name`.
        field: String,
        /// The name.
        name: String,
    },
    /// A container of the pod already uses a port of the proxy.
    #[error(
        "{field}: port {port} belongs to the injected proxy; move the container to another \
         port, or opt the pod out with {INJECT_ANNOTATION}=\"false\""
    )]
    PortTaken {
        /// The path of the clashing port, e.g. `spec.containers[0].ports[2].containerPort`.
        field: String,
        /// The port number.
        port: i32,
    },
    /// A volume of the pod already has the name of one the policy adds.
    #[error(
        "{field}: the pod already has a volume named {name:?}, which the SidecarPolicy adds for \
         its sidecars; rename the pod's volume (or the policy's)"
    )]
    VolumeTaken {
        /// The path of the clashing name, e.g. `spec.volumes[0].name`.
        field: String,
        /// The name.
        name: String,
    },
    /// The API server's `/version` holds a major or minor that is not a number.
    #[error("the API server reports version {field} {value:?}, which is not a number")]
    ServerVersion {
        /// `major` or `minor`.
        field: &'static str,
        /// The value as reported.
        value: String,
    },
}

/// Whether the pod carries the proxy, in either layout: the mark of an injected pod.
fn has_proxy(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(proxy_container).is_some()
}

#[cfg(test)]
mod tests;
