//! Simulated proxies for the xDS benchmarks: thousands of ADS streams on loopback that
//! subscribe and ACK as Envoy does, each at the cost of a few shared sets rather than a
//! config of its own, and what the benchmarks measure of processes and samples.
//!
//! `xds-load` (this crate's binary) drives them against a control plane it starts itself;
//! `fleet-bench` against controller replicas on a real API server.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod catalog;
mod flavour;
pub mod fleet;
mod held;
pub mod hostile;
pub mod pending;
pub mod procfs;
pub mod running;
mod shape;
pub mod stats;
mod wire;

pub use shape::shape_for;
