//! `remora analyze` on folders, as a CI job runs it: its exit code gates, `-o json` feeds
//! scripts. The rules themselves are tested in remora-analyze; the live cluster in
//! e2e/tests/cli_analyze.rs.

use std::{path::Path, process::Command};

/// `remora analyze ARGS` from the repository root: its exit code and standard output.
fn analyze(args: &[&str]) -> (Option<i32>, String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(env!("CARGO_BIN_EXE_remora"))
        .arg("analyze")
        .args(args)
        .current_dir(root)
        .output()
        .expect("remora runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const FIXTURES: &str = "crates/analyze/tests/fixtures";

#[test]
fn errors_fail_the_run_and_warnings_only_when_asked() {
    let dir = |code: &str| format!("{FIXTURES}/{code}");
    let (code, out, _) = analyze(&["--dir", &dir("clean")]);
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "0 error(s), 0 warning(s)\n")
    );
    let (code, out, _) = analyze(&["--dir", &dir("REM003")]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("error REM003 regex-refused"), "{out}");
    let (code, out, _) = analyze(&["--dir", &dir("REM102")]);
    assert_eq!(code, Some(0), "{out}");
    let (code, _, _) = analyze(&["--dir", &dir("REM102"), "--warnings-as-errors"]);
    assert_eq!(code, Some(1));
    // The limit the proxies run with decides: raised on both, the regex is fine.
    let raised = ["--dir", &dir("REM003"), "--max-regex-program-size", "10000"];
    assert_eq!(analyze(&raised).0, Some(0));
}

#[test]
fn json_output_carries_every_field_of_a_finding() {
    let (code, out, _) = analyze(&["--dir", &format!("{FIXTURES}/REM004"), "-o", "json"]);
    assert_eq!(code, Some(1));
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        (report["errors"].as_u64(), report["warnings"].as_u64()),
        (Some(1), Some(0))
    );
    let f = &report["findings"][0];
    assert_eq!(f["code"], "REM004");
    assert_eq!(f["rule"], "unresolved-reference");
    assert_eq!(f["severity"], "error");
    assert_eq!(f["kind"], "TrafficRoute");
    assert_eq!(f["object"], "demo/reviews");
    assert_eq!(f["field"], "spec.http[0].backendRefs[0]");
    assert_eq!(f["file"], format!("{FIXTURES}/REM004/10-route.yaml"));
    assert_eq!(f["document"], 1);
}

#[test]
fn a_folder_that_cannot_be_read_is_no_analysis() {
    let (code, out, err) = analyze(&["--dir", "no/such/folder"]);
    assert_eq!((code, out.as_str()), (Some(2), ""));
    assert!(err.starts_with("remora analyze: "), "{err}");
}
