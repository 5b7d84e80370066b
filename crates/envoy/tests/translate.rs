//! The shop mesh's proxies, translated, encoded, decoded back into Envoy's types and checked:
//! references resolve within each proxy, and every IR value lands in the Envoy field that
//! carries it.

mod support;

use std::collections::BTreeSet;

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{Cluster, cluster},
            core::v3::{
                ApiVersion, ConfigSource, HealthStatus, TrafficDirection, address,
                config_source::ConfigSourceSpecifier, header_value_option::HeaderAppendAction,
                socket_address::PortSpecifier,
            },
            endpoint::v3::lb_endpoint::HostIdentifier,
            listener::v3::{FilterChain, Listener},
            route::v3::{
                Route, RouteAction, RouteConfiguration,
                header_matcher::HeaderMatchSpecifier,
                query_parameter_matcher::QueryParameterMatchSpecifier,
                redirect_action::{
                    PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier,
                },
                route::Action,
                route_action::{ClusterSpecifier, HostRewriteSpecifier},
                route_match::PathSpecifier,
            },
        },
        extensions::{
            filters::{
                common::fault::v3::fault_delay::FaultDelaySecifier,
                http::fault::v3::{HttpFault, fault_abort::ErrorType},
                network::{
                    http_connection_manager::v3::{
                        HttpConnectionManager, http_connection_manager::RouteSpecifier,
                    },
                    tcp_proxy::v3::{TcpProxy, tcp_proxy},
                },
            },
            upstreams::http::v3::{
                HttpProtocolOptions, http_protocol_options::UpstreamProtocolOptions,
                http_protocol_options::explicit_http_config::ProtocolConfig,
            },
        },
        r#type::{matcher::v3::string_matcher::MatchPattern, v3::FractionalPercent},
    },
    google::protobuf::Duration,
};
use prost::{Message, Name};
use remora_api::sidecar_policy::UnknownDestinations;
use remora_envoy::{Options, UNRESOLVED_CLUSTER};
use remora_model::config::Addressing;
use support::*;

const REVIEWS: &str = "outbound|9080||reviews.shop.svc.cluster.local";
const REVIEWS_V1: &str = "outbound|9080|version=v1|reviews.shop.svc.cluster.local";
const REVIEWS_V2: &str = "outbound|9080|version=v2|reviews.shop.svc.cluster.local";
const RATINGS: &str = "outbound|9080||ratings.shop.svc.cluster.local";
const CATALOG: &str = "outbound|50051||catalog.shop.svc.cluster.local";
const DB_V1: &str = "outbound|5432|version=v1|db.shop.svc.cluster.local";
const DB_V2: &str = "outbound|5432|version=v2|db.shop.svc.cluster.local";

fn secs(seconds: i64, millis: i32) -> Option<Duration> {
    Some(Duration {
        seconds,
        nanos: millis * 1_000_000,
    })
}

fn hundredths(numerator: u32) -> Option<FractionalPercent> {
    Some(FractionalPercent {
        numerator,
        denominator: 0,
    })
}

fn is_ads(source: Option<&ConfigSource>) -> bool {
    source.is_some_and(|s| {
        s.resource_api_version == ApiVersion::V3 as i32
            && matches!(
                s.config_source_specifier,
                Some(ConfigSourceSpecifier::Ads(_))
            )
    })
}

fn bound_to(l: &Listener) -> (String, u32) {
    let Some(address::Address::SocketAddress(a)) =
        l.address.as_ref().and_then(|a| a.address.as_ref())
    else {
        panic!("{}: socket address expected", l.name);
    };
    let Some(PortSpecifier::PortValue(port)) = a.port_specifier else {
        panic!("{}: port expected", l.name);
    };
    (a.address.clone(), port)
}

/// The clusters a route sends to: its target(s) and mirrors.
fn route_clusters(r: &Route) -> Vec<String> {
    let Some(Action::Route(a)) = &r.action else {
        return Vec::new();
    };
    let mut out: Vec<String> = match &a.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) => vec![c.clone()],
        Some(ClusterSpecifier::WeightedClusters(w)) => {
            w.clusters.iter().map(|c| c.name.clone()).collect()
        }
        other => panic!("{}: unexpected cluster specifier {other:?}", r.name),
    };
    out.extend(a.request_mirror_policies.iter().map(|m| m.cluster.clone()));
    out
}

fn weights(a: &RouteAction) -> Vec<(String, u32)> {
    let Some(ClusterSpecifier::WeightedClusters(w)) = &a.cluster_specifier else {
        panic!("weighted clusters expected, got {:?}", a.cluster_specifier);
    };
    w.clusters
        .iter()
        .map(|c| (c.name.clone(), c.weight.as_ref().map_or(0, |w| w.value)))
        .collect()
}

fn action(r: &Route) -> &RouteAction {
    match &r.action {
        Some(Action::Route(a)) => a,
        other => panic!("{}: route action expected, got {other:?}", r.name),
    }
}

/// The Envoy routes made from one rule of the reviews route, in the frontend's config.
fn rule<'a>(rc: &'a RouteConfiguration, rule: &str) -> Vec<&'a Route> {
    let name = format!("shop/reviews-rules/{rule}");
    let vh = rc
        .virtual_hosts
        .iter()
        .find(|vh| vh.name == "reviews.shop.svc.cluster.local:9080")
        .expect("reviews virtual host");
    let routes: Vec<_> = vh.routes.iter().filter(|r| r.name == name).collect();
    assert!(!routes.is_empty(), "no route {name}");
    routes
}

#[test]
fn every_reference_resolves_within_each_proxy() {
    let m = shop();
    for pod in ["frontend", "reviews-v1", "catalog-0", "db-v1"] {
        let d = decode(&config(&m, pod), &Options::default());
        assert!(!d.listeners.is_empty(), "{pod}: no listeners");
        for l in d.listeners.values() {
            let (_, port) = bound_to(l);
            assert_ne!(port, 0);
            if l.name.starts_with("outbound|10.") || l.name == "inbound|5432" {
                let tcp: TcpProxy = network_filter(l, TCP_PROXY);
                let names = match tcp.cluster_specifier {
                    Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => vec![c],
                    Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => {
                        w.clusters.into_iter().map(|c| c.name).collect()
                    }
                    None => panic!("{pod}/{}: TCP proxy without cluster", l.name),
                };
                for c in names {
                    assert!(
                        d.clusters.contains_key(&c),
                        "{pod}/{}: no cluster {c}",
                        l.name
                    );
                }
            } else {
                let hcm: HttpConnectionManager = network_filter(l, HCM);
                let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
                    panic!("{pod}/{}: RDS expected", l.name);
                };
                assert!(is_ads(rds.config_source.as_ref()), "{pod}/{}", l.name);
                assert!(
                    d.routes.contains_key(&rds.route_config_name),
                    "{pod}/{}: no route config {}",
                    l.name,
                    rds.route_config_name
                );
                let filters: Vec<_> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
                // Inbound: the RBAC filters whose rules come with the routes, before them.
                let rbac: &[&str] = if l.name.starts_with("inbound") {
                    &["remora.rbac.deny", "remora.rbac.allow"]
                } else {
                    &[]
                };
                let expected: Vec<&str> = rbac
                    .iter()
                    .copied()
                    .chain(["envoy.filters.http.fault", "envoy.filters.http.router"])
                    .collect();
                assert_eq!(filters, expected, "{pod}/{}", l.name);
            }
        }
        for rc in d.routes.values() {
            for vh in &rc.virtual_hosts {
                assert!(!vh.domains.is_empty(), "{pod}/{}: no domains", vh.name);
                for r in &vh.routes {
                    for c in route_clusters(r) {
                        assert!(
                            d.clusters.contains_key(&c),
                            "{pod}/{}: no cluster {c}",
                            r.name
                        );
                    }
                }
            }
        }
        for c in d.clusters.values() {
            if c.cluster_discovery_type
                == Some(cluster::ClusterDiscoveryType::Type(
                    cluster::DiscoveryType::Eds as i32,
                ))
            {
                assert!(
                    d.endpoints.contains_key(&c.name),
                    "{pod}: no endpoints for {}",
                    c.name
                );
            }
        }
        for e in d.endpoints.keys() {
            assert!(
                d.clusters.contains_key(e),
                "{pod}: endpoints of no cluster {e}"
            );
        }
    }
}

#[test]
fn matches_map_to_one_route_each() {
    let d = decode(&config(&shop(), "frontend"), &Options::default());
    let rc = &d.routes["9080"];
    let api = rule(rc, "api");
    assert_eq!(api.len(), 2, "one Envoy route per match");
    assert!(
        api.iter()
            .all(|r| r.stat_prefix == "shop/reviews-rules/api"),
        "each route keeps its own stats under its rule's name"
    );

    let m = api[0].r#match.as_ref().expect("match");
    assert_eq!(
        m.path_specifier,
        Some(PathSpecifier::PathSeparatedPrefix("/api".into()))
    );
    let headers: Vec<_> = m
        .headers
        .iter()
        .map(|h| {
            let Some(HeaderMatchSpecifier::StringMatch(s)) = &h.header_match_specifier else {
                panic!("string match expected for {}", h.name);
            };
            (h.name.as_str(), s.match_pattern.clone().expect("pattern"))
        })
        .collect();
    assert_eq!(headers.len(), 3);
    assert_eq!(
        headers[0],
        ("x-user-group", MatchPattern::Exact("beta".into()))
    );
    let (name, MatchPattern::SafeRegex(re)) = &headers[1] else {
        panic!("regex expected: {:?}", headers[1]);
    };
    assert_eq!((*name, re.regex.as_str()), ("x-trace", "[0-9a-f]+"));
    assert_eq!(headers[2], (":method", MatchPattern::Exact("POST".into())));
    let [q] = m.query_parameters.as_slice() else {
        panic!("one query parameter matcher expected");
    };
    assert_eq!(q.name, "debug");
    let Some(QueryParameterMatchSpecifier::StringMatch(s)) = &q.query_parameter_match_specifier
    else {
        panic!("string match expected");
    };
    assert_eq!(s.match_pattern, Some(MatchPattern::Exact("1".into())));

    let second = api[1].r#match.as_ref().expect("match");
    assert_eq!(
        second.path_specifier,
        Some(PathSpecifier::PathSeparatedPrefix("/beta".into()))
    );
    assert!(second.headers.is_empty() && second.query_parameters.is_empty());
    assert_eq!(api[0].action, api[1].action, "both matches do the same");

    let versioned = rule(rc, "versioned");
    let Some(PathSpecifier::SafeRegex(re)) =
        &versioned[0].r#match.as_ref().expect("match").path_specifier
    else {
        panic!("regex path expected");
    };
    assert_eq!(re.regex, "/v[0-9]+/.*");
    assert_eq!(re.engine_type, None, "RE2 is the default");

    let old = rule(rc, "old");
    assert_eq!(
        old[0].r#match.as_ref().expect("match").path_specifier,
        Some(PathSpecifier::Path("/old".into()))
    );
    let default = rule(rc, "default");
    assert_eq!(
        default[0].r#match.as_ref().expect("match").path_specifier,
        Some(PathSpecifier::Prefix("/".into()))
    );
}

#[test]
fn forward_actions_carry_every_setting() {
    let d = decode(&config(&shop(), "frontend"), &Options::default());
    let rc = &d.routes["9080"];
    let api = rule(rc, "api")[0];
    let a = action(api);
    assert_eq!(
        weights(a),
        [(REVIEWS_V1.to_owned(), 90), (REVIEWS_V2.to_owned(), 10)]
    );
    assert_eq!(a.timeout, secs(3, 0));

    let retry = a.retry_policy.as_ref().expect("retry policy");
    assert_eq!(retry.retry_on, "5xx,retriable-status-codes");
    assert_eq!(retry.num_retries.as_ref().map(|n| n.value), Some(2));
    assert_eq!(retry.per_try_timeout, secs(1, 0), "from backendRequest");
    assert_eq!(retry.retriable_status_codes, [409]);
    assert_eq!(
        retry
            .retry_back_off
            .as_ref()
            .expect("backoff")
            .base_interval,
        secs(0, 25)
    );

    assert_eq!(a.prefix_rewrite, "/v2");
    assert_eq!(a.regex_rewrite, None);
    assert_eq!(
        a.host_rewrite_specifier,
        Some(HostRewriteSpecifier::HostRewriteLiteral(
            "reviews.internal".into()
        ))
    );
    let [mirror] = a.request_mirror_policies.as_slice() else {
        panic!("one mirror expected");
    };
    assert_eq!(mirror.cluster, RATINGS);
    let fraction = mirror.runtime_fraction.as_ref().expect("fraction");
    assert_eq!(fraction.default_value, hundredths(25));

    let added: Vec<_> = api
        .request_headers_to_add
        .iter()
        .map(|h| {
            let header = h.header.as_ref().expect("header");
            (header.key.as_str(), header.value.as_str(), h.append_action)
        })
        .collect();
    assert_eq!(
        added,
        [
            (
                "x-routed-by",
                "remora",
                HeaderAppendAction::OverwriteIfExistsOrAdd as i32
            ),
            (
                "x-tag",
                "canary",
                HeaderAppendAction::AppendIfExistsOrAdd as i32
            ),
        ]
    );
    assert_eq!(api.request_headers_to_remove, ["x-debug"]);
    let response: Vec<_> = api
        .response_headers_to_add
        .iter()
        .filter_map(|h| h.header.as_ref())
        .map(|h| (h.key.as_str(), h.value.as_str()))
        .collect();
    assert_eq!(response, [("x-served-by", "reviews")]);
    assert_eq!(api.response_headers_to_remove, ["server"]);

    assert_eq!(api.typed_per_filter_config.len(), 1);
    let any = &api.typed_per_filter_config["envoy.filters.http.fault"];
    assert_eq!(any.type_url, HttpFault::type_url());
    let fault = HttpFault::decode(any.value.as_slice()).expect("fault");
    let delay = fault.delay.expect("delay");
    assert_eq!(delay.percentage, hundredths(10));
    assert_eq!(
        delay.fault_delay_secifier,
        Some(FaultDelaySecifier::FixedDelay(Duration {
            seconds: 0,
            nanos: 100_000_000
        }))
    );
    let abort = fault.abort.expect("abort");
    assert_eq!(abort.percentage, hundredths(5));
    assert_eq!(abort.error_type, Some(ErrorType::HttpStatus(503)));

    let versioned = action(rule(rc, "versioned")[0]);
    assert_eq!(
        versioned.cluster_specifier,
        Some(ClusterSpecifier::Cluster(REVIEWS_V2.into()))
    );
    let rewrite = versioned.regex_rewrite.as_ref().expect("regex rewrite");
    assert_eq!(
        rewrite.pattern.as_ref().map(|p| p.regex.as_str()),
        Some("^.*$")
    );
    assert_eq!(rewrite.substitution, "/latest");
    assert_eq!(versioned.prefix_rewrite, "");

    let default = rule(rc, "default")[0];
    let a = action(default);
    assert_eq!(
        a.cluster_specifier,
        Some(ClusterSpecifier::Cluster(REVIEWS.into()))
    );
    assert_eq!(a.timeout, secs(0, 0), "no limit, not Envoy's 15s default");
    assert_eq!(a.retry_policy, None);
    assert!(default.typed_per_filter_config.is_empty());
    assert!(default.request_headers_to_add.is_empty());
}

#[test]
fn a_missing_backend_keeps_its_share_on_the_unresolved_cluster() {
    let d = decode(&config(&shop(), "frontend"), &Options::default());
    let a = action(rule(&d.routes["9080"], "missing")[0]);
    assert_eq!(
        weights(a),
        [
            (UNRESOLVED_CLUSTER.to_owned(), 1),
            (REVIEWS_V1.to_owned(), 3)
        ]
    );
    let unresolved = &d.clusters[UNRESOLVED_CLUSTER];
    assert_eq!(
        unresolved.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32
        ))
    );
    let la = unresolved
        .load_assignment
        .as_ref()
        .expect("load assignment");
    assert_eq!(la.cluster_name, UNRESOLVED_CLUSTER);
    assert!(
        la.endpoints.is_empty(),
        "no endpoints, so Envoy answers 503"
    );
}

#[test]
fn redirects_carry_every_setting() {
    let d = decode(&config(&shop(), "frontend"), &Options::default());
    let old = rule(&d.routes["9080"], "old")[0];
    let Some(Action::Redirect(r)) = &old.action else {
        panic!("redirect expected");
    };
    assert_eq!(r.host_redirect, "new.example.com");
    assert_eq!(r.port_redirect, 8443);
    assert_eq!(
        r.response_code,
        RedirectResponseCode::MovedPermanently as i32
    );
    assert_eq!(
        r.scheme_rewrite_specifier,
        Some(SchemeRewriteSpecifier::SchemeRedirect("https".into()))
    );
    assert_eq!(
        r.path_rewrite_specifier,
        Some(PathRewriteSpecifier::PathRedirect("/new".into()))
    );
}

#[test]
fn eds_clusters_take_policy_settings_and_endpoints_over_ads() {
    let d = decode(&config(&shop(), "frontend"), &Options::default());
    let c = &d.clusters[REVIEWS_V2];
    assert_eq!(
        c.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32
        ))
    );
    let eds = c.eds_cluster_config.as_ref().expect("eds config");
    assert!(is_ads(eds.eds_config.as_ref()));
    assert_eq!(
        eds.service_name, "",
        "the endpoints carry the cluster's name"
    );
    assert_eq!(c.connect_timeout, secs(2, 0));
    assert_eq!(c.lb_policy, cluster::LbPolicy::RoundRobin as i32);
    assert_eq!(c.load_assignment, None);
    assert!(c.typed_extension_protocol_options.is_empty());

    let od = c.outlier_detection.as_ref().expect("outlier detection");
    assert_eq!(od.consecutive_5xx.as_ref().map(|v| v.value), Some(5));
    assert_eq!(od.interval, secs(10, 0));
    assert_eq!(od.base_ejection_time, secs(30, 0));
    assert_eq!(od.max_ejection_percent.as_ref().map(|v| v.value), Some(50));

    let cb = c.circuit_breakers.as_ref().expect("circuit breakers");
    let [t] = cb.thresholds.as_slice() else {
        panic!("one threshold expected");
    };
    let v =
        |x: &Option<envoy_types::pb::google::protobuf::UInt32Value>| x.as_ref().map(|v| v.value);
    assert_eq!(v(&t.max_connections), Some(1024));
    assert_eq!(v(&t.max_pending_requests), Some(512));
    assert_eq!(v(&t.max_requests), Some(2048));
    assert_eq!(v(&t.max_retries), None, "unset keeps Envoy's default");

    // Only ready endpoints, grouped by zone, all healthy.
    let la = &d.endpoints[REVIEWS];
    let by_zone: Vec<(String, Vec<String>)> = la
        .endpoints
        .iter()
        .map(|l| {
            let zone = l
                .locality
                .as_ref()
                .map(|l| l.zone.clone())
                .unwrap_or_default();
            let addresses = l
                .lb_endpoints
                .iter()
                .map(|e| {
                    assert_eq!(e.health_status, HealthStatus::Healthy as i32);
                    let Some(HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                        panic!("endpoint expected");
                    };
                    let Some(address::Address::SocketAddress(a)) =
                        ep.address.as_ref().and_then(|a| a.address.as_ref())
                    else {
                        panic!("socket address expected");
                    };
                    let Some(PortSpecifier::PortValue(port)) = a.port_specifier else {
                        panic!("port expected");
                    };
                    format!("{}:{port}", a.address)
                })
                .collect();
            (zone, addresses)
        })
        .collect();
    assert_eq!(
        by_zone,
        [
            ("zone-a".to_owned(), vec!["10.0.0.1:9080".to_owned()]),
            ("zone-b".to_owned(), vec!["10.0.0.2:9080".to_owned()]),
        ]
    );
    let ratings = &d.endpoints[RATINGS];
    assert_eq!(ratings.endpoints.len(), 1);
    assert_eq!(ratings.endpoints[0].locality, None, "no zone, no locality");
}

#[test]
fn http2_clusters_speak_http2_upstream() {
    let d = decode(&config(&shop(), "frontend"), &Options::default());
    let c = &d.clusters[CATALOG];
    assert_eq!(c.typed_extension_protocol_options.len(), 1);
    let any = &c.typed_extension_protocol_options[&HttpProtocolOptions::full_name()];
    assert_eq!(any.type_url, HttpProtocolOptions::type_url());
    let options = HttpProtocolOptions::decode(any.value.as_slice()).expect("options");
    let Some(UpstreamProtocolOptions::ExplicitHttpConfig(explicit)) =
        options.upstream_protocol_options
    else {
        panic!("explicit HTTP config expected");
    };
    assert!(matches!(
        explicit.protocol_config,
        Some(ProtocolConfig::Http2ProtocolOptions(_))
    ));

    // The catalog pod's own inbound cluster is static, to its application over HTTP/2.
    let d = decode(&config(&shop(), "catalog-0"), &Options::default());
    let inbound: &Cluster = &d.clusters["inbound|50051"];
    assert_eq!(
        inbound.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32
        ))
    );
    assert_eq!(inbound.eds_cluster_config, None);
    assert_eq!(inbound.typed_extension_protocol_options.len(), 1);
    let la = inbound.load_assignment.as_ref().expect("inline endpoints");
    assert_eq!(la.cluster_name, "inbound|50051");
    let [locality] = la.endpoints.as_slice() else {
        panic!("one locality expected");
    };
    let [e] = locality.lb_endpoints.as_slice() else {
        panic!("one endpoint expected");
    };
    let Some(HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
        panic!("endpoint expected");
    };
    let Some(address::Address::SocketAddress(a)) =
        ep.address.as_ref().and_then(|a| a.address.as_ref())
    else {
        panic!("socket address expected");
    };
    assert_eq!(a.address, "127.0.0.1");
    assert_eq!(a.port_specifier, Some(PortSpecifier::PortValue(50051)));
}

#[test]
fn listeners_bind_where_the_model_and_options_say() {
    let m = shop();
    let frontend = config(&m, "frontend");
    let d = decode(&frontend, &Options::default());
    let out = &d.listeners["outbound|9080"];
    assert_eq!(bound_to(out), ("0.0.0.0".to_owned(), 9080));
    assert_eq!(out.traffic_direction, TrafficDirection::Outbound as i32);
    let inbound = &d.listeners["inbound|8080"];
    assert_eq!(bound_to(inbound), ("10.0.0.9".to_owned(), 8080));
    assert_eq!(inbound.traffic_direction, TrafficDirection::Inbound as i32);
    let hcm: HttpConnectionManager = network_filter(inbound, HCM);
    let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
        panic!("RDS expected");
    };
    assert_eq!(rds.route_config_name, "inbound|8080");
    assert_eq!(hcm.stat_prefix, "inbound_8080");
    let inbound_routes = &d.routes["inbound|8080"];
    let route = &inbound_routes.virtual_hosts[0].routes[0];
    assert_eq!(route_clusters(route), ["inbound|8080"]);

    let options = Options {
        bind_outbound_to: Some("127.0.0.2".parse().expect("ip")),
        ..Options::default()
    };
    let d = decode(&frontend, &options);
    assert_eq!(
        bound_to(&d.listeners["outbound|9080"]),
        ("127.0.0.2".to_owned(), 9080)
    );
    assert_eq!(
        bound_to(&d.listeners["inbound|8080"]),
        ("10.0.0.9".to_owned(), 8080),
        "inbound listeners bind as the model says"
    );
    assert_eq!(
        bound_to(&d.listeners["outbound|10.96.0.5|5432"]),
        ("10.96.0.5".to_owned(), 5432),
        "listeners bound to one address keep it"
    );
}

#[test]
fn tcp_listeners_split_by_weight() {
    let d = decode(&config(&shop(), "frontend"), &Options::default());
    let l = &d.listeners["outbound|10.96.0.5|5432"];
    assert_eq!(bound_to(l), ("10.96.0.5".to_owned(), 5432));
    let tcp: TcpProxy = network_filter(l, TCP_PROXY);
    assert_eq!(tcp_split(&tcp), [(DB_V1, 80), (DB_V2, 20)]);
    assert_eq!(tcp.access_log.len(), 1, "the policy asks for access logs");

    // The database pod's inbound listener is TCP to its one local cluster.
    let d = decode(&config(&shop(), "db-v1"), &Options::default());
    let tcp: TcpProxy = network_filter(&d.listeners["inbound|5432"], TCP_PROXY);
    assert_eq!(
        tcp.cluster_specifier,
        Some(tcp_proxy::ClusterSpecifier::Cluster("inbound|5432".into()))
    );
}

#[test]
fn access_logs_follow_the_policy() {
    let d = decode(&config(&shop(), "frontend"), &Options::default());
    let hcm: HttpConnectionManager = network_filter(&d.listeners["outbound|9080"], HCM);
    let [log] = hcm.access_log.as_slice() else {
        panic!("one access log expected");
    };
    assert_eq!(log.name, "envoy.access_loggers.stdout");

    let quiet = FLEET_POLICY.replace("  accessLog: {format: Json}\n", "");
    let mut events = shop_events(REVIEWS_ROUTE);
    events.push(policy(&quiet));
    let d = decode(&config(&mesh(events), "frontend"), &Options::default());
    for l in d.listeners.values() {
        let logs = if l.name.starts_with("outbound|10.") || l.name == "inbound|5432" {
            network_filter::<TcpProxy>(l, TCP_PROXY).access_log
        } else {
            network_filter::<HttpConnectionManager>(l, HCM).access_log
        };
        // Inbound HTTP keeps only the audit log, which logs nothing until a shadow rule denies.
        let asked: Vec<&str> = logs
            .iter()
            .map(|l| l.name.as_str())
            .filter(|n| *n != "envoy.access_loggers.http_grpc" || !l.name.starts_with("inbound"))
            .collect();
        assert!(
            asked.is_empty(),
            "{}: no access log asked for: {asked:?}",
            l.name
        );
    }
}

#[test]
fn translation_is_deterministic() {
    let m = shop();
    let frontend = config(&m, "frontend");
    let once = translate_all(&frontend, &Options::default());
    let twice = translate_all(&frontend, &Options::default());
    assert_eq!(once, twice);
    // A mesh built again from the same inputs gives the same bytes, maps included.
    let again = translate_all(&config(&shop(), "frontend"), &Options::default());
    assert_eq!(once, again);
    for r in &once {
        assert_eq!(r.version.len(), 16);
        assert_eq!(
            r.version,
            format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&r.any.value))
        );
    }
    let versions: BTreeSet<_> = once.iter().map(|r| &r.version).collect();
    assert_eq!(
        versions.len(),
        once.len(),
        "different resources, different versions"
    );
}

#[test]
fn a_changed_weight_changes_only_the_route_config_version() {
    let before = translate_all(&config(&shop(), "frontend"), &Options::default());
    let changed = REVIEWS_ROUTE.replace("weight: 90", "weight: 80");
    let after = translate_all(
        &config(&mesh(shop_events(&changed)), "frontend"),
        &Options::default(),
    );
    let differing: Vec<_> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b.version != a.version)
        .map(|(b, a)| {
            assert_eq!(b.name, a.name);
            assert_ne!(b.any.value, a.any.value);
            b.name.as_str()
        })
        .collect();
    assert_eq!(differing, ["9080"]);
}

/// The original destination each chain of a capture listener takes: name, port, addresses.
fn chain_matches(l: &Listener) -> Vec<(String, u32, Vec<String>)> {
    l.filter_chains
        .iter()
        .map(|c| {
            let m = c.filter_chain_match.as_ref().expect("a match");
            let port = m.destination_port.as_ref().map_or(0, |p| p.value);
            let addresses = m
                .prefix_ranges
                .iter()
                .map(|r| {
                    let len = r.prefix_len.as_ref().map_or(0, |l| l.value);
                    format!("{}/{len}", r.address_prefix)
                })
                .collect();
            (c.name.clone(), port, addresses)
        })
        .collect()
}

fn chain<'a>(l: &'a Listener, name: &str) -> &'a FilterChain {
    l.filter_chains
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("{}: no chain {name}", l.name))
}

fn is_original_dst(c: &Cluster) -> bool {
    c.cluster_discovery_type
        == Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::OriginalDst as i32,
        ))
        && c.lb_policy == cluster::LbPolicy::ClusterProvided as i32
}

#[test]
fn captured_proxies_have_a_capture_listener_each_way_with_a_chain_per_destination() {
    let d = decode(
        &config(&captured_shop(UnknownDestinations::Passthrough), "frontend"),
        &Options::default(),
    );
    let names: Vec<_> = d.listeners.keys().map(String::as_str).collect();
    assert_eq!(names, ["inbound", "outbound"]);
    let out = &d.listeners["outbound"];
    assert_eq!(bound_to(out), ("0.0.0.0".to_owned(), 15001));
    assert_eq!(out.stat_prefix, "outbound");
    assert_eq!(out.traffic_direction, TrafficDirection::Outbound as i32);
    let filters: Vec<_> = out
        .listener_filters
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(filters, ["envoy.filters.listener.original_dst"]);
    let chain_of =
        |name: &str, port, address: &str| (name.to_owned(), port, vec![format!("{address}/32")]);
    assert_eq!(
        chain_matches(out),
        [
            ("capture-port".to_owned(), 15001, vec![]),
            chain_of("catalog.shop.svc.cluster.local:50051", 50051, "10.96.0.6"),
            chain_of("db.shop.svc.cluster.local:5432", 5432, "10.96.0.5"),
            chain_of("ratings.shop.svc.cluster.local:9080", 9080, "10.96.0.2"),
            chain_of("reviews.shop.svc.cluster.local:9080", 9080, "10.96.0.1"),
        ]
    );

    let reviews = "reviews.shop.svc.cluster.local:9080";
    let hcm: HttpConnectionManager = chain_filter(chain(out, reviews), HCM);
    assert_eq!(hcm.stat_prefix, "reviews.shop.svc.cluster.local_9080");
    let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
        panic!("RDS expected");
    };
    assert!(is_ads(rds.config_source.as_ref()));
    assert_eq!(rds.route_config_name, reviews);
    assert_eq!(hcm.access_log.len(), 1, "the policy asks for access logs");
    let vh = &d.routes[reviews].virtual_hosts;
    assert_eq!(vh.len(), 1, "one Service port per route config");

    let tcp: TcpProxy = chain_filter(chain(out, "db.shop.svc.cluster.local:5432"), TCP_PROXY);
    assert_eq!(tcp.stat_prefix, "db.shop.svc.cluster.local_5432");
    assert_eq!(tcp_split(&tcp), [(DB_V1, 80), (DB_V2, 20)]);

    let inbound = &d.listeners["inbound"];
    assert_eq!(bound_to(inbound), ("0.0.0.0".to_owned(), 15006));
    assert_eq!(inbound.traffic_direction, TrafficDirection::Inbound as i32);
    assert_eq!(
        chain_matches(inbound),
        [
            ("capture-port".to_owned(), 15006, vec![]),
            ("inbound|8080".to_owned(), 8080, vec![]),
        ]
    );
    let hcm: HttpConnectionManager = chain_filter(chain(inbound, "inbound|8080"), HCM);
    assert_eq!(hcm.stat_prefix, "inbound_8080");
}

#[test]
fn unknown_destinations_pass_through_an_original_destination_cluster_or_are_refused() {
    let d = decode(
        &config(&captured_shop(UnknownDestinations::Passthrough), "frontend"),
        &Options::default(),
    );
    for (listener, cluster) in [
        ("outbound", "passthrough"),
        ("inbound", "inbound|passthrough"),
    ] {
        let l = &d.listeners[listener];
        let default = l.default_filter_chain.as_ref().expect("a default chain");
        let tcp: TcpProxy = chain_filter(default, TCP_PROXY);
        assert_eq!(tcp.stat_prefix, "passthrough");
        assert_eq!(
            tcp.cluster_specifier,
            Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.into()))
        );
        assert_eq!(tcp.access_log.len(), 1);
        assert!(is_original_dst(&d.clusters[cluster]), "{cluster}");
        assert_eq!(d.clusters[cluster].load_assignment, None);
        assert_eq!(d.clusters[cluster].connect_timeout, secs(2, 0));
    }

    let d = decode(
        &config(&captured_shop(UnknownDestinations::Refuse), "frontend"),
        &Options::default(),
    );
    let out = &d.listeners["outbound"];
    assert_eq!(out.default_filter_chain, None, "Envoy closes them");
    assert!(
        chain_matches(out)
            .iter()
            .all(|(name, ..)| name != "capture-port")
    );
    assert_eq!(out.access_log.len(), 1, "refused connections are logged");
    assert!(!d.clusters.contains_key("passthrough"));
    assert!(
        d.listeners["inbound"].default_filter_chain.is_some(),
        "the policy is about outbound destinations"
    );
}

#[test]
fn captured_references_resolve_within_each_proxy() {
    for unknown in [
        UnknownDestinations::Passthrough,
        UnknownDestinations::Refuse,
    ] {
        let m = captured_shop(unknown);
        for pod in ["frontend", "reviews-v1", "catalog-0", "db-v1"] {
            let d = decode(&config(&m, pod), &Options::default());
            for l in d.listeners.values() {
                let chains = l.filter_chains.iter().chain(&l.default_filter_chain);
                for c in chains.filter(|c| c.name != "capture-port") {
                    let filter = c.filters.first().map(|f| f.name.as_str());
                    if filter == Some(HCM) {
                        let hcm: HttpConnectionManager = chain_filter(c, HCM);
                        let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
                            panic!("{pod}/{}: RDS expected", c.name);
                        };
                        assert!(
                            d.routes.contains_key(&rds.route_config_name),
                            "{pod}/{}",
                            c.name
                        );
                    } else {
                        let tcp: TcpProxy = chain_filter(c, TCP_PROXY);
                        let names = match tcp.cluster_specifier {
                            Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => vec![c],
                            Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => {
                                w.clusters.into_iter().map(|c| c.name).collect()
                            }
                            None => panic!("{pod}/{}: TCP proxy without cluster", c.name),
                        };
                        for name in names {
                            assert!(d.clusters.contains_key(&name), "{pod}/{}: {name}", c.name);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn captured_translation_is_deterministic_and_a_route_change_leaves_the_listener_alone() {
    let m = captured_shop(UnknownDestinations::Passthrough);
    let once = translate_all(&config(&m, "frontend"), &Options::default());
    assert_eq!(
        once,
        translate_all(&config(&m, "frontend"), &Options::default())
    );
    let rebuilt = captured_shop(UnknownDestinations::Passthrough);
    assert_eq!(
        once,
        translate_all(&config(&rebuilt, "frontend"), &Options::default())
    );

    let changed = REVIEWS_ROUTE.replace("weight: 90", "weight: 80");
    let mut events = shop_events(&changed);
    events.push(fleet_policy(UnknownDestinations::Passthrough));
    let m = mesh_addressed(Addressing::Captured, events);
    let after = translate_all(&config(&m, "frontend"), &Options::default());
    let differing: Vec<_> = once
        .iter()
        .zip(&after)
        .filter(|(b, a)| b.version != a.version)
        .map(|(b, _)| b.name.as_str())
        .collect();
    assert_eq!(differing, ["reviews.shop.svc.cluster.local:9080"]);
}

/// A TCP proxy's weighted split, by cluster name.
fn tcp_split(tcp: &TcpProxy) -> Vec<(&str, u32)> {
    let Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) = &tcp.cluster_specifier else {
        panic!("weighted clusters expected");
    };
    w.clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight))
        .collect()
}
