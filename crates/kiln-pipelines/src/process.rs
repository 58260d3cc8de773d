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
    let mut cmd = Command::new(&spec.program);
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
