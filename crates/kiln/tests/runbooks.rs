//! Runbooks end to end with the real binary: a dry run (here and through the control plane)
//! changes nothing; a run waits at its approval step for `kiln runbook approve`; then a
//! flapping service (its readiness fails a few seconds after every start) fires an alert
//! whose runbook restarts it. The guard (`max_runs: 2, per: 1h`) lets two
//! restarts through, then refuses and escalates to a webhook receiver in the test instead of
//! looping. Every run is in the audit (`kiln runbook show`) and in `runbook.*` events that
//! name the service. A runbook rolls a deployed release back (trigger `runbook`) and waits on
//! a metrics query; under load, a release that fails after passing its deploy's gates burns
//! its SLO's error budget, and the burn-rate alert's runbook rolls it back.

// Tests panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::Duration;

use common::{Hook, Load, Scratch, common_get, wait_until};

/// Ready until the file `flap` exists and the process has run for 5 s; then its readiness
/// fails until it is restarted.
const SERVER: &str = r#"
const http = require('http');
const fs = require('fs');
const started = Date.now();
const server = http.createServer((req, res) => {
  if (req.url === '/health' && fs.existsSync('flap') && Date.now() - started > 5000) {
    res.statusCode = 503; res.end('sick'); return;
  }
  res.end('ok');
});
server.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
"#;

const STACK: &str = r#"
name: remediation
services:
  api:
    run: node server.js
    health: { readiness: { http: /health, interval: 200ms, timeout: 5s, failure_threshold: 3 } }
receivers:
  - { name: oncall, webhook: "http://127.0.0.1:HOOK_PORT/hook" }
notify:
  evaluation_interval: 1s
alerts:
  - name: api-unready
    expr: 'max by (service) (kiln_instance_ready{service="api"}) == 0'
    severity: page
    runbook: restart-service
runbooks:
  restart-service:
    description: |
      Restarts a service whose instances stopped being ready.
      A restart that does not hold is a bug to look at: after two, a human is paged.
    params:
      service: { type: service, required: true }
    guards: { max_runs: 2, per: 1h, escalate: oncall }
    steps:
      - { name: restart, action: restart, with: { service: "${{ params.service }}" }, timeout: 30s, retries: 1 }
      - { name: note, run: "echo restarted ${{ params.service }}", timeout: 5s }
  careful:
    steps:
      - { action: approve, with: { message: "write the file?" } }
      - { name: write, run: "echo done > approved.txt" }
"#;

/// The escalations `hook` received.
fn escalations(hook: &Hook) -> Vec<serde_json::Value> {
    hook.bodies()
        .into_iter()
        .filter(|b| b["commonLabels"]["alertname"] == "RunbookEscalated")
        .collect()
}

struct Stop<'a>(&'a Scratch);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["down"]);
    }
}

fn runs(s: &Scratch) -> Vec<serde_json::Value> {
    let all: serde_json::Value =
        serde_json::from_str(&s.ok(&["runbook", "runs", "--json"])).unwrap();
    all.as_array().unwrap().clone()
}

/// The real runs of `restart-service` with this status.
fn with_status(s: &Scratch, status: &str) -> Vec<serde_json::Value> {
    runs(s)
        .into_iter()
        .filter(|r| {
            r["runbook"] == "restart-service" && r["status"] == status && r["dry_run"] == false
        })
        .collect()
}

fn api_pid(s: &Scratch) -> u64 {
    let ps: serde_json::Value = serde_json::from_str(&s.ok(&["ps", "--json"])).unwrap();
    ps.as_array().unwrap()[0]["pid"].as_u64().unwrap()
}

fn events(s: &Scratch) -> Vec<serde_json::Value> {
    let out = s.ok(&[
        "events",
        "--json",
        "--limit",
        "100000",
        "--address",
        "runbooks.restart-service",
    ]);
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn evaluations(s: &Scratch) -> u64 {
    let view: serde_json::Value = serde_json::from_str(&s.ok(&["alerts", "--json"])).unwrap();
    view["evaluations"].as_u64().unwrap()
}

#[test]
fn a_dry_run_changes_nothing_an_approval_gates_and_a_flapping_service_is_restarted_twice_then_escalated()
 {
    let hook = Hook::start();
    let s = Scratch::new(&STACK.replace("HOOK_PORT", &hook.port.to_string()));
    std::fs::write(s.file("server.js"), SERVER).unwrap();

    let listed = s.ok(&["runbook", "list"]);
    assert!(
        listed.contains("restart-service(service: service (required))")
            && listed.contains("restart (restart) → note (command)")
            && listed
                .contains("at most 2 runs per target per 1h, 5 targets; then escalate to oncall"),
        "{listed}"
    );
    // Without a control plane a dry run executes here and records nothing.
    let dry_run = || {
        s.ok(&[
            "runbook",
            "run",
            "restart-service",
            "--param",
            "service=api",
            "--dry-run",
        ])
    };
    let here = dry_run();
    assert!(here.contains("dry run: would restart api"), "{here}");

    s.ok(&["up", "-d", "--interval", "5"]);
    let stop = Stop(&s);
    let pid = api_pid(&s);

    // A dry run through the control plane: audited, and the service keeps its process.
    let dry = dry_run();
    assert!(
        dry.contains("(dry run)") && dry.contains("dry run: would restart api"),
        "{dry}"
    );
    let dry_runs: Vec<serde_json::Value> = runs(&s)
        .into_iter()
        .filter(|r| r["dry_run"] == true)
        .collect();
    assert_eq!(dry_runs.len(), 1);
    assert_eq!(dry_runs[0]["status"], "succeeded");
    assert_eq!(dry_runs[0]["trigger"], "manual");
    assert_eq!(api_pid(&s), pid, "a dry run restarted the service");
    // Bad parameters are refused with the reason.
    let bad = s.run(&[
        "runbook",
        "run",
        "restart-service",
        "--param",
        "service=nope",
    ]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("no service named `nope`"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // A run waits at its approval step until someone approves it.
    let waiting = s.ok(&["runbook", "run", "careful"]);
    assert!(waiting.contains("awaiting_approval"), "{waiting}");
    let careful = waiting
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("run "))
        .unwrap()
        .to_owned();
    assert!(!s.file("approved.txt").exists());
    s.ok(&["runbook", "approve", &careful]);
    assert!(wait_until(Duration::from_secs(20), || {
        s.ok(&["runbook", "show", &careful]).contains(": succeeded")
    }));
    assert!(s.file("approved.txt").exists());
    assert!(
        s.ok(&["runbook", "show", &careful])
            .contains("approved by ")
    );

    // The service starts flapping: each alert firing restarts it, twice; then the guard
    // refuses and escalates instead of restarting again.
    std::fs::write(s.file("flap"), "").unwrap();
    assert!(
        wait_until(Duration::from_secs(90), || !escalations(&hook).is_empty()),
        "no escalation; runs: {:#?}",
        runs(&s)
    );
    let succeeded = with_status(&s, "succeeded");
    assert_eq!(succeeded.len(), 2, "{succeeded:#?}");
    for run in &succeeded {
        assert_eq!(run["trigger"], "alert");
        assert_eq!(run["triggered_by"], "alerts.api-unready");
        assert_eq!(
            run["params"]["service"], "api",
            "filled from the alert's label"
        );
    }
    let refused = with_status(&s, "refused");
    assert!(!refused.is_empty());
    assert!(
        refused[0]["detail"]
            .as_str()
            .unwrap()
            .contains("2 runs on this target within 1h"),
        "{refused:#?}"
    );
    assert_ne!(api_pid(&s), pid, "the runbook restarted the service");

    // The escalation is an Alertmanager v4 body naming the runbook and the service.
    let escalation = escalations(&hook).remove(0);
    assert_eq!(escalation["version"], "4");
    assert_eq!(escalation["receiver"], "oncall");
    let alert = &escalation["alerts"][0];
    assert_eq!(alert["labels"]["runbook"], "restart-service");
    assert_eq!(alert["labels"]["target"], "api");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("needs a human"),
        "{escalation:#}"
    );

    // The audit of a run: both steps, with what they did.
    let id = succeeded[0]["id"].as_str().unwrap();
    let shown = s.ok(&["runbook", "show", &id[..23]]);
    assert!(
        shown.contains("triggered by alerts.api-unready (alert)")
            && shown.contains("restarted every instance of api")
            && shown.contains("restarted api")
            && shown.contains("params: service=api"),
        "{shown}"
    );
    let audit: serde_json::Value =
        serde_json::from_str(&s.ok(&["runbook", "show", id, "--json"])).unwrap();
    let steps = audit["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{audit:#}");
    assert!(
        steps
            .iter()
            .all(|st| st["status"] == "succeeded" && st["finished_at"].is_i64())
    );

    // Events name the service, for incident timelines.
    let events = events(&s);
    let kinds: Vec<&str> = events
        .iter()
        .filter(|e| {
            e["kind"]
                .as_str()
                .is_some_and(|k| k.starts_with("runbook."))
        })
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "runbook.started",
        "runbook.step",
        "runbook.succeeded",
        "runbook.refused",
        "runbook.escalated",
    ] {
        assert!(kinds.contains(&kind), "no {kind} event: {kinds:?}");
    }
    assert!(
        events
            .iter()
            .filter(|e| e["kind"] == "runbook.step")
            .all(|e| e["data"]["service"] == "api")
    );

    // Left alone, the service stays unready and the alert firing; the guard holds: still two
    // restarts after ten more evaluations.
    let seen = evaluations(&s);
    assert!(wait_until(Duration::from_secs(30), || evaluations(&s) >= seen + 10));
    assert_eq!(with_status(&s, "succeeded").len(), 2);
    drop(stop);
}

/// Serves its `version` file's content.
const VERSIONED: &str = r#"
const http = require('http');
const version = require('fs').readFileSync('version', 'utf8').trim();
const server = http.createServer((req, res) => res.end('v' + version));
server.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
"#;

const ROLLBACK_STACK: &str = r#"
name: rollbacks
services:
  app:
    path: app
    run: node server.js
    health: { readiness: { http: /, interval: 100ms, timeout: 5s } }
runbooks:
  roll-back:
    params:
      service: { type: service, required: true }
    steps:
      - { action: rollback, with: { service: "${{ params.service }}" }, timeout: 60s }
      - { action: wait, with: { query: 'max(kiln_instance_ready{service="app"}) == 1' }, timeout: 30s }
"#;

/// A running stack whose `app` service (with `path: app`) runs `server` at version 1.
fn app_at_version_1(stack: &str, server: &str) -> Scratch {
    let s = Scratch::new(stack);
    std::fs::create_dir_all(s.file("app")).unwrap();
    std::fs::write(s.file("app/server.js"), server).unwrap();
    std::fs::write(s.file("app/version"), "1").unwrap();
    s.ok(&["up", "-d", "--interval", "30"]);
    s
}

fn releases_of_app(s: &Scratch) -> serde_json::Value {
    serde_json::from_str(&s.ok(&["releases", "app", "--json"])).unwrap()
}

#[test]
fn a_runbook_rolls_a_release_back_through_the_control_plane() {
    let s = app_at_version_1(ROLLBACK_STACK, VERSIONED);
    let stop = Stop(&s);
    let releases = || releases_of_app(&s);
    let first = releases()["current"].clone();
    std::fs::write(s.file("app/version"), "2").unwrap();
    s.ok(&["deploy", "app"]);
    assert_ne!(releases()["current"], first);

    let out = s.ok(&["runbook", "run", "roll-back", "--param", "service=app"]);
    assert!(
        out.contains(": succeeded") && out.contains("rolled app back to release"),
        "{out}"
    );
    assert!(
        out.contains("holds"),
        "the wait step queried the metrics store: {out}"
    );
    let after = releases();
    assert_eq!(after["current"], first, "{after:#}");
    let last = after["deploys"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|d| d["id"].as_i64())
        .unwrap()
        .clone();
    assert_eq!(last["trigger"], "runbook", "{after:#}");
    drop(stop);
}

#[test]
fn a_run_left_waiting_when_the_control_plane_stops_is_interrupted() {
    let s = Scratch::new(
        r#"
name: interrupted
runbooks:
  careful:
    steps:
      - { action: approve, with: { message: "write the file?" } }
      - { name: write, run: "echo done > approved.txt" }
"#,
    );
    s.ok(&["up", "-d", "--interval", "30"]);
    let stop = Stop(&s);
    let waiting = s.ok(&["runbook", "run", "careful"]);
    let id = waiting
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("run "))
        .unwrap()
        .to_owned();
    assert!(waiting.contains("awaiting_approval"), "{waiting}");
    s.ok(&["down"]);

    // The next control plane does not wait for that approval any more: the run is over.
    s.ok(&["up", "-d", "--interval", "30"]);
    let shown = s.ok(&["runbook", "show", &id]);
    assert!(shown.contains(": interrupted"), "{shown}");
    let late = s.run(&["runbook", "approve", &id]);
    assert!(!late.status.success(), "{late:?}");
    assert!(!s.file("approved.txt").exists());
    let events = s.ok(&["events", "--json"]);
    assert!(events.contains("runbook.interrupted"), "{events}");
    drop(stop);
}

/// Serves `v<version>`; any version but 1 is unready until the file `GATE` exists.
const GATED: &str = r#"
const http = require('http');
const fs = require('fs');
const version = fs.readFileSync('version', 'utf8').trim();
const server = http.createServer((req, res) => {
  if (version !== '1' && !fs.existsSync(GATE)) { res.statusCode = 503; res.end('not yet'); return; }
  res.end('v' + version);
});
server.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
"#;

#[test]
fn a_rollback_asked_for_during_a_deploy_undoes_that_deploy() {
    let s = Scratch::new(ROLLBACK_STACK);
    let gate = s.file("gate");
    std::fs::create_dir_all(s.file("app")).unwrap();
    let server = format!("const GATE = {:?};\n{GATED}", gate.display().to_string());
    std::fs::write(s.file("app/server.js"), server).unwrap();
    std::fs::write(s.file("app/version"), "1").unwrap();
    s.ok(&["up", "-d", "--interval", "30"]);
    let stop = Stop(&s);
    let first = releases_of_app(&s)["current"].clone();

    // Version 2's deploy waits for its instance to be ready, which waits for the gate.
    std::fs::write(s.file("app/version"), "2").unwrap();
    let deploy = s
        .command(&["deploy", "app"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || {
            releases_of_app(&s)["releases"]
                .as_array()
                .is_some_and(|r| r.len() == 2)
        }),
        "the deploy made its release"
    );
    // Asked for now, the rollback runs after the deploy and undoes it: the state still says
    // release 1, but "the release before" is chosen when the rollback starts.
    let mut rollback = s
        .command(&["rollback", "app"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The control plane says the rollback waits; only then may the deploy finish.
    // Notes go to stderr, results to stdout.
    let mut printed = BufReader::new(rollback.stderr.take().unwrap());
    let mut line = String::new();
    printed.read_line(&mut line).unwrap();
    if !line.contains("waiting for the control plane") {
        std::fs::write(&gate, "open").unwrap();
        panic!("{line}\n{:?}", rollback.wait_with_output());
    }
    std::fs::write(&gate, "open").unwrap();
    let deployed = deploy.wait_with_output().unwrap();
    assert!(deployed.status.success(), "{deployed:?}");
    let mut rest = String::new();
    printed.read_to_string(&mut rest).unwrap();
    let rolled = rollback.wait_with_output().unwrap();
    assert!(rolled.status.success(), "{rest}\n{rolled:?}");
    let rest = rest + &String::from_utf8_lossy(&rolled.stdout);
    assert!(
        rest.contains("rolling back services.app to release"),
        "{rest}"
    );
    let after = releases_of_app(&s);
    assert_eq!(after["current"], first, "{after:#}");
    drop(stop);
}

/// Serves `v<version>`; with a `late-errors` mode file, answers one request in five with 500
/// from 3 s after its start, so a bad release passes its deploy's gates and fails afterwards.
const LATE_FAILING: &str = r#"
const http = require('http');
const fs = require('fs');
const read = (f, d) => { try { return fs.readFileSync(f, 'utf8').trim(); } catch (_) { return d; } };
const version = read('version', '0');
const mode = read('mode', 'ok');
const started = Date.now();
let served = 0;
const server = http.createServer((req, res) => {
  if (req.url === '/healthz') { res.end('ok'); return; }
  served += 1;
  if (mode === 'late-errors' && Date.now() - started > 3000 && served % 5 === 0) { res.statusCode = 500; res.end('broken'); return; }
  res.end('v' + version);
});
server.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
"#;

const SLO_STACK: &str = r#"
name: scenario
ingress: { listen: "127.0.0.1:0" }
services:
  app:
    path: app
    run: node server.js
    health: { readiness: { http: /healthz, interval: 100ms, timeout: 5s } }
    deploy: { strategy: rolling, healthy_deadline: 10s }
routes:
  - { host: app.localhost, path: /, service: app }
notify: { evaluation_interval: 1s, incidents: { auto_resolve_after: 5s } }
alerts:
  - name: app-availability
    slo: { service: app, objective: 99%, window: 30d, min_requests: 10 }
    runbook: roll-back
runbooks:
  roll-back:
    description: Rolls the service back to the release before the one that burns the budget.
    params:
      service: { type: service, required: true }
    # One rollback per hour: the SLO's other windows fire later, and one rollback is the
    # remedy; a second would go one more release back.
    guards: { max_runs: 1, per: 1h }
    steps:
      - { action: rollback, with: { service: "${{ params.service }}" }, timeout: 60s }
"#;

#[test]
fn an_slo_burn_rate_alert_rolls_a_bad_release_back_under_load() {
    let s = app_at_version_1(SLO_STACK, LATE_FAILING);
    let stop = Stop(&s);
    let status: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    let addr = status["ingress"].as_str().unwrap().to_owned();
    let releases = || releases_of_app(&s);
    let good = releases()["current"].clone();
    let load = Load::start(&addr, "app.localhost", "/", 2);

    // A release that passes its gates, then fails one request in five.
    std::fs::write(s.file("app/version"), "2").unwrap();
    std::fs::write(s.file("app/mode"), "late-errors").unwrap();
    s.ok(&["deploy", "app"]);
    assert_ne!(releases()["current"], good);

    // The burn-rate alert fires, its runbook rolls the release back.
    let rolled_back = || {
        runs(&s).into_iter().any(|r| {
            r["runbook"] == "roll-back"
                && r["status"] == "succeeded"
                && r["triggered_by"] == "alerts.app-availability"
                && r["params"]["service"] == "app"
        })
    };
    assert!(
        wait_until(Duration::from_secs(60), rolled_back),
        "no rollback: {:#?}",
        runs(&s)
    );
    assert_eq!(releases()["current"], good);
    // After the rollback the good release answers again.
    assert!(wait_until(Duration::from_secs(10), || common_get(&addr) == "v1"));
    assert!(
        runs(&s)
            .iter()
            .filter(|r| r["runbook"] == "roll-back" && r["status"] == "succeeded")
            .count()
            == 1,
        "one rollback only: {:#?}",
        runs(&s)
    );

    // The page alerts resolve once good requests (the load goes on) outweigh the failures in
    // their windows; the incident the page opened is then mitigated and, after 5 s of quiet,
    // closed. The quiet period is what keeps one incident when the burn rate, falling through
    // its threshold, flickers across it for a second (a CI run saw the alert fire again 1 s
    // after it resolved: with no quiet period that opened a second incident).
    let closed = || {
        s.json(&["incident", "list", "--json"])
            .as_array()
            .is_some_and(|list| list.len() == 1 && list[0]["state"] == "resolved")
    };
    assert!(
        wait_until(Duration::from_secs(60), closed),
        "{:#}\n{}",
        s.json(&["incident", "list", "--json"]),
        s.ok(&["alerts", "--json"])
    );
    let tally = load.finish();
    assert!(
        tally.failed > 0,
        "the bad release failed requests: {tally:?}"
    );
    let id = s.json(&["incident", "list", "--json"])[0]["id"].to_string();
    let incident = s.json(&["incident", "show", &id, "--json"]);
    let kinds: Vec<&str> = incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    let position = |kind: &str| kinds.iter().position(|k| *k == kind);
    for kind in [
        "alert_fired",
        "runbook",
        "alert_resolved",
        "mitigated",
        "resolved",
    ] {
        assert!(position(kind).is_some(), "no {kind} in {kinds:?}");
    }
    assert!(
        kinds.iter().any(|k| *k == "deploy" || *k == "rollback"),
        "the rollback's deploy is in the timeline: {kinds:?}"
    );
    assert!(
        position("alert_fired") < position("runbook")
            && position("runbook") < position("mitigated")
            && position("mitigated") < position("resolved"),
        "{kinds:?}"
    );
    drop(stop);
}
