//! The webhook's own CA and the serving certificates it signs. The CA is kept in a Secret so
//! every replica signs with the same one and the webhook configuration's `caBundle` names
//! one CA; each replica signs its own serving certificate at start, so no serving key ever
//! leaves its pod.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};
use tokio_rustls::rustls::{
    self,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    sign::CertifiedKey,
};

/// How long a new CA is valid. Long, because a CA change means every replica must re-sign.
const CA_VALIDITY: Duration = Duration::days(3650);
/// How long a serving certificate is valid; replicas sign a new one at every start.
const SERVING_VALIDITY: Duration = Duration::days(365);
/// Allowance for clocks that run behind this one.
const CLOCK_SKEW: Duration = Duration::hours(1);

/// Why a certificate or key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A new key pair could not be generated.
    #[error("cannot generate a key pair: {0}")]
    Key(#[source] rcgen::Error),
    /// A certificate could not be signed.
    #[error("cannot sign the {what} certificate: {source}")]
    Sign {
        /// Which certificate: `CA` or `serving`.
        what: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// The stored CA key cannot be used for signing.
    #[error("the CA private key is not a PEM key rcgen can sign with: {0}")]
    CaKey(#[source] rcgen::Error),
    /// A certificate or key is not valid PEM.
    #[error("{what} is not PEM: {source}")]
    Pem {
        /// Which certificate or key.
        what: &'static str,
        /// The PEM parser's error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A PEM text that should hold a certificate holds none.
    #[error("{0} holds no certificate")]
    NoCertificate(&'static str),
    /// rustls refused the private key.
    #[error("the TLS key cannot sign: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A certificate chain and its private key, both PEM: what a serving identity is, whether
/// signed here or read from a `kubernetes.io/tls` Secret.
#[derive(Clone)]
pub struct TlsIdentity {
    /// The certificate, then any intermediates, as PEM.
    pub cert_chain_pem: String,
    /// The certificate's private key, as PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("TlsIdentity")
            .field("cert_chain_pem", &self.cert_chain_pem)
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// The chain and a ring signing key, as rustls serves them.
    pub(crate) fn certified_key(&self) -> Result<CertifiedKey, CertError> {
        let certs = CertificateDer::pem_slice_iter(self.cert_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| CertError::Pem {
                what: "the serving certificate",
                source,
            })?;
        if certs.is_empty() {
            return Err(CertError::NoCertificate("the serving certificate"));
        }
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|source| {
            CertError::Pem {
                what: "the serving key",
                source,
            }
        })?;
        let signing_key = provider().key_provider.load_private_key(key)?;
        Ok(CertifiedKey::new(certs, signing_key))
    }
}

/// ring, as kube uses, so only one crypto provider is built.
pub(crate) fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The webhook's certificate authority.
pub struct Ca {
    cert_pem: String,
    key: KeyPair,
}

impl Ca {
    /// A new CA with a fresh key.
    pub fn generate() -> Result<Ca, CertError> {
        let key = KeyPair::generate().map_err(CertError::Key)?;
        let now = OffsetDateTime::now_utc();
        let mut params = ca_params();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + CA_VALIDITY;
        let cert = params
            .self_signed(&key)
            .map_err(|source| CertError::Sign { what: "CA", source })?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key,
        })
    }

    /// The CA another replica stored.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, CertError> {
        // Only checked: the PEM text itself is what the caBundle carries.
        CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|source| CertError::Pem {
            what: "the CA certificate",
            source,
        })?;
        let key = KeyPair::from_pem(key_pem).map_err(CertError::CaKey)?;
        Ok(Ca {
            cert_pem: cert_pem.to_owned(),
            key,
        })
    }

    /// The CA certificate: the `caBundle` the API server verifies serving certificates with.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key as PEM, for the Secret that shares it with the other replicas.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A serving certificate for these names; entries that parse as IP addresses become IP
    /// SANs, the rest DNS names.
    pub fn issue(&self, sans: &[String]) -> Result<TlsIdentity, CertError> {
        let key = KeyPair::generate().map_err(CertError::Key)?;
        let now = OffsetDateTime::now_utc();
        let sign_err = |source| CertError::Sign {
            what: "serving",
            source,
        };
        let mut params = CertificateParams::new(sans.to_vec()).map_err(sign_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            sans.first().map_or("remora-webhook", String::as_str),
        );
        params.distinguished_name = dn;
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + SERVING_VALIDITY;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        // The issuer is rebuilt from the same parameters the CA certificate was made from:
        // only its name and key matter for signing, and both are the stored ones.
        let issuer = Issuer::new(ca_params(), &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(sign_err)?;
        Ok(TlsIdentity {
            cert_chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The CA's name and uses. Changing the name would break signing with CAs already stored.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Remora");
    dn.push(DnType::CommonName, "Remora admission webhook CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// The names the API server uses to reach the webhook through its Service.
pub fn service_sans(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_ca_signs_as_the_one_it_was() {
        let ca = Ca::generate().expect("a CA");
        let again = Ca::from_pem(ca.cert_pem(), &ca.key_pem()).expect("the CA reads back");
        assert_eq!(again.cert_pem(), ca.cert_pem());
        let identity = again
            .issue(&service_sans("remora", "remora-system"))
            .expect("a serving cert");
        identity.certified_key().expect("a usable serving identity");
    }

    #[test]
    fn garbage_is_named() {
        let ca = Ca::generate().expect("a CA");
        let e = Ca::from_pem("nonsense", &ca.key_pem())
            .err()
            .expect("not a certificate");
        assert!(e.to_string().contains("the CA certificate"), "{e}");
        let e = Ca::from_pem(ca.cert_pem(), "nonsense")
            .err()
            .expect("not a key");
        assert!(e.to_string().contains("CA private key"), "{e}");
    }
}
