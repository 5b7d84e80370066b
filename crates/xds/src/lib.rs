//! The distribution edge: Envoy's Aggregated Discovery Service over gRPC.
//!
//! The protocol logic lives in two pure state machines, [`sotw::SotwStream`] and
//! [`delta::DeltaStream`], fed with requests and snapshots and returning the responses to
//! send; they are tested without a network, and share what they do alike (`per_type`). [`server`] only moves messages between tonic
//! streams, a [`cache::SnapshotCache`] of each proxy's latest snapshot, and the
//! [`sync::SyncRegistry`] that records what every proxy was sent, ACKed and NACKed.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod budget;
pub mod by_type;
pub mod cache;
pub mod delta;
pub mod grpc;
pub mod limits;
mod machine;
pub mod names;
mod per_type;
pub mod server;
pub mod snapshot;
pub mod sotw;
pub mod sync;

pub use budget::{DEFAULT_RESPONSE_BUDGET, ResponseBudget};
pub use cache::SnapshotCache;
pub use limits::{Limits, Refusal, Refusals};
pub use server::{Admission, AdsServer, DEFAULT_MAX_STREAM_AGE, StreamAge};
pub use snapshot::Snapshot;
pub use sync::SyncRegistry;
