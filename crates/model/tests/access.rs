//! Access policies: which workloads' inbound chains carry which rules, in the steps their
//! sidecars evaluate them, and what a broken edit or a delete does.

mod support;

use std::sync::Arc;

use remora_api::AccessPolicy;
use remora_model::{
    Mesh,
    config::{
        Accepts, Addressing, Authorization, Caller, IdentityMatch, PathMatch, ProxyConfig,
        Resource, ResourceType,
    },
    input::{Event, IdentitySettings, Kind, MeshSettings, Object},
};
use serde_json::{Value, json};
use support::*;

fn access(ns: &str, name: &str, generation: i64, spec: Value) -> Event {
    let mut policy: AccessPolicy = serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name, "generation": generation},
        "spec": spec,
    }))
    .expect("an AccessPolicy");
    policy.metadata.creation_timestamp = Some(time(generation));
    up(Object::AccessPolicy(Box::new(policy)))
}

fn captured() -> Mesh {
    Mesh::new(MeshSettings {
        addressing: Addressing::Captured,
        identity: Some(IdentitySettings {
            trust_domain: "example.org".into(),
        }),
        ..MeshSettings::default()
    })
}

/// `payments` and `orders` with sidecars, and a pod without one, in `shop`.
fn scene() -> Vec<Event> {
    vec![
        up(mk_ns("shop")),
        up(mk_policy("remora-system", "fleet", 1, policy_spec())),
        up(mk_pod(
            "shop",
            "payments-1",
            &[("app", "payments")],
            "10.0.0.1",
            true,
        )),
        up(mk_pod(
            "shop",
            "orders-1",
            &[("app", "orders")],
            "10.0.0.2",
            true,
        )),
        up(mk_pod(
            "shop",
            "plain-1",
            &[("app", "plain")],
            "10.0.0.3",
            false,
        )),
    ]
}

fn charge_policy() -> Value {
    json!({
        "selector": {"matchLabels": {"app": "payments"}},
        "rules": [
            {"name": "orders-charge",
             "from": [{"serviceAccounts": ["orders"]}, {"namespaces": ["billing"]}],
             "to": {"ports": [8080], "http": {"paths": [{"type": "Exact", "value": "/charge"}],
                                             "methods": ["POST"]}}},
            {"name": "no-plaintext", "action": "Deny", "from": [{"authenticated": false}]},
            {"name": "legacy", "action": "Deny", "mode": "Audit",
             "from": [{"serviceAccounts": ["legacy"]}]},
            {"name": "health", "mode": "Audit", "to": {"http": {"paths": [{"value": "/healthz"}]}}}
        ]
    })
}

/// The authorization of a proxy's inbound HTTP port (its route config's host), which the
/// passthrough to undeclared ports carries too; `None` when neither has one. Panics if they
/// disagree, or if an HTTP chain carries the rules (they belong in the routes).
fn authz(config: &ProxyConfig) -> Option<Arc<Authorization>> {
    let mut seen = Vec::new();
    for (_, r) in config.of_type(ResourceType::RouteConfig) {
        let Resource::RouteConfig(rc) = r else {
            continue;
        };
        if rc.value.name.starts_with("inbound|") {
            seen.extend(
                rc.value
                    .virtual_hosts
                    .iter()
                    .map(|vh| vh.value.authz.clone()),
            );
        }
    }
    for (_, r) in config.of_type(ResourceType::Listener) {
        let Resource::Listener(l) = r else { continue };
        match &l.value.accepts {
            Accepts::Captured { chains, authz, .. } if l.value.name.as_ref() == "inbound" => {
                seen.push(authz.clone());
                assert!(
                    chains.iter().all(|c| c.value.authz.is_none()),
                    "HTTP chains"
                );
            }
            Accepts::Bound { authz, .. } if l.value.name.starts_with("inbound|") => {
                assert!(authz.is_none(), "an HTTP listener")
            }
            _ => {}
        }
    }
    assert!(!seen.is_empty(), "an inbound route config");
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:#?}");
    seen.pop().flatten()
}

fn names(rules: &[remora_model::config::AccessRule]) -> Vec<&str> {
    rules.iter().map(|r| r.name.as_ref()).collect()
}

#[test]
fn the_selected_workloads_chains_carry_the_rules_in_their_steps() {
    let mut m = captured();
    m.apply(scene());
    m.apply([access("shop", "payments", 1, charge_policy())]);
    let payments = m.proxy_config(&key("shop", "payments-1")).expect("a proxy");
    let a = authz(&payments).expect("payments is protected");
    assert_eq!(names(&a.deny), ["shop/payments/no-plaintext"]);
    assert_eq!(
        names(a.allow.as_deref().expect("allow")),
        ["shop/payments/orders-charge"]
    );
    assert_eq!(names(&a.audit_deny), ["shop/payments/legacy"]);
    // As it would be with the audited allow rule enforced: the enforced ones, then it.
    assert_eq!(
        names(a.audit_allow.as_deref().expect("audit allow")),
        ["shop/payments/orders-charge", "shop/payments/health"]
    );
    let charge = &a.allow.as_ref().expect("allow")[0];
    assert_eq!(
        charge.from,
        [
            Caller {
                identities: vec![IdentityMatch::Exact(
                    "spiffe://example.org/ns/shop/sa/orders".into()
                )],
                authenticated: Some(true),
            },
            Caller {
                identities: vec![IdentityMatch::Prefix(
                    "spiffe://example.org/ns/billing/sa/".into()
                )],
                authenticated: Some(true),
            }
        ]
    );
    assert_eq!(charge.ports, [8080]);
    let http = charge.http.as_ref().expect("http conditions");
    assert_eq!(http.paths, [PathMatch::Exact("/charge".into())]);
    assert_eq!(http.methods, ["POST"]);
    assert_eq!(
        a.deny[0].from,
        [Caller {
            identities: vec![],
            authenticated: Some(false)
        }]
    );

    let orders = m.proxy_config(&key("shop", "orders-1")).expect("a proxy");
    assert_eq!(authz(&orders), None, "orders is not selected");
    assert_eq!(
        m.access_policy_proxies(&key("shop", "payments")),
        [key("shop", "payments-1")]
    );
    assert_eq!(
        m.access_policy_unknown_accounts(&key("shop", "payments")),
        ["orders", "legacy"]
    );
}

#[test]
fn a_root_policy_protects_every_namespace_and_fields_of_one_entry_narrow_each_other() {
    let mut m = captured();
    m.apply(scene());
    m.apply([access(
        "remora-system",
        "mesh-wide",
        1,
        json!({"rules": [{"name": "shop-only", "action": "Deny", "from": [
            // Both hold only for shop's orders: one exact ID.
            {"serviceAccounts": ["shop/orders", "other/orders"], "namespaces": ["shop"]},
            // Nothing is both: the entry can match no one, so it is left out.
            {"identities": ["spiffe://example.org/ns/a/sa/b"], "namespaces": ["c"]}
        ]}]}),
    )]);
    for pod in ["payments-1", "orders-1"] {
        let config = m.proxy_config(&key("shop", pod)).expect("a proxy");
        let a = authz(&config).expect("protected");
        assert_eq!(
            a.deny[0].from,
            [Caller {
                identities: vec![IdentityMatch::Exact(
                    "spiffe://example.org/ns/shop/sa/orders".into()
                )],
                authenticated: Some(true),
            }]
        );
    }
}

#[test]
fn a_broken_edit_keeps_the_last_good_rules_and_a_delete_removes_them() {
    let mut m = captured();
    m.apply(scene());
    m.apply([access("shop", "payments", 1, charge_policy())]);
    let proxy = key("shop", "payments-1");
    let before = m.proxy_config(&proxy).expect("a proxy").versions();
    let mut broken = charge_policy();
    broken["rules"][0]["to"]["http"]["paths"][0]["value"] = json!("charge");
    let changes = m.apply([access("shop", "payments", 2, broken)]);
    assert!(changes.is_empty(), "nothing changes for the proxies");
    assert_eq!(m.proxy_config(&proxy).expect("a proxy").versions(), before);
    let problems = m
        .access_policy_validation(&key("shop", "payments"))
        .expect("held");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].path, "spec.rules[0].to.http.paths[0].value");
    assert_eq!(
        m.access_policy_generation(&key("shop", "payments")),
        Some(2)
    );

    m.apply([Event::Delete(Kind::AccessPolicy, key("shop", "payments"))]);
    assert_eq!(authz(&m.proxy_config(&proxy).expect("a proxy")), None);
}

#[test]
fn explicit_addressing_puts_the_rules_in_the_inbound_routes_too() {
    let mut m = Mesh::new(MeshSettings::default());
    m.apply(scene());
    m.apply([access("shop", "payments", 1, charge_policy())]);
    let payments = m.proxy_config(&key("shop", "payments-1")).expect("a proxy");
    let a = authz(&payments).expect("protected");
    // Without workload identity, IDs keep the default trust domain; no caller proves one.
    assert_eq!(
        a.allow.as_ref().expect("allow")[0].from[0].identities,
        [IdentityMatch::Exact(
            "spiffe://cluster.local/ns/shop/sa/orders".into()
        )]
    );
}
