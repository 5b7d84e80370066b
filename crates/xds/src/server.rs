//! The gRPC side of ADS: each stream runs its own task that feeds requests and snapshots to
//! a state machine and writes out what it returns. Nothing here knows about Kubernetes.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use remora_envoy::node::proxy_of;
use remora_model::input::ObjectKey;
use tokio::sync::watch;
use tonic::{
    Status,
    body::Body,
    codegen::{BoxFuture, Service},
    server::NamedService,
};
use tracing::{Instrument, info_span, warn};

pub use age::{DEFAULT_MAX_STREAM_AGE, StreamAge};
pub use auth::Admission;
use remora_identity::Peer;
use slots::{Slot, Slots};

use crate::{
    budget::{DEFAULT_WRITE_TIMEOUT, Ledger, ResponseBudget},
    cache::SnapshotCache,
    delta::DeltaStream,
    grpc::{self, Requests},
    limits::{Limits, Refusal, Refusals},
    machine::Machine,
    sotw::SotwStream,
    sync::SyncRegistry,
};

mod age;
mod auth;
mod ends;
mod outbox;
mod slots;
mod stream;
#[cfg(test)]
mod tests;

/// The gRPC service Envoy's ADS clients call.
pub const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
/// The state-of-the-world ADS method.
pub const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
/// The incremental ADS method.
pub const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// Responses waiting to be written to one stream. Snapshots coalesce before this point, so a
/// few are enough.
const OUTBOX: usize = 8;

/// The ADS gRPC service, both flavours: serves each proxy its snapshots from the cache and
/// records in the registry what it was sent, ACKed and NACKed.
#[derive(Clone)]
pub struct AdsServer {
    cache: Arc<SnapshotCache>,
    status: Arc<SyncRegistry>,
    /// Turns true when the server stops. ADS streams never end by themselves, so a graceful
    /// shutdown must end them; the proxies then reconnect to whoever serves next.
    shutdown: watch::Receiver<bool>,
    /// Response bytes built or encoded and not yet written, across all streams.
    budget: ResponseBudget,
    /// How long a stream may go without any of its queued responses written.
    write_timeout: Duration,
    /// What a stream must show before it is served.
    admission: Admission,
    /// How long a stream lives before the proxy is sent to reconnect.
    age: StreamAge,
    /// What each stream may hold.
    limits: Limits,
    /// Every client cut off, by why.
    refusals: Refusals,
    /// Open ADS streams per connection, by the client's address.
    streams: Slots<SocketAddr>,
    /// Open ADS streams per proxy.
    proxies: Slots<ObjectKey>,
}

impl AdsServer {
    /// A server whose streams hold at most [`crate::DEFAULT_RESPONSE_BUDGET`] (32 MiB) of
    /// responses not yet written, all streams together; see [`AdsServer::response_budget`].
    pub fn new(
        cache: Arc<SnapshotCache>,
        status: Arc<SyncRegistry>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        AdsServer {
            cache,
            status,
            shutdown,
            budget: ResponseBudget::default(),
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            admission: Admission::Open,
            age: StreamAge::default(),
            limits: Limits::default(),
            refusals: Refusals::default(),
            streams: Slots::default(),
            proxies: Slots::default(),
        }
    }

    /// Holds every stream to `limits` (default [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Counts every client cut off in `refusals` (whose clones the caller reads).
    pub fn refusals(mut self, refusals: Refusals) -> Self {
        self.refusals = refusals;
        self
    }

    /// What a stream must show before it is served (default [`Admission::Open`]).
    pub fn admission(mut self, admission: Admission) -> Self {
        self.admission = admission;
        self
    }

    /// Ends each stream once it reaches `age` (default [`StreamAge::default`]: 30 minutes
    /// plus up to 10 %), and counts it in `age`'s clones. The proxy keeps its config and
    /// reconnects. Set the same maximum age on the tonic server
    /// (`Server::max_connection_age(age.max())`) so the connection is going away by then and
    /// the proxy reconnects over a new one, possibly to another replica.
    pub fn stream_age(mut self, age: StreamAge) -> Self {
        self.age = age;
        self
    }

    /// Cuts off a stream none of whose queued responses makes progress for `timeout`
    /// (default [`DEFAULT_WRITE_TIMEOUT`], 30 s): what is queued for it is dropped, which
    /// gives its share of the response budget back. A proxy that stops reading would
    /// otherwise hold it until its connection ends.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Bounds the bytes of responses built or encoded and not yet written by the proxies,
    /// across all streams: a stream waits for room before it builds, so a mass initial sync
    /// of large configs cannot hold every proxy's config at once. A stream holds at most one
    /// answer: it takes room for the next once the last is written. Streams whose proxy has
    /// read nothing yet share half the budget, so proxies that never read cannot hold up
    /// those that do. A response larger than half the budget waits for half and goes out.
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
            let path = request.uri().path().to_owned();
            let response = match path.as_str() {
                SOTW_PATH => server.open::<SotwStream>(request).await,
                DELTA_PATH => server.open::<DeltaStream>(request).await,
                other => Err(Status::unimplemented(format!("no method {other}"))),
            };
            Ok(response.unwrap_or_else(|status| {
                warn!(path, code = ?status.code(), reason = status.message(), "refused an ADS stream");
                status.into_http()
            }))
        })
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
        let peer = request.extensions().get::<Peer>().cloned();
        let slot = self.claim_stream(peer.as_ref().and_then(|p| p.remote))?;
        let mut incoming =
            Requests::<M::Req>::new(request.into_body(), self.limits.partial_message);
        let first = tokio::time::timeout(self.limits.first_request, incoming.message())
            .await
            .map_err(|_| {
                self.refusals.count(Refusal::FirstRequest);
                Status::deadline_exceeded(format!(
                    "no first request within {:?}",
                    self.limits.first_request
                ))
            })?
            .map_err(|e| read_failed(e, &self.refusals))?
            .ok_or_else(|| Status::invalid_argument("stream closed before its first request"))?;
        let node = M::node(&first)
            .ok_or_else(|| Status::invalid_argument("the first request must carry the node"))?;
        let proxy = proxy_of(node).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.admission.admit(peer.as_ref(), &proxy)?;
        let proxy_slot = self.claim_proxy(&proxy)?;
        let ledger = Arc::new(Ledger::default());
        // The slots go with the response body: a stream hyper still holds counts.
        let (tx, response) = outbox::outbox(OUTBOX, ledger.clone(), (slot, proxy_slot));
        let span = info_span!("xds", proxy = %proxy, mode = ?M::MODE);
        let serving = span.in_scope(|| self.clone().serve::<M>(proxy, first, incoming, tx, ledger));
        tokio::spawn(serving.instrument(span));
        Ok(response)
    }

    /// One more stream on the connection from `remote`, within its cap; the slot is given
    /// back when dropped. A client with no address (none in tests) is not counted.
    fn claim_stream(&self, remote: Option<SocketAddr>) -> Result<Option<Slot<SocketAddr>>, Status> {
        let Some(remote) = remote else {
            return Ok(None);
        };
        self.streams
            .claim(&remote, self.limits.streams_per_connection)
            .map(Some)
            .map_err(|open| {
                self.refusals.count(Refusal::Stream);
                Status::resource_exhausted(format!(
                    "this connection holds {open} ADS streams, the most it may"
                ))
            })
    }

    /// One more stream of `proxy`, within its cap: Envoy holds one, and one more while it
    /// reconnects, so a proxy that opens more gains nothing but what they hold of the server.
    fn claim_proxy(&self, proxy: &ObjectKey) -> Result<Slot<ObjectKey>, Status> {
        self.proxies
            .claim(proxy, self.limits.streams_per_proxy)
            .map_err(|open| {
                self.refusals.count(Refusal::ProxyStreams);
                Status::resource_exhausted(format!(
                    "proxy {proxy} holds {open} ADS streams, the most it may; a proxy needs one"
                ))
            })
    }
}

/// The status a request that could not be read ends its stream with; a message cut off by
/// its deadline is counted.
fn read_failed(e: grpc::ReadError, refusals: &Refusals) -> Status {
    if matches!(e, grpc::ReadError::Stalled(_)) {
        refusals.count(Refusal::PartialMessage);
    }
    e.into()
}
