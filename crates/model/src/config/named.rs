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
/// every other entry with the last and is hashed without reading them. A set of a few
/// entries is a sorted vector instead: most sets hold one (the virtual host of a Service
/// port's route config, in every class), and a persistent map's first node costs several
/// times that.
#[derive(Clone, Debug)]
pub struct NamedSet<T> {
    items: Items<T>,
    /// Sum of the mixed hashes of the entries: independent of insertion order, and updated in
    /// constant time.
    hash: u64,
}

/// Up to this many entries, a set is a sorted vector.
const FEW: usize = 8;

type Entry<T> = (Arc<str>, Arc<Versioned<T>>);

/// Where `name` is among a few entries sorted by name, or where it would go.
fn position<T>(few: &[Entry<T>], name: &str) -> Result<usize, usize> {
    few.binary_search_by(|(n, _)| (**n).cmp(name))
}

#[derive(Clone, Debug)]
enum Items<T> {
    Few(Vec<Entry<T>>),
    Many(imbl::OrdMap<Arc<str>, Arc<Versioned<T>>>),
}

impl<T> Default for NamedSet<T> {
    fn default() -> Self {
        NamedSet {
            items: Items::Few(Vec::new()),
            hash: 0,
        }
    }
}

impl<T: Named> NamedSet<T> {
    /// Adds an entry, replacing one of the same name.
    pub fn insert(&mut self, item: Arc<Versioned<T>>) {
        self.hash = self.hash.wrapping_add(mix(item.hash));
        let name = item.value.name().clone();
        let old = match &mut self.items {
            Items::Few(few) => match position(few, &name) {
                Ok(i) => Some(std::mem::replace(&mut few[i].1, item)),
                Err(i) if few.len() < FEW => {
                    few.insert(i, (name, item));
                    None
                }
                Err(_) => {
                    let mut many: imbl::OrdMap<_, _> = few.drain(..).collect();
                    many.insert(name, item);
                    self.items = Items::Many(many);
                    None
                }
            },
            Items::Many(many) => many.insert(name, item),
        };
        if let Some(old) = old {
            self.hash = self.hash.wrapping_sub(mix(old.hash));
        }
    }
}

impl<T> NamedSet<T> {
    /// Removes the entry of that name, if there is one.
    pub fn remove(&mut self, name: &str) {
        let old = match &mut self.items {
            Items::Few(few) => position(few, name).ok().map(|i| few.remove(i).1),
            Items::Many(many) => many.remove(name),
        };
        if let Some(old) = old {
            self.hash = self.hash.wrapping_sub(mix(old.hash));
        }
    }

    /// The entry of that name.
    pub fn get(&self, name: &str) -> Option<&Arc<Versioned<T>>> {
        match &self.items {
            Items::Few(few) => position(few, name).ok().map(|i| &few[i].1),
            Items::Many(many) => many.get(name),
        }
    }

    /// The entries in name order.
    pub fn iter(&self) -> Iter<'_, T> {
        match &self.items {
            Items::Few(few) => Iter::Few(few.iter()),
            Items::Many(many) => Iter::Many(many.values()),
        }
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        match &self.items {
            Items::Few(few) => few.len(),
            Items::Many(many) => many.len(),
        }
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The entries of a [`NamedSet`] in name order.
pub enum Iter<'a, T> {
    /// Of a set of a few.
    Few(std::slice::Iter<'a, Entry<T>>),
    /// Of a larger set.
    Many(imbl::ordmap::Values<'a, Arc<str>, Arc<Versioned<T>>, imbl::shared_ptr::DefaultSharedPtr>),
}

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = &'a Arc<Versioned<T>>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Few(few) => few.next().map(|(_, v)| v),
            Iter::Many(many) => many.next(),
        }
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
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<T> PartialEq for NamedSet<T> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<T> Eq for NamedSet<T> {}

impl<T> Hash for NamedSet<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.len().hash(state);
        self.hash.hash(state);
    }
}

impl<T: Serialize> Serialize for NamedSet<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for item in self.iter() {
            seq.serialize_element(item)?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Hash)]
    struct Item {
        name: Arc<str>,
        value: u32,
    }

    impl Named for Item {
        fn name(&self) -> &Arc<str> {
            &self.name
        }
    }

    fn item(name: &str, value: u32) -> Arc<Versioned<Item>> {
        Versioned::new(Item {
            name: name.into(),
            value,
        })
    }

    fn names(set: &NamedSet<Item>) -> Vec<String> {
        set.iter().map(|i| i.value.name.to_string()).collect()
    }

    /// A set grown past a few entries and shrunk again equals one that never was: the same
    /// entries in name order, the same hash.
    #[test]
    fn a_set_is_its_entries_however_it_is_kept() {
        let names_of = |range: std::ops::Range<u32>| range.map(|i| format!("n{i:02}"));
        let mut grown = NamedSet::default();
        for (i, name) in names_of(0..3 * FEW as u32).rev().enumerate() {
            grown.insert(item(&name, i as u32));
        }
        assert_eq!(grown.len(), 3 * FEW);
        assert!(matches!(grown.items, Items::Many(_)));
        let mut few: NamedSet<Item> = NamedSet::default();
        for name in names_of(0..3 * FEW as u32).skip(2) {
            grown.remove(&name);
        }
        for (name, value) in [("n01", 3 * FEW as u32 - 2), ("n00", 3 * FEW as u32 - 1)] {
            few.insert(item(name, value));
        }
        assert!(matches!(few.items, Items::Few(_)));
        assert_eq!(names(&grown), ["n00", "n01"]);
        assert_eq!(names(&few), names(&grown));
        assert_eq!(few, grown);
        assert_eq!(
            few.get("n01").map(|i| i.value.value),
            Some(3 * FEW as u32 - 2)
        );

        // Replacing an entry changes the hash; putting it back restores it.
        let before = few.hash;
        few.insert(item("n01", 7));
        assert_ne!(few.hash, before);
        assert_ne!(few, grown);
        few.insert(item("n01", 3 * FEW as u32 - 2));
        assert_eq!(few.hash, before);
        few.remove("n00");
        few.remove("absent");
        assert_eq!(names(&few), ["n01"]);
        assert!(few.get("n00").is_none());
    }
}
