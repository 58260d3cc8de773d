//! Exposition parser tests: both formats, escapes, errors with line numbers, never panicking.

use super::*;
use proptest::prelude::*;

#[test]
fn prometheus_text_with_histogram_and_escapes() {
    let text = "# HELP http_requests_total The total.\\nSecond line.\n\
# TYPE http_requests_total counter\n\
http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n\
http_requests_total{method=\"get\", path=\"C:\\\\dir\\\"x\\\"\\nend\"} 3\n\
\n\
# A comment\n\
# TYPE lat histogram\n\
lat_bucket{le=\"0.5\"} 129389\n\
lat_bucket{le=\"+Inf\"} 144320\n\
lat_sum 53423\n\
lat_count 144320\n\
nan_metric NaN\n\
neg_inf -Inf\n";
    let e = parse_exposition(text, Format::Prometheus).unwrap();
    assert_eq!(e.samples.len(), 8);
    assert_eq!(
        e.families[0].help.as_deref(),
        Some("The total.\nSecond line.")
    );
    assert_eq!(e.families[0].kind, MetricType::Counter);
    assert_eq!(e.families[1].kind, MetricType::Histogram);
    let s = &e.samples[0];
    assert_eq!(
        s.labels.to_string(),
        r#"http_requests_total{code="200", method="post"}"#
    );
    assert_eq!((s.value, s.timestamp_ms), (1027.0, Some(1_395_066_363_000)));
    assert_eq!(e.samples[1].labels.get("path"), Some("C:\\dir\"x\"\nend"));
    assert_eq!(e.samples[3].labels.get("le"), Some("+Inf"));
    assert!(e.samples[6].value.is_nan());
    assert_eq!(e.samples[7].value, f64::NEG_INFINITY);
}

#[test]
fn openmetrics_with_units_exemplars_and_eof() {
    let text = "# TYPE foo_seconds histogram\n\
# UNIT foo_seconds seconds\n\
# HELP foo_seconds Latency.\n\
foo_seconds_bucket{le=\"0.1\"} 8 # {trace_id=\"abc\"} 0.05 123.4\n\
foo_seconds_bucket{le=\"+Inf\"} 10 1520879607.789\n\
foo_seconds_count 10\n\
foo_seconds_sum 1.5\n\
# TYPE up unknown\n\
up 1\n\
# EOF\n";
    let e = parse_exposition(text, Format::OpenMetrics).unwrap();
    assert_eq!(e.samples.len(), 5);
    assert_eq!(e.families[0].unit.as_deref(), Some("seconds"));
    assert_eq!(e.samples[1].timestamp_ms, Some(1_520_879_607_789));
    assert_eq!(e.samples[0].timestamp_ms, None);
}

#[test]
fn errors_name_the_line() {
    let cases: &[(&str, Format, usize, &str)] = &[
        ("up 1\nup{a=\"b} 1\n", Format::Prometheus, 2, "unterminated"),
        (
            "ok 1\n\n9bad 1\n",
            Format::Prometheus,
            3,
            "invalid metric name",
        ),
        ("up one\n", Format::Prometheus, 1, "invalid value"),
        ("up 1 abc\n", Format::Prometheus, 1, "invalid timestamp"),
        (
            "up{a=\"1\",a=\"2\"} 1\n",
            Format::Prometheus,
            1,
            "duplicate label",
        ),
        (
            "# TYPE up bogus\n",
            Format::Prometheus,
            1,
            "unknown metric type",
        ),
        (
            "# TYPE h histogram\nh_bucket 1\n",
            Format::Prometheus,
            2,
            "without an le",
        ),
        ("up 1\n", Format::OpenMetrics, 2, "missing # EOF"),
        ("up 1\n# EOF\nup 2\n", Format::OpenMetrics, 3, "after # EOF"),
        ("up{a=\"\\q\"} 1\n", Format::Prometheus, 1, "invalid escape"),
        ("up 1 2 3\n", Format::Prometheus, 1, "unexpected text"),
    ];
    for (text, format, line, needle) in cases {
        let err = parse_exposition(text, *format).expect_err(text);
        assert_eq!(err.line, *line, "{text:?}: {err}");
        assert!(err.message.contains(needle), "{text:?}: {err}");
    }
}

#[test]
fn format_from_content_type() {
    assert_eq!(
        Format::from_content_type("application/openmetrics-text; version=1.0.0"),
        Format::OpenMetrics
    );
    assert_eq!(
        Format::from_content_type("text/plain; version=0.0.4"),
        Format::Prometheus
    );
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_text(s in "\\PC*") {
        let _ = parse_exposition(&s, Format::Prometheus);
        let _ = parse_exposition(&s, Format::OpenMetrics);
    }

    #[test]
    fn never_panics_on_exposition_like_text(s in "([a-z_]{1,4}(\\{[a-z]{0,2}=?\"?[a-z\\\\\"]{0,3}\"?,?\\}?)? ?[-+0-9.eInfNa]{0,5} ?[0-9.#{]{0,4}\n|# (TYPE|HELP|UNIT|EOF) [a-z_]{0,3} ?[a-z]{0,9}\n){0,8}") {
        let _ = parse_exposition(&s, Format::Prometheus);
        let _ = parse_exposition(&s, Format::OpenMetrics);
    }
}
