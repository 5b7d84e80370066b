//! The nat rules of a [`Capture`] as `iptables-restore` input, one IP family at a time.

use crate::{Capture, Family, InboundPorts};

/// Inbound connections (from `PREROUTING`): exclusions, then the ports to redirect.
pub const INBOUND_CHAIN: &str = "REMORA_INBOUND";
/// Redirects an inbound connection to the inbound capture port.
pub const IN_REDIRECT_CHAIN: &str = "REMORA_IN_REDIRECT";
/// Outbound connections (from `OUTPUT`): what is left alone, then the redirect.
pub const OUTPUT_CHAIN: &str = "REMORA_OUTPUT";
/// Redirects an outbound connection to the outbound capture port.
pub const REDIRECT_CHAIN: &str = "REMORA_REDIRECT";

/// Our chains, in the order they are declared.
pub const CHAINS: [&str; 4] = [
    INBOUND_CHAIN,
    IN_REDIRECT_CHAIN,
    OUTPUT_CHAIN,
    REDIRECT_CHAIN,
];

/// The built-in chains of the nat table, which the rendered text resets.
const BUILTIN_CHAINS: [&str; 4] = ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"];

/// The jumps from the built-in chains into ours: `(built-in chain, our chain)`.
pub const JUMPS: [(&str, &str); 2] = [("PREROUTING", INBOUND_CHAIN), ("OUTPUT", OUTPUT_CHAIN)];

/// The whole nat table for one family, as `iptables-restore` (IPv4) or `ip6tables-restore`
/// (IPv6) reads it.
///
/// The text declares every built-in nat chain and ours, so restoring it (without
/// `--noflush`) replaces the table: a restarted init container that applies it again gets
/// the same table, with nothing duplicated and no "chain already exists" failure. Equal
/// captures give equal text. Within each chain, whatever is left alone comes before the
/// redirect: in `REMORA_OUTPUT` the proxy's own connections (owner UID and GID), loopback,
/// the pod's own addresses (`-o lo`), excluded ports, excluded networks of this family; in
/// `REMORA_INBOUND` the excluded ports (the proxy's admin and readiness ports among them).
pub fn render(capture: &Capture, family: Family) -> String {
    let mut text = format!(
        "# remora init-network: the whole {family} nat table. Restoring it replaces every nat\n\
         # rule of this network namespace, so applying it again gives the same table.\n\
         *nat\n"
    );
    for chain in BUILTIN_CHAINS {
        text += &format!(":{chain} ACCEPT [0:0]\n");
    }
    for chain in CHAINS {
        text += &format!(":{chain} - [0:0]\n");
    }
    for (from, to) in JUMPS {
        text += &format!("-A {from} -p tcp -j {to}\n");
    }
    for rule in inbound(capture).iter().chain(&outbound(capture, family)) {
        text += rule;
        text.push('\n');
    }
    text += "COMMIT\n";
    text
}

fn inbound(capture: &Capture) -> Vec<String> {
    let mut rules: Vec<String> = capture
        .exclude_inbound_ports()
        .iter()
        .map(|port| {
            rule(
                INBOUND_CHAIN,
                &format!("-p tcp --dport {port}"),
                "excluded inbound port",
                "RETURN",
            )
        })
        .collect();
    match capture.inbound() {
        InboundPorts::All => rules.push(rule(
            INBOUND_CHAIN,
            "-p tcp",
            "every other inbound port",
            IN_REDIRECT_CHAIN,
        )),
        InboundPorts::Only(listed) => {
            let ports = capture.ports();
            let capture_ports = [ports.outbound, ports.inbound].into_iter();
            let mut redirected: Vec<u16> = listed.iter().copied().chain(capture_ports).collect();
            redirected.sort_unstable();
            rules.extend(redirected.into_iter().map(|port| {
                rule(
                    INBOUND_CHAIN,
                    &format!("-p tcp --dport {port}"),
                    "intercepted inbound port",
                    IN_REDIRECT_CHAIN,
                )
            }));
        }
    }
    rules.push(format!(
        "-A {IN_REDIRECT_CHAIN} -p tcp -j REDIRECT --to-ports {}",
        capture.ports().inbound
    ));
    rules
}

fn outbound(capture: &Capture, family: Family) -> Vec<String> {
    let proxy = capture.proxy();
    let mut rules = vec![
        rule(
            OUTPUT_CHAIN,
            &format!(
                "-m owner --uid-owner {} --gid-owner {}",
                proxy.uid, proxy.gid
            ),
            "the proxy own connections",
            "RETURN",
        ),
        rule(
            OUTPUT_CHAIN,
            &format!("-d {}", family.loopback()),
            "loopback",
            "RETURN",
        ),
        rule(OUTPUT_CHAIN, "-o lo", "the pod own addresses", "RETURN"),
    ];
    rules.extend(capture.exclude_outbound_ports().iter().map(|port| {
        rule(
            OUTPUT_CHAIN,
            &format!("-p tcp --dport {port}"),
            "excluded outbound port",
            "RETURN",
        )
    }));
    rules.extend(capture.exclude_outbound_cidrs(family).map(|cidr| {
        rule(
            OUTPUT_CHAIN,
            &format!("-d {cidr}"),
            "excluded outbound network",
            "RETURN",
        )
    }));
    rules.push(rule(
        OUTPUT_CHAIN,
        "-p tcp",
        "every other outbound connection",
        REDIRECT_CHAIN,
    ));
    rules.push(format!(
        "-A {REDIRECT_CHAIN} -p tcp -j REDIRECT --to-ports {}",
        capture.ports().outbound
    ));
    rules
}

fn rule(chain: &str, matches: &str, why: &str, target: &str) -> String {
    format!("-A {chain} {matches} -m comment --comment \"remora: {why}\" -j {target}")
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
