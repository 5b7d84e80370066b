//! The controller's settings a run may vary, each defaulting to what `remora controller`
//! (and so the Helm chart) runs with, and the controller config a replica builds from them.

use std::{net::SocketAddr, time::Duration};

use remora_controller::{Config, fleet::FleetConfig, leader::LeaseConfig};
use remora_model::{config::Addressing, input::MeshSettings};
use remora_runtime::Debounce;

/// The Lease the replicas compete for, as `remora controller` names it by default; their
/// reports are `<lease>-proxies-<replica>-<shard>`.
pub const LEASE: &str = "remora-controller";

/// What the replicas run with.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct Knobs {
    /// How often the leader recomputes status when nothing it watches changed (`remora
    /// controller`: 2 s).
    #[arg(long, default_value_t = 2_000)]
    pub status_interval_ms: u64,
    /// The least time between two writes of a replica's report (`FleetConfig::new`: 250 ms).
    #[arg(long, default_value_t = 250)]
    pub report_min_interval_ms: u64,
    /// How often an unchanged report is renewed (`FleetConfig::new`: 10 s).
    #[arg(long, default_value_t = 10)]
    pub report_heartbeat_secs: u64,
    /// Quiet time that closes a batch of cluster events (`remora controller`: 100 ms).
    #[arg(long, default_value_t = 100)]
    pub debounce_ms: u64,
    /// The longest an event waits for its batch (`remora controller`: 1000 ms).
    #[arg(long, default_value_t = 1_000)]
    pub max_delay_ms: u64,
    /// How long the Lease holds without renewal (`remora controller`: 15 s).
    #[arg(long, default_value_t = 15)]
    pub lease_duration_secs: u64,
    /// How long before expiry the leader renews (`remora controller`: 5 s).
    #[arg(long, default_value_t = 5)]
    pub lease_grace_secs: u64,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            status_interval_ms: 2_000,
            report_min_interval_ms: 250,
            report_heartbeat_secs: 10,
            debounce_ms: 100,
            max_delay_ms: 1_000,
            lease_duration_secs: 15,
            lease_grace_secs: 5,
        }
    }
}

impl Knobs {
    /// The same knobs as command-line flags, for a replica's command line.
    pub fn flags(&self) -> Vec<String> {
        [
            ("--status-interval-ms", self.status_interval_ms),
            ("--report-min-interval-ms", self.report_min_interval_ms),
            ("--report-heartbeat-secs", self.report_heartbeat_secs),
            ("--debounce-ms", self.debounce_ms),
            ("--max-delay-ms", self.max_delay_ms),
            ("--lease-duration-secs", self.lease_duration_secs),
            ("--lease-grace-secs", self.lease_grace_secs),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_owned(), value.to_string()])
        .collect()
    }

    /// The flags that differ from what `remora controller` runs with, for the report.
    pub fn changed(&self) -> Vec<String> {
        let default = Knobs::default().flags();
        self.flags()
            .chunks(2)
            .zip(default.chunks(2))
            .filter(|(mine, theirs)| mine != theirs)
            .map(|(mine, _)| mine.join(" "))
            .collect()
    }

    /// Replica `replica`'s controller: on loopback, captured addressing as in a cluster,
    /// competing for the Lease in `namespace` and reporting its proxies there. No webhook,
    /// no injection, and no workload identities: simulated proxies hold no certificates,
    /// and status does not depend on them.
    pub fn config(&self, replica: &str, namespace: &str, root_namespace: &str) -> Config {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let report_expiry =
            remora_fleet::DEFAULT_EXPIRY.max(Duration::from_secs(3 * self.report_heartbeat_secs));
        Config {
            xds_addr: loopback,
            health_addr: loopback,
            settings: MeshSettings {
                root_namespace: root_namespace.to_owned(),
                addressing: Addressing::Captured,
                ..MeshSettings::default()
            },
            lease: Some(LeaseConfig {
                namespace: namespace.to_owned(),
                name: LEASE.to_owned(),
                identity: replica.to_owned(),
                duration: Duration::from_secs(self.lease_duration_secs),
                grace: Duration::from_secs(self.lease_grace_secs),
            }),
            fleet: Some(FleetConfig {
                min_interval: Duration::from_millis(self.report_min_interval_ms),
                heartbeat: Duration::from_secs(self.report_heartbeat_secs),
                expiry: report_expiry,
                ..FleetConfig::new(namespace, replica, &format!("{LEASE}-proxies"))
            }),
            max_stream_age: remora_xds::DEFAULT_MAX_STREAM_AGE,
            xds_limits: remora_xds::Limits::default(),
            debounce: Debounce {
                window: Duration::from_millis(self.debounce_ms),
                max_delay: Duration::from_millis(self.max_delay_ms.max(self.debounce_ms)),
            },
            status_interval: Duration::from_millis(self.status_interval_ms),
            discovery_interval: Duration::from_secs(30),
            webhook: None,
            inject: None,
            identity: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Line {
        #[command(flatten)]
        knobs: Knobs,
    }

    #[test]
    fn the_flags_parse_back_into_the_same_knobs() {
        let knobs = Knobs {
            status_interval_ms: 500,
            report_min_interval_ms: 100,
            ..Knobs::default()
        };
        let line = std::iter::once("fleet-bench".to_owned()).chain(knobs.flags());
        assert_eq!(Line::parse_from(line).knobs, knobs);
        let defaults = Line::parse_from(["fleet-bench"]).knobs;
        assert_eq!(defaults, Knobs::default());
    }

    #[test]
    fn only_the_knobs_that_differ_from_the_controllers_are_reported() {
        assert!(Knobs::default().changed().is_empty());
        let knobs = Knobs {
            report_min_interval_ms: 100,
            ..Knobs::default()
        };
        assert_eq!(knobs.changed(), ["--report-min-interval-ms 100"]);
    }

    #[test]
    fn a_replica_reports_in_its_namespace_under_its_name_as_the_chart_would() {
        let config = Knobs::default().config("replica-a", "cp", "root");
        let fleet = config.fleet.expect("fleet reports");
        assert_eq!(
            (&*fleet.namespace, &*fleet.replica, &*fleet.prefix),
            ("cp", "replica-a", "remora-controller-proxies")
        );
        assert_eq!(fleet.min_interval, Duration::from_millis(250));
        assert_eq!(config.status_interval, Duration::from_secs(2));
        assert_eq!(config.settings.root_namespace, "root");
        assert_eq!(config.settings.addressing, Addressing::Captured);
        assert!(config.identity.is_none());
        let lease = config.lease.expect("a Lease");
        assert_eq!((&*lease.name, &*lease.identity), (LEASE, "replica-a"));
    }
}
