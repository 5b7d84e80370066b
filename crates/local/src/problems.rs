//! What local mode says is wrong: each problem is logged once, as a warning when it appears
//! and again when it clears, rather than on every reload or never.

use std::collections::BTreeSet;

use tracing::{info, warn};

/// The problems last logged, of one source (the folder's documents, or the mesh's objects).
pub(crate) struct ProblemLog {
    source: &'static str,
    current: BTreeSet<String>,
}

/// What one update found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Update {
    /// Problems not there before, in order.
    pub appeared: Vec<String>,
    /// Problems there before and gone now, in order.
    pub cleared: Vec<String>,
}

impl ProblemLog {
    pub(crate) fn new(source: &'static str) -> Self {
        ProblemLog {
            source,
            current: BTreeSet::new(),
        }
    }

    /// Takes the problems there are now and logs what changed since the last call.
    pub(crate) fn update(&mut self, now: impl IntoIterator<Item = String>) -> Update {
        let now: BTreeSet<String> = now.into_iter().collect();
        let update = Update {
            appeared: now.difference(&self.current).cloned().collect(),
            cleared: self.current.difference(&now).cloned().collect(),
        };
        for p in &update.appeared {
            warn!(source = self.source, problem = %p, "problem");
        }
        for p in &update.cleared {
            info!(source = self.source, problem = %p, "problem cleared");
        }
        self.current = now;
        update
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(log: &mut ProblemLog, now: &[&str]) -> Update {
        log.update(now.iter().map(|p| (*p).to_owned()))
    }

    #[test]
    fn a_problem_is_reported_when_it_appears_and_when_it_clears_and_not_in_between() {
        let mut log = ProblemLog::new("mesh");
        assert_eq!(
            update(&mut log, &["a", "b"]),
            Update {
                appeared: vec!["a".into(), "b".into()],
                cleared: vec![]
            }
        );
        assert_eq!(update(&mut log, &["b", "a"]), Update::default());
        assert_eq!(
            update(&mut log, &["b", "c"]),
            Update {
                appeared: vec!["c".into()],
                cleared: vec!["a".into()]
            }
        );
        assert_eq!(
            update(&mut log, &[]),
            Update {
                appeared: vec![],
                cleared: vec!["b".into(), "c".into()]
            }
        );
    }
}
