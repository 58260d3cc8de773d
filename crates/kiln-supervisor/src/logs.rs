//! Instance output: captured line by line with an RFC 3339 timestamp into
//! `state_dir/logs/<service>/<instance>.log`, size-rotated, and read back for `kiln logs`.
//!
//! An instance's stdout and stderr are named pipes (FIFOs) under `state_dir/run/`, not anonymous
//! pipes. The child holds its end open read-write, so when the control plane dies the child
//! never gets SIGPIPE (writes only block once the 64 KiB pipe buffer is full), and a restarted
//! control plane that adopts the instance reopens the FIFO and keeps capturing — including what
//! was buffered meanwhile (stamped with the time it was read).
//!
//! Line format: `<timestamp> <stream> <text>`, one per line, so `tail -f` is readable too.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::unix::pipe;

/// Lines longer than this are split; a child writing without newlines cannot exhaust memory.
const MAX_LINE: u64 = 16 * 1024;

/// How many recent lines each instance keeps in memory for exit events and errors.
const TAIL_LINES: usize = 20;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    /// A note written by the supervisor itself (e.g. about adoption).
    Supervisor,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Supervisor => "kiln",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        match word {
            "stdout" => Some(Self::Stdout),
            "stderr" => Some(Self::Stderr),
            "kiln" => Some(Self::Supervisor),
            _ => None,
        }
    }
}

/// One captured line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub time: SystemTime,
    pub service: String,
    pub instance: u32,
    pub stream: Stream,
    pub text: String,
}

/// When log files are rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// A file is rotated once it would grow past this.
    pub max_bytes: u64,
    /// How many rotated files (`.log.1` …) are kept.
    pub keep: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            max_bytes: 10 * 1024 * 1024,
            keep: 3,
        }
    }
}

/// The log file of one instance, shared by its stdout and stderr capture tasks. Writes are
/// synchronous and short; the lock is never held across an await.
#[derive(Debug, Clone)]
pub(crate) struct LogSink {
    inner: Arc<Mutex<SinkFile>>,
}

#[derive(Debug)]
struct SinkFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    rotation: Rotation,
    tail: VecDeque<String>,
}

/// The path of an instance's current log file.
pub(crate) fn log_path(state_dir: &Path, service: &str, instance: u32) -> PathBuf {
    state_dir
        .join("logs")
        .join(service)
        .join(format!("{instance}.log"))
}

impl LogSink {
    pub(crate) fn open(path: PathBuf, rotation: Rotation) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            inner: Arc::new(Mutex::new(SinkFile {
                path,
                file: Some(file),
                size,
                rotation,
                tail: VecDeque::new(),
            })),
        })
    }

    /// Appends one line stamped now. A write error loses the line (and is retried by reopening
    /// on the next one) rather than stopping the instance.
    pub(crate) fn write(&self, stream: Stream, text: &str) {
        let stamp = jiff::Timestamp::now();
        let record = format!("{stamp} {} {text}\n", stream.as_str());
        let Ok(mut sink) = self.inner.lock() else {
            return;
        };
        sink.append(record.as_bytes());
        if sink.tail.len() == TAIL_LINES {
            sink.tail.pop_front();
        }
        sink.tail.push_back(text.to_owned());
    }

    /// The most recent lines, oldest first.
    pub(crate) fn last_lines(&self) -> Vec<String> {
        self.inner
            .lock()
            .map(|sink| sink.tail.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl SinkFile {
    fn append(&mut self, bytes: &[u8]) {
        let len = bytes.len() as u64;
        if self.size > 0 && self.size + len > self.rotation.max_bytes {
            self.rotate();
        }
        if self.file.is_none() {
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .ok();
            self.size = self
                .file
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .map_or(0, |m| m.len());
        }
        if let Some(file) = &mut self.file
            && file.write_all(bytes).is_ok()
        {
            self.size += len;
        } else {
            self.file = None;
        }
    }

    /// `.log.(k-1)` → `.log.k` …, `.log` → `.log.1`; the oldest falls off.
    fn rotate(&mut self) {
        self.file = None;
        let keep = self.rotation.keep;
        // Failures here (e.g. a missing older file) are expected and harmless.
        let _ = std::fs::remove_file(rotated(&self.path, keep));
        for n in (1..keep).rev() {
            let _ = std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1));
        }
        if keep > 0 {
            let _ = std::fs::rename(&self.path, rotated(&self.path, 1));
        } else {
            let _ = std::fs::remove_file(&self.path);
        }
        self.size = 0;
    }
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Makes a fresh FIFO at `path` (owner-only). A fresh one per spawn means a straggler from an
/// earlier run that still holds the old FIFO cannot write into the new instance's log.
pub(crate) fn make_fifo(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(std::io::Error::from)
}

/// Opens the child's end of a FIFO: read-write, so the child always has a reader and never gets
/// SIGPIPE when the control plane is gone.
pub(crate) fn open_child_end(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// Opens our reading end. Must happen while a writer exists, or the first read sees EOF.
pub(crate) fn open_reader(path: &Path) -> std::io::Result<pipe::Receiver> {
    pipe::OpenOptions::new().open_receiver(path)
}

/// Bytes read from an instance's stdout or stderr at a time.
const CAPTURE_BUFFER: usize = 2048;

/// Copies lines from `reader` into `sink` until every writer has closed the FIFO.
pub(crate) async fn capture(reader: pipe::Receiver, stream: Stream, sink: LogSink) {
    // Two of these live for every instance, mostly idle: 8 KiB buffers (the default) were
    // 1.6 MiB for a hundred instances. A longer line still reads whole, in more reads.
    let mut reader = BufReader::with_capacity(CAPTURE_BUFFER, reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&buf);
                sink.write(stream, text.trim_end_matches(['\n', '\r']));
            }
        }
    }
}

/// Reads the logs of `service` (one instance or all), oldest first, interleaved by time;
/// only lines at or after `since`, and only the last `tail` of those. Missing or unreadable
/// files read as empty: logs are a convenience, never a reason to fail a command.
pub fn read_logs(
    state_dir: &Path,
    service: &str,
    instance: Option<u32>,
    since: Option<SystemTime>,
    tail: Option<usize>,
) -> Vec<LogLine> {
    let mut lines: Vec<LogLine> = Vec::new();
    for set in sets_of(state_dir, service) {
        let dir = state_dir.join("logs").join(&set);
        let instances: Vec<u32> = match instance {
            Some(n) => vec![n],
            None => list_instances(&dir),
        };
        lines.extend(
            instances
                .into_iter()
                .flat_map(|n| read_instance(&log_path(state_dir, &set, n), &set, n))
                .filter(|line| since.is_none_or(|since| line.time >= since)),
        );
    }
    // Stable: lines of one instance with equal stamps keep their file order.
    lines.sort_by_key(|line| line.time);
    if let Some(tail) = tail {
        lines.drain(..lines.len().saturating_sub(tail));
    }
    lines
}

/// The log directories of `service`: its own, and one per set (`service@version`) a deploy
/// ran; a name with `@` is one set only.
fn sets_of(state_dir: &Path, service: &str) -> Vec<String> {
    if service.contains('@') {
        return vec![service.to_owned()];
    }
    let prefix = format!("{service}@");
    let mut sets: Vec<String> = std::fs::read_dir(state_dir.join("logs"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| name == service || name.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    sets.sort();
    sets
}

fn list_instances(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<u32> = entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.split('.').next()?.parse().ok()
        })
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// The current file and its rotated predecessors, oldest first.
fn read_instance(path: &Path, service: &str, instance: u32) -> Vec<LogLine> {
    let mut files: Vec<PathBuf> = (1..=64)
        .map(|n| rotated(path, n))
        .filter(|p| p.exists())
        .collect();
    files.reverse();
    files.push(path.to_path_buf());
    files
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .flat_map(|bytes| {
            String::from_utf8_lossy(&bytes)
                .lines()
                .filter_map(|l| parse_line(l, service, instance))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn parse_line(line: &str, service: &str, instance: u32) -> Option<LogLine> {
    let (stamp, rest) = line.split_once(' ')?;
    let (stream, text) = rest.split_once(' ').unwrap_or((rest, ""));
    let time = SystemTime::from(stamp.parse::<jiff::Timestamp>().ok()?);
    Some(LogLine {
        time,
        service: service.to_owned(),
        instance,
        stream: Stream::parse(stream)?,
        text: text.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_tail_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::open(log_path(dir.path(), "api", 0), Rotation::default()).unwrap();
        for n in 0..5 {
            sink.write(Stream::Stdout, &format!("line {n}"));
        }
        sink.write(Stream::Stderr, "oops with  spaces");
        let lines = read_logs(dir.path(), "api", None, None, Some(2));
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["line 4", "oops with  spaces"]);
        assert_eq!(lines[1].stream, Stream::Stderr);
        assert_eq!(sink.last_lines().len(), 6);
    }

    #[tokio::test]
    async fn a_line_longer_than_the_read_buffer_is_captured_whole() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("out.fifo");
        make_fifo(&fifo).unwrap();
        let writer = open_child_end(&fifo).unwrap();
        let reader = open_reader(&fifo).unwrap();
        let sink = LogSink::open(log_path(dir.path(), "api", 0), Rotation::default()).unwrap();
        let capturing = tokio::spawn(capture(reader, Stream::Stdout, sink.clone()));
        let long = "x".repeat(3 * CAPTURE_BUFFER + 7);
        let mut writer = writer;
        std::io::Write::write_all(&mut writer, format!("{long}\nshort\n").as_bytes()).unwrap();
        drop(writer);
        tokio::time::timeout(std::time::Duration::from_secs(10), capturing)
            .await
            .expect("the capture ends when the writer closes")
            .unwrap();
        let texts: Vec<String> = read_logs(dir.path(), "api", None, None, None)
            .into_iter()
            .map(|l| l.text)
            .collect();
        assert_eq!(texts, [long, "short".to_owned()]);
    }

    #[test]
    fn rotation_keeps_a_bounded_number_of_files_and_reads_across_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path(), "api", 1);
        let rotation = Rotation {
            max_bytes: 200,
            keep: 2,
        };
        let sink = LogSink::open(path.clone(), rotation).unwrap();
        for n in 0..40 {
            sink.write(Stream::Stdout, &format!("line {n:02}"));
        }
        assert!(rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        let lines = read_logs(dir.path(), "api", Some(1), None, None);
        let last = lines.last().unwrap();
        assert_eq!(last.text, "line 39");
        // Older lines fell off with the dropped file, but what remains is in order.
        let numbers: Vec<u32> = lines.iter().map(|l| l.text[5..].parse().unwrap()).collect();
        assert!(numbers.windows(2).all(|w| w[0] + 1 == w[1]));
        assert!(numbers.len() < 40);
    }

    #[test]
    fn since_filters_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::open(log_path(dir.path(), "web", 0), Rotation::default()).unwrap();
        sink.write(Stream::Stdout, "old");
        let future = SystemTime::now() + std::time::Duration::from_secs(3600);
        assert!(read_logs(dir.path(), "web", None, Some(future), None).is_empty());
        assert_eq!(read_logs(dir.path(), "web", None, None, None).len(), 1);
    }
}
