//! The pipeline every control plane runs: batches of events into the model, what changed
//! published as the proxies' snapshots. The controller, local mode and the xDS load benchmark
//! differ only in where their events come from and what they do after each step.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use remora_envoy::Options;
use remora_fleet::Fleet;
use remora_model::{
    Changes, Mesh,
    input::{Event, MeshSettings, Object, ObjectKey},
};
use remora_xds::{SnapshotCache, SyncRegistry};
use tokio::sync::mpsc;

use crate::{Debounce, Publisher, SharedMesh};

/// What the pipeline's readers share with it: the model, the snapshots the xDS server
/// serves, and what each proxy has ACKed or NACKed.
#[derive(Clone)]
pub struct PipelineState {
    /// The model.
    pub mesh: Arc<SharedMesh>,
    /// The snapshots the xDS server serves, one per proxy.
    pub cache: Arc<SnapshotCache>,
    /// What each connected proxy has ACKed or NACKed.
    pub status: Arc<SyncRegistry>,
    /// Every proxy of the fleet: `status`, and what other replicas report of theirs.
    pub fleet: Arc<Fleet>,
}

/// The model and its publisher. Until it is opened, batches are applied but nothing is
/// published: a proxy must not get a config computed from half the cluster.
pub struct Pipeline {
    state: PipelineState,
    publisher: Publisher,
    open: bool,
}

/// What one batch did.
pub struct Step {
    /// What the batch changed in the model.
    pub changes: Changes,
    /// Which proxies got a new snapshot.
    pub published: Published,
    /// Time spent applying the batch to the model.
    pub apply: Duration,
    /// Time spent publishing snapshots (zero while held).
    pub publish: Duration,
}

/// Which proxies a step published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    /// None: the pipeline is not open yet.
    Held,
    /// Every proxy the model knows, as the pipeline opened (this many).
    All(usize),
    /// The proxies the batch changed (this many).
    Changed(usize),
}

impl Published {
    /// How many proxies got a new snapshot.
    pub fn proxies(self) -> usize {
        match self {
            Published::Held => 0,
            Published::All(n) | Published::Changed(n) => n,
        }
    }
}

impl Pipeline {
    /// A closed pipeline over an empty model. `bind_outbound` picks the address a proxy's
    /// outbound listeners bind to (`None`: the wildcard).
    pub fn new(
        settings: MeshSettings,
        options: Options,
        bind_outbound: impl Fn(&ObjectKey) -> Option<IpAddr> + Send + Sync + 'static,
    ) -> Pipeline {
        let cache = SnapshotCache::new();
        let status = SyncRegistry::new();
        Pipeline {
            publisher: Publisher::new(cache.clone(), options, bind_outbound),
            state: PipelineState {
                mesh: Arc::new(SharedMesh::new(Mesh::new(settings))),
                cache,
                fleet: Arc::new(Fleet::new(status.clone(), "")),
                status,
            },
            open: false,
        }
    }

    /// Names this replica (its pod) in the fleet it serves a part of; other replicas'
    /// reports count until `expiry` after their last renewal.
    pub fn with_replica(mut self, replica: &str, expiry: Duration) -> Pipeline {
        let fleet = Fleet::new(self.state.status.clone(), replica).with_expiry(expiry);
        self.state.fleet = Arc::new(fleet);
        self
    }

    /// What the pipeline shares with its readers.
    pub fn state(&self) -> &PipelineState {
        &self.state
    }

    /// Whether batches are published yet (see [`Pipeline::open`]).
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Applies a batch to the model; once the pipeline is open, publishes what it changed.
    /// The routes' regexes are compiled first, outside the model's lock (which the
    /// injection webhook takes too), so validating them under it only looks them up.
    #[tracing::instrument(level = "debug", skip_all)]
    pub fn apply(&mut self, batch: impl IntoIterator<Item = Event>) -> Step {
        let batch: Vec<Event> = batch.into_iter().collect();
        for event in &batch {
            if let Event::Upsert(Object::TrafficRoute(route)) = event {
                route.spec.compile_regexes();
            }
        }
        let mut mesh = self.state.mesh.lock();
        let started = Instant::now();
        let changes = mesh.apply(batch);
        let apply = started.elapsed();
        let published = if self.open {
            self.publisher.publish(&mesh, &changes);
            Published::Changed(changes.proxies().len())
        } else {
            Published::Held
        };
        Step {
            changes,
            published,
            apply,
            publish: started.elapsed() - apply,
        }
    }

    /// Publishes every proxy the model knows and opens the pipeline: from now on each batch
    /// publishes what it changed.
    #[tracing::instrument(level = "debug", skip_all)]
    pub fn open(&mut self) -> Published {
        let mesh = self.state.mesh.lock();
        self.publisher.publish_all(&mesh);
        self.open = true;
        Published::All(mesh.proxies().count())
    }

    /// Runs until every sender of `events` is gone: each debounced batch is applied, the
    /// pipeline opens the first time `ready` says so, and `after` sees every step. Batches
    /// are applied and published on the runtime's thread for blocking work, not on one of
    /// its workers (see [`blocking`]).
    pub async fn run(
        self,
        mut events: mpsc::Receiver<Vec<Event>>,
        debounce: Debounce,
        mut ready: impl FnMut() -> bool,
        mut after: impl FnMut(&Step),
    ) {
        let mut pipeline = self;
        while let Some(batch) = debounce.next_batch(&mut events).await {
            let Some((applied, mut step)) = blocking(pipeline, |p| p.apply(batch)).await else {
                return;
            };
            pipeline = applied;
            if !pipeline.open && ready() {
                let started = Instant::now();
                let Some((opened, published)) = blocking(pipeline, Pipeline::open).await else {
                    return;
                };
                pipeline = opened;
                step.published = published;
                step.publish += started.elapsed();
            }
            after(&step);
        }
    }
}

/// Runs `work` on the pipeline on a thread for blocking work, in the caller's span. A batch
/// at ten thousand proxies takes tens of milliseconds, and opening the pipeline publishes
/// every proxy, which takes over half a second: on a worker, that would hold up every task
/// queued behind it (the injection webhook's answers, the health probes, the lease). `None`
/// when the runtime shuts down before the work starts.
async fn blocking<T: Send + 'static>(
    mut pipeline: Pipeline,
    work: impl FnOnce(&mut Pipeline) -> T + Send + 'static,
) -> Option<(Pipeline, T)> {
    let span = tracing::Span::current();
    let done = tokio::task::spawn_blocking(move || {
        let out = span.in_scope(|| work(&mut pipeline));
        (pipeline, out)
    });
    match done.await {
        Ok(done) => Some(done),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use remora_synthetic::{Shape, Synthetic};

    use super::*;

    fn objects() -> Vec<Object> {
        Synthetic::new(Shape {
            namespaces: 2,
            shared_namespaces: 1,
            services: 4,
            pods: 8,
            routes: 2,
            egress: false,
            seed: 7,
        })
        .objects()
    }

    #[test]
    fn a_closed_pipeline_applies_but_publishes_nothing_until_opened() {
        let mut pipeline = Pipeline::new(MeshSettings::default(), Options::default(), |_| None);
        let step = pipeline.apply(objects().into_iter().map(Event::Upsert));
        assert_eq!(step.published, Published::Held);
        assert!(!step.changes.is_empty());
        let cache = pipeline.state().cache.clone();
        let proxies: Vec<ObjectKey> = pipeline.state().mesh.lock().proxies().cloned().collect();
        assert_eq!(proxies.len(), 8);
        assert!(proxies.iter().all(|p| cache.get(p).is_none()));

        assert_eq!(pipeline.open(), Published::All(8));
        assert!(pipeline.is_open());
        assert!(proxies.iter().all(|p| cache.get(p).is_some()));
    }

    #[test]
    fn an_open_pipeline_publishes_what_a_batch_changed() {
        let mut pipeline = Pipeline::new(MeshSettings::default(), Options::default(), |_| None);
        let all = objects();
        pipeline.apply(all.iter().cloned().map(Event::Upsert));
        pipeline.open();
        let pod = all
            .iter()
            .find(|o| matches!(o, Object::Pod(_)))
            .expect("a pod");
        let step = pipeline.apply([Event::Delete(pod.kind(), pod.key())]);
        assert_eq!(
            step.published,
            Published::Changed(step.changes.proxies().len())
        );
        assert_eq!(step.changes.gone.len(), 1);
        let cache = &pipeline.state().cache;
        assert!(cache.get(&pod.key()).is_none());
    }

    /// The runtime here has one worker. The test's own thread holds the model's lock, so a
    /// batch applied on the worker would block it, and no other task could run until the
    /// lock is given back. The test's thread waits with blocking calls only: a runtime's
    /// timers run on its workers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_batch_is_applied_off_the_runtime_workers() {
        let pipeline = Pipeline::new(MeshSettings::default(), Options::default(), |_| None);
        let mesh = pipeline.state().mesh.clone();
        let (tx, rx) = mpsc::channel(4);
        let (stepped, steps) = std::sync::mpsc::channel();
        let debounce = Debounce {
            window: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        };
        let run = tokio::spawn(pipeline.run(
            rx,
            debounce,
            || true,
            move |step| {
                let _ = stepped.send(step.published);
            },
        ));
        let held = mesh.lock();
        tx.try_send(objects().into_iter().map(Event::Upsert).collect())
            .expect("room for the batch");
        // Time for the debounce and for the apply to start and wait for the lock. A probe
        // sent before that would pass whatever the pipeline does; none fails a right one.
        std::thread::sleep(Duration::from_millis(300));
        let (answered, answers) = std::sync::mpsc::channel();
        drop(tokio::spawn(async move {
            let _ = answered.send(());
        }));
        let probe = answers.recv_timeout(Duration::from_secs(5));
        drop(held);
        assert!(probe.is_ok(), "no task ran while the batch was applied");
        let published = steps
            .recv_timeout(Duration::from_secs(10))
            .expect("the batch applied once the model was free");
        assert_eq!(published, Published::All(8));
        drop(tx);
        run.await.expect("the pipeline ends with its events");
    }

    #[tokio::test(start_paused = true)]
    async fn run_opens_the_pipeline_the_first_time_it_is_ready() {
        let pipeline = Pipeline::new(MeshSettings::default(), Options::default(), |_| None);
        let cache = pipeline.state().cache.clone();
        let (tx, rx) = mpsc::channel(4);
        let debounce = Debounce {
            window: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        };
        let all = objects();
        let proxy = all
            .iter()
            .find(|o| matches!(o, Object::Pod(_)))
            .expect("a pod")
            .key();
        // Two batches a window apart: the first is held (not ready yet), the second opens.
        let sender = tokio::spawn(async move {
            tx.send(all.into_iter().map(Event::Upsert).collect())
                .await
                .expect("send");
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.send(Vec::new()).await.expect("send");
        });
        let mut asked = 0;
        let mut seen = Vec::new();
        pipeline
            .run(
                rx,
                debounce,
                || {
                    asked += 1;
                    asked > 1
                },
                |step| seen.push(step.published),
            )
            .await;
        sender.await.expect("sender");
        assert_eq!(seen, [Published::Held, Published::All(8)]);
        assert!(cache.get(&proxy).is_some());
    }
}
