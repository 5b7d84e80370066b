//! The whole fleet as one replica sees it: its own proxies, live from its xDS server, and the
//! other replicas' from their reports.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use remora_model::input::ObjectKey;
use remora_xds::{SyncRegistry, sync::ProxySync};

use crate::report::Report;

/// How long a replica's reports count without being renewed, by default.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(30);

/// A proxy and the replica it is connected to.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetProxy {
    /// The replica serving it.
    pub replica: String,
    /// Its sync state there.
    pub sync: ProxySync,
}

/// Every proxy of the fleet, each once. A proxy connected to this replica is taken from its
/// own registry; else from the live replica it connected to last (a proxy that moved may
/// still be in the report of the replica it left until that one writes again).
pub struct Fleet {
    local: Arc<SyncRegistry>,
    replica: String,
    expiry: Duration,
    remote: RwLock<Remote>,
}

#[derive(Default)]
struct Remote {
    /// By object name.
    objects: HashMap<String, Report>,
    /// Per replica, its newest renewal over its objects.
    renewed: HashMap<String, SystemTime>,
    /// Per proxy, where it connected last (an index of `objects`).
    newest: BTreeMap<ObjectKey, FleetProxy>,
}

impl Remote {
    fn reindex(&mut self) {
        self.renewed.clear();
        self.newest.clear();
        for report in self.objects.values() {
            let renewed = self
                .renewed
                .entry(report.replica.clone())
                .or_insert(report.renewed);
            *renewed = (*renewed).max(report.renewed);
            for p in &report.proxies {
                let newer = self
                    .newest
                    .get(&p.proxy)
                    .is_none_or(|seen| seen.sync.connected_at < p.connected_at);
                if newer {
                    let entry = FleetProxy {
                        replica: report.replica.clone(),
                        sync: p.clone(),
                    };
                    self.newest.insert(p.proxy.clone(), entry);
                }
            }
        }
    }
}

impl Fleet {
    /// The fleet of one replica named `replica` (its pod) serving `local`, before any report
    /// of the others arrived.
    pub fn new(local: Arc<SyncRegistry>, replica: impl Into<String>) -> Fleet {
        Fleet {
            local,
            replica: replica.into(),
            expiry: DEFAULT_EXPIRY,
            remote: RwLock::default(),
        }
    }

    /// Another replica's reports stop counting `expiry` after it last renewed them.
    pub fn with_expiry(mut self, expiry: Duration) -> Fleet {
        self.expiry = expiry;
        self
    }

    /// This replica's name.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// This replica's own proxies.
    pub fn local(&self) -> &Arc<SyncRegistry> {
        &self.local
    }

    /// Takes in the report held by `object`. This replica's own reports (left by its
    /// previous run under the same name) are ignored: its registry is the truth.
    pub fn observe(&self, object: &str, report: Report) {
        if report.replica == self.replica {
            return;
        }
        let mut remote = self.write();
        remote.objects.insert(object.to_owned(), report);
        remote.reindex();
    }

    /// Forgets the report of a deleted `object`.
    pub fn forget(&self, object: &str) {
        let mut remote = self.write();
        if remote.objects.remove(object).is_some() {
            remote.reindex();
        }
    }

    /// The proxy, wherever it is connected; `None` when no live replica serves it.
    pub fn get(&self, proxy: &ObjectKey, now: SystemTime) -> Option<FleetProxy> {
        if let Some(sync) = self.local.get(proxy) {
            return Some(FleetProxy {
                replica: self.replica.clone(),
                sync,
            });
        }
        let remote = self.read();
        remote
            .newest
            .get(proxy)
            .filter(|p| self.live(&remote, &p.replica, now))
            .cloned()
    }

    /// Every proxy of the fleet, each once, ordered by proxy.
    pub fn all(&self, now: SystemTime) -> Vec<FleetProxy> {
        let mut all: BTreeMap<ObjectKey, FleetProxy> = {
            let remote = self.read();
            remote
                .newest
                .iter()
                .filter(|(_, p)| self.live(&remote, &p.replica, now))
                .map(|(k, p)| (k.clone(), p.clone()))
                .collect()
        };
        for sync in self.local.all() {
            let replica = self.replica.clone();
            all.insert(sync.proxy.clone(), FleetProxy { replica, sync });
        }
        all.into_values().collect()
    }

    /// The objects of replicas that stopped renewing their reports: to delete.
    pub fn expired(&self, now: SystemTime) -> Vec<String> {
        let remote = self.read();
        let mut names: Vec<String> = remote
            .objects
            .iter()
            .filter(|(_, r)| !self.live(&remote, &r.replica, now))
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    fn live(&self, remote: &Remote, replica: &str, now: SystemTime) -> bool {
        remote.renewed.get(replica).is_some_and(|renewed| {
            now.duration_since(*renewed)
                .map_or(true, |age| age < self.expiry)
        })
    }

    // A panic while holding the lock leaves plain data behind, still fit to read.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Remote> {
        self.remote.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Remote> {
        self.remote.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use remora_xds::sync::{Mode, TypeSync};

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn synced(proxy: &str, connected: u64, version: &str) -> ProxySync {
        let t = TypeSync {
            sent: Some(version.into()),
            acked: Some(version.into()),
            ..Default::default()
        };
        let types = [(remora_xds::snapshot::CLUSTER, t)].into_iter().collect();
        let key = ObjectKey::new("shop", proxy);
        ProxySync::reported(key, Mode::Incremental, at(connected), types)
    }

    fn report(replica: &str, renewed: u64, proxies: Vec<ProxySync>) -> Report {
        Report {
            replica: replica.into(),
            renewed: at(renewed),
            proxies,
        }
    }

    fn names(fleet: &Fleet, now: u64) -> Vec<(String, String)> {
        fleet
            .all(at(now))
            .into_iter()
            .map(|p| (p.sync.proxy.name, p.replica))
            .collect()
    }

    #[test]
    fn the_fleet_is_the_own_proxies_and_every_live_replicas() {
        let local = SyncRegistry::new();
        local.connected(&ObjectKey::new("shop", "a"), Mode::Incremental);
        let fleet = Fleet::new(local, "r1");
        fleet.observe("r2-0", report("r2", 100, vec![synced("b", 50, "v1")]));
        fleet.observe("r3-0", report("r3", 100, vec![synced("c", 50, "v1")]));
        let all = names(&fleet, 110);
        assert_eq!(
            all,
            [("a", "r1"), ("b", "r2"), ("c", "r3")].map(|(p, r)| (p.to_owned(), r.to_owned()))
        );
        let b = fleet.get(&ObjectKey::new("shop", "b"), at(110));
        assert_eq!(b.map(|p| p.replica), Some("r2".to_owned()));
    }

    #[test]
    fn a_proxy_that_moved_is_counted_once_where_it_connected_last() {
        let local = SyncRegistry::new();
        let fleet = Fleet::new(local.clone(), "r1");
        // b left r2 for r3; r2's report still lists it.
        fleet.observe("r2-0", report("r2", 100, vec![synced("b", 50, "v1")]));
        fleet.observe("r3-0", report("r3", 100, vec![synced("b", 90, "v2")]));
        assert_eq!(names(&fleet, 110), [("b".to_owned(), "r3".to_owned())]);
        // Then it came here: this replica's own view wins.
        local.connected(&ObjectKey::new("shop", "b"), Mode::StateOfTheWorld);
        assert_eq!(names(&fleet, 110), [("b".to_owned(), "r1".to_owned())]);
    }

    #[test]
    fn a_dead_replicas_reports_expire_and_are_offered_for_deletion() {
        let fleet = Fleet::new(SyncRegistry::new(), "r1").with_expiry(Duration::from_secs(30));
        fleet.observe("r2-0", report("r2", 100, vec![synced("b", 50, "v1")]));
        fleet.observe("r2-1", report("r2", 80, vec![synced("c", 50, "v1")]));
        // One renewed shard keeps the replica alive, with all its shards.
        assert_eq!(names(&fleet, 125).len(), 2);
        assert!(fleet.expired(at(125)).is_empty());
        assert!(names(&fleet, 130).is_empty());
        assert!(fleet.get(&ObjectKey::new("shop", "b"), at(130)).is_none());
        assert_eq!(fleet.expired(at(130)), ["r2-0", "r2-1"]);
        fleet.forget("r2-0");
        fleet.forget("r2-1");
        assert!(fleet.expired(at(130)).is_empty());
    }

    #[test]
    fn this_replicas_own_old_reports_are_ignored() {
        let fleet = Fleet::new(SyncRegistry::new(), "r1");
        fleet.observe("r1-0", report("r1", 100, vec![synced("gone", 50, "v1")]));
        assert!(names(&fleet, 110).is_empty());
    }

    #[test]
    fn a_replaced_shard_replaces_its_proxies() {
        let fleet = Fleet::new(SyncRegistry::new(), "r1");
        fleet.observe("r2-0", report("r2", 100, vec![synced("b", 50, "v1")]));
        fleet.observe("r2-0", report("r2", 101, vec![synced("c", 60, "v1")]));
        assert_eq!(names(&fleet, 110), [("c".to_owned(), "r2".to_owned())]);
    }
}
