//! The commands: each loads what it needs, calls the libraries, and prints.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_engine::Providers;
use kiln_engine::apply::{Apply, Progress, Report};
use kiln_engine::desired::{self, Inputs};
use kiln_engine::provider::ProviderContext;
use kiln_plan::{Action, Plan};
use kiln_spec::{FileSystem, Stack};
use kiln_state::{
    LockHolder, NewEvent, NewRevision, RevisionStatus, StateError, StateHandle, Store,
};

use crate::cli::{ApplyArgs, HistoryArgs, Output, PlanArgs, Selection, StateCommand, UpArgs};
use crate::render;

/// How a command failed; each kind has its own exit code (see README.md).
#[derive(Debug)]
pub enum Failure {
    /// The stack files are invalid (exit 1). The text is the rendered diagnostics.
    Invalid(String),
    /// An apply or destroy ran and some changes failed (exit 3).
    Apply(String),
    /// The state is locked by another process (exit 4).
    Locked(String),
    /// The state store or the file system failed (exit 5).
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
}

/// Loads and validates the stack in `dir`, rendering every mistake on failure.
pub fn load_stack(dir: &Path) -> Result<Stack, Failure> {
    kiln_spec::load(&DiskFs, &dir.join("kiln.yaml"))
        .map_err(|f| Failure::Invalid(render::diagnostics(&f.sources, &f.diagnostics)))
}

/// `kiln validate`.
pub fn validate(dir: &Path, output: &Output) -> Result<(), Failure> {
    let result = kiln_spec::load(&DiskFs, &dir.join("kiln.yaml"));
    if output.json {
        let json = match &result {
            Ok(stack) => {
                serde_json::json!({ "valid": true, "stack": stack.name, "resources": stack.resources.len(), "diagnostics": [] })
            }
            Err(f) => {
                serde_json::json!({ "valid": false, "diagnostics": f.diagnostics.iter().map(|d| diagnostic_json(&f.sources, d)).collect::<Vec<_>>() })
            }
        };
        println!("{json:#}");
        return match result {
            Ok(_) => Ok(()),
            Err(_) => Err(Failure::Invalid(String::new())),
        };
    }
    let stack =
        result.map_err(|f| Failure::Invalid(render::diagnostics(&f.sources, &f.diagnostics)))?;
    println!(
        "{}: valid ({} resources, {} files)",
        stack.name,
        stack.resources.len(),
        stack.sources.files().count()
    );
    Ok(())
}

fn diagnostic_json(
    sources: &kiln_spec::source::SourceMap,
    d: &kiln_spec::Diagnostic,
) -> serde_json::Value {
    let place = |span: kiln_spec::source::Span| {
        let file = sources.file(span.file);
        let (line, column) = file.line_col(span.start);
        serde_json::json!({ "file": file.path, "line": line, "column": column })
    };
    serde_json::json!({
        "code": d.code,
        "message": d.message,
        "location": d.span.map(place),
        "key_path": d.key_path,
        "label": d.label,
        "help": d.help,
        "related": d.related.iter().map(|r| serde_json::json!({ "message": r.message, "location": place(r.span) })).collect::<Vec<_>>(),
    })
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
            problems.push(format!("--var {item}: expected NAME=VALUE"));
            continue;
        };
        if !stack.vars.contains_key(name) {
            problems.push(format!(
                "--var {name}: the stack declares no var `{name}` (declared: {})",
                stack.vars.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
            continue;
        }
        let parsed = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
        vars.insert(name.to_owned(), parsed);
    }
    let mut secrets = BTreeMap::new();
    for (name, source) in &stack.secrets {
        let value = match source {
            kiln_spec::model::SecretSource::Env(var) => std::env::var(var)
                .map_err(|_| format!("secret `{name}`: environment variable {var} is not set")),
            kiln_spec::model::SecretSource::File(path) => std::fs::read_to_string(dir.join(path))
                .map(|s| s.trim_end_matches('\n').to_owned())
                .map_err(|e| format!("secret `{name}`: cannot read {path}: {e}")),
        };
        match value {
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
    })
}

fn providers(dir: &Path, stack: &Stack) -> Providers {
    Providers::new(
        kiln_providers::builtin_providers(),
        ProviderContext {
            root: dir.to_path_buf(),
            stack: stack.name.clone(),
        },
    )
}

fn open_store(dir: &Path) -> Result<Store, Failure> {
    Store::open_in_stack(dir).map_err(Failure::from)
}

/// A stack loaded with everything needed to plan it.
struct Loaded {
    stack: Arc<Stack>,
    inputs: Arc<Inputs>,
    providers: Providers,
}

fn load_all(dir: &Path, select: &Selection) -> Result<Loaded, Failure> {
    let stack = load_stack(dir)?;
    let inputs = inputs(&stack, dir, &select.vars)?;
    let providers = providers(dir, &stack);
    Ok(Loaded {
        stack: Arc::new(stack),
        inputs: Arc::new(inputs),
        providers,
    })
}

async fn make_plan(
    loaded: &Loaded,
    store: &Store,
    select: &Selection,
    destroy: bool,
    parallelism: usize,
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
            eprintln!("warning: cannot observe {address}: {message}");
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

/// Prints a plan as `terraform plan` does, with counts at the end.
pub fn print_plan(plan: &Plan) {
    for change in plan.changes.iter().filter(|c| c.action != Action::NoOp) {
        let verb = match change.action {
            Action::Create => "will be created",
            Action::Update => "will be updated in place",
            Action::Replace => "will be replaced",
            Action::Delete => "will be destroyed",
            Action::NoOp => "",
        };
        println!(
            "{} {} ({}) {verb}",
            change.action.symbol(),
            change.address,
            change.kind
        );
        for reason in &change.reasons {
            println!("    # {reason}");
        }
        for attr in &change.attrs {
            let forces = if attr.forces_replacement {
                "  # forces replacement"
            } else {
                ""
            };
            match (&attr.before, &attr.after) {
                (None, Some(after)) => println!("    + {} = {after}{forces}", attr.name),
                (Some(before), None) => println!("    - {} = {before}{forces}", attr.name),
                (Some(before), Some(after)) => {
                    println!("    ~ {} = {before} -> {after}{forces}", attr.name)
                }
                (None, None) => {}
            }
        }
    }
    let c = plan.counts();
    if plan.is_empty() {
        println!(
            "No changes: the infrastructure matches the stack files ({} resources).",
            c.no_op
        );
    } else {
        println!(
            "Plan: {} to create, {} to update, {} to replace, {} to destroy, {} unchanged.",
            c.create, c.update, c.replace, c.delete, c.no_op
        );
    }
}

/// The saved form of a plan (`kiln plan --out`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SavedPlan {
    format: u32,
    lineage: String,
    serial: u64,
    files_digest: String,
    destroy: bool,
    vars: Vec<String>,
    plan: Plan,
}

/// `kiln plan`.
pub async fn plan(dir: &Path, args: &PlanArgs) -> Result<(), Failure> {
    let loaded = load_all(dir, &args.select)?;
    let store = open_store(dir)?;
    let plan = make_plan(&loaded, &store, &args.select, args.destroy, 10).await?;
    if let Some(out) = &args.out {
        let saved = SavedPlan {
            format: 1,
            lineage: store.lineage()?,
            serial: store.serial()?,
            files_digest: loaded.stack.digest.clone(),
            destroy: args.destroy,
            vars: args.select.vars.clone(),
            plan: plan.clone(),
        };
        let text =
            serde_json::to_string_pretty(&saved).map_err(|e| Failure::State(e.to_string()))?;
        std::fs::write(out, text)
            .map_err(|e| Failure::State(format!("cannot write {}: {e}", out.display())))?;
    }
    if args.output.json {
        println!(
            "{:#}",
            serde_json::json!({ "changes": plan.changes.iter().filter(|c| c.action != Action::NoOp).collect::<Vec<_>>(), "counts": plan.counts() })
        );
    } else {
        print_plan(&plan);
        if let Some(out) = &args.out {
            println!(
                "Saved the plan to {}; apply it with `kiln apply {}`.",
                out.display(),
                out.display()
            );
        }
    }
    Ok(())
}

fn who() -> String {
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
fn lock(store: &mut Store, operation: &str) -> Result<String, Failure> {
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
            store.append_event(&NewEvent {
                kind: "lock.stale_released".into(),
                address: None,
                serial: None,
                message: format!(
                    "released the lock of {} (pid {}, {}) whose process is gone",
                    current.who, current.pid, current.operation
                ),
                data: serde_json::Value::Null,
            })?;
            eprintln!(
                "note: released a stale lock held by pid {} ({}), which is no longer running",
                current.pid, current.operation
            );
            Ok(store.acquire_lock(&holder)?.id)
        }
        Err(e) => Err(e.into()),
    }
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// `kiln apply` and `kiln destroy`.
pub async fn apply(dir: &Path, args: &ApplyArgs, destroy: bool) -> Result<(), Failure> {
    let mut select = args.select.clone();
    let saved = match &args.plan_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::State(format!("cannot read {}: {e}", path.display())))?;
            let saved: SavedPlan = serde_json::from_str(&text).map_err(|e| {
                Failure::StalePlan(format!("{} is not a kiln plan: {e}", path.display()))
            })?;
            select.vars = saved.vars.clone();
            Some(saved)
        }
        None => None,
    };
    let loaded = load_all(dir, &select)?;
    let mut store = open_store(dir)?;
    let lock_id = lock(&mut store, if destroy { "destroy" } else { "apply" })?;
    apply_locked(
        &loaded,
        store,
        &select,
        saved,
        destroy,
        args.parallelism,
        &lock_id,
        args.output.json,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn apply_locked(
    loaded: &Loaded,
    mut store: Store,
    select: &Selection,
    saved: Option<SavedPlan>,
    destroy: bool,
    parallelism: usize,
    lock_id: &str,
    json: bool,
) -> Result<(), Failure> {
    let recovered = store.recover_pending()?;
    store.mark_interrupted_revisions()?;
    for op in &recovered {
        eprintln!(
            "note: {} was being changed when kiln stopped; it is marked tainted and will be replaced",
            op.address
        );
    }
    let plan = match saved {
        Some(saved) => {
            if saved.lineage != store.lineage()? || saved.serial != store.serial()? {
                store.release_lock(lock_id)?;
                return Err(Failure::StalePlan("the saved plan is stale: the state changed since it was made; run `kiln plan --out FILE` again".into()));
            }
            if saved.files_digest != loaded.stack.digest {
                store.release_lock(lock_id)?;
                return Err(Failure::StalePlan("the saved plan is stale: the stack files changed since it was made; run `kiln plan --out FILE` again".into()));
            }
            saved.plan
        }
        None => match make_plan(loaded, &store, select, destroy, parallelism).await {
            Ok(plan) => plan,
            Err(e) => {
                store.release_lock(lock_id)?;
                return Err(e);
            }
        },
    };
    if plan.is_empty() {
        store.release_lock(lock_id)?;
        if json {
            println!(
                "{:#}",
                serde_json::json!({ "changes": 0, "counts": plan.counts() })
            );
        } else {
            print_plan(&plan);
        }
        return Ok(());
    }
    if !json {
        print_plan(&plan);
    }
    let plan_json = serde_json::to_value(&plan).map_err(|e| Failure::State(e.to_string()))?;
    let revision = store.begin_revision(&NewRevision {
        user: who(),
        command: if destroy {
            "destroy".into()
        } else {
            "apply".into()
        },
        files_digest: loaded.stack.digest.clone(),
        plan: plan_json,
    })?;
    let state = StateHandle::spawn(store);
    let run = Apply {
        stack: loaded.stack.clone(),
        inputs: loaded.inputs.clone(),
        providers: loaded.providers.clone(),
        state: state.clone(),
        serial: revision.serial,
        parallelism,
    };
    let started = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let printer = tokio::spawn(print_progress(rx, json));
    let outcome = kiln_engine::apply::apply(&run, &plan, &tx).await;
    drop(tx);
    let _ = printer.await;
    let report = match outcome {
        Ok(report) => report,
        Err(e) => {
            let id = lock_id.to_owned();
            let _ = state.call(move |s| s.release_lock(&id)).await;
            return Err(e.into());
        }
    };
    let status = if report.succeeded() {
        RevisionStatus::Applied
    } else {
        RevisionStatus::Failed
    };
    let summary = serde_json::to_value(&report).map_err(|e| Failure::State(e.to_string()))?;
    let serial = revision.serial;
    let id = lock_id.to_owned();
    state
        .call(move |s| {
            s.finish_revision(serial, status, summary)?;
            s.release_lock(&id)
        })
        .await?;
    finish(&report, started.elapsed(), json)
}

fn finish(report: &Report, elapsed: Duration, json: bool) -> Result<(), Failure> {
    if json {
        println!(
            "{:#}",
            serde_json::json!({ "report": report, "seconds": elapsed.as_secs_f64() })
        );
    } else {
        let count = |a: Action| report.done.values().filter(|x| **x == a).count();
        println!(
            "Apply {}: {} created, {} updated, {} replaced, {} destroyed, {} failed, {} skipped in {:.2}s.",
            if report.succeeded() {
                "complete"
            } else {
                "failed"
            },
            count(Action::Create),
            count(Action::Update),
            count(Action::Replace),
            count(Action::Delete),
            report.failed.len(),
            report.skipped.len(),
            elapsed.as_secs_f64()
        );
    }
    if report.succeeded() {
        Ok(())
    } else {
        let lines: Vec<String> = report
            .failed
            .iter()
            .map(|(a, m)| format!("error: {a}: {m}"))
            .collect();
        Err(Failure::Apply(lines.join("\n")))
    }
}

async fn print_progress(mut rx: tokio::sync::mpsc::UnboundedReceiver<Progress>, json: bool) {
    while let Some(p) = rx.recv().await {
        if json {
            continue;
        }
        match p {
            Progress::Started { address, action } => {
                println!("{address}: {}…", verb(action, false))
            }
            Progress::Done {
                address,
                action,
                elapsed,
            } => println!("{address}: {} ({:.0?})", verb(action, true), elapsed),
            Progress::Failed { address, message } => println!("{address}: FAILED: {message}"),
            Progress::Skipped { address, because } => {
                println!("{address}: skipped because {because} failed")
            }
        }
    }
}

fn verb(action: Action, done: bool) -> &'static str {
    match (action, done) {
        (Action::Create, false) => "creating",
        (Action::Create, true) => "created",
        (Action::Update, false) => "updating",
        (Action::Update, true) => "updated",
        (Action::Replace, false) => "replacing",
        (Action::Replace, true) => "replaced",
        (Action::Delete, false) => "destroying",
        (Action::Delete, true) => "destroyed",
        (Action::NoOp, _) => "unchanged",
    }
}

/// `kiln up`: apply (after destroying everything with `--fresh`), then reconcile until a signal.
pub async fn up(dir: &Path, args: &UpArgs) -> Result<(), Failure> {
    let base = ApplyArgs {
        plan_file: None,
        select: Selection {
            targets: Vec::new(),
            excludes: Vec::new(),
            vars: Vec::new(),
            no_refresh: false,
        },
        parallelism: args.parallelism,
        output: Output { json: false },
    };
    if args.fresh {
        apply(dir, &base, true).await?;
    }
    apply(dir, &base, false).await?;
    if args.once {
        return Ok(());
    }
    println!(
        "kiln is converging {} every {}s; Ctrl-C or SIGTERM stops it.",
        dir.display(),
        args.interval
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Failure::State(e.to_string()))?;
    let mut passes: u64 = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            () = tokio::time::sleep(Duration::from_secs(args.interval.max(1))) => {}
        }
        passes += 1;
        let reconcile = reconcile_pass(dir, &base).await;
        if let Err(e) = reconcile {
            eprintln!("reconcile pass {passes}: {}", e.message());
        }
    }
    println!("stopped after {passes} reconcile passes");
    Ok(())
}

/// One level-triggered pass: re-observe everything; repair resources that say `reconcile: auto`,
/// report drift on the others.
async fn reconcile_pass(dir: &Path, base: &ApplyArgs) -> Result<(), Failure> {
    let loaded = load_all(dir, &base.select)?;
    let store = open_store(dir)?;
    let plan = make_plan(&loaded, &store, &base.select, false, base.parallelism).await?;
    let mut report_only = Vec::new();
    for change in plan.changes.iter().filter(|c| c.action != Action::NoOp) {
        let auto = loaded
            .stack
            .resources
            .get(&change.address)
            .is_some_and(|r| r.reconcile == kiln_spec::model::Reconcile::Auto);
        if !auto {
            println!(
                "drift: {} ({}) — reconcile is `report`; run `kiln apply` to repair",
                change.address,
                change.reasons.join("; ")
            );
            report_only.push(change.address.clone());
        }
    }
    if plan.is_empty()
        || report_only.len()
            == plan
                .changes
                .iter()
                .filter(|c| c.action != Action::NoOp)
                .count()
    {
        return Ok(());
    }
    let mut args = base.clone();
    args.select.excludes = report_only;
    apply(dir, &args, false).await
}

/// `kiln state list|show`.
pub fn state(dir: &Path, command: &StateCommand) -> Result<(), Failure> {
    let store = open_store(dir)?;
    match command {
        StateCommand::List(output) => {
            let records = store.resources()?;
            if output.json {
                println!("{:#}", serde_json::json!(records.iter().map(|r| serde_json::json!({ "address": r.address, "kind": r.kind, "status": r.status, "serial": r.serial })).collect::<Vec<_>>()));
            } else {
                for r in &records {
                    let tainted = if r.status == kiln_state::ResourceStatus::Tainted {
                        "  (tainted)"
                    } else {
                        ""
                    };
                    println!("{}{tainted}", r.address);
                }
            }
        }
        StateCommand::Show { address, output } => {
            let Some(r) = store.resource(address)? else {
                return Err(Failure::State(format!(
                    "no resource `{address}` in the state; `kiln state list` shows what is recorded"
                )));
            };
            if output.json {
                println!(
                    "{:#}",
                    serde_json::json!({ "address": r.address, "kind": r.kind, "status": r.status, "attributes": r.attributes, "outputs": r.outputs, "dependencies": r.dependencies, "serial": r.serial, "updated_at": r.updated_at })
                );
            } else {
                println!(
                    "# {} ({}, {:?}, revision {}, {})",
                    r.address, r.kind, r.status, r.serial, r.updated_at
                );
                for (k, v) in r.attributes.as_object().into_iter().flatten() {
                    println!("{k} = {v}");
                }
                for (k, v) in r.outputs.as_object().into_iter().flatten() {
                    println!("outputs.{k} = {v}");
                }
                if !r.dependencies.is_empty() {
                    println!("depends on: {}", r.dependencies.join(", "));
                }
            }
        }
    }
    Ok(())
}

/// `kiln history`.
pub fn history(dir: &Path, args: &HistoryArgs) -> Result<(), Failure> {
    let store = open_store(dir)?;
    let revisions = store.revisions(args.limit)?;
    if args.output.json {
        println!("{:#}", serde_json::json!(revisions.iter().map(|r| serde_json::json!({ "serial": r.serial, "lineage": r.lineage, "started_at": r.started_at, "finished_at": r.finished_at, "user": r.user, "command": r.command, "status": r.status, "files_digest": r.files_digest, "summary": r.summary })).collect::<Vec<_>>()));
        return Ok(());
    }
    for r in &revisions {
        println!(
            "{:>5}  {}  {:<8} {:<11} {}  files {}",
            r.serial,
            r.started_at,
            r.command,
            format!("{:?}", r.status).to_lowercase(),
            r.user,
            &r.files_digest.get(..12).unwrap_or("")
        );
    }
    if revisions.is_empty() {
        println!("no revisions yet: `kiln apply` records the first one");
    }
    Ok(())
}

/// `kiln force-unlock`.
pub fn force_unlock(dir: &Path, lock_id: &str) -> Result<(), Failure> {
    let mut store = open_store(dir)?;
    let info = store.force_unlock(lock_id)?;
    println!(
        "released the lock held by {} (pid {}, {}) since {}",
        info.who, info.pid, info.operation, info.created_at
    );
    Ok(())
}
