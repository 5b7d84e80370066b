//! A server-wide budget of response bytes built or encoded and not yet written.
//!
//! During a mass initial sync every stream builds its proxy's whole config at once, and a
//! proxy that reads slower than the server writes leaves its responses in memory: with
//! 10,000 large configs that passed 3 GiB (BENCHMARKS.md §3). A stream therefore reserves
//! bytes from one semaphore before it builds its responses, and each encoded frame carries
//! its share of the reservation until the last reference to its bytes is dropped, which is
//! when hyper has written it. Streams waiting for the budget read no snapshot meanwhile, so
//! they go on to build from the newest one.
//!
//! A proxy that stops reading would keep its share forever, as its frames are never written;
//! so each stream keeps a [`Ledger`] of its frames not yet written, and a stream whose
//! frames make no progress for a while ([`Ledger::stalled`]) is cut off: the frames still
//! queued are dropped, which gives their share back. Each stream also holds at most one
//! answer: it waits until its frames are written ([`Ledger::drained`]) before it reserves
//! for the next, so a proxy that stops reading holds no more than what it was last sent.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use bytes::Bytes;
use prost::Message;
use tokio::{
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tonic::Status;

use crate::grpc;

/// How long a stream may go without any of its queued responses written before it is
/// closed: far longer than any proxy that reads takes for a large config on a busy node, so
/// only one that stopped reading meets it.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// 32 MiB: some tens of the largest responses (a whole unscoped endpoints set is 1.7 MB) on
/// their way at once, which keeps the network busy, while the peak of a mass initial sync
/// stays near what the connected proxies hold anyway (BENCHMARKS.md §3: 256 MiB took the
/// unscoped 10,000-proxy mesh over 1 GiB, 64 MiB to its edge).
pub const DEFAULT_RESPONSE_BUDGET: usize = 32 * 1024 * 1024;

/// The server-wide pool of response bytes (default [`DEFAULT_RESPONSE_BUDGET`]); clones share it.
#[derive(Clone, Debug)]
pub struct ResponseBudget {
    semaphore: Arc<Semaphore>,
    limit: u32,
}

impl ResponseBudget {
    /// A budget of `bytes`, at least one byte and at most what one reservation can count.
    pub fn new(bytes: usize) -> ResponseBudget {
        let limit = u32::try_from(bytes).unwrap_or(u32::MAX).max(1);
        ResponseBudget {
            semaphore: Arc::new(Semaphore::new(limit as usize)),
            limit,
        }
    }

    /// The bytes a reservation of `bytes` takes: all of them, or the whole budget for more
    /// than it holds, so an oversized response still goes out, alone.
    fn permits(&self, bytes: usize) -> u32 {
        u32::try_from(bytes).unwrap_or(u32::MAX).min(self.limit)
    }

    /// Waits until `bytes` (capped at the budget) are free. Waiters are served in order, so
    /// a large reservation is not starved by small ones.
    pub async fn reserve(&self, bytes: usize) -> Result<Reservation, Status> {
        let permit = self
            .semaphore
            .clone()
            .acquire_many_owned(self.permits(bytes))
            .await
            .map_err(|_| Status::unavailable("the response budget is closed"))?;
        Ok(Reservation { permit })
    }

    /// Bytes free now.
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }
}

impl Default for ResponseBudget {
    fn default() -> ResponseBudget {
        ResponseBudget::new(DEFAULT_RESPONSE_BUDGET)
    }
}

/// Bytes taken from a [`ResponseBudget`], returned when dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: OwnedSemaphorePermit,
}

impl Reservation {
    /// Bytes still held, not yet moved into frames.
    pub fn bytes(&self) -> usize {
        self.permit.num_permits()
    }

    /// True when these bytes cover `bytes`, or the whole budget does not.
    pub fn covers(&self, budget: &ResponseBudget, bytes: usize) -> bool {
        self.bytes() >= budget.permits(bytes) as usize
    }

    /// Frames `message`, moving its size (or what is left of this reservation) into the
    /// frame, which `ledger` counts as unwritten: those bytes come back once the frame's last
    /// reference is dropped.
    pub fn frame(&mut self, message: &impl Message, ledger: &Arc<Ledger>) -> Result<Bytes, Status> {
        let frame = grpc::frame(message)?;
        let share = frame.len().min(self.bytes());
        let permit = self.permit.split(share);
        let id = ledger.record(frame.len(), permit);
        Ok(Bytes::from_owner(Budgeted {
            frame,
            ledger: ledger.clone(),
            id,
        }))
    }
}

/// One stream's frames not yet written, with the budget each holds.
#[derive(Debug, Default)]
pub struct Ledger {
    unwritten: Mutex<Unwritten>,
    /// Told whenever one of the frames is written (dropped), for [`Ledger::drained`].
    written: Notify,
}

#[derive(Debug, Default)]
struct Unwritten {
    next: u64,
    /// While frames wait: since when none was written (or since the first was queued).
    since: Option<Instant>,
    /// By frame: its length and its share of the budget, if any is left.
    frames: HashMap<u64, (usize, Option<OwnedSemaphorePermit>)>,
}

impl Ledger {
    fn lock(&self) -> MutexGuard<'_, Unwritten> {
        self.unwritten.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, len: usize, permit: Option<OwnedSemaphorePermit>) -> u64 {
        let mut u = self.lock();
        let id = u.next;
        u.next += 1;
        if u.frames.is_empty() {
            u.since = Some(Instant::now());
        }
        u.frames.insert(id, (len, permit));
        id
    }

    /// Bytes of frames not yet written.
    pub fn unwritten(&self) -> usize {
        self.lock().frames.values().map(|(len, _)| len).sum()
    }

    /// Resolves once frames have waited `timeout` with none written meanwhile; never while
    /// none waits. Counted from the last write, not from the call, so a stream loop that
    /// calls it anew for every event still meets it. Only its timer wakes it, not each
    /// write: a stream is not woken twice per response just to learn that all is well.
    pub async fn stalled(&self, timeout: Duration) {
        loop {
            let Some(since) = self.lock().since else {
                // Frames are only added by the stream's own task, which calls this anew.
                return std::future::pending().await;
            };
            if since + timeout <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(since + timeout).await;
        }
    }

    /// Resolves once every frame is written; at once when none waits.
    pub async fn drained(&self) {
        loop {
            let written = self.written.notified();
            if self.lock().frames.is_empty() {
                return;
            }
            written.await;
        }
    }

    /// Tells that a piece of a frame went to the connection: the stream is read, though no
    /// whole frame is written yet.
    pub fn progressed(&self) {
        let mut u = self.lock();
        if u.since.is_some() {
            u.since = Some(Instant::now());
        }
    }
}

/// A frame with the ledger entry, and so the budget, its bytes hold.
struct Budgeted {
    frame: Vec<u8>,
    ledger: Arc<Ledger>,
    id: u64,
}

impl AsRef<[u8]> for Budgeted {
    fn as_ref(&self) -> &[u8] {
        &self.frame
    }
}

impl Drop for Budgeted {
    fn drop(&mut self) {
        // Out of the lock before the permit goes back, as a waiter may wake at once.
        let entry = {
            let mut u = self.ledger.lock();
            let entry = u.frames.remove(&self.id);
            u.since = (!u.frames.is_empty()).then(Instant::now);
            entry
        };
        drop(entry);
        self.ledger.written.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use envoy_types::pb::google::protobuf::Any;

    use super::*;

    fn response(bytes: usize) -> DiscoveryResponse {
        DiscoveryResponse {
            resources: vec![Any {
                type_url: String::new(),
                value: vec![7; bytes],
            }],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_frame_holds_its_bytes_until_its_last_reference_is_dropped() {
        let budget = ResponseBudget::new(10_000);
        let mut reservation = budget.reserve(4_000).await.expect("open");
        assert_eq!(budget.available(), 6_000);
        let frame = reservation
            .frame(&response(1_000), &Arc::default())
            .expect("frames");
        let held = frame.len();
        assert!(held > 1_000);
        drop(reservation);
        assert_eq!(
            budget.available(),
            10_000 - held,
            "the unused rest came back"
        );
        let slice = frame.slice(10..20);
        drop(frame);
        assert_eq!(budget.available(), 10_000 - held, "a slice keeps the frame");
        drop(slice);
        assert_eq!(budget.available(), 10_000);
    }

    #[tokio::test]
    async fn a_response_larger_than_the_budget_takes_all_of_it_and_goes_alone() {
        let budget = ResponseBudget::new(1_000);
        let mut reservation = budget.reserve(50_000).await.expect("open");
        assert_eq!(reservation.bytes(), 1_000);
        assert!(reservation.covers(&budget, 50_000));
        assert_eq!(budget.available(), 0);
        assert!(
            budget.semaphore.clone().try_acquire_owned().is_err(),
            "nothing else meanwhile"
        );
        let frame = reservation
            .frame(&response(5_000), &Arc::default())
            .expect("frames");
        assert!(frame.len() > 5_000);
        assert_eq!(reservation.bytes(), 0);
        let unbudgeted = reservation
            .frame(&response(10), &Arc::default())
            .expect("frames");
        assert!(!unbudgeted.is_empty());
        drop(frame);
        assert_eq!(budget.available(), 1_000);
    }

    #[tokio::test]
    async fn a_reservation_too_small_for_what_was_built_says_so() {
        let budget = ResponseBudget::new(1_000);
        let reservation = budget.reserve(100).await.expect("open");
        assert!(reservation.covers(&budget, 100));
        assert!(!reservation.covers(&budget, 101));
        assert!(!reservation.covers(&budget, 5_000));
    }

    #[test]
    fn a_budget_is_at_least_a_byte_and_at_most_what_a_permit_counts() {
        assert_eq!(ResponseBudget::new(0).available(), 1);
        assert_eq!(
            ResponseBudget::new(usize::MAX).available(),
            u32::MAX as usize
        );
    }

    /// Whether `future` is done after `after` of paused time.
    async fn done_after<F: std::future::Future>(
        future: &mut std::pin::Pin<&mut F>,
        after: Duration,
    ) -> bool {
        tokio::time::advance(after).await;
        futures_ready(future)
    }

    fn futures_ready<F: std::future::Future>(future: &mut std::pin::Pin<&mut F>) -> bool {
        let waker = std::task::Waker::noop();
        future
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
            .is_ready()
    }

    /// Two frames of a 1,000-byte response each, queued on `ledger`.
    async fn two_frames(budget: &ResponseBudget, ledger: &Arc<Ledger>) -> (Bytes, Bytes) {
        let mut reservation = budget.reserve(50_000).await.expect("open");
        let mut frame = || reservation.frame(&response(1_000), ledger).expect("frames");
        (frame(), frame())
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_stalls_only_when_nothing_is_written_for_the_whole_timeout() {
        let budget = ResponseBudget::new(100_000);
        let ledger = Arc::new(Ledger::default());
        let timeout = Duration::from_secs(30);
        {
            // Nothing queued: never stalled, however long.
            let stalled = ledger.stalled(timeout);
            let mut stalled = std::pin::pin!(stalled);
            assert!(!done_after(&mut stalled, Duration::from_secs(3600)).await);
        }
        let (first, second) = two_frames(&budget, &ledger).await;
        assert_eq!(ledger.unwritten(), first.len() + second.len());
        let stalled = ledger.stalled(timeout);
        let mut stalled = std::pin::pin!(stalled);
        assert!(!futures_ready(&mut stalled));
        assert!(!done_after(&mut stalled, Duration::from_secs(20)).await);
        // A write 20 s in restarts the wait: 29 s after it, not yet; 30 s, stalled.
        drop(first);
        assert!(!done_after(&mut stalled, Duration::from_secs(29)).await);
        assert!(done_after(&mut stalled, Duration::from_secs(1)).await);
        // Asked again later, it still counts from that write: already over.
        let again = ledger.stalled(timeout);
        let mut again = std::pin::pin!(again);
        assert!(futures_ready(&mut again));
        // Once everything is written, nothing stalls.
        drop(second);
        let none = ledger.stalled(timeout);
        let mut none = std::pin::pin!(none);
        assert!(!done_after(&mut none, Duration::from_secs(3600)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_is_drained_once_its_last_frame_is_written() {
        let budget = ResponseBudget::new(10_000);
        let ledger = Arc::new(Ledger::default());
        {
            let drained = ledger.drained();
            let mut drained = std::pin::pin!(drained);
            assert!(futures_ready(&mut drained), "nothing queued");
        }
        let mut reservation = budget.reserve(4_000).await.expect("open");
        let first = reservation
            .frame(&response(1_000), &ledger)
            .expect("frames");
        let second = reservation
            .frame(&response(1_000), &ledger)
            .expect("frames");
        drop(reservation);
        let drained = ledger.drained();
        let mut drained = std::pin::pin!(drained);
        assert!(!futures_ready(&mut drained));
        drop(first);
        assert!(!futures_ready(&mut drained), "one frame still waits");
        drop(second);
        assert!(futures_ready(&mut drained));
        assert_eq!(budget.available(), 10_000);
    }

    /// Counts its wakes.
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn writes_do_not_wake_a_stream_watching_for_a_stall() {
        let budget = ResponseBudget::new(100_000);
        let ledger = Arc::new(Ledger::default());
        let (first, second) = two_frames(&budget, &ledger).await;
        let wakes = Arc::new(Wakes(Default::default()));
        let waker = std::task::Waker::from(wakes.clone());
        let stalled = ledger.stalled(Duration::from_secs(30));
        let mut stalled = std::pin::pin!(stalled);
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(stalled.as_mut().poll(&mut cx).is_pending());
        ledger.progressed();
        drop(first);
        drop(second);
        assert_eq!(wakes.0.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_piece_of_a_frame_handed_on_counts_as_progress() {
        let budget = ResponseBudget::new(100_000);
        let ledger = Arc::new(Ledger::default());
        let timeout = Duration::from_secs(30);
        let mut reservation = budget.reserve(50_000).await.expect("open");
        let frame = reservation
            .frame(&response(20_000), &ledger)
            .expect("frames");
        drop(reservation);
        let stalled = ledger.stalled(timeout);
        let mut stalled = std::pin::pin!(stalled);
        assert!(!done_after(&mut stalled, Duration::from_secs(25)).await);
        ledger.progressed();
        assert!(!done_after(&mut stalled, Duration::from_secs(25)).await);
        assert!(done_after(&mut stalled, Duration::from_secs(5)).await);
        drop(frame);
    }
}
