//! End-to-end tests with real processes (sh, python3). Synchronisation is by events with a
//! deadline, never by sleeping; the few file checks are bounded polling loops.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use kiln_supervisor::{
    Check, Command, Event, ExitReason, InstanceState, Limits, LimitsInForce, Probe, ProbeKind,
    RestartMode, ServiceSpec, Supervisor, SupervisorConfig, SupervisorError, SupervisorHandle,
    read_logs,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

const DEADLINE: Duration = Duration::from_secs(15);

/// A tiny HTTP service: /healthz and /ready answer 200 until /break-live or /break-ready is
/// requested (per process, so a restarted instance is healthy again).
const HTTP_SERVICE: &str = r#"
import http.server, os
state = {"live": True, "ready": True}
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200
        if self.path == "/break-live": state["live"] = False
        elif self.path == "/break-ready": state["ready"] = False
        elif self.path == "/fix-ready": state["ready"] = True
        elif self.path == "/healthz": code = 200 if state["live"] else 500
        elif self.path == "/ready": code = 200 if state["ready"] else 503
        else: code = 404
        self.send_response(code); self.end_headers(); self.wfile.write(b"ok\n")
    def log_message(self, *args): pass
print("listening on", os.environ["PORT"], flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// A temporary directory whose instances are killed when the test ends, even by a panic.
struct TestDir(tempfile::TempDir);

impl TestDir {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        kiln_supervisor::cleanup_orphans(&self.0.path().join("state"));
    }
}

fn shell(name: &str, script: &str, dir: &Path) -> ServiceSpec {
    let mut spec = ServiceSpec::new(name, Command::Shell(script.into()), dir);
    spec.restart.backoff_initial = Duration::from_millis(20);
    spec.restart.backoff_max = Duration::from_secs(2);
    spec.stop.grace = Duration::from_secs(3);
    spec
}

fn python(name: &str, script: &str, dir: &Path) -> ServiceSpec {
    let mut spec = shell(name, "", dir);
    spec.command = Command::Argv(vec!["python3".into(), "-c".into(), script.into()]);
    spec
}

fn http_probe(path: &str, failure_threshold: u32) -> Probe {
    Probe {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
        failure_threshold,
        ..Probe::new(Check::Http {
            path: path.into(),
            expected_status: None,
        })
    }
}

/// Waits for python to listen before liveness and readiness start counting.
fn startup_tcp() -> Probe {
    Probe {
        interval: Duration::from_millis(50),
        failure_threshold: 100,
        ..Probe::new(Check::Tcp)
    }
}

fn start(dir: &Path) -> (SupervisorHandle, Receiver<Event>) {
    Supervisor::start(SupervisorConfig::new(dir.join("state"))).unwrap()
}

/// Receives events until one matches, returning it and everything seen before it.
async fn until(
    rx: &mut Receiver<Event>,
    what: &str,
    mut matches: impl FnMut(&Event) -> bool,
) -> (Event, Vec<Event>) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(event)) if matches(&event) => return (event, seen),
            Ok(Ok(event)) => seen.push(event),
            Ok(Err(RecvError::Lagged(n))) => panic!("lagged {n} events waiting for {what}"),
            Ok(Err(RecvError::Closed)) => panic!("events closed waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}; saw {seen:#?}"),
        }
    }
}

async fn started(rx: &mut Receiver<Event>) -> (u32, u16) {
    match until(rx, "Started", |e| matches!(e, Event::Started { .. }))
        .await
        .0
    {
        Event::Started { pid, port, .. } => (pid, port),
        _ => unreachable!(),
    }
}

async fn http_get(port: u16, path: &str) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    // Only the status line matters; the server may reset the connection after answering.
    let mut response = vec![0_u8; 64];
    let n = stream.read(&mut response).await.unwrap();
    let head = String::from_utf8_lossy(&response[..n]);
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
}

/// Running means present in /proc and not a zombie (the reaper may lag behind the kill).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next();
        !matches!(state, Some("Z" | "X"))
    })
}

/// Polls for a condition on files or /proc, at most DEADLINE, without blocking the runtime.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`eventually`] outside any runtime.
fn eventually_blocking(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_crashing_service_backs_off_exponentially_and_shows_a_crash_loop() {
    let dir = TestDir::new();
    let (supervisor, mut events) = start(dir.path());
    supervisor
        .apply(shell("crasher", "echo boom; exit 3", dir.path()))
        .await
        .unwrap();
    let mut delays = Vec::new();
    let mut crash_loop = None;
    let mut latencies = Vec::new();
    let mut exited_at = None;
    while delays.len() < 5 {
        let (event, _) = until(&mut events, "restart events", |_| true).await;
        match event {
            Event::Exited {
                exit,
                last_log_lines,
                ..
            } => {
                assert_eq!(exit, ExitReason::Code(3));
                assert!(
                    last_log_lines.contains(&"boom".to_owned()),
                    "{last_log_lines:?}"
                );
                exited_at = Some(Instant::now());
            }
            Event::Restarting { attempt, delay, .. } => {
                assert_eq!(attempt as usize, delays.len() + 1);
                delays.push(delay);
            }
            Event::Started { .. } => {
                if let (Some(at), Some(delay)) = (exited_at, delays.last()) {
                    latencies.push(at.elapsed().saturating_sub(*delay));
                }
            }
            Event::CrashLooping {
                restarts_in_window,
                next_try_in,
                ..
            } => {
                crash_loop = Some((restarts_in_window, next_try_in));
            }
            _ => {}
        }
    }
    assert!(
        delays.windows(2).all(|w| w[0] < w[1]),
        "delays must grow: {delays:?}"
    );
    let (restarts, _) = crash_loop.expect("a CrashLooping event");
    assert!(restarts >= 3);
    eprintln!("restart delays {delays:?}; exit-to-started beyond the delay {latencies:?}");
    let status = supervisor.status().await;
    assert!(status[0].restarts >= 5);
    supervisor.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_liveness_failure_restarts_the_instance() {
    let dir = TestDir::new();
    let (supervisor, mut events) = start(dir.path());
    let mut spec = python("live", HTTP_SERVICE, dir.path());
    spec.probes.startup = Some(startup_tcp());
    spec.probes.liveness = Some(http_probe("/healthz", 2));
    supervisor.apply(spec).await.unwrap();
    let (pid, port) = started(&mut events).await;
    supervisor.wait_ready("live", DEADLINE).await.unwrap();

    http_get(port, "/break-live").await;
    let (unhealthy, _) = until(&mut events, "Unhealthy", |e| {
        matches!(e, Event::Unhealthy { .. })
    })
    .await;
    assert!(matches!(
        unhealthy,
        Event::Unhealthy {
            probe: ProbeKind::Liveness,
            ..
        }
    ));
    let (exited, _) = until(&mut events, "Exited", |e| matches!(e, Event::Exited { .. })).await;
    assert!(matches!(exited, Event::Exited { pid: old, .. } if old == pid));
    let (new_pid, new_port) = started(&mut events).await;
    assert_ne!(new_pid, pid);
    assert_eq!(new_port, port, "an instance keeps its port across restarts");
    until(&mut events, "Ready again", |e| {
        matches!(e, Event::Ready { .. })
    })
    .await;
    assert!(!running(pid));
    supervisor.shutdown(Duration::from_secs(2)).await;
}

/// A liveness probe without a startup probe does not kill an instance that has not listened
/// yet: this one takes a second to start, far longer than the probe's two failures 100 ms
/// apart, and still comes up on its first try.
#[tokio::test]
async fn a_slow_starting_instance_is_not_killed_by_its_liveness_probe() {
    let dir = TestDir::new();
    let (supervisor, mut events) = start(dir.path());
    let slow = format!("import time\ntime.sleep(1.0)\n{HTTP_SERVICE}");
    let mut spec = python("slow", &slow, dir.path());
    spec.probes.readiness = Some(http_probe("/ready", 2));
    spec.probes.liveness = Some(http_probe("/healthz", 2));
    supervisor.apply(spec).await.unwrap();
    let (pid, _) = started(&mut events).await;
    let (_, before) = until(&mut events, "Ready", |e| matches!(e, Event::Ready { .. })).await;
    assert!(
        !before.iter().any(|e| matches!(e, Event::Exited { .. })),
        "{before:?}"
    );
    let status = supervisor.status().await;
    assert_eq!((status[0].pid, status[0].restarts), (Some(pid), 0));
    supervisor.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_readiness_failure_marks_unready_but_does_not_kill() {
    let dir = TestDir::new();
    let (supervisor, mut events) = start(dir.path());
    let mut spec = python("ready", HTTP_SERVICE, dir.path());
    spec.probes.startup = Some(startup_tcp());
    spec.probes.readiness = Some(http_probe("/ready", 2));
    spec.probes.liveness = Some(http_probe("/healthz", 2));
    supervisor.apply(spec).await.unwrap();
    let (pid, port) = started(&mut events).await;
    supervisor.wait_ready("ready", DEADLINE).await.unwrap();

    http_get(port, "/break-ready").await;
    let (event, _) = until(&mut events, "Unhealthy", |e| {
        matches!(e, Event::Unhealthy { .. })
    })
    .await;
    assert!(matches!(
        event,
        Event::Unhealthy {
            probe: ProbeKind::Readiness,
            ..
        }
    ));
    let status = supervisor.status().await;
    assert_eq!(status[0].state, InstanceState::Unhealthy);
    assert_eq!(status[0].pid, Some(pid));
    let not_ready = supervisor
        .wait_ready("ready", Duration::from_millis(300))
        .await;
    let Err(SupervisorError::NotReady { details, .. }) = not_ready else {
        panic!("expected NotReady, got {not_ready:?}");
    };
    assert!(
        details.contains("readiness probe") && details.contains("HTTP 503"),
        "{details}"
    );

    http_get(port, "/fix-ready").await;
    let (_, between) = until(&mut events, "Ready again", |e| {
        matches!(e, Event::Ready { .. })
    })
    .await;
    assert!(
        !between.iter().any(|e| matches!(e, Event::Exited { .. })),
        "{between:?}"
    );
    assert!(running(pid));
    supervisor.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_grandchild_dies_with_its_instance() {
    let dir = TestDir::new();
    let (supervisor, mut events) = start(dir.path());
    let pidfile = dir.path().join("grandchild.pid");
    // The grandchild ignores SIGTERM, so only the group SIGKILL after the leader's exit ends it.
    let script = format!(
        "(trap '' TERM; exec sleep 300) & echo $! > {}; wait",
        pidfile.display()
    );
    supervisor
        .apply(shell("forker", &script, dir.path()))
        .await
        .unwrap();
    started(&mut events).await;
    let mut grandchild = 0;
    eventually("the grandchild pid", || {
        grandchild = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        grandchild != 0
    })
    .await;
    assert!(running(grandchild));
    supervisor.remove("forker").await.unwrap();
    // SIGKILL was sent before `remove` returned; its delivery is asynchronous.
    eventually("the grandchild to die", || !running(grandchild)).await;
    assert!(supervisor.status().await.is_empty());
}

#[tokio::test]
async fn a_service_ignoring_sigterm_is_killed_after_its_grace() {
    let dir = TestDir::new();
    let (supervisor, mut events) = start(dir.path());
    let mut spec = shell(
        "stubborn",
        "trap '' TERM; echo up; while :; do sleep 0.05; done",
        dir.path(),
    );
    spec.stop.grace = Duration::from_millis(300);
    supervisor.apply(spec).await.unwrap();
    let (pid, _) = started(&mut events).await;
    // Stopping before the shell has installed its trap would just kill it.
    let state = dir.path().join("state");
    eventually("the trap to be set", || {
        !read_logs(&state, "stubborn", None, None, None).is_empty()
    })
    .await;
    let began = Instant::now();
    supervisor.remove("stubborn").await.unwrap();
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let (exited, _) = until(&mut events, "Exited", |e| matches!(e, Event::Exited { .. })).await;
    assert!(
        matches!(exited, Event::Exited { exit: ExitReason::Signal(ref s), .. } if s == "SIGKILL")
    );
    until(&mut events, "Stopped", |e| {
        matches!(e, Event::Stopped { .. })
    })
    .await;
    assert!(!running(pid));
}

#[tokio::test]
async fn logs_are_captured_with_timestamps_and_tail_works() {
    let dir = TestDir::new();
    let (supervisor, mut events) = start(dir.path());
    let before = SystemTime::now();
    let script = "echo one; echo two >&2; echo three; exec sleep 300";
    supervisor
        .apply(shell("talker", script, dir.path()))
        .await
        .unwrap();
    started(&mut events).await;
    let state = dir.path().join("state");
    eventually("three log lines", || {
        read_logs(&state, "talker", None, None, None).len() >= 3
    })
    .await;
    let all = read_logs(&state, "talker", Some(0), None, None);
    let texts: Vec<&str> = all.iter().map(|l| l.text.as_str()).collect();
    assert!(texts.contains(&"one") && texts.contains(&"two") && texts.contains(&"three"));
    assert!(
        all.iter()
            .all(|l| l.time >= before - Duration::from_secs(1) && l.time <= SystemTime::now())
    );
    let two = all.iter().find(|l| l.text == "two").unwrap();
    assert_eq!(two.stream, kiln_supervisor::Stream::Stderr);
    let tail = read_logs(&state, "talker", None, None, Some(1));
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].text, all.last().unwrap().text);
    let raw = std::fs::read_to_string(state.join("logs/talker/0.log")).unwrap();
    let stamp = raw.lines().next().unwrap().split(' ').next().unwrap();
    assert!(
        stamp.parse::<jiff::Timestamp>().is_ok(),
        "{stamp} is not RFC 3339"
    );
    supervisor.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn each_replica_gets_its_own_port() {
    let dir = TestDir::new();
    let (supervisor, _events) = start(dir.path());
    let listen = "import os, socket, time\n\
                  s = socket.socket(); s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen()\n\
                  time.sleep(300)";
    let mut spec = python("ports", listen, dir.path());
    spec.replicas = 3;
    spec.probes.readiness = Some(Probe {
        interval: Duration::from_millis(50),
        ..Probe::new(Check::Tcp)
    });
    supervisor.apply(spec).await.unwrap();
    supervisor.wait_ready("ports", DEADLINE).await.unwrap();
    let mut ports: Vec<u16> = supervisor
        .status()
        .await
        .iter()
        .map(|s| s.port.unwrap())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3, "{ports:?}");
    supervisor.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn an_instance_whose_port_was_taken_restarts_on_another() {
    let dir = TestDir::new();
    let (supervisor, mut events) = start(dir.path());
    let listen = "import os, socket, time\n\
                  s = socket.socket(); s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen()\n\
                  time.sleep(300)";
    let mut spec = python("squatted", listen, dir.path());
    spec.restart.backoff_initial = Duration::from_secs(2);
    spec.restart.backoff_max = Duration::from_secs(4);
    spec.probes.readiness = Some(Probe {
        interval: Duration::from_millis(50),
        ..Probe::new(Check::Tcp)
    });
    supervisor.apply(spec).await.unwrap();
    let (pid, port) = started(&mut events).await;
    supervisor.wait_ready("squatted", DEADLINE).await.unwrap();

    // Someone else binds the port while the instance is down.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Free once the killed process is reaped; the restart waits out its backoff.
    until(&mut events, "Exited", |e| matches!(e, Event::Exited { .. })).await;
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (_, moved) = started(&mut events).await;
    assert_ne!(moved, port, "the restart reused the taken port");
    supervisor.wait_ready("squatted", DEADLINE).await.unwrap();
    let lines = read_logs(&dir.path().join("state"), "squatted", None, None, None);
    assert!(
        lines
            .iter()
            .any(|l| l.text.contains(&format!("port {port} is taken"))),
        "{lines:?}"
    );
    drop(squatter);
    supervisor.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn an_update_replaces_instances_one_at_a_time_and_scaling_keeps_the_rest() {
    let dir = TestDir::new();
    let (supervisor, _events) = start(dir.path());
    let mut spec = shell(
        "rolling",
        "echo \"$KILN_RELEASE\"; exec sleep 300",
        dir.path(),
    );
    spec.replicas = 2;
    spec.release = "v1".into();
    supervisor.apply(spec.clone()).await.unwrap();
    supervisor.wait_ready("rolling", DEADLINE).await.unwrap();
    let first: Vec<u32> = supervisor
        .status()
        .await
        .iter()
        .filter_map(|s| s.pid)
        .collect();

    spec.release = "v2".into();
    let mut events = supervisor.subscribe();
    supervisor.apply(spec).await.unwrap();
    let status = supervisor.status().await;
    assert!(
        status
            .iter()
            .all(|s| s.release == "v2" && !first.contains(&s.pid.unwrap()))
    );
    // One at a time: instance 0 is back before instance 1 is stopped.
    let (_, seen) = until(
        &mut events,
        "second replacement",
        |e| matches!(e, Event::Started { id, .. } if id.instance == 1 && id.service == "rolling"),
    )
    .await;
    let order: Vec<String> = seen
        .iter()
        .filter_map(|e| match e {
            Event::Exited { id, .. } => Some(format!("exit {}", id.instance)),
            Event::Started { id, .. } => Some(format!("start {}", id.instance)),
            _ => None,
        })
        .collect();
    assert!(
        order.ends_with(&["exit 0".into(), "start 0".into(), "exit 1".into()]),
        "{order:?}"
    );

    let kept = supervisor.status().await[0].pid;
    supervisor.scale("rolling", 1).await.unwrap();
    let status = supervisor.status().await;
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].pid, kept);
    supervisor.shutdown(Duration::from_secs(2)).await;
}

/// Start, "kill -9" the control plane (abandon: actor and tasks gone, processes left), start a
/// new one: the same spec adopts the same process; a changed spec replaces it;
/// `cleanup_orphans` kills what an abandoned control plane left.
#[test]
fn instances_survive_a_control_plane_crash_and_are_adopted_or_replaced() {
    let dir = TestDir::new();
    let state = dir.path().join("state");
    let spec = shell(
        "sleeper",
        "while :; do echo tick; sleep 0.05; done",
        dir.path(),
    );
    let runtime = || tokio::runtime::Runtime::new().unwrap();

    let first = runtime().block_on(async {
        let (supervisor, mut events) = start(dir.path());
        supervisor.apply(spec.clone()).await.unwrap();
        let (pid, _) = started(&mut events).await;
        supervisor.abandon().await;
        pid
    });
    assert!(running(first), "abandoning must not stop instances");

    runtime().block_on(async {
        let (supervisor, mut events) = start(dir.path());
        supervisor.apply(spec.clone()).await.unwrap();
        let (adopted, seen) = until(&mut events, "Adopted", |e| {
            matches!(e, Event::Adopted { .. })
        })
        .await;
        assert!(matches!(adopted, Event::Adopted { pid, .. } if pid == first));
        assert!(seen.is_empty(), "{seen:?}");
        let status = supervisor.status().await;
        assert_eq!(status.len(), 1, "no duplicate");
        assert_eq!((status[0].pid, status[0].adopted), (Some(first), true));
        // Output capture resumed through the FIFO.
        let adopted_at = SystemTime::now();
        eventually("a log line after adoption", || {
            !read_logs(&state, "sleeper", Some(0), Some(adopted_at), None).is_empty()
        })
        .await;
        supervisor.abandon().await;
    });

    let second = runtime().block_on(async {
        let (supervisor, mut events) = start(dir.path());
        let mut changed = spec.clone();
        changed.release = "v2".into();
        supervisor.apply(changed).await.unwrap();
        let (exited, _) = until(&mut events, "Exited", |e| matches!(e, Event::Exited { .. })).await;
        assert!(matches!(exited, Event::Exited { pid, .. } if pid == first));
        let status = supervisor.status().await;
        assert_eq!(status.len(), 1);
        let second = status[0].pid.unwrap();
        assert_ne!(second, first);
        supervisor.abandon().await;
        second
    });
    eventually_blocking("the replaced process to be gone", || !running(first));
    assert!(running(second));

    let killed = kiln_supervisor::cleanup_orphans(&state);
    assert_eq!(killed.len(), 1);
    eventually_blocking("the orphan to be gone", || !running(second));
    assert!(kiln_supervisor::cleanup_orphans(&state).is_empty());
}

#[tokio::test]
async fn shutdown_stops_everything_and_kills_at_the_deadline() {
    let dir = TestDir::new();
    let (supervisor, mut events) = start(dir.path());
    let trap = "trap '' TERM; echo up; while :; do sleep 0.05; done";
    let mut stubborn = shell("stubborn", trap, dir.path());
    stubborn.stop.grace = Duration::from_secs(30);
    supervisor.apply(stubborn).await.unwrap();
    let (stubborn_pid, _) = started(&mut events).await;
    let state = dir.path().join("state");
    eventually("the trap to be set", || {
        !read_logs(&state, "stubborn", None, None, None).is_empty()
    })
    .await;
    let mut polite = shell("polite", "exec sleep 300", dir.path());
    polite.replicas = 2;
    supervisor.apply(polite).await.unwrap();
    let pids: Vec<u32> = supervisor
        .status()
        .await
        .iter()
        .filter_map(|s| s.pid)
        .collect();
    assert_eq!(pids.len(), 3);

    let began = Instant::now();
    supervisor.shutdown(Duration::from_millis(400)).await;
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
    for pid in pids {
        eventually("every instance to be gone", || !running(pid)).await;
    }
    assert!(!running(stubborn_pid));
    let run_dir = dir.path().join("state/run");
    assert_eq!(
        std::fs::read_dir(run_dir).unwrap().count(),
        0,
        "pidfiles and FIFOs are cleaned up"
    );
    assert!(matches!(
        supervisor.apply(shell("late", "true", dir.path())).await,
        Err(SupervisorError::ShutDown)
    ));
}

#[tokio::test]
async fn a_failing_startup_probe_restarts_and_gates_readiness() {
    let dir = TestDir::new();
    let (supervisor, mut events) = start(dir.path());
    let mut spec = shell("slow", "exec sleep 300", dir.path());
    spec.probes.startup = Some(Probe {
        interval: Duration::from_millis(30),
        failure_threshold: 2,
        ..Probe::new(Check::Exec {
            command: Command::Shell("echo not yet >&2; exit 1".into()),
        })
    });
    supervisor.apply(spec).await.unwrap();
    let (pid, _) = started(&mut events).await;
    let (_, seen) = until(&mut events, "Restarting", |e| {
        matches!(e, Event::Restarting { .. })
    })
    .await;
    assert!(
        seen.iter().any(|e| matches!(e, Event::Unhealthy { probe: ProbeKind::Startup, reason, .. } if reason.contains("not yet"))),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::Exited { pid: p, .. } if *p == pid))
    );
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Ready { .. })),
        "startup gates readiness"
    );
    supervisor.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_command_that_cannot_start_fails_the_apply() {
    let dir = TestDir::new();
    let (supervisor, _events) = start(dir.path());
    let mut spec = shell("missing", "", dir.path());
    spec.command = Command::Argv(vec!["/nonexistent/kiln-test-binary".into()]);
    let outcome = supervisor.apply(spec).await;
    assert!(
        matches!(outcome, Err(SupervisorError::Spawn { .. })),
        "{outcome:?}"
    );
    let status = supervisor.status().await;
    assert!(
        matches!(status[0].state, InstanceState::Backoff { .. }),
        "still retried: {status:?}"
    );
    supervisor.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn limits_are_applied_and_reported() {
    let dir = TestDir::new();
    let (supervisor, mut events) = start(dir.path());
    let mut spec = shell(
        "limited",
        "echo \"data=$(ulimit -d)\"; exec sleep 300",
        dir.path(),
    );
    spec.limits = Limits {
        memory_bytes: Some(256 * 1024 * 1024),
        cpu: Some(0.5),
        pids: Some(512),
    };
    supervisor.apply(spec).await.unwrap();
    started(&mut events).await;
    let status = supervisor.status().await;
    let in_force = status[0].limits_in_force;
    assert_ne!(in_force, LimitsInForce::None);
    eprintln!("limits in force on this machine: {in_force}");
    if in_force == LimitsInForce::Rlimit {
        let state = dir.path().join("state");
        eventually("the ulimit line", || {
            !read_logs(&state, "limited", None, None, None).is_empty()
        })
        .await;
        let lines = read_logs(&state, "limited", None, None, None);
        assert_eq!(lines[0].text, "data=262144");
    }
    supervisor.shutdown(Duration::from_secs(1)).await;
}

/// The OOM killer needs a memory cgroup: on a machine where only rlimits are available an
/// allocation beyond the limit fails instead, and there is no OOM kill to report.
#[tokio::test]
async fn an_instance_killed_by_the_oom_killer_is_reported_as_such() {
    let dir = TestDir::new();
    let (supervisor, mut events) = start(dir.path());
    // `tail` keeps a line whole until its newline, and /dev/zero has none: it grows until the
    // limit stops it.
    let mut spec = shell("hog", "head -c 512m /dev/zero | tail", dir.path());
    spec.restart.mode = RestartMode::Never;
    spec.limits = Limits {
        memory_bytes: Some(32 * 1024 * 1024),
        cpu: None,
        pids: Some(64),
    };
    supervisor.apply(spec).await.unwrap();
    let in_force = supervisor.status().await[0].limits_in_force;
    if !matches!(in_force, LimitsInForce::CgroupV1 | LimitsInForce::CgroupV2) {
        eprintln!("SKIPPED: no writable memory cgroup on this machine (limits: {in_force})");
        supervisor.shutdown(Duration::from_secs(1)).await;
        return;
    }
    let (exited, _) = until(&mut events, "the hog's exit", |e| {
        matches!(e, Event::Exited { .. })
    })
    .await;
    let Event::Exited { exit, .. } = exited else {
        unreachable!()
    };
    assert_eq!(exit, ExitReason::OomKilled, "{in_force}");
    assert_eq!(exit.to_string(), "killed by the OOM killer");
    supervisor.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn restart_replaces_every_instance_one_at_a_time() {
    let dir = TestDir::new();
    let (supervisor, _events) = start(dir.path());
    let mut spec = shell("again", "exec sleep 300", dir.path());
    spec.replicas = 2;
    supervisor.apply(spec).await.unwrap();
    let before: Vec<u32> = supervisor
        .status()
        .await
        .iter()
        .filter_map(|s| s.pid)
        .collect();
    let mut events = supervisor.subscribe();
    supervisor.restart("again").await.unwrap();
    let after: Vec<u32> = supervisor
        .status()
        .await
        .iter()
        .filter_map(|s| s.pid)
        .collect();
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|pid| !before.contains(pid)),
        "{before:?} -> {after:?}"
    );
    let mut order = Vec::new();
    while let Ok(event) = events.try_recv() {
        match event {
            Event::Exited { id, .. } => order.push(format!("exit {}", id.instance)),
            Event::Started { id, .. } => order.push(format!("start {}", id.instance)),
            _ => {}
        }
    }
    assert_eq!(order, ["exit 0", "start 0", "exit 1", "start 1"]);
    assert!(matches!(
        supervisor.restart("nope").await,
        Err(SupervisorError::UnknownService(_))
    ));
    supervisor.shutdown(Duration::from_secs(1)).await;
}
