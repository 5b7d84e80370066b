//! Envoy's `SecretDiscoveryService` on a Unix socket in the pod: `StreamSecrets` (state of
//! the world) serves the secrets the agent has; `DeltaSecrets` and `FetchSecrets` are not
//! served (the sidecar's bootstrap asks for neither).

use std::{
    future::Future,
    io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use envoy_types::pb::envoy::service::{
    discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    },
    secret::v3::secret_discovery_service_server::{
        SecretDiscoveryService, SecretDiscoveryServiceServer,
    },
};
use tokio::{net::UnixListener, sync::mpsc, sync::watch};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    secrets::{Secrets, secret_type_url},
    sotw::SotwStream,
};

/// Responses a stream may have built but Envoy not yet read; the `watch` skips the rest.
const STREAM_BUFFER: usize = 2;

/// Why the SDS server cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum SdsError {
    /// The socket could not be made.
    #[error(
        "cannot serve SDS on {path}: {source}; the folder must exist and be writable (the \
         pod's emptyDir)"
    )]
    Socket {
        /// The socket's path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The server stopped on an error.
    #[error("the SDS server stopped: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Listens on the Unix socket `path`, removing a stale socket first; only this uid (the
/// agent and Envoy both run as 1337) may connect.
pub fn bind(path: &Path) -> Result<UnixListener, SdsError> {
    let error = |source| SdsError::Socket {
        path: path.to_owned(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => tracing::debug!(path = %path.display(), "removed a stale SDS socket"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(error(e)),
    }
    let listener = UnixListener::bind(path).map_err(error)?;
    // Until this runs the socket has the umask's mode; the folder is the pod's own emptyDir,
    // which no other pod sees, so only this pod's containers could race it.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(error)?;
    Ok(listener)
}

/// Serves SDS on `listener` from `secrets` until `shutdown` completes. Open streams end when
/// the secrets' sender is dropped.
pub async fn serve(
    listener: UnixListener,
    secrets: watch::Receiver<Arc<Secrets>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SdsError> {
    tonic::transport::Server::builder()
        .add_service(SecretDiscoveryServiceServer::new(SdsService { secrets }))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}

struct SdsService {
    secrets: watch::Receiver<Arc<Secrets>>,
}

#[tonic::async_trait]
impl SecretDiscoveryService for SdsService {
    type DeltaSecretsStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;
    type StreamSecretsStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented(
            "the agent serves SDS in state-of-the-world mode only: use StreamSecrets \
             (api_type GRPC, not DELTA_GRPC)",
        ))
    }

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(stream(request.into_inner(), self.secrets.clone(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn fetch_secrets(
        &self,
        _request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(Status::unimplemented(
            "the agent does not answer FetchSecrets: use StreamSecrets",
        ))
    }
}

/// Runs one stream until Envoy closes it, it fails, or the agent stops publishing.
async fn stream(
    mut requests: Streaming<DiscoveryRequest>,
    mut secrets: watch::Receiver<Arc<Secrets>>,
    responses: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
    let mut state = SotwStream::default();
    loop {
        let answer = tokio::select! {
            request = requests.message() => match request {
                Ok(Some(request)) => {
                    if let Err(refused) = check_type(&request) {
                        // The stream ends here either way; a closed one needs no status.
                        let _closed = responses.send(Err(refused)).await;
                        return;
                    }
                    let now = secrets.borrow_and_update().clone();
                    state.on_request(&request, &now)
                }
                Ok(None) => return,
                Err(status) => {
                    tracing::debug!(error = %status, "an SDS stream failed");
                    return;
                }
            },
            changed = secrets.changed() => match changed {
                Ok(()) => {
                    let now = secrets.borrow_and_update().clone();
                    state.on_update(&now)
                }
                Err(_) => return,
            },
        };
        if let Some(response) = answer
            && responses.send(Ok(response)).await.is_err()
        {
            return;
        }
    }
}

fn check_type(request: &DiscoveryRequest) -> Result<(), Status> {
    let wanted = secret_type_url();
    if request.type_url.is_empty() || request.type_url == wanted {
        return Ok(());
    }
    Err(Status::invalid_argument(format!(
        "this is the SDS server: it serves {wanted}, not {}",
        request.type_url
    )))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use envoy_types::pb::envoy::{
        extensions::transport_sockets::tls::v3::Secret,
        service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient,
    };
    use hyper_util::rt::TokioIo;
    use prost::Message;
    use remora_envoy::sds::{TRUST_BUNDLE_SECRET, WORKLOAD_SECRET};
    use tokio::net::UnixStream;
    use tonic::{
        Code,
        codegen::{Service, http::Uri},
        transport::{Channel, Endpoint},
    };

    use super::*;
    use crate::secrets::Publisher;

    /// Bounds every wait, so a broken server fails the test instead of hanging it.
    const PATIENCE: Duration = Duration::from_secs(10);

    #[derive(Clone)]
    struct UnixDialer(PathBuf);

    impl Service<Uri> for UnixDialer {
        type Response = TokioIo<UnixStream>;
        type Error = io::Error;
        type Future =
            std::pin::Pin<Box<dyn Future<Output = io::Result<TokioIo<UnixStream>>> + Send>>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Uri) -> Self::Future {
            let path = self.0.clone();
            Box::pin(async move { Ok(TokioIo::new(UnixStream::connect(path).await?)) })
        }
    }

    struct Running {
        _dir: tempfile::TempDir,
        path: PathBuf,
        publisher: Option<Publisher>,
        client: SecretDiscoveryServiceClient<Channel>,
    }

    impl Running {
        fn publisher(&self) -> &Publisher {
            self.publisher.as_ref().expect("publishing")
        }
    }

    async fn start() -> Running {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("socket");
        let listener = bind(&path).expect("bind");
        let (publisher, secrets) = Publisher::new();
        tokio::spawn(serve(listener, secrets, std::future::pending()));
        let channel = Endpoint::from_static("http://sds.local")
            .connect_with_connector(UnixDialer(path.clone()))
            .await
            .expect("connect");
        Running {
            _dir: dir,
            path,
            publisher: Some(publisher),
            client: SecretDiscoveryServiceClient::new(channel),
        }
    }

    /// A stream: requests go in through the sender, responses come out of the streaming.
    async fn open(
        running: &Running,
    ) -> (mpsc::Sender<DiscoveryRequest>, Streaming<DiscoveryResponse>) {
        let (tx, rx) = mpsc::channel(4);
        let responses = running
            .client
            .clone()
            .stream_secrets(ReceiverStream::new(rx))
            .await
            .expect("a stream")
            .into_inner();
        (tx, responses)
    }

    fn ask(names: &[&str], answering: Option<&DiscoveryResponse>) -> DiscoveryRequest {
        DiscoveryRequest {
            resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
            type_url: secret_type_url(),
            version_info: answering
                .map(|r| r.version_info.clone())
                .unwrap_or_default(),
            response_nonce: answering.map(|r| r.nonce.clone()).unwrap_or_default(),
            ..DiscoveryRequest::default()
        }
    }

    async fn next(responses: &mut Streaming<DiscoveryResponse>) -> DiscoveryResponse {
        tokio::time::timeout(PATIENCE, responses.message())
            .await
            .expect("a response in time")
            .expect("no error")
            .expect("the stream is open")
    }

    fn names(response: &DiscoveryResponse) -> Vec<String> {
        response
            .resources
            .iter()
            .map(|any| Secret::decode(any.value.as_slice()).expect("a Secret").name)
            .collect()
    }

    #[tokio::test]
    async fn each_secret_is_served_by_name() {
        let running = start().await;
        running.publisher().publish_certificate("CHAIN", "KEY");
        running.publisher().publish_bundle("ROOTS");
        let (tx, mut responses) = open(&running).await;
        tx.send(ask(&[WORKLOAD_SECRET], None)).await.expect("sent");
        assert_eq!(names(&next(&mut responses).await), [WORKLOAD_SECRET]);
        let (tx, mut responses) = open(&running).await;
        tx.send(ask(&[TRUST_BUNDLE_SECRET], None))
            .await
            .expect("sent");
        assert_eq!(names(&next(&mut responses).await), [TRUST_BUNDLE_SECRET]);
    }

    #[tokio::test]
    async fn a_secret_not_there_yet_is_sent_once_it_is() {
        let running = start().await;
        running.publisher().publish_bundle("ROOTS");
        let (tx, mut responses) = open(&running).await;
        tx.send(ask(&[WORKLOAD_SECRET], None)).await.expect("sent");
        running.publisher().publish_certificate("CHAIN", "KEY");
        let first = next(&mut responses).await;
        assert_eq!(
            names(&first),
            [WORKLOAD_SECRET],
            "nothing before the certificate"
        );
    }

    #[tokio::test]
    async fn after_an_ack_the_next_response_is_the_pushed_update() {
        let running = start().await;
        running.publisher().publish_certificate("CHAIN", "KEY");
        let (tx, mut responses) = open(&running).await;
        tx.send(ask(&[WORKLOAD_SECRET], None)).await.expect("sent");
        let first = next(&mut responses).await;
        tx.send(ask(&[WORKLOAD_SECRET], Some(&first)))
            .await
            .expect("ACK");
        running.publisher().publish_certificate("RENEWED", "KEY2");
        let pushed = next(&mut responses).await;
        assert_eq!(names(&pushed), [WORKLOAD_SECRET]);
        assert_ne!(pushed.nonce, first.nonce);
        assert!(
            pushed.version_info.parse::<u64>().expect("a number")
                > first.version_info.parse::<u64>().expect("a number")
        );
        assert_ne!(pushed.resources, first.resources);
    }

    #[tokio::test]
    async fn streams_end_when_the_agent_stops_publishing() {
        let mut running = start().await;
        running.publisher().publish_certificate("CHAIN", "KEY");
        let (tx, mut responses) = open(&running).await;
        tx.send(ask(&[WORKLOAD_SECRET], None)).await.expect("sent");
        next(&mut responses).await;
        running.publisher = None;
        let ended = tokio::time::timeout(PATIENCE, responses.message())
            .await
            .expect("ended in time");
        assert!(matches!(ended, Ok(None)), "{ended:?}");
    }

    #[tokio::test]
    async fn a_request_for_another_type_is_refused() {
        let running = start().await;
        let (tx, mut responses) = open(&running).await;
        let mut wrong = ask(&["x"], None);
        wrong.type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster".into();
        tx.send(wrong).await.expect("sent");
        let status = tokio::time::timeout(PATIENCE, responses.message())
            .await
            .expect("in time")
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument);
    }

    #[tokio::test]
    async fn delta_and_fetch_are_unimplemented() {
        let running = start().await;
        let mut client = running.client.clone();
        let fetch = client.fetch_secrets(ask(&[WORKLOAD_SECRET], None)).await;
        assert_eq!(
            fetch.expect_err("unimplemented").code(),
            Code::Unimplemented
        );
        let delta = client
            .delta_secrets(tokio_stream::iter(Vec::<DeltaDiscoveryRequest>::new()))
            .await;
        assert_eq!(
            delta.expect_err("unimplemented").code(),
            Code::Unimplemented
        );
    }

    #[tokio::test]
    async fn the_socket_is_for_its_owner_only() {
        let running = start().await;
        let mode = std::fs::metadata(&running.path)
            .expect("the socket")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn a_socket_left_by_a_previous_agent_is_replaced() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("socket");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("a first agent"));
        assert!(path.exists(), "the socket file outlives its listener");
        let listener = bind(&path);
        assert!(listener.is_ok(), "{listener:?}");
    }
}
