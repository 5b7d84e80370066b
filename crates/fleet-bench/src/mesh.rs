//! The synthetic mesh as API objects: what a cluster of that many sidecar pods holds, written
//! so that the controller reads the synthetic mesh back (the same namespaces, labels, ports,
//! endpoints, policies and routes). Pure: the objects are JSON (or the CRD types); writing
//! them is `crate::cluster`'s.
//!
//! Where a cluster differs from the synthetic plan: Services carry no selector and their
//! slices are written here (so the API server's EndpointSlice controller has no work with
//! ten thousand pods, and endpoints are exactly the plan's), the API server allocates the
//! cluster IPs (the plan's first one is the `kubernetes` Service's), and pods are never
//! bound to a node (a pod without one is deleted at once with its namespace; nothing here
//! needs a kubelet's view of it).

use std::collections::BTreeSet;

use remora_api::{SidecarPolicy, TrafficRoute, sidecar_policy::PROXY_CONTAINER};
use remora_controller::endpoints::EndpointApi;
use remora_model::input::{
    ContainerPort, EndpointSlice, MeshSettings, Namespace, Object, ObjectKey, Pod, Protocol,
    Service,
};
use remora_synthetic::Synthetic;
use serde_json::{Value, json};

/// The label every namespace of a run carries, with the run's id: what teardown deletes.
pub const RUN_LABEL: &str = "remora.dev/fleet-bench";

/// The label Kubernetes puts on an EndpointSlice to name its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Where a `discovery.k8s.io/v1beta1` endpoint keeps its zone.
const ZONE_TOPOLOGY_KEY: &str = "topology.kubernetes.io/zone";
/// What a pod's status says: running and ready since this moment.
const STARTED: &str = "2026-01-01T00:00:00Z";

/// A pod and the status a kubelet would report for it.
#[derive(Clone, Debug, PartialEq)]
pub struct PodObjects {
    /// The pod as created.
    pub pod: Value,
    /// The merge patch of its status subresource: running and ready at its IP.
    pub status: Value,
}

/// Every object of the mesh, by kind, in the order they are created.
#[derive(Clone, Debug)]
pub struct ApiMesh {
    /// The root namespace: the fleet policy's, and the replicas' (Lease and reports).
    pub root: String,
    /// Every namespace the run creates, the root's included.
    pub namespaces: Vec<Value>,
    /// One per Service of the plan, which its pods run as.
    pub service_accounts: Vec<Value>,
    /// The Services, without selectors.
    pub services: Vec<Value>,
    /// One EndpointSlice per Service, in the version the server serves.
    pub slices: Vec<Value>,
    /// The sidecar pods.
    pub pods: Vec<PodObjects>,
    /// The fleet policy and, with egress scopes, one per namespace.
    pub policies: Vec<SidecarPolicy>,
    /// The routes.
    pub routes: Vec<TrafficRoute>,
    /// Every proxy (sidecar pod), in the plan's order: the fleet connects them in this one.
    pub proxies: Vec<ObjectKey>,
}

impl ApiMesh {
    /// The objects of `synthetic`, the plan's root namespace moved to `root`, every
    /// namespace labelled with `run`, slices in the shape `slices` says.
    pub fn new(synthetic: &Synthetic, root: &str, run: &str, slices: EndpointApi) -> ApiMesh {
        let planned_root = MeshSettings::default().root_namespace;
        let ns = |n: &str| {
            if n == planned_root {
                root.to_owned()
            } else {
                n.to_owned()
            }
        };
        let mut mesh = ApiMesh {
            root: root.to_owned(),
            namespaces: Vec::new(),
            service_accounts: Vec::new(),
            services: Vec::new(),
            slices: Vec::new(),
            pods: Vec::new(),
            policies: Vec::new(),
            routes: Vec::new(),
            proxies: Vec::new(),
        };
        let mut accounts = BTreeSet::new();
        for object in synthetic.objects() {
            match object {
                Object::Namespace(n) => mesh.namespaces.push(namespace(&n, &ns(&n.name), run)),
                Object::Service(s) => mesh.services.push(service(&s)),
                Object::EndpointSlice(s) => mesh.slices.push(slice(&s, slices)),
                Object::Pod(p) => {
                    accounts.insert((p.namespace.clone(), p.service_account.clone()));
                    mesh.proxies.push(ObjectKey::new(&p.namespace, &p.name));
                    mesh.pods.push(pod(&p));
                }
                Object::SidecarPolicy(mut p) => {
                    let namespace = p.metadata.namespace.as_deref().map(&ns);
                    p.metadata = fresh(&p.metadata, namespace);
                    mesh.policies.push(*p);
                }
                Object::TrafficRoute(mut r) => {
                    r.metadata = fresh(&r.metadata, r.metadata.namespace.clone());
                    mesh.routes.push(*r);
                }
                // Not created: the bench's API server has no Gateway API CRDs, so its routes'
                // backends in the shared namespaces resolve as RefNotPermitted (their share
                // fails, and proxies get those clusters no more).
                Object::ReferenceGrant(_) => {}
                Object::HttpRoute(_) | Object::GrpcRoute(_) | Object::AccessPolicy(_) => {
                    unreachable!("synthetic meshes route with TrafficRoutes and allow every call")
                }
            }
        }
        mesh.service_accounts = accounts
            .iter()
            .map(|(namespace, name)| service_account(namespace, name))
            .collect();
        mesh
    }

    /// The names of every namespace the run creates.
    pub fn namespace_names(&self) -> Vec<String> {
        self.namespaces
            .iter()
            .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// How many objects the run creates, and how many API calls that takes (a pod's status
    /// is a call of its own).
    pub fn counts(&self) -> (usize, usize) {
        let objects = self.namespaces.len()
            + self.service_accounts.len()
            + self.services.len()
            + self.slices.len()
            + self.pods.len()
            + self.policies.len()
            + self.routes.len();
        (objects, objects + self.pods.len())
    }
}

/// Only what a client sets: the name and the namespace.
fn fresh(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    namespace: Option<String>,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: meta.name.clone(),
        namespace,
        labels: meta.labels.clone(),
        annotations: meta.annotations.clone(),
        ..Default::default()
    }
}

fn namespace(n: &Namespace, name: &str, run: &str) -> Value {
    let mut labels = serde_json::Map::new();
    for (k, v) in &n.labels {
        labels.insert(k.clone(), json!(v));
    }
    labels.insert(RUN_LABEL.to_owned(), json!(run));
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn service_account(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"namespace": namespace, "name": name},
        "automountServiceAccountToken": false
    })
}

fn service(s: &Service) -> Value {
    let ports: Vec<Value> = s
        .ports
        .iter()
        .map(|p| json!({"name": p.name, "port": p.port, "targetPort": p.port, "protocol": "TCP"}))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": s.namespace, "name": s.name},
        "spec": {"ports": ports}
    })
}

fn slice(s: &EndpointSlice, api: EndpointApi) -> Value {
    let v1 = api == EndpointApi::SlicesV1;
    let endpoints: Vec<Value> = s
        .endpoints
        .iter()
        .map(|e| {
            let mut endpoint = json!({
                "addresses": [e.address.to_string()],
                "conditions": {"ready": e.ready},
            });
            if let Some(pod) = &e.pod {
                endpoint["targetRef"] =
                    json!({"kind": "Pod", "namespace": s.namespace, "name": pod});
            }
            match (&e.zone, v1) {
                (Some(zone), true) => endpoint["zone"] = json!(zone),
                (Some(zone), false) => endpoint["topology"] = json!({ZONE_TOPOLOGY_KEY: zone}),
                (None, _) => {}
            }
            endpoint
        })
        .collect();
    let ports: Vec<Value> = s
        .ports
        .iter()
        .map(|p| json!({"name": p.name, "port": p.port, "protocol": "TCP"}))
        .collect();
    let version = if v1 { "v1" } else { "v1beta1" };
    json!({
        "apiVersion": format!("discovery.k8s.io/{version}"), "kind": "EndpointSlice",
        "metadata": {
            "namespace": s.namespace, "name": s.name,
            "labels": {SERVICE_NAME_LABEL: s.service}
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports
    })
}

/// A container port named so that the controller detects its protocol as planned.
fn port_name(p: &ContainerPort) -> String {
    let word = match p.protocol {
        Protocol::Http => "http",
        Protocol::Http2 => "grpc",
        Protocol::Tcp => "tcp",
    };
    format!("{word}-{}", p.port)
}

fn pod(p: &Pod) -> PodObjects {
    let ports: Vec<Value> = p
        .ports
        .iter()
        .map(|c| json!({"name": port_name(c), "containerPort": c.port}))
        .collect();
    let mut containers = vec![json!({
        "name": "app", "image": "example.invalid/app:1", "ports": ports
    })];
    if p.sidecar {
        containers.push(json!({
            "name": PROXY_CONTAINER, "image": "example.invalid/remora-proxy:1.40.0"
        }));
    }
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": p.namespace, "name": p.name, "labels": p.labels},
        "spec": {
            "serviceAccountName": p.service_account,
            "automountServiceAccountToken": false,
            "containers": containers
        }
    });
    let condition = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": STARTED});
    let ip = p.ip.map(|ip| ip.to_string());
    let conditions = ["PodScheduled", "Initialized", "ContainersReady", "Ready"].map(condition);
    let status = json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": ip.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
        "startTime": STARTED,
        "conditions": conditions,
    }});
    PodObjects { pod, status }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::{
        core::v1::{Namespace as KNamespace, Pod as KPod, Service as KService},
        discovery::v1::EndpointSlice as KSlice,
    };
    use remora_inputs::convert;
    use remora_xds_load::shape_for;

    use super::*;

    fn mesh(api: EndpointApi) -> (Synthetic, ApiMesh) {
        let synthetic = Synthetic::new(shape_for(100, true));
        let mesh = ApiMesh::new(&synthetic, "bench-root", "run-1", api);
        (synthetic, mesh)
    }

    fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> T {
        serde_json::from_value(v.clone()).expect("an object of its kind")
    }

    /// The planned objects of one kind, as the model has them.
    fn planned<T>(synthetic: &Synthetic, pick: impl Fn(Object) -> Option<T>) -> Vec<T> {
        synthetic.objects().into_iter().filter_map(pick).collect()
    }

    fn pod_of(o: Object) -> Option<Pod> {
        match o {
            Object::Pod(p) => Some(p),
            _ => None,
        }
    }

    fn slice_of(o: Object) -> Option<EndpointSlice> {
        match o {
            Object::EndpointSlice(s) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn pods_read_back_as_the_planned_sidecar_pods_once_running() {
        let (synthetic, mesh) = mesh(EndpointApi::SlicesV1beta1);
        let wanted = planned(&synthetic, pod_of);
        assert_eq!(mesh.pods.len(), wanted.len());
        for (objects, wanted) in mesh.pods.iter().zip(&wanted) {
            let mut pod = objects.pod.clone();
            pod["status"] = objects.status["status"].clone();
            let read = convert::pod(&typed::<KPod>(&pod)).expect("converts");
            assert_eq!(pod_of(read).as_ref(), Some(wanted));
        }
        let first = &mesh.proxies[0];
        assert_eq!(
            mesh.pods[0].pod["metadata"]["name"].as_str(),
            Some(&*first.name)
        );
    }

    #[test]
    fn services_read_back_with_their_ports_and_an_allocated_address() {
        let (synthetic, mesh) = mesh(EndpointApi::SlicesV1beta1);
        let wanted = planned(&synthetic, |o| match o {
            Object::Service(s) => Some(s),
            _ => None,
        });
        assert_eq!(mesh.services.len(), wanted.len());
        for (object, wanted) in mesh.services.iter().zip(&wanted) {
            assert!(object["spec"].get("selector").is_none());
            let Ok(Object::Service(read)) = convert::service(&typed::<KService>(object)) else {
                panic!("a Service");
            };
            assert_eq!(read.ports, wanted.ports);
            assert_eq!(read.cluster_ip, None, "the server allocates it");
        }
    }

    #[test]
    fn slices_read_back_as_planned_in_either_version() {
        let (synthetic, beta) = mesh(EndpointApi::SlicesV1beta1);
        let (_, v1) = mesh(EndpointApi::SlicesV1);
        let wanted = planned(&synthetic, slice_of);
        assert_eq!(beta.slices.len(), wanted.len());
        for ((beta, v1), wanted) in beta.slices.iter().zip(&v1.slices).zip(&wanted) {
            assert_eq!(beta["apiVersion"], "discovery.k8s.io/v1beta1");
            let read = convert::endpoint_slice_v1beta1(beta).expect("converts");
            assert_eq!(slice_of(read).as_ref(), Some(wanted));
            let read = convert::endpoint_slice(&typed::<KSlice>(v1)).expect("converts");
            assert_eq!(slice_of(read).as_ref(), Some(wanted));
        }
    }

    #[test]
    fn namespaces_carry_the_run_and_the_root_moves() {
        let (synthetic, mesh) = mesh(EndpointApi::SlicesV1);
        let names = mesh.namespace_names();
        assert_eq!(names[0], "bench-root");
        assert_eq!(names.len(), synthetic.shape().namespaces + 1);
        for n in &mesh.namespaces {
            let n: KNamespace = typed(n);
            let labels = n.metadata.labels.expect("labels");
            assert_eq!(labels.get(RUN_LABEL).map(String::as_str), Some("run-1"));
        }
        let Ok(Object::Namespace(read)) =
            convert::namespace(&typed::<KNamespace>(&mesh.namespaces[1]))
        else {
            panic!("a namespace");
        };
        assert_eq!(
            read.labels.get("remora.dev/mesh").map(String::as_str),
            Some("enabled")
        );
        let fleet = &mesh.policies[0];
        assert_eq!(fleet.metadata.namespace.as_deref(), Some("bench-root"));
        // Egress scopes: one policy per namespace beside the fleet's.
        assert_eq!(mesh.policies.len(), 1 + synthetic.shape().namespaces);
    }

    #[test]
    fn routes_and_policies_carry_only_what_a_client_sets() {
        let (synthetic, mesh) = mesh(EndpointApi::SlicesV1);
        assert_eq!(mesh.routes.len(), synthetic.shape().routes);
        let route = &mesh.routes[0];
        assert!(route.metadata.generation.is_none());
        assert!(route.metadata.creation_timestamp.is_none());
        let Object::TrafficRoute(planned) = synthetic.route(0) else {
            panic!("a route")
        };
        assert_eq!(route.spec, planned.spec);
        assert_eq!(route.metadata.namespace, planned.metadata.namespace);
        // Every pod's account exists: one per Service.
        assert_eq!(mesh.service_accounts.len(), synthetic.shape().services);
        let (objects, calls) = mesh.counts();
        assert_eq!(calls, objects + 100);
    }
}
