//! The web dashboard (`kiln up --dash-listen`, `kiln dash`): kiln-api's router on a loopback
//! TCP listener, fed by [`Source`], which maps the control plane's engines into kiln-api's view
//! types: the supervisor's instances, the recorded services and routes, events, pipeline runs
//! and their logs (`.kiln/ci/`), deploys, incidents (read from the state store, where the
//! incident actor saves every change), the alert evaluator's alerts (asked by message),
//! runbooks' documentation (asked of the runbook actor, which holds them as of the last
//! apply) with their audited runs, and PromQL over the metrics store (evaluated the way the
//! Prometheus API evaluates it, see [`crate::metrics::evaluate`]).
//!
//! The dashboard is read-only and asks for no token: it listens on loopback only, like the
//! Prometheus API, and shows nothing the CLI would not (CI logs are masked when written;
//! no secret value is in any record it reads).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kiln_alerts::incident::{Incident, Milestone};
use kiln_api::DataError;
use kiln_api::view::{
    AlertView, Annotation, AnnotationKind, AnnotationView, DoraBucket, DoraMetric, DoraView,
    EventFilter, EventView, IncidentAlertView, IncidentDetail, IncidentSummary, InstanceView,
    JobView, MilestoneView, RouteView, RunDetail, RunSummary, RunbookDoc, RunbookRunView, Series,
    ServiceState, Snapshot, StepView, TimeRange, TimelineView,
};
use kiln_delivery::dora::{self, Level};
use kiln_metrics::query::{Engine, Value};
use kiln_supervisor::SupervisorHandle;
use tokio::sync::watch;

use crate::ops::{self, Failure};

/// The largest part of a CI log the dashboard shows (the end of it).
const LOG_TAIL_BYTES: usize = 1 << 20;

/// How many recent events a kind filter looks through.
const EVENT_SCAN: usize = 5000;

/// Binds the dashboard's listener: loopback addresses only.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Failure> {
    if !addr.ip().is_loopback() {
        return Err(Failure::Refused(format!(
            "--dash-listen {addr}: only loopback addresses (127.0.0.1, ::1) are served; the dashboard has no login"
        )));
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::State(format!("cannot listen on {addr} for the dashboard: {e}")))
}

/// Serves the dashboard until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    source: Source,
    mut stop: watch::Receiver<bool>,
) {
    let router = kiln_api::router(Arc::new(source));
    let _ = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
}

/// What the dashboard reads from.
#[derive(Debug, Clone)]
pub struct Source {
    /// The stack's directory.
    pub dir: PathBuf,
    /// The stack's name.
    pub stack: String,
    /// The instances.
    pub supervisor: SupervisorHandle,
    /// The metrics store and the query limits.
    pub metrics: crate::metrics::Api,
    /// The alert evaluator (none without a metrics store).
    pub alerts: Option<crate::alerts::AlertsHandle>,
    /// The runbook actor, for runbooks' documentation.
    pub runbooks: Option<crate::runbooks::RunbooksHandle>,
}

fn internal(e: impl std::fmt::Display) -> DataError {
    DataError::Internal(e.to_string())
}

impl Source {
    /// Runs `read` on the state store off the async threads.
    async fn with_store<T: Send + 'static>(
        &self,
        read: impl FnOnce(&kiln_state::Store, &std::path::Path) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, DataError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let store = ops::open_store(&dir)?;
            read(&store, &dir)
        })
        .await
        .map_err(internal)?
        .map_err(|f| internal(f.message()))
    }

    async fn evaluate(
        &self,
        work: impl FnOnce(
            &Engine<'_, kiln_metrics::Store>,
        ) -> Result<Value, kiln_metrics::query::QueryError>
        + Send
        + 'static,
    ) -> Result<Vec<Series>, DataError> {
        let Some(store) = self.metrics.store.clone() else {
            return Err(DataError::Unavailable(
                "this control plane records no metrics".into(),
            ));
        };
        let limits = self.metrics.limits.clone();
        let value =
            crate::metrics::evaluate(move || work(&Engine::with_limits(store.as_ref(), limits)))
                .await
                .map_err(|e| match e {
                    crate::metrics::EvalError::Query(e) => match e {
                        kiln_metrics::query::QueryError::Parse(_)
                        | kiln_metrics::query::QueryError::Unsupported(_)
                        | kiln_metrics::query::QueryError::Limit(_)
                        | kiln_metrics::query::QueryError::Eval(_) => {
                            DataError::BadRequest(e.to_string())
                        }
                        kiln_metrics::query::QueryError::Store(_) => internal(e),
                    },
                    other => internal(other),
                })?;
        series_of(value)
    }
}

/// A query result as series; points that are not finite are left out.
fn series_of(value: Value) -> Result<Vec<Series>, DataError> {
    let labels = |l: &kiln_metrics::Labels| {
        l.iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect()
    };
    Ok(match value {
        Value::Scalar { t, v } => vec![Series {
            labels: Default::default(),
            points: [(t, v)]
                .into_iter()
                .filter(|(_, v)| v.is_finite())
                .collect(),
        }],
        Value::String { .. } => {
            return Err(DataError::BadRequest(
                "a string is not a series: the dashboard draws numbers".into(),
            ));
        }
        Value::Vector(samples) => samples
            .iter()
            .map(|s| Series {
                labels: labels(&s.labels),
                points: [(s.t, s.v)]
                    .into_iter()
                    .filter(|(_, v)| v.is_finite())
                    .collect(),
            })
            .collect(),
        Value::Matrix(series) => series
            .iter()
            .map(|s| Series {
                labels: labels(&s.labels),
                points: s
                    .samples
                    .iter()
                    .filter(|p| p.v.is_finite())
                    .map(|p| (p.t, p.v))
                    .collect(),
            })
            .collect(),
    })
}

/// An RFC 3339 time in ms.
fn millis(text: &str) -> Option<i64> {
    text.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

fn run_summary(r: &kiln_state::PipelineRun) -> RunSummary {
    let duration_ms = r
        .finished_at
        .as_deref()
        .and_then(millis)
        .zip(millis(&r.started_at))
        .and_then(|(end, start)| u64::try_from(end - start).ok());
    RunSummary {
        id: r.id,
        workflow: r.workflow.clone(),
        event: r.event.clone(),
        commit: r.commit.clone(),
        status: r.status.clone(),
        started_at: r.started_at.clone(),
        finished_at: r.finished_at.clone(),
        duration_ms,
    }
}

/// An incident as the incidents page lists it.
fn incident_summary(incident: &Incident) -> IncidentSummary {
    let m = &incident.milestones;
    IncidentSummary {
        id: incident.id,
        service: incident.service.clone(),
        title: incident.title.clone(),
        state: incident.state.as_str().to_owned(),
        // Only paging alerts open incidents (see `incidents.rs`).
        severity: crate::incidents::PAGING_SEVERITY.to_owned(),
        detected_ms: m.detected.at,
        time_to_acknowledge_ms: m.time_to_acknowledge(),
        time_to_mitigate_ms: m.time_to_mitigate(),
        time_to_restore_ms: m.time_to_restore(),
    }
}

/// An incident with what `kiln incident show` prints.
fn incident_detail(incident: &Incident) -> IncidentDetail {
    let m = &incident.milestones;
    let milestone = |name: &str, at: Option<&Milestone>| MilestoneView {
        name: name.to_owned(),
        at_ms: at.map(|m| m.at),
        actor: at.map(|m| m.actor.clone()),
    };
    let mut alerts: Vec<IncidentAlertView> = incident
        .alerts
        .values()
        .map(|a| IncidentAlertView {
            name: a.name.clone(),
            fired_ms: a.fired_at,
            resolved_ms: a.resolved_at,
            firings: a.firings,
        })
        .collect();
    alerts.sort_by(|a, b| (a.fired_ms, &a.name).cmp(&(b.fired_ms, &b.name)));
    IncidentDetail {
        summary: incident_summary(incident),
        milestones: vec![
            milestone("detected", Some(&m.detected)),
            milestone("acknowledged", m.acknowledged.as_ref()),
            milestone("mitigated", m.mitigated.as_ref()),
            milestone("resolved", m.resolved.as_ref()),
        ],
        alerts,
        timeline: incident
            .timeline
            .iter()
            .map(|e| TimelineView {
                at_ms: e.at,
                actor: e.actor.clone(),
                kind: e.kind.as_str().to_owned(),
                text: e.text.clone(),
            })
            .collect(),
    }
}

fn alert_view(status: crate::alerts::AlertStatus) -> AlertView {
    let muted = if !status.silenced_by.is_empty() {
        Some(format!("silenced by {}", status.silenced_by.join(", ")))
    } else if status.inhibited {
        Some("inhibited".to_owned())
    } else if status.maintenance {
        Some("maintenance window".to_owned())
    } else {
        None
    };
    AlertView {
        name: status.name,
        state: status.phase.as_str().to_owned(),
        since_ms: status.since,
        active_at_ms: status.active_at,
        value: status.value.is_finite().then_some(status.value),
        labels: status.labels,
        annotations: status.annotations,
        runbook: status.runbook,
        muted,
    }
}

fn runbook_run_view(r: kiln_state::RunbookRun) -> RunbookRunView {
    RunbookRunView {
        id: r.id,
        status: r.status,
        trigger: r.trigger,
        triggered_by: r.triggered_by,
        target: r.target,
        dry_run: r.dry_run,
        detail: r.detail,
        started_ms: r.started_at,
        finished_ms: r.finished_at,
    }
}

fn short(release: &str) -> &str {
    let hex = release.strip_prefix("sha256:").unwrap_or(release);
    hex.get(..8).unwrap_or(hex)
}

fn instance_view(s: &kiln_supervisor::InstanceStatus) -> InstanceView {
    InstanceView {
        id: s.id.to_string(),
        state: crate::daemon::instance_state(&s.state).into(),
        health: s.health.clone(),
        restarts: s.restarts,
        uptime_seconds: s.uptime.map(|u| u.as_secs()),
        rss_bytes: s.rss_bytes,
        release: s.release.clone(),
    }
}

/// The four figures of `report`, in [`DoraView::metrics`]' order.
fn dora_values(report: &kiln_delivery::dora::Report) -> [(Option<f64>, Option<Level>); 4] {
    let seconds = |s: Option<i64>| s.map(|s| s as f64);
    [
        (
            Some(report.deployments_per_day),
            report.deployment_frequency_level,
        ),
        (seconds(report.lead_time_seconds), report.lead_time_level),
        (report.change_failure_rate, report.change_failure_level),
        (seconds(report.recovery_seconds), report.recovery_level),
    ]
}

/// The DORA figures over `[since, until]` and their trend, as the dashboard shows them.
fn dora_view(
    facts: &crate::dora::Facts,
    since_text: &str,
    service: Option<&str>,
    since: jiff::Timestamp,
    until: jiff::Timestamp,
) -> DoraView {
    const METRICS: [(&str, &str, &str); 4] = [
        ("deployment_frequency", "Deployment frequency", "per_day"),
        ("lead_time", "Lead time for changes", "seconds"),
        ("change_failure_rate", "Change failure rate", "ratio"),
        ("recovery_time", "Failed deployment recovery", "seconds"),
    ];
    let report = dora::compute_with_incidents(&facts.deploys, &facts.incidents, since, until);
    let (bucket, points) = dora::trend(&facts.deploys, &facts.incidents, since, until);
    let metrics = METRICS
        .iter()
        .zip(dora_values(&report))
        .zip(dora::THRESHOLDS)
        .map(
            |(((key, title, unit), (value, level)), thresholds)| DoraMetric {
                key: (*key).into(),
                title: (*title).into(),
                unit: (*unit).into(),
                value,
                level: level.map(|l| l.as_str().into()),
                thresholds: thresholds.into(),
            },
        )
        .collect();
    DoraView {
        service: service.map(str::to_owned),
        since: since_text.into(),
        start_ms: since.as_millisecond(),
        end_ms: until.as_millisecond(),
        changes: report.changes,
        deployments: report.deployments,
        failed_changes: report.failed_changes,
        metrics,
        bucket: bucket.as_str().into(),
        trend: points
            .iter()
            .map(|p| DoraBucket {
                start_ms: p.start.as_millisecond(),
                changes: p.report.changes,
                values: dora_values(&p.report).iter().map(|(v, _)| *v).collect(),
            })
            .collect(),
    }
}

/// Services from the recorded resources and the running instances (a service being removed
/// still shows while instances of it run).
fn services(
    records: &[kiln_state::ResourceRecord],
    instances: &[kiln_supervisor::InstanceStatus],
) -> Vec<ServiceState> {
    let mut by_name: std::collections::BTreeMap<String, ServiceState> = records
        .iter()
        .filter(|r| r.kind == "service")
        .map(|r| {
            let name = kiln_providers::supervisor_name(&r.address);
            (
                name.clone(),
                ServiceState {
                    name,
                    ..ServiceState::default()
                },
            )
        })
        .collect();
    for i in instances {
        let name = kiln_supervisor::service_of(&i.id.service).to_owned();
        by_name
            .entry(name.clone())
            .or_insert_with(|| ServiceState {
                name,
                ..ServiceState::default()
            })
            .instances
            .push(instance_view(i));
    }
    for r in records.iter().filter(|r| r.kind == "route") {
        let attrs = r.attributes.as_object().cloned().unwrap_or_default();
        let spec = kiln_providers::route_spec(&r.address, &attrs);
        if let Some(service) = by_name.get_mut(&spec.service) {
            service.routes.push(RouteView {
                address: spec.address,
                host: spec.host,
                path: spec.path,
            });
        }
    }
    by_name.into_values().collect()
}

impl kiln_api::DashboardData for Source {
    async fn snapshot(&self) -> Result<Snapshot, DataError> {
        let instances = self.supervisor.status().await;
        let records = self.with_store(|s, _| Ok(s.resources()?)).await?;
        Ok(Snapshot {
            stack: self.stack.clone(),
            services: services(&records, &instances),
        })
    }

    async fn query(&self, expr: &str, time_ms: i64) -> Result<Vec<Series>, DataError> {
        let expr = expr.to_owned();
        self.evaluate(move |engine| engine.query(&expr, time_ms))
            .await
    }

    async fn query_range(
        &self,
        expr: &str,
        range: TimeRange,
        step_ms: i64,
    ) -> Result<Vec<Series>, DataError> {
        let expr = expr.to_owned();
        self.evaluate(move |engine| engine.query_range(&expr, range.start, range.end, step_ms))
            .await
    }

    async fn events(&self, filter: EventFilter) -> Result<Vec<EventView>, DataError> {
        self.with_store(move |s, _| {
            let last = s.last_event_id()?;
            let scan = if filter.kind.is_some() {
                EVENT_SCAN
            } else {
                filter.limit
            };
            let mut list = s.events(&kiln_state::EventQuery {
                after_id: Some(last.saturating_sub(i64::try_from(scan).unwrap_or(i64::MAX))),
                address: None,
                limit: scan,
            })?;
            list.reverse();
            let wanted = |kind: &str| {
                filter.kind.as_deref().is_none_or(|k| {
                    kind == k
                        || kind
                            .strip_prefix(k)
                            .is_some_and(|rest| rest.starts_with('.'))
                })
            };
            Ok(list
                .into_iter()
                .filter(|e| wanted(&e.kind))
                .take(filter.limit)
                .map(|e| EventView {
                    id: e.id,
                    time: e.time,
                    kind: e.kind,
                    address: e.address,
                    message: e.message,
                })
                .collect())
        })
        .await
    }

    async fn runs(&self, limit: usize) -> Result<Vec<RunSummary>, DataError> {
        self.with_store(move |s, _| Ok(s.pipeline_runs(limit)?.iter().map(run_summary).collect()))
            .await
    }

    async fn run(&self, id: u64) -> Result<Option<RunDetail>, DataError> {
        self.with_store(move |s, _| {
            let Some(run) = s.pipeline_run(id)? else {
                return Ok(None);
            };
            let jobs = s.pipeline_jobs(id)?;
            Ok(Some(RunDetail {
                error: run
                    .summary
                    .get("error")
                    .and_then(|e| e.as_str())
                    .map(str::to_owned),
                run: run_summary(&run),
                jobs: jobs
                    .into_iter()
                    .map(|j| JobView {
                        id: j.job_id,
                        name: j.name,
                        status: j.status,
                        duration_ms: j.duration_ms,
                        steps: j
                            .steps
                            .into_iter()
                            .map(|s| StepView {
                                name: s.name,
                                conclusion: s.conclusion,
                                duration_ms: s.duration_ms,
                                exit_code: s.exit_code,
                            })
                            .collect(),
                        annotations: crate::ci::stored_annotations(&j.annotations)
                            .iter()
                            .map(|a| AnnotationView {
                                level: crate::ci::level_name(a.level).to_owned(),
                                text: crate::ci::annotation_text(a),
                            })
                            .collect(),
                    })
                    .collect(),
            }))
        })
        .await
    }

    async fn run_log(&self, id: u64, job: &str) -> Result<Option<String>, DataError> {
        let job = job.to_owned();
        self.with_store(move |s, dir| {
            // Only the logs of recorded jobs: the name picks a file through `slug`, never a path.
            if !s.pipeline_jobs(id)?.iter().any(|j| j.name == job) {
                return Ok(None);
            }
            let path = crate::ci::log_path(dir, id, &job);
            let Ok(bytes) = std::fs::read(&path) else {
                return Ok(None);
            };
            let from = bytes.len().saturating_sub(LOG_TAIL_BYTES);
            let text = String::from_utf8_lossy(&bytes[from..]).into_owned();
            Ok(Some(if from > 0 {
                format!("… (the first {from} bytes are left out; `kiln ci logs {id}` prints all)\n{text}")
            } else {
                text
            }))
        })
        .await
    }

    async fn annotations(&self, range: TimeRange) -> Result<Vec<Annotation>, DataError> {
        self.with_store(move |s, _| {
            let overlaps = |start: i64, end: Option<i64>| {
                start <= range.end && end.unwrap_or(i64::MAX) >= range.start
            };
            let mut out = Vec::new();
            for d in s.deploys(None, 1000)? {
                let Some(start) = millis(&d.deploy.started_at) else {
                    continue;
                };
                let end = millis(&d.finished_at);
                if !overlaps(start, end) {
                    continue;
                }
                let from = d.deploy.from_release.as_deref().map_or("none", short);
                out.push(Annotation {
                    kind: AnnotationKind::Deploy,
                    time_ms: start,
                    end_ms: end,
                    service: Some(kiln_providers::supervisor_name(
                        &crate::deploys::service_address(&d.deploy.service),
                    )),
                    title: format!(
                        "{}: {from} → {} ({}, {})",
                        d.deploy.service,
                        short(&d.deploy.to_release),
                        d.deploy.strategy,
                        d.deploy.trigger
                    ),
                    result: d.deploy.result,
                });
            }
            for r in s.pipeline_runs(1000)? {
                let Some(start) = millis(&r.started_at) else {
                    continue;
                };
                let end = r.finished_at.as_deref().and_then(millis);
                if !overlaps(start, end) {
                    continue;
                }
                out.push(Annotation {
                    kind: AnnotationKind::Run,
                    time_ms: start,
                    end_ms: end,
                    service: None,
                    title: format!(
                        "{} #{} at {}",
                        r.workflow,
                        r.id,
                        r.commit.get(..8).unwrap_or(&r.commit)
                    ),
                    result: r.status,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn incidents(
        &self,
        open_only: bool,
        limit: usize,
    ) -> Result<Vec<IncidentSummary>, DataError> {
        let records = self
            .with_store(move |s, _| Ok(s.incidents(open_only, limit)?))
            .await?;
        records
            .iter()
            .map(|r| {
                crate::incidents::from_record(r)
                    .map(|i| incident_summary(&i))
                    .map_err(DataError::Internal)
            })
            .collect()
    }

    async fn incident(&self, id: i64) -> Result<Option<IncidentDetail>, DataError> {
        let Some(record) = self.with_store(move |s, _| Ok(s.incident(id)?)).await? else {
            return Ok(None);
        };
        crate::incidents::from_record(&record)
            .map(|i| Some(incident_detail(&i)))
            .map_err(DataError::Internal)
    }

    async fn alerts(&self) -> Result<Vec<AlertView>, DataError> {
        let Some(handle) = &self.alerts else {
            return Err(DataError::Unavailable(
                "this control plane evaluates no alerts: it records no metrics".into(),
            ));
        };
        let statuses = handle
            .statuses()
            .await
            .ok_or_else(|| DataError::Unavailable("the alert evaluator has stopped".into()))?;
        Ok(statuses.into_iter().map(alert_view).collect())
    }

    async fn runbook(&self, name: &str, runs: usize) -> Result<Option<RunbookDoc>, DataError> {
        let Some(handle) = &self.runbooks else {
            return Err(DataError::Unavailable(
                "this control plane runs no runbooks".into(),
            ));
        };
        let description = handle
            .description(name)
            .await
            .ok_or_else(|| DataError::Unavailable("the runbook actor has stopped".into()))?
            .map_err(DataError::Internal)?;
        let Some(description) = description else {
            return Ok(None);
        };
        let owned = name.to_owned();
        let limit = u32::try_from(runs).unwrap_or(u32::MAX);
        let runs = self
            .with_store(move |s, _| Ok(s.runbook_runs_of(&owned, limit)?))
            .await?;
        Ok(Some(RunbookDoc {
            name: name.to_owned(),
            description,
            runs: runs.into_iter().map(runbook_run_view).collect(),
        }))
    }

    async fn dora(&self, since_text: &str, service: Option<&str>) -> Result<DoraView, DataError> {
        let until = jiff::Timestamp::from_millisecond(self.now_ms()).map_err(internal)?;
        let since = crate::dora::window_start(since_text, until)
            .map_err(|why| DataError::BadRequest(format!("since: {why}")))?;
        let address = service.map(crate::deploys::service_address);
        let facts = self
            .with_store(move |s, dir| crate::dora::Facts::read(s, dir, address.as_deref()))
            .await?;
        Ok(dora_view(&facts, since_text, service, since, until))
    }

    fn now_ms(&self) -> i64 {
        crate::metrics::now_ms()
    }
}

/// `kiln dash`: prints the dashboard's address (and opens it with `--open`).
pub async fn command(dir: &std::path::Path, open: bool) -> Result<(), Failure> {
    let stream = crate::client::connect(&crate::daemon::Paths::new(dir).socket)
        .await
        .ok_or_else(|| {
            Failure::State(format!(
                "kiln is not running for {}; `kiln up -d` starts it (with the dashboard)",
                dir.display()
            ))
        })?;
    let (_, status) = crate::client::request_json(stream, "GET", "/v1/status", None).await?;
    let Some(address) = status["dash"].as_str() else {
        return Err(Failure::State(
            "this control plane serves no dashboard (it was started by an older kiln)".into(),
        ));
    };
    let url = format!("http://{address}/");
    if open && opened(&url).await {
        println!("opened {url}");
    } else {
        println!("{url}");
    }
    Ok(())
}

/// Tries `xdg-open` for at most a few seconds.
async fn opened(url: &str) -> bool {
    let child = tokio::process::Command::new("xdg-open")
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), child.wait()).await,
        Ok(Ok(status)) if status.success()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_become_series_without_non_finite_points() {
        let labels = kiln_metrics::Labels::new([("route", "routes.a")]);
        let matrix = Value::Matrix(vec![kiln_metrics::Series {
            labels: labels.clone(),
            samples: vec![
                kiln_metrics::Sample { t: 1, v: 1.0 },
                kiln_metrics::Sample { t: 2, v: f64::NAN },
                kiln_metrics::Sample { t: 3, v: 3.0 },
            ],
        }]);
        let series = series_of(matrix).unwrap();
        assert_eq!(series[0].points, [(1, 1.0), (3, 3.0)]);
        assert_eq!(series[0].labels["route"], "routes.a");
        let scalar = series_of(Value::Scalar { t: 5, v: 2.0 }).unwrap();
        assert_eq!(scalar[0].points, [(5, 2.0)]);
        assert!(
            series_of(Value::String {
                t: 0,
                v: "x".into()
            })
            .is_err()
        );
    }

    #[test]
    fn releases_are_shortened_to_eight_hex_digits() {
        assert_eq!(short("sha256:0123456789abcdef"), "01234567");
        assert_eq!(short("abc"), "abc");
    }

    /// A source over a scratch stack directory with a recorded run, its log, a deploy and
    /// some events.
    fn recorded(dir: &std::path::Path) -> Source {
        let mut store = ops::open_store(dir).unwrap();
        let run = store
            .begin_pipeline_run(&kiln_state::NewPipelineRun {
                workflow: "ci".into(),
                workflow_path: ".github/workflows/ci.yml".into(),
                event: "push".into(),
                rev: "HEAD".into(),
                commit: "0123456789abcdef".into(),
                pid: std::process::id(),
            })
            .unwrap();
        store
            .record_pipeline_job(
                run,
                &kiln_state::PipelineJob {
                    job_id: "test".into(),
                    name: "test (api)".into(),
                    status: "success".into(),
                    started_at: "2027-01-15T08:00:00Z".into(),
                    finished_at: "2027-01-15T08:00:02Z".into(),
                    duration_ms: 2000,
                    outputs: serde_json::json!({}),
                    summary: String::new(),
                    annotations: serde_json::json!([{
                        "level": "error",
                        "message": "expected 200",
                        "title": null,
                        "location": { "file": "api/test.js", "line": 9, "end_line": null, "col": null, "end_column": null },
                    }]),
                    steps: vec![kiln_state::PipelineStep {
                        name: "npm test".into(),
                        step_id: None,
                        outcome: "success".into(),
                        conclusion: "success".into(),
                        exit_code: Some(0),
                        started_at: "2027-01-15T08:00:00Z".into(),
                        finished_at: "2027-01-15T08:00:02Z".into(),
                        duration_ms: 2000,
                    }],
                },
            )
            .unwrap();
        store
            .finish_pipeline_run(run, "success", &serde_json::json!({}))
            .unwrap();
        let log = crate::ci::log_path(dir, run, "test (api)");
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::write(&log, "ok 1 - the api answers\ntoken: ***\n").unwrap();
        store
            .record_deploy(&kiln_state::NewDeploy {
                service: "services.api".into(),
                from_release: Some("sha256:aaaaaaaaaaaa".into()),
                to_release: "sha256:bbbbbbbbbbbb".into(),
                strategy: "rolling".into(),
                trigger: "apply".into(),
                user: "test".into(),
                started_at: jiff::Timestamp::now().to_string(),
                duration_ms: 10,
                result: "succeeded".into(),
                detail: serde_json::Value::Null,
            })
            .unwrap();
        for kind in [
            "instance.started",
            "deploy.succeeded",
            "instance.ready",
            "instances.x",
        ] {
            store
                .append_event(&kiln_state::NewEvent {
                    kind: kind.into(),
                    address: Some("services.api".into()),
                    serial: None,
                    message: kind.into(),
                    data: serde_json::Value::Null,
                })
                .unwrap();
        }
        let (supervisor, _events) = kiln_supervisor::Supervisor::start(
            kiln_supervisor::SupervisorConfig::new(dir.join(".kiln/services")),
        )
        .unwrap();
        Source {
            dir: dir.to_path_buf(),
            stack: "shop".into(),
            supervisor,
            metrics: crate::metrics::Api {
                store: None,
                scrapes: Arc::default(),
                own: Arc::default(),
                supervisor: None,
                ingress: None,
                limits: kiln_metrics::query::Limits::default(),
            },
            alerts: None,
            runbooks: None,
        }
    }

    #[tokio::test]
    async fn runs_logs_deploys_and_events_come_from_the_records() {
        use kiln_api::DashboardData as _;
        let dir = tempfile::tempdir().unwrap();
        let source = recorded(dir.path());
        let runs = source.runs(10).await.unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(
            (runs[0].workflow.as_str(), runs[0].status.as_str()),
            ("ci", "success")
        );
        assert!(runs[0].duration_ms.is_some());
        let run = source.run(runs[0].id).await.unwrap().unwrap();
        assert_eq!(run.jobs[0].name, "test (api)");
        assert_eq!(run.jobs[0].steps[0].exit_code, Some(0));
        assert_eq!(
            run.jobs[0].annotations,
            [AnnotationView {
                level: "error".into(),
                text: "api/test.js:9: expected 200".into(),
            }]
        );
        assert!(source.run(99).await.unwrap().is_none());
        let log = source
            .run_log(runs[0].id, "test (api)")
            .await
            .unwrap()
            .unwrap();
        assert!(log.contains("ok 1 - the api answers"), "{log}");
        // Only recorded jobs' logs: a name is never a path.
        assert!(
            source
                .run_log(runs[0].id, "../../kiln.yaml")
                .await
                .unwrap()
                .is_none()
        );
        assert!(source.run_log(99, "test (api)").await.unwrap().is_none());

        let now = crate::metrics::now_ms();
        let marks = source
            .annotations(TimeRange {
                start: now - 60_000,
                end: now + 60_000,
            })
            .await
            .unwrap();
        let deploy = marks
            .iter()
            .find(|a| a.kind == AnnotationKind::Deploy)
            .unwrap();
        assert_eq!(deploy.service.as_deref(), Some("api"));
        assert_eq!(
            deploy.title,
            "services.api: aaaaaaaa → bbbbbbbb (rolling, apply)"
        );
        assert_eq!(deploy.result, "succeeded");
        let long_ago = source
            .annotations(TimeRange {
                start: 0,
                end: 1000,
            })
            .await
            .unwrap();
        assert!(long_ago.iter().all(|a| a.kind != AnnotationKind::Deploy));

        let newest = source
            .events(EventFilter {
                kind: None,
                limit: 2,
            })
            .await
            .unwrap();
        let kinds: Vec<&str> = newest.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["instances.x", "instance.ready"]);
        let instance = source
            .events(EventFilter {
                kind: Some("instance".into()),
                limit: 10,
            })
            .await
            .unwrap();
        let kinds: Vec<&str> = instance.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["instance.ready", "instance.started"]);

        let snapshot = source.snapshot().await.unwrap();
        assert_eq!(snapshot.stack, "shop");
        let unavailable = source.query("up", now).await.unwrap_err();
        assert!(matches!(unavailable, DataError::Unavailable(_)));
    }

    #[tokio::test]
    async fn incidents_come_from_the_store_with_their_figures_and_timeline() {
        use kiln_api::DashboardData as _;
        let dir = tempfile::tempdir().unwrap();
        let source = recorded(dir.path());
        let t0 = 1_795_000_000_000;
        let mut store = ops::open_store(dir.path()).unwrap();
        let mut first = Incident::open("api", "f1", "api-down", t0, "api-down fired");
        first.acknowledge(t0 + 75_000, "ann@laptop").unwrap();
        first.note(t0 + 80_000, "ann@laptop", "rolling back");
        first.alert_resolved("f1", t0 + 200_000, "api-down resolved");
        first
            .resolve(t0 + 300_000, "ann@laptop", Some("rolled back"))
            .unwrap();
        let first_id = store
            .save_incident(&crate::incidents::to_record(&first))
            .unwrap();
        let second = Incident::open("web", "f2", "web-down", t0 + 400_000, "web-down fired");
        let second_id = store
            .save_incident(&crate::incidents::to_record(&second))
            .unwrap();

        let open = source.incidents(true, 10).await.unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].id, second_id);
        assert_eq!(open[0].state, "open");
        assert_eq!(open[0].severity, "page");
        assert_eq!(open[0].time_to_acknowledge_ms, None);
        let all = source.incidents(false, 10).await.unwrap();
        let ids: Vec<i64> = all.iter().map(|i| i.id).collect();
        assert_eq!(ids, [second_id, first_id]);

        let detail = source.incident(first_id).await.unwrap().unwrap();
        assert_eq!(detail.summary.title, "api-down on api");
        assert_eq!(detail.summary.state, "resolved");
        assert_eq!(detail.summary.detected_ms, t0);
        assert_eq!(detail.summary.time_to_acknowledge_ms, Some(75_000));
        assert_eq!(detail.summary.time_to_mitigate_ms, Some(200_000));
        assert_eq!(detail.summary.time_to_restore_ms, Some(300_000));
        let milestones: Vec<(&str, Option<&str>)> = detail
            .milestones
            .iter()
            .map(|m| (m.name.as_str(), m.actor.as_deref()))
            .collect();
        assert_eq!(
            milestones,
            [
                ("detected", Some("kiln")),
                ("acknowledged", Some("ann@laptop")),
                ("mitigated", Some("kiln")),
                ("resolved", Some("ann@laptop")),
            ]
        );
        assert_eq!(detail.alerts[0].name, "api-down");
        assert_eq!(detail.alerts[0].resolved_ms, Some(t0 + 200_000));
        let kinds: Vec<&str> = detail.timeline.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "alert_fired",
                "acknowledged",
                "note",
                "alert_resolved",
                "mitigated",
                "resolved"
            ]
        );
        assert_eq!(detail.timeline[2].text, "rolling back");
        assert!(source.incident(999).await.unwrap().is_none());

        // Without an evaluator or a runbook actor, those parts say so rather than show nothing.
        assert!(matches!(
            source.alerts().await.unwrap_err(),
            DataError::Unavailable(_)
        ));
        assert!(matches!(
            source.runbook("x", 5).await.unwrap_err(),
            DataError::Unavailable(_)
        ));
    }

    #[test]
    fn an_alert_says_why_it_is_muted_and_drops_a_value_that_is_no_number() {
        let status =
            |silenced_by: Vec<String>, inhibited, maintenance| crate::alerts::AlertStatus {
                name: "api-down".into(),
                phase: kiln_alerts::Phase::Firing,
                since: 2,
                active_at: 1,
                value: f64::NAN,
                labels: [("service".to_owned(), "api".to_owned())].into(),
                annotations: Default::default(),
                fingerprint: "f".into(),
                runbook: Some("recover".into()),
                silenced_by,
                inhibited,
                maintenance,
            };
        let view = alert_view(status(vec!["s1".into(), "s2".into()], true, true));
        assert_eq!(view.muted.as_deref(), Some("silenced by s1, s2"));
        assert_eq!(view.value, None);
        assert_eq!(view.state, "firing");
        assert_eq!(view.runbook.as_deref(), Some("recover"));
        assert_eq!(view.labels["service"], "api");
        let view = alert_view(status(Vec::new(), true, true));
        assert_eq!(view.muted.as_deref(), Some("inhibited"));
        let view = alert_view(status(Vec::new(), false, true));
        assert_eq!(view.muted.as_deref(), Some("maintenance window"));
        assert_eq!(alert_view(status(Vec::new(), false, false)).muted, None);
    }

    #[tokio::test]
    async fn only_loopback_is_served() {
        let refused = bind("0.0.0.0:0".parse().unwrap()).await.unwrap_err();
        assert!(
            refused.message().contains("only loopback"),
            "{}",
            refused.message()
        );
        assert!(bind("127.0.0.1:0".parse().unwrap()).await.is_ok());
    }
}
