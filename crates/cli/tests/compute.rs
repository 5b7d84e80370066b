//! The `remora` binary run as a user runs it: `compute`, `bootstrap`, and `local`, which
//! serves plaintext only when told it is insecure.

use std::{fs, path::Path, process::Command};

use remora_test_support::envoy_bin;

fn remora(args: &[&str]) -> (bool, String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(env!("CARGO_BIN_EXE_remora"))
        .args(args)
        .current_dir(root)
        .output()
        .expect("remora runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_local_example_computes_without_problems() {
    let (ok, out, err) = remora(&["compute"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("proxy demo/web-0 (policy remora-system/fleet-default)\n"));
    // The reviews pods have no sidecar: they are endpoints, not proxies.
    assert_eq!(out.matches("\nproxy ").count(), 0, "{out}");
    assert!(
        out.contains("listener outbound|8000 on 0.0.0.0:8000"),
        "{out}"
    );
    assert!(out.contains(
        "demo/reviews/split: any request -> to 90% outbound|9080|version=v1|reviews.demo.svc.cluster.local, \
         10% outbound|9080|version=v2|reviews.demo.svc.cluster.local"
    ), "{out}");
    assert!(out.contains(
        "endpoints outbound|9080|version=v2|reviews.demo.svc.cluster.local: 127.0.12.2:9080"
    ));
    assert!(out.ends_with("no problems\n"), "{out}");
}

#[test]
fn one_proxy_and_an_unknown_one() {
    let (ok, out, _) = remora(&["compute", "--proxy", "demo/web-0"]);
    assert!(ok);
    assert_eq!(
        out.matches("\nproxy ").count() + usize::from(out.starts_with("proxy ")),
        1
    );
    assert!(
        out.contains("listener inbound|8080 on 127.0.11.1:8080"),
        "{out}"
    );

    let (ok, _, err) = remora(&["compute", "--proxy", "demo/nobody"]);
    assert!(!ok);
    assert!(err.contains("no proxy demo/nobody"), "{err}");
}

#[test]
fn problems_name_the_object_and_the_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::copy(
        "../../examples/local/00-namespaces.yaml",
        dir.path().join("00.yaml"),
    )
    .expect("copy");
    fs::write(
        dir.path().join("routes.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: demo}\n\
         spec: {clusterIP: 127.0.10.9, ports: [{name: http, port: 80}]}\n---\n\
         apiVersion: remora.dev/v1alpha1\nkind: TrafficRoute\nmetadata: {name: ghost, namespace: demo}\n\
         spec: {parentRefs: [{name: api}], http: [{backendRefs: [{name: nowhere, port: 80}]}]}\n---\n\
         apiVersion: remora.dev/v1alpha1\nkind: TrafficRoute\nmetadata: {name: bad, namespace: demo}\n\
         spec: {parentRefs: [{name: api}], http: [{matches: [{path: {value: api}}], backendRefs: [{name: api}]}]}\n---\n\
         apiVersion: remora.dev/v1alpha1\nkind: TrafficRoute\nmetadata: {name: typo, namespace: demo}\n\
         spec: {parentRefs: [{name: api}], http: [{timeout: {request: 1s}, backendRefs: [{name: api}]}]}\n---\n\
         apiVersion: remora.dev/v1alpha1\nkind: SidecarPolicy\nmetadata: {name: mesh, namespace: demo}\n\
         spec: {proxy: {image: envoyproxy/envoy, version: 1.40.0}}\n",
    )
    .expect("write");
    let dir_arg = dir.path().to_str().expect("utf-8 path");
    let (ok, out, err) = remora(&["compute", "--dir", dir_arg]);
    assert!(ok, "{err}");
    assert!(out.contains("no proxies"), "{out}");
    assert!(
        out.contains("TrafficRoute demo/ghost: spec.http[0].backendRefs[0]: Service demo/nowhere does not exist"),
        "{out}"
    );
    assert!(
        out.contains("TrafficRoute demo/bad: spec.http[0].matches[0].path.value"),
        "{out}"
    );
    assert!(
        out.contains("(document 4): TrafficRoute: spec.http[0].timeout: unknown field `timeout`")
            && out.contains("did you mean `timeouts`?"),
        "a misspelt field is an error with its path: {out}"
    );
    assert!(
        out.contains("warnings (1)\n")
            && out.contains("(document 5): SidecarPolicy demo/mesh: spec.proxy.version:"),
        "{out}"
    );
}

#[test]
fn bootstrap_is_accepted_by_real_envoy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bootstrap.json");
    let (ok, _, err) = remora(&[
        "bootstrap",
        "--namespace",
        "demo",
        "--pod",
        "web-0",
        "--delta",
        "--output",
        file.to_str().expect("utf-8"),
    ]);
    assert!(ok, "{err}");
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&file).expect("written")).expect("json");
    assert_eq!(json["node"]["id"], "demo/web-0");

    let (ok, _, err) = remora(&[
        "bootstrap",
        "--namespace",
        "a",
        "--pod",
        "b",
        "--xds-address",
        "nohost",
    ]);
    assert!(!ok);
    assert!(err.contains("--xds-address"), "{err}");

    // Envoy's own validation.
    let out = Command::new(envoy_bin())
        .args(["--mode", "validate", "-c"])
        .arg(&file)
        .output()
        .expect("envoy runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A temporary copy of `examples/local`, for a test to add to.
fn local_example() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/local");
    for entry in fs::read_dir(&example).expect("examples/local") {
        let path = entry.expect("an entry").path();
        fs::copy(&path, dir.path().join(path.file_name().expect("a name"))).expect("copied");
    }
    dir
}

#[test]
fn local_mode_will_not_serve_plaintext_unless_told_it_is_insecure() {
    let (ok, _, err) = remora(&["local", "--xds-addr", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(err.contains("pass --insecure"), "{err}");
}

/// `compute` prints each protected proxy's access rules in the order its sidecar evaluates
/// them, and an invalid access policy's problems with their fields.
#[test]
fn access_rules_are_printed_in_evaluation_order() {
    let dir = local_example();
    fs::write(
        dir.path().join("50-access.yaml"),
        r#"apiVersion: remora.dev/v1alpha1
kind: AccessPolicy
metadata: {name: web, namespace: demo}
spec:
  selector: {matchLabels: {app: web}}
  rules:
    - name: no-admin
      action: Deny
      to: {http: {paths: [{value: /admin}]}}
    - name: reviews
      from: [{serviceAccounts: [reviews]}]
      to: {ports: [8080], http: {methods: [GET]}}
    - name: trial
      mode: Audit
      from: [{namespaces: [ops]}]
---
apiVersion: remora.dev/v1alpha1
kind: AccessPolicy
metadata: {name: bad, namespace: demo}
spec:
  rules:
    - name: everyone
      from: [{}]
"#,
    )
    .expect("written");
    let dir_arg = dir.path().to_str().expect("utf-8 path");
    let (ok, out, err) = remora(&["compute", "--dir", dir_arg, "--proxy", "demo/web-0"]);
    assert!(ok, "{err}");
    let rules = [
        "  access rules, in the order they are evaluated",
        "    deny demo/web/no-admin: from anyone; path under /admin",
        "    allow demo/web/reviews: from spiffe://cluster.local/ns/demo/sa/reviews; port 8080; GET",
        "    otherwise deny: the workload has allow rules",
        "    audit: count what none of demo/web/reviews, demo/web/trial allows",
    ]
    .join("\n");
    assert!(out.contains(&rules), "{out}");
    assert!(
        out.contains(
            "AccessPolicy demo/bad: spec.rules[0].from[0]: an empty entry matches every caller"
        ),
        "{out}"
    );
}

/// `remora local` run as a child process, killed when the test ends however it ends, with
/// its standard error read line by line.
struct LocalMode {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Lines read but not yet waited for: two tasks log, so the order between them varies.
    unclaimed: std::cell::RefCell<Vec<String>>,
}

impl LocalMode {
    fn start(dir: &Path) -> LocalMode {
        let mut child = Command::new(env!("CARGO_BIN_EXE_remora"))
            .args(["local", "--insecure", "--xds-addr", "127.0.0.1:0"])
            .args(["--poll-ms", "50", "--debounce-ms", "20", "--dir"])
            .arg(dir)
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("remora local runs");
        let stderr = child.stderr.take().expect("piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        LocalMode {
            child,
            lines,
            unclaimed: std::cell::RefCell::default(),
        }
    }

    /// The first log line not waited for yet with every one of `words`, waiting at most
    /// 20 s for it.
    fn wait_for(&self, words: &[&str]) -> String {
        let matches = |line: &String| words.iter().all(|w| line.contains(w));
        let mut unclaimed = self.unclaimed.borrow_mut();
        if let Some(i) = unclaimed.iter().position(matches) {
            return unclaimed.remove(i);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if matches(&line) => return line,
                Ok(line) => unclaimed.push(line),
                Err(_) => break,
            }
        }
        panic!("no log line with {words:?}; saw:\n{}", unclaimed.join("\n"));
    }
}

impl Drop for LocalMode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Local mode logs each problem as a warning when it appears (an invalid route, a misspelt
/// field, a tag Envoy does not publish) and once more when it clears.
#[test]
fn local_mode_warns_of_each_problem_as_it_appears_and_says_when_it_clears() {
    let dir = local_example();
    let route = |path: &str, field: &str| {
        format!(
            "apiVersion: remora.dev/v1alpha1\nkind: TrafficRoute\nmetadata: {{name: api, namespace: demo}}\n\
             spec: {{parentRefs: [{{name: reviews}}], http: [{{matches: [{{path: {{value: {path}}}}}], \
             {field}: {{request: 1s}}, backendRefs: [{{name: reviews, port: 9080}}]}}]}}\n"
        )
    };
    let file = dir.path().join("60-route.yaml");
    fs::write(&file, route("api", "timeouts")).expect("written");
    let local = LocalMode::start(dir.path());
    let invalid = local.wait_for(&[
        "WARN",
        "TrafficRoute demo/api: spec.http[0].matches[0].path.value",
    ]);
    assert!(invalid.contains("source=\"mesh\""), "{invalid}");
    local.wait_for(&["local mode serving"]);

    fs::write(&file, route("/api", "timeout")).expect("written");
    local.wait_for(&[
        "INFO",
        "problem cleared",
        "spec.http[0].matches[0].path.value",
    ]);
    local.wait_for(&["WARN", "spec.http[0].timeout: unknown field `timeout`"]);

    fs::write(&file, route("/api", "timeouts")).expect("written");
    local.wait_for(&["problem cleared", "unknown field `timeout`"]);
}
