//! Counted places: the ADS streams a connection holds, and those a proxy holds.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex, MutexGuard},
};

/// Places held by key, each given back when its [`Slot`] is dropped; clones share them.
#[derive(Debug)]
pub(super) struct Slots<K>(Arc<Mutex<HashMap<K, usize>>>);

impl<K> Clone for Slots<K> {
    fn clone(&self) -> Self {
        Slots(self.0.clone())
    }
}

impl<K> Default for Slots<K> {
    fn default() -> Self {
        Slots(Arc::default())
    }
}

impl<K: Hash + Eq + Clone> Slots<K> {
    fn lock(&self) -> MutexGuard<'_, HashMap<K, usize>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One more place for `key`, or the places it already holds when that is `max`.
    pub(super) fn claim(&self, key: &K, max: usize) -> Result<Slot<K>, usize> {
        let mut held = self.lock();
        let open = held.entry(key.clone()).or_default();
        if *open >= max {
            return Err(*open);
        }
        *open += 1;
        Ok(Slot {
            slots: self.clone(),
            key: key.clone(),
        })
    }
}

/// One place of a key; given back when dropped.
#[derive(Debug)]
pub(super) struct Slot<K: Hash + Eq + Clone> {
    slots: Slots<K>,
    key: K,
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut held = self.slots.lock();
        if let Some(open) = held.get_mut(&self.key) {
            *open -= 1;
            if *open == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_at_most_its_places_and_gets_one_back_when_a_slot_drops() {
        let slots = Slots::default();
        let a = slots.claim(&"a", 2).expect("first");
        let _b = slots.claim(&"a", 2).expect("second");
        assert_eq!(slots.claim(&"a", 2).map(|_| ()), Err(2));
        let _other = slots.claim(&"b", 2).expect("another key has its own");
        drop(a);
        let _again = slots.claim(&"a", 2).expect("given back");
        assert_eq!(slots.lock().len(), 2);
    }

    #[test]
    fn a_key_with_no_place_left_is_forgotten() {
        let slots = Slots::default();
        drop(slots.claim(&"a", 1).expect("first"));
        assert!(slots.lock().is_empty());
    }
}
