//! What `remora status` shows, as pure functions of the objects read: a row per object with
//! its `Ready` condition, whether the status describes the spec as it is now, and the
//! counts the controller keeps.

use std::fmt::Write as _;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use remora_api::{
    AccessPolicy, SidecarPolicy, TrafficRoute, conditions,
    sidecar_policy::{RolloutPhase, VersionCount},
    traffic_route::ProxyCounts,
};
use serde::Serialize;

use crate::status::Scope;

/// The document of `-o json|yaml`; `ready` is what the exit code says.
#[derive(Debug, Serialize)]
pub struct Overview {
    pub ready: bool,
    pub objects: Vec<Row>,
}

/// One object and what its status says.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// The `Ready` condition's status: `True`, `False`, or `Unknown` before the controller
    /// wrote one.
    pub ready: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub generation: Option<i64>,
    /// The oldest generation the status (or its `Ready` condition) describes.
    pub observed_generation: Option<i64>,
    /// The spec changed since the status was written, so `ready` is about an older spec.
    pub stale: bool,
    /// How the proxies took the route or access policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxies: Option<ProxyCounts>,
    /// A SidecarPolicy's proxies by sidecar version, newest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<VersionCount>,
    /// A SidecarPolicy's rollout phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutPhase>,
}

impl Row {
    /// The facts every kind shares: the `Ready` condition and the generations.
    fn of(
        kind: &'static str,
        meta: &ObjectMeta,
        observed: Option<i64>,
        all: Option<&[Condition]>,
    ) -> Row {
        let ready = all.and_then(|cs| cs.iter().find(|c| c.type_ == conditions::READY));
        let observed = [observed, ready.and_then(|c| c.observed_generation)]
            .into_iter()
            .flatten()
            .min();
        let generation = meta.generation;
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Row {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            ready: ready.map_or_else(|| "Unknown".to_owned(), |c| c.status.clone()),
            reason: ready.and_then(|c| non_empty(&c.reason)),
            message: match ready {
                Some(c) => non_empty(&c.message),
                None => Some("the controller has not reported on it yet".into()),
            },
            generation,
            observed_generation: observed,
            stale: matches!((observed, generation), (Some(o), Some(g)) if o < g),
            proxies: None,
            versions: Vec::new(),
            rollout: None,
        }
    }

    /// Ready, about the spec as it is now.
    pub fn is_ok(&self) -> bool {
        self.ready == "True" && !self.stale
    }
}

pub fn sidecar_policy(p: &SidecarPolicy) -> Row {
    let status = p.status.as_ref();
    Row {
        versions: status.map(|s| s.versions.clone()).unwrap_or_default(),
        rollout: status.and_then(|s| s.rollout.as_ref()).map(|r| r.phase),
        ..Row::of(
            "SidecarPolicy",
            &p.metadata,
            status.and_then(|s| s.observed_generation),
            status.map(|s| s.conditions.as_slice()),
        )
    }
}

pub fn traffic_route(r: &TrafficRoute) -> Row {
    let status = r.status.as_ref();
    Row {
        proxies: status.and_then(|s| s.proxies.clone()),
        ..Row::of(
            "TrafficRoute",
            &r.metadata,
            status.and_then(|s| s.observed_generation),
            status.map(|s| s.conditions.as_slice()),
        )
    }
}

pub fn access_policy(p: &AccessPolicy) -> Row {
    let status = p.status.as_ref();
    Row {
        proxies: status.and_then(|s| s.proxies.clone()),
        ..Row::of(
            "AccessPolicy",
            &p.metadata,
            status.and_then(|s| s.observed_generation),
            status.map(|s| s.conditions.as_slice()),
        )
    }
}

/// The rows in the order people read them: by namespace, then kind (policies, routes,
/// access), then name.
pub fn overview(mut objects: Vec<Row>) -> Overview {
    let rank = |kind: &str| {
        ["SidecarPolicy", "TrafficRoute", "AccessPolicy"]
            .iter()
            .position(|k| *k == kind)
    };
    objects.sort_by(|a, b| {
        (&a.namespace, rank(a.kind), &a.name).cmp(&(&b.namespace, rank(b.kind), &b.name))
    });
    Overview {
        ready: objects.iter().all(Row::is_ok),
        objects,
    }
}

/// A line per object, then why each one not Ready is held back, then a one-line verdict.
/// The namespace column shows only for every namespace, as kubectl's.
pub fn table(overview: &Overview, scope: &Scope) -> String {
    if overview.objects.is_empty() {
        return match scope {
            Scope::All => "no SidecarPolicy, TrafficRoute or AccessPolicy\n".into(),
            Scope::Namespace(ns) => format!(
                "no SidecarPolicy, TrafficRoute or AccessPolicy in namespace {ns} \
                 (-A: every namespace)\n"
            ),
        };
    }
    let all = *scope == Scope::All;
    let mut rows: Vec<Vec<String>> = vec![
        [
            "NAMESPACE",
            "OBJECT",
            "READY",
            "STALE",
            "REASON",
            "ACKED",
            "NACKED",
            "VERSIONS",
            "ROLLOUT",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for o in &overview.objects {
        let (acked, nacked) = match &o.proxies {
            Some(p) => (format!("{}/{}", p.acked, p.affected), p.nacked.to_string()),
            None => ("-".into(), "-".into()),
        };
        let versions: Vec<String> = o
            .versions
            .iter()
            .map(|v| format!("{}={}", v.version, v.proxies))
            .collect();
        rows.push(vec![
            o.namespace.clone(),
            format!("{}/{}", o.kind, o.name),
            o.ready.clone(),
            if o.stale { "yes" } else { "no" }.into(),
            o.reason.clone().unwrap_or_else(|| "-".into()),
            acked,
            nacked,
            if versions.is_empty() {
                "-".into()
            } else {
                versions.join(",")
            },
            o.rollout.map_or_else(|| "-".into(), |p| format!("{p:?}")),
        ]);
    }
    if !all {
        for row in &mut rows {
            row.remove(0);
        }
    }
    let mut out = aligned(&rows);
    let held: Vec<&Row> = overview.objects.iter().filter(|o| !o.is_ok()).collect();
    for o in &held {
        let name = format!("{}/{}/{}", o.namespace, o.kind, o.name);
        if o.stale {
            let _ = writeln!(
                out,
                "{name}: the status describes generation {}, the spec is at {}: the \
                 controller has not caught up (is it running?)",
                o.observed_generation.unwrap_or_default(),
                o.generation.unwrap_or_default(),
            );
        }
        if o.ready != "True" {
            let why = o.message.as_deref().unwrap_or("no message");
            let _ = writeln!(out, "{name}: {why}");
        }
    }
    let n = overview.objects.len();
    let _ = match held.len() {
        0 => writeln!(out, "all {n} Ready"),
        h => writeln!(out, "{h} of {n} not Ready or stale"),
    };
    out
}

/// Columns padded to their widest cell, the last one unpadded.
fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn condition(status: &str, reason: &str, message: &str) -> Value {
        json!({"type": "Ready", "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-01-01T00:00:00Z"})
    }

    fn route(name: &str, generation: i64, observed: i64, ready: Value) -> TrafficRoute {
        serde_json::from_value(json!({
            "apiVersion": "remora.dev/v1alpha1", "kind": "TrafficRoute",
            "metadata": {"name": name, "namespace": "demo", "generation": generation},
            "spec": {"parentRefs": [{"name": "reviews"}],
                "http": [{"backendRefs": [{"name": "reviews"}]}]},
            "status": {"observedGeneration": observed, "conditions": [ready],
                "proxies": {"affected": 3, "acked": 2, "nacked": 1}},
        }))
        .expect("a TrafficRoute")
    }

    fn fleet() -> SidecarPolicy {
        serde_json::from_value(json!({
            "apiVersion": "remora.dev/v1alpha1", "kind": "SidecarPolicy",
            "metadata": {"name": "fleet", "namespace": "demo", "generation": 4},
            "spec": {"proxy": {"image": "envoyproxy/envoy", "version": "v1.40.0"}},
            "status": {"observedGeneration": 4,
                "conditions": [condition("True", "Ready", "")],
                "versions": [{"version": "v1.40.0", "proxies": 3},
                    {"version": "v1.39.0", "proxies": 1}],
                "rollout": {"phase": "Progressing", "targetVersion": "v1.40.0", "wave": 2,
                    "totalWaves": 3, "updatedWorkloads": 3, "totalWorkloads": 4}},
        }))
        .expect("a SidecarPolicy")
    }

    fn guard(status: Option<Value>) -> AccessPolicy {
        let mut policy = json!({
            "apiVersion": "remora.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": "guard", "namespace": "demo", "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "reviews"}},
                "rules": [{"name": "mesh", "from": [{"authenticated": true}]}]},
        });
        if let Some(s) = status {
            policy["status"] = s;
        }
        serde_json::from_value(policy).expect("an AccessPolicy")
    }

    #[test]
    fn a_ready_current_status_is_ok_and_its_counts_are_kept() {
        let row = traffic_route(&route("reviews", 2, 2, condition("True", "Ready", "")));
        assert!(row.is_ok(), "{row:?}");
        assert_eq!(
            row.proxies,
            Some(ProxyCounts {
                affected: 3,
                acked: 2,
                nacked: 1
            })
        );
        let policy = sidecar_policy(&fleet());
        assert!(policy.is_ok());
        assert_eq!(policy.rollout, Some(RolloutPhase::Progressing));
        assert_eq!(policy.versions.len(), 2);
    }

    #[test]
    fn a_status_of_an_older_generation_is_stale_even_when_ready() {
        let row = traffic_route(&route("reviews", 3, 2, condition("True", "Ready", "")));
        assert!(row.stale && !row.is_ok(), "{row:?}");
        // The Ready condition's own generation counts too.
        let mut ready = condition("True", "Ready", "");
        ready["observedGeneration"] = json!(1);
        let row = traffic_route(&route("reviews", 2, 2, ready));
        assert_eq!(row.observed_generation, Some(1));
        assert!(row.stale, "{row:?}");
    }

    #[test]
    fn without_a_status_the_readiness_is_unknown() {
        let row = access_policy(&guard(None));
        assert_eq!(row.ready, "Unknown");
        assert!(!row.stale && !row.is_ok(), "{row:?}");
        assert_eq!(
            row.message.as_deref(),
            Some("the controller has not reported on it yet")
        );
    }

    #[test]
    fn the_table_says_what_holds_each_object_back() {
        let nacked = condition("False", "RejectedByProxy", "1 proxy rejected it: bad regex");
        let view = overview(vec![
            traffic_route(&route("reviews", 2, 2, nacked)),
            access_policy(&guard(Some(json!({"observedGeneration": 1,
                "conditions": [condition("True", "Ready", "")]})))),
            sidecar_policy(&fleet()),
        ]);
        assert!(!view.ready);
        let text = table(&view, &Scope::Namespace("demo".into()));
        let lines: Vec<&str> = text.lines().collect();
        let cols = |i: usize| -> Vec<&str> { lines[i].split_whitespace().collect() };
        assert_eq!(
            cols(0),
            [
                "OBJECT", "READY", "STALE", "REASON", "ACKED", "NACKED", "VERSIONS", "ROLLOUT"
            ]
        );
        assert_eq!(
            cols(1),
            [
                "SidecarPolicy/fleet",
                "True",
                "no",
                "Ready",
                "-",
                "-",
                "v1.40.0=3,v1.39.0=1",
                "Progressing"
            ]
        );
        assert_eq!(
            cols(2),
            [
                "TrafficRoute/reviews",
                "False",
                "no",
                "RejectedByProxy",
                "2/3",
                "1",
                "-",
                "-"
            ]
        );
        assert_eq!(
            cols(3),
            [
                "AccessPolicy/guard",
                "True",
                "no",
                "Ready",
                "-",
                "-",
                "-",
                "-"
            ]
        );
        assert_eq!(
            lines[4],
            "demo/TrafficRoute/reviews: 1 proxy rejected it: bad regex"
        );
        assert_eq!(lines[5], "1 of 3 not Ready or stale");
    }

    #[test]
    fn the_table_explains_a_stale_status_and_shows_namespaces_for_all() {
        let view = overview(vec![traffic_route(&route(
            "reviews",
            3,
            2,
            condition("True", "Ready", ""),
        ))]);
        let text = table(&view, &Scope::All);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE  OBJECT"), "{text}");
        assert!(
            lines[1].starts_with("demo       TrafficRoute/reviews  True   yes"),
            "{text}"
        );
        assert_eq!(
            lines[2],
            "demo/TrafficRoute/reviews: the status describes generation 2, the spec is at 3: \
             the controller has not caught up (is it running?)"
        );
        assert_eq!(lines[3], "1 of 1 not Ready or stale");
    }

    #[test]
    fn all_ready_says_so_and_nothing_says_where_it_looked() {
        let view = overview(vec![sidecar_policy(&fleet())]);
        assert!(view.ready);
        assert!(table(&view, &Scope::All).ends_with("\nall 1 Ready\n"));
        let empty = overview(Vec::new());
        assert!(empty.ready);
        assert_eq!(
            table(&empty, &Scope::Namespace("demo".into())),
            "no SidecarPolicy, TrafficRoute or AccessPolicy in namespace demo \
             (-A: every namespace)\n"
        );
    }

    #[test]
    fn json_names_fields_as_kubernetes_does() {
        let view = overview(vec![
            sidecar_policy(&fleet()),
            traffic_route(&route("reviews", 3, 2, condition("True", "Ready", ""))),
        ]);
        let doc = serde_json::to_value(&view).expect("json");
        assert_eq!(doc["ready"], false);
        let policy = &doc["objects"][0];
        assert_eq!(policy["kind"], "SidecarPolicy");
        assert_eq!(policy["rollout"], "Progressing");
        assert_eq!(policy["versions"][1]["version"], "v1.39.0");
        assert!(policy.get("proxies").is_none(), "{policy}");
        let route = &doc["objects"][1];
        assert_eq!(route["observedGeneration"], 2);
        assert_eq!(route["stale"], true);
        assert_eq!(route["proxies"]["nacked"], 1);
    }
}
