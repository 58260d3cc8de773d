//! Pidfiles: one JSON record per running instance in `state_dir/run/<service>-<instance>.json`,
//! so that after a `kill -9` of the control plane the next one can adopt or clean up what was
//! left running.
//!
//! A record names the process by pid *and* start time (clock ticks since boot, from
//! `/proc/<pid>/stat`); a pid whose start time differs is someone else's process and is never
//! signalled.

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::event::InstanceId;
use crate::process::signal_group;
use crate::procfs;

/// What the control plane needs to recognise, adopt or kill an instance it did not spawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PidRecord {
    pub service: String,
    pub instance: u32,
    pub pid: u32,
    pub pgid: u32,
    pub port: u16,
    pub start_ticks: u64,
    pub spec_hash: String,
    pub release: String,
    /// The instance's memory cgroup (in v2 its only one).
    pub cgroup: Option<PathBuf>,
    /// In cgroup v1, its directories in the other hierarchies (cpu, pids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_cgroups: Vec<PathBuf>,
}

impl PidRecord {
    pub(crate) fn id(&self) -> InstanceId {
        InstanceId {
            service: self.service.clone(),
            instance: self.instance,
        }
    }

    pub(crate) fn cgroup(&self) -> Option<crate::limits::Cgroup> {
        self.cgroup.as_ref().map(|memory| crate::limits::Cgroup {
            memory: memory.clone(),
            others: self.other_cgroups.clone(),
        })
    }

    /// Whether the recorded process is still the one running under that pid.
    pub(crate) fn is_alive(&self) -> bool {
        procfs::is_same_running(self.pid, self.start_ticks)
    }
}

pub(crate) fn run_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("run")
}

fn record_path(run_dir: &Path, id: &InstanceId) -> PathBuf {
    run_dir.join(format!("{}-{}.json", id.service, id.instance))
}

/// Writes a record atomically (temp file + rename), so a crash never leaves half a record.
pub(crate) fn write(run_dir: &Path, record: &PidRecord) -> std::io::Result<()> {
    let path = record_path(run_dir, &record.id());
    let temp = path.with_extension("json.tmp");
    std::fs::write(&temp, serde_json::to_vec_pretty(record)?)?;
    std::fs::rename(temp, path)
}

/// Forgets an instance: its record and its FIFOs.
pub(crate) fn remove(run_dir: &Path, id: &InstanceId) {
    let (stdout, stderr) = crate::process::fifo_paths(run_dir, id);
    for path in [record_path(run_dir, id), stdout, stderr] {
        // Already gone is fine.
        let _ = std::fs::remove_file(path);
    }
}

/// Every readable record; unreadable files are skipped (and left for a human to look at).
pub(crate) fn scan(run_dir: &Path) -> Vec<PidRecord> {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .collect()
}

/// SIGKILLs what is left of a recorded instance: its whole group if the leader still runs, or
/// the group's surviving members (started no earlier than the leader) if only they remain.
/// Returns whether anything was signalled.
pub(crate) fn kill_leftovers(record: &PidRecord) -> bool {
    let Ok(pgid) = i32::try_from(record.pgid) else {
        return false;
    };
    // While any member lives, Linux does not reuse the group id as a pid, so `killpg` on a
    // group with verified members cannot hit a stranger.
    if record.is_alive() || !procfs::group_members(pgid, record.start_ticks).is_empty() {
        signal_group(record.pgid, Signal::SIGKILL);
        return true;
    }
    false
}

/// Kills every instance a dead control plane left behind under `state_dir` and removes their
/// records; for `kiln down` when no control plane is running. Returns the ids it killed.
pub fn cleanup_orphans(state_dir: &Path) -> Vec<InstanceId> {
    let run = run_dir(state_dir);
    let mut killed = Vec::new();
    for record in scan(&run) {
        if kill_leftovers(&record) {
            killed.push(record.id());
        }
        if let Some(cgroup) = record.cgroup() {
            cgroup.remove();
        }
        remove(&run, &record.id());
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_strangers_are_never_signalled() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let record = PidRecord {
            service: "api".into(),
            instance: 2,
            pid: me,
            // Above any pid this machine hands out, so even a bug cannot signal a real group.
            pgid: 4_194_304 + 1,
            port: 1234,
            // Our own pid with a start time that is not ours: a reused pid.
            start_ticks: procfs::stat(me).unwrap().start_ticks + 1,
            spec_hash: "h".into(),
            release: "r".into(),
            cgroup: None,
            other_cgroups: Vec::new(),
        };
        write(dir.path(), &record).unwrap();
        assert_eq!(scan(dir.path()), vec![record.clone()]);
        assert!(!record.is_alive());
        assert!(!kill_leftovers(&record));
        remove(dir.path(), &record.id());
        assert!(scan(dir.path()).is_empty());
    }
}
