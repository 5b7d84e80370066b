//! `SidecarPolicy`: which pods get a sidecar, which one, how it behaves, and how a new version
//! reaches them.

mod mtls;
mod proxy;
mod rollout;
mod status;
mod traffic;
mod validate;
mod version;

use k8s_openapi::{
    api::core::v1::{Container, PodSpec},
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub use mtls::{Mtls, MtlsMode};
pub use proxy::{
    ADMIN_PORT, INBOUND_CAPTURE_PORT, Interception, LogLevel, OUTBOUND_CAPTURE_PORT, PROXY_GID,
    PROXY_UID, ProxySpec, READINESS_PORT, STATS_PORT, SharedVolume, UnknownDestinations,
    proxy_port_role,
};
pub use rollout::{FailureAction, HealthGate, RestartMethod, RolloutStrategy, Wave};
pub use status::{
    FailedWorkload, MtlsCount, RolloutPhase, RolloutStatus, SidecarPolicyStatus, VersionCount,
    WorkloadRef,
};
pub use traffic::{
    AccessLog, AccessLogFormat, CircuitBreaker, EgressScope, OutlierDetection, TrafficDefaults,
};
pub use version::{
    ProxyVersion, ProxyVersionError, SUPPORTED_PROXY_VERSIONS, VersionWindow, check_proxy_version,
};

/// The name of the proxy container Remora injects; extra containers may not use it.
pub const PROXY_CONTAINER: &str = "remora-proxy";

/// The injected proxy of a pod: a container, or a native sidecar (an init container with
/// `restartPolicy: Always`, as injected on Kubernetes 1.29 and later). Having one is what
/// makes a pod a proxy, and what keeps it from being injected twice.
pub fn proxy_container(spec: &PodSpec) -> Option<&Container> {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == PROXY_CONTAINER)
}

/// Gives the selected pods a Remora sidecar and says which image and version it runs, how it
/// intercepts and handles traffic, which extra containers come with it, what it may reach, and
/// how a version change rolls out.
///
/// Precedence when several policies select the same pod: a policy in the pod's own namespace
/// beats one in the mesh's root namespace; then a policy with a selector beats one that
/// selects every pod; then the oldest (`creationTimestamp`) wins; then the name that sorts
/// first. Exactly one policy governs each pod.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "remora.dev",
    version = "v1alpha1",
    kind = "SidecarPolicy",
    plural = "sidecarpolicies",
    namespaced,
    status = "SidecarPolicyStatus",
    shortname = "scp",
    category = "remora",
    doc = "Which pods get a Remora sidecar, its image and version, proxy settings, traffic defaults, egress scope and rollout strategy.",
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".spec.proxy.version",
        description = "The sidecar version the policy asks for"
    ),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status",
        description = "Whether the policy is valid and in effect"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.rollout.phase",
        description = "Rollout phase"
    ),
    printcolumn(
        name = "Wave",
        type_ = "integer",
        json_path = ".status.rollout.wave",
        description = "The rollout wave under way"
    ),
    printcolumn(
        name = "Updated",
        type_ = "integer",
        json_path = ".status.rollout.updatedWorkloads",
        description = "Workloads running the policy's version"
    ),
    printcolumn(
        name = "Total",
        type_ = "integer",
        json_path = ".status.rollout.totalWorkloads",
        description = "Workloads the policy matches"
    ),
    printcolumn(
        name = "mTLS",
        type_ = "string",
        json_path = ".status.mtls.mode",
        description = "The mutual TLS mode of the policy's workloads, when the mesh has identities"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SidecarPolicySpec {
    /// Pods that get the sidecar, by label. Without a selector the policy covers every pod in
    /// its namespace(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,

    /// Honoured only for policies in the mesh's root namespace: the namespaces the policy
    /// covers, by label. Without it a root policy covers every namespace that opted in to the
    /// mesh, which is how one policy governs the whole fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// The proxy sidecar.
    pub proxy: ProxySpec,

    /// More containers to add to every selected pod, such as a log shipper or a config
    /// reloader: plain container specs, rolled out together with the proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub extra_containers: Vec<Container>,

    /// Volumes to add to every selected pod, for the extra containers to share with the app
    /// (for example an `emptyDir` of logs that a log shipper reads). A pod that already has a
    /// volume of the same name is refused at creation with the name to change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub volumes: Vec<SharedVolume>,

    /// Defaults for all traffic leaving the selected pods; a TrafficRoute rule overrides
    /// timeouts and retries for its own requests.
    #[serde(default)]
    pub traffic: TrafficDefaults,

    /// Mutual TLS between the selected pods' sidecars and other sidecars: whether they
    /// require it, accept it beside plaintext (the default), or never use it. It takes effect
    /// where the control plane issues workload identities: each proxy then holds a
    /// certificate naming its pod's service account
    /// (`spiffe://<trust domain>/ns/<namespace>/sa/<service account>`).
    #[serde(default, skip_serializing_if = "Mtls::is_default")]
    pub mtls: Mtls,

    /// What the selected pods may reach. Proxies receive config only for these destinations,
    /// which keeps their config small in a large mesh. Without it they may reach every
    /// Service in the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressScope>,

    /// How a change of the sidecar (image, version, resources, extra containers) reaches the
    /// selected workloads.
    #[serde(default)]
    pub rollout: RolloutStrategy,
}
