//! Percentiles over the fleet: nearest rank, so every figure is one Envoy's own (with 50
//! Envoys, p99 is the slowest of them).

/// The spread of one measure over the fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary<T> {
    /// How many values.
    pub count: usize,
    /// The smallest.
    pub min: T,
    /// The median (nearest rank).
    pub p50: T,
    /// The 99th percentile (nearest rank).
    pub p99: T,
    /// The largest.
    pub max: T,
}

/// The summary of `values`; `None` when there are none.
pub fn summary<T: Ord + Copy>(values: &[T]) -> Option<Summary<T>> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    Some(Summary {
        count: sorted.len(),
        min: *sorted.first()?,
        p50: rank(&sorted, 50)?,
        p99: rank(&sorted, 99)?,
        max: *sorted.last()?,
    })
}

/// The smallest value at least `percent` % of the values are at or below.
fn rank<T: Copy>(sorted: &[T], percent: usize) -> Option<T> {
    let n = (sorted.len() * percent).div_ceil(100).max(1);
    sorted.get(n - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_values_of_the_set_by_nearest_rank() {
        let values: Vec<u32> = (1..=200).rev().collect();
        let s = summary(&values).expect("values");
        assert_eq!(
            s,
            Summary {
                count: 200,
                min: 1,
                p50: 100,
                p99: 198,
                max: 200
            }
        );
    }

    #[test]
    fn with_fifty_values_p99_is_the_largest() {
        let values: Vec<u32> = (1..=50).collect();
        let s = summary(&values).expect("values");
        assert_eq!((s.p50, s.p99, s.max), (25, 50, 50));
    }

    #[test]
    fn nothing_to_summarise_gives_none() {
        assert_eq!(summary::<u32>(&[]), None);
    }
}
