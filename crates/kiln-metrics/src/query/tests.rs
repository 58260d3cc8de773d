//! Query tests: a table of queries over synthetic data, expected values computed by hand.

use super::*;
use crate::chunk::Sample;
use crate::matcher::compile_all;

/// An in-memory [`Source`], so these tests exercise the evaluator alone.
#[derive(Debug)]
pub struct MemSource(pub Vec<Series>);

impl Source for MemSource {
    fn select(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<Series>, StoreError> {
        let ms = compile_all(matchers)?;
        Ok(self
            .0
            .iter()
            .filter(|s| ms.iter().all(|m| m.matches_labels(&s.labels)))
            .map(|s| Series {
                labels: s.labels.clone(),
                samples: s
                    .samples
                    .iter()
                    .copied()
                    .filter(|x| x.t >= start && x.t <= end)
                    .collect(),
            })
            .filter(|s| !s.samples.is_empty())
            .collect())
    }
}

fn series(labels: &[(&str, &str)], f: impl Fn(i64) -> Option<f64>) -> Series {
    // One sample every 10 s from 0 to 600 s.
    let samples = (0..=60)
        .filter_map(|i| f(i).map(|v| Sample { t: i * 10_000, v }))
        .collect();
    Series {
        labels: Labels::new(labels.iter().copied()),
        samples,
    }
}

/// The fixture: counters (one with a reset at 300 s), gauges (one stopping at 200 s), a
/// classic histogram and an info metric.
pub fn fixture() -> MemSource {
    let n = "__name__";
    MemSource(vec![
        series(
            &[
                (n, "http_requests_total"),
                ("job", "api"),
                ("instance", "a"),
            ],
            |i| Some(10.0 * i as f64),
        ),
        series(
            &[
                (n, "http_requests_total"),
                ("job", "api"),
                ("instance", "b"),
            ],
            |i| Some(5.0 * (if i < 30 { i } else { i - 30 }) as f64),
        ),
        series(
            &[
                (n, "http_requests_total"),
                ("job", "web"),
                ("instance", "a"),
            ],
            |i| Some(2.0 * i as f64),
        ),
        series(
            &[(n, "mem_bytes"), ("job", "api"), ("instance", "a")],
            |i| Some(if i < 30 { 100.0 } else { 200.0 }),
        ),
        series(
            &[(n, "mem_bytes"), ("job", "web"), ("instance", "a")],
            |i| (i <= 20).then_some(50.0),
        ),
        series(&[(n, "lat_bucket"), ("job", "api"), ("le", "0.1")], |i| {
            Some(i as f64)
        }),
        series(&[(n, "lat_bucket"), ("job", "api"), ("le", "0.5")], |i| {
            Some(3.0 * i as f64)
        }),
        series(&[(n, "lat_bucket"), ("job", "api"), ("le", "1")], |i| {
            Some(4.0 * i as f64)
        }),
        series(&[(n, "lat_bucket"), ("job", "api"), ("le", "+Inf")], |i| {
            Some(5.0 * i as f64)
        }),
        series(&[(n, "info"), ("job", "api"), ("version", "1.2")], |_| {
            Some(1.0)
        }),
    ])
}

/// Renders a result as sorted `labels value` lines (values rounded to 6 decimals).
pub fn render(v: &Value) -> Vec<String> {
    let num = |x: f64| {
        let r = (x * 1e6).round() / 1e6;
        if r == 0.0 {
            "0".to_string()
        } else {
            format!("{r}")
        }
    };
    let mut out: Vec<String> = match v {
        Value::Scalar { v, .. } => vec![format!("scalar {}", num(*v))],
        Value::String { v, .. } => vec![format!("string {v}")],
        Value::Vector(els) => els
            .iter()
            .map(|e| format!("{} {}", e.labels, num(e.v)))
            .collect(),
        Value::Matrix(m) => m
            .iter()
            .map(|s| {
                let pts: Vec<String> = s
                    .samples
                    .iter()
                    .map(|p| format!("{}@{}", num(p.v), p.t / 1000))
                    .collect();
                format!("{} [{}]", s.labels, pts.join(" "))
            })
            .collect(),
    };
    out.sort();
    out
}

#[track_caller]
fn check(query: &str, t_secs: i64, want: &[&str]) {
    let src = fixture();
    let got = Engine::new(&src)
        .query(query, t_secs * 1000)
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(render(&got), want, "{query} @ {t_secs}s");
}

#[track_caller]
fn check_err(query: &str, needle: &str) {
    let src = fixture();
    let err = Engine::new(&src)
        .query(query, 600_000)
        .expect_err(query)
        .to_string();
    assert!(err.contains(needle), "{query}: {err:?} lacks {needle:?}");
}

#[test]
fn selectors_offset_at_and_staleness() {
    check(
        r#"http_requests_total{job="api",instance="a"}"#,
        600,
        &[r#"http_requests_total{instance="a", job="api"} 600"#],
    );
    check(
        r#"http_requests_total{job=~"w.*"} offset 1m"#,
        600,
        &[r#"http_requests_total{instance="a", job="web"} 108"#],
    );
    check(
        r#"http_requests_total{job="web"} @ 100"#,
        600,
        &[r#"http_requests_total{instance="a", job="web"} 20"#],
    );
    check(r#"http_requests_total{job!~"api|web"}"#, 600, &[]);
    check(r#"http_requests_total{job=~"ap"}"#, 600, &[]);
    // The web gauge's last sample is at 200 s: visible for 5 minutes, then stale.
    check(
        "mem_bytes",
        490,
        &[
            r#"mem_bytes{instance="a", job="api"} 200"#,
            r#"mem_bytes{instance="a", job="web"} 50"#,
        ],
    );
    check(
        "mem_bytes",
        510,
        &[r#"mem_bytes{instance="a", job="api"} 200"#],
    );
    check(
        r#"http_requests_total{job="web"}[25s]"#,
        600,
        &[r#"http_requests_total{instance="a", job="web"} [116@580 118@590 120@600]"#],
    );
}

#[test]
fn counters_rate_irate_increase() {
    check(
        r#"rate(http_requests_total{job="api",instance="a"}[1m])"#,
        600,
        &[r#"{instance="a", job="api"} 1"#],
    );
    check(
        r#"increase(http_requests_total{job="api",instance="a"}[1m])"#,
        600,
        &[r#"{instance="a", job="api"} 60"#],
    );
    // Reset at 300 s: 130→145, then 0→10; the 145 is added back.
    check(
        r#"increase(http_requests_total{instance="b"}[1m])"#,
        320,
        &[r#"{instance="b", job="api"} 25"#],
    );
    check(
        r#"irate(http_requests_total{instance="b"}[1m])"#,
        300,
        &[r#"{instance="b", job="api"} 0"#],
    );
    check(
        r#"irate(http_requests_total{instance="b"}[1m])"#,
        310,
        &[r#"{instance="b", job="api"} 0.5"#],
    );
    // Extrapolated 5 s to the range start (within 1.1 × the 10 s interval): 10 × 55/50.
    check(
        r#"increase(http_requests_total{job="web"}[55s])"#,
        600,
        &[r#"{instance="a", job="web"} 11"#],
    );
    // Never extrapolated below zero: the counter starts at 0 at t=0, so only to the end.
    check(
        r#"increase(http_requests_total{job="api",instance="a"}[1m])"#,
        35,
        &[r#"{instance="a", job="api"} 35"#],
    );
    // A single sample gives no rate.
    check(r#"rate(http_requests_total{job="web"}[5s])"#, 600, &[]);
    check(
        r#"delta(mem_bytes{job="api"}[1m])"#,
        600,
        &[r#"{instance="a", job="api"} 0"#],
    );
}

#[test]
fn over_time_functions() {
    let q = |f: &str| format!(r#"{f}(mem_bytes{{job="api"}}[1m])"#);
    let l = r#"{instance="a", job="api"}"#;
    check(&q("avg_over_time"), 330, &[&format!("{l} 157.142857")]);
    check(&q("min_over_time"), 330, &[&format!("{l} 100")]);
    check(&q("max_over_time"), 330, &[&format!("{l} 200")]);
    check(&q("sum_over_time"), 330, &[&format!("{l} 1100")]);
    check(&q("count_over_time"), 330, &[&format!("{l} 7")]);
    check(&q("last_over_time"), 330, &[&format!("mem_bytes{l} 200")]);
    check(
        r#"quantile_over_time(0.5, mem_bytes{job="api"}[1m])"#,
        330,
        &[&format!("{l} 200")],
    );
    check(
        r#"quantile_over_time(0.25, mem_bytes{job="api"}[1m])"#,
        330,
        &[&format!("{l} 100")],
    );
}

#[test]
fn aggregations() {
    check(
        "sum by (job) (http_requests_total)",
        600,
        &[r#"{job="api"} 750"#, r#"{job="web"} 120"#],
    );
    check(
        "sum without (instance) (http_requests_total)",
        600,
        &[r#"{job="api"} 750"#, r#"{job="web"} 120"#],
    );
    check("avg(mem_bytes)", 490, &["{} 125"]);
    check("count(http_requests_total)", 600, &["{} 3"]);
    check("max(http_requests_total)", 600, &["{} 600"]);
    check(
        "min by (job) (http_requests_total)",
        600,
        &[r#"{job="api"} 150"#, r#"{job="web"} 120"#],
    );
    check(
        "topk(2, http_requests_total)",
        600,
        &[
            r#"http_requests_total{instance="a", job="api"} 600"#,
            r#"http_requests_total{instance="b", job="api"} 150"#,
        ],
    );
    check(
        "bottomk(1, http_requests_total)",
        600,
        &[r#"http_requests_total{instance="a", job="web"} 120"#],
    );
    check("quantile(0.5, http_requests_total)", 600, &["{} 150"]);
    check("quantile(0.75, http_requests_total)", 600, &["{} 375"]);
}

#[test]
fn histogram_quantile_classic_buckets() {
    check(
        "histogram_quantile(0.5, lat_bucket)",
        600,
        &[r#"{job="api"} 0.4"#],
    );
    check(
        "histogram_quantile(0.9, lat_bucket)",
        600,
        &[r#"{job="api"} 1"#],
    );
    check(
        "histogram_quantile(0.1, lat_bucket)",
        600,
        &[r#"{job="api"} 0.05"#],
    );
    check(
        "histogram_quantile(0.5, rate(lat_bucket[1m]))",
        600,
        &[r#"{job="api"} 0.4"#],
    );
    check(
        "histogram_quantile(0.5, sum by (le) (rate(lat_bucket[1m])))",
        600,
        &["{} 0.4"],
    );
}

#[test]
fn binary_operators_and_matching() {
    check(
        r#"http_requests_total{job="api"} / ignoring(instance) group_left sum by (job) (http_requests_total)"#,
        600,
        &[
            r#"{instance="a", job="api"} 0.8"#,
            r#"{instance="b", job="api"} 0.2"#,
        ],
    );
    check(
        "mem_bytes * on(job) group_left(version) info",
        600,
        &[r#"{instance="a", job="api", version="1.2"} 200"#],
    );
    check(
        "info * on(job) group_right(version) mem_bytes",
        600,
        &[r#"{instance="a", job="api", version="1.2"} 200"#],
    );
    check(
        "http_requests_total > 200",
        600,
        &[r#"http_requests_total{instance="a", job="api"} 600"#],
    );
    check(
        "300 < http_requests_total",
        600,
        &[r#"http_requests_total{instance="a", job="api"} 600"#],
    );
    check(
        "http_requests_total > bool 200",
        600,
        &[
            r#"{instance="a", job="api"} 1"#,
            r#"{instance="a", job="web"} 0"#,
            r#"{instance="b", job="api"} 0"#,
        ],
    );
    // One-to-one matching `on` labels keeps only those labels, the name included.
    check(
        r#"mem_bytes == on(instance, job) http_requests_total{job="api"} / 3"#,
        600,
        &[r#"{instance="a", job="api"} 200"#],
    );
    check(
        r#"mem_bytes == ignoring(job) http_requests_total{job="web"} / 0.6"#,
        600,
        &[r#"mem_bytes{instance="a"} 200"#],
    );
    check(
        "http_requests_total and on(job) mem_bytes",
        600,
        &[
            r#"http_requests_total{instance="a", job="api"} 600"#,
            r#"http_requests_total{instance="b", job="api"} 150"#,
        ],
    );
    check(
        r#"mem_bytes or http_requests_total{job="web"}"#,
        600,
        &[
            r#"http_requests_total{instance="a", job="web"} 120"#,
            r#"mem_bytes{instance="a", job="api"} 200"#,
        ],
    );
    check(
        "http_requests_total unless on(job) mem_bytes",
        600,
        &[r#"http_requests_total{instance="a", job="web"} 120"#],
    );
    check("1 + 2 * 3", 0, &["scalar 7"]);
    check("2 ^ 3 - 7 % 4", 0, &["scalar 5"]);
    check("1 > bool 2", 0, &["scalar 0"]);
    check("-vector(1)", 0, &["{} -1"]);
    check(
        r#"-mem_bytes{job="api"} + 1"#,
        600,
        &[r#"{instance="a", job="api"} -199"#],
    );
    check_err(
        "http_requests_total + on(job) mem_bytes",
        "many-to-one matching must be explicit",
    );
    check_err(
        "mem_bytes + on(job) http_requests_total",
        "duplicate series",
    );
}

#[test]
fn simple_functions() {
    check(
        r#"absent(nothing{job="x", a=~"y"})"#,
        600,
        &[r#"{job="x"} 1"#],
    );
    check("absent(mem_bytes)", 600, &[]);
    check("scalar(sum(mem_bytes))", 600, &["scalar 200"]);
    check("scalar(http_requests_total)", 600, &["scalar NaN"]);
    check("time()", 600, &["scalar 600"]);
    check("vector(time())", 60, &["{} 60"]);
    check(
        r#"abs(-mem_bytes{job="api"})"#,
        600,
        &[r#"{instance="a", job="api"} 200"#],
    );
    check(
        r#"clamp_max(http_requests_total{job="web"}, 100)"#,
        600,
        &[r#"{instance="a", job="web"} 100"#],
    );
    check(
        r#"clamp_min(http_requests_total{job="web"}, 1000)"#,
        600,
        &[r#"{instance="a", job="web"} 1000"#],
    );
    check("round(vector(2.5))", 0, &["{} 3"]);
    check("round(vector(2.26), 0.1)", 0, &["{} 2.3"]);
    check("ceil(vector(1.2)) + floor(vector(1.8))", 0, &["{} 3"]);
    check(
        "sqrt(vector(16)) + exp(vector(0)) + ln(vector(1))",
        0,
        &["{} 5"],
    );
    check("log2(vector(8)) + log10(vector(100))", 0, &["{} 5"]);
    check(r#""hello""#, 0, &["string hello"]);
}

#[test]
fn unsupported_and_errors_are_clear() {
    check_err(
        "predict_linear(mem_bytes[1m], 60)",
        "function predict_linear()",
    );
    check_err(
        "stddev_over_time(mem_bytes[1m])",
        "function stddev_over_time()",
    );
    check_err("stddev(mem_bytes)", "aggregation stddev");
    check_err("max_over_time(rate(mem_bytes[1m])[5m:1m])", "subqueries");
    check_err("sum(", "parse error");
}

#[test]
fn limits_stop_big_queries() {
    let src = fixture();
    let few_series = Limits {
        max_series: 2,
        ..Limits::default()
    };
    let err = Engine::with_limits(&src, few_series)
        .query("http_requests_total", 600_000)
        .unwrap_err();
    assert!(matches!(err, QueryError::Limit(_)), "{err}");
    let few_samples = Limits {
        max_samples: 100,
        ..Limits::default()
    };
    let err = Engine::with_limits(&src, few_samples)
        .query_range("http_requests_total", 0, 600_000, 1000)
        .unwrap_err();
    assert!(matches!(err, QueryError::Limit(_)), "{err}");
    let err = Engine::new(&src)
        .query_range("vector(1)", 0, 1_000_000_000, 1)
        .unwrap_err();
    assert!(matches!(err, QueryError::Limit(_)), "{err}");
}

#[test]
fn range_queries() {
    let src = fixture();
    let e = Engine::new(&src);
    let got = e
        .query_range(r#"http_requests_total{job="web"}"#, 0, 60_000, 30_000)
        .unwrap();
    assert_eq!(
        render(&got),
        [r#"http_requests_total{instance="a", job="web"} [0@0 6@30 12@60]"#]
    );
    let got = e
        .query_range(
            r#"rate(http_requests_total{job="api",instance="a"}[1m])"#,
            300_000,
            600_000,
            150_000,
        )
        .unwrap();
    assert_eq!(
        render(&got),
        [r#"{instance="a", job="api"} [1@300 1@450 1@600]"#]
    );
    // The web gauge disappears 5 minutes after its last sample.
    let got = e
        .query_range(r#"mem_bytes{job="web"}"#, 400_000, 600_000, 100_000)
        .unwrap();
    assert_eq!(
        render(&got),
        [r#"mem_bytes{instance="a", job="web"} [50@400 50@500]"#]
    );
    assert_eq!(
        e.query_range("time()", 0, 20_000, 10_000)
            .unwrap()
            .result_type(),
        "matrix"
    );
    assert!(e.query_range("mem_bytes[1m]", 0, 1, 1).is_err());
}

#[test]
fn store_is_a_source() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), crate::Options::default()).unwrap();
    for s in fixture().0 {
        for x in &s.samples {
            store.append(&s.labels, x.t, x.v).unwrap();
        }
    }
    let got = Engine::new(&store)
        .query("sum by (job) (http_requests_total)", 600_000)
        .unwrap();
    assert_eq!(render(&got), [r#"{job="api"} 750"#, r#"{job="web"} 120"#]);
}
