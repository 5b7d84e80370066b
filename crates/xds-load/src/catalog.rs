//! What the simulated proxies need to know about a resource: its name, its version and the
//! names it makes a proxy subscribe to (an EDS cluster's endpoints, a listener's route
//! configs). Decoding is what a real Envoy spends its time on, but here it would compete with
//! the server for the same two cores, so each distinct encoding is decoded once and shared
//! by every simulated proxy: ten thousand proxies of a few classes receive the same bytes.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, MutexGuard},
};

use envoy_types::pb::envoy::{
    config::{
        cluster::v3::{
            Cluster,
            cluster::{ClusterDiscoveryType, DiscoveryType},
        },
        endpoint::v3::ClusterLoadAssignment,
        listener::v3::{FilterChain, Listener, filter::ConfigType},
        route::v3::RouteConfiguration,
    },
    extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, http_connection_manager::RouteSpecifier,
    },
};
use prost::{Message, Name};
use remora_xds::snapshot::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use xxhash_rust::xxh3::xxh3_64;

/// One decoded resource.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: Arc<str>,
    /// xxh3-64 of the encoding: the server's version of the resource, as a number.
    pub version: u64,
    /// Names of the resources of the next type this one makes a proxy ask for.
    pub refs: Box<[Arc<str>]>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot decode a {type_url}: {source}")]
    Protobuf {
        type_url: &'static str,
        source: prost::DecodeError,
    },
}

/// Every distinct encoding seen so far, by type and hash.
#[derive(Debug, Default)]
pub struct Catalog {
    known: Mutex<HashMap<(&'static str, u64), Arc<Entry>>>,
}

impl Catalog {
    /// The entry for one resource of `type_url` (one of the four served types).
    pub fn entry(&self, type_url: &'static str, body: &[u8]) -> Result<Arc<Entry>, DecodeError> {
        let version = xxh3_64(body);
        if let Some(e) = self.lock().get(&(type_url, version)) {
            return Ok(e.clone());
        }
        // Decoded outside the lock: two proxies may decode the same bytes at once, and the
        // first to insert wins; both results are equal.
        let (name, refs) =
            decode(type_url, body).map_err(|source| DecodeError::Protobuf { type_url, source })?;
        let entry = Arc::new(Entry {
            name: name.into(),
            version,
            refs: refs.into_iter().map(Arc::from).collect(),
        });
        Ok(self
            .lock()
            .entry((type_url, version))
            .or_insert(entry)
            .clone())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(&'static str, u64), Arc<Entry>>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A resource's name and the names it refers to.
fn decode(type_url: &str, body: &[u8]) -> Result<(String, BTreeSet<String>), prost::DecodeError> {
    Ok(match type_url {
        CLUSTER => {
            let c = Cluster::decode(body)?;
            let eds = c.cluster_discovery_type
                == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
            let refs = eds
                .then(|| match c.eds_cluster_config.as_ref() {
                    Some(e) if !e.service_name.is_empty() => e.service_name.clone(),
                    _ => c.name.clone(),
                })
                .into_iter()
                .collect();
            (c.name, refs)
        }
        LISTENER => {
            let l = Listener::decode(body)?;
            let mut refs = BTreeSet::new();
            for chain in l.filter_chains.iter().chain(&l.default_filter_chain) {
                route_config_names(chain, &mut refs)?;
            }
            (l.name, refs)
        }
        ENDPOINT => (
            ClusterLoadAssignment::decode(body)?.cluster_name,
            BTreeSet::new(),
        ),
        ROUTE => (RouteConfiguration::decode(body)?.name, BTreeSet::new()),
        _ => (String::new(), BTreeSet::new()),
    })
}

/// The route configs that a chain's HTTP connection managers take over RDS.
fn route_config_names(
    chain: &FilterChain,
    out: &mut BTreeSet<String>,
) -> Result<(), prost::DecodeError> {
    for filter in &chain.filters {
        if let Some(ConfigType::TypedConfig(any)) = &filter.config_type
            && any.type_url == HttpConnectionManager::type_url()
            && let Some(RouteSpecifier::Rds(rds)) =
                HttpConnectionManager::decode(any.value.as_slice())?.route_specifier
        {
            out.insert(rds.route_config_name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::{
        envoy::{
            config::{
                cluster::v3::cluster::EdsClusterConfig,
                listener::v3::{Filter, filter},
            },
            extensions::filters::network::http_connection_manager::v3::Rds,
        },
        google::protobuf::Any,
    };

    use super::*;

    fn names(e: &Entry) -> Vec<&str> {
        e.refs.iter().map(|r| &**r).collect()
    }

    #[test]
    fn eds_clusters_and_rds_listeners_name_what_to_subscribe_to() {
        let catalog = Catalog::default();
        let eds = Cluster {
            name: "outbound|8080||a.ns".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig::default()),
            ..Default::default()
        };
        let e = catalog
            .entry(CLUSTER, &eds.encode_to_vec())
            .expect("decodes");
        assert_eq!(
            (&*e.name, names(&e)),
            ("outbound|8080||a.ns", vec!["outbound|8080||a.ns"])
        );
        let fixed = Cluster {
            name: "inbound".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
            ..Default::default()
        };
        let e = catalog
            .entry(CLUSTER, &fixed.encode_to_vec())
            .expect("decodes");
        assert!(e.refs.is_empty());

        let hcm = HttpConnectionManager {
            route_specifier: Some(RouteSpecifier::Rds(Rds {
                route_config_name: "8080".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let listener = Listener {
            name: "0.0.0.0_8080".into(),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "hcm".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(Any {
                        type_url: HttpConnectionManager::type_url(),
                        value: hcm.encode_to_vec(),
                    })),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let body = listener.encode_to_vec();
        let e = catalog.entry(LISTENER, &body).expect("decodes");
        assert_eq!(names(&e), ["8080"]);
        assert_eq!(e.version, xxh3_64(&body));
        // The same bytes again are the same entry, not a second decode.
        assert!(Arc::ptr_eq(
            &e,
            &catalog.entry(LISTENER, &body).expect("cached")
        ));
        assert!(catalog.entry(ROUTE, b"\xff\xff").is_err());
    }
}
