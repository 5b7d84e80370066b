//! `remora init-network`: redirect the pod's TCP traffic through its proxy (run in the init
//! container that holds `NET_ADMIN` and `NET_RAW`, inside the pod's network namespace).

use std::process::ExitCode;

use remora_api::sidecar_policy::{INBOUND_CAPTURE_PORT, Interception, OUTBOUND_CAPTURE_PORT};
use remora_capture::{
    Capture, CapturePorts, Family, ProxyUser,
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
        // What the proxy does with unknown destinations is its own config, not a nat rule.
        ..Interception::default()
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

#[cfg(test)]
mod tests {
    use clap::Parser;
    use remora_api::{
        SidecarPolicy,
        sidecar_policy::{PROXY_GID, PROXY_UID},
    };
    use remora_inject::{ControlPlane, INIT_CONTAINER, Injection, JsonPatchOp, Layout};
    use serde_json::json;

    use super::*;

    #[derive(Parser)]
    enum Remora {
        InitNetwork(Args),
    }

    /// The arguments of the init container the injector gives a pod declaring port 8080 and
    /// probed on 8081 under a policy that sets every interception field.
    fn injected_args() -> Vec<String> {
        let policy: SidecarPolicy = serde_json::from_value(json!({
            "apiVersion": "remora.dev/v1alpha1", "kind": "SidecarPolicy",
            "metadata": {"name": "mesh", "namespace": "shop"},
            "spec": {"proxy": {"image": "envoyproxy/envoy", "version": "v1.40.0", "interception": {
                "inboundPorts": [8080, 9090],
                "excludeInboundPorts": [22],
                "excludeOutboundPorts": [5432],
                "excludeOutboundCidrs": ["10.96.0.0/12", "fd00::/8"],
            }}},
        }))
        .expect("a policy");
        let pod = serde_json::from_value(json!({"spec": {"containers": [{
            "name": "web",
            "ports": [{"containerPort": 8080}],
            "livenessProbe": {"tcpSocket": {"port": 8081}},
        }]}}))
        .expect("a pod");
        let control_plane = ControlPlane {
            xds_host: "remora.remora-system.svc".into(),
            xds_port: 18000,
            delta: false,
            image: "ghcr.io/remora-mesh/remora:test".into(),
            identity: None,
        };
        let injection = Injection {
            policy: &policy,
            version: "1.40.0",
            revision: "r",
            layout: Layout::Native,
            control_plane: &control_plane,
            pod_security: remora_inject::PodSecurity::Privileged,
        };
        let ops = remora_inject::patch(&pod, &injection).expect("injected");
        let init = ops
            .iter()
            .find_map(|JsonPatchOp::Add { path, value }| {
                (path == "/spec/initContainers").then(|| value[0].clone())
            })
            .expect("init containers added");
        assert_eq!(init["name"], INIT_CONTAINER);
        serde_json::from_value(init["args"].clone()).expect("args")
    }

    #[test]
    fn the_injected_init_container_programs_the_policys_interception() {
        let args = injected_args();
        let line = ["remora".to_string()].into_iter().chain(args);
        let Remora::InitNetwork(parsed) =
            Remora::try_parse_from(line).expect("init-network parses");
        let want = Interception {
            inbound_ports: vec![8080, 9090],
            // Only the policy's: the probe on 8081 reaches the app through the proxy.
            exclude_inbound_ports: vec![22],
            exclude_outbound_ports: vec![5432],
            exclude_outbound_cidrs: vec!["10.96.0.0/12".into(), "fd00::/8".into()],
            ..Interception::default()
        };
        let proxy = ProxyUser {
            uid: PROXY_UID,
            gid: PROXY_GID,
        };
        assert_eq!(
            capture(&parsed),
            Capture::new(proxy, CapturePorts::default(), &want)
        );
    }
}
