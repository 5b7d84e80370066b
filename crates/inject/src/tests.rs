//! Fixtures, and the patch checked by applying it with an independent RFC 6902 implementation.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use remora_model::input::ObjectKey;
use remora_test_support::expand;
use serde_json::{Value, json};

use crate::{
    ControlPlane, Decision, InjectError, Injection, Layout, Settings, SkipReason,
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

pub(crate) fn policy() -> remora_api::SidecarPolicy {
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
    let policy = policy();
    patch(
        pod,
        &Injection {
            policy: &policy,
            version: "1.39.2",
            revision: "0123456789",
            layout,
            control_plane: cp,
        },
    )
}

/// Applies our operations to the pod's JSON with the `json-patch` crate.
fn apply(pod: &Pod, layout: Layout) -> Pod {
    let ops = inject(pod, layout, &control_plane()).expect("patch");
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::to_value(&ops).expect("ops")).expect("RFC 6902");
    let mut doc = serde_json::to_value(pod).expect("pod json");
    json_patch::patch(&mut doc, &patch).expect("applies");
    serde_json::from_value(doc).expect("still a pod")
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
    assert_eq!(names(init), ["remora-proxy", "log-shipper", "migrate"]);
    for sidecar in &init[..2] {
        assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
    }
    assert_eq!(init[2].restart_policy, None);
    assert_eq!(spec(&after).containers, spec(&before).containers);

    let proxy = &init[0];
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
    assert_eq!(names(init), ["remora-proxy", "log-shipper"]);
}

#[test]
fn classic_layout() {
    let before = pod();
    let after = apply(&before, Layout::Classic);
    let containers = &spec(&after).containers;
    assert_eq!(names(containers), ["remora-proxy", "web", "log-shipper"]);
    assert_eq!(spec(&after).init_containers, None);
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
fn the_proxy_gets_its_pods_bootstrap() {
    let after = apply(&pod(), Layout::Native);
    let proxy = &spec(&after).init_containers.as_deref().expect("init")[0];
    // What the kubelet would resolve each downward-API variable to for this pod, once the
    // API server has named it.
    let resolved = |path: &str| match path {
        "metadata.name" => "web-7d9f-x2x",
        "metadata.namespace" => "shop",
        "spec.serviceAccountName" => "web",
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
            ObjectKey::new("shop", "web-7d9f-x2x"),
            "web",
            &control_plane()
        )
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
        }
    );
    assert!(
        err.to_string()
            .starts_with("spec.initContainers[0].ports[1].containerPort: port 15021")
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
