//! Labels on the proxy's Prometheus stats: who sends (the proxy's own namespace, workload and
//! service account, fixed at start), to which Service and through which route rule (cut out of the
//! route-level stat names by regex).
//!
//! Every route carries its name as its `stat_prefix` (`route.rs`), so Envoy keeps
//! `vhost.<host>.route.<route>.upstream_rq_*` per route, with outbound hosts named
//! `<service>.<namespace>.svc.<domain>:<port>` (the model's `vhost_name`). Service and
//! namespace names hold no dot, and the port ends the host, so the regexes below find each
//! part whatever the cluster domain. Envoy matches each regex against the whole stat name and
//! removes the first capture group from it; the second is the label's value. Its Prometheus
//! output then reads, for example,
//! `envoy_vhost_route_upstream_rq_total{remora_destination_service="reviews",...,remora_route="shop/reviews/canary"}`.

use serde_json::{Value, json};

/// The namespace of the proxy's pod (a fixed value).
pub const SOURCE_NAMESPACE: &str = "remora_source_namespace";
/// The workload of the proxy's pod (a fixed value), e.g. `Deployment/web`.
pub const SOURCE_WORKLOAD: &str = "remora_source_workload";
/// The service account of the proxy's pod (a fixed value): the workload's mesh identity.
pub const SOURCE_SERVICE_ACCOUNT: &str = "remora_source_service_account";
/// The destination Service's name, from an outbound virtual host.
pub const DESTINATION_SERVICE: &str = "remora_destination_service";
/// The destination Service's namespace, from an outbound virtual host.
pub const DESTINATION_NAMESPACE: &str = "remora_destination_namespace";
/// The destination Service's port, from an outbound virtual host.
pub const DESTINATION_PORT: &str = "remora_destination_port";
/// The route's name: `<namespace>/<route>/<rule>` for a TrafficRoute's rule, `default` for
/// a Service's catch-all, `inbound` for the pod's own application.
pub const ROUTE: &str = "remora_route";

// An outbound host as far as its port, `<service>.<namespace>.svc.<domain>:<port>.`, with one
// part captured twice: with the separator after it (removed from the name) and alone (the
// value). The `svc.<domain>` goes with the namespace.
const SERVICE: &str = r"^vhost\.(([^.:]+)\.)[^.:]+\.svc\.[^:]*:\d+\.";
const NAMESPACE: &str = r"^vhost\.[^.:]+\.(([^.:]+)\.svc\.[^:]*:)\d+\.";
const PORT: &str = r"^vhost\.[^.:]+\.[^.:]+\.svc\.[^:]*:((\d+)\.)";
// Every route stat is `upstream_rq...`, which ends a route name that may hold dots; the
// inbound host is plain `inbound`.
const ROUTE_NAME: &str = r"^vhost\.(?:[^.:]+|[^:]+:\d+)\.route\.((.+?)\.)upstream_rq";

/// Envoy's `stats_config` for a proxy of `workload` in `namespace` running as
/// `service_account`. Envoy's default tags stay: they name the response code class
/// (`envoy_response_code_class`) the error ratio needs.
pub fn stats_config(namespace: &str, workload: &str, service_account: &str) -> Value {
    json!({
        "stats_tags": [
            {"tag_name": SOURCE_NAMESPACE, "fixed_value": namespace},
            {"tag_name": SOURCE_WORKLOAD, "fixed_value": workload},
            {"tag_name": SOURCE_SERVICE_ACCOUNT, "fixed_value": service_account},
            {"tag_name": DESTINATION_SERVICE, "regex": SERVICE},
            {"tag_name": DESTINATION_NAMESPACE, "regex": NAMESPACE},
            {"tag_name": DESTINATION_PORT, "regex": PORT},
            {"tag_name": ROUTE, "regex": ROUTE_NAME},
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_is_fixed_and_the_destination_extracted() {
        let c = stats_config("shop", "Deployment/web", "web-sa");
        let tags = c["stats_tags"].as_array().expect("tags");
        assert_eq!(
            tags[0],
            json!({"tag_name": SOURCE_NAMESPACE, "fixed_value": "shop"})
        );
        assert_eq!(tags[1]["fixed_value"], "Deployment/web");
        assert_eq!(tags[2]["fixed_value"], "web-sa");
        let names: Vec<_> = tags.iter().map(|t| &t["tag_name"]).collect();
        assert_eq!(
            names,
            [
                SOURCE_NAMESPACE,
                SOURCE_WORKLOAD,
                SOURCE_SERVICE_ACCOUNT,
                DESTINATION_SERVICE,
                DESTINATION_NAMESPACE,
                DESTINATION_PORT,
                ROUTE
            ]
        );
    }
}
