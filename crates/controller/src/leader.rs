//! Leader election on a `coordination.k8s.io/v1` Lease. Every replica watches and serves
//! xDS; only the holder of the Lease writes status. The flag it yields turns false when
//! another replica holds the Lease: the lease manager renews `grace` seconds before expiry,
//! so a replica that cannot renew is no longer the holder after `duration` and the next
//! one takes over.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{info, warn};

/// The task that holds and renews the Lease.
pub type LeaseTask = JoinHandle<Result<LeaseManager, LeaseManagerError>>;

/// Which Lease to compete for, and how.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica's identity in the Lease (the pod name).
    pub identity: String,
    /// How long the Lease holds without renewal (whole seconds).
    pub duration: Duration,
    /// How long before expiry the holder renews.
    pub grace: Duration,
}

/// Why leader election could not start.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The lease manager could not be built.
    #[error("lease {namespace}/{name}: {source}")]
    Manager {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// The lease manager's error.
        source: LeaseManagerError,
    },
    /// The grace is zero or not shorter than the duration (in whole seconds).
    #[error(
        "lease grace ({grace:?}) must be shorter than its duration ({duration:?}), both at least 1 s"
    )]
    Timing {
        /// The configured duration.
        duration: Duration,
        /// The configured grace.
        grace: Duration,
    },
}

/// Competes for the Lease until every receiver of the returned flag is dropped; the lease is
/// released then, and the returned task ends. The flag is `true` while this replica holds
/// the Lease. Aborting the task instead stops renewing at once, as a crash would.
pub async fn elect(
    client: Client,
    config: LeaseConfig,
) -> Result<(watch::Receiver<bool>, LeaseTask), LeaseError> {
    let secs = |d: Duration| d.as_secs();
    if secs(config.grace) == 0 || secs(config.grace) >= secs(config.duration) {
        return Err(LeaseError::Timing {
            duration: config.duration,
            grace: config.grace,
        });
    }
    let manager = LeaseManagerBuilder::new(client, &config.name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(secs(config.duration))
        .with_grace(secs(config.grace))
        .build()
        .await
        .map_err(|source| LeaseError::Manager {
            namespace: config.namespace.clone(),
            name: config.name.clone(),
            source,
        })?;
    let (leading, task) = manager.watch().await;
    Ok((leading, task))
}

/// Waits for the lease task to end after its receivers were dropped, logging how.
pub async fn released(task: LeaseTask, identity: &str) {
    match task.await {
        Ok(Ok(_)) => info!(%identity, "lease released"),
        Ok(Err(e)) => warn!(%identity, error = %e, "lease manager stopped"),
        Err(e) if e.is_cancelled() => {}
        Err(e) => warn!(%identity, error = %e, "lease manager failed"),
    }
}
