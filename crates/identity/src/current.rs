//! Certificates as rustls serves them, replaceable while connections use them.

use std::{
    fmt,
    sync::{Arc, PoisonError, RwLock},
    time::SystemTime,
};

use tokio_rustls::rustls::{
    SignatureScheme,
    client::ResolvesClientCert,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use crate::{Issued, PkiError, WorkloadKey, cert};

/// A certificate with its key, ready for rustls.
pub struct CertifiedIdentity {
    key: Arc<CertifiedKey>,
    not_after: SystemTime,
}

impl fmt::Debug for CertifiedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The chain is public; the key is left out.
        f.debug_struct("CertifiedIdentity")
            .field("chain", &cert::certs_to_pem(&self.key.cert))
            .field("not_after", &cert::rfc3339(self.not_after))
            .finish_non_exhaustive()
    }
}

impl CertifiedIdentity {
    /// The issued chain with `key`, which must be the key the leaf was issued for.
    pub fn new(issued: &Issued, key: &WorkloadKey) -> Result<CertifiedIdentity, PkiError> {
        let chain = cert::certs_from_pem(&issued.chain_pem, "the issued certificate chain")?;
        let signer = cert::provider()
            .key_provider
            .load_private_key(key.private_key_der())
            .map_err(|source| PkiError::Rustls {
                what: "the workload key",
                source,
            })?;
        let certified = CertifiedKey::new(chain, signer);
        certified.keys_match().map_err(|source| PkiError::Rustls {
            what: "the workload key for the issued certificate (they do not belong together)",
            source,
        })?;
        Ok(CertifiedIdentity {
            key: Arc::new(certified),
            not_after: issued.not_after,
        })
    }

    /// When the certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

/// A certificate that is replaced while connections use it (renewal without restart): each
/// handshake presents the one set last. Clones share it.
#[derive(Clone, Default)]
pub struct CurrentCert(Arc<RwLock<Option<Arc<CertifiedKey>>>>);

impl fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurrentCert")
            .field("set", &self.is_set())
            .finish()
    }
}

impl CurrentCert {
    /// Presents `id` from the next handshake on; open connections keep theirs.
    pub fn set(&self, id: &CertifiedIdentity) {
        // A poisoned lock still holds a whole value: only an Arc is ever stored.
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(id.key.clone());
    }

    /// Presents `key` (a chain and its signer built elsewhere, e.g. the admission webhook's
    /// certificate from its own CA) from the next handshake on.
    pub fn set_key(&self, key: CertifiedKey) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(key));
    }

    /// Whether a certificate was set.
    pub fn is_set(&self) -> bool {
        self.get().is_some()
    }

    fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for CurrentCert {
    /// `None` (the handshake fails) until a certificate is set.
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}

impl ResolvesClientCert for CurrentCert {
    /// `None` (no client certificate) until one is set.
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.get()
    }

    fn has_certs(&self) -> bool {
        self.is_set()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, assert_no_key, grant, workload};

    #[test]
    fn debug_output_shows_no_key() {
        let ca = testing::ca();
        let (issued, key) = workload(&ca, &grant("shop", "web", "web-0"));
        let identity = CertifiedIdentity::new(&issued, &key).expect("an identity");
        let debug = format!("{identity:?}");
        assert_no_key(&debug, &key.private_key_pem());
        assert!(
            debug.contains("BEGIN CERTIFICATE"),
            "the chain is shown: {debug}"
        );
        let current = CurrentCert::default();
        current.set(&identity);
        assert_no_key(&format!("{current:?}"), &key.private_key_pem());
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let ca = testing::ca();
        let (issued, _) = workload(&ca, &grant("shop", "web", "web-0"));
        let other = WorkloadKey::generate().expect("a key");
        let e = CertifiedIdentity::new(&issued, &other).expect_err("mismatch");
        assert!(e.to_string().contains("do not belong together"), "{e}");
    }

    #[test]
    fn a_current_certificate_is_unset_until_set_and_shared_by_clones() {
        let ca = testing::ca();
        let (issued, key) = workload(&ca, &grant("shop", "web", "web-0"));
        let identity = CertifiedIdentity::new(&issued, &key).expect("an identity");
        assert_eq!(identity.not_after(), issued.not_after);
        let current = CurrentCert::default();
        let clone = current.clone();
        assert!(!clone.is_set() && !ResolvesClientCert::has_certs(&clone));
        current.set(&identity);
        assert!(clone.is_set() && ResolvesClientCert::has_certs(&clone));
        let served = ResolvesClientCert::resolve(&clone, &[], &[]).expect("a certificate");
        assert_eq!(served.cert, testing::chain(&issued));
    }
}
