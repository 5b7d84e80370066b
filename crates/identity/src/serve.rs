//! A gRPC port over TLS (the control plane's): each accepted connection finishes its handshake
//! on a task of its own (a slow client never holds up the next) and reaches tonic with a
//! [`Peer`]: the remote address and, when the client presented a certificate that chains to
//! the mesh's trust bundle, who it is. tonic puts it into every request's extensions (the
//! connection's `Connected::ConnectInfo`), where services read it.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll},
    time::Duration,
};

use crate::{Peer, PeerIdentity};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
};
use tokio_rustls::{TlsAcceptor, rustls::ServerConfig, server::TlsStream};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::transport::server::Connected;
use tracing::{debug, warn};

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections handshaken and not yet taken by the server.
const ACCEPTED: usize = 64;

/// How the port is served: plaintext only where nothing else reaches it (local mode, tests).
#[derive(Clone)]
pub enum Transport {
    /// No TLS, no client identity: `remora local --insecure`, benchmarks, tests.
    Plaintext,
    /// TLS with this server config, replaceable while serving (a new trust bundle).
    Tls(TlsServing),
}

/// A TLS server config that new handshakes read and a rotation replaces.
#[derive(Clone)]
pub struct TlsServing(Arc<RwLock<Arc<ServerConfig>>>);

impl TlsServing {
    /// Serves with `config` until [`TlsServing::replace`].
    pub fn new(config: Arc<ServerConfig>) -> TlsServing {
        TlsServing(Arc::new(RwLock::new(config)))
    }

    /// New handshakes use `config`; open connections keep theirs.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// One accepted connection, plaintext or TLS, with who is at the other end.
pub struct Conn {
    io: Io,
    peer: Peer,
    /// Its place under the cap, given back when the connection is dropped.
    _slot: OwnedSemaphorePermit,
}

/// How many connections the port holds at once, TLS handshakes included, and what to do
/// for each one closed because it is full (count it).
#[derive(Clone)]
pub struct ConnectionCap {
    /// The most connections at once.
    pub max: usize,
    /// Called for each connection closed as it was accepted.
    pub refused: Arc<dyn Fn() + Send + Sync>,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

/// The connections `listener` accepts, handshaken under `transport`, until the stream is
/// dropped (the server stopped). Those beyond `cap` are closed at once.
pub fn incoming(
    listener: TcpListener,
    transport: Transport,
    cap: ConnectionCap,
) -> impl Stream<Item = io::Result<Conn>> + Send + 'static {
    let (tx, rx) = mpsc::channel(ACCEPTED);
    tokio::spawn(accept_loop(listener, transport, cap, tx));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    transport: Transport,
    cap: ConnectionCap,
    tx: mpsc::Sender<io::Result<Conn>>,
) {
    let slots = Arc::new(Semaphore::new(cap.max));
    loop {
        let (tcp, remote) = tokio::select! {
            () = tx.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    warn!(error = %e, "accepting a gRPC connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Responses go out as they are built, not held back while an earlier one waits to
        // be acknowledged: tonic's own listener sets this too.
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(%remote, error = %e, "TCP_NODELAY could not be set; small writes may wait");
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%remote, max = cap.max, "connection refused: the port holds its most");
            (cap.refused)();
            drop(tcp);
            continue;
        };
        match &transport {
            Transport::Plaintext => {
                let peer = Peer {
                    remote: Some(remote),
                    identity: None,
                };
                let conn = Conn {
                    io: Io::Plain(tcp),
                    peer,
                    _slot: slot,
                };
                if tx.send(Ok(conn)).await.is_err() {
                    return;
                }
            }
            Transport::Tls(tls) => {
                tokio::spawn(handshake(tls.acceptor(), tcp, remote, slot, tx.clone()));
            }
        }
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    remote: SocketAddr,
    slot: OwnedSemaphorePermit,
    tx: mpsc::Sender<io::Result<Conn>>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            debug!(%remote, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!(%remote, "TLS handshake timed out");
            return;
        }
    };
    let identity = client_identity(&tls, remote);
    let conn = Conn {
        io: Io::Tls(Box::new(tls)),
        peer: Peer {
            remote: Some(remote),
            identity,
        },
        _slot: slot,
    };
    if tx.send(Ok(conn)).await.is_err() {
        debug!(%remote, "the server stopped before it took the connection");
    }
}

/// Who the client is: its certificate already verified against the trust bundle by rustls;
/// one that verifies but names no workload identity counts as none.
fn client_identity(tls: &TlsStream<TcpStream>, remote: SocketAddr) -> Option<PeerIdentity> {
    let leaf = tls.get_ref().1.peer_certificates()?.first()?;
    PeerIdentity::from_leaf(leaf)
        .inspect_err(|e| debug!(%remote, error = %e, "a client certificate names no workload"))
        .ok()
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::AsyncReadExt;
    use tokio_stream::StreamExt;

    use super::*;

    #[tokio::test]
    async fn connections_beyond_the_cap_are_closed_and_counted_until_one_leaves() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let refused = Arc::new(AtomicUsize::new(0));
        let counter = refused.clone();
        let cap = ConnectionCap {
            max: 2,
            refused: Arc::new(move || {
                counter.fetch_add(1, Ordering::Relaxed);
            }),
        };
        let mut conns = Box::pin(incoming(listener, Transport::Plaintext, cap));
        let mut accepted = Vec::new();
        let mut clients = Vec::new();
        for _ in 0..2 {
            clients.push(TcpStream::connect(addr).await.expect("connect"));
            accepted.push(conns.next().await.expect("a connection").expect("accepted"));
        }
        // The third is closed by the server: it reads the end of the stream.
        let mut third = TcpStream::connect(addr).await.expect("connect");
        let read = tokio::time::timeout(Duration::from_secs(10), third.read(&mut [0; 1]))
            .await
            .expect("closed in time");
        assert_eq!(read.expect("a clean close"), 0);
        assert_eq!(refused.load(Ordering::Relaxed), 1);
        // One leaves: the next is taken.
        drop(accepted.pop());
        let _fourth = TcpStream::connect(addr).await.expect("connect");
        let next = tokio::time::timeout(Duration::from_secs(10), conns.next()).await;
        assert!(
            matches!(next, Ok(Some(Ok(_)))),
            "accepted once a slot was free"
        );
        assert_eq!(refused.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn accepted_connections_send_small_writes_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let cap = ConnectionCap {
            max: 1,
            refused: Arc::new(|| {}),
        };
        let mut conns = Box::pin(incoming(listener, Transport::Plaintext, cap));
        let _client = TcpStream::connect(addr).await.expect("connect");
        let conn = conns.next().await.expect("a connection").expect("accepted");
        let Io::Plain(tcp) = &conn.io else {
            panic!("a plaintext connection");
        };
        assert!(tcp.nodelay().expect("readable option"), "TCP_NODELAY set");
    }
}
