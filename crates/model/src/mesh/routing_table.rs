//! The resolved routing of every Service, and which Services name which as a backend, so a
//! change to one Service resolves again the routing of those sending to it.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use crate::{
    index::Index,
    input::ObjectKey,
    routing::{ServiceRouting, ServiceRoutings},
    store::Links,
};

#[derive(Default)]
pub(super) struct RoutingTable {
    by_service: BTreeMap<ObjectKey, ServiceRoutings>,
    /// Service → the Services whose routing names it as a backend or mirror.
    referenced_by: Links<ObjectKey>,
}

impl RoutingTable {
    pub fn get(&self, service: &ObjectKey) -> Option<&ServiceRoutings> {
        self.by_service.get(service)
    }

    /// The routing of `service` for the clients in `namespace`.
    pub fn for_clients_in(
        &self,
        service: &ObjectKey,
        namespace: &str,
    ) -> Option<&Arc<ServiceRouting>> {
        Some(self.by_service.get(service)?.for_clients_in(namespace))
    }

    pub fn contains(&self, service: &ObjectKey) -> bool {
        self.by_service.contains_key(service)
    }

    /// Every Service's routing for the clients in `namespace`.
    pub fn iter_for_clients_in<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a Arc<ServiceRouting>)> {
        self.by_service
            .iter()
            .map(move |(k, r)| (k, r.for_clients_in(namespace)))
    }

    /// The Services whose routing names `service` as a backend or mirror.
    pub fn referencing<'a>(
        &'a self,
        service: &'a ObjectKey,
    ) -> impl Iterator<Item = &'a ObjectKey> {
        self.referenced_by.of(service)
    }

    /// The Services whose routing names a Service of `namespace` as a backend or mirror.
    pub fn referencing_namespace<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a ObjectKey> {
        self.referenced_by.in_namespace(namespace)
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
            let mut new = index.resolve_routing(svc);
            let old = self.by_service.get(svc);
            match (old, &mut new) {
                (Some(old), Some(new)) if old.same(new) => continue,
                (None, None) => continue,
                (Some(old), Some(new)) => new.reuse(old),
                _ => {}
            }
            if let Some(old) = self.by_service.remove(svc) {
                for b in references(&old) {
                    self.referenced_by.remove(b, svc);
                }
            }
            if let Some(new) = new {
                for b in references(&new) {
                    self.referenced_by.insert(b.clone(), svc.clone());
                }
                self.by_service.insert(svc.clone(), new);
            }
            changed.insert(svc.clone());
        }
        changed
    }
}

/// The Services that any client's routing of a Service names, each once.
fn references(routings: &ServiceRoutings) -> BTreeSet<&ObjectKey> {
    routings.all().flat_map(|r| &r.references).collect()
}
