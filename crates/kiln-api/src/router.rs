//! The dashboard's HTTP surface: the page and its assets at `/`, and a read-only JSON API
//! under `/api/` over a [`DashboardData`] source. Nothing here changes anything: every route
//! is a GET.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::charts::{self, Chart, Grid};
use crate::uptime::{self, Uptime};
use crate::view::{
    AlertView, Annotation, DoraView, EventFilter, EventView, IncidentDetail, IncidentSummary,
    InstanceView, RouteView, RunDetail, RunSummary, RunbookDoc, RunbookRunView, Series, Snapshot,
    TimeRange,
};

/// How many resolved incidents the incidents page lists.
const RECENT_INCIDENTS: usize = 50;
/// How many open incidents it lists at most.
const OPEN_INCIDENTS: usize = 1000;
/// How many runs of a runbook are shown beside an alert.
const RUNBOOK_RUNS: usize = 5;

/// Why a source could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// The request itself is wrong (a query that does not parse, a bad time).
    #[error("{0}")]
    BadRequest(String),
    /// The source cannot answer now (no metrics store, shutting down).
    #[error("{0}")]
    Unavailable(String),
    /// Reading failed.
    #[error("{0}")]
    Internal(String),
}

/// Where the dashboard reads from. The `kiln` binary implements it over the supervisor, the
/// state store, the CI logs and the metrics store.
pub trait DashboardData: Send + Sync + 'static {
    /// The stack and its services now.
    fn snapshot(&self) -> impl Future<Output = Result<Snapshot, DataError>> + Send;
    /// Evaluates PromQL at `time_ms`; an instant vector (a scalar becomes one series).
    fn query(
        &self,
        expr: &str,
        time_ms: i64,
    ) -> impl Future<Output = Result<Vec<Series>, DataError>> + Send;
    /// Evaluates PromQL over a range at every `step_ms`.
    fn query_range(
        &self,
        expr: &str,
        range: TimeRange,
        step_ms: i64,
    ) -> impl Future<Output = Result<Vec<Series>, DataError>> + Send;
    /// Recorded events, newest first.
    fn events(
        &self,
        filter: EventFilter,
    ) -> impl Future<Output = Result<Vec<EventView>, DataError>> + Send;
    /// Recorded pipeline runs, newest first.
    fn runs(&self, limit: usize)
    -> impl Future<Output = Result<Vec<RunSummary>, DataError>> + Send;
    /// One run with its jobs; none when there is no such run.
    fn run(&self, id: u64) -> impl Future<Output = Result<Option<RunDetail>, DataError>> + Send;
    /// One job's log (secrets already masked); none when there is no such log.
    fn run_log(
        &self,
        id: u64,
        job: &str,
    ) -> impl Future<Output = Result<Option<String>, DataError>> + Send;
    /// Deploys and runs that overlap `range`.
    fn annotations(
        &self,
        range: TimeRange,
    ) -> impl Future<Output = Result<Vec<Annotation>, DataError>> + Send;
    /// Incidents, newest first, at most `limit`; with `open_only`, those not resolved.
    fn incidents(
        &self,
        open_only: bool,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<IncidentSummary>, DataError>> + Send;
    /// One incident with its milestones and timeline; none when there is no such incident.
    fn incident(
        &self,
        id: i64,
    ) -> impl Future<Output = Result<Option<IncidentDetail>, DataError>> + Send;
    /// Every alert the evaluator holds now ([`DataError::Unavailable`] without an evaluator).
    fn alerts(&self) -> impl Future<Output = Result<Vec<AlertView>, DataError>> + Send;
    /// A declared runbook's documentation and its latest `runs`; none when no runbook has
    /// this name.
    fn runbook(
        &self,
        name: &str,
        runs: usize,
    ) -> impl Future<Output = Result<Option<RunbookDoc>, DataError>> + Send;
    /// The DORA metrics over the window `since` (a duration as `kiln dora --since` takes it:
    /// `30d`, `2w`) back from now, for one service or (none) every service, with their trend.
    /// A `since` that is no duration is a [`DataError::BadRequest`] saying why.
    fn dora(
        &self,
        since: &str,
        service: Option<&str>,
    ) -> impl Future<Output = Result<DoraView, DataError>> + Send;
    /// The time now (ms); a parameter so tests can fix it.
    fn now_ms(&self) -> i64;
}

/// The dashboard: the page, its assets and the JSON API over `data`.
pub fn router<D: DashboardData>(data: Arc<D>) -> axum::Router {
    axum::Router::new()
        .route("/", get(crate::assets::index))
        .route("/assets/{name}", get(crate::assets::asset))
        .route("/api/overview", get(overview::<D>))
        .route("/api/services/{name}", get(service::<D>))
        .route("/api/query", get(query::<D>))
        .route("/api/query_range", get(query_range::<D>))
        .route("/api/events", get(events::<D>))
        .route("/api/runs", get(runs::<D>))
        .route("/api/runs/{id}", get(run::<D>))
        .route("/api/runs/{id}/logs/{job}", get(run_log::<D>))
        .route("/api/annotations", get(annotations::<D>))
        .route("/api/incidents", get(incidents::<D>))
        .route("/api/incidents/{id}", get(incident::<D>))
        .route("/api/alerts", get(alerts::<D>))
        .route("/api/dora", get(dora::<D>))
        .fallback(not_found)
        .with_state(data)
}

/// A JSON error body with the status that fits it.
fn failure(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": message.to_string() })),
    )
        .into_response()
}

impl IntoResponse for DataError {
    fn into_response(self) -> Response {
        let status = match &self {
            DataError::BadRequest(_) => StatusCode::BAD_REQUEST,
            DataError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            DataError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        failure(status, self)
    }
}

async fn not_found(uri: axum::http::Uri) -> Response {
    failure(StatusCode::NOT_FOUND, format!("no page at {}", uri.path()))
}

/// One service on the overview.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSummary {
    /// Its name.
    pub name: String,
    /// Instances ready now.
    pub ready: usize,
    /// Its instances.
    pub instances: Vec<InstanceView>,
    /// The releases its instances run (more than one during a deploy).
    pub releases: Vec<String>,
    /// Restarts of its instances.
    pub restarts: u64,
    /// Uptime over 24 h and 30 d.
    pub uptime: Vec<Uptime>,
    /// Its routes with their traffic.
    pub routes: Vec<RouteStats>,
}

/// A route with its traffic over the last minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteStats {
    /// The route.
    #[serde(flatten)]
    pub route: RouteView,
    /// Requests per second; none before any sample.
    pub rate: Option<f64>,
    /// 5xx share of them; none without traffic.
    pub error_ratio: Option<f64>,
}

/// `/api/overview`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    /// The stack.
    pub stack: String,
    /// When this was computed (ms).
    pub now_ms: i64,
    /// Every service.
    pub services: Vec<ServiceSummary>,
    /// Why some figures are missing (no metrics store), if they are.
    pub warning: Option<String>,
}

/// Values of one label across a query's series.
fn by_label(series: &[Series], label: &str) -> BTreeMap<String, f64> {
    series
        .iter()
        .filter_map(|s| Some((s.labels.get(label)?.clone(), s.points.last()?.1)))
        .collect()
}

async fn overview<D: DashboardData>(State(data): State<Arc<D>>) -> Response {
    let snapshot = match data.snapshot().await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let now = data.now_ms();
    let mut warning = None;
    let mut note = |e: DataError| {
        warning.get_or_insert(e.to_string());
        Vec::new()
    };
    let mut readiness = Vec::new();
    for window in &uptime::WINDOWS {
        let range = TimeRange {
            start: now - window.length_ms,
            end: now,
        };
        let series = data
            .query_range(uptime::READY_BY_SERVICE, range, window.step_ms)
            .await
            .unwrap_or_else(&mut note);
        readiness.push((window, series));
    }
    let rates = by_label(
        &data
            .query(charts::ROUTE_RATE, now)
            .await
            .unwrap_or_else(&mut note),
        "route",
    );
    let errors = by_label(
        &data
            .query(charts::ROUTE_ERRORS, now)
            .await
            .unwrap_or_else(&mut note),
        "route",
    );
    let services = snapshot
        .services
        .into_iter()
        .map(|s| {
            let uptime = readiness
                .iter()
                .map(|(window, series)| {
                    let points = series
                        .iter()
                        .find(|x| x.labels.get("service") == Some(&s.name))
                        .map_or(&[][..], |x| &x.points[..]);
                    uptime::uptime(points, window, now)
                })
                .collect();
            let mut releases: Vec<String> = s.instances.iter().map(|i| i.release.clone()).collect();
            releases.sort();
            releases.dedup();
            releases.retain(|r| !r.is_empty());
            let routes = s
                .routes
                .into_iter()
                .map(|route| {
                    let rate = rates.get(&route.address).copied();
                    let error_ratio = match (rate, errors.get(&route.address)) {
                        (Some(all), Some(bad)) if all > 0.0 => Some(bad / all),
                        (Some(all), None) if all > 0.0 => Some(0.0),
                        _ => None,
                    };
                    RouteStats {
                        route,
                        rate,
                        error_ratio,
                    }
                })
                .collect();
            ServiceSummary {
                ready: s.instances.iter().filter(|i| i.state == "ready").count(),
                restarts: s.instances.iter().map(|i| u64::from(i.restarts)).sum(),
                name: s.name,
                instances: s.instances,
                releases,
                uptime,
                routes,
            }
        })
        .collect();
    Json(Overview {
        stack: snapshot.stack,
        now_ms: now,
        services,
        warning,
    })
    .into_response()
}

#[derive(Debug, Deserialize)]
struct RangeParam {
    /// Seconds back from now (default one hour, at most 30 days).
    range: Option<i64>,
}

/// `/api/services/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServicePage {
    /// The stack.
    pub stack: String,
    /// The service now.
    pub service: crate::view::ServiceState,
    /// Where its charts are evaluated.
    pub grid: Grid,
    /// Its charts.
    pub charts: Vec<Chart>,
}

async fn service<D: DashboardData>(
    State(data): State<Arc<D>>,
    Path(name): Path<String>,
    Query(param): Query<RangeParam>,
) -> Response {
    let snapshot = match data.snapshot().await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let Some(service) = snapshot.services.iter().find(|s| s.name == name).cloned() else {
        return failure(StatusCode::NOT_FOUND, format!("no service named `{name}`"));
    };
    let range_s = param.range.unwrap_or(3600).clamp(60, 30 * 86_400);
    let grid = charts::grid(data.now_ms(), range_s * 1000);
    let charts = charts::service_charts(&service.name, &service.routes, &grid);
    Json(ServicePage {
        stack: snapshot.stack,
        service,
        grid,
        charts,
    })
    .into_response()
}

#[derive(Debug, Deserialize)]
struct QueryParams {
    query: Option<String>,
    time: Option<i64>,
    start: Option<i64>,
    end: Option<i64>,
    step: Option<i64>,
}

/// Query results: `{ "series": [{ "labels": {...}, "points": [[ms, value], ...] }] }`.
#[derive(Debug, Serialize)]
struct QueryAnswer {
    series: Vec<Series>,
}

fn answer(result: Result<Vec<Series>, DataError>) -> Response {
    match result {
        Ok(series) => Json(QueryAnswer { series }).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `/api/query?query=EXPR[&time=MS]`.
async fn query<D: DashboardData>(
    State(data): State<Arc<D>>,
    Query(params): Query<QueryParams>,
) -> Response {
    let Some(expr) = params.query else {
        return failure(StatusCode::BAD_REQUEST, "`query` is missing");
    };
    let time = params.time.unwrap_or_else(|| data.now_ms());
    answer(data.query(&expr, time).await)
}

/// `/api/query_range?query=EXPR&start=MS&end=MS&step=MS`.
async fn query_range<D: DashboardData>(
    State(data): State<Arc<D>>,
    Query(params): Query<QueryParams>,
) -> Response {
    let (Some(expr), Some(start), Some(end), Some(step)) =
        (params.query, params.start, params.end, params.step)
    else {
        return failure(
            StatusCode::BAD_REQUEST,
            "query_range needs `query`, `start`, `end` and `step` (milliseconds)",
        );
    };
    if step <= 0 || end < start {
        return failure(
            StatusCode::BAD_REQUEST,
            "`step` must be positive and `end` not before `start`",
        );
    }
    answer(
        data.query_range(&expr, TimeRange { start, end }, step)
            .await,
    )
}

#[derive(Debug, Deserialize)]
struct EventParams {
    kind: Option<String>,
    limit: Option<usize>,
}

/// `/api/events`: the newest events, and every kind among them for the filter.
#[derive(Debug, Serialize)]
struct EventsAnswer {
    events: Vec<EventView>,
}

async fn events<D: DashboardData>(
    State(data): State<Arc<D>>,
    Query(params): Query<EventParams>,
) -> Response {
    let filter = EventFilter {
        kind: params.kind.filter(|k| !k.is_empty()),
        limit: params.limit.unwrap_or(200).min(1000),
    };
    match data.events(filter).await {
        Ok(events) => Json(EventsAnswer { events }).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn runs<D: DashboardData>(State(data): State<Arc<D>>) -> Response {
    match data.runs(100).await {
        Ok(runs) => Json(runs).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn run<D: DashboardData>(State(data): State<Arc<D>>, Path(id): Path<u64>) -> Response {
    match data.run(id).await {
        Ok(Some(run)) => Json(run).into_response(),
        Ok(None) => failure(StatusCode::NOT_FOUND, format!("no pipeline run {id}")),
        Err(e) => e.into_response(),
    }
}

async fn run_log<D: DashboardData>(
    State(data): State<Arc<D>>,
    Path((id, job)): Path<(u64, String)>,
) -> Response {
    match data.run_log(id, &job).await {
        Ok(Some(text)) => {
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
        }
        Ok(None) => failure(
            StatusCode::NOT_FOUND,
            format!("run {id} has no log for job `{job}`"),
        ),
        Err(e) => e.into_response(),
    }
}

/// The window `/api/dora` measures when the request names none, as `kiln dora`'s default.
const DORA_DEFAULT_SINCE: &str = "30d";

#[derive(Debug, Deserialize)]
struct DoraParams {
    since: Option<String>,
    service: Option<String>,
}

/// `/api/dora?since=30d&service=S`: an empty `service` means every service.
async fn dora<D: DashboardData>(
    State(data): State<Arc<D>>,
    Query(params): Query<DoraParams>,
) -> Response {
    let since = params
        .since
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DORA_DEFAULT_SINCE.to_owned());
    let service = params.service.filter(|s| !s.is_empty());
    match data.dora(&since, service.as_deref()).await {
        Ok(view) => Json(view).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct AnnotationParams {
    start: Option<i64>,
    end: Option<i64>,
    service: Option<String>,
}

/// `/api/annotations?start=MS&end=MS[&service=NAME]`: deploys (of that service) and runs.
async fn annotations<D: DashboardData>(
    State(data): State<Arc<D>>,
    Query(params): Query<AnnotationParams>,
) -> Response {
    let end = params.end.unwrap_or_else(|| data.now_ms());
    let start = params.start.unwrap_or(end - 3_600_000);
    match data.annotations(TimeRange { start, end }).await {
        Ok(mut list) => {
            if let Some(service) = &params.service {
                list.retain(|a| a.service.as_ref().is_none_or(|s| s == service));
            }
            list.sort_by_key(|a| a.time_ms);
            Json(list).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `/api/incidents`: the open ones, then the latest resolved ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentsPage {
    /// Not resolved, newest first.
    pub open: Vec<IncidentSummary>,
    /// Resolved, newest first.
    pub recent: Vec<IncidentSummary>,
}

async fn incidents<D: DashboardData>(State(data): State<Arc<D>>) -> Response {
    let open = match data.incidents(true, OPEN_INCIDENTS).await {
        Ok(list) => list,
        Err(e) => return e.into_response(),
    };
    let recent = match data.incidents(false, RECENT_INCIDENTS).await {
        Ok(list) => list
            .into_iter()
            .filter(|i| !open.iter().any(|o| o.id == i.id))
            .collect(),
        Err(e) => return e.into_response(),
    };
    Json(IncidentsPage { open, recent }).into_response()
}

async fn incident<D: DashboardData>(State(data): State<Arc<D>>, Path(id): Path<i64>) -> Response {
    match data.incident(id).await {
        Ok(Some(detail)) => Json(detail).into_response(),
        Ok(None) => failure(StatusCode::NOT_FOUND, format!("no incident {id}")),
        Err(e) => e.into_response(),
    }
}

/// A runbook beside the alerts that name it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunbookPanel {
    /// Its name.
    pub name: String,
    /// Whether the stack still declares it (an alert may name one removed since).
    pub declared: bool,
    /// Its documentation as HTML (see [`crate::markdown`]); empty without one.
    pub doc_html: String,
    /// Its latest runs, newest first.
    pub runs: Vec<RunbookRunView>,
    /// Why it could not be read (the stack's files do not load), if it could not: the
    /// alerts are shown all the same.
    pub error: Option<String>,
}

/// An alert that is pending or firing, with its runbook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertPanel {
    /// The alert.
    #[serde(flatten)]
    pub alert: AlertView,
    /// The runbook its rule names, if it names one.
    pub runbook_doc: Option<RunbookPanel>,
}

/// `/api/alerts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertsPage {
    /// Firing alerts, then pending ones, each by name.
    pub alerts: Vec<AlertPanel>,
    /// Why there are no alerts to show (no evaluator), if that is why.
    pub warning: Option<String>,
}

/// Firing before pending; the rest is left out.
fn urgency(state: &str) -> Option<u8> {
    match state {
        "firing" => Some(0),
        "pending" => Some(1),
        _ => None,
    }
}

async fn alerts<D: DashboardData>(State(data): State<Arc<D>>) -> Response {
    let all = match data.alerts().await {
        Ok(all) => all,
        Err(DataError::Unavailable(why)) => {
            return Json(AlertsPage {
                alerts: Vec::new(),
                warning: Some(why),
            })
            .into_response();
        }
        Err(e) => return e.into_response(),
    };
    let mut active: Vec<(u8, AlertView)> = all
        .into_iter()
        .filter_map(|a| Some((urgency(&a.state)?, a)))
        .collect();
    active.sort_by(|(x, a), (y, b)| (x, &a.name, a.since_ms).cmp(&(y, &b.name, b.since_ms)));
    // Each runbook is read and rendered once, however many alerts name it.
    let mut panels: BTreeMap<String, RunbookPanel> = BTreeMap::new();
    let mut alerts = Vec::with_capacity(active.len());
    for (_, alert) in active {
        let runbook_doc = match &alert.runbook {
            Some(name) => {
                if !panels.contains_key(name) {
                    let panel = match data.runbook(name, RUNBOOK_RUNS).await {
                        Ok(doc) => runbook_panel(name, doc),
                        Err(e) => RunbookPanel {
                            name: name.clone(),
                            declared: true,
                            doc_html: String::new(),
                            runs: Vec::new(),
                            error: Some(e.to_string()),
                        },
                    };
                    panels.insert(name.clone(), panel);
                }
                panels.get(name).cloned()
            }
            None => None,
        };
        alerts.push(AlertPanel { alert, runbook_doc });
    }
    Json(AlertsPage {
        alerts,
        warning: None,
    })
    .into_response()
}

fn runbook_panel(name: &str, doc: Option<RunbookDoc>) -> RunbookPanel {
    match doc {
        Some(doc) => RunbookPanel {
            name: doc.name,
            declared: true,
            doc_html: crate::markdown::to_html(&doc.description),
            runs: doc.runs,
            error: None,
        },
        None => RunbookPanel {
            name: name.to_owned(),
            declared: false,
            doc_html: String::new(),
            runs: Vec::new(),
            error: None,
        },
    }
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
