//! The edge where Kubernetes objects become mesh model inputs. The conversions are shared by
//! the controller's watches and by local mode, which reads the same objects from YAML files.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod convert;
pub mod folder;

pub use folder::{LoadError, Loaded, Origin, load_dir, load_text, warnings, yaml_files};
// Where the conversions tell a proxy pod from another: defined with the policy that injects it.
pub use remora_api::sidecar_policy::{PROXY_CONTAINER, proxy_container};
