//! What one simulated proxy holds of each type, and asked for: sets shared with every proxy
//! that holds the same ([`crate::catalog`]), so ten thousand proxies cost little more than
//! the distinct configs they hold.

use std::{collections::BTreeMap, sync::Arc};

use remora_xds::snapshot::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

use crate::catalog::{Catalog, Entry, Set};

/// The types a proxy subscribes to by name, each after the type that names them.
const DEPENDENT: [(&str, &str); 2] = [(CLUSTER, ENDPOINT), (LISTENER, ROUTE)];

/// A change of the names a proxy subscribes to of one type.
#[derive(Debug)]
pub struct Resubscription {
    pub type_url: &'static str,
    old: Option<Arc<Set>>,
    new: Arc<Set>,
}

impl Resubscription {
    /// The names subscribed to until now, sorted.
    pub fn before(&self) -> &[Arc<str>] {
        self.old.as_ref().map_or(&[], |s| s.refs())
    }

    /// The names to subscribe to, sorted.
    pub fn after(&self) -> &[Arc<str>] {
        self.new.refs()
    }
}

/// What a proxy held of each type at one moment: the sets themselves, shared, so taking it
/// costs a few reference counts.
#[derive(Clone, Debug, Default)]
pub struct Baseline(BTreeMap<&'static str, Arc<Set>>);

impl Baseline {
    /// The version of the resource held then, if it was.
    pub fn version(&self, type_url: &str, name: &str) -> Option<u64> {
        self.0.get(type_url)?.get(name).map(|e| e.version)
    }
}

/// What one proxy holds and asked for: shared sets, no resources of its own.
#[derive(Debug, Default)]
pub struct Held {
    /// By type.
    types: BTreeMap<&'static str, Arc<Set>>,
    /// By EDS and RDS: the clusters or listeners whose references were last subscribed to.
    subscribed: BTreeMap<&'static str, Arc<Set>>,
}

impl Held {
    /// A whole set of a type, as a response of listeners or clusters brings.
    pub fn replace(&mut self, type_url: &'static str, set: Arc<Set>) {
        self.types.insert(type_url, set);
    }

    /// Some routes or endpoints, as a state-of-the-world response of them brings: Envoy
    /// keeps those it leaves out, and drops one only when no listener or cluster names it
    /// any more.
    pub fn merge(&mut self, catalog: &Catalog, type_url: &'static str, carried: &Arc<Set>) {
        let from = self.types.get(type_url);
        let parent = DEPENDENT
            .iter()
            .find(|(_, c)| *c == type_url)
            .and_then(|(p, _)| self.types.get(p));
        let set = catalog.step(type_url, from, carried, parent, &[], || {
            let wanted = self.wanted(type_url);
            let unwanted: Vec<Arc<str>> = from
                .into_iter()
                .flat_map(|s| s.entries())
                .filter(|e| wanted.binary_search(&e.name).is_err())
                .map(|e| e.name.clone())
                .collect();
            applied(catalog, type_url, from, carried.entries(), &unwanted)
        });
        self.types.insert(type_url, set);
    }

    /// After a response of `type_url`: when what it holds names resources of another type
    /// (clusters their endpoints, listeners their routes) other than those subscribed to,
    /// the new subscription, which is from then on the one held.
    pub fn resubscription(&mut self, type_url: &str) -> Option<Resubscription> {
        let (parent, child) = DEPENDENT.iter().find(|(p, _)| *p == type_url)?;
        let new = self.types.get(parent)?.clone();
        if new.refs() == self.subscription(child) {
            return None;
        }
        let old = self.subscribed.insert(child, new.clone());
        Some(Resubscription {
            type_url: child,
            old,
            new,
        })
    }

    /// An incremental response: what changed (`carried`), and what went.
    pub fn update(
        &mut self,
        catalog: &Catalog,
        type_url: &'static str,
        carried: &Arc<Set>,
        removed: &[Arc<str>],
    ) {
        let from = self.types.get(type_url);
        let set = catalog.step(type_url, from, carried, None, removed, || {
            applied(catalog, type_url, from, carried.entries(), removed)
        });
        self.types.insert(type_url, set);
    }

    /// The names of `child` resources that the held resources of its parent type refer to.
    fn wanted(&self, child: &str) -> &[Arc<str>] {
        DEPENDENT
            .iter()
            .find(|(_, c)| *c == child)
            .and_then(|(parent, _)| self.types.get(parent))
            .map_or(&[], |s| s.refs())
    }

    /// The names of `child` resources last subscribed to.
    pub fn subscription(&self, child: &str) -> &[Arc<str>] {
        self.subscribed.get(child).map_or(&[], |s| s.refs())
    }

    /// What it holds now, to compare what comes later with.
    pub fn snapshot(&self) -> Baseline {
        Baseline(self.types.clone())
    }

    /// Whether the proxy has a complete config: clusters and listeners, and every endpoint
    /// set and route config they name. The error says what is missing.
    pub fn synced(&self) -> Result<(), String> {
        for (parent, child) in DEPENDENT {
            if !self.types.contains_key(parent) {
                return Err(format!("no response of {parent} yet"));
            }
            let wanted = self.wanted(child);
            let held = self.types.get(child);
            let missing: Vec<&str> = wanted
                .iter()
                .filter(|n| held.is_none_or(|h| h.get(n).is_none()))
                .map(|n| &**n)
                .collect();
            if let Some(first) = missing.first() {
                return Err(format!(
                    "{} of the {} {child} named by its {parent} never arrived, e.g. {first:?}",
                    missing.len(),
                    wanted.len(),
                ));
            }
        }
        Ok(())
    }
}

/// The set `held` becomes with `entries` put in and `removed` taken out.
fn applied(
    catalog: &Catalog,
    type_url: &'static str,
    held: Option<&Arc<Set>>,
    entries: &[Arc<Entry>],
    removed: &[Arc<str>],
) -> Arc<Set> {
    // A whole copy for a few changes, but only for the moment of building the new set.
    let mut by_name: BTreeMap<&str, &Arc<Entry>> = held
        .into_iter()
        .flat_map(|s| s.entries())
        .map(|e| (&*e.name, e))
        .collect();
    for name in removed {
        by_name.remove(&**name);
    }
    by_name.extend(entries.iter().map(|e| (&*e.name, e)));
    catalog.set(type_url, by_name.into_values().cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry whose version stands for its content: its name and what it refers to.
    fn entry(name: &str, refs: &[&str]) -> Arc<Entry> {
        let content = [&[name][..], refs].concat().join(" ");
        Arc::new(Entry {
            name: name.into(),
            version: xxhash_rust::xxh3::xxh3_64(content.as_bytes()),
            refs: refs.iter().map(|r| Arc::from(*r)).collect(),
        })
    }

    fn names(names: &[Arc<str>]) -> Vec<&str> {
        names.iter().map(|n| &**n).collect()
    }

    /// The shared set a response carrying `entries` brings.
    fn carried(catalog: &Catalog, type_url: &'static str, entries: Vec<Arc<Entry>>) -> Arc<Set> {
        catalog.set(type_url, entries)
    }

    #[test]
    fn a_config_is_complete_when_everything_named_has_arrived() {
        let catalog = Catalog::default();
        let mut held = Held::default();
        let replace = |held: &mut Held, type_url, entries| {
            held.replace(type_url, carried(&catalog, type_url, entries));
        };
        assert!(held.synced().is_err());
        replace(
            &mut held,
            CLUSTER,
            vec![entry("a", &["a"]), entry("b", &["b"]), entry("static", &[])],
        );
        replace(
            &mut held,
            LISTENER,
            vec![entry("l1", &["8080"]), entry("l2", &["8080", "9090"])],
        );
        assert_eq!(names(held.wanted(ENDPOINT)), ["a", "b"]);
        assert_eq!(names(held.wanted(ROUTE)), ["8080", "9090"]);
        replace(&mut held, ENDPOINT, vec![entry("a", &[])]);
        replace(
            &mut held,
            ROUTE,
            vec![entry("8080", &[]), entry("9090", &[])],
        );
        let missing = held.synced().expect_err("b has no endpoints yet");
        assert!(missing.contains("\"b\""), "{missing}");
        let b = carried(&catalog, ENDPOINT, vec![entry("b", &[])]);
        held.update(&catalog, ENDPOINT, &b, &[]);
        assert_eq!(held.synced(), Ok(()));
        let none = carried(&catalog, LISTENER, Vec::new());
        held.update(&catalog, LISTENER, &none, &[Arc::from("l2")]);
        assert_eq!(names(held.wanted(ROUTE)), ["8080"]);
    }

    #[test]
    fn a_partial_response_keeps_what_is_still_named_and_drops_the_rest() {
        let catalog = Catalog::default();
        let mut held = Held::default();
        let l1 = carried(&catalog, LISTENER, vec![entry("l1", &["a", "b"])]);
        held.replace(LISTENER, l1);
        let ab = carried(&catalog, ROUTE, vec![entry("a", &[]), entry("b", &[])]);
        held.merge(&catalog, ROUTE, &ab);
        // The listener now names a and c: c arrives alone, b goes, a stays.
        let l1 = carried(&catalog, LISTENER, vec![entry("l1", &["a", "c"])]);
        held.replace(LISTENER, l1);
        let c = carried(&catalog, ROUTE, vec![entry("c", &[])]);
        held.merge(&catalog, ROUTE, &c);
        let routes: Vec<&str> = held.types[ROUTE]
            .entries()
            .iter()
            .map(|e| &*e.name)
            .collect();
        assert_eq!(routes, ["a", "c"]);
    }

    #[test]
    fn a_snapshot_keeps_the_versions_held_when_it_was_taken() {
        let catalog = Catalog::default();
        let mut held = Held::default();
        let old = entry("a", &[]);
        held.update(
            &catalog,
            ROUTE,
            &carried(&catalog, ROUTE, vec![old.clone()]),
            &[],
        );
        let before = held.snapshot();
        let new = entry("a", &["changed"]);
        held.update(
            &catalog,
            ROUTE,
            &carried(&catalog, ROUTE, vec![new.clone()]),
            &[],
        );
        assert_eq!(before.version(ROUTE, "a"), Some(old.version));
        assert_eq!(held.snapshot().version(ROUTE, "a"), Some(new.version));
        assert_eq!(before.version(ROUTE, "b"), None);
        assert_eq!(before.version(CLUSTER, "a"), None);
    }

    #[test]
    fn proxies_with_the_same_config_hold_the_same_sets() {
        let catalog = Catalog::default();
        let (mut one, mut two) = (Held::default(), Held::default());
        let a = entry("a", &["a"]);
        let b = entry("b", &["b"]);
        let c = entry("c", &[]);
        // The same resources, reached in different steps.
        let ab = carried(&catalog, CLUSTER, vec![a.clone(), b.clone()]);
        one.update(&catalog, CLUSTER, &ab, &[]);
        let only_b = carried(&catalog, CLUSTER, vec![b]);
        two.update(&catalog, CLUSTER, &only_b, &[]);
        let ca = carried(&catalog, CLUSTER, vec![c, a]);
        two.update(&catalog, CLUSTER, &ca, &[]);
        let none = carried(&catalog, CLUSTER, Vec::new());
        two.update(&catalog, CLUSTER, &none, &[Arc::from("c")]);
        assert!(Arc::ptr_eq(&one.types[CLUSTER], &two.types[CLUSTER]));
        assert!(std::ptr::eq(one.wanted(ENDPOINT), two.wanted(ENDPOINT)));
    }
}
