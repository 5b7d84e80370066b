//! The v3 type URL of each kind of resource, as xDS requests and responses carry it: the one
//! definition the xDS server, the load test and the CLI all read.

use remora_model::config::ResourceType;

/// Clusters (CDS).
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// The endpoints of a cluster (EDS).
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// Listeners (LDS).
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// Route configurations (RDS).
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// The type URL of one kind of resource.
pub fn type_url(kind: ResourceType) -> &'static str {
    match kind {
        ResourceType::Listener => LISTENER,
        ResourceType::RouteConfig => ROUTE,
        ResourceType::Cluster => CLUSTER,
        ResourceType::Endpoints => ENDPOINT,
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::{
        cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
        route::v3::RouteConfiguration,
    };
    use prost::Name;

    use super::*;

    #[test]
    fn type_urls_match_the_generated_types() {
        assert_eq!(type_url(ResourceType::Listener), Listener::type_url());
        assert_eq!(
            type_url(ResourceType::RouteConfig),
            RouteConfiguration::type_url()
        );
        assert_eq!(type_url(ResourceType::Cluster), Cluster::type_url());
        assert_eq!(
            type_url(ResourceType::Endpoints),
            ClusterLoadAssignment::type_url()
        );
    }
}
