//! What a change of the mesh's objects does to each proxy: its resources added, removed and
//! changed, computed by comparing the model before and after. Pure: two meshes in, a list out.

use std::collections::BTreeSet;

use remora_model::{
    Mesh,
    config::{ProxyConfig, ResourceKey, ResourceType},
    input::ObjectKey,
};
use serde::Serialize;

use super::lines::changed_lines;

/// Unchanged lines shown around each changed run of a resource's JSON.
const CONTEXT: usize = 3;

/// One proxy whose config the change alters.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct ProxyChanges {
    /// `namespace/pod`.
    pub proxy: String,
    /// Its resources that differ, by type then name.
    pub resources: Vec<ResourceChange>,
}

/// One resource that differs.
#[derive(Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceChange {
    /// Cluster, Endpoints, Listener or RouteConfig.
    pub kind: ResourceType,
    /// Its name, as Envoy knows it.
    pub name: String,
    /// Added, removed or changed.
    pub change: Change,
    /// For a changed resource, its JSON's changed lines (`-`/`+`) with some context.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<String>,
}

/// How a resource differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Only after.
    Added,
    /// Only before.
    Removed,
    /// In both, with other content.
    Changed,
}

/// Every proxy whose config differs between `before` and `after`, by name; proxies with
/// the same config are left out.
pub fn fleet_changes(before: &Mesh, after: &Mesh) -> Vec<ProxyChanges> {
    let proxies: BTreeSet<&ObjectKey> = before.proxies().chain(after.proxies()).collect();
    proxies
        .into_iter()
        .filter_map(|proxy| {
            let old = before.proxy_config(proxy).unwrap_or_default();
            let new = after.proxy_config(proxy).unwrap_or_default();
            let resources = resource_changes(&old, &new);
            (!resources.is_empty()).then(|| ProxyChanges {
                proxy: proxy.to_string(),
                resources,
            })
        })
        .collect()
}

fn resource_changes(old: &ProxyConfig, new: &ProxyConfig) -> Vec<ResourceChange> {
    let (was, is) = (old.versions(), new.versions());
    let keys: BTreeSet<&ResourceKey> = was.keys().chain(is.keys()).collect();
    keys.into_iter()
        .filter_map(|key| {
            let change = match (was.get(key), is.get(key)) {
                (Some(a), Some(b)) if a == b => return None,
                (Some(_), Some(_)) => Change::Changed,
                (None, Some(_)) => Change::Added,
                _ => Change::Removed,
            };
            let lines = if change == Change::Changed {
                changed_lines(&json(old, key), &json(new, key), CONTEXT)
            } else {
                Vec::new()
            };
            Some(ResourceChange {
                kind: key.kind,
                name: key.name.to_string(),
                change,
                lines,
            })
        })
        .collect()
}

/// The resource as pretty JSON, one field per line, which a line diff reads well.
fn json(config: &ProxyConfig, key: &ResourceKey) -> String {
    config
        .resources
        .get(key)
        .and_then(|r| serde_json::to_string_pretty(r).ok())
        .unwrap_or_default()
}
