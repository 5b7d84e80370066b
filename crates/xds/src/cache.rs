//! The latest snapshot of every proxy, one `watch` channel each: a stream that falls behind
//! skips straight to the newest snapshot, so memory stays bounded however fast config
//! changes, and one slow proxy never holds up another.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::sync::watch;

use remora_model::input::ObjectKey;

use crate::snapshot::Snapshot;

/// Every proxy's latest snapshot, by the proxy's pod, for its streams to follow.
#[derive(Debug, Default)]
pub struct SnapshotCache {
    proxies: Mutex<HashMap<ObjectKey, watch::Sender<Arc<Snapshot>>>>,
}

impl SnapshotCache {
    /// An empty cache, shared.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Publishes a proxy's new snapshot; streams wake only if it differs from the last one.
    pub fn set(&self, proxy: &ObjectKey, snapshot: Arc<Snapshot>) {
        let mut proxies = self.lock();
        match proxies.get(proxy) {
            Some(tx) => {
                tx.send_if_modified(|current| {
                    if **current == *snapshot {
                        return false;
                    }
                    *current = snapshot;
                    true
                });
            }
            None => {
                proxies.insert(proxy.clone(), watch::Sender::new(snapshot));
            }
        }
    }

    /// The proxy is gone from the mesh: connected streams get an empty snapshot, and the
    /// entry goes once nobody listens.
    pub fn remove(&self, proxy: &ObjectKey) {
        let mut proxies = self.lock();
        if let Some(tx) = proxies.get(proxy) {
            tx.send_replace(Arc::default());
            if tx.receiver_count() == 0 {
                proxies.remove(proxy);
            }
        }
    }

    /// Follows a proxy's snapshots; a proxy the mesh does not know yet starts empty.
    pub fn subscribe(&self, proxy: &ObjectKey) -> watch::Receiver<Arc<Snapshot>> {
        self.lock()
            .entry(proxy.clone())
            .or_insert_with(|| watch::Sender::new(Arc::default()))
            .subscribe()
    }

    /// The proxy's current snapshot; `None` for a proxy neither published nor followed.
    pub fn get(&self, proxy: &ObjectKey) -> Option<Arc<Snapshot>> {
        self.lock().get(proxy).map(|tx| tx.borrow().clone())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ObjectKey, watch::Sender<Arc<Snapshot>>>> {
        self.proxies.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{CLUSTER, tests::snapshot};

    #[tokio::test]
    async fn subscribers_see_only_the_latest_and_only_real_changes() {
        let cache = SnapshotCache::default();
        let p = ObjectKey::new("ns", "a");
        let mut rx = cache.subscribe(&p);
        assert!(rx.borrow_and_update().is_empty());
        for v in 1..=5 {
            cache.set(&p, Arc::new(snapshot(&[(CLUSTER, "c", &v.to_string())])));
        }
        assert!(rx.has_changed().expect("open"));
        let latest = rx.borrow_and_update().clone();
        assert_eq!(
            latest.get(CLUSTER, "c").map(|r| r.version.as_str()),
            Some("5")
        );
        cache.set(&p, Arc::new(snapshot(&[(CLUSTER, "c", "5")])));
        assert!(
            !rx.has_changed().expect("open"),
            "equal snapshot wakes nobody"
        );
        cache.remove(&p);
        assert!(rx.borrow_and_update().is_empty());
        drop(rx);
        cache.remove(&p);
        assert!(cache.get(&p).is_none());
    }
}
