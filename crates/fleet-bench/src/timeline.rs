//! What the watched events say, worked out after the fact: when a route's status counted
//! every ACK, and when each replica's report showed its proxies' ACKs. Pure.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Instant,
};

use remora_model::input::ObjectKey;

/// One state of the route as a watch delivered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSeen {
    /// When the driver received it.
    pub at: Instant,
    /// Its `metadata.generation`.
    pub generation: Option<i64>,
    /// Its `status.observedGeneration`.
    pub observed: Option<i64>,
    /// `status.proxies`: affected, ACKed and NACKed.
    pub affected: i32,
    /// Of those, the proxies that ACKed.
    pub acked: i32,
    /// Of those, the proxies that NACKed.
    pub nacked: i32,
    /// The `Programmed` condition's status (`True`, `False`, `Unknown`), if any.
    pub programmed: Option<String>,
}

impl RouteSeen {
    /// Whether it counts `proxies` ACKs (and no NACK) of generation `generation`, and says
    /// `Programmed=True`. When it counts more affected proxies than the run's (pods of
    /// someone else's the route reaches too, which no simulated proxy answers for), the
    /// condition cannot turn True, and the ACKs alone decide.
    pub fn counts_all(&self, generation: i64, proxies: usize) -> bool {
        let count = |n: i32| usize::try_from(n).unwrap_or(0);
        let strangers = count(self.affected) > proxies;
        self.observed == Some(generation)
            && count(self.acked) >= proxies
            && self.nacked == 0
            && (strangers || self.programmed.as_deref() == Some("True"))
    }
}

/// Each proxy a report object lists, and the route-config version it ACKed.
pub type Acks = Vec<(ObjectKey, Option<String>)>;

/// One report object as a watch delivered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportEvent {
    /// When the driver received it.
    pub at: Instant,
    /// The object's name.
    pub object: String,
    /// The replica that writes it.
    pub replica: String,
    /// The length of its body.
    pub bytes: usize,
    /// Each proxy it lists and the route-config version that proxy ACKed; `None` when the
    /// object was deleted.
    pub rds: Option<Arc<Acks>>,
}

/// The objects present after each event, replayed in order.
struct Replay<'a> {
    objects: BTreeMap<&'a str, &'a ReportEvent>,
}

impl<'a> Replay<'a> {
    fn new() -> Replay<'a> {
        Replay {
            objects: BTreeMap::new(),
        }
    }

    fn apply(&mut self, event: &'a ReportEvent) {
        if event.rds.is_some() {
            self.objects.insert(&event.object, event);
        } else {
            self.objects.remove(&*event.object);
        }
    }

    fn of(&self, replica: &'a str) -> impl Iterator<Item = &'a ReportEvent> + '_ {
        self.objects
            .values()
            .copied()
            .filter(move |e| e.replica == replica)
    }
}

/// The route-config version each proxy had ACKed by the reports received up to `until`.
pub fn acked_by_reports(
    events: &[ReportEvent],
    until: Instant,
) -> HashMap<ObjectKey, Option<String>> {
    let mut replay = Replay::new();
    for e in events.iter().take_while(|e| e.at <= until) {
        replay.apply(e);
    }
    replay
        .objects
        .values()
        .flat_map(|e| e.rds.iter().flat_map(|r| r.iter().cloned()))
        .collect()
}

/// The first moment after `since` when the reports of `replica` showed `count` proxies
/// that ACKed another route-config version than in `before`.
pub fn reports_caught_up(
    events: &[ReportEvent],
    replica: &str,
    before: &HashMap<ObjectKey, Option<String>>,
    since: Instant,
    count: usize,
) -> Option<Instant> {
    let mut replay = Replay::new();
    for e in events {
        replay.apply(e);
        if e.at <= since || e.replica != replica {
            continue;
        }
        let changed = replay
            .of(replica)
            .flat_map(|o| o.rds.iter().flat_map(|r| r.iter()))
            .filter(|(proxy, acked)| before.get(proxy) != Some(acked))
            .count();
        if changed >= count {
            return Some(e.at);
        }
    }
    None
}

/// When `replica` wrote (or deleted) a report object, as watches delivered it, within
/// `from..=to`.
pub fn writes_between(
    events: &[ReportEvent],
    replica: &str,
    from: Instant,
    to: Instant,
) -> Vec<Instant> {
    events
        .iter()
        .filter(|e| e.replica == replica && e.at >= from && e.at <= to)
        .map(|e| e.at)
        .collect()
}

/// The body sizes of each replica's report objects present at `until`.
pub fn objects_at(events: &[ReportEvent], until: Instant) -> BTreeMap<String, Vec<usize>> {
    let mut replay = Replay::new();
    for e in events.iter().take_while(|e| e.at <= until) {
        replay.apply(e);
    }
    let mut by_replica: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for e in replay.objects.values() {
        by_replica
            .entry(e.replica.clone())
            .or_default()
            .push(e.bytes);
    }
    by_replica
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key(n: usize) -> ObjectKey {
        ObjectKey::new("ns", format!("p{n}"))
    }

    fn event(at: Instant, object: &str, rds: Option<&[(usize, &str)]>) -> ReportEvent {
        let replica = object.split('-').next().unwrap_or_default().to_owned();
        let rds = rds.map(|r| {
            Arc::new(
                r.iter()
                    .map(|(n, v)| (key(*n), Some((*v).to_owned())))
                    .collect::<Vec<_>>(),
            )
        });
        ReportEvent {
            at,
            object: object.into(),
            replica,
            bytes: 10 * rds.as_ref().map_or(0, |r| r.len()),
            rds,
        }
    }

    #[test]
    fn a_replica_caught_up_when_all_its_shards_show_the_new_acks() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let events = [
            event(at(0), "a-0", Some(&[(1, "old"), (2, "old")])),
            event(at(0), "a-1", Some(&[(3, "old")])),
            event(at(0), "b-0", Some(&[(4, "old")])),
            // The edit at 10 ms; shard 0 shows both its proxies' ACKs first.
            event(at(20), "a-0", Some(&[(1, "new"), (2, "new")])),
            event(at(25), "b-0", Some(&[(4, "new")])),
            event(at(40), "a-1", Some(&[(3, "new")])),
        ];
        let before = acked_by_reports(&events, at(10));
        assert_eq!(before.get(&key(3)), Some(&Some("old".to_owned())));
        assert_eq!(before.len(), 4);
        assert_eq!(
            reports_caught_up(&events, "a", &before, at(10), 3),
            Some(at(40))
        );
        assert_eq!(
            reports_caught_up(&events, "a", &before, at(10), 2),
            Some(at(20))
        );
        assert_eq!(
            reports_caught_up(&events, "b", &before, at(10), 1),
            Some(at(25))
        );
        assert_eq!(reports_caught_up(&events, "b", &before, at(10), 2), None);
        assert_eq!(
            writes_between(&events, "a", at(10), at(40)),
            [at(20), at(40)]
        );
    }

    #[test]
    fn a_deleted_object_takes_its_proxies_with_it() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let events = [
            event(at(0), "a-0", Some(&[(1, "v")])),
            event(at(1), "a-1", Some(&[(2, "v"), (3, "v")])),
            event(at(2), "a-1", None),
        ];
        assert_eq!(acked_by_reports(&events, at(1)).len(), 3);
        assert_eq!(acked_by_reports(&events, at(2)).len(), 1);
        let sizes = objects_at(&events, at(1));
        assert_eq!(sizes.get("a").map(Vec::len), Some(2));
        assert_eq!(objects_at(&events, at(2))["a"], [10]);
    }

    #[test]
    fn a_status_counts_all_only_for_its_generation_with_no_nack_and_programmed() {
        let seen = RouteSeen {
            at: Instant::now(),
            generation: Some(3),
            observed: Some(3),
            affected: 10,
            acked: 10,
            nacked: 0,
            programmed: Some("True".into()),
        };
        assert!(seen.counts_all(3, 10));
        assert!(!seen.counts_all(3, 11));
        assert!(!seen.counts_all(4, 10));
        let nacked = RouteSeen {
            nacked: 1,
            ..seen.clone()
        };
        assert!(!nacked.counts_all(3, 10));
        let pending = RouteSeen {
            programmed: Some("Unknown".into()),
            ..seen
        };
        assert!(!pending.counts_all(3, 10));
        // Two affected pods no proxy of the run answers for: the run's ten ACKs decide.
        let strangers = RouteSeen {
            affected: 12,
            ..pending
        };
        assert!(strangers.counts_all(3, 10));
    }
}
