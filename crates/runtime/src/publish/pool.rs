//! Layers of equal content shared between classes. Without egress scopes, most classes of a
//! mesh hold the very same outbound resources; kept once per class, a layer of thousands of
//! them would cost its map again in every class, and a change would patch every copy.

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
};

use remora_envoy::EnvoyResource;
use remora_xds::snapshot::Layer;

/// New entries of one layer by name (`None`: removed).
pub(super) type Patch = Vec<(String, Option<Arc<EnvoyResource>>)>;

/// A patch as what it does to a content: the names it sets, each to a version or removed.
type PatchKey = ((usize, u128), Vec<(String, Option<String>)>);

/// Hands out one layer per content.
#[derive(Default)]
pub(super) struct LayerPool {
    /// Every layer handed out, by content, while something holds it.
    by_content: HashMap<(usize, u128), Weak<Layer>>,
    /// The patches of the current publish, so that classes holding one content and seeing
    /// the same change patch it once.
    patched: HashMap<PatchKey, Arc<Layer>>,
}

impl LayerPool {
    /// `layer`, or the layer of the same content handed out before.
    pub(super) fn share(&mut self, layer: Arc<Layer>) -> Arc<Layer> {
        let content = layer.content();
        if let Some(held) = self.by_content.get(&content).and_then(Weak::upgrade) {
            return held;
        }
        self.by_content.insert(content, Arc::downgrade(&layer));
        layer
    }

    /// [`Layer::patched`], shared; a patch already applied in this publish to the same
    /// content is not applied again.
    pub(super) fn patched(&mut self, older: &Arc<Layer>, patch: Patch) -> Arc<Layer> {
        let does = patch
            .iter()
            .map(|(name, r)| (name.clone(), r.as_ref().map(|r| r.version.clone())))
            .collect();
        let key = (older.content(), does);
        if let Some(done) = self.patched.get(&key) {
            return done.clone();
        }
        let layer = self.share(Layer::patched(older, patch));
        self.patched.insert(key, layer.clone());
        layer
    }

    /// Ends a publish: forgets its patches, and the layers nothing holds any more.
    pub(super) fn settle(&mut self) {
        self.patched.clear();
        self.by_content.retain(|_, layer| layer.strong_count() > 0);
    }
}

#[cfg(test)]
mod tests {
    use remora_envoy::Any;
    use remora_xds::snapshot::ResourceMap;

    use super::*;

    fn res(name: &str, version: &str) -> Arc<EnvoyResource> {
        Arc::new(EnvoyResource {
            name: name.into(),
            type_url: "",
            version: version.into(),
            any: Any::default(),
        })
    }

    fn layer(entries: &[(&str, &str)]) -> Arc<Layer> {
        let map: ResourceMap = entries
            .iter()
            .map(|(n, v)| ((*n).to_owned(), res(n, v)))
            .collect();
        Arc::new(Layer::new(map))
    }

    #[test]
    fn layers_of_one_content_are_one_layer_while_held() {
        let mut pool = LayerPool::default();
        let a = pool.share(layer(&[("a", "1"), ("b", "1")]));
        let b = pool.share(layer(&[("b", "1"), ("a", "1")]));
        assert!(Arc::ptr_eq(&a, &b));
        let other = pool.share(layer(&[("a", "1"), ("b", "2")]));
        assert!(!Arc::ptr_eq(&a, &other));
        drop((a, b));
        pool.settle();
        assert_eq!(
            pool.by_content.len(),
            1,
            "only the layer still held is kept"
        );
    }

    #[test]
    fn a_patch_is_applied_once_per_content_and_change() {
        let mut pool = LayerPool::default();
        let older = pool.share(layer(&[("a", "1"), ("b", "1")]));
        let patch = || vec![("b".to_owned(), Some(res("b", "2")))];
        let first = pool.patched(&older, patch());
        let again = pool.patched(&older, patch());
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(first.content(), layer(&[("a", "1"), ("b", "2")]).content());
        let removal = pool.patched(&older, vec![("b".to_owned(), None)]);
        assert_eq!(removal.content(), layer(&[("a", "1")]).content());
        pool.settle();
        let after = pool.patched(&older, patch());
        assert!(
            Arc::ptr_eq(&first, &after),
            "the patched content is still shared"
        );
    }
}
