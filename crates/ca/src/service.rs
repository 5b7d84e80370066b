//! `remora.v1.Identity/Certify`: a workload proves which pod it is (its certificate from this
//! CA, or a projected ServiceAccount token) and gets a certificate for its SPIFFE ID, bound
//! to that pod, for the key of its CSR.

use std::{
    sync::{Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use remora_identity::{DEFAULT_CERT_TTL, Grant, IssueError, MeshCa, Peer, PeerIdentity, SpiffeId};
use tonic::{Request, Response, Status, metadata::MetadataMap};

use crate::{
    auth::{AuthError, Authenticator, Caller, TOKEN_AUDIENCE},
    issuances::{Issuance, Issuances},
    metrics::{CaMetrics, Refusal},
    pb::{
        CertifyRequest, CertifyResponse,
        identity_server::{Identity, IdentityServer},
    },
};

/// The mesh CA as the service uses it: replaceable while serving (a reloaded Secret, a root
/// rotation); clones share it, and a request in flight keeps the CA it started with.
#[derive(Clone, Debug)]
pub struct SharedCa(Arc<RwLock<Arc<MeshCa>>>);

impl SharedCa {
    /// Serves `ca` until [`SharedCa::set`] gives another.
    pub fn new(ca: MeshCa) -> SharedCa {
        SharedCa(Arc::new(RwLock::new(Arc::new(ca))))
    }

    /// Requests from now on are signed by `ca`.
    pub fn set(&self, ca: MeshCa) {
        // A poisoned lock still holds a whole Arc: replacing it is always safe.
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ca);
    }

    /// The CA now.
    pub fn get(&self) -> Arc<MeshCa> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The `remora.v1.Identity` service.
pub struct IdentityService {
    ca: SharedCa,
    authenticator: Arc<dyn Authenticator>,
    ttl: Duration,
    metrics: CaMetrics,
    issuances: Issuances,
    refusals: Option<Arc<dyn Refusals>>,
}

/// Told of each refused request whose pod is known (its caller proved it, then asked for
/// something it cannot have), so the pod's owner sees why (an Event on the pod, in a cluster).
/// A caller that proved nothing names no pod anyone should believe.
pub trait Refusals: Send + Sync + 'static {
    /// Pod `namespace/pod` was refused for `reason` (a metric label), said as `message`.
    fn refused(&self, namespace: &str, pod: &str, reason: &'static str, message: &str);
}

/// How the caller proved who it is, for the logs.
#[derive(Clone, Copy, Debug)]
enum Proof {
    Certificate,
    Token,
}

/// A refused request: the status for the caller and the reason for the metrics.
struct Refused {
    why: Refusal,
    status: Status,
}

impl Refused {
    fn new(why: Refusal, status: Status) -> Refused {
        Refused { why, status }
    }
}

impl IdentityService {
    /// Issues certificates from `ca` to callers that `authenticator` accepts (or that present
    /// a certificate of the CA), valid for [`DEFAULT_CERT_TTL`].
    pub fn new(ca: SharedCa, authenticator: Arc<dyn Authenticator>) -> IdentityService {
        IdentityService {
            ca,
            authenticator,
            ttl: DEFAULT_CERT_TTL,
            metrics: CaMetrics::default(),
            issuances: Issuances::default(),
            refusals: None,
        }
    }

    /// Tells `refusals` of each refused request of a known pod.
    pub fn with_refusals(mut self, refusals: Arc<dyn Refusals>) -> IdentityService {
        self.refusals = Some(refusals);
        self
    }

    /// Records each certificate issued in `issuances` (by pod).
    pub fn with_issuances(mut self, issuances: Issuances) -> IdentityService {
        self.issuances = issuances;
        self
    }

    /// Certificates are valid for `ttl` (capped by the CA's own expiry).
    pub fn with_ttl(mut self, ttl: Duration) -> IdentityService {
        self.ttl = ttl;
        self
    }

    /// Counts into `metrics` (register them with [`CaMetrics::register`]).
    pub fn with_metrics(mut self, metrics: CaMetrics) -> IdentityService {
        self.metrics = metrics;
        self
    }

    /// The tonic server to add to a router.
    pub fn into_service(self) -> IdentityServer<IdentityService> {
        IdentityServer::new(self)
    }

    /// Who sent `request`: the client certificate's identity when there is one, else the
    /// bearer token's.
    async fn identify<T>(
        &self,
        request: &Request<T>,
        trust_domain: &str,
    ) -> Result<(Caller, Proof), Refused> {
        let certified = request
            .extensions()
            .get::<Peer>()
            .and_then(|p| p.identity.as_ref());
        if let Some(identity) = certified {
            let caller = caller_from_certificate(identity, trust_domain)?;
            return Ok((caller, Proof::Certificate));
        }
        let token = bearer_token(request)?;
        let caller = self
            .authenticator
            .authenticate(token)
            .await
            .map_err(token_refused)?;
        Ok((caller, Proof::Token))
    }

    async fn answer(&self, request: Request<CertifyRequest>) -> Result<CertifyResponse, Refused> {
        let ca = self.ca.get();
        let (caller, proof) = self.identify(&request, ca.trust_domain()).await?;
        let grant = Grant {
            id: SpiffeId::new(
                ca.trust_domain(),
                &caller.namespace,
                &caller.service_account,
            ),
            subject: format!("{}/{}", caller.namespace, caller.pod),
            ttl: self.ttl,
        };
        let csr = request.into_inner().csr;
        let issued = ca
            .issue(&csr, &grant, SystemTime::now())
            .map_err(|e| issue_refused(e, &grant))
            .inspect_err(|refused| {
                if let Some(refusals) = &self.refusals {
                    let message = refused.status.message();
                    refusals.refused(&caller.namespace, &caller.pod, refused.why.label(), message);
                }
            })?;
        tracing::info!(
            id = %grant.id,
            pod = %grant.subject,
            not_after = %unix_seconds(issued.not_after),
            proof = ?proof,
            "issued a workload certificate"
        );
        let issuance = Issuance {
            id: grant.id.clone(),
            issued: SystemTime::now(),
            not_after: issued.not_after,
        };
        self.issuances.record(&grant.subject, issuance);
        Ok(CertifyResponse {
            chain: issued.chain_pem,
            trust_bundle: ca.bundle().to_pem(),
            not_after_unix: unix_seconds(issued.not_after),
        })
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        match self.answer(request).await {
            Ok(answer) => {
                self.metrics.issued();
                Ok(Response::new(answer))
            }
            Err(refused) => {
                self.metrics.refused(refused.why);
                tracing::warn!(
                    reason = refused.why.label(),
                    message = refused.status.message(),
                    "refused a certificate request"
                );
                Err(refused.status)
            }
        }
    }
}

/// The caller a verified client certificate names: an identity of this trust domain whose
/// subject is `<namespace>/<pod>` in the identity's namespace (what this CA writes).
fn caller_from_certificate(identity: &PeerIdentity, trust_domain: &str) -> Result<Caller, Refused> {
    let id = &identity.id;
    let refuse = |why: &str| {
        Refused::new(
            Refusal::BadCertificate,
            Status::unauthenticated(format!(
                "the client certificate for {id} {why}; renew with the pod's token instead"
            )),
        )
    };
    if id.trust_domain != trust_domain {
        return Err(refuse(&format!("is not of trust domain {trust_domain:?}")));
    }
    let subject = identity.subject.as_deref().unwrap_or_default();
    match subject.split_once('/') {
        Some((namespace, pod)) if namespace == id.namespace && !pod.is_empty() => Ok(Caller {
            namespace: id.namespace.clone(),
            service_account: id.service_account.clone(),
            pod: pod.to_owned(),
        }),
        _ => Err(refuse(&format!(
            "does not name a pod of namespace {:?} in its subject (it has {subject:?})",
            id.namespace
        ))),
    }
}

/// The token of `authorization: Bearer <token>`.
fn bearer_token<T>(request: &Request<T>) -> Result<&str, Refused> {
    bearer(request.metadata()).ok_or_else(|| {
        Refused::new(
            Refusal::NoCredentials,
            Status::unauthenticated(format!(
                "no credentials: present a client certificate issued by the mesh CA, or send \
                 metadata `authorization: Bearer <token>` with the pod's projected \
                 ServiceAccount token (audience {TOKEN_AUDIENCE:?})"
            )),
        )
    })
}

/// The token of an `authorization: Bearer <token>` header; `None` when there is none, or it
/// is not a bearer token.
pub fn bearer(metadata: &MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn token_refused(e: AuthError) -> Refused {
    if e.is_refusal() {
        Refused::new(Refusal::BadToken, Status::unauthenticated(e.to_string()))
    } else {
        Refused::new(Refusal::Unavailable, Status::unavailable(e.to_string()))
    }
}

fn issue_refused(e: IssueError, grant: &Grant) -> Refused {
    match e {
        IssueError::WrongIdentity { asked, granted } => Refused::new(
            Refusal::WrongIdentity,
            Status::permission_denied(format!(
                "the CSR asks for {asked}, but pod {} is {granted}: send a CSR for {granted} \
                 (or with no URI SAN)",
                grant.subject
            )),
        ),
        IssueError::Csr(_) => {
            Refused::new(Refusal::BadCsr, Status::invalid_argument(e.to_string()))
        }
        other => Refused::new(
            Refusal::Internal,
            Status::internal(format!("the mesh CA could not sign: {other}")),
        ),
    }
}

/// Seconds since the Unix epoch (0 for a time before it, which no certificate has).
fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    };

    use remora_identity::WorkloadKey;
    use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject};
    use tonic::Code;

    use super::*;
    use crate::auth::AuthFuture;

    const GOOD_TOKEN: &str = "good-token-of-shop-web-0";
    const DOWN_TOKEN: &str = "token-while-the-api-server-is-down";

    /// Accepts one token, for pod shop/web-0 running as `reviews`; counts the calls.
    #[derive(Default)]
    struct OneToken {
        calls: AtomicUsize,
    }

    impl Authenticator for OneToken {
        fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                match token {
                    GOOD_TOKEN => Ok(web_0()),
                    DOWN_TOKEN => Err(AuthError::Unavailable("connection refused".into())),
                    _ => Err(AuthError::NotAuthenticated("invalid bearer token".into())),
                }
            })
        }
    }

    fn web_0() -> Caller {
        Caller {
            namespace: "shop".into(),
            service_account: "reviews".into(),
            pod: "web-0".into(),
        }
    }

    fn reviews_id() -> SpiffeId {
        SpiffeId::new("cluster.local", "shop", "reviews")
    }

    struct Fixture {
        service: IdentityService,
        auth: Arc<OneToken>,
        ca: SharedCa,
        metrics: CaMetrics,
        refusals: Arc<Told>,
    }

    /// The refusals reported, as `ns/pod reason: message`.
    #[derive(Default)]
    struct Told(std::sync::Mutex<Vec<String>>);

    impl Refusals for Told {
        fn refused(&self, namespace: &str, pod: &str, reason: &'static str, message: &str) {
            let line = format!("{namespace}/{pod} {reason}: {message}");
            self.0.lock().expect("not poisoned").push(line);
        }
    }

    fn fixture() -> Fixture {
        let ca = SharedCa::new(MeshCa::generate("cluster.local", SystemTime::now()).expect("a CA"));
        let auth = Arc::new(OneToken::default());
        let metrics = CaMetrics::default();
        let refusals = Arc::new(Told::default());
        let service = IdentityService::new(ca.clone(), auth.clone())
            .with_ttl(Duration::from_secs(3600))
            .with_metrics(metrics.clone())
            .with_refusals(refusals.clone());
        Fixture {
            service,
            auth,
            ca,
            metrics,
            refusals,
        }
    }

    fn csr_for(id: &SpiffeId) -> String {
        let key = WorkloadKey::generate().expect("a key");
        key.csr_pem(id).expect("a CSR")
    }

    fn request(csr: String, token: Option<&str>, peer: Option<Peer>) -> Request<CertifyRequest> {
        let mut request = Request::new(CertifyRequest { csr });
        if let Some(token) = token {
            let value = format!("Bearer {token}").parse().expect("ASCII");
            request.metadata_mut().insert("authorization", value);
        }
        if let Some(peer) = peer {
            request.extensions_mut().insert(peer);
        }
        request
    }

    fn peer(identity: Option<PeerIdentity>) -> Peer {
        Peer {
            remote: Some("127.0.0.1:40000".parse().expect("an address")),
            identity,
        }
    }

    fn certified_as(id: SpiffeId, subject: &str) -> Peer {
        peer(Some(PeerIdentity {
            id,
            subject: Some(subject.into()),
        }))
    }

    fn leaf(answer: &CertifyResponse) -> PeerIdentity {
        let first = CertificateDer::pem_slice_iter(answer.chain.as_bytes())
            .next()
            .expect("a certificate")
            .expect("PEM");
        PeerIdentity::from_leaf(&first).expect("a workload certificate")
    }

    async fn refused(f: &Fixture, request: Request<CertifyRequest>) -> Status {
        f.service.certify(request).await.expect_err("refused")
    }

    #[tokio::test]
    async fn a_request_without_credentials_is_unauthenticated_and_says_what_to_send() {
        let f = fixture();
        let status = refused(&f, request(csr_for(&reviews_id()), None, None)).await;
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(
            status.message().contains("authorization: Bearer"),
            "{}",
            status.message()
        );
        assert!(
            status.message().contains("client certificate"),
            "{}",
            status.message()
        );
        assert_eq!(f.metrics.refused_count(Refusal::NoCredentials), 1);
    }

    #[tokio::test]
    async fn an_authorization_header_of_another_scheme_is_no_credential() {
        let f = fixture();
        let mut r = request(csr_for(&reviews_id()), None, None);
        r.metadata_mut().insert(
            "authorization",
            "Basic dXNlcjpwdw==".parse().expect("ASCII"),
        );
        assert_eq!(refused(&f, r).await.code(), Code::Unauthenticated);
        assert_eq!(f.auth.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_bad_token_is_unauthenticated_with_the_reason() {
        let f = fixture();
        let status = refused(&f, request(csr_for(&reviews_id()), Some("forged"), None)).await;
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(
            status.message().contains("invalid bearer token"),
            "{}",
            status.message()
        );
        assert!(
            !status.message().contains("forged"),
            "the token is never echoed"
        );
        assert_eq!(f.metrics.refused_count(Refusal::BadToken), 1);
        let told = f.refusals.0.lock().expect("not poisoned").clone();
        assert!(told.is_empty(), "an unproven caller names no pod: {told:?}");
    }

    #[tokio::test]
    async fn a_token_that_cannot_be_checked_now_is_unavailable() {
        let f = fixture();
        let status = refused(&f, request(csr_for(&reviews_id()), Some(DOWN_TOKEN), None)).await;
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(f.metrics.refused_count(Refusal::Unavailable), 1);
    }

    #[tokio::test]
    async fn a_csr_for_another_service_account_is_denied_naming_both() {
        let f = fixture();
        let ratings = SpiffeId::new("cluster.local", "shop", "ratings");
        let status = refused(&f, request(csr_for(&ratings), Some(GOOD_TOKEN), None)).await;
        assert_eq!(status.code(), Code::PermissionDenied);
        assert!(
            status.message().contains(&ratings.to_string()),
            "{}",
            status.message()
        );
        assert!(
            status.message().contains(&reviews_id().to_string()),
            "{}",
            status.message()
        );
        assert_eq!(f.metrics.refused_count(Refusal::WrongIdentity), 1);
        let told = f.refusals.0.lock().expect("not poisoned").clone();
        assert_eq!(told.len(), 1, "{told:?}");
        assert!(
            told[0].starts_with("shop/"),
            "reported on the caller's pod: {told:?}"
        );
    }

    #[tokio::test]
    async fn a_bad_csr_is_an_invalid_argument() {
        let f = fixture();
        let status = refused(&f, request("not a CSR".into(), Some(GOOD_TOKEN), None)).await;
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(f.metrics.refused_count(Refusal::BadCsr), 1);
    }

    #[tokio::test]
    async fn a_good_token_gets_a_certificate_for_its_pod() {
        let f = fixture();
        let before = SystemTime::now();
        let answer = f
            .service
            .certify(request(csr_for(&reviews_id()), Some(GOOD_TOKEN), None))
            .await
            .expect("issued")
            .into_inner();
        let identity = leaf(&answer);
        assert_eq!(identity.id, reviews_id());
        assert_eq!(identity.subject.as_deref(), Some("shop/web-0"));
        assert_eq!(answer.trust_bundle, f.ca.get().bundle().to_pem());
        let expected = unix_seconds(before + Duration::from_secs(3600));
        assert!(
            (answer.not_after_unix - expected).abs() <= 5,
            "{}",
            answer.not_after_unix
        );
        assert_eq!(f.metrics.issued_count(), 1);
    }

    #[tokio::test]
    async fn a_certificate_of_the_mesh_renews_without_a_token() {
        let f = fixture();
        let r = request(
            csr_for(&reviews_id()),
            None,
            Some(certified_as(reviews_id(), "shop/web-0")),
        );
        let answer = f.service.certify(r).await.expect("renewed").into_inner();
        assert_eq!(leaf(&answer).subject.as_deref(), Some("shop/web-0"));
        assert_eq!(f.auth.calls.load(Ordering::SeqCst), 0, "no token review");
    }

    #[tokio::test]
    async fn a_certificate_wins_over_a_token_sent_with_it() {
        let f = fixture();
        let r = request(
            csr_for(&reviews_id()),
            Some("forged"),
            Some(certified_as(reviews_id(), "shop/web-0")),
        );
        assert!(f.service.certify(r).await.is_ok());
        assert_eq!(f.auth.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_certified_caller_asking_for_another_identity_is_denied() {
        let f = fixture();
        let ratings = SpiffeId::new("cluster.local", "shop", "ratings");
        let r = request(
            csr_for(&ratings),
            None,
            Some(certified_as(reviews_id(), "shop/web-0")),
        );
        assert_eq!(refused(&f, r).await.code(), Code::PermissionDenied);
    }

    #[tokio::test]
    async fn a_peer_without_an_identity_falls_back_to_the_token() {
        let f = fixture();
        let r = request(csr_for(&reviews_id()), Some(GOOD_TOKEN), Some(peer(None)));
        assert!(f.service.certify(r).await.is_ok());
        assert_eq!(f.auth.calls.load(Ordering::SeqCst), 1);
        let bare = request(csr_for(&reviews_id()), None, Some(peer(None)));
        assert_eq!(refused(&f, bare).await.code(), Code::Unauthenticated);
    }

    #[tokio::test]
    async fn a_certificate_of_another_trust_domain_or_without_a_pod_is_refused() {
        let f = fixture();
        let foreign = SpiffeId::new("example.org", "shop", "reviews");
        for peer in [
            certified_as(foreign, "shop/web-0"),
            certified_as(reviews_id(), "other/web-0"),
            certified_as(reviews_id(), "shop/"),
            peer(Some(PeerIdentity {
                id: reviews_id(),
                subject: None,
            })),
        ] {
            let r = request(csr_for(&reviews_id()), None, Some(peer.clone()));
            let status = refused(&f, r).await;
            assert_eq!(status.code(), Code::Unauthenticated, "{peer:?}");
            assert!(status.message().contains("token"), "{}", status.message());
        }
        assert_eq!(f.metrics.refused_count(Refusal::BadCertificate), 4);
    }

    #[tokio::test]
    async fn a_replaced_ca_signs_the_next_request() {
        let f = fixture();
        let old_bundle = f.ca.get().bundle().to_pem();
        f.ca.set(MeshCa::generate("cluster.local", SystemTime::now()).expect("a CA"));
        let answer = f
            .service
            .certify(request(csr_for(&reviews_id()), Some(GOOD_TOKEN), None))
            .await
            .expect("issued")
            .into_inner();
        assert_ne!(answer.trust_bundle, old_bundle);
        assert_eq!(answer.trust_bundle, f.ca.get().bundle().to_pem());
    }

    /// Collects what is logged while it is the default subscriber.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn logs_name_who_got_what_and_never_the_token_csr_or_key() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let f = fixture();
        let csr = csr_for(&reviews_id());
        let issued = f
            .service
            .certify(request(csr.clone(), Some(GOOD_TOKEN), None))
            .await;
        assert!(issued.is_ok());
        let refused = f
            .service
            .certify(request(csr.clone(), Some("forged-secret"), None))
            .await;
        assert!(refused.is_err());
        let logs =
            String::from_utf8(captured.0.lock().expect("not poisoned").clone()).expect("UTF-8");
        assert!(logs.contains(&reviews_id().to_string()), "{logs}");
        assert!(logs.contains("shop/web-0"), "{logs}");
        for secret in [
            GOOD_TOKEN,
            "forged-secret",
            "PRIVATE KEY",
            "CERTIFICATE REQUEST",
        ] {
            assert!(!logs.contains(secret), "{secret} in {logs}");
        }
        let csr_body = csr.lines().nth(1).expect("a CSR body line");
        assert!(!logs.contains(csr_body), "the CSR in {logs}");
    }

    #[test]
    fn a_token_comes_from_a_bearer_header_only() {
        let mut metadata = MetadataMap::new();
        assert_eq!(bearer(&metadata), None);
        metadata.insert("authorization", "Bearer abc".parse().expect("ascii"));
        assert_eq!(bearer(&metadata), Some("abc"));
        metadata.insert("authorization", "bearer  abc ".parse().expect("ascii"));
        assert_eq!(bearer(&metadata), Some("abc"));
        metadata.insert("authorization", "Basic abc".parse().expect("ascii"));
        assert_eq!(bearer(&metadata), None);
        metadata.insert("authorization", "Bearer ".parse().expect("ascii"));
        assert_eq!(bearer(&metadata), None);
    }
}
