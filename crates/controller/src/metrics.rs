//! Prometheus metrics of the controller. Counters and histograms are updated where things
//! happen; gauges of the xDS side (connected and NACKing proxies) are read from the status
//! registry when scraped, so they are never stale.

use std::time::Duration;

use prometheus_client::{
    encoding::{
        EncodeLabelSet,
        text::{encode_eof, encode_registry},
    },
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use remora_ca::{CaMetrics, Issuances};
use remora_xds::{Refusal, Refusals, StreamAge, SyncRegistry, sync::SyncState};

use crate::process::ProcessCollector;

/// The labels of `injections`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InjectionLabels {
    /// `injected`, `skipped`, `refused` or `unavailable`.
    pub result: &'static str,
    /// Why, for all but `injected`: a skip's `SkipReason::metric_label`, the kind of conflict
    /// that refused a pod, or `not_synced`.
    pub reason: &'static str,
}

/// The label of per-kind metrics (`reconcile_duration_seconds`, `status_writes`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `TrafficRoute` or `SidecarPolicy`.
    pub kind: &'static str,
}

/// The labels of `reconciles`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `TrafficRoute` or `SidecarPolicy`.
    pub kind: &'static str,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// The labels of `rollout_actions`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// `restart` or `evict`.
    pub action: &'static str,
    /// `ok` or `error` (an eviction a PodDisruptionBudget refuses is an error, retried).
    pub outcome: &'static str,
}

/// The label of `rollout_transitions`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The Event reason: `WaveStarted`, `WavePassed`, `GateFailed`, `RolledBack`, ...
    pub reason: &'static str,
}

/// The labels of `proxy_report_writes`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReportWriteLabels {
    /// `apply` or `delete`.
    pub op: &'static str,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// The labels of `build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The controller's version, e.g. `0.1.0`.
    pub version: &'static str,
}

/// The controller's metrics, registered under the `remora` prefix, and the process metrics
/// (`process_*`) without it.
pub struct Metrics {
    registry: Registry,
    process: Registry,
    /// Workload restarts and pod evictions a rollout asked for.
    pub rollout_actions: Family<ActionLabels, Counter>,
    /// Rollout transitions: waves started and passed, gates failed, rollbacks.
    pub rollout_transitions: Family<ReasonLabel, Counter>,
    /// Status reconciliations.
    pub reconciles: Family<OutcomeLabels, Counter>,
    /// Time to compute and, when changed, write one object's status (seconds).
    pub reconcile_seconds: Family<KindLabel, Histogram>,
    /// Status writes to the API server (only changed statuses are written).
    pub status_writes: Family<KindLabel, Counter>,
    /// Proxies that got a new snapshot.
    pub pushes: Counter,
    /// From a batch of cluster events to its snapshots being published.
    pub push_seconds: Histogram,
    /// 1 while this replica holds the lease, else 0.
    pub leader: Gauge,
    /// Pod admissions the sidecar injector answered.
    pub injections: Family<InjectionLabels, Counter>,
    /// API writes of this replica's proxy report (and deletions of expired reports).
    pub report_writes: Family<ReportWriteLabels, Counter>,
    /// Workload certificates issued and requests refused by the mesh CA.
    pub certificates: CaMetrics,
    /// Each pod's latest certificate, for the gauge of those expiring.
    pub issuances: Issuances,
    expiring: Gauge,
    streams_aged: Counter,
    stream_age: std::sync::OnceLock<StreamAge>,
    refused: Family<ReasonLabel, Counter>,
    refusals: std::sync::OnceLock<Refusals>,
    connected: Gauge,
    nacking: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("remora");
        let reconciles = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Status reconciliations by kind and outcome",
            reconciles.clone(),
        );
        let reconcile_seconds = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0])
        });
        registry.register(
            "reconcile_duration_seconds",
            "Time to compute and, when changed, write one object's status",
            reconcile_seconds.clone(),
        );
        let status_writes = Family::<KindLabel, Counter>::default();
        registry.register(
            "status_writes",
            "Status writes to the API server (only changed statuses are written)",
            status_writes.clone(),
        );
        let pushes = Counter::default();
        registry.register("pushes", "Proxy snapshots published", pushes.clone());
        let push_seconds = Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]);
        registry.register(
            "push_duration_seconds",
            "From a debounced batch of cluster events to its snapshots being published",
            push_seconds.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the lease",
            leader.clone(),
        );
        let injections = Family::<InjectionLabels, Counter>::default();
        registry.register(
            "injections",
            "Pod admissions the sidecar injector answered, by result and reason",
            injections.clone(),
        );
        let report_writes = Family::<ReportWriteLabels, Counter>::default();
        registry.register(
            "proxy_report_writes",
            "API writes of this replica's proxy report, and deletions of expired ones, by outcome",
            report_writes.clone(),
        );
        let streams_aged = Counter::default();
        registry.register(
            "xds_streams_aged",
            "ADS streams ended at their maximum age, so that their proxies reconnect (and \
             rebalance across replicas)",
            streams_aged.clone(),
        );
        let refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "xds_refused",
            "xDS clients cut off by a limit: connection (over the cap), stream (over the \
             connection's), first_request and partial_message (past their deadline), \
             subscriptions (too many names), slow_reader (read no response in time)",
            refused.clone(),
        );
        let connected = Gauge::default();
        registry.register(
            "connected_proxies",
            "Proxies with an open xDS stream",
            connected.clone(),
        );
        let nacking = Gauge::default();
        registry.register(
            "nacking_proxies",
            "Connected proxies whose last answer to some type was a NACK",
            nacking.clone(),
        );
        let rollout_actions = Family::<ActionLabels, Counter>::default();
        registry.register(
            "rollout_actions",
            "Workload restarts and pod evictions a rollout asked for, by outcome",
            rollout_actions.clone(),
        );
        let rollout_transitions = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "rollout_transitions",
            "Rollout transitions (waves started and passed, gates failed, rollbacks), by reason",
            rollout_transitions.clone(),
        );
        let certificates = CaMetrics::default();
        certificates.register(&mut registry);
        let expiring = Gauge::default();
        registry.register(
            "certificates_expiring",
            "Pods whose latest workload certificate has less than a quarter of its life left \
             (their agent renews at half): a renewal is failing",
            expiring.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "build_info",
            "1, labelled with the controller's version",
            build.clone(),
        );
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        let mut process = Registry::default();
        process.register_collector(Box::new(ProcessCollector));
        Metrics {
            registry,
            process,
            certificates,
            issuances: Issuances::default(),
            expiring,
            rollout_actions,
            rollout_transitions,
            reconciles,
            reconcile_seconds,
            status_writes,
            pushes,
            push_seconds,
            leader,
            injections,
            report_writes,
            streams_aged,
            stream_age: std::sync::OnceLock::new(),
            refused,
            refusals: std::sync::OnceLock::new(),
            connected,
            nacking,
        }
    }

    /// Counts one API write (`apply` or `delete`) of a proxy report.
    pub fn report_write(&self, op: &'static str, ok: bool) {
        let labels = ReportWriteLabels {
            op,
            outcome: outcome(ok),
        };
        self.report_writes.get_or_create(&labels).inc();
    }

    /// Counts one reconciliation of an object of `kind` and records how long it took.
    pub fn observe_reconcile(&self, kind: &'static str, ok: bool, took: Duration) {
        self.reconciles
            .get_or_create(&OutcomeLabels {
                kind,
                outcome: outcome(ok),
            })
            .inc();
        self.reconcile_seconds
            .get_or_create(&KindLabel { kind })
            .observe(took.as_secs_f64());
    }

    /// Counts one restart or eviction a rollout asked for.
    pub fn observe_rollout_action(&self, action: &'static str, ok: bool) {
        self.rollout_actions
            .get_or_create(&ActionLabels {
                action,
                outcome: outcome(ok),
            })
            .inc();
    }

    /// Counts the streams `age` ends, from now on.
    pub fn track_stream_age(&self, age: StreamAge) {
        // Set once, at start: a second call has nothing new to track.
        let _ = self.stream_age.set(age);
    }

    /// Counts the xDS clients cut off in `refusals`, from now on.
    pub fn track_refusals(&self, refusals: Refusals) {
        // Set once, at start, as the stream age.
        let _ = self.refusals.set(refusals);
    }

    /// The text exposition, with the xDS gauges read now.
    pub fn render(&self, xds: &SyncRegistry) -> String {
        if let Some(age) = self.stream_age.get() {
            self.streams_aged
                .inc_by(age.ended().saturating_sub(self.streams_aged.get()));
        }
        if let Some(refusals) = self.refusals.get() {
            for r in Refusal::ALL {
                let counter = self
                    .refused
                    .get_or_create(&ReasonLabel { reason: r.as_str() });
                counter.inc_by(refusals.get(r).saturating_sub(counter.get()));
            }
        }
        let proxies = xds.all();
        let nacking = proxies
            .iter()
            .filter(|p| p.types.values().any(|t| t.state() == SyncState::Nacked))
            .count();
        self.connected.set(proxies.len() as i64);
        self.nacking.set(nacking as i64);
        let expiring = self.issuances.expiring(std::time::SystemTime::now());
        self.expiring
            .set(i64::try_from(expiring).unwrap_or(i64::MAX));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &self.process);
        let _ = encode_eof(&mut out);
        out
    }

    /// Counts one answer of the sidecar injector.
    pub fn observe_injection(&self, result: &'static str, reason: &'static str) {
        self.injections
            .get_or_create(&InjectionLabels { result, reason })
            .inc();
    }
}

/// The `outcome` label.
fn outcome(ok: bool) -> &'static str {
    if ok { "ok" } else { "error" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_their_labels() {
        let m = Metrics::new();
        m.observe_reconcile("TrafficRoute", true, Duration::from_millis(2));
        m.observe_reconcile("TrafficRoute", false, Duration::from_millis(2));
        m.status_writes
            .get_or_create(&KindLabel {
                kind: "SidecarPolicy",
            })
            .inc();
        let text = m.render(&SyncRegistry::new());
        assert!(
            text.contains(r#"remora_reconciles_total{kind="TrafficRoute",outcome="error"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"remora_status_writes_total{kind="SidecarPolicy"} 1"#));
        assert!(text.contains("remora_connected_proxies 0"));
        assert!(text.contains("remora_certificates_expiring 0"));
        assert!(text.contains("remora_reconcile_duration_seconds_count{kind=\"TrafficRoute\"} 2"));
    }

    #[test]
    fn build_info_and_process_metrics_come_before_one_end_marker() {
        let text = Metrics::new().render(&SyncRegistry::new());
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            text.contains(&format!("remora_build_info{{version=\"{version}\"}} 1\n")),
            "{text}"
        );
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(&format!("\n{name}")), "{name}: {text}");
        }
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn injections_count_by_result_and_reason() {
        let m = Metrics::new();
        m.observe_injection("injected", "");
        m.observe_injection("skipped", "opted_out");
        m.observe_injection("skipped", "opted_out");
        let text = m.render(&SyncRegistry::new());
        assert!(
            text.contains(r#"remora_injections_total{result="skipped",reason="opted_out"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"remora_injections_total{result="injected",reason=""} 1"#));
    }

    #[test]
    fn xds_refusals_are_rendered_by_reason_as_they_grow() {
        let m = Metrics::new();
        let refusals = Refusals::default();
        m.track_refusals(refusals.clone());
        refusals.count(Refusal::Stream);
        let text = m.render(&SyncRegistry::new());
        assert!(
            text.contains(r#"remora_xds_refused_total{reason="stream"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"remora_xds_refused_total{reason="slow_reader"} 0"#));
        refusals.count(Refusal::Stream);
        refusals.count(Refusal::Connection);
        let text = m.render(&SyncRegistry::new());
        assert!(
            text.contains(r#"remora_xds_refused_total{reason="stream"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"remora_xds_refused_total{reason="connection"} 1"#));
    }
}
