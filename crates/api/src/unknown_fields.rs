//! Fields a manifest sets that its kind has no place for. The API server prunes them without
//! a word, so a misspelt `timeout:` for `timeouts:` would silently do nothing; objects that
//! never meet the API server (local mode, `remora compute`) are checked against the same
//! schema the CRD carries and refused with the field's path instead.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;
use serde_json::Value;

use crate::FieldError;

/// The OpenAPI schema of `K`'s served version, as its CRD publishes it.
pub fn crd_schema<K: CustomResourceExt>() -> JSONSchemaProps {
    K::crd()
        .spec
        .versions
        .into_iter()
        .find_map(|v| v.schema?.open_api_v3_schema)
        .unwrap_or_default()
}

/// The top-level fields every object has, which the API server checks itself.
const OBJECT_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// Every field of `value` that `schema` does not declare, with its path (`spec.http[0].timeout`)
/// and the fields that are there.
pub fn unknown_fields(value: &Value, schema: &JSONSchemaProps) -> Vec<FieldError> {
    let mut found = Vec::new();
    if let Value::Object(fields) = value {
        for (name, v) in fields {
            if OBJECT_FIELDS.contains(&name.as_str()) {
                continue;
            }
            match schema.properties.as_ref().and_then(|p| p.get(name)) {
                Some(s) => walk(v, s, name, &mut found),
                None => found.push(unknown(name, name, schema)),
            }
        }
    }
    found
}

fn walk(value: &Value, schema: &JSONSchemaProps, path: &str, found: &mut Vec<FieldError>) {
    if schema.x_kubernetes_preserve_unknown_fields == Some(true) {
        return;
    }
    match value {
        Value::Object(fields) => {
            for (name, v) in fields {
                let at = format!("{path}.{name}");
                if let Some(s) = schema.properties.as_ref().and_then(|p| p.get(name)) {
                    walk(v, s, &at, found);
                } else if let Some(JSONSchemaPropsOrBool::Schema(s)) = &schema.additional_properties
                {
                    walk(v, s, &at, found);
                } else if schema.properties.is_some() {
                    found.push(unknown(&at, name, schema));
                }
            }
        }
        Value::Array(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(s)) = &schema.items {
                for (i, v) in items.iter().enumerate() {
                    walk(v, s, &format!("{path}[{i}]"), found);
                }
            }
        }
        _ => {}
    }
}

/// An unknown field, naming the known field it was likely meant to be.
fn unknown(path: &str, name: &str, schema: &JSONSchemaProps) -> FieldError {
    let known: Vec<&str> = schema
        .properties
        .iter()
        .flat_map(|p| p.keys())
        .map(String::as_str)
        .collect();
    let hint = match closest(name, &known) {
        Some(k) => format!("did you mean `{k}`?"),
        None if known.is_empty() => "this object takes no fields".to_owned(),
        None => format!("the fields here are {}", known.join(", ")),
    };
    FieldError {
        path: path.to_owned(),
        message: format!(
            "unknown field `{name}`: the API server would drop it and it would do nothing; {hint}"
        ),
        ..FieldError::default()
    }
}

/// The known field within two edits of `name` (case aside), if one is.
fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edits(&name.to_lowercase(), &k.to_lowercase()), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{SidecarPolicy, TrafficRoute};

    fn route(rule: Value) -> Value {
        json!({
            "apiVersion": "remora.dev/v1alpha1", "kind": "TrafficRoute",
            "metadata": {"name": "r", "namespace": "shop", "labels": {"any": "thing"}},
            "spec": {"parentRefs": [{"name": "reviews"}], "http": [rule]}
        })
    }

    #[test]
    fn a_misspelt_field_is_named_with_its_path_and_the_field_meant() {
        let schema = crd_schema::<TrafficRoute>();
        let value = route(json!({"name": "a", "timeout": {"request": "1s"},
            "backendRefs": [{"name": "reviews", "port": 9080, "wieght": 1}]}));
        let found = unknown_fields(&value, &schema);
        let paths: Vec<&str> = found.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["spec.http[0].backendRefs[0].wieght", "spec.http[0].timeout"]
        );
        assert!(
            found[0].message.contains("did you mean `weight`?"),
            "{found:?}"
        );
        assert!(
            found[1].message.contains("did you mean `timeouts`?"),
            "{found:?}"
        );
    }

    #[test]
    fn known_fields_maps_and_metadata_pass() {
        let schema = crd_schema::<TrafficRoute>();
        let value = route(json!({"name": "a", "timeouts": {"request": "1s"},
            "matches": [{"headers": [{"name": "x", "value": "y"}]}],
            "backendRefs": [{"name": "reviews", "port": 9080, "weight": 1}]}));
        assert_eq!(unknown_fields(&value, &schema), []);

        let policy = json!({"apiVersion": "remora.dev/v1alpha1", "kind": "SidecarPolicy",
            "metadata": {"name": "p"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "proxy": {"image": "envoyproxy/envoy", "version": "v1.40.0",
                    "resources": {"limits": {"memory": "128Mi"}}}}});
        assert_eq!(unknown_fields(&policy, &crd_schema::<SidecarPolicy>()), []);
    }

    #[test]
    fn a_field_far_from_every_known_one_lists_the_known_ones() {
        let value = json!({"spec": {"parentRefs": [], "colour": "blue"}});
        let found = unknown_fields(&value, &crd_schema::<TrafficRoute>());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "spec.colour");
        assert!(
            found[0].message.contains("the fields here are "),
            "{found:?}"
        );
        assert!(found[0].message.contains("parentRefs"), "{found:?}");
    }
}
