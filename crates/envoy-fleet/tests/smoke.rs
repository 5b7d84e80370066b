//! The benchmark's core with a small fleet: two real Envoys on a 20-Service mesh, one edit
//! in each xDS flavour, and every Envoy must route by it. Needs Envoy (scripts/install-tools);
//! without it the test fails rather than passing untested.

use std::time::Duration;

use tokio::sync::Mutex;

use remora_envoy_fleet::{
    envoy::EnvoyOptions,
    fleet::FleetOptions,
    latency::{self, LatencyOptions},
    memory::{self, MemoryOptions},
};

/// The fleet's backends and proxies listen on fixed loopback addresses: one fleet at a time.
static ONE_FLEET: Mutex<()> = Mutex::const_new(());

fn fleet(delta: bool) -> FleetOptions {
    FleetOptions {
        envoys: 2,
        services: 20,
        egress: false,
        workload_sidecars: false,
        envoy: EnvoyOptions {
            bin: remora_test_support::envoy_bin(),
            delta,
            concurrency: 1,
        },
        // Short, so the test stays short; the timings are not what it checks.
        poll: Duration::from_millis(50),
        startup_timeout: Duration::from_secs(20),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_envoy_routes_by_the_edited_route_in_sotw_and_in_delta() {
    let _one = ONE_FLEET.lock().await;
    for delta in [false, true] {
        let options = LatencyOptions {
            fleet: fleet(delta),
            changes: 2,
            probe_every: Duration::from_millis(10),
            change_timeout: Duration::from_secs(10),
        };
        let run = latency::run(&options).await.expect("the fleet runs");
        assert_eq!(run.changes.len(), 2);
        for change in &run.changes {
            assert!(
                change.missing.is_empty(),
                "delta {delta}: some Envoys never routed to {}: {:?}",
                change.to.backend(),
                change.missing
            );
            assert_eq!(change.routed.len(), 2, "delta {delta}");
            assert!(change.last_acked.is_some(), "delta {delta}: {change:?}");
            assert!(change.changed_bytes > 0, "delta {delta}: {change:?}");
        }
        assert_eq!(run.rss_kib.len(), 2, "both Envoys still run");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_egress_scope_leaves_each_envoy_fewer_clusters() {
    let _one = ONE_FLEET.lock().await;
    let mut clusters = Vec::new();
    for egress in [false, true] {
        let mut options = fleet(false);
        options.envoys = 1;
        // Three namespaces, one of them shared: the fleet's reaches two of them.
        options.services = 60;
        options.egress = egress;
        let run = memory::run(&MemoryOptions {
            fleet: options,
            settle: Duration::ZERO,
        })
        .await
        .expect("the fleet runs");
        let envoy = &run.envoys[0];
        assert!(envoy.rss_kib > 0 && envoy.allocated > 0, "{envoy:?}");
        clusters.push(envoy.clusters);
    }
    assert!(clusters[1] < clusters[0], "{clusters:?}");
}
