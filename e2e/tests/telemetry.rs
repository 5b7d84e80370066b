//! Every metric the shipped Grafana dashboard and alerts query is really exported, with the
//! labels they use: by a real Envoy started with the injected bootstrap, after traffic through
//! a TrafficRoute's rule, scraped on its stats port; and by the controller's `/metrics`
//! served by its real admin server. A renamed stat, tag or metric fails this test.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::Arc,
};

use remora_api::{ValidationSettings, sidecar_policy::STATS_PORT};
use remora_controller::{
    health::{Readiness, router, serve},
    metrics::{Metrics, ReasonLabel},
};
use remora_inject::{ControlPlane as Injected, ProxyPod, STATS_PATH, bootstrap};
use remora_model::input::ObjectKey;
use remora_xds::SyncRegistry;
use serde_json::Value;
use support::*;
use tokio::net::TcpListener;

const SUBNET: u8 = 61;

/// Labels Prometheus adds to every series of a target; no exporter prints them.
const TARGET_LABELS: [&str; 4] = ["job", "instance", "namespace", "pod"];

fn chart_file(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/remora");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The PromQL of every dashboard panel and variable, and of every alert, with where it is.
fn queries() -> Vec<(String, String)> {
    let dashboard: Value =
        serde_json::from_str(&chart_file("dashboards/remora.json")).expect("json");
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default();
            out.push((
                format!("panel {title:?}"),
                t["expr"].as_str().expect("expr").to_owned(),
            ));
            if let Some(legend) = t["legendFormat"].as_str() {
                // Not PromQL, but the names are read alike: the legend's labels must come
                // from the expression's metrics.
                let expr = format!(
                    "{} {}",
                    t["expr"].as_str().unwrap_or_default(),
                    legend_as_by(legend)
                );
                out.push((format!("legend of {title:?}"), expr));
            }
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if let Some(q) = v["query"]["query"].as_str() {
            // label_values(metric, label) uses the label like a grouping.
            let inner = q.trim_start_matches("label_values(").trim_end_matches(')');
            let (metric, label) = inner.split_once(',').expect("label_values(metric, label)");
            out.push((
                format!("variable {}", v["name"]),
                format!("sum by ({label}) ({metric})"),
            ));
        }
    }
    let alerts: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&chart_file("monitoring/alerts.yaml")).expect("yaml");
    for group in alerts["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("alert name");
            out.push((
                format!("alert {name}"),
                rule["expr"].as_str().expect("expr").to_owned(),
            ));
        }
    }
    out
}

/// A legend's `{{label}}` references, as a grouping that uses them.
fn legend_as_by(legend: &str) -> String {
    let labels: Vec<&str> = legend
        .split("{{")
        .skip(1)
        .filter_map(|s| s.split_once("}}").map(|(l, _)| l.trim()))
        .collect();
    format!("by ({})", labels.join(", "))
}

/// The metric names and label names a PromQL expression uses. Label names are those of
/// selectors (`{name="..."}`) and groupings (`by`, `without`, `on`, `ignoring`,
/// `group_left`, `group_right`); an identifier followed by `(` is a function, a few words
/// are operators or aggregations, the rest are metric names.
fn names(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    const GROUPINGS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Operators, and aggregations (their grouping may stand between them and the `(`).
    const WORDS: [&str; 16] = [
        "and", "or", "unless", "bool", "offset", "sum", "min", "max", "avg", "count", "group",
        "stddev", "stdvar", "topk", "bottomk", "quantile",
    ];
    let (mut metrics, mut labels) = (BTreeSet::new(), BTreeSet::new());
    let chars: Vec<char> = expr.chars().collect();
    let (mut i, mut grouping) = (0, false);
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i += 1 + chars[i + 1..].iter().position(|&d| d == '"').unwrap_or(0) + 1;
        } else if c == '[' {
            i += chars[i..].iter().position(|&d| d == ']').unwrap_or(0) + 1;
        } else if c == '{' {
            let end = i + chars[i..]
                .iter()
                .position(|&d| d == '}')
                .expect("closed selector");
            let selector: String = chars[i + 1..end].iter().collect();
            labels.extend(selector_labels(&selector));
            i = end + 1;
        } else if c.is_ascii_digit() {
            // A number or a duration (`5m`), never a name.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':' | '$'))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if GROUPINGS.contains(&word.as_str()) {
                grouping = true;
            } else if grouping {
                labels.insert(word);
            } else if next != Some(&'(')
                && !WORDS.contains(&word.as_str())
                && !word.starts_with('$')
            {
                metrics.insert(word);
            }
        } else {
            if c == ')' {
                grouping = false;
            }
            i += 1;
        }
    }
    (metrics, labels)
}

/// The label names of a selector's matchers, e.g. `a="x", b=~"y"`.
fn selector_labels(selector: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = selector;
    while let Some(at) = rest.find(['=', '!']) {
        let name = rest[..at].trim().trim_start_matches(',').trim();
        if !name.is_empty() {
            out.push(name.to_owned());
        }
        // Skip the operator and the quoted value.
        let value = rest[at..].find('"').map_or(rest.len(), |q| at + q + 1);
        let close = rest[value..]
            .find('"')
            .map_or(rest.len(), |q| value + q + 1);
        rest = &rest[close.min(rest.len())..];
    }
    out
}

/// Series names and their label names, from Prometheus (or OpenMetrics) text.
fn exposition(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..name_end].to_owned()).or_default();
        if line[name_end..].starts_with('{') {
            let body = &line[name_end + 1..line.rfind('}').unwrap_or(line.len())];
            labels.extend(
                body.split("\",")
                    .filter_map(|kv| kv.split_once("=\""))
                    .map(|(k, _)| k.trim().to_owned()),
            );
        }
    }
    out
}

/// A real Envoy with the bootstrap the injector gives `demo/client`, on loopback: its
/// listeners bind 127.0.0.1 on free ports instead of the pod's fixed ones, so tests run side
/// by side. Returns the Envoy and its stats listener's address.
async fn injected_envoy(xds: SocketAddr, pod_ip: &str) -> (Envoy, SocketAddr) {
    let control_plane = Injected {
        xds_host: xds.ip().to_string(),
        xds_port: xds.port(),
        delta: true,
        image: String::new(),
        identity: None,
    };
    let pod = ProxyPod {
        proxy: ObjectKey::new("demo", "client"),
        service_account: "client",
        workload: "Deployment/client",
        ip: pod_ip,
    };
    let mut config = bootstrap(&pod, &control_plane, &[], &ValidationSettings::default());
    let admin_port = ports::free_port();
    config["admin"]["address"]["socket_address"]["port_value"] = admin_port.into();
    for cluster in config["static_resources"]["clusters"]
        .as_array_mut()
        .expect("clusters")
    {
        let address = &mut cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            ["address"]["socket_address"];
        if address["address"] == "127.0.0.1" && address["port_value"] == 15000 {
            address["port_value"] = admin_port.into();
        }
    }
    let mut stats_port = 0;
    for listener in config["static_resources"]["listeners"]
        .as_array_mut()
        .expect("listeners")
    {
        let socket = &mut listener["address"]["socket_address"];
        let port = ports::free_port();
        if socket["port_value"] == STATS_PORT {
            stats_port = port;
        }
        *socket = serde_json::json!({"address": "127.0.0.1", "port_value": port});
    }
    assert_ne!(stats_port, 0, "the injected bootstrap has a stats listener");
    let envoy = Envoy::from_config(&config).await;
    (envoy, SocketAddr::from(([127, 0, 0, 1], stats_port)))
}

fn mesh() -> String {
    let (v1, client, svc) = (ip(SUBNET, 12, 1), ip(SUBNET, 11, 1), ip(SUBNET, 10, 2));
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: demo, labels: {{remora.dev/mesh: enabled}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: demo}}
spec: {{clusterIP: {svc}, ports: [{{name: http, port: 9080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: reviews-1, namespace: demo, labels: {{kubernetes.io/service-name: reviews}}}}
addressType: IPv4
ports: [{{name: http, port: 9080}}]
endpoints:
  - {{addresses: ["{v1}"], targetRef: {{kind: Pod, name: reviews-v1}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: reviews-v1, namespace: demo, labels: {{app: reviews}}}}
spec: {{containers: [{{name: app}}]}}
status: {{podIP: "{v1}"}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: demo}}
spec: {{containers: [{{name: app}}, {{name: remora-proxy}}]}}
status: {{podIP: "{client}"}}
---
apiVersion: remora.dev/v1alpha1
kind: TrafficRoute
metadata: {{name: reviews, namespace: demo}}
spec:
  parentRefs: [{{name: reviews, port: 9080}}]
  http:
    - name: api
      matches: [{{path: {{type: PathPrefix, value: /api}}}}]
      backendRefs: [{{name: reviews}}]
"#
    )
}

/// The proxy's `/stats/prometheus` on its stats port once it has routed requests (two of
/// them answered 503) and flushed its latency histograms.
async fn envoy_exposition() -> BTreeMap<String, BTreeSet<String>> {
    let failing = Behaviour {
        fail_every: Some(3),
        delay: None,
    };
    let _upstream = Upstream::start("v1", SocketAddr::new(ip(SUBNET, 12, 1), 9080), failing).await;
    let mut cp = ControlPlane::start(&[("mesh.yaml", mesh())]).await;
    let (_envoy, stats) = injected_envoy(cp.addr, &ip(SUBNET, 11, 1).to_string()).await;
    let entry = SocketAddr::new(ip(SUBNET, 11, 1), 9080);
    eventually(30, "the outbound listener to route", async || {
        get(entry, "reviews", "/api/x", &[])
            .await
            .ok()
            .filter(|r| r.status != 404)
    })
    .await;
    let answers = tally(entry, "reviews", "/api/x", &[], 6).await;
    assert!(
        answers.contains_key("503") && answers.contains_key("v1"),
        "{answers:?}"
    );
    // Envoy publishes histograms at its stats flush (every 5 s).
    let text = eventually(30, "latency buckets of the route", async || {
        let r = get(stats, "localhost", STATS_PATH, &[]).await.ok()?;
        let flushed = r.body.lines().any(|l| {
            l.starts_with("envoy_vhost_route_upstream_rq_time_count{")
                && l.contains("remora_route=\"demo/reviews/api\"")
                && l.contains("remora_source_workload=\"Deployment/client\"")
                && !l.ends_with(" 0")
        });
        flushed.then_some(r.body)
    })
    .await;
    let other = get(stats, "localhost", "/config_dump", &[])
        .await
        .expect("reply");
    assert_eq!(
        other.status, 404,
        "the stats port serves nothing but {STATS_PATH}"
    );
    cp.stop().await;
    exposition(&text)
}

/// The controller's `/metrics` from its real admin server, after one rollback.
async fn controller_exposition() -> BTreeMap<String, BTreeSet<String>> {
    let metrics = Arc::new(Metrics::new());
    metrics
        .rollout_transitions
        .get_or_create(&ReasonLabel {
            reason: "RolledBack",
        })
        .inc();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let app = router(Arc::new(Readiness::default()), metrics, SyncRegistry::new());
    let server = tokio::spawn(serve(listener, app, stopped));
    let reply = get(addr, "localhost", "/metrics", &[]).await;
    let _ = stop.send(true);
    let _ = server.await;
    let reply = reply.expect("/metrics answers");
    assert_eq!(reply.status, 200);
    exposition(&reply.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_and_label_the_dashboard_and_alerts_use_is_exported() {
    let mut exported = envoy_exposition().await;
    exported.extend(controller_exposition().await);
    let queries = queries();
    assert!(queries.len() > 15, "{queries:?}");
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for (place, expr) in &queries {
        let (metrics, labels) = names(expr);
        used.extend(metrics.iter().cloned());
        let mut available: BTreeSet<String> = TARGET_LABELS.map(String::from).into();
        for m in &metrics {
            match exported.get(m) {
                Some(l) => available.extend(l.iter().cloned()),
                None => problems.push(format!("{place}: no series {m}")),
            }
        }
        // A grouping's labels may come from any metric of the expression.
        for l in labels.difference(&available) {
            problems.push(format!("{place}: no series of {metrics:?} has label {l}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for expected in [
        "envoy_vhost_route_upstream_rq_total",
        "envoy_vhost_route_upstream_rq_time_bucket",
        "envoy_control_plane_connected_state",
        "remora_nacking_proxies",
        "remora_build_info",
        "process_resident_memory_bytes",
    ] {
        assert!(used.contains(expected), "{expected} is queried: {used:?}");
    }
}

#[test]
fn promql_names_are_told_apart() {
    let (metrics, labels) = names(
        r#"histogram_quantile(0.99, sum by (le, a) (rate(x_bucket{b="5", c=~"$v"}[$__rate_interval]))) / on (pod) group_left (version) y and z offset 5m"#,
    );
    assert_eq!(metrics, ["x_bucket", "y", "z"].map(String::from).into());
    assert_eq!(
        labels,
        ["a", "b", "c", "le", "pod", "version"]
            .map(String::from)
            .into()
    );
}
