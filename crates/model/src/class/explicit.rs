//! Outbound config for explicit addressing: one listener per HTTP port on every address, its
//! route config holding a virtual host per Service, and one listener per TCP Service port on
//! the Service's IP.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use super::{Class, ClassUpdate, Env, SharedCache, host::vhost_name};
use crate::{
    config::{
        Accepts, BindAddress, Direction, Listener, ListenerProtocol, Resource, ResourceType,
        RouteConfig, Versioned,
    },
    input::ObjectKey,
    routing::{PortRouting, ServiceRouting},
};

impl Class {
    /// Replaces what `old` routing put in the class with what `new` puts.
    pub(super) fn set_explicit(
        &mut self,
        env: &Env<'_>,
        cache: &mut SharedCache,
        service: &ObjectKey,
        (old, new): (Option<&ServiceRouting>, Option<&ServiceRouting>),
        update: &mut ClassUpdate,
    ) {
        // By name: a listener both the old and the new routing have is put once.
        let mut tcp_listeners: BTreeMap<Arc<str>, Option<Resource>> = BTreeMap::new();
        for (port, (_, pr)) in old.iter().flat_map(|old| &old.ports) {
            match pr {
                PortRouting::Http { .. } => {
                    if let Some(hosts) = self.http.get_mut(port) {
                        hosts.remove(&vhost_name(env.settings, service, *port));
                    }
                    update.ports.insert(*port);
                }
                PortRouting::Tcp { .. } => {
                    if let Some(ip) = old.and_then(|o| o.cluster_ip) {
                        tcp_listeners.insert(tcp_listener_name(ip, *port), None);
                    }
                }
            }
        }
        if let Some(new) = new {
            for (port, (_, pr)) in &new.ports {
                match pr {
                    PortRouting::Http { routes } => {
                        let vhost = self.virtual_host(env, cache, new, *port, routes);
                        self.http.entry(*port).or_default().insert(vhost);
                        update.ports.insert(*port);
                    }
                    // A TCP Service is told apart by its cluster IP; a headless one has none
                    // and is reached through its endpoints' own addresses instead.
                    PortRouting::Tcp { clusters } => {
                        if let Some(ip) = new.cluster_ip {
                            let listener = self.tcp_listener(ip, *port, clusters);
                            tcp_listeners.insert(
                                listener.name.clone(),
                                Some(Resource::Listener(Versioned::new(listener))),
                            );
                        }
                    }
                }
            }
        }
        for (name, resource) in tcp_listeners {
            self.put(ResourceType::Listener, name, resource, update);
        }
    }

    fn tcp_listener(
        &self,
        ip: IpAddr,
        port: u16,
        clusters: &[(crate::routing::ClusterKey, u32)],
    ) -> Listener {
        Listener {
            name: tcp_listener_name(ip, port),
            direction: Direction::Outbound,
            port,
            accepts: Accepts::Bound {
                address: BindAddress::Ip(ip),
                protocol: ListenerProtocol::Tcp {
                    clusters: super::weighted(clusters),
                },
                authz: None,
            },
            access_log: self.defaults.access_log,
        }
    }

    /// The listener and route config of one HTTP port, from its virtual hosts (none: gone).
    pub(super) fn rebuild_port(&mut self, port: u16, update: &mut ClassUpdate) {
        let route_name: Arc<str> = port.to_string().into();
        let listener_name: Arc<str> = format!("outbound|{port}").into();
        let hosts = self.http.get(&port).filter(|h| !h.is_empty());
        let Some(hosts) = hosts else {
            self.http.remove(&port);
            self.put(ResourceType::RouteConfig, route_name, None, update);
            self.put(ResourceType::Listener, listener_name, None, update);
            return;
        };
        let route_config = RouteConfig {
            name: route_name.clone(),
            virtual_hosts: hosts.clone(),
        };
        let listener = Listener {
            name: listener_name.clone(),
            direction: Direction::Outbound,
            port,
            accepts: Accepts::Bound {
                address: BindAddress::Any,
                protocol: ListenerProtocol::Http {
                    route_config: route_name.clone(),
                },
                authz: None,
            },
            access_log: self.defaults.access_log,
        };
        self.put(
            ResourceType::RouteConfig,
            route_name,
            Some(Resource::RouteConfig(Versioned::new(route_config))),
            update,
        );
        self.put(
            ResourceType::Listener,
            listener_name,
            Some(Resource::Listener(Versioned::new(listener))),
            update,
        );
    }
}

fn tcp_listener_name(ip: IpAddr, port: u16) -> Arc<str> {
    format!("outbound|{ip}|{port}").into()
}
