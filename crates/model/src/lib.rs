//! The mesh model: an index of the cluster's state and the pure function from it to every
//! proxy's config. No I/O happens here; watches and gRPC live in other crates.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
mod class;
pub mod config;
mod inbound;
mod index;
pub mod input;
mod mesh;
pub mod policy;
pub mod routing;
mod selector;
mod store;

pub use mesh::{Cause, Changes, Mesh, ObjectProblem};
