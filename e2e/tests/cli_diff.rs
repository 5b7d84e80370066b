//! `remora diff` against a real Kubernetes API server: the live state read as the controller
//! reads it, a change tried on top, and what it would do to a proxy's config. The folder case,
//! with a proxy the change leaves alone, is in crates/cli/tests/diff.rs.

mod support;

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::{Api, api::PostParams};
use remora_api::TrafficRoute;
use serde_json::{Value, json};
use support::{cluster, pods::container::remora_bin};

fn split(v1: u32, v2: u32) -> Value {
    json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "TrafficRoute",
        "metadata": {"name": "reviews"},
        "spec": {"parentRefs": [{"name": "reviews", "port": 9080}],
                 "http": [{"backendRefs": [
                     {"name": "reviews", "subset": {"version": "v1"}, "weight": v1},
                     {"name": "reviews", "subset": {"version": "v2"}, "weight": v2}]}]},
    })
}

fn pod(name: &str, labels: Value, proxy: bool) -> Pod {
    let mut containers = vec![json!({"name": "app", "image": "example/app:1",
                                     "ports": [{"name": "http", "containerPort": 9080}]})];
    if proxy {
        containers.push(json!({"name": "remora-proxy", "image": "envoyproxy/envoy:v1.40.0"}));
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": containers},
    }))
    .expect("a pod")
}

#[tokio::test]
async fn a_weight_change_shows_as_the_one_route_config_it_changes_on_the_live_proxy() {
    let Some(client) = cluster::client().await else {
        return;
    };
    cluster::install_crds(&client).await;
    let kubeconfig = std::env::var("KUBECONFIG").expect("with-cluster sets KUBECONFIG");
    let ns = cluster::test_namespace(&client, "cli-diff").await;
    let pp = PostParams::default();
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "reviews"},
        "spec": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080}]},
    }))
    .expect("a Service");
    Api::<Service>::namespaced(client.clone(), &ns)
        .create(&pp, &service)
        .await
        .expect("the Service");
    let pods = [
        (
            "reviews-v1",
            json!({"app": "reviews", "version": "v1"}),
            false,
            "10.0.7.1",
        ),
        (
            "reviews-v2",
            json!({"app": "reviews", "version": "v2"}),
            false,
            "10.0.7.2",
        ),
        ("web-0", json!({"app": "web"}), true, "10.0.7.3"),
    ];
    for (name, labels, proxy, ip) in pods {
        cluster::create_pod(&client, &ns, &pod(name, labels, proxy)).await;
        cluster::run_pod(&client, &ns, name, ip).await;
    }
    let route: TrafficRoute = serde_json::from_value(split(90, 10)).expect("a route");
    Api::<TrafficRoute>::namespaced(client.clone(), &ns)
        .create(&pp, &route)
        .await
        .expect("the route");

    let mut change = split(50, 50);
    change["metadata"]["namespace"] = ns.clone().into();
    let mut child = Command::new(remora_bin())
        .args([
            "diff",
            "-f",
            "-",
            "-o",
            "json",
            "--kubeconfig",
            &kubeconfig,
            "-n",
            &ns,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("remora runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(change.to_string().as_bytes())
        .expect("write the change");
    drop(stdin);
    let out = child.wait_with_output().expect("remora ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).expect("JSON");
    let proxies = report["proxies"].as_array().expect("proxies");
    assert_eq!(proxies.len(), 1, "{stdout}");
    assert_eq!(proxies[0]["proxy"], format!("{ns}/web-0"));
    let resources = proxies[0]["resources"].as_array().expect("resources");
    let changed: Vec<(&str, &str, &str)> = resources
        .iter()
        .map(|r| {
            let field = |f: &str| r[f].as_str().unwrap_or_default();
            (field("kind"), field("name"), field("change"))
        })
        .collect();
    let name = format!("reviews.{ns}.svc.cluster.local:9080");
    assert_eq!(
        changed,
        [("RouteConfig", name.as_str(), "changed")],
        "{stdout}"
    );

    cluster::delete_namespace(&client, &ns).await;
}
