//! What status asks of the mesh about access policies.

use std::collections::BTreeSet;

use remora_api::{FieldError, spiffe::SpiffeId};

use super::Mesh;
use crate::{access::AccessPolicyState, config::Authorization, input::ObjectKey};

impl Mesh {
    /// Whether the model holds this access policy (status waits until it does).
    pub fn has_access_policy(&self, policy: &ObjectKey) -> bool {
        self.index.access.contains_key(policy)
    }

    /// The `metadata.generation` of the access policy the model holds.
    pub fn access_policy_generation(&self, policy: &ObjectKey) -> Option<i64> {
        self.index.access.get(policy)?.generation
    }

    /// Validation problems of an access policy's latest spec (the previous valid spec stays
    /// in effect).
    pub fn access_policy_validation(&self, policy: &ObjectKey) -> Option<&[FieldError]> {
        self.index.access.get(policy).map(|p| p.problems.as_slice())
    }

    /// The proxies whose workloads an access policy protects, in order.
    pub fn access_policy_proxies(&self, policy: &ObjectKey) -> Vec<ObjectKey> {
        let Some(state) = self.index.access.get(policy) else {
            return Vec::new();
        };
        self.classes
            .proxies
            .keys()
            .filter(|p| self.protects(state, p))
            .cloned()
            .collect()
    }

    /// What a policy names that nothing in the mesh is: service accounts (and identities)
    /// no pod runs as, in the order the spec names them.
    pub fn access_policy_unknown_accounts(&self, policy: &ObjectKey) -> Vec<String> {
        let Some(spec) = self
            .index
            .access
            .get(policy)
            .and_then(|p| p.accepted.as_ref())
        else {
            return Vec::new();
        };
        let known: BTreeSet<(&str, &str)> = self
            .index
            .pods
            .iter()
            .map(|(k, p)| (k.namespace.as_str(), &*p.service_account))
            .collect();
        let mut unknown = Vec::new();
        for source in spec.rules.iter().flat_map(|r| &r.from) {
            let accounts = source.service_accounts.iter().map(|a| {
                let (ns, name) = a.split_once('/').unwrap_or((&policy.namespace, a));
                (ns.to_owned(), name.to_owned(), a.clone())
            });
            let identities = source.identities.iter().filter_map(|i| {
                let id = i.parse::<SpiffeId>().ok()?;
                Some((id.namespace, id.service_account, i.clone()))
            });
            for (ns, name, written) in accounts.chain(identities) {
                if !known.contains(&(ns.as_str(), name.as_str())) && !unknown.contains(&written) {
                    unknown.push(written);
                }
            }
        }
        unknown
    }

    /// The rules that protect a proxy's workload, as its sidecar enforces them.
    pub fn proxy_authorization(&self, proxy: &ObjectKey) -> Option<std::sync::Arc<Authorization>> {
        let pod = self.index.pods.get(proxy)?;
        self.index.authorization_for(&proxy.namespace, &pod.labels)
    }

    fn protects(&self, state: &AccessPolicyState, proxy: &ObjectKey) -> bool {
        self.index
            .pods
            .get(proxy)
            .is_some_and(|pod| state.protects(&self.index.settings, &proxy.namespace, &pod.labels))
    }
}
