//! The bootstrap a sidecar starts with: who it is, where the control plane is, and an admin
//! port on loopback. Everything else it learns over ADS.

use std::net::SocketAddr;

use serde_json::{Value, json};

use remora_model::input::ObjectKey;

/// The name of the static cluster that points at the control plane.
pub const XDS_CLUSTER: &str = "remora-xds";

/// What a sidecar's bootstrap says; [`Bootstrap::to_json`] renders it as Envoy reads it.
#[derive(Clone, Debug)]
pub struct Bootstrap {
    /// The proxy's pod: its node id (`namespace/name`), cluster and metadata.
    pub proxy: ObjectKey,
    /// The pod's service account, sent in the node metadata.
    pub service_account: String,
    /// Host (an IP or a DNS name) of the control plane's xDS server.
    pub xds_host: String,
    /// Port of the control plane's xDS server.
    pub xds_port: u16,
    /// Envoy's admin interface; keep it on loopback, it can change the proxy.
    pub admin: SocketAddr,
    /// Incremental xDS instead of state of the world.
    pub delta: bool,
}

impl Bootstrap {
    /// The bootstrap as Envoy's JSON config: node identity, admin address, ADS for clusters
    /// and listeners, and one static cluster ([`XDS_CLUSTER`]) reaching the control plane.
    pub fn to_json(&self) -> Value {
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
            "static_resources": {
                "clusters": [{
                    "name": XDS_CLUSTER,
                    "type": discovery,
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        },
                    },
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(host: &str, delta: bool) -> Value {
        Bootstrap {
            proxy: ObjectKey::new("demo", "web-0"),
            service_account: "web".into(),
            xds_host: host.into(),
            xds_port: 15010,
            admin: "127.0.0.1:15000".parse().expect("addr"),
            delta,
        }
        .to_json()
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
