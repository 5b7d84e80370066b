//! Compact storage for the index: shared label sets and flat relations. A mesh holds tens of
//! thousands of pods and endpoints; a map or set per object (a `BTreeMap` node alone takes
//! about 540 bytes) would cost more than the objects themselves.

use std::{
    collections::{BTreeSet, HashSet},
    sync::Arc,
};

use crate::input::{Labels, ObjectKey};

/// Label sets shared by every holder of equal labels: the pods of one workload and version,
/// or every subset naming one version, hold one copy.
#[derive(Default)]
pub(crate) struct LabelSets {
    sets: HashSet<Arc<Labels>>,
    /// Size after the last sweep: sweeping once the set has doubled keeps its cost constant
    /// per interned set, and the sets nobody holds at most as many as the live ones.
    swept: usize,
}

impl LabelSets {
    pub fn intern(&mut self, labels: &Labels) -> Arc<Labels> {
        if let Some(set) = self.sets.get(labels) {
            return set.clone();
        }
        if self.sets.len() >= 2 * self.swept.max(64) {
            self.sets.retain(|s| Arc::strong_count(s) > 1);
            self.swept = self.sets.len();
        }
        let set = Arc::new(labels.clone());
        self.sets.insert(set.clone());
        set
    }
}

/// A many-to-many relation from objects to values, as one ordered set of pairs: no
/// collection per object, and an object's values are one range.
#[derive(Debug)]
pub(crate) struct Links<V>(BTreeSet<(ObjectKey, V)>);

impl<V> Default for Links<V> {
    fn default() -> Self {
        Links(BTreeSet::new())
    }
}

/// `V::default()` must sort first, as `""` and an empty [`ObjectKey`] do.
impl<V: Ord + Default + Clone> Links<V> {
    pub fn insert(&mut self, from: ObjectKey, to: V) {
        self.0.insert((from, to));
    }

    pub fn remove(&mut self, from: &ObjectKey, to: &V) {
        self.0.remove(&(from.clone(), to.clone()));
    }

    pub fn of<'a>(&'a self, from: &'a ObjectKey) -> impl Iterator<Item = &'a V> + 'a {
        self.0
            .range((from.clone(), V::default())..)
            .take_while(move |(k, _)| k == from)
            .map(|(_, v)| v)
    }

    /// The values of every object in `namespace`.
    pub fn in_namespace<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a V> + 'a {
        self.0
            .range((ObjectKey::new(namespace, ""), V::default())..)
            .take_while(move |(k, _)| k.namespace == namespace)
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_list_an_objects_values_only() {
        let mut links = Links::default();
        let a = ObjectKey::new("ns", "a");
        let ab = ObjectKey::new("ns", "ab");
        links.insert(a.clone(), "x".to_string());
        links.insert(a.clone(), "y".to_string());
        links.insert(ab.clone(), "z".to_string());
        assert_eq!(links.of(&a).collect::<Vec<_>>(), ["x", "y"]);
        links.remove(&a, &"x".to_string());
        assert_eq!(links.of(&a).collect::<Vec<_>>(), ["y"]);
        assert_eq!(links.of(&ab).collect::<Vec<_>>(), ["z"]);
        assert_eq!(links.of(&ObjectKey::new("ns", "")).count(), 0);
        links.insert(ObjectKey::new("other", "c"), "w".to_string());
        assert_eq!(links.in_namespace("ns").collect::<Vec<_>>(), ["y", "z"]);
    }

    #[test]
    fn equal_labels_share_one_set_and_unused_sets_go() {
        let mut sets = LabelSets::default();
        let labels = |v: usize| Labels::from([("app".to_string(), v.to_string())]);
        let one = sets.intern(&labels(1));
        assert!(Arc::ptr_eq(&one, &sets.intern(&labels(1))));
        for v in 2..1000 {
            sets.intern(&labels(v));
        }
        assert!(sets.sets.len() < 200, "unused sets are swept");
        assert!(Arc::ptr_eq(&one, &sets.intern(&labels(1))));
    }
}
