//! The summary conditions tools that know nothing of Remora read, with `observedGeneration`:
//! `Ready` for Flux and `kubectl wait`, and kstatus's pair `Reconciling` and `Stalled`, so
//! they can wait for an object or report what holds it back.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use remora_api::conditions::{self, reason};

use crate::{
    condition::{Conditions, find},
    message::{CONDITION_LIMIT, truncate},
    reason::AS_EXPECTED,
};

/// The conditions that hold an object back, most telling first, with the status that
/// does: an invalid spec before a NACK or a failed rollout, those before a wait.
const BLOCKING: [(&str, &str); 4] = [
    (conditions::ACCEPTED, "False"),
    (conditions::DEGRADED, "True"),
    (conditions::PROGRAMMED, "False"),
    (conditions::PROGRESSING, "True"),
];

/// `others` followed by the summaries of them: `Ready`, `Reconciling` and `Stalled`.
pub(crate) fn with_ready(
    c: &Conditions<'_>,
    mut others: Vec<Condition>,
    kind: &str,
) -> Vec<Condition> {
    let blocking = BLOCKING
        .iter()
        .find_map(|(type_, status)| find(&others, type_).filter(|o| o.status == *status))
        .cloned();
    let ready = ready(c, &others, blocking.as_ref(), kind);
    others.push(ready);
    others.extend(kstatus(c, blocking.as_ref()));
    others
}

/// `Ready`: False with the reason and message of the first `blocking` condition, else True,
/// noting any other condition that is not as it should be (unresolved references, a paused
/// rollout). `kind` names the object for people.
fn ready(
    c: &Conditions<'_>,
    others: &[Condition],
    blocking: Option<&Condition>,
    kind: &str,
) -> Condition {
    if let Some(b) = blocking {
        return c.set(conditions::READY, false, &b.reason, held_back(b));
    }
    let mut message = format!("The {kind} is accepted and in effect, with nothing under way.");
    for o in others.iter().filter(|o| !as_expected(o)) {
        message.push_str(&format!(" {} is {} ({}).", o.type_, o.status, o.reason));
    }
    c.set(conditions::READY, true, reason::READY, message)
}

/// kstatus's `Reconciling` and `Stalled`: the one that fits the `blocking` condition is True
/// with its reason and message, the other False (both when nothing blocks).
fn kstatus(c: &Conditions<'_>, blocking: Option<&Condition>) -> [Condition; 2] {
    let stalled = blocking.is_some_and(needs_a_person);
    let summary = |type_: &str, true_: bool, idle: &str| match blocking {
        Some(b) if true_ => c.set(type_, true, &b.reason, held_back(b)),
        _ => c.set(type_, false, AS_EXPECTED, idle.into()),
    };
    [
        summary(
            conditions::RECONCILING,
            blocking.is_some() && !stalled,
            "No work is under way.",
        ),
        summary(conditions::STALLED, stalled, "Nothing needs a person."),
    ]
}

/// Whether a blocking condition will not pass by itself: an invalid spec, a rejected config,
/// a failed rollout, rather than proxies or waves still on their way.
fn needs_a_person(b: &Condition) -> bool {
    b.type_ == conditions::ACCEPTED
        || b.type_ == conditions::DEGRADED
        || b.reason == reason::REJECTED_BY_PROXY
}

/// `<Type> is <Status>: <message>` of a blocking condition, bounded.
fn held_back(b: &Condition) -> String {
    let message = format!("{} is {}: {}", b.type_, b.status, b.message);
    truncate(&message, CONDITION_LIMIT)
}

/// Whether a condition that does not block is in its usual state: `Degraded` and
/// `Progressing` are usually False, the others True.
fn as_expected(c: &Condition) -> bool {
    let usual = match c.type_.as_str() {
        conditions::DEGRADED | conditions::PROGRESSING => "False",
        _ => "True",
    };
    c.status == usual
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::tests::at;

    fn with(previous: &[Condition], others: &[(&str, bool, &str, &str)]) -> Condition {
        let c = Conditions::new(previous, Some(7), at(100));
        let others: Vec<Condition> = others
            .iter()
            .map(|(t, s, r, m)| c.set(t, *s, r, (*m).into()))
            .collect();
        summaries(&c, others).remove(0)
    }

    /// `Ready`, `Reconciling` and `Stalled` for `others`.
    fn summaries(c: &Conditions<'_>, others: Vec<Condition>) -> Vec<Condition> {
        let n = others.len();
        with_ready(c, others, "route").split_off(n)
    }

    #[test]
    fn ready_when_nothing_blocks() {
        let r = with(
            &[],
            &[
                ("Accepted", true, "Accepted", "valid"),
                ("Programmed", true, "Programmed", "2 of 2"),
            ],
        );
        assert_eq!(
            (r.type_.as_str(), r.status.as_str(), r.reason.as_str()),
            ("Ready", "True", "Ready")
        );
        assert_eq!(
            r.message,
            "The route is accepted and in effect, with nothing under way."
        );
        assert_eq!(r.observed_generation, Some(7));
    }

    #[test]
    fn the_most_telling_blocking_condition_is_named() {
        let r = with(
            &[],
            &[
                ("Accepted", true, "Accepted", "valid"),
                ("Progressing", true, "RollingOut", "wave 1"),
                ("Degraded", true, "RejectedByProxy", "a said: no"),
            ],
        );
        assert_eq!(
            (r.status.as_str(), r.reason.as_str(), r.message.as_str()),
            ("False", "RejectedByProxy", "Degraded is True: a said: no")
        );
        let r = with(
            &[],
            &[
                ("Accepted", false, "Invalid", "spec.x: bad"),
                ("Programmed", false, "Pending", "1 of 2"),
            ],
        );
        assert_eq!(
            (r.reason.as_str(), r.message.as_str()),
            ("Invalid", "Accepted is False: spec.x: bad")
        );
        let r = with(&[], &[("Programmed", false, "Pending", "1 of 2")]);
        assert_eq!(r.reason, "Pending");
    }

    /// `Reconciling` and `Stalled` for `others`, each as `(status, reason)`.
    fn kstatus_of(others: &[(&str, bool, &str, &str)]) -> [(String, String); 2] {
        let c = Conditions::new(&[], Some(7), at(100));
        let others = others
            .iter()
            .map(|(t, s, r, m)| c.set(t, *s, r, (*m).into()))
            .collect();
        let s = summaries(&c, others);
        assert_eq!(
            [s[1].type_.as_str(), s[2].type_.as_str()],
            ["Reconciling", "Stalled"]
        );
        [&s[1], &s[2]].map(|c| (c.status.clone(), c.reason.clone()))
    }

    fn is(status: &str, reason: &str) -> (String, String) {
        (status.into(), reason.into())
    }

    #[test]
    fn kstatus_sees_a_wait_as_reconciling_and_what_needs_a_person_as_stalled() {
        let idle = is("False", "AsExpected");
        let done = [("Accepted", true, "Accepted", "valid")];
        assert_eq!(kstatus_of(&done), [idle.clone(), idle.clone()]);
        for waiting in [
            ("Programmed", false, "Pending", "1 of 2"),
            ("Progressing", true, "RollingOut", "wave 1"),
        ] {
            let reason = waiting.2;
            assert_eq!(kstatus_of(&[waiting]), [is("True", reason), idle.clone()]);
        }
        for stuck in [
            ("Accepted", false, "Invalid", "spec.x: bad"),
            ("Programmed", false, "RejectedByProxy", "a said: no"),
            ("Degraded", true, "RolledBack", "wave 1 failed"),
        ] {
            let reason = stuck.2;
            assert_eq!(kstatus_of(&[stuck]), [idle.clone(), is("True", reason)]);
        }
        // The most telling blocking condition decides, as for Ready.
        let both = [
            ("Progressing", true, "RollingOut", "wave 1"),
            ("Degraded", true, "HealthGateFailed", "wave 1 failed"),
        ];
        assert_eq!(
            kstatus_of(&both),
            [idle.clone(), is("True", "HealthGateFailed")]
        );
    }

    #[test]
    fn warnings_are_noted_but_do_not_block() {
        let r = with(
            &[],
            &[
                ("Accepted", true, "Accepted", "valid"),
                ("ResolvedRefs", false, "BackendNotFound", "gone"),
                ("Progressing", false, "Paused", "paused"),
                ("Degraded", false, "AsExpected", "fine"),
            ],
        );
        assert_eq!(r.status, "True");
        assert!(
            r.message
                .ends_with("nothing under way. ResolvedRefs is False (BackendNotFound)."),
            "{}",
            r.message
        );
    }

    #[test]
    fn its_transition_time_moves_only_with_its_status() {
        let first = with(&[], &[("Programmed", false, "Pending", "1 of 2")]);
        let previous = [first];
        let c = Conditions::new(&previous, Some(8), at(200));
        let same = summaries(
            &c,
            vec![c.set("Programmed", false, "RejectedByProxy", "no".into())],
        )
        .remove(0);
        assert_eq!(same.last_transition_time, at(100));
        let flipped = summaries(&c, vec![]).remove(0);
        assert_eq!(
            (
                flipped.status.as_str(),
                flipped.last_transition_time.clone()
            ),
            ("True", at(200))
        );
    }

    #[test]
    fn a_long_blocking_message_is_bounded() {
        let long = "x".repeat(CONDITION_LIMIT);
        let r = with(&[], &[("Accepted", false, "Invalid", &long)]);
        assert!(r.message.len() <= CONDITION_LIMIT);
    }
}
