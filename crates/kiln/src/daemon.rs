//! The control plane: `kiln up` in the foreground. It applies the stack, then keeps converging:
//! a level-triggered reconcile pass on an interval and on request, repairing drift where a
//! resource says `reconcile: auto` and recording it as an event otherwise. Commands reach it
//! over a JSON API on `.kiln/kiln.sock` (owner-only).
//!
//! One task owns the control plane's state (the [`Controller`]); the API and the signal handler
//! talk to it through a channel. The first SIGINT/SIGTERM drains (the operation under way
//! finishes, within a deadline); a second one exits at once.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kiln_plan::Action;
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::ops::{self, ApplyRequest, Event, Failure, Outcome, Selection};

/// How long a drain may take after the first signal before kiln exits anyway.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Where the control plane keeps its files.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `.kiln/` of the stack.
    pub kiln_dir: PathBuf,
    /// The API socket.
    pub socket: PathBuf,
    /// The pid of the running control plane.
    pub pidfile: PathBuf,
    /// Where a detached control plane writes its output.
    pub log: PathBuf,
}

impl Paths {
    /// The paths for the stack in `dir`.
    pub fn new(dir: &Path) -> Paths {
        let kiln_dir = dir.join(".kiln");
        Paths {
            socket: kiln_dir.join("kiln.sock"),
            pidfile: kiln_dir.join("kiln.pid"),
            log: kiln_dir.join("logs").join("kiln.log"),
            kiln_dir,
        }
    }
}

/// What `kiln up` was asked.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Destroy everything recorded first.
    pub fresh: bool,
    /// Seconds between reconcile passes.
    pub interval: Duration,
    /// Changes at once.
    pub parallelism: usize,
}

/// What the control plane reports about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// The stack's name.
    pub stack: String,
    /// The control plane's pid.
    pub pid: u32,
    /// Seconds since it started.
    pub uptime_seconds: u64,
    /// `starting` (first apply), `converging`, or `draining`.
    pub phase: String,
    /// Reconcile passes run so far.
    pub passes: u64,
    /// Resources recorded in the state.
    pub resources: usize,
    /// Drift found by the last pass and left for `kiln apply` (reconcile: report).
    pub drift: Vec<String>,
    /// Resources repaired by the control plane since it started.
    pub repaired: u64,
    /// The last pass's error, if it failed.
    pub last_error: Option<String>,
}

enum Command {
    Apply(
        ApplyRequest,
        mpsc::UnboundedSender<Event>,
        oneshot::Sender<Result<Outcome, Failure>>,
    ),
    Reconcile(oneshot::Sender<Result<Vec<String>, Failure>>),
    Status(oneshot::Sender<Status>),
    Shutdown,
}

#[derive(Clone)]
struct Api {
    commands: mpsc::Sender<Command>,
    dir: Arc<PathBuf>,
}

/// Runs the control plane until a signal or `kiln down`.
pub async fn run(
    dir: &Path,
    options: UpOptions,
    announce: impl Fn(&Event) + Send + Sync + 'static,
) -> Result<(), Failure> {
    let paths = Paths::new(dir);
    let listener = bind(&paths).await?;
    std::fs::write(&paths.pidfile, std::process::id().to_string())
        .map_err(|e| Failure::State(format!("cannot write {}: {e}", paths.pidfile.display())))?;
    let (commands, inbox) = mpsc::channel(64);
    let (stop_api, api_stopped) = watch::channel(false);
    let api = Api {
        commands: commands.clone(),
        dir: Arc::new(dir.to_path_buf()),
    };
    let server = tokio::spawn(serve(listener, api, api_stopped));
    tokio::spawn(watch_signals(commands.clone()));
    let mut controller = Controller {
        dir: dir.to_path_buf(),
        options,
        started: SystemTime::now(),
        status: Status {
            stack: String::new(),
            pid: std::process::id(),
            uptime_seconds: 0,
            phase: "starting".into(),
            passes: 0,
            resources: 0,
            drift: Vec::new(),
            repaired: 0,
            last_error: None,
        },
        announce: Arc::new(announce),
    };
    let result = controller.run(inbox).await;
    let _ = stop_api.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let _ = std::fs::remove_file(&paths.socket);
    let _ = std::fs::remove_file(&paths.pidfile);
    result
}

/// Binds the API socket, refusing to start beside a running control plane.
async fn bind(paths: &Paths) -> Result<UnixListener, Failure> {
    std::fs::create_dir_all(&paths.kiln_dir)
        .map_err(|e| Failure::State(format!("cannot create {}: {e}", paths.kiln_dir.display())))?;
    // The directory is owner-only, so the socket in it is too, even before its own chmod.
    let _ = std::fs::set_permissions(&paths.kiln_dir, std::fs::Permissions::from_mode(0o700));
    if crate::client::connect(&paths.socket).await.is_some() {
        let pid = std::fs::read_to_string(&paths.pidfile).unwrap_or_default();
        return Err(Failure::Locked(format!(
            "kiln is already running for this stack (pid {}); `kiln down` stops it",
            pid.trim()
        )));
    }
    let _ = std::fs::remove_file(&paths.socket);
    let listener = UnixListener::bind(&paths.socket)
        .map_err(|e| Failure::State(format!("cannot listen on {}: {e}", paths.socket.display())))?;
    std::fs::set_permissions(&paths.socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Failure::State(format!("cannot restrict {}: {e}", paths.socket.display())))?;
    Ok(listener)
}

async fn watch_signals(commands: mpsc::Sender<Command>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let _ = commands.send(Command::Shutdown).await;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        () = tokio::time::sleep(DRAIN_DEADLINE) => eprintln!("kiln: the drain took longer than {}s; exiting", DRAIN_DEADLINE.as_secs()),
    }
    std::process::exit(130);
}

struct Controller {
    dir: PathBuf,
    options: UpOptions,
    started: SystemTime,
    status: Status,
    announce: Arc<dyn Fn(&Event) + Send + Sync>,
}

impl Controller {
    async fn run(&mut self, mut inbox: mpsc::Receiver<Command>) -> Result<(), Failure> {
        if self.options.fresh {
            self.apply_announced(&ApplyRequest {
                destroy: true,
                parallelism: self.options.parallelism,
                ..ApplyRequest::default()
            })
            .await?;
        }
        self.apply_announced(&ApplyRequest {
            parallelism: self.options.parallelism,
            ..ApplyRequest::default()
        })
        .await?;
        self.status.phase = "converging".into();
        self.refresh_counts();
        let mut tick = tokio::time::interval(self.options.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                command = inbox.recv() => match command {
                    None | Some(Command::Shutdown) => break,
                    Some(command) => self.handle(command).await,
                },
                _ = tick.tick() => {
                    let result = self.reconcile().await;
                    self.note_pass(&result);
                }
            }
        }
        self.status.phase = "draining".into();
        Ok(())
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Apply(request, events, reply) => {
                let result = ops::apply(&self.dir, &request, &events).await;
                self.refresh_counts();
                let _ = reply.send(result);
            }
            Command::Reconcile(reply) => {
                let result = self.reconcile().await;
                self.note_pass(&result);
                let _ = reply.send(result);
            }
            Command::Status(reply) => {
                self.status.uptime_seconds = self.started.elapsed().map_or(0, |d| d.as_secs());
                let _ = reply.send(self.status.clone());
            }
            Command::Shutdown => {}
        }
    }

    async fn apply_announced(&mut self, request: &ApplyRequest) -> Result<Outcome, Failure> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let announce = self.announce.clone();
        let printer = tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                announce(&event);
            }
        });
        let result = ops::apply(&self.dir, request, &tx).await;
        drop(tx);
        let _ = printer.await;
        let outcome = result?;
        if !outcome.report.succeeded() {
            return Err(Failure::Apply(
                outcome
                    .report
                    .failed
                    .iter()
                    .map(|(a, m)| format!("error: {a}: {m}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ));
        }
        Ok(outcome)
    }

    fn refresh_counts(&mut self) {
        if let Ok(store) = ops::open_store(&self.dir) {
            self.status.resources = store.resource_count().map_or(0, |n| n as usize);
        }
        if let Ok(stack) = ops::load_stack(&self.dir) {
            self.status.stack = stack.name.clone();
        }
    }

    fn note_pass(&mut self, result: &Result<Vec<String>, Failure>) {
        self.status.passes += 1;
        self.status.last_error = result.as_ref().err().map(|e| e.message().to_owned());
        self.refresh_counts();
    }

    /// One level-triggered pass: observe everything, repair what says `reconcile: auto`, record
    /// the rest as drift. Returns the addresses left drifting.
    async fn reconcile(&mut self) -> Result<Vec<String>, Failure> {
        let loaded = ops::load_all(&self.dir, &[])?;
        let store = ops::open_store(&self.dir)?;
        let (events, _ignored) = mpsc::unbounded_channel();
        let plan = ops::make_plan(
            &loaded,
            &store,
            &Selection::default(),
            false,
            self.options.parallelism,
            &events,
        )
        .await?;
        let changes: Vec<_> = plan
            .changes
            .iter()
            .filter(|c| c.action != Action::NoOp)
            .collect();
        // Repaired here: drift on resources that say `reconcile: auto`, and whatever only waits on
        // their new values. Left alone: drift elsewhere (reported) and edits of the stack files
        // (those wait for `kiln apply`, the one path that changes the declared state).
        let mut report_only = Vec::new();
        let mut left_alone = Vec::new();
        for change in &changes {
            let drifted = change.reasons.iter().any(|r| r.starts_with("drift:"));
            let follows = !change.attrs.is_empty()
                && change
                    .attrs
                    .iter()
                    .all(|a| a.after.as_deref() == Some(kiln_plan::UNKNOWN));
            let auto = loaded
                .stack
                .resources
                .get(&change.address)
                .is_some_and(|r| r.reconcile == kiln_spec::model::Reconcile::Auto);
            match (drifted, auto) {
                (true, true) => {}
                (true, false) => report_only.push(change.address.clone()),
                (false, _) if follows => {}
                (false, _) => left_alone.push(change.address.clone()),
            }
        }
        let new_drift: Vec<&String> = report_only
            .iter()
            .filter(|a| !self.status.drift.contains(a))
            .collect();
        if !new_drift.is_empty() {
            let mut store = store;
            for address in &new_drift {
                let reasons = changes
                    .iter()
                    .find(|c| &&c.address == address)
                    .map(|c| c.reasons.join("; "))
                    .unwrap_or_default();
                store.append_event(&kiln_state::NewEvent {
                    kind: "drift.detected".into(),
                    address: Some((*address).clone()),
                    serial: None,
                    message: format!(
                        "{address}: {reasons} (reconcile: report; `kiln apply` repairs it)"
                    ),
                    data: serde_json::Value::Null,
                })?;
                (self.announce)(&Event::Note {
                    message: format!(
                        "drift: {address}: {reasons} — reconcile is `report`; run `kiln apply` to repair"
                    ),
                });
            }
        }
        self.status.drift = report_only.clone();
        if changes.len() > report_only.len() + left_alone.len() {
            let request = ApplyRequest {
                select: Selection {
                    excludes: report_only.iter().chain(&left_alone).cloned().collect(),
                    ..Selection::default()
                },
                parallelism: self.options.parallelism,
                ..ApplyRequest::default()
            };
            let outcome = self.apply_announced(&request).await?;
            self.status.repaired += outcome.report.done.len() as u64;
        }
        Ok(report_only)
    }
}

async fn serve(listener: UnixListener, api: Api, mut stop: watch::Receiver<bool>) {
    let router = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/apply", post(apply))
        .route("/v1/reconcile", post(reconcile))
        .route("/v1/shutdown", post(shutdown))
        .with_state(api);
    let _ = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(
            serde_json::json!({ "kind": "state", "message": "the control plane is shutting down" }),
        ),
    )
        .into_response()
}

async fn status(State(api): State<Api>) -> Response {
    let (reply, answer) = oneshot::channel();
    if api.commands.send(Command::Status(reply)).await.is_err() {
        return unavailable();
    }
    match answer.await {
        Ok(status) => axum::Json(status).into_response(),
        Err(_) => unavailable(),
    }
}

async fn reconcile(State(api): State<Api>) -> Response {
    let (reply, answer) = oneshot::channel();
    if api.commands.send(Command::Reconcile(reply)).await.is_err() {
        return unavailable();
    }
    match answer.await {
        Ok(Ok(drift)) => axum::Json(serde_json::json!({ "drift": drift })).into_response(),
        Ok(Err(failure)) => (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(failure)).into_response(),
        Err(_) => unavailable(),
    }
}

async fn shutdown(State(api): State<Api>) -> Response {
    let _ = api.commands.send(Command::Shutdown).await;
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "stopping": true, "dir": api.dir.display().to_string() })),
    )
        .into_response()
}

/// Streams the apply's events as JSON lines, ending with a `result` line.
async fn apply(State(api): State<Api>, axum::Json(request): axum::Json<ApplyRequest>) -> Response {
    let (events, mut event_rx) = mpsc::unbounded_channel();
    let (reply, answer) = oneshot::channel();
    if api
        .commands
        .send(Command::Apply(request, events, reply))
        .await
        .is_err()
    {
        return unavailable();
    }
    let (lines, line_rx) = mpsc::channel::<Result<String, std::convert::Infallible>>(64);
    tokio::spawn(async move {
        while let Some(event) = event_rx.recv().await {
            let line = serde_json::to_string(&event).unwrap_or_default() + "\n";
            if lines.send(Ok(line)).await.is_err() {
                return;
            }
        }
        let result = match answer.await {
            Ok(Ok(outcome)) => serde_json::json!({ "type": "result", "outcome": outcome }),
            Ok(Err(failure)) => serde_json::json!({ "type": "result", "failure": failure }),
            Err(_) => {
                serde_json::json!({ "type": "result", "failure": Failure::State("the control plane stopped during the apply".into()) })
            }
        };
        let _ = lines.send(Ok(result.to_string() + "\n")).await;
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(line_rx);
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| unavailable())
}
