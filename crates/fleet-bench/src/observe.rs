//! What the driver watches in the API server while the fleet runs, each event stamped with
//! the moment it arrived: the edited route's status, and every replica's report objects
//! (decoded, as the leader reads them). Watching is all a user of the cluster can do, so the
//! times here are what a user (or `kubectl get -w`) would see.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt as _, watcher},
};
use remora_api::{TrafficRoute, conditions::PROGRAMMED};
use remora_controller::fleet::REPORT_LABEL;
use remora_xds::snapshot::ROUTE;
use tokio::{sync::watch, task::JoinHandle};
use tracing::warn;

use crate::timeline::{Acks, ReportEvent, RouteSeen};

/// The key of a report object's body, as `remora_controller::fleet` writes it.
const REPORT_BODY: &str = "proxies";

/// The route's status as watches delivered it, every state kept.
pub struct RouteWatch {
    seen: watch::Receiver<Vec<RouteSeen>>,
    task: JoinHandle<()>,
}

impl RouteWatch {
    /// Watches route `namespace/name`.
    pub fn start(client: &Client, namespace: &str, name: &str) -> RouteWatch {
        let api: Api<TrafficRoute> = Api::namespaced(client.clone(), namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let (tx, seen) = watch::channel(Vec::new());
        let task = tokio::spawn(async move {
            let mut events =
                std::pin::pin!(watcher(api, config).default_backoff().applied_objects());
            while let Some(event) = events.next().await {
                match event {
                    Ok(route) => {
                        let at = Instant::now();
                        tx.send_modify(|seen| seen.push(route_seen(&route, at)));
                    }
                    Err(e) => warn!(error = %e, "watching the route; retrying"),
                }
            }
        });
        RouteWatch { seen, task }
    }

    /// Waits for the first state since `since` that `done` accepts.
    pub async fn first(
        &mut self,
        since: Instant,
        done: impl Fn(&RouteSeen) -> bool,
    ) -> Result<RouteSeen, &'static str> {
        let found = self
            .seen
            .wait_for(|seen| seen.iter().any(|s| s.at >= since && done(s)))
            .await
            .map_err(|_| "the route's watch ended")?;
        found
            .iter()
            .find(|s| s.at >= since && done(s))
            .cloned()
            .ok_or("the route's watch lost a state")
    }

    /// Every state seen since `since`.
    pub fn since(&self, since: Instant) -> Vec<RouteSeen> {
        self.seen
            .borrow()
            .iter()
            .filter(|s| s.at >= since)
            .cloned()
            .collect()
    }
}

impl Drop for RouteWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn route_seen(route: &TrafficRoute, at: Instant) -> RouteSeen {
    let status = route.status.as_ref();
    let counts = status.and_then(|s| s.proxies.clone()).unwrap_or_default();
    RouteSeen {
        at,
        generation: route.metadata.generation,
        observed: status.and_then(|s| s.observed_generation),
        affected: counts.affected,
        acked: counts.acked,
        nacked: counts.nacked,
        programmed: status
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == PROGRAMMED))
            .map(|c| c.status.clone()),
    }
}

/// Every replica's report objects as watches delivered them.
pub struct ReportWatch {
    events: Arc<Mutex<Vec<ReportEvent>>>,
    task: JoinHandle<()>,
}

impl ReportWatch {
    /// Watches the report objects in `namespace`.
    pub fn start(client: &Client, namespace: &str) -> ReportWatch {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let config = watcher::Config::default().labels(REPORT_LABEL);
        let events = Arc::new(Mutex::new(Vec::new()));
        let log = events.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
            while let Some(event) = stream.next().await {
                let at = Instant::now();
                let event = match event {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                        report_event(&o, at, true)
                    }
                    Ok(watcher::Event::Delete(o)) => report_event(&o, at, false),
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => continue,
                    Err(e) => {
                        warn!(error = %e, "watching the proxy reports; retrying");
                        continue;
                    }
                };
                log.lock().unwrap_or_else(|e| e.into_inner()).push(event);
            }
        });
        ReportWatch { events, task }
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<ReportEvent> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for ReportWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What one report object says of each proxy's route configs: the version it ACKed.
fn report_event(object: &ConfigMap, at: Instant, present: bool) -> ReportEvent {
    let body = object.data.as_ref().and_then(|d| d.get(REPORT_BODY));
    let rds = body
        .filter(|_| present)
        .map(|body| match remora_fleet::report::decode(body) {
            Ok(proxies) => proxies
                .into_iter()
                .map(|p| {
                    let acked = p.types.get(ROUTE).and_then(|t| t.acked.clone());
                    (p.proxy, acked)
                })
                .collect(),
            Err(e) => {
                warn!(object = %object.name_any(), error = %e, "a report this version cannot read");
                Vec::new()
            }
        });
    ReportEvent {
        at,
        object: object.name_any(),
        replica: object
            .labels()
            .get(REPORT_LABEL)
            .cloned()
            .unwrap_or_default(),
        bytes: body.map_or(0, String::len),
        rds: rds.map(|r: Acks| Arc::new(r)),
    }
}
