//! The load test of the server's limits, small: 200 simulated proxies synced, then every
//! kind of hostile client at once while two route changes are measured. The run itself
//! fails unless the server counted each refusal the hostile clients cause, and the healthy
//! proxies must converge on both changes meanwhile. Everything stays on loopback and ends
//! with the run (about a minute: the slowest refusal is the 30 s write timeout).

use std::process::Command;

#[test]
fn hostile_clients_are_refused_and_counted_while_the_fleet_keeps_converging() {
    let run = Command::new(env!("CARGO_BIN_EXE_xds-load"))
        .args(["run", "--proxies", "200", "--changes", "2", "--hostile"])
        .args(["--sync-timeout", "60", "--change-timeout", "30"])
        .args(["--max-server-rss-mib", "512"])
        .env("RUST_LOG", "error")
        .output()
        .expect("xds-load runs");
    let report = String::from_utf8_lossy(&run.stdout);
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{log}\n{report}");
    for change in 1..=2 {
        let converged = format!("| change {change}: converged (ACKed) p50 / p99 / max |");
        assert!(
            report.lines().any(|l| l.starts_with(&converged)),
            "{converged} in\n{report}"
        );
    }
    let counted = report
        .lines()
        .find(|l| l.starts_with("| refusals counted by reason (expected) |"))
        .unwrap_or_else(|| panic!("the refusals in\n{report}"));
    for reason in [
        "connection 50 (50)",
        "stream 64 (64)",
        "proxy_streams 2 (2)",
        "first_request 20 (20)",
        "partial_message 20 (20)",
        "subscriptions 4 (4)",
        "slow_reader 53 (53)",
    ] {
        assert!(counted.contains(reason), "{reason} in {counted}");
    }
}
