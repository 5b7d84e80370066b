//! What a run measured, and how it is printed: Markdown tables that can go into
//! BENCHMARKS.md as they are.

use std::{fmt::Write as _, time::Duration};

use remora_synthetic::Shape;

use crate::{fleet::Mode, procfs::Memory, protocol::Ready};

/// The server process at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub cpu: Duration,
    pub memory: Memory,
}

/// p50, p99 and the maximum of a set of durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spread {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Spread {
    /// `None` for no samples.
    pub fn of(mut samples: Vec<Duration>) -> Option<Spread> {
        samples.sort_unstable();
        Some(Spread {
            count: samples.len(),
            p50: percentile(&samples, 50)?,
            p99: percentile(&samples, 99)?,
            max: *samples.last()?,
        })
    }
}

/// The nearest-rank percentile of sorted samples: the smallest sample that at least `p`
/// percent of the samples do not exceed. No interpolation, so it is always a measured value.
pub fn percentile(sorted: &[Duration], p: usize) -> Option<Duration> {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// One route change.
#[derive(Debug)]
pub struct ChangeResult {
    pub route: String,
    pub apply: Duration,
    pub publish: Duration,
    pub affected: usize,
    /// Per affected proxy that converged: from the command to its ACK.
    pub convergence: Vec<Duration>,
    /// Server CPU from the command to the end of the grace period after the last ACK.
    pub server_cpu: Duration,
    /// Responses received after the change, by affected and by unaffected proxies.
    pub responses_affected: usize,
    pub responses_unaffected: usize,
    /// Unaffected proxies that received anything.
    pub unaffected_hit: usize,
}

#[derive(Debug)]
pub struct Report {
    pub proxies: usize,
    pub mode: Mode,
    pub shape: Shape,
    pub ready: Ready,
    pub at_ready: Sample,
    /// From the first connection attempt to the last proxy holding its whole config.
    pub connect_and_sync: Duration,
    pub synced: Sample,
    /// Heap bytes in use when every proxy was synced, in KiB.
    pub synced_heap_kib: u64,
    /// The most heap ever in use by then, and by the end of the run, in KiB.
    pub synced_heap_peak_kib: u64,
    pub end_heap_peak_kib: u64,
    pub changes: Vec<ChangeResult>,
    pub end: Sample,
    /// The driver's own process: what simulating the fleet cost.
    pub driver: Sample,
    /// The driver's heap in use once every proxy was synced, in KiB: what the fleet keeps,
    /// apart from what the allocator holds on to after the sync.
    pub driver_synced_heap_kib: u64,
    pub cores: usize,
}

impl Report {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let n = self.proxies;
        let shape = &self.shape;
        let _ = writeln!(
            s,
            "xds-load: {n} proxies, {} mode; mesh of {} namespaces ({} shared), {} Services, {} \
             pods, {} routes, {}; {} resources per proxy (mean); {} cores",
            mode_name(self.mode),
            shape.namespaces,
            shape.shared_namespaces,
            shape.services,
            shape.pods,
            shape.routes,
            if shape.egress {
                "egress scopes (own + shared namespaces)"
            } else {
                "no egress scope"
            },
            self.ready.resources_per_proxy,
            self.cores,
        );
        let _ = writeln!(s);
        let _ = writeln!(s, "| measure | value | target |");
        let _ = writeln!(s, "|---|---|---|");
        let mut row = |label: &str, value: String, target: &str| {
            let _ = writeln!(s, "| {label} | {value} | {target} |");
        };
        let r = &self.ready;
        // The resident memory of the connected fleet, which the target bounds at 10,000.
        let held = |kib: u64| format!("{} ({} per proxy)", mib(kib), kib_per(kib, n));
        let held_target = if n >= 10_000 { "< 1 GiB" } else { "" };
        row(
            "server start: mesh build / publish_all (one thread)",
            format!("{} / {}", secs(r.build), secs(r.publish)),
            "",
        );
        row(
            "server RSS: at start / mesh built / snapshots published",
            format!(
                "{} / {} / {}",
                mib(r.rss_start_kib),
                mib(r.rss_built_kib),
                mib(r.rss_published_kib)
            ),
            "",
        );
        row(
            "connect + initial sync of every proxy",
            secs(self.connect_and_sync),
            "",
        );
        row(
            "server CPU: initial sync (ready → all synced)",
            secs(self.synced.cpu.saturating_sub(self.at_ready.cpu)),
            "",
        );
        row(
            "server RSS, all proxies connected and synced",
            held(self.synced.memory.rss_kib),
            held_target,
        );
        row(
            "server RSS added by the connected proxies, per proxy",
            kib_per(
                self.synced
                    .memory
                    .rss_kib
                    .saturating_sub(self.at_ready.memory.rss_kib),
                n,
            ),
            "",
        );
        row(
            "server heap in use (allocated, not freed): snapshots published / all synced",
            format!(
                "{} / {} ({} per proxy added)",
                mib(r.heap_published_kib),
                mib(self.synced_heap_kib),
                kib_per(self.synced_heap_kib.saturating_sub(r.heap_published_kib), n)
            ),
            "",
        );
        row(
            "server RSS not in the heap, synced (allocator overhead and kept free memory, \
             stacks, code)",
            mib(self
                .synced
                .memory
                .rss_kib
                .saturating_sub(self.synced_heap_kib)),
            "",
        );
        row(
            "server heap peak (most ever in use): by the end of the sync / whole run",
            format!(
                "{} / {}",
                mib(self.synced_heap_peak_kib),
                mib(self.end_heap_peak_kib)
            ),
            "",
        );
        row(
            "server RSS at the end, every proxy still connected (after the changes)",
            held(self.end.memory.rss_kib),
            held_target,
        );
        row(
            "server peak RSS (VmHWM, whole run)",
            mib(self.end.memory.peak_kib),
            "",
        );
        for (i, c) in self.changes.iter().enumerate() {
            let k = i + 1;
            row(
                &format!("change {k}: route {}, proxies affected", c.route),
                format!("{} of {n}", c.affected),
                "",
            );
            row(
                &format!("change {k}: model apply / publish"),
                format!("{} / {}", ms(c.apply), ms(c.publish)),
                "",
            );
            row(
                &format!("change {k}: converged (ACKed) p50 / p99 / max"),
                spread(Spread::of(c.convergence.clone())),
                "p99 < 1 s",
            );
            row(&format!("change {k}: server CPU"), ms(c.server_cpu), "");
            row(
                &format!("change {k}: responses after it, to affected / unaffected proxies"),
                format!(
                    "{} / {} ({} unaffected proxies got any)",
                    c.responses_affected, c.responses_unaffected, c.unaffected_hit
                ),
                "unaffected: 0",
            );
        }
        row(
            "driver (the simulated fleet): CPU / peak RSS / heap in use, synced",
            format!(
                "{} / {} / {}",
                secs(self.driver.cpu),
                mib(self.driver.memory.peak_kib),
                mib(self.driver_synced_heap_kib)
            ),
            "",
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "| proxies | mode | egress scopes | connect + sync | server RSS synced (per proxy) | \
             server heap synced (added per proxy) | server peak RSS | server CPU, sync | converged p50 / p99 / max (all changes) | \
             server CPU per change | responses to unaffected proxies |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
        let all = Spread::of(
            self.changes
                .iter()
                .flat_map(|c| c.convergence.iter().copied())
                .collect(),
        );
        let cpu_per_change = self
            .changes
            .iter()
            .map(|c| c.server_cpu)
            .sum::<Duration>()
            .checked_div(u32::try_from(self.changes.len()).unwrap_or(u32::MAX))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "| {n} | {} | {} | {} | {} ({}) | {} ({}) | {} | {} | {} | {} | {} |",
            mode_name(self.mode),
            if shape.egress { "yes" } else { "no" },
            secs(self.connect_and_sync),
            mib(self.synced.memory.rss_kib),
            kib_per(self.synced.memory.rss_kib, n),
            mib(self.synced_heap_kib),
            kib_per(self.synced_heap_kib.saturating_sub(r.heap_published_kib), n),
            mib(self.end.memory.peak_kib),
            secs(self.synced.cpu.saturating_sub(self.at_ready.cpu)),
            spread(all),
            ms(cpu_per_change),
            self.changes
                .iter()
                .map(|c| c.responses_unaffected)
                .sum::<usize>(),
        );
        s
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Sotw => "state-of-the-world",
        Mode::Delta => "incremental (delta)",
    }
}

fn spread(s: Option<Spread>) -> String {
    match s {
        Some(s) => format!("{} / {} / {}", ms(s.p50), ms(s.p99), ms(s.max)),
        None => "n/a".into(),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn kib_per(kib: u64, n: usize) -> String {
    format!("{:.0} KiB", kib as f64 / n.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn nearest_rank_percentiles() {
        let hundred: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&hundred, 50), Some(ms(50)));
        assert_eq!(percentile(&hundred, 99), Some(ms(99)));
        assert_eq!(percentile(&hundred, 100), Some(ms(100)));
        // With fewer than a hundred samples the p99 is the maximum.
        let ten: Vec<Duration> = (1..=10).map(ms).collect();
        assert_eq!(percentile(&ten, 99), Some(ms(10)));
        assert_eq!(percentile(&ten, 50), Some(ms(5)));
        assert_eq!(percentile(&[ms(7)], 1), Some(ms(7)));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn spreads_sort_their_samples() {
        let s = Spread::of(vec![ms(30), ms(10), ms(20)]).expect("samples");
        assert_eq!((s.count, s.p50, s.p99, s.max), (3, ms(20), ms(30), ms(30)));
        assert_eq!(Spread::of(Vec::new()), None);
    }
}
