//! The certificate service's metrics: certificates issued and requests refused, by reason.
//! The caller owns the registry and its prefix.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// Why a certificate request was refused: the `reason` label of the refusal counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Neither a client certificate nor a token came with the request.
    NoCredentials,
    /// The token was not accepted.
    BadToken,
    /// The client certificate does not name a pod of this trust domain.
    BadCertificate,
    /// The token could not be checked (the API server could not be asked).
    Unavailable,
    /// The CSR asks for another identity than the caller's.
    WrongIdentity,
    /// The CSR cannot be read or its signature is wrong.
    BadCsr,
    /// The CA failed to sign.
    Internal,
}

impl Refusal {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::NoCredentials => "no_credentials",
            Refusal::BadToken => "bad_token",
            Refusal::BadCertificate => "bad_certificate",
            Refusal::Unavailable => "unavailable",
            Refusal::WrongIdentity => "wrong_identity",
            Refusal::BadCsr => "bad_csr",
            Refusal::Internal => "internal",
        }
    }
}

/// The label set of the refusal counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// One of [`Refusal::label`].
    pub reason: &'static str,
}

/// Counters of the certificate service; clones share them.
#[derive(Clone, Debug, Default)]
pub struct CaMetrics {
    issued: Counter,
    refused: Family<RefusalLabels, Counter>,
}

impl CaMetrics {
    /// Adds the counters to `registry`: `certificates_issued` and
    /// `certificate_requests_refused` (by `reason`), each with the registry's prefix and a
    /// `_total` suffix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "certificates_issued",
            "Workload certificates the mesh CA issued",
            self.issued.clone(),
        );
        registry.register(
            "certificate_requests_refused",
            "Certificate requests the mesh CA refused, by reason",
            self.refused.clone(),
        );
    }

    /// Counts a certificate issued.
    pub fn issued(&self) {
        self.issued.inc();
    }

    /// Counts a request refused for `why`.
    pub fn refused(&self, why: Refusal) {
        self.refused
            .get_or_create(&RefusalLabels {
                reason: why.label(),
            })
            .inc();
    }

    /// How many certificates were issued.
    pub fn issued_count(&self) -> u64 {
        self.issued.get()
    }

    /// How many requests were refused for `why`.
    pub fn refused_count(&self, why: Refusal) -> u64 {
        self.refused
            .get_or_create(&RefusalLabels {
                reason: why.label(),
            })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn registered_counters_show_in_the_callers_registry() {
        let metrics = CaMetrics::default();
        let mut registry = Registry::with_prefix("remora");
        metrics.register(&mut registry);
        metrics.issued();
        metrics.refused(Refusal::BadToken);
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("remora_certificates_issued_total 1"),
            "{text}"
        );
        assert!(
            text.contains("remora_certificate_requests_refused_total{reason=\"bad_token\"} 1"),
            "{text}"
        );
        assert_eq!(metrics.issued_count(), 1);
        assert_eq!(metrics.refused_count(Refusal::BadCsr), 0);
    }
}
