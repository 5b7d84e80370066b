use remora_api::sidecar_policy::Interception;

use super::*;
use crate::{CapturePorts, ProxyUser};

const PROXY: ProxyUser = ProxyUser {
    uid: 1337,
    gid: 1338,
};

fn capture(i: Interception) -> Capture {
    Capture::new(PROXY, CapturePorts::default(), &i).expect("valid interception")
}

/// The rules of one chain, in order.
fn chain<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("-A {name} ");
    text.lines().filter(|l| l.starts_with(&prefix)).collect()
}

fn position(rules: &[&str], needle: &str) -> usize {
    rules
        .iter()
        .position(|r| r.contains(needle))
        .unwrap_or_else(|| panic!("no rule with {needle:?} in {rules:#?}"))
}

fn everything() -> Interception {
    Interception {
        inbound_ports: vec![],
        exclude_inbound_ports: vec![22],
        exclude_outbound_ports: vec![5432],
        exclude_outbound_cidrs: vec!["10.96.0.0/12".into(), "fd00:1::/64".into()],
        ..Interception::default()
    }
}

#[test]
fn a_default_policy_renders_the_whole_ipv4_nat_table() {
    let want = r#"# remora init-network: the whole IPv4 nat table. Restoring it replaces every nat
# rule of this network namespace, so applying it again gives the same table.
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:REMORA_INBOUND - [0:0]
:REMORA_IN_REDIRECT - [0:0]
:REMORA_OUTPUT - [0:0]
:REMORA_REDIRECT - [0:0]
-A PREROUTING -p tcp -j REMORA_INBOUND
-A OUTPUT -p tcp -j REMORA_OUTPUT
-A REMORA_INBOUND -p tcp --dport 15000 -m comment --comment "remora: excluded inbound port" -j RETURN
-A REMORA_INBOUND -p tcp --dport 15021 -m comment --comment "remora: excluded inbound port" -j RETURN
-A REMORA_INBOUND -p tcp --dport 15090 -m comment --comment "remora: excluded inbound port" -j RETURN
-A REMORA_INBOUND -p tcp -m comment --comment "remora: every other inbound port" -j REMORA_IN_REDIRECT
-A REMORA_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A REMORA_OUTPUT -m owner --uid-owner 1337 --gid-owner 1338 -m comment --comment "remora: the proxy own connections" -j RETURN
-A REMORA_OUTPUT -d 127.0.0.0/8 -m comment --comment "remora: loopback" -j RETURN
-A REMORA_OUTPUT -o lo -m comment --comment "remora: the pod own addresses" -j RETURN
-A REMORA_OUTPUT -p tcp -m comment --comment "remora: every other outbound connection" -j REMORA_REDIRECT
-A REMORA_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
"#;
    assert_eq!(
        render(&capture(Interception::default()), Family::Ipv4),
        want
    );
}

#[test]
fn rendering_is_deterministic_so_a_rerun_restores_the_same_table() {
    for family in Family::ALL {
        let once = render(&capture(everything()), family);
        let again = render(&capture(everything()), family);
        assert_eq!(once, again);
        // The whole table: every built-in chain is declared (and so flushed by a restore).
        for builtin in BUILTIN_CHAINS {
            assert!(
                once.contains(&format!(":{builtin} ACCEPT [0:0]\n")),
                "{once}"
            );
        }
        assert!(once.contains("*nat\n") && once.ends_with("COMMIT\n"));
        // Listing order does not matter.
        let mut shuffled = everything();
        shuffled.exclude_outbound_cidrs.reverse();
        assert_eq!(render(&capture(shuffled), family), once);
    }
}

#[test]
fn both_families_jump_into_our_chains_and_match_the_proxy_uid_and_gid() {
    for family in Family::ALL {
        let text = render(&capture(Interception::default()), family);
        for chain in CHAINS {
            assert!(text.contains(&format!(":{chain} - [0:0]\n")), "{text}");
        }
        assert_eq!(
            chain(&text, "PREROUTING"),
            ["-A PREROUTING -p tcp -j REMORA_INBOUND"]
        );
        assert_eq!(
            chain(&text, "OUTPUT"),
            ["-A OUTPUT -p tcp -j REMORA_OUTPUT"]
        );
        let output = chain(&text, OUTPUT_CHAIN);
        assert!(
            output[0].contains("-m owner --uid-owner 1337 --gid-owner 1338 ")
                && output[0].ends_with("-j RETURN"),
            "the proxy's own connections are left alone first: {output:#?}"
        );
    }
}

#[test]
fn loopback_is_the_familys_own() {
    let v4 = render(&capture(Interception::default()), Family::Ipv4);
    let v6 = render(&capture(Interception::default()), Family::Ipv6);
    assert!(v4.contains("-d 127.0.0.0/8 ") && !v4.contains("::1"));
    assert!(v6.contains("-d ::1/128 ") && !v6.contains("127.0.0.0"));
    for text in [v4, v6] {
        let output = chain(&text, OUTPUT_CHAIN);
        assert!(position(&output, "-o lo ") < position(&output, REDIRECT_CHAIN));
    }
}

#[test]
fn an_excluded_network_appears_only_in_its_familys_text() {
    let c = capture(everything());
    let v4 = render(&c, Family::Ipv4);
    let v6 = render(&c, Family::Ipv6);
    assert!(v4.contains("-A REMORA_OUTPUT -d 10.96.0.0/12 ") && !v4.contains("fd00:1::"));
    assert!(v6.contains("-A REMORA_OUTPUT -d fd00:1::/64 ") && !v6.contains("10.96.0.0"));
}

#[test]
fn outbound_exclusions_come_before_the_redirect() {
    for family in Family::ALL {
        let text = render(&capture(everything()), family);
        let output = chain(&text, OUTPUT_CHAIN);
        let redirect = position(&output, &format!("-j {REDIRECT_CHAIN}"));
        assert_eq!(
            redirect,
            output.len() - 1,
            "the redirect is last: {output:#?}"
        );
        for excluded in [
            "--dport 5432 ",
            "-d 127.0.0.0/8",
            "-d ::1/128",
            "-d 10.96",
            "-d fd00",
        ] {
            if let Some(at) = output.iter().position(|r| r.contains(excluded)) {
                assert!(
                    at < redirect && output[at].ends_with("-j RETURN"),
                    "{excluded}"
                );
            }
        }
        assert!(output.iter().any(|r| r.contains("-p tcp --dport 5432 ")));
        assert_eq!(
            chain(&text, REDIRECT_CHAIN),
            ["-A REMORA_REDIRECT -p tcp -j REDIRECT --to-ports 15001"]
        );
    }
}

#[test]
fn inbound_exclusions_come_before_the_redirect_of_every_other_port() {
    let text = render(&capture(everything()), Family::Ipv4);
    let inbound = chain(&text, INBOUND_CHAIN);
    let redirect = position(&inbound, "every other inbound port");
    assert_eq!(redirect, inbound.len() - 1, "{inbound:#?}");
    for port in [22, 15000, 15021, 15090] {
        let at = position(&inbound, &format!("--dport {port} "));
        assert!(
            at < redirect && inbound[at].ends_with("-j RETURN"),
            "{port}"
        );
    }
    assert_eq!(
        chain(&text, IN_REDIRECT_CHAIN),
        ["-A REMORA_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006"]
    );
}

#[test]
fn listed_inbound_ports_and_the_capture_ports_are_the_only_ones_redirected() {
    let c = capture(Interception {
        inbound_ports: vec![9080, 8080],
        exclude_inbound_ports: vec![22],
        ..Interception::default()
    });
    for family in Family::ALL {
        let text = render(&c, family);
        let inbound = chain(&text, INBOUND_CHAIN);
        assert!(!text.contains("every other inbound port"), "{text}");
        let redirected: Vec<&str> = inbound
            .iter()
            .filter(|r| r.ends_with(&format!("-j {IN_REDIRECT_CHAIN}")))
            .filter_map(|r| r.split("--dport ").nth(1)?.split(' ').next())
            .collect();
        assert_eq!(redirected, ["8080", "9080", "15001", "15006"]);
        assert!(position(&inbound, "--dport 22 ") < position(&inbound, "--dport 8080 "));
    }
}

#[test]
fn other_capture_ports_are_redirected_to() {
    let ports = CapturePorts {
        outbound: 16001,
        inbound: 16006,
    };
    let c = Capture::new(PROXY, ports, &Interception::default()).expect("valid");
    let text = render(&c, Family::Ipv6);
    assert!(text.contains("-A REMORA_REDIRECT -p tcp -j REDIRECT --to-ports 16001\n"));
    assert!(text.contains("-A REMORA_IN_REDIRECT -p tcp -j REDIRECT --to-ports 16006\n"));
}
