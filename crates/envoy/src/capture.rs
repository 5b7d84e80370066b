//! Capture listeners: the connections `remora init-network` redirects to the proxy, each
//! handled by the filter chain its original destination matches.
//!
//! The `original_dst` listener filter gives a connection back the address it was sent to
//! before the redirect, and Envoy takes the chain that matches it most specifically:
//! destination port first, then destination address. The listener-level fields are the same
//! whatever the chains and whatever happens to unmatched connections, because Envoy applies a
//! change confined to the filter chains (the default chain included) in place, keeping the
//! connections of every chain that did not change, while any other change drains the whole
//! listener.

mod cache;

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
};

use envoy_types::pb::envoy::{
    config::{
        accesslog::v3::{
            AccessLog, AccessLogFilter, ResponseFlagFilter, access_log_filter::FilterSpecifier,
        },
        core::v3::CidrRange,
        listener::v3::{
            Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter,
            listener_filter,
        },
    },
    extensions::filters::{
        listener::original_dst::v3::OriginalDst, network::direct_response::v3::Config,
    },
};
use remora_model::config::{
    self, Authorization, CaptureMtls, Direction, FilterChains, Unmatched, Versioned,
};

pub use cache::{ChainKey, FilterChainCache};

use crate::{
    Options,
    listener::{Chain, access_logs, network_filters, tcp_filters, tcp_proxy, traffic_direction},
    mtls, proto,
};

/// The name of the chain that closes connections sent to the capture port itself.
pub(crate) const CAPTURE_PORT_CHAIN: &str = "capture-port";
/// The name and stat prefix of the chain that passes unmatched connections through.
pub(crate) const PASSTHROUGH_CHAIN: &str = "passthrough";
/// The name of the chain that terminates mutual TLS to ports no other chain takes and passes
/// it through (its stat prefix is `passthrough_mtls`).
pub const MTLS_PASSTHROUGH_CHAIN: &str = "passthrough|mtls";

/// A listener on every address at the capture port, with a chain per destination; its
/// passthrough chains enforce `authz`.
pub(crate) fn listener(
    l: &config::Listener,
    chains: &FilterChains,
    unmatched: &Unmatched,
    mtls: Option<&CaptureMtls>,
    authz: Option<&Authorization>,
    options: &Options,
) -> Listener {
    let (mut listener, access_log) = shell(l, unmatched, mtls, authz, options);
    let guarded = !listener.filter_chains.is_empty();
    listener.filter_chains.extend(
        served(chains, l.port, guarded).map(|c| filter_chain(&c.value, &access_log, l.direction)),
    );
    listener
}

/// The listener without the model's chains (the guard and the mutual TLS passthrough, if
/// any, are its chains), and the access log those chains carry. Both passthrough chains
/// enforce `authz`: a port no chain takes is still the workload's.
pub(crate) fn shell(
    l: &config::Listener,
    unmatched: &Unmatched,
    mtls: Option<&CaptureMtls>,
    authz: Option<&Authorization>,
    options: &Options,
) -> (Listener, Vec<AccessLog>) {
    let access_log = access_logs(l.access_log, options);
    let default_filter_chain = match unmatched {
        Unmatched::Passthrough { cluster } => Some(passthrough(cluster, access_log.clone(), authz)),
        // Envoy closes what no chain takes and counts it in `no_filter_chain_match`.
        Unmatched::Refuse => None,
    };
    let mtls_passthrough = mtls
        .and_then(|m| m.passthrough.as_ref())
        .map(|p| mtls_passthrough(p, access_log.clone(), authz));
    // Whatever passes through must not reach the capture port itself.
    let guard = (default_filter_chain.is_some() || mtls_passthrough.is_some())
        .then(|| capture_port_guard(l.port));
    let mut listener_filters = vec![original_dst()];
    listener_filters.extend(mtls.map(|_| mtls::tls_inspector()));
    let listener = Listener {
        name: l.name.to_string(),
        address: Some(proto::socket_address(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            l.port,
        )),
        stat_prefix: proto::stat_prefix(&l.name),
        filter_chains: guard.into_iter().chain(mtls_passthrough).collect(),
        default_filter_chain,
        listener_filters,
        // A client that says nothing first (a server-first protocol) still reaches a
        // plaintext chain once the TLS inspector gives up waiting.
        continue_on_listener_filters_timeout: mtls.is_some(),
        traffic_direction: traffic_direction(l.direction),
        // Envoy logs here the connections no chain took (flag NR: refused), and without the
        // filter every other connection a second time. Set whenever the listener logs, not
        // only when it refuses, so that switching the policy changes the chains alone.
        access_log: access_log.iter().cloned().map(refused_only).collect(),
        ..Default::default()
    };
    (listener, access_log)
}

/// `log`, for the connections no filter chain took (Envoy's response flag `NR`).
fn refused_only(log: AccessLog) -> AccessLog {
    AccessLog {
        filter: Some(AccessLogFilter {
            filter_specifier: Some(FilterSpecifier::ResponseFlagFilter(ResponseFlagFilter {
                flags: vec!["NR".to_owned()],
            })),
        }),
        ..log
    }
}

/// The model's chains the listener has, in name order. A chain with the guard's match would
/// make Envoy refuse the listener, and could only take connections to the proxy's own port:
/// the guard replaces it.
pub(crate) fn served(
    chains: &FilterChains,
    port: u16,
    guarded: bool,
) -> impl Iterator<Item = &Arc<Versioned<config::FilterChain>>> {
    chains
        .iter()
        .filter(move |c| !(guarded && c.value.port == port && c.value.addresses.is_empty()))
}

/// The chain of one destination: its port and, when it names any, its addresses; for a
/// chain of mutual TLS, only TLS with the mesh's ALPN, terminated, its HTTP requests
/// carrying the caller's identity to the application.
pub(crate) fn filter_chain(
    c: &config::FilterChain,
    access_log: &[AccessLog],
    direction: Direction,
) -> FilterChain {
    let filter_chain_match = FilterChainMatch {
        destination_port: Some(proto::u32_value(u32::from(c.port))),
        prefix_ranges: c.addresses.iter().map(|ip| host_range(*ip)).collect(),
        ..Default::default()
    };
    FilterChain {
        name: c.name.to_string(),
        filter_chain_match: Some(match c.mtls {
            Some(_) => mtls::match_mtls(filter_chain_match),
            None => filter_chain_match,
        }),
        filters: network_filters(
            proto::stat_prefix(&c.name),
            &c.protocol,
            access_log.to_vec(),
            Chain {
                direction,
                mtls: c.mtls.is_some(),
                authz: c.authz.as_deref(),
            },
        ),
        transport_socket: c.mtls.as_ref().map(mtls::downstream),
        ..Default::default()
    }
}

/// One address exactly.
fn host_range(ip: IpAddr) -> CidrRange {
    let len = match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    CidrRange {
        address_prefix: ip.to_string(),
        prefix_len: Some(proto::u32_value(len)),
    }
}

/// Closes connections whose original destination is the capture port: the application called
/// the proxy's port itself, and passing that through would connect the proxy to itself, again
/// and again.
fn capture_port_guard(port: u16) -> FilterChain {
    FilterChain {
        name: CAPTURE_PORT_CHAIN.to_owned(),
        filter_chain_match: Some(FilterChainMatch {
            destination_port: Some(proto::u32_value(u32::from(port))),
            ..Default::default()
        }),
        // No response to write, so the filter just closes the connection.
        filters: vec![Filter {
            name: "envoy.filters.network.direct_response".to_owned(),
            config_type: Some(filter::ConfigType::TypedConfig(proto::any(
                &Config::default(),
            ))),
        }],
        ..Default::default()
    }
}

/// Sends a connection no chain takes on to where it was going.
fn passthrough(
    cluster: &str,
    access_log: Vec<AccessLog>,
    authz: Option<&Authorization>,
) -> FilterChain {
    let proxy = tcp_proxy(PASSTHROUGH_CHAIN.to_owned(), &[(cluster, 1)], access_log);
    FilterChain {
        name: PASSTHROUGH_CHAIN.to_owned(),
        filters: tcp_filters(proxy, authz),
        ..Default::default()
    }
}

/// Terminates mutual TLS to a port no chain takes and sends it on to where it was going.
fn mtls_passthrough(
    p: &config::MtlsPassthrough,
    access_log: Vec<AccessLog>,
    authz: Option<&Authorization>,
) -> FilterChain {
    let stat_prefix = proto::stat_prefix(MTLS_PASSTHROUGH_CHAIN);
    let proxy = tcp_proxy(stat_prefix, &[(&p.cluster, 1)], access_log);
    FilterChain {
        name: MTLS_PASSTHROUGH_CHAIN.to_owned(),
        filter_chain_match: Some(mtls::match_mtls(FilterChainMatch::default())),
        filters: tcp_filters(proxy, authz),
        transport_socket: Some(mtls::downstream(&p.mtls)),
        ..Default::default()
    }
}

/// Restores the destination the redirect replaced, which the chains match on.
fn original_dst() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.original_dst".to_owned(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(proto::any(
            &OriginalDst::default(),
        ))),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::{
        config::core::v3::TrafficDirection,
        extensions::filters::network::{
            http_connection_manager::v3::{
                HttpConnectionManager,
                http_connection_manager::{ForwardClientCertDetails, RouteSpecifier},
            },
            tcp_proxy::v3::{TcpProxy, tcp_proxy::ClusterSpecifier},
        },
    };
    use prost::{Message, Name};
    use remora_api::sidecar_policy::{
        AccessLogFormat, INBOUND_CAPTURE_PORT, OUTBOUND_CAPTURE_PORT,
    };
    use remora_model::config::{Accepts, Direction, ListenerProtocol, Target, WeightedCluster};

    use super::*;

    fn http(name: &str, addresses: &[&str], port: u16) -> Arc<Versioned<config::FilterChain>> {
        chain(
            name,
            addresses,
            port,
            ListenerProtocol::Http {
                route_config: name.into(),
            },
        )
    }

    fn tcp(name: &str, addresses: &[&str], port: u16) -> Arc<Versioned<config::FilterChain>> {
        let share = |cluster: &str, weight| WeightedCluster {
            target: Target::Cluster(cluster.into()),
            weight,
        };
        let clusters = vec![share("db-v1", 80), share("db-v2", 20)];
        chain(name, addresses, port, ListenerProtocol::Tcp { clusters })
    }

    fn chain(
        name: &str,
        addresses: &[&str],
        port: u16,
        protocol: ListenerProtocol,
    ) -> Arc<Versioned<config::FilterChain>> {
        Versioned::new(config::FilterChain {
            name: name.into(),
            addresses: addresses.iter().map(|a| a.parse().expect("ip")).collect(),
            port,
            protocol,
            mtls: None,
            authz: None,
        })
    }

    fn outbound(
        chains: impl IntoIterator<Item = Arc<Versioned<config::FilterChain>>>,
        unmatched: Unmatched,
        access_log: Option<AccessLogFormat>,
    ) -> Listener {
        let chains: FilterChains = chains.into_iter().collect();
        let l = config::Listener {
            name: "outbound".into(),
            direction: Direction::Outbound,
            port: OUTBOUND_CAPTURE_PORT,
            accepts: Accepts::Captured {
                chains: chains.clone(),
                unmatched: unmatched.clone(),
                mtls: None,
                authz: None,
            },
            access_log,
        };
        listener(&l, &chains, &unmatched, None, None, &Options::default())
    }

    fn passthrough_to(cluster: &str) -> Unmatched {
        Unmatched::Passthrough {
            cluster: cluster.into(),
        }
    }

    /// The typed config of a chain's one filter, which must be an `M`.
    fn only_filter<M: Message + Name + Default>(c: &FilterChain, name: &str) -> M {
        let [f] = c.filters.as_slice() else {
            panic!("{}: one filter expected", c.name);
        };
        assert_eq!(f.name, name);
        let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            panic!("{}: typed config expected", c.name);
        };
        assert_eq!(any.type_url, M::type_url());
        M::decode(any.value.as_slice()).expect("filter config")
    }

    fn ranges(c: &FilterChain) -> (Option<u32>, Vec<(String, u32)>) {
        let m = c.filter_chain_match.as_ref().expect("a match");
        let ranges = m
            .prefix_ranges
            .iter()
            .map(|r| {
                let len = r.prefix_len.as_ref().map_or(0, |l| l.value);
                (r.address_prefix.clone(), len)
            })
            .collect();
        (m.destination_port.as_ref().map(|p| p.value), ranges)
    }

    #[test]
    fn the_listener_takes_every_address_at_its_port_and_restores_the_destination() {
        let l = outbound([], Unmatched::Refuse, None);
        assert_eq!(l.name, "outbound");
        assert_eq!(l.stat_prefix, "outbound");
        assert_eq!(
            l.address,
            Some(proto::socket_address(
                "0.0.0.0".parse().expect("ip"),
                OUTBOUND_CAPTURE_PORT
            ))
        );
        assert_eq!(l.traffic_direction, TrafficDirection::Outbound as i32);
        let [f] = l.listener_filters.as_slice() else {
            panic!("one listener filter expected");
        };
        assert_eq!(f.name, "envoy.filters.listener.original_dst");
        let Some(listener_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            panic!("typed config expected");
        };
        assert_eq!(any.type_url, OriginalDst::type_url());
    }

    #[test]
    fn each_chain_matches_its_port_and_exact_addresses_in_name_order() {
        let l = outbound(
            [
                tcp("db.shop.svc.cluster.local:5432", &["10.96.0.5"], 5432),
                http(
                    "api.shop.svc.cluster.local:80",
                    &["10.0.0.7", "fd00::7"],
                    80,
                ),
                http("inbound|8080", &[], 8080),
            ],
            Unmatched::Refuse,
            None,
        );
        let names: Vec<_> = l.filter_chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "api.shop.svc.cluster.local:80",
                "db.shop.svc.cluster.local:5432",
                "inbound|8080"
            ]
        );
        let [api, db, any] = l.filter_chains.as_slice() else {
            unreachable!("three chains");
        };
        assert_eq!(
            ranges(api),
            (
                Some(80),
                vec![("10.0.0.7".to_owned(), 32), ("fd00::7".to_owned(), 128)]
            )
        );
        assert_eq!(ranges(db), (Some(5432), vec![("10.96.0.5".to_owned(), 32)]));
        assert_eq!(ranges(any), (Some(8080), vec![]), "no address, any address");

        let hcm: HttpConnectionManager =
            only_filter(api, "envoy.filters.network.http_connection_manager");
        assert_eq!(hcm.stat_prefix, "api.shop.svc.cluster.local_80");
        let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
            panic!("RDS expected");
        };
        assert_eq!(rds.route_config_name, "api.shop.svc.cluster.local:80");
        let tcp: TcpProxy = only_filter(db, "envoy.filters.network.tcp_proxy");
        assert_eq!(tcp.stat_prefix, "db.shop.svc.cluster.local_5432");
        let Some(ClusterSpecifier::WeightedClusters(w)) = tcp.cluster_specifier else {
            panic!("a split expected");
        };
        let split: Vec<_> = w
            .clusters
            .iter()
            .map(|c| (c.name.as_str(), c.weight))
            .collect();
        assert_eq!(split, [("db-v1", 80), ("db-v2", 20)]);
    }

    #[test]
    fn passthrough_sends_unmatched_connections_on_and_closes_those_to_the_capture_port() {
        let l = outbound(
            [http("api.shop.svc.cluster.local:80", &["10.0.0.7"], 80)],
            passthrough_to("passthrough"),
            Some(AccessLogFormat::Json),
        );
        let default = l.default_filter_chain.as_ref().expect("a default chain");
        assert_eq!(default.name, PASSTHROUGH_CHAIN);
        assert_eq!(default.filter_chain_match, None);
        let tcp: TcpProxy = only_filter(default, "envoy.filters.network.tcp_proxy");
        assert_eq!(tcp.stat_prefix, "passthrough");
        assert_eq!(
            tcp.cluster_specifier,
            Some(ClusterSpecifier::Cluster("passthrough".into()))
        );
        assert_eq!(tcp.access_log.len(), 1, "the listener's access log");

        let [guard, api] = l.filter_chains.as_slice() else {
            panic!("the guard and one chain expected");
        };
        assert_eq!(guard.name, CAPTURE_PORT_CHAIN);
        assert_eq!(
            ranges(guard),
            (Some(u32::from(OUTBOUND_CAPTURE_PORT)), vec![])
        );
        let response: Config = only_filter(guard, "envoy.filters.network.direct_response");
        assert_eq!(response.response, None, "closes without a word");
        assert_eq!(api.name, "api.shop.svc.cluster.local:80");
    }

    #[test]
    fn refuse_leaves_unmatched_connections_to_envoy_which_logs_them_at_the_listener() {
        let l = outbound(
            [http("api.shop.svc.cluster.local:80", &["10.0.0.7"], 80)],
            Unmatched::Refuse,
            Some(AccessLogFormat::Text),
        );
        assert_eq!(l.default_filter_chain, None);
        let names: Vec<_> = l.filter_chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["api.shop.svc.cluster.local:80"], "no guard needed");
        let [log] = l.access_log.as_slice() else {
            panic!("a listener access log expected");
        };
        assert_eq!(log.name, "envoy.access_loggers.stdout");
        let Some(FilterSpecifier::ResponseFlagFilter(only)) =
            log.filter.as_ref().and_then(|f| f.filter_specifier.clone())
        else {
            panic!("a response flag filter expected: {:?}", log.filter);
        };
        assert_eq!(only.flags, ["NR"], "the refused connections alone");
        assert!(outbound([], Unmatched::Refuse, None).access_log.is_empty());
    }

    #[test]
    fn the_guard_replaces_a_chain_that_would_take_the_capture_port_on_every_address() {
        let port = OUTBOUND_CAPTURE_PORT;
        let chains = [
            tcp("self", &[], port),
            tcp("svc.shop.svc.cluster.local:15001", &["10.96.0.9"], port),
        ];
        let l = outbound(chains.clone(), passthrough_to("passthrough"), None);
        let names: Vec<_> = l.filter_chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [CAPTURE_PORT_CHAIN, "svc.shop.svc.cluster.local:15001"],
            "a Service on that port keeps its own address"
        );
        let l = outbound(chains, Unmatched::Refuse, None);
        assert_eq!(
            l.filter_chains.len(),
            2,
            "without a guard, nothing is replaced"
        );
    }

    /// The inbound capture listener with workload identity: the port's chains as the mode
    /// leaves them, and mutual TLS to undeclared ports passed through when `passthrough`.
    fn inbound(
        chains: impl IntoIterator<Item = Arc<Versioned<config::FilterChain>>>,
        unmatched: Unmatched,
        passthrough: bool,
    ) -> Listener {
        let l = inbound_model(chains, unmatched, passthrough, None);
        crate::listener::listener(&l, &Options::default())
    }

    /// The model of [`inbound`], its passthrough chains enforcing `authz`.
    fn inbound_model(
        chains: impl IntoIterator<Item = Arc<Versioned<config::FilterChain>>>,
        unmatched: Unmatched,
        passthrough: bool,
        authz: Option<Arc<Authorization>>,
    ) -> config::Listener {
        let mtls = CaptureMtls {
            passthrough: passthrough.then(|| config::MtlsPassthrough {
                cluster: "inbound|passthrough".into(),
                mtls: trust_domain(),
            }),
        };
        config::Listener {
            name: "inbound".into(),
            direction: Direction::Inbound,
            port: INBOUND_CAPTURE_PORT,
            accepts: Accepts::Captured {
                chains: chains.into_iter().collect(),
                unmatched,
                mtls: Some(mtls),
                authz,
            },
            access_log: None,
        }
    }

    fn trust_domain() -> config::InboundMtls {
        config::InboundMtls {
            trust_domain: "cluster.local".into(),
        }
    }

    fn with_mtls(
        chain: Arc<Versioned<config::FilterChain>>,
    ) -> Arc<Versioned<config::FilterChain>> {
        Versioned::new(config::FilterChain {
            name: format!("{}|mtls", chain.value.name).into(),
            mtls: Some(trust_domain()),
            ..chain.value.clone()
        })
    }

    fn names(l: &Listener) -> Vec<&str> {
        l.filter_chains.iter().map(|c| c.name.as_str()).collect()
    }

    /// (transport protocol, ALPN, whether TLS is terminated) of a chain.
    fn tls_of(c: &FilterChain) -> (&str, Vec<&str>, bool) {
        let m = c.filter_chain_match.as_ref().expect("a match");
        let alpn = m.application_protocols.iter().map(String::as_str).collect();
        (
            m.transport_protocol.as_str(),
            alpn,
            c.transport_socket.is_some(),
        )
    }

    #[test]
    fn permissive_ports_take_plaintext_and_terminate_mutual_tls_in_a_chain_of_their_own() {
        let web = http("inbound|8080", &[], 8080);
        let l = inbound(
            [web.clone(), with_mtls(web)],
            passthrough_to("inbound|passthrough"),
            true,
        );
        let filters: Vec<&str> = l.listener_filters.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            filters,
            [
                "envoy.filters.listener.original_dst",
                "envoy.filters.listener.tls_inspector"
            ]
        );
        assert!(l.continue_on_listener_filters_timeout);
        assert_eq!(
            names(&l),
            [
                CAPTURE_PORT_CHAIN,
                MTLS_PASSTHROUGH_CHAIN,
                "inbound|8080",
                "inbound|8080|mtls"
            ]
        );
        let [_, passthrough, plain, tls] = l.filter_chains.as_slice() else {
            unreachable!("four chains");
        };
        assert_eq!(tls_of(plain), ("", vec![], false));
        assert_eq!(tls_of(tls), ("tls", vec![crate::MESH_ALPN], true));
        assert_eq!(ranges(tls), (Some(8080), vec![]));
        let sanitized: HttpConnectionManager =
            only_filter(plain, "envoy.filters.network.http_connection_manager");
        assert_eq!(
            sanitized.forward_client_cert_details,
            ForwardClientCertDetails::Sanitize as i32,
            "plaintext never carries an identity on"
        );
        let set: HttpConnectionManager =
            only_filter(tls, "envoy.filters.network.http_connection_manager");
        assert_eq!(
            set.forward_client_cert_details,
            ForwardClientCertDetails::SanitizeSet as i32
        );
        assert!(set.set_current_client_cert_details.expect("details").uri);
        assert_eq!(set.stat_prefix, "inbound_8080_mtls");

        assert_eq!(tls_of(passthrough), ("tls", vec![crate::MESH_ALPN], true));
        assert_eq!(ranges(passthrough), (None, vec![]), "any port");
        let tcp: TcpProxy = only_filter(passthrough, "envoy.filters.network.tcp_proxy");
        assert_eq!(tcp.stat_prefix, "passthrough_mtls");
        assert_eq!(
            tcp.cluster_specifier,
            Some(ClusterSpecifier::Cluster("inbound|passthrough".into()))
        );
        assert!(l.default_filter_chain.is_some(), "plaintext passes through");
    }

    #[test]
    fn strict_listeners_close_plaintext_but_guard_the_mutual_tls_passthrough() {
        let web = http("inbound|8080", &[], 8080);
        let l = inbound([with_mtls(web)], Unmatched::Refuse, true);
        assert_eq!(l.default_filter_chain, None);
        assert_eq!(
            names(&l),
            [
                CAPTURE_PORT_CHAIN,
                MTLS_PASSTHROUGH_CHAIN,
                "inbound|8080|mtls"
            ]
        );
    }

    /// Envoy drains every connection of a listener whose fields outside the chains change:
    /// the mode of a proxy with workload identity changes its chains alone.
    #[test]
    fn listener_level_fields_do_not_depend_on_the_mutual_tls_mode() {
        let outside_chains = |mut l: Listener| {
            l.filter_chains.clear();
            l.default_filter_chain = None;
            l.encode_to_vec()
        };
        let web = http("inbound|8080", &[], 8080);
        let permissive = inbound(
            [web.clone(), with_mtls(web.clone())],
            passthrough_to("inbound|passthrough"),
            true,
        );
        let strict = inbound([with_mtls(web.clone())], Unmatched::Refuse, true);
        let disabled = inbound([web], passthrough_to("inbound|passthrough"), false);
        assert_eq!(names(&disabled), [CAPTURE_PORT_CHAIN, "inbound|8080"]);
        assert_eq!(outside_chains(strict), outside_chains(permissive.clone()));
        assert_eq!(outside_chains(disabled), outside_chains(permissive));
    }

    /// Envoy drains every connection of a listener whose fields outside the chains change;
    /// chains and the unmatched policy must touch only the chains.
    #[test]
    fn listener_level_fields_depend_on_neither_the_chains_nor_the_unmatched_policy() {
        let outside_chains = |mut l: Listener| {
            l.filter_chains.clear();
            l.default_filter_chain = None;
            l.encode_to_vec()
        };
        let log = Some(AccessLogFormat::Json);
        let api = http("api.shop.svc.cluster.local:80", &["10.0.0.7"], 80);
        let db = tcp("db.shop.svc.cluster.local:5432", &["10.96.0.5"], 5432);
        let reference = outbound([api.clone()], Unmatched::Refuse, log);
        for other in [
            outbound([], Unmatched::Refuse, log),
            outbound([api.clone(), db.clone()], Unmatched::Refuse, log),
            outbound([api, db], passthrough_to("passthrough"), log),
        ] {
            assert_ne!(other.encode_to_vec(), reference.encode_to_vec());
            assert_eq!(outside_chains(other), outside_chains(reference.clone()));
        }
    }

    /// Connections to ports no chain takes reach the workload too: both passthrough chains
    /// enforce the listener's rules, in front of their TCP proxy, and the chains encoded
    /// once each give the same bytes.
    #[test]
    fn passthrough_chains_enforce_the_workload_authorization() {
        let deny = config::AccessRule {
            name: "shop/guard/plaintext".into(),
            from: vec![config::Caller {
                identities: Vec::new(),
                authenticated: Some(false),
            }],
            ports: Vec::new(),
            http: None,
        };
        let authz = Arc::new(Authorization {
            deny: vec![deny],
            ..Default::default()
        });
        let web = Versioned::new(config::FilterChain {
            authz: Some(authz.clone()),
            ..http("inbound|8080", &[], 8080).value.clone()
        });
        let l = inbound_model(
            [web.clone(), with_mtls(web)],
            passthrough_to("inbound|passthrough"),
            true,
            Some(authz),
        );
        let envoy = crate::listener::listener(&l, &Options::default());
        let filters =
            |c: &FilterChain| -> Vec<String> { c.filters.iter().map(|f| f.name.clone()).collect() };
        let guarded = [crate::rbac::DENY_FILTER, "envoy.filters.network.tcp_proxy"];
        let default = envoy
            .default_filter_chain
            .as_ref()
            .expect("a default chain");
        assert_eq!(filters(default), guarded);
        let [guard, passthrough, ..] = envoy.filter_chains.as_slice() else {
            panic!("the guard and the mutual TLS passthrough expected");
        };
        assert_eq!(passthrough.name, MTLS_PASSTHROUGH_CHAIN);
        assert_eq!(filters(passthrough), guarded);
        assert_eq!(filters(guard), ["envoy.filters.network.direct_response"]);
        let mut cache = FilterChainCache::default();
        assert_eq!(
            cache.listener(&l, &Options::default()),
            envoy.encode_to_vec()
        );
    }
}
