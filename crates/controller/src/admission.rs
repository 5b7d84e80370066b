//! The admission webhooks every replica serves, started again with a backoff while they
//! cannot start.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use kube::Client;
use tokio::sync::watch;
use tracing::error;

/// Serves the webhooks until `stop` turns true. The webhook is a first line of defence only:
/// without it the reconcilers still report invalid objects, so xDS and status keep running
/// while it retries (the API server may be unreachable when the replica starts).
pub async fn serve(client: Client, config: remora_webhook::Config, stop: watch::Receiver<bool>) {
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(MAX_DELAY)
        .without_max_times()
        .build();
    while !*stop.borrow() {
        let mut stopping = stop.clone();
        let stopped = async move {
            // A dropped sender is a stop too.
            let _stopped = stopping.wait_for(|s| *s).await;
        };
        let retry_in = match remora_webhook::run(client.clone(), config.clone(), stopped).await {
            Ok(()) => return,
            Err(e) => {
                let retry_in = delays.next().unwrap_or(MAX_DELAY);
                error!(error = %e, ?retry_in, "the admission webhook cannot start");
                retry_in
            }
        };
        let mut stopping = stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(retry_in) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
    }
}

const MAX_DELAY: Duration = Duration::from_secs(30);
