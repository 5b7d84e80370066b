//! A stream's state per resource type. There are at most the four served types, so a small
//! vector sorted by type: a `BTreeMap`'s first node has room for eleven entries, and with a
//! stream's per-type state that was kilobytes per connected proxy.

/// A `T` per type URL, kept sorted by type.
#[derive(Debug)]
pub struct ByType<T>(Vec<(&'static str, T)>);

impl<T> Default for ByType<T> {
    fn default() -> Self {
        ByType(Vec::new())
    }
}

impl<T> ByType<T> {
    fn find(&self, type_url: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(t, _)| (*t).cmp(type_url))
    }

    /// Whether the type has a state.
    pub fn contains_key(&self, type_url: &str) -> bool {
        self.find(type_url).is_ok()
    }

    /// The type's state, if it has one.
    pub fn get(&self, type_url: &str) -> Option<&T> {
        self.find(type_url).ok().map(|i| &self.0[i].1)
    }

    /// The type's state to change, if it has one.
    pub fn get_mut(&mut self, type_url: &str) -> Option<&mut T> {
        self.find(type_url).ok().map(|i| &mut self.0[i].1)
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
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (type_url, T::default()));
                i
            }
        };
        &mut self.0[i].1
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
}
