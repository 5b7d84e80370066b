//! Which workload a pod belongs to, by its controlling owner: the rollout counts pods by it,
//! and the proxy's stats name their source with it.

use k8s_openapi::api::core::v1::Pod;

/// `Kind/name` of the pod's controlling workload; a ReplicaSet made by a Deployment counts as
/// the Deployment (its `pod-template-hash` removed), so all its pods are one workload. `None`
/// for a pod no controller owns.
pub fn workload(pod: &Pod) -> Option<String> {
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))?;
    let hash = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"));
    Some(match (owner.kind.as_str(), hash) {
        ("ReplicaSet", Some(h)) => match owner.name.strip_suffix(&format!("-{h}")) {
            Some(deployment) => format!("Deployment/{deployment}"),
            None => format!("ReplicaSet/{}", owner.name),
        },
        (kind, _) => format!("{kind}/{}", owner.name),
    })
}

/// The workload a proxy's stats name as their source: [`workload`], or for a pod no
/// controller owns `Pod/<name>` (its `generateName` prefix while the API server has not named
/// it yet).
pub fn source_workload(pod: &Pod) -> String {
    workload(pod).unwrap_or_else(|| {
        let meta = &pod.metadata;
        let name = meta.name.as_deref().or(meta.generate_name.as_deref());
        format!("Pod/{}", name.unwrap_or_default())
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    use super::*;

    fn pod(owner: Option<(&str, &str)>, hash: Option<&str>, name: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: name.map(Into::into),
                generate_name: Some("web-".into()),
                owner_references: owner.map(|(kind, name)| {
                    vec![OwnerReference {
                        kind: kind.into(),
                        name: name.into(),
                        controller: Some(true),
                        ..OwnerReference::default()
                    }]
                }),
                labels: hash.map(|h| [("pod-template-hash".to_owned(), h.to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    #[test]
    fn a_deployments_pods_name_the_deployment_and_others_their_owner_or_themselves() {
        let p = pod(Some(("ReplicaSet", "web-5d8f")), Some("5d8f"), None);
        assert_eq!(source_workload(&p), "Deployment/web");
        let p = pod(Some(("StatefulSet", "db")), None, Some("db-0"));
        assert_eq!(source_workload(&p), "StatefulSet/db");
        assert_eq!(workload(&pod(None, None, Some("debug"))), None);
        assert_eq!(
            source_workload(&pod(None, None, Some("debug"))),
            "Pod/debug"
        );
        assert_eq!(source_workload(&pod(None, None, None)), "Pod/web-");
    }
}
