//! `remora proxy-status` and `remora proxy-config` as an operator runs them: against a control
//! plane with a real Envoy (its tables, JSON, YAML, filters and sections), as the kubectl
//! plugin `kubectl remora`, and through the API server of the test cluster with nothing but
//! `--kubeconfig`.
//!
//! The stub cluster has no kubelet, so the API server cannot open a port-forward to a pod:
//! the cluster test checks everything up to that request (the ready controller pod, its
//! gRPC port, the mesh CA read from its Secret) and that the API server, asked for it, dials
//! the pod's node's kubelet port (a loopback listener of the test).

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use k8s_openapi::{
    ByteString,
    api::core::v1::{Node, Secret},
};
use kube::{
    Api,
    api::{DeleteParams, ObjectMeta, PostParams},
};
use remora_identity::MeshCa;
use remora_model::input::ObjectKey;
use support::{ControlPlane, Envoy, cluster, pods::container::remora_bin};
use tokio::net::TcpListener;

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{} runs: {e}", program.display()))
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    assert!(!out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `examples/local`, the mesh of the README's quick start: `demo/web-0` has a sidecar.
fn example_mesh() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/local");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("examples/local")
        .map(|e| {
            let path = e.expect("an entry").path();
            let name = path.file_name().expect("a name").to_string_lossy().into();
            (name, std::fs::read_to_string(&path).expect("a manifest"))
        })
        .collect();
    files.sort();
    files
}

// The commands block this thread while the control plane answers on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_config_print_tables_documents_filters_and_sections() {
    let files = example_mesh();
    let files: Vec<(&str, String)> = files.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let cp = ControlPlane::start(&files).await;
    let web = ObjectKey::new("demo", "web-0");
    let _envoy = Envoy::start(web.clone(), cp.addr, false).await;
    cp.synced(&web).await;
    let server = cp.addr.to_string();
    let remora = remora_bin();
    let cli = |args: &[&str]| run(&remora, &[args, &["--server", &server]].concat());

    // --server reads no kubeconfig: every namespace unless -n.
    let text = stdout(&cli(&["proxy-status"]));
    let row = text
        .lines()
        .find(|l| l.starts_with("demo/web-0"))
        .unwrap_or_else(|| panic!("a row for demo/web-0: {text}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cols[1..6],
        ["sotw", "SYNCED", "SYNCED", "SYNCED", "SYNCED"],
        "{text}"
    );

    let nacked = stdout(&cli(&["proxy-status", "--state", "nacked"]));
    assert_eq!(nacked, "no NACKED proxy is connected\n");
    let other = stdout(&cli(&["proxy-status", "-n", "elsewhere"]));
    assert_eq!(
        other,
        "no proxy in namespace elsewhere (-A: every namespace)\n"
    );

    let json = stdout(&cli(&[
        "proxy-status",
        "-n",
        "demo",
        "--state",
        "synced",
        "-o",
        "json",
    ]));
    let listing: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(listing["proxies"][0]["name"], "web-0", "{json}");
    assert_eq!(listing["proxies"][0]["state"], "SYNCED", "{json}");
    assert_eq!(
        listing["proxies"][0]["types"].as_array().map(Vec::len),
        Some(4)
    );

    // proxy-config: a summary by default, the resources themselves with -o.
    let summary = stdout(&cli(&["proxy-config", "demo/web-0"]));
    assert!(summary.starts_with("KIND"), "{summary}");
    for kind in ["Cluster", "Endpoints", "Listener", "RouteConfig"] {
        assert!(summary.contains(&format!("\n{kind} ")), "{kind}: {summary}");
    }
    let listeners = stdout(&cli(&[
        "proxy-config",
        "web-0",
        "-n",
        "demo",
        "listeners",
        "-o",
        "json",
    ]));
    let listeners: Vec<serde_json::Value> = serde_json::from_str(&listeners).expect("JSON");
    assert!(!listeners.is_empty());
    assert!(
        listeners
            .iter()
            .all(|r| r["kind"] == "Listener" && r["config"].is_object())
    );
    let routes = stdout(&cli(&[
        "proxy-config",
        "demo/web-0",
        "routes",
        "-o",
        "yaml",
    ]));
    let routes: Vec<serde_json::Value> = serde_yaml_ng::from_str(&routes).expect("YAML");
    assert!(!routes.is_empty() && routes.iter().all(|r| r["kind"] == "RouteConfig"));

    let err = stderr(&cli(&["proxy-config", "web-0"]));
    assert!(err.contains("write NAMESPACE/POD or -n NAMESPACE"), "{err}");
    let err = stderr(&cli(&["proxy-config", "demo/nobody"]));
    assert!(err.contains("NotFound"), "{err}");
    // Pods are what name a proxy's workload, and --server reaches no API server to read them.
    let err = stderr(&cli(&["proxy-status", "--workload", "Deployment/web"]));
    assert!(
        err.contains("--workload reads the pods through the API server"),
        "{err}"
    );
}

#[tokio::test]
async fn a_link_named_kubectl_remora_is_a_kubectl_plugin() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let plugin = dir.path().join("kubectl-remora");
    std::os::unix::fs::symlink(remora_bin(), &plugin).expect("the link");
    let help = stdout(&run(&plugin, &["proxy-status", "--help"]));
    assert!(
        help.contains("Usage: kubectl remora proxy-status"),
        "{help}"
    );

    // kubectl itself finds it on PATH (scripts/env.sh puts kubectl on PATH).
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = vec![dir.path().to_owned()];
    dirs.extend(std::env::split_paths(&path));
    let kubectl = dirs
        .iter()
        .map(|d| d.join("kubectl"))
        .find(|k| k.is_file())
        .expect("kubectl on PATH (source scripts/env.sh)");
    let out = Command::new(kubectl)
        .args(["remora", "proxy-status", "--server", "127.0.0.1:1"])
        .env("PATH", std::env::join_paths(dirs).expect("a PATH"))
        .output()
        .expect("kubectl runs");
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach the control plane at 127.0.0.1:1"),
        "{err}"
    );
}

// The commands block this thread while the test's "kubelet" answers on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_api_server_the_ready_controller_and_its_ca_are_found() {
    let Some(client) = cluster::client().await else {
        return;
    };
    if !cluster::is_stub() {
        // A real cluster would try to run the stand-in controller pod below.
        eprintln!("skipped: the stand-in controller pod needs the stub cluster");
        return;
    }
    let ns = cluster::test_namespace(&client, "cli-status").await;
    let kubeconfig = std::env::var("KUBECONFIG").expect("with-cluster sets KUBECONFIG");
    let remora = remora_bin();
    // Only the flags: no KUBECONFIG in the environment, no address.
    let cli = |args: &[&str]| {
        Command::new(&remora)
            .args(args)
            .args([
                "--kubeconfig",
                &kubeconfig,
                "--control-plane-namespace",
                &ns,
            ])
            .env_remove("KUBECONFIG")
            .output()
            .expect("remora runs")
    };

    let err = stderr(&cli(&["proxy-status"]));
    assert!(
        err.contains(&format!(
            "no ready controller pod in namespace {ns} (0 found"
        )),
        "{err}"
    );

    // The controller's node, whose kubelet port is the test's: the API server dials it
    // there, by IP (a Hostname address would have it ask DNS), for a port-forward.
    let kubelet = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let kubelet_port = kubelet.local_addr().expect("its address").port();
    let env = serde_json::json!([{"name": "REMORA_MESH_CA_SECRET", "value": "mesh-ca"}]);
    let node = cluster::stand_in_controller(&client, &ns, kubelet_port, env).await;

    let err = stderr(&cli(&["proxy-status"]));
    assert!(
        err.contains(&format!("cannot read the ca.crt of Secret {ns}/mesh-ca")),
        "{err}"
    );
    assert!(err.contains("pass --ca-file"), "{err}");

    let ca = MeshCa::generate("cluster.local", std::time::SystemTime::now()).expect("a CA");
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("mesh-ca".into()),
            ..Default::default()
        },
        data: Some(
            [(
                "ca.crt".to_owned(),
                ByteString(ca.bundle().to_pem().into_bytes()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("the CA Secret");

    // Everything is found, and the API server is asked for the port-forward: it dials the
    // "kubelet", which hangs up.
    let dialed = tokio::spawn(async move { kubelet.accept().await.is_ok() });
    let forward = format!("through a port-forward to pod {ns}/remora-0 port 18000");
    let err = stderr(&cli(&["proxy-status", "-A"]));
    assert!(err.contains(&forward), "{err}");
    assert!(
        dialed.await.unwrap_or(false),
        "the API server dialed the node"
    );
    let err = stderr(&cli(&["proxy-config", "demo/web-0", "routes"]));
    assert!(err.contains(&forward), "{err}");
    Api::<Node>::all(client)
        .delete(&node, &DeleteParams::default())
        .await
        .expect("the node goes");
}
