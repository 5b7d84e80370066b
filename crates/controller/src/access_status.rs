//! The status of access policies, written by the leader in each status pass.

use std::time::{Instant, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use remora_api::{AccessPolicy, AccessPolicyStatus};
use remora_audit::AuditWindow;
use remora_model::input::ObjectKey;
use remora_status::{AccessFacts, StatusWriter, access_policy_status};
use tracing::warn;

use crate::{judged::Judged, reconcile::Reconciler};

impl Reconciler {
    /// Writes each access policy's status when it changed, with the audit counts of every
    /// replica's proxies.
    pub(crate) async fn access_policies(&self, writer: &StatusWriter, judged: &Judged) {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let dropped = self.audit.prune(SystemTime::now());
        if dropped > 0 {
            warn!(
                dropped,
                "audit entries not counted: the window holds too many callers"
            );
        }
        let others = self
            .audit_fleet
            .as_ref()
            .map(|f| f.others(SystemTime::now()))
            .unwrap_or_default();
        let audits = self.audit.with(others.iter().map(Vec::as_slice));
        for policy in self.access_policies.state() {
            let started = Instant::now();
            let key = ObjectKey::from_meta(policy.meta());
            let Some(desired) = self.access_status(&policy, &key, judged, &now, &audits) else {
                continue;
            };
            let result = writer.access_policy(&policy, desired).await;
            self.record("AccessPolicy", &key, result, started.elapsed());
        }
    }

    /// The status `policy` should have; `None` when the model does not hold it.
    fn access_status(
        &self,
        policy: &AccessPolicy,
        key: &ObjectKey,
        judged: &Judged,
        now: &Time,
        audits: &AuditWindow,
    ) -> Option<AccessPolicyStatus> {
        let mesh = self.mesh.lock();
        if !mesh.has_access_policy(key) {
            return None;
        }
        let proxies = mesh.access_policy_proxies(key);
        let unknown = mesh.access_policy_unknown_accounts(key);
        let facts = AccessFacts {
            generation: mesh.access_policy_generation(key),
            validation: mesh.access_policy_validation(key).unwrap_or_default(),
            unknown_accounts: &unknown,
            proxies: judged.tally(&proxies),
            audit: audits.denials(key, SystemTime::now()),
        };
        Some(access_policy_status(
            &facts,
            policy.status.as_ref(),
            now.clone(),
        ))
    }
}
