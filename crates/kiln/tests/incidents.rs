//! Incidents end to end with the real binary: a service behind a route starts answering 500
//! under load; its paging alert opens an incident; `kiln incident ack` and `note` add to the
//! timeline (a second ack is refused); the failure stops, the alert resolves and the incident
//! is mitigated; `resolve` closes it and the report holds every milestone. Meanwhile a paging
//! alert of a service in a maintenance window is muted and opens nothing, and a silence
//! scheduled for later is pending. With the control plane stopped, notes go to the store.

// Tests panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Down, FAILING_SERVER, Load, Scratch, assert_contains_all, wait_until};

const STACK: &str = r#"
name: incidents
ingress: { listen: "127.0.0.1:0" }
services:
  api:
    run: node server.js
    health: { readiness: { http: /health, interval: 100ms, timeout: 5s } }
  web:
    run: node server.js
routes:
  - { name: api, host: api.localhost, service: api }
notify:
  evaluation_interval: 1s
  incidents: { auto_resolve_after: 1h }
  maintenance:
    - { services: [web], from: "2020-01-01T00:00:00Z", to: "2100-01-01T00:00:00Z" }
    - { services: [api], weekly: { days: [sun], from: "23:00", to: "23:01" } }
alerts:
  - name: api-down
    expr: 'sum by (route) (rate(http_requests_total{route="routes.api",code_class="5xx"}[10s])) > 1'
    for: 1s
    severity: page
    labels: { service: api }
  - name: web-always
    expr: 'vector(1) > 0'
    severity: page
    labels: { service: web }
"#;

fn incidents(s: &Scratch, open: bool) -> Vec<serde_json::Value> {
    let mut args = vec!["incident", "list", "--json"];
    if open {
        args.push("--open");
    }
    s.json(&args).as_array().unwrap().clone()
}

fn incident(s: &Scratch, id: &str) -> serde_json::Value {
    s.json(&["incident", "show", id, "--json"])
}

#[test]
fn a_paging_alert_opens_an_incident_that_is_acknowledged_mitigated_and_resolved() {
    let s = Scratch::new(STACK);
    std::fs::write(s.file("server.js"), FAILING_SERVER).unwrap();
    s.ok(&["up", "-d", "--interval", "5"]);
    let down = Down(&s);
    let status = s.json(&["status", "--json"]);
    let addr = status["ingress"].as_str().unwrap().to_owned();
    let load = Load::start(&addr, "api.localhost", "/", 2);

    // The web alert fires at once, inside its maintenance window: muted, no incident.
    assert!(wait_until(Duration::from_secs(20), || {
        s.json(&["alerts", "--json"])["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "web-always" && a["state"] == "firing")
    }));
    let view = s.json(&["alerts", "--json"]);
    let web = view["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "web-always")
        .unwrap()
        .clone();
    assert_eq!(web["maintenance"], true, "{web:#}");
    assert!(s.ok(&["alerts"]).contains("firing (maintenance)"));

    // A silence for later is pending, not active.
    let later = s
        .ok(&[
            "silence",
            "add",
            "alertname=api-down",
            "--start",
            "2h",
            "--for",
            "1h",
        ])
        .trim()
        .to_owned();
    let silences = s.ok(&["silence", "list"]);
    assert!(
        silences
            .lines()
            .any(|l| l.starts_with(&later) && l.contains("pending")),
        "{silences}"
    );

    // The api fails: its paging alert opens an incident.
    std::fs::write(s.file("fail"), "").unwrap();
    assert!(
        wait_until(Duration::from_secs(40), || !incidents(&s, true).is_empty()),
        "no incident: {:#}",
        s.json(&["alerts", "--json"])
    );
    let open = incidents(&s, true);
    assert_eq!(open.len(), 1, "web is in maintenance: {open:#?}");
    assert_eq!(open[0]["service"], "api");
    assert_eq!(open[0]["state"], "open");
    let id = open[0]["id"].to_string();

    s.ok(&["incident", "ack", &id]);
    let again = s.run(&["incident", "ack", &id]);
    assert_eq!(again.status.code(), Some(7), "a second ack is refused");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already acknowledged"));
    s.ok(&["incident", "note", &id, "rolling back the bad release"]);
    let shown = incident(&s, &id);
    assert_eq!(shown["state"], "acknowledged");
    let kinds = |v: &serde_json::Value| -> Vec<String> {
        v["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(kinds(&shown), ["alert_fired", "acknowledged", "note"]);
    let who = &shown["timeline"][1]["actor"];
    assert!(who.as_str().unwrap().contains('@'), "{who}");

    // The failure stops: the alert resolves and the incident is mitigated by kiln.
    std::fs::remove_file(s.file("fail")).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || incident(&s, &id)["state"]
            == "mitigated"),
        "not mitigated: {:#}",
        incident(&s, &id)
    );
    let mitigated = incident(&s, &id);
    assert_eq!(mitigated["milestones"]["mitigated"]["actor"], "kiln");
    let text = s.ok(&["incident", "show", &id]);
    assert!(
        text.contains("time to acknowledge: ") && text.contains("mitigated"),
        "{text}"
    );

    s.ok(&["incident", "resolve", &id, "--note", "release rolled back"]);
    assert!(incidents(&s, true).is_empty());
    let report = s.ok(&["incident", "report", &id]);
    assert_contains_all(
        &report,
        &[
            "| detected |",
            "| acknowledged |",
            "| mitigated |",
            "| resolved |",
            "alert_fired",
            "alert_resolved",
            "rolling back the bad release",
            "resolved: release rolled back",
            "Time to acknowledge: ",
        ],
    );
    assert!(!report.contains("| acknowledged | - |"), "{report}");
    let tally = load.finish();
    assert!(tally.failed > 0, "{tally:?}");

    // Without a control plane, the store is changed directly.
    drop(down);
    s.ok(&["incident", "note", &id, "post-incident review on Monday"]);
    let after = incident(&s, &id);
    assert_eq!(after["state"], "resolved");
    assert_eq!(kinds(&after).last().map(String::as_str), Some("note"));
    assert_eq!(incidents(&s, false).len(), 1);
    let list = s.ok(&["incident", "list"]);
    assert!(
        list.contains("resolved") && list.contains("api-down on api"),
        "{list}"
    );
    let unknown = s.run(&["incident", "ack", "999"]);
    assert_eq!(unknown.status.code(), Some(7));
}
