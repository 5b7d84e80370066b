//! Properties over random event sequences from a small universe of objects:
//! - applying events one at a time ends where a full computation from the final objects does;
//! - every step reports exactly the resources that changed, for exactly the proxies they
//!   changed for;
//! - the order in which the same objects arrive does not change any proxy's config.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use remora_api::{
    TrafficRouteSpec,
    sidecar_policy::MtlsMode,
    traffic_route::{HttpRule, ParentRef},
};
use remora_model::{
    Mesh,
    config::Addressing,
    input::{Event, IdentitySettings, Kind, MeshSettings, Object, ObjectKey},
    routing::RouteKind,
};
use support::*;

const NAMESPACES: [&str; 2] = ["a", "b"];

/// Builds one object of the universe from a few small numbers.
fn object(kind: u8, idx: u8, seed: u32) -> Object {
    let ns = NAMESPACES[usize::from(idx % 2)];
    let bit = |n: u32| seed >> n & 1 == 1;
    let svc_name = |i: u32| format!("s{}", i % 3);
    match kind % 7 {
        0 => {
            let mut o = mk_ns(ns);
            if let Object::Namespace(n) = &mut o
                && bit(0)
            {
                n.labels.clear();
            }
            o
        }
        1 => {
            let i = u32::from(idx / 2) % 3;
            let tcp = bit(1) && bit(2);
            let ports: &[u16] = if tcp {
                &[5432]
            } else if bit(3) {
                &[80, 9080]
            } else {
                &[9080]
            };
            let ip = format!("10.96.{}.{}", idx % 2, i + 1);
            let mut svc = mk_svc(ns, &svc_name(i), &ip, ports, tcp);
            // Headless: captured traffic to it is told apart by its endpoints' addresses.
            if let Object::Service(s) = &mut svc
                && bit(5)
                && bit(6)
            {
                s.cluster_ip = None;
            }
            svc
        }
        2 => {
            let i = u32::from(idx / 2) % 3;
            let eps: Vec<(String, String, bool)> = (0..3)
                .map(|p| {
                    (
                        format!("10.0.{}.{}", idx % 2, p + 1),
                        format!("p{p}"),
                        bit(p),
                    )
                })
                .collect();
            let eps: Vec<(&str, &str, bool)> = eps
                .iter()
                .map(|(a, p, r)| (a.as_str(), p.as_str(), *r))
                .collect();
            let ports: &[u16] = if bit(4) { &[80, 9080] } else { &[9080] };
            mk_slice(ns, &svc_name(i), ports, false, &eps)
        }
        3 => {
            let p = u32::from(idx / 2) % 3;
            let version = if bit(0) { "v1" } else { "v2" };
            let app = svc_name(seed >> 5);
            let mut pod = mk_pod(
                ns,
                &format!("p{p}"),
                &[("app", &app), ("version", version)],
                &format!("10.0.{}.{}", idx % 2, p + 1),
                !bit(1),
            );
            // Two service accounts: the identities a Service's callers accept follow them.
            if let Object::Pod(pod) = &mut pod
                && bit(2)
            {
                pod.service_account = "other".into();
            }
            pod
        }
        4 => {
            let egress: &[&str] = match seed % 3 {
                0 => &[],
                1 => &["./*"],
                _ => &["b/*", "a/s0"],
            };
            let mut spec = if egress.is_empty() {
                policy_spec()
            } else {
                with_egress(policy_spec(), egress)
            };
            spec.mtls.mode = [MtlsMode::Permissive, MtlsMode::Strict, MtlsMode::Disabled]
                [usize::try_from((seed >> 3) % 3).expect("small")];
            // A port that bypasses the proxy takes plaintext, whatever the mode.
            if bit(7) {
                spec.proxy.interception.exclude_inbound_ports = vec![9080];
            }
            if bit(2) {
                mk_policy("remora-system", "fleet", 1, spec)
            } else {
                mk_policy(ns, "local", i64::from(seed % 5), spec)
            }
        }
        6 => {
            // A grant in `ns` for routes of either kind from either namespace, to one
            // Service or all.
            let kind = [
                RouteKind::TrafficRoute,
                RouteKind::HttpRoute,
                RouteKind::GrpcRoute,
            ][usize::try_from((seed >> 2) % 3).expect("small")];
            let (group, kind) = kind.group_kind();
            Object::ReferenceGrant(remora_model::input::ReferenceGrant {
                namespace: ns.into(),
                name: format!("g{}", idx / 2 % 2),
                from: vec![(
                    group.into(),
                    kind.into(),
                    NAMESPACES[usize::from(bit(0))].into(),
                )],
                to: vec![bit(1).then(|| svc_name(seed >> 2))],
            })
        }
        _ => {
            let parent = svc_name(seed);
            let mut spec = split_route(&parent, i32::from(bit(3)) + 1, i32::from(bit(4)));
            if bit(5) {
                // A backend in the other namespace, which may or may not exist.
                let mut b = backend(&svc_name(seed >> 6), None, 3);
                b.namespace = Some(NAMESPACES[usize::from(idx.is_multiple_of(2))].into());
                spec.http[1].backend_refs.push(b);
            }
            if bit(7) {
                spec.parent_refs.push(ParentRef {
                    name: svc_name(seed >> 8),
                    namespace: None,
                    port: Some(9080),
                });
                spec.parent_refs.dedup();
            }
            if bit(10) {
                // A consumer route: its parent is in the other namespace.
                spec.parent_refs[0].namespace =
                    Some(NAMESPACES[usize::from(idx.is_multiple_of(2))].into());
            }
            if bit(11) {
                return http_route(ns, idx, seed, &spec);
            }
            if bit(9) {
                spec.http.push(HttpRule {
                    name: Some("catch".into()),
                    backend_refs: vec![backend(&parent, None, 1)],
                    ..Default::default()
                });
            }
            mk_route(ns, &format!("r{}", idx / 2 % 2), i64::from(seed % 7), spec)
        }
    }
}

/// An HTTPRoute (a GRPCRoute when `seed` says so) with the parents of `spec` and the backends of its split rule (without
/// subsets, which HTTPRoutes do not have), a header rule ahead when `seed` says so. Always
/// valid: a broken edit keeps the last valid spec, which a full recompute cannot know.
fn http_route(ns: &str, idx: u8, seed: u32, spec: &TrafficRouteSpec) -> Object {
    let parents: Vec<_> = spec
        .parent_refs
        .iter()
        .map(|p| serde_json::json!({"kind": "Service", "name": p.name, "namespace": p.namespace, "port": p.port}))
        .collect();
    let backends: Vec<_> = spec.http[1]
        .backend_refs
        .iter()
        .map(|b| serde_json::json!({"name": b.name, "namespace": b.namespace, "weight": b.weight}))
        .collect();
    let grpc = seed >> 13 & 1 == 1;
    let mut rules = vec![serde_json::json!({"name": "split", "backendRefs": backends})];
    if seed >> 12 & 1 == 1 {
        let mut m = serde_json::json!({"headers": [{"name": "x-beta", "value": "1"}]});
        if grpc {
            m["method"] = serde_json::json!({"service": "shop.v1.Orders"});
        }
        rules.insert(0, serde_json::json!({
            "matches": [m],
            "backendRefs": [{"name": spec.parent_refs[0].name, "namespace": spec.parent_refs[0].namespace}],
            "filters": [{"type": "ResponseHeaderModifier",
                         "responseHeaderModifier": {"set": [{"name": "x", "value": "y"}]}}]
        }));
    }
    let route = serde_json::json!({
        "metadata": {"namespace": ns, "name": format!("h{}", idx / 2 % 2), "generation": 1,
                     "creationTimestamp": time(i64::from(seed % 7))},
        "spec": {"parentRefs": parents, "rules": rules},
    });
    // On these HTTP/1 ports a GRPCRoute governs (and reports a ProtocolMismatch).
    if grpc {
        Object::GrpcRoute(Box::new(
            serde_json::from_value(route).expect("a GRPCRoute"),
        ))
    } else {
        Object::HttpRoute(Box::new(
            serde_json::from_value(route).expect("an HTTPRoute"),
        ))
    }
}

fn kind_of(o: &Object) -> Kind {
    o.kind()
}

#[derive(Clone, Debug)]
enum Step {
    Upsert(u8, u8, u32),
    Delete(u8, u8, u32),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..7, any::<u8>(), any::<u32>()).prop_map(|(k, i, s)| Step::Upsert(k, i, s)),
        1 => (0u8..7, any::<u8>(), any::<u32>()).prop_map(|(k, i, s)| Step::Delete(k, i, s)),
    ]
}

fn event(step: &Step) -> (Event, (Kind, ObjectKey), Option<Object>) {
    match step {
        Step::Upsert(k, i, s) => {
            let o = object(*k, *i, *s);
            let id = (kind_of(&o), o.key());
            (Event::Upsert(o.clone()), id, Some(o))
        }
        Step::Delete(k, i, s) => {
            let o = object(*k, *i, *s);
            let id = (kind_of(&o), o.key());
            (Event::Delete(id.0, id.1.clone()), id, None)
        }
    }
}

/// Both addressings: explicit listeners per port, or capture listeners with a chain per
/// Service port; with workload identity or without (mutual TLS needs both).
fn settings(captured: bool, identity: bool) -> MeshSettings {
    MeshSettings {
        addressing: if captured {
            Addressing::Captured
        } else {
            Addressing::Explicit
        },
        identity: identity.then(|| IdentitySettings {
            trust_domain: "cluster.local".into(),
        }),
        ..MeshSettings::default()
    }
}

fn from_scratch(settings: MeshSettings, objects: impl IntoIterator<Item = Object>) -> Mesh {
    let mut m = Mesh::new(settings);
    m.apply(objects.into_iter().map(Event::Upsert));
    m
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn incremental_updates_equal_a_full_recompute_and_report_exact_changes(steps in prop::collection::vec(step(), 1..60), captured in any::<bool>(), identity in any::<bool>()) {
        let mut mesh = Mesh::new(settings(captured, identity));
        let mut live: BTreeMap<(Kind, ObjectKey), Object> = BTreeMap::new();
        for s in &steps {
            let before = all_versions(&mesh);
            let (e, id, obj) = event(s);
            match obj {
                Some(o) => { live.insert(id, o); }
                None => { live.remove(&id); }
            }
            let changes = mesh.apply([e]);
            let grouped: usize = changes.groups.iter().map(|g| g.proxies.len()).sum();
            let distinct: BTreeSet<&ObjectKey> = changes.groups.iter().flat_map(|g| g.proxies.iter()).collect();
            prop_assert_eq!(grouped, distinct.len(), "a proxy is in one group at most");
            let after = all_versions(&mesh);

            let proxies: BTreeSet<&ObjectKey> = before.keys().chain(after.keys()).collect();
            for p in proxies {
                match (before.get(p), after.get(p)) {
                    (Some(_), None) => prop_assert!(changes.gone.contains(p), "{p} vanished unreported"),
                    (old, Some(new)) => {
                        let empty = BTreeMap::new();
                        let old = old.unwrap_or(&empty);
                        let actual: BTreeSet<_> = new.iter().filter(|(k, h)| old.get(*k) != Some(*h)).map(|(k, _)| k.clone())
                            .chain(old.keys().filter(|k| !new.contains_key(*k)).cloned()).collect();
                        let reported: BTreeSet<_> = changes.resources_of(p).into_iter().map(|k| (k.kind, k.name.to_string())).collect();
                        prop_assert_eq!(&actual, &reported, "proxy {} after {:?}", p, s);
                    }
                    (None, None) => {}
                }
            }
        }
        let full = from_scratch(settings(captured, identity), live.into_values());
        prop_assert_eq!(all_versions(&mesh), all_versions(&full));
    }

    #[test]
    fn event_order_does_not_change_any_config(steps in prop::collection::vec(step(), 1..40), seed in any::<u64>(), captured in any::<bool>(), identity in any::<bool>()) {
        let mut live: BTreeMap<(Kind, ObjectKey), Object> = BTreeMap::new();
        for s in &steps {
            let (_, id, obj) = event(s);
            match obj {
                Some(o) => { live.insert(id, o); }
                None => { live.remove(&id); }
            }
        }
        let objects: Vec<Object> = live.into_values().collect();
        let reference = all_versions(&from_scratch(settings(captured, identity), objects.clone()));

        // The same objects, shuffled and applied one by one.
        let mut shuffled = objects;
        let mut state = seed;
        for i in (1..shuffled.len()).rev() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let j = usize::try_from(state >> 33).expect("fits") % (i + 1);
            shuffled.swap(i, j);
        }
        let mut mesh = Mesh::new(settings(captured, identity));
        for o in shuffled {
            mesh.apply([Event::Upsert(o)]);
        }
        prop_assert_eq!(all_versions(&mesh), reference);
    }
}
