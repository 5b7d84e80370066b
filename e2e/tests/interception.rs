//! The sidecar in the traffic path, end to end: a real API server, the controller's real
//! webhook injecting `remora init-network` and the proxy, the pod runner running exactly that
//! spec in network namespaces, real iptables and real Envoys.
//!
//! The client app knows nothing of the mesh: `remora-echo fetch` runs in the client pod's
//! namespace (as root, like an app that is not the proxy's user) and calls
//! `http://echo:9080/` or the ClusterIP as any app would; the pod's `/etc/hosts` answers the
//! Service names. Its calls are redirected to its proxy, which routes them by the
//! `TrafficRoute`, and arrive at the servers through their own proxies. A pod without a
//! sidecar reaches the same Service through a kube-proxy stand-in (a DNAT rule in its own
//! namespace) and is not routed by the mesh.

mod support;

use std::{collections::BTreeMap, process::Command};

use k8s_openapi::api::core::v1::Service;
use kube::Api;
use remora_model::input::ObjectKey;
use remora_xds::sync::SyncState;
use serde_json::{Value, json};
use support::{
    apps::{ECHO, create, fetch, merge, stat, tally},
    eventually,
    pods::container::ECHO_IMAGE,
    scene::{Objects, Options, Scene},
};

/// The echo servers' HTTP port, declared, behind the `echo` Service's port 9080.
const HTTP_PORT: u16 = 8080;
/// A second port of the echo servers, undeclared, excluded from capture on both sides.
const EXCLUDED_PORT: u16 = 9090;
/// The TCP echo servers' port, and their Service's.
const TCP_PORT: u16 = 7000;

/// The policies: servers exclude `EXCLUDED_PORT` inbound; the client excludes it outbound,
/// and the bridge's own address (where a test server stands for an outside destination).
fn policies(gateway: &str) -> [Value; 2] {
    let policy = |name: &str, tier: &str, interception: Value| {
        json!({
            "apiVersion": "remora.dev/v1alpha1", "kind": "SidecarPolicy",
            "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"tier": tier}},
                     "proxy": {"image": "envoyproxy/envoy", "version": "v1.40.0",
                               "interception": interception},
                     // Only this namespace: the shared cluster holds other tests' routes.
                     "egress": {"hosts": ["./*"]},
                     // As in production: a pooled upstream connection the peer closes just
                     // as a request is put on it is retried, not failed (HTTP/1.1's race).
                     "traffic": {"accessLog": {"format": "Text"},
                                 "retries": {"attempts": 2, "retryOn": ["reset", "connect-failure"]}}}
        })
    };
    [
        policy(
            "servers",
            "server",
            json!({"excludeInboundPorts": [EXCLUDED_PORT]}),
        ),
        policy(
            "clients",
            "client",
            json!({"excludeOutboundPorts": [EXCLUDED_PORT],
                   "excludeOutboundCidrs": [format!("{gateway}/32")]}),
        ),
    ]
}

fn routes() -> [Value; 2] {
    let subset = |version: &str, weight: i32| json!({"name": "echo", "subset": {"version": version}, "weight": weight});
    let tcp_subset = |version: &str, weight: i32| json!({"name": "tcp-echo", "subset": {"version": version}, "weight": weight});
    let header = |name: &str, value: &str| json!([{"headers": [{"name": name, "value": value}]}]);
    [
        json!({
            "apiVersion": "remora.dev/v1alpha1", "kind": "TrafficRoute",
            "metadata": {"name": "echo"},
            "spec": {"parentRefs": [{"name": "echo", "port": 9080}], "http": [
                {"name": "canary", "matches": header("x-canary", "yes"),
                 "backendRefs": [subset("v2", 1)]},
                {"name": "abort", "matches": header("x-fault", "abort"),
                 "backendRefs": [subset("v1", 1)],
                 "fault": {"abort": {"httpStatus": 418, "percent": 100}}},
                {"name": "flaky", "matches": [{"path": {"type": "PathPrefix", "value": "/flaky"}}],
                 "backendRefs": [subset("v1", 1)],
                 "retry": {"attempts": 2, "retryOn": ["5xx"]}},
                {"name": "split", "backendRefs": [subset("v1", 90), subset("v2", 10)]}
            ]}
        }),
        json!({
            "apiVersion": "remora.dev/v1alpha1", "kind": "TrafficRoute",
            "metadata": {"name": "tcp-echo"},
            "spec": {"parentRefs": [{"name": "tcp-echo", "port": TCP_PORT}],
                     "tcp": [{"backendRefs": [tcp_subset("v1", 70), tcp_subset("v2", 30)]}]}
        }),
    ]
}

fn services() -> [Value; 2] {
    let service = |name: &str, port_name: &str, port: u16, target: u16| {
        json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name},
                     "ports": [{"name": port_name, "port": port, "targetPort": target}]}
        })
    };
    [
        service("echo", "http", 9080, HTTP_PORT),
        service("tcp-echo", "tcp", TCP_PORT, TCP_PORT),
    ]
}

/// A one-replica Deployment `name` of the echo image with these labels and arguments.
fn deployment(name: &str, labels: Value, args: Vec<String>, ports: Value, inject: bool) -> Value {
    let annotations = if inject {
        json!({})
    } else {
        json!({"sidecar.remora.dev/inject": "false"})
    };
    let probe_port = args
        .iter()
        .find_map(|a| a.strip_prefix("0.0.0.0:"))
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(HTTP_PORT);
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"deployment": name}},
            "template": {
                "metadata": {"labels": merge(labels, json!({"deployment": name})),
                             "annotations": annotations},
                "spec": {"containers": [{
                    "name": "app", "image": format!("{ECHO_IMAGE}:1"), "args": args,
                    "ports": ports,
                    "readinessProbe": {"tcpSocket": {"port": probe_port}, "periodSeconds": 1}
                }]}
            }
        }
    })
}

fn deployments() -> Vec<Value> {
    let listen = |port: u16| ["--listen".to_owned(), format!("0.0.0.0:{port}")];
    let http = |name: &str| {
        let mut args = listen(HTTP_PORT).to_vec();
        args.extend(listen(EXCLUDED_PORT));
        args.extend(["--name".to_owned(), name.to_owned()]);
        args
    };
    let tcp = |name: &str| {
        let mut args = listen(TCP_PORT).to_vec();
        args.extend(["--tcp".to_owned(), "--name".to_owned(), name.to_owned()]);
        args
    };
    let http_ports = json!([{"name": "http", "containerPort": HTTP_PORT}]);
    let tcp_ports = json!([{"name": "tcp", "containerPort": TCP_PORT}]);
    let server =
        |app: &str, version: &str| json!({"app": app, "version": version, "tier": "server"});
    vec![
        deployment(
            "echo-v1",
            server("echo", "v1"),
            http("echo-v1"),
            http_ports.clone(),
            true,
        ),
        deployment(
            "echo-v2",
            server("echo", "v2"),
            http("echo-v2"),
            http_ports.clone(),
            true,
        ),
        deployment(
            "tcp-v1",
            server("tcp-echo", "v1"),
            tcp("tcp-v1"),
            tcp_ports.clone(),
            true,
        ),
        deployment(
            "tcp-v2",
            server("tcp-echo", "v2"),
            tcp("tcp-v2"),
            tcp_ports,
            true,
        ),
        deployment(
            "client",
            json!({"tier": "client"}),
            http("client"),
            http_ports.clone(),
            true,
        ),
        deployment(
            "plain",
            json!({"tier": "plain"}),
            http("plain"),
            http_ports,
            false,
        ),
    ]
}

/// The access log lines of a proxy for requests that got a 5xx, with Envoy's flags.
fn failed_requests(sc: &Scene, deployment: &str) -> String {
    let log = sc.proxy_log(deployment);
    let failed = log.lines().filter(|l| l.contains("\" 5"));
    failed.collect::<Vec<_>>().join("\n")
}

async fn cluster_ip(sc: &Scene, service: &str) -> String {
    let s = Api::<Service>::namespaced(sc.client.clone(), &sc.ns)
        .get(service)
        .await
        .expect("the Service");
    s.spec.and_then(|s| s.cluster_ip).expect("a ClusterIP")
}

/// Every meshed pod's proxy is connected and has ACKed every type: its xDS stream, opened
/// before any listener existed, was never captured. The client's proxy knows every backend.
async fn assert_synced(sc: &Scene) {
    for deployment in ["echo-v1", "echo-v2", "tcp-v1", "tcp-v2", "client"] {
        let proxy = ObjectKey::new(sc.ns.clone(), sc.pod(deployment).to_owned());
        eventually(60, "the proxy to sync", async || {
            let s = sc.controller.xds.get(&proxy)?;
            (s.types.len() == 4 && s.types.values().all(|t| t.state() == SyncState::Synced))
                .then_some(())
        })
        .await;
    }
    sc.await_endpoints("client", &["echo", "tcp-echo"]).await;
}

/// The 90/10 split, by name and by ClusterIP, within ±5 points over 400 requests; the header
/// match, the retry and the fault abort.
async fn assert_routed(sc: &Scene) {
    let client = sc.netns("client");
    let lines = fetch(&client, "http://echo:9080/", 400, &[]).await;
    let split = tally(&lines);
    let v2 = split.get("echo-v2").copied().unwrap_or(0);
    assert_eq!(
        split.get("echo-v1").copied().unwrap_or(0) + v2,
        400,
        "{split:?}; the client proxy's failed requests: {}",
        failed_requests(sc, "client")
    );
    assert!(
        (20..=60).contains(&v2),
        "v2 took {v2} of 400, not 10 ± 5 %: {split:?}"
    );
    let by_ip = format!("http://{}:9080/", cluster_ip(sc, "echo").await);
    let split = tally(&fetch(&client, &by_ip, 40, &[]).await);
    assert_eq!(split.values().sum::<usize>(), 40);
    assert!(split.keys().all(|k| k.starts_with("echo-v")), "{split:?}");

    let canary = tally(
        &fetch(
            &client,
            "http://echo:9080/",
            20,
            &["--header", "x-canary: yes"],
        )
        .await,
    );
    assert_eq!(canary, BTreeMap::from([("echo-v2".to_owned(), 20)]));
    let abort = tally(
        &fetch(
            &client,
            "http://echo:9080/",
            5,
            &["--header", "x-fault: abort"],
        )
        .await,
    );
    assert_eq!(abort, BTreeMap::from([("418".to_owned(), 5)]));
    // Each /flaky/ path fails the first time the app sees it: the route's retry hides it.
    for n in 0..5 {
        let lines = fetch(&client, &format!("http://echo:9080/flaky/{n}"), 1, &[]).await;
        assert!(lines[0].starts_with("200 echo-v1"), "{lines:?}");
    }
    // The same app without the mesh's route in between: the first try fails.
    let direct = format!("http://{}:{HTTP_PORT}/flaky/direct", sc.ip("echo-v1"));
    let lines = fetch(&client, &direct, 2, &[]).await;
    assert!(
        lines[0].starts_with("503") && lines[1].starts_with("200"),
        "{lines:?}"
    );
}

/// A pod without a sidecar reaches `echo` through a kube-proxy stand-in (DNAT to echo-v1 in
/// its own namespace): no header route, no fault.
async fn assert_plain_pod_is_not_routed(sc: &Scene) {
    let plain = sc.netns("plain");
    let cluster_ip = cluster_ip(sc, "echo").await;
    let target = format!("{}:{HTTP_PORT}", sc.ip("echo-v1"));
    let nat = Command::new("ip")
        .args([
            "netns", "exec", &plain, "iptables", "-t", "nat", "-A", "OUTPUT",
        ])
        .args([
            "-p",
            "tcp",
            "-d",
            &cluster_ip,
            "--dport",
            "9080",
            "-j",
            "DNAT",
        ])
        .args(["--to-destination", &target])
        .status()
        .expect("iptables runs");
    assert!(nat.success());
    let url = format!("http://{cluster_ip}:9080/");
    let canary = tally(&fetch(&plain, &url, 5, &["--header", "x-canary: yes"]).await);
    assert_eq!(canary, BTreeMap::from([("echo-v1".to_owned(), 5)]));
    let abort = tally(&fetch(&plain, &url, 5, &["--header", "x-fault: abort"]).await);
    assert_eq!(abort, BTreeMap::from([("echo-v1".to_owned(), 5)]));
}

/// The servers' inbound requests pass through their own proxy (its access log, and the app
/// sees the proxy's connection from the pod's own address); the excluded ports and network
/// bypass the proxies.
async fn assert_inbound_and_exclusions(sc: &Scene) {
    let client = sc.netns("client");
    let (v2, client_ip) = (sc.ip("echo-v2"), sc.ip("client"));
    let lines = fetch(
        &client,
        "http://echo:9080/seen-by-proxy",
        1,
        &["--header", "x-canary: yes"],
    )
    .await;
    assert!(
        lines[0].starts_with(&format!("200 echo-v2 {v2}:")),
        "{lines:?}"
    );
    eventually(30, "the server proxy's access log line", async || {
        sc.proxy_log("echo-v2")
            .contains("\"GET /seen-by-proxy HTTP/1.1\" 200")
            .then_some(())
    })
    .await;

    // To a pod address: not a Service, so the client's proxy passes it through, counted.
    let passthrough = "cluster.passthrough.upstream_cx_total";
    let before = stat(&client, passthrough).await;
    let lines = fetch(&client, &format!("http://{v2}:{HTTP_PORT}/"), 1, &[]).await;
    assert!(
        lines[0].starts_with(&format!("200 echo-v2 {v2}:")),
        "{lines:?}"
    );
    assert_eq!(stat(&client, passthrough).await, before + 1);
    // The excluded port: past both proxies, the app sees the client itself.
    let lines = fetch(&client, &format!("http://{v2}:{EXCLUDED_PORT}/"), 1, &[]).await;
    assert!(
        lines[0].starts_with(&format!("200 echo-v2 {client_ip}:")),
        "{lines:?}"
    );
    // The excluded network (the bridge's own address, a server outside the mesh).
    let outside = OutsideServer::start(&sc.bridge.gateway().to_string());
    let lines = fetch(&client, &outside.url(), 1, &[]).await;
    assert!(
        lines[0].starts_with(&format!("200 outside {client_ip}:")),
        "{lines:?}"
    );
    assert_eq!(
        stat(&client, passthrough).await,
        before + 1,
        "both bypassed the proxy"
    );
}

/// A TCP Service split 70/30 through capture.
async fn assert_tcp_split(sc: &Scene) {
    let client = sc.netns("client");
    let lines = fetch(&client, &format!("tcp://tcp-echo:{TCP_PORT}"), 100, &[]).await;
    let split = tally(&lines.iter().map(|l| format!("200 {l}")).collect::<Vec<_>>());
    let v1 = split.get("tcp-v1").copied().unwrap_or(0);
    assert_eq!(
        v1 + split.get("tcp-v2").copied().unwrap_or(0),
        100,
        "{split:?}"
    );
    assert!(
        (55..=85).contains(&v1),
        "tcp-v1 took {v1} of 100, not about 70: {split:?}"
    );
}

/// A connection held open through the capture listener's chain for `tcp-echo` survives a
/// Service added to the mesh: the new chain arrives as an in-place update of the listener,
/// and Envoy drains only the chains that changed.
async fn assert_unchanged_chains_keep_their_connections(sc: &Scene) {
    use std::io::{BufRead, BufReader, Write};

    let client = sc.netns("client");
    let url = format!("tcp://tcp-echo:{TCP_PORT}");
    let mut held = std::process::Command::new("ip")
        .args(["netns", "exec", &client, ECHO, "fetch", &url, "--hold"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("fetch --hold starts");
    let mut input = held.stdin.take().expect("stdin");
    let mut output = BufReader::new(held.stdout.take().expect("stdout")).lines();
    let mut next = move || output.next().and_then(Result::ok).unwrap_or_default();
    assert!(next().starts_with("tcp-v"), "the server's greeting");
    writeln!(input, "before").expect("send");
    assert_eq!(next(), "before");

    let updated = "listener_manager.listener_in_place_updated";
    let before = stat(&client, updated).await;
    let late = services()[0].clone();
    let late = merge(late, json!({"metadata": {"name": "late"}}));
    create::<Service>(&sc.client, &sc.ns, [late]).await;
    eventually(30, "the capture listener's in-place update", async || {
        (stat(&client, updated).await > before).then_some(())
    })
    .await;
    writeln!(input, "after").expect("send");
    assert_eq!(next(), "after", "the held connection still echoes");
    drop(input);
    held.wait().expect("fetch --hold ends");
}

/// From another pod, the capture ports relay nothing: connections to them close unanswered.
async fn assert_capture_ports_relay_nothing(sc: &Scene) {
    let plain = sc.netns("plain");
    for port in [15001, 15006] {
        let url = format!("http://{}:{port}/", sc.ip("echo-v1"));
        let lines = fetch(&plain, &url, 1, &[]).await;
        assert!(lines[0].starts_with("error"), "{port}: {lines:?}");
    }
}

/// A test HTTP server on the bridge's own address: a destination outside the mesh.
struct OutsideServer {
    child: std::process::Child,
    addr: String,
}

impl OutsideServer {
    fn start(ip: &str) -> OutsideServer {
        let port = std::net::TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("{ip}:{port}");
        let child = Command::new(ECHO)
            .args(["--listen", &addr, "--name", "outside"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the outside server starts");
        for _ in 0..50 {
            if std::net::TcpStream::connect(&addr).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        OutsideServer { child, addr }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for OutsideServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn captured_traffic(prefix: &str, delta: bool) {
    let options = Options {
        delta,
        probe_labels: json!({"tier": "client"}),
        identity: None,
    };
    let Some(sc) = Scene::start(prefix, options, |bridge| Objects {
        policies: policies(&bridge.gateway().to_string()).into(),
        services: services().into(),
        routes: routes().into(),
        deployments: deployments(),
        ..Objects::default()
    })
    .await
    else {
        return;
    };
    assert_synced(&sc).await;
    assert_routed(&sc).await;
    assert_plain_pod_is_not_routed(&sc).await;
    assert_inbound_and_exclusions(&sc).await;
    assert_tcp_split(&sc).await;
    assert_unchanged_chains_keep_their_connections(&sc).await;
    assert_capture_ports_relay_nothing(&sc).await;
    sc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_traffic_sotw() {
    captured_traffic("capture-sotw", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_traffic_delta() {
    captured_traffic("capture-delta", true).await;
}
