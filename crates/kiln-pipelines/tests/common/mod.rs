//! Helpers of the end-to-end tests: a workflow in a temporary git repository, run on the host,
//! with what it logged and recorded.

#![allow(clippy::expect_used, clippy::unwrap_used, dead_code)] // Each test file uses some.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use kiln_pipelines::{MemoryStore, RunEvent, RunOptions, RunResult, load, run};
use tempfile::TempDir;

/// A git repository holding `files`, committed.
pub fn repo(files: &[(&str, &str)]) -> TempDir {
    let dir = TempDir::new().unwrap();
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let git = |args: &[&str]| git_in(dir.path(), args);
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "init"]);
    dir
}

/// Runs `git ARGS` in `dir` as a committer (`t <t@t>`, new repositories on `main`,
/// file-protocol submodules allowed) and panics with its message when it fails.
pub fn git_in(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "protocol.file.allow=always",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Ran {
    pub result: RunResult,
    pub events: Vec<RunEvent>,
    pub store: Arc<MemoryStore>,
}

impl Ran {
    pub fn logs(&self, job: &str) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                RunEvent::Log { job: j, line } if j == job => Some(line.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn job(&self, name: &str) -> kiln_pipelines::JobRecord {
        self.store
            .jobs()
            .into_iter()
            .map(|(_, j)| j)
            .find(|j| j.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "no job {name}: {:?}",
                    self.store
                        .jobs()
                        .iter()
                        .map(|(_, j)| &j.name)
                        .collect::<Vec<_>>()
                )
            })
    }
}

pub async fn run_in(
    repo: &Path,
    state: &Path,
    workflow: &str,
    tweak: impl FnOnce(&mut RunOptions),
) -> Ran {
    let set = load(repo, workflow).unwrap_or_else(|e| panic!("{e}"));
    let mut opts = RunOptions::new(repo, "HEAD", state);
    opts.home = state.join("home");
    tweak(&mut opts);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let store = Arc::new(MemoryStore::default());
    let result = run(set, opts, tx, store.clone()).await.unwrap();
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    Ran {
        result,
        events,
        store,
    }
}
