//! `remora bootstrap`: the file Envoy starts with (the injector writes the same).

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use remora_envoy::bootstrap::Bootstrap;
use remora_model::input::ObjectKey;

use crate::regex_limit::RegexLimit;

#[derive(clap::Args)]
pub struct Args {
    /// The pod's namespace.
    #[arg(long)]
    namespace: String,
    /// The pod's name.
    #[arg(long)]
    pod: String,
    #[arg(long, default_value = "default")]
    service_account: String,
    /// The pod's workload, the source its stats name, e.g. `Deployment/web`; without it
    /// `Pod/<pod>`.
    #[arg(long)]
    workload: Option<String>,
    /// The control plane's xDS address, HOST:PORT (an IP or a DNS name).
    #[arg(long, default_value = "127.0.0.1:15010")]
    xds_address: String,
    /// Where Envoy's admin interface listens; keep it on loopback.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin_address: SocketAddr,
    /// Use incremental (delta) xDS instead of state of the world.
    #[arg(long)]
    delta: bool,
    /// Write here instead of standard output.
    #[arg(long)]
    output: Option<PathBuf>,
    #[command(flatten)]
    regex: RegexLimit,
}

pub fn run(args: &Args) -> ExitCode {
    let Some((host, port)) = args
        .xds_address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
    else {
        eprintln!(
            "remora bootstrap: --xds-address {:?}: write HOST:PORT, e.g. 127.0.0.1:15010",
            args.xds_address
        );
        return ExitCode::FAILURE;
    };
    let bootstrap = Bootstrap {
        proxy: ObjectKey::new(&args.namespace, &args.pod),
        service_account: args.service_account.clone(),
        workload: args
            .workload
            .clone()
            .unwrap_or_else(|| format!("Pod/{}", args.pod)),
        xds_host: host.to_owned(),
        xds_port: port,
        admin: args.admin_address,
        delta: args.delta,
        max_regex_program_size: args.regex.max_regex_program_size,
    };
    let text = format!("{:#}\n", bootstrap.to_json());
    match &args.output {
        None => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Some(path) => match std::fs::write(path, text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("remora bootstrap: cannot write {}: {e}", path.display());
                ExitCode::FAILURE
            }
        },
    }
}
