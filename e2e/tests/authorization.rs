//! Authorization between workloads, end to end: a real API server, pods that run for real with
//! their injected sidecars and identity agents, mutual TLS between real Envoys, and access
//! policies the sidecars enforce on the way in.
//!
//! - `orders` may `POST /charge` on `payments`; another service account, another method or
//!   path, and a plaintext caller (Permissive mode lets it in, the rules do not) get 403, each
//!   denial counted in the proxy's metrics under the rule that decided.
//! - A TCP service protected by a deny rule closes the connection of the caller it names.
//! - An `Audit` rule changes no response, and the policy's status reports exactly the
//!   requests it would have denied, by caller.
//! - An edited rule takes effect on the running proxies, with nothing restarted.

mod support;

use std::time::Duration;

use kube::{
    Api,
    api::{Patch, PatchParams},
};
use remora_api::AccessPolicy;
use serde_json::{Value, json};
use support::{
    apps::{ECHO, create, fetch},
    eventually,
    pods::container::ECHO_IMAGE,
    scene::{Objects, Options, Scene},
};

const HTTP_PORT: u16 = 8080;
const TCP_PORT: u16 = 9000;
/// Requests the audited caller sends: the count its status must show.
const AUDITED: usize = 7;

fn sidecar_policy() -> Value {
    json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "SidecarPolicy",
        "metadata": {"name": "mesh"},
        "spec": {"selector": {"matchLabels": {"meshed": "yes"}},
                 "proxy": {"image": "envoyproxy/envoy", "version": "v1.40.0"},
                 // Only this namespace: the shared cluster holds other tests' objects.
                 "egress": {"hosts": ["./*"]}}
    })
}

fn services() -> [Value; 2] {
    let service = |name: &str, port: u16, port_name: &str| {
        json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name},
                     "ports": [{"name": port_name, "port": port, "targetPort": port}]}
        })
    };
    [
        service("payments", HTTP_PORT, "http"),
        service("ledger", TCP_PORT, "tcp"),
    ]
}

fn service_accounts() -> Vec<Value> {
    ["payments", "orders", "other", "legacy"]
        .map(|name| {
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}})
        })
        .into()
}

/// A one-replica Deployment of the echo app as `account`, serving `args`, meshed or not.
fn deployment(name: &str, account: &str, port: (u16, &str), tcp: bool, meshed: bool) -> Value {
    let mut args = vec![
        "--listen".to_owned(),
        format!("0.0.0.0:{}", port.0),
        "--name".to_owned(),
        name.to_owned(),
    ];
    if tcp {
        args.push("--tcp".into());
    }
    let annotations = if meshed {
        json!({})
    } else {
        json!({"sidecar.remora.dev/inject": "false"})
    };
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "deployment": name,
                                        "meshed": if meshed { "yes" } else { "no" }},
                             "annotations": annotations},
                "spec": {
                    "serviceAccountName": account,
                    "containers": [{
                        "name": "app", "image": format!("{ECHO_IMAGE}:1"), "args": args,
                        "ports": [{"name": port.1, "containerPort": port.0}],
                        "readinessProbe": {"tcpSocket": {"port": port.0}, "periodSeconds": 1}
                    }]
                }
            }
        }
    })
}

fn deployments() -> Vec<Value> {
    vec![
        deployment("payments", "payments", (HTTP_PORT, "http"), false, true),
        deployment("ledger", "default", (TCP_PORT, "tcp"), true, true),
        deployment("orders", "orders", (HTTP_PORT, "http"), false, true),
        deployment("other", "other", (HTTP_PORT, "http"), false, true),
        deployment("legacy", "legacy", (HTTP_PORT, "http"), false, true),
        deployment("plain", "default", (HTTP_PORT, "http"), false, false),
    ]
}

/// `orders` may charge; `legacy` may read, and a rule against it is tried in Audit mode.
fn payments_policy(charging: &[&str]) -> Value {
    json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": "payments"},
        "spec": {
            "selector": {"matchLabels": {"app": "payments"}},
            "rules": [
                {"name": "charge", "from": [{"serviceAccounts": charging}],
                 "to": {"ports": [HTTP_PORT],
                        "http": {"methods": ["POST"], "paths": [{"type": "Exact", "value": "/charge"}]}}},
                {"name": "legacy-reads", "from": [{"serviceAccounts": ["legacy"]}],
                 "to": {"http": {"methods": ["GET"]}}},
                {"name": "no-legacy", "action": "Deny", "mode": "Audit",
                 "from": [{"serviceAccounts": ["legacy"]}]}
            ]
        }
    })
}

fn ledger_policy() -> Value {
    json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": "ledger"},
        "spec": {
            "selector": {"matchLabels": {"app": "ledger"}},
            "rules": [{"name": "not-other", "action": "Deny", "from": [{"serviceAccounts": ["other"]}]}]
        }
    })
}

/// The status code of each of `count` requests from `from`'s pod.
async fn codes(sc: &Scene, from: &str, method: &str, url: &str, count: usize) -> Vec<String> {
    let lines = fetch(&sc.netns(from), url, count, &["--method", method]).await;
    lines
        .iter()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_owned())
        .collect()
}

/// Waits until every one of a few requests from `from` gets `want`.
async fn until_code(sc: &Scene, from: &str, method: &str, url: &str, want: &str) {
    let what = format!("{method} {url} from {from} to get {want}");
    eventually(60, &what, async || {
        let got = codes(sc, from, method, url, 3).await;
        got.iter().all(|c| c == want).then_some(())
    })
    .await;
}

/// The counters of `deployment`'s proxy whose names match the regex `pattern`, summed.
async fn counter(sc: &Scene, deployment: &str, pattern: &str) -> u64 {
    let url = format!("http://127.0.0.1:15000/stats?filter={pattern}");
    let lines = fetch(&sc.netns(deployment), &url, 1, &["--body"]).await;
    lines
        .iter()
        .filter_map(|l| l.rsplit_once(": "))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum()
}

async fn assert_only_orders_may_charge(sc: &Scene) {
    let charge = "http://payments:8080/charge";
    // Once the rules reach the proxy, other is refused.
    until_code(sc, "other", "POST", charge, "403").await;
    assert_eq!(codes(sc, "orders", "POST", charge, 3).await, ["200"; 3]);
    assert_eq!(codes(sc, "orders", "GET", charge, 2).await, ["403", "403"]);
    assert_eq!(
        codes(sc, "orders", "POST", "http://payments:8080/refund", 1).await,
        ["403"]
    );
    assert_eq!(codes(sc, "other", "POST", charge, 3).await, ["403"; 3]);
    // Plaintext straight to the pod: Permissive takes it, and no rule allows a caller
    // without an identity.
    let direct = format!("http://{}:{HTTP_PORT}/charge", sc.ip("payments"));
    assert_eq!(codes(sc, "plain", "POST", &direct, 2).await, ["403", "403"]);
    // Every denial was counted, as no allow rule's.
    let denied = counter(sc, "payments", "rbac.remora_allow_.denied$").await;
    assert!(denied >= 8, "the payments proxy counted {denied} denials");
}

/// Over one TCP connection from `from`'s pod: the server's greeting, then what comes back
/// for one line sent.
async fn tcp_exchange(sc: &Scene, from: &str, url: &str) -> Vec<String> {
    use std::io::Write;
    let mut command = std::process::Command::new("ip");
    command
        .args([
            "netns",
            "exec",
            &sc.netns(from),
            ECHO,
            "fetch",
            url,
            "--hold",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let out = tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().expect("fetch --hold starts");
        let mut input = child.stdin.take().expect("stdin");
        writeln!(input, "ping").expect("send");
        drop(input);
        child.wait_with_output().expect("fetch --hold ends")
    })
    .await
    .expect("the fetch task");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `other` is refused: its connection closes at the first byte it sends, before anything
/// reaches the server. (A server that speaks first has sent its greeting by then: Envoy's
/// network RBAC decides on the caller's first data.)
async fn assert_tcp_deny(sc: &Scene) {
    let ledger = format!("tcp://ledger:{TCP_PORT}");
    assert_eq!(
        tcp_exchange(sc, "orders", &ledger).await,
        ["ledger", "ping"]
    );
    let refused = tcp_exchange(sc, "other", &ledger).await;
    assert!(
        refused.last().is_some_and(|l| l.starts_with("error"))
            && !refused.contains(&"ping".to_owned()),
        "other is refused: {refused:?}"
    );
    let denied = counter(sc, "ledger", "remora_deny_.policy.*not-other.rbac.denied$").await;
    assert!(
        denied >= 1,
        "the ledger proxy counted {denied} denied connections"
    );
}

/// The audited rule changed no response; its status counts exactly what legacy sent.
async fn assert_audit_counts(sc: &Scene) {
    let url = "http://payments:8080/balance";
    assert_eq!(
        codes(sc, "legacy", "GET", url, AUDITED).await,
        ["200"; AUDITED]
    );
    let policies: Api<AccessPolicy> = Api::namespaced(sc.client.clone(), &sc.ns);
    let legacy = format!("spiffe://cluster.local/ns/{}/sa/legacy", sc.ns);
    let audit = eventually(60, "the audit count in status", async || {
        let status = policies.get("payments").await.ok()?.status?;
        let entry = status.audit.iter().find(|a| a.source == legacy)?.clone();
        (entry.requests >= AUDITED as i64).then_some(status.audit)
    })
    .await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].rule, "no-legacy");
    assert_eq!(audit[0].requests, AUDITED as i64, "{audit:?}");
    assert!(audit[0].message.contains(&format!(
        "would have denied {AUDITED} requests from {legacy}"
    )));
}

/// Conditions and counts on the real API server.
async fn assert_status(sc: &Scene) {
    let policies: Api<AccessPolicy> = Api::namespaced(sc.client.clone(), &sc.ns);
    for name in ["payments", "ledger"] {
        eventually(60, "Accepted, ResolvedRefs and Programmed", async || {
            let p = policies.get(name).await.ok()?;
            let status = p.status?;
            let all_true = ["Accepted", "ResolvedRefs", "Programmed"].iter().all(|t| {
                status.conditions.iter().any(|c| {
                    c.type_ == *t
                        && c.status == "True"
                        && c.observed_generation == p.metadata.generation
                })
            });
            (all_true && status.workloads == Some(1)).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization() {
    let options = Options {
        delta: true,
        probe_labels: json!({"meshed": "yes"}),
        identity: Some(Duration::from_secs(600)),
    };
    let Some(sc) = Scene::start("authz", options, |_| Objects {
        policies: vec![sidecar_policy()],
        services: services().into(),
        service_accounts: service_accounts(),
        deployments: deployments(),
        ..Objects::default()
    })
    .await
    else {
        return;
    };
    sc.await_endpoints("orders", &["payments", "ledger"]).await;
    sc.await_endpoints("other", &["payments", "ledger"]).await;
    sc.await_endpoints("legacy", &["payments"]).await;
    // Before any policy, everyone may call.
    until_code(&sc, "other", "POST", "http://payments:8080/charge", "200").await;

    create::<AccessPolicy>(
        &sc.client,
        &sc.ns,
        [payments_policy(&["orders"]), ledger_policy()],
    )
    .await;
    assert_only_orders_may_charge(&sc).await;
    assert_tcp_deny(&sc).await;
    assert_status(&sc).await;
    assert_audit_counts(&sc).await;

    // An edit reaches the running proxy: other may charge now, and nothing restarted.
    let uptime = counter(&sc, "payments", "^server.uptime$").await;
    let policies: Api<AccessPolicy> = Api::namespaced(sc.client.clone(), &sc.ns);
    policies
        .patch(
            "payments",
            &PatchParams::default(),
            &Patch::Merge(payments_policy(&["orders", "other"])),
        )
        .await
        .expect("edit the policy");
    until_code(&sc, "other", "POST", "http://payments:8080/charge", "200").await;
    let later = counter(&sc, "payments", "^server.uptime$").await;
    assert!(
        later >= uptime,
        "the proxy kept running: uptime {uptime} s, then {later} s"
    );
    assert_eq!(sc.runner.failures(), Vec::<String>::new());
    sc.stop().await;
}
