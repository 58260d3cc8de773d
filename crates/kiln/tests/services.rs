//! Services through the real binary and control plane: start in dependency order with
//! `${{ services.x.url }}`, self-heal after kill -9, scale shows as drift, `kiln down` leaves no
//! process, and a SIGKILLed control plane's instances are adopted, not duplicated.

// Tests panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Scratch, wait_until};

const SERVER: &str = r#"
const http = require('http');
const server = http.createServer((req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ upstream: process.env.UPSTREAM || null, port: process.env.PORT, service: process.env.KILN_SERVICE }));
});
server.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
"#;

const STACK: &str = r#"
name: svc
services:
  backend:
    run: node server.js
    replicas: 2
    health: { http: /, interval: 200ms, timeout: 1s }
    stop: { grace: 2s }
    backoff: { initial: 50ms, max: 1s }
  front:
    run: node server.js
    env: { UPSTREAM: "${{ services.backend.url }}" }
    health: { http: /, interval: 200ms, timeout: 1s }
"#;

struct Running<'a>(&'a Scratch);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["down"]);
        for pid in all_pids(self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn scratch() -> Scratch {
    let s = Scratch::new(STACK);
    std::fs::write(s.file("server.js"), SERVER).unwrap();
    s
}

fn ps(s: &Scratch) -> Vec<serde_json::Value> {
    let out = s.run(&["ps", "--json"]);
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn ready(s: &Scratch, n: usize) -> bool {
    let list = ps(s);
    list.len() == n && list.iter().all(|i| i["state"] == "ready")
}

fn all_pids(s: &Scratch) -> Vec<i32> {
    let dir = s.file(".kiln/services/run");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        // Only the pidfiles: the log FIFOs beside them would block a read.
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .filter_map(|v| v["pid"].as_i64().map(|p| p as i32))
        .collect()
}

fn alive(pid: i32) -> bool {
    // A zombie is not alive: /proc/PID/stat's third field is `Z`.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(") ")
            .next()
            .is_some_and(|rest| !rest.starts_with('Z'))
    })
}

#[test]
fn services_start_heal_scale_and_stop_with_the_control_plane() {
    let s = scratch();
    s.ok(&["up", "-d", "--interval", "1"]);
    let _guard = Running(&s);
    assert!(
        wait_until(Duration::from_secs(20), || ready(&s, 3)),
        "{:?}",
        ps(&s)
    );

    // The front reads the backend's URL from its env.
    let state = s.ok(&["state", "show", "services.backend", "--json"]);
    let backend: serde_json::Value = serde_json::from_str(&state).unwrap();
    let url = backend["outputs"]["url"].as_str().unwrap().to_owned();
    let front = ps(&s)
        .into_iter()
        .find(|i| i["service"] == "front")
        .unwrap();
    let reply = http_get(front["port"].as_u64().unwrap() as u16);
    assert_eq!(reply["upstream"], url.as_str(), "{reply}");

    // kill -9 of one instance: it comes back on its own.
    let victim = ps(&s)
        .into_iter()
        .find(|i| i["service"] == "backend")
        .unwrap();
    let pid = victim["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || ps(&s).iter().any(
            |i| i["service"] == "backend"
                && i["instance"] == victim["instance"]
                && i["restarts"].as_u64() >= Some(1)
                && i["state"] == "ready"
        )),
        "{:?}",
        ps(&s)
    );
    let events = s.ok(&["history", "--json"]);
    assert!(!events.is_empty());

    // kiln scale is recorded and shows as drift; apply goes back to the files.
    s.ok(&["scale", "backend=3"]);
    assert!(wait_until(Duration::from_secs(20), || ready(&s, 4)));
    let plan = s.ok(&["plan"]);
    assert!(
        plan.contains("3 instances run (scaled outside the files), the files say 2"),
        "{plan}"
    );
    s.ok(&["apply"]);
    assert!(wait_until(Duration::from_secs(20), || ready(&s, 3)));

    // kiln down: no process outlives it.
    let pids = all_pids(&s);
    assert_eq!(pids.len(), 3);
    s.ok(&["down"]);
    assert!(
        wait_until(Duration::from_secs(10), || pids.iter().all(|p| !alive(*p))),
        "instances left behind"
    );
}

#[test]
fn instances_survive_a_sigkilled_control_plane_and_are_adopted_once() {
    let s = scratch();
    s.ok(&["up", "-d", "--interval", "1"]);
    let _guard = Running(&s);
    assert!(wait_until(Duration::from_secs(20), || ready(&s, 3)));
    let before: Vec<i64> = ps(&s).iter().map(|i| i["pid"].as_i64().unwrap()).collect();
    let daemon: i32 = std::fs::read_to_string(s.file(".kiln/kiln.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(10), || !alive(daemon)));
    assert!(
        before.iter().all(|p| alive(*p as i32)),
        "instances keep serving while kiln is down"
    );

    s.ok(&["up", "-d", "--interval", "1"]);
    assert!(
        wait_until(Duration::from_secs(20), || ready(&s, 3)),
        "{:?}",
        ps(&s)
    );
    let mut after: Vec<i64> = ps(&s).iter().map(|i| i["pid"].as_i64().unwrap()).collect();
    let mut before = before;
    before.sort_unstable();
    after.sort_unstable();
    assert_eq!(
        before, after,
        "the same processes were adopted: no duplicates, no orphans"
    );
    assert!(ps(&s).iter().all(|i| i["adopted"] == true));
    s.ok(&["down"]);
    assert!(wait_until(Duration::from_secs(10), || after
        .iter()
        .all(|p| !alive(*p as i32))));
}

#[test]
fn services_without_a_control_plane_say_how_to_start_one() {
    let s = scratch();
    let out = s.run(&["apply"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kiln up"));
}

/// [`http_get`], or `None` while nothing answers with JSON.
fn try_http_get(port: u16) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.split("\r\n\r\n").nth(1)?).ok()
}

fn http_get(port: u16) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap()
}

#[test]
fn a_job_runs_to_completion_before_what_waits_for_it() {
    let s = Scratch::new(
        r#"
name: jobs
services:
  migrate:
    run: sh -c "echo migrated >> migrations.log"
    job: true
    restart: on-failure
  app:
    run: node server.js
    health: { http: /, interval: 200ms }
    depends_on:
      migrate: { condition: completed_successfully }
"#,
    );
    std::fs::write(s.file("server.js"), SERVER).unwrap();
    s.ok(&["up", "-d", "--interval", "1"]);
    let _guard = Running(&s);
    assert_eq!(
        std::fs::read_to_string(s.file("migrations.log")).unwrap(),
        "migrated\n"
    );
    assert!(
        ps(&s)
            .iter()
            .any(|i| i["service"] == "app" && i["state"] == "ready")
    );
    // The next plan leaves the finished job alone.
    assert_eq!(s.counts()["no_op"], 2);
    s.ok(&["down"]);
}

/// `condition: started` lets a dependent start as soon as its dependency's process runs, with
/// the dependency's stable address, instead of waiting until it is ready.
#[test]
fn a_started_condition_does_not_wait_for_readiness() {
    let s = Scratch::new(
        r#"
name: started
services:
  slow:
    run: node server.js
    health:
      readiness: { exec: "test -f go", interval: 100ms }
  eager:
    run: sh -c 'echo "$UPSTREAM" > eager.txt; exec node server.js'
    env: { UPSTREAM: "${{ services.slow.url }}" }
    health: { http: /, interval: 100ms }
    depends_on:
      slow: { condition: started }
"#,
    );
    std::fs::write(s.file("server.js"), SERVER).unwrap();
    let mut up = s
        .command(&["up", "-d", "--interval", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = Running(&s);
    let eager_started = wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(s.file("eager.txt")).is_ok_and(|t| t.ends_with('\n'))
    });
    assert!(
        eager_started,
        "eager never started while slow was not ready"
    );
    assert!(
        up.try_wait().unwrap().is_none(),
        "the first apply finished before slow was ready"
    );
    std::fs::write(s.file("go"), "").unwrap();
    let status = up.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut up.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(ready(&s, 2), "{:?}", ps(&s));
    // What eager was given before slow was ready is slow's stable address, which serves now.
    let upstream = std::fs::read_to_string(s.file("eager.txt")).unwrap();
    let port: u16 = upstream
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap();
    // The stable address learns of the ready instance from the supervisor's events, a
    // moment after the apply saw it ready.
    let mut last = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            last = try_http_get(port);
            last.as_ref().is_some_and(|r| r["service"] == "slow")
        }),
        "{last:?}"
    );
    s.ok(&["down"]);
}

#[test]
fn a_failing_job_stops_what_waits_for_it() {
    let s = Scratch::new(
        r#"
name: jobs
services:
  migrate:
    run: sh -c "echo schema broken >&2; exit 4"
    job: true
    restart: never
  app:
    run: node server.js
    depends_on:
      migrate: { condition: completed_successfully }
"#,
    );
    std::fs::write(s.file("server.js"), SERVER).unwrap();
    let out = s.run(&["up", "-d", "--interval", "1"]);
    let _guard = Running(&s);
    assert!(!out.status.success());
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(
        message.contains("exit code 4") && message.contains("schema broken"),
        "{message}"
    );
    assert!(
        message.contains("services.app: skipped because services.migrate failed"),
        "{message}"
    );
    assert!(!message.contains("app/0: started"), "{message}");
}

#[test]
fn a_service_runs_as_its_user() {
    let s = Scratch::new(
        r#"
name: users
services:
  low:
    run: sh -c "echo uid=$(id -u) home=$HOME; exec sleep 1000"
    user: nobody
"#,
    );
    if !nix::unistd::geteuid().is_root() {
        let out = s.run(&["up", "-d"]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("needs kiln to run as root"));
        return;
    }
    s.ok(&["up", "-d", "--interval", "5"]);
    let _guard = Running(&s);
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let expected = format!("uid={}", nobody.uid);
    assert!(
        wait_until(Duration::from_secs(10), || s
            .ok(&["logs", "low"])
            .contains(&expected)),
        "{}",
        s.ok(&["logs", "low"])
    );
    s.ok(&["down"]);

    let unknown = Scratch::new(
        "name: users\nservices:\n  low: { run: sleep 1000, user: no-such-user-kiln }\n",
    );
    let out = unknown.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("there is no user `no-such-user-kiln`"));
}

/// A throwaway system user, deleted on drop.
struct SystemUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl SystemUser {
    /// Creates one as root; `None` (after saying SKIPPED) where that is not possible and CI is
    /// unset, a failure where CI insists.
    fn create() -> Option<SystemUser> {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let name = format!("kiln-t{}", std::process::id());
        let created = nix::unistd::geteuid().is_root()
            && std::process::Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/bin/false",
                    &name,
                ])
                .status()
                .is_ok_and(|s| s.success());
        if !created {
            assert!(
                !ci,
                "CI=true but this test cannot create a system user (it needs root and useradd)"
            );
            eprintln!("SKIPPED: creating a system user needs root and useradd");
            return None;
        }
        let account = nix::unistd::User::from_name(&name).unwrap().unwrap();
        Some(SystemUser {
            name,
            uid: account.uid.as_raw(),
            gid: account.gid.as_raw(),
        })
    }

    /// Runs `argv` as this user in `dir`; whether it succeeded.
    fn succeeds(&self, dir: &std::path::Path, argv: &[&str]) -> bool {
        std::process::Command::new("setpriv")
            .args([
                "--reuid",
                &self.uid.to_string(),
                "--regid",
                &self.gid.to_string(),
            ])
            .args(["--clear-groups", "--"])
            .args(argv)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for SystemUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("userdel")
            .arg(&self.name)
            .status();
    }
}

/// A service with `path:` run as another user reads its release under `.kiln/releases/`,
/// while that user can neither list `.kiln` nor read the state nor talk to the control socket.
#[test]
fn a_user_service_reads_its_release_but_not_kilns_state() {
    let Some(user) = SystemUser::create() else {
        return;
    };
    let s = Scratch::new(&format!(
        r#"
name: users
ingress: {{ listen: "127.0.0.1:0" }}
services:
  app:
    path: app
    run: node server.js
    user: {}
    health: {{ http: /healthz, interval: 100ms, timeout: 1s }}
routes:
  - {{ host: app.localhost, path: /, service: app }}
"#,
        user.name
    ));
    // The stack directory must be passable by the service's user, as any directory it runs in.
    std::fs::set_permissions(
        s.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    std::fs::create_dir_all(s.file("app")).unwrap();
    std::fs::write(s.file("app/server.js"), common::RELEASE_SERVER).unwrap();
    std::fs::write(s.file("app/version"), "7").unwrap();
    s.ok(&["up", "-d", "--interval", "30"]);
    let _down = common::Down(&s);
    let status: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    let addr = status["ingress"].as_str().unwrap().to_owned();
    assert_eq!(common::get_body(&addr, "app.localhost"), "v7");

    let kiln = s.file(".kiln");
    assert!(
        !user.succeeds(s.path(), &["ls", ".kiln"]),
        "others cannot list .kiln"
    );
    assert!(
        !user.succeeds(&kiln, &["cat", "state.db"]),
        "the state is private"
    );
    let connect = "require('net').connect('kiln.sock').on('connect', () => process.exit(0)).on('error', () => process.exit(1))";
    let as_kiln = std::process::Command::new("node")
        .args(["-e", connect])
        .current_dir(&kiln)
        .status()
        .unwrap();
    assert!(as_kiln.success(), "kiln's own user reaches the socket");
    assert!(
        !user.succeeds(&kiln, &["node", "-e", connect]),
        "the control socket is private"
    );
    for entry in std::fs::read_dir(&kiln).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == "releases" {
            continue;
        }
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &entry.path().symlink_metadata().unwrap().permissions(),
        );
        assert_eq!(
            mode & 0o077,
            0,
            "{} is open to others ({mode:o})",
            entry.path().display()
        );
    }
}
