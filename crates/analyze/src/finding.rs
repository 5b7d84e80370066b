//! What `remora analyze` reports: one finding per problem, under its rule, where it is.

use std::fmt;

use serde::Serialize;

use crate::rules::{Rule, Severity};

/// One problem, under the rule it breaks.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// The file the object or document was read from (a folder's manifests only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// 1-based position of the document in `file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    /// The object's kind, e.g. `TrafficRoute` (none for a document that could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// `namespace/name` of the object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The rule's code, e.g. `REM003`.
    pub code: &'static str,
    /// The rule's name, e.g. `regex-refused`.
    pub rule: &'static str,
    /// Error or warning.
    pub severity: Severity,
    /// The field at fault, e.g. `spec.http[0].matches[0].path.value`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Finding {
    /// A finding of `rule` saying `message`, not yet placed.
    pub(crate) fn new(rule: Rule, message: String) -> Finding {
        Finding {
            file: None,
            document: None,
            kind: None,
            object: None,
            code: rule.code,
            rule: rule.name,
            severity: rule.severity,
            field: None,
            message,
        }
    }
}

/// `file#document kind namespace/name: severity CODE name: message`, the place left out
/// where it is not known.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut place = Vec::new();
        if let Some(file) = &self.file {
            place.push(match self.document {
                Some(d) => format!("{file}#{d}"),
                None => file.clone(),
            });
        }
        if let (Some(kind), Some(object)) = (self.kind, &self.object) {
            place.push(format!("{kind} {object}"));
        }
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if !place.is_empty() {
            write!(f, "{}: ", place.join(" "))?;
        }
        write!(
            f,
            "{severity} {} {}: {}",
            self.code, self.rule, self.message
        )
    }
}
