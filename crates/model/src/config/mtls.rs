//! Mutual TLS between sidecars, in the model's terms: which chains terminate it, which
//! clusters originate it, and whom each side accepts as its peer. The certificates themselves
//! reach the proxy from its pod's identity agent; the config only names what to check.

use std::sync::Arc;

use remora_api::spiffe::SpiffeId;
use serde::{Serialize, Serializer, ser::SerializeSeq};

/// Mutual TLS a filter chain of the inbound capture listener terminates: TLS with the mesh's
/// ALPN, the client's certificate required, chaining to the trust bundle and naming any
/// identity of the trust domain.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct InboundMtls {
    /// The trust domain every accepted peer's SPIFFE ID is in.
    pub trust_domain: Arc<str>,
}

/// Mutual TLS on the inbound capture listener, besides its chains.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct CaptureMtls {
    /// Mutual TLS to a port no chain takes: terminated and sent on to the port it was sent
    /// to; `None` (a proxy whose mode is `Disabled`) leaves it to the listener's `unmatched`,
    /// as any other connection.
    pub passthrough: Option<MtlsPassthrough>,
}

/// Mutual TLS to an undeclared port, terminated and passed through.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct MtlsPassthrough {
    /// The original-destination cluster the connections go through.
    pub cluster: Arc<str>,
    /// Whom it accepts.
    pub mtls: InboundMtls,
}

/// Mutual TLS a cluster originates to the endpoints whose sidecars take it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct OutboundMtls {
    /// The identities the peer's certificate may name: the service accounts of the Service's
    /// meshed pods, sorted, each once. Never empty.
    #[serde(serialize_with = "ids_as_text")]
    pub peers: Arc<[SpiffeId]>,
}

/// SPIFFE IDs as their `spiffe://` text.
fn ids_as_text<S: Serializer>(ids: &Arc<[SpiffeId]>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut seq = serializer.serialize_seq(Some(ids.len()))?;
    for id in ids.iter() {
        seq.serialize_element(&id.to_string())?;
    }
    seq.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_written_as_spiffe_ids() {
        let m = OutboundMtls {
            peers: vec![SpiffeId::new("cluster.local", "shop", "reviews")].into(),
        };
        let json = serde_json::to_value(&m).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"peers": ["spiffe://cluster.local/ns/shop/sa/reviews"]})
        );
    }
}
