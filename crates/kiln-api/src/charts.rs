//! The service page's charts as PromQL over the series kiln records: the ingress's
//! `http_requests_total` and `http_request_duration_seconds` (label `route`), and the
//! collector's `kiln_instance_*` (labels `service`, `instance`). The page fetches each query
//! through `/api/query_range`, so what a chart draws is exactly what its PromQL (shown on the
//! page, to copy into Grafana) answers.

use serde::{Deserialize, Serialize};

use crate::view::RouteView;

/// One line (or set of lines) of a chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChartQuery {
    /// The PromQL.
    pub expr: String,
    /// The legend: fixed text, with `{label}` replaced by each series' label value.
    pub legend: String,
}

/// One chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chart {
    /// A stable id (`requests`), for the page's elements.
    pub id: String,
    /// The heading.
    pub title: String,
    /// How values are shown: `rps`, `ratio`, `seconds`, `cores`, `bytes`, `count`.
    pub unit: String,
    /// Its queries.
    pub queries: Vec<ChartQuery>,
}

/// The evaluation grid of a page's range queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grid {
    /// Start (ms).
    pub start: i64,
    /// End (ms).
    pub end: i64,
    /// Step (ms).
    pub step: i64,
}

/// About 240 points per line; never finer than the collector's 2 s.
pub fn grid(end_ms: i64, range_ms: i64) -> Grid {
    let step = (range_ms / 240).max(2_000);
    let step = step - step % 1000;
    Grid {
        start: end_ms - range_ms,
        end: end_ms,
        step,
    }
}

/// The `rate()` window for a step: four collector samples at least, and never narrower than
/// the step (or points between samples would be missed).
fn rate_window(step_ms: i64) -> String {
    format!("{}s", (step_ms * 4 / 1000).max(60))
}

/// A PromQL string literal.
fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A regular expression matching exactly one of `values`.
fn any_of(values: &[&str]) -> String {
    const SPECIAL: &str = "\\.+*?()|[]{}^$";
    values
        .iter()
        .map(|v| {
            let mut out = String::new();
            for c in v.chars() {
                if SPECIAL.contains(c) {
                    out.push('\\');
                }
                out.push(c);
            }
            out
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// The charts of service `name`, served by `routes`, on `grid`.
pub fn service_charts(name: &str, routes: &[RouteView], grid: &Grid) -> Vec<Chart> {
    let window = rate_window(grid.step);
    let service = quoted(name);
    let mut charts = Vec::new();
    if !routes.is_empty() {
        let addresses: Vec<&str> = routes.iter().map(|r| r.address.as_str()).collect();
        let route = format!("route=~{}", quoted(&any_of(&addresses)));
        let rate =
            |filter: &str| format!("sum(rate(http_requests_total{{{route}{filter}}}[{window}]))");
        charts.push(Chart {
            id: "requests".into(),
            title: "Request rate".into(),
            unit: "rps".into(),
            queries: vec![ChartQuery {
                expr: format!(
                    "sum by (code_class) (rate(http_requests_total{{{route}}}[{window}]))"
                ),
                legend: "{code_class}".into(),
            }],
        });
        charts.push(Chart {
            id: "errors".into(),
            title: "Error ratio (5xx)".into(),
            unit: "ratio".into(),
            queries: vec![ChartQuery {
                expr: format!("{} / {}", rate(",code_class=\"5xx\""), rate("")),
                legend: "5xx / all".into(),
            }],
        });
        charts.push(Chart {
            id: "latency".into(),
            title: "Latency".into(),
            unit: "seconds".into(),
            queries: [("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99")]
                .iter()
                .map(|(legend, q)| ChartQuery {
                    expr: format!(
                        "histogram_quantile({q}, sum by (le) (rate(http_request_duration_seconds_bucket{{{route}}}[{window}])))"
                    ),
                    legend: (*legend).into(),
                })
                .collect(),
        });
    }
    charts.push(Chart {
        id: "cpu".into(),
        title: "CPU".into(),
        unit: "cores".into(),
        queries: vec![ChartQuery {
            expr: format!(
                "sum by (instance) (rate(kiln_instance_cpu_seconds_total{{service={service}}}[{window}]))"
            ),
            legend: "{instance}".into(),
        }],
    });
    charts.push(Chart {
        id: "memory".into(),
        title: "Memory (RSS)".into(),
        unit: "bytes".into(),
        queries: vec![ChartQuery {
            expr: format!(
                "sum by (instance) (kiln_instance_memory_rss_bytes{{service={service}}})"
            ),
            legend: "{instance}".into(),
        }],
    });
    charts.push(Chart {
        id: "restarts".into(),
        title: "Restarts".into(),
        unit: "count".into(),
        queries: vec![ChartQuery {
            expr: format!(
                "sum(increase(kiln_instance_restarts_total{{service={service}}}[{window}]))"
            ),
            legend: format!("restarts per {window}"),
        }],
    });
    charts
}

/// Per-route request rate over the last minute.
pub const ROUTE_RATE: &str = "sum by (route) (rate(http_requests_total[1m]))";

/// Per-route 5xx rate over the last minute.
pub const ROUTE_ERRORS: &str = "sum by (route) (rate(http_requests_total{code_class=\"5xx\"}[1m]))";

#[cfg(test)]
mod tests {
    use super::*;

    fn route(address: &str) -> RouteView {
        RouteView {
            address: address.into(),
            host: "shop.localhost".into(),
            path: "/".into(),
        }
    }

    #[test]
    fn a_routed_service_gets_request_charts_over_its_routes() {
        let g = grid(10_000_000, 3_600_000);
        assert_eq!(g.step, 15_000);
        let charts = service_charts("api", &[route("routes.a-b"), route("routes.c")], &g);
        let ids: Vec<&str> = charts.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            ["requests", "errors", "latency", "cpu", "memory", "restarts"]
        );
        assert_eq!(
            charts[0].queries[0].expr,
            r#"sum by (code_class) (rate(http_requests_total{route=~"routes\\.a-b|routes\\.c"}[60s]))"#
        );
        assert_eq!(charts[2].queries.len(), 3);
        assert!(
            charts[2].queries[2]
                .expr
                .starts_with("histogram_quantile(0.99, ")
        );
        assert_eq!(
            charts[4].queries[0].expr,
            r#"sum by (instance) (kiln_instance_memory_rss_bytes{service="api"})"#
        );
    }

    #[test]
    fn a_service_without_routes_has_process_charts_only() {
        let charts = service_charts("worker", &[], &grid(0, 86_400_000));
        let ids: Vec<&str> = charts.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["cpu", "memory", "restarts"]);
        // 24 h: a 6 minute step, so rates look back four steps.
        assert!(charts[0].queries[0].expr.contains("[1440s]"), "{charts:?}");
    }

    #[test]
    fn label_values_are_quoted_and_regex_escaped() {
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(any_of(&["a.b", "c|d", "(e)"]), r"a\.b|c\|d|\(e\)");
        assert_eq!(grid(0, 60_000).step, 2_000);
    }
}
