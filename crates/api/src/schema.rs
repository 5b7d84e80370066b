//! Adjustments to generated schemas that API servers need.

/// Drops `null` from the values an optional enum lists. Kubernetes 1.20 cannot convert a
/// `null` enum value and refuses the whole CRD with an unrelated message; `nullable: true`
/// already lets the field be null, and clients leave an absent field out anyway.
pub(crate) fn no_null_in_enum(schema: &mut schemars::Schema) {
    if let Some(serde_json::Value::Array(values)) = schema.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use crate::{sidecar_policy::SidecarPolicy, traffic_route::TrafficRoute};

    fn nulls_in_enums(value: &serde_json::Value, path: &str, found: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    if k == "enum"
                        && let serde_json::Value::Array(items) = v
                        && items.iter().any(serde_json::Value::is_null)
                    {
                        found.push(path.to_owned());
                    }
                    nulls_in_enums(v, &format!("{path}.{k}"), found);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    nulls_in_enums(v, &format!("{path}[{i}]"), found);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn no_enum_lists_null() {
        let mut found = Vec::new();
        for crd in [TrafficRoute::crd(), SidecarPolicy::crd()] {
            let json = serde_json::to_value(&crd).expect("serializes");
            nulls_in_enums(&json, &crd.metadata.name.unwrap_or_default(), &mut found);
        }
        assert!(found.is_empty(), "enums listing null: {found:?}");
    }
}
