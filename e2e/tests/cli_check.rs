//! `remora check` against a real Kubernetes API server, run as an operator runs it: the built
//! binary with `--kubeconfig`. The stub cluster is Kubernetes 1.20, so the checks of what an
//! old server lacks are seen for real; no controller runs, so the test plays its parts (a
//! ready controller pod, a webhook registration) and checks each verdict.

mod support;

use std::process::Command;

use k8s_openapi::{
    ByteString,
    api::{
        admissionregistration::v1::ValidatingWebhookConfiguration,
        core::v1::{Namespace, Pod, Service},
    },
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use remora_api::SidecarPolicy;
use remora_identity::MeshCa;
use serde_json::{Value, json};
use support::{cluster, eventually, injection, pods::container::remora_bin, ports};

/// `remora check ARGS -o json --kubeconfig K`: its exit code and each check's
/// (name, outcome, message).
fn check(kubeconfig: &str, args: &[&str]) -> (Option<i32>, Vec<(String, String, String)>) {
    let out = Command::new(remora_bin())
        .arg("check")
        .args(args)
        .args(["-o", "json", "--kubeconfig", kubeconfig])
        .output()
        .expect("remora runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let checks = report["checks"].as_array().cloned().unwrap_or_default();
    let field = |c: &Value, f: &str| c[f].as_str().unwrap_or_default().to_owned();
    let checks = checks
        .iter()
        .map(|c| (field(c, "check"), field(c, "outcome"), field(c, "message")))
        .collect();
    (out.status.code(), checks)
}

/// The test's validating webhook configuration, `<ns>-check`: only for routes created in
/// `ns` (by its label), at the Service `ns/remora` on `port`.
fn validating(ns: &str, ca_bundle: &Value, failure_policy: &str, port: u16) -> Value {
    json!({
        "metadata": {"name": format!("{ns}-check")},
        "webhooks": [{
            "name": "validate.remora.dev", "admissionReviewVersions": ["v1"],
            "sideEffects": "None", "failurePolicy": failure_policy, "timeoutSeconds": 2,
            "namespaceSelector": {"matchLabels": {"remora-check": ns}},
            "clientConfig": {"caBundle": ca_bundle, "service":
                {"namespace": ns, "name": "remora", "path": "/validate", "port": port}},
            "rules": [{"apiGroups": ["remora.dev"], "apiVersions": ["v1alpha1"],
                       "operations": ["CREATE"], "resources": ["trafficroutes"]}],
        }],
    })
}

/// Merges `config` ([`validating`]) into the test's webhook configuration.
async fn patch_webhook(webhooks: &Api<ValidatingWebhookConfiguration>, ns: &str, config: &Value) {
    webhooks
        .patch(
            &format!("{ns}-check"),
            &PatchParams::default(),
            &Patch::Merge(config),
        )
        .await
        .expect("the webhook configuration patched");
}

/// [`check`] off the runtime's threads, which serve the controller meanwhile.
async fn check_async(
    kubeconfig: &str,
    args: &[&str],
) -> (Option<i32>, Vec<(String, String, String)>) {
    let kubeconfig = kubeconfig.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        check(&kubeconfig, &args)
    })
    .await
    .expect("the check ends")
}

/// The outcomes of the checks named `name`, in order.
fn outcomes(checks: &[(String, String, String)], name: &str) -> Vec<String> {
    checks
        .iter()
        .filter(|c| c.0 == name)
        .map(|c| c.1.clone())
        .collect()
}

fn message<'a>(checks: &'a [(String, String, String)], name: &str, outcome: &str) -> &'a str {
    checks
        .iter()
        .find(|c| c.0 == name && c.1 == outcome)
        .map_or("", |c| c.2.as_str())
}

// The last step waits on the CLI while a controller serves its webhook on another thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_server_degrades_visibly_and_a_broken_install_fails_with_the_fix() {
    let Some(client) = cluster::client().await else {
        return;
    };
    cluster::install_crds(&client).await;
    let kubeconfig = std::env::var("KUBECONFIG").expect("with-cluster sets KUBECONFIG");
    let ns = cluster::test_namespace(&client, "cli-check").await;

    // Before installing: what the server can do, and the CRDs (installed and current here).
    let (code, pre) = check(&kubeconfig, &["--pre"]);
    assert_eq!(code, Some(0), "{pre:?}");
    assert_eq!(outcomes(&pre, "api-server"), ["ok"]);
    assert_eq!(outcomes(&pre, "crds"), ["ok", "ok", "ok"], "{pre:?}");
    assert!(
        message(&pre, "crds", "ok").ends_with(": current"),
        "{pre:?}"
    );
    if cluster::is_stub() {
        for old in ["native-sidecars", "crd-validation-rules", "endpointslices"] {
            assert_eq!(outcomes(&pre, old), ["warn"], "1.20 lacks {old}: {pre:?}");
        }
        assert!(message(&pre, "native-sidecars", "warn").starts_with("Kubernetes 1.20 "));
    }
    assert!(
        outcomes(&pre, "control-plane").is_empty(),
        "--pre checks no install"
    );

    // After: no controller and no webhooks in this namespace yet.
    let post = ["--control-plane-namespace", ns.as_str(), "-n", ns.as_str()];
    let (code, after) = check(&kubeconfig, &post);
    assert_eq!(code, Some(1), "{after:?}");
    assert_eq!(outcomes(&after, "control-plane"), ["fail"]);
    assert_eq!(outcomes(&after, "webhooks"), ["fail", "fail"]);
    assert!(
        message(&after, "webhooks", "fail").contains("not registered"),
        "{after:?}"
    );
    assert_eq!(outcomes(&after, "proxy-versions"), ["ok"]);

    // A ready controller pod; a policy on a proxy version outside the window; the validating
    // webhook registered with a CA bundle that is no certificate (for this namespace only).
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "remora-0", "labels": {
            "app.kubernetes.io/name": "remora", "app.kubernetes.io/component": "controller"}},
        "spec": {"containers": [{"name": "remora", "image": "remora"}]},
    }))
    .expect("a pod");
    cluster::create_pod(&client, &ns, &pod).await;
    cluster::run_pod(&client, &ns, "remora-0", "10.0.0.9").await;
    let policy: SidecarPolicy = serde_json::from_value(json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "SidecarPolicy",
        "metadata": {"name": "old"},
        "spec": {"proxy": {"image": "envoyproxy/envoy", "version": "v1.2.0"}},
    }))
    .expect("a policy");
    let policies: Api<SidecarPolicy> = Api::namespaced(client.clone(), &ns);
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("the policy");
    let garbage = json!("bm90IGEgY2VydGlmaWNhdGU=");
    let webhook = serde_json::from_value(validating(&ns, &garbage, "Ignore", 443))
        .expect("a webhook configuration");
    let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    webhooks
        .create(&PostParams::default(), &webhook)
        .await
        .expect("the webhook");

    let (code, after) = check(&kubeconfig, &post);
    assert_eq!(code, Some(1), "{after:?}");
    assert_eq!(outcomes(&after, "control-plane"), ["ok"], "{after:?}");
    assert!(
        message(&after, "proxy-versions", "fail").contains(&format!("{ns}/old (v1.2.0)")),
        "{after:?}"
    );
    let bundle = message(&after, "webhooks", "fail");
    assert!(
        bundle.starts_with("validate.remora.dev: its caBundle is no CA"),
        "{after:?}"
    );

    // A CA bundle that is one, and the Service, headless: the API server cannot call the
    // webhook (it has no address to dial, so nothing leaves the machine) and, failing
    // closed, refuses the check's dry run; the check says it does not answer.
    let ca = MeshCa::generate("cluster.local", std::time::SystemTime::now()).expect("a CA");
    let bundle = ByteString(ca.bundle().to_pem().into_bytes());
    let bundle = serde_json::to_value(&bundle).expect("base64");
    let fix = validating(&ns, &bundle, "Fail", 443);
    patch_webhook(&webhooks, &ns, &fix).await;
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "remora"},
        "spec": {"clusterIP": "None", "ports": [{"name": "https-webhook", "port": 443}]},
    }))
    .expect("a Service");
    Api::<Service>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &service)
        .await
        .expect("the Service");
    let label = json!({"metadata": {"labels": {"remora-check": &ns}}});
    Api::<Namespace>::all(client.clone())
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .expect("the namespace's label");
    let (code, after) = check_async(&kubeconfig, &post).await;
    assert_eq!(code, Some(1), "{after:?}");
    let unanswered = message(&after, "webhooks", "fail");
    assert!(
        unanswered.starts_with("validate.remora.dev: does not answer: "),
        "{after:?}"
    );
    assert!(unanswered.contains("failed calling webhook"), "{after:?}");

    // Served for real: a controller's webhook, reached by the API server on loopback through
    // an ExternalName Service. The port goes into the configuration first; the controller
    // then sets its CA bundle there, and nothing here writes it again.
    let port = ports::free_port();
    let port_fix = validating(&ns, &bundle, "Fail", port);
    patch_webhook(&webhooks, &ns, &port_fix).await;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    services
        .delete("remora", &DeleteParams::default())
        .await
        .expect("drop the headless Service");
    let loopback: Service = serde_json::from_value(json!({
        "metadata": {"name": "remora"},
        "spec": {"type": "ExternalName", "externalName": "127.0.0.1", "ports": [{"port": port}]},
    }))
    .expect("a Service");
    services
        .create(&PostParams::default(), &loopback)
        .await
        .expect("the Service");
    let mut config = injection::controller_config(&ns, "unused", port);
    config.inject = None;
    if let Some(webhook) = &mut config.webhook {
        webhook.webhook_name = format!("{ns}-check");
        webhook.mutating_webhook_name = None;
    }
    let controller = remora_controller::start(client.clone(), config)
        .await
        .expect("the controller starts");
    let answered = eventually(
        30,
        "the webhook answering the check's dry run",
        async || {
            let (_, after) = check_async(&kubeconfig, &post).await;
            let ok = message(&after, "webhooks", "ok").to_owned();
            ok.starts_with("validate.remora.dev: answers").then_some(ok)
        },
    )
    .await;
    assert!(answered.contains("refused an invalid route"), "{answered}");
    controller.stop().await;

    webhooks
        .delete(&format!("{ns}-check"), &DeleteParams::default())
        .await
        .expect("delete the webhook");
    cluster::delete_namespace(&client, &ns).await;
}
