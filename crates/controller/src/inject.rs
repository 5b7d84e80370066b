//! Sidecar injection from the live state: the mutating webhook asks [`MeshInjector`] about
//! each pod being created, and it answers from the same model and policy store that the
//! proxies' config and the policies' status come from, with `remora_inject`'s pure
//! `decide` and `patch`.

use std::{fmt, sync::Arc};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Client,
    runtime::reflector::{ObjectRef, Store},
};
use remora_api::{
    SidecarPolicy, ValidationSettings,
    sidecar_policy::{SidecarPolicySpec, WorkloadRef},
};
use remora_inject::{
    ControlPlane, Decision, InjectError, Injection, JsonPatchOp, Layout, MeshIdentity, PodSecurity,
    ServerVersion, Settings, SkipReason, decide, patch_with,
};
use remora_runtime::SharedMesh;
use remora_webhook::{InjectFailure, PodInjector};
use tokio::sync::watch;

use crate::{health::Readiness, metrics::Metrics};

/// What injection needs beyond the model.
#[derive(Clone, Debug)]
pub struct InjectConfig {
    /// The control plane's namespace (never injected) and the namespaces' opt-in label.
    pub settings: Settings,
    /// `None`: chosen from the API server's version at start. A cluster whose kubelets are
    /// older than its API server needs `Classic` set here.
    pub layout: Option<Layout>,
    /// Where the injected proxies find the control plane.
    pub control_plane: ControlPlane,
}

/// Why injection could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The API server's version could not be read, and no layout was configured.
    #[error(
        "cannot read the API server's version to choose the sidecar layout (or set the layout \
         in the configuration): {0}"
    )]
    Version(#[source] kube::Error),
    /// The API server's version is not one a layout can be chosen from.
    #[error(transparent)]
    Layout(#[from] InjectError),
}

/// The layout sidecars get: the configured one, else what the API server's version supports.
pub async fn layout(client: &Client, configured: Option<Layout>) -> Result<Layout, StartError> {
    if let Some(layout) = configured {
        return Ok(layout);
    }
    let info = client
        .apiserver_version()
        .await
        .map_err(StartError::Version)?;
    Ok(Layout::for_server(ServerVersion::from_info(&info)?))
}

/// The proxy version a pod of `workload` gets under a policy whose spec in effect is `spec`
/// (its last valid one) and whose stored object is `policy` (for its rollout status). This is
/// the one place that decides it, so injection and rollouts cannot disagree.
///
/// During a rollout a workload keeps the previous version until the rollout reaches it, even
/// when its pods are recreated; a pod no workload owns is never reached by a rollout, so it
/// gets the previous version until the rollout completes.
pub fn sidecar_version(
    spec: &SidecarPolicySpec,
    policy: &SidecarPolicy,
    workload: Option<&WorkloadRef>,
) -> String {
    let rollout = policy.status.as_ref().and_then(|s| s.rollout.as_ref());
    let unowned = WorkloadRef::new("", "", "");
    remora_rollout::version_for(spec, rollout, workload.unwrap_or(&unowned)).to_owned()
}

/// The workload the pod being created belongs to, in `namespace`; `None` for a pod no
/// controller owns.
pub fn workload_ref(namespace: &str, pod: &Pod) -> Option<WorkloadRef> {
    let workload = remora_inject::workload(pod)?;
    let (kind, name) = workload.split_once('/')?;
    Some(WorkloadRef::new(kind, namespace, name))
}

/// Answers the mutating webhook from the controller's state.
pub struct MeshInjector {
    /// The control plane's namespace (never injected) and the namespaces' opt-in label.
    pub settings: Settings,
    /// How the sidecars sit in the pod.
    pub layout: Layout,
    /// Where the injected proxies find the control plane.
    pub control_plane: ControlPlane,
    /// What the mesh validates against, which the injected proxies' bootstraps follow.
    pub validation: ValidationSettings,
    /// The mesh's identities as they are now (the trust bundle follows the CA's Secret), or
    /// `None` when the mesh has none.
    pub identity: Option<watch::Receiver<MeshIdentity>>,
    /// The model: namespaces' labels and the policy that governs a pod, with its spec in effect.
    pub mesh: Arc<SharedMesh>,
    /// The stored SidecarPolicies, for their names and rollout status.
    pub policies: Store<SidecarPolicy>,
    /// Until it is ready, a pod is answered unavailable, not decided on half the cluster.
    pub ready: Arc<Readiness>,
    /// Counts each answer by outcome and reason.
    pub metrics: Arc<Metrics>,
}

impl fmt::Debug for MeshInjector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshInjector")
            .field("settings", &self.settings)
            .field("layout", &self.layout)
            .field("control_plane", &self.control_plane)
            .field("validation", &self.validation)
            .finish_non_exhaustive()
    }
}

impl PodInjector for MeshInjector {
    fn inject(&self, namespace: &str, pod: &Pod) -> Result<Vec<JsonPatchOp>, InjectFailure> {
        let name = pod
            .metadata
            .name
            .as_deref()
            .or(pod.metadata.generate_name.as_deref())
            .unwrap_or_default();
        let answer = self.answer(namespace, pod);
        match &answer {
            Answer::Injected {
                policy, version, ..
            } => {
                tracing::info!(%namespace, pod = name, %policy, %version, "sidecar injected");
                self.metrics.observe_injection("injected", "");
            }
            Answer::Skipped(reason) => {
                tracing::debug!(%namespace, pod = name, %reason, "no sidecar");
                self.metrics
                    .observe_injection("skipped", reason.metric_label());
            }
            Answer::Refused(e) => {
                tracing::info!(%namespace, pod = name, error = %e, "pod refused: its sidecar cannot be added");
                self.metrics.observe_injection("refused", e.metric_label());
            }
            Answer::Unavailable(why) => {
                tracing::warn!(%namespace, pod = name, %why, "cannot decide a pod's sidecar yet");
                self.metrics.observe_injection("unavailable", "not_synced");
            }
        }
        match answer {
            Answer::Injected { ops, .. } => Ok(ops),
            Answer::Skipped(_) => Ok(Vec::new()),
            Answer::Refused(e) => Err(InjectFailure::Refused(e.to_string())),
            Answer::Unavailable(why) => Err(InjectFailure::Unavailable(why)),
        }
    }
}

/// One pod's outcome, with what the log and the metrics need.
enum Answer {
    Injected {
        ops: Vec<JsonPatchOp>,
        policy: String,
        version: String,
    },
    Skipped(SkipReason),
    Refused(InjectError),
    Unavailable(String),
}

impl MeshInjector {
    fn answer(&self, namespace: &str, pod: &Pod) -> Answer {
        // The control plane's own pods never wait for it to have read the cluster.
        if namespace == self.settings.control_plane_namespace {
            return Answer::Skipped(SkipReason::ControlPlaneNamespace {
                namespace: namespace.into(),
            });
        }
        // Before every watch has listed, a missing namespace or policy may only be unread
        // yet; deciding then could admit a pod without the sidecar its policy requires.
        let waiting = self.ready.waiting_for();
        if !waiting.is_empty() {
            return Answer::Unavailable(format!(
                "the controller is still starting (waiting for {})",
                waiting.join(", ")
            ));
        }
        let no_labels = Default::default();
        let pod_labels = pod.metadata.labels.as_ref().unwrap_or(&no_labels);
        let (namespace_labels, governing) = {
            let mesh = self.mesh.lock();
            let Some(labels) = mesh.namespace_labels(namespace) else {
                return Answer::Unavailable(format!(
                    "namespace {namespace:?} is not known to the controller yet"
                ));
            };
            let governing = mesh
                .policy_for(namespace, pod_labels)
                .and_then(|key| Some((key.clone(), mesh.policy_spec(key)?.clone())));
            (labels.clone(), governing)
        };
        // The spec in effect is the model's (the last valid one); the stored object gives
        // the name and the rollout status.
        let policy = match governing {
            None => None,
            Some((key, spec)) => {
                let stored = self
                    .policies
                    .get(&ObjectRef::new(&key.name).within(&key.namespace));
                let Some(stored) = stored else {
                    return Answer::Unavailable(format!(
                        "SidecarPolicy {}/{} is not in the controller's store yet",
                        key.namespace, key.name
                    ));
                };
                let in_effect = SidecarPolicy {
                    metadata: stored.metadata.clone(),
                    spec,
                    status: None,
                };
                Some((key, in_effect, stored))
            }
        };
        let decision = decide(
            &self.settings,
            pod,
            namespace,
            &namespace_labels,
            policy.as_ref().map(|(_, in_effect, _)| in_effect),
        );
        let (key, in_effect, stored) = match (decision, policy) {
            (Decision::Skip(reason), _) => return Answer::Skipped(reason),
            (Decision::Inject, Some(policy)) => policy,
            // decide() injects only with a policy.
            (Decision::Inject, None) => return Answer::Skipped(SkipReason::NoPolicy),
        };
        let workload = workload_ref(namespace, pod);
        let version = sidecar_version(&in_effect.spec, &stored, workload.as_ref());
        // From the same spec the containers are built from, so the annotation names exactly
        // the sidecar the pod gets.
        let revision = remora_rollout::revision_of(&in_effect.spec, &version);
        let control_plane = ControlPlane {
            identity: self.identity.as_ref().map(|i| i.borrow().clone()),
            ..self.control_plane.clone()
        };
        let injection = Injection {
            policy: &in_effect,
            version: &version,
            revision: &revision,
            layout: self.layout,
            control_plane: &control_plane,
            pod_security: PodSecurity::enforced(Some(&namespace_labels)),
        };
        match patch_with(pod, &injection, &self.validation) {
            Ok(ops) => Answer::Injected {
                ops,
                policy: format!("{}/{}", key.namespace, key.name),
                version,
            },
            Err(e) => Answer::Refused(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, sync::atomic::AtomicBool};

    use kube::runtime::{reflector, watcher};
    use remora_model::{
        Mesh,
        input::{Event, MeshSettings, Namespace, Object},
    };
    use remora_xds::SyncRegistry;
    use serde_json::json;

    use super::*;

    fn policy(namespace: &str, name: &str, version: &str) -> SidecarPolicy {
        serde_json::from_value(json!({
            "apiVersion": "remora.dev/v1alpha1", "kind": "SidecarPolicy",
            "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}")},
            "spec": {"proxy": {"image": "envoyproxy/envoy", "version": version}}
        }))
        .expect("a policy")
    }

    fn namespace(name: &str, in_mesh: bool) -> Event {
        let mut labels = BTreeMap::new();
        if in_mesh {
            labels.insert("remora.dev/mesh".to_owned(), "enabled".to_owned());
        }
        Event::Upsert(Object::Namespace(Namespace {
            name: name.into(),
            labels,
        }))
    }

    fn pod(extra: serde_json::Value) -> Pod {
        let mut p = json!({
            "metadata": {"generateName": "web-7d9f-", "labels": {"app": "web", "pod-template-hash": "7d9f"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-7d9f", "uid": "u", "controller": true}]},
            "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1"}]}
        });
        json_patch::merge(&mut p, &extra);
        serde_json::from_value(p).expect("a pod")
    }

    /// An injector over a model holding `events`, with `policies` in its store, ready or not.
    fn injector(events: Vec<Event>, policies: &[SidecarPolicy], ready: bool) -> MeshInjector {
        let mut mesh = Mesh::new(MeshSettings::default());
        mesh.apply(events);
        let (store, mut writer) = reflector::store::<SidecarPolicy>();
        for p in policies {
            writer.apply_watcher_event(&watcher::Event::Apply(p.clone()));
        }
        MeshInjector {
            settings: Settings::default(),
            layout: Layout::Classic,
            control_plane: ControlPlane {
                xds_host: "remora.remora-system.svc".into(),
                xds_port: 18000,
                delta: false,
                image: "ghcr.io/remora-mesh/remora:test".into(),
                identity: None,
            },
            validation: ValidationSettings::default(),
            identity: None,
            mesh: Arc::new(SharedMesh::new(mesh)),
            policies: store,
            ready: Arc::new(Readiness {
                watches: vec![("Pod".into(), Arc::new(AtomicBool::new(true)))],
                published: AtomicBool::new(ready),
            }),
            metrics: Arc::new(Metrics::new()),
        }
    }

    fn shop() -> (Vec<Event>, Vec<SidecarPolicy>) {
        let p = policy("shop", "mesh", "1.40.0");
        let events = vec![
            namespace("shop", true),
            namespace("plain", false),
            Event::Upsert(Object::SidecarPolicy(Box::new(p.clone()))),
        ];
        (events, vec![p])
    }

    fn metrics(i: &MeshInjector) -> String {
        i.metrics.render(&SyncRegistry::new())
    }

    #[test]
    fn a_pod_in_an_opted_in_namespace_gets_the_proxy_and_the_annotations() {
        let (events, policies) = shop();
        let i = injector(events, &policies, true);
        let ops = i.inject("shop", &pod(json!({}))).expect("answered");
        let mut patched = serde_json::to_value(pod(json!({}))).expect("json");
        let patch: json_patch::Patch =
            serde_json::from_value(serde_json::to_value(&ops).expect("json")).expect("RFC 6902");
        json_patch::patch(&mut patched, &patch).expect("applies");
        // Classic: the proxy is the first ordinary container.
        assert_eq!(patched["spec"]["containers"][0]["name"], "remora-proxy");
        assert_eq!(
            patched["spec"]["containers"][0]["image"],
            "envoyproxy/envoy:1.40.0"
        );
        assert_eq!(patched["spec"]["containers"][1]["name"], "web");
        let annotations = &patched["metadata"]["annotations"];
        assert_eq!(annotations["sidecar.remora.dev/version"], "1.40.0");
        assert_eq!(
            annotations["sidecar.remora.dev/revision"].as_str(),
            Some(remora_rollout::revision(&policies[0].spec).as_str())
        );
        assert_eq!(annotations["sidecar.remora.dev/policy"], "shop/mesh");
        assert!(metrics(&i).contains(r#"remora_injections_total{result="injected",reason=""} 1"#));
    }

    #[test]
    fn skipped_pods_are_left_alone_and_counted_by_reason() {
        let (events, policies) = shop();
        let i = injector(events, &policies, true);
        let opted_out =
            pod(json!({"metadata": {"annotations": {"sidecar.remora.dev/inject": "false"}}}));
        assert_eq!(i.inject("shop", &opted_out), Ok(Vec::new()));
        assert_eq!(i.inject("plain", &pod(json!({}))), Ok(Vec::new()));
        assert_eq!(i.inject("remora-system", &pod(json!({}))), Ok(Vec::new()));
        let text = metrics(&i);
        for reason in [
            "opted_out",
            "namespace_not_in_mesh",
            "control_plane_namespace",
        ] {
            assert!(
                text.contains(&format!(
                    r#"remora_injections_total{{result="skipped",reason="{reason}"}} 1"#
                )),
                "{reason}: {text}"
            );
        }
    }

    #[test]
    fn no_policy_means_no_sidecar() {
        let i = injector(vec![namespace("shop", true)], &[], true);
        assert_eq!(i.inject("shop", &pod(json!({}))), Ok(Vec::new()));
        assert!(metrics(&i).contains(r#"result="skipped",reason="no_policy""#));
    }

    #[test]
    fn a_clash_refuses_the_pod_naming_the_field() {
        let (events, policies) = shop();
        let i = injector(events, &policies, true);
        let clash = pod(json!({"spec": {"containers": [
            {"name": "web", "ports": [{"containerPort": 15021}]}]}}));
        let Err(InjectFailure::Refused(message)) = i.inject("shop", &clash) else {
            panic!("refused");
        };
        assert!(
            message.starts_with("spec.containers[0].ports[0].containerPort: port 15021"),
            "{message}"
        );
        assert!(metrics(&i).contains(r#"result="refused",reason="port_taken""#));
    }

    #[test]
    fn an_extra_container_the_namespaces_pod_security_level_refuses_refuses_the_pod() {
        let mut p = policy("shop", "mesh", "1.40.0");
        p.spec.extra_containers = vec![
            serde_json::from_value(json!({
                "name": "debugger", "image": "busybox", "securityContext": {"privileged": true}
            }))
            .expect("a container"),
        ];
        let with_level = |level: &str| {
            let Event::Upsert(Object::Namespace(mut ns)) = namespace("shop", true) else {
                unreachable!("a namespace")
            };
            ns.labels
                .insert(remora_inject::ENFORCE_LABEL.to_owned(), level.to_owned());
            let events = vec![
                Event::Upsert(Object::Namespace(ns)),
                Event::Upsert(Object::SidecarPolicy(Box::new(p.clone()))),
            ];
            injector(events, std::slice::from_ref(&p), true)
        };
        let i = with_level("baseline");
        let Err(InjectFailure::Refused(message)) = i.inject("shop", &pod(json!({}))) else {
            panic!("refused");
        };
        assert!(
            message.starts_with("the namespace enforces Pod Security level baseline"),
            "{message}"
        );
        for fault in [
            "spec.extraContainers[0].securityContext.privileged (no privileged containers)",
            "injected init container remora-init.securityContext.capabilities.add[0]",
        ] {
            assert!(message.contains(fault), "{fault} in {message}");
        }
        assert!(metrics(&i).contains(r#"result="refused",reason="pod_security""#));
        let privileged = with_level("privileged");
        assert!(privileged.inject("shop", &pod(json!({}))).is_ok());
    }

    #[test]
    fn unknown_state_fails_the_call_rather_than_skipping() {
        let (events, policies) = shop();
        let starting = injector(events.clone(), &policies, false);
        assert!(matches!(
            starting.inject("shop", &pod(json!({}))),
            Err(InjectFailure::Unavailable(m)) if m.contains("the first published config")
        ));
        let i = injector(events.clone(), &policies, true);
        assert!(matches!(
            i.inject("new", &pod(json!({}))),
            Err(InjectFailure::Unavailable(m)) if m.contains("\"new\"")
        ));
        // The model knows the policy but the store does not (yet).
        let unstored = injector(events, &[], true);
        assert!(matches!(
            unstored.inject("shop", &pod(json!({}))),
            Err(InjectFailure::Unavailable(m)) if m.contains("shop/mesh")
        ));
        assert!(metrics(&i).contains(r#"result="unavailable",reason="not_synced""#));
    }

    /// A workload the rollout has not reached gets the previous version, annotated with the
    /// revision of exactly that: the current spec with the previous version.
    #[test]
    fn a_pod_not_reached_yet_gets_the_previous_version_and_its_revision() {
        let mut p = policy("shop", "mesh", "1.40.0");
        p.spec.proxy.concurrency = Some(4);
        let status = json!({"rollout": {"phase": "Progressing", "targetVersion": "1.40.0",
            "previousVersion": "1.39.0", "revision": remora_rollout::revision(&p.spec),
            "wave": 1, "totalWaves": 1, "updatedWorkloads": 0, "totalWorkloads": 1}});
        p.status = Some(serde_json::from_value(status).expect("a status"));
        let events = vec![
            namespace("shop", true),
            Event::Upsert(Object::SidecarPolicy(Box::new(p.clone()))),
        ];
        let i = injector(events, &[p.clone()], true);
        let ops = serde_json::to_value(i.inject("shop", &pod(json!({}))).expect("answered"))
            .expect("json");
        let annotations = ops
            .as_array()
            .expect("ops")
            .iter()
            .find(|op| op["path"] == "/metadata/annotations")
            .map(|op| &op["value"])
            .expect("annotations added");
        assert_eq!(annotations["sidecar.remora.dev/version"], "1.39.0");
        let revision = remora_rollout::revision_of(&p.spec, "1.39.0");
        assert_eq!(
            annotations["sidecar.remora.dev/revision"].as_str(),
            Some(revision.as_str())
        );
        assert_ne!(revision, remora_rollout::revision(&p.spec));
    }

    #[test]
    fn the_workload_is_the_controlling_owner() {
        assert_eq!(
            workload_ref("shop", &pod(json!({}))),
            Some(WorkloadRef::new("Deployment", "shop", "web"))
        );
        let mut bare = pod(json!({}));
        bare.metadata.owner_references = None;
        assert_eq!(workload_ref("shop", &bare), None);
    }
}
