//! What one proxy should hold: every resource by type and name, each with its own version.

use std::{collections::BTreeMap, hash::Hasher, sync::Arc};

use envoy_types::pb::google::protobuf::Any;

pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// The order updates go out in: a cluster before the endpoints that fill it, a listener
/// before the routes it names, so nothing refers to what the proxy does not have yet.
pub const PUSH_ORDER: [&str; 4] = [CLUSTER, ENDPOINT, LISTENER, ROUTE];

/// The served type a request's `type_url` names, if we serve it.
pub fn served_type(type_url: &str) -> Option<&'static str> {
    PUSH_ORDER.into_iter().find(|t| *t == type_url)
}

/// Listeners and clusters are requested as a whole (wildcard); routes and endpoints by name.
pub fn is_wildcard_type(type_url: &str) -> bool {
    type_url == CLUSTER || type_url == LISTENER
}

/// One encoded resource. The version is derived from the content, so every replica of the
/// control plane gives the same version to the same resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub name: String,
    pub version: String,
    pub body: Any,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    types: BTreeMap<&'static str, BTreeMap<String, Arc<Resource>>>,
}

impl Snapshot {
    pub fn insert(&mut self, type_url: &'static str, resource: Arc<Resource>) {
        self.types
            .entry(type_url)
            .or_default()
            .insert(resource.name.clone(), resource);
    }

    /// The resources of one type, by name.
    pub fn of_type(&self, type_url: &str) -> impl Iterator<Item = (&String, &Arc<Resource>)> {
        self.types.get(type_url).into_iter().flatten()
    }

    pub fn get(&self, type_url: &str, name: &str) -> Option<&Arc<Resource>> {
        self.types.get(type_url)?.get(name)
    }

    pub fn len(&self) -> usize {
        self.types.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The version of a set of resources: a hash of their names and versions, so the same set
/// gets the same version on any replica and after any restart.
pub fn set_version<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    for (name, version) in entries {
        h.write(name.as_bytes());
        h.write_u8(0);
        h.write(version.as_bytes());
        h.write_u8(0);
    }
    format!("{:016x}", h.finish())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A resource whose body is just its name and version, enough for protocol tests.
    pub fn res(name: &str, version: &str) -> Arc<Resource> {
        Arc::new(Resource {
            name: name.into(),
            version: version.into(),
            body: Any {
                type_url: String::new(),
                value: format!("{name}@{version}").into_bytes(),
            },
        })
    }

    pub fn snapshot(entries: &[(&'static str, &str, &str)]) -> Snapshot {
        let mut s = Snapshot::default();
        for (t, name, version) in entries {
            s.insert(t, res(name, version));
        }
        s
    }

    #[test]
    fn set_versions_follow_content_not_construction() {
        let a = set_version([("a", "1"), ("b", "2")]);
        assert_eq!(a, set_version([("a", "1"), ("b", "2")]));
        assert_ne!(a, set_version([("a", "1"), ("b", "3")]));
        // Name and version boundaries matter.
        assert_ne!(set_version([("ab", "1")]), set_version([("a", "b1")]));
    }

    #[test]
    fn only_the_four_types_are_served() {
        assert_eq!(served_type(ROUTE), Some(ROUTE));
        assert_eq!(
            served_type("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"),
            None
        );
    }
}
