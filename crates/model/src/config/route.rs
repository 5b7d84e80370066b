//! Route configs in our own terms: the virtual hosts of a listener's port, their routes, and
//! what each route does with a request.

use std::{sync::Arc, time::Duration};

use serde::Serialize;

use super::{Named, NamedSet};

/// A set of virtual hosts, one per destination Service, served by one listener.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct RouteConfig {
    /// The outbound port number, or `inbound|<port>`; the listener names it so.
    pub name: Arc<str>,
    /// The hosts, each matched by the request's `Host` header.
    pub virtual_hosts: VirtualHosts,
}

/// Virtual hosts by name, in name order: a class's route config for a port can hold a
/// thousand hosts, and when one Service's routing changes the next version shares every other
/// host with the last and is hashed without reading them.
pub type VirtualHosts = NamedSet<VirtualHost>;

impl Named for VirtualHost {
    fn name(&self) -> &Arc<str> {
        &self.name
    }
}

/// The routes of one Service port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct VirtualHost {
    /// `<service>.<namespace>.svc.<cluster domain>:<port>`.
    pub name: Arc<str>,
    /// The host names (with and without the port) clients use for the Service.
    pub domains: Vec<String>,
    /// Tried in order; the last one catches every request no rule took.
    pub routes: Vec<Route>,
    /// Who may send which requests: an inbound host of a workload access policies protect.
    /// The rules ride with the routes, not the listener, so that an edit reaches the
    /// connections already open (a changed listener chain would keep serving them with the
    /// old rules until they drain).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authz: Option<Arc<super::Authorization>>,
}

/// Which requests a route takes, and what it does with them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Route {
    /// `<namespace>/<route>/<rule>` for rules of a TrafficRoute, `default` for the catch-all.
    pub name: String,
    /// Any entry matching takes the request; no entries means every request.
    pub matches: Vec<RouteMatch>,
    /// Forward the request or redirect the client.
    pub action: RouteAction,
    /// Header changes to the request before it is sent on.
    pub request_headers: HeaderChanges,
    /// Header changes to the response before it reaches the client.
    pub response_headers: HeaderChanges,
    /// Delays or failures injected into a share of the requests.
    pub fault: Option<Fault>,
}

/// Conditions a request must all meet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct RouteMatch {
    /// A condition on the path.
    pub path: PathMatch,
    /// Conditions on headers (names lowercased); all must hold.
    pub headers: Vec<StringMatch>,
    /// Conditions on query parameters; all must hold.
    pub query_params: Vec<StringMatch>,
    /// The HTTP method (`GET`, ...), if only one is taken.
    pub method: Option<&'static str>,
}

/// A condition on a request's path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum PathMatch {
    /// Every path.
    #[default]
    Any,
    /// Exactly this path.
    Exact(String),
    /// Whole path segments: `/api` matches `/api` and `/api/v1`, not `/apis`.
    Prefix(String),
    /// RE2, matching the whole path.
    Regex(String),
}

/// A condition on a header or query parameter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct StringMatch {
    /// The header or parameter the condition reads; it must be present.
    pub name: String,
    /// What its value must be.
    pub value: ValueMatch,
}

/// What a header or query parameter value must be.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ValueMatch {
    /// Exactly this string.
    Exact(String),
    /// An RE2 expression matching the whole value.
    Regex(String),
}

/// What a route does with the requests it takes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum RouteAction {
    /// Sends the request on to clusters.
    Forward(Forward),
    /// Answers with a redirect; nothing is sent on.
    Redirect(Redirect),
}

/// How a request is sent on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Forward {
    /// Never empty; weights are relative.
    pub clusters: Vec<WeightedCluster>,
    /// The whole request, retries included; `None` means no limit.
    pub timeout: Option<Duration>,
    /// When and how often a failed request is tried again; `None` never.
    pub retry: Option<RetryPolicy>,
    /// Changes to the host or path before the request is sent on.
    pub rewrite: Option<Rewrite>,
    /// Clusters that get a copy of a share of the requests, their answers ignored.
    pub mirrors: Vec<Mirror>,
}

/// A share of traffic. A backend that did not resolve keeps its share, sent to no endpoint,
/// so a missing Service fails the requests meant for it instead of shifting them elsewhere.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct WeightedCluster {
    /// Where the share goes.
    pub target: Target,
    /// The share, relative to the others of the same split.
    pub weight: u32,
}

/// Where a share of traffic goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Target {
    /// The cluster of this name.
    Cluster(Arc<str>),
    /// The backend does not exist (see the route's problems); requests get 503.
    Unresolved,
    /// The backend of an `HTTPRoute` that does not exist or may not be used (see the
    /// route's problems); requests get 500, as Gateway API requires.
    Invalid,
}

/// When and how often a failed request is tried again.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct RetryPolicy {
    /// Retries after the first try (at most 10).
    pub attempts: u32,
    /// The limit on each try; `None` leaves only the whole request's timeout.
    pub per_try_timeout: Option<Duration>,
    /// The base interval between tries; `None` (or zero) leaves Envoy's default.
    pub backoff: Option<Duration>,
    /// Envoy-style condition names (`5xx`, `connect-failure`, ...), sorted.
    pub retry_on: Vec<&'static str>,
    /// Response statuses that are retried too, sorted.
    pub status_codes: Vec<u32>,
}

/// Changes to a request before it is sent on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Rewrite {
    /// The new `Host` header.
    pub host: Option<String>,
    /// The new path.
    pub path: Option<PathRewrite>,
}

/// A new path for a request, or for the client to follow.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum PathRewrite {
    /// Replaces the whole path.
    Full(String),
    /// Replaces the prefix the route's `Prefix` match matched.
    Prefix(String),
}

/// A copy of a share of the requests, sent to another cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Mirror {
    /// Where the copies go (none are sent to an unresolved backend).
    pub cluster: Target,
    /// Out of 100.
    pub percent: u32,
}

/// A redirect sent to the client; each part left `None` keeps the request's own.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Redirect {
    /// `http` or `https`.
    pub scheme: Option<&'static str>,
    /// The host to go to.
    pub host: Option<String>,
    /// The path to go to.
    pub path: Option<PathRewrite>,
    /// The port to go to.
    pub port: Option<u16>,
    /// The response status (302 unless the route says otherwise).
    pub status: u16,
}

/// Changes to the headers of a request or response. Names are lowercased.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct HeaderChanges {
    /// Headers set to a value, replacing any the message has.
    pub set: Vec<(String, String)>,
    /// Headers added beside any of the same name the message has.
    pub add: Vec<(String, String)>,
    /// Headers removed.
    pub remove: Vec<String>,
}

impl HeaderChanges {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// Faults injected into a share of requests, to test how clients cope.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Fault {
    /// Delay and share of requests out of 100.
    pub delay: Option<(Duration, u32)>,
    /// Status and share of requests out of 100.
    pub abort: Option<(u16, u32)>,
}
