//! Maintenance pages on routes (kamal's `app maintenance` / `app live`): one actor owns which
//! routes are in maintenance, until when, and who put them there. It keeps them in the state
//! store (so a restarted control plane serves the page again until its end, and ends the ones
//! whose end passed while it was down, with one `maintenance.ended` each), hands each page to
//! the route actor (`ingress.rs`), which swaps it into the proxy's table, and takes it off when
//! its time is up. A runbook's `maintenance` step, `kiln maintenance on|off|list` (through
//! `/v1/maintenance`) and `kiln status` all go through it.

pub mod commands;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::ingress::Routes;
use crate::ops::{self, Event, Failure};

/// What starts a maintenance: the route (its name or address) and the page.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartRequest {
    /// `shop`, `routes.shop` or `environments.staging.routes.shop`.
    pub route: String,
    /// How long; `None`: until turned off.
    #[serde(default)]
    pub for_ms: Option<u64>,
    /// The status (default 503).
    #[serde(default)]
    pub status: Option<u16>,
    /// The page's text.
    #[serde(default)]
    pub message: Option<String>,
    /// An explicit `Retry-After` (ms); `None`: the time left.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
    /// Who asks: `user@host`, or the runbook run.
    pub by: String,
}

/// What ends one: the route and who ends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndRequest {
    /// As for [`StartRequest::route`].
    pub route: String,
    /// Who ends it.
    pub by: String,
}

/// A route in maintenance, as the state store keeps it and the API shows it.
pub use kiln_state::MaintenanceRecord as Active;

/// The page as the proxy takes it.
fn page_of(active: &Active) -> kiln_ingress::Maintenance {
    kiln_ingress::Maintenance {
        status: active.status,
        message: active.message.clone(),
        retry_after: active.retry_after_ms.map(Duration::from_millis),
        until: active
            .ends_at_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
    }
}

/// "until 06:52:10 UTC (in 10m)" or "until turned off".
pub fn until_text(active: &Active, now_ms: i64) -> String {
    match active.ends_at_ms {
        Some(end) => format!(
            "until {} (in {})",
            time_of_day(end),
            kiln_spec::units::format_duration(
                u64::try_from(end.saturating_sub(now_ms)).unwrap_or(0) / 1000 * 1000
            )
        ),
        None => "until turned off".to_owned(),
    }
}
/// `HH:MM:SS UTC` of a time in ms.
fn time_of_day(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(
        |_| ms.to_string(),
        |t| t.strftime("%H:%M:%S UTC").to_string(),
    )
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

enum Msg {
    Start(StartRequest, oneshot::Sender<Result<Active, String>>),
    End(EndRequest, oneshot::Sender<Result<Active, String>>),
    List(oneshot::Sender<Vec<Active>>),
}

/// How the rest of the control plane talks to the maintenance actor.
#[derive(Clone, Debug)]
pub struct MaintenanceHandle {
    messages: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("maintenance message")
    }
}

impl MaintenanceHandle {
    /// Puts a route in maintenance (replacing a page it has).
    pub async fn start(&self, request: StartRequest) -> Result<Active, String> {
        self.ask(|reply| Msg::Start(request, reply)).await?
    }

    /// Ends a route's maintenance.
    pub async fn end(&self, request: EndRequest) -> Result<Active, String> {
        self.ask(|reply| Msg::End(request, reply)).await?
    }

    /// The routes in maintenance.
    pub async fn list(&self) -> Vec<Active> {
        self.ask(Msg::List).await.unwrap_or_default()
    }

    async fn ask<T>(&self, message: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Result<T, String> {
        let (reply, answer) = oneshot::channel();
        let gone = || "the control plane is shutting down".to_owned();
        self.messages
            .send(message(reply))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())
    }
}

/// Reads the pages recorded by an earlier control plane: those still on go back on their
/// routes (before the first apply declares them, so no request slips through); those whose
/// end passed are ended, with their event. Then starts the actor.
pub async fn start(
    dir: &std::path::Path,
    routes: Routes,
    announce: Arc<dyn Fn(&Event) + Send + Sync>,
) -> Result<MaintenanceHandle, Failure> {
    let state = kiln_state::StateHandle::spawn(ops::open_store(dir)?);
    let records = state
        .call(|s| s.maintenance())
        .await
        .map_err(Failure::from)?;
    let mut actor = Actor {
        state,
        routes,
        announce,
        active: BTreeMap::new(),
    };
    let now = now_ms();
    for active in records {
        if active.ends_at_ms.is_some_and(|end| end <= now) {
            actor
                .end(&active, "kiln", "its time was up while kiln was down")
                .await;
        } else {
            actor
                .routes
                .set_maintenance(&active.route, Some(page_of(&active)))
                .await;
            (actor.announce)(&Event::Note {
                message: format!(
                    "kiln: route {} stays in maintenance {}",
                    active.route,
                    until_text(&active, now)
                ),
            });
            actor.active.insert(active.route.clone(), active);
        }
    }
    let (messages, inbox) = mpsc::channel(32);
    tokio::spawn(actor.run(inbox));
    Ok(MaintenanceHandle { messages })
}

struct Actor {
    state: kiln_state::StateHandle,
    routes: Routes,
    announce: Arc<dyn Fn(&Event) + Send + Sync>,
    /// Route address → its maintenance.
    active: BTreeMap<String, Active>,
}

impl Actor {
    async fn run(mut self, mut inbox: mpsc::Receiver<Msg>) {
        loop {
            let next_end = self.active.values().filter_map(|a| a.ends_at_ms).min();
            let wait = next_end.map_or(Duration::from_secs(3600), |end| {
                Duration::from_millis(u64::try_from(end.saturating_sub(now_ms())).unwrap_or(0))
            });
            tokio::select! {
                message = inbox.recv() => match message {
                    None => return,
                    Some(Msg::Start(request, reply)) => {
                        let _ = reply.send(self.start(request).await);
                    }
                    Some(Msg::End(request, reply)) => {
                        let result = match self.resolve(&request.route) {
                            Ok((route, _)) => match self.active.remove(&route) {
                                Some(active) => {
                                    self.end(&active, &request.by, &format!("ended by {}", request.by)).await;
                                    Ok(active)
                                }
                                None => Err(format!("route {route} is not in maintenance")),
                            },
                            Err(why) => Err(why),
                        };
                        let _ = reply.send(result);
                    }
                    Some(Msg::List(reply)) => {
                        let _ = reply.send(self.active.values().cloned().collect());
                    }
                },
                () = tokio::time::sleep(wait) => {
                    let now = now_ms();
                    let over: Vec<String> = self
                        .active
                        .values()
                        .filter(|a| a.ends_at_ms.is_some_and(|end| end <= now))
                        .map(|a| a.route.clone())
                        .collect();
                    for route in over {
                        if let Some(active) = self.active.remove(&route) {
                            self.end(&active, "kiln", "its time was up").await;
                        }
                    }
                }
            }
        }
    }

    /// A route named as the spec names it, or by address: its address and service.
    fn resolve(&self, name: &str) -> Result<(String, String), String> {
        let served = self.routes.served_routes();
        let candidates = [format!("routes.{name}"), name.to_owned()];
        if let Some((address, service)) = candidates
            .iter()
            .find_map(|a| served.get_key_value(a.as_str()))
        {
            return Ok((address.clone(), service.clone()));
        }
        // A page restored for a route the stack no longer declares can still be ended.
        if let Some(active) = candidates.iter().find_map(|a| self.active.get(a.as_str())) {
            return Ok((active.route.clone(), active.service.clone()));
        }
        let known: Vec<&str> = served
            .keys()
            .map(|a| a.strip_prefix("routes.").unwrap_or(a))
            .collect();
        Err(if known.is_empty() {
            format!("no route named `{name}`: the stack declares no routes")
        } else {
            format!("no route named `{name}` (routes: {})", known.join(", "))
        })
    }

    async fn start(&mut self, request: StartRequest) -> Result<Active, String> {
        let (route, service) = self.resolve(&request.route)?;
        let status = request
            .status
            .unwrap_or(kiln_spec::runbooks::DEFAULT_MAINTENANCE_STATUS);
        kiln_spec::runbooks::maintenance_status(&status.to_string())?;
        if request.for_ms == Some(0) {
            return Err("a maintenance of zero time ends before it starts".into());
        }
        let now = now_ms();
        let active = Active {
            route: route.clone(),
            service,
            status,
            message: request
                .message
                .unwrap_or_else(|| kiln_spec::runbooks::DEFAULT_MAINTENANCE_MESSAGE.to_owned()),
            retry_after_ms: request.retry_after_ms,
            started_at_ms: now,
            ends_at_ms: request
                .for_ms
                .map(|ms| now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))),
            actor: request.by,
        };
        // Recorded first: a page that is served must survive a restart.
        let record = active.clone();
        self.state
            .call(move |s| s.save_maintenance(&record))
            .await
            .map_err(|e| format!("cannot record the maintenance: {e}"))?;
        self.routes
            .set_maintenance(&route, Some(page_of(&active)))
            .await;
        let replaced = self.active.insert(route.clone(), active.clone()).is_some();
        let message = format!(
            "route {route} in maintenance {}: answers {status} \"{}\"{} (by {})",
            until_text(&active, now),
            active.message,
            if replaced { ", replacing its page" } else { "" },
            active.actor
        );
        self.event("maintenance.started", &active, &active.actor, message)
            .await;
        Ok(active)
    }

    /// Takes the page off its route, forgets it and records `maintenance.ended`.
    async fn end(&mut self, active: &Active, actor: &str, why: &str) {
        self.routes.set_maintenance(&active.route, None).await;
        let route = active.route.clone();
        let _ = self.state.call(move |s| s.end_maintenance(&route)).await;
        let message = format!("route {}: maintenance ended ({why})", active.route);
        self.event("maintenance.ended", active, actor, message)
            .await;
    }

    async fn event(&self, kind: &str, active: &Active, actor: &str, message: String) {
        (self.announce)(&Event::Note {
            message: format!("kiln: {message}"),
        });
        let record = kiln_state::NewEvent {
            kind: kind.into(),
            address: Some(active.route.clone()),
            serial: None,
            message,
            data: serde_json::json!({
                "route": active.route,
                "service": active.service,
                "actor": actor,
                "status": active.status,
                "ends_at_ms": active.ends_at_ms,
            }),
        };
        let _ = self.state.call(move |s| s.append_event(&record)).await;
    }
}

/// `GET /v1/maintenance`, `POST /v1/maintenance` (start) and `POST /v1/maintenance/off`.
pub fn router(handle: MaintenanceHandle) -> Router {
    Router::new()
        .route("/v1/maintenance", get(list).post(start_route))
        .route("/v1/maintenance/off", post(end_route))
        .with_state(handle)
}

async fn list(State(handle): State<MaintenanceHandle>) -> Response {
    axum::Json(handle.list().await).into_response()
}

async fn start_route(
    State(handle): State<MaintenanceHandle>,
    axum::Json(request): axum::Json<StartRequest>,
) -> Response {
    answer(handle.start(request).await)
}

async fn end_route(
    State(handle): State<MaintenanceHandle>,
    axum::Json(request): axum::Json<EndRequest>,
) -> Response {
    answer(handle.end(request).await)
}

fn answer(result: Result<Active, String>) -> Response {
    match result {
        Ok(active) => axum::Json(active).into_response(),
        Err(message) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(serde_json::json!({ "message": message })),
        )
            .into_response(),
    }
}
