//! Label selectors, evaluated as Kubernetes does.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::input::Labels;

/// Whether `labels` satisfy `selector`. An empty selector selects everything. Operators the
/// API rejects (validation reports them) select nothing, so a typo never widens a policy.
pub fn matches(selector: &LabelSelector, labels: &Labels) -> bool {
    let exact = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    exact
        && selector.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// Whether a subset (plain label equality) contains a pod with `labels`.
pub fn subset_contains(subset: &Labels, labels: &Labels) -> bool {
    subset.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use remora_test_support::labels;

    use super::*;

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn selector_semantics() {
        let pod = labels(&[("app", "web"), ("tier", "front")]);
        let sel =
            |match_labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>| LabelSelector {
                match_labels: Some(labels(match_labels)),
                match_expressions: Some(exprs),
            };
        assert!(matches(&LabelSelector::default(), &pod));
        assert!(matches(&sel(&[("app", "web")], vec![]), &pod));
        assert!(!matches(&sel(&[("app", "api")], vec![]), &pod));
        assert!(matches(
            &sel(&[], vec![expr("tier", "In", &["front", "back"])]),
            &pod
        ));
        assert!(!matches(
            &sel(&[], vec![expr("tier", "NotIn", &["front"])]),
            &pod
        ));
        assert!(matches(
            &sel(&[], vec![expr("zone", "NotIn", &["a"])]),
            &pod
        ));
        assert!(matches(&sel(&[], vec![expr("app", "Exists", &[])]), &pod));
        assert!(!matches(
            &sel(&[], vec![expr("app", "DoesNotExist", &[])]),
            &pod
        ));
        assert!(!matches(
            &sel(&[], vec![expr("app", "Equals", &["web"])]),
            &pod
        ));
    }

    #[test]
    fn subsets() {
        let pod = labels(&[("app", "web"), ("version", "v2")]);
        assert!(subset_contains(&Labels::new(), &pod));
        assert!(subset_contains(&labels(&[("version", "v2")]), &pod));
        assert!(!subset_contains(&labels(&[("version", "v1")]), &pod));
    }
}
