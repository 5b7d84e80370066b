//! A proxy's own config: for each port its pod declares, how traffic reaches the application.
//! Explicit addressing gives each port a listener on the pod's IP and sends to the app on
//! loopback; captured addressing gives each port a chain of the inbound capture listener and
//! sends to the app on the pod's IP (so an app bound to `0.0.0.0` or the pod IP is reached,
//! one bound to `127.0.0.1` only is not: it meant to be private). Unlike outbound config,
//! nothing here is shared within a class.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
};

use remora_api::sidecar_policy::INBOUND_CAPTURE_PORT;

use crate::{
    config::{
        Accepts, Addressing, BindAddress, Cluster, Direction, Discovery, FilterChain, FilterChains,
        Forward, Listener, ListenerProtocol, Resource, ResourceKey, ResourceType, Route,
        RouteAction, RouteConfig, Target, Unmatched, Versioned, VirtualHost, WeightedCluster,
    },
    input::{ContainerPort, Protocol},
    policy::Defaults,
};

/// The inbound capture listener's name.
const INBOUND_LISTENER: &str = "inbound";
/// The original-destination cluster that takes inbound connections to ports the pod does not
/// declare to the app as they came.
const INBOUND_PASSTHROUGH: &str = "inbound|passthrough";

/// The inbound resources of a pod at `ip` (none without an address yet) declaring `ports`.
pub(crate) fn inbound_resources(
    addressing: Addressing,
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
    // Captured: the app is reached where the connection was sent, the pod's IP.
    let app = match addressing {
        Addressing::Explicit => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Addressing::Captured => ip,
    };
    let mut chains = FilterChains::default();
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
        out.insert(
            key(ResourceType::Cluster, &name),
            Resource::Cluster(Versioned::new(cluster(name.clone(), app, p, defaults))),
        );
        match addressing {
            Addressing::Explicit => {
                let listener = Listener {
                    name: name.clone(),
                    direction: Direction::Inbound,
                    port: p.port,
                    accepts: Accepts::Bound {
                        address: BindAddress::Ip(ip),
                        protocol,
                    },
                    access_log: defaults.access_log,
                };
                out.insert(
                    key(ResourceType::Listener, &name),
                    Resource::Listener(Versioned::new(listener)),
                );
            }
            Addressing::Captured => chains.insert(Versioned::new(FilterChain {
                name,
                addresses: Vec::new(),
                port: p.port,
                protocol,
            })),
        }
    }
    if addressing == Addressing::Captured {
        insert_capture_listener(&mut out, chains, defaults);
    }
    out
}

/// The inbound capture listener. Apps often leave the ports they serve undeclared (and a
/// Service's `targetPort` need not be declared either), so a connection to any other port
/// goes through as plain TCP to the port it was sent to, as it would without the mesh; one
/// to the capture port itself is closed (the translation guards it), never relayed.
fn insert_capture_listener(
    out: &mut BTreeMap<ResourceKey, Resource>,
    chains: FilterChains,
    defaults: &Defaults,
) {
    let passthrough: Arc<str> = INBOUND_PASSTHROUGH.into();
    let listener = Listener {
        name: INBOUND_LISTENER.into(),
        direction: Direction::Inbound,
        port: INBOUND_CAPTURE_PORT,
        accepts: Accepts::Captured {
            chains,
            unmatched: Unmatched::Passthrough {
                cluster: passthrough.clone(),
            },
        },
        access_log: defaults.access_log,
    };
    out.insert(
        key(ResourceType::Listener, &INBOUND_LISTENER.into()),
        Resource::Listener(Versioned::new(listener)),
    );
    let cluster = Cluster::original_destination(passthrough.clone(), defaults.connect_timeout);
    out.insert(
        key(ResourceType::Cluster, &passthrough),
        Resource::Cluster(Versioned::new(cluster)),
    );
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

/// The application itself, at `app` on the port it declares.
fn cluster(name: Arc<str>, app: IpAddr, port: &ContainerPort, defaults: &Defaults) -> Cluster {
    Cluster {
        name,
        connect_timeout: defaults.connect_timeout,
        discovery: Discovery::Static(vec![SocketAddr::new(app, port.port)]),
        outlier_detection: None,
        circuit_breaker: None,
        http2: port.protocol == Protocol::Http2,
    }
}
