//! The init container that sends the pod's TCP traffic through the proxy: `remora
//! init-network` from the control plane's own image, with the policy's interception as flags.
//!
//! It runs to completion before anything else in the pod, and a rerun (a restarted pod)
//! replaces the whole nat table, so it needs nothing from an earlier run. Its root filesystem
//! is read-only: the nft backend of iptables, which `init-network` picks in a fresh pod,
//! writes no lock file (the legacy backend's `/run/xtables.lock` would need a writable `/run`).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Capabilities, Container, ResourceRequirements, SecurityContext},
    apimachinery::pkg::api::resource::Quantity,
};
use remora_api::sidecar_policy::{Interception, PROXY_GID, PROXY_UID};

use crate::Injection;

/// The name of the init container that programs the pod's traffic redirection.
pub const INIT_CONTAINER: &str = "remora-init";

/// The init container, from the policy's interception.
pub(crate) fn init_container(injection: &Injection) -> Container {
    Container {
        name: INIT_CONTAINER.into(),
        image: Some(injection.control_plane.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        // The image's entrypoint is the `remora` binary.
        args: Some(args(&injection.policy.spec.proxy.interception)),
        resources: Some(resources()),
        security_context: Some(security_context()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    }
}

/// `init-network` with the proxy's user and each non-empty list of `interception` as one
/// comma-separated flag.
fn args(interception: &Interception) -> Vec<String> {
    let lists = [
        ("--inbound-ports", join(&interception.inbound_ports)),
        (
            "--exclude-inbound-ports",
            join(&interception.exclude_inbound_ports),
        ),
        (
            "--exclude-outbound-ports",
            join(&interception.exclude_outbound_ports),
        ),
        (
            "--exclude-outbound-cidrs",
            interception.exclude_outbound_cidrs.join(","),
        ),
    ];
    let mut args = vec![
        "init-network".to_string(),
        "--proxy-uid".into(),
        PROXY_UID.to_string(),
        "--proxy-gid".into(),
        PROXY_GID.to_string(),
    ];
    for (flag, value) in lists {
        if !value.is_empty() {
            args.extend([flag.to_string(), value]);
        }
    }
    args
}

fn join(ports: &[i32]) -> String {
    let ports: Vec<String> = ports.iter().map(i32::to_string).collect();
    ports.join(",")
}

// A few iptables commands: small enough that the pod's effective requests (which count the
// largest init container) do not grow for it.
fn resources() -> ResourceRequirements {
    let amounts = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ])
    };
    ResourceRequirements {
        requests: Some(amounts("10m", "16Mi")),
        limits: Some(amounts("100m", "64Mi")),
        ..ResourceRequirements::default()
    }
}

// iptables needs root and, in the pod's network namespace, NET_ADMIN and NET_RAW: only those
// two are added back. Set on the container, so a pod-level runAsNonRoot or runAsUser does not
// apply to it.
fn security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
            drop: Some(vec!["ALL".into()]),
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(false),
        run_as_user: Some(0),
        ..SecurityContext::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Layout, bootstrap::tests::control_plane, tests::policy};

    fn flags(interception: &Interception) -> Vec<String> {
        args(interception)
    }

    const USER: [&str; 5] = ["init-network", "--proxy-uid", "1337", "--proxy-gid", "1337"];

    #[test]
    fn a_default_interception_gives_only_the_proxys_user() {
        assert_eq!(flags(&Interception::default()), USER);
    }

    #[test]
    fn each_interception_setting_becomes_one_comma_separated_flag() {
        let cases = [
            (
                Interception {
                    inbound_ports: vec![8080, 9090],
                    ..Interception::default()
                },
                vec!["--inbound-ports", "8080,9090"],
            ),
            (
                Interception {
                    exclude_inbound_ports: vec![22],
                    ..Interception::default()
                },
                vec!["--exclude-inbound-ports", "22"],
            ),
            (
                Interception {
                    exclude_outbound_ports: vec![5432, 3306],
                    ..Interception::default()
                },
                vec!["--exclude-outbound-ports", "5432,3306"],
            ),
            (
                Interception {
                    exclude_outbound_cidrs: vec!["10.96.0.0/12".into(), "fd00::/8".into()],
                    ..Interception::default()
                },
                vec!["--exclude-outbound-cidrs", "10.96.0.0/12,fd00::/8"],
            ),
        ];
        for (interception, want) in cases {
            assert_eq!(flags(&interception)[..5], USER);
            assert_eq!(flags(&interception)[5..], want, "{interception:?}");
        }
    }

    #[test]
    fn it_runs_the_control_planes_image_as_root_with_only_two_capabilities() {
        let policy = policy();
        let cp = control_plane();
        let injection = Injection {
            policy: &policy,
            version: "1.40.0",
            revision: "0123456789",
            layout: Layout::Native,
            control_plane: &cp,
            pod_security: crate::PodSecurity::Privileged,
        };
        let init = init_container(&injection);
        assert_eq!(init.name, "remora-init");
        assert_eq!(
            init.image.as_deref(),
            Some("ghcr.io/remora-mesh/remora:0.1.0")
        );
        assert_eq!(init.command, None, "the image's entrypoint is remora");
        assert_eq!(init.args.as_deref(), Some(&USER.map(String::from)[..]));
        let sc = init.security_context.expect("securityContext");
        let caps = sc.capabilities.expect("capabilities");
        assert_eq!(caps.add, Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]));
        assert_eq!(caps.drop, Some(vec!["ALL".into()]));
        assert_eq!((sc.run_as_user, sc.run_as_non_root), (Some(0), Some(false)));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.privileged, None);
        let resources = init.resources.expect("resources");
        assert!(resources.requests.is_some() && resources.limits.is_some());
    }
}
