//! Everything wrong with the objects the mesh reads, in one list: what `compute` prints and
//! local mode logs as it appears and clears.

use std::fmt;

use remora_api::{FieldError, FieldProblem};

use super::Mesh;
use crate::{input::ObjectKey, routing::Problem};

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
    /// The field at fault, e.g. `spec.http[0].backendRefs[1]`, when there is one.
    pub field: Option<String>,
    /// What sort of problem it is.
    pub cause: Cause,
}

/// The sorts of [`ObjectProblem`], for tools that tell them apart (`remora analyze`'s rule
/// codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// A field validation refuses; the last valid spec stays in effect.
    Field(FieldProblem),
    /// A reference that resolves to nothing: a Service, a port of one, a `ReferenceGrant`.
    Unresolved,
    /// Another route governs the Service port, or the rules do not fit its protocol.
    Conflicted,
    /// A subset that selects no ready endpoint.
    EmptySubset,
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
            let fields = state.problems.iter().map(field_problem);
            let resolved = self.route_problems(route).into_iter().map(route_problem);
            out.extend(fields.chain(resolved).map(|p| p.of(kind, &route.key)));
        }
        for (key, state) in &self.index.policies {
            let fields = state.problems.iter().map(field_problem);
            out.extend(fields.map(|p| p.of("SidecarPolicy", key)));
        }
        for (key, state) in &self.index.access {
            let fields = state.problems.iter().map(field_problem);
            out.extend(fields.map(|p| p.of("AccessPolicy", key)));
        }
        out.sort();
        out
    }
}

/// A problem not yet tied to its object.
struct Found {
    message: String,
    field: Option<String>,
    cause: Cause,
}

impl Found {
    fn of(self, kind: &'static str, key: &ObjectKey) -> ObjectProblem {
        ObjectProblem {
            kind,
            key: key.clone(),
            message: self.message,
            field: self.field,
            cause: self.cause,
        }
    }
}

fn field_problem(e: &FieldError) -> Found {
    Found {
        message: e.to_string(),
        field: Some(e.path.clone()),
        cause: Cause::Field(e.kind),
    }
}

fn route_problem(p: Problem) -> Found {
    let (field, cause) = match &p {
        Problem::BackendNotFound { path, .. }
        | Problem::RefNotPermitted { path, .. }
        | Problem::BackendPortNotFound { path, .. } => (Some(path.clone()), Cause::Unresolved),
        Problem::ParentPortNotFound { .. } => (Some("spec.parentRefs".into()), Cause::Unresolved),
        Problem::Conflicted { .. } => (Some("spec.parentRefs".into()), Cause::Conflicted),
        Problem::ProtocolMismatch { .. } => (None, Cause::Conflicted),
        Problem::SubsetEmpty { .. } => (None, Cause::EmptySubset),
    };
    Found {
        message: p.to_string(),
        field,
        cause,
    }
}
