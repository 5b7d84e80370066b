//! The RFC 6902 patch that turns the pod as submitted into the pod with its sidecars.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use remora_api::sidecar_policy::SharedVolume;
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    InjectError, Injection, Layout, POLICY_ANNOTATION, REVISION_ANNOTATION, VERSION_ANNOTATION,
    bootstrap::{ADMIN_PORT, READINESS_PORT},
    container::sidecars,
    has_proxy,
};

/// One JSON-patch operation; the injector only ever adds.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum JsonPatchOp {
    /// Adds `value` at `path`, inserting into an array or setting an object member.
    Add {
        /// Where to add, as a JSON pointer (RFC 6901), e.g. `/spec/containers/-`.
        path: String,
        /// What to add there.
        value: Value,
    },
}

/// Escapes one reference token of a JSON pointer (RFC 6901): `~` first, or the `~1` that `/`
/// becomes would be read back as `~` and `1`.
pub fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The operations that add the sidecars to `pod`, or none when it already has the proxy (a
/// re-invoked webhook, or a pod injected before), so the result can be applied again safely.
pub fn patch(pod: &Pod, injection: &Injection) -> Result<Vec<JsonPatchOp>, InjectError> {
    if has_proxy(pod) {
        return Ok(Vec::new());
    }
    let added = sidecars(injection);
    check_conflicts(pod, &added)?;
    let volumes = &injection.policy.spec.volumes;
    check_volumes(pod, volumes)?;
    let spec = pod.spec.as_ref();
    let mut ops = match injection.layout {
        Layout::Native => insert_front(
            "/spec/initContainers",
            spec.and_then(|s| s.init_containers.as_ref()),
            added,
        ),
        Layout::Classic => {
            // Only the proxy goes first (the kubelet starts containers in order); the extras
            // follow the app, as sidecars usually do.
            let mut added = added.into_iter();
            let proxy = added.next().into_iter().collect();
            let mut ops = insert_front("/spec/containers", spec.map(|s| &s.containers), proxy);
            ops.extend(added.map(|c| add("/spec/containers/-".into(), to_value(&c))));
            ops
        }
    };
    if !volumes.is_empty() {
        let added = volumes.iter().map(|v| json!(v.to_volume()));
        match spec.and_then(|s| s.volumes.as_ref()) {
            Some(existing) if !existing.is_empty() => {
                ops.extend(added.map(|v| add("/spec/volumes/-".into(), v)));
            }
            _ => ops.push(add("/spec/volumes".into(), Value::Array(added.collect()))),
        }
    }
    let annotations = [
        (VERSION_ANNOTATION, injection.version.to_string()),
        (REVISION_ANNOTATION, injection.revision.to_string()),
        (POLICY_ANNOTATION, policy_key(injection)),
    ];
    match &pod.metadata.annotations {
        None => ops.push(add(
            "/metadata/annotations".into(),
            json!(BTreeMap::from(annotations)),
        )),
        Some(_) => ops.extend(annotations.map(|(k, v)| {
            add(
                format!("/metadata/annotations/{}", pointer_token(k)),
                json!(v),
            )
        })),
    }
    Ok(ops)
}

fn policy_key(injection: &Injection) -> String {
    let meta = &injection.policy.metadata;
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

fn add(path: String, value: Value) -> JsonPatchOp {
    JsonPatchOp::Add { path, value }
}

fn to_value(c: &Container) -> Value {
    // A Container always serializes: its fields are strings, numbers and maps of them.
    serde_json::to_value(c).unwrap_or_default()
}

/// Puts `added` at the start of the list at `path`, in order; a missing or empty list is
/// added whole, since a pointer into it would not resolve.
fn insert_front(
    path: &str,
    existing: Option<&Vec<Container>>,
    added: Vec<Container>,
) -> Vec<JsonPatchOp> {
    if existing.is_none_or(Vec::is_empty) {
        return vec![add(
            path.into(),
            Value::Array(added.iter().map(to_value).collect()),
        )];
    }
    added
        .iter()
        .enumerate()
        .map(|(i, c)| add(format!("{path}/{i}"), to_value(c)))
        .collect()
}

/// A volume the pod already has under a policy volume's name: the pod's owner renames theirs
/// (or the policy's), as for containers.
fn check_volumes(pod: &Pod, volumes: &[SharedVolume]) -> Result<(), InjectError> {
    let existing = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    for (i, v) in existing.into_iter().flatten().enumerate() {
        if volumes.iter().any(|ours| ours.name == v.name) {
            return Err(InjectError::VolumeTaken {
                field: format!("spec.volumes[{i}].name"),
                name: v.name.clone(),
            });
        }
    }
    Ok(())
}

/// A name or port the pod already uses would make the patched pod invalid (names) or the
/// proxy unable to start (ports); say which field, so the pod's owner can fix it.
fn check_conflicts(pod: &Pod, added: &[Container]) -> Result<(), InjectError> {
    let Some(spec) = &pod.spec else {
        return Ok(());
    };
    let lists = [
        (
            "spec.initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("spec.containers", spec.containers.as_slice()),
    ];
    for (list, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            if added.iter().any(|a| a.name == c.name) {
                return Err(InjectError::NameTaken {
                    field: format!("{list}[{i}].name"),
                    name: c.name.clone(),
                });
            }
            for (j, p) in c.ports.iter().flatten().enumerate() {
                let port = p.container_port;
                if port == i32::from(ADMIN_PORT) || port == i32::from(READINESS_PORT) {
                    return Err(InjectError::PortTaken {
                        field: format!("{list}[{i}].ports[{j}].containerPort"),
                        port,
                    });
                }
            }
        }
    }
    Ok(())
}
