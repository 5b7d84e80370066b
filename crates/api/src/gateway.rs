//! Gateway API (`gateway.networking.k8s.io`) routes bound to Services, as Gateway API's
//! mesh binding (GAMMA) defines them: a second front end to the one route form the model
//! resolves, [`TrafficRouteSpec`](crate::TrafficRouteSpec). These types are written for the
//! fields Remora reads; the CRDs are Gateway API's, installed by the user.
//!
//! A route is converted, then validated as a `TrafficRoute` would be, and every problem is
//! reported at the path of the user's own object (`spec.rules[0].filters[1]...`), through
//! the [`PathMap`] the conversion keeps.

pub mod http_route;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

pub use http_route::{HttpRoute, HttpRouteSpec};

/// The API group of Gateway API.
pub const GROUP: &str = "gateway.networking.k8s.io";

/// A `parentRef` of a Gateway API route. Remora reads those naming a Service; the others
/// (Gateways) belong to other controllers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    /// The parent's API group (a Service's is `""`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The parent's kind; Gateway API's default is `Gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The parent's namespace; the route's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The parent's name.
    pub name: String,
    /// For a Service, the name of one of its ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// For a Service, one of its ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

impl ParentReference {
    /// Whether it names a Service. Manifests written before the group defaulted to `""`
    /// left it out, so the CRD's default (Gateway API's own group) counts too.
    pub fn is_service(&self) -> bool {
        self.kind.as_deref() == Some("Service")
            && matches!(self.group.as_deref(), None | Some("" | "core" | GROUP))
    }
}

/// Whether a backend's `group` and `kind` name a core Service (the defaults do).
fn is_service_backend(group: Option<&str>, kind: Option<&str>) -> bool {
    matches!(group, None | Some("" | "core")) && matches!(kind, None | Some("Service"))
}

/// How the paths of the converted route map to the user's object: each entry is a prefix of
/// the converted route's paths and the path it stands for. The longest matching prefix wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathMap(Vec<(String, String)>);

impl PathMap {
    fn add(&mut self, internal: impl Into<String>, user: impl Into<String>) {
        self.0.push((internal.into(), user.into()));
    }

    /// The user's path for a path of the converted route.
    pub fn user_path(&self, internal: &str) -> String {
        let best = self
            .0
            .iter()
            .filter(|(i, _)| {
                internal.strip_prefix(i.as_str()).is_some_and(|rest| {
                    rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')
                })
            })
            .max_by_key(|(i, _)| i.len());
        match best {
            Some((i, u)) => format!("{u}{}", &internal[i.len()..]),
            None => internal.to_owned(),
        }
    }
}

/// Object metadata and a spec, as every Gateway API route has.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Object<S> {
    /// The route's metadata.
    pub metadata: ObjectMeta,
    /// Its spec.
    pub spec: S,
}
