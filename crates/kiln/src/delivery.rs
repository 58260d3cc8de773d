//! Continuous delivery in the control plane: the stack's `source:` is followed, and every new
//! head of a followed branch runs the workflows whose `on.push` filters match; a green run
//! deploys the services whose `release:` names its artifact (trigger `push`).
//!
//! Where pushes come from: a poller (`git ls-remote` every `source.poll`), the `post-receive`
//! hook kiln installs in a local bare repository (`kiln notify-push` → `POST /v1/push` on the
//! control plane's socket), and GitHub webhooks (`hooks.rs`). All of them send to one actor,
//! [`run_actor`], which owns the queue (pushes of one branch collapse to the newest,
//! `kiln_delivery::queue`), the heads already taken, the webhook delivery ids seen, and runs
//! one push at a time. Deploys go to the controller as applies, like `kiln deploy`.
//!
//! Every push received and what it triggered is an event (`push.received`, `push.superseded`,
//! `push.finished`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_delivery::Push;
use kiln_delivery::queue::{PushQueue, Waiting};
use kiln_delivery::webhook::SeenDeliveries;
use kiln_spec::model::ChangeSource;
use tokio::sync::{mpsc, oneshot};

use crate::ops::{self, ApplyRequest, Event, Failure, Outcome, Selection};

/// Where the heads already taken are kept, so a restart neither re-runs nor misses a push.
const HEADS_FILE: &str = "delivery/heads.json";
/// Where fetched heads of another repository are kept in the stack's repository, so their
/// commits are there for `git archive` and `actions/checkout` (and safe from `git gc`).
const FETCH_REFS: &str = "refs/kiln/source";
/// How long `git ls-remote` may take: a remote that hangs must not stall `kiln up` or the
/// poller for good.
const LS_REMOTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How many webhook delivery ids are remembered for de-duplication.
const SEEN_DELIVERIES: usize = 4_096;

/// Asks the controller for an apply (it is the one writer) and waits for its outcome.
pub type ApplyFn = Arc<
    dyn Fn(ApplyRequest) -> oneshot::Receiver<Result<Outcome, Failure>> + Send + Sync + 'static,
>;

/// What the sources of change tell the actor.
#[derive(Debug)]
pub enum Message {
    /// A new head (from the poller or the hook).
    Push(Push),
    /// A verified webhook push; the reply says whether its delivery id was new.
    Webhook {
        delivery: Option<String>,
        push: Push,
        reply: oneshot::Sender<bool>,
    },
}

/// Sends pushes to the delivery actor.
#[derive(Debug, Clone)]
pub struct DeliveryHandle {
    tx: mpsc::Sender<Message>,
}

impl DeliveryHandle {
    /// Hands a push over; false when the actor is gone.
    pub async fn push(&self, push: Push) -> bool {
        self.tx.send(Message::Push(push)).await.is_ok()
    }

    /// Hands a verified webhook push over; `Some(false)` for a delivery id seen before.
    pub async fn webhook(&self, delivery: Option<String>, push: Push) -> Option<bool> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Message::Webhook {
                delivery,
                push,
                reply,
            })
            .await
            .ok()?;
        answer.await.ok()
    }
}

/// The repository `source.repo` names: a local directory or a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repo {
    /// The stack's own repository.
    Own,
    /// Another repository on this machine (often a bare one pushed to).
    Local(PathBuf),
    /// A remote, polled with `git ls-remote`.
    Remote(String),
}

impl Repo {
    /// Reads `source.repo` relative to the stack's directory.
    pub fn resolve(dir: &Path, repo: &str) -> Repo {
        if repo == "." {
            Repo::Own
        } else if repo.contains("://") || (repo.contains('@') && repo.contains(':')) {
            Repo::Remote(repo.to_owned())
        } else {
            Repo::Local(dir.join(repo))
        }
    }

    /// What git commands are given to reach it.
    fn location(&self, dir: &Path) -> String {
        match self {
            Repo::Own => dir.display().to_string(),
            Repo::Local(path) => path.display().to_string(),
            Repo::Remote(url) => url.clone(),
        }
    }
}

/// Starts following `source`: the actor, and the poller when `source.poll` is set.
pub async fn start(
    dir: &Path,
    source: &ChangeSource,
    apply: ApplyFn,
    announce: Arc<dyn Fn(&Event) + Send + Sync>,
) -> DeliveryHandle {
    let repo = Repo::resolve(dir, &source.repo);
    let mut heads = load_heads(dir);
    let current = ls_remote(dir, &repo, &source.branches)
        .await
        .unwrap_or_default();
    for branch in &source.branches {
        let git_ref = format!("refs/heads/{branch}");
        // First time a branch is followed: what it holds now is what the first apply built.
        if let (false, Some(head)) = (heads.contains_key(&git_ref), current.get(&git_ref)) {
            heads.insert(git_ref, head.clone());
        }
    }
    save_heads(dir, &heads);
    let (tx, rx) = mpsc::channel(256);
    let handle = DeliveryHandle { tx };
    if let Some(poll_ms) = source.poll_ms {
        tokio::spawn(poll(
            dir.to_path_buf(),
            repo.clone(),
            source.branches.clone(),
            heads.clone(),
            std::time::Duration::from_millis(poll_ms),
            handle.clone(),
        ));
    }
    let follower = Follower {
        dir: dir.to_path_buf(),
        repo,
        branches: source.branches.clone(),
        apply,
        announce,
    };
    tokio::spawn(run_actor(follower, heads, rx));
    handle
}

/// What a push run needs to know; shared by the actor and the task running one push.
#[derive(Clone)]
struct Follower {
    dir: PathBuf,
    repo: Repo,
    branches: Vec<String>,
    apply: ApplyFn,
    announce: Arc<dyn Fn(&Event) + Send + Sync>,
}

/// The actor: owns the queue, the heads taken and the delivery ids seen; runs one push at a
/// time. Ends when every handle is dropped.
async fn run_actor(
    follower: Follower,
    mut heads: BTreeMap<String, String>,
    mut inbox: mpsc::Receiver<Message>,
) {
    let mut queue = PushQueue::default();
    let mut seen = SeenDeliveries::new(SEEN_DELIVERIES);
    let mut running: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            message = inbox.recv() => {
                let push = match message {
                    None => break,
                    Some(Message::Push(push)) => push,
                    Some(Message::Webhook { delivery, push, reply }) => {
                        let new = delivery.as_deref().is_none_or(|id| seen.first_time(id));
                        let _ = reply.send(new);
                        if !new {
                            continue;
                        }
                        push
                    }
                };
                follower.receive(push, &heads, &mut queue);
            }
            _ = async { if let Some(task) = running.as_mut() { let _ = task.await; } }, if running.is_some() => {
                running = None;
            }
        }
        if running.is_none()
            && let Some(waiting) = queue.take()
        {
            heads.insert(waiting.push.git_ref.clone(), waiting.push.after.clone());
            save_heads(&follower.dir, &heads);
            let follower = follower.clone();
            running = Some(tokio::spawn(async move { follower.deliver(waiting).await }));
        }
    }
    if let Some(task) = running {
        task.abort();
    }
}

impl Follower {
    fn note(&self, message: String) {
        (self.announce)(&Event::Note { message });
    }

    /// Queues a push of a followed branch that is not already taken; records it either way.
    fn receive(&self, push: Push, heads: &BTreeMap<String, String>, queue: &mut PushQueue) {
        let branch = push.branch().unwrap_or(&push.git_ref).to_owned();
        let followed = self.branches.contains(&branch);
        let known = heads.get(&push.git_ref) == Some(&push.after);
        let head = short(&push.after);
        let (kind, message) = if !followed {
            (
                "push.ignored",
                format!(
                    "push to {branch} ({head}) from {}: the branch is not followed",
                    push.source
                ),
            )
        } else if known {
            (
                "push.ignored",
                format!(
                    "push to {branch} ({head}) from {}: already taken",
                    push.source
                ),
            )
        } else {
            (
                "push.received",
                format!("push to {branch}: {head} from {}", push.source),
            )
        };
        self.record(kind, &message, push_data(&push));
        if kind != "push.received" {
            return;
        }
        self.note(format!("kiln: {message}"));
        if let Some(replaced) = queue.offer(push.clone()) {
            self.record(
                "push.superseded",
                &format!(
                    "{branch}: {} waits no more, {head} is newer",
                    short(&replaced)
                ),
                serde_json::json!({ "branch": branch, "superseded": replaced, "by": push.after }),
            );
        }
    }

    fn record(&self, kind: &str, message: &str, data: serde_json::Value) {
        if let Ok(mut store) = ops::open_store(&self.dir) {
            let _ = store.append_event(&kiln_state::NewEvent {
                kind: kind.into(),
                address: Some("source".into()),
                serial: None,
                message: message.into(),
                data,
            });
        }
    }

    /// Runs the workflows a push triggers, then deploys what their green runs released.
    async fn deliver(&self, waiting: Waiting) {
        let push = waiting.push;
        let dir = self.dir.clone();
        let repo = self.repo.clone();
        let prepared = {
            let push = push.clone();
            tokio::task::spawn_blocking(move || prepare(&dir, &repo, &push)).await
        };
        let (changed, workflows) = match prepared {
            Ok(Ok(found)) => found,
            Ok(Err(why)) => return self.finished(&push, &[], &[], Some(why)),
            Err(e) => return self.finished(&push, &[], &[], Some(e.to_string())),
        };
        let facts = crate::ci::PushFacts::read(&self.dir, &push.after).await;
        let (to_run, mut runs) = match runs_of(&push, &changed, &facts.head.message, workflows) {
            Ok(planned) => planned,
            Err((skipped, why)) => return self.finished(&push, &skipped, &[], Some(why)),
        };
        let mut deployed = Vec::new();
        for (rel, set) in to_run {
            let name = set.root.name.clone().unwrap_or_else(|| rel.clone());
            let request = crate::ci::RunRequest {
                rel: rel.clone(),
                event: "push".into(),
                rev: format!("{}:{}", push.source, push.branch().unwrap_or(&push.git_ref)),
                sha: push.after.clone(),
                git_ref: push.git_ref.clone(),
                payload: crate::ci::push_payload(
                    &facts,
                    &push.git_ref,
                    push.before.as_deref(),
                    &push.after,
                    &changed,
                ),
                repository: facts.repository.clone(),
                inputs: Default::default(),
                vars: Default::default(),
                secrets: Default::default(),
                runner_labels: Vec::new(),
                keep_workspace: false,
                echo: false,
            };
            self.note(format!(
                "kiln: running {name} for {} at {}",
                push.branch().unwrap_or(&push.git_ref),
                short(&push.after)
            ));
            match crate::ci::execute(&self.dir, set, request).await {
                Ok(run_id) => {
                    self.note(format!("kiln: run {run_id} ({name}) succeeded"));
                    let (done, not_deployed) = self.deploy_released(&rel, &name, run_id).await;
                    deployed.extend(done);
                    runs.push(serde_json::json!({
                        "workflow": rel, "run": run_id, "status": "success",
                        "not_deployed": not_deployed,
                    }));
                }
                Err(failure) => {
                    let message = failure.message().to_owned();
                    self.note(format!(
                        "kiln: {name} did not succeed; nothing deploys: {message}"
                    ));
                    runs.push(serde_json::json!({ "workflow": rel, "status": "failure", "error": message }));
                }
            }
        }
        self.finished(&push, &runs, &deployed, None);
    }

    /// Deploys (an apply of each, trigger `push`) the services whose `release:` comes from
    /// this workflow and an artifact this run uploaded. Returns what it deployed, and why
    /// each service released from this workflow was not (recorded with the push, so a green
    /// push that deploys nothing says why).
    async fn deploy_released(
        &self,
        rel: &str,
        name: &str,
        run_id: u64,
    ) -> (Vec<serde_json::Value>, Vec<String>) {
        let services = match ops::load_stack(&self.dir) {
            Ok(stack) => released_services(&stack, rel, name),
            Err(failure) => {
                self.note(format!(
                    "kiln: run {run_id} succeeded but the stack does not load, so nothing deploys:\n{}",
                    failure.message()
                ));
                return (
                    Vec::new(),
                    vec![format!("the stack does not load: {}", failure.message())],
                );
            }
        };
        let mut not_deployed = Vec::new();
        let artifacts = self
            .dir
            .join(".kiln/artifacts/runs")
            .join(run_id.to_string());
        let mut out = Vec::new();
        for (address, artifact) in services {
            if !artifacts.join(format!("{artifact}.json")).exists() {
                not_deployed.push(format!(
                    "{address}: run {run_id} uploaded no artifact `{artifact}`"
                ));
                continue;
            }
            let request = ApplyRequest {
                select: Selection {
                    targets: vec![address.clone()],
                    only: true,
                    ..Selection::default()
                },
                parallelism: 10,
                trigger: "push".into(),
                ..ApplyRequest::default()
            };
            let result = match (self.apply)(request).await {
                Ok(Ok(outcome)) if outcome.report.succeeded() => "deployed",
                Ok(Ok(_)) => "failed",
                Ok(Err(failure)) => {
                    self.note(format!(
                        "kiln: deploying {address} failed: {}",
                        failure.message()
                    ));
                    "failed"
                }
                Err(_) => "control plane stopped",
            };
            self.note(format!(
                "kiln: {address}: {result} (run {run_id}, artifact {artifact})"
            ));
            out.push(serde_json::json!({ "service": address, "result": result }));
        }
        (out, not_deployed)
    }

    fn finished(
        &self,
        push: &Push,
        runs: &[serde_json::Value],
        deployed: &[serde_json::Value],
        error: Option<String>,
    ) {
        let branch = push.branch().unwrap_or(&push.git_ref);
        let message = match &error {
            Some(why) => format!("push to {branch} ({}) not run: {why}", short(&push.after)),
            None => format!(
                "push to {branch} ({}): {} workflow{} run, {} deploy{}",
                short(&push.after),
                runs.iter().filter(|r| r.get("skipped").is_none()).count(),
                if runs.len() == 1 { "" } else { "s" },
                deployed.len(),
                if deployed.len() == 1 { "" } else { "s" },
            ),
        };
        if let Some(why) = &error {
            self.note(format!("kiln: {message}: {why}"));
        }
        let mut data = push_data(push);
        data["runs"] = serde_json::Value::Array(runs.to_vec());
        data["deployed"] = serde_json::Value::Array(deployed.to_vec());
        data["error"] = error.map_or(serde_json::Value::Null, serde_json::Value::String);
        self.record("push.finished", &message, data);
    }
}

/// The workflows a push runs, and the records of those its filters skip.
type Planned = (
    Vec<(String, kiln_pipelines::WorkflowSet)>,
    Vec<serde_json::Value>,
);

/// The records of the skipped workflows, and why the push runs nothing.
type Refusal = (Vec<serde_json::Value>, String);

/// The workflows a push runs (its `on.push` filters match, and its head commit's `message`
/// does not ask GitHub to skip them with `[skip ci]` or the like) and the records of those it
/// skips. A push is refused before anything runs when a workflow it would run has a job kiln cannot
/// run on the host (`services`, `container`, remote actions): running the others and failing
/// that one half-way would deploy a commit whose pipeline never ran whole. The refusal says
/// what `kiln ci validate` says of it.
fn runs_of(
    push: &Push,
    changed: &crate::ci::Changes,
    message: &str,
    workflows: Vec<(String, kiln_pipelines::WorkflowSet)>,
) -> Result<Planned, Refusal> {
    let skip_marker = kiln_pipelines::commit_skips_workflows(message);
    let paths = changed.paths();
    let git_push = kiln_pipelines::filter::Push {
        git_ref: &push.git_ref,
        changed: &paths,
    };
    let mut to_run = Vec::new();
    let mut skipped = Vec::new();
    for (rel, set) in workflows {
        let verdict = match skip_marker {
            Some(marker) if set.root.on.contains_key("push") => {
                Err(format!("the head commit's message has {marker}"))
            }
            _ => kiln_pipelines::filter::push_runs(&set.root.on, &git_push)
                .map_err(|skip| skip.to_string()),
        };
        match verdict {
            Ok(()) => to_run.push((rel, set)),
            Err(skip) => skipped.push(serde_json::json!({ "workflow": rel, "skipped": skip })),
        }
    }
    let refusals: Vec<String> = to_run
        .iter()
        .map(|(_, set)| crate::ci::refused_report(set))
        .filter(|report| !report.is_empty())
        .collect();
    if refusals.is_empty() {
        return Ok((to_run, skipped));
    }
    let names: Vec<&str> = to_run
        .iter()
        .filter(|(_, set)| !set.refused().is_empty())
        .map(|(rel, _)| rel.as_str())
        .collect();
    Err((
        skipped,
        format!(
            "{} {} what kiln cannot run on the host, so nothing ran (`kiln ci validate` reports it):\n{}",
            names.join(", "),
            if names.len() == 1 { "needs" } else { "need" },
            refusals.concat().trim_end()
        ),
    ))
}

fn push_data(push: &Push) -> serde_json::Value {
    serde_json::json!({
        "branch": push.branch().unwrap_or(&push.git_ref),
        "ref": push.git_ref,
        "before": push.before,
        "after": push.after,
        "source": push.source,
    })
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// The services whose `release: { pipeline, artifact }` names this workflow (by `name:` or
/// file stem), with their artifact; with environments, only those of environments that take
/// new releases by themselves (`deploy: { auto: true }`; the others get them by promotion).
fn released_services(
    stack: &kiln_spec::model::Stack,
    rel: &str,
    name: &str,
) -> Vec<(String, String)> {
    let stem = Path::new(rel)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    stack
        .resources
        .values()
        .filter(|resource| stack.deploys_new_releases(&resource.address))
        .filter_map(|resource| {
            let kiln_spec::model::ValueKind::Literal(serde_json::Value::Object(release)) =
                &resource.attrs.get("release")?.kind
            else {
                return None;
            };
            let pipeline = release.get("pipeline")?.as_str()?;
            let artifact = release.get("artifact")?.as_str()?;
            (pipeline == name || pipeline == stem)
                .then(|| (resource.address.clone(), artifact.to_owned()))
        })
        .collect()
}

/// A push's changed files, and its workflows (file, loaded) as committed.
type Prepared = (
    crate::ci::Changes,
    Vec<(String, kiln_pipelines::WorkflowSet)>,
);

/// Fetches the push's commit into the stack's repository when it lives elsewhere, and finds
/// its changed files and the workflows as committed there.
fn prepare(dir: &Path, repo: &Repo, push: &Push) -> Result<Prepared, String> {
    if *repo != Repo::Own {
        let branch = push.branch().unwrap_or("head");
        let refspec = format!("+{}:{FETCH_REFS}/{branch}", push.git_ref);
        crate::ci::git(
            dir,
            &[
                "fetch",
                "--no-tags",
                "--quiet",
                &repo.location(dir),
                &refspec,
            ],
        )
        .ok_or_else(|| format!("cannot fetch {} from {}", push.git_ref, repo.location(dir)))?;
    }
    let commit = format!("{}^{{commit}}", push.after);
    crate::ci::git(dir, &["cat-file", "-e", &commit])
        .ok_or_else(|| format!("commit {} is not in the repository", short(&push.after)))?;
    let changed = match &push.changed {
        Some(files) => crate::ci::Changes::modified(files.clone()),
        None => changed_files(dir, push.before.as_deref(), &push.after),
    };
    let listed = crate::ci::git(
        dir,
        &["ls-tree", "--name-only", &push.after, ".github/workflows/"],
    )
    .unwrap_or_default();
    let mut workflows = Vec::new();
    for rel in listed
        .lines()
        .filter(|l| l.ends_with(".yml") || l.ends_with(".yaml"))
    {
        match crate::ci::load_committed(dir, &push.after, rel) {
            Ok(set) => workflows.push((rel.to_owned(), set)),
            Err(failure) => {
                return Err(format!(
                    "{rel} is invalid at {}:\n{}",
                    short(&push.after),
                    failure.message()
                ));
            }
        }
    }
    Ok((changed, workflows))
}

/// `git diff --name-status before..after`; every file of the commit (added) when `before` is
/// unknown.
fn changed_files(dir: &Path, before: Option<&str>, after: &str) -> crate::ci::Changes {
    let diff = before
        .filter(|b| crate::ci::git(dir, &["cat-file", "-e", &format!("{b}^{{commit}}")]).is_some())
        .and_then(|b| crate::ci::git(dir, &["diff", "--name-status", "--no-renames", b, after]));
    let listed = diff.or_else(|| {
        crate::ci::git(
            dir,
            &[
                "show",
                "--pretty=format:",
                "--name-status",
                "--no-renames",
                "--root",
                after,
            ],
        )
    });
    crate::ci::Changes::parse(&listed.unwrap_or_default())
}

/// The heads of `branches` in `repo` (`git ls-remote`, never prompting, within
/// [`LS_REMOTE_TIMEOUT`]), by full ref.
async fn ls_remote(
    dir: &Path,
    repo: &Repo,
    branches: &[String],
) -> Option<BTreeMap<String, String>> {
    let refs: Vec<String> = branches.iter().map(|b| format!("refs/heads/{b}")).collect();
    let run = tokio::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .arg("ls-remote")
        .arg(repo.location(dir))
        .args(&refs)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(LS_REMOTE_TIMEOUT, run)
        .await
        .ok()?
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let out = String::from_utf8_lossy(&out.stdout);
    Some(
        out.lines()
            .filter_map(|line| {
                let (sha, git_ref) = line.split_once('\t')?;
                refs.contains(&git_ref.to_owned())
                    .then(|| (git_ref.to_owned(), sha.to_owned()))
            })
            .collect(),
    )
}

/// Asks `git ls-remote` every `interval` and hands new heads to the actor.
async fn poll(
    dir: PathBuf,
    repo: Repo,
    branches: Vec<String>,
    mut seen: BTreeMap<String, String>,
    interval: std::time::Duration,
    handle: DeliveryHandle,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let heads = ls_remote(&dir, &repo, &branches).await.unwrap_or_default();
        for (git_ref, head) in heads {
            if seen.get(&git_ref) == Some(&head) {
                continue;
            }
            let before = seen.insert(git_ref.clone(), head.clone());
            let push = Push {
                git_ref,
                before,
                after: head,
                changed: None,
                source: "poll".into(),
            };
            if !handle.push(push).await {
                return;
            }
        }
    }
}

fn load_heads(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read(dir.join(".kiln").join(HEADS_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn save_heads(dir: &Path, heads: &BTreeMap<String, String>) {
    let path = dir.join(".kiln").join(HEADS_FILE);
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    // Written aside and renamed: a crash never leaves half a file.
    let staging = path.with_extension("json.tmp");
    if std::fs::write(
        &staging,
        serde_json::to_vec_pretty(heads).unwrap_or_default(),
    )
    .is_ok()
    {
        let _ = std::fs::rename(&staging, &path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workflow(rel: &str, yaml: &str) -> (String, kiln_pipelines::WorkflowSet) {
        let (root, sources) =
            kiln_pipelines::parse_workflow(Path::new(rel), yaml).unwrap_or_else(|e| panic!("{e}"));
        let set = kiln_pipelines::WorkflowSet {
            sources,
            root,
            called: Default::default(),
        };
        (rel.to_owned(), set)
    }

    /// A push whose workflows include one that kiln cannot run on the host is refused before
    /// any runs, with `kiln ci validate`'s words; a workflow the push's filters skip does not
    /// count, and without refusals the matching workflows run.
    #[test]
    fn a_push_with_a_workflow_kiln_cannot_run_is_refused_before_anything_runs() {
        let push = Push {
            git_ref: "refs/heads/main".into(),
            before: None,
            after: "0123456789abcdef0123456789abcdef01234567".into(),
            changed: None,
            source: "hook".into(),
        };
        let changed = crate::ci::Changes::modified(vec!["src/app.js".into()]);
        let green = ".github/workflows/ci.yml";
        let green_yaml =
            "on: push\njobs:\n  test:\n    runs-on: ubuntu-latest\n    steps:\n      - run: true\n";
        let db = ".github/workflows/db.yml";
        let db_yaml = "on: push\njobs:\n  it:\n    runs-on: ubuntu-latest\n    services:\n      pg: { image: postgres }\n    steps:\n      - run: true\n";
        let docs = ".github/workflows/docs.yml";
        let docs_yaml = "on: { push: { paths: [docs/**] } }\njobs:\n  it:\n    runs-on: ubuntu-latest\n    container: node:20\n    steps:\n      - run: true\n";

        let (skipped, why) = runs_of(
            &push,
            &changed,
            "change",
            vec![workflow(green, green_yaml), workflow(db, db_yaml)],
        )
        .expect_err("refused");
        assert!(skipped.is_empty());
        let (_, db_set) = workflow(db, db_yaml);
        let validate = crate::ci::refused_report(&db_set);
        assert!(!validate.is_empty());
        assert_eq!(
            why,
            format!(
                "{db} needs what kiln cannot run on the host, so nothing ran (`kiln ci validate` reports it):\n{}",
                validate.trim_end()
            )
        );

        let (to_run, skipped) = runs_of(
            &push,
            &changed,
            "change",
            vec![workflow(green, green_yaml), workflow(docs, docs_yaml)],
        )
        .expect("runs");
        assert_eq!(
            to_run.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>(),
            [green]
        );
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0]["workflow"], docs);

        // GitHub starts no push workflow for a head commit that asks it not to.
        let (to_run, skipped) = runs_of(
            &push,
            &changed,
            "docs: typo [skip ci]",
            vec![workflow(green, green_yaml), workflow(db, db_yaml)],
        )
        .expect("nothing to refuse");
        assert!(to_run.is_empty());
        assert_eq!(
            skipped[0]["skipped"],
            "the head commit's message has [skip ci]"
        );
        assert_eq!(skipped.len(), 2);
    }

    #[test]
    fn repositories_are_told_apart() {
        let dir = Path::new("/srv/stack");
        assert_eq!(Repo::resolve(dir, "."), Repo::Own);
        assert_eq!(
            Repo::resolve(dir, "../app.git"),
            Repo::Local(PathBuf::from("/srv/stack/../app.git"))
        );
        assert_eq!(
            Repo::resolve(dir, "https://example.invalid/app.git"),
            Repo::Remote("https://example.invalid/app.git".into())
        );
        assert_eq!(
            Repo::resolve(dir, "git@example.invalid:o/app.git"),
            Repo::Remote("git@example.invalid:o/app.git".into())
        );
    }
}
