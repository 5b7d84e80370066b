//! The config of one proxy, in a form of our own that knows nothing of Envoy. The translation
//! to Envoy's resources lives in `remora-envoy`; everything here is plain data, hashable, and
//! ordered, so equal inputs give equal values.

use std::{
    collections::BTreeMap,
    hash::{Hash, Hasher},
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use remora_api::sidecar_policy::AccessLogFormat;
use serde::{Serialize, ser::SerializeSeq};

mod authz;
mod mtls;
mod named;
mod route;

pub use authz::{
    AccessRule, Authorization, Caller, HttpConditions, IdentityMatch, parse_rule_name, rule_name,
};
pub use mtls::{CaptureMtls, InboundMtls, MtlsPassthrough, OutboundMtls};
pub use named::{Named, NamedSet};
pub use route::*;

/// The four kinds of resource a proxy receives, in the order that keeps traffic flowing
/// when they change: clusters before the endpoints that fill them, listeners before the
/// routes they name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum ResourceType {
    /// An upstream: how to connect to a Service port (or the local application).
    Cluster,
    /// The ready addresses of one EDS cluster.
    Endpoints,
    /// Where the proxy accepts connections, and what it does with them.
    Listener,
    /// The virtual hosts and routes an HTTP listener names.
    RouteConfig,
}

impl ResourceType {
    /// Every type, in the order above.
    pub const ALL: [ResourceType; 4] = [
        ResourceType::Cluster,
        ResourceType::Endpoints,
        ResourceType::Listener,
        ResourceType::RouteConfig,
    ];
}

/// Names one resource of one type.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ResourceKey {
    /// The resource's type; keys sort by it first, so one type is one range.
    pub kind: ResourceType,
    /// Unique among the resources of its type in one proxy's config.
    pub name: Arc<str>,
}

/// A resource with a hash of its content, computed once. Equal hashes mean equal content
/// (xxh3, 64 bits: a collision among one proxy's few thousand resources is not a concern).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Versioned<T> {
    /// The xxh3 hash of `value`.
    #[serde(skip)]
    pub hash: u64,
    /// The resource itself.
    pub value: T,
}

impl<T: Hash> Versioned<T> {
    /// Hashes `value` and shares it.
    pub fn new(value: T) -> Arc<Self> {
        let hash = content_hash(&value);
        Arc::new(Versioned { hash, value })
    }
}

/// Compared by content hash, which is what makes two resources the same for a proxy.
impl<T> PartialEq for Versioned<T> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
    }
}

impl<T> Eq for Versioned<T> {}

impl<T> Hash for Versioned<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.hash.hash(state);
    }
}

pub(crate) fn content_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    value.hash(&mut h);
    h.finish()
}

/// One resource of any type.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Resource {
    /// A cluster.
    Cluster(Arc<Versioned<Cluster>>),
    /// The endpoints of an EDS cluster.
    Endpoints(Arc<Versioned<ClusterEndpoints>>),
    /// A listener.
    Listener(Arc<Versioned<Listener>>),
    /// A route config.
    RouteConfig(Arc<Versioned<RouteConfig>>),
}

impl Resource {
    /// The content hash: equal for equal content, whatever the type.
    pub fn hash(&self) -> u64 {
        match self {
            Resource::Cluster(r) => r.hash,
            Resource::Endpoints(r) => r.hash,
            Resource::Listener(r) => r.hash,
            Resource::RouteConfig(r) => r.hash,
        }
    }

    /// The type of resource this is.
    pub fn kind(&self) -> ResourceType {
        match self {
            Resource::Cluster(_) => ResourceType::Cluster,
            Resource::Endpoints(_) => ResourceType::Endpoints,
            Resource::Listener(_) => ResourceType::Listener,
            Resource::RouteConfig(_) => ResourceType::RouteConfig,
        }
    }
}

/// Everything one proxy runs, by resource.
#[derive(Clone, Debug, Default)]
pub struct ProxyConfig {
    /// Every resource, sorted by type, then name.
    pub resources: BTreeMap<ResourceKey, Resource>,
}

/// Written as a list, since resource keys are not strings; each entry carries its kind, name
/// and content version beside the content.
impl Serialize for ProxyConfig {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Entry<'a> {
            kind: ResourceType,
            name: &'a str,
            version: String,
            config: &'a Resource,
        }
        let mut seq = serializer.serialize_seq(Some(self.resources.len()))?;
        for (key, resource) in &self.resources {
            seq.serialize_element(&Entry {
                kind: key.kind,
                name: &key.name,
                version: format!("{:016x}", resource.hash()),
                config: resource,
            })?;
        }
        seq.end()
    }
}

impl ProxyConfig {
    /// Resource names and content hashes: what a comparison of two configs needs.
    pub fn versions(&self) -> BTreeMap<ResourceKey, u64> {
        self.resources
            .iter()
            .map(|(k, r)| (k.clone(), r.hash()))
            .collect()
    }

    /// The resources of one type, in name order.
    pub fn of_type(&self, kind: ResourceType) -> impl Iterator<Item = (&ResourceKey, &Resource)> {
        self.resources.iter().filter(move |(k, _)| k.kind == kind)
    }
}

/// Which way a listener faces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Direction {
    /// Traffic to the pod's own application.
    Inbound,
    /// Traffic the application sends to other Services.
    Outbound,
}

/// Where a listener accepts connections.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum BindAddress {
    /// Every address of the pod (outbound HTTP listeners, one per port, tell Services apart by
    /// the Host header).
    Any,
    /// One address: a Service's cluster IP (outbound TCP) or the pod's IP (inbound).
    Ip(IpAddr),
}

/// How the proxy is addressed: which of the two listener layouts the model builds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum Addressing {
    /// Applications call the proxy on purpose: a listener per outbound port (HTTP on every
    /// address, TCP on the Service's IP) and per inbound port (on the pod's IP). Local mode
    /// uses it, on loopback without privileges.
    #[default]
    Explicit,
    /// The pod's traffic is redirected to the proxy (`remora init-network`): one outbound and
    /// one inbound capture listener, each with a filter chain per destination. Applications
    /// need no awareness of the proxy; what a cluster install uses.
    Captured,
}

/// Where the proxy accepts connections, and what it does with them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Listener {
    /// Explicit: `outbound|<port>` (HTTP), `outbound|<ip>|<port>` (TCP) or `inbound|<port>`;
    /// captured: `outbound` or `inbound`.
    pub name: Arc<str>,
    /// Whether it serves the pod's application or the Services it calls.
    pub direction: Direction,
    /// The port it binds.
    pub port: u16,
    /// Which connections it takes and how it handles them.
    pub accepts: Accepts,
    /// Logs each request or connection in this format; `None` logs nothing.
    pub access_log: Option<AccessLogFormat>,
}

/// Which connections a listener takes, and what it does with them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Accepts {
    /// Those sent to the address it binds, all handled alike (explicit addressing).
    Bound {
        /// The address it binds.
        address: BindAddress,
        /// How it handles them.
        protocol: ListenerProtocol,
        /// Who may connect, for an inbound listener of a workload access policies protect.
        #[serde(skip_serializing_if = "Option::is_none")]
        authz: Option<Arc<Authorization>>,
    },
    /// Those redirected to its capture port, each handled by the filter chain of its original
    /// destination (captured addressing). It binds every address of the pod.
    Captured {
        /// One per destination, by name.
        chains: FilterChains,
        /// What happens to a connection no chain takes (and, with `mtls`, is no mutual TLS
        /// the listener passes through).
        unmatched: Unmatched,
        /// The inbound listener's, when the mesh has workload identity: the listener tells
        /// TLS from plaintext, and may pass mutual TLS to undeclared ports through.
        #[serde(skip_serializing_if = "Option::is_none")]
        mtls: Option<CaptureMtls>,
        /// Who may connect through the passthrough to ports no chain takes, for the inbound
        /// listener of a workload access policies protect.
        #[serde(skip_serializing_if = "Option::is_none")]
        authz: Option<Arc<Authorization>>,
    },
}

/// The filter chains of a capture listener, by name.
pub type FilterChains = NamedSet<FilterChain>;

/// How a capture listener handles the connections to one destination.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct FilterChain {
    /// Outbound `<service>.<namespace>.svc.<domain>:<port>`, inbound `inbound|<port>`.
    pub name: Arc<str>,
    /// The original destination addresses it takes, sorted; empty takes any address.
    pub addresses: Vec<IpAddr>,
    /// The original destination port it takes.
    pub port: u16,
    /// How it handles them.
    pub protocol: ListenerProtocol,
    /// `Some`: it takes only mutual TLS from the mesh's sidecars, which it terminates (the
    /// chain `inbound|<port>|mtls` beside the plaintext `inbound|<port>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtls: Option<InboundMtls>,
    /// Who may connect (and, for HTTP, send what): an inbound chain of a workload access
    /// policies protect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authz: Option<Arc<Authorization>>,
}

impl Named for FilterChain {
    fn name(&self) -> &Arc<str> {
        &self.name
    }
}

/// What a capture listener does with a connection to a destination no chain takes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Unmatched {
    /// Sends it on unchanged, through this original-destination cluster.
    Passthrough {
        /// The cluster's name.
        cluster: Arc<str>,
    },
    /// Closes it.
    Refuse,
}

/// How a listener handles the connections it accepts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ListenerProtocol {
    /// HTTP, routed by the named route config.
    Http {
        /// The name of the route config that routes its requests.
        route_config: Arc<str>,
    },
    /// Plain TCP, split between clusters by weight.
    Tcp {
        /// Where connections go, and in which shares.
        clusters: Vec<WeightedCluster>,
    },
}

/// An upstream: a Service port (or a subset of its pods), or the local application.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Cluster {
    /// `outbound|<port>|<subset>|<service>.<namespace>.svc.<domain>` or `inbound|<port>`.
    pub name: Arc<str>,
    /// How long a new connection may take to open.
    pub connect_timeout: Duration,
    /// Where its endpoints come from.
    pub discovery: Discovery,
    /// Ejects endpoints that keep failing; `None` never does.
    pub outlier_detection: Option<OutlierDetection>,
    /// Limits on what is in flight to the cluster; `None` keeps Envoy's defaults.
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Speak HTTP/2 to the endpoints (gRPC and h2c ports).
    pub http2: bool,
    /// `Some`: mutual TLS to the endpoints that take it ([`Endpoint::mtls`]), plaintext to
    /// the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtls: Option<OutboundMtls>,
}

impl Cluster {
    /// A cluster that connects each connection to the address it was originally sent to:
    /// the passthrough of captured traffic the mesh does not route.
    pub fn original_destination(name: Arc<str>, connect_timeout: Duration) -> Cluster {
        Cluster {
            name,
            connect_timeout,
            discovery: Discovery::OriginalDestination,
            outlier_detection: None,
            circuit_breaker: None,
            http2: false,
            mtls: None,
        }
    }
}

/// Where a cluster's endpoints come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Discovery {
    /// Endpoints come as a separate `Endpoints` resource of the same name.
    Eds,
    /// Fixed addresses (the local application, for inbound clusters).
    Static(Vec<SocketAddr>),
    /// The address each connection was originally sent to (passthrough of captured traffic
    /// the mesh does not route).
    OriginalDestination,
}

/// When an endpoint that keeps failing is taken out of rotation, and for how long.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct OutlierDetection {
    /// Consecutive 5xx responses that eject an endpoint (at least 1).
    pub consecutive_errors: u32,
    /// How often endpoints are checked.
    pub interval: Duration,
    /// How long a first ejection lasts; each further one lasts longer.
    pub base_ejection_time: Duration,
    /// The most of a cluster's endpoints ejected at once, out of 100.
    pub max_ejection_percent: u32,
}

/// Limits on a cluster; `None` keeps Envoy's default for that limit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct CircuitBreaker {
    /// Open connections.
    pub max_connections: Option<u32>,
    /// Requests waiting for a connection.
    pub max_pending_requests: Option<u32>,
    /// Requests in flight.
    pub max_requests: Option<u32>,
    /// Retries in flight.
    pub max_retries: Option<u32>,
}

/// The ready endpoints of one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ClusterEndpoints {
    /// The name of the cluster they fill.
    pub cluster: Arc<str>,
    /// Sorted by address.
    pub endpoints: Vec<Endpoint>,
}

/// One ready endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Endpoint {
    /// The pod address and the port the Service port maps to.
    pub address: SocketAddr,
    /// The zone its EndpointSlice reports, for zone-aware routing.
    pub zone: Option<String>,
    /// Its pod's sidecar takes mutual TLS, which the cluster then speaks to it (when the
    /// cluster has [`Cluster::mtls`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mtls: bool,
}
