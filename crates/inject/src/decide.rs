//! Whether a pod gets a sidecar, and if not, why (the webhook logs and counts the reason).

use std::{collections::BTreeMap, fmt};

use k8s_openapi::api::core::v1::Pod;
use remora_api::{SidecarPolicy, sidecar_policy::PROXY_CONTAINER};

use crate::{INJECT_ANNOTATION, is_injected};

/// What the injector needs to know about the mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Where the control plane runs; its own pods never get a sidecar, so a broken proxy
    /// image can never take down the component that would fix it.
    pub control_plane_namespace: String,
    /// Namespaces opt in with this label set to `enabled` (the model's `MeshSettings::mesh_label`).
    pub mesh_label: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            control_plane_namespace: "remora-system".into(),
            mesh_label: "remora.dev/mesh".into(),
        }
    }
}

/// The verdict for one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The pod gets the sidecar.
    Inject,
    /// The pod is admitted as it is, for this reason.
    Skip(SkipReason),
}

/// Why a pod gets no sidecar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The pod runs in the control plane's own namespace.
    ControlPlaneNamespace {
        /// The pod's namespace.
        namespace: String,
    },
    /// The pod was injected already (its proxy container and version annotation).
    AlreadyInjected,
    /// The pod's namespace does not carry the mesh label set to `enabled`.
    NamespaceNotInMesh {
        /// The pod's namespace.
        namespace: String,
        /// The label that opts a namespace in.
        label: String,
    },
    /// The pod's inject annotation is `"false"`.
    OptedOut,
    /// The pod's inject annotation is neither `"true"` nor `"false"`.
    UnknownOptOutValue {
        /// The annotation's value.
        value: String,
    },
    /// The pod uses the host's network.
    HostNetwork,
    /// No SidecarPolicy selects the pod.
    NoPolicy,
}

impl SkipReason {
    /// A short, fixed label for metrics (bounded cardinality, unlike the message).
    pub fn metric_label(&self) -> &'static str {
        match self {
            SkipReason::ControlPlaneNamespace { .. } => "control_plane_namespace",
            SkipReason::AlreadyInjected => "already_injected",
            SkipReason::NamespaceNotInMesh { .. } => "namespace_not_in_mesh",
            SkipReason::OptedOut => "opted_out",
            SkipReason::UnknownOptOutValue { .. } => "unknown_annotation_value",
            SkipReason::HostNetwork => "host_network",
            SkipReason::NoPolicy => "no_policy",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::ControlPlaneNamespace { namespace } => write!(
                f,
                "namespace {namespace:?} runs the control plane, which never gets a sidecar"
            ),
            SkipReason::AlreadyInjected => {
                write!(f, "the pod already has a {PROXY_CONTAINER:?} container")
            }
            SkipReason::NamespaceNotInMesh { namespace, label } => write!(
                f,
                "namespace {namespace:?} has not opted in: label it {label}=enabled"
            ),
            SkipReason::OptedOut => write!(f, "the pod opted out with {INJECT_ANNOTATION}=false"),
            SkipReason::UnknownOptOutValue { value } => write!(
                f,
                "annotation {INJECT_ANNOTATION} is {value:?}; write \"false\" to opt out or \"true\" to \
                 inject (no sidecar until it is one of them)"
            ),
            SkipReason::HostNetwork => write!(
                f,
                "the pod uses the host's network, where the proxy's ports would clash with every \
                 other such pod on the node"
            ),
            SkipReason::NoPolicy => write!(f, "no SidecarPolicy selects the pod"),
        }
    }
}

/// Decides for a pod created in `namespace` (taken from the admission request: a pod's own
/// `metadata.namespace` may still be empty there) whose namespace carries `namespace_labels`,
/// given the policy that governs it, if any (`remora_model::policy::resolve`).
///
/// The first reason that applies wins, cheapest and most fundamental first.
pub fn decide(
    settings: &Settings,
    pod: &Pod,
    namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
    policy: Option<&SidecarPolicy>,
) -> Decision {
    let skip = |reason| Decision::Skip(reason);
    if namespace == settings.control_plane_namespace {
        return skip(SkipReason::ControlPlaneNamespace {
            namespace: namespace.into(),
        });
    }
    if is_injected(pod) {
        return skip(SkipReason::AlreadyInjected);
    }
    if namespace_labels
        .get(&settings.mesh_label)
        .is_none_or(|v| v != "enabled")
    {
        return skip(SkipReason::NamespaceNotInMesh {
            namespace: namespace.into(),
            label: settings.mesh_label.clone(),
        });
    }
    let annotation = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INJECT_ANNOTATION));
    match annotation.map(String::as_str) {
        None | Some("true") => {}
        Some("false") => return skip(SkipReason::OptedOut),
        Some(other) => {
            return skip(SkipReason::UnknownOptOutValue {
                value: other.into(),
            });
        }
    }
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
    {
        return skip(SkipReason::HostNetwork);
    }
    if policy.is_none() {
        return skip(SkipReason::NoPolicy);
    }
    Decision::Inject
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::tests::{pod, policy};

    fn labels(enabled: bool) -> BTreeMap<String, String> {
        let mut l = BTreeMap::from([("team".to_string(), "a".to_string())]);
        if enabled {
            l.insert("remora.dev/mesh".into(), "enabled".into());
        }
        l
    }

    /// One pod's situation; the default injects.
    struct Case {
        namespace: &'static str,
        in_mesh: bool,
        pod: Pod,
        policy: bool,
    }

    fn base() -> Case {
        Case {
            namespace: "shop",
            in_mesh: true,
            pod: pod(),
            policy: true,
        }
    }

    impl Case {
        fn with(self, pod: Pod) -> Case {
            Case { pod, ..self }
        }
        fn out_of_mesh(self) -> Case {
            Case {
                in_mesh: false,
                ..self
            }
        }
    }

    fn run(case: &Case) -> Decision {
        let p = policy();
        decide(
            &Settings::default(),
            &case.pod,
            case.namespace,
            &labels(case.in_mesh),
            case.policy.then_some(&p),
        )
    }

    fn annotated(value: &str) -> Pod {
        let mut p = pod();
        p.metadata.annotations = Some(BTreeMap::from([(
            INJECT_ANNOTATION.to_string(),
            value.to_string(),
        )]));
        p
    }

    /// A pod with a container named like the proxy; `injected()` adds the injection's mark.
    fn named_like_the_proxy() -> Pod {
        let mut p = pod();
        let spec = p.spec.as_mut().expect("spec");
        spec.init_containers = Some(vec![
            serde_json::from_value(json!({"name": "remora-proxy", "restartPolicy": "Always"}))
                .expect("container"),
        ]);
        p
    }

    fn injected() -> Pod {
        let mut p = named_like_the_proxy();
        p.metadata.annotations = Some(BTreeMap::from([(
            crate::VERSION_ANNOTATION.to_string(),
            "1.40.0".to_string(),
        )]));
        p
    }

    #[test]
    fn matrix() {
        let skip = |r| Decision::Skip(r);
        let not_in_mesh = || {
            skip(SkipReason::NamespaceNotInMesh {
                namespace: "shop".into(),
                label: "remora.dev/mesh".into(),
            })
        };
        let typo = skip(SkipReason::UnknownOptOutValue {
            value: "False".into(),
        });
        let control_plane = skip(SkipReason::ControlPlaneNamespace {
            namespace: "remora-system".into(),
        });
        let mut control_plane_case = base();
        control_plane_case.namespace = "remora-system";
        let mut no_policy = base();
        no_policy.policy = false;
        let mut host_network = pod();
        host_network.spec.as_mut().expect("spec").host_network = Some(true);
        let mut injected_then_opted_out = injected();
        let annotations = injected_then_opted_out
            .metadata
            .annotations
            .get_or_insert_default();
        annotations.insert(INJECT_ANNOTATION.into(), "false".into());
        let cases = [
            ("plain pod", base(), Decision::Inject),
            (
                "explicit true",
                base().with(annotated("true")),
                Decision::Inject,
            ),
            ("namespace not in mesh", base().out_of_mesh(), not_in_mesh()),
            (
                "pod alone",
                base().with(annotated("true")).out_of_mesh(),
                not_in_mesh(),
            ),
            (
                "opted out",
                base().with(annotated("false")),
                skip(SkipReason::OptedOut),
            ),
            ("typo", base().with(annotated("False")), typo),
            ("control plane", control_plane_case, control_plane),
            (
                "injected",
                base().with(injected()),
                skip(SkipReason::AlreadyInjected),
            ),
            // Not a way to opt out: the clash refuses it (see patch).
            (
                "a container named like the proxy",
                base().with(named_like_the_proxy()),
                Decision::Inject,
            ),
            (
                "opted out since",
                base().with(injected_then_opted_out),
                skip(SkipReason::AlreadyInjected),
            ),
            ("no policy", no_policy, skip(SkipReason::NoPolicy)),
            (
                "host network",
                base().with(host_network),
                skip(SkipReason::HostNetwork),
            ),
        ];
        for (name, case, want) in cases {
            assert_eq!(run(&case), want, "{name}");
        }
    }

    #[test]
    fn label_must_say_enabled() {
        let mut l = labels(false);
        l.insert("remora.dev/mesh".into(), "disabled".into());
        let p = policy();
        let d = decide(&Settings::default(), &pod(), "shop", &l, Some(&p));
        assert!(matches!(
            d,
            Decision::Skip(SkipReason::NamespaceNotInMesh { .. })
        ));
    }

    #[test]
    fn reasons_read_well_and_count_by_kind() {
        let r = SkipReason::NamespaceNotInMesh {
            namespace: "shop".into(),
            label: "remora.dev/mesh".into(),
        };
        assert_eq!(
            r.to_string(),
            "namespace \"shop\" has not opted in: label it remora.dev/mesh=enabled"
        );
        assert_eq!(r.metric_label(), "namespace_not_in_mesh");
        assert_eq!(
            SkipReason::OptedOut.to_string(),
            "the pod opted out with sidecar.remora.dev/inject=false"
        );
    }
}
