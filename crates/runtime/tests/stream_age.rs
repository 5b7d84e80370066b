//! Balanced connections with a real Envoy on loopback: a stream that reaches its age, and a
//! server that stops, both send the proxy to reconnect (over a new connection, after a
//! GOAWAY) while it keeps every listener and cluster it had. Every wait is bounded; Envoy is
//! killed when a test fails.

use std::{
    collections::BTreeMap,
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, SystemTime},
};

use remora_envoy::{
    Options,
    bootstrap::{Bootstrap, XDS_CLUSTER},
};
use remora_model::input::{
    Endpoint, EndpointPort, EndpointSlice, Event, MeshSettings, Namespace, Object, ObjectKey, Pod,
    Protocol, Service, ServicePort,
};
use remora_runtime::{DRAIN, Pipeline, Serving, bind};
use remora_test_support::{envoy_bin, labels};
use remora_xds::{DEFAULT_RESPONSE_BUDGET, StreamAge, SyncRegistry, sync::SyncState};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
    task::JoinHandle,
};

/// How often the tests look at Envoy's stats while its streams end and reopen.
const POLL: Duration = Duration::from_millis(50);

fn proxy() -> ObjectKey {
    ObjectKey::new("shop", "client-0")
}

/// A mesh namespace with one HTTP Service and one sidecar pod that calls it: the proxy gets a
/// cluster, its endpoints, a listener and its routes.
fn mesh(client_ip: IpAddr) -> Vec<Event> {
    let http = Some("http".to_owned());
    let objects = [
        Object::Namespace(Namespace {
            name: "shop".into(),
            labels: labels(&[("remora.dev/mesh", "enabled")]),
        }),
        Object::Service(Service {
            namespace: "shop".into(),
            name: "web".into(),
            cluster_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10))),
            ports: vec![ServicePort {
                name: http.clone(),
                port: 8080,
                protocol: Protocol::Http,
            }],
        }),
        Object::EndpointSlice(EndpointSlice {
            namespace: "shop".into(),
            name: "web-slice".into(),
            service: "web".into(),
            ports: vec![EndpointPort {
                name: http,
                port: 8080,
            }],
            endpoints: vec![Endpoint {
                address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
                ready: true,
                zone: None,
                pod: Some("web-0".into()),
            }],
        }),
        Object::Pod(Pod {
            namespace: "shop".into(),
            name: proxy().name,
            labels: labels(&[("app", "client")]),
            service_account: "default".into(),
            ip: Some(client_ip),
            sidecar: true,
            ports: vec![],
        }),
    ];
    objects.into_iter().map(Event::Upsert).collect()
}

/// A control plane serving [`mesh`] on a port of its own, with its own sync registry.
struct Server {
    addr: SocketAddr,
    status: Arc<SyncRegistry>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Server {
    /// `client_ip` is where the proxy's outbound listeners bind, one loopback address per
    /// test so that tests running together do not compete for ports.
    async fn start(client_ip: IpAddr, stream_age: StreamAge) -> Server {
        let mut pipeline = Pipeline::new(MeshSettings::default(), Options::default(), move |_| {
            Some(client_ip)
        });
        pipeline.apply(mesh(client_ip));
        pipeline.open();
        let state = pipeline.state().clone();
        let (listener, addr) = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .expect("bind the xDS port");
        let (stop, stopped) = watch::channel(false);
        let serving = Serving {
            stream_age,
            ..Serving::insecure()
        };
        let task = tokio::spawn(state.serve(listener, stopped, DEFAULT_RESPONSE_BUDGET, serving));
        Server {
            addr,
            status: state.status,
            stop,
            task,
        }
    }

    /// When the proxy's current stream opened, once it has ACKed every type it asked for.
    fn synced_since(&self) -> Option<SystemTime> {
        let s = self.status.get(&proxy())?;
        (s.types.len() == 4 && s.types.values().all(|t| t.state() == SyncState::Synced))
            .then_some(s.connected_at)
    }
}

/// A real Envoy for [`proxy`], killed on drop.
struct Envoy {
    child: Child,
    admin: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        // Best effort: the process may have exited already.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Envoy {
    /// Starts Envoy with an xDS cluster of `servers`, in this order.
    async fn start(servers: &[SocketAddr], delta: bool) -> Envoy {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Bootstrap {
            proxy: proxy(),
            service_account: "default".into(),
            workload: "Deployment/web".into(),
            xds_host: servers[0].ip().to_string(),
            xds_port: servers[0].port(),
            admin: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            delta,
            max_regex_program_size: remora_api::ValidationSettings::default()
                .max_regex_program_size,
        }
        .to_json();
        let endpoints: Vec<_> = servers
            .iter()
            .map(|s| {
                json!({"endpoint": {"address": {"socket_address": {
                    "address": s.ip().to_string(),
                    "port_value": s.port(),
                }}}})
            })
            .collect();
        let assignment = &mut config["static_resources"]["clusters"][0]["load_assignment"];
        assert_eq!(
            assignment["cluster_name"], XDS_CLUSTER,
            "the bootstrap changed shape"
        );
        assignment["endpoints"][0]["lb_endpoints"] = json!(endpoints);
        let bootstrap = dir.path().join("bootstrap.json");
        fs::write(&bootstrap, config.to_string()).expect("write the bootstrap");
        let admin_path = dir.path().join("admin");
        let log = dir.path().join("envoy.log");
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&bootstrap)
            .args(["--use-dynamic-base-id", "--concurrency", "1"])
            .args(["--log-level", "warning"])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("Envoy starts");
        // Owned before the wait, so a wait that gives up kills the process.
        let mut envoy = Envoy {
            child,
            admin: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            log,
            _dir: dir,
        };
        envoy.admin = eventually(30, "Envoy's admin address", async || {
            fs::read_to_string(&admin_path).ok()?.trim().parse().ok()
        })
        .await;
        envoy
    }

    /// Every counter and gauge from the admin interface.
    async fn stats(&self) -> BTreeMap<String, u64> {
        let mut conn = TcpStream::connect(self.admin)
            .await
            .unwrap_or_else(|e| panic!("Envoy's admin is gone ({e}): {}", self.log()));
        conn.write_all(b"GET /stats HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .expect("ask for the stats");
        let mut response = String::new();
        conn.read_to_string(&mut response)
            .await
            .expect("read the stats");
        response
            .lines()
            .filter_map(|l| {
                let (name, value) = l.split_once(": ")?;
                Some((name.to_owned(), value.trim().parse().ok()?))
            })
            .collect()
    }

    /// The connection stats of the xDS cluster, by name without the cluster's prefix.
    async fn xds_connections(&self) -> BTreeMap<String, u64> {
        let prefix = format!("cluster.{XDS_CLUSTER}.upstream_cx_");
        self.stats()
            .await
            .into_iter()
            .filter_map(|(name, value)| {
                let name = name.strip_prefix(&prefix)?;
                Some((name.to_owned(), value))
            })
            .collect()
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The stats that say what config Envoy holds, and whether any of it was ever removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Held {
    listeners: u64,
    clusters: u64,
    listeners_removed: u64,
    clusters_removed: u64,
}

impl Held {
    fn of(stats: &BTreeMap<String, u64>) -> Held {
        let stat = |name: &str| stats.get(name).copied().unwrap_or_default();
        Held {
            listeners: stat("listener_manager.total_listeners_active"),
            clusters: stat("cluster_manager.active_clusters"),
            listeners_removed: stat("listener_manager.listener_removed"),
            clusters_removed: stat("cluster_manager.cluster_removed"),
        }
    }
}

/// Polls `check` every [`POLL`] until it returns `Some`, for at most `secs` seconds.
async fn within<T>(secs: u64, mut check: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    for _ in 0..secs * 1000 / POLL.as_millis() as u64 {
        if let Some(v) = check().await {
            return Some(v);
        }
        tokio::time::sleep(POLL).await;
    }
    None
}

/// [`within`], or a panic that says what did not happen.
async fn eventually<T>(secs: u64, what: &str, check: impl AsyncFnMut() -> Option<T>) -> T {
    within(secs, check)
        .await
        .unwrap_or_else(|| panic!("gave up after {secs} s waiting for {what}"))
}

/// Waits until Envoy holds the whole config from whichever server it reached first; returns
/// that server's index and what Envoy holds.
async fn synced(envoy: &Envoy, servers: &[&Server]) -> (usize, Held) {
    let synced = within(30, async || {
        let at = servers.iter().position(|s| s.synced_since().is_some())?;
        let held = Held::of(&envoy.stats().await);
        (held.listeners > 0).then_some((at, held))
    })
    .await;
    synced.unwrap_or_else(|| {
        let status: Vec<_> = servers.iter().map(|s| s.status.get(&proxy())).collect();
        panic!("the proxy did not sync: {status:?}\n{}", envoy.log())
    })
}

/// Waits until `until` returns `Some`, checking at every poll that Envoy still holds at least
/// the config it held before and never removed a listener or a cluster.
async fn keeps_config<T>(
    envoy: &Envoy,
    before: Held,
    what: &str,
    mut until: impl FnMut() -> Option<T>,
) -> T {
    eventually(30, what, async || {
        let now = Held::of(&envoy.stats().await);
        assert!(
            now.listeners >= before.listeners
                && now.clusters >= before.clusters
                && now.listeners_removed == 0
                && now.clusters_removed == 0,
            "the proxy lost config: {now:?}, held {before:?}\n{}",
            envoy.log()
        );
        until()
    })
    .await
}

async fn reconnects_when_its_stream_reaches_its_age(client_ip: IpAddr, delta: bool) {
    let age = StreamAge::new(Duration::from_secs(2)).jitter(Duration::ZERO);
    let server = Server::start(client_ip, age.clone()).await;
    let envoy = Envoy::start(&[server.addr], delta).await;
    let (_, before) = synced(&envoy, &[&server]).await;
    let first = server.synced_since().expect("synced");

    let again = keeps_config(&envoy, before, "a later stream to sync", || {
        server.synced_since().filter(|since| *since > first)
    })
    .await;
    assert!(again > first);
    assert!(age.ended() >= 1, "no stream counted as ended by age");
    let cx = envoy.xds_connections().await;
    assert!(
        cx.get("total") >= Some(&2),
        "the next stream came over the same connection: {cx:?}"
    );
    assert!(
        cx.get("close_notify") >= Some(&1),
        "no GOAWAY reached the proxy: {cx:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sotw_stream_that_reaches_its_age_reconnects_over_a_new_connection_keeping_its_config() {
    reconnects_when_its_stream_reaches_its_age(IpAddr::V4(Ipv4Addr::new(127, 0, 71, 1)), false)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_stream_that_reaches_its_age_reconnects_over_a_new_connection_keeping_its_config() {
    reconnects_when_its_stream_reaches_its_age(IpAddr::V4(Ipv4Addr::new(127, 0, 71, 2)), true)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_sends_its_proxy_to_another_one_without_a_config_gap() {
    let client_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 71, 3));
    let servers = [
        Server::start(client_ip, StreamAge::default()).await,
        Server::start(client_ip, StreamAge::default()).await,
    ];
    let envoy = Envoy::start(&[servers[0].addr, servers[1].addr], false).await;
    let (at, before) = synced(&envoy, &[&servers[0], &servers[1]]).await;
    let [first, second] = servers;
    let (stopping, other) = if at == 0 {
        (first, second)
    } else {
        (second, first)
    };

    let stopped_at = SystemTime::now();
    stopping.stop.send_replace(true);
    let (drained, since) = tokio::join!(
        tokio::time::timeout(DRAIN, stopping.task),
        keeps_config(
            &envoy,
            before,
            "the proxy to sync with the other server",
            || { other.synced_since() }
        ),
    );
    let served = drained.expect("the stopping server's connections closed within DRAIN");
    served
        .expect("no panic")
        .expect("the server stopped cleanly");
    assert!(stopping.status.get(&proxy()).is_none(), "its stream ended");
    assert!(
        since >= stopped_at,
        "the other server's stream opened after the stop"
    );
    let cx = envoy.xds_connections().await;
    assert!(
        cx.get("close_notify") >= Some(&1),
        "no GOAWAY reached the proxy: {cx:?}"
    );
}
