//! Conformance against real Prometheus: kiln answers ≥50 instant queries over a fixture, the
//! answers become a `promtool test rules` file (same input series, `eval_time`,
//! `exp_samples`), and promtool — Prometheus's own evaluator — must pass every one.
//!
//! Skipped, with a message, when `promtool` is not installed (Debian: `apt-get install
//! prometheus`).

use std::fmt::Write as _;
use std::process::Command;

use kiln_metrics::query::{Engine, Value};
use kiln_metrics::{Labels, Options, Store};

const INTERVAL_S: i64 = 10;
const POINTS: i64 = 61;

type Gen = fn(i64) -> Option<f64>;

/// Series as (labels, value at step i or None for a gap).
fn fixture() -> Vec<(Labels, Gen)> {
    let l = |pairs: &[(&str, &str)]| Labels::new(pairs.iter().copied());
    let n = "__name__";
    vec![
        (
            l(&[
                (n, "http_requests_total"),
                ("job", "api"),
                ("instance", "a"),
            ]),
            |i| Some(10.0 * i as f64),
        ),
        (
            l(&[
                (n, "http_requests_total"),
                ("job", "api"),
                ("instance", "b"),
            ]),
            |i| Some(5.0 * (if i < 30 { i } else { i - 30 }) as f64),
        ),
        (
            l(&[
                (n, "http_requests_total"),
                ("job", "web"),
                ("instance", "a"),
            ]),
            |i| Some((3 * i + i % 7) as f64),
        ),
        (
            l(&[(n, "mem_bytes"), ("job", "api"), ("instance", "a")]),
            |i| Some(if i < 30 { 100.0 } else { 250.0 }),
        ),
        (
            l(&[(n, "mem_bytes"), ("job", "web"), ("instance", "a")]),
            |i| (i <= 20).then_some(50.0 + i as f64),
        ),
        (
            l(&[(n, "lat_bucket"), ("job", "api"), ("le", "0.1")]),
            |i| Some(i as f64),
        ),
        (
            l(&[(n, "lat_bucket"), ("job", "api"), ("le", "0.5")]),
            |i| Some((3 * i) as f64),
        ),
        (l(&[(n, "lat_bucket"), ("job", "api"), ("le", "1")]), |i| {
            Some((4 * i + i % 3) as f64)
        }),
        (
            l(&[(n, "lat_bucket"), ("job", "api"), ("le", "+Inf")]),
            |i| Some((5 * i + i % 3) as f64),
        ),
        (
            l(&[(n, "info"), ("job", "api"), ("version", "1.2")]),
            |_| Some(1.0),
        ),
        (l(&[(n, "temp"), ("room", "x")]), |i| {
            Some(((i * 37) % 23) as f64 - 5.0)
        }),
        (l(&[(n, "temp"), ("room", "y")]), |i| {
            Some(((i * 13) % 17) as f64 / 4.0)
        }),
    ]
}

const QUERIES: &[&str] = &[
    "http_requests_total",
    r#"http_requests_total{job="api"}"#,
    r#"http_requests_total{job!="api"}"#,
    r#"http_requests_total{job=~"a.*"}"#,
    r#"http_requests_total{job!~"a.*"}"#,
    r#"http_requests_total{job=~"ap"}"#,
    "http_requests_total offset 2m",
    r#"http_requests_total{job="web"} @ 100"#,
    "mem_bytes",
    "rate(http_requests_total[1m])",
    "rate(http_requests_total[45s])",
    "irate(http_requests_total[1m])",
    "increase(http_requests_total[55s])",
    "increase(http_requests_total[2m] offset 1m)",
    "delta(temp[1m])",
    "avg_over_time(temp[1m])",
    "min_over_time(temp[1m])",
    "max_over_time(temp[1m])",
    "sum_over_time(temp[1m])",
    "count_over_time(mem_bytes[5m])",
    "last_over_time(mem_bytes[5m])",
    "quantile_over_time(0.3, temp[2m])",
    "histogram_quantile(0.5, lat_bucket)",
    "histogram_quantile(0.95, rate(lat_bucket[1m]))",
    "histogram_quantile(0.2, sum by (le) (rate(lat_bucket[1m])))",
    "sum(http_requests_total)",
    "sum by (job) (http_requests_total)",
    "sum without (instance) (http_requests_total)",
    "avg by (job) (http_requests_total)",
    "min(temp)",
    "max by (room) (temp)",
    "count(http_requests_total)",
    "topk(2, http_requests_total)",
    "bottomk(1, temp)",
    "quantile(0.9, http_requests_total)",
    "quantile by (job) (0.5, http_requests_total)",
    r#"http_requests_total{job="api"} / ignoring(instance) group_left sum by (job) (http_requests_total)"#,
    "mem_bytes * on(job) group_left(version) info",
    "info * on(job) group_right(version) mem_bytes",
    "http_requests_total > 100",
    "http_requests_total > bool 100",
    "100 < http_requests_total",
    "temp == bool on(room) temp",
    "mem_bytes - on(instance, job) rate(http_requests_total[1m])",
    "http_requests_total and on(job) mem_bytes",
    r#"mem_bytes or http_requests_total{job="web"}"#,
    "http_requests_total unless on(job) mem_bytes",
    "temp * 2 + 1",
    "2 ^ temp",
    "temp % 3",
    "-temp",
    "1 + 2 * 3 - 4 / 8",
    r#"absent(nonexistent{job="x"})"#,
    "absent(mem_bytes)",
    "scalar(sum(mem_bytes))",
    "vector(time())",
    "time()",
    "abs(temp)",
    "ceil(temp / 3)",
    "floor(temp / 3)",
    "round(temp / 3)",
    "round(temp, 0.5)",
    "clamp_min(temp, 0)",
    "clamp_max(temp, 2)",
    "sqrt(clamp_min(temp, 0))",
    // Go's and Rust's libm may differ in the last bit of transcendental functions; rounding
    // to 1e-9 compares the functions, not the libm.
    "round(exp(temp / 10), 1e-9)",
    "round(ln(clamp_min(temp, 1)), 1e-9)",
    "log2(clamp_min(temp, 1))",
    "round(log10(clamp_min(temp, 1)), 1e-9)",
    "sum(rate(http_requests_total[2m])) by (job) / on(job) group_left sum(mem_bytes) by (job)",
];

const EVAL_TIMES_S: &[i64] = &[300, 490, 600];

fn yaml_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn yaml_float(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 {
            ".inf".into()
        } else {
            "-.inf".into()
        };
    }
    format!("{v:?}")
}

fn series_values(g: Gen) -> String {
    (0..POINTS)
        .map(|i| g(i).map_or("_".to_string(), yaml_float))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Renders one promql_expr_test from kiln's answer; None when the answer has NaNs (promtool
/// compares NaN unequal to itself).
fn expr_test(expr: &str, t_s: i64, v: &Value) -> Option<String> {
    let samples: Vec<(String, f64)> = match v {
        Value::Scalar { v, .. } => vec![("{}".to_string(), *v)],
        Value::Vector(els) => els.iter().map(|e| (e.labels.to_string(), e.v)).collect(),
        _ => return None,
    };
    if samples.iter().any(|(_, v)| v.is_nan()) {
        return None;
    }
    let mut out = format!(
        "      - expr: {}\n        eval_time: {t_s}s\n",
        yaml_quote(expr)
    );
    if samples.is_empty() {
        out.push_str("        exp_samples: []\n");
    } else {
        out.push_str("        exp_samples:\n");
        for (labels, v) in samples {
            let _ = writeln!(
                out,
                "          - labels: {}\n            value: {}",
                yaml_quote(&labels),
                yaml_float(v)
            );
        }
    }
    Some(out)
}

#[test]
fn kiln_agrees_with_promtool() {
    let Ok(which) = Command::new("sh")
        .args(["-c", "command -v promtool"])
        .output()
    else {
        println!("SKIPPED: cannot run sh to look for promtool");
        return;
    };
    if !which.status.success() {
        // CI installs promtool (.ci/run), so there a missing promtool is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is required in CI: apt-get install -y prometheus"
        );
        println!(
            "SKIPPED promtool conformance: promtool not installed (apt-get install -y prometheus)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db"), Options::default()).unwrap();
    let mut yaml =
        format!("rule_files: []\ntests:\n  - interval: {INTERVAL_S}s\n    input_series:\n");
    for (labels, g) in fixture() {
        for i in 0..POINTS {
            if let Some(v) = g(i) {
                store.append(&labels, i * INTERVAL_S * 1000, v).unwrap();
            }
        }
        let _ = writeln!(
            yaml,
            "      - series: {}\n        values: '{}'",
            yaml_quote(&labels.to_string()),
            series_values(g)
        );
    }
    yaml.push_str("    promql_expr_test:\n");
    let engine = Engine::new(&store);
    let mut cases = 0;
    for q in QUERIES {
        for &t in EVAL_TIMES_S {
            let v = engine
                .query(q, t * 1000)
                .unwrap_or_else(|e| panic!("{q}: {e}"));
            if let Some(test) = expr_test(q, t, &v) {
                yaml.push_str(&test);
                cases += 1;
            }
        }
    }
    assert!(cases >= 50, "only {cases} comparable cases");
    let file = dir.path().join("conformance.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let out = Command::new("promtool")
        .arg("test")
        .arg("rules")
        .arg(&file)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        std::fs::write("/tmp/kiln-metrics-conformance.yaml", &yaml).unwrap();
    }
    assert!(
        out.status.success(),
        "promtool disagrees with kiln ({cases} cases):\n{report}"
    );
    println!("promtool agrees with kiln on {cases} instant queries");
}
