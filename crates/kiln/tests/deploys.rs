//! Zero-downtime deploys through the real binary: under constant load on the ingress, releases
//! are deployed by each strategy, a release that fails its health check and a canary whose
//! error rate trips the analysis are rolled back, and not one request fails.

// Tests panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Down, Load, RELEASE_SERVER, Scratch, common_get, wait_until};

fn stack(deploy: &str) -> String {
    format!(
        r#"
name: deploys
ingress: {{ listen: "127.0.0.1:0" }}
services:
  app:
    path: app
    run: node server.js
    replicas: 2
    health: {{ readiness: {{ http: /healthz, interval: 100ms, timeout: 1s, failure_threshold: 1 }} }}
    stop: {{ grace: 5s }}
    deploy: {deploy}
routes:
  - {{ host: app.localhost, path: /, service: app }}
"#
    )
}

const ROLLING: &str =
    "{ strategy: rolling, max_surge: 1, max_unavailable: 0, healthy_deadline: 10s }";
const BLUE_GREEN: &str = "{ strategy: blue-green, healthy_deadline: 10s }";
const CANARY: &str = "{ strategy: canary, steps: [50], pause: 1s, healthy_deadline: 10s, analysis: { min_requests: 5 } }";
/// A small first step: the ingress's retry budget (a fifth of successes) covers the canary's
/// share, so every one of its errors is retried on the stable side.
const SMALL_CANARY: &str = "{ strategy: canary, steps: [10], pause: 1s, healthy_deadline: 10s, analysis: { min_requests: 5 } }";

fn release(s: &Scratch, version: u32, mode: &str, deploy: &str) {
    std::fs::write(s.file("app/version"), version.to_string()).unwrap();
    std::fs::write(s.file("app/mode"), mode).unwrap();
    std::fs::write(s.file("kiln.yaml"), stack(deploy)).unwrap();
}

#[test]
fn deploys_by_every_strategy_and_failed_ones_drop_no_request() {
    let s = Scratch::new(&stack(ROLLING));
    std::fs::create_dir_all(s.file("app")).unwrap();
    std::fs::write(s.file("app/server.js"), RELEASE_SERVER).unwrap();
    release(&s, 0, "ok", ROLLING);
    s.ok(&["up", "-d", "--interval", "30"]);
    let _down = Down(&s);
    let status: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    let addr = status["ingress"].as_str().unwrap().to_owned();
    let load = Load::start(&addr, "app.localhost", "/", 4);

    let strategies = [ROLLING, BLUE_GREEN, CANARY, ROLLING, BLUE_GREEN, CANARY];
    for (i, deploy) in strategies.iter().enumerate() {
        let version = i as u32 + 1;
        release(&s, version, "ok", deploy);
        let out = s.ok(&["deploy", "app"]);
        assert!(out.contains("updated"), "{out}");
    }
    let last = strategies.len() as u32;

    // A release that never becomes healthy: the deploy fails, the old one keeps serving.
    release(&s, 100, "unhealthy", ROLLING);
    let failed = s.run(&["deploy", "app"]);
    assert_eq!(failed.status.code(), Some(3), "{failed:?}");
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("rolled back"), "{stderr}");
    assert!(
        stderr.contains("readiness"),
        "names the failing probe: {stderr}"
    );

    // A canary that answers 503: its analysis fails and it is rolled back; the ingress retried
    // its errors on the stable side, so no client saw them.
    release(&s, 200, "errors", SMALL_CANARY);
    let failed = s.run(&["deploy", "app"]);
    assert_eq!(
        failed.status.code(),
        Some(3),
        "{failed:?}\n{}",
        s.ok(&["releases", "app", "--json"])
    );
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("canary analysis"), "{stderr}");
    assert!(stderr.contains("error ratio"), "{stderr}");

    // The last good release serves; a rollback goes back one more.
    let expected = format!("v{last}");
    assert!(wait_until(Duration::from_secs(10), || {
        common_get(&addr) == expected
    }));
    let tally = load.finish();
    tally.assert_none_failed();
    assert!(tally.ok > 200, "the load ran: {tally:?}");
    assert!(!tally.bodies.contains_key("v100") && !tally.bodies.contains_key("v200"));

    let releases: serde_json::Value =
        serde_json::from_str(&s.ok(&["releases", "app", "--json"])).unwrap();
    let deploys = releases["deploys"].as_array().unwrap();
    let results: Vec<&str> = deploys
        .iter()
        .map(|d| d["result"].as_str().unwrap())
        .collect();
    assert_eq!(
        results.iter().filter(|r| **r == "rolled-back").count(),
        2,
        "{results:?}"
    );
    let strategies_used: std::collections::BTreeSet<&str> = deploys
        .iter()
        .map(|d| d["strategy"].as_str().unwrap())
        .collect();
    for s in ["initial", "rolling", "blue-green", "canary"] {
        assert!(strategies_used.contains(s), "{strategies_used:?}");
    }

    // Roll back: the previous release serves, and the plan says an apply would undo it.
    let rollback = s.ok(&["rollback", "app"]);
    let previous = format!("v{}", last - 1);
    assert!(
        wait_until(Duration::from_secs(10), || common_get(&addr) == previous),
        "serving {:?} after:\n{rollback}\n{}",
        common_get(&addr),
        s.ok(&["releases", "app"])
    );
    let plan = s.ok(&["plan"]);
    assert!(plan.contains("release_id"), "{plan}");

    // Nine releases were made; only the five most recently deployed keep their files (the
    // records all stay).
    let releases: serde_json::Value =
        serde_json::from_str(&s.ok(&["releases", "app", "--json"])).unwrap();
    let listed = releases["releases"].as_array().unwrap();
    let kept = listed.iter().filter(|r| r["on_disk"] == true).count();
    assert!(listed.len() > 5 && kept == 5, "{kept} of {}", listed.len());
    let dirs = std::fs::read_dir(s.file(".kiln/releases"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(dirs, 5);
}

/// Build once, deploy that: a workflow uploads the service's files as an artifact; the
/// service names it, and runs the artifact's files (not the tree's) as a release recorded with
/// its run and commit.
#[test]
fn a_pipeline_artifact_becomes_the_release_a_service_runs() {
    let s = Scratch::new(
        r#"
name: built
services:
  app:
    release: { pipeline: ci, artifact: app }
    run: node server.js
    health: { readiness: { http: /healthz, interval: 100ms } }
"#,
    );
    std::fs::create_dir_all(s.file("src")).unwrap();
    std::fs::write(s.file("src/server.js"), RELEASE_SERVER).unwrap();
    std::fs::create_dir_all(s.file(".github/workflows")).unwrap();
    std::fs::write(
        s.file(".github/workflows/ci.yml"),
        r#"
name: ci
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: mkdir -p dist && cp src/server.js dist/ && echo 7 > dist/version
      - uses: actions/upload-artifact@v4
        with: { name: app, path: dist/ }
"#,
    )
    .unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "-m",
            "init",
        ],
    ] {
        let out = std::process::Command::new("git")
            .current_dir(s.path())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    // Before the pipeline ran, the release cannot be known: validation says what to do.
    let early = s.run(&["validate"]);
    assert_eq!(early.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&early.stderr).contains("kiln ci run"),
        "{early:?}"
    );
    s.ok(&["ci", "run", "ci.yml"]);
    s.ok(&["up", "-d", "--interval", "30"]);
    let _down = Down(&s);
    let state: serde_json::Value =
        serde_json::from_str(&s.ok(&["state", "show", "services.app", "--json"])).unwrap();
    let url = state["outputs"]["url"].as_str().unwrap().to_owned();
    let addr = url.trim_start_matches("http://").to_owned();
    // The artifact's version file, which the tree does not have.
    assert!(wait_until(Duration::from_secs(10), || {
        use std::io::{Read, Write};
        let Ok(mut c) = std::net::TcpStream::connect(&addr) else {
            return false;
        };
        let _ = write!(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut text = String::new();
        let _ = c.read_to_string(&mut text);
        text.ends_with("v7")
    }));
    let releases: serde_json::Value =
        serde_json::from_str(&s.ok(&["releases", "app", "--json"])).unwrap();
    let release = &releases["releases"][0];
    assert_eq!(release["source"], "pipeline:ci/app", "{releases:#}");
    assert_eq!(release["run_id"], 1);
    assert_eq!(release["commit"].as_str().unwrap().len(), 40);
    assert_eq!(releases["current"], release["digest"]);
}

/// A blue-green deploy keeps the old version idle for an instant rollback. A control plane
/// killed meanwhile must not, once restarted, send users to that idle version or leave its
/// processes behind. (The kept set is not restored: a rollback after the restart is a full
/// blue-green deploy rather than an instant switch.)
#[test]
fn a_kept_blue_green_set_never_serves_after_a_control_plane_crash() {
    const KEEPING: &str = "{ strategy: blue-green, healthy_deadline: 10s, keep_old: 1h }";
    let s = Scratch::new(&stack(KEEPING));
    std::fs::create_dir_all(s.file("app")).unwrap();
    std::fs::write(s.file("app/server.js"), RELEASE_SERVER).unwrap();
    release(&s, 1, "ok", KEEPING);
    s.ok(&["up", "-d", "--interval", "30"]);
    let _down = Down(&s);
    release(&s, 2, "ok", KEEPING);
    s.ok(&["deploy", "app"]);
    let sets = |s: &Scratch| -> std::collections::BTreeSet<String> {
        let ps: serde_json::Value = serde_json::from_str(&s.ok(&["ps", "--json"])).unwrap();
        ps.as_array()
            .unwrap()
            .iter()
            .map(|i| i["set"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        sets(&s).len(),
        2,
        "the old set is kept idle: {:?}",
        sets(&s)
    );

    let pid: i32 = std::fs::read_to_string(s.file(".kiln/kiln.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        nix::sys::signal::kill(pid, None).is_err()
    }));
    s.ok(&["up", "-d", "--interval", "30"]);
    let status: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    let addr = status["ingress"].as_str().unwrap().to_owned();
    let bodies: Vec<String> = (0..60).map(|_| common_get(&addr)).collect();
    assert!(
        bodies.iter().all(|b| b == "v2"),
        "only the live version serves after the restart: {bodies:?}"
    );
    assert_eq!(sets(&s).len(), 1, "{:?}", sets(&s));
    s.ok(&["rollback", "app"]);
    assert!(wait_until(Duration::from_secs(10), || common_get(&addr) == "v1"));
}
