//! One job instance: its environment, its steps in order (with composite actions run inline),
//! post steps, outputs and its record.
//!
//! A step's lifecycle: its `if` is evaluated (default `success()`), then it runs (a script in
//! its shell, a built-in action, or a composite action's steps), then the environment files it
//! wrote are applied, then its outcome and conclusion (after `continue-on-error`) are recorded
//! in the `steps` context.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use kiln_expr::Value;
use tokio::sync::watch;

use crate::builtins::{self, Post};
use crate::commands::{
    deprecated_command, is_command, parse_command, parse_env_file, parse_legacy_command,
};
use crate::context::{Ctx, Flags, object};
use crate::events::{Annotation, JobRecord, Level, RunEvent, SourceLocation, Status, StepRecord};
use crate::matchers::{MatcherError, Matchers};
use crate::process::{self, Exit, Spawn};
use crate::runner::{Scope, Shared, runner_arch, runner_context};
use crate::workflow::{ActionRef, Env, Job, JobBody, Mapping, Step, StepAction, Text};

mod background;
use background::{Background, control_step};

/// GitHub's default job timeout.
const DEFAULT_JOB_TIMEOUT_MINUTES: f64 = 360.0;

/// How long the steps that run after a job's timeout (`if: always()`, `cancelled()`, post
/// steps) may take before they are killed too: GitHub's job cancel timeout (5 minutes).
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The largest `$GITHUB_STEP_SUMMARY` a step may write, in bytes (the runner's 1 MiB).
const STEP_SUMMARY_LIMIT: usize = 1024 * 1024;

/// One instance of a job (one matrix combination).
pub(crate) struct Instance {
    pub display: String,
    pub ctx: Ctx,
    pub cancel: watch::Receiver<bool>,
}

/// What a job instance accumulates while its steps run.
struct JobState {
    /// Workflow + job `env`.
    env: IndexMap<String, String>,
    /// Set through `GITHUB_ENV`.
    added_env: IndexMap<String, String>,
    /// Added through `GITHUB_PATH`, first entry first in `PATH`.
    path: Vec<String>,
    failed: bool,
    cancelled: bool,
    /// The job's `timeout-minutes` expired: GitHub cancels the job (see [`JobState::time_out`]).
    timed_out: bool,
    /// `timeout-minutes`, for the message when it expires.
    timeout_minutes: f64,
    posts: Vec<JobPost>,
    summary: String,
    pgids: Vec<i32>,
    records: Vec<StepRecord>,
    /// This instance's own `GITHUB_WORKSPACE` (empty until `actions/checkout`).
    workspace: PathBuf,
    temp: PathBuf,
    deadline: Instant,
    cancel: watch::Receiver<bool>,
    /// `::add-matcher::` problem matchers: the job's, for every later step.
    matchers: Matchers,
    /// Where the steps' environment files and scripts are written: one set for the job's
    /// steps, one for each background step (see [`JobState::fork`]).
    files_dir: PathBuf,
    /// A background step's `GITHUB_ENV` and `GITHUB_PATH` changes, in order, for the job to
    /// apply when the step is waited for (`None` for the job's own state).
    writes: Option<Vec<Write>>,
}

/// A change a step made to the job's environment.
#[derive(Debug, Clone)]
enum Write {
    Env(String, String),
    /// A directory put first in `PATH`.
    PathFirst(String),
    /// A directory put first in `PATH`, leaving its old place.
    PathMoved(String),
}

impl JobState {
    fn set_env(&mut self, name: String, value: String) {
        if let Some(writes) = &mut self.writes {
            writes.push(Write::Env(name.clone(), value.clone()));
        }
        self.added_env.insert(name, value);
    }

    fn path_first(&mut self, dir: String) {
        if let Some(writes) = &mut self.writes {
            writes.push(Write::PathFirst(dir.clone()));
        }
        self.path.insert(0, dir);
    }

    fn path_moved(&mut self, dir: String) {
        if let Some(writes) = &mut self.writes {
            writes.push(Write::PathMoved(dir.clone()));
        }
        self.path.retain(|p| *p != dir);
        self.path.insert(0, dir);
    }

    /// A background step's own state (see [`JobState::fork`]).
    fn is_background(&self) -> bool {
        self.writes.is_some()
    }

    fn apply(&mut self, write: Write) {
        match write {
            Write::Env(name, value) => self.set_env(name, value),
            Write::PathFirst(dir) => self.path_first(dir),
            Write::PathMoved(dir) => self.path_moved(dir),
        }
    }

    /// The state a background step starts from: the job's environment as it is now, its own
    /// files and cancellation, and nothing of what the job's steps recorded or queued, which
    /// the step's own are added to when it is waited for.
    fn fork(&self, files_dir: PathBuf, cancel: watch::Receiver<bool>) -> JobState {
        JobState {
            env: self.env.clone(),
            added_env: self.added_env.clone(),
            path: self.path.clone(),
            failed: self.failed,
            cancelled: self.cancelled,
            timed_out: self.timed_out,
            timeout_minutes: self.timeout_minutes,
            posts: Vec::new(),
            summary: String::new(),
            pgids: Vec::new(),
            records: Vec::new(),
            workspace: self.workspace.clone(),
            temp: self.temp.clone(),
            deadline: self.deadline,
            cancel,
            matchers: self.matchers.clone(),
            files_dir,
            writes: Some(Vec::new()),
        }
    }

    /// The job's `timeout-minutes` expired. GitHub cancels the job (workflow syntax,
    /// `jobs.<job_id>.timeout-minutes`), and the runner handles that cancellation as any other:
    /// the job's status becomes `cancelled` (whatever it was), the running step is cancelled,
    /// and only the steps whose `if` holds on a cancelled job (`always()`, `cancelled()`) and
    /// post steps still run, within the cancel timeout. Returns the message to log, once.
    fn time_out(&mut self) -> Option<String> {
        if self.timed_out {
            return None;
        }
        self.timed_out = true;
        self.cancelled = true;
        self.deadline = Instant::now() + CANCEL_TIMEOUT;
        Some(format!(
            "##[error]The job has exceeded the maximum execution time of {} minutes.",
            self.timeout_minutes
        ))
    }
}

/// The `steps` and `inputs` of the job itself or of a composite action being run.
struct Frame {
    steps: IndexMap<String, Value>,
    inputs: Value,
    action_path: Option<PathBuf>,
    failed: bool,
}

/// What one step did.
struct StepResult {
    outcome: Status,
    exit_code: Option<i32>,
    outputs: IndexMap<String, String>,
}

impl StepResult {
    fn failed(outcome: Status) -> StepResult {
        StepResult {
            outcome,
            exit_code: None,
            outputs: IndexMap::new(),
        }
    }
}

/// Runs one job instance: returns its status, whether `continue-on-error` applies, its outputs.
pub(crate) async fn run_instance(
    shared: &Shared,
    scope: &Scope,
    job: &Job,
    mut inst: Instance,
) -> (Status, bool, IndexMap<String, String>) {
    let started = Instant::now();
    shared.emit(RunEvent::JobStarted {
        job: inst.display.clone(),
    });
    let unmet = match runs_on_unmet(shared, job, &inst) {
        Ok(u) => u,
        Err(e) => Some(format!("runs-on: {e}")),
    }
    .or_else(|| container_unmet(job, &inst))
    .or_else(|| enter_environment(shared, job, &mut inst).err());
    if let Some(message) = unmet {
        log(shared, &inst.display, &format!("##[error]{message}"));
        shared.annotate(
            &inst.display,
            Annotation::new(Level::Error, shared.mask(&message)),
        );
        return fail_before_steps(shared, scope, job, &inst, started);
    }
    let mut state = match prepare(shared, scope, job, &inst) {
        Ok(s) => s,
        Err(e) => {
            log(shared, &inst.display, &format!("##[error]{e}"));
            return fail_before_steps(shared, scope, job, &inst, started);
        }
    };
    place(shared, &mut inst.ctx, &state.workspace, &state.temp);
    let continue_on_error = inst
        .ctx
        .flag(job.continue_on_error.as_ref())
        .unwrap_or(false);
    let mut frame = Frame {
        steps: IndexMap::new(),
        inputs: scope.inputs.clone(),
        action_path: None,
        failed: false,
    };
    if let JobBody::Steps(steps) = &job.body {
        let cx = JobCx {
            shared,
            job,
            scope,
            inst: &inst,
        };
        run_job_steps(cx, &mut state, &mut frame, steps).await;
    }
    state.failed |= frame.failed;
    run_posts(shared, &inst, &mut state).await;
    for pgid in &state.pgids {
        process::kill_group(*pgid);
    }
    let status = if state.timed_out {
        Status::Cancelled
    } else if state.failed {
        Status::Failure
    } else if state.cancelled {
        Status::Cancelled
    } else {
        Status::Success
    };
    let outputs = job_outputs(shared, &inst, &state, &frame, job);
    let records = std::mem::take(&mut state.records);
    if status == Status::Success || !shared.opts.keep_workspace {
        shared.recycle_later(state.workspace.parent().map(Path::to_path_buf));
    }
    finish(
        shared,
        scope,
        job,
        &inst,
        status,
        outputs.clone(),
        records,
        state.summary.clone(),
        started,
    );
    (status, continue_on_error, outputs)
}

/// Gives a job that names a deployment environment (`environment:`) that environment's
/// variables and secrets over the run's, as GitHub does. An environment the run knows nothing
/// of changes nothing: GitHub creates one on first use, with no variables or secrets.
fn enter_environment(shared: &Shared, job: &Job, inst: &mut Instance) -> Result<(), String> {
    let Some(environment) = &job.environment else {
        return Ok(());
    };
    let name = inst
        .ctx
        .string(&environment.name)
        .map_err(|e| format!("environment: {e}"))?;
    let Some(overrides) = shared.opts.environment(&name) else {
        return Ok(());
    };
    for (context, values) in [("vars", &overrides.vars), ("secrets", &overrides.secrets)] {
        let mut merged = match inst.ctx.get(context) {
            Some(Value::Object(fields)) => fields.clone(),
            _ => IndexMap::new(),
        };
        for (key, value) in values {
            // Context keys compare case-insensitively: the environment's `DB` replaces `db`.
            merged.retain(|known, _| !known.eq_ignore_ascii_case(key));
            merged.insert(key.clone(), Value::String(value.clone()));
        }
        inst.ctx.set(context, Value::Object(merged));
    }
    Ok(())
}

/// The runner's warning for a `with:` key the action does not declare: GitHub runs the step
/// anyway (a typo is a warning, not an error), and so does kiln, for built-ins too.
fn unexpected_input<'a>(name: &str, valid: impl Iterator<Item = &'a str>) -> String {
    format!(
        "##[warning]Unexpected input(s) '{name}', valid inputs are {:?}",
        valid.collect::<Vec<_>>()
    )
}

/// A `container` expression that names an image (`None` when it evaluates to nothing: GitHub
/// runs such a job on the runner itself, and kiln on the host).
fn container_unmet(job: &Job, inst: &Instance) -> Option<String> {
    let text = job.container.as_ref()?;
    let image = match inst.ctx.value(text) {
        Ok(Value::Null) => return None,
        Ok(Value::String(s)) if s.is_empty() => return None,
        Ok(Value::Object(fields)) => fields
            .get("image")
            .map_or_else(|| "Object".to_owned(), Value::to_display_string),
        Ok(other) => other.to_display_string(),
        Err(e) => return Some(format!("container: {e}")),
    };
    Some(format!(
        "container: this instance runs in the image `{image}`, which needs a container engine: kiln runs jobs on the host (an instance whose `container` evaluates to nothing runs there)"
    ))
}

/// Why this host cannot run the job (`None` when it can). GitHub would queue such a job until
/// a matching runner appears; kiln has only the host, so it says so and fails the job.
fn runs_on_unmet(shared: &Shared, job: &Job, inst: &Instance) -> Result<Option<String>, String> {
    let mut labels = Vec::new();
    for text in &job.runs_on.labels {
        match inst.ctx.value(text)? {
            Value::Array(items) => labels.extend(items.iter().map(Value::to_display_string)),
            v => labels.push(v.to_display_string()),
        }
    }
    if let Some(group) = &job.runs_on.group {
        let group = inst.ctx.string(group)?;
        return Ok(Some(format!(
            "runs-on names the runner group `{group}`: kiln runs jobs on this host only, which is in no group (GitHub would wait for a runner of that group)"
        )));
    }
    let missing = crate::runner::missing_labels(&labels, &shared.opts.runner_labels);
    if missing.is_empty() {
        return Ok(None);
    }
    let mut have: Vec<String> = crate::runner::HOST_LABELS
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    have.push(runner_arch().to_ascii_lowercase());
    have.extend(shared.opts.runner_labels.iter().cloned());
    // `runs-on: ${{ matrix.os }}` over several systems is the usual case: say how to run
    // only the legs this host can.
    let matrix_key = match inst.ctx.get("matrix") {
        Some(Value::Object(values)) => values
            .iter()
            .find(|(_, v)| v.to_display_string() == missing[0])
            .map(|(k, _)| k.clone()),
        _ => None,
    };
    let narrow = matrix_key.map_or(String::new(), |key| {
        format!("; to run only the matrix legs this host can, pass --matrix {key}=VALUE")
    });
    Ok(Some(format!(
        "no runner matches runs-on label{} {}: kiln runs jobs on this host, whose labels are {} (GitHub would wait for a matching runner; if this host can run the job, pass --runner-label {}{narrow})",
        if missing.len() == 1 { "" } else { "s" },
        missing
            .iter()
            .map(|l| format!("`{l}`"))
            .collect::<Vec<_>>()
            .join(", "),
        have.join(", "),
        missing[0]
    )))
}

/// Points the contexts at the job's own directories: `github.workspace` (and `hashFiles`'s root)
/// at its workspace, `runner.temp` at its temporary directory, as `$GITHUB_WORKSPACE` and
/// `$RUNNER_TEMP` are.
fn place(shared: &Shared, ctx: &mut Ctx, workspace: &Path, temp: &Path) {
    ctx.workspace = workspace.to_path_buf();
    let mut runner = runner_context(shared, temp);
    // `runner.workspace` (not in the contexts reference, but set by GitHub's runner and read by
    // real-world workflows, e.g. `working-directory: ${{ runner.workspace }}/build`) is the
    // directory above the workspace, as `$RUNNER_WORKSPACE` is.
    if let Value::Object(map) = &mut runner {
        map.insert(
            "workspace".to_owned(),
            Value::String(
                workspace
                    .parent()
                    .unwrap_or(workspace)
                    .to_string_lossy()
                    .into_owned(),
            ),
        );
    }
    ctx.set("runner", runner);
    if let Some(Value::Object(mut github)) = ctx.get("github").cloned() {
        github.insert(
            "workspace".to_owned(),
            Value::String(workspace.to_string_lossy().into_owned()),
        );
        ctx.set("github", Value::Object(github));
    }
}

/// The variables of an `env:` block: its entries, or the mapping its one expression evaluates
/// to (workflow syntax, `env`), each value as GitHub prints it.
fn env_values(ctx: &Ctx, env: &Env) -> Result<Vec<(String, String)>, String> {
    mapping_values(ctx, env, "env")
}

/// The values of a mapping block (`env`, a step's `with`) named `key` in messages: its entries,
/// or the mapping its one expression evaluates to, each value as GitHub prints it.
fn mapping_values(ctx: &Ctx, block: &Mapping, key: &str) -> Result<Vec<(String, String)>, String> {
    if let Some(expression) = &block.expression {
        return match ctx.value(expression).map_err(|e| format!("{key}: {e}"))? {
            Value::Object(map) => Ok(map
                .into_iter()
                .map(|(k, v)| (k, v.to_display_string()))
                .collect()),
            Value::Null => Ok(Vec::new()),
            other => Err(format!(
                "{key}: `{}` must evaluate to a mapping (it gave {})",
                expression.text,
                other.kind_name()
            )),
        };
    }
    block
        .entries
        .iter()
        .map(|(k, t)| {
            ctx.string(t)
                .map(|v| (k.clone(), v))
                .map_err(|e| format!("{key} `{k}`: {e}"))
        })
        .collect()
}

fn prepare(shared: &Shared, scope: &Scope, job: &Job, inst: &Instance) -> Result<JobState, String> {
    let (workspace, temp) = shared
        .job_dirs()
        .map_err(|e| format!("cannot create the job's directories: {e}"))?;
    let mut ctx = inst.ctx.clone();
    // `env` (workflow and job) is read on the runner, with the job's workspace known:
    // `${{ github.workspace }}/data` names the job's directory.
    place(shared, &mut ctx, &workspace, &temp);
    let mut env = IndexMap::new();
    for source in [&scope.workflow.env, &job.env] {
        env.extend(env_values(&ctx, source)?);
        ctx.set("env", object(&env));
    }
    // A job's `timeout-minutes` that comes to no whole minute (`0`, `0.5`) keeps the default:
    // GitHub's runner arms no timer for such a step, and kiln does the same for the job.
    let minutes = inst
        .ctx
        .minutes(job.timeout_minutes.as_ref())
        .map_err(|e| {
            format!(
                "Error when evaluating 'timeout-minutes' for job '{}'. {}: {e}",
                job.id.name,
                scope.workflow.path.display()
            )
        })?
        .map_or(DEFAULT_JOB_TIMEOUT_MINUTES, |m| m as f64);
    Ok(JobState {
        env,
        added_env: IndexMap::new(),
        path: Vec::new(),
        failed: false,
        cancelled: false,
        timed_out: false,
        timeout_minutes: minutes,
        posts: Vec::new(),
        summary: String::new(),
        pgids: Vec::new(),
        records: Vec::new(),
        workspace,
        deadline: Instant::now() + shared.opts.minute.mul_f64(minutes),
        cancel: inst.cancel.clone(),
        matchers: Matchers::default(),
        files_dir: temp.join(crate::runner::RUNNER_FILES_DIR),
        writes: None,
        temp,
    })
}

/// Records a job instance that failed before any step ran (no runner for its labels, no
/// workspace), with no outputs or steps.
fn fail_before_steps(
    shared: &Shared,
    scope: &Scope,
    job: &Job,
    inst: &Instance,
    started: Instant,
) -> (Status, bool, IndexMap<String, String>) {
    finish(
        shared,
        scope,
        job,
        inst,
        Status::Failure,
        IndexMap::new(),
        Vec::new(),
        String::new(),
        started,
    );
    (Status::Failure, false, IndexMap::new())
}

#[allow(clippy::too_many_arguments)] // The job's whole record; a struct would only rename these.
fn finish(
    shared: &Shared,
    scope: &Scope,
    job: &Job,
    inst: &Instance,
    status: Status,
    outputs: IndexMap<String, String>,
    steps: Vec<StepRecord>,
    summary: String,
    started: Instant,
) {
    let duration = started.elapsed();
    shared.emit(RunEvent::JobFinished {
        job: inst.display.clone(),
        status,
        duration,
    });
    let record = JobRecord {
        id: format!("{}{}", scope.prefix, job.id.name),
        name: inst.display.clone(),
        status,
        outputs,
        steps,
        summary,
        annotations: shared.take_annotations(&inst.display),
        duration,
    };
    shared.store.job_finished(shared.opts.run_id, &record);
    if let Ok(mut r) = shared.records.lock() {
        r.push(record);
    }
}

fn log(shared: &Shared, job: &str, line: &str) {
    shared.emit(RunEvent::Log {
        job: job.to_owned(),
        line: shared.mask(line),
    });
}

/// Job outputs, as the runner's `JobExtension` sets them: an output that evaluates to an empty
/// string is not set (`needs.<job>.outputs` has no such key), and one that would reveal a
/// secret is dropped with a warning.
fn job_outputs(
    shared: &Shared,
    inst: &Instance,
    state: &JobState,
    frame: &Frame,
    job: &Job,
) -> IndexMap<String, String> {
    let mut ctx = inst.ctx.clone();
    ctx.set("steps", Value::Object(frame.steps.clone()));
    ctx.set("env", object(&merged_env(state)));
    let mut out = IndexMap::new();
    for (name, text) in &job.outputs {
        match ctx.string(text) {
            Ok(v) if v.is_empty() => {}
            Ok(v) if shared.mask(&v) != v => {
                log(
                    shared,
                    &inst.display,
                    &format!("##[warning]Skip output '{name}' since it may contain secret."),
                );
            }
            Ok(v) => {
                out.insert(name.clone(), v);
            }
            Err(e) => log(
                shared,
                &inst.display,
                &format!("##[error]output `{name}`: {e}"),
            ),
        }
    }
    out
}

fn merged_env(state: &JobState) -> IndexMap<String, String> {
    let mut env = state.env.clone();
    env.extend(state.added_env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// What every step of a job instance runs within.
#[derive(Clone, Copy)]
struct JobCx<'a> {
    shared: &'a Shared,
    job: &'a Job,
    scope: &'a Scope,
    inst: &'a Instance,
}

impl JobCx<'_> {
    fn log(&self, line: &str) {
        log(self.shared, &self.inst.display, line);
    }
}

/// Before each step: a cancelled run cancels the job, and an expired `timeout-minutes` too.
fn check_job(cx: JobCx<'_>, state: &mut JobState) {
    if *state.cancel.borrow() {
        state.cancelled = true;
    }
    if Instant::now() >= state.deadline
        && let Some(message) = state.time_out()
    {
        cx.log(&message);
    }
}

/// The job's own steps, with GitHub's parallel steps: a background step runs beside the steps
/// after it until a `wait`, `wait-all` or `cancel` step, or the job's end, completes it.
async fn run_job_steps(cx: JobCx<'_>, state: &mut JobState, frame: &mut Frame, steps: &[Step]) {
    let mut background = Background::new();
    let names = action_names(steps);
    for (step, action_name) in steps.iter().zip(&names) {
        check_job(cx, state);
        if step.action.is_control() {
            control_step(cx, state, frame, &mut background, step, action_name).await;
        } else if step.background {
            let started = Instant::now();
            if let Some(ready) = ready_step(cx, state, frame, step, action_name, started) {
                background.start(cx, state, frame, step, action_name, ready, true);
            }
        } else {
            let work = run_step(cx, state, frame, step, action_name);
            background
                .beside(cx.shared.hold_events(crate::runner::HOLD_STEP_EVENTS, work))
                .await;
        }
    }
    // GitHub's implicit `wait-all` before the post steps: background steps never waited for
    // are, and every background step's result counts in the job's (a step cancelled by a
    // `cancel` step excepted).
    let unwaited = background.unwaited();
    background.wait(&unwaited).await;
    background.complete(cx, &unwaited, state, frame);
    match background.job_result() {
        Status::Failure => state.failed = true,
        Status::Cancelled => state.cancelled = true,
        _ => {}
    }
}

/// A composite action's steps, one after the other.
fn run_steps<'a>(
    cx: JobCx<'a>,
    state: &'a mut JobState,
    frame: &'a mut Frame,
    steps: &'a [Step],
) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        let names = action_names(steps);
        for (step, action_name) in steps.iter().zip(&names) {
            check_job(cx, state);
            let step = run_step(cx, state, frame, step, action_name);
            cx.shared
                .hold_events(crate::runner::HOLD_STEP_EVENTS, step)
                .await;
        }
    })
}

/// `GITHUB_ACTION` / `github.action` of each step, as the runner names them: the step's `id`;
/// without one `__run` for a script, `__self` for an action of the repository and
/// `__owner_repo` for another action, `__wait`, `__wait-all`, `__cancel` and `__parallel` for
/// the control steps, with `_2`, `_3`, ... when the same name comes again.
fn action_names(steps: &[Step]) -> Vec<String> {
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    steps
        .iter()
        .map(|step| {
            if let Some(id) = &step.id {
                return id.name.clone();
            }
            let base = match &step.action {
                StepAction::Run(_) => "__run".to_owned(),
                StepAction::Uses {
                    action: ActionRef::Local(_),
                    ..
                } => "__self".to_owned(),
                StepAction::Uses { uses, .. } => {
                    let repository = uses.text.split('@').next().unwrap_or_default();
                    format!("__{}", repository.replace('/', "_"))
                }
                StepAction::Wait(_) => "__wait".to_owned(),
                StepAction::WaitAll => "__wait-all".to_owned(),
                StepAction::Cancel(_) => "__cancel".to_owned(),
                StepAction::Parallel(_) => "__parallel".to_owned(),
            };
            let count = seen.entry(base.clone()).or_default();
            *count += 1;
            match *count {
                1 => base,
                n => format!("{base}_{n}"),
            }
        })
        .collect()
}

fn step_name(step: &Step, ctx: &Ctx) -> String {
    if let Some(n) = &step.name {
        return ctx.string(n).unwrap_or_else(|_| n.text.clone());
    }
    match &step.action {
        StepAction::Run(t) => format!("Run {}", t.text.lines().next().unwrap_or_default().trim()),
        StepAction::Uses { uses, .. } => format!("Run {}", uses.text),
        // The names GitHub's workflow parser gives these steps.
        StepAction::Wait(_) => "Wait".to_owned(),
        StepAction::WaitAll => "Wait for all".to_owned(),
        StepAction::Cancel(_) => "Cancel".to_owned(),
        StepAction::Parallel(_) => "Parallel group".to_owned(),
    }
}

/// A step whose `env` and `if` said it runs, with what it runs with.
struct Ready {
    ctx: Ctx,
    env: IndexMap<String, String>,
    name: String,
}

/// The expression context of a step, as the job is now (its `env` not yet evaluated).
fn step_context(cx: JobCx<'_>, state: &JobState, frame: &Frame, action_name: &str) -> Ctx {
    let mut ctx = cx.inst.ctx.clone();
    if matches!(ctx.get("github"), Some(Value::Object(_))) {
        // `github.env`, `path`, `output`, `state` and `step_summary`: the step's files, as the
        // runner's `FileCommandManager` names each in the `github` context.
        let file = |name: &str| state.files_dir.join(name).to_string_lossy().into_owned();
        ctx.github_step = vec![
            ("action", action_name.to_owned()),
            ("env", file("set_env")),
            ("path", file("add_path")),
            ("output", file("set_output")),
            ("state", file("save_state")),
            ("step_summary", file("step_summary")),
        ];
        // Inside a composite action: its directory and its result so far, as the runner's
        // `CompositeActionHandler` sets them on each of its steps (`action_path`,
        // `action_status`; "Contexts reference", `github` context).
        if let Some(dir) = &frame.action_path {
            ctx.github_step
                .push(("action_path", dir.to_string_lossy().into_owned()));
            let status = if frame.failed { "failure" } else { "success" };
            ctx.github_step.push(("action_status", status.to_owned()));
        }
    }
    ctx.set("steps", Value::Object(frame.steps.clone()));
    ctx.set("inputs", frame.inputs.clone());
    ctx.set(
        "job",
        Value::from_json(&serde_json::json!({ "status": job_status(state, frame) })),
    );
    ctx.flags = Flags {
        failed: frame.failed || state.failed,
        cancelled: state.cancelled,
        unfinished: false,
    };
    ctx.set("env", object(&merged_env(state)));
    ctx
}

/// Evaluates a step's `env` and `if` against the job as it is now. `None` when that decided
/// the step (skipped, or failed because one did not evaluate), which is then recorded.
fn ready_step(
    cx: JobCx<'_>,
    state: &mut JobState,
    frame: &mut Frame,
    step: &Step,
    action_name: &str,
    started: Instant,
) -> Option<Ready> {
    let mut ctx = step_context(cx, state, frame, action_name);
    // As the runner's `StepsRunner`: the step's own `env` is evaluated and merged into the
    // `env` context before its `if`, so `if: env.TOKEN != ''` over `env: { TOKEN: ${{
    // secrets.TOKEN }} }` on the same step sees the secret; an `env` that does not evaluate
    // fails the step whatever its `if` says.
    let mut env = merged_env(state);
    let env_error = match env_values(&ctx, &step.env) {
        Ok(values) => {
            env.extend(values);
            None
        }
        Err(e) => Some(e),
    };
    ctx.set("env", object(&env));
    let name = step_name(step, &ctx);
    // A step whose `env` or `if` does not evaluate fails without running (the `env` error
    // shows as a started step, as the runner's does).
    let decided = match env_error {
        Some(e) => {
            cx.shared.emit(RunEvent::StepStarted {
                job: cx.inst.display.clone(),
                step: name.clone(),
            });
            Err(e.to_string())
        }
        None => match &step.condition {
            None => Ok(ctx.flags.success()),
            Some(c) => ctx
                .condition(c)
                .map_err(|e| format!("step `{name}`: invalid `if`: {e}")),
        },
    };
    let outcome = match decided {
        Ok(true) => return Some(Ready { ctx, env, name }),
        Ok(false) => Status::Skipped,
        Err(message) => {
            cx.log(&format!("##[error]{message}"));
            Status::Failure
        }
    };
    let result = StepResult::failed(outcome);
    record(
        cx.shared, cx.inst, state, frame, step, &name, result, false, started,
    );
    None
}

async fn run_step(
    cx: JobCx<'_>,
    state: &mut JobState,
    frame: &mut Frame,
    step: &Step,
    action_name: &str,
) {
    let started = Instant::now();
    if let Some(ready) = ready_step(cx, state, frame, step, action_name, started) {
        started_step(cx, &ready.name);
        execute_step(cx, state, frame, step, action_name, ready, started).await;
    }
}

fn started_step(cx: JobCx<'_>, name: &str) {
    cx.shared.emit(RunEvent::StepStarted {
        job: cx.inst.display.clone(),
        step: name.to_owned(),
    });
}

/// Runs a step that is ready (and said to have started), and records it: its conclusion.
async fn execute_step(
    cx: JobCx<'_>,
    state: &mut JobState,
    frame: &mut Frame,
    step: &Step,
    action_name: &str,
    ready: Ready,
    started: Instant,
) -> Status {
    let JobCx {
        shared,
        job,
        scope,
        inst,
    } = cx;
    let Ready { ctx, env, name } = ready;
    let continue_on_error = ctx.flag(step.continue_on_error.as_ref()).unwrap_or(false);
    // As the runner's `StepsRunner.RunStepAsync`: a timeout that does not evaluate to a number
    // is two errors, and the step runs without one.
    let minutes = ctx.minutes(step.timeout_minutes.as_ref());
    // The runner's coordinator words a background step's own timeout its way.
    let timed_out = match &minutes {
        Ok(Some(m)) if state.is_background() && frame.action_path.is_none() => Some(format!(
            "The background step '{name}' has timed out after {m} minutes."
        )),
        _ => None,
    };
    let timeout = match minutes {
        Ok(t) => t.map(|m| {
            shared
                .opts
                .minute
                .saturating_mul(u32::try_from(m).unwrap_or(u32::MAX))
        }),
        Err(e) => {
            let path = scope.workflow.path.display();
            for message in [
                "An error occurred when attempting to determine the step timeout.".to_owned(),
                format!("The template is not valid. {path}: {e}"),
            ] {
                log(shared, &inst.display, &format!("##[error]{message}"));
                shared.annotate(&inst.display, Annotation::new(Level::Error, message));
            }
            None
        }
    };
    let exec = Exec {
        shared,
        job,
        scope,
        inst,
        ctx: &ctx,
        env: &env,
        timeout,
        timed_out,
        action_name,
    };
    let result = match &step.action {
        StepAction::Run(script) => exec.script(state, frame, step, script).await,
        StepAction::Uses {
            action: ActionRef::Builtin(b),
            with,
            ..
        } => exec.builtin(state, *b, with).await,
        StepAction::Uses {
            action: ActionRef::Local(path),
            with,
            ..
        } => exec.composite(state, path, with).await,
        // Its job is refused before a run starts; a caller that skips that check
        // (a pushed workflow) gets the step failed, not a download.
        StepAction::Uses {
            action: ActionRef::Remote(name),
            ..
        } => {
            cx.log(&format!(
                "##[error]kiln runs no remote action: `{name}` was not run"
            ));
            StepResult::failed(Status::Failure)
        }
        // Only a job's own steps are control steps (its loader refuses them in an action's);
        // `run_job_steps` runs them.
        StepAction::Wait(_)
        | StepAction::WaitAll
        | StepAction::Cancel(_)
        | StepAction::Parallel(_) => {
            cx.log("##[error]a `wait`, `wait-all`, `cancel` or `parallel` step runs only among a job's steps");
            StepResult::failed(Status::Failure)
        }
    };
    record(
        shared,
        inst,
        state,
        frame,
        step,
        &name,
        result,
        continue_on_error,
        started,
    )
}

fn job_status(state: &JobState, frame: &Frame) -> &'static str {
    if state.cancelled {
        "cancelled"
    } else if state.failed || frame.failed {
        "failure"
    } else {
        "success"
    }
}

#[allow(clippy::too_many_arguments)] // One record per step; a struct would only rename these.
fn record(
    shared: &Shared,
    inst: &Instance,
    state: &mut JobState,
    frame: &mut Frame,
    step: &Step,
    name: &str,
    result: StepResult,
    continue_on_error: bool,
    started: Instant,
) -> Status {
    let conclusion = if result.outcome == Status::Failure && continue_on_error {
        Status::Success
    } else {
        result.outcome
    };
    if conclusion == Status::Failure {
        frame.failed = true;
    }
    if result.outcome == Status::Cancelled {
        state.cancelled = true;
    }
    if let Some(id) = &step.id {
        frame.steps.insert(
            id.name.clone(),
            Value::Object(IndexMap::from([
                ("outputs".to_owned(), object(&result.outputs)),
                (
                    "outcome".to_owned(),
                    Value::String(result.outcome.as_str().to_owned()),
                ),
                (
                    "conclusion".to_owned(),
                    Value::String(conclusion.as_str().to_owned()),
                ),
            ])),
        );
    }
    let duration = started.elapsed();
    if result.outcome != Status::Skipped {
        shared.emit(RunEvent::StepFinished {
            job: inst.display.clone(),
            step: name.to_owned(),
            status: conclusion,
            exit_code: result.exit_code,
            duration,
        });
    }
    state.records.push(StepRecord {
        name: name.to_owned(),
        id: step.id.as_ref().map(|i| i.name.clone()),
        outcome: result.outcome,
        conclusion,
        exit_code: result.exit_code,
        outputs: result.outputs,
        duration,
    });
    conclusion
}

/// Everything a running step needs, bundled.
struct Exec<'a> {
    shared: &'a Shared,
    job: &'a Job,
    scope: &'a Scope,
    inst: &'a Instance,
    ctx: &'a Ctx,
    env: &'a IndexMap<String, String>,
    timeout: Option<Duration>,
    /// What to say when the step's own timeout expires, if not the runner's usual line.
    timed_out: Option<String>,
    action_name: &'a str,
}

/// Replaces a file's content by writing over it and then setting its length.
///
/// Why not truncate and write: ext4 flushes a file truncated to zero when it is closed
/// (`auto_da_alloc`, for editors that rewrite files that way), which started a disk write for
/// every step's script.
fn rewrite_in_place(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    file.write_all(content)?;
    file.set_len(content.len() as u64)
}

/// The environment files of one step.
struct Files {
    env: PathBuf,
    path: PathBuf,
    output: PathBuf,
    summary: PathBuf,
    state: PathBuf,
}

impl<'a> Exec<'a> {
    fn log(&self, line: &str) {
        log(self.shared, &self.inst.display, line);
    }

    /// The step's environment files, empty. One set per job, truncated for each step: steps run
    /// one at a time, and creating and later deleting five files per step was a measurable
    /// part of a trivial step's cost (see docs/benchmarks.md). Most steps write none of them,
    /// and truncating an empty file still dirties its inode in the journal: only files with
    /// something in them are truncated.
    fn files(&self, state: &JobState) -> std::io::Result<Files> {
        let dir = &state.files_dir;
        let make = |what: &str| -> std::io::Result<PathBuf> {
            let p = dir.join(what);
            let empty = std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file() && m.len() == 0);
            if !empty {
                match std::fs::File::create(&p) {
                    // The first step of the job, or a step removed the directory.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        std::fs::create_dir_all(dir)?;
                        std::fs::File::create(&p)?;
                    }
                    r => {
                        r?;
                    }
                }
            }
            Ok(p)
        };
        Ok(Files {
            env: make("set_env")?,
            path: make("add_path")?,
            output: make("set_output")?,
            summary: make("step_summary")?,
            state: make("save_state")?,
        })
    }

    /// The process environment: host, defaults, `env`, and `PATH` with `GITHUB_PATH` entries.
    fn process_env(
        &self,
        state: &JobState,
        files: &Files,
        action_path: Option<&Path>,
    ) -> Vec<(String, String)> {
        let s = self.shared;
        let o = &s.opts;
        let github = |k: &str| {
            self.ctx
                .get("github")
                .and_then(|g| g.get_property(k))
                .map(Value::to_display_string)
                .unwrap_or_default()
        };
        // `CI` and `GITHUB_ACTIONS` are job variables a workflow may change; the `GITHUB_*` and
        // `RUNNER_*` variables of the `github` and `runner` contexts come after the workflow's,
        // the job's, the step's and `GITHUB_ENV`'s, so none of those can change them (as the
        // runner exports them last; "Variables": they cannot be overwritten).
        let mut env: Vec<(String, String)> = vec![
            ("CI".into(), "true".into()),
            ("GITHUB_ACTIONS".into(), "true".into()),
        ];
        env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend::<[(String, String); _]>([
            (
                "GITHUB_WORKSPACE".into(),
                state.workspace.to_string_lossy().into_owned(),
            ),
            ("GITHUB_SHA".into(), s.sha.clone()),
            ("GITHUB_REF".into(), o.git_ref.clone()),
            ("GITHUB_REF_NAME".into(), github("ref_name")),
            ("GITHUB_REF_TYPE".into(), github("ref_type")),
            ("GITHUB_EVENT_NAME".into(), o.event_name.clone()),
            (
                "GITHUB_EVENT_PATH".into(),
                s.temp.join("event.json").to_string_lossy().into_owned(),
            ),
            ("GITHUB_HEAD_REF".into(), github("head_ref")),
            ("GITHUB_BASE_REF".into(), github("base_ref")),
            ("GITHUB_WORKFLOW_SHA".into(), s.sha.clone()),
            ("GITHUB_WORKFLOW_REF".into(), github("workflow_ref")),
            ("GITHUB_GRAPHQL_URL".into(), github("graphql_url")),
            ("GITHUB_REF_PROTECTED".into(), github("ref_protected")),
            ("GITHUB_TRIGGERING_ACTOR".into(), github("triggering_actor")),
            ("GITHUB_RETENTION_DAYS".into(), "90".into()),
            ("RUNNER_ENVIRONMENT".into(), "self-hosted".into()),
            ("GITHUB_RUN_ID".into(), o.run_id.to_string()),
            ("GITHUB_RUN_NUMBER".into(), o.run_number.to_string()),
            ("GITHUB_RUN_ATTEMPT".into(), "1".into()),
            ("GITHUB_JOB".into(), github("job")),
            ("GITHUB_WORKFLOW".into(), github("workflow")),
            ("GITHUB_REPOSITORY".into(), o.repository.clone()),
            ("GITHUB_REPOSITORY_OWNER".into(), github("repository_owner")),
            ("GITHUB_REPOSITORY_ID".into(), github("repository_id")),
            (
                "GITHUB_REPOSITORY_OWNER_ID".into(),
                github("repository_owner_id"),
            ),
            ("GITHUB_ACTOR".into(), github("actor")),
            ("GITHUB_ACTOR_ID".into(), github("actor_id")),
            ("GITHUB_SERVER_URL".into(), github("server_url")),
            ("GITHUB_API_URL".into(), github("api_url")),
            ("GITHUB_ACTION".into(), self.action_name.to_owned()),
            (
                "GITHUB_ENV".into(),
                files.env.to_string_lossy().into_owned(),
            ),
            (
                "GITHUB_PATH".into(),
                files.path.to_string_lossy().into_owned(),
            ),
            (
                "GITHUB_OUTPUT".into(),
                files.output.to_string_lossy().into_owned(),
            ),
            (
                "GITHUB_STEP_SUMMARY".into(),
                files.summary.to_string_lossy().into_owned(),
            ),
            (
                "GITHUB_STATE".into(),
                files.state.to_string_lossy().into_owned(),
            ),
            ("RUNNER_OS".into(), "Linux".into()),
            ("RUNNER_ARCH".into(), runner_arch().into()),
            ("RUNNER_NAME".into(), "kiln".into()),
            (
                "RUNNER_TEMP".into(),
                state.temp.to_string_lossy().into_owned(),
            ),
            (
                "RUNNER_TOOL_CACHE".into(),
                s.tool_cache().to_string_lossy().into_owned(),
            ),
            (
                "RUNNER_WORKSPACE".into(),
                state
                    .workspace
                    .parent()
                    .unwrap_or(&state.workspace)
                    .to_string_lossy()
                    .into_owned(),
            ),
        ]);
        if s.step_debug() {
            env.push(("RUNNER_DEBUG".into(), "1".into()));
        }
        if let Some(p) = action_path {
            env.push((
                "GITHUB_ACTION_PATH".into(),
                p.to_string_lossy().into_owned(),
            ));
        }
        let host_path = self
            .env
            .get("PATH")
            .cloned()
            .or_else(|| std::env::var("PATH").ok())
            .unwrap_or_default();
        let mut path = state.path.clone();
        path.push(host_path);
        env.push(("PATH".into(), path.join(":")));
        env
    }

    async fn script(
        &self,
        state: &mut JobState,
        frame: &Frame,
        step: &Step,
        script: &Text,
    ) -> StepResult {
        let body = match self.ctx.string(script) {
            Ok(b) => b,
            Err(e) => {
                self.log(&format!("##[error]{e}"));
                return StepResult::failed(Status::Failure);
            }
        };
        // `defaults.run` is the workflow's and the job's: a composite action's steps do not see
        // it (the runner applies it only outside an action's scope).
        let in_action = frame.action_path.is_some();
        let default = |pick: fn(&'a crate::workflow::RunDefaults) -> Option<&'a Text>| {
            if in_action {
                None
            } else {
                self.job_default(pick)
            }
        };
        // An expression that fails to evaluate fails the step with its error, as the runner
        // fails a step whose inputs it cannot evaluate (never the raw text in its place).
        let evaluate = |key: &str, text: Option<&Text>| match text {
            None => Ok(None),
            Some(t) => self
                .ctx
                .string(t)
                .map(Some)
                .map_err(|e| format!("{key}: {e}")),
        };
        let shell = [step.shell.as_ref(), default(|d| d.shell.as_ref())]
            .into_iter()
            .flatten()
            .next();
        let wd = [
            step.working_directory.as_ref(),
            default(|d| d.working_directory.as_ref()),
        ]
        .into_iter()
        .flatten()
        .next();
        let (shell, wd) = match (evaluate("shell", shell), evaluate("working-directory", wd)) {
            (Ok(shell), Ok(wd)) => (shell, wd),
            (Err(e), _) | (_, Err(e)) => {
                self.log(&format!("##[error]{e}"));
                return StepResult::failed(Status::Failure);
            }
        };
        let cwd = wd.map_or_else(|| state.workspace.clone(), |w| state.workspace.join(w));
        let files = match self.files(state) {
            Ok(f) => f,
            Err(e) => {
                self.log(&format!("##[error]cannot write the step's files: {e}"));
                return StepResult::failed(Status::Failure);
            }
        };
        let env = self.process_env(state, &files, frame.action_path.as_deref());
        let step_path = env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map_or("", |(_, v)| v.as_str());
        let line = match shell_line(shell.as_deref(), step_path, &cwd) {
            Ok(l) => l,
            Err(e) => {
                self.log(&format!("##[error]{e}"));
                return StepResult::failed(Status::Failure);
            }
        };
        // The shell is looked for once (by `shell_line` for the default shell, or here): the
        // process is started from what this finds.
        let found = if line.program.contains('/') {
            None
        } else if line.found.is_some() {
            line.found.clone()
        } else {
            match crate::process::find_program(&line.program, Some(step_path), &cwd) {
                Some(found) => Some(found),
                None => {
                    self.log(&format!(
                        "##[error]File not found: '{}': the step's shell is not installed on \
                         this machine (not on PATH)",
                        line.program
                    ));
                    return StepResult::failed(Status::Failure);
                }
            }
        };
        // One script file per job, rewritten for each step (steps run one at a time): a new
        // file per step costs a new inode (see `Shared::recycle_later`).
        let name = if line.extension.is_empty() {
            "step".to_owned()
        } else {
            format!("step.{}", line.extension)
        };
        let script_path = state.files_dir.join(name);
        let body = shell_script(&line.program, body);
        if let Err(e) = rewrite_in_place(&script_path, body.as_bytes()) {
            self.log(&format!("##[error]cannot write the step's script: {e}"));
            return StepResult::failed(Status::Failure);
        }
        let path = script_path.to_string_lossy();
        let spawn = Spawn {
            args: line.args.iter().map(|a| a.replace("{0}", &path)).collect(),
            program: line.program,
            found,
            cwd,
            env,
            timeout: self.remaining(state),
            grace: self.shared.opts.kill_grace,
        };
        self.execute(state, spawn, &files, true).await
    }

    /// `defaults.run` of the job, then of the workflow.
    fn job_default(
        &self,
        pick: impl Fn(&'a crate::workflow::RunDefaults) -> Option<&'a Text>,
    ) -> Option<&'a Text> {
        pick(&self.job.defaults).or_else(|| pick(&self.scope.workflow.defaults))
    }

    /// The tighter of the step's timeout and what is left of the job's.
    fn remaining(&self, state: &JobState) -> Option<Duration> {
        let left = state.deadline.saturating_duration_since(Instant::now());
        Some(self.timeout.map_or(left, |t| t.min(left)))
    }

    /// Runs a step's process. `script`: a `run` step, whose non-zero exit the runner's
    /// `ScriptHandler` reports ("Process completed with exit code N."); a JavaScript action's
    /// only fails the step (`NodeScriptActionHandler`: the action reports its own error).
    async fn execute(
        &self,
        state: &mut JobState,
        spawn: Spawn,
        files: &Files,
        script: bool,
    ) -> StepResult {
        let mut handler = Lines {
            exec: self,
            matchers: std::mem::take(&mut state.matchers),
            workspace: state.workspace.clone(),
            outputs: IndexMap::new(),
            stop_token: None,
            set_env: Vec::new(),
            add_path: Vec::new(),
            command_failed: false,
            saved_state: Vec::new(),
            echo_commands: false,
        };
        let mut cancel = state.cancel.clone();
        // A cancellation that came before this step does not stop it: the step runs because
        // its `if` asked to run after a cancel (`always()`, `cancelled()`), as cleanup does on
        // GitHub.
        cancel.borrow_and_update();
        let (exit, pgid) = process::run(spawn, &mut cancel, |line| handler.line(&line)).await;
        state.matchers = std::mem::take(&mut handler.matchers);
        let mut outputs = std::mem::take(&mut handler.outputs);
        for (name, value) in std::mem::take(&mut handler.set_env) {
            state.set_env(name, value);
        }
        for dir in std::mem::take(&mut handler.add_path) {
            state.path_first(dir);
        }
        let command_failed = handler.command_failed;
        if let Err(e) = append_state(&files.state, &handler.saved_state) {
            self.log(&format!("##[warning]save-state: {e}"));
        }
        if let Some(p) = pgid {
            state.pgids.push(p);
        }
        // As the runner's `FileCommandManager.ProcessFiles`: each file on its own, a file it
        // cannot read logged with two errors, and the step failed whatever its exit code.
        let file_failed = self.apply_files(state, files, &mut outputs);
        let command_failed = command_failed || file_failed;
        let (outcome, exit_code) = match exit {
            Exit::Code(0) if command_failed => (Status::Failure, Some(0)),
            Exit::Code(0) => (Status::Success, Some(0)),
            Exit::Code(code) => {
                if script {
                    self.log(&format!(
                        "##[error]Process completed with exit code {code}."
                    ));
                }
                (Status::Failure, Some(code))
            }
            Exit::TimedOut if Instant::now() >= state.deadline => {
                // The job's time ran out, not the step's: the job is cancelled, and so is the
                // step, as the runner cancels the running step when the job is.
                if let Some(message) = state.time_out() {
                    self.log(&message);
                }
                self.log("##[error]The operation was canceled.");
                (Status::Cancelled, None)
            }
            Exit::TimedOut => {
                let message = self.timed_out.as_deref();
                self.log(&format!(
                    "##[error]{}",
                    message.unwrap_or("The action has timed out.")
                ));
                (Status::Failure, None)
            }
            Exit::Cancelled => {
                // The runner's coordinator logs nothing for a background step it cancels
                // (by a `cancel` step or with the job): its result says it.
                if !state.is_background() {
                    self.log("##[error]The operation was canceled.");
                }
                (Status::Cancelled, None)
            }
            Exit::SpawnFailed(e) => {
                self.log(&format!("##[error]cannot start the step: {e}"));
                (Status::Failure, None)
            }
            Exit::NoDirectory(e) => {
                self.log(&format!("##[error]{e}"));
                (Status::Failure, None)
            }
        };
        StepResult {
            outcome,
            exit_code,
            outputs,
        }
    }

    /// Reads the step's environment files into the job; whether one could not be read.
    fn apply_files(
        &self,
        state: &mut JobState,
        files: &Files,
        outputs: &mut IndexMap<String, String>,
    ) -> bool {
        // A step may have deleted a file: that reads as empty. Most steps write none of them:
        // an empty file is known from its size alone (one call, not four).
        let read = |p: &Path| match std::fs::metadata(p) {
            Ok(m) if m.is_file() && m.len() == 0 => Ok(String::new()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            _ => match std::fs::read_to_string(p) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
                r => r.map_err(|e| e.to_string()),
            },
        };
        let pairs = |p: &Path| read(p).and_then(|t| parse_env_file(&t).map_err(|e| e.to_string()));
        let mut failed = false;
        let mut fail = |name: &str, problem: String| {
            for message in [crate::commands::file_command_failed(name), problem] {
                self.log(&format!("##[error]{message}"));
                self.shared
                    .annotate(&self.inst.display, Annotation::new(Level::Error, message));
            }
            failed = true;
        };
        match read(&files.path) {
            // As the runner's `AddPathFileCommand`: each non-empty line (`ReadAllLines`: `\n`,
            // `\r\n` or `\r` ends one) as written, the newest first, and a directory added
            // again moves to the front rather than appearing twice.
            Ok(text) => {
                for line in text.split(['\n', '\r']).filter(|l| !l.is_empty()) {
                    state.path_moved(line.to_owned());
                }
            }
            Err(e) => fail("path", e),
        }
        let mut errors = Vec::new();
        match pairs(&files.env) {
            Ok(pairs) => {
                for (name, value) in pairs {
                    // The runner refuses it (actions/runner#2775): an error annotation, the
                    // step's result unchanged.
                    if name.eq_ignore_ascii_case("NODE_OPTIONS") {
                        errors.push(
                            "Can't store NODE_OPTIONS output parameter using '$GITHUB_ENV' \
                             command."
                                .to_owned(),
                        );
                    } else {
                        state.set_env(name, value);
                    }
                }
            }
            Err(e) => fail("env", e),
        }
        match pairs(&files.output) {
            Ok(pairs) => outputs.extend(pairs),
            Err(e) => fail("output", e),
        }
        match read(&files.summary) {
            // The runner's limit: a larger summary is dropped whole with an error annotation
            // (`CreateStepSummaryCommand`), the step's result unchanged.
            Ok(text) if text.len() > STEP_SUMMARY_LIMIT => errors.push(format!(
                "$GITHUB_STEP_SUMMARY upload aborted, supports content up to a size of {}k, got \
                 {}k. For more information see: https://docs.github.com/actions/using-workflows/\
                 workflow-commands-for-github-actions#adding-a-markdown-summary",
                STEP_SUMMARY_LIMIT / 1024,
                text.len() / 1024
            )),
            Ok(text) => state.summary.push_str(&text),
            Err(e) => fail("step_summary", e),
        }
        for message in errors {
            self.log(&format!("##[error]{message}"));
            self.shared
                .annotate(&self.inst.display, Annotation::new(Level::Error, message));
        }
        failed
    }

    async fn builtin(
        &self,
        state: &mut JobState,
        builtin: crate::workflow::Builtin,
        with: &Mapping,
    ) -> StepResult {
        let inputs: IndexMap<String, String> = match mapping_values(self.ctx, with, "with") {
            Ok(values) => values.into_iter().collect(),
            Err(e) => {
                self.log(&format!("##[error]{e}"));
                return StepResult::failed(Status::Failure);
            }
        };
        let valid = builtin.inputs();
        for name in inputs.keys().filter(|k| !valid.contains(&k.as_str())) {
            self.log(&unexpected_input(name, valid.iter().copied()));
        }
        let cx = builtins::Cx {
            shared: self.shared,
            temp: &state.temp,
            workspace: &state.workspace,
            env: self.env,
        };
        match builtins::run(builtin, &cx, &inputs).await {
            Ok(out) => {
                for line in &out.logs {
                    self.log(line);
                }
                // Each put first, the last first: the list keeps its order at the front.
                for dir in out.path.into_iter().rev() {
                    state.path_first(dir);
                }
                for (name, value) in out.env {
                    state.set_env(name, value);
                }
                state.posts.extend(out.post.map(JobPost::Builtin));
                if let Some(matchers) = crate::matchers::for_builtin(builtin)
                    && let Err(e) = state.matchers.add(matchers, "the built-in setup action")
                {
                    self.log(&format!("##[warning]{e}"));
                }
                StepResult {
                    outcome: Status::Success,
                    exit_code: None,
                    outputs: out.outputs,
                }
            }
            Err(e) => {
                self.log(&format!("##[error]{e}"));
                StepResult::failed(Status::Failure)
            }
        }
    }

    async fn composite(&self, state: &mut JobState, path: &str, with: &Mapping) -> StepResult {
        // Components drop `.` and a trailing `/`: `uses: ./` is the workspace itself, and
        // GITHUB_ACTION_PATH never ends in a separator on GitHub.
        let dir: PathBuf = state.workspace.join(path).components().collect();
        let action = match crate::load::load_action(&dir) {
            Ok(a) => {
                for line in &a.warnings {
                    self.log(&format!("##[warning]{line}"));
                }
                a
            }
            // A missing action.yml is one line, as the runner logs it; a malformed one is
            // rendered with its positions.
            Err(e) if e.diagnostics.iter().all(|d| d.span.is_none()) => {
                for d in &e.diagnostics {
                    self.log(&format!("##[error]{}", d.message));
                }
                return StepResult::failed(Status::Failure);
            }
            Err(e) => {
                for line in e.to_string().lines() {
                    self.log(&format!("##[error]{line}"));
                }
                return StepResult::failed(Status::Failure);
            }
        };
        let mut given: IndexMap<String, String> = match mapping_values(self.ctx, with, "with") {
            Ok(values) => values.into_iter().collect(),
            Err(e) => {
                self.log(&format!("##[error]{e}"));
                return StepResult::failed(Status::Failure);
            }
        };
        let mut inputs = IndexMap::new();
        for (name, input) in &action.inputs {
            let value = match given.shift_remove(name) {
                Some(value) => {
                    if let Some(message) = &input.deprecation_message {
                        // ActionRunner's warning (an annotation too), for an input the step
                        // gives.
                        let warning =
                            format!("Input '{name}' has been deprecated with message: {message}");
                        self.log(&format!("##[warning]{warning}"));
                        self.shared
                            .annotate(&self.inst.display, Annotation::new(Level::Warning, warning));
                    }
                    value
                }
                None => {
                    if input.required && input.default.is_none() {
                        self.log(&format!(
                            "##[warning]Input required and not supplied: {name}"
                        ));
                    }
                    match input
                        .default
                        .as_ref()
                        .map(|t| self.ctx.string(t))
                        .transpose()
                    {
                        Ok(v) => v.unwrap_or_default(),
                        Err(e) => {
                            self.log(&format!("##[error]input `{name}`: {e}"));
                            return StepResult::failed(Status::Failure);
                        }
                    }
                }
            };
            inputs.insert(name.clone(), Value::String(value));
        }
        for (name, value) in given {
            self.log(&unexpected_input(
                &name,
                action.inputs.keys().map(String::as_str),
            ));
            // The runner still hands them to a JavaScript action.
            inputs.insert(name, Value::String(value));
        }
        if let Some(runs) = &action.node {
            return self.node_action(state, path, &dir, runs, &inputs).await;
        }
        let mut frame = Frame {
            steps: IndexMap::new(),
            inputs: Value::Object(inputs),
            action_path: Some(dir),
            failed: false,
        };
        let cx = JobCx {
            shared: self.shared,
            job: self.job,
            scope: self.scope,
            inst: self.inst,
        };
        run_steps(cx, state, &mut frame, &action.steps).await;
        let mut ctx = self.ctx.clone();
        ctx.set("steps", Value::Object(frame.steps.clone()));
        ctx.set("inputs", frame.inputs.clone());
        let outputs = action
            .outputs
            .iter()
            .map(|(k, o)| (k.clone(), ctx.string(&o.value).unwrap_or_default()))
            .collect();
        let outcome = if frame.failed {
            Status::Failure
        } else if state.cancelled {
            Status::Cancelled
        } else {
            Status::Success
        };
        StepResult {
            outcome,
            exit_code: None,
            outputs,
        }
    }
}

impl Exec<'_> {
    /// A JavaScript action: `main` on the host's `node`, inputs as `INPUT_<NAME>`; `post` is
    /// queued for the end of the job, whatever `main` did, with what `main` saved in
    /// `GITHUB_STATE` as `STATE_<name>`. As the runner's `ActionRunner`: a local action's
    /// `pre` does not run (the repository is not checked out when the job's pre steps are set
    /// up), which it says in a warning, and the post step is added as `main` starts.
    async fn node_action(
        &self,
        state: &mut JobState,
        uses: &str,
        dir: &Path,
        runs: &crate::workflow::NodeRuns,
        inputs: &IndexMap<String, Value>,
    ) -> StepResult {
        if runs.pre.is_some() {
            let message =
                format!("`pre` execution is not supported for local action from '{uses}'");
            self.log(&format!("##[warning]{message}"));
            self.shared
                .annotate(&self.inst.display, Annotation::new(Level::Warning, message));
        }
        let files = match self.files(state) {
            Ok(f) => f,
            Err(e) => {
                self.log(&format!("##[error]cannot write the step's files: {e}"));
                return StepResult::failed(Status::Failure);
            }
        };
        let mut env = self.process_env(state, &files, Some(dir));
        env.extend(inputs.iter().map(|(k, v)| {
            (
                format!("INPUT_{}", k.replace(' ', "_").to_uppercase()),
                v.to_display_string(),
            )
        }));
        let spawn = Spawn {
            program: "node".to_owned(),
            found: None,
            args: vec![dir.join(&runs.main).to_string_lossy().into_owned()],
            cwd: state.workspace.clone(),
            env: env.clone(),
            timeout: self.remaining(state),
            grace: self.shared.opts.kill_grace,
        };
        let mut result = self.execute(state, spawn, &files, false).await;
        let mut saved = Vec::new();
        match std::fs::read_to_string(&files.state)
            .map_err(|e| e.to_string())
            .and_then(|t| parse_env_file(&t).map_err(|e| e.to_string()))
        {
            Ok(pairs) => saved.extend(pairs.into_iter().map(|(k, v)| (format!("STATE_{k}"), v))),
            Err(e) => {
                // The runner's `state` file command: two errors, and the step fails.
                for message in [crate::commands::file_command_failed("state"), e] {
                    self.log(&format!("##[error]{message}"));
                    self.shared
                        .annotate(&self.inst.display, Annotation::new(Level::Error, message));
                }
                result.outcome = Status::Failure;
            }
        }
        if let Some(post) = &runs.post {
            env.extend(saved);
            state.posts.push(JobPost::Node {
                script: dir.join(post),
                env,
                cwd: state.workspace.clone(),
                condition: runs.post_if.clone(),
                ctx: self.ctx.clone(),
            });
        }
        result
    }
}

/// Work queued for the end of the job, run in reverse order.
enum JobPost {
    /// A built-in action's post step (cache saves).
    Builtin(Post),
    /// A JavaScript action's `post` script with the environment of its `main`.
    Node {
        script: PathBuf,
        env: Vec<(String, String)>,
        cwd: PathBuf,
        condition: Option<Text>,
        ctx: Ctx,
    },
}

/// Appends `pairs` to a `GITHUB_STATE` file in its multi-line form (values may hold newlines).
fn append_state(path: &Path, pairs: &[(String, String)]) -> std::io::Result<()> {
    if pairs.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for (name, value) in pairs {
        let mut delimiter = "ghadelimiter_kiln".to_owned();
        while value.lines().any(|l| l == delimiter) {
            delimiter.push('_');
        }
        text.push_str(&format!("{name}<<{delimiter}\n{value}\n{delimiter}\n"));
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)?;
    std::io::Write::write_all(&mut file, text.as_bytes())
}

/// The runner's words for a command without its `name` property.
fn missing_name(command: &str) -> String {
    format!("Required field 'name' is missing in ##[{command}] command.")
}

/// .NET's `ArgumentNullException` message, which the runner's `ArgUtil.NotNullOrEmpty` throws
/// for an empty argument (`::add-path::`, `::echo::`).
fn null_argument(name: &str) -> String {
    format!("Value cannot be null. (Parameter '{name}')")
}

/// Opts a job into the `set-env` and `add-path` workflow commands GitHub disabled in 2020.
const UNSECURE_COMMANDS: &str = "ACTIONS_ALLOW_UNSECURE_COMMANDS";

/// Opts a job into stop tokens the runner refuses (empty, `pause-logging`, a command's name).
const UNSECURE_STOP_TOKENS: &str = "ACTIONS_ALLOW_UNSECURE_STOPCOMMAND_TOKENS";

/// The runner's `Constants.Runner.UnsupportedStopCommandTokenDisabled`, word for word.
const UNSECURE_STOP_TOKEN_REFUSED: &str = "You cannot use a endToken that is an empty string, the string 'pause-logging', or another workflow command. For more information see: https://docs.github.com/actions/learn-github-actions/workflow-commands-for-github-actions#example-stopping-and-starting-workflow-commands or opt into insecure command execution by setting the `ACTIONS_ALLOW_UNSECURE_STOPCOMMAND_TOKENS` environment variable to `true`.";

/// The runner's `StringUtil.ConvertToBoolean`: `true`, `1` and `$true` in any case; anything
/// else (or nothing) is false.
fn runner_boolean(value: Option<String>) -> bool {
    value.is_some_and(|v| {
        v == "1" || v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("$true")
    })
}

/// Turns each output line into a log line or a workflow command.
struct Lines<'a> {
    exec: &'a Exec<'a>,
    /// The job's problem matchers, lent to the step for its output.
    matchers: Matchers,
    /// Where a problem's relative file names are rooted (`github.workspace`).
    workspace: PathBuf,
    outputs: IndexMap<String, String>,
    stop_token: Option<String>,
    /// `::set-env::` variables, applied to the job when the step ends.
    set_env: Vec<(String, String)>,
    /// `::add-path::` directories, in the order written.
    add_path: Vec<String>,
    /// A command could not be processed: the runner fails the step whatever its exit code.
    command_failed: bool,
    /// `::save-state::` pairs, added to the step's `GITHUB_STATE` when it ends.
    saved_state: Vec<(String, String)>,
    /// `::echo::on`: commands are logged as well as carried out.
    echo_commands: bool,
}

impl Lines<'_> {
    /// `set-env` and `add-path`, as the runner's `ActionCommandManager` handles them: disabled
    /// unless `ACTIONS_ALLOW_UNSECURE_COMMANDS` is `true` in the step's `env` context or the
    /// runner's own environment, and then a failure of the step; with it, they set a variable
    /// or prepend a directory for the following steps (`NODE_OPTIONS` stays refused).
    fn unsecure(&mut self, line: &str, command: &str, name: Option<&String>, data: String) {
        let shared = self.exec.shared;
        let job = &self.exec.inst.display;
        let opted_in = |v: Option<String>| v.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let allowed = opted_in(std::env::var(UNSECURE_COMMANDS).ok())
            || opted_in(self.exec.env.get(UNSECURE_COMMANDS).cloned());
        let problem = if !allowed {
            Some(format!(
                "The `{command}` command is disabled. Please upgrade to using Environment Files or opt into unsecure command execution by setting the `{UNSECURE_COMMANDS}` environment variable to `true`. For more information see: https://github.blog/changelog/2020-10-01-github-actions-deprecating-set-env-and-add-path-commands/"
            ))
        } else if command == "add-path" {
            if data.is_empty() {
                Some(null_argument("path"))
            } else {
                self.add_path.push(data);
                None
            }
        } else {
            match name.filter(|n| !n.is_empty()) {
                None => Some(missing_name("set-env")),
                Some(n) if n.eq_ignore_ascii_case("NODE_OPTIONS") => {
                    let message =
                        format!("Can't update {n} environment variable using ::set-env:: command.");
                    log(shared, job, &format!("##[error]{message}"));
                    shared.annotate(job, Annotation::new(Level::Error, message));
                    None
                }
                Some(n) => {
                    self.set_env.push((n.clone(), data));
                    None
                }
            }
        };
        if let Some(problem) = problem {
            self.command_error(line, &problem);
        }
    }

    /// `::stop-commands::TOKEN`, as the runner's `ActionCommandManager` (`ValidateStopToken`
    /// and the stop branch of `TryProcessCommand`) handles it: an empty token, `pause-logging`
    /// or the name of a workflow command is refused with the runner's words and fails the step,
    /// and commands go on being processed, unless `ACTIONS_ALLOW_UNSECURE_STOPCOMMAND_TOKENS`
    /// is true in the runner's environment or the step's `env` context. A token longer than six
    /// characters is masked before the line is logged: it is what resumes commands, so output
    /// that could guess it could inject commands again.
    fn stop_commands(&mut self, line: &str, token: String) {
        let shared = self.exec.shared;
        let job = &self.exec.inst.display;
        let refused =
            token.is_empty() || is_command(&token) || token.eq_ignore_ascii_case("pause-logging");
        let allowed = runner_boolean(std::env::var(UNSECURE_STOP_TOKENS).ok())
            || runner_boolean(self.exec.env.get(UNSECURE_STOP_TOKENS).cloned());
        if refused && !allowed {
            log(
                shared,
                job,
                &format!("##[error]{UNSECURE_STOP_TOKEN_REFUSED}"),
            );
            shared.annotate(
                job,
                Annotation::new(Level::Error, UNSECURE_STOP_TOKEN_REFUSED.to_string()),
            );
            self.command_failed = true;
            return;
        }
        // C#'s `string.Length` counts UTF-16 units.
        if token.encode_utf16().count() > 6 {
            shared.add_mask(&token);
        }
        log(shared, job, line);
        self.stop_token = Some(token);
    }

    fn line(&mut self, line: &str) {
        let shared = self.exec.shared;
        let job = &self.exec.inst.display;
        // As the runner: the `::name::` form, else the older `##[name]`; only the commands it
        // knows (and the token that resumes them after `stop-commands`), named in any case.
        let known = |name: &str| {
            is_command(name)
                || self
                    .stop_token
                    .as_ref()
                    .is_some_and(|t| t.eq_ignore_ascii_case(name))
        };
        let Some(cmd) = parse_command(line)
            .filter(|c| known(&c.name))
            .or_else(|| parse_legacy_command(line).filter(|c| known(&c.name)))
        else {
            self.output(line);
            return;
        };
        if let Some(token) = &self.stop_token {
            if cmd.name.eq_ignore_ascii_case(token) {
                self.stop_token = None;
                log(shared, job, line);
            } else {
                self.output(line);
            }
            return;
        }
        let name = cmd.name.to_ascii_lowercase();
        if self.echo_commands && name != "add-mask" && name != "stop-commands" {
            log(shared, job, line);
        }
        match name.as_str() {
            "add-mask" if cmd.data.trim().is_empty() => {
                self.warn("Can't add secret mask for empty string in ##[add-mask] command.");
            }
            "add-mask" => {
                shared.add_mask(&cmd.data);
                // With `echo` on the runner shows the command, never the value.
                if self.echo_commands {
                    log(shared, job, "::add-mask::***");
                }
            }
            "echo" => match cmd.data.trim().to_ascii_lowercase().as_str() {
                _ if cmd.data.is_empty() => self.command_error(line, &null_argument("value")),
                "on" => self.echo_commands = true,
                "off" => self.echo_commands = false,
                _ => self.command_error(
                    line,
                    &format!(
                        "Invalid echo command value. Possible values can be: 'on', 'off'. Current value is: '{}'.",
                        cmd.data
                    ),
                ),
            },
            "add-matcher" => self.add_matcher(line, &cmd.data),
            "remove-matcher" => self.remove_matcher(line, cmd.properties.get("owner"), &cmd.data),
            "save-state" => {
                self.warn(&deprecated_command("save-state"));
                match cmd.properties.get("name").filter(|n| !n.is_empty()) {
                    Some(name) => self.saved_state.push((name.clone(), cmd.data)),
                    None => self.command_error(line, &missing_name("save-state")),
                }
            }
            "stop-commands" => self.stop_commands(line, cmd.data),
            "group" => log(shared, job, &format!("##[group]{}", cmd.data)),
            "endgroup" => log(shared, job, "##[endgroup]"),
            "debug" if shared.step_debug() => {
                log(shared, job, &format!("##[debug]{}", cmd.data));
            }
            "debug" => {}
            "error" | "warning" | "notice" => {
                let level = match cmd.name.as_str() {
                    "error" => Level::Error,
                    "warning" => Level::Warning,
                    _ => Level::Notice,
                };
                let message = shared.mask(&cmd.data);
                log(shared, job, &format!("##[{name}]{message}"));
                shared.annotate(job, annotation(shared, level, message, &cmd.properties));
            }
            "set-output" => {
                self.warn(&deprecated_command("set-output"));
                match cmd.properties.get("name").filter(|n| !n.is_empty()) {
                    Some(name) => {
                        self.outputs.insert(name.clone(), cmd.data);
                    }
                    None => self.command_error(line, &missing_name("set-output")),
                }
            }
            "set-env" | "add-path" => self.unsecure(
                line,
                cmd.name.as_str(),
                cmd.properties.get("name"),
                cmd.data,
            ),
            _ => self.output(line),
        }
    }

    /// A line that is not a command: a problem when a matcher recognises it, marked in the log
    /// with its severity as the runner marks it; otherwise plain output.
    fn output(&mut self, line: &str) {
        let shared = self.exec.shared;
        let job = &self.exec.inst.display;
        if !self.matchers.is_empty()
            && let Some(mut annotation) = self.matchers.scan(line, &self.workspace)
        {
            annotation.message = shared.mask(&annotation.message);
            annotation.title = annotation.title.map(|t| shared.mask(&t));
            log(
                shared,
                job,
                &format!("##[{}]{line}", level_word(annotation.level)),
            );
            shared.annotate(job, annotation);
            return;
        }
        log(shared, job, line);
    }

    /// A matcher file's path: relative ones are the workspace's, as on GitHub.
    fn matcher_file(&self, data: &str) -> (PathBuf, Result<String, MatcherError>) {
        let path = self.workspace.join(data.trim());
        let text = std::fs::read_to_string(&path).map_err(|e| MatcherError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        });
        (path, text)
    }

    fn add_matcher(&mut self, line: &str, data: &str) {
        if data.trim().is_empty() {
            self.warn("File path must be specified.");
            return;
        }
        let (path, text) = self.matcher_file(data);
        let added = text.and_then(|text| self.matchers.add(&text, &path.display().to_string()));
        if let Err(e) = added {
            self.command_error(line, &e.to_string());
        }
    }

    fn remove_matcher(&mut self, line: &str, owner: Option<&String>, data: &str) {
        let owner = owner.map(|o| o.trim()).filter(|o| !o.is_empty());
        let file = Some(data.trim()).filter(|f| !f.is_empty());
        match (owner, file) {
            (Some(_), Some(_)) => self.warn(
                "Either specify an owner name or a file path in ##[remove-matcher] command. Both values cannot be set.",
            ),
            (None, None) => self.warn(
                "Either an owner name or a file path must be specified in ##[remove-matcher] command.",
            ),
            (Some(owner), None) => self.matchers.remove(owner),
            (None, Some(file)) => {
                let (path, text) = self.matcher_file(file);
                match text.and_then(|t| Matchers::owners_in(&t, &path.display().to_string())) {
                    Ok(owners) => owners.iter().for_each(|o| self.matchers.remove(o)),
                    Err(e) => self.command_error(line, &e.to_string()),
                }
            }
        }
    }

    fn warn(&self, message: &str) {
        let shared = self.exec.shared;
        let job = &self.exec.inst.display;
        log(shared, job, &format!("##[warning]{message}"));
        shared.annotate(job, Annotation::new(Level::Warning, message.to_owned()));
    }

    /// The runner's answer to a command that failed: two errors, and the step fails.
    fn command_error(&mut self, line: &str, problem: &str) {
        let shared = self.exec.shared;
        let job = &self.exec.inst.display;
        let first = format!(
            "Unable to process command '{}' successfully.",
            shared.mask(line)
        );
        for message in [first, shared.mask(problem)] {
            log(shared, job, &format!("##[error]{message}"));
            shared.annotate(job, Annotation::new(Level::Error, message));
        }
        self.command_failed = true;
    }
}

fn level_word(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warning => "warning",
        Level::Notice => "notice",
    }
}

/// An annotation from a workflow command's properties: `title`, and `file` with `line`,
/// `endLine`, `col`, `endColumn` (GitHub ignores numbers that do not parse; so does kiln).
fn annotation(
    shared: &Shared,
    level: Level,
    message: String,
    properties: &IndexMap<String, String>,
) -> Annotation {
    let number = |key: &str| {
        properties
            .get(key)
            .and_then(|v| v.trim().parse::<u32>().ok())
    };
    let location = properties
        .get("file")
        .filter(|f| !f.is_empty())
        .map(|file| SourceLocation {
            file: shared.mask(file),
            line: number("line"),
            end_line: number("endline"),
            col: number("col"),
            end_column: number("endcolumn"),
        });
    Annotation {
        level,
        message,
        title: properties.get("title").map(|t| shared.mask(t)),
        location,
    }
}

/// The program and arguments for a shell, as GitHub documents them for Linux.
/// How a `run:` step is started: the program, its arguments (`{0}` stands for the script's
/// path), the script file's extension and the script as written to that file. As the runner
/// does it (actions/runner `ScriptHandler`): no `shell` means `bash -e {0}` (`sh -e {0}` where
/// bash is missing) with a `.sh` file; a built-in name takes its documented arguments; `NAME
/// ARGS` is a custom shell whose arguments must hold `{0}`; the extension follows the program
/// (`.sh`, `.py`, `.ps1`, none for a custom program).
#[derive(Debug, PartialEq, Eq)]
struct ShellLine {
    program: String,
    /// Where `program` is, when choosing the default shell already searched `PATH` for it.
    found: Option<PathBuf>,
    args: Vec<String>,
    extension: &'static str,
}

fn shell_line(shell: Option<&str>, path: &str, cwd: &Path) -> Result<ShellLine, String> {
    let shell = shell.map(str::trim).filter(|s| !s.is_empty());
    let mut found = None;
    let (program, format) = match shell {
        None => {
            found = crate::process::find_program("bash", Some(path), cwd);
            let program = if found.is_some() { "bash" } else { "sh" };
            (program, "-e {0}".to_owned())
        }
        Some(line) => {
            let (program, args) = line
                .split_once(char::is_whitespace)
                .map_or((line, ""), |(p, a)| (p, a.trim_start()));
            let format = if args.is_empty() {
                match program {
                    "bash" => "--noprofile --norc -e -o pipefail {0}",
                    "sh" => "-e {0}",
                    "python" => "{0}",
                    "pwsh" | "powershell" => "-command \". '{0}'\"",
                    "cmd" => {
                        return Err(
                            "shell `cmd` is a Windows shell; this runner is Linux (use bash, sh, \
                             python, pwsh or a custom `program {0}`)"
                                .to_owned(),
                        );
                    }
                    _ => "",
                }
                .to_owned()
            } else {
                args.to_owned()
            };
            if !format.contains("{0}") {
                return Err(format!(
                    "invalid shell `{line}`: a shell must be a built-in (bash, sh, python, pwsh) \
                     or a command line containing `{{0}}` for the script's path"
                ));
            }
            (program, format)
        }
    };
    let extension = match program {
        "bash" | "sh" => "sh",
        "python" => "py",
        "pwsh" | "powershell" => "ps1",
        _ => "",
    };
    Ok(ShellLine {
        program: program.to_owned(),
        found,
        args: split_arguments(&format),
        extension,
    })
}

/// The script as the shell is given it: PowerShell stops at the first error and exits with the
/// last native command's code (the runner wraps the script the same way).
fn shell_script(program: &str, body: String) -> String {
    match program {
        "pwsh" | "powershell" => format!(
            "$ErrorActionPreference = 'stop'\n{body}\nif ((Test-Path -LiteralPath variable:\\LASTEXITCODE)) {{ exit $LASTEXITCODE }}"
        ),
        _ => body,
    }
}

/// A command line split into arguments as .NET starts a process (how the runner passes a
/// shell's arguments): whitespace separates, double quotes group and are removed, `\"` is a
/// quote; single quotes are ordinary characters.
fn split_arguments(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut started = false;
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'"') => {
                current.push('"');
                chars.next();
                started = true;
            }
            '"' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    args.push(std::mem::take(&mut current));
                    started = false;
                }
            }
            c => {
                current.push(c);
                started = true;
            }
        }
    }
    if started {
        args.push(current);
    }
    args
}

async fn run_posts(shared: &Shared, inst: &Instance, state: &mut JobState) {
    let posts = std::mem::take(&mut state.posts);
    let ok = !state.failed && !state.cancelled;
    for post in posts.into_iter().rev() {
        match post {
            JobPost::Builtin(post) => {
                for line in builtins::post(shared, &post, ok).await {
                    log(shared, &inst.display, &line);
                }
            }
            JobPost::Node {
                script,
                env,
                cwd,
                condition,
                mut ctx,
            } => {
                ctx.flags.failed = state.failed;
                ctx.flags.cancelled = state.cancelled;
                // `post-if` defaults to `always()`.
                match condition.as_ref().map(|c| ctx.condition(c)) {
                    None | Some(Ok(true)) => {}
                    Some(Ok(false)) => continue,
                    Some(Err(e)) => {
                        log(shared, &inst.display, &format!("##[error]post-if: {e}"));
                        continue;
                    }
                }
                let spawn = Spawn {
                    program: "node".to_owned(),
                    found: None,
                    args: vec![script.to_string_lossy().into_owned()],
                    cwd,
                    env,
                    timeout: Some(state.deadline.saturating_duration_since(Instant::now())),
                    grace: shared.opts.kill_grace,
                };
                let mut cancel = state.cancel.clone();
                cancel.borrow_and_update();
                let (exit, pgid) =
                    process::run(spawn, &mut cancel, |line| log(shared, &inst.display, &line))
                        .await;
                if let Some(p) = pgid {
                    state.pgids.push(p);
                }
                if exit != Exit::Code(0) {
                    // A failed post step fails the job, as on GitHub; a non-zero exit is the
                    // action's to explain (see `Exec::execute`).
                    state.failed = true;
                    let how = match exit {
                        Exit::Code(_) => None,
                        Exit::TimedOut => {
                            Some("The job has exceeded the maximum execution time".into())
                        }
                        Exit::Cancelled => Some("The operation was canceled.".into()),
                        Exit::SpawnFailed(e) => Some(format!("cannot start the post script: {e}")),
                        Exit::NoDirectory(e) => Some(e),
                    };
                    if let Some(how) = how {
                        log(shared, &inst.display, &format!("##[error]{how}"));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_file_holds_exactly_the_new_content_longer_or_shorter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("step.sh");
        for content in [
            "echo a long first script\n",
            "echo b\n",
            "",
            "echo c, longer again\n",
        ] {
            rewrite_in_place(&path, content.as_bytes()).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
        }
    }

    /// The command lines of "Workflow syntax", `jobs.<job_id>.steps[*].shell`, as the runner
    /// builds them; `cmd` is refused clearly and so is a custom shell without `{0}`.
    #[test]
    fn shells_start_as_the_runner_starts_them() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let path = bin.to_string_lossy().into_owned();
        let line = |shell: Option<&str>| shell_line(shell, &path, dir.path());
        let expect = |program: &str, args: &[&str], extension: &'static str| ShellLine {
            program: program.to_owned(),
            found: None,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            extension,
        };
        // No bash on this PATH: the default falls back to sh.
        assert_eq!(line(None), Ok(expect("sh", &["-e", "{0}"], "sh")));
        let bash = bin.join("bash");
        std::fs::write(&bash, "").unwrap();
        std::fs::set_permissions(&bash, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        // The default shell is found once, and started from where it was found.
        let default = ShellLine {
            found: Some(bash.clone()),
            ..expect("bash", &["-e", "{0}"], "sh")
        };
        assert_eq!(line(None), Ok(default));
        assert_eq!(
            line(Some("bash")),
            Ok(expect(
                "bash",
                &["--noprofile", "--norc", "-e", "-o", "pipefail", "{0}"],
                "sh"
            ))
        );
        assert_eq!(line(Some("sh")), Ok(expect("sh", &["-e", "{0}"], "sh")));
        assert_eq!(line(Some("python")), Ok(expect("python", &["{0}"], "py")));
        assert_eq!(
            line(Some("pwsh")),
            Ok(expect("pwsh", &["-command", ". '{0}'"], "ps1"))
        );
        assert_eq!(
            line(Some("perl -w {0}")),
            Ok(expect("perl", &["-w", "{0}"], ""))
        );
        assert_eq!(
            line(Some("bash -c \"source {0}\" x")),
            Ok(expect("bash", &["-c", "source {0}", "x"], "sh"))
        );
        assert!(line(Some("cmd")).unwrap_err().contains("Windows"));
        assert!(line(Some("perl")).unwrap_err().contains("{0}"));
    }

    #[test]
    fn arguments_split_as_dotnet_splits_them() {
        assert_eq!(split_arguments("  a  b\tc "), ["a", "b", "c"]);
        assert_eq!(
            split_arguments(r#"-c "x y" 'p q'"#),
            ["-c", "x y", "'p", "q'"]
        );
        assert_eq!(split_arguments(r#"a\"b "" c"#), ["a\"b", "", "c"]);
    }
}
