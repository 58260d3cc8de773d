//! Incidents in the control plane: one actor owns every open incident (the model is
//! `kiln_alerts::incident`). The alert evaluator tells it each alert transition by message: a
//! paging alert (`severity="page"`) going firing opens an incident for its service (the
//! `service` label; an alert without one is its own "service", by name) or joins the open one;
//! other alerts of that service are written in its timeline. Once a second it reads the event
//! log for what else concerns a service with an open incident (`deploy.*` events, with
//! rollbacks told apart by their trigger, and `runbook.*` events naming a `service` in their
//! data), and resolves mitigated incidents that stayed quiet for
//! `notify.incidents.auto_resolve_after`. Every change is saved to the state store at once,
//! so `kiln incident list|show|report` read the store; `ack`, `note` and `resolve` come here
//! through the API while the control plane runs (one writer), and go to the store directly
//! when it does not.
//!
//! Also the commands: `kiln incident list|show|ack|note|resolve|report`.

mod commands;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use kiln_alerts::LabelSet;
use kiln_alerts::incident::{EntryKind, Incident, IncidentError, IncidentState, KILN};
use kiln_spec::alerting::IncidentPolicy;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

pub use commands::{IncidentCommand, incident};

use crate::metrics::now_ms;
use crate::ops::{self, Event};

/// The `severity` label of the alerts that open incidents.
pub const PAGING_SEVERITY: &str = "page";

/// How many events one pass reads at most (the rest wait for the next pass).
const EVENTS_PER_PASS: usize = 500;
/// How many open incidents are loaded at start at most.
const MAX_OPEN: usize = 10_000;

/// One alert transition, as the evaluator reports it.
#[derive(Debug, Clone)]
pub struct AlertChange {
    /// The alert's fingerprint.
    pub fingerprint: String,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: LabelSet,
    /// Whether it went firing (else: resolved).
    pub firing: bool,
    /// When (ms).
    pub at: i64,
    /// The event's message.
    pub text: String,
    /// Silenced, inhibited or in a maintenance window: a muted page opens no incident.
    pub muted: bool,
}

/// What a person does to an incident.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// `kiln incident ack`.
    Acknowledge,
    /// `kiln incident note`.
    Note {
        /// The note.
        text: String,
    },
    /// `kiln incident resolve`.
    Resolve {
        /// Why, if said.
        note: Option<String>,
    },
}

/// The actor's mailbox.
#[derive(Debug, Clone)]
pub struct IncidentsHandle {
    messages: mpsc::Sender<Msg>,
}

enum Msg {
    Alert(AlertChange),
    Policy(IncidentPolicy),
    Act {
        id: i64,
        actor: String,
        action: Action,
        reply: oneshot::Sender<Result<Incident, ActError>>,
    },
}

/// Why an action was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ActError {
    /// No incident has this number.
    #[error("no incident {0}")]
    Unknown(i64),
    /// The state machine refused it.
    #[error(transparent)]
    Refused(#[from] IncidentError),
    /// The state store failed.
    #[error("{0}")]
    Store(String),
}

struct Actor {
    state: kiln_state::StateHandle,
    policy: IncidentPolicy,
    open: BTreeMap<i64, Incident>,
    cursor: i64,
    announce: std::sync::Arc<dyn Fn(&Event) + Send + Sync>,
    inbox: mpsc::Receiver<Msg>,
}

/// Starts the actor over the stack in `dir`.
pub async fn start(
    dir: &std::path::Path,
    policy: IncidentPolicy,
    announce: std::sync::Arc<dyn Fn(&Event) + Send + Sync>,
) -> Result<IncidentsHandle, ops::Failure> {
    let state = kiln_state::StateHandle::spawn(ops::open_store(dir)?);
    let (records, cursor) = state
        .call(|s| Ok((s.incidents(true, MAX_OPEN)?, s.last_event_id()?)))
        .await
        .map_err(ops::Failure::from)?;
    let mut open = BTreeMap::new();
    for record in records {
        match from_record(&record) {
            Ok(incident) => {
                open.insert(incident.id, incident);
            }
            Err(why) => announce(&Event::Note {
                message: format!("warning: incident {} not followed: {why}", record.id),
            }),
        }
    }
    let (messages, inbox) = mpsc::channel(256);
    let actor = Actor {
        state,
        policy,
        open,
        cursor,
        announce,
        inbox,
    };
    tokio::spawn(actor.run());
    Ok(IncidentsHandle { messages })
}

impl IncidentsHandle {
    /// Reports an alert transition (never waits: a full mailbox drops it with a warning
    /// rather than stall alerting).
    pub fn alert(&self, change: AlertChange) -> bool {
        self.messages.try_send(Msg::Alert(change)).is_ok()
    }

    /// New settings after a reload.
    pub fn policy(&self, policy: IncidentPolicy) {
        let _ = self.messages.try_send(Msg::Policy(policy));
    }

    /// Acknowledges, notes or resolves an incident.
    pub async fn act(&self, id: i64, actor: String, action: Action) -> Result<Incident, ActError> {
        let (reply, answer) = oneshot::channel();
        let gone = || ActError::Store("the incident actor has stopped".into());
        self.messages
            .send(Msg::Act {
                id,
                actor,
                action,
                reply,
            })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

#[derive(Deserialize)]
struct ActBody {
    actor: String,
    #[serde(flatten)]
    action: Action,
}

/// `POST /v1/incidents/{id}`: `{"actor": "...", "action": "acknowledge" | "note" | "resolve", ...}`.
pub fn router(handle: IncidentsHandle) -> Router {
    Router::new()
        .route("/v1/incidents/{id}", post(act))
        .with_state(handle)
}

async fn act(
    State(handle): State<IncidentsHandle>,
    UrlPath(id): UrlPath<i64>,
    axum::Json(body): axum::Json<ActBody>,
) -> Response {
    match handle.act(id, body.actor, body.action).await {
        Ok(incident) => axum::Json(to_record(&incident)).into_response(),
        Err(e) => {
            let code = match e {
                ActError::Unknown(_) => StatusCode::NOT_FOUND,
                ActError::Refused(_) => StatusCode::CONFLICT,
                ActError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            (
                code,
                axum::Json(json!({ "kind": "incident", "message": e.to_string() })),
            )
                .into_response()
        }
    }
}

impl Actor {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.follow_events().await;
                    self.resolve_quiet().await;
                }
                message = self.inbox.recv() => match message {
                    Some(Msg::Alert(change)) => self.alert(change).await,
                    Some(Msg::Policy(policy)) => self.policy = policy,
                    Some(Msg::Act { id, actor, action, reply }) => {
                        let result = self.act(id, &actor, action).await;
                        let _ = reply.send(result);
                    }
                    None => return,
                },
            }
        }
    }

    fn open_for(&mut self, service: &str) -> Option<&mut Incident> {
        self.open.values_mut().find(|i| i.service == service)
    }

    async fn alert(&mut self, change: AlertChange) {
        let service = change
            .labels
            .get("service")
            .cloned()
            .unwrap_or_else(|| change.name.clone());
        let paging = change.labels.get("severity").map(String::as_str) == Some(PAGING_SEVERITY);
        let id = match (paging, change.firing) {
            (true, true) if !change.muted => match self.open_for(&service) {
                Some(incident) => {
                    let _ = incident.alert_fired(
                        &change.fingerprint,
                        &change.name,
                        change.at,
                        &change.text,
                    );
                    incident.id
                }
                None => {
                    let incident = Incident::open(
                        &service,
                        &change.fingerprint,
                        &change.name,
                        change.at,
                        &change.text,
                    );
                    match self.create(incident).await {
                        Some(id) => id,
                        None => return,
                    }
                }
            },
            (true, false) => {
                let Some(incident) = self
                    .open
                    .values_mut()
                    .find(|i| i.alerts.contains_key(&change.fingerprint))
                else {
                    return;
                };
                incident.alert_resolved(&change.fingerprint, change.at, &change.text);
                incident.id
            }
            // A muted page or another alert of the service: for the record only.
            (_, firing) => {
                let kind = if firing {
                    EntryKind::AlertFired
                } else {
                    EntryKind::AlertResolved
                };
                let Some(incident) = self.open_for(&service) else {
                    return;
                };
                incident.record(change.at, KILN, kind, &change.text);
                incident.id
            }
        };
        self.save(id).await;
    }

    async fn create(&mut self, mut incident: Incident) -> Option<i64> {
        let record = to_record(&incident);
        match self.state.call(move |s| s.save_incident(&record)).await {
            Ok(id) => {
                incident.id = id;
                (self.announce)(&Event::Note {
                    message: format!("incident {id} opened: {}", incident.title),
                });
                self.open.insert(id, incident);
                Some(id)
            }
            Err(e) => {
                (self.announce)(&Event::Note {
                    message: format!("warning: an incident could not be recorded: {e}"),
                });
                None
            }
        }
    }

    /// Writes an incident to the store (the whole of it: row and timeline), and forgets it
    /// once resolved.
    async fn save(&mut self, id: i64) -> Option<String> {
        let incident = self.open.get(&id)?;
        let record = to_record(incident);
        let resolved = !incident.is_open();
        let failed = self
            .state
            .call(move |s| s.save_incident(&record))
            .await
            .err()
            .map(|e| e.to_string());
        if let Some(why) = &failed {
            (self.announce)(&Event::Note {
                message: format!("warning: incident {id} not saved: {why}"),
            });
        }
        if resolved {
            self.open.remove(&id);
            (self.announce)(&Event::Note {
                message: format!("incident {id} resolved"),
            });
        }
        failed
    }

    async fn act(&mut self, id: i64, actor: &str, action: Action) -> Result<Incident, ActError> {
        let incident = match self.open.get_mut(&id) {
            Some(incident) => incident,
            // Resolved incidents are not kept here; notes on them go straight to the store.
            None => {
                let mut incident = load(&self.state, id).await?;
                apply(&mut incident, now_ms(), actor, action)?;
                let record = to_record(&incident);
                self.state
                    .call(move |s| s.save_incident(&record))
                    .await
                    .map_err(|e| ActError::Store(e.to_string()))?;
                return Ok(incident);
            }
        };
        apply(incident, now_ms(), actor, action)?;
        let snapshot = incident.clone();
        match self.save(id).await {
            Some(why) => Err(ActError::Store(why)),
            None => Ok(snapshot),
        }
    }

    /// Deploys, rollbacks and runbook steps of services with an open incident.
    async fn follow_events(&mut self) {
        let after = self.cursor;
        let Ok(events) = self
            .state
            .call(move |s| {
                s.events(&kiln_state::EventQuery {
                    after_id: Some(after),
                    address: None,
                    limit: EVENTS_PER_PASS,
                })
            })
            .await
        else {
            return;
        };
        let mut changed = Vec::new();
        for event in &events {
            self.cursor = self.cursor.max(event.id);
            let Some((service, kind, actor)) = concerns(event) else {
                continue;
            };
            let at = event
                .time
                .parse::<jiff::Timestamp>()
                .map_or_else(|_| now_ms(), |t| t.as_millisecond());
            if let Some(incident) = self.open_for(&service)
                && incident.record(at, &actor, kind, &event.message)
            {
                changed.push(incident.id);
            }
        }
        changed.dedup();
        for id in changed {
            self.save(id).await;
        }
    }

    async fn resolve_quiet(&mut self) {
        let now = now_ms();
        let quiet = self.policy.auto_resolve_after_ms;
        let ids: Vec<i64> = self
            .open
            .values_mut()
            .filter_map(|i| i.resolve_if_quiet(now, quiet).then_some(i.id))
            .collect();
        for id in ids {
            self.save(id).await;
        }
    }
}

/// The service, timeline kind and actor of an event that belongs in an incident's timeline.
fn concerns(event: &kiln_state::Event) -> Option<(String, EntryKind, String)> {
    let data_text = |key: &str| event.data.get(key).and_then(|v| v.as_str());
    if event.kind.starts_with("deploy.") {
        let service = event.address.as_deref()?.strip_prefix("services.")?;
        let rollback = event.kind == "deploy.rolled_back"
            || matches!(data_text("trigger"), Some("rollback" | "auto-rollback"));
        let kind = if rollback {
            EntryKind::Rollback
        } else {
            EntryKind::Deploy
        };
        // Automatic deploys and rollbacks are kiln's; `kiln deploy`/`rollback` are the user's.
        let actor = match data_text("trigger") {
            Some("rollback" | "deploy") => data_text("user").unwrap_or(KILN),
            _ => KILN,
        };
        return Some((service.to_owned(), kind, actor.to_owned()));
    }
    if event.kind.starts_with("maintenance.") {
        let actor = data_text("actor").unwrap_or(KILN);
        return Some((
            data_text("service")?.to_owned(),
            EntryKind::Maintenance,
            actor.to_owned(),
        ));
    }
    if event.kind.starts_with("runbook.") {
        let service = data_text("service")?;
        let service = service.strip_prefix("services.").unwrap_or(service);
        let actor = data_text("actor").or(data_text("user")).unwrap_or(KILN);
        return Some((service.to_owned(), EntryKind::Runbook, actor.to_owned()));
    }
    None
}

/// Carries out a person's action on an incident.
fn apply(incident: &mut Incident, now: i64, actor: &str, action: Action) -> Result<(), ActError> {
    match action {
        Action::Acknowledge => incident.acknowledge(now, actor)?,
        Action::Note { text } => incident.note(now, actor, &text),
        Action::Resolve { note } => incident.resolve(now, actor, note.as_deref())?,
    }
    Ok(())
}

async fn load(state: &kiln_state::StateHandle, id: i64) -> Result<Incident, ActError> {
    let record = state
        .call(move |s| s.incident(id))
        .await
        .map_err(|e| ActError::Store(e.to_string()))?
        .ok_or(ActError::Unknown(id))?;
    from_record(&record).map_err(ActError::Store)
}

/// The model as the state store keeps it.
pub fn to_record(incident: &Incident) -> kiln_state::IncidentRecord {
    kiln_state::IncidentRecord {
        id: incident.id,
        service: incident.service.clone(),
        title: incident.title.clone(),
        state: incident.state.as_str().to_owned(),
        detected_at: incident.milestones.detected.at,
        milestones: serde_json::to_value(&incident.milestones).unwrap_or_default(),
        alerts: serde_json::to_value(&incident.alerts).unwrap_or_default(),
        timeline: incident
            .timeline
            .iter()
            .map(|e| kiln_state::TimelineRecord {
                at: e.at,
                actor: e.actor.clone(),
                kind: e.kind.as_str().to_owned(),
                text: e.text.clone(),
            })
            .collect(),
    }
}

/// The model from what the state store kept.
pub fn from_record(record: &kiln_state::IncidentRecord) -> Result<Incident, String> {
    let milestones: kiln_alerts::incident::Milestones =
        serde_json::from_value(record.milestones.clone())
            .map_err(|e| format!("incident {}: milestones: {e}", record.id))?;
    let state = IncidentState::parse(&record.state, milestones.acknowledged.is_some())
        .ok_or_else(|| format!("incident {}: unknown state `{}`", record.id, record.state))?;
    let timeline = record
        .timeline
        .iter()
        .map(|e| {
            Ok(kiln_alerts::incident::TimelineEntry {
                at: e.at,
                actor: e.actor.clone(),
                kind: EntryKind::parse(&e.kind).ok_or_else(|| {
                    format!(
                        "incident {}: unknown timeline entry `{}`",
                        record.id, e.kind
                    )
                })?,
                text: e.text.clone(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Incident {
        id: record.id,
        service: record.service.clone(),
        title: record.title.clone(),
        state,
        milestones,
        alerts: serde_json::from_value(record.alerts.clone())
            .map_err(|e| format!("incident {}: alerts: {e}", record.id))?,
        timeline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, address: Option<&str>, data: serde_json::Value) -> kiln_state::Event {
        kiln_state::Event {
            id: 1,
            time: "2026-11-26T18:00:00Z".into(),
            kind: kind.into(),
            address: address.map(str::to_owned),
            serial: None,
            message: "m".into(),
            data,
        }
    }

    #[test]
    fn deploys_rollbacks_and_runbook_steps_concern_their_service() {
        let deploy = event(
            "deploy.succeeded",
            Some("services.api"),
            json!({ "trigger": "push" }),
        );
        assert_eq!(
            concerns(&deploy),
            Some(("api".to_owned(), EntryKind::Deploy, KILN.to_owned()))
        );
        let rollback = event(
            "deploy.succeeded",
            Some("services.api"),
            json!({ "trigger": "rollback" }),
        );
        assert_eq!(concerns(&rollback).map(|c| c.1), Some(EntryKind::Rollback));
        let auto = event("deploy.rolled_back", Some("services.web"), json!({}));
        assert_eq!(concerns(&auto).map(|c| c.1), Some(EntryKind::Rollback));
        let step = event(
            "runbook.step",
            None,
            json!({ "service": "api", "actor": "ann@laptop" }),
        );
        assert_eq!(
            concerns(&step),
            Some((
                "api".to_owned(),
                EntryKind::Runbook,
                "ann@laptop".to_owned()
            ))
        );
        assert_eq!(concerns(&event("runbook.step", None, json!({}))), None);
        let page = event(
            "maintenance.started",
            Some("routes.shop"),
            json!({ "service": "web", "actor": "runbook pause (run 0190)" }),
        );
        assert_eq!(
            concerns(&page),
            Some((
                "web".to_owned(),
                EntryKind::Maintenance,
                "runbook pause (run 0190)".to_owned()
            ))
        );
        assert_eq!(
            concerns(&event("drift.detected", Some("services.api"), json!({}))),
            None
        );
    }

    #[test]
    fn records_round_trip_through_the_store_form() {
        let mut incident = Incident::open("api", "f", "api-errors", 1_000, "fired");
        incident.id = 3;
        let _ = incident.acknowledge(2_000, "ann@laptop");
        incident.alert_resolved("f", 3_000, "resolved");
        assert_eq!(from_record(&to_record(&incident)), Ok(incident.clone()));
        let mut broken = to_record(&incident);
        broken.state = "sleeping".into();
        assert!(from_record(&broken).is_err());
    }

    fn page(fingerprint: &str, firing: bool, at: i64, muted: bool) -> AlertChange {
        AlertChange {
            fingerprint: fingerprint.into(),
            name: "api-down".into(),
            labels: [("severity", "page"), ("service", "api")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            firing,
            at,
            text: format!("api-down {}", if firing { "firing" } else { "resolved" }),
            muted,
        }
    }

    /// Polls the store until `check` holds for incident `id` (bounded: 10 s).
    async fn until(dir: &std::path::Path, id: i64, check: impl Fn(&Incident) -> bool) -> Incident {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let found = ops::open_store(dir)
                .ok()
                .and_then(|s| s.incident(id).ok().flatten())
                .and_then(|r| from_record(&r).ok());
            if let Some(incident) = found {
                if check(&incident) {
                    return incident;
                }
                assert!(std::time::Instant::now() < deadline, "{incident:#?}");
            }
            assert!(std::time::Instant::now() < deadline, "no incident {id}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn the_actor_opens_follows_mitigates_and_resolves_an_incident() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let quiet = IncidentPolicy {
            auto_resolve_after_ms: 3_600_000,
        };
        let handle = start(dir.path(), quiet, std::sync::Arc::new(|_: &Event| {}))
            .await
            .unwrap_or_else(|e| panic!("{}", e.message()));
        let now = now_ms();
        // A muted page opens nothing; an unmuted one opens incident 1, a second page joins it.
        assert!(handle.alert(page("muted", true, now, true)));
        assert!(handle.alert(page("a", true, now, false)));
        assert!(handle.alert(page("b", true, now + 1, false)));
        until(dir.path(), 1, |i| i.alerts.len() == 2).await;
        let mut store = ops::open_store(dir.path()).unwrap_or_else(|e| panic!("{}", e.message()));
        assert_eq!(store.incidents(false, 10).map(|l| l.len()).ok(), Some(1));
        // A rollback of the service, then a runbook step: both reach the timeline.
        for (kind, address, data) in [
            (
                "deploy.succeeded",
                Some("services.api"),
                json!({ "trigger": "rollback", "user": "ann@laptop" }),
            ),
            (
                "deploy.succeeded",
                Some("services.web"),
                json!({ "trigger": "push" }),
            ),
            ("runbook.step", None, json!({ "service": "api" })),
        ] {
            store
                .append_event(&kiln_state::NewEvent {
                    kind: kind.into(),
                    address: address.map(str::to_owned),
                    serial: None,
                    message: format!("{kind} of {address:?}"),
                    data,
                })
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let followed = until(dir.path(), 1, |i| {
            i.timeline.iter().any(|e| e.kind == EntryKind::Runbook)
        })
        .await;
        let rollback = followed
            .timeline
            .iter()
            .find(|e| e.kind == EntryKind::Rollback);
        assert_eq!(rollback.map(|e| e.actor.as_str()), Some("ann@laptop"));
        assert!(
            !followed
                .timeline
                .iter()
                .any(|e| e.kind == EntryKind::Deploy),
            "web's deploy is not api's business"
        );
        // People act through the handle; a refused action says why.
        let acked = handle.act(1, "bob@host".into(), Action::Acknowledge).await;
        assert_eq!(
            acked.map(|i| i.state).ok(),
            Some(IncidentState::Acknowledged)
        );
        let again = handle.act(1, "bob@host".into(), Action::Acknowledge).await;
        assert!(matches!(again, Err(ActError::Refused(_))), "{again:?}");
        let unknown = handle.act(9, "bob@host".into(), Action::Acknowledge).await;
        assert!(matches!(unknown, Err(ActError::Unknown(9))), "{unknown:?}");
        // Both pages resolve: mitigated; a zero quiet period then resolves it.
        assert!(handle.alert(page("a", false, now + 10, false)));
        assert!(handle.alert(page("b", false, now + 20, false)));
        let mitigated = until(dir.path(), 1, |i| {
            matches!(i.state, IncidentState::Mitigated { .. })
        })
        .await;
        assert_eq!(mitigated.milestones.time_to_mitigate(), Some(20));
        handle.policy(IncidentPolicy {
            auto_resolve_after_ms: 0,
        });
        let resolved = until(dir.path(), 1, |i| i.state == IncidentState::Resolved).await;
        assert_eq!(
            resolved.milestones.resolved.map(|m| m.actor),
            Some(KILN.to_owned())
        );
        // The next page opens a new incident; a note on the resolved one still lands.
        assert!(handle.alert(page("a", true, now_ms(), false)));
        until(dir.path(), 2, |i| i.is_open()).await;
        let noted = handle
            .act(
                1,
                "bob@host".into(),
                Action::Note {
                    text: "review".into(),
                },
            )
            .await;
        assert_eq!(
            noted
                .ok()
                .and_then(|i| i.timeline.last().map(|e| e.text.clone())),
            Some("review".to_owned())
        );
    }
}
