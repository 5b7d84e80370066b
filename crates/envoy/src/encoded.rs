//! Parts of resources encoded once each, by what their bytes depend on, and swept when no
//! resource uses them any more.

use std::{collections::HashMap, hash::Hash};

/// Encoded parts by key: each part's bytes and the sweep it was last used in. A resource
/// made of many parts (a route config of a host per Service, a capture listener of a chain
/// per Service port), of which one changes at a time, is encoded again as the changed part
/// and a concatenation. [`VirtualHostCache`](crate::VirtualHostCache) and
/// [`FilterChainCache`](crate::FilterChainCache) are its two uses.
#[derive(Debug)]
pub struct Encoded<K> {
    parts: HashMap<K, (Vec<u8>, u64)>,
    sweep: u64,
}

impl<K> Default for Encoded<K> {
    fn default() -> Self {
        Encoded {
            parts: HashMap::new(),
            sweep: 0,
        }
    }
}

impl<K: Hash + Eq> Encoded<K> {
    /// The bytes of `key`, from `encode` the first time; marks them used in this sweep.
    pub(crate) fn get_or_encode(&mut self, key: K, encode: impl FnOnce() -> Vec<u8>) -> &[u8] {
        let sweep = self.sweep;
        let (bytes, used) = self.parts.entry(key).or_insert_with(|| (encode(), sweep));
        *used = sweep;
        bytes
    }

    /// The bytes of a part [`get_or_encode`](Self::get_or_encode) gave in this encoding.
    pub(crate) fn get(&self, key: &K) -> &[u8] {
        &self
            .parts
            .get(key)
            .expect("every part was encoded in the first pass")
            .0
    }

    /// Drops the parts no resource was encoded with since the last sweep.
    pub fn sweep(&mut self) {
        let last = self.sweep;
        self.parts.retain(|_, (_, used)| *used >= last);
        self.sweep += 1;
    }

    /// How many encoded parts are kept.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// Whether no encoded part is kept.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}
