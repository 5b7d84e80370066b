//! The status of HTTPRoutes with Service parents, in Gateway API's shape
//! (`remora_status::gateway`). Only Remora's entries of `status.parents` change; the list
//! is replaced as a whole (it is atomic), so a write carries the `resourceVersion` it was
//! computed from and a concurrent write by another controller makes it fail, to be
//! computed again on the next pass. Nothing is written when the entries say the same.

use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, Patch, PatchParams},
};
use remora_api::gateway::HttpRoute;
use remora_model::{
    input::ObjectKey,
    routing::{RouteKey, RouteKind},
};
use remora_status::gateway::{http_route_parents, same_parents};
use serde_json::Value;
use tracing::warn;

use crate::{
    gateway::HTTP_ROUTE,
    judged::{Judged, Seen},
    metrics::KindLabel,
    reconcile::{Reconciler, with_route_facts},
};

/// The key the model holds an HTTPRoute under.
pub(crate) fn key(route: &DynamicObject) -> RouteKey {
    RouteKey {
        kind: RouteKind::HttpRoute,
        key: ObjectKey::from_meta(&route.metadata),
    }
}

impl Reconciler {
    /// Writes the status of every HTTPRoute the model holds whose entries changed.
    pub(crate) async fn http_routes(&self, judged: &Judged, seen: &Seen) {
        for object in self.http_routes.state() {
            let started = Instant::now();
            let Some((desired, current)) = self.http_route_status(&object, judged, seen) else {
                continue;
            };
            if same_parents(&current, &desired) {
                continue;
            }
            let result = self.write_parents(&object, desired).await;
            let key = key(&object);
            if let Err(e) = &result {
                warn!(route = %key, error = %e, "HTTPRoute status not written; retried on the next pass");
            } else {
                self.metrics
                    .status_writes
                    .get_or_create(&KindLabel { kind: "HTTPRoute" })
                    .inc();
            }
            self.metrics
                .observe_reconcile("HTTPRoute", result.is_ok(), started.elapsed());
        }
    }

    /// `status.parents` as it should be and as it is; `None` when the model does not hold
    /// the route (not yet, or it has no Service parent).
    fn http_route_status(
        &self,
        object: &DynamicObject,
        judged: &Judged,
        seen: &Seen,
    ) -> Option<(Vec<Value>, Vec<Value>)> {
        let key = key(object);
        let route: HttpRoute = serde_json::to_value(object)
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())?;
        let current: Vec<Value> = object
            .data
            .pointer("/status/parents")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let mesh = self.mesh.lock();
        let desired = with_route_facts(&mesh, &key, judged, seen, |facts| {
            http_route_parents(key.namespace(), &route.spec, facts, &current, now)
        })?;
        Some((desired, current))
    }

    /// Replaces `status.parents`, on the condition that the object did not change since it
    /// was read.
    async fn write_parents(&self, object: &DynamicObject, parents: Vec<Value>) -> kube::Result<()> {
        let namespace = object.namespace().unwrap_or_default();
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &namespace, &HTTP_ROUTE.resource("v1"));
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
