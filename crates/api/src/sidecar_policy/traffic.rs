//! Traffic defaults and the egress scope of the selected pods.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Duration, traffic_route::Retry};

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
#[schemars(transform = crate::schema::plain_enum)]
pub enum AccessLogFormat {
    /// One line of text per request.
    #[default]
    Text,
    /// One JSON object per request.
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
