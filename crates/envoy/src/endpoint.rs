//! Endpoints: `ClusterLoadAssignment`s, sent over EDS or inlined into static clusters.

use std::{collections::BTreeMap, net::SocketAddr};

use envoy_types::pb::envoy::config::{
    core::v3::{HealthStatus, Locality},
    endpoint::v3::{ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint},
};
use remora_model::config::ClusterEndpoints;

use crate::{mtls, proto};

/// The endpoints of one cluster, one locality per zone so that Envoy can prefer nearby
/// endpoints once zone-aware routing is enabled. Endpoints without a zone share a locality
/// with none. The model only lists ready endpoints, so every one is marked healthy. One
/// whose pod takes mutual TLS carries the metadata its cluster's transport socket match
/// selects.
pub(crate) fn load_assignment(endpoints: &ClusterEndpoints) -> ClusterLoadAssignment {
    let mut zones: BTreeMap<Option<&str>, Vec<(SocketAddr, bool)>> = BTreeMap::new();
    for e in &endpoints.endpoints {
        zones
            .entry(e.zone.as_deref())
            .or_default()
            .push((e.address, e.mtls));
    }
    ClusterLoadAssignment {
        cluster_name: endpoints.cluster.to_string(),
        endpoints: zones
            .into_iter()
            .map(|(zone, addresses)| locality(zone, &addresses))
            .collect(),
        ..Default::default()
    }
}

/// Fixed addresses, for clusters that carry their endpoints inline.
pub(crate) fn static_assignment(cluster: &str, addresses: &[SocketAddr]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster.to_owned(),
        endpoints: if addresses.is_empty() {
            Vec::new()
        } else {
            let plain: Vec<_> = addresses.iter().map(|a| (*a, false)).collect();
            vec![locality(None, &plain)]
        },
        ..Default::default()
    }
}

/// A locality of `(address, takes mutual TLS)` endpoints.
fn locality(zone: Option<&str>, endpoints: &[(SocketAddr, bool)]) -> LocalityLbEndpoints {
    LocalityLbEndpoints {
        locality: zone.map(|z| Locality {
            zone: z.to_owned(),
            ..Default::default()
        }),
        lb_endpoints: endpoints
            .iter()
            .map(|(a, mtls)| LbEndpoint {
                health_status: HealthStatus::Healthy as i32,
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                    address: Some(proto::socket_address(a.ip(), a.port())),
                    ..Default::default()
                })),
                metadata: mtls.then(mtls::endpoint_metadata),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}
