//! `remora analyze` against a real Kubernetes API server, run as an operator runs it: the
//! built binary with `--kubeconfig`, reading what the cluster holds. The rules themselves
//! are tested in remora-analyze.

mod support;

use std::process::Command;

use k8s_openapi::api::core::v1::Service;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use remora_api::TrafficRoute;
use serde_json::{Value, json};
use support::{cluster, pods::container::remora_bin};

/// Beyond the program size proxies accept by default (100): a proxy would NACK it.
const HUGE_REGEX: &str = "/(a{1,50}b{1,50}c{1,50}d{1,50}){1,20}";

fn route(name: &str, parent: &str, path: &str, backend: &str) -> TrafficRoute {
    serde_json::from_value(json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "TrafficRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"name": parent, "port": 9080}],
            "http": [{"matches": [{"path": {"type": "RegularExpression", "value": path}}],
                      "backendRefs": [{"name": backend, "port": 9080}]}],
        },
    }))
    .expect("a TrafficRoute")
}

fn service(name: &str) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"ports": [{"name": "http", "port": 9080}]},
    }))
    .expect("a Service")
}

/// `remora analyze -o json` of the namespace: its exit code and report.
fn analyze(kubeconfig: &str, ns: &str) -> (Option<i32>, Value) {
    let out = Command::new(remora_bin())
        .args([
            "analyze",
            "--kubeconfig",
            kubeconfig,
            "-n",
            ns,
            "-o",
            "json",
        ])
        .output()
        .expect("remora runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

fn codes(report: &Value) -> Vec<(String, String)> {
    let findings = report["findings"].as_array().cloned().unwrap_or_default();
    findings
        .iter()
        .map(|f| {
            let code = f["code"].as_str().unwrap_or_default().to_owned();
            (code, f["object"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn the_live_cluster_is_analyzed_as_the_control_plane_would_see_it() {
    let Some(client) = cluster::client().await else {
        return;
    };
    cluster::install_crds(&client).await;
    let ns = cluster::test_namespace(&client, "cli-analyze").await;
    let kubeconfig = std::env::var("KUBECONFIG").expect("with-cluster sets KUBECONFIG");
    let pp = PostParams::default();
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    for name in ["reviews", "details"] {
        services
            .create(&pp, &service(name))
            .await
            .expect("a Service");
    }
    let routes: Api<TrafficRoute> = Api::namespaced(client.clone(), &ns);
    let api = route("api", "reviews", HUGE_REGEX, "reviews");
    routes.create(&pp, &api).await.expect("the api route");
    let details = route("details", "details", "/v1/.*", "ratings");
    routes
        .create(&pp, &details)
        .await
        .expect("the details route");

    let (code, report) = analyze(&kubeconfig, &ns);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(
        codes(&report),
        [
            ("REM003".to_owned(), format!("{ns}/api")),
            ("REM004".to_owned(), format!("{ns}/details")),
        ],
        "{report}"
    );
    let regex = &report["findings"][0];
    assert_eq!(regex["field"], "spec.http[0].matches[0].path.value");
    assert!(
        regex.get("file").is_none(),
        "a live object has no file: {regex}"
    );

    // Fixed in the cluster, the findings go.
    let fixed = json!({"spec": {"http": [{"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                                          "backendRefs": [{"name": "reviews", "port": 9080}]}]}});
    routes
        .patch("api", &PatchParams::default(), &Patch::Merge(&fixed))
        .await
        .expect("fix the regex");
    services
        .create(&pp, &service("ratings"))
        .await
        .expect("ratings");
    let (code, report) = analyze(&kubeconfig, &ns);
    assert_eq!((code, codes(&report)), (Some(0), vec![]), "{report}");

    cluster::delete_namespace(&client, &ns).await;
}
