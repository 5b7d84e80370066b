//! Measures the model on the reference mesh, with and without egress scopes, and prints a
//! Markdown table: full compute time and peak memory, index memory per pod, the cost and
//! reach of one route change and of one endpoint change, and the size of one proxy's config.
//! `--addressing explicit` measures the listener layout of local mode; the default,
//! `captured`, is what a cluster runs.
//!
//! Criterion (`cargo bench -p remora-model --bench mesh`) gives the statistically careful
//! timings; this tool adds what a benchmark cannot: memory, how many proxies a change
//! touches (checked against an independent count), and config size. Run it in release mode:
//! `cargo run --release -p remora-synthetic --bin mesh-report`.
//!
//! Each measurement runs in a child process of its own (this program, called with
//! `--child <open|egress> <compute|memory> <captured|explicit>`), because the allocator keeps
//! freed memory: in one process, an earlier mesh would hide the RSS of a later one.
#![forbid(unsafe_code)]

use std::{
    collections::BTreeSet,
    env, fs,
    process::Command,
    time::{Duration, Instant},
};

use cap::Cap;
use remora_model::{
    Changes, Mesh,
    config::{Addressing, ProxyConfig, Resource, ResourceKey, ResourceType},
    input::{Event, Kind, MeshSettings, Object, ObjectKey},
};
use remora_synthetic::{Shape, Synthetic};

/// Counts live heap bytes (no limit is set).
#[global_allocator]
static ALLOCATOR: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

/// Repetitions of each single change; the median is reported.
const REPEATS: usize = 21;
/// Pods per batch when building the mesh for the memory measurement: small, so the report
/// of changed resources `apply` returns for a batch (several MiB per pod on the reference
/// mesh, freed at once but kept by the allocator) stays negligible next to the index.
const MEMORY_BATCH: usize = 10;
/// The order kinds are added to the index in, to attribute its memory: each batch's heap
/// growth, with the routing it resolves (routes resolve into their Services' routing).
const INDEX_STAGES: &[(&str, &[Kind])] = &[
    (
        "namespaces and policies",
        &[Kind::Namespace, Kind::SidecarPolicy],
    ),
    ("Services", &[Kind::Service]),
    ("TrafficRoutes", &[Kind::TrafficRoute]),
    ("EndpointSlices", &[Kind::EndpointSlice]),
    ("pods", &[Kind::Pod]),
];

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => parent(Addressing::Captured),
        ["--addressing", name] => parent(addressing(name)),
        ["--child", flavour, part, name] => {
            let shape = Shape {
                egress: flavour == "egress",
                ..Shape::reference()
            };
            let settings = MeshSettings {
                addressing: addressing(name),
                ..MeshSettings::default()
            };
            let rows = match part {
                "compute" => compute(shape, settings),
                "memory" => memory(shape, settings),
                _ => usage(),
            };
            for Row(label, value, target) in rows {
                println!("{label}\t{value}\t{target}");
            }
        }
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: mesh-report [--addressing captured|explicit] (the children it runs take \
         --child <open|egress> <compute|memory> <captured|explicit>)"
    );
    std::process::exit(2)
}

/// The addressing a command line names.
fn addressing(name: &str) -> Addressing {
    match name {
        "captured" => Addressing::Captured,
        "explicit" => Addressing::Explicit,
        _ => usage(),
    }
}

/// The command line's name of an addressing.
fn addressing_name(addressing: Addressing) -> &'static str {
    match addressing {
        Addressing::Captured => "captured",
        Addressing::Explicit => "explicit",
    }
}

/// One line of the table: what, the value, the target if there is one.
struct Row(String, String, &'static str);

fn row(label: impl Into<String>, value: impl Into<String>, target: &'static str) -> Row {
    Row(label.into(), value.into(), target)
}

/// Runs every measurement in its own process and prints the table.
fn parent(addressing: Addressing) {
    let reference = Shape::reference();
    let addressing = addressing_name(addressing);
    println!(
        "reference mesh: {} namespaces ({} shared), {} Services, {} sidecar pods, {} routes; \
         {addressing} addressing; {} cores (`nproc`), the model runs on one",
        reference.namespaces,
        reference.shared_namespaces,
        reference.services,
        reference.pods,
        reference.routes,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    let me = env::current_exe().expect("own executable");
    let run = |flavour: &str, part: &str| -> Vec<Vec<String>> {
        let out = Command::new(&me)
            .args(["--child", flavour, part, addressing])
            .output()
            .expect("child runs");
        assert!(
            out.status.success(),
            "child {flavour} {part} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect()
    };
    println!();
    println!("| measure | no egress scope | egress scope (own + shared namespaces) | target |");
    println!("|---|---|---|---|");
    for part in ["compute", "memory"] {
        let open = run("open", part);
        let scoped = run("egress", part);
        for (o, e) in open.iter().zip(&scoped) {
            assert_eq!(o[0], e[0], "both children print the same rows");
            println!("| {} | {} | {} | {} |", o[0], o[1], e[1], o[2]);
        }
    }
}

/// Full compute in one batch, then one route change and one endpoint change on the result,
/// then one proxy's config.
fn compute(shape: Shape, settings: MeshSettings) -> Vec<Row> {
    let (synthetic, mut mesh, mut rows) = full_compute(shape, settings);
    // A route on the HTTP port of a Service in a team namespace, halfway through the mesh.
    let j = synthetic.shape().services / 2;
    let (service, port) = synthetic.route_parent(j).expect("route exists");
    rows.extend(change_rows(&mut mesh, &synthetic, j, &service, port));
    rows.extend(proxy_rows(&mesh, &service.namespace));
    rows
}

/// Builds the mesh from every object in one batch, measuring time and memory from before
/// the objects exist.
fn full_compute(shape: Shape, settings: MeshSettings) -> (Synthetic, Mesh, Vec<Row>) {
    let pods = shape.pods;
    let peak_reset = reset_peak();
    let rss_before = status_kib("VmRSS:");
    let synthetic = Synthetic::new(shape);
    let events: Vec<Event> = synthetic.objects().into_iter().map(Event::Upsert).collect();
    let mut mesh = Mesh::new(settings);
    let start = Instant::now();
    let changes = mesh.apply(events);
    let full_compute = start.elapsed();
    let proxies = changes.proxies();
    assert_eq!(proxies.len(), pods, "every pod became a proxy");
    let reported: usize = proxies.iter().map(|p| changes.resources_of(p).len()).sum();
    drop(proxies);
    // The events were consumed by `apply`; the report of the initial build goes too.
    drop(changes);
    let rss_after = status_kib("VmRSS:").saturating_sub(rss_before);
    let peak = peak_reset.then(|| status_kib("VmHWM:").saturating_sub(rss_before));
    let rows = vec![
        row(
            "full compute: all objects in one batch, one core",
            format!("{:.3} s", full_compute.as_secs_f64()),
            "< 2 s",
        ),
        row(
            "full compute: resource changes reported (sum over proxies)",
            reported.to_string(),
            "",
        ),
        row(
            "full compute: peak RSS above the start",
            peak.map_or("n/a".into(), mib),
            "",
        ),
        row(
            "full compute: RSS after, inputs and report dropped",
            mib(rss_after),
            "",
        ),
    ];
    (synthetic, mesh, rows)
}

/// A change to route `j` (on `service`'s `port`) and one to the endpoints of Service `j`,
/// each checked to touch exactly the proxies that reach the Service.
fn change_rows(
    mesh: &mut Mesh,
    synthetic: &Synthetic,
    j: usize,
    service: &ObjectKey,
    port: u16,
) -> Vec<Row> {
    let route = measure_change(mesh, &synthetic.route_change(j), &synthetic.route(j));
    let reaching = proxies_with_vhost(mesh, service, port);
    assert_eq!(
        route.touched, reaching,
        "a route change touches exactly the proxies that reach its Service"
    );
    let endpoint = measure_change(
        mesh,
        &synthetic.endpoint_change(j),
        &synthetic.endpoint_slice(j),
    );
    assert_eq!(endpoint.touched, reaching, "so does an endpoint change");
    vec![
        row(
            format!("route change: median of {REPEATS}"),
            ms(route.median),
            "< 5 ms",
        ),
        row(
            "route change: proxies touched",
            route.proxies.to_string(),
            "",
        ),
        row(
            "route change: proxies whose config has the Service's vhost",
            reaching.len().to_string(),
            "= touched",
        ),
        row(
            "route change: resources changed (distinct / per proxy)",
            format!("{} / {}", route.resources, route.per_proxy),
            "",
        ),
        row(
            "route change: the changed resources of one touched proxy, compact JSON",
            json_size(route.one_proxy_json),
            "",
        ),
        row(
            format!("endpoint change (pod ready): median of {REPEATS}"),
            ms(endpoint.median),
            "< 5 ms",
        ),
        row(
            "endpoint change: proxies touched",
            endpoint.proxies.to_string(),
            "",
        ),
        row(
            "endpoint change: resources changed (distinct / per proxy)",
            format!("{} / {}", endpoint.resources, endpoint.per_proxy),
            "",
        ),
    ]
}

/// The config of the first proxy in `namespace`: its size, and the time to materialize it.
fn proxy_rows(mesh: &Mesh, namespace: &str) -> Vec<Row> {
    let proxy = mesh
        .proxies()
        .find(|p| p.namespace == namespace)
        .expect("the Service's namespace has proxies")
        .clone();
    let start = Instant::now();
    let config = mesh.proxy_config(&proxy).expect("proxy has a config");
    let materialize = start.elapsed();
    let by_type: Vec<usize> = ResourceType::ALL
        .iter()
        .map(|t| config.of_type(*t).count())
        .collect();
    let json = serde_json::to_vec(&config)
        .expect("config serializes")
        .len();
    vec![
        row("one proxy's config: proxy", proxy.to_string(), ""),
        row(
            "one proxy's config: resources (clusters, endpoints, listeners, route configs)",
            format!(
                "{} ({})",
                by_type.iter().sum::<usize>(),
                by_type
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "",
        ),
        row(
            "one proxy's config: compact JSON (serde) size",
            json_size(json),
            "",
        ),
        row(
            "one proxy's config: time to materialize (`proxy_config`)",
            ms(materialize),
            "",
        ),
    ]
}

/// Index memory: RSS growth from before the inputs exist to after the mesh is built and
/// every input and report is dropped. Pods are applied in small batches after the rest, so
/// the transient report of a batch cannot inflate the result (see [`MEMORY_BATCH`]).
fn memory(shape: Shape, settings: MeshSettings) -> Vec<Row> {
    let pods = shape.pods;
    let (index, stages) = index_memory(&shape, settings.clone());
    let rss_before = status_kib("VmRSS:");
    let heap_before = ALLOCATOR.allocated();
    let objects = Synthetic::new(shape).objects();
    // What the inputs take as the model's input types: what the index is given (it keeps
    // only what it reads, in a compacter form).
    let inputs = ALLOCATOR.allocated() - heap_before;
    let (pod_events, rest): (Vec<Event>, Vec<Event>) = objects
        .into_iter()
        .map(Event::Upsert)
        .partition(|e| matches!(e, Event::Upsert(o) if o.kind() == Kind::Pod));
    let mut mesh = Mesh::new(settings);
    mesh.apply(rest);
    let mut pod_events = pod_events.into_iter();
    loop {
        let batch: Vec<Event> = pod_events.by_ref().take(MEMORY_BATCH).collect();
        if batch.is_empty() {
            break;
        }
        mesh.apply(batch);
    }
    drop(pod_events);
    assert_eq!(mesh.proxies().count(), pods);
    let heap = ALLOCATOR.allocated() - heap_before;
    let growth = status_kib("VmRSS:").saturating_sub(rss_before);
    let per_pod = |bytes: usize| format!("{:.2} KiB", bytes as f64 / 1024.0 / pods.max(1) as f64);
    // The live heap of a part, in all and per pod.
    let live = |label: &str, per_pod_label: &str, bytes: usize, target: &'static str| {
        [
            row(label, mib((bytes / 1024) as u64), ""),
            row(per_pod_label, per_pod(bytes), target),
        ]
    };
    let mut rows = Vec::new();
    rows.extend(live(
        "inputs as the model's types (live heap)",
        "inputs per pod",
        inputs,
        "",
    ));
    rows.extend(live(
        "index: inputs, lookup maps, Services' routing, no proxies (live heap)",
        "index per pod",
        index,
        "< 2 KiB",
    ));
    for (label, input, stored) in stages {
        rows.push(row(
            format!("index: {label}, as inputs / as stored (per pod)"),
            format!("{} / {}", per_pod(input), per_pod(stored)),
            "",
        ));
    }
    rows.extend(live(
        "mesh: index and every class's and proxy's config (live heap)",
        "mesh per pod (live heap / pods)",
        heap,
        "",
    ));
    rows.extend([
        row(
            format!("mesh: RSS growth, pods applied {MEMORY_BATCH} at a time"),
            mib(growth),
            "",
        ),
        row(
            "mesh per pod (RSS growth / pods)",
            format!("{:.2} KiB", growth as f64 / pods.max(1) as f64),
            "",
        ),
    ]);
    rows
}

/// The live heap of the index alone, and per stage of [`INDEX_STAGES`] the bytes of its
/// objects as inputs and as the index stores them. The objects are the same, but no pod
/// carries a sidecar, so the mesh holds the inputs, their lookup maps and each Service's
/// routing, and no proxy or class config.
fn index_memory(
    shape: &Shape,
    settings: MeshSettings,
) -> (usize, Vec<(&'static str, usize, usize)>) {
    let mut stages = Vec::new();
    let heap_before = ALLOCATOR.allocated();
    let mut objects = Synthetic::new(shape.clone()).objects();
    for o in &mut objects {
        if let Object::Pod(pod) = o {
            pod.sidecar = false;
        }
    }
    let mut mesh = Mesh::new(settings);
    for (label, kinds) in INDEX_STAGES {
        let mut batch: Vec<Object>;
        (batch, objects) = objects.into_iter().partition(|o| kinds.contains(&o.kind()));
        batch.shrink_to_fit();
        // The batch's own size, from a copy of it.
        let as_input = {
            let before = ALLOCATOR.allocated();
            let copy = batch.clone();
            let bytes = ALLOCATOR.allocated() - before;
            drop(copy);
            bytes
        };
        // The batch is counted before; what `apply` keeps of it is counted after.
        let before = ALLOCATOR.allocated() - as_input;
        mesh.apply(batch.into_iter().map(Event::Upsert));
        stages.push((
            *label,
            as_input,
            ALLOCATOR.allocated().saturating_sub(before),
        ));
    }
    assert!(objects.is_empty(), "every kind belongs to a stage");
    drop(objects);
    assert_eq!(mesh.proxies().count(), 0);
    (ALLOCATOR.allocated() - heap_before, stages)
}

struct Measured {
    median: Duration,
    proxies: usize,
    /// Distinct resources changed over all proxies.
    resources: usize,
    /// The most resources changed in one proxy.
    per_proxy: usize,
    /// The proxies the change touched.
    touched: BTreeSet<ObjectKey>,
    /// The compact JSON of the resources the change touched in the first touched proxy's
    /// config, as the revert leaves them: what the change re-sends that proxy, in the
    /// model's terms (Envoy's encoding is smaller, and measured by `xds-load`).
    one_proxy_json: usize,
}

/// Applies `change`, then `revert`, `REPEATS` times each, timing `apply` of the change
/// alone. Every application must have the same effect as the first.
fn measure_change(mesh: &mut Mesh, change: &Object, revert: &Object) -> Measured {
    let mut times = Vec::with_capacity(REPEATS);
    let mut first: Option<Changes> = None;
    for _ in 0..REPEATS {
        let event = Event::Upsert(change.clone());
        let start = Instant::now();
        let changes = mesh.apply([event]);
        times.push(start.elapsed());
        match &first {
            None => first = Some(changes),
            Some(f) => assert_eq!(f, &changes, "the same change has the same effect"),
        }
        let back = mesh.apply([Event::Upsert(revert.clone())]);
        assert!(!back.is_empty(), "the revert changes the mesh back");
    }
    times.sort();
    let first = first.expect("at least one repetition");
    let touched = first.proxies();
    let resources: BTreeSet<_> = touched.iter().flat_map(|p| first.resources_of(p)).collect();
    let one_proxy_json = touched
        .first()
        .map_or(0, |p| changed_json(mesh, p, &first.resources_of(p)));
    Measured {
        one_proxy_json,
        median: times[times.len() / 2],
        proxies: touched.len(),
        resources: resources.len(),
        per_proxy: touched
            .iter()
            .map(|p| first.resources_of(p).len())
            .max()
            .unwrap_or(0),
        touched: touched.into_iter().cloned().collect(),
    }
}

/// The compact JSON of the resources `keys` names in `proxy`'s config.
fn changed_json(mesh: &Mesh, proxy: &ObjectKey, keys: &BTreeSet<&ResourceKey>) -> usize {
    let config = mesh
        .proxy_config(proxy)
        .expect("a touched proxy has a config");
    ResourceType::ALL
        .iter()
        .flat_map(|t| config.of_type(*t))
        .filter(|(k, _)| keys.contains(k))
        .map(|(_, r)| serde_json::to_vec(r).expect("resource serializes").len())
        .sum()
}

/// The proxies with a route config that has a virtual host for `service`'s `port` (the
/// port's route config, explicit; the Service port's own, captured), read from each
/// proxy's full config: independent of how the model tracks reach.
fn proxies_with_vhost(mesh: &Mesh, service: &ObjectKey, port: u16) -> BTreeSet<ObjectKey> {
    let domain = &mesh.settings().cluster_domain;
    let vhost = format!("{}.{}.svc.{domain}:{port}", service.name, service.namespace);
    let has_vhost = |config: &ProxyConfig| {
        config
            .of_type(ResourceType::RouteConfig)
            .any(|(_, r)| match r {
                Resource::RouteConfig(rc) => rc
                    .value
                    .virtual_hosts
                    .iter()
                    .any(|v| *v.value.name == *vhost),
                _ => false,
            })
    };
    mesh.proxies()
        .filter(|p| mesh.proxy_config(p).is_some_and(|c| has_vhost(&c)))
        .cloned()
        .collect()
}

/// A field of `/proc/self/status` in KiB (0 when unavailable, e.g. not on Linux).
fn status_kib(field: &str) -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Resets the peak RSS (`VmHWM`) to the current RSS, so the peak is the build's own.
fn reset_peak() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn json_size(bytes: usize) -> String {
    format!("{bytes} B ({:.1} KiB)", bytes as f64 / 1024.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}
