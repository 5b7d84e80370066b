//! Fleet-wide proxy state under HA. Each control-plane replica serves the proxies connected to
//! it and knows only their sync state; the leader decides status and rollout gates, and the
//! API lists proxies, for the whole fleet. So every replica publishes a [`report`] of its own
//! proxies (in a few small objects it alone writes; the controller keeps them in the API
//! server) and reads everyone else's into a [`Fleet`]: its own proxies first, then the other
//! live replicas' ones, a proxy that moved counted once at its newest connection.
//!
//! Pure: no Kubernetes, no clock of its own (callers pass the time).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod report;
mod view;

pub use report::{Report, ReportError, Shard};
pub use view::{DEFAULT_EXPIRY, Fleet, FleetProxy};
