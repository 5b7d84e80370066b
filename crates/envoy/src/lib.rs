//! Translation of the model's Envoy-independent proxy config into Envoy's v3 xDS resources.
//!
//! The model says what a proxy should do; this crate says it in Envoy's protobuf terms and
//! nothing else: no I/O, no state. [`translate`] turns one model [`Resource`] into one
//! [`EnvoyResource`], packed as a protobuf `Any` with a content version, ready for the xDS
//! server to send over ADS.
//!
//! Every resource that names another (a listener its route config, an EDS cluster its
//! endpoints, a route its clusters) names it by the model's own name, so a proxy's config is
//! consistent exactly when the model's is. The one name the model does not provide is
//! [`UNRESOLVED_CLUSTER`]: see [`unresolved_cluster`].
//!
//! Equal inputs give byte-identical encodings, so the version (a hash of the bytes) changes
//! only when the content does. Prost encodes protobuf map fields from a `HashMap`, whose order
//! is not stable; the translation therefore never puts more than one entry into such a map,
//! and builds the one `Struct` it needs (a JSON access log format) through an ordered type of
//! its own with the same wire format.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bootstrap;
mod cluster;
mod endpoint;
mod listener;
pub mod node;
mod proto;
mod route;
pub mod type_url;

use std::net::IpAddr;

pub use envoy_types::pb::google::protobuf::Any;
use remora_model::config::{Resource, ResourceType, Target, WeightedCluster};

pub use cluster::{UNRESOLVED_CLUSTER, unresolved_cluster};
pub use route::VirtualHostCache;
pub use type_url::type_url;

/// Where access logs go when a listener asks for them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    /// by side. Inbound listeners, and outbound ones bound to one address, are untouched.
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

/// As [`translate`], with each virtual host of a route config encoded once for every route
/// config translated with the same `hosts` (the same bytes).
pub fn translate_with(
    resource: &Resource,
    options: &Options,
    hosts: &mut VirtualHostCache,
) -> EnvoyResource {
    match resource {
        Resource::RouteConfig(r) => proto::packed_bytes(
            &r.value.name,
            type_url(ResourceType::RouteConfig),
            hosts.route_configuration(&r.value),
        ),
        other => translate(other, options),
    }
}

/// The Envoy cluster a target names.
pub(crate) fn cluster_name(target: &Target) -> &str {
    match target {
        Target::Cluster(name) => name,
        Target::Unresolved => UNRESOLVED_CLUSTER,
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
        let mut hosts = VirtualHostCache::default();
        let check = |mesh: &Mesh, hosts: &mut VirtualHostCache| {
            let mut seen = 0;
            for proxy in mesh.proxies() {
                let config = mesh.proxy_config(proxy).expect("a config");
                for r in config.resources.values() {
                    if let Resource::RouteConfig(_) = r {
                        let cached = translate_with(r, &options, hosts);
                        assert_eq!(cached, translate(r, &options));
                        seen += 1;
                    }
                }
            }
            assert!(seen > 0);
        };
        check(&mesh, &mut hosts);
        let before = hosts.len();
        assert!(before > 30, "{before} hosts");
        drop(mesh.apply([Event::Upsert(synthetic.route_change(1))]));
        check(&mesh, &mut hosts);
        let added = hosts.len() - before;
        assert!((1..=3).contains(&added), "{added} hosts encoded anew");
        hosts.sweep();
        check(&mesh, &mut hosts);
        hosts.sweep();
        assert_eq!(hosts.len(), before, "the hosts of the old route went");
        hosts.sweep();
        assert!(hosts.is_empty());
    }
}
