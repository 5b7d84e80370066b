//! The running control plane: sources of events (a folder of YAML here, Kubernetes watches
//! in the controller) feed the model in debounced batches; every changed proxy gets a new
//! snapshot of translated resources; the xDS server ships them and the admin API reports.
#![forbid(unsafe_code)]

pub mod debounce;
pub mod local;
pub mod publish;
pub mod shared;

pub use debounce::Debounce;
pub use publish::Publisher;
pub use shared::SharedMesh;
