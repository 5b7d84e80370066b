//! The running control plane: sources of events (Kubernetes watches in the controller, a
//! folder of YAML in local mode) feed the model in debounced batches through one
//! [`Pipeline`]; every changed proxy gets a new snapshot of translated resources; the gRPC
//! server ([`PipelineState::serve`]) ships them over ADS and answers the `remora.v1` API.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod debounce;
pub mod pipeline;
pub mod publish;
pub mod serve;
pub mod shared;

pub use debounce::Debounce;
pub use pipeline::{Pipeline, PipelineState, Published, Step};
pub use publish::Publisher;
pub use serve::{DRAIN, Serving, bind, cancel, drain, spawn_server};
pub use shared::SharedMesh;
