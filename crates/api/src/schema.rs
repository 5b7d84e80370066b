//! Adjustments to generated schemas that API servers need.

/// Drops `null` from the values an optional enum lists. Kubernetes 1.20 cannot convert a
/// `null` enum value and refuses the whole CRD with an unrelated message; `nullable: true`
/// already lets the field be null, and clients leave an absent field out anyway.
pub(crate) fn no_null_in_enum(schema: &mut schemars::Schema) {
    if let Some(serde_json::Value::Array(values)) = schema.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
}

/// Turns the `oneOf` that schemars makes for a unit enum with documented variants back into
/// a plain string `enum`. The API server keeps no description per value anyway (the enum's
/// own says what each means), and an `Option` of a `oneOf` would take the enum's description
/// in place of its field's.
pub(crate) fn plain_enum(schema: &mut schemars::Schema) {
    let Some(serde_json::Value::Array(variants)) = schema.get("oneOf") else {
        return;
    };
    let values: Option<Vec<serde_json::Value>> =
        variants.iter().map(|v| v.get("const").cloned()).collect();
    let (Some(values), Some(object)) = (values, schema.as_object_mut()) else {
        return;
    };
    object.remove("oneOf");
    object.insert("type".into(), "string".into());
    object.insert("enum".into(), values.into());
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
