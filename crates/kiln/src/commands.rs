//! The commands: each loads what it needs, calls the libraries (or the running control
//! plane), and prints.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kiln_engine::apply::{Progress, Report};
use kiln_plan::{Action, Plan};
use tokio::sync::mpsc;

use crate::cli::{
    ApplyArgs, EventsArgs, HistoryArgs, LogsArgs, Output, PlanArgs, StateCommand, UpArgs,
};
use crate::client;
use crate::daemon::{self, Paths, UpOptions};
use crate::ops::{self, ApplyRequest, Event, Failure, Outcome, SavedPlan, SavedPlanRef, Selection};
use crate::render;

pub use crate::ops::DiskFs;

fn selection(args: &crate::cli::Selection) -> Selection {
    Selection {
        targets: args.targets.clone(),
        excludes: args.excludes.clone(),
        vars: args.vars.clone(),
        no_refresh: args.no_refresh,
        overrides: Default::default(),
        only: false,
    }
}

/// `kiln validate`.
pub fn validate(dir: &Path, output: &Output) -> Result<(), Failure> {
    let result = crate::tls::load(&DiskFs, &dir.join("kiln.yaml"));
    if output.json {
        let json = match &result {
            Ok(stack) => {
                serde_json::json!({ "valid": true, "stack": stack.name, "resources": stack.resources.len(), "diagnostics": [] })
            }
            Err(f) => {
                serde_json::json!({ "valid": false, "diagnostics": f.diagnostics.iter().map(|d| render::diagnostic_json(&f.sources, d)).collect::<Vec<_>>() })
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

fn plan_json(plan: &Plan) -> serde_json::Value {
    serde_json::json!({ "changes": plan.changes.iter().filter(|c| c.action != Action::NoOp).collect::<Vec<_>>(), "counts": plan.counts() })
}

/// `kiln plan`: through the control plane when it runs (its providers see the services), directly
/// otherwise.
pub async fn plan(dir: &Path, args: &PlanArgs) -> Result<(), Failure> {
    let select = selection(&args.select);
    let saved = match client::connect(&Paths::new(dir).socket).await {
        Some(stream) => {
            let body = serde_json::json!({ "select": select, "destroy": args.destroy });
            let (code, answer) =
                client::request_json(stream, "POST", "/v1/plan", Some(body)).await?;
            if code != 200 {
                return Err(serde_json::from_value(answer.clone())
                    .unwrap_or_else(|_| Failure::State(answer.to_string())));
            }
            serde_json::from_value::<SavedPlan>(answer).map_err(|e| {
                Failure::State(format!("unexpected answer from the control plane: {e}"))
            })?
        }
        None => {
            let (events, mut notes) = mpsc::unbounded_channel();
            let saved = ops::plan_saved(
                dir,
                &select,
                args.destroy,
                &ops::Runtime::default(),
                &events,
            )
            .await?;
            drop(events);
            while let Ok(Event::Note { message }) = notes.try_recv() {
                eprintln!("{message}");
            }
            saved
        }
    };
    if let Some(out) = &args.out {
        let text =
            serde_json::to_string_pretty(&saved).map_err(|e| Failure::State(e.to_string()))?;
        std::fs::write(out, text)
            .map_err(|e| Failure::State(format!("cannot write {}: {e}", out.display())))?;
    }
    if args.output.json {
        println!("{:#}", plan_json(&saved.plan));
    } else {
        print_plan(&saved.plan);
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

/// `kiln apply` and `kiln destroy`: through the control plane when it runs, directly otherwise.
pub async fn apply(dir: &Path, args: &ApplyArgs, destroy: bool) -> Result<(), Failure> {
    let saved = match &args.plan_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::State(format!("cannot read {}: {e}", path.display())))?;
            let raw: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                Failure::StalePlan(format!("{} is not a kiln plan: {e}", path.display()))
            })?;
            Some(Box::new(SavedPlanRef(raw)))
        }
        None => None,
    };
    let request = ApplyRequest {
        select: selection(&args.select),
        destroy,
        saved,
        parallelism: args.parallelism,
        trigger: String::new(),
        roll_back: Vec::new(),
    };
    let json = args.output.json;
    let mut printer = Printer::new(json);
    let started = Instant::now();
    let outcome = match client::connect(&Paths::new(dir).socket).await {
        Some(stream) => apply_remote(stream, &request, &mut printer).await?,
        None => {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let runtime = ops::Runtime::default();
            let run = ops::apply(dir, &request, &runtime, &tx);
            tokio::pin!(run);
            loop {
                tokio::select! {
                    Some(event) = rx.recv() => printer.event(&event),
                    result = &mut run => {
                        while let Ok(event) = rx.try_recv() {
                            printer.event(&event);
                        }
                        break result?;
                    }
                }
            }
        }
    };
    finish(&outcome, started.elapsed(), json)
}

async fn apply_remote(
    stream: tokio::net::UnixStream,
    request: &ApplyRequest,
    printer: &mut Printer,
) -> Result<Outcome, Failure> {
    let body = serde_json::to_value(request).map_err(|e| Failure::State(e.to_string()))?;
    let mut result: Option<Result<Outcome, Failure>> = None;
    client::request_lines(stream, "POST", "/v1/apply", Some(body), |line| {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            return;
        };
        if value["type"] == "result" {
            result = Some(if let Some(failure) = value.get("failure") {
                Err(serde_json::from_value(failure.clone())
                    .unwrap_or_else(|_| Failure::State(failure.to_string())))
            } else {
                serde_json::from_value(value["outcome"].clone()).map_err(|e| {
                    Failure::State(format!("unexpected answer from the control plane: {e}"))
                })
            });
        } else if let Ok(event) = serde_json::from_value::<Event>(value) {
            printer.event(&event);
        }
    })
    .await?;
    result.unwrap_or_else(|| {
        Err(Failure::State(
            "the control plane closed the connection before the apply finished".into(),
        ))
    })
}

/// Prints events as they come: the plan, then one line per finished change. On a terminal a
/// status line at the bottom shows what is running and how far along the apply is; without one
/// (CI, pipes) every start and finish is its own plain line.
struct Printer {
    json: bool,
    tty: bool,
    total: usize,
    finished: usize,
    running: std::collections::BTreeSet<String>,
    status_shown: bool,
}

impl Printer {
    fn new(json: bool) -> Printer {
        let tty = !json
            && std::io::IsTerminal::is_terminal(&std::io::stdout())
            && std::env::var_os("CI").is_none();
        Printer {
            json,
            tty,
            total: 0,
            finished: 0,
            running: std::collections::BTreeSet::new(),
            status_shown: false,
        }
    }

    fn event(&mut self, event: &Event) {
        match event {
            Event::Note { message } => {
                self.clear_status();
                eprintln!("{message}");
            }
            Event::Planned { plan } if !self.json => {
                self.total = plan
                    .changes
                    .iter()
                    .filter(|c| c.action != Action::NoOp)
                    .count();
                print_plan(plan);
            }
            Event::Progress { progress } if !self.json => self.progress(progress),
            _ => {}
        }
        self.draw_status();
    }

    fn progress(&mut self, progress: &Progress) {
        match progress {
            Progress::Started { address, .. } => {
                self.running.insert(address.clone());
                if self.tty {
                    return;
                }
            }
            Progress::Done { address, .. }
            | Progress::Failed { address, .. }
            | Progress::Skipped { address, .. } => {
                self.running.remove(address);
                self.finished += 1;
            }
        }
        self.clear_status();
        print_progress(progress);
    }

    fn clear_status(&mut self) {
        if self.status_shown {
            print!("\r\x1b[2K");
            self.status_shown = false;
        }
    }

    fn draw_status(&mut self) {
        if !self.tty || self.running.is_empty() {
            self.clear_status();
            return;
        }
        let mut names: Vec<&str> = self.running.iter().take(3).map(String::as_str).collect();
        let more = self.running.len().saturating_sub(names.len());
        let extra = if more > 0 {
            format!(" (+{more})")
        } else {
            String::new()
        };
        names.sort_unstable();
        print!(
            "\r\x1b[2K[{}/{}] running: {}{extra}",
            self.finished,
            self.total,
            names.join(", ")
        );
        let _ = std::io::Write::flush(&mut std::io::stdout());
        self.status_shown = true;
    }
}

impl Drop for Printer {
    fn drop(&mut self) {
        self.clear_status();
    }
}

fn print_progress(p: &Progress) {
    match p {
        Progress::Started { address, action } => println!("{address}: {}…", verb(*action, false)),
        Progress::Done {
            address,
            action,
            elapsed,
        } => println!("{address}: {} ({:.0?})", verb(*action, true), elapsed),
        Progress::Failed { address, message } => println!("{address}: FAILED: {message}"),
        Progress::Skipped { address, because } => {
            println!("{address}: skipped because {because} failed")
        }
    }
}

fn finish(outcome: &Outcome, elapsed: Duration, json: bool) -> Result<(), Failure> {
    let report = &outcome.report;
    if json {
        println!(
            "{:#}",
            serde_json::json!({ "plan": plan_json(&outcome.plan), "report": report, "seconds": elapsed.as_secs_f64() })
        );
    } else if !outcome.plan.is_empty() {
        print_summary(report, elapsed);
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

fn print_summary(report: &Report, elapsed: Duration) {
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

/// `kiln up`: the control plane, in the foreground or detached (`-d`).
pub async fn up(dir: &Path, args: &UpArgs) -> Result<(), Failure> {
    if args.detach {
        return detach(dir, args).await;
    }
    let options = UpOptions {
        fresh: args.fresh,
        interval: Duration::from_secs(args.interval.max(1)),
        parallelism: args.parallelism,
        api_listen: args.api_listen,
        dash_listen: args.dash_listen,
        hooks_listen: args.hooks_listen,
    };
    let mut printer = Printer::new(false);
    if args.once {
        let (tx, mut rx) = mpsc::unbounded_channel();
        if args.fresh {
            let destroy = ApplyRequest {
                destroy: true,
                parallelism: args.parallelism,
                ..ApplyRequest::default()
            };
            run_printed(dir, &destroy, &tx, &mut rx, &mut printer).await?;
        }
        let request = ApplyRequest {
            parallelism: args.parallelism,
            ..ApplyRequest::default()
        };
        return run_printed(dir, &request, &tx, &mut rx, &mut printer).await;
    }
    println!(
        "kiln: starting the control plane for {} (pid {})",
        dir.display(),
        std::process::id()
    );
    daemon::run(dir, options, |event| match event {
        Event::Note { message } => println!("{message}"),
        Event::Planned { plan } if !plan.is_empty() => print_plan(plan),
        Event::Progress { progress } => print_progress(progress),
        Event::Planned { .. } => {}
    })
    .await?;
    println!("kiln: stopped");
    Ok(())
}

async fn run_printed(
    dir: &Path,
    request: &ApplyRequest,
    tx: &mpsc::UnboundedSender<Event>,
    rx: &mut mpsc::UnboundedReceiver<Event>,
    printer: &mut Printer,
) -> Result<(), Failure> {
    let started = Instant::now();
    let result = ops::apply(dir, request, &ops::Runtime::default(), tx).await;
    while let Ok(event) = rx.try_recv() {
        printer.event(&event);
    }
    finish(&result?, started.elapsed(), false)
}

/// Starts `kiln up` in the background and waits until its first apply finished.
async fn detach(dir: &Path, args: &UpArgs) -> Result<(), Failure> {
    let paths = Paths::new(dir);
    if client::connect(&paths.socket).await.is_some() {
        return Err(Failure::Locked(
            "kiln is already running for this stack; `kiln down` stops it".into(),
        ));
    }
    let log_dir = paths
        .log
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    std::fs::create_dir_all(&log_dir)
        .map_err(|e| Failure::State(format!("cannot create {}: {e}", log_dir.display())))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.log)
        .map_err(|e| Failure::State(format!("cannot open {}: {e}", paths.log.display())))?;
    let log_err = log.try_clone().map_err(|e| Failure::State(e.to_string()))?;
    let exe = std::env::current_exe()
        .map_err(|e| Failure::State(format!("cannot find the kiln executable: {e}")))?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("-C")
        .arg(dir)
        .arg("up")
        .arg("--interval")
        .arg(args.interval.to_string())
        .arg("--parallelism")
        .arg(args.parallelism.to_string());
    if args.fresh {
        command.arg("--fresh");
    }
    if let Some(addr) = args.api_listen {
        command.arg("--api-listen").arg(addr.to_string());
    }
    command
        .arg("--dash-listen")
        .arg(args.dash_listen.to_string());
    if let Some(addr) = args.hooks_listen {
        command.arg("--hooks-listen").arg(addr.to_string());
    }
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|e| Failure::State(format!("cannot start the control plane: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(&paths.log).unwrap_or_default();
            let tail: Vec<&str> = tail
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(Failure::State(format!(
                "the control plane exited ({status}) before it was up; its log ({}):\n{}",
                paths.log.display(),
                tail.join("\n")
            )));
        }
        if let Some(stream) = client::connect(&paths.socket).await
            && let Ok((_, status)) = client::request_json(stream, "GET", "/v1/status", None).await
            && status["phase"] == "converging"
        {
            println!(
                "kiln is up for {} (pid {}); logs in {}; `kiln down` stops it",
                dir.display(),
                child.id(),
                paths.log.display()
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Failure::State(format!(
        "the control plane did not come up within 10 minutes; see {}",
        paths.log.display()
    )))
}

/// `kiln down`: asks the control plane to drain and waits for it to exit.
pub async fn down(dir: &Path) -> Result<(), Failure> {
    let paths = Paths::new(dir);
    let Some(stream) = client::connect(&paths.socket).await else {
        println!("kiln is not running for {}", dir.display());
        return Ok(());
    };
    let pid: Option<u32> = std::fs::read_to_string(&paths.pidfile)
        .ok()
        .and_then(|p| p.trim().parse().ok());
    client::request_json(stream, "POST", "/v1/shutdown", None).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let gone = pid.is_none_or(|p| !ops::process_alive(p));
        if gone && client::connect(&paths.socket).await.is_none() {
            println!("kiln stopped");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(Failure::State(
        "the control plane did not stop within 60s".into(),
    ))
}

/// `kiln status`: the control plane's view.
pub async fn status(dir: &Path, output: &Output) -> Result<(), Failure> {
    let Some(stream) = client::connect(&Paths::new(dir).socket).await else {
        if output.json {
            println!("{:#}", serde_json::json!({ "running": false }));
        } else {
            println!(
                "kiln is not running for {}; `kiln up -d` starts it",
                dir.display()
            );
        }
        return Ok(());
    };
    let (_, status) = client::request_json(stream, "GET", "/v1/status", None).await?;
    if output.json {
        println!("{status:#}");
        return Ok(());
    }
    println!(
        "kiln is {} for stack {} (pid {}, up {}s): {} resources, {} reconcile passes, {} repaired",
        status["phase"].as_str().unwrap_or("?"),
        status["stack"].as_str().unwrap_or("?"),
        status["pid"],
        status["uptime_seconds"],
        status["resources"],
        status["passes"],
        status["repaired"]
    );
    if let Some(address) = status["ingress"].as_str() {
        println!("  ingress: http://{address}");
    }
    if let Some(address) = status["dash"].as_str() {
        println!("  dashboard: http://{address}/");
    }
    for drift in status["drift"].as_array().into_iter().flatten() {
        println!(
            "  drift: {} (reconcile: report)",
            drift.as_str().unwrap_or("?")
        );
    }
    if let Some(error) = status["last_error"].as_str() {
        println!("  last pass failed: {error}");
    }
    let maintenance: Vec<crate::maintenance::Active> =
        serde_json::from_value(status["maintenance"].clone()).unwrap_or_default();
    let now = jiff::Timestamp::now().as_millisecond();
    for page in &maintenance {
        println!(
            "  maintenance: {} answers {} \"{}\" {} (by {})",
            page.route,
            page.status,
            page.message,
            crate::maintenance::until_text(page, now),
            page.actor
        );
    }
    Ok(())
}

/// `kiln state list|show` (reads the store directly: WAL lets readers run beside the writer).
pub fn state(dir: &Path, command: &StateCommand) -> Result<(), Failure> {
    let store = ops::open_store(dir)?;
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
    let store = ops::open_store(dir)?;
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
            r.files_digest.get(..12).unwrap_or("")
        );
    }
    if revisions.is_empty() {
        println!("no revisions yet: `kiln apply` records the first one");
    }
    Ok(())
}

/// `kiln events`: the newest `--limit` events, oldest first.
pub fn events(dir: &Path, args: &EventsArgs) -> Result<(), Failure> {
    let store = ops::open_store(dir)?;
    let query = kiln_state::EventQuery {
        after_id: None,
        address: args.address.clone(),
        limit: usize::MAX,
    };
    let mut list = store.events(&query)?;
    let skip = list.len().saturating_sub(args.limit);
    list.drain(..skip);
    if args.output.json {
        println!(
            "{:#}",
            serde_json::to_value(&list).map_err(|e| Failure::State(e.to_string()))?
        );
        return Ok(());
    }
    for e in &list {
        println!("{:>6}  {}  {:<22} {}", e.id, e.time, e.kind, e.message);
    }
    Ok(())
}

/// `kiln force-unlock`.
pub fn force_unlock(dir: &Path, lock_id: &str) -> Result<(), Failure> {
    let mut store = ops::open_store(dir)?;
    let info = store.force_unlock(lock_id)?;
    println!(
        "released the lock held by {} (pid {}, {}) since {}",
        info.who, info.pid, info.operation, info.created_at
    );
    Ok(())
}

pub(crate) async fn control_plane(dir: &Path) -> Result<tokio::net::UnixStream, Failure> {
    client::connect(&Paths::new(dir).socket)
        .await
        .ok_or_else(|| {
            Failure::State(format!(
                "kiln is not running for {}; `kiln up -d` starts it",
                dir.display()
            ))
        })
}

/// `kiln ps`.
pub async fn ps(dir: &Path, output: &Output) -> Result<(), Failure> {
    let (_, list) =
        client::request_json(control_plane(dir).await?, "GET", "/v1/services", None).await?;
    if output.json {
        println!("{list:#}");
        return Ok(());
    }
    println!(
        "{:<16} {:>4} {:<13} {:>8} {:>6} {:<14} {:>8} {:>8} {:>7} {:>9} {:<9}  HEALTH",
        "SERVICE",
        "#",
        "RELEASE",
        "PID",
        "PORT",
        "STATE",
        "RESTARTS",
        "UPTIME",
        "CPU",
        "RSS",
        "LIMITS"
    );
    for i in list.as_array().into_iter().flatten() {
        let num = |k: &str| {
            i[k].as_u64()
                .map_or_else(|| "-".to_owned(), |n| n.to_string())
        };
        let rss = i["rss_bytes"].as_u64().map_or_else(
            || "-".to_owned(),
            |b| format!("{:.1}Mi", b as f64 / 1_048_576.0),
        );
        let cpu = i["cpu_seconds"]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |c| format!("{c:.2}s"));
        let uptime = i["uptime_seconds"]
            .as_u64()
            .map_or_else(|| "-".to_owned(), |s| format!("{s}s"));
        let mut state = i["state"].as_str().unwrap_or("?").to_owned();
        if let Some(detail) = i["detail"].as_str() {
            state = format!("{state} ({detail})");
        }
        println!(
            "{:<16} {:>4} {:<13} {:>8} {:>6} {:<14} {:>8} {:>8} {:>7} {:>9} {:<9}  {}",
            i["service"].as_str().unwrap_or("?"),
            num("instance"),
            i["release"].as_str().unwrap_or("-"),
            num("pid"),
            num("port"),
            state,
            num("restarts"),
            uptime,
            cpu,
            rss,
            i["limits"].as_str().unwrap_or("-"),
            i["health"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// `kiln query EXPR`: PromQL over the control plane's metrics.
pub async fn query(
    dir: &Path,
    expr: &str,
    time: Option<&str>,
    output: &Output,
) -> Result<(), Failure> {
    let mut path = format!("/api/v1/query?query={}", percent_encode(expr));
    if let Some(t) = time {
        path.push_str(&format!("&time={}", percent_encode(t)));
    }
    let (code, answer) =
        client::request_json(control_plane(dir).await?, "GET", &path, None).await?;
    if code != 200 {
        return Err(Failure::Invalid(format!(
            "error: {}",
            answer["error"].as_str().unwrap_or("query failed")
        )));
    }
    if output.json {
        println!("{answer:#}");
        return Ok(());
    }
    let data = &answer["data"];
    match data["resultType"].as_str() {
        Some("vector") => {
            for sample in data["result"].as_array().into_iter().flatten() {
                let labels: Vec<String> = sample["metric"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}=\"{}\"", v.as_str().unwrap_or("")))
                    .collect();
                println!(
                    "{{{}}} {}",
                    labels.join(", "),
                    sample["value"][1].as_str().unwrap_or("")
                );
            }
        }
        _ => println!("{}", data["result"]),
    }
    Ok(())
}

/// Percent-encodes everything but unreserved characters, for a query string.
pub(crate) fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// `kiln restart SERVICE`.
pub async fn restart(dir: &Path, service: &str) -> Result<(), Failure> {
    let path = format!("/v1/services/{service}/restart");
    let (code, answer) =
        client::request_json(control_plane(dir).await?, "POST", &path, None).await?;
    if code != 200 {
        return Err(Failure::Refused(format!(
            "error: {}",
            answer["message"].as_str().unwrap_or("restart failed")
        )));
    }
    println!("{service}: restarted");
    Ok(())
}

/// `kiln scale SERVICE=N`.
pub async fn scale(dir: &Path, assignment: &str) -> Result<(), Failure> {
    let Some((service, replicas)) = assignment.split_once('=') else {
        return Err(Failure::Invalid(format!(
            "error: `{assignment}`: expected SERVICE=REPLICAS, like api=3"
        )));
    };
    let replicas: u32 = replicas
        .parse()
        .map_err(|_| Failure::Invalid(format!("error: `{replicas}` is not a replica count")))?;
    let path = format!("/v1/services/{service}/scale");
    let (code, answer) = client::request_json(
        control_plane(dir).await?,
        "POST",
        &path,
        Some(serde_json::json!({ "replicas": replicas })),
    )
    .await?;
    if code != 200 {
        return Err(Failure::Refused(format!(
            "error: {}",
            answer["message"].as_str().unwrap_or("scale failed")
        )));
    }
    println!(
        "{service}: scaled to {replicas}; `kiln plan` shows this against the files until they say the same"
    );
    Ok(())
}

/// `kiln logs`: reads the log files directly (they are the source, whether kiln runs or not).
pub async fn logs(dir: &Path, args: &LogsArgs) -> Result<(), Failure> {
    let state_dir = Paths::new(dir).kiln_dir.join("services");
    let since = match &args.since {
        Some(text) => {
            let ms = kiln_spec::units::parse_duration(text)
                .map_err(|e| Failure::Invalid(format!("error: --since: {e}")))?;
            Some(std::time::SystemTime::now() - Duration::from_millis(ms))
        }
        None => None,
    };
    let mut targets: Vec<(String, Option<u32>)> = Vec::new();
    for t in &args.targets {
        let (service, instance) = match t.split_once('/') {
            Some((s, i)) => (
                s.to_owned(),
                Some(i.parse().map_err(|_| {
                    Failure::Invalid(format!("error: `{t}`: expected SERVICE/INSTANCE"))
                })?),
            ),
            None => (t.clone(), None),
        };
        targets.push((service, instance));
    }
    if targets.is_empty() {
        let names: Vec<String> = std::fs::read_dir(state_dir.join("logs"))
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        // By service, not by set: a deploy during `--follow` starts new sets.
        let mut names: Vec<String> = names
            .iter()
            .map(|n| kiln_supervisor::service_of(n).to_owned())
            .collect();
        names.sort();
        names.dedup();
        targets = names.into_iter().map(|n| (n, None)).collect();
    }
    let colour = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none();
    let mut shown: std::collections::HashMap<(String, u32), std::time::SystemTime> =
        std::collections::HashMap::new();
    let mut first = true;
    loop {
        let mut lines: Vec<kiln_supervisor::LogLine> = Vec::new();
        for (service, instance) in &targets {
            let tail = if first { args.tail } else { None };
            lines.extend(kiln_supervisor::read_logs(
                &state_dir, service, *instance, since, tail,
            ));
        }
        lines.sort_by_key(|l| l.time);
        for line in lines {
            let key = (line.service.clone(), line.instance);
            if shown.get(&key).is_some_and(|t| line.time <= *t) {
                continue;
            }
            shown.insert(key, line.time);
            print_log_line(&line, args.output.json, colour);
        }
        first = false;
        if !args.follow {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

fn print_log_line(line: &kiln_supervisor::LogLine, json: bool, colour: bool) {
    let time = jiff::Timestamp::try_from(line.time)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let stream = match line.stream {
        kiln_supervisor::Stream::Stdout => "stdout",
        kiln_supervisor::Stream::Stderr => "stderr",
        kiln_supervisor::Stream::Supervisor => "kiln",
    };
    if json {
        println!(
            "{}",
            serde_json::json!({ "time": time, "service": line.service, "instance": line.instance, "stream": stream, "text": line.text })
        );
        return;
    }
    let prefix = format!("{}/{}", line.service, line.instance);
    if colour {
        let palette = [36, 33, 32, 35, 34, 31];
        let hash = line
            .service
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        println!(
            "\x1b[{}m{prefix:<12} |\x1b[0m {}",
            palette[hash % palette.len()],
            line.text
        );
    } else {
        println!("{prefix:<12} | {time} {}", line.text);
    }
}

/// `kiln deploy SERVICE [--release R]` and `kiln rollback SERVICE [--to R]`: an apply of that
/// service alone, with its release pinned when one is named (the tree's otherwise).
pub async fn deploy(
    dir: &Path,
    service: &str,
    release: Option<&str>,
    rollback: bool,
    output: &Output,
) -> Result<(), Failure> {
    let address = crate::deploys::service_address(service);
    let stream = control_plane(dir).await?;
    let pinned = {
        let store = ops::open_store(dir)?;
        if store.resource(&address)?.is_none() && rollback {
            return Err(Failure::Refused(format!(
                "error: {address} is not deployed; nothing to roll back"
            )));
        }
        match (release, rollback) {
            (Some(r), _) => Some(crate::deploys::resolve_release(&store, &address, r)?),
            // The control plane chooses the release under the state lock, after any deploy
            // in flight: the state read here may be about to change.
            (None, _) => None,
        }
    };
    let roll_back = if rollback && pinned.is_none() {
        vec![address.clone()]
    } else {
        Vec::new()
    };
    let mut overrides = std::collections::BTreeMap::new();
    if let Some(digest) = &pinned {
        let mut attrs = serde_json::Map::new();
        attrs.insert(
            "release_id".into(),
            serde_json::Value::String(digest.clone()),
        );
        overrides.insert(address.clone(), attrs);
        if !output.json {
            println!(
                "{} {address} to release {}",
                if rollback {
                    "rolling back"
                } else {
                    "deploying"
                },
                kiln_deploy::release::short(digest)
            );
        }
    }
    let select = Selection {
        targets: vec![address],
        overrides,
        only: true,
        ..Selection::default()
    };
    let trigger = if rollback { "rollback" } else { "deploy" };
    apply_through_control_plane(stream, select, roll_back, trigger, output).await
}

/// An apply of `select` by the control plane behind `stream`, recorded with `trigger`
/// (`deploy`, `rollback`, `promote`), its progress printed as it goes.
pub(crate) async fn apply_through_control_plane(
    stream: tokio::net::UnixStream,
    select: Selection,
    roll_back: Vec<String>,
    trigger: &str,
    output: &Output,
) -> Result<(), Failure> {
    let request = ApplyRequest {
        select,
        parallelism: 10,
        trigger: trigger.into(),
        roll_back,
        ..ApplyRequest::default()
    };
    let mut printer = Printer::new(output.json);
    let started = Instant::now();
    let outcome = apply_remote(stream, &request, &mut printer).await?;
    if outcome.plan.is_empty() && !output.json {
        println!(
            "nothing to deploy: the service already runs that release with this configuration"
        );
    }
    finish(&outcome, started.elapsed(), output.json)
}
