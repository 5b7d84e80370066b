//! The status of `TrafficRoute`, `SidecarPolicy` and `AccessPolicy`.
//!
//! Everything that decides what a status says is a pure function of plain facts the
//! controller gathers from the model and the xDS server: [`route_status`], [`policy_status`]
//! and [`transitions`] (the Events a person should see). Computing a status twice from the
//! same facts gives the same value, timestamps included, so an unchanged status is never
//! written again. [`StatusWriter`] is the only part that talks to the API server: it applies
//! a status when it differs from the object's and publishes the Events of the change.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod access;
mod condition;
pub mod gateway;
mod message;
mod policy;
mod ready;
pub mod reason;
mod route;
mod tally;
mod transition;
mod version;
mod writer;

pub use access::{AccessFacts, access_policy_status};
pub use policy::{PolicyFacts, policy_status};
pub use route::{RouteFacts, route_status};
pub use tally::ProxyTally;
pub use transition::{Severity, Transition, transitions};
pub use writer::{Error, FIELD_MANAGER, StatusWriter};
