//! The resource names a stream subscribed to, without a copy of each name per stream.
//!
//! Envoy asks for every endpoint set its clusters name and every route config its listeners
//! name, which is, nearly always, every one the snapshot holds. So the names are kept as the
//! resources of the snapshot's set that they name (the set itself, shared, when they name all
//! of it), plus the few names that set lacks. A copy of every name per stream was a third of
//! the server's memory per connected proxy once the gRPC buffers were gone.

use std::{cmp::Ordering, collections::BTreeSet, iter::Peekable};

use crate::snapshot::{Resources, names_sum};

/// A stream's subscribed names of one type, split into the resources of a snapshot's set they
/// name and the names that set lacks.
#[derive(Clone, Debug)]
pub struct Names {
    /// The named resources of the set last picked from; its names are names of ours.
    found: Resources,
    /// Names that set does not hold.
    missing: BTreeSet<String>,
}

impl Default for Names {
    fn default() -> Self {
        Names {
            found: Resources::empty(),
            missing: BTreeSet::new(),
        }
    }
}

impl Names {
    /// The names, split against `set`.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>, set: &Resources) -> Names {
        let names: BTreeSet<&str> = names.into_iter().collect();
        Names {
            found: set.pick(names.iter().copied()),
            missing: names
                .into_iter()
                .filter(|n| !set.contains(n))
                .map(str::to_owned)
                .collect(),
        }
    }

    /// Every name, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        Merge {
            a: self.found.iter().map(|(n, _)| n.as_str()).peekable(),
            b: self.missing.iter().map(String::as_str).peekable(),
        }
    }

    /// How many names.
    pub fn len(&self) -> usize {
        self.found.len() + self.missing.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `names` are these names, in whatever order: told by their count and
    /// [`names_sum`], without sorting them. Every state-of-the-world ACK repeats the whole
    /// subscription (thousands of route config names); this costs a hash per name instead of
    /// a sorted copy. Names repeated in `names` make the counts differ: not alike.
    pub fn named_alike<N: AsRef<[u8]>>(&self, names: &[N]) -> bool {
        names.len() == self.len()
            && names_sum(names)
                == self
                    .found
                    .names_sum()
                    .wrapping_add(names_sum(&self.missing))
    }

    /// Whether `name` is one of the names.
    pub fn contains(&self, name: &str) -> bool {
        self.found.contains(name) || self.missing.contains(name)
    }

    /// The resources of `set` these names name; the names are split against `set` from now
    /// on, so what they share with it is not held twice.
    pub fn pick(&mut self, set: &Resources) -> Resources {
        if self.found.same_names(set) {
            // The usual change: versions moved, the names did not. What the set lacked it
            // still lacks, so only the versions are taken, without a walk over the names.
            self.found = set.clone();
        } else if self.found != *set {
            *self = Names::new(self.iter(), set);
        }
        self.found.clone()
    }
}

/// Two sorted iterators of distinct names merged in order.
struct Merge<'a, A: Iterator<Item = &'a str>, B: Iterator<Item = &'a str>> {
    a: Peekable<A>,
    b: Peekable<B>,
}

impl<'a, A: Iterator<Item = &'a str>, B: Iterator<Item = &'a str>> Iterator for Merge<'a, A, B> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let order = match (self.a.peek(), self.b.peek()) {
            (Some(a), Some(b)) => a.cmp(b),
            (Some(_), None) => Ordering::Less,
            (None, _) => Ordering::Greater,
        };
        match order {
            Ordering::Less | Ordering::Equal => self.a.next(),
            Ordering::Greater => self.b.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::tests::res;

    fn set(entries: &[(&str, &str)]) -> Resources {
        Resources::from_map(
            entries
                .iter()
                .map(|(n, v)| ((*n).to_owned(), res(n, v)))
                .collect(),
        )
    }

    #[test]
    fn names_of_the_whole_set_share_it_and_copy_nothing() {
        let all = set(&[("a", "1"), ("b", "1")]);
        let mut names = Names::new(["b", "a"], &all);
        assert!(names.missing.is_empty());
        assert_eq!(names.iter().collect::<Vec<_>>(), ["a", "b"]);
        let picked = names.pick(&all);
        assert_eq!(picked, all);
        assert_eq!(picked.len(), 2);
    }

    #[test]
    fn names_follow_the_set_they_are_picked_from() {
        let v1 = set(&[("a", "1"), ("b", "1")]);
        let mut names = Names::new(["a", "c", "z"], &v1);
        assert_eq!(names.iter().collect::<Vec<_>>(), ["a", "c", "z"]);
        assert_eq!(
            names
                .pick(&v1)
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );
        // c appears, a changes, b (never named) stays out.
        let v2 = set(&[("a", "2"), ("b", "1"), ("c", "1")]);
        let picked = names.pick(&v2);
        let seen: Vec<(&str, &str)> = picked
            .iter()
            .map(|(n, r)| (n.as_str(), r.version.as_str()))
            .collect();
        assert_eq!(seen, [("a", "2"), ("c", "1")]);
        assert_eq!(names.iter().collect::<Vec<_>>(), ["a", "c", "z"]);
        assert!(names.contains("z") && names.contains("c") && !names.contains("b"));
        // Every name gone from the set is still a name.
        assert!(names.pick(&Resources::empty()).is_empty());
        assert_eq!(names.iter().collect::<Vec<_>>(), ["a", "c", "z"]);
    }

    #[test]
    fn new_versions_of_the_same_names_are_taken_and_missing_names_kept() {
        let v1 = set(&[("a", "1"), ("b", "1")]);
        let mut names = Names::new(["a", "b", "z"], &v1);
        let v2 = set(&[("a", "2"), ("b", "1")]);
        let picked = names.pick(&v2);
        assert_eq!(picked, v2, "all of the set, shared");
        assert_eq!(names.iter().collect::<Vec<_>>(), ["a", "b", "z"]);
        // The same names as the picked part, though not the whole set: still all named.
        let mut some = Names::new(["a"], &v1);
        let only_a = set(&[("a", "3")]);
        assert_eq!(some.pick(&only_a), only_a);
        let wider = set(&[("a", "3"), ("c", "1")]);
        let picked: Vec<String> = some
            .pick(&wider)
            .iter()
            .map(|(n, r)| format!("{n}@{}", r.version))
            .collect();
        assert_eq!(picked, ["a@3"]);
    }

    #[test]
    fn names_are_alike_in_any_order_and_not_when_one_differs_or_repeats() {
        let v1 = set(&[("a", "1"), ("b", "1")]);
        let names = Names::new(["a", "b", "z"], &v1);
        assert!(names.named_alike(&["z", "a", "b"]));
        assert!(names.named_alike(&["a", "b", "z"]));
        assert!(!names.named_alike(&["a", "b", "y"]), "one differs");
        assert!(!names.named_alike(&["a", "b"]), "one fewer");
        assert!(!names.named_alike(&["a", "b", "z", "z"]), "one repeated");
        assert!(Names::default().named_alike::<&str>(&[]));
    }
}
