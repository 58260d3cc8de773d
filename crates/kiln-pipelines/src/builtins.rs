//! Native equivalents of the actions kiln knows: `actions/checkout`, `actions/upload-artifact`,
//! `actions/download-artifact`, `actions/cache`, `actions/setup-node`, `actions/setup-python`.
//!
//! Each takes the action's `with` inputs (rendered) and returns outputs, log lines, `PATH`
//! additions and possibly a post step (cache saves happen at job end, as the real actions'
//! post steps do, and only when the job succeeded).

use std::path::{Component, Path};

use indexmap::IndexMap;

use crate::cache;
use crate::glob;
use crate::runner::{Shared, extract, resolve_commit};
use crate::version_files::{Tool, version_from_file};
use crate::workflow::Builtin;

/// What a built-in action needs from its surroundings.
pub(crate) struct Cx<'a> {
    pub shared: &'a Shared,
    pub temp: &'a Path,
    /// The job's workspace (`GITHUB_WORKSPACE`).
    pub workspace: &'a Path,
    /// The step's environment variables (workflow, job, `GITHUB_ENV` and its own `env`).
    pub env: &'a IndexMap<String, String>,
}

/// What a built-in action produced.
#[derive(Debug, Default)]
pub(crate) struct Out {
    pub outputs: IndexMap<String, String>,
    pub logs: Vec<String>,
    pub path: Vec<String>,
    /// Variables exported to the job's later steps, as `core.exportVariable` does.
    pub env: Vec<(String, String)>,
    pub post: Option<Post>,
}

/// Work left for the end of the job.
#[derive(Debug, Clone)]
pub(crate) enum Post {
    /// Save `paths` under `key` (skipped when the job failed).
    SaveCache {
        key: String,
        paths: Vec<String>,
        workspace: std::path::PathBuf,
    },
}

fn lines(s: Option<&String>) -> Vec<String> {
    s.map(|s| {
        s.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

/// Runs a built-in action.
pub(crate) async fn run(
    b: Builtin,
    cx: &Cx<'_>,
    with: &IndexMap<String, String>,
) -> Result<Out, String> {
    match b {
        Builtin::Checkout => checkout(cx, with).await,
        Builtin::UploadArtifact => upload(cx, with),
        Builtin::DownloadArtifact => download(cx, with),
        Builtin::Cache => restore_cache(cx, with, SaveAtJobEnd::OnMiss).await,
        Builtin::CacheRestore => restore_cache(cx, with, SaveAtJobEnd::Never).await,
        Builtin::CacheSave => save_cache(cx, with).await,
        Builtin::SetupNode => setup_node(cx, with).await,
        Builtin::SetupPython => setup_python(cx, with).await,
    }
}

/// A clone of the run's repository at the run's commit (or `ref`) in the workspace, or in
/// `path` under it; like the real action, what the directory held is replaced.
///
/// Every input that changes what lands in the directory is honoured or refused, never
/// ignored: `ref` (resolved as actions/checkout's `input-helper.ts` and `ref-helper.ts` do),
/// `path`, `clean`, `sparse-checkout` (and its cone mode), `lfs`, `submodules`. `fetch-depth`,
/// `fetch-tags` and `filter` only change the history under `.git`: kiln's clone shares the
/// repository's objects and always has all of it, which a log line says.
async fn checkout(cx: &Cx<'_>, with: &IndexMap<String, String>) -> Result<Out, String> {
    let mut out = Out::default();
    let opts = &cx.shared.opts;
    if let Some(repo) = with
        .get("repository")
        .filter(|r| !r.is_empty() && **r != opts.repository)
    {
        return Err(format!(
            "checking out another repository (`{repo}`) is not supported; only the run's own"
        ));
    }
    let path = with
        .get("path")
        .map(|p| p.trim())
        .filter(|p| !p.is_empty() && *p != ".");
    if let Some(p) = path.filter(|p| {
        Path::new(p)
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    }) {
        // input-helper.ts's words.
        return Err(format!(
            "Repository path '{}' is not under '{}'",
            cx.workspace.join(p).display(),
            cx.workspace.display()
        ));
    }
    let dest = path.map_or_else(|| cx.workspace.to_path_buf(), |p| cx.workspace.join(p));
    let input = |name: &str| with.get(name).map(|v| v.trim()).unwrap_or("");
    // input-helper.ts: `(core.getInput('clean') || 'true').toUpperCase() === 'TRUE'`.
    let clean = input("clean").is_empty() || input("clean").eq_ignore_ascii_case("true");
    if !clean && dest.join(".git").exists() {
        return Err(format!(
            "clean: false keeps the untracked files of the checkout already in '{}'; kiln's \
             checkout always replaces the directory, so it refuses rather than drop them",
            dest.display()
        ));
    }
    let lfs = input("lfs").eq_ignore_ascii_case("true");
    if lfs && !git_lfs_installed().await {
        return Err(
            "lfs: true needs git-lfs on the host (`git lfs version` failed); without it the \
             files would be LFS pointers"
                .to_owned(),
        );
    }
    let sparse = Sparse {
        patterns: lines(with.get("sparse-checkout")),
        // input-helper.ts: `(core.getInput('sparse-checkout-cone-mode') || 'true').toUpperCase() === 'TRUE'`.
        cone: input("sparse-checkout-cone-mode").is_empty()
            || input("sparse-checkout-cone-mode").eq_ignore_ascii_case("true"),
    };
    let wanted = with.get("ref").map(|r| r.trim()).filter(|r| !r.is_empty());
    let (sha, branch) = match wanted {
        None => (
            cx.shared.sha.clone(),
            opts.git_ref.strip_prefix("refs/heads/").map(str::to_owned),
        ),
        Some(r) => checkout_ref(&opts.repo, r).await?,
    };
    // The action's outputs: `ref` is its settings' ref (`main.ts`): the event's ref without a
    // `ref:` input, the input as written, and '' for a commit SHA (`input-helper.ts` moves it
    // to the commit); `commit` is the SHA checked out (`git-source-provider.ts`).
    let ref_output = match wanted {
        None => opts.git_ref.clone(),
        Some(r) if is_commit_sha(r) => String::new(),
        Some(r) => r.to_owned(),
    };
    out.outputs.insert("ref".to_owned(), ref_output);
    out.outputs.insert("commit".to_owned(), sha.clone());
    extract(
        &opts.repo,
        &sha,
        branch.as_deref(),
        &dest,
        &Extract {
            lfs,
            sparse: &sparse,
        },
    )
    .await?;
    out.logs.push(format!(
        "Checked out {} at {sha} into {}",
        opts.repository,
        path.unwrap_or("the workspace")
    ));
    if !sparse.patterns.is_empty() {
        out.logs.push(format!(
            "Sparse checkout ({}): {}",
            if sparse.cone { "cone mode" } else { "patterns" },
            sparse.patterns.join(", ")
        ));
    }
    if ["fetch-depth", "fetch-tags", "filter"]
        .iter()
        .any(|k| !input(k).is_empty())
    {
        out.logs.push(
            "fetch-depth, fetch-tags and filter change only the history: kiln's clone shares \
             the repository's objects and has all of it"
                .to_owned(),
        );
    }
    // input-helper.ts compares `submodules` in upper case; any other value is false.
    let submodules = input("submodules");
    if submodules.eq_ignore_ascii_case("true") || submodules.eq_ignore_ascii_case("recursive") {
        out.logs
            .push(update_submodules(&dest, submodules.eq_ignore_ascii_case("recursive")).await?);
    }
    Ok(out)
}

/// `sparse-checkout:` and `sparse-checkout-cone-mode:` of `actions/checkout`.
pub(crate) struct Sparse {
    pub patterns: Vec<String>,
    pub cone: bool,
}

/// How [`extract`] checks a commit out.
pub(crate) struct Extract<'a> {
    /// Smudge LFS files (`lfs: true`); otherwise their pointers land, as with the action,
    /// which sets `GIT_LFS_SKIP_SMUDGE=1` unless asked for LFS.
    pub lfs: bool,
    pub sparse: &'a Sparse,
}

async fn git_lfs_installed() -> bool {
    tokio::process::Command::new("git")
        .args(["lfs", "version"])
        .output()
        .await
        .is_ok_and(|o| o.status.success())
}

/// Whether checkout's `ref:` is a commit SHA (`input-helper.ts`: 40 hex digits, or 64).
fn is_commit_sha(r: &str) -> bool {
    (r.len() == 40 || r.len() == 64) && r.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commit and the branch (if any) that `ref:` names, as actions/checkout resolves it: a
/// 40-digit SHA is a commit (`input-helper.ts`); `refs/heads/X` a branch, another `refs/...` that
/// ref; an unqualified name a branch, else a tag, else "A branch or tag with the name '…'
/// could not be found" (`ref-helper.ts`'s `getCheckoutInfo`). So an abbreviated SHA or
/// `HEAD~1` fails as on GitHub. Nothing is touched before this succeeds.
async fn checkout_ref(repo: &Path, r: &str) -> Result<(String, Option<String>), String> {
    if is_commit_sha(r) {
        return match commit_of(repo, r).await {
            Some(sha) => Ok((sha, None)),
            // What git's fetch says of a commit the remote does not have.
            None => Err(format!(
                "fatal: remote error: upload-pack: not our ref {}",
                r.to_ascii_lowercase()
            )),
        };
    }
    let upper = r.to_ascii_uppercase();
    if upper.starts_with("REFS/") {
        let branch = upper
            .starts_with("REFS/HEADS/")
            .then(|| r["refs/heads/".len()..].to_owned());
        return match commit_of(repo, r).await {
            Some(sha) => Ok((sha, branch)),
            // What git's fetch says of a ref the remote does not have.
            None => Err(format!("fatal: couldn't find remote ref {r}")),
        };
    }
    if let Some(sha) = commit_of(repo, &format!("refs/heads/{r}")).await {
        return Ok((sha, Some(r.to_owned())));
    }
    if let Some(sha) = commit_of(repo, &format!("refs/tags/{r}")).await {
        return Ok((sha, None));
    }
    Err(format!(
        "A branch or tag with the name '{r}' could not be found"
    ))
}

/// The commit `revision` names exactly in `repo`, if any.
async fn commit_of(repo: &Path, revision: &str) -> Option<String> {
    resolve_commit(repo, revision).await.ok()
}

/// `submodules: true` or `recursive`: the checkout's submodules at the commits it records,
/// fetched from their URLs as `actions/checkout` fetches them (a relative URL resolves
/// against the run's repository; the file protocol is allowed, as for the clone itself).
async fn update_submodules(dest: &Path, recursive: bool) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("-C")
        .arg(dest)
        .args([
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "update",
            "--init",
            "--quiet",
        ])
        .env("GIT_TERMINAL_PROMPT", "0");
    if recursive {
        cmd.arg("--recursive");
    }
    let out = cmd
        .output()
        .await
        .map_err(|e| format!("git submodule: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git submodule update: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(format!(
        "Submodules updated{}",
        if recursive { " (recursively)" } else { "" }
    ))
}

fn upload(cx: &Cx<'_>, with: &IndexMap<String, String>) -> Result<Out, String> {
    let name = with
        .get("name")
        .filter(|n| !n.is_empty())
        .cloned()
        .unwrap_or_else(|| "artifact".to_owned());
    let patterns = lines(with.get("path"));
    if patterns.is_empty() {
        return Err("Input required and not supplied: path".to_owned());
    }
    let s = cx.shared;
    // upload-artifact's inputs are booleans read with `core.getBooleanInput`.
    let flag = |k: &str| {
        with.get(k)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    };
    let uploaded = cache::upload(
        &s.opts.artifacts_dir,
        s.opts.run_id,
        &name,
        &patterns,
        cx.workspace,
        cache::Upload {
            include_hidden: flag("include-hidden-files"),
            overwrite: flag("overwrite"),
        },
    )?;
    let mut out = Out::default();
    let Some(uploaded) = uploaded else {
        let message = format!(
            "No files were found with the provided path: {}. No artifacts will be uploaded.",
            patterns.join(", ")
        );
        match with.get("if-no-files-found").map(String::as_str) {
            Some("error") => return Err(message),
            Some("ignore") => {}
            _ => out.logs.push(format!("##[warning]{message}")),
        }
        return Ok(out);
    };
    out.logs.push(format!(
        "Uploaded artifact `{name}` ({} files)",
        uploaded.files
    ));
    // upload-artifact v4's outputs: the artifact's number, the page that downloads it
    // (`<server>/<repository>/actions/runs/<run>/artifacts/<id>`) and its digest.
    let id = uploaded.id.to_string();
    out.outputs.insert(
        "artifact-url".to_owned(),
        format!(
            "{}/{}/actions/runs/{}/artifacts/{id}",
            crate::runner::SERVER_URL,
            s.opts.repository,
            s.opts.run_id
        ),
    );
    out.outputs.insert("artifact-id".to_owned(), id);
    out.outputs
        .insert("artifact-digest".to_owned(), uploaded.digest);
    Ok(out)
}

fn download(cx: &Cx<'_>, with: &IndexMap<String, String>) -> Result<Out, String> {
    let s = cx.shared;
    let name = with
        .get("name")
        .filter(|n| !n.is_empty())
        .map(String::as_str);
    // download-artifact resolves `path` with "basic tilde expansion", relative to the
    // workspace.
    let dest = with.get("path").filter(|p| !p.is_empty()).map_or_else(
        || cx.workspace.to_path_buf(),
        |p| cache::resolve(p, cx.workspace, &s.opts.home),
    );
    let ids = artifact_ids(with.get("artifact-ids"))?;
    if name.is_some() && ids.is_some() {
        return Err(
            "Unable to download artifact(s): Inputs 'name' and 'artifact-ids' cannot be \
                    used together. Please specify only one."
                .to_owned(),
        );
    }
    let which = cache::Download {
        name,
        ids: ids.as_deref(),
        pattern: with
            .get("pattern")
            .map(|p| p.trim())
            .filter(|p| !p.is_empty()),
        merge_multiple: with.get("merge-multiple").is_some_and(|v| v == "true"),
    };
    let downloaded = cache::download(&s.opts.artifacts_dir, s.opts.run_id, &which, &dest)
        .map_err(|e| format!("Unable to download artifact(s): {e}"))?;
    let names = downloaded.names;
    let mut out = Out::default();
    if let Some(warning) = downloaded.warning {
        out.logs.push(format!("##[warning]{warning}"));
    }
    if names.is_empty() {
        // download-artifact sets `download-path` once it has downloaded something: a pattern
        // that matches nothing leaves it empty.
        out.logs.push("No artifacts found to download".to_owned());
        return Ok(out);
    }
    out.logs.push(format!("Downloaded {}", names.join(", ")));
    out.outputs.insert(
        "download-path".to_owned(),
        dest.to_string_lossy().into_owned(),
    );
    Ok(out)
}

/// download-artifact's `artifact-ids`: numbers separated by commas, each read as JavaScript's
/// `parseInt` does (its leading digits); `None` when the input is absent or empty.
fn artifact_ids(input: Option<&String>) -> Result<Option<Vec<u64>>, String> {
    let Some(input) = input.filter(|i| !i.trim().is_empty()) else {
        return Ok(None);
    };
    let fail = |m: String| format!("Unable to download artifact(s): {m}");
    let listed: Vec<&str> = input
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .collect();
    if listed.is_empty() {
        return Err(fail(
            "No valid artifact IDs provided in 'artifact-ids' input".to_owned(),
        ));
    }
    listed
        .iter()
        .map(|id| {
            let digits: String = id
                .strip_prefix('+')
                .unwrap_or(id)
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits
                .parse::<u64>()
                .map_err(|_| fail(format!("Invalid artifact ID: '{id}'. Must be a number.")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Whether a cache restore leaves a save for the end of the job: `actions/cache` does on a
/// miss, `actions/cache/restore` never (its workflow saves with `actions/cache/save`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SaveAtJobEnd {
    OnMiss,
    Never,
}

/// The `key` and `path` inputs every cache action requires.
fn cache_key_and_paths(with: &IndexMap<String, String>) -> Result<(String, Vec<String>), String> {
    let key = with
        .get("key")
        .filter(|k| !k.is_empty())
        .ok_or("Input required and not supplied: key")?
        .clone();
    let paths = lines(with.get("path"));
    if paths.is_empty() {
        return Err("Input required and not supplied: path".to_owned());
    }
    Ok((key, paths))
}

async fn restore_cache(
    cx: &Cx<'_>,
    with: &IndexMap<String, String>,
    save: SaveAtJobEnd,
) -> Result<Out, String> {
    let (key, paths) = cache_key_and_paths(with)?;
    let restore_keys = lines(with.get("restore-keys"));
    let mut out = Out::default();
    let matched = restore_into(cx, &key, &restore_keys, &paths, &mut out.logs).await?;
    let hit = matched.as_deref() == Some(key.as_str());
    if matched.is_none() && with.get("fail-on-cache-miss").is_some_and(|v| v == "true") {
        return Err(format!(
            "Failed to restore cache entry. Exiting as fail-on-cache-miss is set. Input key: {key}"
        ));
    }
    // As actions/cache's `restoreImpl`: a miss leaves `cache-hit` unset (its README: "an
    // empty string"), so `!steps.c.outputs.cache-hit` is true and `== 'false'` is false;
    // only a restored entry sets it, `true` for the key itself, `false` for a restore key.
    if matched.is_some() {
        out.outputs.insert("cache-hit".to_owned(), hit.to_string());
    }
    // Only the restore half has the key outputs (its state provider writes them as outputs;
    // `actions/cache` keeps them as state for its post step): the primary key always, the
    // matched key when one was restored.
    if save == SaveAtJobEnd::Never {
        out.outputs
            .insert("cache-primary-key".to_owned(), key.clone());
        if let Some(m) = &matched {
            out.outputs
                .insert("cache-matched-key".to_owned(), m.clone());
        }
    }
    let lookup_only = with.get("lookup-only").is_some_and(|v| v == "true");
    if !hit && !lookup_only && save == SaveAtJobEnd::OnMiss {
        out.post = Some(Post::SaveCache {
            key,
            paths,
            workspace: cx.workspace.to_path_buf(),
        });
    }
    Ok(out)
}

async fn restore_into(
    cx: &Cx<'_>,
    key: &str,
    restore_keys: &[String],
    paths: &[String],
    logs: &mut Vec<String>,
) -> Result<Option<String>, String> {
    let shared = cx.shared;
    let _guard = shared.cache_lock.lock().await;
    let matched = cache::restore(
        &shared.opts.cache_dir,
        key,
        restore_keys,
        paths,
        cx.workspace,
        &shared.opts.home,
    )?;
    logs.push(match &matched {
        Some(m) => format!("Cache restored from key: {m}"),
        None => format!(
            "Cache not found for input keys: {}",
            std::iter::once(key)
                .chain(restore_keys.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    });
    Ok(matched)
}

/// `actions/cache/save`: saves now. Like the real action, a key that is already saved or
/// paths that hold nothing are warnings, not failures: the step goes on.
async fn save_cache(cx: &Cx<'_>, with: &IndexMap<String, String>) -> Result<Out, String> {
    let (key, paths) = cache_key_and_paths(with)?;
    let shared = cx.shared;
    let _guard = shared.cache_lock.lock().await;
    let line = match cache::save(
        &shared.opts.cache_dir,
        &key,
        &paths,
        cx.workspace,
        &shared.opts.home,
    ) {
        Ok(true) => format!("Cache saved with key: {key}"),
        Ok(false) => format!(
            "##[warning]Failed to save: Unable to reserve cache with key {key}, another job may be creating this cache."
        ),
        Err(e) => format!("##[warning]Failed to save cache: {e}"),
    };
    Ok(Out {
        logs: vec![line],
        ..Out::default()
    })
}

/// Runs a post step; returns its log lines.
pub(crate) async fn post(shared: &Shared, post: &Post, job_ok: bool) -> Vec<String> {
    match post {
        Post::SaveCache {
            key,
            paths,
            workspace,
        } => {
            if !job_ok {
                return vec![format!("Not saving cache `{key}`: the job did not succeed")];
            }
            let _guard = shared.cache_lock.lock().await;
            match cache::save(
                &shared.opts.cache_dir,
                key,
                paths,
                workspace,
                &shared.opts.home,
            ) {
                Ok(true) => vec![format!("Cache saved with key: {key}")],
                Ok(false) => vec![format!("Cache with key `{key}` already exists; not saved")],
                Err(e) => vec![format!("##[warning]Failed to save cache: {e}")],
            }
        }
    }
}

async fn tool_version(program: &str, arg: &str) -> Option<String> {
    let out = tokio::process::Command::new(program)
        .arg(arg)
        .output()
        .await
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.split_whitespace()
        .map(|w| w.trim_start_matches('v'))
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_owned)
}

async fn setup_node(cx: &Cx<'_>, with: &IndexMap<String, String>) -> Result<Out, String> {
    let version = tool_version("node", "--version")
        .await
        .ok_or("node is not installed on this host")?;
    let mut out = Out::default();
    let spec = wanted_version(cx, with, Tool::Node, &mut out.logs)?;
    if !spec.is_empty() && !version_satisfies(&version, &spec) {
        return Err(format!(
            "node-version `{spec}` is not satisfied by the host's node {version}; install a matching node"
        ));
    }
    out.logs.push(format!("Using the host's node {version}"));
    out.outputs
        .insert("node-version".to_owned(), format!("v{version}"));
    if let Some(registry) = with
        .get("registry-url")
        .map(|r| r.trim())
        .filter(|r| !r.is_empty())
    {
        npm_registry_auth(cx, with, registry, &mut out)?;
    }
    let Some(manager) = with
        .get("cache")
        .map(|c| c.trim())
        .filter(|c| !c.is_empty())
    else {
        return Ok(out);
    };
    // setup-node's `lockFilePatterns`, in its order.
    let (lock_files, paths): (&[&str], Vec<String>) = match manager {
        "npm" => (
            &["package-lock.json", "npm-shrinkwrap.json", "yarn.lock"],
            vec!["~/.npm".to_owned()],
        ),
        "yarn" => (&["yarn.lock"], vec![yarn_cache_dir(cx).await?]),
        "pnpm" => (
            &["pnpm-lock.yaml"],
            vec![tool_output(cx, "pnpm", &["store", "path", "--silent"]).await?],
        ),
        other => return Err(format!("Caching for '{other}' is not supported")),
    };
    let hash = if with
        .get("cache-dependency-path")
        .is_some_and(|p| !p.trim().is_empty())
    {
        lockfile_hash(cx, with, &[])?
    } else {
        // Without `cache-dependency-path`, setup-node's `findLockFile` takes the first of its
        // patterns found in the workspace's own directory (not below it) and hashes that file
        // alone; none there is an error, even when a subdirectory holds one.
        let found = lock_files
            .iter()
            .find(|f| cx.workspace.join(f).is_file())
            .ok_or_else(|| {
                format!(
                    "Dependencies lock file is not found in {}. Supported file patterns: {}",
                    cx.workspace.display(),
                    lock_files.join(",")
                )
            })?;
        glob::hash_files(cx.workspace, &[(*found).to_owned()]).map_err(|e| e.to_string())?
    };
    let key = format!(
        "node-cache-Linux-{}-{manager}-{hash}",
        std::env::consts::ARCH
    );
    restore_package_cache(cx, &mut out, key, paths).await?;
    Ok(out)
}

/// `registry-url` (with `scope` and `always-auth`): an `.npmrc` in the job's temporary
/// directory that points npm at the registry and reads its token from `NODE_AUTH_TOKEN`,
/// exported as `NPM_CONFIG_USERCONFIG`, and `NODE_AUTH_TOKEN` exported as a placeholder when
/// unset (npm refuses an `.npmrc` naming an unset variable), as the real action does: a
/// publishing step then sets `NODE_AUTH_TOKEN` in its own `env`.
fn npm_registry_auth(
    cx: &Cx<'_>,
    with: &IndexMap<String, String>,
    registry: &str,
    out: &mut Out,
) -> Result<(), String> {
    let mut registry = registry.to_owned();
    if !registry.ends_with('/') {
        registry.push('/');
    }
    let mut scope = with
        .get("scope")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    if scope.is_empty() && registry.contains("npm.pkg.github.com") {
        scope = cx
            .shared
            .opts
            .repository
            .split('/')
            .next()
            .unwrap_or("")
            .to_owned();
    }
    if !scope.is_empty() && !scope.starts_with('@') {
        scope.insert(0, '@');
    }
    let scope = if scope.is_empty() {
        String::new()
    } else {
        format!("{}:", scope.to_lowercase())
    };
    let npmrc = cx.temp.join(".npmrc");
    // Lines of an `.npmrc` already there are kept, except the registry settings replaced here.
    let kept: Vec<String> = std::fs::read_to_string(&npmrc)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            let lower = l.trim_start().to_lowercase();
            let setting = lower.strip_prefix('@').map_or(lower.as_str(), |rest| {
                rest.split_once(':').map_or(rest, |(_, after)| after)
            });
            !setting.starts_with("registry") && !l.trim().is_empty()
        })
        .map(str::to_owned)
        .collect();
    let without_scheme = registry
        .split_once("://")
        .map_or(registry.as_str(), |(_, rest)| rest);
    let always_auth = with
        .get("always-auth")
        .map(|a| a.trim())
        .filter(|a| !a.is_empty())
        .unwrap_or("false");
    let mut text = kept.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    text.push_str(&format!(
        "//{without_scheme}:_authToken=${{NODE_AUTH_TOKEN}}\n{scope}registry={registry}\nalways-auth={always_auth}"
    ));
    std::fs::write(&npmrc, text).map_err(|e| format!("cannot write {}: {e}", npmrc.display()))?;
    out.env.push((
        "NPM_CONFIG_USERCONFIG".to_owned(),
        npmrc.to_string_lossy().into_owned(),
    ));
    let token = cx
        .env
        .get("NODE_AUTH_TOKEN")
        .filter(|t| !t.is_empty())
        .cloned()
        .unwrap_or_else(|| "XXXXX-XXXXX-XXXXX-XXXXX".to_owned());
    out.env.push(("NODE_AUTH_TOKEN".to_owned(), token));
    Ok(())
}

/// Yarn 1's `yarn cache dir`; Yarn 2 and later name it `cacheFolder`.
async fn yarn_cache_dir(cx: &Cx<'_>) -> Result<String, String> {
    let version = tool_output(cx, "yarn", &["--version"]).await?;
    if version.starts_with("1.") {
        tool_output(cx, "yarn", &["cache", "dir"]).await
    } else {
        tool_output(cx, "yarn", &["config", "get", "cacheFolder"]).await
    }
}

/// The trimmed standard output of a package manager run in the workspace (where its project
/// configuration is); failing as the real actions do when the tool is missing.
async fn tool_output(cx: &Cx<'_>, program: &str, args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .current_dir(cx.workspace)
        .output()
        .await
        .map_err(|e| format!("Unable to locate executable file: {program} ({e})"))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || text.is_empty() {
        return Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(text)
}

/// The hash of the lock files (`cache-dependency-path`, else the manager's defaults) that keys
/// a setup action's cache; none found is an error, as in the real actions.
fn lockfile_hash(
    cx: &Cx<'_>,
    with: &IndexMap<String, String>,
    defaults: &[&str],
) -> Result<String, String> {
    let lockfiles = match with.get("cache-dependency-path").filter(|p| !p.is_empty()) {
        Some(p) => lines(Some(p)),
        None => defaults.iter().map(|d| (*d).to_owned()).collect(),
    };
    let hash = glob::hash_files(cx.workspace, &lockfiles).map_err(|e| e.to_string())?;
    if hash.is_empty() {
        return Err(format!(
            "Dependencies lock file is not found in {}. Supported file patterns: {}",
            cx.workspace.display(),
            lockfiles.join(",")
        ));
    }
    Ok(hash)
}

/// Restores a setup action's package cache under `key`; on a miss, saves it when the job
/// ends well.
async fn restore_package_cache(
    cx: &Cx<'_>,
    out: &mut Out,
    key: String,
    paths: Vec<String>,
) -> Result<(), String> {
    let matched = restore_into(cx, &key, &[], &paths, &mut out.logs).await?;
    let hit = matched.is_some();
    out.outputs.insert("cache-hit".to_owned(), hit.to_string());
    if !hit {
        out.post = Some(Post::SaveCache {
            key,
            paths,
            workspace: cx.workspace.to_path_buf(),
        });
    }
    Ok(())
}

/// The version a setup action asks for: its version input, else what its version file names
/// (read from the workspace), else any.
fn wanted_version(
    cx: &Cx<'_>,
    with: &IndexMap<String, String>,
    tool: Tool,
    logs: &mut Vec<String>,
) -> Result<String, String> {
    let (input, file_input, name) = match tool {
        Tool::Node => ("node-version", "node-version-file", "node"),
        Tool::Python => ("python-version", "python-version-file", "python"),
    };
    let spec = with.get(input).map(|s| s.trim()).unwrap_or_default();
    let file = with
        .get(file_input)
        .map(|f| f.trim())
        .filter(|f| !f.is_empty());
    match (spec, file) {
        ("", Some(file)) => {
            let path = cx.workspace.join(file);
            let text = std::fs::read_to_string(&path).map_err(|_| {
                format!(
                    "The specified {name} version file at: {} does not exist",
                    path.display()
                )
            })?;
            version_from_file(tool, file, &text)
                .ok_or_else(|| format!("{file} names no {name} version"))
        }
        (spec, Some(_)) => {
            logs.push(format!(
                "##[warning]Both {input} and {file_input} inputs are specified, only {input} will be used"
            ));
            Ok(spec.to_owned())
        }
        (spec, None) => Ok(spec.to_owned()),
    }
}

async fn setup_python(cx: &Cx<'_>, with: &IndexMap<String, String>) -> Result<Out, String> {
    let (program, host_version) = match tool_version("python3", "--version").await {
        Some(v) => ("python3", v),
        None => (
            "python",
            tool_version("python", "--version")
                .await
                .ok_or("python is not installed on this host")?,
        ),
    };
    let mut out = Out::default();
    let spec = wanted_version(cx, with, Tool::Python, &mut out.logs)?;
    // setup-python reads `python-version` as a multi-line input: every version listed is set
    // up, the last one first on PATH (the default). Each is the host's python when it
    // satisfies the version, else the newest other installation that does (pyenv's, or a
    // runner tool cache's, where setup-python itself looks); a miss names the version, not
    // the whole list.
    let mut installations = None;
    let mut chosen: Vec<(String, std::path::PathBuf)> = Vec::new();
    for wanted in spec.lines().map(str::trim).filter(|v| !v.is_empty()) {
        if version_satisfies(&host_version, wanted) {
            let shim = host_python_dir(cx, program)?;
            chosen.push((host_version.clone(), shim));
            continue;
        }
        let found = installations
            .get_or_insert_with(|| python_installations(&cx.shared.tool_cache()))
            .iter()
            .rev()
            .filter(|(version, _)| version_satisfies(version, wanted))
            // The newest; of equal ones, the first place looked.
            .max_by_key(|(version, _)| parse_version(version));
        let Some((version, bin)) = found else {
            return Err(format!(
                "python-version `{wanted}` is not satisfied by the host's python {host_version} or another installed one; install a matching python"
            ));
        };
        chosen.push((version.clone(), bin.clone()));
    }
    if chosen.is_empty() {
        chosen.push((host_version.clone(), host_python_dir(cx, program)?));
    }
    for (version, bin) in &chosen {
        out.path.insert(0, bin.to_string_lossy().into_owned());
        if *version == host_version {
            out.logs.push(format!("Using the host's python {version}"));
        } else {
            out.logs
                .push(format!("Using python {version} from {}", bin.display()));
        }
    }
    let Some((version, bin)) = chosen.pop() else {
        return Err("no python to set up".to_owned());
    };
    let link = bin.join("python");
    let program = link.to_string_lossy().into_owned();
    let program = program.as_str();
    // `update-environment` (default true): the variables the real action exports for build
    // tools and cache keys (`${{ env.pythonLocation }}`), at the default installation.
    let update = with
        .get("update-environment")
        .is_none_or(|u| !u.trim().eq_ignore_ascii_case("false"));
    if update {
        let prefix = tool_output(cx, program, &["-c", "import sys; print(sys.prefix)"]).await?;
        for name in [
            "pythonLocation",
            "Python_ROOT_DIR",
            "Python2_ROOT_DIR",
            "Python3_ROOT_DIR",
        ] {
            out.env.push((name.to_owned(), prefix.clone()));
        }
        out.env.push((
            "PKG_CONFIG_PATH".to_owned(),
            format!("{prefix}/lib/pkgconfig"),
        ));
    }
    out.outputs.insert(
        "python-path".to_owned(),
        link.to_string_lossy().into_owned(),
    );
    if let Some(manager) = with
        .get("cache")
        .map(|c| c.trim())
        .filter(|c| !c.is_empty())
    {
        let (defaults, paths): (&[&str], Vec<String>) = match manager {
            "pip" => (
                &["**/requirements.txt"],
                vec![tool_output(cx, program, &["-m", "pip", "cache", "dir"]).await?],
            ),
            "pipenv" => (
                &["**/Pipfile.lock"],
                vec!["~/.local/share/virtualenvs".to_owned()],
            ),
            "poetry" => (
                &["**/poetry.lock"],
                vec![
                    tool_output(cx, "poetry", &["config", "cache-dir"]).await?,
                    tool_output(cx, "poetry", &["config", "virtualenvs.path"]).await?,
                ],
            ),
            other => return Err(format!("Caching for '{other}' is not supported")),
        };
        let hash = lockfile_hash(cx, with, defaults)?;
        let key = format!(
            "setup-python-Linux-{}-python-{version}-{manager}-{hash}",
            std::env::consts::ARCH
        );
        restore_package_cache(cx, &mut out, key, paths).await?;
    }
    out.outputs.insert("python-version".to_owned(), version);
    Ok(out)
}

/// A directory holding `python`, the host's python (`program` on PATH) under that name, as the
/// real action puts a `python` on PATH.
fn host_python_dir(cx: &Cx<'_>, program: &str) -> Result<std::path::PathBuf, String> {
    let shim = cx.temp.join("setup-python-bin");
    std::fs::create_dir_all(&shim).map_err(|e| e.to_string())?;
    let link = shim.join("python");
    if !link.exists() {
        let target = which(program).ok_or("python3 is not on PATH")?;
        std::os::unix::fs::symlink(target, &link).map_err(|e| e.to_string())?;
    }
    Ok(shim)
}

/// The python installations besides the one on PATH, each as its version and its `bin`
/// directory (holding `python`): where setup-python looks, a runner tool cache's
/// `Python/<version>/x64` (the run's own `$RUNNER_TOOL_CACHE`, which a step may fill, then
/// kiln's own `$RUNNER_TOOL_CACHE` or `/opt/hostedtoolcache`), and pyenv's versions
/// (`$PYENV_ROOT/versions/<version>`, by default `~/.pyenv`). A directory whose name is not
/// a version (`pypy3.10-7.3`, `miniconda3-latest`) is not one.
fn python_installations(run_tool_cache: &Path) -> Vec<(String, std::path::PathBuf)> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let host_tool_cache = var("RUNNER_TOOL_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/opt/hostedtoolcache".into());
    let pyenv = var("PYENV_ROOT")
        .map(std::path::PathBuf::from)
        .or_else(|| var("HOME").map(|home| Path::new(&home).join(".pyenv")))
        .map(|root| root.join("versions"));
    let roots = [
        (Some(run_tool_cache.join("Python")), Some("x64")),
        (Some(host_tool_cache.join("Python")), Some("x64")),
        (pyenv, None),
    ];
    let mut found = Vec::new();
    for (root, arch_dir) in roots {
        let Some(entries) = root.and_then(|r| std::fs::read_dir(r).ok()) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_version = name.split('.').count() >= 2
                && name
                    .split('.')
                    .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
            let mut dir = entry.path();
            if let Some(arch) = arch_dir {
                dir.push(arch);
            }
            let bin = dir.join("bin");
            if is_version && bin.join("python").is_file() {
                found.push((name, bin));
            }
        }
    }
    found
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// Whether `version` (e.g. `20.11.1`) satisfies a setup-* spec: `20`, `20.x`, `20.11`, `>=18`,
/// `^20.1`, `~20.11`, ranges joined by spaces and alternatives by `||`; `lts/*`, `latest`,
/// `node` and `*` accept any host version.
pub fn version_satisfies(version: &str, spec: &str) -> bool {
    let v = parse_version(version);
    spec.split("||").any(|alt| {
        alt.split_whitespace().all(|part| {
            if matches!(
                part,
                "*" | "x" | "latest" | "node" | "current" | "lts" | "stable"
            ) || part.starts_with("lts/")
            {
                return true;
            }
            let part = part.trim_start_matches('v');
            let (op, rest) = ["<=", ">=", "<", ">", "^", "~", "="]
                .iter()
                .find_map(|op| {
                    part.strip_prefix(op)
                        .map(|r| (*op, r.trim_start_matches('v')))
                })
                .unwrap_or(("", part));
            let want = parse_version(rest);
            let cmp = |n: usize| compare(&v, &want, n);
            // The components written, each counted by its leading digits: `3.12-dev`
            // (setup-python's "3.12 or its prerelease") names two, `1.x` one.
            let given = rest
                .split('.')
                .take_while(|c| c.starts_with(|ch: char| ch.is_ascii_digit()))
                .count()
                .min(3);
            match op {
                ">=" => cmp(3) != std::cmp::Ordering::Less,
                ">" => cmp(3) == std::cmp::Ordering::Greater,
                "<=" => cmp(3) != std::cmp::Ordering::Greater,
                "<" => cmp(3) == std::cmp::Ordering::Less,
                "^" => v[0] == want[0] && cmp(3) != std::cmp::Ordering::Less,
                "~" => v[0] == want[0] && v[1] == want[1] && cmp(3) != std::cmp::Ordering::Less,
                _ => given > 0 && cmp(given) == std::cmp::Ordering::Equal,
            }
        })
    })
}

fn parse_version(s: &str) -> [u64; 3] {
    let mut out = [0; 3];
    for (slot, part) in out.iter_mut().zip(s.split('.')) {
        *slot = part
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0);
    }
    out
}

fn compare(a: &[u64; 3], b: &[u64; 3], n: usize) -> std::cmp::Ordering {
    a[..n.min(3)].cmp(&b[..n.min(3)])
}

#[cfg(test)]
mod tests {
    use super::version_satisfies as ok;

    #[test]
    fn versions() {
        assert!(ok("20.11.1", "20"));
        assert!(ok("20.11.1", "20.x"));
        assert!(ok("20.11.1", "20.11"));
        assert!(!ok("20.11.1", "18"));
        assert!(ok("20.11.1", ">=18"));
        assert!(!ok("16.0.0", ">=18"));
        assert!(ok("20.11.1", "^20.1"));
        assert!(ok("20.11.1", ">=18 <21"));
        assert!(ok("20.11.1", "18 || 20"));
        assert!(ok("3.11.7", "3.x"));
        // setup-python's `-dev` suffix: that minor version or its prerelease, not any 3.
        assert!(!ok("3.11.7", "3.12-dev"));
        assert!(ok("3.12.1", "3.12-dev"));
        assert!(!ok("3.11.7", "pypy-3.11"));
        assert!(ok("20.11.1", "lts/*"));
    }
}
