//! The latest certificate issued to each pod, for what operators ask: `proxy-status` shows
//! each proxy's identity and expiry, and the metrics count pods whose certificate nears its
//! end without a renewal (a quarter of its life left, where the agent renews at half).

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::SystemTime,
};

use remora_identity::SpiffeId;

/// One pod's latest certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issuance {
    /// Its SPIFFE ID.
    pub id: SpiffeId,
    /// When it was issued.
    pub issued: SystemTime,
    /// When it expires.
    pub not_after: SystemTime,
}

impl Issuance {
    /// Less than a quarter of its life left at `now`: its agent missed the renewal at half.
    pub fn is_expiring(&self, now: SystemTime) -> bool {
        let life = self
            .not_after
            .duration_since(self.issued)
            .unwrap_or_default();
        match self.not_after.duration_since(now) {
            Ok(left) => left < life / 4,
            Err(_) => true,
        }
    }
}

/// By pod (`namespace/name`), its latest certificate; clones share it. Expired entries go
/// when the next certificate is recorded, so pods long gone do not stay.
#[derive(Clone, Debug, Default)]
pub struct Issuances(Arc<RwLock<HashMap<String, Issuance>>>);

impl Issuances {
    /// Records the certificate just issued to `pod`.
    pub fn record(&self, pod: &str, issuance: Issuance) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        let now = issuance.issued;
        map.retain(|_, i| i.not_after > now);
        map.insert(pod.to_owned(), issuance);
    }

    /// The latest certificate of `pod`, unless it expired.
    pub fn latest(&self, pod: &str, now: SystemTime) -> Option<Issuance> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.get(pod).filter(|i| i.not_after > now).cloned()
    }

    /// How many pods' latest certificates are expiring (or expired) at `now`.
    pub fn expiring(&self, now: SystemTime) -> usize {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.values().filter(|i| i.is_expiring(now)).count()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn issuance(issued: u64, not_after: u64) -> Issuance {
        Issuance {
            id: SpiffeId::new("cluster.local", "shop", "web"),
            issued: at(issued),
            not_after: at(not_after),
        }
    }

    #[test]
    fn a_certificate_is_expiring_in_the_last_quarter_of_its_life() {
        let i = issuance(1_000, 2_000);
        assert!(!i.is_expiring(at(1_500)), "renewed at half");
        assert!(!i.is_expiring(at(1_749)));
        assert!(i.is_expiring(at(1_751)));
        assert!(i.is_expiring(at(2_500)), "expired");
    }

    #[test]
    fn the_latest_per_pod_is_kept_and_expired_ones_go() {
        let issuances = Issuances::default();
        issuances.record("shop/web-0", issuance(1_000, 2_000));
        issuances.record("shop/web-1", issuance(1_000, 2_000));
        issuances.record("shop/web-0", issuance(1_500, 2_500));
        assert_eq!(
            issuances.latest("shop/web-0", at(1_600)),
            Some(issuance(1_500, 2_500))
        );
        assert_eq!(issuances.expiring(at(1_800)), 1, "web-1 missed its renewal");
        assert_eq!(issuances.latest("shop/web-1", at(2_100)), None);
        issuances.record("shop/web-2", issuance(2_100, 3_100));
        assert_eq!(
            issuances.expiring(at(2_200)),
            0,
            "web-1's expired entry is gone"
        );
    }
}
