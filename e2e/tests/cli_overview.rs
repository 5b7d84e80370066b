//! `remora status` against a real Kubernetes API server, run as an operator or a CI job
//! runs it: the built binary with `--kubeconfig`, its table, its JSON and its exit code. No
//! controller runs here; the test writes each status itself, as the controller would.

mod support;

use std::process::{Command, Output};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    core::NamespaceResourceScope,
};
use remora_api::{AccessPolicy, SidecarPolicy, TrafficRoute};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use support::{cluster, pods::container::remora_bin};

struct Scene {
    client: Client,
    ns: String,
    kubeconfig: String,
}

impl Scene {
    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates `object` (a manifest) and reports `ready` about its current generation, with
    /// `extra` status fields, as the controller would.
    async fn create<K>(&self, object: Value, ready: Value, extra: Value)
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug,
    {
        let object: K = serde_json::from_value(object).expect("a manifest");
        let created = self
            .api::<K>()
            .create(&PostParams::default(), &object)
            .await
            .expect("create the object");
        let name = created.meta().name.clone().expect("a name");
        let generation = created.meta().generation;
        let mut status = json!({"observedGeneration": generation, "conditions": [ready]});
        if let (Some(status), Value::Object(extra)) = (status.as_object_mut(), extra) {
            status.extend(extra);
        }
        self.api::<K>()
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await
            .expect("write the status");
    }

    /// `remora status ARGS` with the test cluster's kubeconfig.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(remora_bin())
            .arg("status")
            .args(args)
            .args(["--kubeconfig", &self.kubeconfig])
            .env_remove("KUBECONFIG")
            .output()
            .expect("remora runs")
    }
}

fn ready(status: &str, reason: &str, message: &str) -> Value {
    json!({"type": "Ready", "status": status, "reason": reason, "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z"})
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn route(name: &str) -> Value {
    json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "TrafficRoute",
        "metadata": {"name": name},
        "spec": {"parentRefs": [{"name": "reviews"}],
            "http": [{"backendRefs": [{"name": "reviews"}]}]},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_every_object_and_exits_by_readiness() {
    let Some(client) = cluster::client().await else {
        return;
    };
    cluster::install_crds(&client).await;
    let ns = cluster::test_namespace(&client, "cli-overview").await;
    let kubeconfig = std::env::var("KUBECONFIG").expect("with-cluster sets KUBECONFIG");
    let bin = remora_bin();
    assert!(
        bin.exists(),
        "no remora at {}: run `cargo build -p remora` first",
        bin.display()
    );
    let sc = Scene {
        client,
        ns,
        kubeconfig,
    };
    let ns = sc.ns.clone();

    // Nothing yet: nothing is held back.
    let out = sc.run(&["-n", &ns]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stdout(&out).starts_with(&format!(
            "no SidecarPolicy, TrafficRoute or AccessPolicy in namespace {ns}"
        )),
        "{out:?}"
    );

    sc.create::<SidecarPolicy>(
        json!({
            "apiVersion": "remora.dev/v1alpha1", "kind": "SidecarPolicy",
            "metadata": {"name": "fleet"},
            "spec": {"proxy": {"image": "envoyproxy/envoy", "version": "v1.40.0"}},
        }),
        ready("True", "Ready", ""),
        json!({
            "versions": [{"version": "v1.40.0", "proxies": 3}, {"version": "v1.39.0", "proxies": 1}],
            "rollout": {"phase": "Progressing", "targetVersion": "v1.40.0", "wave": 2,
                "totalWaves": 3, "updatedWorkloads": 3, "totalWorkloads": 4},
        }),
    )
    .await;
    sc.create::<TrafficRoute>(
        route("reviews"),
        ready("True", "Ready", ""),
        json!({"proxies": {"affected": 3, "acked": 3, "nacked": 0}}),
    )
    .await;
    sc.create::<AccessPolicy>(
        json!({
            "apiVersion": "remora.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": "guard"},
            "spec": {"selector": {"matchLabels": {"app": "reviews"}},
                "rules": [{"name": "mesh", "from": [{"authenticated": true}]}]},
        }),
        ready("True", "Ready", ""),
        json!({"workloads": 2, "proxies": {"affected": 2, "acked": 2, "nacked": 0}}),
    )
    .await;

    // Everything Ready about its latest spec: exit 0, the context namespace's rows.
    let out = sc.run(&["-n", &ns]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[1],
        [
            "SidecarPolicy/fleet",
            "True",
            "no",
            "Ready",
            "-",
            "-",
            "v1.40.0=3,v1.39.0=1",
            "Progressing"
        ],
        "{text}"
    );
    assert_eq!(
        rows[2],
        [
            "TrafficRoute/reviews",
            "True",
            "no",
            "Ready",
            "3/3",
            "0",
            "-",
            "-"
        ],
        "{text}"
    );
    assert_eq!(
        rows[3],
        [
            "AccessPolicy/guard",
            "True",
            "no",
            "Ready",
            "2/2",
            "0",
            "-",
            "-"
        ],
        "{text}"
    );
    assert!(text.ends_with("all 3 Ready\n"), "{text}");

    // A route its proxies rejected: exit 1, with the condition's words.
    sc.create::<TrafficRoute>(
        route("ratings"),
        ready(
            "False",
            "RejectedByProxy",
            "1 of 3 proxies rejected it: bad regex",
        ),
        json!({"proxies": {"affected": 3, "acked": 2, "nacked": 1}}),
    )
    .await;
    let out = sc.run(&["-n", &ns]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "{ns}/TrafficRoute/ratings: 1 of 3 proxies rejected it: bad regex"
        )),
        "{text}"
    );
    let out = sc.run(&["-A", "-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("-o json prints JSON");
    assert_eq!(doc["ready"], false);
    let ratings = doc["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["namespace"] == ns.as_str() && o["name"] == "ratings")
        .unwrap_or_else(|| panic!("ratings in {doc}"));
    assert_eq!(ratings["ready"], "False");
    assert_eq!(ratings["reason"], "RejectedByProxy");
    assert_eq!(ratings["proxies"]["nacked"], 1);

    // Ready again, then the spec changes and no controller reports on it: stale, exit 1.
    sc.api::<TrafficRoute>()
        .patch_status(
            "ratings",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"conditions": [ready("True", "Ready", "")]}})),
        )
        .await
        .expect("write the status");
    let out = sc.run(&["-n", &ns, "-o", "yaml"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    sc.api::<TrafficRoute>()
        .patch(
            "ratings",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"http": [{"backendRefs": [{"name": "ratings"}]}]}})),
        )
        .await
        .expect("edit the spec");
    let out = sc.run(&["-n", &ns]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "{ns}/TrafficRoute/ratings: the status describes generation 1, the spec is at 2"
        )),
        "{text}"
    );
    assert!(text.ends_with("1 of 4 not Ready or stale\n"), "{text}");

    // A cluster it cannot read: exit 2.
    let out = Command::new(remora_bin())
        .args(["status", "--kubeconfig", "/nonexistent/kubeconfig"])
        .output()
        .expect("remora runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    let _ = Api::<Namespace>::all(sc.client.clone())
        .delete(&ns, &DeleteParams::default())
        .await;
}
