//! The router over a fake source: JSON shapes, statuses, content types, and assets that load
//! nothing from outside.

// Tests panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt as _;

use super::*;
use crate::view::{
    AnnotationKind, DoraBucket, DoraMetric, IncidentAlertView, JobView, MilestoneView, RunDetail,
    ServiceState, TimelineView,
};

const NOW: i64 = 1_800_000_000_000;

#[derive(Default)]
struct Fake {
    /// Every query asked, for assertions.
    asked: Mutex<Vec<String>>,
    /// Runbooks asked for, for assertions.
    runbooks_asked: Mutex<Vec<String>>,
    /// No alert evaluator runs.
    no_evaluator: bool,
    /// The DORA windows and services asked for, for assertions.
    dora_asked: Mutex<Vec<(String, Option<String>)>>,
}

fn incident_summary(id: i64, state: &str) -> IncidentSummary {
    IncidentSummary {
        id,
        service: "api".into(),
        title: "api-down on api".into(),
        state: state.into(),
        severity: "page".into(),
        detected_ms: NOW - id * 60_000,
        time_to_acknowledge_ms: Some(75_000),
        time_to_mitigate_ms: None,
        time_to_restore_ms: (state == "resolved").then_some(600_000),
    }
}

fn alert(name: &str, state: &str, runbook: Option<&str>) -> AlertView {
    AlertView {
        name: name.into(),
        state: state.into(),
        since_ms: NOW - 1000,
        active_at_ms: NOW - 5000,
        value: Some(3.0),
        labels: labels(&[("alertname", name), ("severity", "page")]),
        annotations: labels(&[("summary", "<b>api</b> fails")]),
        runbook: runbook.map(str::to_owned),
        muted: None,
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn run_summary(id: u64) -> RunSummary {
    RunSummary {
        id,
        workflow: "ci".into(),
        event: "push".into(),
        commit: "1a2b3c4d5e6f".into(),
        status: "success".into(),
        started_at: "2027-01-15T08:00:00Z".into(),
        finished_at: Some("2027-01-15T08:01:00Z".into()),
        duration_ms: Some(60_000),
    }
}

impl DashboardData for Fake {
    async fn snapshot(&self) -> Result<Snapshot, DataError> {
        let instance = |id: &str, state: &str| InstanceView {
            id: id.into(),
            state: state.into(),
            health: "ready".into(),
            restarts: 1,
            uptime_seconds: Some(60),
            rss_bytes: Some(1 << 20),
            release: "sha256:abc".into(),
        };
        Ok(Snapshot {
            stack: "shop".into(),
            services: vec![
                ServiceState {
                    name: "api".into(),
                    instances: vec![instance("api/0", "ready"), instance("api/1", "starting")],
                    routes: vec![RouteView {
                        address: "routes.api".into(),
                        host: "shop.localhost".into(),
                        path: "/api".into(),
                    }],
                },
                ServiceState {
                    name: "worker".into(),
                    instances: vec![],
                    routes: vec![],
                },
            ],
        })
    }

    async fn query(&self, expr: &str, _time_ms: i64) -> Result<Vec<Series>, DataError> {
        self.asked.lock().unwrap().push(expr.to_owned());
        let value = if expr == charts::ROUTE_RATE {
            10.0
        } else if expr == charts::ROUTE_ERRORS {
            0.5
        } else if expr == "bad(" {
            return Err(DataError::BadRequest("parse error".into()));
        } else {
            return Ok(Vec::new());
        };
        Ok(vec![Series {
            labels: labels(&[("route", "routes.api")]),
            points: vec![(NOW, value)],
        }])
    }

    async fn query_range(
        &self,
        expr: &str,
        range: TimeRange,
        step_ms: i64,
    ) -> Result<Vec<Series>, DataError> {
        self.asked.lock().unwrap().push(expr.to_owned());
        if expr != uptime::READY_BY_SERVICE {
            return Ok(vec![Series {
                labels: BTreeMap::new(),
                points: vec![(range.start, 1.0), (range.end, 2.0)],
            }]);
        }
        // The api was up for the last ten steps but one.
        let points = (0..10)
            .map(|i| (range.end - i * step_ms, if i == 3 { 0.0 } else { 1.0 }))
            .rev()
            .collect();
        Ok(vec![Series {
            labels: labels(&[("service", "api")]),
            points,
        }])
    }

    async fn events(&self, filter: EventFilter) -> Result<Vec<EventView>, DataError> {
        let all = [
            (3, "instance.ready"),
            (2, "deploy.finished"),
            (1, "instance.exited"),
        ];
        Ok(all
            .iter()
            .filter(|(_, kind)| {
                filter
                    .kind
                    .as_ref()
                    .is_none_or(|k| kind.starts_with(k.as_str()))
            })
            .take(filter.limit)
            .map(|(id, kind)| EventView {
                id: *id,
                time: "2027-01-15T08:00:00Z".into(),
                kind: (*kind).into(),
                address: Some("services.api".into()),
                message: format!("{kind} happened"),
            })
            .collect())
    }

    async fn runs(&self, _limit: usize) -> Result<Vec<RunSummary>, DataError> {
        Ok(vec![run_summary(2), run_summary(1)])
    }

    async fn run(&self, id: u64) -> Result<Option<RunDetail>, DataError> {
        Ok((id == 1).then(|| RunDetail {
            run: run_summary(1),
            error: None,
            jobs: vec![JobView {
                id: "test".into(),
                name: "test (api)".into(),
                status: "success".into(),
                duration_ms: 1000,
                steps: Vec::new(),
                annotations: Vec::new(),
            }],
        }))
    }

    async fn run_log(&self, id: u64, job: &str) -> Result<Option<String>, DataError> {
        Ok((id == 1 && job == "test (api)").then(|| "line 1\nline 2\n".into()))
    }

    async fn annotations(&self, range: TimeRange) -> Result<Vec<Annotation>, DataError> {
        let mark = |kind, time_ms, service: Option<&str>| Annotation {
            kind,
            time_ms,
            end_ms: Some(time_ms + 1000),
            service: service.map(str::to_owned),
            title: "x".into(),
            result: "succeeded".into(),
        };
        Ok(vec![
            mark(AnnotationKind::Deploy, range.end - 10, Some("web")),
            mark(AnnotationKind::Deploy, range.end - 20, Some("api")),
            mark(AnnotationKind::Run, range.end - 30, None),
        ])
    }

    async fn incidents(
        &self,
        open_only: bool,
        limit: usize,
    ) -> Result<Vec<IncidentSummary>, DataError> {
        // Newest first: 4 is open, 3 acknowledged, 2 and 1 resolved.
        let all = [
            incident_summary(4, "open"),
            incident_summary(3, "acknowledged"),
            incident_summary(2, "resolved"),
            incident_summary(1, "resolved"),
        ];
        Ok(all
            .into_iter()
            .filter(|i| !open_only || i.state != "resolved")
            .take(limit)
            .collect())
    }

    async fn incident(&self, id: i64) -> Result<Option<IncidentDetail>, DataError> {
        Ok((id == 2).then(|| IncidentDetail {
            summary: incident_summary(2, "resolved"),
            milestones: vec![
                MilestoneView {
                    name: "detected".into(),
                    at_ms: Some(NOW - 120_000),
                    actor: Some("kiln".into()),
                },
                MilestoneView {
                    name: "acknowledged".into(),
                    at_ms: None,
                    actor: None,
                },
            ],
            alerts: vec![IncidentAlertView {
                name: "api-down".into(),
                fired_ms: NOW - 120_000,
                resolved_ms: Some(NOW - 60_000),
                firings: 1,
            }],
            timeline: vec![
                TimelineView {
                    at_ms: NOW - 120_000,
                    actor: "kiln".into(),
                    kind: "alert_fired".into(),
                    text: "alert api-down fired".into(),
                },
                TimelineView {
                    at_ms: NOW - 100_000,
                    actor: "ann@laptop".into(),
                    kind: "note".into(),
                    text: "rolling back".into(),
                },
            ],
        }))
    }

    async fn alerts(&self) -> Result<Vec<AlertView>, DataError> {
        if self.no_evaluator {
            return Err(DataError::Unavailable(
                "this control plane evaluates no alerts".into(),
            ));
        }
        Ok(vec![
            alert("latency-high", "pending", Some("recover")),
            alert("quiet", "inactive", Some("recover")),
            alert("gone", "resolved", None),
            alert("api-down", "firing", Some("recover")),
            alert("disk", "firing", None),
            alert("old", "firing", Some("removed-since")),
            alert("unreadable", "pending", Some("broken")),
        ])
    }

    async fn runbook(&self, name: &str, runs: usize) -> Result<Option<RunbookDoc>, DataError> {
        self.runbooks_asked.lock().unwrap().push(name.to_owned());
        if name == "broken" {
            return Err(DataError::Internal("kiln.yaml does not load".into()));
        }
        Ok((name == "recover").then(|| RunbookDoc {
            name: name.into(),
            description: "# Recover\n\nRestart **api**.\n\n<script>alert('x')</script>\n\n[bad](javascript:alert(1))".into(),
            runs: (0..runs.min(2))
                .map(|i| RunbookRunView {
                    id: format!("run-{i}"),
                    status: "succeeded".into(),
                    trigger: "alert".into(),
                    triggered_by: "alerts.api-down".into(),
                    target: "api".into(),
                    dry_run: false,
                    detail: String::new(),
                    started_ms: NOW - 1000,
                    finished_ms: Some(NOW),
                })
                .collect(),
        }))
    }

    async fn dora(&self, since: &str, service: Option<&str>) -> Result<DoraView, DataError> {
        self.dora_asked
            .lock()
            .unwrap()
            .push((since.to_owned(), service.map(str::to_owned)));
        if !since.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(DataError::BadRequest(format!(
                "`{since}` must start with a number, like `30d`"
            )));
        }
        let metric = |key: &str, unit: &str, value: Option<f64>, level: Option<&str>| DoraMetric {
            key: key.into(),
            title: key.replace('_', " "),
            unit: unit.into(),
            value,
            level: level.map(str::to_owned),
            thresholds: "elite < 1 day".into(),
        };
        Ok(DoraView {
            service: service.map(str::to_owned),
            since: since.into(),
            start_ms: NOW - 30 * 86_400_000,
            end_ms: NOW,
            changes: 4,
            deployments: 3,
            failed_changes: 1,
            metrics: vec![
                metric("deployment_frequency", "per_day", Some(0.1), Some("high")),
                metric("lead_time", "seconds", Some(7200.0), Some("elite")),
                metric("change_failure_rate", "ratio", Some(0.25), Some("medium")),
                metric("recovery_time", "seconds", None, None),
            ],
            bucket: "week".into(),
            trend: vec![DoraBucket {
                start_ms: NOW - 7 * 86_400_000,
                changes: 4,
                values: vec![Some(0.1), Some(7200.0), Some(0.25), None],
            }],
        })
    }

    fn now_ms(&self) -> i64 {
        NOW
    }
}

async fn get(path: &str) -> (u16, String, String) {
    get_from(Arc::new(Fake::default()), path).await
}

async fn get_from(fake: Arc<Fake>, path: &str) -> (u16, String, String) {
    let response = router(fake)
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .unwrap();
    (status, kind, String::from_utf8(body.to_vec()).unwrap())
}

/// The text `key` of each element of `list`.
fn texts<'a>(list: &'a serde_json::Value, key: &str) -> Vec<&'a str> {
    let all = list.as_array().map_or(&[][..], Vec::as_slice);
    all.iter().filter_map(|e| e[key].as_str()).collect()
}

async fn json(path: &str) -> serde_json::Value {
    let (status, kind, body) = get(path).await;
    assert_eq!(status, 200, "{path}: {body}");
    assert!(kind.starts_with("application/json"), "{path}: {kind}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn the_overview_has_health_uptime_since_and_route_traffic() {
    let o = json("/api/overview").await;
    assert_eq!(o["stack"], "shop");
    let api = &o["services"][0];
    assert_eq!(api["name"], "api");
    assert_eq!(api["ready"], 1);
    assert_eq!(api["restarts"], 2);
    assert_eq!(api["releases"], serde_json::json!(["sha256:abc"]));
    // Ten sampled moments, one down: 90 %, and only "since" the first of them.
    let day = &api["uptime"][0];
    assert_eq!(day["window"], "24h");
    assert_eq!(day["ratio"], 0.9);
    assert_eq!(day["since_ms"], NOW - 9 * 60_000);
    assert_eq!(api["uptime"][1]["window"], "30d");
    let route = &api["routes"][0];
    assert_eq!(route["address"], "routes.api");
    assert_eq!(route["host"], "shop.localhost");
    assert_eq!(route["rate"], 10.0);
    assert_eq!(route["error_ratio"], 0.05);
    // A service without samples or routes has no figures rather than made-up ones.
    let worker = &o["services"][1];
    assert_eq!(worker["uptime"][0]["ratio"], serde_json::Value::Null);
    assert_eq!(worker["routes"], serde_json::json!([]));
    assert_eq!(o["warning"], serde_json::Value::Null);
}

#[tokio::test]
async fn a_service_page_lists_its_charts_and_an_unknown_one_is_404() {
    let page = json("/api/services/api?range=900").await;
    assert_eq!(page["service"]["name"], "api");
    assert_eq!(page["stack"], "shop");
    assert_eq!(page["grid"]["end"], NOW);
    assert_eq!(page["grid"]["start"], NOW - 900_000);
    let ids: Vec<&str> = page["charts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["requests", "errors", "latency", "cpu", "memory", "restarts"]
    );
    let (status, kind, body) = get("/api/services/nope").await;
    assert_eq!(status, 404);
    assert!(kind.starts_with("application/json"));
    assert!(body.contains("no service named `nope`"), "{body}");
}

#[tokio::test]
async fn queries_answer_series_and_bad_ones_are_400() {
    let fake = Arc::new(Fake::default());
    let (status, _, body) = get_from(
        fake.clone(),
        "/api/query_range?query=up%7Bjob%3D%22a%22%7D&start=1000&end=5000&step=1000",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["series"][0]["points"],
        serde_json::json!([[1000, 1.0], [5000, 2.0]])
    );
    assert_eq!(fake.asked.lock().unwrap().as_slice(), [r#"up{job="a"}"#]);
    for bad in [
        "/api/query_range?query=x&start=1&end=2",
        "/api/query_range?query=x&start=5&end=2&step=1",
        "/api/query_range?query=x&start=1&end=2&step=0",
        "/api/query",
        "/api/query?query=bad(",
    ] {
        let (status, _, body) = get(bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("\"error\""), "{bad}: {body}");
    }
    let v = json("/api/query?query=sum+by+(route)+(rate(http_requests_total%5B1m%5D))").await;
    assert_eq!(v["series"][0]["labels"]["route"], "routes.api");
}

#[tokio::test]
async fn events_are_filtered_by_kind_prefix() {
    let all = json("/api/events").await;
    assert_eq!(all["events"].as_array().unwrap().len(), 3);
    let some = json("/api/events?kind=instance&limit=1").await;
    let events = some["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["kind"], "instance.ready");
    assert_eq!(events[0]["address"], "services.api");
}

#[tokio::test]
async fn runs_a_run_and_its_log() {
    let runs = json("/api/runs").await;
    assert_eq!(runs[0]["id"], 2);
    assert_eq!(runs[0]["duration_ms"], 60_000);
    let run = json("/api/runs/1").await;
    assert_eq!(run["jobs"][0]["name"], "test (api)");
    let (status, kind, body) = get("/api/runs/1/logs/test%20(api)").await;
    assert_eq!((status, body.as_str()), (200, "line 1\nline 2\n"));
    assert_eq!(kind, "text/plain; charset=utf-8");
    assert_eq!(get("/api/runs/9").await.0, 404);
    assert_eq!(get("/api/runs/1/logs/nope").await.0, 404);
    assert_eq!(get("/api/runs/x").await.0, 400);
}

#[tokio::test]
async fn annotations_keep_the_service_and_runs_oldest_first() {
    let list = json("/api/annotations?start=0&end=1000&service=api").await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["kind"], "run");
    assert_eq!(list[0]["time_ms"], 970);
    assert_eq!(list[1]["kind"], "deploy");
    assert_eq!(list[1]["service"], "api");
    assert_eq!(json("/api/annotations").await.as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn assets_have_their_content_types_and_unknown_paths_are_404() {
    let (status, kind, body) = get("/").await;
    assert_eq!(status, 200);
    assert_eq!(kind, "text/html; charset=utf-8");
    assert!(body.contains("/assets/app.js") && body.contains("/assets/app.css"));
    let (status, kind, _) = get("/assets/app.js").await;
    assert_eq!(
        (status, kind.as_str()),
        (200, "text/javascript; charset=utf-8")
    );
    let (status, kind, _) = get("/assets/app.css").await;
    assert_eq!((status, kind.as_str()), (200, "text/css; charset=utf-8"));
    assert_eq!(get("/assets/nope.js").await.0, 404);
    let (status, kind, _) = get("/api/nope").await;
    assert_eq!(status, 404);
    assert!(kind.starts_with("application/json"));
    assert_eq!(get("/somewhere").await.0, 404);
}

#[tokio::test]
async fn the_incidents_page_lists_open_then_recent_and_an_unknown_incident_is_404() {
    let page = json("/api/incidents").await;
    let ids = |key: &str| -> Vec<i64> {
        page[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(ids("open"), [4, 3]);
    assert_eq!(ids("recent"), [2, 1]);
    let first = &page["open"][0];
    assert_eq!(first["state"], "open");
    assert_eq!(first["severity"], "page");
    assert_eq!(first["title"], "api-down on api");
    assert_eq!(first["time_to_acknowledge_ms"], 75_000);
    assert_eq!(first["time_to_mitigate_ms"], serde_json::Value::Null);
    assert_eq!(page["recent"][0]["time_to_restore_ms"], 600_000);

    let detail = json("/api/incidents/2").await;
    assert_eq!(detail["id"], 2);
    assert_eq!(detail["service"], "api");
    assert_eq!(detail["milestones"][0]["name"], "detected");
    assert_eq!(detail["milestones"][1]["at_ms"], serde_json::Value::Null);
    assert_eq!(detail["alerts"][0]["name"], "api-down");
    assert_eq!(texts(&detail["timeline"], "kind"), ["alert_fired", "note"]);
    assert_eq!(detail["timeline"][1]["actor"], "ann@laptop");

    let (status, kind, body) = get("/api/incidents/9").await;
    assert_eq!(status, 404);
    assert!(kind.starts_with("application/json"));
    assert!(body.contains("no incident 9"), "{body}");
    assert_eq!(get("/api/incidents/x").await.0, 400);
}

#[tokio::test]
async fn alerts_show_firing_then_pending_with_their_runbook_rendered_safely() {
    let fake = Arc::new(Fake::default());
    let (status, _, body) = get_from(fake.clone(), "/api/alerts").await;
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        texts(&page["alerts"], "name"),
        ["api-down", "disk", "old", "latency-high", "unreadable"]
    );
    let first = &page["alerts"][0];
    assert_eq!(first["state"], "firing");
    assert_eq!(first["value"], 3.0);
    let doc = &first["runbook_doc"];
    assert_eq!(doc["name"], "recover");
    assert_eq!(doc["declared"], true);
    let html = doc["doc_html"].as_str().unwrap();
    assert!(html.contains("<h1>Recover</h1>"), "{html}");
    assert!(html.contains("<strong>api</strong>"), "{html}");
    assert!(!html.contains("<script"), "{html}");
    assert!(html.contains("&lt;script&gt;"), "{html}");
    assert!(!html.contains("javascript:"), "{html}");
    assert_eq!(doc["runs"].as_array().unwrap().len(), 2);
    assert_eq!(doc["runs"][0]["trigger"], "alert");
    assert_eq!(page["alerts"][1]["runbook_doc"], serde_json::Value::Null);
    let gone = &page["alerts"][2]["runbook_doc"];
    assert_eq!(gone["declared"], false);
    assert_eq!(gone["doc_html"], "");
    // The pending alert shares the firing one's runbook: read once.
    assert_eq!(page["alerts"][3]["runbook_doc"]["name"], "recover");
    assert_eq!(doc["error"], serde_json::Value::Null);
    // A runbook that cannot be read says why; the alerts are shown all the same.
    let broken = &page["alerts"][4]["runbook_doc"];
    assert_eq!(broken["error"], "kiln.yaml does not load");
    assert_eq!(broken["doc_html"], "");
    assert_eq!(
        fake.runbooks_asked.lock().unwrap().as_slice(),
        ["recover", "removed-since", "broken"]
    );
    assert_eq!(page["warning"], serde_json::Value::Null);

    let without = Arc::new(Fake {
        no_evaluator: true,
        ..Fake::default()
    });
    let (status, _, body) = get_from(without, "/api/alerts").await;
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["alerts"], serde_json::json!([]));
    assert_eq!(page["warning"], "this control plane evaluates no alerts");
}

#[test]
fn every_page_links_to_alerts_and_incidents() {
    let (_, _, index) = crate::assets::FILES[0];
    for target in ["#/alerts", "#/incidents"] {
        assert!(
            index.contains(&format!("href=\"{target}\"")),
            "the navigation has no link to {target}"
        );
    }
}

#[tokio::test]
async fn nothing_changes_through_the_dashboard() {
    for path in [
        "/",
        "/api/overview",
        "/api/runs",
        "/api/events",
        "/api/incidents",
        "/api/incidents/2",
        "/api/alerts",
    ] {
        let response = router(Arc::new(Fake::default()))
            .oneshot(Request::post(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 405, "POST {path}");
    }
}

#[test]
fn the_assets_load_nothing_from_outside() {
    for (name, _, body) in crate::assets::FILES {
        for scheme in ["http://", "https://", "//cdn", "ws://", "wss://"] {
            for (at, _) in body.match_indices(scheme) {
                let rest = &body[at + scheme.len()..];
                let loopback = ["127.0.0.1", "localhost", "[::1]"]
                    .iter()
                    .any(|h| rest.starts_with(h));
                assert!(
                    loopback,
                    "{name} refers to an outside address: {}",
                    &body[at..(at + 60).min(body.len())]
                );
            }
        }
        assert!(!body.contains("@import"), "{name} imports a style sheet");
    }
}

#[tokio::test]
async fn dora_passes_the_window_and_service_and_answers_the_figures_with_their_trend() {
    let fake = Arc::new(Fake::default());
    let (status, kind, body) = get_from(fake.clone(), "/api/dora?since=7d&service=api").await;
    assert_eq!(status, 200, "{body}");
    assert!(kind.starts_with("application/json"), "{kind}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["service"], "api");
    assert_eq!(page["since"], "7d");
    assert_eq!(page["bucket"], "week");
    assert_eq!(
        texts(&page["metrics"], "key"),
        [
            "deployment_frequency",
            "lead_time",
            "change_failure_rate",
            "recovery_time"
        ]
    );
    assert_eq!(
        texts(&page["metrics"], "level"),
        ["high", "elite", "medium"]
    );
    assert!(page["metrics"][3]["value"].is_null());
    assert_eq!(page["trend"][0]["values"][1], 7200.0);
    assert!(page["trend"][0]["values"][3].is_null());
    // No window: `kiln dora`'s 30 days; an empty service: every service.
    let (status, _, _) = get_from(fake.clone(), "/api/dora?service=").await;
    assert_eq!(status, 200);
    let (status, _, _) = get_from(fake.clone(), "/api/dora").await;
    assert_eq!(status, 200);
    assert_eq!(
        *fake.dora_asked.lock().unwrap(),
        [
            ("7d".to_owned(), Some("api".to_owned())),
            ("30d".to_owned(), None),
            ("30d".to_owned(), None),
        ]
    );
}

#[tokio::test]
async fn dora_with_a_window_that_is_no_duration_is_a_bad_request_saying_why() {
    let (status, kind, body) = get("/api/dora?since=lately").await;
    assert_eq!(status, 400, "{body}");
    assert!(kind.starts_with("application/json"), "{kind}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["error"],
        "`lately` must start with a number, like `30d`"
    );
}
