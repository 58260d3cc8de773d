//! Operations shared by the command line and the control plane: load a stack, plan it, apply
//! it. Nothing here prints: progress goes out as [`Event`]s, failures as [`Failure`]s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_engine::Providers;
use kiln_engine::apply::{Apply, Progress, Report};
use kiln_engine::desired::{self, Inputs};
use kiln_engine::provider::ProviderContext;
use kiln_plan::Plan;
use kiln_spec::{FileSystem, Stack};
use kiln_state::{
    LockHolder, NewEvent, NewRevision, RevisionStatus, StateError, StateHandle, Store,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

use crate::render;

/// How an operation failed; each kind has its own exit code (see README.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum Failure {
    /// The stack files are invalid (exit 1). The text is the rendered diagnostics.
    Invalid(String),
    /// An apply or destroy ran and some changes failed (exit 3).
    Apply(String),
    /// The state is locked by another process (exit 4).
    Locked(String),
    /// The state store, the file system or the control plane failed (exit 5).
    State(String),
    /// A saved plan no longer matches the state or the files (exit 6).
    StalePlan(String),
    /// The plan cannot be applied as asked (prevent_destroy, unknown target) (exit 7).
    Refused(String),
}

impl Failure {
    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Invalid(_) => 1,
            Failure::Apply(_) => 3,
            Failure::Locked(_) => 4,
            Failure::State(_) => 5,
            Failure::StalePlan(_) => 6,
            Failure::Refused(_) => 7,
        }
    }

    /// The message to print.
    pub fn message(&self) -> &str {
        match self {
            Failure::Invalid(m)
            | Failure::Apply(m)
            | Failure::Locked(m)
            | Failure::State(m)
            | Failure::StalePlan(m)
            | Failure::Refused(m) => m,
        }
    }
}

impl From<StateError> for Failure {
    fn from(e: StateError) -> Self {
        match e {
            StateError::Locked { .. } => Failure::Locked(e.to_string()),
            other => Failure::State(other.to_string()),
        }
    }
}

/// What an apply reports as it goes, to a terminal or over the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A note for the user (a released stale lock, a recovered operation).
    Note {
        /// The text.
        message: String,
    },
    /// The plan about to be applied.
    Planned {
        /// The plan.
        plan: Plan,
    },
    /// A change's progress.
    Progress {
        /// What happened.
        progress: Progress,
    },
}

/// The end of an apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// What was planned.
    pub plan: Plan,
    /// What happened to each change (empty when there was nothing to do).
    pub report: Report,
    /// Wall time of the execution.
    pub elapsed: Duration,
}

/// What selects the parts of the graph and the inputs of a plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// Only these addresses and what they need.
    pub targets: Vec<String>,
    /// Leave these and what depends on them alone.
    pub excludes: Vec<String>,
    /// `NAME=VALUE` variable overrides.
    pub vars: Vec<String>,
    /// Plan from the recorded state alone.
    pub no_refresh: bool,
    /// Attribute values replacing the evaluated ones, by address (`kiln rollback` and
    /// `kiln deploy --release` pin a service's `release` this way).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    /// The targets alone, without what they depend on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub only: bool,
}

/// A plan saved by `kiln plan --out`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedPlan {
    /// Format version.
    pub format: u32,
    /// The state's lineage when planned.
    pub lineage: String,
    /// The state's serial when planned.
    pub serial: u64,
    /// Digest of the stack files when planned.
    pub files_digest: String,
    /// A destroy plan.
    pub destroy: bool,
    /// Variable overrides it was made with.
    pub vars: Vec<String>,
    /// The plan.
    pub plan: Plan,
}

/// Reads stack files from disk for the spec crate.
#[derive(Debug)]
pub struct DiskFs;

impl FileSystem for DiskFs {
    fn read_to_string(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    fn program_exists(&self, program: &str, dir: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        let executable = |p: &Path| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        };
        if program.contains('/') {
            return executable(&dir.join(program));
        }
        std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|d| executable(&d.join(program)))
        })
    }
    fn user_exists(&self, name: &str) -> bool {
        nix::unistd::User::from_name(name).ok().flatten().is_some()
    }
    fn artifact_release(
        &self,
        stack_dir: &Path,
        pipeline: &str,
        artifact: &str,
    ) -> Option<std::io::Result<String>> {
        Some(
            crate::deploys::artifact_release(stack_dir, pipeline, artifact)
                .map_err(std::io::Error::other),
        )
    }
    fn promoted_release(
        &self,
        stack_dir: &Path,
        environment: &str,
        address: &str,
    ) -> Option<std::io::Result<Option<String>>> {
        if !stack_dir.join(".kiln").join("state.db").exists() {
            return Some(Ok(None));
        }
        let service = address.rsplit('.').next().unwrap_or(address);
        Some(
            kiln_state::Store::open_in_stack(stack_dir)
                .and_then(|store| store.promoted_release(service, environment))
                .map_err(std::io::Error::other),
        )
    }
    fn tree_digest(&self, dir: &Path) -> Option<std::io::Result<String>> {
        Some(
            kiln_deploy::release::digest_tree(dir)
                .map(|tree| tree.digest)
                .map_err(std::io::Error::other),
        )
    }
}

/// Loads and validates the stack in `dir`, rendering every mistake on failure.
pub fn load_stack(dir: &Path) -> Result<Stack, Failure> {
    crate::tls::load(&DiskFs, &dir.join("kiln.yaml"))
        .map_err(|f| Failure::Invalid(render::diagnostics(&f.sources, &f.diagnostics)))
}

/// The value of secret `name`, read from where `secrets:` says.
pub fn secret_value(
    dir: &Path,
    name: &str,
    source: &kiln_spec::model::SecretSource,
) -> Result<String, String> {
    match source {
        kiln_spec::model::SecretSource::Env(var) => std::env::var(var)
            .map_err(|_| format!("error: secret `{name}`: environment variable {var} is not set")),
        kiln_spec::model::SecretSource::File(path) => std::fs::read_to_string(dir.join(path))
            .map(|s| s.trim_end_matches('\n').to_owned())
            .map_err(|e| format!("error: secret `{name}`: cannot read {path}: {e}")),
    }
}

/// Builds evaluation inputs: vars with overrides, secret values, the environment.
pub fn inputs(stack: &Stack, dir: &Path, overrides: &[String]) -> Result<Inputs, Failure> {
    let mut vars: BTreeMap<String, serde_json::Value> = stack
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut problems = Vec::new();
    for item in overrides {
        let Some((name, value)) = item.split_once('=') else {
            problems.push(format!("error: --var {item}: expected NAME=VALUE"));
            continue;
        };
        if !stack.vars.contains_key(name) {
            let declared: Vec<&str> = stack.vars.keys().map(String::as_str).collect();
            problems.push(format!(
                "error: --var {name}: the stack declares no var `{name}` (declared: {})",
                declared.join(", ")
            ));
            continue;
        }
        let parsed = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
        vars.insert(name.to_owned(), parsed);
    }
    let mut secrets = BTreeMap::new();
    for (name, source) in &stack.secrets {
        match secret_value(dir, name, source) {
            Ok(v) => {
                secrets.insert(name.clone(), v);
            }
            Err(p) => problems.push(p),
        }
    }
    if !problems.is_empty() {
        return Err(Failure::Invalid(problems.join("\n")));
    }
    Ok(Inputs {
        vars,
        secrets,
        env: std::env::vars().collect(),
        root: dir.to_path_buf(),
        overrides: BTreeMap::new(),
    })
}

/// A stack loaded with everything needed to plan and apply it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated stack.
    pub stack: Arc<Stack>,
    /// Evaluation inputs.
    pub inputs: Arc<Inputs>,
    /// The providers, acting in the stack's directory.
    pub providers: Providers,
    /// Where the services' release snapshots live (`.kiln/releases`).
    pub releases: PathBuf,
}

/// What the running process offers the providers: the control plane has a supervisor, a
/// one-shot command does not.
#[derive(Clone, Default)]
pub struct Runtime {
    /// The control plane's supervisor of services.
    pub supervisor: Option<kiln_supervisor::SupervisorHandle>,
    /// The control plane's ingress, when the stack has routes.
    pub routes: Option<Arc<dyn kiln_providers::RouteSink>>,
    /// The control plane's deploy engine and journal.
    pub services: Option<kiln_providers::ServiceRuntime>,
    /// What the current apply was asked by, for the deploy journal.
    pub trigger: Option<Arc<std::sync::Mutex<String>>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("supervisor", &self.supervisor.is_some())
            .field("routes", &self.routes.is_some())
            .finish()
    }
}

/// Loads the stack, its inputs and the providers.
pub fn load_all(dir: &Path, vars: &[String], runtime: &Runtime) -> Result<Loaded, Failure> {
    let stack = load_stack(dir)?;
    let inputs = inputs(&stack, dir, vars)?;
    let providers = Providers::new(
        kiln_providers::builtin_providers(runtime.services.clone(), runtime.routes.clone()),
        ProviderContext::new(dir.to_path_buf(), stack.name.clone()),
    );
    Ok(Loaded {
        stack: Arc::new(stack),
        inputs: Arc::new(inputs),
        providers,
        releases: dir.join(".kiln").join("releases"),
    })
}

/// Opens the state store of the stack in `dir`.
pub fn open_store(dir: &Path) -> Result<Store, Failure> {
    Store::open_in_stack(dir).map_err(Failure::from)
}

/// Refreshes, evaluates and plans.
pub async fn make_plan(
    loaded: &Loaded,
    store: &Store,
    select: &Selection,
    destroy: bool,
    parallelism: usize,
    events: &UnboundedSender<Event>,
) -> Result<Plan, Failure> {
    let records = store.resources()?;
    let pending: Vec<String> = store
        .pending_operations()?
        .into_iter()
        .map(|p| p.address)
        .collect();
    let observed = if select.no_refresh {
        BTreeMap::new()
    } else {
        let (observed, errors) =
            kiln_engine::refresh::refresh(&loaded.providers, &records, parallelism).await;
        for (address, message) in errors {
            let _ = events.send(Event::Note {
                message: format!("warning: cannot observe {address}: {message}"),
            });
        }
        observed
    };
    let by_address: BTreeMap<String, kiln_state::ResourceRecord> = records
        .iter()
        .map(|r| (r.address.clone(), r.clone()))
        .collect();
    let desired = if destroy {
        Vec::new()
    } else {
        desired::evaluate_all(&loaded.stack, &loaded.inputs, &by_address, &observed).map_err(
            |f| {
                Failure::Invalid(
                    f.iter()
                        .map(|e| format!("error: {e}"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
            },
        )?
    };
    let mut recorded: Vec<kiln_plan::Recorded> =
        records.iter().map(desired::recorded_from).collect();
    for r in &mut recorded {
        r.tainted |= pending.contains(&r.address);
    }
    let options = kiln_plan::Options {
        destroy,
        targets: select.targets.clone(),
        excludes: select.excludes.clone(),
        only: select.only,
    };
    kiln_plan::plan(&desired, &recorded, &observed, &options).map_err(|errors| {
        Failure::Refused(
            errors
                .iter()
                .map(|e| format!("error: {e}"))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })
}

/// Plans and returns the plan with what a saved plan needs (lineage, serial, files digest).
pub async fn plan_saved(
    dir: &Path,
    select: &Selection,
    destroy: bool,
    runtime: &Runtime,
    events: &UnboundedSender<Event>,
) -> Result<SavedPlan, Failure> {
    let loaded = load_all(dir, &select.vars, runtime)?;
    let store = open_store(dir)?;
    let plan = make_plan(&loaded, &store, select, destroy, 10, events).await?;
    Ok(SavedPlan {
        format: 1,
        lineage: store.lineage()?,
        serial: store.serial()?,
        files_digest: loaded.stack.digest.clone(),
        destroy,
        vars: select.vars.clone(),
        plan,
    })
}

/// `user@host` of this process, for locks and revisions.
pub fn who() -> String {
    let uid = nix::unistd::getuid();
    let user = std::env::var("USER")
        .ok()
        .or_else(|| {
            nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| format!("uid-{uid}"));
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}

/// Takes the state lock; a lock left by a dead process of this host is taken over, with an event.
fn lock(
    store: &mut Store,
    operation: &str,
    events: &UnboundedSender<Event>,
) -> Result<String, Failure> {
    let holder = LockHolder {
        who: who(),
        pid: std::process::id(),
        operation: operation.to_owned(),
    };
    match store.acquire_lock(&holder) {
        Ok(info) => Ok(info.id),
        Err(StateError::Locked { holder: current })
            if current.who == holder.who && !process_alive(current.pid) =>
        {
            store.force_unlock(&current.id)?;
            let message = format!(
                "released the lock of {} (pid {}, {}), whose process is gone",
                current.who, current.pid, current.operation
            );
            store.append_event(&kiln_state::NewEvent {
                kind: "lock.stale_released".into(),
                address: None,
                serial: None,
                message: message.clone(),
                data: serde_json::Value::Null,
            })?;
            let _ = events.send(Event::Note {
                message: format!("note: {message}"),
            });
            Ok(store.acquire_lock(&holder)?.id)
        }
        Err(e) => Err(e.into()),
    }
}

/// True when a process with this pid exists.
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// What an apply is asked to do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApplyRequest {
    /// Selection and variables.
    pub select: Selection,
    /// Destroy everything recorded instead.
    pub destroy: bool,
    /// A saved plan to apply instead of planning now.
    pub saved: Option<Box<SavedPlanRef>>,
    /// Changes at once.
    pub parallelism: usize,
    /// What asked for it, recorded with each deploy: `apply` (empty), `deploy`, `rollback`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trigger: String,
    /// Services to pin to the release before their current one. Resolved under the state
    /// lock, when the apply starts, so a rollback asked for while a deploy is still in flight
    /// rolls back from the release that deploy left, not the one before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roll_back: Vec<String>,
}

/// A saved plan travelling inside an [`ApplyRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedPlanRef(pub serde_json::Value);

/// Locks, plans (or checks a saved plan), records a revision and applies.
pub async fn apply(
    dir: &Path,
    request: &ApplyRequest,
    runtime: &Runtime,
    events: &UnboundedSender<Event>,
) -> Result<Outcome, Failure> {
    let saved: Option<SavedPlan> = match &request.saved {
        Some(raw) => Some(
            serde_json::from_value(raw.0.clone())
                .map_err(|e| Failure::StalePlan(format!("not a kiln plan: {e}")))?,
        ),
        None => None,
    };
    let vars = saved
        .as_ref()
        .map_or_else(|| request.select.vars.clone(), |s| s.vars.clone());
    let mut loaded = load_all(dir, &vars, runtime)?;
    if let Some(trigger) = &runtime.trigger
        && let Ok(mut t) = trigger.lock()
    {
        t.clone_from(&request.trigger);
    }
    let mut store = open_store(dir)?;
    let lock_id = lock(
        &mut store,
        if request.destroy { "destroy" } else { "apply" },
        events,
    )?;
    let result = match rollback_overrides(&store, request, events) {
        Ok(overrides) => {
            if !overrides.is_empty() {
                Arc::make_mut(&mut loaded.inputs).overrides = overrides;
            }
            apply_locked(&loaded, &mut store, request, saved, &lock_id, events).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(Locked::Done(outcome)) => Ok(outcome),
        Ok(Locked::Run(plan, serial)) => {
            execute(
                &loaded,
                store,
                plan,
                serial,
                request.parallelism,
                lock_id,
                events,
            )
            .await
        }
        Err(e) => {
            store.release_lock(&lock_id)?;
            Err(e)
        }
    }
}

/// The request's overrides plus, for each service it rolls back, a pin to the release
/// before the one the state records now.
fn rollback_overrides(
    store: &Store,
    request: &ApplyRequest,
    events: &UnboundedSender<Event>,
) -> Result<BTreeMap<String, serde_json::Map<String, serde_json::Value>>, Failure> {
    let mut overrides = request.select.overrides.clone();
    for address in &request.roll_back {
        let digest = crate::deploys::previous_release(store, address)?;
        let _ = events.send(Event::Note {
            message: format!(
                "rolling back {address} to release {}",
                kiln_deploy::release::short(&digest)
            ),
        });
        overrides
            .entry(address.clone())
            .or_default()
            .insert("release_id".into(), serde_json::Value::String(digest));
    }
    Ok(overrides)
}

enum Locked {
    Done(Outcome),
    Run(Plan, u64),
}

async fn apply_locked(
    loaded: &Loaded,
    store: &mut Store,
    request: &ApplyRequest,
    saved: Option<SavedPlan>,
    lock_id: &str,
    events: &UnboundedSender<Event>,
) -> Result<Locked, Failure> {
    for op in store.recover_pending()? {
        let _ = events.send(Event::Note {
            message: format!("note: {} was being changed when kiln stopped; it is marked tainted and will be replaced", op.address),
        });
    }
    store.mark_interrupted_revisions()?;
    let plan = match saved {
        Some(saved) => {
            if saved.lineage != store.lineage()? || saved.serial != store.serial()? {
                return Err(Failure::StalePlan("the saved plan is stale: the state changed since it was made; run `kiln plan --out FILE` again".into()));
            }
            if saved.files_digest != loaded.stack.digest {
                return Err(Failure::StalePlan("the saved plan is stale: the stack files changed since it was made; run `kiln plan --out FILE` again".into()));
            }
            saved.plan
        }
        None => {
            make_plan(
                loaded,
                store,
                &request.select,
                request.destroy,
                request.parallelism,
                events,
            )
            .await?
        }
    };
    let _ = events.send(Event::Planned { plan: plan.clone() });
    if plan.is_empty() {
        store.release_lock(lock_id)?;
        return Ok(Locked::Done(Outcome {
            plan,
            report: Report::default(),
            elapsed: Duration::ZERO,
        }));
    }
    let plan_json = serde_json::to_value(&plan).map_err(|e| Failure::State(e.to_string()))?;
    let revision = store.begin_revision(&NewRevision {
        user: who(),
        command: if request.destroy {
            "destroy".into()
        } else {
            "apply".into()
        },
        files_digest: loaded.stack.digest.clone(),
        plan: plan_json,
    })?;
    Ok(Locked::Run(plan, revision.serial))
}

async fn execute(
    loaded: &Loaded,
    store: Store,
    plan: Plan,
    serial: u64,
    parallelism: usize,
    lock_id: String,
    events: &UnboundedSender<Event>,
) -> Result<Outcome, Failure> {
    let state = StateHandle::spawn(store);
    let run = Apply {
        stack: loaded.stack.clone(),
        inputs: loaded.inputs.clone(),
        providers: loaded.providers.clone(),
        state: state.clone(),
        serial,
        parallelism: parallelism.max(1),
    };
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let forward = {
        let events = events.clone();
        tokio::spawn(async move {
            while let Some(progress) = rx.recv().await {
                let _ = events.send(Event::Progress { progress });
            }
        })
    };
    let outcome = kiln_engine::apply::apply(&run, &plan, &tx).await;
    drop(tx);
    let _ = forward.await;
    let report = match outcome {
        Ok(report) => report,
        Err(e) => {
            let _ = state.call(move |s| s.release_lock(&lock_id)).await;
            return Err(e.into());
        }
    };
    let status = if report.succeeded() {
        RevisionStatus::Applied
    } else {
        RevisionStatus::Failed
    };
    let summary = serde_json::to_value(&report).map_err(|e| Failure::State(e.to_string()))?;
    let releases = loaded.releases.clone();
    let pruned = state
        .call(move |s| {
            s.finish_revision(serial, status, summary)?;
            s.append_event(&NewEvent {
                kind: "revision.finished".into(),
                address: None,
                serial: Some(serial),
                message: format!(
                    "revision {serial} {}",
                    if status == RevisionStatus::Applied {
                        "applied"
                    } else {
                        "failed"
                    }
                ),
                data: serde_json::Value::Null,
            })?;
            // Under the writer lock, so no apply is snapshotting a release meanwhile.
            let pruned = prune_releases(s, &releases);
            s.release_lock(&lock_id)?;
            Ok(pruned)
        })
        .await?;
    match pruned {
        Ok(gone) if !gone.is_empty() => {
            let _ = events.send(Event::Note {
                message: format!(
                    "note: removed {} old release(s) from disk (each service keeps its last {})",
                    gone.len(),
                    kiln_deploy::release::KEEP_PER_SERVICE
                ),
            });
        }
        Ok(_) => {}
        Err(why) => {
            let _ = events.send(Event::Note {
                message: format!("warning: old releases were not removed: {why}"),
            });
        }
    }
    Ok(Outcome {
        plan,
        report,
        elapsed: started.elapsed(),
    })
}

/// Removes the files of releases no service keeps (see `kiln_deploy::release::prunable`); the
/// records stay, so `kiln releases` still lists them.
fn prune_releases(store: &Store, releases: &Path) -> Result<Vec<String>, String> {
    use kiln_deploy::release::{self, ReleaseUse};
    let usage: Vec<ReleaseUse> = store
        .release_usage()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(service, digest, last_used)| ReleaseUse {
            service,
            digest,
            last_used,
        })
        .collect();
    let services: std::collections::BTreeSet<&str> =
        usage.iter().map(|u| u.service.as_str()).collect();
    let mut running = std::collections::BTreeSet::new();
    for service in services {
        if let Some(current) =
            crate::deploys::current_release(store, service).map_err(|e| e.message().to_owned())?
        {
            running.insert(current);
        }
    }
    let gone = release::prunable(&usage, &running, release::KEEP_PER_SERVICE);
    release::prune(releases, &gone).map_err(|e| e.to_string())
}
