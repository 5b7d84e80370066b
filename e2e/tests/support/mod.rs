//! Real components on loopback: the control plane in local mode over a temporary folder,
//! Envoy processes, upstream HTTP servers that say who they are, and a plain HTTP client.
//! Every wait is a bounded loop that gives up with a message.
#![allow(dead_code)] // each test file uses a different part

pub mod apps;
pub mod cluster;
pub mod grpc;
pub mod injection;
pub mod kubelet;
pub mod meshed;
pub mod pods;
pub mod ports;
pub mod scene;

use std::{
    fs,
    net::{IpAddr, SocketAddr},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use remora_api::ValidationSettings;
use remora_envoy::bootstrap::Bootstrap;
use remora_local::{LocalConfig, Running, start};
use remora_model::input::ObjectKey;
use remora_runtime::Debounce;
pub use remora_test_support::envoy_bin;
use remora_xds::sync::SyncState;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// Polls `check` every 100 ms until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T>(secs: u64, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..secs * 10 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gave up after {secs} s waiting for {what}");
}

/// The control plane in local mode over a folder the test writes.
pub struct ControlPlane {
    pub dir: tempfile::TempDir,
    pub running: Option<Running>,
    pub addr: SocketAddr,
}

impl ControlPlane {
    pub async fn start(files: &[(&str, String)]) -> ControlPlane {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, text) in files {
            fs::write(dir.path().join(name), text).expect("write manifest");
        }
        let running = Self::run(dir.path(), "127.0.0.1:0".parse().expect("addr")).await;
        let addr = running.xds_addr;
        ControlPlane {
            dir,
            running: Some(running),
            addr,
        }
    }

    async fn run(dir: &Path, addr: SocketAddr) -> Running {
        start(LocalConfig {
            dir: dir.to_owned(),
            xds_addr: addr,
            // Loopback without privileges: the proxies are called on purpose.
            addressing: remora_model::config::Addressing::Explicit,
            poll: Duration::from_millis(50),
            debounce: Debounce {
                window: Duration::from_millis(20),
                max_delay: Duration::from_millis(200),
            },
            validation: ValidationSettings::default(),
        })
        .await
        .expect("local mode starts")
    }

    /// Replaces one manifest file; local mode picks it up.
    pub fn write(&self, name: &str, text: &str) {
        // A temporary file and a rename, so the poller never reads half a file.
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        fs::write(&tmp, text).expect("write manifest");
        fs::rename(&tmp, self.dir.path().join(name)).expect("rename manifest");
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }

    /// Starts again on the same address, as a restarted control plane would.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.running = Some(Self::run(self.dir.path(), self.addr).await);
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    /// How many resources of `type_url` the running control plane has sent `proxy` on its
    /// current stream.
    pub fn resources_sent(&self, proxy: &ObjectKey, type_url: &str) -> u64 {
        self.running()
            .status
            .get(proxy)
            .and_then(|p| p.types.get(type_url).map(|t| t.resources_sent))
            .unwrap_or_default()
    }

    /// Waits until the proxy has ACKed the latest config of every type it asked for.
    pub async fn synced(&self, proxy: &ObjectKey) {
        let status = self.running().status.clone();
        eventually(20, &format!("{proxy} to be SYNCED"), async || {
            let s = status.get(proxy)?;
            (s.types.len() == 4 && s.types.values().all(|t| t.state() == SyncState::Synced))
                .then_some(())
        })
        .await;
    }
}

/// A real Envoy, killed on drop.
pub struct Envoy {
    child: Child,
    pub admin: SocketAddr,
    dir: tempfile::TempDir,
}

/// A regex lower than the control plane's limit allows (its RE2 program is 65
/// instructions; the limit is 100), but beyond [`LOWER_REGEX_LIMIT`]: a proxy started with
/// that limit refuses the route that carries it, which no validation can foresee.
pub const BEYOND_LOWER_LIMIT: &str = "/x{60}";

/// A regex limit below the control plane's.
pub const LOWER_REGEX_LIMIT: u32 = 50;

impl Envoy {
    /// An Envoy whose bootstrap says what the control planes of these tests validate
    /// against.
    pub async fn start(proxy: ObjectKey, xds: SocketAddr, delta: bool) -> Envoy {
        let limit = ValidationSettings::default().max_regex_program_size;
        Self::start_with_regex_limit(proxy, xds, delta, limit).await
    }

    /// An Envoy that refuses regexes whose RE2 program is larger than `limit`: below the
    /// control plane's, it refuses routes the control plane sends (as a proxy started before
    /// the limit was raised would).
    pub async fn start_with_regex_limit(
        proxy: ObjectKey,
        xds: SocketAddr,
        delta: bool,
        limit: u32,
    ) -> Envoy {
        let bootstrap = Bootstrap {
            proxy,
            service_account: "default".into(),
            workload: "Deployment/web".into(),
            xds_host: xds.ip().to_string(),
            xds_port: xds.port(),
            admin: "127.0.0.1:0".parse().expect("addr"),
            delta,
            max_regex_program_size: limit,
        };
        Self::from_config(&bootstrap.to_json()).await
    }

    /// An Envoy started from the bootstrap `config`, once its admin interface listens.
    pub async fn from_config(config: &serde_json::Value) -> Envoy {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bootstrap.json");
        fs::write(&path, config.to_string()).expect("write bootstrap");
        let admin_path = dir.path().join("admin");
        let log = fs::File::create(dir.path().join("envoy.log")).expect("log file");
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&path)
            .args([
                "--use-dynamic-base-id",
                "--concurrency",
                "1",
                "--log-level",
                "warning",
            ])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("envoy starts");
        let admin = eventually(30, "Envoy's admin address", async || {
            fs::read_to_string(&admin_path).ok()?.trim().parse().ok()
        })
        .await;
        Envoy { child, admin, dir }
    }

    /// One counter or gauge from Envoy's admin stats.
    pub async fn stat(&self, name: &str) -> Option<u64> {
        let r = get(
            self.admin,
            "localhost",
            &format!("/stats?filter=^{name}$"),
            &[],
        )
        .await
        .ok()?;
        r.body
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: "))?.trim().parse().ok())
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How an upstream behaves.
#[derive(Clone, Copy, Default)]
pub struct Behaviour {
    /// Every n-th request gets a 503.
    pub fail_every: Option<u64>,
    pub delay: Option<Duration>,
}

/// An HTTP/1.1 upstream that answers `<name> <path>`, echoes the request's `x-` headers
/// (`echo-x-...`) and counts what it served.
pub struct Upstream {
    pub name: String,
    pub served: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start(name: &str, addr: SocketAddr, behaviour: Behaviour) -> Upstream {
        let listener = TcpListener::bind(addr).await.expect("bind upstream");
        let served = Arc::new(AtomicU64::new(0));
        let (n, count) = (name.to_owned(), served.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(conn, n.clone(), count.clone(), behaviour));
            }
        });
        Upstream {
            name: name.into(),
            served,
            task,
        }
    }
}

async fn serve(mut conn: TcpStream, name: String, count: Arc<AtomicU64>, b: Behaviour) {
    let mut buf = Vec::new();
    loop {
        let Some(head_end) = read_head(&mut conn, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let length = header(&head, "content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + length);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(d) = b.delay {
            tokio::time::sleep(d).await;
        }
        let status = match b.fail_every {
            Some(k) if n.is_multiple_of(k) => "503 Service Unavailable",
            _ => "200 OK",
        };
        let body = format!("{name} {path}");
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nx-served-by: {name}\r\n{}\r\n{body}",
            body.len(),
            echoed(&head)
        );
        if conn.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// The request's `x-` headers as `echo-x-...` response header lines, so a test sees what a
/// proxy did to the request's headers.
fn echoed(head: &str) -> String {
    head.lines()
        .skip(1)
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let k = k.trim().to_ascii_lowercase();
            k.starts_with("x-")
                .then(|| format!("echo-{k}: {}\r\n", v.trim()))
        })
        .collect()
}

/// Reads until the end of a request or response head; returns its length.
async fn read_head(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        let mut chunk = [0u8; 4096];
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.head, name)
    }
}

/// One GET on its own connection.
pub async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Reply> {
    let mut conn = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await??;
    let mut req = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes()).await?;
    // Read the head and then exactly the body its content-length announces: after a reply
    // it made itself, Envoy waits a while for the client to close first.
    let mut raw = Vec::new();
    let read = async {
        let end = read_head(&mut conn, &mut raw)
            .await
            .ok_or_else(|| std::io::Error::other("connection closed before a reply"))?;
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let length = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok());
        match length {
            Some(n) => {
                while raw.len() < end + n {
                    let mut chunk = [0u8; 4096];
                    match conn.read(&mut chunk).await? {
                        0 => break,
                        k => raw.extend_from_slice(&chunk[..k]),
                    }
                }
            }
            None => {
                conn.read_to_end(&mut raw).await?;
            }
        }
        Ok::<_, std::io::Error>((head, String::from_utf8_lossy(&raw[end..]).into_owned()))
    };
    let (head, body) = tokio::time::timeout(Duration::from_secs(10), read).await??;
    let head = head.trim_end().to_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {head:?}")))?;
    Ok(Reply { status, head, body })
}

/// Sends `n` requests and counts the answers by the upstream that served them (by status for
/// answers Envoy made itself).
pub async fn tally(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        let key = match get(addr, host, path, headers).await {
            Ok(r) if r.status == 200 => r.body.split_whitespace().next().unwrap_or("").to_owned(),
            Ok(r) => r.status.to_string(),
            Err(e) => format!("error: {e}"),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// A loopback subnet of its own for each test, so tests run side by side.
pub fn ip(subnet: u8, host: u8, last: u8) -> IpAddr {
    IpAddr::from([127, subnet, host, last])
}
