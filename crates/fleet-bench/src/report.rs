//! What a run measured, and how it is printed: Markdown that can go into BENCHMARKS.md as
//! it is.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use remora_synthetic::Shape;
use remora_xds_load::{fleet::Mode, stats::Spread};

use crate::{metrics::Scrape, replica::Sample, timeline::RouteSeen};

/// The status after the last ACK, as issue 14 states the target.
const TARGET: &str = "< 2 s";
/// Lists of moments are cut after this many.
const LISTED: usize = 12;

/// What the replicas did over a stretch of the run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Window {
    /// How long it lasted.
    pub took: Duration,
    /// Each replica's counters over it.
    pub per_replica: Vec<Scrape>,
}

impl Window {
    /// Replica `r`'s API writes per second: reports, and in all.
    fn rates(&self, r: usize) -> (f64, f64) {
        let secs = self.took.as_secs_f64().max(1e-9);
        let s = self.per_replica.get(r).copied().unwrap_or_default();
        (
            (s.report_applies + s.report_deletes) / secs,
            s.writes() / secs,
        )
    }
}

/// One edit of the route.
#[derive(Clone, Debug)]
pub struct ChangeResult {
    /// Its number in the run.
    pub number: u32,
    /// The route's generation it made.
    pub generation: i64,
    /// How long the PATCH took to return.
    pub edit_call: Duration,
    /// Per proxy, from the edit to its ACK of the changed route config.
    pub acks: Vec<Duration>,
    /// Per replica, from the edit to the last ACK of its proxies.
    pub last_ack: Vec<Duration>,
    /// Per replica, from the edit to the first report event that showed all its proxies'
    /// ACKs (`None`: never seen).
    pub caught_up: Vec<Option<Duration>>,
    /// Per replica, its report writes the driver's watch saw from the edit to the status.
    pub report_writes: Vec<Vec<Duration>>,
    /// From the edit to the first status that counted every ACK.
    pub status: Duration,
    /// The route's states seen from the edit to that one.
    pub states: Vec<(Duration, RouteSeen)>,
    /// What the replicas did from the edit to the end of the settling after it.
    pub window: Window,
    /// Per replica, its CPU time over that window.
    pub cpu: Vec<Duration>,
}

impl ChangeResult {
    fn last(&self) -> Duration {
        self.acks.iter().copied().max().unwrap_or_default()
    }

    /// From the last ACK to the status that counted it.
    fn after_last_ack(&self) -> Duration {
        self.status.saturating_sub(self.last())
    }
}

/// A whole run.
#[derive(Clone, Debug)]
pub struct Report {
    pub proxies: usize,
    pub mode: Mode,
    pub shape: Shape,
    /// The controller flags that differ from `remora controller`'s.
    pub knobs: Vec<String>,
    /// The edited route, `namespace/name`, and the route config it governs.
    pub route: String,
    pub route_config: String,
    /// Proxies its status counted as affected before the first edit.
    pub affected: i32,
    pub replicas: Vec<String>,
    /// The index of the replica that held the Lease.
    pub leader: usize,
    /// Objects written, API calls, and how long it took.
    pub setup: (usize, usize, Duration),
    pub connect_and_sync: Duration,
    /// From the last proxy synced to the first status counting them all.
    pub first_status: Duration,
    /// From that status to the leader's last status write of the initial sync (within a
    /// status interval and a second).
    pub quiet: Duration,
    /// From the fleet's start to that status.
    pub sync: Window,
    /// The idle stretch before the first edit.
    pub idle: Window,
    /// From the idle stretch's start to the end.
    pub run: Window,
    /// Each replica's report objects (body sizes), once synced and at the end.
    pub reports_synced: BTreeMap<String, Vec<usize>>,
    pub reports_end: BTreeMap<String, Vec<usize>>,
    pub synced_samples: Vec<Sample>,
    pub end_samples: Vec<Sample>,
    pub changes: Vec<ChangeResult>,
    /// The driver's own process: the simulated fleet and the watches.
    pub driver: Sample,
    pub cores: usize,
    /// The 1-minute load average at the start and the end.
    pub load: (f64, f64),
    /// Namespaces teardown could not delete.
    pub left: Vec<String>,
}

/// One row of the measures table: what, the value, and the target if there is one.
type Row = (String, String, &'static str);

impl Report {
    /// The run as Markdown: a paragraph on the run, the table of every measure, and the
    /// row of the summary table in BENCHMARKS.md.
    pub fn render(&self) -> String {
        let mut s = self.title();
        s.push_str("\n| measure | value | target |\n|---|---|---|\n");
        let rows = [self.setup_rows(), self.change_rows(), self.end_rows()].concat();
        for (label, value, target) in rows {
            let _ = writeln!(s, "| {label} | {value} | {target} |");
        }
        s.push('\n');
        s.push_str(&self.summary());
        s
    }

    fn name(&self, r: usize) -> &str {
        self.replicas.get(r).map_or("?", String::as_str)
    }

    /// `f` of each replica, named: `replica-a: …; replica-b: …`.
    fn each(&self, f: impl Fn(usize) -> String) -> String {
        (0..self.replicas.len())
            .map(|r| format!("{}: {}", self.name(r), f(r)))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn title(&self) -> String {
        let s = &self.shape;
        let split = self.each(|r| {
            let n = (self.proxies + self.replicas.len() - 1 - r) / self.replicas.len();
            let role = if r == self.leader { ", the leader" } else { "" };
            format!("{n} proxies{role}")
        });
        format!(
            "fleet-bench: {} proxies over {} replicas ({split}), {}, {}; mesh of {} namespaces \
             ({} shared), {} Services, {} pods, {} routes; the edited route {} (route config {}) \
             affects {} proxies; controller settings: {}; {} cores, load {:.1} → {:.1}\n",
            self.proxies,
            self.replicas.len(),
            mode_name(self.mode),
            if s.egress {
                "egress scopes (own + shared namespaces)"
            } else {
                "no egress scope"
            },
            s.namespaces,
            s.shared_namespaces,
            s.services,
            s.pods,
            s.routes,
            self.route,
            self.route_config,
            self.affected,
            if self.knobs.is_empty() {
                "as `remora controller` runs".to_owned()
            } else {
                self.knobs.join(", ")
            },
            self.cores,
            self.load.0,
            self.load.1,
        )
    }

    fn setup_rows(&self) -> Vec<Row> {
        let (objects, calls, took) = self.setup;
        vec![
            (
                "mesh written to the API server".into(),
                format!("{objects} objects, {calls} API calls, {}", secs(took)),
                "",
            ),
            (
                "connect + initial sync of every proxy".into(),
                secs(self.connect_and_sync),
                "",
            ),
            (
                "status counted every proxy's ACK, after the last proxy synced".into(),
                secs(self.first_status),
                "",
            ),
            (
                format!(
                    "API writes from the fleet's start to that status ({}), per replica: \
                     reports / status",
                    secs(self.sync.took)
                ),
                self.each(|r| writes(&self.sync, r)),
                "",
            ),
            (
                "the leader's last status write of the sync (every route's), after that \
                 status"
                    .into(),
                format!("about {}", secs(self.quiet)),
                "",
            ),
            (
                format!("idle ({}): API writes per second", secs(self.idle.took)),
                self.each(|r| rate(&self.idle, r)),
                "",
            ),
            (
                "report objects once synced: count, body sizes, total".into(),
                objects_text(&self.reports_synced),
                "< 1 MiB each",
            ),
        ]
    }

    fn change_rows(&self) -> Vec<Row> {
        self.changes
            .iter()
            .flat_map(|c| [self.timing_rows(c), self.cost_rows(c)].concat())
            .collect()
    }

    /// When each step of an edit happened.
    fn timing_rows(&self, c: &ChangeResult) -> Vec<Row> {
        let k = c.number;
        let acks = match Spread::of(c.acks.clone()) {
            Some(s) => format!(
                "{} / {} / {} / {}",
                secs(c.acks.iter().copied().min().unwrap_or_default()),
                secs(s.p50),
                secs(s.p99),
                secs(s.max)
            ),
            None => "n/a".into(),
        };
        vec![
            (
                format!("edit {k} (generation {}): the PATCH call", c.generation),
                ms(c.edit_call),
                "",
            ),
            (
                format!("edit {k}: ACKs after the edit, first / p50 / p99 / last"),
                acks,
                "",
            ),
            (
                format!("edit {k}: last ACK of each replica's proxies"),
                self.each(|r| secs(c.last_ack[r])),
                "",
            ),
            (
                format!(
                    "edit {k}: each replica's report showed all its proxies' ACKs, after \
                     the edit (after its last ACK)"
                ),
                self.each(|r| match c.caught_up[r] {
                    Some(at) => {
                        format!("{} (+{})", secs(at), secs(at.saturating_sub(c.last_ack[r])))
                    }
                    None => "never seen".into(),
                }),
                "",
            ),
            (
                format!("edit {k}: report writes seen from the edit to the status"),
                self.each(|r| moments(&c.report_writes[r])),
                "",
            ),
            (
                format!(
                    "edit {k}: statuses seen after the edit: observed generation, \
                     ACKed/affected, Programmed"
                ),
                states(&c.states),
                "",
            ),
            (
                format!(
                    "edit {k}: status counted all {} ACKs, after the edit",
                    self.proxies
                ),
                secs(c.status),
                "",
            ),
            (
                format!("edit {k}: status counted all ACKs, after the last ACK"),
                secs(c.after_last_ack()),
                TARGET,
            ),
            (
                format!(
                    "edit {k}: where the time went: the last ACK after the edit / the \
                     followers' reports after their last ACK / the status after those \
                     reports"
                ),
                self.stages(c),
                "",
            ),
        ]
    }

    /// What an edit cost the replicas.
    fn cost_rows(&self, c: &ChangeResult) -> Vec<Row> {
        let k = c.number;
        vec![
            (
                format!(
                    "edit {k}: API writes from the edit to {} after the status, per \
                     replica: reports / status",
                    secs(c.window.took.saturating_sub(c.status))
                ),
                self.each(|r| writes(&c.window, r)),
                "",
            ),
            (
                format!(
                    "edit {k}: the leader's status work: route reconciles (passes of {} \
                     routes), their time with the writes (per pass)",
                    self.shape.routes
                ),
                self.passes(c),
                "",
            ),
            (
                format!("edit {k}: replica CPU over the window"),
                self.each(|r| secs(c.cpu[r])),
                "",
            ),
        ]
    }

    /// The three stages of an edit: distribution, the followers' report pacing, the
    /// leader's pass (its own proxies are live to it; the followers' reach it in reports).
    fn stages(&self, c: &ChangeResult) -> String {
        let followers = (0..self.replicas.len()).filter(|r| *r != self.leader);
        let mut reports = None;
        for r in followers {
            match c.caught_up[r] {
                Some(at) => reports = reports.max(Some((at, at.saturating_sub(c.last_ack[r])))),
                None => {
                    return format!(
                        "{} / a follower's report never showed every ACK",
                        secs(c.last())
                    );
                }
            }
        }
        match reports {
            Some((at, pacing)) => format!(
                "{} / {} / {}",
                secs(c.last()),
                secs(pacing),
                secs(c.status.saturating_sub(at))
            ),
            None => format!(
                "{} / no follower / {}",
                secs(c.last()),
                secs(c.after_last_ack())
            ),
        }
    }

    fn passes(&self, c: &ChangeResult) -> String {
        let s = c
            .window
            .per_replica
            .get(self.leader)
            .copied()
            .unwrap_or_default();
        let passes = s.route_reconciles / self.shape.routes.max(1) as f64;
        let seconds = s.route_reconcile_seconds.max(0.0);
        format!(
            "{:.0} ({passes:.1} passes), {} ({})",
            s.route_reconciles,
            secs(Duration::from_secs_f64(seconds)),
            secs(Duration::from_secs_f64(seconds / passes.max(1e-9)))
        )
    }

    fn end_rows(&self) -> Vec<Row> {
        vec![
            (
                format!(
                    "whole run ({}: idle and {} edits): API writes per second, reports / all",
                    secs(self.run.took),
                    self.changes.len()
                ),
                self.each(|r| rate(&self.run, r)),
                "a few per second",
            ),
            (
                "report objects at the end: count, body sizes, total".into(),
                objects_text(&self.reports_end),
                "",
            ),
            (
                "replica RSS: synced / at the end / peak".into(),
                self.each(|r| {
                    let (s, e) = (self.synced_samples[r].memory, self.end_samples[r].memory);
                    format!(
                        "{} / {} / {}",
                        mib(s.rss_kib),
                        mib(e.rss_kib),
                        mib(e.peak_kib)
                    )
                }),
                "",
            ),
            (
                "replica CPU, whole life".into(),
                self.each(|r| secs(self.end_samples[r].cpu)),
                "",
            ),
            (
                "driver (the simulated fleet and the watches): CPU / peak RSS".into(),
                format!(
                    "{} / {}",
                    secs(self.driver.cpu),
                    mib(self.driver.memory.peak_kib)
                ),
                "",
            ),
            (
                "teardown".into(),
                if self.left.is_empty() {
                    "every namespace of the run deleted".into()
                } else {
                    format!("still there: {}", self.left.join(", "))
                },
                "",
            ),
        ]
    }

    /// The header and the row of the summary table.
    fn summary(&self) -> String {
        let per_change = |f: &dyn Fn(&ChangeResult) -> Duration| {
            self.changes
                .iter()
                .map(|c| format!("{:.2}", f(c).as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let sizes = self
            .reports_synced
            .values()
            .map(|v| {
                format!(
                    "{} × {}",
                    v.len(),
                    kib(v.iter().copied().max().unwrap_or(0))
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "| proxies | mode | egress scopes | settings | last ACK after the edit (s) | status \
             after the edit (s) | status after the last ACK (s) | API writes per second per \
             replica, whole run | report objects per replica (largest) |\n\
             |---|---|---|---|---|---|---|---|---|\n\
             | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            self.proxies,
            mode_name(self.mode),
            if self.shape.egress { "yes" } else { "no" },
            if self.knobs.is_empty() {
                "defaults".to_owned()
            } else {
                self.knobs.join(" ")
            },
            per_change(&|c| c.last()),
            per_change(&|c| c.status),
            per_change(&|c| c.after_last_ack()),
            (0..self.replicas.len())
                .map(|r| format!("{:.2}", self.run.rates(r).1))
                .collect::<Vec<_>>()
                .join(" / "),
            sizes,
        )
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Sotw => "state-of-the-world",
        Mode::Delta => "incremental (delta)",
    }
}

fn writes(w: &Window, r: usize) -> String {
    let s = w.per_replica.get(r).copied().unwrap_or_default();
    let errors = if s.report_errors > 0.0 {
        format!(", {:.0} failed", s.report_errors)
    } else {
        String::new()
    };
    let status = s.route_status_writes + s.policy_status_writes;
    let status = if s.policy_status_writes > 0.0 {
        format!(
            "{status:.0} ({:.0} routes, {:.0} policies)",
            s.route_status_writes, s.policy_status_writes
        )
    } else {
        format!("{status:.0}")
    };
    format!(
        "{:.0} / {status}{errors}",
        s.report_applies + s.report_deletes
    )
}

fn rate(w: &Window, r: usize) -> String {
    let (reports, all) = w.rates(r);
    format!("{reports:.2} / {all:.2}")
}

fn objects_text(objects: &BTreeMap<String, Vec<usize>>) -> String {
    if objects.is_empty() {
        return "none seen".into();
    }
    objects
        .iter()
        .map(|(replica, sizes)| {
            let (min, max) = (
                sizes.iter().copied().min().unwrap_or(0),
                sizes.iter().copied().max().unwrap_or(0),
            );
            format!(
                "{replica}: {} of {}–{} ({})",
                sizes.len(),
                kib(min),
                kib(max),
                kib(sizes.iter().sum())
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn moments(at: &[Duration]) -> String {
    if at.is_empty() {
        return "none".into();
    }
    let mut listed: Vec<String> = at
        .iter()
        .take(LISTED)
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect();
    if at.len() > LISTED {
        listed.push(format!("… ({} in all)", at.len()));
    }
    format!("{} s", listed.join(", "))
}

fn states(states: &[(Duration, RouteSeen)]) -> String {
    let mut listed: Vec<String> = states
        .iter()
        .take(LISTED)
        .map(|(at, s)| {
            let generation = s.observed.map_or("-".into(), |g| g.to_string());
            format!(
                "{:.2} s gen {generation} {}/{} {}",
                at.as_secs_f64(),
                s.acked,
                s.affected,
                s.programmed.as_deref().unwrap_or("-")
            )
        })
        .collect();
    if states.len() > LISTED {
        listed.push(format!("… ({} in all)", states.len()));
    }
    listed.join("; ")
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn kib(bytes: usize) -> String {
    format!("{:.0} KiB", bytes as f64 / 1024.0)
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use remora_xds_load::{procfs::Memory, shape_for};

    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn window(took: u64, applies: f64, status: f64) -> Window {
        let replica = |applies| Scrape {
            report_applies: applies,
            route_status_writes: status,
            route_reconciles: 4_000.0,
            route_reconcile_seconds: 1.5,
            ..Scrape::default()
        };
        Window {
            took: ms(took),
            per_replica: vec![replica(applies), replica(applies / 2.0)],
        }
    }

    fn sample_report() -> Report {
        let seen = RouteSeen {
            at: Instant::now(),
            generation: Some(2),
            observed: Some(2),
            affected: 10,
            acked: 5,
            nacked: 0,
            programmed: Some("Unknown".into()),
        };
        let change = ChangeResult {
            number: 1,
            generation: 2,
            edit_call: ms(12),
            acks: (1..=10).map(|i| ms(100 * i)).collect(),
            last_ack: vec![ms(900), ms(1000)],
            caught_up: vec![Some(ms(1400)), None],
            report_writes: vec![vec![ms(300), ms(550)], vec![]],
            status: ms(2500),
            states: vec![(ms(400), seen)],
            window: window(8000, 8.0, 4.0),
            cpu: vec![ms(700), ms(300)],
        };
        let sample = Sample {
            cpu: ms(5000),
            memory: Memory {
                rss_kib: 204_800,
                peak_kib: 307_200,
            },
        };
        Report {
            proxies: 10,
            mode: Mode::Sotw,
            shape: shape_for(10, true),
            knobs: vec![],
            route: "team-00/cart-0-http".into(),
            route_config: "cart-0.team-00.svc.cluster.local:8080".into(),
            affected: 10,
            replicas: vec!["replica-a".into(), "replica-b".into()],
            leader: 1,
            setup: (40, 50, ms(3000)),
            connect_and_sync: ms(1500),
            first_status: ms(900),
            quiet: ms(3000),
            sync: window(4000, 6.0, 2.0),
            idle: window(10_000, 1.0, 0.0),
            run: window(20_000, 20.0, 10.0),
            reports_synced: [("replica-a".to_owned(), vec![2048, 4096])].into(),
            reports_end: BTreeMap::new(),
            synced_samples: vec![sample; 2],
            end_samples: vec![sample; 2],
            changes: vec![change],
            driver: sample,
            cores: 2,
            load: (1.0, 2.5),
            left: vec![],
        }
    }

    #[test]
    fn the_report_says_where_the_time_went_and_against_which_target() {
        let text = sample_report().render();
        assert!(text.starts_with(
            "fleet-bench: 10 proxies over 2 replicas (replica-a: 5 proxies; replica-b: 5 \
             proxies, the leader), state-of-the-world, egress scopes"
        ));
        for row in [
            "| edit 1: status counted all ACKs, after the last ACK | 1.50 s | < 2 s |",
            "| edit 1: ACKs after the edit, first / p50 / p99 / last | 0.10 s / 0.50 s / 1.00 s / 1.00 s |  |",
            "| edit 1: each replica's report showed all its proxies' ACKs, after the edit (after its last ACK) | replica-a: 1.40 s (+0.50 s); replica-b: never seen |  |",
            "| edit 1: report writes seen from the edit to the status | replica-a: 0.30, 0.55 s; replica-b: none |  |",
            "| edit 1: where the time went: the last ACK after the edit / the followers' reports after their last ACK / the status after those reports | 1.00 s / 0.50 s / 1.10 s |  |",
            "| edit 1: the leader's status work: route reconciles (passes of 2 routes), their time with the writes (per pass) | 4000 (2000.0 passes), 1.50 s (0.00 s) |  |",
            "| edit 1: statuses seen after the edit: observed generation, ACKed/affected, Programmed | 0.40 s gen 2 5/10 Unknown |  |",
            "| whole run (20.00 s: idle and 1 edits): API writes per second, reports / all | replica-a: 1.00 / 1.50; replica-b: 0.50 / 1.00 | a few per second |",
            "| report objects once synced: count, body sizes, total | replica-a: 2 of 2 KiB–4 KiB (6 KiB) | < 1 MiB each |",
            "| teardown | every namespace of the run deleted |  |",
        ] {
            assert!(text.lines().any(|l| l == row), "{row} in\n{text}");
        }
        assert!(
            text.ends_with(
                "| 10 | state-of-the-world | yes | defaults | 1.00 | 2.50 | 1.50 | 1.50 / 1.00 | 2 × 4 KiB |\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn writes_name_policy_statuses_and_failures_only_when_there_are_any() {
        let mut w = window(1_000, 3.0, 2.0);
        assert_eq!(writes(&w, 0), "3 / 2");
        w.per_replica[0].policy_status_writes = 1.0;
        w.per_replica[0].report_errors = 1.0;
        assert_eq!(writes(&w, 0), "3 / 3 (2 routes, 1 policies), 1 failed");
    }

    #[test]
    fn rates_are_per_second_of_the_window() {
        let w = window(2_000, 4.0, 2.0);
        assert_eq!(w.rates(0), (2.0, 3.0));
        assert_eq!(w.rates(1), (1.0, 2.0));
        assert_eq!(w.rates(5), (0.0, 0.0));
    }
}
