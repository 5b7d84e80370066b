//! The generated CRDs must be what a real API server accepts and what `kubectl explain` can
//! describe: structural schemas (every node typed, no `$ref`, no typed branches under
//! `anyOf`/`oneOf`), defaults that satisfy their own schema, a description on every field,
//! and printer columns that point at fields that exist.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use remora_api::{SidecarPolicy, TrafficRoute};
use serde_json::Value;

fn crds() -> Vec<CustomResourceDefinition> {
    vec![SidecarPolicy::crd(), TrafficRoute::crd()]
}

fn schema_of(crd: &CustomResourceDefinition) -> Value {
    let s = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("schema");
    serde_json::to_value(s).expect("json")
}

/// Walks every schema node, calling `f(path, node)`.
fn walk(path: &str, node: &Value, f: &mut dyn FnMut(&str, &Value)) {
    f(path, node);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            walk(&format!("{path}.{name}"), child, f);
        }
    }
    if let Some(items) = node.get("items") {
        walk(&format!("{path}[]"), items, f);
    }
    if let Some(extra) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(&format!("{path}{{}}"), extra, f);
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for (i, branch) in node
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            walk(&format!("{path}<{key}{i}>"), branch, f);
        }
    }
}

fn is_branch(path: &str) -> bool {
    path.contains("<anyOf") || path.contains("<oneOf") || path.contains("<allOf")
}

#[test]
fn schemas_are_structural() {
    for crd in crds() {
        let mut problems = Vec::new();
        walk("", &schema_of(&crd), &mut |path, node| {
            let flag = |k: &str| node.get(k).and_then(Value::as_bool).unwrap_or(false);
            let escape =
                flag("x-kubernetes-int-or-string") || flag("x-kubernetes-preserve-unknown-fields");
            if is_branch(path) {
                for forbidden in [
                    "type",
                    "description",
                    "default",
                    "nullable",
                    "additionalProperties",
                ] {
                    if node.get(forbidden).is_some() {
                        problems.push(format!("{path}: `{forbidden}` inside a logical branch"));
                    }
                }
            } else if node.get("type").is_none() && !escape {
                problems.push(format!("{path}: no type"));
            }
            for forbidden in ["$ref", "definitions", "$defs", "$schema", "const", "if"] {
                if node.get(forbidden).is_some() {
                    problems.push(format!(
                        "{path}: `{forbidden}` is not allowed in a CRD schema"
                    ));
                }
            }
            if node.get("properties").is_some() && node.get("additionalProperties").is_some() {
                problems.push(format!(
                    "{path}: properties and additionalProperties together"
                ));
            }
            let typed_object = node.get("type").and_then(Value::as_str) == Some("object");
            if typed_object
                && node.get("properties").is_none()
                && node.get("additionalProperties").is_none()
                && !escape
                && !path.is_empty()
            {
                problems.push(format!(
                    "{path}: an object without properties would be pruned to {{}}"
                ));
            }
        });
        assert!(
            problems.is_empty(),
            "{}: {problems:#?}",
            crd.spec.names.kind
        );
    }
}

#[test]
fn defaults_satisfy_their_own_schema() {
    let mut checked = 0;
    for crd in crds() {
        walk("", &schema_of(&crd), &mut |path, node| {
            if let Some(default) = node.get("default") {
                let mut schema = node.clone();
                schema.as_object_mut().expect("object").remove("default");
                let validator = jsonschema::validator_for(&schema).expect("compiles");
                let errors: Vec<String> = validator
                    .iter_errors(default)
                    .map(|e| e.to_string())
                    .collect();
                assert!(
                    errors.is_empty(),
                    "{}{path}: default {default} breaks its schema: {errors:?}",
                    crd.spec.names.kind
                );
                checked += 1;
            }
        });
    }
    assert!(
        checked >= 10,
        "only {checked} defaults found; did the defaults disappear from the schema?"
    );
}

#[test]
fn every_field_is_described_for_kubectl_explain() {
    for crd in crds() {
        let mut missing = Vec::new();
        walk("", &schema_of(&crd), &mut |path, node| {
            let top_level = matches!(path, ".apiVersion" | ".kind" | ".metadata");
            if !path.is_empty()
                && !top_level
                && !is_branch(path)
                && !path.ends_with("[]")
                && !path.ends_with('}')
                && node.get("description").is_none()
            {
                missing.push(path.to_owned());
            }
        });
        assert!(
            missing.is_empty(),
            "{} fields without a description: {missing:#?}",
            crd.spec.names.kind
        );
    }
}

#[test]
fn printer_columns_point_at_real_fields() {
    for crd in crds() {
        let schema = schema_of(&crd);
        let version = &crd.spec.versions[0];
        let columns = version
            .additional_printer_columns
            .as_deref()
            .unwrap_or_default();
        assert!(
            columns.len() >= 5,
            "{}: too few printer columns",
            crd.spec.names.kind
        );
        for column in columns {
            // `.status.conditions[?(@.type=="X")].status` → status, conditions, status.
            let path = column
                .json_path
                .split('[')
                .next()
                .unwrap_or_default()
                .to_owned()
                + column.json_path.split(']').nth(1).unwrap_or_default();
            let mut node = &schema;
            for part in path.trim_start_matches('.').split('.') {
                if part == "metadata" {
                    break;
                }
                node = node.get("items").unwrap_or(node);
                node = node
                    .get("properties")
                    .and_then(|p| p.get(part))
                    .unwrap_or_else(|| {
                        panic!(
                            "{}: column {} names {path}, which the schema lacks",
                            crd.spec.names.kind, column.name
                        )
                    });
            }
        }
    }
}

#[test]
fn both_resources_are_namespaced_with_a_status_subresource() {
    for crd in crds() {
        assert_eq!(crd.spec.group, remora_api::GROUP);
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, remora_api::VERSION);
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{}: no status subresource",
            crd.spec.names.kind
        );
    }
}

#[test]
fn cel_rules_are_evaluated() {
    // A route without rules passes the OpenAPI schema; only its CEL rule catches it.
    let route: TrafficRoute = serde_json::from_value(serde_json::json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "TrafficRoute",
        "metadata": {"name": "empty", "namespace": "demo"},
        "spec": {"parentRefs": [{"name": "web"}]}
    }))
    .expect("decodes");
    let err = kube::core::cel::validate_cel(&route)
        .expect_err("the CEL rule rejects a route without rules");
    assert!(format!("{err:?}").contains("at least one rule"), "{err:?}");
}
