//! Interop with Prometheus: the rule file `prometheus_rule_file` writes for a stack (its `expr:`
//! alerts and the rules its SLOs generate) passes `promtool check rules`, and kiln's evaluator,
//! run over `kiln-metrics` on a fixture, fires the same alerts with the same labels and
//! annotations at the same evaluation times as Prometheus's own (`promtool test rules`, which
//! is given kiln's answers as the expected ones).
//!
//! Skipped, with a message, when `promtool` is not installed and `CI` is unset; a failure in CI.

// Tests panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use kiln_alerts::{Evaluator, LabelSet, Phase, Querier, Sample};
use kiln_metrics::query::{Engine, Value};
use kiln_metrics::{Labels, Options, Store};

const STEP_S: i64 = 30;
const POINTS: i64 = 41;

const STACK: &str = r#"
name: interop
services:
  shop:
    run: sleep 1000
routes:
  - { name: shop, host: shop.localhost, service: shop }
notify:
  evaluation_interval: 30s
alerts:
  - name: errors
    expr: 'sum by (route) (rate(http_requests_total{code_class="5xx"}[1m])) > 0.5'
    for: 1m
    keep_firing_for: 2m
    severity: page
    labels: { team: web }
    annotations:
      summary: "{{ $labels.route }} fails at {{ $value }}/s"
  - name: error-ratio
    expr: 'sum by (route) (rate(http_requests_total{code_class="5xx"}[2m])) / sum by (route) (rate(http_requests_total[2m])) > 0.1'
    severity: ticket
    annotations: { summary: "ratio {{ $value }}" }
  - name: shop-availability
    slo: { route: shop, objective: 95%, window: 30d, min_requests: 20 }
  - name: shop-latency
    slo: { service: shop, objective: 90%, kind: latency, threshold: 250ms }
"#;

type Series = (Vec<(&'static str, &'static str)>, fn(i64) -> f64);

/// Errors at 1/s from step 10 to step 24, then none.
fn errors(i: i64) -> f64 {
    30.0 * (i.clamp(10, 24) - 10) as f64
}

/// The fixture: the value of each series at step i (30 s apart).
fn fixture() -> Vec<Series> {
    let with = |name: &'static str, extra: &[(&'static str, &'static str)]| {
        let mut l = vec![
            ("__name__", name),
            ("route", "routes.shop"),
            ("set", "stable"),
        ];
        l.extend_from_slice(extra);
        l
    };
    vec![
        (with("http_requests_total", &[("code_class", "2xx")]), |i| {
            60.0 * i as f64
        }),
        (
            with("http_requests_total", &[("code_class", "5xx")]),
            errors,
        ),
        (
            with("http_request_duration_seconds_bucket", &[("le", "0.25")]),
            |i| 50.0 * i as f64 + errors(i),
        ),
        (with("http_request_duration_seconds_count", &[]), |i| {
            60.0 * i as f64 + errors(i)
        }),
    ]
}

struct StoreQuerier<'a>(&'a Store);

impl Querier for StoreQuerier<'_> {
    fn query(&self, expr: &str, at_ms: i64) -> Result<Vec<Sample>, String> {
        match Engine::new(self.0)
            .query(expr, at_ms)
            .map_err(|e| e.to_string())?
        {
            Value::Vector(v) => Ok(v
                .iter()
                .map(|s| Sample {
                    labels: s
                        .labels
                        .iter()
                        .map(|l| (l.name.clone(), l.value.clone()))
                        .collect(),
                    value: s.v,
                })
                .collect()),
            other => Err(format!("unexpected {}", other.result_type())),
        }
    }
}

fn promtool_available() -> bool {
    let found = Command::new("sh")
        .args(["-c", "command -v promtool"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        // CI installs promtool (.ci/run), so there a missing promtool is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is required in CI: apt-get install -y prometheus"
        );
        println!("SKIPPED promtool rules: promtool not installed (apt-get install -y prometheus)");
    }
    found
}

fn promtool(args: &[&str], dir: &Path) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

type Firing = BTreeMap<i64, Vec<(String, LabelSet, LabelSet)>>;

/// kiln's answers: the firing alerts at every evaluation of the fixture.
fn evaluate(rules: &[kiln_alerts::Rule], db: &Path) -> Firing {
    let store = Store::open(db, Options::default()).unwrap();
    for (labels, value) in fixture() {
        let labels = Labels::new(labels);
        for i in 0..POINTS {
            store.append(&labels, i * STEP_S * 1000, value(i)).unwrap();
        }
    }
    let mut evaluator = Evaluator::new(rules.to_vec());
    let mut firing_at = Firing::new();
    for i in 0..POINTS {
        let t = i * STEP_S * 1000;
        let report = evaluator.evaluate(&StoreQuerier(&store), t);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        firing_at.insert(
            t,
            evaluator
                .alerts()
                .filter(|a| a.phase == Phase::Firing)
                .map(|a| (a.name.clone(), a.labels.clone(), a.annotations.clone()))
                .collect(),
        );
    }
    firing_at
}

/// A `promtool test rules` file: the fixture, and kiln's answers every minute as expectations.
fn promtool_test(names: &[String], firing_at: &Firing) -> String {
    let mut test = String::from(
        "rule_files: [rules.yml]\nevaluation_interval: 30s\ntests:\n  - interval: 30s\n    input_series:\n",
    );
    for (labels, value) in fixture() {
        let rest: Vec<String> = labels[1..]
            .iter()
            .map(|(k, v)| format!("{k}={}", quote(v)))
            .collect();
        let values: Vec<String> = (0..POINTS).map(|i| value(i).to_string()).collect();
        let _ = writeln!(
            test,
            "      - series: {}\n        values: {}",
            quote(&format!("{}{{{}}}", labels[0].1, rest.join(","))),
            quote(&values.join(" "))
        );
    }
    test.push_str("    alert_rule_test:\n");
    for (t, alerts) in firing_at.iter().filter(|(t, _)| *t % 60_000 == 0) {
        for name in names {
            let _ = writeln!(
                test,
                "      - eval_time: {}s\n        alertname: {}",
                t / 1000,
                quote(name)
            );
            let mine: Vec<_> = alerts.iter().filter(|(n, _, _)| n == name).collect();
            if mine.is_empty() {
                test.push_str("        exp_alerts: []\n");
                continue;
            }
            test.push_str("        exp_alerts:\n");
            for (_, labels, annotations) in mine {
                test.push_str("          - exp_labels:\n");
                for (k, v) in labels.iter().filter(|(k, _)| k.as_str() != "alertname") {
                    let _ = writeln!(test, "              {k}: {}", quote(v));
                }
                test.push_str("            exp_annotations:\n");
                for (k, v) in annotations {
                    let _ = writeln!(test, "              {k}: {}", quote(v));
                }
            }
        }
    }
    test
}

#[test]
fn promtool_accepts_the_export_and_agrees_with_the_evaluator() {
    if !promtool_available() {
        return;
    }
    let mut fs = kiln_spec::MemoryFs::new();
    fs.add("/s/kiln.yaml", STACK);
    let stack = kiln_spec::load(&fs, Path::new("/s/kiln.yaml"))
        .unwrap_or_else(|f| panic!("{:?}", f.diagnostics));
    let rules = kiln_alerts::rules(&stack.alerting);
    assert_eq!(
        rules.len(),
        2 + 3 + 3,
        "two expr alerts, three rules per SLO"
    );
    let dir = tempfile::tempdir().unwrap();
    let rule_file = kiln_alerts::prometheus_rule_file(&rules, 30_000);
    std::fs::write(dir.path().join("rules.yml"), &rule_file).unwrap();
    promtool(&["check", "rules", "rules.yml"], dir.path());

    let firing_at = evaluate(&rules, &dir.path().join("db"));
    let mut names: Vec<String> = rules.iter().map(|r| r.name.clone()).collect();
    names.dedup();
    // Not vacuous: each alert fires at some point, and `errors` waits for `for` and stops
    // after its keep_firing_for.
    for name in &names {
        assert!(
            firing_at.values().flatten().any(|(n, _, _)| n == name),
            "{name} never fired"
        );
    }
    let errors_firing = |s: i64| firing_at[&(s * 1000)].iter().any(|(n, _, _)| n == "errors");
    assert!(
        !errors_firing(330),
        "pending for `for` (errors start at 300 s)"
    );
    assert!(errors_firing(420));
    assert!(errors_firing(780), "kept firing after the errors stopped");
    assert!(!errors_firing(1200));

    std::fs::write(
        dir.path().join("test.yml"),
        promtool_test(&names, &firing_at),
    )
    .unwrap();
    promtool(&["test", "rules", "test.yml"], dir.path());
}
