//! `kiln ci`: GitHub Actions workflows of the repository at `-C DIR`, validated and run on this
//! machine by kiln-pipelines, and recorded in the state store.
//!
//! Where things go:
//! - runs, jobs and steps: `.kiln/state.db` (kiln-state's `pipeline_*` tables), written through
//!   [`StateRunStore`], kiln-pipelines' `RunStore` over the state store;
//! - log lines: files, `.kiln/ci/<run>/<job>.log` — a chatty build writes megabytes and SQLite
//!   rows would only make the state file big and slow to copy; the database keeps the structure;
//! - artifacts and caches: `.kiln/artifacts/` and `.kiln/cache/` (content-addressed by the runner);
//! - the run's directory: `.kiln/runs/run-<id>/`, one empty workspace per job instance that
//!   `actions/checkout` fills with a clone at the commit; removed when the run ends (kept on
//!   failure with `--keep-workspace`).
//!
//! Secrets are masked by the runner in every line it reports; everything stored here (log lines,
//! job outputs, summaries) is masked once more with the secrets given, so a line the runner
//! missed still never reaches the disk in clear.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use kiln_pipelines::events::Level;
use kiln_pipelines::workflow::Workflow;
use kiln_pipelines::{JobRecord, Masker, RunEvent, RunOptions, RunRecord, RunStore, Status};
use kiln_spec::diag::Diagnostic;
use kiln_state::{NewPipelineRun, PipelineJob, PipelineStep, Store};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::cli::{CiCommand, CiRunArgs, Output};
use crate::ops::{self, Failure};
use crate::render;

mod event;
mod git;
mod select;

pub(crate) use event::push_payload;
pub(crate) use git::{Changes, PushFacts, git};
use select::{filter_matrix, select_job};

/// Where workflows live, relative to the repository.
const WORKFLOWS_DIR: &str = ".github/workflows";

/// Runs a `kiln ci` subcommand.
pub async fn command(dir: &Path, command: &CiCommand) -> Result<(), Failure> {
    match command {
        CiCommand::Validate { workflows, output } => validate(dir, workflows, output),
        CiCommand::Run(args) => run(dir, args).await,
        CiCommand::List(output) => list(dir, output),
        CiCommand::Show { run, output } => show(dir, *run, output),
        CiCommand::Logs { run, job } => logs(dir, *run, job.as_deref()),
    }
}

/// The workflow files of the repository, relative to it, sorted.
pub(crate) fn workflow_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.join(WORKFLOWS_DIR)) else {
        return Vec::new();
    };
    let mut files: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.ends_with(".yml") || n.ends_with(".yaml"))
        .map(|n| format!("{WORKFLOWS_DIR}/{n}"))
        .collect();
    files.sort();
    files
}

/// A workflow named on the command line, as a path relative to the repository: a bare file name
/// is looked up in `.github/workflows` (with or without `.yml`/`.yaml`), else a workflow whose
/// `name:` it is, as `gh workflow run` takes either; anything with a `/` is a path (from the
/// repository, or absolute inside it).
fn resolve_named(dir: &Path, name: &str) -> Result<String, Failure> {
    if !name.contains('/') {
        let candidates = [
            name.to_owned(),
            format!("{name}.yml"),
            format!("{name}.yaml"),
        ];
        if let Some(rel) = candidates
            .iter()
            .map(|file| format!("{WORKFLOWS_DIR}/{file}"))
            .find(|rel| dir.join(rel).is_file())
        {
            return Ok(rel);
        }
        return workflow_named(dir, name).ok_or_else(|| unknown_workflow(dir, name));
    }
    let path = Path::new(name);
    let rel = if path.is_absolute() {
        let root = std::fs::canonicalize(dir)
            .map_err(|e| Failure::State(format!("cannot resolve {}: {e}", dir.display())))?;
        let full = std::fs::canonicalize(path).map_err(|_| unknown_workflow(dir, name))?;
        full.strip_prefix(&root)
            .map_err(|_| {
                Failure::Refused(format!(
                    "{name} is not inside the repository {}",
                    dir.display()
                ))
            })?
            .to_string_lossy()
            .into_owned()
    } else {
        name.trim_start_matches("./").to_owned()
    };
    if dir.join(&rel).is_file() {
        Ok(rel)
    } else {
        Err(unknown_workflow(dir, name))
    }
}

/// The one workflow file whose `name:` is `name` (two files of the same name name neither).
fn workflow_named(dir: &Path, name: &str) -> Option<String> {
    let mut named = workflow_files(dir).into_iter().filter(|rel| {
        std::fs::read_to_string(dir.join(rel))
            .ok()
            .and_then(|text| kiln_pipelines::parse_workflow(Path::new(rel), &text).ok())
            .is_some_and(|(workflow, _)| workflow.name.as_deref() == Some(name))
    });
    let first = named.next()?;
    named.next().is_none().then_some(first)
}

/// What a workflow and the workflows it calls flag without being refused (injection risks).
fn warnings(set: &kiln_pipelines::WorkflowSet) -> impl Iterator<Item = &Diagnostic> {
    std::iter::once(&set.root)
        .chain(set.called.values())
        .flat_map(|w| &w.warnings)
}

/// Prints the workflow's warnings on stderr, as a compiler does, before it runs.
fn print_warnings(set: &kiln_pipelines::WorkflowSet) {
    for d in warnings(set) {
        eprintln!("{}", render::warning(&set.sources, d));
    }
}

fn unknown_workflow(dir: &Path, name: &str) -> Failure {
    let found = workflow_files(dir);
    Failure::Refused(format!(
        "error: no workflow `{name}` in {}; {}",
        dir.join(WORKFLOWS_DIR).display(),
        listing(&found)
    ))
}

fn listing(found: &[String]) -> String {
    if found.is_empty() {
        "there are no workflow files (.yml) there".to_owned()
    } else {
        format!("the workflows are: {}", found.join(", "))
    }
}

/// The workflow to run: the one named, the only one there is, or the only one the event triggers.
fn resolve_run_workflow(dir: &Path, name: Option<&str>, event: &str) -> Result<String, Failure> {
    if let Some(name) = name {
        return resolve_named(dir, name);
    }
    let found = workflow_files(dir);
    // As GitHub runs the workflows an event triggers: a reusable workflow (`workflow_call`
    // only) or one for other events is not what a bare `kiln ci run` means.
    let triggered: Vec<String> = found
        .iter()
        .filter(|f| {
            kiln_pipelines::load(dir, f).map_or(true, |set| set.root.on.contains_key(event))
        })
        .cloned()
        .collect();
    match (found.as_slice(), triggered.as_slice()) {
        ([only], _) | (_, [only]) => Ok(only.clone()),
        ([], _) => Err(Failure::Refused(format!(
            "error: no workflow to run: {} holds no .yml files",
            dir.join(WORKFLOWS_DIR).display()
        ))),
        (_, []) => Err(Failure::Refused(format!(
            "error: no workflow runs on `{event}`; name one (e.g. `kiln ci run {}`): {}",
            found[0].rsplit('/').next().unwrap_or(&found[0]),
            listing(&found)
        ))),
        (_, several) => Err(Failure::Refused(format!(
            "error: several workflows run on `{event}`; name one (e.g. `kiln ci run {}`): {}",
            several[0].rsplit('/').next().unwrap_or(&several[0]),
            listing(several)
        ))),
    }
}

/// `kiln ci validate`.
fn validate(dir: &Path, names: &[String], output: &Output) -> Result<(), Failure> {
    let files = if names.is_empty() {
        let found = workflow_files(dir);
        if found.is_empty() {
            return Err(Failure::Invalid(format!(
                "error: no workflows: {} holds no .yml files",
                dir.join(WORKFLOWS_DIR).display()
            )));
        }
        found
    } else {
        names
            .iter()
            .map(|n| resolve_named(dir, n))
            .collect::<Result<Vec<_>, _>>()?
    };
    let results: Vec<(String, Result<kiln_pipelines::WorkflowSet, _>)> = files
        .into_iter()
        .map(|f| {
            let loaded = kiln_pipelines::load(dir, &f);
            (f, loaded)
        })
        .collect();
    let actions = local_actions_of(dir, &results);
    // What kiln refuses to run (`services`, `container`) loads, so that runs of the other jobs
    // go ahead, but it is a mistake here: the workflow cannot run whole.
    let found = Mistakes::of(&results, &actions);
    let mistakes = found.rendered.len();
    if output.json {
        let list: Vec<serde_json::Value> = results
            .iter()
            .map(|(path, r)| match r {
                Ok(set) => serde_json::json!({ "path": path, "valid": set.refused().is_empty(), "name": set.root.name, "jobs": set.root.jobs.len(), "diagnostics": set.refused().into_iter().map(|d| render::diagnostic_json(&set.sources, d)).collect::<Vec<_>>(), "warnings": warnings(set).map(|d| render::diagnostic_json(&set.sources, d)).collect::<Vec<_>>() }),
                Err(e) => serde_json::json!({ "path": path, "valid": false, "diagnostics": e.diagnostics.iter().map(|d| render::diagnostic_json(&e.sources, d)).collect::<Vec<_>>() }),
            })
            .collect();
        let action_list: Vec<serde_json::Value> = actions
            .iter()
            .map(|(path, r)| match r {
                Ok(_) => serde_json::json!({ "path": path, "valid": true, "diagnostics": [] }),
                Err(e) => serde_json::json!({ "path": path, "valid": false, "diagnostics": e.diagnostics.iter().map(|d| render::diagnostic_json(&e.sources, d)).collect::<Vec<_>>() }),
            })
            .collect();
        println!(
            "{:#}",
            serde_json::json!({ "valid": mistakes == 0, "workflows": list, "actions": action_list })
        );
        return if mistakes == 0 {
            Ok(())
        } else {
            Err(Failure::Invalid(String::new()))
        };
    }
    // A called workflow is loaded with each of its callers too: its warnings are printed once.
    let mut warned = std::collections::HashSet::new();
    for (path, r) in &results {
        if let Ok(set) = r {
            if set.refused().is_empty() {
                let jobs = set.root.jobs.len();
                println!(
                    "{path}: valid ({jobs} job{})",
                    if jobs == 1 { "" } else { "s" }
                );
            }
            for d in warnings(set) {
                let text = render::warning(&set.sources, d);
                if warned.insert(text.clone()) {
                    eprintln!("{text}");
                }
            }
        }
    }
    for (path, r) in &actions {
        if let Ok(action) = r {
            println!("{path}: valid (local action)");
            for warning in &action.warnings {
                eprintln!("{warning}");
            }
        }
    }
    if mistakes == 0 {
        return Ok(());
    }
    let invalid = found.files.len();
    let mut report = String::new();
    for text in &found.rendered {
        report.push_str(text);
        report.push('\n');
    }
    report.push_str(&format!(
        "{mistakes} {} found in {invalid} {}",
        if mistakes == 1 { "mistake" } else { "mistakes" },
        if invalid == 1 { "file" } else { "files" }
    ));
    Err(Failure::Invalid(report))
}

/// Every mistake `kiln ci validate` found, rendered, each once: a workflow that others call
/// is loaded with each of its callers too, and its mistakes are the same mistakes.
struct Mistakes {
    rendered: Vec<String>,
    /// The files the mistakes are in.
    files: std::collections::BTreeSet<PathBuf>,
}

impl Mistakes {
    fn of(
        results: &[(
            String,
            Result<kiln_pipelines::WorkflowSet, Box<kiln_pipelines::LoadError>>,
        )],
        actions: &[(String, ActionLoad)],
    ) -> Mistakes {
        let mut found = Mistakes {
            rendered: Vec::new(),
            files: std::collections::BTreeSet::new(),
        };
        let mut seen = std::collections::HashSet::new();
        let loaded = results.iter().map(|(path, r)| match r {
            Ok(set) => (path, &set.sources, set.refused()),
            Err(e) => (path, &e.sources, e.diagnostics.iter().collect()),
        });
        let actions = actions.iter().filter_map(|(path, r)| {
            r.as_ref()
                .err()
                .map(|e| (path, &e.sources, e.diagnostics.iter().collect::<Vec<_>>()))
        });
        for (path, sources, diagnostics) in loaded.chain(actions) {
            for d in diagnostics {
                let text = render::diagnostic(sources, d);
                if seen.insert(text.clone()) {
                    found.rendered.push(text);
                    found.files.insert(d.span.map_or_else(
                        || PathBuf::from(path),
                        |span| sources.file(span.file).path.clone(),
                    ));
                }
            }
        }
        found
    }
}

/// What `kiln ci validate` reports of the jobs of `set` that kiln cannot run on the host
/// (`services`, a literal `container`, remote and `docker://` actions), as it renders them;
/// empty when every job can run. Delivery refuses a push with the same words.
pub(crate) fn refused_report(set: &kiln_pipelines::WorkflowSet) -> String {
    let mut report = String::new();
    for d in set.refused() {
        report.push_str(&render::diagnostic(&set.sources, d));
        report.push('\n');
    }
    report
}

type ActionLoad = Result<kiln_pipelines::workflow::CompositeAction, Box<kiln_pipelines::LoadError>>;

/// The local actions (`uses: ./path`) the loaded workflows' steps name, and the local actions
/// their composite steps name in turn, each loaded once from the working tree. GitHub reads
/// an action only when a step runs it; checking them with the workflows finds a mistake in an
/// `action.yml` before a run gets to it. One that is not in the working tree is left for the
/// run (a step may create it).
fn local_actions_of(
    dir: &Path,
    workflows: &[(
        String,
        Result<kiln_pipelines::WorkflowSet, Box<kiln_pipelines::LoadError>>,
    )],
) -> Vec<(String, ActionLoad)> {
    use kiln_pipelines::workflow::{ActionRef, JobBody, Step, StepAction, each_step};
    fn named(steps: &[Step], out: &mut Vec<String>) {
        for step in each_step(steps) {
            if let StepAction::Uses {
                action: ActionRef::Local(path),
                ..
            } = &step.action
            {
                let path = match path.trim_start_matches("./").trim_end_matches('/') {
                    // `uses: ./`: the action at the repository's root, named `.` in reports.
                    "" => ".".to_owned(),
                    path => path.to_owned(),
                };
                if !out.contains(&path) {
                    out.push(path);
                }
            }
        }
    }
    let mut pending = Vec::new();
    for (_, loaded) in workflows {
        let Ok(set) = loaded else { continue };
        for workflow in std::iter::once(&set.root).chain(set.called.values()) {
            for job in workflow.jobs.values() {
                if let JobBody::Steps(steps) = &job.body {
                    named(steps, &mut pending);
                }
            }
        }
    }
    let mut done: Vec<(String, ActionLoad)> = Vec::new();
    // Bounded: each path is loaded once, and there are finitely many directories.
    let mut next = 0;
    while next < pending.len() {
        let path = pending[next].clone();
        next += 1;
        let action_dir = dir.join(&path);
        if !["action.yml", "action.yaml"]
            .iter()
            .any(|f| action_dir.join(f).is_file())
        {
            continue;
        }
        let loaded = kiln_pipelines::load::load_action(&action_dir);
        if let Ok(action) = &loaded {
            named(&action.steps, &mut pending);
        }
        done.push((path, loaded));
    }
    done
}

/// `NAME=VALUE` pairs from the command line.
fn pairs(list: &[String], what: &str) -> Result<IndexMap<String, String>, Failure> {
    let mut out = IndexMap::new();
    for item in list {
        let Some((k, v)) = item.split_once('=') else {
            return Err(Failure::Refused(format!(
                "error: {what} `{}` is not NAME=VALUE",
                // Never echo what may be a secret's value.
                if what == "--secret" { "…" } else { item }
            )));
        };
        out.insert(k.trim().to_owned(), v.to_owned());
    }
    Ok(out)
}

/// Secrets from a `NAME=VALUE` file.
fn secret_file(path: &Path) -> Result<IndexMap<String, String>, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::State(format!("cannot read {}: {e}", path.display())))?;
    let mut out = IndexMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(Failure::Refused(format!(
                "error: {}:{}: not NAME=VALUE",
                path.display(),
                n + 1
            )));
        };
        let v = v.trim();
        // `KEY="value"` as dotenv files write it.
        let v = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .unwrap_or(v);
        out.insert(k.trim().to_owned(), v.to_owned());
    }
    Ok(out)
}

/// Keeps `job` and every job it needs, transitively.
/// Warns when the workflow does not trigger on `event` (GitHub would not run it; a local run
/// still may, to try it), and checks `--input`s against `on.<event>.inputs`: unknown names and
/// missing required inputs are refused, as GitHub refuses such a dispatch.
fn check_trigger(
    workflow: &Workflow,
    event: &str,
    inputs: &IndexMap<String, String>,
) -> Result<(), Failure> {
    let Some(trigger) = workflow.on.get(event) else {
        eprintln!(
            "warning: the workflow has no `on: {event}` trigger (it has: {}); running it anyway",
            workflow.on.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        return Ok(());
    };
    if inputs.is_empty() && trigger.inputs.is_empty() {
        return Ok(());
    }
    let declared = || {
        trigger
            .inputs
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(unknown) = inputs.keys().find(|k| !trigger.inputs.contains_key(*k)) {
        return Err(Failure::Refused(format!(
            "error: `on.{event}` declares no input `{unknown}`; its inputs are: {}",
            if trigger.inputs.is_empty() {
                "(none)".to_owned()
            } else {
                declared()
            }
        )));
    }
    if let Some((missing, _)) = trigger
        .inputs
        .iter()
        .find(|(k, i)| i.required && i.default.is_none() && !inputs.contains_key(*k))
    {
        return Err(Failure::Refused(format!(
            "error: input `{missing}` of `on.{event}` is required: pass --input {missing}=VALUE"
        )));
    }
    for (name, value) in inputs {
        if let Some(input) = trigger.inputs.get(name)
            && let Err(why) = typed_input_ok(&input.kind, value)
        {
            return Err(Failure::Refused(format!(
                "error: provided value '{value}' for input `{name}` of `on.{event}` {why}"
            )));
        }
    }
    Ok(())
}

/// Whether a dispatched value fits its input's type, as GitHub's dispatch form and API check
/// it before a run starts.
fn typed_input_ok(kind: &kiln_pipelines::workflow::InputType, value: &str) -> Result<(), String> {
    use kiln_pipelines::workflow::InputType;
    match kind {
        InputType::Choice(options) if !options.iter().any(|o| o == value) => Err(format!(
            "is not in the list of allowed values: {}",
            options.join(", ")
        )),
        InputType::Boolean if value != "true" && value != "false" => {
            Err("is not a boolean (true or false)".to_owned())
        }
        InputType::Number if value.trim().parse::<f64>().is_err() => {
            Err("is not a number".to_owned())
        }
        _ => Ok(()),
    }
}

/// `github.event.inputs` of a dispatch: every declared input as GitHub's form sends it, a
/// string each: the value given, else the default, else `false` for a boolean and `''`.
fn dispatched_inputs(
    workflow: &Workflow,
    event: &str,
    given: &IndexMap<String, String>,
) -> IndexMap<String, String> {
    let Some(trigger) = workflow.on.get(event) else {
        return given.clone();
    };
    trigger
        .inputs
        .iter()
        .map(|(name, input)| {
            let value =
                given
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| match (&input.default, &input.kind) {
                        (Some(default), _) => default.text.clone(),
                        (None, kiln_pipelines::workflow::InputType::Boolean) => "false".to_owned(),
                        (None, _) => String::new(),
                    });
            (name.clone(), value)
        })
        .collect()
}

/// Loads `rel` as committed at `sha`, as GitHub runs the workflow of the commit, not the one
/// being edited: the workflow and the reusable workflows it calls under `.github/workflows`
/// are read from the commit's objects by one `git cat-file`, with no checkout.
pub(crate) fn load_committed(
    dir: &Path,
    sha: &str,
    rel: &str,
) -> Result<kiln_pipelines::WorkflowSet, Failure> {
    let mut objects = open_objects(dir)?;
    load_from_objects(&mut objects, dir, sha, rel)
}

fn open_objects(dir: &Path) -> Result<git::Objects, Failure> {
    git::Objects::open(dir).map_err(|e| Failure::State(format!("cannot run git: {e}")))
}

/// [`load_committed`] with a `git cat-file` already running (the one that resolved `sha`).
fn load_from_objects(
    objects: &mut git::Objects,
    dir: &Path,
    sha: &str,
    rel: &str,
) -> Result<kiln_pipelines::WorkflowSet, Failure> {
    let short = sha.get(..12).unwrap_or(sha);
    let cannot = |e: std::io::Error| Failure::State(format!("cannot run git: {e}"));
    let Some(root) = objects.file(sha, rel).map_err(cannot)? else {
        return Err(Failure::Refused(format!(
            "error: {rel} is not in commit {short} (commit it first)"
        )));
    };
    let text = |data: Vec<u8>| {
        String::from_utf8(data).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "stream did not contain valid UTF-8",
            )
        })
    };
    let differs = std::fs::read(dir.join(rel)).ok().as_ref() != Some(&root);
    let mut root = Some(root);
    // Only the workflows directory (and the workflow itself, wherever it is) is read from the
    // commit, as before: reusable workflows live there.
    let in_workflows = |path: &str| {
        let path = path.strip_prefix("./").unwrap_or(path);
        path.starts_with(&format!("{WORKFLOWS_DIR}/")) && !path.split('/').any(|c| c == "..")
    };
    let mut read = |path: &str| -> std::io::Result<String> {
        if path == rel
            && let Some(data) = root.take()
        {
            return text(data);
        }
        let found = if path == rel || in_workflows(path) {
            objects.file(sha, path)?
        } else {
            None
        };
        match found {
            Some(data) => text(data),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("not in commit {short}"),
            )),
        }
    };
    let result = kiln_pipelines::load_with(&mut read, rel)
        .map_err(|e| Failure::Invalid(render::diagnostics(&e.sources, &e.diagnostics)));
    if result.is_ok() && differs {
        eprintln!("note: running {rel} as committed in {short}; the working tree's copy differs");
    }
    result
}

/// The commit a revision names, and its workflow as committed there.
struct Resolved {
    sha: String,
    /// The workflow, or why it could not be loaded (told once the sha is known good).
    loaded: Result<kiln_pipelines::WorkflowSet, Failure>,
}

/// The commit `rev` names and its workflow `rel` loaded from it, by one `git cat-file`; None
/// when `rev` names no commit.
fn resolve_and_load(dir: &Path, rev: &str, rel: &str) -> Result<Option<Resolved>, Failure> {
    let mut objects = open_objects(dir)?;
    let sha = objects
        .commit(rev)
        .map_err(|e| Failure::State(format!("cannot run git: {e}")))?;
    Ok(sha.map(|sha| {
        let loaded = load_from_objects(&mut objects, dir, &sha, rel);
        Resolved { sha, loaded }
    }))
}

/// `kiln ci run`.
async fn run(dir: &Path, args: &CiRunArgs) -> Result<(), Failure> {
    let rel = resolve_run_workflow(dir, args.workflow.as_deref(), &args.event)?;
    // Every question to git at once: the commit and its workflows (one `git cat-file`), the
    // ref, the working tree, the default branch, and the pushed commit's facts (by the
    // revision's name, checked against the sha after).
    let resolved = tokio::task::spawn_blocking({
        let (dir, rev, rel) = (dir.to_owned(), args.rev.clone(), rel.clone());
        move || resolve_and_load(&dir, &rev, &rel)
    });
    // The commit's facts fill every event's payload (a pull request's title, a release's
    // date); the tags at it a release's (and a tag push's, asked once the ref is known).
    let pointing = async {
        if args.event == "release" {
            Some(git::Pointing::read(dir, &args.rev).await)
        } else {
            None
        }
    };
    let (resolved, start, pushed, pointing) = tokio::join!(
        resolved,
        git::Start::read(dir, &args.rev),
        git::Pushed::read(dir, &args.rev),
        pointing
    );
    let resolved =
        resolved.map_err(|e| Failure::State(format!("loading the workflow stopped: {e}")))??;
    let Some(Resolved { sha, loaded }) = resolved else {
        return Err(Failure::Refused(format!(
            "error: `{}` is not a commit of a git repository at {} (kiln ci runs committed files: `git init` and commit first)",
            args.rev,
            dir.display()
        )));
    };
    if let Some(changed) = start.uncommitted.filter(|n| *n > 0) {
        note_uncommitted(changed, &sha);
    }
    let git_ref = start
        .git_ref
        .unwrap_or_else(|| "refs/heads/main".to_owned());
    let repository = start.repository;
    // The revision moved between the two questions: ask again by the sha.
    let pushed = if pushed.sha == sha {
        pushed
    } else {
        git::Pushed::read(dir, &sha).await
    };
    let push = PushFacts {
        head: pushed.commit,
        branches: start.branches,
        repository: repository.clone(),
    };
    let changed = pushed.changes;
    let pointing = match pointing {
        None if args.event == "push" && git_ref.starts_with("refs/tags/") => {
            Some(git::Pointing::read(dir, &sha).await)
        }
        pointing => pointing,
    };
    let mut set = loaded?;
    print_warnings(&set);
    if let Some(job) = &args.job {
        select_job(&mut set.root, job)?;
    }
    filter_matrix(&mut set.root, &pairs(&args.matrix, "--matrix")?)?;
    // `services`/`container` refuse the run only when a job of it (after `--job`) has them.
    if let Some(refusal) = set.refusal() {
        return Err(Failure::Refused(format!(
            "error: the run needs what kiln cannot run on the host, so nothing ran (`--job J` runs only J and the jobs it needs):\n{}",
            refusal.trim_end()
        )));
    }
    let inputs = pairs(&args.inputs, "--input")?;
    check_trigger(&set.root, &args.event, &inputs)?;
    // A push GitHub would not run the workflow for (its branch, tag or paths filters) still
    // runs here, as a trigger the workflow lacks does, but the user is told.
    if args.event == "push" {
        let paths = changed.paths();
        let git_push = kiln_pipelines::filter::Push {
            git_ref: &git_ref,
            changed: &paths,
        };
        match kiln_pipelines::filter::push_runs(&set.root.on, &git_push) {
            Ok(()) | Err(kiln_pipelines::filter::PushSkip::NoTrigger) => {}
            Err(skip) => eprintln!(
                "warning: GitHub would not run this workflow for this push ({skip}); running it anyway"
            ),
        }
    }
    // So does a push whose head commit asks GitHub to skip its workflows ("[skip ci]", ...).
    if args.event == "push"
        && set.root.on.contains_key("push")
        && let Some(marker) = kiln_pipelines::commit_skips_workflows(&push.head.message)
    {
        eprintln!(
            "warning: GitHub would not run this workflow for this push (the head commit's message has {marker}); running it anyway"
        );
    }
    let mut secrets = match &args.secret_file {
        Some(path) => secret_file(path)?,
        None => IndexMap::new(),
    };
    secrets.extend(pairs(&args.secrets, "--secret")?);
    let vars = pairs(&args.vars, "--var")?;
    let schedule = chosen_schedule(&set.root, &args.event, args.schedule.as_deref())?;
    let payload = match &args.event_file {
        Some(path) => read_event_file(path)?,
        None => {
            // A pull request (or merge group) starts where the run's commit and the default
            // branch meet; in a repository with no default branch git can tell, it is the
            // commit's own (its parent as the base).
            let base = push
                .branches
                .default_commit()
                .or(push.head.parent.as_deref());
            let pull = match base {
                Some(base)
                    if matches!(
                        args.event.as_str(),
                        "pull_request"
                            | "pull_request_target"
                            | "pull_request_review"
                            | "pull_request_review_comment"
                            | "merge_group"
                    ) =>
                {
                    Some(git::PullBase::read(dir, base, &sha).await)
                }
                _ => None,
            };
            let inputs = dispatched_inputs(&set.root, &args.event, &inputs);
            let local = event::Local {
                event: &args.event,
                git_ref: &git_ref,
                sha: &sha,
                facts: &push,
                changes: &changed,
                workflow: &rel,
                trigger: set.root.on.get(&args.event),
                inputs: &inputs,
                schedule: schedule.as_deref(),
                pointing: pointing.as_ref(),
                pull: pull.as_ref(),
            };
            let payload = event::payload(&local);
            if args.event == "release" && payload.get("release").is_none() {
                eprintln!(
                    "warning: no tag points at {}: `github.event.release` is absent (tag the commit, or give the release with --event-file)",
                    sha.get(..12).unwrap_or(&sha)
                );
            }
            payload
        }
    };
    let git_ref = run_ref(&args.event, &payload, git_ref);

    let request = RunRequest {
        rel,
        event: args.event.clone(),
        rev: args.rev.clone(),
        payload,
        repository,
        sha,
        git_ref,
        inputs,
        vars,
        secrets,
        runner_labels: args.runner_labels.clone(),
        keep_workspace: args.keep_workspace,
        echo: true,
    };
    execute(dir, set, request).await.map(|_| ())
}

/// One run to carry out, its workflow already loaded: from `kiln ci run` or from a push the
/// control plane follows (`delivery.rs`).
#[derive(Debug)]
pub(crate) struct RunRequest {
    /// The workflow file, relative to the repository.
    pub rel: String,
    /// `github.event_name`.
    pub event: String,
    /// What the user named (`HEAD`, a branch), recorded with the run.
    pub rev: String,
    /// The commit.
    pub sha: String,
    /// `github.ref`.
    pub git_ref: String,
    /// `github.event`.
    pub payload: serde_json::Value,
    /// `github.repository` (a payload's own `repository.full_name` wins).
    pub repository: git::Repository,
    pub inputs: IndexMap<String, String>,
    /// `vars` given for this run, over kiln.yaml's (and its environments').
    pub vars: IndexMap<String, String>,
    /// Secrets given for this run, over kiln.yaml's (and its environments').
    pub secrets: IndexMap<String, String>,
    pub runner_labels: Vec<String>,
    pub keep_workspace: bool,
    /// Print the run's lines (the CLI); the control plane only writes the log files. Only a
    /// printed run also stops on SIGINT/SIGTERM: the control plane has its own drain.
    pub echo: bool,
}

/// What a run reads from the stack beside its workflow: kiln.yaml's `vars:` and `secrets:`
/// stand for GitHub's repository variables and secrets, and each of its `environments:` for
/// the GitHub environment of that name (its `vars:` and `secrets:` overrides). What the run
/// was given by hand (`--var`, `--secret`) wins everywhere.
struct StackConfiguration {
    vars: IndexMap<String, String>,
    secrets: IndexMap<String, String>,
    environments: IndexMap<String, kiln_pipelines::EnvironmentScope>,
}

impl StackConfiguration {
    /// Without a kiln.yaml a run has only what it was given. A kiln.yaml that does not load
    /// stops the run: its jobs would read variables and secrets other than the declared ones.
    /// A declared secret whose source is unset reads as `''`, as an unset GitHub secret does
    /// (said on a printed run).
    fn read(
        dir: &Path,
        given_vars: &IndexMap<String, String>,
        given_secrets: &IndexMap<String, String>,
        echo: bool,
    ) -> Result<StackConfiguration, Failure> {
        let mut configured = StackConfiguration {
            vars: IndexMap::new(),
            secrets: IndexMap::new(),
            environments: IndexMap::new(),
        };
        if dir.join("kiln.yaml").is_file() {
            let stack = kiln_spec::load(&ConfigurationFs, &dir.join("kiln.yaml")).map_err(|f| {
                Failure::Invalid(crate::render::diagnostics(&f.sources, &f.diagnostics))
            })?;
            configured.vars = stack
                .vars
                .iter()
                .map(|(name, value)| (name.clone(), var_text(value)))
                .collect();
            for (key, source) in &stack.secrets {
                let value = match crate::ops::secret_value(dir, key, source) {
                    Ok(value) => value,
                    Err(why) => {
                        if echo {
                            eprintln!(
                                "note: {} (the run reads it as '')",
                                why.trim_start_matches("error: ")
                            );
                        }
                        continue;
                    }
                };
                match environment_secret(key) {
                    Some((environment, name)) => {
                        configured
                            .scope(environment)
                            .secrets
                            .insert(name.to_owned(), value);
                    }
                    None => {
                        configured.secrets.insert(key.clone(), value);
                    }
                }
            }
            for environment in &stack.environments {
                let overrides = stack.scopes.get(environment.scope).map(|s| &s.vars);
                let scope = configured.scope(&environment.name);
                for (name, value) in overrides.into_iter().flatten() {
                    scope.vars.insert(name.clone(), var_text(value));
                }
            }
        }
        configured.vars.extend(given_vars.clone());
        configured.secrets.extend(given_secrets.clone());
        for scope in configured.environments.values_mut() {
            scope.vars.retain(|name, _| !given_vars.contains_key(name));
            scope
                .secrets
                .retain(|name, _| !given_secrets.contains_key(name));
        }
        Ok(configured)
    }

    fn scope(&mut self, environment: &str) -> &mut kiln_pipelines::EnvironmentScope {
        self.environments.entry(environment.to_owned()).or_default()
    }
}

/// The stack's files as a run reads its configuration: releases are neither looked up nor
/// built (the run may be the one that makes the first), and trees are not digested.
struct ConfigurationFs;

impl kiln_spec::FileSystem for ConfigurationFs {
    fn read_to_string(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
}

/// `environments.NAME.secrets.SECRET` (how kiln-spec keeps an environment's source for a
/// declared secret) as `(NAME, SECRET)`.
fn environment_secret(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix("environments.")?.split_once(".secrets.")
}

/// A `vars:` value as GitHub's variables are: text (a string as it is, anything else as JSON).
fn var_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Records and runs a loaded workflow; `Ok(run id)` when it succeeded.
pub(crate) async fn execute(
    dir: &Path,
    set: kiln_pipelines::WorkflowSet,
    request: RunRequest,
) -> Result<u64, Failure> {
    let RunRequest {
        rel,
        event,
        rev,
        sha,
        git_ref,
        payload,
        repository,
        inputs,
        vars,
        secrets,
        runner_labels,
        keep_workspace,
        echo,
    } = request;
    let configured = StackConfiguration::read(dir, &vars, &secrets, echo)?;
    let mut store = open_store(dir)?;
    let workflow_name = set.root.name.clone().unwrap_or_else(|| rel.clone());
    let run_id = store.begin_pipeline_run(&NewPipelineRun {
        workflow: workflow_name.clone(),
        workflow_path: rel.clone(),
        event: event.clone(),
        rev: rev.clone(),
        commit: sha.clone(),
        pid: std::process::id(),
    })?;
    // Absolute paths: steps run with the workspace as their working directory, so a relative
    // `-C` (the default `.`) would point somewhere else inside them.
    let root = std::fs::canonicalize(dir)
        .map_err(|e| Failure::State(format!("cannot resolve {}: {e}", dir.display())))?;
    let state_dir = root.join(".kiln");
    let mut opts = RunOptions::new(&root, &sha, &state_dir);
    // `git cat-file` resolved it from `<rev>^{commit}` (`git::Objects::commit`).
    opts.revision_is_commit = true;
    opts.run_id = run_id;
    opts.run_number = store.pipeline_run_number(run_id)?;
    opts.event_name = event.clone();
    opts.git_ref = git_ref.clone();
    // A webhook payload (`--event-file`) names the repository it came from, as GitHub's do.
    opts.repository = payload
        .pointer("/repository/full_name")
        .and_then(serde_json::Value::as_str)
        .map_or_else(|| repository.full_name(), str::to_owned);
    opts.event = payload;
    opts.inputs = inputs
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    opts.vars = configured.vars;
    opts.secrets = configured.secrets;
    opts.environments = configured.environments;
    opts.runner_labels = runner_labels;
    opts.keep_workspace = keep_workspace;
    let mut masker = Masker::default();
    let environment_secrets = opts.environments.values().flat_map(|e| e.secrets.values());
    for secret in opts.secrets.values().chain(environment_secrets) {
        masker.add(secret);
    }
    let masker = Arc::new(masker);
    let log_dir = state_dir.join("ci").join(run_id.to_string());
    let recorder = Arc::new(StateRunStore {
        store: Mutex::new(store),
        masker: masker.clone(),
        errors: Mutex::new(Vec::new()),
    });
    let work_dir = opts.work_dir.join(format!("run-{run_id}"));

    if echo {
        println!(
            "Run {run_id}: {} on {event} at {rev} ({})",
            workflow_title(&workflow_name, &rel),
            sha.get(..12).unwrap_or(&sha)
        );
    }
    let started = Instant::now();
    let mut printer = RunPrinter::new(&log_dir, masker.clone(), echo);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let store_dyn: Arc<dyn RunStore> = recorder.clone();
    let mut running = Box::pin(kiln_pipelines::run(set, opts, tx, store_dyn));
    let signals =
        |kind| signal(kind).map_err(|e| Failure::State(format!("cannot handle signals: {e}")));
    let (mut interrupt, mut terminate) = if echo {
        (
            Some(signals(SignalKind::interrupt())?),
            Some(signals(SignalKind::terminate())?),
        )
    } else {
        (None, None)
    };
    let result = loop {
        tokio::select! {
            Some(event) = rx.recv() => {
                printer.event(&event);
                // What else is already there (a bounded batch: a step that floods its output
                // must not keep signals waiting nor its lines unshown), then one write to
                // stdout for all of it.
                for _ in 0..PRINT_BATCH {
                    let Ok(event) = rx.try_recv() else { break };
                    printer.event(&event);
                }
                printer.flush_output();
            }
            result = &mut running => {
                while let Ok(event) = rx.try_recv() {
                    printer.event(&event);
                }
                break Some(result);
            }
            Some(_) = recv_signal(&mut interrupt) => break None,
            Some(_) = recv_signal(&mut terminate) => break None,
        }
    };
    let Some(result) = result else {
        // Dropping the run aborts its tasks; each step's process group is killed as its task is
        // dropped (kiln-pipelines' group guard). Those drops happen on the runtime's workers, so
        // give them a moment before recording and exiting.
        drop(running);
        tokio::time::sleep(Duration::from_millis(300)).await;
        while let Ok(event) = rx.try_recv() {
            printer.event(&event);
        }
        printer.close();
        let _ = std::fs::remove_dir_all(&work_dir);
        let summary =
            serde_json::json!({ "error": "interrupted", "duration_ms": millis(started.elapsed()) });
        recorder.with_store("finishing the run", |s| {
            s.finish_pipeline_run(run_id, "cancelled", &summary)
        });
        return Err(Failure::Apply(format!(
            "error: run {run_id} interrupted: recorded as cancelled (see `kiln ci show {run_id}`)"
        )));
    };
    printer.close();
    // Workspaces are throwaway clones of the commit; artifacts and caches live elsewhere.
    let succeeded = matches!(
        &result,
        Ok(r) if matches!(r.status, Status::Success | Status::Skipped)
    );
    if keep_workspace && !succeeded {
        eprintln!(
            "note: kept the run's workspaces under {}",
            work_dir.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            let message = masker.mask(&e.to_string());
            recorder.finish_error(run_id, &message);
            return Err(Failure::State(format!("error: run {run_id}: {message}")));
        }
    };
    let errors = recorder
        .errors
        .lock()
        .map(|e| e.clone())
        .unwrap_or_default();
    if !errors.is_empty() {
        return Err(Failure::State(format!(
            "error: run {run_id} ran but could not be fully recorded:\n{}",
            errors.join("\n")
        )));
    }
    let failed: Vec<&str> = result
        .jobs
        .iter()
        .filter(|(_, s)| matches!(s, Status::Failure | Status::Cancelled))
        .map(|(id, _)| id.as_str())
        .collect();
    let summary = format!(
        "Run {run_id} {} in {} ({} job{}: {}).",
        result.status.as_str(),
        human(started.elapsed()),
        result.jobs.len(),
        if result.jobs.len() == 1 { "" } else { "s" },
        result
            .jobs
            .iter()
            .map(|(id, s)| format!("{id} {}", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if echo {
        println!("{summary}");
    }
    match result.status {
        Status::Success | Status::Skipped => Ok(run_id),
        Status::Failure | Status::Cancelled => Err(Failure::Apply(format!(
            "error: run {run_id} {}: {} (see `kiln ci show {run_id}` and `kiln ci logs {run_id}`)",
            result.status.as_str(),
            if failed.is_empty() {
                "no job succeeded".to_owned()
            } else {
                format!("job {} did not succeed", failed.join(", "))
            }
        ))),
    }
}

/// The next signal of an optional stream; never, without one.
async fn recv_signal(stream: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match stream {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// GitHub runs the pushed commit, never a working tree: so does `kiln ci run`. Say so when the
/// working tree holds changes the run will not see (kiln's own `.kiln/` aside).
fn note_uncommitted(changed: usize, sha: &str) {
    eprintln!(
        "note: {changed} uncommitted change{} in the working tree {} not part of the run: it runs commit {} as committed, as GitHub runs the pushed commit (commit to include them)",
        if changed == 1 { "" } else { "s" },
        if changed == 1 { "is" } else { "are" },
        sha.get(..12).unwrap_or(sha)
    );
}

/// `--event-file`: a webhook payload, which must be a JSON object as GitHub's are.
fn read_event_file(path: &Path) -> Result<serde_json::Value, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::Invalid(format!(
            "error: cannot read --event-file {}: {e}",
            path.display()
        ))
    })?;
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(Failure::Invalid(format!(
            "error: --event-file {}: a webhook payload is a JSON object",
            path.display()
        ))),
        Err(e) => Err(Failure::Invalid(format!(
            "error: --event-file {}: not JSON: {e}",
            path.display()
        ))),
    }
}

/// `github.ref` of a run with `payload`, as GitHub sets it for the event: a pull request's
/// run is at its merge ref (`refs/pull/<number>/merge`, so a step guarded by `github.ref ==
/// 'refs/heads/main'` does not run for one), a `pull_request_target` run at its base branch, a
/// release's at its tag, a merge group's on its queue branch; other events at the revision's.
fn run_ref(event: &str, payload: &serde_json::Value, git_ref: String) -> String {
    let text = |pointer: &str| {
        payload
            .pointer(pointer)
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
    };
    match event {
        "pull_request" | "pull_request_review" | "pull_request_review_comment" => {
            format!("refs/pull/{}/merge", pull_request_number(payload))
        }
        "pull_request_target" => {
            text("/pull_request/base/ref").map_or(git_ref, |base| format!("refs/heads/{base}"))
        }
        "release" => text("/release/tag_name").map_or(git_ref, |tag| format!("refs/tags/{tag}")),
        "merge_group" => text("/merge_group/head_ref").map_or(git_ref, str::to_owned),
        _ => git_ref,
    }
}

/// The `on.schedule` cron line a `schedule` run is for (`github.event.schedule`, which a
/// workflow with several crons reads to tell them apart): `--schedule` names one of them, else
/// the first, as written. None for other events and a workflow without crons.
fn chosen_schedule(
    workflow: &Workflow,
    event: &str,
    given: Option<&str>,
) -> Result<Option<String>, Failure> {
    let crons = workflow
        .on
        .get("schedule")
        .map(|t| t.cron.as_slice())
        .unwrap_or_default();
    let Some(given) = given else {
        return Ok((event == "schedule")
            .then(|| crons.first().cloned())
            .flatten());
    };
    if event != "schedule" {
        return Err(Failure::Refused(format!(
            "error: --schedule is for `--event schedule` runs, not `{event}`"
        )));
    }
    // Cron fields are separated by any run of blanks; GitHub sends the line as written.
    let words = |cron: &str| cron.split_whitespace().collect::<Vec<_>>().join(" ");
    match crons.iter().find(|c| words(c) == words(given)) {
        Some(cron) => Ok(Some(cron.clone())),
        None => Err(Failure::Refused(format!(
            "error: --schedule `{given}` is not one of the workflow's `on.schedule` crons: {}",
            if crons.is_empty() {
                "(none)".to_owned()
            } else {
                crons
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ))),
    }
}

/// The pull request's number in a payload (`number`, or `pull_request.number`); 1 without one.
fn pull_request_number(payload: &serde_json::Value) -> u64 {
    ["/number", "/pull_request/number"]
        .iter()
        .find_map(|p| payload.pointer(p).and_then(serde_json::Value::as_u64))
        .unwrap_or(1)
}

/// kiln-pipelines' [`RunStore`] over the state store: each finished job is one transaction.
/// A recording error cannot stop the run (the trait returns nothing), so errors are kept and
/// reported when the run ends.
struct StateRunStore {
    store: Mutex<Store>,
    masker: Arc<Masker>,
    errors: Mutex<Vec<String>>,
}

impl std::fmt::Debug for StateRunStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateRunStore")
    }
}

impl StateRunStore {
    fn with_store(
        &self,
        what: &str,
        f: impl FnOnce(&mut Store) -> Result<(), kiln_state::StateError>,
    ) {
        let result = match self.store.lock() {
            Ok(mut store) => f(&mut store).map_err(|e| e.to_string()),
            Err(_) => Err("the state store is unusable after a panic".to_owned()),
        };
        if let Err(e) = result
            && let Ok(mut errors) = self.errors.lock()
        {
            errors.push(format!("{what}: {e}"));
        }
    }

    fn finish_error(&self, run_id: u64, message: &str) {
        let summary = serde_json::json!({ "error": message });
        self.with_store("finishing the run", |s| {
            s.finish_pipeline_run(run_id, "error", &summary)
        });
    }
}

/// A timestamp as the state store writes them (RFC 3339, UTC, microseconds).
fn stamp(t: jiff::Timestamp) -> String {
    format!("{t:.6}")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `now - d`, saturating at `now` if `d` is absurd.
fn before(now: jiff::Timestamp, d: Duration) -> jiff::Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| now.checked_sub(d).ok())
        .unwrap_or(now)
}

fn after(t: jiff::Timestamp, d: Duration) -> jiff::Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(t)
}

impl RunStore for StateRunStore {
    fn job_finished(&self, run_id: u64, job: &JobRecord) {
        // The runner reports durations; the job ends now, and its steps ran back to back from
        // its start (setup between steps is small), which is how the times below are derived.
        let finished = jiff::Timestamp::now();
        let started = before(finished, job.duration);
        let mut cursor = started;
        let steps = job
            .steps
            .iter()
            .map(|s| {
                let begin = cursor;
                cursor = after(cursor, s.duration);
                PipelineStep {
                    name: self.masker.mask(&s.name),
                    step_id: s.id.clone(),
                    outcome: s.outcome.as_str().to_owned(),
                    conclusion: s.conclusion.as_str().to_owned(),
                    exit_code: s.exit_code,
                    started_at: stamp(begin),
                    finished_at: stamp(cursor),
                    duration_ms: millis(s.duration),
                }
            })
            .collect();
        let outputs: serde_json::Map<String, serde_json::Value> = job
            .outputs
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(self.masker.mask(v))))
            .collect();
        let record = PipelineJob {
            job_id: job.id.clone(),
            name: self.masker.mask(&job.name),
            status: job.status.as_str().to_owned(),
            started_at: stamp(started),
            finished_at: stamp(finished),
            duration_ms: millis(job.duration),
            outputs: serde_json::Value::Object(outputs),
            summary: job
                .summary
                .lines()
                .map(|l| self.masker.mask(l))
                .collect::<Vec<_>>()
                .join("\n"),
            annotations: serde_json::to_value(&job.annotations)
                .unwrap_or_else(|_| serde_json::json!([])),
            steps,
        };
        self.with_store("recording a job", |s| {
            s.record_pipeline_job(run_id, &record)
        });
    }

    fn run_finished(&self, run: &RunRecord) {
        let jobs: serde_json::Map<String, serde_json::Value> = run
            .jobs
            .iter()
            .map(|j| {
                (
                    self.masker.mask(&j.name),
                    serde_json::Value::String(j.status.as_str().to_owned()),
                )
            })
            .collect();
        let mut summary = serde_json::json!({ "duration_ms": millis(run.duration), "jobs": jobs });
        if let Some(title) = &run.title {
            summary["title"] = serde_json::Value::String(self.masker.mask(title));
        }
        self.with_store("finishing the run", |s| {
            s.finish_pipeline_run(run.run_id, run.status.as_str(), &summary)
        });
    }
}

/// Where a job's log of a run is kept.
pub(crate) fn log_path(dir: &Path, run: u64, job_name: &str) -> PathBuf {
    dir.join(".kiln/ci")
        .join(run.to_string())
        .join(format!("{}.log", slug(job_name)))
}

/// A job display name as a file name: `test (api)` → `test-api`.
fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches(['-', '.']).to_owned();
    if out.is_empty() {
        "job".to_owned()
    } else {
        out
    }
}

/// At most this many events are printed between two writes to stdout (and two looks at the
/// run's signals).
const PRINT_BATCH: usize = 256;

/// Prints run events as they come and writes each job's lines to its log file. On a terminal
/// lines get a padded, coloured `job │` prefix; without one (CI, pipes) a plain `[job]` prefix,
/// so parallel jobs stay tellable apart in a captured log.
struct RunPrinter {
    dir: PathBuf,
    masker: Arc<Masker>,
    /// Print lines as well as writing them to the log files.
    echo: bool,
    tty: bool,
    files: BTreeMap<String, std::io::BufWriter<std::fs::File>>,
    width: usize,
    warned: bool,
    folds: Folds,
    /// A `##[error]` (`warning`, `notice`) line stored but not shown yet: a workflow command
    /// logs that line and makes an annotation of the same message, and the terminal shows the
    /// pair once, in the annotation's words (which carry the file and line).
    held: Option<Held>,
    /// Stdout, written once per batch of events (see [`RunPrinter::flush_output`]), not once
    /// per line.
    out: std::io::BufWriter<std::io::Stdout>,
}

/// A marked line of a job waiting to be shown (see [`RunPrinter::held`]).
#[derive(Debug)]
struct Held {
    job: String,
    /// The line as stored, `##[error]message`.
    raw: String,
    /// What the terminal would show for it (folding applied).
    shown: String,
}

impl RunPrinter {
    fn new(dir: &Path, masker: Arc<Masker>, echo: bool) -> RunPrinter {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stdout())
            && std::env::var_os("CI").is_none()
            && std::env::var_os("NO_COLOR").is_none();
        RunPrinter {
            dir: dir.to_path_buf(),
            masker,
            echo,
            tty,
            files: BTreeMap::new(),
            width: 12,
            warned: false,
            folds: Folds::default(),
            held: None,
            out: std::io::BufWriter::new(std::io::stdout()),
        }
    }

    fn event(&mut self, event: &RunEvent) {
        if let Some(held) = self.held.take() {
            if let RunEvent::Annotation { job, annotation } = event
                && self.masker.mask(job) == held.job
                && held.raw
                    == format!(
                        "##[{}]{}",
                        level_name(annotation.level),
                        self.masker.mask(&annotation.message)
                    )
            {
                // The log file has the line as GitHub's log would; the record has the
                // annotation: only the terminal needs it, once.
                let line = self.masker.mask(&annotation_line(annotation));
                self.show(&held.job, &line, false);
                return;
            }
            self.show(&held.job, &held.shown, false);
        }
        match event {
            RunEvent::RunStarted {
                title: Some(title), ..
            } if self.echo => {
                let _ = writeln!(self.out, "run-name: {}", self.masker.mask(title));
            }
            RunEvent::RunStarted { .. } | RunEvent::RunFinished { .. } => {}
            RunEvent::JobStarted { job } => self.line(job, "job started", true),
            RunEvent::StepStarted { job, step } => self.line(job, &format!("▶ {step}"), true),
            RunEvent::Log { job, line } => self.log(job, line),
            RunEvent::Annotation { job, annotation } => {
                self.line(job, &annotation_line(annotation), true);
            }
            RunEvent::StepFinished {
                job,
                step,
                status,
                exit_code,
                duration,
            } => {
                let mark = if *status == Status::Success {
                    "✓"
                } else {
                    "✗"
                };
                let code = exit_code.map_or(String::new(), |c| format!(", exit {c}"));
                if self.tty {
                    let failed = *status != Status::Success && *status != Status::Skipped;
                    for line in self.folds.step_finished(&self.masker.mask(job), failed) {
                        self.show(job, &line, false);
                    }
                }
                self.line(
                    job,
                    &format!(
                        "{mark} {step}: {}{code} ({})",
                        status.as_str(),
                        human(*duration)
                    ),
                    true,
                );
            }
            RunEvent::JobFinished {
                job,
                status,
                duration,
            } => {
                self.line(
                    job,
                    &format!("job {} in {}", status.as_str(), human(*duration)),
                    true,
                );
                if let Some(mut f) = self.files.remove(&self.masker.mask(job)) {
                    let _ = f.flush();
                }
            }
        }
    }

    /// A line of a step's output: stored whole; on a terminal, `::group::`s fold. A marked
    /// line (`##[error]…`) is shown with the next event (see [`RunPrinter::held`]).
    fn log(&mut self, job: &str, text: &str) {
        let text = self.masker.mask(text);
        let job = self.masker.mask(job);
        self.write(&job, &text);
        let shown = if self.tty {
            self.folds.line(&job, &text)
        } else {
            Some(text.clone())
        };
        let Some(shown) = shown else { return };
        if ["##[error]", "##[warning]", "##[notice]"]
            .iter()
            .any(|mark| text.starts_with(mark))
        {
            self.held = Some(Held {
                job,
                raw: text,
                shown,
            });
        } else {
            self.show(&job, &shown, false);
        }
    }

    fn line(&mut self, job: &str, text: &str, marker: bool) {
        // The runner masked it already; masking again is cheap insurance for what is stored.
        let text = self.masker.mask(text);
        // The job's name names its log file: a secret in a matrix value must not reach it.
        let job = &self.masker.mask(job);
        let stored = if marker {
            format!("##[kiln] {text}")
        } else {
            text.clone()
        };
        self.write(job, &stored);
        self.show(job, &text, marker);
    }

    /// Prints one line of `job` (already masked).
    fn show(&mut self, job: &str, text: &str, marker: bool) {
        if !self.echo {
            return;
        }
        if self.tty {
            self.width = self.width.max(job.chars().count().min(32));
            let color = 31
                + (job
                    .bytes()
                    .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
                    % 6);
            let style = if marker { "\x1b[2m" } else { "" };
            let _ = writeln!(
                self.out,
                "\x1b[{color}m{job:<width$}\x1b[0m │ {style}{text}\x1b[0m",
                width = self.width
            );
        } else {
            let _ = writeln!(self.out, "[{job}] {text}");
        }
    }

    fn write(&mut self, job: &str, line: &str) {
        if !self.files.contains_key(job) {
            let path = self.dir.join(format!("{}.log", slug(job)));
            let opened = std::fs::create_dir_all(&self.dir).and_then(|()| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
            });
            match opened {
                Ok(f) => {
                    self.files
                        .insert(job.to_owned(), std::io::BufWriter::new(f));
                }
                Err(e) => {
                    if !self.warned {
                        eprintln!("warning: cannot write {}: {e}", path.display());
                        self.warned = true;
                    }
                    return;
                }
            }
        }
        if let Some(f) = self.files.get_mut(job) {
            let _ = writeln!(f, "{line}");
        }
    }

    /// Writes out what was printed since the last call (the events that were waiting).
    fn flush_output(&mut self) {
        let _ = self.out.flush();
    }

    fn close(&mut self) {
        if let Some(held) = self.held.take() {
            self.show(&held.job, &held.shown, false);
        }
        self.flush_output();
        for f in self.files.values_mut() {
            let _ = f.flush();
        }
        self.files.clear();
    }
}

/// On a terminal a `::group::` folds, as GitHub's log view does: its title shows, its lines
/// do not, unless its step fails (then they are printed after all). The log files keep every
/// line.
#[derive(Debug, Default)]
struct Folds {
    jobs: BTreeMap<String, JobFolds>,
}

/// The current step's groups of one job.
#[derive(Debug, Default)]
struct JobFolds {
    /// Title and hidden lines of each group of the step, the open one last.
    groups: Vec<(String, Vec<String>)>,
    open: bool,
    /// Lines not kept, beyond `FOLDED_LINES_KEPT`.
    dropped: usize,
}

/// How many folded lines of a step are kept for printing should it fail.
const FOLDED_LINES_KEPT: usize = 2000;

impl Folds {
    /// What to print for a line of `job`'s output, if anything.
    fn line(&mut self, job: &str, text: &str) -> Option<String> {
        let folds = self.jobs.entry(job.to_owned()).or_default();
        if let Some(title) = text.strip_prefix("##[group]") {
            folds.groups.push((title.to_owned(), Vec::new()));
            folds.open = true;
            return Some(format!("▸ {title}"));
        }
        if text.starts_with("##[endgroup]") {
            folds.open = false;
            return None;
        }
        // Errors and warnings never hide in a fold.
        if !folds.open || text.starts_with("##[error]") || text.starts_with("##[warning]") {
            return Some(text.to_owned());
        }
        let kept: usize = folds.groups.iter().map(|(_, lines)| lines.len()).sum();
        match folds.groups.last_mut() {
            Some((_, lines)) if kept < FOLDED_LINES_KEPT => lines.push(text.to_owned()),
            _ => folds.dropped += 1,
        }
        None
    }

    /// The step of `job` ended: the lines to print now (its groups unfolded if it failed).
    fn step_finished(&mut self, job: &str, failed: bool) -> Vec<String> {
        let Some(folds) = self.jobs.remove(job) else {
            return Vec::new();
        };
        if !failed {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (title, lines) in folds.groups {
            out.push(format!("▾ {title}"));
            out.extend(lines);
        }
        if folds.dropped > 0 {
            out.push(format!(
                "({} more folded line(s) are in the job's log: `kiln ci logs`)",
                folds.dropped
            ));
        }
        out
    }
}

/// `1.23s`, `2m03s`.
fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.2}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// The state store, with runs whose process died (SIGKILL, a crash) marked `interrupted` first.
fn open_store(dir: &Path) -> Result<Store, Failure> {
    let mut store = ops::open_store(dir)?;
    store.mark_interrupted_pipeline_runs(ops::process_alive)?;
    Ok(store)
}

/// Wall time between two stored timestamps.
fn span(started: &str, finished: Option<&str>) -> Option<Duration> {
    let a: jiff::Timestamp = started.parse().ok()?;
    let b: jiff::Timestamp = finished?.parse().ok()?;
    Duration::try_from(b.duration_since(a)).ok()
}

/// `kiln ci list`.
fn list(dir: &Path, output: &Output) -> Result<(), Failure> {
    let store = open_store(dir)?;
    let runs = store.pipeline_runs(usize::MAX)?;
    if output.json {
        let list: Vec<serde_json::Value> = runs
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["duration_ms"] = span(&r.started_at, r.finished_at.as_deref())
                    .map_or(serde_json::Value::Null, |d| millis(d).into());
                v
            })
            .collect();
        println!("{:#}", serde_json::Value::Array(list));
        return Ok(());
    }
    if runs.is_empty() {
        println!("no CI runs yet: `kiln ci run` records the first one");
        return Ok(());
    }
    // `rev` says what started a run: what `kiln ci run` was given, or `<source>:<branch>` for
    // a push the control plane followed (`poll:main`, `hook:main`, `webhook:main`).
    // The run-name, when the workflow has one, ends the line: GitHub lists runs by it.
    println!(
        "{:>5}  {:<20} {:<18} {:<14} {:<12} {:<9} {:>8}  {:<19}  run-name",
        "run", "workflow", "event", "rev", "commit", "status", "duration", "started"
    );
    for r in &runs {
        let title = r
            .summary
            .get("title")
            .and_then(|t| t.as_str())
            .unwrap_or("");
        let line = format!(
            "{:>5}  {:<20} {:<18} {:<14} {:<12} {:<9} {:>8}  {:<19}  {}",
            r.id,
            r.workflow,
            r.event,
            r.rev,
            r.commit.get(..12).unwrap_or(&r.commit),
            r.status,
            span(&r.started_at, r.finished_at.as_deref()).map_or("-".to_owned(), human),
            r.started_at.get(..19).unwrap_or(&r.started_at),
            title
        );
        println!("{}", line.trim_end());
    }
    Ok(())
}

fn find_run(store: &Store, run: u64) -> Result<kiln_state::PipelineRun, Failure> {
    store
        .pipeline_run(run)?
        .ok_or_else(|| Failure::Refused(format!("error: no CI run {run} (see `kiln ci list`)")))
}

/// `kiln ci show`.
fn show(dir: &Path, run: u64, output: &Output) -> Result<(), Failure> {
    let store = open_store(dir)?;
    let record = find_run(&store, run)?;
    let jobs = store.pipeline_jobs(run)?;
    if output.json {
        let mut v = serde_json::to_value(&record).map_err(|e| Failure::State(e.to_string()))?;
        v["jobs"] = serde_json::to_value(&jobs).map_err(|e| Failure::State(e.to_string()))?;
        println!("{v:#}");
        return Ok(());
    }
    println!(
        "run {}: {} on {} at {} ({})",
        record.id,
        workflow_title(&record.workflow, &record.workflow_path),
        record.event,
        record.rev,
        record.commit
    );
    println!(
        "status {}, started {}, {}",
        record.status,
        record.started_at,
        span(&record.started_at, record.finished_at.as_deref()).map_or(
            "still running or interrupted".to_owned(),
            |d| format!("took {}", human(d))
        )
    );
    if let Some(title) = record.summary.get("title").and_then(|t| t.as_str()) {
        println!("run-name: {title}");
    }
    if let Some(error) = record.summary.get("error").and_then(|e| e.as_str()) {
        println!("error: {error}");
    }
    for job in &jobs {
        println!(
            "\njob {} ({}): {}  {} → {}  {}",
            job.name,
            job.job_id,
            job.status,
            job.started_at.get(11..19).unwrap_or(&job.started_at),
            job.finished_at.get(11..19).unwrap_or(&job.finished_at),
            human(Duration::from_millis(job.duration_ms))
        );
        for step in &job.steps {
            println!(
                "  {:<9} {:<40} {:>8}  {}",
                step.conclusion,
                step.name,
                human(Duration::from_millis(step.duration_ms)),
                step.exit_code
                    .map_or(String::new(), |c| format!("exit {c}"))
            );
        }
        for annotation in &stored_annotations(&job.annotations) {
            println!("  {}", annotation_line(annotation));
        }
        if !job.summary.trim().is_empty() {
            println!("  summary:");
            for line in job.summary.lines() {
                println!("    {line}");
            }
        }
    }
    Ok(())
}

/// `kiln ci logs`.
fn logs(dir: &Path, run: u64, job: Option<&str>) -> Result<(), Failure> {
    let store = open_store(dir)?;
    find_run(&store, run)?;
    let jobs = store.pipeline_jobs(run)?;
    let log_dir = dir.join(".kiln/ci").join(run.to_string());
    // Recorded jobs first, in finishing order, then logs of jobs that never produced a record
    // (an `if` that could not be evaluated fails the job before it starts).
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for j in &jobs {
        if job.is_none_or(|want| {
            j.job_id == want || j.name == want || j.name.starts_with(&format!("{want} ("))
        }) {
            files.push((j.name.clone(), log_path(dir, run, &j.name)));
        }
    }
    if job.is_none()
        && let Ok(entries) = std::fs::read_dir(&log_dir)
    {
        let mut extra: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| !files.iter().any(|(_, f)| f == p))
            .collect();
        extra.sort();
        for p in extra {
            let name = p
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
            files.push((name, p));
        }
    }
    if files.is_empty() {
        return Err(Failure::Refused(match job {
            Some(want) => format!(
                "error: run {run} has no job `{want}`; its jobs are: {}",
                jobs.iter()
                    .map(|j| j.name.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => format!("error: run {run} left no logs"),
        }));
    }
    let prefix = files.len() > 1;
    let mut out = std::io::stdout().lock();
    for (name, path) in files {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines() {
            let written = if prefix {
                writeln!(out, "[{name}] {line}")
            } else {
                writeln!(out, "{line}")
            };
            // A closed pipe (`| head`) ends the listing quietly.
            if written.is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// `CI (.github/workflows/ci.yml)`; the path alone for a workflow without a `name:`, which
/// GitHub names by its path.
fn workflow_title(name: &str, path: &str) -> String {
    if name == path {
        path.to_owned()
    } else {
        format!("{name} ({path})")
    }
}

/// `error: src/app.js:3:7: Lint: message`, as a compiler would print it.
fn annotation_line(annotation: &kiln_pipelines::Annotation) -> String {
    format!(
        "{}: {}",
        level_name(annotation.level),
        annotation_text(annotation)
    )
}

/// `error`, `warning` or `notice`.
pub(crate) fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warning => "warning",
        Level::Notice => "notice",
    }
}

/// `src/app.js:3:7: Lint: message`: an annotation without its level.
pub(crate) fn annotation_text(annotation: &kiln_pipelines::Annotation) -> String {
    let mut text = String::new();
    if let Some(location) = &annotation.location {
        text.push_str(&format!("{location}: "));
    }
    if let Some(title) = &annotation.title {
        text.push_str(&format!("{title}: "));
    }
    text.push_str(&annotation.message);
    text
}

/// The annotations a job's record keeps (none when the record predates them or is unreadable).
pub(crate) fn stored_annotations(value: &serde_json::Value) -> Vec<kiln_pipelines::Annotation> {
    serde_json::from_value(value.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `git init`, everything in `dir` committed; the commit's sha.
    fn commit_all(dir: &Path) -> String {
        let git = |args: &[&str]| {
            let ok = std::process::Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(["-c", "user.email=k@k", "-c", "user.name=k"])
                .args(args)
                .status()
                .unwrap()
                .success();
            assert!(ok, "git {args:?}");
        };
        git(&["init", "-q"]);
        git(&["add", "-A"]);
        git(&["commit", "-qm", "workflows"]);
        super::git(dir, &["rev-parse", "HEAD"]).unwrap()
    }

    /// The control plane loads the workflows of several pushes at once: each load extracts the
    /// commit's `.github` into a scratch directory of its own, so none empties another's.
    #[test]
    fn concurrent_loads_of_committed_workflows_all_succeed() {
        let repo = tempfile::tempdir().unwrap();
        let workflows = repo.path().join(WORKFLOWS_DIR);
        std::fs::create_dir_all(&workflows).unwrap();
        for n in 0..20 {
            std::fs::write(
                workflows.join(format!("w{n}.yml")),
                format!("on: push\njobs:\n  j{n}:\n    runs-on: ubuntu-latest\n    steps: [ {{ run: echo {n} }} ]\n"),
            )
            .unwrap();
        }
        let sha = commit_all(repo.path());
        let loads: Vec<_> = (0..6)
            .map(|n| {
                let (dir, sha) = (repo.path().to_path_buf(), sha.clone());
                std::thread::spawn(move || {
                    load_committed(&dir, &sha, &format!("{WORKFLOWS_DIR}/w{n}.yml"))
                        .map(|set| set.root.jobs.len())
                        .map_err(|f| f.message().to_owned())
                })
            })
            .collect();
        for load in loads {
            assert_eq!(load.join().unwrap(), Ok(1));
        }
    }

    /// A workflow is loaded from the commit's objects: the reusable workflows it calls from
    /// `.github/workflows` (as committed, through a link inside the tree too), not one
    /// elsewhere, as when only `.github/workflows` was extracted; a workflow the commit lacks
    /// is refused, and one that is not UTF-8 is reported, not a panic.
    #[test]
    fn committed_workflows_are_read_from_the_commit() {
        let repo = tempfile::tempdir().unwrap();
        let dir = repo.path();
        std::fs::create_dir_all(dir.join(WORKFLOWS_DIR)).unwrap();
        let caller = |called: &str| format!("on: push\njobs:\n  c:\n    uses: ./{called}\n");
        let called = "on: workflow_call\njobs:\n  b:\n    runs-on: ubuntu-latest\n    steps: [ { run: echo b } ]\n";
        let w = |name: &str| dir.join(WORKFLOWS_DIR).join(name);
        std::fs::write(w("a.yml"), caller(".github/workflows/called.yml")).unwrap();
        std::fs::write(w("called.yml"), called).unwrap();
        std::os::unix::fs::symlink("called.yml", w("link.yml")).unwrap();
        std::fs::write(w("via-link.yml"), caller(".github/workflows/link.yml")).unwrap();
        std::fs::write(dir.join("elsewhere.yml"), called).unwrap();
        std::fs::write(w("outside.yml"), caller("elsewhere.yml")).unwrap();
        std::fs::write(w("latin1.yml"), b"on: push # caf\xe9\n").unwrap();
        let sha = commit_all(dir);
        // The working tree's copy of the called workflow is not the one loaded.
        std::fs::write(w("called.yml"), "not: [yaml").unwrap();
        let load = |rel: &str| load_committed(dir, &sha, &format!("{WORKFLOWS_DIR}/{rel}"));
        let set = load("a.yml").map_err(|f| f.message().to_owned()).unwrap();
        assert_eq!(set.called.len(), 1);
        assert!(set.called[".github/workflows/called.yml"].jobs.len() == 1);
        let set = load("via-link.yml")
            .map_err(|f| f.message().to_owned())
            .unwrap();
        assert_eq!(set.called.len(), 1);
        let outside = load("outside.yml").map(|_| ()).unwrap_err();
        assert!(
            outside
                .message()
                .contains("cannot read workflow `elsewhere.yml`"),
            "{}",
            outside.message()
        );
        let missing = load("none.yml").map(|_| ()).unwrap_err();
        assert!(
            missing.message().contains("is not in commit"),
            "{}",
            missing.message()
        );
        let latin1 = load("latin1.yml").map(|_| ()).unwrap_err();
        assert!(
            latin1.message().contains("did not contain valid UTF-8"),
            "{}",
            latin1.message()
        );
    }

    #[test]
    fn groups_fold_unless_their_step_fails() {
        let mut folds = Folds::default();
        let shown: Vec<Option<String>> = [
            "before",
            "##[group]npm ci",
            "added 120 packages",
            "##[endgroup]",
            "after",
        ]
        .iter()
        .map(|l| folds.line("build", l))
        .collect();
        assert_eq!(
            shown,
            [
                Some("before".to_owned()),
                Some("▸ npm ci".to_owned()),
                None,
                None,
                Some("after".to_owned())
            ]
        );
        assert!(folds.step_finished("build", false).is_empty());
        // A failing step prints its folded lines after all, the open group's too.
        folds.line("build", "##[group]test");
        for i in 0..FOLDED_LINES_KEPT + 3 {
            folds.line("build", &format!("line {i}"));
        }
        assert_eq!(
            folds.line("other", "other job"),
            Some("other job".to_owned())
        );
        let unfolded = folds.step_finished("build", true);
        assert_eq!(unfolded[0], "▾ test");
        assert_eq!(unfolded.len(), FOLDED_LINES_KEPT + 2);
        assert!(unfolded[FOLDED_LINES_KEPT + 1].starts_with("(3 more folded line(s)"));
        assert!(
            folds.step_finished("build", true).is_empty(),
            "once per step"
        );
    }

    #[test]
    fn slugs_are_file_names() {
        assert_eq!(slug("test (api)"), "test-api");
        assert_eq!(slug("build / deploy (a, 1)"), "build-deploy-a-1");
        assert_eq!(slug("../x"), "x");
        assert_eq!(slug("()"), "job");
    }

    #[test]
    fn secret_files_skip_comments_and_strip_quotes() -> Result<(), Failure> {
        let dir = tempfile::tempdir().map_err(|e| Failure::State(e.to_string()))?;
        let path = dir.path().join("s");
        std::fs::write(&path, "# c\n\nA=1\nB=\"two words\"\nC=x=y\n")
            .map_err(|e| Failure::State(e.to_string()))?;
        let s = secret_file(&path)?;
        assert_eq!(s.get("A").map(String::as_str), Some("1"));
        assert_eq!(s.get("B").map(String::as_str), Some("two words"));
        assert_eq!(s.get("C").map(String::as_str), Some("x=y"));
        Ok(())
    }

    #[test]
    fn dispatch_inputs_are_checked_against_the_trigger() -> Result<(), Failure> {
        let text = "on:\n  workflow_dispatch:\n    inputs:\n      env: { required: true }\n      level: { default: '1' }\njobs:\n  a: { runs-on: x, steps: [ { run: 'true' } ] }\n";
        let (w, _) = kiln_pipelines::parse_workflow(Path::new("w.yml"), text)
            .map_err(|e| Failure::Invalid(e.to_string()))?;
        let given = |list: &[(&str, &str)]| -> IndexMap<String, String> {
            list.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        check_trigger(&w, "workflow_dispatch", &given(&[("env", "prod")]))?;
        assert!(check_trigger(&w, "workflow_dispatch", &given(&[])).is_err());
        assert!(
            check_trigger(
                &w,
                "workflow_dispatch",
                &given(&[("env", "x"), ("nope", "1")])
            )
            .is_err()
        );
        // Another event only warns.
        check_trigger(&w, "push", &given(&[]))?;
        Ok(())
    }
}
