//! What can go wrong with certificates and keys. Messages name the input at fault and the fix;
//! none ever carries private key material (key errors say what is wrong in words of their own,
//! never the parser's text, which may quote the input).

use remora_api::spiffe::{SpiffeError, SpiffeId};
use tokio_rustls::rustls::{self, server::VerifierBuilderError};

/// Why a CA, a trust bundle, a key or a certificate cannot be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// The text is not PEM.
    #[error("{what} is not PEM: {reason}; give PEM text (-----BEGIN CERTIFICATE----- …)")]
    Pem {
        /// Which input, e.g. `ca.crt`.
        what: String,
        /// The PEM parser's complaint.
        reason: String,
    },
    /// The text holds no certificate.
    #[error("{what} holds no certificate: give at least one -----BEGIN CERTIFICATE----- block")]
    NoCertificate {
        /// Which input.
        what: String,
    },
    /// A PEM block is not an X.509 certificate.
    #[error("{what} is not an X.509 certificate ({reason}): give the DER certificate as PEM")]
    Certificate {
        /// Which certificate, e.g. `tls.crt certificate 1`.
        what: String,
        /// The X.509 parser's complaint.
        reason: String,
    },
    /// A certificate that must sign certificates cannot.
    #[error(
        "{what} ({subject}) is not a CA certificate: it needs basicConstraints CA:true and, if it \
         has a key usage, keyCertSign; give the CA's own certificate, not one it issued"
    )]
    NotCa {
        /// Which certificate.
        what: String,
        /// Its subject.
        subject: String,
    },
    /// A private key cannot be read.
    #[error("{what} is not a usable private key: {reason}")]
    Key {
        /// Which key, e.g. `tls.key`.
        what: String,
        /// What is wrong with it, in words of our own (never the key's text).
        reason: &'static str,
    },
    /// The CA's key does not belong to its signing certificate.
    #[error(
        "tls.key is not the private key of the signing certificate ({subject}, the first in \
         tls.crt): store the key that certificate was issued for"
    )]
    KeyMismatch {
        /// The signing certificate's subject.
        subject: String,
    },
    /// A certificate of the CA's chain is not signed by the one after it.
    #[error(
        "tls.crt is out of order: certificate {index} ({subject}) is not signed by the next one \
         ({next}); list the signing certificate first, then each issuer above it"
    )]
    ChainBroken {
        /// Its position in `tls.crt`, from 1.
        index: usize,
        /// Its subject.
        subject: String,
        /// The subject of the certificate after it.
        next: String,
    },
    /// The CA's chain does not lead to a root of its trust bundle.
    #[error(
        "tls.crt ends at {subject}, which is neither a root in ca.crt nor signed by one: put the \
         root that issued it in ca.crt"
    )]
    NotAnchored {
        /// The subject of the last certificate of the chain.
        subject: String,
    },
    /// A certificate of the CA has expired.
    #[error(
        "{what} ({subject}) expired at {not_after}: renew it and store the new one (a root remora \
         made itself is replaced by removing the stored CA, so a new one is made)"
    )]
    Expired {
        /// Which certificate.
        what: String,
        /// Its subject.
        subject: String,
        /// When it expired (RFC 3339).
        not_after: String,
    },
    /// A certificate the CA signs does not verify against its own trust bundle.
    #[error(
        "a certificate signed by this CA does not verify against ca.crt ({reason}): check that \
         tls.crt, tls.key and ca.crt belong together"
    )]
    Unusable {
        /// The verifier's complaint.
        reason: String,
    },
    /// A trust domain or SPIFFE ID is not of the form this mesh uses.
    #[error(transparent)]
    Spiffe(#[from] SpiffeError),
    /// rcgen could not make a key, a certificate or a CSR.
    #[error("cannot make {what}: {source}")]
    Generate {
        /// What was being made.
        what: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// A certificate names no SPIFFE ID.
    #[error(
        "the certificate names no SPIFFE ID (no spiffe:// URI SAN): it is not a workload \
         certificate of this mesh"
    )]
    NoSpiffeId,
    /// A certificate names more than one SPIFFE ID.
    #[error(
        "the certificate names {} SPIFFE IDs ({}): a workload certificate names exactly one",
        ids.len(),
        ids.join(", ")
    )]
    SeveralSpiffeIds {
        /// The IDs it names.
        ids: Vec<String>,
    },
    /// rustls refused a certificate, key or configuration.
    #[error("rustls refused {what}: {source}")]
    Rustls {
        /// What it refused.
        what: &'static str,
        /// rustls' error.
        #[source]
        source: rustls::Error,
    },
    /// The trust bundle cannot make a verifier.
    #[error("the trust bundle cannot verify peers: {0}; give at least one usable root in ca.crt")]
    Verifier(#[from] VerifierBuilderError),
    /// The system's random number generator failed.
    #[error("the system's random number generator failed: {what} cannot be made; retry")]
    Random {
        /// What needed randomness.
        what: &'static str,
    },
    /// A certificate could not be issued.
    #[error(transparent)]
    Issue(#[from] IssueError),
}

/// Why a CSR was not signed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The CSR cannot be read, its signature does not verify, or its key is not ECDSA P-256.
    #[error(
        "the CSR cannot be read: {0}; send a PEM CERTIFICATE REQUEST signed by the workload's \
         ECDSA P-256 key"
    )]
    Csr(String),
    /// The CSR names another identity than the one granted.
    #[error(
        "the CSR asks for {asked} but the caller is {granted}: make the CSR for {granted} (or \
         with no URI SAN)"
    )]
    WrongIdentity {
        /// The URI SAN the CSR names.
        asked: String,
        /// The identity the caller proved.
        granted: SpiffeId,
    },
    /// The grant names an identity of another trust domain than the CA's.
    #[error("{id} is not in the CA's trust domain {trust_domain}: grant an identity of it")]
    ForeignTrustDomain {
        /// The identity granted.
        id: SpiffeId,
        /// The CA's trust domain.
        trust_domain: String,
    },
    /// The CA can no longer sign: its signing certificate expired.
    #[error(
        "the CA's signing certificate expired at {not_after}: replace the CA (a new root or a \
         renewed intermediate)"
    )]
    CaExpired {
        /// When it expired (RFC 3339).
        not_after: String,
    },
    /// The certificate could not be signed.
    #[error("cannot sign the certificate: {0}")]
    Sign(#[source] rcgen::Error),
    /// No random serial number could be made.
    #[error("the system's random number generator failed: no serial number; retry")]
    Random,
}
