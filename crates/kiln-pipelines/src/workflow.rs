//! The typed model of a GitHub Actions workflow file and of a local composite action.
//!
//! Values that may hold `${{ }}` are kept as [`Text`] (the source text plus its place) and are
//! only evaluated when the runner knows the contexts; everything else is decoded once, strictly,
//! by [`crate::decode`]. Positions stay on every name and value a diagnostic may point at.

use std::path::PathBuf;

use indexmap::IndexMap;
use kiln_spec::diag::Diagnostic;
use kiln_spec::source::Span;

/// A value as written, possibly holding `${{ }}` expressions. Scalars are kept as their text
/// (`0.01`, `true`), so one evaluation path serves strings, numbers and booleans.
#[derive(Debug, Clone, PartialEq)]
pub struct Text {
    /// The text, after YAML escape processing.
    pub text: String,
    /// Where it is written.
    pub span: Span,
}

/// A name with the place it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    /// The name.
    pub name: String,
    /// Where it is written.
    pub span: Span,
}

/// An ordered `name: value` map of expression texts (`env`, `with`, `outputs`).
pub type TextMap = IndexMap<String, Text>;

/// A mapping block whose whole value may also be one expression: `env:` (workflow, job or step)
/// and a step's `with:`. GitHub's workflow schema gives these contexts on the mapping itself, so
/// `env: ${{ matrix.env }}` (with matrix rows carrying `env: { TOXENV: docs }`) or
/// `with: ${{ fromJSON(needs.plan.outputs.inputs) }}` evaluates to a mapping when it is read.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    /// `NAME: value` entries as written.
    pub entries: TextMap,
    /// The whole block written as one expression, evaluated to a mapping at run time.
    pub expression: Option<Text>,
}

/// An `env:` block.
pub type Env = Mapping;

/// One workflow file.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// The path relative to the repository root, e.g. `.github/workflows/ci.yml`.
    pub path: PathBuf,
    /// `name`, or the path when absent (as GitHub shows it).
    pub name: Option<String>,
    /// `run-name`.
    pub run_name: Option<Text>,
    /// `on`.
    pub on: IndexMap<String, Trigger>,
    /// `env`.
    pub env: Env,
    /// `defaults.run`.
    pub defaults: RunDefaults,
    /// `permissions` (parsed and checked; kiln issues no `GITHUB_TOKEN` to scope).
    pub permissions: Option<Permissions>,
    /// `concurrency`.
    pub concurrency: Option<Concurrency>,
    /// `jobs`, in file order.
    pub jobs: IndexMap<String, Job>,
    /// What is flagged without stopping the workflow: untrusted event fields expanded into a
    /// `run:` script (injection risks), which GitHub runs too.
    pub warnings: Vec<Diagnostic>,
}

impl Workflow {
    /// The `workflow_call` trigger, when this workflow is reusable.
    pub fn workflow_call(&self) -> Option<&Trigger> {
        self.on.get("workflow_call")
    }
}

/// One event under `on`, with its filters and declarations.
#[derive(Debug, Clone, Default)]
pub struct Trigger {
    /// `branches` (push, pull_request).
    pub branches: Vec<String>,
    /// `branches-ignore`.
    pub branches_ignore: Vec<String>,
    /// `tags` (push).
    pub tags: Vec<String>,
    /// `tags-ignore`.
    pub tags_ignore: Vec<String>,
    /// `paths`.
    pub paths: Vec<String>,
    /// `paths-ignore`.
    pub paths_ignore: Vec<String>,
    /// `types` (activity types).
    pub types: Vec<String>,
    /// `workflows` of `workflow_run`: the workflows whose runs trigger this one.
    pub workflows: Vec<String>,
    /// `cron` entries of `schedule`.
    pub cron: Vec<String>,
    /// `inputs` of `workflow_dispatch` / `workflow_call`.
    pub inputs: IndexMap<String, Input>,
    /// `outputs` of `workflow_call`.
    pub outputs: IndexMap<String, CallOutput>,
    /// `secrets` of `workflow_call`: name → required.
    pub secrets: IndexMap<String, bool>,
}

/// The type of an input.
#[derive(Debug, Clone, PartialEq)]
pub enum InputType {
    /// `string` (the default).
    String,
    /// `boolean`.
    Boolean,
    /// `number`.
    Number,
    /// `choice` with its options (workflow_dispatch).
    Choice(Vec<String>),
    /// `environment` (workflow_dispatch).
    Environment,
}

/// An input of `workflow_dispatch`, `workflow_call` or a composite action.
#[derive(Debug, Clone)]
pub struct Input {
    /// `description`.
    pub description: Option<String>,
    /// `required`.
    pub required: bool,
    /// `default` (may be an expression for `workflow_call`).
    pub default: Option<Text>,
    /// `type`.
    pub kind: InputType,
    /// An action input's `deprecationMessage`: the runner warns with it when a step gives the
    /// input.
    pub deprecation_message: Option<String>,
    /// Where the input is declared.
    pub span: Span,
}

/// An output of a reusable workflow or a composite action.
#[derive(Debug, Clone)]
pub struct CallOutput {
    /// `description`.
    pub description: Option<String>,
    /// `value`.
    pub value: Text,
}

/// `defaults.run`.
#[derive(Debug, Clone, Default)]
pub struct RunDefaults {
    /// `shell`.
    pub shell: Option<Text>,
    /// `working-directory`.
    pub working_directory: Option<Text>,
}

/// One job.
#[derive(Debug, Clone)]
pub struct Job {
    /// The job id (its key under `jobs`).
    pub id: Name,
    /// `name`.
    pub name: Option<Text>,
    /// `needs`.
    pub needs: Vec<Name>,
    /// `if`.
    pub condition: Option<Text>,
    /// `env`.
    pub env: Env,
    /// `defaults.run`.
    pub defaults: RunDefaults,
    /// `outputs`.
    pub outputs: TextMap,
    /// `timeout-minutes` (default 360).
    pub timeout_minutes: Option<Text>,
    /// `continue-on-error`.
    pub continue_on_error: Option<Text>,
    /// `strategy`.
    pub strategy: Option<Strategy>,
    /// `runs-on` (empty for a reusable-workflow call).
    pub runs_on: RunsOn,
    /// `permissions`.
    pub permissions: Option<Permissions>,
    /// `concurrency`.
    pub concurrency: Option<Concurrency>,
    /// `environment`: the deployment environment the job targets.
    pub environment: Option<Environment>,
    /// `container` given as an expression: the job runs on the host when it evaluates to
    /// nothing (`null` or `''`), and fails with a clear message when it names an image.
    pub container: Option<Text>,
    /// Keys kiln cannot run on the host (`services`, a literal `container`), each with its
    /// position. The workflow still loads: `kiln ci validate` reports them as errors, and a run
    /// that includes this job is refused before anything runs (see
    /// [`crate::WorkflowSet::refusal`]); a run of other jobs goes ahead.
    pub refused: Vec<Diagnostic>,
    /// What the job does.
    pub body: JobBody,
}

/// `concurrency`: at most one run (or job) of a group runs and one waits; a newer one replaces
/// the waiting one, and with `cancel-in-progress` also cancels the running one.
#[derive(Debug, Clone)]
pub struct Concurrency {
    /// `group` (or the whole value when it is a string); compared case-insensitively.
    pub group: Text,
    /// `cancel-in-progress`: `true`, `false` or an expression.
    pub cancel_in_progress: Option<Text>,
    /// `queue`: `single` (the default, a newer waiter replaces the waiting one) or `max`
    /// (waiters line up), or an expression giving one.
    pub queue: Option<Text>,
}

/// `environment`: a name, or `{ name, url }` (both may hold expressions).
#[derive(Debug, Clone)]
pub struct Environment {
    pub name: Text,
    pub url: Option<Text>,
}

/// `permissions` of the `GITHUB_TOKEN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permissions {
    /// `read-all`.
    ReadAll,
    /// `write-all`.
    WriteAll,
    /// Per scope (`{}` gives none).
    Scopes(IndexMap<String, Access>),
}

/// The access one `permissions` scope grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    None,
}

/// `runs-on`: labels (each may be an expression) and an optional runner group.
#[derive(Debug, Clone, Default)]
pub struct RunsOn {
    /// The labels, all of which the runner must have.
    pub labels: Vec<Text>,
    /// `group`.
    pub group: Option<Text>,
}

/// A job runs steps or calls a reusable workflow.
#[derive(Debug, Clone)]
pub enum JobBody {
    /// `steps`.
    Steps(Vec<Step>),
    /// `uses: ./.github/workflows/x.yml`.
    Call(Call),
}

/// A call of a local reusable workflow.
#[derive(Debug, Clone)]
pub struct Call {
    /// The `uses` path, e.g. `./.github/workflows/build.yml`.
    pub uses: Text,
    /// `with`.
    pub with: TextMap,
    /// `secrets`.
    pub secrets: CallSecrets,
}

/// `secrets` of a reusable-workflow call.
#[derive(Debug, Clone)]
pub enum CallSecrets {
    /// `secrets: inherit`.
    Inherit,
    /// Explicit mapping (possibly empty).
    Map(TextMap),
}

/// `strategy`.
#[derive(Debug, Clone)]
pub struct Strategy {
    /// `matrix`; without one the job runs once, with `strategy`'s defaults.
    pub matrix: Option<Matrix>,
    /// `fail-fast` (default true).
    pub fail_fast: Option<Text>,
    /// `max-parallel`.
    pub max_parallel: Option<Text>,
    /// Where `strategy` is written.
    pub span: Span,
}

/// `strategy.matrix`, as written.
#[derive(Debug, Clone)]
pub enum Matrix {
    /// The whole matrix is one expression, e.g. `${{ fromJSON(needs.a.outputs.m) }}`.
    Expr(Text),
    /// Vectors plus include/exclude.
    Table(MatrixTable),
}

/// A matrix written as a table.
#[derive(Debug, Clone, Default)]
pub struct MatrixTable {
    /// The vectors, in order: name → values (or an expression giving the list).
    pub vectors: IndexMap<String, Vector>,
    /// `include`.
    pub include: Option<Vector>,
    /// `exclude`.
    pub exclude: Option<Vector>,
}

/// A list in a matrix, literal or an expression that evaluates to one.
#[derive(Debug, Clone)]
pub enum Vector {
    /// Values as written (strings may hold `${{ }}`).
    List(Vec<serde_json::Value>, Span),
    /// An expression giving the list.
    Expr(Text),
}

/// One step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Where the step is written.
    pub span: Span,
    /// `id`.
    pub id: Option<Name>,
    /// `name`.
    pub name: Option<Text>,
    /// `if`.
    pub condition: Option<Text>,
    /// `run` or `uses`.
    pub action: StepAction,
    /// `env`.
    pub env: Env,
    /// `shell`.
    pub shell: Option<Text>,
    /// `working-directory`.
    pub working_directory: Option<Text>,
    /// `continue-on-error`.
    pub continue_on_error: Option<Text>,
    /// `timeout-minutes`.
    pub timeout_minutes: Option<Text>,
    /// `background: true`: the step runs beside the job's next steps until a `wait`,
    /// `wait-all` or `cancel` step (or the job's end) completes it.
    pub background: bool,
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum StepAction {
    /// `run`.
    Run(Text),
    /// `uses` with `with`.
    Uses {
        /// The resolved action.
        action: ActionRef,
        /// The `uses` text as written.
        uses: Text,
        /// `with`.
        with: Mapping,
    },
    /// `wait`: blocks until these background steps (by `id`) finish.
    Wait(Vec<Name>),
    /// `wait-all`: blocks until every background step not yet waited for finishes.
    WaitAll,
    /// `cancel`: stops this background step (by `id`).
    Cancel(Name),
    /// `parallel`: these steps run as background steps, then are waited for together.
    Parallel(Vec<Step>),
}

impl StepAction {
    /// A step that only waits for or cancels background steps (or groups them): it runs no
    /// process of its own and has no `if`.
    pub fn is_control(&self) -> bool {
        !matches!(self, StepAction::Run(_) | StepAction::Uses { .. })
    }
}

/// Every step of `steps` and of the `parallel` groups among them, in order.
pub fn each_step(steps: &[Step]) -> impl Iterator<Item = &Step> {
    steps.iter().flat_map(|step| {
        let members: &[Step] = match &step.action {
            StepAction::Parallel(members) => members,
            _ => &[],
        };
        std::iter::once(step).chain(members)
    })
}

/// An action kiln can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionRef {
    /// One of the actions kiln implements natively.
    Builtin(Builtin),
    /// `./path` to a directory holding `action.yml` with `runs.using: composite`.
    Local(String),
    /// An action kiln cannot run (another repository's, or `docker://`): the job that uses it
    /// carries the refusal, so that runs of the other jobs go ahead.
    Remote(String),
}

/// The actions kiln implements natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// `actions/checkout`.
    Checkout,
    /// `actions/upload-artifact`.
    UploadArtifact,
    /// `actions/download-artifact`.
    DownloadArtifact,
    /// `actions/cache`.
    Cache,
    /// `actions/cache/restore`: the restore half of `actions/cache`, without the save at the
    /// job's end.
    CacheRestore,
    /// `actions/cache/save`: saves at once, where the step stands.
    CacheSave,
    /// `actions/setup-node`.
    SetupNode,
    /// `actions/setup-python`.
    SetupPython,
}

impl Builtin {
    /// Every built-in with its `owner/repo`.
    pub const ALL: &[(&'static str, Builtin)] = &[
        ("actions/checkout", Builtin::Checkout),
        ("actions/upload-artifact", Builtin::UploadArtifact),
        ("actions/download-artifact", Builtin::DownloadArtifact),
        ("actions/cache", Builtin::Cache),
        ("actions/cache/restore", Builtin::CacheRestore),
        ("actions/cache/save", Builtin::CacheSave),
        ("actions/setup-node", Builtin::SetupNode),
        ("actions/setup-python", Builtin::SetupPython),
    ];

    /// The `with` keys the action accepts (GitHub warns on others; so does kiln).
    pub fn inputs(self) -> &'static [&'static str] {
        match self {
            Builtin::Checkout => &[
                "repository",
                "ref",
                "token",
                "ssh-key",
                "ssh-known-hosts",
                "ssh-strict",
                "persist-credentials",
                "path",
                "clean",
                "filter",
                "sparse-checkout",
                "sparse-checkout-cone-mode",
                "fetch-depth",
                "fetch-tags",
                "show-progress",
                "lfs",
                "submodules",
                "set-safe-directory",
                "github-server-url",
            ],
            Builtin::UploadArtifact => &[
                "name",
                "path",
                "if-no-files-found",
                "retention-days",
                "compression-level",
                "overwrite",
                "include-hidden-files",
            ],
            Builtin::DownloadArtifact => &[
                "name",
                "artifact-ids",
                "path",
                "pattern",
                "merge-multiple",
                "github-token",
                "repository",
                "run-id",
            ],
            Builtin::Cache => &[
                "path",
                "key",
                "restore-keys",
                "upload-chunk-size",
                "enableCrossOsArchive",
                "fail-on-cache-miss",
                "lookup-only",
                "save-always",
            ],
            Builtin::CacheRestore => &[
                "path",
                "key",
                "restore-keys",
                "enableCrossOsArchive",
                "fail-on-cache-miss",
                "lookup-only",
            ],
            Builtin::CacheSave => &["path", "key", "upload-chunk-size", "enableCrossOsArchive"],
            Builtin::SetupNode => &[
                "node-version",
                "node-version-file",
                "architecture",
                "check-latest",
                "registry-url",
                "scope",
                "token",
                "cache",
                "cache-dependency-path",
                "always-auth",
            ],
            Builtin::SetupPython => &[
                "python-version",
                "python-version-file",
                "cache",
                "architecture",
                "check-latest",
                "token",
                "cache-dependency-path",
                "update-environment",
                "allow-prereleases",
            ],
        }
    }
}

/// Resolves a `uses` value of a step; `None` when kiln cannot run that action.
pub fn resolve_action(uses: &str) -> Option<ActionRef> {
    if uses.starts_with("./") {
        return Some(ActionRef::Local(uses.to_owned()));
    }
    let (repo, version) = uses.split_once('@')?;
    if version.is_empty() {
        return None;
    }
    Builtin::ALL
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(repo))
        .map(|(_, b)| ActionRef::Builtin(*b))
}

/// GitHub's refusal of a built-in action's version it no longer runs (a warning in kiln,
/// whose own implementation still runs it): such a job fails on GitHub as it is set up
/// ("This request has been automatically failed because it uses a deprecated version of
/// ..."). The artifact actions before v4 (GitHub's changelog of
/// 2024-04-16: v3 unusable from 2025-01-30, v1 and v2 before it); the cache actions before
/// v4.2.0 or v3.4.0 (actions/cache's README: the legacy cache service shut down on
/// 2025-02-01, so v1 and v2, and a tag pinned below those releases, fail). A moving major
/// tag (`@v3` of the cache, `@v4`), a branch or a commit SHA is not judged.
pub fn deprecated_builtin(uses: &str) -> Option<String> {
    let (repo, version) = uses.split_once('@')?;
    let (_, builtin) = Builtin::ALL
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(repo))?;
    let digits = version.strip_prefix(['v', 'V'])?;
    let mut parts = digits.split('.');
    let major: u64 = parts.next()?.parse().ok()?;
    let minor: Option<u64> = match parts.next() {
        Some(m) => Some(m.parse().ok()?),
        None => None,
    };
    let deprecated = match builtin {
        Builtin::UploadArtifact | Builtin::DownloadArtifact => major < 4,
        Builtin::Cache | Builtin::CacheRestore | Builtin::CacheSave => {
            major < 3 || minor.is_some_and(|m| (major == 3 && m < 4) || (major == 4 && m < 2))
        }
        _ => false,
    };
    deprecated.then(|| {
        format!(
            "This request has been automatically failed because it uses a deprecated version \
             of `{}: {version}`",
            repo.to_ascii_lowercase()
        )
    })
}

/// `runs` of a JavaScript action (`using: node20`): scripts run by the host's `node`.
#[derive(Debug, Clone)]
pub struct NodeRuns {
    /// `using`, e.g. `node20`.
    pub using: String,
    /// `main`, relative to the action's directory.
    pub main: String,
    /// `pre` (run just before `main`: a local action is only found once the step runs).
    pub pre: Option<String>,
    /// `pre-if` (default `always()`).
    pub pre_if: Option<Text>,
    /// `post` (run when the job ends, in reverse order of the steps).
    pub post: Option<String>,
    /// `post-if` (default `always()`).
    pub post_if: Option<Text>,
}

/// A local action (`action.yml`): composite steps, or a JavaScript action.
#[derive(Debug, Clone)]
pub struct CompositeAction {
    /// `name`.
    pub name: String,
    /// `inputs`.
    pub inputs: IndexMap<String, Input>,
    /// `outputs`.
    pub outputs: IndexMap<String, CallOutput>,
    /// `runs.steps` (composite actions).
    pub steps: Vec<Step>,
    /// `runs` of a JavaScript action; `None` for a composite one.
    pub node: Option<NodeRuns>,
    /// Injection risks in its steps, rendered as lines (`file:line:col: warning: ...`); the
    /// step that runs it logs them as warnings.
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_github_no_longer_runs() {
        for gone in [
            "actions/upload-artifact@v3",
            "actions/upload-artifact@v3.1.2",
            "actions/download-artifact@v2",
            "actions/cache@v2",
            "actions/cache@v1.1.0",
            "actions/cache@v3.3.1",
            "actions/cache/restore@v3.3.2",
            "actions/cache@v4.0.2",
        ] {
            assert!(deprecated_builtin(gone).is_some(), "{gone}");
        }
        for fine in [
            "actions/upload-artifact@v4",
            "actions/download-artifact@v4.1.8",
            "actions/cache@v3",
            "actions/cache@v3.4.0",
            "actions/cache@v4",
            "actions/cache@v4.2.0",
            "actions/cache@0c45773b623bea8c8e75f6c82b208c3cf94ea4f9",
            "actions/upload-artifact@main",
            "actions/checkout@v1",
            "actions/setup-node@v1",
        ] {
            assert!(deprecated_builtin(fine).is_none(), "{fine}");
        }
    }
}
