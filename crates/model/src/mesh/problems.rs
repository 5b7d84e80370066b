//! Everything wrong with the objects the mesh reads, in one list: what `compute` prints and
//! local mode logs as it appears and clears.

use std::fmt;

use super::Mesh;
use crate::input::ObjectKey;

/// One thing wrong with one object: an invalid field (the last valid spec stays in effect),
/// a conflict, or a reference that resolves to nothing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectProblem {
    /// The object's kind, e.g. `TrafficRoute`.
    pub kind: &'static str,
    /// The object.
    pub key: ObjectKey,
    /// What is wrong, with the field when there is one.
    pub message: String,
}

impl fmt::Display for ObjectProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.kind, self.key, self.message)
    }
}

impl Mesh {
    /// Every problem of every route, sidecar policy and access policy, by kind then object.
    pub fn problems(&self) -> Vec<ObjectProblem> {
        let mut out = Vec::new();
        for (route, state) in &self.index.routes {
            let kind = route.kind.group_kind().1;
            let messages = state.problems.iter().map(ToString::to_string).chain(
                self.route_problems(route)
                    .into_iter()
                    .map(|p| p.to_string()),
            );
            out.extend(messages.map(|message| problem(kind, &route.key, message)));
        }
        for (key, state) in &self.index.policies {
            let messages = state.problems.iter().map(ToString::to_string);
            out.extend(messages.map(|message| problem("SidecarPolicy", key, message)));
        }
        for (key, state) in &self.index.access {
            let messages = state.problems.iter().map(ToString::to_string);
            out.extend(messages.map(|message| problem("AccessPolicy", key, message)));
        }
        out.sort();
        out
    }
}

fn problem(kind: &'static str, key: &ObjectKey, message: String) -> ObjectProblem {
    ObjectProblem {
        kind,
        key: key.clone(),
        message,
    }
}
