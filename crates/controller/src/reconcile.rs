//! Status of the CRDs, written by the leader. After every published change, and every
//! `interval` to pick up proxies' ACKs and NACKs, each route's and policy's status is
//! computed from the model and the xDS server's view of the proxies; the writer sends it
//! only when it differs from what the object has.

use std::{
    collections::BTreeMap,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant, SystemTime},
};

use futures::{StreamExt, stream};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Client, Resource, ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};
use remora_api::{
    SidecarPolicy, SidecarPolicySpec, SidecarPolicyStatus, TrafficRoute, TrafficRouteStatus,
    sidecar_policy::{RolloutPhase, RolloutStatus},
};
use remora_fleet::Fleet;
use remora_model::{Mesh, input::ObjectKey, routing::RouteKey};
use remora_rollout::{Step, Workload};
use remora_runtime::SharedMesh;
use remora_status::{PolicyFacts, RouteFacts, StatusWriter, policy_status, route_status};
use remora_xds::SnapshotCache;
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use crate::{
    ProxyPods,
    health::Readiness,
    judged::{Judged, Seen},
    metrics::{KindLabel, Metrics, ReasonLabel},
    rollout::{self, Executor, Workloads},
};

/// Everything status is computed from.
pub struct Reconciler {
    /// Writes status.
    pub client: Client,
    /// The model: the proxies each route and policy affects.
    pub mesh: Arc<SharedMesh>,
    /// The published snapshots, to tell whether a proxy runs its current config.
    pub cache: Arc<SnapshotCache>,
    /// What each proxy of the fleet, on whichever replica, has ACKed or NACKed.
    pub fleet: Arc<Fleet>,
    /// The TrafficRoutes whose status is written.
    pub routes: Store<TrafficRoute>,
    /// The HTTPRoutes whose status is written (their Service parents' entries).
    pub gateway_routes: Vec<crate::gateway::RouteStore>,
    /// The SidecarPolicies whose status is written and whose rollouts are stepped.
    pub policies: Store<SidecarPolicy>,
    /// The AccessPolicies whose status is written.
    pub access_policies: Store<remora_api::AccessPolicy>,
    /// What the proxies of this replica report their audit rules would have denied.
    pub audit: Arc<remora_audit::AuditLog>,
    /// With several replicas, what the others' proxies reported.
    pub audit_fleet: Option<crate::audit_report::AuditFleet>,
    /// What each pod with a sidecar or a workload looks like now.
    pub proxy_pods: ProxyPods,
    /// The workloads rollouts restart.
    pub workloads: Workloads,
    /// Carries out what each rollout step asks for.
    pub executor: Executor,
    /// Reconciliations, status writes, rollout transitions and leadership are counted here.
    pub metrics: Arc<Metrics>,
}

/// The least time from one status pass's start to the next one's.
const MIN_PASS_GAP: Duration = Duration::from_millis(200);

/// Status writes of one pass in flight at once: enough to hide each write's round trip,
/// few enough not to crowd the API server.
const STATUS_WRITES_IN_FLIGHT: usize = 8;

impl Reconciler {
    /// Starts a pass: the model's route generations first, then the fleet against the
    /// snapshots (see [`Seen`] for why in this order).
    fn judge(&self, seen: &mut Seen) -> Judged {
        let routes = self.routes.state();
        let gateway: Vec<RouteKey> = self
            .gateway_routes
            .iter()
            .flat_map(|s| s.store.state().iter().map(|r| s.key(r)).collect::<Vec<_>>())
            .collect();
        {
            let mesh = self.mesh.lock();
            let traffic = routes
                .iter()
                .map(|r| RouteKey::traffic(ObjectKey::from_meta(r.meta())));
            seen.routes(&mesh, traffic.chain(gateway));
        }
        Judged::at(&self.cache, &self.fleet, SystemTime::now(), seen)
    }

    /// Routes still converging come first (after an edit, the edited route's status is
    /// written before the others are even computed), and changed statuses are written a few
    /// at a time, so one slow write does not hold the rest.
    async fn routes(&self, writer: &StatusWriter, judged: &Judged, seen: &Seen) {
        let mut routes = self.routes.state();
        routes.sort_by_key(|r| settled(r));
        let desired = routes
            .into_iter()
            .filter_map(|route| self.route_status(route, judged, seen));
        stream::iter(desired)
            .for_each_concurrent(
                STATUS_WRITES_IN_FLIGHT,
                |(route, key, desired, computing)| async move {
                    let started = Instant::now();
                    let result = writer.route(&route, desired).await;
                    self.record("TrafficRoute", &key, result, computing + started.elapsed());
                },
            )
            .await;
    }

    /// The status `route` should have, and how long it took to compute; `None` when the
    /// model does not hold the route.
    fn route_status(
        &self,
        route: Arc<TrafficRoute>,
        judged: &Judged,
        seen: &Seen,
    ) -> Option<(Arc<TrafficRoute>, ObjectKey, TrafficRouteStatus, Duration)> {
        let started = Instant::now();
        let key = ObjectKey::from_meta(route.meta());
        let mesh = self.mesh.lock();
        let desired = with_route_facts(
            &mesh,
            &RouteKey::traffic(key.clone()),
            judged,
            seen,
            |facts| route_status(facts, route.status.as_ref(), Time(now())),
        )?;
        Some((route, key, desired, started.elapsed()))
    }

    /// Each policy's rollout steps here too: its state is part of the status, written
    /// before the step's actions are carried out, so a crash between the two is resumed
    /// (steps re-issue actions that did not take effect).
    async fn policies(&self, writer: &StatusWriter, judged: &Judged) {
        let objects = self.workloads.objects();
        let mut governed = {
            let mesh = self.mesh.lock();
            let pods = self.proxy_pods.read().unwrap_or_else(|e| e.into_inner());
            rollout::governed(&mesh, &objects, &pods, |p| judged.of(p).clone())
        };
        let now = Time(now());
        for policy in self.policies.state() {
            let started = Instant::now();
            let key = ObjectKey::from_meta(policy.meta());
            let workloads = governed.remove(&key).unwrap_or_default();
            let previous = writer.policy_status_now(&policy);
            let Some((desired, step)) =
                self.policy_status(&policy, &key, &workloads, previous.as_ref(), judged, &now)
            else {
                continue;
            };
            let result = writer.policy(&policy, desired).await;
            if let (Ok(written), Some(step)) = (&result, step) {
                self.carry_out(&policy, &key, *written, &step).await;
            }
            self.record("SidecarPolicy", &key, result, started.elapsed());
        }
    }

    /// The status `policy` should have, with its rollout stepped from `previous`; `None`
    /// when the model does not hold the policy.
    fn policy_status(
        &self,
        policy: &SidecarPolicy,
        key: &ObjectKey,
        workloads: &[Workload],
        previous: Option<&SidecarPolicyStatus>,
        judged: &Judged,
        now: &Time,
    ) -> Option<(SidecarPolicyStatus, Option<Step>)> {
        let mesh = self.mesh.lock();
        if !mesh.has_policy(key) {
            return None;
        }
        let governed: Vec<ObjectKey> = mesh
            .proxies()
            .filter(|p| mesh.proxy_policy(p) == Some(key))
            .cloned()
            .collect();
        let stored = previous.and_then(|s| s.rollout.as_ref());
        // A policy that never had a valid spec injects nothing, so has nothing to roll: it
        // keeps what it had.
        let step = mesh
            .policy_spec(key)
            .map(|spec| step_rollout(key, spec, stored, workloads, now));
        let rollout = match &step {
            Some(step) => step.status.clone(),
            None => stored.cloned().unwrap_or_else(|| RolloutStatus {
                phase: RolloutPhase::Complete,
                target_version: policy.spec.proxy.version.clone(),
                ..Default::default()
            }),
        };
        let facts = PolicyFacts {
            generation: mesh.policy_generation(key),
            validation: mesh.policy_validation(key).unwrap_or_default(),
            matched_proxies: governed.len() as i32,
            matched_workloads: workloads.len() as i32,
            versions: self.versions(&governed),
            proxies: judged.tally(&governed),
            rollout,
            mtls: mesh
                .settings()
                .mtls()
                .and(mesh.policy_spec(key))
                .map(|spec| spec.mtls.mode),
        };
        Some((policy_status(&facts, previous, now.clone()), step))
    }

    /// How many of `proxies` run each sidecar version (`unknown` for a pod without one).
    fn versions(&self, proxies: &[ObjectKey]) -> BTreeMap<String, i32> {
        let pods = self.proxy_pods.read().unwrap_or_else(|e| e.into_inner());
        let mut versions: BTreeMap<String, i32> = BTreeMap::new();
        for p in proxies {
            if let Some(pod) = pods.get(p) {
                let version = pod.sidecar.clone().unwrap_or_else(|| "unknown".into());
                *versions.entry(version).or_default() += 1;
            }
        }
        versions
    }

    /// Once the step's status stands (`written` now, or unchanged): its actions, and its
    /// Events only when this pass wrote the status that says the same.
    async fn carry_out(&self, policy: &SidecarPolicy, key: &ObjectKey, written: bool, step: &Step) {
        if written && !step.actions.is_empty() {
            self.store_caught_up(policy).await;
        }
        self.executor.act(key, &step.actions, &self.metrics).await;
        if written {
            for note in &step.events {
                self.metrics
                    .rollout_transitions
                    .get_or_create(&ReasonLabel {
                        reason: note.reason,
                    })
                    .inc();
            }
            self.executor.announce(policy, &step.events).await;
        }
    }

    /// Waits (briefly) until the policy store holds the status just written. The injector
    /// reads rollout state from that store, so a pod recreated by the step's actions must
    /// not be injected from the state before the step.
    async fn store_caught_up(&self, policy: &SidecarPolicy) {
        let reference = ObjectRef::from_obj(policy);
        let before = policy.resource_version();
        for _ in 0..50 {
            if self
                .policies
                .get(&reference)
                .is_some_and(|p| p.resource_version() != before)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        warn!(policy = %reference, "the policy store lags its status write; acting anyway");
    }

    pub(crate) fn record(
        &self,
        kind: &'static str,
        key: &ObjectKey,
        result: Result<bool, remora_status::Error>,
        took: Duration,
    ) {
        match &result {
            Ok(true) => {
                self.metrics
                    .status_writes
                    .get_or_create(&KindLabel { kind })
                    .inc();
            }
            Ok(false) => {}
            Err(e) => {
                warn!(%kind, object = %key, error = %e, "status not written; retried on the next pass")
            }
        }
        self.metrics.observe_reconcile(kind, result.is_ok(), took);
    }
}

/// The facts of a route's status, handed to `status` (they borrow the model); `None` when
/// the model does not hold the route.
pub(crate) fn with_route_facts<T>(
    mesh: &Mesh,
    key: &RouteKey,
    judged: &Judged,
    seen: &Seen,
    status: impl FnOnce(&RouteFacts<'_>) -> T,
) -> Option<T> {
    if !mesh.has_route(key) {
        return None;
    }
    let problems = mesh.route_problems(key);
    let outranks = mesh.route_outranks(key);
    let facts = RouteFacts {
        generation: mesh.route_generation(key),
        validation: mesh.route_validation(key).unwrap_or_default(),
        problems: &problems,
        outranks: &outranks,
        proxies: judged.tally_route(mesh.route_proxies(key), seen.route(key)),
    };
    Some(status(&facts))
}

/// Whether the route's status says its generation reached every proxy it affects.
fn settled(route: &TrafficRoute) -> bool {
    route.status.as_ref().is_some_and(|s| {
        s.observed_generation == route.metadata.generation
            && s.proxies.as_ref().is_some_and(|p| p.acked == p.affected)
    })
}

fn step_rollout(
    key: &ObjectKey,
    spec: &SidecarPolicySpec,
    stored: Option<&RolloutStatus>,
    workloads: &[Workload],
    now: &Time,
) -> Step {
    let step = remora_rollout::step(&remora_rollout::Input {
        policy: &key.to_string(),
        spec,
        previous: stored,
        workloads,
        now: now.clone(),
    });
    debug!(
        policy = %key,
        workloads = workloads.len(),
        pods = workloads.iter().map(|w| w.pods.len()).sum::<usize>(),
        actions = step.actions.len(),
        phase = ?step.status.phase,
        "rollout stepped"
    );
    step
}

fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

/// Recomputes status after each change and every `interval`, while this replica leads
/// (`leading` is `None` when there is no election) and once the first config is out.
pub async fn run(
    reconciler: Reconciler,
    leading: Option<watch::Receiver<bool>>,
    ready: Arc<Readiness>,
    changed: Arc<Notify>,
    interval: Duration,
) {
    let writer = StatusWriter::new(reconciler.client.clone(), "remora-controller");
    let mut seen = Seen::default();
    let mut acks = reconciler.fleet.local().changes();
    let mut next_pass = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = changed.notified() => {}
            // This replica's own proxies' ACKs and NACKs; the others' come as reports.
            Ok(()) = acks.changed() => {}
            _ = tokio::time::sleep(interval) => {}
        }
        // A burst of ACKs wakes this loop for each one: passes are spaced instead, and the
        // next one counts all of them.
        tokio::time::sleep_until(next_pass).await;
        acks.mark_seen();
        next_pass = tokio::time::Instant::now() + MIN_PASS_GAP;
        let leader = leading.as_ref().is_none_or(|l| *l.borrow());
        if reconciler.metrics.leader.set(i64::from(leader)) != i64::from(leader) {
            info!(leader, "leadership changed");
        }
        if !leader || !ready.published.load(Ordering::Acquire) {
            continue;
        }
        let before = writer.writes();
        let judged = reconciler.judge(&mut seen);
        reconciler.routes(&writer, &judged, &seen).await;
        reconciler.gateway_routes(&judged, &seen).await;
        reconciler.policies(&writer, &judged).await;
        reconciler.access_policies(&writer, &judged).await;
        let written = writer.writes() - before;
        if written > 0 {
            debug!(written, "status written");
        }
    }
}
