//! The edge to the API server. A status is applied (server-side apply, one field manager)
//! only when it differs from the object's, and each write publishes the Events of the change.
//! Nothing here retries: the caller computes status again on its next pass.

use std::{
    collections::HashMap,
    fmt::Debug,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::{NamespaceResourceScope, apimachinery::pkg::apis::meta::v1::Condition};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    core::object::HasStatus,
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use remora_api::{
    AccessPolicy, AccessPolicyStatus, SidecarPolicy, SidecarPolicyStatus, TrafficRoute,
    TrafficRouteStatus,
};
use serde::{Serialize, de::DeserializeOwned};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{Severity, Transition, condition::keep_transition_times, transitions};

/// The field manager of every status write, so the API server sees one owner.
pub const FIELD_MANAGER: &str = "remora-controller";

/// How long a written status stands in for an object the caller's cache has not updated.
/// A cache further behind than this is broken, and the entry would only hold memory.
const APPLIED_TTL: Duration = Duration::from_secs(60);

/// Why a status was not written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object came without a namespace, but routes and policies are namespaced.
    #[error("{kind} {name} has no namespace, so its status has nowhere to go")]
    NoNamespace {
        /// The object's kind, e.g. `TrafficRoute`.
        kind: String,
        /// The object's name.
        name: String,
    },
    /// The status patch failed at the API server.
    #[error("writing the status of {kind} {object}: {source}")]
    Write {
        /// The object's kind, e.g. `TrafficRoute`.
        kind: String,
        /// `namespace/name`.
        object: String,
        /// What the client reported.
        source: kube::Error,
    },
}

/// Writes the status of routes and policies. Share one per controller: it counts writes
/// and remembers what it wrote until the caller's copy of the object catches up.
pub struct StatusWriter {
    client: Client,
    recorder: Recorder,
    writes: AtomicU64,
    routes: Mutex<HashMap<String, Applied<TrafficRouteStatus>>>,
    policies: Mutex<HashMap<String, Applied<SidecarPolicyStatus>>>,
    access_policies: Mutex<HashMap<String, Applied<AccessPolicyStatus>>>,
}

impl StatusWriter {
    /// `reporter` names the controller (and, optionally, the replica) on Events.
    pub fn new(client: Client, reporter: impl Into<Reporter>) -> Self {
        StatusWriter {
            recorder: Recorder::new(client.clone(), reporter.into()),
            client,
            writes: AtomicU64::new(0),
            routes: Mutex::default(),
            policies: Mutex::default(),
            access_policies: Mutex::default(),
        }
    }

    /// Writes `desired` (from [`crate::route_status`]) to `route` when it differs from the
    /// route's status. `Ok(true)` when it wrote.
    pub async fn route(
        &self,
        route: &TrafficRoute,
        desired: TrafficRouteStatus,
    ) -> Result<bool, Error> {
        self.write(route, desired, &self.routes).await
    }

    /// Writes `desired` (from [`crate::policy_status`]) to `policy` when it differs from the
    /// policy's status. `Ok(true)` when it wrote.
    pub async fn policy(
        &self,
        policy: &SidecarPolicy,
        desired: SidecarPolicyStatus,
    ) -> Result<bool, Error> {
        self.write(policy, desired, &self.policies).await
    }

    /// Writes `desired` (from [`crate::access_policy_status`]) to `policy` when it differs
    /// from the policy's status. `Ok(true)` when it wrote.
    pub async fn access_policy(
        &self,
        policy: &AccessPolicy,
        desired: AccessPolicyStatus,
    ) -> Result<bool, Error> {
        self.write(policy, desired, &self.access_policies).await
    }

    /// The policy's status as it stands: what this writer last wrote to it when `policy`
    /// is a copy from before that write (a cache that has not caught up), else its own. A
    /// rollout steps from this, so a lagging cache never makes it repeat a step.
    pub fn policy_status_now(&self, policy: &SidecarPolicy) -> Option<SidecarPolicyStatus> {
        let applied = lock(&self.policies);
        let written = policy.uid().and_then(|u| fresh(applied.get(&u)));
        current_status(
            policy.resource_version().as_deref(),
            policy.status.as_ref(),
            written,
        )
        .cloned()
    }

    /// Status writes so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    async fn write<K>(
        &self,
        object: &K,
        mut desired: K::Status,
        applied: &Mutex<HashMap<String, Applied<K::Status>>>,
    ) -> Result<bool, Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + HasStatus
            + Clone
            + Debug
            + DeserializeOwned,
        K::Status: Owned,
    {
        let kind = K::kind(&()).into_owned();
        let name = object.name_any();
        let Some(namespace) = object.namespace() else {
            return Err(Error::NoNamespace { kind, name });
        };
        let key = format!("{namespace}/{name}");
        let span = info_span!("status", %kind, object = %key);
        async {
            let uid = object.uid();
            let version = object.resource_version();
            let current = {
                let applied = lock(applied);
                let written = uid.as_ref().and_then(|u| fresh(applied.get(u)));
                current_status(version.as_deref(), object.status(), written).cloned()
            };
            let previous = current.as_ref().map_or(&[][..], |s| s.conditions());
            keep_transition_times(desired.conditions_mut(), previous);
            if !needs_write(current.as_ref(), &desired) {
                return Ok(false);
            }
            let events = transitions(previous, desired.conditions());
            let body = StatusPatch {
                api_version: &K::api_version(&()),
                kind: &kind,
                status: &desired,
            };
            let api: Api<K> = Api::namespaced(self.client.clone(), &namespace);
            let params = PatchParams::apply(FIELD_MANAGER).force();
            api.patch_status(&name, &params, &Patch::Apply(&body))
                .await
                .map_err(|source| Error::Write {
                    kind: kind.clone(),
                    object: key.clone(),
                    source,
                })?;
            self.writes.fetch_add(1, Ordering::Relaxed);
            debug!("status written");
            if let (Some(uid), Some(version)) = (uid, version) {
                let entry = Applied {
                    against: version,
                    status: desired,
                    at: Instant::now(),
                };
                // Pruned as written, not as read: a pass reads every object's entry.
                let mut applied = lock(applied);
                applied.retain(|_, a| a.at.elapsed() < APPLIED_TTL);
                applied.insert(uid, entry);
            }
            self.publish(object, &events).await;
            Ok(true)
        }
        .instrument(span)
        .await
    }

    /// Events are best effort: the status already says everything they do, so a failure
    /// is logged and the write still counts.
    async fn publish<K: Resource<DynamicType = ()>>(&self, object: &K, events: &[Transition]) {
        let reference = object.object_ref(&());
        for t in events {
            info!(reason = %t.reason, message = %t.message, "status transition");
            let event = Event {
                type_: match t.severity {
                    Severity::Normal => EventType::Normal,
                    Severity::Warning => EventType::Warning,
                },
                reason: t.reason.clone(),
                note: Some(t.message.clone()),
                action: t.action.to_owned(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&event, &reference).await {
                warn!(reason = %t.reason, error = %e, "event not published");
            }
        }
    }
}

/// The body of a server-side apply of the status subresource.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusPatch<'a, S> {
    api_version: &'a str,
    kind: &'a str,
    status: &'a S,
}

/// A status this writer wrote, and the object version it wrote it to.
struct Applied<S> {
    against: String,
    status: S,
    at: Instant,
}

/// The status a new one is compared with. While the caller's copy of the object is still
/// the version this writer wrote to (its watch has not delivered the write yet), that is
/// what was written; otherwise the object's own status.
fn current_status<'a, S>(
    version: Option<&str>,
    status: Option<&'a S>,
    written: Option<&'a Applied<S>>,
) -> Option<&'a S> {
    match written {
        Some(w) if version == Some(w.against.as_str()) => Some(&w.status),
        _ => status,
    }
}

/// Whether applying `desired` would change what the object has.
fn needs_write<S: Owned>(current: Option<&S>, desired: &S) -> bool {
    current.map(Owned::owned) != Some(desired.owned())
}

/// A status as this writer owns it.
trait Owned: Serialize + Clone + PartialEq + Debug {
    fn conditions(&self) -> &[Condition];
    fn conditions_mut(&mut self) -> &mut [Condition];

    /// The fields a write sets, conditions in a fixed order: equal means nothing to write.
    fn owned(&self) -> Self {
        let mut owned = self.clone();
        owned.conditions_mut().sort_by(|a, b| a.type_.cmp(&b.type_));
        owned
    }
}

impl Owned for TrafficRouteStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    fn conditions_mut(&mut self) -> &mut [Condition] {
        &mut self.conditions
    }
}

impl Owned for AccessPolicyStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    fn conditions_mut(&mut self) -> &mut [Condition] {
        &mut self.conditions
    }
}

impl Owned for SidecarPolicyStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    fn conditions_mut(&mut self) -> &mut [Condition] {
        &mut self.conditions
    }
}

// A panic while holding the lock leaves plain data behind, still fit to use.
/// An entry younger than [`APPLIED_TTL`].
fn fresh<S>(written: Option<&Applied<S>>) -> Option<&Applied<S>> {
    written.filter(|a| a.at.elapsed() < APPLIED_TTL)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use remora_api::sidecar_policy::{RolloutPhase, RolloutStatus};

    use super::*;
    use crate::{ProxyTally, RouteFacts, condition::tests::at, route_status};

    fn route(acked: i32) -> TrafficRouteStatus {
        let facts = RouteFacts {
            generation: Some(2),
            proxies: ProxyTally {
                affected: 2,
                acked,
                ..Default::default()
            },
            ..Default::default()
        };
        route_status(&facts, None, at(100))
    }

    /// What the API server hands back after storing `status`.
    fn stored<S: Serialize + DeserializeOwned>(status: &S) -> S {
        let json = serde_json::to_string(status).expect("a status encodes");
        serde_json::from_str(&json).expect("a status decodes")
    }

    #[test]
    fn a_new_or_changed_status_is_written() {
        assert!(needs_write(None, &route(1)));
        assert!(needs_write(Some(&stored(&route(1))), &route(2)));
    }

    #[test]
    fn a_status_recomputed_from_the_stored_one_is_not_written() {
        let facts = RouteFacts {
            generation: Some(2),
            ..Default::default()
        };
        let first = route_status(&facts, None, at(100));
        let current = stored(&first);
        let again = route_status(&facts, Some(&current), at(200));
        assert!(!needs_write(Some(&current), &again));
    }

    #[test]
    fn condition_order_alone_is_no_change() {
        let desired = route(2);
        let mut current = desired.clone();
        current.conditions.reverse();
        assert!(!needs_write(Some(&current), &desired));
    }

    /// The rollout's state lives in status (a restarted controller resumes from it), so a
    /// change to it alone must be written.
    #[test]
    fn a_rollout_step_alone_is_a_change() {
        let rollout = |wave| {
            Some(RolloutStatus {
                phase: RolloutPhase::Progressing,
                wave,
                ..Default::default()
            })
        };
        let current = SidecarPolicyStatus {
            matched_proxies: 3,
            rollout: rollout(1),
            ..Default::default()
        };
        assert!(!needs_write(Some(&current), &current.clone()));
        let next = SidecarPolicyStatus {
            rollout: rollout(2),
            ..current.clone()
        };
        assert!(needs_write(Some(&current), &next));
    }

    #[test]
    fn an_object_the_cache_has_not_updated_compares_with_what_was_written() {
        let old = route(1);
        let written = Applied {
            against: "41".into(),
            status: route(2),
            at: Instant::now(),
        };
        let current = current_status(Some("41"), Some(&old), Some(&written));
        assert_eq!(current, Some(&written.status));
        assert!(!needs_write(current, &route(2)));
        // A newer version of the object is the truth, whoever wrote it.
        assert_eq!(
            current_status(Some("42"), Some(&old), Some(&written)),
            Some(&old)
        );
        assert_eq!(current_status(Some("41"), Some(&old), None), Some(&old));
    }
}
