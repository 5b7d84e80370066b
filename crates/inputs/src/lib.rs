//! The edge where Kubernetes objects become mesh model inputs. The conversions are shared by
//! the controller's watches and by local mode, which reads the same objects from YAML files.
#![forbid(unsafe_code)]

pub mod convert;
pub mod folder;

pub use convert::{SIDECAR_CONTAINER, proxy_container};
pub use folder::{LoadError, Loaded, load_dir};
