//! Gateway API `GRPCRoute`s with Service parents: method matches become path matches on an
//! HTTP/2 port, and a `GRPCRoute` governs its port before routes of the other kinds.

mod support;

use remora_api::gateway::GrpcRoute;
use remora_model::{
    Mesh,
    config::{PathMatch, RouteAction, Target},
    input::{Event, Kind, Object, Protocol, Service, ServicePort},
    routing::{Problem, RouteKey, RouteKind},
};
use support::*;

fn grpc_route(ns: &str, name: &str, created: i64, spec: serde_json::Value) -> Event {
    let mut route: GrpcRoute = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": ns, "name": name, "generation": 1},
        "spec": spec,
    }))
    .expect("a GRPCRoute");
    route.metadata.creation_timestamp = Some(time(created));
    up(Object::GrpcRoute(Box::new(route)))
}

fn http_route(ns: &str, name: &str, created: i64, spec: serde_json::Value) -> Event {
    let mut route: remora_api::gateway::HttpRoute = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": ns, "name": name, "generation": 1},
        "spec": spec,
    }))
    .expect("an HTTPRoute");
    route.metadata.creation_timestamp = Some(time(created));
    up(Object::HttpRoute(Box::new(route)))
}

fn grpc_key(name: &str) -> RouteKey {
    RouteKey {
        kind: RouteKind::GrpcRoute,
        key: key("shop", name),
    }
}

/// A Service whose one port speaks `protocol`.
fn service(name: &str, ip: &str, protocol: Protocol) -> Object {
    let mut svc = mk_svc("shop", name, ip, &[9090], false);
    if let Object::Service(Service { ports, .. }) = &mut svc {
        ports[0] = ServicePort {
            name: Some("grpc".into()),
            port: 9090,
            protocol,
        };
    }
    svc
}

/// `orders` and `orders-v2`, gRPC on 9090, and a meshed client in `shop`.
fn scene(protocol: Protocol) -> Vec<Event> {
    let endpoints = [("10.0.0.1", "orders-1", true)];
    vec![
        up(mk_ns("shop")),
        up(mk_policy("remora-system", "fleet", 1, policy_spec())),
        up(service("orders", "10.96.0.1", protocol)),
        up(mk_slice("shop", "orders", &[9090], false, &endpoints)),
        up(service("orders-v2", "10.96.0.2", protocol)),
        up(mk_pod(
            "shop",
            "client",
            &[("app", "client")],
            "10.0.0.9",
            true,
        )),
    ]
}

/// The client's routes for orders: (name, path condition, where it goes).
fn routes(m: &Mesh) -> Vec<(String, Option<PathMatch>, Vec<String>)> {
    let config = m.proxy_config(&key("shop", "client")).expect("proxy");
    let rc = route_config(&config, "9090");
    let vhost = rc
        .virtual_hosts
        .iter()
        .find(|v| v.value.name.starts_with("orders.shop"))
        .expect("orders vhost");
    vhost
        .value
        .routes
        .iter()
        .map(|r| {
            let targets = match &r.action {
                RouteAction::Forward(f) => f
                    .clusters
                    .iter()
                    .map(|c| match &c.target {
                        Target::Cluster(n) => n.to_string(),
                        Target::Unresolved => "<unresolved>".into(),
                        Target::Invalid => "<invalid>".into(),
                    })
                    .collect(),
                RouteAction::Redirect(_) => vec!["<redirect>".into()],
            };
            let path = r.matches.first().map(|m| m.path.clone());
            (r.name.clone(), path, targets)
        })
        .collect()
}

fn place_to_v2() -> serde_json::Value {
    serde_json::json!({
        "parentRefs": [{"kind": "Service", "name": "orders", "port": 9090}],
        "rules": [
            {"name": "place", "matches": [{"method": {"service": "shop.v1.Orders", "method": "Place"}}],
             "backendRefs": [{"name": "orders-v2", "port": 9090}]},
            {"name": "orders", "matches": [{"method": {"service": "shop.v1.Orders"}}]}
        ]
    })
}

#[test]
fn a_grpc_route_routes_by_method_and_answers_404_to_other_calls() {
    let mut m = mesh(scene(Protocol::Http2));
    m.apply([grpc_route("shop", "orders", 10, place_to_v2())]);
    let own = "outbound|9090||orders.shop.svc.cluster.local";
    assert_eq!(
        routes(&m),
        [
            (
                "grpcroute:shop/orders/place".to_owned(),
                Some(PathMatch::Exact("/shop.v1.Orders/Place".into())),
                vec!["outbound|9090||orders-v2.shop.svc.cluster.local".to_owned()]
            ),
            (
                "grpcroute:shop/orders/orders".to_owned(),
                Some(PathMatch::Prefix("/shop.v1.Orders".into())),
                vec![own.to_owned()]
            ),
        ],
        "no catch-all route: Envoy answers 404, which gRPC reads as UNIMPLEMENTED"
    );
    assert_eq!(m.route_problems(grpc_key("orders")), []);
    m.apply([Event::Delete(Kind::GrpcRoute, key("shop", "orders"))]);
    assert_eq!(
        routes(&m),
        [("default".to_owned(), None, vec![own.to_owned()])],
        "the Service's own route is back"
    );
}

#[test]
fn a_grpc_route_goes_before_an_older_http_route_on_its_port() {
    let mut m = mesh(scene(Protocol::Http2));
    m.apply([
        http_route(
            "shop",
            "orders",
            10,
            serde_json::json!({
                "parentRefs": [{"kind": "Service", "name": "orders", "port": 9090}],
                "rules": [{"backendRefs": [{"name": "orders-v2", "port": 9090}]}]
            }),
        ),
        grpc_route("shop", "orders", 20, place_to_v2()),
    ]);
    assert_eq!(routes(&m)[0].0, "grpcroute:shop/orders/place");
    let http = RouteKey {
        kind: RouteKind::HttpRoute,
        key: key("shop", "orders"),
    };
    let problems = m.route_problems(&http);
    assert!(
        matches!(&problems[..], [Problem::Conflicted { winner, .. }] if *winner == grpc_key("orders")),
        "{problems:?}"
    );
    assert!(
        problems[0]
            .to_string()
            .contains("routed by grpcroute:shop/orders (a GRPCRoute"),
        "{}",
        problems[0]
    );
    assert_eq!(m.route_problems(grpc_key("orders")), []);
}

#[test]
fn a_grpc_route_on_an_http1_port_says_how_to_fix_the_port() {
    let mut m = mesh(scene(Protocol::Http));
    m.apply([grpc_route("shop", "orders", 10, place_to_v2())]);
    let problems = m.route_problems(grpc_key("orders"));
    assert!(
        matches!(&problems[..], [Problem::ProtocolMismatch { detail, .. }] if detail.contains("appProtocol")),
        "{problems:?}"
    );
}

#[test]
fn a_broken_grpc_route_names_the_users_field() {
    let mut m = mesh(scene(Protocol::Http2));
    m.apply([grpc_route(
        "shop",
        "orders",
        10,
        serde_json::json!({
            "parentRefs": [{"kind": "Service", "name": "orders", "port": 9090}],
            "rules": [{"matches": [{"method": {"service": "shop/v1"}}]}]
        }),
    )]);
    let problems = m.route_validation(grpc_key("orders")).expect("held");
    assert_eq!(
        problems[0].path, "spec.rules[0].matches[0].method.service",
        "{problems:?}"
    );
    assert_eq!(routes(&m).len(), 1, "never valid: the Service's own route");
}
