//! From push to production through the real binary: a scratch project pushed to a local bare
//! repository that `kiln up` follows (through the post-receive hook it installs), a workflow
//! that builds the service's release and tests it, GitHub webhooks on `--hooks-listen`, and
//! `kiln dora` over a scripted history.

// Tests panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use common::{
    Down, Scratch, deliver, git, push_and_wait, push_finished, push_payload, push_without_hook,
    wait_for_push, wait_until,
};

/// Answers `v<version>` from its `version` file; ready on /healthz.
const SERVER: &str = r#"
const http = require('http');
const fs = require('fs');
const version = fs.readFileSync('version', 'utf8').trim();
const server = http.createServer((req, res) => res.end(req.url === '/healthz' ? 'ok' : 'v' + version));
server.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
"#;

/// Tests the tree (a `version` of `broken` fails), then uploads the release.
const WORKFLOW: &str = r#"
name: ci
on:
  push:
    branches: [main]
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: test
        run: test "$(cat version)" != broken
      - run: mkdir -p dist && cp server.js version dist/ && echo "$GITHUB_SHA $GITHUB_REF" > dist/built-from
      - uses: actions/upload-artifact@v4
        with: { name: app, path: dist/ }
"#;

const SECRET: &str = "correct horse battery staple";

/// The service, released from the workflow's artifact.
const APP: &str = "services:\n  app: { release: { pipeline: ci, artifact: app }, run: node server.js, health: { readiness: { http: /healthz, interval: 100ms } } }\n";

/// Writes the project (version 1) into the stack's directory and commits it.
fn project(s: &Scratch) {
    std::fs::write(s.file("server.js"), SERVER).unwrap();
    std::fs::write(s.file("version"), "1").unwrap();
    std::fs::write(s.file(".gitignore"), ".kiln/\n").unwrap();
    std::fs::create_dir_all(s.file(".github/workflows")).unwrap();
    std::fs::write(s.file(".github/workflows/ci.yml"), WORKFLOW).unwrap();
    git(s.path(), &["init", "-q"]);
    git(s.path(), &["add", "-A"]);
    git(s.path(), &["commit", "-qm", "init"]);
}

/// The service's stable address, once it answers `v1`.
fn serving_v1(s: &Scratch) -> String {
    let addr = s.json(&["state", "show", "services.app", "--json"])["outputs"]["url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_owned();
    assert!(wait_until(Duration::from_secs(10), || get(&addr)
        .as_deref()
        == Some("v1")));
    addr
}

/// Waits for the push of `sha` to finish; checks where it came from and that it deployed.
fn deployed(s: &Scratch, sha: &str, source: &str) -> serde_json::Value {
    let event = wait_for_push(s, sha, Duration::from_secs(60));
    assert_eq!(event["data"]["source"], source, "{event:#}");
    assert_eq!(
        event["data"]["deployed"][0]["result"], "deployed",
        "{event:#}"
    );
    event
}

/// Commits `version` in the developer's clone and returns the commit.
fn commit_version(dev: &Path, version: &str) -> String {
    std::fs::write(dev.join("version"), version).unwrap();
    git(dev, &["commit", "-qam", &format!("version {version}")]);
    git(dev, &["rev-parse", "HEAD"])
}

fn get(addr: &str) -> Option<String> {
    let mut c = std::net::TcpStream::connect(addr).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    c.read_to_string(&mut text).ok()?;
    text.rsplit("\r\n\r\n").next().map(str::to_owned)
}

fn json(s: &Scratch, args: &[&str]) -> serde_json::Value {
    s.json(args)
}

#[test]
fn a_push_runs_the_pipeline_and_a_green_run_deploys_while_a_red_one_never_does() {
    let origin = tempfile::tempdir().unwrap();
    let bare = origin.path().join("app.git");
    git(origin.path(), &["init", "-q", "--bare", "app.git"]);
    let s = Scratch::new(&format!(
        r#"
name: cd
secrets:
  hook: {{ env: KILN_TEST_HOOK_SECRET }}
source:
  repo: {}
  branches: [main]
  poll: off
  webhook: {{ secret: "${{{{ secrets.hook }}}}" }}
{APP}"#,
        bare.display()
    ));
    project(&s);
    git(s.path(), &["push", "-q", bare.to_str().unwrap(), "main"]);
    let dev = origin.path().join("dev");
    git(origin.path(), &["clone", "-q", "app.git", "dev"]);

    // The first release is built by hand; from then on, pushes deliver.
    s.ok(&["ci", "run", "ci.yml"]);
    let up = s
        .command(&[
            "up",
            "-d",
            "--interval",
            "30",
            "--hooks-listen",
            "127.0.0.1:0",
        ])
        .env("KILN_TEST_HOOK_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(up.status.success(), "{up:?}");
    let _down = Down(&s);
    let hook = std::fs::read_to_string(bare.join("hooks/post-receive")).unwrap();
    assert!(hook.contains("notify-push"), "{hook}");
    let addr = serving_v1(&s);

    // A green push: the hook hands it over, the pipeline runs with the push's sha and ref, and
    // its artifact becomes the release deployed with trigger `push`.
    let green = commit_version(&dev, "2");
    git(&dev, &["push", "-q", "origin", "main"]);
    deployed(&s, &green, "hook");
    assert_eq!(get(&addr).as_deref(), Some("v2"));
    let runs = json(&s, &["ci", "list", "--json"]);
    let run = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["commit"] == green)
        .unwrap();
    assert_eq!(run["event"], "push");
    assert_eq!(run["rev"], "hook:main");
    assert_eq!(run["status"], "success");
    assert!(s.ok(&["ci", "list"]).contains("hook:main"));
    let releases = json(&s, &["releases", "app", "--json"]);
    let deploy = &releases["deploys"][0];
    assert_eq!(deploy["trigger"], "push", "{releases:#}");
    assert_eq!(deploy["result"], "succeeded", "{releases:#}");
    let release = &releases["releases"][0];
    assert_eq!(release["commit"], green, "{releases:#}");
    assert!(release["committed_at"].as_str().is_some(), "{releases:#}");
    let built_from = std::fs::read_to_string(
        s.file(".kiln/releases")
            .join(
                release["digest"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("sha256:"),
            )
            .join("built-from"),
    )
    .unwrap();
    assert_eq!(built_from.trim(), format!("{green} refs/heads/main"));
    let deploys_before = releases["deploys"].as_array().unwrap().len();

    // A red push: its test fails, so nothing deploys.
    commit_version(&dev, "broken");
    let (red, event) = push_and_wait(&s, &dev, Duration::from_secs(60));
    assert_eq!(event["data"]["runs"][0]["status"], "failure", "{event:#}");
    assert_eq!(
        event["data"]["deployed"],
        serde_json::json!([]),
        "{event:#}"
    );
    let releases = json(&s, &["releases", "app", "--json"]);
    assert_eq!(
        releases["deploys"].as_array().unwrap().len(),
        deploys_before
    );
    assert_eq!(get(&addr).as_deref(), Some("v2"));

    // Webhooks: pushed without the hook, delivered by a signed webhook.
    let hooks_addr = std::fs::read_to_string(s.file(".kiln/hooks.addr")).unwrap();
    let fixed = commit_version(&dev, "3");
    push_without_hook(&dev);
    let body = push_payload(&red, &fixed, &["version"]);
    let signature = kiln_delivery::webhook::sign(SECRET.as_bytes(), body.as_bytes());
    let forged = kiln_delivery::webhook::sign(b"not the secret", body.as_bytes());
    assert_eq!(deliver(&hooks_addr, "push", "d-1", &body, None), 401);
    assert_eq!(
        deliver(&hooks_addr, "push", "d-1", &body, Some(&forged)),
        401
    );
    let mut tampered = body.clone();
    tampered.push(' ');
    assert_eq!(
        deliver(&hooks_addr, "push", "d-1", &tampered, Some(&signature)),
        401
    );
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(1_100_000));
    let huge_signature = kiln_delivery::webhook::sign(SECRET.as_bytes(), huge.as_bytes());
    assert_eq!(
        deliver(&hooks_addr, "push", "d-2", &huge, Some(&huge_signature)),
        413
    );
    let ping = r#"{"zen":"Keep it logically awesome."}"#;
    let ping_signature = kiln_delivery::webhook::sign(SECRET.as_bytes(), ping.as_bytes());
    assert_eq!(
        deliver(&hooks_addr, "ping", "d-0", ping, Some(&ping_signature)),
        200
    );
    assert_eq!(
        deliver(&hooks_addr, "issues", "d-9", ping, Some(&ping_signature)),
        202
    );
    assert_eq!(
        deliver(&hooks_addr, "push", "d-1", &body, Some(&signature)),
        202
    );
    // The same delivery again is recognised, not queued twice.
    assert_eq!(
        deliver(&hooks_addr, "push", "d-1", &body, Some(&signature)),
        200
    );
    deployed(&s, &fixed, "webhook");
    assert!(wait_until(Duration::from_secs(10), || get(&addr)
        .as_deref()
        == Some("v3")));
    let received = json(&s, &["events", "--json", "--limit", "500"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "push.received" && e["data"]["after"] == fixed)
        .count();
    assert_eq!(received, 1);

    // What was delivered shows in the DORA figures: three deploys, none failed.
    let dora = json(&s, &["dora", "--json"]);
    assert_eq!(dora["metrics"]["changes"], 3, "{dora:#}");
    assert_eq!(dora["metrics"]["failed_changes"], 0, "{dora:#}");
    assert!(
        dora["metrics"]["lead_time_seconds"].as_i64().is_some(),
        "{dora:#}"
    );
}

/// Answers `v<version>`; a `version` of `sick` is never ready (it passes the tests, then
/// fails health wherever it is deployed).
const ENV_SERVER: &str = r#"
const http = require('http');
const fs = require('fs');
const version = fs.readFileSync('version', 'utf8').trim();
const server = http.createServer((req, res) => {
  if (req.url === '/healthz') { res.statusCode = version === 'sick' ? 503 : 200; return res.end(version); }
  res.end('v' + version);
});
server.keepAliveTimeout = 30000;
server.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => { server.close(() => process.exit(0)); server.closeIdleConnections(); });
"#;

/// The whole path with environments: a push's pipeline builds the release once, staging
/// deploys it by itself, production promotes it by itself once its gates pass (the run
/// succeeded, a soak in staging), under constant load on production's route; a push that
/// breaks a test deploys nowhere, and one whose release fails health in staging is rolled back
/// there and never reaches production.
#[test]
fn a_push_reaches_production_through_staging_and_its_gates() {
    let origin = tempfile::tempdir().unwrap();
    let bare = origin.path().join("app.git");
    git(origin.path(), &["init", "-q", "--bare", "app.git"]);
    // A readiness probe and deadline a loaded machine cannot trip: with a 1 s timeout, one
    // failure and 3 s, a good release's deploy to staging failed at a load average of 30
    // ("not ready after 3000 ms ... timed out after 1000 ms"). The sick release still fails.
    let s = Scratch::new(&format!(
        r#"
name: staged
ingress: {{ listen: "127.0.0.1:0" }}
source: {{ repo: {}, branches: [main], poll: off }}
services:
  app:
    release: {{ pipeline: ci, artifact: app }}
    run: node server.js
    replicas: 2
    health: {{ readiness: {{ http: /healthz, interval: 100ms, timeout: 5s, failure_threshold: 3 }} }}
    stop: {{ grace: 5s }}
    deploy: {{ strategy: rolling, max_surge: 1, max_unavailable: 0, healthy_deadline: 20s }}
routes:
  - {{ host: app.localhost, path: /, service: app }}
environments:
  staging:
    routes: [ {{ host: staging.app.localhost, path: /, service: app }} ]
    deploy: {{ auto: true }}
  production:
    promote: {{ from: staging, soak: 1s, pipeline: ci, auto: true }}
"#,
        bare.display()
    ));
    project(&s);
    std::fs::write(s.file("server.js"), ENV_SERVER).unwrap();
    git(s.path(), &["commit", "-qam", "the environments' server"]);
    git(s.path(), &["push", "-q", bare.to_str().unwrap(), "main"]);
    let dev = origin.path().join("dev");
    git(origin.path(), &["clone", "-q", "app.git", "dev"]);
    s.ok(&["ci", "run", "ci.yml"]);
    s.ok(&["up", "-d", "--interval", "30"]);
    let _down = Down(&s);
    let addr = s.json(&["status", "--json"])["ingress"]
        .as_str()
        .unwrap()
        .to_owned();
    let production = || common::get_body(&addr, "app.localhost");
    let staging = || common::get_body(&addr, "staging.app.localhost");
    assert!(
        wait_until(Duration::from_secs(60), || production() == "v1"),
        "the first release reaches production by promotion: {}",
        s.ok(&["events", "--limit", "40"])
    );
    let load = common::Load::start(&addr, "app.localhost", "/", 2);

    // Green: built once, deployed to staging, promoted to production.
    let green = commit_version(&dev, "2");
    git(&dev, &["push", "-q", "origin", "main"]);
    assert!(
        wait_until(Duration::from_secs(90), || production() == "v2"),
        "{}",
        s.ok(&["events", "--limit", "40"])
    );
    let v2 = s.json(&["releases", "app.staging", "--json"])["current"].clone();
    // A rolling deploy serves before it finishes; the state records it once it has.
    assert!(
        wait_until(Duration::from_secs(30), || s.json(&[
            "releases",
            "app.production",
            "--json"
        ])["current"]
            == v2),
        "production runs the digest staging was deployed"
    );
    let release = s.json(&["releases", "app.staging", "--json"])["releases"][0].clone();
    assert_eq!(release["commit"], green, "{release:#}");

    // Red: a failing test deploys nowhere.
    commit_version(&dev, "broken");
    let (_, event) = push_and_wait(&s, &dev, Duration::from_secs(60));
    assert_eq!(event["data"]["runs"][0]["status"], "failure", "{event:#}");
    assert_eq!(
        event["data"]["deployed"],
        serde_json::json!([]),
        "{event:#}"
    );

    // Sick: green pipeline, unhealthy in staging: rolled back there, never promoted.
    commit_version(&dev, "sick");
    // The pipeline, then 20 s of a readiness that never comes.
    let (sick, event) = push_and_wait(&s, &dev, Duration::from_secs(180));
    assert_eq!(event["data"]["runs"][0]["status"], "success", "{event:#}");
    assert_ne!(
        event["data"]["deployed"][0]["result"], "deployed",
        "{event:#}"
    );
    assert_eq!(staging(), "v2");
    assert_eq!(
        s.json(&["releases", "app.staging", "--json"])["current"],
        v2
    );
    let staged = s.json(&["releases", "app.staging", "--json"]);
    let sick_release = staged["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["commit"] == sick)
        .map(|r| r["digest"].clone())
        .unwrap_or_else(|| panic!("the sick release was made: {staged:#}"));
    let events = s.json(&["events", "--json", "--limit", "500"]);
    let promoted: Vec<&serde_json::Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "promotion.recorded")
        .map(|e| &e["data"]["release"])
        .collect();
    assert!(promoted.contains(&&v2), "{promoted:?}");
    assert!(!promoted.contains(&&sick_release), "{promoted:?}");
    assert_eq!(production(), "v2");

    let tally = load.finish();
    tally.assert_none_failed();
    assert!(tally.bodies.contains_key("v2"), "{:?}", tally.bodies);
    assert!(
        !tally
            .bodies
            .keys()
            .any(|b| b.contains("sick") || b.contains("broken")),
        "{:?}",
        tally.bodies
    );
}

/// The stack's own repository, polled: a commit on `main` is picked up by `git ls-remote`,
/// and one on another branch is not followed.
#[test]
fn polling_the_stacks_own_repository_picks_up_a_commit() {
    let s = Scratch::new(&format!(
        "name: polled\nsource: {{ branches: [main], poll: 1s }}\n{APP}"
    ));
    project(&s);
    s.ok(&["ci", "run", "ci.yml"]);
    s.ok(&["up", "-d", "--interval", "30"]);
    let _down = Down(&s);
    let addr = serving_v1(&s);
    // A branch that is not followed never runs.
    git(s.path(), &["checkout", "-qb", "topic"]);
    let topic = commit_version(s.path(), "9");
    git(s.path(), &["checkout", "-q", "main"]);
    let head = commit_version(s.path(), "2");
    deployed(&s, &head, "poll");
    assert!(wait_until(Duration::from_secs(10), || get(&addr)
        .as_deref()
        == Some("v2")));
    assert!(push_finished(&s, &topic).is_none());
    let runs = s.json(&["ci", "list", "--json"]);
    assert!(
        runs.as_array()
            .unwrap()
            .iter()
            .all(|r| r["commit"] != topic),
        "{runs:#}"
    );
}

/// `kiln dora` over a scripted history: the figures and their levels, as printed.
#[test]
fn dora_prints_the_figures_of_a_scripted_history() {
    let s = Scratch::new("name: dora\n");
    let mut store = kiln_state::Store::open_in_stack(s.path()).unwrap();
    let release = |digest: &str, committed: &str| kiln_state::ReleaseRecord {
        service: "services.api".into(),
        digest: digest.into(),
        created_at: committed.into(),
        source: "pipeline:ci/api".into(),
        commit: Some("c0ffee".into()),
        run_id: None,
        committed_at: Some(committed.into()),
        files: 1,
        bytes: 1,
    };
    store
        .record_release(&release("sha256:aa", "2026-11-01T10:00:00Z"))
        .unwrap();
    store
        .record_release(&release("sha256:bb", "2026-11-02T09:00:00Z"))
        .unwrap();
    store
        .record_release(&release("sha256:cc", "2026-11-04T07:00:00Z"))
        .unwrap();
    let deploy = |from: Option<&str>, to: &str, trigger: &str, at: &str, ms: u64, result: &str| {
        kiln_state::NewDeploy {
            service: "services.api".into(),
            from_release: from.map(str::to_owned),
            to_release: to.into(),
            strategy: "rolling".into(),
            trigger: trigger.into(),
            user: "t".into(),
            started_at: at.into(),
            duration_ms: ms,
            result: result.into(),
            detail: serde_json::Value::Null,
        }
    };
    for d in [
        // Lead time 1 h.
        deploy(
            None,
            "sha256:aa",
            "push",
            "2026-11-01T10:59:00Z",
            60_000,
            "succeeded",
        ),
        // Lead time 3 h, rolled back 30 min later.
        deploy(
            Some("sha256:aa"),
            "sha256:bb",
            "push",
            "2026-11-02T11:59:00Z",
            60_000,
            "succeeded",
        ),
        deploy(
            Some("sha256:bb"),
            "sha256:aa",
            "rollback",
            "2026-11-02T12:29:00Z",
            60_000,
            "succeeded",
        ),
        // Rolled back by the deploy engine after 2 min.
        deploy(
            Some("sha256:aa"),
            "sha256:cc",
            "push",
            "2026-11-03T08:00:00Z",
            120_000,
            "rolled-back",
        ),
        // Lead time 2 h.
        deploy(
            Some("sha256:aa"),
            "sha256:cc",
            "deploy",
            "2026-11-04T08:59:00Z",
            60_000,
            "succeeded",
        ),
    ] {
        store.record_deploy(&d).unwrap();
    }
    drop(store);
    let text = s.ok(&["dora", "--since", "10d", "--until", "2026-11-11T00:00:00Z"]);
    insta::assert_snapshot!(text);
    let one = json(
        &s,
        &[
            "dora",
            "--since",
            "10d",
            "--until",
            "2026-11-11T00:00:00Z",
            "--service",
            "api",
            "--json",
        ],
    );
    assert_eq!(one["metrics"]["lead_time_seconds"], 7200, "{one:#}");
    assert_eq!(one["metrics"]["change_failure_rate"], 0.5, "{one:#}");
    assert_eq!(one["metrics"]["recovery_seconds"], 120, "{one:#}");
    let bad = s.run(&["dora", "--since", "soon"]);
    assert_eq!(bad.status.code(), Some(1));
}
