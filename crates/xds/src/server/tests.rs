//! The service end to end, without a network: requests as the bytes of a request body, the
//! response read back frame by frame down to its status.

use std::convert::Infallible;

use bytes::Bytes;
use envoy_types::pb::envoy::{
    config::core::v3::Node,
    service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse},
};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};
use tonic::Code;

use super::*;
use remora_model::input::ObjectKey;

use crate::{limits::DEFAULT_STREAMS_PER_PROXY, snapshot::CLUSTER};

fn service() -> (AdsService, watch::Sender<bool>) {
    aging(StreamAge::default())
}

/// A service whose streams live as `age` says.
fn aging(age: StreamAge) -> (AdsService, watch::Sender<bool>) {
    let (stop, shutdown) = watch::channel(false);
    let server = AdsServer::new(SnapshotCache::new(), SyncRegistry::new(), shutdown);
    (server.stream_age(age).into_service(), stop)
}

/// A wildcard CDS request from `shop/cart-1`.
fn first_request() -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(Node {
            id: "shop/cart-1".into(),
            ..Default::default()
        }),
        type_url: CLUSTER.into(),
        ..Default::default()
    }
}

/// Opens a stream whose request body is `first`, then whatever goes into the sender, until
/// it is dropped. A stream refused at once gives its status instead.
async fn open(
    service: &mut AdsService,
    path: &str,
    first: Vec<u8>,
) -> Result<(mpsc::Sender<Bytes>, Body), Status> {
    open_from(service, path, first, None).await
}

/// [`open`], on a connection from `remote`.
async fn open_from(
    service: &mut AdsService,
    path: &str,
    first: Vec<u8>,
    remote: Option<SocketAddr>,
) -> Result<(mpsc::Sender<Bytes>, Body), Status> {
    let (tx, rx) = mpsc::channel(4);
    tx.send(first.into()).await.expect("open");
    let frames = ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut request = Request::builder()
        .method(http::Method::POST)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .body(Body::new(StreamBody::new(frames)))
        .expect("a request");
    request.extensions_mut().insert(Peer {
        remote,
        identity: None,
    });
    let response = service.call(request).await.expect("infallible");
    match Status::from_header_map(response.headers()) {
        Some(status) => Err(status),
        None => Ok((tx, response.into_body())),
    }
}

/// The next message of a response, or the status it ended with.
async fn next(body: &mut Body) -> Result<Bytes, Status> {
    let frame = body
        .frame()
        .await
        .expect("a message or the status")
        .expect("no transport error");
    match frame.into_data() {
        Ok(data) => Ok(data.slice(grpc::PREFIX..)),
        Err(frame) => {
            let trailers = frame.into_trailers().expect("trailers");
            Err(Status::from_header_map(&trailers).expect("a status in the trailers"))
        }
    }
}

/// A wildcard CDS request from `shop/cart-1`, incremental.
fn first_delta_request() -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: first_request().node,
        type_url: CLUSTER.into(),
        ..Default::default()
    }
}

fn framed(message: &impl prost::Message) -> Vec<u8> {
    grpc::frame(message).expect("frames")
}

/// Bytes framed as a message that do not decode as one: a field tag of 0 is invalid.
fn garbage() -> Vec<u8> {
    vec![0, 0, 0, 0, 2, 0, 0]
}

/// The status a SotW stream ends with when `sent` follows its first request, answered.
async fn ended_by(sent: Vec<u8>) -> Status {
    let (mut service, _stop) = service();
    let (tx, mut body) = open(&mut service, SOTW_PATH, framed(&first_request()))
        .await
        .expect("accepted");
    let cds = DiscoveryResponse::decode(next(&mut body).await.expect("a response"));
    assert_eq!(cds.expect("decodes").type_url, CLUSTER);
    tx.send(sent.into()).await.expect("open");
    let status = next(&mut body).await.expect_err("the end");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
}

#[tokio::test]
async fn a_malformed_request_mid_stream_ends_it_with_invalid_argument() {
    let status = ended_by(garbage()).await;
    assert!(
        status.message().starts_with("malformed request"),
        "{status:?}"
    );
}

/// Names are read as bytes, not decoded as strings: one that is not UTF-8 is refused all
/// the same.
#[tokio::test]
async fn a_state_of_the_world_name_that_is_not_utf8_ends_the_stream() {
    let broken = crate::sotw::SotwRequest {
        type_url: crate::snapshot::ENDPOINT.into(),
        resource_names: vec![Bytes::from_static(b"ok"), Bytes::from_static(b"\xff")],
        ..Default::default()
    };
    let status = ended_by(framed(&broken)).await;
    assert!(status.message().contains("not UTF-8"), "{status:?}");
}

#[tokio::test]
async fn a_malformed_first_request_is_refused_with_invalid_argument() {
    let (mut service, _stop) = service();
    for path in [SOTW_PATH, DELTA_PATH] {
        let status = open(&mut service, path, garbage())
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
    }
    let without_node = DeltaDiscoveryRequest {
        type_url: CLUSTER.into(),
        ..Default::default()
    };
    let status = open(&mut service, DELTA_PATH, framed(&without_node))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("node"), "{status:?}");
}

#[tokio::test]
async fn a_request_stream_cut_inside_a_request_ends_with_invalid_argument() {
    let (mut service, _stop) = service();
    let (tx, mut body) = open(&mut service, SOTW_PATH, framed(&first_request()))
        .await
        .expect("accepted");
    next(&mut body).await.expect("a response");
    let mut cut = framed(&first_request());
    cut.truncate(cut.len() - 3);
    tx.send(cut.into()).await.expect("open");
    drop(tx);
    let status = next(&mut body).await.expect_err("the end");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

#[tokio::test]
async fn a_proxy_that_closes_its_side_ends_the_stream_without_error() {
    let (mut service, _stop) = service();
    let (tx, mut body) = open(&mut service, SOTW_PATH, framed(&first_request()))
        .await
        .expect("accepted");
    next(&mut body).await.expect("a response");
    drop(tx);
    let status = next(&mut body).await.expect_err("the end");
    assert_eq!(status.code(), Code::Ok, "{status:?}");
}

#[tokio::test(start_paused = true)]
async fn a_stream_ends_without_error_once_it_reaches_its_age_and_is_counted() {
    let age = StreamAge::new(Duration::from_secs(10)).jitter(Duration::from_secs(2));
    let (mut service, _stop) = aging(age.clone());
    let (_tx, mut body) = open(&mut service, SOTW_PATH, framed(&first_request()))
        .await
        .expect("accepted");
    next(&mut body).await.expect("a response");
    let early = tokio::time::timeout(Duration::from_secs(9), next(&mut body)).await;
    assert!(early.is_err(), "ended before its age: {early:?}");
    assert_eq!(age.ended(), 0);
    let status = tokio::time::timeout(Duration::from_secs(4), next(&mut body))
        .await
        .expect("ended within the jitter")
        .expect_err("the end");
    assert_eq!(status.code(), Code::Ok, "{status:?}");
    assert_eq!(age.ended(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stream_ended_by_a_stop_is_not_counted_as_aged() {
    let age = StreamAge::new(Duration::from_secs(10));
    let (mut service, stop) = aging(age.clone());
    let (_tx, mut body) = open(&mut service, DELTA_PATH, framed(&first_delta_request()))
        .await
        .expect("accepted");
    next(&mut body).await.expect("a response");
    stop.send_replace(true);
    let status = next(&mut body).await.expect_err("the end");
    assert_eq!(status.code(), Code::Ok, "{status:?}");
    assert_eq!(age.ended(), 0);
}

/// A service held to `limits`, counting its refusals in the returned counters.
fn limited(limits: Limits) -> (AdsService, Refusals, watch::Sender<bool>) {
    let (stop, shutdown) = watch::channel(false);
    let refusals = Refusals::default();
    let server = AdsServer::new(SnapshotCache::new(), SyncRegistry::new(), shutdown)
        .limits(limits)
        .refusals(refusals.clone());
    (server.into_service(), refusals, stop)
}

fn endpoints(names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: crate::snapshot::ENDPOINT.into(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        ..first_request()
    }
}

#[tokio::test(start_paused = true)]
async fn a_stream_without_a_first_request_or_with_half_a_message_is_cut_off_and_counted() {
    let limits = Limits {
        first_request: Duration::from_secs(5),
        partial_message: Duration::from_secs(3),
        ..Limits::default()
    };
    let (mut service, refusals, _stop) = limited(limits);
    let status = within(open(&mut service, SOTW_PATH, Vec::new()))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(refusals.get(Refusal::FirstRequest), 1);
    // A prefix that announces a large message, and ten of its bytes.
    let mut half = vec![0, 0, 0x10, 0, 0];
    half.extend([1; 10]);
    let status = within(open(&mut service, DELTA_PATH, half))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("in full"), "{status:?}");
    assert_eq!(refusals.get(Refusal::PartialMessage), 1);
    // Mid-stream too.
    let (tx, mut body) = open(&mut service, SOTW_PATH, framed(&first_request()))
        .await
        .expect("accepted");
    next(&mut body).await.expect("a response");
    tx.send(Bytes::from_static(&[0, 0, 1, 0, 0, 7]))
        .await
        .expect("open");
    let status = within(next(&mut body)).await.expect_err("the end");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(refusals.get(Refusal::PartialMessage), 2);
}

#[tokio::test]
async fn a_stream_that_subscribes_to_more_names_than_the_limit_is_ended_and_counted() {
    let limits = Limits {
        subscriptions: 3,
        ..Limits::default()
    };
    let (mut service, refusals, _stop) = limited(limits);
    // State of the world: one request naming too many.
    let (_tx, mut body) = open(
        &mut service,
        SOTW_PATH,
        framed(&endpoints(&["a", "b", "c", "d"])),
    )
    .await
    .expect("accepted");
    let status = next(&mut body).await.expect_err("the end");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(refusals.get(Refusal::Subscriptions), 1);
    // Incremental: requests that add up to too many, each within the limit.
    let subscribe = |names: &[&str]| DeltaDiscoveryRequest {
        type_url: crate::snapshot::ENDPOINT.into(),
        resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
        ..first_delta_request()
    };
    let (tx, mut body) = open(&mut service, DELTA_PATH, framed(&subscribe(&["a", "b"])))
        .await
        .expect("accepted");
    next(&mut body).await.expect("a response");
    tx.send(framed(&subscribe(&["c", "d"])).into())
        .await
        .expect("open");
    let status = loop {
        match next(&mut body).await {
            Ok(_) => continue,
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(refusals.get(Refusal::Subscriptions), 2);
}

#[tokio::test]
async fn a_connection_holds_at_most_its_streams_and_gets_a_slot_back_when_one_ends() {
    let limits = Limits {
        streams_per_connection: 2,
        streams_per_proxy: 10,
        ..Limits::default()
    };
    let (mut service, refusals, _stop) = limited(limits);
    let here = SocketAddr::from(([127, 0, 0, 1], 40000));
    let there = SocketAddr::from(([127, 0, 0, 1], 40001));
    let (first, mut first_body) = open_on(&mut service, here).await.expect("accepted");
    let (_second, _second_body) = open_on(&mut service, here).await.expect("accepted");
    let status = open_on(&mut service, here).await.expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(refusals.get(Refusal::Stream), 1);
    // Another connection has its own.
    open_on(&mut service, there).await.expect("accepted");
    // Once a stream ends and its response is dropped, its connection may open another.
    drop(first);
    while next(&mut first_body).await.is_ok() {}
    drop(first_body);
    let mut reopened = None;
    for _ in 0..100 {
        match open_on(&mut service, here).await {
            Ok(stream) => {
                reopened = Some(stream);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert!(reopened.is_some(), "the slot came back");
}

#[tokio::test]
async fn a_proxy_holds_at_most_its_streams_over_all_its_connections() {
    let (mut service, refusals, _stop) = limited(Limits::default());
    let mut held = Vec::new();
    for port in 0..DEFAULT_STREAMS_PER_PROXY as u16 {
        let remote = SocketAddr::from(([127, 0, 0, 1], 41000 + port));
        held.push(open_on(&mut service, remote).await.expect("accepted"));
    }
    let elsewhere = SocketAddr::from(([127, 0, 0, 1], 42000));
    let status = open_on(&mut service, elsewhere).await.expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("shop/cart-1"), "{status:?}");
    assert_eq!(refusals.get(Refusal::ProxyStreams), 1);
    // Another proxy on that connection is served.
    let mut other = first_request();
    other.node.as_mut().expect("a node").id = "shop/cart-2".into();
    open_from(&mut service, SOTW_PATH, framed(&other), Some(elsewhere))
        .await
        .expect("accepted");
    // Once one of its streams is gone, the proxy may open another.
    held.pop();
    open_on(&mut service, elsewhere).await.expect("accepted");
}

/// A state-of-the-world stream on the connection from `remote`.
async fn open_on(
    service: &mut AdsService,
    remote: SocketAddr,
) -> Result<(mpsc::Sender<Bytes>, Body), Status> {
    open_from(service, SOTW_PATH, framed(&first_request()), Some(remote)).await
}

/// `f`, which must complete within a minute (of paused time, in a paused test).
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("done within a minute")
}

#[tokio::test(start_paused = true)]
async fn a_proxy_that_reads_nothing_is_cut_off_its_frames_dropped_and_counted() {
    let (_stop, shutdown) = watch::channel(false);
    let refusals = Refusals::default();
    let cache = SnapshotCache::new();
    cache.set(
        &ObjectKey::new("shop", "cart-1"),
        Arc::new(crate::snapshot::tests::mesh_v1()),
    );
    let server = AdsServer::new(cache, SyncRegistry::new(), shutdown)
        .refusals(refusals.clone())
        .write_timeout(Duration::from_secs(30));
    let budget = server.budget.clone();
    let full = budget.available();
    let mut service = server.into_service();
    let (_requests, mut body) = open(&mut service, SOTW_PATH, framed(&first_request()))
        .await
        .expect("accepted");
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert!(budget.available() < full, "the clusters wait to be read");
    assert_eq!(refusals.get(Refusal::SlowReader), 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(refusals.get(Refusal::SlowReader), 1);
    assert_eq!(budget.available(), full, "its frames were dropped");
    // Polled again, the body fails, which makes hyper reset the stream.
    let reset = body.frame().await.expect("a frame").expect_err("reset");
    assert_eq!(reset.code(), Code::DeadlineExceeded);
}

/// A state-of-the-world CDS request from `id`, with what it ACKs.
fn cds_request(id: &str, acked: Option<&DiscoveryResponse>) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(Node {
            id: id.into(),
            ..Default::default()
        }),
        type_url: CLUSTER.into(),
        version_info: acked.map(|r| r.version_info.clone()).unwrap_or_default(),
        response_nonce: acked.map(|r| r.nonce.clone()).unwrap_or_default(),
        ..Default::default()
    }
}

/// The cluster names of the next response, which is dropped, and so written, at once.
async fn next_clusters(body: &mut Body) -> DiscoveryResponse {
    let bytes = next(body).await.expect("a response");
    DiscoveryResponse::decode(bytes).expect("decodes")
}

#[tokio::test(start_paused = true)]
async fn proxies_that_never_read_do_not_hold_up_one_that_reads() {
    let (_stop, shutdown) = watch::channel(false);
    let cache = SnapshotCache::new();
    let mesh = Arc::new(crate::snapshot::tests::mesh_v1());
    let ids = ["shop/cart-1", "shop/idle-1", "shop/idle-2", "shop/idle-3"];
    for id in ids {
        let (namespace, name) = id.split_once('/').expect("namespace/name");
        cache.set(&ObjectKey::new(namespace, name), mesh.clone());
    }
    // Far less than one answer: each takes as much as one reservation may.
    let server = AdsServer::new(cache.clone(), SyncRegistry::new(), shutdown)
        .response_budget(10)
        .write_timeout(Duration::from_secs(30));
    let budget = server.budget.clone();
    let mut service = server.into_service();
    let (requests, mut reader) = open(&mut service, SOTW_PATH, framed(&cds_request(ids[0], None)))
        .await
        .expect("accepted");
    let first = next_clusters(&mut reader).await;
    requests
        .send(framed(&cds_request(ids[0], Some(&first))).into())
        .await
        .expect("open");
    // Three proxies that read nothing of their first answers.
    let mut idle = Vec::new();
    for id in &ids[1..] {
        let stream = open(&mut service, SOTW_PATH, framed(&cds_request(id, None)));
        idle.push(stream.await.expect("accepted"));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(budget.available(), 5, "one of them holds its half");
    // The reader's clusters change; its answer goes out long before the idle are cut off.
    let fewer = crate::snapshot::tests::two_routes("1", "1", false);
    cache.set(&ObjectKey::new("shop", "cart-1"), Arc::new(fewer));
    let changed = tokio::time::timeout(Duration::from_secs(5), next_clusters(&mut reader))
        .await
        .expect("answered while the idle proxies still hold their share");
    assert_eq!(changed.resources.len(), 1, "cluster a alone");
}
