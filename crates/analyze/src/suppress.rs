//! Suppressing a rule on one object: a finding someone has looked at and accepted should not
//! fail every later run.

use remora_model::input::Object;

use crate::Finding;

/// An annotation on a Remora object or route: the rule codes (or names) `remora analyze`
/// does not report for it, comma-separated, e.g. `REM102,policy-selects-nothing`.
pub const IGNORE_ANNOTATION: &str = "analyze.remora.dev/ignore";

/// Whether `object` suppresses `f`.
pub(crate) fn ignores(object: &Object, f: &Finding) -> bool {
    let annotations = match object {
        Object::SidecarPolicy(p) => p.metadata.annotations.as_ref(),
        Object::TrafficRoute(r) => r.metadata.annotations.as_ref(),
        Object::AccessPolicy(a) => a.metadata.annotations.as_ref(),
        Object::HttpRoute(r) => r.metadata.annotations.as_ref(),
        Object::GrpcRoute(r) => r.metadata.annotations.as_ref(),
        _ => None,
    };
    annotations
        .and_then(|a| a.get(IGNORE_ANNOTATION))
        .is_some_and(|list| {
            list.split(',')
                .map(str::trim)
                .any(|r| r.eq_ignore_ascii_case(f.code) || r == f.rule)
        })
}
