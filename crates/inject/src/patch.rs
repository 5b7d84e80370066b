//! The RFC 6902 patch that turns the pod as submitted into the pod with its sidecars.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, Volume};
use remora_api::{
    ValidationSettings,
    sidecar_policy::{STATS_PORT, SharedVolume},
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    InjectError, Injection, Layout, POLICY_ANNOTATION, REVISION_ANNOTATION, SCRAPE_ANNOTATION,
    SCRAPE_PATH_ANNOTATION, SCRAPE_PORT_ANNOTATION, VERSION_ANNOTATION, WORKLOAD_ANNOTATION, agent,
    bootstrap::STATS_PATH,
    conflicts,
    container::{leading, sidecars},
    init::{INIT_CONTAINER, init_container},
    is_injected, pod_security, probes, source_workload,
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
///
/// The init container that redirects the pod's traffic goes first among the init
/// containers in both layouts: before the native sidecars (so the proxy starts behind the
/// redirect) or before the app's own init containers and the app.
pub fn patch(pod: &Pod, injection: &Injection) -> Result<Vec<JsonPatchOp>, InjectError> {
    patch_with(pod, injection, &ValidationSettings::default())
}

/// As [`patch`], with a proxy that refuses what the control plane's `validation` refuses:
/// its bootstrap sets the same regex limit.
pub fn patch_with(
    pod: &Pod,
    injection: &Injection,
    validation: &ValidationSettings,
) -> Result<Vec<JsonPatchOp>, InjectError> {
    if is_injected(pod) {
        return Ok(Vec::new());
    }
    let moved = probes::app_probes(pod, injection);
    let probes: Vec<_> = moved.iter().map(|m| m.probe.clone()).collect();
    let sidecars = sidecars(injection, &probes, validation);
    let init = init_container(injection);
    let mut volumes: Vec<Volume> = injection
        .policy
        .spec
        .volumes
        .iter()
        .map(SharedVolume::to_volume)
        .collect();
    if injection.control_plane.identity.is_some() {
        volumes.extend(agent::volumes());
    }
    let names: Vec<&str> = [&init]
        .into_iter()
        .chain(&sidecars)
        .map(|c| c.name.as_str())
        .collect();
    let volume_names: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
    conflicts::check(pod, &names, &volume_names)?;
    let extra = injection.policy.spec.extra_containers.iter().enumerate();
    let added = extra
        .map(|(i, c)| (format!("spec.extraContainers[{i}]"), c))
        .chain([(format!("injected init container {INIT_CONTAINER}"), &init)]);
    pod_security::check(pod, added, injection.pod_security)?;
    let front = leading(injection);
    // Before anything is inserted into the container lists: their indices are the pod's.
    let mut ops = probes::rewrite(&moved);
    ops.extend(containers(pod, injection.layout, init, sidecars, front));
    ops.extend(add_volumes(pod, &volumes));
    ops.extend(annotations(pod, injection));
    Ok(ops)
}

/// The operations that add the policy's shared volumes (and the agent's) after the pod's own.
fn add_volumes(pod: &Pod, volumes: &[Volume]) -> Vec<JsonPatchOp> {
    if volumes.is_empty() {
        return Vec::new();
    }
    let added = volumes.iter().map(|v| json!(v));
    match pod.spec.as_ref().and_then(|s| s.volumes.as_ref()) {
        Some(existing) if !existing.is_empty() => {
            added.map(|v| add("/spec/volumes/-".into(), v)).collect()
        }
        _ => vec![add("/spec/volumes".into(), Value::Array(added.collect()))],
    }
}

/// The operations that write the version, revision, policy and workload annotations, and the
/// scrape annotations.
fn annotations(pod: &Pod, injection: &Injection) -> Vec<JsonPatchOp> {
    let mut annotations = vec![
        (VERSION_ANNOTATION, injection.version.to_string()),
        (REVISION_ANNOTATION, injection.revision.to_string()),
        (POLICY_ANNOTATION, policy_key(injection)),
        (WORKLOAD_ANNOTATION, source_workload(pod)),
    ];
    annotations.extend(scrape_annotations(pod));
    match &pod.metadata.annotations {
        None => vec![add(
            "/metadata/annotations".into(),
            json!(BTreeMap::from_iter(annotations)),
        )],
        Some(_) => annotations
            .into_iter()
            .map(|(k, v)| {
                add(
                    format!("/metadata/annotations/{}", pointer_token(k)),
                    json!(v),
                )
            })
            .collect(),
    }
}

/// The operations that add the init container and the sidecars to the pod's lists for
/// `layout`; in the classic layout the first `front` sidecars (the agent and the proxy) go
/// before the app.
fn containers(
    pod: &Pod,
    layout: Layout,
    init: Container,
    sidecars: Vec<Container>,
    front: usize,
) -> Vec<JsonPatchOp> {
    let spec = pod.spec.as_ref();
    let init_containers = spec.and_then(|s| s.init_containers.as_ref());
    match layout {
        Layout::Native => {
            let added = [init].into_iter().chain(sidecars).collect();
            insert_front("/spec/initContainers", init_containers, added)
        }
        Layout::Classic => {
            let mut ops = insert_front("/spec/initContainers", init_containers, vec![init]);
            // Only the agent and the proxy go first among the containers (the kubelet starts
            // them in order); the extras follow the app, as sidecars usually do.
            let mut sidecars = sidecars.into_iter();
            let first = sidecars.by_ref().take(front).collect();
            let app = spec.map(|s| &s.containers);
            ops.extend(insert_front("/spec/containers", app, first));
            ops.extend(sidecars.map(|c| add("/spec/containers/-".into(), to_value(&c))));
            ops
        }
    }
}

/// `prometheus.io/scrape`, `port` and `path` for the proxy's stats, unless the pod sets any
/// of them: they are then the app's, and a mix of the two would scrape neither.
fn scrape_annotations(pod: &Pod) -> Vec<(&'static str, String)> {
    let ours = [
        (SCRAPE_ANNOTATION, "true".to_string()),
        (SCRAPE_PORT_ANNOTATION, STATS_PORT.to_string()),
        (SCRAPE_PATH_ANNOTATION, STATS_PATH.to_string()),
    ];
    let set = pod.metadata.annotations.as_ref();
    if set.is_some_and(|a| ours.iter().any(|(k, _)| a.contains_key(*k))) {
        return Vec::new();
    }
    ours.into()
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
