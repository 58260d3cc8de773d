//! Running one local command: its own process group, bounded output capture, and a timeout
//! that takes down everything the command started.
//!
//! The child is made leader of a new process group so that on timeout (or when the caller's
//! future is dropped) the whole tree — including grandchildren a shell put in the background —
//! can be signalled at once with `killpg`.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// At most this many bytes of each of stdout and stderr are kept.
pub(crate) const OUTPUT_LIMIT: usize = 1024 * 1024;

/// How long a process group gets between SIGTERM and SIGKILL.
const TERMINATE_GRACE: Duration = Duration::from_secs(5);

/// How long to wait for output pipes to close once the group has been killed. A process that
/// left the group (e.g. via `setsid`) may hold them open forever.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// A command to run: a shell script or an argv.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CommandLine {
    /// Run with `sh -c`.
    Shell(String),
    /// Run directly, without a shell; never empty.
    Argv(Vec<String>),
}

impl CommandLine {
    fn to_command(&self) -> Command {
        match self {
            Self::Shell(script) => {
                let mut command = Command::new("sh");
                command.arg("-c").arg(script);
                command
            }
            Self::Argv(argv) => match argv.split_first() {
                Some((program, args)) => {
                    let mut command = Command::new(program);
                    command.args(args);
                    command
                }
                // Parsing never builds an empty argv; if one slips through, spawning the empty
                // program name fails with a clear error instead of panicking here.
                None => Command::new(""),
            },
        }
    }
}

impl std::fmt::Display for CommandLine {
    /// Shows the command the way a user would type it into a shell.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Shell(script) => write!(f, "sh -c {}", shell_quote(script)),
            Self::Argv(argv) => {
                let quoted: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
                f.write_str(&quoted.join(" "))
            }
        }
    }
}

/// Quotes `word` for display so that it reads back as one shell word.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Everything needed to run one command.
#[derive(Debug)]
pub(crate) struct RunRequest<'a> {
    pub command: &'a CommandLine,
    pub workdir: &'a Path,
    /// Added to (and overriding) the inherited environment.
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
}

/// Bytes captured from one output stream.
#[derive(Debug, Default, Clone)]
pub(crate) struct Captured {
    pub bytes: Vec<u8>,
    /// Whether output beyond [`OUTPUT_LIMIT`] was dropped.
    pub truncated: bool,
}

impl Captured {
    /// The captured bytes as text, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// A command that ran to completion (successfully or not).
#[derive(Debug)]
pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: Captured,
    pub stderr: Captured,
}

/// Why a command did not run to completion.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    /// The command could not be started; nothing ran.
    #[error("cannot run `{command}` in {workdir}: {source}")]
    Spawn {
        command: String,
        workdir: String,
        source: std::io::Error,
    },
    /// Waiting for the command failed after it started.
    #[error("lost track of `{command}`: {source}")]
    Wait {
        command: String,
        source: std::io::Error,
    },
    /// The command ran past its timeout and its process group was killed.
    #[error("`{command}` timed out after {} ms and was killed", timeout.as_millis())]
    TimedOut {
        command: String,
        timeout: Duration,
        stdout: Captured,
        stderr: Captured,
    },
}

/// Runs a command with stdin from /dev/null, capturing stdout (first 1 MiB) and stderr
/// (last 1 MiB), and kills its process group if it outlives `timeout`.
///
/// The timeout covers both the command's exit and the closing of its output pipes, so a
/// background process that keeps stdout open counts as still running.
pub(crate) async fn run(request: RunRequest<'_>) -> Result<Finished, RunError> {
    let deadline = Instant::now() + request.timeout;
    let mut command = request.command.to_command();
    command
        .current_dir(request.workdir)
        .envs(request.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|source| RunError::Spawn {
        command: request.command.to_string(),
        workdir: request.workdir.display().to_string(),
        source,
    })?;
    let mut group = GroupGuard::new(&child);
    let mut stdout = spawn_capture(child.stdout.take(), Keep::Head);
    let mut stderr = spawn_capture(child.stderr.take(), Keep::Tail);

    let completed = tokio::time::timeout_at(deadline, async {
        let status = child.wait().await?;
        let out = join_capture(&mut stdout).await;
        let err = join_capture(&mut stderr).await;
        Ok::<_, std::io::Error>((status, out, err))
    })
    .await;

    match completed {
        Ok(Ok((status, stdout, stderr))) => {
            group.disarm();
            Ok(Finished {
                status,
                stdout,
                stderr,
            })
        }
        Ok(Err(source)) => Err(RunError::Wait {
            command: request.command.to_string(),
            source,
        }),
        Err(_elapsed) => {
            terminate(&mut child, group.pgid).await;
            group.disarm();
            Err(RunError::TimedOut {
                command: request.command.to_string(),
                timeout: request.timeout,
                stdout: drain(stdout).await,
                stderr: drain(stderr).await,
            })
        }
    }
}

/// SIGTERMs the group, gives the leader [`TERMINATE_GRACE`] to exit, then SIGKILLs whatever
/// is left of the group (grandchildren may ignore SIGTERM even when the leader obeys it).
async fn terminate(child: &mut Child, pgid: Option<Pid>) {
    signal_group(pgid, Signal::SIGTERM);
    // Either outcome leads to SIGKILL below; the wait is only the grace period.
    let _ = tokio::time::timeout(TERMINATE_GRACE, child.wait()).await;
    signal_group(pgid, Signal::SIGKILL);
    // Reap the leader; after SIGKILL this returns promptly.
    let _ = child.wait().await;
}

fn signal_group(pgid: Option<Pid>, signal: Signal) {
    if let Some(pgid) = pgid {
        // ESRCH means the group is already gone, which is the goal.
        let _ = killpg(pgid, signal);
    }
}

/// Kills the command's process group if the run is abandoned (its future dropped) before the
/// command finished, so a cancelled apply leaves no processes behind.
#[derive(Debug)]
struct GroupGuard {
    pgid: Option<Pid>,
    armed: bool,
}

impl GroupGuard {
    fn new(child: &Child) -> Self {
        // With `process_group(0)` the group id is the child's pid.
        let pgid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .map(Pid::from_raw);
        Self { pgid, armed: true }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            signal_group(self.pgid, Signal::SIGKILL);
        }
    }
}

/// Which part of an over-long stream to keep.
#[derive(Debug, Clone, Copy)]
enum Keep {
    /// The beginning: stdout may be a JSON document, which only parses from its start.
    Head,
    /// The end: the last lines of stderr usually say what went wrong.
    Tail,
}

fn spawn_capture<R>(reader: Option<R>, keep: Keep) -> JoinHandle<Captured>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        match reader {
            Some(reader) => capture(reader, keep).await,
            None => Captured::default(),
        }
    })
}

/// Reads a stream to its end, keeping at most [`OUTPUT_LIMIT`] bytes. The stream is always
/// read to the end so the command never blocks on a full pipe.
async fn capture<R: AsyncRead + Unpin>(mut reader: R, keep: Keep) -> Captured {
    let mut captured = Captured::default();
    let mut chunk = vec![0_u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut chunk).await {
            // A read error ends the stream as far as the report is concerned.
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match keep {
            Keep::Head => {
                let room = OUTPUT_LIMIT.saturating_sub(captured.bytes.len());
                captured.bytes.extend_from_slice(&chunk[..n.min(room)]);
                captured.truncated |= n > room;
            }
            Keep::Tail => {
                captured.bytes.extend_from_slice(&chunk[..n]);
                // Trim only when twice the limit is reached, to amortise the copy.
                if captured.bytes.len() > 2 * OUTPUT_LIMIT {
                    trim_front(&mut captured);
                }
            }
        }
    }
    if captured.bytes.len() > OUTPUT_LIMIT {
        trim_front(&mut captured);
    }
    captured
}

fn trim_front(captured: &mut Captured) {
    let excess = captured.bytes.len().saturating_sub(OUTPUT_LIMIT);
    captured.bytes.drain(..excess);
    captured.truncated = true;
}

async fn join_capture(handle: &mut JoinHandle<Captured>) -> Captured {
    // The capture task never panics; a join error (runtime shutdown) just loses the output.
    handle.await.unwrap_or_default()
}

/// Collects what a capture task has read once the process group is dead; gives up (and
/// loses that stream's output) if something outside the group still holds the pipe.
async fn drain(mut handle: JoinHandle<Captured>) -> Captured {
    match tokio::time::timeout(DRAIN_GRACE, &mut handle).await {
        Ok(captured) => captured.unwrap_or_default(),
        Err(_) => {
            handle.abort();
            Captured::default()
        }
    }
}

/// Describes how a command ended: `exit code 3` or `signal SIGKILL`.
pub(crate) fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(number) => match Signal::try_from(number) {
            Ok(signal) => format!("signal {}", signal.as_str()),
            Err(_) => format!("signal {number}"),
        },
        None => "an unknown status".to_owned(),
    }
}

/// The last `count` lines of `text`, without trailing blank space.
pub(crate) fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_display_like_shell_input() {
        let argv = CommandLine::Argv(vec!["echo".into(), "a b".into(), "it's".into()]);
        assert_eq!(argv.to_string(), r"echo 'a b' 'it'\''s'");
        let shell = CommandLine::Shell("exit 3".into());
        assert_eq!(shell.to_string(), "sh -c 'exit 3'");
    }

    #[test]
    fn last_lines_keeps_the_tail() {
        assert_eq!(last_lines("a\nb\nc\n\n", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
        assert_eq!(last_lines("", 5), "");
    }

    #[tokio::test]
    async fn capture_keeps_head_or_tail_within_limit() {
        let data: Vec<u8> = (0..OUTPUT_LIMIT * 3).map(|i| (i % 251) as u8).collect();
        let head = capture(&data[..], Keep::Head).await;
        assert_eq!(head.bytes.len(), OUTPUT_LIMIT);
        assert!(head.truncated);
        assert_eq!(head.bytes[..], data[..OUTPUT_LIMIT]);
        let tail = capture(&data[..], Keep::Tail).await;
        assert_eq!(tail.bytes[..], data[data.len() - OUTPUT_LIMIT..]);
        assert!(tail.truncated);
        let short = capture(&b"hi"[..], Keep::Tail).await;
        assert_eq!(short.bytes, b"hi");
        assert!(!short.truncated);
    }
}
