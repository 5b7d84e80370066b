//! What the status of a policy needs to know of each proxy pod beyond the model's inputs:
//! the sidecar version it runs and the workload that owns it.

use k8s_openapi::api::core::v1::Pod;
use remora_inputs::SIDECAR_CONTAINER;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyPod {
    /// The tag (or digest) of the sidecar's image; `unknown` when the image names none.
    pub version: String,
    /// `Kind/name` of the controlling owner, with a ReplicaSet's pod-template-hash suffix
    /// removed so all pods of one Deployment count as one workload.
    pub workload: Option<String>,
}

/// The proxy facts of a pod, or `None` for a pod without a sidecar.
pub fn proxy_pod(pod: &Pod) -> Option<ProxyPod> {
    let spec = pod.spec.as_ref()?;
    let sidecar = spec
        .containers
        .iter()
        .find(|c| c.name == SIDECAR_CONTAINER)?;
    let version = sidecar
        .image
        .as_deref()
        .and_then(image_version)
        .unwrap_or("unknown")
        .to_owned();
    let workload = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| {
            let hash = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-template-hash"));
            match (o.kind.as_str(), hash) {
                ("ReplicaSet", Some(h)) => match o.name.strip_suffix(&format!("-{h}")) {
                    Some(deployment) => format!("Deployment/{deployment}"),
                    None => format!("ReplicaSet/{}", o.name),
                },
                (kind, _) => format!("{kind}/{}", o.name),
            }
        });
    Some(ProxyPod { version, workload })
}

/// `registry:5000/remora/proxy:1.4.2` → `1.4.2`; `proxy@sha256:ab…` → `sha256:ab…`.
fn image_version(image: &str) -> Option<&str> {
    if let Some((_, digest)) = image.split_once('@') {
        return Some(digest);
    }
    let last = image.rsplit('/').next()?;
    last.split_once(':').map(|(_, tag)| tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("a pod")
    }

    #[test]
    fn version_from_the_sidecar_image() {
        assert_eq!(
            image_version("registry:5000/remora/proxy:1.4.2"),
            Some("1.4.2")
        );
        assert_eq!(image_version("registry:5000/remora/proxy"), None);
        assert_eq!(image_version("proxy@sha256:abc"), Some("sha256:abc"));
    }

    #[test]
    fn deployment_pods_count_as_their_deployment() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "web-7d9f-x", "labels": {"pod-template-hash": "7d9f"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-7d9f", "uid": "u", "controller": true}]},
            "spec": {"containers": [{"name": "web"},
                {"name": "remora-proxy", "image": "remora/proxy:2.0.0"}]}
        }));
        assert_eq!(
            proxy_pod(&p),
            Some(ProxyPod {
                version: "2.0.0".into(),
                workload: Some("Deployment/web".into())
            })
        );
        let plain = pod(serde_json::json!({"metadata": {"name": "x"},
            "spec": {"containers": [{"name": "web"}]}}));
        assert_eq!(proxy_pod(&plain), None);
    }
}
