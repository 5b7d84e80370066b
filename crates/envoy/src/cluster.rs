//! Clusters: EDS clusters for Services, static ones for the local application,
//! original-destination ones for captured traffic passed through, and the one cluster that
//! stands for backends that do not exist.

use envoy_types::pb::envoy::{
    config::{
        cluster::v3::{
            CircuitBreakers, Cluster, OutlierDetection, circuit_breakers::Thresholds, cluster,
        },
        core::v3::{Http2ProtocolOptions, RoutingPriority},
    },
    extensions::upstreams::http::v3::{
        HttpProtocolOptions, http_protocol_options::ExplicitHttpConfig,
        http_protocol_options::UpstreamProtocolOptions,
        http_protocol_options::explicit_http_config::ProtocolConfig,
    },
};
use prost::Name;
use remora_model::config::{self, Discovery, ResourceType};

use crate::{EnvoyResource, endpoint, mtls, proto, type_url};

/// The cluster routes point at for a backend the model could not resolve (its Service or port
/// does not exist). It has no endpoints, so Envoy answers such requests with 503 and closes
/// such TCP connections, while the other backends of a split keep their share.
///
/// A route action that names only this cluster could have been a `direct_response` 503
/// instead, but a split with one missing backend still needs a cluster for that share, so
/// one mechanism serves both cases.
pub const UNRESOLVED_CLUSTER: &str = "remora-unresolved";

/// The cluster an `HTTPRoute`'s invalid backend's share goes to. It is never defined: route
/// configs come over RDS, which does not check the clusters they name, and a request sent to
/// a cluster Envoy does not have gets the route's `cluster_not_found_response_code`, 500 as
/// Gateway API requires, for that share alone.
pub const INVALID_BACKEND_CLUSTER: &str = "remora-invalid-backend";

/// The [`UNRESOLVED_CLUSTER`] resource. The model does not list it among a proxy's clusters;
/// the xDS server should serve it to every proxy beside the model's clusters. It is a few
/// bytes, never changes, and a cluster no route names costs Envoy nothing, whereas a route
/// naming a cluster Envoy does not have would leave the route config unusable.
pub fn unresolved_cluster() -> EnvoyResource {
    let c = Cluster {
        name: UNRESOLVED_CLUSTER.to_owned(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(proto::duration(std::time::Duration::from_secs(1))),
        load_assignment: Some(endpoint::static_assignment(UNRESOLVED_CLUSTER, &[])),
        ..Default::default()
    };
    proto::packed(UNRESOLVED_CLUSTER, type_url(ResourceType::Cluster), &c)
}

pub(crate) fn cluster(c: &config::Cluster) -> Cluster {
    let (kind, eds_cluster_config, load_assignment) = match &c.discovery {
        Discovery::Eds => (
            cluster::DiscoveryType::Eds,
            Some(cluster::EdsClusterConfig {
                eds_config: Some(proto::ads()),
                // Empty: the endpoints resource has the cluster's own name.
                service_name: String::new(),
            }),
            None,
        ),
        Discovery::Static(addresses) => (
            cluster::DiscoveryType::Static,
            None,
            Some(endpoint::static_assignment(&c.name, addresses)),
        ),
        Discovery::OriginalDestination => (cluster::DiscoveryType::OriginalDst, None, None),
    };
    // An original-destination cluster has one host per destination, which Envoy picks itself
    // and refuses any other policy for.
    let lb_policy = match kind {
        cluster::DiscoveryType::OriginalDst => cluster::LbPolicy::ClusterProvided,
        _ => cluster::LbPolicy::RoundRobin,
    };
    Cluster {
        name: c.name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(kind as i32)),
        eds_cluster_config,
        load_assignment,
        connect_timeout: Some(proto::duration(c.connect_timeout)),
        lb_policy: lb_policy as i32,
        outlier_detection: c.outlier_detection.as_ref().map(outlier_detection),
        circuit_breakers: c.circuit_breaker.as_ref().map(circuit_breakers),
        // One entry at most: prost encodes this map in hash order, which is only stable
        // when there is nothing to order.
        typed_extension_protocol_options: if c.http2 {
            [(HttpProtocolOptions::full_name(), proto::any(&http2_only()))].into()
        } else {
            Default::default()
        },
        // Mutual TLS to the endpoints marked for it; plaintext (no transport socket) to the
        // others.
        transport_socket_matches: c
            .mtls
            .as_ref()
            .map(mtls::socket_matches)
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// Consecutive 5xx answers (which include connection failures) eject an endpoint.
fn outlier_detection(o: &config::OutlierDetection) -> OutlierDetection {
    OutlierDetection {
        consecutive_5xx: Some(proto::u32_value(o.consecutive_errors)),
        interval: Some(proto::duration(o.interval)),
        base_ejection_time: Some(proto::duration(o.base_ejection_time)),
        max_ejection_percent: Some(proto::u32_value(o.max_ejection_percent)),
        ..Default::default()
    }
}

/// Limits the policy leaves out keep Envoy's defaults.
fn circuit_breakers(c: &config::CircuitBreaker) -> CircuitBreakers {
    CircuitBreakers {
        thresholds: vec![Thresholds {
            priority: RoutingPriority::Default as i32,
            max_connections: c.max_connections.map(proto::u32_value),
            max_pending_requests: c.max_pending_requests.map(proto::u32_value),
            max_requests: c.max_requests.map(proto::u32_value),
            max_retries: c.max_retries.map(proto::u32_value),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// HTTP/2 to the endpoints whatever the client spoke: gRPC and h2c ports need it.
fn http2_only() -> HttpProtocolOptions {
    HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                    Http2ProtocolOptions::default(),
                )),
            },
        )),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn original_destination_clusters_leave_the_choice_of_host_to_envoy() {
        let c = cluster(&config::Cluster {
            name: "passthrough".into(),
            connect_timeout: Duration::from_millis(1_500),
            discovery: Discovery::OriginalDestination,
            outlier_detection: None,
            circuit_breaker: None,
            http2: false,
            mtls: None,
        });
        assert_eq!(c.name, "passthrough");
        assert_eq!(
            c.cluster_discovery_type,
            Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::OriginalDst as i32
            ))
        );
        assert_eq!(c.lb_policy, cluster::LbPolicy::ClusterProvided as i32);
        assert_eq!(c.load_assignment, None, "the destination is the endpoint");
        assert_eq!(c.eds_cluster_config, None);
        assert_eq!(
            c.connect_timeout,
            Some(proto::duration(Duration::from_millis(1_500)))
        );
    }
}
