//! Outbound config for captured addressing: one capture listener with a filter chain per
//! Service port (matched by the original destination's addresses and port), and a route config
//! per HTTP Service port, so a change to one Service's routing re-sends that route config
//! alone.

use std::{collections::BTreeMap, sync::Arc};

use remora_api::sidecar_policy::{OUTBOUND_CAPTURE_PORT, UnknownDestinations};

use super::{Class, ClassUpdate, Env, SharedCache, host::vhost_name};
use crate::{
    config::{
        Accepts, Cluster, Direction, Discovery, FilterChain, Listener, ListenerProtocol, Resource,
        ResourceType, RouteConfig, Unmatched, Versioned,
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
        for (port, (_, pr)) in old.iter().flat_map(|old| &old.ports) {
            let name = vhost_name(env.settings, service, *port);
            self.chains.remove(&name);
            if let PortRouting::Http { .. } = pr {
                route_configs.insert(name, None);
            }
            update.listener = true;
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
                self.chains.insert(Versioned::new(FilterChain {
                    name,
                    addresses: new.addresses.clone(),
                    port: *port,
                    protocol,
                }));
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
                chains: self.chains.clone(),
                unmatched,
            },
            access_log: self.defaults.access_log,
        };
        let cluster = passthrough.then(|| {
            Resource::Cluster(Versioned::new(Cluster {
                name: PASSTHROUGH_CLUSTER.into(),
                connect_timeout: self.defaults.connect_timeout,
                discovery: Discovery::OriginalDestination,
                outlier_detection: None,
                circuit_breaker: None,
                http2: false,
            }))
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
