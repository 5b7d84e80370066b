//! Kubelet probes under `Strict` mutual TLS. The kubelet is no sidecar: its plaintext probe
//! of an app port would meet the inbound capture listener, which under `Strict` accepts only
//! mutual TLS, and fail. So the injector rewrites each HTTP `httpGet` probe of the pod's own
//! containers to the proxy's readiness port, which is never captured, at
//! `/app-health/<container>/<probe>`; the proxy's bootstrap routes that path to the app's
//! port on the pod's address with the original path. The probe still tests the app, through
//! its own proxy. `tcpSocket` probes are left as they are (the proxy accepts the connection,
//! so they test the proxy), as are `exec` probes (they run in the container); HTTPS and gRPC
//! probes are not rewritten and fail under `Strict`: use `Permissive` for such workloads.

use k8s_openapi::{
    api::core::v1::{Container, HTTPGetAction, Pod, Probe},
    apimachinery::pkg::util::intstr::IntOrString,
};
use remora_api::sidecar_policy::{MtlsMode, READINESS_PORT};
use serde_json::json;

use crate::{Injection, patch::JsonPatchOp};

/// Where the proxy's readiness port answers for an app's probe.
pub const APP_HEALTH_PREFIX: &str = "/app-health/";

/// One probe moved to the proxy: who and which, and where the app answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppProbe {
    /// The probe's path on the proxy's readiness port.
    pub path: String,
    /// The app's port.
    pub port: u16,
    /// The app's own path (and query).
    pub target: String,
}

/// A probe of the pod's own to move: where it is in the spec, what it was, where it goes.
#[derive(Clone, Debug)]
pub(crate) struct Moved {
    /// The container's index in `spec.containers`.
    container: usize,
    /// `readinessProbe`, `livenessProbe` or `startupProbe`.
    field: &'static str,
    /// The probe's `httpGet` as the pod's owner wrote it.
    original: HTTPGetAction,
    /// Where the proxy takes it.
    pub(crate) probe: AppProbe,
}

/// The kinds of probe, as the pod spec names them.
const KINDS: [(&str, &str); 3] = [
    ("readinessProbe", "readiness"),
    ("livenessProbe", "liveness"),
    ("startupProbe", "startup"),
];

/// The probes of `pod` to move to the proxy: none unless the mesh has identities and the
/// pod's policy is `Strict`.
pub(crate) fn app_probes(pod: &Pod, injection: &Injection) -> Vec<Moved> {
    let strict = injection.policy.spec.mtls.mode == MtlsMode::Strict;
    if injection.control_plane.identity.is_none() || !strict {
        return Vec::new();
    }
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for (container, c) in spec.containers.iter().enumerate() {
        for (field, kind) in KINDS {
            if let Some((original, probe)) = moved(c, field, kind) {
                found.push(Moved {
                    container,
                    field,
                    original,
                    probe,
                });
            }
        }
    }
    found
}

/// The probe `field` of `c` and where it moves, if it is an HTTP `httpGet` probe of a known
/// port.
fn moved(c: &Container, field: &str, kind: &str) -> Option<(HTTPGetAction, AppProbe)> {
    let probe: &Probe = match field {
        "readinessProbe" => c.readiness_probe.as_ref(),
        "livenessProbe" => c.liveness_probe.as_ref(),
        _ => c.startup_probe.as_ref(),
    }?;
    let get = probe.http_get.as_ref()?;
    if get.scheme.as_deref().is_some_and(|s| s != "HTTP") || get.host.is_some() {
        return None;
    }
    let port = match &get.port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            let mut ports = c.ports.iter().flatten();
            ports
                .find(|p| p.name.as_deref() == Some(name))?
                .container_port
        }
    };
    let probe = AppProbe {
        path: format!("{APP_HEALTH_PREFIX}{}/{kind}", c.name),
        port: u16::try_from(port).ok()?,
        target: get.path.clone().unwrap_or_else(|| "/".into()),
    };
    Some((get.clone(), probe))
}

/// The operations that point each moved probe at the proxy. They come before any that
/// inserts containers, so the indices are the pod's own.
/// Its headers (a `Host`, say) go with it.
pub(crate) fn rewrite(moved: &[Moved]) -> Vec<JsonPatchOp> {
    moved
        .iter()
        .map(|m| JsonPatchOp::Add {
            path: format!("/spec/containers/{}/{}/httpGet", m.container, m.field),
            value: json!(HTTPGetAction {
                path: Some(m.probe.path.clone()),
                port: IntOrString::Int(READINESS_PORT.into()),
                scheme: Some("HTTP".into()),
                ..m.original.clone()
            }),
        })
        .collect()
}
