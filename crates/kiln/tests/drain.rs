//! The runbook actions `drain` and `undrain` with the real binary, under constant load on
//! the ingress: a runbook drains one of two instances and restarts it (not one request
//! fails, the instance comes back with a new process and serves again); one with
//! `then: keep` leaves it running out of rotation (it gets no new request while the other
//! serves hundreds) until `undrain`; a drain that would leave the service with no ready
//! instance in rotation is refused, with the reason in the run's audit. Each instance counts
//! the requests it served, read straight from its own port.

// Tests panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Load, Scratch, get_path, wait_until};

/// Answers after 20 ms (so requests are in flight when a drain starts) and counts what it
/// served; `/count` tells the count, `/health` is the readiness probe.
const SERVER: &str = r#"
const http = require('http');
let served = 0;
const server = http.createServer((req, res) => {
  if (req.url === '/health') { res.end('ok'); return; }
  if (req.url === '/count') { res.end(String(served)); return; }
  served += 1;
  setTimeout(() => res.end('i' + process.env.KILN_INSTANCE), 20);
});
server.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
"#;

const STACK: &str = r#"
name: draining
ingress: { listen: "127.0.0.1:0" }
services:
  api:
    run: node server.js
    replicas: 2
    health: { readiness: { http: /health, interval: 100ms, timeout: 5s, failure_threshold: 3 } }
routes:
  - { host: api.localhost, path: /, service: api }
runbooks:
  recycle:
    description: Takes an instance out of rotation, lets its requests finish, restarts it.
    params:
      service: { type: service, default: api }
      instance: { type: string, required: true }
    guards: { max_runs: 10, per: 1h }
    steps:
      - action: drain
        with: { service: "${{ params.service }}", instance: "${{ params.instance }}", timeout: 10s, then: restart }
        timeout: 40s
      - { name: note, run: "echo recycled ${{ params.instance }}", timeout: 5s }
  park:
    params:
      instance: { type: string, required: true }
    steps:
      - { action: drain, with: { service: api, instance: "${{ params.instance }}", timeout: 10s, then: keep }, timeout: 20s }
  unpark:
    params:
      instance: { type: string, required: true }
    steps:
      - { action: undrain, with: { service: api, instance: "${{ params.instance }}" } }
"#;

struct Stop<'a>(&'a Scratch);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["down"]);
    }
}

/// Instance number → (pid, port) of the ready instances.
fn instances(s: &Scratch) -> Vec<(u64, u64, u64)> {
    let ps = s.json(&["ps", "--json"]);
    ps.as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"] == "ready")
        .map(|i| {
            (
                i["instance"].as_u64().unwrap(),
                i["pid"].as_u64().unwrap(),
                i["port"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn instance(s: &Scratch, n: u64) -> Option<(u64, u64)> {
    instances(s)
        .into_iter()
        .find(|(i, _, _)| *i == n)
        .map(|(_, pid, port)| (pid, port))
}

/// How many requests the instance listening on `port` served.
fn served(port: u64) -> u64 {
    get_path(&format!("127.0.0.1:{port}"), "localhost", "/count")
        .parse()
        .unwrap_or(0)
}

fn run(s: &Scratch, runbook: &str, instance: &str) -> (bool, serde_json::Value) {
    let out = s.run(&[
        "runbook",
        "run",
        runbook,
        "--param",
        &format!("instance={instance}"),
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let audit = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.success(), audit)
}

#[test]
fn a_drained_instance_finishes_its_requests_gets_no_new_ones_and_restarts_under_load() {
    let s = Scratch::new(STACK);
    std::fs::write(s.file("server.js"), SERVER).unwrap();
    s.ok(&["up", "-d", "--interval", "30"]);
    let stop = Stop(&s);
    assert!(
        wait_until(Duration::from_secs(20), || instances(&s).len() == 2),
        "{}",
        s.ok(&["ps"])
    );
    let status = s.json(&["status", "--json"]);
    let addr = status["ingress"].as_str().unwrap().to_owned();
    let load = Load::start(&addr, "api.localhost", "/", 4);
    let (pid0, port0) = instance(&s, 0).unwrap();
    let (pid1, port1) = instance(&s, 1).unwrap();
    assert!(wait_until(Duration::from_secs(20), || served(port0) > 20
        && served(port1) > 20));

    // Drain and restart instance 1: its requests finish, it restarts, it serves again.
    let (ok, audit) = run(&s, "recycle", "1");
    assert!(ok, "{audit:#}");
    let steps = audit["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{audit:#}");
    assert_eq!(steps[0]["action"], "drain");
    assert_eq!(steps[0]["status"], "succeeded");
    let said = steps[0]["output"].as_str().unwrap();
    assert!(
        said.contains("out of rotation")
            && said.contains("requests in flight finished")
            && said.contains("restarted it; back in rotation"),
        "{said}"
    );
    assert!(
        steps[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("drain api instance 1"),
        "{audit:#}"
    );
    assert_eq!(steps[1]["output"], "recycled 1");
    let (new_pid1, new_port1) = instance(&s, 1).unwrap();
    assert_ne!(new_pid1, pid1, "instance 1 was restarted");
    assert_eq!(
        instance(&s, 0).unwrap().0,
        pid0,
        "instance 0 was left alone"
    );
    assert!(
        wait_until(Duration::from_secs(20), || served(new_port1) > 20),
        "the restarted instance rejoined the rotation"
    );

    // Drain instance 1 and keep it: while out of rotation it gets no new request, however
    // many instance 0 serves.
    let (ok, audit) = run(&s, "park", "api/1");
    assert!(ok, "{audit:#}");
    let parked = served(new_port1);
    let before = served(port0);
    assert!(wait_until(Duration::from_secs(30), || served(port0) > before + 200));
    assert_eq!(
        served(new_port1),
        parked,
        "a drained instance got new requests"
    );
    assert_eq!(instance(&s, 1).unwrap().0, new_pid1, "kept running");

    // With instance 1 out, draining instance 0 would leave none in rotation: refused.
    let (ok, audit) = run(&s, "recycle", "0");
    assert!(!ok, "{audit:#}");
    assert_eq!(audit["run"]["status"], "aborted", "{audit:#}");
    let refusal = audit["steps"][0]["output"].as_str().unwrap();
    assert!(
        refusal.contains("refused: draining api@")
            && refusal.contains("would leave api with no ready instance in rotation"),
        "{refusal}"
    );
    assert_eq!(instance(&s, 0).unwrap().0, pid0, "instance 0 kept serving");

    // Undrain: instance 1 serves again.
    let (ok, audit) = run(&s, "unpark", "1");
    assert!(ok, "{audit:#}");
    assert!(
        wait_until(Duration::from_secs(20), || served(new_port1) > parked + 20),
        "undrained instance back in rotation"
    );

    let tally = load.finish();
    tally.assert_none_failed();
    assert!(tally.ok > 200, "{tally:?}");
    let events = s.ok(&["events", "--json", "--limit", "100000"]);
    assert!(events.contains("runbook.step"), "{events}");
    drop(stop);
}
