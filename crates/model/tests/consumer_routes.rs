//! Producer and consumer routes (Gateway API's mesh binding): a route in the Service's
//! namespace applies to every client, a route in another namespace only to the clients in
//! that namespace, for whom it replaces the producer route on the ports it names.

mod support;

use remora_api::{TrafficRouteSpec, traffic_route::ParentRef};
use remora_model::{
    Mesh,
    config::{Addressing, RouteAction, Target},
    input::{Event, Kind, MeshSettings},
    routing::Problem,
};
use support::*;

/// A mesh of captured proxies (any addressing resolves routes alike).
fn mesh(events: Vec<Event>) -> Mesh {
    let mut m = Mesh::new(MeshSettings {
        addressing: Addressing::Captured,
        ..MeshSettings::default()
    });
    m.apply(events);
    m
}

/// `reviews` in team-b (two ports, subsets v1 and v2), a meshed client in each of team-a,
/// team-b and team-c, and a producer route in team-b sending 90% to v1.
fn teams() -> Vec<Event> {
    let mut events = vec![
        up(mk_policy("remora-system", "fleet", 1, policy_spec())),
        up(mk_svc(
            "team-b",
            "reviews",
            "10.96.0.1",
            &[9080, 9090],
            false,
        )),
        up(mk_slice(
            "team-b",
            "reviews",
            &[9080, 9090],
            false,
            &[
                ("10.0.0.1", "reviews-v1", true),
                ("10.0.0.2", "reviews-v2", true),
            ],
        )),
        up(mk_route(
            "team-b",
            "reviews",
            10,
            split_route("reviews", 90, 10),
        )),
    ];
    for (i, ns) in ["team-a", "team-b", "team-c"].into_iter().enumerate() {
        events.push(up(mk_ns(ns)));
        let ip = format!("10.0.{i}.9");
        events.push(up(mk_pod(ns, "client", &[("app", "client")], &ip, true)));
    }
    for v in ["v1", "v2"] {
        let ip = if v == "v1" { "10.0.0.1" } else { "10.0.0.2" };
        let labels = [("app", "reviews"), ("version", v)];
        events.push(up(mk_pod(
            "team-b",
            &format!("reviews-{v}"),
            &labels,
            ip,
            true,
        )));
    }
    events
}

/// A route in another namespace for team-b's reviews (on `port` only, if given), sending
/// `v1`:`v2` of its traffic to the two subsets.
fn consumer_route(v1: i32, v2: i32, port: Option<i32>) -> TrafficRouteSpec {
    let mut spec = split_route("reviews", v1, v2);
    spec.parent_refs = vec![ParentRef {
        name: "reviews".into(),
        namespace: Some("team-b".into()),
        port,
    }];
    for rule in &mut spec.http {
        for b in &mut rule.backend_refs {
            b.namespace = Some("team-b".into());
        }
    }
    spec
}

/// The weight of reviews' v1 subset in the `split` rule of `ns`'s client, on `port`.
fn v1_weight(m: &Mesh, ns: &str, port: u16) -> u32 {
    let config = m.proxy_config(&key(ns, "client")).expect("proxy");
    let rc = route_config(&config, &format!("reviews.team-b.svc.cluster.local:{port}"));
    let route = rc
        .virtual_hosts
        .iter()
        .flat_map(|v| &v.value.routes)
        .find(|r| r.name.ends_with("/split"))
        .unwrap_or_else(|| panic!("{ns}'s client has no split rule on {port}"));
    let RouteAction::Forward(f) = &route.action else {
        panic!("not forwarded")
    };
    f.clusters
        .iter()
        .find(|c| matches!(&c.target, Target::Cluster(n) if n.contains("version=v1")))
        .map_or(0, |c| c.weight)
}

#[test]
fn a_consumer_route_applies_only_to_its_own_namespace() {
    let mut m = mesh(teams());
    for ns in ["team-a", "team-b", "team-c"] {
        assert_eq!(v1_weight(&m, ns, 9080), 90, "{ns} before");
    }
    let changes = m.apply([up(mk_route(
        "team-a",
        "my-reviews",
        20,
        consumer_route(1, 99, None),
    ))]);
    let touched: Vec<String> = changes.proxies().iter().map(|p| p.to_string()).collect();
    assert_eq!(touched, ["team-a/client"], "only team-a's config changes");
    assert_eq!(v1_weight(&m, "team-a", 9080), 1);
    assert_eq!(v1_weight(&m, "team-a", 9090), 1);
    assert_eq!(v1_weight(&m, "team-b", 9080), 90);
    assert_eq!(v1_weight(&m, "team-c", 9080), 90);
    // A consumer route does not conflict with the producer route it overrides.
    assert_eq!(m.route_problems(&key("team-a", "my-reviews")), []);
    assert_eq!(m.route_problems(&key("team-b", "reviews")), []);
    let shaped: Vec<String> = m
        .route_proxies(&key("team-a", "my-reviews"))
        .flat_map(|members| members.iter().map(ToString::to_string).collect::<Vec<_>>())
        .collect();
    assert_eq!(shaped, ["team-a/client"]);

    // Gone, team-a's clients fall back to the producer route.
    m.apply([Event::Delete(
        Kind::TrafficRoute,
        key("team-a", "my-reviews"),
    )]);
    assert_eq!(v1_weight(&m, "team-a", 9080), 90);
}

#[test]
fn a_consumer_route_on_one_port_leaves_the_others_to_the_producer() {
    let mut m = mesh(teams());
    m.apply([up(mk_route(
        "team-a",
        "my-reviews",
        20,
        consumer_route(1, 99, Some(9090)),
    ))]);
    assert_eq!(v1_weight(&m, "team-a", 9080), 90);
    assert_eq!(v1_weight(&m, "team-a", 9090), 1);
    assert_eq!(v1_weight(&m, "team-c", 9090), 90);
}

#[test]
fn a_consumer_route_works_without_a_producer_route() {
    let mut m = mesh(teams());
    m.apply([
        Event::Delete(Kind::TrafficRoute, key("team-b", "reviews")),
        up(mk_route(
            "team-a",
            "my-reviews",
            20,
            consumer_route(30, 70, None),
        )),
    ]);
    assert_eq!(v1_weight(&m, "team-a", 9080), 30);
    let config = m.proxy_config(&key("team-c", "client")).expect("proxy");
    let rc = route_config(&config, "reviews.team-b.svc.cluster.local:9080");
    let has_split = rc
        .virtual_hosts
        .iter()
        .flat_map(|v| &v.value.routes)
        .any(|r| r.name.ends_with("/split"));
    assert!(!has_split, "team-c has plain Service routing: {rc:?}");
}

#[test]
fn consumer_routes_of_one_namespace_conflict_oldest_first() {
    let mut m = mesh(teams());
    m.apply([
        up(mk_route("team-a", "late", 30, consumer_route(5, 95, None))),
        up(mk_route("team-a", "early", 20, consumer_route(1, 99, None))),
        up(mk_route("team-c", "other", 5, consumer_route(50, 50, None))),
    ]);
    assert_eq!(v1_weight(&m, "team-a", 9080), 1);
    assert_eq!(v1_weight(&m, "team-c", 9080), 50);
    let problems = m.route_problems(&key("team-a", "late"));
    assert!(
        problems.iter().any(
            |p| matches!(p, Problem::Conflicted { winner, .. } if winner.key == key("team-a", "early"))
        ),
        "{problems:?}"
    );
    // team-c's route is older than both, but another namespace's routes never compete.
    assert_eq!(m.route_problems(&key("team-a", "early")), []);
    assert_eq!(m.route_problems(&key("team-c", "other")), []);
}

#[test]
fn a_route_in_the_services_namespace_applies_to_every_client() {
    let mut m = mesh(teams());
    m.apply([up(mk_route(
        "team-b",
        "reviews",
        10,
        split_route("reviews", 40, 60),
    ))]);
    for ns in ["team-a", "team-b", "team-c"] {
        assert_eq!(v1_weight(&m, ns, 9080), 40, "{ns}");
    }
}
