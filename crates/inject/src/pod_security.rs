//! The Pod Security level a namespace enforces, and the checks of its container-level rules
//! on the containers the injection adds: a pod that the API server's Pod Security admission
//! would refuse for them is refused here first, with every field at fault (the policy's
//! extra containers by their path in the SidecarPolicy), rather than blamed on the pod's
//! owner. The traffic redirection's init container needs `NET_ADMIN` and `NET_RAW`, which
//! only `privileged` allows (README, "The sidecar in the traffic path"), so under `baseline`
//! or `restricted` it is always among them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, SecurityContext};

use crate::InjectError;

/// The namespace label Pod Security admission enforces.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";

/// A Pod Security Standards level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum PodSecurity {
    /// No rules (also what a namespace without the label gets here: the cluster's own
    /// default is not visible to the injector).
    #[default]
    Privileged,
    /// Known privilege escalations refused.
    Baseline,
    /// Hardened: non-root, no escalation, every capability dropped, a seccomp profile.
    Restricted,
}

impl PodSecurity {
    /// The level a namespace with `labels` enforces.
    pub fn enforced(labels: Option<&BTreeMap<String, String>>) -> PodSecurity {
        match labels
            .and_then(|l| l.get(ENFORCE_LABEL))
            .map(String::as_str)
        {
            Some("baseline") => PodSecurity::Baseline,
            Some("restricted") => PodSecurity::Restricted,
            _ => PodSecurity::Privileged,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            PodSecurity::Privileged => "privileged",
            PodSecurity::Baseline => "baseline",
            PodSecurity::Restricted => "restricted",
        }
    }
}

/// Capabilities the baseline level allows a container to add.
const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// SELinux types the baseline level allows.
const BASELINE_SELINUX_TYPES: [&str; 4] = [
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// Checks the `added` containers (each with where it comes from: its path in the
/// SidecarPolicy, or what the injection adds), as added to `pod`, against `level`; every
/// container that breaks a rule is reported with the first rule it breaks.
pub(crate) fn check<'a>(
    pod: &Pod,
    added: impl IntoIterator<Item = (String, &'a Container)>,
    level: PodSecurity,
) -> Result<(), InjectError> {
    if level == PodSecurity::Privileged {
        return Ok(());
    }
    let pod_context = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let broken: Vec<String> = added
        .into_iter()
        .filter_map(|(origin, c)| {
            let (path, rule) = baseline(c).or_else(|| {
                (level == PodSecurity::Restricted)
                    .then(|| restricted(c, pod_context))
                    .flatten()
            })?;
            Some(format!("{origin}.{path} ({rule})"))
        })
        .collect();
    if broken.is_empty() {
        return Ok(());
    }
    Err(InjectError::PodSecurity {
        level: level.as_str(),
        broken,
    })
}

/// A broken rule: the field's path below the container, and what the level asks.
type Broken = (String, &'static str);

fn baseline(c: &Container) -> Option<Broken> {
    let sc = c.security_context.as_ref();
    if sc.and_then(|s| s.privileged) == Some(true) {
        return Some((
            "securityContext.privileged".into(),
            "no privileged containers",
        ));
    }
    let added = sc
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.add.as_ref());
    if let Some((j, _)) = added
        .into_iter()
        .flatten()
        .enumerate()
        .find(|(_, cap)| !BASELINE_CAPABILITIES.contains(&cap.trim_start_matches("CAP_")))
    {
        return Some((
            format!("securityContext.capabilities.add[{j}]"),
            "no capabilities beyond the baseline set",
        ));
    }
    if let Some((j, _)) = c
        .ports
        .iter()
        .flatten()
        .enumerate()
        .find(|(_, p)| p.host_port.is_some_and(|h| h != 0))
    {
        return Some((format!("ports[{j}].hostPort"), "no host ports"));
    }
    sc.and_then(baseline_context)
}

fn baseline_context(sc: &SecurityContext) -> Option<Broken> {
    if let Some(se) = &sc.se_linux_options {
        let typed = se.type_.as_deref().unwrap_or_default();
        if !typed.is_empty() && !BASELINE_SELINUX_TYPES.contains(&typed) {
            return Some((
                "securityContext.seLinuxOptions.type".into(),
                "no custom SELinux type",
            ));
        }
        if se.user.is_some() || se.role.is_some() {
            return Some((
                "securityContext.seLinuxOptions".into(),
                "no custom SELinux user or role",
            ));
        }
    }
    if sc.proc_mount.as_deref().is_some_and(|m| m != "Default") {
        return Some((
            "securityContext.procMount".into(),
            "the default /proc mount",
        ));
    }
    if sc
        .seccomp_profile
        .as_ref()
        .is_some_and(|p| p.type_ == "Unconfined")
    {
        return Some((
            "securityContext.seccompProfile.type".into(),
            "no Unconfined seccomp profile",
        ));
    }
    if sc
        .app_armor_profile
        .as_ref()
        .is_some_and(|p| p.type_ == "Unconfined")
    {
        return Some((
            "securityContext.appArmorProfile.type".into(),
            "no Unconfined AppArmor profile",
        ));
    }
    if sc.windows_options.as_ref().and_then(|w| w.host_process) == Some(true) {
        return Some((
            "securityContext.windowsOptions.hostProcess".into(),
            "no host processes",
        ));
    }
    None
}

/// The restricted level's container rules; the pod's own security context counts where the
/// container sets nothing (non-root, seccomp).
fn restricted(c: &Container, pod: Option<&PodSecurityContext>) -> Option<Broken> {
    let sc = c.security_context.as_ref();
    if sc.and_then(|s| s.allow_privilege_escalation) != Some(false) {
        return Some((
            "securityContext.allowPrivilegeEscalation".into(),
            "allowPrivilegeEscalation set to false",
        ));
    }
    let non_root = sc
        .and_then(|s| s.run_as_non_root)
        .or_else(|| pod.and_then(|p| p.run_as_non_root));
    if non_root != Some(true) {
        return Some((
            "securityContext.runAsNonRoot".into(),
            "runAsNonRoot set to true",
        ));
    }
    let user = sc
        .and_then(|s| s.run_as_user)
        .or_else(|| pod.and_then(|p| p.run_as_user));
    if user == Some(0) {
        return Some((
            "securityContext.runAsUser".into(),
            "a user other than root (0)",
        ));
    }
    let seccomp = sc
        .and_then(|s| s.seccomp_profile.as_ref())
        .or_else(|| pod.and_then(|p| p.seccomp_profile.as_ref()))
        .map(|p| p.type_.as_str());
    if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
        return Some((
            "securityContext.seccompProfile.type".into(),
            "a seccomp profile of RuntimeDefault or Localhost",
        ));
    }
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    let drops_all = caps
        .and_then(|c| c.drop.as_ref())
        .is_some_and(|d| d.iter().any(|cap| cap == "ALL"));
    if !drops_all {
        return Some((
            "securityContext.capabilities.drop".into(),
            "every capability dropped (ALL)",
        ));
    }
    let added = caps.and_then(|c| c.add.as_ref());
    if let Some((j, _)) = added
        .into_iter()
        .flatten()
        .enumerate()
        .find(|(_, cap)| cap.trim_start_matches("CAP_") != "NET_BIND_SERVICE")
    {
        return Some((
            format!("securityContext.capabilities.add[{j}]"),
            "no capability added but NET_BIND_SERVICE",
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(security: serde_json::Value) -> Container {
        serde_json::from_value(serde_json::json!({
            "name": "shipper", "image": "fluent/fluent-bit:3", "securityContext": security,
        }))
        .expect("a container")
    }

    fn hardened() -> serde_json::Value {
        serde_json::json!({
            "allowPrivilegeEscalation": false,
            "runAsNonRoot": true,
            "seccompProfile": {"type": "RuntimeDefault"},
            "capabilities": {"drop": ["ALL"]},
        })
    }

    /// What `check` says of the policy's extra containers: a hardened one, then `c`.
    fn field(c: Container, level: PodSecurity) -> Option<String> {
        let extra = [container_ok(), c];
        let added = extra
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("spec.extraContainers[{i}]"), c));
        match check(&Pod::default(), added, level) {
            Ok(()) => None,
            Err(InjectError::PodSecurity { mut broken, .. }) => {
                assert_eq!(broken.len(), 1, "{broken:?}");
                let first = broken.remove(0);
                Some(first.split(" (").next().unwrap_or_default().to_owned())
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// A first extra container that every level accepts, so the index in the field counts.
    fn container_ok() -> Container {
        container(hardened())
    }

    #[test]
    fn the_level_is_the_namespaces_enforce_label() {
        let labels = |v: &str| BTreeMap::from([(ENFORCE_LABEL.to_owned(), v.to_owned())]);
        assert_eq!(PodSecurity::enforced(None), PodSecurity::Privileged);
        assert_eq!(
            PodSecurity::enforced(Some(&labels("baseline"))),
            PodSecurity::Baseline
        );
        assert_eq!(
            PodSecurity::enforced(Some(&labels("restricted"))),
            PodSecurity::Restricted
        );
        assert_eq!(
            PodSecurity::enforced(Some(&labels("privileged"))),
            PodSecurity::Privileged
        );
    }

    #[test]
    fn baseline_refuses_privilege_and_names_the_policys_field() {
        let privileged = container(serde_json::json!({"privileged": true}));
        assert_eq!(field(privileged.clone(), PodSecurity::Privileged), None);
        assert_eq!(
            field(privileged, PodSecurity::Baseline).as_deref(),
            Some("spec.extraContainers[1].securityContext.privileged")
        );
        let caps = container(serde_json::json!({"capabilities": {"add": ["CHOWN", "NET_ADMIN"]}}));
        assert_eq!(
            field(caps, PodSecurity::Baseline).as_deref(),
            Some("spec.extraContainers[1].securityContext.capabilities.add[1]")
        );
        let mut host_port = container(serde_json::json!({}));
        host_port.ports = Some(vec![
            serde_json::from_value(serde_json::json!({"containerPort": 2020, "hostPort": 2020}))
                .expect("a port"),
        ]);
        assert_eq!(
            field(host_port, PodSecurity::Baseline).as_deref(),
            Some("spec.extraContainers[1].ports[0].hostPort")
        );
        let unconfined = container(serde_json::json!({"seccompProfile": {"type": "Unconfined"}}));
        assert_eq!(
            field(unconfined, PodSecurity::Baseline).as_deref(),
            Some("spec.extraContainers[1].securityContext.seccompProfile.type")
        );
        // A plain container passes baseline, not restricted.
        let plain = container(serde_json::json!({}));
        assert_eq!(field(plain.clone(), PodSecurity::Baseline), None);
        assert_eq!(
            field(plain, PodSecurity::Restricted).as_deref(),
            Some("spec.extraContainers[1].securityContext.allowPrivilegeEscalation")
        );
    }

    #[test]
    fn restricted_asks_for_a_hardened_container_and_takes_the_pods_context_into_account() {
        assert_eq!(field(container(hardened()), PodSecurity::Restricted), None);
        let mut root = hardened();
        root["runAsUser"] = 0.into();
        assert_eq!(
            field(container(root), PodSecurity::Restricted).as_deref(),
            Some("spec.extraContainers[1].securityContext.runAsUser")
        );
        let mut adds = hardened();
        adds["capabilities"]["add"] = serde_json::json!(["NET_BIND_SERVICE", "SYS_TIME"]);
        assert_eq!(
            field(container(adds), PodSecurity::Restricted).as_deref(),
            Some("spec.extraContainers[1].securityContext.capabilities.add[1]")
        );
        // Non-root and seccomp may come from the pod.
        let mut bare = hardened();
        let sc = bare.as_object_mut().expect("an object");
        sc.remove("runAsNonRoot");
        sc.remove("seccompProfile");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "spec": {
                "containers": [],
                "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            }
        }))
        .expect("a pod");
        let extra = container(bare.clone());
        let added = || [("spec.extraContainers[0]".to_owned(), &extra)];
        assert!(check(&pod, added(), PodSecurity::Restricted).is_ok());
        assert!(check(&Pod::default(), added(), PodSecurity::Restricted).is_err());
    }
}
