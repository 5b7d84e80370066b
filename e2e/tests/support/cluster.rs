//! The Kubernetes API server the cluster tests run against: the stub 1.20 cluster that
//! `e2e/cluster/with-cluster` starts, or the cluster `REMORA_E2E_KUBECONFIG` names.
//! Without one, a cluster test says it was skipped; under CI (`CI=true`) it fails instead,
//! so a broken harness can never pass as a skip.

use std::time::Duration;

use k8s_openapi::{
    api::{
        authentication::v1::TokenRequest,
        core::v1::{Namespace, Pod, ServiceAccount},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, CustomResourceExt,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ObjectMeta, Patch, PatchParams,
        PostParams,
    },
};
use remora_api::{AccessPolicy, SidecarPolicy, TrafficRoute};
use serde::Deserialize;

use super::eventually;

/// A client for the e2e cluster, or `None` (the caller returns) when there is none.
pub async fn client() -> Option<Client> {
    if std::env::var_os("REMORA_E2E_CLUSTER").is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no cluster: CI runs the tests under e2e/cluster/with-cluster"
        );
        eprintln!("skipped: no cluster (run under e2e/cluster/with-cluster)");
        return None;
    }
    let config = kube::Config::infer()
        .await
        .expect("KUBECONFIG names a usable cluster");
    Some(Client::try_from(config).expect("a client for the cluster"))
}

/// Whether pods must be made Running by the test (the stub cluster has no kubelet).
pub fn is_stub() -> bool {
    std::env::var("REMORA_E2E_CLUSTER").as_deref() == Ok("stub")
}

/// Installs the CRDs (as the code generates them) once per cluster and waits until they
/// are served. Older servers drop the schema parts they do not know, as `kubectl apply
/// --validate=false` would.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [
        TrafficRoute::crd(),
        SidecarPolicy::crd(),
        AccessPolicy::crd(),
    ] {
        let name = crd.metadata.name.clone().expect("CRDs are named");
        match api.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("cannot create CRD {name}: {e}"),
        }
        for _ in 0..100 {
            let established = api
                .get(&name)
                .await
                .ok()
                .and_then(|c| c.status)
                .is_some_and(|s| {
                    s.conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if established {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Discovery of a new group can lag its CRD's Established condition.
    let routes: Api<TrafficRoute> = Api::all(client.clone());
    for _ in 0..100 {
        if routes.list(&Default::default()).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the remora.dev CRDs are not served after 10 s");
}

/// Creates a namespace in the mesh with a unique name starting with `prefix`.
pub async fn test_namespace(client: &Client, prefix: &str) -> String {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            labels: Some([("remora.dev/mesh".to_owned(), "enabled".to_owned())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let created = api
        .create(&PostParams::default(), &ns)
        .await
        .expect("create a test namespace");
    created.metadata.name.expect("the server names it")
}

/// Restarts the stub cluster's API server in place (same flags, same etcd, so every object
/// stays) and waits until it answers again. Watches break meanwhile; clients must resume or
/// re-list by themselves. Returns `false` (and does nothing) on an external cluster.
pub async fn restart_apiserver(client: &Client) -> bool {
    if !is_stub() {
        eprintln!("skipped the API server restart: not the stub cluster");
        return false;
    }
    let kubeconfig = std::env::var("KUBECONFIG").expect("with-cluster sets KUBECONFIG");
    let state = std::path::Path::new(&kubeconfig)
        .parent()
        .expect("the kubeconfig sits in the state dir")
        .to_owned();
    let pid_file = state.join("kube-apiserver.pid");
    let pid = std::fs::read_to_string(&pid_file).expect("the API server's pid file");
    let pid = pid.trim();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("its command line");
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let status = std::process::Command::new("kill")
        .args(["-TERM", pid])
        .status()
        .expect("kill runs");
    assert!(status.success(), "cannot stop the API server");
    for _ in 0..200 {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(state.join("kube-apiserver.log"))
        .expect("the API server's log");
    // As e2e/cluster/up starts it: its own session, an empty environment. It outlives the
    // test; e2e/cluster/down stops it through the pid file, so it is never waited for here.
    #[allow(clippy::zombie_processes)]
    let child = std::process::Command::new("setsid")
        .arg("env")
        .arg("-i")
        .arg("PATH=/usr/local/bin:/usr/bin:/bin")
        .arg(format!("HOME={}", state.display()))
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("the API server starts again");
    std::fs::write(&pid_file, child.id().to_string()).expect("the pid file");
    let api: Api<Namespace> = Api::all(client.clone());
    for _ in 0..600 {
        if api.get("default").await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the API server did not come back within 60 s");
}

/// Does what a kubelet would for a pod of the stub cluster: binds it to the stub node and
/// reports it running and ready at `ip` (see e2e/cluster/README.md, "Playing kubelet").
pub async fn run_pod(client: &Client, namespace: &str, name: &str, ip: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let node = std::env::var("REMORA_NODE_NAME").unwrap_or_else(|_| "remora-e2e".into());
    let binding = serde_json::json!({
        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}
    });
    pods.create_subresource::<_, serde_json::Value>(
        "binding",
        name,
        &PostParams::default(),
        &binding,
    )
    .await
    .expect("the pod binds to the stub node");
    let at = "2026-01-01T00:00:00Z";
    let condition =
        |t: &str| serde_json::json!({"type": t, "status": "True", "lastTransitionTime": at});
    let conditions = ["PodScheduled", "Initialized", "ContainersReady", "Ready"].map(condition);
    let status = serde_json::json!({"status": {
        "phase": "Running", "hostIP": "127.0.0.1", "podIP": ip, "podIPs": [{"ip": ip}],
        "startTime": at, "conditions": conditions,
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("the pod reports ready");
}

/// Creates a pod, retrying while its new namespace's `default` ServiceAccount does not
/// exist yet (admission refuses pods until it does).
pub async fn create_pod(client: &Client, namespace: &str, pod: &Pod) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    for _ in 0..100 {
        match pods.create(&PostParams::default(), pod).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.message.contains("service account") => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot create the pod: {e}"),
        }
    }
    panic!("the namespace's default ServiceAccount did not appear within 10 s");
}

/// Creates what the Helm chart grants the controller (its ServiceAccount, Roles,
/// ClusterRoles and bindings, rendered by `helm template` for release `release` in
/// `namespace`) and returns a client that authenticates as that ServiceAccount.
pub async fn client_with_chart_rbac(client: &Client, release: &str, namespace: &str) -> Client {
    let rendered = std::process::Command::new("helm")
        .args([
            "template",
            release,
            "charts/remora",
            "--namespace",
            namespace,
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("helm runs (scripts/env.sh puts it on PATH)");
    assert!(
        rendered.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let text = String::from_utf8(rendered.stdout).expect("UTF-8");
    let mut service_account = None;
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let value = serde_json::Value::deserialize(doc).expect("YAML");
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        if ![
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ClusterRole",
            "ClusterRoleBinding",
        ]
        .contains(&kind.as_str())
        {
            continue;
        }
        let object: DynamicObject = serde_json::from_value(value).expect("an object");
        let (group, version) = object
            .types
            .as_ref()
            .map(|t| match t.api_version.split_once('/') {
                Some((g, v)) => (g.to_owned(), v.to_owned()),
                None => (String::new(), t.api_version.clone()),
            })
            .expect("apiVersion");
        let gvk = GroupVersionKind::gvk(&group, &version, &kind);
        let plural = format!("{}s", kind.to_lowercase());
        let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
        let api: Api<DynamicObject> = if kind.starts_with("Cluster") {
            Api::all_with(client.clone(), &resource)
        } else {
            Api::namespaced_with(client.clone(), namespace, &resource)
        };
        api.create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("cannot create the chart's {kind}: {e}"));
        if kind == "ServiceAccount" {
            service_account = object.metadata.name.clone();
        }
    }
    let name = service_account.expect("the chart has a ServiceAccount");
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request: TokenRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": [], "expirationSeconds": 3600}
    }))
    .expect("a TokenRequest");
    let token: String = eventually(10, "a token for the chart's ServiceAccount", async || {
        let issued = accounts
            .create_token_request(&name, &PostParams::default(), &request)
            .await
            .ok()?;
        issued.status?.token
    })
    .await;
    let mut config = kube::Config::infer().await.expect("the cluster's config");
    config.auth_info =
        serde_json::from_value(serde_json::json!({"token": token})).expect("token auth");
    Client::try_from(config).expect("a client as the ServiceAccount")
}

/// Stand-ins for Gateway API's CRDs (see the files for why they are not the upstream ones),
/// with the plural each serves.
const GATEWAY_CRDS: [(&str, &str); 3] = [
    (
        "referencegrants",
        include_str!("../../cluster/gateway-api/referencegrants.yaml"),
    ),
    (
        "httproutes",
        include_str!("../../cluster/gateway-api/httproutes.yaml"),
    ),
    (
        "grpcroutes",
        include_str!("../../cluster/gateway-api/grpcroutes.yaml"),
    ),
];
const STAND_IN_LABEL: &str = "remora.dev/e2e-stand-in";

/// Whether the cluster serves the Gateway API resource `plural` (in either version).
async fn gateway_served(client: &Client, plural: &str) -> bool {
    for version in ["v1", "v1beta1"] {
        if let Ok(list) = client
            .list_api_group_resources(&format!("gateway.networking.k8s.io/{version}"))
            .await
            && list.resources.iter().any(|r| r.name == plural)
        {
            return true;
        }
    }
    false
}

/// Removes the stand-in Gateway API CRDs, if a test left them, and waits until discovery no
/// longer lists them. Returns `false` (and removes nothing) when the cluster has a real
/// Gateway API installation, which a test must never touch.
pub async fn remove_gateway_stand_ins(client: &Client) -> bool {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (plural, _) in GATEWAY_CRDS {
        let name = format!("{plural}.gateway.networking.k8s.io");
        if let Ok(crd) = api.get(&name).await {
            let ours = crd.metadata.labels.as_ref();
            if !ours.is_some_and(|l| l.contains_key(STAND_IN_LABEL)) {
                return false;
            }
            match api.delete(&name, &Default::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => panic!("cannot delete the stand-in CRD {name}: {e}"),
            }
        }
        eventually(
            30,
            &format!("{plural} to be no longer served"),
            async || (!gateway_served(client, plural).await).then_some(()),
        )
        .await;
    }
    true
}

/// Installs the stand-in Gateway API CRDs and waits until discovery lists them.
pub async fn install_gateway_stand_ins(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (plural, text) in GATEWAY_CRDS {
        let crd: CustomResourceDefinition = serde_yaml_ng::from_str(text).expect("the CRD");
        match api.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("cannot create the stand-in CRD for {plural}: {e}"),
        }
        eventually(30, &format!("{plural} to be served"), async || {
            gateway_served(client, plural).await.then_some(())
        })
        .await;
    }
}

/// A node of the stub cluster whose kubelet is the test's listener on `kubelet_port` (the
/// API server dials a node by its InternalIP, 127.0.0.1), and on it a ready pod `remora-0`
/// as the chart makes the controller's: its labels, its gRPC port `grpc-xds` (18000) and
/// `env`. Returns the node's name, which the caller deletes.
pub async fn stand_in_controller(
    client: &Client,
    namespace: &str,
    kubelet_port: u16,
    env: serde_json::Value,
) -> String {
    let node = format!("{namespace}-node");
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let meta = serde_json::json!({"metadata": {"name": node}});
    let created = serde_json::from_value(meta).expect("a node");
    nodes
        .create(&PostParams::default(), &created)
        .await
        .expect("the node");
    let status = serde_json::json!({"status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
    }});
    nodes
        .patch_status(&node, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("the node's address");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "remora-0", "labels": {
            "app.kubernetes.io/name": "remora",
            "app.kubernetes.io/instance": "remora",
            "app.kubernetes.io/component": "controller",
        }},
        "spec": {"nodeName": node, "containers": [{
            "name": "controller", "image": "example.invalid/remora",
            "ports": [{"name": "grpc-xds", "containerPort": 18000}],
            "env": env,
        }]},
    }))
    .expect("a pod");
    create_pod(client, namespace, &pod).await;
    let ready = serde_json::json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True"}]}});
    Api::<Pod>::namespaced(client.clone(), namespace)
        .patch_status("remora-0", &PatchParams::default(), &Patch::Merge(&ready))
        .await
        .expect("the pod reports ready");
    node
}

/// Deletes a test namespace, and its pods at once: the stub node has no kubelet to confirm a
/// graceful delete, so they would linger, their policies gone with the namespace, and count
/// as proxies other tests' routes reach. The namespace is terminating, so nothing recreates
/// them.
pub async fn delete_namespace(client: &Client, ns: &str) {
    Api::<Namespace>::all(client.clone())
        .delete(ns, &DeleteParams::default())
        .await
        .expect("delete the test namespace");
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    Api::<Pod>::namespaced(client.clone(), ns)
        .delete_collection(&now, &Default::default())
        .await
        .expect("delete the test's pods");
}
