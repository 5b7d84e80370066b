//! What an update changed, for whom: taken as the difference between what the proxies that
//! may have moved held before and what they hold after, plus what changed in their classes.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use super::{
    classes::{ChangedByClass, Classes},
    endpoints::SharedEndpoints,
};
use crate::{
    class::{Class, ClassKey},
    config::{Resource, ResourceKey},
    input::ObjectKey,
};

/// Content hashes of resources, by key: what a proxy or class holds, to diff.
type Versions = BTreeMap<ResourceKey, u64>;

/// Which proxies changed, and which of their resources (added, changed or removed).
///
/// Proxies that changed alike are reported as one group sharing one set of resource keys:
/// a route change that reaches ten thousand proxies costs one set, not ten thousand.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Disjoint groups: every proxy of a group saw exactly the group's resources change,
    /// besides what `own` lists for it.
    pub groups: Vec<Group>,
    /// Changes to a proxy's own resources (its inbound side).
    pub own: BTreeMap<ObjectKey, BTreeSet<ResourceKey>>,
    /// Proxies that no longer exist (deleted, or their pod lost its sidecar).
    pub gone: BTreeSet<ObjectKey>,
}

/// Proxies that saw the same resources change.
#[derive(Debug, PartialEq, Eq)]
pub struct Group {
    /// The proxies (often a whole class, shared with it).
    pub proxies: Arc<BTreeSet<ObjectKey>>,
    /// Their resources that were added, changed or removed.
    pub resources: Arc<BTreeSet<ResourceKey>>,
}

impl Changes {
    /// Whether nothing changed for any proxy.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.own.is_empty() && self.gone.is_empty()
    }

    /// Every proxy whose config changed (the gone ones excepted).
    pub fn proxies(&self) -> BTreeSet<&ObjectKey> {
        self.groups
            .iter()
            .flat_map(|g| g.proxies.iter())
            .chain(self.own.keys())
            .collect()
    }

    /// The resources of one proxy that changed.
    pub fn resources_of(&self, proxy: &ObjectKey) -> BTreeSet<&ResourceKey> {
        self.groups
            .iter()
            .filter(|g| g.proxies.contains(proxy))
            .flat_map(|g| g.resources.iter())
            .chain(self.own.get(proxy).into_iter().flatten())
            .collect()
    }
}

/// What some proxies held before an update: enough to tell afterwards what changed.
pub(super) struct Snapshot {
    /// Each proxy's class and own resources (`None`: it was no proxy).
    proxies: BTreeMap<ObjectKey, Option<(ClassKey, Versions)>>,
    /// What the classes of those proxies held.
    classes: BTreeMap<ClassKey, Versions>,
}

/// Class pairs (the one left, if any, and the one joined) and the proxies that moved so.
type Moves<'a> = BTreeMap<(Option<&'a ClassKey>, &'a ClassKey), BTreeSet<ObjectKey>>;

impl Snapshot {
    pub fn take(
        pods: &BTreeSet<ObjectKey>,
        classes: &Classes,
        endpoints: &SharedEndpoints,
    ) -> Snapshot {
        let proxies: BTreeMap<ObjectKey, Option<(ClassKey, Versions)>> = pods
            .iter()
            .map(|p| {
                let state = classes.proxies.get(p);
                (
                    p.clone(),
                    state.map(|s| (s.class.clone(), versions(&s.inbound))),
                )
            })
            .collect();
        let classes = proxies
            .values()
            .flatten()
            .map(|(c, _)| c)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|c| (c.clone(), class_versions(classes.by_key.get(c), endpoints)))
            .collect();
        Snapshot { proxies, classes }
    }

    /// Class-wide changes for the members that stayed; for proxies that joined a class,
    /// the difference between the class they left (if any) and the one they joined, once
    /// per such pair; then each proxy's own resources.
    pub fn report(
        &self,
        classes: &Classes,
        endpoints: &SharedEndpoints,
        class_changes: ChangedByClass,
    ) -> Changes {
        let mut changes = Changes::default();
        let moves = self.own_changes(classes, &mut changes);
        let joined: BTreeSet<&ObjectKey> = moves.values().flatten().collect();
        for (class_key, keys) in class_changes {
            let Some(class) = classes.by_key.get(&class_key) else {
                continue;
            };
            let proxies = if class.members.iter().any(|m| joined.contains(m)) {
                Arc::new(
                    class
                        .members
                        .iter()
                        .filter(|m| !joined.contains(m))
                        .cloned()
                        .collect(),
                )
            } else {
                class.members.clone()
            };
            if !proxies.is_empty() {
                changes.groups.push(Group {
                    proxies,
                    resources: Arc::new(keys),
                });
            }
        }
        for ((from, to), proxies) in moves {
            let now = class_versions(classes.by_key.get(to), endpoints);
            let resources = match from.and_then(|c| self.classes.get(c)) {
                Some(was) => diff(was, &now),
                // New proxies get everything: no hashes to compare.
                None => now.into_keys().collect(),
            };
            if !resources.is_empty() {
                changes.groups.push(Group {
                    proxies: Arc::new(proxies),
                    resources: Arc::new(resources),
                });
            }
        }
        changes
    }

    /// Records the proxies gone and the changes to each proxy's own resources; returns the
    /// proxies that moved between classes.
    fn own_changes<'a>(&'a self, classes: &'a Classes, changes: &mut Changes) -> Moves<'a> {
        let mut moves = Moves::new();
        for (pod, was) in &self.proxies {
            let Some(now) = classes.proxies.get(pod) else {
                if was.is_some() {
                    changes.gone.insert(pod.clone());
                }
                continue;
            };
            let old_class = was.as_ref().map(|(c, _)| c);
            if old_class != Some(&now.class) {
                moves
                    .entry((old_class, &now.class))
                    .or_default()
                    .insert(pod.clone());
            }
            let empty = BTreeMap::new();
            let own = diff(
                was.as_ref().map_or(&empty, |(_, v)| v),
                &versions(&now.inbound),
            );
            if !own.is_empty() {
                changes.own.insert(pod.clone(), own);
            }
        }
        moves
    }
}

/// What a class's proxies hold besides their own resources, with content hashes.
fn class_versions(class: Option<&Class>, endpoints: &SharedEndpoints) -> Versions {
    let Some(class) = class else {
        return Versions::new();
    };
    let mut out = versions(&class.resources);
    out.extend(endpoints.of_class(class).map(|(k, e)| (k, e.hash)));
    out
}

fn versions(resources: &BTreeMap<ResourceKey, Resource>) -> Versions {
    resources
        .iter()
        .map(|(k, r)| (k.clone(), r.hash()))
        .collect()
}

/// The keys added, changed or removed between two versioned sets.
fn diff(old: &Versions, new: &Versions) -> BTreeSet<ResourceKey> {
    let mut out: BTreeSet<ResourceKey> = new
        .iter()
        .filter(|(k, h)| old.get(*k) != Some(*h))
        .map(|(k, _)| k.clone())
        .collect();
    out.extend(old.keys().filter(|k| !new.contains_key(*k)).cloned());
    out
}
