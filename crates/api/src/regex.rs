//! Regexes as the proxies' RE2 takes them. Each pattern is compiled by `remora_re2` (RE2
//! as Envoy runs it) once per content and remembered for the process, so validating a
//! route again costs a lookup. The memory is a cache of a pure function, bounded: two
//! generations of at most [`GENERATION_BYTES`] of pattern text each, the older dropped when
//! the newer fills.
//!
//! Whoever validates under a lock compiles the patterns first, outside it
//! ([`TrafficRouteSpec::compile_regexes`], and the same for Gateway API routes): the model validates every route under the
//! mesh's lock, which the injection webhook takes too.

use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
};

use crate::{
    TrafficRouteSpec,
    gateway::{GrpcRouteSpec, HttpRouteSpec},
    traffic_route::{HttpMatch, PathMatchType, StringMatchType},
};

/// Pattern text remembered per generation.
const GENERATION_BYTES: usize = 4 << 20;

/// What a pattern compiles to: its program size, or why RE2 refuses it.
type Compiled = Result<u32, remora_re2::Error>;

#[derive(Default)]
struct Memo {
    current: HashMap<Box<str>, Compiled>,
    previous: HashMap<Box<str>, Compiled>,
    bytes: usize,
}

impl Memo {
    fn get(&mut self, pattern: &str) -> Option<Compiled> {
        if let Some(found) = self.current.get(pattern) {
            return Some(found.clone());
        }
        let found = self.previous.remove(pattern)?;
        self.insert(pattern, found.clone());
        Some(found)
    }

    fn insert(&mut self, pattern: &str, compiled: Compiled) {
        if self.bytes + pattern.len() > GENERATION_BYTES {
            self.previous = std::mem::take(&mut self.current);
            self.bytes = 0;
        }
        self.bytes += pattern.len();
        self.current.insert(pattern.into(), compiled);
    }
}

fn memo() -> std::sync::MutexGuard<'static, Memo> {
    static MEMO: OnceLock<Mutex<Memo>> = OnceLock::new();
    MEMO.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The pattern compiled, from memory when it was compiled before. The memory is locked
/// only to look up and to remember, never while compiling.
fn compiled(pattern: &str) -> Compiled {
    if let Some(found) = memo().get(pattern) {
        return found;
    }
    let compiled = remora_re2::measure(pattern);
    memo().insert(pattern, compiled.clone());
    compiled
}

/// What is wrong with `pattern` for proxies that refuse programs above `limit`, in words
/// for the person who wrote it; `None` when nothing is.
pub(crate) fn problem(pattern: &str, limit: u32) -> Option<String> {
    let shown = shown(pattern);
    match compiled(pattern) {
        Ok(size) if size <= limit => None,
        Ok(size) => Some(format!(
            "{shown:?}: its RE2 program size {size} exceeds the limit {limit} (proxies refuse larger ones); simplify the pattern or raise --max-regex-program-size"
        )),
        Err(remora_re2::Error::Syntax(e)) => Some(format!(
            "{shown:?} is not a valid RE2 regular expression ({e}); fix the pattern or use an Exact/PathPrefix match"
        )),
        Err(e) => Some(format!("{shown:?}: {e}; simplify the pattern")),
    }
}

/// A pattern as a message quotes it: at most 64 characters.
fn shown(pattern: &str) -> String {
    match pattern.char_indices().nth(64) {
        Some((end, _)) => format!("{}…", &pattern[..end]),
        None => pattern.to_owned(),
    }
}

impl HttpMatch {
    /// Compiles the match's regexes into the process's memory.
    fn compile_regexes(&self) {
        let path = self
            .path
            .iter()
            .filter(|p| p.kind == PathMatchType::RegularExpression)
            .map(|p| p.value.as_str());
        let headers = self
            .headers
            .iter()
            .filter(|h| h.kind == StringMatchType::RegularExpression)
            .map(|h| h.value.as_str());
        let query = self
            .query_params
            .iter()
            .filter(|q| q.kind == StringMatchType::RegularExpression)
            .map(|q| q.value.as_str());
        for pattern in path.chain(headers).chain(query) {
            let _ = compiled(pattern);
        }
    }
}

impl TrafficRouteSpec {
    /// Compiles the route's regexes into the process's memory, so that validating it later
    /// only looks them up. Call it before taking a lock under which the route is validated.
    pub fn compile_regexes(&self) {
        for m in self.http.iter().flat_map(|rule| &rule.matches) {
            m.compile_regexes();
        }
    }
}

impl HttpRouteSpec {
    /// As [`TrafficRouteSpec::compile_regexes`].
    pub fn compile_regexes(&self) {
        for m in self.rules.iter().flat_map(|rule| &rule.matches) {
            m.compile_regexes();
        }
    }
}

impl GrpcRouteSpec {
    /// As [`TrafficRouteSpec::compile_regexes`], for the paths its method matches become.
    pub fn compile_regexes(&self) {
        for m in self.rules.iter().flat_map(|rule| &rule.matches) {
            let method = m.method.as_ref().and_then(|m| m.regex_path());
            let headers = m
                .headers
                .iter()
                .filter(|h| h.kind == StringMatchType::RegularExpression)
                .map(|h| h.value.clone());
            for pattern in method.into_iter().chain(headers) {
                let _ = compiled(&pattern);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_is_compiled_once_and_remembered() {
        let pattern = "/remembered/[0-9]+";
        assert_eq!(problem(pattern, 100), None);
        assert!(memo().current.contains_key(pattern));
        assert_eq!(compiled(pattern), remora_re2::measure(pattern));
    }

    #[test]
    fn the_memory_keeps_two_generations_of_bounded_size() {
        let mut m = Memo::default();
        let big = "x".repeat(GENERATION_BYTES / 2);
        m.insert("first", Ok(1));
        m.insert(&big, Ok(2));
        m.insert(&format!("{big}y"), Ok(3));
        assert!(m.previous.contains_key("first") && !m.current.contains_key("first"));
        assert_eq!(m.get("first"), Some(Ok(1)));
        assert!(m.current.contains_key("first"));
        m.insert(&format!("{big}z"), Ok(4));
        m.insert(&format!("{big}w"), Ok(5));
        assert_eq!(m.get(&big), None, "two generations back is forgotten");
    }

    #[test]
    fn a_message_quotes_a_long_pattern_shortened() {
        let long = format!("/{}(", "a".repeat(100));
        let message = problem(&long, 100).expect("unbalanced");
        assert!(
            message.starts_with(&format!("\"/{}…\"", "a".repeat(63))),
            "{message}"
        );
    }

    fn remembered(pattern: &str) -> bool {
        let memo = memo();
        memo.current.contains_key(pattern) || memo.previous.contains_key(pattern)
    }

    #[test]
    fn gateway_routes_compile_the_patterns_their_validation_reads() {
        let grpc: GrpcRouteSpec =
            serde_json::from_value(serde_json::json!({"rules": [{"matches": [
                {"method": {"type": "RegularExpression", "service": "compiled\\.v[0-9]+\\.Ahead"}}
            ]}]}))
            .expect("a GRPCRoute spec");
        let http: HttpRouteSpec = serde_json::from_value(serde_json::json!({"rules": [{"matches": [
            {"headers": [{"type": "RegularExpression", "name": "x", "value": "compiled-ahead-[0-9]+"}]}
        ]}]}))
        .expect("an HTTPRoute spec");
        let (grpc_path, header) = (
            "/(?:compiled\\.v[0-9]+\\.Ahead)/(?:[^/]+)",
            "compiled-ahead-[0-9]+",
        );
        assert!(!remembered(grpc_path) && !remembered(header));
        grpc.compile_regexes();
        http.compile_regexes();
        assert!(remembered(grpc_path), "the path the method match becomes");
        assert!(remembered(header));
    }
}
