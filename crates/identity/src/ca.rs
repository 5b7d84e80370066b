//! The mesh CA: what it is stored as, and how it is made or read back.

use std::{fmt, time::SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use remora_api::spiffe::check_trust_domain;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::{PkiError, TrustBundle, ca_check, cert};

/// How long a root made here is valid: long, because replacing it means a root rotation.
const ROOT_VALIDITY: time::Duration = time::Duration::days(3650);

/// What a CA is stored as: the keys of a `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`,
/// `ca.crt`), the shape cert-manager writes, so a bring-your-own intermediate is a Secret of
/// that shape.
#[derive(Clone)]
pub struct CaPem {
    /// `tls.crt`: the signing certificate first, then any intermediates above it.
    pub cert_chain: String,
    /// `tls.key`: the signing key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub key: String,
    /// `ca.crt`: the trust bundle (roots), one or more.
    pub bundle: String,
}

impl fmt::Debug for CaPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key never reaches a log.
        f.debug_struct("CaPem")
            .field("cert_chain", &self.cert_chain)
            .field("key", &"<redacted>")
            .field("bundle", &self.bundle)
            .finish()
    }
}

/// The mesh CA: a self-signed root, or an intermediate it was given, and the bundle it
/// publishes.
pub struct MeshCa {
    trust_domain: String,
    /// The signing certificate's name and key identifier, with its key.
    issuer: Issuer<'static, KeyPair>,
    /// The signing certificate first, then the certificates above it as stored.
    chain: Vec<CertificateDer<'static>>,
    bundle: TrustBundle,
    not_after: SystemTime,
}

impl fmt::Debug for MeshCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The certificates are public; the key is left out.
        f.debug_struct("MeshCa")
            .field("trust_domain", &self.trust_domain)
            .field("chain", &cert::certs_to_pem(&self.chain))
            .field("bundle", &self.bundle.to_pem())
            .field("not_after", &cert::rfc3339(self.not_after))
            .finish_non_exhaustive()
    }
}

impl MeshCa {
    /// A new self-signed root with a fresh ECDSA P-256 key, valid for 10 years from `now`.
    pub fn generate(trust_domain: &str, now: SystemTime) -> Result<MeshCa, PkiError> {
        check_trust_domain(trust_domain)?;
        let key = KeyPair::generate().map_err(|source| PkiError::Generate {
            what: "the CA key",
            source,
        })?;
        let root = root_params(trust_domain, now)?
            .self_signed(&key)
            .map_err(|source| PkiError::Generate {
                what: "the root certificate",
                source,
            })?;
        let der = root.der().clone();
        MeshCa::assemble(trust_domain, vec![der.clone()], key, TrustBundle::of([der]))
    }

    /// The CA stored in `stored`, checked: the key belongs to the signing certificate, every
    /// certificate of the chain is a CA that may sign and has not expired, each is signed by
    /// the next, the chain ends at (or is) a root of the bundle, and a certificate signed
    /// here verifies against the bundle.
    pub fn from_pem(stored: &CaPem, trust_domain: &str) -> Result<MeshCa, PkiError> {
        check_trust_domain(trust_domain)?;
        let chain = cert::certs_from_pem(&stored.cert_chain, "the CA certificate chain (tls.crt)")?;
        let bundle = TrustBundle::from_pem(&stored.bundle)?;
        let key = read_key(&stored.key)?;
        let now = SystemTime::now();
        ca_check::check_stored(&chain, &key, &bundle, now)?;
        let ca = MeshCa::assemble(trust_domain, chain, key, bundle)?;
        ca.check_signs(now)?;
        Ok(ca)
    }

    /// The CA from its parts, read as a signer.
    fn assemble(
        trust_domain: &str,
        chain: Vec<CertificateDer<'static>>,
        key: KeyPair,
        bundle: TrustBundle,
    ) -> Result<MeshCa, PkiError> {
        let what = "the signing certificate (tls.crt certificate 1)";
        let signing = chain.first().ok_or_else(|| PkiError::NoCertificate {
            what: "tls.crt".to_owned(),
        })?;
        let not_after = cert::not_after(&cert::parse(signing, what)?);
        // The issuer's name and key identifier are read from the certificate itself, so a
        // certificate signed here names exactly it (a bring-your-own CA included).
        let issuer = Issuer::from_ca_cert_der(signing, key).map_err(|e| PkiError::Certificate {
            what: what.to_owned(),
            reason: format!("its subject cannot be used to sign ({e})"),
        })?;
        Ok(MeshCa {
            trust_domain: trust_domain.to_owned(),
            issuer,
            chain,
            bundle,
            not_after,
        })
    }

    /// The CA as it is stored.
    pub fn to_pem(&self) -> CaPem {
        CaPem {
            cert_chain: cert::certs_to_pem(&self.chain),
            key: self.issuer.key().serialize_pem(),
            bundle: self.bundle.to_pem(),
        }
    }

    /// The trust domain of every identity this CA issues.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The roots every proxy trusts.
    pub fn bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// When the signing certificate expires; no certificate issued here outlives it.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// The certificates a leaf carries above itself: those of the chain that are not roots
    /// of the bundle (a peer has the roots already).
    pub(crate) fn intermediates(&self) -> impl Iterator<Item = &CertificateDer<'static>> {
        self.chain.iter().filter(|c| !self.bundle.contains(c))
    }
}

/// A new root's name and uses. The random part of its name tells two roots apart during a
/// rotation, so a verifier looking a root up by name finds the right one.
fn root_params(trust_domain: &str, now: SystemTime) -> Result<CertificateParams, PkiError> {
    let random = || PkiError::Random {
        what: "the root certificate",
    };
    let tag = cert::random::<6>().ok_or_else(random)?;
    let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Remora");
    name.push(DnType::OrganizationalUnitName, trust_domain);
    name.push(DnType::CommonName, format!("Remora mesh root {tag}"));
    params.distinguished_name = name;
    params.serial_number = Some(cert::random_serial().ok_or_else(random)?);
    // The root signs workload certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = cert::whole_seconds(now);
    params.not_before = now - cert::CLOCK_SKEW;
    params.not_after = now + ROOT_VALIDITY;
    Ok(params)
}

/// The CA's key from `tls.key`. Errors describe the key's form only: the parser's own text
/// could quote it.
fn read_key(text: &str) -> Result<KeyPair, PkiError> {
    let refuse = |reason| PkiError::Key {
        what: "tls.key".to_owned(),
        reason,
    };
    match PrivateKeyDer::from_pem_slice(text.as_bytes()) {
        Ok(PrivateKeyDer::Pkcs8(pkcs8)) => KeyPair::try_from(&pkcs8).map_err(|_| {
            refuse("it is PKCS#8 but not a key that can sign (use ECDSA P-256 or P-384, Ed25519 or RSA)")
        }),
        Ok(PrivateKeyDer::Sec1(_) | PrivateKeyDer::Pkcs1(_)) => Err(refuse(
            "it is not PKCS#8: convert it with `openssl pkcs8 -topk8 -nocrypt`, or have \
             cert-manager write it with privateKey.encoding: PKCS8",
        )),
        Ok(_) | Err(_) => Err(refuse(
            "it holds no PEM private key: give PKCS#8 PEM (-----BEGIN PRIVATE KEY-----)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        ca_check::verify_as_peer,
        testing::{self, TD, assert_no_key, byo_intermediate, grant, now, workload},
    };

    fn refusal(stored: &CaPem) -> PkiError {
        MeshCa::from_pem(stored, TD).expect_err("refused")
    }

    #[test]
    fn a_generated_root_reads_back_from_what_it_stores() {
        let ca = testing::ca();
        let stored = ca.to_pem();
        assert!(stored.key.contains("BEGIN PRIVATE KEY"), "PKCS#8");
        let again = MeshCa::from_pem(&stored, TD).expect("reads back");
        assert_eq!(again.bundle(), ca.bundle());
        assert_eq!(again.not_after(), ca.not_after());
        assert_eq!(again.trust_domain(), TD);
        assert_eq!(again.to_pem().cert_chain, stored.cert_chain);
        assert_eq!(again.to_pem().key, stored.key);
        assert_eq!(again.to_pem().bundle, stored.bundle);
        // What the stored CA signs, peers of the first one trust.
        let (issued, _) = workload(&again, &grant("shop", "web", "web-0"));
        verify_as_peer(&issued, ca.bundle(), now()).expect("trusted by the original bundle");
    }

    #[test]
    fn a_root_is_valid_for_ten_years_and_is_its_own_bundle() {
        let at = now();
        let ca = MeshCa::generate(TD, at).expect("a root");
        assert_eq!(ca.not_after(), at + Duration::from_secs(3650 * 24 * 3600));
        assert_eq!(ca.bundle().roots().len(), 1);
        assert_eq!(ca.to_pem().bundle, ca.to_pem().cert_chain);
    }

    #[test]
    fn two_roots_have_different_names() {
        let name = |ca: &MeshCa| {
            let der = ca.bundle().roots()[0].clone();
            cert::subject(&cert::parse(&der, "root").expect("a certificate"))
        };
        assert_ne!(name(&testing::ca()), name(&testing::ca()));
    }

    #[test]
    fn a_key_of_another_ca_is_refused() {
        let mut stored = testing::ca().to_pem();
        stored.key = testing::ca().to_pem().key;
        let e = refusal(&stored);
        assert!(matches!(e, PkiError::KeyMismatch { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("store the key that certificate was issued for"),
            "{e}"
        );
    }

    #[test]
    fn a_signing_certificate_that_is_not_a_ca_is_refused() {
        let ca = testing::ca();
        let (issued, key) = ca
            .issue_serving(&grant("shop", "web", "web-0"), &[], now())
            .expect("a leaf");
        let stored = CaPem {
            cert_chain: issued.chain_pem,
            key: key.private_key_pem(),
            bundle: ca.bundle().to_pem(),
        };
        let e = refusal(&stored);
        assert!(matches!(e, PkiError::NotCa { .. }), "{e}");
        assert!(e.to_string().contains("not a CA certificate"), "{e}");
    }

    #[test]
    fn a_chain_that_does_not_end_at_a_root_of_the_bundle_is_refused() {
        let mut stored = testing::ca().to_pem();
        stored.bundle = testing::ca().to_pem().bundle;
        let e = refusal(&stored);
        assert!(matches!(e, PkiError::NotAnchored { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("put the root that issued it in ca.crt"),
            "{e}"
        );
    }

    #[test]
    fn a_chain_out_of_order_is_refused() {
        let mut stored = byo_intermediate(false);
        stored
            .cert_chain
            .push_str(&testing::ca().to_pem().cert_chain);
        let e = refusal(&stored);
        assert!(matches!(e, PkiError::ChainBroken { index: 1, .. }), "{e}");
        assert!(
            e.to_string().contains("list the signing certificate first"),
            "{e}"
        );
    }

    #[test]
    fn an_expired_ca_is_refused() {
        let eleven_years = Duration::from_secs(11 * 365 * 24 * 3600);
        let old = MeshCa::generate(TD, now() - eleven_years).expect("a root made long ago");
        let e = refusal(&old.to_pem());
        assert!(matches!(e, PkiError::Expired { .. }), "{e}");
        assert!(e.to_string().contains("expired at"), "{e}");
        assert!(e.to_string().contains("renew it"), "{e}");
    }

    #[test]
    fn garbage_is_refused_naming_the_key_at_fault() {
        let good = testing::ca().to_pem();
        let with = |f: fn(&mut CaPem)| {
            let mut stored = good.clone();
            f(&mut stored);
            refusal(&stored).to_string()
        };
        let e = with(|s| s.cert_chain = "garbage".to_owned());
        assert!(
            e.contains("tls.crt") && e.contains("holds no certificate"),
            "{e}"
        );
        let e = with(|s| s.cert_chain = "-----BEGIN CERTIFICATE-----\nMIIB".to_owned());
        assert!(e.contains("tls.crt") && e.contains("is not PEM"), "{e}");
        let e = with(|s| s.bundle = "garbage".to_owned());
        assert!(
            e.contains("ca.crt") && e.contains("holds no certificate"),
            "{e}"
        );
        let e = with(|s| {
            s.cert_chain =
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_owned()
        });
        assert!(e.contains("is not an X.509 certificate"), "{e}");
        let e = with(|s| s.key = "garbage".to_owned());
        assert!(
            e.contains("tls.key") && e.contains("BEGIN PRIVATE KEY"),
            "{e}"
        );
        let e = with(|s| {
            s.key =
                "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n".to_owned()
        });
        assert!(e.contains("openssl pkcs8 -topk8 -nocrypt"), "{e}");
    }

    #[test]
    fn a_bad_trust_domain_is_refused() {
        let e = MeshCa::generate("Cluster.Local", now()).expect_err("uppercase");
        assert!(matches!(e, PkiError::Spiffe(_)), "{e}");
        let e = MeshCa::from_pem(&testing::ca().to_pem(), "").expect_err("empty");
        assert!(matches!(e, PkiError::Spiffe(_)), "{e}");
    }

    #[test]
    fn an_intermediate_it_is_given_signs_chains_that_verify_against_its_root() {
        for with_root in [false, true] {
            let stored = byo_intermediate(with_root);
            let ca = MeshCa::from_pem(&stored, TD).expect("a usable intermediate");
            let root = TrustBundle::from_pem(&stored.bundle).expect("the root");
            assert_eq!(ca.bundle(), &root);
            let (issued, _) = workload(&ca, &grant("shop", "web", "web-0"));
            let chain = testing::chain(&issued);
            let intermediate = cert::certs_from_pem(&stored.cert_chain, "tls.crt").expect("PEM");
            // The leaf, then the intermediate; never the root.
            assert_eq!(chain.len(), 2, "with_root: {with_root}");
            assert_eq!(chain[1], intermediate[0]);
            verify_as_peer(&issued, &root, now()).expect("verifies against the root");
            assert!(verify_as_peer(&issued, testing::ca().bundle(), now()).is_err());
        }
    }

    #[test]
    fn a_ca_whose_certificates_no_peer_would_accept_is_refused() {
        // An intermediate with a critical extension verifiers do not know passes every check
        // of the stored form, yet nothing it signs verifies.
        let root_key = KeyPair::generate().expect("a key");
        let root_params = testing::ca_params("Corp root", BasicConstraints::Unconstrained);
        let root = root_params.self_signed(&root_key).expect("a root");
        let key = KeyPair::generate().expect("a key");
        let mut params =
            testing::ca_params("Corp odd intermediate", BasicConstraints::Constrained(0));
        let mut odd =
            rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![5, 0]);
        odd.set_criticality(true);
        params.custom_extensions = vec![odd];
        let intermediate = params
            .signed_by(&key, &Issuer::new(root_params, &root_key))
            .expect("an intermediate");
        let stored = CaPem {
            cert_chain: intermediate.pem(),
            key: key.serialize_pem(),
            bundle: root.pem(),
        };
        let e = refusal(&stored);
        assert!(matches!(e, PkiError::Unusable { .. }), "{e}");
        assert!(
            e.to_string().contains("does not verify against ca.crt"),
            "{e}"
        );
    }

    #[test]
    fn a_ca_can_be_shared_between_tasks() {
        fn shared<T: Send + Sync + 'static>() {}
        shared::<MeshCa>();
        shared::<crate::CurrentCert>();
        shared::<crate::WorkloadKey>();
        shared::<PkiError>();
        shared::<crate::IssueError>();
    }

    #[test]
    fn debug_output_shows_no_key() {
        let ca = testing::ca();
        let stored = ca.to_pem();
        assert_no_key(&format!("{stored:?}"), &stored.key);
        assert_no_key(&format!("{ca:?}"), &stored.key);
        assert!(format!("{stored:?}").contains("<redacted>"));
        assert!(
            format!("{ca:?}").contains("BEGIN CERTIFICATE"),
            "the certificates are shown"
        );
    }
}
