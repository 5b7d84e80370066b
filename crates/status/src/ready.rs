//! `Ready`, the one condition Flux and kstatus read (with `observedGeneration`): a summary
//! of the others, so tools that know nothing of Remora can wait for an object or report
//! what holds it back.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use remora_api::conditions::{self, reason};

use crate::{
    condition::{Conditions, find},
    message::{CONDITION_LIMIT, truncate},
};

/// The conditions that hold an object back, most telling first, with the status that
/// does: an invalid spec before a NACK or a failed rollout, those before a wait.
const BLOCKING: [(&str, &str); 4] = [
    (conditions::ACCEPTED, "False"),
    (conditions::DEGRADED, "True"),
    (conditions::PROGRAMMED, "False"),
    (conditions::PROGRESSING, "True"),
];

/// `others` followed by the `Ready` they sum up.
pub(crate) fn with_ready(
    c: &Conditions<'_>,
    mut others: Vec<Condition>,
    kind: &str,
) -> Vec<Condition> {
    others.push(ready(c, &others, kind));
    others
}

/// `Ready` from the object's other conditions: False with the reason and message of the
/// first blocking one, else True, noting any other condition that is not as it should be
/// (unresolved references, a paused rollout). `kind` names the object for people.
fn ready(c: &Conditions<'_>, others: &[Condition], kind: &str) -> Condition {
    let blocking = BLOCKING
        .iter()
        .find_map(|(type_, status)| find(others, type_).filter(|o| o.status == *status));
    if let Some(b) = blocking {
        let message = format!("{} is {}: {}", b.type_, b.status, b.message);
        return c.set(
            conditions::READY,
            false,
            &b.reason,
            truncate(&message, CONDITION_LIMIT),
        );
    }
    let mut message = format!("The {kind} is accepted and in effect, with nothing under way.");
    for o in others.iter().filter(|o| !as_expected(o)) {
        message.push_str(&format!(" {} is {} ({}).", o.type_, o.status, o.reason));
    }
    c.set(conditions::READY, true, reason::READY, message)
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
        ready(&c, &others, "route")
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
        let same = ready(
            &c,
            &[c.set("Programmed", false, "RejectedByProxy", "no".into())],
            "route",
        );
        assert_eq!(same.last_transition_time, at(100));
        let flipped = ready(&c, &[], "route");
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
