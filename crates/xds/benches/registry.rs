//! What recording a stream's status costs when every core records at once, as thousands
//! of streams do after a route change: each records twice per response, once sent and once
//! ACKed. Two threads, each with the entries of its own proxies, record in turn through
//! them while a reporter is subscribed to the registry's changes, as the controller's
//! loops are.
#![forbid(unsafe_code)]

use std::{
    sync::{Arc, Barrier},
    thread,
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use remora_model::input::ObjectKey;
use remora_xds::{
    SyncRegistry,
    snapshot::ROUTE,
    sync::{Mode, TypeSync},
};

/// Threads recording at once; the machines this is measured on have two cores.
const THREADS: usize = 2;
/// Proxies per thread, so that entries are not all in the cache, as at scale.
const PROXIES: usize = 1000;

/// Records `updates` statuses on each of [`THREADS`] threads at once; the time until all
/// are done.
fn record_at_once(registry: &Arc<SyncRegistry>, updates: u64) -> Duration {
    let start = Arc::new(Barrier::new(THREADS + 1));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let registry = registry.clone();
            let start = start.clone();
            thread::spawn(move || {
                let entries: Vec<_> = (0..PROXIES)
                    .map(|p| {
                        let proxy = ObjectKey::new("bench", format!("pod-{t}-{p}"));
                        registry.connected(&proxy, Mode::Incremental)
                    })
                    .collect();
                let versions = ["a".to_owned(), "b".to_owned()];
                start.wait();
                for i in 0..updates {
                    let entry = &entries[i as usize % PROXIES];
                    // A new version each time a proxy comes round, so every update changes it.
                    let version = &versions[(i as usize / PROXIES) % 2];
                    let status = TypeSync {
                        sent: Some(version.clone()),
                        ..TypeSync::default()
                    };
                    registry.update(entry, [(ROUTE, status)]);
                }
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    for t in threads {
        t.join().expect("a recording thread panicked");
    }
    began.elapsed()
}

fn registry(c: &mut Criterion) {
    let registry = SyncRegistry::new();
    // Subscribed and never reading, as a reporter between two passes.
    let _reporter = registry.changes();
    let mut group = c.benchmark_group("registry");
    group.measurement_time(Duration::from_secs(5));
    // Per update on each thread: the time all threads take for `iters` updates each.
    group.bench_function("update_on_two_threads", |b| {
        b.iter_custom(|iters| record_at_once(&registry, iters))
    });
    group.finish();
}

criterion_group!(benches, registry);
criterion_main!(benches);
