//! Who a proxy is, read from the node it names in its first xDS request: the identity its
//! bootstrap ([`crate::bootstrap`]) wrote.

use envoy_types::pb::{envoy::config::core::v3::Node, google::protobuf::value::Kind};
use remora_model::input::ObjectKey;

/// A node that names no pod.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "node id {id:?} does not name a pod: set metadata NAMESPACE and POD_NAME, or an id of the \
     form namespace/pod (see `remora bootstrap`)"
)]
pub struct UnnamedNode {
    /// The node id the proxy sent.
    pub id: String,
}

/// The pod a proxy runs in: `NAMESPACE` and `POD_NAME` in the node metadata, or a node id
/// written `namespace/pod`.
pub fn proxy_of(node: &Node) -> Result<ObjectKey, UnnamedNode> {
    let field = |key: &str| {
        node.metadata
            .as_ref()
            .and_then(|m| m.fields.get(key))
            .and_then(|v| match &v.kind {
                Some(Kind::StringValue(s)) if !s.is_empty() => Some(s.clone()),
                _ => None,
            })
    };
    if let (Some(ns), Some(pod)) = (field("NAMESPACE"), field("POD_NAME")) {
        return Ok(ObjectKey::new(ns, pod));
    }
    match node.id.split_once('/') {
        Some((ns, pod)) if !ns.is_empty() && !pod.is_empty() => Ok(ObjectKey::new(ns, pod)),
        _ => Err(UnnamedNode {
            id: node.id.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::protobuf::{Struct, Value};

    use super::*;

    #[test]
    fn identity_from_metadata_or_id() {
        let mut node = Node {
            id: "shop/cart-1".into(),
            ..Default::default()
        };
        assert_eq!(proxy_of(&node), Ok(ObjectKey::new("shop", "cart-1")));
        let s = |v: &str| Value {
            kind: Some(Kind::StringValue(v.into())),
        };
        node.metadata = Some(Struct {
            fields: [
                ("NAMESPACE".into(), s("web")),
                ("POD_NAME".into(), s("web-0")),
            ]
            .into_iter()
            .collect(),
        });
        assert_eq!(proxy_of(&node), Ok(ObjectKey::new("web", "web-0")));
        let bad = Node {
            id: "sidecar".into(),
            ..Default::default()
        };
        assert!(
            proxy_of(&bad)
                .expect_err("no pod")
                .to_string()
                .contains("namespace/pod")
        );
    }
}
