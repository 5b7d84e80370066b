//! Mutual TLS between sidecars (captured addressing with workload identity): what each mode
//! accepts inbound, which endpoints a cluster speaks it to, and whom it accepts there.

mod support;

use std::collections::BTreeSet;

use remora_api::sidecar_policy::MtlsMode;
use remora_model::{
    Mesh,
    config::{
        Accepts, Addressing, CaptureMtls, Cluster, ClusterEndpoints, FilterChain, InboundMtls,
        Listener, MtlsPassthrough, ProxyConfig, Resource, ResourceType, Unmatched,
    },
    input::{Event, IdentitySettings, MeshSettings, Object, ObjectKey},
};
use support::*;

const REVIEWS: &str = "outbound|9080||reviews.shop.svc.cluster.local";

fn identity() -> Option<IdentitySettings> {
    Some(IdentitySettings {
        trust_domain: "cluster.local".into(),
    })
}

fn settings(addressing: Addressing, identity: Option<IdentitySettings>) -> MeshSettings {
    MeshSettings {
        addressing,
        identity,
        ..MeshSettings::default()
    }
}

fn meshed(events: Vec<Event>) -> Mesh {
    let mut m = Mesh::new(settings(Addressing::Captured, identity()));
    m.apply(events);
    m
}

fn pod(name: &str, version: &str, ip: &str, sidecar: bool, account: &str) -> Event {
    let mut pod = mk_pod(
        "shop",
        name,
        &[
            ("app", name.split('-').next().unwrap_or(name)),
            ("version", version),
        ],
        ip,
        sidecar,
    );
    if let Object::Pod(p) = &mut pod {
        p.service_account = account.into();
    }
    up(pod)
}

/// The fleet policy with `mode`.
fn fleet(mode: MtlsMode) -> Event {
    let mut spec = policy_spec();
    spec.mtls.mode = mode;
    up(mk_policy("remora-system", "fleet", 1, spec))
}

/// A policy of the shop for the pods of `version`, with `mode`.
fn versioned(version: &str, mode: MtlsMode) -> Event {
    let mut spec = policy_spec();
    spec.selector = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_labels: Some(labels(&[("version", version)])),
            match_expressions: None,
        },
    );
    spec.mtls.mode = mode;
    up(mk_policy("shop", &format!("only-{version}"), 2, spec))
}

/// `frontend` calls `reviews`, whose pods are: v1 and v2 with sidecars running as
/// `reviews`, `legacy` without a sidecar, and v3 whose own policy disables mutual TLS.
fn scene(mode: MtlsMode) -> Vec<Event> {
    vec![
        up(mk_ns("shop")),
        fleet(mode),
        versioned("v3", MtlsMode::Disabled),
        up(mk_svc("shop", "reviews", "10.96.0.1", &[9080], false)),
        up(mk_slice(
            "shop",
            "reviews",
            &[9080],
            false,
            &[
                ("10.0.0.1", "reviews-v1", true),
                ("10.0.0.2", "reviews-v2", true),
                ("10.0.0.3", "legacy-v0", true),
                ("10.0.0.4", "reviews-v3", true),
            ],
        )),
        pod("frontend-0", "v1", "10.0.0.9", true, "frontend"),
        pod("reviews-v1", "v1", "10.0.0.1", true, "reviews"),
        pod("reviews-v2", "v2", "10.0.0.2", true, "reviews"),
        pod("legacy-v0", "v0", "10.0.0.3", false, "legacy"),
        pod("reviews-v3", "v3", "10.0.0.4", true, "reviews-v3"),
    ]
}

fn config(m: &Mesh, pod: &str) -> ProxyConfig {
    m.proxy_config(&key("shop", pod))
        .unwrap_or_else(|| panic!("no proxy {pod}"))
}

fn resource<'a>(config: &'a ProxyConfig, kind: ResourceType, name: &str) -> &'a Resource {
    config
        .of_type(kind)
        .find_map(|(k, r)| (&*k.name == name).then_some(r))
        .unwrap_or_else(|| panic!("no {kind:?} {name}"))
}

fn inbound(config: &ProxyConfig) -> (Vec<FilterChain>, Unmatched, Option<CaptureMtls>) {
    let Resource::Listener(l) = resource(config, ResourceType::Listener, "inbound") else {
        unreachable!("a listener");
    };
    let Listener {
        accepts:
            Accepts::Captured {
                chains,
                unmatched,
                mtls,
                ..
            },
        ..
    } = &l.value
    else {
        panic!("the inbound listener captures");
    };
    let chains = chains.iter().map(|c| c.value.clone()).collect();
    (chains, unmatched.clone(), mtls.clone())
}

fn cluster(config: &ProxyConfig, name: &str) -> Cluster {
    match resource(config, ResourceType::Cluster, name) {
        Resource::Cluster(c) => c.value.clone(),
        _ => unreachable!("a cluster"),
    }
}

fn endpoints(config: &ProxyConfig, name: &str) -> ClusterEndpoints {
    match resource(config, ResourceType::Endpoints, name) {
        Resource::Endpoints(e) => e.value.clone(),
        _ => unreachable!("endpoints"),
    }
}

/// (address, takes mutual TLS) of each endpoint.
fn flags(e: &ClusterEndpoints) -> Vec<(String, bool)> {
    e.endpoints
        .iter()
        .map(|e| (e.address.ip().to_string(), e.mtls))
        .collect()
}

fn peers(c: &Cluster) -> Option<Vec<String>> {
    c.mtls
        .as_ref()
        .map(|m| m.peers.iter().map(ToString::to_string).collect())
}

fn terminated() -> InboundMtls {
    InboundMtls {
        trust_domain: "cluster.local".into(),
    }
}

/// Chain names with whether each terminates mutual TLS.
fn summary(chains: &[FilterChain]) -> Vec<(String, bool)> {
    chains
        .iter()
        .map(|c| (c.name.to_string(), c.mtls.is_some()))
        .collect()
}

#[test]
fn permissive_proxies_take_plaintext_and_mutual_tls_on_each_declared_port() {
    let m = meshed(scene(MtlsMode::Permissive));
    let (chains, unmatched, mtls) = inbound(&config(&m, "reviews-v1"));
    assert_eq!(
        summary(&chains),
        [
            ("inbound|8080".into(), false),
            ("inbound|8080|mtls".into(), true)
        ]
    );
    let [plain, tls] = chains.as_slice() else {
        unreachable!("two chains");
    };
    assert_eq!(plain.protocol, tls.protocol, "the same handling behind TLS");
    assert_eq!(plain.port, tls.port);
    assert_eq!(tls.mtls, Some(terminated()));
    assert_eq!(
        unmatched,
        Unmatched::Passthrough {
            cluster: "inbound|passthrough".into()
        }
    );
    assert_eq!(
        mtls,
        Some(CaptureMtls {
            passthrough: Some(MtlsPassthrough {
                cluster: "inbound|passthrough".into(),
                mtls: terminated(),
            })
        })
    );
}

#[test]
fn strict_proxies_take_only_mutual_tls_and_close_plaintext() {
    let m = meshed(scene(MtlsMode::Strict));
    let config = config(&m, "reviews-v1");
    let (chains, unmatched, mtls) = inbound(&config);
    assert_eq!(summary(&chains), [("inbound|8080|mtls".into(), true)]);
    assert_eq!(
        unmatched,
        Unmatched::Refuse,
        "no plaintext to undeclared ports"
    );
    let passthrough = mtls
        .and_then(|m| m.passthrough)
        .expect("mTLS passes through");
    assert_eq!(&*passthrough.cluster, "inbound|passthrough");
    // The passthrough cluster stays, for the mutual TLS it terminates.
    assert!(matches!(
        resource(&config, ResourceType::Cluster, "inbound|passthrough"),
        Resource::Cluster(_)
    ));
}

#[test]
fn disabled_proxies_take_plaintext_only_as_without_identity() {
    let m = meshed(scene(MtlsMode::Permissive));
    let (chains, unmatched, mtls) = inbound(&config(&m, "reviews-v3"));
    assert_eq!(summary(&chains), [("inbound|8080".into(), false)]);
    assert!(matches!(unmatched, Unmatched::Passthrough { .. }));
    // The listener still tells TLS from plaintext, so a change of mode changes chains only.
    assert_eq!(mtls, Some(CaptureMtls { passthrough: None }));
}

#[test]
fn endpoints_take_mutual_tls_when_their_pod_has_a_sidecar_that_accepts_it() {
    let m = meshed(scene(MtlsMode::Strict));
    let config = config(&m, "frontend-0");
    assert_eq!(
        flags(&endpoints(&config, REVIEWS)),
        [
            ("10.0.0.1".into(), true),
            ("10.0.0.2".into(), true),
            ("10.0.0.3".into(), false),
            ("10.0.0.4".into(), false),
        ],
        "no sidecar, or mutual TLS disabled: plaintext"
    );
    assert_eq!(
        peers(&cluster(&config, REVIEWS)),
        Some(vec!["spiffe://cluster.local/ns/shop/sa/reviews".into()]),
        "the meshed pods' one service account, once"
    );
    assert_eq!(
        cluster(&config, "passthrough").mtls,
        None,
        "what the mesh does not route stays as it was"
    );
}

#[test]
fn a_proxy_with_mutual_tls_disabled_originates_none() {
    let m = meshed(scene(MtlsMode::Permissive));
    assert_eq!(peers(&cluster(&config(&m, "reviews-v3"), REVIEWS)), None);
    assert!(peers(&cluster(&config(&m, "reviews-v1"), REVIEWS)).is_some());
}

#[test]
fn a_pod_gaining_its_sidecar_flips_its_endpoint_and_joins_the_accepted_identities() {
    let mut m = meshed(scene(MtlsMode::Permissive));
    let frontend = key("shop", "frontend-0");
    let changes = m.apply([pod("legacy-v0", "v0", "10.0.0.3", true, "legacy")]);
    let changed: BTreeSet<(ResourceType, String)> = changes
        .resources_of(&frontend)
        .into_iter()
        .map(|k| (k.kind, k.name.to_string()))
        .collect();
    assert!(changed.contains(&(ResourceType::Endpoints, REVIEWS.into())));
    assert!(changed.contains(&(ResourceType::Cluster, REVIEWS.into())));
    let config = config(&m, "frontend-0");
    assert_eq!(
        flags(&endpoints(&config, REVIEWS))[2],
        ("10.0.0.3".into(), true)
    );
    assert_eq!(
        peers(&cluster(&config, REVIEWS)),
        Some(vec![
            "spiffe://cluster.local/ns/shop/sa/legacy".into(),
            "spiffe://cluster.local/ns/shop/sa/reviews".into(),
        ])
    );

    m.apply([pod("legacy-v0", "v0", "10.0.0.3", false, "legacy")]);
    let config = m.proxy_config(&frontend).expect("proxy");
    assert_eq!(
        flags(&endpoints(&config, REVIEWS))[2],
        ("10.0.0.3".into(), false)
    );
    assert_eq!(
        peers(&cluster(&config, REVIEWS)),
        Some(vec!["spiffe://cluster.local/ns/shop/sa/reviews".into()])
    );
}

#[test]
fn a_pod_whose_policy_enables_mutual_tls_flips_its_endpoint() {
    let mut m = meshed(scene(MtlsMode::Permissive));
    m.apply([versioned("v3", MtlsMode::Strict)]);
    let config = config(&m, "frontend-0");
    assert_eq!(
        flags(&endpoints(&config, REVIEWS))[3],
        ("10.0.0.4".into(), true)
    );
    assert_eq!(
        peers(&cluster(&config, REVIEWS)),
        Some(vec![
            "spiffe://cluster.local/ns/shop/sa/reviews".into(),
            "spiffe://cluster.local/ns/shop/sa/reviews-v3".into(),
        ])
    );
    let (chains, _, _) = inbound(&self::config(&m, "reviews-v3"));
    assert_eq!(summary(&chains), [("inbound|8080|mtls".into(), true)]);
}

#[test]
fn another_pod_of_a_known_identity_changes_the_endpoints_but_not_the_cluster() {
    let mut m = meshed(scene(MtlsMode::Permissive));
    let frontend = key("shop", "frontend-0");
    let mut events = vec![pod("reviews-v2b", "v2", "10.0.0.5", true, "reviews")];
    events.push(up(mk_slice(
        "shop",
        "reviews",
        &[9080],
        false,
        &[
            ("10.0.0.1", "reviews-v1", true),
            ("10.0.0.2", "reviews-v2", true),
            ("10.0.0.3", "legacy-v0", true),
            ("10.0.0.4", "reviews-v3", true),
            ("10.0.0.5", "reviews-v2b", true),
        ],
    )));
    let changes = m.apply(events);
    let changed: Vec<(ResourceType, String)> = changes
        .resources_of(&frontend)
        .into_iter()
        .map(|k| (k.kind, k.name.to_string()))
        .collect();
    assert_eq!(changed, [(ResourceType::Endpoints, REVIEWS.to_string())]);
}

#[test]
fn a_port_that_bypasses_the_proxy_is_spoken_to_in_plaintext() {
    let mut m = meshed(scene(MtlsMode::Permissive));
    let mut spec = policy_spec();
    spec.proxy.interception.exclude_inbound_ports = vec![9080];
    m.apply([up(mk_policy("remora-system", "fleet", 1, spec))]);
    let config = config(&m, "frontend-0");
    assert!(
        flags(&endpoints(&config, REVIEWS)).iter().all(|(_, f)| !f),
        "9080 reaches the applications directly"
    );
    m.apply([fleet(MtlsMode::Permissive)]);
    let config = self::config(&m, "frontend-0");
    assert_eq!(
        flags(&endpoints(&config, REVIEWS))[0],
        ("10.0.0.1".into(), true)
    );
}

#[test]
fn a_changed_service_account_changes_the_accepted_identities() {
    let mut m = meshed(scene(MtlsMode::Permissive));
    m.apply([
        pod("reviews-v1", "v1", "10.0.0.1", true, "reviews-new"),
        pod("reviews-v2", "v2", "10.0.0.2", true, "reviews-new"),
    ]);
    assert_eq!(
        peers(&cluster(&config(&m, "frontend-0"), REVIEWS)),
        Some(vec!["spiffe://cluster.local/ns/shop/sa/reviews-new".into()])
    );
}

#[test]
fn without_identity_nothing_speaks_mutual_tls() {
    let mut m = Mesh::new(settings(Addressing::Captured, None));
    m.apply(scene(MtlsMode::Strict));
    let config = config(&m, "frontend-0");
    let (chains, unmatched, mtls) = inbound(&config);
    assert_eq!(summary(&chains), [("inbound|8080".into(), false)]);
    assert!(matches!(unmatched, Unmatched::Passthrough { .. }));
    assert_eq!(mtls, None);
    assert_eq!(peers(&cluster(&config, REVIEWS)), None);
    assert!(flags(&endpoints(&config, REVIEWS)).iter().all(|(_, f)| !f));
}

#[test]
fn explicit_addressing_ignores_identity() {
    let build = |identity| {
        let mut m = Mesh::new(settings(Addressing::Explicit, identity));
        m.apply(scene(MtlsMode::Strict));
        all_versions(&m)
    };
    let with = build(identity());
    assert!(with.contains_key(&ObjectKey::new("shop", "frontend-0")));
    assert_eq!(with, build(None));
}
