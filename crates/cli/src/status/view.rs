//! What `proxy-status` and `proxy-config` print, as pure functions of the API's answers:
//! which proxies and resources, and how they read as a table or as JSON and YAML.

use std::{
    collections::HashMap,
    fmt::Write as _,
    time::{SystemTime, UNIX_EPOCH},
};

use remora_admin::pb;
use remora_model::config::ResourceType;
use remora_xds::snapshot::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use serde::Serialize;
use serde_json::Value;

/// The columns: each served type by its short name.
const TYPES: [(&str, &str); 4] = [
    ("CDS", CLUSTER),
    ("EDS", ENDPOINT),
    ("LDS", LISTENER),
    ("RDS", ROUTE),
];

/// A proxy's sync state over all its types: the worst of them.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    /// Every type holds the latest version.
    Synced,
    /// A newer version is on its way or awaits an ACK.
    Stale,
    /// The proxy rejected a version and runs the one before.
    Nacked,
}

impl State {
    fn of_type(t: &pb::TypeSync) -> State {
        match t.state() {
            pb::SyncState::Synced => State::Synced,
            pb::SyncState::Nacked => State::Nacked,
            // Not known to be synced.
            pb::SyncState::Stale | pb::SyncState::Unspecified => State::Stale,
        }
    }

    /// A proxy that subscribed to nothing yet holds nothing it should: stale.
    fn of_proxy(p: &pb::Proxy) -> State {
        p.types
            .iter()
            .map(State::of_type)
            .max()
            .unwrap_or(State::Stale)
    }

    fn label(self) -> &'static str {
        match self {
            State::Synced => "SYNCED",
            State::Stale => "STALE",
            State::Nacked => "NACKED",
        }
    }
}

/// Which namespaces' proxies are asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    Namespace(String),
}

impl Scope {
    /// As kubectl scopes: -A, else -n, else the kubeconfig context's namespace; reached with
    /// --server (no context), every namespace.
    pub fn of(all: bool, flag: Option<&str>, context: Option<&str>) -> Scope {
        match (all, flag.or(context)) {
            (false, Some(ns)) => Scope::Namespace(ns.to_owned()),
            _ => Scope::All,
        }
    }

    /// The API's namespace filter: empty for all.
    pub fn namespace(&self) -> &str {
        match self {
            Scope::All => "",
            Scope::Namespace(ns) => ns,
        }
    }
}

/// A workload as a pod's owner names it (`remora_inject::workload`): `Kind/name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    kind: String,
    name: String,
}

impl Workload {
    pub fn parse(s: &str) -> Result<Workload, String> {
        match s.split_once('/') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Workload {
                    kind: kind.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(format!("{s:?}: write Kind/name, e.g. Deployment/web")),
        }
    }

    /// Whether a pod's workload (`Kind/name`) is this one; the kind in any case, as kubectl
    /// takes `deployment/web`.
    fn is(&self, pods: &str) -> bool {
        pods.split_once('/')
            .is_some_and(|(k, n)| k.eq_ignore_ascii_case(&self.kind) && n == self.name)
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// The proxies whose pod belongs to `workload`, given the workload of each pod by
/// (namespace, name); a proxy whose pod is not there (gone since) is left out.
pub fn of_workload<'a>(
    proxies: Vec<&'a pb::Proxy>,
    workload: &Workload,
    pods: &HashMap<(String, String), String>,
) -> Vec<&'a pb::Proxy> {
    proxies
        .into_iter()
        .filter(|p| {
            pods.get(&(p.namespace.clone(), p.name.clone()))
                .is_some_and(|w| workload.is(w))
        })
        .collect()
}

/// The proxies in `state`, or all of them.
pub fn filter(proxies: &[pb::Proxy], state: Option<State>) -> Vec<&pb::Proxy> {
    proxies
        .iter()
        .filter(|p| state.is_none_or(|s| State::of_proxy(p) == s))
        .collect()
}

/// `-o json|yaml` of proxy-status: the API's facts, named as Kubernetes names fields.
#[derive(Serialize)]
pub struct Listing<'a> {
    proxies: Vec<ProxyView<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProxyView<'a> {
    namespace: &'a str,
    name: &'a str,
    mode: &'a str,
    state: State,
    /// Seconds since the Unix epoch.
    connected_at: i64,
    #[serde(skip_serializing_if = "str::is_empty")]
    replica: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    spiffe_id: &'a str,
    /// Seconds since the Unix epoch; absent without a certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_not_after: Option<i64>,
    types: Vec<TypeView<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TypeView<'a> {
    type_url: &'a str,
    state: State,
    sent_version: &'a str,
    acked_version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    nack_message: &'a str,
}

pub fn listing<'a>(proxies: &[&'a pb::Proxy]) -> Listing<'a> {
    let proxies = proxies
        .iter()
        .map(|p| ProxyView {
            namespace: &p.namespace,
            name: &p.name,
            mode: &p.mode,
            state: State::of_proxy(p),
            connected_at: p.connected_at,
            replica: &p.replica,
            spiffe_id: &p.spiffe_id,
            certificate_not_after: (p.certificate_not_after > 0).then_some(p.certificate_not_after),
            types: p
                .types
                .iter()
                .map(|t| TypeView {
                    type_url: &t.type_url,
                    state: State::of_type(t),
                    sent_version: &t.sent_version,
                    acked_version: &t.acked_version,
                    nack_message: &t.nack_message,
                })
                .collect(),
        })
        .collect();
    Listing { proxies }
}

/// One line per proxy, a column per type, its certificate's expiry (from `now`), the replica
/// serving it and its identity, then Envoy's words for every rejection.
pub fn table(
    proxies: &[&pb::Proxy],
    scope: &Scope,
    state: Option<State>,
    workload: Option<&Workload>,
    now: SystemTime,
) -> String {
    if proxies.is_empty() {
        let which = state.map_or(String::new(), |s| format!(" {}", s.label()));
        let of = workload.map_or(String::new(), |w| format!(" of {w}"));
        return match scope {
            Scope::All => format!("no{which} proxy{of} is connected\n"),
            Scope::Namespace(ns) => {
                format!("no{which} proxy{of} in namespace {ns} (-A: every namespace)\n")
            }
        };
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<40} {:<6} {:<7} {:<7} {:<7} {:<7} {:<8} {:<24} IDENTITY",
        "PROXY", "MODE", "CDS", "EDS", "LDS", "RDS", "CERT", "REPLICA"
    );
    let mut nacks = Vec::new();
    for p in proxies {
        let name = format!("{}/{}", p.namespace, p.name);
        let mut line = format!("{name:<40} {:<6}", p.mode);
        for (short, url) in TYPES {
            let state = match p.types.iter().find(|t| t.type_url == url) {
                None => "-",
                Some(t) => {
                    if !t.nack_message.is_empty() && t.state() == pb::SyncState::Nacked {
                        nacks.push(format!("{name} {short}: {}", t.nack_message));
                    }
                    match t.state() {
                        pb::SyncState::Unspecified => "?",
                        _ => State::of_type(t).label(),
                    }
                }
            };
            let _ = write!(line, " {state:<7}");
        }
        let identity = if p.spiffe_id.is_empty() {
            "-"
        } else {
            &p.spiffe_id
        };
        let expiry = expires_in(p.certificate_not_after, now);
        let replica = if p.replica.is_empty() {
            "-"
        } else {
            &p.replica
        };
        let _ = write!(line, " {expiry:<8} {replica:<24} {identity}");
        let _ = writeln!(out, "{}", line.trim_end());
    }
    for n in nacks {
        let _ = writeln!(out, "rejected: {n}");
    }
    out
}

/// How long until `not_after` (seconds since the epoch): `23h59m`, `4m10s`, `expired`, or
/// `-` without a certificate.
fn expires_in(not_after: i64, now: SystemTime) -> String {
    if not_after <= 0 {
        return "-".into();
    }
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let Some(left) = u64::try_from(not_after)
        .ok()
        .and_then(|t| t.checked_sub(now))
    else {
        return "expired".into();
    };
    match left {
        0 => "expired".into(),
        s if s >= 3600 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s => format!("{}m{}s", s / 60, s % 60),
    }
}

/// The proxy proxy-config asks for: `NAMESPACE/POD`, or a pod in -n, else in the
/// kubeconfig context's namespace.
pub fn proxy_name(
    proxy: &str,
    flag: Option<&str>,
    context: Option<&str>,
) -> Result<(String, String), String> {
    match (proxy.split_once('/'), flag.or(context)) {
        (Some((ns, _)), Some(other)) if flag.is_some() && ns != other => Err(format!(
            "{proxy:?} is in namespace {ns}, not -n {other}: give one of them"
        )),
        (Some((ns, pod)), _) if !ns.is_empty() && !pod.is_empty() && !pod.contains('/') => {
            Ok((ns.to_owned(), pod.to_owned()))
        }
        (None, Some(ns)) if !proxy.is_empty() => Ok((ns.to_owned(), proxy.to_owned())),
        (None, None) => Err(format!(
            "{proxy:?}: write NAMESPACE/POD or -n NAMESPACE (--server reads no kubeconfig)"
        )),
        _ => Err(format!("{proxy:?}: write POD or NAMESPACE/POD")),
    }
}

/// The resources of one kind in a proxy's config.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Listeners,
    Routes,
    Clusters,
    Endpoints,
    /// The workload certificate the pod's agent serves its proxy over SDS, as the control
    /// plane issued it (its SPIFFE ID and expiry; the key never leaves the pod).
    Secrets,
}

impl Section {
    /// The resource type of the section; none for secrets, which are not in the config.
    fn kind(self) -> Option<ResourceType> {
        match self {
            Section::Listeners => Some(ResourceType::Listener),
            Section::Routes => Some(ResourceType::RouteConfig),
            Section::Clusters => Some(ResourceType::Cluster),
            Section::Endpoints => Some(ResourceType::Endpoints),
            Section::Secrets => None,
        }
    }
}

/// The secrets section of `proxy`: its workload certificate under the SDS name its proxy
/// asks for, with its SPIFFE ID and expiry; empty without one.
pub fn secrets(proxy: &pb::Proxy, now: SystemTime) -> Value {
    if proxy.spiffe_id.is_empty() {
        return Value::Array(Vec::new());
    }
    serde_json::json!([{
        "kind": "Secret",
        "name": remora_envoy::sds::WORKLOAD_SECRET,
        "version": expires_in(proxy.certificate_not_after, now),
        "config": {
            "spiffeId": proxy.spiffe_id,
            "notAfter": proxy.certificate_not_after,
        },
    }])
}

/// The config's resources (GetConfig's JSON: a list of kind, name, version, config), only
/// those of `section` when given.
pub fn section(json: &str, section: Option<Section>) -> Result<Value, String> {
    let Value::Array(resources) = serde_json::from_str(json).map_err(|e| e.to_string())? else {
        return Err("not a list of resources".into());
    };
    let kind = section
        .and_then(Section::kind)
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| e.to_string())?;
    Ok(Value::Array(
        resources
            .into_iter()
            .filter(|r| kind.as_ref().is_none_or(|k| r.get("kind") == Some(k)))
            .collect(),
    ))
}

/// One line per resource: its kind, name and content version.
pub fn config_table(resources: &Value) -> String {
    let rows: Vec<[&str; 3]> = resources
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            ["kind", "name", "version"].map(|f| r.get(f).and_then(Value::as_str).unwrap_or("-"))
        })
        .collect();
    if rows.is_empty() {
        return "no resource\n".into();
    }
    let width = rows.iter().map(|r| r[1].len()).max().unwrap_or(0).max(4);
    let mut out = format!("{:<12} {:<width$} VERSION\n", "KIND", "NAME");
    for [kind, name, version] in rows {
        let _ = writeln!(out, "{kind:<12} {name:<width$} {version}");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn synced(url: &str) -> pb::TypeSync {
        pb::TypeSync {
            type_url: url.into(),
            state: pb::SyncState::Synced.into(),
            ..Default::default()
        }
    }

    fn proxy(name: &str, types: Vec<pb::TypeSync>) -> pb::Proxy {
        pb::Proxy {
            namespace: "demo".into(),
            name: name.into(),
            mode: "sotw".into(),
            types,
            ..Default::default()
        }
    }

    fn nacked_web() -> pb::Proxy {
        pb::Proxy {
            spiffe_id: "spiffe://cluster.local/ns/demo/sa/web".into(),
            certificate_not_after: 100_000,
            replica: "remora-7d9f-x2k4p".into(),
            ..proxy(
                "web-0",
                vec![
                    synced(CLUSTER),
                    pb::TypeSync {
                        type_url: ROUTE.into(),
                        state: pb::SyncState::Nacked.into(),
                        nack_message: "bad regex".into(),
                        ..Default::default()
                    },
                ],
            )
        }
    }

    #[test]
    fn the_secrets_section_is_the_issued_workload_certificate() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        let found = secrets(&nacked_web(), now);
        assert_eq!(
            found,
            serde_json::json!([{
                "kind": "Secret", "name": "default", "version": "25h0m",
                "config": {"spiffeId": "spiffe://cluster.local/ns/demo/sa/web", "notAfter": 100_000},
            }])
        );
        assert_eq!(
            config_table(&found).lines().nth(1),
            Some("Secret       default 25h0m")
        );
        let plaintext = proxy("web-0", vec![]);
        assert_eq!(secrets(&plaintext, now), serde_json::json!([]));
    }

    #[test]
    fn a_certificates_expiry_reads_as_time_left() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(expires_in(0, now), "-");
        assert_eq!(expires_in(900, now), "expired");
        assert_eq!(expires_in(1_250, now), "4m10s");
        assert_eq!(expires_in(1_000 + 86_340, now), "23h59m");
    }

    #[test]
    fn a_nack_shows_in_its_column_and_with_envoys_message() {
        let web = nacked_web();
        let text = table(
            &[&web],
            &Scope::All,
            None,
            None,
            UNIX_EPOCH + Duration::from_secs(10_000),
        );
        let row = text.lines().nth(1).expect("a row");
        assert!(row.starts_with("demo/web-0"), "{text}");
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols[1..],
            [
                "sotw",
                "SYNCED",
                "-",
                "-",
                "NACKED",
                "25h0m",
                "remora-7d9f-x2k4p",
                "spiffe://cluster.local/ns/demo/sa/web"
            ]
        );
        assert!(text.contains("rejected: demo/web-0 RDS: bad regex"));
    }

    #[test]
    fn a_proxy_is_as_synced_as_its_worst_type() {
        let stale = pb::TypeSync {
            state: pb::SyncState::Stale.into(),
            ..synced(LISTENER)
        };
        let proxies = [
            proxy("all-synced", vec![synced(CLUSTER), synced(LISTENER)]),
            proxy("one-stale", vec![synced(CLUSTER), stale]),
            nacked_web(),
            proxy("nothing-yet", vec![]),
        ];
        let names = |state| -> Vec<String> {
            filter(&proxies, state)
                .iter()
                .map(|p| p.name.clone())
                .collect()
        };
        assert_eq!(names(Some(State::Synced)), ["all-synced"]);
        assert_eq!(names(Some(State::Stale)), ["one-stale", "nothing-yet"]);
        assert_eq!(names(Some(State::Nacked)), ["web-0"]);
        assert_eq!(names(None).len(), 4);
    }

    #[test]
    fn json_carries_every_fact_and_the_nack_message() {
        let web = nacked_web();
        let value = serde_json::to_value(listing(&[&web])).expect("json");
        let p = &value["proxies"][0];
        assert_eq!(p["name"], "web-0");
        assert_eq!(p["state"], "NACKED");
        assert_eq!(p["replica"], "remora-7d9f-x2k4p");
        assert_eq!(p["certificateNotAfter"], 100_000);
        assert_eq!(p["types"][1]["typeUrl"], ROUTE);
        assert_eq!(p["types"][1]["nackMessage"], "bad regex");
        assert!(p["types"][0].get("nackMessage").is_none(), "{p}");
    }

    #[test]
    fn an_empty_answer_says_where_it_looked() {
        let now = UNIX_EPOCH;
        let demo = Scope::Namespace("demo".into());
        assert_eq!(
            table(&[], &demo, Some(State::Nacked), None, now),
            "no NACKED proxy in namespace demo (-A: every namespace)\n"
        );
        assert_eq!(
            table(&[], &Scope::All, None, None, now),
            "no proxy is connected\n"
        );
        let web = Workload::parse("Deployment/web").expect("a workload");
        assert_eq!(
            table(&[], &demo, None, Some(&web), now),
            "no proxy of Deployment/web in namespace demo (-A: every namespace)\n"
        );
    }

    #[test]
    fn a_workload_keeps_the_proxies_of_its_pods() {
        let proxies = [
            proxy("web-7d9f-a", vec![]),
            proxy("web-7d9f-b", vec![]),
            proxy("db-0", vec![]),
            proxy("gone", vec![]),
        ];
        let pods: HashMap<(String, String), String> = [
            ("web-7d9f-a", "Deployment/web"),
            ("web-7d9f-b", "Deployment/web"),
            ("db-0", "StatefulSet/db"),
        ]
        .into_iter()
        .map(|(pod, w)| (("demo".to_owned(), pod.to_owned()), w.to_owned()))
        .collect();
        let names = |w: &str| -> Vec<String> {
            let w = Workload::parse(w).expect("a workload");
            of_workload(filter(&proxies, None), &w, &pods)
                .iter()
                .map(|p| p.name.clone())
                .collect()
        };
        assert_eq!(names("Deployment/web"), ["web-7d9f-a", "web-7d9f-b"]);
        assert_eq!(names("deployment/web"), ["web-7d9f-a", "web-7d9f-b"]);
        assert_eq!(names("StatefulSet/db"), ["db-0"]);
        assert!(names("Deployment/db").is_empty());
        assert!(names("StatefulSet/web").is_empty());
    }

    #[test]
    fn a_workload_is_written_kind_slash_name() {
        assert!(Workload::parse("Deployment/web").is_ok());
        for bad in ["web", "Deployment/", "/web", "Deployment/web/x"] {
            assert!(Workload::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_namespace_is_chosen_as_kubectl_chooses_it() {
        let ctx = Some("team");
        assert_eq!(Scope::of(false, None, ctx), Scope::Namespace("team".into()));
        assert_eq!(
            Scope::of(false, Some("demo"), ctx),
            Scope::Namespace("demo".into())
        );
        assert_eq!(Scope::of(true, None, ctx), Scope::All);
        // --server reads no kubeconfig: every namespace unless -n.
        assert_eq!(Scope::of(false, None, None), Scope::All);
        assert_eq!(Scope::All.namespace(), "");
    }

    #[test]
    fn a_proxy_is_named_by_pod_or_namespace_and_pod() {
        let owned = |a: &str, b: &str| Ok((a.to_owned(), b.to_owned()));
        assert_eq!(
            proxy_name("web-0", None, Some("team")),
            owned("team", "web-0")
        );
        assert_eq!(
            proxy_name("web-0", Some("demo"), Some("team")),
            owned("demo", "web-0")
        );
        assert_eq!(
            proxy_name("demo/web-0", None, Some("team")),
            owned("demo", "web-0")
        );
        assert_eq!(
            proxy_name("demo/web-0", Some("demo"), None),
            owned("demo", "web-0")
        );
        assert!(proxy_name("demo/web-0", Some("other"), None).is_err());
        assert!(proxy_name("web-0", None, None).is_err());
        assert!(proxy_name("demo/", None, None).is_err());
        assert!(proxy_name("a/b/c", None, None).is_err());
    }

    const CONFIG: &str = r#"[
        {"kind": "Cluster", "name": "outbound|9080||reviews", "version": "01", "config": {}},
        {"kind": "Endpoints", "name": "outbound|9080||reviews", "version": "02", "config": {}},
        {"kind": "Listener", "name": "0.0.0.0_9080", "version": "03", "config": {}},
        {"kind": "RouteConfig", "name": "9080", "version": "04", "config": {}}
    ]"#;

    #[test]
    fn a_section_keeps_only_its_kind_of_resource() {
        let kinds = |s| -> Vec<String> {
            let Value::Array(rs) = section(CONFIG, s).expect("a config") else {
                panic!("a list")
            };
            rs.iter()
                .map(|r| r["kind"].as_str().unwrap_or_default().to_owned())
                .collect()
        };
        assert_eq!(
            kinds(None),
            ["Cluster", "Endpoints", "Listener", "RouteConfig"]
        );
        assert_eq!(kinds(Some(Section::Listeners)), ["Listener"]);
        assert_eq!(kinds(Some(Section::Routes)), ["RouteConfig"]);
        assert_eq!(kinds(Some(Section::Clusters)), ["Cluster"]);
        assert_eq!(kinds(Some(Section::Endpoints)), ["Endpoints"]);
        assert!(section("{}", None).is_err());
    }

    #[test]
    fn the_config_table_lists_kind_name_and_version() {
        let routes = section(CONFIG, Some(Section::Routes)).expect("a config");
        assert_eq!(
            config_table(&routes),
            "KIND         NAME VERSION\nRouteConfig  9080 04\n"
        );
        assert_eq!(config_table(&Value::Array(vec![])), "no resource\n");
    }
}
