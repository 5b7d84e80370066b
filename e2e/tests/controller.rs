//! The controller against a real Kubernetes API server: status follows the cluster, is
//! written only when it changes, and exactly one of two replicas writes it.

mod support;

use remora_api::spiffe::DEFAULT_TRUST_DOMAIN;
use remora_ca::pb::{CertifyRequest, identity_client::IdentityClient};
use remora_controller::identity::IdentityConfig;
use remora_identity::{TrustBundle, dial, tls::client_config};

use std::time::Duration;

use k8s_openapi::api::{
    core::v1::{Namespace, Service},
    events::v1::Event,
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
};
use remora_api::{AccessPolicy, SidecarPolicy, TrafficRoute, conditions};
use remora_controller::{
    Config, Controller,
    fleet::{FleetConfig, REPORT_LABEL},
    leader::LeaseConfig,
};
use remora_model::input::ObjectKey;
use remora_model::{config::Addressing, input::MeshSettings};
use remora_runtime::Debounce;
use support::{cluster, eventually};

/// Every controller writes the status of every route in the cluster, so the tests of this
/// file take turns: one test's controllers never write another test's routes.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(lease: Option<LeaseConfig>) -> Config {
    Config {
        xds_addr: "127.0.0.1:0".parse().expect("addr"),
        health_addr: "127.0.0.1:0".parse().expect("addr"),
        // As a cluster install runs: proxies are reached through capture listeners, which
        // bind the same two ports whatever the Services.
        settings: MeshSettings {
            addressing: Addressing::Captured,
            ..MeshSettings::default()
        },
        // Replicas report their proxies to each other fast here, so a dead one's reports
        // expire within a test.
        fleet: lease.as_ref().map(|l| FleetConfig {
            min_interval: Duration::from_millis(100),
            heartbeat: Duration::from_secs(1),
            expiry: Duration::from_secs(4),
            ..FleetConfig::new(&l.namespace, &l.identity, &format!("{}-proxies", l.name))
        }),
        lease,
        debounce: Debounce {
            window: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
        },
        status_interval: Duration::from_millis(300),
        discovery_interval: Duration::from_secs(1),
        max_stream_age: remora_xds::DEFAULT_MAX_STREAM_AGE,
        xds_limits: remora_xds::Limits::default(),
        webhook: None,
        inject: None,
        // The status and election tests connect no proxy: the port stays plaintext.
        identity: None,
    }
}

/// A lease in `ns` for `identity` that changes hands within seconds, as the election tests
/// need.
fn short_lease(ns: &str, identity: &str) -> LeaseConfig {
    LeaseConfig {
        namespace: ns.to_owned(),
        name: "remora-controller".into(),
        identity: identity.into(),
        duration: Duration::from_secs(4),
        grace: Duration::from_secs(1),
    }
}

async fn start(client: &Client, lease: Option<LeaseConfig>) -> Controller {
    remora_controller::start(client.clone(), config(lease))
        .await
        .expect("the controller starts")
}

fn service(name: &str, port: i32) -> Service {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": port}]}
    }))
    .expect("a Service")
}

fn route(name: &str, parent: &str, backends: &[(&str, i32)]) -> TrafficRoute {
    let backend_refs: Vec<_> = backends
        .iter()
        .map(|(b, w)| serde_json::json!({"name": b, "weight": w}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "TrafficRoute",
        "metadata": {"name": name},
        "spec": {"parentRefs": [{"name": parent, "port": 80}],
                 "http": [{"name": "split", "backendRefs": backend_refs}]}
    }))
    .expect("a TrafficRoute")
}

/// The condition of a type, as (status, reason, message), with its observed generation.
fn condition(r: &TrafficRoute, type_: &str) -> Option<(String, String, String, Option<i64>)> {
    let c = r
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((
        c.status.clone(),
        c.reason.clone(),
        c.message.clone(),
        c.observed_generation,
    ))
}

/// kstatus's pair on the route: `stuck`'s type (`Reconciling` or `Stalled`) True with its
/// reason, the other False; both False without one.
fn assert_kstatus(r: &TrafficRoute, stuck: Option<(&str, &str)>) {
    for type_ in [conditions::RECONCILING, conditions::STALLED] {
        let (status, why, _, _) = condition(r, type_).expect(type_);
        match stuck {
            Some((t, reason)) if t == type_ => {
                assert_eq!((status.as_str(), why.as_str()), ("True", reason));
            }
            _ => assert_eq!(status, "False", "{type_}"),
        }
    }
}

/// Waits until the route's status describes generation `generation` and `check` holds.
async fn route_status(
    api: &Api<TrafficRoute>,
    name: &str,
    generation: i64,
    what: &str,
    check: impl Fn(&TrafficRoute) -> bool,
) -> TrafficRoute {
    eventually(30, what, async || {
        let r = api.get(name).await.ok()?;
        let observed = r.status.as_ref()?.observed_generation;
        (observed == Some(generation) && check(&r)).then_some(r)
    })
    .await
}

/// Waits several status passes and checks that the route was not written again.
async fn assert_not_rewritten(
    routes: &Api<TrafficRoute>,
    name: &str,
    settled: &TrafficRoute,
    why: &str,
) {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = routes.get(name).await.expect("the route");
    assert_eq!(
        later.metadata.resource_version, settled.metadata.resource_version,
        "{why}"
    );
}

/// Replaces the route's HTTP rules.
async fn set_rules(routes: &Api<TrafficRoute>, name: &str, rules: serde_json::Value) {
    let patch = serde_json::json!({"spec": {"http": rules}});
    routes
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("the API server takes the edit");
}

/// One test's share of the cluster: its turn, and a fresh namespace holding a Service `web`.
struct Scene {
    client: Client,
    ns: String,
    services: Api<Service>,
    routes: Api<TrafficRoute>,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

async fn scene(prefix: &str) -> Option<Scene> {
    let client = cluster::client().await?;
    let turn = ONE_AT_A_TIME.lock().await;
    cluster::install_crds(&client).await;
    let ns = cluster::test_namespace(&client, prefix).await;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    services
        .create(&PostParams::default(), &service("web", 80))
        .await
        .expect("web");
    Some(Scene {
        routes: Api::namespaced(client.clone(), &ns),
        client,
        ns,
        services,
        _turn: turn,
    })
}

/// Waits for a Warning Event about the route `name` with `reason`; returns its note.
async fn warning_event(client: &Client, ns: &str, name: &str, reason: &str) -> String {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    eventually(20, &format!("a {reason} Event on {name}"), async || {
        let list = events.list(&Default::default()).await.ok()?;
        list.items.into_iter().find_map(|e| {
            (e.regarding.as_ref()?.name.as_deref() == Some(name)
                && e.reason.as_deref() == Some(reason)
                && e.type_.as_deref() == Some("Warning"))
            .then(|| e.note.unwrap_or_default())
        })
    })
    .await
}

fn is(r: &TrafficRoute, type_: &str, status: &str, reason: &str) -> bool {
    condition(r, type_).is_some_and(|(s, re, _, _)| s == status && re == reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_status_follows_the_cluster_and_is_written_only_when_it_changes() {
    let Some(sc) = scene("status").await else {
        return;
    };
    let (client, services, routes) = (&sc.client, &sc.services, &sc.routes);
    let pp = PostParams::default();

    let controller = start(client, None).await;
    routes
        .create(
            &pp,
            &route("split", "web", &[("web", 90), ("web-canary", 10)]),
        )
        .await
        .expect("the route is created");

    // The canary Service does not exist yet.
    let r = route_status(routes, "split", 1, "ResolvedRefs=False", |r| {
        is(r, conditions::RESOLVED_REFS, "False", "BackendNotFound")
    })
    .await;
    assert!(
        is(&r, conditions::ACCEPTED, "True", "Accepted"),
        "{:?}",
        r.status
    );
    let (_, _, message, observed) =
        condition(&r, conditions::RESOLVED_REFS).expect("the condition is set");
    assert!(message.contains("web-canary"), "{message}");
    assert_eq!(observed, Some(1));

    // Creating it resolves the route without touching the route itself.
    services
        .create(&pp, &service("web-canary", 80))
        .await
        .expect("web-canary");
    let r = route_status(routes, "split", 1, "ResolvedRefs=True", |r| {
        is(r, conditions::RESOLVED_REFS, "True", "Resolved")
    })
    .await;
    assert_eq!(r.metadata.generation, Some(1));

    // Nothing changes now, so nothing is written.
    assert_not_rewritten(routes, "split", &r, "a write without a change").await;

    // An edit moves observedGeneration along.
    set_rules(
        routes,
        "split",
        serde_json::json!([{"name": "split", "backendRefs": [
            {"name": "web", "weight": 50}, {"name": "web-canary", "weight": 50}]}]),
    )
    .await;
    route_status(routes, "split", 2, "observedGeneration 2", |r| {
        is(r, conditions::ACCEPTED, "True", "Accepted")
    })
    .await;

    // An invalid spec that got in (no webhook here) is reported with its field path.
    set_rules(
        routes,
        "split",
        serde_json::json!([
            {"name": "split", "backendRefs": [{"name": "web", "weight": 1}]},
            {"name": "split", "backendRefs": [{"name": "web", "weight": 1}]}]),
    )
    .await;
    let r = route_status(routes, "split", 3, "Accepted=False", |r| {
        is(r, conditions::ACCEPTED, "False", "Invalid")
    })
    .await;
    let (_, _, message, _) = condition(&r, conditions::ACCEPTED).expect("Accepted");
    assert!(message.contains("spec.http[1].name"), "{message}");
    // Flux reads Ready, which names what holds the route back; kstatus reads Stalled.
    let (ready, why, summary, observed) = condition(&r, conditions::READY).expect("Ready");
    assert_eq!(
        (ready.as_str(), why.as_str(), observed),
        ("False", "Invalid", Some(3))
    );
    assert!(summary.starts_with("Accepted is False: "), "{summary}");
    assert_kstatus(&r, Some((conditions::STALLED, "Invalid")));
    // A person sees the rejection as an Event on the route.
    let note = warning_event(client, &sc.ns, "split", "Invalid").await;
    assert!(note.contains("spec.http[1].name"), "{note}");

    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_replicas_leads_and_the_other_takes_over_when_it_dies() {
    let Some(sc) = scene("lease").await else {
        return;
    };
    let (client, routes) = (&sc.client, &sc.routes);
    let pp = PostParams::default();
    let lease = |identity: &str| short_lease(&sc.ns, identity);
    routes
        .create(&pp, &route("split", "web", &[("web", 1)]))
        .await
        .expect("the route");

    let a = start(client, Some(lease("replica-a"))).await;
    let b = start(client, Some(lease("replica-b"))).await;
    eventually(20, "one leader", async || {
        (a.is_leader() != b.is_leader()).then_some(())
    })
    .await;
    let r = route_status(routes, "split", 1, "status from the leader", |r| {
        is(r, conditions::RESOLVED_REFS, "True", "Resolved")
    })
    .await;
    let (leader, follower) = if a.is_leader() { (a, b) } else { (b, a) };

    // The leader dies without releasing the lease; the follower takes over once it
    // expires, and finds nothing to rewrite.
    drop(leader);
    let died = std::time::Instant::now();
    eventually(15, "the follower leads", async || {
        follower.is_leader().then_some(())
    })
    .await;
    assert!(
        died.elapsed() < Duration::from_secs(4 + 5),
        "takeover took {:?}",
        died.elapsed()
    );
    assert_not_rewritten(routes, "split", &r, "status flapped on takeover").await;

    // The new leader writes what changes.
    set_rules(
        routes,
        "split",
        serde_json::json!([{"name": "split", "backendRefs": [
            {"name": "web", "weight": 1}, {"name": "missing", "weight": 1}]}]),
    )
    .await;
    route_status(routes, "split", 2, "the new leader writes", |r| {
        is(r, conditions::RESOLVED_REFS, "False", "BackendNotFound")
    })
    .await;
    follower.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_survives_an_api_server_restart() {
    let Some(sc) = scene("restart").await else {
        return;
    };
    let (client, services, routes) = (&sc.client, &sc.services, &sc.routes);
    let pp = PostParams::default();
    routes
        .create(&pp, &route("split", "web", &[("web", 1), ("later", 1)]))
        .await
        .expect("the route");
    let controller = start(client, None).await;
    let settled = route_status(routes, "split", 1, "BackendNotFound", |r| {
        is(r, conditions::RESOLVED_REFS, "False", "BackendNotFound")
    })
    .await;

    if !cluster::restart_apiserver(client).await {
        return;
    }
    // Watches resume (or re-list) by themselves; an unchanged status is not rewritten.
    assert_not_rewritten(
        routes,
        "split",
        &settled,
        "status rewritten after the restart although nothing changed",
    )
    .await;
    // And what changes after it is seen.
    services
        .create(&pp, &service("later", 80))
        .await
        .expect("later");
    route_status(routes, "split", 1, "resolved after the restart", |r| {
        is(r, conditions::RESOLVED_REFS, "True", "Resolved")
    })
    .await;
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subset_resolves_when_a_matching_pod_becomes_ready() {
    let Some(sc) = scene("subset").await else {
        return;
    };
    if !cluster::is_stub() {
        eprintln!("skipped: pods are made ready by hand only on the stub cluster");
        return;
    }
    let (client, routes) = (&sc.client, &sc.routes);
    let canary: TrafficRoute = serde_json::from_value(serde_json::json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "TrafficRoute",
        "metadata": {"name": "canary"},
        "spec": {"parentRefs": [{"name": "web", "port": 80}],
                 "http": [{"name": "split", "backendRefs": [
                     {"name": "web", "weight": 90},
                     {"name": "web", "subset": {"version": "v2"}, "weight": 10}]}]}
    }))
    .expect("a TrafficRoute");
    routes
        .create(&PostParams::default(), &canary)
        .await
        .expect("the route");
    let controller = start(client, None).await;
    route_status(routes, "canary", 1, "SubsetEmpty", |r| {
        is(r, conditions::RESOLVED_REFS, "False", "SubsetEmpty")
    })
    .await;

    // A v2 pod appears and becomes ready: Kubernetes lists it in the Service's
    // EndpointSlice (discovery.k8s.io/v1beta1 on 1.20), and the subset resolves.
    let pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-v2", "labels": {"app": "web", "version": "v2"}},
        "spec": {"containers": [{"name": "web", "image": "example.invalid/web:2",
                                 "ports": [{"name": "http", "containerPort": 80}]}]}
    }))
    .expect("a Pod");
    cluster::create_pod(client, &sc.ns, &pod).await;
    cluster::run_pod(client, &sc.ns, "web-v2", "127.1.200.2").await;
    route_status(routes, "canary", 1, "the subset resolved", |r| {
        is(r, conditions::RESOLVED_REFS, "True", "Resolved")
    })
    .await;
    controller.stop().await;
}

/// Scopes the egress of `ns`'s client proxies to their own namespace: the shared cluster
/// holds other tests' routes, which a proxy with a lower regex limit would NACK too.
async fn own_namespace_only(client: &Client, ns: &str) {
    let policy: SidecarPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "SidecarPolicy",
        "metadata": {"name": "clients"},
        "spec": {"selector": {"matchLabels": {"app": "client"}},
                 "proxy": {"image": "example.invalid/remora-proxy", "version": "1.40.0"},
                 "egress": {"hosts": ["./*"]}}
    }))
    .expect("a SidecarPolicy");
    Api::<SidecarPolicy>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &policy)
        .await
        .expect("the policy");
}

/// Deletes a client pod at once (no kubelet confirms a graceful delete here): a running pod
/// whose proxy is gone would count, in every later test of this file, as a proxy that never
/// takes the config of the Services it reaches.
async fn remove_client(client: &Client, ns: &str, name: &str) {
    let now = kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), ns)
        .delete(name, &now)
        .await
        .expect("the client pod deleted");
}

/// A pod `app=client` with a sidecar, made running at `ip` (its proxy is started by the test).
async fn running_client(client: &Client, ns: &str, name: &str, ip: &str) {
    let pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "client"}},
        "spec": {"containers": [
            {"name": "app", "image": "example.invalid/client:1"},
            {"name": "remora-proxy", "image": "example.invalid/remora-proxy:1.40.0"}]}
    }))
    .expect("a Pod");
    cluster::create_pod(client, ns, &pod).await;
    cluster::run_pod(client, ns, name, ip).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_envoy_programs_routes_and_policies_and_its_nack_shows() {
    let Some(sc) = scene("programmed").await else {
        return;
    };
    if !cluster::is_stub() {
        eprintln!("skipped: pods are made ready by hand only on the stub cluster");
        return;
    }
    let (client, services, routes) = (&sc.client, &sc.services, &sc.routes);
    let pp = PostParams::default();
    services
        .create(&pp, &service("api", 28_081))
        .await
        .expect("api");
    running_client(client, &sc.ns, "client", "127.1.201.2").await;

    let controller = start(client, None).await;
    let envoy = support::Envoy::start_with_regex_limit(
        ObjectKey::new(&sc.ns, "client"),
        controller.xds_addr,
        false,
        support::LOWER_REGEX_LIMIT,
    )
    .await;
    let rules = |path: &str| {
        serde_json::json!([{"name": "only", "matches": [{"path": {"type": "RegularExpression", "value": path}}],
                            "backendRefs": [{"name": "api", "port": 28_081}]}])
    };
    let api_route: TrafficRoute = serde_json::from_value(serde_json::json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "TrafficRoute",
        "metadata": {"name": "api"},
        "spec": {"parentRefs": [{"name": "api", "port": 28_081}], "http": rules("/v1/.*")}
    }))
    .expect("a TrafficRoute");
    routes.create(&pp, &api_route).await.expect("the route");
    let r = route_status(routes, "api", 1, "Programmed=True", |r| {
        is(r, conditions::PROGRAMMED, "True", "Programmed")
    })
    .await;
    let counts = r.status.as_ref().and_then(|s| s.proxies.clone());
    let counts = counts.expect("proxy counts");
    assert_eq!((counts.affected, counts.acked, counts.nacked), (1, 1, 0));
    assert_kstatus(&r, None);

    // Valid for validate(), beyond the RE2 program size this proxy accepts (it started with a
    // lower limit than the controller's): Envoy NACKs, and the route says so in its words.
    set_rules(routes, "api", rules(support::BEYOND_LOWER_LIMIT)).await;
    let r = route_status(routes, "api", 2, "Programmed=False", |r| {
        is(r, conditions::PROGRAMMED, "False", "RejectedByProxy")
    })
    .await;
    let (_, _, message, _) = condition(&r, conditions::PROGRAMMED).expect("Programmed");
    assert!(message.contains("program size"), "{message}");
    assert!(message.contains(&format!("{}/client", sc.ns)), "{message}");
    let (ready, why, _, _) = condition(&r, conditions::READY).expect("Ready");
    assert_eq!((ready.as_str(), why.as_str()), ("False", "RejectedByProxy"));
    assert_kstatus(&r, Some((conditions::STALLED, "RejectedByProxy")));
    warning_event(client, &sc.ns, "api", "RejectedByProxy").await;

    // The policy governing the proxy reports it, with the version its sidecar runs.
    let policies: Api<SidecarPolicy> = Api::namespaced(client.clone(), &sc.ns);
    let policy: SidecarPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "SidecarPolicy",
        "metadata": {"name": "clients"},
        "spec": {"selector": {"matchLabels": {"app": "client"}},
                 "proxy": {"image": "example.invalid/remora-proxy", "version": "1.40.0"}}
    }))
    .expect("a SidecarPolicy");
    policies.create(&pp, &policy).await.expect("the policy");
    let status = eventually(30, "the policy's status", async || {
        let s = policies.get("clients").await.ok()?.status?;
        (s.observed_generation == Some(1) && s.matched_proxies == 1).then_some(s)
    })
    .await;
    assert_eq!(
        status
            .versions
            .iter()
            .map(|v| (v.version.as_str(), v.proxies))
            .collect::<Vec<_>>(),
        [("1.40.0", 1)]
    );
    let rolled_out = status
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::ROLLED_OUT)
        .map(|c| c.status.as_str());
    assert_eq!(rolled_out, Some("True"), "{:?}", status.conditions);

    // Operability: ready, and the metrics see the proxy and its NACK.
    let ready = support::get(controller.health_addr, "localhost", "/readyz", &[])
        .await
        .expect("/readyz answers");
    assert_eq!(ready.status, 200, "{}", ready.body);
    let metrics = support::get(controller.health_addr, "localhost", "/metrics", &[])
        .await
        .expect("/metrics answers");
    assert!(
        metrics.body.contains("remora_connected_proxies 1")
            && metrics.body.contains("remora_nacking_proxies 1"),
        "{}",
        metrics.body
    );
    drop(envoy);
    remove_client(client, &sc.ns, "client").await;
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_rbac_is_all_the_controller_needs() {
    let Some(sc) = scene("rbac").await else {
        return;
    };
    let (client, routes) = (&sc.client, &sc.routes);
    routes
        .create(
            &PostParams::default(),
            &route("split", "web", &[("web", 1), ("missing", 1)]),
        )
        .await
        .expect("the route");
    let release = format!("r-{}", sc.ns);
    let as_chart = cluster::client_with_chart_rbac(client, &release, &sc.ns).await;
    // The chart's default Lease name, in the release namespace; the mesh CA in the chart's
    // Secret, created as the chart's account.
    let mut config = config(Some(LeaseConfig {
        namespace: sc.ns.clone(),
        name: "remora-controller".into(),
        identity: "chart-replica".into(),
        duration: Duration::from_secs(4),
        grace: Duration::from_secs(1),
    }));
    config.identity = Some(IdentityConfig {
        trust_domain: DEFAULT_TRUST_DOMAIN.into(),
        namespace: sc.ns.clone(),
        ca_secret: format!("{release}-remora-mesh-ca"),
        cert_ttl: Duration::from_secs(3600),
        service_account: "remora".into(),
        server_names: vec!["127.0.0.1".into()],
    });
    let controller = remora_controller::start(as_chart.clone(), config)
        .await
        .expect("the controller starts as the chart's account");
    eventually(20, "the lease", async || {
        controller.is_leader().then_some(())
    })
    .await;
    route_status(
        routes,
        "split",
        1,
        "status written as the chart's account",
        |r| is(r, conditions::RESOLVED_REFS, "False", "BackendNotFound"),
    )
    .await;
    let ready = support::get(controller.health_addr, "localhost", "/readyz", &[])
        .await
        .expect("/readyz answers");
    assert_eq!(ready.status, 200, "every watch listed: {}", ready.body);
    // The chart lets it write its proxy report.
    eventually(10, "the replica's proxy report", async || {
        (reports(client, &sc.ns, "chart-replica").await > 0).then_some(())
    })
    .await;
    // The chart lets it review tokens: a bogus one is refused as such, not for lack of access.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &sc.ns);
    let ca = secrets
        .get(&format!("{release}-remora-mesh-ca"))
        .await
        .expect("the mesh CA's Secret");
    let pem = ca
        .data
        .and_then(|d| d.get("ca.crt").cloned())
        .expect("ca.crt");
    let bundle = TrustBundle::from_pem(&String::from_utf8(pem.0).expect("PEM")).expect("roots");
    let channel = dial(
        &controller.xds_addr.to_string(),
        "127.0.0.1",
        client_config(&bundle, None).expect("TLS"),
        Duration::from_secs(10),
    )
    .await
    .expect("the TLS port");
    let mut request = tonic::Request::new(CertifyRequest { csr: String::new() });
    let bogus = "Bearer not-a-token".parse().expect("ASCII");
    request.metadata_mut().insert("authorization", bogus);
    let refused = IdentityClient::new(channel)
        .certify(request)
        .await
        .expect_err("a bogus token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    controller.stop().await;
}

/// Names of the pods of `ns` whose proxies `replica` lists, with the replica serving each.
async fn listed(replica: &Controller, ns: &str) -> Vec<(String, String)> {
    use remora_admin::pb::{ListProxiesRequest, proxies_client::ProxiesClient};
    let mut client = ProxiesClient::connect(format!("http://{}", replica.xds_addr))
        .await
        .expect("the replica's API");
    let list = client
        .list(ListProxiesRequest {
            namespace: ns.into(),
        })
        .await
        .expect("list")
        .into_inner();
    let proxies = list.proxies.into_iter();
    proxies.map(|p| (p.name, p.replica)).collect()
}

/// The report objects `replica` wrote in `ns`.
async fn reports(client: &Client, ns: &str, replica: &str) -> usize {
    let maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), ns);
    let mine = kube::api::ListParams::default().labels(&format!("{REPORT_LABEL}={replica}"));
    maps.list_metadata(&mine).await.map_or(0, |l| l.items.len())
}

fn proxy_counts(r: &TrafficRoute) -> (i32, i32, i32) {
    let counts = r.status.as_ref().and_then(|s| s.proxies.clone());
    counts.map_or((0, 0, 0), |c| (c.affected, c.acked, c.nacked))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_judge_the_whole_fleet_and_forget_a_dead_one() {
    let Some(sc) = scene("fleet").await else {
        return;
    };
    if !cluster::is_stub() {
        eprintln!("skipped: pods are made ready by hand only on the stub cluster");
        return;
    }
    let (client, services, routes) = (&sc.client, &sc.services, &sc.routes);
    let pp = PostParams::default();
    services
        .create(&pp, &service("api", 28_082))
        .await
        .expect("api");
    for (name, ip) in [("client-a", "127.1.202.2"), ("client-b", "127.1.202.3")] {
        running_client(client, &sc.ns, name, ip).await;
    }
    own_namespace_only(client, &sc.ns).await;
    let lease = |identity: &str| short_lease(&sc.ns, identity);
    // What a previous run of replica-a left: a shard beyond what it writes now, for a proxy
    // long gone. The new run deletes it rather than let it speak for replica-a.
    let maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), &sc.ns);
    let left: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "remora-controller-proxies-replica-a-7",
                     "labels": {REPORT_LABEL: "replica-a"}},
        "data": {"replica": "replica-a", "renewed": "2030-01-01T00:00:00Z",
                 "proxies": r#"{"messages":[],"proxies":[{"p":"x/ghost","m":"sotw","c":0,"t":{}}]}"#}
    }))
    .expect("a ConfigMap");
    maps.create(&pp, &left)
        .await
        .expect("the left-behind report");
    let a = start(client, Some(lease("replica-a"))).await;
    let b = start(client, Some(lease("replica-b"))).await;
    eventually(20, "one leader", async || {
        (a.is_leader() != b.is_leader()).then_some(())
    })
    .await;
    eventually(10, "the left-behind report deleted", async || {
        maps.get_opt("remora-controller-proxies-replica-a-7")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let ((leader, leader_name), (follower, follower_name)) = if a.is_leader() {
        ((a, "replica-a"), (b, "replica-b"))
    } else {
        ((b, "replica-b"), (a, "replica-a"))
    };
    // client-a's proxy on the follower (it sorts first: the NACK the route names is its own).
    let key = |pod: &str| ObjectKey::new(&sc.ns, pod);
    let lower = support::LOWER_REGEX_LIMIT;
    let on_follower =
        support::Envoy::start_with_regex_limit(key("client-a"), follower.xds_addr, false, lower)
            .await;
    let _on_leader =
        support::Envoy::start_with_regex_limit(key("client-b"), leader.xds_addr, true, lower).await;
    let rules = |path: &str| {
        serde_json::json!([{"name": "only", "matches": [{"path": {"type": "RegularExpression", "value": path}}],
                            "backendRefs": [{"name": "api", "port": 28_082}]}])
    };
    let api_route: TrafficRoute = serde_json::from_value(serde_json::json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "TrafficRoute",
        "metadata": {"name": "api"},
        "spec": {"parentRefs": [{"name": "api", "port": 28_082}], "http": rules("/v1/.*")}
    }))
    .expect("a TrafficRoute");
    routes.create(&pp, &api_route).await.expect("the route");
    // Other tests' pods may linger in namespaces being deleted: they count as affected, but
    // only these two proxies can answer.
    route_status(routes, "api", 1, "both proxies' ACKs", |r| {
        matches!(proxy_counts(r), (_, 2, 0))
    })
    .await;

    // Beyond the RE2 program size these proxies accept: the follower's proxy NACKs, and the
    // leader says so.
    set_rules(routes, "api", rules(support::BEYOND_LOWER_LIMIT)).await;
    let r = route_status(routes, "api", 2, "both proxies' NACKs", |r| {
        is(r, conditions::PROGRAMMED, "False", "RejectedByProxy") && proxy_counts(r).2 == 2
    })
    .await;
    let (_, _, message, _) = condition(&r, conditions::PROGRAMMED).expect("Programmed");
    assert!(
        message.contains(&format!("{}/client-a", sc.ns)),
        "{message}"
    );
    assert!(message.contains("program size"), "{message}");

    // Either replica lists the whole fleet, each proxy once, with the replica serving it.
    let fleet = vec![
        ("client-a".to_owned(), follower_name.to_owned()),
        ("client-b".to_owned(), leader_name.to_owned()),
    ];
    for replica in [&leader, &follower] {
        let all = eventually(10, "the whole fleet listed", async || {
            let all = listed(replica, &sc.ns).await;
            (all == fleet).then_some(all)
        })
        .await;
        assert_eq!(all, fleet);
    }
    // The same through `remora proxy-status`, as an operator runs it against one replica.
    let out = std::process::Command::new(support::pods::container::remora_bin())
        .arg("proxy-status")
        .args(["--server", &follower.xds_addr.to_string(), "-n", &sc.ns])
        .output()
        .expect("remora runs");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<(String, String)> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let pod = cols.first()?.strip_prefix(&format!("{}/", sc.ns))?;
            Some((pod.to_owned(), (*cols.get(7)?).to_owned()))
        })
        .collect();
    assert_eq!(rows, fleet, "{text}");

    // The follower crashes; its proxy reconnects to the leader.
    assert!(reports(client, &sc.ns, follower_name).await > 0);
    drop(follower);
    drop(on_follower);
    let _moved = support::Envoy::start(key("client-a"), leader.xds_addr, false).await;
    set_rules(routes, "api", rules("/v2/.*")).await;
    route_status(routes, "api", 3, "both ACKs, once each", |r| {
        matches!(proxy_counts(r), (_, 2, 0))
    })
    .await;
    let moved = vec![
        ("client-a".to_owned(), leader_name.to_owned()),
        ("client-b".to_owned(), leader_name.to_owned()),
    ];
    assert_eq!(listed(&leader, &sc.ns).await, moved);
    eventually(15, "the dead replica's reports deleted", async || {
        (reports(client, &sc.ns, follower_name).await == 0).then_some(())
    })
    .await;
    assert!(reports(client, &sc.ns, leader_name).await > 0);
    leader.stop().await;
    assert_eq!(
        reports(client, &sc.ns, leader_name).await,
        0,
        "a replica that stops withdraws its reports"
    );
}

/// A ReferenceGrant in `namespace` for the TrafficRoutes of `from`, to every Service.
fn grant(namespace: &str, from: &str) -> DynamicObject {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "ReferenceGrant",
        "metadata": {"name": "routes", "namespace": namespace},
        "spec": {"from": [{"group": "remora.dev", "kind": "TrafficRoute", "namespace": from}],
                 "to": [{"group": "", "kind": "Service"}]}
    }))
    .expect("a ReferenceGrant")
}

/// Gateway API installed after the controller started: it finds ReferenceGrants without a
/// restart, with the chart's RBAC. A route's backend in another namespace is refused until
/// a grant there admits it, and again once the grant goes; a consumer route and the
/// producer route on one Service both stand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_grants_are_found_once_gateway_api_is_installed() {
    let Some(sc) = scene("team-a").await else {
        return;
    };
    let (client, routes) = (&sc.client, &sc.routes);
    let pp = PostParams::default();
    let absent_at_start = cluster::remove_gateway_stand_ins(client).await;
    assert!(
        absent_at_start || !cluster::is_stub(),
        "the stub cluster has no Gateway API of its own"
    );
    let other = cluster::test_namespace(client, "team-b").await;
    let services: Api<Service> = Api::namespaced(client.clone(), &other);
    services
        .create(&pp, &service("api", 80))
        .await
        .expect("api");
    let release = format!("r-{}", sc.ns);
    let as_chart = cluster::client_with_chart_rbac(client, &release, &sc.ns).await;
    let controller = start(&as_chart, None).await;

    let mut cross = route("web-to-api", "web", &[]);
    cross.spec.http[0].backend_refs =
        serde_json::from_value(serde_json::json!([{"name": "api", "namespace": other}]))
            .expect("a backend");
    routes.create(&pp, &cross).await.expect("the route");
    let refused = |r: &TrafficRoute| is(r, conditions::RESOLVED_REFS, "False", "RefNotPermitted");
    let r = route_status(routes, "web-to-api", 1, "RefNotPermitted", refused).await;
    let (_, _, message, _) = condition(&r, conditions::RESOLVED_REFS).expect("ResolvedRefs");
    assert!(
        message.contains(&format!(
            "no ReferenceGrant in {other} admits TrafficRoutes from {}",
            sc.ns
        )),
        "{message}"
    );

    if absent_at_start {
        cluster::install_gateway_stand_ins(client).await;
    }
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "ReferenceGrant"),
        "referencegrants",
    );
    let grants: Api<DynamicObject> = Api::namespaced_with(client.clone(), &other, &resource);
    grants
        .create(&pp, &grant(&other, &sc.ns))
        .await
        .expect("the grant");
    let resolved = |r: &TrafficRoute| is(r, conditions::RESOLVED_REFS, "True", "Resolved");
    route_status(routes, "web-to-api", 1, "the grant found", resolved).await;

    // A producer route in team-b and team-a's consumer route on the same Service: neither
    // conflicts with the other.
    let team_b: Api<TrafficRoute> = Api::namespaced(client.clone(), &other);
    team_b
        .create(&pp, &route("api", "api", &[("api", 1)]))
        .await
        .expect("the producer route");
    let mut consumer = route("my-api", "api", &[]);
    consumer.spec.parent_refs[0].namespace = Some(other.clone());
    consumer.spec.http[0].backend_refs =
        serde_json::from_value(serde_json::json!([{"name": "api", "namespace": other}]))
            .expect("a backend");
    routes
        .create(&pp, &consumer)
        .await
        .expect("the consumer route");
    for (api, name) in [(&team_b, "api"), (routes, "my-api")] {
        route_status(api, name, 1, "both routes resolved", resolved).await;
    }

    grants
        .delete("routes", &Default::default())
        .await
        .expect("the grant deleted");
    route_status(routes, "web-to-api", 1, "the grant revoked", refused).await;

    controller.stop().await;
    if absent_at_start {
        cluster::remove_gateway_stand_ins(client).await;
    }
}

/// Our entry for `parent` (a Service name) in an HTTPRoute's `status.parents`, once its
/// conditions describe generation `generation` and `check` holds for it.
async fn http_parent(
    api: &Api<DynamicObject>,
    name: &str,
    parent: &str,
    generation: i64,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> DynamicObject {
    eventually(30, what, async || {
        let route = api.get(name).await.ok()?;
        let parents = route.data.pointer("/status/parents")?.as_array()?;
        let ours = parents.iter().find(|p| {
            p["controllerName"] == "remora.dev/mesh" && p["parentRef"]["name"] == parent
        })?;
        let conditions = ours["conditions"].as_array()?;
        let current = conditions
            .iter()
            .all(|c| c["observedGeneration"] == generation);
        (current && check(ours)).then_some(route.clone())
    })
    .await
}

/// A condition of a `status.parents` entry, as (status, reason).
fn parent_condition(entry: &serde_json::Value, type_: &str) -> (String, String) {
    let c = entry["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .cloned()
        .unwrap_or_default();
    let text = |f: &str| c[f].as_str().unwrap_or_default().to_owned();
    (text("status"), text("reason"))
}

/// An HTTPRoute and a TrafficRoute on one Service port: the older governs, the HTTPRoute's
/// `status.parents` entry says `Conflicted` and names it, and another controller's entry
/// stays. Once the TrafficRoute goes, the HTTPRoute is accepted; a backend in another
/// namespace without a grant is `RefNotPermitted` there. A GRPCRoute on the same port then
/// governs it, and both say so. Written with the chart's RBAC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_route_status_is_in_gateway_apis_shape() {
    let Some(sc) = scene("httproute").await else {
        return;
    };
    let (client, routes) = (&sc.client, &sc.routes);
    let pp = PostParams::default();
    let absent_at_start = cluster::remove_gateway_stand_ins(client).await;
    if absent_at_start {
        cluster::install_gateway_stand_ins(client).await;
    }
    let release = format!("r-{}", sc.ns);
    let as_chart = cluster::client_with_chart_rbac(client, &release, &sc.ns).await;
    let controller = start(&as_chart, None).await;

    routes
        .create(&pp, &route("split", "web", &[("web", 1)]))
        .await
        .expect("the TrafficRoute");
    route_status(routes, "split", 1, "the TrafficRoute resolved", |r| {
        is(r, conditions::RESOLVED_REFS, "True", "Resolved")
    })
    .await;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    );
    let http: Api<DynamicObject> = Api::namespaced_with(client.clone(), &sc.ns, &resource);
    let web: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "web", "port": 80},
                                {"name": "edge"}],
                 "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}
    }))
    .expect("an HTTPRoute");
    http.create(&pp, &web).await.expect("the HTTPRoute");
    let foreign = serde_json::json!({
        "parentRef": {"name": "edge"}, "controllerName": "example.com/gateway",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                        "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    });
    http.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {"parents": [foreign]}})),
    )
    .await
    .expect("another controller's entry");

    let conflicted = |p: &serde_json::Value| {
        parent_condition(p, "Accepted") == ("False".into(), "Conflicted".into())
            && p.to_string()
                .contains(&format!("routed by {}/split (older)", sc.ns))
    };
    let written = http_parent(
        &http,
        "web",
        "web",
        1,
        "Conflicted in status.parents",
        conflicted,
    )
    .await;
    let parents = written.data["status"]["parents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        parents
            .iter()
            .any(|p| p["controllerName"] == "example.com/gateway"),
        "another controller's entry stays: {parents:#?}"
    );
    assert_eq!(
        parents.len(),
        2,
        "one entry of ours, for the Service parent: {parents:#?}"
    );
    let governing = format!(
        "route httproute:{}/web on Service {}/web port 80",
        sc.ns, sc.ns
    );
    route_status(
        routes,
        "split",
        1,
        "the TrafficRoute to say it governs",
        |r| {
            is(r, conditions::RESOLVED_REFS, "True", "Resolved")
                && condition(r, conditions::ACCEPTED)
                    .is_some_and(|(_, _, m, _)| m.contains(&governing))
        },
    )
    .await;

    routes
        .delete("split", &Default::default())
        .await
        .expect("the TrafficRoute deleted");
    http_parent(&http, "web", "web", 1, "the HTTPRoute accepted", |p| {
        parent_condition(p, "Accepted") == ("True".into(), "Accepted".into())
            && parent_condition(p, "ResolvedRefs") == ("True".into(), "ResolvedRefs".into())
    })
    .await;

    let other = cluster::test_namespace(client, "elsewhere").await;
    let services: Api<Service> = Api::namespaced(client.clone(), &other);
    services
        .create(&pp, &service("api", 80))
        .await
        .expect("api");
    http.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"rules": [
            {"backendRefs": [{"name": "api", "namespace": other, "port": 80}]}
        ]}})),
    )
    .await
    .expect("the HTTPRoute edited");
    http_parent(
        &http,
        "web",
        "web",
        2,
        "RefNotPermitted in status.parents",
        |p| parent_condition(p, "ResolvedRefs") == ("False".into(), "RefNotPermitted".into()),
    )
    .await;

    // A GRPCRoute on the same parent goes first, however new; on this HTTP/1 port it says
    // how to fix the port. Its second parent is in a namespace not in the mesh (another
    // mesh's, say): that entry is not ours to write.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let outside = namespaces
        .create(
            &pp,
            &serde_json::from_value(serde_json::json!({"metadata": {"generateName": "outside-"}}))
                .expect("a Namespace"),
        )
        .await
        .expect("a namespace outside the mesh")
        .metadata
        .name
        .expect("the server names it");
    Api::<Service>::namespaced(client.clone(), &outside)
        .create(&pp, &service("api", 80))
        .await
        .expect("api outside");
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "GRPCRoute"),
        "grpcroutes",
    );
    let grpc: Api<DynamicObject> = Api::namespaced_with(client.clone(), &sc.ns, &resource);
    let rpc: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
        "metadata": {"name": "web"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "web", "port": 80},
                                {"group": "", "kind": "Service", "name": "api", "namespace": outside, "port": 80}],
                 "rules": [{"matches": [{"method": {"service": "shop.v1.Orders"}}],
                            "backendRefs": [{"name": "web", "port": 80}]}]}
    }))
    .expect("a GRPCRoute");
    grpc.create(&pp, &rpc).await.expect("the GRPCRoute");
    let written = http_parent(
        &grpc,
        "web",
        "web",
        1,
        "the GRPCRoute's status.parents",
        |p| {
            parent_condition(p, "Accepted") == ("True".into(), "Accepted".into())
                && parent_condition(p, "ResolvedRefs")
                    == ("False".into(), "UnsupportedProtocol".into())
        },
    )
    .await;
    let parents = written.data["status"]["parents"].as_array().cloned();
    assert_eq!(
        parents.as_ref().map(Vec::len),
        Some(1),
        "no entry for the Service outside the mesh: {parents:#?}"
    );
    let outranked = format!("routed by grpcroute:{}/web (a GRPCRoute", sc.ns);
    http_parent(&http, "web", "web", 2, "the HTTPRoute Conflicted", |p| {
        parent_condition(p, "Accepted") == ("False".into(), "Conflicted".into())
            && p.to_string().contains(&outranked)
    })
    .await;

    controller.stop().await;
    namespaces
        .delete(&outside, &Default::default())
        .await
        .expect("the namespace outside the mesh deleted");
    if absent_at_start {
        cluster::remove_gateway_stand_ins(client).await;
    }
}

/// A real Envoy NACKs an HTTPRoute's config (a regex beyond the program size it accepts):
/// the route's `status.parents` entry says so in `remora.dev/Programmed`, in Envoy's words,
/// naming the proxy; fixed, it is programmed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_routes_nack_shows_in_its_parent_status() {
    let Some(sc) = scene("httpnack").await else {
        return;
    };
    if !cluster::is_stub() {
        eprintln!("skipped: pods are made ready by hand only on the stub cluster");
        return;
    }
    let client = &sc.client;
    let absent_at_start = cluster::remove_gateway_stand_ins(client).await;
    if absent_at_start {
        cluster::install_gateway_stand_ins(client).await;
    }
    own_namespace_only(client, &sc.ns).await;
    running_client(client, &sc.ns, "client", "127.1.203.2").await;
    let controller = start(client, None).await;
    let envoy = support::Envoy::start_with_regex_limit(
        ObjectKey::new(&sc.ns, "client"),
        controller.xds_addr,
        true,
        support::LOWER_REGEX_LIMIT,
    )
    .await;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    );
    let http: Api<DynamicObject> = Api::namespaced_with(client.clone(), &sc.ns, &resource);
    let route = |path: &str| -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web"},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "web", "port": 80}],
                     "rules": [{"matches": [{"path": {"type": "RegularExpression", "value": path}}]}]}
        }))
        .expect("an HTTPRoute")
    };
    let programmed = |p: &serde_json::Value| {
        parent_condition(p, "remora.dev/Programmed") == ("True".into(), "Programmed".into())
    };
    http.create(&PostParams::default(), &route("/v1/.*"))
        .await
        .expect("the HTTPRoute");
    http_parent(&http, "web", "web", 1, "Programmed", programmed).await;

    let broken = route(support::BEYOND_LOWER_LIMIT);
    http.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": broken.data["spec"]})),
    )
    .await
    .expect("the HTTPRoute edited");
    let nacked = http_parent(&http, "web", "web", 2, "the proxy's NACK", |p| {
        parent_condition(p, "remora.dev/Programmed") == ("False".into(), "RejectedByProxy".into())
    })
    .await;
    let entry = nacked.data["status"]["parents"].to_string();
    assert!(entry.contains("program size"), "Envoy's words: {entry}");
    assert!(
        entry.contains(&format!("{}/client", sc.ns)),
        "the proxy: {entry}"
    );

    http.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": route("/v2/.*").data["spec"]})),
    )
    .await
    .expect("the HTTPRoute fixed");
    http_parent(&http, "web", "web", 3, "Programmed again", programmed).await;

    drop(envoy);
    remove_client(client, &sc.ns, "client").await;
    controller.stop().await;
    if absent_at_start {
        cluster::remove_gateway_stand_ins(client).await;
    }
}

/// GAMMA's producer and consumer routes on the real API server, seen in real Envoys' config:
/// a route in one namespace on another namespace's Service is a consumer route, programmed
/// into its own namespace's proxies only, and the Service's own namespace's proxies keep the
/// Service's routing; the same route in the Service's namespace is a producer route, which
/// every proxy takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_route_reaches_only_its_namespaces_proxies() {
    let Some(sc) = scene("consumer").await else {
        return;
    };
    if !cluster::is_stub() {
        eprintln!("skipped: pods are made ready by hand only on the stub cluster");
        return;
    }
    let (client, pp) = (&sc.client, PostParams::default());
    let owner = cluster::test_namespace(client, "owner").await;
    Api::<Service>::namespaced(client.clone(), &owner)
        .create(&pp, &service("api", 80))
        .await
        .expect("api");
    running_client(client, &sc.ns, "client", "127.1.204.2").await;
    running_client(client, &owner, "client", "127.1.204.3").await;
    let controller = start(client, None).await;
    let mut envoys = Vec::new();
    for ns in [&sc.ns, &owner] {
        let proxy = ObjectKey::new(ns, "client");
        envoys.push(support::Envoy::start(proxy, controller.xds_addr, true).await);
    }
    let consumer: TrafficRoute = serde_json::from_value(serde_json::json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "TrafficRoute",
        "metadata": {"name": "mine"},
        "spec": {"parentRefs": [{"name": "api", "namespace": owner, "port": 80}],
                 "http": [{"name": "all", "backendRefs": [{"name": "api", "namespace": owner}]}]}
    }))
    .expect("a TrafficRoute");
    sc.routes
        .create(&pp, &consumer)
        .await
        .expect("the consumer route");
    route_status(
        &sc.routes,
        "mine",
        1,
        "the consumer route programmed",
        |r| is(r, conditions::PROGRAMMED, "True", "Programmed"),
    )
    .await;

    let rule = format!("{}/mine/all", sc.ns);
    let routes_of = async |envoy: &support::Envoy| {
        let dump = "/config_dump?resource=dynamic_route_configs";
        support::get(envoy.admin, "localhost", dump, &[])
            .await
            .map(|r| r.body)
            .unwrap_or_default()
    };
    eventually(
        20,
        "the consumer's proxy to route by its rule",
        async || routes_of(&envoys[0]).await.contains(&rule).then_some(()),
    )
    .await;
    let owners = routes_of(&envoys[1]).await;
    assert!(
        owners.contains(&format!("outbound|80||api.{owner}.svc.cluster.local"))
            && !owners.contains(&rule),
        "the Service's own namespace keeps the Service's routing: {owners}"
    );
    let counts = sc
        .routes
        .get_status("mine")
        .await
        .expect("the route")
        .status
        .and_then(|s| s.proxies)
        .expect("proxy counts");
    assert_eq!(counts.affected, 1, "only the consumer's namespace's proxy");

    let producer: TrafficRoute = serde_json::from_value(serde_json::json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "TrafficRoute",
        "metadata": {"name": "theirs"},
        "spec": {"parentRefs": [{"name": "api", "port": 80}],
                 "http": [{"name": "all", "backendRefs": [{"name": "api"}]}]}
    }))
    .expect("a TrafficRoute");
    sc.routes
        .delete("mine", &Default::default())
        .await
        .expect("the consumer route deleted");
    Api::<TrafficRoute>::namespaced(client.clone(), &owner)
        .create(&pp, &producer)
        .await
        .expect("the producer route");
    let rule = format!("{owner}/theirs/all");
    eventually(
        20,
        "both proxies to route by the producer's rule",
        async || {
            for envoy in &envoys {
                if !routes_of(envoy).await.contains(&rule) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;

    drop(envoys);
    remove_client(client, &sc.ns, "client").await;
    remove_client(client, &owner, "client").await;
    controller.stop().await;
}

/// A meshed pod `name` at `ip` serving HTTP on a declared port (8080), so its proxy has an
/// inbound listener for access policies to protect.
async fn running_server(client: &Client, ns: &str, name: &str, ip: &str) {
    let pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "client"}},
        "spec": {"containers": [
            {"name": "app", "image": "example.invalid/server:1",
             "ports": [{"name": "http", "containerPort": 8080}]},
            {"name": "remora-proxy", "image": "example.invalid/remora-proxy:1.40.0"}]}
    }))
    .expect("a Pod");
    cluster::create_pod(client, ns, &pod).await;
    cluster::run_pod(client, ns, name, ip).await;
}

/// An access policy whose rules a real Envoy refuses (a header regex beyond its lower limit)
/// says so in `Programmed`, in Envoy's words, while the proxy keeps the last good rules; the
/// fix is programmed again. `Accepted`, `ResolvedRefs` and the workload count come from the
/// model on the real API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_policys_nack_keeps_the_last_good_rules_and_shows_in_status() {
    let Some(sc) = scene("accessnack").await else {
        return;
    };
    if !cluster::is_stub() {
        eprintln!("skipped: pods are made ready by hand only on the stub cluster");
        return;
    }
    let client = &sc.client;
    own_namespace_only(client, &sc.ns).await;
    running_server(client, &sc.ns, "server", "127.1.205.2").await;
    let controller = start(client, None).await;
    let envoy = support::Envoy::start_with_regex_limit(
        ObjectKey::new(&sc.ns, "server"),
        controller.xds_addr,
        true,
        support::LOWER_REGEX_LIMIT,
    )
    .await;
    let policies: Api<AccessPolicy> = Api::namespaced(client.clone(), &sc.ns);
    let spec = |tenant: &str| {
        serde_json::json!({"selector": {"matchLabels": {"app": "client"}},
            "rules": [{"name": "tenants", "action": "Deny",
                       "from": [{"serviceAccounts": ["nobody"]}],
                       "to": {"http": {"headers": [{"name": "x-tenant", "type": "RegularExpression", "value": tenant}]}}}]})
    };
    let policy: AccessPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": "server"}, "spec": spec("a|b"),
    }))
    .expect("an AccessPolicy");
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("the AccessPolicy");
    let condition = |p: &AccessPolicy, type_: &str| {
        let c = p
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)?;
        Some((c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let at = async |generation: i64, what: &str, check: &dyn Fn(&AccessPolicy) -> bool| {
        eventually(30, what, async || {
            let p = policies.get("server").await.ok()?;
            let observed = p.status.as_ref()?.observed_generation;
            (observed == Some(generation) && check(&p)).then_some(p)
        })
        .await
    };
    let programmed = |p: &AccessPolicy| {
        condition(p, "Programmed").is_some_and(|(s, r, _)| s == "True" && r == "Programmed")
    };
    let first = at(1, "Programmed", &programmed).await;
    assert_eq!(first.status.as_ref().and_then(|s| s.workloads), Some(1));
    let (status, reason, message) = condition(&first, "ResolvedRefs").expect("ResolvedRefs");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "UnknownServiceAccounts")
    );
    assert!(message.contains("nobody"), "{message}");
    // HTTP rules ride with the routes, so that an edit reaches open connections.
    let routes = async || {
        let dump = "/config_dump?resource=dynamic_route_configs";
        support::get(envoy.admin, "localhost", dump, &[])
            .await
            .map(|r| r.body)
            .unwrap_or_default()
    };
    eventually(20, "the rules in the proxy's inbound routes", async || {
        routes().await.contains("a|b").then_some(())
    })
    .await;

    let edit = |tenant: &str| serde_json::json!({"spec": spec(tenant)});
    policies
        .patch(
            "server",
            &PatchParams::default(),
            &Patch::Merge(edit(support::BEYOND_LOWER_LIMIT)),
        )
        .await
        .expect("the policy edited");
    let nacked = at(2, "the proxy's NACK", &|p| {
        condition(p, "Programmed").is_some_and(|(s, r, _)| s == "False" && r == "RejectedByProxy")
    })
    .await;
    let (_, _, message) = condition(&nacked, "Programmed").expect("Programmed");
    assert!(message.contains("program size"), "Envoy's words: {message}");
    assert!(
        message.contains(&format!("{}/server", sc.ns)),
        "the proxy: {message}"
    );
    let running = routes().await;
    assert!(
        running.contains("a|b"),
        "the last good rules stay: {running}"
    );

    policies
        .patch(
            "server",
            &PatchParams::default(),
            &Patch::Merge(edit("c|d")),
        )
        .await
        .expect("the policy fixed");
    at(3, "Programmed again", &programmed).await;
    eventually(
        20,
        "the fixed rules in the proxy's inbound routes",
        async || routes().await.contains("c|d").then_some(()),
    )
    .await;

    drop(envoy);
    remove_client(client, &sc.ns, "server").await;
    controller.stop().await;
}

/// What audit rules would have denied reaches the leader's status whichever replica the
/// proxy reports to: a proxy's access log stream to the follower (sent here as Envoy sends
/// it) is counted there, shared through the follower's audit report, and written by the
/// leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_counts_reported_to_a_follower_reach_the_leaders_status() {
    use envoy_types::pb::{
        envoy::{
            config::core::v3::{Metadata, Node},
            data::accesslog::v3::{AccessLogCommon, HttpAccessLogEntry},
            service::accesslog::v3::{
                StreamAccessLogsMessage,
                access_log_service_client::AccessLogServiceClient,
                stream_access_logs_message::{HttpAccessLogEntries, Identifier, LogEntries},
            },
        },
        google::protobuf::{Struct, Value, value::Kind},
    };
    use remora_envoy::audit::{DENIED, RBAC_METADATA, SHADOW_DENY_POLICY, SHADOW_DENY_RESULT};

    let Some(sc) = scene("auditha").await else {
        return;
    };
    let client = &sc.client;
    let lease = |identity: &str| short_lease(&sc.ns, identity);
    let a = start(client, Some(lease("replica-a"))).await;
    let b = start(client, Some(lease("replica-b"))).await;
    eventually(20, "one leader", async || {
        (a.is_leader() != b.is_leader()).then_some(())
    })
    .await;
    let follower = if a.is_leader() { &b } else { &a };
    let policies: Api<AccessPolicy> = Api::namespaced(client.clone(), &sc.ns);
    let policy: AccessPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": "trial"},
        "spec": {"mode": "Audit", "rules": [{"name": "everyone", "action": "Deny"}]}
    }))
    .expect("an AccessPolicy");
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("the AccessPolicy");

    const SENT: usize = 5;
    let string = |s: &str| Value {
        kind: Some(Kind::StringValue(s.into())),
    };
    let rule = format!("{}/trial/everyone", sc.ns);
    let entry = HttpAccessLogEntry {
        common_properties: Some(AccessLogCommon {
            metadata: Some(Metadata {
                filter_metadata: [(
                    RBAC_METADATA[0].to_owned(),
                    Struct {
                        fields: [
                            (SHADOW_DENY_RESULT.to_owned(), string(DENIED)),
                            (SHADOW_DENY_POLICY.to_owned(), string(&rule)),
                        ]
                        .into(),
                    },
                )]
                .into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let message = StreamAccessLogsMessage {
        identifier: Some(Identifier {
            node: Some(Node {
                id: format!("{}/server", sc.ns),
                ..Default::default()
            }),
            log_name: remora_envoy::audit::LOG_NAME.into(),
        }),
        log_entries: Some(LogEntries::HttpLogs(HttpAccessLogEntries {
            log_entry: vec![entry; SENT],
        })),
    };
    let mut als = AccessLogServiceClient::connect(format!("http://{}", follower.xds_addr))
        .await
        .expect("the follower's port");
    als.stream_access_logs(tokio_stream::iter([message]))
        .await
        .expect("the entries taken");

    let audit = eventually(
        30,
        "the follower's counts in the leader's status",
        async || {
            let status = policies.get("trial").await.ok()?.status?;
            (!status.audit.is_empty()).then_some(status.audit)
        },
    )
    .await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(
        (
            audit[0].rule.as_str(),
            audit[0].source.as_str(),
            audit[0].requests
        ),
        ("everyone", "unauthenticated", SENT as i64)
    );
    a.stop().await;
    b.stop().await;
}
