//! Incremental (delta) ADS for one stream, as a pure state machine: only what changed is
//! sent, and removals are named.

use std::{collections::BTreeSet, sync::Arc};

use envoy_types::pb::{
    envoy::service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as DeltaResource,
    },
    google::protobuf::Any,
};

use crate::{
    by_type::ByType,
    names::Names,
    snapshot::{
        CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, Resource, Resources, Snapshot,
        is_wildcard_type, served_type,
    },
    status::{Nack, TypeStatus},
};

/// Responses not yet answered, at most this many remembered; older ones are only ever
/// answered late, and a late answer changes nothing.
const IN_FLIGHT: usize = 16;

#[derive(Debug)]
struct TypeState {
    wildcard: bool,
    names: Names,
    /// What the proxy holds (or was sent). Usually the very set of a snapshot, shared with
    /// it; only its names and versions are read.
    known: Resources,
    /// The snapshot's set of this type and the part of it subscribed to, kept until either
    /// changes, so an ACK costs no recomputation.
    wanted: Option<(Resources, Resources)>,
    /// The first request of a type is always answered, even when nothing is new.
    owes_reply: bool,
    /// Nonce and the version the response brought the proxy to, oldest first. A vector:
    /// it is nearly always empty, and an emptied `BTreeMap` keeps its node.
    in_flight: Vec<(u64, String)>,
    sent: Option<String>,
    acked: Option<String>,
    nack: Option<Nack>,
    resources_sent: u64,
}

impl Default for TypeState {
    fn default() -> Self {
        TypeState {
            wildcard: false,
            names: Names::default(),
            known: Resources::empty(),
            wanted: None,
            owes_reply: false,
            in_flight: Vec::new(),
            sent: None,
            acked: None,
            nack: None,
            resources_sent: 0,
        }
    }
}

impl TypeState {
    fn refresh(&mut self, set: Resources) -> &Resources {
        if self.wanted.as_ref().is_none_or(|(from, _)| *from != set) {
            let wanted = if self.wildcard {
                set.clone()
            } else {
                self.names.pick(&set)
            };
            self.wanted = Some((set, wanted));
        }
        self.wanted.as_ref().map(|(_, w)| w).expect("just set")
    }
}

#[derive(Debug, Default)]
pub struct DeltaStream {
    types: ByType<TypeState>,
    nonces: u64,
}

impl DeltaStream {
    /// Takes in one request (an ACK, a NACK, a new or changed subscription); true when it
    /// may need an answer, which [`Self::respond`] then builds. Apart, so a stream waiting
    /// for room to answer holds this state, not the request.
    pub fn take_request(&mut self, request: &DeltaDiscoveryRequest, snapshot: &Snapshot) -> bool {
        let Some(type_url) = served_type(&request.type_url) else {
            return false;
        };
        let first = !self.types.contains_key(type_url);
        let state = self.types.entry(type_url);
        if first {
            state.owes_reply = true;
            // What the proxy kept from an earlier connection is not sent again. Only names
            // and versions of known resources are read, so these carry no body.
            state.known = Resources::from_map(
                request
                    .initial_resource_versions
                    .iter()
                    .map(|(name, version)| {
                        let held = Resource {
                            name: name.clone(),
                            version: version.clone(),
                            body: Any::default(),
                        };
                        (name.clone(), Arc::new(held))
                    })
                    .collect(),
            );
            if request.resource_names_subscribe.is_empty() && is_wildcard_type(type_url) {
                state.wildcard = true;
            }
        }
        if let Ok(nonce) = request.response_nonce.parse::<u64>()
            && let Some(i) = state.in_flight.iter().position(|(n, _)| *n == nonce)
        {
            let (_, version) = state.in_flight.remove(i);
            match &request.error_detail {
                Some(error) => {
                    state.nack = Some(Nack {
                        version,
                        message: error.message.clone(),
                    });
                }
                None => {
                    state.acked = Some(version);
                    state.nack = None;
                }
            }
            // Anything older than an answered response will not be answered usefully.
            state.in_flight.retain(|(n, _)| *n > nonce);
        }
        let resubscribed = !request.resource_names_subscribe.is_empty()
            || !request.resource_names_unsubscribe.is_empty();
        if resubscribed {
            let mut names: BTreeSet<&str> = state.names.iter().collect();
            for name in &request.resource_names_subscribe {
                if name == "*" {
                    state.wildcard = true;
                } else {
                    names.insert(name);
                }
            }
            for name in &request.resource_names_unsubscribe {
                if name == "*" {
                    state.wildcard = false;
                } else {
                    names.remove(name.as_str());
                }
            }
            state.names = Names::new(names, &snapshot.resources(type_url));
            state.wanted = None;
        }
        if !state.wildcard
            && (first || resubscribed)
            && state.known.iter().any(|(n, _)| !state.names.contains(n))
        {
            // Forget what the proxy dropped, so a later subscription sends it afresh.
            let kept = state
                .known
                .iter()
                .filter(|(n, _)| state.names.contains(n))
                .map(|(n, r)| (n.clone(), r.clone()))
                .collect();
            state.known = Resources::from_map(kept);
        }
        true
    }

    /// About the most bytes [`Self::respond`] sends for `snapshot`: the whole set of each
    /// type whose set or subscription changed since it was last answered, nothing for the
    /// others. What a stream reserves of the response budget before building.
    pub fn answer_bytes(&self, snapshot: &Snapshot) -> usize {
        snapshot.changed_bytes(
            self.types
                .iter()
                .map(|(t, s)| (t, s.wanted.as_ref().map(|(from, _)| from))),
        )
    }

    pub fn status(&self) -> Vec<(&'static str, TypeStatus)> {
        self.types
            .iter()
            .map(|(t, s)| {
                (
                    t,
                    TypeStatus {
                        sent: s.sent.clone(),
                        acked: s.acked.clone(),
                        nack: s.nack.clone(),
                        resources_sent: s.resources_sent,
                    },
                )
            })
            .collect()
    }

    /// Sends, per type, what is new or changed and what is gone: after a new snapshot, or a
    /// request taken in. As in state-of-the-world mode, clusters and endpoints are removed
    /// only once the proxy ACKed routes that no longer use them.
    pub fn respond(&mut self, snapshot: &Snapshot) -> Vec<DeltaDiscoveryResponse> {
        for (type_url, state) in self.types.iter_mut() {
            state.refresh(snapshot.resources(type_url));
        }
        let routes_settled = [LISTENER, ROUTE].iter().all(|t| {
            self.types.get(t).is_none_or(|s| {
                s.wanted
                    .as_ref()
                    .is_none_or(|(_, w)| s.acked.as_deref() == Some(w.version()))
            })
        });

        let mut out = Vec::new();
        for type_url in PUSH_ORDER {
            let Some(state) = self.types.get_mut(type_url) else {
                continue;
            };
            let Some((_, target)) = state.wanted.clone() else {
                continue;
            };
            if state.known.version() == target.version() && !state.owes_reply {
                continue;
            }
            let keep_gone = !routes_settled && (type_url == CLUSTER || type_url == ENDPOINT);
            let (resources, removed) = {
                let diff = target.diff(&state.known);
                let resources: Vec<DeltaResource> = diff
                    .updated
                    .iter()
                    .map(|(name, r)| DeltaResource {
                        name: (*name).clone(),
                        version: r.version.clone(),
                        resource: Some(r.body.clone()),
                        ..Default::default()
                    })
                    .collect();
                let removed: Vec<String> = if keep_gone {
                    Vec::new()
                } else {
                    diff.gone.iter().map(|(n, _)| (*n).clone()).collect()
                };
                (resources, removed)
            };
            if resources.is_empty() && removed.is_empty() && !state.owes_reply {
                continue;
            }
            state.known = if keep_gone {
                target.keeping(&state.known)
            } else {
                target
            };
            state.owes_reply = false;
            let version = state.known.version().to_owned();
            self.nonces += 1;
            state.in_flight.push((self.nonces, version.clone()));
            if state.in_flight.len() > IN_FLIGHT {
                state.in_flight.remove(0);
            }
            state.sent = Some(version.clone());
            state.resources_sent += resources.len() as u64;
            out.push(DeltaDiscoveryResponse {
                system_version_info: version,
                resources,
                type_url: type_url.to_owned(),
                removed_resources: removed,
                nonce: self.nonces.to_string(),
                ..Default::default()
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::rpc::Status;

    use super::*;
    use crate::{server::Machine as _, snapshot::tests::snapshot, status::SyncState};

    fn subscribe(type_url: &str, names: &[&str]) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.into(),
            resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        }
    }

    fn ack(r: &DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        }
    }

    fn sent(r: &DeltaDiscoveryResponse) -> Vec<String> {
        r.resources
            .iter()
            .map(|x| format!("{}@{}", x.name, x.version))
            .collect()
    }

    fn mesh_v1() -> Snapshot {
        snapshot(&[
            (CLUSTER, "a", "1"),
            (CLUSTER, "b", "1"),
            (ENDPOINT, "a", "1"),
            (ENDPOINT, "b", "1"),
            (LISTENER, "l", "1"),
            (ROUTE, "r", "1"),
        ])
    }

    fn connected(snap: &Snapshot) -> DeltaStream {
        let mut s = DeltaStream::default();
        for (t, names) in [
            (CLUSTER, &[][..]),
            (ENDPOINT, &["a", "b"][..]),
            (LISTENER, &[][..]),
            (ROUTE, &["r"][..]),
        ] {
            let out = s.on_request(&subscribe(t, names), snap);
            assert_eq!(out.len(), 1);
            assert!(s.on_request(&ack(&out[0]), snap).is_empty());
        }
        s
    }

    #[test]
    fn the_response_budget_estimate_covers_what_a_request_is_sent() {
        let snap = mesh_v1();
        let mut s = DeltaStream::default();
        for (t, names) in [(CLUSTER, &[][..]), (ENDPOINT, &["a", "b"][..])] {
            assert!(s.take_request(&subscribe(t, names), &snap));
            let estimate = s.answer_bytes(&snap);
            let out = s.respond(&snap);
            let sent: usize = out.iter().map(prost::Message::encoded_len).sum();
            assert!(sent > 0 && sent <= estimate, "{t}");
            assert!(s.on_request(&ack(&out[0]), &snap).is_empty());
        }
        // A new snapshot: room for the types that changed, not for the whole snapshot.
        let mut s = connected(&snap);
        let next = snapshot(&[
            (CLUSTER, "a", "1"),
            (CLUSTER, "b", "1"),
            (ENDPOINT, "a", "2"),
            (ENDPOINT, "b", "1"),
            (LISTENER, "l", "1"),
            (ROUTE, "r", "1"),
        ]);
        let estimate = s.answer_bytes(&next);
        let sent: usize = s
            .respond(&next)
            .iter()
            .map(prost::Message::encoded_len)
            .sum();
        assert!(sent > 0 && sent <= estimate);
        assert_eq!(estimate, next.response_bytes(ENDPOINT));
        assert_eq!(s.answer_bytes(&next), 0, "answered");
    }

    #[test]
    fn only_changes_and_removals_are_sent() {
        let snap = mesh_v1();
        let mut s = connected(&snap);
        let next = snapshot(&[
            (CLUSTER, "a", "2"),
            (CLUSTER, "b", "1"),
            (ENDPOINT, "a", "1"),
            (ENDPOINT, "b", "1"),
            (LISTENER, "l", "1"),
            (ROUTE, "r", "1"),
        ]);
        let out = s.respond(&next);
        assert_eq!(out.len(), 1);
        assert_eq!(sent(&out[0]), ["a@2"]);
        assert!(out[0].removed_resources.is_empty());
        assert!(s.respond(&next).is_empty());
        assert!(s.on_request(&ack(&out[0]), &next).is_empty());
        assert!(
            s.status()
                .iter()
                .all(|(_, st)| st.state() == SyncState::Synced)
        );
    }

    #[test]
    fn a_removed_cluster_goes_after_the_routes_are_acked() {
        let snap = mesh_v1();
        let mut s = connected(&snap);
        let without_b = snapshot(&[
            (CLUSTER, "a", "1"),
            (ENDPOINT, "a", "1"),
            (LISTENER, "l", "1"),
            (ROUTE, "r", "2"),
        ]);
        let out = s.respond(&without_b);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].type_url, ROUTE);
        let out = s.on_request(&ack(&out[0]), &without_b);
        let removed: Vec<_> = out
            .iter()
            .map(|r| (r.type_url.as_str(), r.removed_resources.clone()))
            .collect();
        assert_eq!(
            removed,
            [
                (CLUSTER, vec!["b".to_owned()]),
                (ENDPOINT, vec!["b".to_owned()])
            ]
        );
    }

    #[test]
    fn reconnecting_with_initial_versions_sends_only_what_changed() {
        let snap = mesh_v1();
        let mut s = DeltaStream::default();
        let mut req = subscribe(CLUSTER, &[]);
        req.initial_resource_versions = [
            ("a".to_owned(), "1".to_owned()),
            ("gone".to_owned(), "1".to_owned()),
        ]
        .into_iter()
        .collect();
        let out = s.on_request(&req, &snap);
        assert_eq!(out.len(), 1);
        assert_eq!(sent(&out[0]), ["b@1"]);
        assert_eq!(out[0].removed_resources, ["gone"]);

        let mut again = DeltaStream::default();
        let mut req = subscribe(LISTENER, &[]);
        req.initial_resource_versions = [("l".to_owned(), "1".to_owned())].into_iter().collect();
        let out = again.on_request(&req, &snap);
        assert_eq!(out.len(), 1, "the first request is answered");
        assert!(out[0].resources.is_empty() && out[0].removed_resources.is_empty());
        assert_eq!(again.status()[0].1.resources_sent, 0);
    }

    #[test]
    fn nacks_are_kept_and_not_retried() {
        let snap = mesh_v1();
        let mut s = connected(&snap);
        let bad = snapshot(&[
            (CLUSTER, "a", "1"),
            (CLUSTER, "b", "1"),
            (ENDPOINT, "a", "1"),
            (ENDPOINT, "b", "1"),
            (LISTENER, "l", "bad"),
            (ROUTE, "r", "1"),
        ]);
        let out = s.respond(&bad);
        let mut nack = ack(&out[0]);
        nack.error_detail = Some(Status {
            code: 3,
            message: "duplicate listener".into(),
            details: vec![],
        });
        assert!(s.on_request(&nack, &bad).is_empty());
        assert!(s.respond(&bad).is_empty());
        let (_, st) = s
            .status()
            .into_iter()
            .find(|(t, _)| *t == LISTENER)
            .expect("lds");
        assert_eq!(st.state(), SyncState::Nacked);
        assert_eq!(
            st.nack.map(|n| n.message),
            Some("duplicate listener".into())
        );
    }

    #[test]
    fn answers_to_replaced_responses_change_nothing() {
        let snap = mesh_v1();
        let mut s = connected(&snap);
        let listener = |v: &str| snapshot(&[(LISTENER, "l", v), (ROUTE, "r", "1")]);
        let lds = |out: Vec<DeltaDiscoveryResponse>| {
            out.into_iter()
                .find(|r| r.type_url == LISTENER)
                .expect("lds")
        };
        let lds_of = |s: &DeltaStream| {
            s.status()
                .into_iter()
                .find(|(t, _)| *t == LISTENER)
                .map(|(_, st)| st)
                .expect("lds")
        };
        let first = lds(s.respond(&listener("2")));
        let second = lds(s.respond(&listener("3")));
        // The newer is ACKed first; a late NACK of the older must not mark it rejected.
        s.on_request(&ack(&second), &listener("3"));
        let mut late = ack(&first);
        late.error_detail = Some(Status::default());
        s.on_request(&late, &listener("3"));
        let st = lds_of(&s);
        assert_eq!(st.state(), SyncState::Synced);
        assert_eq!(
            st.acked.as_deref(),
            Some(second.system_version_info.as_str())
        );
        // Only the last IN_FLIGHT unanswered responses are remembered.
        let sent: Vec<DeltaDiscoveryResponse> = (0..=IN_FLIGHT)
            .map(|v| lds(s.respond(&listener(&format!("x{v}")))))
            .collect();
        let last = listener(&format!("x{IN_FLIGHT}"));
        assert!(s.on_request(&ack(&sent[0]), &last).is_empty());
        assert_eq!(lds_of(&s).acked, st.acked, "forgotten, so not counted");
        assert!(s.on_request(&ack(&sent[1]), &last).is_empty());
        assert_eq!(
            lds_of(&s).acked.as_deref(),
            Some(sent[1].system_version_info.as_str())
        );
    }

    #[test]
    fn unsubscribing_and_subscribing_again_resends() {
        let snap = mesh_v1();
        let mut s = connected(&snap);
        let mut req = subscribe(ENDPOINT, &[]);
        req.resource_names_unsubscribe = vec!["b".into()];
        assert!(s.on_request(&req, &snap).is_empty());
        let out = s.on_request(&subscribe(ENDPOINT, &["b"]), &snap);
        assert_eq!(sent(&out[0]), ["b@1"]);
    }
}
