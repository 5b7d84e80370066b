//! Workload certificates: who one is for, what is issued, and how it is signed.

use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    PublicKeyData, SanType, string::Ia5String,
};
use remora_api::spiffe::SpiffeId;
use time::OffsetDateTime;

use crate::{IssueError, MeshCa, PkiError, WorkloadKey, cert, csr};

/// Who a certificate is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The one URI SAN.
    pub id: SpiffeId,
    /// The subject CN: `<namespace>/<pod>` for a workload (binds the certificate to its pod).
    pub subject: String,
    /// How long it is valid; capped so it never outlives the CA's signing certificate.
    pub ttl: Duration,
}

/// A certificate issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// The leaf first, then the CA's intermediates (the signing certificate when it is not a
    /// root); never a root, which every peer has already.
    pub chain_pem: String,
    /// When it became valid: a few minutes before it was issued, for clocks that run behind.
    pub not_before: SystemTime,
    /// When it expires.
    pub not_after: SystemTime,
}

impl MeshCa {
    /// Signs the CSR for `grant`. Only the CSR's public key is used (ECDSA P-256); if the
    /// CSR names a URI SAN it must equal `grant.id` ([`IssueError::WrongIdentity`]
    /// otherwise). The CSR's signature is checked.
    ///
    /// The leaf: the CSR's key, URI SAN = `grant.id`, CN = `grant.subject`, key usage
    /// digitalSignature + keyEncipherment, extended key usage serverAuth + clientAuth, not
    /// a CA, a random serial, valid from `now` - 5 min to `now` + ttl (at most the CA's
    /// `not_after`).
    pub fn issue(
        &self,
        csr_pem: &str,
        grant: &Grant,
        now: SystemTime,
    ) -> Result<Issued, IssueError> {
        let key = csr::public_key(csr_pem, &grant.id)?;
        self.sign(grant, &[], &key, now)
    }

    /// A certificate for a server of the control plane itself, as [`MeshCa::issue`] makes
    /// with `dns_names` as DNS SANs besides the SPIFFE ID (IP SANs for those that are
    /// addresses), for a key made here (it never leaves the process).
    pub fn issue_serving(
        &self,
        grant: &Grant,
        dns_names: &[String],
        now: SystemTime,
    ) -> Result<(Issued, WorkloadKey), PkiError> {
        let key = WorkloadKey::generate()?;
        let issued = self.sign(grant, dns_names, key.key_pair(), now)?;
        Ok((issued, key))
    }

    /// A leaf for `public_key`, signed by the CA.
    pub(crate) fn sign(
        &self,
        grant: &Grant,
        dns_names: &[String],
        public_key: &impl PublicKeyData,
        now: SystemTime,
    ) -> Result<Issued, IssueError> {
        if grant.id.trust_domain != self.trust_domain() {
            return Err(IssueError::ForeignTrustDomain {
                id: grant.id.clone(),
                trust_domain: self.trust_domain().to_owned(),
            });
        }
        let now = cert::whole_seconds(now);
        let ca_not_after = OffsetDateTime::from(self.not_after());
        if now >= ca_not_after {
            return Err(IssueError::CaExpired {
                not_after: cert::rfc3339(self.not_after()),
            });
        }
        // A TTL too large to add is capped like any other.
        let not_after = time::Duration::try_from(grant.ttl)
            .ok()
            .and_then(|ttl| now.checked_add(ttl))
            .map_or(ca_not_after, |end| end.min(ca_not_after));
        let mut params = leaf_params(grant, dns_names)?;
        params.not_before = now - cert::CLOCK_SKEW;
        params.not_after = not_after;
        let leaf = params
            .signed_by(public_key, self.issuer())
            .map_err(IssueError::Sign)?;
        let chain = std::iter::once(leaf.der()).chain(self.intermediates());
        Ok(Issued {
            chain_pem: cert::certs_to_pem(chain),
            not_before: params.not_before.into(),
            not_after: not_after.into(),
        })
    }
}

/// A leaf's name and uses, without its validity.
fn leaf_params(grant: &Grant, dns_names: &[String]) -> Result<CertificateParams, IssueError> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, grant.subject.as_str());
    params.distinguished_name = name;
    params.serial_number = Some(cert::random_serial().ok_or(IssueError::Random)?);
    let uri = Ia5String::try_from(grant.id.to_string()).map_err(IssueError::Sign)?;
    params.subject_alt_names = std::iter::once(Ok(SanType::URI(uri)))
        .chain(dns_names.iter().map(|name| {
            match name.parse() {
                // An address the server is reached at by number: rustls checks it as an IP SAN.
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ia5String::try_from(name.as_str())
                    .map(SanType::DnsName)
                    .map_err(IssueError::Sign),
            }
        }))
        .collect::<Result<_, _>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    // Names the CA's key, so a verifier picks the right root among two during a rotation.
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use rcgen::{KeyPair, PKCS_ECDSA_P384_SHA384};
    use x509_parser::{
        certificate::X509Certificate,
        extensions::{GeneralName, ParsedExtension},
    };

    use super::*;
    use crate::{
        CertifiedIdentity,
        testing::{self, TD, grant, now, workload},
    };

    fn leaf_of(issued: &Issued) -> Vec<u8> {
        testing::chain(issued)[0].to_vec()
    }

    fn sans(leaf: &X509Certificate<'_>) -> Vec<String> {
        let san = leaf
            .subject_alternative_name()
            .expect("readable")
            .expect("present");
        san.value
            .general_names
            .iter()
            .map(|name| match name {
                GeneralName::URI(uri) => format!("URI:{uri}"),
                GeneralName::DNSName(dns) => format!("DNS:{dns}"),
                GeneralName::IPAddress(ip) => format!("IP:{ip:?}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_leaf_names_exactly_what_was_granted() {
        let ca = testing::ca();
        let grant = grant("shop", "web", "web-0");
        let key = WorkloadKey::generate().expect("a key");
        let at = now();
        let issued = ca
            .issue(&key.csr_pem(&grant.id).expect("a CSR"), &grant, at)
            .expect("issued");
        assert_eq!(testing::chain(&issued).len(), 1, "never the root");
        let der = leaf_of(&issued);
        let (_, leaf) = x509_parser::parse_x509_certificate(&der).expect("X.509");
        assert_eq!(sans(&leaf), ["URI:spiffe://cluster.local/ns/shop/sa/web"]);
        let cn = leaf.subject().iter_common_name().next().expect("a CN");
        assert_eq!(cn.as_str().expect("text"), "shop/web-0");
        let eku = leaf
            .extended_key_usage()
            .expect("readable")
            .expect("present")
            .value;
        assert!(eku.server_auth && eku.client_auth && !eku.any);
        let ku = leaf.key_usage().expect("readable").expect("present").value;
        assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
        let bc = leaf
            .basic_constraints()
            .expect("readable")
            .expect("present")
            .value;
        assert!(!bc.ca);
        assert_eq!(cert::not_after(&leaf), at + crate::DEFAULT_CERT_TTL);
        assert_eq!(issued.not_after, at + crate::DEFAULT_CERT_TTL);
        assert_eq!(issued.not_before, at - Duration::from_secs(300));
        assert_eq!(
            SystemTime::from(leaf.validity().not_before.to_datetime()),
            issued.not_before
        );
        assert_eq!(
            leaf.public_key().subject_public_key.data.as_ref(),
            key.key_pair().public_key_raw()
        );
        CertifiedIdentity::new(&issued, &key).expect("the key goes with the certificate");
    }

    #[test]
    fn two_certificates_for_one_key_have_different_serials() {
        let ca = testing::ca();
        let grant = grant("shop", "web", "web-0");
        let key = WorkloadKey::generate().expect("a key");
        let csr = key.csr_pem(&grant.id).expect("a CSR");
        let serial = |issued: &Issued| {
            let der = leaf_of(issued);
            let (_, leaf) = x509_parser::parse_x509_certificate(&der).expect("X.509");
            leaf.raw_serial().to_vec()
        };
        let first = ca.issue(&csr, &grant, now()).expect("issued");
        let second = ca.issue(&csr, &grant, now()).expect("issued");
        assert_ne!(serial(&first), serial(&second));
    }

    #[test]
    fn a_certificate_never_outlives_the_ca() {
        let almost_ten_years = Duration::from_secs(3650 * 24 * 3600 - 3600);
        let ca = MeshCa::generate(TD, now() - almost_ten_years).expect("an old root");
        let (issued, _) = workload(&ca, &grant("shop", "web", "web-0"));
        assert_eq!(issued.not_after, ca.not_after());
        let mut forever = grant("shop", "web", "web-0");
        forever.ttl = Duration::MAX;
        let key = WorkloadKey::generate().expect("a key");
        let csr = key.csr_pem(&forever.id).expect("a CSR");
        let issued = ca.issue(&csr, &forever, now()).expect("issued");
        assert_eq!(issued.not_after, ca.not_after());
    }

    #[test]
    fn an_expired_ca_issues_nothing() {
        let ca = testing::ca();
        let grant = grant("shop", "web", "web-0");
        let key = WorkloadKey::generate().expect("a key");
        let csr = key.csr_pem(&grant.id).expect("a CSR");
        let later = ca.not_after() + Duration::from_secs(1);
        let e = ca.issue(&csr, &grant, later).expect_err("expired");
        assert!(matches!(e, IssueError::CaExpired { .. }), "{e}");
    }

    #[test]
    fn a_csr_for_another_identity_is_refused_naming_both() {
        let ca = testing::ca();
        let granted = grant("shop", "web", "web-0");
        let key = WorkloadKey::generate().expect("a key");
        let other = SpiffeId::new(TD, "payments", "api");
        let csr = key.csr_pem(&other).expect("a CSR");
        let e = ca
            .issue(&csr, &granted, now())
            .expect_err("another identity");
        let IssueError::WrongIdentity {
            asked,
            granted: who,
        } = &e
        else {
            panic!("not WrongIdentity: {e}");
        };
        assert_eq!(asked, "spiffe://cluster.local/ns/payments/sa/api");
        assert_eq!(who, &granted.id);
        assert!(
            e.to_string()
                .contains("spiffe://cluster.local/ns/shop/sa/web"),
            "{e}"
        );
    }

    #[test]
    fn a_csr_without_a_name_gets_the_granted_one() {
        let ca = testing::ca();
        let grant = grant("shop", "web", "web-0");
        let key = KeyPair::generate().expect("a key");
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .and_then(|c| c.pem())
            .expect("a CSR");
        let issued = ca.issue(&csr, &grant, now()).expect("issued");
        let der = leaf_of(&issued);
        let (_, leaf) = x509_parser::parse_x509_certificate(&der).expect("X.509");
        assert_eq!(sans(&leaf), ["URI:spiffe://cluster.local/ns/shop/sa/web"]);
    }

    #[test]
    fn a_broken_or_unreadable_csr_is_refused() {
        let ca = testing::ca();
        let grant = grant("shop", "web", "web-0");
        let csr = WorkloadKey::generate()
            .expect("a key")
            .csr_pem(&grant.id)
            .expect("a CSR");
        let mut der = pem::parse(&csr).expect("PEM").into_contents();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let broken = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        let refused = |csr: &str| match ca.issue(csr, &grant, now()) {
            Err(IssueError::Csr(reason)) => reason,
            other => panic!("not refused as a bad CSR: {other:?}"),
        };
        assert!(refused(&broken).contains("signature does not verify"));
        assert!(refused("garbage").contains("not PEM"));
        let not_der =
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
        assert!(refused(not_der).contains("not a PKCS#10 request"));
        let p384 = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).expect("a P-384 key");
        let csr = CertificateParams::default()
            .serialize_request(&p384)
            .and_then(|c| c.pem())
            .expect("a CSR");
        assert!(refused(&csr).contains("not ECDSA P-256"));
        let e = IssueError::Csr("x".to_owned()).to_string();
        assert!(e.starts_with("the CSR cannot be read: x"), "{e}");
    }

    #[test]
    fn an_identity_of_another_trust_domain_is_refused() {
        let ca = testing::ca();
        let mut grant = grant("shop", "web", "web-0");
        grant.id.trust_domain = "example.org".to_owned();
        let key = WorkloadKey::generate().expect("a key");
        let csr = key.csr_pem(&grant.id).expect("a CSR");
        let e = ca.issue(&csr, &grant, now()).expect_err("foreign");
        assert!(matches!(e, IssueError::ForeignTrustDomain { .. }), "{e}");
    }

    #[test]
    fn a_serving_certificate_names_its_dns_names_and_addresses_and_comes_with_its_key() {
        let ca = testing::ca();
        let names = ["remora.remora-system.svc".to_owned(), "10.1.2.3".to_owned()];
        let (issued, key) = ca
            .issue_serving(&grant("remora-system", "remora", "remora-0"), &names, now())
            .expect("issued");
        let der = leaf_of(&issued);
        let (_, leaf) = x509_parser::parse_x509_certificate(&der).expect("X.509");
        assert_eq!(
            sans(&leaf),
            [
                "URI:spiffe://cluster.local/ns/remora-system/sa/remora",
                "DNS:remora.remora-system.svc",
                "IP:[10, 1, 2, 3]"
            ]
        );
        assert!(leaf.extensions().iter().any(|e| matches!(
            e.parsed_extension(),
            ParsedExtension::AuthorityKeyIdentifier(_)
        )));
        CertifiedIdentity::new(&issued, &key).expect("the key goes with the certificate");
    }
}
