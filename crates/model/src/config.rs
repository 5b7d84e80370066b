//! The config of one proxy, in a form of our own that knows nothing of Envoy. The translation
//! to Envoy's resources lives in `remora-envoy`; everything here is plain data, hashable, and
//! ordered, so equal inputs give equal values.

use std::{
    collections::BTreeMap,
    fmt,
    hash::{Hash, Hasher},
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use remora_api::sidecar_policy::AccessLogFormat;
use serde::{Serialize, ser::SerializeSeq};

/// A proxy: the pod it runs in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ProxyKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ProxyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The four kinds of resource a proxy receives, in the order that keeps traffic flowing
/// when they change: clusters before the endpoints that fill them, listeners before the
/// routes they name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum ResourceType {
    Cluster,
    Endpoints,
    Listener,
    RouteConfig,
}

impl ResourceType {
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
    pub kind: ResourceType,
    pub name: Arc<str>,
}

/// A resource with a hash of its content, computed once. Equal hashes mean equal content
/// (xxh3, 64 bits: a collision among one proxy's few thousand resources is not a concern).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Versioned<T> {
    #[serde(skip)]
    pub hash: u64,
    pub value: T,
}

impl<T: Hash> Versioned<T> {
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
    Cluster(Arc<Versioned<Cluster>>),
    Endpoints(Arc<Versioned<ClusterEndpoints>>),
    Listener(Arc<Versioned<Listener>>),
    RouteConfig(Arc<Versioned<RouteConfig>>),
}

impl Resource {
    pub fn hash(&self) -> u64 {
        match self {
            Resource::Cluster(r) => r.hash,
            Resource::Endpoints(r) => r.hash,
            Resource::Listener(r) => r.hash,
            Resource::RouteConfig(r) => r.hash,
        }
    }

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

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Listener {
    pub name: Arc<str>,
    pub direction: Direction,
    pub address: BindAddress,
    pub port: u16,
    pub protocol: ListenerProtocol,
    pub access_log: Option<AccessLogFormat>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ListenerProtocol {
    /// HTTP, routed by the named route config.
    Http { route_config: Arc<str> },
    /// Plain TCP, split between clusters by weight.
    Tcp { clusters: Vec<WeightedCluster> },
}

/// A set of virtual hosts, one per destination Service, served by one listener.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct RouteConfig {
    pub name: Arc<str>,
    pub virtual_hosts: VirtualHosts,
}

/// Virtual hosts by name, in name order.
///
/// A persistent map with a running hash: a class's route config for a port can hold a
/// thousand hosts, and when one Service's routing changes, the next version of the config
/// shares every other host with the last and is hashed without reading them.
#[derive(Clone, Debug, Default)]
pub struct VirtualHosts {
    hosts: imbl::OrdMap<Arc<str>, Arc<Versioned<VirtualHost>>>,
    /// Sum of the mixed hashes of the hosts: independent of insertion order, and updated in
    /// constant time.
    hash: u64,
}

impl VirtualHosts {
    /// Adds a host, replacing one of the same name.
    pub fn insert(&mut self, host: Arc<Versioned<VirtualHost>>) {
        self.hash = self.hash.wrapping_add(mix(host.hash));
        if let Some(old) = self.hosts.insert(host.value.name.clone(), host) {
            self.hash = self.hash.wrapping_sub(mix(old.hash));
        }
    }

    pub fn remove(&mut self, name: &str) {
        if let Some(old) = self.hosts.remove(name) {
            self.hash = self.hash.wrapping_sub(mix(old.hash));
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Versioned<VirtualHost>>> {
        self.hosts.values()
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

/// Spreads a content hash over all 64 bits (SplitMix64's finalizer), so that the sum of
/// several is as good a fingerprint of the set as any one of them is of its host.
fn mix(mut h: u64) -> u64 {
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl FromIterator<Arc<Versioned<VirtualHost>>> for VirtualHosts {
    fn from_iter<I: IntoIterator<Item = Arc<Versioned<VirtualHost>>>>(iter: I) -> Self {
        let mut hosts = VirtualHosts::default();
        for host in iter {
            hosts.insert(host);
        }
        hosts
    }
}

impl<'a> IntoIterator for &'a VirtualHosts {
    type Item = &'a Arc<Versioned<VirtualHost>>;
    type IntoIter = imbl::ordmap::Values<
        'a,
        Arc<str>,
        Arc<Versioned<VirtualHost>>,
        imbl::shared_ptr::DefaultSharedPtr,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.hosts.values()
    }
}

impl PartialEq for VirtualHosts {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.hosts == other.hosts
    }
}

impl Eq for VirtualHosts {}

impl Hash for VirtualHosts {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.hosts.len().hash(state);
        self.hash.hash(state);
    }
}

impl Serialize for VirtualHosts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.hosts.len()))?;
        for host in self.hosts.values() {
            seq.serialize_element(host)?;
        }
        seq.end()
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
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Route {
    /// `<namespace>/<route>/<rule>` for rules of a TrafficRoute, `default` for the catch-all.
    pub name: String,
    /// Any entry matching takes the request; no entries means every request.
    pub matches: Vec<RouteMatch>,
    pub action: RouteAction,
    pub request_headers: HeaderChanges,
    pub response_headers: HeaderChanges,
    pub fault: Option<Fault>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct RouteMatch {
    pub path: PathMatch,
    pub headers: Vec<StringMatch>,
    pub query_params: Vec<StringMatch>,
    pub method: Option<&'static str>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum PathMatch {
    #[default]
    Any,
    Exact(String),
    /// Whole path segments: `/api` matches `/api` and `/api/v1`, not `/apis`.
    Prefix(String),
    /// RE2, matching the whole path.
    Regex(String),
}

/// A condition on a header or query parameter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct StringMatch {
    pub name: String,
    pub value: ValueMatch,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ValueMatch {
    Exact(String),
    Regex(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum RouteAction {
    Forward(Forward),
    Redirect(Redirect),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Forward {
    /// Never empty; weights are relative.
    pub clusters: Vec<WeightedCluster>,
    /// The whole request, retries included; `None` means no limit.
    pub timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    pub rewrite: Option<Rewrite>,
    pub mirrors: Vec<Mirror>,
}

/// A share of traffic. A backend that did not resolve keeps its share, sent to no endpoint,
/// so a missing Service fails the requests meant for it instead of shifting them elsewhere.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct WeightedCluster {
    pub target: Target,
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Target {
    Cluster(Arc<str>),
    /// The backend does not exist (see the route's problems); requests get 503.
    Unresolved,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    pub backoff: Option<Duration>,
    /// Envoy-style condition names (`5xx`, `connect-failure`, ...), sorted.
    pub retry_on: Vec<&'static str>,
    pub status_codes: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Rewrite {
    pub host: Option<String>,
    pub path: Option<PathRewrite>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum PathRewrite {
    Full(String),
    /// Replaces the prefix the route's `Prefix` match matched.
    Prefix(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Mirror {
    pub cluster: Target,
    /// Out of 100.
    pub percent: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Redirect {
    pub scheme: Option<&'static str>,
    pub host: Option<String>,
    pub path: Option<PathRewrite>,
    pub port: Option<u16>,
    pub status: u16,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct HeaderChanges {
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

impl HeaderChanges {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Fault {
    /// Delay and share of requests out of 100.
    pub delay: Option<(Duration, u32)>,
    /// Status and share of requests out of 100.
    pub abort: Option<(u16, u32)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Cluster {
    /// `outbound|<port>|<subset>|<service>.<namespace>.svc.<domain>` or `inbound|<port>`.
    pub name: Arc<str>,
    pub connect_timeout: Duration,
    pub discovery: Discovery,
    pub outlier_detection: Option<OutlierDetection>,
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Speak HTTP/2 to the endpoints (gRPC and h2c ports).
    pub http2: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Discovery {
    /// Endpoints come as a separate `Endpoints` resource of the same name.
    Eds,
    /// Fixed addresses (the local application, for inbound clusters).
    Static(Vec<SocketAddr>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct OutlierDetection {
    pub consecutive_errors: u32,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct CircuitBreaker {
    pub max_connections: Option<u32>,
    pub max_pending_requests: Option<u32>,
    pub max_requests: Option<u32>,
    pub max_retries: Option<u32>,
}

/// The ready endpoints of one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ClusterEndpoints {
    pub cluster: Arc<str>,
    /// Sorted by address.
    pub endpoints: Vec<Endpoint>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub zone: Option<String>,
}
