//! The `service` kind: a controller. Create and update hand the service's spec to the supervisor
//! (which owns the processes and keeps converging on its own) and complete when every replica is
//! ready, or fail with the supervisor's account of which instance failed which probe.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kiln_deploy::{
    Canary, DeployConfig, DeployReport, DeployRequest, DeployResult, Deployer, Strategy, release,
};
use kiln_engine::provider::{
    Applied, Attributes, Drift, Observation, Provider, ProviderContext, ProviderError,
    ProviderFuture, Recorded,
};
use kiln_supervisor::{
    Check, Command, Limits, Probe, Probes, RestartMode, ServiceSpec, SupervisorHandle,
};
use serde_json::Value;

/// The release of a service without `path:`: it runs from the stack directory as it is.
pub const TREE_RELEASE: &str = "tree";

/// Default wait for readiness when a service does not say.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs services through the control plane's deploy engine and supervisor.
#[derive(Clone)]
pub struct ServiceProvider {
    runtime: Option<ServiceRuntime>,
}

/// What the control plane gives the service provider.
#[derive(Clone)]
pub struct ServiceRuntime {
    pub deployer: Arc<Deployer>,
    /// Where releases and deploys are recorded.
    pub journal: Arc<dyn DeployJournal>,
    /// Where release snapshots are kept (`.kiln/releases`).
    pub releases_dir: PathBuf,
}

/// A release kiln made from a service's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseEntry {
    /// The service's address.
    pub service: String,
    pub digest: String,
    /// `path:<dir relative to the stack>`.
    pub source: String,
    pub files: u64,
    pub bytes: u64,
}

/// A finished deploy.
#[derive(Debug, Clone)]
pub struct DeployEntry {
    /// The service's address.
    pub service: String,
    /// The releases that ran before (none for a first start).
    pub from_releases: Vec<String>,
    pub to_release: String,
    pub started_at: std::time::SystemTime,
    pub report: DeployReport,
}

/// Records releases and deploys (the control plane implements it over the state store).
pub trait DeployJournal: Send + Sync {
    fn release(&self, entry: ReleaseEntry) -> ProviderFuture<'_, ()>;
    fn deploy(&self, entry: DeployEntry) -> ProviderFuture<'_, ()>;
}

impl std::fmt::Debug for ServiceRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceRuntime")
            .field("deployer", &self.deployer)
            .field("releases_dir", &self.releases_dir)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ServiceProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceProvider")
            .field("supervised", &self.runtime.is_some())
            .finish()
    }
}

impl ServiceProvider {
    /// A provider; without a control plane it can plan but not start anything.
    pub fn new(runtime: Option<ServiceRuntime>) -> ServiceProvider {
        ServiceProvider { runtime }
    }

    fn runtime(&self) -> Result<&ServiceRuntime, ProviderError> {
        self.runtime.as_ref().ok_or_else(|| ProviderError::Failed {
            message: "services run under the control plane: start it with `kiln up` (or `kiln up -d`), which applies the stack".into(),
        })
    }
}

/// The supervisor's name for a service address: `services.api` → `api`,
/// `modules.db.services.pg` → `modules-db-services-pg`, `environments.staging.services.api` →
/// `api.staging` (declared names have no `.`, so it names nothing else).
pub fn supervisor_name(address: &str) -> String {
    if let Some(rest) = address.strip_prefix("environments.")
        && let Some((environment, service)) = rest.split_once(".services.")
        && !environment.contains('.')
        && !service.contains('.')
    {
        return format!("{service}.{environment}");
    }
    address
        .strip_prefix("services.")
        .map_or_else(|| address.replace('.', "-"), str::to_owned)
}

/// The address prefix of the environment `address` is instantiated in (`environments.E.`), or
/// `""` outside environments.
pub fn environment_prefix(address: &str) -> &str {
    address
        .strip_prefix("environments.")
        .and_then(|rest| rest.split_once('.'))
        .map_or("", |(environment, _)| {
            &address[.."environments.".len() + environment.len() + 1]
        })
}

fn failed(message: impl Into<String>) -> ProviderError {
    ProviderError::Failed {
        message: message.into(),
    }
}

fn millis(v: Option<&Value>) -> Option<Duration> {
    v.and_then(Value::as_u64).map(Duration::from_millis)
}

fn command(run: &Value, shell: bool) -> Result<Command, ProviderError> {
    match run {
        Value::String(s) if shell => Ok(Command::Shell(s.clone())),
        Value::String(s) => {
            let words =
                kiln_spec::words::split_command(s).map_err(|e| failed(format!("run: {e}")))?;
            if words.is_empty() {
                return Err(failed("run: the command is empty"));
            }
            Ok(Command::Argv(words))
        }
        Value::Array(items) => Ok(Command::Argv(
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        )),
        _ => Err(failed("run: expected a command")),
    }
}

fn probe(spec: &serde_json::Map<String, Value>) -> Result<Option<Probe>, ProviderError> {
    let check = if let Some(path) = spec.get("http").and_then(Value::as_str) {
        Check::Http {
            path: path.to_owned(),
            expected_status: spec
                .get("status")
                .and_then(Value::as_u64)
                .and_then(|s| u16::try_from(s).ok()),
        }
    } else if spec.get("tcp").and_then(Value::as_bool) == Some(true) {
        Check::Tcp
    } else if let Some(cmd) = spec.get("exec") {
        Check::Exec {
            command: command(cmd, cmd.is_string())?,
        }
    } else {
        return Ok(None);
    };
    let mut probe = Probe::new(check);
    if let Some(d) = millis(spec.get("interval")) {
        probe.interval = d;
    }
    if let Some(d) = millis(spec.get("timeout")) {
        probe.timeout = d;
    }
    if let Some(d) = millis(spec.get("initial_delay")) {
        probe.initial_delay = d;
    }
    if let Some(n) = spec.get("success_threshold").and_then(Value::as_u64) {
        probe.success_threshold = u32::try_from(n).unwrap_or(1);
    }
    if let Some(n) = spec.get("failure_threshold").and_then(Value::as_u64) {
        probe.failure_threshold = u32::try_from(n).unwrap_or(3);
    }
    Ok(Some(probe))
}

/// `health:` is either one probe (used for readiness and liveness) or named probes.
fn probes(health: Option<&Value>) -> Result<Probes, ProviderError> {
    let Some(Value::Object(h)) = health else {
        return Ok(Probes::default());
    };
    let named = |key: &str| -> Result<Option<Probe>, ProviderError> {
        match h.get(key) {
            Some(Value::Object(p)) => probe(p),
            _ => Ok(None),
        }
    };
    let shorthand = probe(h)?;
    Ok(Probes {
        startup: named("startup")?,
        readiness: named("readiness")?.or_else(|| shorthand.clone()),
        liveness: named("liveness")?.or(shorthand),
    })
}

fn env_file(root: &Path, rel: &str) -> Result<BTreeMap<String, String>, ProviderError> {
    let path = root.join(rel);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| failed(format!("env_file {}: {e}", path.display())))?;
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(failed(format!(
                "env_file {}:{}: expected NAME=value",
                path.display(),
                n + 1
            )));
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
            .unwrap_or(v);
        out.insert(k.trim().to_owned(), v.to_owned());
    }
    Ok(out)
}

/// Runs the command as `user` through util-linux's `setpriv`, which switches uid, gid and
/// supplementary groups and then execs the command itself: the instance's pid, process group
/// and signals stay the command's own. Also sets the user's HOME, USER and LOGNAME.
fn as_user(run: Command, user: &str) -> Result<(Command, BTreeMap<String, String>), ProviderError> {
    let account = nix::unistd::User::from_name(user)
        .map_err(|e| failed(format!("user `{user}`: {e}")))?
        .ok_or_else(|| failed(format!("there is no user `{user}` on this machine")))?;
    if !nix::unistd::geteuid().is_root() && account.uid != nix::unistd::geteuid() {
        return Err(failed(format!(
            "running a service as `{user}` needs kiln to run as root"
        )));
    }
    let mut argv = vec![
        "setpriv".to_owned(),
        "--reuid".to_owned(),
        account.uid.to_string(),
        "--regid".to_owned(),
        account.gid.to_string(),
        "--init-groups".to_owned(),
        "--".to_owned(),
    ];
    match run {
        Command::Argv(words) => argv.extend(words),
        Command::Shell(line) => argv.extend(["sh".to_owned(), "-c".to_owned(), line]),
    }
    let env = BTreeMap::from([
        ("HOME".to_owned(), account.dir.display().to_string()),
        ("USER".to_owned(), account.name.clone()),
        ("LOGNAME".to_owned(), account.name),
    ]);
    Ok((Command::Argv(argv), env))
}

fn signal_number(name: &str) -> i32 {
    name.parse::<nix::sys::signal::Signal>()
        .map_or(libc_sigterm(), |s| s as i32)
}

fn libc_sigterm() -> i32 {
    nix::sys::signal::Signal::SIGTERM as i32
}

/// Builds the supervisor's spec from a service's evaluated attributes.
pub fn service_spec(
    ctx: &ProviderContext,
    address: &str,
    attrs: &Attributes,
) -> Result<ServiceSpec, ProviderError> {
    let shell = attrs.get("shell").and_then(Value::as_bool).unwrap_or(false);
    let mut run = command(attrs.get("run").unwrap_or(&Value::Null), shell)?;
    let mut user_env = BTreeMap::new();
    if let Some(user) = attrs.get("user").and_then(Value::as_str) {
        (run, user_env) = as_user(run, user)?;
    }
    let base = ctx
        .root
        .join(attrs.get("path").and_then(Value::as_str).unwrap_or("."));
    let workdir = attrs
        .get("workdir")
        .and_then(Value::as_str)
        .map_or_else(|| base.clone(), |w| ctx.root.join(w));
    let mut spec = ServiceSpec::new(supervisor_name(address), run, workdir);
    if let Some(file) = attrs.get("env_file").and_then(Value::as_str) {
        spec.env.extend(env_file(&ctx.root, file)?);
    }
    spec.env.extend(user_env);
    if let Some(Value::Object(env)) = attrs.get("env") {
        for (k, v) in env {
            spec.env.insert(
                k.clone(),
                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            );
        }
    }
    spec.replicas = attrs
        .get("replicas")
        .and_then(Value::as_u64)
        .map_or(1, |n| u32::try_from(n).unwrap_or(1));
    spec.release = "local".into();
    spec.probes = probes(attrs.get("health"))?;
    spec.restart.mode = match attrs.get("restart").and_then(Value::as_str) {
        Some("never") => RestartMode::Never,
        Some("on-failure") => RestartMode::OnFailure,
        _ => RestartMode::Always,
    };
    if let Some(Value::Object(b)) = attrs.get("backoff") {
        if let Some(d) = millis(b.get("initial")) {
            spec.restart.backoff_initial = d;
        }
        if let Some(d) = millis(b.get("max")) {
            spec.restart.backoff_max = d;
        }
        if let Some(d) = millis(b.get("reset_after")) {
            spec.restart.reset_after = d;
        }
    }
    if let Some(Value::Object(stop)) = attrs.get("stop") {
        if let Some(name) = stop.get("signal").and_then(Value::as_str) {
            spec.stop.signal = signal_number(name);
        }
        if let Some(d) = millis(stop.get("grace")) {
            spec.stop.grace = d;
        }
    }
    if let Some(Value::Object(r)) = attrs.get("resources") {
        spec.limits = Limits {
            memory_bytes: r.get("memory").and_then(Value::as_u64),
            cpu: r.get("cpu").and_then(Value::as_f64),
            pids: r.get("pids").and_then(Value::as_u64),
        };
    }
    spec.validate().map_err(failed)?;
    Ok(spec)
}

/// Where a service's release comes from: the directory its `path` names.
fn release_root(ctx: &ProviderContext, attrs: &Attributes) -> PathBuf {
    ctx.root
        .join(attrs.get("path").and_then(Value::as_str).unwrap_or("."))
}

/// Parses the `deploy:` block (validated by the spec; defaults fill the rest).
pub fn deploy_config(attrs: &Attributes) -> DeployConfig {
    let mut config = DeployConfig::default();
    let Some(Value::Object(d)) = attrs.get("deploy") else {
        return config;
    };
    let count = |key: &str, default: u32| {
        d.get(key)
            .and_then(Value::as_u64)
            .map_or(default, |n| u32::try_from(n).unwrap_or(default))
    };
    let ratio = |v: Option<&Value>, default: f64| {
        v.and_then(Value::as_f64)
            .filter(|r| r.is_finite())
            .unwrap_or(default)
    };
    config.strategy = match d.get("strategy").and_then(Value::as_str) {
        Some("blue-green") => Strategy::BlueGreen {
            keep_old: millis(d.get("keep_old")).unwrap_or(Duration::ZERO),
        },
        Some("canary") => {
            let defaults = Canary::default();
            let steps = match d.get("steps") {
                // Validated and normalised by kiln-spec: whole percentages, 1 to 99, increasing.
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(Value::as_u64)
                    .map(|p| p.clamp(1, 99) as u32)
                    .collect(),
                _ => defaults.steps.clone(),
            };
            let analysis = match d.get("analysis") {
                Some(Value::Object(a)) => a.clone(),
                _ => serde_json::Map::new(),
            };
            Strategy::Canary(Canary {
                steps,
                pause: millis(d.get("pause")).unwrap_or(defaults.pause),
                max_error_increase: ratio(
                    analysis.get("max_error_increase"),
                    defaults.max_error_increase,
                ),
                max_latency_ratio: ratio(
                    analysis.get("max_latency_ratio"),
                    defaults.max_latency_ratio,
                ),
                latency_slack: millis(analysis.get("latency_slack"))
                    .unwrap_or(defaults.latency_slack),
                min_requests: analysis
                    .get("min_requests")
                    .and_then(Value::as_u64)
                    .unwrap_or(defaults.min_requests),
            })
        }
        _ => Strategy::Rolling {
            max_surge: count("max_surge", 1),
            max_unavailable: count("max_unavailable", 0),
        },
    };
    if let Some(d) = millis(d.get("healthy_deadline")) {
        config.healthy_deadline = d;
    } else if let Some(d) = millis(attrs.get("ready_timeout")) {
        config.healthy_deadline = d;
    }
    if let Some(d) = millis(d.get("min_healthy_time")) {
        config.min_healthy_time = d;
    }
    if let Some(d) = millis(d.get("drain_timeout")) {
        config.drain_timeout = d;
    }
    if let Some(auto) = d.get("auto_rollback").and_then(Value::as_bool) {
        config.auto_rollback = auto;
    }
    config
}

impl ServiceProvider {
    /// Makes (or finds) the release the attributes name and points the spec at it: the
    /// instances run from the snapshot, never from the working tree.
    async fn release(
        &self,
        ctx: &ProviderContext,
        address: &str,
        desired: &Attributes,
        spec: &mut ServiceSpec,
    ) -> Result<String, ProviderError> {
        let runtime = self.runtime()?;
        if desired.get("release").is_some() {
            return self.built_release(runtime, address, desired, spec).await;
        }
        if desired.get("path").is_none() {
            // Run from the stack directory itself: nothing is snapshotted (it holds data and
            // kiln's own files); deploys still go by the strategy, keyed by the spec.
            spec.release = TREE_RELEASE.to_owned();
            return Ok(TREE_RELEASE.to_owned());
        }
        let root = release_root(ctx, desired);
        let expected = desired
            .get("release_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let releases = runtime.releases_dir.clone();
        let source_root = root.clone();
        let snapshot = tokio::task::spawn_blocking(move || {
            // A release named by digest may no longer match the tree (a rollback): use the
            // snapshot on disk then.
            if let Some(digest) = &expected
                && let Ok(dir) = release::existing(&releases, digest)
            {
                return release::digest_tree(&dir).map(|tree| release::Snapshot {
                    tree,
                    dir,
                    created: false,
                });
            }
            release::snapshot(&source_root, &releases, expected.as_deref())
        })
        .await
        .map_err(|e| failed(format!("releasing {}: {e}", root.display())))?
        .map_err(|e| failed(e.to_string()))?;
        // Recorded every time: the store keeps the first sighting of a release.
        let source = root
            .strip_prefix(&ctx.root)
            .map_or_else(|_| root.display().to_string(), |r| r.display().to_string());
        runtime
            .journal
            .release(ReleaseEntry {
                service: address.to_owned(),
                digest: snapshot.tree.digest.clone(),
                source: format!("path:{}", if source.is_empty() { "." } else { &source }),
                files: snapshot.tree.files,
                bytes: snapshot.tree.bytes,
            })
            .await?;
        if let Ok(inside) = spec.workdir.strip_prefix(&root) {
            spec.workdir = snapshot.dir.join(inside);
        }
        spec.release = release::short(&snapshot.tree.digest).to_owned();
        Ok(snapshot.tree.digest)
    }

    /// A release a pipeline built: made into a release directory when the stack was loaded,
    /// so it only has to be there.
    async fn built_release(
        &self,
        runtime: &ServiceRuntime,
        address: &str,
        desired: &Attributes,
        spec: &mut ServiceSpec,
    ) -> Result<String, ProviderError> {
        let digest = desired
            .get("release_id")
            .and_then(Value::as_str)
            .ok_or_else(|| failed("the pipeline release is not known; run `kiln plan` again"))?
            .to_owned();
        let dir =
            release::existing(&runtime.releases_dir, &digest).map_err(|e| failed(e.to_string()))?;
        let tree = release::digest_tree(&dir).map_err(|e| failed(e.to_string()))?;
        runtime
            .journal
            .release(ReleaseEntry {
                service: address.to_owned(),
                digest: digest.clone(),
                source: "pipeline".into(),
                files: tree.files,
                bytes: tree.bytes,
            })
            .await?;
        spec.workdir = dir;
        spec.release = release::short(&digest).to_owned();
        Ok(digest)
    }

    async fn start(
        &self,
        ctx: &ProviderContext,
        address: &str,
        desired: &Attributes,
    ) -> Result<Applied, ProviderError> {
        let runtime = self.runtime()?;
        let supervisor = runtime.deployer.supervisor();
        let mut spec = service_spec(ctx, address, desired)?;
        let digest = self.release(ctx, address, desired, &mut spec).await?;
        let service = spec.name.clone();
        let replicas = spec.replicas;
        let job = desired.get("job").and_then(Value::as_bool).unwrap_or(false);
        let previous: Vec<String> = runtime
            .deployer
            .sets(&service)
            .await
            .values()
            .filter_map(|i| i.first().map(|i| i.release.clone()))
            .collect();
        let started_at = std::time::SystemTime::now();
        let set = if job {
            self.run_job(runtime, &service, spec, desired).await?
        } else {
            let events = ctx.started.is_some().then(|| supervisor.subscribe());
            let deploy = runtime.deployer.deploy(DeployRequest {
                service: service.clone(),
                spec,
                config: deploy_config(desired),
            });
            let report = match events {
                None => deploy.await,
                Some(events) => {
                    tokio::pin!(deploy);
                    tokio::select! {
                        report = &mut deploy => report,
                        () = first_start(events, &service) => {
                            let mut outputs = Attributes::new();
                            if let Ok(address) = runtime.deployer.traffic().expose(&service).await {
                                outputs.insert("url".into(), Value::String(format!("http://{address}")));
                            }
                            outputs.insert("instances".into(), Value::from(replicas));
                            outputs.insert("release".into(), Value::String(digest.clone()));
                            ctx.report_started(address, outputs);
                            deploy.await
                        }
                    }
                }
            };
            let set = report.set.clone();
            let result = report.result.clone();
            let steps = report.steps.clone();
            runtime
                .journal
                .deploy(DeployEntry {
                    service: address.to_owned(),
                    from_releases: previous,
                    to_release: digest.clone(),
                    started_at,
                    report,
                })
                .await?;
            match result {
                DeployResult::Succeeded => set,
                DeployResult::Failed { reason } => {
                    return Err(ProviderError::Partial {
                        message: format!(
                            "the deploy of {address} failed: {reason}\n  steps: {}",
                            steps.join("; ")
                        ),
                    });
                }
                DeployResult::RolledBack { reason } => {
                    return Err(ProviderError::Failed {
                        message: format!(
                            "the deploy of {address} failed and was rolled back (the previous release serves): {reason}\n  steps: {}",
                            steps.join("; ")
                        ),
                    });
                }
            }
        };
        let mut ports: Vec<u16> = supervisor
            .status()
            .await
            .into_iter()
            .filter(|s| s.id.service == set)
            .filter_map(|s| s.port)
            .collect();
        ports.sort_unstable();
        let mut outputs = Attributes::new();
        // The service's own stable address (unchanged by deploys and restarts) when the
        // control plane can give one; an instance's port otherwise.
        let stable = if job {
            None
        } else {
            runtime.deployer.traffic().expose(&service).await.ok()
        };
        if let Some(address) = stable {
            outputs.insert("url".into(), Value::String(format!("http://{address}")));
        } else if let Some(first) = ports.first() {
            outputs.insert(
                "url".into(),
                Value::String(format!("http://127.0.0.1:{first}")),
            );
        }
        if let Some(first) = ports.first() {
            outputs.insert("port".into(), Value::from(*first));
        }
        outputs.insert("ports".into(), Value::from(ports));
        outputs.insert("instances".into(), Value::from(replicas));
        outputs.insert("release".into(), Value::String(digest.clone()));
        Ok(Applied {
            outputs,
            private: serde_json::json!({ "set": set, "release": digest }),
        })
    }

    /// A one-shot job runs its version directly (no strategy: nothing serves traffic).
    async fn run_job(
        &self,
        runtime: &ServiceRuntime,
        service: &str,
        mut spec: ServiceSpec,
        desired: &Attributes,
    ) -> Result<String, ProviderError> {
        let supervisor = runtime.deployer.supervisor();
        let set = kiln_deploy::set_name(service, &spec);
        spec.name = set.clone();
        let replicas = spec.replicas;
        for old in runtime.deployer.sets(service).await.into_keys() {
            if old != set {
                let _ = supervisor.remove(&old).await;
            }
        }
        let events = supervisor.subscribe();
        supervisor
            .apply(spec)
            .await
            .map_err(|e| ProviderError::Partial {
                message: e.to_string(),
            })?;
        let timeout = millis(desired.get("ready_timeout")).unwrap_or(READY_TIMEOUT);
        wait_completed(supervisor, &set, replicas, events, timeout).await?;
        Ok(set)
    }
}

/// Waits for the first instance of any version of `service` to start (its process spawned,
/// not yet ready): what `depends_on: { x: { condition: started } }` waits for. Lives only as
/// long as the deploy it races, so it needs no bound of its own.
async fn first_start(
    mut events: tokio::sync::broadcast::Receiver<kiln_supervisor::Event>,
    service: &str,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(kiln_supervisor::Event::Started { id, .. })
                if kiln_supervisor::service_of(&id.service) == service =>
            {
                return;
            }
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => std::future::pending().await,
        }
    }
}

/// Waits until every instance of a job exited with status 0; fails on the first instance that
/// fails for good, or at the deadline, with the last exits and log lines.
async fn wait_completed(
    supervisor: &SupervisorHandle,
    name: &str,
    replicas: u32,
    mut events: tokio::sync::broadcast::Receiver<kiln_supervisor::Event>,
    timeout: Duration,
) -> Result<(), ProviderError> {
    use kiln_supervisor::{Event, InstanceState};
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_exit = String::new();
    loop {
        let states: Vec<InstanceState> = supervisor
            .status()
            .await
            .into_iter()
            .filter(|s| s.id.service == name)
            .map(|s| s.state)
            .collect();
        if states.len() as u32 == replicas && states.iter().all(|s| *s == InstanceState::Stopped) {
            return Ok(());
        }
        if states.contains(&InstanceState::Failed) {
            // The exit that failed it may still be queued: take it for the message.
            while let Ok(event) = events.try_recv() {
                if let Event::Exited {
                    id,
                    exit,
                    last_log_lines,
                    ..
                } = event
                    && id.service == name
                {
                    last_exit = format!(
                        "{id}: {exit}; last log lines: {}",
                        last_log_lines.join(" / ")
                    );
                }
            }
            return Err(ProviderError::Partial {
                message: format!("job {name} failed: {last_exit}"),
            });
        }
        let event = tokio::time::timeout_at(deadline, events.recv()).await;
        match event {
            Err(_) => {
                return Err(ProviderError::Partial {
                    message: format!(
                        "job {name} did not complete within {timeout:?}; last exit: {last_exit}"
                    ),
                });
            }
            Ok(Ok(Event::Exited {
                id,
                exit,
                last_log_lines,
                ..
            })) if id.service == name => {
                last_exit = format!(
                    "{id}: {exit}; last log lines: {}",
                    last_log_lines.join(" / ")
                );
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                return Err(failed("the supervisor stopped"));
            }
            Ok(_) => {}
        }
    }
}

impl Provider for ServiceProvider {
    fn kinds(&self) -> &'static [&'static str] {
        &["service"]
    }

    fn observe<'a>(
        &'a self,
        ctx: &'a ProviderContext,
        recorded: &'a Recorded,
    ) -> ProviderFuture<'a, Observation> {
        Box::pin(async move {
            let Some(runtime) = &self.runtime else {
                // Outside the control plane nothing is watching the processes; report no drift.
                return Ok(Observation::Present { drift: Vec::new() });
            };
            if recorded.attributes.get("job").and_then(Value::as_bool) == Some(true) {
                // A job that completed leaves nothing running to observe.
                return Ok(Observation::Present { drift: Vec::new() });
            }
            let name = supervisor_name(&recorded.address);
            let mut sets = runtime.deployer.sets(&name).await;
            // A set kept idle for an instant switch back is not what the service runs.
            let kept = runtime.deployer.kept_sets(&name);
            sets.retain(|set, _| !kept.contains(set));
            if sets.is_empty() {
                return Ok(Observation::Absent);
            }
            // The set the last deploy made; while a blue-green deploy keeps the previous set
            // idle for a rollback, that one is not drift.
            let current = recorded.private.get("set").and_then(Value::as_str);
            let instances: Vec<_> = match current.and_then(|c| sets.get(c)) {
                Some(instances) => instances.clone(),
                None => sets.into_values().flatten().collect(),
            };
            if instances.is_empty() {
                return Ok(Observation::Absent);
            }
            let mut drift = Vec::new();
            let want = recorded
                .attributes
                .get("replicas")
                .and_then(Value::as_u64)
                .unwrap_or(1);
            if instances.len() as u64 != want {
                drift.push(Drift {
                    attribute: "replicas".into(),
                    reason: format!(
                        "{} instances run (scaled outside the files), the files say {want}",
                        instances.len()
                    ),
                });
            }
            let _ = ctx;
            if let Some(current) = current
                && instances.iter().any(|i| i.id.service != current)
            {
                drift.push(Drift {
                    attribute: "run".into(),
                    reason: "the running instances were started from another spec".into(),
                });
            }
            Ok(Observation::Present { drift })
        })
    }

    fn create<'a>(
        &'a self,
        ctx: &'a ProviderContext,
        _kind: &'a str,
        address: &'a str,
        desired: &'a Attributes,
    ) -> ProviderFuture<'a, Applied> {
        Box::pin(self.start(ctx, address, desired))
    }

    fn update<'a>(
        &'a self,
        ctx: &'a ProviderContext,
        previous: &'a Recorded,
        desired: &'a Attributes,
    ) -> ProviderFuture<'a, Applied> {
        Box::pin(self.start(ctx, &previous.address, desired))
    }

    fn delete<'a>(
        &'a self,
        _ctx: &'a ProviderContext,
        recorded: &'a Recorded,
    ) -> ProviderFuture<'a, ()> {
        Box::pin(async move {
            let runtime = self.runtime()?;
            match runtime
                .deployer
                .remove(&supervisor_name(&recorded.address))
                .await
            {
                Ok(()) | Err(kiln_supervisor::SupervisorError::UnknownService(_)) => Ok(()),
                Err(e) => Err(failed(e.to_string())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ProviderContext {
        ProviderContext::new("/stack".into(), "s".into())
    }

    #[test]
    fn attributes_become_a_supervisor_spec() {
        let attrs: Attributes = serde_json::from_value(serde_json::json!({
            "run": "node api/server.js --flag 'a b'",
            "replicas": 3,
            "env": { "A": "1" },
            "health": { "http": "/healthz", "interval": 500, "failure_threshold": 2 },
            "restart": "on-failure",
            "stop": { "signal": "SIGINT", "grace": 2000 },
            "resources": { "memory": 268435456, "cpu": 0.5 },
        }))
        .unwrap();
        let spec = service_spec(&ctx(), "services.api", &attrs).unwrap();
        assert_eq!(spec.name, "api");
        assert_eq!(
            spec.command,
            Command::Argv(vec![
                "node".into(),
                "api/server.js".into(),
                "--flag".into(),
                "a b".into()
            ])
        );
        assert_eq!(spec.replicas, 3);
        assert_eq!(spec.env["A"], "1");
        let readiness = spec.probes.readiness.unwrap();
        assert_eq!(readiness.interval, Duration::from_millis(500));
        assert_eq!(readiness.failure_threshold, 2);
        assert!(spec.probes.liveness.is_some());
        assert_eq!(spec.restart.mode, RestartMode::OnFailure);
        assert_eq!(spec.stop.signal, nix::sys::signal::Signal::SIGINT as i32);
        assert_eq!(spec.stop.grace, Duration::from_secs(2));
        assert_eq!(spec.limits.memory_bytes, Some(268_435_456));
    }

    #[test]
    fn module_services_get_path_safe_names() {
        assert_eq!(supervisor_name("services.api"), "api");
        assert_eq!(
            supervisor_name("modules.db.services.pg"),
            "modules-db-services-pg"
        );
        assert_eq!(
            supervisor_name("environments.staging.services.api"),
            "api.staging"
        );
        assert_eq!(
            environment_prefix("environments.staging.routes.shop"),
            "environments.staging."
        );
        assert_eq!(environment_prefix("routes.shop"), "");
    }

    #[tokio::test]
    async fn without_a_control_plane_creation_says_how_to_start_one() {
        let provider = ServiceProvider::new(None);
        let attrs: Attributes =
            serde_json::from_value(serde_json::json!({ "run": "true" })).unwrap();
        let err = provider
            .create(&ctx(), "service", "services.api", &attrs)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("kiln up"), "{err}");
    }
}
