//! One ADS stream, on its own task: requests and snapshots go into the state machine, its
//! responses out through the response budget, until the proxy leaves, the stream fails, the
//! server stops, or the stream reaches its age.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use prost::Message as _;
use remora_model::input::ObjectKey;
use tokio::sync::watch;
use tonic::Status;
use tracing::{debug, info, warn};

use super::{
    AdsServer,
    ends::{Ends, Told},
    outbox::Outbox,
};
use crate::{
    budget::{Ledger, Reservation},
    grpc::{self, ReadError, Requests},
    limits::{Refusal, Refusals},
    machine::{Machine, Touched},
    snapshot::Snapshot,
    sync::{Nack, StreamEntry, TypeSync},
};

/// One ADS stream's state and ends, so its steps share them.
struct Stream<M: Machine> {
    machine: M,
    incoming: Requests<M::Req>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    ends: Ends,
    /// Whether the stream ends because it reached its age.
    aged: bool,
    tx: Outbox,
    ledger: Arc<Ledger>,
    /// A request taken in or a snapshot published that is not answered yet.
    owed: bool,
    /// The types whose status is to be recorded.
    touched: Touched,
    /// A request was taken in since the room for an answer was last worked out.
    taken: bool,
}

impl<M: Machine> Stream<M> {
    /// Takes a request in at once: the stream then holds its state, not the request. A
    /// request that names more than `limit` resources, or leaves the stream subscribed to
    /// more of one type, ends the stream.
    fn take(&mut self, request: &M::Req, limit: usize) -> Result<(), Status> {
        let named = M::names_in(request);
        if named > limit {
            return Err(too_many(named, limit));
        }
        let current = self.snapshots.borrow().clone();
        self.owed |= self.machine.take_request(request, &current);
        self.touched.add(M::type_of(request));
        self.taken = true;
        match self.machine.most_subscribed() {
            held if held > limit => Err(too_many(held, limit)),
            _ => Ok(()),
        }
    }
}

fn too_many(names: usize, limit: usize) -> Status {
    Status::resource_exhausted(format!(
        "{names} resource names, over the limit of {limit} per type"
    ))
}

/// The proxy's next request, `None` once it closed its side or the stream broke, or the
/// status to end the stream with when a request cannot be read (one cut off by its deadline
/// is counted). Cancel-safe, as [`Requests::message`] is.
async fn next_request<R: grpc::Checked>(
    incoming: &mut Requests<R>,
    refusals: &Refusals,
) -> Result<Option<R>, Status> {
    match incoming.message().await {
        Ok(request) => Ok(request),
        Err(e @ (ReadError::Malformed(_) | ReadError::Stalled(_))) => {
            let status = super::read_failed(e, refusals);
            warn!(code = ?status.code(), reason = status.message(), "a request could not be read; closing the stream");
            Err(status)
        }
        Err(e @ ReadError::Broken(_)) => {
            debug!(error = %e, "stream ended");
            Ok(None)
        }
    }
}

/// Queues `status` to end the stream with, after the responses queued before it.
async fn end_with(tx: &Outbox, status: Status) {
    if !tx.send(Err(status)).await {
        debug!("the proxy left before the stream's status reached it");
    }
}

impl AdsServer {
    /// Serves the stream of `proxy` until it ends. The first request is taken in before the
    /// stream's future exists: a future keeps its arguments for as long as it lives, and the
    /// task of each of thousands of streams would keep a request it no longer needs.
    pub(super) fn serve<M: Machine>(
        self,
        proxy: ObjectKey,
        first: M::Req,
        incoming: Requests<M::Req>,
        tx: Outbox,
        ledger: Arc<Ledger>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let stream = self.status.connected(&proxy, M::MODE);
        let lifetime = self.age.lifetime(fastrand::u64(..));
        info!("proxy connected");
        let mut s = Stream {
            machine: M::default(),
            incoming,
            snapshots: self.cache.subscribe(&proxy),
            ends: Ends::new(self.shutdown.clone(), lifetime),
            aged: false,
            tx,
            ledger,
            owed: false,
            touched: Touched::default(),
            taken: false,
        };
        let failed = self.take(&mut s, &first).err();
        self.run(proxy, stream, lifetime, s, failed)
    }

    /// The stream's loop; `failed`: why the stream ends, when the proxy is to be told.
    async fn run<M: Machine>(
        self,
        proxy: ObjectKey,
        stream: StreamEntry,
        lifetime: Duration,
        mut s: Stream<M>,
        mut failed: Option<Status>,
    ) {
        while failed.is_none() {
            if !s.owed {
                let request = tokio::select! {
                    told = s.ends.told() => {
                        s.aged = told == Told::Aged;
                        break;
                    }
                    () = s.ledger.stalled(self.write_timeout) => {
                        self.stalled(&s);
                        break;
                    }
                    req = next_request(&mut s.incoming, &self.refusals) => match req {
                        Ok(Some(req)) => Some(req),
                        Ok(None) => break,
                        Err(status) => {
                            failed = Some(status);
                            break;
                        }
                    },
                    changed = s.snapshots.changed() => {
                        // The cache is gone only when the server is.
                        if changed.is_err() {
                            break;
                        }
                        None
                    }
                };
                match request {
                    Some(req) => {
                        if let Err(status) = self.take(&mut s, &req) {
                            failed = Some(status);
                            break;
                        }
                    }
                    None => s.owed = true,
                }
            }
            // Boxed: the future of an answer is large and lives only while one is built
            // and queued, not while the stream waits.
            let closed = s.owed && !Box::pin(self.answer(&mut s)).await;
            if !s.touched.is_empty() {
                let touched = std::mem::take(&mut s.touched);
                self.record(&stream, s.machine.status_of(touched));
            }
            if closed {
                break;
            }
        }
        if let Some(status) = failed {
            end_with(&s.tx, status).await;
        }
        self.settle(&mut s).await;
        if s.aged {
            // Ended as a stop ends it: the proxy keeps its config and reconnects, over a new
            // connection since this one was told to go away at the maximum age.
            self.age.count_ended();
            debug!(
                ?lifetime,
                "the stream reached its age; the proxy reconnects"
            );
        }
        self.status.disconnected(&proxy, &stream);
        info!("proxy disconnected");
    }

    /// Records the stream's status, and logs each rejection the first time it is seen.
    fn record(&self, stream: &StreamEntry, status: Vec<(&'static str, TypeSync)>) {
        // A NACK still in force over a later ACK carries the ACKed version: it was logged
        // when it came.
        let in_force: Vec<(&'static str, Nack)> = status
            .iter()
            .filter_map(|(type_url, st)| {
                let n = st.nack.as_ref()?;
                (st.acked.as_ref() != Some(&n.version)).then(|| (*type_url, n.clone()))
            })
            .collect();
        let before = self.status.update(stream, status);
        for (type_url, n) in in_force {
            let logged = before
                .iter()
                .any(|(t, old)| *t == type_url && old.as_ref() == Some(&n));
            if !logged {
                warn!(type_url, version = %n.version, message = %n.message, "proxy rejected config");
            }
        }
    }

    /// Builds and queues what the proxy should get now: room in the budget first, then from
    /// the newest snapshot (those published while it waited coalesce). False when the stream
    /// is to end.
    async fn answer<M: Machine>(&self, s: &mut Stream<M>) -> bool {
        // Room for what this answer may hold, taken before building it: the sets of the
        // types that changed, not the whole snapshot.
        let estimate = s.machine.answer_bytes(&s.snapshots.borrow());
        s.taken = false;
        let Some(mut reservation) = self.reserve(estimate, s).await else {
            return false;
        };
        // Requests taken in while waiting may owe more: the room is checked again before
        // building, so built responses wait only when the estimate fell short. A snapshot
        // published meanwhile is checked once the answer is built.
        while std::mem::take(&mut s.taken) {
            let owed = s.machine.answer_bytes(&s.snapshots.borrow());
            if reservation.covers(&self.budget, owed) {
                break;
            }
            drop(reservation);
            let Some(larger) = self.reserve(owed, s).await else {
                return false;
            };
            reservation = larger;
        }
        // This answer covers whatever was taken in while waiting.
        s.owed = false;
        let snapshot = s.snapshots.borrow_and_update().clone();
        let responses = s.machine.respond(&snapshot);
        for r in &responses {
            s.touched.add(M::describe(r).0);
        }
        let built = responses
            .iter()
            .map(|r| grpc::PREFIX + r.encoded_len())
            .sum();
        if !reservation.covers(&self.budget, built) {
            drop(reservation);
            reservation = match self.reserve(built, s).await {
                Some(r) => r,
                None => return false,
            };
        }
        // Framed here, on the stream's task, rather than where the connection writes;
        // each response is dropped as soon as its frame exists.
        let frames: Vec<_> = responses
            .into_iter()
            .map(|r| {
                let (type_url, count, version) = M::describe(&r);
                debug!(type_url, count, version, "sending");
                reservation.frame(&r, &s.ledger).inspect_err(|e| {
                    warn!(
                        type_url,
                        reason = e.message(),
                        "a response cannot be sent; closing the stream"
                    );
                })
            })
            .collect();
        drop(reservation);
        self.send(frames, s).await
    }

    /// Queues the frames in order; a frame that failed goes as the stream's status, and ends
    /// it. False when the stream is to end.
    async fn send<M: Machine>(
        &self,
        frames: Vec<Result<Bytes, Status>>,
        s: &mut Stream<M>,
    ) -> bool {
        for framed in frames {
            let failed = framed.is_err();
            let sent = tokio::select! {
                sent = s.tx.send(framed) => sent,
                () = s.ledger.stalled(self.write_timeout) => {
                    self.stalled(s);
                    false
                }
            };
            if !sent || failed {
                return false;
            }
        }
        true
    }

    /// `bytes` of the budget, or `None` when the server stops, the proxy goes, the stream
    /// reaches its age, or it stalls first. Requests that arrive meanwhile are taken in: a
    /// request left unread would sit in the connection's buffers, and thousands of streams
    /// waiting for room would hold thousands of requests, each of which may name every
    /// cluster.
    async fn reserve<M: Machine>(&self, bytes: usize, s: &mut Stream<M>) -> Option<Reservation> {
        // One answer at a time: the last one written before room for the next is taken.
        let ledger = s.ledger.clone();
        let reserve = async {
            ledger.drained().await;
            self.budget.reserve(bytes, ledger.reader()).await
        };
        tokio::pin!(reserve);
        let reserved = loop {
            let request = tokio::select! {
                told = s.ends.told() => {
                    s.aged = told == Told::Aged;
                    return None;
                }
                _ = s.tx.closed() => return None,
                () = s.ledger.stalled(self.write_timeout) => {
                    self.stalled(s);
                    return None;
                }
                req = next_request(&mut s.incoming, &self.refusals) => match req {
                    Ok(req) => req?,
                    Err(status) => break Err(status),
                },
                reserved = &mut reserve => break reserved.inspect_err(|e| {
                    warn!(reason = e.message(), "no response budget; closing the stream");
                }),
            };
            if let Err(status) = self.take(s, &request) {
                break Err(status);
            }
        };
        match reserved {
            Ok(reservation) => Some(reservation),
            Err(status) => {
                end_with(&s.tx, status).await;
                None
            }
        }
    }

    /// Takes a request into the stream, counting a refusal of its names.
    fn take<M: Machine>(&self, s: &mut Stream<M>, request: &M::Req) -> Result<(), Status> {
        s.take(request, self.limits.subscriptions)
            .inspect_err(|status| {
                self.refusals.count(Refusal::Subscriptions);
                warn!(
                    reason = status.message(),
                    "too many subscriptions; closing the stream"
                );
            })
    }

    /// Waits, before the stream's task ends, until what it queued is written, so that a
    /// proxy that stops reading as its stream ends is still cut off and its frames dropped.
    /// Not when the server stops or the stream reached its age: the connection goes then.
    async fn settle<M: Machine>(&self, s: &mut Stream<M>) {
        if s.tx.is_cut() {
            return;
        }
        tokio::select! {
            _ = s.ends.told() => {}
            () = s.ledger.drained() => {}
            () = s.ledger.stalled(self.write_timeout) => self.stalled(s),
        }
    }

    /// Cuts off a stream whose proxy stopped reading: what is queued for it is dropped,
    /// which gives its budget back now, and the stream is reset if hyper polls it again.
    fn stalled<M: Machine>(&self, s: &Stream<M>) {
        self.refusals.count(Refusal::SlowReader);
        let unwritten = s.ledger.unwritten();
        let dropped = s.tx.cut();
        warn!(
            unwritten_bytes = unwritten,
            dropped_bytes = dropped,
            timeout = ?self.write_timeout,
            "the proxy read none of its responses in time; cutting its stream off"
        );
    }
}
