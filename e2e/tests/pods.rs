//! Pods that run for real on the stub cluster: the API server stores a pod with the sidecar
//! the controller's webhook injected, and the pod runner (`support::pods`) runs exactly that
//! spec in a network namespace on a test bridge. The injected Envoy starts from its
//! `--config-yaml` bootstrap, connects over xDS to the controller on the bridge address, and
//! syncs; the pod turns Ready only once the real probes pass; the echo app answers on the pod
//! address. Deleting the workload removes every namespace, veth and bridge the test made.

mod support;

use std::{net::SocketAddr, sync::Arc};

use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    apps::v1::Deployment,
    core::v1::{Namespace, Pod, Service},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use remora_api::SidecarPolicy;
use remora_inject::ControlPlane;
use remora_model::input::ObjectKey;
use remora_xds::sync::SyncState;
use serde_json::json;
use support::{
    cluster, eventually, get, injection,
    pods::{
        Runner,
        container::{ECHO_IMAGE, Images},
        net::{Bridge, link_list, netns_list},
    },
};

const PROXY: &str = "remora-proxy";
/// Puts this run's namespace, and only it, under the test's webhook.
const TEST_LABEL: &str = "remora.dev/inject-test";

/// The echo app on `0.0.0.0:8080`, named after its pod. It declares no container port and
/// its Service listens on 9080: today's proxy binds `<podIP>:<containerPort>` inbound and
/// `0.0.0.0:<servicePort>` outbound, which would collide with an app on `0.0.0.0:8080`.
fn echo_deployment() -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "echo"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "echo"}},
            "template": {
                "metadata": {"labels": {"app": "echo"}},
                "spec": {"containers": [{
                    "name": "app", "image": format!("{ECHO_IMAGE}:1"),
                    "args": ["--listen", "0.0.0.0:8080", "--name", "$(POD_NAME)"],
                    "env": [{"name": "POD_NAME",
                             "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
                }]}
            }
        }
    }))
    .expect("a Deployment")
}

fn echo_service() -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"},
        "spec": {"selector": {"app": "echo"},
                 "ports": [{"name": "http", "port": 9080, "targetPort": 8080}]}
    }))
    .expect("a Service")
}

fn is_ready(p: &Pod) -> bool {
    let conditions = p.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A meshed namespace under this test's webhook, with a policy and the echo Service.
async fn meshed_namespace(client: &Client) -> String {
    cluster::install_crds(client).await;
    let ns = cluster::test_namespace(client, "pods").await;
    let labels = json!({"metadata": {"labels": {TEST_LABEL: ns}}});
    Api::<Namespace>::all(client.clone())
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .expect("label the test namespace");
    let policy: SidecarPolicy = serde_json::from_value(json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "SidecarPolicy",
        "metadata": {"name": "mesh"},
        "spec": {"proxy": {"image": "envoyproxy/envoy", "version": "1.40.0"}}
    }))
    .expect("a SidecarPolicy");
    Api::<SidecarPolicy>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &policy)
        .await
        .expect("create the policy");
    Api::<Service>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &echo_service())
        .await
        .expect("create the Service");
    ns
}

/// An injecting controller whose xDS listens on the bridge, where the pods reach it.
async fn controller(
    client: &Client,
    ns: &str,
    webhook: &str,
    bridge: &Bridge,
) -> remora_controller::Controller {
    let port = injection::free_port();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(
            &PostParams::default(),
            &injection::mutating_configuration(webhook, (TEST_LABEL, ns), port),
        )
        .await
        .expect("register the webhook");
    let xds = std::net::TcpListener::bind((bridge.gateway(), 0))
        .and_then(|l| l.local_addr())
        .expect("a free port on the bridge");
    let mut config = injection::controller_config(ns, webhook, port);
    config.xds_addr = xds;
    if let Some(inject) = &mut config.inject {
        inject.control_plane = ControlPlane {
            xds_host: bridge.gateway().to_string(),
            xds_port: xds.port(),
            delta: false,
        };
    }
    let controller = remora_controller::start(client.clone(), config)
        .await
        .expect("the controller starts");
    // Dry runs go through admission and store nothing: probe until one comes back injected.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let probe: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
        "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]}
    }))
    .expect("a Pod");
    eventually(60, "a dry-run pod to come back injected", async || {
        let p = pods.create(&dry_run, &probe).await.ok()?;
        let spec = p.spec?;
        spec.containers
            .iter()
            .any(|c| c.name == PROXY)
            .then_some(())
    })
    .await;
    controller
}

/// What `ip netns exec <netns> getent ahostsv4 <name>` answers (IPv4 only: an IPv6 lookup
/// misses the hosts file and waits for a DNS server the pod cannot reach).
fn resolve_in(netns: &str, name: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", netns, "getent", "ahostsv4", name])
        .output()
        .expect("ip runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// In the pod's namespace, the echo Service's names resolve to its ClusterIP as cluster DNS
/// would answer them.
async fn assert_services_resolve(client: &Client, ns: &str, netns: &str) {
    let service = Api::<Service>::namespaced(client.clone(), ns)
        .get("echo")
        .await
        .expect("the Service");
    let cluster_ip = service
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");
    for host in ["echo".to_owned(), format!("echo.{ns}.svc.cluster.local")] {
        let answer = resolve_in(netns, &host);
        assert!(
            answer.starts_with(&format!("{cluster_ip} ")),
            "{host}: {answer:?}"
        );
    }
}

/// The pod's Envoy is the one connected to the controller, every type ACKed, and the probe
/// the runner passed is its own readiness on the pod address.
async fn assert_proxy_runs(
    controller: &remora_controller::Controller,
    proxy: ObjectKey,
    readiness: SocketAddr,
) {
    eventually(
        30,
        "the pod's proxy to be connected and synced",
        async || {
            let s = controller.xds.get(&proxy)?;
            (s.types.len() == 4 && s.types.values().all(|t| t.state() == SyncState::Synced))
                .then_some(())
        },
    )
    .await;
    let ready = get(readiness, "probe", "/ready", &[])
        .await
        .expect("Envoy's readiness port answers");
    assert_eq!(ready.status, 200);
    assert!(ready.body.contains("LIVE"), "{:?}", ready.body);
}

/// Unregisters the webhook, stops the controller and deletes the test namespace.
async fn cleanup(
    client: &Client,
    webhook: &str,
    controller: remora_controller::Controller,
    ns: &str,
) {
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete(webhook, &DeleteParams::default())
        .await
        .expect("unregister the webhook");
    controller.stop().await;
    Api::<Namespace>::all(client.clone())
        .delete(ns, &DeleteParams::default())
        .await
        .expect("delete the test namespace");
}

/// Scales the echo Deployment to zero and waits until its pod is gone, for the API server
/// and for the runner.
async fn scale_to_zero(client: &Client, ns: &str, runner: &Runner) {
    // Scaling the workload to zero deletes the pod (at once, where the garbage collector
    // would take its time): the runner stops it and removes what it made.
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    let none = json!({"spec": {"replicas": 0}});
    deployments
        .patch("echo", &PatchParams::default(), &Patch::Merge(&none))
        .await
        .expect("scale the Deployment to zero");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    eventually(60, "the echo pods to be gone", async || {
        let list = pods
            .list(&ListParams::default().labels("app=echo"))
            .await
            .ok()?;
        (list.items.is_empty() && runner.running() == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_pod_runs_for_real_and_turns_ready_through_its_probes() {
    let Some(client) = cluster::client().await else {
        return;
    };
    let t0 = std::time::Instant::now();
    let bridge = Arc::new(Bridge::create());
    let ns = meshed_namespace(&client).await;
    let webhook = format!("remora-e2e-pods-{ns}");
    let controller = controller(&client, &ns, &webhook, &bridge).await;
    let runner = Runner::start(&client, &ns, &bridge, Images::standard());

    eprintln!("controller injecting after {:?}", t0.elapsed());
    let started = std::time::Instant::now();
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &echo_deployment())
        .await
        .expect("create the Deployment");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let selector = ListParams::default().labels("app=echo");
    let pod = eventually(90, "the echo pod to turn Ready", async || {
        let list = pods.list(&selector).await.ok()?;
        list.items.into_iter().find(is_ready)
    })
    .await;
    eprintln!(
        "the pod turned Ready {:?} after its Deployment",
        started.elapsed()
    );
    assert_eq!(runner.failures(), Vec::<String>::new());

    // The API server's spec: the proxy first (classic layout on 1.20), then the app.
    let spec = pod.spec.as_ref().expect("a spec");
    let names: Vec<_> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, [PROXY, "app"]);
    let name = pod.metadata.name.clone().expect("a name");
    let status = pod.status.as_ref().expect("a status");
    let ip = status.pod_ip.clone().expect("a pod IP");
    assert!(ip.starts_with(&format!("10.253.{}.", bridge.index)), "{ip}");
    for c in status.container_statuses.iter().flatten() {
        assert!(c.ready, "{} is not ready: {c:?}", c.name);
    }

    let addr = |port: u16| SocketAddr::new(ip.parse().expect("an IP"), port);
    assert_proxy_runs(
        &controller,
        ObjectKey::new(ns.clone(), name.clone()),
        addr(15021),
    )
    .await;

    // The app answers on the pod address from the root namespace, named by the downward API.
    let reply = get(addr(8080), "echo", "/hello", &[])
        .await
        .expect("the echo app answers");
    assert_eq!(reply.body, format!("{name} /hello"));

    // In the pod, Service names resolve to their ClusterIP as cluster DNS would.
    let netns = runner.netns(&name).expect("the pod's namespace");
    assert_services_resolve(&client, &ns, &netns).await;

    scale_to_zero(&client, &ns, &runner).await;
    eprintln!("pods gone after {:?}", t0.elapsed());
    assert!(!netns_list().contains(&netns), "{netns} is still there");
    let veths = format!("rmr{}p", bridge.index);
    assert!(
        !link_list().iter().any(|l| l.starts_with(&veths)),
        "a veth is left: {:?}",
        link_list()
    );

    cleanup(&client, &webhook, controller, &ns).await;
    drop(runner);
    let bridge_name = bridge.name.clone();
    drop(bridge);
    assert!(
        !link_list().contains(&bridge_name),
        "{bridge_name} is still there"
    );
    eprintln!("done after {:?}", t0.elapsed());
}
