//! `kiln promote SERVICE --to ENV` and `kiln approve SERVICE --env ENV`: moving a release from
//! one environment to the next behind its gates. The facts the gates look at are gathered here
//! (deploy, release and run records from the state store; readiness and firing alerts from the
//! control plane); the verdicts are `kiln_delivery::gates::evaluate`, a pure function. A
//! promotion is recorded in the state store (`applying`) and then applied like `kiln deploy`:
//! the target environment's service runs the promoted digest, never a rebuild. The record is
//! then marked `applied`, or `failed`, and a failed promotion no longer says what the
//! environment runs (nor is it tried again automatically).

use std::path::Path;

use kiln_delivery::gates::{self, ApprovalFact, GateInput, RunFact, Serving, Verdict};
use kiln_spec::Stack;
use kiln_spec::environments::{Environment, Promotion};
use kiln_state::{ApprovalRecord, PromotionRecord, Store};

use crate::cli::{ApproveArgs, PromoteArgs};
use crate::client;
use crate::ops::{self, Failure, Selection};

/// How many records are read when looking for a release's deploys and runs.
const RECORDS: usize = 1_000;

/// A service, the environment it is promoted to and the one it comes from.
struct Target<'s> {
    /// The root service's name (`api`).
    service: String,
    to: &'s Environment,
    rule: &'s Promotion,
}

impl Target<'_> {
    fn source_address(&self) -> String {
        format!("environments.{}.services.{}", self.rule.from, self.service)
    }
    fn to_address(&self) -> String {
        format!("{}services.{}", self.to.prefix(), self.service)
    }
}

fn target<'s>(stack: &'s Stack, service: &str, environment: &str) -> Result<Target<'s>, Failure> {
    let service = service
        .strip_prefix("services.")
        .unwrap_or(service)
        .to_owned();
    let names: Vec<&str> = stack.environments.iter().map(|e| e.name.as_str()).collect();
    if names.is_empty() {
        return Err(Failure::Invalid(
            "error: the stack declares no `environments:`; `kiln deploy` deploys its services"
                .into(),
        ));
    }
    let to = stack.environment(environment).ok_or_else(|| {
        Failure::Invalid(format!(
            "error: there is no environment `{environment}` (declared: {})",
            names.join(", ")
        ))
    })?;
    let rule = to.promote.as_ref().ok_or_else(|| {
        Failure::Invalid(format!(
            "error: `{environment}` has no `promote:`: it builds its own releases (`kiln deploy {service}.{environment}`)"
        ))
    })?;
    let target = Target { service, to, rule };
    let address = target.to_address();
    if !stack.resources.contains_key(&address) && !stack.awaiting_promotion.contains(&address) {
        return Err(Failure::Invalid(format!(
            "error: the stack has no service `{}` (`{address}`)",
            target.service
        )));
    }
    Ok(target)
}

/// `kiln promote SERVICE --to ENV [--release R]`.
pub async fn promote(dir: &Path, args: &PromoteArgs) -> Result<(), Failure> {
    let stack = ops::load_stack(dir)?;
    let target = target(&stack, &args.service, &args.to)?;
    let release = {
        let store = ops::open_store(dir)?;
        release(&store, &target, args.release.as_deref())?
    };
    let verdicts = verdicts(dir, &target, &release, now_ms()).await?;
    if !args.output.json {
        println!(
            "promoting {} {} from {} to {}",
            target.service,
            kiln_deploy::release::short(&release),
            target.rule.from,
            target.to.name
        );
        print_verdicts(&verdicts);
    }
    if !gates::all_pass(&verdicts) {
        let failed: Vec<&str> = verdicts
            .iter()
            .filter(|v| !v.passed)
            .map(|v| v.gate.name())
            .collect();
        if args.output.json {
            println!(
                "{:#}",
                serde_json::json!({ "promoted": false, "gates": verdicts })
            );
        }
        return Err(Failure::Refused(format!(
            "error: not promoted: the {} gate{} did not pass",
            failed.join(", "),
            if failed.len() == 1 { "" } else { "s" }
        )));
    }
    // Recorded first, so the apply's load of the stack gives the service the promoted digest.
    let stream = crate::commands::control_plane(dir).await?;
    let recorded = record(dir, &stack, &target, &release, &verdicts, &ops::who())?;
    let result = crate::commands::apply_through_control_plane(
        stream,
        recorded.selection(dir),
        Vec::new(),
        "promote",
        &args.output,
    )
    .await;
    recorded.finish(dir, result.as_ref().err().map(Failure::message))?;
    result
}

/// A promotion recorded and about to be applied.
struct Recorded {
    id: i64,
    /// The target environment's service (`environments.production.services.api`).
    address: String,
    release: String,
    /// What an apply of it selects.
    select: Selection,
}

impl Recorded {
    /// What to apply now: the promoted service and what waited for it in its environment,
    /// less what still waits for a promotion of its own. Read at apply time: promotions of
    /// other services recorded meanwhile (the automatic ones are recorded together) change
    /// what is still waiting, and selecting a waiting address fails the whole apply.
    fn selection(&self, dir: &Path) -> Selection {
        let waiting = ops::load_stack(dir)
            .map(|stack| stack.awaiting_promotion)
            .unwrap_or_default();
        Selection {
            targets: self
                .select
                .targets
                .iter()
                .filter(|a| **a == self.address || !waiting.contains(a))
                .cloned()
                .collect(),
            ..self.select.clone()
        }
    }

    /// Marks the promotion applied, or failed with `why`.
    fn finish(&self, dir: &Path, failed: Option<&str>) -> Result<(), Failure> {
        let mut store = ops::open_store(dir)?;
        let Some(why) = failed else {
            store.set_promotion_status(self.id, "applied")?;
            return Ok(());
        };
        store.set_promotion_status(self.id, "failed")?;
        store.append_event(&kiln_state::NewEvent {
            kind: "promotion.failed".into(),
            address: Some(self.address.clone()),
            serial: None,
            message: format!(
                "the promotion of {} to {} failed to apply; it runs what it ran before: {why}",
                kiln_deploy::release::short(&self.release),
                self.address
            ),
            data: serde_json::json!({ "release": self.release, "reason": why }),
        })?;
        Ok(())
    }
}

/// Records the promotion as `applying`.
fn record(
    dir: &Path,
    stack: &Stack,
    target: &Target<'_>,
    release: &str,
    verdicts: &[Verdict],
    by: &str,
) -> Result<Recorded, Failure> {
    let mut store = ops::open_store(dir)?;
    let id = store.record_promotion(&PromotionRecord {
        service: target.service.clone(),
        environment: target.to.name.clone(),
        from_env: target.rule.from.clone(),
        release: release.to_owned(),
        promoted_by: by.to_owned(),
        promoted_at: now_ms(),
        gates: serde_json::to_value(verdicts).unwrap_or_default(),
        status: "applying".into(),
    })?;
    store.append_event(&kiln_state::NewEvent {
        kind: "promotion.recorded".into(),
        address: Some(target.to_address()),
        serial: None,
        message: format!(
            "{by} promoted {} {} from {} to {}",
            target.service,
            kiln_deploy::release::short(release),
            target.rule.from,
            target.to.name
        ),
        data: serde_json::json!({ "release": release, "gates": verdicts }),
    })?;
    drop(store);
    let prefix = target.to.prefix();
    let mut targets = vec![target.to_address()];
    targets.extend(
        stack
            .awaiting_promotion
            .iter()
            .filter(|a| a.starts_with(&prefix) && **a != target.to_address())
            .cloned(),
    );
    Ok(Recorded {
        id,
        address: target.to_address(),
        release: release.to_owned(),
        select: Selection {
            targets,
            ..Selection::default()
        },
    })
}

/// How often the control plane checks the gates of environments with `promote.auto: true`.
const AUTO_PROMOTE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The control plane's automatic promotion: every few seconds, for each environment whose
/// `promote:` says `auto: true`, the release its source environment serves is promoted (by
/// `kiln`) once every gate passes and it is not the one already promoted. Stops with the API.
pub async fn auto_promote(
    dir: std::path::PathBuf,
    apply: crate::delivery::ApplyFn,
    announce: std::sync::Arc<dyn Fn(&ops::Event) + Send + Sync>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(AUTO_PROMOTE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        for (recorded, message) in auto_promotions(&dir).await {
            announce(&ops::Event::Note { message });
            let request = ops::ApplyRequest {
                select: recorded.selection(&dir),
                parallelism: 10,
                trigger: "promote".into(),
                ..ops::ApplyRequest::default()
            };
            let outcome = apply(request).await;
            let failed = match outcome {
                Ok(Ok(o)) if o.report.succeeded() => None,
                Ok(Ok(_)) => Some("some changes failed".to_owned()),
                Ok(Err(failure)) => Some(failure.message().to_owned()),
                Err(_) => return,
            };
            let _ = recorded.finish(&dir, failed.as_deref());
            if let Some(why) = failed {
                announce(&ops::Event::Note {
                    message: format!("kiln: automatic promotion failed to apply: {why}"),
                });
            }
        }
    }
}

/// The promotions whose gates all pass now, recorded, with what to apply and a note each.
async fn auto_promotions(dir: &Path) -> Vec<(Recorded, String)> {
    let Ok(stack) = ops::load_stack(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for environment in &stack.environments {
        if !environment.promote.as_ref().is_some_and(|p| p.auto) {
            continue;
        }
        let prefix = format!("{}services.", environment.prefix());
        let services: Vec<String> = stack
            .resources
            .keys()
            .chain(&stack.awaiting_promotion)
            .filter_map(|a| a.strip_prefix(&prefix))
            .map(str::to_owned)
            .collect();
        for service in services {
            let Ok(target) = target(&stack, &service, &environment.name) else {
                continue;
            };
            let candidate = {
                let Ok(store) = ops::open_store(dir) else {
                    return out;
                };
                let current = crate::deploys::current_release(&store, &target.source_address());
                let promoted = store.promoted_release(&target.service, &environment.name);
                match (current, promoted) {
                    (Ok(Some(current)), Ok(promoted))
                        if promoted.as_deref() != Some(&current)
                            && !store
                                .promotion_failed(&target.service, &environment.name, &current)
                                .unwrap_or(true) =>
                    {
                        current
                    }
                    _ => continue,
                }
            };
            let Ok(verdicts) = verdicts(dir, &target, &candidate, now_ms()).await else {
                continue;
            };
            if !gates::all_pass(&verdicts) {
                continue;
            }
            if let Ok(recorded) = record(dir, &stack, &target, &candidate, &verdicts, "kiln (auto)")
            {
                out.push((
                    recorded,
                    format!(
                        "kiln: promoting {} {} from {} to {} (every gate passed)",
                        target.service,
                        kiln_deploy::release::short(&candidate),
                        target.rule.from,
                        environment.name
                    ),
                ));
            }
        }
    }
    out
}

/// `kiln approve SERVICE --env ENV [--release R]`.
pub fn approve(dir: &Path, args: &ApproveArgs) -> Result<(), Failure> {
    let stack = ops::load_stack(dir)?;
    let target = target(&stack, &args.service, &args.env)?;
    let mut store = ops::open_store(dir)?;
    let release = release(&store, &target, args.release.as_deref())?;
    let approval = ApprovalRecord {
        service: target.service.clone(),
        environment: target.to.name.clone(),
        release: release.clone(),
        approved_by: ops::who(),
        approved_at: now_ms(),
    };
    store.record_approval(&approval)?;
    println!(
        "approved {} {} for {} ({})",
        target.service,
        kiln_deploy::release::short(&release),
        target.to.name,
        approval.approved_by
    );
    Ok(())
}

/// The release named (a digest or a prefix of its hex, among the source environment's), or
/// the one the source environment runs.
fn release(store: &Store, target: &Target<'_>, wanted: Option<&str>) -> Result<String, Failure> {
    let from = target.source_address();
    match wanted {
        Some(wanted) => crate::deploys::resolve_release(store, &from, wanted),
        None => crate::deploys::current_release(store, &from)?.ok_or_else(|| {
            Failure::Refused(format!(
                "error: nothing runs in {} yet for {}; deploy it there first",
                target.rule.from, target.service
            ))
        }),
    }
}

/// Every gate's verdict for promoting `release` to `target` at `now_ms`.
async fn verdicts(
    dir: &Path,
    target: &Target<'_>,
    release: &str,
    now_ms: i64,
) -> Result<Vec<Verdict>, Failure> {
    let from = target.source_address();
    let supervised = kiln_providers::supervisor_name(&from);
    let (instances, alerts) = observed(dir).await;
    let store = ops::open_store(dir)?;
    let deploys = store.deploys(Some(&from), RECORDS)?;
    let failed_deploys = deploys
        .iter()
        .filter(|d| d.deploy.to_release == release && d.deploy.result != "succeeded")
        .map(|d| format!("#{}", d.id))
        .collect();
    let serving = crate::deploys::current_release(&store, &from)?.map(|current| {
        let since_ms = deploys
            .iter()
            .find(|d| d.deploy.to_release == current && d.deploy.result == "succeeded")
            .and_then(|d| finished_ms(&d.deploy.started_at, d.deploy.duration_ms))
            .unwrap_or(now_ms);
        let mine: Vec<&serde_json::Value> = instances
            .iter()
            .filter(|i| i["service"].as_str() == Some(supervised.as_str()))
            .collect();
        Serving {
            release: current,
            since_ms,
            ready: mine.iter().filter(|i| i["state"] == "ready").count(),
            desired: mine.len(),
        }
    });
    let firing = alerts
        .iter()
        .filter(|a| a["state"] == "firing")
        .filter(|a| {
            let service = a["labels"]["service"].as_str();
            service == Some(supervised.as_str()) || service == Some(from.as_str())
        })
        .filter_map(|a| a["name"].as_str().map(str::to_owned))
        .collect();
    let runs = match &target.rule.pipeline {
        Some(pipeline) => runs(&store, &from, release, pipeline)?,
        None => Vec::new(),
    };
    let approvals = store
        .approvals(&target.service, &target.to.name, release)?
        .into_iter()
        .map(|a| ApprovalFact {
            by: a.approved_by,
            at_ms: a.approved_at,
        })
        .collect();
    Ok(gates::evaluate(&GateInput {
        rule: target.rule,
        release,
        now_ms,
        serving,
        failed_deploys,
        firing,
        runs,
        approvals,
    }))
}

/// The control plane's instances and alerts; nothing when it is not running (the healthy gate
/// then says that nothing serves).
async fn observed(dir: &Path) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let socket = crate::daemon::Paths::new(dir).socket;
    let list = |value: serde_json::Value, key: Option<&str>| {
        let value = match key {
            Some(key) => value[key].clone(),
            None => value,
        };
        value.as_array().cloned().unwrap_or_default()
    };
    let mut instances = Vec::new();
    let mut alerts = Vec::new();
    if let Some(stream) = client::connect(&socket).await
        && let Ok((200, value)) = client::request_json(stream, "GET", "/v1/services", None).await
    {
        instances = list(value, None);
    }
    if let Some(stream) = client::connect(&socket).await
        && let Ok((200, value)) = client::request_json(stream, "GET", "/v1/alerts", None).await
    {
        alerts = list(value, Some("alerts"));
    }
    (instances, alerts)
}

/// The runs of `pipeline` behind `release`: the one that built it (a pipeline artifact), else
/// those of its commit (a release made from a tree).
fn runs(
    store: &Store,
    address: &str,
    release: &str,
    pipeline: &str,
) -> Result<Vec<RunFact>, Failure> {
    let record = store
        .releases(address)?
        .into_iter()
        .find(|r| r.digest == release);
    let Some(record) = record else {
        return Ok(Vec::new());
    };
    let named = |run: &kiln_state::PipelineRun| {
        run.workflow == pipeline
            || Path::new(&run.workflow_path)
                .file_stem()
                .is_some_and(|s| s == pipeline)
    };
    let fact = |run: kiln_state::PipelineRun| RunFact {
        id: run.id,
        status: run.status,
    };
    if let Some(run_id) = record.run_id {
        return Ok(store
            .pipeline_run(run_id)?
            .filter(named)
            .map(fact)
            .into_iter()
            .collect());
    }
    let Some(commit) = record.commit else {
        return Ok(Vec::new());
    };
    Ok(store
        .pipeline_runs(RECORDS)?
        .into_iter()
        .filter(|run| named(run) && run.commit == commit)
        .map(fact)
        .collect())
}

fn print_verdicts(verdicts: &[Verdict]) {
    for v in verdicts {
        println!(
            "  {} {:<9} {}",
            if v.passed { "pass" } else { "FAIL" },
            v.gate.name(),
            v.reason
        );
    }
}

fn finished_ms(started_at: &str, duration_ms: u64) -> Option<i64> {
    let started: jiff::Timestamp = started_at.parse().ok()?;
    Some(started.as_millisecond() + i64::try_from(duration_ms).unwrap_or(0))
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}
