//! `remora analyze`: every problem in a mesh's manifests, each under a rule code, with where
//! it is. It runs the same validation and model as the control plane, so what it reports is
//! what the cluster would report (or a proxy would NACK), before anything is applied. Pure:
//! objects in, findings out; the command reads the folder or the cluster.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod coverage;
mod finding;
pub mod rules;
mod shadow;
mod suppress;

use std::collections::HashMap;

use remora_api::{FieldProblem, ValidationSettings};
use remora_inputs::{Origin, folder::Problem};
use remora_model::{
    Cause, Mesh,
    input::{Event, MeshSettings, Object, ObjectKey},
};

pub use finding::Finding;
pub use rules::{RULES, Rule, Severity};
pub use suppress::IGNORE_ANNOTATION;

/// What to analyze.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The objects, as a folder or the cluster holds them.
    pub objects: &'a [Object],
    /// Where each object was read, by the same index (empty for a cluster's objects).
    pub origins: &'a [Origin],
    /// The documents that could not be read at all.
    pub unreadable: &'a [Problem],
    /// The regex limit the proxies enforce.
    pub validation: ValidationSettings,
}

/// Every finding, in file then object order, less those an object's
/// [`IGNORE_ANNOTATION`] suppresses.
pub fn analyze(input: &Input<'_>) -> Vec<Finding> {
    let mut mesh = Mesh::new(MeshSettings {
        validation: input.validation,
        ..MeshSettings::default()
    });
    mesh.apply(input.objects.iter().cloned().map(Event::Upsert));
    let places = Places::new(input);
    let mut found: Vec<Finding> = input.unreadable.iter().map(unreadable).collect();
    for p in mesh.problems() {
        let mut f = Finding::new(rule_of(p.cause), p.message);
        f.field = p.field;
        found.extend(places.place(p.kind, &p.key, f));
    }
    for (i, object) in input.objects.iter().enumerate() {
        for w in remora_inputs::warnings(object) {
            let mut f = Finding::new(rules::SUSPICIOUS, w.to_string());
            f.field = Some(w.path);
            found.extend(places.place_at(i, f));
        }
        if let Object::TrafficRoute(route) = object {
            for (field, message) in shadow::shadowed_rules(&route.spec) {
                let mut f = Finding::new(rules::SHADOWED_RULE, format!("{field}: {message}"));
                f.field = Some(field);
                found.extend(places.place_at(i, f));
            }
        }
    }
    for (kind, key, f) in coverage::findings(&mesh, input.objects) {
        found.extend(places.place(kind, &key, f));
    }
    found.sort();
    found.dedup();
    found
}

/// The rule a model problem breaks.
fn rule_of(cause: Cause) -> Rule {
    match cause {
        Cause::Field(FieldProblem::Regex) => rules::REGEX_REFUSED,
        Cause::Field(_) => rules::INVALID_FIELD,
        Cause::Unresolved => rules::UNRESOLVED,
        Cause::Conflicted => rules::CONFLICT,
        Cause::EmptySubset => rules::EMPTY_SUBSET,
    }
}

/// A finding for an object the mesh cannot take at all (a cluster's object that does not
/// decode): `kind` `object` and why.
pub fn unusable(kind: &'static str, object: String, message: String) -> Finding {
    let mut f = Finding::new(rules::UNREADABLE, message);
    f.kind = Some(kind);
    f.object = Some(object);
    f
}

fn unreadable(p: &Problem) -> Finding {
    let mut f = Finding::new(rules::UNREADABLE, p.message.clone());
    f.file = Some(p.file.display().to_string());
    f.document = Some(p.document);
    f
}

/// Finds each object by kind and key: where it was read and what it suppresses.
struct Places<'a> {
    input: &'a Input<'a>,
    by_key: HashMap<(&'static str, ObjectKey), usize>,
}

impl<'a> Places<'a> {
    fn new(input: &'a Input<'a>) -> Places<'a> {
        let by_key = input
            .objects
            .iter()
            .enumerate()
            .map(|(i, o)| ((o.kind_name(), o.key()), i))
            .collect();
        Places { input, by_key }
    }

    /// `f` about the object `kind` `key`, placed, unless the object suppresses it.
    fn place(&self, kind: &'static str, key: &ObjectKey, mut f: Finding) -> Option<Finding> {
        match self.by_key.get(&(kind, key.clone())) {
            Some(&i) => self.place_at(i, f),
            None => {
                f.kind = Some(kind);
                f.object = Some(object_name(key));
                Some(f)
            }
        }
    }

    /// `f` about the `i`-th object, placed, unless the object suppresses it.
    fn place_at(&self, i: usize, mut f: Finding) -> Option<Finding> {
        let object = &self.input.objects[i];
        if suppress::ignores(object, &f) {
            return None;
        }
        f.kind = Some(object.kind_name());
        f.object = Some(object_name(&object.key()));
        if let Some(origin) = self.input.origins.get(i) {
            f.file = Some(origin.file.display().to_string());
            f.document = Some(origin.document);
        }
        Some(f)
    }
}

/// `namespace/name`, or the name alone of a cluster-scoped object.
fn object_name(key: &ObjectKey) -> String {
    if key.namespace.is_empty() {
        key.name.clone()
    } else {
        key.to_string()
    }
}
