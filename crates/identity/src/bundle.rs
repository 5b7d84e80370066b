//! The trust bundle: the roots a peer's certificate must chain to.

use tokio_rustls::rustls::{RootCertStore, pki_types::CertificateDer};

use crate::{PkiError, cert};

/// Roots a peer certificate must chain to (one during normal operation, two during a root
/// rotation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustBundle {
    roots: Vec<CertificateDer<'static>>,
}

impl TrustBundle {
    /// The bundle a PEM text holds (`ca.crt`): at least one certificate, each a CA
    /// certificate rustls accepts as a trust anchor. Duplicates are dropped.
    pub fn from_pem(pem: &str) -> Result<TrustBundle, PkiError> {
        let roots = cert::certs_from_pem(pem, "the trust bundle (ca.crt)")?;
        for (i, der) in roots.iter().enumerate() {
            check_root(der, i)?;
        }
        Ok(TrustBundle::of(roots))
    }

    /// A bundle of these roots, already checked, without duplicates.
    pub(crate) fn of(roots: impl IntoIterator<Item = CertificateDer<'static>>) -> TrustBundle {
        let mut unique: Vec<CertificateDer<'static>> = Vec::new();
        for root in roots {
            if !unique.contains(&root) {
                unique.push(root);
            }
        }
        TrustBundle { roots: unique }
    }

    /// The roots as PEM text, in order.
    pub fn to_pem(&self) -> String {
        cert::certs_to_pem(&self.roots)
    }

    /// The roots, DER.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// Both bundles' roots: this one's first, then the other's not already here (a root
    /// rotation trusts the old and the new root for a while).
    pub fn merged(&self, other: &TrustBundle) -> TrustBundle {
        TrustBundle::of(self.roots.iter().chain(&other.roots).cloned())
    }

    /// The roots as rustls verifies with them.
    pub fn root_store(&self) -> RootCertStore {
        let mut store = RootCertStore::empty();
        // Every root was checked to be a usable anchor when the bundle was made, so none
        // is skipped here.
        store.add_parsable_certificates(self.roots.iter().cloned());
        store
    }

    /// Whether `der` is one of the roots.
    pub(crate) fn contains(&self, der: &CertificateDer<'_>) -> bool {
        self.roots.iter().any(|root| root.as_ref() == der.as_ref())
    }
}

/// A root must be a CA certificate rustls can make a trust anchor of.
fn check_root(der: &CertificateDer<'static>, index: usize) -> Result<(), PkiError> {
    let what = format!("ca.crt certificate {}", index + 1);
    let parsed = cert::parse(der, &what)?;
    if !cert::can_sign(&parsed) {
        return Err(PkiError::NotCa {
            what,
            subject: cert::subject(&parsed),
        });
    }
    RootCertStore::empty()
        .add(der.clone())
        .map_err(|source| PkiError::Rustls {
            what: "a root of ca.crt as a trust anchor",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, grant};

    #[test]
    fn merging_keeps_order_and_drops_duplicates() {
        let (a, b) = (testing::ca(), testing::ca());
        let (a, b) = (a.bundle(), b.bundle());
        let both = a.merged(b);
        assert_eq!(both.roots(), [a.roots()[0].clone(), b.roots()[0].clone()]);
        assert_eq!(a.merged(a), *a);
        assert_eq!(both.merged(a).merged(b), both);
        assert_eq!(b.merged(a).roots()[0], b.roots()[0]);
    }

    #[test]
    fn a_bundle_reads_back_from_its_pem_without_duplicates() {
        let (a, b) = (testing::ca(), testing::ca());
        let both = a.bundle().merged(b.bundle());
        assert_eq!(TrustBundle::from_pem(&both.to_pem()).expect("PEM"), both);
        let twice = format!("{}{}", a.bundle().to_pem(), a.bundle().to_pem());
        assert_eq!(TrustBundle::from_pem(&twice).expect("PEM"), *a.bundle());
        assert_eq!(both.root_store().len(), 2);
    }

    #[test]
    fn a_bundle_holds_only_ca_certificates() {
        let ca = testing::ca();
        let (issued, _) = testing::workload(&ca, &grant("shop", "web", "web-0"));
        let e = TrustBundle::from_pem(&issued.chain_pem).expect_err("a leaf");
        assert!(matches!(e, PkiError::NotCa { .. }), "{e}");
        assert!(e.to_string().contains("ca.crt certificate 1"), "{e}");
        let e = TrustBundle::from_pem("").expect_err("empty");
        assert!(matches!(e, PkiError::NoCertificate { .. }), "{e}");
    }
}
