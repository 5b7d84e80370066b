//! Keeping the workload certificate fresh: the first one by the pod's token, then a new key
//! and certificate at about half of each one's lifetime, proved by the current certificate
//! (the token if that fails). The certificate served stays until its successor arrives.

use std::{
    convert::Infallible,
    time::{Duration, SystemTime},
};

use backon::{BackoffBuilder, ExponentialBuilder};
use remora_identity::SpiffeId;

use crate::{
    client::{CaClient, Certified, CertifyError, Proof},
    secrets::Publisher,
};

/// How far the renewal time moves at random either way, as a share of the time to it: the
/// pods of a rollout, certified together, do not all renew in the same second.
pub const RENEW_JITTER: f64 = 0.1;
/// The least wait before renewing, however short the certificate.
pub const MIN_RENEW_DELAY: Duration = Duration::from_secs(1);
/// The first wait after a failed request.
const RETRY_MIN: Duration = Duration::from_secs(1);
/// The longest wait after failed requests.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// How long after `received` to renew a certificate valid until `not_after`: half of that
/// time, moved by `jitter` (from -1 to 1) times [`RENEW_JITTER`] of it.
pub fn renew_delay(received: SystemTime, not_after: SystemTime, jitter: f64) -> Duration {
    let lifetime = not_after.duration_since(received).unwrap_or_default();
    let factor = 0.5 * (1.0 + RENEW_JITTER * jitter.clamp(-1.0, 1.0));
    lifetime.mul_f64(factor).max(MIN_RENEW_DELAY)
}

/// Seconds since the Unix epoch, for the logs.
fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Gets certificates for one workload and publishes them over SDS.
pub struct Keeper {
    client: CaClient,
    id: SpiffeId,
    pod: String,
    /// When the certificate presented to the control plane expires.
    not_after: Option<SystemTime>,
}

impl Keeper {
    /// Certificates for `id` (the identity of `pod`, `namespace/name`) from `client`.
    pub fn new(client: CaClient, id: SpiffeId, pod: String) -> Keeper {
        Keeper {
            client,
            id,
            pod,
            not_after: None,
        }
    }

    /// Gets and renews certificates forever, publishing each through `publisher`.
    pub async fn run(mut self, publisher: Publisher) -> Infallible {
        let mut proof = Proof::Token;
        loop {
            let certified = self.obtain(proof).await;
            let delay = renew_delay(
                certified.received,
                certified.not_after,
                fastrand::f64() * 2.0 - 1.0,
            );
            tracing::info!(
                id = %self.id,
                pod = %self.pod,
                not_after_unix = unix_seconds(certified.not_after),
                renew_in = ?delay,
                "got a workload certificate"
            );
            self.install(&certified, &publisher);
            tokio::time::sleep(delay).await;
            proof = Proof::Certificate;
        }
    }

    fn install(&mut self, certified: &Certified, publisher: &Publisher) {
        self.client.install(certified);
        self.not_after = Some(certified.not_after);
        publisher.publish_certificate(&certified.chain_pem, &certified.key.private_key_pem());
        publisher.publish_bundle(&certified.bundle_pem);
    }

    /// A certificate, retrying with exponential backoff until one comes.
    async fn obtain(&self, proof: Proof) -> Certified {
        let mut waits = ExponentialBuilder::new()
            .with_min_delay(RETRY_MIN)
            .with_max_delay(RETRY_MAX)
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            match self.attempt(proof).await {
                Ok(certified) => return certified,
                Err(e) => {
                    let wait = waits.next().unwrap_or(RETRY_MAX);
                    tracing::warn!(
                        id = %self.id,
                        pod = %self.pod,
                        error = %e,
                        retry_in = ?wait,
                        "could not get a workload certificate"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// By certificate when asked and it is still valid, by token otherwise or if that fails.
    async fn attempt(&self, proof: Proof) -> Result<Certified, CertifyError> {
        let valid = self.not_after.is_some_and(|t| SystemTime::now() < t);
        if proof == Proof::Certificate && valid {
            match self.client.certify(&self.id, Proof::Certificate).await {
                Ok(certified) => return Ok(certified),
                Err(e) => tracing::warn!(
                    id = %self.id,
                    error = %e,
                    "renewal by certificate failed; trying the token"
                ),
            }
        }
        self.client.certify(&self.id, Proof::Token).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn renewal_is_at_half_the_lifetime_without_jitter() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(renew_delay(now, now + 24 * HOUR, 0.0), 12 * HOUR);
    }

    #[test]
    fn jitter_moves_it_by_at_most_a_tenth_either_way() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let lifetime = 24 * HOUR;
        assert_eq!(
            renew_delay(now, now + lifetime, 1.0),
            lifetime.mul_f64(0.55)
        );
        assert_eq!(
            renew_delay(now, now + lifetime, -1.0),
            lifetime.mul_f64(0.45)
        );
        assert_eq!(
            renew_delay(now, now + lifetime, 7.0),
            lifetime.mul_f64(0.55),
            "out-of-range jitter is clamped"
        );
    }

    #[test]
    fn an_expired_or_tiny_certificate_is_renewed_after_the_floor() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(renew_delay(now, now - HOUR, 0.0), MIN_RENEW_DELAY);
        assert_eq!(
            renew_delay(now, now + Duration::from_millis(10), 0.0),
            MIN_RENEW_DELAY
        );
    }
}
