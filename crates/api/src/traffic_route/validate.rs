//! The checks on a `TrafficRoute` that the schema cannot express.

use std::collections::BTreeSet;

use super::{
    BackendRef, Fault, HeaderModifier, HttpMatch, HttpRule, PathMatchType, PathModifier, Redirect,
    Retry, StringMatchType, Timeouts, TrafficRoute, TrafficRouteSpec, UrlRewrite,
};
use crate::validation::{Problems, Validate, ValidationErrors, ValidationSettings};

const REDIRECT_CODES: [i32; 5] = [301, 302, 303, 307, 308];

impl Validate for TrafficRouteSpec {
    fn validate_with(&self, settings: &ValidationSettings) -> Result<(), ValidationErrors> {
        let mut p = Problems::new(settings);
        if self.parent_refs.is_empty() {
            p.add(
                "spec.parentRefs",
                "name at least one Service whose traffic this route governs",
            );
        }
        let mut parents = BTreeSet::new();
        for (i, parent) in self.parent_refs.iter().enumerate() {
            let path = format!("spec.parentRefs[{i}]");
            service_ref(&mut p, &path, &parent.name, &parent.namespace, parent.port);
            if !parents.insert(parent) {
                p.add(path, "this parent is listed twice; remove the duplicate");
            }
        }
        if self.http.is_empty() && self.tcp.is_empty() {
            p.add("spec", "a route needs at least one rule in http or tcp");
        }
        let mut names = BTreeSet::new();
        for (i, rule) in self.http.iter().enumerate() {
            let path = format!("spec.http[{i}]");
            rule_name(&mut p, &mut names, &path, rule.name.as_deref());
            validate_http_rule(&mut p, &path, rule);
        }
        for (i, rule) in self.tcp.iter().enumerate() {
            let path = format!("spec.tcp[{i}]");
            rule_name(&mut p, &mut names, &path, rule.name.as_deref());
            if rule.backend_refs.is_empty() {
                p.add(
                    format!("{path}.backendRefs"),
                    "a tcp rule needs at least one backendRef",
                );
            }
            backends(&mut p, &path, &rule.backend_refs);
        }
        p.finish()
    }
}

impl Validate for TrafficRoute {
    fn validate_with(&self, settings: &ValidationSettings) -> Result<(), ValidationErrors> {
        self.spec.validate_with(settings)
    }
}

fn rule_name<'a>(
    p: &mut Problems,
    names: &mut BTreeSet<&'a str>,
    path: &str,
    name: Option<&'a str>,
) {
    if let Some(name) = name {
        p.dns_label(&format!("{path}.name"), name);
        if !names.insert(name) {
            p.add(
                format!("{path}.name"),
                format!(
                    "rule name {name:?} is used twice in this route; rule names must be unique"
                ),
            );
        }
    }
}

fn validate_http_rule(p: &mut Problems, path: &str, rule: &HttpRule) {
    for (j, m) in rule.matches.iter().enumerate() {
        validate_match(p, &format!("{path}.matches[{j}]"), m);
    }

    match (&rule.redirect, rule.backend_refs.is_empty()) {
        (Some(_), false) => p.add(
            format!("{path}.redirect"),
            "a rule either redirects or forwards to backendRefs, not both: remove one",
        ),
        (None, true) => p.add(
            format!("{path}.backendRefs"),
            "a rule needs backendRefs to forward to, or a redirect",
        ),
        _ => {}
    }
    backends(p, path, &rule.backend_refs);

    for (field, modifier) in [
        ("requestHeaders", &rule.request_headers),
        ("responseHeaders", &rule.response_headers),
    ] {
        if let Some(m) = modifier {
            header_modifier(p, &format!("{path}.{field}"), m);
        }
    }
    if let Some(rewrite) = &rule.rewrite {
        validate_rewrite(p, path, rule, rewrite);
    }
    if let Some(redirect) = &rule.redirect {
        validate_redirect(p, &format!("{path}.redirect"), redirect);
    }
    if let Some(mirror) = &rule.mirror {
        let mpath = format!("{path}.mirror");
        let b = &mirror.backend_ref;
        service_ref(
            p,
            &format!("{mpath}.backendRef"),
            &b.name,
            &b.namespace,
            b.port,
        );
        p.percent(&format!("{mpath}.percent"), mirror.percent);
    }
    let request_timeout = rule
        .timeouts
        .as_ref()
        .and_then(|t| validate_timeouts(p, &format!("{path}.timeouts"), t));
    if let Some(retry) = &rule.retry {
        validate_retry(p, &format!("{path}.retry"), retry, request_timeout);
    }
    if let Some(fault) = &rule.fault {
        validate_fault(p, &format!("{path}.fault"), fault);
    }
}

fn validate_match(p: &mut Problems, mpath: &str, m: &HttpMatch) {
    if let Some(pm) = &m.path {
        let vpath = format!("{mpath}.path.value");
        match pm.kind {
            PathMatchType::RegularExpression => p.regex(&vpath, &pm.value),
            PathMatchType::Exact | PathMatchType::PathPrefix => {
                if !pm.value.starts_with('/') {
                    p.add(
                        vpath,
                        format!(
                            "{:?} must start with '/' (write \"/{}\")",
                            pm.value, pm.value
                        ),
                    );
                } else if pm.value.contains(['?', '#']) {
                    p.add(vpath, "a path match cannot contain '?' or '#'; match query parameters with queryParams");
                }
            }
        }
    }
    let mut header_names = BTreeSet::new();
    for (k, h) in m.headers.iter().enumerate() {
        let hpath = format!("{mpath}.headers[{k}]");
        p.http_header_name(&format!("{hpath}.name"), &h.name);
        if !header_names.insert(h.name.to_ascii_lowercase()) {
            p.add(
                format!("{hpath}.name"),
                format!(
                    "header {:?} is matched twice in one match; combine the conditions",
                    h.name
                ),
            );
        }
        if h.kind == StringMatchType::RegularExpression {
            p.regex(&format!("{hpath}.value"), &h.value);
        }
    }
    let mut query_names = BTreeSet::new();
    for (k, q) in m.query_params.iter().enumerate() {
        let qpath = format!("{mpath}.queryParams[{k}]");
        if !query_names.insert(q.name.as_str()) {
            p.add(
                format!("{qpath}.name"),
                format!(
                    "query parameter {:?} is matched twice in one match; combine the conditions",
                    q.name
                ),
            );
        }
        if q.kind == StringMatchType::RegularExpression {
            p.regex(&format!("{qpath}.value"), &q.value);
        }
    }
}

fn validate_rewrite(p: &mut Problems, path: &str, rule: &HttpRule, rewrite: &UrlRewrite) {
    if rule.redirect.is_some() {
        p.add(
            format!("{path}.rewrite"),
            "a redirect cannot be combined with a rewrite; put the new path in redirect.path",
        );
    }
    let Some(pm) = &rewrite.path else {
        return;
    };
    path_modifier(p, &format!("{path}.rewrite.path"), pm);
    if pm.replace_prefix_match.is_some() {
        let all_prefix = !rule.matches.is_empty()
            && rule.matches.iter().all(|m| {
                m.path
                    .as_ref()
                    .is_some_and(|pm| pm.kind == PathMatchType::PathPrefix)
            });
        if !all_prefix {
            p.add(
                format!("{path}.rewrite.path.replacePrefixMatch"),
                "replacePrefixMatch needs every match of the rule to have a PathPrefix path match; add one or use replaceFullPath",
            );
        }
    }
}

fn validate_redirect(p: &mut Problems, rpath: &str, redirect: &Redirect) {
    if let Some(code) = redirect.status_code
        && !REDIRECT_CODES.contains(&code)
    {
        p.add(
            format!("{rpath}.statusCode"),
            format!("{code} is not a redirect status: use 301, 302, 303, 307 or 308"),
        );
    }
    if let Some(port) = redirect.port {
        p.port(&format!("{rpath}.port"), port);
    }
    if let Some(pm) = &redirect.path {
        path_modifier(p, &format!("{rpath}.path"), pm);
    }
}

/// Returns the request timeout, which bounds the retries' per-try timeout.
fn validate_timeouts(p: &mut Problems, tpath: &str, t: &Timeouts) -> Option<std::time::Duration> {
    let request = p.duration(&format!("{tpath}.request"), &t.request);
    let backend = p.duration(&format!("{tpath}.backendRequest"), &t.backend_request);
    if let (Some(req), Some(backend)) = (request, backend)
        && !req.is_zero()
        && backend > req
    {
        p.add(
            format!("{tpath}.backendRequest"),
            "backendRequest cannot be longer than request; shorten it or raise request",
        );
    }
    request
}

fn validate_fault(p: &mut Problems, fpath: &str, fault: &Fault) {
    if fault.delay.is_none() && fault.abort.is_none() {
        p.add(fpath, "a fault needs a delay, an abort or both");
    }
    if let Some(delay) = &fault.delay {
        p.duration(
            &format!("{fpath}.delay.fixedDelay"),
            &Some(delay.fixed_delay.clone()),
        );
        p.percent(&format!("{fpath}.delay.percent"), delay.percent);
    }
    if let Some(abort) = &fault.abort {
        if !(200..=599).contains(&abort.http_status) {
            p.add(
                format!("{fpath}.abort.httpStatus"),
                format!(
                    "{} is not an HTTP status: use 200 to 599, e.g. 503",
                    abort.http_status
                ),
            );
        }
        p.percent(&format!("{fpath}.abort.percent"), abort.percent);
    }
}

/// A reference to a Service: parents, backends and mirrors name one the same way.
fn service_ref(
    p: &mut Problems,
    path: &str,
    name: &str,
    namespace: &Option<String>,
    port: Option<i32>,
) {
    p.dns_label(&format!("{path}.name"), name);
    if let Some(ns) = namespace {
        p.dns_label(&format!("{path}.namespace"), ns);
    }
    if let Some(port) = port {
        p.port(&format!("{path}.port"), port);
    }
}

pub(crate) fn validate_retry(
    p: &mut Problems,
    path: &str,
    retry: &Retry,
    request_timeout: Option<std::time::Duration>,
) {
    if !(0..=10).contains(&retry.attempts) {
        p.add(
            format!("{path}.attempts"),
            format!("{} retries is out of range: use 0 to 10", retry.attempts),
        );
    }
    let per_try = p.duration(&format!("{path}.perTryTimeout"), &retry.per_try_timeout);
    p.duration(&format!("{path}.backoff"), &retry.backoff);
    if let (Some(per_try), Some(req)) = (per_try, request_timeout)
        && !req.is_zero()
        && per_try > req
    {
        p.add(
            format!("{path}.perTryTimeout"),
            "perTryTimeout is longer than timeouts.request, so no retry could ever run; shorten it",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, on) in retry.retry_on.iter().enumerate() {
        if !seen.insert(on) {
            p.add(
                format!("{path}.retryOn[{i}]"),
                format!("{:?} is listed twice; remove the duplicate", on.as_str()),
            );
        }
    }
    for (i, code) in retry.codes.iter().enumerate() {
        if !(400..=599).contains(code) {
            p.add(
                format!("{path}.codes[{i}]"),
                format!("{code} is not a retriable status: use 400 to 599"),
            );
        }
    }
}

fn backends(p: &mut Problems, path: &str, refs: &[BackendRef]) {
    let mut total: i64 = 0;
    for (i, b) in refs.iter().enumerate() {
        let bpath = format!("{path}.backendRefs[{i}]");
        service_ref(p, &bpath, &b.name, &b.namespace, b.port);
        if !(0..=1_000_000).contains(&b.weight) {
            p.add(
                format!("{bpath}.weight"),
                format!(
                    "{} is out of range: use a weight from 0 to 1000000",
                    b.weight
                ),
            );
        } else {
            total += i64::from(b.weight);
        }
        for (k, v) in &b.subset {
            p.label_key(&format!("{bpath}.subset"), k);
            p.label_value(&format!("{bpath}.subset.{k}"), v);
        }
    }
    if !refs.is_empty() && total == 0 {
        p.add(format!("{path}.backendRefs"), "every weight is 0, so no traffic could be sent; give at least one backend a weight above 0");
    }
}

fn header_modifier(p: &mut Problems, path: &str, m: &HeaderModifier) {
    let mut set_names = BTreeSet::new();
    for (i, h) in m.set.iter().enumerate() {
        p.http_header_name(&format!("{path}.set[{i}].name"), &h.name);
        if !set_names.insert(h.name.to_ascii_lowercase()) {
            p.add(
                format!("{path}.set[{i}].name"),
                format!("header {:?} is set twice; keep one", h.name),
            );
        }
    }
    for (i, h) in m.add.iter().enumerate() {
        p.http_header_name(&format!("{path}.add[{i}].name"), &h.name);
    }
    for (i, name) in m.remove.iter().enumerate() {
        p.http_header_name(&format!("{path}.remove[{i}]"), name);
        if set_names.contains(&name.to_ascii_lowercase()) {
            p.add(
                format!("{path}.remove[{i}]"),
                format!("header {name:?} is both set and removed; keep one"),
            );
        }
    }
}

fn path_modifier(p: &mut Problems, path: &str, m: &PathModifier) {
    match (&m.replace_full_path, &m.replace_prefix_match) {
        (Some(_), Some(_)) | (None, None) => p.add(
            path,
            "give exactly one of replaceFullPath and replacePrefixMatch",
        ),
        (Some(v), None) | (None, Some(v)) => {
            if !v.starts_with('/') {
                p.add(path, format!("the new path {v:?} must start with '/'"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The pattern of issue 15: Rust's `regex` takes it, every proxy refused it.
    const ISSUE_PATTERN: &str = "/(a{1,50}b{1,50}c{1,50}d{1,50}){1,20}";

    fn route(matches: serde_json::Value) -> TrafficRouteSpec {
        serde_json::from_value(json!({
            "parentRefs": [{"name": "web"}],
            "http": [{"matches": matches, "backendRefs": [{"name": "web"}]}],
        }))
        .expect("a route")
    }

    fn problems(spec: &TrafficRouteSpec, limit: u32) -> Vec<(String, String)> {
        let settings = ValidationSettings {
            max_regex_program_size: limit,
        };
        spec.validate_with(&settings)
            .err()
            .map(|e| e.0.into_iter().map(|f| (f.path, f.message)).collect())
            .unwrap_or_default()
    }

    #[test]
    fn the_issues_regex_is_refused_with_its_field_path_and_the_fix() {
        let spec = route(json!([{"path": {"type": "RegularExpression", "value": ISSUE_PATTERN}}]));
        let found = problems(&spec, remora_re2::DEFAULT_MAX_PROGRAM_SIZE);
        let [(path, message)] = &found[..] else {
            panic!("one problem expected: {found:?}");
        };
        assert_eq!(path, "spec.http[0].matches[0].path.value");
        assert!(message.contains("RE2 program size"), "{message}");
        assert!(message.contains("exceeds the limit 100"), "{message}");
        assert!(message.contains("--max-regex-program-size"), "{message}");
        let kinds: Vec<_> = spec
            .validate()
            .err()
            .map(|e| e.0.into_iter().map(|f| f.kind).collect())
            .unwrap_or_default();
        assert_eq!(kinds, [crate::FieldProblem::Regex]);
        let plain = route(json!([{"path": {"type": "PathPrefix", "value": "api"}}]));
        let kinds: Vec<_> = plain
            .validate()
            .err()
            .map(|e| e.0.into_iter().map(|f| f.kind).collect())
            .unwrap_or_default();
        assert_eq!(
            kinds,
            [crate::FieldProblem::Invalid],
            "a path must start with /"
        );
    }

    #[test]
    fn a_raised_limit_takes_a_larger_program() {
        let spec = route(json!([{"path": {"type": "RegularExpression", "value": "/x{300}"}}]));
        assert_eq!(problems(&spec, 100).len(), 1);
        assert_eq!(problems(&spec, 1000), []);
    }

    /// Patterns Rust's `regex` takes and RE2 refuses: a rune beyond Latin-1 (Envoy's RE2
    /// reads patterns byte by byte), the `x` flag, the `\u` escape.
    #[test]
    fn header_and_query_regexes_answer_to_re2_too() {
        let spec = route(json!([{
            "headers": [{"type": "RegularExpression", "name": "x-a", "value": "\\x{100}"}],
            "queryParams": [
                {"type": "RegularExpression", "name": "q", "value": "(?x) a"},
                {"type": "RegularExpression", "name": "r", "value": "\\u0041+"},
            ],
        }]));
        let found = problems(&spec, 100);
        let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.http[0].matches[0].headers[0].value",
                "spec.http[0].matches[0].queryParams[0].value",
                "spec.http[0].matches[0].queryParams[1].value"
            ]
        );
        assert!(
            found[2].1.contains("invalid escape sequence: \\u"),
            "{found:?}"
        );
    }
}
