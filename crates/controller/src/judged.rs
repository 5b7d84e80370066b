//! How each proxy of the fleet stands, judged once per status pass, and what earlier passes
//! saw: a proxy that is behind on one change still runs every route that an earlier config
//! it ACKed in full already had, so a route edit does not make every other route's count dip
//! while the fleet takes it.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use remora_fleet::{Fleet, FleetProxy};
use remora_model::{Mesh, input::ObjectKey, routing::RouteKey};
use remora_rollout::ProxyHealth;
use remora_status::ProxyTally;
use remora_xds::{Snapshot, SnapshotCache, sync::ProxySync};

/// How a proxy stands: `Acked` when it runs the config published for it now (every type
/// it asked for ACKed at the version of its current snapshot), `Nacked` with Envoy's message
/// when it rejected what was last sent, `Pending` while it has not caught up.
///
/// Versions are content hashes, the same on every replica, so a proxy another replica serves
/// is judged against this replica's snapshot alike.
fn judge(snapshot: Option<&Snapshot>, status: &ProxySync) -> ProxyHealth {
    let Some(snapshot) = snapshot else {
        return ProxyHealth::Pending;
    };
    if let Some(nack) = status.types.values().find_map(|t| {
        t.nack
            .as_ref()
            .filter(|n| Some(&n.version) == t.sent.as_ref())
    }) {
        return ProxyHealth::Nacked(nack.message.clone());
    }
    let acked = status
        .types
        .iter()
        .all(|(type_url, t)| t.acked.as_deref() == Some(snapshot.set(type_url).version()));
    if acked {
        ProxyHealth::Acked
    } else {
        ProxyHealth::Pending
    }
}

/// What earlier passes saw. Passes are numbered; a route's current generation and a proxy's
/// current snapshot each carry the number of the first pass that saw them. Every pass reads
/// the model before the snapshots, so a snapshot first seen on a later pass than a route's
/// generation was computed from a model that held that generation.
#[derive(Default)]
pub(crate) struct Seen {
    pass: u64,
    routes: HashMap<RouteKey, (Option<i64>, u64)>,
    snapshots: HashMap<ObjectKey, (Arc<Snapshot>, u64)>,
    /// Per proxy, the pass that first saw the newest snapshot it was judged to run in full.
    synced: HashMap<ObjectKey, u64>,
}

impl Seen {
    /// Starts a pass with the generations the model holds now of `routes`.
    pub(crate) fn routes(&mut self, mesh: &Mesh, routes: impl IntoIterator<Item = RouteKey>) {
        self.pass += 1;
        let pass = self.pass;
        let mut next = HashMap::new();
        for key in routes {
            let generation = mesh.route_generation(&key);
            let first = match self.routes.get(&key) {
                Some((g, first)) if *g == generation => *first,
                _ => pass,
            };
            next.insert(key, (generation, first));
        }
        self.routes = next;
    }

    /// The pass that first saw the route's current generation.
    pub(crate) fn route(&self, route: &RouteKey) -> u64 {
        self.routes
            .get(route)
            .map_or(self.pass, |(_, first)| *first)
    }
}

/// One proxy, judged.
struct Judgement {
    health: ProxyHealth,
    /// The pass that first saw the newest snapshot it ran in full, if any pass did.
    synced: Option<u64>,
}

/// A class's counts, judged once per pass for every route that reaches the class.
#[derive(Default)]
struct ClassCounts {
    affected: i32,
    acked: i32,
    nacked: i32,
    first_nack: Option<(ObjectKey, String)>,
    /// Per pending proxy with a config it ran in full, the pass that first saw that config.
    behind: Vec<u64>,
}

/// A class's member set, by address. The entry holds the set, so the address stays its own
/// and the model replaces rather than changes it for the life of the pass.
type ClassCache = HashMap<usize, (Arc<BTreeSet<ObjectKey>>, Arc<ClassCounts>)>;

/// Every proxy of the fleet judged once for one status pass, which then counts each route's
/// and policy's proxies from here. A proxy connected to no live replica (yet) is `Unknown`:
/// a rollout's health gate goes by its pod's readiness (which the proxy's own readiness
/// probe gates).
pub(crate) struct Judged {
    proxies: HashMap<ObjectKey, Judgement>,
    classes: Mutex<ClassCache>,
}

const UNKNOWN: ProxyHealth = ProxyHealth::Unknown;

impl Judged {
    /// Judges the fleet against the snapshots published now, after `seen.routes` started
    /// the pass.
    pub(crate) fn at(
        cache: &SnapshotCache,
        fleet: &Fleet,
        now: SystemTime,
        seen: &mut Seen,
    ) -> Judged {
        let mut snapshots = HashMap::new();
        let mut judged = HashMap::new();
        for FleetProxy { sync, .. } in fleet.all(now) {
            let proxy = sync.proxy.clone();
            let snapshot = cache.get(&proxy);
            let health = judge(snapshot.as_deref(), &sync);
            if let Some(snapshot) = snapshot {
                let first = match seen.snapshots.remove(&proxy) {
                    Some((old, first)) if old == snapshot => first,
                    _ => seen.pass,
                };
                if health == ProxyHealth::Acked {
                    seen.synced.insert(proxy.clone(), first);
                }
                snapshots.insert(proxy.clone(), (snapshot, first));
            }
            let synced = seen.synced.get(&proxy).copied();
            judged.insert(proxy, Judgement { health, synced });
        }
        seen.snapshots = snapshots;
        seen.synced.retain(|p, _| judged.contains_key(p));
        Judged {
            proxies: judged,
            classes: Mutex::default(),
        }
    }

    pub(crate) fn of(&self, proxy: &ObjectKey) -> &ProxyHealth {
        self.proxies.get(proxy).map_or(&UNKNOWN, |j| &j.health)
    }

    /// The counts of a policy's `proxies`: those that run the config published for them now.
    pub(crate) fn tally<'a>(&self, proxies: impl IntoIterator<Item = &'a ObjectKey>) -> ProxyTally {
        let counts = self.count(proxies);
        ProxyTally {
            affected: counts.affected,
            acked: counts.acked,
            nacked: counts.nacked,
            first_nack: counts.first_nack.map(|(p, m)| (p.to_string(), m)),
        }
    }

    /// The counts of a route's proxies, by class (`Mesh::route_proxies`). A proxy still
    /// taking a newer config counts as ACKed when a config it ran in full was first seen
    /// after the route's generation (`since`, from [`Seen::route`]): it runs the route as it
    /// is now.
    pub(crate) fn tally_route<'a>(
        &self,
        classes: impl IntoIterator<Item = &'a Arc<BTreeSet<ObjectKey>>>,
        since: u64,
    ) -> ProxyTally {
        let mut t = ProxyTally::default();
        let mut first: Option<(ObjectKey, String)> = None;
        for class in classes {
            let counts = self.class(class);
            t.affected += counts.affected;
            t.acked += counts.acked;
            t.acked += counts.behind.iter().filter(|s| **s > since).count() as i32;
            t.nacked += counts.nacked;
            if let Some((p, m)) = &counts.first_nack
                && first.as_ref().is_none_or(|(f, _)| p < f)
            {
                first = Some((p.clone(), m.clone()));
            }
        }
        t.first_nack = first.map(|(p, m)| (p.to_string(), m));
        t
    }

    fn class(&self, members: &Arc<BTreeSet<ObjectKey>>) -> Arc<ClassCounts> {
        let mut classes = self.classes.lock().unwrap_or_else(|e| e.into_inner());
        let address = Arc::as_ptr(members) as usize;
        let (_, counts) = classes
            .entry(address)
            .or_insert_with(|| (members.clone(), Arc::new(self.count(members.iter()))));
        counts.clone()
    }

    /// Quotes the NACK of the first proxy by name, so the same NACKs give the same status.
    fn count<'a>(&self, proxies: impl IntoIterator<Item = &'a ObjectKey>) -> ClassCounts {
        let mut c = ClassCounts::default();
        for p in proxies {
            c.affected += 1;
            let Some(j) = self.proxies.get(p) else {
                continue;
            };
            match &j.health {
                ProxyHealth::Acked => c.acked += 1,
                ProxyHealth::Pending => c.behind.extend(j.synced),
                ProxyHealth::Unknown => {}
                ProxyHealth::Nacked(message) => {
                    c.nacked += 1;
                    if c.first_nack.as_ref().is_none_or(|(f, _)| p < f) {
                        c.first_nack = Some((p.clone(), message.clone()));
                    }
                }
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use remora_fleet::Report;
    use remora_model::input::MeshSettings;
    use remora_xds::{
        SyncRegistry,
        snapshot::{CLUSTER, Resources},
        sync::{Mode, Nack, TypeSync},
    };

    use super::*;

    /// A proxy another replica serves, having answered `acked` and maybe NACKed `nacked`.
    fn elsewhere(name: &str, acked: &str, nack: Option<&str>) -> ProxySync {
        let t = TypeSync {
            sent: Some(nack.map_or(acked, |_| "new").to_owned()),
            acked: Some(acked.to_owned()),
            nack: nack.map(|m| Nack {
                version: "new".into(),
                message: m.into(),
            }),
            resources_sent: 1,
        };
        let types = BTreeMap::from([(CLUSTER, t)]);
        ProxySync::reported(
            ObjectKey::new("shop", name),
            Mode::Incremental,
            SystemTime::now(),
            types,
        )
    }

    #[test]
    fn a_proxy_on_another_replica_is_judged_by_its_report_against_this_snapshot() {
        let cache = SnapshotCache::new();
        let current = Snapshot::new([(CLUSTER, Resources::empty())]);
        let version = current.resources(CLUSTER).version().to_owned();
        let current = Arc::new(current);
        let fleet = Fleet::new(SyncRegistry::new(), "leader");
        let mut proxies = vec![elsewhere("synced", &version, None)];
        // The proxy refused what the other replica sent and runs the current version's
        // predecessor; here "new" stands for the version it was sent.
        proxies.push(elsewhere("refusing", "old", Some("bad regex")));
        proxies.push(elsewhere("behind", "old", None));
        for p in &proxies {
            cache.set(&p.proxy, current.clone());
        }
        let report = Report {
            replica: "follower".into(),
            renewed: SystemTime::now(),
            proxies,
        };
        fleet.observe("follower-0", report);
        let now = SystemTime::now();
        let mut seen = Seen::default();
        let judged = Judged::at(&cache, &fleet, now, &mut seen);
        let health = |name: &str| judged.of(&ObjectKey::new("shop", name)).clone();
        assert_eq!(health("synced"), ProxyHealth::Acked);
        assert_eq!(health("refusing"), ProxyHealth::Nacked("bad regex".into()));
        assert_eq!(health("behind"), ProxyHealth::Pending);
        assert_eq!(health("nowhere"), ProxyHealth::Unknown);
        let keys: Vec<ObjectKey> = ["synced", "refusing", "behind", "nowhere"]
            .iter()
            .map(|n| ObjectKey::new("shop", *n))
            .collect();
        let tally = judged.tally(&keys);
        assert_eq!((tally.affected, tally.acked, tally.nacked), (4, 1, 1));
        assert_eq!(
            tally.first_nack,
            Some(("shop/refusing".to_owned(), "bad regex".to_owned()))
        );
        // By class, counted once however many routes reach it, the same sums.
        let classes = [
            Arc::new(keys[..2].iter().cloned().collect::<BTreeSet<_>>()),
            Arc::new(keys[2..].iter().cloned().collect::<BTreeSet<_>>()),
        ];
        for _ in 0..2 {
            let by_class = judged.tally_route(
                &classes,
                seen.route(&RouteKey::traffic(ObjectKey::new("shop", "r"))),
            );
            assert_eq!(by_class, tally);
        }
        // Once the follower stops renewing its report, its proxies are unknown: a rollout
        // gate goes by their pods' readiness again.
        let later = Judged::at(
            &cache,
            &fleet,
            now + remora_fleet::DEFAULT_EXPIRY,
            &mut seen,
        );
        let stale = later.of(&ObjectKey::new("shop", "refusing"));
        assert_eq!(stale, &ProxyHealth::Unknown);
    }

    /// A snapshot of one cluster at `version`.
    fn snapshot(version: &str) -> Snapshot {
        let resource = remora_envoy::EnvoyResource {
            name: "c".into(),
            type_url: CLUSTER,
            version: version.into(),
            any: Default::default(),
        };
        let map = BTreeMap::from([("c".to_owned(), Arc::new(resource))]);
        Snapshot::new([(CLUSTER, Resources::from_map(map))])
    }

    /// A proxy's sync state: every type ACKed at the version its snapshot `v` gives.
    fn running(name: &str, v: &Snapshot) -> ProxySync {
        elsewhere(name, v.resources(CLUSTER).version(), None)
    }

    #[test]
    fn a_proxy_behind_on_a_newer_config_still_counts_for_a_route_it_runs_but_not_for_the_edit() {
        let (v1, v2) = (Arc::new(snapshot("1")), Arc::new(snapshot("2")));
        let cache = SnapshotCache::new();
        let registry = SyncRegistry::new();
        let fleet = Fleet::new(registry.clone(), "leader");
        let proxy = ObjectKey::new("shop", "api-0");
        let (old, edited) = (
            ObjectKey::new("shop", "old"),
            ObjectKey::new("shop", "edited"),
        );
        let mesh = Mesh::new(MeshSettings::default());
        let mut seen = Seen::default();
        let report = |sync: ProxySync| {
            fleet.observe(
                "follower-0",
                Report {
                    replica: "follower".into(),
                    renewed: SystemTime::now(),
                    proxies: vec![sync],
                },
            )
        };
        let pass = |seen: &mut Seen| {
            seen.routes(&mesh, [(&old).into(), (&edited).into()]);
            Judged::at(&cache, &fleet, SystemTime::now(), seen)
        };
        let class = Arc::new(BTreeSet::from([proxy.clone()]));
        let counts = |judged: &Judged, seen: &Seen, route: &ObjectKey| {
            let t = judged.tally_route([&class], seen.route(&route.into()));
            (t.acked, judged.tally([&proxy]).acked)
        };

        // The proxy runs v1 when both routes are first seen: the pass sees them together,
        // so v1 may predate them, and it counts because it runs the config of now.
        cache.set(&proxy, v1.clone());
        report(running("api-0", &v1));
        let judged = pass(&mut seen);
        assert_eq!(counts(&judged, &seen, &old), (1, 1));
        // v2 is published: the proxy still runs v1, which was first seen on the same pass
        // as both routes, so it counts for neither.
        cache.set(&proxy, v2.clone());
        let judged = pass(&mut seen);
        assert_eq!(counts(&judged, &seen, &old), (0, 0));
        // It takes v2, first seen after both routes: it counts for both.
        report(running("api-0", &v2));
        let judged = pass(&mut seen);
        assert_eq!(counts(&judged, &seen, &old), (1, 1));
        assert_eq!(counts(&judged, &seen, &edited), (1, 1));
        // `edited` gets a new generation (here: it leaves the model for a pass and comes
        // back) and v3 is published with it. While the proxy is behind on v3 it still runs
        // `old` as it is, but not `edited`.
        seen.routes(&mesh, [(&old).into()]);
        let v3 = Arc::new(snapshot("3"));
        cache.set(&proxy, v3.clone());
        let judged = pass(&mut seen);
        assert_eq!(counts(&judged, &seen, &old), (1, 0));
        assert_eq!(counts(&judged, &seen, &edited), (0, 0));
        report(running("api-0", &v3));
        let judged = pass(&mut seen);
        assert_eq!(counts(&judged, &seen, &edited), (1, 1));
    }
}
