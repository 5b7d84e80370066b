//! A proxy's own config: for each port its pod declares, the listener, route and cluster
//! that bring traffic to the application. Unlike outbound config, nothing here is shared
//! within a class.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
};

use crate::{
    config::{
        BindAddress, Cluster, Direction, Discovery, Forward, Listener, ListenerProtocol, Resource,
        ResourceKey, ResourceType, Route, RouteAction, RouteConfig, Target, Versioned, VirtualHost,
        WeightedCluster,
    },
    input::{ContainerPort, Protocol},
    policy::Defaults,
};

/// The inbound resources of a pod at `ip` (none without an address yet) declaring `ports`.
pub(crate) fn inbound_resources(
    ip: Option<IpAddr>,
    ports: &[ContainerPort],
    defaults: &Defaults,
) -> BTreeMap<ResourceKey, Resource> {
    let mut out = BTreeMap::new();
    let Some(ip) = ip else {
        return out;
    };
    let mut ports: Vec<_> = ports
        .iter()
        .filter(|p| defaults.intercepts_inbound(p.port))
        .collect();
    ports.sort_by_key(|p| p.port);
    ports.dedup_by_key(|p| p.port);
    for p in ports {
        let name: Arc<str> = format!("inbound|{}", p.port).into();
        let target = vec![WeightedCluster {
            target: Target::Cluster(name.clone()),
            weight: 1,
        }];
        let protocol = if p.protocol.is_http() {
            out.insert(
                key(ResourceType::RouteConfig, &name),
                Resource::RouteConfig(Versioned::new(route_config(name.clone(), target))),
            );
            ListenerProtocol::Http {
                route_config: name.clone(),
            }
        } else {
            ListenerProtocol::Tcp { clusters: target }
        };
        let listener = Listener {
            name: name.clone(),
            direction: Direction::Inbound,
            address: BindAddress::Ip(ip),
            port: p.port,
            protocol,
            access_log: defaults.access_log,
        };
        out.insert(
            key(ResourceType::Listener, &name),
            Resource::Listener(Versioned::new(listener)),
        );
        out.insert(
            key(ResourceType::Cluster, &name),
            Resource::Cluster(Versioned::new(cluster(name, p, defaults))),
        );
    }
    out
}

fn key(kind: ResourceType, name: &Arc<str>) -> ResourceKey {
    ResourceKey {
        kind,
        name: name.clone(),
    }
}

/// Every request to the application, whatever its host or path.
fn route_config(name: Arc<str>, clusters: Vec<WeightedCluster>) -> RouteConfig {
    RouteConfig {
        name,
        virtual_hosts: [Versioned::new(VirtualHost {
            name: "inbound".into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                name: "inbound".into(),
                matches: vec![],
                action: RouteAction::Forward(Forward {
                    clusters,
                    timeout: None,
                    retry: None,
                    rewrite: None,
                    mirrors: vec![],
                }),
                request_headers: Default::default(),
                response_headers: Default::default(),
                fault: None,
            }],
        })]
        .into_iter()
        .collect(),
    }
}

/// The application itself, on the pod's loopback.
fn cluster(name: Arc<str>, port: &ContainerPort, defaults: &Defaults) -> Cluster {
    Cluster {
        name,
        connect_timeout: defaults.connect_timeout,
        discovery: Discovery::Static(vec![SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            port.port,
        )]),
        outlier_detection: None,
        circuit_breaker: None,
        http2: port.protocol == Protocol::Http2,
    }
}
