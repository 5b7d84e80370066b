//! Both xDS state machines driven by a small program the bytes spell: snapshots published
//! (shared class layers and a proxy's own, as the publisher builds them), requests of every
//! kind (subscriptions, ACKs, NACKs, stale and garbage nonces, reconnects) and responses
//! taken in by a model of Envoy. Checked on every response: only types asked for, nonces
//! new, resources of the snapshot (or, for removals that wait, ones sent before), named
//! resources only when subscribed, removals only of what is not wanted; after every answer,
//! nothing more owed for the same snapshot; and, once the model has ACKed everything, that
//! it holds what it asked for of the latest snapshot and every type is synced.
// A type is its index in `TYPES`, which every per-type array shares.
#![allow(clippy::needless_range_loop)]

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use envoy_types::pb::{
    envoy::service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    },
    google::{protobuf::Any, rpc::Status},
};
use remora_envoy::EnvoyResource;
use remora_xds::{
    Snapshot,
    delta::DeltaStream,
    snapshot::{CLUSTER, ENDPOINT, LISTENER, Layer, PUSH_ORDER, ResourceMap, Resources},
    sotw::{SotwRequest, SotwStream},
    sync::{SyncState, TypeSync},
};

/// The served types, in push order; a type is its index here.
const TYPES: [&str; 4] = PUSH_ORDER;
/// Resource names of every type.
const NAMES: [&str; 4] = ["a", "b", "c", "d"];
/// Rounds of answering everything before a stream must have nothing more to send.
const SETTLE_ROUNDS: usize = 8;
/// Steps of one program at most, so that an input's run stays short.
const MAX_STEPS: usize = 64;

fn is_wildcard(t: usize) -> bool {
    TYPES[t] == CLUSTER || TYPES[t] == LISTENER
}

fn type_index(type_url: &str) -> usize {
    TYPES
        .iter()
        .position(|t| *t == type_url)
        .unwrap_or_else(|| panic!("a response of a type never served: {type_url:?}"))
}

fn resource(t: usize, name: &str, version: &str) -> Arc<EnvoyResource> {
    Arc::new(EnvoyResource {
        name: name.into(),
        type_url: TYPES[t],
        version: version.into(),
        any: Any {
            type_url: TYPES[t].into(),
            value: format!("{name}@{version}").into_bytes(),
        },
    })
}

/// The name and version a resource body of [`resource`] carries.
fn body(t: usize, any: &Any) -> (String, String) {
    assert_eq!(any.type_url, TYPES[t], "a resource of another type");
    let text = String::from_utf8(any.value.clone()).expect("a body of ours");
    let (name, version) = text.split_once('@').expect("a body of ours");
    (name.to_owned(), version.to_owned())
}

/// A snapshot of every type holding `names`, each at version 1.
pub(crate) fn fixed_snapshot(names: &[&str]) -> Snapshot {
    Snapshot::new((0..TYPES.len()).map(|t| {
        let map = names
            .iter()
            .map(|n| ((*n).to_owned(), resource(t, n, "1")))
            .collect();
        (TYPES[t], Resources::from_map(map))
    }))
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
}

/// The snapshots published so far, with what each type's set should hold, worked out apart
/// from the layers.
struct World {
    snapshot: Snapshot,
    intended: [BTreeMap<String, String>; 4],
    layers: [Arc<Layer>; 4],
    versions: u32,
}

impl World {
    fn new() -> World {
        World {
            snapshot: Snapshot::default(),
            intended: Default::default(),
            layers: std::array::from_fn(|_| Layer::empty()),
            versions: 0,
        }
    }

    /// Three bytes per type: which names it holds and which of them sit in the proxy's own
    /// layer (shadowing a shared entry or not), which keep their version, and whether the
    /// class layer replaces the last one or starts afresh.
    fn publish(&mut self, input: &mut Input) -> Option<()> {
        let mut sets = Vec::new();
        for t in 0..TYPES.len() {
            let (present, split, keep) = (input.byte()?, input.byte()?, input.byte()?);
            let (mut shared, mut own) = (ResourceMap::new(), ResourceMap::new());
            let mut intended = BTreeMap::new();
            for (k, name) in NAMES.iter().enumerate() {
                if present & (1 << k) == 0 {
                    continue;
                }
                let version = match self.intended[t].get(*name) {
                    Some(v) if keep & (1 << k) != 0 => v.clone(),
                    _ => {
                        self.versions += 1;
                        self.versions.to_string()
                    }
                };
                let r = resource(t, name, &version);
                if split & (1 << k) != 0 {
                    if present & (0x10 << k) != 0 {
                        shared.insert((*name).to_owned(), resource(t, name, "hidden"));
                    }
                    own.insert((*name).to_owned(), r);
                } else {
                    shared.insert((*name).to_owned(), r);
                }
                intended.insert((*name).to_owned(), version);
            }
            let layer = if keep & 0x10 != 0 {
                Arc::new(Layer::new(shared))
            } else {
                Layer::next(&self.layers[t], shared)
            };
            self.layers[t] = layer.clone();
            let set = Resources::new(layer, own);
            let merged: BTreeMap<String, String> = set
                .iter()
                .map(|(n, r)| (n.clone(), r.version.clone()))
                .collect();
            assert_eq!(merged, intended, "the layers merge into another set");
            assert_eq!(set.len(), intended.len());
            self.intended[t] = intended;
            sets.push((TYPES[t], set));
        }
        self.snapshot = Snapshot::new(sets);
        Some(())
    }

    fn current(&self, t: usize, name: &str, version: &str) -> bool {
        self.intended[t].get(name).is_some_and(|v| v == version)
    }
}

/// What a flavour's client model shares with the driver.
trait Flavour {
    /// Runs one step; `None` when the input ran out.
    fn step(&mut self, op: u8, input: &mut Input, world: &mut World) -> Option<()>;
}

fn run<F: Flavour>(data: &[u8], mut flavour: F) {
    let mut input = Input(data);
    let mut world = World::new();
    for _ in 0..MAX_STEPS {
        let Some(op) = input.byte() else { break };
        if flavour.step(op, &mut input, &mut world).is_none() {
            break;
        }
    }
}

/// The nonce choices of a request that answers nothing in particular.
fn stray_nonce(choice: u8, latest: Option<&str>) -> String {
    match choice % 4 {
        0 => latest.unwrap_or_default().to_owned(),
        1 => String::new(),
        2 => "0".into(),
        _ => "x".into(),
    }
}

fn nack() -> Status {
    Status {
        code: 3,
        message: "rejected by the fuzzer".into(),
        details: vec![],
    }
}

/// Checks nonces: numbers, each larger than the last.
fn new_nonce(last: &mut u64, nonce: &str) {
    let n: u64 = nonce.parse().expect("a nonce is a number");
    assert!(n > *last, "nonce {n} after {last}");
    *last = n;
}

/// Checks one answer's responses: types in push order, each once.
fn in_push_order<'a>(types: impl Iterator<Item = &'a str>) {
    let order: Vec<usize> = types.map(type_index).collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "types out of push order or twice: {order:?}"
    );
}

/// After an answer, the same snapshot owes nothing more.
fn answered_fully(owed_bytes: usize, again: usize) {
    assert_eq!(owed_bytes, 0, "bytes still owed right after answering");
    assert_eq!(again, 0, "responses to a snapshot already answered");
}

fn all_synced(status: &[(&'static str, TypeSync)]) {
    for (t, st) in status {
        assert_eq!(
            st.state(),
            SyncState::Synced,
            "{t} after everything was ACKed: {st:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// State of the world

/// A state-of-the-world subscription as the proxy last sent it (and the server took it).
#[derive(Clone, Debug)]
struct SotwSub {
    names: Vec<String>,
    all: bool,
}

#[derive(Default)]
struct SotwType {
    sub: Option<SotwSub>,
    held: BTreeMap<String, String>,
    /// The version of the last response ACKed.
    version: String,
    latest_nonce: Option<String>,
    /// Responses taken in and not answered yet, each with whether the subscription changed
    /// since it came: its version then no longer says what the proxy holds.
    pending: Vec<(DiscoveryResponse, bool)>,
    diverged: bool,
    /// The subscription changed since the response last ACKed came: the version no longer
    /// says what the proxy holds (it dropped what it unsubscribed from), so it is not
    /// resumed from.
    resubscribed: bool,
}

#[derive(Default)]
struct Sotw {
    stream: SotwStream,
    types: [SotwType; 4],
    owed: bool,
    last_nonce: u64,
}

/// Bytes as a state-of-the-world stream's program.
pub fn sotw(data: &[u8]) {
    run(data, Sotw::default());
}

impl Sotw {
    fn names(mask: u8) -> Vec<String> {
        let mut names: Vec<String> = NAMES
            .iter()
            .enumerate()
            .filter(|(k, _)| mask & (1 << k) != 0)
            .map(|(_, n)| (*n).to_owned())
            .collect();
        if mask & 0x10 != 0 {
            names.push("*".into());
        }
        if mask & 0x20 != 0 {
            names.push("zzz".into());
        }
        if mask & 0x40 != 0 {
            names.reverse();
        }
        names
    }

    /// Sends a request, mirroring what the server takes in: a request with no nonce or the
    /// latest one sets the subscription.
    fn send(&mut self, t: usize, request: DiscoveryRequest, world: &World) {
        let state = &mut self.types[t];
        let taken = request.response_nonce.is_empty()
            || state.latest_nonce.as_deref() == Some(request.response_nonce.as_str());
        if taken {
            let all = request.resource_names.iter().any(|n| n == "*")
                || (request.resource_names.is_empty() && is_wildcard(t));
            if !all && !is_wildcard(t) {
                state.held.retain(|n, _| request.resource_names.contains(n));
            }
            if state
                .sub
                .as_ref()
                .is_some_and(|s| s.names != request.resource_names)
            {
                state.resubscribed = true;
                for (_, changed) in &mut state.pending {
                    *changed = true;
                }
            }
            state.sub = Some(SotwSub {
                names: request.resource_names.clone(),
                all,
            });
        }
        self.owed |= self
            .stream
            .take_request(&SotwRequest::from(request), &world.snapshot);
        self.stream.most_subscribed();
    }

    fn respond(&mut self, world: &World) {
        if !std::mem::take(&mut self.owed) {
            return;
        }
        self.stream.answer_bytes(&world.snapshot);
        let out = self.stream.respond(&world.snapshot);
        in_push_order(out.iter().map(|r| r.type_url.as_str()));
        answered_fully(
            self.stream.answer_bytes(&world.snapshot),
            self.stream.respond(&world.snapshot).len(),
        );
        for r in out {
            self.receive(r, world);
        }
    }

    fn receive(&mut self, r: DiscoveryResponse, world: &World) {
        let t = type_index(&r.type_url);
        new_nonce(&mut self.last_nonce, &r.nonce);
        let state = &mut self.types[t];
        let sub = state
            .sub
            .as_ref()
            .expect("a response of a type never asked for");
        let mut names = BTreeMap::new();
        for any in &r.resources {
            let (name, version) = body(t, any);
            // A cluster response carries the whole set, with the clusters whose removal
            // waits (they left the snapshot or the subscription) as the proxy holds them.
            let kept = TYPES[t] == CLUSTER && state.held.get(&name) == Some(&version);
            assert!(
                kept || sub.all || sub.names.contains(&name),
                "{name} sent, not subscribed: {sub:?}"
            );
            assert!(
                kept || world.current(t, &name, &version),
                "{name}@{version} of {} is not in the snapshot",
                TYPES[t]
            );
            assert!(
                names.insert(name, version).is_none(),
                "a resource sent twice"
            );
        }
        if is_wildcard(t) {
            state.held = names;
        } else {
            state.held.extend(names);
        }
        state.latest_nonce = Some(r.nonce.clone());
        state.pending.push((r, false));
    }

    /// Answers the oldest response of `t` not answered yet.
    fn answer(&mut self, t: usize, rejected: bool, world: &World) {
        if self.types[t].pending.is_empty() {
            return;
        }
        let (r, changed) = self.types[t].pending.remove(0);
        let state = &mut self.types[t];
        let names = state
            .sub
            .as_ref()
            .map(|s| s.names.clone())
            .unwrap_or_default();
        let request = DiscoveryRequest {
            type_url: r.type_url.clone(),
            resource_names: names,
            response_nonce: r.nonce.clone(),
            version_info: if rejected {
                state.version.clone()
            } else {
                r.version_info.clone()
            },
            error_detail: rejected.then(nack),
            ..Default::default()
        };
        if rejected {
            state.diverged = true;
        } else {
            state.version = r.version_info;
            state.resubscribed = changed;
        }
        self.send(t, request, world);
    }

    fn settle(&mut self, world: &World) {
        for _ in 0..SETTLE_ROUNDS {
            for t in 0..TYPES.len() {
                while !self.types[t].pending.is_empty() {
                    self.answer(t, false, world);
                }
            }
            self.respond(world);
            if self.types.iter().all(|s| s.pending.is_empty()) {
                break;
            }
        }
        assert!(
            self.types.iter().all(|s| s.pending.is_empty()),
            "still sending after {SETTLE_ROUNDS} rounds of ACKs"
        );
        let routes_stuck = self.types[2].diverged || self.types[3].diverged;
        for (t, state) in self.types.iter().enumerate() {
            let Some(sub) = &state.sub else { continue };
            if state.diverged {
                continue;
            }
            let expected: BTreeMap<&String, &String> = world.intended[t]
                .iter()
                .filter(|(n, _)| sub.all || sub.names.contains(n))
                .collect();
            for (name, version) in &expected {
                assert_eq!(
                    state.held.get(*name),
                    Some(*version),
                    "{} {name} not held at the snapshot's version after ACKing everything",
                    TYPES[t]
                );
            }
            // A listener or cluster response carries the whole set; a removed cluster may
            // stay while routes are not settled.
            if TYPES[t] == LISTENER || (TYPES[t] == CLUSTER && !routes_stuck) {
                assert_eq!(
                    state.held.len(),
                    expected.len(),
                    "{} holds more than the snapshot: {:?}",
                    TYPES[t],
                    state.held
                );
            }
        }
        if self.types.iter().all(|s| !s.diverged) {
            all_synced(&self.stream.status());
        }
    }

    fn reconnect(&mut self, world: &World) {
        self.stream = SotwStream::default();
        self.owed = false;
        self.last_nonce = 0;
        for t in 0..TYPES.len() {
            let state = &mut self.types[t];
            let Some(sub) = state.sub.clone() else {
                continue;
            };
            // What it holds is the set of its last ACKed version only when it rejected
            // nothing, answered everything and kept its subscription since; otherwise it
            // asks afresh (SotW cannot say more: see FUZZING.md).
            if state.diverged || state.resubscribed || !state.pending.is_empty() {
                state.version.clear();
            }
            state.resubscribed = false;
            state.pending.clear();
            state.latest_nonce = None;
            state.diverged = false;
            let request = DiscoveryRequest {
                type_url: TYPES[t].into(),
                resource_names: sub.names,
                version_info: state.version.clone(),
                ..Default::default()
            };
            self.send(t, request, world);
        }
    }
}

impl Flavour for Sotw {
    fn step(&mut self, op: u8, input: &mut Input, world: &mut World) -> Option<()> {
        let t = usize::from(op >> 4) % TYPES.len();
        match op % 8 {
            0 => {
                world.publish(input)?;
                self.owed = true;
            }
            1 | 2 => {
                let (mask, how) = (input.byte()?, input.byte()?);
                let state = &self.types[t];
                let nonce = stray_nonce(how, state.latest_nonce.as_deref());
                // Naming the latest response, the version is the one the proxy runs.
                let truthful = state.latest_nonce.as_ref() == Some(&nonce);
                let request = DiscoveryRequest {
                    type_url: TYPES[t].into(),
                    resource_names: Sotw::names(mask),
                    version_info: if how & 4 != 0 && !truthful {
                        String::new()
                    } else {
                        state.version.clone()
                    },
                    response_nonce: nonce,
                    ..Default::default()
                };
                self.send(t, request, world);
                if op % 8 == 2 {
                    self.respond(world);
                }
            }
            3 => self.respond(world),
            4 | 5 => self.answer(t, op & 0x08 != 0 && op % 8 == 5, world),
            6 => self.settle(world),
            _ => {
                if op & 0x80 != 0 {
                    self.reconnect(world);
                } else {
                    // A type nobody serves, and garbage: taken in as nothing.
                    let request = DiscoveryRequest {
                        type_url: "type.googleapis.com/remora.Unknown".into(),
                        resource_names: vec!["a".into()],
                        response_nonce: "1".into(),
                        ..Default::default()
                    };
                    assert!(
                        !self
                            .stream
                            .take_request(&SotwRequest::from(request), &world.snapshot)
                    );
                }
            }
        }
        Some(())
    }
}

// ---------------------------------------------------------------------------------------
// Incremental

/// An incremental subscription as the server keeps it.
#[derive(Clone, Debug, Default)]
struct DeltaSub {
    wildcard: bool,
    names: BTreeSet<String>,
}

#[derive(Default)]
struct DeltaType {
    sub: Option<DeltaSub>,
    held: BTreeMap<String, String>,
    pending: Vec<DeltaDiscoveryResponse>,
    diverged: bool,
}

#[derive(Default)]
struct Delta {
    stream: DeltaStream,
    types: [DeltaType; 4],
    owed: bool,
    last_nonce: u64,
}

/// Bytes as an incremental stream's program.
pub fn delta(data: &[u8]) {
    run(data, Delta::default());
}

impl Delta {
    fn names(mask: u8, star: bool) -> Vec<String> {
        let mut names: Vec<String> = NAMES
            .iter()
            .enumerate()
            .filter(|(k, _)| mask & (1 << k) != 0)
            .map(|(_, n)| (*n).to_owned())
            .collect();
        if star {
            names.push("*".into());
        }
        names
    }

    /// Sends a request, mirroring the subscription the server keeps: the first request of
    /// a wildcard type without names subscribes to all of it; `*` adds or drops the wildcard.
    fn send(&mut self, t: usize, request: DeltaDiscoveryRequest, world: &World) {
        let state = &mut self.types[t];
        let first = state.sub.is_none();
        let sub = state.sub.get_or_insert_with(DeltaSub::default);
        if first && request.resource_names_subscribe.is_empty() && is_wildcard(t) {
            sub.wildcard = true;
        }
        for name in &request.resource_names_subscribe {
            if name == "*" {
                sub.wildcard = true;
            } else {
                sub.names.insert(name.clone());
            }
        }
        for name in &request.resource_names_unsubscribe {
            if name == "*" {
                sub.wildcard = false;
            } else {
                sub.names.remove(name);
            }
        }
        if !sub.wildcard {
            state.held.retain(|n, _| sub.names.contains(n));
        }
        self.owed |= self.stream.take_request(&request, &world.snapshot);
        self.stream.most_subscribed();
    }

    fn respond(&mut self, world: &World) {
        if !std::mem::take(&mut self.owed) {
            return;
        }
        self.stream.answer_bytes(&world.snapshot);
        let out = self.stream.respond(&world.snapshot);
        in_push_order(out.iter().map(|r| r.type_url.as_str()));
        answered_fully(
            self.stream.answer_bytes(&world.snapshot),
            self.stream.respond(&world.snapshot).len(),
        );
        for r in out {
            self.receive(r, world);
        }
    }

    fn receive(&mut self, r: DeltaDiscoveryResponse, world: &World) {
        let t = type_index(&r.type_url);
        new_nonce(&mut self.last_nonce, &r.nonce);
        let state = &mut self.types[t];
        let sub = state
            .sub
            .as_ref()
            .expect("a response of a type never asked for");
        let wanted = |n: &str| sub.wildcard || sub.names.contains(n);
        for x in &r.resources {
            let any = x.resource.as_ref().expect("a resource with a body");
            assert_eq!(body(t, any), (x.name.clone(), x.version.clone()));
            assert!(wanted(&x.name), "{} sent, not subscribed: {sub:?}", x.name);
            assert!(
                world.current(t, &x.name, &x.version),
                "{}@{} of {} is not in the snapshot",
                x.name,
                x.version,
                TYPES[t]
            );
            assert!(!r.removed_resources.contains(&x.name), "sent and removed");
        }
        for name in &r.removed_resources {
            assert!(
                !(wanted(name) && world.intended[t].contains_key(name)),
                "{name} of {} removed, yet subscribed and in the snapshot",
                TYPES[t]
            );
        }
        for x in &r.resources {
            state.held.insert(x.name.clone(), x.version.clone());
        }
        for name in &r.removed_resources {
            state.held.remove(name);
        }
        state.pending.push(r);
    }

    fn answer(&mut self, t: usize, rejected: bool, world: &World) {
        if self.types[t].pending.is_empty() {
            return;
        }
        let r = self.types[t].pending.remove(0);
        if rejected {
            self.types[t].diverged = true;
        }
        let request = DeltaDiscoveryRequest {
            type_url: r.type_url,
            response_nonce: r.nonce,
            error_detail: rejected.then(nack),
            ..Default::default()
        };
        self.send(t, request, world);
    }

    fn settle(&mut self, world: &World) {
        for _ in 0..SETTLE_ROUNDS {
            for t in 0..TYPES.len() {
                while !self.types[t].pending.is_empty() {
                    self.answer(t, false, world);
                }
            }
            self.respond(world);
            if self.types.iter().all(|s| s.pending.is_empty()) {
                break;
            }
        }
        assert!(
            self.types.iter().all(|s| s.pending.is_empty()),
            "still sending after {SETTLE_ROUNDS} rounds of ACKs"
        );
        let routes_stuck = self.types[2].diverged || self.types[3].diverged;
        for (t, state) in self.types.iter().enumerate() {
            let Some(sub) = &state.sub else { continue };
            if state.diverged {
                continue;
            }
            let expected: BTreeMap<String, String> = world.intended[t]
                .iter()
                .filter(|(n, _)| sub.wildcard || sub.names.contains(*n))
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
            let may_keep = routes_stuck && (TYPES[t] == CLUSTER || TYPES[t] == ENDPOINT);
            if may_keep {
                for (name, version) in &expected {
                    assert_eq!(state.held.get(name), Some(version), "{} {name}", TYPES[t]);
                }
            } else {
                assert_eq!(
                    state.held, expected,
                    "{} after ACKing everything: held and wanted differ",
                    TYPES[t]
                );
            }
        }
        if self.types.iter().all(|s| !s.diverged) {
            all_synced(&self.stream.status());
        }
    }

    fn reconnect(&mut self, world: &World) {
        self.stream = DeltaStream::default();
        self.owed = false;
        self.last_nonce = 0;
        for t in 0..TYPES.len() {
            let state = &mut self.types[t];
            let Some(sub) = state.sub.take() else {
                continue;
            };
            state.pending.clear();
            state.diverged = false;
            let mut subscribe: Vec<String> = sub.names.iter().cloned().collect();
            if sub.wildcard && !(subscribe.is_empty() && is_wildcard(t)) {
                subscribe.push("*".into());
            }
            let request = DeltaDiscoveryRequest {
                type_url: TYPES[t].into(),
                resource_names_subscribe: subscribe,
                initial_resource_versions: state
                    .held
                    .iter()
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect(),
                ..Default::default()
            };
            self.send(t, request, world);
            if !sub.wildcard && sub.names.is_empty() && is_wildcard(t) {
                // Subscribed to nothing of a wildcard type: the reconnect above asked for
                // all of it, as the protocol reads an empty first request; say so again.
                let request = DeltaDiscoveryRequest {
                    type_url: TYPES[t].into(),
                    resource_names_unsubscribe: vec!["*".into()],
                    ..Default::default()
                };
                self.send(t, request, world);
            }
        }
    }
}

impl Flavour for Delta {
    fn step(&mut self, op: u8, input: &mut Input, world: &mut World) -> Option<()> {
        let t = usize::from(op >> 4) % TYPES.len();
        match op % 8 {
            0 => {
                world.publish(input)?;
                self.owed = true;
            }
            1 | 2 => {
                let (subscribe, unsubscribe, how) = (input.byte()?, input.byte()?, input.byte()?);
                let request = DeltaDiscoveryRequest {
                    type_url: TYPES[t].into(),
                    resource_names_subscribe: Delta::names(subscribe, subscribe & 0x10 != 0),
                    resource_names_unsubscribe: Delta::names(unsubscribe, unsubscribe & 0x10 != 0),
                    // Never a nonce in flight: only an answer may name one.
                    response_nonce: stray_nonce(1 + how % 3, None),
                    error_detail: (how & 8 != 0).then(nack),
                    ..Default::default()
                };
                self.send(t, request, world);
                if op % 8 == 2 {
                    self.respond(world);
                }
            }
            3 => self.respond(world),
            4 | 5 => self.answer(t, op & 0x08 != 0 && op % 8 == 5, world),
            6 => self.settle(world),
            _ => {
                if op & 0x80 != 0 {
                    self.reconnect(world);
                } else {
                    let request = DeltaDiscoveryRequest {
                        type_url: String::new(),
                        resource_names_subscribe: vec!["a".into()],
                        ..Default::default()
                    };
                    assert!(!self.stream.take_request(&request, &world.snapshot));
                }
            }
        }
        Some(())
    }
}
