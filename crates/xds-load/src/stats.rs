//! Percentiles of measured samples, as every benchmark report states them.

use std::time::Duration;

/// p50, p99 and the maximum of a set of durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spread {
    /// How many samples.
    pub count: usize,
    /// The median (nearest rank).
    pub p50: Duration,
    /// The 99th percentile (nearest rank).
    pub p99: Duration,
    /// The largest sample.
    pub max: Duration,
}

impl Spread {
    /// `None` for no samples.
    pub fn of(mut samples: Vec<Duration>) -> Option<Spread> {
        samples.sort_unstable();
        Some(Spread {
            count: samples.len(),
            p50: percentile(&samples, 50)?,
            p99: percentile(&samples, 99)?,
            max: *samples.last()?,
        })
    }
}

/// The nearest-rank percentile of sorted samples: the smallest sample that at least `p`
/// percent of the samples do not exceed. No interpolation, so it is always a measured value.
pub fn percentile<T: Copy>(sorted: &[T], p: usize) -> Option<T> {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn nearest_rank_percentiles() {
        let hundred: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&hundred, 50), Some(ms(50)));
        assert_eq!(percentile(&hundred, 99), Some(ms(99)));
        assert_eq!(percentile(&hundred, 100), Some(ms(100)));
        // With fewer than a hundred samples the p99 is the maximum.
        let ten: Vec<Duration> = (1..=10).map(ms).collect();
        assert_eq!(percentile(&ten, 99), Some(ms(10)));
        assert_eq!(percentile(&ten, 50), Some(ms(5)));
        assert_eq!(percentile(&[ms(7)], 1), Some(ms(7)));
        assert_eq!(percentile::<Duration>(&[], 50), None);
    }

    #[test]
    fn spreads_sort_their_samples() {
        let s = Spread::of(vec![ms(30), ms(10), ms(20)]).expect("samples");
        assert_eq!((s.count, s.p50, s.p99, s.max), (3, ms(20), ms(30), ms(30)));
        assert_eq!(Spread::of(Vec::new()), None);
    }
}
