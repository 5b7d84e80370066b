//! The containers the injector adds.

use k8s_openapi::{
    api::core::v1::{
        Capabilities, Container, ContainerPort, ExecAction, HTTPGetAction, Lifecycle,
        LifecycleHandler, Probe, SecurityContext,
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use remora_api::{
    ValidationSettings,
    sidecar_policy::{PROXY_CONTAINER, PROXY_GID, PROXY_UID, READINESS_PORT, STATS_PORT},
};

use crate::{
    Injection, Layout,
    agent::{agent_container, sds_mount},
    bootstrap::{READINESS_PATH, config_arg, env},
    probes::AppProbe,
};

/// The identity agent (when the mesh has identities) and the proxy first, then the policy's
/// extra containers, shaped for the layout. In the native layout the extras are sidecars too,
/// so a log shipper outlives the app it ships for.
pub(crate) fn sidecars(
    injection: &Injection,
    probes: &[AppProbe],
    validation: &ValidationSettings,
) -> Vec<Container> {
    let identity = injection.control_plane.identity.as_ref();
    let mut all: Vec<Container> = identity
        .map(|id| agent_container(injection, id))
        .into_iter()
        .collect();
    all.push(proxy(injection, probes, validation));
    all.extend(injection.policy.spec.extra_containers.iter().cloned());
    if injection.layout == Layout::Native {
        for c in &mut all {
            c.restart_policy = Some("Always".into());
        }
    }
    all
}

/// The proxy, answering the app's moved `probes` on its readiness port.
fn proxy(injection: &Injection, probes: &[AppProbe], validation: &ValidationSettings) -> Container {
    let spec = &injection.policy.spec.proxy;
    let args = vec![
        "--config-yaml".to_string(),
        config_arg(injection.control_plane, probes, validation),
        "--log-level".into(),
        spec.log_level.as_str().into(),
        "--concurrency".into(),
        spec.concurrency.unwrap_or(2).to_string(),
        // Hot restart needs shared memory and a parent process; a pod restarts containers instead.
        "--disable-hot-restart".into(),
    ];
    let ready = probe(2, 3);
    let (startup_probe, lifecycle) = match injection.layout {
        // The kubelet holds the next containers until a native sidecar's startup probe passes.
        Layout::Native => (Some(probe(1, 600)), None),
        Layout::Classic => (None, Some(hold_until_ready())),
    };
    Container {
        name: PROXY_CONTAINER.into(),
        image: Some(format!("{}:{}", spec.image, injection.version)),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["envoy".into()]),
        args: Some(args),
        env: Some(env()),
        // Declared for a PodMonitor, which selects the port by name.
        ports: Some(vec![ContainerPort {
            name: Some(STATS_PORT_NAME.into()),
            container_port: STATS_PORT.into(),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: spec.resources.clone(),
        readiness_probe: Some(ready),
        startup_probe,
        lifecycle,
        security_context: Some(security_context()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        volume_mounts: injection
            .control_plane
            .identity
            .as_ref()
            .map(|_| vec![sds_mount()]),
        ..Container::default()
    }
}

/// The name of the proxy's stats port in its container.
pub const STATS_PORT_NAME: &str = "remora-stats";

/// How many of [`sidecars`] go before the app: the agent, when there is one, and the proxy.
pub(crate) fn leading(injection: &Injection) -> usize {
    1 + usize::from(injection.control_plane.identity.is_some())
}

fn probe(period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(READINESS_PATH.into()),
            port: IntOrString::Int(READINESS_PORT.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

/// The kubelet runs a container's postStart hook to its end before it starts the next
/// container, so the app (after the proxy) starts once the proxy answers ready, or the hook
/// gives up after five minutes and the kubelet restarts the proxy. Bash's `/dev/tcp` needs no
/// HTTP client in the image (the official Envoy image has bash; a distroless one needs the
/// native layout).
fn hold_until_ready() -> Lifecycle {
    let script = format!(
        "for ((i = 0; i < 300; i++)); do \
         (exec 3<>/dev/tcp/127.0.0.1/{READINESS_PORT} && \
         printf 'GET {READINESS_PATH} HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && \
         read -r status <&3 && [[ $status == *' 200 '* ]]) 2>/dev/null && exit 0; \
         sleep 1; done; exit 1"
    );
    Lifecycle {
        post_start: Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec!["bash".into(), "-c".into(), script]),
            }),
            ..LifecycleHandler::default()
        }),
        ..Lifecycle::default()
    }
}

// Envoy needs no privilege: it binds ports above 1024 and writes nothing to disk. Its user
// and group are the ones the capture rules exempt, so its own connections are not redirected.
pub(crate) fn security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(PROXY_UID.into()),
        run_as_group: Some(PROXY_GID.into()),
        ..SecurityContext::default()
    }
}
