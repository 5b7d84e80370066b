//! `SidecarPolicy`: which pods get a sidecar, which one, how it behaves, and how a new version
//! reaches them.

use std::{cmp::Ordering, collections::BTreeSet, fmt};

use k8s_openapi::{
    api::core::v1::{
        ConfigMapVolumeSource, Container, EmptyDirVolumeSource, ResourceRequirements,
        SecretVolumeSource, Volume,
    },
    apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time},
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    Duration,
    traffic_route::{Retry, validate_retry},
    validation::{Problems, Validate, ValidationErrors},
};

/// The name of the proxy container Remora injects; extra containers may not use it.
pub const PROXY_CONTAINER: &str = "remora-proxy";

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

/// The proxy container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxySpec {
    /// The image repository without a tag, e.g. `envoyproxy/envoy`; `version` is the tag.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// The proxy version, used as the image tag, e.g. `1.40.0`. Changing it starts a rollout.
    #[schemars(
        length(min = 1, max = 128),
        pattern(r"^v?[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$")
    )]
    pub version: String,

    /// CPU and memory for the proxy container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The proxy's log level: trace, debug, info, warning, error, critical or off.
    #[serde(default)]
    pub log_level: LogLevel,

    /// Worker threads; without it the proxy uses two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub concurrency: Option<i32>,

    /// Which traffic the proxy intercepts.
    #[serde(default)]
    pub interception: Interception,
}

/// The proxy's log level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    #[default]
    Info,
    Warning,
    Error,
    Critical,
    Off,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
            LogLevel::Off => "off",
        }
    }
}

/// Which ports and addresses the proxy intercepts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Interception {
    /// Inbound ports the proxy handles; empty means every port the pod's containers declare.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(range(min = 1, max = 65535)))]
    pub inbound_ports: Vec<i32>,
    /// Inbound ports that bypass the proxy, e.g. a metrics port scraped directly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(range(min = 1, max = 65535)))]
    pub exclude_inbound_ports: Vec<i32>,
    /// Outbound destination ports that bypass the proxy, e.g. a database.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(range(min = 1, max = 65535)))]
    pub exclude_outbound_ports: Vec<i32>,
    /// Outbound destination networks (CIDR notation) that bypass the proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub exclude_outbound_cidrs: Vec<String>,
}

/// Defaults for outbound traffic.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficDefaults {
    /// How long to wait for a TCP connection to a backend; 5s when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// How long a request may take, retries included; no limit when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<Duration>,
    /// Retries for requests that no route rule configures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retry>,
    /// Takes failing endpoints out of load balancing for a while.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Limits on connections and requests to each destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Request logs written by the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLog>,
}

/// Ejects endpoints that keep failing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Consecutive 5xx answers (or connect failures) that eject an endpoint.
    #[serde(default = "default_consecutive_errors")]
    #[schemars(range(min = 1, max = 1000))]
    pub consecutive_errors: i32,
    /// How often endpoints are assessed; 10s when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// How long an endpoint stays ejected the first time (longer each time); 30s when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// The most endpoints of one destination that may be ejected at once, in percent.
    #[serde(default = "default_max_ejection")]
    #[schemars(range(min = 0, max = 100))]
    pub max_ejection_percent: i32,
}

fn default_consecutive_errors() -> i32 {
    5
}

fn default_max_ejection() -> i32 {
    50
}

/// Limits per destination; requests beyond them fail fast with 503.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    /// Open connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections: Option<i32>,
    /// Requests waiting for a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_pending_requests: Option<i32>,
    /// Requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_requests: Option<i32>,
    /// Retries in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_retries: Option<i32>,
}

/// Request logging.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessLog {
    /// `Text` (one line per request, the default) or `Json`.
    #[serde(default)]
    pub format: AccessLogFormat,
}

/// How access log lines are written: Text or Json.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum AccessLogFormat {
    #[default]
    Text,
    Json,
}

/// The destinations the selected pods may reach.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressScope {
    /// Entries of the form `<namespace>/<service>`. `*` as the service means every Service of
    /// that namespace, `.` as the namespace means the pod's own, `*/*` means everything.
    /// Example: `["./*", "payments/checkout", "remora-system/*"]`.
    #[schemars(
        length(min = 1, max = 256),
        inner(pattern(
            r"^(\*|\.|[a-z0-9]([-a-z0-9]*[a-z0-9])?)/(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$"
        ))
    )]
    pub hosts: Vec<String>,
}

/// A volume the injector adds to a pod for its sidecars to share with the app: an
/// `emptyDir`, a ConfigMap or a Secret (give exactly one).
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("[has(self.emptyDir), has(self.configMap), has(self.secret)].filter(x, x).size() == 1").message("give exactly one of emptyDir, configMap and secret"))]
#[serde(rename_all = "camelCase")]
pub struct SharedVolume {
    /// The volume's name in the pod; the containers' `volumeMounts` refer to it.
    pub name: String,
    /// A directory that lives as long as the pod, shared by its containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirVolumeSource>,
    /// A ConfigMap in the pod's namespace, as files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapVolumeSource>,
    /// A Secret in the pod's namespace, as files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretVolumeSource>,
}

impl SharedVolume {
    /// The pod volume it becomes.
    pub fn to_volume(&self) -> Volume {
        Volume {
            name: self.name.clone(),
            empty_dir: self.empty_dir.clone(),
            config_map: self.config_map.clone(),
            secret: self.secret.clone(),
            ..Volume::default()
        }
    }
}

/// How a sidecar change rolls across the selected workloads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStrategy {
    /// The waves, in order. Each gives how many of the matched workloads have been updated
    /// once it completes: a `count` of workloads or a `percent` of all of them. The last wave
    /// must reach 100%.
    #[serde(default = "default_waves")]
    #[schemars(length(min = 1, max = 16))]
    pub waves: Vec<Wave>,
    /// The most workloads restarted at the same time within a wave.
    #[serde(default = "default_max_concurrent")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_concurrent: i32,
    /// How workloads are restarted: `Restart` patches a pod-template annotation as
    /// `kubectl rollout restart` does; `Evict` evicts pods through the Eviction API, honouring
    /// PodDisruptionBudgets and leaving objects that Git owns untouched.
    #[serde(default)]
    pub method: RestartMethod,
    /// What must hold before the next wave starts.
    #[serde(default)]
    pub health_gate: HealthGate,
    /// What happens when a health gate fails: `Rollback` (default) returns the wave's
    /// workloads to the previous sidecar; `Pause` stops and waits for a person.
    #[serde(default)]
    pub on_failure: FailureAction,
    /// Stops the rollout after the workloads under way; set back to false to resume.
    #[serde(default)]
    pub paused: bool,
}

impl Default for RolloutStrategy {
    fn default() -> Self {
        RolloutStrategy {
            waves: default_waves(),
            max_concurrent: default_max_concurrent(),
            method: RestartMethod::default(),
            health_gate: HealthGate::default(),
            on_failure: FailureAction::default(),
            paused: false,
        }
    }
}

fn default_waves() -> Vec<Wave> {
    vec![
        Wave {
            count: Some(1),
            percent: None,
        },
        Wave {
            count: None,
            percent: Some(25),
        },
        Wave {
            count: None,
            percent: Some(100),
        },
    ]
}

fn default_max_concurrent() -> i32 {
    5
}

/// One rollout wave: give `count` or `percent`, not both.
#[derive(KubeSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.count) != has(self.percent)").message("give exactly one of count and percent"))]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    /// Workloads updated once this wave is done (a canary wave is `count: 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub count: Option<i32>,
    /// Percent of the matched workloads updated once this wave is done, rounded up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub percent: Option<i32>,
}

/// How a workload is restarted: Restart or Evict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RestartMethod {
    #[default]
    Restart,
    Evict,
}

/// What a failed health gate does: Rollback or Pause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum FailureAction {
    #[default]
    Rollback,
    Pause,
}

/// The checks between waves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthGate {
    /// How long every updated pod must stay Ready, with its proxy connected and acknowledging
    /// config and no NACKs, before the wave counts as healthy.
    #[serde(default = "default_min_ready")]
    pub min_ready: Duration,
    /// The wave fails when it is not healthy within this time.
    #[serde(default = "default_gate_timeout")]
    pub timeout: Duration,
}

impl Default for HealthGate {
    fn default() -> Self {
        HealthGate {
            min_ready: default_min_ready(),
            timeout: default_gate_timeout(),
        }
    }
}

fn default_min_ready() -> Duration {
    "30s".into()
}

fn default_gate_timeout() -> Duration {
    "10m".into()
}

/// What the controller observed about the policy and the fleet it governs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`, `Progressing`, `RolledOut` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Workloads (Deployments, StatefulSets, DaemonSets) this policy governs.
    #[serde(default)]
    pub matched_workloads: i32,
    /// Pods with a sidecar this policy governs.
    #[serde(default)]
    pub matched_proxies: i32,
    /// How many of those proxies run each sidecar version, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<VersionCount>,
    /// The rollout of the current sidecar spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

/// Proxies running one version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionCount {
    /// The sidecar version.
    pub version: String,
    /// Proxies running it.
    pub proxies: i32,
}

/// Where a rollout stands. Everything a restarted controller needs to resume is here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Progressing, Paused, Complete, RolledBack or Failed.
    pub phase: RolloutPhase,
    /// The version being rolled out.
    pub target_version: String,
    /// The version it replaces, which a rollback returns to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,
    /// A short fingerprint of the sidecar being rolled out (proxy image, version, resources,
    /// log level, concurrency, interception and extra containers). A new value starts a new
    /// rollout; traffic, egress and rollout settings do not change it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision: String,
    /// The workloads moved to the target version (restart issued, or done), in the order they
    /// were reached. Workloads not listed keep the previous version, even when their pods are
    /// recreated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reached: Vec<WorkloadRef>,
    /// When the wave under way began, or last reached another workload (so one reached late
    /// in a wave still gets the whole timeout); its health gate times out counting from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_started_at: Option<Time>,
    /// The wave under way, counting from 1.
    pub wave: i32,
    /// Waves in this rollout (waves that would add no workload are left out).
    pub total_waves: i32,
    /// Workloads that run the target version and passed their wave's health gate.
    pub updated_workloads: i32,
    /// Workloads the rollout covers.
    pub total_workloads: i32,
    /// Workloads that failed their health gate, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_workloads: Vec<FailedWorkload>,
    /// A sentence for a person: what is happening or what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A workload a policy governs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    /// Deployment, StatefulSet or DaemonSet.
    pub kind: String,
    /// The workload's namespace.
    pub namespace: String,
    /// The workload's name.
    pub name: String,
}

impl WorkloadRef {
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        WorkloadRef {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

// Namespace first, as people list workloads; the rollout order follows it.
impl Ord for WorkloadRef {
    fn cmp(&self, other: &Self) -> Ordering {
        (&self.namespace, &self.name, &self.kind).cmp(&(&other.namespace, &other.name, &other.kind))
    }
}

impl PartialOrd for WorkloadRef {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// The phase of a rollout: Progressing, Paused, Complete, RolledBack or Failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RolloutPhase {
    #[default]
    Progressing,
    Paused,
    Complete,
    RolledBack,
    Failed,
}

/// A workload that failed its health gate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedWorkload {
    /// Deployment, StatefulSet or DaemonSet.
    pub kind: String,
    /// The workload's namespace.
    pub namespace: String,
    /// The workload's name.
    pub name: String,
    /// Why it failed.
    pub reason: String,
}

impl Validate for SidecarPolicySpec {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut p = Problems::default();
        if let Some(s) = &self.selector {
            p.label_selector("spec.selector", s);
        }
        if let Some(s) = &self.namespace_selector {
            p.label_selector("spec.namespaceSelector", s);
        }
        validate_proxy(&mut p, &self.proxy);
        validate_extra_containers(&mut p, &self.extra_containers);
        validate_volumes(&mut p, &self.volumes);
        validate_traffic(&mut p, &self.traffic);
        if let Some(egress) = &self.egress {
            validate_egress(&mut p, egress);
        }
        validate_rollout(&mut p, &self.rollout);
        p.finish()
    }
}

impl Validate for SidecarPolicy {
    fn validate(&self) -> Result<(), ValidationErrors> {
        self.spec.validate()
    }
}

fn validate_proxy(p: &mut Problems, proxy: &ProxySpec) {
    let image = proxy.image.as_str();
    let last_segment = image.rsplit('/').next().unwrap_or(image);
    if image.trim().is_empty() {
        p.add(
            "spec.proxy.image",
            "give the proxy image repository, e.g. envoyproxy/envoy",
        );
    } else if image.contains('@') || last_segment.contains(':') {
        p.add("spec.proxy.image", format!("{image:?} carries a tag or digest; give the repository only and put the tag in spec.proxy.version"));
    } else if image.chars().any(char::is_whitespace) {
        p.add(
            "spec.proxy.image",
            format!(
                "{image:?} contains white space; give an image repository such as envoyproxy/envoy"
            ),
        );
    }
    if !is_version(&proxy.version) {
        p.add(
            "spec.proxy.version",
            format!(
                "{:?} is not a version: use MAJOR.MINOR.PATCH such as 1.40.0",
                proxy.version
            ),
        );
    } else if let Err(e) = check_proxy_version(&proxy.version) {
        p.add("spec.proxy.version", e.to_string());
    }
    if let Some(c) = proxy.concurrency
        && !(1..=64).contains(&c)
    {
        p.add(
            "spec.proxy.concurrency",
            format!("{c} worker threads is out of range: use 1 to 64"),
        );
    }
    let i = &proxy.interception;
    p.port_list("spec.proxy.interception.inboundPorts", &i.inbound_ports);
    p.port_list(
        "spec.proxy.interception.excludeInboundPorts",
        &i.exclude_inbound_ports,
    );
    p.port_list(
        "spec.proxy.interception.excludeOutboundPorts",
        &i.exclude_outbound_ports,
    );
    for (n, port) in i.exclude_inbound_ports.iter().enumerate() {
        if i.inbound_ports.contains(port) {
            p.add(
                format!("spec.proxy.interception.excludeInboundPorts[{n}]"),
                format!("port {port} is both intercepted and excluded; remove it from one list"),
            );
        }
    }
    for (n, cidr) in i.exclude_outbound_cidrs.iter().enumerate() {
        if !is_cidr(cidr) {
            p.add(
                format!("spec.proxy.interception.excludeOutboundCidrs[{n}]"),
                format!(
                    "{cidr:?} is not a CIDR: write an address and prefix length such as 10.0.0.0/8"
                ),
            );
        }
    }
}

fn validate_extra_containers(p: &mut Problems, containers: &[Container]) {
    let mut names = BTreeSet::new();
    for (i, c) in containers.iter().enumerate() {
        let path = format!("spec.extraContainers[{i}]");
        p.dns_label(&format!("{path}.name"), &c.name);
        if c.name == PROXY_CONTAINER {
            p.add(
                format!("{path}.name"),
                format!("{PROXY_CONTAINER:?} is the proxy's own container name; choose another"),
            );
        }
        if !names.insert(c.name.as_str()) {
            p.add(
                format!("{path}.name"),
                format!(
                    "container name {:?} is used twice; names must be unique",
                    c.name
                ),
            );
        }
        if c.image.as_deref().is_none_or(|s| s.trim().is_empty()) {
            p.add(format!("{path}.image"), "an extra container needs an image");
        }
    }
}

fn validate_volumes(p: &mut Problems, volumes: &[SharedVolume]) {
    let mut names = BTreeSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let sources = [
            v.empty_dir.is_some(),
            v.config_map.is_some(),
            v.secret.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            p.add(
                format!("spec.volumes[{i}]"),
                "give exactly one of emptyDir, configMap and secret",
            );
        }
        let path = format!("spec.volumes[{i}].name");
        p.dns_label(&path, &v.name);
        if !names.insert(v.name.as_str()) {
            p.add(
                path,
                format!(
                    "volume name {:?} is used twice; names must be unique",
                    v.name
                ),
            );
        }
    }
}

fn validate_traffic(p: &mut Problems, t: &TrafficDefaults) {
    p.duration("spec.traffic.connectTimeout", &t.connect_timeout);
    let request = p.duration("spec.traffic.requestTimeout", &t.request_timeout);
    if let Some(r) = &t.retries {
        validate_retry(p, "spec.traffic.retries", r, request);
    }
    if let Some(o) = &t.outlier_detection {
        if o.consecutive_errors < 1 {
            p.add(
                "spec.traffic.outlierDetection.consecutiveErrors",
                "use at least 1",
            );
        }
        p.duration("spec.traffic.outlierDetection.interval", &o.interval);
        p.duration(
            "spec.traffic.outlierDetection.baseEjectionTime",
            &o.base_ejection_time,
        );
        p.percent(
            "spec.traffic.outlierDetection.maxEjectionPercent",
            o.max_ejection_percent,
        );
    }
    if let Some(cb) = &t.circuit_breaker {
        for (field, v, min) in [
            ("maxConnections", cb.max_connections, 1),
            ("maxPendingRequests", cb.max_pending_requests, 1),
            ("maxRequests", cb.max_requests, 1),
            ("maxRetries", cb.max_retries, 0),
        ] {
            if let Some(v) = v
                && v < min
            {
                p.add(
                    format!("spec.traffic.circuitBreaker.{field}"),
                    format!("{v} is too low: use at least {min}"),
                );
            }
        }
    }
}

fn validate_egress(p: &mut Problems, egress: &EgressScope) {
    if egress.hosts.is_empty() {
        p.add("spec.egress.hosts", "list at least one destination such as \"./*\", or remove egress to allow every Service");
    }
    let mut seen = BTreeSet::new();
    for (i, host) in egress.hosts.iter().enumerate() {
        let path = format!("spec.egress.hosts[{i}]");
        let valid = host.split_once('/').is_some_and(|(ns, svc)| {
            (ns == "*" || ns == "." || crate::validation::is_dns_label(ns))
                && (svc == "*" || crate::validation::is_dns_label(svc))
        });
        if !valid {
            p.add(path.clone(), format!("{host:?} is not <namespace>/<service>: write e.g. \"./*\", \"payments/checkout\" or \"*/*\""));
        }
        if !seen.insert(host.as_str()) {
            p.add(
                path,
                format!("{host:?} is listed twice; remove the duplicate"),
            );
        }
    }
}

fn validate_rollout(p: &mut Problems, r: &RolloutStrategy) {
    if r.waves.is_empty() {
        p.add(
            "spec.rollout.waves",
            "give at least one wave, e.g. [{percent: 100}]",
        );
    }
    let mut last_percent = 0;
    for (i, w) in r.waves.iter().enumerate() {
        let path = format!("spec.rollout.waves[{i}]");
        match (w.count, w.percent) {
            (Some(_), Some(_)) | (None, None) => p.add(path, "give exactly one of count and percent"),
            (Some(c), None) if c < 1 => p.add(format!("{path}.count"), format!("{c} workloads is too few: use at least 1")),
            (None, Some(pc)) if !(1..=100).contains(&pc) => p.add(format!("{path}.percent"), format!("{pc} is not a percentage: use 1 to 100")),
            (None, Some(pc)) if pc < last_percent => p.add(
                format!("{path}.percent"),
                format!("waves must not shrink: {pc}% comes after {last_percent}%; order the waves by size"),
            ),
            (None, Some(pc)) => last_percent = pc,
            _ => {}
        }
    }
    if let Some(last) = r.waves.last()
        && last.percent != Some(100)
    {
        p.add(
            format!("spec.rollout.waves[{}]", r.waves.len() - 1),
            "the last wave must reach every workload; end the list with {percent: 100}",
        );
    }
    if !(1..=1000).contains(&r.max_concurrent) {
        p.add(
            "spec.rollout.maxConcurrent",
            format!("{} is out of range: use 1 to 1000", r.max_concurrent),
        );
    }
    let min_ready = p.duration(
        "spec.rollout.healthGate.minReady",
        &Some(r.health_gate.min_ready.clone()),
    );
    let timeout = p.duration(
        "spec.rollout.healthGate.timeout",
        &Some(r.health_gate.timeout.clone()),
    );
    if let (Some(min_ready), Some(timeout)) = (min_ready, timeout)
        && timeout <= min_ready
    {
        p.add(
            "spec.rollout.healthGate.timeout",
            "the timeout must be longer than minReady, or no wave could ever pass; raise it",
        );
    }
}

/// The Envoy minor versions this control plane is built and tested against (any patch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionWindow {
    pub major: u32,
    pub oldest_minor: u32,
    pub newest_minor: u32,
}

impl VersionWindow {
    pub fn contains(&self, major: u32, minor: u32) -> bool {
        major == self.major && (self.oldest_minor..=self.newest_minor).contains(&minor)
    }
}

impl fmt::Display for VersionWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{major}.{} through {major}.{}",
            self.oldest_minor,
            self.newest_minor,
            major = self.major
        )
    }
}

/// Built and tested against Envoy 1.40; the two minors before it still speak the xDS this
/// control plane sends.
pub const SUPPORTED_PROXY_VERSIONS: VersionWindow = VersionWindow {
    major: 1,
    oldest_minor: 38,
    newest_minor: 40,
};

/// Why a proxy version is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyVersionError {
    #[error(
        "{version:?} is not a version: set spec.proxy.version to MAJOR.MINOR.PATCH within \
         {SUPPORTED_PROXY_VERSIONS}, e.g. {major}.{minor}.0",
        major = SUPPORTED_PROXY_VERSIONS.major,
        minor = SUPPORTED_PROXY_VERSIONS.newest_minor
    )]
    Unparseable { version: String },
    #[error(
        "{version:?} is outside the Envoy versions this control plane supports \
         ({SUPPORTED_PROXY_VERSIONS}, any patch): set spec.proxy.version to one of them, \
         e.g. {major}.{minor}.0, or upgrade the control plane first",
        major = SUPPORTED_PROXY_VERSIONS.major,
        minor = SUPPORTED_PROXY_VERSIONS.newest_minor
    )]
    Unsupported { version: String },
}

/// Accepts `1.40.0`, `v1.39.2`, `1.38.1-dev` and the like within
/// [`SUPPORTED_PROXY_VERSIONS`]: the webhook, the reconciler and the rollout all refuse a
/// sidecar this control plane cannot configure.
pub fn check_proxy_version(version: &str) -> Result<(), ProxyVersionError> {
    let unparseable = || ProxyVersionError::Unparseable {
        version: version.to_owned(),
    };
    if !is_version(version) {
        return Err(unparseable());
    }
    let v = version.strip_prefix('v').unwrap_or(version);
    let mut parts = v.split(['-', '+']).next().unwrap_or_default().split('.');
    let mut number = || parts.next().and_then(|p| p.parse::<u32>().ok());
    let (Some(major), Some(minor)) = (number(), number()) else {
        return Err(unparseable());
    };
    if SUPPORTED_PROXY_VERSIONS.contains(major, minor) {
        Ok(())
    } else {
        Err(ProxyVersionError::Unsupported {
            version: version.to_owned(),
        })
    }
}

fn is_version(v: &str) -> bool {
    let v = v.strip_prefix('v').unwrap_or(v);
    let core = v.split(['-', '+']).next().unwrap_or_default();
    let suffix_ok = v[core.len()..]
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-+.".contains(c));
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && suffix_ok
}

fn is_cidr(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else {
        return false;
    };
    let Ok(len) = len.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => len <= 32,
        Ok(std::net::IpAddr::V6(_)) => len <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        for ok in ["1.40.0", "v1.2.3", "1.40.0-rc.1", "2.0.0+build.5"] {
            assert!(is_version(ok), "{ok}");
        }
        for bad in ["1.40", "latest", "1.40.x", "", "1..0", "1.2.3 "] {
            assert!(!is_version(bad), "{bad}");
        }
    }

    #[test]
    fn the_supported_window() {
        for ok in [
            "1.40.0",
            "v1.39.2",
            "1.38.1-dev",
            "1.40.17+build.3",
            "1.38.0",
        ] {
            assert_eq!(check_proxy_version(ok), Ok(()), "{ok}");
        }
        for out in ["1.37.9", "1.41.0", "2.40.0", "0.39.0", "v1.9.0"] {
            let e = check_proxy_version(out).expect_err(out).to_string();
            assert!(matches!(
                check_proxy_version(out),
                Err(ProxyVersionError::Unsupported { .. })
            ));
            assert!(e.contains("spec.proxy.version"), "{e}");
            assert!(e.contains("1.38 through 1.40"), "{e}");
        }
        for bad in ["latest", "1.40", "", "99999999999.40.0"] {
            assert!(check_proxy_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validate_refuses_versions_outside_the_window() {
        let mut p = Problems::default();
        validate_proxy(
            &mut p,
            &ProxySpec {
                image: "envoyproxy/envoy".into(),
                version: "1.37.0".into(),
                resources: None,
                log_level: LogLevel::Info,
                concurrency: None,
                interception: Interception::default(),
            },
        );
        let errors = p.finish().expect_err("1.37 is refused").to_string();
        assert!(errors.contains("spec.proxy.version"), "{errors}");
        assert!(errors.contains("1.38 through 1.40"), "{errors}");
    }

    #[test]
    fn workloads_sort_by_namespace_then_name_then_kind() {
        let mut refs = [
            WorkloadRef::new("StatefulSet", "b", "a"),
            WorkloadRef::new("Deployment", "b", "a"),
            WorkloadRef::new("Deployment", "a", "z"),
        ];
        refs.sort();
        let shown: Vec<String> = refs.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["Deployment/a/z", "Deployment/b/a", "StatefulSet/b/a"]
        );
    }

    #[test]
    fn cidrs() {
        assert!(is_cidr("10.0.0.0/8"));
        assert!(is_cidr("fd00::/64"));
        assert!(!is_cidr("10.0.0.0"));
        assert!(!is_cidr("10.0.0.0/33"));
        assert!(!is_cidr("cluster/8"));
    }

    #[test]
    fn default_rollout_is_valid() {
        let mut p = Problems::default();
        validate_rollout(&mut p, &RolloutStrategy::default());
        assert!(p.finish().is_ok());
    }
}
