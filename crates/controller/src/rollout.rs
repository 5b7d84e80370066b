//! Rollouts at the edge. Deciding is pure (`remora_rollout::step`); this module gathers what
//! a step needs (the workloads a policy governs, their pods, their proxies' health) and
//! carries out what it returns: a pod-template annotation patch or an eviction, and Events.
//! The reconciler writes the step's status before anything here acts, so a crash in between
//! leaves a state the next leader resumes from.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment, StatefulSet},
        core::v1::PodTemplateSpec,
    },
    apimachinery::pkg::version::Info,
};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        events::{Event, EventType, Recorder, Reporter},
        reflector::Store,
    },
};
use remora_api::{SidecarPolicy, sidecar_policy::WorkloadRef};
use remora_inject::INJECT_ANNOTATION;
use remora_model::{
    Mesh,
    input::{Labels, ObjectKey},
};
use remora_rollout::{
    Action, Note, PodFacts as RolloutPod, ProxyHealth, RESTART_ANNOTATION, Workload,
};
use serde_json::json;
use tracing::{info, warn};

use crate::{metrics::Metrics, pods::PodFacts};

/// The reflector stores of the workload kinds a rollout restarts.
#[derive(Clone)]
pub struct Workloads {
    /// Every Deployment in the cluster.
    pub deployments: Store<Deployment>,
    /// Every StatefulSet in the cluster.
    pub statefulsets: Store<StatefulSet>,
    /// Every DaemonSet in the cluster.
    pub daemonsets: Store<DaemonSet>,
}

/// What a rollout needs of one workload object.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadObject {
    /// Its kind, namespace and name.
    pub workload: WorkloadRef,
    /// The pod template's labels, which pick the governing policy.
    pub labels: Labels,
    /// The pod template's annotations.
    pub annotations: BTreeMap<String, String>,
    /// Pods the workload wants.
    pub desired: i32,
}

impl Workloads {
    /// Whether every store has listed once: before that a workload would look deleted.
    pub async fn wait_until_ready(&self) {
        let _ = tokio::join!(
            self.deployments.wait_until_ready(),
            self.statefulsets.wait_until_ready(),
            self.daemonsets.wait_until_ready(),
        );
    }

    /// Every stored workload, of all three kinds (those without a namespace left out).
    pub fn objects(&self) -> Vec<WorkloadObject> {
        let deployments = self.deployments.state().into_iter().map(|d| {
            let replicas = d.spec.replicas.unwrap_or(1);
            object("Deployment", &*d, &d.spec.template, replicas)
        });
        let statefulsets = self.statefulsets.state().into_iter().map(|s| {
            let replicas = s.spec.replicas.unwrap_or(1);
            object("StatefulSet", &*s, &s.spec.template, replicas)
        });
        let daemonsets = self.daemonsets.state().into_iter().map(|d| {
            let desired = d.status.as_ref().map_or(0, |s| s.desired_number_scheduled);
            object("DaemonSet", &*d, &d.spec.template, desired)
        });
        deployments
            .chain(statefulsets)
            .chain(daemonsets)
            .flatten()
            .collect()
    }
}

fn object<K: ResourceExt>(
    kind: &str,
    k: &K,
    template: &PodTemplateSpec,
    desired: i32,
) -> Option<WorkloadObject> {
    let meta = template.metadata.as_ref();
    Some(WorkloadObject {
        workload: WorkloadRef {
            kind: kind.into(),
            namespace: k.namespace()?,
            name: k.name_any(),
        },
        labels: meta.and_then(|m| m.labels.clone()).unwrap_or_default(),
        annotations: meta.and_then(|m| m.annotations.clone()).unwrap_or_default(),
        desired,
    })
}

/// The workloads each policy governs, with their pods: those whose pod template the policy
/// would inject (`Mesh::policy_for`), in namespaces that opted in, outside the control
/// plane's namespace, not opted out. `health` judges a pod's proxy.
pub fn governed(
    mesh: &Mesh,
    objects: &[WorkloadObject],
    pods: &HashMap<ObjectKey, PodFacts>,
    health: impl Fn(&ObjectKey) -> ProxyHealth,
) -> HashMap<ObjectKey, Vec<Workload>> {
    let settings = mesh.settings();
    let mut by_workload: HashMap<(&str, &str), Vec<(&ObjectKey, &PodFacts)>> = HashMap::new();
    for (key, pod) in pods {
        if let Some(w) = &pod.workload {
            by_workload
                .entry((key.namespace.as_str(), w.as_str()))
                .or_default()
                .push((key, pod));
        }
    }
    let mut out: HashMap<ObjectKey, Vec<Workload>> = HashMap::new();
    for o in objects {
        let ns = o.workload.namespace.as_str();
        let in_mesh = mesh
            .namespace_labels(ns)
            .and_then(|l| l.get(&settings.mesh_label))
            .is_some_and(|v| v == "enabled");
        let opted_out = o
            .annotations
            .get(INJECT_ANNOTATION)
            .is_some_and(|v| v == "false");
        if !in_mesh || opted_out || ns == settings.root_namespace {
            continue;
        }
        let Some(policy) = mesh.policy_for(ns, &o.labels) else {
            continue;
        };
        let owner = format!("{}/{}", o.workload.kind, o.workload.name);
        let mut workload_pods: Vec<RolloutPod> = by_workload
            .get(&(ns, owner.as_str()))
            .into_iter()
            .flatten()
            .map(|(key, pod)| RolloutPod {
                name: key.name.clone(),
                version: pod.sidecar.clone(),
                revision: pod.revision.clone(),
                ready_since: pod.ready_since.clone(),
                terminating: pod.terminating,
                proxy: health(key),
            })
            .collect();
        workload_pods.sort_by(|a, b| a.name.cmp(&b.name));
        out.entry(policy.clone()).or_default().push(Workload {
            workload: o.workload.clone(),
            desired: o.desired,
            stamp: o.annotations.get(RESTART_ANNOTATION).cloned(),
            pods: workload_pods,
        });
    }
    out
}

/// Which Eviction the API server speaks: `policy/v1` from Kubernetes 1.22, `policy/v1beta1`
/// before (the 1.20 e2e server).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvictionVersion {
    /// `policy/v1`.
    V1,
    /// `policy/v1beta1`.
    V1beta1,
}

impl EvictionVersion {
    /// The version a server of this `/version` speaks; an unreadable minor counts as new.
    pub fn for_server(info: &Info) -> EvictionVersion {
        let minor: u32 = info.minor.trim_end_matches('+').parse().unwrap_or(u32::MAX);
        if info.major == "1" && minor < 22 {
            EvictionVersion::V1beta1
        } else {
            EvictionVersion::V1
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            EvictionVersion::V1 => "policy/v1",
            EvictionVersion::V1beta1 => "policy/v1beta1",
        }
    }
}

/// Carries out a step's actions and announces its notes.
pub struct Executor {
    client: Client,
    eviction: EvictionVersion,
    recorder: Recorder,
}

/// How long an eviction may take before it counts as refused: the API server answers at
/// once, so only its 429 (a PodDisruptionBudget) retried by the client lasts this long.
const EVICTION_WAIT: Duration = Duration::from_secs(3);

/// Why a rollout action did not take effect (the next step issues it again).
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// A PodDisruptionBudget kept refusing the eviction for `waited`.
    #[error(
        "the API server kept refusing to evict {pod} for {waited:?}: a PodDisruptionBudget \
         allows no disruption now"
    )]
    Refused {
        /// `namespace/name` of the pod.
        pod: String,
        /// How long the eviction was retried.
        waited: Duration,
    },
    /// The restart's patch or the eviction failed.
    #[error(transparent)]
    Kube(kube::Error),
}

/// The field manager of the restart annotation, so `kubectl` and GitOps tools can tell who
/// set it.
const FIELD_MANAGER: &str = "remora-rollout";

impl Executor {
    /// Acts through `client`, evicting with `eviction`, and records Events as
    /// `remora-controller`.
    pub fn new(client: Client, eviction: EvictionVersion) -> Executor {
        Executor {
            recorder: Recorder::new(client.clone(), Reporter::from("remora-controller")),
            client,
            eviction,
        }
    }

    /// Every action is tried; a failed one is logged and counted, and the next step issues
    /// it again (steps re-issue whatever has not taken effect).
    pub async fn act(&self, policy: &ObjectKey, actions: &[Action], metrics: &Metrics) {
        let results = futures::future::join_all(actions.iter().map(|action| async move {
            match action {
                Action::Restart { workload, stamp } => {
                    ("restart", self.restart(workload, stamp).await)
                }
                Action::Evict { workload, pod } => ("evict", self.evict(workload, pod).await),
            }
        }))
        .await;
        for (action, (label, result)) in actions.iter().zip(results) {
            match &result {
                Ok(()) => info!(%policy, ?action, "rollout action done"),
                Err(e) => {
                    warn!(%policy, ?action, error = %e, "rollout action not done; retried at the next step")
                }
            }
            metrics.observe_rollout_action(label, result.is_ok());
        }
    }

    async fn restart(&self, w: &WorkloadRef, stamp: &str) -> Result<(), ActionError> {
        // A merge patch of one annotation: the rest of the object, which Git may own, stays
        // as it is (as with `kubectl rollout restart`).
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {
            RESTART_ANNOTATION: stamp
        }}}}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let (ns, name) = (w.namespace.as_str(), w.name.as_str());
        let c = self.client.clone();
        match w.kind.as_str() {
            "Deployment" => Api::<Deployment>::namespaced(c, ns)
                .patch(name, &params, &Patch::Merge(&patch))
                .await
                .map(drop),
            "StatefulSet" => Api::<StatefulSet>::namespaced(c, ns)
                .patch(name, &params, &Patch::Merge(&patch))
                .await
                .map(drop),
            _ => Api::<DaemonSet>::namespaced(c, ns)
                .patch(name, &params, &Patch::Merge(&patch))
                .await
                .map(drop),
        }
        .map_err(ActionError::Kube)
    }

    /// Evicts through the Eviction API, so the API server enforces PodDisruptionBudgets.
    /// A refusal is a 429, which the client would retry with backoff for many minutes; the
    /// next step asks again anyway, so the wait is cut short.
    async fn evict(&self, w: &WorkloadRef, pod: &str) -> Result<(), ActionError> {
        tokio::time::timeout(EVICTION_WAIT, self.post_eviction(w, pod))
            .await
            .map_err(|_| ActionError::Refused {
                pod: format!("{}/{pod}", w.namespace),
                waited: EVICTION_WAIT,
            })?
            .map_err(ActionError::Kube)
    }

    async fn post_eviction(&self, w: &WorkloadRef, pod: &str) -> Result<(), kube::Error> {
        let body = json!({
            "apiVersion": self.eviction.api_version(),
            "kind": "Eviction",
            "metadata": {"name": pod, "namespace": w.namespace},
        });
        let request = http::Request::post(format!(
            "/api/v1/namespaces/{}/pods/{pod}/eviction",
            w.namespace
        ))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body).map_err(kube::Error::SerdeError)?)
        .map_err(|e| kube::Error::BuildRequest(kube::core::request::Error::BuildRequest(e)))?;
        self.client
            .request::<serde_json::Value>(request)
            .await
            .map(drop)
    }

    /// Events are best effort: the status already says what they do.
    pub async fn announce(&self, policy: &SidecarPolicy, notes: &[Note]) {
        let reference = kube::Resource::object_ref(policy, &());
        for note in notes {
            info!(policy = %policy.name_any(), reason = note.reason, message = %note.message, "rollout");
            let event = Event {
                type_: if note.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: note.reason.into(),
                note: Some(note.message.clone()),
                action: "Rollout".into(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&event, &reference).await {
                warn!(reason = note.reason, error = %e, "event not published");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use remora_model::input::{Event as MeshEvent, MeshSettings, Namespace, Object};

    use remora_test_support::labels;

    use super::*;

    fn policy(ns: &str, name: &str, app: Option<&str>) -> Object {
        let selector = app.map(|a| json!({"matchLabels": {"app": a}}));
        let p: SidecarPolicy = serde_json::from_value(json!({
            "apiVersion": "remora.dev/v1alpha1", "kind": "SidecarPolicy",
            "metadata": {"namespace": ns, "name": name,
                "creationTimestamp": "2026-11-29T05:00:00Z"},
            "spec": {"selector": selector,
                "proxy": {"image": "envoyproxy/envoy", "version": "v1.40.0"}}
        }))
        .expect("a policy");
        Object::SidecarPolicy(Box::new(p))
    }

    fn mesh() -> Mesh {
        let mut m = Mesh::new(MeshSettings::default());
        let ns = |name: &str, enabled: bool| {
            MeshEvent::Upsert(Object::Namespace(Namespace {
                name: name.into(),
                labels: if enabled {
                    labels(&[("remora.dev/mesh", "enabled")])
                } else {
                    Labels::new()
                },
            }))
        };
        m.apply([
            ns("shop", true),
            ns("plain", false),
            MeshEvent::Upsert(policy("shop", "all", None)),
            MeshEvent::Upsert(policy("shop", "db", Some("db"))),
        ]);
        m
    }

    fn workload(kind: &str, ns: &str, name: &str, app: &str) -> WorkloadObject {
        WorkloadObject {
            workload: WorkloadRef {
                kind: kind.into(),
                namespace: ns.into(),
                name: name.into(),
            },
            labels: labels(&[("app", app)]),
            annotations: BTreeMap::new(),
            desired: 2,
        }
    }

    fn pod(workload: &str, version: Option<&str>) -> PodFacts {
        PodFacts {
            sidecar: version.map(Into::into),
            revision: version.map(|v| format!("rev-{v}")),
            workload: Some(workload.into()),
            ready_since: None,
            terminating: false,
        }
    }

    #[test]
    fn workloads_go_to_the_policy_that_would_inject_their_pods() {
        let m = mesh();
        let mut opted_out = workload("Deployment", "shop", "batch", "batch");
        opted_out
            .annotations
            .insert(INJECT_ANNOTATION.into(), "false".into());
        opted_out
            .annotations
            .insert(RESTART_ANNOTATION.into(), "x".into());
        let mut stamped = workload("Deployment", "shop", "web", "web");
        stamped
            .annotations
            .insert(RESTART_ANNOTATION.into(), "1.40.0/abc".into());
        let objects = [
            stamped,
            workload("StatefulSet", "shop", "db", "db"),
            workload("Deployment", "plain", "web", "web"),
            workload("Deployment", "remora-system", "remora", "remora"),
            opted_out,
        ];
        let pods = HashMap::from([
            (
                ObjectKey::new("shop", "web-1"),
                pod("Deployment/web", Some("1.40.0")),
            ),
            (ObjectKey::new("shop", "web-2"), pod("Deployment/web", None)),
            (
                ObjectKey::new("shop", "db-0"),
                pod("StatefulSet/db", Some("1.39.0")),
            ),
            // Same name, other namespace: not web's.
            (
                ObjectKey::new("plain", "web-1"),
                pod("Deployment/web", None),
            ),
        ]);
        let g = governed(&m, &objects, &pods, |k| {
            if k.name == "web-1" {
                ProxyHealth::Acked
            } else {
                ProxyHealth::Unknown
            }
        });
        let names = |policy: &str| -> Vec<String> {
            let key = ObjectKey::new("shop", policy);
            g.get(&key)
                .into_iter()
                .flatten()
                .map(|w| w.workload.to_string())
                .collect()
        };
        assert_eq!(names("all"), ["Deployment/shop/web"]);
        assert_eq!(names("db"), ["StatefulSet/shop/db"]);
        assert_eq!(g.len(), 2);
        let web = &g[&ObjectKey::new("shop", "all")][0];
        assert_eq!(web.stamp.as_deref(), Some("1.40.0/abc"));
        assert_eq!(web.desired, 2);
        let pods: Vec<(&str, Option<&str>, Option<&str>, &ProxyHealth)> = web
            .pods
            .iter()
            .map(|p| {
                let (version, revision) = (p.version.as_deref(), p.revision.as_deref());
                (p.name.as_str(), version, revision, &p.proxy)
            })
            .collect();
        assert_eq!(
            pods,
            [
                (
                    "web-1",
                    Some("1.40.0"),
                    Some("rev-1.40.0"),
                    &ProxyHealth::Acked
                ),
                ("web-2", None, None, &ProxyHealth::Unknown)
            ]
        );
    }

    #[test]
    fn eviction_speaks_the_servers_version() {
        let cases = [
            ("20", EvictionVersion::V1beta1),
            ("21+", EvictionVersion::V1beta1),
            ("22", EvictionVersion::V1),
            ("37", EvictionVersion::V1),
        ];
        for (minor, want) in cases {
            let info = Info {
                major: "1".into(),
                minor: minor.into(),
                ..Info::default()
            };
            assert_eq!(EvictionVersion::for_server(&info), want, "minor {minor}");
        }
    }
}
