//! The whole benchmark at 20 proxies against the cluster `e2e/cluster/with-cluster`
//! provides: the mesh written, two replicas, the fleet, one edit counted in the route's
//! status, everything deleted again. Without a cluster it is skipped, except under CI
//! (`CI=true`), where it fails: a broken harness must never pass as a skip.

use std::process::Command;

#[test]
fn twenty_proxies_on_two_replicas_are_counted_in_the_routes_status_after_an_edit() {
    if std::env::var_os("REMORA_E2E_CLUSTER").is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no cluster: CI runs the tests under e2e/cluster/with-cluster"
        );
        eprintln!("skipped: no cluster (run under e2e/cluster/with-cluster)");
        return;
    }
    let run = Command::new(env!("CARGO_BIN_EXE_fleet-bench"))
        .args(["run", "--proxies", "20", "--changes", "1"])
        .args(["--idle-secs", "1", "--settle-secs", "0"])
        .args(["--sync-timeout", "60", "--change-timeout", "30"])
        .output()
        .expect("fleet-bench runs");
    let report = String::from_utf8_lossy(&run.stdout);
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{log}\n{report}");
    for line in [
        "| edit 1: status counted all ACKs, after the last ACK |",
        "| teardown | every namespace of the run deleted |  |",
    ] {
        assert!(
            report.lines().any(|l| l.starts_with(line)),
            "{line} in\n{report}"
        );
    }
    assert!(
        report.starts_with("fleet-bench: 20 proxies over 2 replicas"),
        "{report}"
    );
}
