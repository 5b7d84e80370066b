//! Gateway API (`gateway.networking.k8s.io`) routes bound to Services, as Gateway API's
//! mesh binding (GAMMA) defines them: a second front end to the one route form the model
//! resolves, [`TrafficRouteSpec`](crate::TrafficRouteSpec). These types are written for the
//! fields Remora reads; the CRDs are Gateway API's, installed by the user.
//!
//! A route is converted, then validated as a `TrafficRoute` would be, and every problem is
//! reported at the path of the user's own object (`spec.rules[0].filters[1]...`), through
//! the [`PathMap`] the conversion keeps.

mod convert;
pub mod grpc_route;
pub mod http_route;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::traffic_route::HeaderModifier;

pub use convert::Converted;
pub use grpc_route::{GrpcRoute, GrpcRouteSpec};
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

/// The spec of a Gateway API route, as far as Remora reads it: `R` is the kind's rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec<R> {
    /// Where the route attaches: Services for the mesh, Gateways for others.
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    /// Host names; a mesh route is chosen by the Service called, so they are not read.
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// The rules.
    #[serde(default)]
    pub rules: Vec<R>,
}

impl<R> RouteSpec<R> {
    /// Whether a parent is a Service: only those routes are the mesh's.
    pub fn has_service_parent(&self) -> bool {
        self.parent_refs.iter().any(ParentReference::is_service)
    }
}

/// Whether a backend's `group` and `kind` name a core Service (the defaults do).
fn is_service_backend(group: Option<&str>, kind: Option<&str>) -> bool {
    matches!(group, None | Some("" | "core")) && matches!(kind, None | Some("Service"))
}

/// A filter of a rule: its `type` says which one of the other fields holds its config.
/// `HTTPRoute` and `GRPCRoute` share the shape; each takes some of the types.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteFilter {
    /// `RequestHeaderModifier`, `ResponseHeaderModifier`, `RequestMirror`, and for an
    /// `HTTPRoute` also `URLRewrite` and `RequestRedirect`; others Remora does not implement.
    #[serde(rename = "type")]
    pub kind: String,
    /// For `RequestHeaderModifier`.
    #[serde(default)]
    pub request_header_modifier: Option<HeaderModifier>,
    /// For `ResponseHeaderModifier`.
    #[serde(default)]
    pub response_header_modifier: Option<HeaderModifier>,
    /// For `URLRewrite`.
    #[serde(default, rename = "urlRewrite")]
    pub url_rewrite: Option<crate::traffic_route::UrlRewrite>,
    /// For `RequestRedirect`.
    #[serde(default)]
    pub request_redirect: Option<crate::traffic_route::Redirect>,
    /// For `RequestMirror`.
    #[serde(default)]
    pub request_mirror: Option<RequestMirror>,
}

/// `RequestMirror`'s config.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestMirror {
    /// Where copies go.
    pub backend_ref: BackendReference,
    /// The share of requests copied; all when absent.
    #[serde(default)]
    pub percent: Option<i32>,
}

/// A backend of a rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendReference {
    /// The backend's group; a Service's is `""`, the default.
    #[serde(default)]
    pub group: Option<String>,
    /// The backend's kind; `Service`, the default.
    #[serde(default)]
    pub kind: Option<String>,
    /// Its name.
    pub name: String,
    /// Its namespace; the route's own when absent.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The Service port.
    #[serde(default)]
    pub port: Option<i32>,
    /// Its relative share; 1 when absent.
    #[serde(default)]
    pub weight: Option<i32>,
    /// Filters for this backend only (not implemented by Remora).
    #[serde(default)]
    pub filters: Vec<RouteFilter>,
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
