//! The status of an `AccessPolicy`: `Accepted` from validation, `ResolvedRefs` from what it
//! names that the mesh does not have (warnings: the rules still apply), `Programmed` from how
//! the protected workloads' proxies took their config, and the audit rules' would-be denials.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use remora_api::{
    AccessPolicyStatus, FieldError,
    access_policy::AuditedDenial,
    conditions::{self, reason},
    traffic_route::ProxyCounts,
};

use crate::{
    ProxyTally,
    condition::Conditions,
    message::{CONDITION_LIMIT, count, problem_list},
    ready::with_ready,
    reason::{NOTHING_SELECTED, UNKNOWN_SERVICE_ACCOUNTS},
    route::programmed,
};

/// What the controller knows about one access policy.
#[derive(Clone, Debug, Default)]
pub struct AccessFacts<'a> {
    /// The `metadata.generation` these facts describe (`Mesh::access_policy_generation`).
    pub generation: Option<i64>,
    /// Problems of the policy's latest spec (`Mesh::access_policy_validation`).
    pub validation: &'a [FieldError],
    /// Service accounts and identities it names that no pod runs as
    /// (`Mesh::access_policy_unknown_accounts`).
    pub unknown_accounts: &'a [String],
    /// The proxies of the workloads it protects (`Mesh::access_policy_proxies`) and how they
    /// took their config.
    pub proxies: ProxyTally,
    /// What its `Audit` rules would have denied in the window counted.
    pub audit: Vec<AuditedDenial>,
}

/// The status an access policy should have. Conditions whose status did not change keep
/// their `lastTransitionTime` from `previous`.
pub fn access_policy_status(
    facts: &AccessFacts<'_>,
    previous: Option<&AccessPolicyStatus>,
    now: Time,
) -> AccessPolicyStatus {
    let previous = previous.map_or(&[][..], |p| p.conditions.as_slice());
    let c = Conditions::new(previous, facts.generation, now);
    let tally = &facts.proxies;
    AccessPolicyStatus {
        observed_generation: facts.generation,
        conditions: with_ready(
            &c,
            vec![
                c.accepted(facts.validation, "policy"),
                resolved_refs(&c, facts),
                programmed(
                    &c,
                    tally,
                    "The policy protects no meshed workload, so there is nothing to program.",
                ),
            ],
            "policy",
        ),
        workloads: Some(tally.affected),
        proxies: Some(ProxyCounts {
            affected: tally.affected,
            acked: tally.acked,
            nacked: tally.nacked,
        }),
        audit: facts.audit.clone(),
    }
}

/// Warnings, not errors: a policy may be written before the workloads it names exist.
fn resolved_refs(c: &Conditions<'_>, facts: &AccessFacts<'_>) -> Condition {
    if facts.proxies.affected == 0 {
        return c.set(
            conditions::RESOLVED_REFS,
            false,
            NOTHING_SELECTED,
            "The selector matches no meshed pod: check spec.selector and the pods' labels. The rules apply once a pod matches."
                .into(),
        );
    }
    if !facts.unknown_accounts.is_empty() {
        let message = problem_list(
            &format!(
                "No pod runs as {} the rules name",
                count(facts.unknown_accounts.len(), "service account")
            ),
            facts.unknown_accounts,
            "Check the spelling (<name> is in the policy's namespace, <namespace>/<name> elsewhere); the rules match them once such pods exist.",
            CONDITION_LIMIT,
        );
        return c.set(
            conditions::RESOLVED_REFS,
            false,
            UNKNOWN_SERVICE_ACCOUNTS,
            message,
        );
    }
    c.set(
        conditions::RESOLVED_REFS,
        true,
        reason::RESOLVED,
        "The policy protects meshed workloads, and every caller it names runs in the mesh.".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::{find, tests::at};

    fn tally(affected: i32, acked: i32, nack: Option<&str>) -> ProxyTally {
        ProxyTally {
            affected,
            acked,
            nacked: i32::from(nack.is_some()),
            first_nack: nack.map(|m| ("shop/payments-1".into(), m.into())),
        }
    }

    fn get<'s>(s: &'s AccessPolicyStatus, type_: &str) -> &'s Condition {
        find(&s.conditions, type_).expect("the condition is set")
    }

    #[test]
    fn a_policy_in_effect_on_its_workloads() {
        let facts = AccessFacts {
            generation: Some(3),
            proxies: tally(2, 2, None),
            ..AccessFacts::default()
        };
        let s = access_policy_status(&facts, None, at(10));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.workloads, Some(2));
        for t in ["Accepted", "ResolvedRefs", "Programmed", "Ready"] {
            assert_eq!(get(&s, t).status, "True", "{t}: {:?}", get(&s, t));
            assert_eq!(get(&s, t).observed_generation, Some(3));
        }
        for t in ["Reconciling", "Stalled"] {
            assert_eq!(get(&s, t).status, "False", "{t}: {:?}", get(&s, t));
        }
    }

    #[test]
    fn warnings_and_a_nack_say_what_and_who() {
        let unknown = vec!["legacy".to_owned(), "billing/invoices".to_owned()];
        let facts = AccessFacts {
            generation: Some(1),
            unknown_accounts: &unknown,
            proxies: tally(2, 1, Some("Proto constraint validation failed")),
            ..AccessFacts::default()
        };
        let s = access_policy_status(&facts, None, at(10));
        let refs = get(&s, "ResolvedRefs");
        assert_eq!(
            (refs.status.as_str(), refs.reason.as_str()),
            ("False", "UnknownServiceAccounts")
        );
        assert!(
            refs.message.contains("billing/invoices"),
            "{}",
            refs.message
        );
        let programmed = get(&s, "Programmed");
        assert_eq!(programmed.reason, "RejectedByProxy");
        assert!(
            programmed.message.contains("shop/payments-1 said: Proto"),
            "{}",
            programmed.message
        );

        let none = AccessFacts {
            generation: Some(1),
            ..AccessFacts::default()
        };
        let s = access_policy_status(&none, None, at(10));
        assert_eq!(get(&s, "ResolvedRefs").reason, "NothingSelected");
        assert_eq!(get(&s, "Programmed").status, "True");
        let ready = get(&s, "Ready");
        assert_eq!(ready.status, "True", "a warning holds nothing back");
        assert!(
            ready
                .message
                .ends_with("ResolvedRefs is False (NothingSelected)."),
            "{}",
            ready.message
        );
    }
}
