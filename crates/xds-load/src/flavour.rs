//! The two flavours of ADS as a simulated proxy speaks them: the first requests, the ACK of
//! each response, and how a subscription changes.

use std::{collections::BTreeMap, sync::Arc};

use envoy_types::pb::envoy::{
    config::core::v3::Node,
    service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest},
};
use prost::Message;
use remora_xds::{
    server::{DELTA_PATH, SOTW_PATH},
    snapshot::{CLUSTER, LISTENER, is_wildcard_type, served_type},
};

use crate::{
    catalog::Catalog,
    fleet::{Logged, StreamError},
    held::Held,
    wire::{DeltaResponse, SotwResponse},
};

/// One flavour of the protocol, as a proxy speaks it.
pub trait Flavour: Default + Send + 'static {
    type Req: Message + Send + 'static;
    /// The response reduced to what the proxy reads of it ([`wire`]).
    type Resp: Message + Default + Send + 'static;
    /// The ADS method.
    const PATH: &'static str;
    /// A first request of `type_url`, carrying `node` if given.
    fn subscribe(type_url: &'static str, node: Option<Node>) -> Self::Req;
    /// The wildcard CDS (carrying the node, as Envoy sends it only once) and LDS requests.
    fn first(node: Node) -> [Self::Req; 2] {
        [
            Self::subscribe(CLUSTER, Some(node)),
            Self::subscribe(LISTENER, None),
        ]
    }
    /// Takes in a response: updates what the proxy holds, and returns what to log and the
    /// ACK.
    fn take(
        &mut self,
        response: Self::Resp,
        held: &mut Held,
        catalog: &Catalog,
    ) -> Result<(Logged, Self::Req), StreamError>;
    /// The request that changes the subscription of `type_url` from `old` to `new` (both
    /// sorted).
    fn resubscribe(&self, type_url: &'static str, old: &[Arc<str>], new: &[Arc<str>]) -> Self::Req;
}

/// State of the world: the proxy remembers the last version and nonce of each type, which
/// every later request of that type carries.
#[derive(Default)]
pub struct Sotw {
    last: BTreeMap<&'static str, (String, String)>,
}

impl Flavour for Sotw {
    type Req = DiscoveryRequest;
    type Resp = SotwResponse;
    const PATH: &'static str = SOTW_PATH;

    fn subscribe(type_url: &'static str, node: Option<Node>) -> DiscoveryRequest {
        DiscoveryRequest {
            node,
            type_url: type_url.into(),
            ..Default::default()
        }
    }

    fn take(
        &mut self,
        r: SotwResponse,
        held: &mut Held,
        catalog: &Catalog,
    ) -> Result<(Logged, DiscoveryRequest), StreamError> {
        let type_url = served_type(&r.type_url).ok_or(StreamError::UnknownType(r.type_url))?;
        let bodies: Vec<&[u8]> = r.resources.iter().map(|p| &*p.value).collect();
        let entries = catalog.entries(type_url, &bodies)?;
        // Listeners and clusters come as a whole set each time; routes and endpoints may
        // come a few at a time.
        let full = is_wildcard_type(type_url);
        let set = catalog.set(type_url, entries.clone());
        if full {
            held.replace(type_url, set.clone());
        } else {
            held.merge(catalog, type_url, &set);
        }
        self.last
            .insert(type_url, (r.version_info.clone(), r.nonce.clone()));
        let ack = DiscoveryRequest {
            version_info: r.version_info,
            response_nonce: r.nonce,
            type_url: type_url.into(),
            // A state-of-the-world request always names the whole subscription.
            resource_names: held
                .subscription(type_url)
                .iter()
                .map(|n| n.to_string())
                .collect(),
            ..Default::default()
        };
        let logged = Logged::new(type_url, set, Vec::new(), full);
        Ok((logged, ack))
    }

    fn resubscribe(
        &self,
        type_url: &'static str,
        _old: &[Arc<str>],
        new: &[Arc<str>],
    ) -> DiscoveryRequest {
        let (version_info, response_nonce) = self.last.get(type_url).cloned().unwrap_or_default();
        DiscoveryRequest {
            version_info,
            response_nonce,
            type_url: type_url.into(),
            resource_names: new.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        }
    }
}

/// Incremental: the proxy keeps no per-type protocol state; subscriptions change by
/// difference.
#[derive(Default)]
pub struct Delta;

impl Flavour for Delta {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaResponse;
    const PATH: &'static str = DELTA_PATH;

    fn subscribe(type_url: &'static str, node: Option<Node>) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            node,
            type_url: type_url.into(),
            ..Default::default()
        }
    }

    fn take(
        &mut self,
        r: DeltaResponse,
        held: &mut Held,
        catalog: &Catalog,
    ) -> Result<(Logged, DeltaDiscoveryRequest), StreamError> {
        let type_url = served_type(&r.type_url).ok_or(StreamError::UnknownType(r.type_url))?;
        let bodies = r
            .resources
            .iter()
            .map(|res| {
                res.resource
                    .as_ref()
                    .map(|p| &*p.value)
                    .ok_or_else(|| StreamError::NoBody(res.name.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let entries = catalog.entries(type_url, &bodies)?;
        for (res, entry) in r.resources.iter().zip(&entries) {
            // Incremental responses state each resource's version; it must be the content's,
            // or a proxy reconnecting with `initial_resource_versions` would be misled.
            if u64::from_str_radix(&res.version, 16).ok() != Some(entry.version)
                || *entry.name != res.name
            {
                return Err(StreamError::Version {
                    type_url,
                    name: res.name.clone(),
                    stated: res.version.clone(),
                    actual: entry.version,
                });
            }
        }
        let removed: Vec<Arc<str>> = r
            .removed_resources
            .iter()
            .map(|n| Arc::from(n.as_str()))
            .collect();
        let carried = catalog.set(type_url, entries);
        held.update(catalog, type_url, &carried, &removed);
        let ack = DeltaDiscoveryRequest {
            type_url: type_url.into(),
            response_nonce: r.nonce,
            ..Default::default()
        };
        let logged = Logged::new(type_url, carried, removed, false);
        Ok((logged, ack))
    }

    fn resubscribe(
        &self,
        type_url: &'static str,
        old: &[Arc<str>],
        new: &[Arc<str>],
    ) -> DeltaDiscoveryRequest {
        let missing_from = |set: &[Arc<str>], n: &Arc<str>| set.binary_search(n).is_err();
        DeltaDiscoveryRequest {
            type_url: type_url.into(),
            resource_names_subscribe: new
                .iter()
                .filter(|n| missing_from(old, n))
                .map(|n| n.to_string())
                .collect(),
            resource_names_unsubscribe: old
                .iter()
                .filter(|n| missing_from(new, n))
                .map(|n| n.to_string())
                .collect(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use remora_xds::snapshot::ENDPOINT;

    use super::*;

    #[test]
    fn an_incremental_resubscription_names_only_the_difference() {
        let names = |n: &[&str]| n.iter().map(|n| Arc::from(*n)).collect::<Vec<_>>();
        let req = Delta.resubscribe(ENDPOINT, &names(&["a", "b", "c"]), &names(&["b", "d"]));
        assert_eq!(req.resource_names_subscribe, ["d"]);
        assert_eq!(req.resource_names_unsubscribe, ["a", "c"]);
        let req = Sotw::default().resubscribe(ENDPOINT, &names(&["a"]), &names(&["b", "d"]));
        assert_eq!(req.resource_names, ["b", "d"]);
    }
}
