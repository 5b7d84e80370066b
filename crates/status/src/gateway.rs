//! The status of a Gateway API route in Gateway API's shape: one entry per Service parent in
//! `status.parents`, under Remora's controller name, beside the entries other controllers
//! own (Gateways' controllers, another mesh), which are kept as they are.
//!
//! Each entry has Gateway API's `Accepted` and `ResolvedRefs` with their standard reasons,
//! and `remora.dev/Programmed`: how the affected proxies took the config, with Envoy's
//! message when one rejected it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use remora_api::{conditions, gateway::ParentReference};
use remora_model::{input::ObjectKey, routing::Problem};
use serde_json::Value;

use crate::{
    RouteFacts,
    condition::{find, keep_transition_times},
    route_status,
};

/// The `controllerName` of Remora's entries.
pub const CONTROLLER_NAME: &str = "remora.dev/mesh";
/// The condition that says how the affected proxies took the route's config.
pub const PROGRAMMED: &str = "remora.dev/Programmed";

/// `status.parents` as it should be: `current`'s entries of other controllers, then one of
/// ours for each Service parent in `parents` (of a route in `namespace`). Conditions whose
/// status did not change keep their `lastTransitionTime`.
pub fn route_parents(
    namespace: &str,
    parents: &[ParentReference],
    facts: &RouteFacts<'_>,
    current: &[Value],
    now: Time,
) -> Vec<Value> {
    let ours =
        |v: &&Value| v.get("controllerName").and_then(Value::as_str) == Some(CONTROLLER_NAME);
    let mut out: Vec<Value> = current.iter().filter(|v| !ours(v)).cloned().collect();
    let whole = route_status(facts, None, now);
    for parent in parents.iter().filter(|p| p.is_service()) {
        let written = serde_json::to_value(parent).unwrap_or_default();
        let previous: Vec<Condition> = current
            .iter()
            .filter(ours)
            .find(|v| v.get("parentRef") == Some(&written))
            .and_then(|v| serde_json::from_value(v.get("conditions")?.clone()).ok())
            .unwrap_or_default();
        let service = ObjectKey::new(
            parent.namespace.as_deref().unwrap_or(namespace),
            &parent.name,
        );
        let mut conditions = parent_conditions(&service, facts, &whole.conditions);
        keep_transition_times(&mut conditions, &previous);
        out.push(serde_json::json!({
            "parentRef": written,
            "controllerName": CONTROLLER_NAME,
            "conditions": conditions,
        }));
    }
    out
}

/// Whether two `status.parents` say the same, in whatever order.
pub fn same_parents(a: &[Value], b: &[Value]) -> bool {
    let sorted = |v: &[Value]| {
        let mut s: Vec<String> = v.iter().map(Value::to_string).collect();
        s.sort();
        s
    };
    sorted(a) == sorted(b)
}

/// The conditions of one Service parent, from those `route_status` gives the whole route.
fn parent_conditions(
    service: &ObjectKey,
    facts: &RouteFacts<'_>,
    whole: &[Condition],
) -> Vec<Condition> {
    let like = |type_: &str| {
        find(whole, type_)
            .cloned()
            .expect("route_status sets all three")
    };
    let mut accepted = like(conditions::ACCEPTED);
    let mut resolved = like(conditions::RESOLVED_REFS);
    let mut programmed = like(conditions::PROGRAMMED);
    programmed.type_ = PROGRAMMED.into();
    let at_parent = facts.problems.iter().find(|p| is_about_parent(p, service));
    if !facts.validation.is_empty() {
        accepted.reason = "UnsupportedValue".into();
    } else if let Some(p) = at_parent {
        accepted.status = "False".into();
        accepted.reason = match p {
            Problem::Conflicted { .. } => "Conflicted",
            _ => "NoMatchingParent",
        }
        .into();
        accepted.message = p.to_string();
    }
    let others: Vec<&Problem> = facts
        .problems
        .iter()
        .filter(|p| !is_about_parent(p, service) && !matches!(p, Problem::Conflicted { .. }))
        .collect();
    match others.first() {
        None => {
            resolved.status = "True".into();
            resolved.reason = "ResolvedRefs".into();
            resolved.message = "Every backend the route names exists and may be sent to.".into();
        }
        Some(worst) => {
            resolved.status = "False".into();
            resolved.reason = match worst {
                Problem::RefNotPermitted { .. } => "RefNotPermitted",
                Problem::ProtocolMismatch { .. } => "UnsupportedProtocol",
                _ => "BackendNotFound",
            }
            .into();
        }
    }
    vec![accepted, resolved, programmed]
}

/// Whether a problem is about the parent Service itself rather than a backend.
fn is_about_parent(problem: &Problem, service: &ObjectKey) -> bool {
    match problem {
        Problem::Conflicted { service: s, .. } | Problem::ParentPortNotFound { service: s, .. } => {
            s == service
        }
        Problem::BackendNotFound { path, service: s } => path == "spec.parentRefs" && s == service,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ProxyTally, condition::tests::at};

    fn parent_refs() -> Vec<ParentReference> {
        serde_json::from_value(serde_json::json!([
            {"group": "", "kind": "Service", "name": "reviews", "port": 9080},
            {"name": "edge"}
        ]))
        .expect("parents")
    }

    fn condition<'v>(entry: &'v Value, type_: &str) -> &'v Value {
        entry["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == type_))
            .unwrap_or_else(|| panic!("no {type_} in {entry}"))
    }

    #[test]
    fn each_service_parent_gets_an_entry_of_ours_beside_the_others() {
        let foreign = serde_json::json!({
            "parentRef": {"name": "edge"}, "controllerName": "example.com/gateway",
            "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]
        });
        let refused = [Problem::RefNotPermitted {
            path: "spec.http[0].backendRefs[0]".into(),
            service: ObjectKey::new("team-b", "reviews-v2"),
            from: "team-a".into(),
            kind: remora_model::routing::RouteKind::HttpRoute,
        }];
        let facts = RouteFacts {
            generation: Some(3),
            problems: &refused,
            proxies: ProxyTally::default(),
            ..Default::default()
        };
        let parents = route_parents(
            "team-a",
            &parent_refs(),
            &facts,
            std::slice::from_ref(&foreign),
            at(100),
        );
        assert_eq!(parents.len(), 2, "{parents:#?}");
        assert_eq!(
            parents[0], foreign,
            "another controller's entry is kept as it is"
        );
        let ours = &parents[1];
        assert_eq!(ours["controllerName"], CONTROLLER_NAME);
        assert_eq!(
            ours["parentRef"],
            serde_json::json!({"group": "", "kind": "Service", "name": "reviews", "port": 9080})
        );
        assert_eq!(condition(ours, "Accepted")["status"], "True");
        let refs = condition(ours, "ResolvedRefs");
        assert_eq!(
            (&refs["status"], &refs["reason"]),
            (&"False".into(), &"RefNotPermitted".into())
        );
        assert_eq!(refs["observedGeneration"], 3);
        assert!(condition(ours, PROGRAMMED)["reason"].is_string());

        // Recomputed later with the same facts: the same, times included.
        let again = route_parents("team-a", &parent_refs(), &facts, &parents, at(500));
        assert!(same_parents(&again, &parents), "{again:#?}");
    }

    #[test]
    fn a_conflict_on_the_parent_is_not_accepted() {
        let conflicted = [Problem::Conflicted {
            service: ObjectKey::new("team-a", "reviews"),
            port: 9080,
            winner: (&ObjectKey::new("team-a", "older")).into(),
        }];
        let facts = RouteFacts {
            problems: &conflicted,
            ..Default::default()
        };
        let parents = route_parents("team-a", &parent_refs(), &facts, &[], at(100));
        let accepted = condition(&parents[0], "Accepted");
        assert_eq!(
            (&accepted["status"], &accepted["reason"]),
            (&"False".into(), &"Conflicted".into())
        );
        assert!(
            accepted["message"]
                .as_str()
                .is_some_and(|m| m.contains("team-a/older")),
            "{accepted}"
        );
        assert_eq!(condition(&parents[0], "ResolvedRefs")["status"], "True");
    }

    #[test]
    fn entries_compare_in_any_order() {
        let (a, b) = (serde_json::json!({"a": 1}), serde_json::json!({"b": 2}));
        assert!(same_parents(
            &[a.clone(), b.clone()],
            &[b.clone(), a.clone()]
        ));
        assert!(!same_parents(std::slice::from_ref(&a), &[a.clone(), b]));
    }
}
