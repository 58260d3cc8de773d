//! Running a validated workflow on the host.
//!
//! One dispatcher per workflow (the graph loop in [`run_graph`]) starts jobs when their `needs`
//! are done, evaluates job `if`s, expands matrices and runs instances in parallel up to the run's
//! limit; each instance ([`crate::job`]) runs its steps in order. Reusable workflows are run by
//! the same loop, nested. Nothing here prints: progress goes out as [`RunEvent`]s, results to the
//! [`RunStore`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use kiln_expr::Value;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::commands::Masker;
use crate::context::{Ctx, Flags, object};
use crate::events::{Annotation, JobRecord, Level, RunEvent, RunRecord, RunStore, Status};
use crate::job::{self, Instance};
use crate::load::WorkflowSet;
use crate::plan::{self, Leg};
use crate::workflow::{CallSecrets, Job, JobBody, Matrix, Vector, Workflow};

/// Everything a run needs besides the workflow.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The repository to run from (a git checkout).
    pub repo: PathBuf,
    /// The commit (or any revision) to run at.
    pub revision: String,
    /// `revision` is already a commit's full sha, checked by the caller (`kiln ci run` asked
    /// git for it): the run does not ask git again.
    pub revision_is_commit: bool,
    /// Where run directories are created (`<work_dir>/run-<id>/{workspace,temp}`).
    pub work_dir: PathBuf,
    /// Content-addressed artifact store.
    pub artifacts_dir: PathBuf,
    /// Content-addressed cache store.
    pub cache_dir: PathBuf,
    /// Home directory for `~` in cache paths (defaults to `$HOME`).
    pub home: PathBuf,
    /// The run id (`GITHUB_RUN_ID`).
    pub run_id: u64,
    /// `GITHUB_RUN_NUMBER`: this run's number among its workflow's runs, from 1 (GitHub numbers
    /// each workflow's runs on its own; the run id is unique over all of them).
    pub run_number: u64,
    /// The event name (`push`, `workflow_dispatch`, ...).
    pub event_name: String,
    /// The event payload (`github.event`).
    pub event: serde_json::Value,
    /// `GITHUB_REF`, e.g. `refs/heads/main`.
    pub git_ref: String,
    /// `owner/name`.
    pub repository: String,
    /// `workflow_dispatch` inputs.
    pub inputs: IndexMap<String, serde_json::Value>,
    /// Secrets (masked in every log line).
    pub secrets: IndexMap<String, String>,
    /// Configuration variables (`vars`).
    pub vars: IndexMap<String, String>,
    /// Deployment environments by name: what a job that names one (`jobs.<id>.environment`)
    /// reads instead of the run's `vars` and `secrets` (GitHub's environment variables and
    /// secrets). Names compare case-insensitively, as GitHub's do.
    pub environments: IndexMap<String, EnvironmentScope>,
    /// Jobs running at once (default: the number of cores).
    pub max_parallel: usize,
    /// Time between SIGTERM and SIGKILL when a step is stopped.
    pub kill_grace: Duration,
    /// How long one minute of `timeout-minutes` lasts: 60 s. GitHub reads only whole minutes
    /// there (`1.5` is one), so tests that need a timeout to expire shorten the minute instead.
    pub minute: Duration,
    /// Labels this host answers to besides [`HOST_LABELS`] (e.g. a self-hosted runner's).
    pub runner_labels: Vec<String>,
    /// Keep the directories (workspace, temp) of jobs that did not succeed; others are
    /// removed as each job ends.
    pub keep_workspace: bool,
}

/// What a deployment environment overrides for the jobs that name it: its variables and
/// secrets take precedence over the run's of the same name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvironmentScope {
    /// `vars.NAME` in the environment's jobs.
    pub vars: IndexMap<String, String>,
    /// `secrets.NAME` in the environment's jobs (masked like the run's).
    pub secrets: IndexMap<String, String>,
}

/// The `runs-on` labels the host stands in for: GitHub's Linux runners (`ubuntu-slim` is its
/// single-CPU one, generally available since January 2026) and a self-hosted Linux runner of
/// the host's architecture ([`runner_arch`]). Compared case-insensitively.
pub const HOST_LABELS: &[&str] = &[
    "self-hosted",
    "linux",
    "ubuntu-latest",
    "ubuntu-slim",
    "ubuntu-24.04",
    "ubuntu-22.04",
    "ubuntu-20.04",
    "kiln",
];

/// The labels of `runs_on` this host does not have; empty when it can run the job.
pub fn missing_labels(labels: &[String], extra: &[String]) -> Vec<String> {
    let arch = runner_arch().to_ascii_lowercase();
    labels
        .iter()
        .filter(|l| {
            let l = l.trim().to_ascii_lowercase();
            let base = l.strip_suffix("-arm").unwrap_or(&l);
            let arm_ok = l == base || arch == "arm64";
            !(l == arch
                || (arm_ok && HOST_LABELS.contains(&base))
                || extra.iter().any(|e| e.eq_ignore_ascii_case(&l)))
        })
        .cloned()
        .collect()
}

impl RunOptions {
    /// Defaults for a run of `repo` at `revision`, with stores under `state_dir`.
    pub fn new(repo: &Path, revision: &str, state_dir: &Path) -> RunOptions {
        RunOptions {
            repo: repo.to_path_buf(),
            revision: revision.to_owned(),
            revision_is_commit: false,
            work_dir: state_dir.join("runs"),
            artifacts_dir: state_dir.join("artifacts"),
            cache_dir: state_dir.join("cache"),
            home: std::env::var_os("HOME").map_or_else(|| state_dir.join("home"), PathBuf::from),
            run_id: 1,
            run_number: 1,
            event_name: "push".to_owned(),
            event: serde_json::json!({}),
            git_ref: "refs/heads/main".to_owned(),
            repository: "local/repo".to_owned(),
            inputs: IndexMap::new(),
            secrets: IndexMap::new(),
            vars: IndexMap::new(),
            environments: IndexMap::new(),
            max_parallel: std::thread::available_parallelism().map_or(2, |n| n.get()),
            kill_grace: Duration::from_secs(5),
            minute: Duration::from_secs(60),
            runner_labels: Vec::new(),
            keep_workspace: false,
        }
    }

    /// The environment named `name`, compared case-insensitively.
    pub fn environment(&self, name: &str) -> Option<&EnvironmentScope> {
        self.environments
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|(_, scope)| scope)
    }
}

/// A run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Preparing the workspace failed.
    #[error("cannot prepare the workspace: {0}")]
    Workspace(String),
    /// A job of the run needs what kiln cannot provide (`services`, `container`): nothing ran.
    #[error("the run needs what kiln cannot run on the host, so nothing ran:\n{0}")]
    Refused(String),
}

/// `github.server_url`: where links to the run's pages (artifacts, runs) point.
pub(crate) const SERVER_URL: &str = "http://localhost";

/// State shared by every job of a run.
pub(crate) struct Shared {
    pub opts: RunOptions,
    pub set: WorkflowSet,
    pub events: mpsc::UnboundedSender<RunEvent>,
    pub store: Arc<dyn RunStore>,
    pub masker: Mutex<Masker>,
    pub slots: Semaphore,
    /// `<work_dir>/run-<id>`: each job instance gets `job-<n>/{workspace,temp}` in it.
    pub run_dir: PathBuf,
    pub temp: PathBuf,
    pub sha: String,
    pub records: Mutex<Vec<JobRecord>>,
    /// Annotations made so far, by job display name, until the job's record takes them.
    pub annotations: Mutex<std::collections::HashMap<String, Vec<Annotation>>>,
    pub cache_lock: tokio::sync::Mutex<()>,
    pub counter: std::sync::atomic::AtomicUsize,
    /// Directory removals under way (awaited before the run returns).
    pub cleanups: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Finished jobs' directories, emptied, for the next jobs to take.
    pub spare_dirs: Arc<Mutex<Vec<PathBuf>>>,
}

/// Sends a step's held events and lets the rest through (when the hold ends, or is dropped).
struct Release<'a> {
    shared: &'a Shared,
    held: &'a Mutex<Option<Vec<RunEvent>>>,
}

impl Release<'_> {
    fn now(&self) {
        let events = self.held.lock().ok().and_then(|mut held| held.take());
        // Outside this hold's scope: into the enclosing step's hold, if any, else out.
        for event in events.into_iter().flatten() {
            self.shared.emit(event);
        }
    }
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.now();
    }
}

/// How long a step's events (started, its lines, finished) are held before they go out as they
/// come: a step that ends sooner sends them together, one wake-up of the printer instead of
/// three or more; a longer step's output streams live after this delay.
pub(crate) const HOLD_STEP_EVENTS: Duration = Duration::from_millis(20);

tokio::task_local! {
    /// The events held for the step this task is running (`None` once they go out live).
    static HELD: Arc<Mutex<Option<Vec<RunEvent>>>>;
}

impl Shared {
    /// Sends `event`, or keeps it with the step's held events (see [`Shared::hold_events`]).
    pub fn emit(&self, event: RunEvent) {
        let mut event = Some(event);
        let _ = HELD.try_with(|held| {
            if let Ok(mut held) = held.lock()
                && let Some(events) = held.as_mut()
            {
                events.extend(event.take());
            }
        });
        if let Some(event) = event {
            let _ = self.events.send(event);
        }
    }

    /// Runs `work` (a step) holding the events it emits for up to `hold`, then sending them in
    /// one go (in order) and the rest as they come. Nested holds (a composite action's steps)
    /// release theirs into the enclosing one, so a job's events keep their order. Dropped
    /// before it ends, it still sends what it held.
    pub async fn hold_events<T>(&self, hold: Duration, work: impl Future<Output = T>) -> T {
        let held = Arc::new(Mutex::new(Some(Vec::new())));
        let release = Release {
            shared: self,
            held: &held,
        };
        let work = HELD.scope(held.clone(), work);
        tokio::pin!(work);
        tokio::select! {
            biased;
            out = &mut work => out,
            () = tokio::time::sleep(hold) => {
                release.now();
                work.await
            }
        }
    }

    /// Reports an annotation of `job` and keeps it for the job's record.
    pub fn annotate(&self, job: &str, annotation: Annotation) {
        if let Ok(mut all) = self.annotations.lock() {
            all.entry(job.to_owned())
                .or_default()
                .push(annotation.clone());
        }
        self.emit(RunEvent::Annotation {
            job: job.to_owned(),
            annotation,
        });
    }

    /// The annotations `job` made, for its record.
    pub fn take_annotations(&self, job: &str) -> Vec<Annotation> {
        self.annotations
            .lock()
            .ok()
            .and_then(|mut all| all.remove(job))
            .unwrap_or_default()
    }

    pub fn mask(&self, line: &str) -> String {
        self.masker
            .lock()
            .map(|m| m.mask(line))
            .unwrap_or_else(|_| "***".to_owned())
    }

    pub fn add_mask(&self, value: &str) {
        if let Ok(mut m) = self.masker.lock() {
            m.add(value);
        }
    }

    /// Empties a finished job's directory off the async workers and keeps it for a later job.
    ///
    /// Why not remove it and make a new one: creating an inode where many were just deleted is
    /// slow on ext4 (it skips recently deleted inode numbers), and a trivial job made a dozen;
    /// that was a quarter of the runner's own CPU in a 100-job graph (see docs/benchmarks.md).
    /// A directory that cannot be emptied is removed instead.
    pub fn recycle_later(&self, dir: Option<PathBuf>) {
        let Some(dir) = dir else { return };
        let spare_dirs = Arc::clone(&self.spare_dirs);
        let handle = tokio::task::spawn_blocking(move || match empty_job_dir(&dir) {
            Ok(()) => match spare_dirs.lock() {
                Ok(mut spare) => spare.push(dir),
                Err(_) => drop(std::fs::remove_dir_all(dir)),
            },
            Err(_) => drop(std::fs::remove_dir_all(dir)),
        });
        if let Ok(mut c) = self.cleanups.lock() {
            c.push(handle);
        }
    }

    /// Whether step debug logging is on: a secret or a variable `ACTIONS_STEP_DEBUG` that is
    /// true, as GitHub's "Enabling debug logging" says (the runner reads it as a boolean:
    /// `true`, `1` or `$true`, without case). `::debug::` lines are then shown, and
    /// `runner.debug` and `$RUNNER_DEBUG` are `1`.
    pub fn step_debug(&self) -> bool {
        let o = &self.opts;
        [o.secrets.get(STEP_DEBUG), o.vars.get(STEP_DEBUG)]
            .into_iter()
            .flatten()
            .any(|v| {
                ["true", "1", "$true"]
                    .iter()
                    .any(|t| v.eq_ignore_ascii_case(t))
            })
    }

    /// `runner.tool_cache` and `$RUNNER_TOOL_CACHE`: shared by the run's jobs.
    pub fn tool_cache(&self) -> PathBuf {
        self.temp.join("tool-cache")
    }

    /// A job instance's own empty workspace and temp directory, as a fresh GitHub runner has:
    /// a finished job's, emptied, or a new one.
    pub fn job_dirs(&self) -> std::io::Result<(PathBuf, PathBuf)> {
        let spare = self.spare_dirs.lock().ok().and_then(|mut s| s.pop());
        let dir = match spare {
            Some(dir) => dir,
            None => {
                let n = self
                    .counter
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.run_dir.join(format!("job-{n}"))
            }
        };
        let (workspace, temp) = (dir.join("workspace"), dir.join("temp"));
        std::fs::create_dir_all(&workspace)?;
        std::fs::create_dir_all(&temp)?;
        Ok((workspace, temp))
    }

    /// The base `github` context (its `workspace` is set per job instance).
    pub fn github(&self, workflow: &Workflow, job_id: &str) -> Value {
        let o = &self.opts;
        // The ref without its kind: `feature/login` for `refs/heads/feature/login`, `1/merge`
        // for `refs/pull/1/merge` (a branch name may hold slashes).
        let ref_name = ["refs/heads/", "refs/tags/", "refs/pull/"]
            .iter()
            .find_map(|kind| o.git_ref.strip_prefix(kind))
            .unwrap_or(&o.git_ref)
            .to_owned();
        let ref_type = if o.git_ref.starts_with("refs/tags/") {
            "tag"
        } else {
            "branch"
        };
        let owner = o
            .repository
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        // Contexts reference, `github` context: every property GitHub documents. `head_ref`
        // and `base_ref` are the pull request's branches for `pull_request` and
        // `pull_request_target` (from the payload), empty strings for other events.
        let pull_branch = |side: &str| -> String {
            if !o.event_name.starts_with("pull_request") {
                return String::new();
            }
            o.event
                .get("pull_request")
                .and_then(|pr| pr.get(side))
                .and_then(|b| b.get("ref"))
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        // Who and what triggered the run, by GitHub's ids: from the payload's `sender` and
        // `repository` when it has them (`--event-file`, a webhook), '' otherwise (a local run
        // has no GitHub account or repository). The actor defaults to `kiln`.
        let payload = |path: &[&str]| -> Option<String> {
            let mut v = &o.event;
            for key in path {
                v = v.get(key)?;
            }
            match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let actor = payload(&["sender", "login"]).unwrap_or_else(|| "kiln".to_owned());
        let id = |path: &[&str]| payload(path).unwrap_or_default();
        // `github.token` is the run's `GITHUB_TOKEN` secret, as on GitHub, where both name the
        // one installation token: given with `--secret GITHUB_TOKEN=...`, '' otherwise.
        let token = o.secrets.get("GITHUB_TOKEN").cloned().unwrap_or_default();
        let workflow_ref = format!(
            "{}/{}@{}",
            o.repository,
            workflow.path.to_string_lossy(),
            o.git_ref
        );
        Value::from_json(&serde_json::json!({
            "action": "", "actor": actor, "actor_id": id(&["sender", "id"]),
            "api_url": "http://localhost/api",
            "graphql_url": "http://localhost/api/graphql",
            "event": o.event, "event_name": o.event_name, "job": job_id,
            "event_path": self.temp.join("event.json").to_string_lossy(),
            "ref": o.git_ref, "ref_name": ref_name, "ref_type": ref_type,
            "ref_protected": false, "head_ref": pull_branch("head"), "base_ref": pull_branch("base"),
            "repository": o.repository, "repository_owner": owner,
            // GitHub's form (`git://github.com/owner/repo.git`) on kiln's host.
            "repositoryUrl": format!("git://localhost/{}.git", o.repository),
            "repository_id": id(&["repository", "id"]),
            "repository_owner_id": id(&["repository", "owner", "id"]),
            "run_id": o.run_id.to_string(), "run_number": o.run_number.to_string(), "run_attempt": "1",
            "server_url": SERVER_URL, "sha": self.sha, "token": token,
            "triggering_actor": actor,
            "workflow": workflow_name(workflow), "workspace": "",
            "workflow_ref": workflow_ref, "workflow_sha": self.sha,
            "retention_days": "90", "secret_source": "Actions",
        }))
    }
}

fn workflow_name(w: &Workflow) -> String {
    w.name
        .clone()
        .unwrap_or_else(|| w.path.to_string_lossy().into_owned())
}

/// The result of a whole run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Conclusion: a failed job with `continue-on-error` does not fail it.
    pub status: Status,
    /// Every job (by id) with its own conclusion, aggregated over matrix instances (a failed
    /// job with `continue-on-error` is a failure here, as GitHub shows it).
    pub jobs: IndexMap<String, Status>,
    /// The run's directory (job workspaces and temp directories).
    pub run_dir: PathBuf,
}

/// Runs `set.root` at `opts.revision`, sending events to `events` and results to `store`.
pub async fn run(
    set: WorkflowSet,
    opts: RunOptions,
    events: mpsc::UnboundedSender<RunEvent>,
    store: Arc<dyn RunStore>,
) -> Result<RunResult, RunError> {
    if let Some(refusal) = set.refusal() {
        return Err(RunError::Refused(refusal));
    }
    let started = Instant::now();
    let run_dir = opts.work_dir.join(format!("run-{}", opts.run_id));
    let temp = run_dir.join("temp");
    let sha = if opts.revision_is_commit {
        opts.revision.clone()
    } else {
        resolve_commit(&opts.repo, &opts.revision).await?
    };
    std::fs::create_dir_all(&temp).map_err(|e| RunError::Workspace(e.to_string()))?;
    let mut opts = opts;
    // A `schedule` payload names the cron entry that fired (`github.event.schedule`, how a
    // workflow with several tells them apart): a local run is the first one's, unless the
    // payload given names one.
    if opts.event_name == "schedule"
        && let serde_json::Value::Object(event) = &mut opts.event
        && !event.contains_key("schedule")
        && let Some(cron) = set.root.on.get("schedule").and_then(|t| t.cron.first())
    {
        event.insert(
            "schedule".to_owned(),
            serde_json::Value::String(cron.clone()),
        );
    }
    // GITHUB_EVENT_PATH: actions and scripts read the payload from this file.
    std::fs::write(temp.join("event.json"), opts.event.to_string())
        .map_err(|e| RunError::Workspace(e.to_string()))?;
    let mut masker = Masker::default();
    let environment_secrets = opts.environments.values().flat_map(|e| e.secrets.values());
    for secret in opts.secrets.values().chain(environment_secrets) {
        masker.add(secret);
    }
    let root = set.root.clone();
    let shared = Arc::new(Shared {
        slots: Semaphore::new(opts.max_parallel.max(1)),
        opts,
        set,
        events,
        store,
        masker: Mutex::new(masker),
        run_dir: run_dir.clone(),
        temp,
        sha,
        records: Mutex::new(Vec::new()),
        annotations: Mutex::new(std::collections::HashMap::new()),
        cache_lock: tokio::sync::Mutex::new(()),
        counter: std::sync::atomic::AtomicUsize::new(0),
        cleanups: Mutex::new(Vec::new()),
        spare_dirs: Arc::default(),
    });
    let inputs = dispatch_inputs(&root, &shared.opts.event_name, &shared.opts.inputs);
    let scope = Arc::new(Scope {
        workflow: Arc::new(root.clone()),
        inputs,
        secrets: shared.opts.secrets.clone(),
        prefix: String::new(),
    });
    let title = root
        .run_name
        .as_ref()
        .and_then(|name| base_ctx(&shared, &scope, "").string(name).ok())
        .map(|title| shared.mask(&title));
    shared.emit(RunEvent::RunStarted {
        run_id: shared.opts.run_id,
        workflow: workflow_name(&root),
        title: title.clone(),
    });
    let results = match &root.concurrency {
        None => run_graph(shared.clone(), scope).await,
        Some(concurrency) => {
            let ctx = base_ctx(&shared, &scope, "");
            let mut held = match enter_group(&shared, &ctx, concurrency, WORKFLOW_LEVEL).await {
                Ok(held) => held,
                Err(status) => {
                    let ended =
                        IndexMap::from([(WORKFLOW_LEVEL.to_owned(), JobResult::ended(status))]);
                    return Ok(finish_run(&shared, &root, title, ended, started, run_dir).await);
                }
            };
            tokio::select! {
                results = run_graph(shared.clone(), scope) => results,
                () = held.cancel_requested() => {
                    // Dropping the graph aborts its jobs; their process groups die with them.
                    let message = format!(
                        "Canceling since a newer run in concurrency group '{}' cancels runs in progress",
                        ctx.string(&concurrency.group).unwrap_or_default()
                    );
                    shared.annotate(WORKFLOW_LEVEL, Annotation::new(Level::Error, message));
                    IndexMap::from([(
                        WORKFLOW_LEVEL.to_owned(),
                        JobResult::ended(Status::Cancelled),
                    )])
                }
            }
        }
    };
    Ok(finish_run(&shared, &root, title, results, started, run_dir).await)
}

/// Where a workflow-level concurrency group reports (as if it were a job).
const WORKFLOW_LEVEL: &str = "concurrency";

/// Waits for the group `concurrency` names, as the job (or the run, with `WORKFLOW_LEVEL`)
/// `who`. Otherwise how the run (or job) ends without running: cancelled when a newer arrival
/// replaced it, failed when the group cannot be evaluated or used (reported as an annotation
/// of `who`).
pub(crate) async fn enter_group(
    shared: &Shared,
    ctx: &Ctx,
    concurrency: &crate::workflow::Concurrency,
    who: &str,
) -> Result<crate::concurrency::Held, Status> {
    let evaluated = ctx.string(&concurrency.group).and_then(|group| {
        let cancel = ctx.flag(concurrency.cancel_in_progress.as_ref())?;
        let queue = match &concurrency.queue {
            None => crate::concurrency::Queue::Single,
            Some(text) => match ctx.string(text)?.as_str() {
                "single" => crate::concurrency::Queue::Single,
                "max" => crate::concurrency::Queue::Max,
                other => return Err(format!("`queue` is `{other}`, not single or max")),
            },
        };
        Ok((group, cancel, queue))
    });
    let (group, cancel_in_progress, queue) = match evaluated {
        Ok(g) => g,
        Err(e) => {
            let message = shared.mask(&format!("invalid `concurrency`: {e}"));
            shared.annotate(who, Annotation::new(Level::Error, message));
            return Err(Status::Failure);
        }
    };
    let groups = crate::concurrency::Groups::new(&shared.opts.work_dir.join("concurrency"));
    let (_never_tx, never) = watch::channel(false);
    let waiting = || {
        let line = shared.mask(&format!(
            "Waiting for the run in progress in concurrency group '{group}' to finish"
        ));
        shared.emit(RunEvent::Log {
            job: who.to_owned(),
            line,
        });
    };
    match groups
        .acquire(&group, cancel_in_progress, queue, never, waiting)
        .await
    {
        Ok(crate::concurrency::Acquired::Held(held)) => Ok(held),
        Ok(_) => {
            let message = shared.mask(&format!(
                "Canceling since a higher priority waiting request for '{group}' exists"
            ));
            shared.annotate(who, Annotation::new(Level::Error, message));
            Err(Status::Cancelled)
        }
        Err(e) => {
            let message = shared.mask(&format!("concurrency group '{group}': {e}"));
            shared.annotate(who, Annotation::new(Level::Error, message));
            Err(Status::Failure)
        }
    }
}

/// Empties a job's workspace and temp directory, keeping the runner's own files in temp
/// (`_runner_file_commands`: the step files and scripts are truncated before each use).
fn empty_job_dir(dir: &Path) -> std::io::Result<()> {
    for (sub, keep) in [("workspace", None), ("temp", Some(RUNNER_FILES_DIR))] {
        for entry in std::fs::read_dir(dir.join(sub))? {
            let entry = entry?;
            if keep.is_some_and(|k| entry.file_name() == k) {
                continue;
            }
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(entry.path())?;
            } else {
                std::fs::remove_file(entry.path())?;
            }
        }
    }
    Ok(())
}

/// The runner's own directory in a job's temp: its step files and step scripts.
pub(crate) const RUNNER_FILES_DIR: &str = "_runner_file_commands";

/// Reports and records the end of the run.
async fn finish_run(
    shared: &Shared,
    root: &Workflow,
    title: Option<String>,
    results: IndexMap<String, JobResult>,
    started: Instant,
    run_dir: PathBuf,
) -> RunResult {
    let cleanups = shared
        .cleanups
        .lock()
        .map(|mut c| std::mem::take(&mut *c))
        .unwrap_or_default();
    for c in cleanups {
        let _ = c.await;
    }
    if shared.opts.keep_workspace {
        // What is kept is for looking at the failed jobs: the emptied spares would only clutter it.
        let spare = shared
            .spare_dirs
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        for dir in spare {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    let status = conclusion(results.values().map(|r| r.status));
    let duration = started.elapsed();
    shared.emit(RunEvent::RunFinished { status, duration });
    let record = RunRecord {
        run_id: shared.opts.run_id,
        workflow: workflow_name(root),
        title,
        status,
        jobs: shared.records.lock().map(|r| r.clone()).unwrap_or_default(),
        duration,
    };
    shared.store.run_finished(&record);
    RunResult {
        status,
        jobs: results.into_iter().map(|(k, v)| (k, v.shown)).collect(),
        run_dir,
    }
}

/// `inputs` for the root workflow: declared defaults, overridden by what was passed, typed as
/// declared — GitHub's `inputs` context keeps booleans and numbers as such (only
/// `github.event.inputs` holds strings).
fn dispatch_inputs(
    workflow: &Workflow,
    event: &str,
    given: &IndexMap<String, serde_json::Value>,
) -> Value {
    let mut out = IndexMap::new();
    let declared = workflow.on.get(event).map(|t| &t.inputs);
    for (name, input) in declared.into_iter().flatten() {
        let value = match (given.get(name), &input.default) {
            (Some(v), _) => Value::from_json(v),
            (None, Some(d)) => Value::String(d.text.clone()),
            // GitHub gives an undeclared-default boolean `false` and other types ''.
            (None, None) if input.kind == crate::workflow::InputType::Boolean => Value::Bool(false),
            (None, None) => Value::String(String::new()),
        };
        out.insert(name.clone(), coerce_input(value, &input.kind));
    }
    for (k, v) in given {
        if !out.contains_key(k) {
            out.insert(k.clone(), Value::from_json(v));
        }
    }
    Value::Object(out)
}

/// The full sha of `revision`.
pub(crate) async fn resolve_commit(repo: &Path, revision: &str) -> Result<String, RunError> {
    let fail = |e: String| RunError::Workspace(e);
    let out = tokio::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", "--verify"])
        .arg(format!("{revision}^{{commit}}"))
        .output()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!(
            "unknown revision `{revision}`: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Checks out `sha` of `repo` into `dest` (the workspace, and `actions/checkout` with `path`).
/// A `--shared` clone borrows the repository's objects instead of copying them, so it costs
/// what writing the files costs; it lives only as long as the run.
///
/// Like actions/checkout, whatever the directory held is replaced, but only once the new
/// checkout is complete: it is made beside `dest` and renamed over it, so a checkout that fails
/// (a sparse pattern git refuses, say) leaves the directory as it was.
pub(crate) async fn extract(
    repo: &Path,
    sha: &str,
    branch: Option<&str>,
    dest: &Path,
    how: &crate::builtins::Extract<'_>,
) -> Result<(), String> {
    let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
        return Err(format!(
            "{}: not a directory to check out into",
            dest.display()
        ));
    };
    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    let staging = parent.join(format!(".{}.kiln-checkout", name.to_string_lossy()));
    let _ = std::fs::remove_dir_all(&staging);
    let made = clone_into(repo, sha, branch, &staging, how).await;
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    std::fs::rename(&staging, dest).map_err(|e| format!("{}: {e}", dest.display()))
}

/// [`extract`]'s clone and checkout, into a directory that does not exist yet.
async fn clone_into(
    repo: &Path,
    sha: &str,
    branch: Option<&str>,
    dest: &Path,
    how: &crate::builtins::Extract<'_>,
) -> Result<(), String> {
    let git = |args: &[&std::ffi::OsStr]| {
        let mut cmd = tokio::process::Command::new("git");
        cmd.args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE");
        if !how.lfs {
            cmd.env("GIT_LFS_SKIP_SMUDGE", "1");
        }
        cmd
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    let clone = git(&[
        &os("clone"),
        &os("--quiet"),
        &os("--shared"),
        &os("--no-checkout"),
        repo.as_os_str(),
        dest.as_os_str(),
    ])
    .output()
    .await
    .map_err(|e| e.to_string())?;
    if !clone.status.success() {
        return Err(format!(
            "git clone: {}",
            String::from_utf8_lossy(&clone.stderr).trim()
        ));
    }
    if !how.sparse.patterns.is_empty() {
        let mut args = vec![
            os("-C"),
            dest.as_os_str().to_owned(),
            os("sparse-checkout"),
            os("set"),
        ];
        if !how.sparse.cone {
            args.push(os("--no-cone"));
        }
        args.push(os("--"));
        args.extend(how.sparse.patterns.iter().map(|p| os(p)));
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let set = git(&refs).output().await.map_err(|e| e.to_string())?;
        if !set.status.success() {
            return Err(format!(
                "git sparse-checkout set: {}",
                String::from_utf8_lossy(&set.stderr).trim()
            ));
        }
    }
    let mut args = vec![
        os("-C"),
        dest.as_os_str().to_owned(),
        os("checkout"),
        os("--quiet"),
    ];
    match branch {
        Some(b) => args.extend([os("-B"), os(b)]),
        None => args.push(os("--detach")),
    }
    args.push(os(sha));
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let checkout = git(&refs).output().await.map_err(|e| e.to_string())?;
    if checkout.status.success() {
        Ok(())
    } else {
        Err(format!(
            "git checkout {sha}: {}",
            String::from_utf8_lossy(&checkout.stderr).trim()
        ))
    }
}

/// The workflow being run by one graph loop, with what its caller passed.
pub(crate) struct Scope {
    pub workflow: Arc<Workflow>,
    pub inputs: Value,
    pub secrets: IndexMap<String, String>,
    /// `caller / ` for jobs of a called workflow.
    pub prefix: String,
}

/// A finished job (all instances).
#[derive(Debug, Clone)]
pub(crate) struct JobResult {
    /// The result `needs.<job>.result` and the run's conclusion see.
    pub status: Status,
    /// The job's own conclusion, as GitHub shows it: a job with `continue-on-error` that
    /// fails shows as failed while its dependents and the run see success (GitHub's
    /// "Workflow syntax", `jobs.<job_id>.continue-on-error`; actions/runner#1161).
    pub shown: Status,
    pub outputs: IndexMap<String, String>,
}

impl JobResult {
    /// A job that ended as `status` without outputs, shown as it ended.
    fn ended(status: Status) -> JobResult {
        JobResult {
            status,
            shown: status,
            outputs: IndexMap::new(),
        }
    }
}

/// The overall conclusion of a set of results.
pub(crate) fn conclusion(statuses: impl Iterator<Item = Status>) -> Status {
    let all: Vec<Status> = statuses.collect();
    if all.contains(&Status::Failure) {
        Status::Failure
    } else if all.contains(&Status::Cancelled) {
        Status::Cancelled
    } else if !all.is_empty() && all.iter().all(|s| *s == Status::Skipped) {
        Status::Skipped
    } else {
        Status::Success
    }
}

/// Runs every job of `scope.workflow` as the graph allows.
/// Boxed with an explicit `Send` bound because reusable workflows make it recursive.
pub(crate) fn run_graph(shared: Arc<Shared>, scope: Arc<Scope>) -> GraphFuture {
    Box::pin(graph_loop(shared, scope))
}

type GraphFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = IndexMap<String, JobResult>> + Send>>;

async fn graph_loop(shared: Arc<Shared>, scope: Arc<Scope>) -> IndexMap<String, JobResult> {
    let workflow = scope.workflow.clone();
    let mut done: IndexMap<String, JobResult> = IndexMap::new();
    let mut pending: Vec<String> = workflow.jobs.keys().cloned().collect();
    let mut running: JoinSet<(String, JobResult)> = JoinSet::new();
    loop {
        let mut progressed = true;
        while progressed {
            progressed = false;
            let ready: Vec<String> = pending
                .iter()
                .filter(|id| {
                    workflow
                        .jobs
                        .get(*id)
                        .is_some_and(|j| j.needs.iter().all(|n| done.contains_key(&n.name)))
                })
                .cloned()
                .collect();
            for id in ready {
                pending.retain(|p| *p != id);
                let Some(job) = workflow.jobs.get(&id).cloned() else {
                    continue;
                };
                let needs = needs_context(&job, &done);
                let mut ctx = base_ctx(&shared, &scope, &id);
                ctx.set("needs", needs.clone());
                ctx.flags = ancestor_flags(&workflow, &id, &done);
                let run_it = match &job.condition {
                    None => ctx.flags.success(),
                    Some(c) => match ctx.condition(c) {
                        Ok(b) => b,
                        Err(e) => {
                            job_error(&shared, &scope, &id, &format!("invalid `if`: {e}"));
                            done.insert(id.clone(), JobResult::ended(Status::Failure));
                            progressed = true;
                            continue;
                        }
                    },
                };
                if !run_it {
                    skipped(&shared, &scope, &job);
                    done.insert(id.clone(), JobResult::ended(Status::Skipped));
                    progressed = true;
                    continue;
                }
                let (shared2, scope2) = (shared.clone(), scope.clone());
                running.spawn(async move {
                    let result = run_job(shared2, scope2, job, ctx).await;
                    (id, result)
                });
            }
        }
        match running.join_next().await {
            Some(Ok((id, result))) => {
                done.insert(id, result);
            }
            Some(Err(_)) => {}
            None => break,
        }
    }
    // Jobs whose needs never finished (a dependency panicked) count as failed.
    for id in pending {
        done.insert(id, JobResult::ended(Status::Failure));
    }
    workflow
        .jobs
        .keys()
        .filter_map(|k| done.get(k).map(|r| (k.clone(), r.clone())))
        .collect()
}

/// The status functions of a job's `if`, over every job it depends on, directly or not
/// (GitHub's job-level `success()` and `failure()`; see [`Flags::unfinished`]).
fn ancestor_flags(workflow: &Workflow, id: &str, done: &IndexMap<String, JobResult>) -> Flags {
    let mut flags = Flags::default();
    let mut stack = vec![id.to_owned()];
    let mut seen = Vec::new();
    while let Some(j) = stack.pop() {
        let Some(job) = workflow.jobs.get(&j) else {
            continue;
        };
        for n in &job.needs {
            if seen.contains(&n.name) {
                continue;
            }
            seen.push(n.name.clone());
            match done.get(&n.name).map(|r| r.status) {
                Some(Status::Success) => {}
                Some(Status::Failure) => flags.failed = true,
                _ => flags.unfinished = true,
            }
            stack.push(n.name.clone());
        }
    }
    flags
}

fn needs_context(job: &Job, done: &IndexMap<String, JobResult>) -> Value {
    let mut needs = IndexMap::new();
    for n in &job.needs {
        if let Some(r) = done.get(&n.name) {
            let mut o = IndexMap::new();
            o.insert(
                "result".to_owned(),
                Value::String(r.status.as_str().to_owned()),
            );
            o.insert("outputs".to_owned(), object(&r.outputs));
            needs.insert(n.name.clone(), Value::Object(o));
        }
    }
    Value::Object(needs)
}

/// The contexts every place of a job sees.
pub(crate) fn base_ctx(shared: &Shared, scope: &Scope, job_id: &str) -> Ctx {
    let mut ctx = Ctx::default();
    // Reusing workflows: a called workflow's `github` context is the caller's (its name and
    // `workflow_ref` included), only `github.job` is the called workflow's own job.
    ctx.set("github", shared.github(&shared.set.root, job_id));
    ctx.set("inputs", scope.inputs.clone());
    ctx.set("vars", object(&shared.opts.vars));
    ctx.set("secrets", object(&scope.secrets));
    ctx.set("needs", Value::Object(IndexMap::new()));
    ctx.set("strategy", Value::Object(IndexMap::new()));
    ctx.set("matrix", Value::Null);
    ctx.set("env", Value::Object(IndexMap::new()));
    ctx.set("steps", Value::Object(IndexMap::new()));
    ctx.set("runner", runner_context(shared, &shared.temp));
    ctx
}

/// The secret or variable that turns step debug logging on.
const STEP_DEBUG: &str = "ACTIONS_STEP_DEBUG";

/// The `runner` context. `temp` is the job's own temporary directory once the job has one (the
/// same directory as `$RUNNER_TEMP`); the tool cache is shared by the run's jobs. `debug` is
/// there only with debug logging on, as the runner sets it.
pub(crate) fn runner_context(shared: &Shared, temp: &Path) -> Value {
    let mut runner = serde_json::json!({
        "os": "Linux", "arch": runner_arch(), "name": "kiln", "environment": "self-hosted",
        "temp": temp.to_string_lossy(), "tool_cache": shared.tool_cache().to_string_lossy(),
    });
    if shared.step_debug() {
        runner["debug"] = serde_json::Value::String("1".to_owned());
    }
    Value::from_json(&runner)
}

pub(crate) fn runner_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "X64",
        "aarch64" => "ARM64",
        "arm" => "ARM",
        _ => "X86",
    }
}

/// A job that failed before any instance could start (its `if` or `strategy` did not
/// evaluate, its called workflow is missing): shown and recorded as failed, with the error as
/// its annotation, as GitHub shows such a job.
fn job_error(shared: &Shared, scope: &Scope, id: &str, message: &str) {
    let job = format!("{}{id}", scope.prefix);
    shared.annotate(&job, Annotation::new(Level::Error, shared.mask(message)));
    ended_without_steps(shared, scope, id, job, Status::Failure);
}

fn skipped(shared: &Shared, scope: &Scope, job: &Job) {
    let name = format!(
        "{}{}",
        scope.prefix,
        job.name
            .as_ref()
            .map_or(job.id.name.as_str(), |n| n.text.as_str())
    );
    ended_without_steps(shared, scope, &job.id.name, name, Status::Skipped);
}

/// Reports and records job `id`, shown as `name`, as ended with `status` without running.
fn ended_without_steps(shared: &Shared, scope: &Scope, id: &str, name: String, status: Status) {
    shared.emit(RunEvent::JobFinished {
        job: name.clone(),
        status,
        duration: Duration::ZERO,
    });
    let annotations = shared.take_annotations(&name);
    let record = JobRecord {
        id: format!("{}{id}", scope.prefix),
        name,
        status,
        outputs: IndexMap::new(),
        steps: Vec::new(),
        summary: String::new(),
        annotations,
        duration: Duration::ZERO,
    };
    shared.store.job_finished(shared.opts.run_id, &record);
    if let Ok(mut r) = shared.records.lock() {
        r.push(record);
    }
}

/// Expands the job's matrix (if any) and runs its instances.
async fn run_job(shared: Arc<Shared>, scope: Arc<Scope>, job: Job, ctx: Ctx) -> JobResult {
    let (combos, fail_fast, max_parallel) = match strategy(&job, &ctx) {
        Ok(s) => s,
        Err(e) => {
            job_error(&shared, &scope, &job.id.name, &e);
            return JobResult::ended(Status::Failure);
        }
    };
    let total = combos.as_ref().map_or(1, Vec::len);
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let cancel_tx = Arc::new(cancel_tx);
    let limit = Arc::new(Semaphore::new(max_parallel.unwrap_or(total).max(1)));
    let mut set: JoinSet<(Status, bool, IndexMap<String, String>)> = JoinSet::new();
    let instances: Vec<Option<Leg>> = match combos {
        Some(c) => c.into_iter().map(Some).collect(),
        None => vec![None],
    };
    for (index, combo) in instances.into_iter().enumerate() {
        let mut ictx = ctx.clone();
        if let Some(leg) = &combo {
            ictx.set("matrix", Value::Object(leg.matrix.clone()));
        }
        ictx.set(
            "strategy",
            Value::from_json(&serde_json::json!({
                "fail-fast": fail_fast, "job-index": index, "job-total": total,
                "max-parallel": max_parallel.unwrap_or(total),
            })),
        );
        let display = display_name(&job, &ictx, combo.as_ref(), &scope.prefix);
        // `max-parallel`: instances start in matrix order, as GitHub queues them (a later one
        // never takes a free place before an earlier one). A job with a concurrency group
        // waits for its group first and takes its place after.
        let ordered = match job.concurrency {
            None => limit.clone().acquire_owned().await.ok(),
            Some(_) => None,
        };
        let (shared, scope, job, limit, cancel) = (
            shared.clone(),
            scope.clone(),
            job.clone(),
            limit.clone(),
            cancel_rx.clone(),
        );
        let cancel_tx = cancel_tx.clone();
        set.spawn(async move {
            // The group first: a job waiting for its group holds no slot others could use.
            let (mut cancel, _group) = match &job.concurrency {
                None => (cancel, None),
                Some(c) => match enter_group(&shared, &ictx, c, &display).await {
                    Ok(held) => {
                        let (cancel, guard) = cancel_with_group(cancel, held);
                        (cancel, Some(guard))
                    }
                    Err(status) => {
                        ended_without_steps(&shared, &scope, &job.id.name, display, status);
                        return (status, false, IndexMap::new());
                    }
                },
            };
            let _own = match ordered {
                Some(permit) => Some(permit),
                None => limit.acquire_owned().await.ok(),
            };
            // A host slot is for a job that runs steps: a call of a reusable workflow runs
            // none itself, and holding one while its jobs wait for slots would deadlock as soon
            // as the calls running side by side hold every slot.
            let _slot = match &job.body {
                JobBody::Steps(_) => Some(shared.slots.acquire().await),
                JobBody::Call(_) => None,
            };
            // Cancelled before it started (fail-fast, a cancelled run): recorded as cancelled,
            // as GitHub lists such a job in the run.
            if *cancel.borrow_and_update() {
                ended_without_steps(&shared, &scope, &job.id.name, display, Status::Cancelled);
                return (Status::Cancelled, false, IndexMap::new());
            }
            let instance = Instance {
                display,
                ctx: ictx,
                cancel,
            };
            let (status, continue_on_error, outputs) = match &job.body {
                JobBody::Steps(_) => job::run_instance(&shared, &scope, &job, instance).await,
                JobBody::Call(_) => run_call(shared.clone(), scope.clone(), &job, instance).await,
            };
            if status == Status::Failure && !continue_on_error && fail_fast {
                let _ = cancel_tx.send(true);
            }
            (status, continue_on_error, outputs)
        });
    }
    let mut statuses = Vec::new();
    let mut shown = Vec::new();
    let mut outputs = IndexMap::new();
    while let Some(joined) = set.join_next().await {
        let Ok((status, continue_on_error, out)) = joined else {
            statuses.push(Status::Failure);
            shown.push(Status::Failure);
            continue;
        };
        shown.push(status);
        // A failed job with `continue-on-error` does not fail its dependents.
        statuses.push(if status == Status::Failure && continue_on_error {
            Status::Success
        } else {
            status
        });
        for (k, v) in out {
            if !v.is_empty() || !outputs.contains_key(&k) {
                outputs.insert(k, v);
            }
        }
    }
    JobResult {
        status: conclusion(statuses.into_iter()),
        shown: conclusion(shown.into_iter()),
        outputs,
    }
}

/// A job's cancellation that also fires when a newer job of its concurrency group cancels it;
/// the group is held until the returned guard is dropped.
fn cancel_with_group(
    mut matrix: watch::Receiver<bool>,
    mut held: crate::concurrency::Held,
) -> (watch::Receiver<bool>, AbortOnDrop) {
    let (tx, rx) = watch::channel(*matrix.borrow());
    let task = tokio::spawn(async move {
        let matrix_cancelled = async {
            // A closed channel cancels nothing.
            if matrix.wait_for(|c| *c).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = matrix_cancelled => {}
            () = held.cancel_requested() => {}
        }
        let _ = tx.send(true);
        // Keep the group until the job is done with it (the guard aborts this task).
        std::future::pending::<()>().await;
        drop(held);
    });
    (rx, AbortOnDrop(task))
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type StrategyPlan = (Option<Vec<Leg>>, bool, Option<usize>);

fn strategy(job: &Job, ctx: &Ctx) -> Result<StrategyPlan, String> {
    let Some(strategy) = &job.strategy else {
        return Ok((None, true, None));
    };
    let fail_fast = match &strategy.fail_fast {
        None => true,
        Some(_) => ctx.flag(strategy.fail_fast.as_ref())?,
    };
    let max_parallel = ctx
        .number(strategy.max_parallel.as_ref())?
        .map(|n| n.max(1.0) as usize);
    let Some(matrix) = &strategy.matrix else {
        return Ok((None, fail_fast, max_parallel));
    };
    let (vectors, include, exclude) = match matrix {
        Matrix::Expr(text) => match ctx.value(text)? {
            Value::Object(mut m) => {
                let include = take_list(&mut m, "include");
                let exclude = take_list(&mut m, "exclude");
                (m, include, exclude)
            }
            other => {
                return Err(format!(
                    "the matrix expression gave {}, not an object",
                    other.kind_name()
                ));
            }
        },
        Matrix::Table(table) => {
            let mut vectors = IndexMap::new();
            for (k, v) in &table.vectors {
                vectors.insert(k.clone(), vector_value(v, ctx)?);
            }
            let list = |v: &Option<Vector>| -> Result<Vec<Value>, String> {
                match v {
                    None => Ok(Vec::new()),
                    Some(v) => match vector_value(v, ctx)? {
                        Value::Array(a) => Ok(a),
                        Value::Null => Ok(Vec::new()),
                        other => Err(format!(
                            "matrix include/exclude gave {}, not a list",
                            other.kind_name()
                        )),
                    },
                }
            };
            (vectors, list(&table.include)?, list(&table.exclude)?)
        }
    };
    let combos = plan::expand_legs(&vectors, &include, &exclude).map_err(|e| e.to_string())?;
    Ok((Some(combos), fail_fast, max_parallel))
}

fn take_list(m: &mut IndexMap<String, Value>, key: &str) -> Vec<Value> {
    match m.shift_remove(key) {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    }
}

/// A vector's values, with `${{ }}` inside literal lists rendered.
fn vector_value(v: &Vector, ctx: &Ctx) -> Result<Value, String> {
    match v {
        Vector::Expr(text) => ctx.value(text),
        Vector::List(items, span) => {
            let rendered: Result<Vec<Value>, String> =
                items.iter().map(|j| render_json(j, ctx, *span)).collect();
            Ok(Value::Array(rendered?))
        }
    }
}

fn render_json(
    j: &serde_json::Value,
    ctx: &Ctx,
    span: kiln_spec::source::Span,
) -> Result<Value, String> {
    Ok(match j {
        serde_json::Value::String(s) if s.contains("${{") => ctx.value(&crate::workflow::Text {
            text: s.clone(),
            span,
        })?,
        serde_json::Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| render_json(x, ctx, span))
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| Ok((k.clone(), render_json(x, ctx, span)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => Value::from_json(other),
    })
}

fn display_name(job: &Job, ctx: &Ctx, combo: Option<&Leg>, prefix: &str) -> String {
    let (base, uses_matrix) = match &job.name {
        Some(n) => (
            ctx.string(n).unwrap_or_else(|_| n.text.clone()),
            n.text.contains("matrix"),
        ),
        None => (job.id.name.clone(), false),
    };
    format!("{prefix}{}", plan::display_name(&base, uses_matrix, combo))
}

/// Runs a call of a reusable workflow as a nested graph; its outputs come from
/// `on.workflow_call.outputs` evaluated over the `jobs` context.
async fn run_call(
    shared: Arc<Shared>,
    scope: Arc<Scope>,
    job: &Job,
    instance: Instance,
) -> (Status, bool, IndexMap<String, String>) {
    let JobBody::Call(call) = &job.body else {
        return (Status::Failure, false, IndexMap::new());
    };
    let key = call.uses.text.trim_start_matches("./");
    let Some(child) = shared.set.called.get(key).cloned() else {
        job_error(
            &shared,
            &scope,
            &job.id.name,
            &format!("reusable workflow `{}` was not loaded", call.uses.text),
        );
        return (Status::Failure, false, IndexMap::new());
    };
    let ctx = &instance.ctx;
    let mut inputs = IndexMap::new();
    if let Some(trigger) = child.workflow_call() {
        for (name, input) in &trigger.inputs {
            let value = match (call.with.get(name), &input.default) {
                (Some(t), _) | (None, Some(t)) => match ctx.value(t) {
                    Ok(v) => coerce_input(v, &input.kind),
                    Err(e) => {
                        job_error(&shared, &scope, &job.id.name, &e);
                        return (Status::Failure, false, IndexMap::new());
                    }
                },
                (None, None) => Value::Null,
            };
            inputs.insert(name.clone(), value);
        }
    }
    let secrets: IndexMap<String, String> = match &call.secrets {
        CallSecrets::Inherit => scope.secrets.clone(),
        CallSecrets::Map(m) => m
            .iter()
            .filter_map(|(k, t)| ctx.string(t).ok().map(|v| (k.clone(), v)))
            .collect(),
    };
    // What the called workflow receives as `secrets` is secret there, whatever the caller
    // wrote (a literal too): the runner masks every value of a job's secrets.
    for value in secrets.values() {
        shared.add_mask(value);
    }
    let child_scope = Arc::new(Scope {
        workflow: Arc::new(child.clone()),
        inputs: Value::Object(inputs),
        secrets,
        prefix: format!("{} / ", instance.display),
    });
    let results = run_graph(shared.clone(), child_scope.clone()).await;
    let status = conclusion(results.values().map(|r| r.status));
    let mut jobs = IndexMap::new();
    for (id, r) in &results {
        let mut o = IndexMap::new();
        o.insert(
            "result".to_owned(),
            Value::String(r.status.as_str().to_owned()),
        );
        o.insert("outputs".to_owned(), object(&r.outputs));
        jobs.insert(id.clone(), Value::Object(o));
    }
    let mut octx = base_ctx(&shared, &child_scope, &job.id.name);
    octx.set("jobs", Value::Object(jobs));
    let mut outputs = IndexMap::new();
    if let Some(trigger) = child.workflow_call() {
        for (name, out) in &trigger.outputs {
            outputs.insert(name.clone(), octx.string(&out.value).unwrap_or_default());
        }
    }
    (status, false, outputs)
}

fn coerce_input(v: Value, kind: &crate::workflow::InputType) -> Value {
    use crate::workflow::InputType;
    match (kind, v) {
        (InputType::Boolean, Value::String(s)) => Value::Bool(s == "true"),
        (InputType::Number, Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .map_or(Value::String(s), Value::Number),
        (_, v) => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emptied_job_dir_keeps_only_the_runners_own_files() {
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path();
        let runner = job.join("temp").join(RUNNER_FILES_DIR);
        std::fs::create_dir_all(job.join("workspace/src/deep")).unwrap();
        std::fs::create_dir_all(&runner).unwrap();
        std::fs::write(job.join("workspace/src/deep/f"), "x").unwrap();
        std::fs::write(job.join("workspace/.hidden"), "x").unwrap();
        std::fs::write(job.join("temp/left"), "x").unwrap();
        std::fs::write(runner.join("set_env"), "A=1").unwrap();
        empty_job_dir(job).unwrap();
        let names = |d: &Path| -> Vec<String> {
            std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        assert!(names(&job.join("workspace")).is_empty());
        assert_eq!(names(&job.join("temp")), [RUNNER_FILES_DIR]);
    }
}
