//! What status and rollouts need to know of each pod beyond the model's inputs: the sidecar
//! version and revision it runs, the workload that owns it, and whether it is Ready and since
//! when.

use std::collections::{HashMap, HashSet};

use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{Resource, runtime::watcher::Event as WatchEvent};
use remora_inject::{REVISION_ANNOTATION, VERSION_ANNOTATION};
use remora_inputs::proxy_container;
use remora_model::input::ObjectKey;

/// What status and rollouts know of one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFacts {
    /// The sidecar version the pod runs; `None` for a pod without a sidecar.
    pub sidecar: Option<String>,
    /// The revision of the sidecar the pod got, as the injector annotated it; `None` for a
    /// pod without a sidecar or injected before that annotation existed.
    pub revision: Option<String>,
    /// `Kind/name` of the controlling owner, with a ReplicaSet's pod-template-hash suffix
    /// removed so all pods of one Deployment count as one workload.
    pub workload: Option<String>,
    /// Since when the pod is Ready; `None` while it is not.
    pub ready_since: Option<Time>,
    /// Deletion has begun: the pod no longer counts for its workload.
    pub terminating: bool,
}

/// The facts of a pod worth keeping: one with a sidecar or a controlling workload.
pub fn pod_facts(pod: &Pod) -> Option<PodFacts> {
    let spec = pod.spec.as_ref()?;
    let annotation = |key| pod.metadata.annotations.as_ref()?.get(key);
    let proxy = proxy_container(spec);
    let sidecar = proxy.map(|proxy| {
        // The injector's annotation beats the image tag, which says nothing when the image
        // is pinned by digest.
        annotation(VERSION_ANNOTATION)
            .map(String::as_str)
            .or_else(|| proxy.image.as_deref().and_then(image_version))
            .unwrap_or("unknown")
            .to_owned()
    });
    let revision = proxy.and(annotation(REVISION_ANNOTATION)).cloned();
    let workload = remora_inject::workload(pod);
    if sidecar.is_none() && workload.is_none() {
        return None;
    }
    Some(PodFacts {
        sidecar,
        revision,
        workload,
        ready_since: ready_since(pod),
        terminating: pod.metadata.deletion_timestamp.is_some(),
    })
}

/// Keeps the facts of every pod in step with the pod watch itself: replaced on each apply,
/// dropped on delete, and after a re-list only the listed pods kept. The model cannot be
/// the judge of which pods exist: it applies a pod's events a debounce later, so facts
/// pruned against it could lose a pod that had just become Ready, and with no further
/// event for that pod its workload's health gate would wait for it until it timed out.
#[derive(Debug, Default)]
pub struct FactsTracker {
    /// Pods seen since the current re-list began.
    relisted: Option<HashSet<ObjectKey>>,
}

impl FactsTracker {
    /// Brings `known` in step with one event of the pod watch.
    pub fn observe(&mut self, known: &mut HashMap<ObjectKey, PodFacts>, event: &WatchEvent<Pod>) {
        let key = |p: &Pod| ObjectKey::from_meta(p.meta());
        let mut apply = |p: &Pod| match pod_facts(p) {
            Some(facts) => known.insert(key(p), facts),
            None => known.remove(&key(p)),
        };
        match event {
            WatchEvent::Init => self.relisted = Some(HashSet::new()),
            WatchEvent::InitApply(p) => {
                apply(p);
                if let Some(relisted) = &mut self.relisted {
                    relisted.insert(key(p));
                }
            }
            WatchEvent::Apply(p) => {
                apply(p);
            }
            WatchEvent::Delete(p) => {
                known.remove(&key(p));
            }
            WatchEvent::InitDone => {
                if let Some(relisted) = self.relisted.take() {
                    known.retain(|k, _| relisted.contains(k));
                }
            }
        }
    }
}

fn ready_since(pod: &Pod) -> Option<Time> {
    let ready = pod
        .status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    // A Ready condition without a time is taken as ready since forever rather than never:
    // only a broken kubelet omits it, and a gate must not hang on that.
    Some(
        ready
            .last_transition_time
            .clone()
            .unwrap_or(Time(Timestamp::UNIX_EPOCH)),
    )
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
                {"name": "remora-proxy", "image": "remora/proxy:2.0.0"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True",
                "lastTransitionTime": "2026-11-29T05:00:00Z"}]}
        }));
        let facts = pod_facts(&p).expect("facts");
        assert_eq!(facts.sidecar.as_deref(), Some("2.0.0"));
        assert_eq!(
            facts.revision, None,
            "injected before revisions were annotated"
        );
        assert_eq!(facts.workload.as_deref(), Some("Deployment/web"));
        assert_eq!(
            facts.ready_since.map(|t| t.0.as_second()),
            Some(1_795_928_400)
        );
        assert!(!facts.terminating);

        let plain = pod(serde_json::json!({"metadata": {"name": "x"},
            "spec": {"containers": [{"name": "web"}]}}));
        assert_eq!(pod_facts(&plain), None);
    }

    #[test]
    fn the_injected_version_beats_the_image_and_native_sidecars_count() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "db-0", "annotations": {"sidecar.remora.dev/version": "1.40.1",
                    "sidecar.remora.dev/revision": "0123456789"},
                "deletionTimestamp": "2026-11-29T05:00:00Z",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                    "name": "db", "uid": "u", "controller": true}]},
            "spec": {"initContainers": [{"name": "remora-proxy", "restartPolicy": "Always",
                    "image": "remora/proxy@sha256:abc"}],
                "containers": [{"name": "db"}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]}
        }));
        let facts = pod_facts(&p).expect("facts");
        assert_eq!(facts.sidecar.as_deref(), Some("1.40.1"));
        assert_eq!(facts.revision.as_deref(), Some("0123456789"));
        assert_eq!(facts.workload.as_deref(), Some("StatefulSet/db"));
        assert_eq!(facts.ready_since, None);
        assert!(facts.terminating);
    }

    fn deployment_pod(name: &str, ready: bool) -> Pod {
        pod(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop", "labels": {"pod-template-hash": "7d9f"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-7d9f", "uid": "u", "controller": true}]},
            "spec": {"containers": [{"name": "web"},
                {"name": "remora-proxy", "image": "remora/proxy:2.0.0"}]},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                "lastTransitionTime": "2026-11-29T05:00:00Z"}]}
        }))
    }

    #[test]
    fn facts_follow_the_pod_watch_through_applies_deletes_and_relists() {
        let mut tracker = FactsTracker::default();
        let mut known = HashMap::new();
        let key = |name: &str| ObjectKey::new("shop", name);
        let ready = |known: &HashMap<ObjectKey, PodFacts>, name: &str| {
            known.get(&key(name)).map(|f| f.ready_since.is_some())
        };
        for e in [
            WatchEvent::Init,
            WatchEvent::InitApply(deployment_pod("a", true)),
            WatchEvent::InitApply(deployment_pod("b", true)),
            WatchEvent::InitDone,
            WatchEvent::Apply(deployment_pod("c", false)),
            WatchEvent::Apply(deployment_pod("c", true)),
            WatchEvent::Delete(deployment_pod("a", true)),
        ] {
            tracker.observe(&mut known, &e);
        }
        assert_eq!(ready(&known, "a"), None, "deleted");
        assert_eq!(ready(&known, "b"), Some(true));
        assert_eq!(ready(&known, "c"), Some(true), "the latest apply wins");

        // b vanished while the watch was down; c came back changed.
        for e in [
            WatchEvent::Init,
            WatchEvent::InitApply(deployment_pod("c", false)),
            WatchEvent::InitDone,
        ] {
            tracker.observe(&mut known, &e);
        }
        assert_eq!(ready(&known, "b"), None, "gone in the re-list");
        assert_eq!(ready(&known, "c"), Some(false));
        assert_eq!(known.len(), 1);

        // A pod that loses what made it worth keeping is dropped.
        let plain = pod(
            serde_json::json!({"metadata": {"name": "c", "namespace": "shop"},
            "spec": {"containers": [{"name": "web"}]}}),
        );
        tracker.observe(&mut known, &WatchEvent::Apply(plain));
        assert!(known.is_empty());
    }

    #[test]
    fn a_workload_pod_without_a_sidecar_is_kept() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "agent-x",
                "annotations": {"sidecar.remora.dev/revision": "0123456789"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                    "name": "agent", "uid": "u", "controller": true}]},
            "spec": {"containers": [{"name": "agent"}]}
        }));
        let facts = pod_facts(&p).expect("facts");
        assert_eq!((facts.sidecar, facts.revision), (None, None));
        assert_eq!(facts.workload.as_deref(), Some("DaemonSet/agent"));
    }
}
