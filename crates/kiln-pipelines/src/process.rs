//! One step's process: its own process group, output line by line, a deadline and
//! cancellation that stop the whole group (SIGTERM, then SIGKILL after a grace period).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

/// How long output is still read after the step's own process exits: background children that
/// keep the pipe open must not hold the step (they are killed when the job ends, as on GitHub).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Spawn {
    pub program: String,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    pub grace: Duration,
}

/// How the process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Exit {
    /// It exited with this code (a signal death reads as 128 + signal, like a shell).
    Code(i32),
    /// The deadline passed and the group was stopped.
    TimedOut,
    /// The job was cancelled and the group was stopped.
    Cancelled,
    /// It could not start.
    SpawnFailed(String),
}

/// Runs the process, passing each output line to `on_line`. Returns how it ended and its
/// process group id (so the job can clean up what it left running).
pub(crate) async fn run(
    spec: Spawn,
    cancel: &mut watch::Receiver<bool>,
    mut on_line: impl FnMut(String),
) -> (Exit, Option<i32>) {
    let mut cmd = match program_on_path(&spec) {
        Some(path) => {
            let mut cmd = Command::new(path);
            cmd.arg0(&spec.program);
            cmd
        }
        None => Command::new(&spec.program),
    };
    cmd.args(&spec.args)
        .current_dir(&spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        // The runner's words: a missing `working-directory` is not a missing shell.
        Err(_) if !spec.cwd.is_dir() => {
            return (
                Exit::SpawnFailed(format!(
                    "An error occurred trying to start process '{}' with working directory '{}'. No such file or directory",
                    spec.program,
                    spec.cwd.display()
                )),
                None,
            );
        }
        Err(e) => return (Exit::SpawnFailed(format!("{}: {e}", spec.program)), None),
    };
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());
    // `kill_on_drop` reaches only the direct child: if this future is dropped (the whole run is
    // abandoned, e.g. `kiln ci run` interrupted), the guard kills the rest of the group too.
    let mut guard = GroupGuard(pgid);
    let (tx, mut rx) = mpsc::unbounded_channel();
    if let Some(out) = child.stdout.take() {
        tokio::spawn(read_lines(out, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(read_lines(err, tx.clone()));
    }
    drop(tx);
    let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
    let sleep = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep);
    let mut stopped = None;
    let mut lines_open = true;
    let status = loop {
        tokio::select! {
            line = rx.recv(), if lines_open => match line {
                Some(l) => on_line(l),
                None => lines_open = false,
            },
            status = child.wait() => break status,
            () = &mut sleep, if stopped.is_none() => {
                stopped = Some(Exit::TimedOut);
                stop_group(pgid, &mut child, spec.grace).await;
            }
            changed = cancel.changed(), if stopped.is_none() => {
                if changed.is_err() || *cancel.borrow() {
                    stopped = Some(Exit::Cancelled);
                    stop_group(pgid, &mut child, spec.grace).await;
                }
            }
        }
    };
    // Finished or stopped as designed: background leftovers are the job's to clean up.
    guard.0 = None;
    // Output written just before exit is still in the pipe.
    let drain = async {
        while let Some(line) = rx.recv().await {
            on_line(line);
        }
    };
    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, drain).await;
    if let Some(exit) = stopped {
        return (exit, pgid);
    }
    let exit = match status {
        Ok(s) => Exit::Code(exit_code(s)),
        Err(e) => Exit::SpawnFailed(e.to_string()),
    };
    (exit, pgid)
}

/// The file a bare program name runs, searched on the `PATH` the child will have (the step's
/// own, with `GITHUB_PATH` entries) and relative entries taken from its working directory.
///
/// Why not let std search: when the child's environment sets `PATH`, std must search that
/// `PATH` itself and so starts the child with fork + exec, which copies this (large,
/// multi-threaded) process's page tables for every step. Given a path, std uses posix_spawn
/// (vfork), several times cheaper. `None` leaves the search (and its error) to std.
fn program_on_path(spec: &Spawn) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if spec.program.contains('/') || spec.program.is_empty() {
        return None;
    }
    let path = match spec.env.iter().rev().find(|(k, _)| k == "PATH") {
        Some((_, v)) => std::ffi::OsString::from(v),
        None => std::env::var_os("PATH")?,
    };
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| spec.cwd.join(dir).join(&spec.program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// SIGTERM to the group, then SIGKILL if the step's process outlives the grace period.
async fn stop_group(pgid: Option<i32>, child: &mut tokio::process::Child, grace: Duration) {
    let Some(pgid) = pgid else { return };
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    // Whatever else is left in the group gets no second chance either.
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
}

/// SIGKILLs a step's process group when dropped while armed (the step's future was dropped
/// before the process ended).
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            kill_group(pgid);
        }
    }
}

/// Kills what a step left running in its group (at job end, as GitHub cleans up orphans).
pub(crate) fn kill_group(pgid: i32) {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
}

async fn read_lines(stream: impl AsyncRead + Unpin, tx: mpsc::UnboundedSender<String>) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    buf.pop();
                }
                if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn spawn(program: &str, cwd: &std::path::Path, path: Option<&str>) -> Spawn {
        Spawn {
            program: program.to_owned(),
            args: Vec::new(),
            cwd: cwd.to_owned(),
            env: path
                .map(|p| vec![("PATH".to_owned(), p.to_owned())])
                .unwrap_or_default(),
            timeout: None,
            grace: Duration::from_secs(1),
        }
    }

    fn file(dir: &std::path::Path, name: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\necho found\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_bare_name_is_found_on_the_childs_path_skipping_files_it_could_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (dir.path().join("first"), dir.path().join("second"));
        std::fs::create_dir_all(&first).unwrap();
        std::fs::create_dir_all(&second).unwrap();
        file(&first, "tool", 0o644);
        let runnable = file(&second, "tool", 0o755);
        let path = format!("{}::{}", first.display(), second.display());
        let found = program_on_path(&spawn("tool", dir.path(), Some(&path)));
        assert_eq!(found, Some(runnable));
        assert_eq!(
            program_on_path(&spawn("missing", dir.path(), Some(&path))),
            None
        );
    }

    #[test]
    fn relative_path_entries_are_taken_from_the_working_directory_and_paths_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        let runnable = file(&dir.path().join("bin"), "tool", 0o755);
        assert_eq!(
            program_on_path(&spawn("tool", dir.path(), Some("bin"))),
            Some(runnable)
        );
        assert_eq!(
            program_on_path(&spawn("./tool", dir.path(), Some("bin"))),
            None
        );
    }

    #[tokio::test]
    async fn a_program_found_on_the_step_path_runs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        let script = dir.path().join("bin").join("named");
        std::fs::write(&script, "#!/bin/sh\necho \"$0\"\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let host = std::env::var("PATH").unwrap_or_default();
        let path = format!("{}:{host}", dir.path().join("bin").display());
        let (_tx, mut cancel) = watch::channel(false);
        let mut lines = Vec::new();
        let (exit, _) = run(spawn("named", dir.path(), Some(&path)), &mut cancel, |l| {
            lines.push(l)
        })
        .await;
        assert_eq!(exit, Exit::Code(0));
        assert_eq!(lines, vec![script.display().to_string()]);
    }
}
