//! What the model is fed: plain values in the shape watches deliver, one object at a time.
//! The edges (the Kubernetes watches, the local YAML loader) convert API objects into these.

use std::{collections::BTreeMap, fmt, net::IpAddr};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use remora_api::{SidecarPolicy, TrafficRoute, ValidationSettings};

use crate::config::Addressing;

/// Names a namespaced object. The default, both names empty, sorts before every other key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Empty for cluster-scoped objects (namespaces).
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl ObjectKey {
    /// The key of `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of an API object; a missing namespace or name reads as empty.
    pub fn from_meta(meta: &ObjectMeta) -> ObjectKey {
        ObjectKey::new(
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Kubernetes labels, sorted by key.
pub type Labels = BTreeMap<String, String>;

/// A namespace: only its labels matter, which root policies select.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// The namespace's name.
    pub name: String,
    /// Its labels.
    pub labels: Labels,
}

/// A Gateway API `ReferenceGrant`: which routes in other namespaces may send traffic to
/// Services in its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferenceGrant {
    /// Its namespace: the namespace of the Services it opens.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The referring kinds it admits: (group, kind, namespace).
    pub from: Vec<(String, String, String)>,
    /// The Services it opens: `None` for every Service of the namespace, else by name.
    /// Entries for kinds other than core Services are left out: routes reference nothing else.
    pub to: Vec<Option<String>>,
}

impl ReferenceGrant {
    /// Whether a route of `kind` (`group`, `kind`) in namespace `from` may send to the
    /// Service named `service` in this grant's namespace.
    pub fn admits(&self, (group, kind): (&str, &str), from: &str, service: &str) -> bool {
        self.from
            .iter()
            .any(|(g, k, ns)| g == group && k == kind && ns == from)
            && self
                .to
                .iter()
                .any(|n| n.as_deref().is_none_or(|n| n == service))
    }
}

/// The protocol of a Service port, from its `appProtocol` or its name (`http`, `http-web`,
/// `grpc`, `h2c`, `tcp-db`, ...). A port that says neither is treated as TCP: that always
/// works, while treating a TCP port as HTTP breaks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// HTTP/1.1.
    Http,
    /// HTTP/2 without TLS, including gRPC.
    Http2,
    /// Opaque bytes: routed by address and port, never by request.
    Tcp,
}

impl Protocol {
    /// Reads the protocol from a port's `appProtocol` and name.
    pub fn detect(app_protocol: Option<&str>, port_name: Option<&str>) -> Protocol {
        let from = |s: &str| match s.to_ascii_lowercase().as_str() {
            "http" | "http1" | "http/1.1" | "kubernetes.io/http" => Some(Protocol::Http),
            "http2" | "h2c" | "grpc" | "kubernetes.io/h2c" => Some(Protocol::Http2),
            "tcp" => Some(Protocol::Tcp),
            _ => None,
        };
        app_protocol
            .and_then(from)
            .or_else(|| port_name.and_then(|n| from(n.split('-').next().unwrap_or(n))))
            .unwrap_or(Protocol::Tcp)
    }

    /// Whether requests can be routed (HTTP/1.1 or HTTP/2).
    pub fn is_http(self) -> bool {
        self != Protocol::Tcp
    }
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Names the EndpointSlice port it maps to (`None`: a Service with one unnamed port).
    pub name: Option<String>,
    /// The port clients connect to.
    pub port: u16,
    /// What the port speaks.
    pub protocol: Protocol,
}

/// A Service: a name and ports that clients reach, served by the endpoints of its slices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// `None` for headless Services.
    pub cluster_ip: Option<IpAddr>,
    /// Its ports, each routed on its own.
    pub ports: Vec<ServicePort>,
}

impl Service {
    /// The Service's key.
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(&self.namespace, &self.name)
    }

    /// The port with this number, if the Service has it.
    pub fn port(&self, port: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == port)
    }
}

/// One EndpointSlice (or, on servers without them, the `Endpoints` object) of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSlice {
    /// The slice's namespace, which is its Service's.
    pub namespace: String,
    /// The slice's own name (not the Service's).
    pub name: String,
    /// The Service the slice belongs to.
    pub service: String,
    /// Service port name → the port the endpoints listen on.
    pub ports: Vec<EndpointPort>,
    /// The addresses in the slice, ready or not.
    pub endpoints: Vec<Endpoint>,
}

/// The port endpoints listen on for one Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointPort {
    /// Matches the Service port of the same name (`None` for a Service with one unnamed port).
    pub name: Option<String>,
    /// The port on the endpoints' addresses.
    pub port: u16,
}

/// One address in an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The address (a pod's IP).
    pub address: IpAddr,
    /// Only ready endpoints receive traffic.
    pub ready: bool,
    /// The zone the slice reports for it.
    pub zone: Option<String>,
    /// The pod behind the endpoint, whose labels decide which subsets it belongs to.
    pub pod: Option<String>,
}

/// A pod. Pods with a sidecar are proxies; the labels of every pod behind an endpoint decide
/// subset membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// Its labels, which policy selectors and route subsets read.
    pub labels: Labels,
    /// The service account it runs as.
    pub service_account: String,
    /// `None` until the pod is scheduled and has an address.
    pub ip: Option<IpAddr>,
    /// Carries a Remora sidecar.
    pub sidecar: bool,
    /// The ports the pod's containers declare, which inbound listeners serve.
    pub ports: Vec<ContainerPort>,
}

/// A port a container of a pod declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPort {
    /// The port number.
    pub port: u16,
    /// What it speaks, read from the port's name like a Service port's.
    pub protocol: Protocol,
}

/// Settings of the mesh as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshSettings {
    /// Policies here may cover other namespaces through their `namespaceSelector`.
    pub root_namespace: String,
    /// Namespaces with this label set to `enabled` are in the mesh; a root policy without a
    /// namespace selector covers exactly them.
    pub mesh_label: String,
    /// The DNS suffix of the cluster (`cluster.local`), in host and cluster names.
    pub cluster_domain: String,
    /// Whether applications call the proxies on purpose or their traffic is redirected.
    pub addressing: Addressing,
    /// Workload identity: `Some` when every proxy holds a certificate of the mesh, so
    /// sidecars speak mutual TLS to each other as their policies' `mtls.mode` says. Only
    /// captured addressing uses it; explicit addressing (local mode) stays plaintext.
    pub identity: Option<IdentitySettings>,
    /// What validating routes and policies takes from the control plane: the largest RE2
    /// program a regex may compile to, the limit every proxy's bootstrap sets too.
    pub validation: ValidationSettings,
}

impl Default for MeshSettings {
    fn default() -> Self {
        MeshSettings {
            root_namespace: "remora-system".into(),
            mesh_label: "remora.dev/mesh".into(),
            cluster_domain: "cluster.local".into(),
            addressing: Addressing::Explicit,
            identity: None,
            validation: ValidationSettings::default(),
        }
    }
}

impl MeshSettings {
    /// The identity settings when sidecars speak mutual TLS: identity is on and traffic is
    /// captured.
    pub fn mtls(&self) -> Option<&IdentitySettings> {
        self.identity
            .as_ref()
            .filter(|_| self.addressing == Addressing::Captured)
    }
}

/// The workload identities of the mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentitySettings {
    /// The trust domain of every workload's SPIFFE ID
    /// (`spiffe://<trust domain>/ns/<namespace>/sa/<service account>`), e.g. `cluster.local`.
    pub trust_domain: String,
}

/// One object of any kind the model reads.
#[derive(Clone, Debug)]
pub enum Object {
    /// A namespace.
    Namespace(Namespace),
    /// A Service.
    Service(Service),
    /// An EndpointSlice.
    EndpointSlice(EndpointSlice),
    /// A pod.
    Pod(Pod),
    /// A policy as the API server holds it, validated when applied.
    SidecarPolicy(Box<SidecarPolicy>),
    /// A route as the API server holds it, validated when applied.
    TrafficRoute(Box<TrafficRoute>),
    /// A grant for cross-namespace references.
    ReferenceGrant(ReferenceGrant),
    /// A Gateway API `HTTPRoute`, validated when applied; only one with a Service parent
    /// is the mesh's.
    HttpRoute(Box<remora_api::gateway::HttpRoute>),
    /// A Gateway API `GRPCRoute`, likewise.
    GrpcRoute(Box<remora_api::gateway::GrpcRoute>),
    /// An access policy as the API server holds it, validated when applied.
    AccessPolicy(Box<remora_api::AccessPolicy>),
}

/// The kinds of [`Object`], for deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// [`Object::Namespace`].
    Namespace,
    /// [`Object::Service`].
    Service,
    /// [`Object::EndpointSlice`].
    EndpointSlice,
    /// [`Object::Pod`].
    Pod,
    /// [`Object::SidecarPolicy`].
    SidecarPolicy,
    /// [`Object::TrafficRoute`].
    TrafficRoute,
    /// [`Object::ReferenceGrant`].
    ReferenceGrant,
    /// [`Object::HttpRoute`].
    HttpRoute,
    /// [`Object::GrpcRoute`].
    GrpcRoute,
    /// [`Object::AccessPolicy`].
    AccessPolicy,
}

/// A change as a watch delivers it.
#[derive(Clone, Debug)]
pub enum Event {
    /// The object was created or changed: this is what it is now.
    Upsert(Object),
    /// Namespaces are deleted with an empty `namespace` in the key.
    Delete(Kind, ObjectKey),
}

impl Object {
    /// Its kind as manifests write it, e.g. `HTTPRoute`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Object::Namespace(_) => "Namespace",
            Object::Service(_) => "Service",
            Object::EndpointSlice(_) => "EndpointSlice",
            Object::Pod(_) => "Pod",
            Object::SidecarPolicy(_) => "SidecarPolicy",
            Object::TrafficRoute(_) => "TrafficRoute",
            Object::ReferenceGrant(_) => "ReferenceGrant",
            Object::HttpRoute(_) => "HTTPRoute",
            Object::GrpcRoute(_) => "GRPCRoute",
            Object::AccessPolicy(_) => "AccessPolicy",
        }
    }

    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Pod(_) => Kind::Pod,
            Object::SidecarPolicy(_) => Kind::SidecarPolicy,
            Object::TrafficRoute(_) => Kind::TrafficRoute,
            Object::ReferenceGrant(_) => Kind::ReferenceGrant,
            Object::HttpRoute(_) => Kind::HttpRoute,
            Object::GrpcRoute(_) => Kind::GrpcRoute,
            Object::AccessPolicy(_) => Kind::AccessPolicy,
        }
    }

    /// Its key (a namespace's has an empty namespace).
    pub fn key(&self) -> ObjectKey {
        match self {
            Object::Namespace(n) => ObjectKey::new("", &n.name),
            Object::Service(s) => s.key(),
            Object::EndpointSlice(s) => ObjectKey::new(&s.namespace, &s.name),
            Object::Pod(p) => ObjectKey::new(&p.namespace, &p.name),
            Object::SidecarPolicy(p) => ObjectKey::from_meta(&p.metadata),
            Object::TrafficRoute(r) => ObjectKey::from_meta(&r.metadata),
            Object::ReferenceGrant(g) => ObjectKey::new(&g.namespace, &g.name),
            Object::HttpRoute(r) => ObjectKey::from_meta(&r.metadata),
            Object::GrpcRoute(r) => ObjectKey::from_meta(&r.metadata),
            Object::AccessPolicy(p) => ObjectKey::from_meta(&p.metadata),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_detection() {
        assert_eq!(Protocol::detect(Some("grpc"), Some("tcp")), Protocol::Http2);
        assert_eq!(Protocol::detect(None, Some("http-web")), Protocol::Http);
        assert_eq!(Protocol::detect(None, Some("http2")), Protocol::Http2);
        assert_eq!(Protocol::detect(None, Some("tcp-postgres")), Protocol::Tcp);
        assert_eq!(Protocol::detect(None, Some("web")), Protocol::Tcp);
        assert_eq!(Protocol::detect(None, None), Protocol::Tcp);
        assert_eq!(
            Protocol::detect(Some("kubernetes.io/h2c"), None),
            Protocol::Http2
        );
    }
}
