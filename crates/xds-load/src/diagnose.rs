//! What the driver adds to a phase that failed: which proxies were not done, and what each
//! was missing or received.

use remora_model::input::ObjectKey;
use remora_xds_load::{pending, running::Running};

use crate::Error;

/// Stops the fleet after a failure and adds what the first few proxies that were not done
/// had.
pub async fn diagnose(error: Error, running: Running, proxies: &[ObjectKey]) -> Error {
    match pending::diagnose(running, proxies).await {
        Some(p) => Error::Diagnosed {
            error: Box::new(error),
            count: p.count,
            examples: p.examples,
        },
        None => error,
    }
}
