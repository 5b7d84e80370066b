//! Who is at the other end of a TLS connection, read from its verified certificate.

use std::net::SocketAddr;

use remora_api::spiffe::SpiffeId;
use x509_parser::{certificate::X509Certificate, extensions::GeneralName};

use crate::{PkiError, cert};

/// Who the peer of a TLS connection is, read from its leaf certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The certificate's one SPIFFE ID.
    pub id: SpiffeId,
    /// The subject CN, if any: `<namespace>/<pod>` for a workload certificate.
    pub subject: Option<String>,
}

impl PeerIdentity {
    /// The identity a leaf certificate (DER) names: exactly one `spiffe://` URI SAN, and the
    /// subject CN if any. The caller has verified the certificate; this only reads it.
    pub fn from_leaf(der: &[u8]) -> Result<PeerIdentity, PkiError> {
        let leaf = cert::parse(der, "the peer's certificate")?;
        let ids = spiffe_uris(&leaf)?;
        let id = match ids.as_slice() {
            [] => return Err(PkiError::NoSpiffeId),
            [one] => one.parse::<SpiffeId>()?,
            _ => {
                return Err(PkiError::SeveralSpiffeIds {
                    ids: ids.iter().map(|id| (*id).to_owned()).collect(),
                });
            }
        };
        let subject = leaf
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        Ok(PeerIdentity { id, subject })
    }
}

/// The certificate's URI SANs that are SPIFFE IDs.
fn spiffe_uris<'a>(leaf: &'a X509Certificate<'_>) -> Result<Vec<&'a str>, PkiError> {
    let san = leaf
        .subject_alternative_name()
        .map_err(|e| PkiError::Certificate {
            what: "the peer's certificate".to_owned(),
            reason: format!("its subject alternative names cannot be read ({e})"),
        })?;
    let names = san
        .map(|san| san.value.general_names.as_slice())
        .unwrap_or_default();
    Ok(names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
            _ => None,
        })
        .collect())
}

/// What a TLS server puts in each request's extensions (tonic's `Connected::ConnectInfo`):
/// the remote address and, when the client presented a certificate that verified against the
/// bundle, who it is.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The client's address, when the transport has one.
    pub remote: Option<SocketAddr>,
    /// Who the client proved to be with its certificate; `None` without one.
    pub identity: Option<PeerIdentity>,
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};

    use super::*;
    use crate::testing::{self, TD, grant, workload};

    fn self_signed(sans: Vec<SanType>, with_cn: bool) -> Vec<u8> {
        let mut params = CertificateParams::default();
        if !with_cn {
            params.distinguished_name = DistinguishedName::new();
        }
        params.subject_alt_names = sans;
        let key = KeyPair::generate().expect("a key");
        params
            .self_signed(&key)
            .expect("a certificate")
            .der()
            .to_vec()
    }

    fn uri(text: &str) -> SanType {
        SanType::URI(text.try_into().expect("an IA5 string"))
    }

    #[test]
    fn a_workload_certificate_names_its_identity_and_pod() {
        let ca = testing::ca();
        let (issued, _) = workload(&ca, &grant("shop", "web", "web-0"));
        let leaf = testing::chain(&issued)[0].clone();
        let peer = PeerIdentity::from_leaf(&leaf).expect("an identity");
        assert_eq!(peer.id, SpiffeId::new(TD, "shop", "web"));
        assert_eq!(peer.subject.as_deref(), Some("shop/web-0"));
    }

    #[test]
    fn a_certificate_without_a_common_name_has_no_subject() {
        let der = self_signed(vec![uri("spiffe://cluster.local/ns/a/sa/b")], false);
        let peer = PeerIdentity::from_leaf(&der).expect("an identity");
        assert_eq!(peer.subject, None);
        assert_eq!(peer.id, SpiffeId::new(TD, "a", "b"));
    }

    #[test]
    fn a_certificate_must_name_exactly_one_spiffe_id() {
        let none = self_signed(vec![SanType::DnsName("web".try_into().expect("IA5"))], true);
        let e = PeerIdentity::from_leaf(&none).expect_err("no SPIFFE ID");
        assert!(matches!(e, PkiError::NoSpiffeId), "{e}");
        let e = PeerIdentity::from_leaf(&self_signed(vec![], true)).expect_err("no SAN");
        assert!(matches!(e, PkiError::NoSpiffeId), "{e}");
        let two = self_signed(
            vec![
                uri("spiffe://cluster.local/ns/a/sa/b"),
                uri("spiffe://cluster.local/ns/a/sa/c"),
            ],
            true,
        );
        let e = PeerIdentity::from_leaf(&two).expect_err("two SPIFFE IDs");
        assert!(
            matches!(&e, PkiError::SeveralSpiffeIds { ids } if ids.len() == 2),
            "{e}"
        );
        assert!(e.to_string().contains("exactly one"), "{e}");
        // Other URIs do not count.
        let mixed = self_signed(
            vec![
                uri("https://example.org"),
                uri("spiffe://cluster.local/ns/a/sa/b"),
            ],
            true,
        );
        assert!(PeerIdentity::from_leaf(&mixed).is_ok());
    }

    #[test]
    fn a_spiffe_id_of_another_form_or_garbage_is_refused() {
        let odd = self_signed(vec![uri("spiffe://cluster.local/other")], true);
        let e = PeerIdentity::from_leaf(&odd).expect_err("not a workload ID");
        assert!(matches!(e, PkiError::Spiffe(_)), "{e}");
        let e = PeerIdentity::from_leaf(b"garbage").expect_err("not X.509");
        assert!(matches!(e, PkiError::Certificate { .. }), "{e}");
    }
}
