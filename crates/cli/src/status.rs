//! `remora proxy-status` and `remora proxy-config`: what the control plane says about its
//! proxies, over the remora.v1 API.

use std::{
    fmt::Write as _,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use remora_admin::pb::{self, proxies_client::ProxiesClient};
use remora_identity::{TrustBundle, dial, tls::client_config};
use remora_xds::snapshot::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

/// How long a call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the control plane is and how to prove who you are to it.
#[derive(clap::Args)]
pub struct Connection {
    /// The control plane's gRPC address (a cluster install: port-forward its Service's xDS
    /// port, e.g. `kubectl -n remora-system port-forward svc/remora 18000`).
    #[arg(long, default_value = "127.0.0.1:15010")]
    server: String,
    /// The mesh's trust bundle (PEM), to speak TLS to a cluster's control plane: the `ca.crt`
    /// of its CA Secret. Without it the call is plaintext, as `remora local --insecure` serves.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The name the control plane's certificate is checked for (default: the host of
    /// --server); through a port-forward, its Service's name, e.g. remora.remora-system.svc.
    #[arg(long)]
    server_name: Option<String>,
    /// A file holding a bearer token the API server accepts (a kubeconfig's, or `kubectl
    /// create token`); RBAC must let its user get/list proxies.remora.dev.
    #[arg(long)]
    token_file: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    connection: Connection,
    /// Only this namespace.
    #[arg(long, short)]
    namespace: Option<String>,
}

#[derive(clap::Args)]
pub struct ConfigArgs {
    /// The proxy, NAMESPACE/POD.
    proxy: String,
    #[command(flatten)]
    connection: Connection,
}

/// The columns: each served type by its short name.
const TYPES: [(&str, &str); 4] = [
    ("CDS", CLUSTER),
    ("EDS", ENDPOINT),
    ("LDS", LISTENER),
    ("RDS", ROUTE),
];

fn block_on<F: std::future::Future<Output = Result<String, String>>>(f: F) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(f));
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("remora: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Adds the bearer token, when there is one, to every call.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Client = ProxiesClient<InterceptedService<Channel, Bearer>>;

async fn client(c: &Connection) -> Result<Client, String> {
    let server = &c.server;
    let channel = match &c.ca_file {
        Some(file) => {
            let pem = std::fs::read_to_string(file)
                .map_err(|e| format!("--ca-file {}: {e}", file.display()))?;
            let bundle = TrustBundle::from_pem(&pem)
                .map_err(|e| format!("--ca-file {}: {e}", file.display()))?;
            let config = client_config(&bundle, None).map_err(|e| e.to_string())?;
            let host = server.rsplit_once(':').map_or(server.as_str(), |(h, _)| h);
            let name = c.server_name.as_deref().unwrap_or(host);
            dial(server, name, config, CALL_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?
        }
        None => Endpoint::from_shared(format!("http://{server}"))
            .map_err(|e| format!("--server {server}: {e}"))?
            .timeout(CALL_TIMEOUT)
            .connect()
            .await
            .map_err(|e| format!("cannot reach the control plane at {server}: {e}"))?,
    };
    Ok(ProxiesClient::with_interceptor(channel, Bearer(token(c)?)))
}

/// `Bearer <token>` from --token-file; never quoted in an error.
fn token(c: &Connection) -> Result<Option<MetadataValue<Ascii>>, String> {
    let Some(file) = &c.token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("--token-file {}: {e}", file.display()))?;
    MetadataValue::try_from(format!("Bearer {}", text.trim()))
        .map(Some)
        .map_err(|_| {
            format!(
                "--token-file {}: not a token (printable ASCII)",
                file.display()
            )
        })
}

pub fn status(args: &StatusArgs) -> ExitCode {
    block_on(async {
        let list = client(&args.connection)
            .await?
            .list(pb::ListProxiesRequest {
                namespace: args.namespace.clone().unwrap_or_default(),
            })
            .await
            .map_err(|e| format!("{:?}: {}", e.code(), e.message()))?
            .into_inner();
        Ok(render(&list, SystemTime::now()))
    })
}

pub fn config(args: &ConfigArgs) -> ExitCode {
    let Some((namespace, name)) = args.proxy.split_once('/') else {
        eprintln!("remora proxy-config: {:?}: write NAMESPACE/POD", args.proxy);
        return ExitCode::FAILURE;
    };
    block_on(async {
        let r = client(&args.connection)
            .await?
            .get_config(pb::GetConfigRequest {
                namespace: namespace.into(),
                name: name.into(),
            })
            .await
            .map_err(|e| format!("{:?}: {}", e.code(), e.message()))?
            .into_inner();
        Ok(format!("{}\n", r.json))
    })
}

/// One line per proxy, a column per type, its certificate's expiry (from `now`), the replica
/// serving it and its identity, then Envoy's words for every rejection.
fn render(list: &pb::ListProxiesResponse, now: SystemTime) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<40} {:<6} {:<7} {:<7} {:<7} {:<7} {:<8} {:<24} IDENTITY",
        "PROXY", "MODE", "CDS", "EDS", "LDS", "RDS", "CERT", "REPLICA"
    );
    let mut nacks = Vec::new();
    for p in &list.proxies {
        let name = format!("{}/{}", p.namespace, p.name);
        let mut line = format!("{name:<40} {:<6}", p.mode);
        for (short, url) in TYPES {
            let state = match p.types.iter().find(|t| t.type_url == url) {
                None => "-",
                Some(t) => {
                    if !t.nack_message.is_empty() && t.state() == pb::SyncState::Nacked {
                        nacks.push(format!("{name} {short}: {}", t.nack_message));
                    }
                    match t.state() {
                        pb::SyncState::Synced => "SYNCED",
                        pb::SyncState::Stale => "STALE",
                        pb::SyncState::Nacked => "NACKED",
                        pb::SyncState::Unspecified => "?",
                    }
                }
            };
            let _ = write!(line, " {state:<7}");
        }
        let identity = if p.spiffe_id.is_empty() {
            "-"
        } else {
            &p.spiffe_id
        };
        let expiry = expires_in(p.certificate_not_after, now);
        let replica = if p.replica.is_empty() {
            "-"
        } else {
            &p.replica
        };
        let _ = write!(line, " {expiry:<8} {replica:<24} {identity}");
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if list.proxies.is_empty() {
        out.push_str("no proxy is connected\n");
    }
    for n in nacks {
        let _ = writeln!(out, "rejected: {n}");
    }
    out
}

/// How long until `not_after` (seconds since the epoch): `23h59m`, `4m10s`, `expired`, or
/// `-` without a certificate.
fn expires_in(not_after: i64, now: SystemTime) -> String {
    if not_after <= 0 {
        return "-".into();
    }
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let Some(left) = u64::try_from(not_after)
        .ok()
        .and_then(|t| t.checked_sub(now))
    else {
        return "expired".into();
    };
    match left {
        0 => "expired".into(),
        s if s >= 3600 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s => format!("{}m{}s", s / 60, s % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificates_expiry_reads_as_time_left() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(expires_in(0, now), "-");
        assert_eq!(expires_in(900, now), "expired");
        assert_eq!(expires_in(1_250, now), "4m10s");
        assert_eq!(expires_in(1_000 + 86_340, now), "23h59m");
    }

    #[test]
    fn a_nack_shows_in_its_column_and_with_envoys_message() {
        let list = pb::ListProxiesResponse {
            proxies: vec![pb::Proxy {
                namespace: "demo".into(),
                name: "web-0".into(),
                mode: "sotw".into(),
                connected_at: 0,
                spiffe_id: "spiffe://cluster.local/ns/demo/sa/web".into(),
                certificate_not_after: 100_000,
                replica: "remora-7d9f-x2k4p".into(),
                types: vec![
                    pb::TypeSync {
                        type_url: TYPES[0].1.into(),
                        state: pb::SyncState::Synced.into(),
                        ..Default::default()
                    },
                    pb::TypeSync {
                        type_url: TYPES[3].1.into(),
                        state: pb::SyncState::Nacked.into(),
                        nack_message: "bad regex".into(),
                        ..Default::default()
                    },
                ],
            }],
        };
        let text = render(&list, UNIX_EPOCH + Duration::from_secs(10_000));
        let row = text.lines().nth(1).expect("a row");
        assert!(row.starts_with("demo/web-0"), "{text}");
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols[1..],
            [
                "sotw",
                "SYNCED",
                "-",
                "-",
                "NACKED",
                "25h0m",
                "remora-7d9f-x2k4p",
                "spiffe://cluster.local/ns/demo/sa/web"
            ]
        );
        assert!(text.contains("rejected: demo/web-0 RDS: bad regex"));
    }
}
