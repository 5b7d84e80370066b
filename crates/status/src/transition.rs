//! The changes of status a person should see as Kubernetes Events: an object turning
//! invalid or valid again, references breaking or resolving, a proxy rejecting its config,
//! a rollout completing. Everything else only shows in the status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use remora_api::conditions::{self, reason};

use crate::{
    condition::find,
    message::{EVENT_LIMIT, truncate},
};

/// An Event's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Something went as it should, or recovered.
    Normal,
    /// Something needs a person's attention.
    Warning,
}

/// One Event to publish on the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Whether the Event is a Normal or a Warning one.
    pub severity: Severity,
    /// Why, in `CamelCase`: `Invalid`, `BackendNotFound`, `RejectedByProxy`, `Accepted`, ...
    pub reason: String,
    /// What the controller was doing, in `CamelCase`: `Validate`, `ResolveRefs`, `Program`,
    /// `RollOut`.
    pub action: &'static str,
    /// For people; at most the 1024 bytes an Event note may have.
    pub message: String,
}

/// The Events for a change of conditions from `previous` (empty for an object that had no
/// status) to `next`, in the order of `next`.
pub fn transitions(previous: &[Condition], next: &[Condition]) -> Vec<Transition> {
    next.iter()
        .filter_map(|now| transition(find(previous, &now.type_), now))
        .collect()
}

fn transition(before: Option<&Condition>, now: &Condition) -> Option<Transition> {
    let was_false = before.is_some_and(|b| b.status == "False");
    let was_true = before.is_some_and(|b| b.status == "True");
    let is_true = now.status == "True";
    let event = |severity, reason: &str, action, message: &str| Transition {
        severity,
        reason: reason.to_owned(),
        action,
        message: truncate(message, EVENT_LIMIT),
    };
    match now.type_.as_str() {
        conditions::ACCEPTED | conditions::RESOLVED_REFS => {
            let action = if now.type_ == conditions::ACCEPTED {
                "Validate"
            } else {
                "ResolveRefs"
            };
            if !is_true && !was_false {
                Some(event(Severity::Warning, &now.reason, action, &now.message))
            } else if is_true && was_false {
                Some(event(Severity::Normal, &now.reason, action, &now.message))
            } else {
                None
            }
        }
        conditions::PROGRAMMED | conditions::DEGRADED => {
            let rejected = |c: &Condition| c.reason == reason::REJECTED_BY_PROXY;
            let before_rejected = before.filter(|b| rejected(b));
            if rejected(now) {
                // A different message is a different NACK: another proxy, or other words.
                let new = before_rejected.is_none_or(|b| b.message != now.message);
                new.then(|| event(Severity::Warning, &now.reason, "Program", &now.message))
            } else {
                before_rejected.map(|_| {
                    let message = format!("No proxy rejects its config any more. {}", now.message);
                    event(Severity::Normal, "Recovered", "Program", &message)
                })
            }
        }
        conditions::ROLLED_OUT => (is_true && !was_true && before.is_some())
            .then(|| event(Severity::Normal, &now.reason, "RollOut", &now.message)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::{Conditions, tests::at};

    fn cond(type_: &str, status: bool, why: &str, msg: &str) -> Condition {
        Conditions::new(&[], Some(1), at(0)).set(type_, status, why, msg.into())
    }

    fn one(before: Option<Condition>, now: Condition) -> Option<Transition> {
        let before: Vec<Condition> = before.into_iter().collect();
        let mut all = transitions(&before, &[now]);
        assert!(all.len() <= 1);
        all.pop()
    }

    #[test]
    fn accepted_to_invalid_and_back() {
        let ok = cond(conditions::ACCEPTED, true, reason::ACCEPTED, "valid");
        let bad = cond(conditions::ACCEPTED, false, reason::INVALID, "spec.x: bad");
        let t = one(Some(ok.clone()), bad.clone()).expect("an event");
        assert_eq!(
            t,
            Transition {
                severity: Severity::Warning,
                reason: "Invalid".into(),
                action: "Validate",
                message: "spec.x: bad".into(),
            }
        );
        let back = one(Some(bad.clone()), ok.clone()).expect("an event");
        assert_eq!(
            (back.severity, back.reason.as_str()),
            (Severity::Normal, "Accepted")
        );
        assert_eq!(one(Some(ok.clone()), ok.clone()), None);
        assert_eq!(one(Some(bad.clone()), bad.clone()), None);
        // A new object: invalid is worth an Event, valid is not.
        assert!(one(None, bad).is_some());
        assert_eq!(one(None, ok), None);
    }

    #[test]
    fn resolved_refs_flips() {
        let ok = cond(conditions::RESOLVED_REFS, true, reason::RESOLVED, "ok");
        let missing = cond(
            conditions::RESOLVED_REFS,
            false,
            reason::BACKEND_NOT_FOUND,
            "gone",
        );
        let t = one(Some(ok.clone()), missing.clone()).expect("an event");
        assert_eq!(
            (t.severity, t.reason.as_str(), t.action),
            (Severity::Warning, "BackendNotFound", "ResolveRefs")
        );
        let t = one(Some(missing), ok).expect("an event");
        assert_eq!(
            (t.severity, t.reason.as_str()),
            (Severity::Normal, "Resolved")
        );
    }

    #[test]
    fn a_new_nack_is_a_warning_once() {
        let pending = cond(conditions::PROGRAMMED, false, reason::PENDING, "1 of 2");
        let nack = cond(
            conditions::PROGRAMMED,
            false,
            reason::REJECTED_BY_PROXY,
            "a said: no",
        );
        let t = one(Some(pending.clone()), nack.clone()).expect("an event");
        assert_eq!(
            (t.severity, t.reason.as_str(), t.action),
            (Severity::Warning, "RejectedByProxy", "Program")
        );
        assert_eq!(t.message, "a said: no");
        assert_eq!(
            one(Some(nack.clone()), nack.clone()),
            None,
            "the same NACK again"
        );
        let other = cond(
            conditions::PROGRAMMED,
            false,
            reason::REJECTED_BY_PROXY,
            "b said: no",
        );
        assert!(one(Some(nack.clone()), other).is_some(), "another NACK");
        let t = one(Some(nack), pending.clone()).expect("an event");
        assert_eq!(
            (t.severity, t.reason.as_str()),
            (Severity::Normal, "Recovered")
        );
        assert_eq!(one(None, pending), None);
    }

    #[test]
    fn a_degraded_policy_warns() {
        let fine = cond(
            conditions::DEGRADED,
            false,
            crate::reason::AS_EXPECTED,
            "fine",
        );
        let bad = cond(
            conditions::DEGRADED,
            true,
            reason::REJECTED_BY_PROXY,
            "a said: no",
        );
        assert_eq!(
            one(Some(fine), bad).map(|t| t.severity),
            Some(Severity::Warning)
        );
    }

    #[test]
    fn a_completed_rollout_is_news_but_a_new_policy_is_not() {
        let rolling = cond(conditions::ROLLED_OUT, false, reason::ROLLING_OUT, "1 of 2");
        let done = cond(conditions::ROLLED_OUT, true, reason::COMPLETE, "2 of 2");
        let t = one(Some(rolling), done.clone()).expect("an event");
        assert_eq!(
            (t.severity, t.reason.as_str(), t.action),
            (Severity::Normal, "Complete", "RollOut")
        );
        assert_eq!(one(None, done), None);
    }

    #[test]
    fn event_notes_are_bounded() {
        let bad = cond(
            conditions::ACCEPTED,
            false,
            reason::INVALID,
            &"x".repeat(5000),
        );
        let t = one(None, bad).expect("an event");
        assert!(t.message.len() <= EVENT_LIMIT);
    }
}
