//! Fixtures the tests share: CAs, grants, issued workload certificates, and a bring-your-own
//! root and intermediate made the way another PKI would.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio_rustls::rustls::pki_types::CertificateDer;

use crate::{CaPem, DEFAULT_CERT_TTL, Grant, Issued, MeshCa, SpiffeId, WorkloadKey, cert};

pub(crate) const TD: &str = "cluster.local";

/// The time now in whole seconds, so a certificate's times compare equal to it.
pub(crate) fn now() -> SystemTime {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub(crate) fn ca() -> MeshCa {
    MeshCa::generate(TD, now()).expect("a root")
}

pub(crate) fn grant(namespace: &str, service_account: &str, pod: &str) -> Grant {
    Grant {
        id: SpiffeId::new(TD, namespace, service_account),
        subject: format!("{namespace}/{pod}"),
        ttl: DEFAULT_CERT_TTL,
    }
}

/// A workload's certificate, made as the agent does: its own key, a CSR, the CA's signature.
pub(crate) fn workload(ca: &MeshCa, grant: &Grant) -> (Issued, WorkloadKey) {
    let key = WorkloadKey::generate().expect("a key");
    let csr = key.csr_pem(&grant.id).expect("a CSR");
    let issued = ca.issue(&csr, grant, now()).expect("issued");
    (issued, key)
}

/// The DER certificates of an issued chain.
pub(crate) fn chain(issued: &Issued) -> Vec<CertificateDer<'static>> {
    cert::certs_from_pem(&issued.chain_pem, "the test chain").expect("PEM certificates")
}

/// A root and an intermediate under it, made outside the mesh (as cert-manager or a corporate
/// PKI would): `tls.crt` is the intermediate (with the root after it when `with_root`),
/// `ca.crt` the root.
pub(crate) fn byo_intermediate(with_root: bool) -> CaPem {
    let root_key = KeyPair::generate().expect("a root key");
    let root_params = ca_params("Corp root", BasicConstraints::Unconstrained);
    let root = root_params.self_signed(&root_key).expect("a root");
    let key = KeyPair::generate().expect("an intermediate key");
    let issuer = Issuer::new(root_params, &root_key);
    let intermediate = ca_params("Corp mesh intermediate", BasicConstraints::Constrained(0))
        .signed_by(&key, &issuer)
        .expect("an intermediate");
    let cert_chain = match with_root {
        true => format!("{}{}", intermediate.pem(), root.pem()),
        false => intermediate.pem(),
    };
    CaPem {
        cert_chain,
        key: key.serialize_pem(),
        bundle: root.pem(),
    }
}

/// A CA's name, uses and a year's validity.
pub(crate) fn ca_params(name: &str, constraints: BasicConstraints) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Corp");
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::from(now());
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365);
    params
}

/// Fails when `debug` shows any part of the private key in `key_pem`: its PEM label, a line
/// of its base64, or 16 bytes of it in a row (as hex or as a Rust byte list).
pub(crate) fn assert_no_key(debug: &str, key_pem: &str) {
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    for line in key_pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!debug.contains(line), "a line of the key in {debug}");
    }
    let der = pem::parse(key_pem).expect("a PEM key").into_contents();
    for window in der.windows(16) {
        let hex: String = window.iter().map(|b| format!("{b:02x}")).collect();
        let list = format!("{window:?}");
        let list = list.trim_matches(['[', ']']);
        assert!(!debug.to_lowercase().contains(&hex), "key bytes in {debug}");
        assert!(!debug.contains(list), "key bytes in {debug}");
    }
}
