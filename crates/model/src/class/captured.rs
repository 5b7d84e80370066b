//! Outbound config for captured addressing: one capture listener with a filter chain per
//! Service port (matched by the original destination's addresses and port), and a route config
//! per HTTP Service port, so a change to one Service's routing re-sends that route config
//! alone.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::IpAddr,
    sync::Arc,
};

use remora_api::sidecar_policy::{OUTBOUND_CAPTURE_PORT, UnknownDestinations};

use super::{Class, ClassUpdate, Env, SharedCache, host::vhost_name};
use crate::{
    config::{
        Accepts, Cluster, Direction, FilterChain, FilterChains, Listener, ListenerProtocol,
        Resource, ResourceType, RouteConfig, Unmatched, Versioned,
    },
    input::ObjectKey,
    routing::{PortRouting, ServiceRouting},
};

/// The outbound capture listener's name.
pub(crate) const OUTBOUND_LISTENER: &str = "outbound";
/// The original-destination cluster that passes through what the mesh does not route.
pub(crate) const PASSTHROUGH_CLUSTER: &str = "passthrough";

impl Class {
    /// Replaces the chains and route configs of `old` routing with those of `new`.
    pub(super) fn set_captured(
        &mut self,
        env: &Env<'_>,
        cache: &mut SharedCache,
        service: &ObjectKey,
        (old, new): (Option<&ServiceRouting>, Option<&ServiceRouting>),
        update: &mut ClassUpdate,
    ) {
        // By name: a route config both the old and the new routing have is put once.
        let mut route_configs: BTreeMap<Arc<str>, Option<Resource>> = BTreeMap::new();
        // Chains of the old routing the new one does not have again.
        let mut stale: BTreeSet<Arc<str>> = BTreeSet::new();
        for (port, (_, pr)) in old.iter().flat_map(|old| &old.ports) {
            let name = vhost_name(env.settings, service, *port);
            if let PortRouting::Http { .. } = pr {
                route_configs.insert(name.clone(), None);
            }
            stale.insert(name);
        }
        // A headless Service without endpoints has no address to tell its traffic apart by.
        if let Some(new) = new.filter(|n| !n.addresses.is_empty()) {
            for (port, (_, pr)) in &new.ports {
                let name = vhost_name(env.settings, service, *port);
                let protocol = match pr {
                    PortRouting::Http { routes } => {
                        let vhost = self.virtual_host(env, cache, new, *port, routes);
                        let config = RouteConfig {
                            name: name.clone(),
                            virtual_hosts: [vhost].into_iter().collect(),
                        };
                        let config = Resource::RouteConfig(Versioned::new(config));
                        route_configs.insert(name.clone(), Some(config));
                        ListenerProtocol::Http {
                            route_config: name.clone(),
                        }
                    }
                    PortRouting::Tcp { clusters } => ListenerProtocol::Tcp {
                        clusters: super::weighted(clusters),
                    },
                };
                stale.remove(&name);
                let chain = Versioned::new(FilterChain {
                    name,
                    addresses: new.addresses.clone(),
                    port: *port,
                    protocol,
                    mtls: None,
                    authz: None,
                });
                // A routing change that leaves the chain as it was (most route edits change
                // only the route config) leaves the listener alone.
                if self.chains.get(&chain.value.name).map(|c| c.hash) != Some(chain.hash) {
                    self.chains.insert(chain);
                    update.listener = true;
                }
            }
        }
        for name in stale {
            if self.chains.get(&name).is_some() {
                self.chains.remove(&name);
                update.listener = true;
            }
        }
        for (name, resource) in route_configs {
            self.put(ResourceType::RouteConfig, name, resource, update);
        }
    }

    /// Puts the capture listener from the current chains, and the passthrough cluster if the
    /// policy lets unknown destinations through.
    pub(super) fn put_capture_listener(&mut self, update: &mut ClassUpdate) {
        let passthrough = self.defaults.unknown_destinations == UnknownDestinations::Passthrough;
        let unmatched = if passthrough {
            Unmatched::Passthrough {
                cluster: PASSTHROUGH_CLUSTER.into(),
            }
        } else {
            Unmatched::Refuse
        };
        let listener = Listener {
            name: OUTBOUND_LISTENER.into(),
            direction: Direction::Outbound,
            port: OUTBOUND_CAPTURE_PORT,
            accepts: Accepts::Captured {
                chains: without_overlaps(&self.chains),
                unmatched,
                mtls: None,
                authz: None,
            },
            access_log: self.defaults.access_log,
        };
        let cluster = passthrough.then(|| {
            Resource::Cluster(Versioned::new(Cluster::original_destination(
                PASSTHROUGH_CLUSTER.into(),
                self.defaults.connect_timeout,
            )))
        });
        self.put(
            ResourceType::Cluster,
            PASSTHROUGH_CLUSTER.into(),
            cluster,
            update,
        );
        self.put(
            ResourceType::Listener,
            OUTBOUND_LISTENER.into(),
            Some(Resource::Listener(Versioned::new(listener))),
            update,
        );
    }

    /// Removes the capture listener and the passthrough cluster (the class is emptied).
    pub(super) fn remove_capture_listener(&mut self, update: &mut ClassUpdate) {
        self.put(
            ResourceType::Cluster,
            PASSTHROUGH_CLUSTER.into(),
            None,
            update,
        );
        self.put(
            ResourceType::Listener,
            OUTBOUND_LISTENER.into(),
            None,
            update,
        );
    }
}

/// The chains with every address and port claimed once: a chain loses the addresses an
/// earlier one (by name) has on its port, and goes if none is left. Envoy refuses a listener
/// whose chains overlap; only headless Services can (a pod two of them list), and the rule
/// keeps the choice the same in every class and after any order of updates.
fn without_overlaps(chains: &FilterChains) -> FilterChains {
    let mut claimed: HashSet<(IpAddr, u16)> = HashSet::new();
    let mut out = chains.clone();
    for chain in chains {
        let c = &chain.value;
        let free: Vec<IpAddr> = c
            .addresses
            .iter()
            .copied()
            .filter(|a| claimed.insert((*a, c.port)))
            .collect();
        if free.len() == c.addresses.len() {
            continue;
        }
        if free.is_empty() {
            out.remove(&c.name);
        } else {
            out.insert(Versioned::new(FilterChain {
                addresses: free,
                ..c.clone()
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(name: &str, addresses: &[&str], port: u16) -> Arc<Versioned<FilterChain>> {
        Versioned::new(FilterChain {
            name: name.into(),
            addresses: addresses.iter().map(|a| a.parse().expect("ip")).collect(),
            port,
            protocol: ListenerProtocol::Tcp { clusters: vec![] },
            mtls: None,
            authz: None,
        })
    }

    #[test]
    fn the_first_chain_by_name_keeps_a_shared_address() {
        let chains: FilterChains = [
            chain(
                "a.ns.svc.cluster.local:7000",
                &["10.0.0.1", "10.0.0.2"],
                7000,
            ),
            chain(
                "b.ns.svc.cluster.local:7000",
                &["10.0.0.2", "10.0.0.3"],
                7000,
            ),
            chain("c.ns.svc.cluster.local:7000", &["10.0.0.3"], 7000),
            chain("d.ns.svc.cluster.local:8000", &["10.0.0.1"], 8000),
        ]
        .into_iter()
        .collect();
        let settled = without_overlaps(&chains);
        let summary: Vec<(String, Vec<String>)> = settled
            .iter()
            .map(|c| {
                let ips = c.value.addresses.iter().map(ToString::to_string).collect();
                (c.value.name.to_string(), ips)
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "a.ns.svc.cluster.local:7000".into(),
                    vec!["10.0.0.1".into(), "10.0.0.2".into()]
                ),
                (
                    "b.ns.svc.cluster.local:7000".into(),
                    vec!["10.0.0.3".into()]
                ),
                (
                    "d.ns.svc.cluster.local:8000".into(),
                    vec!["10.0.0.1".into()]
                ),
            ],
            "c lost its only address; another port does not overlap"
        );
        let apart: FilterChains = [
            chain("a:1", &["10.0.0.1"], 1),
            chain("b:2", &["10.0.0.1"], 2),
        ]
        .into_iter()
        .collect();
        assert_eq!(without_overlaps(&apart), apart);
    }
}
