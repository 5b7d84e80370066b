//! The runs as Markdown, ready for BENCHMARKS.md.

use std::{fmt::Write, time::Duration};

use crate::{
    latency::{Change, LatencyRun},
    memory::MemoryRun,
    stats::summary,
};

/// A latency run: a header line, then a row per edit and one for all edits together.
pub fn latency(run: &LatencyRun) -> String {
    let o = &run.options;
    let f = &o.fleet;
    let mut out = format!(
        "### {} Envoys, {}, {} Services ({}{}), --concurrency {}\n\n",
        f.envoys,
        if f.envoy.delta { "delta" } else { "SotW" },
        f.services,
        scope(f.egress),
        workloads(f.workload_sidecars),
        f.envoy.concurrency,
    );
    let rss = summary(&run.rss_kib);
    let _ = writeln!(
        out,
        "load {} → {}; every Envoy routing after {}; folder poll {}, folder read {}; a request to each Envoy every {}; fleet CPU while idle {} per second; Envoy RSS after the edits min / median / max {}\n",
        load(run.load.0),
        load(run.load.1),
        secs(run.ready_after),
        ms(f.poll),
        ms(run.folder_read),
        ms(o.probe_every),
        ms(run.idle_envoy_cpu),
        rss.map_or("–".into(), |s| format!(
            "{} / {} / {}",
            mib(s.min),
            mib(s.p50),
            mib(s.max)
        )),
    );
    out.push_str("| edit | to | Envoys routed | p50 | p99 | max | min | local mode: first sent / last ACK (ms) | route configs re-sent to each Envoy | CPU: Envoys / this process (ms) | other answers |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (i, c) in run.changes.iter().enumerate() {
        row(
            &mut out,
            &(i + 1).to_string(),
            c.to.label(),
            std::slice::from_ref(c),
        );
    }
    if run.changes.len() > 1 {
        row(&mut out, "all", "", &run.changes);
    }
    for c in &run.changes {
        for (proxy, last) in &c.missing {
            let _ = writeln!(
                out,
                "\n**{proxy} did not route to {} in time**; its last answer: {last}",
                c.to.backend()
            );
        }
    }
    out
}

/// One row: the edits' timings over every Envoy.
fn row(out: &mut String, name: &str, to: &str, changes: &[Change]) {
    let routed: Vec<Duration> = changes.iter().flat_map(|c| c.routed.clone()).collect();
    let total: usize = changes
        .iter()
        .map(|c| c.routed.len() + c.missing.len())
        .sum();
    let unexpected: u32 = changes.iter().map(|c| c.unexpected).sum();
    let each = |f: fn(&Change) -> String| changes.iter().map(f).collect::<Vec<_>>().join("; ");
    let cp = each(|c| format!("{} / {}", opt_ms(c.first_sent), opt_ms(c.last_acked)));
    let bytes = each(|c| format!("{} B", c.changed_bytes));
    let cpu = each(|c| format!("{} / {}", c.envoy_cpu.as_millis(), c.own_cpu.as_millis()));
    let s = summary(&routed);
    let cell = |f: fn(&crate::stats::Summary<Duration>) -> Duration| {
        s.as_ref().map_or("–".into(), |s| ms(f(s)))
    };
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "| {name} | {to} | {}/{total} | {} | {} | {} | {} | {cp} | {bytes} | {cpu} | {unexpected} |",
        routed.len(),
        cell(|s| s.p50),
        cell(|s| s.p99),
        cell(|s| s.max),
        cell(|s| s.min),
    );
}

/// A memory run: a row per Envoy and the median.
pub fn memory(run: &MemoryRun) -> String {
    let f = &run.options.fleet;
    let mut out = format!(
        "### Memory: {} Services ({}{}), {} Envoys, {}, --concurrency {}\n\n",
        f.services,
        scope(f.egress),
        workloads(f.workload_sidecars),
        f.envoys,
        if f.envoy.delta { "delta" } else { "SotW" },
        f.envoy.concurrency,
    );
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "load {} → {}; every Envoy routing after {}; read {} after the last ACK\n",
        load(run.load.0),
        load(run.load.1),
        secs(run.ready_after),
        ms(run.options.settle),
    );
    out.push_str("| proxy | clusters | listeners | RSS | server.memory_allocated | server.memory_heap_size |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for e in &run.envoys {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            e.proxy,
            e.clusters,
            e.listeners,
            mib(e.rss_kib),
            mib(e.allocated / 1024),
            mib(e.heap_size / 1024),
        );
    }
    let median = |values: Vec<u64>| summary(&values).map_or("–".into(), |s| mib(s.p50));
    let _ = writeln!(
        out,
        "| median | | | {} | {} | {} |",
        median(run.envoys.iter().map(|e| e.rss_kib).collect()),
        median(run.envoys.iter().map(|e| e.allocated / 1024).collect()),
        median(run.envoys.iter().map(|e| e.heap_size / 1024).collect()),
    );
    out
}

fn scope(egress: bool) -> &'static str {
    if egress { "egress-scoped" } else { "unscoped" }
}

fn workloads(sidecars: bool) -> &'static str {
    if sidecars {
        ", every workload pod a proxy too"
    } else {
        ""
    }
}

fn load(l: Option<f64>) -> String {
    l.map_or("?".into(), |l| format!("{l:.2}"))
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map_or("–".into(), |d| d.as_millis().to_string())
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use remora_model::input::ObjectKey;

    use super::*;
    use crate::{envoy::EnvoyOptions, fleet::FleetOptions, latency::LatencyOptions, mesh::Version};

    fn options() -> LatencyOptions {
        LatencyOptions {
            fleet: FleetOptions {
                envoys: 2,
                services: 20,
                egress: false,
                workload_sidecars: false,
                envoy: EnvoyOptions {
                    bin: PathBuf::from("envoy"),
                    delta: true,
                    concurrency: 2,
                },
                poll: Duration::from_millis(300),
                startup_timeout: Duration::from_secs(60),
            },
            changes: 2,
            probe_every: Duration::from_millis(20),
            change_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_latency_report_has_a_row_per_edit_and_names_the_envoys_that_missed() {
        let ms = Duration::from_millis;
        let run = LatencyRun {
            options: options(),
            ready_after: Duration::from_secs(3),
            folder_read: ms(40),
            idle_envoy_cpu: ms(10),
            changes: vec![
                Change {
                    to: Version::V2,
                    routed: vec![ms(410), ms(380)],
                    missing: vec![],
                    unexpected: 0,
                    first_sent: Some(ms(350)),
                    last_acked: Some(ms(400)),
                    changed_bytes: 1234,
                    envoy_cpu: ms(900),
                    own_cpu: ms(200),
                },
                Change {
                    to: Version::V1,
                    routed: vec![ms(120)],
                    missing: vec![(ObjectKey::new("team-00", "fleet-proxy-1"), "503".into())],
                    unexpected: 4,
                    first_sent: None,
                    last_acked: None,
                    changed_bytes: 1234,
                    envoy_cpu: ms(700),
                    own_cpu: ms(100),
                },
            ],
            rss_kib: vec![40 * 1024, 42 * 1024],
            load: (Some(0.5), None),
        };
        let text = latency(&run);
        assert!(
            text.contains("2 Envoys, delta, 20 Services (unscoped)"),
            "{text}"
        );
        assert!(
            text.contains(
                "| 1 | v2 | 2/2 | 380 ms | 410 ms | 410 ms | 380 ms | 350 / 400 | 1234 B | 900 / 200 | 0 |"
            ),
            "{text}"
        );
        assert!(text.contains("| 2 | v1 | 1/2 | 120 ms |"), "{text}");
        assert!(text.contains("| all |  | 3/4 | 380 ms |"), "{text}");
        assert!(
            text.contains("team-00/fleet-proxy-1 did not route to fleet-echo-v1"),
            "{text}"
        );
        assert!(text.contains("load 0.50 → ?"), "{text}");
    }
}
