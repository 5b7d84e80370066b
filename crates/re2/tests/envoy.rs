//! Envoy itself as RE2's oracle. A static route config of `safe_regex` routes goes through
//! `envoy --mode validate` with the runtime key `re2.max_program_size.warn_level` at 0, so
//! Envoy logs the program size of every regex it compiles, and `error_level` high enough
//! that none is refused for its size; a pattern RE2 refuses stops the config with RE2's
//! error. These tests re-derive the corpus from Envoy and check that Envoy refuses the
//! pattern of issue 15.
//!
//! `REMORA_RE2_CORPUS_WRITE=1` rewrites the corpus's verdicts from Envoy (after adding
//! patterns to it, with any verdict).

mod support;

use std::{path::PathBuf, process::Command, sync::atomic::AtomicU32};

use remora_test_support::envoy_bin;
use serde_json::{Value, json};
use support::{Entry, Verdict, corpus, corpus_path, read_corpus_text};

/// The error level the corpus was made with: any size below it is reported, not refused.
const CORPUS_ERROR_LEVEL: u32 = 100_000;

/// The pattern of issue 15: accepted by Rust's `regex`, NACKed by every proxy.
const ISSUE_PATTERN: &str = "/(a{1,50}b{1,50}c{1,50}d{1,50}){1,20}";

fn route_config(patterns: &[&str], runtime: Option<Value>) -> Value {
    let routes: Vec<Value> = patterns
        .iter()
        .map(|p| json!({"match": {"safe_regex": {"regex": p}}, "direct_response": {"status": 200}}))
        .collect();
    let hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "corpus",
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        "route_config": {"name": "corpus", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
    });
    let mut config = json!({"static_resources": {"listeners": [{
        "name": "corpus",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10000}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}],
    }]}});
    if let Some(layer) = runtime {
        config["layered_runtime"] = json!({"layers": [{"name": "static", "static_layer": layer}]});
    }
    config
}

/// What `envoy --mode validate` said of a config: the program sizes it logged, in order,
/// and the error that stopped it, if one did.
struct Outcome {
    sizes: Vec<u32>,
    error: Option<String>,
}

fn validate(config: &Value) -> Outcome {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("re2-oracle-{}-{n}.json", std::process::id()));
    std::fs::write(&path, config.to_string()).expect("write the config");
    let out = Command::new(envoy_bin())
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "warning",
            "-c",
        ])
        .arg(&path)
        .output()
        .expect("run envoy");
    let _ = std::fs::remove_file(&path);
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let sizes = text
        .split("RE2 program size of ")
        .skip(1)
        .filter(|rest| rest.contains(" > max program size of 0 set for the warn"))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .collect();
    let error = (!out.status.success()).then(|| {
        let message = text
            .split_once("error initializing configuration '")
            .and_then(|(_, rest)| rest.split_once("': "))
            .map_or(text.as_str(), |(_, message)| message);
        message.lines().next().unwrap_or_default().to_owned()
    });
    Outcome { sizes, error }
}

/// Envoy's verdicts on `patterns`, at the corpus's levels: a batch at once, halved around
/// refused patterns until each refusal is alone.
fn verdicts(patterns: &[&str]) -> Vec<Verdict> {
    if patterns.is_empty() {
        return Vec::new();
    }
    let levels = json!({
        "re2.max_program_size.warn_level": 0,
        "re2.max_program_size.error_level": CORPUS_ERROR_LEVEL,
    });
    let outcome = validate(&route_config(patterns, Some(levels)));
    match outcome.error {
        None => {
            assert_eq!(outcome.sizes.len(), patterns.len(), "one size per pattern");
            outcome.sizes.into_iter().map(Verdict::Size).collect()
        }
        Some(error) if patterns.len() == 1 => vec![Verdict::Refused(error)],
        Some(_) => {
            let (a, b) = patterns.split_at(patterns.len() / 2);
            [verdicts(a), verdicts(b)].concat()
        }
    }
}

/// Rewrites the corpus with new verdicts, keeping its header.
fn write_corpus(entries: &[Entry]) {
    let mut text: String = read_corpus_text()
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    for e in entries {
        let verdict = match &e.envoy {
            Verdict::Size(size) => Value::from(*size),
            Verdict::Refused(message) => Value::from(message.as_str()),
        };
        text.push_str(&format!("{}\t{verdict}\n", Value::from(e.pattern.as_str())));
    }
    std::fs::write(corpus_path(), text).expect("the corpus is writable");
}

#[test]
fn envoy_gives_the_corpus_its_sizes_and_refusals() {
    let mut entries = corpus();
    if std::env::var_os("REMORA_RE2_CORPUS_WRITE").is_some() {
        let patterns: Vec<&str> = entries.iter().map(|e| e.pattern.as_str()).collect();
        let fresh = verdicts(&patterns);
        entries = patterns
            .into_iter()
            .zip(fresh)
            .map(|(p, envoy)| Entry {
                pattern: p.to_owned(),
                envoy,
            })
            .collect();
        write_corpus(&entries);
    }
    // Every accepted pattern in one config, and every fourth refused one on its own.
    let (accepted, refused): (Vec<&Entry>, Vec<&Entry>) = entries
        .iter()
        .partition(|e| matches!(e.envoy, Verdict::Size(_)));
    let patterns: Vec<&str> = accepted.iter().map(|e| e.pattern.as_str()).collect();
    let sizes = verdicts(&patterns);
    for (entry, now) in accepted.iter().zip(&sizes) {
        assert_eq!(now, &entry.envoy, "{:?}", entry.pattern);
    }
    for entry in refused.iter().step_by(4) {
        assert_eq!(
            verdicts(&[entry.pattern.as_str()]),
            std::slice::from_ref(&entry.envoy),
            "{:?}",
            entry.pattern
        );
    }
    assert!(
        accepted.len() > 500 && refused.len() > 100,
        "the corpus has both kinds"
    );
}

#[test]
fn envoy_refuses_the_issues_pattern_at_its_default_limit_as_the_checker_does() {
    let size = remora_re2::measure(ISSUE_PATTERN).expect("RE2 parses it");
    assert!(size > remora_re2::DEFAULT_MAX_PROGRAM_SIZE, "{size}");
    assert_eq!(
        remora_re2::program_size(ISSUE_PATTERN, remora_re2::DEFAULT_MAX_PROGRAM_SIZE),
        Err(remora_re2::Error::TooLarge {
            size,
            limit: remora_re2::DEFAULT_MAX_PROGRAM_SIZE
        })
    );
    // No runtime layer: Envoy's own default limit.
    let outcome = validate(&route_config(&[ISSUE_PATTERN], None));
    let error = outcome.error.expect("Envoy refuses it");
    assert!(
        error.contains(&format!(
            "RE2 program size of {size} > max program size of {}",
            remora_re2::DEFAULT_MAX_PROGRAM_SIZE
        )),
        "{error}"
    );
}
