//! Rules that can never match: HTTP rules are tried in order, so a rule after one that takes
//! every request is dead.

use remora_api::traffic_route::{HttpMatch, PathMatchType, TrafficRouteSpec};

/// Each HTTP rule that an earlier one shadows: its field path and why.
pub(crate) fn shadowed_rules(spec: &TrafficRouteSpec) -> Vec<(String, String)> {
    let Some(first) = spec.http.iter().position(|r| takes_everything(&r.matches)) else {
        return Vec::new();
    };
    let catcher = rule_name(spec, first);
    (first + 1..spec.http.len())
        .map(|i| {
            let message = format!(
                "{} can never match: {catcher} before it takes every request; move it \
                 before {catcher} or give {catcher} matches",
                rule_name(spec, i)
            );
            (format!("spec.http[{i}]"), message)
        })
        .collect()
}

/// Whether a rule's matches take every request: no matches, or one entry that only asks
/// for a path under `/`.
fn takes_everything(matches: &[HttpMatch]) -> bool {
    matches.is_empty()
        || matches.iter().any(|m| {
            let any_path = m.path.as_ref().is_none_or(|p| {
                p.kind == PathMatchType::PathPrefix && p.value.trim_end_matches('/').is_empty()
            });
            any_path && m.headers.is_empty() && m.query_params.is_empty() && m.method.is_none()
        })
}

/// `rule "name"` or `rule spec.http[i]` for people.
fn rule_name(spec: &TrafficRouteSpec, i: usize) -> String {
    match &spec.http[i].name {
        Some(name) => format!("rule {name:?}"),
        None => format!("rule spec.http[{i}]"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(http: serde_json::Value) -> TrafficRouteSpec {
        serde_json::from_value(json!({"parentRefs": [{"name": "web"}], "http": http}))
            .expect("a spec")
    }

    #[test]
    fn a_rule_after_a_catch_all_is_shadowed_and_named() {
        let s = spec(json!([
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}], "backendRefs": [{"name": "a"}]},
            {"name": "all", "matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": [{"name": "b"}]},
            {"name": "late", "matches": [{"path": {"type": "Exact", "value": "/x"}}], "backendRefs": [{"name": "c"}]},
        ]));
        let found = shadowed_rules(&s);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "spec.http[2]");
        assert!(
            found[0]
                .1
                .starts_with(r#"rule "late" can never match: rule "all""#),
            "{}",
            found[0].1
        );
    }

    #[test]
    fn narrower_or_last_catch_alls_shadow_nothing() {
        let s = spec(json!([
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}, "method": "GET"}], "backendRefs": [{"name": "a"}]},
            {"matches": [{"headers": [{"name": "x-user", "value": "a"}]}], "backendRefs": [{"name": "a"}]},
            {"matches": [{"path": {"type": "Exact", "value": "/"}}], "backendRefs": [{"name": "a"}]},
            {"backendRefs": [{"name": "b"}]},
        ]));
        assert_eq!(shadowed_rules(&s), []);
        let no_matches = spec(json!([
            {"backendRefs": [{"name": "b"}]},
            {"matches": [{"path": {"type": "Exact", "value": "/x"}}], "backendRefs": [{"name": "a"}]},
        ]));
        assert_eq!(shadowed_rules(&no_matches)[0].0, "spec.http[1]");
    }
}
