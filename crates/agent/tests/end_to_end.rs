//! The agent against a real certificate service over TLS on loopback: its first certificate
//! by token, a renewal by certificate, each pushed to an SDS client on the agent's socket.

use std::{
    future::Future,
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use envoy_types::pb::envoy::{
    config::core::v3::data_source::Specifier,
    extensions::transport_sockets::tls::v3::{Secret, secret::Type},
    service::{
        discovery::v3::{DiscoveryRequest, DiscoveryResponse},
        secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient,
    },
};
use hyper_util::rt::TokioIo;
use prost::Message;
use remora_agent::{Config, run};
use remora_ca::{
    AuthError, AuthFuture, Authenticator, CaMetrics, Caller, IdentityService, SharedCa,
};
use remora_envoy::sds::{TRUST_BUNDLE_SECRET, WORKLOAD_SECRET};
use remora_identity::{
    CertifiedIdentity, CurrentCert, Grant, MeshCa, PeerIdentity, SpiffeId,
    serve::{ConnectionCap, TlsServing, Transport, incoming},
    tls,
};
use tokio::{
    net::{TcpListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    Streaming,
    codegen::{Service, http::Uri},
    transport::Endpoint,
};

const TOKEN: &str = "projected-token-of-shop-web-0";
/// Short, so the agent renews within seconds (at half of it).
const TTL: Duration = Duration::from_secs(4);
/// Bounds every wait: the test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(30);

/// Accepts [`TOKEN`] for pod shop/web-0; counts the tokens it checks.
#[derive(Default)]
struct OneToken {
    reviews: AtomicUsize,
}

impl Authenticator for OneToken {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        self.reviews.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if token != TOKEN {
                return Err(AuthError::NotAuthenticated("unknown token".into()));
            }
            Ok(Caller {
                namespace: "shop".into(),
                service_account: "reviews".into(),
                pod: "web-0".into(),
            })
        })
    }
}

/// The control plane's certificate service on loopback, with a serving certificate for
/// `localhost` from the mesh CA; client certificates optional.
async fn control_plane(ca: MeshCa, auth: Arc<OneToken>, metrics: CaMetrics) -> String {
    let now = SystemTime::now();
    let grant = Grant {
        id: SpiffeId::new("cluster.local", "remora-system", "remora"),
        subject: "remora-system/remora-0".into(),
        ttl: Duration::from_secs(3600),
    };
    let (issued, key) = ca
        .issue_serving(&grant, &["localhost".to_owned()], now)
        .expect("a serving certificate");
    let serving = CurrentCert::default();
    serving.set(&CertifiedIdentity::new(&issued, &key).expect("usable"));
    let config = tls::server_config(serving, ca.bundle(), tls::ClientAuth::Optional)
        .expect("a server config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("an address").to_string();
    let service = IdentityService::new(SharedCa::new(ca), auth)
        .with_ttl(TTL)
        .with_metrics(metrics)
        .into_service();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming(
                listener,
                Transport::Tls(TlsServing::new(config)),
                ConnectionCap {
                    max: 16,
                    refused: Arc::new(|| {}),
                },
            )),
    );
    address
}

#[derive(Clone)]
struct UnixDialer(PathBuf);

impl Service<Uri> for UnixDialer {
    type Response = TokioIo<UnixStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<UnixStream>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move { Ok(TokioIo::new(UnixStream::connect(path).await?)) })
    }
}

/// An SDS stream asking for `names`, once the agent's socket is there.
async fn sds_stream(
    socket: &Path,
    names: &[&str],
) -> (mpsc::Sender<DiscoveryRequest>, Streaming<DiscoveryResponse>) {
    while !socket.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let channel = Endpoint::from_static("http://sds.local")
        .connect_with_connector(UnixDialer(socket.to_owned()))
        .await
        .expect("connect to the agent");
    let (tx, rx) = mpsc::channel(4);
    let responses = SecretDiscoveryServiceClient::new(channel)
        .stream_secrets(ReceiverStream::new(rx))
        .await
        .expect("a stream")
        .into_inner();
    tx.send(ask(names, None)).await.expect("sent");
    (tx, responses)
}

fn ask(names: &[&str], answering: Option<&DiscoveryResponse>) -> DiscoveryRequest {
    DiscoveryRequest {
        resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
        version_info: answering
            .map(|r| r.version_info.clone())
            .unwrap_or_default(),
        response_nonce: answering.map(|r| r.nonce.clone()).unwrap_or_default(),
        ..DiscoveryRequest::default()
    }
}

async fn next(responses: &mut Streaming<DiscoveryResponse>) -> DiscoveryResponse {
    responses
        .message()
        .await
        .expect("no error")
        .expect("the stream is open")
}

fn secret(response: &DiscoveryResponse) -> Secret {
    assert_eq!(response.resources.len(), 1);
    Secret::decode(response.resources[0].value.as_slice()).expect("a Secret")
}

/// The certificate chain (PEM) and whether a key came with it.
fn certificate(response: &DiscoveryResponse) -> (String, bool) {
    let Some(Type::TlsCertificate(tls)) = secret(response).r#type else {
        panic!("not a certificate")
    };
    let text = |source: Option<Specifier>| match source {
        Some(Specifier::InlineBytes(bytes)) => String::from_utf8(bytes).expect("PEM"),
        other => panic!("not inline bytes: {other:?}"),
    };
    let chain = text(tls.certificate_chain.and_then(|d| d.specifier));
    let key = text(tls.private_key.and_then(|d| d.specifier));
    (chain, key.contains("PRIVATE KEY"))
}

fn leaf_identity(chain: &str) -> PeerIdentity {
    let leaf = CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()
        .expect("a certificate")
        .expect("PEM");
    PeerIdentity::from_leaf(&leaf).expect("a workload certificate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_gets_a_certificate_by_token_and_renews_it_by_certificate() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("the token");
    let ca = MeshCa::generate("cluster.local", SystemTime::now()).expect("a CA");
    let trust = ca.bundle().clone();
    let auth = Arc::new(OneToken::default());
    let metrics = CaMetrics::default();
    let address = control_plane(ca, auth.clone(), metrics.clone()).await;
    let socket = dir.path().join("sds.sock");
    let config = Config {
        control_plane: address,
        server_name: "localhost".into(),
        trust: trust.clone(),
        token_file,
        namespace: "shop".into(),
        pod: "web-0".into(),
        service_account: "reviews".into(),
        sds_socket: socket.clone(),
        trust_domain: "cluster.local".into(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let agent = tokio::spawn(run(config, async {
        let _stop = stopped.await;
    }));

    let story = async {
        let (tx, mut certs) = sds_stream(&socket, &[WORKLOAD_SECRET]).await;
        let first = next(&mut certs).await;
        let (first_chain, has_key) = certificate(&first);
        assert!(has_key, "the key comes with the certificate");
        let identity = leaf_identity(&first_chain);
        assert_eq!(
            identity.id,
            SpiffeId::new("cluster.local", "shop", "reviews")
        );
        assert_eq!(identity.subject.as_deref(), Some("shop/web-0"));
        assert_eq!(auth.reviews.load(Ordering::SeqCst), 1, "the first by token");

        let (_bundle_tx, mut bundles) = sds_stream(&socket, &[TRUST_BUNDLE_SECRET]).await;
        let Some(Type::ValidationContext(roots)) = secret(&next(&mut bundles).await).r#type else {
            panic!("not a validation context")
        };
        let Some(Specifier::InlineBytes(roots)) = roots.trusted_ca.and_then(|d| d.specifier) else {
            panic!("no inline roots")
        };
        assert_eq!(String::from_utf8(roots).expect("PEM"), trust.to_pem());

        tx.send(ask(&[WORKLOAD_SECRET], Some(&first)))
            .await
            .expect("ACK");
        let renewed = next(&mut certs).await;
        let (renewed_chain, _) = certificate(&renewed);
        assert_ne!(renewed_chain, first_chain, "a new certificate is pushed");
        assert_eq!(
            leaf_identity(&renewed_chain).subject.as_deref(),
            Some("shop/web-0")
        );
        assert_eq!(metrics.issued_count(), 2);
        assert_eq!(
            auth.reviews.load(Ordering::SeqCst),
            1,
            "the renewal was proved by the certificate, not the token"
        );
    };
    tokio::time::timeout(PATIENCE, story)
        .await
        .expect("the story ends in time");

    drop(stop);
    let ended = tokio::time::timeout(PATIENCE, agent)
        .await
        .expect("the agent stops in time")
        .expect("no panic");
    assert!(ended.is_ok(), "{ended:?}");
}
