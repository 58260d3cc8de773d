//! Runbooks in the control plane: one actor owns the guards' ledger and the approvals being
//! waited for. Runs start by hand (`POST /v1/runbooks/run`, from `kiln runbook run`) or
//! when the alert evaluator reports an alert with `runbook:` going firing (a message, the
//! alert's labels filling parameters of the same names). The guards decide (kiln-runbooks'
//! `Ledger`); a run refused by the rate limit escalates to the runbook's `escalate:`
//! receiver instead of acting again. Each admitted run is a task that executes the steps
//! through [`ControlActions`] (the controller's restart, scale and apply, processes, HTTP,
//! the metrics store, receivers) and records every run and step in the state store
//! (`runbook_runs`, `runbook_steps`) and as `runbook.*` events carrying the service.
//!
//! Also the commands: `kiln runbook list|run|approve|show|runs` (`runbooks/commands.rs`).

mod actions;
mod commands;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use kiln_runbooks::{Admission, Ledger, Phase, Progress, Request, RunContext};
use kiln_spec::runbooks::{RunbookDecl, Runbooks};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

pub use actions::ControlActions;
pub use commands::{RunbookCommand, runbook};

use crate::metrics::now_ms;
use crate::ops::{self, Event};

/// How far back the guards' ledger is read from the state store at start: runs older than
/// this never count against a guard (windows longer than a day are unusual).
const LEDGER_HORIZON_MS: i64 = 86_400_000;

/// An alert with `runbook:` went firing.
#[derive(Debug, Clone)]
pub struct FiredAlert {
    /// The alert's name.
    pub alert: String,
    /// The runbook it names.
    pub runbook: String,
    /// Its identity.
    pub fingerprint: String,
    /// Its labels (they fill parameters of the same names).
    pub labels: BTreeMap<String, String>,
    /// When this firing became active (ms): with the fingerprint, the occurrence.
    pub active_at: i64,
}

/// A run asked for by hand.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct RunRequest {
    /// The runbook.
    pub name: String,
    /// `--param k=v`.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// `--dry-run`.
    #[serde(default)]
    pub dry_run: bool,
    /// Who asked.
    #[serde(default)]
    pub by: String,
}

/// The actor's mailbox.
#[derive(Clone, Debug)]
pub struct RunbooksHandle {
    messages: mpsc::Sender<Msg>,
}

enum Msg {
    Fired(FiredAlert),
    Run(RunRequest, oneshot::Sender<Result<String, String>>),
    Approve {
        run_id: String,
        by: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    AwaitApproval {
        run_id: String,
        approved: oneshot::Sender<String>,
    },
    Finished {
        run_id: String,
    },
    Describe {
        name: String,
        reply: oneshot::Sender<Result<Option<String>, String>>,
    },
}

impl RunbooksHandle {
    /// Tells the actor an alert with a runbook went firing.
    pub async fn fired(&self, alert: FiredAlert) {
        let _ = self.messages.send(Msg::Fired(alert)).await;
    }

    async fn call<T>(&self, message: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.messages.send(message(reply)).await.ok()?;
        answer.await.ok()
    }

    /// The `description:` of the runbook `name` as of the last apply; none when no runbook
    /// has that name, an error when the stack cannot be loaded.
    pub async fn description(&self, name: &str) -> Option<Result<Option<String>, String>> {
        let name = name.to_owned();
        self.call(|reply| Msg::Describe { name, reply }).await
    }

    /// Waits until `kiln runbook approve RUN_ID`; returns who approved.
    pub async fn approval(&self, run_id: &str) -> Option<String> {
        let run_id = run_id.to_owned();
        self.call(|approved| Msg::AwaitApproval { run_id, approved })
            .await
    }
}

struct Actor {
    dir: PathBuf,
    state: kiln_state::StateHandle,
    runbooks: Arc<Runbooks>,
    services: Vec<String>,
    serial: Option<u64>,
    ledger: Ledger,
    approvals: BTreeMap<String, oneshot::Sender<String>>,
    actions: Arc<ControlActions>,
    announce: Arc<dyn Fn(&Event) + Send + Sync>,
    outbox: mpsc::Sender<Msg>,
}

/// Starts the actor; `actions` carry out the steps.
pub fn start(
    dir: &Path,
    actions: impl FnOnce(RunbooksHandle) -> ControlActions,
    announce: Arc<dyn Fn(&Event) + Send + Sync>,
) -> Result<RunbooksHandle, ops::Failure> {
    let mut store = ops::open_store(dir)?;
    let interrupted = store.interrupt_unfinished_runbook_runs(now_ms())?;
    let since = now_ms() - LEDGER_HORIZON_MS;
    let runs = store.runbook_runs(since, 10_000)?;
    for run in runs.iter().filter(|r| interrupted.contains(&r.id)) {
        record_interrupted(&mut store, run);
    }
    let entries = runs
        .into_iter()
        .filter(|r| !r.dry_run && r.status != "refused")
        .map(|r| kiln_runbooks::guard::Entry {
            run_id: r.id,
            runbook: r.runbook,
            target: r.target,
            key: r.idempotency_key,
            started_at: r.started_at,
            // A run in flight when kiln stopped is over: its task is gone.
            active: false,
        })
        .collect();
    let state = kiln_state::StateHandle::spawn(store);
    let (outbox, mut inbox) = mpsc::channel(64);
    let handle = RunbooksHandle {
        messages: outbox.clone(),
    };
    let mut actor = Actor {
        dir: dir.to_path_buf(),
        state,
        runbooks: Arc::new(Runbooks::new()),
        services: Vec::new(),
        serial: None,
        ledger: Ledger::new(entries),
        approvals: BTreeMap::new(),
        actions: Arc::new(actions(handle.clone())),
        announce,
        outbox,
    };
    tokio::spawn(async move {
        while let Some(message) = inbox.recv().await {
            actor.handle(message).await;
        }
    });
    Ok(handle)
}

/// Says in the event log (where incidents read their timelines) that a run the previous
/// control plane left unfinished is over.
fn record_interrupted(store: &mut kiln_state::Store, run: &kiln_state::RunbookRun) {
    let mut data = json!({ "run_id": run.id, "runbook": run.runbook, "target": run.target });
    if !run.target.starts_with("runbook:") {
        data["service"] = json!(run.target);
    }
    let _ = store.append_event(&kiln_state::NewEvent {
        kind: "runbook.interrupted".into(),
        address: Some(format!("runbooks.{}", run.runbook)),
        serial: None,
        message: format!(
            "runbook {} on {} interrupted: the control plane stopped during the run",
            run.runbook, run.target
        ),
        data,
    });
}

/// `POST /v1/runbooks/run` and `POST /v1/runbooks/runs/{id}/approve`.
pub fn router(handle: RunbooksHandle) -> Router {
    Router::new()
        .route("/v1/runbooks/run", post(run_runbook))
        .route("/v1/runbooks/runs/{id}/approve", post(approve_run))
        .with_state(handle)
}

async fn run_runbook(
    State(handle): State<RunbooksHandle>,
    axum::Json(request): axum::Json<RunRequest>,
) -> Response {
    match handle.call(|reply| Msg::Run(request, reply)).await {
        Some(Ok(run_id)) => axum::Json(json!({ "run_id": run_id })).into_response(),
        Some(Err(message)) => refused(&message),
        None => stopped(),
    }
}

#[derive(Deserialize)]
struct ApproveBody {
    #[serde(default)]
    by: String,
}

async fn approve_run(
    State(handle): State<RunbooksHandle>,
    axum::extract::Path(run_id): axum::extract::Path<String>,
    axum::Json(body): axum::Json<ApproveBody>,
) -> Response {
    let by = body.by;
    match handle
        .call(|reply| Msg::Approve { run_id, by, reply })
        .await
    {
        Some(Ok(())) => axum::Json(json!({ "ok": true })).into_response(),
        Some(Err(message)) => refused(&message),
        None => stopped(),
    }
}

fn refused(message: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({ "ok": false, "message": message })),
    )
        .into_response()
}

fn stopped() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({ "kind": "state", "message": "the runbook actor has stopped" })),
    )
        .into_response()
}

/// Who or what asked for a run.
struct Trigger {
    kind: &'static str,
    by: String,
    labels: BTreeMap<String, String>,
    key: Option<String>,
}

impl Actor {
    async fn handle(&mut self, message: Msg) {
        match message {
            Msg::Fired(alert) => {
                let trigger = Trigger {
                    kind: "alert",
                    by: format!("alerts.{}", alert.alert),
                    key: Some(format!(
                        "{}/{}@{}",
                        alert.runbook, alert.fingerprint, alert.active_at
                    )),
                    labels: alert.labels,
                };
                if let Err(why) = self
                    .begin(&alert.runbook, BTreeMap::new(), false, trigger)
                    .await
                {
                    (self.announce)(&Event::Note {
                        message: format!("runbook {}: {why}", alert.runbook),
                    });
                }
            }
            Msg::Run(request, reply) => {
                let by = if request.by.is_empty() {
                    ops::who()
                } else {
                    request.by
                };
                let trigger = Trigger {
                    kind: "manual",
                    by,
                    labels: BTreeMap::new(),
                    key: None,
                };
                let result = self
                    .begin(&request.name, request.params, request.dry_run, trigger)
                    .await;
                let _ = reply.send(result);
            }
            Msg::AwaitApproval { run_id, approved } => {
                self.approvals.insert(run_id, approved);
            }
            Msg::Approve { run_id, by, reply } => {
                let found = self
                    .approvals
                    .keys()
                    .filter(|id| **id == run_id || (run_id.len() >= 4 && id.starts_with(&run_id)))
                    .cloned()
                    .collect::<Vec<_>>();
                let result = match found.as_slice() {
                    [id] => match self.approvals.remove(id) {
                        Some(waiter) => {
                            let by = if by.is_empty() { ops::who() } else { by };
                            let _ = waiter.send(by);
                            Ok(())
                        }
                        None => Err(format!("run {run_id} is not waiting for an approval")),
                    },
                    [] => Err(format!("no run `{run_id}` is waiting for an approval")),
                    _ => Err(format!(
                        "`{run_id}` names several runs; give more of the id"
                    )),
                };
                let _ = reply.send(result);
            }
            Msg::Finished { run_id } => {
                self.ledger.finished(&run_id);
                self.approvals.remove(&run_id);
            }
            Msg::Describe { name, reply } => {
                let result = self
                    .refresh()
                    .await
                    .map(|()| self.runbooks.get(&name).map(|r| r.description.clone()));
                let _ = reply.send(result);
            }
        }
    }

    /// The runbooks as of the last apply (the files are only read again after one).
    async fn refresh(&mut self) -> Result<(), String> {
        let serial = self.state.call(|s| s.serial()).await.ok();
        if self.serial.is_some() && self.serial == serial {
            return Ok(());
        }
        let stack = match ops::load_stack(&self.dir) {
            Ok(stack) => stack,
            // Files being edited: keep the runbooks of the last good load.
            Err(e) if self.serial.is_some() => {
                (self.announce)(&Event::Note {
                    message: format!("warning: runbooks not reloaded: {}", e.message()),
                });
                return Ok(());
            }
            Err(e) => return Err(e.message().to_owned()),
        };
        self.services = stack
            .resources
            .keys()
            .filter_map(|a| a.strip_prefix("services."))
            .map(str::to_owned)
            .collect();
        self.runbooks = Arc::new(stack.runbooks);
        self.serial = serial;
        Ok(())
    }

    /// Checks the parameters and the guards, records the run, and starts it.
    async fn begin(
        &mut self,
        name: &str,
        given: BTreeMap<String, String>,
        dry_run: bool,
        trigger: Trigger,
    ) -> Result<String, String> {
        self.refresh().await?;
        let runbooks = self.runbooks.clone();
        let Some(decl) = runbooks.get(name) else {
            return Err(format!("no runbook named `{name}`"));
        };
        let params = kiln_runbooks::resolve_params(decl, &given, &trigger.labels, &self.services)
            .map_err(|e| e.to_string())?;
        let target = kiln_runbooks::target_of(decl, &params);
        let request = Request {
            runbook: name.to_owned(),
            target: target.clone(),
            key: trigger.key.clone(),
        };
        let now = now_ms();
        let admission = if dry_run {
            Admission::Admit
        } else {
            self.ledger.admit(&decl.guards, &request, now)
        };
        let run_id = uuid::Uuid::now_v7().to_string();
        let record = kiln_state::RunbookRun {
            id: run_id.clone(),
            runbook: name.to_owned(),
            target: target.clone(),
            trigger: trigger.kind.to_owned(),
            triggered_by: trigger.by.clone(),
            idempotency_key: trigger.key.clone(),
            params: json!(params),
            dry_run,
            status: "running".into(),
            detail: String::new(),
            started_at: now,
            finished_at: None,
        };
        if let Admission::Duplicate { run_id: earlier } = &admission {
            // The same firing again (a reload, a repeated message): nothing to record but
            // the fact.
            self.recorder()
                .event(
                    "runbook.duplicate",
                    name,
                    &target,
                    format!(
                        "runbook {name} on {target}: already run for this occurrence ({earlier})"
                    ),
                    json!({ "run_id": earlier }),
                )
                .await;
            return Err(admission.reason());
        }
        if admission != Admission::Admit {
            let reason = admission.reason();
            let refused = kiln_state::RunbookRun {
                status: "refused".into(),
                detail: reason.clone(),
                finished_at: Some(now),
                ..record
            };
            let _ = self.state.call(move |s| s.add_runbook_run(&refused)).await;
            self.recorder()
                .event(
                    "runbook.refused",
                    name,
                    &target,
                    format!(
                        "runbook {name} on {target} refused by {}: {reason}",
                        trigger.by
                    ),
                    json!({ "run_id": run_id, "admission": admission }),
                )
                .await;
            if matches!(admission, Admission::RateLimited { .. }) {
                self.escalate(decl, &run_id, &target, &reason);
            }
            return Err(reason);
        }
        if !dry_run {
            self.ledger.started(&request, &run_id, now);
        }
        let stored = record.clone();
        let _ = self.state.call(move |s| s.add_runbook_run(&stored)).await;
        self.recorder().event(
            "runbook.started",
            name,
            &target,
            format!(
                "runbook {name} on {target} started by {}{}",
                trigger.by,
                if dry_run { " (dry run)" } else { "" }
            ),
            json!({ "run_id": run_id, "trigger": trigger.kind, "by": trigger.by, "params": params, "dry_run": dry_run }),
        )
        .await;
        let context = RunContext {
            run_id: run_id.clone(),
            runbook: name.to_owned(),
            target,
            dry_run,
        };
        tokio::spawn(run_task(
            runbooks.clone(),
            name.to_owned(),
            params,
            context,
            self.actions.clone(),
            self.recorder(),
            self.outbox.clone(),
        ));
        Ok(run_id)
    }

    /// Tells the runbook's `escalate:` receiver that the guard stopped a run, from a task of
    /// its own: delivery retries with backoff must not hold up the actor.
    fn escalate(&self, decl: &RunbookDecl, run_id: &str, target: &str, reason: &str) {
        let Some(receiver) = decl.guards.escalate.clone() else {
            return;
        };
        let run = RunContext {
            run_id: run_id.to_owned(),
            runbook: decl.name.clone(),
            target: target.to_owned(),
            dry_run: false,
        };
        let message = format!("runbook {} on {target} needs a human: {reason}", decl.name);
        let reason = reason.to_owned();
        let (actions, recorder) = (self.actions.clone(), self.recorder());
        tokio::spawn(async move {
            let result = actions.escalation(&receiver, &message, &run).await;
            let (kind, line) = match &result {
                Ok(_) => (
                    "runbook.escalated",
                    format!(
                        "runbook {} on {} escalated to {receiver}: {reason}",
                        run.runbook, run.target
                    ),
                ),
                Err(why) => (
                    "runbook.escalation_failed",
                    format!(
                        "runbook {} on {}: escalation to {receiver} failed: {why}",
                        run.runbook, run.target
                    ),
                ),
            };
            (recorder.announce)(&Event::Note {
                message: line.clone(),
            });
            recorder
                .event(
                    kind,
                    &run.runbook,
                    &run.target,
                    line,
                    json!({ "run_id": run.run_id, "receiver": receiver }),
                )
                .await;
        });
    }

    fn recorder(&self) -> Recorder {
        Recorder {
            state: self.state.clone(),
            announce: self.announce.clone(),
        }
    }
}

/// Writes a run's audit: its steps and events.
#[derive(Clone)]
struct Recorder {
    state: kiln_state::StateHandle,
    announce: Arc<dyn Fn(&Event) + Send + Sync>,
}

impl Recorder {
    async fn event(
        &self,
        kind: &str,
        runbook: &str,
        target: &str,
        message: String,
        mut data: serde_json::Value,
    ) {
        // Incidents build their timelines per service from events: every runbook event
        // names the service it acts on.
        if let Some(map) = data.as_object_mut() {
            map.insert("runbook".into(), json!(runbook));
            map.insert("target".into(), json!(target));
            if !target.starts_with("runbook:") {
                map.insert("service".into(), json!(target));
            }
        }
        let event = kiln_state::NewEvent {
            kind: kind.to_owned(),
            address: Some(format!("runbooks.{runbook}")),
            serial: None,
            message,
            data,
        };
        let _ = self.state.call(move |s| s.append_event(&event)).await;
    }

    async fn progress(&self, run: &RunContext, progress: Progress) {
        let run_id = run.run_id.clone();
        match progress {
            Progress::StepStarted {
                path,
                name,
                action,
                attempt,
                detail,
            } => {
                let step = kiln_state::RunbookStep {
                    seq: 0,
                    path,
                    name,
                    action,
                    attempt,
                    detail,
                    status: "running".into(),
                    output: String::new(),
                    started_at: now_ms(),
                    finished_at: None,
                };
                let _ = self
                    .state
                    .call(move |s| s.add_runbook_step(&run_id, &step))
                    .await;
            }
            Progress::StepFinished(result) => {
                let (status, output) = match &result.outcome {
                    Ok(out) => ("succeeded", out.clone()),
                    Err(why) => ("failed", why.clone()),
                };
                let (path, stored) = (result.path.clone(), output.clone());
                let _ = self
                    .state
                    .call(move |s| s.finish_runbook_step(&run_id, &path, status, &stored, now_ms()))
                    .await;
                let message = format!(
                    "runbook {} step {} {} (attempt {}) {status}: {output}",
                    run.runbook, result.path, result.name, result.attempt
                );
                (self.announce)(&Event::Note {
                    message: message.clone(),
                });
                self.event(
                    "runbook.step",
                    &run.runbook,
                    &run.target,
                    message,
                    json!({ "run_id": run.run_id, "step": result, "dry_run": run.dry_run }),
                )
                .await;
            }
            Progress::AwaitingApproval { path, message } => {
                let id = run_id.clone();
                let _ = self
                    .state
                    .call(move |s| s.set_runbook_status(&id, "awaiting_approval", &message, None))
                    .await;
                self.event(
                    "runbook.awaiting_approval",
                    &run.runbook,
                    &run.target,
                    format!(
                        "runbook {} step {path} waits for `kiln runbook approve {}`",
                        run.runbook, run.run_id
                    ),
                    json!({ "run_id": run.run_id }),
                )
                .await;
            }
        }
    }
}

async fn run_task(
    runbooks: Arc<Runbooks>,
    name: String,
    params: BTreeMap<String, String>,
    run: RunContext,
    actions: Arc<ControlActions>,
    recorder: Recorder,
    outbox: mpsc::Sender<Msg>,
) {
    let (progress, mut updates) = mpsc::unbounded_channel();
    let writer = {
        let (recorder, run) = (recorder.clone(), run.clone());
        tokio::spawn(async move {
            while let Some(update) = updates.recv().await {
                let starts_step = matches!(update, Progress::StepStarted { .. });
                recorder.progress(&run, update).await;
                if starts_step {
                    // Back to `running` after an approval wait, or at the first step.
                    let id = run.run_id.clone();
                    let _ = recorder
                        .state
                        .call(move |s| s.set_runbook_status(&id, "running", "", None))
                        .await;
                }
            }
        })
    };
    let phase = match runbooks.get(&name) {
        Some(decl) => {
            kiln_runbooks::execute(&runbooks, decl, &params, &run, actions.as_ref(), &progress)
                .await
        }
        None => Phase::Aborted {
            index: 0,
            error: format!("no runbook named `{name}`"),
            fallback: None,
        },
    };
    drop(progress);
    let _ = writer.await;
    let status = phase.status();
    let detail = match &phase {
        Phase::Aborted { index, error, .. } => format!("step {} failed: {error}", index + 1),
        Phase::Finished { failed } if !failed.is_empty() => {
            let steps: Vec<String> = failed.iter().map(|i| (i + 1).to_string()).collect();
            format!("steps {} failed and were let through", steps.join(", "))
        }
        _ => String::new(),
    };
    let (id, stored) = (run.run_id.clone(), detail.clone());
    let _ = recorder
        .state
        .call(move |s| s.set_runbook_status(&id, status, &stored, Some(now_ms())))
        .await;
    let message = format!(
        "runbook {name} on {} {status}{}{}",
        run.target,
        if detail.is_empty() { "" } else { ": " },
        detail
    );
    (recorder.announce)(&Event::Note {
        message: message.clone(),
    });
    recorder
        .event(
            &format!("runbook.{status}"),
            &name,
            &run.target,
            message,
            json!({ "run_id": run.run_id, "dry_run": run.dry_run }),
        )
        .await;
    let _ = outbox.send(Msg::Finished { run_id: run.run_id }).await;
}
