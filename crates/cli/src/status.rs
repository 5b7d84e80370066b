//! `remora proxy-status` and `remora proxy-config`: what the control plane says about its
//! proxies, over the remora.v1 API.

use std::{fmt::Write as _, process::ExitCode};

use remora_admin::pb::{self, proxies_client::ProxiesClient};
use remora_xds::snapshot::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

#[derive(clap::Args)]
pub struct StatusArgs {
    /// The control plane's gRPC address.
    #[arg(long, default_value = "127.0.0.1:15010")]
    server: String,
    /// Only this namespace.
    #[arg(long, short)]
    namespace: Option<String>,
}

#[derive(clap::Args)]
pub struct ConfigArgs {
    /// The proxy, NAMESPACE/POD.
    proxy: String,
    #[arg(long, default_value = "127.0.0.1:15010")]
    server: String,
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

async fn client(server: &str) -> Result<ProxiesClient<tonic::transport::Channel>, String> {
    ProxiesClient::connect(format!("http://{server}"))
        .await
        .map_err(|e| format!("cannot reach the control plane at {server}: {e}"))
}

pub fn status(args: &StatusArgs) -> ExitCode {
    block_on(async {
        let list = client(&args.server)
            .await?
            .list(pb::ListProxiesRequest {
                namespace: args.namespace.clone().unwrap_or_default(),
            })
            .await
            .map_err(|e| e.message().to_owned())?
            .into_inner();
        Ok(render(&list))
    })
}

pub fn config(args: &ConfigArgs) -> ExitCode {
    let Some((namespace, name)) = args.proxy.split_once('/') else {
        eprintln!("remora proxy-config: {:?}: write NAMESPACE/POD", args.proxy);
        return ExitCode::FAILURE;
    };
    block_on(async {
        let r = client(&args.server)
            .await?
            .get_config(pb::GetConfigRequest {
                namespace: namespace.into(),
                name: name.into(),
            })
            .await
            .map_err(|e| e.message().to_owned())?
            .into_inner();
        Ok(format!("{}\n", r.json))
    })
}

/// One line per proxy, a column per type, then Envoy's words for every rejection.
fn render(list: &pb::ListProxiesResponse) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<40} {:<6} {:<7} {:<7} {:<7} RDS",
        "PROXY", "MODE", "CDS", "EDS", "LDS"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nack_shows_in_its_column_and_with_envoys_message() {
        let list = pb::ListProxiesResponse {
            proxies: vec![pb::Proxy {
                namespace: "demo".into(),
                name: "web-0".into(),
                mode: "sotw".into(),
                connected_at: 0,
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
        let text = render(&list);
        let row = text.lines().nth(1).expect("a row");
        assert!(row.starts_with("demo/web-0"), "{text}");
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[1..], ["sotw", "SYNCED", "-", "-", "NACKED"]);
        assert!(text.contains("rejected: demo/web-0 RDS: bad regex"));
    }
}
