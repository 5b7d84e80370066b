//! Translation of the model's Envoy-independent proxy config into Envoy's v3 xDS resources.
//!
//! The model says what a proxy should do; this crate says it in Envoy's protobuf terms and
//! nothing else: no I/O, no state. [`translate`] turns one model [`Resource`] into one
//! [`EnvoyResource`], packed as a protobuf `Any` with a content version, ready for the xDS
//! server to send over ADS.
//!
//! Every resource that names another (a listener its route config, an EDS cluster its
//! endpoints, a route its clusters) names it by the model's own name, so a proxy's config is
//! consistent exactly when the model's is. The names the model does not provide are
//! [`UNRESOLVED_CLUSTER`] (see [`unresolved_cluster`]) and [`INVALID_BACKEND_CLUSTER`].
//!
//! Listeners come in the model's two layouts. With explicit addressing each listener binds one
//! address and port and has one filter chain. With captured addressing, where iptables
//! redirects the pod's connections to the proxy, there is one capture listener each way
//! (`outbound` on port 15001, `inbound` on 15006, both on every address). Its
//! `original_dst` listener filter restores the address a connection was sent to, and each
//! destination of the model is a filter chain matched on that port and address (an HTTP
//! connection manager over RDS or a TCP proxy, as an explicit listener would have). What no
//! chain takes either passes through, by a default chain to an `ORIGINAL_DST` cluster, with a
//! chain that closes connections sent to the capture port itself so the proxy never
//! connects to itself; or is refused: closed by Envoy, counted in its listener's
//! `no_filter_chain_match` (a capture listener's stat prefix is its name, so the counter is
//! `listener.outbound.no_filter_chain_match`) and logged in the listener's own access log.
//! The fields of a capture listener outside its chains never change with the chains nor with
//! that choice, since Envoy drains all of a listener's connections when such a field changes
//! but updates chains in place.
//!
//! With workload identity, sidecars speak mutual TLS to each other (`mtls`), with the
//! certificate and trust bundle their pod's identity agent serves over SDS ([`sds`]). The
//! inbound capture listener then also has a TLS inspector, whatever the proxy's mode: a
//! port's `inbound|<port>|mtls` chain takes TLS that offers the mesh's ALPN ([`MESH_ALPN`])
//! and terminates it (the HTTP application receives the caller's SPIFFE ID in
//! `x-forwarded-client-cert`), beside the plaintext `inbound|<port>` unless the mode is
//! `Strict`; [`MTLS_PASSTHROUGH_CHAIN`] terminates mutual TLS to undeclared ports. A cluster
//! of a Service with meshed pods speaks it to the endpoints marked for it
//! ([`MTLS_METADATA_KEY`] in [`TRANSPORT_SOCKET_MATCH`] metadata), checking the peer against
//! the Service's identities, and plaintext to the others. [`bootstrap`] adds TLS to the
//! control plane.
//!
//! A workload that access policies protect has its rules on its inbound listener (or, when
//! captured, on each inbound chain and on the listener for its passthrough chains). [`rbac`]
//! puts them in front of whatever handles the connection: RBAC HTTP filters before the
//! connection manager's others, RBAC network filters before the TCP proxy, one filter for
//! the deny step and one for the allow step, each with its audited rules as shadow rules.
//!
//! Equal inputs give byte-identical encodings, so the version (a hash of the bytes) changes
//! only when the content does. Prost encodes protobuf map fields from a `HashMap`, whose order
//! is not stable; the translation therefore never puts more than one entry into such a map,
//! and builds the one `Struct` it needs (a JSON access log format) through an ordered type of
//! its own with the same wire format. [`translate_with`] gives
//! the same bytes as [`translate`] while encoding the pieces a change seldom touches (the
//! virtual hosts of route configs, the filter chains of capture listeners) once each.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod bootstrap;
mod capture;
mod cluster;
mod encoded;
mod endpoint;
mod listener;
mod mtls;
pub mod node;
mod proto;
pub mod rbac;
mod route;
pub mod sds;
pub mod stats;
pub mod type_url;

use std::net::IpAddr;

pub use envoy_types::pb::google::protobuf::Any;
use remora_model::config::{Resource, ResourceType, Target, WeightedCluster};

pub use capture::{ChainKey, FilterChainCache, MTLS_PASSTHROUGH_CHAIN};
pub use cluster::{INVALID_BACKEND_CLUSTER, UNRESOLVED_CLUSTER, unresolved_cluster};
pub use encoded::Encoded;
pub use mtls::{MESH_ALPN, MTLS_MATCH, MTLS_METADATA_KEY, TRANSPORT_SOCKET_MATCH};
pub use route::VirtualHostCache;
pub use type_url::type_url;

/// Where access logs go when a listener asks for them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AccessLogSink {
    /// The proxy's standard output, which the container runtime collects.
    #[default]
    Stdout,
    /// The proxy's standard error, for setups that keep stdout for something else.
    Stderr,
}

/// Choices about how the translation speaks to one deployment of Envoy; the defaults suit a
/// sidecar in a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Where listeners that log (the model says which) write their access logs.
    pub access_log: AccessLogSink,
    /// Outbound listeners the model binds to every address (`BindAddress::Any`) bind to this
    /// address instead of `0.0.0.0`. Several proxies can then share one host, each on its own
    /// loopback address (127.0.0.2, 127.0.0.3, ...), which is how tests run real Envoys side
    /// by side. Inbound listeners, outbound ones bound to one address, and capture
    /// listeners (which must take redirected traffic on every address) are untouched.
    pub bind_outbound_to: Option<IpAddr>,
}

/// One Envoy resource, packed for an xDS response. The version is derived from the content,
/// so every replica of the control plane gives the same version to the same resource.
#[derive(Clone, Debug)]
pub struct EnvoyResource {
    /// The resource's name, which is the model's name for it.
    pub name: String,
    /// The resource's type URL, also the type URL of `any`.
    pub type_url: &'static str,
    /// Hex of the xxh3-64 of the encoded resource: equal versions mean equal bytes.
    pub version: String,
    /// The encoded resource.
    pub any: Any,
}

/// Equal versions mean equal content: comparing them spares comparing encoded bytes.
impl PartialEq for EnvoyResource {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.type_url == other.type_url && self.version == other.version
    }
}

/// Translates one model resource into the Envoy resource of the same name.
pub fn translate(resource: &Resource, options: &Options) -> EnvoyResource {
    match resource {
        Resource::Listener(l) => proto::packed(
            &l.value.name,
            type_url(ResourceType::Listener),
            &listener::listener(&l.value, options),
        ),
        Resource::RouteConfig(r) => proto::packed(
            &r.value.name,
            type_url(ResourceType::RouteConfig),
            &route::route_configuration(&r.value),
        ),
        Resource::Cluster(c) => proto::packed(
            &c.value.name,
            type_url(ResourceType::Cluster),
            &cluster::cluster(&c.value),
        ),
        Resource::Endpoints(e) => proto::packed(
            &e.value.cluster,
            type_url(ResourceType::Endpoints),
            &endpoint::load_assignment(&e.value),
        ),
    }
}

/// The encoded parts [`translate_with`] keeps between calls: the virtual hosts of route
/// configs and the filter chains of capture listeners, each encoded once for every resource
/// that holds it.
#[derive(Debug, Default)]
pub struct Caches {
    /// Virtual hosts, by content.
    pub hosts: VirtualHostCache,
    /// Filter chains of capture listeners, by content and access log.
    pub chains: FilterChainCache,
}

impl Caches {
    /// Drops the parts no resource was encoded with since the last sweep.
    pub fn sweep(&mut self) {
        self.hosts.sweep();
        self.chains.sweep();
    }
}

/// As [`translate`], the same bytes, with the parts a change seldom touches (each virtual
/// host of a route config, each filter chain of a capture listener) encoded once for every
/// resource translated with the same `caches`.
pub fn translate_with(
    resource: &Resource,
    options: &Options,
    caches: &mut Caches,
) -> EnvoyResource {
    match resource {
        Resource::RouteConfig(r) => proto::packed_bytes(
            &r.value.name,
            type_url(ResourceType::RouteConfig),
            caches.hosts.route_configuration(&r.value),
        ),
        Resource::Listener(l) => proto::packed_bytes(
            &l.value.name,
            type_url(ResourceType::Listener),
            caches.chains.listener(&l.value, options),
        ),
        other => translate(other, options),
    }
}

/// The Envoy cluster a target names.
pub(crate) fn cluster_name(target: &Target) -> &str {
    match target {
        Target::Cluster(name) => name,
        Target::Unresolved => UNRESOLVED_CLUSTER,
        Target::Invalid => INVALID_BACKEND_CLUSTER,
    }
}

/// A weighted split by Envoy cluster name, in the model's order. Targets that name the same
/// cluster (two missing backends both go to [`UNRESOLVED_CLUSTER`]) are merged, since Envoy
/// expects each cluster once, and shares of weight 0 are dropped. An empty split sends
/// everything to [`UNRESOLVED_CLUSTER`]: with nowhere to go, the traffic fails.
pub(crate) fn split(clusters: &[WeightedCluster]) -> Vec<(&str, u32)> {
    let mut out: Vec<(&str, u32)> = Vec::with_capacity(clusters.len());
    for c in clusters.iter().filter(|c| c.weight > 0) {
        let name = cluster_name(&c.target);
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, weight)) => *weight = weight.saturating_add(c.weight),
            None => out.push((name, c.weight)),
        }
    }
    if out.is_empty() {
        out.push((UNRESOLVED_CLUSTER, 1));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(name: Option<&str>, weight: u32) -> WeightedCluster {
        WeightedCluster {
            target: name.map_or(Target::Unresolved, |n| Target::Cluster(n.into())),
            weight,
        }
    }

    #[test]
    fn splits_merge_equal_targets_and_drop_empty_shares() {
        let clusters = [
            share(Some("a"), 70),
            share(None, 10),
            share(Some("b"), 0),
            share(None, 20),
        ];
        assert_eq!(split(&clusters), [("a", 70), (UNRESOLVED_CLUSTER, 30)]);
        assert_eq!(split(&[]), [(UNRESOLVED_CLUSTER, 1)]);
    }

    /// Route configs encoded from virtual hosts encoded once are the bytes of encoding each
    /// whole, before and after a change to one route; the hosts a change leaves alone are
    /// not encoded again, and a sweep drops the hosts no longer used.
    #[test]
    fn route_configs_from_cached_hosts_are_the_same_bytes() {
        use remora_model::{
            Mesh,
            config::Resource,
            input::{Event, MeshSettings},
        };
        use remora_synthetic::{Shape, Synthetic};

        let synthetic = Synthetic::new(Shape {
            namespaces: 3,
            shared_namespaces: 1,
            services: 30,
            pods: 60,
            routes: 40,
            egress: false,
            seed: 3,
        });
        let mut mesh = Mesh::new(MeshSettings::default());
        drop(mesh.apply(synthetic.objects().into_iter().map(Event::Upsert)));
        let options = Options::default();
        let mut caches = Caches::default();
        let check = |mesh: &Mesh, caches: &mut Caches| {
            let mut seen = 0;
            for proxy in mesh.proxies() {
                let config = mesh.proxy_config(proxy).expect("a config");
                for r in config.resources.values() {
                    if let Resource::RouteConfig(_) = r {
                        let cached = translate_with(r, &options, caches);
                        assert_eq!(cached, translate(r, &options));
                        seen += 1;
                    }
                }
            }
            assert!(seen > 0);
        };
        check(&mesh, &mut caches);
        let before = caches.hosts.len();
        assert!(before > 30, "{before} hosts");
        drop(mesh.apply([Event::Upsert(synthetic.route_change(1))]));
        check(&mesh, &mut caches);
        let added = caches.hosts.len() - before;
        assert!((1..=3).contains(&added), "{added} hosts encoded anew");
        caches.sweep();
        check(&mesh, &mut caches);
        caches.sweep();
        assert_eq!(
            caches.hosts.len(),
            before,
            "the hosts of the old route went"
        );
        caches.sweep();
        assert!(caches.hosts.is_empty());
    }
    /// Capture listeners encoded from chains encoded once are the bytes of encoding each
    /// whole, before and after a Service moves; the chains the move leaves alone are not
    /// encoded again, though every class of proxies has a listener of its own.
    #[test]
    fn capture_listeners_from_cached_chains_are_the_same_bytes() {
        use std::net::{IpAddr, Ipv4Addr};

        use remora_api::sidecar_policy::AccessLogFormat;

        use remora_model::{
            Mesh,
            config::{Addressing, Listener, Resource, Versioned},
            input::{Event, MeshSettings, Object},
        };
        use remora_synthetic::{Shape, Synthetic};

        let synthetic = Synthetic::new(Shape {
            namespaces: 3,
            shared_namespaces: 1,
            services: 30,
            pods: 60,
            routes: 20,
            egress: true,
            seed: 5,
        });
        let mut mesh = Mesh::new(MeshSettings {
            addressing: Addressing::Captured,
            ..Default::default()
        });
        let objects = synthetic.objects();
        drop(mesh.apply(objects.iter().cloned().map(Event::Upsert)));
        // Chains are encoded apart for each access log, which they carry.
        let logs = [
            (None, AccessLogSink::Stdout),
            (Some(AccessLogFormat::Json), AccessLogSink::Stdout),
            (Some(AccessLogFormat::Json), AccessLogSink::Stderr),
        ];
        let mut caches = Caches::default();
        let check = |mesh: &Mesh, caches: &mut Caches| {
            let mut outbound = std::collections::BTreeSet::new();
            for proxy in mesh.proxies() {
                let config = mesh.proxy_config(proxy).expect("a config");
                for l in config
                    .of_type(ResourceType::Listener)
                    .filter_map(|(_, r)| match r {
                        Resource::Listener(l) => Some(l),
                        _ => None,
                    })
                {
                    if &*l.value.name == "outbound" {
                        outbound.insert(l.hash);
                    }
                    for (format, sink) in logs {
                        let options = Options {
                            access_log: sink,
                            ..Options::default()
                        };
                        let l = Listener {
                            access_log: format,
                            ..l.value.clone()
                        };
                        let whole = Resource::Listener(Versioned::new(l));
                        let cached = translate_with(&whole, &options, caches);
                        assert_eq!(cached, translate(&whole, &options));
                    }
                }
            }
            assert!(outbound.len() > 1, "a listener per class");
        };
        check(&mesh, &mut caches);
        let before = caches.chains.len();
        assert!(before > 30, "{before} chains");
        let Some(Object::Service(mut moved)) = objects
            .into_iter()
            .find(|o| matches!(o, Object::Service(_)))
        else {
            panic!("a Service");
        };
        moved.cluster_ip = Some(IpAddr::V4(Ipv4Addr::new(10, 255, 0, 1)));
        let ports = moved.ports.len();
        drop(mesh.apply([Event::Upsert(Object::Service(moved))]));
        check(&mesh, &mut caches);
        assert_eq!(
            caches.chains.len() - before,
            ports * logs.len(),
            "the moved Service's chains alone"
        );
        caches.sweep();
        check(&mesh, &mut caches);
        caches.sweep();
        assert_eq!(
            caches.chains.len(),
            before,
            "the chains at the old address went"
        );
        caches.sweep();
        assert!(caches.chains.is_empty());
    }
}
