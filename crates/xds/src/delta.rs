//! Incremental (delta) ADS for one stream, as a pure state machine: only what changed is
//! sent, and removals are named.

use std::{collections::BTreeSet, sync::Arc};

use envoy_types::pb::{
    envoy::{
        config::core::v3::Node,
        service::discovery::v3::{
            DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as DeltaResource,
        },
    },
    google::protobuf::Any,
};

use remora_envoy::EnvoyResource;

use crate::{
    by_type::ByType,
    machine::Machine,
    names::Names,
    per_type::{self, Answers, Carried, PerType, Wanted},
    snapshot::{PUSH_ORDER, Resources, Snapshot, is_wildcard_type, served_type},
    sync::Mode,
};

/// Responses not yet answered, at most this many remembered; older ones are only ever
/// answered late, and a late answer changes nothing.
const IN_FLIGHT: usize = 16;

#[derive(Debug)]
pub(crate) struct TypeState {
    wildcard: bool,
    names: Names,
    /// What the proxy holds (or was sent). Usually the very set of a snapshot, shared with
    /// it; only its names and versions are read.
    known: Resources,
    wanted: Wanted,
    /// The first request of a type is always answered, even when nothing is new.
    owes_reply: bool,
    /// Responses not answered yet, oldest first. A vector: it is nearly always empty, and
    /// an emptied `BTreeMap` keeps its node.
    in_flight: Vec<InFlight>,
    sent: Option<String>,
    answers: Answers,
}

impl Default for TypeState {
    fn default() -> Self {
        TypeState {
            wildcard: false,
            names: Names::default(),
            known: Resources::empty(),
            wanted: Wanted::default(),
            owes_reply: false,
            in_flight: Vec::new(),
            sent: None,
            answers: Answers::default(),
        }
    }
}

impl PerType for TypeState {
    fn refresh(&mut self, set: &Resources) {
        let (wildcard, names) = (self.wildcard, &mut self.names);
        self.wanted.refresh(set, |set| {
            if wildcard {
                set.clone()
            } else {
                names.pick(set)
            }
        });
    }

    fn wanted(&self) -> &Wanted {
        &self.wanted
    }

    fn answers(&self) -> &Answers {
        &self.answers
    }

    fn sent(&self) -> Option<String> {
        self.sent.clone()
    }

    fn subscribed(&self) -> usize {
        self.names.len()
    }
}

/// One incremental stream's state: per type, the subscription, what the proxy holds and the
/// responses it has yet to answer.
#[derive(Debug, Default)]
pub struct DeltaStream {
    types: ByType<TypeState>,
    nonces: u64,
}

impl TypeState {
    /// The first request of the type: what the proxy kept from an earlier connection is not
    /// sent again. Only names and versions of known resources are read, so these carry no
    /// body.
    fn open(&mut self, type_url: &str, request: &DeltaDiscoveryRequest) {
        self.owes_reply = true;
        self.known = Resources::from_map(
            request
                .initial_resource_versions
                .iter()
                .map(|(name, version)| {
                    // Only the name and version of what the proxy holds matter.
                    let held = EnvoyResource {
                        name: name.clone(),
                        type_url: "",
                        version: version.clone(),
                        any: Any::default(),
                    };
                    (name.clone(), Arc::new(held))
                })
                .collect(),
        );
        if request.resource_names_subscribe.is_empty() && is_wildcard_type(type_url) {
            self.wildcard = true;
        }
    }

    /// Takes in an ACK or a NACK of a response still in flight; an answer to any other is
    /// late and changes nothing.
    fn answered(&mut self, request: &DeltaDiscoveryRequest) {
        let Ok(nonce) = request.response_nonce.parse::<u64>() else {
            return;
        };
        let Some(i) = self.in_flight.iter().position(|r| r.nonce == nonce) else {
            return;
        };
        let r = self.in_flight.remove(i);
        self.answers.answer(
            request.error_detail.as_ref(),
            &r.version,
            r.carried,
            &self.known,
            &r.version,
        );
        // Anything older than an answered response will not be answered usefully.
        self.in_flight.retain(|r| r.nonce > nonce);
    }

    /// Applies the subscription changes a request names; true when there were any.
    fn resubscribe(&mut self, request: &DeltaDiscoveryRequest, set: &Resources) -> bool {
        if request.resource_names_subscribe.is_empty()
            && request.resource_names_unsubscribe.is_empty()
        {
            return false;
        }
        let mut names: BTreeSet<&str> = self.names.iter().collect();
        for name in &request.resource_names_subscribe {
            if name == "*" {
                self.wildcard = true;
            } else {
                names.insert(name);
            }
        }
        for name in &request.resource_names_unsubscribe {
            if name == "*" {
                self.wildcard = false;
            } else {
                names.remove(name.as_str());
            }
        }
        self.names = Names::new(names, set);
        self.wanted.clear();
        true
    }

    /// Forgets what the proxy dropped from its subscription, so a later subscription sends
    /// it afresh. What it holds is then another set, whose version it has never ACKed: a
    /// reply is owed, even with nothing in it, or the version it last ACKed would never be
    /// that of its listeners or routes again, and removed clusters would wait for them
    /// ([`per_type::Removals`]) until some other change.
    fn forget_unsubscribed(&mut self) {
        if self.wildcard || self.known.iter().all(|(n, _)| self.names.contains(n)) {
            return;
        }
        let kept = self
            .known
            .iter()
            .filter(|(n, _)| self.names.contains(n))
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        self.known = Resources::from_map(kept);
        self.owes_reply = true;
    }

    /// The response that brings the proxy from what it holds to `target`, if it needs one;
    /// what `target` lacks stays while `keep_gone`.
    fn update(&mut self, target: Resources, keep_gone: bool) -> Option<Update> {
        if self.known.version() == target.version() && !self.owes_reply {
            return None;
        }
        let diff = target.diff(&self.known);
        let resources: Vec<DeltaResource> = diff
            .updated
            .iter()
            .map(|(name, r)| DeltaResource {
                name: (*name).clone(),
                version: r.version.clone(),
                resource: Some(r.any.clone()),
                ..Default::default()
            })
            .collect();
        let removed: Vec<String> = if keep_gone {
            Vec::new()
        } else {
            diff.gone.iter().map(|(n, _)| (*n).clone()).collect()
        };
        if resources.is_empty() && removed.is_empty() && !self.owes_reply {
            return None;
        }
        self.known = if keep_gone {
            target.keeping(&self.known)
        } else {
            target
        };
        self.owes_reply = false;
        Some(Update { resources, removed })
    }

    /// Records a response sent under `nonce`; only the last [`IN_FLIGHT`] are remembered.
    fn record_sent(&mut self, nonce: u64, resources: &[DeltaResource]) -> String {
        let version = self.known.version().to_owned();
        self.in_flight.push(InFlight {
            nonce,
            version: version.clone(),
            // The whole set, as a first response carries it, is not spelled out name by name.
            carried: if resources.len() == self.known.len() {
                Carried::All
            } else {
                Carried::Names(resources.iter().map(|r| r.name.clone()).collect())
            },
        });
        if self.in_flight.len() > IN_FLIGHT {
            self.in_flight.remove(0);
        }
        self.sent = Some(version.clone());
        self.answers.resources_sent += resources.len() as u64;
        version
    }
}

/// A response not answered yet.
#[derive(Debug)]
struct InFlight {
    nonce: u64,
    /// The version it brought the proxy to.
    version: String,
    carried: Carried,
}

/// What one response brings: the resources new or changed, and the names gone.
struct Update {
    resources: Vec<DeltaResource>,
    removed: Vec<String>,
}

impl Machine for DeltaStream {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;
    type State = TypeState;
    const MODE: Mode = Mode::Incremental;

    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn names_in(req: &DeltaDiscoveryRequest) -> usize {
        req.resource_names_subscribe.len()
            + req.resource_names_unsubscribe.len()
            + req.initial_resource_versions.len()
    }

    fn type_of(req: &DeltaDiscoveryRequest) -> &str {
        &req.type_url
    }

    fn types(&self) -> &ByType<TypeState> {
        &self.types
    }

    fn describe(r: &DeltaDiscoveryResponse) -> (&str, usize, &str) {
        (&r.type_url, r.resources.len(), &r.system_version_info)
    }

    fn take_request(&mut self, request: &DeltaDiscoveryRequest, snapshot: &Snapshot) -> bool {
        let Some(type_url) = served_type(&request.type_url) else {
            return false;
        };
        let first = !self.types.contains_key(type_url);
        let state = self.types.entry(type_url);
        if first {
            state.open(type_url, request);
        }
        state.answered(request);
        let resubscribed = state.resubscribe(request, snapshot.set(type_url));
        if first || resubscribed {
            state.forget_unsubscribed();
        }
        true
    }

    /// Sends, per type, what is new or changed and what is gone: after a new snapshot, or a
    /// request taken in. As in state-of-the-world mode, removed clusters and endpoints may
    /// wait ([`per_type::Removals`]).
    fn respond(&mut self, snapshot: &Snapshot) -> Vec<DeltaDiscoveryResponse> {
        let removals = per_type::refresh(&mut self.types, snapshot);
        let mut out = Vec::new();
        for type_url in PUSH_ORDER {
            let Some(state) = self.types.get_mut(type_url) else {
                continue;
            };
            let Some(target) = state.wanted.get().cloned() else {
                continue;
            };
            let Some(Update { resources, removed }) = state.update(target, removals.wait(type_url))
            else {
                continue;
            };
            self.nonces += 1;
            out.push(DeltaDiscoveryResponse {
                system_version_info: state.record_sent(self.nonces, &resources),
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
    use crate::{
        snapshot::{
            CLUSTER, ENDPOINT, LISTENER, ROUTE,
            tests::{mesh_v1, snapshot, two_routes},
        },
        sync::SyncState,
    };

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
    fn a_refused_route_config_keeps_its_clusters_and_its_nack_over_another_ones_ack() {
        // r1 routes to cluster b; its new version routes elsewhere and is refused, so the
        // proxy keeps the old r1, which still needs b.
        let route_status = |s: &DeltaStream| {
            s.status()
                .into_iter()
                .find_map(|(t, st)| (t == ROUTE).then_some(st))
                .expect("route status")
        };
        let v1 = two_routes("1", "1", true);
        let mut s = DeltaStream::default();
        for (t, names) in [
            (CLUSTER, &[][..]),
            (ENDPOINT, &["a", "b"][..]),
            (LISTENER, &[][..]),
            (ROUTE, &["r1", "r2"][..]),
        ] {
            let out = s.on_request(&subscribe(t, names), &v1);
            assert!(s.on_request(&ack(&out[0]), &v1).is_empty());
        }
        let bad = two_routes("bad", "1", false);
        let out = s.respond(&bad);
        assert_eq!(sent(&out[0]), ["r1@bad"]);
        let mut nack = ack(&out[0]);
        nack.error_detail = Some(Status {
            code: 3,
            message: "invalid regex".into(),
            details: vec![],
        });
        assert!(s.on_request(&nack, &bad).is_empty());

        // r2 changes: it alone is sent and ACKed; b stays, and so does the NACK.
        let next = two_routes("bad", "2", false);
        let out = s.respond(&next);
        assert_eq!(out.len(), 1);
        assert_eq!(sent(&out[0]), ["r2@2"]);
        assert!(
            s.on_request(&ack(&out[0]), &next).is_empty(),
            "cluster b is not removed while the proxy runs the old r1"
        );
        let st = route_status(&s);
        assert_eq!(st.state(), SyncState::Nacked);
        assert_eq!(st.nack.map(|n| n.message), Some("invalid regex".to_owned()));

        // r1 fixed: taken, the NACK is over and b goes.
        let fixed = two_routes("3", "2", false);
        let out = s.respond(&fixed);
        assert_eq!(sent(&out[0]), ["r1@3"]);
        let out = s.on_request(&ack(&out[0]), &fixed);
        let types: Vec<&str> = out.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(types, [CLUSTER, ENDPOINT]);
        assert_eq!(out[0].removed_resources, ["b"]);
        assert_eq!(route_status(&s).state(), SyncState::Synced);
    }

    #[test]
    fn the_response_budget_estimate_covers_what_a_request_is_sent() {
        let snap = mesh_v1();
        let mut s = DeltaStream::default();
        for (t, names) in [(CLUSTER, &[][..]), (ENDPOINT, &["a", "b"][..])] {
            assert!(s.take_request(&subscribe(t, names), &snap));
            let (out, _) = s.respond_within_estimate(&snap);
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
        let (_, estimate) = s.respond_within_estimate(&next);
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
        let out = s.on_request(&req, &snap);
        assert_eq!(
            out.len(),
            1,
            "a reply moves the version to the set without b"
        );
        assert!(out[0].resources.is_empty() && out[0].removed_resources.is_empty());
        let out = s.on_request(&subscribe(ENDPOINT, &["b"]), &snap);
        assert_eq!(sent(&out[0]), ["b@1"]);
    }

    #[test]
    fn a_route_config_unsubscribed_does_not_hold_back_cluster_removals() {
        // Found by fuzzing (crates/fuzz/regressions/delta): the proxy's set of routes shrank
        // with no reply, so the version it had ACKed was never that of its routes again, and
        // a removed cluster waited for that until some other route changed.
        let two_routes = |with_b: bool| {
            let mut entries = vec![
                (CLUSTER, "a", "1"),
                (ENDPOINT, "a", "1"),
                (LISTENER, "l", "1"),
                (ROUTE, "r", "1"),
                (ROUTE, "r2", "1"),
            ];
            if with_b {
                entries.extend([(CLUSTER, "b", "1"), (ENDPOINT, "b", "1")]);
            }
            snapshot(&entries)
        };
        let snap = two_routes(true);
        let mut s = DeltaStream::default();
        for (t, names) in [
            (CLUSTER, &[][..]),
            (ENDPOINT, &["a", "b"][..]),
            (LISTENER, &[][..]),
            (ROUTE, &["r", "r2"][..]),
        ] {
            let out = s.on_request(&subscribe(t, names), &snap);
            assert!(s.on_request(&ack(&out[0]), &snap).is_empty());
        }
        // The listener naming r2 goes, and with it cluster b: Envoy drops r2 first.
        let without_b = two_routes(false);
        let mut drop_r2 = subscribe(ROUTE, &[]);
        drop_r2.resource_names_unsubscribe = vec!["r2".into()];
        assert!(s.take_request(&drop_r2, &without_b));
        let out = s.respond(&without_b);
        let types: Vec<&str> = out.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(types, [ROUTE], "cluster b waits for the routes");
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
}
