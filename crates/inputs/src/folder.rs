//! Local mode's source of truth: a folder of Kubernetes YAML. Every `.yaml`/`.yml` file under
//! it is read in path order; a file may hold many documents and `kind: List`s. Kinds the mesh
//! does not read (Deployments, ConfigMaps, ...) are passed over, so a folder of real manifests
//! works as it is.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::LazyLock,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::{SignedDuration, Timestamp},
};
use remora_api::{
    AccessPolicy, FieldError, SidecarPolicy, TrafficRoute, Validate, crd_schema, decode,
    unknown_fields,
};
use remora_model::input::Object;
use serde_json::Value;

use crate::convert;

/// Why the folder could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Where an object was read: its file and the 1-based position of its document there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file.
    pub file: PathBuf,
    /// 1-based position of the document in the file.
    pub document: usize,
}

/// One document that could not be used, and why; the rest of the folder still loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file the document is in.
    pub file: PathBuf,
    /// 1-based position of the document in its file.
    pub document: usize,
    /// What is wrong with the document.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (document {}): {}",
            self.file.display(),
            self.document,
            self.message
        )
    }
}

/// What a folder held.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The model inputs, in the order of the files and of the documents in each.
    pub objects: Vec<Object>,
    /// Where each of `objects` was read, by the same index.
    pub origins: Vec<Origin>,
    /// The documents that were passed over, and why.
    pub problems: Vec<Problem>,
    /// What loaded objects set that is valid but almost surely not meant (see
    /// [`remora_api::Validate::warnings`]).
    pub warnings: Vec<Problem>,
    /// The files read, in order, so a caller can watch them for changes.
    pub files: Vec<PathBuf>,
}

/// Reads every manifest under `dir`.
///
/// Objects in files carry no `creationTimestamp`, yet the oldest policy and the oldest route
/// win ties. So a missing one is filled in by position (the first object is the oldest), which
/// makes precedence follow the order of the folder, the same on every run.
pub fn load_dir(dir: &Path) -> Result<Loaded, LoadError> {
    let files = yaml_files(dir)?;
    let mut loaded = Loaded::default();
    for file in &files {
        let text = fs::read_to_string(file).map_err(|source| LoadError::Read {
            path: file.clone(),
            source,
        })?;
        load_text(file, &text, 0, &mut loaded);
    }
    loaded.files = files;
    Ok(loaded)
}

/// The manifests under `dir`, in the order [`load_dir`] reads them.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut files = Vec::new();
    collect(dir, &mut files)?;
    files.sort();
    Ok(files)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let read = |source| LoadError::Read {
        path: dir.to_owned(),
        source,
    };
    for entry in fs::read_dir(dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads the documents of one file into `loaded`. `first` is the place in the folder of
/// `loaded`'s first object (objects without a creation time get one by their place).
///
/// The parser's default budget bounds the work a hostile file can cause, each breach refused
/// with its line: collections nested at most 64 deep (`serde_yaml_ng` allowed 128; at 126 a
/// debug build's 2 MiB test thread overflowed its stack decoding into a `Value`), at most 255
/// of them flow collections, a million events and 50,000 aliases per file.
pub fn load_text(file: &Path, text: &str, first: usize, loaded: &mut Loaded) {
    let mut bytes = text.as_bytes();
    // Empty documents are passed over by the parser, so they take no number.
    for (i, doc) in serde_saphyr::read::<_, Value>(&mut bytes).enumerate() {
        let mut problem = |message: String| {
            loaded.problems.push(Problem {
                file: file.to_owned(),
                document: i + 1,
                message,
            })
        };
        let value = match doc {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            // After a syntax error or a breached budget the parser stops by itself.
            Err(e) => {
                problem(format!("not valid YAML: {}", one_line(&e)));
                continue;
            }
        };
        let items = match value.get("kind").and_then(Value::as_str) {
            Some("List") => value
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            _ => vec![value],
        };
        for item in items {
            match object(item, first + loaded.objects.len()) {
                Ok(Some(o)) => {
                    loaded
                        .warnings
                        .extend(warnings(&o).into_iter().map(|w| Problem {
                            file: file.to_owned(),
                            document: i + 1,
                            message: format!("{:?} {}: {w}", o.kind(), o.key()),
                        }));
                    loaded.objects.push(o);
                    loaded.origins.push(Origin {
                        file: file.to_owned(),
                        document: i + 1,
                    });
                }
                Ok(None) => {}
                Err(message) => problem(message),
            }
        }
    }
}

/// The parser's words for users (not its hints about its own options), on one line.
fn one_line(e: &serde_saphyr::Error) -> String {
    e.render_with_options(serde_saphyr::render_options! {
        formatter: &serde_saphyr::UserMessageFormatter,
        snippets: serde_saphyr::SnippetMode::Off,
    })
}

/// Converts one manifest; `Ok(None)` for kinds the mesh does not read.
fn object(value: Value, position: usize) -> Result<Option<Object>, String> {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("kind is missing")?
        .to_owned();
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let typed = |e: serde_json::Error| format!("{kind}: {e}");
    let object = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => convert::namespace(&serde_json::from_value(value).map_err(typed)?),
        ("v1", "Service") => convert::service(&serde_json::from_value(value).map_err(typed)?),
        ("v1", "Pod") => convert::pod(&serde_json::from_value(value).map_err(typed)?),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            convert::endpoint_slice(&serde_json::from_value(value).map_err(typed)?)
        }
        (
            "gateway.networking.k8s.io/v1beta1" | "gateway.networking.k8s.io/v1",
            "ReferenceGrant",
        ) => convert::reference_grant(&value),
        ("remora.dev/v1alpha1", "SidecarPolicy") => {
            known_fields(&value, &SIDECAR_POLICY, "SidecarPolicy")?;
            let mut p: SidecarPolicy = decode(value).map_err(|e| format!("SidecarPolicy: {e}"))?;
            fill_metadata(&mut p.metadata, position);
            return Ok(Some(Object::SidecarPolicy(Box::new(p))));
        }
        ("gateway.networking.k8s.io/v1", "HTTPRoute") => {
            let mut r: remora_api::gateway::HttpRoute =
                decode(value).map_err(|e| format!("HTTPRoute: {e}"))?;
            fill_metadata(&mut r.metadata, position);
            return Ok(Some(Object::HttpRoute(Box::new(r))));
        }
        ("gateway.networking.k8s.io/v1", "GRPCRoute") => {
            let mut r: remora_api::gateway::GrpcRoute =
                decode(value).map_err(|e| format!("GRPCRoute: {e}"))?;
            fill_metadata(&mut r.metadata, position);
            return Ok(Some(Object::GrpcRoute(Box::new(r))));
        }
        ("remora.dev/v1alpha1", "AccessPolicy") => {
            known_fields(&value, &ACCESS_POLICY, "AccessPolicy")?;
            let mut p: AccessPolicy = decode(value).map_err(|e| format!("AccessPolicy: {e}"))?;
            fill_metadata(&mut p.metadata, position);
            return Ok(Some(Object::AccessPolicy(Box::new(p))));
        }
        ("remora.dev/v1alpha1", "TrafficRoute") => {
            known_fields(&value, &TRAFFIC_ROUTE, "TrafficRoute")?;
            let mut r: TrafficRoute = decode(value).map_err(|e| format!("TrafficRoute: {e}"))?;
            fill_metadata(&mut r.metadata, position);
            return Ok(Some(Object::TrafficRoute(Box::new(r))));
        }
        _ => return Ok(None),
    };
    object.map(Some).map_err(|e| e.to_string())
}

// The schemas of Remora's kinds, generated once: the API server would prune what they do not
// declare, so local mode refuses it.
static SIDECAR_POLICY: LazyLock<JSONSchemaProps> = LazyLock::new(crd_schema::<SidecarPolicy>);
static TRAFFIC_ROUTE: LazyLock<JSONSchemaProps> = LazyLock::new(crd_schema::<TrafficRoute>);
static ACCESS_POLICY: LazyLock<JSONSchemaProps> = LazyLock::new(crd_schema::<AccessPolicy>);

/// Refuses a manifest that sets fields its kind does not have, naming every one.
fn known_fields(value: &Value, schema: &JSONSchemaProps, kind: &str) -> Result<(), String> {
    let unknown = unknown_fields(value, schema);
    if unknown.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = unknown.iter().map(ToString::to_string).collect();
    Err(format!("{kind}: {}", list.join("; ")))
}

/// What an object sets that is valid but almost surely not meant.
pub fn warnings(object: &Object) -> Vec<FieldError> {
    match object {
        Object::SidecarPolicy(p) => p.warnings(),
        Object::TrafficRoute(r) => r.warnings(),
        Object::AccessPolicy(a) => a.warnings(),
        _ => Vec::new(),
    }
}

/// Gives a custom resource what the API server would: a namespace, a generation and a
/// creation time (see [`load_dir`] for why the time follows the position).
fn fill_metadata(meta: &mut ObjectMeta, position: usize) {
    meta.namespace.get_or_insert_with(|| "default".into());
    meta.generation.get_or_insert(1);
    if meta.creation_timestamp.is_none() {
        let offset = SignedDuration::from_secs(i64::try_from(position).unwrap_or(i64::MAX));
        let at = Timestamp::UNIX_EPOCH
            .checked_add(offset)
            .unwrap_or(Timestamp::UNIX_EPOCH);
        meta.creation_timestamp = Some(Time(at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Loaded {
        let mut loaded = Loaded::default();
        load_text(Path::new("mesh.yaml"), text, 0, &mut loaded);
        loaded
    }

    #[test]
    fn reads_many_documents_and_lists_and_skips_other_kinds() {
        let loaded = load(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: cart, namespace: shop}\n---\n\
             apiVersion: v1\nkind: List\nitems:\n\
             - {apiVersion: v1, kind: Service, metadata: {name: cart, namespace: shop}, spec: {clusterIP: 10.96.0.1, ports: [{name: http, port: 80}]}}\n",
        );
        assert_eq!(loaded.problems, []);
        let kinds: Vec<_> = loaded.objects.iter().map(Object::kind).collect();
        use remora_model::input::Kind;
        assert_eq!(kinds, [Kind::Namespace, Kind::Service]);
    }

    #[test]
    fn a_broken_document_is_reported_with_its_field_and_the_rest_loads() {
        let loaded = load(
            "apiVersion: remora.dev/v1alpha1\nkind: TrafficRoute\nmetadata: {name: r, namespace: shop}\n\
             spec: {parentRefs: [{name: cart, port: eighty}]}\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
        );
        assert_eq!(loaded.objects.len(), 1);
        assert_eq!(loaded.problems.len(), 1);
        let p = &loaded.problems[0];
        assert_eq!(p.document, 1);
        assert!(p.message.contains("spec.parentRefs[0].port"), "{p}");
    }

    #[test]
    fn a_misspelt_field_refuses_its_document_with_the_path_and_the_field_meant() {
        let loaded = load(
            "apiVersion: remora.dev/v1alpha1\nkind: TrafficRoute\nmetadata: {name: r, namespace: shop}\n\
             spec: {parentRefs: [{name: cart}], http: [{name: a, timeout: {request: 1s}}]}\n",
        );
        assert_eq!(loaded.objects.len(), 0);
        let messages: Vec<_> = loaded.problems.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(
            messages[0].starts_with(
                "mesh.yaml (document 1): TrafficRoute: spec.http[0].timeout: unknown field `timeout`"
            ) && messages[0].contains("did you mean `timeouts`?"),
            "{messages:?}"
        );
    }

    #[test]
    fn an_envoy_version_without_its_v_loads_with_a_warning() {
        let loaded = load(
            "apiVersion: remora.dev/v1alpha1\nkind: SidecarPolicy\nmetadata: {name: p, namespace: shop}\n\
             spec: {proxy: {image: envoyproxy/envoy, version: 1.40.0}}\n",
        );
        assert_eq!((loaded.objects.len(), loaded.problems.len()), (1, 0));
        let warnings: Vec<_> = loaded.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0]
                .starts_with("mesh.yaml (document 1): SidecarPolicy shop/p: spec.proxy.version: ")
                && warnings[0].contains("write v1.40.0"),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_syntax_error_is_reported_with_its_line_and_the_documents_before_it_load() {
        let loaded = load("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\na: [b\n");
        assert_eq!(loaded.objects.len(), 1);
        let messages: Vec<_> = loaded.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            ["mesh.yaml (document 2): not valid YAML: unclosed bracket '[' at line 5, column 4"]
        );
    }

    #[test]
    fn a_duplicate_key_is_refused_rather_than_one_of_its_values_picked() {
        let loaded = load(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\nmetadata: {name: cart}\n",
        );
        assert_eq!(loaded.objects.len(), 0);
        assert_eq!(loaded.problems.len(), 1);
        let message = &loaded.problems[0].message;
        assert!(
            message.contains("duplicate mapping key `metadata`"),
            "{message}"
        );
        assert!(message.contains("line 4"), "{message}");
    }

    /// libyaml's scanner walks every open flow collection for each token, so 28 KB of `{`
    /// took 17 s (found by the fuzzer); the parser now refuses the nesting at its depth limit.
    #[test]
    fn deeply_nested_flow_collections_are_refused_at_the_parsers_limit() {
        let text = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {}\n",
            "{a: ".repeat(30_000)
        );
        let loaded = load(&text);
        assert_eq!(loaded.objects.len(), 0);
        let message = &loaded.problems[0].message;
        assert!(message.contains("Depth { depth: 65 }"), "{message}");
        assert!(message.contains("line 3"), "{message}");
    }

    #[test]
    fn collections_nested_64_deep_still_load() {
        let deep = format!("{}1{}", "[".repeat(63), "]".repeat(63));
        let loaded = load(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop, annotations: {{}}}}\nx: {deep}\n"
        ));
        assert_eq!(loaded.problems, []);
        assert_eq!(loaded.objects.len(), 1);
    }

    #[test]
    fn missing_creation_times_follow_the_order_of_the_folder() {
        let loaded = load(
            "apiVersion: remora.dev/v1alpha1\nkind: TrafficRoute\nmetadata: {name: b, namespace: shop}\nspec: {parentRefs: [{name: cart}]}\n---\n\
             apiVersion: remora.dev/v1alpha1\nkind: TrafficRoute\nmetadata: {name: a}\nspec: {parentRefs: [{name: cart}]}\n",
        );
        let times: Vec<_> = loaded
            .objects
            .iter()
            .map(|o| match o {
                Object::TrafficRoute(r) => (
                    r.metadata.namespace.clone(),
                    r.metadata.creation_timestamp.clone(),
                ),
                _ => panic!("routes only"),
            })
            .collect();
        assert_eq!(times[1].0.as_deref(), Some("default"));
        assert!(times[0].1 < times[1].1, "{times:?}");
    }
}
