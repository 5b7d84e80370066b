//! What in a pod keeps its sidecars from being added or from working: each found with the
//! field to change, so the pod's owner can fix it.

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use remora_api::sidecar_policy::{PROXY_UID, proxy_port_role};

use crate::InjectError;

/// Every check, in the order a pod's owner would meet them: the names of the `added`
/// containers, the proxy's ports, its user, the names of the `volumes` added.
pub(crate) fn check(pod: &Pod, added: &[&str], volumes: &[&str]) -> Result<(), InjectError> {
    if let Some(spec) = &pod.spec {
        check_containers(spec, added)?;
        check_users(spec)?;
    }
    check_volumes(pod, volumes)
}

/// The pod's init containers and containers, with the path of their list.
fn lists(spec: &PodSpec) -> [(&'static str, &[Container]); 2] {
    [
        (
            "spec.initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("spec.containers", spec.containers.as_slice()),
    ]
}

/// A name the injection adds would make the patched pod invalid; a port of the proxy would
/// keep it from starting (admin, readiness) or send the app's own traffic to the proxy
/// (capture ports).
fn check_containers(spec: &PodSpec, added: &[&str]) -> Result<(), InjectError> {
    for (list, containers) in lists(spec) {
        for (i, c) in containers.iter().enumerate() {
            if added.contains(&c.name.as_str()) {
                return Err(InjectError::NameTaken {
                    field: format!("{list}[{i}].name"),
                    name: c.name.clone(),
                });
            }
            for (j, p) in c.ports.iter().flatten().enumerate() {
                if let Some(role) = proxy_port_role(p.container_port) {
                    return Err(InjectError::PortTaken {
                        field: format!("{list}[{i}].ports[{j}].containerPort"),
                        port: p.container_port,
                        role,
                    });
                }
            }
        }
    }
    Ok(())
}

/// A container running as the proxy's UID (its own `runAsUser`, else the pod's) would have
/// its connections exempted from capture like the proxy's. The UID an image declares is not
/// known at admission; only what the spec says is checked.
fn check_users(spec: &PodSpec) -> Result<(), InjectError> {
    let proxy = i64::from(PROXY_UID);
    let pod_user = spec.security_context.as_ref().and_then(|s| s.run_as_user);
    for (list, containers) in lists(spec) {
        for (i, c) in containers.iter().enumerate() {
            let own = c.security_context.as_ref().and_then(|s| s.run_as_user);
            let field = match (own, pod_user) {
                (Some(uid), _) if uid == proxy => {
                    format!("{list}[{i}].securityContext.runAsUser")
                }
                (None, Some(uid)) if uid == proxy => "spec.securityContext.runAsUser".into(),
                _ => continue,
            };
            return Err(InjectError::ProxyUser { field });
        }
    }
    Ok(())
}

/// A volume the pod already has under the name of one the injection adds (the policy's, the
/// agent's): the pod's owner renames theirs (or the policy's), as for containers.
fn check_volumes(pod: &Pod, volumes: &[&str]) -> Result<(), InjectError> {
    let existing = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    for (i, v) in existing.into_iter().flatten().enumerate() {
        if volumes.contains(&v.name.as_str()) {
            return Err(InjectError::VolumeTaken {
                field: format!("spec.volumes[{i}].name"),
                name: v.name.clone(),
            });
        }
    }
    Ok(())
}
