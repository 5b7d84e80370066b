//! A workload's private key: made in the process that uses it, never printed.

use std::fmt;

use rcgen::{
    CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType,
    string::Ia5String,
};
use remora_api::spiffe::SpiffeId;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::PkiError;

/// A private key made in this process; never printed (Debug = `WorkloadKey(<redacted>)`).
pub struct WorkloadKey {
    key: KeyPair,
}

impl fmt::Debug for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WorkloadKey(<redacted>)")
    }
}

impl WorkloadKey {
    /// A fresh ECDSA P-256 key.
    pub fn generate() -> Result<WorkloadKey, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| {
            PkiError::Generate {
                what: "a workload key",
                source,
            }
        })?;
        Ok(WorkloadKey { key })
    }

    /// A CSR for `id`, signed by this key: its only name is the SPIFFE URI SAN.
    pub fn csr_pem(&self, id: &SpiffeId) -> Result<String, PkiError> {
        let generate = |source| PkiError::Generate {
            what: "the CSR",
            source,
        };
        let mut params = CertificateParams::default();
        // The CA names the subject itself; the request carries none.
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(
            Ia5String::try_from(id.to_string()).map_err(generate)?,
        )];
        params
            .serialize_request(&self.key)
            .and_then(|csr| csr.pem())
            .map_err(generate)
    }

    /// The key as PKCS#8 PEM, for Envoy's SDS secret only.
    pub fn private_key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    pub(crate) fn key_pair(&self) -> &KeyPair {
        &self.key
    }

    /// The key as rustls loads it.
    pub(crate) fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key.serialize_der()).into()
    }
}

#[cfg(test)]
mod tests {
    use x509_parser::{
        certification_request::X509CertificationRequest, extensions::ParsedExtension,
        prelude::FromDer,
    };

    use super::*;
    use crate::testing::assert_no_key;

    #[test]
    fn a_key_is_never_printed() {
        let key = WorkloadKey::generate().expect("a key");
        let debug = format!("{key:?}");
        assert_eq!(debug, "WorkloadKey(<redacted>)");
        assert_no_key(&debug, &key.private_key_pem());
        assert!(
            key.private_key_pem()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
    }

    #[test]
    fn a_csr_names_only_the_spiffe_id() {
        let key = WorkloadKey::generate().expect("a key");
        let csr = key
            .csr_pem(&SpiffeId::new("cluster.local", "shop", "web"))
            .expect("a CSR");
        let der = pem::parse(&csr).expect("PEM").into_contents();
        let (_, parsed) = X509CertificationRequest::from_der(&der).expect("PKCS#10");
        parsed.verify_signature().expect("signed by the key");
        let names: Vec<String> = parsed
            .requested_extensions()
            .into_iter()
            .flatten()
            .filter_map(|e| match e {
                ParsedExtension::SubjectAlternativeName(san) => Some(&san.general_names),
                _ => None,
            })
            .flatten()
            .map(|name| name.to_string())
            .collect();
        assert_eq!(names, ["URI(spiffe://cluster.local/ns/shop/sa/web)"]);
        assert_eq!(parsed.certification_request_info.subject.iter().count(), 0);
    }
}
