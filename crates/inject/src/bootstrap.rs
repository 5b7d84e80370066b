//! The bootstrap the injected Envoy starts with.
//!
//! At admission a pod often has no name yet (`generateName`: the API server picks it after the
//! webhooks ran), so the bootstrap cannot name the pod. Instead the whole bootstrap travels as
//! Envoy's `--config-yaml` argument (JSON is YAML) with `$(VAR)` references that the kubelet
//! expands from downward-API variables when it starts the container. Envoy thus gets exactly
//! `remora_envoy::bootstrap::Bootstrap` for the real pod, metadata `POD_NAME` included (which
//! `--service-node` alone could not set), with no init step, no shared volume and no file.

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector};
use remora_api::ValidationSettings;
use remora_api::sidecar_policy::{ADMIN_PORT, READINESS_PORT, STATS_PORT};
use remora_api::spiffe::SpiffeId;
use remora_envoy::bootstrap::{Bootstrap, XdsTls};
use remora_model::input::ObjectKey;
use serde_json::{Value, json};

use crate::{WORKLOAD_ANNOTATION, probes::AppProbe};

/// The path the kubelet probes on [`READINESS_PORT`], which serves only `GET /ready` (passed to
/// the admin's `/ready`, the admin interface itself being on loopback only).
pub const READINESS_PATH: &str = "/ready";
/// The path Prometheus scrapes on [`STATS_PORT`], which serves only it (passed to the admin's
/// own `/stats/prometheus`).
pub const STATS_PATH: &str = "/stats/prometheus";

const POD_NAME: &str = "REMORA_POD_NAME";
const POD_NAMESPACE: &str = "REMORA_POD_NAMESPACE";
const SERVICE_ACCOUNT: &str = "REMORA_SERVICE_ACCOUNT";
const WORKLOAD: &str = "REMORA_WORKLOAD";
const POD_IP: &str = "REMORA_POD_IP";

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
    /// The mesh's workload identities, when it has them: pods then get the identity agent,
    /// and their proxies reach the control plane over mutual TLS.
    pub identity: Option<MeshIdentity>,
}

/// What an injected pod needs to know of the mesh's identities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshIdentity {
    /// The trust domain of every SPIFFE ID in the mesh, e.g. `cluster.local`.
    pub trust_domain: String,
    /// The roots (PEM) the agent checks the control plane's certificate with when it asks
    /// for its first certificate; later ones come with each certificate.
    pub trust_bundle: String,
    /// The SPIFFE ID the control plane's certificate carries, which the proxy checks.
    pub control_plane_id: SpiffeId,
}

/// What a proxy's bootstrap says of its pod.
#[derive(Clone, Debug)]
pub struct ProxyPod<'a> {
    /// The pod.
    pub proxy: ObjectKey,
    /// The service account it runs as.
    pub service_account: &'a str,
    /// Its workload, e.g. `Deployment/web` (see [`crate::source_workload`]).
    pub workload: &'a str,
    /// Its IP.
    pub ip: &'a str,
}

/// The bootstrap of the proxy of `pod`, answering the app's `probes` on its readiness port,
/// refusing the regexes `validation` refuses.
pub fn bootstrap(
    pod: &ProxyPod,
    control_plane: &ControlPlane,
    probes: &[AppProbe],
    validation: &ValidationSettings,
) -> Value {
    let tls = control_plane.identity.as_ref().map(|i| XdsTls {
        control_plane: i.control_plane_id.clone(),
    });
    let mut config = Bootstrap {
        proxy: pod.proxy.clone(),
        service_account: pod.service_account.into(),
        workload: pod.workload.into(),
        xds_host: control_plane.xds_host.clone(),
        xds_port: control_plane.xds_port,
        admin: ([127, 0, 0, 1], ADMIN_PORT).into(),
        delta: control_plane.delta,
        max_regex_program_size: validation.max_regex_program_size,
    }
    .to_json_with(tls.as_ref());
    let statics = &mut config["static_resources"];
    if let Some(clusters) = statics["clusters"].as_array_mut() {
        clusters.push(admin_cluster());
        clusters.extend(app_clusters(pod.ip, probes));
    }
    statics["listeners"] = json!([readiness_listener(probes), stats_listener()]);
    config
}

/// The `--config-yaml` argument: the bootstrap with kubelet references for what only the
/// running pod knows. The values from elsewhere (the control plane's host, the probes' paths)
/// have their `$` doubled so the kubelet leaves them as they are; the bootstrap's fixed text
/// has none.
pub(crate) fn config_arg(
    control_plane: &ControlPlane,
    probes: &[AppProbe],
    validation: &ValidationSettings,
) -> String {
    let [name, namespace, account, workload, ip] =
        [POD_NAME, POD_NAMESPACE, SERVICE_ACCOUNT, WORKLOAD, POD_IP].map(reference);
    let literal = ControlPlane {
        xds_host: control_plane.xds_host.replace('$', "$$"),
        ..control_plane.clone()
    };
    let probes: Vec<AppProbe> = probes
        .iter()
        .map(|p| AppProbe {
            path: p.path.replace('$', "$$"),
            target: p.target.replace('$', "$$"),
            ..p.clone()
        })
        .collect();
    let proxy = ObjectKey::new(namespace, name);
    let pod = ProxyPod {
        proxy,
        service_account: &account,
        workload: &workload,
        ip: &ip,
    };
    bootstrap(&pod, &literal, &probes, validation).to_string()
}

fn reference(var: &str) -> String {
    format!("$({var})")
}

/// The downward-API variables `config_arg` refers to; the kubelet resolves them once the pod
/// has its name.
pub(crate) fn env() -> Vec<EnvVar> {
    let workload = format!("metadata.annotations['{WORKLOAD_ANNOTATION}']");
    [
        (POD_NAME, "metadata.name"),
        (POD_NAMESPACE, "metadata.namespace"),
        (SERVICE_ACCOUNT, "spec.serviceAccountName"),
        (WORKLOAD, workload.as_str()),
        (POD_IP, "status.podIP"),
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

/// A cluster per port the app's moved probes go to, on the pod's address (the app may listen
/// on it alone); the proxy's own connections are not captured.
fn app_clusters(pod_ip: &str, probes: &[AppProbe]) -> Vec<Value> {
    let ports: std::collections::BTreeSet<u16> = probes.iter().map(|p| p.port).collect();
    ports
        .into_iter()
        .map(|port| {
            let name = app_cluster(port);
            json!({
                "name": name,
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {
                    "cluster_name": name,
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                        "address": pod_ip,
                        "port_value": port,
                    }}}}]}],
                },
            })
        })
        .collect()
}

fn app_cluster(port: u16) -> String {
    format!("app-health|{port}")
}

// Envoy opens listeners only once its initial xDS fetch is done, and the admin's `/ready`
// turns 503 while draining, so the probe follows the proxy's real state. The app's probes
// moved here (`probes`) reach the app with their own paths.
fn readiness_listener(probes: &[AppProbe]) -> Value {
    let mut routes: Vec<Value> = probes
        .iter()
        .map(|p| {
            json!({
                "match": {"path": p.path},
                "route": {"cluster": app_cluster(p.port), "prefix_rewrite": p.target},
            })
        })
        .collect();
    routes.push(json!({
        "match": {"path": READINESS_PATH},
        "route": {"cluster": ADMIN_CLUSTER},
    }));
    admin_gate("remora-readiness", READINESS_PORT, routes)
}

// Prometheus scrapes the pod's address; the admin interface, which can change the proxy,
// stays on loopback, and only its stats page is passed on.
fn stats_listener() -> Value {
    admin_gate(
        "remora-stats",
        STATS_PORT,
        vec![json!({
            "match": {"path": STATS_PATH},
            "route": {"cluster": ADMIN_CLUSTER},
        })],
    )
}

/// A listener on every address of the pod at `port` serving only `routes`; any other path
/// is a 404.
fn admin_gate(name: &str, port: u16, routes: Vec<Value>) -> Value {
    json!({
        "name": name,
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name.replace('-', "_"),
                "route_config": {"virtual_hosts": [{
                    "name": name.trim_start_matches("remora-"),
                    "domains": ["*"],
                    "routes": routes,
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
            identity: None,
        }
    }

    /// The pod the tests' bootstraps are for, `proxy` of `Deployment/web`.
    fn pod(proxy: ObjectKey) -> ProxyPod<'static> {
        ProxyPod {
            proxy,
            service_account: "web",
            workload: "Deployment/web",
            ip: "10.0.0.7",
        }
    }

    #[test]
    fn kubelet_expansion_yields_the_pods_own_bootstrap() {
        let vars = BTreeMap::from([
            (POD_NAME, "web-7d9f-x2x"),
            (POD_NAMESPACE, "shop"),
            (SERVICE_ACCOUNT, "web"),
            (WORKLOAD, "Deployment/web"),
            (POD_IP, "10.0.0.7"),
        ]);
        let probes = [AppProbe {
            path: "/app-health/web/readiness".into(),
            port: 8080,
            target: "/healthz?$x".into(),
        }];
        let text = expand(
            &config_arg(&control_plane(), &probes, &ValidationSettings::default()),
            &vars,
        );
        let got: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            got,
            bootstrap(
                &pod(ObjectKey::new("shop", "web-7d9f-x2x")),
                &control_plane(),
                &probes,
                &ValidationSettings::default()
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
        let got: Value = serde_json::from_str(&expand(
            &config_arg(&cp, &[], &ValidationSettings::default()),
            &vars,
        ))
        .expect("json");
        let host = &got["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"]
            [0]["endpoint"]["address"]["socket_address"]["address"];
        assert_eq!(host, "x$(REMORA_POD_NAME)$y");
    }

    #[test]
    fn keeps_the_xds_bootstrap_and_adds_only_readiness_and_stats() {
        let id = ObjectKey::new("shop", "web-0");
        let plain = Bootstrap {
            proxy: id.clone(),
            service_account: "web".into(),
            workload: "Deployment/web".into(),
            xds_host: "remora.remora-system.svc".into(),
            xds_port: 15010,
            admin: ([127, 0, 0, 1], ADMIN_PORT).into(),
            delta: true,
            max_regex_program_size: 250,
        }
        .to_json();
        let validation = ValidationSettings {
            max_regex_program_size: 250,
        };
        let mut ours = bootstrap(&pod(id), &control_plane(), &[], &validation);
        let statics = ours["static_resources"].as_object_mut().expect("statics");
        assert_eq!(
            statics.remove("listeners"),
            Some(json!([readiness_listener(&[]), stats_listener()]))
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
                (
                    WORKLOAD.into(),
                    Some("metadata.annotations['sidecar.remora.dev/workload']".into())
                ),
                (POD_IP.into(), Some("status.podIP".into())),
            ]
        );
    }

    #[test]
    fn a_moved_probe_reaches_the_app_on_the_pods_address_with_its_own_path() {
        let probes = [AppProbe {
            path: "/app-health/web/readiness".into(),
            port: 8080,
            target: "/healthz".into(),
        }];
        let b = bootstrap(
            &pod(ObjectKey::new("shop", "web-0")),
            &control_plane(),
            &probes,
            &ValidationSettings::default(),
        );
        let routes = &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
            ["route_config"]["virtual_hosts"][0]["routes"];
        assert_eq!(routes[0]["match"]["path"], "/app-health/web/readiness");
        assert_eq!(routes[0]["route"]["cluster"], "app-health|8080");
        assert_eq!(routes[0]["route"]["prefix_rewrite"], "/healthz");
        assert_eq!(routes[1]["match"]["path"], READINESS_PATH);
        let clusters = b["static_resources"]["clusters"]
            .as_array()
            .expect("clusters");
        let app = clusters
            .iter()
            .find(|c| c["name"] == "app-health|8080")
            .expect("the app's cluster");
        let address = &app["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"];
        assert_eq!(
            (&address["address"], &address["port_value"]),
            (&json!("10.0.0.7"), &json!(8080))
        );
    }

    #[test]
    fn the_stats_port_passes_only_the_prometheus_page_to_the_loopback_admin() {
        let b = bootstrap(
            &pod(ObjectKey::new("shop", "web-0")),
            &control_plane(),
            &[],
            &ValidationSettings::default(),
        );
        let stats = &b["static_resources"]["listeners"][1];
        assert_eq!(
            stats["address"]["socket_address"]["port_value"],
            json!(STATS_PORT)
        );
        let routes = &stats["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]
            [0]["routes"];
        assert_eq!(
            routes,
            &json!([{"match": {"path": "/stats/prometheus"}, "route": {"cluster": ADMIN_CLUSTER}}])
        );
        assert_eq!(
            b["admin"]["address"]["socket_address"]["address"],
            "127.0.0.1"
        );
    }

    #[test]
    fn with_identities_the_proxy_reaches_the_control_plane_over_tls() {
        let cp = ControlPlane {
            identity: Some(MeshIdentity {
                trust_domain: "cluster.local".into(),
                trust_bundle: String::new(),
                control_plane_id: SpiffeId::new("cluster.local", "remora-system", "remora"),
            }),
            ..control_plane()
        };
        let b = bootstrap(
            &pod(ObjectKey::new("shop", "web-0")),
            &cp,
            &[],
            &ValidationSettings::default(),
        );
        let clusters = b["static_resources"]["clusters"]
            .as_array()
            .expect("clusters");
        let xds = &clusters[0];
        assert_eq!(
            xds["transport_socket"]["name"],
            "envoy.transport_sockets.tls"
        );
        assert!(
            clusters
                .iter()
                .any(|c| c["name"] == remora_envoy::sds::SDS_CLUSTER)
        );
        let plain = bootstrap(
            &pod(ObjectKey::new("shop", "web-0")),
            &control_plane(),
            &[],
            &ValidationSettings::default(),
        );
        assert!(plain["static_resources"]["clusters"][0]["transport_socket"].is_null());
    }
}
