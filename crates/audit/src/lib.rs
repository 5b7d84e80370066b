//! Audit-mode access rules, measured: each proxy reports the requests its `Audit` rules would
//! have denied over Envoy's access log service (gRPC, to the control plane it gets its
//! config from), and [`AuditLog`] counts them per policy, rule and caller over the last ten
//! minutes, for the policy's status.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod entry;
mod service;
mod window;

pub use entry::{RULE_SEPARATOR, UNAUTHENTICATED, denials};
pub use service::{AuditLog, AuditService, AuditedAllow};
pub use window::{AuditWindow, Counted, Denial, MAX_ENTRIES, MAX_LISTED, WINDOW};
