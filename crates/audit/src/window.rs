//! Would-be denials counted per policy, rule and caller over a sliding window, in one-minute
//! buckets: old counts fall out by themselves, and memory is bounded by the number of
//! distinct (rule, caller) pairs, which is capped.

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use remora_api::access_policy::AuditedDenial;
use remora_model::input::ObjectKey;
use serde::{Deserialize, Serialize};

/// How far back the counts reach.
pub const WINDOW: Duration = Duration::from_secs(600);
/// The width of one bucket.
const BUCKET: Duration = Duration::from_secs(60);
/// The most (policy, rule, caller) entries kept; more are counted as dropped. A caller
/// population that large is a policy that denies everyone, which the top entries show.
pub const MAX_ENTRIES: usize = 10_000;
/// The most entries a policy's status lists, largest counts first.
pub const MAX_LISTED: usize = 20;

/// One request (or connection) an audit rule would have denied.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Denial {
    /// The access policy whose rule it is.
    pub policy: ObjectKey,
    /// The rule's name (for what no allow rule allows, the allow rules' names).
    pub rule: String,
    /// The caller's SPIFFE ID, or `unauthenticated`.
    pub source: String,
}

/// One denial's counts as a replica reports them to the others: the policy as
/// `<namespace>/<name>`, and (minute since the epoch, count) pairs, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counted {
    /// `<namespace>/<name>`.
    pub policy: String,
    /// The rule (or allow rules) it counts for.
    pub rule: String,
    /// The caller.
    pub source: String,
    /// (minute since the epoch, count), oldest first.
    pub buckets: Vec<(u64, i64)>,
}

/// The counts, by denial, each a queue of (bucket, count), oldest first.
#[derive(Clone, Debug, Default)]
pub struct AuditWindow {
    counts: BTreeMap<Denial, VecDeque<(u64, i64)>>,
    dropped: u64,
}

fn bucket(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / BUCKET.as_secs()
}

/// The first bucket still inside the window at `now`.
fn oldest(now: SystemTime) -> u64 {
    bucket(now).saturating_sub(WINDOW.as_secs() / BUCKET.as_secs())
}

impl AuditWindow {
    /// Counts `n` denials at `at`.
    pub fn record(&mut self, at: SystemTime, denial: Denial, n: i64) {
        if !self.counts.contains_key(&denial) && self.counts.len() >= MAX_ENTRIES {
            self.prune(at);
        }
        self.record_in(bucket(at), denial, n);
    }

    /// Counts `n` denials in bucket `b`, kept in order.
    fn record_in(&mut self, b: u64, denial: Denial, n: i64) {
        if !self.counts.contains_key(&denial) && self.counts.len() >= MAX_ENTRIES {
            self.dropped += 1;
            return;
        }
        let buckets = self.counts.entry(denial).or_default();
        match buckets.iter().position(|(at, _)| *at >= b) {
            Some(i) if buckets[i].0 == b => buckets[i].1 += n,
            Some(i) => buckets.insert(i, (b, n)),
            None => buckets.push_back((b, n)),
        }
    }

    /// Forgets what fell out of the window.
    pub fn prune(&mut self, now: SystemTime) {
        let oldest = oldest(now);
        self.counts.retain(|_, buckets| {
            while buckets.front().is_some_and(|(b, _)| *b < oldest) {
                buckets.pop_front();
            }
            !buckets.is_empty()
        });
    }

    /// Everything counted, to report to the other replicas.
    pub fn snapshot(&self) -> Vec<Counted> {
        self.counts
            .iter()
            .map(|(d, buckets)| Counted {
                policy: d.policy.to_string(),
                rule: d.rule.clone(),
                source: d.source.clone(),
                buckets: buckets.iter().copied().collect(),
            })
            .collect()
    }

    /// Adds another replica's counts (entries beyond the cap are dropped as new ones are).
    pub fn add(&mut self, counted: &[Counted]) {
        for c in counted {
            let Some((ns, name)) = c.policy.split_once('/') else {
                continue;
            };
            let denial = Denial {
                policy: ObjectKey::new(ns, name),
                rule: c.rule.clone(),
                source: c.source.clone(),
            };
            for &(bucket, n) in &c.buckets {
                self.record_in(bucket, denial.clone(), n);
            }
        }
    }

    /// Entries refused because the window was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// What `policy`'s audit rules would have denied within the window, largest counts
    /// first (then by rule and caller), at most [`MAX_LISTED`].
    pub fn denials(&self, policy: &ObjectKey, now: SystemTime) -> Vec<AuditedDenial> {
        let oldest = oldest(now);
        let minutes = WINDOW.as_secs() / 60;
        let mut out: Vec<AuditedDenial> = self
            .counts
            .range(first_of(policy)..)
            .take_while(|(d, _)| d.policy == *policy)
            .filter_map(|(d, buckets)| {
                let requests: i64 = buckets
                    .iter()
                    .filter(|(b, _)| *b >= oldest)
                    .map(|(_, n)| n)
                    .sum();
                (requests > 0).then(|| AuditedDenial {
                    rule: d.rule.clone(),
                    source: d.source.clone(),
                    requests,
                    message: format!(
                        "rule {} would have denied {requests} request{} from {} in the last {minutes} minutes",
                        d.rule,
                        if requests == 1 { "" } else { "s" },
                        d.source
                    ),
                })
            })
            .collect();
        out.sort_by_key(|d| std::cmp::Reverse(d.requests));
        out.truncate(MAX_LISTED);
        out
    }
}

/// The smallest denial of `policy`, where its range starts.
fn first_of(policy: &ObjectKey) -> Denial {
    Denial {
        policy: policy.clone(),
        rule: String::new(),
        source: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denial(policy: &str, rule: &str, source: &str) -> Denial {
        Denial {
            policy: ObjectKey::new("shop", policy),
            rule: rule.into(),
            source: source.into(),
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn counts_sum_per_rule_and_caller_within_the_window() {
        let mut w = AuditWindow::default();
        let legacy = "spiffe://cluster.local/ns/shop/sa/legacy";
        for i in 0..37 {
            w.record(at(6_000 + i), denial("payments", "no-legacy", legacy), 1);
        }
        w.record(
            at(6_100),
            denial("payments", "no-legacy", "unauthenticated"),
            2,
        );
        w.record(at(6_100), denial("orders", "x", legacy), 5);
        let listed = w.denials(&ObjectKey::new("shop", "payments"), at(6_200));
        let got: Vec<_> = listed
            .iter()
            .map(|d| (d.source.as_str(), d.requests))
            .collect();
        assert_eq!(got, [(legacy, 37), ("unauthenticated", 2)]);
        assert_eq!(
            listed[0].message,
            format!(
                "rule no-legacy would have denied 37 requests from {legacy} in the last 10 minutes"
            )
        );
        // Eleven minutes on, the first minute's counts are gone.
        assert!(
            w.denials(&ObjectKey::new("shop", "payments"), at(6_000 + 660 + 60))
                .is_empty()
        );
        w.prune(at(7_000));
        assert!(w.counts.is_empty());
    }

    #[test]
    fn another_replicas_counts_add_up_with_ours() {
        let legacy = "spiffe://cluster.local/ns/shop/sa/legacy";
        let mut ours = AuditWindow::default();
        ours.record(at(6_000), denial("payments", "no-legacy", legacy), 3);
        let mut theirs = AuditWindow::default();
        theirs.record(at(5_940), denial("payments", "no-legacy", legacy), 2);
        theirs.record(at(6_010), denial("payments", "no-legacy", legacy), 4);
        let report = serde_json::to_string(&theirs.snapshot()).expect("JSON");
        let counted: Vec<Counted> = serde_json::from_str(&report).expect("read back");
        ours.add(&counted);
        let listed = ours.denials(&ObjectKey::new("shop", "payments"), at(6_050));
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].requests, 9);
        // Buckets stay in order, whatever order they came in.
        assert_eq!(ours.snapshot()[0].buckets, [(99, 2), (100, 7)]);
    }

    #[test]
    fn a_full_window_drops_new_entries_and_says_so() {
        let mut w = AuditWindow::default();
        for i in 0..MAX_ENTRIES {
            w.record(at(60), denial("p", "r", &format!("caller-{i}")), 1);
        }
        w.record(at(61), denial("p", "r", "one-more"), 1);
        assert_eq!(w.dropped(), 1);
        // An entry already counted still counts.
        w.record(at(61), denial("p", "r", "caller-0"), 1);
        let listed = w.denials(&ObjectKey::new("shop", "p"), at(62));
        assert_eq!(listed.len(), MAX_LISTED);
        assert_eq!(
            (listed[0].source.as_str(), listed[0].requests),
            ("caller-0", 2)
        );
    }
}
