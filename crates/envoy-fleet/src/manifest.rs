//! Model inputs written back as the Kubernetes manifests local mode reads: the inverse of
//! `remora_inputs::convert` for what the synthetic mesh holds.

use remora_model::input::{
    ContainerPort, EndpointSlice, Namespace, Object, Pod, Protocol, ReferenceGrant, Service,
};
use serde_json::{Value, json};

/// The label Kubernetes puts on an EndpointSlice to name its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The container that makes a pod a proxy.
const PROXY_CONTAINER: &str = remora_api::sidecar_policy::PROXY_CONTAINER;

/// Why an object could not be written as YAML.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {kind} {name} as YAML: {source}")]
pub struct RenderError {
    kind: &'static str,
    name: String,
    source: serde_yaml_ng::Error,
}

/// The objects as one multi-document YAML file.
pub fn yaml(objects: &[Object]) -> Result<String, RenderError> {
    let mut out = String::new();
    for o in objects {
        let doc = document(o).map_err(|source| RenderError {
            kind: o.kind_name(),
            name: o.key().to_string(),
            source,
        })?;
        out.push_str("---\n");
        out.push_str(&doc);
    }
    Ok(out)
}

/// One object as a YAML document.
fn document(o: &Object) -> Result<String, serde_yaml_ng::Error> {
    match o {
        Object::Namespace(ns) => serde_yaml_ng::to_string(&namespace(ns)),
        Object::Service(s) => serde_yaml_ng::to_string(&service(s)),
        Object::EndpointSlice(s) => serde_yaml_ng::to_string(&endpoint_slice(s)),
        Object::Pod(p) => serde_yaml_ng::to_string(&pod(p)),
        // The custom resources are the API's own types, which serialize as their manifests.
        Object::SidecarPolicy(p) => serde_yaml_ng::to_string(p),
        Object::TrafficRoute(r) => serde_yaml_ng::to_string(r),
        Object::AccessPolicy(p) => serde_yaml_ng::to_string(p),
        Object::ReferenceGrant(g) => serde_yaml_ng::to_string(&reference_grant(g)),
        Object::HttpRoute(r) => {
            serde_yaml_ng::to_string(&gateway(o, json!(r.metadata), json!(r.spec)))
        }
        Object::GrpcRoute(r) => {
            serde_yaml_ng::to_string(&gateway(o, json!(r.metadata), json!(r.spec)))
        }
    }
}

/// A Gateway API route's manifest (the types leave out `apiVersion` and `kind`).
fn gateway(o: &Object, metadata: Value, spec: Value) -> Value {
    json!({
        "apiVersion": format!("{}/v1", remora_api::gateway::GROUP),
        "kind": o.kind_name(),
        "metadata": metadata,
        "spec": spec,
    })
}

fn reference_grant(g: &ReferenceGrant) -> Value {
    let from: Vec<Value> = g
        .from
        .iter()
        .map(|(group, kind, namespace)| json!({"group": group, "kind": kind, "namespace": namespace}))
        .collect();
    let to: Vec<Value> =
        g.to.iter()
            .map(|name| json!({"group": "", "kind": "Service", "name": name}))
            .collect();
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"namespace": g.namespace, "name": g.name},
        "spec": {"from": from, "to": to},
    })
}

fn endpoint_slice(s: &EndpointSlice) -> Value {
    let ports: Vec<Value> = s
        .ports
        .iter()
        .map(|p| json!({"name": p.name, "port": p.port}))
        .collect();
    let endpoints: Vec<Value> = s
        .endpoints
        .iter()
        .map(|e| {
            json!({
                "addresses": [e.address.to_string()],
                "conditions": {"ready": e.ready},
                "zone": e.zone,
                "targetRef": e.pod.as_ref().map(|p| json!({"kind": "Pod", "name": p})),
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "namespace": s.namespace,
            "name": s.name,
            "labels": {SERVICE_NAME_LABEL: s.service},
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    })
}

fn namespace(ns: &Namespace) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": ns.name, "labels": ns.labels},
    })
}

fn service(s: &Service) -> Value {
    let ports: Vec<Value> = s
        .ports
        .iter()
        .map(|p| json!({"name": p.name, "port": p.port, "appProtocol": app_protocol(p.protocol)}))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": s.namespace, "name": s.name},
        "spec": {
            "clusterIP": s.cluster_ip.map_or_else(|| "None".to_owned(), |ip| ip.to_string()),
            "ports": ports,
        },
    })
}

fn pod(p: &Pod) -> Value {
    let mut containers = vec![json!({
        "name": "app",
        "image": "example/app:1",
        "ports": p.ports.iter().map(container_port).collect::<Vec<_>>(),
    })];
    if p.sidecar {
        containers.push(json!({"name": PROXY_CONTAINER, "image": "envoyproxy/envoy:v1.40.0"}));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": p.namespace, "name": p.name, "labels": p.labels},
        "spec": {"serviceAccountName": p.service_account, "containers": containers},
        "status": {"podIP": p.ip.map(|ip| ip.to_string())},
    })
}

/// A container port is read by its name alone, so the name carries the protocol.
fn container_port(p: &ContainerPort) -> Value {
    json!({
        "name": format!("{}-{}", app_protocol(p.protocol), p.port),
        "containerPort": p.port,
    })
}

fn app_protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Http => "http",
        Protocol::Http2 => "http2",
        Protocol::Tcp => "tcp",
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use remora_inputs::{Loaded, folder::load_text};

    use super::*;
    use crate::mesh::{FleetMesh, Version};

    #[test]
    fn local_mode_reads_back_every_object_as_it_was() {
        let mesh = FleetMesh::new(20, true, 2);
        let mut objects = mesh.objects();
        objects.push(mesh.route(Version::V1));
        let text = yaml(&objects).expect("renders");
        let mut loaded = Loaded::default();
        load_text(Path::new("mesh.yaml"), &text, 0, &mut loaded);
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        // The model's inputs carry no equality of their own; their debug form is what local
        // mode compares to tell a change.
        let debug = |o: &[Object]| o.iter().map(|o| format!("{o:?}")).collect::<Vec<_>>();
        assert_eq!(debug(&loaded.objects), debug(&objects));
    }
}
