//! A gRPC channel over TLS made with [`crate::tls::client_config`]: the agent calling the
//! certificate service, the CLI calling the control plane's API. tonic's own TLS takes static
//! PEM; this takes a rustls config, so a renewed client certificate ([`crate::CurrentCert`])
//! and a rotated trust bundle apply to the next connection.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::{
    TlsConnector,
    client::TlsStream,
    rustls::{ClientConfig, pki_types::ServerName},
};
use tonic::{
    codegen::{Service, http::Uri},
    transport::{Channel, Endpoint},
};

/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no channel could be opened.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The name to check the server's certificate for is neither a DNS name nor an address.
    #[error("{0:?} is not a DNS name or an IP address to check the server's certificate for")]
    ServerName(String),
    /// The server could not be reached, or the handshake failed.
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// `host:port`.
        address: String,
        /// What failed, with its causes (tonic's own error says only "transport error").
        reason: String,
    },
}

/// A channel to `address` (`host:port`) over TLS with `config`, the server's certificate
/// checked for `server_name`; every call is bounded by `timeout`.
pub async fn dial(
    address: &str,
    server_name: &str,
    config: Arc<ClientConfig>,
    timeout: Duration,
) -> Result<Channel, DialError> {
    let server_name = ServerName::try_from(server_name.to_owned())
        .map_err(|_| DialError::ServerName(server_name.to_owned()))?;
    let dialer = Dialer {
        address: address.to_owned(),
        server_name,
        config,
    };
    let failed = |e: tonic::transport::Error| DialError::Connect {
        address: address.to_owned(),
        reason: causes(&e),
    };
    // `http`: TLS is the dialer's; were tonic's own TLS compiled in, an `https` URI would have
    // tonic wrap the stream a second time.
    Endpoint::from_shared(format!("http://{address}"))
        .map_err(failed)?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .connect_with_connector(dialer)
        .await
        .map_err(failed)
}

/// An error and its sources, `a: b: c`.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Dials the server and does the TLS handshake.
#[derive(Clone)]
struct Dialer {
    address: String,
    server_name: ServerName<'static>,
    config: Arc<ClientConfig>,
}

type Dialing = Pin<Box<dyn Future<Output = io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl Service<Uri> for Dialer {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Dialing;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Dialing {
        let dialer = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(&dialer.address).await?;
            tcp.set_nodelay(true)?;
            let tls = TlsConnector::from(dialer.config)
                .connect(dialer.server_name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("transport error")]
    struct Opaque(#[source] io::Error);

    #[test]
    fn an_error_is_told_with_its_causes() {
        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused");
        assert_eq!(
            causes(&Opaque(refused)),
            "transport error: connection refused"
        );
        assert_eq!(causes(&io::Error::other("plain")), "plain");
    }

    #[tokio::test]
    async fn a_name_that_is_no_name_is_refused_before_dialing() {
        let config =
            crate::tls::client_config(crate::testing::ca().bundle(), None).expect("config");
        let err = dial("127.0.0.1:1", "not a name!", config, CONNECT_TIMEOUT)
            .await
            .expect_err("refused");
        assert!(matches!(err, DialError::ServerName(_)), "{err}");
    }
}
