//! The checker against the corpus of Envoy's verdicts (`envoy_corpus.tsv`, made and
//! re-checked by `envoy.rs`): the same program size for every pattern Envoy accepts, the
//! same refusal, in the same words, for every pattern it refuses.

mod support;

use remora_re2::{Error, measure};
use support::{Verdict, corpus};

/// Envoy's words for a pattern RE2 cannot compile within its budget.
const TOO_COMPLEX: &str = "pattern too large - compile failed";

/// Envoy shows the part of a pattern at fault as RE2 read it, one Latin-1 character per
/// byte; the checker shows the pattern's own text where it is valid UTF-8.
fn as_the_checker_shows_it(envoy: &str) -> String {
    let Some((code, arg)) = envoy.split_once(": ") else {
        return envoy.to_owned();
    };
    let bytes: Option<Vec<u8>> = arg
        .chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect();
    match bytes.map(String::from_utf8) {
        Some(Ok(text)) => format!("{code}: {text}"),
        _ => envoy.to_owned(),
    }
}

fn checker_verdict(pattern: &str) -> Verdict {
    match measure(pattern) {
        Ok(size) => Verdict::Size(size),
        Err(Error::Syntax(e)) => Verdict::Refused(e.to_string()),
        Err(Error::TooComplex) => Verdict::Refused(TOO_COMPLEX.to_owned()),
        Err(e @ Error::TooLarge { .. }) => panic!("measure has no limit: {e}"),
    }
}

#[test]
fn the_checker_agrees_with_envoy_on_every_pattern_of_the_corpus() {
    let entries = corpus();
    let mut disagreements = Vec::new();
    for entry in &entries {
        let expected = match &entry.envoy {
            Verdict::Refused(message) => Verdict::Refused(as_the_checker_shows_it(message)),
            size => size.clone(),
        };
        let ours = checker_verdict(&entry.pattern);
        if ours != expected {
            disagreements.push(format!(
                "{:?}: Envoy {expected:?}, checker {ours:?}",
                entry.pattern
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} patterns disagree:\n{}",
        disagreements.len(),
        entries.len(),
        disagreements.join("\n")
    );
    assert!(entries.len() > 1000, "{}", entries.len());
}
