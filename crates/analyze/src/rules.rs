//! The rule codes: one per sort of problem, stable, so a CI job or an annotation can name
//! them. `docs/analyze.md` explains each; a test keeps the two in step.

use serde::Serialize;

/// How much a finding matters: errors fail `remora analyze`, warnings only with
/// `--warnings-as-errors`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The object will not do what it says, or a proxy would refuse it.
    Error,
    /// Valid, but almost surely not what was meant.
    Warning,
}

/// One rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Its code, e.g. `REM003`.
    pub code: &'static str,
    /// A short name, e.g. `regex-refused`.
    pub name: &'static str,
    /// How much its findings matter.
    pub severity: Severity,
}

const fn rule(code: &'static str, name: &'static str, severity: Severity) -> Rule {
    Rule {
        code,
        name,
        severity,
    }
}

/// A document that cannot be read: not YAML, a field of the wrong type, an unknown field.
pub const UNREADABLE: Rule = rule("REM001", "unreadable-manifest", Severity::Error);
/// A field validation refuses (the API server's webhook would refuse the object).
pub const INVALID_FIELD: Rule = rule("REM002", "invalid-field", Severity::Error);
/// A regex RE2 refuses or whose program exceeds what the proxies accept: they would NACK it.
pub const REGEX_REFUSED: Rule = rule("REM003", "regex-refused", Severity::Error);
/// A Service, a port of one or a `ReferenceGrant` the object names does not exist.
pub const UNRESOLVED: Rule = rule("REM004", "unresolved-reference", Severity::Error);
/// Another route governs the Service port, or the rules do not fit its protocol.
pub const CONFLICT: Rule = rule("REM005", "route-conflict", Severity::Error);
/// A subset that selects no ready endpoint: its share of traffic fails.
pub const EMPTY_SUBSET: Rule = rule("REM101", "empty-subset", Severity::Warning);
/// An HTTP rule that can never match: an earlier rule of the route takes every request.
pub const SHADOWED_RULE: Rule = rule("REM102", "shadowed-rule", Severity::Warning);
/// A sidecar policy that governs none of the pods known.
pub const SELECTS_NOTHING: Rule = rule("REM103", "policy-selects-nothing", Severity::Warning);
/// A namespace labelled for the mesh whose pods no sidecar policy governs.
pub const NO_POLICY: Rule = rule("REM104", "namespace-without-policy", Severity::Warning);
/// A value that is valid but almost surely not meant, e.g. an image tag never published.
pub const SUSPICIOUS: Rule = rule("REM105", "suspicious-value", Severity::Warning);

/// Every rule, by code.
pub const RULES: [Rule; 10] = [
    UNREADABLE,
    INVALID_FIELD,
    REGEX_REFUSED,
    UNRESOLVED,
    CONFLICT,
    EMPTY_SUBSET,
    SHADOWED_RULE,
    SELECTS_NOTHING,
    NO_POLICY,
    SUSPICIOUS,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_are_unique_and_in_order() {
        let codes: Vec<_> = RULES.iter().map(|r| r.code).collect();
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(codes, sorted);
        let mut names: Vec<_> = RULES.iter().map(|r| r.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RULES.len());
    }
}
