//! How long an ADS stream lives. A stream ends after a maximum age plus a random jitter, so
//! that the proxies of a replica that restarted, or was added, come back to it over time
//! instead of staying wherever they connected while it was gone; the jitter keeps proxies
//! that connected together from all reconnecting together.
//!
//! The age is enforced twice, in this order: the HTTP/2 connection is told to go away
//! (GOAWAY) at the maximum age (`tonic::transport::Server::max_connection_age`, set from
//! [`StreamAge::max`]), then the stream ends at the maximum age plus its jitter. Ending the
//! stream alone would not rebalance anything: Envoy would open its next stream on the same
//! connection, to the same replica. A GOAWAY alone would end nothing: the ADS stream never
//! ends by itself, and the connection drains only once its streams have. So the connection
//! is draining when the stream ends, and the proxy's next stream opens a new connection,
//! which the Service may send to any replica. The proxy keeps its config meanwhile.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// The maximum age of a stream unless told otherwise, as Istio's default.
pub const DEFAULT_MAX_STREAM_AGE: Duration = Duration::from_secs(30 * 60);

/// The jitter unless told otherwise, as a fraction of the maximum age: up to 10 % more.
const DEFAULT_JITTER_DIVISOR: u32 = 10;

/// How long ADS streams live: a maximum age plus up to `jitter` more, drawn per stream. Clones
/// share one count of the streams ended by age, which the caller can export as a metric.
#[derive(Clone, Debug)]
pub struct StreamAge {
    max: Duration,
    jitter: Duration,
    ended: Arc<AtomicU64>,
}

impl Default for StreamAge {
    /// [`DEFAULT_MAX_STREAM_AGE`] (30 minutes), with up to 10 % more.
    fn default() -> Self {
        StreamAge::new(DEFAULT_MAX_STREAM_AGE)
    }
}

impl StreamAge {
    /// Streams live `max`, plus a jitter of up to a tenth of it (see [`StreamAge::jitter`]).
    pub fn new(max: Duration) -> StreamAge {
        StreamAge {
            max,
            jitter: max / DEFAULT_JITTER_DIVISOR,
            ended: Arc::default(),
        }
    }

    /// Each stream lives up to `jitter` longer than the maximum age, drawn uniformly per
    /// stream (zero: every stream ends at exactly the maximum age).
    pub fn jitter(mut self, jitter: Duration) -> StreamAge {
        self.jitter = jitter;
        self
    }

    /// The maximum age: the connection carrying a stream is told to go away then.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The largest extra life a stream may draw.
    pub fn max_jitter(&self) -> Duration {
        self.jitter
    }

    /// How many streams ended because they reached their age, by this value or its clones.
    pub fn ended(&self) -> u64 {
        self.ended.load(Ordering::Relaxed)
    }

    /// Counts one stream ended by age.
    pub(super) fn count_ended(&self) {
        self.ended.fetch_add(1, Ordering::Relaxed);
    }

    /// How long a stream lives: the maximum age plus `random`'s share of the jitter, where
    /// `random` is uniform over all `u64` (0 adds nothing, `u64::MAX` almost all the jitter).
    pub(super) fn lifetime(&self, random: u64) -> Duration {
        // The jitter scaled by random / 2^64, in integers: no float can panic or round up
        // past the bound. Only a jitter of centuries saturates.
        let scaled = self.jitter.as_nanos().saturating_mul(u128::from(random)) >> 64;
        let extra = Duration::from_nanos(u64::try_from(scaled).unwrap_or(u64::MAX));
        self.max.saturating_add(extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_lives_at_least_the_maximum_age_and_less_than_the_jitter_more() {
        let age = StreamAge::new(Duration::from_secs(1800));
        assert_eq!(age.max_jitter(), Duration::from_secs(180));
        assert_eq!(age.lifetime(0), Duration::from_secs(1800));
        let longest = age.lifetime(u64::MAX);
        assert!(longest < Duration::from_secs(1980), "{longest:?}");
        assert!(longest > Duration::from_secs(1979), "{longest:?}");
        for random in [1, u64::MAX / 3, u64::MAX / 2, u64::MAX - 1] {
            let lifetime = age.lifetime(random);
            assert!(
                (Duration::from_secs(1800)..Duration::from_secs(1980)).contains(&lifetime),
                "{random}: {lifetime:?}"
            );
        }
    }

    #[test]
    fn the_jitter_is_spread_in_proportion_to_the_random_value() {
        let age = StreamAge::new(Duration::from_secs(100)).jitter(Duration::from_secs(40));
        assert_eq!(
            age.lifetime(u64::MAX / 2),
            Duration::from_secs(120) - nanos(1)
        );
        assert_eq!(age.lifetime(1 << 62), Duration::from_secs(110));
    }

    #[test]
    fn without_jitter_every_stream_lives_exactly_the_maximum_age() {
        let age = StreamAge::new(Duration::from_secs(2)).jitter(Duration::ZERO);
        assert_eq!(age.lifetime(0), Duration::from_secs(2));
        assert_eq!(age.lifetime(u64::MAX), Duration::from_secs(2));
    }

    #[test]
    fn a_huge_age_saturates_instead_of_overflowing() {
        let age = StreamAge::new(Duration::MAX).jitter(Duration::MAX);
        assert_eq!(age.lifetime(u64::MAX), Duration::MAX);
    }

    #[test]
    fn the_default_is_thirty_minutes_with_up_to_three_more() {
        let age = StreamAge::default();
        assert_eq!(age.max(), Duration::from_secs(30 * 60));
        assert_eq!(age.max_jitter(), Duration::from_secs(3 * 60));
    }

    #[test]
    fn clones_share_the_count_of_streams_ended_by_age() {
        let age = StreamAge::default();
        let exported = age.clone();
        age.count_ended();
        age.clone().count_ended();
        assert_eq!(exported.ended(), 2);
    }

    fn nanos(n: u64) -> Duration {
        Duration::from_nanos(n)
    }
}
