//! Traffic through real Envoys, configured by the control plane in local mode, checked by
//! where real HTTP requests land. Every scenario runs in both xDS modes.

mod support;

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use remora_model::input::ObjectKey;
use remora_xds::snapshot::{ENDPOINT, ROUTE};
use support::*;

/// The mesh every scenario shares: a client pod with a sidecar, and a `reviews` Service
/// with two plain pods, v1 and v2, on the test's own loopback subnet.
fn mesh(s: u8) -> String {
    let (v1, v2, client, svc) = (ip(s, 12, 1), ip(s, 12, 2), ip(s, 11, 1), ip(s, 10, 2));
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: demo, labels: {{remora.dev/mesh: enabled}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: demo}}
spec: {{clusterIP: {svc}, ports: [{{name: http, port: 9080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: reviews-1, namespace: demo, labels: {{kubernetes.io/service-name: reviews}}}}
addressType: IPv4
ports: [{{name: http, port: 9080}}]
endpoints:
  - {{addresses: ["{v1}"], targetRef: {{kind: Pod, name: reviews-v1}}}}
  - {{addresses: ["{v2}"], targetRef: {{kind: Pod, name: reviews-v2}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: reviews-v1, namespace: demo, labels: {{app: reviews, version: v1}}}}
spec: {{containers: [{{name: app}}]}}
status: {{podIP: "{v1}"}}
---
apiVersion: v1
kind: Pod
metadata: {{name: reviews-v2, namespace: demo, labels: {{app: reviews, version: v2}}}}
spec: {{containers: [{{name: app}}]}}
status: {{podIP: "{v2}"}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: demo}}
spec: {{containers: [{{name: app}}, {{name: remora-proxy}}]}}
status: {{podIP: "{client}"}}
"#
    )
}

fn route(http: &str) -> String {
    format!(
        "apiVersion: remora.dev/v1alpha1\nkind: TrafficRoute\nmetadata: {{name: reviews, namespace: demo}}\n\
         spec:\n  parentRefs: [{{name: reviews, port: 9080}}]\n  http:\n{http}"
    )
}

fn split(v1: u32, v2: u32) -> String {
    route(&format!(
        "    - name: split\n      backendRefs:\n\
         \x20       - {{name: reviews, subset: {{version: v1}}, weight: {v1}}}\n\
         \x20       - {{name: reviews, subset: {{version: v2}}, weight: {v2}}}\n"
    ))
}

struct Scene {
    cp: ControlPlane,
    // Held so the processes and servers live as long as the scene.
    _envoy: Envoy,
    v1: Upstream,
    _v2: Upstream,
    /// The client's sidecar, where it sends traffic for reviews.
    entry: SocketAddr,
    proxy: ObjectKey,
}

async fn scene(s: u8, delta: bool, route: String, v1: Behaviour, v2: Behaviour) -> Scene {
    let limit = remora_api::ValidationSettings::default().max_regex_program_size;
    scene_with_regex_limit(s, delta, route, v1, v2, limit).await
}

/// A scene whose proxy refuses regexes with an RE2 program larger than `limit`.
async fn scene_with_regex_limit(
    s: u8,
    delta: bool,
    route: String,
    v1: Behaviour,
    v2: Behaviour,
    limit: u32,
) -> Scene {
    let v1 = Upstream::start("v1", SocketAddr::new(ip(s, 12, 1), 9080), v1).await;
    let v2 = Upstream::start("v2", SocketAddr::new(ip(s, 12, 2), 9080), v2).await;
    let cp = ControlPlane::start(&[("mesh.yaml", mesh(s)), ("route.yaml", route)]).await;
    let proxy = ObjectKey::new("demo", "client");
    let envoy = Envoy::start_with_regex_limit(proxy.clone(), cp.addr, delta, limit).await;
    cp.synced(&proxy).await;
    let entry = SocketAddr::new(ip(s, 11, 1), 9080);
    eventually(20, "the outbound listener to answer", async || {
        get(entry, "reviews", "/", &[])
            .await
            .ok()
            .filter(|r| r.status == 200)
    })
    .await;
    Scene {
        cp,
        _envoy: envoy,
        v1,
        _v2: v2,
        entry,
        proxy,
    }
}

impl Scene {
    fn route_version(&self) -> Option<String> {
        self.cp
            .running()
            .status
            .get(&self.proxy)?
            .types
            .get(ROUTE)?
            .acked
            .clone()
    }

    /// Rewrites the route and waits until the proxy ACKed the new route config.
    async fn change_route(&self, text: &str) {
        let before = self.route_version();
        self.cp.write("route.yaml", text);
        eventually(20, "the new route to be ACKed", async || {
            (self.route_version() != before).then_some(())
        })
        .await;
        self.cp.synced(&self.proxy).await;
    }

    /// Writes a route that is valid for the schema and for validate(), but beyond the RE2
    /// program size a proxy of [`scene_with_regex_limit`] at [`LOWER_REGEX_LIMIT`] accepts, and
    /// waits for that proxy's NACK.
    async fn refuse_an_oversized_route(&self) -> remora_xds::sync::Nack {
        let too_big = route(&format!(
            "    - name: huge\n      matches: [{{path: {{type: RegularExpression, value: \"{BEYOND_LOWER_LIMIT}\"}}}}]\n\
             \x20     backendRefs: [{{name: reviews, subset: {{version: v2}}}}]\n\
             \x20   - name: split\n      backendRefs: [{{name: reviews, subset: {{version: v2}}}}]\n",
        ));
        self.cp.write("route.yaml", &too_big);
        let status = self.cp.running().status.clone();
        eventually(20, "Envoy to reject the route", async || {
            let s = status.get(&self.proxy)?;
            let t = s.types.get(ROUTE)?;
            (t.state() == remora_xds::sync::SyncState::Nacked).then(|| t.nack.clone())?
        })
        .await
    }
}

/// 1,000 draws at p = 0.1 have a standard deviation of about 9.5: 5 of them is a bound a
/// correct split breaks about once in two million runs.
fn assert_share(counts: &std::collections::BTreeMap<String, usize>, who: &str, expected: usize) {
    let got = counts.get(who).copied().unwrap_or(0);
    let total: usize = counts.values().sum();
    assert_eq!(total, 1000, "{counts:?}");
    assert!(
        got.abs_diff(expected) <= 48,
        "{who}: {got} of 1000, expected about {expected}: {counts:?}"
    );
}

async fn weighted_split_and_live_change(s: u8, delta: bool) {
    let sc = scene(
        s,
        delta,
        split(90, 10),
        Behaviour::default(),
        Behaviour::default(),
    )
    .await;
    let counts = tally(sc.entry, "reviews", "/", &[], 1000).await;
    assert_share(&counts, "v2", 100);
    assert_share(&counts, "v1", 900);

    // The same Envoy process takes the change over xDS.
    sc.change_route(&split(30, 70)).await;
    let counts = tally(sc.entry, "reviews", "/", &[], 1000).await;
    assert_share(&counts, "v2", 700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_sotw() {
    weighted_split_and_live_change(21, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_delta() {
    weighted_split_and_live_change(22, true).await;
}

async fn matches_and_rewrite(s: u8, delta: bool) {
    let http = "    - name: testers\n      matches: [{headers: [{name: x-canary, value: always}]}]\n\
                \x20     backendRefs: [{name: reviews, subset: {version: v2}}]\n\
                \x20   - name: api\n      matches: [{path: {type: PathPrefix, value: /api}}]\n\
                \x20     rewrite: {path: {replacePrefixMatch: /v2api}}\n\
                \x20     backendRefs: [{name: reviews, subset: {version: v2}}]\n\
                \x20   - name: rest\n      backendRefs: [{name: reviews, subset: {version: v1}}]\n";
    let sc = scene(
        s,
        delta,
        route(http),
        Behaviour::default(),
        Behaviour::default(),
    )
    .await;
    let r = get(sc.entry, "reviews", "/", &[("x-canary", "always")])
        .await
        .expect("reply");
    assert_eq!(r.body, "v2 /");
    let r = get(sc.entry, "reviews", "/api/items?id=3", &[])
        .await
        .expect("reply");
    assert_eq!(r.body, "v2 /v2api/items?id=3");
    let r = get(sc.entry, "reviews", "/apiary", &[])
        .await
        .expect("reply");
    assert_eq!(r.body, "v1 /apiary", "a prefix matches whole path segments");
    let r = get(sc.entry, "reviews", "/other", &[("x-canary", "sometimes")])
        .await
        .expect("reply");
    assert_eq!(r.body, "v1 /other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_and_rewrite_sotw() {
    matches_and_rewrite(23, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_and_rewrite_delta() {
    matches_and_rewrite(24, true).await;
}

async fn resilience(s: u8, delta: bool) {
    let http = "    - name: flaky\n      matches: [{path: {type: PathPrefix, value: /flaky}}]\n\
                \x20     backendRefs: [{name: reviews, subset: {version: v1}}]\n\
                \x20     retry: {attempts: 2, retryOn: [5xx]}\n\
                \x20   - name: slow\n      matches: [{path: {type: PathPrefix, value: /slow}}]\n\
                \x20     backendRefs: [{name: reviews, subset: {version: v2}}]\n\
                \x20     timeouts: {request: 300ms}\n\
                \x20   - name: faulty\n      matches: [{path: {type: PathPrefix, value: /faulty}}]\n\
                \x20     backendRefs: [{name: reviews, subset: {version: v1}}]\n\
                \x20     retry: {attempts: 2, retryOn: [5xx]}\n\
                \x20     fault: {abort: {httpStatus: 418, percent: 30}}\n";
    let flaky = Behaviour {
        fail_every: Some(2),
        delay: None,
    };
    let slow = Behaviour {
        fail_every: None,
        delay: Some(Duration::from_secs(2)),
    };
    let sc = scene(s, delta, route(http), flaky, slow).await;

    let counts = tally(sc.entry, "reviews", "/flaky", &[], 50).await;
    assert_eq!(
        counts.get("v1"),
        Some(&50),
        "retries hide every other failure: {counts:?}"
    );
    assert!(sc.v1.served.load(std::sync::atomic::Ordering::SeqCst) >= 70);

    let started = std::time::Instant::now();
    let r = get(sc.entry, "reviews", "/slow", &[]).await.expect("reply");
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "{took:?}"
    );

    let counts = tally(sc.entry, "reviews", "/faulty", &[], 1000).await;
    // 30% of 1,000: standard deviation about 14.5.
    let aborted = counts.get("418").copied().unwrap_or(0);
    assert!(aborted.abs_diff(300) <= 73, "{counts:?}");
    assert_eq!(
        aborted + counts.get("v1").copied().unwrap_or(0),
        1000,
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resilience_sotw() {
    resilience(25, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resilience_delta() {
    resilience(26, true).await;
}

async fn rejected_config_keeps_the_previous_one(s: u8, delta: bool) {
    let sc = scene_with_regex_limit(
        s,
        delta,
        split(100, 0),
        Behaviour::default(),
        Behaviour::default(),
        LOWER_REGEX_LIMIT,
    )
    .await;
    let nack = sc.refuse_an_oversized_route().await;
    let proxy = sc.proxy.clone();
    assert!(
        nack.message.contains("program size"),
        "Envoy's own words: {}",
        nack.message
    );
    // Still the previous config: everything to v1, nothing to v2.
    let counts = tally(sc.entry, "reviews", "/", &[], 100).await;
    assert_eq!(counts.get("v1"), Some(&100), "{counts:?}");
    // The rejected version is not pushed again and again.
    let sent = sc.cp.resources_sent(&proxy, ROUTE);
    assert!(sent > 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sc.cp.resources_sent(&proxy, ROUTE), sent);

    // A fix goes through and clears the NACK.
    sc.change_route(&split(0, 100)).await;
    let counts = tally(sc.entry, "reviews", "/", &[], 100).await;
    assert_eq!(counts.get("v2"), Some(&100), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_config_sotw() {
    rejected_config_keeps_the_previous_one(27, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_config_delta() {
    rejected_config_keeps_the_previous_one(28, true).await;
}

async fn control_plane_restart(s: u8, delta: bool) {
    let mut sc = scene(
        s,
        delta,
        split(0, 100),
        Behaviour::default(),
        Behaviour::default(),
    )
    .await;
    sc.cp.stop().await;
    // Envoy keeps serving what it has while the control plane is away.
    let counts = tally(sc.entry, "reviews", "/", &[], 50).await;
    assert_eq!(counts.get("v2"), Some(&50), "{counts:?}");

    sc.cp.restart().await;
    sc.cp.synced(&sc.proxy).await;
    let status = sc.cp.running().status.get(&sc.proxy).expect("reconnected");
    for (type_url, t) in &status.types {
        assert_eq!(
            t.resources_sent, 0,
            "{type_url} was re-sent after the restart"
        );
    }
    let counts = tally(sc.entry, "reviews", "/", &[], 50).await;
    assert_eq!(counts.get("v2"), Some(&50), "{counts:?}");
    // And the new control plane still changes config.
    sc.change_route(&split(100, 0)).await;
    let counts = tally(sc.entry, "reviews", "/", &[], 50).await;
    assert_eq!(counts.get("v1"), Some(&50), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_restart_sotw() {
    control_plane_restart(29, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_restart_delta() {
    control_plane_restart(30, true).await;
}

/// A second Service, `ratings`, on another port: its own outbound listener and route config
/// on the client's sidecar. Each endpoint may name the pod it is.
fn ratings(s: u8, endpoints: &[(IpAddr, Option<&str>)]) -> String {
    let svc = ip(s, 10, 3);
    let listed: String = endpoints
        .iter()
        .map(|(a, pod)| match pod {
            Some(pod) => {
                format!("\n  - {{addresses: [\"{a}\"], targetRef: {{kind: Pod, name: {pod}}}}}")
            }
            None => format!("\n  - {{addresses: [\"{a}\"]}}"),
        })
        .collect();
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: ratings, namespace: demo}}
spec: {{clusterIP: {svc}, ports: [{{name: http, port: 9081}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: ratings-1, namespace: demo, labels: {{kubernetes.io/service-name: ratings}}}}
addressType: IPv4
ports: [{{name: http, port: 9081}}]
endpoints:{listed}
"#
    )
}

/// A response of routes or endpoints may carry only what changed; in state-of-the-world
/// mode Envoy must then keep the route configs and endpoints the response left out.
async fn a_change_to_one_service_leaves_the_others(s: u8, delta: bool) {
    let sc = scene(
        s,
        delta,
        split(100, 0),
        Behaviour::default(),
        Behaviour::default(),
    )
    .await;
    let (r1, r2) = (ip(s, 12, 3), ip(s, 12, 4));
    let _ratings_1 = Upstream::start("r1", SocketAddr::new(r1, 9081), Behaviour::default()).await;
    let _ratings_2 = Upstream::start("r2", SocketAddr::new(r2, 9081), Behaviour::default()).await;
    sc.cp.write("ratings.yaml", &ratings(s, &[(r1, None)]));
    let ratings_entry = SocketAddr::new(ip(s, 11, 1), 9081);
    eventually(20, "ratings to answer", async || {
        get(ratings_entry, "ratings", "/", &[])
            .await
            .ok()
            .filter(|r| r.status == 200)
    })
    .await;
    sc.cp.synced(&sc.proxy).await;
    let sent = |type_url: &str| sc.cp.resources_sent(&sc.proxy, type_url);

    // One route config changes: only it is sent, and ratings keeps its own.
    let routes_before = sent(ROUTE);
    sc.change_route(&split(0, 100)).await;
    assert_eq!(
        sent(ROUTE),
        routes_before + 1,
        "only the changed route config"
    );
    let counts = tally(sc.entry, "reviews", "/", &[], 50).await;
    assert_eq!(counts.get("v2"), Some(&50), "{counts:?}");
    let counts = tally(ratings_entry, "ratings", "/", &[], 50).await;
    assert_eq!(counts.get("r1"), Some(&50), "{counts:?}");

    // Ratings' endpoints change: only they are sent, and reviews keeps its endpoints.
    let endpoints_before = sent(ENDPOINT);
    sc.cp.write("ratings.yaml", &ratings(s, &[(r2, None)]));
    eventually(20, "ratings to move to r2", async || {
        get(ratings_entry, "ratings", "/", &[])
            .await
            .ok()
            .filter(|r| r.body.starts_with("r2"))
    })
    .await;
    sc.cp.synced(&sc.proxy).await;
    assert_eq!(
        sent(ENDPOINT),
        endpoints_before + 1,
        "only ratings' endpoints"
    );
    let counts = tally(sc.entry, "reviews", "/", &[], 50).await;
    assert_eq!(counts.get("v2"), Some(&50), "{counts:?}");
    let counts = tally(ratings_entry, "ratings", "/", &[], 50).await;
    assert_eq!(counts.get("r2"), Some(&50), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_to_one_service_leaves_the_others_sotw() {
    a_change_to_one_service_leaves_the_others(31, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_to_one_service_leaves_the_others_delta() {
    a_change_to_one_service_leaves_the_others(32, true).await;
}

/// `ratings` with a pod per version and a route that sends everything to `to`.
fn ratings_routed(s: u8, to: &str) -> String {
    let versions =
        [("r1", ip(s, 12, 3)), ("r2", ip(s, 12, 4))].map(|(v, a)| (v, a, format!("ratings-{v}")));
    let pods: String = versions
        .iter()
        .map(|(v, a, name)| {
            format!(
                "---\napiVersion: v1\nkind: Pod\n\
                 metadata: {{name: {name}, namespace: demo, labels: {{app: ratings, version: {v}}}}}\n\
                 spec: {{containers: [{{name: app}}]}}\nstatus: {{podIP: \"{a}\"}}\n"
            )
        })
        .collect();
    let endpoints: Vec<_> = versions
        .iter()
        .map(|(_, a, name)| (*a, Some(name.as_str())))
        .collect();
    format!(
        r#"{service}{pods}---
apiVersion: remora.dev/v1alpha1
kind: TrafficRoute
metadata: {{name: ratings, namespace: demo}}
spec:
  parentRefs: [{{name: ratings, port: 9081}}]
  http:
    - name: all
      backendRefs: [{{name: ratings, subset: {{version: {to}}}}}]
"#,
        service = ratings(s, &endpoints)
    )
}

/// A route config the proxy rejects stays its own problem: another Service's route config
/// changes and reaches the proxy, the rejected one is not sent again with it, and the
/// rejected Service keeps routing by the config the proxy had (README, "A config a proxy
/// rejects").
async fn a_rejected_route_config_blocks_no_other_service(s: u8, delta: bool) {
    let sc = scene_with_regex_limit(
        s,
        delta,
        split(100, 0),
        Behaviour::default(),
        Behaviour::default(),
        LOWER_REGEX_LIMIT,
    )
    .await;
    let (r1, r2) = (ip(s, 12, 3), ip(s, 12, 4));
    let _ratings_1 = Upstream::start("r1", SocketAddr::new(r1, 9081), Behaviour::default()).await;
    let _ratings_2 = Upstream::start("r2", SocketAddr::new(r2, 9081), Behaviour::default()).await;
    sc.cp.write("ratings.yaml", &ratings_routed(s, "r1"));
    let ratings_entry = SocketAddr::new(ip(s, 11, 1), 9081);
    eventually(20, "ratings to answer from r1", async || {
        get(ratings_entry, "ratings", "/", &[])
            .await
            .ok()
            .filter(|r| r.status == 200 && r.body.starts_with("r1"))
    })
    .await;
    sc.cp.synced(&sc.proxy).await;

    // Reviews' route config grows a regex beyond what this proxy takes: NACKed.
    sc.refuse_an_oversized_route().await;
    let status = sc.cp.running().status.clone();
    let proxy = sc.proxy.clone();
    let routes_before = sc.cp.resources_sent(&proxy, ROUTE);

    // Ratings' route changes: it alone is sent and taken, reviews' stays as the proxy had it.
    sc.cp.write("ratings.yaml", &ratings_routed(s, "r2"));
    eventually(20, "ratings to move to r2", async || {
        get(ratings_entry, "ratings", "/", &[])
            .await
            .ok()
            .filter(|r| r.body.starts_with("r2"))
    })
    .await;
    assert_eq!(
        sc.cp.resources_sent(&proxy, ROUTE),
        routes_before + 1,
        "ratings' route config alone, not the rejected one with it"
    );
    let counts = tally(ratings_entry, "ratings", "/", &[], 50).await;
    assert_eq!(counts.get("r2"), Some(&50), "{counts:?}");
    let counts = tally(sc.entry, "reviews", "/", &[], 50).await;
    assert_eq!(counts.get("v1"), Some(&50), "{counts:?}");
    // Ratings' version ACKed, the proxy still shows reviews' refusal in Envoy's words.
    let refused = eventually(20, "ratings' route config to be ACKed", async || {
        let t = status.get(&proxy)?.types.get(ROUTE)?.clone();
        (t.acked.is_some() && t.acked == t.sent).then_some(t)
    })
    .await;
    assert_eq!(refused.state(), remora_xds::sync::SyncState::Nacked);
    let message = refused.nack.map(|n| n.message).unwrap_or_default();
    assert!(message.contains("program size"), "{message}");

    // Fixed, reviews' route goes through as well.
    sc.change_route(&split(0, 100)).await;
    let counts = tally(sc.entry, "reviews", "/", &[], 50).await;
    assert_eq!(counts.get("v2"), Some(&50), "{counts:?}");
    let counts = tally(ratings_entry, "ratings", "/", &[], 50).await;
    assert_eq!(counts.get("r2"), Some(&50), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_route_config_blocks_no_other_service_sotw() {
    a_rejected_route_config_blocks_no_other_service(33, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_route_config_blocks_no_other_service_delta() {
    a_rejected_route_config_blocks_no_other_service(34, true).await;
}
