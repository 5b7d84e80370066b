//! Remora's custom resources and the one validation function every entry point shares.
//!
//! The doc comments on these types become the CRD's OpenAPI descriptions, which is what
//! `kubectl explain` prints: they are written for the person editing a manifest.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Several `printcolumn(...)` entries in one `#[kube]` attribute repeat `type_ = ...`, which
// this lint mistakes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod access_policy;
pub mod conditions;
mod duration;
pub mod gateway;
mod regex;
mod schema;
pub mod sidecar_policy;
pub mod spiffe;
pub mod traffic_route;
mod unknown_fields;
mod validation;

pub use access_policy::{AccessPolicy, AccessPolicySpec, AccessPolicyStatus};
pub use duration::Duration;
pub use sidecar_policy::{SidecarPolicy, SidecarPolicySpec, SidecarPolicyStatus};
pub use traffic_route::{TrafficRoute, TrafficRouteSpec, TrafficRouteStatus};
pub use unknown_fields::{crd_schema, unknown_fields};
pub use validation::{
    FieldError, FieldProblem, Validate, ValidationErrors, ValidationSettings, decode,
};

/// The API group of every Remora resource.
pub const GROUP: &str = "remora.dev";
/// The API version the types in this crate serve.
pub const VERSION: &str = "v1alpha1";
