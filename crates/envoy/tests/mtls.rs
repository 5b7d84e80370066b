//! Mutual TLS between sidecars as Envoy receives it: the shop captured with workload
//! identity, translated and decoded back.

mod support;

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::Cluster, core::v3::transport_socket::ConfigType,
            endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
        },
        extensions::transport_sockets::tls::v3::{
            UpstreamTlsContext, common_tls_context::ValidationContextType,
        },
        r#type::matcher::v3::string_matcher::MatchPattern,
    },
    google::protobuf::value::Kind,
};
use prost::{Message, Name};
use remora_api::sidecar_policy::MtlsMode;
use remora_envoy::{
    Caches, MESH_ALPN, MTLS_MATCH, MTLS_METADATA_KEY, MTLS_PASSTHROUGH_CHAIN, Options,
    TRANSPORT_SOCKET_MATCH, translate, translate_with,
};
use remora_model::config::{Resource, ResourceType};
use support::*;

const REVIEWS: &str = "outbound|9080||reviews.shop.svc.cluster.local";
const REVIEWS_V1: &str = "outbound|9080|version=v1|reviews.shop.svc.cluster.local";
const RATINGS: &str = "outbound|9080||ratings.shop.svc.cluster.local";

/// The identities a cluster accepts over mutual TLS, or `None` if it speaks none.
fn accepted(c: &Cluster) -> Option<Vec<String>> {
    let [m] = c.transport_socket_matches.as_slice() else {
        assert!(
            c.transport_socket_matches.is_empty(),
            "{}: one match at most",
            c.name
        );
        return None;
    };
    assert_eq!(m.name, MTLS_MATCH);
    let wanted = &m.r#match.as_ref().expect("a match").fields[MTLS_METADATA_KEY];
    assert_eq!(wanted.kind, Some(Kind::BoolValue(true)));
    let socket = m.transport_socket.as_ref().expect("a socket");
    let Some(ConfigType::TypedConfig(any)) = &socket.config_type else {
        panic!("typed config expected");
    };
    assert_eq!(any.type_url, UpstreamTlsContext::type_url());
    let context = UpstreamTlsContext::decode(any.value.as_slice()).expect("decodes");
    let common = context.common_tls_context.expect("common");
    assert_eq!(common.alpn_protocols, [MESH_ALPN]);
    let Some(ValidationContextType::CombinedValidationContext(v)) = common.validation_context_type
    else {
        panic!("combined validation expected");
    };
    let sans = v
        .default_validation_context
        .expect("default validation")
        .match_typed_subject_alt_names
        .into_iter()
        .map(|m| match m.matcher.and_then(|m| m.match_pattern) {
            Some(MatchPattern::Exact(id)) => id,
            other => panic!("exact IDs expected, not {other:?}"),
        })
        .collect();
    Some(sans)
}

/// Whether each endpoint carries the mark of mutual TLS.
fn marked(la: &ClusterLoadAssignment) -> Vec<bool> {
    la.endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .map(|e| {
            e.metadata.as_ref().is_some_and(|m| {
                m.filter_metadata[TRANSPORT_SOCKET_MATCH].fields[MTLS_METADATA_KEY].kind
                    == Some(Kind::BoolValue(true))
            })
        })
        .collect()
}

fn chain_names(l: &Listener) -> Vec<&str> {
    l.filter_chains.iter().map(|c| c.name.as_str()).collect()
}

#[test]
fn clusters_speak_mutual_tls_to_meshed_endpoints_and_check_the_services_identities() {
    let d = decode(
        &config(&meshed_shop(MtlsMode::Permissive), "frontend"),
        &Options::default(),
    );
    let default_sa = vec!["spiffe://cluster.local/ns/shop/sa/default".to_owned()];
    for name in [REVIEWS, REVIEWS_V1] {
        let c = &d.clusters[name];
        assert_eq!(accepted(c), Some(default_sa.clone()), "{name}");
        assert_eq!(c.transport_socket, None, "{name}: plaintext by default");
        assert!(marked(&d.endpoints[name]).iter().all(|m| *m), "{name}");
    }
    assert_eq!(accepted(&d.clusters[RATINGS]), None, "no meshed pod behind");
    assert_eq!(marked(&d.endpoints[RATINGS]), [false]);
    for name in ["passthrough", "inbound|8080"] {
        assert_eq!(accepted(&d.clusters[name]), None, "{name}");
    }
}

#[test]
fn a_proxy_with_mutual_tls_disabled_speaks_plaintext_to_everyone() {
    let d = decode(
        &config(&meshed_shop(MtlsMode::Disabled), "frontend"),
        &Options::default(),
    );
    assert_eq!(accepted(&d.clusters[REVIEWS]), None);
    let inbound = &d.listeners["inbound"];
    assert_eq!(chain_names(inbound), ["capture-port", "inbound|8080"]);
}

#[test]
fn the_inbound_listener_inspects_tls_whatever_the_mode_and_serves_as_the_mode_says() {
    for (mode, chains, plaintext) in [
        (
            MtlsMode::Permissive,
            vec![
                "capture-port",
                MTLS_PASSTHROUGH_CHAIN,
                "inbound|8080",
                "inbound|8080|mtls",
            ],
            true,
        ),
        (
            MtlsMode::Strict,
            vec!["capture-port", MTLS_PASSTHROUGH_CHAIN, "inbound|8080|mtls"],
            false,
        ),
        (
            MtlsMode::Disabled,
            vec!["capture-port", "inbound|8080"],
            true,
        ),
    ] {
        let d = decode(
            &config(&meshed_shop(mode), "reviews-v1"),
            &Options::default(),
        );
        let inbound = &d.listeners["inbound"];
        assert_eq!(chain_names(inbound), chains, "{mode:?}");
        assert_eq!(
            inbound.default_filter_chain.is_some(),
            plaintext,
            "{mode:?}"
        );
        let filters: Vec<&str> = inbound
            .listener_filters
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(
            filters,
            [
                "envoy.filters.listener.original_dst",
                "envoy.filters.listener.tls_inspector"
            ],
            "{mode:?}"
        );
        let outbound = &d.listeners["outbound"];
        assert_eq!(
            outbound.listener_filters.len(),
            1,
            "outbound inspects nothing"
        );
    }
}

/// Listeners built from chains encoded once are the same bytes as listeners encoded whole,
/// with mutual TLS too.
#[test]
fn cached_listeners_are_the_same_bytes_with_mutual_tls() {
    let options = Options::default();
    let mut caches = Caches::default();
    for mode in [MtlsMode::Permissive, MtlsMode::Strict, MtlsMode::Disabled] {
        let m = meshed_shop(mode);
        for proxy in m.proxies() {
            let config = m.proxy_config(proxy).expect("a config");
            for (_, r) in config.of_type(ResourceType::Listener) {
                let Resource::Listener(_) = r else {
                    unreachable!("listeners");
                };
                assert_eq!(
                    translate_with(r, &options, &mut caches),
                    translate(r, &options)
                );
            }
        }
    }
}
