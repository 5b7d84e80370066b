//! What the kernel says about a process: resident memory, CPU time, the open-files limit.
//! Read from `/proc`, so the numbers are the ones `ps` and `top` show, and they cover every
//! thread of the process.

use std::{fs, process::Command, time::Duration};

/// Clock ticks per second of the CPU times in `/proc/<pid>/stat`. Linux fixes this
/// (`USER_HZ`) at 100 for user space on every architecture we run on.
const USER_HZ: f64 = 100.0;

/// Resident memory of a process, in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the most that was ever resident.
    pub peak_kib: u64,
}

/// A process's memory, or `None` once it is gone.
pub fn memory(pid: u32) -> Option<Memory> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        peak_kib: field("VmHWM:")?,
    })
}

/// User plus system CPU time a process has used so far, all threads together.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces; the fields after its
    // closing parenthesis start with field 3 (state), so utime (14) and stime (15) are the
    // 12th and 13th of them.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / USER_HZ))
}

/// Makes sure this process may hold `needed` open files. When the soft limit is lower, it is
/// raised towards the hard limit with util-linux's `prlimit`, which needs no privilege for
/// that and keeps this crate free of `unsafe` system calls. Children inherit the limit.
pub fn ensure_open_files(needed: u64) -> Result<(), String> {
    let (soft, hard) = open_files_limit()?;
    if soft >= needed {
        return Ok(());
    }
    if hard < needed {
        return Err(format!(
            "{needed} open files are needed but the hard limit is {hard}; raise it (e.g. in \
             /etc/security/limits.conf) or use fewer proxies"
        ));
    }
    let raised = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={hard}:{hard}"))
        .status();
    let (soft, _) = open_files_limit()?;
    if soft >= needed {
        return Ok(());
    }
    Err(format!(
        "{needed} open files are needed, the soft limit is {soft} and `prlimit` could not \
         raise it ({raised:?}); run `ulimit -n {hard}` first"
    ))
}

/// The soft and hard limits on open files of this process.
fn open_files_limit() -> Result<(u64, u64), String> {
    let limits = fs::read_to_string("/proc/self/limits")
        .map_err(|e| format!("cannot read /proc/self/limits: {e}"))?;
    parse_open_files(&limits).ok_or_else(|| "no 'Max open files' in /proc/self/limits".into())
}

fn parse_open_files(limits: &str) -> Option<(u64, u64)> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut values = line["Max open files".len()..].split_whitespace();
    let parse = |v: &str| {
        if v == "unlimited" {
            Some(u64::MAX)
        } else {
            v.parse().ok()
        }
    };
    Some((parse(values.next()?)?, parse(values.next()?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_open_files_line() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max cpu time              unlimited            unlimited            seconds\n\
                      Max open files            1024                 unlimited            files\n";
        assert_eq!(parse_open_files(limits), Some((1024, u64::MAX)));
        assert_eq!(parse_open_files("Max processes 10 10 processes"), None);
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        let m = memory(pid).expect("own status");
        assert!(m.rss_kib > 0 && m.peak_kib >= m.rss_kib);
        assert!(cpu_time(pid).is_some());
        assert!(open_files_limit().is_ok());
    }
}
