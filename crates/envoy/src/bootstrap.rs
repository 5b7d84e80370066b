//! The bootstrap a sidecar starts with: who it is, where the control plane is, an admin
//! port on loopback, and the labels of its stats (`stats.rs`). Everything else it learns over ADS. With workload identity it also
//! reaches its pod's identity agent, and speaks TLS to the control plane with the
//! certificate the agent gives it.

use std::net::SocketAddr;

use remora_api::spiffe::SpiffeId;
use serde_json::{Value, json};

use remora_model::input::ObjectKey;

use crate::sds::{SDS_CLUSTER, SDS_SOCKET, TRUST_BUNDLE_SECRET, WORKLOAD_SECRET};

/// The name of the static cluster that points at the control plane.
pub const XDS_CLUSTER: &str = "remora-xds";

/// The runtime key of Envoy's limit on a regex's RE2 program size.
pub const RE2_MAX_PROGRAM_SIZE_KEY: &str = "re2.max_program_size.error_level";

/// TLS to the control plane, for a mesh with workload identity: the proxy presents its
/// workload certificate and checks the control plane's against the trust bundle, both from
/// the identity agent over SDS ([`SDS_CLUSTER`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdsTls {
    /// The identity the control plane's certificate must name as its URI SAN, e.g.
    /// `spiffe://cluster.local/ns/remora-system/sa/remora`.
    pub control_plane: SpiffeId,
}

/// What a sidecar's bootstrap says; [`Bootstrap::to_json`] renders it as Envoy reads it.
#[derive(Clone, Debug)]
pub struct Bootstrap {
    /// The proxy's pod: its node id (`namespace/name`), cluster and metadata.
    pub proxy: ObjectKey,
    /// The pod's service account, sent in the node metadata.
    pub service_account: String,
    /// The pod's workload, e.g. `Deployment/web`: the source its stats name.
    pub workload: String,
    /// Host (an IP or a DNS name) of the control plane's xDS server.
    pub xds_host: String,
    /// Port of the control plane's xDS server.
    pub xds_port: u16,
    /// Envoy's admin interface; keep it on loopback, it can change the proxy.
    pub admin: SocketAddr,
    /// Incremental xDS instead of state of the world.
    pub delta: bool,
    /// The largest RE2 program a regex may compile to: Envoy refuses a resource with a
    /// larger one. The control plane validates against the same number.
    pub max_regex_program_size: u32,
}

impl Bootstrap {
    /// The bootstrap as Envoy's JSON config: node identity, admin address, ADS for clusters
    /// and listeners, one static cluster ([`XDS_CLUSTER`]) reaching the control plane, and
    /// the regex limit as a runtime layer.
    pub fn to_json(&self) -> Value {
        self.to_json_with(None)
    }

    /// As [`Bootstrap::to_json`]; with `tls`, the control plane is reached over TLS as it
    /// says, and a second static cluster ([`SDS_CLUSTER`]) reaches the identity agent's SDS
    /// server on its Unix socket ([`SDS_SOCKET`]).
    pub fn to_json_with(&self, tls: Option<&XdsTls>) -> Value {
        let mut config = self.plain_json();
        let Some(tls) = tls else {
            return config;
        };
        let clusters = &mut config["static_resources"]["clusters"];
        clusters[0]["transport_socket"] = self.xds_transport_socket(tls);
        if let Some(clusters) = clusters.as_array_mut() {
            clusters.push(sds_cluster());
        }
        config
    }

    fn plain_json(&self) -> Value {
        // An IP needs no resolver; a name (a Service in the cluster) is resolved and
        // re-resolved, so a moved control plane is found again.
        let discovery = if self.xds_host.parse::<std::net::IpAddr>().is_ok() {
            "STATIC"
        } else {
            "STRICT_DNS"
        };
        let ads = json!({"ads": {}, "resource_api_version": "V3"});
        json!({
            "node": {
                "id": self.proxy.to_string(),
                "cluster": self.proxy.namespace,
                "metadata": {
                    "NAMESPACE": self.proxy.namespace,
                    "POD_NAME": self.proxy.name,
                    "SERVICE_ACCOUNT": self.service_account,
                },
            },
            "admin": {
                "address": {"socket_address": {
                    "address": self.admin.ip().to_string(),
                    "port_value": self.admin.port(),
                }},
            },
            "dynamic_resources": {
                "ads_config": {
                    "api_type": if self.delta { "DELTA_GRPC" } else { "GRPC" },
                    "transport_api_version": "V3",
                    "set_node_on_first_message_only": true,
                    "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
                },
                "cds_config": ads,
                "lds_config": ads,
            },
            "layered_runtime": self.runtime(),
            "stats_config": crate::stats::stats_config(&self.proxy.namespace, &self.workload, &self.service_account),
            "static_resources": {
                "clusters": [{
                    "name": XDS_CLUSTER,
                    "type": discovery,
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": http2_only(),
                    "load_assignment": {
                        "cluster_name": XDS_CLUSTER,
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                            "address": self.xds_host,
                            "port_value": self.xds_port,
                        }}}}]}],
                    },
                }],
            },
        })
    }

    /// Envoy's runtime: a static layer with the regex limit (Envoy reads
    /// `re2.max_program_size.error_level` whenever it compiles a regex, 100 when unset), and
    /// the admin layer Envoy has when a bootstrap names no layers.
    fn runtime(&self) -> Value {
        json!({"layers": [
            {"name": "remora", "static_layer": {
                RE2_MAX_PROGRAM_SIZE_KEY: self.max_regex_program_size,
            }},
            {"name": "admin", "admin_layer": {}},
        ]})
    }

    /// TLS to the control plane: the workload's certificate, the control plane's checked
    /// against the trust bundle and its identity, and the host as SNI when it is a name.
    fn xds_transport_socket(&self, tls: &XdsTls) -> Value {
        let mut context = json!({
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {
                // The control plane serves gRPC, which its TLS server negotiates as h2.
                "alpn_protocols": ["h2"],
                "tls_certificate_sds_secret_configs": [sds_secret(WORKLOAD_SECRET)],
                "combined_validation_context": {
                    "default_validation_context": {
                        "match_typed_subject_alt_names": [{
                            "san_type": "URI",
                            "matcher": {"exact": tls.control_plane.to_string()},
                        }],
                    },
                    "validation_context_sds_secret_config": sds_secret(TRUST_BUNDLE_SECRET),
                },
            },
        });
        if self.xds_host.parse::<std::net::IpAddr>().is_err() {
            context["sni"] = json!(self.xds_host);
        }
        json!({"name": "envoy.transport_sockets.tls", "typed_config": context})
    }
}

/// HTTP/2 to the cluster's endpoints: both are gRPC servers.
fn http2_only() -> Value {
    json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        },
    })
}

/// A secret from the pod's identity agent.
fn sds_secret(name: &str) -> Value {
    json!({
        "name": name,
        "sds_config": {
            "resource_api_version": "V3",
            "api_config_source": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": SDS_CLUSTER}}],
            },
        },
    })
}

/// The identity agent's SDS server: gRPC (HTTP/2) on a Unix socket in the pod.
fn sds_cluster() -> Value {
    json!({
        "name": SDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": http2_only(),
        "load_assignment": {
            "cluster_name": SDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": SDS_SOCKET}}}}]}],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bootstrap(host: &str, delta: bool) -> Bootstrap {
        Bootstrap {
            proxy: ObjectKey::new("demo", "web-0"),
            service_account: "web".into(),
            workload: "Deployment/web".into(),
            xds_host: host.into(),
            xds_port: 15010,
            admin: "127.0.0.1:15000".parse().expect("addr"),
            delta,
            max_regex_program_size: 250,
        }
    }

    fn sample(host: &str, delta: bool) -> Value {
        bootstrap(host, delta).to_json()
    }

    fn tls() -> XdsTls {
        XdsTls {
            control_plane: SpiffeId::new("cluster.local", "remora-system", "remora"),
        }
    }

    /// The SDS source of a secret config, which must be the agent's cluster over gRPC.
    fn assert_from_agent(secret: &Value, name: &str) {
        assert_eq!(secret["name"], name);
        let source = &secret["sds_config"];
        assert_eq!(source["resource_api_version"], "V3");
        let api = &source["api_config_source"];
        assert_eq!(
            (&api["api_type"], &api["transport_api_version"]),
            (&json!("GRPC"), &json!("V3"))
        );
        assert_eq!(
            api["grpc_services"],
            json!([{"envoy_grpc": {"cluster_name": SDS_CLUSTER}}])
        );
    }

    #[test]
    fn tls_to_the_control_plane_adds_the_agent_and_a_transport_socket_only() {
        let b = bootstrap("remora.remora-system.svc", false);
        let with = b.to_json_with(Some(&tls()));
        let mut stripped = with.clone();
        let clusters = &mut stripped["static_resources"]["clusters"];
        let socket = clusters[0]
            .as_object_mut()
            .and_then(|c| c.remove("transport_socket"))
            .expect("a transport socket on the xDS cluster");
        let sds = clusters
            .as_array_mut()
            .and_then(|c| c.pop())
            .expect("a second cluster");
        assert_eq!(stripped, b.to_json(), "nothing else differs");

        assert_eq!(sds["name"], SDS_CLUSTER);
        assert_eq!(sds["type"], "STATIC");
        assert_eq!(
            sds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"],
            json!({"pipe": {"path": SDS_SOCKET}})
        );
        assert_eq!(sds["typed_extension_protocol_options"], http2_only());

        assert_eq!(socket["name"], "envoy.transport_sockets.tls");
        let context = &socket["typed_config"];
        assert_eq!(context["sni"], "remora.remora-system.svc");
        let common = &context["common_tls_context"];
        assert_eq!(common["alpn_protocols"], json!(["h2"]));
        assert_from_agent(
            &common["tls_certificate_sds_secret_configs"][0],
            WORKLOAD_SECRET,
        );
        let validation = &common["combined_validation_context"];
        assert_from_agent(
            &validation["validation_context_sds_secret_config"],
            TRUST_BUNDLE_SECRET,
        );
        assert_eq!(
            validation["default_validation_context"]["match_typed_subject_alt_names"],
            json!([{
                "san_type": "URI",
                "matcher": {"exact": "spiffe://cluster.local/ns/remora-system/sa/remora"},
            }])
        );
    }

    #[test]
    fn the_regex_limit_is_a_static_runtime_layer_below_the_admin_layer() {
        let b = sample("127.0.0.1", false);
        let layers = &b["layered_runtime"]["layers"];
        assert_eq!(
            layers[0]["static_layer"][RE2_MAX_PROGRAM_SIZE_KEY],
            json!(250)
        );
        assert_eq!(layers[1], json!({"name": "admin", "admin_layer": {}}));
    }

    #[test]
    fn a_control_plane_reached_by_address_gets_no_sni() {
        let b = bootstrap("10.96.0.10", false).to_json_with(Some(&tls()));
        let context = &b["static_resources"]["clusters"][0]["transport_socket"]["typed_config"];
        assert!(context["common_tls_context"].is_object());
        assert_eq!(context.get("sni"), None);
    }

    #[test]
    fn identity_control_plane_and_mode() {
        let b = sample("127.0.0.1", false);
        assert_eq!(b["node"]["id"], "demo/web-0");
        assert_eq!(b["node"]["metadata"]["SERVICE_ACCOUNT"], "web");
        assert_eq!(b["dynamic_resources"]["ads_config"]["api_type"], "GRPC");
        let cluster = &b["static_resources"]["clusters"][0];
        assert_eq!(cluster["type"], "STATIC");
        let addr = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"];
        assert_eq!(
            (addr["address"].as_str(), addr["port_value"].as_u64()),
            (Some("127.0.0.1"), Some(15010))
        );

        let b = sample("remora.remora-system.svc", true);
        assert_eq!(
            b["dynamic_resources"]["ads_config"]["api_type"],
            "DELTA_GRPC"
        );
        assert_eq!(b["static_resources"]["clusters"][0]["type"], "STRICT_DNS");
    }
}
