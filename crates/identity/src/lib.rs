//! Workload identities: the mesh CA, certificates for SPIFFE IDs, and the TLS configs both
//! ends of a connection use.
//!
//! The mesh CA ([`MeshCa`]) is a self-signed root or an intermediate it was given, stored in
//! the shape of a `kubernetes.io/tls` Secret ([`CaPem`]). A workload makes its own key
//! ([`WorkloadKey`]) and sends a CSR; the CA signs it for what the caller proved to be
//! ([`Grant`]), so private keys never leave the process that made them. Both ends of a TLS
//! connection verify the other against the [`TrustBundle`] and read who it is from the one
//! SPIFFE URI SAN of its certificate ([`PeerIdentity`]). Certificates are swapped while
//! connections use them ([`CurrentCert`]), so renewal needs no restart.
//!
//! Crypto is rustls with the *ring* provider, given to every config explicitly: nothing here
//! relies on a process-wide default provider.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bundle;
mod ca;
mod ca_check;
mod cert;
mod csr;
mod current;
mod dial;
mod error;
mod issue;
mod key;
mod peer;
pub mod serve;
#[cfg(test)]
mod testing;
pub mod tls;

use std::time::Duration;

pub use bundle::TrustBundle;
pub use ca::{CaPem, MeshCa};
pub use current::{CertifiedIdentity, CurrentCert};
pub use dial::{DialError, dial};
pub use error::{IssueError, PkiError};
pub use issue::{Grant, Issued};
pub use key::WorkloadKey;
pub use peer::{Peer, PeerIdentity};
pub use remora_api::spiffe::SpiffeId;

/// How long a workload certificate is valid unless configured otherwise: short, because the
/// agent renews at half its lifetime and nothing revokes a certificate.
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
