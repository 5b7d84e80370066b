//! The generator builds what its shape says, the same way every time, and a mesh the model
//! accepts without a problem: a benchmark of a mesh full of rejected routes would measure
//! the wrong thing.

use std::collections::BTreeMap;

use remora_model::{
    Mesh,
    config::{Resource, ResourceType},
    input::{Event, Kind, MeshSettings, Object, ObjectKey},
};
use remora_synthetic::{Shape, Synthetic};

/// Small enough for a debug build, with every kind of Service, route and namespace.
fn small(egress: bool) -> Shape {
    Shape {
        namespaces: 6,
        shared_namespaces: 2,
        services: 30,
        pods: 300,
        routes: 60,
        egress,
        seed: 42,
    }
}

fn mesh(objects: Vec<Object>) -> Mesh {
    let mut m = Mesh::new(MeshSettings::default());
    m.apply(objects.into_iter().map(Event::Upsert));
    m
}

fn counts(objects: &[Object]) -> BTreeMap<Kind, usize> {
    let mut out = BTreeMap::new();
    for o in objects {
        *out.entry(o.kind()).or_default() += 1;
    }
    out
}

/// The virtual host names of one proxy's outbound HTTP route configs.
fn vhosts(m: &Mesh, proxy: &ObjectKey) -> Vec<String> {
    let config = m.proxy_config(proxy).expect("proxy has a config");
    config
        .of_type(ResourceType::RouteConfig)
        .filter_map(|(k, r)| match r {
            Resource::RouteConfig(rc) if !k.name.starts_with("inbound") => Some(rc),
            _ => None,
        })
        .flat_map(|rc| {
            rc.value
                .virtual_hosts
                .iter()
                .map(|v| v.value.name.to_string())
        })
        .collect()
}

#[test]
fn counts_match_the_shape() {
    for egress in [false, true] {
        let shape = small(egress);
        let objects = Synthetic::new(shape.clone()).objects();
        let c = counts(&objects);
        assert_eq!(c[&Kind::Namespace], shape.namespaces + 1, "plus the root");
        assert_eq!(c[&Kind::Service], shape.services);
        assert_eq!(c[&Kind::EndpointSlice], shape.services);
        assert_eq!(c[&Kind::Pod], shape.pods);
        assert_eq!(c[&Kind::TrafficRoute], shape.routes);
        let policies = 1 + if egress { shape.namespaces } else { 0 };
        assert_eq!(c[&Kind::SidecarPolicy], policies);
    }
    let reference = Shape::reference();
    let c = counts(&Synthetic::new(reference.clone()).objects());
    assert_eq!(c[&Kind::Service], 1_000);
    assert_eq!(c[&Kind::Pod], 10_000);
    assert_eq!(c[&Kind::TrafficRoute], 2_000);
    assert_eq!(reference.namespaces, 50);
}

#[test]
fn deterministic_for_a_seed() {
    let a = format!("{:?}", Synthetic::new(small(true)).objects());
    let b = format!("{:?}", Synthetic::new(small(true)).objects());
    assert_eq!(a, b);
    let other = Shape {
        seed: 43,
        ..small(true)
    };
    assert_ne!(a, format!("{:?}", Synthetic::new(other).objects()));
}

#[test]
fn keys_are_unique() {
    let objects = Synthetic::new(Shape::reference()).objects();
    let mut keys: Vec<(Kind, ObjectKey)> = objects.iter().map(|o| (o.kind(), o.key())).collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n);
}

#[test]
fn the_model_accepts_the_mesh_and_configures_every_pod() {
    for egress in [false, true] {
        let shape = small(egress);
        let synthetic = Synthetic::new(shape.clone());
        let objects = synthetic.objects();
        let routes: Vec<ObjectKey> = objects
            .iter()
            .filter(|o| o.kind() == Kind::TrafficRoute)
            .map(Object::key)
            .collect();
        let policies: Vec<ObjectKey> = objects
            .iter()
            .filter(|o| o.kind() == Kind::SidecarPolicy)
            .map(Object::key)
            .collect();
        let m = mesh(objects);
        assert_eq!(m.proxies().count(), shape.pods);
        for p in m.proxies() {
            let config = m.proxy_config(p).expect("listed proxy has a config");
            for kind in ResourceType::ALL {
                assert!(config.of_type(kind).next().is_some(), "{p} has no {kind:?}");
            }
            let governing = m.proxy_policy(p).expect("every proxy has a policy");
            let expected = if egress {
                p.namespace.as_str()
            } else {
                "remora-system"
            };
            assert_eq!(governing.namespace, expected);
        }
        for r in &routes {
            assert_eq!(m.route_validation(r), Some(&[][..]), "{r}");
            assert_eq!(m.route_problems(r), vec![], "{r}");
        }
        for p in &policies {
            assert_eq!(m.policy_validation(p), Some(&[][..]), "{p}");
        }
    }
}

#[test]
fn egress_scope_bounds_what_a_proxy_sees() {
    let shape = small(true);
    let m = mesh(Synthetic::new(shape.clone()).objects());
    let open = mesh(Synthetic::new(small(false)).objects());
    let team_proxy = m
        .proxies()
        .find(|p| p.namespace.starts_with("team-"))
        .expect("a team namespace has pods")
        .clone();
    let hosts = vhosts(&m, &team_proxy);
    assert!(!hosts.is_empty());
    for h in &hosts {
        let ns = h.split('.').nth(1).expect("name.namespace.svc...");
        assert!(
            ns == team_proxy.namespace || ns.starts_with("shared-"),
            "{team_proxy} reaches {h}"
        );
    }
    assert!(hosts.len() < vhosts(&open, &team_proxy).len());
}

#[test]
fn changes_change_something_and_revert() {
    let synthetic = Synthetic::new(small(false));
    let mut m = mesh(synthetic.objects());
    for i in [0, 7, 31, 59] {
        let changed = m.apply([Event::Upsert(synthetic.route_change(i))]);
        assert!(!changed.proxies().is_empty(), "route {i} changed nothing");
        let back = m.apply([Event::Upsert(synthetic.route(i))]);
        assert_eq!(
            back.proxies().into_iter().collect::<Vec<_>>(),
            changed.proxies().into_iter().collect::<Vec<_>>()
        );
        assert!(m.apply([Event::Upsert(synthetic.route(i))]).is_empty());
    }
    for j in [0, 13, 29] {
        let changed = m.apply([Event::Upsert(synthetic.endpoint_change(j))]);
        assert_eq!(
            changed.proxies().len(),
            small(false).pods,
            "every proxy reaches {j}"
        );
        assert!(
            changed
                .proxies()
                .into_iter()
                .flat_map(|p| changed.resources_of(p))
                .all(|k| k.kind == ResourceType::Endpoints)
        );
        assert!(
            !m.apply([Event::Upsert(synthetic.endpoint_slice(j))])
                .is_empty()
        );
    }
    let (svc, port) = synthetic.route_parent(0).expect("route 0 exists");
    assert_eq!(Some(svc), synthetic.service_key(0));
    assert_eq!(port, 8080);
}
