//! What the schema cannot say. The API server checks types, enums, ranges and CEL rules; this
//! module checks the rest (regexes compile as the proxies' RE2 compiles them, names are
//! unique, values fit together) and repeats the cross-field rules so objects that never met
//! the API server (local mode, a webhook that was down) get the same answer. Every problem is
//! collected, each with its field path.

use std::{collections::BTreeSet, fmt};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::Duration;

/// One problem with one field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldError {
    /// Where the problem is, e.g. `spec.http[0].matches[1].path.value`.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
    /// What sort of problem it is, for tools that tell them apart (`remora analyze`).
    pub kind: FieldProblem,
}

/// The sorts of [`FieldError`]: most are a value the field does not take; a regex the
/// proxies' RE2 would refuse is told apart, being what validation alone stops before a NACK.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldProblem {
    /// A value the field does not take.
    #[default]
    Invalid,
    /// A regex RE2 refuses, or whose program is larger than the proxies accept.
    Regex,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in an object, in field order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// What validation takes from the control plane rather than from the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidationSettings {
    /// The largest RE2 program a regex may compile to. Every proxy's bootstrap sets the
    /// same number as Envoy's limit (`re2.max_program_size.error_level`), above which it
    /// refuses the whole resource.
    pub max_regex_program_size: u32,
}

impl Default for ValidationSettings {
    /// Envoy's own limit.
    fn default() -> Self {
        ValidationSettings {
            max_regex_program_size: remora_re2::DEFAULT_MAX_PROGRAM_SIZE,
        }
    }
}

/// Checks an object for everything a user can get wrong in it.
pub trait Validate {
    /// Returns every problem, not just the first, under the default settings.
    fn validate(&self) -> Result<(), ValidationErrors> {
        self.validate_with(&ValidationSettings::default())
    }

    /// Returns every problem, not just the first.
    fn validate_with(&self, settings: &ValidationSettings) -> Result<(), ValidationErrors>;

    /// What is valid but almost surely not meant, such as an image tag its registry does not
    /// publish. Warnings never refuse an object: the webhook returns them to `kubectl`, and
    /// local mode and `compute` print them.
    fn warnings(&self) -> Vec<FieldError> {
        Vec::new()
    }
}

/// Decodes an object, naming the field that does not fit its type (an unknown enum value, a
/// string where a number belongs) instead of failing on the object as a whole.
pub fn decode<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        FieldError {
            path: if path == "." { String::new() } else { path },
            message: e.into_inner().to_string(),
            kind: FieldProblem::Invalid,
        }
    })
}

/// Collects problems while a validator walks an object.
#[derive(Default)]
pub(crate) struct Problems {
    found: Vec<FieldError>,
    settings: ValidationSettings,
}

impl Problems {
    pub(crate) fn new(settings: &ValidationSettings) -> Problems {
        Problems {
            found: Vec::new(),
            settings: *settings,
        }
    }

    pub(crate) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.add_kind(path, message, FieldProblem::Invalid);
    }

    fn add_kind(
        &mut self,
        path: impl Into<String>,
        message: impl Into<String>,
        kind: FieldProblem,
    ) {
        self.found.push(FieldError {
            path: path.into(),
            message: message.into(),
            kind,
        });
    }

    pub(crate) fn finish(self) -> Result<(), ValidationErrors> {
        if self.found.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(self.found))
        }
    }

    pub(crate) fn duration(
        &mut self,
        path: &str,
        d: &Option<Duration>,
    ) -> Option<std::time::Duration> {
        let d = d.as_ref()?;
        match d.parse() {
            Ok(parsed) => Some(parsed),
            Err(e) => {
                self.add(path, e);
                None
            }
        }
    }

    /// A DNS-1123 label: what Kubernetes accepts as a Service or rule name.
    pub(crate) fn dns_label(&mut self, path: &str, value: &str) {
        if !is_dns_label(value) {
            self.add(
                path,
                format!(
                    "{value:?} is not a valid name: use at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit"
                ),
            );
        }
    }

    /// A regex the proxies' RE2 takes, within the program size they accept.
    pub(crate) fn regex(&mut self, path: &str, pattern: &str) {
        let limit = self.settings.max_regex_program_size;
        if let Some(problem) = crate::regex::problem(pattern, limit) {
            self.add_kind(path, problem, FieldProblem::Regex);
        }
    }

    pub(crate) fn port(&mut self, path: &str, port: i32) {
        if !(1..=65535).contains(&port) {
            self.add(
                path,
                format!("{port} is not a port: use a number from 1 to 65535"),
            );
        }
    }

    /// Ports must be valid and listed once.
    pub(crate) fn port_list(&mut self, path: &str, ports: &[i32]) {
        let mut seen = BTreeSet::new();
        for (i, &p) in ports.iter().enumerate() {
            self.port(&format!("{path}[{i}]"), p);
            if !seen.insert(p) {
                self.add(
                    format!("{path}[{i}]"),
                    format!("port {p} is listed twice; remove the duplicate"),
                );
            }
        }
    }

    pub(crate) fn percent(&mut self, path: &str, value: i32) {
        if !(0..=100).contains(&value) {
            self.add(
                path,
                format!("{value} is not a percentage: use a number from 0 to 100"),
            );
        }
    }

    pub(crate) fn http_header_name(&mut self, path: &str, name: &str) {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            self.add(path, format!("{name:?} is not a valid HTTP header name: use letters, digits and '-', e.g. x-user-group"));
        }
    }

    pub(crate) fn label_key(&mut self, path: &str, key: &str) {
        let (prefix, name) = match key.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, key),
        };
        let prefix_ok = prefix
            .is_none_or(|p| !p.is_empty() && p.len() <= 253 && p.split('.').all(is_dns_label));
        if !prefix_ok || !is_label_value(name) || name.is_empty() {
            self.add(
                path,
                format!("{key:?} is not a valid label key: use an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.'"),
            );
        }
    }

    pub(crate) fn label_value(&mut self, path: &str, value: &str) {
        if !is_label_value(value) {
            self.add(
                path,
                format!("{value:?} is not a valid label value: use at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"),
            );
        }
    }

    pub(crate) fn label_selector(&mut self, path: &str, selector: &LabelSelector) {
        for (k, v) in selector.match_labels.iter().flatten() {
            self.label_key(&format!("{path}.matchLabels"), k);
            self.label_value(&format!("{path}.matchLabels.{k}"), v);
        }
        for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
            let p = format!("{path}.matchExpressions[{i}]");
            self.label_key(&format!("{p}.key"), &expr.key);
            let values = expr.values.as_deref().unwrap_or_default();
            match expr.operator.as_str() {
                "In" | "NotIn" => {
                    if values.is_empty() {
                        self.add(
                            format!("{p}.values"),
                            format!(
                                "operator {} needs at least one value; list the values to match",
                                expr.operator
                            ),
                        );
                    }
                    for (j, v) in values.iter().enumerate() {
                        self.label_value(&format!("{p}.values[{j}]"), v);
                    }
                }
                "Exists" | "DoesNotExist" => {
                    if !values.is_empty() {
                        self.add(
                            format!("{p}.values"),
                            format!("operator {} takes no values; remove them", expr.operator),
                        );
                    }
                }
                other => self.add(
                    format!("{p}.operator"),
                    format!("{other:?} is not an operator: use In, NotIn, Exists or DoesNotExist"),
                ),
            }
        }
    }
}

pub(crate) fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return true;
    }
    b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("reviews-v2"));
        assert!(!is_dns_label("Reviews"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(&"a".repeat(64)));
    }

    #[test]
    fn label_keys_and_values() {
        let mut p = Problems::default();
        p.label_key("k", "app.kubernetes.io/name");
        p.label_key("k", "version");
        p.label_value("v", "v2.1_beta");
        p.label_value("v", "");
        assert!(p.finish().is_ok());

        let mut p = Problems::default();
        p.label_key("a", "/name");
        p.label_key("b", "UPPER_prefix.io/x");
        p.label_value("c", "-bad");
        let errs = p.finish().expect_err("three problems").0;
        assert_eq!(
            errs.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn errors_display_every_problem() {
        let mut p = Problems::default();
        p.add("spec.a", "first");
        p.add("spec.b", "second");
        let e = p.finish().expect_err("two problems");
        assert_eq!(e.to_string(), "spec.a: first; spec.b: second");
    }
}
