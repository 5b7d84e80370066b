//! Both admission webhooks as the server runs them, without HTTP: the body in, the answer
//! serialized as it is written back.

use std::{collections::BTreeMap, sync::LazyLock};

use k8s_openapi::api::core::v1::Pod;
use remora_api::{SidecarPolicy, spiffe::SpiffeId};
use remora_inject::{
    ControlPlane, Decision, ENFORCE_LABEL, Injection, JsonPatchOp, Layout, MeshIdentity,
    PodSecurity, Settings, decide, patch,
};
use remora_webhook::{InjectFailure, PodInjector, review, review_pod};
use serde_json::{Value, json};

/// Bytes as the body of a POST to either webhook path: the validating review (decoding,
/// `validate()` of a `SidecarPolicy` or `TrafficRoute`) and the pod review (decoding,
/// deciding, the JSON patch). Every answer is a review with a verdict that serializes.
pub fn admission_review(data: &[u8]) {
    let answer = serde_json::to_value(review(data)).expect("a review serializes");
    verdict(&answer);
    match review_pod(data, &*INJECTOR) {
        Ok(answer) => verdict(&answer),
        // Only the injector says so, and this one never does.
        Err(e) => panic!("the injector was not asked to be unavailable: {e}"),
    }
}

/// An answer is a review (its `apiVersion` and `kind` those of the request, as kube echoes
/// them and the API server expects) whose response says allowed or not; a refusal says why.
fn verdict(answer: &Value) {
    assert!(answer["kind"].is_string(), "{answer}");
    let response = &answer["response"];
    let allowed = response["allowed"]
        .as_bool()
        .unwrap_or_else(|| panic!("no verdict: {answer}"));
    if !allowed {
        assert!(
            response["status"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "a refusal without a reason: {answer}"
        );
    }
    if let Some(patch) = response.get("patch") {
        assert!(allowed, "a patch on a refusal: {answer}");
        assert_eq!(response["patchType"], "JSONPatch");
        assert!(patch.is_string(), "the patch is base64: {answer}");
    }
}

/// Decides and patches as the controller's injector does, from a fixed policy and a
/// namespace whose name says its labels: `off-*` has not opted in, a name containing
/// `baseline` or `restricted` enforces that Pod Security level, `classic` gets the classic
/// layout and `mtls` the mesh's identities.
#[derive(Debug)]
struct Injector {
    policy: SidecarPolicy,
    settings: Settings,
}

static INJECTOR: LazyLock<Injector> = LazyLock::new(|| Injector {
    policy: serde_json::from_value(json!({
        "apiVersion": "remora.dev/v1alpha1",
        "kind": "SidecarPolicy",
        "metadata": {"name": "fleet-default", "namespace": "remora-system"},
        "spec": {
            "proxy": {
                "image": "envoyproxy/envoy",
                "version": "1.40.0",
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                "interception": {"excludeInboundPorts": [9102]},
            },
            "extraContainers": [{"name": "log-shipper", "image": "fluent/fluent-bit:3"}],
            "volumes": [{"name": "shipper-state", "emptyDir": {}}],
        },
    }))
    .expect("the fuzzing policy decodes"),
    settings: Settings::default(),
});

impl PodInjector for Injector {
    fn inject(&self, namespace: &str, pod: &Pod) -> Result<Vec<JsonPatchOp>, InjectFailure> {
        let mut labels = BTreeMap::new();
        if !namespace.starts_with("off") {
            labels.insert(self.settings.mesh_label.clone(), "enabled".to_owned());
        }
        for level in ["baseline", "restricted"] {
            if namespace.contains(level) {
                labels.insert(ENFORCE_LABEL.to_owned(), level.to_owned());
            }
        }
        if decide(&self.settings, pod, namespace, &labels, Some(&self.policy)) != Decision::Inject {
            return Ok(Vec::new());
        }
        let version = &self.policy.spec.proxy.version;
        let control_plane = ControlPlane {
            xds_host: "remora.remora-system.svc".into(),
            xds_port: 15010,
            delta: true,
            image: "ghcr.io/remora-mesh/remora:0.1.0".into(),
            identity: namespace.contains("mtls").then(|| MeshIdentity {
                trust_domain: "cluster.local".into(),
                trust_bundle: "-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----\n"
                    .into(),
                control_plane_id: SpiffeId::new("cluster.local", "remora-system", "remora"),
            }),
        };
        let injection = Injection {
            policy: &self.policy,
            version,
            revision: &remora_rollout::revision_of(&self.policy.spec, version),
            layout: if namespace.contains("classic") {
                Layout::Classic
            } else {
                Layout::Native
            },
            control_plane: &control_plane,
            pod_security: PodSecurity::enforced(Some(&labels)),
        };
        patch(pod, &injection).map_err(|e| InjectFailure::Refused(e.to_string()))
    }
}
