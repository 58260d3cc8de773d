//! The control plane's metrics: every few seconds the collector records the ingress's per-route
//! request metrics and every instance's CPU, memory, restarts and readiness into the embedded
//! time-series store (`.kiln/metrics/`), and the API answers PromQL over it with Prometheus's
//! HTTP API shapes (`/api/v1/query`, `query_range`, `labels`, `label/NAME/values`, `series`).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use std::sync::atomic::Ordering;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use kiln_metrics::exposition::{Format, parse_exposition};
use kiln_metrics::query::{Engine, Limits, QueryError, Value, parse_selector};
use kiln_metrics::{Labels, Options, SelectLimits, Store};
use kiln_supervisor::{InstanceState, InstanceStatus, SupervisorHandle};

use crate::ops::Failure;
use crate::scrape::{Scrapes, service_of};

pub mod own;

/// Opens (or creates) the stack's metrics store.
pub fn open(kiln_dir: &Path) -> Result<Arc<Store>, Failure> {
    Store::open(kiln_dir.join("metrics"), Options::default())
        .map(Arc::new)
        .map_err(|e| Failure::State(format!("cannot open the metrics store: {e}")))
}

/// Records samples every `interval` until the process ends.
pub async fn collect(
    store: Arc<Store>,
    traffic: crate::ingress::Routes,
    supervisor: SupervisorHandle,
    scrapes: Arc<Scrapes>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut text = kiln_ingress::render_prometheus(&traffic.traffic());
        text.push_str(&instances_exposition(&supervisor.status().await));
        record(&store, &scrapes, &text, now_ms());
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Appends an exposition's samples at `t`.
fn record(store: &Store, scrapes: &Scrapes, text: &str, t: i64) {
    let Ok(parsed) = parse_exposition(text, Format::Prometheus) else {
        return;
    };
    scrapes.note_families(&parsed.families);
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
                    service_of(&i.id.service),
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

/// Prometheus's error types and the status each is sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorType {
    BadData,
    Execution,
    Timeout,
    Internal,
    Unavailable,
}

fn error(kind: ErrorType, message: impl std::fmt::Display) -> Response {
    use axum::http::StatusCode;
    let (name, status) = match kind {
        ErrorType::BadData => ("bad_data", StatusCode::BAD_REQUEST),
        ErrorType::Execution => ("execution", StatusCode::UNPROCESSABLE_ENTITY),
        ErrorType::Timeout => ("timeout", StatusCode::SERVICE_UNAVAILABLE),
        ErrorType::Internal => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
        ErrorType::Unavailable => ("unavailable", StatusCode::SERVICE_UNAVAILABLE),
    };
    (
        status,
        axum::Json(serde_json::json!({ "status": "error", "errorType": name, "error": message.to_string() })),
    )
        .into_response()
}

fn success(data: serde_json::Value) -> Response {
    axum::Json(serde_json::json!({ "status": "success", "data": data })).into_response()
}

fn query_error(e: &QueryError) -> Response {
    let kind = match e {
        QueryError::Parse(_) | QueryError::Unsupported(_) => ErrorType::BadData,
        QueryError::Limit(_) | QueryError::Eval(_) => ErrorType::Execution,
        QueryError::Store(_) => ErrorType::Internal,
    };
    error(kind, e)
}

/// A Prometheus API time: unix seconds (fractional) or RFC 3339.
fn parse_time(text: &str) -> Option<i64> {
    if let Ok(seconds) = text.parse::<f64>() {
        return seconds
            .is_finite()
            .then(|| (seconds * 1000.0).round() as i64);
    }
    text.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

/// A Prometheus API duration: seconds or a PromQL duration (`15s`, `1m`).
fn parse_step(text: &str) -> Option<i64> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite())
        .map(|s| (s * 1000.0) as i64)
        .or_else(|| {
            kiln_spec::units::parse_duration(text)
                .ok()
                .and_then(|ms| i64::try_from(ms).ok())
        })
}

/// How long one query may run before the API answers `timeout` (Prometheus's default is 2m;
/// the engine's limits bound the work first).
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// What the Prometheus API serves from.
#[derive(Debug, Clone)]
pub struct Api {
    /// The store (none when it could not be opened).
    pub store: Option<Arc<Store>>,
    /// Scrape targets, their health and metric metadata.
    pub scrapes: Arc<Scrapes>,
    /// The control plane's own counters.
    pub own: Arc<own::Own>,
    /// For kiln's own `/metrics`.
    pub supervisor: Option<SupervisorHandle>,
    /// For kiln's own `/metrics`.
    pub ingress: Option<kiln_ingress::IngressHandle>,
    /// Engine limits.
    pub limits: Limits,
}

impl Api {
    fn store(&self) -> Result<Arc<Store>, Box<Response>> {
        self.store.clone().ok_or_else(|| {
            Box::new(error(
                ErrorType::Unavailable,
                "this control plane records no metrics",
            ))
        })
    }
}

/// Every Prometheus endpoint kiln serves, over the store: mounted on the Unix socket and,
/// with `kiln up --api-listen`, on TCP behind a bearer token.
pub fn prometheus_router(api: Api) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/targets", get(targets))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .route("/metrics", get(own_metrics))
        .with_state(api)
}

/// Request parameters from the URL and, for POST, a form body (Grafana POSTs by default).
#[derive(Debug, Default)]
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A time parameter: absent gives `default`; present but invalid is an error.
    fn time(&self, name: &str, default: i64) -> Result<i64, Box<Response>> {
        match self.get(name) {
            None => Ok(default),
            Some(t) => parse_time(t).ok_or_else(|| {
                Box::new(error(
                    ErrorType::BadData,
                    format!(
                        "invalid parameter \"{name}\": cannot parse {t:?} to a valid timestamp"
                    ),
                ))
            }),
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for Params {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        let bad = |e: &dyn std::fmt::Display| error(ErrorType::BadData, e);
        let Query(mut pairs) =
            Query::<Vec<(String, String)>>::try_from_uri(req.uri()).map_err(|e| bad(&e))?;
        if req.method() == axum::http::Method::POST {
            let axum::Form(form) = axum::Form::<Vec<(String, String)>>::from_request(req, state)
                .await
                .map_err(|e| bad(&e))?;
            pairs.extend(form);
        }
        Ok(Params(pairs))
    }
}

/// Why an evaluation gave no value.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The engine refused or failed the query.
    #[error(transparent)]
    Query(QueryError),
    /// It ran longer than [`QUERY_TIMEOUT`].
    #[error("query timed out after {} s", QUERY_TIMEOUT.as_secs())]
    Timeout,
    /// The evaluating task died.
    #[error("the query task failed: {0}")]
    Task(String),
}

/// Runs a query off the async threads, bounded by [`QUERY_TIMEOUT`]: for this API and the
/// dashboard's.
pub async fn evaluate(
    work: impl FnOnce() -> Result<Value, QueryError> + Send + 'static,
) -> Result<Value, EvalError> {
    let task = tokio::task::spawn_blocking(work);
    match tokio::time::timeout(QUERY_TIMEOUT, task).await {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(e))) => Err(EvalError::Query(e)),
        Ok(Err(e)) => Err(EvalError::Task(e.to_string())),
        Err(_) => Err(EvalError::Timeout),
    }
}

async fn run_query(work: impl FnOnce() -> Result<Value, QueryError> + Send + 'static) -> Response {
    match evaluate(work).await {
        Ok(value) => axum::Json(result_json(&value)).into_response(),
        Err(EvalError::Query(e)) => query_error(&e),
        Err(e @ EvalError::Task(_)) => error(ErrorType::Internal, e),
        Err(e @ EvalError::Timeout) => error(ErrorType::Timeout, e),
    }
}

/// `/api/v1/query?query=EXPR[&time=T]`.
async fn query(State(api): State<Api>, params: Params) -> Response {
    let store = match api.store() {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Some(expr) = params.get("query").map(str::to_owned) else {
        return error(ErrorType::BadData, "invalid parameter \"query\": missing");
    };
    let t = match params.time("time", now_ms()) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let limits = api.limits.clone();
    run_query(move || Engine::with_limits(store.as_ref(), limits).query(&expr, t)).await
}

/// `/api/v1/query_range?query=EXPR&start=T&end=T&step=S`.
async fn query_range(State(api): State<Api>, params: Params) -> Response {
    let store = match api.store() {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (Some(expr), Some(start), Some(end), Some(step)) = (
        params.get("query").map(str::to_owned),
        params.get("start").and_then(parse_time),
        params.get("end").and_then(parse_time),
        params.get("step").and_then(parse_step).filter(|s| *s > 0),
    ) else {
        return error(
            ErrorType::BadData,
            "query_range needs `query`, `start`, `end` and a positive `step`",
        );
    };
    if end < start {
        return error(
            ErrorType::BadData,
            "invalid parameter \"end\": end timestamp must not be before start time",
        );
    }
    let limits = api.limits.clone();
    run_query(move || {
        Engine::with_limits(store.as_ref(), limits).query_range(&expr, start, end, step)
    })
    .await
}

/// Label sets of the series matching any `match[]` with samples in `[start, end]`.
fn matching_series(
    api: &Api,
    store: &Store,
    params: &Params,
) -> Result<Vec<Labels>, Box<Response>> {
    let start = params.time("start", i64::MIN)?;
    let end = params.time("end", i64::MAX)?;
    let mut out = std::collections::BTreeSet::new();
    for selector in params.all("match[]") {
        let matchers = parse_selector(selector).map_err(|e| Box::new(query_error(&e)))?;
        let limits = SelectLimits {
            max_series: api.limits.max_series,
            max_samples: api.limits.max_samples,
        };
        let series = store
            .select_limited(&matchers, start, end, limits)
            .map_err(|e| Box::new(query_error(&QueryError::from(e))))?;
        out.extend(series.into_iter().map(|s| s.labels));
        if out.len() > api.limits.max_series {
            return Err(Box::new(error(
                ErrorType::Execution,
                format!("more than {} series", api.limits.max_series),
            )));
        }
    }
    Ok(out.into_iter().collect())
}

/// `/api/v1/series?match[]=SELECTOR[&start=T&end=T]`.
async fn series(State(api): State<Api>, params: Params) -> Response {
    let store = match api.store() {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if params.all("match[]").is_empty() {
        return error(ErrorType::BadData, "no match[] parameter provided");
    }
    let found = tokio::task::spawn_blocking(move || matching_series(&api, &store, &params)).await;
    match found {
        Ok(Ok(series)) => success(serde_json::Value::Array(
            series.iter().map(labels_json).collect(),
        )),
        Ok(Err(r)) => *r,
        Err(e) => error(ErrorType::Internal, e),
    }
}

/// `/api/v1/labels[?match[]=...]`.
async fn labels(State(api): State<Api>, params: Params) -> Response {
    let store = match api.store() {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if params.all("match[]").is_empty() {
        return success(serde_json::json!(store.label_names()));
    }
    let found = tokio::task::spawn_blocking(move || matching_series(&api, &store, &params)).await;
    match found {
        Ok(Ok(series)) => {
            let names: std::collections::BTreeSet<&str> = series
                .iter()
                .flat_map(|l| l.iter().map(|l| l.name.as_str()))
                .collect();
            success(serde_json::json!(names))
        }
        Ok(Err(r)) => *r,
        Err(e) => error(ErrorType::Internal, e),
    }
}

/// `/api/v1/label/{name}/values[?match[]=...]`.
async fn label_values(
    State(api): State<Api>,
    axum::extract::Path(name): axum::extract::Path<String>,
    params: Params,
) -> Response {
    let store = match api.store() {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if params.all("match[]").is_empty() {
        return success(serde_json::json!(store.label_values(&name)));
    }
    let found = tokio::task::spawn_blocking(move || matching_series(&api, &store, &params)).await;
    match found {
        Ok(Ok(series)) => {
            let values: std::collections::BTreeSet<&str> =
                series.iter().filter_map(|l| l.get(&name)).collect();
            success(serde_json::json!(values))
        }
        Ok(Err(r)) => *r,
        Err(e) => error(ErrorType::Internal, e),
    }
}

/// `/api/v1/metadata[?metric=NAME&limit=N]`: types, help and units seen in expositions.
async fn metadata(State(api): State<Api>, params: Params) -> Response {
    let limit = match params.get("limit").map(str::parse::<i64>) {
        None => None,
        Some(Ok(n)) if n > 0 => usize::try_from(n).ok(),
        Some(Ok(_)) => None,
        Some(Err(_)) => {
            return error(
                ErrorType::BadData,
                "invalid parameter \"limit\": not a number",
            );
        }
    };
    let metric = params.get("metric");
    let Ok(all) = api.scrapes.metadata.lock() else {
        return error(ErrorType::Internal, "metadata lock poisoned");
    };
    let data: serde_json::Map<String, serde_json::Value> = all
        .iter()
        .filter(|(name, _)| metric.is_none_or(|m| m == name.as_str()))
        .take(limit.unwrap_or(usize::MAX))
        .map(|(name, m)| {
            (
                name.clone(),
                serde_json::json!([{ "type": m.kind, "help": m.help, "unit": m.unit }]),
            )
        })
        .collect();
    success(serde_json::Value::Object(data))
}

/// `/api/v1/targets`: the scraped instances and how their last scrape went.
async fn targets(State(api): State<Api>) -> Response {
    let active: Vec<serde_json::Value> = api
        .scrapes
        .health()
        .iter()
        .map(|h| {
            let labels: serde_json::Map<String, serde_json::Value> = h
                .target
                .labels()
                .into_iter()
                .map(|(n, v)| (n.to_owned(), serde_json::json!(v)))
                .collect();
            let last = jiff::Timestamp::from_millisecond(h.last_scrape_ms)
                .map(|t| t.to_string())
                .unwrap_or_default();
            serde_json::json!({
                "discoveredLabels": {},
                "labels": labels,
                "scrapePool": h.target.service,
                "scrapeUrl": h.target.url(),
                "globalUrl": h.target.url(),
                "lastError": h.last_error.clone().unwrap_or_default(),
                "lastScrape": last,
                "lastScrapeDuration": h.last_duration.as_secs_f64(),
                "health": if h.last_error.is_some() { "down" } else { "up" },
                "scrapeInterval": format!("{}s", h.target.config.interval.as_secs_f64()),
                "scrapeTimeout": format!("{}s", h.target.config.timeout.as_secs_f64()),
            })
        })
        .collect();
    success(serde_json::json!({ "activeTargets": active, "droppedTargets": [] }))
}

/// `/api/v1/status/buildinfo`.
async fn buildinfo() -> Response {
    success(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": "",
        "branch": "",
        "buildUser": "kiln",
        "buildDate": "",
        "goVersion": "none (kiln is written in Rust)",
    }))
}

/// `/metrics`: the control plane's own metrics.
async fn own_metrics(State(api): State<Api>) -> Response {
    let instances = match &api.supervisor {
        Some(s) => s.status().await,
        None => Vec::new(),
    };
    let stats = &api.scrapes.stats;
    let snapshot = own::Snapshot {
        instances,
        ingress: api
            .ingress
            .as_ref()
            .map(kiln_ingress::IngressHandle::metrics),
        store: api.store.as_ref().map(|s| s.stats()),
        scrapes: (
            api.scrapes.health.lock().map_or(0, |h| h.len()),
            stats.scrapes.load(Ordering::Relaxed),
            stats.failures.load(Ordering::Relaxed),
            stats.samples.load(Ordering::Relaxed),
        ),
        rss_bytes: own::own_rss_bytes(),
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        own::render(&api.own, &snapshot),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_series_parse_back_and_answer_queries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let text = "# TYPE kiln_instance_restarts_total counter\nkiln_instance_restarts_total{service=\"api\",instance=\"0\"} 2\nkiln_instance_restarts_total{service=\"api\",instance=\"1\"} 3\n";
        record(&store, &Scrapes::default(), text, 1_000_000);
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

    #[test]
    fn errors_use_prometheus_types_and_statuses() {
        let status = |e: QueryError| query_error(&e).status().as_u16();
        assert_eq!(status(QueryError::Parse("x".into())), 400);
        assert_eq!(status(QueryError::Unsupported("x".into())), 400);
        assert_eq!(status(QueryError::Limit("more than 2 series".into())), 422);
        let too_many = kiln_metrics::StoreError::TooMany {
            what: "series",
            limit: 2,
        };
        assert!(matches!(QueryError::from(too_many), QueryError::Limit(_)));
    }

    #[tokio::test]
    async fn a_query_over_the_series_limit_is_an_execution_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), Options::default()).unwrap());
        let t = now_ms();
        for i in 0..5 {
            store
                .append(
                    &Labels::new([("__name__", "m"), ("i", &i.to_string())]),
                    t,
                    1.0,
                )
                .unwrap();
        }
        let api = Api {
            store: Some(store),
            scrapes: Arc::default(),
            own: Arc::default(),
            supervisor: None,
            ingress: None,
            limits: Limits {
                max_series: 3,
                ..Limits::default()
            },
        };
        let params = Params(vec![("query".into(), "sum(m)".into())]);
        let response = query(State(api), params).await;
        assert_eq!(response.status().as_u16(), 422);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["errorType"], "execution");
        assert_eq!(json["error"], "query limit exceeded: more than 3 series");
    }
}
