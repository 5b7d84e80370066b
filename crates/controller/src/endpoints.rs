//! Which API lists a Service's endpoints on this server. Current Kubernetes serves
//! `discovery.k8s.io/v1` EndpointSlices; 1.17-1.20 serve only `v1beta1`; anything older has
//! only core `Endpoints`. The choice is made once, from API discovery, and logged once.

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::{WatchStreamExt, watcher},
};
use remora_inputs::convert;
use tracing::{info, warn};

use crate::watches::{Watches, json, one};

/// The API a Service's endpoints are read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointApi {
    /// `discovery.k8s.io/v1` EndpointSlices.
    SlicesV1,
    /// `discovery.k8s.io/v1beta1` EndpointSlices (Kubernetes 1.17-1.20).
    SlicesV1beta1,
    /// Core `v1` Endpoints (older servers).
    Endpoints,
}

impl EndpointApi {
    /// Picks the newest API the server serves EndpointSlices with, from the resources each
    /// group version lists (`None`: that group version is not served).
    pub fn pick(v1: Option<&[String]>, v1beta1: Option<&[String]>) -> EndpointApi {
        let serves =
            |r: Option<&[String]>| r.is_some_and(|r| r.iter().any(|n| n == "endpointslices"));
        if serves(v1) {
            EndpointApi::SlicesV1
        } else if serves(v1beta1) {
            EndpointApi::SlicesV1beta1
        } else {
            EndpointApi::Endpoints
        }
    }

    /// Feeds the model every Service's endpoints from this API.
    pub fn watch(self, watches: &mut Watches) {
        match self {
            EndpointApi::SlicesV1 => {
                watches.watch(|s: &EndpointSlice| convert::endpoint_slice(s).map(one));
            }
            EndpointApi::SlicesV1beta1 => {
                let resource = ApiResource::from_gvk_with_plural(
                    &GroupVersionKind::gvk("discovery.k8s.io", "v1beta1", "EndpointSlice"),
                    "endpointslices",
                );
                let api = Api::<DynamicObject>::all_with(watches.client().clone(), &resource);
                let stream = watcher(api, watcher::Config::default()).default_backoff();
                watches.watch_stream("EndpointSlice", stream, |s: &DynamicObject| {
                    convert::endpoint_slice_v1beta1(&json(s)).map(one)
                });
            }
            EndpointApi::Endpoints => watches.watch(convert::endpoints),
        }
    }

    /// Asks the server. A discovery error other than "not served" counts as not served:
    /// the fallback still works, and the log says why it was taken.
    pub async fn discover(client: &Client) -> EndpointApi {
        let mut found = Vec::new();
        for version in ["discovery.k8s.io/v1", "discovery.k8s.io/v1beta1"] {
            match client.list_api_group_resources(version).await {
                Ok(list) => found.push(Some(
                    list.resources
                        .into_iter()
                        .map(|r| r.name)
                        .collect::<Vec<_>>(),
                )),
                Err(kube::Error::Api(e)) if e.code == 404 => found.push(None),
                Err(e) => {
                    warn!(%version, error = %e, "API discovery failed; treating it as not served");
                    found.push(None);
                }
            }
        }
        let api = EndpointApi::pick(found[0].as_deref(), found[1].as_deref());
        match api {
            EndpointApi::SlicesV1 => info!("endpoints from discovery.k8s.io/v1 EndpointSlices"),
            EndpointApi::SlicesV1beta1 => info!(
                "discovery.k8s.io/v1 is not served (Kubernetes < 1.21): endpoints from v1beta1 EndpointSlices"
            ),
            EndpointApi::Endpoints => {
                warn!("this server serves no EndpointSlices: endpoints from core/v1 Endpoints")
            }
        }
        api
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn newest_served_api_wins() {
        let slices = names(&["endpointslices"]);
        let other = names(&["something"]);
        assert_eq!(
            EndpointApi::pick(Some(&slices), Some(&slices)),
            EndpointApi::SlicesV1
        );
        assert_eq!(
            EndpointApi::pick(None, Some(&slices)),
            EndpointApi::SlicesV1beta1
        );
        assert_eq!(
            EndpointApi::pick(Some(&other), None),
            EndpointApi::Endpoints
        );
        assert_eq!(EndpointApi::pick(None, None), EndpointApi::Endpoints);
    }
}
