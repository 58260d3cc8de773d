//! Resource limits: cgroup v2 when this machine delegates a cgroup subtree to us, otherwise
//! rlimits, and a record of which one is in force.
//!
//! Both are applied by a tiny `sh` prelude that runs in the instance's own process before it
//! `exec`s the real command: the prelude moves itself into the instance's cgroup (so nothing
//! the instance forks can escape it) or sets its rlimits (inherited by everything it starts).
//! This needs no `unsafe` `pre_exec` hook.
//!
//! rlimit caveats: memory uses RLIMIT_DATA (heap and private mappings since Linux 4.7) rather
//! than RLIMIT_AS, which breaks runtimes that reserve large virtual ranges (V8, Go, the JVM);
//! an allocation beyond it fails instead of triggering an OOM kill. Pids use RLIMIT_NPROC,
//! which counts all of the user's processes and does not apply to root. CPU has no rlimit
//! equivalent and is not enforced.

use std::path::{Path, PathBuf};

use crate::event::{InstanceId, LimitsInForce};
use crate::spec::Limits;

/// CPU period for `cpu.max`, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// How this supervisor can enforce limits, decided once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Enforcer {
    /// A delegated cgroup v2 directory whose children get memory, cpu and pids controllers.
    CgroupV2 {
        root: PathBuf,
    },
    Rlimit,
}

impl Enforcer {
    /// Looks for a usable cgroup v2 subtree: the unified hierarchy at /sys/fs/cgroup, our own
    /// cgroup in it, and a `kiln.slice` child with memory, cpu and pids enabled. Anything
    /// missing (v1 or hybrid hosts, no delegation, no write access) falls back to rlimits.
    pub(crate) fn detect() -> Self {
        match cgroup_root() {
            Some(root) => Self::CgroupV2 { root },
            None => Self::Rlimit,
        }
    }
}

fn cgroup_root() -> Option<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let relative = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let ours = base.join(relative.trim_start_matches('/'));
    let controllers = std::fs::read_to_string(ours.join("cgroup.controllers")).ok()?;
    let needed = ["memory", "cpu", "pids"];
    if !needed
        .iter()
        .all(|c| controllers.split_whitespace().any(|have| have == *c))
    {
        return None;
    }
    // Our own cgroup holds processes (us), so by the "no internal processes" rule the limits
    // must live in a sibling-free child subtree: kiln.slice, with controllers enabled in it.
    let enable = "+memory +cpu +pids";
    std::fs::write(ours.join("cgroup.subtree_control"), enable).ok()?;
    let slice = ours.join("kiln.slice");
    std::fs::create_dir_all(&slice).ok()?;
    std::fs::write(slice.join("cgroup.subtree_control"), enable).ok()?;
    Some(slice)
}

/// Limits prepared for one spawn of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prepared {
    /// Shell commands to run before `exec`; empty when there is nothing to apply.
    pub prelude: String,
    pub in_force: LimitsInForce,
    /// The instance's cgroup, to read `memory.events` and remove after exit.
    pub cgroup: Option<PathBuf>,
}

/// Prepares `limits` for instance `id`. A cgroup that cannot be set up degrades to rlimits
/// rather than refusing to run the service.
pub(crate) fn prepare(enforcer: &Enforcer, id: &InstanceId, limits: &Limits) -> Prepared {
    if limits.is_empty() {
        return Prepared {
            prelude: String::new(),
            in_force: LimitsInForce::None,
            cgroup: None,
        };
    }
    if let Enforcer::CgroupV2 { root } = enforcer {
        let dir = root.join(format!("{}-{}", id.service, id.instance));
        if write_cgroup(&dir, limits).is_ok() {
            return Prepared {
                prelude: format!("echo $$ > {}", shell_quote(&dir.join("cgroup.procs"))),
                in_force: LimitsInForce::CgroupV2,
                cgroup: Some(dir),
            };
        }
    }
    Prepared {
        prelude: rlimit_prelude(limits),
        in_force: LimitsInForce::Rlimit,
        cgroup: None,
    }
}

fn write_cgroup(dir: &Path, limits: &Limits) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let max = |v: Option<u64>| v.map_or_else(|| "max".to_owned(), |v| v.to_string());
    std::fs::write(dir.join("memory.max"), max(limits.memory_bytes))?;
    std::fs::write(dir.join("pids.max"), max(limits.pids))?;
    let cpu = limits.cpu.map_or_else(
        || format!("max {CPU_PERIOD_US}"),
        |cores| {
            format!(
                "{} {CPU_PERIOD_US}",
                ((cores * CPU_PERIOD_US as f64) as u64).max(1000)
            )
        },
    );
    std::fs::write(dir.join("cpu.max"), cpu)
}

/// `ulimit` lines for the memory and pids limits. dash spells the process limit `-p`, bash
/// `-u`; trying `-u` first and falling back covers both.
pub(crate) fn rlimit_prelude(limits: &Limits) -> String {
    let mut lines = Vec::new();
    if let Some(bytes) = limits.memory_bytes {
        lines.push(format!("ulimit -d {}", bytes.div_ceil(1024)));
    }
    if let Some(pids) = limits.pids {
        lines.push(format!(
            "{{ ulimit -u {pids} 2>/dev/null || ulimit -p {pids}; }}"
        ));
    }
    lines.join("; ")
}

/// The `oom_kill` counter of a cgroup, if it has one.
pub(crate) fn oom_kills(cgroup: &Path) -> Option<u64> {
    let events = std::fs::read_to_string(cgroup.join("memory.events")).ok()?;
    events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

/// Removes an instance's cgroup once its processes are gone; a leftover non-empty cgroup is
/// harmless and reused by the next spawn.
pub(crate) fn remove_cgroup(cgroup: &Path) {
    let _ = std::fs::remove_dir(cgroup);
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rlimit_prelude_runs_in_the_system_shell() {
        let limits = Limits {
            memory_bytes: Some(512 * 1024 * 1024),
            cpu: Some(0.5),
            pids: Some(4000),
        };
        let prelude = rlimit_prelude(&limits);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{prelude}; ulimit -d"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "524288");
    }

    #[test]
    fn cgroup_files_get_kernel_formats() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            memory_bytes: Some(1 << 20),
            cpu: Some(0.5),
            pids: None,
        };
        write_cgroup(dir.path(), &limits).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert_eq!(read("memory.max"), "1048576");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("pids.max"), "max");
        std::fs::write(
            dir.path().join("memory.events"),
            "low 0\noom 1\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(oom_kills(dir.path()), Some(2));
    }

    #[test]
    fn no_limits_means_nothing_in_force() {
        let id = InstanceId {
            service: "a".into(),
            instance: 0,
        };
        let prepared = prepare(&Enforcer::Rlimit, &id, &Limits::default());
        assert_eq!(prepared.in_force, LimitsInForce::None);
        assert!(prepared.prelude.is_empty());
    }
}
