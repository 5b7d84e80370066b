//! Timeouts, retries and injected faults.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Duration;

/// Request timeouts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// How long the whole request may take, retries included, before the client gets a 504.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Duration>,
    /// How long one attempt at a backend may take; at most `request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<Duration>,
}

/// When and how often a failed request is tried again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    /// Attempts after the first, 0 to 10.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10))]
    pub attempts: i32,
    /// The time limit of each attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    /// The first wait between attempts; it grows exponentially up to ten times this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
    /// Which failures are retried. Empty means connect-failure, refused-stream and
    /// unavailable-like 5xx answers (`gateway-error`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub retry_on: Vec<RetryOn>,
    /// HTTP status codes that are retried, in addition to `retryOn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(range(min = 400, max = 599)))]
    pub codes: Vec<i32>,
}

/// A failure that is retried: 5xx (any 5xx answer), gateway-error (502, 503, 504), reset
/// (the connection broke), connect-failure, refused-stream, retriable-4xx (409).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[schemars(transform = crate::schema::plain_enum)]
pub enum RetryOn {
    /// `5xx`: any 5xx answer, or no answer at all (a reset or a timeout).
    #[serde(rename = "5xx")]
    ServerError,
    /// `gateway-error`: a 502, 503 or 504 answer.
    #[serde(rename = "gateway-error")]
    GatewayError,
    /// `reset`: the connection broke or timed out before an answer.
    #[serde(rename = "reset")]
    Reset,
    /// `connect-failure`: no connection to the backend could be made.
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    /// `refused-stream`: the backend refused the HTTP/2 stream (`REFUSED_STREAM`).
    #[serde(rename = "refused-stream")]
    RefusedStream,
    /// `retriable-4xx`: a 409 answer.
    #[serde(rename = "retriable-4xx")]
    Retriable4xx,
}

impl RetryOn {
    /// The name Envoy's `retry_on` uses, which is also the name users write.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryOn::ServerError => "5xx",
            RetryOn::GatewayError => "gateway-error",
            RetryOn::Reset => "reset",
            RetryOn::ConnectFailure => "connect-failure",
            RetryOn::RefusedStream => "refused-stream",
            RetryOn::Retriable4xx => "retriable-4xx",
        }
    }
}

/// Faults injected into requests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    /// Delays a share of requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    /// Answers a share of requests with an error status instead of forwarding them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

/// An injected delay.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FaultDelay {
    /// How long to hold each delayed request.
    pub fixed_delay: Duration,
    /// The share of requests to delay, 0 to 100.
    #[serde(default = "super::default_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub percent: i32,
}

/// An injected error.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FaultAbort {
    /// The HTTP status to answer with, 200 to 599.
    #[schemars(range(min = 200, max = 599))]
    pub http_status: i32,
    /// The share of requests to abort, 0 to 100.
    #[serde(default = "super::default_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub percent: i32,
}
