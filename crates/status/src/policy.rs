//! The status of a `SidecarPolicy`: `Accepted` from validation, the fleet it governs and the
//! sidecar versions that fleet runs, `Progressing`/`RolledOut` from the rollout and those
//! versions, and `Degraded` when a governed proxy rejects its config or a rollout failed.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use remora_api::{
    FieldError, SidecarPolicyStatus,
    conditions::{self, reason},
    sidecar_policy::{MtlsCount, MtlsMode, RolloutPhase, RolloutStatus, VersionCount},
};

use crate::{
    ProxyTally, condition::Conditions, ready::with_ready, reason::AS_EXPECTED,
    version::newest_first,
};

/// What the controller knows about one policy, from the model, the proxy pods and the
/// rollout engine.
#[derive(Clone, Debug, Default)]
pub struct PolicyFacts<'a> {
    /// The `metadata.generation` these facts describe (`Mesh::policy_generation`).
    pub generation: Option<i64>,
    /// Problems of the policy's latest spec (`Mesh::policy_validation`).
    pub validation: &'a [FieldError],
    /// Proxies the policy governs (`Mesh::proxy_policy`).
    pub matched_proxies: i32,
    /// Workloads (Deployments, StatefulSets, DaemonSets) the policy governs.
    pub matched_workloads: i32,
    /// How many governed proxies run each sidecar version (their image's tag).
    pub versions: BTreeMap<String, i32>,
    /// How the governed proxies took their config.
    pub proxies: ProxyTally,
    /// Where the rollout of the policy's sidecar stands (`remora_rollout::step`); its
    /// `targetVersion` is what the fleet is compared with.
    pub rollout: RolloutStatus,
    /// The mutual TLS mode of the governed workloads; `None` when the mesh has no workload
    /// identities.
    pub mtls: Option<MtlsMode>,
}

/// The status a policy should have. Conditions whose status did not change keep their
/// `lastTransitionTime` from `previous`.
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
        conditions: with_ready(
            &c,
            vec![
                c.accepted(facts.validation, "policy"),
                fleet.progressing(&c),
                fleet.rolled_out(&c),
                degraded(&c, &facts.proxies, &facts.rollout),
            ],
            "policy",
        ),
        matched_workloads: facts.matched_workloads,
        matched_proxies: facts.matched_proxies,
        versions: histogram(&facts.versions),
        rollout: Some(facts.rollout.clone()),
        mtls: facts.mtls.map(|mode| MtlsCount {
            mode,
            workloads: facts.matched_workloads,
        }),
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

/// How far the governed proxies are from the rollout's target.
struct Fleet<'a> {
    rollout: &'a RolloutStatus,
    updated: i32,
    total: i32,
}

impl<'a> Fleet<'a> {
    fn of(facts: &'a PolicyFacts<'_>) -> Self {
        let rollout = &facts.rollout;
        Fleet {
            rollout,
            updated: facts
                .versions
                .get(&rollout.target_version)
                .copied()
                .unwrap_or_default(),
            total: facts.matched_proxies,
        }
    }

    fn tally(&self) -> String {
        if self.total == 0 {
            return "No proxy is governed by this policy yet.".into();
        }
        format!(
            "{} of {} governed proxies run sidecar version {}.",
            self.updated, self.total, self.rollout.target_version
        )
    }

    /// Why the fleet is not (yet) on the target, by rollout phase.
    fn phase_reason(&self) -> &'static str {
        match self.rollout.phase {
            RolloutPhase::Progressing | RolloutPhase::Complete => reason::ROLLING_OUT,
            RolloutPhase::Paused => reason::PAUSED,
            RolloutPhase::RolledBack => reason::ROLLED_BACK,
            RolloutPhase::Failed => reason::UNSUPPORTED_VERSION,
        }
    }

    /// The rollout's own sentence, then the count.
    fn message(&self) -> String {
        match &self.rollout.message {
            Some(m) if m.ends_with('.') => format!("{m} {}", self.tally()),
            Some(m) => format!("{m}. {}", self.tally()),
            None => self.tally(),
        }
    }

    fn rolled_out(&self, c: &Conditions<'_>) -> Condition {
        // Complete but not every proxy on the target: pods created from elsewhere (the
        // webhook was down, or a pod predates the mesh) wait for their next restart.
        let done = self.rollout.phase == RolloutPhase::Complete && self.updated >= self.total;
        let why = if done {
            reason::COMPLETE
        } else {
            self.phase_reason()
        };
        c.set(conditions::ROLLED_OUT, done, why, self.tally())
    }

    fn progressing(&self, c: &Conditions<'_>) -> Condition {
        match self.rollout.phase {
            RolloutPhase::Progressing => c.set(
                conditions::PROGRESSING,
                true,
                reason::ROLLING_OUT,
                self.message(),
            ),
            RolloutPhase::Complete => c.set(
                conditions::PROGRESSING,
                false,
                reason::COMPLETE,
                format!("No rollout is under way. {}", self.tally()),
            ),
            _ => c.set(
                conditions::PROGRESSING,
                false,
                self.phase_reason(),
                self.message(),
            ),
        }
    }
}

fn degraded(c: &Conditions<'_>, tally: &ProxyTally, rollout: &RolloutStatus) -> Condition {
    if tally.nacked > 0 {
        return c.set(
            conditions::DEGRADED,
            true,
            reason::REJECTED_BY_PROXY,
            tally.rejection(),
        );
    }
    let failed = match rollout.phase {
        RolloutPhase::RolledBack => Some(reason::ROLLED_BACK),
        RolloutPhase::Failed => Some(reason::UNSUPPORTED_VERSION),
        RolloutPhase::Paused if !rollout.failed_workloads.is_empty() => {
            Some(reason::HEALTH_GATE_FAILED)
        }
        _ => None,
    };
    if let Some(why) = failed {
        let message = rollout
            .message
            .clone()
            .unwrap_or_else(|| "The rollout failed.".into());
        return c.set(conditions::DEGRADED, true, why, message);
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
            matched_proxies: versions.values().sum(),
            matched_workloads: 2,
            versions,
            rollout: rollout(RolloutPhase::Complete, desired, None),
            ..Default::default()
        }
    }

    fn rollout(phase: RolloutPhase, target: &str, message: Option<&str>) -> RolloutStatus {
        RolloutStatus {
            phase,
            target_version: target.into(),
            message: message.map(Into::into),
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
        assert_eq!(s.mtls, None, "no identities, no mode");
        let strict = PolicyFacts {
            mtls: Some(MtlsMode::Strict),
            ..facts("1.40.0", &[("1.40.0", 1)])
        };
        let s = policy_status(&strict, None, at(0));
        assert_eq!(
            s.mtls,
            Some(MtlsCount {
                mode: MtlsMode::Strict,
                workloads: strict.matched_workloads
            })
        );
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
        assert_eq!(
            get(&s, conditions::READY),
            (
                "True",
                "Ready",
                "The policy is accepted and in effect, with nothing under way."
            )
        );
        assert_eq!(
            s.rollout.map(|r| (r.phase, r.target_version)),
            Some((RolloutPhase::Complete, "1.40.0".into()))
        );
    }

    #[test]
    fn a_rollout_under_way_says_where_it_is() {
        let mut f = facts("1.40.0", &[("1.40.0", 1), ("1.39.0", 2)]);
        f.rollout = rollout(
            RolloutPhase::Progressing,
            "1.40.0",
            Some("Wave 1 of 3: waiting for shop/web's pods."),
        );
        let s = policy_status(&f, None, at(0));
        assert_eq!(
            get(&s, conditions::ROLLED_OUT),
            (
                "False",
                "RollingOut",
                "1 of 3 governed proxies run sidecar version 1.40.0."
            )
        );
        assert_eq!(
            get(&s, conditions::PROGRESSING),
            (
                "True",
                "RollingOut",
                "Wave 1 of 3: waiting for shop/web's pods. 1 of 3 governed proxies run sidecar \
                 version 1.40.0."
            )
        );
        assert_eq!(get(&s, conditions::DEGRADED).0, "False");
        let (ready, why, message) = get(&s, conditions::READY);
        assert_eq!((ready, why), ("False", "RollingOut"));
        assert!(
            message.starts_with("Progressing is True: Wave 1 of 3"),
            "{message}"
        );
    }

    #[test]
    fn a_paused_rollout_is_not_progressing_and_a_failed_gate_degrades() {
        let mut f = facts("1.40.0", &[("1.40.0", 1), ("1.39.0", 2)]);
        f.rollout = rollout(RolloutPhase::Paused, "1.40.0", Some("Paused by spec."));
        let s = policy_status(&f, None, at(0));
        assert_eq!(get(&s, conditions::PROGRESSING).0, "False");
        assert_eq!(get(&s, conditions::PROGRESSING).1, "Paused");
        assert_eq!(get(&s, conditions::ROLLED_OUT).1, "Paused");
        assert_eq!(get(&s, conditions::DEGRADED).0, "False");
        let (ready, _, message) = get(&s, conditions::READY);
        assert_eq!(ready, "True", "a pause by spec holds nothing back");
        assert!(
            message.ends_with("RolledOut is False (Paused)."),
            "{message}"
        );

        f.rollout.failed_workloads = vec![remora_api::sidecar_policy::FailedWorkload {
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: "web".into(),
            reason: "1 of 1 pods not Ready after 10m".into(),
        }];
        f.rollout.message = Some("The health gate of wave 1 failed.".into());
        let s = policy_status(&f, None, at(0));
        assert_eq!(
            get(&s, conditions::DEGRADED),
            (
                "True",
                "HealthGateFailed",
                "The health gate of wave 1 failed."
            )
        );
    }

    #[test]
    fn a_rolled_back_or_refused_rollout_degrades_the_policy() {
        let mut f = facts("1.41.0", &[("1.40.0", 3)]);
        f.rollout = rollout(
            RolloutPhase::RolledBack,
            "1.41.0",
            Some("Rolled back shop/web to 1.40.0."),
        );
        let s = policy_status(&f, None, at(0));
        assert_eq!(
            get(&s, conditions::DEGRADED),
            ("True", "RolledBack", "Rolled back shop/web to 1.40.0.")
        );
        assert_eq!(get(&s, conditions::ROLLED_OUT).1, "RolledBack");
        assert_eq!(
            get(&s, conditions::READY),
            (
                "False",
                "RolledBack",
                "Degraded is True: Rolled back shop/web to 1.40.0."
            )
        );
        f.rollout.phase = RolloutPhase::Failed;
        let s = policy_status(&f, None, at(0));
        assert_eq!(get(&s, conditions::DEGRADED).1, "UnsupportedVersion");
        assert_eq!(get(&s, conditions::PROGRESSING).1, "UnsupportedVersion");
    }

    #[test]
    fn complete_with_a_lagging_proxy_is_not_rolled_out() {
        let s = policy_status(
            &facts("1.40.0", &[("1.40.0", 2), ("1.39.0", 1)]),
            None,
            at(0),
        );
        assert_eq!(get(&s, conditions::ROLLED_OUT).0, "False");
        assert_eq!(get(&s, conditions::PROGRESSING).1, "Complete");
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
                ..FieldError::default()
            },
            FieldError {
                path: "spec.rollout.waves[1].percent".into(),
                message: "must grow from wave to wave".into(),
                ..FieldError::default()
            },
        ];
        let f = PolicyFacts {
            validation: &validation,
            ..facts("", &[])
        };
        let s = policy_status(&f, None, at(0));
        let (status, why, message) = get(&s, conditions::ACCEPTED);
        assert_eq!((status, why), ("False", "Invalid"));
        assert_eq!(get(&s, conditions::READY).1, "Invalid");
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
