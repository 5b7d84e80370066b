//! A benchmark of real Envoys against local mode: N Envoy processes, each the sidecar of one
//! proxy pod of a synthetic mesh written to a polled folder, all on loopback.
//!
//! [`latency::run`] edits one route by replacing its file and times, with real requests
//! through each Envoy, how long after the write every Envoy routes by the new rule.
//! [`memory::run`] reads what each Envoy holds (its RSS and its own
//! `server.memory_allocated`) once it has the whole config of the mesh.
//!
//! The synthetic mesh moves to 127.0.0.0/8 (Services, pods, endpoints), so every Envoy
//! binds its outbound listeners on its own pod's loopback address, as local mode's explicit
//! addressing intends: 50 Envoys on one machine never share an HTTP listener's address. The
//! TCP listeners bind the Services' own addresses, which every Envoy shares through
//! `SO_REUSEPORT` (on by default in Envoy).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod envoy;
pub mod fleet;
pub mod folder;
pub mod http;
pub mod latency;
pub mod manifest;
pub mod memory;
pub mod mesh;
pub mod procfs;
pub mod report;
pub mod stats;

use remora_model::input::ObjectKey;

/// Why a benchmark could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// No `envoy` binary was found.
    #[error(
        "no Envoy to run: {0}; install it with scripts/install-tools and `source scripts/env.sh`, or set ENVOY_BIN"
    )]
    NoEnvoy(String),
    /// A file, a process or a socket could not be handled.
    #[error("cannot {what}: {source}")]
    Io {
        /// What was being done, with the path or address.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The mesh could not be written as YAML.
    #[error(transparent)]
    Render(#[from] manifest::RenderError),
    /// Local mode did not start.
    #[error("local mode did not start: {0}")]
    Local(#[from] remora_local::LocalError),
    /// An Envoy ended while it was needed.
    #[error("the Envoy of {proxy} exited ({status}); its log ends with:\n{log}")]
    EnvoyExited {
        /// The proxy it was the sidecar of.
        proxy: ObjectKey,
        /// How it ended.
        status: String,
        /// The end of its log.
        log: String,
    },
    /// Something did not happen in the time allowed.
    #[error("gave up waiting for {waiting}: {detail}")]
    Timeout {
        /// What was awaited.
        waiting: String,
        /// The last thing seen, e.g. an Envoy's answer or its log.
        detail: String,
    },
    /// An Envoy's admin port did not answer its stats.
    #[error("cannot read the stats of the Envoy of {proxy}: {detail}")]
    Admin {
        /// The proxy it is the sidecar of.
        proxy: ObjectKey,
        /// What went wrong.
        detail: String,
    },
}

/// The 1-minute load average, as `uptime` shows it; `None` where `/proc` has none.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
