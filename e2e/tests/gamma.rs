//! Gateway API's mesh semantics through real Envoys and real HTTP, configured by the control
//! plane in local mode: producer and consumer routes, and cross-namespace backends that need
//! a `ReferenceGrant`. Each scenario runs in both xDS modes.

mod support;

use std::{collections::BTreeMap, net::SocketAddr};

use remora_model::input::ObjectKey;
use support::{grpc::*, *};

/// `reviews` in team-b with two plain pods, v1 and v2, which also have a Service each;
/// `web` in team-a with no pods of its own; a client pod with a sidecar in team-a and in
/// team-c.
fn mesh(s: u8) -> String {
    let (v1, v2) = (ip(s, 12, 1), ip(s, 12, 2));
    let (client_a, client_c) = (ip(s, 11, 1), ip(s, 11, 2));
    let (reviews, web) = (ip(s, 10, 2), ip(s, 10, 3));
    let mut out = String::new();
    for (version, (cluster_ip, pod_ip)) in [("v1", (ip(s, 10, 4), v1)), ("v2", (ip(s, 10, 5), v2))]
    {
        out += &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: reviews-{version}, namespace: team-b}}\n\
             spec: {{clusterIP: {cluster_ip}, ports: [{{name: http, port: 9080}}]}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: reviews-{version}-1, namespace: team-b, labels: {{kubernetes.io/service-name: reviews-{version}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 9080}}]\n\
             endpoints: [{{addresses: [\"{pod_ip}\"], targetRef: {{kind: Pod, name: reviews-{version}}}}}]\n---\n"
        );
    }
    for ns in ["team-a", "team-b", "team-c"] {
        out += &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{remora.dev/mesh: enabled}}}}\n---\n"
        );
    }
    out += &format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: team-b}}
spec: {{clusterIP: {reviews}, ports: [{{name: http, port: 9080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: team-a}}
spec: {{clusterIP: {web}, ports: [{{name: http, port: 9080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: reviews-1, namespace: team-b, labels: {{kubernetes.io/service-name: reviews}}}}
addressType: IPv4
ports: [{{name: http, port: 9080}}]
endpoints:
  - {{addresses: ["{v1}"], targetRef: {{kind: Pod, name: reviews-v1}}}}
  - {{addresses: ["{v2}"], targetRef: {{kind: Pod, name: reviews-v2}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: reviews-v1, namespace: team-b, labels: {{app: reviews, version: v1}}}}
spec: {{containers: [{{name: app}}]}}
status: {{podIP: "{v1}"}}
---
apiVersion: v1
kind: Pod
metadata: {{name: reviews-v2, namespace: team-b, labels: {{app: reviews, version: v2}}}}
spec: {{containers: [{{name: app}}]}}
status: {{podIP: "{v2}"}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: team-a}}
spec: {{containers: [{{name: app}}, {{name: remora-proxy}}]}}
status: {{podIP: "{client_a}"}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: team-c}}
spec: {{containers: [{{name: app}}, {{name: remora-proxy}}]}}
status: {{podIP: "{client_c}"}}
"#
    );
    out
}

/// A route named `name` in `ns` on `parent` (`namespace/name`), sending everything to
/// `backend` (`namespace/name`, optionally narrowed to one version).
fn route(ns: &str, name: &str, parent: &str, backend: &str, version: Option<&str>) -> String {
    let (parent_ns, parent) = parent.split_once('/').expect("namespace/name");
    let (backend_ns, backend) = backend.split_once('/').expect("namespace/name");
    let subset = version.map_or(String::new(), |v| format!(", subset: {{version: {v}}}"));
    format!(
        "apiVersion: remora.dev/v1alpha1\nkind: TrafficRoute\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  parentRefs: [{{name: {parent}, namespace: {parent_ns}, port: 9080}}]\n  http:\n\
         \x20   - name: all\n      backendRefs: [{{name: {backend}, namespace: {backend_ns}{subset}}}]\n"
    )
}

/// A grant in team-b for team-a's TrafficRoutes to `reviews`.
const GRANT: &str = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
    metadata: {name: team-a-routes, namespace: team-b}\n\
    spec:\n  from: [{group: remora.dev, kind: TrafficRoute, namespace: team-a}]\n\
    \x20 to: [{group: \"\", kind: Service, name: reviews}]\n";

struct Scene {
    cp: ControlPlane,
    // Held so the processes and servers live as long as the scene.
    _envoys: Vec<Envoy>,
    /// v1 and v2, in that order.
    upstreams: Vec<Upstream>,
    /// Each namespace's client sidecar, where it sends its traffic.
    entries: BTreeMap<&'static str, SocketAddr>,
}

async fn scene(s: u8, delta: bool, files: &[(&str, String)]) -> Scene {
    let mut upstreams = Vec::new();
    for (version, host) in [("v1", 1), ("v2", 2)] {
        let addr = SocketAddr::new(ip(s, 12, host), 9080);
        upstreams.push(Upstream::start(version, addr, Behaviour::default()).await);
    }
    let mut all = vec![("mesh.yaml", mesh(s))];
    all.extend(files.iter().cloned());
    let cp = ControlPlane::start(&all).await;
    let mut envoys = Vec::new();
    let mut entries = BTreeMap::new();
    for (ns, host) in [("team-a", 1), ("team-c", 2)] {
        let proxy = ObjectKey::new(ns, "client");
        envoys.push(Envoy::start(proxy.clone(), cp.addr, delta).await);
        cp.synced(&proxy).await;
        entries.insert(ns, SocketAddr::new(ip(s, 11, host), 9080));
    }
    Scene {
        cp,
        _envoys: envoys,
        upstreams,
        entries,
    }
}

impl Scene {
    /// Where 20 requests from `ns`'s client to `host` land: "v1", "v2", or a status code.
    async fn landing(&self, ns: &str, host: &str) -> BTreeMap<String, usize> {
        tally(self.entries[ns], host, "/", &[], 20).await
    }

    /// Waits until every request from `ns`'s client to `host` lands on `expected`.
    async fn lands(&self, ns: &str, host: &str, expected: &str) {
        let want = BTreeMap::from([(expected.to_owned(), 20)]);
        let what = format!("{ns}'s calls to {host} to land on {expected}");
        eventually(20, &what, async || {
            (self.landing(ns, host).await == want).then_some(())
        })
        .await;
    }
}

async fn a_consumer_route_changes_only_its_namespaces_clients(s: u8, delta: bool) {
    let producer = route(
        "team-b",
        "reviews",
        "team-b/reviews",
        "team-b/reviews",
        Some("v1"),
    );
    let sc = scene(s, delta, &[("producer.yaml", producer)]).await;
    sc.lands("team-a", "reviews.team-b", "v1").await;
    sc.lands("team-c", "reviews.team-b", "v1").await;

    // team-a's own route for team-b's Service: its parent is also its backend, which
    // needs no grant.
    let consumer = route(
        "team-a",
        "my-reviews",
        "team-b/reviews",
        "team-b/reviews",
        Some("v2"),
    );
    sc.cp.write("consumer.yaml", &consumer);
    sc.lands("team-a", "reviews.team-b", "v2").await;
    assert_eq!(
        sc.landing("team-c", "reviews.team-b").await,
        BTreeMap::from([("v1".to_owned(), 20)]),
        "a route in team-a does not touch team-c's calls"
    );

    // Gone, team-a's calls follow the producer route again.
    sc.cp.write("consumer.yaml", "");
    sc.lands("team-a", "reviews.team-b", "v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_route_changes_only_its_namespaces_clients_sotw() {
    a_consumer_route_changes_only_its_namespaces_clients(41, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_route_changes_only_its_namespaces_clients_delta() {
    a_consumer_route_changes_only_its_namespaces_clients(42, true).await;
}

async fn a_cross_namespace_backend_needs_a_grant(s: u8, delta: bool) {
    let web = route("team-a", "web", "team-a/web", "team-b/reviews", Some("v2"));
    let sc = scene(s, delta, &[("web.yaml", web)]).await;
    // Refused, the backend's share fails: Remora sends it to a cluster without endpoints,
    // as it does a missing Service (Gateway API asks for a 500).
    sc.lands("team-a", "web", "503").await;

    sc.cp.write("grant.yaml", GRANT);
    sc.lands("team-a", "web", "v2").await;

    // Removing the grant revokes it.
    sc.cp.write("grant.yaml", "");
    sc.lands("team-a", "web", "503").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_namespace_backend_needs_a_grant_sotw() {
    a_cross_namespace_backend_needs_a_grant(43, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_namespace_backend_needs_a_grant_delta() {
    a_cross_namespace_backend_needs_a_grant(44, true).await;
}

/// A producer HTTPRoute in team-b on `reviews`: paths and a header pick the version,
/// anything else gets a 404.
const PRODUCER_HTTP_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: team-b}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 9080}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /v1}}]
      backendRefs: [{name: reviews-v1, port: 9080}]
    - matches: [{path: {type: PathPrefix, value: /}, headers: [{name: x-canary, value: "yes"}]}]
      backendRefs: [{name: reviews-v2, port: 9080}]
    - matches: [{path: {type: Exact, value: /v2}}]
      backendRefs: [{name: reviews-v2, port: 9080}]
"#;

/// A consumer HTTPRoute in team-a on team-b's `reviews`: no backends (so the parent), a
/// response header that tells its calls apart.
const CONSUMER_HTTP_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: my-reviews, namespace: team-a}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, namespace: team-b, port: 9080}]
  rules:
    - filters:
        - type: ResponseHeaderModifier
          responseHeaderModifier: {set: [{name: x-consumer, value: team-a}]}
"#;

async fn http_routes_match_and_bind_to_their_consumers(s: u8, delta: bool) {
    let sc = scene(s, delta, &[("producer.yaml", PRODUCER_HTTP_ROUTE.into())]).await;
    let host = "reviews.team-b";
    sc.lands("team-c", host, "404").await;
    for (path, headers, expected) in [
        ("/v1/books", &[][..], "v1"),
        ("/v2", &[][..], "v2"),
        ("/v2/books", &[][..], "404"),
        ("/", &[("x-canary", "yes")][..], "v2"),
        ("/v1", &[("x-canary", "yes")][..], "v1"),
    ] {
        let counts = tally(sc.entries["team-c"], host, path, headers, 10).await;
        assert_eq!(
            counts,
            BTreeMap::from([(expected.to_owned(), 10)]),
            "{path} {headers:?}"
        );
    }

    sc.cp.write("consumer.yaml", CONSUMER_HTTP_ROUTE);
    let consumer_header = async |ns: &str| {
        let reply = get(sc.entries[ns], host, "/v1", &[]).await.ok()?;
        Some((reply.status, reply.header("x-consumer").map(str::to_owned)))
    };
    eventually(
        20,
        "team-a's calls to carry the consumer route's header",
        async || {
            let reply = consumer_header("team-a").await?;
            (reply == (200, Some("team-a".to_owned()))).then_some(())
        },
    )
    .await;
    // For team-a the consumer route replaces the producer's: no rule of it refuses /v2/books.
    let counts = tally(sc.entries["team-a"], host, "/v2/books", &[], 10).await;
    assert_eq!(counts.values().sum::<usize>(), 10);
    assert!(!counts.contains_key("404"), "{counts:?}");
    assert_eq!(
        consumer_header("team-c").await,
        Some((200, None)),
        "team-c's calls do not take team-a's route"
    );
    let counts = tally(sc.entries["team-c"], host, "/v2/books", &[], 10).await;
    assert_eq!(
        counts,
        BTreeMap::from([("404".to_owned(), 10)]),
        "the producer's still"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_match_and_bind_to_their_consumers_sotw() {
    http_routes_match_and_bind_to_their_consumers(45, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_match_and_bind_to_their_consumers_delta() {
    http_routes_match_and_bind_to_their_consumers(46, true).await;
}

/// A producer HTTPRoute with a redirect, a rewrite with a response header, and a 70/30
/// split.
const FILTERS_HTTP_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: team-b}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 9080}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /old}}]
      filters:
        - type: RequestRedirect
          requestRedirect: {hostname: reviews.example, statusCode: 301}
    - matches: [{path: {type: PathPrefix, value: /api}}]
      filters:
        - type: URLRewrite
          urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
        - type: ResponseHeaderModifier
          responseHeaderModifier: {add: [{name: x-rewritten, value: "yes"}]}
      backendRefs: [{name: reviews-v1, port: 9080}]
    - backendRefs:
        - {name: reviews-v1, port: 9080, weight: 70}
        - {name: reviews-v2, port: 9080, weight: 30}
"#;

async fn http_route_filters_and_weights(s: u8, delta: bool) {
    let sc = scene(s, delta, &[("producer.yaml", FILTERS_HTTP_ROUTE.into())]).await;
    let (entry, host) = (sc.entries["team-c"], "reviews.team-b");
    eventually(20, "the route's redirect", async || {
        let reply = get(entry, host, "/old/books", &[]).await.ok()?;
        (reply.status == 301).then_some(reply)
    })
    .await;
    let reply = get(entry, host, "/old/books", &[]).await.expect("a reply");
    assert_eq!(
        reply.header("location"),
        Some("http://reviews.example/old/books"),
        "{}",
        reply.head
    );

    let reply = get(entry, host, "/api/books", &[]).await.expect("a reply");
    assert_eq!((reply.status, reply.body.as_str()), (200, "v1 /books"));
    assert_eq!(reply.header("x-rewritten"), Some("yes"), "{}", reply.head);

    // 1,000 draws at p = 0.3: a standard deviation of about 14.5; 75 is over five of them,
    // which a correct split breaks about once in five million runs.
    let counts = tally(entry, host, "/split", &[], 1000).await;
    let v2 = counts.get("v2").copied().unwrap_or(0);
    assert_eq!(counts.values().sum::<usize>(), 1000, "{counts:?}");
    assert!(v2.abs_diff(300) <= 75, "v2 got {v2} of 1000: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_route_filters_and_weights_sotw() {
    http_route_filters_and_weights(47, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_route_filters_and_weights_delta() {
    http_route_filters_and_weights(48, true).await;
}

/// `orders` in team-b, gRPC on 9090, with two plain pods that each have a Service too.
fn orders(s: u8) -> String {
    let mut out = String::new();
    let pods = [("v1", ip(s, 13, 1)), ("v2", ip(s, 13, 2))];
    for (name, cluster_ip, ips) in [
        ("orders", ip(s, 10, 6), &pods[..]),
        ("orders-v1", ip(s, 10, 7), &pods[..1]),
        ("orders-v2", ip(s, 10, 8), &pods[1..]),
    ] {
        let endpoints: Vec<String> = ips
            .iter()
            .map(|(v, ip)| {
                format!("{{addresses: [\"{ip}\"], targetRef: {{kind: Pod, name: orders-{v}}}}}")
            })
            .collect();
        out += &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: team-b}}\n\
             spec: {{clusterIP: {cluster_ip}, ports: [{{name: grpc, port: 9090}}]}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}-1, namespace: team-b, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{name: grpc, port: 9090}}]\nendpoints: [{}]\n---\n",
            endpoints.join(", ")
        );
    }
    for (v, ip) in pods {
        out += &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: orders-{v}, namespace: team-b, labels: {{app: orders}}}}\n\
             spec: {{containers: [{{name: app}}]}}\nstatus: {{podIP: \"{ip}\"}}\n---\n"
        );
    }
    out
}

/// A producer GRPCRoute on `orders`: `Place` to v2 with a request header, canaries to v2,
/// the rest of the service split 80/20; other services get no route.
const PRODUCER_GRPC_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: orders, namespace: team-b}
spec:
  parentRefs: [{group: "", kind: Service, name: orders, port: 9090}]
  rules:
    - matches: [{method: {service: shop.v1.Orders}}]
      backendRefs:
        - {name: orders-v1, port: 9090, weight: 80}
        - {name: orders-v2, port: 9090, weight: 20}
    - matches: [{method: {service: shop.v1.Orders}, headers: [{name: x-canary, value: "yes"}]}]
      backendRefs: [{name: orders-v2, port: 9090}]
    - matches: [{method: {service: shop.v1.Orders, method: Place}}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {set: [{name: x-route, value: place}]}
      backendRefs: [{name: orders-v2, port: 9090}]
"#;

/// A consumer GRPCRoute in team-a: every call of team-a's clients to v1.
const CONSUMER_GRPC_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: my-orders, namespace: team-a}
spec:
  parentRefs: [{group: "", kind: Service, name: orders, namespace: team-b, port: 9090}]
  rules:
    - backendRefs: [{name: orders-v1, namespace: team-b, port: 9090}]
"#;

/// A grant in team-b for team-a's GRPCRoutes to `orders-v1`.
const GRPC_GRANT: &str = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
    metadata: {name: team-a-grpc, namespace: team-b}\n\
    spec:\n  from: [{group: gateway.networking.k8s.io, kind: GRPCRoute, namespace: team-a}]\n\
    \x20 to: [{group: \"\", kind: Service, name: orders-v1}]\n";

async fn grpc_routes_match_methods_over_h2c(s: u8, delta: bool) {
    let _upstreams = [
        GrpcUpstream::start("v1", SocketAddr::new(ip(s, 13, 1), 9090)).await,
        GrpcUpstream::start("v2", SocketAddr::new(ip(s, 13, 2), 9090)).await,
    ];
    let files = [
        ("orders.yaml", orders(s)),
        ("producer.yaml", PRODUCER_GRPC_ROUTE.into()),
    ];
    let sc = scene(s, delta, &files).await;
    let entry = |ns: &str| SocketAddr::new(sc.entries[ns].ip(), 9090);
    let host = "orders.team-b";
    let place = "/shop.v1.Orders/Place";
    eventually(20, "Place to reach v2", async || {
        let reply = grpc_call(entry("team-c"), host, place, &[]).await.ok()?;
        (reply.message == format!("v2 {place}")).then_some(())
    })
    .await;
    let reply = grpc_call(entry("team-c"), host, place, &[])
        .await
        .expect("a reply");
    assert_eq!(reply.grpc_status.as_deref(), Some("0"));
    assert_eq!(reply.header("echo-x-route"), Some("place"), "{reply:?}");

    let list = "/shop.v1.Orders/List";
    let canary = [("x-canary", "yes")];
    for (path, headers, expected) in [
        (place, &[][..], "v2"),
        (list, &canary[..], "v2"),
        // Not routed: Envoy's 404, which gRPC reads as UNIMPLEMENTED.
        ("/shop.v1.Payments/Charge", &[][..], "grpc-12"),
        ("/shop.v1.OrdersX/List", &[][..], "grpc-12"),
    ] {
        let counts = grpc_tally(entry("team-c"), host, path, headers, 10).await;
        assert_eq!(
            counts,
            BTreeMap::from([(expected.to_owned(), 10)]),
            "{path} {headers:?}"
        );
    }
    // 500 draws at p = 0.2: a standard deviation of about 8.9; 45 is over five of them.
    let counts = grpc_tally(entry("team-c"), host, list, &[], 500).await;
    let v2 = counts.get("v2").copied().unwrap_or(0);
    assert_eq!(counts.values().sum::<usize>(), 500, "{counts:?}");
    assert!(v2.abs_diff(100) <= 45, "v2 got {v2} of 500: {counts:?}");

    // A consumer route in team-a: a backend in team-b needs a grant for GRPCRoutes.
    sc.cp.write("consumer.yaml", CONSUMER_GRPC_ROUTE);
    // Refused, it answers Envoy's 503, which gRPC reads as UNAVAILABLE.
    eventually(
        20,
        "team-a's refused backend to answer UNAVAILABLE",
        async || {
            let counts = grpc_tally(entry("team-a"), host, place, &[], 5).await;
            (counts == BTreeMap::from([("grpc-14".to_owned(), 5)])).then_some(())
        },
    )
    .await;
    sc.cp.write("grant.yaml", GRPC_GRANT);
    eventually(20, "team-a's calls to land on v1", async || {
        let counts = grpc_tally(entry("team-a"), host, place, &[], 10).await;
        (counts == BTreeMap::from([("v1".to_owned(), 10)])).then_some(())
    })
    .await;
    let counts = grpc_tally(entry("team-c"), host, place, &[], 10).await;
    assert_eq!(
        counts,
        BTreeMap::from([("v2".to_owned(), 10)]),
        "team-c's calls keep the producer's route"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_routes_match_methods_over_h2c_sotw() {
    grpc_routes_match_methods_over_h2c(49, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_routes_match_methods_over_h2c_delta() {
    grpc_routes_match_methods_over_h2c(50, true).await;
}

/// `reviews` with a second port (9081) that only v1 serves, for a route bound to one port.
/// Written to `ports.yaml`, which local mode reads after `mesh.yaml`: this `reviews`
/// replaces the scene's.
fn second_port(s: u8) -> String {
    let (reviews, v1) = (ip(s, 10, 2), ip(s, 12, 1));
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: reviews, namespace: team-b}}\n\
         spec: {{clusterIP: {reviews}, ports: [{{name: http, port: 9080}}, {{name: http-admin, port: 9081}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: reviews-admin, namespace: team-b, labels: {{kubernetes.io/service-name: reviews}}}}\n\
         addressType: IPv4\nports: [{{name: http-admin, port: 9081}}]\n\
         endpoints: [{{addresses: [\"{v1}\"], targetRef: {{kind: Pod, name: reviews-v1}}}}]\n"
    )
}

/// A producer HTTPRoute on `reviews` port 9080 only: request headers set, added and
/// removed; a query match; redirects that change the port, the scheme and the path; the
/// rest to v2.
const CONFORMANCE_HTTP_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: team-b}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 9080}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /headers}}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: x-set, value: new}]
            add: [{name: x-add, value: added}]
            remove: [x-remove]
      backendRefs: [{name: reviews-v1, port: 9080}]
    - matches: [{queryParams: [{name: version, value: "1"}]}]
      backendRefs: [{name: reviews-v1, port: 9080}]
    - matches: [{path: {type: PathPrefix, value: /port}}]
      filters: [{type: RequestRedirect, requestRedirect: {port: 8443}}]
    - matches: [{path: {type: PathPrefix, value: /scheme}}]
      filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
    - matches: [{path: {type: PathPrefix, value: /full}}]
      filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /elsewhere}}}]
    - matches: [{path: {type: PathPrefix, value: /prefix}}]
      filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /moved}}}]
    - matches: [{path: {type: PathPrefix, value: /mirror}}]
      filters: [{type: RequestMirror, requestMirror: {backendRef: {name: reviews-v2, port: 9080}}}]
      backendRefs: [{name: reviews-v1, port: 9080}]
    - matches: [{path: {type: PathPrefix, value: /invalid}}]
      backendRefs: [{name: web, namespace: team-a, port: 9080}]
    - matches: [{path: {type: PathPrefix, value: /half}}]
      backendRefs: [{name: reviews-v1, port: 9080}, {name: missing, port: 9080}]
    - backendRefs: [{name: reviews-v2, port: 9080}]
"#;

/// The rows of the GAMMA table the other scenarios leave: request header modifiers and query
/// matches with traffic, a mirror, redirects of port, scheme and path, 500 for what invalid backends
/// would have taken, a route bound to one port of
/// its Service (mesh-ports) and a route that binds to its frontend Service only, not to the
/// backends it sends to (mesh-frontend).
async fn http_route_conformance_rows(s: u8, delta: bool) {
    let _admin = Upstream::start(
        "v1",
        SocketAddr::new(ip(s, 12, 1), 9081),
        Behaviour::default(),
    )
    .await;
    let files = [
        ("ports.yaml", second_port(s)),
        ("producer.yaml", CONFORMANCE_HTTP_ROUTE.into()),
    ];
    let sc = scene(s, delta, &files).await;
    let (entry, host) = (sc.entries["team-c"], "reviews.team-b");
    sc.lands("team-c", host, "v2").await;

    let sent = [("x-set", "old"), ("x-add", "mine"), ("x-remove", "gone")];
    let reply = get(entry, host, "/headers", &sent).await.expect("a reply");
    assert_eq!(reply.body, "v1 /headers", "{}", reply.head);
    assert_eq!(reply.header("echo-x-set"), Some("new"), "{}", reply.head);
    assert!(
        reply.head.contains("echo-x-add: mine") && reply.head.contains("echo-x-add: added"),
        "{}",
        reply.head
    );
    assert_eq!(reply.header("echo-x-remove"), None, "{}", reply.head);

    for (path, expected) in [("/q?version=1", "v1"), ("/q?version=2", "v2"), ("/q", "v2")] {
        let counts = tally(entry, host, path, &[], 10).await;
        assert_eq!(
            counts,
            BTreeMap::from([(expected.to_owned(), 10)]),
            "{path}"
        );
    }

    for (path, location) in [
        ("/port/a", "http://reviews.team-b:8443/port/a"),
        ("/scheme/a", "https://reviews.team-b/scheme/a"),
        ("/full/a", "http://reviews.team-b/elsewhere"),
        ("/prefix/a", "http://reviews.team-b/moved/a"),
    ] {
        let reply = get(entry, host, path, &[]).await.expect("a reply");
        assert_eq!(
            (reply.status, reply.header("location")),
            (302, Some(location)),
            "{path}: {}",
            reply.head
        );
    }

    // A mirror: v1 answers, v2 gets a copy of each request.
    let mirrored = || {
        sc.upstreams[1]
            .served
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    let before = mirrored();
    let counts = tally(entry, host, "/mirror", &[], 10).await;
    assert_eq!(counts, BTreeMap::from([("v1".to_owned(), 10)]), "/mirror");
    eventually(10, "v2 to get the ten copies", async || {
        (mirrored() == before + 10).then_some(())
    })
    .await;

    // Invalid backends (not granted, missing) answer 500 for their share alone.
    let counts = tally(entry, host, "/invalid", &[], 10).await;
    assert_eq!(counts, BTreeMap::from([("500".to_owned(), 10)]), "/invalid");
    // 400 draws at p = 0.5: a standard deviation of 10; 50 is five of them.
    let counts = tally(entry, host, "/half", &[], 400).await;
    let failed = counts.get("500").copied().unwrap_or(0);
    assert_eq!(
        counts.get("v1").copied().unwrap_or(0) + failed,
        400,
        "{counts:?}"
    );
    assert!(
        failed.abs_diff(200) <= 50,
        "500 for {failed} of 400: {counts:?}"
    );

    // mesh-ports: the route is bound to 9080; 9081 keeps the Service's own routing (v1 only).
    let admin = SocketAddr::new(entry.ip(), 9081);
    let counts = tally(admin, host, "/", &[], 10).await;
    assert_eq!(counts, BTreeMap::from([("v1".to_owned(), 10)]), "port 9081");
    // mesh-frontend: calling the backend Service directly does not take its frontend's route.
    let counts = tally(entry, "reviews-v1.team-b", "/port/a", &[], 10).await;
    assert_eq!(
        counts,
        BTreeMap::from([("v1".to_owned(), 10)]),
        "reviews-v1 itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_route_conformance_rows_sotw() {
    http_route_conformance_rows(51, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_route_conformance_rows_delta() {
    http_route_conformance_rows(52, true).await;
}
