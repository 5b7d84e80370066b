//! Fixtures, and the patch checked by applying it with an independent RFC 6902 implementation.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Container, Pod},
    apimachinery::pkg::util::intstr::IntOrString,
};
use remora_api::SidecarPolicy;
use remora_model::input::ObjectKey;
use remora_test_support::expand;
use serde_json::{Value, json};

use crate::{
    ControlPlane, Decision, InjectError, Injection, Layout, PodSecurity, Settings, SkipReason,
    bootstrap::tests::control_plane, decide, patch, pointer_token,
};

pub(crate) fn pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"generateName": "web-7d9f-", "labels": {"app": "web"}},
        "spec": {
            "serviceAccountName": "web",
            "containers": [{"name": "web", "image": "shop/web:3", "ports": [{"containerPort": 8080}]}],
        },
    }))
    .expect("pod")
}

pub(crate) fn policy() -> SidecarPolicy {
    serde_json::from_value(json!({
        "apiVersion": "remora.dev/v1alpha1",
        "kind": "SidecarPolicy",
        "metadata": {"name": "fleet-default", "namespace": "remora-system"},
        "spec": {
            "proxy": {
                "image": "envoyproxy/envoy",
                "version": "1.40.0",
                "logLevel": "debug",
                "concurrency": 4,
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
            },
            "extraContainers": [{"name": "log-shipper", "image": "fluent/fluent-bit:3"}],
        },
    }))
    .expect("policy")
}

fn inject(
    pod: &Pod,
    layout: Layout,
    cp: &ControlPlane,
) -> Result<Vec<crate::JsonPatchOp>, InjectError> {
    inject_with(pod, layout, &policy(), cp)
}

fn inject_with(
    pod: &Pod,
    layout: Layout,
    policy: &SidecarPolicy,
    cp: &ControlPlane,
) -> Result<Vec<crate::JsonPatchOp>, InjectError> {
    patch(
        pod,
        &Injection {
            policy,
            version: "1.39.2",
            revision: "0123456789",
            layout,
            control_plane: cp,
            pod_security: PodSecurity::Privileged,
        },
    )
}

/// Applies our operations to the pod's JSON with the `json-patch` crate.
fn apply(pod: &Pod, layout: Layout) -> Pod {
    apply_with(pod, layout, &policy())
}

fn apply_with(pod: &Pod, layout: Layout, policy: &SidecarPolicy) -> Pod {
    let ops = inject_with(pod, layout, policy, &control_plane()).expect("patch");
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::to_value(&ops).expect("ops")).expect("RFC 6902");
    let mut doc = serde_json::to_value(pod).expect("pod json");
    json_patch::patch(&mut doc, &patch).expect("applies");
    serde_json::from_value(doc).expect("still a pod")
}

/// The container `name` of `pod`, from either list.
fn container<'a>(pod: &'a Pod, name: &str) -> &'a Container {
    let s = spec(pod);
    s.init_containers
        .iter()
        .flatten()
        .chain(&s.containers)
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn names(list: &[Container]) -> Vec<&str> {
    list.iter().map(|c| c.name.as_str()).collect()
}

fn spec(pod: &Pod) -> &k8s_openapi::api::core::v1::PodSpec {
    pod.spec.as_ref().expect("spec")
}

#[test]
fn ops_serialize_as_rfc_6902() {
    let ops = inject(&pod(), Layout::Native, &control_plane()).expect("patch");
    let first = serde_json::to_value(&ops[0]).expect("op");
    assert_eq!(first["op"], "add");
    assert_eq!(first["path"], "/spec/initContainers");
}

#[test]
fn native_layout() {
    let mut before = pod();
    spec_mut(&mut before).init_containers = Some(vec![named("migrate")]);
    let after = apply(&before, Layout::Native);
    let init = spec(&after).init_containers.as_deref().expect("init");
    assert_eq!(
        names(init),
        ["remora-init", "remora-proxy", "log-shipper", "migrate"]
    );
    // The redirect runs to completion before the kubelet starts the native sidecars.
    assert_eq!(init[0].restart_policy, None);
    for sidecar in &init[1..3] {
        assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
    }
    assert_eq!(init[3].restart_policy, None);
    assert_eq!(spec(&after).containers, spec(&before).containers);

    let proxy = &init[1];
    assert_eq!(proxy.image.as_deref(), Some("envoyproxy/envoy:1.39.2"));
    assert!(proxy.startup_probe.is_some() && proxy.readiness_probe.is_some());
    assert_eq!(proxy.lifecycle, None);
    let args = proxy.args.as_deref().expect("args");
    assert_eq!(
        args[2..],
        [
            "--log-level",
            "debug",
            "--concurrency",
            "4",
            "--disable-hot-restart"
        ]
    );
    let resources = serde_json::to_value(&proxy.resources).expect("resources");
    assert_eq!(
        resources,
        json!({"requests": {"cpu": "100m", "memory": "64Mi"}})
    );
}

#[test]
fn native_layout_without_init_containers_adds_the_list() {
    let after = apply(&pod(), Layout::Native);
    let init = spec(&after).init_containers.as_deref().expect("init");
    assert_eq!(names(init), ["remora-init", "remora-proxy", "log-shipper"]);
}

#[test]
fn classic_layout() {
    let mut before = pod();
    spec_mut(&mut before).init_containers = Some(vec![named("migrate")]);
    let after = apply(&before, Layout::Classic);
    let containers = &spec(&after).containers;
    assert_eq!(names(containers), ["remora-proxy", "web", "log-shipper"]);
    // The redirect is in place before the pod's own init containers and the app run.
    let init = spec(&after).init_containers.as_deref().expect("init");
    assert_eq!(names(init), ["remora-init", "migrate"]);
    assert_eq!(init[0].restart_policy, None);
    let bare = apply(&pod(), Layout::Classic);
    let init = spec(&bare).init_containers.as_deref().expect("init");
    assert_eq!(names(init), ["remora-init"]);
    assert_eq!(containers[1], spec(&before).containers[0]);
    let proxy = &containers[0];
    assert_eq!(proxy.restart_policy, None);
    assert_eq!(proxy.startup_probe, None);
    let hook = proxy
        .lifecycle
        .as_ref()
        .and_then(|l| l.post_start.as_ref())
        .and_then(|h| h.exec.as_ref())
        .and_then(|e| e.command.as_deref())
        .expect("postStart exec");
    assert_eq!(hook[..2], ["bash", "-c"]);
    assert!(hook[2].contains("/dev/tcp/127.0.0.1/15021"), "{}", hook[2]);
    assert_eq!(containers[2].restart_policy, None);
}

#[test]
fn annotations_are_added_whole_or_one_by_one_with_escaped_keys() {
    let after = apply(&pod(), Layout::Native);
    let want = BTreeMap::from([
        (
            "sidecar.remora.dev/policy".to_string(),
            "remora-system/fleet-default".to_string(),
        ),
        (
            "sidecar.remora.dev/version".to_string(),
            "1.39.2".to_string(),
        ),
        (
            "sidecar.remora.dev/revision".to_string(),
            "0123456789".to_string(),
        ),
        (
            "sidecar.remora.dev/workload".to_string(),
            "Pod/web-7d9f-".to_string(),
        ),
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), "15090".to_string()),
        (
            "prometheus.io/path".to_string(),
            "/stats/prometheus".to_string(),
        ),
    ]);
    assert_eq!(after.metadata.annotations.as_ref(), Some(&want));

    let mut before = pod();
    let odd = ("we~ird/key".to_string(), "kept".to_string());
    before.metadata.annotations = Some(BTreeMap::from([odd.clone()]));
    let ops =
        serde_json::to_value(inject(&before, Layout::Native, &control_plane()).expect("patch"))
            .expect("ops");
    let paths: Vec<&str> = ops
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|op| op["path"].as_str())
        .filter(|p| p.starts_with("/metadata"))
        .collect();
    assert_eq!(
        paths,
        [
            "/metadata/annotations/sidecar.remora.dev~1version",
            "/metadata/annotations/sidecar.remora.dev~1revision",
            "/metadata/annotations/sidecar.remora.dev~1policy",
            "/metadata/annotations/sidecar.remora.dev~1workload",
            "/metadata/annotations/prometheus.io~1scrape",
            "/metadata/annotations/prometheus.io~1port",
            "/metadata/annotations/prometheus.io~1path",
        ]
    );
    let after = apply(&before, Layout::Native);
    let mut want = want;
    want.insert(odd.0, odd.1);
    assert_eq!(after.metadata.annotations, Some(want));
}

#[test]
fn pointer_tokens() {
    assert_eq!(pointer_token("a/b~c"), "a~1b~0c");
    // `~1` in a key must not read back as `/`.
    assert_eq!(pointer_token("~1"), "~01");
    assert_eq!(pointer_token("plain"), "plain");
}

#[test]
fn reinjection_is_a_no_op() {
    for layout in [Layout::Native, Layout::Classic] {
        let once = apply(&pod(), layout);
        assert_eq!(
            inject(&once, layout, &control_plane()),
            Ok(Vec::new()),
            "{layout:?}"
        );
        let p = policy();
        let labels = BTreeMap::from([("remora.dev/mesh".to_string(), "enabled".to_string())]);
        assert_eq!(
            decide(&Settings::default(), &once, "shop", &labels, Some(&p)),
            Decision::Skip(SkipReason::AlreadyInjected),
            "{layout:?}"
        );
    }
}

#[test]
fn a_pod_that_sets_any_scrape_annotation_keeps_its_own() {
    let mut before = pod();
    let app = BTreeMap::from([("prometheus.io/port".to_string(), "9090".to_string())]);
    before.metadata.annotations = Some(app);
    let after = apply(&before, Layout::Native);
    let got = after.metadata.annotations.expect("annotations");
    assert_eq!(
        got.get("prometheus.io/port").map(String::as_str),
        Some("9090")
    );
    assert_eq!(got.get("prometheus.io/scrape"), None);
    assert_eq!(got.get("prometheus.io/path"), None);
}

#[test]
fn the_proxy_declares_its_stats_port_by_name() {
    let after = apply(&pod(), Layout::Native);
    let proxy = &spec(&after).init_containers.as_deref().expect("init")[1];
    let ports = proxy.ports.as_deref().expect("ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(
        (ports[0].name.as_deref(), ports[0].container_port),
        (Some(crate::STATS_PORT_NAME), 15090)
    );
}

#[test]
fn the_proxy_gets_its_pods_bootstrap() {
    let after = apply(&pod(), Layout::Native);
    let proxy = &spec(&after).init_containers.as_deref().expect("init")[1];
    // What the kubelet would resolve each downward-API variable to for this pod, once the
    // API server has named it.
    let resolved = |path: &str| match path {
        "metadata.name" => "web-7d9f-x2x",
        "metadata.namespace" => "shop",
        "spec.serviceAccountName" => "web",
        "status.podIP" => "10.0.0.7",
        "metadata.annotations['sidecar.remora.dev/workload']" => after
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::WORKLOAD_ANNOTATION))
            .map(String::as_str)
            .expect("the workload annotation the bootstrap reads"),
        other => panic!("unexpected field {other}"),
    };
    let vars: BTreeMap<&str, &str> = proxy
        .env
        .iter()
        .flatten()
        .filter_map(|e| {
            let path = &e.value_from.as_ref()?.field_ref.as_ref()?.field_path;
            Some((e.name.as_str(), resolved(path)))
        })
        .collect();
    let args = proxy.args.as_deref().expect("args");
    assert_eq!(args[0], "--config-yaml");
    let got: Value = serde_json::from_str(&expand(&args[1], &vars)).expect("bootstrap json");
    assert_eq!(
        got,
        crate::bootstrap(
            &crate::ProxyPod {
                proxy: ObjectKey::new("shop", "web-7d9f-x2x"),
                service_account: "web",
                // No controller owns the pod, and the API server has not named it yet.
                workload: "Pod/web-7d9f-",
                ip: "10.0.0.7",
            },
            &control_plane(),
            &[],
            &remora_api::ValidationSettings::default()
        )
    );
}

#[test]
fn the_proxy_refuses_the_regexes_the_control_plane_refuses() {
    let validation = remora_api::ValidationSettings {
        max_regex_program_size: 1000,
    };
    let injection = Injection {
        policy: &policy(),
        version: "1.39.2",
        revision: "0123456789",
        layout: Layout::Native,
        control_plane: &control_plane(),
        pod_security: PodSecurity::Privileged,
    };
    let ops = crate::patch_with(&pod(), &injection, &validation).expect("patch");
    let text = serde_json::to_string(&ops).expect("ops");
    let key = remora_envoy::bootstrap::RE2_MAX_PROGRAM_SIZE_KEY;
    assert!(
        text.contains(&format!(r#"\"{key}\":1000"#)),
        "the bootstrap carries the limit: {text}"
    );
}

#[test]
fn conflicting_names_and_ports_name_the_field() {
    let mut taken = pod();
    spec_mut(&mut taken).containers.push(named("log-shipper"));
    assert_eq!(
        inject(&taken, Layout::Native, &control_plane()),
        Err(InjectError::NameTaken {
            field: "spec.containers[1].name".into(),
            name: "log-shipper".into(),
        })
    );

    let mut port = pod();
    spec_mut(&mut port).init_containers = Some(vec![
        serde_json::from_value(
            json!({"name": "init", "ports": [{"containerPort": 9}, {"containerPort": 15021}]}),
        )
        .expect("container"),
    ]);
    let err = inject(&port, Layout::Classic, &control_plane()).expect_err("port");
    assert_eq!(
        err,
        InjectError::PortTaken {
            field: "spec.initContainers[0].ports[1].containerPort".into(),
            port: 15021,
            role: "readiness",
        }
    );
    assert!(
        err.to_string()
            .starts_with("spec.initContainers[0].ports[1].containerPort: port 15021")
    );
}

/// A container named like the proxy is no way out of the mesh: the pod is refused for the
/// clash, with the field, unless the injection's own mark says it was injected already.
#[test]
fn a_container_named_like_the_proxy_is_refused_not_skipped() {
    let mut imposter = pod();
    spec_mut(&mut imposter)
        .containers
        .push(named("remora-proxy"));
    assert_eq!(
        inject(&imposter, Layout::Native, &control_plane()),
        Err(InjectError::NameTaken {
            field: "spec.containers[1].name".into(),
            name: "remora-proxy".into(),
        })
    );
}

fn named(name: &str) -> Container {
    Container {
        name: name.into(),
        image: Some("busybox".into()),
        ..Container::default()
    }
}

fn spec_mut(pod: &mut Pod) -> &mut k8s_openapi::api::core::v1::PodSpec {
    pod.spec.as_mut().expect("spec")
}

/// The policy's shared volumes join the pod's own (or become its only ones), and a pod that
/// already uses one of their names is refused with the field.
#[test]
fn shared_volumes_are_added_and_a_clash_names_the_field() {
    let mut with_volumes = policy();
    with_volumes.spec.volumes = serde_json::from_value(json!([
        {"name": "app-logs", "emptyDir": {}},
        {"name": "shipper-config", "configMap": {"name": "fluent-bit"}}
    ]))
    .expect("volumes");
    let cp = control_plane();
    let injection = Injection {
        policy: &with_volumes,
        version: "1.40.0",
        revision: "0123456789",
        layout: Layout::Classic,
        control_plane: &cp,
        pod_security: PodSecurity::Privileged,
    };
    let applied = |pod: &Pod| -> Pod {
        let ops = patch(pod, &injection).expect("patch");
        let ops: json_patch::Patch =
            serde_json::from_value(serde_json::to_value(&ops).expect("ops")).expect("RFC 6902");
        let mut doc = serde_json::to_value(pod).expect("pod json");
        json_patch::patch(&mut doc, &ops).expect("applies");
        serde_json::from_value(doc).expect("still a pod")
    };
    let volume_names = |p: &Pod| -> Vec<String> {
        spec(p)
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.clone())
            .collect()
    };

    let bare = applied(&pod());
    assert_eq!(volume_names(&bare), ["app-logs", "shipper-config"]);
    let logs = &spec(&bare).volumes.as_ref().expect("volumes")[0];
    assert!(logs.empty_dir.is_some() && logs.config_map.is_none());

    let mut own = pod();
    spec_mut(&mut own).volumes =
        Some(serde_json::from_value(json!([{"name": "data", "emptyDir": {}}])).expect("volume"));
    assert_eq!(
        volume_names(&applied(&own)),
        ["data", "app-logs", "shipper-config"]
    );

    let mut clash = pod();
    spec_mut(&mut clash).volumes = Some(
        serde_json::from_value(
            json!([{"name": "data", "emptyDir": {}}, {"name": "app-logs", "emptyDir": {}}]),
        )
        .expect("volumes"),
    );
    let err = patch(&clash, &injection).expect_err("a clash");
    assert_eq!(
        err,
        InjectError::VolumeTaken {
            field: "spec.volumes[1].name".into(),
            name: "app-logs".into(),
        }
    );
    assert!(err.to_string().contains("rename the pod's volume"));
}

#[test]
fn only_the_init_container_holds_capabilities_and_the_proxy_runs_as_the_exempt_user() {
    for layout in [Layout::Native, Layout::Classic] {
        let after = apply(&pod(), layout);
        let s = spec(&after);
        for c in s.init_containers.iter().flatten().chain(&s.containers) {
            let added = c
                .security_context
                .as_ref()
                .and_then(|sc| sc.capabilities.as_ref()?.add.clone());
            let want =
                (c.name == "remora-init").then(|| vec!["NET_ADMIN".into(), "NET_RAW".into()]);
            assert_eq!(added, want, "{layout:?} {}", c.name);
        }
        let sc = container(&after, "remora-proxy")
            .security_context
            .as_ref()
            .expect("the proxy's securityContext");
        assert_eq!((sc.run_as_user, sc.run_as_group), (Some(1337), Some(1337)));
        assert_eq!(sc.run_as_non_root, Some(true));
        let dropped = sc.capabilities.as_ref().and_then(|c| c.drop.clone());
        assert_eq!(dropped, Some(vec!["ALL".into()]), "{layout:?}");
    }
}

#[test]
fn each_port_of_the_proxy_is_refused_with_its_role() {
    for (port, role) in [
        (15000, "admin"),
        (15001, "outbound capture"),
        (15006, "inbound capture"),
        (15021, "readiness"),
    ] {
        let mut taken = pod();
        spec_mut(&mut taken).containers[0].ports = Some(
            serde_json::from_value(json!([{"containerPort": 8080}, {"containerPort": port}]))
                .expect("ports"),
        );
        let err = inject(&taken, Layout::Native, &control_plane()).expect_err(role);
        assert_eq!(
            err,
            InjectError::PortTaken {
                field: "spec.containers[0].ports[1].containerPort".into(),
                port,
                role,
            }
        );
        assert!(
            err.to_string().contains(&format!("(its {role} port)")),
            "{err}"
        );
    }
}

#[test]
fn a_container_running_as_the_proxy_user_is_refused_with_the_field() {
    let user = |uid: i64| json!({"runAsUser": uid});
    let with = |pod_sc: Option<Value>, web_sc: Option<Value>, init_sc: Option<Value>| {
        let mut p = pod();
        let s = spec_mut(&mut p);
        s.security_context = pod_sc.map(|v| serde_json::from_value(v).expect("pod sc"));
        s.containers[0].security_context =
            web_sc.map(|v| serde_json::from_value(v).expect("container sc"));
        if let Some(sc) = init_sc {
            let mut migrate = named("migrate");
            migrate.security_context = Some(serde_json::from_value(sc).expect("init sc"));
            s.init_containers = Some(vec![migrate]);
        }
        inject(&p, Layout::Classic, &control_plane())
    };
    let refused = |field: &str| {
        Err(InjectError::ProxyUser {
            field: field.into(),
        })
    };
    assert_eq!(
        with(None, Some(user(1337)), None),
        refused("spec.containers[0].securityContext.runAsUser")
    );
    assert_eq!(
        with(Some(user(1337)), None, None),
        refused("spec.securityContext.runAsUser")
    );
    assert_eq!(
        with(None, None, Some(user(1337))),
        refused("spec.initContainers[0].securityContext.runAsUser")
    );
    // The container's own user wins over the pod's; the group alone is not the proxy's user.
    assert!(with(Some(user(1337)), Some(user(1000)), None).is_ok());
    assert!(with(None, Some(json!({"runAsGroup": 1337})), None).is_ok());

    let err = with(None, Some(user(1337)), None).expect_err("refused");
    assert!(
        err.to_string()
            .starts_with("spec.containers[0].securityContext.runAsUser: 1337 is the UID"),
        "{err}"
    );
    assert!(err.to_string().contains("bypass the proxy"), "{err}");
}

/// The value of `flag` in the init container's arguments.
fn init_flag(pod: &Pod, flag: &str) -> Option<String> {
    let args = container(pod, "remora-init")
        .args
        .clone()
        .unwrap_or_default();
    let at = args.iter().position(|a| a == flag)?;
    args.get(at + 1).cloned()
}

/// Probes reach the app through the proxy (a declared port's chain, or the inbound
/// passthrough): a probed port is never excluded from capture on their account, so a port
/// that is both probed and served stays in the mesh. Only the policy's exclusions are passed.
#[test]
fn probes_take_no_port_out_of_the_mesh() {
    let mut probed = pod();
    spec_mut(&mut probed).containers[0] = serde_json::from_value(json!({
        "name": "web", "image": "shop/web:3",
        "ports": [{"containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
        "livenessProbe": {"tcpSocket": {"port": 8081}},
    }))
    .expect("web");
    let mut excluding = policy();
    excluding.spec.proxy.interception.exclude_inbound_ports = vec![22];
    for layout in [Layout::Native, Layout::Classic] {
        let excluded = init_flag(
            &apply_with(&probed, layout, &excluding),
            "--exclude-inbound-ports",
        );
        assert_eq!(excluded.as_deref(), Some("22"), "{layout:?}");
        let none = init_flag(&apply(&probed, layout), "--exclude-inbound-ports");
        assert_eq!(none, None, "{layout:?}");
    }
}

fn with_identity() -> ControlPlane {
    ControlPlane {
        identity: Some(crate::MeshIdentity {
            trust_domain: "cluster.local".into(),
            trust_bundle: "-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----\n".into(),
            control_plane_id: remora_api::spiffe::SpiffeId::new(
                "cluster.local",
                "remora-system",
                "remora",
            ),
        }),
        ..control_plane()
    }
}

fn apply_cp(pod: &Pod, layout: Layout, cp: &ControlPlane) -> Pod {
    let ops = inject(pod, layout, cp).expect("patch");
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::to_value(&ops).expect("ops")).expect("RFC 6902");
    let mut doc = serde_json::to_value(pod).expect("pod json");
    json_patch::patch(&mut doc, &patch).expect("applies");
    serde_json::from_value(doc).expect("still a pod")
}

#[test]
fn with_identities_the_agent_runs_before_the_proxy_and_shares_its_socket() {
    let cp = with_identity();
    let native = apply_cp(&pod(), Layout::Native, &cp);
    let init = spec(&native).init_containers.as_deref().expect("init");
    assert_eq!(
        names(init),
        ["remora-init", "remora-agent", "remora-proxy", "log-shipper"]
    );
    assert_eq!(init[1].restart_policy.as_deref(), Some("Always"));
    let classic = apply_cp(&pod(), Layout::Classic, &cp);
    assert_eq!(
        names(&spec(&classic).containers),
        ["remora-agent", "remora-proxy", "web", "log-shipper"]
    );

    let agent = container(&native, crate::AGENT_CONTAINER);
    assert_eq!(
        agent.image.as_deref(),
        Some("ghcr.io/remora-mesh/remora:0.1.0")
    );
    let args = agent.args.as_deref().expect("args");
    assert_eq!(args[0], "agent");
    let env: BTreeMap<_, _> = agent
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e))
        .collect();
    assert!(
        env["REMORA_CA_BUNDLE"]
            .value
            .as_deref()
            .is_some_and(|b| b.contains("BEGIN CERTIFICATE"))
    );
    assert!(env["REMORA_POD_NAME"].value_from.is_some());
    let sc = agent.security_context.as_ref().expect("securityContext");
    assert_eq!(sc.run_as_user, Some(1337));
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_owned()])
    );
    let mounts = |c: &Container| -> Vec<(String, String)> {
        c.volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.clone(), m.mount_path.clone()))
            .collect()
    };
    let sds = ("remora-sds".to_owned(), "/var/run/remora/sds".to_owned());
    assert_eq!(
        mounts(agent),
        [
            sds.clone(),
            (
                "remora-token".to_owned(),
                "/var/run/secrets/remora/tokens".to_owned()
            )
        ]
    );
    assert_eq!(mounts(container(&native, "remora-proxy")), [sds]);

    let volumes = spec(&native).volumes.as_deref().expect("volumes");
    let token = volumes
        .iter()
        .find(|v| v.name == "remora-token")
        .and_then(|v| v.projected.as_ref())
        .and_then(|p| p.sources.as_ref())
        .and_then(|s| s[0].service_account_token.as_ref())
        .expect("a projected token");
    assert_eq!(token.audience.as_deref(), Some("remora"));
    assert!(
        volumes
            .iter()
            .any(|v| v.name == "remora-sds" && v.empty_dir.is_some())
    );
}

#[test]
fn without_identities_no_agent_and_no_volume_is_added() {
    let after = apply(&pod(), Layout::Native);
    let s = spec(&after);
    assert!(
        s.init_containers
            .iter()
            .flatten()
            .all(|c| c.name != "remora-agent")
    );
    assert_eq!(s.volumes, None);
    assert_eq!(container(&after, "remora-proxy").volume_mounts, None);
}

#[test]
fn a_pod_volume_named_like_the_agents_is_refused_with_the_field() {
    let mut before = pod();
    spec_mut(&mut before).volumes = Some(vec![
        serde_json::from_value(json!({"name": "remora-token", "emptyDir": {}})).expect("a volume"),
    ]);
    let err = inject(&before, Layout::Native, &with_identity()).expect_err("a clash");
    assert_eq!(
        err,
        InjectError::VolumeTaken {
            field: "spec.volumes[0].name".into(),
            name: "remora-token".into()
        }
    );
}

fn probed_pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"generateName": "web-7d9f-", "labels": {"app": "web"}},
        "spec": {
            "serviceAccountName": "web",
            "containers": [{
                "name": "web", "image": "shop/web:3",
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"port": "http", "path": "/ready",
                                   "httpHeaders": [{"name": "Host", "value": "web"}]}},
                "livenessProbe": {"tcpSocket": {"port": 8080}},
            }],
        },
    }))
    .expect("pod")
}

fn strict_policy() -> SidecarPolicy {
    let mut policy = policy();
    policy.spec.mtls.mode = remora_api::sidecar_policy::MtlsMode::Strict;
    policy
}

fn apply_probed(policy: &SidecarPolicy, cp: &ControlPlane) -> Pod {
    let ops = inject_with(&probed_pod(), Layout::Classic, policy, cp).expect("patch");
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::to_value(&ops).expect("ops")).expect("RFC 6902");
    let mut doc = serde_json::to_value(probed_pod()).expect("pod json");
    json_patch::patch(&mut doc, &patch).expect("applies");
    serde_json::from_value(doc).expect("still a pod")
}

#[test]
fn under_strict_mtls_http_probes_move_to_the_proxy_which_passes_them_on() {
    let after = apply_probed(&strict_policy(), &with_identity());
    let web = container(&after, "web");
    let get = web
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("httpGet");
    assert_eq!(get.path.as_deref(), Some("/app-health/web/readiness"));
    assert_eq!(get.port, IntOrString::Int(15021));
    assert_eq!(
        get.http_headers.as_deref().map(|h| h[0].value.as_str()),
        Some("web"),
        "the probe's headers go with it"
    );
    assert!(
        web.liveness_probe
            .as_ref()
            .and_then(|p| p.tcp_socket.as_ref())
            .is_some(),
        "a TCP probe stays"
    );
    // The proxy answers that path with the app's own.
    let proxy = container(&after, "remora-proxy");
    let config = &proxy.args.as_deref().expect("args")[1];
    assert!(config.contains("/app-health/web/readiness"), "{config}");
    assert!(config.contains("\"prefix_rewrite\":\"/ready\""), "{config}");
    assert!(config.contains("app-health|8080"), "{config}");
}

#[test]
fn probes_stay_where_they_are_unless_the_policy_is_strict_with_identities() {
    for (policy, cp) in [
        (policy(), with_identity()),
        (strict_policy(), control_plane()),
    ] {
        let after = apply_probed(&policy, &cp);
        assert_eq!(
            container(&after, "web").readiness_probe,
            probed_pod().spec.expect("spec").containers[0].readiness_probe
        );
    }
}
