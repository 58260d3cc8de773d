//! Resource limits: cgroup v2 when this machine delegates a cgroup subtree to us, cgroup v1
//! when its memory hierarchy is writable (older distributions, many CI and container hosts),
//! otherwise rlimits, and a record of which one is in force.
//!
//! All are applied by a tiny `sh` prelude that runs in the instance's own process before it
//! `exec`s the real command: the prelude moves itself into the instance's cgroups (so nothing
//! the instance forks can escape them) or sets its rlimits (inherited by everything it starts).
//! This needs no `unsafe` `pre_exec` hook. Either cgroup version counts the OOM killer's kills
//! (`memory.events` in v2, `memory.oom_control` in v1), which is how an OOM kill is told apart
//! from any other SIGKILL.
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
    /// `kiln.slice` directories in the v1 hierarchies: memory always, cpu and pids when they
    /// are mounted and writable too.
    CgroupV1 {
        memory: PathBuf,
        cpu: Option<PathBuf>,
        pids: Option<PathBuf>,
    },
    Rlimit,
}

impl Enforcer {
    /// Looks for a usable cgroup v2 subtree first: the unified hierarchy at /sys/fs/cgroup,
    /// our own cgroup in it, and a `kiln.slice` child with memory, cpu and pids enabled. Then
    /// for a writable v1 memory hierarchy. Anything missing (no delegation, no write access)
    /// falls back to rlimits.
    pub(crate) fn detect() -> Self {
        if let Some(root) = cgroup_root() {
            return Self::CgroupV2 { root };
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let membership = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let slice = |controller| {
            let dir = v1_own_dir(&mountinfo, &membership, controller)?.join("kiln.slice");
            std::fs::create_dir_all(&dir).ok().map(|()| dir)
        };
        match slice("memory") {
            Some(memory) if memory.join("memory.limit_in_bytes").exists() => Self::CgroupV1 {
                memory,
                cpu: slice("cpu").filter(|d| d.join("cpu.cfs_quota_us").exists()),
                pids: slice("pids").filter(|d| d.join("pids.max").exists()),
            },
            _ => Self::Rlimit,
        }
    }
}

/// Our own cgroup's directory in the v1 hierarchy that has `controller`: its mount point
/// (from mountinfo, whose super options list the hierarchy's controllers) joined with our path
/// in it (from /proc/self/cgroup, `id:controllers:/path`) relative to the mount's root.
fn v1_own_dir(mountinfo: &str, membership: &str, controller: &str) -> Option<PathBuf> {
    let has = |list: &str| list.split(',').any(|c| c == controller);
    let ours = membership.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        has(controllers).then_some(path)
    })?;
    mountinfo.lines().find_map(|line| {
        // `id parent major:minor root mount-point options [optional...] - fstype source super`
        let (before, after) = line.split_once(" - ")?;
        let mut after = after.split_whitespace();
        let (fstype, _, super_options) = (after.next()?, after.next()?, after.next()?);
        if fstype != "cgroup" || !has(super_options) {
            return None;
        }
        let fields: Vec<&str> = before.split_whitespace().collect();
        let (root, mount_point) = (fields.get(3)?, fields.get(4)?);
        let relative = Path::new(ours).strip_prefix(root).ok()?;
        Some(Path::new(mount_point).join(relative))
    })
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
    /// The instance's cgroups, to count OOM kills and remove after exit.
    pub cgroup: Option<Cgroup>,
}

/// The cgroup directories of one instance: the one with the memory controller (in v2 the only
/// one) and, in v1, those of the other hierarchies it joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cgroup {
    pub memory: PathBuf,
    pub others: Vec<PathBuf>,
}

impl Cgroup {
    /// Which version the directories belong to, from the files the kernel put in them.
    pub(crate) fn version(&self) -> LimitsInForce {
        if self.memory.join("memory.events").exists() {
            LimitsInForce::CgroupV2
        } else {
            LimitsInForce::CgroupV1
        }
    }

    /// How many times the OOM killer killed in it: `oom_kill` in v2's `memory.events` or v1's
    /// `memory.oom_control`.
    pub(crate) fn oom_kills(&self) -> Option<u64> {
        ["memory.events", "memory.oom_control"]
            .iter()
            .find_map(|file| std::fs::read_to_string(self.memory.join(file)).ok())?
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
    }

    /// Removes the directories once their processes are gone; a leftover non-empty cgroup is
    /// harmless and reused by the next spawn.
    pub(crate) fn remove(&self) {
        for dir in std::iter::once(&self.memory).chain(&self.others) {
            let _ = std::fs::remove_dir(dir);
        }
    }

    fn prelude(&self) -> String {
        std::iter::once(&self.memory)
            .chain(&self.others)
            .map(|dir| format!("echo $$ > {}", shell_quote(&dir.join("cgroup.procs"))))
            .collect::<Vec<_>>()
            .join("; ")
    }
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
    let name = format!("{}-{}", id.service, id.instance);
    let cgroup = match enforcer {
        Enforcer::CgroupV2 { root } => {
            let dir = root.join(&name);
            write_cgroup(&dir, limits).ok().map(|()| Cgroup {
                memory: dir,
                others: Vec::new(),
            })
        }
        Enforcer::CgroupV1 { memory, cpu, pids } => write_cgroup_v1(
            &memory.join(&name),
            cpu.as_ref().map(|d| d.join(&name)),
            pids.as_ref().map(|d| d.join(&name)),
            limits,
        )
        .ok(),
        Enforcer::Rlimit => None,
    };
    if let Some(cgroup) = cgroup {
        return Prepared {
            prelude: cgroup.prelude(),
            in_force: cgroup.version(),
            cgroup: Some(cgroup),
        };
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

/// v1 spells the limits in one file per knob, `-1` for none. The memory+swap limit (when
/// swap accounting exists) is opened first, set to the memory limit last, so the kernel's rule
/// "memory ≤ memory+swap" holds at every step whatever a reused directory held before; it
/// matches v2, where `memory.max` alone leaves swap to the system's default.
fn write_cgroup_v1(
    memory: &Path,
    cpu: Option<PathBuf>,
    pids: Option<PathBuf>,
    limits: &Limits,
) -> std::io::Result<Cgroup> {
    std::fs::create_dir_all(memory)?;
    let bytes = limits
        .memory_bytes
        .map_or_else(|| "-1".to_owned(), |b| b.to_string());
    let memsw = memory.join("memory.memsw.limit_in_bytes");
    let swap_accounted = memsw.exists();
    if swap_accounted {
        std::fs::write(&memsw, "-1")?;
    }
    std::fs::write(memory.join("memory.limit_in_bytes"), &bytes)?;
    if swap_accounted {
        std::fs::write(&memsw, &bytes)?;
    }
    let mut others = Vec::new();
    if let Some(dir) = cpu {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("cpu.cfs_period_us"), CPU_PERIOD_US.to_string())?;
        let quota = limits.cpu.map_or_else(
            || "-1".to_owned(),
            |cores| {
                ((cores * CPU_PERIOD_US as f64) as u64)
                    .max(1000)
                    .to_string()
            },
        );
        std::fs::write(dir.join("cpu.cfs_quota_us"), quota)?;
        others.push(dir);
    }
    if let Some(dir) = pids {
        std::fs::create_dir_all(&dir)?;
        let max = limits
            .pids
            .map_or_else(|| "max".to_owned(), |p| p.to_string());
        std::fs::write(dir.join("pids.max"), max)?;
        others.push(dir);
    }
    Ok(Cgroup {
        memory: memory.to_owned(),
        others,
    })
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
        let cgroup = Cgroup {
            memory: dir.path().to_owned(),
            others: Vec::new(),
        };
        assert_eq!(cgroup.oom_kills(), Some(2));
        assert_eq!(cgroup.version(), LimitsInForce::CgroupV2);
    }

    #[test]
    fn cgroup_v1_files_get_kernel_formats() {
        let dir = tempfile::tempdir().unwrap();
        let (memory, cpu, pids) = (
            dir.path().join("memory/a-0"),
            dir.path().join("cpu/a-0"),
            dir.path().join("pids/a-0"),
        );
        std::fs::create_dir_all(&memory).unwrap();
        std::fs::write(memory.join("memory.memsw.limit_in_bytes"), "0").unwrap();
        let limits = Limits {
            memory_bytes: Some(1 << 20),
            cpu: Some(1.5),
            pids: Some(64),
        };
        let cgroup =
            write_cgroup_v1(&memory, Some(cpu.clone()), Some(pids.clone()), &limits).unwrap();
        let read = |p: &Path, f: &str| std::fs::read_to_string(p.join(f)).unwrap();
        assert_eq!(read(&memory, "memory.limit_in_bytes"), "1048576");
        assert_eq!(read(&memory, "memory.memsw.limit_in_bytes"), "1048576");
        assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "150000");
        assert_eq!(read(&cpu, "cpu.cfs_period_us"), "100000");
        assert_eq!(read(&pids, "pids.max"), "64");
        assert_eq!(cgroup.others, vec![cpu, pids]);
        std::fs::write(
            memory.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        )
        .unwrap();
        assert_eq!(cgroup.oom_kills(), Some(3));
        assert_eq!(cgroup.version(), LimitsInForce::CgroupV1);
        assert_eq!(cgroup.prelude().matches("cgroup.procs").count(), 3);
    }

    #[test]
    fn v1_hierarchies_are_found_from_mountinfo_and_membership() {
        let mountinfo = "\
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 /docker/abc /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 30 0:33 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
        let membership = "\
4:memory:/docker/abc/job
3:cpu,cpuacct:/user.slice
0::/
";
        assert_eq!(
            v1_own_dir(mountinfo, membership, "memory"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/job"))
        );
        assert_eq!(
            v1_own_dir(mountinfo, membership, "cpu"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/user.slice"))
        );
        assert_eq!(v1_own_dir(mountinfo, membership, "pids"), None);
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
