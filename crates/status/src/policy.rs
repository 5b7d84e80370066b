//! The status of a `SidecarPolicy`: `Accepted` from validation, the fleet it governs and the
//! sidecar versions that fleet runs, `RolledOut`/`Progressing` from those versions, and
//! `Degraded` when a governed proxy rejects its config.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use remora_api::{
    FieldError, SidecarPolicyStatus,
    conditions::{self, reason},
    sidecar_policy::VersionCount,
};

use crate::{ProxyTally, condition::Conditions, reason::AS_EXPECTED, version::newest_first};

/// What the controller knows about one policy, from the model and the proxy pods.
#[derive(Clone, Debug, Default)]
pub struct PolicyFacts<'a> {
    /// The `metadata.generation` these facts describe (`Mesh::policy_generation`).
    pub generation: Option<i64>,
    /// Problems of the policy's latest spec (`Mesh::policy_validation`).
    pub validation: &'a [FieldError],
    /// The sidecar version the policy asks for (`spec.proxy.version`), compared exactly with
    /// the versions below.
    pub desired_version: String,
    /// Proxies the policy governs (`Mesh::proxy_policy`).
    pub matched_proxies: i32,
    /// Workloads (Deployments, StatefulSets, DaemonSets) owning those proxies' pods.
    pub matched_workloads: i32,
    /// How many governed proxies run each sidecar version (their image's tag).
    pub versions: BTreeMap<String, i32>,
    /// How the governed proxies took their config.
    pub proxies: ProxyTally,
}

/// The status a policy should have. Conditions whose status did not change keep their
/// `lastTransitionTime` from `previous`. `rollout` is left unset: rollouts are not driven yet.
pub fn policy_status(
    facts: &PolicyFacts<'_>,
    previous: Option<&SidecarPolicyStatus>,
    now: Time,
) -> SidecarPolicyStatus {
    let previous = previous.map_or(&[][..], |p| p.conditions.as_slice());
    let c = Conditions::new(previous, facts.generation, now);
    let fleet = Fleet::of(facts);
    SidecarPolicyStatus {
        observed_generation: facts.generation,
        conditions: vec![
            c.accepted(facts.validation, "policy"),
            fleet.progressing(&c),
            fleet.rolled_out(&c),
            degraded(&c, &facts.proxies),
        ],
        matched_workloads: facts.matched_workloads,
        matched_proxies: facts.matched_proxies,
        versions: histogram(&facts.versions),
        rollout: None,
    }
}

/// Versions with at least one proxy, newest first.
fn histogram(versions: &BTreeMap<String, i32>) -> Vec<VersionCount> {
    let mut out: Vec<VersionCount> = versions
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(version, n)| VersionCount {
            version: version.clone(),
            proxies: *n,
        })
        .collect();
    out.sort_by(|a, b| newest_first(&a.version, &b.version));
    out
}

/// How far the governed proxies are from the policy's version.
struct Fleet<'a> {
    version: &'a str,
    updated: i32,
    total: i32,
}

impl<'a> Fleet<'a> {
    fn of(facts: &'a PolicyFacts<'_>) -> Self {
        let version = facts.desired_version.as_str();
        Fleet {
            version,
            updated: facts.versions.get(version).copied().unwrap_or_default(),
            total: facts.matched_proxies,
        }
    }

    fn done(&self) -> bool {
        self.updated >= self.total
    }

    fn tally(&self) -> String {
        if self.total == 0 {
            return "No proxy is governed by this policy yet.".into();
        }
        format!(
            "{} of {} governed proxies run sidecar version {}.",
            self.updated, self.total, self.version
        )
    }

    fn rolled_out(&self, c: &Conditions<'_>) -> Condition {
        let (status, why) = if self.done() {
            (true, reason::COMPLETE)
        } else {
            (false, reason::ROLLING_OUT)
        };
        c.set(conditions::ROLLED_OUT, status, why, self.tally())
    }

    fn progressing(&self, c: &Conditions<'_>) -> Condition {
        if self.done() {
            return c.set(
                conditions::PROGRESSING,
                false,
                reason::COMPLETE,
                format!("No rollout is under way. {}", self.tally()),
            );
        }
        let message = format!(
            "{} The others pick it up when their pods are restarted (for example with \
             `kubectl rollout restart`); Remora does not restart pods itself yet.",
            self.tally()
        );
        c.set(conditions::PROGRESSING, true, reason::ROLLING_OUT, message)
    }
}

fn degraded(c: &Conditions<'_>, tally: &ProxyTally) -> Condition {
    if tally.nacked > 0 {
        return c.set(
            conditions::DEGRADED,
            true,
            reason::REJECTED_BY_PROXY,
            tally.rejection(),
        );
    }
    c.set(
        conditions::DEGRADED,
        false,
        AS_EXPECTED,
        "No governed proxy rejected its config.".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::{find, tests::at};

    fn facts(desired: &str, versions: &[(&str, i32)]) -> PolicyFacts<'static> {
        let versions: BTreeMap<String, i32> = versions
            .iter()
            .map(|(v, n)| ((*v).to_owned(), *n))
            .collect();
        PolicyFacts {
            generation: Some(4),
            desired_version: desired.into(),
            matched_proxies: versions.values().sum(),
            matched_workloads: 2,
            versions,
            ..Default::default()
        }
    }

    fn get<'s>(s: &'s SidecarPolicyStatus, type_: &str) -> (&'s str, &'s str, &'s str) {
        let c = find(&s.conditions, type_).expect("the condition is set");
        (c.status.as_str(), c.reason.as_str(), c.message.as_str())
    }

    #[test]
    fn the_version_histogram_is_newest_first() {
        let s = policy_status(
            &facts(
                "1.40.0",
                &[
                    ("1.9.0", 1),
                    ("1.40.0", 3),
                    ("unknown", 1),
                    ("1.10.2", 2),
                    ("0.1.0", 0),
                ],
            ),
            None,
            at(0),
        );
        let got: Vec<(&str, i32)> = s
            .versions
            .iter()
            .map(|v| (v.version.as_str(), v.proxies))
            .collect();
        assert_eq!(
            got,
            [("1.40.0", 3), ("1.10.2", 2), ("1.9.0", 1), ("unknown", 1)]
        );
        assert_eq!((s.matched_proxies, s.matched_workloads), (7, 2));
    }

    #[test]
    fn a_rolled_out_policy() {
        let s = policy_status(&facts("1.40.0", &[("1.40.0", 3)]), None, at(0));
        assert_eq!(s.observed_generation, Some(4));
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(4))
        );
        assert_eq!(get(&s, conditions::ACCEPTED).0, "True");
        assert_eq!(
            get(&s, conditions::ROLLED_OUT),
            (
                "True",
                "Complete",
                "3 of 3 governed proxies run sidecar version 1.40.0."
            )
        );
        assert_eq!(get(&s, conditions::PROGRESSING).0, "False");
        assert_eq!(get(&s, conditions::DEGRADED).0, "False");
        assert_eq!(s.rollout, None);
    }

    #[test]
    fn a_version_change_waits_for_restarts_and_says_so() {
        let s = policy_status(
            &facts("1.40.0", &[("1.40.0", 1), ("1.39.0", 2)]),
            None,
            at(0),
        );
        assert_eq!(
            get(&s, conditions::ROLLED_OUT),
            (
                "False",
                "RollingOut",
                "1 of 3 governed proxies run sidecar version 1.40.0."
            )
        );
        let (status, why, message) = get(&s, conditions::PROGRESSING);
        assert_eq!((status, why), ("True", "RollingOut"));
        assert!(
            message.contains("when their pods are restarted"),
            "{message}"
        );
        assert!(
            message.contains("does not restart pods itself"),
            "{message}"
        );
    }

    #[test]
    fn a_policy_that_governs_nothing_is_rolled_out() {
        let s = policy_status(&facts("1.40.0", &[]), None, at(0));
        assert_eq!(
            get(&s, conditions::ROLLED_OUT),
            (
                "True",
                "Complete",
                "No proxy is governed by this policy yet."
            )
        );
        assert!(s.versions.is_empty());
    }

    #[test]
    fn a_nacking_proxy_degrades_the_policy() {
        let mut f = facts("1.40.0", &[("1.40.0", 2)]);
        f.proxies = ProxyTally {
            affected: 2,
            acked: 1,
            nacked: 1,
            first_nack: Some(("demo/web-1".into(), "unknown cluster".into())),
        };
        let s = policy_status(&f, None, at(0));
        let (status, why, message) = get(&s, conditions::DEGRADED);
        assert_eq!((status, why), ("True", "RejectedByProxy"));
        assert!(
            message.ends_with("demo/web-1 said: unknown cluster"),
            "{message}"
        );
    }

    #[test]
    fn an_invalid_policy_lists_every_problem() {
        let validation = [
            FieldError {
                path: "spec.proxy.version".into(),
                message: "must not be empty".into(),
            },
            FieldError {
                path: "spec.rollout.waves[1].percent".into(),
                message: "must grow from wave to wave".into(),
            },
        ];
        let f = PolicyFacts {
            validation: &validation,
            ..facts("", &[])
        };
        let s = policy_status(&f, None, at(0));
        let (status, why, message) = get(&s, conditions::ACCEPTED);
        assert_eq!((status, why), ("False", "Invalid"));
        assert!(
            message
                .contains("spec.proxy.version: must not be empty; spec.rollout.waves[1].percent")
        );
        assert!(message.contains("the policy's last valid spec"));
    }

    #[test]
    fn recomputing_gives_the_same_status() {
        let f = facts("1.40.0", &[("1.40.0", 1), ("1.39.0", 2)]);
        let first = policy_status(&f, None, at(5));
        assert_eq!(policy_status(&f, Some(&first), at(50)), first);
    }
}
