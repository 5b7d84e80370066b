//! Reading a CSR: its signature is checked and its key taken; nothing else it asks for is
//! granted.

use rcgen::{PKCS_ECDSA_P256_SHA256, PublicKeyData, SignatureAlgorithm};
use remora_api::spiffe::SpiffeId;
use tokio_rustls::rustls::pki_types::{CertificateSigningRequestDer, pem::PemObject};
use x509_parser::{
    certification_request::X509CertificationRequest,
    extensions::{GeneralName, ParsedExtension},
    oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY},
    prelude::FromDer,
    x509::SubjectPublicKeyInfo,
};

use crate::IssueError;

/// The ECDSA P-256 public key of a CSR, as the leaf will carry it.
pub(crate) struct CsrKey {
    point: Vec<u8>,
}

impl PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

/// The key of a CSR whose signature verifies, whose key is ECDSA P-256, and which names no
/// URI SAN but `granted`.
pub(crate) fn public_key(csr_pem: &str, granted: &SpiffeId) -> Result<CsrKey, IssueError> {
    let refuse = |reason: &str| IssueError::Csr(reason.to_owned());
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|_| refuse("it is not PEM with a -----BEGIN CERTIFICATE REQUEST----- block"))?;
    let (_, csr) = X509CertificationRequest::from_der(&der)
        .map_err(|e| IssueError::Csr(format!("it is not a PKCS#10 request ({e})")))?;
    csr.verify_signature()
        .map_err(|_| refuse("its signature does not verify with the key it carries"))?;
    let spki = &csr.certification_request_info.subject_pki;
    if !is_p256(spki) {
        return Err(refuse("its key is not ECDSA P-256"));
    }
    only_granted_uris(&csr, granted)?;
    Ok(CsrKey {
        point: spki.subject_public_key.data.to_vec(),
    })
}

fn is_p256(spki: &SubjectPublicKeyInfo<'_>) -> bool {
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY && curve == Some(OID_EC_P256)
}

/// Every URI SAN the CSR asks for is `granted`.
fn only_granted_uris(
    csr: &X509CertificationRequest<'_>,
    granted: &SpiffeId,
) -> Result<(), IssueError> {
    let granted_text = granted.to_string();
    for extension in csr.requested_extensions().into_iter().flatten() {
        match extension {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    if let GeneralName::URI(uri) = name
                        && *uri != granted_text
                    {
                        return Err(IssueError::WrongIdentity {
                            asked: (*uri).to_owned(),
                            granted: granted.clone(),
                        });
                    }
                }
            }
            // A name that cannot be read could hide another identity.
            ParsedExtension::ParseError { .. } => {
                return Err(IssueError::Csr(
                    "an extension it requests cannot be read".to_owned(),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}
