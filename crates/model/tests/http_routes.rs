//! Gateway API `HTTPRoute`s with Service parents: the same route form as `TrafficRoute`s,
//! with Gateway API's own rules where they differ.

mod support;

use remora_api::gateway::HttpRoute;
use remora_model::{
    Mesh,
    config::{RouteAction, Target},
    input::{Event, Kind, Object},
    routing::{Outranked, Problem, RouteKey, RouteKind},
};
use support::*;

fn http_route(ns: &str, name: &str, created: i64, spec: serde_json::Value) -> Event {
    let mut route: HttpRoute = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": ns, "name": name, "generation": 1},
        "spec": spec,
    }))
    .expect("an HTTPRoute");
    route.metadata.creation_timestamp = Some(time(created));
    up(Object::HttpRoute(Box::new(route)))
}

fn http_key(ns: &str, name: &str) -> RouteKey {
    RouteKey {
        kind: RouteKind::HttpRoute,
        key: key(ns, name),
    }
}

/// `reviews` (subsets v1, v2) and a meshed client in `shop`.
fn scene() -> Vec<Event> {
    vec![
        up(mk_ns("shop")),
        up(mk_policy("remora-system", "fleet", 1, policy_spec())),
        up(mk_svc("shop", "reviews", "10.96.0.1", &[9080], false)),
        up(mk_slice(
            "shop",
            "reviews",
            &[9080],
            false,
            &[
                ("10.0.0.1", "reviews-v1", true),
                ("10.0.0.2", "reviews-v2", true),
            ],
        )),
        up(mk_svc("shop", "reviews-v2", "10.96.0.2", &[9080], false)),
        up(mk_pod(
            "shop",
            "client",
            &[("app", "client")],
            "10.0.0.9",
            true,
        )),
    ]
}

/// The client's routes for reviews: (name, where each goes).
fn routes(m: &Mesh) -> Vec<(String, Vec<String>)> {
    let config = m.proxy_config(&key("shop", "client")).expect("proxy");
    let rc = route_config(&config, "9080");
    let vhost = rc
        .virtual_hosts
        .iter()
        .find(|v| v.value.name.starts_with("reviews.shop"))
        .expect("reviews vhost");
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
            (r.name.clone(), targets)
        })
        .collect()
}

fn v2_prefix() -> serde_json::Value {
    serde_json::json!({
        "parentRefs": [{"group": "", "kind": "Service", "name": "reviews", "port": 9080}],
        "rules": [{"name": "v2", "matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
                   "backendRefs": [{"name": "reviews-v2", "port": 9080}]}]
    })
}

#[test]
fn an_http_route_routes_and_answers_404_to_what_no_rule_matches() {
    let mut m = mesh(scene());
    m.apply([http_route("shop", "reviews", 10, v2_prefix())]);
    assert_eq!(
        routes(&m),
        [(
            "httproute:shop/reviews/v2".to_owned(),
            vec!["outbound|9080||reviews-v2.shop.svc.cluster.local".to_owned()]
        )],
        "no catch-all route: Envoy answers 404"
    );
    assert_eq!(m.route_problems(http_key("shop", "reviews")), []);
}

#[test]
fn an_http_route_for_gateways_only_is_not_the_meshs() {
    let mut m = mesh(scene());
    m.apply([http_route(
        "shop",
        "edge",
        10,
        serde_json::json!({"parentRefs": [{"name": "public-gateway"}],
                           "rules": [{"backendRefs": [{"name": "reviews-v2", "port": 9080}]}]}),
    )]);
    assert!(!m.has_route(http_key("shop", "edge")));
    assert_eq!(routes(&m).len(), 1, "the Service's default route only");
}

#[test]
fn an_http_route_and_a_traffic_route_of_one_name_are_two_routes() {
    let mut m = mesh(scene());
    m.apply([
        up(mk_route(
            "shop",
            "reviews",
            20,
            split_route("reviews", 90, 10),
        )),
        http_route("shop", "reviews", 10, v2_prefix()),
    ]);
    assert!(m.has_route(http_key("shop", "reviews")));
    assert!(m.has_route(&key("shop", "reviews")));
    // The older one governs the port; the other reports the conflict, naming the kind.
    assert_eq!(routes(&m)[0].0, "httproute:shop/reviews/v2");
    let problems = m.route_problems(&key("shop", "reviews"));
    assert!(
        problems.iter().any(|p| matches!(p, Problem::Conflicted { winner, .. } if *winner == http_key("shop", "reviews"))),
        "{problems:?}"
    );
    assert!(
        problems[0]
            .to_string()
            .contains("routed by httproute:shop/reviews (older)"),
        "{}",
        problems[0]
    );
    // The winner knows it too.
    assert_eq!(
        m.route_outranks(http_key("shop", "reviews")),
        [Outranked {
            route: RouteKey::traffic(key("shop", "reviews")),
            service: key("shop", "reviews"),
            port: 9080
        }]
    );
    assert_eq!(m.route_outranks(&key("shop", "reviews")), []);
    m.apply([Event::Delete(Kind::HttpRoute, key("shop", "reviews"))]);
    assert!(
        routes(&m)[0].0.starts_with("shop/reviews/"),
        "{:?}",
        routes(&m)
    );
}

#[test]
fn a_broken_edit_keeps_the_last_valid_http_route_and_names_the_users_field() {
    let mut m = mesh(scene());
    m.apply([http_route("shop", "reviews", 10, v2_prefix())]);
    let mut broken = v2_prefix();
    broken["rules"][0]["matches"][0]["path"]["value"] = "v2".into();
    m.apply([http_route("shop", "reviews", 10, broken)]);
    let problems = m
        .route_validation(http_key("shop", "reviews"))
        .expect("held");
    assert_eq!(
        problems[0].path, "spec.rules[0].matches[0].path.value",
        "{problems:?}"
    );
    assert_eq!(
        routes(&m)[0].0,
        "httproute:shop/reviews/v2",
        "the last valid spec stays"
    );
}

#[test]
fn resolution_problems_name_the_http_routes_own_fields_and_kind() {
    let mut m = mesh(scene());
    m.apply([
        up(mk_ns("other")),
        up(mk_svc("other", "api", "10.96.1.1", &[9080], false)),
        http_route(
            "shop",
            "reviews",
            10,
            serde_json::json!({
                "parentRefs": [{"kind": "Service", "name": "reviews", "port": 9080}],
                "rules": [
                    {"matches": [{"path": {"type": "Exact", "value": "/a"}}],
                     "backendRefs": [{"name": "missing", "port": 9080}]},
                    {"backendRefs": [{"name": "api", "namespace": "other", "port": 9080}]}
                ]
            }),
        ),
    ]);
    let problems: Vec<String> = m
        .route_problems(http_key("shop", "reviews"))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].starts_with("spec.rules[0].backendRefs[0]: Service shop/missing"),
        "{problems:#?}"
    );
    assert!(
        problems[1].starts_with("spec.rules[1].backendRefs[0]: Service other/api")
            && problems[1].contains("admits HTTPRoutes from shop")
            && problems[1].contains("group gateway.networking.k8s.io, kind HTTPRoute"),
        "{problems:#?}"
    );
    // Gateway API answers 500 for what an invalid backend would have taken.
    let targets: Vec<Vec<String>> = routes(&m).into_iter().map(|(_, t)| t).collect();
    assert_eq!(targets, [["<invalid>"], ["<invalid>"]]);
}
