//! Alerting end to end with the real binary: a service behind a route starts answering 500
//! under load; the alert fires and a webhook receiver in the test gets Alertmanager's version 4
//! payload (its schema checked); repeats come every `repeat_interval` until a silence stops
//! them; once the silence is expired and the failure stops, the alert resolves and the
//! resolution is notified. Every transition is in the event log; the export passes through
//! the CLI; silences survive in the state store. A firing alert survives a restart of the
//! control plane: no second `alert.firing`, no second notification, one resolution.

// Tests panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{FAILING_SERVER, Hook, Load, Scratch, wait_until};

/// The bound of every wait on the evaluator (it evaluates every second): generous, since on a
/// loaded machine one evaluation (the queries, the state store's writes, the deliveries it
/// spawns) can take seconds rather than milliseconds. A passing wait ends when its condition
/// holds; only a failure waits this long.
const WAIT: Duration = Duration::from_secs(60);

const STACK: &str = r#"
name: alerting
ingress: { listen: "127.0.0.1:0" }
services:
  api:
    run: node server.js
    health: { readiness: { http: /health, interval: 100ms, timeout: 5s } }
routes:
  - { name: api, host: api.localhost, service: api }
receivers:
  - { name: hook, webhook: "http://127.0.0.1:HOOK_PORT/hook" }
notify:
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 3s
  evaluation_interval: 1s
alerts:
  - name: api-errors
    expr: 'sum by (route) (rate(http_requests_total{route="routes.api",code_class="5xx"}[10s])) > 1'
    for: 2s
    severity: page
    labels: { team: web }
    annotations: { summary: "{{ $labels.route }} fails at {{ $value }}/s" }
  - name: api-availability
    slo: { route: api, objective: 99%, window: 30d, min_requests: 10 }
"#;

impl Hook {
    /// The notifications about `api-errors` with this status.
    fn of(&self, status: &str) -> Vec<serde_json::Value> {
        self.bodies()
            .into_iter()
            .filter(|b| b["status"] == status && b["groupLabels"]["alertname"] == "api-errors")
            .collect()
    }

    fn count(&self, status: &str) -> usize {
        self.of(status).len()
    }
}

/// Alertmanager's version 4 webhook payload, field by field.
fn check_v4_schema(p: &serde_json::Value) {
    let rfc3339 = |v: &serde_json::Value| {
        let s = v.as_str().unwrap_or_default();
        assert!(
            s.parse::<jiff::Timestamp>().is_ok(),
            "not an RFC 3339 time: {v}"
        );
    };
    assert_eq!(p["version"], "4");
    assert!(
        p["groupKey"]
            .as_str()
            .is_some_and(|k| k.contains("alertname=\"api-errors\""))
    );
    assert!(matches!(p["status"].as_str(), Some("firing" | "resolved")));
    assert_eq!(p["receiver"], "hook");
    assert_eq!(
        p["groupLabels"],
        serde_json::json!({ "alertname": "api-errors" })
    );
    assert_eq!(p["truncatedAlerts"], 0);
    assert_eq!(p["commonLabels"]["alertname"], "api-errors");
    assert_eq!(p["commonLabels"]["severity"], "page");
    assert_eq!(p["commonLabels"]["team"], "web");
    assert_eq!(p["commonLabels"]["route"], "routes.api");
    assert!(p["commonAnnotations"].is_object());
    assert!(p["externalURL"].is_string());
    let alerts = p["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{p:#}");
    for a in alerts {
        assert!(matches!(a["status"].as_str(), Some("firing" | "resolved")));
        assert!(a["labels"].is_object() && a["annotations"].is_object());
        assert!(
            a["annotations"]["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with("routes.api fails at ") && s.ends_with("/s")),
            "{a:#}"
        );
        rfc3339(&a["startsAt"]);
        rfc3339(&a["endsAt"]);
        assert!(
            a["generatorURL"]
                .as_str()
                .is_some_and(|u| u.contains("/api/v1/query?query="))
        );
        let fp = a["fingerprint"].as_str().unwrap();
        assert!(
            fp.len() == 16 && fp.chars().all(|c| c.is_ascii_hexdigit()),
            "{fp}"
        );
        if a["status"] == "firing" {
            assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
        } else {
            assert_ne!(a["endsAt"], "0001-01-01T00:00:00Z");
        }
    }
}

struct Stop<'a>(&'a Scratch);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["down"]);
    }
}

fn alerts_view(s: &Scratch) -> serde_json::Value {
    serde_json::from_str(&s.ok(&["alerts", "--json"])).unwrap()
}

#[test]
fn a_failing_route_fires_notifies_is_silenced_and_resolves() {
    let hook = Hook::start();
    let s = Scratch::new(&STACK.replace("HOOK_PORT", &hook.port.to_string()));
    std::fs::write(s.file("server.js"), FAILING_SERVER).unwrap();

    // The export passes through the CLI (promtool checks it in kiln-alerts' tests).
    let export = s.ok(&["alerts", "export", "--format", "prometheus"]);
    assert!(export.contains("- alert: \"api-errors\"") && export.contains("for: 2s"));
    assert_eq!(export.matches("- alert: \"api-availability\"").count(), 3);

    s.ok(&["up", "-d", "--interval", "5"]);
    let stop = Stop(&s);
    let status: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    let addr = status["ingress"].as_str().unwrap().to_owned();
    let load = Load::start(&addr, "api.localhost", "/", 2);
    assert!(
        wait_until(WAIT, || {
            alerts_view(&s)["evaluations"]
                .as_u64()
                .is_some_and(|n| n >= 3)
        }),
        "not three evaluations: {:#}",
        alerts_view(&s)
    );
    assert_eq!(
        alerts_view(&s)["rules"],
        4,
        "one expr rule, three SLO rules"
    );
    assert_eq!(hook.count("firing"), 0, "nothing fails yet");

    // The service starts failing: the alert goes pending, then fires and is notified.
    std::fs::write(s.file("fail"), "").unwrap();
    assert!(
        wait_until(WAIT, || hook.count("firing") >= 1),
        "no firing notification: {:#}",
        alerts_view(&s)
    );
    let first = hook.of("firing").remove(0);
    check_v4_schema(&first);
    let view = alerts_view(&s);
    let firing = view["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "api-errors")
        .unwrap()
        .clone();
    assert_eq!(firing["state"], "firing");
    assert!(firing["value"].as_f64().unwrap() > 1.0);
    let text = s.ok(&["alerts"]);
    assert!(
        text.contains("firing") && text.contains("api-errors"),
        "{text}"
    );

    // Unchanged and still firing: notified again after repeat_interval.
    assert!(
        wait_until(WAIT, || hook.count("firing") >= 2),
        "no repeat: {:#}",
        alerts_view(&s)
    );

    // A silence stops the repeats.
    let id = s
        .ok(&[
            "silence",
            "add",
            "alertname=api-errors",
            "--for",
            "10m",
            "--comment",
            "on it",
        ])
        .trim()
        .to_owned();
    assert!(s.ok(&["silence", "list"]).contains(&id));
    assert!(
        wait_until(WAIT, || {
            alerts_view(&s)["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| {
                    a["name"] == "api-errors" && a["silenced_by"][0].as_str() == Some(id.as_str())
                })
        }),
        "not silenced: {:#}",
        alerts_view(&s)
    );
    let silenced_at = hook.count("firing");
    let evaluations = alerts_view(&s)["evaluations"].as_u64().unwrap();
    // Three repeat intervals' worth of evaluations, at 1 s each.
    assert!(
        wait_until(WAIT, || {
            alerts_view(&s)["evaluations"]
                .as_u64()
                .is_some_and(|n| n >= evaluations + 10)
        }),
        "not ten more evaluations: {:#}",
        alerts_view(&s)
    );
    assert_eq!(
        hook.count("firing"),
        silenced_at,
        "a silenced alert was notified again"
    );
    assert_eq!(
        alerts_view(&s)["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "api-errors")
            .unwrap()["state"],
        "firing",
        "silenced, not resolved"
    );

    // The silence ends and the failure stops: the alert resolves and that is notified.
    s.ok(&["silence", "expire", &id]);
    std::fs::remove_file(s.file("fail")).unwrap();
    assert!(
        wait_until(WAIT, || hook.count("resolved") >= 1),
        "no resolved notification: {:#}",
        alerts_view(&s)
    );
    let resolved = hook.of("resolved").remove(0);
    check_v4_schema(&resolved);
    assert_eq!(resolved["alerts"][0]["status"], "resolved");
    assert_eq!(
        resolved["alerts"][0]["fingerprint"],
        first["alerts"][0]["fingerprint"]
    );
    // The SLO's burn-rate alerts fired too (a total outage burns any budget), in their own group.
    assert!(
        hook.bodies()
            .iter()
            .any(|b| b["groupLabels"]["alertname"] == "api-availability"
                && b["commonLabels"]["slo"] == "api-availability"),
        "no SLO notification"
    );
    let tally = load.finish();
    assert!(tally.ok > 0 && tally.failed > 0, "{tally:?}");

    // Every transition is in the event log.
    let events: serde_json::Value =
        serde_json::from_str(&s.ok(&["events", "--address", "alerts.api-errors", "--json"]))
            .unwrap();
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    for kind in ["alert.pending", "alert.firing", "alert.resolved"] {
        assert!(kinds.contains(&kind), "{kinds:?}");
    }
    drop(stop);
    // Silences are in the state store, so they outlive the control plane.
    let all = s.ok(&["silence", "list", "--all", "--json"]);
    assert!(all.contains(&id) && all.contains("on it"), "{all}");
}

/// `STACK` with its one expression alert over a 30 s window, so that it stays true across a
/// restart of a few seconds, and a repeat interval longer than the test.
fn restart_stack(hook_port: u16) -> String {
    let stack = STACK
        .replace("HOOK_PORT", &hook_port.to_string())
        .replace("repeat_interval: 3s", "repeat_interval: 1h")
        .replace("[10s])) > 1", "[30s])) > 0.5");
    let slo = stack.find("  - name: api-availability").unwrap();
    stack[..slo].to_owned()
}

/// The `alert.<to>` events of `api-errors`.
fn alert_events(s: &Scratch, to: &str) -> usize {
    let events: serde_json::Value =
        serde_json::from_str(&s.ok(&["events", "--address", "alerts.api-errors", "--json"]))
            .unwrap();
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == format!("alert.{to}"))
        .count()
}

fn ingress_of(s: &Scratch) -> String {
    let status: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    status["ingress"].as_str().unwrap().to_owned()
}

fn api_errors_state(s: &Scratch) -> Option<String> {
    alerts_view(s)["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "api-errors")
        .and_then(|a| a["state"].as_str().map(str::to_owned))
}

#[test]
fn a_firing_alert_survives_a_restart_without_refiring_or_renotifying() {
    let hook = Hook::start();
    let s = Scratch::new(&restart_stack(hook.port));
    std::fs::write(s.file("server.js"), FAILING_SERVER).unwrap();
    std::fs::write(s.file("fail"), "").unwrap();
    s.ok(&["up", "-d", "--interval", "5"]);
    let stop = Stop(&s);
    let load = Load::start(&ingress_of(&s), "api.localhost", "/", 2);
    assert!(
        wait_until(WAIT, || hook.count("firing") >= 1),
        "no firing notification: {:#}",
        alerts_view(&s)
    );
    assert_eq!(alert_events(&s, "firing"), 1);
    load.finish();

    // Restart the control plane while the failure goes on.
    s.ok(&["down"]);
    s.ok(&["up", "-d", "--interval", "5"]);
    let load = Load::start(&ingress_of(&s), "api.localhost", "/", 2);
    assert_eq!(
        api_errors_state(&s).as_deref(),
        Some("firing"),
        "restored as firing: {:#}",
        alerts_view(&s)
    );
    // Several evaluations and group intervals later: still firing, nothing new sent or logged.
    assert!(wait_until(WAIT, || {
        alerts_view(&s)["evaluations"]
            .as_u64()
            .is_some_and(|n| n >= 6)
    }));
    assert_eq!(api_errors_state(&s).as_deref(), Some("firing"));
    assert_eq!(hook.count("firing"), 1, "notified again after the restart");
    assert_eq!(
        alert_events(&s, "firing"),
        1,
        "fired again after the restart"
    );
    assert_eq!(alert_events(&s, "pending"), 1);

    // The failure stops: one resolution, notified once.
    std::fs::remove_file(s.file("fail")).unwrap();
    assert!(
        wait_until(WAIT, || hook.count("resolved") >= 1),
        "no resolved notification: {:#}",
        alerts_view(&s)
    );
    let evaluations = alerts_view(&s)["evaluations"].as_u64().unwrap();
    assert!(wait_until(WAIT, || {
        alerts_view(&s)["evaluations"]
            .as_u64()
            .is_some_and(|n| n >= evaluations + 3)
    }));
    assert_eq!(hook.count("resolved"), 1);
    assert_eq!(hook.count("firing"), 1);
    assert_eq!(alert_events(&s, "resolved"), 1);
    check_v4_schema(&hook.of("resolved").remove(0));
    load.finish();
    drop(stop);
}

/// A stranger on the receiver's port (another test's control plane scraping the service that
/// had the port before) gets a 404, and the receiver goes on recording notifications.
#[test]
fn the_webhook_receiver_outlives_a_stranger_on_its_port() {
    use std::io::{Read, Write};
    let hook = Hook::start();
    let addr = format!("127.0.0.1:{}", hook.port);
    let mut stranger = std::net::TcpStream::connect(&addr).unwrap();
    stranger
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stranger
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = stranger.read_to_string(&mut answer);
    let body = r#"{"status":"firing"}"#;
    let mut sender = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        sender,
        "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    assert!(
        wait_until(WAIT, || hook.bodies().len() == 1),
        "the POST after the stranger was not recorded (the stranger got {answer:?})"
    );
}
