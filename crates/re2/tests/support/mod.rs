//! The corpus both tests read: patterns with what Envoy 1.40 made of each, one per line as
//! `<pattern as JSON>\t<program size, or Envoy's error as a JSON string>`.

use std::path::PathBuf;

/// What Envoy made of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted with this program size.
    Size(u32),
    /// Refused, in Envoy's words.
    Refused(String),
}

/// One line of the corpus.
#[derive(Clone, Debug)]
pub struct Entry {
    pub pattern: String,
    pub envoy: Verdict,
}

pub fn corpus_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/envoy_corpus.tsv")
}

/// The corpus as it is on disk.
pub fn read_corpus_text() -> String {
    std::fs::read_to_string(corpus_path()).expect("the corpus is readable")
}

/// Every entry of the corpus.
pub fn corpus() -> Vec<Entry> {
    read_corpus_text()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (pattern, verdict) = line
                .split_once('\t')
                .expect("a tab between pattern and verdict");
            let pattern: String =
                serde_json::from_str(pattern).expect("the pattern is a JSON string");
            let envoy = match serde_json::from_str(verdict).expect("the verdict is JSON") {
                serde_json::Value::Number(n) => Verdict::Size(
                    n.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .expect("a size"),
                ),
                serde_json::Value::String(message) => Verdict::Refused(message),
                other => panic!("{pattern:?}: unexpected verdict {other}"),
            };
            Entry { pattern, envoy }
        })
        .collect()
}
