//! One real Envoy process: started with a proxy's bootstrap, asked for its stats on its
//! admin port, killed on drop.

use std::{
    collections::BTreeMap,
    env, fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use remora_api::ValidationSettings;
use remora_envoy::bootstrap::Bootstrap;
use remora_model::input::ObjectKey;
use tokio::time::Instant;

use crate::{FleetError, http::Client, procfs::Process};

/// How often a wait for Envoy's admin address looks again.
const ADMIN_POLL: Duration = Duration::from_millis(20);
/// Lines of Envoy's log an error quotes.
const LOG_TAIL: usize = 15;

/// How the fleet's Envoys run.
#[derive(Clone, Debug)]
pub struct EnvoyOptions {
    /// The `envoy` binary.
    pub bin: PathBuf,
    /// Incremental xDS instead of state of the world.
    pub delta: bool,
    /// Worker threads (`--concurrency`); the injector gives a sidecar 2 unless its policy
    /// says otherwise.
    pub concurrency: u32,
}

/// The `envoy` to run: `ENVOY_BIN` if set (as `scripts/env.sh` sets it), else the first
/// `envoy` on `PATH`.
pub fn find_envoy() -> Result<PathBuf, FleetError> {
    if let Some(bin) = env::var_os("ENVOY_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(FleetError::NoEnvoy(format!(
                "ENVOY_BIN is {}, which is no file",
                bin.display()
            )))
        };
    }
    env::split_paths(&env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("envoy"))
        .find(|p| p.is_file())
        .ok_or_else(|| FleetError::NoEnvoy("no envoy on PATH and ENVOY_BIN is unset".into()))
}

/// What `envoy --version` says, e.g. `.../1.40.0/Clean/RELEASE/BoringSSL`.
pub fn version(bin: &Path) -> Result<String, FleetError> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .map_err(|source| FleetError::Io {
            what: format!("run {} --version", bin.display()),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_once("version:")
        .map_or(&*text, |(_, v)| v)
        .trim()
        .to_owned())
}

/// A running Envoy, the sidecar of one proxy pod.
pub struct Envoy {
    proxy: ObjectKey,
    child: Child,
    dir: PathBuf,
    admin: Option<SocketAddr>,
}

impl Envoy {
    /// Starts Envoy as `proxy`'s sidecar against the xDS server at `xds`, its files in `dir`
    /// (created here).
    pub fn spawn(
        proxy: ObjectKey,
        xds: SocketAddr,
        dir: PathBuf,
        options: &EnvoyOptions,
    ) -> Result<Envoy, FleetError> {
        let io = |what: String| move |source| FleetError::Io { what, source };
        fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let bootstrap = Bootstrap {
            proxy: proxy.clone(),
            service_account: "fleet-proxy".into(),
            workload: "Deployment/fleet".into(),
            xds_host: xds.ip().to_string(),
            xds_port: xds.port(),
            // Port 0: Envoy picks one and writes it to the admin address path.
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            delta: options.delta,
            max_regex_program_size: ValidationSettings::default().max_regex_program_size,
        };
        let config = dir.join("bootstrap.json");
        fs::write(&config, bootstrap.to_json().to_string())
            .map_err(io(format!("write {}", config.display())))?;
        let log_path = dir.join("envoy.log");
        let log =
            fs::File::create(&log_path).map_err(io(format!("create {}", log_path.display())))?;
        let child = Command::new(&options.bin)
            .arg("-c")
            .arg(&config)
            .arg("--admin-address-path")
            .arg(dir.join("admin"))
            .args(["--concurrency", &options.concurrency.to_string()])
            .args(["--log-level", "warning"])
            // As the injector runs it: a pod restarts containers, it needs no hot restart.
            .arg("--disable-hot-restart")
            .stdin(Stdio::null())
            // The access log; the benchmark's requests would fill a file for nothing.
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(io(format!("start {} for {proxy}", options.bin.display())))?;
        Ok(Envoy {
            proxy,
            child,
            dir,
            admin: None,
        })
    }

    /// The proxy this Envoy is the sidecar of.
    pub fn proxy(&self) -> &ObjectKey {
        &self.proxy
    }

    /// An error if the process has ended, quoting its log.
    pub fn check_running(&mut self) -> Result<(), FleetError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(FleetError::EnvoyExited {
                proxy: self.proxy.clone(),
                status: status.to_string(),
                log: self.log_tail(),
            }),
            Err(source) => Err(FleetError::Io {
                what: format!("check on the Envoy of {}", self.proxy),
                source,
            }),
        }
    }

    /// Envoy's admin address, once it has written it (by `deadline`).
    pub async fn admin(&mut self, deadline: Instant) -> Result<SocketAddr, FleetError> {
        if let Some(admin) = self.admin {
            return Ok(admin);
        }
        let path = self.dir.join("admin");
        loop {
            self.check_running()?;
            let written = fs::read_to_string(&path).ok();
            if let Some(admin) = written.and_then(|t| t.trim().parse().ok()) {
                self.admin = Some(admin);
                return Ok(admin);
            }
            if Instant::now() >= deadline {
                return Err(FleetError::Timeout {
                    waiting: format!("the admin address of the Envoy of {}", self.proxy),
                    detail: self.log_tail(),
                });
            }
            tokio::time::sleep(ADMIN_POLL).await;
        }
    }

    /// The counters and gauges whose names match the regular expression `filter`.
    pub async fn stats(&mut self, filter: &str) -> Result<BTreeMap<String, u64>, FleetError> {
        let admin = self.admin(Instant::now()).await?;
        let path = format!("/stats?filter={}", percent_encode(filter));
        let answer = Client::new(admin)
            .get("localhost", &path, None)
            .await
            .map_err(|e| FleetError::Admin {
                proxy: self.proxy.clone(),
                detail: e.to_string(),
            })?;
        if !answer.status.is_success() {
            return Err(FleetError::Admin {
                proxy: self.proxy.clone(),
                detail: format!("{path} answered {}: {}", answer.status, answer.body),
            });
        }
        Ok(parse_stats(&answer.body))
    }

    /// The Envoy process, for its memory and CPU time.
    pub fn process(&self) -> Process {
        Process::Pid(self.child.id())
    }

    /// The end of Envoy's log, for errors.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        // Either may fail only because the process has already ended, which is the goal.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name: value` lines of Envoy's text stats; histograms and text readouts are skipped.
fn parse_stats(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(": ")?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// A query parameter's value with everything but unreserved characters escaped.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_keep_numbers_and_skip_histograms() {
        let text = "server.memory_allocated: 1234\nserver.state: 0\n\
                    cluster.x.upstream_cx_length_ms: P0(nan,0) P25(nan,0)\n";
        let stats = parse_stats(text);
        assert_eq!(stats.get("server.memory_allocated"), Some(&1234));
        assert_eq!(stats.get("server.state"), Some(&0));
        assert_eq!(stats.len(), 2);
    }

    #[test]
    fn a_stats_filter_is_escaped_for_the_query() {
        assert_eq!(
            percent_encode(r"^server\.(state|memory)$"),
            "%5Eserver%5C.%28state%7Cmemory%29%24"
        );
    }
}
