//! `remora diff` on a folder, as a reviewer runs it on a pull request: what the change does to
//! each proxy, and nothing for the proxies it leaves alone.

use std::{
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
};

const MESH: &str = "crates/cli/tests/fixtures/diff/mesh";
const WEIGHTS: &str = "crates/cli/tests/fixtures/diff/weights-50-50.yaml";

/// `remora diff --dir MESH ARGS`, `stdin` fed to it: exit code, stdout, stderr.
fn diff(args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut child = Command::new(env!("CARGO_BIN_EXE_remora"))
        .args(["diff", "--dir", MESH])
        .args(args)
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("remora runs");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    let out = child.wait_with_output().expect("remora ends");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_weight_change_changes_one_route_config_on_the_affected_proxy_only() {
    let (code, out, err) = diff(&["-f", WEIGHTS, "-o", "json"], "");
    assert_eq!(code, Some(1), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let proxies = report["proxies"].as_array().expect("proxies");
    assert_eq!(proxies.len(), 1, "shop/cart-0 reaches no reviews: {out}");
    assert_eq!(proxies[0]["proxy"], "demo/web-0");
    let resources = proxies[0]["resources"].as_array().expect("resources");
    assert_eq!(resources.len(), 1, "{out}");
    let r = &resources[0];
    assert_eq!(
        (&r["kind"], &r["change"]),
        (&"RouteConfig".into(), &"changed".into())
    );
    let lines: Vec<&str> = r["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter_map(|l| l.as_str())
        .filter(|l| !l.starts_with(' '))
        .map(str::trim)
        .collect();
    assert_eq!(
        lines,
        [
            "-                  \"weight\": 90",
            "+                  \"weight\": 50",
            "-                  \"weight\": 10",
            "+                  \"weight\": 50"
        ]
        .map(str::trim)
    );
    assert_eq!(report["problems"], serde_json::json!([]));
}

#[test]
fn manifests_from_stdin_are_the_same_change() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(WEIGHTS),
    )
    .expect("the fixture");
    let (code, out, _) = diff(&["-f", "-"], &text);
    assert_eq!(code, Some(1));
    // As a cluster runs it, each Service port has its own route config.
    let first = "proxy demo/web-0\n  ~ RouteConfig reviews.demo.svc.cluster.local:9080\n";
    assert!(out.starts_with(first), "{out}");
    assert!(out.ends_with("1 proxies would change\n"), "{out}");
    // As local mode serves it, a port's route config holds every Service on it.
    let (code, out, _) = diff(&["-f", "-", "--explicit"], &text);
    assert_eq!(code, Some(1));
    assert!(
        out.starts_with("proxy demo/web-0\n  ~ RouteConfig 9080\n"),
        "{out}"
    );
}

#[test]
fn an_unchanged_or_invalid_route_changes_no_proxy_and_says_why() {
    let (code, out, _) = diff(&["-f", "examples/local/40-routes.yaml"], "");
    assert_eq!((code, out.as_str()), (Some(0), "0 proxies would change\n"));
    let invalid = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(WEIGHTS),
    )
    .expect("the fixture")
    .replace("name: split", "name: Split");
    let (code, out, _) = diff(&["-f", "-"], &invalid);
    assert_eq!(code, Some(0), "the last valid route stays: {out}");
    assert!(
        out.contains("problem: TrafficRoute demo/reviews: spec.http[1].name"),
        "{out}"
    );
}

#[test]
fn an_unreadable_change_is_no_diff() {
    let (code, out, err) = diff(
        &["-f", "-"],
        "kind: TrafficRoute\napiVersion: remora.dev/v1alpha1\nspec: [",
    );
    assert_eq!((code, out.as_str()), (Some(2), ""));
    assert!(err.starts_with("remora diff: cannot read:"), "{err}");
}
