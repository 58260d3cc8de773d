//! Environments and promotion through the real binary: a release built once in staging is
//! promoted to production behind its gates (soak, approval), production serves the same digest
//! with its own vars while a constant load on its route sees no failed request, and a release
//! that failed health in staging is refused promotion with the gate's reason.

// Tests panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Down, Load, RELEASE_SERVER, Scratch, get_body, wait_until};

const STACK: &str = r#"
name: envs
ingress: { listen: "127.0.0.1:0" }
vars: { greeting: prod }
services:
  app:
    path: app
    run: node server.js
    replicas: 2
    env: { GREETING: "${{ vars.greeting }}" }
    health: { readiness: { http: /healthz, interval: 100ms, timeout: 5s, failure_threshold: 3 } }
    stop: { grace: 5s }
    deploy: { strategy: rolling, max_surge: 1, max_unavailable: 0, healthy_deadline: 10s }
routes:
  - { host: app.localhost, path: /, service: app }
environments:
  staging:
    vars: { greeting: staging }
    routes: [ { host: staging.app.localhost, path: /, service: app } ]
    deploy: { auto: true }
  production:
    promote: { from: staging, soak: 1s, approval: true }
"#;

fn release(s: &Scratch, version: u32, mode: &str) {
    std::fs::write(s.file("app/version"), version.to_string()).unwrap();
    std::fs::write(s.file("app/mode"), mode).unwrap();
}

/// The release an environment's `app` runs, from `kiln releases`.
fn running(s: &Scratch, service: &str) -> String {
    let releases = s.json(&["releases", service, "--json"]);
    releases["current"].as_str().unwrap_or_default().to_owned()
}

/// Approves what staging runs, then promotes it once the soak has passed.
fn approve_and_promote(s: &Scratch) -> String {
    s.ok(&["approve", "app", "--env", "production"]);
    let mut last = String::new();
    let promoted = wait_until(Duration::from_secs(20), || {
        let out = s.run(&["promote", "app", "--to", "production"]);
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out.status.success()
    });
    assert!(promoted, "never promoted:\n{last}");
    last
}

#[test]
fn a_release_moves_from_staging_to_production_behind_its_gates() {
    let s = Scratch::new(STACK);
    std::fs::create_dir_all(s.file("app")).unwrap();
    std::fs::write(s.file("app/server.js"), RELEASE_SERVER).unwrap();
    release(&s, 1, "ok");
    s.ok(&["up", "-d", "--interval", "30"]);
    let _down = Down(&s);
    let status = s.json(&["status", "--json"]);
    let addr = status["ingress"].as_str().unwrap().to_owned();

    // Staging builds and serves the first release; production waits for a promotion.
    assert!(wait_until(Duration::from_secs(10), || get_body(
        &addr,
        "staging.app.localhost"
    ) == "v1 staging"));
    assert!(
        !s.state()
            .iter()
            .any(|a| a.starts_with("environments.production."))
    );

    // Every failing gate is named, with its reason, and nothing is promoted.
    let refused = s.run(&["promote", "app", "--to", "production"]);
    assert_eq!(refused.status.code(), Some(7), "{refused:?}");
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert!(stdout.contains("FAIL approval"), "{stdout}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("approval"));

    let out = approve_and_promote(&s);
    assert!(
        out.contains("pass soak") && out.contains("approved by"),
        "{out}"
    );
    assert!(wait_until(Duration::from_secs(10), || get_body(
        &addr,
        "app.localhost"
    ) == "v1 prod"));
    // Build once, deploy many: production runs staging's digest.
    let v1 = running(&s, "app.staging");
    assert!(v1.starts_with("sha256:"), "{v1}");
    assert_eq!(running(&s, "app.production"), v1);

    // A second release reaches production under constant load without a failed request.
    let load = Load::start(&addr, "app.localhost", "/", 4);
    release(&s, 2, "ok");
    s.ok(&["deploy", "app.staging"]);
    assert_eq!(get_body(&addr, "staging.app.localhost"), "v2 staging");
    assert_eq!(get_body(&addr, "app.localhost"), "v1 prod");
    approve_and_promote(&s);
    assert!(wait_until(Duration::from_secs(10), || get_body(
        &addr,
        "app.localhost"
    ) == "v2 prod"));
    let v2 = running(&s, "app.staging");
    assert_ne!(v2, v1);
    assert_eq!(running(&s, "app.production"), v2);

    // A release that fails health in staging is rolled back there and never promotable.
    release(&s, 3, "unhealthy");
    let failed = s.run(&["deploy", "app.staging"]);
    assert_eq!(failed.status.code(), Some(3), "{failed:?}");
    let releases = s.json(&["releases", "app.staging", "--json"]);
    let v3 = releases["deploys"][0]["to_release"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(v3, v2);
    s.ok(&["approve", "app", "--env", "production", "--release", &v3]);
    let refused = s.run(&["promote", "app", "--to", "production", "--release", &v3]);
    assert_eq!(refused.status.code(), Some(7), "{refused:?}");
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert!(
        stdout.contains("FAIL healthy") && stdout.contains("failed health in staging"),
        "{stdout}"
    );
    assert_eq!(running(&s, "app.production"), v2);

    // With `auto: true` the control plane promotes by itself once the gates pass.
    std::fs::write(
        s.file("kiln.yaml"),
        STACK.replace("soak: 1s, approval: true", "soak: 1s, auto: true"),
    )
    .unwrap();
    release(&s, 4, "ok");
    s.ok(&["deploy", "app.staging"]);
    assert!(
        wait_until(Duration::from_secs(30), || get_body(&addr, "app.localhost")
            == "v4 prod"),
        "{}",
        s.ok(&["releases", "app.production"])
    );
    // The state records the release once the promotion's apply has finished.
    let v4 = running(&s, "app.staging");
    assert!(wait_until(Duration::from_secs(30), || running(
        &s,
        "app.production"
    ) == v4));
    let events = s.ok(&["events"]);
    assert!(
        events.contains("kiln (auto) promoted app") && events.contains("promoted app"),
        "{events}"
    );

    // Both environments' instances are named SERVICE.ENV, and so are their logs.
    let ps = s.json(&["ps", "--json"]);
    let names: std::collections::BTreeSet<&str> = ps
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["service"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        std::collections::BTreeSet::from(["app.production", "app.staging"])
    );
    s.ok(&["logs", "app.production", "--tail", "1"]);

    let tally = load.finish();
    tally.assert_none_failed();
    assert!(
        ["v1 prod", "v2 prod", "v4 prod"]
            .iter()
            .all(|b| tally.bodies.contains_key(*b)),
        "{:?}",
        tally.bodies
    );
    assert!(
        !tally.bodies.keys().any(|b| b.starts_with("v3")),
        "{:?}",
        tally.bodies
    );
}

/// Like `RELEASE_SERVER`, but a release whose `mode` is `prod-broken` fails its health check
/// where `GREETING` is `prod` only: it passes staging and fails in production.
const PROD_BREAKS: &str = r#"
const http = require('http');
const fs = require('fs');
const read = (f, d) => { try { return fs.readFileSync(f, 'utf8').trim(); } catch { return d; } };
const mode = read('mode', 'ok');
const version = read('version', '0');
const broken = mode === 'prod-broken' && process.env.GREETING === 'prod';
const server = http.createServer((req, res) => {
  if (req.url === '/healthz') { res.statusCode = broken ? 503 : 200; return res.end(mode); }
  res.end('v' + version + ' ' + process.env.GREETING);
});
server.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
"#;

#[test]
fn a_promotion_that_fails_to_apply_does_not_become_what_production_runs() {
    let stack = STACK
        .replace("soak: 1s, approval: true", "soak: 0s")
        .replace("healthy_deadline: 10s", "healthy_deadline: 3s");
    let s = Scratch::new(&stack);
    std::fs::create_dir_all(s.file("app")).unwrap();
    std::fs::write(s.file("app/server.js"), PROD_BREAKS).unwrap();
    release(&s, 1, "ok");
    s.ok(&["up", "-d", "--interval", "30"]);
    let _down = Down(&s);
    s.ok(&["promote", "app", "--to", "production"]);
    let v1 = running(&s, "app.production");
    assert!(v1.starts_with("sha256:"), "{v1}");

    // Healthy in staging, unhealthy in production: the promotion's deploy rolls back.
    release(&s, 2, "prod-broken");
    s.ok(&["deploy", "app.staging"]);
    let failed = s.run(&["promote", "app", "--to", "production"]);
    assert!(!failed.status.success(), "{failed:?}");
    assert_eq!(running(&s, "app.production"), v1);

    // The failed promotion is on record, and no longer what production should run: the next
    // plan changes nothing there, and the control plane does not retry it.
    let events = s.ok(&["events"]);
    assert!(events.contains("failed to apply"), "{events}");
    let plan = s.ok(&["plan"]);
    assert!(
        !plan.contains("environments.production.services.app"),
        "{plan}"
    );
}

/// `services:` of an environment changes how a service runs there, and `kiln plan` shows each
/// environment's values.
#[test]
fn the_plan_shows_each_environments_overridden_service() {
    let s = Scratch::new(
        r#"
name: overrides
services:
  worker:
    run: sh -c 'exec sleep 1000'
    replicas: 2
    env: { LOG_LEVEL: info, REGION: eu }
environments:
  staging:
    services:
      worker: { replicas: 1, env: { LOG_LEVEL: debug } }
  production:
    services:
      worker: { replicas: 3 }
    promote: { from: staging }
"#,
    );
    let plan = s.ok(&["plan"]);
    assert_eq!(
        plan.trim_end(),
        r#"+ environments.production.services.worker (service) will be created
    + env = {"LOG_LEVEL":"info","REGION":"eu"}
    + replicas = 3
    + run = "sh -c 'exec sleep 1000'"
+ environments.staging.services.worker (service) will be created
    + env = {"LOG_LEVEL":"debug","REGION":"eu"}
    + replicas = 1
    + run = "sh -c 'exec sleep 1000'"
Plan: 2 to create, 0 to update, 0 to replace, 0 to destroy, 0 unchanged."#
    );
}
