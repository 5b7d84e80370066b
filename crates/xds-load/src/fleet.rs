//! The simulated proxies. Each one is what a sidecar Envoy does on ADS, minus applying the
//! config: its own HTTP/2 connection, its identity in the node of its first request, CDS and
//! LDS as wildcards, EDS and RDS for the names its clusters and listeners refer to, and an
//! ACK (version and nonce) for every response, in state-of-the-world or incremental mode.
//!
//! Each proxy reports to the driver through [`Note`]s: when it first holds a complete config,
//! and, once the driver has told it what a change must bring it, when it ACKed the response
//! that completed that. It logs every response it receives after a change started, so the
//! driver can also count the responses that went to proxies the change did not affect.
//! The fleet is started and followed through [`crate::running`].
//!
//! A proxy keeps no config of its own: a response is decoded only as far as the protocol
//! needs (type, version, nonce, each resource's body hashed to find its shared catalog entry),
//! and what a proxy holds of a type is a [`Set`] shared with every proxy that holds the
//! same, so ten thousand proxies of the unscoped mesh fit where the server is measured.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use envoy_types::pb::{
    envoy::config::core::v3::Node,
    google::protobuf::{Struct, Value, value::Kind},
};
use prost::Message;
use remora_model::input::ObjectKey;
use remora_xds::snapshot::is_wildcard_type;
use tokio::sync::{Semaphore, mpsc, watch};
use tonic::Status;

pub use crate::held::Baseline;
use crate::{
    catalog::{Catalog, DecodeError, Set},
    flavour::{Delta, Flavour, Sotw},
    held::Held,
    wire::{self, Client, Driver, Inbound, Outbound, Windows},
};

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

/// What a proxy tells the driver.
#[derive(Debug)]
pub enum Note {
    /// The proxy first held every resource its config refers to.
    Synced {
        /// The proxy's index in the fleet.
        proxy: usize,
        /// When it had handed over the ACK that completed its config.
        at: Instant,
    },
    /// The proxy ACKed the response that brought what round `round` expects of it.
    Converged {
        /// The proxy's index in the fleet.
        proxy: usize,
        /// The round.
        round: u32,
        /// When it had handed over that ACK.
        at: Instant,
    },
    /// The proxy's stream failed; it is not retried.
    Failed {
        /// The proxy and what went wrong.
        error: String,
    },
}

/// One resource a change must bring a proxy to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// Its type.
    pub type_url: &'static str,
    /// Its name.
    pub name: Arc<str>,
    /// What of it the change brings.
    pub want: Want,
    /// The length of its encoding, 0 for a removal or when unknown.
    pub bytes: usize,
}

/// What a change brings of one resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// This version of it (the xxh3 of its encoding), as the server reported it.
    Version(u64),
    /// Its removal.
    Removed,
    /// Another version than the proxy held when it first noticed the round: for a driver
    /// that makes a change through someone else (an API server) and so cannot know the
    /// version the control plane will compute.
    Changed,
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
    /// The round it was received in.
    pub round: u32,
    /// When the proxy had handed its ACK of this response to the connection.
    pub acked: Instant,
    /// Its type.
    pub type_url: &'static str,
    /// The response's length, as encoded on the wire (without gRPC's 5-byte prefix).
    pub bytes: usize,
    /// Every resource the response carried, shared with the proxies that got the same.
    pub(crate) carried: Arc<Set>,
    /// The names it removed (incremental responses only).
    pub removed: Vec<Arc<str>>,
    /// A state-of-the-world response: what it does not carry, the proxy no longer holds.
    pub full: bool,
}

impl Logged {
    /// The names and versions of the resources it carried.
    pub fn carried(&self) -> impl Iterator<Item = (&str, u64)> {
        self.carried.entries().iter().map(|e| (&*e.name, e.version))
    }

    /// A response taken in; its round and ACK time are set once it is ACKed.
    pub(crate) fn new(
        type_url: &'static str,
        carried: Arc<Set>,
        removed: Vec<Arc<str>>,
        full: bool,
    ) -> Logged {
        Logged {
            round: 0,
            acked: Instant::now(),
            type_url,
            bytes: 0,
            carried,
            removed,
            full,
        }
    }
}

/// What a proxy's task returns when it ends.
#[derive(Debug)]
pub struct Outcome {
    /// Every response received in a round, in order.
    pub log: Vec<Logged>,
    /// Why the proxy does not hold a complete config, if it does not.
    pub incomplete: Option<String>,
    /// What it held when it noticed the last round.
    pub baseline: Baseline,
}

/// What every proxy shares.
pub(crate) struct Fleet {
    /// The servers' xDS addresses; proxy `i` connects to the `i % len`-th.
    pub servers: Vec<SocketAddr>,
    pub mode: Mode,
    pub catalog: Catalog,
    /// Bounds how many proxies are connecting at once, as a real fleet's connections
    /// arrive spread out rather than in one burst the listen backlog would drop.
    pub connecting: Semaphore,
    pub notes: mpsc::UnboundedSender<Note>,
    /// Read, not waited on: a proxy notices a new round when its next response comes.
    pub round: watch::Receiver<Round>,
    /// Changes when a round's expectations are out; only the proxies that may have converged
    /// already wake for it.
    pub expected: watch::Receiver<()>,
    pub stop: watch::Receiver<bool>,
}

/// Why a proxy's stream failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    #[error("the stream failed: {0}")]
    Wire(#[from] wire::WireError),
    #[error("cannot frame a request: {0}")]
    Frame(#[from] Status),
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

/// What one proxy keeps while it runs.
#[derive(Default)]
struct State {
    held: Held,
    log: Vec<Logged>,
    /// The round it noticed last, and what it held then.
    noticed: u32,
    baseline: Baseline,
}

impl State {
    /// Remembers what the proxy holds when it first notices a new round: called before a
    /// response is taken in, so no response of the round is in the baseline.
    fn notice(&mut self, round: u32) {
        if round != self.noticed {
            self.noticed = round;
            self.baseline = self.held.snapshot();
        }
    }
}

/// Runs one proxy until the fleet stops.
pub(crate) async fn run(fleet: Arc<Fleet>, index: usize, proxy: ObjectKey) -> Outcome {
    let mut state = State::default();
    let result = match fleet.mode {
        Mode::Sotw => stream::<Sotw>(&fleet, index, &proxy, &mut state).await,
        Mode::Delta => stream::<Delta>(&fleet, index, &proxy, &mut state).await,
    };
    if let Err(e) = result {
        // The driver may be gone already when it stops everything; nothing to tell then.
        let _ = fleet.notes.send(Note::Failed {
            error: format!("{proxy}: {e}"),
        });
    }
    Outcome {
        incomplete: state.held.synced().err(),
        log: state.log,
        baseline: state.baseline,
    }
}

/// A request as its bytes on the wire.
fn framed(request: &impl Message) -> Result<Bytes, StreamError> {
    Ok(remora_xds::grpc::frame(request)?.into())
}

async fn stream<F: Flavour>(
    fleet: &Fleet,
    index: usize,
    proxy: &ObjectKey,
    state: &mut State,
) -> Result<(), StreamError> {
    let mut stop = fleet.stop.clone();
    let round = fleet.round.clone();
    let mut expected = fleet.expected.clone();
    let server = fleet.servers[index % fleet.servers.len()];
    let Some(mut opened) = open::<F>(fleet, server, proxy, &mut stop).await? else {
        return Ok(());
    };
    let mut flavour = F::default();
    let mut synced = false;
    let mut converged_round = 0;
    loop {
        // Only a proxy that received a response in the round under way and has not
        // converged in it can have converged before the round's expectations came out;
        // any other checks them after its next response, without being woken for them.
        let number = round.borrow().number;
        let may_have_converged =
            converged_round < number && state.log.last().is_some_and(|l| l.round == number);
        tokio::select! {
            // The connection first: what it reads is then taken in, and an ACK handed over
            // in the turn before is written, within this one poll.
            biased;
            ended = &mut opened.driver => {
                ended?;
                return Err(StreamError::Ended);
            }
            _ = stopped(&mut stop) => return Ok(()),
            changed = expected.changed(), if may_have_converged => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            msg = opened.inbound.message() => {
                let bytes = msg?.ok_or(StreamError::Ended)?;
                let received = Instant::now();
                state.notice(round.borrow().number);
                let held = &mut state.held;
                let mut logged =
                    answer(&mut flavour, bytes, held, &fleet.catalog, &mut opened.outbound)?;
                let current = round.borrow();
                if current.started.is_some_and(|s| received >= s) {
                    logged.round = current.number;
                    state.log.push(logged);
                }
                drop(current);
                if !synced && state.held.synced().is_ok() {
                    synced = true;
                    // Now: the ACK that completed the config has just been handed over.
                    let at = Instant::now();
                    let _ = fleet.notes.send(Note::Synced { proxy: index, at });
                }
            }
        }
        let current = round.borrow().clone();
        state.notice(current.number);
        if current.number > converged_round
            && let Some(expected) = current.expected.as_ref().and_then(|e| e.get(&index))
            && let Some(at) = converged_at(&state.log, current.number, expected, &state.baseline)
        {
            converged_round = current.number;
            let _ = fleet.notes.send(Note::Converged {
                proxy: index,
                round: current.number,
                at,
            });
        }
    }
}

/// A proxy's connection and its one stream.
struct Opened {
    driver: Driver,
    /// Kept for as long as the stream: it is what the connection is open for.
    _client: Client,
    outbound: Outbound,
    inbound: Inbound,
}

/// Connects, when the fleet lets one more proxy connect, and opens the stream with the
/// first requests; `None` when the fleet stops first.
async fn open<F: Flavour>(
    fleet: &Fleet,
    server: SocketAddr,
    proxy: &ObjectKey,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Opened>, StreamError> {
    let _permit = tokio::select! {
        permit = fleet.connecting.acquire() => permit,
        _ = stopped(stop) => return Ok(None),
    };
    let open = async {
        let first = F::first(node(proxy))
            .iter()
            .map(framed)
            .collect::<Result<Vec<_>, _>>()?;
        let (mut client, mut driver) = wire::connect(server, Windows::READING).await?;
        let (outbound, inbound) = driver
            .alongside(async {
                let (outbound, opening) = client.open(F::PATH, first).await?;
                Ok((outbound, opening.response().await?))
            })
            .await?;
        Ok::<_, StreamError>(Opened {
            driver,
            _client: client,
            outbound,
            inbound,
        })
    };
    let opened = tokio::time::timeout(OPEN_TIMEOUT, open)
        .await
        .map_err(|_| StreamError::OpenTimeout)??;
    Ok(Some(opened))
}

/// Takes in a response and hands over its ACK, and the subscription change it calls for,
/// to the connection; returns what to log of it.
fn answer<F: Flavour>(
    flavour: &mut F,
    response: Bytes,
    held: &mut Held,
    catalog: &Catalog,
    outbound: &mut Outbound,
) -> Result<Logged, StreamError> {
    let bytes = response.len();
    let response = F::Resp::decode(response)?;
    let (mut logged, ack) = flavour.take(response, held, catalog)?;
    logged.bytes = bytes;
    outbound.send(framed(&ack)?)?;
    if let Some(change) = held.resubscription(logged.type_url) {
        let req = flavour.resubscribe(change.type_url, change.before(), change.after());
        outbound.send(framed(&req)?)?;
    }
    logged.acked = Instant::now();
    Ok(logged)
}

/// Resolves once the fleet is told to stop. The guard `wait_for` returns is dropped here, as
/// it must not be held across an await.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The identity a sidecar's bootstrap gives it (see `remora bootstrap`).
pub(crate) fn node(proxy: &ObjectKey) -> Node {
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
/// is still missing. `before` is what the proxy held when it noticed the round, which
/// [`Want::Changed`] is judged against.
///
/// An endpoint set or route config that went away asks for no response: Envoy drops it
/// with the cluster or listener that named it, which the same change expects, and the proxy
/// unsubscribes from it, so the server need not say it is gone.
pub fn converged_at(
    log: &[Logged],
    round: u32,
    expected: &[Expected],
    before: &Baseline,
) -> Option<Instant> {
    let mut latest = None;
    let answered = expected
        .iter()
        .filter(|e| e.want != Want::Removed || is_wildcard_type(e.type_url));
    for e in answered {
        let carried = |l: &Logged| l.carried.get(&e.name).map(|c| c.version);
        let first = log.iter().find(|l| {
            l.round == round
                && l.type_url == e.type_url
                && match e.want {
                    Want::Version(v) => carried(l) == Some(v),
                    Want::Changed => {
                        carried(l).is_some_and(|v| Some(v) != before.version(e.type_url, &e.name))
                    }
                    Want::Removed => {
                        l.removed.contains(&e.name) || (l.full && carried(l).is_none())
                    }
                }
        })?;
        latest = latest.max(Some(first.acked));
    }
    latest
}

#[cfg(test)]
mod tests {
    use remora_xds::snapshot::{LISTENER, ROUTE};

    use super::*;
    use crate::catalog::Entry;

    fn logged(
        type_url: &'static str,
        round: u32,
        at: Instant,
        carried: &[(&str, u64)],
        full: bool,
    ) -> Logged {
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
            type_url,
            bytes: 0,
            carried: Catalog::default().set(type_url, entries),
            removed: Vec::new(),
            full,
        }
    }

    fn expect(type_url: &'static str, name: &str, want: Want) -> Expected {
        Expected {
            type_url,
            name: name.into(),
            want,
            bytes: 0,
        }
    }

    fn converged(log: &[Logged], round: u32, expected: &[Expected]) -> Option<Instant> {
        converged_at(log, round, expected, &Baseline::default())
    }

    #[test]
    fn convergence_is_the_ack_that_completed_every_expectation() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let route =
            |round, ms, carried: &[(&str, u64)]| logged(ROUTE, round, at(ms), carried, false);
        let log = [
            // An older round's response does not count for this one.
            route(1, 1, &[("8080", 7)]),
            route(2, 5, &[("8080", 6), ("9090", 1)]),
            route(2, 9, &[("8080", 7)]),
            route(2, 12, &[("9090", 2)]),
        ];
        let wants = |name, version| expect(ROUTE, name, Want::Version(version));
        assert_eq!(converged(&log, 2, &[wants("8080", 7)]), Some(at(9)));
        assert_eq!(
            converged(&log, 2, &[wants("8080", 7), wants("9090", 2)]),
            Some(at(12))
        );
        assert_eq!(converged(&log, 2, &[wants("8080", 8)]), None);
        assert_eq!(converged(&log, 3, &[wants("8080", 7)]), None);
    }

    #[test]
    fn a_removal_is_a_whole_set_without_it_or_a_response_that_names_it() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let gone = [expect(LISTENER, "inbound", Want::Removed)];
        // A state-of-the-world response without a listener removes it.
        let whole = logged(LISTENER, 2, at(5), &[("outbound", 1)], true);
        assert_eq!(converged(&[whole], 2, &gone), Some(at(5)));
        // An incremental one must name it.
        let mut delta = logged(LISTENER, 2, at(4), &[], false);
        assert_eq!(converged(&[delta.clone()], 2, &gone), None);
        delta.removed.push("inbound".into());
        assert_eq!(converged(&[delta], 2, &gone), Some(at(4)));
    }

    #[test]
    fn a_route_config_that_went_away_goes_with_the_listener_that_named_it() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let listener = logged(LISTENER, 2, at(7), &[("outbound", 2)], true);
        let expected = [
            expect(LISTENER, "outbound", Want::Version(2)),
            expect(ROUTE, "gone.ns.svc.cluster.local:8080", Want::Removed),
        ];
        assert_eq!(converged(&[listener], 2, &expected), Some(at(7)));
        // Without the listener's change, nothing converged.
        assert_eq!(converged(&[], 2, &expected), None);
    }

    #[test]
    fn a_changed_resource_is_the_first_one_at_another_version_than_held_before() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let route =
            |round, ms, carried: &[(&str, u64)]| logged(ROUTE, round, at(ms), carried, false);
        let mut held = Held::default();
        let catalog = Catalog::default();
        let before = route(1, 0, &[("8080", 7)]);
        held.update(&catalog, ROUTE, &before.carried, &[]);
        let baseline = held.snapshot();
        let log = [
            // The same version again (a SotW response carrying it along) is no change.
            route(2, 3, &[("8080", 7), ("9090", 1)]),
            route(2, 8, &[("8080", 9)]),
            route(2, 11, &[("8080", 10)]),
        ];
        let changed = [expect(ROUTE, "8080", Want::Changed)];
        assert_eq!(converged_at(&log, 2, &changed, &baseline), Some(at(8)));
        assert_eq!(converged_at(&log[..1], 2, &changed, &baseline), None);
        // A resource not held before changes with its first arrival.
        let new = [expect(ROUTE, "9090", Want::Changed)];
        assert_eq!(converged_at(&log, 2, &new, &baseline), Some(at(3)));
    }

    #[test]
    fn a_proxy_takes_its_baseline_once_per_round_before_the_rounds_responses() {
        let catalog = Catalog::default();
        let mut state = State::default();
        let set = |version| {
            let e = Arc::new(Entry {
                name: "8080".into(),
                version,
                refs: Box::new([]),
            });
            catalog.set(ROUTE, vec![e])
        };
        state.held.update(&catalog, ROUTE, &set(1), &[]);
        state.notice(1);
        state.held.update(&catalog, ROUTE, &set(2), &[]);
        // Noticing the same round again keeps what was held when it was first noticed.
        state.notice(1);
        assert_eq!(state.baseline.version(ROUTE, "8080"), Some(1));
        state.notice(2);
        assert_eq!(state.baseline.version(ROUTE, "8080"), Some(2));
    }
}
