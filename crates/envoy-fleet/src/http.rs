//! HTTP/1.1 on loopback: the echo backends, which answer every request with their name, and
//! the client that sends requests through an Envoy (or to its admin port).

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, net::TcpStream, task::JoinHandle};
use tracing::{debug, warn};

use crate::FleetError;

/// The longest one request may take; a proxy that takes longer counts as failing.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause after a failed `accept` (out of file descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// An HTTP server answering every request with its name; stops on drop.
pub struct Backend {
    task: JoinHandle<()>,
}

impl Backend {
    /// Listens on `addr` and answers `name`.
    pub async fn start(addr: SocketAddr, name: &str) -> Result<Backend, FleetError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| FleetError::Io {
                what: format!(
                    "listen on {addr} for the backend {name} (is another run still holding it?)"
                ),
                source,
            })?;
        let body = Bytes::from(name.to_owned());
        Ok(Backend {
            task: tokio::spawn(accept(listener, body)),
        })
    }
}

impl Backend {
    /// Stops listening and returns once the address is free for the next fleet.
    pub async fn stop(mut self) {
        self.task.abort();
        // The task ends by this cancellation, which is its only way to end; the wait is for
        // the listener it owns to be closed.
        let _ = (&mut self.task).await;
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, body: Bytes) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, body.clone()));
            }
            Err(e) => {
                warn!(error = %e, "the echo backend cannot accept a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn serve(stream: TcpStream, body: Bytes) {
    let answer = hyper::service::service_fn(move |_request| {
        let body = body.clone();
        async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), answer)
        .await;
    if let Err(e) = served {
        // A proxy that is killed mid-request ends its connections so; nothing to answer.
        debug!(error = %e, "an echo connection ended with an error");
    }
}

/// What came back: the status and the body as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The response's status.
    pub status: StatusCode,
    /// The response's body.
    pub body: String,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Nothing accepted the connection (yet).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Where the request was sent.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The connection failed before the response was complete.
    #[error("HTTP to {addr} failed: {source}")]
    Http {
        /// Where the request was sent.
        addr: SocketAddr,
        /// hyper's error.
        source: hyper::Error,
    },
    /// The request could not be built (a header value that is not one).
    #[error("cannot build a request to {addr}: {source}")]
    Build {
        /// Where the request was to go.
        addr: SocketAddr,
        /// The builder's error.
        source: http::Error,
    },
    /// No answer within the request timeout.
    #[error("no answer from {addr} within {REQUEST_TIMEOUT:?}")]
    Timeout {
        /// Where the request was sent.
        addr: SocketAddr,
    },
}

/// A kept-alive connection to one address, opened again after an error.
pub struct Client {
    addr: SocketAddr,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Client {
    /// A client of `addr`; it connects on the first request.
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, sender: None }
    }

    /// `GET path` with `Host: host` and the extra `header`, if any.
    pub async fn get(
        &mut self,
        host: &str,
        path: &str,
        header: Option<(&str, &str)>,
    ) -> Result<Answer, RequestError> {
        let addr = self.addr;
        let mut request = Request::get(path).header(http::header::HOST, host);
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        let request = request
            .body(Empty::new())
            .map_err(|source| RequestError::Build { addr, source })?;
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, self.send(request))
            .await
            .unwrap_or(Err(RequestError::Timeout { addr }));
        if answer.is_err() {
            // The connection may be broken; the next request opens another.
            self.sender = None;
        }
        answer
    }

    async fn send(&mut self, request: Request<Empty<Bytes>>) -> Result<Answer, RequestError> {
        let addr = self.addr;
        let http = |source| RequestError::Http { addr, source };
        let sender = match &mut self.sender {
            Some(s) if !s.is_closed() => s,
            _ => self.sender.insert(connect(addr).await?),
        };
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(http)?;
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        })
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, RequestError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| RequestError::Connect { addr, source })?;
    // Small requests, answered at once: no reason to wait for more bytes to send.
    stream
        .set_nodelay(true)
        .map_err(|source| RequestError::Connect { addr, source })?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| RequestError::Http { addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            // The request on it fails too and is reported there.
            debug!(%addr, error = %e, "a client connection ended with an error");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_backend_answers_every_request_with_its_name_on_one_connection() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("bound address");
        let server = Backend {
            task: tokio::spawn(accept(listener, Bytes::from_static(b"echo-v1"))),
        };
        let mut client = Client::new(addr);
        for path in ["/", "/again"] {
            let answer = client
                .get("echo", path, Some(("x-test", "1")))
                .await
                .expect("an answer");
            assert_eq!(
                answer,
                Answer {
                    status: StatusCode::OK,
                    body: "echo-v1".into()
                }
            );
        }
        drop(server);
    }

    #[tokio::test]
    async fn a_request_to_a_closed_port_reports_where_it_went() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("bound address");
        drop(listener);
        let err = Client::new(addr)
            .get("echo", "/", None)
            .await
            .expect_err("nothing listens");
        assert!(matches!(err, RequestError::Connect { .. }), "{err}");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
