//! Cross-namespace backends: a route may send to a Service in another namespace only when a
//! `ReferenceGrant` there admits routes from the route's namespace.

mod support;

use remora_api::{TrafficRouteSpec, traffic_route::ParentRef};
use remora_model::{
    Mesh,
    config::{RouteAction, Target},
    input::{Event, Kind, Object, ReferenceGrant},
    routing::{Problem, TRAFFIC_ROUTE},
};
use support::*;

/// `web` in team-a with a client, `api` and `search` in team-b, a client in team-b.
fn scene() -> Vec<Event> {
    let mut events = vec![
        up(mk_policy("remora-system", "fleet", 1, policy_spec())),
        up(mk_ns("team-a")),
        up(mk_ns("team-b")),
        up(mk_svc("team-a", "web", "10.96.0.1", &[80], false)),
        up(mk_svc("team-b", "api", "10.96.0.2", &[80], false)),
        up(mk_svc("team-b", "search", "10.96.0.3", &[80], false)),
    ];
    for (ns, ip) in [("team-a", "10.0.0.9"), ("team-b", "10.0.1.9")] {
        events.push(up(mk_pod(ns, "client", &[("app", "client")], ip, true)));
    }
    events
}

/// A route in `ns` on `parent` (in `parent_ns`) that sends everything to `backend` in
/// team-b.
fn route(parent_ns: &str, parent: &str, backend: &str) -> TrafficRouteSpec {
    let mut spec = split_route(parent, 1, 0);
    spec.parent_refs = vec![ParentRef {
        name: parent.into(),
        namespace: Some(parent_ns.into()),
        port: None,
    }];
    spec.http.truncate(1);
    spec.http[0].matches.clear();
    spec.http[0].backend_refs = vec![backend_in("team-b", backend)];
    spec
}

fn backend_in(ns: &str, name: &str) -> remora_api::traffic_route::BackendRef {
    let mut b = backend(name, None, 1);
    b.namespace = Some(ns.into());
    b
}

fn grant(from: &str, to: Option<&str>) -> Event {
    let (group, kind) = TRAFFIC_ROUTE;
    up(Object::ReferenceGrant(ReferenceGrant {
        namespace: "team-b".into(),
        name: "routes".into(),
        from: vec![(group.into(), kind.into(), from.into())],
        to: vec![to.map(str::to_owned)],
    }))
}

/// Where team-a's client sends what it sends to `service` (in `ns`) on port 80.
fn targets(m: &Mesh, ns: &str, service: &str) -> Vec<String> {
    let config = m.proxy_config(&key("team-a", "client")).expect("proxy");
    let rc = route_config(&config, "80");
    let vhost = rc
        .virtual_hosts
        .iter()
        .find(|v| v.value.name.starts_with(&format!("{service}.{ns}")))
        .expect("vhost");
    let RouteAction::Forward(f) = &vhost.value.routes[0].action else {
        panic!("not forwarded")
    };
    f.clusters
        .iter()
        .map(|c| match &c.target {
            Target::Cluster(n) => n.to_string(),
            Target::Unresolved => "<unresolved>".into(),
            Target::Invalid => "<invalid>".into(),
        })
        .collect()
}

fn refused(m: &Mesh, route: &str) -> bool {
    m.route_problems(&key("team-a", route))
        .iter()
        .any(|p| matches!(p, Problem::RefNotPermitted { service, from, .. } if service.namespace == "team-b" && from == "team-a"))
}

#[test]
fn a_backend_in_another_namespace_needs_a_grant_there() {
    let mut m = mesh(scene());
    m.apply([up(mk_route(
        "team-a",
        "r",
        10,
        route("team-a", "web", "api"),
    ))]);
    assert!(
        refused(&m, "r"),
        "{:?}",
        m.route_problems(&key("team-a", "r"))
    );
    assert_eq!(targets(&m, "team-a", "web"), ["<unresolved>"]);

    // A grant for another namespace, or for another Service, does not help.
    m.apply([grant("team-c", None)]);
    assert!(refused(&m, "r"));
    m.apply([grant("team-a", Some("search"))]);
    assert!(refused(&m, "r"));

    m.apply([grant("team-a", Some("api"))]);
    assert_eq!(m.route_problems(&key("team-a", "r")), []);
    assert_eq!(
        targets(&m, "team-a", "web"),
        ["outbound|80||api.team-b.svc.cluster.local"]
    );

    // Removing the grant revokes it.
    m.apply([Event::Delete(Kind::ReferenceGrant, key("team-b", "routes"))]);
    assert!(refused(&m, "r"));
    assert_eq!(targets(&m, "team-a", "web"), ["<unresolved>"]);
}

#[test]
fn a_grant_without_a_name_opens_every_service_of_its_namespace() {
    let mut m = mesh(scene());
    m.apply([
        grant("team-a", None),
        up(mk_route(
            "team-a",
            "r",
            10,
            route("team-a", "web", "search"),
        )),
    ]);
    assert_eq!(m.route_problems(&key("team-a", "r")), []);
}

#[test]
fn a_consumer_route_may_send_to_its_parent_without_a_grant() {
    let mut m = mesh(scene());
    m.apply([up(mk_route(
        "team-a",
        "mine",
        10,
        route("team-b", "api", "api"),
    ))]);
    assert_eq!(m.route_problems(&key("team-a", "mine")), []);
    assert_eq!(
        targets(&m, "team-b", "api"),
        ["outbound|80||api.team-b.svc.cluster.local"]
    );
    // Another Service of the parent's namespace is a reference like any other.
    m.apply([up(mk_route(
        "team-a",
        "mine",
        10,
        route("team-b", "api", "search"),
    ))]);
    assert!(refused(&m, "mine"));
}
