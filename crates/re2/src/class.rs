//! A character class: a set of runes kept as sorted ranges that neither overlap nor abut,
//! as RE2's `CharClassBuilder` keeps them, so two equal sets have equal ranges.

/// The largest rune RE2 knows (`Runemax`); negation is relative to `0..=RUNE_MAX`.
pub(crate) const RUNE_MAX: u32 = 0x10_FFFF;

/// A set of runes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CharClass {
    ranges: Vec<(u32, u32)>,
}

impl CharClass {
    /// The class of `lo..=hi`.
    pub(crate) fn range(lo: u32, hi: u32) -> CharClass {
        let mut class = CharClass::default();
        class.add_range(lo, hi);
        class
    }

    /// The ranges, in order.
    pub(crate) fn ranges(&self) -> &[(u32, u32)] {
        &self.ranges
    }

    /// Adds `lo..=hi` (nothing when `hi < lo`).
    pub(crate) fn add_range(&mut self, lo: u32, hi: u32) {
        if hi < lo {
            return;
        }
        // Ranges wholly before `lo - 1` stay, as do those wholly after `hi + 1`; the rest
        // (overlapping or abutting) merge into one.
        let first = self
            .ranges
            .partition_point(|&(_, h)| h.saturating_add(1) < lo);
        let last = self
            .ranges
            .partition_point(|&(l, _)| l <= hi.saturating_add(1));
        let (mut lo, mut hi) = (lo, hi);
        if first < last {
            lo = lo.min(self.ranges[first].0);
            hi = hi.max(self.ranges[last - 1].1);
        }
        self.ranges.splice(first..last, [(lo, hi)]);
    }

    /// Adds every rune of `other`.
    pub(crate) fn add_class(&mut self, other: &CharClass) {
        for &(lo, hi) in &other.ranges {
            self.add_range(lo, hi);
        }
    }

    /// Adds `lo..=hi` and, as RE2 folds case in Latin-1 (`AddFoldedRangeLatin1`), the other
    /// case of every ASCII letter in it.
    pub(crate) fn add_folded_range(&mut self, lo: u32, hi: u32) {
        self.add_range(lo, hi);
        let (upper, lower) = (u32::from(b'A'), u32::from(b'a'));
        for (from, to) in [(upper, lower), (lower, upper)] {
            let (l, h) = (lo.max(from), hi.min(from + 25));
            if l <= h {
                self.add_range(l - from + to, h - from + to);
            }
        }
    }

    /// Every rune of `0..=RUNE_MAX` the class lacks, and none it has.
    pub(crate) fn negate(&mut self) {
        let mut negated = Vec::with_capacity(self.ranges.len() + 1);
        let mut next = 0;
        for &(lo, hi) in &self.ranges {
            if lo > next {
                negated.push((next, lo - 1));
            }
            next = hi + 1;
        }
        if next <= RUNE_MAX {
            negated.push((next, RUNE_MAX));
        }
        self.ranges = negated;
    }

    /// Drops every rune above `max`.
    pub(crate) fn remove_above(&mut self, max: u32) {
        self.ranges.retain(|&(lo, _)| lo <= max);
        if let Some(last) = self.ranges.last_mut() {
            last.1 = last.1.min(max);
        }
    }

    /// Whether `r` is in the class.
    pub(crate) fn contains(&self, r: u32) -> bool {
        let i = self.ranges.partition_point(|&(_, hi)| hi < r);
        self.ranges.get(i).is_some_and(|&(lo, _)| lo <= r)
    }

    /// How many runes the class holds (RE2's `size()`).
    pub(crate) fn size(&self) -> u32 {
        self.ranges.iter().map(|&(lo, hi)| hi - lo + 1).sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether the class holds every rune (RE2's `full()`).
    pub(crate) fn is_full(&self) -> bool {
        self.ranges == [(0, RUNE_MAX)]
    }

    /// Whether the class treats A-Z as it treats a-z (RE2's `FoldsASCII`).
    pub(crate) fn folds_ascii(&self) -> bool {
        (0..26).all(|i| self.contains(u32::from(b'A') + i) == self.contains(u32::from(b'a') + i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(ranges: &[(u32, u32)]) -> CharClass {
        let mut c = CharClass::default();
        for &(lo, hi) in ranges {
            c.add_range(lo, hi);
        }
        c
    }

    #[test]
    fn ranges_that_overlap_or_abut_merge_into_one() {
        assert_eq!(class(&[(5, 7), (1, 2), (3, 4)]).ranges(), [(1, 7)]);
        assert_eq!(
            class(&[(1, 2), (10, 12), (4, 11)]).ranges(),
            [(1, 2), (4, 12)]
        );
        assert_eq!(class(&[(1, 9), (3, 4)]).ranges(), [(1, 9)]);
        assert_eq!(class(&[(1, 2), (4, 5)]).ranges(), [(1, 2), (4, 5)]);
        assert_eq!(class(&[(0, RUNE_MAX), (7, 7)]).ranges(), [(0, RUNE_MAX)]);
    }

    #[test]
    fn negation_covers_what_the_class_lacks_up_to_the_last_rune() {
        let mut c = class(&[(0, 9), (11, 20)]);
        c.negate();
        assert_eq!(c.ranges(), [(10, 10), (21, RUNE_MAX)]);
        c.negate();
        assert_eq!(c.ranges(), [(0, 9), (11, 20)]);
        c.remove_above(15);
        assert_eq!(c.ranges(), [(0, 9), (11, 15)]);
        assert_eq!(c.size(), 15);
    }

    #[test]
    fn folding_adds_the_other_case_of_ascii_letters_only() {
        let mut c = CharClass::default();
        c.add_folded_range(u32::from(b'X'), u32::from(b'b'));
        assert_eq!(
            c.ranges(),
            [
                (u32::from(b'A'), u32::from(b'B')),
                (u32::from(b'X'), u32::from(b'b')),
                (u32::from(b'x'), u32::from(b'z'))
            ]
        );
        assert!(c.folds_ascii());
        assert!(!CharClass::range(u32::from(b'A'), u32::from(b'Z')).folds_ascii());
        let mut e = CharClass::default();
        e.add_folded_range(0xc0, 0xe0);
        assert_eq!(e.ranges(), [(0xc0, 0xe0)]);
        assert!(e.folds_ascii());
    }
}
