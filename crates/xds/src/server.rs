//! The gRPC side of ADS: each stream runs its own task that feeds requests and snapshots to
//! a state machine and writes out what it returns. Nothing here knows about Kubernetes.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use http::{Request, Response};
use prost::Message as _;
use tokio::sync::{mpsc, watch};
use tonic::{
    Status,
    body::Body,
    codegen::{BoxFuture, Service},
    server::NamedService,
};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    budget::{DEFAULT_WRITE_TIMEOUT, Ledger, Reservation, ResponseBudget},
    cache::SnapshotCache,
    delta::DeltaStream,
    grpc::{self, Requests},
    proxy::ProxyId,
    snapshot::Snapshot,
    sotw::SotwStream,
    status::{Mode, StatusRegistry, TypeStatus},
};

const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// Responses waiting to be written to one stream. Snapshots coalesce before this point, so a
/// few are enough.
const OUTBOX: usize = 8;

#[derive(Clone)]
pub struct AdsServer {
    cache: Arc<SnapshotCache>,
    status: Arc<StatusRegistry>,
    /// Turns true when the server stops. ADS streams never end by themselves, so a graceful
    /// shutdown must end them; the proxies then reconnect to whoever serves next.
    shutdown: watch::Receiver<bool>,
    /// Response bytes built or encoded and not yet written, across all streams.
    budget: ResponseBudget,
    /// How long a stream may go without any of its queued responses written.
    write_timeout: Duration,
}

impl AdsServer {
    /// A server whose streams hold at most [`crate::DEFAULT_RESPONSE_BUDGET`] (32 MiB) of
    /// responses not yet written, all streams together; see [`AdsServer::response_budget`].
    pub fn new(
        cache: Arc<SnapshotCache>,
        status: Arc<StatusRegistry>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        AdsServer {
            cache,
            status,
            shutdown,
            budget: ResponseBudget::default(),
            write_timeout: DEFAULT_WRITE_TIMEOUT,
        }
    }

    /// Closes a stream none of whose queued responses is written for `timeout` (default
    /// [`DEFAULT_WRITE_TIMEOUT`], 30 s), and gives their share of the response budget back:
    /// a proxy that stops reading would otherwise hold it until its connection ends.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Bounds the bytes of responses built or encoded and not yet written by the proxies,
    /// across all streams: a stream waits for room before it builds, so a mass initial sync
    /// of large configs cannot hold every proxy's config at once. A response larger than
    /// the budget waits for all of it and goes out alone.
    pub fn response_budget(mut self, bytes: usize) -> Self {
        self.budget = ResponseBudget::new(bytes);
        self
    }

    /// The gRPC service to add to a tonic server.
    pub fn into_service(self) -> AdsService {
        AdsService { server: self }
    }
}

/// Envoy's Aggregated Discovery Service, both flavours, framed by [`grpc`].
#[derive(Clone)]
pub struct AdsService {
    server: AdsServer,
}

impl NamedService for AdsService {
    const NAME: &'static str = SERVICE;
}

impl Service<Request<Body>> for AdsService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Response<Body>, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let server = self.server.clone();
        Box::pin(async move {
            let response = match request.uri().path() {
                SOTW_PATH => server.open::<SotwStream>(request).await,
                DELTA_PATH => server.open::<DeltaStream>(request).await,
                other => Err(Status::unimplemented(format!("no method {other}"))),
            };
            Ok(response.unwrap_or_else(Status::into_http))
        })
    }
}

/// One protocol flavour's state machine, so both share the stream loop.
pub(crate) trait Machine: Default + Send + 'static {
    type Req: prost::Message + Default + Send + 'static;
    type Resp: prost::Message + Send + 'static;
    const MODE: Mode;
    fn node(req: &Self::Req) -> Option<&envoy_types::pb::envoy::config::core::v3::Node>;
    fn take_request(&mut self, req: &Self::Req, snapshot: &Snapshot) -> bool;
    fn respond(&mut self, snapshot: &Snapshot) -> Vec<Self::Resp>;
    fn answer_bytes(&self, snapshot: &Snapshot) -> usize;
    fn status(&self) -> Vec<(&'static str, TypeStatus)>;
    fn describe(resp: &Self::Resp) -> (&str, usize, &str);

    /// A request taken in and answered at once, as the state machines' tests drive them.
    #[cfg(test)]
    fn on_request(&mut self, req: &Self::Req, snapshot: &Snapshot) -> Vec<Self::Resp> {
        if self.take_request(req, snapshot) {
            self.respond(snapshot)
        } else {
            Vec::new()
        }
    }
}

impl Machine for SotwStream {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;
    const MODE: Mode = Mode::StateOfTheWorld;
    fn node(req: &DiscoveryRequest) -> Option<&envoy_types::pb::envoy::config::core::v3::Node> {
        req.node.as_ref()
    }
    fn take_request(&mut self, req: &DiscoveryRequest, s: &Snapshot) -> bool {
        SotwStream::take_request(self, req, s)
    }
    fn respond(&mut self, s: &Snapshot) -> Vec<DiscoveryResponse> {
        SotwStream::respond(self, s)
    }
    fn answer_bytes(&self, s: &Snapshot) -> usize {
        SotwStream::answer_bytes(self, s)
    }
    fn status(&self) -> Vec<(&'static str, TypeStatus)> {
        SotwStream::status(self)
    }
    fn describe(r: &DiscoveryResponse) -> (&str, usize, &str) {
        (&r.type_url, r.resources.len(), &r.version_info)
    }
}

impl Machine for DeltaStream {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;
    const MODE: Mode = Mode::Incremental;
    fn node(
        req: &DeltaDiscoveryRequest,
    ) -> Option<&envoy_types::pb::envoy::config::core::v3::Node> {
        req.node.as_ref()
    }
    fn take_request(&mut self, req: &DeltaDiscoveryRequest, s: &Snapshot) -> bool {
        DeltaStream::take_request(self, req, s)
    }
    fn respond(&mut self, s: &Snapshot) -> Vec<DeltaDiscoveryResponse> {
        DeltaStream::respond(self, s)
    }
    fn answer_bytes(&self, s: &Snapshot) -> usize {
        DeltaStream::answer_bytes(self, s)
    }
    fn status(&self) -> Vec<(&'static str, TypeStatus)> {
        DeltaStream::status(self)
    }
    fn describe(r: &DeltaDiscoveryResponse) -> (&str, usize, &str) {
        (&r.type_url, r.resources.len(), &r.system_version_info)
    }
}

/// One ADS stream's state and ends, so its steps share them.
struct Stream<M: Machine> {
    machine: M,
    incoming: Requests<M::Req>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    shutdown: watch::Receiver<bool>,
    tx: mpsc::Sender<Result<Bytes, Status>>,
    ledger: Arc<Ledger>,
    /// A request taken in or a snapshot published that is not answered yet.
    owed: bool,
}

/// The proxy's next request, or `None` once it closed its side or the stream broke.
/// Cancel-safe, as [`Requests::message`] is.
async fn next_request<R: prost::Message + Default>(incoming: &mut Requests<R>) -> Option<R> {
    incoming
        .message()
        .await
        .inspect_err(|e| debug!(error = %e, "stream ended"))
        .ok()
        .flatten()
}

impl<M: Machine> Stream<M> {
    /// Takes a request in at once: the stream then holds its state, not the request.
    fn take(&mut self, request: &M::Req) {
        let current = self.snapshots.borrow().clone();
        self.owed |= self.machine.take_request(request, &current);
    }
}

impl AdsServer {
    /// Reads the first request for the node, then serves the stream on its own task.
    async fn open<M: Machine>(&self, request: Request<Body>) -> Result<Response<Body>, Status> {
        if let Some(encoding) = request.headers().get("grpc-encoding")
            && encoding != "identity"
        {
            return Err(Status::unimplemented(format!(
                "compressed requests ({encoding:?}) are not supported"
            )));
        }
        let mut incoming = Requests::<M::Req>::new(request.into_body());
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("stream closed before its first request"))?;
        let node = M::node(&first)
            .ok_or_else(|| Status::invalid_argument("the first request must carry the node"))?;
        let proxy = ProxyId::from_node(node).map_err(Status::invalid_argument)?;
        let (tx, rx) = mpsc::channel(OUTBOX);
        let span = info_span!("xds", proxy = %proxy, mode = ?M::MODE);
        let server = self.clone();
        tokio::spawn(
            async move { server.serve::<M>(proxy, first, incoming, tx).await }.instrument(span),
        );
        Ok(grpc::response(rx))
    }

    async fn serve<M: Machine>(
        self,
        proxy: ProxyId,
        first: M::Req,
        incoming: Requests<M::Req>,
        tx: mpsc::Sender<Result<Bytes, Status>>,
    ) {
        let stream = self.status.connected(&proxy, M::MODE);
        info!("proxy connected");
        let mut s = Stream {
            machine: M::default(),
            incoming,
            snapshots: self.cache.subscribe(&proxy),
            shutdown: self.shutdown.clone(),
            tx,
            ledger: Arc::new(Ledger::default()),
            owed: false,
        };
        s.take(&first);
        drop(first);
        loop {
            if !s.owed {
                let request = tokio::select! {
                    _ = s.shutdown.wait_for(|stop| *stop) => break,
                    () = s.ledger.stalled(self.write_timeout) => {
                        self.stalled(&s.ledger, &s.tx);
                        break;
                    }
                    req = next_request(&mut s.incoming) => match req {
                        Some(req) => Some(req),
                        None => break,
                    },
                    changed = s.snapshots.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        None
                    }
                };
                match request {
                    Some(req) => s.take(&req),
                    None => s.owed = true,
                }
            }
            let closed = s.owed && !self.answer(&mut s).await;
            let status = s.machine.status();
            for (type_url, st) in &status {
                let before = self
                    .status
                    .get(&proxy)
                    .and_then(|p| p.types.get(type_url).cloned());
                if let Some(n) = &st.nack
                    && before.and_then(|b| b.nack).as_ref() != Some(n)
                {
                    warn!(type_url, version = %n.version, message = %n.message, "proxy rejected config");
                }
            }
            self.status.update(&proxy, stream, status);
            if closed {
                break;
            }
        }
        self.status.disconnected(&proxy, stream);
        info!("proxy disconnected");
    }

    /// Builds and queues what the proxy should get now: room in the budget first, then from
    /// the newest snapshot (those published while it waited coalesce). False when the stream
    /// is to end.
    async fn answer<M: Machine>(&self, s: &mut Stream<M>) -> bool {
        // Room for what this answer may hold, taken before building it: the sets of the
        // types that changed, not the whole snapshot.
        let estimate = s.machine.answer_bytes(&s.snapshots.borrow());
        let Some(mut reservation) = self.reserve(estimate, s).await else {
            return false;
        };
        // Requests taken in while waiting may owe more: the room is checked again before
        // building, so built responses wait only when the estimate fell short.
        loop {
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
                reservation.frame(&r, &s.ledger)
            })
            .collect();
        drop(reservation);
        for framed in frames {
            let failed = framed.is_err();
            let sent = tokio::select! {
                sent = s.tx.send(framed) => sent.is_ok(),
                () = s.ledger.stalled(self.write_timeout) => {
                    self.stalled(&s.ledger, &s.tx);
                    false
                }
            };
            if !sent || failed {
                return false;
            }
        }
        true
    }

    /// `bytes` of the budget, or `None` when the server stops, the proxy goes, or it stalls
    /// first. Requests that arrive meanwhile are taken in: a request left unread would sit
    /// in the connection's buffers, and thousands of streams waiting for room would hold
    /// thousands of requests, each of which may name every cluster.
    async fn reserve<M: Machine>(&self, bytes: usize, s: &mut Stream<M>) -> Option<Reservation> {
        let reserve = self.budget.reserve(bytes);
        tokio::pin!(reserve);
        loop {
            let request = tokio::select! {
                _ = s.shutdown.wait_for(|stop| *stop) => return None,
                _ = s.tx.closed() => return None,
                () = s.ledger.stalled(self.write_timeout) => {
                    self.stalled(&s.ledger, &s.tx);
                    return None;
                }
                req = next_request(&mut s.incoming) => req?,
                reserved = &mut reserve => return reserved
                    .inspect_err(|e| debug!(error = %e, "no response budget"))
                    .ok(),
            };
            s.take(&request);
        }
    }

    /// Ends a stream whose proxy stopped reading: its budget comes back now, and the proxy,
    /// should it read again, gets the reason after what was queued.
    fn stalled(&self, ledger: &Ledger, tx: &mpsc::Sender<Result<Bytes, Status>>) {
        let unwritten = ledger.unwritten();
        let returned = ledger.revoke();
        warn!(
            unwritten_bytes = unwritten,
            budget_returned = returned,
            timeout = ?self.write_timeout,
            "the proxy read none of its responses in time; closing its stream"
        );
        // The outbox may be full, then the stream just ends.
        let _ = tx.try_send(Err(Status::deadline_exceeded(format!(
            "no response read for {:?}",
            self.write_timeout
        ))));
    }
}
