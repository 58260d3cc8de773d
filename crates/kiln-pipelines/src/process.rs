//! One step's process: its own process group, output line by line, a deadline and
//! cancellation that stop the whole group (SIGTERM, then SIGKILL after a grace period).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::fd::OwnedFd;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::Command;
use tokio::sync::watch;

/// How long output is still read after the step's own process exits: background children that
/// keep the pipe open must not hold the step (they are killed when the job ends, as on GitHub).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Spawn {
    pub program: String,
    /// Where `program` is, when the caller already searched the child's `PATH` for it (a
    /// step's shell is looked for before its script is written): not searched again.
    pub found: Option<PathBuf>,
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
    /// It could not start in its working directory, which does not exist: the runner's
    /// message, which names the program by the path it was found at.
    NoDirectory(String),
}

/// Runs the process, passing each output line to `on_line`. Returns how it ended and its
/// process group id (so the job can clean up what it left running).
pub(crate) async fn run(
    spec: Spawn,
    cancel: &mut watch::Receiver<bool>,
    mut on_line: impl FnMut(String),
) -> (Exit, Option<i32>) {
    let found = match spec.found.clone() {
        Some(path) => Some(path),
        None => program_on_path(&spec),
    };
    let shown = found
        .as_ref()
        .map_or_else(|| spec.program.clone(), |p| p.display().to_string());
    let mut cmd = match found {
        Some(path) => {
            let mut cmd = Command::new(path);
            cmd.arg0(&spec.program);
            cmd
        }
        None => Command::new(&spec.program),
    };
    // One pipe for both streams, read here, not by reader tasks: the log keeps the order the
    // step wrote in, and a trivial step costs two task spawns, a channel and two pipes less.
    let (reader, writer) = match std::io::pipe().and_then(|(r, w)| Ok((r, w.try_clone()?, w))) {
        Ok((reader, out, err)) => (reader, (out, err)),
        Err(e) => {
            return (
                Exit::SpawnFailed(format!("cannot create a pipe: {e}")),
                None,
            );
        }
    };
    cmd.args(&spec.args)
        .current_dir(&spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(writer.0)
        .stderr(writer.1)
        .process_group(0)
        .kill_on_drop(true);
    let spawned = cmd.spawn();
    // The command holds this process's write ends: dropped, the pipe ends when the step's
    // processes have all closed theirs.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        // The runner's words: a missing `working-directory` is not a missing shell.
        Err(_) if !spec.cwd.is_dir() => {
            return (
                Exit::NoDirectory(format!(
                    "An error occurred trying to start process '{shown}' with working directory '{}'. No such file or directory",
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
    let mut output = match pipe::Receiver::from_owned_fd(OwnedFd::from(reader)) {
        Ok(receiver) => Some(receiver),
        Err(e) => {
            on_line(format!("##[warning]the step's output cannot be read: {e}"));
            None
        }
    };
    let mut lines = LineSplitter::default();
    // Read into spare capacity: zeroing 16 KiB for every step cost more than the step's
    // usual output (one short line).
    let mut chunk = Vec::with_capacity(16 * 1024);
    let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
    let sleep = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep);
    let mut stopped = None;
    let status = loop {
        tokio::select! {
            read = read_some(&mut output, &mut chunk) => match read {
                Some(n) => lines.push(&chunk[..n], &mut on_line),
                None => output = None,
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
    let drain = read_to_end(&mut output, &mut chunk, &mut lines, &mut on_line);
    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, drain).await;
    lines.finish(&mut on_line);
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
    let path = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str());
    find_program(&spec.program, path, &spec.cwd)
}

/// Where `program` (a bare name) is on `path` (this process's `PATH` when `None`), relative
/// entries taken from `cwd`: the first executable file of that name.
pub(crate) fn find_program(program: &str, path: Option<&str>, cwd: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') || program.is_empty() {
        return None;
    }
    let path = match path {
        Some(v) => std::ffi::OsString::from(v),
        None => std::env::var_os("PATH")?,
    };
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| cwd.join(dir).join(program))
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

/// Reads what the pipe has into `chunk` (emptied first, its capacity kept): `Some(n)` bytes,
/// `None` at its end (or on an error, which ends the output the same way); pends forever once
/// there is no pipe, so the caller's `select!` waits on its other branches.
async fn read_some(output: &mut Option<pipe::Receiver>, chunk: &mut Vec<u8>) -> Option<usize> {
    let Some(receiver) = output else {
        return std::future::pending().await;
    };
    chunk.clear();
    // `read_buf` is cancel-safe: a read that loses a `select!` has taken nothing.
    match receiver.read_buf(chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}

/// Reads the rest of the output as lines; at once when the pipe has already ended.
async fn read_to_end(
    output: &mut Option<pipe::Receiver>,
    chunk: &mut Vec<u8>,
    lines: &mut LineSplitter,
    on_line: &mut impl FnMut(String),
) {
    while output.is_some() {
        match read_some(output, chunk).await {
            Some(n) => lines.push(&chunk[..n], on_line),
            None => *output = None,
        }
    }
}

/// Cuts a byte stream into lines as the runner reads them (`StreamReader.ReadLine`): a line
/// ends at `\n`, `\r\n` or a lone `\r`, so each frame of a progress bar redrawn with `\r` is
/// a line of its own, and a workflow command after one is read.
#[derive(Default)]
struct LineSplitter {
    partial: Vec<u8>,
    /// The last byte seen was a `\r` that ended a line: a `\n` right after it ends nothing.
    after_cr: bool,
}

impl LineSplitter {
    fn push(&mut self, mut bytes: &[u8], on_line: &mut impl FnMut(String)) {
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
        }
        while let Some(end) = bytes.iter().position(|b| matches!(b, b'\n' | b'\r')) {
            if self.partial.is_empty() {
                on_line(line_text(&bytes[..end]));
            } else {
                self.partial.extend_from_slice(&bytes[..end]);
                on_line(line_text(&self.partial));
                self.partial.clear();
            }
            let cr = bytes[end] == b'\r';
            bytes = &bytes[end + 1..];
            if cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.partial.extend_from_slice(bytes);
    }

    /// The last line, when the output did not end with a line end.
    fn finish(&mut self, on_line: &mut impl FnMut(String)) {
        if !self.partial.is_empty() {
            on_line(line_text(&self.partial));
            self.partial.clear();
        }
        self.after_cr = false;
    }
}

fn line_text(line: &[u8]) -> String {
    String::from_utf8_lossy(line).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn spawn(program: &str, cwd: &std::path::Path, path: Option<&str>) -> Spawn {
        Spawn {
            program: program.to_owned(),
            found: None,
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

    #[tokio::test]
    async fn stdout_and_stderr_are_logged_in_the_order_the_step_wrote_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spawn("sh", dir.path(), None);
        spec.args = vec![
            "-c".to_owned(),
            "for i in 1 2 3; do echo out$i; echo err$i >&2; done; printf 'no newline'".to_owned(),
        ];
        let (_tx, mut cancel) = watch::channel(false);
        let mut lines = Vec::new();
        let (exit, _) = run(spec, &mut cancel, |l| lines.push(l)).await;
        assert_eq!(exit, Exit::Code(0));
        assert_eq!(
            lines,
            ["out1", "err1", "out2", "err2", "out3", "err3", "no newline"]
        );
    }

    /// When the pipe ended before the step's exit was seen, nothing is left to wait for: the
    /// step must not sit out the drain's time limit (every trivial step did, once).
    #[test]
    fn an_output_that_already_ended_is_drained_at_once() {
        let mut lines = LineSplitter::default();
        let mut chunk = Vec::with_capacity(16);
        let mut seen = Vec::new();
        let mut on_line = |l| seen.push(l);
        let mut ended = None;
        let drain = std::pin::pin!(read_to_end(
            &mut ended,
            &mut chunk,
            &mut lines,
            &mut on_line
        ));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(drain.poll(&mut cx).is_ready());
    }

    proptest::proptest! {
        /// However the pipe cuts the output into reads, the lines are those of the whole.
        #[test]
        fn lines_do_not_depend_on_how_the_output_is_cut(
            text in "[a-c\r\n]{0,60}",
            cuts in proptest::collection::vec(0usize..60, 0..6),
        ) {
            let bytes = text.as_bytes();
            let mut whole = Vec::new();
            let mut splitter = LineSplitter::default();
            splitter.push(bytes, &mut |l| whole.push(l));
            splitter.finish(&mut |l| whole.push(l));
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut splitter = LineSplitter::default();
            let mut start = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                splitter.push(&bytes[start..cut], &mut |l| pieces.push(l));
                start = cut;
            }
            splitter.finish(&mut |l| pieces.push(l));
            proptest::prop_assert_eq!(&pieces, &whole);
            // `ReadLine`'s lines: `\r\n`, `\r` and `\n` each end one.
            let expected: Vec<String> = text
                .replace("\r\n", "\n")
                .replace('\r', "\n")
                .split_inclusive('\n')
                .map(|l| l.trim_end_matches('\n').to_owned())
                .collect();
            proptest::prop_assert_eq!(whole, expected);
        }
    }
}
