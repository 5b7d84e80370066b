//! What a replica's `/metrics` says about its API writes and its status work.

/// The counters of one scrape that a run compares over time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Scrape {
    /// Writes of the replica's own report objects (`op="apply"`), whatever their outcome.
    pub report_applies: f64,
    /// Deletions of report objects: its own shards that went, and (leader) expired ones.
    pub report_deletes: f64,
    /// Report writes and deletions that failed.
    pub report_errors: f64,
    /// TrafficRoute status writes (only changed statuses are written).
    pub route_status_writes: f64,
    /// SidecarPolicy status writes.
    pub policy_status_writes: f64,
    /// TrafficRoute status reconciliations (one per route per pass).
    pub route_reconciles: f64,
    /// Seconds those reconciliations took, summed.
    pub route_reconcile_seconds: f64,
    /// SidecarPolicy reconciliations and their seconds.
    pub policy_reconciles: f64,
    /// Seconds those took, summed.
    pub policy_reconcile_seconds: f64,
    /// Whether the replica holds the Lease.
    pub leader: bool,
    /// Proxies with an open stream to it.
    pub connected: f64,
}

impl Scrape {
    /// Reads the counters from the text of `/metrics`; a counter not there counts 0.
    pub fn parse(text: &str) -> Scrape {
        let sum = |name: &str, labels: &[(&str, &str)]| total(text, name, labels);
        Scrape {
            report_applies: sum("remora_proxy_report_writes_total", &[("op", "apply")]),
            report_deletes: sum("remora_proxy_report_writes_total", &[("op", "delete")]),
            report_errors: sum("remora_proxy_report_writes_total", &[("outcome", "error")]),
            route_status_writes: sum("remora_status_writes_total", &[("kind", "TrafficRoute")]),
            policy_status_writes: sum("remora_status_writes_total", &[("kind", "SidecarPolicy")]),
            route_reconciles: sum("remora_reconciles_total", &[("kind", "TrafficRoute")]),
            route_reconcile_seconds: sum(
                "remora_reconcile_duration_seconds_sum",
                &[("kind", "TrafficRoute")],
            ),
            policy_reconciles: sum("remora_reconciles_total", &[("kind", "SidecarPolicy")]),
            policy_reconcile_seconds: sum(
                "remora_reconcile_duration_seconds_sum",
                &[("kind", "SidecarPolicy")],
            ),
            leader: sum("remora_leader", &[]) > 0.0,
            connected: sum("remora_connected_proxies", &[]),
        }
    }

    /// Every API write counted here: report writes and deletions, and status writes.
    pub fn writes(&self) -> f64 {
        self.report_applies
            + self.report_deletes
            + self.route_status_writes
            + self.policy_status_writes
    }

    /// What changed from `before` to this one (counters only; `leader` and `connected` are
    /// this one's).
    pub fn since(&self, before: &Scrape) -> Scrape {
        Scrape {
            report_applies: self.report_applies - before.report_applies,
            report_deletes: self.report_deletes - before.report_deletes,
            report_errors: self.report_errors - before.report_errors,
            route_status_writes: self.route_status_writes - before.route_status_writes,
            policy_status_writes: self.policy_status_writes - before.policy_status_writes,
            route_reconciles: self.route_reconciles - before.route_reconciles,
            route_reconcile_seconds: self.route_reconcile_seconds - before.route_reconcile_seconds,
            policy_reconciles: self.policy_reconciles - before.policy_reconciles,
            policy_reconcile_seconds: self.policy_reconcile_seconds
                - before.policy_reconcile_seconds,
            leader: self.leader,
            connected: self.connected,
        }
    }
}

/// The sum of every sample of `name` whose labels include `labels`.
fn total(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, set) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let wanted = metric == name
                && labels
                    .iter()
                    .all(|(k, v)| set.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
            wanted.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP remora_proxy_report_writes API writes of this replica's proxy report.
# TYPE remora_proxy_report_writes counter
remora_proxy_report_writes_total{op="apply",outcome="ok"} 12
remora_proxy_report_writes_total{op="apply",outcome="error"} 1
remora_proxy_report_writes_total{op="delete",outcome="ok"} 2
remora_status_writes_total{kind="TrafficRoute"} 40
remora_reconciles_total{kind="TrafficRoute",outcome="ok"} 3000
remora_reconciles_total{kind="TrafficRoute",outcome="error"} 2
remora_reconcile_duration_seconds_sum{kind="TrafficRoute"} 1.5
remora_reconcile_duration_seconds_count{kind="TrafficRoute"} 3002
remora_leader 1
remora_connected_proxies 5000
"#;

    #[test]
    fn counters_are_summed_over_the_labels_not_asked_for() {
        let s = Scrape::parse(TEXT);
        assert_eq!(s.report_applies, 13.0);
        assert_eq!(s.report_deletes, 2.0);
        assert_eq!(s.report_errors, 1.0);
        assert_eq!(s.route_status_writes, 40.0);
        assert_eq!(s.policy_status_writes, 0.0);
        assert_eq!(s.route_reconciles, 3002.0);
        assert_eq!(s.route_reconcile_seconds, 1.5);
        assert!(s.leader);
        assert_eq!(s.connected, 5000.0);
        assert_eq!(s.writes(), 55.0);
    }

    #[test]
    fn a_difference_keeps_the_later_state() {
        let before = Scrape::parse(TEXT);
        let after = Scrape {
            report_applies: 20.0,
            leader: false,
            ..before
        };
        let d = after.since(&before);
        assert_eq!(d.report_applies, 7.0);
        assert_eq!(d.route_status_writes, 0.0);
        assert!(!d.leader);
        assert!(!Scrape::parse("remora_leader 0\n").leader);
    }
}
