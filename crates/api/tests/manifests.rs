//! Every example manifest is accepted by all three checks a user meets (the CRD's OpenAPI
//! schema, its CEL rules, `validate()`); every deliberately broken one is rejected with a
//! message that names the field.

use std::{fs, path::PathBuf};

use kube::CustomResourceExt;
use remora_api::{AccessPolicy, SidecarPolicy, TrafficRoute, Validate, decode};
use serde_json::Value;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn yaml_documents(path: &PathBuf) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

fn openapi_schema<K: CustomResourceExt>() -> Value {
    let crd = K::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("schema");
    serde_json::to_value(schema).expect("schema to json")
}

/// What our own code says: decoding problems and `validate()` problems, as `path: message`.
fn our_errors(doc: &Value) -> Vec<String> {
    match doc["kind"].as_str() {
        Some("TrafficRoute") => errors_of(decode::<TrafficRoute>(doc.clone())),
        Some("SidecarPolicy") => errors_of(decode::<SidecarPolicy>(doc.clone())),
        Some("AccessPolicy") => errors_of(decode::<AccessPolicy>(doc.clone())),
        other => panic!("unexpected kind {other:?}"),
    }
}

fn errors_of<K: Validate>(decoded: Result<K, remora_api::FieldError>) -> Vec<String> {
    match decoded {
        Err(e) => vec![e.to_string()],
        Ok(obj) => obj
            .validate()
            .err()
            .map(|e| e.0.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
    }
}

/// What the API server would say, short of a real one: the OpenAPI schema and the CEL rules.
fn server_errors(doc: &Value) -> Vec<String> {
    let (schema, cel) = match doc["kind"].as_str() {
        Some("TrafficRoute") => (
            openapi_schema::<TrafficRoute>(),
            decode::<TrafficRoute>(doc.clone()).map(|o| kube::core::cel::validate_cel(&o)),
        ),
        Some("SidecarPolicy") => (
            openapi_schema::<SidecarPolicy>(),
            decode::<SidecarPolicy>(doc.clone()).map(|o| kube::core::cel::validate_cel(&o)),
        ),
        Some("AccessPolicy") => (
            openapi_schema::<AccessPolicy>(),
            decode::<AccessPolicy>(doc.clone()).map(|o| kube::core::cel::validate_cel(&o)),
        ),
        other => panic!("unexpected kind {other:?}"),
    };
    let validator = jsonschema::validator_for(&schema).expect("the CRD schema compiles");
    let mut errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("schema {}: {e}", e.instance_path()))
        .collect();
    if let Ok(Err(cel_errors)) = cel {
        errors.push(format!("cel: {cel_errors:?}"));
    }
    errors
}

#[test]
fn every_example_is_valid() {
    let mut files: Vec<_> = fs::read_dir(repo_root().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut checked = 0;
    for file in &files {
        // Plain Kubernetes objects (the examples' namespaces) are the API server's business.
        let ours_only = yaml_documents(file).into_iter().filter(|doc| {
            doc["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("remora.dev/"))
        });
        for doc in ours_only {
            checked += 1;
            let ours = our_errors(&doc);
            assert!(ours.is_empty(), "{}: {ours:#?}", file.display());
            let server = server_errors(&doc);
            assert!(server.is_empty(), "{}: {server:#?}", file.display());
        }
    }
    assert!(checked >= 6, "examples went missing: {files:?}");
}

/// Each broken manifest starts with `# expect: <field path>` and `# message: <text>`, and
/// optionally `# server: rejects` when the schema or a CEL rule must reject it as well.
#[test]
fn every_broken_manifest_names_its_field() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/invalid");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .expect("tests/invalid")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 15,
        "need at least 15 broken manifests, found {}",
        files.len()
    );
    for file in files {
        let text = fs::read_to_string(&file).expect("read");
        let header = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("# {key}: ")).map(str::to_owned))
        };
        let expect =
            header("expect").unwrap_or_else(|| panic!("{}: no `# expect:` line", file.display()));
        let message =
            header("message").unwrap_or_else(|| panic!("{}: no `# message:` line", file.display()));
        let doc = yaml_documents(&file).remove(0);

        let ours = our_errors(&doc);
        assert!(
            ours.iter()
                .any(|e| e.starts_with(&format!("{expect}: ")) && e.contains(&message)),
            "{}: expected a problem at {expect} mentioning {message:?}, got {ours:#?}",
            file.display()
        );
        if header("server").is_some() {
            let server = server_errors(&doc);
            assert!(
                !server.is_empty(),
                "{}: the API server's schema and CEL rules would accept it",
                file.display()
            );
        }
    }
}
