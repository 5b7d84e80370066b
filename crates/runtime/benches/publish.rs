//! What the publisher costs per route change on the unscoped reference mesh (10,000
//! sidecar pods, captured addressing): the change reaches every proxy, so each gets a new
//! snapshot. The model's own part (`mesh.apply`) is timed by `remora-model`'s benchmark;
//! here it is timed with the publish, as the pipeline runs them, and is about 5 % of it.
//!
//! The change alternates between a route's two states, so every iteration changes every
//! proxy. No stream follows the cache, so no stream is woken: this is the publisher's own
//! CPU, which on a running server competes with the streams' for the same cores.
#![forbid(unsafe_code)]

use std::{hint::black_box, time::Duration};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use remora_envoy::Options;
use remora_model::{
    Mesh,
    config::Addressing,
    input::{Event, MeshSettings},
};
use remora_runtime::Publisher;
use remora_synthetic::{Shape, Synthetic};
use remora_xds::SnapshotCache;

fn publish_route_change(c: &mut Criterion) {
    let synthetic = Synthetic::new(Shape::reference());
    let mut mesh = Mesh::new(MeshSettings {
        addressing: Addressing::Captured,
        ..MeshSettings::default()
    });
    drop(mesh.apply(synthetic.objects().into_iter().map(Event::Upsert)));
    let cache = SnapshotCache::new();
    let mut publisher = Publisher::new(cache.clone(), Options::default(), |_| None);
    publisher.publish_all(&mesh);
    let route = synthetic.shape().services / 2;
    let states = [synthetic.route_change(route), synthetic.route(route)];
    // Checked once, outside the timing: the change reaches every proxy.
    let changes = mesh.apply([Event::Upsert(states[0].clone())]);
    assert_eq!(changes.proxies().len(), synthetic.shape().pods);
    publisher.publish(&mesh, &changes);

    let mut group = c.benchmark_group("reference_unscoped");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .measurement_time(Duration::from_secs(20));
    let mut turn = 0;
    group.bench_function("route_change_publish", |b| {
        b.iter(|| {
            turn += 1;
            let changes = mesh.apply([Event::Upsert(states[turn % 2].clone())]);
            publisher.publish(&mesh, black_box(&changes));
        })
    });
    group.finish();
}

criterion_group!(benches, publish_route_change);
criterion_main!(benches);
