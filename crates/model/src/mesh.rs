//! The mesh: the index of its inputs and every proxy's config derived from them. Events
//! mark what they may affect; [`Mesh::apply`] then recomputes only that, in dependency
//! order, and reports which proxies and which of their resources changed.

mod access_query;
mod changes;
mod classes;
mod dirty;
mod endpoints;
mod peers;
mod problems;
mod query;
mod routing_table;

use std::mem;

pub use changes::Changes;
pub(crate) use peers::Peers;
pub use problems::{Cause, ObjectProblem};

use self::{
    changes::Snapshot,
    classes::{Classes, ServicesChanged},
    dirty::Dirty,
    endpoints::SharedEndpoints,
    peers::PeerTable,
    routing_table::RoutingTable,
};
use crate::{
    index::Index,
    input::{Event, MeshSettings, ObjectKey},
};

/// The mesh: inputs, and every proxy's config derived from them.
#[derive(Default)]
pub struct Mesh {
    /// The inputs, as stored.
    index: Index,
    /// Every Service's routing, resolved.
    routing: RoutingTable,
    /// The proxies, grouped in classes that share their outbound config.
    classes: Classes,
    /// Whom the callers of each Service accept at the other end of mutual TLS.
    peers: PeerTable,
    /// The endpoints of the clusters some class uses.
    endpoints: SharedEndpoints,
    /// What the events since the last update may have changed.
    dirty: Dirty,
}

impl Mesh {
    /// An empty mesh with these settings.
    pub fn new(settings: MeshSettings) -> Mesh {
        Mesh {
            index: Index::new(settings),
            ..Mesh::default()
        }
    }

    /// Applies a batch of events and returns what changed. A batch (the initial list of a
    /// watch, or a debounced burst) is cheaper than the same events one by one.
    pub fn apply(&mut self, events: impl IntoIterator<Item = Event>) -> Changes {
        for event in events {
            if let Some(touched) = self.index.apply(event) {
                self.dirty
                    .mark(touched, &self.index, &self.routing, &self.classes);
            }
        }
        self.flush()
    }

    /// Recomputes what is dirty, each phase from the results of those before it.
    fn flush(&mut self) -> Changes {
        let mut dirty = mem::take(&mut self.dirty);
        // Proxies that may move: what they and their classes hold now, to diff afterwards.
        let before = Snapshot::take(&dirty.pods, &self.classes, &self.endpoints);
        // 1. The routing of the Services that may have changed.
        let routing = self.routing.update(&mut self.index, &dirty.routing);
        // 2. Proxies: the class each belongs to now, and whether it takes mutual TLS (which
        //    changes the endpoints of the Services in front of it).
        let placed = self.classes.place(&self.index, &dirty.pods);
        dirty
            .endpoints
            .extend(placed.meshed_changed.iter().cloned());
        // 3. Peers: the identities the callers of those Services accept.
        let classes = &self.classes;
        let meshed = |pod: &ObjectKey| classes.is_meshed(pod);
        let peers = self.peers.update(&self.index, &meshed, &dirty.endpoints);
        // 4. Classes: drop the empty ones, build new ones, rebuild those whose policy
        //    changed, and apply the changed Services to the rest.
        let services = ServicesChanged { routing, peers };
        let mut updated = self.classes.update(
            &self.index,
            &self.routing,
            &self.peers,
            &placed,
            &services,
            &dirty.policies,
        );
        // 5. Each placed proxy's own config, from its class's current defaults.
        self.classes.inbound(&self.index, &dirty.pods);
        // 6. Endpoints: follow which classes use each cluster, then recompute the ones
        //    whose Service's endpoints changed.
        self.endpoints.update(
            &self.index,
            &self.classes,
            updated.cluster_users,
            &dirty.endpoints,
            &mut updated.changed,
        );
        // 7. What changed for which proxies.
        before.report(&self.classes, &self.endpoints, updated.changed)
    }
}
