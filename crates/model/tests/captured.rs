//! Captured addressing: the pod's traffic is redirected to the proxy, whose outbound capture
//! listener has a filter chain per Service port and whose inbound one a chain per pod port.

mod support;

use std::collections::BTreeSet;

use remora_api::sidecar_policy::UnknownDestinations;
use remora_model::{
    Mesh,
    config::{
        Accepts, Addressing, Discovery, FilterChain, Listener, ListenerProtocol, ProxyConfig,
        Resource, ResourceType, Unmatched,
    },
    input::{Event, MeshSettings},
};
use support::*;

fn captured(events: Vec<Event>) -> Mesh {
    let mut m = Mesh::new(MeshSettings {
        addressing: Addressing::Captured,
        ..MeshSettings::default()
    });
    m.apply(events);
    m
}

fn scene() -> Vec<Event> {
    vec![
        up(mk_ns("shop")),
        up(mk_policy("remora-system", "fleet", 1, policy_spec())),
        up(mk_svc("shop", "reviews", "10.96.0.1", &[9080, 9081], false)),
        up(mk_slice(
            "shop",
            "reviews",
            &[9080, 9081],
            false,
            &[
                ("10.0.0.1", "reviews-v1", true),
                ("10.0.0.2", "reviews-v2", true),
            ],
        )),
        up(mk_svc("shop", "db", "10.96.0.2", &[5432], true)),
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
        up(mk_route("shop", "reviews", 10, reviews_route(90, 10))),
    ]
}

/// A split of port 9080 only.
fn reviews_route(v1: i32, v2: i32) -> remora_api::TrafficRouteSpec {
    let mut spec = split_route("reviews", v1, v2);
    spec.parent_refs[0].port = Some(9080);
    spec
}

fn listener<'a>(config: &'a ProxyConfig, name: &str) -> &'a Listener {
    config
        .of_type(ResourceType::Listener)
        .find_map(|(k, r)| match r {
            Resource::Listener(l) if &*k.name == name => Some(&l.value),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no listener {name}"))
}

fn chains(l: &Listener) -> (Vec<FilterChain>, &Unmatched) {
    let Accepts::Captured {
        chains, unmatched, ..
    } = &l.accepts
    else {
        panic!("{} is not a capture listener", l.name);
    };
    (chains.iter().map(|c| c.value.clone()).collect(), unmatched)
}

#[test]
fn a_chain_per_service_port_and_a_route_config_per_http_service_port() {
    let m = captured(scene());
    let config = m.proxy_config(&key("shop", "frontend")).expect("proxy");
    assert_eq!(
        names(&config, ResourceType::Listener),
        ["inbound", "outbound"],
        "no listener binds an application port"
    );
    let out = listener(&config, "outbound");
    assert_eq!(out.port, 15001);
    let (chains, unmatched) = chains(out);
    let summary: Vec<(String, Vec<String>, u16)> = chains
        .iter()
        .map(|c| {
            let ips = c.addresses.iter().map(ToString::to_string).collect();
            (c.name.to_string(), ips, c.port)
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "db.shop.svc.cluster.local:5432".into(),
                vec!["10.96.0.2".into()],
                5432
            ),
            (
                "reviews.shop.svc.cluster.local:9080".into(),
                vec!["10.96.0.1".into()],
                9080
            ),
            (
                "reviews.shop.svc.cluster.local:9081".into(),
                vec!["10.96.0.1".into()],
                9081
            ),
        ]
    );
    assert!(matches!(chains[0].protocol, ListenerProtocol::Tcp { .. }));
    assert_eq!(
        chains[1].protocol,
        ListenerProtocol::Http {
            route_config: "reviews.shop.svc.cluster.local:9080".into()
        }
    );
    assert_eq!(
        *unmatched,
        Unmatched::Passthrough {
            cluster: "passthrough".into()
        }
    );
    // One host per route config, answering any name: the chain already chose the Service.
    let rc = route_config(&config, "reviews.shop.svc.cluster.local:9080");
    assert_eq!(rc.virtual_hosts.len(), 1);
    let vhost = &rc.virtual_hosts.iter().next().expect("a host").value;
    assert_eq!(vhost.domains, ["*"]);
    assert_eq!(vhost.routes.len(), 3, "beta, split and the default route");
    let passthrough = config
        .of_type(ResourceType::Cluster)
        .find_map(|(k, r)| match r {
            Resource::Cluster(c) if &*k.name == "passthrough" => Some(&c.value),
            _ => None,
        })
        .expect("the passthrough cluster");
    assert_eq!(passthrough.discovery, Discovery::OriginalDestination);
}

#[test]
fn inbound_chains_send_to_the_app_on_the_pod_ip() {
    let m = captured(scene());
    let config = m.proxy_config(&key("shop", "reviews-v1")).expect("proxy");
    let inbound = listener(&config, "inbound");
    assert_eq!(inbound.port, 15006);
    let (chains, unmatched) = chains(inbound);
    assert_eq!(
        *unmatched,
        Unmatched::Passthrough {
            cluster: "inbound|passthrough".into()
        },
        "undeclared ports reach the app as plain TCP"
    );
    assert_eq!(chains.len(), 1);
    assert_eq!(
        (chains[0].port, chains[0].addresses.is_empty()),
        (8080, true)
    );
    let app = config
        .of_type(ResourceType::Cluster)
        .find_map(|(k, r)| match r {
            Resource::Cluster(c) if &*k.name == "inbound|8080" => Some(&c.value),
            _ => None,
        })
        .expect("the inbound cluster");
    assert_eq!(
        app.discovery,
        Discovery::Static(vec!["10.0.0.1:8080".parse().expect("addr")])
    );
}

#[test]
fn a_route_change_resends_that_service_ports_route_config_alone() {
    let mut m = captured(scene());
    let changes = m.apply([up(mk_route("shop", "reviews", 10, reviews_route(50, 50)))]);
    let frontend = key("shop", "frontend");
    let changed: BTreeSet<(ResourceType, String)> = changes
        .resources_of(&frontend)
        .into_iter()
        .map(|k| (k.kind, k.name.to_string()))
        .collect();
    assert_eq!(
        changed,
        BTreeSet::from([(
            ResourceType::RouteConfig,
            "reviews.shop.svc.cluster.local:9080".to_string()
        )])
    );
}

#[test]
fn a_new_service_adds_a_chain_in_place_and_refuse_drops_the_passthrough() {
    let mut m = captured(scene());
    let changes = m.apply([up(mk_svc("shop", "cart", "10.96.0.3", &[80], false))]);
    let frontend = key("shop", "frontend");
    let changed: BTreeSet<String> = changes
        .resources_of(&frontend)
        .into_iter()
        .map(|k| format!("{:?} {}", k.kind, k.name))
        .collect();
    assert!(changed.contains("Listener outbound"), "{changed:?}");
    assert!(
        changed.contains("RouteConfig cart.shop.svc.cluster.local:80"),
        "{changed:?}"
    );
    assert!(
        !changed.iter().any(|c| c.contains("reviews")),
        "{changed:?}"
    );

    let mut refuse = policy_spec();
    refuse.proxy.interception.unknown_destinations = UnknownDestinations::Refuse;
    let changes = m.apply([up(mk_policy("remora-system", "fleet", 1, refuse))]);
    let config = m.proxy_config(&frontend).expect("proxy");
    assert_eq!(*chains(listener(&config, "outbound")).1, Unmatched::Refuse);
    assert!(!names(&config, ResourceType::Cluster).contains(&"passthrough".to_string()));
    let gone = changes
        .resources_of(&frontend)
        .into_iter()
        .any(|k| k.kind == ResourceType::Cluster && &*k.name == "passthrough");
    assert!(gone, "the passthrough cluster's removal is reported");
}

#[test]
fn a_headless_service_is_told_apart_by_its_endpoints() {
    let mut svc = mk_svc("shop", "peers", "10.96.0.9", &[7000], true);
    if let remora_model::input::Object::Service(s) = &mut svc {
        s.cluster_ip = None;
    }
    let slice = |eps: &[(&str, &str, bool)]| up(mk_slice("shop", "peers", &[7000], true, eps));
    let mut events = scene();
    events.extend([up(svc), slice(&[("10.0.0.5", "peers-0", true)])]);
    let mut m = captured(events);
    let frontend = key("shop", "frontend");
    let peers = |m: &Mesh| {
        let config = m.proxy_config(&frontend).expect("proxy");
        let (chains, _) = chains(listener(&config, "outbound"));
        chains
            .into_iter()
            .find(|c| c.name.starts_with("peers."))
            .map(|c| {
                c.addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            })
    };
    assert_eq!(peers(&m), Some(vec!["10.0.0.5".to_string()]));
    let changes = m.apply([slice(&[
        ("10.0.0.5", "peers-0", true),
        ("10.0.0.6", "peers-1", false),
    ])]);
    assert_eq!(
        peers(&m),
        Some(vec!["10.0.0.5".to_string(), "10.0.0.6".to_string()])
    );
    assert!(
        changes
            .resources_of(&frontend)
            .into_iter()
            .any(|k| k.kind == ResourceType::Listener && &*k.name == "outbound")
    );
    m.apply([slice(&[])]);
    assert_eq!(peers(&m), None, "no address, no chain");
}
