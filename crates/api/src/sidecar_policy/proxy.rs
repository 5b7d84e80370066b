//! The proxy container and the pod volumes the injector adds beside it.

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, EmptyDirVolumeSource, ResourceRequirements, SecretVolumeSource, Volume,
};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The port of the proxy's admin interface, on the pod's loopback only.
pub const ADMIN_PORT: u16 = 15000;
/// The port the kubelet probes for the proxy's readiness.
pub const READINESS_PORT: u16 = 15021;
/// The port Prometheus scrapes the proxy's stats on: it serves only `/stats/prometheus`, passed
/// to the admin interface, which stays on loopback.
pub const STATS_PORT: u16 = 15090;
/// The port of the proxy's outbound capture listener: the pod's outgoing TCP connections are
/// redirected to it.
pub const OUTBOUND_CAPTURE_PORT: u16 = 15001;
/// The port of the proxy's inbound capture listener: TCP connections arriving at the pod are
/// redirected to it.
pub const INBOUND_CAPTURE_PORT: u16 = 15006;
/// The UID the injected proxy runs as. Its connections are never redirected (the init step
/// matches the socket's owner), so no other container of the pod may run as it.
pub const PROXY_UID: u32 = 1337;
/// The GID the injected proxy runs as; the init step matches it together with [`PROXY_UID`].
pub const PROXY_GID: u32 = 1337;

/// Which of the proxy's own ports `port` is (`admin`, `readiness`, `stats`, `outbound capture`,
/// `inbound capture`), if any: no application may use them in an injected pod.
pub fn proxy_port_role(port: i32) -> Option<&'static str> {
    [
        (ADMIN_PORT, "admin"),
        (READINESS_PORT, "readiness"),
        (STATS_PORT, "stats"),
        (OUTBOUND_CAPTURE_PORT, "outbound capture"),
        (INBOUND_CAPTURE_PORT, "inbound capture"),
    ]
    .into_iter()
    .find(|(p, _)| i32::from(*p) == port)
    .map(|(_, role)| role)
}

/// The proxy container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxySpec {
    /// The image repository without a tag, e.g. `envoyproxy/envoy`; `version` is the tag.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// The proxy version, used as the image tag, e.g. `v1.40.0` (Envoy's official image tags
    /// its releases with a leading `v`). Changing it starts a rollout.
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
#[schemars(transform = crate::schema::plain_enum)]
pub enum LogLevel {
    /// The most detail: each step of handling every connection and request.
    Trace,
    /// Detail for debugging connections and config updates.
    Debug,
    /// Notable events such as startup and config changes; the default.
    #[default]
    Info,
    /// Problems the proxy works around.
    Warning,
    /// Errors only, such as a rejected config.
    Error,
    /// Only the most severe errors.
    Critical,
    /// No logs.
    Off,
}

impl LogLevel {
    /// The name Envoy's `--log-level` takes, which is also the name users write.
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
    /// What happens to an intercepted outbound connection to a destination the mesh does not
    /// route (no Service port of the mesh, or one outside the policy's egress scope):
    /// `Passthrough` (the default) sends it on unchanged, `Refuse` closes it, counts it and
    /// logs it in the proxy's access log.
    #[serde(default, skip_serializing_if = "UnknownDestinations::is_passthrough")]
    pub unknown_destinations: UnknownDestinations,
}

/// What the proxy does with outbound traffic to a destination the mesh does not route.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::plain_enum)]
pub enum UnknownDestinations {
    /// Send it on to the address the application asked for, unchanged.
    #[default]
    Passthrough,
    /// Close the connection; Envoy counts it (`no_filter_chain_match`) and logs it.
    Refuse,
}

impl UnknownDestinations {
    /// Whether this is the default, which manifests leave out.
    pub fn is_passthrough(&self) -> bool {
        *self == UnknownDestinations::Passthrough
    }
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
