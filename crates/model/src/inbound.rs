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

use remora_api::sidecar_policy::{INBOUND_CAPTURE_PORT, MtlsMode};

use crate::{
    config::{
        Accepts, Addressing, Authorization, BindAddress, CaptureMtls, Cluster, Direction,
        Discovery, FilterChain, FilterChains, Forward, InboundMtls, Listener, ListenerProtocol,
        MtlsPassthrough, Resource, ResourceKey, ResourceType, Route, RouteAction, RouteConfig,
        Target, Unmatched, Versioned, VirtualHost, WeightedCluster,
    },
    input::{ContainerPort, MeshSettings, Protocol},
    policy::Defaults,
};

/// The inbound capture listener's name.
const INBOUND_LISTENER: &str = "inbound";
/// The original-destination cluster that takes inbound connections to ports the pod does not
/// declare to the app as they came.
const INBOUND_PASSTHROUGH: &str = "inbound|passthrough";
/// What the name of a port's plaintext chain takes to name its mutual TLS chain:
/// `inbound|<port>|mtls`.
const MTLS_CHAIN_SUFFIX: &str = "|mtls";

/// What the inbound capture listener accepts, as the proxy's mutual TLS mode says.
struct Accepted {
    /// The mesh has workload identity: the listener tells TLS from plaintext, whatever the
    /// mode, so that a change of mode changes its chains alone.
    identity: bool,
    /// Plaintext: always without workload identity, and unless the mode is `Strict` with it.
    plaintext: bool,
    /// Mutual TLS (workload identity, mode not `Disabled`), terminated as this says.
    mtls: Option<InboundMtls>,
}

impl Accepted {
    fn new(settings: &MeshSettings, mode: MtlsMode) -> Accepted {
        let identity = settings.mtls();
        Accepted {
            identity: identity.is_some(),
            plaintext: identity.is_none() || mode != MtlsMode::Strict,
            mtls: identity
                .filter(|_| mode != MtlsMode::Disabled)
                .map(|i| InboundMtls {
                    trust_domain: i.trust_domain.as_str().into(),
                }),
        }
    }

    /// What happens to plaintext to a port no chain takes.
    fn unmatched(&self) -> Unmatched {
        if self.plaintext {
            Unmatched::Passthrough {
                cluster: INBOUND_PASSTHROUGH.into(),
            }
        } else {
            Unmatched::Refuse
        }
    }

    /// The listener's mutual TLS besides its chains: passed through to undeclared ports.
    fn capture_mtls(&self) -> Option<CaptureMtls> {
        self.identity.then(|| CaptureMtls {
            passthrough: self.mtls.clone().map(|mtls| MtlsPassthrough {
                cluster: INBOUND_PASSTHROUGH.into(),
                mtls,
            }),
        })
    }
}

/// The inbound resources of a pod at `ip` (none without an address yet) declaring `ports`,
/// each of its chains (and its passthrough) enforcing `authz`, the rules of the access
/// policies that protect it.
pub(crate) fn inbound_resources(
    settings: &MeshSettings,
    ip: Option<IpAddr>,
    ports: &[ContainerPort],
    defaults: &Defaults,
    authz: Option<&Arc<Authorization>>,
) -> BTreeMap<ResourceKey, Resource> {
    let addressing = settings.addressing;
    let accepted = Accepted::new(settings, defaults.mtls);
    let mut out = BTreeMap::new();
    let Some(ip) = ip else {
        return out;
    };
    let mut ports: Vec<_> = ports
        .iter()
        .filter(|p| defaults.inbound.intercepts(p.port))
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
        // HTTP takes its rules in the route config; only TCP needs them in the listener.
        let (protocol, chain_authz) = if p.protocol.is_http() {
            let config = route_config(name.clone(), target, authz.cloned());
            out.insert(
                key(ResourceType::RouteConfig, &name),
                Resource::RouteConfig(Versioned::new(config)),
            );
            let http = ListenerProtocol::Http {
                route_config: name.clone(),
            };
            (http, None)
        } else {
            (ListenerProtocol::Tcp { clusters: target }, authz)
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
                        authz: chain_authz.cloned(),
                    },
                    access_log: defaults.access_log,
                };
                out.insert(
                    key(ResourceType::Listener, &name),
                    Resource::Listener(Versioned::new(listener)),
                );
            }
            Addressing::Captured => {
                let chain = Chain {
                    name: &name,
                    port: p.port,
                    protocol,
                    authz: chain_authz,
                };
                insert_chains(&mut chains, chain, &accepted);
            }
        }
    }
    if addressing == Addressing::Captured {
        insert_capture_listener(&mut out, chains, &accepted, defaults, authz);
    }
    out
}

/// One port's chain before it is told plaintext from mutual TLS.
struct Chain<'a> {
    name: &'a Arc<str>,
    port: u16,
    protocol: ListenerProtocol,
    authz: Option<&'a Arc<Authorization>>,
}

/// The chains of one port: `inbound|<port>` for plaintext, `inbound|<port>|mtls` for mutual
/// TLS, each as the proxy accepts them, both handled alike once the TLS is terminated.
fn insert_chains(chains: &mut FilterChains, c: Chain<'_>, accepted: &Accepted) {
    let name = c.name;
    let chain = |name: Arc<str>, mtls: Option<&InboundMtls>| {
        Versioned::new(FilterChain {
            name,
            addresses: Vec::new(),
            port: c.port,
            protocol: c.protocol.clone(),
            mtls: mtls.cloned(),
            authz: c.authz.cloned(),
        })
    };
    if accepted.plaintext {
        chains.insert(chain(name.clone(), None));
    }
    if let Some(mtls) = &accepted.mtls {
        chains.insert(chain(
            format!("{name}{MTLS_CHAIN_SUFFIX}").into(),
            Some(mtls),
        ));
    }
}

/// The inbound capture listener. Apps often leave the ports they serve undeclared (and a
/// Service's `targetPort` need not be declared either), so a connection to any other port
/// goes through as plain TCP to the port it was sent to, as it would without the mesh; one
/// to the capture port itself is closed (the translation guards it), never relayed. With
/// workload identity, mutual TLS to such a port is terminated first, and under `Strict`
/// plaintext to it is closed like plaintext to a declared port.
fn insert_capture_listener(
    out: &mut BTreeMap<ResourceKey, Resource>,
    chains: FilterChains,
    accepted: &Accepted,
    defaults: &Defaults,
    authz: Option<&Arc<Authorization>>,
) {
    let passthrough: Arc<str> = INBOUND_PASSTHROUGH.into();
    let listener = Listener {
        name: INBOUND_LISTENER.into(),
        direction: Direction::Inbound,
        port: INBOUND_CAPTURE_PORT,
        accepts: Accepts::Captured {
            chains,
            unmatched: accepted.unmatched(),
            mtls: accepted.capture_mtls(),
            authz: authz.cloned(),
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
fn route_config(
    name: Arc<str>,
    clusters: Vec<WeightedCluster>,
    authz: Option<Arc<Authorization>>,
) -> RouteConfig {
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
            authz,
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
        mtls: None,
    }
}
