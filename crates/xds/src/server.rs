//! The tonic side of ADS: each stream runs its own task that feeds requests and snapshots to
//! a state machine and writes out what it returns. Nothing here knows about Kubernetes.

use std::{pin::Pin, sync::Arc};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_server::{
        AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
    },
};
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    cache::SnapshotCache,
    delta::DeltaStream,
    proxy::ProxyId,
    snapshot::Snapshot,
    sotw::SotwStream,
    status::{Mode, StatusRegistry, TypeStatus},
};

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
}

impl AdsServer {
    pub fn new(
        cache: Arc<SnapshotCache>,
        status: Arc<StatusRegistry>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        AdsServer {
            cache,
            status,
            shutdown,
        }
    }

    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
    }
}

/// One protocol flavour's state machine, so both share the stream loop.
trait Machine: Default + Send + 'static {
    type Req: Send + 'static;
    type Resp: Send + 'static;
    const MODE: Mode;
    fn node(req: &Self::Req) -> Option<&envoy_types::pb::envoy::config::core::v3::Node>;
    fn on_request(&mut self, req: &Self::Req, snapshot: &Snapshot) -> Vec<Self::Resp>;
    fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<Self::Resp>;
    fn status(&self) -> Vec<(&'static str, TypeStatus)>;
    fn describe(resp: &Self::Resp) -> (&str, usize, &str);
}

impl Machine for SotwStream {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;
    const MODE: Mode = Mode::StateOfTheWorld;
    fn node(req: &DiscoveryRequest) -> Option<&envoy_types::pb::envoy::config::core::v3::Node> {
        req.node.as_ref()
    }
    fn on_request(&mut self, req: &DiscoveryRequest, s: &Snapshot) -> Vec<DiscoveryResponse> {
        SotwStream::on_request(self, req, s)
    }
    fn on_snapshot(&mut self, s: &Snapshot) -> Vec<DiscoveryResponse> {
        SotwStream::on_snapshot(self, s)
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
    fn on_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
        s: &Snapshot,
    ) -> Vec<DeltaDiscoveryResponse> {
        DeltaStream::on_request(self, req, s)
    }
    fn on_snapshot(&mut self, s: &Snapshot) -> Vec<DeltaDiscoveryResponse> {
        DeltaStream::on_snapshot(self, s)
    }
    fn status(&self) -> Vec<(&'static str, TypeStatus)> {
        DeltaStream::status(self)
    }
    fn describe(r: &DeltaDiscoveryResponse) -> (&str, usize, &str) {
        (&r.type_url, r.resources.len(), &r.system_version_info)
    }
}

type Outgoing<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl AdsServer {
    /// Reads the first request for the node, then serves the stream on its own task.
    async fn open<M: Machine>(
        &self,
        mut incoming: Streaming<M::Req>,
    ) -> Result<Outgoing<M::Resp>, Status> {
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
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn serve<M: Machine>(
        self,
        proxy: ProxyId,
        first: M::Req,
        mut incoming: Streaming<M::Req>,
        tx: mpsc::Sender<Result<M::Resp, Status>>,
    ) {
        let stream = self.status.connected(&proxy, M::MODE);
        info!("proxy connected");
        let mut snapshots = self.cache.subscribe(&proxy);
        let mut shutdown = self.shutdown.clone();
        let mut machine = M::default();
        let mut pending = Some(first);
        loop {
            let responses = if let Some(req) = pending.take() {
                let snapshot = snapshots.borrow_and_update().clone();
                machine.on_request(&req, &snapshot)
            } else {
                tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => break,
                    msg = incoming.message() => match msg {
                        Ok(Some(req)) => {
                            pending = Some(req);
                            continue;
                        }
                        Ok(None) => break,
                        Err(e) => {
                            debug!(error = %e, "stream ended");
                            break;
                        }
                    },
                    changed = snapshots.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let snapshot = snapshots.borrow_and_update().clone();
                        machine.on_snapshot(&snapshot)
                    }
                }
            };
            let mut closed = false;
            for r in responses {
                let (type_url, count, version) = M::describe(&r);
                debug!(type_url, count, version, "sending");
                if tx.send(Ok(r)).await.is_err() {
                    closed = true;
                    break;
                }
            }
            let status = machine.status();
            for (type_url, s) in &status {
                let before = self
                    .status
                    .get(&proxy)
                    .and_then(|p| p.types.get(type_url).cloned());
                if let Some(n) = &s.nack
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
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = Outgoing<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Outgoing<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        self.open::<SotwStream>(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        self.open::<DeltaStream>(request.into_inner())
            .await
            .map(Response::new)
    }
}
