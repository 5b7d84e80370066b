//! Pods that run for real on the stub cluster: the API server stores a pod with the sidecar
//! the controller's webhook injected, and the pod runner (`support::pods`) runs exactly that
//! spec in a network namespace on a test bridge. The injected Envoy starts from its
//! `--config-yaml` bootstrap, connects over xDS to the controller on the bridge address, and
//! syncs; the pod turns Ready only once the real probes pass; the echo app answers on the pod
//! address. Deleting the workload removes every namespace, veth and bridge the test made.
//!
//! A plain pod (no mesh) runs `remora init-network` as its init container: it completes
//! before the app starts and leaves the capture rules in the pod's namespace; a failing one
//! holds the app back and shows in the pod's status, as a kubelet reports it.

mod support;

use std::{net::SocketAddr, sync::Arc};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Pod, Service},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams},
};
use remora_api::SidecarPolicy;
use remora_model::input::ObjectKey;
use remora_xds::sync::SyncState;
use serde_json::json;
use support::{
    cluster, eventually, get, meshed,
    pods::{
        Runner,
        container::{ECHO_IMAGE, Images, REMORA_IMAGE},
        net::{Bridge, link_list, netns_list},
    },
};

/// The echo app's container: it says its pod's name, and is Ready once it listens on 8080.
fn echo_container() -> serde_json::Value {
    json!({
        "name": "app", "image": format!("{ECHO_IMAGE}:1"),
        "args": ["--listen", "0.0.0.0:8080", "--name", "$(POD_NAME)"],
        "env": [{"name": "POD_NAME",
                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
    })
}

/// The echo app on `0.0.0.0:8080`, named after its pod. It declares no container port and
/// its Service listens on 9080: today's proxy binds `<podIP>:<containerPort>` inbound and
/// `0.0.0.0:<servicePort>` outbound, which would collide with an app on `0.0.0.0:8080`.
fn echo_deployment() -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "echo"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "echo"}},
            "template": {
                "metadata": {"labels": {"app": "echo"}},
                "spec": {"containers": [echo_container()]}
            }
        }
    }))
    .expect("a Deployment")
}

fn echo_service() -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"},
        "spec": {"selector": {"app": "echo"},
                 "ports": [{"name": "http", "port": 9080, "targetPort": 8080}]}
    }))
    .expect("a Service")
}

/// A meshed namespace under this test's webhook, with a policy and the echo Service.
async fn meshed_namespace(client: &Client) -> String {
    let ns = meshed::namespace(client, "pods").await;
    let policy: SidecarPolicy = serde_json::from_value(json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "SidecarPolicy",
        "metadata": {"name": "mesh"},
        // The cluster is shared with the other tests, some of whose routes Envoy rejects on
        // purpose: the pod's proxy reaches only its own namespace, so it syncs on its own.
        "spec": {"proxy": {"image": "envoyproxy/envoy", "version": "v1.40.0"},
                 "egress": {"hosts": ["./*"]}}
    }))
    .expect("a SidecarPolicy");
    Api::<SidecarPolicy>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &policy)
        .await
        .expect("create the policy");
    Api::<Service>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &echo_service())
        .await
        .expect("create the Service");
    ns
}

/// What `ip netns exec <netns> getent ahostsv4 <name>` answers (IPv4 only: an IPv6 lookup
/// misses the hosts file and waits for a DNS server the pod cannot reach).
fn resolve_in(netns: &str, name: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", netns, "getent", "ahostsv4", name])
        .output()
        .expect("ip runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// In the pod's namespace, the echo Service's names resolve to its ClusterIP as cluster DNS
/// would answer them.
async fn assert_services_resolve(client: &Client, ns: &str, netns: &str) {
    let service = Api::<Service>::namespaced(client.clone(), ns)
        .get("echo")
        .await
        .expect("the Service");
    let cluster_ip = service
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");
    for host in ["echo".to_owned(), format!("echo.{ns}.svc.cluster.local")] {
        let answer = resolve_in(netns, &host);
        assert!(
            answer.starts_with(&format!("{cluster_ip} ")),
            "{host}: {answer:?}"
        );
    }
}

/// The pod's Envoy is the one connected to the controller, every type ACKed, and the probe
/// the runner passed is its own readiness on the pod address.
async fn assert_proxy_runs(
    controller: &remora_controller::Controller,
    proxy: ObjectKey,
    readiness: SocketAddr,
) {
    eventually(
        30,
        "the pod's proxy to be connected and synced",
        async || {
            let s = controller.xds.get(&proxy)?;
            (s.types.len() == 4 && s.types.values().all(|t| t.state() == SyncState::Synced))
                .then_some(())
        },
    )
    .await;
    let ready = get(readiness, "probe", "/ready", &[])
        .await
        .expect("Envoy's readiness port answers");
    assert_eq!(ready.status, 200);
    assert!(ready.body.contains("LIVE"), "{:?}", ready.body);
}

/// Scales the echo Deployment to zero and waits until its pod is gone, for the API server
/// and for the runner.
async fn scale_to_zero(client: &Client, ns: &str, runner: &Runner) {
    // Scaling the workload to zero deletes the pod (at once, where the garbage collector
    // would take its time): the runner stops it and removes what it made.
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    let none = json!({"spec": {"replicas": 0}});
    deployments
        .patch("echo", &PatchParams::default(), &Patch::Merge(&none))
        .await
        .expect("scale the Deployment to zero");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    eventually(60, "the echo pods to be gone", async || {
        let list = pods
            .list(&ListParams::default().labels("app=echo"))
            .await
            .ok()?;
        (list.items.is_empty() && runner.running() == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_pod_runs_for_real_and_turns_ready_through_its_probes() {
    let Some(client) = cluster::client().await else {
        return;
    };
    let t0 = std::time::Instant::now();
    let bridge = Arc::new(Bridge::create());
    let ns = meshed_namespace(&client).await;
    let webhook = format!("remora-e2e-pods-{ns}");
    let controller =
        meshed::controller(&client, &ns, &webhook, &bridge, false, json!({}), None).await;
    let runner = Runner::start(&client, &ns, &bridge, Images::standard());

    eprintln!("controller injecting after {:?}", t0.elapsed());
    let started = std::time::Instant::now();
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &echo_deployment())
        .await
        .expect("create the Deployment");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let selector = ListParams::default().labels("app=echo");
    let pod = eventually(90, "the echo pod to turn Ready", async || {
        let list = pods.list(&selector).await.ok()?;
        list.items.into_iter().find(meshed::is_ready)
    })
    .await;
    eprintln!(
        "the pod turned Ready {:?} after its Deployment",
        started.elapsed()
    );
    assert_eq!(runner.failures(), Vec::<String>::new());

    // The API server's spec: the proxy first (classic layout on 1.20), then the app.
    let spec = pod.spec.as_ref().expect("a spec");
    let names: Vec<_> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, [meshed::PROXY, "app"]);
    let name = pod.metadata.name.clone().expect("a name");
    let status = pod.status.as_ref().expect("a status");
    let ip = status.pod_ip.clone().expect("a pod IP");
    assert!(ip.starts_with(&format!("10.253.{}.", bridge.index)), "{ip}");
    for c in status.container_statuses.iter().flatten() {
        assert!(c.ready, "{} is not ready: {c:?}", c.name);
    }

    let addr = |port: u16| SocketAddr::new(ip.parse().expect("an IP"), port);
    assert_proxy_runs(
        &controller,
        ObjectKey::new(ns.clone(), name.clone()),
        addr(15021),
    )
    .await;

    // The app answers on the pod address from the root namespace, named by the downward API.
    let reply = get(addr(8080), "echo", "/hello", &[])
        .await
        .expect("the echo app answers");
    assert_eq!(reply.body, format!("{name} /hello"));

    // In the pod, Service names resolve to their ClusterIP as cluster DNS would.
    let netns = runner.netns(&name).expect("the pod's namespace");
    assert_services_resolve(&client, &ns, &netns).await;

    scale_to_zero(&client, &ns, &runner).await;
    eprintln!("pods gone after {:?}", t0.elapsed());
    assert!(!netns_list().contains(&netns), "{netns} is still there");
    let veths = format!("rmr{}p", bridge.index);
    assert!(
        !link_list().iter().any(|l| l.starts_with(&veths)),
        "a veth is left: {:?}",
        link_list()
    );

    meshed::cleanup(&client, &webhook, controller, &ns).await;
    drop(runner);
    let bridge_name = bridge.name.clone();
    drop(bridge);
    assert!(
        !link_list().contains(&bridge_name),
        "{bridge_name} is still there"
    );
    eprintln!("done after {:?}", t0.elapsed());
}

/// The init container of the plain pods: `remora init-network` as root, with the
/// capabilities the injected one will ask for (the runner does not enforce capabilities: the
/// process runs as root in the pod's namespace).
const INIT: &str = "init-network";

/// A namespace outside the mesh (no `remora.dev/mesh` label, no webhook selects it).
async fn plain_namespace(client: &Client) -> String {
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"generateName": "pods-init-"}
    }))
    .expect("a Namespace");
    let created = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create the test namespace");
    created.metadata.name.expect("the server names it")
}

/// A bare pod: `remora init-network <init_args>` as an init container, then the echo app on
/// `0.0.0.0:8080` with a TCP readiness probe.
fn init_pod(name: &str, init_args: &[&str]) -> Pod {
    let args: Vec<&str> = [INIT]
        .into_iter()
        .chain(init_args.iter().copied())
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "initContainers": [{
                "name": INIT, "image": format!("{REMORA_IMAGE}:test"),
                "command": ["remora"],
                "args": args,
                "securityContext": {
                    "runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": false,
                    "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}
                }
            }],
            "containers": [echo_container()]
        }
    }))
    .expect("a Pod")
}

/// A container state in a pod status as JSON: `terminated:<exit code>`, `running`,
/// `waiting`, or `none` before the runner reported it.
fn state_name(status: &serde_json::Value, list: &str) -> String {
    let state = &status[list][0]["state"];
    if let Some(t) = state.get("terminated") {
        return format!("terminated:{}", t["exitCode"]);
    }
    let mut kinds = state.as_object().into_iter().flat_map(|o| o.keys());
    kinds.next().cloned().unwrap_or_else(|| "none".into())
}

/// Every version of pod `name` the API server stored since `since` (a watch replayed from
/// that resource version, closed by the server after two seconds), as the `(init
/// container, app)` states of each, consecutive repeats folded.
async fn state_history(
    client: &Client,
    ns: &str,
    name: &str,
    since: &str,
) -> Vec<(String, String)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let params = WatchParams::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(2);
    let request = kube::core::Request::new(pods.resource_url())
        .watch(&params, since)
        .expect("a watch request");
    let text = client.request_text(request).await.expect("the watch");
    let mut history: Vec<(String, String)> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let event: serde_json::Value = serde_json::from_str(line).expect("a watch event");
        assert_ne!(event["type"], "ERROR", "the watch replay failed: {event}");
        let status = &event["object"]["status"];
        let states = (
            state_name(status, "initContainerStatuses"),
            state_name(status, "containerStatuses"),
        );
        if history.last() != Some(&states) {
            history.push(states);
        }
    }
    history
}

/// The IPv4 nat table of a network namespace as the nft backend reads it.
fn nat_table(netns: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", netns, "iptables-nft-save", "-t", "nat"])
        .output()
        .expect("ip runs");
    assert!(
        out.status.success(),
        "iptables-nft-save in {netns}: {out:?}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The stored pod is the spec as sent (nothing injected); its init container completed
/// before its app started, in the status the runner wrote and in every version before it.
fn assert_init_ran_first(pod: &Pod, history: &[(String, String)]) {
    let spec = pod.spec.as_ref().expect("a spec");
    let inits: Vec<_> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    let apps: Vec<_> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!((inits, apps), (vec![INIT], vec!["app"]), "not as sent");
    let status = pod.status.as_ref().expect("a status");
    let init = &status
        .init_container_statuses
        .as_deref()
        .expect("init statuses")[0];
    let done = init.state.as_ref().and_then(|s| s.terminated.as_ref());
    let done = done.unwrap_or_else(|| panic!("{INIT} did not terminate: {init:?}"));
    assert_eq!(
        (done.exit_code, done.reason.as_deref()),
        (0, Some("Completed"))
    );
    let app = &status.container_statuses.as_deref().expect("statuses")[0];
    let running = app.state.as_ref().and_then(|s| s.running.as_ref());
    let running = running.unwrap_or_else(|| panic!("the app is not running: {app:?}"));
    assert!(app.ready, "{app:?}");
    let (finished, started) = (done.finished_at.as_ref(), running.started_at.as_ref());
    let (finished, started) = (
        finished.expect("finishedAt").0,
        started.expect("startedAt").0,
    );
    assert!(
        finished <= started,
        "{INIT} finished {finished}, the app started {started}"
    );
    // Every stored version: the app left `waiting` only once the init container had exited 0,
    // and one version shows the init container done with the app not yet started.
    for (init, app) in history {
        if app != "waiting" && app != "none" {
            assert_eq!(
                init, "terminated:0",
                "the app {app} before {INIT}: {history:?}"
            );
        }
    }
    let between = ("terminated:0".to_owned(), "waiting".to_owned());
    assert!(history.contains(&between), "{history:?}");
    assert_eq!(
        history.last().map(|h| h.1.as_str()),
        Some("running"),
        "{history:?}"
    );
}

/// The pod's namespace holds `init-network`'s nat rules: every TCP connection through the
/// REMORA chains, the proxy's own (uid and gid 1337) and port 5432 not captured outbound, the
/// probed app port not captured inbound.
fn assert_captured(netns: &str) {
    let table = nat_table(netns);
    let lines: Vec<&str> = table.lines().collect();
    let has = |start: &str, parts: &[&str]| {
        lines
            .iter()
            .any(|l| l.starts_with(start) && parts.iter().all(|p| l.contains(p)))
    };
    assert!(has(":REMORA_OUTPUT ", &[]), "{table}");
    assert!(has(":REMORA_INBOUND ", &[]), "{table}");
    assert!(has("-A OUTPUT -p tcp -j REMORA_OUTPUT", &[]), "{table}");
    assert!(
        has("-A PREROUTING -p tcp -j REMORA_INBOUND", &[]),
        "{table}"
    );
    let owner = "-m owner --uid-owner 1337 --gid-owner 1337 ";
    assert!(has("-A REMORA_OUTPUT ", &[owner, "-j RETURN"]), "{table}");
    assert!(
        has("-A REMORA_OUTPUT ", &["--dport 5432 ", "-j RETURN"]),
        "{table}"
    );
    assert!(
        has("-A REMORA_INBOUND ", &["--dport 8080 ", "-j RETURN"]),
        "{table}"
    );
    assert!(has("-A REMORA_REDIRECT ", &["--to-ports 15001"]), "{table}");
}

/// The pod whose init container fails: the runner reports it as a kubelet would (the init
/// container terminated with its exit code, the app waiting, the pod neither initialized
/// nor Ready) and never starts the app; nothing was written to the pod's nat table.
async fn assert_failed_init(pods: &Api<Pod>, runner: &Runner, ns: &str, name: &str) {
    let init_done = |p: &Pod| {
        let statuses = p.status.as_ref()?.init_container_statuses.as_ref()?;
        statuses.first()?.state.as_ref()?.terminated.clone()
    };
    let done = eventually(60, "the failing init container to end", async || {
        init_done(&pods.get(name).await.ok()?)
    })
    .await;
    assert_eq!((done.exit_code, done.reason.as_deref()), (1, Some("Error")));
    let expected = format!("{ns}/{name}: init container {INIT} ended with Some(1)");
    assert_eq!(runner.failures(), [expected]);
    let log = runner.log(name, INIT);
    assert!(log.contains("the proxy must not run as root"), "{log:?}");
    let netns = runner.netns(name).expect("the failed pod's namespace");
    assert!(
        !nat_table(&netns).contains("REMORA"),
        "{}",
        nat_table(&netns)
    );
    // Two seconds on, still nothing of the app: not started, not Ready.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let pod = pods.get(name).await.expect("the failed pod");
    let status = pod.status.as_ref().expect("a status");
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let condition = |t: &str| {
        let found = status.conditions.iter().flatten().find(|c| c.type_ == t);
        found.map(|c| c.status.clone())
    };
    assert_eq!(condition("Initialized").as_deref(), Some("False"));
    assert_eq!(condition("Ready").as_deref(), Some("False"));
    let app = &status.container_statuses.as_deref().expect("statuses")[0];
    let waiting = app.state.as_ref().and_then(|s| s.waiting.as_ref());
    assert_eq!(
        waiting.and_then(|w| w.reason.as_deref()),
        Some("PodInitializing")
    );
    assert!(!app.ready && app.started != Some(true), "{app:?}");
    assert_eq!(runner.log(name, "app"), "", "the app ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_container_programs_the_capture_before_the_app_starts_and_a_failed_one_holds_it() {
    let Some(client) = cluster::client().await else {
        return;
    };
    let t0 = std::time::Instant::now();
    let bridge = Arc::new(Bridge::create());
    let ns = plain_namespace(&client).await;
    let runner = Runner::start(&client, &ns, &bridge, Images::standard());
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let since = pods.list(&ListParams::default()).await.expect("list pods");
    let since = since.metadata.resource_version.expect("a resource version");
    let capture = [
        "--proxy-uid=1337",
        "--proxy-gid=1337",
        "--exclude-outbound-ports=5432",
        // The probe comes in from the node: redirected to the (absent) proxy, it would fail.
        "--exclude-inbound-ports=8080",
    ];
    // uid 0 is refused: the proxy's own connections would be every root process's.
    let refused = ["--proxy-uid=0", "--proxy-gid=0"];
    for (name, args) in [("init-ok", &capture[..]), ("init-bad", &refused[..])] {
        cluster::create_pod(&client, &ns, &init_pod(name, args)).await;
    }
    let pod = eventually(60, "the init-ok pod to turn Ready", async || {
        pods.get("init-ok").await.ok().filter(meshed::is_ready)
    })
    .await;
    eprintln!("init-ok Ready after {:?}", t0.elapsed());
    let history = state_history(&client, &ns, "init-ok", &since).await;
    eprintln!("init-ok (init, app) states: {history:?}");
    assert_init_ran_first(&pod, &history);
    let netns = runner.netns("init-ok").expect("the pod's namespace");
    assert_captured(&netns);
    let ip = pod.status.and_then(|s| s.pod_ip).expect("a pod IP");
    let addr = SocketAddr::new(ip.parse().expect("an IP"), 8080);
    let reply = get(addr, "echo", "/hello", &[])
        .await
        .expect("the app answers");
    assert_eq!(reply.body, "init-ok /hello");

    assert_failed_init(&pods, &runner, &ns, "init-bad").await;
    let bad_netns = runner
        .netns("init-bad")
        .expect("the failed pod's namespace");

    pods.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .expect("delete the pods");
    eventually(60, "the pods to be gone", async || {
        let list = pods.list(&ListParams::default()).await.ok()?;
        (list.items.is_empty() && runner.running() == 0).then_some(())
    })
    .await;
    for n in [&netns, &bad_netns] {
        assert!(!netns_list().contains(n), "{n} is still there");
    }
    let veths = format!("rmr{}p", bridge.index);
    let left: Vec<_> = link_list()
        .into_iter()
        .filter(|l| l.starts_with(&veths))
        .collect();
    assert!(left.is_empty(), "veths left: {left:?}");
    Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::default())
        .await
        .expect("delete the test namespace");
    drop(runner);
    let bridge_name = bridge.name.clone();
    drop(bridge);
    assert!(
        !link_list().contains(&bridge_name),
        "{bridge_name} is still there"
    );
    eprintln!("done after {:?}", t0.elapsed());
}
