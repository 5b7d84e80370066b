//! Policies that govern no pod, and meshed namespaces whose pods no policy governs, judged
//! on the pods the input holds: a folder of config alone (no Pod manifests) has none to
//! judge, so these rules stay silent for it.

use remora_model::{
    Mesh,
    input::{Object, ObjectKey, Pod},
};

use crate::{Finding, rules};

/// The findings, each with the kind and key of its object.
pub(crate) fn findings(mesh: &Mesh, objects: &[Object]) -> Vec<(&'static str, ObjectKey, Finding)> {
    let pods: Vec<&Pod> = objects
        .iter()
        .filter_map(|o| match o {
            Object::Pod(p) => Some(p),
            _ => None,
        })
        .collect();
    if pods.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for object in objects {
        match object {
            Object::SidecarPolicy(p) => {
                let key = object.key();
                // An invalid policy is reported as such; it governs nothing until fixed.
                if mesh.policy_spec(&key).is_some() && governed(mesh, &pods, &key) == 0 {
                    out.push((
                        "SidecarPolicy",
                        key,
                        selects_nothing(p.spec.selector.is_some(), pods.len()),
                    ));
                }
            }
            Object::Namespace(ns) if mesh.namespace_in_mesh(&ns.name) => {
                let here: Vec<&&Pod> = pods.iter().filter(|p| p.namespace == ns.name).collect();
                let ungoverned = here
                    .iter()
                    .filter(|p| mesh.policy_for(&p.namespace, &p.labels).is_none())
                    .count();
                if ungoverned > 0 {
                    let f = no_policy(&ns.name, ungoverned, here.len());
                    out.push(("Namespace", ObjectKey::new("", &ns.name), f));
                }
            }
            _ => {}
        }
    }
    out
}

fn governed(mesh: &Mesh, pods: &[&Pod], policy: &ObjectKey) -> usize {
    pods.iter()
        .filter(|p| mesh.policy_for(&p.namespace, &p.labels) == Some(policy))
        .count()
}

fn selects_nothing(has_selector: bool, pods: usize) -> Finding {
    let why = if has_selector {
        "its spec.selector matches none of them, or an older policy governs them first"
    } else {
        "none is in its namespaces, or an older policy governs them first"
    };
    let mut f = Finding::new(
        rules::SELECTS_NOTHING,
        format!("governs none of the {pods} pods known: {why}"),
    );
    f.field = has_selector.then(|| "spec.selector".into());
    f
}

fn no_policy(namespace: &str, ungoverned: usize, pods: usize) -> Finding {
    Finding::new(
        rules::NO_POLICY,
        format!(
            "{ungoverned} of the {pods} pods in {namespace} are in the mesh but no \
             SidecarPolicy governs them, so they get the mesh's defaults: add a policy in \
             {namespace}, or widen a root policy's namespaceSelector"
        ),
    )
}
