//! What the rest of the control plane asks of the mesh: proxies' configs, which policy and
//! class govern them, and the state of routes and policies for status.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use remora_api::{FieldError, SidecarPolicySpec};

use super::Mesh;
use crate::{
    config::{ProxyConfig, Resource, ResourceKey, ResourceType},
    input::{Labels, MeshSettings, ObjectKey},
    routing::{ClusterKey, Outranked, Problem, RouteKey, ServiceRouting},
};

impl Mesh {
    /// The settings the mesh was made with.
    pub fn settings(&self) -> &MeshSettings {
        &self.index.settings
    }

    /// The proxies the mesh knows, in order.
    pub fn proxies(&self) -> impl Iterator<Item = &ObjectKey> {
        self.classes.proxies.keys()
    }

    /// Everything one proxy runs.
    pub fn proxy_config(&self, proxy: &ObjectKey) -> Option<ProxyConfig> {
        let state = self.classes.proxies.get(proxy)?;
        let class = self.classes.by_key.get(&state.class)?;
        let mut resources = class.resources.clone();
        resources.extend(state.inbound.iter().map(|(k, v)| (k.clone(), v.clone())));
        resources.extend(
            self.endpoints
                .of_class(class)
                .map(|(k, e)| (k, Resource::Endpoints(e.clone()))),
        );
        Some(ProxyConfig { resources })
    }

    /// The class a proxy belongs to (its namespace and governing policy): every proxy of one
    /// class has the same [`Mesh::class_config`].
    pub fn proxy_class(&self, proxy: &ObjectKey) -> Option<(&str, Option<&ObjectKey>)> {
        let class = &self.classes.proxies.get(proxy)?.class;
        Some((&class.namespace, class.policy.as_ref()))
    }

    /// The part of a proxy's config its whole class shares: outbound listeners, route
    /// configs and clusters, and the endpoints of those clusters.
    pub fn class_config(&self, proxy: &ObjectKey) -> Option<ProxyConfig> {
        self.class_config_of(proxy, &ResourceType::ALL)
    }

    /// The resources of some kinds only of [`Mesh::class_config`]: after a change that
    /// touched a few route configs, those, not the class's thousands of clusters.
    pub fn class_config_of(
        &self,
        proxy: &ObjectKey,
        kinds: &[ResourceType],
    ) -> Option<ProxyConfig> {
        let class = self.classes.of_proxy(proxy)?;
        let mut resources = BTreeMap::new();
        for &kind in kinds {
            if kind == ResourceType::Endpoints {
                resources.extend(
                    self.endpoints
                        .of_class(class)
                        .map(|(k, e)| (k, Resource::Endpoints(e.clone()))),
                );
                continue;
            }
            // Keys sort by kind first, so one kind is one range.
            let first = ResourceKey {
                kind,
                name: Arc::from(""),
            };
            resources.extend(
                class
                    .resources
                    .range(first..)
                    .take_while(|(k, _)| k.kind == kind)
                    .map(|(k, r)| (k.clone(), r.clone())),
            );
        }
        Some(ProxyConfig { resources })
    }

    /// Some of [`Mesh::class_config`]'s resources by key, each as the proxy's class has it
    /// now (`None`: it no longer has it), so that a change to a few resources is taken in
    /// by looking up those alone. Endpoints are not kept by key; [`Mesh::class_config_of`]
    /// gives them by kind.
    pub fn class_resources<'k>(
        &self,
        proxy: &ObjectKey,
        keys: impl IntoIterator<Item = &'k ResourceKey>,
    ) -> Option<Vec<(&'k ResourceKey, Option<Resource>)>> {
        let class = self.classes.of_proxy(proxy)?;
        Some(
            keys.into_iter()
                .map(|key| (key, class.resources.get(key).cloned()))
                .collect(),
        )
    }

    /// The part of a proxy's config that is its own: what brings traffic to its application.
    pub fn own_config(&self, proxy: &ObjectKey) -> Option<ProxyConfig> {
        let state = self.classes.proxies.get(proxy)?;
        Some(ProxyConfig {
            resources: state.inbound.clone(),
        })
    }

    /// The policy governing a proxy.
    pub fn proxy_policy(&self, proxy: &ObjectKey) -> Option<&ObjectKey> {
        self.classes.proxies.get(proxy)?.class.policy.as_ref()
    }

    /// The policy that would govern a pod with `labels` in `namespace`. The pod need not
    /// exist: the injector asks while the pod is being created, the rollout for a workload's
    /// pod template.
    pub fn policy_for(&self, namespace: &str, labels: &Labels) -> Option<&ObjectKey> {
        self.index.policy_for(namespace, labels)
    }

    /// The spec of a policy that is in effect: its last one that passed validation.
    pub fn policy_spec(&self, policy: &ObjectKey) -> Option<&SidecarPolicySpec> {
        self.index.policies.get(policy)?.accepted.as_ref()
    }

    /// A namespace's labels, if the model has seen the namespace.
    pub fn namespace_labels(&self, namespace: &str) -> Option<&Labels> {
        self.index.namespaces.get(namespace)
    }

    /// Whether a namespace opted in to this mesh (its mesh label set to `enabled`): its
    /// Services are the mesh's, and Gateway API routes on them get a status entry from it.
    pub fn namespace_in_mesh(&self, namespace: &str) -> bool {
        self.namespace_labels(namespace)
            .and_then(|l| l.get(&self.settings().mesh_label))
            .is_some_and(|v| v == "enabled")
    }

    /// The `metadata.generation` of the route the model holds: what a status computed
    /// from the model describes.
    pub fn route_generation(&self, route: impl Into<RouteKey>) -> Option<i64> {
        self.index.routes.get(&route.into())?.generation
    }

    /// The `metadata.generation` of the policy the model holds.
    pub fn policy_generation(&self, policy: &ObjectKey) -> Option<i64> {
        self.index.policies.get(policy)?.generation
    }

    /// Whether the model holds this route at all (status waits until it does).
    pub fn has_route(&self, route: impl Into<RouteKey>) -> bool {
        self.index.routes.contains_key(&route.into())
    }

    /// Whether the model holds this policy at all (status waits until it does).
    pub fn has_policy(&self, policy: &ObjectKey) -> bool {
        self.index.policies.contains_key(policy)
    }

    /// Whether a pod with a sidecar is in the mesh.
    pub fn has_proxy(&self, proxy: &ObjectKey) -> bool {
        self.classes.proxies.contains_key(proxy)
    }

    /// Whether the model holds this pod, with or without a sidecar.
    pub fn has_pod(&self, pod: &ObjectKey) -> bool {
        self.index.pods.contains_key(pod)
    }

    /// Validation problems of a route's latest spec (the previous valid spec stays in effect).
    pub fn route_validation(&self, route: impl Into<RouteKey>) -> Option<&[FieldError]> {
        let route = route.into();
        self.index.routes.get(&route).map(|r| r.problems.as_slice())
    }

    /// Validation problems of a policy's latest spec (the previous valid spec stays in effect).
    pub fn policy_validation(&self, policy: &ObjectKey) -> Option<&[FieldError]> {
        self.index
            .policies
            .get(policy)
            .map(|p| p.problems.as_slice())
    }

    /// Resolution problems of a route: missing backends, conflicts, and subsets that select
    /// no ready endpoint.
    pub fn route_problems(&self, route: impl Into<RouteKey>) -> Vec<Problem> {
        let route = &route.into();
        let Some(state) = self.index.routes.get(route) else {
            return Vec::new();
        };
        let mut out = BTreeSet::new();
        for (parent, _) in state.parents() {
            let Some(routings) = self.routing.get(&parent) else {
                out.insert(Problem::BackendNotFound {
                    path: "spec.parentRefs".into(),
                    service: parent,
                });
                continue;
            };
            // A consumer route is resolved in its namespace's routing only; a producer
            // route in every routing whose clients have no route of their own for a port.
            for r in routings.all() {
                let accepted = state.accepted.as_ref();
                out.extend(r.problems.iter().filter(|(k, _)| k == route).map(
                    |(_, p)| match accepted {
                        Some(a) => a.user_problem(p.clone()),
                        None => p.clone(),
                    },
                ));
                for (port, governing) in &r.governed_by {
                    if governing == route {
                        self.empty_subsets(&parent, *port, r, &mut out);
                    }
                }
            }
        }
        out.into_iter().collect()
    }

    /// The routes that claim a Service port this route governs, sorted: they report
    /// `Conflicted`, and this route's status says it governs over them.
    pub fn route_outranks(&self, route: impl Into<RouteKey>) -> Vec<Outranked> {
        let route = &route.into();
        let Some(state) = self.index.routes.get(route) else {
            return Vec::new();
        };
        let mut out = BTreeSet::new();
        for (parent, _) in state.parents() {
            for r in self.routing.get(&parent).iter().flat_map(|r| r.all()) {
                for (loser, p) in &r.problems {
                    if let Problem::Conflicted {
                        service,
                        port,
                        winner,
                    } = p
                        && winner == route
                    {
                        out.insert(Outranked {
                            route: loser.clone(),
                            service: service.clone(),
                            port: *port,
                        });
                    }
                }
            }
        }
        out.into_iter().collect()
    }

    /// The subsets of a routing's port that select no ready endpoint.
    fn empty_subsets(
        &self,
        parent: &ObjectKey,
        port: u16,
        routing: &ServiceRouting,
        out: &mut BTreeSet<Problem>,
    ) {
        let own = ClusterKey::new(self.settings(), parent.clone(), port, Arc::default());
        for key in routing
            .clusters
            .iter()
            .filter(|k| !k.subset.is_empty() && **k != own)
        {
            if self.cluster_is_empty(key) {
                out.insert(Problem::SubsetEmpty {
                    service: key.service.clone(),
                    subset: (*key.subset).clone(),
                });
            }
        }
    }

    /// Whether a cluster has no ready endpoint.
    fn cluster_is_empty(&self, key: &ClusterKey) -> bool {
        match self.endpoints.get(key) {
            Some(e) => e.value.endpoints.is_empty(),
            // Clusters no proxy uses have no entry; status still wants the answer.
            None => self
                .index
                .cluster_endpoints(key, None)
                .value
                .endpoints
                .is_empty(),
        }
    }

    /// Proxies whose config a route shapes (those that reach one of its parent Services,
    /// and for a consumer route only those in its namespace), as the member sets of their
    /// classes: proxies of one class share their config, so a caller can count a class once
    /// for every route that reaches it. Each proxy is in one class; a set is replaced, not
    /// changed in place, while the caller holds it.
    pub fn route_proxies(
        &self,
        route: impl Into<RouteKey>,
    ) -> impl Iterator<Item = &Arc<BTreeSet<ObjectKey>>> {
        let route = route.into();
        let parents: Vec<ObjectKey> = self
            .index
            .routes
            .get(&route)
            .map(|state| state.parents().map(|(p, _)| p).collect())
            .unwrap_or_default();
        self.classes
            .by_key
            .values()
            .filter(move |c| {
                parents.iter().any(|p| {
                    let clients =
                        p.namespace == route.namespace() || c.key.namespace == route.namespace();
                    clients && c.reaches(p) && self.routing.contains(p)
                })
            })
            .map(|c| &c.members)
    }
}
