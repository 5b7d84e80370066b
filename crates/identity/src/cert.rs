//! Reading and writing certificates: PEM text, the X.509 fields this crate looks at, and
//! times as certificates hold them (whole seconds, UTC).

use std::time::SystemTime;

use time::OffsetDateTime;
use tokio_rustls::rustls::{
    self,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, pem::PemObject},
};
use x509_parser::certificate::X509Certificate;

use crate::PkiError;

/// Allowance for clocks that run behind the CA's: a certificate is valid from this long
/// before it was issued.
pub(crate) const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

/// *ring*, given to every config explicitly so no process-wide default is needed.
pub(crate) fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Every certificate of a PEM text: at least one.
pub(crate) fn certs_from_pem(
    text: &str,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem {
            what: what.to_owned(),
            reason: pem_reason(&e).to_owned(),
        })?;
    if certs.is_empty() {
        return Err(PkiError::NoCertificate {
            what: what.to_owned(),
        });
    }
    Ok(certs)
}

/// The PEM parser's complaint in words of our own: its own text quotes the input, which may
/// hold a private key.
fn pem_reason(e: &rustls::pki_types::pem::Error) -> &'static str {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { .. } => "a section has no END line",
        Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        Error::Base64Decode(_) => "a section is not valid base64",
        Error::SectionTooLarge => "a section is too large",
        _ => "it cannot be read",
    }
}

/// Certificates as PEM text, one block each, LF line endings.
pub(crate) fn certs_to_pem<'a, 'b: 'a>(
    certs: impl IntoIterator<Item = &'a CertificateDer<'b>>,
) -> String {
    let blocks: Vec<pem::Pem> = certs
        .into_iter()
        .map(|der| pem::Pem::new("CERTIFICATE", der.to_vec()))
        .collect();
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_many_config(&blocks, config)
}

/// The parsed certificate.
pub(crate) fn parse<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, PkiError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| PkiError::Certificate {
            what: what.to_owned(),
            reason: e.to_string(),
        })
}

/// Whether a certificate may sign certificates: basicConstraints CA:true, and keyCertSign
/// when it restricts its key usage.
pub(crate) fn can_sign(cert: &X509Certificate<'_>) -> bool {
    let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    let may_sign = match cert.key_usage() {
        Ok(Some(usage)) => usage.value.key_cert_sign(),
        Ok(None) => true,
        Err(_) => false,
    };
    is_ca && may_sign
}

/// A certificate's subject as text, for messages.
pub(crate) fn subject(cert: &X509Certificate<'_>) -> String {
    cert.subject().to_string()
}

/// When a certificate expires.
pub(crate) fn not_after(cert: &X509Certificate<'_>) -> SystemTime {
    cert.validity().not_after.to_datetime().into()
}

/// `t` without its fraction of a second: what a certificate can hold.
pub(crate) fn whole_seconds(t: SystemTime) -> OffsetDateTime {
    let t = OffsetDateTime::from(t);
    t - time::Duration::nanoseconds(i64::from(t.nanosecond()))
}

/// `t` as RFC 3339 UTC, for messages.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let t = OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Random bytes from *ring*.
pub(crate) fn random<const N: usize>() -> Option<[u8; N]> {
    let mut bytes = [0u8; N];
    provider().secure_random.fill(&mut bytes).ok()?;
    Some(bytes)
}

/// A random positive serial number of 16 bytes whose first byte is not zero (so its DER
/// encoding is exactly 16 bytes, as RFC 5280 wants it short and positive).
pub(crate) fn random_serial() -> Option<rcgen::SerialNumber> {
    let mut bytes = random::<16>()?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Some(rcgen::SerialNumber::from_slice(&bytes))
}
