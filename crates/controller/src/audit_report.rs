//! The audit counts of every replica, for the leader's status: each replica writes what its
//! proxies reported (`remora_audit::AuditLog`) to a ConfigMap of its own, owned by its pod
//! (gone with it), and watches everyone's; a proxy streams its would-be denials to whichever
//! replica it is connected to.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use futures::StreamExt as _;
use k8s_openapi::{
    api::core::v1::{ConfigMap, Pod},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt as _, watcher},
};
use remora_audit::{AuditLog, Counted};
use tokio::task::JoinHandle;
use tracing::warn;

use crate::fleet::FleetConfig;

/// Marks the audit report objects, with the replica that writes each as its value.
pub const AUDIT_LABEL: &str = "remora.dev/audit-report";
const BODY: &str = "counts";
const RENEWED: &str = "renewed";
const MANAGER: &str = "remora-audit";
/// How often a replica looks whether its counts changed.
const CHECK: Duration = Duration::from_secs(2);

/// Where the leader finds the other replicas' counts.
#[derive(Clone, Debug)]
pub struct AuditFleet {
    /// Their reports.
    pub remote: Arc<RemoteAudits>,
    /// This replica, whose own counts come from its `AuditLog`.
    pub replica: String,
    /// How long a report that is not renewed counts.
    pub expiry: Duration,
}

impl AuditFleet {
    /// The live reports of the other replicas.
    pub fn others(&self, now: SystemTime) -> Vec<Vec<Counted>> {
        self.remote.live(&self.replica, now, self.expiry)
    }
}

/// The other replicas' counts, by object.
#[derive(Debug, Default)]
pub struct RemoteAudits {
    reports: RwLock<HashMap<String, Remote>>,
}

#[derive(Debug)]
struct Remote {
    replica: String,
    renewed: SystemTime,
    counted: Vec<Counted>,
}

impl RemoteAudits {
    /// The counts of the replicas other than `own` whose reports were renewed within
    /// `expiry` before `now`.
    pub fn live(&self, own: &str, now: SystemTime, expiry: Duration) -> Vec<Vec<Counted>> {
        let reports = self.reports.read().unwrap_or_else(|e| e.into_inner());
        reports
            .values()
            .filter(|r| r.replica != own)
            .filter(|r| now.duration_since(r.renewed).unwrap_or_default() <= expiry)
            .map(|r| r.counted.clone())
            .collect()
    }

    fn set(&self, name: String, remote: Option<Remote>) {
        let mut reports = self.reports.write().unwrap_or_else(|e| e.into_inner());
        match remote {
            Some(r) => reports.insert(name, r),
            None => reports.remove(&name),
        };
    }
}

/// Writes this replica's counts and watches the others'.
pub fn start(
    client: &Client,
    config: &FleetConfig,
    log: Arc<AuditLog>,
    remote: Arc<RemoteAudits>,
) -> Vec<JoinHandle<()>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &config.namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &config.namespace);
    vec![
        tokio::spawn(write_loop(api.clone(), pods, config.clone(), log)),
        tokio::spawn(observe(api, remote)),
    ]
}

/// Writes the counts when they change, and renews them every heartbeat.
async fn write_loop(api: Api<ConfigMap>, pods: Api<Pod>, config: FleetConfig, log: Arc<AuditLog>) {
    let owner = owner(&pods, &config.replica).await;
    let mut written: Option<String> = None;
    let mut renewed = tokio::time::Instant::now();
    loop {
        let body = serde_json::to_string(&log.snapshot()).unwrap_or_default();
        let renew = renewed.elapsed() >= config.heartbeat;
        if (written.as_ref() != Some(&body) || renew)
            && apply(&api, &config, owner.clone(), &body).await
        {
            written = Some(body);
            renewed = tokio::time::Instant::now();
        }
        tokio::time::sleep(CHECK).await;
    }
}

/// The replica's pod, whose deletion takes its report with it.
async fn owner(pods: &Api<Pod>, replica: &str) -> Option<OwnerReference> {
    match pods.get(replica).await {
        Ok(pod) => Some(OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: replica.to_owned(),
            uid: pod.uid()?,
            ..Default::default()
        }),
        Err(e) => {
            warn!(replica, error = %e, "no pod of this replica's name; its audit report outlives it");
            None
        }
    }
}

async fn apply(
    api: &Api<ConfigMap>,
    config: &FleetConfig,
    owner: Option<OwnerReference>,
    body: &str,
) -> bool {
    let name = format!("{}-audit-{}", config.prefix, config.replica);
    let renewed = k8s_openapi::jiff::Timestamp::now().to_string();
    let object = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some([(AUDIT_LABEL.to_owned(), config.replica.clone())].into()),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(
            [
                (BODY.to_owned(), body.to_owned()),
                (RENEWED.to_owned(), renewed),
            ]
            .into(),
        ),
        ..Default::default()
    };
    let params = PatchParams::apply(MANAGER).force();
    match api.patch(&name, &params, &Patch::Apply(&object)).await {
        Ok(_) => true,
        Err(e) => {
            warn!(object = %name, error = %e, "audit report not written; retried");
            false
        }
    }
}

/// Watches every replica's report into `remote`.
async fn observe(api: Api<ConfigMap>, remote: Arc<RemoteAudits>) {
    let config = watcher::Config::default().labels(AUDIT_LABEL);
    let mut events = std::pin::pin!(watcher(api, config).default_backoff().applied_objects());
    while let Some(event) = events.next().await {
        match event {
            Ok(object) => {
                let name = object.name_any();
                remote.set(name, decode(&object));
            }
            Err(e) => warn!(error = %e, "watching audit reports; retrying"),
        }
    }
}

/// A report; `None` (logged) when it is not one this version reads.
fn decode(object: &ConfigMap) -> Option<Remote> {
    let replica = object.labels().get(AUDIT_LABEL)?.clone();
    let data = object.data.as_ref()?;
    let renewed = data
        .get(RENEWED)
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map(SystemTime::from)?;
    match serde_json::from_str(data.get(BODY)?) {
        Ok(counted) => Some(Remote {
            replica,
            renewed,
            counted,
        }),
        Err(e) => {
            warn!(object = %object.name_any(), error = %e, "an audit report this version cannot read; ignored");
            None
        }
    }
}
