//! Listeners: an HTTP connection manager that takes its routes over RDS, or a TCP proxy, on
//! one address (explicit addressing) or per filter chain of a capture listener (`capture`).

use std::net::{IpAddr, Ipv4Addr};

use envoy_types::pb::{
    envoy::{
        config::{
            accesslog::v3::{AccessLog, access_log},
            core::v3::TrafficDirection,
            listener::v3::{Filter, FilterChain, Listener, filter},
        },
        extensions::{
            access_loggers::stream::v3::{StderrAccessLog, StdoutAccessLog},
            filters::{
                http::{fault::v3::HttpFault, router::v3::Router},
                network::{
                    http_connection_manager::v3::{
                        HttpConnectionManager, HttpFilter, Rds,
                        http_connection_manager::{
                            CodecType, ForwardClientCertDetails, RouteSpecifier,
                            SetCurrentClientCertDetails,
                        },
                        http_filter,
                    },
                    tcp_proxy::v3::{
                        TcpProxy,
                        tcp_proxy::{ClusterSpecifier, WeightedCluster, weighted_cluster},
                    },
                },
            },
        },
    },
    google::protobuf::{Any, BoolValue, Value, value},
};
use prost::{Message, Name};
use remora_api::sidecar_policy::AccessLogFormat;
use remora_model::config::{
    self, Accepts, Authorization, BindAddress, Direction, ListenerProtocol,
};

use crate::{AccessLogSink, Options, audit, capture, proto, rbac, split};

/// The name routes use to configure the fault filter per route.
pub(crate) const FAULT_FILTER: &str = "envoy.filters.http.fault";

pub(crate) fn listener(l: &config::Listener, options: &Options) -> Listener {
    match &l.accepts {
        Accepts::Bound {
            address,
            protocol,
            authz,
        } => bound(l, address, protocol, authz.as_deref(), options),
        Accepts::Captured {
            chains,
            unmatched,
            mtls,
            authz,
        } => capture::listener(
            l,
            chains,
            unmatched,
            mtls.as_ref(),
            authz.as_deref(),
            options,
        ),
    }
}

/// A listener on one address and port, with one filter chain for everything it accepts.
fn bound(
    l: &config::Listener,
    address: &BindAddress,
    protocol: &ListenerProtocol,
    authz: Option<&Authorization>,
    options: &Options,
) -> Listener {
    let ip = match (address, l.direction, options.bind_outbound_to) {
        (BindAddress::Ip(ip), _, _) => *ip,
        (BindAddress::Any, Direction::Outbound, Some(ip)) => ip,
        (BindAddress::Any, _, _) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let access_log = access_logs(l.access_log, options);
    Listener {
        name: l.name.to_string(),
        address: Some(proto::socket_address(ip, l.port)),
        filter_chains: vec![FilterChain {
            filters: network_filters(
                proto::stat_prefix(&l.name),
                protocol,
                access_log,
                Chain {
                    direction: l.direction,
                    mtls: false,
                    authz,
                },
            ),
            ..Default::default()
        }],
        traffic_direction: traffic_direction(l.direction),
        ..Default::default()
    }
}

/// What a listener's (or a filter chain's) connections are, besides their protocol.
#[derive(Clone, Copy)]
pub(crate) struct Chain<'a> {
    /// An inbound HTTP connection manager carries the RBAC filters whose rules come with
    /// its routes.
    pub direction: Direction,
    /// They are mutual TLS, whose peer's identity HTTP requests carry on.
    pub mtls: bool,
    /// The rules a TCP proxy enforces.
    pub authz: Option<&'a Authorization>,
}

/// The network filters that handle a listener's (or a filter chain's) connections: those
/// that enforce its rules, if any, then the one that serves them.
pub(crate) fn network_filters(
    stat_prefix: String,
    protocol: &ListenerProtocol,
    access_log: Vec<AccessLog>,
    chain: Chain<'_>,
) -> Vec<Filter> {
    match protocol {
        ListenerProtocol::Http { route_config } => {
            let inbound = chain.direction == Direction::Inbound;
            let mut hcm = http_connection_manager(stat_prefix, route_config, access_log, inbound);
            if chain.mtls {
                forward_peer_identity(&mut hcm);
            }
            vec![Filter {
                name: "envoy.filters.network.http_connection_manager".to_owned(),
                config_type: Some(filter::ConfigType::TypedConfig(proto::any(&hcm))),
            }]
        }
        ListenerProtocol::Tcp { clusters } => {
            let proxy = tcp_proxy(stat_prefix, &split(clusters), access_log);
            tcp_filters(proxy, chain.authz)
        }
    }
}

/// A TCP proxy, behind the filters that enforce `authz`, if any.
pub(crate) fn tcp_filters(mut proxy: TcpProxy, authz: Option<&Authorization>) -> Vec<Filter> {
    proxy.access_log.extend(authz.and_then(audit::tcp_log));
    let mut filters = authz.map_or_else(Vec::new, |a| rbac::network_filters(a, &proxy.stat_prefix));
    filters.push(tcp_proxy_filter(proxy));
    filters
}

/// The network filter of a TCP proxy.
fn tcp_proxy_filter(config: TcpProxy) -> Filter {
    Filter {
        name: "envoy.filters.network.tcp_proxy".to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(proto::any(&config))),
    }
}

/// Envoy's value for a direction.
pub(crate) fn traffic_direction(direction: Direction) -> i32 {
    let direction = match direction {
        Direction::Inbound => TrafficDirection::Inbound,
        Direction::Outbound => TrafficDirection::Outbound,
    };
    direction as i32
}

/// The access log a listener asks for, if any, as Envoy's list.
pub(crate) fn access_logs(format: Option<AccessLogFormat>, options: &Options) -> Vec<AccessLog> {
    format
        .map(|format| access_log(format, options.access_log))
        .into_iter()
        .collect()
}

/// HTTP, with routes from RDS over the same ADS stream. The fault filter is always present,
/// doing nothing unless a route configures it: the listener cannot know which routes of a
/// separately delivered route config inject faults, and a route naming a filter the chain
/// lacks is ignored. The router comes last, as Envoy requires.
///
/// `inbound`: the RBAC filters come first, so a refused request goes no further, with the
/// rules of the workload's access policies from its routes (none: they enforce nothing),
/// and the audit log reports what audit rules would have denied. Paths are normalized (dot
/// segments resolved, slashes merged) before the rules see them, so `/public/../admin` or
/// `//admin` cannot pass for anything but `/admin`; the application receives the
/// normalized path. All of it is there whether policies protect the workload or not, so
/// that adding, editing or removing one changes the routes alone.
fn http_connection_manager(
    stat_prefix: String,
    route_config: &str,
    access_log: Vec<AccessLog>,
    inbound: bool,
) -> HttpConnectionManager {
    let http_filter = |name: &str, config: Any| HttpFilter {
        name: name.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    };
    HttpConnectionManager {
        codec_type: CodecType::Auto as i32,
        stat_prefix,
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(proto::ads()),
            route_config_name: route_config.to_owned(),
        })),
        http_filters: inbound
            .then(rbac::http_filters)
            .unwrap_or_default()
            .into_iter()
            .chain([
                http_filter(FAULT_FILTER, proto::any(&HttpFault::default())),
                http_filter("envoy.filters.http.router", proto::any(&Router::default())),
            ])
            .collect(),
        normalize_path: inbound.then_some(BoolValue { value: true }),
        merge_slashes: inbound,
        access_log: access_log
            .into_iter()
            .chain(inbound.then(audit::http_log))
            .collect(),
        ..Default::default()
    }
}

/// Sets `x-forwarded-client-cert` on each request to the peer's certificate, its URI SAN
/// (the caller's SPIFFE ID) included, replacing what the caller sent. Plaintext chains keep
/// Envoy's default, which removes the header, so no caller can forge it.
fn forward_peer_identity(hcm: &mut HttpConnectionManager) {
    hcm.forward_client_cert_details = ForwardClientCertDetails::SanitizeSet as i32;
    hcm.set_current_client_cert_details = Some(SetCurrentClientCertDetails {
        uri: true,
        ..Default::default()
    });
}

/// A TCP proxy to one cluster, or split between several by weight.
pub(crate) fn tcp_proxy(
    stat_prefix: String,
    split: &[(&str, u32)],
    access_log: Vec<AccessLog>,
) -> TcpProxy {
    let cluster_specifier = match split {
        [(name, _)] => ClusterSpecifier::Cluster((*name).to_owned()),
        _ => ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: split
                .iter()
                .map(|(name, weight)| weighted_cluster::ClusterWeight {
                    name: (*name).to_owned(),
                    weight: *weight,
                    ..Default::default()
                })
                .collect(),
        }),
    };
    TcpProxy {
        stat_prefix,
        cluster_specifier: Some(cluster_specifier),
        access_log,
        ..Default::default()
    }
}

/// Text uses Envoy's default format; JSON names a fixed set of fields.
fn access_log(format: AccessLogFormat, sink: AccessLogSink) -> AccessLog {
    let (name, type_url) = match sink {
        AccessLogSink::Stdout => ("envoy.access_loggers.stdout", StdoutAccessLog::type_url()),
        AccessLogSink::Stderr => ("envoy.access_loggers.stderr", StderrAccessLog::type_url()),
    };
    // Both loggers have the same single field, so one encoding serves either.
    let value = match format {
        AccessLogFormat::Text => Vec::new(),
        AccessLogFormat::Json => json_log().encode_to_vec(),
    };
    AccessLog {
        name: name.to_owned(),
        filter: None,
        config_type: Some(access_log::ConfigType::TypedConfig(Any { type_url, value })),
    }
}

/// The fields of a JSON access log line, sorted by name.
const JSON_FIELDS: [(&str, &str); 14] = [
    ("authority", "%REQ(:AUTHORITY)%"),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("duration_ms", "%DURATION%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("start_time", "%START_TIME%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
];

// `StdoutAccessLog { log_format: SubstitutionFormatString { json_format: Struct } }`, spelled
// out with a list where the generated `Struct` has a `HashMap`: the wire format of a map is a
// repeated key/value message, so Envoy reads the same thing, but the order is ours and fixed.

#[derive(Clone, PartialEq, Message)]
struct JsonStreamLog {
    /// `StdoutAccessLog.log_format` (and `StderrAccessLog.log_format`).
    #[prost(message, optional, tag = "1")]
    log_format: Option<JsonFormatString>,
}

#[derive(Clone, PartialEq, Message)]
struct JsonFormatString {
    /// `SubstitutionFormatString.json_format`.
    #[prost(message, optional, tag = "2")]
    json_format: Option<OrderedStruct>,
}

#[derive(Clone, PartialEq, Message)]
struct OrderedStruct {
    /// `Struct.fields`, one map entry per element.
    #[prost(message, repeated, tag = "1")]
    fields: Vec<StructField>,
}

#[derive(Clone, PartialEq, Message)]
struct StructField {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Value>,
}

fn json_log() -> JsonStreamLog {
    JsonStreamLog {
        log_format: Some(JsonFormatString {
            json_format: Some(OrderedStruct {
                fields: JSON_FIELDS
                    .iter()
                    .map(|(key, operator)| StructField {
                        key: (*key).to_owned(),
                        value: Some(Value {
                            kind: Some(value::Kind::StringValue((*operator).to_owned())),
                        }),
                    })
                    .collect(),
            }),
        }),
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::{
        config::core::v3::substitution_format_string::Format,
        extensions::access_loggers::stream::v3::stdout_access_log,
    };

    use super::*;

    #[test]
    fn json_access_log_decodes_as_envoy_reads_it() {
        let log = access_log(AccessLogFormat::Json, AccessLogSink::Stdout);
        let Some(access_log::ConfigType::TypedConfig(any)) = log.config_type else {
            panic!("typed config expected");
        };
        assert_eq!(any.type_url, StdoutAccessLog::type_url());
        let decoded = StdoutAccessLog::decode(any.value.as_slice()).expect("decodes");
        let Some(stdout_access_log::AccessLogFormat::LogFormat(f)) = decoded.access_log_format
        else {
            panic!("log format expected");
        };
        let Some(Format::JsonFormat(s)) = f.format else {
            panic!("JSON format expected");
        };
        assert_eq!(s.fields.len(), JSON_FIELDS.len());
        assert_eq!(
            s.fields["response_code"].kind,
            Some(value::Kind::StringValue("%RESPONSE_CODE%".into()))
        );
    }

    #[test]
    fn json_fields_are_sorted_and_distinct() {
        assert!(JSON_FIELDS.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn text_access_log_uses_the_default_format_on_the_chosen_stream() {
        let log = access_log(AccessLogFormat::Text, AccessLogSink::Stderr);
        assert_eq!(log.name, "envoy.access_loggers.stderr");
        let Some(access_log::ConfigType::TypedConfig(any)) = log.config_type else {
            panic!("typed config expected");
        };
        assert_eq!(any.type_url, StderrAccessLog::type_url());
        assert!(any.value.is_empty());
    }
}
