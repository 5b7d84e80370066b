//! State-of-the-world ADS for one stream, as a pure state machine: requests and snapshots
//! in, responses out. A response of listeners or clusters carries the whole set the proxy
//! should hold; one of routes or endpoints carries those the proxy lacks or holds at another
//! version, as the protocol allows: Envoy keeps a named resource a response leaves out, and
//! drops it when no listener or cluster names it any more. So a change to one route config
//! sends that one, not every route config the proxy holds.

mod request;

use envoy_types::pb::envoy::{config::core::v3::Node, service::discovery::v3::DiscoveryResponse};

use bytes::Bytes;
pub use request::SotwRequest;

use crate::{
    by_type::ByType,
    machine::Machine,
    names::Names,
    per_type::{self, Answers, Carried, PerType, Wanted},
    snapshot::{PUSH_ORDER, Resources, Snapshot, is_wildcard_type, served_type},
    sync::Mode,
};

/// Which resources of a type the proxy asked for.
#[derive(Clone, Debug)]
pub enum Interest {
    /// Every resource of the type: `*`, or no names for listeners and clusters.
    All,
    /// Only the resources named.
    Names(Names),
}

impl Interest {
    /// Updates `current` to what a request names, split against `set`; true when that
    /// changed it. Every request repeats the whole list, so the common case (no change) is
    /// checked without copying.
    fn update(
        current: &mut Option<Interest>,
        type_url: &str,
        names: &[Bytes],
        set: &Resources,
    ) -> bool {
        let all =
            names.iter().any(|n| n == "*") || (names.is_empty() && is_wildcard_type(type_url));
        let next = if all {
            if matches!(current, Some(Interest::All)) {
                return false;
            }
            Interest::All
        } else {
            if let Some(Interest::Names(held)) = current
                && held.named_alike(names)
            {
                return false;
            }
            // Taken as strings only now that they changed; `Requests` refused a request
            // with a name that is not UTF-8 before it got here.
            let Ok(names) = names
                .iter()
                .map(|n| std::str::from_utf8(n))
                .collect::<Result<Vec<_>, _>>()
            else {
                return false;
            };
            Interest::Names(Names::new(names, set))
        };
        *current = Some(next);
        true
    }

    /// The part of `set` wanted: the set itself (shared, not copied) when all of it is.
    fn pick(&mut self, set: &Resources) -> Resources {
        match self {
            Interest::All => set.clone(),
            Interest::Names(names) => names.pick(set),
        }
    }
}

#[derive(Debug)]
struct Sent {
    /// Empty when the proxy came back holding this version and nothing was sent.
    nonce: String,
    resources: Resources,
    /// What the response carried, until the proxy answers it.
    carried: Option<Carried>,
}

#[derive(Debug, Default)]
pub(crate) struct TypeState {
    interest: Option<Interest>,
    wanted: Wanted,
    sent: Option<Sent>,
    /// The version the proxy said it holds when it (re)connected.
    held: Option<String>,
    answers: Answers,
    /// The proxy dropped names from its subscription since the last response: the next
    /// answer goes out even if the set it brings is the one last sent, so that the version
    /// the proxy ACKs is again that of what it holds.
    resend: bool,
}

impl TypeState {
    /// Forgets what the proxy no longer asks for: Envoy drops a route config or an endpoint
    /// set when it unsubscribes, so a name asked for again must be sent again, even when it
    /// is asked for again before the server answered the request that dropped it.
    fn forget_unsubscribed(&mut self) {
        if self.sent.is_none() {
            // Back from another connection, the proxy changed its subscription before it
            // was answered: the version it said it holds no longer tells what it holds.
            self.held = None;
            return;
        }
        let (Some(Interest::Names(names)), Some(sent)) = (&self.interest, &mut self.sent) else {
            return;
        };
        if sent.resources.iter().all(|(n, _)| names.contains(n)) {
            return;
        }
        let kept = sent
            .resources
            .iter()
            .filter(|(n, _)| names.contains(n))
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        sent.resources = Resources::from_map(kept);
        self.resend = true;
    }
}

impl PerType for TypeState {
    fn refresh(&mut self, set: &Resources) {
        if let Some(interest) = &mut self.interest {
            self.wanted.refresh(set, |set| interest.pick(set));
        }
    }

    fn wanted(&self) -> &Wanted {
        &self.wanted
    }

    fn answers(&self) -> &Answers {
        &self.answers
    }

    fn sent(&self) -> Option<String> {
        self.sent
            .as_ref()
            .map(|s| s.resources.version().to_owned())
            .or(self.held.clone())
    }

    fn subscribed(&self) -> usize {
        match &self.interest {
            Some(Interest::Names(names)) => names.len(),
            Some(Interest::All) | None => 0,
        }
    }
}

/// One state-of-the-world stream's state: per type, what the proxy asked for, was sent and
/// answered.
#[derive(Debug, Default)]
pub struct SotwStream {
    types: ByType<TypeState>,
    nonces: u64,
}

impl Machine for SotwStream {
    type Req = SotwRequest;
    type Resp = DiscoveryResponse;
    type State = TypeState;
    const MODE: Mode = Mode::StateOfTheWorld;

    fn node(req: &SotwRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn names_in(req: &SotwRequest) -> usize {
        req.resource_names.len()
    }

    fn type_of(req: &SotwRequest) -> &str {
        &req.type_url
    }

    fn types(&self) -> &ByType<TypeState> {
        &self.types
    }

    fn describe(r: &DiscoveryResponse) -> (&str, usize, &str) {
        (&r.type_url, r.resources.len(), &r.version_info)
    }

    fn take_request(&mut self, request: &SotwRequest, snapshot: &Snapshot) -> bool {
        let Some(type_url) = served_type(&request.type_url) else {
            return false;
        };
        // Answers a response that a newer one has replaced, or one never sent: the protocol
        // says ignore. Checked before the type gets a state, which would otherwise stay
        // without a subscription and be counted in every answer's estimate.
        if !request.response_nonce.is_empty()
            && self
                .types
                .get(type_url)
                .and_then(|s| s.sent.as_ref())
                .is_none_or(|s| s.nonce != request.response_nonce)
        {
            return false;
        }
        let state = self.types.entry(type_url);
        let subscribed_before = state.interest.is_some();
        if request.response_nonce.is_empty() {
            if !subscribed_before && !request.version_info.is_empty() {
                // A proxy back from another connection: what it holds needs no resending.
                // Only its first request says so: once it changed its subscription, the
                // version no longer tells what it holds, however often it is repeated.
                state.held = Some(request.version_info.clone());
                state.answers.acked = Some(request.version_info.clone());
            }
        } else if let Some(sent) = &mut state.sent {
            state.answers.answer(
                request.error_detail.as_ref(),
                sent.resources.version(),
                sent.carried.take().unwrap_or(Carried::Names(Vec::new())),
                &sent.resources,
                &request.version_info,
            );
        }
        if Interest::update(
            &mut state.interest,
            type_url,
            &request.resource_names,
            snapshot.set(type_url),
        ) {
            state.wanted.clear();
            if subscribed_before {
                state.forget_unsubscribed();
            }
        }
        true
    }

    /// Sends, after a new snapshot or a request taken in, every type whose wanted set differs
    /// from what the proxy was last sent: the whole set of listeners or clusters, the routes
    /// or endpoints that differ. A response with none (a route config no longer wanted)
    /// still moves the version the proxy ACKs. Removed clusters and endpoints may wait
    /// ([`per_type::Removals`]).
    fn respond(&mut self, snapshot: &Snapshot) -> Vec<DiscoveryResponse> {
        let removals = per_type::refresh(&mut self.types, snapshot);
        let mut out = Vec::new();
        for type_url in PUSH_ORDER {
            let Some(state) = self.types.get_mut(type_url) else {
                continue;
            };
            let Some(mut target) = state.wanted.get().cloned() else {
                continue;
            };
            if removals.wait(type_url)
                && let Some(sent) = &state.sent
            {
                target = target.keeping(&sent.resources);
            }
            let last = state
                .sent
                .as_ref()
                .map(|s| s.resources.version())
                .or(state.held.as_deref());
            if last == Some(target.version()) && !state.resend {
                if state.sent.is_none() {
                    state.sent = Some(Sent {
                        nonce: String::new(),
                        resources: target,
                        carried: None,
                    });
                }
                continue;
            }
            let (resources, carried): (Vec<_>, _) = match &state.sent {
                Some(sent) if !is_wildcard_type(type_url) => {
                    let updated = target.diff(&sent.resources).updated;
                    let names = updated.iter().map(|(n, _)| (*n).clone()).collect();
                    let resources = updated.into_iter().map(|(_, r)| r.any.clone()).collect();
                    (resources, Carried::Names(names))
                }
                _ => (
                    target.iter().map(|(_, r)| r.any.clone()).collect(),
                    Carried::All,
                ),
            };
            self.nonces += 1;
            let nonce = self.nonces.to_string();
            state.answers.resources_sent += resources.len() as u64;
            out.push(DiscoveryResponse {
                version_info: target.version().to_owned(),
                resources,
                type_url: type_url.to_owned(),
                nonce: nonce.clone(),
                ..Default::default()
            });
            state.sent = Some(Sent {
                nonce,
                resources: target,
                carried: Some(carried),
            });
            state.resend = false;
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
        sync::{SyncState, TypeSync},
    };

    fn request(type_url: &str, names: &[&str], version: &str, nonce: &str) -> SotwRequest {
        SotwRequest {
            type_url: type_url.into(),
            resource_names: names
                .iter()
                .map(|n| bytes::Bytes::copy_from_slice(n.as_bytes()))
                .collect(),
            version_info: version.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn ack(r: &DiscoveryResponse, names: &[&str]) -> SotwRequest {
        request(&r.type_url, names, &r.version_info, &r.nonce)
    }

    fn names(r: &DiscoveryResponse) -> Vec<String> {
        r.resources
            .iter()
            .map(|a| String::from_utf8_lossy(&a.value).into_owned())
            .collect()
    }

    /// Connects like Envoy does and ACKs everything; returns the stream.
    fn connected(snap: &Snapshot) -> SotwStream {
        let mut s = SotwStream::default();
        let cds = s.on_request(&request(CLUSTER, &[], "", ""), snap);
        assert_eq!(cds.len(), 1);
        assert!(s.on_request(&ack(&cds[0], &[]), snap).is_empty());
        let eds = s.on_request(&request(ENDPOINT, &["a", "b"], "", ""), snap);
        assert!(s.on_request(&ack(&eds[0], &["a", "b"]), snap).is_empty());
        let lds = s.on_request(&request(LISTENER, &[], "", ""), snap);
        assert!(s.on_request(&ack(&lds[0], &[]), snap).is_empty());
        let rds = s.on_request(&request(ROUTE, &["r"], "", ""), snap);
        assert_eq!(names(&rds[0]), ["r@1"]);
        assert!(s.on_request(&ack(&rds[0], &["r"]), snap).is_empty());
        s
    }

    #[test]
    fn the_response_budget_estimate_covers_what_a_request_is_sent() {
        let snap = mesh_v1();
        let mut s = SotwStream::default();
        for (t, names) in [(CLUSTER, &[][..]), (ENDPOINT, &["a", "b"][..])] {
            assert!(s.take_request(&request(t, names, "", ""), &snap));
            let (out, _) = s.respond_within_estimate(&snap);
            assert!(s.on_request(&ack(&out[0], names), &snap).is_empty());
        }
        // A new snapshot: room for the types that changed, not for the whole snapshot.
        let mut s = connected(&snap);
        let next = snapshot(&[
            (CLUSTER, "a", "1"),
            (CLUSTER, "b", "1"),
            (ENDPOINT, "a", "1"),
            (ENDPOINT, "b", "1"),
            (LISTENER, "l", "1"),
            (ROUTE, "r", "2"),
        ]);
        let (_, estimate) = s.respond_within_estimate(&next);
        assert_eq!(estimate, next.response_bytes(ROUTE));
        assert_eq!(s.answer_bytes(&next), 0, "answered");
    }

    #[test]
    fn subscriptions_get_what_they_name_and_acks_get_nothing_more() {
        let snap = mesh_v1();
        let mut s = SotwStream::default();
        let cds = s.on_request(&request(CLUSTER, &[], "", ""), &snap);
        assert_eq!(names(&cds[0]), ["a@1", "b@1"]);
        let eds = s.on_request(&request(ENDPOINT, &["b", "zzz"], "", ""), &snap);
        assert_eq!(names(&eds[0]), ["b@1"]);
        assert_ne!(cds[0].nonce, eds[0].nonce);
        assert!(s.on_request(&ack(&cds[0], &[]), &snap).is_empty());
        assert!(s.on_request(&ack(&eds[0], &["b", "zzz"]), &snap).is_empty());
        // Widening the subscription sends what the proxy lacks; it keeps b.
        let eds2 = s.on_request(
            &request(ENDPOINT, &["a", "b"], &eds[0].version_info, &eds[0].nonce),
            &snap,
        );
        assert_eq!(names(&eds2[0]), ["a@1"]);
        assert_eq!(
            eds2[0].version_info,
            snap.resources(ENDPOINT).version(),
            "the version is the whole set's"
        );
        assert!(
            s.status()
                .iter()
                .all(|(t, st)| *t == ENDPOINT || st.state() == SyncState::Synced)
        );
    }

    #[test]
    fn an_update_sends_only_changed_types_in_dependency_order() {
        let snap = mesh_v1();
        let mut s = connected(&snap);
        let next = snapshot(&[
            (CLUSTER, "a", "1"),
            (CLUSTER, "b", "1"),
            (CLUSTER, "c", "1"),
            (ENDPOINT, "a", "2"),
            (ENDPOINT, "b", "1"),
            (LISTENER, "l", "1"),
            (ROUTE, "r", "2"),
        ]);
        let out = s.respond(&next);
        let types: Vec<&str> = out.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(types, [CLUSTER, ENDPOINT, ROUTE]);
        assert_eq!(names(&out[0]), ["a@1", "b@1", "c@1"]);
        // Endpoints: only the changed one of those subscribed; c is not subscribed yet.
        assert_eq!(names(&out[1]), ["a@2"]);
        assert_eq!(names(&out[2]), ["r@2"]);
        // The same snapshot again changes nothing.
        assert!(s.respond(&next).is_empty());
    }

    #[test]
    fn a_nack_is_recorded_and_not_retried_and_the_next_change_goes_out() {
        let snap = mesh_v1();
        let mut s = connected(&snap);
        let bad = snapshot(&[
            (CLUSTER, "a", "1"),
            (CLUSTER, "b", "1"),
            (ENDPOINT, "a", "1"),
            (ENDPOINT, "b", "1"),
            (LISTENER, "l", "1"),
            (ROUTE, "r", "bad"),
        ]);
        let out = s.respond(&bad);
        assert_eq!(out.len(), 1);
        let mut nack = request(ROUTE, &["r"], "previous", &out[0].nonce);
        nack.error_detail = Some(Status {
            code: 3,
            message: "invalid regex".into(),
            details: vec![],
        });
        assert!(
            s.on_request(&nack, &bad).is_empty(),
            "never resent in a loop"
        );
        let (_, st) = s
            .status()
            .into_iter()
            .find(|(t, _)| *t == ROUTE)
            .expect("route status");
        assert_eq!(st.state(), SyncState::Nacked);
        assert_eq!(
            st.nack.as_ref().map(|n| n.message.as_str()),
            Some("invalid regex")
        );
        assert!(s.respond(&bad).is_empty());

        let fixed = mesh_v1();
        let out = s.respond(&fixed);
        assert_eq!(names(&out[0]), ["r@1"]);
        assert!(s.on_request(&ack(&out[0], &["r"]), &fixed).is_empty());
        let (_, st) = s
            .status()
            .into_iter()
            .find(|(t, _)| *t == ROUTE)
            .expect("route status");
        assert_eq!(st.state(), SyncState::Synced);
    }

    #[test]
    fn a_request_answering_nothing_sent_leaves_no_state() {
        // Found by fuzzing (crates/fuzz/regressions/sotw): the type got a state without a
        // subscription, which every later answer reserved a response's worth of budget for.
        let snap = mesh_v1();
        let mut s = SotwStream::default();
        assert!(!s.take_request(&request(ROUTE, &["r"], "", "7"), &snap));
        assert!(s.status().is_empty());
        assert_eq!(s.answer_bytes(&snap), 0);
        let cds = s.on_request(&request(CLUSTER, &[], "", ""), &snap);
        assert!(s.on_request(&ack(&cds[0], &[]), &snap).is_empty());
        assert_eq!(s.answer_bytes(&snap), 0, "nothing owed once answered");
    }

    #[test]
    fn a_name_dropped_and_asked_for_again_before_an_answer_is_sent_again() {
        // Found by fuzzing (crates/fuzz/regressions/sotw): Envoy drops the endpoints of a
        // cluster it removes; when the cluster comes back before the server answered, the
        // server took the subscription for unchanged and never sent them again.
        let snap = mesh_v1();
        let mut s = connected(&snap);
        assert!(s.take_request(&request(ENDPOINT, &["b"], "", ""), &snap));
        assert!(s.take_request(&request(ENDPOINT, &["a", "b"], "", ""), &snap));
        let out = s.respond(&snap);
        assert_eq!(out.len(), 1);
        assert_eq!(names(&out[0]), ["a@1"]);
        assert!(s.on_request(&ack(&out[0], &["a", "b"]), &snap).is_empty());
        // Dropping a name alone moves the version the proxy ACKs, with nothing to send.
        assert!(s.take_request(&request(ENDPOINT, &["a"], "", ""), &snap));
        let out = s.respond(&snap);
        assert!(out[0].resources.is_empty());
        assert!(s.on_request(&ack(&out[0], &["a"]), &snap).is_empty());
        assert!(
            s.status()
                .iter()
                .all(|(_, st)| st.state() == SyncState::Synced)
        );
    }

    #[test]
    fn a_proxy_back_that_resubscribes_before_an_answer_is_sent_the_set() {
        // Found by fuzzing (crates/fuzz/regressions/sotw): back from another connection with
        // the current version, the proxy dropped its route configs and asked for them again
        // before the server answered; the server still took the version for what it held.
        let snap = mesh_v1();
        let version = snap.resources(ROUTE).version().to_owned();
        let mut s = SotwStream::default();
        assert!(s.take_request(&request(ROUTE, &["r"], &version, ""), &snap));
        assert!(s.take_request(&request(ROUTE, &[], &version, ""), &snap));
        assert!(s.take_request(&request(ROUTE, &["r"], &version, ""), &snap));
        // Found by fuzzing too: a request repeated took the version for what it held again.
        assert!(s.take_request(&request(ROUTE, &["r"], &version, ""), &snap));
        let out = s.respond(&snap);
        assert_eq!(names(&out[0]), ["r@1"]);
        // Without the detour, what it holds is not sent again.
        let mut again = SotwStream::default();
        assert!(
            again
                .on_request(&request(ROUTE, &["r"], &version, ""), &snap)
                .is_empty()
        );
    }

    #[test]
    fn a_stale_nonce_is_ignored() {
        let snap = mesh_v1();
        let mut s = connected(&snap);
        let v2 = snapshot(&[(LISTENER, "l", "2"), (ROUTE, "r", "1")]);
        let first = s.respond(&v2);
        let v3 = snapshot(&[(LISTENER, "l", "3"), (ROUTE, "r", "1")]);
        let second = s.respond(&v3);
        let lds1 = first.iter().find(|r| r.type_url == LISTENER).expect("lds");
        let lds2 = second.iter().find(|r| r.type_url == LISTENER).expect("lds");
        // A NACK of the replaced response must not mark the newest as rejected.
        let mut late = ack(lds1, &[]);
        late.error_detail = Some(Status::default());
        assert!(s.on_request(&late, &v3).is_empty());
        let (_, st) = s
            .status()
            .into_iter()
            .find(|(t, _)| *t == LISTENER)
            .expect("lds");
        assert_eq!(st.state(), SyncState::Stale);
        s.on_request(&ack(lds2, &[]), &v3);
        let (_, st) = s
            .status()
            .into_iter()
            .find(|(t, _)| *t == LISTENER)
            .expect("lds");
        assert_eq!(st.state(), SyncState::Synced);
    }

    #[test]
    fn a_reconnecting_proxy_is_not_resent_what_it_holds() {
        let snap = mesh_v1();
        let mut first = SotwStream::default();
        let cds = first.on_request(&request(CLUSTER, &[], "", ""), &snap);
        let rds = first.on_request(&request(ROUTE, &["r"], "", ""), &snap);

        let mut again = SotwStream::default();
        assert!(
            again
                .on_request(&request(CLUSTER, &[], &cds[0].version_info, ""), &snap)
                .is_empty()
        );
        assert!(
            again
                .on_request(&request(ROUTE, &["r"], &rds[0].version_info, ""), &snap)
                .is_empty()
        );
        assert!(
            again
                .status()
                .iter()
                .all(|(_, st)| st.state() == SyncState::Synced)
        );
        // What changed while it was away is sent.
        let mut changed = SotwStream::default();
        let newer = snapshot(&[(CLUSTER, "a", "9")]);
        let out = changed.on_request(&request(CLUSTER, &[], &cds[0].version_info, ""), &newer);
        assert_eq!(names(&out[0]), ["a@9"]);
    }

    #[test]
    fn a_removed_cluster_stays_until_the_routes_without_it_are_acked() {
        let snap = mesh_v1();
        let mut s = connected(&snap);
        let without_b = snapshot(&[
            (CLUSTER, "a", "1"),
            (ENDPOINT, "a", "1"),
            (LISTENER, "l", "1"),
            (ROUTE, "r", "2"),
        ]);
        let out = s.respond(&without_b);
        let types: Vec<&str> = out.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(types, [ROUTE], "clusters and endpoints keep b for now");
        let out = s.on_request(&ack(&out[0], &["r"]), &without_b);
        let types: Vec<&str> = out.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(types, [CLUSTER, ENDPOINT]);
        assert_eq!(names(&out[0]), ["a@1"]);
        // The proxy holds a@1 already; b's endpoints go with cluster b, and the new version
        // says the proxy holds the set without them.
        assert!(names(&out[1]).is_empty());
        assert_eq!(out[1].version_info, without_b.resources(ENDPOINT).version());
    }

    fn refusal(r: &DiscoveryResponse, names: &[&str], held: &str) -> SotwRequest {
        let mut nack = request(&r.type_url, names, held, &r.nonce);
        nack.error_detail = Some(Status {
            code: 3,
            message: "invalid regex".into(),
            details: vec![],
        });
        nack
    }

    fn route_status(s: &SotwStream) -> TypeSync {
        s.status()
            .into_iter()
            .find_map(|(t, st)| (t == ROUTE).then_some(st))
            .expect("route status")
    }

    #[test]
    fn a_refused_route_config_keeps_its_clusters_and_its_nack_over_another_ones_ack() {
        // r1 routes to cluster b; its new version routes elsewhere and is refused, so the
        // proxy keeps the old r1, which still needs b.
        let v1 = two_routes("1", "1", true);
        let mut s = SotwStream::default();
        for (t, subscribed) in [
            (CLUSTER, &[][..]),
            (ENDPOINT, &["a", "b"][..]),
            (LISTENER, &[][..]),
            (ROUTE, &["r1", "r2"][..]),
        ] {
            let out = s.on_request(&request(t, subscribed, "", ""), &v1);
            assert!(s.on_request(&ack(&out[0], subscribed), &v1).is_empty());
        }
        let held = v1.resources(ROUTE).version().to_owned();
        let bad = two_routes("bad", "1", false);
        let out = s.respond(&bad);
        assert_eq!(names(&out[0]), ["r1@bad"]);
        assert!(
            s.on_request(&refusal(&out[0], &["r1", "r2"], &held), &bad)
                .is_empty()
        );

        // r2 changes: it alone is sent and ACKed; b stays, and so does the NACK.
        let next = two_routes("bad", "2", false);
        let out = s.respond(&next);
        assert_eq!(out.len(), 1);
        assert_eq!(names(&out[0]), ["r2@2"]);
        assert!(
            s.on_request(&ack(&out[0], &["r1", "r2"]), &next).is_empty(),
            "cluster b is not removed while the proxy runs the old r1"
        );
        let st = route_status(&s);
        assert_eq!(st.acked.as_deref(), Some(next.resources(ROUTE).version()));
        assert_eq!(st.state(), SyncState::Nacked);
        assert_eq!(st.nack.map(|n| n.message), Some("invalid regex".to_owned()));

        // r1 fixed: taken, the NACK is over and b goes.
        let fixed = two_routes("3", "2", false);
        let out = s.respond(&fixed);
        assert_eq!(names(&out[0]), ["r1@3"]);
        let out = s.on_request(&ack(&out[0], &["r1", "r2"]), &fixed);
        let types: Vec<&str> = out.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(types, [CLUSTER, ENDPOINT]);
        assert_eq!(names(&out[0]), ["a@1"]);
        assert_eq!(route_status(&s).state(), SyncState::Synced);
    }

    #[test]
    fn a_change_to_one_route_config_sends_that_one_alone() {
        let two = |r2: &str| {
            snapshot(&[
                (CLUSTER, "a", "1"),
                (ENDPOINT, "a", "1"),
                (LISTENER, "l", "1"),
                (ROUTE, "r1", "1"),
                (ROUTE, "r2", r2),
            ])
        };
        let mut s = SotwStream::default();
        let v1 = two("1");
        for (t, subscribed) in [
            (CLUSTER, &[][..]),
            (ENDPOINT, &["a"][..]),
            (LISTENER, &[][..]),
            (ROUTE, &["r1", "r2"][..]),
        ] {
            let out = s.on_request(&request(t, subscribed, "", ""), &v1);
            assert!(s.on_request(&ack(&out[0], subscribed), &v1).is_empty());
        }
        let v2 = two("2");
        let out = s.respond(&v2);
        assert_eq!(out.len(), 1);
        assert_eq!(names(&out[0]), ["r2@2"]);
        assert_eq!(out[0].version_info, v2.resources(ROUTE).version());
        assert!(s.on_request(&ack(&out[0], &["r1", "r2"]), &v2).is_empty());
        assert!(
            s.status()
                .iter()
                .all(|(_, st)| st.state() == SyncState::Synced)
        );
        // A proxy back from another connection with an older version gets the whole set:
        // what it holds is not known.
        let mut back = SotwStream::default();
        let out = back.on_request(
            &request(ROUTE, &["r1", "r2"], v1.resources(ROUTE).version(), ""),
            &v2,
        );
        assert_eq!(names(&out[0]), ["r1@1", "r2@2"]);
    }
}
