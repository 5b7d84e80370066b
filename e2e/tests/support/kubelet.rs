//! What a scheduler and kubelet would do for the pods of one namespace on the stub cluster,
//! in the background: bind new pods to the stub node, report them Running and Ready (unless
//! the test withholds readiness), and finish the deletion of pods being deleted (evicted or
//! replaced), as a kubelet does once their containers stopped.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use tokio::task::JoinHandle;

/// Decides whether a bound pod may become Ready.
pub type Readiness = Arc<dyn Fn(&Pod) -> bool + Send + Sync>;

/// Stops the stub kubelet when dropped.
pub struct Kubelet {
    task: JoinHandle<()>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Pod IPs handed out here: 127.2.x.y, clear of what other tests and the scripts use.
static NEXT_IP: AtomicU32 = AtomicU32::new(1);

/// Starts playing kubelet for `namespace` until the returned value is dropped (or the
/// bound below passes, so a forgotten one cannot outlive its test by much).
pub fn start(client: &Client, namespace: &str, ready: Readiness) -> Kubelet {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let task = tokio::spawn(async move {
        for _ in 0..6000 {
            if let Ok(list) = pods.list(&ListParams::default()).await {
                for pod in list.items {
                    tend(&pods, &pod, &ready).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Kubelet { task }
}

async fn tend(pods: &Api<Pod>, pod: &Pod, ready: &Readiness) {
    let name = pod.name_any();
    if pod.metadata.deletion_timestamp.is_some() {
        let _ = pods
            .delete(&name, &DeleteParams::default().grace_period(0))
            .await;
        return;
    }
    let bound = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some();
    if !bound {
        bind(pods, &name).await;
    }
    let is_ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if is_ready || !ready(pod) {
        return;
    }
    let n = NEXT_IP.fetch_add(1, Ordering::Relaxed);
    let ip = format!("127.2.{}.{}", (n / 250) % 250, n % 250 + 1);
    let now = Timestamp::from_second(Timestamp::now().as_second())
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_string();
    let condition = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
    let conditions = ["PodScheduled", "Initialized", "ContainersReady", "Ready"].map(condition);
    let status = json!({"status": {
        "phase": "Running", "hostIP": "127.0.0.1", "podIP": ip, "podIPs": [{"ip": ip}],
        "startTime": now,
        "conditions": conditions,
    }});
    let _ = pods
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await;
}

/// Binds the pod `name` to the stub node, as a scheduler would; an error (the pod is gone, or
/// bound meanwhile) shows in the next listing.
pub async fn bind(pods: &Api<Pod>, name: &str) {
    let node = std::env::var("REMORA_NODE_NAME").unwrap_or_else(|_| "remora-e2e".into());
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}
    });
    let _ = pods
        .create_subresource::<_, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await;
}
