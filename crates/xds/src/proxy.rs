//! Who is on the other end of a stream.

use std::fmt;

use envoy_types::pb::{envoy::config::core::v3::Node, google::protobuf::value::Kind};

/// A proxy is the pod it runs in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProxyId {
    pub namespace: String,
    pub name: String,
}

impl ProxyId {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ProxyId {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Reads the identity a bootstrap gives: `NAMESPACE` and `POD_NAME` in the node metadata,
    /// or a node id written `namespace/pod`.
    pub fn from_node(node: &Node) -> Result<ProxyId, String> {
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
            return Ok(ProxyId::new(ns, pod));
        }
        match node.id.split_once('/') {
            Some((ns, pod)) if !ns.is_empty() && !pod.is_empty() => Ok(ProxyId::new(ns, pod)),
            _ => Err(format!(
                "node id {:?} does not name a pod: set metadata NAMESPACE and POD_NAME, or an id \
                 of the form namespace/pod (see `remora bootstrap`)",
                node.id
            )),
        }
    }
}

impl fmt::Display for ProxyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
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
        assert_eq!(
            ProxyId::from_node(&node),
            Ok(ProxyId::new("shop", "cart-1"))
        );
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
        assert_eq!(ProxyId::from_node(&node), Ok(ProxyId::new("web", "web-0")));
        let bad = Node {
            id: "sidecar".into(),
            ..Default::default()
        };
        assert!(
            ProxyId::from_node(&bad)
                .expect_err("no pod")
                .contains("namespace/pod")
        );
    }
}
