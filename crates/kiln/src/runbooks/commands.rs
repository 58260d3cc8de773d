//! `kiln runbook list|run|approve|show|runs`. Runs and approvals go through the running
//! control plane (it holds the services); the audit is read from the state store directly.
//! Without a control plane, `run --dry-run` executes the runbook here in dry-run mode, which
//! calls no action and records nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Subcommand;
use kiln_runbooks::{ActionFuture, Actions, Progress, RunContext};
use serde_json::json;

use super::RunRequest;
use crate::cli::Output;
use crate::client;
use crate::ops::{self, Failure};

/// How long `kiln runbook run` follows a run before leaving it to `kiln runbook show`.
const FOLLOW_LIMIT: Duration = Duration::from_secs(600);
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// `kiln runbook ...`.
#[derive(Debug, Subcommand, Clone)]
pub enum RunbookCommand {
    /// The runbooks of the stack: parameters, steps, guards and documentation.
    List(Output),
    /// Run a runbook now (through the running control plane).
    Run {
        /// The runbook.
        name: String,
        /// A parameter: `--param service=api` (repeatable).
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Say what each step would do; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Output format.
        #[command(flatten)]
        output: Output,
    },
    /// Let a run waiting at an approval step go on.
    Approve {
        /// The run's id (or at least 4 leading characters of it).
        run_id: String,
    },
    /// A run's audit: trigger, parameters, every attempt of every step with times and results.
    Show {
        /// The run's id (or at least 4 leading characters of it).
        run_id: String,
        /// Output format.
        #[command(flatten)]
        output: Output,
    },
    /// The runs of the last 24 hours, newest first (refused ones included).
    Runs(Output),
}

/// `kiln runbook ...`.
pub async fn runbook(dir: &Path, command: &RunbookCommand) -> Result<(), Failure> {
    match command {
        RunbookCommand::List(output) => list(dir, output),
        RunbookCommand::Run {
            name,
            params,
            dry_run,
            output,
        } => run(dir, name, params, *dry_run, output).await,
        RunbookCommand::Approve { run_id } => {
            let stream = crate::commands::control_plane(dir).await?;
            let (code, answer) = client::request_json(
                stream,
                "POST",
                &format!("/v1/runbooks/runs/{run_id}/approve"),
                Some(json!({ "by": ops::who() })),
            )
            .await?;
            if code != 200 {
                return Err(Failure::Refused(format!(
                    "error: {}",
                    answer["message"]
                        .as_str()
                        .unwrap_or("the approval was refused")
                )));
            }
            println!("approved {run_id}");
            Ok(())
        }
        RunbookCommand::Show { run_id, output } => show(dir, run_id, output.json),
        RunbookCommand::Runs(output) => runs(dir, output.json),
    }
}

fn list(dir: &Path, output: &Output) -> Result<(), Failure> {
    let stack = ops::load_stack(dir)?;
    if output.json {
        let view: Vec<serde_json::Value> = stack
            .runbooks
            .values()
            .map(|r| {
                json!({
                    "name": r.name,
                    "description": r.description,
                    "params": r.params.iter().map(|(n, p)| (n.clone(), json!({ "type": p.ty.as_str(), "default": p.default, "required": p.required }))).collect::<serde_json::Map<_, _>>(),
                    "steps": r.steps.iter().map(|s| json!({ "name": s.name, "action": s.action.kind(), "timeout_ms": s.timeout_ms, "retries": s.retries })).collect::<Vec<_>>(),
                    "guards": { "max_runs": r.guards.max_runs, "per_ms": r.guards.per_ms, "escalate": r.guards.escalate, "max_targets": r.guards.max_targets },
                })
            })
            .collect();
        println!("{:#}", serde_json::Value::Array(view));
        return Ok(());
    }
    if stack.runbooks.is_empty() {
        println!("no runbooks: declare them under `runbooks:` in kiln.yaml");
    }
    for r in stack.runbooks.values() {
        let params: Vec<String> = r
            .params
            .iter()
            .map(|(n, p)| match &p.default {
                Some(d) => format!("{n}: {} = {d}", p.ty.as_str()),
                None if p.required => format!("{n}: {} (required)", p.ty.as_str()),
                None => format!("{n}: {}", p.ty.as_str()),
            })
            .collect();
        println!("{}({})", r.name, params.join(", "));
        if let Some(first) = r.description.lines().find(|l| !l.trim().is_empty()) {
            println!("  {}", first.trim());
        }
        let steps: Vec<String> = r
            .steps
            .iter()
            .map(|s| format!("{} ({})", s.name, s.action.kind()))
            .collect();
        println!("  steps: {}", steps.join(" → "));
        println!(
            "  guards: at most {} runs per target per {}, {} targets; {}",
            r.guards.max_runs,
            kiln_runbooks::guard::human(r.guards.per_ms),
            r.guards.max_targets,
            match &r.guards.escalate {
                Some(to) => format!("then escalate to {to}"),
                None => "then refuse".to_owned(),
            }
        );
    }
    Ok(())
}

fn parse_params(params: &[String]) -> Result<BTreeMap<String, String>, Failure> {
    params
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
                .ok_or_else(|| {
                    Failure::Invalid(format!("error: --param {p}: write it as NAME=VALUE"))
                })
        })
        .collect()
}

async fn run(
    dir: &Path,
    name: &str,
    params: &[String],
    dry_run: bool,
    output: &Output,
) -> Result<(), Failure> {
    let params = parse_params(params)?;
    let Some(stream) = client::connect(&crate::daemon::Paths::new(dir).socket).await else {
        if dry_run {
            return dry_run_here(dir, name, &params, output).await;
        }
        return Err(Failure::State(format!(
            "kiln is not running for {}; a runbook acts through the control plane: `kiln up -d` starts it (`--dry-run` works without)",
            dir.display()
        )));
    };
    let request = RunRequest {
        name: name.to_owned(),
        params,
        dry_run,
        by: ops::who(),
    };
    let (code, answer) =
        client::request_json(stream, "POST", "/v1/runbooks/run", Some(json!(request))).await?;
    if code != 200 {
        return Err(Failure::Refused(format!(
            "error: {}",
            answer["message"].as_str().unwrap_or("the run was refused")
        )));
    }
    let run_id = answer["run_id"].as_str().unwrap_or_default().to_owned();
    if !output.json {
        println!("run {run_id}");
    }
    // Follow the audit until the run ends or waits for a human.
    let started = Instant::now();
    loop {
        let store = ops::open_store(dir)?;
        if let Some((run, _)) = store.runbook_run(&run_id)?
            && run.status != "running"
        {
            break;
        }
        if started.elapsed() > FOLLOW_LIMIT {
            println!("still running; `kiln runbook show {run_id}` follows it");
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
    show(dir, &run_id, output.json)?;
    let store = ops::open_store(dir)?;
    match store.runbook_run(&run_id)? {
        Some((run, _)) if run.status == "aborted" || run.status == "failed" => Err(Failure::Apply(
            format!("error: runbook {name} {}: {}", run.status, run.detail),
        )),
        _ => Ok(()),
    }
}

fn show(dir: &Path, run_id: &str, json_output: bool) -> Result<(), Failure> {
    let store = ops::open_store(dir)?;
    let Some((run, steps)) = store.runbook_run(run_id)? else {
        return Err(Failure::Refused(format!(
            "error: no runbook run `{run_id}`"
        )));
    };
    if json_output {
        println!("{:#}", json!({ "run": run, "steps": steps }));
        return Ok(());
    }
    println!(
        "run {}: runbook {} on {}: {}{}",
        run.id,
        run.runbook,
        run.target,
        run.status,
        if run.dry_run { " (dry run)" } else { "" }
    );
    if !run.detail.is_empty() {
        println!("  {}", run.detail);
    }
    println!(
        "  triggered by {} ({}) at {}",
        run.triggered_by,
        run.trigger,
        kiln_alerts::rfc3339(run.started_at)
    );
    if let Some(end) = run.finished_at {
        println!(
            "  ended at {} after {}",
            kiln_alerts::rfc3339(end),
            took(run.started_at, end)
        );
    }
    let params: Vec<String> = run
        .params
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    if !params.is_empty() {
        println!("  params: {}", params.join(" "));
    }
    for s in &steps {
        println!(
            "  {:<6} {:<16} #{} {:<10} {:>7}  {} → {}",
            s.path,
            s.name,
            s.attempt,
            s.status,
            s.finished_at
                .map_or_else(String::new, |end| took(s.started_at, end)),
            s.detail,
            s.output
        );
    }
    Ok(())
}

fn runs(dir: &Path, json_output: bool) -> Result<(), Failure> {
    let store = ops::open_store(dir)?;
    let runs = store.runbook_runs(crate::metrics::now_ms() - 86_400_000, 200)?;
    if json_output {
        println!("{:#}", json!(runs));
        return Ok(());
    }
    if runs.is_empty() {
        println!("no runbook runs in the last 24 hours");
    }
    for r in runs {
        println!(
            "{}  {}  {:<20} {:<12} {:<18} {}",
            r.id,
            kiln_alerts::rfc3339(r.started_at).get(..19).unwrap_or(""),
            r.runbook,
            r.target,
            if r.dry_run {
                format!("{} (dry run)", r.status)
            } else {
                r.status.clone()
            },
            r.triggered_by
        );
    }
    Ok(())
}

fn took(start: i64, end: i64) -> String {
    format!("{:.1}s", (end - start).max(0) as f64 / 1000.0)
}

/// Without a control plane a dry run executes here: it calls no action, so these only say so.
struct NoControlPlane;

fn not_here<'a, T: Send + 'a>() -> ActionFuture<'a, T> {
    Box::pin(async { Err("kiln is not running; a dry run calls no action".to_owned()) })
}

impl Actions for NoControlPlane {
    fn restart<'a>(&'a self, _: &'a str) -> ActionFuture<'a> {
        not_here()
    }
    fn rollback<'a>(&'a self, _: &'a str, _: Option<&'a str>) -> ActionFuture<'a> {
        not_here()
    }
    fn scale<'a>(&'a self, _: &'a str, _: u32) -> ActionFuture<'a> {
        not_here()
    }
    fn command<'a>(&'a self, _: &'a [String]) -> ActionFuture<'a> {
        not_here()
    }
    fn http<'a>(&'a self, _: &'a str, _: &'a str, _: u16) -> ActionFuture<'a> {
        not_here()
    }
    fn query_holds<'a>(&'a self, _: &'a str) -> ActionFuture<'a, bool> {
        not_here()
    }
    fn notify<'a>(&'a self, _: &'a str, _: &'a str, _: &'a RunContext) -> ActionFuture<'a> {
        not_here()
    }
    fn approval<'a>(&'a self, _: &'a RunContext, _: &'a str) -> ActionFuture<'a> {
        not_here()
    }
    fn drain<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: std::time::Duration,
        _: kiln_spec::runbooks::DrainThen,
    ) -> ActionFuture<'a> {
        not_here()
    }
    fn undrain<'a>(&'a self, _: &'a str, _: &'a str) -> ActionFuture<'a> {
        not_here()
    }
    fn maintenance<'a>(
        &'a self,
        _: &'a str,
        _: Option<kiln_spec::runbooks::ResolvedPage>,
        _: &'a RunContext,
    ) -> ActionFuture<'a> {
        not_here()
    }
}

async fn dry_run_here(
    dir: &Path,
    name: &str,
    given: &BTreeMap<String, String>,
    output: &Output,
) -> Result<(), Failure> {
    let stack = ops::load_stack(dir)?;
    let Some(decl) = stack.runbooks.get(name) else {
        return Err(Failure::Refused(format!(
            "error: no runbook named `{name}`"
        )));
    };
    let services: Vec<String> = stack
        .resources
        .keys()
        .filter_map(|a| a.strip_prefix("services."))
        .map(str::to_owned)
        .collect();
    let params = kiln_runbooks::resolve_params(decl, given, &BTreeMap::new(), &services)
        .map_err(|e| Failure::Refused(format!("error: {e}")))?;
    let context = RunContext {
        run_id: "dry-run".into(),
        runbook: name.to_owned(),
        target: kiln_runbooks::target_of(decl, &params),
        dry_run: true,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let phase = kiln_runbooks::execute(
        &stack.runbooks,
        decl,
        &params,
        &context,
        &NoControlPlane,
        &tx,
    )
    .await;
    drop(tx);
    let mut steps = Vec::new();
    while let Some(p) = rx.recv().await {
        if let Progress::StepFinished(result) = p {
            steps.push(result);
        }
    }
    if output.json {
        println!(
            "{:#}",
            json!({ "runbook": name, "target": context.target, "params": params, "dry_run": true, "status": phase.status(), "steps": steps })
        );
        return Ok(());
    }
    println!(
        "dry run of runbook {name} on {} (kiln is not running; nothing is recorded)",
        context.target
    );
    for s in &steps {
        let line = match &s.outcome {
            Ok(text) | Err(text) => text,
        };
        println!("  {:<6} {:<16} {line}", s.path, s.name);
    }
    Ok(())
}
