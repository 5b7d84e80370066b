//! HTTPS for the API server's webhook client: a path per webhook, bounded bodies, timeouts,
//! and a serving certificate that can be replaced while connections are open.

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use remora_api::ValidationSettings;
use remora_identity::CurrentCert;
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_rustls::{TlsAcceptor, rustls::ServerConfig};

use crate::{
    MUTATE_PODS_PATH, PodInjector,
    certs::{CertError, TlsIdentity, provider},
    mutate::review_pod,
};

/// The validating webhook's path: the review's kind says which check runs.
pub const PATH: &str = "/validate";
/// Room for an object and its old version at etcd's 1.5 MiB limit, plus the review around them.
const MAX_BODY: usize = 4 << 20;
/// The API server gives up after the webhook's `timeoutSeconds` (at most 30 s) anyway.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What one webhook server takes on.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long a review may compute. Past it, an object under validation is refused (the
    /// API server's own timeout would let `failurePolicy: Ignore` admit it unchecked) and a
    /// pod under injection gets a 503 (its `failurePolicy` decides).
    pub review_deadline: Duration,
    /// Connections served at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// What validation takes from the control plane: the largest RE2 program a regex may
    /// compile to, as the proxies' bootstraps say.
    pub validation: ValidationSettings,
}

impl Default for Limits {
    /// Half the API server's default webhook timeout (10 s), 256 connections, Envoy's own
    /// regex limit.
    fn default() -> Self {
        Limits {
            review_deadline: Duration::from_secs(5),
            max_connections: 256,
            validation: ValidationSettings::default(),
        }
    }
}

/// The serving certificate, `identity` until [`replace_cert`] gives another; clones share
/// it, so a renewal reaches the running server.
pub fn serving_cert(identity: &TlsIdentity) -> Result<CurrentCert, CertError> {
    let cert = CurrentCert::default();
    replace_cert(&cert, identity)?;
    Ok(cert)
}

/// New handshakes use `identity`; open connections keep the one they started with.
pub fn replace_cert(cert: &CurrentCert, identity: &TlsIdentity) -> Result<(), CertError> {
    cert.set_key(identity.certified_key()?);
    Ok(())
}

/// Serves admission reviews on `listener` until `shutdown` completes, then lets requests in
/// flight finish (for a bounded time). Pod reviews are answered only with an `injector`.
pub async fn serve(
    listener: TcpListener,
    cert: CurrentCert,
    injector: Option<Arc<dyn PodInjector>>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CertError> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(cert));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, cap = limits.max_connections, "webhook connections at their cap; closing a new one");
            drop(tcp);
            continue;
        };
        let (acceptor, watcher, injector) =
            (acceptor.clone(), graceful.watcher(), injector.clone());
        // The handshake runs in the connection's task, so a slow client never holds up
        // accepting the next one.
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "webhook TLS handshake timed out");
                    return;
                }
            };
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT);
            let service = service_fn(move |request| handle(request, injector.clone(), limits));
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("webhook requests still in flight after the drain timeout");
    }
    Ok(())
}

/// Which review a request asks for.
enum Route {
    Validate,
    MutatePods(Arc<dyn PodInjector>),
}

async fn handle(
    request: Request<Incoming>,
    injector: Option<Arc<dyn PodInjector>>,
    limits: Limits,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let route = match (request.uri().path(), injector) {
        (PATH, _) => Route::Validate,
        (MUTATE_PODS_PATH, Some(injector)) => Route::MutatePods(injector),
        _ => return Ok(plain(StatusCode::NOT_FOUND, "not found")),
    };
    if request.method() != Method::POST {
        return Ok(plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST an AdmissionReview",
        ));
    }
    let body = Limited::new(request.into_body(), MAX_BODY).collect();
    let body = match tokio::time::timeout(REQUEST_TIMEOUT, body).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => {
            return Ok(plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the review is too large",
            ));
        }
        Ok(Err(e)) => {
            return Ok(plain(StatusCode::BAD_REQUEST, &e.to_string()));
        }
        Err(_) => return Ok(plain(StatusCode::REQUEST_TIMEOUT, "the body was too slow")),
    };
    let deadline = limits.review_deadline;
    let answer = match route {
        Route::Validate => {
            let review = off_runtime(deadline, {
                let body = body.clone();
                let validation = limits.validation;
                move || crate::review::review_with(&body, &validation)
            });
            let review = review.await;
            serde_json::to_vec(&review.unwrap_or_else(|| crate::review::too_slow(&body, deadline)))
        }
        Route::MutatePods(injector) => {
            let review = off_runtime(deadline, move || review_pod(&body, injector.as_ref()));
            match review.await {
                Some(Ok(review)) => serde_json::to_vec(&review),
                // Not a verdict: the API server reports a failed call and `failurePolicy`
                // decides.
                Some(Err(e)) => return Ok(plain(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())),
                None => {
                    let message = format!("sidecar injection took longer than {deadline:?}");
                    return Ok(plain(StatusCode::SERVICE_UNAVAILABLE, &message));
                }
            }
        }
    };
    Ok(match answer {
        Ok(json) => {
            let mut response = Response::new(Full::new(Bytes::from(json)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    })
}

/// Runs `work` on the blocking pool, so a slow review never stalls the runtime that serves
/// xDS; `None` when it did not finish by `deadline` (it runs on, its answer dropped) or
/// panicked (logged).
async fn off_runtime<T: Send + 'static>(
    deadline: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    match tokio::time::timeout(deadline, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(answer)) => Some(answer),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "an admission review panicked");
            None
        }
        Err(_) => {
            tracing::warn!(?deadline, "an admission review missed its deadline");
            None
        }
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
        sync::oneshot,
    };
    use tokio_rustls::{
        TlsConnector,
        rustls::{
            ClientConfig, RootCertStore,
            pki_types::{CertificateDer, ServerName, pem::PemObject},
        },
    };

    use super::*;
    use crate::certs::{Ca, service_sans};

    const HOST: &str = "remora.remora-system.svc";

    async fn start(
        ca: &Ca,
        injector: Option<Arc<dyn PodInjector>>,
    ) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        start_with(ca, injector, Limits::default()).await
    }

    async fn start_with(
        ca: &Ca,
        injector: Option<Arc<dyn PodInjector>>,
        limits: Limits,
    ) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let identity = ca
            .issue(&service_sans("remora", "remora-system"))
            .expect("a serving cert");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("an address");
        let (stop, stopped) = oneshot::channel::<()>();
        let cert = serving_cert(&identity).expect("a serving cert");
        let task = tokio::spawn(async move {
            serve(listener, cert, injector, limits, async {
                let _ = stopped.await;
            })
            .await
            .expect("serves");
        });
        (addr, stop, task)
    }

    /// Stops a server from [`start`] and checks that it ends promptly, without a panic.
    async fn shut_down(stop: oneshot::Sender<()>, task: tokio::task::JoinHandle<()>) {
        stop.send(()).expect("the server runs");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("shutdown is prompt")
            .expect("no panic");
    }

    /// One request over TLS, verified against `ca` for the Service's name; the raw response.
    async fn call(addr: SocketAddr, ca: &Ca, head: &str, body: &[u8]) -> std::io::Result<String> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).expect("CA PEM"))
            .expect("a root");
        let config = ClientConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(HOST).expect("a DNS name");
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        tls.write_all(
            format!(
                "{head}\r\nhost: {HOST}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await?;
        tls.write_all(body).await?;
        let mut out = Vec::new();
        tls.read_to_end(&mut out).await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    #[tokio::test]
    async fn reviews_over_tls_verified_against_the_ca() {
        let ca = Ca::generate().expect("a CA");
        let (addr, stop, task) = start(&ca, None).await;
        let review = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u1",
                "kind": {"group": "remora.dev", "version": "v1alpha1", "kind": "TrafficRoute"},
                "resource": {"group": "remora.dev", "version": "v1alpha1", "resource": "trafficroutes"},
                "name": "r", "namespace": "demo", "operation": "CREATE",
                "userInfo": {"username": "admin"},
                "object": {"apiVersion": "remora.dev/v1alpha1", "kind": "TrafficRoute",
                           "metadata": {"name": "r", "namespace": "demo"},
                           "spec": {"parentRefs": [], "http": []}}
            }
        });
        let body = serde_json::to_vec(&review).expect("json");
        let reply = call(addr, &ca, &format!("POST {PATH} HTTP/1.1"), &body)
            .await
            .expect("a reply");
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains("\"allowed\":false"), "{reply}");
        assert!(reply.contains("spec.parentRefs"), "{reply}");

        for path in ["/mutate", MUTATE_PODS_PATH] {
            let reply = call(addr, &ca, &format!("POST {path} HTTP/1.1"), b"{}")
                .await
                .expect("a reply");
            assert!(reply.starts_with("HTTP/1.1 404"), "{path}: {reply}");
        }
        let reply = call(addr, &ca, &format!("GET {PATH} HTTP/1.1"), b"")
            .await
            .expect("a reply");
        assert!(reply.starts_with("HTTP/1.1 405"), "{reply}");
        let huge = vec![b' '; MAX_BODY + 1];
        let reply = call(addr, &ca, &format!("POST {PATH} HTTP/1.1"), &huge).await;
        // The server may close before the client has written it all; either way no review.
        if let Ok(reply) = reply {
            assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
        }

        shut_down(stop, task).await;
    }

    /// Injects into pods named `ready-*`; cannot decide for any other.
    #[derive(Debug)]
    struct OnlyReady;

    impl PodInjector for OnlyReady {
        fn inject(
            &self,
            _: &str,
            pod: &k8s_openapi::api::core::v1::Pod,
        ) -> Result<Vec<remora_inject::JsonPatchOp>, crate::InjectFailure> {
            match pod.metadata.name.as_deref() {
                Some(n) if n.starts_with("ready-") => Ok(vec![remora_inject::JsonPatchOp::Add {
                    path: "/metadata/labels".into(),
                    value: serde_json::json!({"injected": "yes"}),
                }]),
                _ => Err(crate::InjectFailure::Unavailable("still listing".into())),
            }
        }
    }

    #[tokio::test]
    async fn pod_reviews_are_answered_by_the_injector() {
        let ca = Ca::generate().expect("a CA");
        let (addr, stop, task) = start(&ca, Some(Arc::new(OnlyReady))).await;
        let head = format!("POST {MUTATE_PODS_PATH} HTTP/1.1");
        let reply = call(addr, &ca, &head, &pod_review("ready-1"))
            .await
            .expect("a reply");
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains("\"patchType\":\"JSONPatch\""), "{reply}");
        let reply = call(addr, &ca, &head, &pod_review("early-1"))
            .await
            .expect("a reply");
        assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
        assert!(reply.contains("still listing"), "{reply}");
        // The validating path is unaffected by the injector.
        let reply = call(addr, &ca, &format!("POST {PATH} HTTP/1.1"), b"{}")
            .await
            .expect("a reply");
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

        shut_down(stop, task).await;
    }

    /// Takes its time over every pod.
    #[derive(Debug)]
    struct Slow;

    impl PodInjector for Slow {
        fn inject(
            &self,
            _: &str,
            _: &k8s_openapi::api::core::v1::Pod,
        ) -> Result<Vec<remora_inject::JsonPatchOp>, crate::InjectFailure> {
            std::thread::sleep(Duration::from_secs(2));
            Ok(Vec::new())
        }
    }

    fn pod_review(name: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u2",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "name": name, "namespace": "shop", "operation": "CREATE",
                "userInfo": {"username": "admin"},
                "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                           "spec": {"containers": [{"name": "web"}]}}
            }
        }))
        .expect("json")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_review_past_its_deadline_gets_no_verdict() {
        let ca = Ca::generate().expect("a CA");
        let limits = Limits {
            review_deadline: Duration::from_millis(100),
            ..Limits::default()
        };
        let (addr, stop, task) = start_with(&ca, Some(Arc::new(Slow)), limits).await;
        let head = format!("POST {MUTATE_PODS_PATH} HTTP/1.1");
        let reply = call(addr, &ca, &head, &pod_review("slow-1"))
            .await
            .expect("a reply");
        assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
        assert!(reply.contains("took longer than 100ms"), "{reply}");
        shut_down(stop, task).await;
    }

    #[test]
    fn an_object_whose_checks_run_too_long_is_refused_with_its_uid() {
        let review = crate::review::too_slow(&pod_review("big"), Duration::from_secs(5));
        let response = review.response.expect("a response");
        assert_eq!(response.uid, "u2");
        assert!(!response.allowed);
        assert!(
            response.result.message.contains("within 5s"),
            "{:?}",
            response.result
        );
    }

    #[tokio::test]
    async fn a_connection_over_the_cap_is_closed() {
        let ca = Ca::generate().expect("a CA");
        let limits = Limits {
            max_connections: 1,
            ..Limits::default()
        };
        let (addr, stop, task) = start_with(&ca, None, limits).await;
        // The first connection holds the only place (its handshake waits for a hello).
        let held = TcpStream::connect(addr)
            .await
            .expect("the first connection");
        let mut second = TcpStream::connect(addr)
            .await
            .expect("accepted, then closed");
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the second connection was served: {read:?}"
        );
        drop(held);
        shut_down(stop, task).await;
    }

    #[tokio::test]
    async fn a_replaced_certificate_serves_new_handshakes() {
        let old = Ca::generate().expect("a CA");
        let new = Ca::generate().expect("a CA");
        let identity = old.issue(&[HOST.to_owned()]).expect("a serving cert");
        let cert = serving_cert(&identity).expect("a serving cert");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("an address");
        let served = cert.clone();
        tokio::spawn(async move {
            serve(
                listener,
                served,
                None,
                Limits::default(),
                std::future::pending(),
            )
            .await
        });
        let head = format!("GET {PATH} HTTP/1.1");
        assert!(call(addr, &old, &head, b"").await.is_ok());
        assert!(
            call(addr, &new, &head, b"").await.is_err(),
            "not yet signed by the new CA"
        );
        replace_cert(
            &cert,
            &new.issue(&[HOST.to_owned()]).expect("a serving cert"),
        )
        .expect("replaced");
        assert!(call(addr, &new, &head, b"").await.is_ok());
    }
}
