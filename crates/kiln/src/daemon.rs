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

/// How often the collector records the ingress's and the instances' metrics.
const METRICS_INTERVAL: Duration = Duration::from_secs(2);

/// How long file changes settle before a pass (an editor writes a file in several steps).
const WATCH_SETTLE: Duration = Duration::from_millis(50);

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
    /// Also serve the Prometheus API on this loopback TCP address, behind a bearer token.
    pub api_listen: Option<std::net::SocketAddr>,
    /// Serve the web dashboard on this loopback TCP address.
    pub dash_listen: std::net::SocketAddr,
    /// Serve `POST /hooks/github` (GitHub push webhooks) on this address.
    pub hooks_listen: Option<std::net::SocketAddr>,
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
    /// Where the ingress listens, when the stack has routes.
    pub ingress: Option<String>,
    /// Where the Prometheus API listens on TCP (`kiln up --api-listen`).
    #[serde(default)]
    pub api: Option<String>,
    /// Where the web dashboard listens (`kiln dash`).
    #[serde(default)]
    pub dash: Option<String>,
    /// Routes in maintenance.
    #[serde(default)]
    pub maintenance: Vec<crate::maintenance::Active>,
}

pub(crate) enum Command {
    Plan(
        Selection,
        bool,
        oneshot::Sender<Result<ops::SavedPlan, Failure>>,
    ),
    Services(oneshot::Sender<Vec<kiln_supervisor::InstanceStatus>>),
    Restart(String, oneshot::Sender<Result<(), String>>),
    /// One instance by its full id (`api@1a2b3c4d/1`), as a runbook's `drain` restarts it.
    RestartInstance(String, oneshot::Sender<Result<(), String>>),
    Scale(String, u32, oneshot::Sender<Result<(), String>>),
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
    /// Routes in maintenance, for `/v1/status`.
    maintenance: crate::maintenance::MaintenanceHandle,
    dir: Arc<PathBuf>,
    /// Where `POST /v1/push` hands pushes (`None` without `source:`).
    delivery: Option<crate::delivery::DeliveryHandle>,
    /// True while the controller carries out an apply or a pass: a request sent now waits.
    busy: watch::Receiver<bool>,
}

/// Runs the control plane until a signal or `kiln down`.
pub async fn run(
    dir: &Path,
    options: UpOptions,
    announce: impl Fn(&Event) + Send + Sync + 'static,
) -> Result<(), Failure> {
    let paths = Paths::new(dir);
    let listener = bind(&paths).await?;
    let api_listener = match options.api_listen {
        Some(addr) => Some(crate::api_tcp::bind(addr, &paths.kiln_dir).await?),
        None => None,
    };
    let dash_listener = crate::dash::bind(options.dash_listen).await?;
    std::fs::write(&paths.pidfile, std::process::id().to_string())
        .map_err(|e| Failure::State(format!("cannot write {}: {e}", paths.pidfile.display())))?;
    let (supervisor, supervisor_events) = kiln_supervisor::Supervisor::start(
        kiln_supervisor::SupervisorConfig::new(paths.kiln_dir.join("services")),
    )
    .map_err(|e| Failure::State(format!("cannot start the supervisor: {e}")))?;
    let stack = ops::load_stack(dir).ok();
    let stack_name = stack.as_ref().map(|s| s.name.clone()).unwrap_or_default();
    let listen = stack.as_ref().and_then(|stack| stack.ingress_listen);
    let alerting = stack
        .as_ref()
        .map(|stack| stack.alerting.clone())
        .unwrap_or_default();
    let limits = stack
        .as_ref()
        .map(|stack| stack.ingress_limits)
        .unwrap_or_default();
    let tls = stack.and_then(|stack| stack.ingress_tls);
    // The route actor runs even without routes: it gives services their stable addresses.
    let router = crate::ingress::start(
        listen,
        tls.as_ref(),
        limits,
        supervisor.clone(),
        &paths.kiln_dir,
    )
    .await?;
    let ingress = listen.map(|_| &router);
    let metrics = match crate::metrics::open(&paths.kiln_dir) {
        Ok(store) => Some(store),
        Err(e) => {
            announce(&Event::Note {
                message: format!("warning: {}; running without metrics", e.message()),
            });
            None
        }
    };
    let announce: Arc<dyn Fn(&Event) + Send + Sync> = Arc::new(announce);
    tokio::spawn(crate::memory::trim_periodically());
    let scrapes = Arc::new(crate::scrape::Scrapes::default());
    let own = Arc::new(crate::metrics::own::Own::default());
    if let Some(store) = &metrics {
        tokio::spawn(crate::metrics::collect(
            store.clone(),
            router.routes.clone(),
            supervisor.clone(),
            scrapes.clone(),
            METRICS_INTERVAL,
        ));
        tokio::spawn(crate::scrape::run(
            store.clone(),
            supervisor.clone(),
            dir.to_path_buf(),
            scrapes.clone(),
            announce.clone(),
            METRICS_INTERVAL,
        ));
    }
    let traffic: Arc<dyn kiln_deploy::Traffic> = Arc::new(router.routes.clone());
    let deployer = kiln_deploy::Deployer::with_store(
        supervisor.clone(),
        traffic,
        Arc::new(crate::deploys::StateKept::new(dir)),
    );
    let journal = crate::deploys::StateJournal::new(dir);
    let prometheus = crate::metrics::Api {
        store: metrics.clone(),
        scrapes,
        own: own.clone(),
        supervisor: Some(supervisor.clone()),
        ingress: ingress.as_ref().map(|i| i.handle.clone()),
        limits: kiln_metrics::query::Limits::default(),
    };
    let api_address = match api_listener {
        Some((listener, token)) => {
            let address = listener
                .local_addr()
                .map_err(|e| Failure::State(format!("cannot read the API address: {e}")))?;
            announce(&Event::Note {
                message: format!(
                    "kiln: Prometheus API on http://{address} (bearer token in {})",
                    paths.kiln_dir.join(crate::api_tcp::TOKEN_FILE).display()
                ),
            });
            tokio::spawn(crate::api_tcp::serve(
                listener,
                token,
                crate::metrics::prometheus_router(prometheus.clone()),
            ));
            Some(address.to_string())
        }
        None => None,
    };
    let incidents =
        crate::incidents::start(dir, alerting.notify.incidents.clone(), announce.clone()).await?;
    let (commands, inbox) = mpsc::channel(64);
    // Before the first apply declares the routes: a page recorded by an earlier control plane
    // is on its route before the route serves anything.
    let maintenance =
        crate::maintenance::start(dir, router.routes.clone(), announce.clone()).await?;
    let runbooks = crate::runbooks::start(
        dir,
        |handle| crate::runbooks::ControlActions {
            dir: dir.to_path_buf(),
            commands: commands.clone(),
            routes: router.routes.clone(),
            metrics: metrics.clone(),
            runbooks: handle,
            maintenance: maintenance.clone(),
        },
        announce.clone(),
    )?;
    let alerts = match &metrics {
        Some(store) => {
            let external_url = match &api_address {
                Some(address) => format!("http://{address}"),
                None => format!("unix://{}", paths.socket.display()),
            };
            Some(crate::alerts::start(
                dir,
                store.clone(),
                alerting,
                external_url,
                announce.clone(),
                Some(incidents.clone()),
                Some(runbooks.clone()),
            )?)
        }
        None => None,
    };
    let runtime = ops::Runtime {
        supervisor: Some(supervisor.clone()),
        routes: ingress
            .as_ref()
            .map(|i| Arc::new(i.routes.clone()) as Arc<dyn kiln_providers::RouteSink>),
        trigger: Some(journal.trigger.clone()),
        services: Some(kiln_providers::ServiceRuntime {
            deployer,
            journal: Arc::new(journal),
            releases_dir: paths.kiln_dir.join("releases"),
        }),
    };
    let recorder = tokio::spawn(record_supervisor_events(
        dir.to_path_buf(),
        supervisor_events,
        announce.clone(),
        own.clone(),
    ));
    let (stop_api, api_stopped) = watch::channel(false);
    let delivery = follow_source(
        dir,
        options.hooks_listen,
        &commands,
        &announce,
        api_stopped.clone(),
    )
    .await?;
    tokio::spawn(crate::promote::auto_promote(
        dir.to_path_buf(),
        controller_apply(&commands),
        announce.clone(),
        api_stopped.clone(),
    ));
    let (busy_tx, busy) = watch::channel(false);
    let api = Api {
        maintenance,
        commands: commands.clone(),
        dir: Arc::new(dir.to_path_buf()),
        delivery,
        busy,
    };
    let dash_address = dash_listener
        .local_addr()
        .map_err(|e| Failure::State(format!("cannot read the dashboard's address: {e}")))?;
    announce(&Event::Note {
        message: format!("kiln: dashboard on http://{dash_address}/ (read-only)"),
    });
    let dash = crate::dash::Source {
        dir: dir.to_path_buf(),
        stack: stack_name,
        supervisor: supervisor.clone(),
        metrics: prometheus.clone(),
        alerts: alerts.clone(),
        runbooks: Some(runbooks.clone()),
    };
    let (stop_dash, dash_stopped) = watch::channel(false);
    let dash_server = tokio::spawn(crate::dash::serve(dash_listener, dash, dash_stopped));
    let alerts_for_stop = alerts.clone();
    let server = tokio::spawn(serve(
        listener,
        api,
        prometheus,
        alerts,
        incidents,
        runbooks,
        api_stopped,
    ));
    tokio::spawn(watch_signals(commands.clone()));
    // The supervisor, the metrics store and the route actor have made their files by now.
    secure_kiln_dir(&paths)?;
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
            ingress: ingress.as_ref().map(|i| i.address.to_string()),
            api: api_address,
            dash: Some(dash_address.to_string()),
            maintenance: Vec::new(),
        },
        announce,
        runtime,
        own,
        busy: busy_tx,
    };
    let result = controller.run(inbox).await;
    // The alert evaluator records when it last ran, from which the next start counts its
    // downtime (a pending alert's `for` does not run while kiln is down).
    if let Some(alerts) = &alerts_for_stop {
        alerts.stop().await;
    }
    // The dashboard goes first: it holds a supervisor handle, and only reads.
    let _ = stop_dash.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), dash_server).await;
    // Stop taking requests (those in flight finish) before the services behind them go away.
    if let Some(ingress) = &ingress {
        ingress.handle.shutdown(Duration::from_secs(10)).await;
    }
    // Stopping the control plane stops its services (no process outlives `kiln down`), dependents
    // before what they depend on; whatever is left after that is stopped together.
    // Kept blue-green sets go first and are forgotten: a graceful stop leaves nothing to
    // switch back to after the next start.
    if let Some(services) = &controller.runtime.services {
        services.deployer.release_kept().await;
    }
    stop_in_reverse_order(dir, &supervisor).await;
    supervisor.shutdown(DRAIN_DEADLINE).await;
    // Once every handle is gone the supervisor's event stream closes; wait for the last stop
    // events to reach the log.
    drop(controller);
    // The ingress's route actor holds a supervisor handle until its inbox closes.
    drop(router);
    drop(supervisor);
    let _ = tokio::time::timeout(Duration::from_secs(5), recorder).await;
    if let Some(store) = &metrics {
        let _ = store.flush();
    }
    let _ = stop_api.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let _ = std::fs::remove_file(&paths.socket);
    let _ = std::fs::remove_file(&paths.pidfile);
    result
}

/// Applies asked for by a task of the control plane (delivery, automatic promotion), carried
/// out by the controller, the one writer.
fn controller_apply(commands: &mpsc::Sender<Command>) -> crate::delivery::ApplyFn {
    let to_controller = commands.clone();
    Arc::new(move |request| {
        let (reply, answer) = oneshot::channel();
        let (events, _ignored) = mpsc::unbounded_channel();
        let commands = to_controller.clone();
        tokio::spawn(async move {
            let _ = commands.send(Command::Apply(request, events, reply)).await;
        });
        answer
    })
}

/// Starts following the stack's `source:` (see `delivery.rs`): the actor and poller, the
/// `post-receive` hook of a local bare repository, and the webhook listener when asked.
async fn follow_source(
    dir: &Path,
    hooks_listen: Option<std::net::SocketAddr>,
    commands: &mpsc::Sender<Command>,
    announce: &Arc<dyn Fn(&Event) + Send + Sync>,
    stop: watch::Receiver<bool>,
) -> Result<Option<crate::delivery::DeliveryHandle>, Failure> {
    let stack = ops::load_stack(dir).ok();
    let Some(source) = stack.as_ref().and_then(|s| s.change_source.clone()) else {
        if hooks_listen.is_some() {
            return Err(Failure::Refused(
                "error: --hooks-listen needs `source:` with `webhook: { secret: ... }` in kiln.yaml"
                    .into(),
            ));
        }
        return Ok(None);
    };
    let secret = match (&source.webhook_secret, hooks_listen) {
        (Some(name), Some(_)) => {
            let declared = stack.as_ref().and_then(|s| s.secrets.get(name));
            let value = declared
                .ok_or_else(|| format!("error: secret `{name}` is not declared"))
                .and_then(|from| ops::secret_value(dir, name, from))
                .map_err(Failure::Refused)?;
            Some(value)
        }
        (None, Some(_)) => {
            return Err(Failure::Refused(
                "error: --hooks-listen needs `source.webhook.secret` in kiln.yaml: unsigned webhooks are never accepted".into(),
            ));
        }
        (Some(_), None) => {
            announce(&Event::Note {
                message: "note: `source.webhook` is set but webhooks are not served; start with `kiln up --hooks-listen ADDR`".into(),
            });
            None
        }
        (None, None) => None,
    };
    let apply = controller_apply(commands);
    let handle = crate::delivery::start(dir, &source, apply, announce.clone()).await;
    if let crate::delivery::Repo::Local(repo) = crate::delivery::Repo::resolve(dir, &source.repo)
        && let Ok(exe) = std::env::current_exe()
    {
        let message = match crate::hooks::install_post_receive(&repo, dir, &exe) {
            Ok(crate::hooks::HookInstall::Installed(path)) => Some(format!(
                "kiln: installed {} (pushes notify the control plane)",
                path.display()
            )),
            Ok(crate::hooks::HookInstall::UserHook(path, line)) => Some(format!(
                "warning: {} is not kiln's, so it was left alone; add this line to it for pushes to reach kiln at once (polling still follows them): {line}",
                path.display()
            )),
            Ok(_) => None,
            Err(why) => Some(format!(
                "warning: cannot install the post-receive hook: {why}"
            )),
        };
        if let Some(message) = message {
            announce(&Event::Note { message });
        }
    }
    if let (Some(addr), Some(secret)) = (hooks_listen, secret) {
        let listener = crate::hooks::bind(addr).await?;
        let address = listener
            .local_addr()
            .map_err(|e| Failure::State(format!("cannot read the webhook address: {e}")))?;
        announce(&Event::Note {
            message: format!("kiln: GitHub webhooks on http://{address}/hooks/github"),
        });
        // Tests and scripts find the port picked for `:0` here.
        let _ = std::fs::write(dir.join(".kiln").join("hooks.addr"), address.to_string());
        tokio::spawn(crate::hooks::serve(listener, secret, handle.clone(), stop));
    }
    Ok(Some(handle))
}

/// `POST /v1/push`: a push reported by the `post-receive` hook (`kiln notify-push`).
async fn push(
    State(api): State<Api>,
    axum::Json(push): axum::Json<kiln_delivery::Push>,
) -> Response {
    let Some(delivery) = &api.delivery else {
        return (
            StatusCode::CONFLICT,
            axum::Json(serde_json::json!({ "message": "the stack declares no `source:`" })),
        )
            .into_response();
    };
    if delivery.push(push).await {
        (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({ "queued": true })),
        )
            .into_response()
    } else {
        unavailable()
    }
}

/// Watches the stack's directory and the directories of managed files, so that a change outside
/// kiln triggers a reconcile pass at once instead of at the next interval. Paths under `.kiln/`
/// (the state, logs) are ignored: kiln's own writes there must not wake it.
struct Watcher {
    inner: Option<notify::RecommendedWatcher>,
    watched: std::collections::BTreeSet<PathBuf>,
}

impl Watcher {
    fn new(changed: mpsc::UnboundedSender<()>) -> Watcher {
        let handler = move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if matches!(event.kind, notify::EventKind::Access(_)) {
                return;
            }
            if event
                .paths
                .iter()
                .all(|p| p.components().any(|c| c.as_os_str() == ".kiln"))
            {
                return;
            }
            let _ = changed.send(());
        };
        Watcher {
            inner: notify::recommended_watcher(handler).ok(),
            watched: std::collections::BTreeSet::new(),
        }
    }

    /// Adds the stack directory and every recorded file's directory (new ones after an apply).
    fn watch(&mut self, dir: &Path) {
        use notify::Watcher as _;
        let Some(inner) = self.inner.as_mut() else {
            return;
        };
        let mut wanted = vec![dir.to_path_buf()];
        if let Ok(store) = ops::open_store(dir) {
            for record in store.resources().unwrap_or_default() {
                if let Some(path) = record
                    .outputs
                    .get("path")
                    .and_then(|p| p.as_str())
                    .filter(|_| record.kind == "file")
                    && let Some(parent) = Path::new(path).parent()
                {
                    wanted.push(parent.to_path_buf());
                }
            }
        }
        for path in wanted {
            if !self.watched.contains(&path)
                && inner
                    .watch(&path, notify::RecursiveMode::NonRecursive)
                    .is_ok()
            {
                self.watched.insert(path);
            }
        }
    }
}

/// Stops services in the reverse of their dependency order, as recorded by the last apply.
async fn stop_in_reverse_order(dir: &Path, supervisor: &kiln_supervisor::SupervisorHandle) {
    let Ok(store) = ops::open_store(dir) else {
        return;
    };
    let Ok(records) = store.resources() else {
        return;
    };
    let services: Vec<&kiln_state::ResourceRecord> =
        records.iter().filter(|r| r.kind == "service").collect();
    let names: std::collections::BTreeSet<&str> =
        services.iter().map(|r| r.address.as_str()).collect();
    // Repeatedly stop the services nothing still running depends on.
    let mut running: Vec<&kiln_state::ResourceRecord> = services.clone();
    for _ in 0..=services.len() {
        if running.is_empty() {
            break;
        }
        let needed: std::collections::BTreeSet<&str> = running
            .iter()
            .flat_map(|r| r.dependencies.iter().map(String::as_str))
            .filter(|d| names.contains(d))
            .collect();
        let (leaves, rest): (Vec<_>, Vec<_>) = running
            .into_iter()
            .partition(|r| !needed.contains(r.address.as_str()));
        let leaves = if leaves.is_empty() {
            rest.clone()
        } else {
            leaves
        };
        let leaf_names: Vec<String> = leaves
            .iter()
            .map(|r| kiln_providers::supervisor_name(&r.address))
            .collect();
        // Every set (version) of each service: `api@3f2a1c9e`, and one kept by a blue-green
        // deploy too.
        let status = supervisor.status().await;
        let mut sets: Vec<String> = status
            .iter()
            .filter(|i| {
                leaf_names
                    .iter()
                    .any(|n| n == kiln_supervisor::service_of(&i.id.service))
            })
            .map(|i| i.id.service.clone())
            .collect();
        sets.sort();
        sets.dedup();
        sets.extend(leaf_names.iter().cloned());
        let stops = sets.iter().map(|name| supervisor.remove(name));
        let _ = tokio::time::timeout(DRAIN_DEADLINE, futures_util::future::join_all(stops)).await;
        running = rest
            .into_iter()
            .filter(|r| !leaves.iter().any(|l| l.address == r.address))
            .collect();
    }
}

/// Restarts every instance of every set (version) of `service`.
async fn restart_sets(deployer: &kiln_deploy::Deployer, service: &str) -> Result<(), String> {
    let sets: Vec<String> = deployer.sets(service).await.into_keys().collect();
    if sets.is_empty() {
        return Err(format!("no service named `{service}` is running"));
    }
    for set in sets {
        deployer
            .supervisor()
            .restart(&set)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The address of the service a supervisor name belongs to (`api` → `services.api`,
/// `api.staging` → `environments.staging.services.api`).
fn service_address(name: &str) -> String {
    match name.split_once('.') {
        Some((service, environment)) => format!("environments.{environment}.services.{service}"),
        None => format!("services.{name}"),
    }
}

/// Scales the set that serves `service` (the largest, when a deploy keeps another idle).
async fn scale_current(
    deployer: &kiln_deploy::Deployer,
    service: &str,
    replicas: u32,
) -> Result<(), String> {
    let sets = deployer.sets(service).await;
    let Some((set, _)) = sets.iter().max_by_key(|(_, instances)| instances.len()) else {
        return Err(format!("no service named `{service}` is running"));
    };
    deployer
        .supervisor()
        .scale(set, replicas)
        .await
        .map_err(|e| e.to_string())
}

/// See [`crate::kiln_dir`]: run before the socket exists and again once every part of the
/// control plane has created its files.
fn secure_kiln_dir(paths: &Paths) -> Result<(), Failure> {
    crate::kiln_dir::secure(&paths.kiln_dir)
        .map(drop)
        .map_err(|e| Failure::State(format!("cannot secure {}: {e}", paths.kiln_dir.display())))
}

/// Binds the API socket, refusing to start beside a running control plane.
async fn bind(paths: &Paths) -> Result<UnixListener, Failure> {
    // `.kiln` is traverse-only for others (so `user:` services reach their release) and all
    // in it but the releases owner-only; the socket is made 0600 below before anyone could
    // connect through a looser default.
    secure_kiln_dir(paths)?;
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
    runtime: ops::Runtime,
    own: Arc<crate::metrics::own::Own>,
    /// Whether an apply or a pass is under way (read by the API to tell waiting clients).
    busy: watch::Sender<bool>,
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
        // After the first apply adopted what serves, so a kept set is judged beside it.
        self.restore_kept().await;
        self.status.phase = "converging".into();
        self.refresh_counts();
        let mut tick = tokio::time::interval(self.options.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let (changed_tx, mut changed) = mpsc::unbounded_channel::<()>();
        let mut watcher = Watcher::new(changed_tx);
        watcher.watch(&self.dir);
        loop {
            tokio::select! {
                command = inbox.recv() => match command {
                    None | Some(Command::Shutdown) => break,
                    Some(command) => {
                        self.busy.send_replace(true);
                        self.handle(command).await;
                        self.busy.send_replace(false);
                    }
                },
                _ = tick.tick() => {
                    let result = self.reconcile().await;
                    self.note_pass(&result);
                    watcher.watch(&self.dir);
                }
                Some(()) = changed.recv() => {
                    // Level-triggered: one pass covers every change that arrived meanwhile.
                    tokio::time::sleep(WATCH_SETTLE).await;
                    while changed.try_recv().is_ok() {}
                    let result = self.reconcile().await;
                    self.note_pass(&result);
                    tick.reset();
                }
            }
        }
        self.status.phase = "draining".into();
        Ok(())
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Plan(select, destroy, reply) => {
                let (events, _ignored) = mpsc::unbounded_channel();
                let _ = reply.send(
                    ops::plan_saved(&self.dir, &select, destroy, &self.runtime, &events).await,
                );
            }
            Command::Services(reply) => {
                let status = match &self.runtime.supervisor {
                    Some(s) => s.status().await,
                    None => Vec::new(),
                };
                let _ = reply.send(status);
            }
            Command::Restart(service, reply) => {
                let result = match &self.runtime.services {
                    Some(s) => restart_sets(&s.deployer, &service).await,
                    None => Err("no supervisor".into()),
                };
                let _ = reply.send(result);
            }
            Command::RestartInstance(id, reply) => {
                let result = match (&self.runtime.supervisor, id.rsplit_once('/')) {
                    (Some(s), Some((set, n))) => match n.parse() {
                        Ok(n) => s.restart_instance(set, n).await.map_err(|e| e.to_string()),
                        Err(_) => Err(format!("`{id}` is not an instance id")),
                    },
                    (Some(_), None) => Err(format!("`{id}` is not an instance id")),
                    (None, _) => Err("no supervisor".into()),
                };
                let _ = reply.send(result);
            }
            Command::Scale(service, replicas, reply) => {
                let result = match &self.runtime.services {
                    Some(s) => scale_current(&s.deployer, &service, replicas).await,
                    None => Err("no supervisor".into()),
                };
                if result.is_ok() {
                    self.record(&format!("services.{service}"), "service.scaled", &format!("{service} scaled to {replicas} by `kiln scale`; the next plan shows it as drift against the files"));
                }
                let _ = reply.send(result);
            }
            Command::Apply(request, events, reply) => {
                let started = std::time::Instant::now();
                let result = ops::apply(&self.dir, &request, &self.runtime, &events).await;
                self.own.apply_done(
                    result.as_ref().is_ok_and(|o| o.report.succeeded()),
                    started.elapsed(),
                );
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
        let started = std::time::Instant::now();
        let result = ops::apply(&self.dir, request, &self.runtime, &tx).await;
        self.own.apply_done(
            result.as_ref().is_ok_and(|o| o.report.succeeded()),
            started.elapsed(),
        );
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

    /// Takes back the blue-green sets a previous control plane kept idle (see
    /// `Deployer::restore_kept`) and records what became of each.
    async fn restore_kept(&self) {
        let Some(services) = &self.runtime.services else {
            return;
        };
        use kiln_deploy::KeptRestore as R;
        for outcome in services.deployer.restore_kept(SystemTime::now()).await {
            let (service, kind, message) = match outcome {
                R::Kept {
                    service,
                    set,
                    pids,
                    remaining,
                } => {
                    let message = format!(
                        "{set} (pids {}) kept idle again after a restart of kiln, for an instant switch back; stopped in {} s",
                        pids.iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                        remaining.as_secs()
                    );
                    (service, "deploy.kept_restored", message)
                }
                R::Expired { service, set } => {
                    let message = format!(
                        "{set} was kept idle until a time that passed while kiln was down; stopped"
                    );
                    (service, "deploy.kept_expired", message)
                }
                R::Lost {
                    service,
                    set,
                    reason,
                } => {
                    let message = format!(
                        "{set} was kept idle for an instant switch back but did not survive while kiln was down ({reason}); a rollback to it deploys it again"
                    );
                    (service, "deploy.kept_lost", message)
                }
                R::Superseded { service, set } => {
                    let message =
                        format!("{set} was kept idle beside a set that no longer serves; stopped");
                    (service, "deploy.kept_superseded", message)
                }
                R::Unrecorded { reason } => (
                    self.status.stack.clone(),
                    "deploy.kept_unrecorded",
                    format!("the kept blue-green sets cannot be read or recorded: {reason}"),
                ),
            };
            (self.announce)(&Event::Note {
                message: format!("kiln: {message}"),
            });
            self.record(&service_address(&service), kind, &message);
        }
    }

    fn record(&self, address: &str, kind: &str, message: &str) {
        if let Ok(mut store) = ops::open_store(&self.dir) {
            let _ = store.append_event(&kiln_state::NewEvent {
                kind: kind.into(),
                address: Some(address.into()),
                serial: None,
                message: message.into(),
                data: serde_json::Value::Null,
            });
        }
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
        self.busy.send_replace(true);
        let result = self.reconcile_now().await;
        self.busy.send_replace(false);
        result
    }

    async fn reconcile_now(&mut self) -> Result<Vec<String>, Failure> {
        let started = std::time::Instant::now();
        let result = self.reconcile_pass().await;
        self.own.pass_done(result.is_ok(), started.elapsed());
        result
    }

    async fn reconcile_pass(&mut self) -> Result<Vec<String>, Failure> {
        let loaded = ops::load_all(&self.dir, &[], &self.runtime)?;
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

/// Every supervisor event goes to the event log (and to the terminal of a foreground `kiln up`).
async fn record_supervisor_events(
    dir: PathBuf,
    mut events: tokio::sync::broadcast::Receiver<kiln_supervisor::Event>,
    announce: Arc<dyn Fn(&Event) + Send + Sync>,
    own: Arc<crate::metrics::own::Own>,
) {
    let Ok(store) = ops::open_store(&dir) else {
        return;
    };
    let state = kiln_state::StateHandle::spawn(store);
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                announce(&Event::Note {
                    message: format!(
                        "note: {n} supervisor events were dropped from the log (too many at once)"
                    ),
                });
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let (kind, address, message, data) = describe(&event);
        own.supervisor_event(kind);
        announce(&Event::Note {
            message: message.clone(),
        });
        let record = kiln_state::NewEvent {
            kind: kind.into(),
            address: Some(address),
            serial: None,
            message,
            data,
        };
        let _ = state.call(move |s| s.append_event(&record)).await;
    }
}

/// An event's kind, the service address, a sentence, and its data.
fn describe(event: &kiln_supervisor::Event) -> (&'static str, String, String, serde_json::Value) {
    use kiln_supervisor::Event as E;
    let address = |id: &kiln_supervisor::InstanceId| format!("services.{}", id.service);
    match event {
        E::Started { id, pid, port } => (
            "instance.started",
            address(id),
            format!("{id}: started (pid {pid}, port {port})"),
            serde_json::json!({ "pid": pid, "port": port }),
        ),
        E::Adopted { id, pid, port } => (
            "instance.adopted",
            address(id),
            format!("{id}: adopted after a restart of kiln (pid {pid}, port {port})"),
            serde_json::json!({ "pid": pid, "port": port }),
        ),
        E::Ready { id } => (
            "instance.ready",
            address(id),
            format!("{id}: ready"),
            serde_json::Value::Null,
        ),
        E::Unhealthy { id, probe, reason } => (
            "instance.unhealthy",
            address(id),
            format!("{id}: {probe} probe failing: {reason}"),
            serde_json::json!({ "probe": probe.to_string(), "reason": reason }),
        ),
        E::Exited {
            id,
            pid,
            exit,
            last_log_lines,
        } => (
            "instance.exited",
            address(id),
            format!(
                "{id}: pid {pid} exited ({exit}){}",
                last_log_lines
                    .last()
                    .map(|l| format!("; last log line: {l}"))
                    .unwrap_or_default()
            ),
            serde_json::json!({ "pid": pid, "exit": exit.to_string(), "last_log_lines": last_log_lines }),
        ),
        E::Restarting { id, attempt, delay } => (
            "instance.restarting",
            address(id),
            format!("{id}: restarting in {delay:?} (attempt {attempt})"),
            serde_json::json!({ "attempt": attempt, "delay_ms": delay.as_millis() as u64 }),
        ),
        E::CrashLooping {
            id,
            restarts_in_window,
            window,
            next_try_in,
        } => (
            "instance.crash_looping",
            address(id),
            format!(
                "{id}: crash-looping, next try in {next_try_in:?}, {restarts_in_window} restarts in {window:?}"
            ),
            serde_json::json!({ "restarts_in_window": restarts_in_window, "window_s": window.as_secs(), "next_try_in_ms": next_try_in.as_millis() as u64 }),
        ),
        E::Stopped { id } => (
            "instance.stopped",
            address(id),
            format!("{id}: stopped"),
            serde_json::Value::Null,
        ),
        E::OrphanKilled { id, pid } => (
            "instance.orphan_killed",
            address(id),
            format!("{id}: killed an instance left by an earlier kiln (pid {pid})"),
            serde_json::json!({ "pid": pid }),
        ),
    }
}

/// An instance's state in one word, as `kiln ps` and the dashboard show it.
pub(crate) fn instance_state(state: &kiln_supervisor::InstanceState) -> &'static str {
    use kiln_supervisor::InstanceState as S;
    match state {
        S::Starting => "starting",
        S::Running => "running",
        S::Ready => "ready",
        S::Unhealthy => "unhealthy",
        S::Backoff { .. } => "crash-looping",
        S::Stopping => "stopping",
        S::Stopped => "stopped",
        S::Failed => "failed",
    }
}

/// A JSON view of an instance, for `kiln ps` and the API.
fn instance_json(s: &kiln_supervisor::InstanceStatus) -> serde_json::Value {
    let detail = match &s.state {
        kiln_supervisor::InstanceState::Backoff {
            until,
            restarts_in_window,
        } => Some(format!(
            "next try in {}s, {restarts_in_window} restarts in the window",
            until
                .duration_since(SystemTime::now())
                .map_or(0, |d| d.as_secs())
        )),
        _ => None,
    };
    let state = instance_state(&s.state);
    serde_json::json!({
        "service": kiln_supervisor::service_of(&s.id.service),
        "set": s.id.service,
        "instance": s.id.instance,
        "pid": s.pid,
        "port": s.port,
        "state": state,
        "detail": detail,
        "health": s.health,
        "restarts": s.restarts,
        "uptime_seconds": s.uptime.map(|u| u.as_secs()),
        "cpu_seconds": s.cpu_seconds,
        "rss_bytes": s.rss_bytes,
        "release": s.release,
        "limits": s.limits_in_force.to_string(),
        "adopted": s.adopted,
    })
}

async fn services(State(api): State<Api>) -> Response {
    let (reply, answer) = oneshot::channel();
    if api.commands.send(Command::Services(reply)).await.is_err() {
        return unavailable();
    }
    match answer.await {
        Ok(list) => axum::Json(list.iter().map(instance_json).collect::<Vec<_>>()).into_response(),
        Err(_) => unavailable(),
    }
}

async fn restart_service(
    State(api): State<Api>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let (reply, answer) = oneshot::channel();
    if api
        .commands
        .send(Command::Restart(name, reply))
        .await
        .is_err()
    {
        return unavailable();
    }
    reply_result(answer.await)
}

#[derive(Deserialize)]
struct ScaleBody {
    replicas: u32,
}

async fn scale_service(
    State(api): State<Api>,
    axum::extract::Path(name): axum::extract::Path<String>,
    axum::Json(body): axum::Json<ScaleBody>,
) -> Response {
    let (reply, answer) = oneshot::channel();
    if api
        .commands
        .send(Command::Scale(name, body.replicas, reply))
        .await
        .is_err()
    {
        return unavailable();
    }
    reply_result(answer.await)
}

fn reply_result(answer: Result<Result<(), String>, oneshot::error::RecvError>) -> Response {
    match answer {
        Ok(Ok(())) => axum::Json(serde_json::json!({ "ok": true })).into_response(),
        Ok(Err(message)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(serde_json::json!({ "ok": false, "message": message })),
        )
            .into_response(),
        Err(_) => unavailable(),
    }
}

#[derive(Deserialize)]
struct PlanBody {
    #[serde(default)]
    select: Selection,
    #[serde(default)]
    destroy: bool,
}

async fn plan(State(api): State<Api>, axum::Json(body): axum::Json<PlanBody>) -> Response {
    let (reply, answer) = oneshot::channel();
    if api
        .commands
        .send(Command::Plan(body.select, body.destroy, reply))
        .await
        .is_err()
    {
        return unavailable();
    }
    match answer.await {
        Ok(Ok(saved)) => axum::Json(saved).into_response(),
        Ok(Err(failure)) => (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(failure)).into_response(),
        Err(_) => unavailable(),
    }
}

async fn serve(
    listener: UnixListener,
    api: Api,
    prometheus: crate::metrics::Api,
    alerts: Option<crate::alerts::AlertsHandle>,
    incidents: crate::incidents::IncidentsHandle,
    runbooks: crate::runbooks::RunbooksHandle,
    mut stop: watch::Receiver<bool>,
) {
    let maintenance = api.maintenance.clone();
    let mut router = Router::new()
        .route("/v1/plan", post(plan))
        .route("/v1/services", get(services))
        .route("/v1/services/{name}/restart", post(restart_service))
        .route("/v1/services/{name}/scale", post(scale_service))
        .route("/v1/status", get(status))
        .route("/v1/apply", post(apply))
        .route("/v1/reconcile", post(reconcile))
        .route("/v1/shutdown", post(shutdown))
        .route("/v1/push", post(push))
        .with_state(api)
        .merge(crate::metrics::prometheus_router(prometheus))
        .merge(crate::incidents::router(incidents))
        .merge(crate::runbooks::router(runbooks))
        .merge(crate::maintenance::router(maintenance));
    if let Some(alerts) = alerts {
        router = router.merge(crate::alerts::router(alerts));
    }
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
        Ok(mut status) => {
            status.maintenance = api.maintenance.list().await;
            axum::Json(status).into_response()
        }
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
    if *api.busy.borrow() {
        // Like a state lock held elsewhere: say why nothing happens yet.
        let _ = events.send(Event::Note {
            message: "waiting for the control plane to finish the apply in progress…".into(),
        });
    }
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
