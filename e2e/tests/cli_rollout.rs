//! `remora rollout status|pause|resume|undo` against a real Kubernetes API server, run as an
//! operator runs them: the built binary with `--kubeconfig`. No controller runs here; the
//! test writes the policy's status itself, as the controller would, so each answer of the
//! command is known in advance.

mod support;

use std::{
    process::{Command, Output, Stdio},
    time::Duration,
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use remora_api::SidecarPolicy;
use serde_json::{Value, json};
use support::{cluster, pods::container::remora_bin};

const OLD: &str = "v1.39.0";
const NEW: &str = "v1.40.0";

struct Scene {
    client: Client,
    ns: String,
    kubeconfig: String,
}

impl Scene {
    async fn new() -> Option<Scene> {
        let client = cluster::client().await?;
        cluster::install_crds(&client).await;
        let ns = cluster::test_namespace(&client, "cli-rollout").await;
        let kubeconfig = std::env::var("KUBECONFIG").expect("with-cluster sets KUBECONFIG");
        let bin = remora_bin();
        assert!(
            bin.exists(),
            "no remora at {}: run `cargo build -p remora` first",
            bin.display()
        );
        Some(Scene {
            client,
            ns,
            kubeconfig,
        })
    }

    fn policies(&self) -> Api<SidecarPolicy> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn policy(&self) -> SidecarPolicy {
        self.policies().get("fleet").await.expect("the policy")
    }

    /// `remora rollout ARGS` with the test cluster's kubeconfig and namespace.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(remora_bin());
        command
            .arg("rollout")
            .args(args)
            .args(["--kubeconfig", &self.kubeconfig, "-n", &self.ns]);
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("remora runs")
    }

    /// Reports `rollout` for the policy's current generation, as the controller does.
    async fn report(&self, rollout: Value, conditions: Value) {
        let generation = self.policy().await.metadata.generation;
        let status = json!({"status": {
            "observedGeneration": generation, "rollout": rollout, "conditions": conditions,
        }});
        self.policies()
            .patch_status("fleet", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("write the status");
    }
}

fn rollout(phase: &str, target: &str, previous: Option<&str>, failed: Value) -> Value {
    json!({
        "phase": phase, "targetVersion": target, "previousVersion": previous,
        "wave": 2, "totalWaves": 3, "updatedWorkloads": 1, "totalWorkloads": 4,
        "failedWorkloads": failed, "message": format!("{phase} to {target}"),
    })
}

fn conditions(degraded: &str) -> Value {
    let at = "2026-01-01T00:00:00Z";
    json!([
        {"type": "Progressing", "status": "True", "reason": "RollingOut",
            "message": "wave 2 of 3", "lastTransitionTime": at},
        {"type": "Degraded", "status": degraded, "reason": "HealthGateFailed",
            "message": "1 workload failed its health gate", "lastTransitionTime": at},
    ])
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const DRIFT: &str = "now differs from Git";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_reads_pauses_resumes_and_undoes_a_rollout() {
    let Some(sc) = Scene::new().await else { return };
    let policy: SidecarPolicy = serde_json::from_value(json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "SidecarPolicy",
        "metadata": {"name": "fleet"},
        "spec": {"proxy": {"image": "envoyproxy/envoy", "version": NEW}},
    }))
    .expect("a SidecarPolicy");
    sc.policies()
        .create(&PostParams::default(), &policy)
        .await
        .expect("create the policy");

    // Before the controller said anything, undo has nothing to go by.
    let out = sc.run(&["undo", "fleet"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("not yet reported"), "{out:?}");

    let failed = json!([{"kind": "Deployment", "namespace": sc.ns, "name": "web",
        "reason": "not Ready within 10m"}]);
    sc.report(
        rollout("Progressing", NEW, Some(OLD), failed),
        conditions("True"),
    )
    .await;
    let out = sc.run(&["status", "fleet"]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    for expected in [
        "Phase:     Progressing",
        "Previous:  v1.39.0",
        "Wave:      2 of 3",
        "Updated:   1 of 4 workloads",
        &format!("Deployment/{}/web: not Ready within 10m", sc.ns),
        "Degraded     True    HealthGateFailed  1 workload failed its health gate",
    ] {
        assert!(text.contains(expected), "{expected:?} in\n{text}");
    }
    let out = sc.run(&["status", "fleet", "-o", "json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("-o json prints JSON");
    assert_eq!(doc["rollout"]["targetVersion"], NEW);
    assert_eq!(doc["conditions"][1]["type"], "Degraded");

    // Pause and resume flip the flag, under their own field manager, and say Git differs.
    let out = sc.run(&["pause", "fleet"]);
    assert!(out.status.success(), "{out:?}");
    assert!(stderr(&out).contains(DRIFT), "{out:?}");
    let paused = sc.policy().await;
    assert!(paused.spec.rollout.paused);
    let managers: Vec<String> = paused
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.iter().any(|m| m == "kubectl-remora"),
        "{managers:?}"
    );
    let again = sc.run(&["pause", "fleet"]);
    assert!(stdout(&again).contains("already paused"), "{again:?}");
    assert!(
        !stderr(&again).contains(DRIFT),
        "nothing changed: {again:?}"
    );
    let out = sc.run(&["resume", "fleet"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!sc.policy().await.spec.rollout.paused);

    // Undo returns the spec to the previous version, once the status is the spec's own.
    let out = sc.run(&["undo", "fleet"]);
    assert!(
        !out.status.success(),
        "pause and resume were not reported: {out:?}"
    );
    sc.report(
        rollout("Progressing", NEW, Some(OLD), json!([])),
        conditions("False"),
    )
    .await;
    let out = sc.run(&["undo", "fleet"]);
    assert!(out.status.success(), "{out:?}");
    assert!(stderr(&out).contains(DRIFT), "{out:?}");
    assert_eq!(sc.policy().await.spec.proxy.version, OLD);

    // The status still describes the version undone: a watch waits, and times out.
    let out = sc.run(&["status", "fleet", "--watch", "--timeout", "2s"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("not yet reported"), "{out:?}");
    assert!(stderr(&out).contains("timed out after 2s"), "{out:?}");

    // A watch follows the undo's rollout to its end, a line per change.
    sc.report(
        rollout("Progressing", OLD, Some(NEW), json!([])),
        conditions("False"),
    )
    .await;
    let watch = sc
        .command(&["status", "fleet", "--watch", "--timeout", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("remora runs");
    tokio::time::sleep(Duration::from_secs(2)).await;
    sc.report(
        rollout("Complete", OLD, Some(NEW), json!([])),
        conditions("False"),
    )
    .await;
    // The watch's own --timeout bounds it; this one only keeps a failure from taking 60 s.
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || watch.wait_with_output()),
    )
    .await
    .expect("the watch ends once the rollout is Complete")
    .expect("the waiting thread")
    .expect("the watch's output");
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("Progressing  wave 2/3"), "{lines:?}");
    assert!(
        lines[1].starts_with("Complete  wave 2/3  updated 1/4  v1.40.0 -> v1.39.0"),
        "{lines:?}"
    );

    // A rollout that rolled back ends a watch with a failure.
    sc.report(
        rollout("RolledBack", OLD, Some(NEW), json!([])),
        conditions("True"),
    )
    .await;
    let out = sc.run(&["status", "fleet", "--watch", "--timeout", "30s"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("ended RolledBack"), "{out:?}");

    // A first rollout has no version to return to.
    sc.report(
        rollout("Complete", OLD, None, json!([])),
        conditions("False"),
    )
    .await;
    let out = sc.run(&["undo", "fleet"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("no previous version"), "{out:?}");
    assert_eq!(sc.policy().await.spec.proxy.version, OLD);

    let _ = sc
        .policies()
        .delete("fleet", &DeleteParams::default())
        .await;
    let _ = Api::<Namespace>::all(sc.client.clone())
        .delete(&sc.ns, &DeleteParams::default())
        .await;
}
