//! The admission webhook against a real Kubernetes API server: the server calls it over
//! HTTPS with the CA the webhook keeps in its Secret, invalid objects are refused at create
//! time with every field path, and replicas racing to create the CA end with one.

mod support;

use std::time::Duration;

use k8s_openapi::api::{
    admissionregistration::v1::ValidatingWebhookConfiguration,
    core::v1::{Namespace, Secret},
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use remora_api::TrafficRoute;
use remora_webhook::{Certificates, Config, PATH, cluster::ensure_ca};
use serde_json::json;
use support::{cluster, eventually, ports::free_port};

/// A webhook configuration that only covers `namespace` (by a label the test puts on it), so
/// other tests' objects never reach this test's webhook. No caBundle: the webhook sets it.
fn webhook_configuration(name: &str, namespace: &str, port: u16) -> ValidatingWebhookConfiguration {
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "validate.remora.dev",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}{PATH}")},
            "rules": [{
                "apiGroups": ["remora.dev"], "apiVersions": ["v1alpha1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["trafficroutes", "sidecarpolicies"],
                "scope": "Namespaced"
            }],
            "namespaceSelector": {"matchLabels": {"remora.dev/webhook-test": namespace}},
            // Fail, so a webhook the API server cannot call shows as an error, never a pass.
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5
        }]
    }))
    .expect("a ValidatingWebhookConfiguration")
}

fn route(name: &str, http: serde_json::Value) -> TrafficRoute {
    serde_json::from_value(json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "TrafficRoute",
        "metadata": {"name": name},
        "spec": {"parentRefs": [{"name": "reviews", "port": 9080}], "http": http}
    }))
    .expect("a TrafficRoute")
}

async fn labelled_namespace(client: &Client) -> String {
    let ns = cluster::test_namespace(client, "webhook").await;
    let label = json!({"metadata": {"labels": {"remora.dev/webhook-test": ns}}});
    Api::<Namespace>::all(client.clone())
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .expect("label the test namespace");
    ns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_routes_are_refused_at_create_time_with_every_field_path() {
    let Some(client) = cluster::client().await else {
        return;
    };
    cluster::install_crds(&client).await;
    let ns = labelled_namespace(&client).await;
    let name = format!("remora-e2e-{ns}");
    refuses_invalid_routes(&client, client.clone(), &ns, &name, "remora-webhook-ca").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_rbac_is_all_the_webhook_needs() {
    let Some(client) = cluster::client().await else {
        return;
    };
    cluster::install_crds(&client).await;
    let ns = labelled_namespace(&client).await;
    let release = format!("w-{ns}");
    let as_chart = cluster::client_with_chart_rbac(&client, &release, &ns).await;
    // The chart's names for this release: "<release>-remora", and the cluster-scoped
    // webhook configuration carries the namespace too.
    let fullname = format!("{release}-remora");
    let configuration = format!("{fullname}-{ns}");
    let ca_secret = format!("{fullname}-webhook-ca");
    refuses_invalid_routes(&client, as_chart, &ns, &configuration, &ca_secret).await;
}

/// Registers a webhook configuration `name` for `ns` (as `client`, the admin), runs the
/// webhook as `runner` (which must create the CA Secret and set the caBundle itself), and
/// checks what the API server answers.
async fn refuses_invalid_routes(
    client: &Client,
    runner: Client,
    ns: &str,
    name: &str,
    ca_secret: &str,
) {
    let port = free_port();
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    configs
        .create(
            &PostParams::default(),
            &webhook_configuration(name, ns, port),
        )
        .await
        .expect("register the webhook");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = Config {
        addr: ([127, 0, 0, 1], port).into(),
        namespace: ns.to_owned(),
        service_name: "remora".into(),
        webhook_name: name.to_owned(),
        mutating_webhook_name: None,
        injector: None,
        extra_sans: vec!["127.0.0.1".into()],
        certificates: Certificates::Generated {
            ca_secret: ca_secret.to_owned(),
        },
        validation: Default::default(),
    };
    let webhook = tokio::spawn(remora_webhook::run(runner, config, async {
        let _ = stopped.await;
    }));

    let routes: Api<TrafficRoute> = Api::namespaced(client.clone(), ns);
    let invalid = route(
        "broken",
        json!([
            {"name": "a", "matches": [{"path": {"type": "RegularExpression", "value": "/api/(["}}],
             "backendRefs": [{"name": "reviews"}]},
            {"name": "a", "backendRefs": [{"name": "reviews"}]}
        ]),
    );
    // The API server learns of a new webhook configuration, and later of its caBundle,
    // through a watch: until then a create either skips the webhook or fails to call it
    // (failurePolicy Fail). Dry runs, which go through admission but store nothing, probe
    // until the webhook's own denial comes back.
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    eventually(
        30,
        "the webhook to deny the invalid route",
        async || match routes.create(&dry_run, &invalid).await {
            Err(kube::Error::Api(e)) if e.message.contains("denied the request") => Some(()),
            Err(e) => {
                eprintln!("not yet: {e}");
                None
            }
            Ok(_) => {
                eprintln!("not yet: the webhook was not called");
                None
            }
        },
    )
    .await;
    let message = match routes.create(&PostParams::default(), &invalid).await {
        Err(kube::Error::Api(e)) => e.message,
        Err(e) => panic!("not the webhook's denial: {e}"),
        Ok(_) => panic!("the invalid route was stored"),
    };
    eprintln!("the API server said: {message}");
    assert!(
        message.contains("spec.http[0].matches[0].path.value"),
        "{message}"
    );
    assert!(message.contains("spec.http[1].name"), "{message}");
    assert!(message.contains("rule names must be unique"), "{message}");

    let valid = route(
        "fine",
        json!([{"name": "a", "backendRefs": [{"name": "reviews"}]}]),
    );
    routes
        .create(&PostParams::default(), &valid)
        .await
        .expect("a valid route is stored");
    routes
        .delete("fine", &DeleteParams::default())
        .await
        .expect("deletes are allowed");

    // The caBundle the API server trusts is the CA in the Secret.
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(ca_secret)
        .await
        .expect("the CA Secret");
    let ca = secret.data.expect("data")["ca.crt"].0.clone();
    let registered = configs.get(name).await.expect("the configuration");
    let bundle = registered.webhooks.expect("webhooks")[0]
        .client_config
        .ca_bundle
        .clone()
        .expect("a caBundle");
    assert_eq!(bundle.0, ca);

    stop.send(()).expect("the webhook runs");
    tokio::time::timeout(Duration::from_secs(15), webhook)
        .await
        .expect("the webhook stops")
        .expect("no panic")
        .expect("no error");
    configs
        .delete(name, &DeleteParams::default())
        .await
        .expect("unregister the webhook");
    Api::<Namespace>::all(client.clone())
        .delete(ns, &DeleteParams::default())
        .await
        .expect("delete the test namespace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_for_the_ca_end_with_the_same_one() {
    let Some(client) = cluster::client().await else {
        return;
    };
    let ns = cluster::test_namespace(&client, "webhook-ca").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let replica = |s: Api<Secret>| async move { ensure_ca(&s, "remora-webhook-ca").await };
    let (a, b, c) = tokio::join!(
        tokio::spawn(replica(secrets.clone())),
        tokio::spawn(replica(secrets.clone())),
        tokio::spawn(replica(secrets.clone())),
    );
    let pems: Vec<String> = [a, b, c]
        .into_iter()
        .map(|r| r.expect("no panic").expect("a CA").cert_pem().to_owned())
        .collect();
    assert!(
        pems.iter().all(|p| *p == pems[0]),
        "replicas disagree on the CA"
    );
    let stored = secrets.get("remora-webhook-ca").await.expect("the Secret");
    assert_eq!(stored.data.expect("data")["ca.crt"].0, pems[0].as_bytes());
    let later = ensure_ca(&secrets, "remora-webhook-ca")
        .await
        .expect("a CA");
    assert_eq!(
        later.cert_pem(),
        pems[0],
        "a replica starting later reads the same CA"
    );
    Api::<Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await
        .expect("delete the test namespace");
}
