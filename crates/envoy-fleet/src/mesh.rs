//! The mesh the fleet runs against: a synthetic mesh moved onto loopback, the fleet's proxy
//! pods, and an echo Service whose one route the benchmark edits.
//!
//! The echo route always names both subsets (a header picks either), and its default rule
//! sends everything else to one of them. The edit flips that default, so it changes one
//! route config and nothing else: no cluster or endpoint comes or goes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use remora_api::{
    TrafficRoute, TrafficRouteSpec,
    traffic_route::{BackendRef, HeaderMatch, HttpMatch, HttpRule, ParentRef, StringMatchType},
};
use remora_model::input::{
    ContainerPort, Endpoint, EndpointPort, EndpointSlice, Labels, MeshSettings, Object, ObjectKey,
    Pod, Protocol, Service, ServicePort,
};
use remora_synthetic::{Shape, Synthetic};

/// The Service whose route the benchmark edits.
pub const ECHO: &str = "fleet-echo";
/// Its one port, HTTP.
pub const ECHO_PORT: u16 = 8080;
/// A request with this header set to `v1` or `v2` reaches that subset whatever the default.
pub const VERSION_HEADER: &str = "x-fleet-version";
/// The proxies of the fleet are `fleet-proxy-0`, `fleet-proxy-1`, ...
const PROXY_PREFIX: &str = "fleet-proxy";
/// Proxy `i` has pod address `127.64.0.1 + i`, outside every range the synthetic mesh uses.
const PROXY_BASE: Ipv4Addr = Ipv4Addr::new(127, 64, 0, 1);
/// The echo Service's cluster IP, unused by the synthetic mesh on loopback.
const ECHO_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(127, 95, 0, 1);

/// Which subset of the echo Service the route's default rule sends to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `version: v1`, answered by `fleet-echo-v1`.
    V1,
    /// `version: v2`, answered by `fleet-echo-v2`.
    V2,
}

impl Version {
    /// The subset's `version` label.
    pub fn label(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }

    /// The other one: what the next edit switches to.
    pub fn other(self) -> Version {
        match self {
            Version::V1 => Version::V2,
            Version::V2 => Version::V1,
        }
    }

    /// The name of the backend pod, which is also what its HTTP server answers.
    pub fn backend(self) -> String {
        format!("{ECHO}-{}", self.label())
    }

    /// Where the backend pod's HTTP server listens.
    pub fn backend_addr(self) -> SocketAddr {
        let last = match self {
            Version::V1 => 1,
            Version::V2 => 2,
        };
        SocketAddr::from((Ipv4Addr::new(127, 90, 0, last), ECHO_PORT))
    }
}

/// The synthetic mesh of a size, with the fleet's proxies and the echo Service added.
pub struct FleetMesh {
    synthetic: Synthetic,
    /// The namespace of the proxies and the echo Service: the last team namespace, so an
    /// egress scope (`./*`) lets the proxies reach the echo Service.
    namespace: String,
    proxies: usize,
    workload_sidecars: bool,
}

impl FleetMesh {
    /// A mesh of `services` Services shaped like the reference mesh (10 pods and 2 routes
    /// per Service, 50 namespaces per 1,000 Services, egress scopes if asked), and `proxies`
    /// proxy pods.
    pub fn new(services: usize, egress: bool, proxies: usize) -> FleetMesh {
        let synthetic = Synthetic::new(shape(services.max(1), egress));
        let last = synthetic.shape().services - 1;
        let namespace = synthetic
            .service_key(last)
            .map(|k| k.namespace)
            .unwrap_or_default();
        FleetMesh {
            synthetic,
            namespace,
            proxies,
            workload_sidecars: false,
        }
    }

    /// Whether the synthetic mesh's own pods (10 per Service) carry sidecars. By default
    /// they do not: only the fleet's pods are proxies, so local mode computes config for the
    /// Envoys that run and no others. An Envoy's config is the same either way (explicit
    /// addressing reaches every endpoint in plaintext); local mode's work is not.
    pub fn with_workload_sidecars(mut self, sidecars: bool) -> FleetMesh {
        self.workload_sidecars = sidecars;
        self
    }

    /// The namespace of the proxies and of the echo Service.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// How many proxies the fleet has.
    pub fn proxies(&self) -> usize {
        self.proxies
    }

    /// Proxy `i`'s pod.
    pub fn proxy(&self, i: usize) -> ObjectKey {
        ObjectKey::new(&self.namespace, format!("{PROXY_PREFIX}-{i}"))
    }

    /// Proxy `i`'s pod address, where its outbound listeners bind.
    pub fn proxy_ip(i: usize) -> Ipv4Addr {
        offset(PROXY_BASE, i)
    }

    /// The echo Service's host name, which picks its virtual host in every proxy.
    pub fn echo_host(&self) -> String {
        let domain = MeshSettings::default().cluster_domain;
        format!("{ECHO}.{}.svc.{domain}", self.namespace)
    }

    /// Every object but the echo route: the synthetic mesh on loopback, then the fleet's.
    pub fn objects(&self) -> Vec<Object> {
        let mut out: Vec<Object> = self
            .synthetic
            .objects()
            .into_iter()
            .map(|o| match on_loopback(o) {
                Object::Pod(mut p) => {
                    p.sidecar = self.workload_sidecars;
                    Object::Pod(p)
                }
                other => other,
            })
            .collect();
        out.push(self.echo_service());
        out.push(self.echo_slice());
        for v in [Version::V1, Version::V2] {
            out.push(Object::Pod(self.echo_pod(v)));
        }
        for i in 0..self.proxies {
            out.push(Object::Pod(self.proxy_pod(i)));
        }
        out
    }

    /// The echo route with its default rule sending to `default`.
    pub fn route(&self, default: Version) -> Object {
        let pinned = |v: Version| HttpRule {
            name: Some(format!("pinned-{}", v.label())),
            matches: vec![HttpMatch {
                headers: vec![HeaderMatch {
                    kind: StringMatchType::Exact,
                    name: VERSION_HEADER.into(),
                    value: v.label().into(),
                }],
                ..Default::default()
            }],
            backend_refs: vec![subset(v)],
            ..Default::default()
        };
        let spec = TrafficRouteSpec {
            parent_refs: vec![ParentRef {
                name: ECHO.into(),
                namespace: None,
                port: Some(i32::from(ECHO_PORT)),
            }],
            http: vec![
                pinned(Version::V1),
                pinned(Version::V2),
                HttpRule {
                    name: Some("default".into()),
                    backend_refs: vec![subset(default)],
                    ..Default::default()
                },
            ],
            tcp: vec![],
        };
        let mut route = TrafficRoute::new(ECHO, spec);
        route.metadata.namespace = Some(self.namespace.clone());
        // What the API server would give it, the same in every edit.
        route.metadata.generation = Some(1);
        route.metadata.creation_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        Object::TrafficRoute(Box::new(route))
    }

    fn echo_service(&self) -> Object {
        Object::Service(Service {
            namespace: self.namespace.clone(),
            name: ECHO.into(),
            cluster_ip: Some(IpAddr::V4(ECHO_CLUSTER_IP)),
            ports: vec![ServicePort {
                name: Some("http".into()),
                port: ECHO_PORT,
                protocol: Protocol::Http,
            }],
        })
    }

    fn echo_slice(&self) -> Object {
        let endpoints = [Version::V1, Version::V2]
            .into_iter()
            .map(|v| Endpoint {
                address: v.backend_addr().ip(),
                ready: true,
                zone: Some("zone-a".into()),
                pod: Some(v.backend()),
            })
            .collect();
        Object::EndpointSlice(EndpointSlice {
            namespace: self.namespace.clone(),
            name: ECHO.into(),
            service: ECHO.into(),
            ports: vec![EndpointPort {
                name: Some("http".into()),
                port: ECHO_PORT,
            }],
            endpoints,
        })
    }

    /// A plain workload (no sidecar): the proxies reach it in plaintext, as local mode does.
    fn echo_pod(&self, v: Version) -> Pod {
        Pod {
            namespace: self.namespace.clone(),
            name: v.backend(),
            labels: labels(&[("app", ECHO), ("version", v.label())]),
            service_account: ECHO.into(),
            ip: Some(v.backend_addr().ip()),
            sidecar: false,
            ports: vec![ContainerPort {
                port: ECHO_PORT,
                protocol: Protocol::Http,
            }],
        }
    }

    /// A client pod with a sidecar. It declares no ports: an inbound listener on its
    /// address would take the port of an outbound one (every Service has port 8080).
    fn proxy_pod(&self, i: usize) -> Pod {
        Pod {
            namespace: self.namespace.clone(),
            name: format!("{PROXY_PREFIX}-{i}"),
            labels: labels(&[("app", PROXY_PREFIX)]),
            service_account: PROXY_PREFIX.into(),
            ip: Some(IpAddr::V4(Self::proxy_ip(i))),
            sidecar: true,
            ports: vec![],
        }
    }
}

/// The reference shape scaled to `services`: 1,000 gives the reference mesh itself.
fn shape(services: usize, egress: bool) -> Shape {
    let reference = Shape::reference();
    let scale = |n: usize| (n * services).div_ceil(reference.services).max(1);
    let namespaces = scale(reference.namespaces);
    Shape {
        namespaces,
        // At least one team namespace stays unshared: the fleet lives in the last one.
        shared_namespaces: scale(reference.shared_namespaces).min(namespaces - 1),
        services,
        pods: scale(reference.pods),
        routes: scale(reference.routes),
        egress,
        seed: reference.seed,
    }
}

fn subset(v: Version) -> BackendRef {
    BackendRef {
        name: ECHO.into(),
        namespace: None,
        port: None,
        weight: 1,
        subset: labels(&[("version", v.label())]),
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The synthetic mesh's addresses are in 10.0.0.0/8; real Envoys on one machine bind its
/// Services' and pods' addresses, so each moves to the same offset in 127.0.0.0/8.
fn on_loopback(object: Object) -> Object {
    match object {
        Object::Service(mut s) => {
            s.cluster_ip = s.cluster_ip.map(loopback);
            Object::Service(s)
        }
        Object::EndpointSlice(mut slice) => {
            for e in &mut slice.endpoints {
                e.address = loopback(e.address);
            }
            Object::EndpointSlice(slice)
        }
        Object::Pod(mut p) => {
            p.ip = p.ip.map(loopback);
            Object::Pod(p)
        }
        other => other,
    }
}

fn loopback(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [_, b, c, d] = v4.octets();
            IpAddr::V4(Ipv4Addr::new(127, b, c, d))
        }
        v6 => v6,
    }
}

/// `base + n` (the benchmark's limits keep it far from wrapping).
fn offset(base: Ipv4Addr, n: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base).saturating_add(u32::try_from(n).unwrap_or(u32::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(objects: &[Object]) -> Vec<IpAddr> {
        objects
            .iter()
            .flat_map(|o| match o {
                Object::Service(s) => s.cluster_ip.into_iter().collect::<Vec<_>>(),
                Object::EndpointSlice(s) => s.endpoints.iter().map(|e| e.address).collect(),
                Object::Pod(p) => p.ip.into_iter().collect(),
                _ => vec![],
            })
            .collect()
    }

    #[test]
    fn every_address_of_the_mesh_is_on_loopback() {
        let mesh = FleetMesh::new(20, false, 3);
        let all = addresses(&mesh.objects());
        assert!(all.len() > 200, "pods, slices and Services: {}", all.len());
        assert!(all.iter().all(IpAddr::is_loopback), "{all:?}");
    }

    #[test]
    fn only_the_fleet_pods_are_proxies_unless_the_workloads_get_sidecars_too() {
        let proxies = |mesh: FleetMesh| {
            mesh.objects()
                .iter()
                .filter(|o| matches!(o, Object::Pod(p) if p.sidecar))
                .count()
        };
        assert_eq!(proxies(FleetMesh::new(20, false, 3)), 3);
        let all = FleetMesh::new(20, false, 3).with_workload_sidecars(true);
        assert_eq!(proxies(all), 200 + 3);
    }

    #[test]
    fn a_thousand_services_is_the_reference_mesh() {
        let s = shape(1_000, true);
        assert_eq!(
            s,
            Shape {
                egress: true,
                ..Shape::reference()
            }
        );
    }

    #[test]
    fn proxies_and_the_echo_service_share_a_team_namespace_with_unique_pod_addresses() {
        let mesh = FleetMesh::new(200, true, 50);
        assert!(
            mesh.namespace().starts_with("team-"),
            "{}",
            mesh.namespace()
        );
        let objects = mesh.objects();
        let pods: Vec<&Pod> = objects
            .iter()
            .filter_map(|o| match o {
                Object::Pod(p) => Some(p),
                _ => None,
            })
            .collect();
        let mut ips: Vec<_> = pods.iter().filter_map(|p| p.ip).collect();
        let count = ips.len();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), count, "pod addresses collide");
        let proxy = pods
            .iter()
            .find(|p| p.name == "fleet-proxy-49")
            .expect("the last proxy pod");
        assert_eq!(proxy.namespace, mesh.namespace());
        assert!(proxy.sidecar && proxy.ports.is_empty());
    }

    #[test]
    fn the_route_edit_changes_only_the_default_rule() {
        let mesh = FleetMesh::new(20, false, 1);
        let spec = |v| match mesh.route(v) {
            Object::TrafficRoute(r) => r.spec,
            other => panic!("not a route: {other:?}"),
        };
        let (before, after) = (spec(Version::V1), spec(Version::V2));
        assert_eq!(before.http[..2], after.http[..2], "the pinned rules stay");
        assert_eq!(before.http[2].backend_refs[0].subset["version"], "v1");
        assert_eq!(after.http[2].backend_refs[0].subset["version"], "v2");
    }
}
