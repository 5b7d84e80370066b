//! A value per resource type, for a stream's state and a proxy's snapshot. There are at most
//! the four served types, so a small vector sorted by type: a `BTreeMap`'s first node has
//! room for eleven entries, and with a stream's per-type state that was kilobytes per
//! connected proxy. A type is found by equality, not order: the type URLs share a long
//! prefix, which every ordered comparison reads, while their lengths all differ.

/// A `T` per type URL, kept sorted by type.
#[derive(Clone, Debug, PartialEq)]
pub struct ByType<T>(Vec<(&'static str, T)>);

impl<T> Default for ByType<T> {
    fn default() -> Self {
        ByType(Vec::new())
    }
}

impl<T> ByType<T> {
    fn find(&self, type_url: &str) -> Option<usize> {
        self.0.iter().position(|(t, _)| *t == type_url)
    }

    /// Whether the type has a state.
    pub fn contains_key(&self, type_url: &str) -> bool {
        self.find(type_url).is_some()
    }

    /// The type's state, if it has one.
    pub fn get(&self, type_url: &str) -> Option<&T> {
        self.find(type_url).map(|i| &self.0[i].1)
    }

    /// The type's state to change, if it has one.
    pub fn get_mut(&mut self, type_url: &str) -> Option<&mut T> {
        self.find(type_url).map(|i| &mut self.0[i].1)
    }

    /// Every type's state, by type.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|(_, s)| s)
    }

    /// Every type's state, by type.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &T)> {
        self.0.iter().map(|(t, s)| (*t, s))
    }

    /// Every type's state to change, by type.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&'static str, &mut T)> {
        self.0.iter_mut().map(|(t, s)| (*t, s))
    }
}

impl<T: Default> ByType<T> {
    /// The state of a type, new if the type had none.
    pub fn entry(&mut self, type_url: &'static str) -> &mut T {
        let i = match self.find(type_url) {
            Some(i) => i,
            None => {
                let i = self.0.partition_point(|(t, _)| *t < type_url);
                self.0.insert(i, (type_url, T::default()));
                i
            }
        };
        &mut self.0[i].1
    }
}

/// Sorted by type; of a type named twice, the last value stands, as in a map.
impl<T> FromIterator<(&'static str, T)> for ByType<T> {
    fn from_iter<I: IntoIterator<Item = (&'static str, T)>>(iter: I) -> Self {
        let mut all: Vec<(&'static str, T)> = iter.into_iter().collect();
        // Stable: of equal types, the later stays later, and is the one kept.
        all.sort_by_key(|(t, _)| *t);
        let mut kept: Vec<(&'static str, T)> = Vec::with_capacity(all.len());
        for (t, v) in all {
            match kept.last_mut() {
                Some(last) if last.0 == t => last.1 = v,
                _ => kept.push((t, v)),
            }
        }
        ByType(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

    #[test]
    fn types_stay_sorted_and_are_created_once() {
        let mut m: ByType<u32> = ByType::default();
        for t in [ROUTE, CLUSTER, LISTENER, CLUSTER, ENDPOINT] {
            *m.entry(t) += 1;
        }
        let seen: Vec<(&str, u32)> = m.iter().map(|(t, n)| (t, *n)).collect();
        let mut expected = vec![(CLUSTER, 2), (ENDPOINT, 1), (LISTENER, 1), (ROUTE, 1)];
        expected.sort();
        assert_eq!(seen, expected);
        assert!(m.contains_key(ROUTE) && !m.contains_key("other"));
        if let Some(n) = m.get_mut(LISTENER) {
            *n = 7;
        }
        assert_eq!(m.get(LISTENER), Some(&7));
        assert_eq!(m.get("other"), None);
        for (_, n) in m.iter_mut() {
            *n = 0;
        }
        assert!(m.iter().all(|(_, n)| *n == 0));
    }

    #[test]
    fn collected_types_are_sorted_and_the_last_of_a_type_stands() {
        let m: ByType<u32> = [(ROUTE, 1), (CLUSTER, 2), (ROUTE, 3), (ENDPOINT, 4)]
            .into_iter()
            .collect();
        let seen: Vec<(&str, u32)> = m.iter().map(|(t, n)| (t, *n)).collect();
        let mut expected = vec![(CLUSTER, 2), (ENDPOINT, 4), (ROUTE, 3)];
        expected.sort();
        assert_eq!(seen, expected);
        assert_eq!(m.values().sum::<u32>(), 9);
    }
}
