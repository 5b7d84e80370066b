//! The test applications of the pods that run for real: creating their objects, waiting for
//! them, calling through them with `remora-echo fetch` from inside a pod's network namespace,
//! and reading their proxies' counters.

use std::{collections::BTreeMap, process::Command};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use serde_json::Value;

use super::{eventually, meshed};

/// The test application's binary, which `fetch` runs inside pods' namespaces.
pub const ECHO: &str = env!("CARGO_BIN_EXE_remora-echo");

/// Merges the members of object `b` into object `a`.
pub fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

pub async fn create<K>(client: &Client, ns: &str, objects: impl IntoIterator<Item = Value>)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    for o in objects {
        let object: K = serde_json::from_value(o).expect("a valid object");
        api.create(&PostParams::default(), &object)
            .await
            .expect("create");
    }
}

/// A running pod of each Deployment (its `deployment` label): its name and IP, once every one is Ready.
pub async fn ready_pods(
    client: &Client,
    ns: &str,
    count: usize,
) -> BTreeMap<String, (String, String)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    eventually(150, "every pod to turn Ready", async || {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let ready: BTreeMap<String, (String, String)> = list
            .items
            .iter()
            .filter(|p| meshed::is_ready(p))
            .filter_map(|p| {
                let deployment = p.metadata.labels.as_ref()?.get("deployment")?.clone();
                let ip = p.status.as_ref()?.pod_ip.clone()?;
                Some((deployment, (p.metadata.name.clone()?, ip)))
            })
            .collect();
        (ready.len() == count).then_some(ready)
    })
    .await
}

/// Runs `remora-echo fetch <url> <args>` in the network namespace `netns`: one line per
/// attempt.
pub async fn fetch(netns: &str, url: &str, count: usize, args: &[&str]) -> Vec<String> {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", netns, ECHO, "fetch", url, "--count"])
        .arg(count.to_string())
        .args(args);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the fetch task")
        .expect("ip netns exec runs");
    assert!(out.status.success(), "fetch {url}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// One counter of the proxy in `netns`, from its admin port on the pod's loopback.
pub async fn stat(netns: &str, name: &str) -> u64 {
    let url = format!("http://127.0.0.1:15000/stats?filter=^{name}$");
    let lines = fetch(netns, &url, 1, &["--body"]).await;
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// For each cluster of the proxy in `netns` whose name ends with `|<fqdn>`: whether it has a
/// healthy endpoint, from the admin port's `/clusters`.
pub async fn cluster_health(netns: &str, fqdn: &str) -> BTreeMap<String, bool> {
    let lines = fetch(netns, "http://127.0.0.1:15000/clusters", 1, &["--body"]).await;
    let mut clusters = BTreeMap::new();
    for line in &lines {
        let mut parts = line.split("::");
        let Some(cluster) = parts.next().filter(|c| c.ends_with(&format!("|{fqdn}"))) else {
            continue;
        };
        let healthy = line.ends_with("::health_flags::healthy");
        *clusters.entry(cluster.to_owned()).or_default() |= healthy;
    }
    clusters
}

/// How many of `lines` each server (the second word) answered, and the statuses.
pub fn tally(lines: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for l in lines {
        let mut words = l.split_whitespace();
        let key = match (words.next(), words.next()) {
            (Some("200"), Some(server)) => server.to_owned(),
            (Some(status), _) => status.to_owned(),
            _ => l.clone(),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}
