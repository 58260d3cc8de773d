//! Zero-downtime deploys through the real binary: under constant load on the ingress, releases
//! are deployed by each strategy, a release that fails its health check and a canary whose
//! error rate trips the analysis are rolled back, and not one request fails.

// Tests panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Down, Load, RELEASE_SERVER, Scratch, common_get, wait_until};

/// The bound of a wait for the control plane (a process to die, the ingress to serve another
/// release): generous, since a loaded machine makes seconds of milliseconds. A passing wait
/// ends when its condition holds; only a failure waits this long.
const WAIT: Duration = Duration::from_secs(60);

/// The readiness probe tolerates a loaded machine: with a 1 s timeout and one failure, a
/// control plane starved for a second can time out every instance's probe at once (delivery.rs
/// saw such timeouts at a load average of 30) and take them all out of rotation, and the
/// ingress answers 503. A release that is never ready still fails.
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
    health: {{ readiness: {{ http: /healthz, interval: 100ms, timeout: 5s, failure_threshold: 3 }} }}
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
/// The analysis judges errors here, not latency: at a load average of 30 a good canary's p99
/// (240 ms against the warm stable side's 97 ms) failed the default ×1.5 + 50 ms.
const CANARY: &str = "{ strategy: canary, steps: [50], pause: 1s, healthy_deadline: 10s, analysis: { min_requests: 5, latency_slack: 10s } }";
/// A small first step: the ingress's retry budget (a fifth of successes) covers the canary's
/// share, so every one of its errors is retried on the stable side.
const SMALL_CANARY: &str = "{ strategy: canary, steps: [10], pause: 1s, healthy_deadline: 10s, analysis: { min_requests: 5, latency_slack: 10s } }";

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
    assert!(wait_until(WAIT, || { common_get(&addr) == expected }));
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
        wait_until(WAIT, || common_get(&addr) == previous),
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
    assert!(wait_until(WAIT, || {
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

const KEEPING: &str = "{ strategy: blue-green, healthy_deadline: 10s, keep_old: 1h }";

/// The pids of each set of `app`, from `kiln ps`.
fn pids_by_set(s: &Scratch) -> BTreeMap<String, BTreeSet<u32>> {
    let ps: serde_json::Value = serde_json::from_str(&s.ok(&["ps", "--json"])).unwrap();
    let mut sets: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for instance in ps.as_array().unwrap() {
        let pid = instance["pid"].as_u64().map(|p| u32::try_from(p).unwrap());
        sets.entry(instance["set"].as_str().unwrap().to_owned())
            .or_default()
            .extend(pid);
    }
    sets
}

/// The newest 500 events of the stack, oldest first.
fn events(s: &Scratch) -> Vec<serde_json::Value> {
    let events: serde_json::Value =
        serde_json::from_str(&s.ok(&["events", "--json", "--limit", "500"])).unwrap();
    events.as_array().unwrap().clone()
}

fn event<'a>(events: &'a [serde_json::Value], kind: &str) -> Option<&'a serde_json::Value> {
    events.iter().rev().find(|e| e["kind"] == kind)
}

/// Runs release 1, deploys release 2 blue-green with the first kept idle, and SIGKILLs the
/// control plane. Returns the kept set and its pids.
fn kept_then_crashed(s: &Scratch) -> (String, BTreeSet<u32>) {
    std::fs::create_dir_all(s.file("app")).unwrap();
    std::fs::write(s.file("app/server.js"), RELEASE_SERVER).unwrap();
    release(s, 1, "ok", KEEPING);
    s.ok(&["up", "-d", "--interval", "30"]);
    let (v1, v1_pids) = pids_by_set(s).into_iter().next().unwrap();
    release(s, 2, "ok", KEEPING);
    s.ok(&["deploy", "app"]);
    let sets = pids_by_set(s);
    assert_eq!(sets.len(), 2, "the old set is kept idle: {sets:?}");
    assert_eq!(sets[&v1], v1_pids);

    let pid: i32 = std::fs::read_to_string(s.file(".kiln/kiln.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    assert!(
        wait_until(WAIT, || nix::sys::signal::kill(pid, None).is_err()),
        "the control plane (pid {pid}) outlived its SIGKILL"
    );
    (v1, v1_pids)
}

/// A blue-green deploy keeps the old version idle for an instant rollback, and a SIGKILL of
/// the control plane does not lose it: the restarted control plane adopts the kept processes
/// (the same pids) out of traffic, so only the live version serves, and `kiln rollback`
/// switches back to those very processes at once without one failed request.
#[test]
fn a_kept_blue_green_set_survives_a_control_plane_crash_for_an_instant_rollback() {
    let s = Scratch::new(&stack(KEEPING));
    let _down = Down(&s);
    let (v1, v1_pids) = kept_then_crashed(&s);

    s.ok(&["up", "-d", "--interval", "30"]);
    let status: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    let addr = status["ingress"].as_str().unwrap().to_owned();
    let bodies: Vec<String> = (0..60).map(|_| common_get(&addr)).collect();
    assert!(
        bodies.iter().all(|b| b == "v2"),
        "only the live version serves after the restart: {bodies:?}"
    );
    let sets = pids_by_set(&s);
    assert_eq!(sets.len(), 2, "the kept set is back: {sets:?}");
    assert_eq!(
        sets[&v1], v1_pids,
        "the kept processes were adopted, not replaced"
    );
    let restored = events(&s);
    let restored = event(&restored, "deploy.kept_restored").expect("a kept_restored event");
    assert!(
        restored["message"].as_str().unwrap().contains(&v1),
        "{restored}"
    );

    let load = Load::start(&addr, "app.localhost", "/", 4);
    s.ok(&["rollback", "app"]);
    let bodies: Vec<String> = (0..20).map(|_| common_get(&addr)).collect();
    let tally = load.finish();
    tally.assert_none_failed();
    assert!(
        bodies.iter().all(|b| b == "v1"),
        "the switch back is done when the rollback returns: {bodies:?}"
    );
    let recent = events(&s);
    let deployed = event(&recent, "deploy.succeeded").unwrap();
    assert!(
        deployed["message"]
            .as_str()
            .unwrap()
            .contains("switch-back"),
        "{deployed}"
    );
    assert_eq!(
        pids_by_set(&s)[&v1],
        v1_pids,
        "no new process: the kept ones serve"
    );

    // The switch back kept release 2 idle in turn. A graceful stop stops it and forgets it:
    // the next start has nothing to take back.
    let kept_events = |s: &Scratch| {
        events(s)
            .iter()
            .filter(|e| {
                e["kind"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("deploy.kept_"))
            })
            .count()
    };
    assert_eq!(pids_by_set(&s).len(), 2);
    let before = kept_events(&s);
    s.ok(&["down"]);
    s.ok(&["up", "-d", "--interval", "30"]);
    assert_eq!(kept_events(&s), before, "{:#?}", events(&s));
    assert_eq!(pids_by_set(&s).len(), 1);
}

/// A kept instance that dies while the control plane is down loses the instant switch back:
/// the restart records which one and stops the rest, and a rollback deploys the release again
/// (new processes), saying why.
#[test]
fn a_kept_set_that_lost_an_instance_while_kiln_was_down_is_deployed_again() {
    let s = Scratch::new(&stack(KEEPING));
    let _down = Down(&s);
    let (v1, v1_pids) = kept_then_crashed(&s);
    let victim = *v1_pids.iter().next().unwrap();
    // Each instance leads its own process group.
    let group = nix::unistd::Pid::from_raw(-i32::try_from(victim).unwrap());
    nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL).unwrap();
    let victim = nix::unistd::Pid::from_raw(i32::try_from(victim).unwrap());
    assert!(wait_until(WAIT, || {
        nix::sys::signal::kill(victim, None).is_err()
    }));

    s.ok(&["up", "-d", "--interval", "30"]);
    let lost = events(&s);
    let lost = event(&lost, "deploy.kept_lost").expect("a kept_lost event");
    let message = lost["message"].as_str().unwrap();
    assert!(
        message.contains(&v1) && message.contains(&format!("(pid {victim}) exited")),
        "{message}"
    );
    let sets = pids_by_set(&s);
    assert_eq!(
        sets.len(),
        1,
        "the rest of the kept set is stopped: {sets:?}"
    );
    for pid in &v1_pids {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(*pid).unwrap());
        assert!(wait_until(WAIT, || {
            nix::sys::signal::kill(pid, None).is_err()
        }));
    }

    s.ok(&["rollback", "app"]);
    let status: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    let addr = status["ingress"].as_str().unwrap().to_owned();
    assert!(wait_until(WAIT, || common_get(&addr) == "v1"));
    let events = events(&s);
    let deployed = event(&events, "deploy.succeeded").unwrap();
    assert!(
        deployed["message"].as_str().unwrap().contains("blue-green"),
        "{deployed}"
    );
    let steps = deployed["data"]["steps"].to_string();
    assert!(steps.contains("no instant switch back"), "{steps}");
    assert!(pids_by_set(&s)[&v1].is_disjoint(&v1_pids), "new processes");
}
