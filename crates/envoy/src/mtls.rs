//! Mutual TLS between sidecars in Envoy's terms. Both ends take their certificate and the
//! trust bundle over SDS from the identity agent in their pod ([`crate::sds`]), speak the
//! mesh's own ALPN ([`MESH_ALPN`]), and check the peer's SPIFFE ID: a server accepts any
//! identity of the trust domain, a client only those the Service it calls runs as.
//!
//! Inbound, the capture listener's TLS inspector reads the ALPN of each connection, and a
//! port's `inbound|<port>|mtls` chain takes the connections that offer the mesh's, beside (or,
//! under `Strict`, instead of) the plaintext `inbound|<port>`. Outbound, a cluster picks TLS or
//! plaintext per endpoint: an endpoint whose pod takes mutual TLS carries
//! `{MTLS_METADATA_KEY: true}` in its [`TRANSPORT_SOCKET_MATCH`] metadata, which the
//! cluster's one transport socket match ([`MTLS_MATCH`]) selects.

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::cluster::TransportSocketMatch,
            core::v3::{
                ApiConfigSource, ApiVersion, ConfigSource, GrpcService, Metadata, TransportSocket,
                api_config_source::ApiType,
                config_source::ConfigSourceSpecifier,
                grpc_service::{EnvoyGrpc, TargetSpecifier},
                transport_socket,
            },
            listener::v3::{FilterChainMatch, ListenerFilter, listener_filter},
        },
        extensions::{
            filters::listener::tls_inspector::v3::TlsInspector,
            transport_sockets::tls::v3::{
                CertificateValidationContext, CommonTlsContext, DownstreamTlsContext,
                SdsSecretConfig, SubjectAltNameMatcher, UpstreamTlsContext,
                common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
                subject_alt_name_matcher::SanType,
            },
        },
        r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern},
    },
    google::protobuf::{BoolValue, Struct, Value, value},
};
use remora_api::spiffe::SpiffeId;
use remora_model::config::{InboundMtls, OutboundMtls};

use crate::{
    proto,
    sds::{SDS_CLUSTER, TRUST_BUNDLE_SECRET, WORKLOAD_SECRET},
};

/// The ALPN protocol sidecars offer each other: a connection that offers it is mutual TLS
/// from the mesh, told apart from an application's own TLS.
pub const MESH_ALPN: &str = "remora-mtls";
/// The metadata namespace Envoy reads an endpoint's transport socket match from.
pub const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";
/// The key, in [`TRANSPORT_SOCKET_MATCH`] metadata, of an endpoint that takes mutual TLS.
pub const MTLS_METADATA_KEY: &str = "remora.dev/mtls";
/// The name of a cluster's transport socket match for mutual TLS (Envoy's stats name it).
pub const MTLS_MATCH: &str = "mtls";
/// Envoy's name of the TLS transport socket.
const TLS_SOCKET: &str = "envoy.transport_sockets.tls";

/// Reads, before any chain is chosen, whether a connection is TLS and which ALPN it offers.
pub(crate) fn tls_inspector() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".to_owned(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(proto::any(
            &TlsInspector::default(),
        ))),
        ..Default::default()
    }
}

/// Narrows a chain's match to TLS that offers the mesh's ALPN.
pub(crate) fn match_mtls(m: FilterChainMatch) -> FilterChainMatch {
    FilterChainMatch {
        transport_protocol: "tls".to_owned(),
        application_protocols: vec![MESH_ALPN.to_owned()],
        ..m
    }
}

/// Terminates mutual TLS: the client must present a certificate that chains to the trust
/// bundle and names an identity of the trust domain.
pub(crate) fn downstream(m: &InboundMtls) -> TransportSocket {
    let prefix = SpiffeId::trust_domain_prefix(&m.trust_domain);
    let context = DownstreamTlsContext {
        common_tls_context: Some(common(vec![uri(MatchPattern::Prefix(prefix))])),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    };
    tls_socket(proto::any(&context))
}

/// Originates mutual TLS: the server must present a certificate that chains to the trust
/// bundle and names one of `m.peers`.
fn upstream(m: &OutboundMtls) -> TransportSocket {
    let sans = m
        .peers
        .iter()
        .map(|id| uri(MatchPattern::Exact(id.to_string())))
        .collect();
    let context = UpstreamTlsContext {
        common_tls_context: Some(common(sans)),
        ..Default::default()
    };
    tls_socket(proto::any(&context))
}

/// The cluster's one transport socket match: mutual TLS to the endpoints marked for it; the
/// others get the cluster's default, plaintext.
pub(crate) fn socket_matches(m: &OutboundMtls) -> Vec<TransportSocketMatch> {
    vec![TransportSocketMatch {
        name: MTLS_MATCH.to_owned(),
        r#match: Some(mtls_struct()),
        transport_socket: Some(upstream(m)),
    }]
}

/// The metadata of an endpoint that takes mutual TLS. One entry in each protobuf map, so the
/// encoding is the same every time.
pub(crate) fn endpoint_metadata() -> Metadata {
    Metadata {
        filter_metadata: [(TRANSPORT_SOCKET_MATCH.to_owned(), mtls_struct())].into(),
        ..Default::default()
    }
}

/// `{MTLS_METADATA_KEY: true}`.
fn mtls_struct() -> Struct {
    Struct {
        fields: [(
            MTLS_METADATA_KEY.to_owned(),
            Value {
                kind: Some(value::Kind::BoolValue(true)),
            },
        )]
        .into(),
    }
}

/// What both ends share: the workload's certificate and the trust bundle from SDS, the
/// mesh's ALPN, and the peer identities accepted.
fn common(sans: Vec<SubjectAltNameMatcher>) -> CommonTlsContext {
    CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![sds_secret(WORKLOAD_SECRET)],
        alpn_protocols: vec![MESH_ALPN.to_owned()],
        validation_context_type: Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext {
                    match_typed_subject_alt_names: sans,
                    ..Default::default()
                }),
                validation_context_sds_secret_config: Some(sds_secret(TRUST_BUNDLE_SECRET)),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// A URI SAN matcher.
fn uri(pattern: MatchPattern) -> SubjectAltNameMatcher {
    SubjectAltNameMatcher {
        san_type: SanType::Uri as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(pattern),
            ignore_case: false,
        }),
        ..Default::default()
    }
}

fn tls_socket(config: envoy_types::pb::google::protobuf::Any) -> TransportSocket {
    TransportSocket {
        name: TLS_SOCKET.to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(config)),
    }
}

/// A secret from the pod's identity agent.
fn sds_secret(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_owned(),
        sds_config: Some(sds_source()),
    }
}

/// The agent's SDS server, over gRPC on the static [`SDS_CLUSTER`].
fn sds_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(ApiConfigSource {
            api_type: ApiType::Grpc as i32,
            transport_api_version: ApiVersion::V3 as i32,
            grpc_services: vec![GrpcService {
                target_specifier: Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc {
                    cluster_name: SDS_CLUSTER.to_owned(),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use prost::{Message, Name};

    use super::*;

    fn decode<M: Message + Name + Default>(socket: &TransportSocket) -> M {
        assert_eq!(socket.name, TLS_SOCKET);
        let Some(transport_socket::ConfigType::TypedConfig(any)) = &socket.config_type else {
            panic!("typed config expected");
        };
        assert_eq!(any.type_url, M::type_url());
        M::decode(any.value.as_slice()).expect("decodes")
    }

    /// The secrets, their source, the ALPN, and the SAN patterns of a context.
    fn summary(c: &CommonTlsContext) -> (Vec<String>, Vec<String>, Vec<MatchPattern>) {
        let mut secrets: Vec<String> = c
            .tls_certificate_sds_secret_configs
            .iter()
            .map(|s| s.name.clone())
            .collect();
        let Some(ValidationContextType::CombinedValidationContext(v)) = &c.validation_context_type
        else {
            panic!("a combined validation context expected");
        };
        let bundle = v
            .validation_context_sds_secret_config
            .as_ref()
            .expect("sds");
        secrets.push(bundle.name.clone());
        for s in c.tls_certificate_sds_secret_configs.iter().chain([bundle]) {
            let Some(ConfigSourceSpecifier::ApiConfigSource(api)) = s
                .sds_config
                .as_ref()
                .and_then(|c| c.config_source_specifier.clone())
            else {
                panic!("an API config source expected");
            };
            assert_eq!(api.api_type, ApiType::Grpc as i32);
            assert_eq!(api.transport_api_version, ApiVersion::V3 as i32);
            let [
                GrpcService {
                    target_specifier: Some(TargetSpecifier::EnvoyGrpc(g)),
                    ..
                },
            ] = api.grpc_services.as_slice()
            else {
                panic!("one Envoy gRPC service expected");
            };
            assert_eq!(g.cluster_name, SDS_CLUSTER);
        }
        let sans = v
            .default_validation_context
            .iter()
            .flat_map(|d| &d.match_typed_subject_alt_names)
            .map(|m| {
                assert_eq!(m.san_type, SanType::Uri as i32);
                m.matcher
                    .as_ref()
                    .and_then(|m| m.match_pattern.clone())
                    .expect("a pattern")
            })
            .collect();
        (secrets, c.alpn_protocols.clone(), sans)
    }

    #[test]
    fn a_server_requires_a_client_certificate_of_the_trust_domain() {
        let socket = downstream(&InboundMtls {
            trust_domain: "cluster.local".into(),
        });
        let context: DownstreamTlsContext = decode(&socket);
        assert_eq!(
            context.require_client_certificate,
            Some(BoolValue { value: true })
        );
        let (secrets, alpn, sans) = summary(&context.common_tls_context.expect("common"));
        assert_eq!(secrets, [WORKLOAD_SECRET, TRUST_BUNDLE_SECRET]);
        assert_eq!(alpn, [MESH_ALPN]);
        assert_eq!(
            sans,
            [MatchPattern::Prefix("spiffe://cluster.local/".into())]
        );
    }

    #[test]
    fn a_client_accepts_exactly_the_identities_of_the_service() {
        let peers = ["api", "api-canary"].map(|sa| SpiffeId::new("cluster.local", "shop", sa));
        let [m] = socket_matches(&OutboundMtls {
            peers: peers.to_vec().into(),
        })
        .try_into()
        .expect("one match");
        assert_eq!(m.name, MTLS_MATCH);
        assert_eq!(m.r#match, Some(mtls_struct()));
        let context: UpstreamTlsContext = decode(&m.transport_socket.expect("a socket"));
        assert_eq!(context.sni, "", "no SNI: the inbound chains match on ALPN");
        let (secrets, alpn, sans) = summary(&context.common_tls_context.expect("common"));
        assert_eq!(secrets, [WORKLOAD_SECRET, TRUST_BUNDLE_SECRET]);
        assert_eq!(alpn, [MESH_ALPN]);
        assert_eq!(
            sans,
            [
                MatchPattern::Exact("spiffe://cluster.local/ns/shop/sa/api".into()),
                MatchPattern::Exact("spiffe://cluster.local/ns/shop/sa/api-canary".into()),
            ]
        );
    }

    #[test]
    fn an_endpoint_marked_for_mutual_tls_is_what_the_match_selects() {
        let metadata = endpoint_metadata();
        assert_eq!(
            metadata.filter_metadata.get(TRANSPORT_SOCKET_MATCH),
            Some(&mtls_struct())
        );
        assert_eq!(
            mtls_struct().fields[MTLS_METADATA_KEY].kind,
            Some(value::Kind::BoolValue(true))
        );
        // Maps of one entry encode alike every time.
        assert_eq!(
            metadata.encode_to_vec(),
            endpoint_metadata().encode_to_vec()
        );
    }
}
