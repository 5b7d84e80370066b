//! The endpoints of the clusters some class uses, shared mesh-wide: each cluster's are
//! computed once however many classes use it, and kept while any does.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use super::classes::{ChangedByClass, Classes};
use crate::{
    class::Class,
    config::{ClusterEndpoints, ResourceKey, ResourceType, Versioned},
    index::{Index, TakesMtls},
    input::ObjectKey,
    routing::ClusterKey,
};

struct Entry {
    /// How many classes use the cluster: the entry goes when the last one stops.
    users: u32,
    resource: Arc<Versioned<ClusterEndpoints>>,
}

#[derive(Default)]
pub(super) struct SharedEndpoints(BTreeMap<ClusterKey, Entry>);

impl SharedEndpoints {
    pub fn get(&self, cluster: &ClusterKey) -> Option<&Arc<Versioned<ClusterEndpoints>>> {
        self.0.get(cluster).map(|e| &e.resource)
    }

    /// The endpoints of the clusters a class uses, keyed as the resources they are.
    pub fn of_class<'a>(
        &'a self,
        class: &'a Class,
    ) -> impl Iterator<Item = (ResourceKey, &'a Arc<Versioned<ClusterEndpoints>>)> + 'a {
        class.cluster_refs.keys().filter_map(|cluster| {
            let resource = self.get(cluster)?;
            let key = ResourceKey {
                kind: ResourceType::Endpoints,
                name: resource.value.cluster.clone(),
            };
            Some((key, resource))
        })
    }

    /// Follows the net change in users of each cluster, then recomputes the clusters of
    /// the `services` whose endpoints changed, adding them to the changes of every class
    /// that uses them.
    pub fn update(
        &mut self,
        index: &Index,
        classes: &Classes,
        users: HashMap<ClusterKey, i32>,
        services: &BTreeSet<ObjectKey>,
        changed: &mut ChangedByClass,
    ) {
        let takes = |pod: &ObjectKey, port| classes.takes_mtls(pod, port);
        // Without workload identity no endpoint takes mutual TLS: spare the lookups.
        let mtls = index.settings.mtls().map(|_| &takes as TakesMtls<'_>);
        self.count_users(index, users, mtls);
        let mut recompute: BTreeSet<ClusterKey> = BTreeSet::new();
        for svc in services {
            let start = ClusterKey::new(&index.settings, svc.clone(), 0, Arc::default());
            recompute.extend(
                self.0
                    .range(start..)
                    .take_while(|(k, _)| k.service == *svc)
                    .map(|(k, _)| k.clone()),
            );
        }
        for cluster in recompute {
            let resource = index.cluster_endpoints(&cluster, mtls);
            let entry = self.0.get_mut(&cluster).expect("listed above");
            if entry.resource.hash == resource.hash {
                continue;
            }
            let rkey = ResourceKey {
                kind: ResourceType::Endpoints,
                name: resource.value.cluster.clone(),
            };
            entry.resource = resource;
            // Few clusters change at once and classes are few, so asking each class beats
            // keeping a list of users per cluster in memory.
            for class in classes.by_key.values() {
                if class.cluster_refs.contains_key(&cluster) {
                    changed
                        .entry(class.key.clone())
                        .or_default()
                        .insert(rkey.clone());
                }
            }
        }
    }

    /// Adds the entries a first class uses now, drops those the last class stopped using.
    fn count_users(
        &mut self,
        index: &Index,
        users: HashMap<ClusterKey, i32>,
        mtls: Option<TakesMtls<'_>>,
    ) {
        for (cluster, d) in users {
            match self.0.get_mut(&cluster) {
                Some(e) => {
                    let users = i64::from(e.users) + i64::from(d);
                    debug_assert!(users >= 0, "more classes released {cluster:?} than used it");
                    if users <= 0 {
                        self.0.remove(&cluster);
                    } else {
                        e.users = u32::try_from(users).unwrap_or(u32::MAX);
                    }
                }
                None if d > 0 => {
                    let resource = index.cluster_endpoints(&cluster, mtls);
                    self.0.insert(
                        cluster,
                        Entry {
                            users: d.unsigned_abs(),
                            resource,
                        },
                    );
                }
                None => {}
            }
        }
    }
}
