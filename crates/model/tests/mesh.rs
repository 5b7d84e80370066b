//! Scenario tests: a small mesh, one change at a time, asserting on the config proxies get
//! and on what each change reports.

mod support;

use remora_api::ValidationSettings;
use remora_model::{
    Mesh,
    config::{ResourceType, RouteAction, Target},
    input::{Event, Kind, MeshSettings},
    routing::Problem,
};
use support::*;

fn shop() -> Vec<Event> {
    vec![
        up(mk_ns("shop")),
        up(mk_ns("other")),
        up(mk_policy("remora-system", "fleet", 1, policy_spec())),
        up(mk_policy(
            "other",
            "scoped",
            2,
            with_egress(policy_spec(), &["./*"]),
        )),
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
        up(mk_svc("shop", "ratings", "10.96.0.3", &[9080], false)),
        up(mk_slice(
            "shop",
            "ratings",
            &[9080],
            false,
            &[("10.0.0.3", "ratings-0", true)],
        )),
        up(mk_svc("other", "cache", "10.96.0.2", &[6379], true)),
        up(mk_slice(
            "other",
            "cache",
            &[6379],
            true,
            &[("10.0.1.1", "cache-0", true)],
        )),
        up(mk_pod(
            "shop",
            "frontend",
            &[("app", "frontend")],
            "10.0.0.9",
            true,
        )),
        up(mk_pod(
            "shop",
            "reviews-v1",
            &[("app", "reviews"), ("version", "v1")],
            "10.0.0.1",
            true,
        )),
        up(mk_pod(
            "shop",
            "reviews-v2",
            &[("app", "reviews"), ("version", "v2")],
            "10.0.0.2",
            true,
        )),
        up(mk_pod(
            "shop",
            "ratings-0",
            &[("app", "ratings")],
            "10.0.0.3",
            false,
        )),
        up(mk_pod(
            "other",
            "client",
            &[("app", "client")],
            "10.0.1.9",
            true,
        )),
        up(mk_pod(
            "other",
            "cache-0",
            &[("app", "cache")],
            "10.0.1.1",
            false,
        )),
        up(mk_route(
            "shop",
            "reviews",
            10,
            split_route("reviews", 90, 10),
        )),
    ]
}

fn weights(m: &Mesh, proxy: &str, route: &str) -> Vec<(String, u32)> {
    let config = m.proxy_config(&key("shop", proxy)).expect("proxy");
    let rc = route_config(&config, "9080");
    let vhost = rc
        .virtual_hosts
        .iter()
        .find(|v| v.value.name.starts_with("reviews.shop"))
        .expect("reviews vhost");
    let r = vhost
        .value
        .routes
        .iter()
        .find(|r| r.name.ends_with(route))
        .expect("route");
    let RouteAction::Forward(f) = &r.action else {
        panic!("not forwarded")
    };
    f.clusters
        .iter()
        .map(|c| match &c.target {
            Target::Cluster(n) => (n.to_string(), c.weight),
            Target::Unresolved => ("<unresolved>".into(), c.weight),
            Target::Invalid => ("<invalid>".into(), c.weight),
        })
        .collect()
}

#[test]
fn weighted_split_resolves_to_subset_clusters_and_endpoints() {
    let m = mesh(shop());
    assert_eq!(
        weights(&m, "frontend", "/split"),
        vec![
            (
                "outbound|9080|version=v1|reviews.shop.svc.cluster.local".into(),
                90
            ),
            (
                "outbound|9080|version=v2|reviews.shop.svc.cluster.local".into(),
                10
            ),
        ]
    );
    let config = m.proxy_config(&key("shop", "frontend")).expect("proxy");
    let vhost = route_config(&config, "9080")
        .virtual_hosts
        .iter()
        .find(|v| v.value.name.starts_with("reviews.shop"))
        .expect("vhost")
        .value
        .clone();
    let route_names: Vec<&str> = vhost.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        route_names,
        ["shop/reviews/beta", "shop/reviews/split", "default"]
    );
    assert!(
        vhost.domains.contains(&"reviews".to_string()),
        "same-namespace short name"
    );
    assert!(vhost.domains.contains(&"10.96.0.1:9080".to_string()));

    let v2 = config
        .of_type(ResourceType::Endpoints)
        .find_map(|(k, r)| match r {
            remora_model::config::Resource::Endpoints(e) if k.name.contains("version=v2") => {
                Some(e.value.clone())
            }
            _ => None,
        })
        .expect("v2 endpoints");
    let addrs: Vec<String> = v2.endpoints.iter().map(|e| e.address.to_string()).collect();
    assert_eq!(addrs, ["10.0.0.2:9080"]);
}

#[test]
fn a_route_change_reaches_only_proxies_that_can_reach_the_service() {
    let mut m = mesh(shop());
    let changes = m.apply([up(mk_route(
        "shop",
        "reviews",
        10,
        split_route("reviews", 50, 50),
    ))]);
    let touched: Vec<String> = changes
        .proxies()
        .into_iter()
        .map(ToString::to_string)
        .collect();
    // other/client may only reach its own namespace, so reviews is not in its config.
    assert_eq!(
        touched,
        ["shop/frontend", "shop/reviews-v1", "shop/reviews-v2"]
    );
    // All three changed alike: one group, one shared set of keys.
    assert_eq!(changes.groups.len(), 1);
    for p in changes.proxies() {
        let keys: Vec<_> = changes
            .resources_of(p)
            .iter()
            .map(|k| (k.kind, k.name.to_string()))
            .collect();
        assert_eq!(keys, [(ResourceType::RouteConfig, "9080".to_string())]);
    }
    assert_eq!(weights(&m, "frontend", "/split")[1].1, 50);
}

#[test]
fn an_endpoint_change_touches_only_the_load_assignments_that_hold_it() {
    let mut m = mesh(shop());
    let changes = m.apply([up(mk_slice(
        "shop",
        "reviews",
        &[9080],
        false,
        &[
            ("10.0.0.1", "reviews-v1", true),
            ("10.0.0.2", "reviews-v2", false),
        ],
    ))]);
    assert_eq!(changes.proxies().len(), 3);
    for p in changes.proxies() {
        let names: Vec<String> = changes
            .resources_of(p)
            .iter()
            .map(|k| format!("{:?} {}", k.kind, k.name))
            .collect();
        assert_eq!(
            names,
            [
                "Endpoints outbound|9080|version=v2|reviews.shop.svc.cluster.local",
                "Endpoints outbound|9080||reviews.shop.svc.cluster.local",
            ]
        );
    }
}

#[test]
fn a_broken_route_never_replaces_a_working_one() {
    let mut m = mesh(shop());
    let before = all_versions(&m);
    let changes = m.apply([up(mk_route(
        "shop",
        "reviews",
        10,
        split_route("reviews", 0, 0),
    ))]);
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(all_versions(&m), before);
    let problems = m
        .route_validation(&key("shop", "reviews"))
        .expect("known route");
    assert!(
        problems
            .iter()
            .any(|p| p.path == "spec.http[1].backendRefs"),
        "{problems:?}"
    );
    // Fixing it takes effect and clears the problems.
    m.apply([up(mk_route(
        "shop",
        "reviews",
        10,
        split_route("reviews", 70, 30),
    ))]);
    assert_eq!(weights(&m, "frontend", "/split")[0].1, 70);
    assert_eq!(m.route_validation(&key("shop", "reviews")), Some(&[][..]));
}

/// A route whose beta rule matches its header by a regex.
fn route_with_header_regex(pattern: &str) -> remora_api::TrafficRouteSpec {
    let mut route = split_route("reviews", 70, 30);
    route.http[0].matches[0].headers[0].kind =
        remora_api::traffic_route::StringMatchType::RegularExpression;
    route.http[0].matches[0].headers[0].value = pattern.into();
    route
}

#[test]
fn a_regex_beyond_the_meshs_program_size_limit_is_refused_unless_the_limit_is_raised() {
    // `x{300}` compiles to an RE2 program of 304 instructions: beyond Envoy's default 100.
    let route = up(mk_route(
        "shop",
        "reviews",
        10,
        route_with_header_regex("x{300}"),
    ));
    let mut m = mesh(shop());
    m.apply([route.clone()]);
    let problems = m
        .route_validation(&key("shop", "reviews"))
        .expect("known route");
    assert!(
        problems
            .iter()
            .any(|p| p.path == "spec.http[0].matches[0].headers[0].value"
                && p.message.contains("exceeds the limit 100")),
        "{problems:?}"
    );

    let mut raised = Mesh::new(MeshSettings {
        validation: ValidationSettings {
            max_regex_program_size: 1000,
        },
        ..MeshSettings::default()
    });
    raised.apply(shop());
    raised.apply([route]);
    assert_eq!(
        raised.route_validation(&key("shop", "reviews")),
        Some(&[][..])
    );
}

#[test]
fn a_missing_backend_is_reported_and_resolves_once_created() {
    let mut route = split_route("ratings", 1, 1);
    route.http[1].backend_refs = vec![
        backend("ratings", None, 1),
        backend("ratings-next", None, 1),
    ];
    let mut m = mesh(shop());
    m.apply([up(mk_route("shop", "ratings", 11, route))]);
    let w = weights_of(&m, "ratings");
    assert_eq!(
        w[1].0, "<unresolved>",
        "the missing backend keeps its share"
    );
    let problems = m.route_problems(&key("shop", "ratings"));
    assert!(
        problems.iter().any(|p| matches!(p, Problem::BackendNotFound { service, .. } if service.name == "ratings-next")),
        "{problems:?}"
    );

    let changes = m.apply([up(mk_svc(
        "shop",
        "ratings-next",
        "10.96.0.4",
        &[9080],
        false,
    ))]);
    assert!(changes.proxies().contains(&key("shop", "frontend")));
    assert_eq!(
        weights_of(&m, "ratings")[1].0,
        "outbound|9080||ratings-next.shop.svc.cluster.local"
    );
    assert!(
        !m.route_problems(&key("shop", "ratings"))
            .iter()
            .any(|p| matches!(p, Problem::BackendNotFound { .. })),
        "resolved"
    );
}

fn weights_of(m: &Mesh, svc: &str) -> Vec<(String, u32)> {
    let config = m.proxy_config(&key("shop", "frontend")).expect("proxy");
    let rc = route_config(&config, "9080");
    let vhost = rc
        .virtual_hosts
        .iter()
        .find(|v| v.value.name.starts_with(&format!("{svc}.shop")))
        .expect("vhost");
    let r = vhost
        .value
        .routes
        .iter()
        .find(|r| r.name.ends_with("/split"))
        .expect("split");
    let RouteAction::Forward(f) = &r.action else {
        panic!("not forwarded")
    };
    f.clusters
        .iter()
        .map(|c| match &c.target {
            Target::Cluster(n) => (n.to_string(), c.weight),
            Target::Unresolved => ("<unresolved>".into(), c.weight),
            Target::Invalid => ("<invalid>".into(), c.weight),
        })
        .collect()
}

#[test]
fn the_older_route_wins_a_conflict() {
    let mut m = mesh(shop());
    m.apply([up(mk_route(
        "shop",
        "reviews-late",
        20,
        split_route("reviews", 1, 99),
    ))]);
    assert_eq!(
        weights(&m, "frontend", "/split")[0].1,
        90,
        "the older route still governs"
    );
    let problems = m.route_problems(&key("shop", "reviews-late"));
    assert!(
        problems.iter().any(
            |p| matches!(p, Problem::Conflicted { winner, .. } if winner.key.name == "reviews")
        ),
        "{problems:?}"
    );
    // Once the older one is deleted the other takes over.
    m.apply([Event::Delete(Kind::TrafficRoute, key("shop", "reviews"))]);
    assert_eq!(weights(&m, "frontend", "/split")[0].1, 1);
}

#[test]
fn an_empty_subset_is_reported() {
    let mut m = mesh(shop());
    m.apply([up(mk_route(
        "shop",
        "reviews",
        10,
        split_route("reviews", 1, 1),
    ))]);
    assert!(m.route_problems(&key("shop", "reviews")).is_empty());
    m.apply([Event::Delete(Kind::Pod, key("shop", "reviews-v2"))]);
    let problems = m.route_problems(&key("shop", "reviews"));
    assert!(
        problems.iter().any(|p| matches!(p, Problem::SubsetEmpty { subset, .. } if subset.get("version").map(String::as_str) == Some("v2"))),
        "{problems:?}"
    );
}

#[test]
fn a_subset_is_judged_by_its_pods_even_when_no_proxy_reaches_it() {
    let mut m = mesh(shop());
    // Without sidecars there are no proxies, so no cluster of the route is in use.
    m.apply([
        up(mk_pod(
            "shop",
            "frontend",
            &[("app", "frontend")],
            "10.0.0.9",
            false,
        )),
        up(mk_pod(
            "other",
            "client",
            &[("app", "client")],
            "10.0.1.9",
            false,
        )),
        up(mk_pod(
            "shop",
            "reviews-v1",
            &[("app", "reviews"), ("version", "v1")],
            "10.0.0.1",
            false,
        )),
        up(mk_pod(
            "shop",
            "reviews-v2",
            &[("app", "reviews"), ("version", "v2")],
            "10.0.0.2",
            false,
        )),
    ]);
    assert_eq!(m.proxies().count(), 0);
    assert!(m.route_problems(&key("shop", "reviews")).is_empty());
    m.apply([Event::Delete(Kind::Pod, key("shop", "reviews-v2"))]);
    let problems = m.route_problems(&key("shop", "reviews"));
    assert!(
        matches!(problems.as_slice(), [Problem::SubsetEmpty { .. }]),
        "{problems:?}"
    );
}

#[test]
fn the_egress_scope_bounds_a_proxys_config() {
    let m = mesh(shop());
    let client = m.proxy_config(&key("other", "client")).expect("client");
    assert!(
        names(&client, ResourceType::RouteConfig)
            .iter()
            .all(|n| n.starts_with("inbound|"))
    );
    assert_eq!(
        names(&client, ResourceType::Cluster),
        [
            "inbound|8080",
            "outbound|6379||cache.other.svc.cluster.local"
        ]
    );
    assert!(
        names(&client, ResourceType::Listener).contains(&"outbound|10.96.0.2|6379".to_string())
    );
    let frontend = m.proxy_config(&key("shop", "frontend")).expect("frontend");
    assert!(frontend.resources.len() > client.resources.len());
    let mut shaped: Vec<String> = m
        .route_proxies(&key("shop", "reviews"))
        .flat_map(|class| class.iter().map(|k| k.to_string()))
        .collect();
    shaped.sort();
    assert_eq!(
        shaped,
        ["shop/frontend", "shop/reviews-v1", "shop/reviews-v2"]
    );
}

/// The injector and the rollout ask which policy would govern a pod that does not exist yet.
#[test]
fn policy_for_labels_before_any_pod_exists() {
    let mut m = mesh(shop());
    let app = |name: &str| labels(&[("app", name)]);
    assert_eq!(
        m.policy_for("shop", &app("new")).map(ToString::to_string),
        Some("remora-system/fleet".into())
    );
    assert_eq!(m.policy_for("elsewhere", &app("new")), None);
    assert_eq!(
        m.namespace_labels("shop")
            .and_then(|l| l.get("remora.dev/mesh"))
            .map(String::as_str),
        Some("enabled")
    );
    assert!(m.namespace_in_mesh("shop"));
    assert!(!m.namespace_in_mesh("elsewhere"), "never seen");
    m.apply([up(remora_model::input::Object::Namespace(
        remora_model::input::Namespace {
            name: "shop".into(),
            labels: labels(&[("remora.dev/mesh", "disabled")]),
        },
    ))]);
    assert!(!m.namespace_in_mesh("shop"), "opted out");
    m.apply([up(mk_ns("shop"))]);
    let mut local = with_egress(policy_spec(), &["./*"]);
    local.selector = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_labels: Some(app("new")),
            match_expressions: None,
        },
    );
    m.apply([up(mk_policy("shop", "new-only", 30, local))]);
    let governing = m
        .policy_for("shop", &app("new"))
        .cloned()
        .expect("a policy");
    assert_eq!(governing.to_string(), "shop/new-only");
    assert!(
        m.policy_spec(&governing)
            .is_some_and(|s| s.egress.is_some())
    );
    assert_eq!(
        m.policy_for("shop", &app("old")).map(ToString::to_string),
        Some("remora-system/fleet".into())
    );
}

#[test]
fn a_namespace_policy_takes_precedence_over_the_fleet_policy() {
    let mut m = mesh(shop());
    assert_eq!(
        m.proxy_policy(&key("shop", "frontend"))
            .map(ToString::to_string),
        Some("remora-system/fleet".into())
    );
    let mut local = with_egress(policy_spec(), &["./*"]);
    local.selector = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_labels: Some(labels(&[("app", "frontend")])),
            match_expressions: None,
        },
    );
    let changes = m.apply([up(mk_policy("shop", "frontend-only", 30, local))]);
    assert_eq!(
        m.proxy_policy(&key("shop", "frontend"))
            .map(ToString::to_string),
        Some("shop/frontend-only".into())
    );
    assert_eq!(
        m.proxy_policy(&key("shop", "reviews-v1"))
            .map(ToString::to_string),
        Some("remora-system/fleet".into())
    );
    assert_eq!(
        changes
            .proxies()
            .into_iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["shop/frontend"]
    );
}

#[test]
fn a_deleted_proxy_is_reported_gone() {
    let mut m = mesh(shop());
    let changes = m.apply([Event::Delete(Kind::Pod, key("other", "client"))]);
    assert_eq!(
        changes
            .gone
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["other/client"]
    );
    assert!(m.proxy_config(&key("other", "client")).is_none());
}

#[test]
fn policy_traffic_defaults_reach_routes_without_their_own() {
    let mut spec = policy_spec();
    spec.traffic.request_timeout = Some("7s".into());
    let mut m = mesh(shop());
    m.apply([up(mk_policy("remora-system", "fleet", 1, spec))]);
    let config = m.proxy_config(&key("shop", "frontend")).expect("frontend");
    let rc = route_config(&config, "9080");
    let timeouts: Vec<_> = rc
        .virtual_hosts
        .iter()
        .flat_map(|v| v.value.routes.iter())
        .filter_map(|r| match &r.action {
            RouteAction::Forward(f) => Some(f.timeout),
            RouteAction::Redirect(_) => None,
        })
        .collect();
    assert!(!timeouts.is_empty());
    assert!(
        timeouts
            .iter()
            .all(|t| *t == Some(std::time::Duration::from_secs(7))),
        "{timeouts:?}"
    );
}
