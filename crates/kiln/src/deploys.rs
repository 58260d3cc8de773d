//! Releases and deploys in the binary: the journal the service provider records them through
//! (over the state store), and the `kiln deploy`, `kiln rollback` and `kiln releases` commands.
//! Deploy and rollback are applies of one service with its `release_id` pinned, so they go through
//! the same plan → apply path (and the same lock and revision records) as everything else; the
//! next `kiln plan` shows what a later apply would undo. Blue-green sets kept for an instant
//! switch back are recorded here too (`StateKept`), so a restarted control plane takes them back.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kiln_engine::provider::{ProviderError, ProviderFuture};
use kiln_providers::{DeployEntry, DeployJournal, ReleaseEntry};
use kiln_state::{DeployRecord, NewDeploy, ReleaseRecord, Store};

use crate::ops::{self, Failure};

/// Records releases and deploys in the stack's state store.
#[derive(Debug, Clone)]
pub struct StateJournal {
    dir: PathBuf,
    /// What the apply under way was asked by (set by `ops::apply`).
    pub trigger: Arc<Mutex<String>>,
}

impl StateJournal {
    pub fn new(dir: &Path) -> StateJournal {
        StateJournal {
            dir: dir.to_path_buf(),
            trigger: Arc::new(Mutex::new(String::new())),
        }
    }
}

/// Records the blue-green sets the deployer keeps idle, in the stack's state store.
#[derive(Debug, Clone)]
pub struct StateKept {
    dir: PathBuf,
}

impl StateKept {
    pub fn new(dir: &Path) -> StateKept {
        StateKept {
            dir: dir.to_path_buf(),
        }
    }

    /// Runs `f` on the store on a blocking thread.
    fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, kiln_state::StateError> + Send + 'static,
    ) -> kiln_deploy::kept::KeptFuture<'_, T> {
        let dir = self.dir.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut store = Store::open_in_stack(&dir).map_err(|e| e.to_string())?;
                f(&mut store).map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())?
        })
    }
}

impl kiln_deploy::KeptStore for StateKept {
    fn save(
        &self,
        service: &str,
        sets: Vec<kiln_deploy::KeptSet>,
    ) -> kiln_deploy::kept::KeptFuture<'_, ()> {
        let service = service.to_owned();
        let records: Result<Vec<kiln_state::KeptSetRecord>, String> = sets
            .into_iter()
            .map(|kept| {
                Ok(kiln_state::KeptSetRecord {
                    service: kept.service.clone(),
                    set: kept.set.clone(),
                    record: serde_json::to_value(&kept).map_err(|e| e.to_string())?,
                })
            })
            .collect();
        match records {
            Ok(records) => self.with_store(move |store| store.save_kept_sets(&service, &records)),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn load(&self) -> kiln_deploy::kept::KeptFuture<'_, Vec<kiln_deploy::KeptSet>> {
        let loading = self.with_store(|store| store.kept_sets());
        Box::pin(async move {
            loading
                .await?
                .into_iter()
                .map(|row| {
                    serde_json::from_value(row.record)
                        .map_err(|e| format!("the kept set {} cannot be read: {e}", row.set))
                })
                .collect()
        })
    }
}

fn store_failure(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Failed {
        message: format!("cannot record in the state store: {e}"),
    }
}

fn timestamp(at: std::time::SystemTime) -> String {
    jiff::Timestamp::try_from(at).map_or_else(|_| String::new(), |t| format!("{t:.6}"))
}

/// The commit the tree under `dir` is at, when it is in a git repository.
fn git_head(dir: &Path) -> Option<String> {
    git_line(dir, &["rev-parse", "HEAD"])
}

/// When `commit` was made (its committer date, RFC 3339), from the stack's repository: the
/// start of DORA's lead time for changes, kept with the release.
fn commit_time(dir: &Path, commit: &str) -> Option<String> {
    git_line(dir, &["show", "-s", "--format=%cI", commit, "--"])
}

/// `git -C dir ARGS`'s trimmed output, when it succeeds with some.
fn git_line(dir: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

impl DeployJournal for StateJournal {
    fn release(&self, entry: ReleaseEntry) -> ProviderFuture<'_, ()> {
        let dir = self.dir.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let sidecar = dir.join(".kiln/releases").join(format!(
                    "{}.source.json",
                    kiln_deploy::release::hex_of(&entry.digest)
                ));
                let built: Option<ArtifactSource> = std::fs::read(&sidecar)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok());
                let (source, commit, run_id) = match built {
                    Some(b) => (b.source, Some(b.commit), Some(b.run_id)),
                    None => {
                        let source_dir = dir.join(entry.source.trim_start_matches("path:"));
                        (entry.source, git_head(&source_dir), None)
                    }
                };
                let committed_at = commit.as_deref().and_then(|c| commit_time(&dir, c));
                let mut store = Store::open_in_stack(&dir).map_err(store_failure)?;
                store
                    .record_release(&ReleaseRecord {
                        service: entry.service,
                        digest: entry.digest,
                        created_at: timestamp(std::time::SystemTime::now()),
                        source,
                        commit,
                        run_id,
                        committed_at,
                        files: entry.files,
                        bytes: entry.bytes,
                    })
                    .map_err(store_failure)
            })
            .await
            .map_err(store_failure)?
        })
    }

    fn deploy(&self, entry: DeployEntry) -> ProviderFuture<'_, ()> {
        let dir = self.dir.clone();
        let trigger = self.trigger.lock().map(|t| t.clone()).unwrap_or_default();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut store = Store::open_in_stack(&dir).map_err(store_failure)?;
                let known = store.releases(&entry.service).map_err(store_failure)?;
                let expand = |short: &str| {
                    known
                        .iter()
                        .find(|r| kiln_deploy::release::hex_of(&r.digest).starts_with(short))
                        .map_or_else(|| short.to_owned(), |r| r.digest.clone())
                };
                let from: Vec<String> = entry.from_releases.iter().map(|s| expand(s)).collect();
                let report = &entry.report;
                let (result, reason) = match &report.result {
                    kiln_deploy::DeployResult::Succeeded => ("succeeded", None),
                    kiln_deploy::DeployResult::Failed { reason } => ("failed", Some(reason)),
                    kiln_deploy::DeployResult::RolledBack { reason } => {
                        ("rolled-back", Some(reason))
                    }
                };
                let trigger = if trigger.is_empty() {
                    "apply".to_owned()
                } else {
                    trigger
                };
                let record = NewDeploy {
                    service: entry.service.clone(),
                    from_release: from.first().cloned(),
                    to_release: entry.to_release.clone(),
                    strategy: report.strategy.clone(),
                    trigger,
                    user: ops::who(),
                    started_at: timestamp(entry.started_at),
                    duration_ms: u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
                    result: result.into(),
                    detail: serde_json::json!({
                        "set": report.set,
                        "previous_sets": report.previous,
                        "steps": report.steps,
                        "reason": reason,
                    }),
                };
                store.record_deploy(&record).map_err(store_failure)?;
                let short = kiln_deploy::release::short(&entry.to_release);
                let message = match reason {
                    None => format!(
                        "deployed release {short} ({}, {} ms)",
                        report.strategy,
                        report.duration.as_millis()
                    ),
                    Some(reason) => format!("deploy of release {short} {result}: {reason}"),
                };
                // The trigger tells a rollback from a deploy, and the user who asked for it
                // (incident timelines use both).
                let mut data = record.detail;
                if let Some(fields) = data.as_object_mut() {
                    fields.insert("trigger".into(), record.trigger.clone().into());
                    fields.insert("user".into(), record.user.clone().into());
                }
                store
                    .append_event(&kiln_state::NewEvent {
                        kind: format!("deploy.{}", result.replace('-', "_")),
                        address: Some(entry.service),
                        serial: None,
                        message,
                        data,
                    })
                    .map_err(store_failure)?;
                Ok(())
            })
            .await
            .map_err(store_failure)?
        })
    }
}

/// Where a release made from a pipeline artifact says it came from (`<hex>.source.json`
/// beside its directory).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ArtifactSource {
    pub source: String,
    pub run_id: u64,
    pub commit: String,
}

/// The release made of `artifact` from the newest successful run of `pipeline` (a workflow's
/// name or its file's stem): the artifact's files are copied under `.kiln/releases/<hex>/`
/// once (build once, deploy that), and its digest returned.
pub fn artifact_release(
    stack_dir: &Path,
    pipeline: &str,
    artifact: &str,
) -> Result<String, String> {
    let kiln_dir = stack_dir.join(".kiln");
    if !kiln_dir.join("state.db").exists() {
        return Err("no pipeline run is recorded for this stack yet".into());
    }
    let store = Store::open_in_stack(stack_dir).map_err(|e| e.to_string())?;
    let runs = store.pipeline_runs(1000).map_err(|e| e.to_string())?;
    let named = |run: &kiln_state::PipelineRun| {
        run.workflow == pipeline
            || Path::new(&run.workflow_path)
                .file_stem()
                .is_some_and(|s| s == pipeline)
    };
    let artifacts = kiln_dir.join("artifacts");
    let releases = kiln_dir.join("releases");
    let Some(run) = runs.iter().find(|run| {
        run.status == "success"
            && named(run)
            && artifacts
                .join("runs")
                .join(run.id.to_string())
                .join(format!("{artifact}.json"))
                .exists()
    }) else {
        let any = runs.iter().any(named);
        return Err(if any {
            format!("no successful run of `{pipeline}` uploaded an artifact named `{artifact}`")
        } else {
            format!("`{pipeline}` has never run here")
        });
    };
    let seen = releases
        .join(".artifacts")
        .join(format!("{}-{artifact}", run.id));
    if let Ok(digest) = std::fs::read_to_string(&seen)
        && kiln_deploy::release::existing(&releases, digest.trim()).is_ok()
    {
        return Ok(digest.trim().to_owned());
    }
    let io = |e: std::io::Error| e.to_string();
    std::fs::create_dir_all(seen.parent().unwrap_or(&releases)).map_err(io)?;
    // One staging directory per load: the control plane loads the stack from several tasks
    // at once, and a shared one was emptied under a concurrent load's feet.
    let staging = releases.join(format!(
        ".staging-artifact-{}-{}",
        std::process::id(),
        STAGING_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&staging);
    kiln_pipelines::download_artifact(&artifacts, run.id, artifact, &staging)?;
    let made = kiln_deploy::release::snapshot(&staging, &releases, None).map_err(|e| e.to_string());
    let _ = std::fs::remove_dir_all(&staging);
    let made = made?;
    let source = ArtifactSource {
        source: format!("pipeline:{pipeline}/{artifact}"),
        run_id: run.id,
        commit: run.commit.clone(),
    };
    let sidecar = releases.join(format!("{}.source.json", made.tree.hex()));
    write_replacing(&sidecar, &serde_json::to_vec(&source).unwrap_or_default()).map_err(io)?;
    write_replacing(&seen, made.tree.digest.as_bytes()).map_err(io)?;
    Ok(made.tree.digest)
}

/// Tells apart the staging directories and temporary files of concurrent loads in one process.
static STAGING_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Writes `path` whole or not at all (a temporary file renamed over it), so that a concurrent
/// reader never sees half of it.
fn write_replacing(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        STAGING_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

/// `api` → `services.api`, `api.staging` (the supervisor's name of `api` in environment
/// `staging`) → `environments.staging.services.api`; addresses pass through.
pub fn service_address(service: &str) -> String {
    const HEADS: &[&str] = &["services", "resources", "routes", "modules", "environments"];
    match service.split_once('.') {
        None => format!("services.{service}"),
        Some((name, environment))
            if !HEADS.contains(&name) && !environment.contains('.') && !environment.is_empty() =>
        {
            format!("environments.{environment}.services.{name}")
        }
        Some(_) => service.to_owned(),
    }
}

/// Finds a release of `service` by digest or a prefix of its hex (at least 4 digits).
pub fn resolve_release(store: &Store, service: &str, wanted: &str) -> Result<String, Failure> {
    let releases = store.releases(service)?;
    let hex = kiln_deploy::release::hex_of(wanted);
    if hex.len() < 4 {
        return Err(Failure::Invalid(format!(
            "error: `{wanted}` is too short to name a release; give at least 4 hex digits (see `kiln releases {service}`)"
        )));
    }
    let matches: Vec<&ReleaseRecord> = releases
        .iter()
        .filter(|r| kiln_deploy::release::hex_of(&r.digest).starts_with(hex))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.digest.clone()),
        [] => Err(Failure::Invalid(format!(
            "error: {service} has no release `{wanted}`; `kiln releases {service}` lists them"
        ))),
        _ => Err(Failure::Invalid(format!(
            "error: `{wanted}` names {} releases of {service}; give more digits",
            matches.len()
        ))),
    }
}

/// The release `service` runs according to the state.
pub fn current_release(store: &Store, service: &str) -> Result<Option<String>, Failure> {
    Ok(store.resource(service)?.and_then(|r| {
        r.attributes
            .get("release_id")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    }))
}

/// The release before the current one: where the last successful deploy *forward* to the
/// current release came from, else the newest older release.
///
/// A deploy that moved to an older release (a rollback) does not count: after rolling back
/// from a bad release, rolling back again must go further back, never to the bad release.
pub fn previous_release(store: &Store, service: &str) -> Result<String, Failure> {
    let current = current_release(store, service)?.ok_or_else(|| {
        Failure::Refused(format!(
            "error: {service} has not been deployed yet, so there is nothing to roll back"
        ))
    })?;
    if current == kiln_providers::TREE_RELEASE {
        return Err(Failure::Refused(format!(
            "error: {service} has no `path:`, so it runs from the stack directory and kiln keeps no releases of it; give it `path:` (its own directory) to get releases and rollbacks"
        )));
    }
    let releases: Vec<String> = store
        .releases(service)?
        .into_iter()
        .map(|r| r.digest)
        .collect();
    let deploys: Vec<(Option<String>, String)> = store
        .deploys(Some(service), 200)?
        .into_iter()
        .filter(|d| d.deploy.result == "succeeded")
        .map(|d| (d.deploy.from_release, d.deploy.to_release))
        .collect();
    release_before(&current, &releases, &deploys).ok_or_else(|| {
        Failure::Refused(format!(
            "error: {service} has no release older than {} to roll back to",
            kiln_deploy::release::short(&current)
        ))
    })
}

/// The release to roll `current` back to, given the releases newest first and the
/// successful deploys (from, to) newest first.
fn release_before(
    current: &str,
    releases: &[String],
    deploys: &[(Option<String>, String)],
) -> Option<String> {
    let age = |digest: &str| releases.iter().position(|r| r == digest);
    let position = age(current)?;
    let older = |digest: &str| age(digest).is_some_and(|other| other > position);
    deploys
        .iter()
        .filter(|(_, to)| to == current)
        .filter_map(|(from, _)| from.as_deref())
        .find(|from| older(from))
        .or_else(|| releases.get(position + 1).map(String::as_str))
        .map(str::to_owned)
}

/// `kiln releases SERVICE`.
pub fn list(dir: &Path, service: &str, json: bool) -> Result<(), Failure> {
    let address = service_address(service);
    let store = ops::open_store(dir)?;
    let releases = store.releases(&address)?;
    let deploys = store.deploys(Some(&address), if json { 1000 } else { 20 })?;
    let current = current_release(&store, &address)?;
    let releases_dir = dir.join(".kiln").join("releases");
    let on_disk = |digest: &str| {
        releases_dir
            .join(kiln_deploy::release::hex_of(digest))
            .is_dir()
    };
    if json {
        let listed: Vec<serde_json::Value> = releases
            .iter()
            .map(|r| {
                let mut value = serde_json::json!(r);
                value["on_disk"] = on_disk(&r.digest).into();
                value
            })
            .collect();
        let value = serde_json::json!({
            "service": address,
            "current": current,
            "releases": listed,
            "deploys": deploys,
        });
        println!("{value:#}");
        return Ok(());
    }
    if releases.is_empty() {
        println!(
            "{address} has no releases yet: `kiln apply` (or `kiln deploy {service}`) makes the first"
        );
        return Ok(());
    }
    println!(
        "RELEASE       CREATED                      SOURCE        COMMIT        FILES        SIZE"
    );
    for r in &releases {
        let marker = if current.as_deref() == Some(r.digest.as_str()) {
            "  ← running"
        } else if !on_disk(&r.digest) {
            "  (files removed)"
        } else {
            ""
        };
        println!(
            "{:<13} {:<28} {:<13} {:<13} {:>5} {:>11}{marker}",
            kiln_deploy::release::short(&r.digest),
            r.created_at,
            r.source,
            r.commit
                .as_deref()
                .map_or("-", |c| c.get(..12).unwrap_or(c)),
            r.files,
            human_bytes(r.bytes),
        );
    }
    if !deploys.is_empty() {
        println!(
            "\nDEPLOY  STARTED                      FROM          TO            STRATEGY     TRIGGER   RESULT       DURATION  USER"
        );
        for d in &deploys {
            print_deploy(d);
        }
    }
    Ok(())
}

fn print_deploy(d: &DeployRecord) {
    let deploy = &d.deploy;
    println!(
        "{:>6}  {:<28} {:<13} {:<13} {:<12} {:<9} {:<12} {:>6} ms  {}",
        d.id,
        deploy.started_at,
        deploy
            .from_release
            .as_deref()
            .map_or("-", kiln_deploy::release::short),
        kiln_deploy::release::short(&deploy.to_release),
        deploy.strategy,
        deploy.trigger,
        deploy.result,
        deploy.duration_ms,
        deploy.user
    );
    if let Some(reason) = deploy.detail.get("reason").and_then(|r| r.as_str()) {
        println!("        reason: {reason}");
    }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::{artifact_release, release_before};

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn deploy(from: Option<&str>, to: &str) -> (Option<String>, String) {
        (from.map(str::to_owned), to.to_owned())
    }

    #[test]
    fn a_rollback_goes_where_the_current_release_came_from() {
        let releases = names(&["v3", "v2", "v1"]);
        // v1 → v3 directly (v2 was built but never deployed).
        let deploys = [deploy(Some("v1"), "v3"), deploy(None, "v1")];
        assert_eq!(
            release_before("v3", &releases, &deploys).as_deref(),
            Some("v1")
        );
    }

    #[test]
    fn a_second_rollback_goes_further_back_not_to_the_bad_release() {
        let releases = names(&["v3", "v2", "v1"]);
        // v1 → v2 → v3 (bad), then rolled back v3 → v2.
        let deploys = [
            deploy(Some("v3"), "v2"),
            deploy(Some("v2"), "v3"),
            deploy(Some("v1"), "v2"),
            deploy(None, "v1"),
        ];
        assert_eq!(
            release_before("v2", &releases, &deploys).as_deref(),
            Some("v1")
        );
        // And from the oldest release there is nowhere to go.
        assert_eq!(release_before("v1", &releases, &deploys), None);
    }

    #[test]
    fn without_a_deploy_to_it_the_newest_older_release_is_chosen() {
        let releases = names(&["v3", "v2", "v1"]);
        assert_eq!(release_before("v3", &releases, &[]).as_deref(), Some("v2"));
        assert_eq!(release_before("unknown", &releases, &[]), None);
    }

    /// The control plane loads the stack from several tasks at once (a push's deploys, the
    /// promotion loop, convergence), and each load turns a pipeline's artifact into a release
    /// the first time it sees it: concurrent first sights must all get the release.
    #[test]
    fn concurrent_loads_make_one_release_of_an_artifact() {
        let stack = tempfile::tempdir().unwrap();
        let artifacts = stack.path().join(".kiln/artifacts");
        std::fs::create_dir_all(artifacts.join("blobs")).unwrap();
        std::fs::create_dir_all(artifacts.join("runs/1")).unwrap();
        let mut manifest = serde_json::Map::new();
        for n in 0..40 {
            let blob = format!("blob{n}");
            std::fs::write(artifacts.join("blobs").join(&blob), format!("file {n}\n")).unwrap();
            manifest.insert(format!("lib/file{n}.js"), blob.into());
        }
        std::fs::write(
            artifacts.join("runs/1/api.json"),
            serde_json::Value::Object(manifest).to_string(),
        )
        .unwrap();
        let mut store = kiln_state::Store::open_in_stack(stack.path()).unwrap();
        let run = store
            .begin_pipeline_run(&kiln_state::NewPipelineRun {
                workflow: "ci".into(),
                workflow_path: ".github/workflows/ci.yml".into(),
                event: "push".into(),
                rev: "HEAD".into(),
                commit: "c0ffee".into(),
                pid: std::process::id(),
            })
            .unwrap();
        store
            .finish_pipeline_run(run, "success", &serde_json::json!({}))
            .unwrap();
        let loads: Vec<_> = (0..6)
            .map(|_| {
                let dir = stack.path().to_path_buf();
                std::thread::spawn(move || artifact_release(&dir, "ci", "api"))
            })
            .collect();
        let digests: Vec<Result<String, String>> =
            loads.into_iter().map(|t| t.join().unwrap()).collect();
        let first = digests[0].clone().unwrap();
        for digest in &digests {
            assert_eq!(digest.as_ref(), Ok(&first), "{digests:?}");
        }
    }
}
