//! A replica's report of its proxies, cut into shards that each fit one API object.
//!
//! A shard's body is JSON: `{"versions": [...], "messages": [...], "proxies": [...]}`. Each
//! proxy is `{"p": "<namespace>/<pod>", "m": "sotw"|"delta", "c": <connected at, ms since the
//! epoch>, "t": {"<type>": {"s": <sent>, "a": <ACKed>, "n": {"v": <NACKed version>, "m":
//! <message>}, "r": <resources sent>}}}`, types by their short names (`cds`, `eds`, `lds`,
//! `rds`), absent fields omitted. Versions and messages are indexes into the shard's lists:
//! the proxies of a workload run the same versions, and a bad route gives the same words on
//! every proxy that refuses it, so each is kept once per shard (messages cut at
//! [`MAX_MESSAGE`] bytes). A synced proxy's sent version is its ACKed one, so `s` is left
//! out then, and `null` when nothing was sent.
//!
//! A proxy's shard is a stable hash of its name modulo the shard count, the smallest power
//! of two whose shards all fit [`MAX_SHARD_BYTES`]: a change to a few proxies rewrites few
//! shards, and a fleet of any size stays within objects the API server takes.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use remora_model::input::ObjectKey;
use remora_xds::{
    snapshot::{CLUSTER, ENDPOINT, LISTENER, ROUTE},
    sync::{Mode, Nack, ProxySync, TypeSync},
};
use serde::{Deserialize, Serialize};

/// The most bytes one shard's body holds (the API server refuses objects over 1 MiB).
pub const MAX_SHARD_BYTES: usize = 512 * 1024;

/// The most bytes of a NACK message a report keeps.
pub const MAX_MESSAGE: usize = 1024;

/// The most shards a report is cut into.
const MAX_SHARDS: usize = 1024;

/// One object's worth of a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Its place among the report's shards.
    pub index: usize,
    /// What the object holds.
    pub body: String,
}

/// What one object of a replica's report says, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The replica that wrote it.
    pub replica: String,
    /// When the replica last wrote it (or said it still holds).
    pub renewed: SystemTime,
    /// Its proxies.
    pub proxies: Vec<ProxySync>,
}

/// Why a report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The body is not a report.
    #[error("a proxy report's body is not what this version writes: {0}")]
    Body(#[from] serde_json::Error),
    /// A proxy's name is not `<namespace>/<pod>`.
    #[error("a proxy report names {0:?}, not <namespace>/<pod>")]
    Proxy(String),
    /// A proxy's entry names a version or message the shard does not hold.
    #[error("a proxy report's entry of {proxy} names {list} {index}, which it does not hold")]
    Index {
        /// The proxy.
        proxy: String,
        /// `version` or `message`.
        list: &'static str,
        /// The index named.
        index: usize,
    },
}

#[derive(Serialize, Deserialize)]
struct Body {
    versions: Vec<String>,
    messages: Vec<String>,
    proxies: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    p: String,
    m: Flavour,
    c: u64,
    t: BTreeMap<String, TypeEntry>,
}

#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Flavour {
    Sotw,
    Delta,
}

#[derive(Serialize, Deserialize)]
struct TypeEntry {
    /// `None`: the ACKed version; `Some(None)`: nothing sent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    s: Option<Option<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<NackEntry>,
    #[serde(default, skip_serializing_if = "is_zero")]
    r: u64,
}

#[derive(Serialize, Deserialize)]
struct NackEntry {
    v: usize,
    m: usize,
}

/// A field that is there, even as `null`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<usize>>, D::Error> {
    Option::<usize>::deserialize(d).map(Some)
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

const TYPES: [(&str, &str); 4] = [
    (CLUSTER, "cds"),
    (ENDPOINT, "eds"),
    (LISTENER, "lds"),
    (ROUTE, "rds"),
];

/// Cuts `proxies` into shards; at least one, so that an idle replica still says it lives.
pub fn shards(proxies: &[ProxySync]) -> Vec<Shard> {
    let mut count = 1;
    loop {
        let shards = cut(proxies, count);
        let fits = shards.iter().all(|s| s.body.len() <= MAX_SHARD_BYTES);
        if fits || count >= MAX_SHARDS {
            return shards;
        }
        count *= 2;
    }
}

/// Shard `index` of `count` as `proxies` make it now: a writer that waits between shards
/// builds each one just before writing it, so that it carries what changed meanwhile.
pub fn shard(proxies: &[ProxySync], index: usize, count: usize) -> Shard {
    let group: Vec<&ProxySync> = proxies
        .iter()
        .filter(|p| shard_of(&p.proxy, count) == index)
        .collect();
    Shard {
        index,
        body: encode(&group),
    }
}

fn cut(proxies: &[ProxySync], count: usize) -> Vec<Shard> {
    let mut groups: Vec<Vec<&ProxySync>> = vec![Vec::new(); count];
    for p in proxies {
        groups[shard_of(&p.proxy, count)].push(p);
    }
    groups
        .into_iter()
        .enumerate()
        .map(|(index, group)| Shard {
            index,
            body: encode(&group),
        })
        .collect()
}

/// FNV-1a of the proxy's name: the same on every replica and every version.
fn shard_of(proxy: &ObjectKey, count: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let name = format!("{}/{}", proxy.namespace, proxy.name);
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % count as u64) as usize
}

fn encode(proxies: &[&ProxySync]) -> String {
    let mut tables = Tables::default();
    let proxies = proxies
        .iter()
        .map(|p| Entry {
            p: format!("{}/{}", p.proxy.namespace, p.proxy.name),
            m: match p.mode {
                Mode::StateOfTheWorld => Flavour::Sotw,
                Mode::Incremental => Flavour::Delta,
            },
            c: millis(p.connected_at),
            t: p.types
                .iter()
                .filter_map(|(url, t)| Some((short(url)?.to_owned(), type_entry(t, &mut tables))))
                .collect(),
        })
        .collect();
    let body = Body {
        versions: tables.versions.list,
        messages: tables.messages.list,
        proxies,
    };
    // Plain strings, maps and numbers: serializing cannot fail.
    serde_json::to_string(&body).unwrap_or_default()
}

fn type_entry(t: &TypeSync, tables: &mut Tables) -> TypeEntry {
    let versions = &mut tables.versions;
    TypeEntry {
        s: (t.sent != t.acked).then(|| t.sent.as_deref().map(|v| versions.index(v))),
        a: t.acked.as_deref().map(|v| versions.index(v)),
        n: t.nack.as_ref().map(|n| NackEntry {
            v: versions.index(&n.version),
            m: tables.messages.index(&truncate(&n.message)),
        }),
        r: t.resources_sent,
    }
}

#[derive(Default)]
struct Tables {
    versions: Table,
    messages: Table,
}

/// Strings kept once, named by their place.
#[derive(Default)]
struct Table {
    list: Vec<String>,
    index: HashMap<String, usize>,
}

impl Table {
    fn index(&mut self, text: &str) -> usize {
        if let Some(i) = self.index.get(text) {
            return *i;
        }
        self.list.push(text.to_owned());
        self.index.insert(text.to_owned(), self.list.len() - 1);
        self.list.len() - 1
    }
}

fn truncate(message: &str) -> String {
    if message.len() <= MAX_MESSAGE {
        return message.to_owned();
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

fn short(type_url: &str) -> Option<&'static str> {
    TYPES.iter().find(|(url, _)| *url == type_url).map(|t| t.1)
}

fn long(short: &str) -> Option<&'static str> {
    TYPES.iter().find(|(_, s)| *s == short).map(|t| t.0)
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The proxies of one shard's body. Types this version does not know are skipped.
pub fn decode(body: &str) -> Result<Vec<ProxySync>, ReportError> {
    let body: Body = serde_json::from_str(body)?;
    body.proxies.iter().map(|e| proxy(e, &body)).collect()
}

fn proxy(e: &Entry, body: &Body) -> Result<ProxySync, ReportError> {
    let Some((namespace, name)) = e.p.split_once('/') else {
        return Err(ReportError::Proxy(e.p.clone()));
    };
    let key = ObjectKey::new(namespace, name);
    let look = |list: &'static str, index: usize| {
        let table = if list == "version" {
            &body.versions
        } else {
            &body.messages
        };
        table.get(index).cloned().ok_or_else(|| ReportError::Index {
            proxy: e.p.clone(),
            list,
            index,
        })
    };
    let version = |index: Option<usize>| index.map(|i| look("version", i)).transpose();
    let mut types = BTreeMap::new();
    for (short, t) in &e.t {
        let Some(url) = long(short) else { continue };
        let nack = match &t.n {
            Some(n) => Some(Nack {
                version: look("version", n.v)?,
                message: look("message", n.m)?,
            }),
            None => None,
        };
        let acked = version(t.a)?;
        let sync = TypeSync {
            sent: match t.s {
                Some(sent) => version(sent)?,
                None => acked.clone(),
            },
            acked,
            nack,
            resources_sent: t.r,
        };
        types.insert(url, sync);
    }
    let mode = match e.m {
        Flavour::Sotw => Mode::StateOfTheWorld,
        Flavour::Delta => Mode::Incremental,
    };
    let connected_at = UNIX_EPOCH + Duration::from_millis(e.c);
    Ok(ProxySync::reported(key, mode, connected_at, types))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn proxy(ns: &str, name: &str, acked: &str, nack: Option<&str>) -> ProxySync {
        let t = TypeSync {
            sent: Some("v2".into()),
            acked: Some(acked.into()),
            nack: nack.map(|m| Nack {
                version: "v2".into(),
                message: m.into(),
            }),
            resources_sent: 3,
        };
        let types = [(CLUSTER, t.clone()), (ROUTE, t)].into_iter().collect();
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        ProxySync::reported(ObjectKey::new(ns, name), Mode::Incremental, at, types)
    }

    fn decoded(shards: &[Shard]) -> Vec<ProxySync> {
        let mut all: Vec<ProxySync> = shards
            .iter()
            .flat_map(|s| decode(&s.body).expect("a report this version wrote"))
            .collect();
        all.sort_by(|a, b| a.proxy.cmp(&b.proxy));
        all
    }

    #[test]
    fn a_report_reads_back_as_written() {
        // Reconnected with what an earlier control plane sent: ACKed, nothing sent yet.
        let mut reconnected = proxy("shop", "api-2", "v0", None);
        for t in reconnected.types.values_mut() {
            t.sent = None;
        }
        let proxies = vec![
            proxy("shop", "api-0", "v2", None),
            proxy("shop", "api-1", "v1", Some("bad regex")),
            reconnected,
        ];
        let shards = shards(&proxies);
        assert_eq!(shards.len(), 1);
        assert_eq!(decoded(&shards), proxies);
        // Each version is written once; the synced proxy's sent version is its ACKed one,
        // left out.
        let body = &shards[0].body;
        assert_eq!(body.matches(r#""v2""#).count(), 1, "{body}");
        assert_eq!(body.matches(r#""s":"#).count(), 4, "{body}");
        assert_eq!(body.matches(r#""s":null"#).count(), 2, "{body}");
    }

    #[test]
    fn a_shard_built_alone_is_the_one_cut_with_the_others() {
        let proxies: Vec<ProxySync> = (0..64)
            .map(|i| proxy("shop", &format!("api-{i}"), "v2", None))
            .collect();
        let all = cut(&proxies, 4);
        for (index, expected) in all.iter().enumerate() {
            assert_eq!(&shard(&proxies, index, 4), expected);
        }
    }

    #[test]
    fn an_idle_replica_still_writes_one_empty_shard() {
        let shards = shards(&[]);
        assert_eq!(shards.len(), 1);
        assert!(decode(&shards[0].body).expect("empty").is_empty());
    }

    #[test]
    fn the_same_nack_message_is_kept_once_and_long_ones_are_cut() {
        let long = "x".repeat(5 * MAX_MESSAGE);
        let proxies: Vec<ProxySync> = (0..50)
            .map(|i| proxy("shop", &format!("api-{i}"), "v1", Some(&long)))
            .collect();
        let shards = shards(&proxies);
        assert!(shards[0].body.len() < 50 * 300, "{}", shards[0].body.len());
        let back = decoded(&shards);
        let message = &back[0].types[CLUSTER]
            .nack
            .as_ref()
            .expect("a NACK")
            .message;
        assert!(message.len() <= MAX_MESSAGE + '…'.len_utf8());
        assert!(message.ends_with('…'));
    }

    #[test]
    fn a_large_fleet_is_cut_into_shards_that_fit_and_stay_put() {
        let proxies: Vec<ProxySync> = (0..10_000)
            .map(|i| proxy(&format!("ns-{}", i % 40), &format!("pod-{i}"), "v2", None))
            .collect();
        let before = shards(&proxies);
        assert!(before.len() > 1, "10,000 proxies in one shard");
        assert!(before.iter().all(|s| s.body.len() <= MAX_SHARD_BYTES));
        let mut sorted = proxies.clone();
        sorted.sort_by(|a, b| a.proxy.cmp(&b.proxy));
        assert!(decoded(&before) == sorted, "the shards read back otherwise");
        // One proxy's ACK rewrites one shard.
        let mut after = proxies.clone();
        after[1234] = proxy("ns-34", "pod-1234", "v3", None);
        let changed = shards(&after)
            .iter()
            .zip(&before)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(changed, 1);
    }

    #[test]
    fn a_body_that_is_not_a_report_is_an_error_that_says_so() {
        let e = decode("{\"proxies\": 3}").expect_err("not a report");
        assert!(e.to_string().contains("proxy report"), "{e}");
        let bad = r#"{"versions": [], "messages": [], "proxies": [{"p": "nopod", "m": "sotw", "c": 0, "t": {}}]}"#;
        assert!(matches!(decode(bad), Err(ReportError::Proxy(_))));
        let dangling = r#"{"versions": ["1"], "messages": [], "proxies": [{"p": "a/b", "m": "sotw", "c": 0,
            "t": {"cds": {"n": {"v": 0, "m": 4}}}}]}"#;
        assert!(matches!(
            decode(dangling),
            Err(ReportError::Index {
                list: "message",
                index: 4,
                ..
            })
        ));
        let dangling = r#"{"versions": [], "messages": [], "proxies": [{"p": "a/b", "m": "sotw", "c": 0,
            "t": {"cds": {"a": 2}}}]}"#;
        assert!(matches!(
            decode(dangling),
            Err(ReportError::Index {
                list: "version",
                index: 2,
                ..
            })
        ));
    }
}
