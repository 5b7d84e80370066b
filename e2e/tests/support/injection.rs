//! A controller that serves sidecar injection to the API server, as the cluster tests set it
//! up: the webhook on a loopback port, reached through a MutatingWebhookConfiguration that
//! covers only the namespaces a test labels, so other tests' pods never reach it.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use remora_controller::{Config, inject::InjectConfig};
use remora_inject::{ControlPlane, Settings};
use remora_model::{config::Addressing, input::MeshSettings};
use remora_runtime::Debounce;
use remora_webhook::{Certificates, MUTATE_PODS_PATH};
use serde_json::json;

/// Calls the webhook on `port` for pods created in namespaces labelled `label=value`. Fail, so
/// a webhook the API server cannot reach shows as an error, never as a pod that merely lacks
/// a sidecar.
pub fn mutating_configuration(
    name: &str,
    (label, value): (&str, &str),
    port: u16,
) -> MutatingWebhookConfiguration {
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "inject.remora.dev",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}{MUTATE_PODS_PATH}")},
            "rules": [{
                "apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"
            }],
            "namespaceSelector": {"matchLabels": {label: value}},
            "failurePolicy": "Fail",
            "reinvocationPolicy": "IfNeeded",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5
        }]
    }))
    .expect("a MutatingWebhookConfiguration")
}

/// A controller without election that serves injection on `port`, keeping the `caBundle` of
/// the MutatingWebhookConfiguration `name` set to the CA it keeps in `namespace`.
pub fn controller_config(namespace: &str, name: &str, port: u16) -> Config {
    Config {
        xds_addr: "127.0.0.1:0".parse().expect("addr"),
        health_addr: "127.0.0.1:0".parse().expect("addr"),
        // As a cluster install runs: the injected pods' traffic is redirected to their proxies.
        settings: MeshSettings {
            addressing: Addressing::Captured,
            ..MeshSettings::default()
        },
        lease: None,
        fleet: None,
        debounce: Debounce {
            window: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
        },
        status_interval: Duration::from_millis(300),
        discovery_interval: Duration::from_secs(1),
        max_stream_age: remora_xds::DEFAULT_MAX_STREAM_AGE,
        xds_limits: remora_xds::Limits::default(),
        webhook: Some(remora_webhook::Config {
            addr: ([127, 0, 0, 1], port).into(),
            namespace: namespace.into(),
            service_name: "remora".into(),
            // No validating configuration here: the CA has to reach the mutating one.
            webhook_name: format!("{name}-unused"),
            mutating_webhook_name: Some(name.into()),
            injector: None,
            extra_sans: vec!["127.0.0.1".into()],
            certificates: Certificates::Generated {
                ca_secret: "remora-webhook-ca".into(),
            },
            validation: Default::default(),
        }),
        // No layout given: it comes from the API server's version (1.20: classic).
        inject: Some(InjectConfig {
            settings: Settings::default(),
            layout: None,
            control_plane: ControlPlane {
                xds_host: "remora.remora-system.svc.cluster.local".into(),
                xds_port: 18000,
                delta: false,
                // The pod runner runs this repository's `remora` for it.
                image: format!("{}:test", super::pods::container::REMORA_IMAGE),
                identity: None,
            },
        }),
        identity: None,
    }
}
