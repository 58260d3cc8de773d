//! The control plane's metrics: every few seconds the collector records the ingress's per-route
//! request metrics and every instance's CPU, memory, restarts and readiness into the embedded
//! time-series store (`.kiln/metrics/`), and the API answers PromQL over it with Prometheus's
//! HTTP API shapes (`/api/v1/query`, `query_range`, `labels`, `label/NAME/values`, `series`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use kiln_metrics::exposition::{Format, parse_exposition};
use kiln_metrics::query::{Engine, Value};
use kiln_metrics::{Labels, Options, Store};
use kiln_supervisor::{InstanceState, InstanceStatus, SupervisorHandle};

use crate::ops::Failure;

/// Opens (or creates) the stack's metrics store.
pub fn open(kiln_dir: &Path) -> Result<Arc<Store>, Failure> {
    Store::open(kiln_dir.join("metrics"), Options::default())
        .map(Arc::new)
        .map_err(|e| Failure::State(format!("cannot open the metrics store: {e}")))
}

/// Records samples every `interval` until the process ends.
pub async fn collect(
    store: Arc<Store>,
    ingress: Option<kiln_ingress::IngressHandle>,
    supervisor: SupervisorHandle,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut text = ingress
            .as_ref()
            .map(|i| kiln_ingress::render_prometheus(&i.metrics()))
            .unwrap_or_default();
        text.push_str(&instances_exposition(&supervisor.status().await));
        record(&store, &text, now_ms());
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Appends an exposition's samples at `t`.
fn record(store: &Store, text: &str, t: i64) {
    let Ok(parsed) = parse_exposition(text, Format::Prometheus) else {
        return;
    };
    for sample in parsed.samples {
        let _ = store.append(
            &sample.labels,
            sample.timestamp_ms.unwrap_or(t),
            sample.value,
        );
    }
}

/// A series written per instance: name, type, and how to read its value.
type Gauge = (
    &'static str,
    &'static str,
    fn(&InstanceStatus) -> Option<f64>,
);

/// Per-instance series in Prometheus text format.
fn instances_exposition(instances: &[InstanceStatus]) -> String {
    let mut out = String::new();
    let series: [Gauge; 5] = [
        ("kiln_instance_cpu_seconds_total", "counter", |i| {
            i.cpu_seconds
        }),
        ("kiln_instance_memory_rss_bytes", "gauge", |i| {
            i.rss_bytes.map(|b| b as f64)
        }),
        ("kiln_instance_restarts_total", "counter", |i| {
            Some(f64::from(i.restarts))
        }),
        ("kiln_instance_ready", "gauge", |i| {
            Some(if i.state == InstanceState::Ready {
                1.0
            } else {
                0.0
            })
        }),
        ("kiln_instance_uptime_seconds", "gauge", |i| {
            i.uptime.map(|u| u.as_secs_f64())
        }),
    ];
    for (name, kind, value) in series {
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for i in instances {
            if let Some(v) = value(i) {
                // A deploy runs versions side by side (`api@3f2a1c9e/0` next to
                // `api@9c1d0b2e/0`): the set joins the instance label so series stay distinct.
                let set = i.id.service.split_once('@').map_or("", |(_, set)| set);
                let instance = if set.is_empty() {
                    i.id.instance.to_string()
                } else {
                    format!("{set}/{}", i.id.instance)
                };
                let _ = writeln!(
                    out,
                    "{name}{{service=\"{}\",instance=\"{instance}\",release=\"{}\"}} {v}",
                    kiln_supervisor::service_of(&i.id.service),
                    i.release
                );
            }
        }
    }
    out
}

fn labels_json(labels: &Labels) -> serde_json::Value {
    serde_json::Value::Object(
        labels
            .iter()
            .map(|l| (l.name.clone(), serde_json::Value::String(l.value.clone())))
            .collect(),
    )
}

fn sample_json(t: i64, v: f64) -> serde_json::Value {
    serde_json::json!([t as f64 / 1000.0, format_value(v)])
}

/// Prometheus writes values as strings, with its spellings of the special values.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        v.to_string()
    }
}

fn result_json(value: &Value) -> serde_json::Value {
    let result = match value {
        Value::Scalar { t, v } => sample_json(*t, *v),
        Value::String { t, v } => serde_json::json!([*t as f64 / 1000.0, v]),
        Value::Vector(samples) => serde_json::Value::Array(samples.iter().map(|s| serde_json::json!({ "metric": labels_json(&s.labels), "value": sample_json(s.t, s.v) })).collect()),
        Value::Matrix(series) => serde_json::Value::Array(
            series
                .iter()
                .map(|s| serde_json::json!({ "metric": labels_json(&s.labels), "values": s.samples.iter().map(|p| sample_json(p.t, p.v)).collect::<Vec<_>>() }))
                .collect(),
        ),
    };
    serde_json::json!({ "status": "success", "data": { "resultType": value.result_type(), "result": result } })
}

fn error(kind: &str, message: impl std::fmt::Display) -> Response {
    (axum::http::StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({ "status": "error", "errorType": kind, "error": message.to_string() }))).into_response()
}

/// A Prometheus API time: unix seconds (fractional) or RFC 3339.
fn parse_time(text: &str) -> Option<i64> {
    if let Ok(seconds) = text.parse::<f64>() {
        return Some((seconds * 1000.0).round() as i64);
    }
    text.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

/// A Prometheus API duration: seconds or a PromQL duration (`15s`, `1m`).
fn parse_step(text: &str) -> Option<i64> {
    text.parse::<f64>()
        .ok()
        .map(|s| (s * 1000.0) as i64)
        .or_else(|| {
            kiln_spec::units::parse_duration(text)
                .ok()
                .and_then(|ms| i64::try_from(ms).ok())
        })
}

/// The store, for the API handlers.
pub type Shared = Option<Arc<Store>>;

fn store(shared: &Shared) -> Result<&Arc<Store>, Box<Response>> {
    shared.as_ref().ok_or_else(|| {
        Box::new(error(
            "unavailable",
            "this control plane records no metrics",
        ))
    })
}

/// `GET /api/v1/query?query=EXPR[&time=T]`.
pub async fn query(
    State(shared): State<Shared>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let store = match store(&shared) {
        Ok(s) => s.clone(),
        Err(r) => return *r,
    };
    let Some(expr) = params.get("query").cloned() else {
        return error("bad_data", "missing `query`");
    };
    let Some(t) = params.get("time").map_or(Some(now_ms()), |t| parse_time(t)) else {
        return error("bad_data", "invalid `time`");
    };
    let answer = tokio::task::spawn_blocking(move || {
        Engine::new(store.as_ref())
            .query(&expr, t)
            .map(|v| result_json(&v))
    })
    .await;
    match answer {
        Ok(Ok(json)) => axum::Json(json).into_response(),
        Ok(Err(e)) => error("bad_data", e),
        Err(e) => error("internal", e),
    }
}

/// `GET /api/v1/query_range?query=EXPR&start=T&end=T&step=S`.
pub async fn query_range(
    State(shared): State<Shared>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let store = match store(&shared) {
        Ok(s) => s.clone(),
        Err(r) => return *r,
    };
    let (Some(expr), Some(start), Some(end), Some(step)) = (
        params.get("query").cloned(),
        params.get("start").and_then(|t| parse_time(t)),
        params.get("end").and_then(|t| parse_time(t)),
        params
            .get("step")
            .and_then(|s| parse_step(s))
            .filter(|s| *s > 0),
    ) else {
        return error(
            "bad_data",
            "query_range needs `query`, `start`, `end` and a positive `step`",
        );
    };
    let answer = tokio::task::spawn_blocking(move || {
        Engine::new(store.as_ref())
            .query_range(&expr, start, end, step)
            .map(|v| result_json(&v))
    })
    .await;
    match answer {
        Ok(Ok(json)) => axum::Json(json).into_response(),
        Ok(Err(e)) => error("bad_data", e),
        Err(e) => error("internal", e),
    }
}

/// `GET /api/v1/labels`.
pub async fn labels(State(shared): State<Shared>) -> Response {
    match store(&shared) {
        Ok(s) => axum::Json(serde_json::json!({ "status": "success", "data": s.label_names() }))
            .into_response(),
        Err(r) => *r,
    }
}

/// `GET /api/v1/label/{name}/values`.
pub async fn label_values(
    State(shared): State<Shared>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    match store(&shared) {
        Ok(s) => {
            axum::Json(serde_json::json!({ "status": "success", "data": s.label_values(&name) }))
                .into_response()
        }
        Err(r) => *r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_series_parse_back_and_answer_queries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let text = "# TYPE kiln_instance_restarts_total counter\nkiln_instance_restarts_total{service=\"api\",instance=\"0\"} 2\nkiln_instance_restarts_total{service=\"api\",instance=\"1\"} 3\n";
        record(&store, text, 1_000_000);
        let value = Engine::new(&store)
            .query("sum by (service) (kiln_instance_restarts_total)", 1_000_000)
            .unwrap();
        let json = result_json(&value);
        assert_eq!(json["data"]["resultType"], "vector");
        assert_eq!(json["data"]["result"][0]["metric"]["service"], "api");
        assert_eq!(json["data"]["result"][0]["value"][1], "5");
        assert_eq!(parse_time("1700000000.5"), Some(1_700_000_000_500));
        assert_eq!(parse_step("15s"), Some(15_000));
    }
}
