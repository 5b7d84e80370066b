//! The checks a stored CA passes before it signs anything, each with a message naming the
//! certificate at fault: a CA that fails one would issue certificates no peer accepts.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rcgen::KeyPair;
use remora_api::spiffe::SpiffeId;
use tokio_rustls::rustls::{
    pki_types::{CertificateDer, UnixTime},
    server::WebPkiClientVerifier,
};
use x509_parser::certificate::X509Certificate;

use crate::{Grant, Issued, MeshCa, PkiError, TrustBundle, cert};

/// Checks the stored chain, key and bundle against each other at `now`.
pub(crate) fn check_stored(
    chain: &[CertificateDer<'static>],
    key: &KeyPair,
    bundle: &TrustBundle,
    now: SystemTime,
) -> Result<(), PkiError> {
    let parsed = chain
        .iter()
        .enumerate()
        .map(|(i, der)| cert::parse(der, &position(i)))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, c) in parsed.iter().enumerate() {
        if !cert::can_sign(c) {
            return Err(PkiError::NotCa {
                what: position(i),
                subject: cert::subject(c),
            });
        }
        unexpired(c, position(i), now)?;
    }
    let (Some(signing), Some(last)) = (parsed.first(), parsed.last()) else {
        return Err(PkiError::NoCertificate {
            what: "tls.crt".to_owned(),
        });
    };
    if signing.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(PkiError::KeyMismatch {
            subject: cert::subject(signing),
        });
    }
    linked(&parsed)?;
    anchored(last, chain.last(), bundle, now)
}

/// How a certificate of `tls.crt` is named in messages.
fn position(index: usize) -> String {
    match index {
        0 => "the signing certificate (tls.crt certificate 1)".to_owned(),
        i => format!("tls.crt certificate {}", i + 1),
    }
}

fn unexpired(c: &X509Certificate<'_>, what: String, now: SystemTime) -> Result<(), PkiError> {
    let not_after = cert::not_after(c);
    if not_after <= now {
        return Err(PkiError::Expired {
            what,
            subject: cert::subject(c),
            not_after: cert::rfc3339(not_after),
        });
    }
    Ok(())
}

/// Whether `issuer` signed `c`.
fn signed_by(c: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    c.issuer().as_raw() == issuer.subject().as_raw()
        && c.verify_signature(Some(issuer.public_key())).is_ok()
}

/// Each certificate of the chain is signed by the next.
fn linked(parsed: &[X509Certificate<'_>]) -> Result<(), PkiError> {
    for (i, pair) in parsed.windows(2).enumerate() {
        if let [c, next] = pair
            && !signed_by(c, next)
        {
            return Err(PkiError::ChainBroken {
                index: i + 1,
                subject: cert::subject(c),
                next: cert::subject(next),
            });
        }
    }
    Ok(())
}

/// The chain's last certificate is a root of the bundle, or a root of the bundle signed it.
fn anchored(
    last: &X509Certificate<'_>,
    last_der: Option<&CertificateDer<'static>>,
    bundle: &TrustBundle,
    now: SystemTime,
) -> Result<(), PkiError> {
    if last_der.is_some_and(|der| bundle.contains(der)) {
        return Ok(());
    }
    for der in bundle.roots() {
        let root = cert::parse(der, "a root of ca.crt")?;
        if signed_by(last, &root) {
            return unexpired(
                &root,
                "the root of ca.crt that issued tls.crt".to_owned(),
                now,
            );
        }
    }
    Err(PkiError::NotAnchored {
        subject: cert::subject(last),
    })
}

impl MeshCa {
    /// Signs a short-lived certificate for the CA's own key and verifies it against the
    /// bundle as a peer would: this catches what the checks above do not (a subject the
    /// signer cannot reproduce, a path length the chain does not allow, an extension the
    /// verifier refuses).
    pub(crate) fn check_signs(&self, now: SystemTime) -> Result<(), PkiError> {
        let grant = Grant {
            id: SpiffeId::new(self.trust_domain(), "remora-check", "remora-check"),
            subject: "remora-check".to_owned(),
            ttl: Duration::from_secs(60),
        };
        let issued = self.sign(&grant, &[], self.issuer().key(), now)?;
        verify_as_peer(&issued, self.bundle(), now).map_err(|reason| PkiError::Unusable { reason })
    }
}

/// Verifies an issued chain against `bundle` as a server verifies a client certificate.
pub(crate) fn verify_as_peer(
    issued: &Issued,
    bundle: &TrustBundle,
    now: SystemTime,
) -> Result<(), String> {
    let chain =
        cert::certs_from_pem(&issued.chain_pem, "the issued chain").map_err(|e| e.to_string())?;
    let (leaf, intermediates) = chain.split_first().ok_or("the issued chain is empty")?;
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(bundle.root_store()),
        Arc::new(cert::provider()),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    verifier
        .verify_client_cert(leaf, intermediates, UnixTime::since_unix_epoch(since_epoch))
        .map(|_| ())
        .map_err(|e| e.to_string())
}
