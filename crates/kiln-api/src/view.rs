//! The dashboard's view types: what crosses the [`DashboardData`](crate::DashboardData) trait
//! and what the JSON endpoints answer. Times are unix milliseconds unless named otherwise;
//! stored timestamps (events, runs) stay the RFC 3339 strings the state store keeps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The stack and its services, as the control plane sees them now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The stack's name.
    pub stack: String,
    /// Every recorded service, by name.
    pub services: Vec<ServiceState>,
}

/// One service: its instances (all versions) and the routes that send traffic to it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceState {
    /// `api`.
    pub name: String,
    /// Instances of every set (version) of the service.
    pub instances: Vec<InstanceView>,
    /// Routes whose traffic goes to this service.
    pub routes: Vec<RouteView>,
}

/// One running (or restarting) instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    /// `api@3f2a1c9e/0`.
    pub id: String,
    /// `starting`, `running`, `ready`, `unhealthy`, `crash-looping`, `stopping`, `stopped`,
    /// `failed`.
    pub state: String,
    /// The last probe verdict in words.
    pub health: String,
    /// Restarts since the instance was created.
    pub restarts: u32,
    /// Seconds since the process started.
    pub uptime_seconds: Option<u64>,
    /// Resident memory of its process group.
    pub rss_bytes: Option<u64>,
    /// The release it runs (`sha256:...`), empty without one.
    pub release: String,
}

/// A route of the ingress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteView {
    /// `routes.shop-localhost-api`: the `route` label of the ingress's series.
    pub address: String,
    /// Host pattern.
    pub host: String,
    /// Path prefix.
    pub path: String,
}

/// One series of a query result. Points with a value that is not finite (a ratio over no
/// traffic) are left out: JSON has no NaN, and a chart shows a gap there.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// The series' labels.
    pub labels: BTreeMap<String, String>,
    /// `[time ms, value]`, oldest first.
    pub points: Vec<(i64, f64)>,
}

/// A recorded event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    /// Increasing id.
    pub id: i64,
    /// RFC 3339 UTC.
    pub time: String,
    /// Dotted kind (`instance.ready`, `deploy.finished`).
    pub kind: String,
    /// The resource concerned, if any.
    pub address: Option<String>,
    /// A sentence.
    pub message: String,
}

/// Which events to read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventFilter {
    /// Only kinds equal to this or starting with it followed by a dot (`instance` matches
    /// `instance.ready`).
    pub kind: Option<String>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// A recorded pipeline run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run's number.
    pub id: u64,
    /// The workflow's name.
    pub workflow: String,
    /// The triggering event.
    pub event: String,
    /// The commit it ran at.
    pub commit: String,
    /// `running`, `success`, `failure`, `cancelled`, `interrupted`.
    pub status: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339, none while running.
    pub finished_at: Option<String>,
    /// Wall time, once finished.
    pub duration_ms: Option<u64>,
}

/// One run with its jobs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunDetail {
    /// The run.
    pub run: RunSummary,
    /// Why the run failed before its jobs, if it did.
    pub error: Option<String>,
    /// Its jobs, in finishing order.
    pub jobs: Vec<JobView>,
}

/// One job of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    /// The job id in the workflow.
    pub id: String,
    /// Its display name (`test (api)`); also the key of its log.
    pub name: String,
    /// How it ended.
    pub status: String,
    /// Wall time.
    pub duration_ms: u64,
    /// Its steps.
    pub steps: Vec<StepView>,
    /// Its `::error::`/`::warning::`/`::notice::` annotations.
    #[serde(default)]
    pub annotations: Vec<AnnotationView>,
}

/// One annotation of a job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnnotationView {
    /// `error`, `warning` or `notice`.
    pub level: String,
    /// `src/app.js:3:7: Title: message`.
    pub text: String,
}

/// One step of a job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepView {
    /// Its name.
    pub name: String,
    /// `success`, `failure`, `skipped`, `cancelled`.
    pub conclusion: String,
    /// Wall time.
    pub duration_ms: u64,
    /// The process's exit code, for `run:` steps.
    pub exit_code: Option<i32>,
}

/// What an annotation marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnnotationKind {
    /// A deploy of a service.
    Deploy,
    /// A pipeline run.
    Run,
}

/// A moment worth marking on a chart: a deploy or a pipeline run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    /// What it is.
    pub kind: AnnotationKind,
    /// When it started (ms).
    pub time_ms: i64,
    /// When it ended (ms), if it has.
    pub end_ms: Option<i64>,
    /// The service deployed (deploys only).
    pub service: Option<String>,
    /// One line: `api: 3f2a1c9e → 9c1d0b2e (rolling)`, `ci #4 at 1a2b3c4d`.
    pub title: String,
    /// How it ended: `succeeded`, `rolled_back`, `success`, `failure`, ...
    pub result: String,
}

/// A time range (ms, inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRange {
    /// Start (ms).
    pub start: i64,
    /// End (ms).
    pub end: i64,
}

/// An incident, as the incidents page lists it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IncidentSummary {
    /// Its number.
    pub id: i64,
    /// The service it concerns.
    pub service: String,
    /// One line: the alert that opened it.
    pub title: String,
    /// `open`, `acknowledged`, `mitigated`, `resolved`.
    pub state: String,
    /// The severity of the alerts that open incidents (`page`).
    pub severity: String,
    /// When it was detected (ms).
    pub detected_ms: i64,
    /// Time to acknowledge (ms), once acknowledged.
    pub time_to_acknowledge_ms: Option<i64>,
    /// Time to mitigate (ms), once mitigated.
    pub time_to_mitigate_ms: Option<i64>,
    /// Time to restore (ms), once resolved.
    pub time_to_restore_ms: Option<i64>,
}

/// One milestone of an incident.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MilestoneView {
    /// `detected`, `acknowledged`, `mitigated`, `resolved`.
    pub name: String,
    /// When (ms); none while not reached.
    pub at_ms: Option<i64>,
    /// Who (`kiln`, `user@host`); none while not reached.
    pub actor: Option<String>,
}

/// An alert that took part in an incident.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IncidentAlertView {
    /// The alert's name.
    pub name: String,
    /// When it (last) fired (ms).
    pub fired_ms: i64,
    /// When it resolved (ms); none while it fires.
    pub resolved_ms: Option<i64>,
    /// How many times it fired during the incident.
    pub firings: u32,
}

/// One entry of an incident's timeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelineView {
    /// When (ms).
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// `alert_fired`, `alert_resolved`, `runbook`, `deploy`, `rollback`, `maintenance`,
    /// `acknowledged`, `note`, `mitigated`, `reopened`, `resolved`.
    pub kind: String,
    /// What happened.
    pub text: String,
}

/// One incident with everything `kiln incident show` prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IncidentDetail {
    /// The incident.
    #[serde(flatten)]
    pub summary: IncidentSummary,
    /// Detected, acknowledged, mitigated, resolved, in that order.
    pub milestones: Vec<MilestoneView>,
    /// Its alerts.
    pub alerts: Vec<IncidentAlertView>,
    /// Everything that happened, oldest first.
    pub timeline: Vec<TimelineView>,
}

/// An alert as the evaluator holds it now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertView {
    /// The rule's name.
    pub name: String,
    /// `inactive`, `pending`, `firing`, `resolved`.
    pub state: String,
    /// When it entered that state (ms).
    pub since_ms: i64,
    /// When it first became active (ms).
    pub active_at_ms: i64,
    /// The latest value of its expression; none when not a number.
    pub value: Option<f64>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its rendered annotations (`summary`, `description`, ...).
    pub annotations: BTreeMap<String, String>,
    /// The runbook its rule names.
    pub runbook: Option<String>,
    /// Why it is not notified (`silenced by ...`, `inhibited`, `maintenance window`), if it
    /// is not.
    pub muted: Option<String>,
}

/// A runbook's documentation and its latest runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunbookDoc {
    /// Its name.
    pub name: String,
    /// Its `description:`, Markdown as written.
    pub description: String,
    /// Its latest runs, newest first.
    pub runs: Vec<RunbookRunView>,
}

/// One recorded run of a runbook.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunbookRunView {
    /// Its id.
    pub id: String,
    /// `running`, `awaiting_approval`, `succeeded`, `failed`, `aborted`, `refused`.
    pub status: String,
    /// `manual` or `alert`.
    pub trigger: String,
    /// Who or which alert.
    pub triggered_by: String,
    /// What it acted on.
    pub target: String,
    /// Nothing was changed.
    pub dry_run: bool,
    /// Why it ended as it did.
    pub detail: String,
    /// When it started (ms).
    pub started_ms: i64,
    /// When it ended (ms).
    pub finished_ms: Option<i64>,
}

/// `/api/dora`: the four DORA metrics over a window, with their trend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DoraView {
    /// The service measured; none: every service.
    pub service: Option<String>,
    /// The window as asked (`30d`).
    pub since: String,
    /// Where the window starts (ms).
    pub start_ms: i64,
    /// Where it ends: now (ms).
    pub end_ms: i64,
    /// Changes attempted in the window.
    pub changes: usize,
    /// Changes deployed successfully.
    pub deployments: usize,
    /// Changes that failed.
    pub failed_changes: usize,
    /// The four figures over the whole window, in the order deployment frequency, lead time,
    /// change failure rate, recovery time.
    pub metrics: Vec<DoraMetric>,
    /// The width of the trend's buckets: `day` or `week`.
    pub bucket: String,
    /// The figures per bucket, oldest first.
    pub trend: Vec<DoraBucket>,
}

/// One DORA figure with its level.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DoraMetric {
    /// `deployment_frequency`, `lead_time`, `change_failure_rate`, `recovery_time`.
    pub key: String,
    /// What a reader calls it.
    pub title: String,
    /// `per_day`, `seconds` or `ratio`.
    pub unit: String,
    /// The figure; none where the records hold nothing to measure.
    pub value: Option<f64>,
    /// `elite`, `high`, `medium` or `low` (DORA 2024); none without a figure.
    pub level: Option<String>,
    /// What each level asks.
    pub thresholds: String,
}

/// The four figures over one bucket of the trend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DoraBucket {
    /// Where the bucket starts (ms).
    pub start_ms: i64,
    /// Changes attempted in it.
    pub changes: usize,
    /// The figures, in [`DoraView::metrics`]' order; none where there is nothing to measure.
    pub values: Vec<Option<f64>>,
}
