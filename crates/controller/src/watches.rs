//! One watch per kind of object the model reads. Each turns what the API server says into
//! model events: upserts and deletes, with a re-list (after a restart of the watch, a 410
//! Gone, an API server restart) turned into exactly the upserts and deletes that bring the
//! model to the listed state, so nothing is lost and nothing is counted twice.

use std::{
    collections::{HashMap, HashSet},
    fmt::Debug,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use futures::{Stream, StreamExt};
use kube::{
    Api, Client, Resource,
    runtime::{
        WatchStreamExt, reflector,
        watcher::{self, Event as WatchEvent, watcher},
    },
};
use remora_inputs::convert::Unusable;
use remora_model::input::{Event, Kind, Object, ObjectKey};
use serde::de::DeserializeOwned;
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{debug, warn};

/// What a watch has seen of its objects: for each source object, the model objects it
/// became (an `Endpoints` object becomes one per subset).
#[derive(Debug, Default)]
pub struct Tracker {
    produced: HashMap<ObjectKey, Vec<(Kind, ObjectKey)>>,
    /// Source objects seen since the current re-list began.
    relisting: Option<HashMap<ObjectKey, Vec<(Kind, ObjectKey)>>>,
}

impl Tracker {
    /// The model events for one watch event. `convert` turns a source object into model
    /// objects; an object it cannot use is logged and what it produced before is deleted.
    pub fn on_event<K>(
        &mut self,
        event: WatchEvent<K>,
        convert: &impl Fn(&K) -> Result<Vec<Object>, Unusable>,
    ) -> Vec<Event>
    where
        K: Resource + Debug,
    {
        match event {
            WatchEvent::Init => {
                self.relisting = Some(HashMap::new());
                Vec::new()
            }
            WatchEvent::InitApply(obj) => {
                let key = source_key(&obj);
                let (events, now) = self.replace(&key, convert(&obj));
                if let Some(relist) = &mut self.relisting {
                    relist.insert(key, now);
                }
                events
            }
            WatchEvent::Apply(obj) => {
                let key = source_key(&obj);
                let (events, now) = self.replace(&key, convert(&obj));
                self.produced.insert(key, now);
                events
            }
            WatchEvent::Delete(obj) => {
                let key = source_key(&obj);
                self.produced
                    .remove(&key)
                    .into_iter()
                    .flatten()
                    .map(|(kind, k)| Event::Delete(kind, k))
                    .collect()
            }
            WatchEvent::InitDone => {
                let Some(listed) = self.relisting.take() else {
                    return Vec::new();
                };
                // Whatever was there before the re-list and is not in it was deleted
                // while the watch was down.
                let gone = std::mem::replace(&mut self.produced, listed);
                gone.into_iter()
                    .filter(|(k, _)| !self.produced.contains_key(k))
                    .flat_map(|(_, objects)| objects)
                    .map(|(kind, k)| Event::Delete(kind, k))
                    .collect()
            }
        }
    }

    /// Upserts for what `converted` holds, deletes for what the same source produced before
    /// and no longer does; returns them with what the source now produces.
    fn replace(
        &self,
        source: &ObjectKey,
        converted: Result<Vec<Object>, Unusable>,
    ) -> (Vec<Event>, Vec<(Kind, ObjectKey)>) {
        let objects = converted.unwrap_or_else(|e| {
            warn!(problem = %e, "skipped an object the model cannot use");
            Vec::new()
        });
        let now: Vec<(Kind, ObjectKey)> = objects.iter().map(|o| (o.kind(), o.key())).collect();
        let keep: HashSet<&(Kind, ObjectKey)> = now.iter().collect();
        let before = self
            .relisting
            .as_ref()
            .and_then(|r| r.get(source))
            .or_else(|| self.produced.get(source));
        let mut events: Vec<Event> = before
            .into_iter()
            .flatten()
            .filter(|k| !keep.contains(k))
            .map(|(kind, k)| Event::Delete(*kind, k.clone()))
            .collect();
        events.extend(objects.into_iter().map(Event::Upsert));
        (events, now)
    }
}

fn source_key<K: Resource>(obj: &K) -> ObjectKey {
    ObjectKey::from_meta(obj.meta())
}

/// Runs one watch until its stream ends: model events go to `tx` (a re-list as one batch,
/// so the model never sees half a list), and `synced` is set once the first list is in.
pub async fn run<K, S>(
    what: KindName,
    stream: S,
    convert: impl Fn(&K) -> Result<Vec<Object>, Unusable>,
    tx: mpsc::Sender<Vec<Event>>,
    synced: Arc<AtomicBool>,
) where
    K: Resource + Debug,
    S: Stream<Item = Result<WatchEvent<K>, watcher::Error>>,
{
    let mut tracker = Tracker::default();
    let mut pending: Vec<Event> = Vec::new();
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(e) => e,
            Err(e) => {
                // The watcher backs off and re-lists by itself.
                warn!(%what, error = %e, "watch failed; retrying");
                continue;
            }
        };
        let done = matches!(event, WatchEvent::InitDone);
        let listing = tracker.relisting.is_some();
        pending.extend(tracker.on_event(event, &convert));
        if done {
            debug!(%what, "listed");
            synced.store(true, Ordering::Release);
        }
        // A finished list is sent even when empty: the model waits for every kind's.
        if (done || (!listing && !pending.is_empty()))
            && tx.send(std::mem::take(&mut pending)).await.is_err()
        {
            return;
        }
    }
}

/// The watches that feed the model, started one line per kind, and the readiness flags that
/// tell when each has listed.
pub struct Watches {
    client: Client,
    model: mpsc::Sender<Vec<Event>>,
    listed: Listed,
    tasks: Vec<JoinHandle<()>>,
}

/// What a watch turns each object into.
pub type Convert<K> = fn(&K) -> Result<Vec<Object>, Unusable>;

impl Watches {
    /// No watches yet; those started will send their batches to `model`.
    pub fn new(client: Client, model: mpsc::Sender<Vec<Event>>) -> Watches {
        Watches {
            client,
            model,
            listed: Vec::new(),
            tasks: Vec::new(),
        }
    }

    /// The client the watches use.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A watch of every `K` in the cluster, with the default backoff.
    pub fn stream<K: Watched>(&self) -> impl Stream<Item = WatchResult<K>> + Send + use<K> {
        watcher(
            Api::<K>::all(self.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
    }

    /// Feeds the model every `K`, converted.
    pub fn watch<K: Watched>(&mut self, convert: Convert<K>) {
        let stream = self.stream::<K>();
        self.watch_stream(kind::<K>(), stream, convert);
    }

    /// Feeds the model every `K`, converted, and keeps them in a store for other readers.
    pub fn watch_stored<K: Watched>(&mut self, convert: Convert<K>) -> reflector::Store<K>
    where
        K::DynamicType: Eq + std::hash::Hash + Clone,
    {
        let (store, writer) = reflector::store::<K>();
        let stream = reflector(writer, self.stream::<K>());
        self.watch_stream(kind::<K>(), stream, convert);
        store
    }

    /// Feeds the model what `stream` says, converted; `what` names the kind in logs and in
    /// readiness.
    pub fn watch_stream<K, S>(&mut self, what: impl Into<KindName>, stream: S, convert: Convert<K>)
    where
        K: Resource + Debug + Send + 'static,
        S: Stream<Item = WatchResult<K>> + Send + 'static,
    {
        let what = what.into();
        let listed = self.flag(what.clone());
        let model = self.model.clone();
        self.tasks
            .push(tokio::spawn(run(what, stream, convert, model, listed)));
    }

    /// A store of every `K` in the cluster for readers beside the model (rollouts read
    /// workloads). Until it listed a workload would look deleted, so it counts for readiness;
    /// once it listed an empty batch goes to the model, which publishes the first config once
    /// everything listed: in a quiet cluster no other batch may come to make it look.
    pub fn store<K: Watched>(&mut self) -> reflector::Store<K>
    where
        K::DynamicType: Eq + std::hash::Hash + Clone,
    {
        let (store, writer) = reflector::store::<K>();
        let stream = reflector(
            writer,
            self.stream::<K>()
                // Field ownership is the bulk of these objects and nothing here reads it.
                .modify(|o| o.meta_mut().managed_fields = None),
        );
        let (listed, model, ready) = (self.flag(kind::<K>()), self.model.clone(), store.clone());
        self.tasks.push(tokio::spawn(async move {
            let mark = async {
                if ready.wait_until_ready().await.is_ok() {
                    listed.store(true, Ordering::Release);
                    // Closed: the model is gone and the controller stopping.
                    let _closed = model.send(Vec::new()).await;
                }
            };
            let drain = stream.for_each(|e| {
                if let Err(e) = e {
                    warn!(kind = %kind::<K>(), error = %e, "workload watch failed; retrying");
                }
                std::future::ready(())
            });
            tokio::join!(mark, drain);
        }));
        store
    }

    /// Keeps a task that may start a watch later, so it stops with the others.
    pub fn spawn(&mut self, task: JoinHandle<()>) {
        self.tasks.push(task);
    }

    /// The readiness flags (by kind) and the tasks of every watch started.
    pub fn finish(self) -> (Listed, Vec<JoinHandle<()>>) {
        (self.listed, self.tasks)
    }

    fn flag(&mut self, what: KindName) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.listed.push((what, flag.clone()));
        flag
    }
}

/// What the watches can watch: a Kubernetes kind with a static type.
pub trait Watched:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static
{
}

impl<K> Watched for K where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static
{
}

type WatchResult<K> = Result<WatchEvent<K>, watcher::Error>;

/// A watched kind's name, as logs and readiness say it.
pub type KindName = std::borrow::Cow<'static, str>;

/// One flag per watch, named by the kind it watches, set once it has listed.
pub type Listed = Vec<(KindName, Arc<AtomicBool>)>;

fn kind<K: Watched>() -> KindName {
    K::kind(&())
}

/// An object watched without a static type, as the JSON it came as (which it always
/// encodes to), for the converters that read JSON.
pub fn json(o: &kube::api::DynamicObject) -> serde_json::Value {
    serde_json::to_value(o).unwrap_or_default()
}

/// One object as the one model object it becomes.
pub fn one(object: Object) -> Vec<Object> {
    vec![object]
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Namespace as KNamespace;
    use kube::api::ObjectMeta;
    use remora_inputs::convert;

    fn ns(name: &str, label: &str) -> KNamespace {
        KNamespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([("team".to_owned(), label.to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn conv(n: &KNamespace) -> Result<Vec<Object>, Unusable> {
        convert::namespace(n).map(|o| vec![o])
    }

    fn summary(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Upsert(o) => format!("+{}", o.key().name),
                Event::Delete(_, k) => format!("-{}", k.name),
            })
            .collect()
    }

    #[test]
    fn a_relist_deletes_what_vanished_while_the_watch_was_down() {
        let mut t = Tracker::default();
        let mut all = Vec::new();
        for e in [
            WatchEvent::Init,
            WatchEvent::InitApply(ns("a", "1")),
            WatchEvent::InitApply(ns("b", "1")),
            WatchEvent::InitDone,
        ] {
            all.extend(t.on_event(e, &conv));
        }
        assert_eq!(summary(&all), ["+a", "+b"]);
        assert!(t.on_event(WatchEvent::Delete(ns("a", "1")), &conv).len() == 1);
        t.on_event(WatchEvent::Apply(ns("a", "2")), &conv);
        // The watch expired (410 Gone); meanwhile `b` was deleted and `c` created.
        let mut relist = Vec::new();
        for e in [
            WatchEvent::Init,
            WatchEvent::InitApply(ns("a", "2")),
            WatchEvent::InitApply(ns("c", "1")),
            WatchEvent::InitDone,
        ] {
            relist.extend(t.on_event(e, &conv));
        }
        assert_eq!(summary(&relist), ["+a", "+c", "-b"]);
        // A second, identical re-list deletes nothing.
        let again: Vec<Event> = [
            WatchEvent::Init,
            WatchEvent::InitApply(ns("a", "2")),
            WatchEvent::InitApply(ns("c", "1")),
            WatchEvent::InitDone,
        ]
        .into_iter()
        .flat_map(|e| t.on_event(e, &conv))
        .collect();
        assert_eq!(summary(&again), ["+a", "+c"]);
    }

    #[test]
    fn an_unusable_update_withdraws_what_the_object_produced() {
        let mut t = Tracker::default();
        t.on_event(WatchEvent::Apply(ns("a", "1")), &conv);
        let fail = |_: &KNamespace| -> Result<Vec<Object>, Unusable> {
            Err(Unusable {
                kind: "Namespace",
                name: "/a".into(),
                reason: "broken".into(),
            })
        };
        let events = t.on_event(WatchEvent::Apply(ns("a", "2")), &fail);
        assert_eq!(summary(&events), ["-a"]);
        assert!(
            t.on_event(WatchEvent::Delete(ns("a", "2")), &conv)
                .is_empty()
        );
    }
}
