//! Sidecar injection against a real Kubernetes API server: the server calls the controller's
//! mutating webhook over HTTPS for every pod kube-controller-manager creates, and the pods
//! are stored with the proxy (the classic layout on 1.20) exactly when their namespace opted
//! in and they did not opt out.

mod support;

use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    apps::v1::Deployment,
    core::v1::{Namespace, Pod},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use remora_api::SidecarPolicy;
use serde_json::json;
use support::{cluster, eventually, injection, ports};

const PROXY: &str = "remora-proxy";
/// Puts this run's namespaces, and only them, under the test's webhook.
const TEST_LABEL: &str = "remora.dev/inject-test";

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1"}]}
            }
        }
    }))
    .expect("a Deployment")
}

fn pod(name: &str, annotations: serde_json::Value, port: i32) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1",
                                 "ports": [{"containerPort": port}]}]}
    }))
    .expect("a Pod")
}

fn containers(p: &Pod) -> Vec<&str> {
    p.spec
        .iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .map(|c| c.name.as_str())
        .collect()
}

fn annotation<'a>(p: &'a Pod, key: &str) -> Option<&'a str> {
    p.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// A test namespace labelled for this run's webhook; `in_mesh: false` drops the mesh label.
async fn namespace(client: &Client, prefix: &str, run: Option<&str>, in_mesh: bool) -> String {
    let ns = cluster::test_namespace(client, prefix).await;
    let run = run.unwrap_or(&ns).to_owned();
    let mesh = in_mesh.then_some("enabled");
    let labels = json!({"metadata": {"labels": {TEST_LABEL: run, "remora.dev/mesh": mesh}}});
    Api::<Namespace>::all(client.clone())
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .expect("label the test namespace");
    ns
}

/// The pods of the Deployment `app` once it has `count` of them.
async fn pods_of(client: &Client, ns: &str, app: &str, count: usize) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = ListParams::default().labels(&format!("app={app}"));
    eventually(60, &format!("{count} pods of {ns}/{app}"), async || {
        let list = pods.list(&selector).await.ok()?;
        (list.items.len() == count).then_some(list.items)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_the_sidecar_exactly_where_the_mesh_wants_it() {
    let Some(client) = cluster::client().await else {
        return;
    };
    cluster::install_crds(&client).await;
    let meshed = namespace(&client, "inject", None, true).await;
    let plain = namespace(&client, "inject-plain", Some(&meshed), false).await;
    let policy: SidecarPolicy = serde_json::from_value(json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "SidecarPolicy",
        "metadata": {"name": "mesh"},
        "spec": {"proxy": {"image": "envoyproxy/envoy", "version": "v1.40.0"}}
    }))
    .expect("a SidecarPolicy");
    Api::<SidecarPolicy>::namespaced(client.clone(), &meshed)
        .create(&PostParams::default(), &policy)
        .await
        .expect("create the policy");

    let port = ports::free_port();
    let name = format!("remora-e2e-inject-{meshed}");
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    configs
        .create(
            &PostParams::default(),
            &injection::mutating_configuration(&name, (TEST_LABEL, &meshed), port),
        )
        .await
        .expect("register the webhook");
    let config = injection::controller_config(&meshed, &name, port);
    let controller = remora_controller::start(client.clone(), config)
        .await
        .expect("the controller starts");

    // The API server learns of the configuration and its caBundle through a watch, and the
    // controller must have read the policy: dry runs go through admission and store
    // nothing, so they probe until a pod comes back injected.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &meshed);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    eventually(
        60,
        "a dry-run pod to come back injected",
        async || match pods.create(&dry_run, &pod("probe", json!({}), 8080)).await {
            Ok(p) if containers(&p).contains(&PROXY) => Some(()),
            Ok(_) => {
                eprintln!("not yet: no sidecar");
                None
            }
            Err(e) => {
                eprintln!("not yet: {e}");
                None
            }
        },
    )
    .await;

    let deployments = |ns: &str| Api::<Deployment>::namespaced(client.clone(), ns);
    deployments(&meshed)
        .create(&PostParams::default(), &deployment("web"))
        .await
        .expect("the meshed Deployment");
    deployments(&plain)
        .create(&PostParams::default(), &deployment("web"))
        .await
        .expect("the plain Deployment");
    let opted_out = pods
        .create(
            &PostParams::default(),
            &pod(
                "opted-out",
                json!({"sidecar.remora.dev/inject": "false"}),
                8080,
            ),
        )
        .await
        .expect("the opted-out pod");

    // kube-controller-manager made these pods; only the API server's call to the webhook
    // can have put the proxy in.
    for p in pods_of(&client, &meshed, "web", 2).await {
        let spec = p.spec.as_ref().expect("a spec");
        assert_eq!(spec.containers[0].name, PROXY, "classic: the proxy first");
        assert_eq!(
            spec.containers[0].image.as_deref(),
            Some("envoyproxy/envoy:v1.40.0"),
            "the image reference Envoy publishes: repository, then the v-prefixed version"
        );
        assert!(
            spec.containers[0]
                .lifecycle
                .as_ref()
                .is_some_and(|l| l.post_start.is_some()),
            "classic: a postStart hook holds the app until the proxy is ready"
        );
        assert_eq!(spec.containers[1].name, "web");
        assert!(
            spec.init_containers
                .iter()
                .flatten()
                .all(|c| c.name != PROXY)
        );
        assert_eq!(
            annotation(&p, "sidecar.remora.dev/version"),
            Some("v1.40.0")
        );
        let governing = format!("{meshed}/mesh");
        assert_eq!(
            annotation(&p, "sidecar.remora.dev/policy"),
            Some(governing.as_str())
        );
        assert_eq!(
            annotation(&p, "sidecar.remora.dev/workload"),
            Some("Deployment/web"),
            "the source the proxy's stats name, from the pod's owner at admission"
        );
    }
    assert_eq!(containers(&opted_out), ["web"]);
    for p in pods_of(&client, &plain, "web", 2).await {
        assert_eq!(containers(&p), ["web"], "{plain} has not opted in");
    }

    // A pod whose port is the proxy's is refused, naming the field: admitted without the
    // sidecar it would escape its policy.
    let message = match pods
        .create(&PostParams::default(), &pod("clash", json!({}), 15021))
        .await
    {
        Err(kube::Error::Api(e)) => e.message,
        Err(e) => panic!("not the webhook's refusal: {e}"),
        Ok(_) => panic!("the clashing pod was stored"),
    };
    eprintln!("the API server said: {message}");
    assert!(
        message.contains("spec.containers[0].ports[0].containerPort: port 15021"),
        "{message}"
    );

    let text = controller.metrics.render(&controller.xds);
    let count = |labels: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("remora_injections_total{{{labels}}} ")))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(count(r#"result="injected",reason="""#) >= 3, "{text}");
    assert!(
        count(r#"result="skipped",reason="opted_out""#) >= 1,
        "{text}"
    );
    assert!(
        count(r#"result="skipped",reason="namespace_not_in_mesh""#) >= 2,
        "{text}"
    );
    assert!(
        count(r#"result="refused",reason="port_taken""#) >= 1,
        "{text}"
    );

    configs
        .delete(&name, &DeleteParams::default())
        .await
        .expect("unregister the webhook");
    controller.stop().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [&meshed, &plain] {
        namespaces
            .delete(ns, &DeleteParams::default())
            .await
            .expect("delete the test namespace");
    }
}
