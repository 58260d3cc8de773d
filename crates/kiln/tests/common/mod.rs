//! Helpers for tests that run the real `kiln` binary in a scratch directory.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A Node.js service (`server.js`) that answers 500 while the file `fail` exists; `/health` always answers 200.
pub const FAILING_SERVER: &str = r#"
const http = require('http');
const fs = require('fs');
const server = http.createServer((req, res) => {
  if (req.url !== '/health' && fs.existsSync('fail')) { res.statusCode = 500; res.end('broken'); return; }
  res.end('ok');
});
server.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
"#;

/// A scratch stack directory.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new(kiln_yaml: &str) -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kiln.yaml"), kiln_yaml).unwrap();
        Scratch { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.arg("-C").arg(self.path()).args(args);
        cmd
    }

    /// Runs kiln and returns its output, whatever the exit code.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs kiln and insists on success.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kiln {args:?} failed ({:?}):\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kiln, insists on success and parses its JSON output.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    /// `kiln plan --json` counts.
    pub fn counts(&self) -> serde_json::Value {
        let out = self.ok(&["plan", "--json"]);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        json["counts"].clone()
    }

    /// Addresses in the state.
    pub fn state(&self) -> Vec<String> {
        let out = self.ok(&["state", "list", "--json"]);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        json.as_array()
            .unwrap()
            .iter()
            .map(|r| r["address"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// Fails, naming the first missing one, unless `text` contains every one of `needles`.
pub fn assert_contains_all(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
}

/// The string `key` of every element of the JSON array `list` (`[]` when it is none).
pub fn strings_of(list: &serde_json::Value, key: &str) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|e| e[key].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Runs `kiln down` when dropped, so a failed test leaves no control plane behind.
pub struct Down<'a>(pub &'a Scratch);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["down"]);
    }
}

/// A scratch copy of `examples/shop`, its ingress on a port the OS picks (the example's is
/// 8080).
pub fn example_shop() -> Scratch {
    let (s, stack) = shop_copy("kiln.yaml");
    std::fs::write(s.file("kiln.yaml"), stack).unwrap();
    s
}

/// A scratch copy of `examples/shop` and the text of its stack file `file`, its ingress on a
/// port the OS picks.
fn shop_copy(file: &str) -> (Scratch, String) {
    let s = Scratch::new("");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop"),
        s.path(),
    );
    let stack = std::fs::read_to_string(s.file(file))
        .unwrap()
        .replace("listen: 127.0.0.1:8080", "listen: 127.0.0.1:0");
    (s, stack)
}

/// A scratch copy of `examples/shop` delivered from git (`kiln.delivery.yaml` as its
/// `kiln.yaml`): following the bare repository `bare`, production promoted after `soak`, its
/// ingress on a port the OS picks. The directory is a git repository with the shop committed
/// on `main` and pushed to `bare`. Staging's api gets 20 s to become ready rather than the
/// example's 5 s: a good release started on a loaded machine can take longer than 5 s, and would
/// then be rolled back as if it were broken (a broken one still is, 15 s later).
pub fn example_shop_delivered(bare: &Path, soak: &str) -> Scratch {
    let (s, stack) = shop_copy("kiln.delivery.yaml");
    let staging_deadline = "min_healthy_time: 1s, healthy_deadline: 5s";
    assert_eq!(stack.matches(staging_deadline).count(), 1, "{stack}");
    let stack = stack
        .replace("repo: ../shop.git", &format!("repo: {}", bare.display()))
        .replace("soak: 10s", &format!("soak: {soak}"))
        .replace(
            staging_deadline,
            "min_healthy_time: 1s, healthy_deadline: 20s",
        );
    std::fs::write(s.file("kiln.yaml"), stack).unwrap();
    git(s.path(), &["init", "-q"]);
    git(s.path(), &["add", "-A"]);
    git(s.path(), &["commit", "-qm", "the shop"]);
    git(s.path(), &["push", "-q", bare.to_str().unwrap(), "main"]);
    s
}

/// Pushes the clone `dev`'s `main` with the origin's hooks switched off: only a webhook tells
/// the control plane.
pub fn push_without_hook(dev: &Path) {
    git(
        dev,
        &[
            "push",
            "-q",
            "--receive-pack=git -c core.hooksPath=/nonexistent receive-pack",
            "origin",
            "main",
        ],
    );
}

/// A GitHub push payload for `main` from `before` to `after`, which modified `files`.
pub fn push_payload(before: &str, after: &str, files: &[&str]) -> String {
    serde_json::json!({
        "ref": "refs/heads/main",
        "before": before,
        "after": after,
        "repository": { "full_name": "local/app" },
        "commits": [{ "id": after, "added": [], "modified": files, "removed": [] }],
        "head_commit": { "id": after, "timestamp": jiff::Timestamp::now().to_string(),
                         "added": [], "modified": files, "removed": [] },
    })
    .to_string()
}

/// Sends a webhook delivery to `POST /hooks/github` at `addr`; returns the status code.
pub fn deliver(addr: &str, event: &str, id: &str, body: &str, signature: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = format!(
        "POST /hooks/github HTTP/1.1\r\nHost: kiln\r\nContent-Type: application/json\r\nX-GitHub-Event: {event}\r\nX-GitHub-Delivery: {id}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(sig) = signature {
        request.push_str(&format!("X-Hub-Signature-256: {sig}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    // An oversized body may be refused before it is all sent: the answer is what counts.
    let _ = c.write_all(request.as_bytes());
    let mut text = String::new();
    let _ = c.read_to_string(&mut text);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// The `push.finished` event of the commit `sha`, once there is one.
pub fn push_finished(s: &Scratch, sha: &str) -> Option<serde_json::Value> {
    let events = s.json(&["events", "--json", "--limit", "500"]);
    events
        .as_array()?
        .iter()
        .find(|e| e["kind"] == "push.finished" && e["data"]["after"] == sha)
        .cloned()
}

/// Waits (at most `deadline`) for the control plane to finish the push of `sha`; its
/// `push.finished` event.
pub fn wait_for_push(s: &Scratch, sha: &str, deadline: Duration) -> serde_json::Value {
    assert!(
        wait_until(deadline, || push_finished(s, sha).is_some()),
        "no push.finished for {sha} within {deadline:?}: {}",
        s.ok(&["events", "--limit", "40"])
    );
    push_finished(s, sha).unwrap()
}

/// Pushes the clone `dev`'s `main` to its origin (whose hook tells the control plane) and
/// waits for that push to finish: its commit and `push.finished` event.
pub fn push_and_wait(s: &Scratch, dev: &Path, deadline: Duration) -> (String, serde_json::Value) {
    let sha = git(dev, &["rev-parse", "HEAD"]);
    git(dev, &["push", "-q", "origin", "main"]);
    let event = wait_for_push(s, &sha, deadline);
    (sha, event)
}

/// Copies an example stack's tree, leaving out what running it produced (`.kiln`, `out`,
/// `node_modules`, `data`, `dist`).
fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if [".kiln", "out", "node_modules", "data", "dist"]
            .iter()
            .any(|skip| name == *skip)
        {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Runs `git` in `dir` as a test user (branch `main` for new repositories); insists on
/// success and returns its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Polls `condition` until it holds or `deadline` passes: at once, then after 5 ms, the pause
/// doubling up to 200 ms. Most conditions run `kiln` (a process, an SQLite open, JSON), so a
/// fixed 5 ms pause kept most of a core busy asking, and on a loaded machine took that core
/// from the control plane the test waits for. The deadline only bounds a failure: a passing
/// wait returns within 200 ms of its condition holding.
pub fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    while start.elapsed() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
    condition()
}

/// Constant HTTP load on loopback: `clients` threads, each on its own keep-alive connection,
/// sending `GET path` with `Host: host` until stopped. Every non-2xx answer and every
/// connection error counts as a failure.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<LoadTally>>,
}

/// What a load run saw.
#[derive(Debug, Default, Clone)]
pub struct LoadTally {
    pub ok: u64,
    pub failed: u64,
    /// The first few failures, for the assertion message.
    pub failures: Vec<String>,
    /// Response bodies seen, with counts (e.g. which release answered).
    pub bodies: std::collections::BTreeMap<String, u64>,
}

impl LoadTally {
    /// Insists that not one request failed, showing the first failures otherwise.
    pub fn assert_none_failed(&self) {
        assert_eq!(
            self.failed,
            0,
            "{} of {} requests failed: {:#?}",
            self.failed,
            self.ok + self.failed,
            self.failures
        );
    }
}

impl Load {
    pub fn start(addr: &str, host: &str, path: &str, clients: usize) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let (addr, host, path, stop) = (
                    addr.to_owned(),
                    host.to_owned(),
                    path.to_owned(),
                    stop.clone(),
                );
                std::thread::spawn(move || load_loop(&addr, &host, &path, &stop))
            })
            .collect();
        Load { stop, threads }
    }

    pub fn finish(self) -> LoadTally {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut total = LoadTally::default();
        for t in self.threads {
            let tally = t.join().unwrap();
            total.ok += tally.ok;
            total.failed += tally.failed;
            total.failures.extend(tally.failures);
            for (body, n) in tally.bodies {
                *total.bodies.entry(body).or_default() += n;
            }
        }
        total.failures.truncate(20);
        total
    }
}

fn load_loop(
    addr: &str,
    host: &str,
    path: &str,
    stop: &std::sync::atomic::AtomicBool,
) -> LoadTally {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut tally = LoadTally::default();
    let fail = |tally: &mut LoadTally, why: String| {
        tally.failed += 1;
        if tally.failures.len() < 20 {
            tally.failures.push(why);
        }
    };
    let mut connection: Option<BufReader<std::net::TcpStream>> = None;
    // Bounded: a run lasts at most ten minutes whatever the caller does.
    let started = Instant::now();
    while !stop.load(std::sync::atomic::Ordering::SeqCst)
        && started.elapsed() < Duration::from_secs(600)
    {
        if connection.is_none() {
            match std::net::TcpStream::connect(addr) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    s.set_nodelay(true).unwrap();
                    connection = Some(BufReader::new(s));
                }
                Err(e) => {
                    fail(&mut tally, format!("connect: {e}"));
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
        }
        let Some(reader) = connection.as_mut() else {
            continue;
        };
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        if let Err(e) = reader.get_mut().write_all(request.as_bytes()) {
            fail(&mut tally, format!("write: {e}"));
            connection = None;
            continue;
        }
        let mut status_line = String::new();
        if reader.read_line(&mut status_line).unwrap_or(0) == 0 {
            fail(&mut tally, "the connection closed before a response".into());
            connection = None;
            continue;
        }
        let code: u16 = status_line
            .get(9..12)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let (mut length, mut close) = (0usize, false);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                close = true;
                break;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if lower == "connection: close" {
                close = true;
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            fail(&mut tally, "the body was cut short".into());
            connection = None;
            continue;
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        if (200..300).contains(&code) {
            tally.ok += 1;
            *tally.bodies.entry(body).or_default() += 1;
        } else {
            fail(&mut tally, format!("{} {}", status_line.trim(), body));
        }
        if close {
            connection = None;
        }
    }
    tally
}

/// A webhook receiver on loopback: records every JSON body POSTed to `/hook` (for alert
/// notifications and runbook escalations).
pub struct Hook {
    pub port: u16,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Hook {
    pub fn start() -> Hook {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (b, s) = (bodies.clone(), stop.clone());
        // Bounded like `Load`: ten minutes at most, past any test's own limit.
        std::thread::spawn(move || {
            let started = Instant::now();
            while !s.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(600) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Some(body) = read_post(stream) {
                            b.lock().unwrap().push(body);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Hook { port, bodies, stop }
    }

    /// Every body received so far.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().unwrap().clone()
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn read_post(stream: std::net::TcpStream) -> Option<serde_json::Value> {
    use std::io::{BufRead, BufReader, Read, Write};
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut length = 0;
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    // Anything else is a stranger on a port the OS handed out again: another test's control
    // plane still scraping the service that had the port before (`GET /metrics` was seen).
    // An assertion here ended the receiver's thread, and the test waited for notifications
    // that nobody read any more.
    if !line.starts_with("POST /hook ") {
        let mut stream = stream;
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        return None;
    }
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let mut stream = stream;
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    serde_json::from_slice(&body).ok()
}

/// A release of a test service (`server.js`, run by node): answers `v<version>` (followed by
/// ` <GREETING>` when that variable is set); its `mode` file makes it unhealthy (503 on
/// /healthz) or broken (503 on everything else). It drains on SIGTERM.
pub const RELEASE_SERVER: &str = r#"
const http = require('http');
const fs = require('fs');
const read = (f, d) => { try { return fs.readFileSync(f, 'utf8').trim(); } catch { return d; } };
const mode = read('mode', 'ok');
const version = read('version', '0');
const greeting = process.env.GREETING ? ' ' + process.env.GREETING : '';
const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.statusCode = mode === 'unhealthy' ? 503 : 200;
    return res.end(mode);
  }
  if (mode === 'errors') {
    res.statusCode = 503;
    return res.end('broken release');
  }
  res.end('v' + version + greeting);
});
server.keepAliveTimeout = 30000;
server.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
});
"#;

/// The body of `GET /` with `Host: host` on a fresh connection (empty when it fails).
pub fn get_body(addr: &str, host: &str) -> String {
    get_path(addr, host, "/")
}

/// The body of `GET path` with `Host: host` on a fresh connection (empty when it fails).
pub fn get_path(addr: &str, host: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()
}

/// The body of `GET /` with `Host: app.localhost` through the ingress at `addr` (empty when
/// nothing answers).
pub fn common_get(addr: &str) -> String {
    get_body(addr, "app.localhost")
}
