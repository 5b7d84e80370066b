//! Who may use `remora.v1.Proxies`: a proxy's config names its peers, routes and endpoints,
//! so the API answers only callers an [`Access`] lets through. The control plane in a
//! cluster asks Kubernetes' RBAC; local mode, on a laptop, lets everyone in.

use std::{future::Future, pin::Pin};

use remora_identity::Peer;
use tonic::{Status, metadata::MetadataMap};

/// What a check may look at: the call's metadata (a bearer token) and its connection (a
/// client certificate).
#[derive(Clone, Copy, Debug)]
pub struct Caller<'a> {
    /// The request's gRPC metadata.
    pub metadata: &'a MetadataMap,
    /// The connection's peer, when the server knows it.
    pub peer: Option<&'a Peer>,
}

/// What the caller wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// List proxies and their sync state.
    List,
    /// Read one proxy's config.
    Get,
}

impl Verb {
    /// The Kubernetes verb an RBAC rule grants for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::List => "list",
            Verb::Get => "get",
        }
    }
}

/// A boxed future, so that checks can be trait objects.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Status>> + Send + 'a>>;

/// Decides whether a caller may do `verb` on the proxies of `namespace` (empty: all of them).
pub trait Access: Send + Sync + 'static {
    /// `Ok` to answer the call; otherwise the status to refuse it with (UNAUTHENTICATED when
    /// the caller is unknown, PERMISSION_DENIED when it may not).
    fn check<'a>(&'a self, caller: Caller<'a>, verb: Verb, namespace: &'a str) -> CheckFuture<'a>;
}

/// Lets every caller in: for `remora local --insecure` on a laptop, never a cluster.
#[derive(Clone, Copy, Debug, Default)]
pub struct Open;

impl Access for Open {
    fn check<'a>(&'a self, _: Caller<'a>, _: Verb, _: &'a str) -> CheckFuture<'a> {
        Box::pin(async { Ok(()) })
    }
}
