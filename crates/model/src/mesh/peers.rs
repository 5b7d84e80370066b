//! Whom a caller of each Service accepts at the other end of mutual TLS: the identities of
//! the Service's meshed pods. Every cluster of the Service checks the peer against them, so
//! a change to the set changes those clusters in every class that uses them.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use crate::{
    config::{OutboundMtls, content_hash},
    index::Index,
    input::ObjectKey,
};

/// A Service's accepted identities, with their hash for the clusters' memo.
#[derive(Clone, Debug)]
pub(crate) struct Peers {
    pub hash: u64,
    pub mtls: OutboundMtls,
}

/// The Services with at least one meshed pod, and the identities of those pods.
#[derive(Default)]
pub(super) struct PeerTable(BTreeMap<ObjectKey, Peers>);

impl PeerTable {
    pub fn get(&self, service: &ObjectKey) -> Option<&Peers> {
        self.0.get(service)
    }

    /// Computes again the identities of `services` (whose endpoints or pods changed) and
    /// returns those whose set changed. `meshed` says which pods take mutual TLS; without
    /// workload identity nothing does and the table stays empty.
    pub fn update(
        &mut self,
        index: &Index,
        meshed: &dyn Fn(&ObjectKey) -> bool,
        services: &BTreeSet<ObjectKey>,
    ) -> BTreeSet<ObjectKey> {
        let mut changed = BTreeSet::new();
        let Some(identity) = index.settings.mtls() else {
            return changed;
        };
        for svc in services {
            let ids = if index.services.contains_key(svc) {
                index.peer_identities(svc, &identity.trust_domain, meshed)
            } else {
                Vec::new()
            };
            let hash = content_hash(&ids);
            if self.0.get(svc).map(|p| p.hash) == (!ids.is_empty()).then_some(hash) {
                continue;
            }
            if ids.is_empty() {
                self.0.remove(svc);
            } else {
                let mtls = OutboundMtls {
                    peers: Arc::from(ids),
                };
                self.0.insert(svc.clone(), Peers { hash, mtls });
            }
            changed.insert(svc.clone());
        }
        changed
    }
}
