//! What one ADS client may hold of the server, and the count of every refusal: a proxy (or
//! anything else that reaches the port) that opens streams it never uses, sends half a
//! message, or subscribes to names without end is cut off alone, and the refusal is counted.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// The limits each stream is held to. Envoy opens one ADS stream per connection, sends its
/// first request at once, and names a few thousand resources per type in the largest meshes,
/// so the defaults leave it far from every one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections the server holds at once, TLS handshakes included; more are closed as
    /// they are accepted.
    pub connections: usize,
    /// ADS streams one connection may hold at once.
    pub streams_per_connection: usize,
    /// ADS streams one proxy may hold at once, over all its connections.
    pub streams_per_proxy: usize,
    /// How long a new stream may take to send its first request.
    pub first_request: Duration,
    /// How long a message may take to arrive in full once its first bytes did.
    pub partial_message: Duration,
    /// Resource names a stream may subscribe to, per type (and name in one request).
    pub subscriptions: usize,
}

/// The default [`Limits::connections`]: three times the proxies one replica served in the
/// 10,000-proxy benchmarks.
pub const DEFAULT_CONNECTIONS: usize = 30_000;
/// The default [`Limits::streams_per_connection`].
pub const DEFAULT_STREAMS_PER_CONNECTION: usize = 8;
/// The default [`Limits::streams_per_proxy`]: Envoy holds one, and a second while it
/// reconnects before the server has noticed the first one gone.
pub const DEFAULT_STREAMS_PER_PROXY: usize = 2;
/// The default [`Limits::first_request`] and [`Limits::partial_message`].
pub const DEFAULT_REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// The default [`Limits::subscriptions`]: ten times the endpoint sets of the reference
/// mesh's unscoped proxy.
pub const DEFAULT_SUBSCRIPTIONS: usize = 100_000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: DEFAULT_CONNECTIONS,
            streams_per_connection: DEFAULT_STREAMS_PER_CONNECTION,
            streams_per_proxy: DEFAULT_STREAMS_PER_PROXY,
            first_request: DEFAULT_REQUEST_DEADLINE,
            partial_message: DEFAULT_REQUEST_DEADLINE,
            subscriptions: DEFAULT_SUBSCRIPTIONS,
        }
    }
}

/// Why a client was cut off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A connection beyond the server's cap, closed as it was accepted.
    Connection,
    /// A stream beyond its connection's cap.
    Stream,
    /// A stream beyond its proxy's cap.
    ProxyStreams,
    /// No first request within [`Limits::first_request`].
    FirstRequest,
    /// A message not complete within [`Limits::partial_message`].
    PartialMessage,
    /// More names than [`Limits::subscriptions`].
    Subscriptions,
    /// A proxy that read none of its responses within the write timeout.
    SlowReader,
}

impl Refusal {
    /// Every refusal, in the order of their counters.
    pub const ALL: [Refusal; 7] = [
        Refusal::Connection,
        Refusal::Stream,
        Refusal::ProxyStreams,
        Refusal::FirstRequest,
        Refusal::PartialMessage,
        Refusal::Subscriptions,
        Refusal::SlowReader,
    ];

    /// The name metrics give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Connection => "connection",
            Refusal::Stream => "stream",
            Refusal::ProxyStreams => "proxy_streams",
            Refusal::FirstRequest => "first_request",
            Refusal::PartialMessage => "partial_message",
            Refusal::Subscriptions => "subscriptions",
            Refusal::SlowReader => "slow_reader",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Refusals counted since the server started; clones share the counts.
#[derive(Clone, Debug, Default)]
pub struct Refusals(Arc<[AtomicU64; Refusal::ALL.len()]>);

impl Refusals {
    /// Counts one.
    pub fn count(&self, refusal: Refusal) {
        self.0[refusal.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// How many of `refusal` were counted.
    pub fn get(&self, refusal: Refusal) -> u64 {
        self.0[refusal.index()].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_own_counter_shared_by_clones() {
        let refusals = Refusals::default();
        let clone = refusals.clone();
        clone.count(Refusal::Stream);
        clone.count(Refusal::Stream);
        refusals.count(Refusal::SlowReader);
        let counts: Vec<(&str, u64)> = Refusal::ALL
            .iter()
            .map(|r| (r.as_str(), refusals.get(*r)))
            .collect();
        assert_eq!(
            counts,
            [
                ("connection", 0),
                ("stream", 2),
                ("proxy_streams", 0),
                ("first_request", 0),
                ("partial_message", 0),
                ("subscriptions", 0),
                ("slow_reader", 1)
            ]
        );
    }
}
