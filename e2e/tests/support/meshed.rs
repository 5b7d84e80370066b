//! A meshed namespace on the stub cluster: labelled for a test's own mutating webhook, served
//! by an injecting controller whose xDS listens on the pods' bridge, and torn down after.

use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    core::v1::{Namespace, Pod},
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use std::time::Duration;

use remora_api::spiffe::DEFAULT_TRUST_DOMAIN;
use remora_controller::identity::IdentityConfig;
use remora_inject::ControlPlane;
use remora_model::input::IdentitySettings;
use serde_json::json;

use super::{eventually, injection, pods::net::Bridge, ports};

/// The injected proxy container's name.
pub const PROXY: &str = "remora-proxy";
/// Puts a test's namespace, and only it, under the test's webhook.
pub const TEST_LABEL: &str = "remora.dev/inject-test";
/// The Secret of a test's mesh CA, in the test's namespace.
pub const CA_SECRET: &str = "remora-mesh-ca";
/// The service account the test's control plane stands for.
pub const CONTROL_PLANE_ACCOUNT: &str = "remora";

/// A new test namespace under the webhook that [`controller`] registers for it.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    super::cluster::install_crds(client).await;
    let ns = super::cluster::test_namespace(client, prefix).await;
    let labels = json!({"metadata": {"labels": {TEST_LABEL: ns}}});
    Api::<Namespace>::all(client.clone())
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .expect("label the test namespace");
    ns
}

/// An injecting controller whose xDS listens on the bridge, where the pods reach it, with
/// its webhook registered as `webhook` for namespace `ns`; the injected proxies speak delta
/// xDS if `delta`. With `identity` (workload certificates' lifetime) the mesh has workload
/// identities, its CA kept in `ns`. Returns once the webhook injects a pod labelled
/// `probe_labels`, so a policy must govern such pods by then.
pub async fn controller(
    client: &Client,
    ns: &str,
    webhook: &str,
    bridge: &Bridge,
    delta: bool,
    probe_labels: serde_json::Value,
    identity: Option<Duration>,
) -> remora_controller::Controller {
    let port = ports::free_port();
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
    if let Some(cert_ttl) = identity {
        config.settings.identity = Some(IdentitySettings {
            trust_domain: DEFAULT_TRUST_DOMAIN.into(),
        });
        config.identity = Some(IdentityConfig {
            trust_domain: DEFAULT_TRUST_DOMAIN.into(),
            namespace: ns.into(),
            ca_secret: CA_SECRET.into(),
            cert_ttl,
            service_account: CONTROL_PLANE_ACCOUNT.into(),
            server_names: vec![bridge.gateway().to_string()],
        });
    }
    if let Some(inject) = &mut config.inject {
        inject.control_plane = ControlPlane {
            xds_host: bridge.gateway().to_string(),
            xds_port: xds.port(),
            delta,
            ..inject.control_plane.clone()
        };
    }
    let controller = remora_controller::start(client.clone(), config)
        .await
        .expect("the controller starts");
    wait_injecting(client, ns, probe_labels).await;
    controller
}

/// Dry runs go through admission and store nothing: probes until one comes back injected.
async fn wait_injecting(client: &Client, ns: &str, labels: serde_json::Value) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let probe: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe", "labels": labels},
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
}

/// Whether the pod's Ready condition is true.
pub fn is_ready(p: &Pod) -> bool {
    let conditions = p.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Unregisters the webhook, stops the controller and deletes the test namespace.
pub async fn cleanup(
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
    super::cluster::delete_namespace(client, ns).await;
}
