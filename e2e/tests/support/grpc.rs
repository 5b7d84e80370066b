//! gRPC over cleartext HTTP/2 (prior knowledge) on loopback: an upstream that says who it is
//! and a client that reports what came back. Messages are framed by hand and the payload is
//! plain text, so a test reads the reply without protobuf and sees exactly what crossed the
//! proxy: status, headers, the first message and the trailers.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    future::Ready,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::{BufMut, Bytes, BytesMut};
use http::{
    HeaderMap, HeaderName, HeaderValue, Request, Response,
    header::{CONTENT_TYPE, TE},
};
use http_body_util::{BodyExt, Full, combinators::WithTrailers};
use hyper::{body::Incoming, server::conn::http2, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    net::{TcpListener, TcpStream},
    task::{JoinHandle, JoinSet},
};

/// How long one call may take, connecting included.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A gRPC upstream over h2c that answers every call with one message `<name> <path>` and
/// counts what it served.
pub struct GrpcUpstream {
    pub name: String,
    pub served: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

/// Stopping the upstream also ends its open connections: aborting the accept task drops the
/// set that holds them.
impl Drop for GrpcUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GrpcUpstream {
    /// Listens on `addr` and serves HTTP/2 only, each connection in a task of its own.
    pub async fn start(name: &str, addr: SocketAddr) -> GrpcUpstream {
        let listener = TcpListener::bind(addr).await.expect("bind gRPC upstream");
        let served = Arc::new(AtomicU64::new(0));
        let (who, count) = (Arc::<str>::from(name), served.clone());
        let task = tokio::spawn(async move {
            // Owned here, not detached: a pooled HTTP/2 connection from a proxy would
            // otherwise outlive the upstream and keep answering.
            let mut connections = JoinSet::new();
            loop {
                match listener.accept().await {
                    Ok((conn, _)) => {
                        connections.spawn(serve(conn, who.clone(), count.clone()));
                    }
                    // A connection that failed before it was accepted; the next may not.
                    Err(e) => eprintln!("gRPC upstream {who}: accept failed: {e}"),
                }
                while connections.try_join_next().is_some() {}
            }
        });
        GrpcUpstream {
            name: name.into(),
            served,
            task,
        }
    }
}

async fn serve(conn: TcpStream, name: Arc<str>, served: Arc<AtomicU64>) {
    let who = name.clone();
    let service = service_fn(move |req| answer(name.clone(), served.clone(), req));
    let served = http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(conn), service)
        .await;
    if let Err(e) = served {
        eprintln!("gRPC upstream {who}: connection failed: {e}");
    }
}

/// A body of one message followed by trailers.
type ReplyBody = WithTrailers<Full<Bytes>, Ready<Option<Result<HeaderMap, Infallible>>>>;

async fn answer(
    name: Arc<str>,
    served: Arc<AtomicU64>,
    req: Request<Incoming>,
) -> Result<Response<ReplyBody>, hyper::Error> {
    served.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    // Read the request to its end, as a real server does, before the reply ends the stream.
    body.collect().await?;
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let message = frame(format!("{name} {}", parts.uri.path()).as_bytes());
    let mut reply =
        Response::new(Full::new(message).with_trailers(std::future::ready(Some(Ok(trailers)))));
    let headers = reply.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(
        "x-upstream",
        HeaderValue::from_str(&name).expect("upstream name is a header value"),
    );
    // Echoed so a test sees the headers a proxy added, changed or removed on the way.
    for (k, v) in &parts.headers {
        if k.as_str().starts_with("x-") {
            let echo = HeaderName::try_from(format!("echo-{k}")).expect("prefixed header name");
            headers.append(echo, v.clone());
        }
    }
    Ok(reply)
}

/// One gRPC length-prefixed message: a zero byte (not compressed), the payload's length as
/// four big-endian bytes, then the payload.
fn frame(payload: &[u8]) -> Bytes {
    let len = u32::try_from(payload.len()).expect("gRPC message under 4 GiB");
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.put_u8(0);
    out.put_u32(len);
    out.put_slice(payload);
    out.freeze()
}

/// The payload of the first message in `body`. A body that is no gRPC message (a plain-text
/// error page) comes back whole, so a test can still read it.
fn first_message(body: &[u8]) -> &[u8] {
    let Some((prefix, rest)) = body.split_first_chunk::<5>() else {
        return body;
    };
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    rest.get(..len).unwrap_or(body)
}

/// What one gRPC call got back.
#[derive(Debug)]
pub struct GrpcReply {
    pub http_status: u16,
    /// From the trailers, or from the headers of a trailers-only reply; `None` when neither
    /// has one (a proxy's own HTTP error may carry none).
    pub grpc_status: Option<String>,
    /// The first message's payload as text; empty when the body is.
    pub message: String,
    /// The response headers (not the trailers), names in lower case.
    pub headers: Vec<(String, String)>,
}

impl GrpcReply {
    /// The first response header called `name`, whatever its case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One unary call with an empty message on a connection of its own; `:authority` is
/// `authority`. Gives up after 5 s.
pub async fn grpc_call(
    entry: SocketAddr,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<GrpcReply, String> {
    tokio::time::timeout(CALL_TIMEOUT, call(entry, authority, path, headers))
        .await
        .map_err(|_| format!("gRPC call {path} to {entry} timed out after 5 s"))?
}

async fn call(
    entry: SocketAddr,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<GrpcReply, String> {
    let tcp = TcpStream::connect(entry)
        .await
        .map_err(|e| format!("connect to {entry}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .map_err(|e| format!("HTTP/2 handshake with {entry}: {e}"))?;
    // Dropping the set aborts the connection's task, whether the call ends or times out.
    let mut driver = JoinSet::new();
    driver.spawn(conn);
    let mut req = Request::post(format!("http://{authority}{path}"))
        .header(CONTENT_TYPE, "application/grpc")
        .header(TE, "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(frame(&[])))
        .map_err(|e| format!("build the request: {e}"))?;
    let (parts, body) = sender
        .send_request(req)
        .await
        .map_err(|e| format!("send {path} to {entry}: {e}"))?
        .into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("read the reply to {path} from {entry}: {e}"))?;
    let text = |v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    let grpc_status = body
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| parts.headers.get("grpc-status"))
        .map(text);
    let bytes = body.to_bytes();
    Ok(GrpcReply {
        http_status: parts.status.as_u16(),
        grpc_status,
        message: String::from_utf8_lossy(first_message(&bytes)).into_owned(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), text(v)))
            .collect(),
    })
}

/// Makes `n` calls one after another and counts them by the upstream that answered (the
/// first word of its message); a proxy's own answers count as their HTTP status (`"503"`),
/// else as `"grpc-<code>"` (`"grpc-none"` for a 200 without one), failed calls as `"error"`.
pub async fn grpc_tally(
    entry: SocketAddr,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let key = match grpc_call(entry, authority, path, headers).await {
            Ok(r) if r.http_status != 200 => r.http_status.to_string(),
            Ok(r) => match r.grpc_status.as_deref() {
                Some("0") => r.message.split_whitespace().next().unwrap_or("").to_owned(),
                Some(code) => format!("grpc-{code}"),
                None => "grpc-none".to_owned(),
            },
            Err(e) => {
                // Counted, and said, so a failing test's output tells why.
                eprintln!("{e}");
                "error".to_owned()
            }
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}
