//! Builders for model inputs, so tests read as the mesh they describe.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::{collections::BTreeMap, net::IpAddr};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use remora_api::{
    SidecarPolicy, SidecarPolicySpec, TrafficRoute, TrafficRouteSpec,
    sidecar_policy::EgressScope,
    traffic_route::{BackendRef, HeaderMatch, HttpMatch, HttpRule, ParentRef, StringMatchType},
};
use remora_model::{
    Mesh,
    config::{ProxyConfig, Resource, ResourceType},
    input::{
        ContainerPort, Endpoint, EndpointPort, EndpointSlice, Event, MeshSettings, Namespace,
        Object, ObjectKey, Pod, Protocol, Service, ServicePort,
    },
};

pub use remora_test_support::labels;

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

pub fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(ns, name)
}

pub fn up(o: Object) -> Event {
    Event::Upsert(o)
}

pub fn mk_ns(name: &str) -> Object {
    Object::Namespace(Namespace {
        name: name.into(),
        labels: labels(&[("remora.dev/mesh", "enabled")]),
    })
}

/// A Service with HTTP ports (names `http-<port>`), or TCP ports when `tcp`.
pub fn mk_svc(ns: &str, name: &str, cluster_ip: &str, ports: &[u16], tcp: bool) -> Object {
    Object::Service(Service {
        namespace: ns.into(),
        name: name.into(),
        cluster_ip: Some(ip(cluster_ip)),
        ports: ports
            .iter()
            .map(|p| ServicePort {
                name: Some(format!("{}-{p}", if tcp { "tcp" } else { "http" })),
                port: *p,
                protocol: if tcp { Protocol::Tcp } else { Protocol::Http },
            })
            .collect(),
    })
}

/// One slice for a Service; endpoints are (address, pod, ready) and listen on the same ports.
pub fn mk_slice(
    ns: &str,
    svc: &str,
    ports: &[u16],
    tcp: bool,
    endpoints: &[(&str, &str, bool)],
) -> Object {
    Object::EndpointSlice(EndpointSlice {
        namespace: ns.into(),
        name: format!("{svc}-slice"),
        service: svc.into(),
        ports: ports
            .iter()
            .map(|p| EndpointPort {
                name: Some(format!("{}-{p}", if tcp { "tcp" } else { "http" })),
                port: *p,
            })
            .collect(),
        endpoints: endpoints
            .iter()
            .map(|(addr, pod, ready)| Endpoint {
                address: ip(addr),
                ready: *ready,
                zone: None,
                pod: Some(pod.to_string()),
            })
            .collect(),
    })
}

pub fn mk_pod(
    ns: &str,
    name: &str,
    pod_labels: &[(&str, &str)],
    pod_ip: &str,
    sidecar: bool,
) -> Object {
    Object::Pod(Pod {
        namespace: ns.into(),
        name: name.into(),
        labels: labels(pod_labels),
        service_account: "default".into(),
        ip: Some(ip(pod_ip)),
        sidecar,
        ports: vec![ContainerPort {
            port: 8080,
            protocol: Protocol::Http,
        }],
    })
}

pub fn time(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).expect("time"))
}

pub fn policy_spec() -> SidecarPolicySpec {
    remora_synthetic::policy_spec()
}

pub fn with_egress(mut spec: SidecarPolicySpec, hosts: &[&str]) -> SidecarPolicySpec {
    spec.egress = Some(EgressScope {
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
    });
    spec
}

pub fn mk_policy(ns: &str, name: &str, created: i64, spec: SidecarPolicySpec) -> Object {
    let mut p = SidecarPolicy::new(name, spec);
    p.metadata.namespace = Some(ns.into());
    p.metadata.creation_timestamp = Some(time(created));
    p.metadata.generation = Some(1);
    Object::SidecarPolicy(Box::new(p))
}

pub fn backend(svc: &str, version: Option<&str>, weight: i32) -> BackendRef {
    BackendRef {
        name: svc.into(),
        namespace: None,
        port: None,
        weight,
        subset: version
            .map(|v| labels(&[("version", v)]))
            .unwrap_or_default(),
    }
}

/// A route on `svc` with a split between subsets v1 and v2, and a header rule for beta users.
pub fn split_route(svc: &str, v1: i32, v2: i32) -> TrafficRouteSpec {
    TrafficRouteSpec {
        parent_refs: vec![ParentRef {
            name: svc.into(),
            namespace: None,
            port: None,
        }],
        http: vec![
            HttpRule {
                name: Some("beta".into()),
                matches: vec![HttpMatch {
                    headers: vec![HeaderMatch {
                        kind: StringMatchType::Exact,
                        name: "x-user-group".into(),
                        value: "beta".into(),
                    }],
                    ..Default::default()
                }],
                backend_refs: vec![backend(svc, Some("v2"), 1)],
                ..Default::default()
            },
            HttpRule {
                name: Some("split".into()),
                backend_refs: vec![backend(svc, Some("v1"), v1), backend(svc, Some("v2"), v2)],
                ..Default::default()
            },
        ],
        tcp: vec![],
    }
}

pub fn mk_route(ns: &str, name: &str, created: i64, spec: TrafficRouteSpec) -> Object {
    let mut r = TrafficRoute::new(name, spec);
    r.metadata.namespace = Some(ns.into());
    r.metadata.creation_timestamp = Some(time(created));
    r.metadata.generation = Some(1);
    Object::TrafficRoute(Box::new(r))
}

pub fn mesh(events: Vec<Event>) -> Mesh {
    let mut m = Mesh::new(MeshSettings::default());
    m.apply(events);
    m
}

pub fn names(config: &ProxyConfig, kind: ResourceType) -> Vec<String> {
    config
        .of_type(kind)
        .map(|(k, _)| k.name.to_string())
        .collect()
}

/// Every proxy's resources and content hashes: equal maps mean equal configs.
pub fn all_versions(m: &Mesh) -> BTreeMap<ObjectKey, BTreeMap<(ResourceType, String), u64>> {
    m.proxies()
        .map(|p| {
            let config = m.proxy_config(p).expect("listed proxy has a config");
            let v = config
                .resources
                .iter()
                .map(|(k, r)| ((k.kind, k.name.to_string()), r.hash()))
                .collect();
            (p.clone(), v)
        })
        .collect()
}

pub fn route_config<'a>(
    config: &'a ProxyConfig,
    name: &str,
) -> &'a remora_model::config::RouteConfig {
    config
        .of_type(ResourceType::RouteConfig)
        .find_map(|(k, r)| match r {
            Resource::RouteConfig(rc) if &*k.name == name => Some(&rc.value),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no route config {name}"))
}
