//! Dirty marks: what an event may affect, recorded as it is applied and recomputed all at
//! once when the batch ends.

use std::collections::BTreeSet;

use super::{classes::Classes, routing_table::RoutingTable};
use crate::{
    index::{Index, Touched},
    input::ObjectKey,
};

#[derive(Default)]
pub(super) struct Dirty {
    /// Services whose routing must be recomputed.
    pub routing: BTreeSet<ObjectKey>,
    /// Services whose endpoints (or the labels of the pods behind them) changed.
    pub endpoints: BTreeSet<ObjectKey>,
    /// Pods whose governing policy or inbound config may have changed.
    pub pods: BTreeSet<ObjectKey>,
    /// Policies whose accepted spec changed, so their classes rebuild.
    pub policies: BTreeSet<ObjectKey>,
}

impl Dirty {
    /// Marks what depends on what an event touched.
    pub fn mark(
        &mut self,
        touched: Touched,
        index: &Index,
        routing: &RoutingTable,
        classes: &Classes,
    ) {
        match touched {
            Touched::Namespace(ns) => self.mark_namespace(&ns, index, classes),
            Touched::Service(key) => {
                self.routing.extend(routing.referencing(&key).cloned());
                self.routing.insert(key.clone());
                self.endpoints.insert(key);
            }
            Touched::Endpoints(services) => {
                // Captured traffic to a headless Service is told apart by its endpoints'
                // addresses, which its routing holds.
                let headless = services.iter().filter(|s| index.is_headless(s));
                self.routing.extend(headless.cloned());
                self.endpoints.extend(services);
            }
            Touched::Pod {
                key,
                sidecar,
                endpoints,
            } => {
                self.endpoints.extend(endpoints);
                if sidecar || classes.proxies.contains_key(&key) {
                    self.pods.insert(key);
                }
            }
            Touched::Access(key) => {
                if key.namespace == index.settings.root_namespace {
                    for ns in index.pod_namespaces() {
                        self.mark_namespace(&ns, index, classes);
                    }
                } else {
                    self.mark_namespace(&key.namespace, index, classes);
                }
            }
            Touched::Policy(key) => {
                // A root policy may govern pods in every namespace.
                if key.namespace == index.settings.root_namespace {
                    for ns in index.pod_namespaces() {
                        self.mark_namespace(&ns, index, classes);
                    }
                } else {
                    self.mark_namespace(&key.namespace, index, classes);
                }
                self.policies.insert(key);
            }
            Touched::Routing(services) => self.routing.extend(services),
            Touched::Grants(ns) => self
                .routing
                .extend(routing.referencing_namespace(&ns).cloned()),
        }
    }

    /// Every proxy of a namespace, and every pod there that may become one.
    fn mark_namespace(&mut self, namespace: &str, index: &Index, classes: &Classes) {
        self.pods.extend(index.sidecar_pods_in(namespace).cloned());
        self.pods.extend(
            classes
                .proxies
                .range(ObjectKey::new(namespace, "")..)
                .take_while(|(k, _)| k.namespace == namespace)
                .map(|(k, _)| k.clone()),
        );
    }
}
