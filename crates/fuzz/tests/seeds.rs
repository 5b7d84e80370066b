//! The seeds of the targets whose inputs are not files a user writes: AdmissionReviews
//! wrapping the example objects and pods, framed ADS requests, and programs of the xDS
//! state machines. They are committed under `corpus/<target>/seed-*`;
//! `REMORA_WRITE_SEEDS=1 cargo test -p remora-fuzz --test seeds` writes them again.

use std::{fs, path::PathBuf};

use envoy_types::pb::envoy::{
    config::core::v3::Node,
    service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest},
};
use prost::Message;
use serde_json::{Value, json};

const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn review(operation: &str, kind: Value, namespace: &str, object: Value) -> Vec<u8> {
    let request = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": kind,
            "resource": {"group": "remora.dev", "version": "v1alpha1", "resource": "x"},
            "name": "r",
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "admin"},
            "object": object,
            "oldObject": null,
            "dryRun": false
        }
    });
    serde_json::to_vec_pretty(&request).expect("JSON")
}

fn admission_seeds() -> Seeds {
    let mut seeds = Vec::new();
    let mut files: Vec<PathBuf> = ["../../examples", "../../crates/api/tests/invalid"]
        .iter()
        .flat_map(|d| fs::read_dir(root().join(d)).expect("a folder"))
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = fs::read_to_string(&file).expect("UTF-8");
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let value: Value = serde::Deserialize::deserialize(doc).expect("YAML");
            let Some(kind @ ("TrafficRoute" | "SidecarPolicy")) = value["kind"].as_str() else {
                continue;
            };
            let stem = file.file_stem().and_then(|s| s.to_str()).expect("a name");
            let kind_ref = json!({"group": "remora.dev", "version": "v1alpha1", "kind": kind});
            seeds.push((
                format!("seed-{stem}-{i}"),
                review("CREATE", kind_ref, "demo", value),
            ));
        }
    }
    let pod = |extra: Value| {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-7d9f-", "labels": {"app": "web"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-7d9f", "uid": "u", "controller": true}]},
            "spec": {
                "serviceAccountName": "web",
                "containers": [{"name": "web", "image": "shop/web:3",
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}}}]
            }
        });
        if let (Some(spec), Value::Object(extra)) = (pod["spec"].as_object_mut(), extra) {
            spec.extend(extra);
        }
        pod
    };
    let pod_kind = json!({"group": "", "version": "v1", "kind": "Pod"});
    for (name, namespace, extra) in [
        ("plain", "shop", json!({})),
        ("opted-out-namespace", "off-shop", json!({})),
        ("restricted", "restricted-mtls", json!({})),
        (
            "classic",
            "classic",
            json!({"initContainers": [{"name": "migrate", "image": "m:1"}]}),
        ),
        (
            "baseline",
            "baseline",
            json!({"securityContext": {"runAsUser": 1337}}),
        ),
        (
            "volume-clash",
            "shop",
            json!({"volumes": [{"name": "shipper-state", "emptyDir": {}}]}),
        ),
        ("host-network", "shop", json!({"hostNetwork": true})),
    ] {
        seeds.push((
            format!("seed-pod-{name}"),
            review("CREATE", pod_kind.clone(), namespace, pod(extra)),
        ));
    }
    seeds
}

fn frame(message: &impl Message) -> Vec<u8> {
    let mut wire = vec![0];
    wire.extend((message.encoded_len() as u32).to_be_bytes());
    message.encode(&mut wire).expect("room");
    wire
}

fn sotw_request(type_url: &str, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.into(),
        resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn frame_seeds() -> Seeds {
    let node = Node {
        id: "sidecar~10.0.0.1~web-7d9f-x.shop~shop.svc.cluster.local".into(),
        cluster: "web".into(),
        ..Default::default()
    };
    let mut first = sotw_request(CLUSTER, &[], "", "");
    first.node = Some(node.clone());
    let sotw: Vec<u8> = [
        first,
        sotw_request(CLUSTER, &[], "1", "1"),
        sotw_request(ENDPOINT, &["a", "b"], "", ""),
        sotw_request(LISTENER, &[], "", ""),
        sotw_request(ROUTE, &["a"], "", ""),
    ]
    .iter()
    .flat_map(frame)
    .collect();
    let delta: Vec<u8> = [
        DeltaDiscoveryRequest {
            node: Some(node),
            type_url: CLUSTER.into(),
            initial_resource_versions: [("a".to_owned(), "1".to_owned())].into_iter().collect(),
            ..Default::default()
        },
        DeltaDiscoveryRequest {
            type_url: ENDPOINT.into(),
            resource_names_subscribe: vec!["a".into(), "b".into()],
            ..Default::default()
        },
        DeltaDiscoveryRequest {
            type_url: ENDPOINT.into(),
            resource_names_unsubscribe: vec!["b".into()],
            response_nonce: "1".into(),
            ..Default::default()
        },
    ]
    .iter()
    .flat_map(frame)
    .collect();
    let with_seed = |seed: u8, wire: &[u8]| [&[seed][..], wire].concat();
    vec![
        ("seed-sotw-whole".into(), with_seed(3, &sotw)),
        ("seed-sotw-bytes".into(), with_seed(0, &sotw)),
        ("seed-delta".into(), with_seed(7, &delta)),
        ("seed-compressed".into(), with_seed(1, &[1, 0, 0, 0, 1, 0])),
        ("seed-oversized".into(), with_seed(1, &[0, 0, 0x40, 0, 1])),
    ]
}

/// Publishes a snapshot: every type holds the names of `present`, versions kept by `keep`,
/// names of `own` in the proxy's own layer.
fn publish(present: u8, own: u8, keep: u8) -> Vec<u8> {
    let mut op = vec![0x00];
    for _ in 0..4 {
        op.extend([present, own, keep]);
    }
    op
}

fn sotw_programs() -> Seeds {
    let connect = [
        publish(0x0f, 0x00, 0x00),
        // For each type: a request answered at once, then its ACK.
        vec![0x02, 0x00, 0x01, 0x04],
        vec![0x12, 0x03, 0x01, 0x14],
        vec![0x22, 0x00, 0x01, 0x24],
        vec![0x32, 0x01, 0x01, 0x34],
    ]
    .concat();
    let churn = [
        connect.clone(),
        publish(0x07, 0x02, 0x03),
        vec![0x03],
        // NACK the routes, then settle.
        vec![0x3d, 0x06],
        publish(0x0b, 0x19, 0x1c),
        vec![0x03, 0x06],
        // Reconnect, settle again.
        vec![0x87, 0x03, 0x06],
    ]
    .concat();
    let resubscribe = [
        connect.clone(),
        vec![0x11, 0x0c, 0x00, 0x03, 0x06],
        vec![0x31, 0x10, 0x00, 0x03, 0x06],
        publish(0x03, 0x00, 0x01),
        vec![0x03, 0x06, 0x87, 0x06, 0x07],
    ]
    .concat();
    vec![
        ("seed-connect".into(), [connect, vec![0x06]].concat()),
        ("seed-churn".into(), churn),
        ("seed-resubscribe".into(), resubscribe),
    ]
}

fn delta_programs() -> Seeds {
    let connect = [
        publish(0x0f, 0x00, 0x00),
        vec![0x02, 0x00, 0x00, 0x00, 0x04],
        vec![0x12, 0x03, 0x00, 0x00, 0x14],
        vec![0x22, 0x00, 0x00, 0x00, 0x24],
        vec![0x32, 0x01, 0x00, 0x00, 0x34],
    ]
    .concat();
    let churn = [
        connect.clone(),
        publish(0x07, 0x02, 0x03),
        vec![0x03],
        vec![0x3d, 0x06],
        publish(0x0b, 0x19, 0x1c),
        vec![0x03, 0x06],
        vec![0x87, 0x03, 0x06],
    ]
    .concat();
    let resubscribe = [
        connect.clone(),
        // Unsubscribe b, subscribe c and d; wildcard off and on for clusters.
        vec![0x11, 0x0c, 0x02, 0x00, 0x03, 0x06],
        vec![0x01, 0x00, 0x10, 0x00, 0x03, 0x06],
        vec![0x01, 0x10, 0x00, 0x00, 0x03, 0x06],
        publish(0x03, 0x00, 0x01),
        vec![0x03, 0x06, 0x87, 0x06, 0x07],
    ]
    .concat();
    vec![
        ("seed-connect".into(), [connect, vec![0x06]].concat()),
        ("seed-churn".into(), churn),
        ("seed-resubscribe".into(), resubscribe),
    ]
}

/// Named inputs of one target.
type Seeds = Vec<(String, Vec<u8>)>;

fn seeds() -> Vec<(&'static str, Seeds)> {
    vec![
        ("admission_review", admission_seeds()),
        ("grpc_frames", frame_seeds()),
        ("sotw", sotw_programs()),
        ("delta", delta_programs()),
    ]
}

#[test]
fn the_generated_seeds_run_clean_and_are_committed() {
    let write = std::env::var_os("REMORA_WRITE_SEEDS").is_some();
    for (target, seeds) in seeds() {
        let (_, run) = remora_fuzz::TARGETS
            .into_iter()
            .find(|(t, _)| *t == target)
            .expect("a target");
        let dir = root().join("corpus").join(target);
        for (name, data) in seeds {
            run(&data);
            let path = dir.join(&name);
            if write {
                fs::create_dir_all(&dir).expect("a corpus folder");
                fs::write(&path, &data).expect("written");
            } else {
                let committed = fs::read(&path).unwrap_or_default();
                assert!(
                    committed == data,
                    "{} is not the generated seed; run REMORA_WRITE_SEEDS=1 cargo test -p remora-fuzz --test seeds",
                    path.display()
                );
            }
        }
    }
}
