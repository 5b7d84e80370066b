//! What each connected proxy was sent, ACKed and NACKed, per resource type. It feeds
//! `remora proxy-status` and, later, the `Programmed` condition of routes.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, MutexGuard, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::SystemTime,
};

use remora_model::input::ObjectKey;

use changes::Signal;
pub use changes::{Changes, RegistryGone};

mod changes;

/// A rejected response: the version Envoy refused and Envoy's own words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nack {
    /// The version refused.
    pub version: String,
    /// The message of the NACK's `error_detail`.
    pub message: String,
}

/// One resource type on one stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeSync {
    /// The version last sent (or, after a reconnect, the one the proxy said it holds).
    pub sent: Option<String>,
    /// The version the proxy last ACKed.
    pub acked: Option<String>,
    /// Set while the latest response is NACKed, and after it while a resource it refused is
    /// not taken since (the version is then the one ACKed, which the proxy runs only in
    /// part); cleared by the ACK that takes the last of them.
    pub nack: Option<Nack>,
    /// Resources sent on this stream so far: after a reconnect, what was re-sent.
    pub resources_sent: u64,
}

/// How a proxy's config of one type relates to what it should have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SyncState {
    /// It ACKed the latest version sent.
    Synced,
    /// A newer version is on its way or waits for an ACK.
    Stale,
    /// It rejected the latest version and runs the previous one.
    Nacked,
}

impl TypeSync {
    /// Where this type stands; with nothing sent yet, it is synced.
    pub fn state(&self) -> SyncState {
        match (&self.nack, &self.sent, &self.acked) {
            (Some(n), Some(sent), _) if n.version == *sent => SyncState::Nacked,
            (_, Some(sent), Some(acked)) if sent == acked => SyncState::Synced,
            (_, None, _) => SyncState::Synced,
            _ => SyncState::Stale,
        }
    }
}

/// The ADS protocol flavour a stream speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// State of the world (`StreamAggregatedResources`).
    StateOfTheWorld,
    /// Incremental, or delta (`DeltaAggregatedResources`).
    Incremental,
}

/// The status of one connected proxy.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxySync {
    /// The proxy's pod.
    pub proxy: ObjectKey,
    /// The protocol flavour of its stream.
    pub mode: Mode,
    /// When the stream opened.
    pub connected_at: SystemTime,
    /// By type URL.
    pub types: BTreeMap<&'static str, TypeSync>,
}

impl ProxySync {
    /// A proxy's status as another replica reported it (no stream of this one).
    pub fn reported(
        proxy: ObjectKey,
        mode: Mode,
        connected_at: SystemTime,
        types: BTreeMap<&'static str, TypeSync>,
    ) -> ProxySync {
        ProxySync {
            proxy,
            mode,
            connected_at,
            types,
        }
    }
}

/// One stream's status in the registry, held by the stream: it records through its own
/// entry, with neither the registry's lock nor a search among thousands of proxies.
#[derive(Debug)]
pub struct StreamEntry(Arc<Entry>);

#[derive(Debug)]
struct Entry {
    status: Mutex<ProxySync>,
    /// False once a newer stream of the proxy took its place, whose status is the one
    /// reported.
    newest: AtomicBool,
}

impl Entry {
    fn lock(&self) -> MutexGuard<'_, ProxySync> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every connected proxy's status. A proxy that reconnects may briefly have two streams; the
/// newest one is reported.
#[derive(Debug, Default)]
pub struct SyncRegistry {
    proxies: RwLock<BTreeMap<ObjectKey, Arc<Entry>>>,
    // Counts changes, so that a reporter wakes on one and skips to the newest state.
    changes: Signal,
}

impl SyncRegistry {
    /// An empty registry, shared.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Registers a new stream of `proxy`, which from now on is the one reported.
    pub fn connected(&self, proxy: &ObjectKey, mode: Mode) -> StreamEntry {
        let entry = Arc::new(Entry {
            status: Mutex::new(ProxySync {
                proxy: proxy.clone(),
                mode,
                connected_at: SystemTime::now(),
                types: BTreeMap::new(),
            }),
            newest: AtomicBool::new(true),
        });
        if let Some(older) = self.write().insert(proxy.clone(), entry.clone()) {
            older.newest.store(false, Ordering::Relaxed);
        }
        self.changed();
        StreamEntry(entry)
    }

    /// Wakes on changes to the registry.
    pub fn changes(&self) -> Changes {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.raise();
    }

    /// Records types' status on a stream; ignored unless `stream` is the proxy's newest.
    /// Returns, for each type whose new status holds a NACK, the NACK it held before, so
    /// that the caller tells a new rejection from one already reported without a second
    /// look (and a copy of the proxy's status) under the lock. Watchers wake only when
    /// something changed.
    pub fn update(
        &self,
        stream: &StreamEntry,
        types: impl IntoIterator<Item = (&'static str, TypeSync)>,
    ) -> Vec<(&'static str, Option<Nack>)> {
        let mut before = Vec::new();
        let mut changed = false;
        if stream.0.newest.load(Ordering::Relaxed) {
            let mut s = stream.0.lock();
            for (type_url, new) in types {
                let old = s.types.get(type_url);
                if new.nack.is_some() {
                    before.push((type_url, old.and_then(|o| o.nack.clone())));
                }
                if old != Some(&new) {
                    s.types.insert(type_url, new);
                    changed = true;
                }
            }
        }
        if changed {
            self.changed();
        }
        before
    }

    /// Forgets the proxy when `stream` is its newest; an older stream's end changes nothing.
    pub fn disconnected(&self, proxy: &ObjectKey, stream: &StreamEntry) {
        let removed = {
            let mut proxies = self.write();
            let newest = proxies
                .get(proxy)
                .is_some_and(|e| Arc::ptr_eq(e, &stream.0));
            newest && proxies.remove(proxy).is_some()
        };
        if removed {
            self.changed();
        }
    }

    /// The proxy's status; `None` when it is not connected.
    pub fn get(&self, proxy: &ObjectKey) -> Option<ProxySync> {
        self.read().get(proxy).map(|e| e.lock().clone())
    }

    /// Every connected proxy's status, ordered by proxy.
    pub fn all(&self) -> Vec<ProxySync> {
        self.read().values().map(|e| e.lock().clone()).collect()
    }

    // A panic while holding the lock leaves plain data behind, still fit to read.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<ObjectKey, Arc<Entry>>> {
        self.proxies.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<ObjectKey, Arc<Entry>>> {
        self.proxies.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states() {
        let v = |s: &str| Some(s.to_owned());
        let mut t = TypeSync::default();
        assert_eq!(t.state(), SyncState::Synced);
        t.sent = v("2");
        t.acked = v("1");
        assert_eq!(t.state(), SyncState::Stale);
        t.nack = Some(Nack {
            version: "2".into(),
            message: "bad".into(),
        });
        assert_eq!(t.state(), SyncState::Nacked);
        t.sent = v("3");
        assert_eq!(t.state(), SyncState::Stale);
        t.acked = v("3");
        t.nack = None;
        assert_eq!(t.state(), SyncState::Synced);
    }

    #[test]
    fn a_stale_stream_cannot_overwrite_or_remove_the_newest() {
        let reg = SyncRegistry::default();
        let p = ObjectKey::new("ns", "pod");
        let old = reg.connected(&p, Mode::StateOfTheWorld);
        let new = reg.connected(&p, Mode::Incremental);
        let synced = TypeSync {
            sent: Some("1".into()),
            acked: Some("1".into()),
            ..Default::default()
        };
        reg.update(&old, [(crate::snapshot::CLUSTER, synced.clone())]);
        reg.disconnected(&p, &old);
        let s = reg.get(&p).expect("newest stream stays");
        assert_eq!(s.mode, Mode::Incremental);
        assert!(s.types.is_empty());
        reg.update(&new, [(crate::snapshot::CLUSTER, synced)]);
        assert_eq!(reg.all()[0].types.len(), 1);
        reg.disconnected(&p, &new);
        assert!(reg.get(&p).is_none());
    }

    #[test]
    fn every_change_but_a_stale_streams_wakes_the_reporter() {
        let reg = SyncRegistry::default();
        let changes = reg.changes();
        let p = ObjectKey::new("ns", "pod");
        let old = reg.connected(&p, Mode::StateOfTheWorld);
        let new = reg.connected(&p, Mode::Incremental);
        assert_eq!(changes.count(), 2);
        reg.update(&old, [(crate::snapshot::CLUSTER, TypeSync::default())]);
        reg.disconnected(&p, &old);
        assert_eq!(changes.count(), 2, "a stale stream changes nothing");
        reg.update(&new, [(crate::snapshot::CLUSTER, TypeSync::default())]);
        reg.disconnected(&p, &new);
        assert_eq!(changes.count(), 4);
    }

    #[test]
    fn an_update_that_changes_nothing_wakes_nobody_and_the_nack_held_before_is_returned() {
        let reg = SyncRegistry::default();
        let changes = reg.changes();
        let p = ObjectKey::new("ns", "pod");
        let stream = reg.connected(&p, Mode::Incremental);
        let sent = TypeSync {
            sent: Some("1".into()),
            ..Default::default()
        };
        let nacked = TypeSync {
            nack: Some(Nack {
                version: "1".into(),
                message: "bad".into(),
            }),
            ..sent.clone()
        };
        let cluster = crate::snapshot::CLUSTER;
        assert!(reg.update(&stream, [(cluster, sent.clone())]).is_empty());
        assert_eq!(changes.count(), 2);
        reg.update(&stream, [(cluster, sent)]);
        assert_eq!(changes.count(), 2, "the same status again");
        let before = reg.update(&stream, [(cluster, nacked.clone())]);
        assert_eq!(before, vec![(cluster, None)], "no NACK before");
        assert_eq!(changes.count(), 3);
        let before = reg.update(&stream, [(cluster, nacked.clone())]);
        assert_eq!(
            before,
            vec![(cluster, nacked.nack)],
            "the NACK already held"
        );
        assert_eq!(changes.count(), 3);
    }
}
