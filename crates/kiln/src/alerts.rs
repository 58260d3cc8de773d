//! Alerting in the control plane: the evaluator actor owns every alert's state. Every
//! `notify.evaluation_interval` (default 5 s) it evaluates the stack's rules against the
//! embedded metrics store, records each state change as an `alert.*` event in the state
//! store, mutes what silences (read from the state store, so `kiln silence` works with or
//! without a running control plane) and inhibit rules mute, and hands the rest to the
//! dispatcher; notifications are delivered by their own tasks with retries (`transport.rs`).
//! Maintenance windows (`notify.maintenance`) mute the alerts of their services like a
//! silence. Each firing or resolved transition is also told to the incident actor
//! (`incidents.rs`), with whether the alert is muted (a muted page opens no incident).
//! After each apply (a new state serial) it reloads the rules from the stack files.
//! Alert instances and the notification log are kept in the state store when they change
//! (`memory.rs`) and taken back on start, so a restart neither re-fires nor re-notifies.
//!
//! Also the commands: `kiln alerts [list]`, `kiln alerts export --format prometheus`,
//! `kiln silence add|list|expire`.

mod commands;
mod memory;
pub(crate) mod transport;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kiln_alerts::{
    Dispatcher, Evaluator, Inhibitor, LabelSet, NotifyAlert, Phase, Querier, Sample, Silence,
    Transition, deliver_with_retries,
};
use kiln_metrics::Store as Metrics;
use kiln_metrics::query::{Engine, Value};
use kiln_spec::alerting::Alerting;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

pub use commands::{AlertsCommand, SilenceCommand, alerts, silence};

use crate::metrics::now_ms;
use crate::ops::{self, Event};

/// Kind of the events recording alert state changes: `alert.pending`, `alert.firing`, ...
const EVENT_PREFIX: &str = "alert.";

/// The evaluator's mailbox.
#[derive(Clone, Debug)]
pub struct AlertsHandle {
    messages: mpsc::Sender<Msg>,
}

enum Msg {
    List(oneshot::Sender<serde_json::Value>),
    Statuses(oneshot::Sender<Vec<AlertStatus>>),
    Delivered {
        receiver: String,
        result: Result<u32, String>,
    },
    /// Record the last evaluation's time and stop.
    Stop(oneshot::Sender<()>),
}

/// One alert as the evaluator holds it, and why it is not notified, if it is not.
#[derive(Debug, Clone)]
pub struct AlertStatus {
    /// The rule's name.
    pub name: String,
    /// Its state.
    pub phase: Phase,
    /// When it entered that state (ms).
    pub since: i64,
    /// When it first became active (ms).
    pub active_at: i64,
    /// The latest value of its element.
    pub value: f64,
    /// Its labels.
    pub labels: LabelSet,
    /// Its rendered annotations.
    pub annotations: LabelSet,
    /// Its identity.
    pub fingerprint: String,
    /// The runbook its rule names.
    pub runbook: Option<String>,
    /// The silences that mute it.
    pub silenced_by: Vec<String>,
    /// A firing alert inhibits it.
    pub inhibited: bool,
    /// Its service is in a maintenance window.
    pub maintenance: bool,
}

/// Queries the embedded store (runbooks' `wait` steps use it too).
pub(crate) struct StoreQuerier(pub(crate) Arc<Metrics>);

impl Querier for StoreQuerier {
    fn query(&self, expr: &str, at_ms: i64) -> Result<Vec<Sample>, String> {
        let labels = |l: &kiln_metrics::Labels| -> LabelSet {
            l.iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect()
        };
        match Engine::new(self.0.as_ref())
            .query(expr, at_ms)
            .map_err(|e| e.to_string())?
        {
            Value::Vector(samples) => Ok(samples
                .iter()
                .map(|s| Sample {
                    labels: labels(&s.labels),
                    value: s.v,
                })
                .collect()),
            Value::Scalar { v, .. } => Ok(vec![Sample {
                labels: LabelSet::new(),
                value: v,
            }]),
            other => Err(format!(
                "the expression gives a {}, not an instant vector",
                other.result_type()
            )),
        }
    }
}

/// Why an alert is not notified.
#[derive(Debug, Clone, Default)]
struct Muted {
    silenced_by: Vec<String>,
    inhibited: bool,
    maintenance: bool,
}

struct Actor {
    dir: PathBuf,
    metrics: Arc<Metrics>,
    state: kiln_state::StateHandle,
    alerting: Alerting,
    evaluator: Option<Evaluator>,
    dispatcher: Dispatcher,
    inhibitor: Inhibitor,
    transport: Arc<transport::Transport>,
    external_url: String,
    announce: Arc<dyn Fn(&Event) + Send + Sync>,
    incidents: Option<crate::incidents::IncidentsHandle>,
    /// Told when an alert with `runbook:` goes firing.
    runbooks: Option<crate::runbooks::RunbooksHandle>,
    inbox: mpsc::Receiver<Msg>,
    outbox: mpsc::Sender<Msg>,
    /// What the state store holds of the alerts and the notification log.
    memory: memory::Memory,
    /// The state serial the rules were loaded at.
    serial: Option<u64>,
    muted: BTreeMap<String, Muted>,
    errors: Vec<(String, String)>,
    evaluations: u64,
    last_evaluation: Option<i64>,
    sent: u64,
    failed: u64,
}

/// Starts the evaluator over the stack in `dir`, with its alerting as loaded at start.
pub fn start(
    dir: &Path,
    metrics: Arc<Metrics>,
    alerting: Alerting,
    external_url: String,
    announce: Arc<dyn Fn(&Event) + Send + Sync>,
    incidents: Option<crate::incidents::IncidentsHandle>,
    runbooks: Option<crate::runbooks::RunbooksHandle>,
) -> Result<AlertsHandle, ops::Failure> {
    let state = kiln_state::StateHandle::spawn(ops::open_store(dir)?);
    let (outbox, inbox) = mpsc::channel(64);
    let mut actor = Actor {
        dir: dir.to_path_buf(),
        metrics,
        state,
        dispatcher: Dispatcher::new(alerting.notify.clone(), Vec::new(), external_url.clone()),
        inhibitor: Inhibitor::default(),
        evaluator: Some(Evaluator::default()),
        alerting: Alerting::default(),
        transport: Arc::new(transport::Transport::new(dir)),
        external_url,
        announce,
        incidents,
        runbooks,
        inbox,
        outbox: outbox.clone(),
        memory: memory::Memory::default(),
        serial: None,
        muted: BTreeMap::new(),
        errors: Vec::new(),
        evaluations: 0,
        last_evaluation: None,
        sent: 0,
        failed: 0,
    };
    actor.configure(alerting);
    tokio::spawn(actor.run());
    Ok(AlertsHandle { messages: outbox })
}

impl AlertsHandle {
    /// The alerts and the evaluator's counters, as `GET /v1/alerts` shows them.
    pub async fn list(&self) -> Option<serde_json::Value> {
        let (reply, answer) = oneshot::channel();
        self.messages.send(Msg::List(reply)).await.ok()?;
        answer.await.ok()
    }

    /// Records when the evaluator last ran (a restart counts its downtime from there) and
    /// stops it. Returns once it has.
    pub async fn stop(&self) {
        let (reply, answer) = oneshot::channel();
        if self.messages.send(Msg::Stop(reply)).await.is_ok() {
            let _ = answer.await;
        }
    }

    /// Every alert the evaluator holds, as values (the dashboard's view).
    pub async fn statuses(&self) -> Option<Vec<AlertStatus>> {
        let (reply, answer) = oneshot::channel();
        self.messages.send(Msg::Statuses(reply)).await.ok()?;
        answer.await.ok()
    }
}

/// `GET /v1/alerts`.
pub fn router(handle: AlertsHandle) -> Router {
    Router::new()
        .route("/v1/alerts", get(list_alerts))
        .with_state(handle)
}

async fn list_alerts(State(handle): State<AlertsHandle>) -> Response {
    match handle.list().await {
        Some(view) => axum::Json(view).into_response(),
        None => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "kind": "state", "message": "the alert evaluator has stopped" })),
        )
            .into_response(),
    }
}

impl Actor {
    fn configure(&mut self, alerting: Alerting) {
        let receivers: Vec<String> = if alerting.notify.receivers.is_empty() {
            alerting.receivers.iter().map(|r| r.name.clone()).collect()
        } else {
            alerting.notify.receivers.clone()
        };
        if alerting.notify != self.alerting.notify || alerting.receivers != self.alerting.receivers
        {
            self.dispatcher
                .reconfigure(alerting.notify.clone(), receivers);
        }
        if alerting.notify.incidents != self.alerting.notify.incidents
            && let Some(incidents) = &self.incidents
        {
            incidents.policy(alerting.notify.incidents.clone());
        }
        self.inhibitor = Inhibitor::new(&alerting.inhibit);
        if let Some(evaluator) = &mut self.evaluator {
            evaluator.set_rules(kiln_alerts::rules(&alerting));
        }
        self.alerting = alerting;
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.alerting.notify.evaluation_interval_ms.max(1_000))
    }

    async fn run(mut self) {
        self.restore().await;
        let mut tick = tokio::time::interval(self.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let before = self.interval();
                    self.reload_after_apply().await;
                    self.evaluate().await;
                    if self.interval() != before {
                        tick = tokio::time::interval(self.interval());
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                }
                message = self.inbox.recv() => match message {
                    Some(Msg::List(reply)) => {
                        let _ = reply.send(self.view());
                    }
                    Some(Msg::Statuses(reply)) => {
                        let _ = reply.send(self.statuses());
                    }
                    Some(Msg::Delivered { receiver, result }) => self.delivered(receiver, result).await,
                    Some(Msg::Stop(reply)) => {
                        if let Some(at) = self.last_evaluation {
                            let _ = self.state.call(move |s| s.set_alerts_evaluated_at(at)).await;
                        }
                        let _ = reply.send(());
                        return;
                    }
                    None => return,
                },
            }
        }
    }

    /// Takes back the alerts and the notification log of the evaluator's last run.
    async fn restore(&mut self) {
        let Some(evaluator) = &mut self.evaluator else {
            return;
        };
        let loaded = match self.state.call(memory::Loaded::read).await {
            Ok(loaded) => loaded,
            Err(e) => {
                (self.announce)(&Event::Note {
                    message: format!("warning: alert state not restored: {e}"),
                });
                return;
            }
        };
        let restored = self
            .memory
            .restore(loaded, evaluator, &mut self.dispatcher, now_ms());
        if restored.alerts > 0 {
            (self.announce)(&Event::Note {
                message: format!(
                    "alerts: restored {} alert(s), {} firing, after {} s down",
                    restored.alerts,
                    restored.firing,
                    restored.downtime_ms.unwrap_or(0) / 1_000
                ),
            });
        }
    }

    /// Writes what changed of the alerts and the notification log.
    async fn persist(&mut self, now: i64) {
        let Some(evaluator) = &self.evaluator else {
            return;
        };
        let Some(changes) = self.memory.changes(evaluator, &self.dispatcher, now) else {
            return;
        };
        match self
            .state
            .call(move |s| changes.write(s).map(|()| changes))
            .await
        {
            Ok(changes) => self.memory.written(changes),
            Err(e) => (self.announce)(&Event::Note {
                message: format!("warning: alert state not saved: {e}"),
            }),
        }
    }

    /// An apply may have changed `alerts:`; the state's serial says one happened.
    async fn reload_after_apply(&mut self) {
        let Ok(serial) = self.state.call(|s| s.serial()).await else {
            return;
        };
        if self.serial == Some(serial) {
            return;
        }
        let first = self.serial.is_none();
        self.serial = Some(serial);
        if first {
            return;
        }
        match ops::load_stack(&self.dir) {
            Ok(stack) => self.configure(stack.alerting),
            Err(e) => (self.announce)(&Event::Note {
                message: format!("warning: alert rules not reloaded: {}", e.message()),
            }),
        }
    }

    async fn evaluate(&mut self) {
        let Some(mut evaluator) = self.evaluator.take() else {
            return;
        };
        let now = now_ms();
        let querier = StoreQuerier(self.metrics.clone());
        let work = tokio::task::spawn_blocking(move || {
            let report = evaluator.evaluate(&querier, now);
            (evaluator, report)
        });
        let Ok((evaluator, report)) = work.await else {
            // The evaluation panicked: start over rather than stop alerting.
            self.evaluator = Some(Evaluator::new(kiln_alerts::rules(&self.alerting)));
            return;
        };
        self.evaluator = Some(evaluator);
        self.evaluations += 1;
        self.last_evaluation = Some(now);
        self.errors = report.errors;
        for transition in &report.transitions {
            self.record(transition).await;
            self.start_runbook(transition).await;
        }
        self.notify(now).await;
        self.persist(now).await;
        self.tell_incidents(&report.transitions);
    }

    fn tell_incidents(&self, transitions: &[Transition]) {
        let Some(incidents) = &self.incidents else {
            return;
        };
        for t in transitions {
            if !matches!(t.to, Phase::Firing | Phase::Resolved) {
                continue;
            }
            let told = incidents.alert(crate::incidents::AlertChange {
                fingerprint: t.fingerprint.clone(),
                name: t.name.clone(),
                labels: t.labels.clone(),
                firing: t.to == Phase::Firing,
                at: t.at,
                text: describe(t),
                muted: self.muted.contains_key(&t.fingerprint),
            });
            if !told {
                (self.announce)(&Event::Note {
                    message: format!("warning: incidents missed alert {} (busy)", t.name),
                });
            }
        }
    }

    async fn record(&self, t: &Transition) {
        let message = describe(t);
        if matches!(t.to, Phase::Firing | Phase::Resolved) {
            (self.announce)(&Event::Note {
                message: message.clone(),
            });
        }
        let event = kiln_state::NewEvent {
            kind: format!("{EVENT_PREFIX}{}", t.to.as_str()),
            address: Some(format!("alerts.{}", t.name)),
            serial: None,
            message,
            data: json!({
                "fingerprint": t.fingerprint,
                "labels": t.labels,
                "from": t.from,
                "to": t.to,
                "value": t.value,
                "at": kiln_alerts::rfc3339(t.at),
            }),
        };
        let _ = self.state.call(move |s| s.append_event(&event)).await;
    }

    /// An alert with `runbook:` that goes firing asks the runbook actor for a run.
    async fn start_runbook(&self, t: &Transition) {
        let (Some(runbooks), Phase::Firing) = (&self.runbooks, t.to) else {
            return;
        };
        let Some(alert) = self
            .evaluator
            .iter()
            .flat_map(Evaluator::alerts)
            .find(|a| a.fingerprint == t.fingerprint)
        else {
            return;
        };
        if let Some(runbook) = &alert.runbook {
            runbooks
                .fired(crate::runbooks::FiredAlert {
                    alert: t.name.clone(),
                    runbook: runbook.clone(),
                    fingerprint: t.fingerprint.clone(),
                    labels: t.labels.clone(),
                    active_at: alert.active_at,
                })
                .await;
        }
    }

    async fn silences(&self, now: i64) -> Vec<Silence> {
        let records = self
            .state
            .call(move |s| s.silences(now, false))
            .await
            .unwrap_or_default();
        records
            .into_iter()
            .map(|r| Silence {
                id: r.id,
                matchers: r.matchers,
                starts_at: r.starts_at,
                ends_at: r.ends_at,
                created_by: r.created_by,
                comment: r.comment,
            })
            .collect()
    }

    async fn notify(&mut self, now: i64) {
        let silences = self.silences(now).await;
        let Some(evaluator) = &self.evaluator else {
            return;
        };
        let firing: Vec<&LabelSet> = evaluator
            .alerts()
            .filter(|a| a.phase == Phase::Firing)
            .map(|a| &a.labels)
            .collect();
        let mut muted = BTreeMap::new();
        let mut outgoing = Vec::new();
        for alert in evaluator.alerts() {
            let why = Muted {
                silenced_by: silences
                    .iter()
                    .filter(|s| s.mutes(&alert.labels, now))
                    .map(|s| s.id.clone())
                    .collect(),
                inhibited: alert.phase == Phase::Firing
                    && self.inhibitor.inhibits(&alert.labels, &firing),
                maintenance: self
                    .alerting
                    .notify
                    .maintenance
                    .iter()
                    .any(|w| w.covers(alert.labels.get("service").map(String::as_str), now)),
            };
            let is_muted = !why.silenced_by.is_empty() || why.inhibited || why.maintenance;
            if is_muted {
                muted.insert(alert.fingerprint.clone(), why);
                continue;
            }
            let url = generator_url(&self.external_url, evaluator, &alert.name);
            outgoing.extend(NotifyAlert::of(alert, url));
        }
        self.muted = muted;
        self.dispatcher.update(outgoing, now);
        for notification in self.dispatcher.flush(now) {
            let Some(receiver) = self
                .alerting
                .receivers
                .iter()
                .find(|r| r.name == notification.receiver)
                .cloned()
            else {
                continue;
            };
            let transport = self.transport.clone();
            let outbox = self.outbox.clone();
            tokio::spawn(async move {
                let result = deliver_with_retries(
                    transport.as_ref(),
                    &receiver,
                    &notification,
                    kiln_alerts::Backoff::default(),
                )
                .await
                .map_err(|e| e.to_string());
                let _ = outbox
                    .send(Msg::Delivered {
                        receiver: receiver.name.clone(),
                        result,
                    })
                    .await;
            });
        }
    }

    async fn delivered(&mut self, receiver: String, result: Result<u32, String>) {
        let (kind, message) = match &result {
            Ok(attempts) => {
                self.sent += 1;
                (
                    "alert.notified",
                    format!("notified {receiver} (attempts: {attempts})"),
                )
            }
            Err(why) => {
                self.failed += 1;
                (
                    "alert.notify_failed",
                    format!("notification to {receiver} failed: {why}"),
                )
            }
        };
        if result.is_err() {
            (self.announce)(&Event::Note {
                message: format!("warning: {message}"),
            });
        }
        let event = kiln_state::NewEvent {
            kind: kind.into(),
            address: Some(format!("receivers.{receiver}")),
            serial: None,
            message,
            data: json!({ "receiver": receiver }),
        };
        let _ = self.state.call(move |s| s.append_event(&event)).await;
    }

    fn statuses(&self) -> Vec<AlertStatus> {
        self.evaluator
            .iter()
            .flat_map(Evaluator::alerts)
            .map(|a| {
                let muted = self.muted.get(&a.fingerprint).cloned().unwrap_or_default();
                AlertStatus {
                    name: a.name.clone(),
                    phase: a.phase,
                    since: a.since,
                    active_at: a.active_at,
                    value: a.value,
                    labels: a.labels.clone(),
                    annotations: a.annotations.clone(),
                    fingerprint: a.fingerprint.clone(),
                    runbook: a.runbook.clone(),
                    silenced_by: muted.silenced_by,
                    inhibited: muted.inhibited,
                    maintenance: muted.maintenance,
                }
            })
            .collect()
    }

    fn view(&self) -> serde_json::Value {
        let alerts: Vec<serde_json::Value> = self
            .statuses()
            .into_iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "state": s.phase,
                    "since": kiln_alerts::rfc3339(s.since),
                    "active_at": kiln_alerts::rfc3339(s.active_at),
                    "value": s.value,
                    "labels": s.labels,
                    "annotations": s.annotations,
                    "fingerprint": s.fingerprint,
                    "runbook": s.runbook,
                    "silenced_by": s.silenced_by,
                    "inhibited": s.inhibited,
                    "maintenance": s.maintenance,
                })
            })
            .collect();
        json!({
            "evaluation_interval_ms": self.alerting.notify.evaluation_interval_ms,
            "evaluations": self.evaluations,
            "last_evaluation": self.last_evaluation.map(kiln_alerts::rfc3339),
            "rules": self.evaluator.as_ref().map_or(0, |e| e.rules().len()),
            "alerts": alerts,
            "errors": self.errors.iter().map(|(alert, error)| json!({ "alert": alert, "error": error })).collect::<Vec<_>>(),
            "notifications": { "sent": self.sent, "failed": self.failed },
        })
    }
}

/// A transition in words, for the event log and incident timelines.
fn describe(t: &Transition) -> String {
    let labels: Vec<String> = t
        .labels
        .iter()
        .filter(|(k, _)| k.as_str() != "alertname")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!(
        "alert {} {{{}}}: {} → {} (value {})",
        t.name,
        labels.join(", "),
        t.from.as_str(),
        t.to.as_str(),
        kiln_alerts::format_value(t.value)
    )
}

/// A link to the rule's expression on the Prometheus API.
fn generator_url(external: &str, evaluator: &Evaluator, name: &str) -> String {
    let expr = evaluator
        .rules()
        .iter()
        .find(|r| r.name == name)
        .map_or("", |r| r.expr.as_str());
    format!(
        "{external}/api/v1/query?query={}",
        crate::commands::percent_encode(expr)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn latency_slo_thresholds_are_the_ingress_buckets() {
        // kiln-spec cannot depend on the ingress; this keeps its copy of the bounds true.
        assert_eq!(
            kiln_spec::alerting::LATENCY_BUCKETS,
            kiln_ingress::LATENCY_BOUNDS
        );
    }
}
