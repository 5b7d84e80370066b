//! Fuzz targets as plain functions of bytes, so the same code runs under AFL (the binaries in
//! `fuzz/`, outside the workspace, built by `scripts/fuzz`) and in the ordinary test suite,
//! which replays the committed corpora and every crash found so far (`tests/corpora.rs`).
//!
//! Each target drives the code path the running control plane takes with untrusted bytes,
//! without I/O, and panics only on a real bug: a panic in our code, or an invariant of the
//! protocol broken (checked with `assert!`).
//!
//! | target | drives |
//! | --- | --- |
//! | [`manifests`] | local mode's `load_text` (YAML → objects), then `validate()` of every `SidecarPolicy` and `TrafficRoute` |
//! | [`grpc_frames`] | the ADS request framer over a stream cut at arbitrary points, each message decoded as both request types and fed to both state machines |
//! | [`sotw`], [`delta`] | the state-of-the-world and incremental state machines, fed requests and snapshot updates by a small program the bytes spell, against a model of Envoy |
//! | [`admission_review`] | the validating webhook's review (decoding, `validate()`, the answer as written) and the mutating one's, with an injector that decides and builds the patch as the controller's does |
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admission;
mod frames;
mod manifests;
mod xds;

pub use admission::admission_review;
pub use frames::grpc_frames;
pub use manifests::manifests;
pub use xds::{delta, sotw};

/// A fuzz target: panics only on a bug.
pub type Target = fn(&[u8]);

/// Every target by name: the name is the AFL binary's, and the folder of its corpus and
/// regressions.
pub const TARGETS: [(&str, Target); 5] = [
    ("manifests", manifests),
    ("grpc_frames", grpc_frames),
    ("sotw", sotw),
    ("delta", delta),
    ("admission_review", admission_review),
];
