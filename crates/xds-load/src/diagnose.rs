//! What the driver adds to a phase that failed: which proxies were not done, and what each
//! was missing or received.

use remora_model::input::ObjectKey;

use crate::{
    Error,
    driver::Running,
    fleet::{self, Expected, Logged},
};

/// Proxies whose problem is spelled out when a phase fails.
const EXAMPLES: usize = 3;

/// Stops the fleet after a failure and adds what the first few proxies that were not done
/// had: during a change, the ones that did not converge and what they received; before, the
/// ones without a complete config and what they miss.
pub async fn diagnose(error: Error, running: Running, proxies: &[ObjectKey]) -> Error {
    let round = running.round.borrow().clone();
    let Ok(outcomes) = running.stop().await else {
        return error;
    };
    let mut pending = Vec::new();
    match &round.expected {
        Some(expected) => {
            let mut affected: Vec<_> = expected.iter().collect();
            affected.sort_by_key(|(i, _)| **i);
            for (&i, wants) in affected {
                let log = &outcomes[i].log;
                if fleet::converged_at(log, round.number, wants).is_none() {
                    pending.push(format!(
                        "{} expected {}, received {}",
                        proxies[i],
                        describe_expected(wants),
                        describe_log(log, round.number)
                    ));
                }
            }
        }
        None => {
            for (i, o) in outcomes.iter().enumerate() {
                if let Some(why) = &o.incomplete {
                    pending.push(format!("{}: {why}", proxies[i]));
                }
            }
        }
    }
    if pending.is_empty() {
        return error;
    }
    Error::Diagnosed {
        error: Box::new(error),
        count: pending.len(),
        examples: pending
            .into_iter()
            .take(EXAMPLES)
            .collect::<Vec<_>>()
            .join("\n  "),
    }
}

fn describe_expected(wants: &[Expected]) -> String {
    wants
        .iter()
        .map(|w| match w.version {
            Some(v) => format!("{} {}@{v:016x}", short(w.type_url), w.name),
            None => format!("{} {} removed", short(w.type_url), w.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_log(log: &[Logged], round: u32) -> String {
    let got: Vec<String> = log
        .iter()
        .filter(|l| l.round == round)
        .map(|l| {
            let carried: Vec<String> = l
                .carried
                .entries()
                .iter()
                .map(|e| format!("{}@{:016x}", e.name, e.version))
                .collect();
            format!("{} [{}]", short(l.type_url), carried.join(", "))
        })
        .collect();
    if got.is_empty() {
        "nothing".into()
    } else {
        got.join("; ")
    }
}

/// A type URL's message name: `RouteConfiguration` for RDS.
fn short(type_url: &str) -> &str {
    type_url.rsplit('.').next().unwrap_or(type_url)
}
