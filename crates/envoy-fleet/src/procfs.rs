//! What the kernel says about a process, from `/proc`: its resident memory and the CPU time
//! it has used, every thread included.

use std::{fs, time::Duration};

/// Ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: u64 = 100;

/// Which process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Process {
    /// This one: local mode, the echo backends and the requests.
    Own,
    /// Another, by id.
    Pid(u32),
}

impl Process {
    fn file(self, name: &str) -> Option<String> {
        let path = match self {
            Process::Own => format!("/proc/self/{name}"),
            Process::Pid(pid) => format!("/proc/{pid}/{name}"),
        };
        fs::read_to_string(path).ok()
    }

    /// Resident memory (`VmRSS`) in KiB; `None` once the process is gone.
    pub fn rss_kib(self) -> Option<u64> {
        self.file("status")?
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    }

    /// User and system CPU time so far; `None` once the process is gone.
    pub fn cpu_time(self) -> Option<Duration> {
        cpu_of_stat(&self.file("stat")?)
    }
}

/// `utime + stime` of a `/proc/<pid>/stat` line. The command (field 2) is in parentheses and
/// may hold spaces, so fields are counted from the last `)`: state is field 3, utime 14 and
/// stime 15.
fn cpu_of_stat(stat: &str) -> Option<Duration> {
    let after_command = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_command.split_whitespace().skip(14 - 3);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis(
        (user + system) * 1000 / TICKS_PER_SECOND,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_past_a_command_with_spaces_and_parentheses() {
        let stat = "42 (envoy (x) y) S 1 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 9 0 1 2 3";
        assert_eq!(cpu_of_stat(stat), Some(Duration::from_millis(2800)));
    }

    #[test]
    fn this_process_has_memory_and_has_used_cpu() {
        assert!(Process::Own.rss_kib().is_some_and(|k| k > 0));
        assert!(Process::Own.cpu_time().is_some());
    }
}
