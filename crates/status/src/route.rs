//! The status of a `TrafficRoute`: `Accepted` from validation, `ResolvedRefs` from what the
//! model could not resolve, `Programmed` from how the affected proxies took their config.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use remora_api::{
    FieldError, TrafficRouteStatus,
    conditions::{self, reason},
    traffic_route::ProxyCounts,
};
use remora_model::routing::{Outranked, Problem};

use crate::{
    ProxyTally,
    condition::Conditions,
    message::{CONDITION_LIMIT, count, problem_list},
    ready::with_ready,
    reason::PROTOCOL_MISMATCH,
};

/// What the controller knows about one route, from the model and the xDS server.
#[derive(Clone, Debug, Default)]
pub struct RouteFacts<'a> {
    /// The `metadata.generation` these facts describe (`Mesh::route_generation`).
    pub generation: Option<i64>,
    /// Problems of the route's latest spec (`Mesh::route_validation`).
    pub validation: &'a [FieldError],
    /// Problems resolving the spec in effect (`Mesh::route_problems`).
    pub problems: &'a [Problem],
    /// The routes that claim a Service port this one governs (`Mesh::route_outranks`).
    pub outranks: &'a [Outranked],
    /// The proxies the route shapes (`Mesh::route_proxies`) and how they took their config.
    pub proxies: ProxyTally,
}

/// The status a route should have. Conditions whose status did not change keep their
/// `lastTransitionTime` from `previous`, so the same facts give the same status.
pub fn route_status(
    facts: &RouteFacts<'_>,
    previous: Option<&TrafficRouteStatus>,
    now: Time,
) -> TrafficRouteStatus {
    let previous = previous.map_or(&[][..], |p| p.conditions.as_slice());
    let c = Conditions::new(previous, facts.generation, now);
    let tally = &facts.proxies;
    TrafficRouteStatus {
        observed_generation: facts.generation,
        conditions: with_ready(
            &c,
            vec![
                accepted(&c, facts),
                resolved_refs(&c, facts.problems),
                programmed(
                    &c,
                    tally,
                    "No proxy sends traffic to this route's Services, so there is nothing to program.",
                ),
            ],
            "route",
        ),
        proxies: Some(ProxyCounts {
            affected: tally.affected,
            acked: tally.acked,
            nacked: tally.nacked,
        }),
    }
}

/// `Accepted`, which also names the routes this one governs a Service port over: both
/// sides of a conflict say who governs.
fn accepted(c: &Conditions<'_>, facts: &RouteFacts<'_>) -> Condition {
    let mut accepted = c.accepted(facts.validation, "route");
    if accepted.status == "True" && !facts.outranks.is_empty() {
        let items: Vec<String> = facts.outranks.iter().map(ToString::to_string).collect();
        accepted.message = problem_list(
            &format!(
                "The route is valid and in effect; it governs over {} claiming its Service ports",
                count(items.len(), "other route")
            ),
            &items,
            "Those report Conflicted.",
            CONDITION_LIMIT,
        );
    }
    accepted
}

fn resolved_refs(c: &Conditions<'_>, problems: &[Problem]) -> Condition {
    let Some(worst) = problems.iter().min_by_key(|p| rank(p)) else {
        return c.set(
            conditions::RESOLVED_REFS,
            true,
            reason::RESOLVED,
            "Every Service, port and subset the route names exists and may be sent to.".into(),
        );
    };
    let items: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let message = problem_list(
        &format!(
            "The route has {}",
            count(items.len(), "unresolved reference")
        ),
        &items,
        "This condition turns True by itself once they are fixed.",
        CONDITION_LIMIT,
    );
    c.set(conditions::RESOLVED_REFS, false, reason_of(worst), message)
}

/// The problem whose reason the condition shows: the one that costs the most traffic first.
fn rank(problem: &Problem) -> u8 {
    match problem {
        Problem::Conflicted { .. } => 0,
        Problem::RefNotPermitted { .. } => 1,
        Problem::BackendNotFound { .. }
        | Problem::BackendPortNotFound { .. }
        | Problem::ParentPortNotFound { .. } => 1,
        Problem::ProtocolMismatch { .. } => 2,
        Problem::SubsetEmpty { .. } => 3,
    }
}

fn reason_of(problem: &Problem) -> &'static str {
    match problem {
        Problem::Conflicted { .. } => reason::CONFLICTED,
        Problem::RefNotPermitted { .. } => reason::REF_NOT_PERMITTED,
        Problem::BackendNotFound { .. }
        | Problem::BackendPortNotFound { .. }
        | Problem::ParentPortNotFound { .. } => reason::BACKEND_NOT_FOUND,
        Problem::ProtocolMismatch { .. } => PROTOCOL_MISMATCH,
        Problem::SubsetEmpty { .. } => reason::SUBSET_EMPTY,
    }
}

/// `Programmed` from how the affected proxies took their config; `nothing` says why there
/// is nothing to program when no proxy is affected.
pub(crate) fn programmed(c: &Conditions<'_>, tally: &ProxyTally, nothing: &str) -> Condition {
    let (status, why, message) = if tally.nacked > 0 {
        (false, reason::REJECTED_BY_PROXY, tally.rejection())
    } else if tally.affected == 0 {
        (true, reason::PROGRAMMED, nothing.to_owned())
    } else if tally.acked >= tally.affected {
        (
            true,
            reason::PROGRAMMED,
            format!(
                "{0} of {0} affected proxies acknowledged their config.",
                tally.affected
            ),
        )
    } else {
        (
            false,
            reason::PENDING,
            format!(
                "{} of {} affected proxies acknowledged their config; the others have not yet.",
                tally.acked, tally.affected
            ),
        )
    };
    c.set(conditions::PROGRAMMED, status, why, message)
}

#[cfg(test)]
mod tests {
    use remora_model::input::ObjectKey;

    use super::*;
    use crate::condition::{find, tests::at};

    fn field(path: &str, message: &str) -> FieldError {
        FieldError {
            path: path.into(),
            message: message.into(),
            ..FieldError::default()
        }
    }

    fn missing(service: &str) -> Problem {
        Problem::BackendNotFound {
            path: "spec.http[0].backendRefs[0]".into(),
            service: ObjectKey::new("demo", service),
        }
    }

    fn empty_subset() -> Problem {
        Problem::SubsetEmpty {
            service: ObjectKey::new("demo", "reviews"),
            subset: [("version".to_owned(), "v3".to_owned())].into(),
        }
    }

    fn tally(affected: i32, acked: i32, nacked: i32) -> ProxyTally {
        ProxyTally {
            affected,
            acked,
            nacked,
            first_nack: None,
        }
    }

    fn status(facts: &RouteFacts<'_>) -> TrafficRouteStatus {
        route_status(facts, None, at(10))
    }

    fn get<'s>(s: &'s TrafficRouteStatus, type_: &str) -> &'s Condition {
        find(&s.conditions, type_).expect("the condition is set")
    }

    /// The `ResolvedRefs` condition of a route with `problems`.
    fn refs_condition(problems: &[Problem]) -> Condition {
        let facts = RouteFacts {
            problems,
            ..Default::default()
        };
        get(&status(&facts), conditions::RESOLVED_REFS).clone()
    }

    #[test]
    fn a_valid_resolved_programmed_route() {
        let facts = RouteFacts {
            generation: Some(3),
            proxies: tally(2, 2, 0),
            ..Default::default()
        };
        let s = status(&facts);
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.conditions.len(), 6);
        for c in &s.conditions {
            assert_eq!(c.observed_generation, Some(3), "{}", c.type_);
            let kstatus =
                [conditions::RECONCILING, conditions::STALLED].contains(&c.type_.as_str());
            let expected = if kstatus { "False" } else { "True" };
            assert_eq!(c.status, expected, "{}", c.type_);
            assert_eq!(c.last_transition_time, at(10));
        }
        assert_eq!(get(&s, conditions::ACCEPTED).reason, "Accepted");
        assert_eq!(get(&s, conditions::RESOLVED_REFS).reason, "Resolved");
        assert_eq!(get(&s, conditions::READY).reason, "Ready");
        let p = get(&s, conditions::PROGRAMMED);
        assert_eq!(p.reason, "Programmed");
        assert_eq!(
            p.message,
            "2 of 2 affected proxies acknowledged their config."
        );
        assert_eq!(
            s.proxies,
            Some(ProxyCounts {
                affected: 2,
                acked: 2,
                nacked: 0
            })
        );
    }

    #[test]
    fn every_validation_problem_is_listed_with_its_path() {
        let validation = [
            field(
                "spec.http[0].matches[0].path.value",
                "\"api\" must start with '/' (write \"/api\")",
            ),
            field(
                "spec.http[1].backendRefs[0].weight",
                "must be at most 1000000",
            ),
        ];
        let facts = RouteFacts {
            validation: &validation,
            ..Default::default()
        };
        let a = get(&status(&facts), conditions::ACCEPTED).clone();
        assert_eq!((a.status.as_str(), a.reason.as_str()), ("False", "Invalid"));
        assert_eq!(
            a.message,
            "The route is invalid (2 problems): \
             spec.http[0].matches[0].path.value: \"api\" must start with '/' (write \"/api\"); \
             spec.http[1].backendRefs[0].weight: must be at most 1000000. \
             Until it is fixed, the route's last valid spec, if it had one, stays in effect."
        );
    }

    #[test]
    fn thousands_of_problems_fit_in_a_condition() {
        let validation: Vec<FieldError> = (0..5000)
            .map(|i| field(&format!("spec.http[{i}].name"), "must be unique"))
            .collect();
        let facts = RouteFacts {
            validation: &validation,
            ..Default::default()
        };
        let a = get(&status(&facts), conditions::ACCEPTED).clone();
        assert!(a.message.len() <= CONDITION_LIMIT, "{}", a.message.len());
        assert!(
            a.message
                .starts_with("The route is invalid (5000 problems): spec.http[0].name")
        );
        assert!(
            a.message
                .contains("more problems not shown. Until it is fixed")
        );
    }

    #[test]
    fn unresolved_references_name_the_worst_reason_and_list_every_problem() {
        let problems = [missing("ratings"), empty_subset()];
        let r = refs_condition(&problems);
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "BackendNotFound")
        );
        assert!(
            r.message
                .starts_with("The route has 2 unresolved references: ")
        );
        assert!(
            r.message
                .contains("spec.http[0].backendRefs[0]: Service demo/ratings does not exist")
        );
        assert!(
            r.message.contains(
                "the subset version=v3 of Service demo/reviews selects no ready endpoint"
            )
        );

        assert_eq!(refs_condition(&[empty_subset()]).reason, "SubsetEmpty");

        let conflicted = [
            missing("ratings"),
            Problem::Conflicted {
                service: ObjectKey::new("demo", "reviews"),
                port: 9080,
                winner: (&ObjectKey::new("demo", "older")).into(),
            },
        ];
        assert_eq!(refs_condition(&conflicted).reason, "Conflicted");

        let refused = [
            empty_subset(),
            Problem::RefNotPermitted {
                path: "spec.http[0].backendRefs[0]".into(),
                service: ObjectKey::new("team-b", "reviews"),
                from: "team-a".into(),
                kind: remora_model::routing::RouteKind::TrafficRoute,
            },
        ];
        let r = refs_condition(&refused);
        assert_eq!(r.reason, "RefNotPermitted");
        assert!(
            r.message
                .contains("no ReferenceGrant in team-b admits TrafficRoutes from team-a"),
            "{}",
            r.message
        );
    }

    #[test]
    fn the_governing_route_names_the_routes_it_governs_over() {
        let outranked = [Outranked {
            route: remora_model::routing::RouteKey {
                kind: remora_model::routing::RouteKind::HttpRoute,
                key: ObjectKey::new("demo", "web"),
            },
            service: ObjectKey::new("demo", "web"),
            port: 80,
        }];
        let facts = RouteFacts {
            outranks: &outranked,
            ..Default::default()
        };
        let a = get(&status(&facts), conditions::ACCEPTED).clone();
        assert_eq!((a.status.as_str(), a.reason.as_str()), ("True", "Accepted"));
        assert!(
            a.message
                .contains("route httproute:demo/web on Service demo/web port 80"),
            "{}",
            a.message
        );
    }

    #[test]
    fn programmed_counts_acknowledgements() {
        let facts = RouteFacts {
            proxies: tally(3, 1, 0),
            ..Default::default()
        };
        let p = get(&status(&facts), conditions::PROGRAMMED).clone();
        assert_eq!((p.status.as_str(), p.reason.as_str()), ("False", "Pending"));
        assert!(
            p.message
                .starts_with("1 of 3 affected proxies acknowledged"),
            "{}",
            p.message
        );
    }

    #[test]
    fn a_nack_shows_the_proxy_and_envoys_message() {
        let facts = RouteFacts {
            proxies: ProxyTally {
                first_nack: Some((
                    "demo/web-0".into(),
                    "Proto constraint validation failed: route: value length must be at least 1"
                        .into(),
                )),
                ..tally(3, 1, 1)
            },
            ..Default::default()
        };
        let s = status(&facts);
        let p = get(&s, conditions::PROGRAMMED);
        assert_eq!(
            (p.status.as_str(), p.reason.as_str()),
            ("False", "RejectedByProxy")
        );
        assert_eq!(
            p.message,
            "1 of 3 proxies rejected their config and keep running the previous one; \
             demo/web-0 said: Proto constraint validation failed: route: value length must be at least 1"
        );
        let r = get(&s, conditions::READY);
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "RejectedByProxy")
        );
        assert_eq!(r.message, format!("Programmed is False: {}", p.message));
        assert_eq!(s.proxies.map(|c| c.nacked), Some(1));
    }

    #[test]
    fn a_route_no_proxy_uses_is_programmed() {
        let p = get(&status(&RouteFacts::default()), conditions::PROGRAMMED).clone();
        assert_eq!(
            (p.status.as_str(), p.reason.as_str()),
            ("True", "Programmed")
        );
        assert!(p.message.starts_with("No proxy sends traffic"));
    }

    #[test]
    fn recomputing_gives_the_same_status_and_keeps_transition_times() {
        let problems = [missing("ratings")];
        let facts = RouteFacts {
            generation: Some(1),
            problems: &problems,
            proxies: tally(2, 1, 0),
            ..Default::default()
        };
        let first = route_status(&facts, None, at(10));
        assert_eq!(route_status(&facts, Some(&first), at(20)), first);

        // The Service appears: ResolvedRefs flips and moves its time; the others keep theirs.
        let resolved = RouteFacts {
            problems: &[],
            ..facts.clone()
        };
        let second = route_status(&resolved, Some(&first), at(30));
        assert_eq!(
            get(&second, conditions::RESOLVED_REFS).last_transition_time,
            at(30)
        );
        assert_eq!(
            get(&second, conditions::ACCEPTED).last_transition_time,
            at(10)
        );
        assert_eq!(
            get(&second, conditions::PROGRAMMED).last_transition_time,
            at(10)
        );

        // One more ACK changes the message and the status of Programmed.
        let acked = RouteFacts {
            proxies: tally(2, 2, 0),
            ..resolved
        };
        let third = route_status(&acked, Some(&second), at(40));
        assert_eq!(
            get(&third, conditions::PROGRAMMED).last_transition_time,
            at(40)
        );
    }
}
