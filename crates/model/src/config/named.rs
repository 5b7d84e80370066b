//! A set of named, shared pieces with a running hash: the virtual hosts of a route config, the
//! filter chains of a capture listener.

use std::{
    hash::{Hash, Hasher},
    sync::Arc,
};

use serde::{Serialize, ser::SerializeSeq};

use super::Versioned;

/// A value with a name unique among those of its set.
pub trait Named {
    /// The name.
    fn name(&self) -> &Arc<str>;
}

/// Values by name, in name order.
///
/// A persistent map with a running hash: a set can hold thousands of entries (a host or a
/// filter chain per Service port), and when one changes, the next version of the set shares
/// every other entry with the last and is hashed without reading them.
#[derive(Clone, Debug)]
pub struct NamedSet<T> {
    items: imbl::OrdMap<Arc<str>, Arc<Versioned<T>>>,
    /// Sum of the mixed hashes of the entries: independent of insertion order, and updated in
    /// constant time.
    hash: u64,
}

impl<T> Default for NamedSet<T> {
    fn default() -> Self {
        NamedSet {
            items: imbl::OrdMap::new(),
            hash: 0,
        }
    }
}

impl<T: Named> NamedSet<T> {
    /// Adds an entry, replacing one of the same name.
    pub fn insert(&mut self, item: Arc<Versioned<T>>) {
        self.hash = self.hash.wrapping_add(mix(item.hash));
        if let Some(old) = self.items.insert(item.value.name().clone(), item) {
            self.hash = self.hash.wrapping_sub(mix(old.hash));
        }
    }
}

impl<T> NamedSet<T> {
    /// Removes the entry of that name, if there is one.
    pub fn remove(&mut self, name: &str) {
        if let Some(old) = self.items.remove(name) {
            self.hash = self.hash.wrapping_sub(mix(old.hash));
        }
    }

    /// The entry of that name.
    pub fn get(&self, name: &str) -> Option<&Arc<Versioned<T>>> {
        self.items.get(name)
    }

    /// The entries in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Versioned<T>>> {
        self.items.values()
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Spreads a content hash over all 64 bits (SplitMix64's finalizer), so that the sum of
/// several is as good a fingerprint of the set as any one of them is of its entry.
fn mix(mut h: u64) -> u64 {
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl<T: Named> FromIterator<Arc<Versioned<T>>> for NamedSet<T> {
    fn from_iter<I: IntoIterator<Item = Arc<Versioned<T>>>>(iter: I) -> Self {
        let mut set = NamedSet::default();
        for item in iter {
            set.insert(item);
        }
        set
    }
}

impl<'a, T> IntoIterator for &'a NamedSet<T> {
    type Item = &'a Arc<Versioned<T>>;
    type IntoIter =
        imbl::ordmap::Values<'a, Arc<str>, Arc<Versioned<T>>, imbl::shared_ptr::DefaultSharedPtr>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.values()
    }
}

impl<T> PartialEq for NamedSet<T> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.items == other.items
    }
}

impl<T> Eq for NamedSet<T> {}

impl<T> Hash for NamedSet<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.items.len().hash(state);
        self.hash.hash(state);
    }
}

impl<T: Serialize> Serialize for NamedSet<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.items.len()))?;
        for item in self.items.values() {
            seq.serialize_element(item)?;
        }
        seq.end()
    }
}
