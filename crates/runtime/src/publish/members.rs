//! Which class each published proxy is in. A class's layers are kept while it has a proxy,
//! and only then: classes share layers of equal content, so that a layer is held tells
//! nothing of which class holds it, and a class kept after its last proxy left would be
//! patched, not rebuilt, when a proxy joins it again.

use std::collections::HashMap;

use remora_model::input::ObjectKey;

use super::ClassId;

#[derive(Default)]
pub(super) struct Members {
    class_of: HashMap<ObjectKey, ClassId>,
    /// Proxies per class; a class with none is not here.
    count: HashMap<ClassId, usize>,
}

impl Members {
    /// `proxy` is in `class` now, and in no other.
    pub(super) fn join(&mut self, proxy: &ObjectKey, class: &ClassId) {
        if self.class_of.get(proxy) == Some(class) {
            return;
        }
        self.leave(proxy);
        self.class_of.insert(proxy.clone(), class.clone());
        *self.count.entry(class.clone()).or_default() += 1;
    }

    /// `proxy` is in no class any more.
    pub(super) fn leave(&mut self, proxy: &ObjectKey) {
        let Some(class) = self.class_of.remove(proxy) else {
            return;
        };
        match self.count.get_mut(&class) {
            Some(n) if *n > 1 => *n -= 1,
            _ => {
                self.count.remove(&class);
            }
        }
    }

    /// Whether some proxy is in `class`.
    pub(super) fn has(&self, class: &ClassId) -> bool {
        self.count.contains_key(class)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(namespace: &str) -> ClassId {
        ClassId {
            namespace: namespace.into(),
            policy: None,
            bind: None,
        }
    }

    #[test]
    fn a_class_is_there_while_a_proxy_is_in_it() {
        let mut members = Members::default();
        let (p1, p2) = (ObjectKey::new("a", "p1"), ObjectKey::new("a", "p2"));
        members.join(&p1, &class("a"));
        members.join(&p2, &class("a"));
        members.join(&p2, &class("a"));
        members.leave(&p1);
        assert!(members.has(&class("a")));
        // Moving to another class leaves the first.
        members.join(&p2, &class("b"));
        assert!(!members.has(&class("a")));
        assert!(members.has(&class("b")));
        members.leave(&p2);
        members.leave(&p2);
        assert!(!members.has(&class("b")));
    }
}
