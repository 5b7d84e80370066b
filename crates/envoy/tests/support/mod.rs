//! A small mesh built through the model, and its proxies' configs translated and decoded
//! back into Envoy's types, so tests assert on what Envoy would receive.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::{collections::BTreeMap, net::IpAddr};

use envoy_types::pb::envoy::config::{
    cluster::v3::Cluster,
    endpoint::v3::ClusterLoadAssignment,
    listener::v3::{FilterChain, Listener},
    route::v3::RouteConfiguration,
};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use prost::{Message, Name};
use remora_api::{
    AccessPolicy, SidecarPolicy, TrafficRoute,
    sidecar_policy::{MtlsMode, UnknownDestinations},
};
use remora_envoy::{EnvoyResource, Options, translate, type_url, unresolved_cluster};
use remora_model::{
    Mesh,
    config::{Addressing, ProxyConfig, ResourceType},
    input::{
        ContainerPort, Endpoint, EndpointPort, EndpointSlice, Event, IdentitySettings,
        MeshSettings, Namespace, Object, ObjectKey, Pod, Protocol, Service, ServicePort,
    },
};
use remora_test_support::labels;

pub const FLEET_POLICY: &str = r#"
proxy: {image: envoyproxy/envoy, version: v1.40.0}
traffic:
  connectTimeout: 2s
  outlierDetection: {consecutiveErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}
  circuitBreaker: {maxConnections: 1024, maxPendingRequests: 512, maxRequests: 2048}
  accessLog: {format: Json}
"#;

/// Every feature of an HTTP route at once, a redirect, a backend that does not exist, and a
/// catch-all.
pub const REVIEWS_ROUTE: &str = r#"
parentRefs: [{name: reviews, port: 9080}]
http:
  - name: api
    matches:
      - path: {type: PathPrefix, value: /api/}
        headers:
          - {name: x-user-group, value: beta}
          - {type: RegularExpression, name: x-trace, value: "[0-9a-f]+"}
        queryParams: [{name: debug, value: "1"}]
        method: POST
      - path: {type: PathPrefix, value: /beta}
    backendRefs:
      - {name: reviews, subset: {version: v1}, weight: 90}
      - {name: reviews, subset: {version: v2}, weight: 10}
    timeouts: {request: 3s, backendRequest: 1s}
    retry: {attempts: 2, backoff: 25ms, retryOn: [5xx], codes: [409]}
    rewrite: {hostname: reviews.internal, path: {replacePrefixMatch: /v2}}
    mirror: {backendRef: {name: ratings}, percent: 25}
    requestHeaders:
      set: [{name: x-routed-by, value: remora}]
      add: [{name: x-tag, value: canary}]
      remove: [x-debug]
    responseHeaders:
      add: [{name: x-served-by, value: reviews}]
      remove: [server]
    fault:
      delay: {fixedDelay: 100ms, percent: 10}
      abort: {httpStatus: 503, percent: 5}
  - name: versioned
    matches: [{path: {type: RegularExpression, value: "/v[0-9]+/.*"}}]
    rewrite: {path: {replaceFullPath: /latest}}
    backendRefs: [{name: reviews, subset: {version: v2}}]
  - name: old
    matches: [{path: {type: Exact, value: /old}}]
    redirect:
      scheme: https
      hostname: new.example.com
      path: {replaceFullPath: /new}
      port: 8443
      statusCode: 301
  - name: missing
    matches: [{path: {type: PathPrefix, value: /missing}}]
    backendRefs:
      - {name: ghost, weight: 1}
      - {name: reviews, subset: {version: v1}, weight: 3}
  - name: default
    backendRefs: [{name: reviews}]
"#;

pub const DB_ROUTE: &str = r#"
parentRefs: [{name: db, port: 5432}]
tcp:
  - backendRefs:
      - {name: db, subset: {version: v1}, weight: 80}
      - {name: db, subset: {version: v2}, weight: 20}
"#;

pub fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(ns, name)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn time(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).expect("time"))
}

fn ns(name: &str) -> Event {
    Event::Upsert(Object::Namespace(Namespace {
        name: name.into(),
        labels: labels(&[("remora.dev/mesh", "enabled")]),
    }))
}

/// A one-port Service and its endpoints, each `(address, pod, zone, ready)`.
fn svc(
    name: &str,
    cluster_ip: &str,
    port: u16,
    protocol: Protocol,
    endpoints: &[(&str, &str, Option<&str>, bool)],
) -> [Event; 2] {
    let port_name = Some(format!("{protocol:?}").to_lowercase());
    [
        Event::Upsert(Object::Service(Service {
            namespace: "shop".into(),
            name: name.into(),
            cluster_ip: Some(ip(cluster_ip)),
            ports: vec![ServicePort {
                name: port_name.clone(),
                port,
                protocol,
            }],
        })),
        Event::Upsert(Object::EndpointSlice(EndpointSlice {
            namespace: "shop".into(),
            name: format!("{name}-slice"),
            service: name.into(),
            ports: vec![EndpointPort {
                name: port_name,
                port,
            }],
            endpoints: endpoints
                .iter()
                .map(|(addr, pod, zone, ready)| Endpoint {
                    address: ip(addr),
                    ready: *ready,
                    zone: zone.map(str::to_owned),
                    pod: Some((*pod).to_owned()),
                })
                .collect(),
        })),
    ]
}

/// A pod with a sidecar whose application listens on one port.
fn pod(name: &str, pod_labels: &[(&str, &str)], pod_ip: &str, port: (u16, Protocol)) -> Event {
    Event::Upsert(Object::Pod(Pod {
        namespace: "shop".into(),
        name: name.into(),
        labels: labels(pod_labels),
        service_account: "default".into(),
        ip: Some(ip(pod_ip)),
        sidecar: true,
        ports: vec![ContainerPort {
            port: port.0,
            protocol: port.1,
        }],
    }))
}

pub fn policy(yaml: &str) -> Event {
    let mut p = SidecarPolicy::new("fleet", serde_yaml_ng::from_str(yaml).expect("policy"));
    p.metadata.namespace = Some("remora-system".into());
    p.metadata.creation_timestamp = Some(time(1));
    p.metadata.generation = Some(1);
    Event::Upsert(Object::SidecarPolicy(Box::new(p)))
}

/// An access policy of the shop, its spec as JSON.
pub fn access_policy(name: &str, spec: serde_json::Value) -> Event {
    let mut p: AccessPolicy = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "shop", "name": name, "generation": 1},
        "spec": spec,
    }))
    .expect("an access policy");
    p.metadata.creation_timestamp = Some(time(3));
    Event::Upsert(Object::AccessPolicy(Box::new(p)))
}

pub fn route(name: &str, yaml: &str) -> Event {
    let mut r = TrafficRoute::new(name, serde_yaml_ng::from_str(yaml).expect("route"));
    r.metadata.namespace = Some("shop".into());
    r.metadata.creation_timestamp = Some(time(2));
    r.metadata.generation = Some(1);
    Event::Upsert(Object::TrafficRoute(Box::new(r)))
}

/// The shop: `frontend` calls `reviews` (two versions, one endpoint not ready), which
/// mirrors to `ratings`; `db` is TCP with two versions; `catalog` speaks gRPC.
pub fn shop_events(reviews_route: &str) -> Vec<Event> {
    let http = (8080, Protocol::Http);
    let mut events = vec![ns("shop"), policy(FLEET_POLICY)];
    events.extend(svc(
        "reviews",
        "10.96.0.1",
        9080,
        Protocol::Http,
        &[
            ("10.0.0.1", "reviews-v1", Some("zone-a"), true),
            ("10.0.0.2", "reviews-v2", Some("zone-b"), true),
            ("10.0.0.3", "reviews-v2b", Some("zone-b"), false),
        ],
    ));
    events.extend(svc(
        "ratings",
        "10.96.0.2",
        9080,
        Protocol::Http,
        &[("10.0.0.4", "ratings-0", None, true)],
    ));
    events.extend(svc(
        "db",
        "10.96.0.5",
        5432,
        Protocol::Tcp,
        &[
            ("10.0.0.5", "db-v1", None, true),
            ("10.0.0.6", "db-v2", None, true),
        ],
    ));
    events.extend(svc(
        "catalog",
        "10.96.0.6",
        50051,
        Protocol::Http2,
        &[("10.0.0.7", "catalog-0", Some("zone-a"), true)],
    ));
    events.extend([
        pod("frontend", &[("app", "frontend")], "10.0.0.9", http),
        pod(
            "reviews-v1",
            &[("app", "reviews"), ("version", "v1")],
            "10.0.0.1",
            http,
        ),
        pod(
            "reviews-v2",
            &[("app", "reviews"), ("version", "v2")],
            "10.0.0.2",
            http,
        ),
        pod(
            "reviews-v2b",
            &[("app", "reviews"), ("version", "v2")],
            "10.0.0.3",
            http,
        ),
        pod("ratings-0", &[("app", "ratings")], "10.0.0.4", http),
        pod(
            "db-v1",
            &[("app", "db"), ("version", "v1")],
            "10.0.0.5",
            (5432, Protocol::Tcp),
        ),
        pod(
            "db-v2",
            &[("app", "db"), ("version", "v2")],
            "10.0.0.6",
            (5432, Protocol::Tcp),
        ),
        pod(
            "catalog-0",
            &[("app", "catalog")],
            "10.0.0.7",
            (50051, Protocol::Http2),
        ),
        route("reviews-rules", reviews_route),
        route("db-split", DB_ROUTE),
    ]);
    events
}

pub fn mesh(events: Vec<Event>) -> Mesh {
    mesh_with(MeshSettings::default(), events)
}

/// The mesh of `events`, with proxies addressed as `addressing` says.
pub fn mesh_addressed(addressing: Addressing, events: Vec<Event>) -> Mesh {
    let settings = MeshSettings {
        addressing,
        ..Default::default()
    };
    mesh_with(settings, events)
}

fn mesh_with(settings: MeshSettings, events: Vec<Event>) -> Mesh {
    let mut m = Mesh::new(settings);
    m.apply(events);
    for r in ["reviews-rules", "db-split"] {
        let problems = m.route_validation(&key("shop", r)).unwrap_or_default();
        assert!(problems.is_empty(), "route {r} is invalid: {problems:?}");
    }
    m
}

pub fn shop() -> Mesh {
    mesh(shop_events(REVIEWS_ROUTE))
}

/// The fleet policy, with the proxies handling unknown destinations as `unknown` says.
pub fn fleet_policy(unknown: UnknownDestinations) -> Event {
    let fleet = FLEET_POLICY.replace(
        "version: v1.40.0}",
        &format!("version: v1.40.0, interception: {{unknownDestinations: {unknown:?}}}}}"),
    );
    assert_ne!(fleet, FLEET_POLICY);
    policy(&fleet)
}

/// The shop with its traffic captured, unknown destinations handled as `unknown` says.
pub fn captured_shop(unknown: UnknownDestinations) -> Mesh {
    let mut events = shop_events(REVIEWS_ROUTE);
    events.push(fleet_policy(unknown));
    mesh_addressed(Addressing::Captured, events)
}

/// The pod of the shop that runs without a sidecar in [`meshed_shop`].
pub const UNMESHED_POD: &str = "ratings-0";

/// The shop captured with workload identity (trust domain `cluster.local`), its proxies'
/// mutual TLS in `mode`, and [`UNMESHED_POD`] without a sidecar.
pub fn meshed_shop(mode: MtlsMode) -> Mesh {
    let mut events = shop_events(REVIEWS_ROUTE);
    events.push(policy(&format!("{FLEET_POLICY}mtls: {{mode: {mode:?}}}\n")));
    for e in &mut events {
        if let Event::Upsert(Object::Pod(p)) = e
            && p.name == UNMESHED_POD
        {
            p.sidecar = false;
        }
    }
    let settings = MeshSettings {
        addressing: Addressing::Captured,
        identity: Some(IdentitySettings {
            trust_domain: "cluster.local".into(),
        }),
        ..Default::default()
    };
    let m = mesh_with(settings, events);
    let spec = m
        .policy_spec(&key("remora-system", "fleet"))
        .expect("the fleet policy is accepted");
    assert_eq!(spec.mtls.mode, mode);
    m
}

pub fn config(m: &Mesh, pod: &str) -> ProxyConfig {
    m.proxy_config(&key("shop", pod))
        .unwrap_or_else(|| panic!("no config for {pod}"))
}

/// One proxy's resources as Envoy would receive them, decoded back, by name. The clusters
/// include the unresolved cluster, which the xDS server serves to every proxy.
#[derive(Debug, Default)]
pub struct Decoded {
    pub listeners: BTreeMap<String, Listener>,
    pub routes: BTreeMap<String, RouteConfiguration>,
    pub clusters: BTreeMap<String, Cluster>,
    pub endpoints: BTreeMap<String, ClusterLoadAssignment>,
}

/// Translates every resource, checking that each one is named and typed as its model
/// resource is, and decodes it with the type its type URL names.
pub fn decode(config: &ProxyConfig, options: &Options) -> Decoded {
    let mut out = Decoded::default();
    let resources = config
        .resources
        .iter()
        .map(|(k, r)| {
            let t = translate(r, options);
            assert_eq!(t.name, *k.name);
            assert_eq!(t.type_url, type_url(k.kind));
            (k.kind, t)
        })
        .chain([(ResourceType::Cluster, unresolved_cluster())]);
    for (kind, t) in resources {
        assert_eq!(t.any.type_url, t.type_url);
        let bytes = t.any.value.as_slice();
        let name = t.name.clone();
        match kind {
            ResourceType::Listener => {
                let l = Listener::decode(bytes).expect("listener");
                assert_eq!(l.name, name);
                out.listeners.insert(name, l);
            }
            ResourceType::RouteConfig => {
                let r = RouteConfiguration::decode(bytes).expect("route config");
                assert_eq!(r.name, name);
                out.routes.insert(name, r);
            }
            ResourceType::Cluster => {
                let c = Cluster::decode(bytes).expect("cluster");
                assert_eq!(c.name, name);
                out.clusters.insert(name, c);
            }
            ResourceType::Endpoints => {
                let e = ClusterLoadAssignment::decode(bytes).expect("endpoints");
                assert_eq!(e.cluster_name, name);
                out.endpoints.insert(name, e);
            }
        }
    }
    out
}

/// Every translated resource of a proxy, in the model's order.
pub fn translate_all(config: &ProxyConfig, options: &Options) -> Vec<EnvoyResource> {
    config
        .resources
        .values()
        .map(|r| translate(r, options))
        .collect()
}

/// The names of the two network filters listeners use.
pub const HCM: &str = "envoy.filters.network.http_connection_manager";
pub const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";

/// The one network filter of a listener's one filter chain, decoded as `M`.
pub fn network_filter<M: Message + Name + Default>(l: &Listener, name: &str) -> M {
    let [chain] = l.filter_chains.as_slice() else {
        panic!("{}: one filter chain expected", l.name);
    };
    chain_filter(chain, name)
}

/// The one network filter of a filter chain, decoded as `M`.
pub fn chain_filter<M: Message + Name + Default>(chain: &FilterChain, name: &str) -> M {
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    let [filter] = chain.filters.as_slice() else {
        panic!("{}: one filter expected", chain.name);
    };
    assert_eq!(filter.name, name);
    let Some(ConfigType::TypedConfig(any)) = &filter.config_type else {
        panic!("{}: typed config expected", chain.name);
    };
    assert_eq!(any.type_url, M::type_url());
    M::decode(any.value.as_slice()).expect("filter config")
}
