//! Conditions under Kubernetes' rule for `lastTransitionTime`: it moves only when the
//! condition's status does, so recomputing an unchanged status gives the very same value.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use remora_api::{FieldError, conditions};

use crate::message::{CONDITION_LIMIT, count, problem_list};

/// Builds the conditions of one status from the previous ones.
pub(crate) struct Conditions<'a> {
    previous: &'a [Condition],
    generation: Option<i64>,
    now: Time,
}

impl<'a> Conditions<'a> {
    pub(crate) fn new(previous: &'a [Condition], generation: Option<i64>, now: Time) -> Self {
        // The API server keeps whole seconds; a time it would round is a change it would undo.
        let now = Time(Timestamp::from_second(now.0.as_second()).unwrap_or(now.0));
        Conditions {
            previous,
            generation,
            now,
        }
    }

    pub(crate) fn set(
        &self,
        type_: &str,
        status: bool,
        reason: &str,
        message: String,
    ) -> Condition {
        let status = if status { "True" } else { "False" };
        let last_transition_time =
            carried(self.previous, type_, status).unwrap_or_else(|| self.now.clone());
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: self.generation,
            last_transition_time,
        }
    }

    /// `Accepted`, from the validation problems of the object's latest spec. `kind` names
    /// the object for people ("route", "policy").
    pub(crate) fn accepted(&self, validation: &[FieldError], kind: &str) -> Condition {
        if validation.is_empty() {
            return self.set(
                conditions::ACCEPTED,
                true,
                conditions::reason::ACCEPTED,
                format!("The {kind} is valid and in effect."),
            );
        }
        let items: Vec<String> = validation.iter().map(ToString::to_string).collect();
        let message = problem_list(
            &format!("The {kind} is invalid ({})", count(items.len(), "problem")),
            &items,
            &format!(
                "Until it is fixed, the {kind}'s last valid spec, if it had one, stays in effect."
            ),
            CONDITION_LIMIT,
        );
        self.set(
            conditions::ACCEPTED,
            false,
            conditions::reason::INVALID,
            message,
        )
    }
}

/// Gives each condition the `lastTransitionTime` of the same condition in `previous` when
/// its status is the same there: a status computed from an older view of the object then
/// matches what a write would produce from the newer one.
pub(crate) fn keep_transition_times(conditions: &mut [Condition], previous: &[Condition]) {
    for c in conditions {
        if let Some(t) = carried(previous, &c.type_, &c.status) {
            c.last_transition_time = t;
        }
    }
}

fn carried(previous: &[Condition], type_: &str, status: &str) -> Option<Time> {
    find(previous, type_)
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
}

pub(crate) fn find<'c>(conditions: &'c [Condition], type_: &str) -> Option<&'c Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).expect("a valid time"))
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let first =
            Conditions::new(&[], Some(1), at(100)).set("Accepted", true, "Accepted", "ok".into());
        assert_eq!(first.last_transition_time, at(100));
        let previous = [first];
        let same = Conditions::new(&previous, Some(2), at(200));
        let kept = same.set("Accepted", true, "Other", "new words".into());
        assert_eq!(kept.last_transition_time, at(100));
        assert_eq!(kept.observed_generation, Some(2));
        let flipped = same.set("Accepted", false, "Invalid", "bad".into());
        assert_eq!(flipped.last_transition_time, at(200));
    }

    #[test]
    fn transition_times_are_carried_over_to_a_computed_status() {
        let old = Conditions::new(&[], None, at(100));
        let previous = [old.set("Accepted", false, "Invalid", "bad".into())];
        let new = Conditions::new(&[], None, at(200));
        let mut next = vec![
            new.set("Accepted", false, "Invalid", "worse".into()),
            new.set("Programmed", true, "Programmed", "ok".into()),
        ];
        keep_transition_times(&mut next, &previous);
        assert_eq!(next[0].last_transition_time, at(100));
        assert_eq!(next[0].message, "worse");
        assert_eq!(next[1].last_transition_time, at(200));
    }

    #[test]
    fn now_is_kept_in_whole_seconds() {
        let now = Time(Timestamp::from_millisecond(1_500).expect("a valid time"));
        let c = Conditions::new(&[], None, now).set("Accepted", true, "Accepted", String::new());
        assert_eq!(c.last_transition_time, at(1));
    }
}
