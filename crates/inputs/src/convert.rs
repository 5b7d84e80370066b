//! Kubernetes API objects to model inputs. An object the model cannot use (no name, a Service
//! port out of range, ...) is reported as [`Unusable`] so the caller can log it and go on: one
//! malformed object must never stop a watch or a reload.

use std::net::IpAddr;

use k8s_openapi::{
    api::{
        core::v1::{
            Endpoints as KEndpoints, Namespace as KNamespace, ObjectReference, Pod as KPod,
            Service as KService,
        },
        discovery::v1::EndpointSlice as KEndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use remora_api::sidecar_policy::{PROXY_CONTAINER, proxy_container};
use remora_model::input::{
    ContainerPort, Endpoint, EndpointPort, EndpointSlice, Namespace, Object, Pod, Protocol,
    ReferenceGrant, Service, ServicePort,
};

/// The label Kubernetes puts on an EndpointSlice to name its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// An object the model cannot take, to be logged and skipped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{kind} {name}: {reason}")]
pub struct Unusable {
    /// The object's Kubernetes kind, e.g. `Service`.
    pub kind: &'static str,
    /// `namespace/name` as far as known.
    pub name: String,
    /// What is wrong with it, naming the field.
    pub reason: String,
}

fn unusable(kind: &'static str, ns: Option<&str>, name: Option<&str>, reason: &str) -> Unusable {
    Unusable {
        kind,
        name: format!("{}/{}", ns.unwrap_or("?"), name.unwrap_or("?")),
        reason: reason.into(),
    }
}

/// An object that arrived as JSON and does not decode, reported with the namespace and name
/// its metadata gives, as far as it gives them.
fn unusable_json(kind: &'static str, object: &serde_json::Value, reason: &str) -> Unusable {
    let field = |f: &str| {
        object
            .pointer(&format!("/metadata/{f}"))
            .and_then(serde_json::Value::as_str)
    };
    unusable(kind, field("namespace"), field("name"), reason)
}

/// The namespace and name that every namespaced object the model takes must have, and how to
/// report the object as unusable.
fn named<'a>(
    kind: &'static str,
    meta: &'a ObjectMeta,
) -> Result<(&'a String, &'a String, impl Fn(&str) -> Unusable + 'a), Unusable> {
    let fail = move |reason: &str| {
        unusable(
            kind,
            meta.namespace.as_deref(),
            meta.name.as_deref(),
            reason,
        )
    };
    match (&meta.namespace, &meta.name) {
        (Some(ns), Some(name)) => Ok((ns, name, fail)),
        _ => Err(fail("metadata.namespace and metadata.name are required")),
    }
}

/// An IP address field that may be empty, or why it is unusable.
fn optional_ip(field: &str, value: Option<&str>) -> Result<Option<IpAddr>, String> {
    match value {
        None | Some("") => Ok(None),
        Some(ip) => ip
            .parse()
            .map(Some)
            .map_err(|_| format!("{field} {ip:?} is not an IP address")),
    }
}

fn port(value: i32) -> Option<u16> {
    u16::try_from(value).ok().filter(|p| *p != 0)
}

/// Only TCP carries HTTP or TCP proxying; UDP and SCTP ports pass the mesh by. Kubernetes
/// takes a port without a protocol as TCP.
fn is_tcp(protocol: Option<&str>) -> bool {
    protocol.is_none_or(|proto| proto == "TCP")
}

/// An endpoint port the mesh proxies: TCP and in range. EndpointSlices and Endpoints spell
/// ports alike but in types of their own.
fn endpoint_port(
    name: Option<&String>,
    protocol: Option<&str>,
    number: Option<i32>,
) -> Option<EndpointPort> {
    if !is_tcp(protocol) {
        return None;
    }
    Some(EndpointPort {
        name: name.filter(|n| !n.is_empty()).cloned(),
        port: port(number?)?,
    })
}

/// The pod behind an endpoint, when its target is one.
fn target_pod(target: Option<&ObjectReference>) -> Option<String> {
    target
        .filter(|r| r.kind.as_deref() == Some("Pod"))
        .and_then(|r| r.name.clone())
}

/// A Namespace: its name and labels.
pub fn namespace(ns: &KNamespace) -> Result<Object, Unusable> {
    let name = ns
        .metadata
        .name
        .clone()
        .ok_or_else(|| unusable("Namespace", Some(""), None, "metadata.name is missing"))?;
    Ok(Object::Namespace(Namespace {
        name,
        labels: ns.metadata.labels.clone().unwrap_or_default(),
    }))
}

/// A Service with its cluster IP (none when headless) and its TCP ports.
pub fn service(svc: &KService) -> Result<Object, Unusable> {
    let (ns, name, fail) = named("Service", &svc.metadata)?;
    let spec = svc.spec.clone().unwrap_or_default();
    // "None" marks a headless Service; ExternalName Services have no cluster IP either.
    let cluster_ip = spec.cluster_ip.as_deref().filter(|ip| *ip != "None");
    let cluster_ip = optional_ip("spec.clusterIP", cluster_ip).map_err(|r| fail(&r))?;
    let mut ports = Vec::new();
    for (i, p) in spec.ports.unwrap_or_default().iter().enumerate() {
        let number = port(p.port)
            .ok_or_else(|| fail(&format!("spec.ports[{i}].port {} is out of range", p.port)))?;
        if !is_tcp(p.protocol.as_deref()) {
            continue;
        }
        ports.push(ServicePort {
            name: p.name.clone().filter(|n| !n.is_empty()),
            port: number,
            protocol: Protocol::detect(p.app_protocol.as_deref(), p.name.as_deref()),
        });
    }
    Ok(Object::Service(Service {
        namespace: ns.clone(),
        name: name.clone(),
        cluster_ip,
        ports,
    }))
}

/// A `discovery.k8s.io/v1` EndpointSlice: its TCP ports and every address of its endpoints.
pub fn endpoint_slice(slice: &KEndpointSlice) -> Result<Object, Unusable> {
    let (ns, name, fail) = named("EndpointSlice", &slice.metadata)?;
    let service = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .cloned()
        .ok_or_else(|| fail(&format!("the label {SERVICE_NAME_LABEL} is missing")))?;
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| endpoint_port(p.name.as_ref(), p.protocol.as_deref(), p.port))
        .collect();
    let mut endpoints = Vec::new();
    for e in slice.endpoints.iter().flatten() {
        let pod = target_pod(e.target_ref.as_ref());
        // Kubernetes documents an unset `ready` as ready.
        let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
        for address in &e.addresses {
            let address = address.parse::<IpAddr>().map_err(|_| {
                fail(&format!(
                    "endpoint address {address:?} is not an IP address"
                ))
            })?;
            endpoints.push(Endpoint {
                address,
                ready,
                zone: e.zone.clone(),
                pod: pod.clone(),
            });
        }
    }
    Ok(Object::EndpointSlice(EndpointSlice {
        namespace: ns.clone(),
        name: name.clone(),
        service,
        ports,
        endpoints,
    }))
}

/// The zone label a `discovery.k8s.io/v1beta1` endpoint carries in its `topology`.
const ZONE_TOPOLOGY_KEY: &str = "topology.kubernetes.io/zone";

/// A Gateway API `HTTPRoute` (`v1`), as JSON.
pub fn http_route(route: &serde_json::Value) -> Result<Object, Unusable> {
    gateway_route("HTTPRoute", route).map(|r| Object::HttpRoute(Box::new(r)))
}

/// A Gateway API `GRPCRoute` (`v1`), as JSON.
pub fn grpc_route(route: &serde_json::Value) -> Result<Object, Unusable> {
    gateway_route("GRPCRoute", route).map(|r| Object::GrpcRoute(Box::new(r)))
}

fn gateway_route<S: serde::de::DeserializeOwned>(
    kind: &'static str,
    route: &serde_json::Value,
) -> Result<remora_api::gateway::Object<S>, Unusable> {
    let r: remora_api::gateway::Object<S> = remora_api::decode(route.clone())
        .map_err(|e| unusable_json(kind, route, &e.to_string()))?;
    // The model keys it by namespace and name, which it must have.
    named(kind, &r.metadata).map(drop)?;
    Ok(r)
}

/// A Gateway API `ReferenceGrant` (`v1beta1` or `v1`, which have one schema), as JSON. Its
/// `to` entries other than core Services are left out: routes reference nothing else.
pub fn reference_grant(grant: &serde_json::Value) -> Result<Object, Unusable> {
    #[derive(serde::Deserialize)]
    struct Grant {
        metadata: ObjectMeta,
        spec: GrantSpec,
    }
    #[derive(serde::Deserialize)]
    struct GrantSpec {
        from: Vec<From>,
        to: Vec<To>,
    }
    #[derive(serde::Deserialize)]
    struct From {
        group: String,
        kind: String,
        namespace: String,
    }
    #[derive(serde::Deserialize)]
    struct To {
        group: String,
        kind: String,
        name: Option<String>,
    }
    let g: Grant = serde_json::from_value(grant.clone())
        .map_err(|e| unusable_json("ReferenceGrant", grant, &format!("spec: {e}")))?;
    let (namespace, name, _) = named("ReferenceGrant", &g.metadata)?;
    Ok(Object::ReferenceGrant(ReferenceGrant {
        namespace: namespace.clone(),
        name: name.clone(),
        from: g
            .spec
            .from
            .into_iter()
            .map(|f| (f.group, f.kind, f.namespace))
            .collect(),
        to: g
            .spec
            .to
            .into_iter()
            .filter(|t| t.group.is_empty() && t.kind == "Service")
            .map(|t| t.name.filter(|n| !n.is_empty()))
            .collect(),
    }))
}

/// An EndpointSlice of `discovery.k8s.io/v1beta1` (Kubernetes 1.17-1.20, where `v1` is not
/// served), as JSON: the same shape as `v1` except that an endpoint's zone sits in its
/// `topology` map.
pub fn endpoint_slice_v1beta1(slice: &serde_json::Value) -> Result<Object, Unusable> {
    let mut v1 = slice.clone();
    for e in v1
        .get_mut("endpoints")
        .and_then(serde_json::Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let zone = e
            .pointer(&format!(
                "/topology/{}",
                ZONE_TOPOLOGY_KEY.replace('/', "~1")
            ))
            .cloned();
        if let Some(e) = e.as_object_mut() {
            e.remove("topology");
            if let Some(zone) = zone {
                e.insert("zone".into(), zone);
            }
        }
    }
    // The typed decoder insists on the version it was generated for.
    if let Some(o) = v1.as_object_mut() {
        o.insert("apiVersion".into(), "discovery.k8s.io/v1".into());
        o.insert("kind".into(), "EndpointSlice".into());
    }
    let typed: KEndpointSlice = serde_json::from_value(v1)
        .map_err(|e| unusable_json("EndpointSlice", slice, &e.to_string()))?;
    endpoint_slice(&typed)
}

/// A core `Endpoints` object, for servers that serve no EndpointSlices: one model slice per
/// subset (each subset has its own ports), named `NAME.N`.
pub fn endpoints(ep: &KEndpoints) -> Result<Vec<Object>, Unusable> {
    let (ns, name, fail) = named("Endpoints", &ep.metadata)?;
    let mut out = Vec::new();
    for (i, subset) in ep.subsets.iter().flatten().enumerate() {
        let ports = subset
            .ports
            .iter()
            .flatten()
            .filter_map(|p| endpoint_port(p.name.as_ref(), p.protocol.as_deref(), Some(p.port)))
            .collect();
        let ready = subset.addresses.iter().flatten().map(|a| (a, true));
        let unready = subset
            .not_ready_addresses
            .iter()
            .flatten()
            .map(|a| (a, false));
        let mut endpoints = Vec::new();
        for (a, ready) in ready.chain(unready) {
            let address = a.ip.parse::<IpAddr>().map_err(|_| {
                fail(&format!(
                    "subsets[{i}]: address {:?} is not an IP address",
                    a.ip
                ))
            })?;
            endpoints.push(Endpoint {
                address,
                ready,
                zone: None,
                pod: target_pod(a.target_ref.as_ref()),
            });
        }
        out.push(Object::EndpointSlice(EndpointSlice {
            namespace: ns.clone(),
            name: format!("{name}.{i}"),
            service: name.clone(),
            ports,
            endpoints,
        }));
    }
    Ok(out)
}

/// A Pod: its labels, service account, IP, whether it carries the proxy, and the TCP ports
/// of its other containers.
pub fn pod(pod: &KPod) -> Result<Object, Unusable> {
    let (ns, name, fail) = named("Pod", &pod.metadata)?;
    let spec = pod.spec.clone().unwrap_or_default();
    let sidecar = proxy_container(&spec).is_some();
    let ports = spec
        .containers
        .iter()
        .filter(|c| c.name != PROXY_CONTAINER)
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| is_tcp(p.protocol.as_deref()))
        .filter_map(|p| {
            Some(ContainerPort {
                port: port(p.container_port)?,
                protocol: Protocol::detect(None, p.name.as_deref()),
            })
        })
        .collect();
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref());
    let ip = optional_ip("status.podIP", ip).map_err(|r| fail(&r))?;
    Ok(Object::Pod(Pod {
        namespace: ns.clone(),
        name: name.clone(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        service_account: spec
            .service_account_name
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into()),
        ip,
        sidecar,
        ports,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("valid object")
    }

    #[test]
    fn a_reference_grant_keeps_its_service_targets() {
        let grant = json!({
            "apiVersion": "gateway.networking.k8s.io/v1beta1",
            "kind": "ReferenceGrant",
            "metadata": {"namespace": "team-b", "name": "routes"},
            "spec": {
                "from": [{"group": "remora.dev", "kind": "TrafficRoute", "namespace": "team-a"}],
                "to": [
                    {"group": "", "kind": "Service", "name": "api"},
                    {"group": "", "kind": "Service"},
                    {"group": "", "kind": "Secret", "name": "tls"}
                ]
            }
        });
        let Ok(Object::ReferenceGrant(g)) = reference_grant(&grant) else {
            panic!("converts")
        };
        assert_eq!(
            g.from,
            [("remora.dev".into(), "TrafficRoute".into(), "team-a".into())]
        );
        assert_eq!(g.to, [Some("api".to_owned()), None]);
        assert!(g.admits(("remora.dev", "TrafficRoute"), "team-a", "web"));
        assert!(!g.admits(("remora.dev", "TrafficRoute"), "team-c", "web"));

        let broken =
            json!({"metadata": {"namespace": "team-b", "name": "g"}, "spec": {"from": []}});
        let e = reference_grant(&broken).expect_err("no spec.to");
        assert_eq!(e.name, "team-b/g");
        assert!(e.reason.contains("missing field `to`"), "{e}");
    }

    #[test]
    fn service_ports_protocols_and_headless() {
        let svc: KService = from(json!({
            "metadata": {"namespace": "shop", "name": "cart"},
            "spec": {"clusterIP": "10.96.0.7", "ports": [
                {"name": "http", "port": 80},
                {"name": "grpc-api", "port": 9000},
                {"port": 5432, "appProtocol": "tcp"},
                {"name": "dns", "port": 53, "protocol": "UDP"}
            ]}
        }));
        let Ok(Object::Service(s)) = service(&svc) else {
            panic!("converts")
        };
        assert_eq!(s.cluster_ip, Some("10.96.0.7".parse().expect("ip")));
        let ports: Vec<_> = s.ports.iter().map(|p| (p.port, p.protocol)).collect();
        assert_eq!(
            ports,
            [
                (80, Protocol::Http),
                (9000, Protocol::Http2),
                (5432, Protocol::Tcp)
            ]
        );

        let headless: KService = from(json!({
            "metadata": {"namespace": "shop", "name": "db"},
            "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}
        }));
        let Ok(Object::Service(s)) = service(&headless) else {
            panic!("converts")
        };
        assert_eq!(s.cluster_ip, None);
    }

    #[test]
    fn bad_service_names_the_field() {
        let svc: KService = from(json!({
            "metadata": {"namespace": "shop", "name": "cart"},
            "spec": {"clusterIP": "ten", "ports": []}
        }));
        let err = service(&svc).expect_err("bad IP");
        assert_eq!(err.name, "shop/cart");
        assert!(err.reason.contains("spec.clusterIP"), "{err}");
    }

    #[test]
    fn slice_readiness_zone_and_pod() {
        let slice: KEndpointSlice = from(json!({
            "metadata": {"namespace": "shop", "name": "cart-x1",
                         "labels": {"kubernetes.io/service-name": "cart"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "zone": "a",
                 "targetRef": {"kind": "Pod", "name": "cart-1"}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false}}
            ]
        }));
        let Ok(Object::EndpointSlice(s)) = endpoint_slice(&slice) else {
            panic!("converts")
        };
        assert_eq!(s.service, "cart");
        assert_eq!(s.ports[0].port, 8080);
        assert!(s.endpoints[0].ready);
        assert_eq!(s.endpoints[0].zone.as_deref(), Some("a"));
        assert_eq!(s.endpoints[0].pod.as_deref(), Some("cart-1"));
        assert!(!s.endpoints[1].ready);
        assert_eq!(s.endpoints[1].pod, None);

        let orphan: KEndpointSlice = from(json!({
            "metadata": {"namespace": "shop", "name": "x"}, "addressType": "IPv4", "endpoints": []
        }));
        assert!(endpoint_slice(&orphan).is_err());
    }

    #[test]
    fn v1beta1_slice_takes_its_zone_from_topology() {
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1beta1", "kind": "EndpointSlice",
            "metadata": {"namespace": "shop", "name": "cart-x1",
                         "labels": {"kubernetes.io/service-name": "cart"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["127.1.0.2"], "conditions": {"ready": true},
                 "topology": {"kubernetes.io/hostname": "n1", "topology.kubernetes.io/zone": "b"},
                 "targetRef": {"kind": "Pod", "name": "cart-1"}},
                {"addresses": ["127.1.0.3"], "conditions": {"ready": false}}
            ]
        });
        let Ok(Object::EndpointSlice(s)) = endpoint_slice_v1beta1(&slice) else {
            panic!("converts")
        };
        assert_eq!((s.service.as_str(), s.ports[0].port), ("cart", 8080));
        assert_eq!(s.endpoints[0].zone.as_deref(), Some("b"));
        assert_eq!(s.endpoints[0].pod.as_deref(), Some("cart-1"));
        assert!(s.endpoints[0].ready && !s.endpoints[1].ready);
        assert_eq!(s.endpoints[1].zone, None);

        let broken = json!({"metadata": {"namespace": "shop", "name": "x"}, "endpoints": 3});
        let err = endpoint_slice_v1beta1(&broken).expect_err("not a slice");
        assert_eq!(err.name, "shop/x");
    }

    #[test]
    fn endpoints_become_one_slice_per_subset() {
        let ep: KEndpoints = from(json!({
            "metadata": {"namespace": "shop", "name": "cart"},
            "subsets": [
                {"addresses": [{"ip": "10.0.0.1", "targetRef": {"kind": "Pod", "name": "cart-1"}}],
                 "notReadyAddresses": [{"ip": "10.0.0.2"}],
                 "ports": [{"name": "http", "port": 8080}]},
                {"addresses": [{"ip": "10.0.0.3"}], "ports": [{"name": "http", "port": 9090}]}
            ]
        }));
        let slices = endpoints(&ep).expect("converts");
        let [Object::EndpointSlice(a), Object::EndpointSlice(b)] = slices.as_slice() else {
            panic!("two slices: {slices:?}")
        };
        assert_eq!((a.name.as_str(), a.service.as_str()), ("cart.0", "cart"));
        assert_eq!(a.ports[0].port, 8080);
        let seen: Vec<(String, bool)> = a
            .endpoints
            .iter()
            .map(|e| (e.address.to_string(), e.ready))
            .collect();
        assert_eq!(
            seen,
            [("10.0.0.1".into(), true), ("10.0.0.2".into(), false)]
        );
        assert_eq!(a.endpoints[0].pod.as_deref(), Some("cart-1"));
        assert_eq!((b.name.as_str(), b.ports[0].port), ("cart.1", 9090));

        let bad: KEndpoints = from(json!({
            "metadata": {"namespace": "shop", "name": "cart"},
            "subsets": [{"addresses": [{"ip": "ten"}]}]
        }));
        assert!(
            endpoints(&bad)
                .expect_err("bad ip")
                .reason
                .contains("subsets[0]")
        );
    }

    #[test]
    fn pod_with_and_without_sidecar() {
        let p: KPod = from(json!({
            "metadata": {"namespace": "shop", "name": "cart-1", "labels": {"app": "cart"}},
            "spec": {"serviceAccountName": "cart", "containers": [
                {"name": "app", "ports": [{"name": "http", "containerPort": 8080}]},
                {"name": "remora-proxy", "ports": [{"containerPort": 15000}]}
            ]},
            "status": {"podIP": "10.0.0.1"}
        }));
        let Ok(Object::Pod(p)) = pod(&p) else {
            panic!("converts")
        };
        assert!(p.sidecar);
        assert_eq!(p.service_account, "cart");
        assert_eq!(p.ip, Some("10.0.0.1".parse().expect("ip")));
        assert_eq!(
            p.ports,
            [ContainerPort {
                port: 8080,
                protocol: Protocol::Http
            }]
        );

        let plain: KPod = from(json!({
            "metadata": {"namespace": "shop", "name": "job"},
            "spec": {"containers": [{"name": "main"}]}
        }));
        let Ok(Object::Pod(p)) = pod(&plain) else {
            panic!("converts")
        };
        assert!(!p.sidecar);
        assert_eq!(p.service_account, "default");
        assert_eq!(p.ip, None);
    }

    #[test]
    fn a_native_sidecar_makes_a_proxy() {
        let p: KPod = from(json!({
            "metadata": {"namespace": "shop", "name": "cart-1"},
            "spec": {"initContainers": [{"name": "remora-proxy", "restartPolicy": "Always"}],
                "containers": [{"name": "app"}]}
        }));
        let Ok(Object::Pod(p)) = pod(&p) else {
            panic!("converts")
        };
        assert!(p.sidecar);
    }
}
