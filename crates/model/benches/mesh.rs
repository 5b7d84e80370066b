//! The model's cost on the reference synthetic mesh (1,000 Services, 10,000 sidecar pods,
//! 2,000 routes): a full compute from scratch, as after a restart, and the two changes a
//! running control plane sees most, a route edit and a pod becoming ready. The same three
//! run on the reference mesh with egress scopes (`reference_egress/...`), which bound what
//! each proxy receives.
//!
//! Samples are few and short so a run takes minutes on a 2-core machine; the changes
//! alternate between two states so every iteration really changes the mesh. Inputs and
//! meshes are built lazily, inside the benchmark that needs them, so a filter such as
//! `cargo bench -p remora-model --bench mesh -- change` skips the builds it does not need.
#![forbid(unsafe_code)]

use std::{hint::black_box, time::Duration};

use criterion::{BatchSize, Criterion, SamplingMode, criterion_group, criterion_main};
use remora_model::{
    Mesh,
    input::{Event, MeshSettings, Object},
};
use remora_synthetic::{Shape, Synthetic};

fn built(synthetic: &Synthetic) -> Mesh {
    let mut mesh = Mesh::new(MeshSettings::default());
    mesh.apply(synthetic.objects().into_iter().map(Event::Upsert));
    mesh
}

/// Events that alternate between `a` and `b`, one per call, starting with `a`.
fn alternate(a: Object, b: Object) -> impl FnMut() -> [Event; 1] {
    let mut flip = false;
    move || {
        flip = !flip;
        [Event::Upsert(if flip { a.clone() } else { b.clone() })]
    }
}

fn bench_shape(c: &mut Criterion, name: &str, shape: Shape) {
    let synthetic = Synthetic::new(shape);

    let mut group = c.benchmark_group(name);
    // Seconds per iteration: one iteration per sample, not criterion's growing batches.
    group
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(30));
    // Criterion calls each closure once per sample: what must last is built once, lazily.
    let mut objects: Option<Vec<Object>> = None;
    group.bench_function("full_compute", |b| {
        let objects = objects.get_or_insert_with(|| synthetic.objects());
        b.iter_batched(
            || {
                objects
                    .iter()
                    .cloned()
                    .map(Event::Upsert)
                    .collect::<Vec<_>>()
            },
            |events| {
                let mut mesh = Mesh::new(MeshSettings::default());
                let changes = mesh.apply(events);
                // Returned, so dropping the mesh is not timed.
                (mesh, changes)
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();

    // A Service in a team namespace halfway through the mesh, and the route on its HTTP port.
    let j = synthetic.shape().services / 2;
    let mut mesh: Option<Mesh> = None;
    // The alternation carries over from sample to sample, so none starts with a no-op.
    let mut route = alternate(synthetic.route_change(j), synthetic.route(j));
    let mut endpoint = alternate(synthetic.endpoint_change(j), synthetic.endpoint_slice(j));
    let mut group = c.benchmark_group(name);
    group.bench_function("route_change", |b| {
        let mesh = mesh.get_or_insert_with(|| built(&synthetic));
        b.iter_batched(
            &mut route,
            |events| mesh.apply(black_box(events)),
            BatchSize::SmallInput,
        );
    });
    group.bench_function("endpoint_change", |b| {
        let mesh = mesh.get_or_insert_with(|| built(&synthetic));
        b.iter_batched(
            &mut endpoint,
            |events| mesh.apply(black_box(events)),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn reference(c: &mut Criterion) {
    bench_shape(c, "reference", Shape::reference());
}

fn reference_egress(c: &mut Criterion) {
    let shape = Shape {
        egress: true,
        ..Shape::reference()
    };
    bench_shape(c, "reference_egress", shape);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = reference, reference_egress
}
criterion_main!(benches);
