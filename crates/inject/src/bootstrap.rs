//! The bootstrap the injected Envoy starts with.
//!
//! At admission a pod often has no name yet (`generateName`: the API server picks it after the
//! webhooks ran), so the bootstrap cannot name the pod. Instead the whole bootstrap travels as
//! Envoy's `--config-yaml` argument (JSON is YAML) with `$(VAR)` references that the kubelet
//! expands from downward-API variables when it starts the container. Envoy thus gets exactly
//! `remora_envoy::bootstrap::Bootstrap` for the real pod, metadata `POD_NAME` included (which
//! `--service-node` alone could not set), with no init step, no shared volume and no file.

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector};
use remora_api::sidecar_policy::{ADMIN_PORT, READINESS_PORT};
use remora_envoy::bootstrap::Bootstrap;
use remora_model::input::ObjectKey;
use serde_json::{Value, json};

/// The path the kubelet probes on [`READINESS_PORT`], which serves only `GET /ready` (passed to
/// the admin's `/ready`, the admin interface itself being on loopback only).
pub const READINESS_PATH: &str = "/ready";

const POD_NAME: &str = "REMORA_POD_NAME";
const POD_NAMESPACE: &str = "REMORA_POD_NAMESPACE";
const SERVICE_ACCOUNT: &str = "REMORA_SERVICE_ACCOUNT";

/// The control plane as injected pods see it: where their proxies find it, and its image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlPlane {
    /// A DNS name (the control plane's Service) or an IP.
    pub xds_host: String,
    /// The port of the control plane's xDS (ADS) server.
    pub xds_port: u16,
    /// Incremental xDS instead of state of the world.
    pub delta: bool,
    /// The control plane's own image (its entrypoint the `remora` binary), which the init
    /// container runs as `remora init-network`, e.g. `ghcr.io/remora-mesh/remora:0.1.0`.
    pub image: String,
}

/// The bootstrap of the proxy `proxy` running as `service_account`.
pub fn bootstrap(proxy: ObjectKey, service_account: &str, control_plane: &ControlPlane) -> Value {
    let mut config = Bootstrap {
        proxy,
        service_account: service_account.into(),
        xds_host: control_plane.xds_host.clone(),
        xds_port: control_plane.xds_port,
        admin: ([127, 0, 0, 1], ADMIN_PORT).into(),
        delta: control_plane.delta,
    }
    .to_json();
    let statics = &mut config["static_resources"];
    if let Some(clusters) = statics["clusters"].as_array_mut() {
        clusters.push(admin_cluster());
    }
    statics["listeners"] = json!([readiness_listener()]);
    config
}

/// The `--config-yaml` argument: the bootstrap with kubelet references for what only the
/// running pod knows. The one value from elsewhere has its `$` doubled so the kubelet leaves
/// it as it is; the bootstrap's fixed text has none.
pub(crate) fn config_arg(control_plane: &ControlPlane) -> String {
    let [name, namespace, account] = [POD_NAME, POD_NAMESPACE, SERVICE_ACCOUNT].map(reference);
    let literal = ControlPlane {
        xds_host: control_plane.xds_host.replace('$', "$$"),
        ..control_plane.clone()
    };
    bootstrap(ObjectKey::new(namespace, name), &account, &literal).to_string()
}

fn reference(var: &str) -> String {
    format!("$({var})")
}

/// The downward-API variables `config_arg` refers to; the kubelet resolves them once the pod
/// has its name.
pub(crate) fn env() -> Vec<EnvVar> {
    [
        (POD_NAME, "metadata.name"),
        (POD_NAMESPACE, "metadata.namespace"),
        (SERVICE_ACCOUNT, "spec.serviceAccountName"),
    ]
    .into_iter()
    .map(|(name, path)| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    })
    .collect()
}

const ADMIN_CLUSTER: &str = "remora-admin";

fn admin_cluster() -> Value {
    json!({
        "name": ADMIN_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": ADMIN_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1",
                "port_value": ADMIN_PORT,
            }}}}]}],
        },
    })
}

// Envoy opens listeners only once its initial xDS fetch is done, and the admin's `/ready`
// turns 503 while draining, so the probe follows the proxy's real state.
fn readiness_listener() -> Value {
    json!({
        "name": "remora-readiness",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": READINESS_PORT}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "remora_readiness",
                "route_config": {"virtual_hosts": [{
                    "name": "readiness",
                    "domains": ["*"],
                    "routes": [{
                        "match": {"path": READINESS_PATH},
                        "route": {"cluster": ADMIN_CLUSTER},
                    }],
                }]},
                "http_filters": [{
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                }],
            },
        }]}],
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use remora_test_support::expand;

    use super::*;

    pub(crate) fn control_plane() -> ControlPlane {
        ControlPlane {
            xds_host: "remora.remora-system.svc".into(),
            xds_port: 15010,
            delta: true,
            image: "ghcr.io/remora-mesh/remora:0.1.0".into(),
        }
    }

    #[test]
    fn kubelet_expansion_yields_the_pods_own_bootstrap() {
        let vars = BTreeMap::from([
            (POD_NAME, "web-7d9f-x2x"),
            (POD_NAMESPACE, "shop"),
            (SERVICE_ACCOUNT, "web"),
        ]);
        let text = expand(&config_arg(&control_plane()), &vars);
        let got: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            got,
            bootstrap(
                ObjectKey::new("shop", "web-7d9f-x2x"),
                "web",
                &control_plane()
            )
        );
        assert_eq!(got["node"]["id"], "shop/web-7d9f-x2x");
        assert_eq!(got["node"]["metadata"]["POD_NAME"], "web-7d9f-x2x");
        assert_eq!(got["node"]["metadata"]["SERVICE_ACCOUNT"], "web");
        assert_eq!(
            got["dynamic_resources"]["ads_config"]["api_type"],
            "DELTA_GRPC"
        );
    }

    #[test]
    fn other_dollars_survive_expansion() {
        let cp = ControlPlane {
            xds_host: "x$(REMORA_POD_NAME)$y".into(),
            ..control_plane()
        };
        let vars = BTreeMap::from([
            (POD_NAME, "p"),
            (POD_NAMESPACE, "n"),
            (SERVICE_ACCOUNT, "s"),
        ]);
        let got: Value = serde_json::from_str(&expand(&config_arg(&cp), &vars)).expect("json");
        let host = &got["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"]
            [0]["endpoint"]["address"]["socket_address"]["address"];
        assert_eq!(host, "x$(REMORA_POD_NAME)$y");
    }

    #[test]
    fn keeps_the_xds_bootstrap_and_adds_only_readiness() {
        let id = ObjectKey::new("shop", "web-0");
        let plain = Bootstrap {
            proxy: id.clone(),
            service_account: "web".into(),
            xds_host: "remora.remora-system.svc".into(),
            xds_port: 15010,
            admin: ([127, 0, 0, 1], ADMIN_PORT).into(),
            delta: true,
        }
        .to_json();
        let mut ours = bootstrap(id, "web", &control_plane());
        let statics = ours["static_resources"].as_object_mut().expect("statics");
        assert_eq!(
            statics.remove("listeners"),
            Some(json!([readiness_listener()]))
        );
        statics["clusters"].as_array_mut().expect("clusters").pop();
        assert_eq!(ours, plain);
    }

    #[test]
    fn env_comes_from_the_downward_api() {
        let paths: Vec<_> = env()
            .iter()
            .map(|e| {
                let path = e.value_from.as_ref().and_then(|v| v.field_ref.as_ref());
                (e.name.clone(), path.map(|f| f.field_path.clone()))
            })
            .collect();
        assert_eq!(
            paths,
            [
                (POD_NAME.into(), Some("metadata.name".into())),
                (POD_NAMESPACE.into(), Some("metadata.namespace".into())),
                (
                    SERVICE_ACCOUNT.into(),
                    Some("spec.serviceAccountName".into())
                ),
            ]
        );
    }
}
