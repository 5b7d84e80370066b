//! The health and metrics HTTP server: `/healthz` (the process runs), `/readyz` (every watch has listed
//! its objects and the first config is published, so a proxy connecting now gets a whole
//! config) and `/metrics`.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use remora_xds::SyncRegistry;
use tokio::{net::TcpListener, sync::watch};

use crate::metrics::Metrics;

/// What readiness waits for.
#[derive(Default)]
pub struct Readiness {
    /// One flag per watch, named by the kind it watches.
    pub watches: crate::watches::Listed,
    /// Set once the first config of the whole cluster is published.
    pub published: AtomicBool,
}

impl Readiness {
    /// The reasons this replica is not ready yet; empty when it is.
    pub fn waiting_for(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .watches
            .iter()
            .filter(|(_, synced)| !synced.load(Ordering::Acquire))
            .map(|(kind, _)| format!("the first list of {kind}"))
            .collect();
        if !self.published.load(Ordering::Acquire) {
            out.push("the first published config".into());
        }
        out
    }
}

#[derive(Clone)]
struct AdminState {
    ready: Arc<Readiness>,
    metrics: Arc<Metrics>,
    xds: Arc<SyncRegistry>,
}

/// The health server's routes: `/healthz`, `/readyz` and `/metrics`.
pub fn router(ready: Arc<Readiness>, metrics: Arc<Metrics>, xds: Arc<SyncRegistry>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState {
            ready,
            metrics,
            xds,
        })
}

async fn readyz(State(s): State<AdminState>) -> (StatusCode, String) {
    let waiting = s.ready.waiting_for();
    if waiting.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("waiting for {}\n", waiting.join(", ")),
        )
    }
}

async fn metrics_text(State(s): State<AdminState>) -> ([(&'static str, &'static str); 1], String) {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(&s.xds),
    )
}

/// Serves until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}
