//! Central sidecar upgrades against a real Kubernetes API server: the controller injects
//! sidecars through its mutating webhook (called by the API server over TLS), and a version
//! change in a SidecarPolicy rolls across the Deployments it governs in waves, each started
//! only after the previous one's health gate passed. A stub kubelet (support::kubelet) binds
//! pods, makes them Ready (or withholds readiness) and finishes deletions.

mod support;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        admissionregistration::v1::MutatingWebhookConfiguration,
        apps::v1::Deployment,
        core::v1::{Event, Namespace, Pod},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use remora_api::{
    SidecarPolicy,
    sidecar_policy::{RolloutPhase, RolloutStatus},
};
use remora_controller::{Config, Controller, fleet::FleetConfig, leader::LeaseConfig};
use remora_rollout::RESTART_ANNOTATION;
use remora_runtime::Debounce;
use serde_json::json;
use support::{cluster, eventually, injection, kubelet, ports};

/// Every controller steps the rollouts of every policy in the cluster, so the tests of this
/// file take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Puts a test's namespace, and only it, under that test's webhook.
const TEST_LABEL: &str = "remora.dev/rollout-test";
const VERSION_ANNOTATION: &str = "sidecar.remora.dev/version";
const OLD: &str = "v1.39.0";
const NEW: &str = "v1.40.0";

/// One test's share of the cluster: its turn, an opted-in namespace, and the webhook the
/// API server calls for that namespace's pods.
struct Scene {
    client: Client,
    ns: String,
    webhook_name: String,
    port: u16,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Scene {
    async fn new(prefix: &str) -> Option<Scene> {
        // RUST_LOG=remora_controller=debug shows what the controller did when a test fails.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let client = cluster::client().await?;
        let turn = ONE_AT_A_TIME.lock().await;
        cluster::install_crds(&client).await;
        let ns = cluster::test_namespace(&client, prefix).await;
        let label = json!({"metadata": {"labels": {"remora.dev/mesh": "enabled"}}});
        Api::<Namespace>::all(client.clone())
            .patch(&ns, &PatchParams::default(), &Patch::Merge(&label))
            .await
            .expect("opt the namespace in");
        let port = ports::free_port();
        let webhook_name = format!("remora-e2e-{ns}");
        let configuration =
            injection::mutating_configuration(&webhook_name, (TEST_LABEL, &ns), port);
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .create(&PostParams::default(), &configuration)
            .await
            .expect("create the MutatingWebhookConfiguration");
        let label = json!({"metadata": {"labels": {TEST_LABEL: ns}}});
        Api::<Namespace>::all(client.clone())
            .patch(&ns, &PatchParams::default(), &Patch::Merge(&label))
            .await
            .expect("point the webhook at the namespace");
        Some(Scene {
            client,
            ns,
            webhook_name,
            port,
            _turn: turn,
        })
    }

    async fn controller(&self) -> Controller {
        self.start(self.config()).await
    }

    fn config(&self) -> Config {
        let mut config = injection::controller_config(&self.ns, &self.webhook_name, self.port);
        // The model applies events a debounce after the pod watch saw them, here longer than
        // a status pass, as on a busy controller: rollouts must not depend on the two
        // agreeing (a new pod's readiness once got lost between them).
        config.debounce = Debounce {
            window: Duration::from_millis(1500),
            max_delay: Duration::from_secs(3),
        };
        config
    }

    /// One of two replicas electing a leader and reporting their proxies to each other; only
    /// an `injecting` one serves the webhook.
    async fn replica(&self, identity: &str, injecting: bool) -> Controller {
        let mut config = self.config();
        let lease = LeaseConfig {
            namespace: self.ns.clone(),
            name: "remora-controller".into(),
            identity: identity.into(),
            duration: Duration::from_secs(4),
            grace: Duration::from_secs(1),
        };
        config.fleet = Some(FleetConfig {
            min_interval: Duration::from_millis(100),
            heartbeat: Duration::from_secs(1),
            ..FleetConfig::new(&self.ns, identity, "remora-controller-proxies")
        });
        config.lease = Some(lease);
        if !injecting {
            (config.webhook, config.inject) = (None, None);
        }
        self.start(config).await
    }

    async fn start(&self, config: Config) -> Controller {
        let controller = remora_controller::start(self.client.clone(), config)
            .await
            .expect("the controller starts");
        eventually(60, "the controller is ready", async || {
            controller.ready.waiting_for().is_empty().then_some(())
        })
        .await;
        controller
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn policies(&self) -> Api<SidecarPolicy> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// The policy governing every pod of the namespace, at `OLD`.
    async fn create_policy(&self, rollout: serde_json::Value) {
        let policy: SidecarPolicy = serde_json::from_value(json!({
            "apiVersion": "remora.dev/v1alpha1", "kind": "SidecarPolicy",
            "metadata": {"name": "fleet"},
            "spec": {"proxy": {"image": "envoyproxy/envoy", "version": OLD},
                "rollout": rollout}
        }))
        .expect("a SidecarPolicy");
        self.policies()
            .create(&PostParams::default(), &policy)
            .await
            .expect("create the policy");
        // Pods created before the controller's model holds the policy are not injected (it
        // cannot tell that policy from none), so workloads come after it is Accepted.
        eventually(30, "the policy is Accepted", async || {
            let p = self.policies().get("fleet").await.ok()?;
            let accepted = p
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Accepted")?;
            (accepted.status == "True").then_some(())
        })
        .await;
    }

    async fn set_policy(&self, spec: serde_json::Value) {
        self.policies()
            .patch(
                "fleet",
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": spec})),
            )
            .await
            .expect("edit the policy");
    }

    async fn create_deployments(&self, names: &[String], replicas: i32) {
        for name in names {
            let d: Deployment = serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name},
                "spec": {"replicas": replicas,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "app", "image": "example.invalid/app",
                            "ports": [{"containerPort": 8080}]}]}}}
            }))
            .expect("a Deployment");
            for attempt in 0.. {
                match self.deployments().create(&PostParams::default(), &d).await {
                    Ok(_) => break,
                    Err(e) if attempt < 50 => {
                        eprintln!("creating {name}: {e}; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("cannot create {name}: {e}"),
                }
            }
        }
    }

    async fn rollout(&self) -> Option<RolloutStatus> {
        self.policies().get("fleet").await.ok()?.status?.rollout
    }

    /// The live pods (not being deleted) of each Deployment: (name, sidecar version, ready).
    async fn live_pods(&self) -> BTreeMap<String, Vec<(String, Option<String>, bool)>> {
        let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
        let pods = self
            .pods()
            .list(&ListParams::default())
            .await
            .expect("list pods");
        for p in pods.items {
            if p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let app = p.labels().get("app").cloned().unwrap_or_default();
            let version = p.annotations().get(VERSION_ANNOTATION).cloned();
            out.entry(app)
                .or_default()
                .push((p.name_any(), version, ready_since(&p).is_some()));
        }
        out
    }

    /// Waits until every Deployment in `names` has `replicas` live pods, all Ready, all with
    /// the sidecar at `version`.
    async fn settled(&self, names: &[String], replicas: usize, version: &str, secs: u64) {
        eventually(secs, &format!("every pod Ready at {version}"), async || {
            let live = self.live_pods().await;
            names
                .iter()
                .all(|n| {
                    live.get(n).is_some_and(|pods| {
                        pods.len() == replicas
                            && pods
                                .iter()
                                .all(|(_, v, ready)| *ready && v.as_deref() == Some(version))
                    })
                })
                .then_some(())
        })
        .await;
    }

    async fn stamp(&self, name: &str) -> Option<String> {
        let d = self.deployments().get(name).await.ok()?;
        d.spec
            .template
            .metadata?
            .annotations?
            .get(RESTART_ANNOTATION)
            .cloned()
    }

    async fn events(&self, reason: &str) -> Vec<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let list = events
            .list(&ListParams::default())
            .await
            .expect("list events");
        list.items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter_map(|e| e.message)
            .collect()
    }

    async fn clean_up(self) {
        let _ = Api::<MutatingWebhookConfiguration>::all(self.client.clone())
            .delete(&self.webhook_name, &DeleteParams::default())
            .await;
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.ns, &DeleteParams::default())
            .await;
    }
}

fn ready_since(p: &Pod) -> Option<Timestamp> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    c.last_transition_time.as_ref().map(|t| t.0)
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:02}")).collect()
}

impl Scene {
    /// What every test here starts from: `n` Deployments named `prefix-NN` of `replicas`
    /// pods each, a stub kubelet with `ready`, a running controller, and the policy `fleet`
    /// with `rollout`, every pod Ready with the sidecar at `OLD`. Returns the controller, the
    /// Deployments' names and the kubelet (which stops when dropped).
    async fn fleet(
        &self,
        ready: kubelet::Readiness,
        rollout: serde_json::Value,
        (prefix, n, replicas): (&str, usize, i32),
    ) -> (Controller, Vec<String>, kubelet::Kubelet) {
        let kubelet = kubelet::start(&self.client, &self.ns, ready);
        let controller = self.controller().await;
        self.create_policy(rollout).await;
        let all = names(prefix, n);
        self.create_deployments(&all, replicas).await;
        self.settled(&all, usize::try_from(replicas).expect("replicas"), OLD, 120)
            .await;
        (controller, all, kubelet)
    }

    /// Waits until the policy's rollout is Complete at `version`; its status.
    async fn completed(&self, version: &str, secs: u64) -> RolloutStatus {
        eventually(
            secs,
            &format!("the rollout Complete at {version}"),
            async || {
                self.rollout()
                    .await
                    .filter(|r| r.phase == RolloutPhase::Complete && r.target_version == version)
            },
        )
        .await
    }
}

fn every_pod_ready() -> kubelet::Readiness {
    Arc::new(|_: &Pod| true)
}

/// Ten Deployments, waves of 1, 50% and 100%: each wave's restarts begin only once every
/// workload of the wave before runs the new version with its pods Ready for `minReady`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_version_change_rolls_in_waves_each_after_the_previous_gate() {
    let Some(scene) = Scene::new("rollout-waves").await else {
        return;
    };
    let (controller, all, _kubelet) = scene
        .fleet(
            every_pod_ready(),
            json!({
                "waves": [{"count": 1}, {"percent": 50}, {"percent": 100}],
                "maxConcurrent": 5,
                "healthGate": {"minReady": "2s", "timeout": "3m"}
            }),
            ("web", 10, 1),
        )
        .await;
    scene.completed(OLD, 30).await;
    for d in &all {
        assert_eq!(
            scene.stamp(d).await,
            None,
            "{d} restarted before any change"
        );
    }

    scene.set_policy(json!({"proxy": {"version": NEW}})).await;
    // Sorted order: the canary web-00; 50% of 10 is web-00..web-04; then the rest.
    let waves: [&[String]; 3] = [&all[..1], &all[1..5], &all[5..]];
    let min_ready = Duration::from_secs(2);
    // The poll at which each Deployment was first seen restarted.
    let mut first_seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut done = false;
    for poll in 0..2400 {
        for d in &all {
            if !first_seen.contains_key(d) && scene.stamp(d).await.is_some() {
                first_seen.insert(d.clone(), poll);
            }
        }
        let live = scene.live_pods().await;
        let now = Timestamp::now();
        for k in 1..waves.len() {
            if !waves[k].iter().any(|d| first_seen.contains_key(d)) {
                continue;
            }
            // Wave k started: wave k-1's gate must have passed.
            for d in waves[k - 1] {
                let pods = scene
                    .pods()
                    .list(&ListParams::default().labels(&format!("app={d}")))
                    .await
                    .expect("list pods");
                let live_pods: Vec<&Pod> = pods
                    .items
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .collect();
                assert!(
                    !live_pods.is_empty()
                        && live_pods.iter().all(|p| {
                            p.annotations().get(VERSION_ANNOTATION).map(String::as_str) == Some(NEW)
                                && ready_since(p).is_some_and(|t| {
                                    // Ready times have 1 s resolution.
                                    now.duration_since(t).as_secs_f64() + 1.0
                                        >= min_ready.as_secs_f64()
                                })
                        }),
                    "wave {} started before {d} of wave {k} passed its gate: {:?}",
                    k + 1,
                    live.get(d)
                );
            }
        }
        let r = scene.rollout().await;
        if r.as_ref()
            .is_some_and(|r| r.phase == RolloutPhase::Complete && r.target_version == NEW)
        {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        done,
        "the rollout did not complete: {:?}",
        scene.rollout().await
    );
    assert_eq!(
        first_seen.len(),
        all.len(),
        "every Deployment restarted once"
    );
    for k in 1..waves.len() {
        let last_before = waves[k - 1].iter().map(|d| first_seen[d]).max();
        let first_now = waves[k].iter().map(|d| first_seen[d]).min();
        assert!(
            last_before < first_now,
            "wave {} began before wave {k} was fully reached: {first_seen:?}",
            k + 1
        );
    }
    scene.settled(&all, 1, NEW, 60).await;
    // Events of one reason on one object are aggregated into a series, so count the
    // transitions where the controller counts them.
    assert!(!scene.events("WaveStarted").await.is_empty());
    let text = controller.metrics.render(&controller.xds);
    assert!(
        text.contains(r#"remora_rollout_transitions_total{reason="WaveStarted"} 3"#),
        "a transition per wave: {text}"
    );
    assert!(
        text.contains(r#"remora_rollout_actions_total{action="restart",outcome="ok"}"#),
        "{text}"
    );
    controller.stop().await;
    scene.clean_up().await;
}

/// The canary's new pods never get Ready: its gate fails at the deadline, the canary goes
/// back to the old version, and no other Deployment is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_that_never_gets_ready_is_rolled_back_alone() {
    let Some(scene) = Scene::new("rollout-canary").await else {
        return;
    };
    let withhold: kubelet::Readiness = Arc::new(|p: &Pod| {
        !(p.labels().get("app").map(String::as_str) == Some("api-00")
            && p.annotations().get(VERSION_ANNOTATION).map(String::as_str) == Some(NEW))
    });
    let (controller, all, _kubelet) = scene
        .fleet(
            withhold,
            json!({
                "waves": [{"count": 1}, {"percent": 100}],
                "healthGate": {"minReady": "1s", "timeout": "8s"},
                "onFailure": "Rollback"
            }),
            ("api", 3, 1),
        )
        .await;
    let before = scene.live_pods().await;
    let generation = |d: Deployment| d.metadata.generation;
    let mut generations = Vec::new();
    for d in &all[1..] {
        generations.push(generation(scene.deployments().get(d).await.expect("get")));
    }

    scene.set_policy(json!({"proxy": {"version": NEW}})).await;
    let rolled_back = eventually(90, "the canary is rolled back", async || {
        let r = scene.rollout().await?;
        (r.phase == RolloutPhase::RolledBack).then_some(r)
    })
    .await;
    let failed: Vec<(&str, &str)> = rolled_back
        .failed_workloads
        .iter()
        .map(|f| (f.name.as_str(), f.reason.as_str()))
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "api-00");
    assert!(
        failed[0].1.ends_with("after 8s"),
        "a reason that says what is wrong since when: {failed:?}"
    );
    scene.settled(&all[..1], 1, OLD, 60).await;
    let policy = scene.policies().get("fleet").await.expect("the policy");
    let degraded = policy
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Degraded"))
        .expect("Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "RolledBack")
    );
    assert!(!scene.events("RolledBack").await.is_empty());

    // Nothing else was touched: no restart, same pods, same generation.
    let after = scene.live_pods().await;
    for (i, d) in all[1..].iter().enumerate() {
        assert_eq!(scene.stamp(d).await, None, "{d} was restarted");
        assert_eq!(after.get(d), before.get(d), "{d}'s pods changed");
        assert_eq!(
            generation(scene.deployments().get(d).await.expect("get")),
            generations[i]
        );
    }
    controller.stop().await;
    scene.clean_up().await;
}

/// `spec.rollout.paused` holds a version change; resuming starts it; a controller that
/// crashes mid-rollout is replaced by one that resumes at the same wave without restarting
/// the workloads already done.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_resume_and_a_controller_restart_mid_rollout() {
    let Some(scene) = Scene::new("rollout-pause").await else {
        return;
    };
    let (controller, all, _kubelet) = scene
        .fleet(
            every_pod_ready(),
            json!({
                "waves": [{"count": 1}, {"count": 2}, {"percent": 100}],
                "maxConcurrent": 1,
                "healthGate": {"minReady": "3s", "timeout": "3m"}
            }),
            ("svc", 4, 1),
        )
        .await;

    scene
        .set_policy(json!({"proxy": {"version": NEW}, "rollout": {"paused": true}}))
        .await;
    eventually(30, "the rollout is paused", async || {
        let r = scene.rollout().await?;
        (r.phase == RolloutPhase::Paused && r.target_version == NEW).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for d in &all {
        assert_eq!(scene.stamp(d).await, None, "{d} restarted while paused");
    }

    scene
        .set_policy(json!({"rollout": {"paused": false}}))
        .await;
    // Crash once wave 1 passed and wave 2 has begun.
    let mid = eventually(90, "wave 2 under way", async || {
        let r = scene.rollout().await?;
        (r.phase == RolloutPhase::Progressing && r.wave == 2 && r.reached.len() == 2).then_some(r)
    })
    .await;
    drop(controller);
    let canary = scene.deployments().get(&all[0]).await.expect("get");
    let canary_pods = scene.live_pods().await.get(&all[0]).cloned();

    let controller = scene.controller().await;
    let resumed = eventually(30, "the new controller steps", async || {
        let r = scene.rollout().await?;
        (r.wave >= mid.wave).then_some(r)
    })
    .await;
    assert_eq!(resumed.revision, mid.revision, "the same rollout resumed");
    scene.completed(NEW, 120).await;
    scene.settled(&all, 1, NEW, 60).await;
    let canary_after = scene.deployments().get(&all[0]).await.expect("get");
    assert_eq!(
        canary_after.metadata.generation, canary.metadata.generation,
        "the finished canary was restarted again"
    );
    assert_eq!(
        scene.live_pods().await.get(&all[0]).cloned(),
        canary_pods,
        "the canary's pods were replaced again"
    );
    assert!(!scene.events("Paused").await.is_empty());
    assert!(!scene.events("Resumed").await.is_empty());
    controller.stop().await;
    scene.clean_up().await;
}

/// Evict mode: pods are replaced through the Eviction API (policy/v1beta1 on the 1.20
/// server), which refuses while the PodDisruptionBudget allows no disruption; the
/// Deployment object itself is never changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn evict_mode_honours_the_pod_disruption_budget_and_leaves_the_deployment_alone() {
    let Some(scene) = Scene::new("rollout-evict").await else {
        return;
    };
    let (controller, all, _kubelet) = scene
        .fleet(
            every_pod_ready(),
            json!({
                "waves": [{"percent": 100}],
                "method": "Evict",
                "healthGate": {"minReady": "1s", "timeout": "3m"}
            }),
            ("cache", 1, 2),
        )
        .await;
    let pdb = pdb_api(&scene.client, &scene.ns);
    let budget: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": pdb_api_version(), "kind": "PodDisruptionBudget",
        "metadata": {"name": "cache"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "cache-00"}}}
    }))
    .expect("a PodDisruptionBudget");
    pdb.create(&PostParams::default(), &budget)
        .await
        .expect("create the PodDisruptionBudget");
    let deployment = scene.deployments().get(&all[0]).await.expect("get");

    scene.set_policy(json!({"proxy": {"version": NEW}})).await;
    // minAvailable 2 of 2: every eviction is refused, so nothing moves.
    eventually(30, "a refused eviction", async || {
        let text = controller.metrics.render(&controller.xds);
        text.contains(r#"remora_rollout_actions_total{action="evict",outcome="error"}"#)
            .then_some(())
    })
    .await;
    let live = scene.live_pods().await;
    let pods = live.get(&all[0]).expect("cache's pods");
    assert_eq!(pods.len(), 2);
    assert!(
        pods.iter().all(|(_, v, _)| v.as_deref() == Some(OLD)),
        "{pods:?}"
    );

    pdb.patch(
        "cache",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"minAvailable": 1}})),
    )
    .await
    .expect("relax the budget");
    scene.settled(&all, 2, NEW, 120).await;
    scene.completed(NEW, 30).await;
    let after = scene.deployments().get(&all[0]).await.expect("get");
    assert_eq!(after.metadata.generation, deployment.metadata.generation);
    assert_eq!(scene.stamp(&all[0]).await, None);
    assert_eq!(after.spec, deployment.spec, "the Deployment's spec changed");
    controller.stop().await;
    scene.clean_up().await;
}

/// PodDisruptionBudgets are `policy/v1` from Kubernetes 1.21; the 1.20 server has v1beta1.
fn pdb_api_version() -> &'static str {
    if cluster::is_stub() {
        "policy/v1beta1"
    } else {
        "policy/v1"
    }
}

fn pdb_api(client: &Client, ns: &str) -> Api<kube::api::DynamicObject> {
    let (group, version) = pdb_api_version().split_once('/').expect("group/version");
    let resource = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk(group, version, "PodDisruptionBudget"),
        "poddisruptionbudgets",
    );
    Api::namespaced_with(client.clone(), ns, &resource)
}

/// A change that keeps the version (here the proxy's resources) still reaches the running
/// pods: in Evict mode every pod is replaced by one injected with the new revision, and the
/// Deployment itself is not changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resources_only_change_rolls_too() {
    let Some(scene) = Scene::new("rollout-resources").await else {
        return;
    };
    let (controller, all, _kubelet) = scene
        .fleet(
            every_pod_ready(),
            json!({
                "waves": [{"percent": 100}],
                "method": "Evict",
                "healthGate": {"minReady": "1s", "timeout": "3m"}
            }),
            ("store", 1, 2),
        )
        .await;
    let old = scene.completed(OLD, 30).await.revision;
    // (name, version, revision) of each live pod.
    let annotated = async || -> Vec<(String, Option<String>, Option<String>)> {
        let pods = scene
            .pods()
            .list(&ListParams::default())
            .await
            .expect("list pods");
        pods.items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                let a = p.annotations();
                let get = |k: &str| a.get(k).cloned();
                (
                    p.name_any(),
                    get(VERSION_ANNOTATION),
                    get(remora_inject::REVISION_ANNOTATION),
                )
            })
            .collect()
    };
    let before = annotated().await;
    assert!(
        before.iter().all(|(_, _, r)| r.as_ref() == Some(&old)),
        "injected with the policy's revision {old}: {before:?}"
    );
    let deployment = scene.deployments().get(&all[0]).await.expect("get");

    scene
        .set_policy(json!({"proxy": {"resources": {"requests": {"cpu": "50m"}}}}))
        .await;
    let policy = scene.policies().get("fleet").await.expect("the policy");
    let new = remora_rollout::revision(&policy.spec);
    assert_ne!(new, old, "resources are part of the revision");
    eventually(
        120,
        "every pod replaced with the new revision",
        async || {
            let pods = annotated().await;
            let live = scene.live_pods().await;
            (pods.len() == 2
                && pods.iter().all(|(name, v, r)| {
                    v.as_deref() == Some(OLD)
                        && r.as_ref() == Some(&new)
                        && before.iter().all(|(old_name, _, _)| old_name != name)
                })
                && live
                    .get(&all[0])
                    .is_some_and(|p| p.iter().all(|(_, _, ready)| *ready)))
            .then_some(())
        },
    )
    .await;
    eventually(30, "the rollout completes", async || {
        let r = scene.rollout().await?;
        (r.phase == RolloutPhase::Complete && r.revision == new).then_some(())
    })
    .await;
    let after = scene.deployments().get(&all[0]).await.expect("get");
    assert_eq!(after.metadata.generation, deployment.metadata.generation);
    assert_eq!(scene.stamp(&all[0]).await, None);
    let text = controller.metrics.render(&controller.xds);
    assert!(
        text.contains(r#"remora_rollout_actions_total{action="evict",outcome="ok"}"#),
        "{text}"
    );
    controller.stop().await;
    scene.clean_up().await;
}

/// With two replicas, the canary's new pod's proxy connects to the one that does not lead and
/// NACKs its config: the leader learns it from that replica's report and fails the gate at
/// once, where it used to see an unknown proxy and go by the pod's readiness.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nack_on_another_replica_fails_the_gate() {
    let Some(scene) = Scene::new("rollout-fleet").await else {
        return;
    };
    let _kubelet = kubelet::start(&scene.client, &scene.ns, every_pod_ready());
    let leader = scene.replica("replica-a", true).await;
    eventually(20, "the injecting replica leads", async || {
        leader.is_leader().then_some(())
    })
    .await;
    let follower = scene.replica("replica-b", false).await;
    // A gate longer than a proxy takes to connect and answer: its NACK must decide, not the
    // pod's readiness.
    scene
        .create_policy(json!({
            "waves": [{"count": 1}, {"percent": 100}],
            "healthGate": {"minReady": "10s", "timeout": "2m"},
            "onFailure": "Rollback"
        }))
        .await;
    let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "api"},
        "spec": {"selector": {"app": "api-00"}, "ports": [{"name": "http", "port": 8080}]}
    }))
    .expect("a Service");
    Api::namespaced(scene.client.clone(), &scene.ns)
        .create(&PostParams::default(), &service)
        .await
        .expect("the Service");
    // Valid for validate(), beyond the RE2 program size the canary's proxy accepts (it starts
    // with a lower limit than the controller's).
    let route: remora_api::TrafficRoute = serde_json::from_value(json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "TrafficRoute",
        "metadata": {"name": "api"},
        "spec": {"parentRefs": [{"name": "api", "port": 8080}],
                 "http": [{"matches": [{"path": {"type": "RegularExpression", "value": support::BEYOND_LOWER_LIMIT}}],
                           "backendRefs": [{"name": "api", "port": 8080}]}]}
    }))
    .expect("a TrafficRoute");
    Api::namespaced(scene.client.clone(), &scene.ns)
        .create(&PostParams::default(), &route)
        .await
        .expect("the route");
    let all = names("api", 2);
    scene.create_deployments(&all, 1).await;
    scene.settled(&all, 1, OLD, 120).await;
    scene.completed(OLD, 30).await;

    scene.set_policy(json!({"proxy": {"version": NEW}})).await;
    let canary = eventually(60, "the canary's new pod", async || {
        let live = scene.live_pods().await;
        let pods = live.get(&all[0])?;
        pods.iter()
            .find(|(_, v, _)| v.as_deref() == Some(NEW))
            .map(|(name, _, _)| name.clone())
    })
    .await;
    let key = remora_model::input::ObjectKey::new(&scene.ns, &canary);
    let _envoy = support::Envoy::start_with_regex_limit(
        key,
        follower.xds_addr,
        true,
        support::LOWER_REGEX_LIMIT,
    )
    .await;
    let rolled_back = eventually(60, "the canary rolled back", async || {
        let r = scene.rollout().await?;
        (r.phase == RolloutPhase::RolledBack).then_some(r)
    })
    .await;
    let failed = &rolled_back.failed_workloads;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].name, all[0]);
    let reason = &failed[0].reason;
    assert!(
        reason.starts_with(&format!("proxy on pod {canary} rejected its config")),
        "{reason}"
    );
    assert_eq!(scene.stamp(&all[1]).await, None, "the second wave started");
    follower.stop().await;
    leader.stop().await;
    scene.clean_up().await;
}
