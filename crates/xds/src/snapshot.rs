//! What one proxy should hold: every resource by type and name, each with its own version.
//!
//! Proxies of one class hold the same outbound resources, so each type's set is kept in two
//! layers: a map shared (`Arc`) by every proxy of the class, and a small map of the proxy's
//! own. A type's set version is computed once, when its snapshot is built, from a digest of
//! the shared layer computed once for the whole class and the proxy's own entries: building
//! a proxy's snapshot costs what its own layer holds, not the class's thousands of resources.

use std::{
    cmp::Ordering,
    collections::{BTreeMap, BTreeSet},
    hash::Hasher,
    iter::Peekable,
    sync::{
        Arc, LazyLock,
        atomic::{AtomicU64, Ordering as AtomicOrdering},
    },
};

use prost::Message as _;
use remora_envoy::EnvoyResource;

use crate::by_type::ByType;

// Envoy's type URLs, defined where Envoy's resources are; here under their old path too.
pub use remora_envoy::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

/// The order updates go out in: a cluster before the endpoints that fill it, a listener
/// before the routes it names, so nothing refers to what the proxy does not have yet.
pub const PUSH_ORDER: [&str; 4] = [CLUSTER, ENDPOINT, LISTENER, ROUTE];

/// The served type a request's `type_url` names, if we serve it.
pub fn served_type(type_url: &str) -> Option<&'static str> {
    PUSH_ORDER.into_iter().find(|t| *t == type_url)
}

/// Listeners and clusters are requested as a whole (wildcard); routes and endpoints by name.
pub fn is_wildcard_type(type_url: &str) -> bool {
    type_url == CLUSTER || type_url == LISTENER
}

/// Resources of one type by name.
pub type ResourceMap = BTreeMap<String, Arc<EnvoyResource>>;

static EMPTY_MAP: LazyLock<Arc<ResourceMap>> = LazyLock::new(Arc::default);
static EMPTY_LAYER: LazyLock<Arc<Layer>> = LazyLock::new(Arc::default);
static EMPTY: LazyLock<Resources> =
    LazyLock::new(|| Resources::new(Layer::empty(), ResourceMap::new()));

/// A sum of one hash per resource (of its name and version). A sum, not a hash of the
/// resources in order, so that the digest of a set follows from a layer's digest by adding
/// and taking away single resources, and still depends on nothing but the set's content.
/// Beside it, the same kind of sum over names alone (equal when two sets name the same
/// resources) and the bytes the resources take in a response.
#[derive(Clone, Copy, Debug, Default)]
struct Digest {
    len: usize,
    sum: u128,
    names: u128,
    bytes: usize,
}

impl Digest {
    fn add(&mut self, name: &str, r: &EnvoyResource) {
        self.len += 1;
        self.sum = self.sum.wrapping_add(entry_hash(name, &r.version));
        self.names = self.names.wrapping_add(name_hash(name.as_bytes()));
        self.bytes += response_bytes(name, r);
    }

    fn take(&mut self, name: &str, r: &EnvoyResource) {
        self.len -= 1;
        self.sum = self.sum.wrapping_sub(entry_hash(name, &r.version));
        self.names = self.names.wrapping_sub(name_hash(name.as_bytes()));
        self.bytes -= response_bytes(name, r);
    }

    fn version(&self) -> String {
        version_of(self.len, self.sum)
    }

    /// This digest plus what `set` holds over `base`: the own layer's part of a set's
    /// digest, which is the set's minus its shared layer's.
    fn plus_difference(&self, set: &Digest, base: &Digest) -> Digest {
        Digest {
            len: self.len.wrapping_add(set.len.wrapping_sub(base.len)),
            sum: self.sum.wrapping_add(set.sum.wrapping_sub(base.sum)),
            names: self.names.wrapping_add(set.names.wrapping_sub(base.names)),
            bytes: self.bytes.wrapping_add(set.bytes.wrapping_sub(base.bytes)),
        }
    }
}

fn version_of(len: usize, sum: u128) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    h.write(&sum.to_le_bytes());
    h.write_u64(len as u64);
    format!("{:016x}", h.finish())
}

/// 128 bits, so that sums of thousands of them stay as unlikely to collide as one 64-bit
/// hash of the whole set was.
fn entry_hash(name: &str, version: &str) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    h.update(name.as_bytes());
    h.update(&[0]);
    h.update(version.as_bytes());
    h.update(&[0]);
    h.digest128()
}

fn name_hash(name: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(name)
}

/// The sum of one hash per name, as a set's digest keeps it: equal for the same distinct
/// names in any order, so two lists of names compare without sorting either. A name is
/// hashed as its bytes, so names read as bytes sum as their strings do.
pub fn names_sum<N: AsRef<[u8]>>(names: impl IntoIterator<Item = N>) -> u128 {
    names.into_iter().fold(0, |sum: u128, name| {
        sum.wrapping_add(name_hash(name.as_ref()))
    })
}

/// About the most bytes one resource takes in a response of either protocol flavour, with
/// its name and version.
fn response_bytes(name: &str, r: &EnvoyResource) -> usize {
    const PER_RESOURCE: usize = 16;
    name.len() + r.version.len() + r.any.encoded_len() + PER_RESOURCE
}

/// Tells layers apart for [`Lineage`]; never reused within a process.
static LAYER_IDS: AtomicU64 = AtomicU64::new(1);

/// What set a layer apart from the one it replaced: the names added, changed or removed
/// since then. A proxy holding the older layer is brought up to date by looking at these
/// alone instead of at every resource.
#[derive(Debug)]
struct Lineage {
    parent: u64,
    changed: Vec<String>,
}

/// A map of resources shared by many sets, with its digest computed once.
#[derive(Debug)]
pub struct Layer {
    map: ResourceMap,
    digest: Digest,
    id: u64,
    lineage: Option<Lineage>,
}

impl Default for Layer {
    fn default() -> Self {
        Layer::new(ResourceMap::new())
    }
}

impl Layer {
    /// A layer of `map`, replacing no other.
    pub fn new(map: ResourceMap) -> Layer {
        let mut digest = Digest::default();
        for (name, r) in &map {
            digest.add(name, r);
        }
        Layer {
            map,
            digest,
            id: LAYER_IDS.fetch_add(1, AtomicOrdering::Relaxed),
            lineage: None,
        }
    }

    /// The layer that replaces `older` with `map`'s content: `older` itself when the
    /// content is the same, else a new layer that remembers what changed since `older`.
    pub fn next(older: &Arc<Layer>, map: ResourceMap) -> Arc<Layer> {
        let changed: Vec<String> = Changes::walk(&older.map, &map)
            .map(|(name, _, _)| name.clone())
            .collect();
        if changed.is_empty() {
            return older.clone();
        }
        let mut layer = Layer::new(map);
        layer.lineage = Some(Lineage {
            parent: older.id,
            changed,
        });
        Arc::new(layer)
    }

    /// The layer that replaces `older` with `patch` applied: each name set to its new entry
    /// (`None`: removed). Takes time in the patch's size and one copy of `older`'s map, not
    /// a walk comparing every resource; `older` itself when nothing differs.
    pub fn patched(
        older: &Arc<Layer>,
        patch: impl IntoIterator<Item = (String, Option<Arc<EnvoyResource>>)>,
    ) -> Arc<Layer> {
        let mut map: Option<ResourceMap> = None;
        let mut digest = older.digest;
        let mut changed = Vec::new();
        for (name, new) in patch {
            let current = map.as_ref().unwrap_or(&older.map).get(&name);
            let unchanged = match (&new, current) {
                (Some(new), Some(old)) => same_resource(old, new),
                (None, None) => true,
                _ => false,
            };
            if unchanged {
                continue;
            }
            // Copied once something differs: a patch that changes nothing costs no copy.
            let map = map.get_or_insert_with(|| older.map.clone());
            let old = match &new {
                Some(new) => {
                    digest.add(&name, new);
                    map.insert(name.clone(), new.clone())
                }
                None => map.remove(&name),
            };
            if let Some(old) = &old {
                digest.take(&name, old);
            }
            changed.push(name);
        }
        let Some(map) = map else {
            return older.clone();
        };
        changed.sort_unstable();
        changed.dedup();
        Arc::new(Layer {
            map,
            digest,
            id: LAYER_IDS.fetch_add(1, AtomicOrdering::Relaxed),
            lineage: Some(Lineage {
                parent: older.id,
                changed,
            }),
        })
    }

    /// The empty layer, one shared by all.
    pub fn empty() -> Arc<Layer> {
        EMPTY_LAYER.clone()
    }

    /// The layer's resources by name.
    pub fn map(&self) -> &ResourceMap {
        &self.map
    }

    /// What tells layers' contents apart: equal for layers that hold the same resources at
    /// the same versions, as equal set versions mean equal sets.
    pub fn content(&self) -> (usize, u128) {
        (self.digest.len, self.digest.sum)
    }

    /// The names that may differ between `older` and this layer, when this layer knows
    /// (it replaced `older`, or is `older`).
    fn changed_since(&self, older: &Layer) -> Option<&[String]> {
        if self.id == older.id {
            return Some(&[]);
        }
        self.lineage
            .as_ref()
            .filter(|l| l.parent == older.id)
            .map(|l| l.changed.as_slice())
    }
}

/// The names two maps disagree on (added, changed or removed), in name order, found by
/// walking both at once: with each name, its entry in the newer map and in the older.
struct Changes<'a, O: Iterator<Item = Entry<'a>>, N: Iterator<Item = Entry<'a>>> {
    older: Peekable<O>,
    newer: Peekable<N>,
}

type Entry<'a> = (&'a String, &'a Arc<EnvoyResource>);
type Change<'a> = (
    &'a String,
    Option<&'a Arc<EnvoyResource>>,
    Option<&'a Arc<EnvoyResource>>,
);

impl<'a, O: Iterator<Item = Entry<'a>>, N: Iterator<Item = Entry<'a>>> Changes<'a, O, N> {
    fn walk(
        older: impl IntoIterator<IntoIter = O>,
        newer: impl IntoIterator<IntoIter = N>,
    ) -> Changes<'a, O, N> {
        Changes {
            older: older.into_iter().peekable(),
            newer: newer.into_iter().peekable(),
        }
    }
}

impl<'a, O: Iterator<Item = Entry<'a>>, N: Iterator<Item = Entry<'a>>> Iterator
    for Changes<'a, O, N>
{
    type Item = Change<'a>;

    fn next(&mut self) -> Option<Change<'a>> {
        loop {
            let order = match (self.older.peek(), self.newer.peek()) {
                (Some((o, _)), Some((n, _))) => o.cmp(n),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => return None,
            };
            match order {
                Ordering::Less => {
                    let (name, old) = self.older.next()?;
                    return Some((name, None, Some(old)));
                }
                Ordering::Greater => {
                    let (name, new) = self.newer.next()?;
                    return Some((name, Some(new), None));
                }
                Ordering::Equal => {
                    let (_, old) = self.older.next()?;
                    let (name, new) = self.newer.next()?;
                    if !same_resource(old, new) {
                        return Some((name, Some(new), Some(old)));
                    }
                }
            }
        }
    }
}

/// Equal versions mean equal content.
fn same_resource(a: &Arc<EnvoyResource>, b: &Arc<EnvoyResource>) -> bool {
    Arc::ptr_eq(a, b) || a.version == b.version
}

/// The resources of one type a proxy should hold: a shared layer and the proxy's own (which
/// wins where both name a resource), with the version of the whole set. One reference
/// counted pointer: a stream holds several sets per type, and thousands of streams do.
#[derive(Clone, Debug)]
pub struct Resources(Arc<Set>);

#[derive(Debug)]
struct Set {
    shared: Arc<Layer>,
    own: Arc<ResourceMap>,
    digest: Digest,
    version: Box<str>,
}

impl Resources {
    /// The set `shared` and `own` make, `own`'s entry standing where both name a resource.
    /// Takes time in `own`'s size only.
    pub fn new(shared: Arc<Layer>, own: ResourceMap) -> Resources {
        Resources::layered(shared, Arc::new(own))
    }

    /// As [`Resources::new`], with an own layer already shared (a proxy's own resources
    /// kept while its class's layer changes).
    pub fn layered(shared: Arc<Layer>, own: Arc<ResourceMap>) -> Resources {
        let own = if own.is_empty() {
            EMPTY_MAP.clone()
        } else {
            own
        };
        let mut digest = shared.digest;
        for (name, r) in own.iter() {
            if let Some(hidden) = shared.map.get(name) {
                digest.take(name, hidden);
            }
            digest.add(name, r);
        }
        Resources::of_parts(shared, own, digest)
    }

    /// The set of `shared` and `own` whose digest is already worked out.
    fn of_parts(shared: Arc<Layer>, own: Arc<ResourceMap>, digest: Digest) -> Resources {
        Resources(Arc::new(Set {
            shared,
            own,
            digest,
            version: digest.version().into(),
        }))
    }

    /// This set's own layer over `shared`, the layer that replaces its shared one. When
    /// `shared` replaced that layer directly and changed none of the own layer's names,
    /// the own layer adds and hides what it did before: the digest follows from the
    /// layers' digests, without looking each own name up in `shared` (a publish does this
    /// for every proxy a change reaches).
    pub fn over(&self, shared: Arc<Layer>) -> Resources {
        let set = &self.0;
        let direct = shared.lineage.as_ref().is_some_and(|lineage| {
            lineage.parent == set.shared.id
                && !lineage.changed.iter().any(|n| set.own.contains_key(n))
        });
        if !direct {
            return Resources::layered(shared, set.own.clone());
        }
        let digest = shared
            .digest
            .plus_difference(&set.digest, &set.shared.digest);
        Resources::of_parts(shared, set.own.clone(), digest)
    }

    /// The layer shared with other sets.
    pub fn shared(&self) -> &Arc<Layer> {
        &self.0.shared
    }

    /// The proxy's own layer.
    pub fn own(&self) -> &Arc<ResourceMap> {
        &self.0.own
    }

    /// A set held by one proxy alone.
    pub fn from_map(map: ResourceMap) -> Resources {
        Resources::new(Layer::empty(), map)
    }

    /// The empty set, one shared by all.
    pub fn empty() -> Resources {
        EMPTY.clone()
    }

    /// Every resource in name order.
    pub fn iter(&self) -> Merged<'_> {
        Merged {
            shared: self.0.shared.map.iter().peekable(),
            own: self.0.own.iter().peekable(),
        }
    }

    /// The resource named `name`, the proxy's own before the shared one.
    pub fn get(&self, name: &str) -> Option<&Arc<EnvoyResource>> {
        self.0.own.get(name).or_else(|| self.0.shared.map.get(name))
    }

    /// Whether the set holds a resource named `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.0.own.contains_key(name) || self.0.shared.map.contains_key(name)
    }

    /// How many resources the set holds, a name in both layers counted once.
    pub fn len(&self) -> usize {
        self.0.digest.len
    }

    /// Whether the set holds no resource.
    pub fn is_empty(&self) -> bool {
        self.0.digest.len == 0
    }

    /// Whether both sets name the same resources, whatever their versions.
    pub fn same_names(&self, other: &Resources) -> bool {
        self.0.digest.len == other.0.digest.len && self.0.digest.names == other.0.digest.names
    }

    /// [`names_sum`] of its names, kept as the set was built.
    pub fn names_sum(&self) -> u128 {
        self.0.digest.names
    }

    /// About the most bytes this set's resources take in a response.
    pub fn response_bytes(&self) -> usize {
        self.0.digest.bytes
    }

    /// What a proxy holding `older` lacks to hold this set: the entries it lacks or holds
    /// at another version, and the names it holds that this set does not, in name order.
    /// When this set's shared layer replaced `older`'s (or is it), only the names that
    /// layer changed and the two own layers are looked at, not every resource.
    pub fn diff<'a>(&'a self, older: &'a Resources) -> Diff<'a> {
        let mut diff = Diff::default();
        let mut record = |(name, new, old): Change<'a>| match (new, old) {
            (Some(new), Some(old)) if same_resource(new, old) => {}
            (Some(new), _) => diff.updated.push((name, new)),
            (None, Some(old)) => diff.gone.push((name, old)),
            (None, None) => {}
        };
        match self.0.shared.changed_since(&older.0.shared) {
            Some(changed) => {
                let names: BTreeSet<&String> = changed
                    .iter()
                    .chain(self.0.own.keys())
                    .chain(older.0.own.keys())
                    .collect();
                for name in names {
                    let new = self.get_entry(name);
                    let old = older.get_entry(name);
                    let name = new.or(old).map_or(name, |(n, _)| n);
                    record((name, new.map(|(_, r)| r), old.map(|(_, r)| r)));
                }
            }
            None => Changes::walk(older.iter(), self.iter()).for_each(record),
        }
        diff
    }

    fn get_entry(&self, name: &str) -> Option<Entry<'_>> {
        self.0
            .own
            .get_key_value(name)
            .or_else(|| self.0.shared.map.get_key_value(name))
    }

    /// This set plus whatever `older` holds that it lacks (itself when it lacks nothing):
    /// what a proxy keeps while removals wait.
    pub fn keeping(self, older: &Resources) -> Resources {
        if self.0.version == older.0.version {
            return self;
        }
        let lacking: Vec<(String, Arc<EnvoyResource>)> = self
            .diff(older)
            .gone
            .into_iter()
            .map(|(name, r)| (name.clone(), r.clone()))
            .collect();
        if lacking.is_empty() {
            return self;
        }
        let mut all: ResourceMap = self.iter().map(|(n, r)| (n.clone(), r.clone())).collect();
        all.extend(lacking);
        Resources::from_map(all)
    }

    /// The resources of this set that `names` lists: the set itself (shared, not copied)
    /// when they list all of it.
    pub fn pick<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Resources {
        let picked: ResourceMap = names
            .into_iter()
            .filter_map(|n| self.get(n).map(|r| (n.to_owned(), r.clone())))
            .collect();
        if picked.len() == self.len() {
            self.clone()
        } else {
            Resources::from_map(picked)
        }
    }

    /// The version of the whole set: a hash of the sum of one hash per resource, of its
    /// name and version.
    pub fn version(&self) -> &str {
        &self.0.version
    }
}

/// Equal set versions mean equal sets. Most comparisons are of a set with itself, shared
/// by a snapshot and the streams that answered from it, and need no look at the versions.
impl PartialEq for Resources {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.version == other.0.version
    }
}

/// What one set holds that another lacks ([`Resources::diff`]).
#[derive(Debug, Default)]
pub struct Diff<'a> {
    /// Entries new or at another version, in name order.
    pub updated: Vec<Entry<'a>>,
    /// Entries gone (as the older set holds them), in name order.
    pub gone: Vec<Entry<'a>>,
}

/// The two layers of a [`Resources`] merged in name order, the proxy's own entry winning.
pub struct Merged<'a> {
    shared: Peekable<std::collections::btree_map::Iter<'a, String, Arc<EnvoyResource>>>,
    own: Peekable<std::collections::btree_map::Iter<'a, String, Arc<EnvoyResource>>>,
}

impl<'a> Iterator for Merged<'a> {
    type Item = (&'a String, &'a Arc<EnvoyResource>);

    fn next(&mut self) -> Option<Self::Item> {
        let order = match (self.shared.peek(), self.own.peek()) {
            (Some((s, _)), Some((o, _))) => s.cmp(o),
            (Some(_), None) => Ordering::Less,
            (None, _) => Ordering::Greater,
        };
        match order {
            Ordering::Less => self.shared.next(),
            Ordering::Equal => {
                self.shared.next();
                self.own.next()
            }
            Ordering::Greater => self.own.next(),
        }
    }
}

/// Everything one proxy should hold: a set of resources per type URL, empty sets left out.
/// Equal when every type's set version is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    types: ByType<Resources>,
}

impl Snapshot {
    /// The snapshot of these sets by type URL; empty ones are dropped.
    pub fn new(types: impl IntoIterator<Item = (&'static str, Resources)>) -> Snapshot {
        Snapshot {
            types: types.into_iter().filter(|(_, r)| !r.is_empty()).collect(),
        }
    }

    /// The resources of one type (an empty set for a type the snapshot lacks).
    pub fn resources(&self, type_url: &str) -> Resources {
        self.set(type_url).clone()
    }

    /// As [`Snapshot::resources`], borrowed: a clone touches reference counts that
    /// thousands of proxies' snapshots share, from every stream's task at once.
    pub fn set(&self, type_url: &str) -> &Resources {
        self.types.get(type_url).unwrap_or(&EMPTY)
    }

    /// The resources of one type, by name.
    pub fn of_type(&self, type_url: &str) -> impl Iterator<Item = (&String, &Arc<EnvoyResource>)> {
        self.types
            .get(type_url)
            .into_iter()
            .flat_map(Resources::iter)
    }

    /// The resource of type `type_url` named `name`.
    pub fn get(&self, type_url: &str, name: &str) -> Option<&Arc<EnvoyResource>> {
        self.types.get(type_url)?.get(name)
    }

    /// How many resources it holds, of every type.
    pub fn len(&self) -> usize {
        self.types.values().map(Resources::len).sum()
    }

    /// About the most bytes a response of one type takes, built or encoded, in either
    /// protocol flavour: each resource with its name and version, and room for the
    /// response's own fields.
    pub fn response_bytes(&self, type_url: &str) -> usize {
        const PER_RESPONSE: usize = 1024;
        PER_RESPONSE
            + self
                .types
                .get(type_url)
                .map_or(0, Resources::response_bytes)
    }

    /// Whether it holds no resource of any type.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// About the most bytes the responses of some types take, counting a type only when
    /// this snapshot's set of it differs from the one it was last answered from (`None`:
    /// not answered since its subscription changed).
    pub fn changed_bytes<'a>(
        &self,
        answered: impl IntoIterator<Item = (&'static str, Option<&'a Resources>)>,
    ) -> usize {
        answered
            .into_iter()
            .filter(|(t, from)| from.is_none_or(|from| from != self.set(t)))
            .map(|(t, _)| self.response_bytes(t))
            .sum()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The version a set of these entries (each name once) gets, computed from scratch, in
    /// whatever order they come: what the digests kept by layers must agree with.
    fn set_version<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
        let (len, sum) = entries
            .into_iter()
            .fold((0, 0u128), |(len, sum), (name, version)| {
                (len + 1, sum.wrapping_add(entry_hash(name, version)))
            });
        version_of(len, sum)
    }

    /// A resource whose body is just its name and version, enough for protocol tests.
    pub fn res(name: &str, version: &str) -> Arc<EnvoyResource> {
        Arc::new(EnvoyResource {
            name: name.into(),
            type_url: "",
            version: version.into(),
            any: envoy_types::pb::google::protobuf::Any {
                type_url: String::new(),
                value: format!("{name}@{version}").into_bytes(),
            },
        })
    }

    pub fn snapshot(entries: &[(&'static str, &str, &str)]) -> Snapshot {
        let mut types: BTreeMap<&'static str, ResourceMap> = BTreeMap::new();
        for (t, name, version) in entries {
            types
                .entry(t)
                .or_default()
                .insert((*name).into(), res(name, version));
        }
        Snapshot::new(
            types
                .into_iter()
                .map(|(t, map)| (t, Resources::from_map(map))),
        )
    }

    /// Two route configs at the versions given, over cluster a and, with `b`, cluster b:
    /// the state machines' tests of a route config refused while another one changes.
    pub fn two_routes(r1: &str, r2: &str, b: bool) -> Snapshot {
        let mut entries = vec![
            (CLUSTER, "a", "1"),
            (ENDPOINT, "a", "1"),
            (LISTENER, "l", "1"),
            (ROUTE, "r1", r1),
            (ROUTE, "r2", r2),
        ];
        if b {
            entries.extend([(CLUSTER, "b", "1"), (ENDPOINT, "b", "1")]);
        }
        snapshot(&entries)
    }

    /// A small mesh of every type, as the state machines' tests start from.
    pub fn mesh_v1() -> Snapshot {
        snapshot(&[
            (CLUSTER, "a", "1"),
            (CLUSTER, "b", "1"),
            (ENDPOINT, "a", "1"),
            (ENDPOINT, "b", "1"),
            (LISTENER, "l", "1"),
            (ROUTE, "r", "1"),
        ])
    }

    fn map(entries: &[(&str, &str)]) -> ResourceMap {
        entries
            .iter()
            .map(|(n, v)| ((*n).into(), res(n, v)))
            .collect()
    }

    #[test]
    fn layers_merge_in_name_order_and_the_own_layer_wins() {
        let shared = Arc::new(Layer::new(map(&[("a", "1"), ("c", "1"), ("e", "1")])));
        let layered = Resources::new(shared.clone(), map(&[("b", "2"), ("c", "2")]));
        let seen: Vec<(&str, &str)> = layered
            .iter()
            .map(|(n, r)| (n.as_str(), r.version.as_str()))
            .collect();
        assert_eq!(seen, [("a", "1"), ("b", "2"), ("c", "2"), ("e", "1")]);
        assert_eq!(layered.len(), 4);
        assert_eq!(layered.get("c").map(|r| r.version.as_str()), Some("2"));
        assert_eq!(layered.get("e").map(|r| r.version.as_str()), Some("1"));
        assert!(layered.contains("b") && !layered.contains("d"));
        // The version follows content, not how the layers split it.
        let flat = Resources::from_map(map(&[("a", "1"), ("b", "2"), ("c", "2"), ("e", "1")]));
        assert_eq!(layered.version(), flat.version());
        assert_eq!(layered, flat);
        assert_ne!(Resources::new(shared, ResourceMap::new()), flat);
        assert_eq!(Resources::empty().version(), set_version([]));
    }

    #[test]
    fn keeping_adds_only_what_the_newer_set_lacks() {
        let newer = Resources::from_map(map(&[("a", "2"), ("b", "1")]));
        let kept = newer
            .clone()
            .keeping(&Resources::from_map(map(&[("a", "1"), ("c", "1")])));
        let seen: Vec<(&str, &str)> = kept
            .iter()
            .map(|(n, r)| (n.as_str(), r.version.as_str()))
            .collect();
        assert_eq!(seen, [("a", "2"), ("b", "1"), ("c", "1")]);
        let same = newer
            .clone()
            .keeping(&Resources::from_map(map(&[("b", "0")])));
        assert!(
            Arc::ptr_eq(&same.0.own, &newer.0.own),
            "nothing lacking, nothing copied"
        );
    }

    #[test]
    fn set_versions_follow_content_not_construction() {
        let a = set_version([("a", "1"), ("b", "2")]);
        assert_eq!(a, set_version([("a", "1"), ("b", "2")]));
        assert_eq!(a, set_version([("b", "2"), ("a", "1")]));
        assert_ne!(a, set_version([("a", "1")]));
        assert_ne!(a, set_version([("a", "1"), ("b", "3")]));
        // Name and version boundaries matter.
        assert_ne!(set_version([("ab", "1")]), set_version([("a", "b1")]));
    }

    /// The version a set of this content gets computed from scratch, entry by entry.
    fn scratch(set: &Resources) -> String {
        set_version(set.iter().map(|(n, r)| (n.as_str(), r.version.as_str())))
    }

    #[test]
    fn a_layered_version_is_the_version_of_its_content() {
        let shared = Arc::new(Layer::new(map(&[("a", "1"), ("b", "1"), ("c", "1")])));
        let splits = [
            vec![],
            vec![("d", "1")],
            vec![("b", "2")],
            // The own entry stands even when equal to the one it hides.
            vec![("b", "1")],
            vec![("a", "2"), ("bb", "1"), ("c", "3"), ("z", "1")],
        ];
        for own in splits {
            let layered = Resources::new(shared.clone(), map(&own));
            assert_eq!(layered.version(), scratch(&layered), "own {own:?}");
            let flat: ResourceMap = layered
                .iter()
                .map(|(n, r)| (n.clone(), r.clone()))
                .collect();
            assert_eq!(layered.len(), flat.len());
            // Same content, split otherwise or not at all, built apart: same version.
            assert_eq!(layered, Resources::from_map(flat.clone()));
            assert_eq!(
                layered,
                Resources::new(Arc::new(Layer::new(flat)), ResourceMap::new())
            );
        }
    }

    #[test]
    fn any_change_of_content_changes_the_version() {
        let shared = Arc::new(Layer::new(map(&[("a", "1"), ("b", "1"), ("c", "1")])));
        let base = Resources::new(shared.clone(), map(&[("d", "1")]));
        let changed = [
            // A shared resource changes, appears or goes.
            Resources::new(
                Arc::new(Layer::new(map(&[("a", "1"), ("b", "2"), ("c", "1")]))),
                map(&[("d", "1")]),
            ),
            Resources::new(
                Arc::new(Layer::new(map(&[
                    ("a", "1"),
                    ("b", "1"),
                    ("c", "1"),
                    ("e", "1"),
                ]))),
                map(&[("d", "1")]),
            ),
            Resources::new(
                Arc::new(Layer::new(map(&[("a", "1"), ("c", "1")]))),
                map(&[("d", "1")]),
            ),
            // An own resource changes, appears, goes, or hides a shared one.
            Resources::new(shared.clone(), map(&[("d", "2")])),
            Resources::new(shared.clone(), map(&[("d", "1"), ("f", "1")])),
            Resources::new(shared.clone(), ResourceMap::new()),
            Resources::new(shared.clone(), map(&[("a", "2"), ("d", "1")])),
            // A resource renamed, its version kept.
            Resources::new(shared, map(&[("dd", "1")])),
        ];
        for set in &changed {
            assert_ne!(base.version(), set.version());
            assert_eq!(set.version(), scratch(set));
        }
    }

    /// Flattens a set to (name, version) pairs.
    fn flat(set: &Resources) -> BTreeMap<String, String> {
        set.iter()
            .map(|(n, r)| (n.clone(), r.version.clone()))
            .collect()
    }

    /// The diff of two sets from their flattened content alone.
    fn reference_diff(newer: &Resources, older: &Resources) -> (Vec<String>, Vec<String>) {
        let (new, old) = (flat(newer), flat(older));
        let updated = new
            .iter()
            .filter(|(n, v)| old.get(*n) != Some(v))
            .map(|(n, v)| format!("{n}@{v}"))
            .collect();
        let gone = old
            .keys()
            .filter(|n| !new.contains_key(*n))
            .cloned()
            .collect();
        (updated, gone)
    }

    fn seen(diff: &Diff<'_>) -> (Vec<String>, Vec<String>) {
        (
            diff.updated
                .iter()
                .map(|(n, r)| format!("{n}@{}", r.version))
                .collect(),
            diff.gone.iter().map(|(n, _)| (*n).clone()).collect(),
        )
    }

    #[test]
    fn a_layer_with_unchanged_content_is_kept_and_a_changed_one_knows_its_changes() {
        let older = Arc::new(Layer::new(map(&[("a", "1"), ("b", "1")])));
        let same = Layer::next(&older, map(&[("a", "1"), ("b", "1")]));
        assert!(Arc::ptr_eq(&older, &same));
        let newer = Layer::next(&older, map(&[("a", "2"), ("b", "1"), ("c", "1")]));
        assert_eq!(
            newer.changed_since(&older),
            Some(&["a".to_owned(), "c".into()][..])
        );
        assert_eq!(older.changed_since(&newer), None, "no lineage backwards");
        let newest = Layer::next(&newer, map(&[("b", "1")]));
        assert_eq!(newest.changed_since(&older), None, "one generation only");
        assert_eq!(
            newest.changed_since(&newer),
            Some(&["a".to_owned(), "c".into()][..])
        );
    }

    fn small_map() -> impl proptest::strategy::Strategy<Value = ResourceMap> {
        use proptest::prelude::*;
        proptest::collection::btree_map("[a-f]", 1u8..4, 0..6).prop_map(|m| {
            m.into_iter()
                .map(|(n, v)| (n.clone(), res(&n, &v.to_string())))
                .collect()
        })
    }

    proptest::proptest! {
        /// The diff through a layer's lineage, or with the same layer, is the diff of the
        /// content: nothing missed where the own layers hide or add resources.
        #[test]
        fn a_diff_is_the_diff_of_the_content(
            older_shared in small_map(),
            newer_shared in small_map(),
            older_own in small_map(),
            newer_own in small_map(),
        ) {
            let older_layer = Arc::new(Layer::new(older_shared));
            let older = Resources::new(older_layer.clone(), older_own);
            for layer in [Layer::next(&older_layer, newer_shared.clone()), older_layer.clone(),
                          Arc::new(Layer::new(newer_shared.clone()))] {
                let newer = Resources::new(layer, newer_own.clone());
                proptest::prop_assert_eq!(seen(&newer.diff(&older)), reference_diff(&newer, &older));
                proptest::prop_assert_eq!(
                    newer.response_bytes(),
                    newer.iter().map(|(n, r)| response_bytes(n, r)).sum::<usize>()
                );
                proptest::prop_assert_eq!(
                    newer.same_names(&older),
                    flat(&newer).keys().eq(flat(&older).keys())
                );
            }
        }
    }

    proptest::proptest! {
        /// A layer patched name by name is the layer a whole new map gives: the same
        /// content, version, lineage and diff.
        #[test]
        fn a_patched_layer_is_the_layer_of_its_content(
            older in small_map(),
            newer in small_map(),
            own in small_map(),
        ) {
            let older_layer = Arc::new(Layer::new(older.clone()));
            let names: BTreeSet<String> = older.keys().chain(newer.keys()).cloned().collect();
            let patch = names.into_iter().map(|n| {
                let entry = newer.get(&n).cloned();
                (n, entry)
            });
            let patched = Layer::patched(&older_layer, patch);
            let next = Layer::next(&older_layer, newer.clone());
            proptest::prop_assert_eq!(Arc::ptr_eq(&patched, &older_layer), Arc::ptr_eq(&next, &older_layer));
            proptest::prop_assert_eq!(patched.changed_since(&older_layer), next.changed_since(&older_layer));
            let from_patch = Resources::new(patched, own.clone());
            let from_map = Resources::new(Arc::new(Layer::new(newer)), own.clone());
            proptest::prop_assert_eq!(flat(&from_patch), flat(&from_map));
            proptest::prop_assert_eq!(from_patch.version(), from_map.version());
            proptest::prop_assert_eq!(from_patch.response_bytes(), from_map.response_bytes());
            let older_set = Resources::new(older_layer, own);
            proptest::prop_assert_eq!(seen(&from_patch.diff(&older_set)), reference_diff(&from_patch, &older_set));
        }
    }

    proptest::proptest! {
        /// A set's own layer put over the layer that replaced its shared one is the set
        /// that layer and that own layer make, whichever names the new layer changed.
        #[test]
        fn a_set_over_a_new_layer_is_the_set_of_both(
            older in small_map(),
            newer in small_map(),
            own in small_map(),
        ) {
            let older_layer = Arc::new(Layer::new(older));
            let set = Resources::new(older_layer.clone(), own.clone());
            for layer in [Layer::next(&older_layer, newer.clone()), Arc::new(Layer::new(newer.clone()))] {
                let over = set.over(layer.clone());
                let made = Resources::new(layer, own.clone());
                proptest::prop_assert_eq!(flat(&over), flat(&made));
                proptest::prop_assert_eq!(over.version(), made.version());
                proptest::prop_assert_eq!(over.len(), made.len());
                proptest::prop_assert_eq!(over.response_bytes(), made.response_bytes());
                proptest::prop_assert!(over.same_names(&made));
            }
        }
    }

    #[test]
    fn only_the_four_types_are_served() {
        assert_eq!(served_type(ROUTE), Some(ROUTE));
        assert_eq!(
            served_type("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"),
            None
        );
    }
}
