//! The proxies, grouped in classes: each proxy's class and its own (inbound) resources, and
//! each class's shared outbound config, kept up to date as proxies move and Services change.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use super::{peers::PeerTable, routing_table::RoutingTable};
use crate::{
    class::{Class, ClassKey, ClassUpdate, Env, SharedCache},
    config::{Resource, ResourceKey},
    inbound::inbound_resources,
    index::Index,
    input::ObjectKey,
    policy::InboundPorts,
    routing::ClusterKey,
};

/// Class-wide resources that changed, by class.
pub(super) type ChangedByClass = BTreeMap<ClassKey, BTreeSet<ResourceKey>>;

pub(super) struct ProxyState {
    pub class: ClassKey,
    pub inbound: BTreeMap<ResourceKey, Resource>,
    /// Where it takes mutual TLS (the mesh has workload identity and its mode is not
    /// `Disabled`): on the ports its pod has redirected to it.
    pub mtls: Option<InboundPorts>,
}

#[derive(Default)]
pub(super) struct Classes {
    pub by_key: BTreeMap<ClassKey, Class>,
    pub proxies: BTreeMap<ObjectKey, ProxyState>,
    cache: SharedCache,
}

/// How placing proxies changed the classes.
#[derive(Default)]
pub(super) struct Placement {
    /// Classes that did not exist before.
    new: BTreeSet<ClassKey>,
    /// Classes some proxy left (those left empty go).
    left: BTreeSet<ClassKey>,
    /// The Services in front of proxies that started or stopped taking mutual TLS, or take
    /// it on other ports now: their endpoints and accepted identities change.
    pub meshed_changed: BTreeSet<ObjectKey>,
}

/// The Services whose routing, or whose callers' accepted identities, changed.
pub(super) struct ServicesChanged {
    pub routing: BTreeSet<ObjectKey>,
    pub peers: BTreeSet<ObjectKey>,
}

/// What updating the classes changed, for the endpoints and the report.
#[derive(Default)]
pub(super) struct ClassesUpdated {
    pub changed: ChangedByClass,
    /// Net change in the number of classes using each cluster. A class may drop a cluster
    /// for one Service and take it again for another in the same update; only the sum
    /// counts, so an entry still in use is never dropped and rebuilt on the way.
    pub cluster_users: HashMap<ClusterKey, i32>,
}

impl ClassesUpdated {
    fn count(&mut self, update: ClassUpdate) {
        for (c, d) in update.cluster_refs {
            *self.cluster_users.entry(c).or_default() += d;
        }
    }
}

impl Classes {
    /// Whether `pod` is a proxy that takes mutual TLS.
    pub fn is_meshed(&self, pod: &ObjectKey) -> bool {
        self.proxies.get(pod).is_some_and(|p| p.mtls.is_some())
    }

    /// Whether `pod` is a proxy that takes mutual TLS on `port`.
    pub fn takes_mtls(&self, pod: &ObjectKey, port: u16) -> bool {
        self.proxies
            .get(pod)
            .and_then(|p| p.mtls.as_ref())
            .is_some_and(|ports| ports.intercepts(port))
    }

    /// The class of a proxy.
    pub fn of_proxy(&self, proxy: &ObjectKey) -> Option<&Class> {
        self.by_key.get(&self.proxies.get(proxy)?.class)
    }

    /// Puts each of `pods` that is a proxy in the class it belongs to now (creating the
    /// class if needed), and forgets those that are no proxies. Their inbound config waits
    /// for [`Classes::inbound`], once the classes have their policies' current defaults.
    pub fn place(&mut self, index: &Index, pods: &BTreeSet<ObjectKey>) -> Placement {
        let mut placed = Placement::default();
        for key in pods {
            let pod = index.pods.get(key).filter(|p| p.sidecar);
            let new_class = pod.map(|pod| ClassKey {
                namespace: key.namespace.clone(),
                policy: index.policy_for(&key.namespace, &pod.labels).cloned(),
            });
            let mtls = new_class
                .as_ref()
                .and_then(|c| index.inbound_mtls(c.policy.as_ref()));
            if self.proxies.get(key).and_then(|p| p.mtls.as_ref()) != mtls.as_ref() {
                placed.meshed_changed.extend(index.services_behind(key));
            }
            let old_class = self.proxies.get(key).map(|p| p.class.clone());
            if old_class != new_class
                && let Some(old) = old_class
                && let Some(c) = self.by_key.get_mut(&old)
            {
                Arc::make_mut(&mut c.members).remove(key);
                placed.left.insert(old);
            }
            let Some(class_key) = new_class else {
                self.proxies.remove(key);
                continue;
            };
            let class = self.by_key.entry(class_key.clone()).or_insert_with(|| {
                placed.new.insert(class_key.clone());
                Class::new(
                    class_key.clone(),
                    index.defaults_for(class_key.policy.as_ref()),
                    index.settings.addressing,
                )
            });
            Arc::make_mut(&mut class.members).insert(key.clone());
            self.proxies.insert(
                key.clone(),
                ProxyState {
                    class: class_key,
                    inbound: BTreeMap::new(),
                    mtls,
                },
            );
        }
        placed
    }

    /// Computes the inbound config of each of `pods` that is a proxy, from its pod and its
    /// class's defaults as [`Classes::update`] left them.
    pub fn inbound(&mut self, index: &Index, pods: &BTreeSet<ObjectKey>) {
        for key in pods {
            let Some(state) = self.proxies.get_mut(key) else {
                continue;
            };
            let (Some(pod), Some(class)) = (index.pods.get(key), self.by_key.get(&state.class))
            else {
                continue;
            };
            let authz = index.authorization_for(&key.namespace, &pod.labels);
            state.inbound = inbound_resources(
                &index.settings,
                pod.ip,
                &pod.ports,
                &class.defaults,
                authz.as_ref(),
            );
        }
    }

    /// Drops the classes left empty, builds the new ones, rebuilds those whose policy
    /// changed, and applies the changed `services` to the rest.
    pub fn update(
        &mut self,
        index: &Index,
        routing: &RoutingTable,
        peers: &PeerTable,
        placed: &Placement,
        services: &ServicesChanged,
        policies: &BTreeSet<ObjectKey>,
    ) -> ClassesUpdated {
        for svc in &services.routing {
            self.cache.forget(svc);
        }
        for svc in &services.peers {
            self.cache.forget_clusters(svc);
        }
        let protocols = |k: &ClusterKey| index.protocol(k);
        let peers = |s: &ObjectKey| peers.get(s);
        let env = Env {
            settings: &index.settings,
            protocols: &protocols,
            peers: &peers,
        };
        let mut out = ClassesUpdated::default();
        for key in &placed.left {
            if self.by_key.get(key).is_some_and(|c| c.members.is_empty()) {
                let mut class = self.by_key.remove(key).expect("present");
                // The class is gone: only the clusters it released matter.
                let mut update = ClassUpdate::untracked();
                class.clear(&env, &mut self.cache, &mut update);
                out.count(update);
            }
        }
        for (key, class) in &mut self.by_key {
            // Every member of a new class joined it in this update and is reported through
            // the difference to the class it left, so its class-wide changes go unused.
            let new = placed.new.contains(key);
            let rebuild = !new && key.policy.as_ref().is_some_and(|p| policies.contains(p));
            let mut update = if new {
                ClassUpdate::untracked()
            } else {
                ClassUpdate::default()
            };
            if rebuild {
                let defaults = index.defaults_for(key.policy.as_ref());
                class.reset(&env, &mut self.cache, defaults, &mut update);
            }
            if new || rebuild {
                for (svc, r) in routing.iter_for_clients_in(&key.namespace) {
                    class.set_service(&env, &mut self.cache, svc, Some(r), &mut update);
                }
            } else {
                for svc in &services.routing {
                    let r = routing.for_clients_in(svc, &key.namespace);
                    class.set_service(&env, &mut self.cache, svc, r, &mut update);
                }
                class.refresh_clusters(&env, &mut self.cache, &services.peers, &mut update);
            }
            class.finish(&mut update);
            if !new {
                let changed = update.changed(class);
                if !changed.is_empty() {
                    out.changed.entry(key.clone()).or_default().extend(changed);
                }
            }
            out.count(update);
        }
        out
    }
}
