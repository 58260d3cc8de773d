//! Reading `/proc`: process identity (start time), liveness, CPU and memory use, and process
//! group membership.
//!
//! A pid alone never identifies a process — pids are reused. Everywhere the supervisor acts on a
//! process it did not just spawn, it checks the pid's start time (field 22 of
//! `/proc/<pid>/stat`, in clock ticks since boot) against the one it recorded.

use std::time::Duration;

/// Linux reports /proc times in USER_HZ, which is 100 on every architecture we run on.
const TICKS_PER_SECOND: f64 = 100.0;

/// The parts of `/proc/<pid>/stat` the supervisor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub state: char,
    pub pgrp: i32,
    pub utime: u64,
    pub stime: u64,
    pub start_ticks: u64,
    /// Resident set size in pages (field 24).
    pub rss_pages: u64,
}

impl ProcStat {
    /// Whether the process still runs (a zombie has exited; only its entry remains).
    pub fn is_running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }

    pub fn cpu_seconds(&self) -> f64 {
        (self.utime + self.stime) as f64 / TICKS_PER_SECOND
    }
}

/// Parses a `/proc/<pid>/stat` line. The command name (field 2) may contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(line: &str) -> Option<ProcStat> {
    let rest = &line[line.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (state); field N is at index N - 3.
    let field = |n: usize| fields.get(n - 3).copied();
    Some(ProcStat {
        state: field(3)?.chars().next()?,
        pgrp: field(5)?.parse().ok()?,
        utime: field(14)?.parse().ok()?,
        stime: field(15)?.parse().ok()?,
        start_ticks: field(22)?.parse().ok()?,
        rss_pages: field(24).and_then(|f| f.parse().ok()).unwrap_or(0),
    })
}

/// The stat of `pid`, or `None` when there is no such process.
pub(crate) fn stat(pid: u32) -> Option<ProcStat> {
    let line = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&line)
}

/// Whether `pid` is the very process that started at `start_ticks` and has not exited.
pub(crate) fn is_same_running(pid: u32, start_ticks: u64) -> bool {
    stat(pid).is_some_and(|s| s.is_running() && s.start_ticks == start_ticks)
}

/// Live processes in process group `pgid` that started no earlier than `not_before_ticks`
/// (anything older cannot be one of ours, whatever its group says).
pub(crate) fn group_members(pgid: i32, not_before_ticks: u64) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            stat(pid).is_some_and(|s| {
                s.pgrp == pgid && s.is_running() && s.start_ticks >= not_before_ticks
            })
        })
        .collect()
}

/// Every running process by process group, from one pass over `/proc`. `status()` of many
/// instances reads this once instead of scanning `/proc` per instance (which made 200 instances
/// cost a whole core).
pub(crate) fn scan_groups() -> std::collections::HashMap<i32, Vec<ProcStat>> {
    let mut groups: std::collections::HashMap<i32, Vec<ProcStat>> =
        std::collections::HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return groups;
    };
    for pid in entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        if let Some(s) = stat(pid).filter(ProcStat::is_running) {
            groups.entry(s.pgrp).or_default().push(s);
        }
    }
    groups
}

/// CPU seconds and resident bytes of group `pgid` from a [`scan_groups`] result.
pub(crate) fn group_usage_in(
    groups: &std::collections::HashMap<i32, Vec<ProcStat>>,
    pgid: u32,
    not_before_ticks: u64,
) -> (f64, u64) {
    let page = page_size();
    i32::try_from(pgid)
        .ok()
        .and_then(|g| groups.get(&g))
        .into_iter()
        .flatten()
        .filter(|s| s.start_ticks >= not_before_ticks)
        .fold((0.0, 0), |(cpu, rss), s| {
            (cpu + s.cpu_seconds(), rss + s.rss_pages * page)
        })
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(4096)
}

/// How long ago a process that started at `start_ticks` started, by the boot clock.
pub(crate) fn age(start_ticks: u64) -> Option<Duration> {
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    let since_boot: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    let started = start_ticks as f64 / TICKS_PER_SECOND;
    Some(Duration::from_secs_f64((since_boot - started).max(0.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let line = "1234 (we ird) name)) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    7 3 0 0 20 0 1 0 98765 1000 200 18446744073709551615";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.pgrp, 1234);
        assert_eq!((stat.utime, stat.stime), (7, 3));
        assert_eq!(stat.start_ticks, 98765);
        assert!(stat.is_running());
    }

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        let stat = stat(me).unwrap();
        assert!(is_same_running(me, stat.start_ticks));
        assert!(!is_same_running(me, stat.start_ticks + 1));
        assert!(stat.rss_pages > 0);
        let groups = scan_groups();
        let (cpu, rss) = group_usage_in(&groups, u32::try_from(stat.pgrp).unwrap(), 0);
        assert!(rss > 0 && cpu >= 0.0);
    }
}
