//! A simulated fleet at work: started against one or more servers, followed through what
//! its proxies tell ([`Note`]s), steered through its [`Round`], stopped with what each proxy
//! logged. Every wait here is on the fleet alone; callers bound them in time.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use remora_model::input::ObjectKey;
use tokio::{
    sync::{Semaphore, mpsc, watch},
    task::JoinHandle,
};

use crate::{
    catalog::Catalog,
    fleet::{self, Expected, Fleet, Mode, Note, Outcome, Round},
};

/// How long the proxies get to stop.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// What a fleet is started with.
#[derive(Clone, Debug)]
pub struct FleetSpec {
    /// The servers' xDS addresses; proxy `i` connects to the `i % len`-th, so a fleet
    /// splits evenly.
    pub servers: Vec<SocketAddr>,
    /// The flavour of ADS every proxy speaks.
    pub mode: Mode,
    /// Proxies connecting at the same time.
    pub connect_concurrency: usize,
}

/// Why following the fleet failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A proxy's stream failed (it says which proxy, and why).
    #[error("a proxy failed: {0}")]
    Proxy(String),
    /// A proxy's task panicked or was cancelled.
    #[error("a proxy task failed: {0}")]
    Task(tokio::task::JoinError),
    /// Every proxy ended, so nothing more can come.
    #[error("a proxy failed: every proxy task ended")]
    Ended,
    /// The proxies did not stop in time.
    #[error("waited {STOP_TIMEOUT:?} for the proxies to stop, in vain")]
    StopTimeout,
}

/// The fleet's tasks and the handles that steer them.
pub struct Running {
    tasks: Vec<JoinHandle<Outcome>>,
    notes: mpsc::UnboundedReceiver<Note>,
    /// The change under way: each proxy logs what it receives in it, and tells when it
    /// holds what the round expects of it.
    round: watch::Sender<Round>,
    /// Told when a round's expectations are out, for the proxies to wake and check them.
    expected: watch::Sender<()>,
    stop: watch::Sender<bool>,
}

impl Running {
    /// Starts one task per proxy; they connect at most `connect_concurrency` at a time.
    /// Must be called within a Tokio runtime.
    pub fn start(spec: FleetSpec, proxies: &[ObjectKey]) -> Running {
        let (notes_tx, notes) = mpsc::unbounded_channel();
        let (round, round_rx) = watch::channel(Round::default());
        let (expected, expected_rx) = watch::channel(());
        let (stop, stop_rx) = watch::channel(false);
        let fleet = Arc::new(Fleet {
            servers: spec.servers,
            mode: spec.mode,
            catalog: Catalog::default(),
            connecting: Semaphore::new(spec.connect_concurrency.max(1)),
            notes: notes_tx,
            round: round_rx,
            expected: expected_rx,
            stop: stop_rx,
        });
        let tasks = proxies
            .iter()
            .enumerate()
            .map(|(i, p)| tokio::spawn(fleet::run(fleet.clone(), i, p.clone())))
            .collect();
        Running {
            tasks,
            notes,
            round,
            expected,
            stop,
        }
    }

    /// Starts a round: responses from now on are logged in it. No proxy is woken, even
    /// when the round comes with its expectations: each notices the round, and checks them,
    /// when its next response comes, and none has one of the round yet. Ten thousand
    /// proxies woken at once would take the cores the change is measured on.
    pub fn start_round(&self, round: Round) {
        self.round.send_replace(round);
    }

    /// What the round under way must bring each affected proxy, by proxy index; a proxy
    /// that received a response in the round wakes to check whether it holds that already.
    pub fn expect(&self, expected: Arc<HashMap<usize, Vec<Expected>>>) {
        self.round.send_modify(|r| r.expected = Some(expected));
        self.expected.send_replace(());
    }

    /// The round under way.
    pub fn round(&self) -> Round {
        self.round.borrow().clone()
    }

    /// Waits until `count` proxies are synced; returns when the last one was.
    pub async fn wait_synced(&mut self, count: usize) -> Result<Instant, FleetError> {
        let mut synced = 0;
        let mut last = Instant::now();
        while synced < count {
            match self.notes.recv().await {
                Some(Note::Synced { at, .. }) => {
                    synced += 1;
                    last = last.max(at);
                }
                Some(Note::Failed { error }) => return Err(FleetError::Proxy(error)),
                Some(Note::Converged { .. }) => {}
                None => return Err(FleetError::Ended),
            }
        }
        Ok(last)
    }

    /// Waits until `count` proxies have converged in round `number`, adding each one's
    /// index and time since `started` to `times` (which tells, after a timeout, how many
    /// had).
    pub async fn wait_converged(
        &mut self,
        number: u32,
        started: Instant,
        count: usize,
        times: &mut Vec<(usize, Duration)>,
    ) -> Result<(), FleetError> {
        while times.len() < count {
            match self.notes.recv().await {
                Some(Note::Converged { proxy, round, at }) if round == number => {
                    times.push((proxy, at.saturating_duration_since(started)));
                }
                Some(Note::Failed { error }) => return Err(FleetError::Proxy(error)),
                Some(_) => {}
                None => return Err(FleetError::Ended),
            }
        }
        Ok(())
    }

    /// Stops every proxy and returns what each logged, in proxy order.
    pub async fn stop(self) -> Result<Vec<Outcome>, FleetError> {
        self.stop.send_replace(true);
        let mut outcomes = Vec::with_capacity(self.tasks.len());
        let deadline = Instant::now() + STOP_TIMEOUT;
        for task in self.tasks {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, task).await {
                Ok(Ok(outcome)) => outcomes.push(outcome),
                Ok(Err(e)) => return Err(FleetError::Task(e)),
                Err(_) => return Err(FleetError::StopTimeout),
            }
        }
        Ok(outcomes)
    }
}
