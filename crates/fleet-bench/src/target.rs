//! Which route the run edits, decided by the control plane's own pipeline: an edit that
//! sends every proxy a new route config, so the route's status has the whole fleet to count.
//! Not every route edit does: a split between two references to the same Service is one
//! cluster to Envoy, and moving its weights changes the model but not a byte a proxy
//! receives. So the edit is judged on the published snapshots, as the replicas publish them.

use std::{collections::HashMap, sync::Arc};

use remora_envoy::Options;
use remora_model::{
    config::{Addressing, ResourceType},
    input::{Event, MeshSettings, ObjectKey},
};
use remora_runtime::Pipeline;
use remora_synthetic::Synthetic;
use remora_xds::{
    SnapshotCache,
    snapshot::{ROUTE, Snapshot},
};

/// Each proxy's published snapshot at one moment.
type Published = HashMap<ObjectKey, Arc<Snapshot>>;

/// How many routes are tried, from the first, when none is asked for.
const CANDIDATES: usize = 64;

/// The route a run edits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Its index in the synthetic mesh.
    pub index: usize,
    /// The route config its edit changes (captured addressing: one per Service port).
    pub route_config: String,
    /// How many proxies' config the edit changes.
    pub affected: usize,
}

/// Why no route fits.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The route asked for does not exist.
    #[error("--route {asked}: the mesh has routes 0 to {last}")]
    NoRoute {
        /// The index asked for.
        asked: usize,
        /// The last index there is.
        last: usize,
    },
    /// The route asked for changes fewer proxies than the fleet.
    #[error(
        "--route {index}: its edit changes the config of {affected} of the {proxies} proxies \
         (a route config change to every proxy is what the run measures); leave --route out \
         to pick one that does"
    )]
    Partial {
        /// The index asked for.
        index: usize,
        /// Proxies its edit reaches.
        affected: usize,
        /// Proxies in the mesh.
        proxies: usize,
    },
    /// None of the first routes reach every proxy.
    #[error("none of the first {CANDIDATES} routes changes a route config of every proxy")]
    NoneFits,
}

/// `asked`, or the first route whose edit sends every proxy a new version of one route
/// config; the pipeline (captured addressing, as a cluster runs) says so.
pub fn pick(synthetic: &Synthetic, asked: Option<usize>) -> Result<Target, TargetError> {
    let routes = synthetic.shape().routes;
    if let Some(asked) = asked.filter(|a| *a >= routes) {
        return Err(TargetError::NoRoute {
            asked,
            last: routes.saturating_sub(1),
        });
    }
    let settings = MeshSettings {
        addressing: Addressing::Captured,
        ..MeshSettings::default()
    };
    let mut pipeline = Pipeline::new(settings, Options::default(), |_| None);
    pipeline.apply(synthetic.objects().into_iter().map(Event::Upsert));
    pipeline.open();
    let proxies = pipeline.state().mesh.lock().proxies().count();
    let candidates = match asked {
        Some(i) => i..i + 1,
        None => 0..routes.min(CANDIDATES),
    };
    for index in candidates {
        let target = try_edit(&mut pipeline, synthetic, index);
        match (target, asked) {
            (Some(t), _) if t.affected == proxies => return Ok(t),
            (t, Some(index)) => {
                return Err(TargetError::Partial {
                    index,
                    affected: t.map_or(0, |t| t.affected),
                    proxies,
                });
            }
            (_, None) => {}
        }
    }
    Err(TargetError::NoneFits)
}

/// What editing route `index` sends the proxies, the mesh put back afterwards: the route
/// config whose published version changed, and for how many proxies. `None` when it sends
/// no proxy a new route config.
fn try_edit(pipeline: &mut Pipeline, synthetic: &Synthetic, index: usize) -> Option<Target> {
    let cache = pipeline.state().cache.clone();
    let before: Published = {
        let mesh = pipeline.state().mesh.lock();
        mesh.proxies()
            .filter_map(|p| Some((p.clone(), cache.get(p)?)))
            .collect()
    };
    let step = pipeline.apply([Event::Upsert(synthetic.route_change(index))]);
    let mut changed: HashMap<String, usize> = HashMap::new();
    for proxy in step.changes.proxies() {
        let configs = step
            .changes
            .resources_of(proxy)
            .into_iter()
            .filter(|k| k.kind == ResourceType::RouteConfig);
        for key in configs {
            if sent_anew(&cache, &before, proxy, &key.name) {
                *changed.entry(key.name.to_string()).or_default() += 1;
            }
        }
    }
    pipeline.apply([Event::Upsert(synthetic.route(index))]);
    let (route_config, affected) = changed.into_iter().max_by_key(|(_, n)| *n)?;
    Some(Target {
        index,
        route_config,
        affected,
    })
}

/// Whether `proxy`'s published route config `name` differs from what it had `before`.
fn sent_anew(cache: &SnapshotCache, before: &Published, proxy: &ObjectKey, name: &str) -> bool {
    let version = |s: &Snapshot| s.get(ROUTE, name).map(|r| r.version.clone());
    let now = cache.get(proxy);
    let was = before.get(proxy);
    now.as_deref().and_then(version) != was.map(|s| &**s).and_then(version)
}

#[cfg(test)]
mod tests {
    use remora_xds_load::shape_for;

    use super::*;

    #[test]
    fn a_split_between_two_references_to_one_service_is_passed_over() {
        // The only namespace is the one every route's "shared" backend is taken from, so a
        // cross-namespace route splits between its own Service and itself; route 0 is one.
        let synthetic = Synthetic::new(shape_for(20, true));
        assert!(matches!(
            pick(&synthetic, Some(0)),
            Err(TargetError::Partial {
                affected: 0,
                proxies: 20,
                ..
            })
        ));
        let target = pick(&synthetic, None).expect("another route");
        assert_ne!(target.index, 0);
        assert_eq!(target.affected, 20);
    }

    #[test]
    fn the_picked_route_changes_one_route_config_of_every_proxy() {
        let synthetic = Synthetic::new(shape_for(1_000, true));
        let target = pick(&synthetic, None).expect("a route");
        assert_eq!(target.affected, 1_000);
        let (service, port) = synthetic.route_parent(target.index).expect("its parent");
        assert_eq!(
            target.route_config,
            format!(
                "{}.{}.svc.cluster.local:{port}",
                service.name, service.namespace
            )
        );
        assert_eq!(pick(&synthetic, Some(target.index)), Ok(target));
    }

    #[test]
    fn a_route_asked_for_must_exist_and_reach_every_proxy() {
        let synthetic = Synthetic::new(shape_for(1_000, true));
        let routes = synthetic.shape().routes;
        assert!(matches!(
            pick(&synthetic, Some(routes)),
            Err(TargetError::NoRoute { asked, .. }) if asked == routes
        ));
        // The last route governs a team namespace's Service: with egress scopes only that
        // namespace reaches it.
        assert!(matches!(
            pick(&synthetic, Some(routes - 1)),
            Err(TargetError::Partial { proxies: 1_000, affected, .. }) if affected < 1_000
        ));
    }
}
