//! The simulated proxies' side of gRPC, on `h2` directly rather than through tonic and
//! hyper, for two reasons.
//!
//! - Memory: tonic keeps a decode buffer per stream as large as the largest message the
//!   stream carried, and ten thousand proxies each keeping a buffer the size of their
//!   cluster set was most of the fleet's memory. Here each response gets an allocation of
//!   exactly its size (none at all when one chunk holds it), decoded into a message that
//!   keeps only what a proxy acts on, then dropped.
//! - CPU: the fleet shares the measured machine's cores with the server. Through hyper, a
//!   response and its ACK went through three tasks (the connection's, the proxy's, and one
//!   that copies the request body into the stream). Here the proxy's own task drives its
//!   connection ([`Driver`]): it reads the response, hands the ACK over and writes it in one
//!   turn.
//!
//! Plain HTTP/2 only: the simulated proxies present no certificates.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use h2::{RecvStream, SendStream, client::SendRequest};
use http::{HeaderMap, Method, Request, StatusCode, header::CONTENT_TYPE};
use remora_xds::grpc::Framer;
use tokio::net::TcpStream;
use tonic::{Code, Status};

/// `DiscoveryResponse` with only what a proxy ACKs and subscribes by; prost skips the rest
/// of the encoding without allocating it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SotwResponse {
    #[prost(string, tag = "1")]
    pub version_info: String,
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<Packed>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub nonce: String,
}

/// `DeltaDiscoveryResponse`, likewise reduced.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeltaResponse {
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<DeltaResource>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub nonce: String,
    #[prost(string, repeated, tag = "6")]
    pub removed_resources: Vec<String>,
}

/// `envoy.service.discovery.v3.Resource`: the stated version and name, and the body.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeltaResource {
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(message, optional, tag = "2")]
    pub resource: Option<Packed>,
    #[prost(string, tag = "3")]
    pub name: String,
}

/// A `google.protobuf.Any` reduced to its value, which decoding from `Bytes` slices out of
/// the response instead of copying.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Packed {
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// The flow-control windows a client grants the server, in bytes.
#[derive(Clone, Copy, Debug)]
pub struct Windows {
    /// Of each stream.
    pub stream: u32,
    /// Of the whole connection.
    pub connection: u32,
}

impl Windows {
    /// hyper's client defaults, which the fleet had through tonic. A proxy gives the
    /// window back as it reads, so one that reads never holds the server back.
    pub const READING: Windows = Windows {
        stream: 2 * 1024 * 1024,
        connection: 5 * 1024 * 1024,
    };
}

/// Why a connection or a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The TCP connection could not be made or set up.
    #[error("cannot connect: {0}")]
    Connect(#[source] io::Error),
    /// HTTP/2 failed: the connection broke, or the server reset the stream.
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    /// The server answered with a gRPC status other than OK, or a message did not frame.
    #[error("{0}")]
    Status(#[from] Status),
    /// The server answered with an HTTP status other than 200.
    #[error("the server answered HTTP {0}")]
    Http(StatusCode),
    /// The connection ended while a stream still needed it.
    #[error("the connection ended")]
    Closed,
    /// The response ended inside a message.
    #[error("the stream ended inside a message")]
    Truncated,
}

/// Opens an HTTP/2 connection to `address`. Nothing moves on it unless its [`Driver`] is
/// polled.
pub async fn connect(address: SocketAddr, windows: Windows) -> Result<(Client, Driver), WireError> {
    let tcp = TcpStream::connect(address)
        .await
        .map_err(WireError::Connect)?;
    tcp.set_nodelay(true).map_err(WireError::Connect)?;
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(windows.stream)
        .initial_connection_window_size(windows.connection)
        .enable_push(false)
        .handshake(tcp)
        .await?;
    Ok((
        Client(send),
        Driver {
            connection,
            ended: false,
        },
    ))
}

/// What opens streams on a connection.
pub struct Client(SendRequest<Bytes>);

/// A connection itself: polled, it writes what its streams queued and reads what the server
/// sent them. Completes when the connection ends, and at once when polled after that.
pub struct Driver {
    connection: h2::client::Connection<TcpStream, Bytes>,
    ended: bool,
}

impl Future for Driver {
    type Output = Result<(), WireError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(Err(WireError::Closed));
        }
        let ended = std::task::ready!(Pin::new(&mut this.connection).poll(cx));
        this.ended = true;
        Poll::Ready(ended.map_err(WireError::from))
    }
}

impl Driver {
    /// Runs `work` while driving the connection; the connection ending first fails it.
    pub async fn alongside<T>(
        &mut self,
        work: impl Future<Output = Result<T, WireError>>,
    ) -> Result<T, WireError> {
        tokio::select! {
            biased;
            ended = &mut *self => Err(ended.err().unwrap_or(WireError::Closed)),
            done = work => done,
        }
    }
}

impl Client {
    /// Opens a bidirectional stream of `path` and queues `first`, framed messages, on it.
    /// The response comes through [`Opening`] once the connection is driven.
    pub async fn open(
        &mut self,
        path: &'static str,
        first: impl IntoIterator<Item = Bytes>,
    ) -> Result<(Outbound, Opening), WireError> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(CONTENT_TYPE, "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut send = self.0.clone().ready().await?;
        let (response, stream) = send.send_request(request, false)?;
        let mut outbound = Outbound(stream);
        for message in first {
            outbound.send(message)?;
        }
        Ok((outbound, Opening(response)))
    }
}

/// A stream's response on its way.
pub struct Opening(h2::client::ResponseFuture);

impl Opening {
    /// The response stream, once the server answered.
    pub async fn response(self) -> Result<Inbound, WireError> {
        let response = self.0.await?;
        // A call refused before any message is a trailers-only response: its status is in
        // the headers.
        refused(response.headers())?;
        if response.status() != StatusCode::OK {
            return Err(WireError::Http(response.status()));
        }
        Ok(Inbound {
            body: response.into_body(),
            // Responses are as large as a proxy's whole config; the server bounds them.
            framer: Framer::new(usize::MAX),
            chunk: Bytes::new(),
        })
    }
}

/// The request side of a stream.
pub struct Outbound(SendStream<Bytes>);

impl Outbound {
    /// Queues a framed message; the connection writes it when next driven. Requests are an
    /// ACK and a subscription change at most per response, so the queue stays short.
    pub fn send(&mut self, framed: Bytes) -> Result<(), WireError> {
        Ok(self.0.send_data(framed, false)?)
    }
}

/// The response stream.
pub struct Inbound {
    body: RecvStream,
    framer: Framer,
    /// What is left of the last chunk received.
    chunk: Bytes,
}

impl Inbound {
    /// The next message, or `None` when the server ended the stream without error.
    /// Cancel-safe: what was read stays in `self`.
    pub async fn message(&mut self) -> Result<Option<Bytes>, WireError> {
        loop {
            let next = self.framer.next(&mut self.chunk)?;
            if self.chunk.is_empty() {
                // Even an empty slice keeps the whole buffer it was cut from, for as long as
                // the stream stays idle.
                self.chunk = Bytes::new();
            }
            if let Some(message) = next {
                return Ok(Some(message));
            }
            match self.body.data().await {
                Some(data) => {
                    let data = data?;
                    // Read, so the server may send as much again.
                    self.body.flow_control().release_capacity(data.len())?;
                    self.chunk = data;
                }
                None => return self.ended().await,
            }
        }
    }

    /// The end of the response: its status, when every message came whole.
    async fn ended(&mut self) -> Result<Option<Bytes>, WireError> {
        if !self.framer.is_idle() {
            return Err(WireError::Truncated);
        }
        if let Some(trailers) = self.body.trailers().await? {
            refused(&trailers)?;
        }
        Ok(None)
    }
}

/// The gRPC status in `headers`, as an error when it is not OK.
fn refused(headers: &HeaderMap) -> Result<(), WireError> {
    match Status::from_header_map(headers) {
        Some(status) if status.code() != Code::Ok => Err(status.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::{
        envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse, Resource},
        google::protobuf::Any,
    };
    use prost::Message;
    use std::net::Ipv4Addr;

    use super::*;

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn messages_come_out_whole_whatever_the_chunks() {
        let messages: [&[u8]; 3] = [b"first", b"", &[7; 40]];
        let stream: Vec<u8> = messages.iter().flat_map(|m| framed(m)).collect();
        for size in [1, 3, 5, 6, 17, stream.len()] {
            let mut framer = Framer::new(usize::MAX);
            let mut out = Vec::new();
            for chunk in stream.chunks(size) {
                let mut chunk = Bytes::copy_from_slice(chunk);
                while let Some(m) = framer.next(&mut chunk).expect("uncompressed") {
                    out.push(m);
                }
                assert!(chunk.is_empty(), "chunks of {size}: bytes left over");
            }
            assert_eq!(out, messages, "chunks of {size}");
            assert!(framer.is_idle());
        }
        let mut compressed = Bytes::from(vec![1, 0, 0, 0, 0]);
        assert!(Framer::new(usize::MAX).next(&mut compressed).is_err());
    }

    #[test]
    fn the_reduced_responses_read_what_envoy_would_ack() {
        let any = |value: &[u8]| Any {
            type_url: "type.googleapis.com/x".into(),
            value: value.to_vec(),
        };
        let full = DiscoveryResponse {
            version_info: "v7".into(),
            resources: vec![any(b"one"), any(b"two")],
            type_url: "t".into(),
            nonce: "n3".into(),
            canary: true,
            ..Default::default()
        };
        let light = SotwResponse::decode(Bytes::from(full.encode_to_vec())).expect("decodes");
        assert_eq!(
            (&*light.version_info, &*light.type_url, &*light.nonce),
            ("v7", "t", "n3")
        );
        let values: Vec<&[u8]> = light.resources.iter().map(|r| &*r.value).collect();
        assert_eq!(values, [b"one".as_slice(), b"two"]);

        let full = DeltaDiscoveryResponse {
            system_version_info: "ignored".into(),
            resources: vec![Resource {
                name: "a".into(),
                version: "00ff".into(),
                resource: Some(any(b"body")),
                aliases: vec!["alias".into()],
                ..Default::default()
            }],
            type_url: "t".into(),
            nonce: "n4".into(),
            removed_resources: vec!["gone".into()],
            ..Default::default()
        };
        let light = DeltaResponse::decode(Bytes::from(full.encode_to_vec())).expect("decodes");
        assert_eq!((&*light.type_url, &*light.nonce), ("t", "n4"));
        assert_eq!(light.removed_resources, ["gone"]);
        let r = &light.resources[0];
        assert_eq!((&*r.name, &*r.version), ("a", "00ff"));
        assert_eq!(r.resource.as_ref().map(|p| &*p.value), Some(&b"body"[..]));
    }

    /// A server on loopback that hands its first stream to `respond` and drives its
    /// connection until the client goes: the client's side, tested against `h2` itself.
    async fn serve_one<F, Fut>(respond: F) -> SocketAddr
    where
        F: FnOnce(h2::server::SendResponse<Bytes>, RecvStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("binds on loopback");
        let address = listener.local_addr().expect("has an address");
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("the client connects");
            let mut connection = h2::server::handshake(tcp).await.expect("HTTP/2");
            let (request, send) = connection
                .accept()
                .await
                .expect("a stream")
                .expect("a request");
            tokio::spawn(respond(send, request.into_body()));
            while let Some(Ok(_)) = connection.accept().await {}
        });
        address
    }

    fn grpc_response() -> http::Response<()> {
        http::Response::builder()
            .header(CONTENT_TYPE, "application/grpc")
            .body(())
            .expect("a response")
    }

    /// The client's side of one stream: connects, opens it with `first`, and reads every
    /// message until the stream ends, driving the connection all along. Bounded in time: a
    /// client that stops giving the window back would wait forever.
    async fn read_all(address: SocketAddr, first: Bytes) -> (Vec<Bytes>, Result<(), WireError>) {
        tokio::time::timeout(
            std::time::Duration::from_secs(20),
            read_stream(address, first),
        )
        .await
        .expect("the stream ends within 20 s")
    }

    async fn read_stream(address: SocketAddr, first: Bytes) -> (Vec<Bytes>, Result<(), WireError>) {
        let (mut client, mut driver) = connect(address, Windows::READING).await.expect("connects");
        let opened = driver
            .alongside(async {
                let (outbound, opening) = client.open("/test", [first]).await?;
                Ok((outbound, opening.response().await?))
            })
            .await;
        let (_outbound, mut inbound) = match opened {
            Ok(opened) => opened,
            Err(e) => return (Vec::new(), Err(e)),
        };
        let mut messages = Vec::new();
        loop {
            match driver.alongside(inbound.message()).await {
                Ok(Some(m)) => messages.push(m),
                Ok(None) => return (messages, Ok(())),
                Err(e) => return (messages, Err(e)),
            }
        }
    }

    #[tokio::test]
    async fn a_stream_reads_past_its_window_and_a_status_in_the_trailers_fails_it() {
        // Three times the stream's window: the server gets further only as the client
        // gives back what it read.
        let message = Bytes::from(vec![7; 64 * 1024]);
        let count = 3 * Windows::READING.stream as usize / message.len();
        let sent = message.clone();
        let address = serve_one(move |mut send, mut requests| async move {
            let first = requests.data().await.expect("a request").expect("readable");
            assert_eq!(
                &first[..],
                &framed(b"hello")[..],
                "the first request as queued"
            );
            let mut stream = send.send_response(grpc_response(), false).expect("answers");
            for _ in 0..count {
                stream
                    .send_data(Bytes::from(framed(&sent)), false)
                    .expect("queued");
            }
            let mut trailers = HeaderMap::new();
            Status::resource_exhausted("enough")
                .add_header(&mut trailers)
                .expect("a status header");
            stream.send_trailers(trailers).expect("sent");
        })
        .await;
        let (messages, ended) = read_all(address, Bytes::from(framed(b"hello"))).await;
        assert_eq!(messages.len(), count);
        assert!(messages.iter().all(|m| *m == message));
        match ended {
            Err(WireError::Status(s)) => assert_eq!(s.code(), Code::ResourceExhausted),
            other => panic!("expected the trailers' status, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_stream_that_ends_inside_a_message_fails() {
        let address = serve_one(|mut send, _requests| async move {
            let mut stream = send.send_response(grpc_response(), false).expect("answers");
            let whole = framed(b"a message cut short");
            stream
                .send_data(Bytes::copy_from_slice(&whole[..9]), true)
                .expect("sent");
        })
        .await;
        let (messages, ended) = read_all(address, Bytes::from(framed(b"hi"))).await;
        assert!(messages.is_empty());
        assert!(matches!(ended, Err(WireError::Truncated)), "{ended:?}");
    }

    #[tokio::test]
    async fn a_refusal_before_any_message_fails_the_opening() {
        let address = serve_one(|mut send, _requests| async move {
            let mut response = grpc_response();
            Status::permission_denied("not you")
                .add_header(response.headers_mut())
                .expect("a status header");
            send.send_response(response, true).expect("answers");
        })
        .await;
        let (messages, ended) = read_all(address, Bytes::from(framed(b"hi"))).await;
        assert!(messages.is_empty());
        match ended {
            Err(WireError::Status(s)) => assert_eq!(s.code(), Code::PermissionDenied),
            other => panic!("expected the refusal, got {other:?}"),
        }
    }
}
