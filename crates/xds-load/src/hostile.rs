//! Hostile clients beside the simulated fleet: everything the server's limits are for, at
//! once, on loopback. Streams that never read, more streams on a connection and more for
//! one proxy than allowed, streams with no first request or half a message, a request that
//! names more resources than a stream may hold, and connections beyond the server's cap.
//! Each is set up once and held until [`Hostile::stop`]; the refusals they must cause are
//! [`Plan::expected`], which the driver compares with what the server counted.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use remora_model::input::ObjectKey;
use remora_xds::{
    Refusal,
    limits::{DEFAULT_STREAMS_PER_CONNECTION, DEFAULT_STREAMS_PER_PROXY, DEFAULT_SUBSCRIPTIONS},
    server::SOTW_PATH,
    snapshot::{CLUSTER, ENDPOINT, LISTENER},
};
use tokio::{net::TcpStream, sync::Semaphore, task::JoinSet};

use crate::{
    fleet::node,
    wire::{self, Client, Driver, Inbound, Outbound, Windows},
};

/// The windows a reading client grants, shrunk to next to nothing: the server can write a
/// response's first kilobyte, then nothing more.
const NEVER_READ: Windows = Windows {
    stream: 1024,
    connection: 1024,
};
/// How long setting one client up may take (a stream without a first request is answered
/// only at the server's deadline).
const SET_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// How many of each hostile client a run holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Streams that never read, each on its own connection.
    pub never_read: usize,
    /// Connections that each open [`Plan::flood_streams`] streams that never read.
    pub flood_connections: usize,
    /// Streams each flooding connection opens, three times what it may hold.
    pub flood_streams: usize,
    /// Connections that each open one more stream for a proxy of the fleet, which already
    /// holds one.
    pub proxy_flood: usize,
    /// Streams that send nothing.
    pub silent: usize,
    /// Streams that send their first request, then the first bytes of a second.
    pub partial: usize,
    /// Streams whose first request names more endpoint sets than a stream may hold.
    pub subscription_floods: usize,
    /// Connections opened once the others are, beyond the server's cap.
    pub extra_connections: usize,
}

impl Plan {
    /// A plan for a fleet of `proxies`: a tenth of them never reading, and a few of every
    /// other kind, within the proxies there are to pose as.
    pub fn for_fleet(proxies: usize) -> Plan {
        let plan = Plan {
            never_read: (proxies / 10).clamp(1, 200),
            flood_connections: 4,
            flood_streams: 3 * DEFAULT_STREAMS_PER_CONNECTION,
            proxy_flood: 3,
            silent: 20,
            partial: 20,
            subscription_floods: 4,
            extra_connections: 50,
        };
        assert!(
            plan.identities() <= proxies,
            "a hostile plan for {proxies} proxies poses as {}",
            plan.identities()
        );
        plan
    }

    /// Proxies of the fleet the plan poses as, one for each stream the server accepts.
    fn identities(&self) -> usize {
        self.never_read
            + self.flood_connections * DEFAULT_STREAMS_PER_CONNECTION
            + 1
            + self.partial
            + self.subscription_floods
    }

    /// Connections the plan holds that the server accepts.
    pub fn connections(&self) -> usize {
        self.never_read
            + self.flood_connections
            + self.proxy_flood
            + self.silent
            + self.partial
            + self.subscription_floods
    }

    /// The refusals the plan causes at the server's default limits, once the streams that
    /// never read have met the write timeout, when the server holds exactly the fleet's
    /// connections and [`Plan::connections`] more.
    pub fn expected(&self) -> Vec<(Refusal, u64)> {
        let flooded = self.flood_connections * DEFAULT_STREAMS_PER_CONNECTION;
        let proxy_accepted = DEFAULT_STREAMS_PER_PROXY - 1;
        let count = |n: usize| n as u64;
        vec![
            (Refusal::Connection, count(self.extra_connections)),
            (
                Refusal::Stream,
                count(self.flood_connections * self.flood_streams - flooded),
            ),
            (
                Refusal::ProxyStreams,
                count(self.proxy_flood - proxy_accepted),
            ),
            (Refusal::FirstRequest, count(self.silent)),
            (Refusal::PartialMessage, count(self.partial)),
            (Refusal::Subscriptions, count(self.subscription_floods)),
            (
                Refusal::SlowReader,
                count(self.never_read + flooded + proxy_accepted),
            ),
        ]
    }
}

/// The hostile clients of a run, held until stopped.
pub struct Hostile {
    /// The server's xDS address.
    server: SocketAddr,
    tasks: JoinSet<()>,
    /// Given back by each client once it is set up.
    set_up: Arc<Semaphore>,
    clients: u32,
}

/// Why a hostile client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HostileError {
    /// The connection failed; the error says how.
    #[error(transparent)]
    Connect(#[from] wire::WireError),
    /// A request did not frame.
    #[error("cannot frame a request: {0}")]
    Frame(#[from] tonic::Status),
    /// Some client was still setting up at [`SET_UP_TIMEOUT`].
    #[error("the hostile clients took over {SET_UP_TIMEOUT:?} to set up")]
    Timeout,
}

impl Hostile {
    /// Starts the clients of `plan` against the server at `server`, posing as `proxies`
    /// (the fleet's).
    pub fn start(server: SocketAddr, proxies: &[ObjectKey], plan: Plan) -> Hostile {
        let mut hostile = Hostile {
            server,
            tasks: JoinSet::new(),
            set_up: Arc::new(Semaphore::new(0)),
            clients: 0,
        };
        let mut poses = proxies.iter().cloned();
        let mut pose = || {
            poses
                .next()
                .expect("Plan::for_fleet checked the identities")
        };
        for _ in 0..plan.never_read {
            let request = first_request(&pose());
            hostile.spawn(NEVER_READ, vec![vec![request]]);
        }
        for _ in 0..plan.flood_connections {
            let streams = (0..plan.flood_streams)
                .map(|i| {
                    // Only the streams the connection's cap lets in pose as a proxy.
                    let proxy = (i < DEFAULT_STREAMS_PER_CONNECTION).then(&mut pose);
                    vec![first_request(&proxy.unwrap_or_else(|| proxies[0].clone()))]
                })
                .collect();
            hostile.spawn(NEVER_READ, streams);
        }
        let flooded = pose();
        for _ in 0..plan.proxy_flood {
            hostile.spawn(NEVER_READ, vec![vec![first_request(&flooded)]]);
        }
        for _ in 0..plan.silent {
            hostile.spawn(Windows::READING, vec![Vec::new()]);
        }
        for _ in 0..plan.partial {
            let first = first_request(&pose());
            let half = Bytes::from_static(&[0, 0, 0, 0, 200, 10, 3]);
            hostile.spawn(Windows::READING, vec![vec![first, Ok(half)]]);
        }
        for _ in 0..plan.subscription_floods {
            hostile.spawn(Windows::READING, vec![vec![flood(&pose())]]);
        }
        hostile
    }

    /// Opens `streams` on one connection, each sending its requests and never reading.
    fn spawn(&mut self, windows: Windows, streams: Vec<Vec<Result<Bytes, HostileError>>>) {
        let set_up = self.set_up.clone();
        let server = self.server;
        self.clients += 1;
        self.tasks.spawn(async move {
            let held = hold(server, windows, streams).await;
            set_up.add_permits(1);
            if let Ok(mut held) = held {
                // Driven while held, so the connection answers the server's pings and takes
                // in what it is sent. Its end, by the server or with an error, is what a
                // hostile client is there to provoke: the refusals the server counted are
                // what the driver checks. The streams are held on regardless.
                let _ended = (&mut held.driver).await;
                std::future::pending::<()>().await;
            }
        });
    }

    /// Waits until every client is set up, then opens the connections beyond the cap.
    pub async fn set_up(&mut self, extra_connections: usize) -> Result<(), HostileError> {
        let all = self.set_up.acquire_many(self.clients);
        tokio::time::timeout(SET_UP_TIMEOUT, all)
            .await
            .map_err(|_| HostileError::Timeout)?
            .expect("the semaphore is never closed")
            .forget();
        let mut extra = Vec::with_capacity(extra_connections);
        for _ in 0..extra_connections {
            // Closed by the server as it accepts them; held here only so they count at once.
            if let Ok(tcp) = TcpStream::connect(self.server).await {
                extra.push(tcp);
            }
        }
        self.tasks.spawn(async move {
            let _extra = extra;
            std::future::pending::<()>().await;
        });
        Ok(())
    }

    /// Ends every hostile client.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Opens each of `streams` on one connection, one after the other so the server's cap
/// lets in the first ones, and keeps them, never reading; a stream the server refuses or
/// ends is kept as well.
async fn hold(
    server: SocketAddr,
    windows: Windows,
    streams: Vec<Vec<Result<Bytes, HostileError>>>,
) -> Result<Held, HostileError> {
    let (mut client, mut driver) = wire::connect(server, windows).await?;
    let mut held = Vec::with_capacity(streams.len());
    for requests in streams {
        let requests = requests.into_iter().collect::<Result<Vec<_>, _>>()?;
        // Refused streams are what these clients are for: a stream the server did not take
        // is held as what of it there is.
        let opened = driver
            .alongside(async {
                let (outbound, opening) = client.open(SOTW_PATH, requests).await?;
                Ok((outbound, opening.response().await.ok()))
            })
            .await
            .ok();
        held.push(opened);
    }
    // The connection stays too, though the server refused or ended every stream on it.
    Ok(Held {
        _client: client,
        driver,
        _streams: held,
    })
}

/// A connection and its streams, each with its request side and its unread response.
struct Held {
    _client: Client,
    driver: Driver,
    _streams: Vec<Option<(Outbound, Option<Inbound>)>>,
}

/// The first requests of an Envoy: every cluster and every listener.
fn first_request(proxy: &ObjectKey) -> Result<Bytes, HostileError> {
    let cds = DiscoveryRequest {
        node: Some(node(proxy)),
        type_url: CLUSTER.into(),
        ..Default::default()
    };
    let lds = DiscoveryRequest {
        type_url: LISTENER.into(),
        ..Default::default()
    };
    let mut bytes = remora_xds::grpc::frame(&cds)?;
    bytes.extend(remora_xds::grpc::frame(&lds)?);
    Ok(bytes.into())
}

/// A first request that names one endpoint set more than a stream may hold.
fn flood(proxy: &ObjectKey) -> Result<Bytes, HostileError> {
    let request = DiscoveryRequest {
        node: Some(node(proxy)),
        type_url: ENDPOINT.into(),
        resource_names: (0..=DEFAULT_SUBSCRIPTIONS)
            .map(|i| format!("c{i}"))
            .collect(),
        ..Default::default()
    };
    Ok(remora_xds::grpc::frame(&request)?.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_expects_one_refusal_of_each_kind_for_each_client_past_a_limit() {
        let plan = Plan::for_fleet(1000);
        let expected: Vec<(&str, u64)> = plan
            .expected()
            .into_iter()
            .map(|(r, n)| (r.as_str(), n))
            .collect();
        assert_eq!(
            expected,
            [
                ("connection", 50),
                ("stream", 4 * 24 - 4 * 8),
                ("proxy_streams", 2),
                ("first_request", 20),
                ("partial_message", 20),
                ("subscriptions", 4),
                ("slow_reader", 100 + 32 + 1),
            ]
        );
        assert_eq!(plan.connections(), 100 + 4 + 3 + 20 + 20 + 4);
    }

    #[test]
    #[should_panic(expected = "poses as")]
    fn a_plan_needs_a_proxy_to_pose_as_for_every_stream_let_in() {
        Plan::for_fleet(20);
    }
}
