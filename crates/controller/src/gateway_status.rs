//! The status of Gateway API routes (HTTPRoutes, GRPCRoutes) with Service parents, in
//! Gateway API's shape (`remora_status::gateway`). Only Remora's entries of
//! `status.parents` change; the list is replaced as a whole (it is atomic), so a write
//! carries the `resourceVersion` it was computed from and a concurrent write by another
//! controller makes it fail, to be computed again on the next pass. Nothing is written when
//! the entries say the same.

use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, Patch, PatchParams},
};
use remora_api::gateway::ParentReference;
use remora_model::{input::ObjectKey, routing::RouteKey};
use remora_status::gateway::{route_parents, same_parents};
use serde_json::Value;
use tracing::warn;

use crate::{
    gateway::RouteStore,
    judged::{Judged, Seen},
    metrics::KindLabel,
    reconcile::{Reconciler, with_route_facts},
};

impl RouteStore {
    /// The key the model holds one of these routes under.
    pub(crate) fn key(&self, route: &DynamicObject) -> RouteKey {
        RouteKey {
            kind: self.route,
            key: ObjectKey::from_meta(&route.metadata),
        }
    }
}

impl Reconciler {
    /// Writes the status of every Gateway API route the model holds whose entries changed.
    pub(crate) async fn gateway_routes(&self, judged: &Judged, seen: &Seen) {
        for routes in &self.gateway_routes {
            let kind = routes.kind.kind;
            for object in routes.store.state() {
                let started = Instant::now();
                let key = routes.key(&object);
                let Some((desired, current)) = self.parents_status(&key, &object, judged, seen)
                else {
                    continue;
                };
                if same_parents(&current, &desired) {
                    continue;
                }
                let result = self.write_parents(routes, &object, desired).await;
                if let Err(e) = &result {
                    warn!(route = %key, error = %e, "{kind} status not written; retried on the next pass");
                } else {
                    self.metrics
                        .status_writes
                        .get_or_create(&KindLabel { kind })
                        .inc();
                }
                self.metrics
                    .observe_reconcile(kind, result.is_ok(), started.elapsed());
            }
        }
    }

    /// `status.parents` as it should be and as it is; `None` when the model does not hold
    /// the route (not yet, or it has no Service parent). Entries are ours only for Services
    /// in namespaces that opted in to the mesh: another mesh may own the others.
    fn parents_status(
        &self,
        key: &RouteKey,
        object: &DynamicObject,
        judged: &Judged,
        seen: &Seen,
    ) -> Option<(Vec<Value>, Vec<Value>)> {
        let parents: Vec<ParentReference> = object
            .data
            .pointer("/spec/parentRefs")
            .and_then(|v| serde_json::from_value(v.clone()).ok())?;
        let current: Vec<Value> = object
            .data
            .pointer("/status/parents")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let mesh = self.mesh.lock();
        let parents: Vec<ParentReference> = parents
            .into_iter()
            .filter(|p| mesh.namespace_in_mesh(p.namespace.as_deref().unwrap_or(key.namespace())))
            .collect();
        let desired = with_route_facts(&mesh, key, judged, seen, |facts| {
            route_parents(key.namespace(), &parents, facts, &current, now)
        })?;
        Some((desired, current))
    }

    /// Replaces `status.parents`, on the condition that the object did not change since it
    /// was read.
    async fn write_parents(
        &self,
        routes: &RouteStore,
        object: &DynamicObject,
        parents: Vec<Value>,
    ) -> kube::Result<()> {
        let namespace = object.namespace().unwrap_or_default();
        let resource = routes.kind.resource(routes.kind.versions[0]);
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &namespace, &resource);
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": object.resource_version()},
            "status": {"parents": parents},
        });
        api.patch_status(
            &object.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map(drop)
    }
}
