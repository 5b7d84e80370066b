//! `gitops/argocd/ignore-differences.yaml` must cover every field the API server defaults:
//! each `default` in the CRDs under `crds/` (what users apply) is ignored by its path or a
//! parent's, so a default added to the types without a line there fails here.

use std::{collections::BTreeMap, fs, path::PathBuf};

use serde::Deserialize;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Each CRD's kind and the jq paths (`.spec.http[].mirror.percent`) of its defaults.
fn defaulted_paths() -> BTreeMap<String, Vec<String>> {
    let mut by_kind = BTreeMap::new();
    let dir = repo().join("crds");
    for entry in fs::read_dir(&dir).expect("crds/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = fs::read_to_string(&path).expect("a readable CRD");
        let crd: Value = serde_yaml_ng::from_str(&text).expect("a CRD in YAML");
        let kind = crd["spec"]["names"]["kind"]
            .as_str()
            .expect("a kind")
            .to_owned();
        let mut paths = Vec::new();
        for version in crd["spec"]["versions"].as_array().expect("versions") {
            walk("", &version["schema"]["openAPIV3Schema"], &mut paths);
        }
        by_kind.insert(kind, paths);
    }
    by_kind
}

/// Collects the paths of `node` and its descendants that carry a `default`. Array items and
/// map values are `[]`; a default in an `anyOf` branch applies at the branch's own path.
fn walk(path: &str, node: &Value, out: &mut Vec<String>) {
    if node.get("default").is_some() {
        out.push(path.to_owned());
    }
    for (name, child) in node["properties"].as_object().into_iter().flatten() {
        walk(&format!("{path}.{name}"), child, out);
    }
    for key in ["items", "additionalProperties"] {
        if node[key].is_object() {
            walk(&format!("{path}[]"), &node[key], out);
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for branch in node[key].as_array().into_iter().flatten() {
            walk(path, branch, out);
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Documented {
    ignore_differences: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    group: String,
    kind: String,
    jq_path_expressions: Vec<String>,
}

/// The documented jq paths by kind, with `[]?` (which keeps jq quiet on a missing list)
/// read as `[]`.
fn documented() -> BTreeMap<String, Vec<String>> {
    let path = repo().join("gitops/argocd/ignore-differences.yaml");
    let text = fs::read_to_string(&path).expect("the documented list");
    let doc: Documented = serde_yaml_ng::from_str(&text).expect("an ignoreDifferences list");
    let mut by_kind: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in doc.ignore_differences {
        assert_eq!(e.group, "remora.dev", "{}", e.kind);
        let paths = e.jq_path_expressions.iter().map(|p| p.replace("[]?", "[]"));
        by_kind.entry(e.kind).or_default().extend(paths);
    }
    by_kind
}

/// Whether ignoring `ignored` ignores `path`: the same path or a parent of it.
fn covers(ignored: &str, path: &str) -> bool {
    path.strip_prefix(ignored)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

#[test]
fn every_defaulted_field_is_in_the_documented_ignore_differences() {
    let defaults = defaulted_paths();
    let documented = documented();
    assert!(
        defaults.len() >= 3,
        "the CRDs under crds/: {:?}",
        defaults.keys()
    );
    let mut missing = Vec::new();
    for (kind, paths) in &defaults {
        let ignored = documented.get(kind).map(Vec::as_slice).unwrap_or_default();
        for path in paths {
            if !ignored.iter().any(|i| covers(i, path)) {
                missing.push(format!("{kind}: {path}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "add these to gitops/argocd/ignore-differences.yaml: {missing:#?}"
    );
}

#[test]
fn every_documented_path_ignores_a_defaulted_field() {
    let defaults = defaulted_paths();
    for (kind, ignored) in documented() {
        let paths = defaults.get(&kind).map(Vec::as_slice).unwrap_or_default();
        for i in ignored {
            assert!(
                paths.iter().any(|p| covers(&i, p)),
                "{kind}: {i} ignores nothing the API server defaults; remove it"
            );
        }
    }
}

#[test]
fn a_parent_covers_its_fields_but_not_its_namesakes() {
    assert!(covers(".spec.rollout", ".spec.rollout.waves"));
    assert!(covers(".spec.http[]", ".spec.http[].retry.attempts"));
    assert!(covers(".spec.mode", ".spec.mode"));
    assert!(!covers(".spec.mode", ".spec.modes"));
    assert!(!covers(".spec.rollout.waves", ".spec.rollout"));
}
