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
//!
//! Until then its share is held, and waiters are served in order: proxies that never read
//! (hundreds of them, each owed a config of megabytes) would take the budget in turn, each
//! for the whole write timeout, while every other stream waited behind them. So a stream
//! whose proxy has not yet read a whole answer ([`Reader::New`]) first takes its bytes from
//! a pool of half the budget, in which such streams wait among themselves; the other half
//! is always there for proxies that read. No reservation takes more than half the budget,
//! so that holds for a response larger than the budget too.

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
    /// The part of the budget that streams of [`Reader::New`] proxies hold among them.
    new_readers: Arc<Semaphore>,
    limit: u32,
}

/// Whether a stream's proxy has read a whole answer yet, which decides what part of the
/// budget it may wait for ([`ResponseBudget::reserve`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    /// It has read every frame of an answer.
    Proven,
    /// Nothing it was sent has been written in full yet.
    New,
}

impl ResponseBudget {
    /// A budget of `bytes`, at least one byte and at most what one reservation can count.
    pub fn new(bytes: usize) -> ResponseBudget {
        let limit = u32::try_from(bytes).unwrap_or(u32::MAX).max(1);
        ResponseBudget {
            semaphore: Arc::new(Semaphore::new(limit as usize)),
            new_readers: Arc::new(Semaphore::new(new_readers_share(limit) as usize)),
            limit,
        }
    }

    /// The bytes a reservation of `bytes` takes: all of them, or half the budget for more
    /// than that, so an oversized response still goes out, beside the other half.
    fn permits(&self, bytes: usize) -> u32 {
        u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .min(new_readers_share(self.limit))
    }

    /// Waits until `bytes` (capped at half the budget) are free, for a new reader in its
    /// part of the budget first. Waiters are served in order, so a large reservation is not
    /// starved by small ones.
    pub async fn reserve(&self, bytes: usize, reader: Reader) -> Result<Reservation, Status> {
        let permits = self.permits(bytes);
        let new_reader = match reader {
            Reader::Proven => None,
            Reader::New => Some(acquire(&self.new_readers, permits).await?),
        };
        let permit = acquire(&self.semaphore, permits).await?;
        Ok(Reservation { permit, new_reader })
    }

    /// Bytes free now.
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }
}

/// Half the budget, at least one byte.
fn new_readers_share(limit: u32) -> u32 {
    (limit / 2).max(1)
}

async fn acquire(semaphore: &Arc<Semaphore>, permits: u32) -> Result<OwnedSemaphorePermit, Status> {
    semaphore
        .clone()
        .acquire_many_owned(permits)
        .await
        .map_err(|_| Status::unavailable("the response budget is closed"))
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
    /// The same bytes of the new readers' part, for a [`Reader::New`].
    new_reader: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    /// Bytes still held, not yet moved into frames.
    pub fn bytes(&self) -> usize {
        self.permit.num_permits()
    }

    /// True when these bytes cover `bytes`, or they are the most a reservation takes.
    pub fn covers(&self, budget: &ResponseBudget, bytes: usize) -> bool {
        self.bytes() >= budget.permits(bytes) as usize
    }

    /// Frames `message`, moving its size (or what is left of this reservation) into the
    /// frame, which `ledger` counts as unwritten: those bytes come back once the frame's last
    /// reference is dropped.
    pub fn frame(&mut self, message: &impl Message, ledger: &Arc<Ledger>) -> Result<Bytes, Status> {
        let frame = grpc::frame(message)?;
        let share = frame.len().min(self.bytes());
        let held = (
            self.permit.split(share),
            self.new_reader.as_mut().and_then(|p| p.split(share)),
        );
        let id = ledger.record(frame.len(), held);
        Ok(Bytes::from_owner(Budgeted {
            frame,
            ledger: ledger.clone(),
            id,
        }))
    }
}

/// What one frame holds until it is written: its share of the budget and, for a new
/// reader, the same of the new readers' part.
type Held = (Option<OwnedSemaphorePermit>, Option<OwnedSemaphorePermit>);

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
    frames: HashMap<u64, (usize, Held)>,
    /// Every frame queued so far was written once: the proxy reads.
    proven: bool,
}

impl Ledger {
    fn lock(&self) -> MutexGuard<'_, Unwritten> {
        self.unwritten.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, len: usize, held: Held) -> u64 {
        let mut u = self.lock();
        let id = u.next;
        u.next += 1;
        if u.frames.is_empty() {
            u.since = Some(Instant::now());
        }
        u.frames.insert(id, (len, held));
        id
    }

    /// Whether the proxy has read a whole answer. A stream cut off drops its frames too, but
    /// it reserves nothing after that.
    pub fn reader(&self) -> Reader {
        if self.lock().proven {
            Reader::Proven
        } else {
            Reader::New
        }
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
            u.proven |= u.frames.is_empty();
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
        let mut reservation = budget.reserve(4_000, Reader::Proven).await.expect("open");
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
    async fn a_response_larger_than_half_the_budget_takes_half_of_it() {
        let budget = ResponseBudget::new(2_000);
        let mut reservation = budget.reserve(50_000, Reader::Proven).await.expect("open");
        assert_eq!(reservation.bytes(), 1_000);
        assert!(reservation.covers(&budget, 50_000));
        assert_eq!(budget.available(), 1_000, "the other half for the rest");
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
        assert_eq!(budget.available(), 2_000);
    }

    #[tokio::test]
    async fn a_reservation_too_small_for_what_was_built_says_so() {
        let budget = ResponseBudget::new(1_000);
        let reservation = budget.reserve(100, Reader::Proven).await.expect("open");
        assert!(reservation.covers(&budget, 100));
        assert!(!reservation.covers(&budget, 101));
        assert!(!reservation.covers(&budget, 5_000));
    }

    #[tokio::test]
    async fn new_readers_wait_among_themselves_for_half_the_budget() {
        let budget = ResponseBudget::new(10_000);
        let ledger = Arc::new(Ledger::default());
        let mut first = budget.reserve(8_000, Reader::New).await.expect("open");
        assert_eq!(first.bytes(), 5_000, "at most their half");
        assert!(first.covers(&budget, 8_000));
        let frame = first.frame(&response(1_000), &ledger).expect("frames");
        drop(first);
        // Another new reader waits while the first's frame is unwritten, even for a little
        // of what is free; a proven reader does not wait behind it.
        let second = budget.reserve(4_500, Reader::New);
        let mut second = std::pin::pin!(second);
        assert!(!futures_ready(&mut second));
        let proven = budget.reserve(5_000, Reader::Proven);
        let mut proven = std::pin::pin!(proven);
        assert!(futures_ready(&mut proven));
        drop(frame);
        assert!(futures_ready(&mut second));
        assert_eq!(budget.available(), 10_000);
        assert_eq!(budget.new_readers.available_permits(), 5_000);
    }

    #[tokio::test]
    async fn a_frame_gives_back_both_shares_of_a_new_reader_once_written() {
        let budget = ResponseBudget::new(10_000);
        let ledger = Arc::new(Ledger::default());
        let mut reservation = budget.reserve(4_000, Reader::New).await.expect("open");
        let frame = reservation
            .frame(&response(1_000), &ledger)
            .expect("frames");
        drop(reservation);
        let held = frame.len();
        assert_eq!(budget.available(), 10_000 - held);
        assert_eq!(budget.new_readers.available_permits(), 5_000 - held);
        drop(frame);
        assert_eq!(budget.available(), 10_000);
        assert_eq!(budget.new_readers.available_permits(), 5_000);
    }

    #[tokio::test]
    async fn a_proxy_is_a_proven_reader_once_every_frame_it_was_sent_is_written() {
        let budget = ResponseBudget::new(100_000);
        let ledger = Arc::new(Ledger::default());
        assert_eq!(ledger.reader(), Reader::New, "nothing written yet");
        let (first, second) = two_frames(&budget, &ledger).await;
        drop(first);
        assert_eq!(ledger.reader(), Reader::New, "half an answer written");
        drop(second);
        assert_eq!(ledger.reader(), Reader::Proven);
        let (more, _rest) = two_frames(&budget, &ledger).await;
        drop(more);
        assert_eq!(
            ledger.reader(),
            Reader::Proven,
            "for the rest of the stream"
        );
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
        let mut reservation = budget.reserve(50_000, Reader::Proven).await.expect("open");
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
        let mut reservation = budget.reserve(4_000, Reader::Proven).await.expect("open");
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
        let mut reservation = budget.reserve(50_000, Reader::Proven).await.expect("open");
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
