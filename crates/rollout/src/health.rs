//! Whether a workload runs a sidecar healthily, and which pod to evict next.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use remora_api::SidecarPolicySpec;

use crate::{PodFacts, ProxyHealth, Workload, revision_of};

/// The sidecar a workload's pods should run: `version` under the spec in effect.
#[derive(Debug)]
pub(crate) struct Wanted<'a> {
    pub(crate) version: &'a str,
    pub(crate) revision: String,
}

impl<'a> Wanted<'a> {
    pub(crate) fn new(spec: &SidecarPolicySpec, version: &'a str) -> Wanted<'a> {
        Wanted {
            version,
            revision: revision_of(spec, version),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Health {
    Healthy,
    Waiting,
    /// Why, in words a person can act on.
    Failed(String),
}

fn live(w: &Workload) -> impl Iterator<Item = &PodFacts> {
    w.pods.iter().filter(|p| !p.terminating)
}

/// Whether `p` runs the wanted sidecar: the check every gate, eviction and re-issue uses.
/// The revision covers what a version alone misses (resources, log level, extra containers);
/// a pod injected before the revision annotation existed can only be judged by its version.
pub(crate) fn runs(p: &PodFacts, want: &Wanted) -> bool {
    match &p.revision {
        Some(revision) => *revision == want.revision,
        None => p.version.as_deref() == Some(want.version),
    }
}

/// Every live pod runs `want` (vacuously true without pods: new ones get it anyway).
pub(crate) fn all_on(w: &Workload, want: &Wanted) -> bool {
    live(w).all(|p| runs(p, want))
}

fn ready_for(p: &PodFacts, now: &Time) -> Option<Duration> {
    let since = p.ready_since.as_ref()?;
    Some(Duration::try_from(now.0.duration_since(since.0)).unwrap_or(Duration::ZERO))
}

/// The health gate for one workload. `timed_out` carries the gate's timeout (as written) once
/// it passed:
/// an unhealthy workload then fails, with the reason it is unhealthy.
pub(crate) fn judge(
    w: &Workload,
    want: &Wanted,
    now: &Time,
    min_ready: Duration,
    timed_out: Option<&str>,
) -> Health {
    // A rejected config does not fix itself by waiting.
    if let Some((pod, msg)) = live(w)
        .filter(|p| runs(p, want))
        .find_map(|p| match &p.proxy {
            ProxyHealth::Nacked(msg) => Some((&p.name, msg)),
            _ => None,
        })
    {
        return Health::Failed(format!("proxy on pod {pod} rejected its config: {msg}"));
    }
    let desired = usize::try_from(w.desired).unwrap_or(0);
    let good = live(w)
        .filter(|p| {
            runs(p, want)
                && matches!(p.proxy, ProxyHealth::Acked | ProxyHealth::Unknown)
                && ready_for(p, now).is_some_and(|d| d >= min_ready)
        })
        .count();
    let stale: Vec<&PodFacts> = live(w).filter(|p| !runs(p, want)).collect();
    if good >= desired && stale.is_empty() {
        return Health::Healthy;
    }
    let Some(after) = timed_out else {
        return Health::Waiting;
    };
    let pending = live(w).find(|p| runs(p, want) && p.proxy == ProxyHealth::Pending);
    Health::Failed(if let Some(p) = stale.first() {
        let other = match (p.version.as_deref(), p.revision.as_deref()) {
            (None, _) => "no sidecar".to_owned(),
            // Same version, other revision: say so, or the reason reads as a contradiction.
            (Some(v), Some(r)) if v == want.version => format!("{v} at outdated revision {r}"),
            (Some(v), _) => v.to_owned(),
        };
        format!(
            "{} of {} pods still run {other} after {after}",
            stale.len(),
            live(w).count()
        )
    } else if let Some(p) = pending.filter(|_| good < desired) {
        format!(
            "proxy on pod {} has not acknowledged its config after {after}",
            p.name
        )
    } else {
        format!(
            "{} of {desired} pods not Ready after {after}",
            desired - good
        )
    })
}

/// The pod to evict next so `w` moves to `want`: one at a time, and only while every
/// other live pod is Ready and no replacement is missing. An old pod that is not Ready goes
/// first, since evicting it costs no capacity.
pub(crate) fn eviction(w: &Workload, want: &Wanted) -> Option<String> {
    let live: Vec<&PodFacts> = live(w).collect();
    let desired = usize::try_from(w.desired).unwrap_or(0);
    if live.len() < desired {
        return None;
    }
    let mut wrong: Vec<&PodFacts> = live.iter().copied().filter(|p| !runs(p, want)).collect();
    wrong.sort_by_key(|p| (p.ready_since.is_some(), p.name.as_str()));
    let pick = wrong.first()?;
    live.iter()
        .all(|p| p.name == pick.name || p.ready_since.is_some())
        .then(|| pick.name.clone())
}
