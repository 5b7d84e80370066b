//! Sidecar injection without I/O: [`decide`] says whether a pod gets the proxy and why not,
//! [`patch`] says how (RFC 6902 operations the mutating webhook returns).
//!
//! Both take plain data: the pod as submitted, its namespace's labels, the governing
//! `SidecarPolicy`, the version the rollout state picked for the pod's workload, and the
//! layout the API server supports.
//!
//! # What an injected pod gets
//!
//! - **`remora-init`** ([`INIT_CONTAINER`]), the first init container in both layouts: `remora
//!   init-network` from the control plane's own image ([`ControlPlane::image`]) programs the
//!   nat rules that send the pod's TCP traffic through the proxy (the policy's
//!   `spec.proxy.interception` as its flags). It runs before the native sidecars, so the
//!   redirect is in place before the proxy starts, and in the classic layout before the app.
//!   It alone holds `NET_ADMIN` and `NET_RAW` and runs as root, as iptables needs. In the
//!   classic layout the pod's own init containers run after it but before the proxy, so
//!   their outbound connections are refused unless the policy excludes their destinations;
//!   in the native layout the proxy is up before them.
//! - **`remora-agent`** ([`AGENT_CONTAINER`]), when the mesh has workload identities
//!   ([`ControlPlane::identity`]): `remora agent` from the control plane's image, before the
//!   proxy, as the proxy's user with every capability dropped. It makes the pod's key, gets
//!   its certificate (first with a projected ServiceAccount token of audience `remora`, then
//!   with the certificate itself) and serves both to the proxy over SDS on a Unix socket in a
//!   memory-backed `emptyDir` ([`SDS_VOLUME`]).
//! - **`remora-proxy`**, Envoy with every capability dropped, running as `PROXY_UID` and
//!   `PROXY_GID` (`remora_api::sidecar_policy`): the capture rules never redirect the
//!   connections of that user, so its upstream and xDS connections are not captured again.
//! - The policy's extra containers and volumes, and annotations for rollouts.
//! - Prometheus' scrape annotations for the proxy's stats port, which serves only
//!   [`STATS_PATH`], unless the pod has its own.
//!
//! # What makes a pod refused
//!
//! An [`InjectError`] names the field and the fix: a container or volume name the injection
//! adds, a container port that is one of the proxy's five (admin, readiness, stats, outbound
//! and inbound capture), and a container that runs as the proxy's UID (its own securityContext,
//! or the pod's): its traffic would bypass the proxy unseen.
//!
//! # Kubelet probes
//!
//! The kubelet connects to the pod's IP, so its probes are redirected like any inbound
//! connection and reach the app through the proxy: a probe on a port the app's containers
//! declare through the inbound chain for that port, one on any other port through the
//! inbound listener's passthrough (plain TCP to the port it was sent to). Probes need no
//! exclusion, and a probed port that also serves traffic is never taken out of the mesh for
//! them. The proxy's own readiness port is never redirected. Under `Strict` mutual TLS the
//! kubelet's plaintext would be refused, so HTTP `httpGet` probes are rewritten to the
//! proxy's readiness port, which passes them to the app (see `probes.rs`).
//!
//! # Pod Security
//!
//! `NET_ADMIN` and `NET_RAW` are outside the Pod Security `baseline` capability set, and
//! running as root is outside `restricted`: a namespace of meshed pods needs the `privileged`
//! level. A CNI plugin that programs the same rules from the node is the later step that
//! removes the init container and with it this need.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod agent;
mod bootstrap;
mod conflicts;
mod container;
mod decide;
mod init;
mod layout;
mod patch;
mod pod_security;
mod probes;
mod workload;

use k8s_openapi::api::core::v1::Pod;
use remora_api::{
    SidecarPolicy,
    sidecar_policy::{PROXY_UID, proxy_container},
};

pub use agent::{AGENT_CONTAINER, SDS_VOLUME, TOKEN_DIR, TOKEN_VOLUME};
pub use bootstrap::{ControlPlane, MeshIdentity, ProxyPod, READINESS_PATH, STATS_PATH, bootstrap};
pub use container::STATS_PORT_NAME;
pub use decide::{Decision, Settings, SkipReason, decide};
pub use init::INIT_CONTAINER;
pub use layout::{Layout, ServerVersion};
pub use patch::{JsonPatchOp, patch, patch_with, pointer_token};
pub use pod_security::{ENFORCE_LABEL, PodSecurity};
pub use probes::{APP_HEALTH_PREFIX, AppProbe};
pub use workload::{source_workload, workload};

/// A pod annotation: `"false"` keeps the pod out of the mesh.
pub const INJECT_ANNOTATION: &str = "sidecar.remora.dev/inject";
/// Written on injection: the proxy version the pod got, for the rollout's version histogram.
pub const VERSION_ANNOTATION: &str = "sidecar.remora.dev/version";
/// Written on injection: the revision of the sidecar the pod got (`remora_rollout::revision_of`
/// the spec in effect with the version injected), which rollouts judge the pod by.
pub const REVISION_ANNOTATION: &str = "sidecar.remora.dev/revision";
/// Written on injection: `namespace/name` of the policy that governed the pod then.
pub const POLICY_ANNOTATION: &str = "sidecar.remora.dev/policy";
/// Written on injection: the pod's [`source_workload`], which the proxy's stats carry as
/// their source (its bootstrap reads it through the downward API).
pub const WORKLOAD_ANNOTATION: &str = "sidecar.remora.dev/workload";
/// Written on injection unless the pod sets it (or the other two): `"true"`, so that a
/// Prometheus configured by the common annotations scrapes the proxy.
pub const SCRAPE_ANNOTATION: &str = "prometheus.io/scrape";
/// Written with [`SCRAPE_ANNOTATION`]: the proxy's stats port.
pub const SCRAPE_PORT_ANNOTATION: &str = "prometheus.io/port";
/// Written with [`SCRAPE_ANNOTATION`]: [`STATS_PATH`].
pub const SCRAPE_PATH_ANNOTATION: &str = "prometheus.io/path";

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
    /// The Pod Security level the pod's namespace enforces, which the policy's extra
    /// containers must meet.
    pub pod_security: PodSecurity,
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
        "{field}: port {port} belongs to the injected proxy (its {role} port); move the \
         container to another port, or opt the pod out with {INJECT_ANNOTATION}=\"false\""
    )]
    PortTaken {
        /// The path of the clashing port, e.g. `spec.containers[0].ports[2].containerPort`.
        field: String,
        /// The port number.
        port: i32,
        /// Which of the proxy's ports it is: admin, readiness, stats, outbound or inbound
        /// capture.
        role: &'static str,
    },
    /// A container of the pod runs as the proxy's user, whose connections the capture rules
    /// never redirect.
    #[error(
        "{field}: {PROXY_UID} is the UID of the injected proxy, whose connections are never \
         redirected, so this container's traffic would bypass the proxy unseen; run it as \
         another user, or opt the pod out with {INJECT_ANNOTATION}=\"false\""
    )]
    ProxyUser {
        /// The path of the `runAsUser` that applies: the container's own, e.g.
        /// `spec.containers[0].securityContext.runAsUser`, or the pod's
        /// `spec.securityContext.runAsUser` when the container sets none.
        field: String,
    },
    /// A volume of the pod already has the name of one the injection adds (the policy's, or
    /// the identity agent's).
    #[error(
        "{field}: the pod already has a volume named {name:?}, which the sidecar injection adds \
         (from the SidecarPolicy, or for the identity agent); rename the pod's volume (or the \
         policy's)"
    )]
    VolumeTaken {
        /// The path of the clashing name, e.g. `spec.volumes[0].name`.
        field: String,
        /// The name.
        name: String,
    },
    /// Containers the injection adds break rules of the Pod Security level the namespace
    /// enforces, so the API server would refuse the injected pod.
    #[error(
        "the namespace enforces Pod Security level {level}, which the sidecar's containers \
         break: {}; meshed pods need the namespace labelled {ENFORCE_LABEL}=privileged (the \
         traffic redirection needs NET_ADMIN and NET_RAW), and the SidecarPolicy's extra \
         containers must meet what the namespace enforces",
        broken.join("; ")
    )]
    PodSecurity {
        /// The level enforced.
        level: &'static str,
        /// Each container at fault, by field, with the rule: the policy's extra containers
        /// by their path in the SidecarPolicy (e.g.
        /// `spec.extraContainers[0].securityContext.privileged (no privileged containers)`),
        /// the injected init container by its name.
        broken: Vec<String>,
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

impl InjectError {
    /// A short, fixed label for metrics (bounded cardinality, unlike the message).
    pub fn metric_label(&self) -> &'static str {
        match self {
            InjectError::NameTaken { .. } => "name_taken",
            InjectError::PortTaken { .. } => "port_taken",
            InjectError::ProxyUser { .. } => "proxy_user",
            InjectError::VolumeTaken { .. } => "volume_taken",
            InjectError::PodSecurity { .. } => "pod_security",
            InjectError::ServerVersion { .. } => "server_version",
        }
    }
}

/// Whether the pod was injected: it carries the proxy, in either layout, and the version
/// annotation the injection adds. A container that merely takes the proxy's name is no
/// sidecar: such a pod is refused for the clash, never silently left out of the mesh.
fn is_injected(pod: &Pod) -> bool {
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(VERSION_ANNOTATION));
    annotated && pod.spec.as_ref().and_then(proxy_container).is_some()
}

#[cfg(test)]
mod tests;
