//! `remora init-network`: redirect the pod's TCP traffic through its proxy (run in the init
//! container that holds `NET_ADMIN` and `NET_RAW`, inside the pod's network namespace).

use std::process::ExitCode;

use remora_api::sidecar_policy::Interception;
use remora_capture::{
    Capture, CapturePorts, Family, INBOUND_CAPTURE_PORT, OUTBOUND_CAPTURE_PORT, ProxyUser,
    apply::{self, BackendChoice, FamilyOutcome},
    rules,
};

#[derive(clap::Args)]
pub struct Args {
    /// The UID the proxy runs as: its own connections are never redirected.
    #[arg(long)]
    proxy_uid: u32,
    /// The GID the proxy runs as (both must match for a connection to count as the proxy's).
    #[arg(long)]
    proxy_gid: u32,
    /// The port of the proxy's outbound capture listener.
    #[arg(long, default_value_t = OUTBOUND_CAPTURE_PORT)]
    outbound_capture_port: u16,
    /// The port of the proxy's inbound capture listener.
    #[arg(long, default_value_t = INBOUND_CAPTURE_PORT)]
    inbound_capture_port: u16,
    /// Inbound ports to redirect, comma-separated; none means every port
    /// (the policy's `spec.proxy.interception.inboundPorts`).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    inbound_ports: Vec<i32>,
    /// Inbound ports never redirected, comma-separated (`excludeInboundPorts`); the proxy's
    /// admin and readiness ports always are.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    exclude_inbound_ports: Vec<i32>,
    /// Outbound destination ports never redirected, comma-separated (`excludeOutboundPorts`).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    exclude_outbound_ports: Vec<i32>,
    /// Outbound destination networks never redirected, comma-separated CIDRs, IPv4 or IPv6
    /// (`excludeOutboundCidrs`).
    #[arg(long, value_delimiter = ',')]
    exclude_outbound_cidrs: Vec<String>,
    /// The iptables backend: nft, legacy, or auto (nft unless the legacy nat table already
    /// holds rules).
    #[arg(long, default_value = "auto", value_parser = clap::builder::ValueParser::new(str::parse::<BackendChoice>))]
    iptables_backend: BackendChoice,
    /// Print the `iptables-restore` input of both families and change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(args: &Args) -> ExitCode {
    let capture = match capture(args) {
        Ok(capture) => capture,
        Err(e) => {
            eprintln!("remora init-network: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.dry_run {
        for family in Family::ALL {
            println!("# {family}, for {}-restore", family.command_prefix());
            print!("{}", rules::render(&capture, family));
        }
        return ExitCode::SUCCESS;
    }
    match apply::apply(&capture, args.iptables_backend) {
        Ok(applied) => {
            println!("iptables backend: {} ({})", applied.backend, applied.reason);
            for outcome in &applied.families {
                match outcome {
                    FamilyOutcome::Programmed {
                        family,
                        command,
                        rules,
                    } => println!("# {family}: programmed with {command} and read back\n{rules}"),
                    FamilyOutcome::Skipped { family, reason } => {
                        println!("# {family}: skipped: {reason}\n");
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("remora init-network: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The flags through the same validation as a policy's `spec.proxy.interception`.
fn capture(args: &Args) -> Result<Capture, remora_capture::CaptureError> {
    let interception = Interception {
        inbound_ports: args.inbound_ports.clone(),
        exclude_inbound_ports: args.exclude_inbound_ports.clone(),
        exclude_outbound_ports: args.exclude_outbound_ports.clone(),
        exclude_outbound_cidrs: args.exclude_outbound_cidrs.clone(),
    };
    let proxy = ProxyUser {
        uid: args.proxy_uid,
        gid: args.proxy_gid,
    };
    let ports = CapturePorts {
        outbound: args.outbound_capture_port,
        inbound: args.inbound_capture_port,
    };
    Capture::new(proxy, ports, &interception)
}
