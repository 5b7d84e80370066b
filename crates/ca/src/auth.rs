//! Who a caller with a bearer token is: the [`Authenticator`] seam between the certificate
//! service and whatever verifies tokens (Kubernetes' TokenReview in a cluster, a fake in
//! tests).

use std::{future::Future, pin::Pin};

pub use remora_api::spiffe::TOKEN_AUDIENCE;

/// A workload that proved who it is: the pod and the service account it runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The pod's namespace (also the service account's).
    pub namespace: String,
    /// The service account the pod runs as.
    pub service_account: String,
    /// The pod's name.
    pub pod: String,
}

/// Why a token does not identify a caller.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token is forged, expired, or its pod is gone.
    #[error("the token is not valid ({0}); send a current projected ServiceAccount token")]
    NotAuthenticated(String),
    /// The token was issued for other audiences.
    #[error(
        "the token is not for audience {TOKEN_AUDIENCE:?} (it is for {0:?}); project a \
         ServiceAccount token with audience {TOKEN_AUDIENCE:?}"
    )]
    WrongAudience(Vec<String>),
    /// The token belongs to a user, not a service account.
    #[error(
        "the token is for {0:?}, not a service account (system:serviceaccount:<namespace>:<name>)"
    )]
    NotServiceAccount(String),
    /// The token is not bound to a pod, so nothing says which pod sends it.
    #[error(
        "the token is not bound to a pod; use a projected ServiceAccount token (a \
         serviceAccountToken volume), which names its pod"
    )]
    NotBoundToPod,
    /// The token could not be checked now (the API server is unreachable or refused the
    /// review); the caller may try again.
    #[error("the token cannot be checked now ({0}); try again")]
    Unavailable(String),
}

impl AuthError {
    /// Whether the answer says something about the token itself, so it can be remembered;
    /// an [`AuthError::Unavailable`] says only that checking failed this time.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, AuthError::Unavailable(_))
    }
}

/// What [`Authenticator::authenticate`] returns: boxed, so the trait stays object-safe.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<Caller, AuthError>> + Send + 'a>>;

/// Verifies a bearer token and says which pod sent it.
pub trait Authenticator: Send + Sync + 'static {
    /// The caller the token identifies, or why it identifies none.
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a>;
}
