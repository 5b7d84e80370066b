//! A state-of-the-world request as the server reads it. Every ACK repeats the whole
//! subscription of its type, thousands of route config names; read as `String`s, each name
//! would cost an allocation and a copy, only to be found alike and dropped. Read as slices
//! of the received message, they cost neither.

use bytes::Bytes;
use envoy_types::pb::{
    envoy::{config::core::v3::Node, service::discovery::v3::DiscoveryRequest},
    google::rpc::Status,
};

use crate::grpc::Checked;

/// `envoy.service.discovery.v3.DiscoveryRequest` with the fields the server reads, in the
/// same wire format: a `string` is `bytes` that must be UTF-8, which
/// [`SotwRequest::check`] sees to after decoding.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SotwRequest {
    /// The version of the type the proxy holds (its ACK), or held before it connected.
    #[prost(string, tag = "1")]
    pub version_info: String,
    /// Who the proxy is; the first request carries it.
    #[prost(message, optional, tag = "2")]
    pub node: Option<Node>,
    /// The resources subscribed to, UTF-8 once checked.
    #[prost(bytes = "bytes", repeated, tag = "3")]
    pub resource_names: Vec<Bytes>,
    /// The type requested.
    #[prost(string, tag = "4")]
    pub type_url: String,
    /// The nonce of the response this answers; empty in a first request.
    #[prost(string, tag = "5")]
    pub response_nonce: String,
    /// Why the proxy refused that response (a NACK).
    #[prost(message, optional, tag = "6")]
    pub error_detail: Option<Status>,
}

impl Checked for SotwRequest {
    /// Every resource name must be UTF-8, as a `string` is.
    fn check(&self) -> Result<(), String> {
        self.resource_names.iter().try_for_each(|name| {
            std::str::from_utf8(name).map(drop).map_err(|_| {
                format!(
                    "resource name {:?} is not UTF-8",
                    name.escape_ascii().to_string()
                )
            })
        })
    }
}

/// The request a client built, as the server would read it.
impl From<DiscoveryRequest> for SotwRequest {
    fn from(r: DiscoveryRequest) -> Self {
        SotwRequest {
            version_info: r.version_info,
            node: r.node,
            resource_names: r.resource_names.into_iter().map(Bytes::from).collect(),
            type_url: r.type_url,
            response_nonce: r.response_nonce,
            error_detail: r.error_detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn reads_what_envoy_sends_and_refuses_names_that_are_not_utf8() {
        let sent = DiscoveryRequest {
            version_info: "v1".into(),
            node: Some(Node {
                id: "shop/cart-1".into(),
                ..Default::default()
            }),
            resource_names: vec!["a".into(), "b:8080".into()],
            type_url: "t".into(),
            response_nonce: "3".into(),
            error_detail: Some(Status {
                code: 3,
                message: "bad".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let read = SotwRequest::decode(sent.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(read, SotwRequest::from(sent));
        assert_eq!(read.resource_names, [&b"a"[..], b"b:8080"]);
        assert_eq!(read.check(), Ok(()));

        let broken = SotwRequest {
            resource_names: vec![Bytes::from_static(b"ok"), Bytes::from_static(b"\xff")],
            ..Default::default()
        };
        let refused = SotwRequest::decode(broken.encode_to_vec().as_slice()).expect("decodes");
        assert!(refused.check().is_err());
    }
}
