//! The registry's change signal. Every stream raises it twice per response (once sent, once
//! ACKed), from every core at once: a `watch` channel took a lock and its eight wake lists'
//! locks for each, on memory all the cores share. Here a change is one atomic add, and wakes
//! someone only when someone waits.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering::SeqCst},
};

use tokio::sync::Notify;

/// The side that counts changes; dropping it tells every receiver it is gone.
#[derive(Debug, Default)]
pub(super) struct Signal(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    count: AtomicU64,
    /// Set by a receiver about to wait, cleared by the change that wakes it.
    waiting: AtomicBool,
    notify: Notify,
    gone: AtomicBool,
}

impl Signal {
    /// Counts a change, waking the receivers that wait for one.
    pub(super) fn raise(&self) {
        let s = &self.0;
        s.count.fetch_add(1, SeqCst);
        // A receiver sets `waiting` before it reads the count, and this reads `waiting`
        // after counting: one of the two sees the other.
        if s.waiting.load(SeqCst) && s.waiting.swap(false, SeqCst) {
            s.notify.notify_waiters();
        }
    }

    /// A receiver that has seen every change so far.
    pub(super) fn subscribe(&self) -> Changes {
        Changes {
            seen: self.0.count.load(SeqCst),
            shared: self.0.clone(),
        }
    }
}

impl Drop for Signal {
    fn drop(&mut self) {
        self.0.gone.store(true, SeqCst);
        self.0.notify.notify_waiters();
    }
}

/// Wakes on changes to the registry. Changes that come while nobody waits are counted
/// together: a receiver wakes once for all of them and reads the registry's state then.
#[derive(Debug)]
pub struct Changes {
    shared: Arc<Shared>,
    seen: u64,
}

/// The registry is gone, and no change is left to see.
#[derive(Debug, thiserror::Error)]
#[error("the proxies' status registry is gone")]
pub struct RegistryGone;

impl Changes {
    /// How many changes the registry has counted.
    pub fn count(&self) -> u64 {
        self.shared.count.load(SeqCst)
    }

    /// Takes every change so far as seen: called before reading the registry, so that a
    /// change made while reading wakes the next wait.
    pub fn mark_seen(&mut self) {
        self.seen = self.count();
    }

    /// Completes once there is a change not seen yet, and marks it seen. Cancel-safe.
    pub async fn changed(&mut self) -> Result<(), RegistryGone> {
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.shared.waiting.store(true, SeqCst);
            let count = self.count();
            if count != self.seen {
                self.seen = count;
                return Ok(());
            }
            if self.shared.gone.load(SeqCst) {
                return Err(RegistryGone);
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_change_wakes_each_waiting_receiver_once_for_all_changes_before() {
        let signal = Signal::default();
        let mut a = signal.subscribe();
        let mut b = signal.subscribe();
        let waiting = tokio::spawn(async move {
            a.changed().await.expect("open");
            a
        });
        tokio::task::yield_now().await;
        signal.raise();
        signal.raise();
        let mut a = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("woken")
            .expect("no panic");
        b.changed().await.expect("a change not seen yet");
        assert_eq!(b.count(), 2);
        // Both changes came before `a` read the count or as it did: nothing is left unseen.
        a.mark_seen();
        let idle = tokio::time::timeout(Duration::from_millis(50), a.changed()).await;
        assert!(idle.is_err(), "no change left to see");
    }

    #[tokio::test]
    async fn a_gone_signal_ends_the_wait_after_the_last_change() {
        let signal = Signal::default();
        let mut changes = signal.subscribe();
        signal.raise();
        drop(signal);
        changes
            .changed()
            .await
            .expect("the last change is still seen");
        assert!(changes.changed().await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_change_raised_on_another_thread_while_a_receiver_waits_is_lost() {
        let signal = Arc::new(Signal::default());
        let mut changes = signal.subscribe();
        let raisers: Vec<_> = (0..4)
            .map(|_| {
                let signal = signal.clone();
                tokio::spawn(async move {
                    for _ in 0..1000 {
                        signal.raise();
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        // Waits while the changes come: a wake lost between a receiver's look at the count
        // and its wait would leave the last changes unseen, and the wait would time out.
        let mut woken = 0;
        while changes.seen != 4000 {
            tokio::time::timeout(Duration::from_secs(10), changes.changed())
                .await
                .expect("a change left unseen wakes the receiver")
                .expect("open");
            woken += 1;
        }
        assert!(woken <= 4000, "woken more often than changes were made");
        for raiser in raisers {
            raiser.await.expect("no panic");
        }
    }
}
