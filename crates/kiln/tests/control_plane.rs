//! The control plane: `kiln up -d`, the API on its socket, reconcile, `kiln down`, and recovery
//! from SIGKILL.

// Tests panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Scratch, wait_until};

const STACK: &str = r#"
name: cp
resources:
  base: { kind: exec, create: "echo '{\"v\": \"1\"}'" }
  auto:
    kind: file
    path: out/auto
    content: "v${{ resources.base.outputs.v }}"
    reconcile: auto
  follower: { kind: file, path: out/follower, content: "${{ resources.auto.outputs.sha256 }}" }
  manual: { kind: file, path: out/manual, content: manual }
"#;

/// Stops the control plane when the test ends, however it ends.
struct Running<'a>(&'a Scratch);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.0.file(".kiln/kiln.pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn pid(s: &Scratch) -> i32 {
    std::fs::read_to_string(s.file(".kiln/kiln.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn status(s: &Scratch) -> serde_json::Value {
    serde_json::from_str(&s.ok(&["status", "--json"])).unwrap()
}

#[test]
fn up_detached_repairs_auto_drift_reports_the_rest_and_stops_on_down() {
    let s = Scratch::new(STACK);
    let up = s.ok(&["up", "-d", "--interval", "1"]);
    let _guard = Running(&s);
    assert!(up.contains("kiln is up"), "{up}");
    let socket = s.file(".kiln/kiln.sock");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the API socket is owner-only");
    assert_eq!(status(&s)["resources"], 4);

    std::fs::write(s.file("out/auto"), "edited").unwrap();
    std::fs::write(s.file("out/manual"), "edited").unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || std::fs::read_to_string(
            s.file("out/auto")
        )
        .unwrap_or_default()
            == "v1"),
        "auto drift was not repaired"
    );
    assert!(
        wait_until(Duration::from_secs(20), || status(&s)["drift"]
            == serde_json::json!(["resources.manual"])),
        "{}",
        status(&s)
    );
    assert_eq!(
        std::fs::read_to_string(s.file("out/manual")).unwrap(),
        "edited",
        "report-only drift is left alone"
    );

    // A CLI apply goes through the control plane (the one writer) and repairs the rest.
    let applied = s.ok(&["apply"]);
    assert!(applied.contains("resources.manual: updated"), "{applied}");
    assert_eq!(
        std::fs::read_to_string(s.file("out/manual")).unwrap(),
        "manual"
    );

    let daemon = pid(&s);
    assert!(s.ok(&["down"]).contains("kiln stopped"));
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon), None).is_err(),
        "the control plane is gone"
    );
    assert!(!socket.exists());
    assert!(s.ok(&["status"]).contains("not running"));
}

#[test]
fn a_second_control_plane_is_refused_and_sigkill_is_survived() {
    let s = Scratch::new(STACK);
    s.ok(&["up", "-d", "--interval", "1"]);
    let _guard = Running(&s);
    let second = s.run(&["up", "-d"]);
    assert_eq!(
        second.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );

    let first = pid(&s);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(first), None).is_err()
    }));
    // Stale socket and pidfile are left behind; the next start takes over.
    s.ok(&["up", "-d", "--interval", "1"]);
    assert_ne!(pid(&s), first);
    assert_eq!(status(&s)["phase"], "converging");
    assert_eq!(s.counts()["no_op"], 4);
    s.ok(&["down"]);
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let s = Scratch::new(STACK);
    let mut child = s
        .command(&["up", "--interval", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = Running(&s);
    assert!(wait_until(Duration::from_secs(20), || s
        .run(&["status", "--json"])
        .stdout
        .windows(10)
        .any(|w| w == b"converging")));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!s.file(".kiln/kiln.sock").exists());
}

#[test]
fn a_change_outside_kiln_is_repaired_at_once_not_at_the_next_interval() {
    let s = Scratch::new(STACK);
    // An hour between passes: only the file watcher can bring the repair within the deadline.
    s.ok(&["up", "-d", "--interval", "3600"]);
    let _guard = Running(&s);
    std::fs::remove_file(s.file("out/auto")).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(
            s.file("out/auto")
        )
        .is_ok_and(|c| c == "v1")),
        "the deleted file was not rewritten"
    );
    std::fs::write(s.file("out/manual"), "edited").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || status(&s)["drift"]
            == serde_json::json!(["resources.manual"])),
        "{}",
        status(&s)
    );
    s.ok(&["down"]);
}
