//! The lines the server role writes to its standard output for the driver, one message per
//! line, fields separated by tabs (no name in the mesh holds a tab). The driver writes plain
//! commands to the server's standard input: [`CHANGE`], [`HEAP`], [`REFUSED`] and [`QUIT`].

use std::{fmt, str::FromStr, time::Duration};

/// Makes the next change, publishes it and reports it.
pub const CHANGE: &str = "change";
/// Stops the server (so does the end of its standard input).
pub const QUIT: &str = "quit";
/// Asks for the server's heap in use and its peak, answered with [`Line::Heap`].
pub const HEAP: &str = "heap";
/// Asks for the clients the server refused, answered with [`Line::Refused`].
pub const REFUSED: &str = "refused";

/// What the server had done by the time it accepted connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    pub port: u16,
    /// `Mesh::apply` of every object in one batch.
    pub build: Duration,
    /// `Publisher::publish_all`: translation and one snapshot per proxy.
    pub publish: Duration,
    /// Resident memory at start, after the build and after publishing, in KiB.
    pub rss_start_kib: u64,
    pub rss_built_kib: u64,
    pub rss_published_kib: u64,
    /// Heap bytes in use after publishing, in KiB.
    pub heap_published_kib: u64,
    /// Resources in a proxy's snapshot, the mean over all proxies: the config's size.
    pub resources_per_proxy: usize,
}

/// A change as the server applied it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changed {
    /// What changed, in words without tabs: `route <ns>/<name>`, `Service <ns>/<name> added`.
    pub what: String,
    pub apply: Duration,
    pub publish: Duration,
    /// Proxies whose config changed; [`Line::Expect`] lines follow naming each of them
    /// with each resource of theirs that changed.
    pub affected: usize,
}

/// One resource some proxies must end up with, or without: one line for every proxy that
/// expects the same, so that the report of a change that reaches ten thousand proxies is a
/// few lines, not ten thousand, for the server to write and the driver to read while the
/// proxies converge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    /// The proxies, by their place among the [`Line::Proxy`] lines.
    pub proxies: Vec<usize>,
    pub type_url: String,
    pub name: String,
    /// The resource's new version (the hex xxh3 of its encoding); `None`: it was removed.
    pub version: Option<String>,
    /// The length of its encoding (0 when removed): what the change sends the proxy of it.
    pub bytes: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// One proxy of the mesh, `namespace/pod`, written before [`Line::Ready`].
    Proxy(String),
    Ready(Ready),
    Changed(Changed),
    Expect(Expect),
    /// Ends the report of a change.
    Done,
    /// The server's heap in use, and the most it ever had in use, in KiB.
    Heap(u64, u64),
    /// The clients the server refused so far, by reason (as its metric names them).
    Refused(Vec<(String, u64)>),
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Line::Proxy(p) => write!(f, "proxy\t{p}"),
            Line::Ready(r) => write!(
                f,
                "ready\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                r.port,
                r.build.as_micros(),
                r.publish.as_micros(),
                r.rss_start_kib,
                r.rss_built_kib,
                r.rss_published_kib,
                r.heap_published_kib,
                r.resources_per_proxy
            ),
            Line::Changed(c) => write!(
                f,
                "changed\t{}\t{}\t{}\t{}",
                c.what,
                c.apply.as_micros(),
                c.publish.as_micros(),
                c.affected
            ),
            Line::Expect(e) => {
                write!(f, "expect\t")?;
                for (i, proxy) in e.proxies.iter().enumerate() {
                    let comma = if i == 0 { "" } else { "," };
                    write!(f, "{comma}{proxy}")?;
                }
                write!(
                    f,
                    "\t{}\t{}\t{}\t{}",
                    e.type_url,
                    e.name,
                    e.version.as_deref().unwrap_or("-"),
                    e.bytes
                )
            }
            Line::Done => write!(f, "done"),
            Line::Heap(kib, peak) => write!(f, "heap\t{kib}\t{peak}"),
            Line::Refused(counts) => {
                write!(f, "refused")?;
                counts
                    .iter()
                    .try_for_each(|(reason, n)| write!(f, "\t{reason}={n}"))
            }
        }
    }
}

impl FromStr for Line {
    type Err = String;

    fn from_str(s: &str) -> Result<Line, String> {
        let fields: Vec<&str> = s.split('\t').collect();
        let bad = || format!("unexpected line from the server: {s:?}");
        let num = |v: &str| v.parse::<u64>().map_err(|_| bad());
        let micros = |v: &str| num(v).map(Duration::from_micros);
        match fields[..] {
            ["proxy", p] => Ok(Line::Proxy(p.to_owned())),
            [
                "ready",
                port,
                build,
                publish,
                start,
                built,
                published,
                heap,
                resources,
            ] => Ok(Line::Ready(Ready {
                port: port.parse().map_err(|_| bad())?,
                build: micros(build)?,
                publish: micros(publish)?,
                rss_start_kib: num(start)?,
                rss_built_kib: num(built)?,
                rss_published_kib: num(published)?,
                heap_published_kib: num(heap)?,
                resources_per_proxy: resources.parse().map_err(|_| bad())?,
            })),
            ["changed", what, apply, publish, affected] => Ok(Line::Changed(Changed {
                what: what.to_owned(),
                apply: micros(apply)?,
                publish: micros(publish)?,
                affected: affected.parse().map_err(|_| bad())?,
            })),
            ["expect", proxies, type_url, name, version, bytes] => Ok(Line::Expect(Expect {
                proxies: proxies
                    .split(',')
                    .map(|p| p.parse().map_err(|_| bad()))
                    .collect::<Result<_, _>>()?,
                type_url: type_url.to_owned(),
                name: name.to_owned(),
                version: (version != "-").then(|| version.to_owned()),
                bytes: bytes.parse().map_err(|_| bad())?,
            })),
            ["done"] => Ok(Line::Done),
            ["heap", kib, peak] => Ok(Line::Heap(num(kib)?, num(peak)?)),
            ["refused", ref counts @ ..] => counts
                .iter()
                .map(|c| {
                    let (reason, n) = c.split_once('=').ok_or_else(bad)?;
                    Ok((reason.to_owned(), num(n)?))
                })
                .collect::<Result<_, String>>()
                .map(Line::Refused),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_reads_back_as_written() {
        let lines = [
            Line::Proxy("team-03/auth-7-v1-0".into()),
            Line::Ready(Ready {
                port: 40123,
                build: Duration::from_micros(1_500_000),
                publish: Duration::from_micros(250),
                rss_start_kib: 1,
                rss_built_kib: 2,
                rss_published_kib: 3,
                heap_published_kib: 4,
                resources_per_proxy: 1089,
            }),
            Line::Changed(Changed {
                what: "Service shared-0/extra added".into(),
                apply: Duration::from_micros(12),
                publish: Duration::from_micros(3400),
                affected: 200,
            }),
            Line::Expect(Expect {
                proxies: vec![0, 7, 9999],
                type_url: remora_xds::snapshot::ROUTE.into(),
                name: "8080".into(),
                version: Some("00ff00ff00ff00ff".into()),
                bytes: 1234,
            }),
            Line::Expect(Expect {
                proxies: vec![3],
                type_url: remora_xds::snapshot::CLUSTER.into(),
                name: "gone".into(),
                version: None,
                bytes: 0,
            }),
            Line::Done,
            Line::Heap(12_345, 23_456),
            Line::Refused(vec![("stream".into(), 3), ("slow_reader".into(), 0)]),
        ];
        for line in lines {
            assert_eq!(line.to_string().parse::<Line>(), Ok(line));
        }
        assert!("ready\t1".parse::<Line>().is_err());
        assert!("proxy".parse::<Line>().is_err());
        assert!("expect\t1,x\tt\tn\t-\t0".parse::<Line>().is_err());
    }
}
