//! What a fleet says about a phase that failed: which proxies were not done, and what each
//! was missing or received.

use remora_model::input::ObjectKey;

use crate::{
    fleet::{self, Baseline, Expected, Logged, Want},
    running::Running,
};

/// Proxies whose problem is spelled out when a phase fails.
const EXAMPLES: usize = 3;

/// The proxies that were not done when a phase failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// How many.
    pub count: usize,
    /// The first few, each with what it missed or received, one per line.
    pub examples: String,
}

/// Stops the fleet after a failure and says what the first few proxies that were not done
/// had: during a change, the ones that did not converge and what they received; before, the
/// ones without a complete config and what they miss. `None` when the fleet cannot say (it
/// did not stop) or every proxy was done.
pub async fn diagnose(running: Running, proxies: &[ObjectKey]) -> Option<Pending> {
    let round = running.round();
    let outcomes = running.stop().await.ok()?;
    let mut pending = Vec::new();
    match &round.expected {
        Some(expected) => {
            let mut affected: Vec<_> = expected.iter().collect();
            affected.sort_by_key(|(i, _)| **i);
            for (&i, wants) in affected {
                let log = &outcomes[i].log;
                let before = &outcomes[i].baseline;
                if fleet::converged_at(log, round.number, wants, before).is_none() {
                    pending.push(format!(
                        "{} expected {}, received {}",
                        proxies[i],
                        describe_expected(wants, before),
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
    (!pending.is_empty()).then(|| Pending {
        count: pending.len(),
        examples: pending
            .into_iter()
            .take(EXAMPLES)
            .collect::<Vec<_>>()
            .join("\n  "),
    })
}

fn describe_expected(wants: &[Expected], before: &Baseline) -> String {
    wants
        .iter()
        .map(|w| {
            let (kind, name) = (short(w.type_url), &w.name);
            match w.want {
                Want::Version(v) => format!("{kind} {name}@{v:016x}"),
                Want::Removed => format!("{kind} {name} removed"),
                Want::Changed => match before.version(w.type_url, name) {
                    Some(v) => format!("{kind} {name} changed from @{v:016x}"),
                    None => format!("{kind} {name} (not held before)"),
                },
            }
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
                .carried()
                .map(|(name, version)| format!("{name}@{version:016x}"))
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
