//! The resolved routing of every Service, and which Services name which as a backend, so a
//! change to one Service resolves again the routing of those sending to it.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use crate::{index::Index, input::ObjectKey, routing::ServiceRouting, store::Links};

#[derive(Default)]
pub(super) struct RoutingTable {
    by_service: BTreeMap<ObjectKey, Arc<ServiceRouting>>,
    /// Service → the Services whose routing names it as a backend or mirror.
    referenced_by: Links<ObjectKey>,
}

impl RoutingTable {
    pub fn get(&self, service: &ObjectKey) -> Option<&Arc<ServiceRouting>> {
        self.by_service.get(service)
    }

    pub fn contains(&self, service: &ObjectKey) -> bool {
        self.by_service.contains_key(service)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ObjectKey, &Arc<ServiceRouting>)> {
        self.by_service.iter()
    }

    /// The Services whose routing names `service` as a backend or mirror.
    pub fn referencing<'a>(
        &'a self,
        service: &'a ObjectKey,
    ) -> impl Iterator<Item = &'a ObjectKey> {
        self.referenced_by.of(service)
    }

    /// Resolves the routing of `services` again and returns those whose routing changed
    /// (appeared, went, or differs).
    pub fn update(
        &mut self,
        index: &mut Index,
        services: &BTreeSet<ObjectKey>,
    ) -> BTreeSet<ObjectKey> {
        let mut changed = BTreeSet::new();
        for svc in services {
            let new = index.resolve_routing(svc);
            let old = self.by_service.get(svc);
            if old.map(|o| o.hash) == new.as_ref().map(|n| n.hash) && old.is_some() == new.is_some()
            {
                continue;
            }
            if let Some(old) = self.by_service.remove(svc) {
                for b in &old.references {
                    self.referenced_by.remove(b, svc);
                }
            }
            if let Some(new) = new {
                for b in &new.references {
                    self.referenced_by.insert(b.clone(), svc.clone());
                }
                self.by_service.insert(svc.clone(), Arc::new(new));
            }
            changed.insert(svc.clone());
        }
        changed
    }
}
