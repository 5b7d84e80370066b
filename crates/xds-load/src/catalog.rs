//! What the simulated proxies need to know about a resource: its name, its version and the
//! names it makes a proxy subscribe to (an EDS cluster's endpoints, a listener's route
//! configs). Decoding is what a real Envoy spends its time on, but here it would compete with
//! the server for the same two cores, so each distinct encoding is decoded once and shared
//! by every simulated proxy: ten thousand proxies of a few classes receive the same bytes.
//! What a proxy holds of a type is a [`Set`] of those entries, also shared: proxies that hold
//! the same resources hold one `Set`, so the fleet's memory grows with the distinct configs,
//! not with the proxies. And proxies that held the same set and take in the same response
//! end up with the same set, worked out once ([`Catalog::step`]): a route change brings ten
//! thousand proxies one route config each, and merging it into the thousands they hold, per
//! proxy, once took the fleet more CPU than the server spent on the change.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, MutexGuard, OnceLock, Weak},
};

use envoy_types::pb::envoy::{
    config::{
        cluster::v3::{
            Cluster,
            cluster::{ClusterDiscoveryType, DiscoveryType},
        },
        endpoint::v3::ClusterLoadAssignment,
        listener::v3::{FilterChain, Listener, filter::ConfigType},
        route::v3::RouteConfiguration,
    },
    extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, http_connection_manager::RouteSpecifier,
    },
};
use prost::{Message, Name};
use remora_xds::snapshot::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use xxhash_rust::xxh3::xxh3_64;

/// One decoded resource.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: Arc<str>,
    /// xxh3-64 of the encoding: the server's version of the resource, as a number.
    pub version: u64,
    /// Names of the resources of the next type this one makes a proxy ask for.
    pub refs: Box<[Arc<str>]>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot decode a {type_url}: {source}")]
    Protobuf {
        type_url: &'static str,
        source: prost::DecodeError,
    },
}

/// One type's resources as a proxy holds them, or as one response carried them.
#[derive(Debug)]
pub struct Set {
    /// Sorted by name, one per name.
    entries: Box<[Arc<Entry>]>,
    /// The names the entries refer to, sorted and without repeats, computed once per `Set`
    /// however many proxies hold it.
    refs: OnceLock<Box<[Arc<str>]>>,
}

impl Set {
    pub fn get(&self, name: &str) -> Option<&Arc<Entry>> {
        self.entries
            .binary_search_by(|e| (*e.name).cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }

    pub fn entries(&self) -> &[Arc<Entry>] {
        &self.entries
    }

    /// The names of the next type that these resources make a proxy subscribe to.
    pub fn refs(&self) -> &[Arc<str>] {
        self.refs.get_or_init(|| {
            let names: BTreeSet<&Arc<str>> = self.entries.iter().flat_map(|e| &e.refs).collect();
            names.into_iter().cloned().collect()
        })
    }

    /// Whether this holds exactly `entries` (one per name, in any order). Entries come from
    /// the catalog, so the same entries in name order are the same pointers, which spares
    /// comparing names.
    fn holds(&self, entries: &[Arc<Entry>]) -> bool {
        self.entries.len() == entries.len()
            && (self
                .entries
                .iter()
                .zip(entries)
                .all(|(a, b)| Arc::ptr_eq(a, b))
                || entries
                    .iter()
                    .all(|e| self.get(&e.name).is_some_and(|h| h.version == e.version)))
    }
}

/// Every distinct encoding seen so far, by type and hash, the sets proxies hold, and the
/// steps from one set to the next.
#[derive(Debug, Default)]
pub struct Catalog {
    known: Mutex<HashMap<(&'static str, u64), Arc<Entry>>>,
    sets: Mutex<Sets>,
    steps: Mutex<Steps>,
}

/// What decides the set a proxy holds after it takes in a response: the set it held, the
/// set the response carried, a set of the parent type (whose references say what is still
/// wanted) and the names the response removed. Sets by address: each [`Step`] keeps a
/// `Weak` of each, so no address is reused while its step exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct StepKey {
    type_url: &'static str,
    from: usize,
    carried: usize,
    basis: usize,
    /// xxh3 of the removed names; the names themselves are compared on a hit.
    removed: u64,
}

#[derive(Debug)]
struct Step {
    /// The sets of the key, never read: held only so their addresses stay reserved.
    _reserved: [Option<Weak<Set>>; 3],
    removed: Box<[Arc<str>]>,
    to: Weak<Set>,
}

/// The steps some proxy may take again: those whose resulting set is still held.
#[derive(Debug, Default)]
struct Steps {
    by_key: HashMap<StepKey, Step>,
    /// When the table has this many entries, those whose set is gone are dropped.
    prune_at: usize,
}

/// The sets some proxy may still hold, by type and fingerprint (the XOR of the entries'
/// versions, whatever their order). Weak, so a set nobody holds any more is freed.
#[derive(Debug, Default)]
struct Sets {
    by_fingerprint: HashMap<(&'static str, u64), Weak<Set>>,
    /// When the table has this many slots, the dead ones are dropped.
    prune_at: usize,
}

/// Below this many, dead slots of [`Sets`] are not worth a sweep.
const PRUNE_MIN: usize = 1024;

impl Catalog {
    /// The entries of resources of `type_url` (one of the four served types), in order.
    pub fn entries(
        &self,
        type_url: &'static str,
        bodies: &[&[u8]],
    ) -> Result<Vec<Arc<Entry>>, DecodeError> {
        let versions: Vec<u64> = bodies.iter().map(|b| xxh3_64(b)).collect();
        let mut found: Vec<Option<Arc<Entry>>> = {
            let known = lock(&self.known);
            versions
                .iter()
                .map(|v| known.get(&(type_url, *v)).cloned())
                .collect()
        };
        // Decoded outside the lock: two proxies may decode the same bytes at once, and the
        // first to insert wins; both results are equal.
        let mut decoded = Vec::new();
        for (i, slot) in found.iter().enumerate() {
            if slot.is_none() {
                let (name, refs) = decode(type_url, bodies[i])
                    .map_err(|source| DecodeError::Protobuf { type_url, source })?;
                let entry = Entry {
                    name: name.into(),
                    version: versions[i],
                    refs: refs.into_iter().map(Arc::from).collect(),
                };
                decoded.push((i, entry));
            }
        }
        if !decoded.is_empty() {
            let mut known = lock(&self.known);
            for (i, entry) in decoded {
                let shared = known
                    .entry((type_url, entry.version))
                    .or_insert_with(|| Arc::new(entry));
                found[i] = Some(shared.clone());
            }
        }
        Ok(found.into_iter().flatten().collect())
    }

    /// The shared set of exactly `entries`, one per name.
    pub fn set(&self, type_url: &'static str, mut entries: Vec<Arc<Entry>>) -> Arc<Set> {
        let fingerprint = entries.iter().fold(0, |f, e| f ^ e.version);
        let key = (type_url, fingerprint);
        if let Some(set) = lock(&self.sets)
            .by_fingerprint
            .get(&key)
            .and_then(Weak::upgrade)
            && set.holds(&entries)
        {
            return set;
        }
        entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let set = Arc::new(Set {
            entries: entries.into(),
            refs: OnceLock::new(),
        });
        let mut sets = lock(&self.sets);
        if sets.by_fingerprint.len() >= sets.prune_at {
            sets.by_fingerprint.retain(|_, s| s.strong_count() > 0);
            sets.prune_at = (2 * sets.by_fingerprint.len()).max(PRUNE_MIN);
        }
        sets.by_fingerprint.insert(key, Arc::downgrade(&set));
        set
    }
}

impl Catalog {
    /// The set that follows `from` (`None`: nothing held yet) once a response that carried
    /// `carried` and removed `removed` is taken in, where `basis` (a set of the parent type)
    /// is whatever else decides it; `build` works it out the first time. Proxies that take
    /// the same step share its result.
    pub fn step(
        &self,
        type_url: &'static str,
        from: Option<&Arc<Set>>,
        carried: &Arc<Set>,
        basis: Option<&Arc<Set>>,
        removed: &[Arc<str>],
        build: impl FnOnce() -> Arc<Set>,
    ) -> Arc<Set> {
        let address = |s: Option<&Arc<Set>>| s.map_or(0, |s| Arc::as_ptr(s) as usize);
        let key = StepKey {
            type_url,
            from: address(from),
            carried: address(Some(carried)),
            basis: address(basis),
            removed: removed
                .iter()
                .fold(0, |h, n| xxh3_64(n.as_bytes()) ^ h.rotate_left(7)),
        };
        if let Some(step) = lock(&self.steps).by_key.get(&key)
            && *step.removed == *removed
            && let Some(to) = step.to.upgrade()
        {
            return to;
        }
        // Built outside the lock: two proxies may build the same step at once, and both
        // results are the same shared set.
        let to = build();
        let mut steps = lock(&self.steps);
        if steps.by_key.len() >= steps.prune_at {
            steps.by_key.retain(|_, s| s.to.strong_count() > 0);
            steps.prune_at = (2 * steps.by_key.len()).max(PRUNE_MIN);
        }
        steps.by_key.insert(
            key,
            Step {
                _reserved: [from, Some(carried), basis].map(|s| s.map(Arc::downgrade)),
                removed: removed.into(),
                to: Arc::downgrade(&to),
            },
        );
        to
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A resource's name and the names it refers to.
fn decode(type_url: &str, body: &[u8]) -> Result<(String, BTreeSet<String>), prost::DecodeError> {
    Ok(match type_url {
        CLUSTER => {
            let c = Cluster::decode(body)?;
            let eds = c.cluster_discovery_type
                == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
            let refs = eds
                .then(|| match c.eds_cluster_config.as_ref() {
                    Some(e) if !e.service_name.is_empty() => e.service_name.clone(),
                    _ => c.name.clone(),
                })
                .into_iter()
                .collect();
            (c.name, refs)
        }
        LISTENER => {
            let l = Listener::decode(body)?;
            let mut refs = BTreeSet::new();
            for chain in l.filter_chains.iter().chain(&l.default_filter_chain) {
                route_config_names(chain, &mut refs)?;
            }
            (l.name, refs)
        }
        ENDPOINT => (
            ClusterLoadAssignment::decode(body)?.cluster_name,
            BTreeSet::new(),
        ),
        ROUTE => (RouteConfiguration::decode(body)?.name, BTreeSet::new()),
        _ => (String::new(), BTreeSet::new()),
    })
}

/// The route configs that a chain's HTTP connection managers take over RDS.
fn route_config_names(
    chain: &FilterChain,
    out: &mut BTreeSet<String>,
) -> Result<(), prost::DecodeError> {
    for filter in &chain.filters {
        if let Some(ConfigType::TypedConfig(any)) = &filter.config_type
            && any.type_url == HttpConnectionManager::type_url()
            && let Some(RouteSpecifier::Rds(rds)) =
                HttpConnectionManager::decode(any.value.as_slice())?.route_specifier
        {
            out.insert(rds.route_config_name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::{
        envoy::{
            config::{
                cluster::v3::cluster::EdsClusterConfig,
                listener::v3::{Filter, filter},
            },
            extensions::filters::network::http_connection_manager::v3::Rds,
        },
        google::protobuf::Any,
    };

    use super::*;

    fn one(
        catalog: &Catalog,
        type_url: &'static str,
        body: &[u8],
    ) -> Result<Arc<Entry>, DecodeError> {
        Ok(catalog.entries(type_url, &[body])?.remove(0))
    }

    fn names(e: &Entry) -> Vec<&str> {
        e.refs.iter().map(|r| &**r).collect()
    }

    #[test]
    fn eds_clusters_and_rds_listeners_name_what_to_subscribe_to() {
        let catalog = Catalog::default();
        let eds = Cluster {
            name: "outbound|8080||a.ns".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig::default()),
            ..Default::default()
        };
        let e = one(&catalog, CLUSTER, &eds.encode_to_vec()).expect("decodes");
        assert_eq!(
            (&*e.name, names(&e)),
            ("outbound|8080||a.ns", vec!["outbound|8080||a.ns"])
        );
        let fixed = Cluster {
            name: "inbound".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
            ..Default::default()
        };
        let e = one(&catalog, CLUSTER, &fixed.encode_to_vec()).expect("decodes");
        assert!(e.refs.is_empty());

        let hcm = HttpConnectionManager {
            route_specifier: Some(RouteSpecifier::Rds(Rds {
                route_config_name: "8080".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let listener = Listener {
            name: "0.0.0.0_8080".into(),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "hcm".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(Any {
                        type_url: HttpConnectionManager::type_url(),
                        value: hcm.encode_to_vec(),
                    })),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let body = listener.encode_to_vec();
        let e = one(&catalog, LISTENER, &body).expect("decodes");
        assert_eq!(names(&e), ["8080"]);
        assert_eq!(e.version, xxh3_64(&body));
        // The same bytes again are the same entry, not a second decode.
        assert!(Arc::ptr_eq(
            &e,
            &one(&catalog, LISTENER, &body).expect("cached")
        ));
        assert!(one(&catalog, ROUTE, b"\xff\xff").is_err());
    }

    #[test]
    fn proxies_holding_the_same_resources_share_one_set() {
        let catalog = Catalog::default();
        let route = |name: &str| RouteConfiguration {
            name: name.into(),
            ..Default::default()
        };
        let bodies: Vec<Vec<u8>> = ["b", "a", "c"].map(|n| route(n).encode_to_vec()).into();
        let slices: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
        let entries = catalog.entries(ROUTE, &slices).expect("decodes");
        assert_eq!(
            entries.iter().map(|e| &*e.name).collect::<Vec<_>>(),
            ["b", "a", "c"]
        );
        let set = catalog.set(ROUTE, entries.clone());
        assert_eq!(
            set.entries().iter().map(|e| &*e.name).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(set.get("c").map(|e| e.version), Some(xxh3_64(&bodies[2])));
        assert!(set.get("d").is_none());
        let reversed: Vec<_> = entries.iter().rev().cloned().collect();
        assert!(Arc::ptr_eq(&set, &catalog.set(ROUTE, reversed)));
        // Another type, or other resources, are another set.
        assert!(!Arc::ptr_eq(&set, &catalog.set(ENDPOINT, entries.clone())));
        let fewer = catalog.set(ROUTE, entries[..2].to_vec());
        assert_eq!(fewer.entries().len(), 2);
        // Two entries whose versions XOR to the same as one are still told apart.
        let forged = Arc::new(Entry {
            name: "x".into(),
            version: entries[0].version ^ entries[1].version,
            refs: Box::new([]),
        });
        let other = catalog.set(ROUTE, vec![forged]);
        assert!(!Arc::ptr_eq(&fewer, &other) && other.entries().len() == 1);
        // Once no proxy holds a set, it is gone, and asking again builds it anew.
        let weak = Arc::downgrade(&set);
        drop(set);
        assert!(weak.upgrade().is_none());
        assert_eq!(catalog.set(ROUTE, entries).entries().len(), 3);
    }

    #[test]
    fn proxies_taking_the_same_step_share_its_result_built_once() {
        let catalog = Catalog::default();
        let entry = |name: &str, version| {
            Arc::new(Entry {
                name: name.into(),
                version,
                refs: Box::new([]),
            })
        };
        let held = catalog.set(ROUTE, vec![entry("a", 1), entry("b", 1)]);
        let carried = catalog.set(ROUTE, vec![entry("a", 2)]);
        let builds = std::cell::Cell::new(0);
        let build = |result: Vec<Arc<Entry>>| {
            builds.set(builds.get() + 1);
            catalog.set(ROUTE, result)
        };
        let moved = vec![entry("a", 2), entry("b", 1)];
        let first = catalog.step(ROUTE, Some(&held), &carried, None, &[], || {
            build(moved.clone())
        });
        let again = catalog.step(ROUTE, Some(&held), &carried, None, &[], || {
            build(moved.clone())
        });
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(builds.get(), 1);
        // Another removal, another held set or another basis is another step.
        let gone: [Arc<str>; 1] = [Arc::from("b")];
        let without_b = catalog.step(ROUTE, Some(&held), &carried, None, &gone, || {
            build(vec![entry("a", 2)])
        });
        assert_eq!(without_b.entries().len(), 1);
        catalog.step(ROUTE, None, &carried, None, &[], || {
            build(vec![entry("a", 2)])
        });
        catalog.step(ROUTE, Some(&held), &carried, Some(&held), &[], || {
            build(moved.clone())
        });
        assert_eq!(builds.get(), 4);
        // Once nobody holds a step's result, taking the step builds it anew.
        drop((first, again));
        catalog.step(ROUTE, Some(&held), &carried, None, &[], || {
            build(moved.clone())
        });
        assert_eq!(builds.get(), 5);
    }

    #[test]
    fn a_set_refers_to_each_name_once_in_order() {
        let catalog = Catalog::default();
        let entry = |name: &str, refs: &[&str]| {
            Arc::new(Entry {
                name: name.into(),
                version: xxh3_64(name.as_bytes()),
                refs: refs.iter().map(|r| Arc::from(*r)).collect(),
            })
        };
        let set = catalog.set(
            LISTENER,
            vec![entry("l2", &["9090", "8080"]), entry("l1", &["8080"])],
        );
        assert_eq!(
            set.refs().iter().map(|r| &**r).collect::<Vec<_>>(),
            ["8080", "9090"]
        );
    }
}
