//! The simulated proxies. Each one is what a sidecar Envoy does on ADS, minus applying the
//! config: its own HTTP/2 connection, its identity in the node of its first request, CDS and
//! LDS as wildcards, EDS and RDS for the names its clusters and listeners refer to, and an
//! ACK (version and nonce) for every response, in state-of-the-world or incremental mode.
//!
//! Each proxy reports to the driver through [`Note`]s: when it first holds a complete config,
//! and, once the driver has told it what a change must bring it, when it ACKed the response
//! that completed that. It logs every response it receives after a change started, so the
//! driver can also count the responses that went to proxies the change did not affect.
//!
//! A proxy keeps no config of its own: a response is decoded only as far as the protocol
//! needs (type, version, nonce, each resource's body hashed to find its shared catalog entry),
//! and what a proxy holds of a type is a [`Set`] shared with every proxy that holds the
//! same, so ten thousand proxies of the unscoped mesh fit where the server is measured.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use envoy_types::pb::{
    envoy::{
        config::core::v3::Node,
        service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest},
    },
    google::protobuf::{Struct, Value, value::Kind},
};
use prost::Message;
use remora_xds::{
    ProxyId,
    snapshot::{CLUSTER, ENDPOINT, LISTENER, ROUTE, is_wildcard_type, served_type},
};
use tokio::sync::{Semaphore, mpsc, watch};
use tonic::{Status, transport::Endpoint};

use crate::{
    catalog::{Catalog, DecodeError, Entry, Set},
    wire::{self, DeltaResponse, SotwResponse},
};

/// Requests waiting to be written to one stream: an ACK and a subscription change at most
/// per response, so a few are plenty.
const OUTBOX: usize = 16;
/// How long one proxy may take to connect and open its stream.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// The two flavours of ADS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// State of the world: every response carries the whole set of its type.
    Sotw,
    /// Incremental: responses carry what changed and name what was removed.
    Delta,
}

/// The types a proxy subscribes to by name, each after the type that names them.
const DEPENDENT: [(&str, &str); 2] = [(CLUSTER, ENDPOINT), (LISTENER, ROUTE)];

/// What a proxy tells the driver.
#[derive(Debug)]
pub enum Note {
    /// The proxy first held every resource its config refers to.
    Synced { at: Instant },
    /// The proxy ACKed the response that brought what round `round` expects of it.
    Converged { round: u32, at: Instant },
    /// The proxy's stream failed; it is not retried.
    Failed { error: String },
}

/// One resource a change must bring a proxy to: this version of it, or (`None`) its removal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub type_url: &'static str,
    pub name: Arc<str>,
    pub version: Option<u64>,
}

/// The change under way, as far as the driver knows it.
#[derive(Clone, Debug, Default)]
pub struct Round {
    /// 0 until the first change.
    pub number: u32,
    /// When the driver asked the server for the change; responses from then on are logged.
    pub started: Option<Instant>,
    /// By proxy index, what each affected proxy must end up with; `None` until the server
    /// has reported the change.
    pub expected: Option<Arc<HashMap<usize, Vec<Expected>>>>,
}

/// One response received during a round, as the proxy logged it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub round: u32,
    /// When the proxy had handed its ACK of this response to the connection.
    pub acked: Instant,
    pub type_url: &'static str,
    /// Every resource the response carried, shared with the proxies that got the same.
    pub carried: Arc<Set>,
    pub removed: Vec<Arc<str>>,
    /// A state-of-the-world response: what it does not carry, the proxy no longer holds.
    pub full: bool,
}

/// What a proxy's task returns when it ends.
#[derive(Debug)]
pub struct Outcome {
    pub log: Vec<Logged>,
    /// Why the proxy does not hold a complete config, if it does not.
    pub incomplete: Option<String>,
}

/// What every proxy shares.
pub struct Fleet {
    pub endpoint: Endpoint,
    pub mode: Mode,
    pub catalog: Catalog,
    /// Bounds how many proxies are connecting at once, as a real fleet's connections
    /// arrive spread out rather than in one burst the listen backlog would drop.
    pub connecting: Semaphore,
    pub notes: mpsc::UnboundedSender<Note>,
    pub round: watch::Receiver<Round>,
    pub stop: watch::Receiver<bool>,
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("the stream failed: {0}")]
    Status(#[from] Status),
    #[error("opening the stream took over {OPEN_TIMEOUT:?}")]
    OpenTimeout,
    #[error("the server ended the stream")]
    Ended,
    #[error("the server sent type {0:?}, which nobody asked for")]
    UnknownType(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("cannot decode a response: {0}")]
    Response(#[from] prost::DecodeError),
    #[error("{type_url} {name}: the server's version {stated} is not its content's {actual:016x}")]
    Version {
        type_url: &'static str,
        name: String,
        stated: String,
        actual: u64,
    },
    #[error("an incremental response carried {0} without a body")]
    NoBody(String),
}

/// Runs one proxy until the fleet stops.
pub async fn run(fleet: Arc<Fleet>, index: usize, proxy: ProxyId) -> Outcome {
    let mut held = Held::default();
    let mut log = Vec::new();
    let result = match fleet.mode {
        Mode::Sotw => stream::<Sotw>(&fleet, index, &proxy, &mut held, &mut log).await,
        Mode::Delta => stream::<Delta>(&fleet, index, &proxy, &mut held, &mut log).await,
    };
    if let Err(e) = result {
        // The driver may be gone already when it stops everything; nothing to tell then.
        let _ = fleet.notes.send(Note::Failed {
            error: format!("{proxy}: {e}"),
        });
    }
    Outcome {
        log,
        incomplete: held.synced().err(),
    }
}

/// One flavour of the protocol, as a proxy speaks it.
trait Flavour: Default + Send + 'static {
    type Req: Message + Send + 'static;
    /// The response reduced to what the proxy reads of it ([`wire`]).
    type Resp: Message + Default + Send + 'static;
    /// The ADS method.
    const PATH: &'static str;
    /// The wildcard CDS (carrying the node, as Envoy sends it only once) and LDS requests.
    fn first(node: Node) -> [Self::Req; 2];
    /// Takes in a response: updates what the proxy holds, and returns what to log and the
    /// ACK.
    fn take(
        &mut self,
        response: Self::Resp,
        held: &mut Held,
        catalog: &Catalog,
    ) -> Result<(Logged, Self::Req), StreamError>;
    /// The request that changes the subscription of `type_url` from `old` to `new` (both
    /// sorted).
    fn resubscribe(&self, type_url: &'static str, old: &[Arc<str>], new: &[Arc<str>]) -> Self::Req;
}

/// A request as its bytes on the wire.
fn framed(request: &impl Message) -> Result<Bytes, StreamError> {
    Ok(remora_xds::grpc::frame(request)?.into())
}

async fn stream<F: Flavour>(
    fleet: &Fleet,
    index: usize,
    proxy: &ProxyId,
    held: &mut Held,
    log: &mut Vec<Logged>,
) -> Result<(), StreamError> {
    let mut stop = fleet.stop.clone();
    let mut round = fleet.round.clone();
    let (tx, rx) = mpsc::channel(OUTBOX);
    let mut inbound = {
        let _permit = tokio::select! {
            permit = fleet.connecting.acquire() => permit,
            _ = stopped(&mut stop) => return Ok(()),
        };
        let open = async {
            let mut channel = fleet.endpoint.connect().await?;
            for req in F::first(node(proxy)) {
                // The receiver is in the request stream, alive until the call ends.
                let _ = tx.send(framed(&req)?).await;
            }
            Ok::<_, StreamError>(wire::open(&mut channel, F::PATH, rx).await?)
        };
        tokio::time::timeout(OPEN_TIMEOUT, open)
            .await
            .map_err(|_| StreamError::OpenTimeout)??
    };
    let mut flavour = F::default();
    let mut synced = false;
    let mut converged_round = 0;
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return Ok(()),
            changed = round.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            msg = inbound.message() => {
                let bytes = msg?.ok_or(StreamError::Ended)?;
                let received = Instant::now();
                let response = F::Resp::decode(bytes)?;
                let (mut logged, ack) = flavour.take(response, held, &fleet.catalog)?;
                let mut requests = vec![framed(&ack)?];
                if let Some((parent, child)) =
                    DEPENDENT.iter().find(|(p, _)| *p == logged.type_url)
                    && let Some(now) = held.types.get(parent)
                {
                    let old = held.subscription(child);
                    if now.refs() != old {
                        requests.push(framed(&flavour.resubscribe(child, old, now.refs()))?);
                        held.subscribed.insert(child, now.clone());
                    }
                }
                for req in requests {
                    if tx.send(req).await.is_err() {
                        return Err(StreamError::Ended);
                    }
                }
                logged.acked = Instant::now();
                let current = round.borrow();
                if current.started.is_some_and(|s| received >= s) {
                    logged.round = current.number;
                    log.push(logged);
                }
                drop(current);
                if !synced && held.synced().is_ok() {
                    synced = true;
                    // Now: the ACK that completed the config has just been handed over.
                    let _ = fleet.notes.send(Note::Synced { at: Instant::now() });
                }
            }
        }
        let current = round.borrow().clone();
        if current.number > converged_round
            && let Some(expected) = current.expected.as_ref().and_then(|e| e.get(&index))
            && let Some(at) = converged_at(log, current.number, expected)
        {
            converged_round = current.number;
            let _ = fleet.notes.send(Note::Converged {
                round: current.number,
                at,
            });
        }
    }
}

/// Resolves once the fleet is told to stop. The guard `wait_for` returns is dropped here, as
/// it must not be held across an await.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The identity a sidecar's bootstrap gives it (see `remora bootstrap`).
fn node(proxy: &ProxyId) -> Node {
    let text = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    };
    Node {
        id: proxy.to_string(),
        cluster: proxy.namespace.clone(),
        metadata: Some(Struct {
            fields: [
                ("NAMESPACE".to_owned(), text(&proxy.namespace)),
                ("POD_NAME".to_owned(), text(&proxy.name)),
            ]
            .into_iter()
            .collect(),
        }),
        ..Default::default()
    }
}

/// When the proxy had ACKed everything `expected` asks of round `round`: the latest of the
/// first ACKs that brought each expected resource (or its removal). `None` while something
/// is still missing.
pub fn converged_at(log: &[Logged], round: u32, expected: &[Expected]) -> Option<Instant> {
    let mut latest = None;
    for e in expected {
        let first = log.iter().find(|l| {
            l.round == round
                && l.type_url == e.type_url
                && match e.version {
                    Some(v) => l.carried.get(&e.name).is_some_and(|c| c.version == v),
                    None => {
                        l.removed.contains(&e.name) || (l.full && l.carried.get(&e.name).is_none())
                    }
                }
        })?;
        latest = latest.max(Some(first.acked));
    }
    latest
}

/// What one proxy holds and asked for: shared sets, no resources of its own.
#[derive(Debug, Default)]
pub struct Held {
    /// By type.
    types: BTreeMap<&'static str, Arc<Set>>,
    /// By EDS and RDS: the clusters or listeners whose references were last subscribed to.
    subscribed: BTreeMap<&'static str, Arc<Set>>,
}

impl Held {
    /// An incremental response: what changed, and what went.
    fn update(
        &mut self,
        catalog: &Catalog,
        type_url: &'static str,
        entries: &[Arc<Entry>],
        removed: &[Arc<str>],
    ) {
        // A whole copy for a few changes, but only for the moment of building the new set.
        let mut by_name: BTreeMap<&str, &Arc<Entry>> = self
            .types
            .get(type_url)
            .into_iter()
            .flat_map(|s| s.entries())
            .map(|e| (&*e.name, e))
            .collect();
        for name in removed {
            by_name.remove(&**name);
        }
        by_name.extend(entries.iter().map(|e| (&*e.name, e)));
        let set = catalog.set(type_url, by_name.into_values().cloned().collect());
        self.types.insert(type_url, set);
    }

    /// The names of `child` resources that the held resources of its parent type refer to.
    fn wanted(&self, child: &str) -> &[Arc<str>] {
        DEPENDENT
            .iter()
            .find(|(_, c)| *c == child)
            .and_then(|(parent, _)| self.types.get(parent))
            .map_or(&[], |s| s.refs())
    }

    /// The names of `child` resources last subscribed to.
    fn subscription(&self, child: &str) -> &[Arc<str>] {
        self.subscribed.get(child).map_or(&[], |s| s.refs())
    }

    /// Whether the proxy has a complete config: clusters and listeners, and every endpoint
    /// set and route config they name. The error says what is missing.
    fn synced(&self) -> Result<(), String> {
        for (parent, child) in DEPENDENT {
            if !self.types.contains_key(parent) {
                return Err(format!("no response of {parent} yet"));
            }
            let wanted = self.wanted(child);
            let held = self.types.get(child);
            let missing: Vec<&str> = wanted
                .iter()
                .filter(|n| held.is_none_or(|h| h.get(n).is_none()))
                .map(|n| &**n)
                .collect();
            if let Some(first) = missing.first() {
                return Err(format!(
                    "{} of the {} {child} named by its {parent} never arrived, e.g. {first:?}",
                    missing.len(),
                    wanted.len(),
                ));
            }
        }
        Ok(())
    }
}

/// State of the world: the proxy remembers the last version and nonce of each type, which
/// every later request of that type carries.
#[derive(Default)]
struct Sotw {
    last: BTreeMap<&'static str, (String, String)>,
}

impl Flavour for Sotw {
    type Req = DiscoveryRequest;
    type Resp = SotwResponse;
    const PATH: &'static str = wire::SOTW_PATH;

    fn first(node: Node) -> [DiscoveryRequest; 2] {
        [
            DiscoveryRequest {
                node: Some(node),
                type_url: CLUSTER.into(),
                ..Default::default()
            },
            DiscoveryRequest {
                type_url: LISTENER.into(),
                ..Default::default()
            },
        ]
    }

    fn take(
        &mut self,
        r: SotwResponse,
        held: &mut Held,
        catalog: &Catalog,
    ) -> Result<(Logged, DiscoveryRequest), StreamError> {
        let type_url = served_type(&r.type_url).ok_or(StreamError::UnknownType(r.type_url))?;
        let bodies: Vec<&[u8]> = r.resources.iter().map(|p| &*p.value).collect();
        let entries = catalog.entries(type_url, &bodies)?;
        // Listeners and clusters come as a whole set each time. A response of routes or
        // endpoints may carry only some, and Envoy keeps those it leaves out; one goes only
        // when no listener or cluster names it any more.
        let full = is_wildcard_type(type_url);
        let set = catalog.set(type_url, entries.clone());
        if full {
            held.types.insert(type_url, set.clone());
        } else {
            let wanted = held.wanted(type_url);
            let unwanted: Vec<Arc<str>> = held
                .types
                .get(type_url)
                .into_iter()
                .flat_map(|s| s.entries())
                .filter(|e| wanted.binary_search(&e.name).is_err())
                .map(|e| e.name.clone())
                .collect();
            held.update(catalog, type_url, &entries, &unwanted);
        }
        self.last
            .insert(type_url, (r.version_info.clone(), r.nonce.clone()));
        let ack = DiscoveryRequest {
            version_info: r.version_info,
            response_nonce: r.nonce,
            type_url: type_url.into(),
            // A state-of-the-world request always names the whole subscription.
            resource_names: held
                .subscription(type_url)
                .iter()
                .map(|n| n.to_string())
                .collect(),
            ..Default::default()
        };
        let logged = Logged {
            round: 0,
            acked: Instant::now(),
            type_url,
            carried: set,
            removed: Vec::new(),
            full,
        };
        Ok((logged, ack))
    }

    fn resubscribe(
        &self,
        type_url: &'static str,
        _old: &[Arc<str>],
        new: &[Arc<str>],
    ) -> DiscoveryRequest {
        let (version_info, response_nonce) = self.last.get(type_url).cloned().unwrap_or_default();
        DiscoveryRequest {
            version_info,
            response_nonce,
            type_url: type_url.into(),
            resource_names: new.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        }
    }
}

/// Incremental: the proxy keeps no per-type protocol state; subscriptions change by
/// difference.
#[derive(Default)]
struct Delta;

impl Flavour for Delta {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaResponse;
    const PATH: &'static str = wire::DELTA_PATH;

    fn first(node: Node) -> [DeltaDiscoveryRequest; 2] {
        [
            DeltaDiscoveryRequest {
                node: Some(node),
                type_url: CLUSTER.into(),
                ..Default::default()
            },
            DeltaDiscoveryRequest {
                type_url: LISTENER.into(),
                ..Default::default()
            },
        ]
    }

    fn take(
        &mut self,
        r: DeltaResponse,
        held: &mut Held,
        catalog: &Catalog,
    ) -> Result<(Logged, DeltaDiscoveryRequest), StreamError> {
        let type_url = served_type(&r.type_url).ok_or(StreamError::UnknownType(r.type_url))?;
        let bodies = r
            .resources
            .iter()
            .map(|res| {
                res.resource
                    .as_ref()
                    .map(|p| &*p.value)
                    .ok_or_else(|| StreamError::NoBody(res.name.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let entries = catalog.entries(type_url, &bodies)?;
        for (res, entry) in r.resources.iter().zip(&entries) {
            // Incremental responses state each resource's version; it must be the content's,
            // or a proxy reconnecting with `initial_resource_versions` would be misled.
            if u64::from_str_radix(&res.version, 16).ok() != Some(entry.version)
                || *entry.name != res.name
            {
                return Err(StreamError::Version {
                    type_url,
                    name: res.name.clone(),
                    stated: res.version.clone(),
                    actual: entry.version,
                });
            }
        }
        let removed: Vec<Arc<str>> = r
            .removed_resources
            .iter()
            .map(|n| Arc::from(n.as_str()))
            .collect();
        held.update(catalog, type_url, &entries, &removed);
        let ack = DeltaDiscoveryRequest {
            type_url: type_url.into(),
            response_nonce: r.nonce,
            ..Default::default()
        };
        let logged = Logged {
            round: 0,
            acked: Instant::now(),
            type_url,
            carried: catalog.set(type_url, entries),
            removed,
            full: false,
        };
        Ok((logged, ack))
    }

    fn resubscribe(
        &self,
        type_url: &'static str,
        old: &[Arc<str>],
        new: &[Arc<str>],
    ) -> DeltaDiscoveryRequest {
        let missing_from = |set: &[Arc<str>], n: &Arc<str>| set.binary_search(n).is_err();
        DeltaDiscoveryRequest {
            type_url: type_url.into(),
            resource_names_subscribe: new
                .iter()
                .filter(|n| missing_from(old, n))
                .map(|n| n.to_string())
                .collect(),
            resource_names_unsubscribe: old
                .iter()
                .filter(|n| missing_from(new, n))
                .map(|n| n.to_string())
                .collect(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(round: u32, at: Instant, carried: &[(&str, u64)], full: bool) -> Logged {
        let entries = carried
            .iter()
            .map(|(n, v)| {
                Arc::new(Entry {
                    name: (*n).into(),
                    version: *v,
                    refs: Box::new([]),
                })
            })
            .collect();
        Logged {
            round,
            acked: at,
            type_url: ROUTE,
            carried: Catalog::default().set(ROUTE, entries),
            removed: Vec::new(),
            full,
        }
    }

    fn expect(name: &str, version: Option<u64>) -> Expected {
        Expected {
            type_url: ROUTE,
            name: name.into(),
            version,
        }
    }

    #[test]
    fn convergence_is_the_ack_that_completed_every_expectation() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let log = [
            // An older round's response does not count for this one.
            logged(1, at(1), &[("8080", 7)], true),
            logged(2, at(5), &[("8080", 6), ("9090", 1)], true),
            logged(2, at(9), &[("8080", 7), ("9090", 1)], true),
            logged(2, at(12), &[("8080", 7), ("9090", 2)], true),
        ];
        assert_eq!(
            converged_at(&log, 2, &[expect("8080", Some(7))]),
            Some(at(9))
        );
        assert_eq!(
            converged_at(&log, 2, &[expect("8080", Some(7)), expect("9090", Some(2))]),
            Some(at(12))
        );
        assert_eq!(converged_at(&log, 2, &[expect("8080", Some(8))]), None);
        assert_eq!(converged_at(&log, 3, &[expect("8080", Some(7))]), None);
        // A state-of-the-world response without a resource removes it; an incremental one
        // must name it.
        assert_eq!(converged_at(&log, 2, &[expect("15001", None)]), Some(at(5)));
        let mut delta = logged(2, at(4), &[], false);
        assert_eq!(
            converged_at(&[delta.clone()], 2, &[expect("15001", None)]),
            None
        );
        delta.removed.push("15001".into());
        assert_eq!(
            converged_at(&[delta], 2, &[expect("15001", None)]),
            Some(at(4))
        );
    }

    fn entry(name: &str, refs: &[&str]) -> Arc<Entry> {
        Arc::new(Entry {
            name: name.into(),
            version: xxhash_rust::xxh3::xxh3_64(name.as_bytes()),
            refs: refs.iter().map(|r| Arc::from(*r)).collect(),
        })
    }

    fn names(names: &[Arc<str>]) -> Vec<&str> {
        names.iter().map(|n| &**n).collect()
    }

    #[test]
    fn a_config_is_complete_when_everything_named_has_arrived() {
        let catalog = Catalog::default();
        let mut held = Held::default();
        let replace = |held: &mut Held, type_url, entries| {
            held.types.insert(type_url, catalog.set(type_url, entries));
        };
        assert!(held.synced().is_err());
        replace(
            &mut held,
            CLUSTER,
            vec![entry("a", &["a"]), entry("b", &["b"]), entry("static", &[])],
        );
        replace(
            &mut held,
            LISTENER,
            vec![entry("l1", &["8080"]), entry("l2", &["8080", "9090"])],
        );
        assert_eq!(names(held.wanted(ENDPOINT)), ["a", "b"]);
        assert_eq!(names(held.wanted(ROUTE)), ["8080", "9090"]);
        replace(&mut held, ENDPOINT, vec![entry("a", &[])]);
        replace(
            &mut held,
            ROUTE,
            vec![entry("8080", &[]), entry("9090", &[])],
        );
        let missing = held.synced().expect_err("b has no endpoints yet");
        assert!(missing.contains("\"b\""), "{missing}");
        held.update(&catalog, ENDPOINT, &[entry("b", &[])], &[]);
        assert_eq!(held.synced(), Ok(()));
        held.update(&catalog, LISTENER, &[], &[Arc::from("l2")]);
        assert_eq!(names(held.wanted(ROUTE)), ["8080"]);
    }

    #[test]
    fn proxies_with_the_same_config_hold_the_same_sets() {
        let catalog = Catalog::default();
        let (mut one, mut two) = (Held::default(), Held::default());
        // The same resources, reached in different steps.
        one.update(
            &catalog,
            CLUSTER,
            &[entry("a", &["a"]), entry("b", &["b"])],
            &[],
        );
        two.update(&catalog, CLUSTER, &[entry("b", &["b"])], &[]);
        two.update(
            &catalog,
            CLUSTER,
            &[entry("c", &[]), entry("a", &["a"])],
            &[],
        );
        two.update(&catalog, CLUSTER, &[], &[Arc::from("c")]);
        assert!(Arc::ptr_eq(&one.types[CLUSTER], &two.types[CLUSTER]));
        assert!(std::ptr::eq(one.wanted(ENDPOINT), two.wanted(ENDPOINT)));
    }

    #[test]
    fn an_incremental_resubscription_names_only_the_difference() {
        let names = |n: &[&str]| n.iter().map(|n| Arc::from(*n)).collect::<Vec<_>>();
        let req = Delta.resubscribe(ENDPOINT, &names(&["a", "b", "c"]), &names(&["b", "d"]));
        assert_eq!(req.resource_names_subscribe, ["d"]);
        assert_eq!(req.resource_names_unsubscribe, ["a", "c"]);
        let req = Sotw::default().resubscribe(ENDPOINT, &names(&["a"]), &names(&["b", "d"]));
        assert_eq!(req.resource_names, ["b", "d"]);
    }
}
