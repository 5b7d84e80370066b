//! The process metrics every Prometheus client exposes (`process_*`), read from
//! `/proc/self` on each scrape, so they need no dependency and are never stale.

use std::fs;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

/// Linux reports CPU times and start times in clock ticks of 1/100 s (`USER_HZ`, fixed by
/// the kernel's ABI whatever the kernel's own tick rate).
const TICKS_PER_SECOND: f64 = 100.0;

/// What `/proc/self` says of the process, on Linux; `None` where it cannot be read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessFacts {
    /// User and system CPU time (seconds).
    pub cpu_seconds: Option<f64>,
    /// Resident memory (bytes).
    pub resident_memory_bytes: Option<u64>,
    /// Virtual memory (bytes).
    pub virtual_memory_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// Start time (seconds since the Unix epoch).
    pub start_time_seconds: Option<f64>,
}

impl ProcessFacts {
    /// Reads them now.
    pub fn read() -> ProcessFacts {
        let stat = fs::read_to_string("/proc/self/stat").ok();
        let fields = stat.as_deref().map(stat_fields).unwrap_or_default();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        let boot = fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| boot_time(&s));
        ProcessFacts {
            // Fields 14 and 15 (utime, stime), 23 (vsize), 22 (starttime), counted from 1.
            cpu_seconds: field(13)
                .zip(field(14))
                .map(|(u, s)| (u + s) as f64 / TICKS_PER_SECOND),
            resident_memory_bytes: fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| resident_bytes(&s)),
            virtual_memory_bytes: field(22),
            open_fds: fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64),
            max_fds: fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|s| max_open_files(&s)),
            start_time_seconds: field(21)
                .zip(boot)
                .map(|(ticks, boot)| boot as f64 + ticks as f64 / TICKS_PER_SECOND),
        }
    }
}

/// The fields of `/proc/self/stat` from the third (state) on, numbered as in proc(5) less
/// one: the command name in parentheses may hold spaces, so the split starts after its `)`.
fn stat_fields(stat: &str) -> Vec<&str> {
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    // Two placeholders for pid and comm keep proc(5)'s numbering.
    ["", ""]
        .into_iter()
        .chain(rest.split_whitespace())
        .collect()
}

/// `btime` of `/proc/stat`: the boot time (seconds since the epoch).
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn resident_bytes(status: &str) -> Option<u64> {
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Encodes [`ProcessFacts::read`] on each scrape, in an unprefixed registry.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let facts = ProcessFacts::read();
        if let Some(v) = facts.cpu_seconds {
            let m = ConstCounter::new(v);
            m.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent in seconds",
                None,
                m.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                facts.resident_memory_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                facts.virtual_memory_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                facts.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                facts.max_fds.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                facts.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let m = ConstGauge::new(v);
                m.encode(encoder.encode_descriptor(name, help, None, m.metric_type())?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_a_command_name_with_spaces_and_parentheses() {
        let stat = "42 (my (odd) cmd) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 \
                    1234 10485760 512";
        let f = stat_fields(stat);
        assert_eq!(f[2], "S");
        assert_eq!((f[13], f[14]), ("250", "50"));
        assert_eq!((f[21], f[22]), ("1234", "10485760"));
    }

    #[test]
    fn status_limits_and_boot_time_are_read_by_their_keys() {
        let status = "Name:\tremora\nVmRSS:\t   20480 kB\nThreads:\t4\n";
        assert_eq!(resident_bytes(status), Some(20 * 1024 * 1024));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn this_process_reads_as_running_now_with_memory_and_files() {
        let f = ProcessFacts::read();
        assert!(f.resident_memory_bytes.is_some_and(|b| b > 0), "{f:?}");
        assert!(f.open_fds.is_some_and(|n| n > 0), "{f:?}");
        assert!(f.cpu_seconds.is_some(), "{f:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after the epoch")
            .as_secs_f64();
        let start = f.start_time_seconds.expect("start time");
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start} vs {now}"
        );
    }
}
