//! Strict decoding of a workflow file (and of a composite `action.yml`) from the positioned YAML
//! tree into [`crate::workflow`] types.
//!
//! Like GitHub, unknown keys are errors; unlike GitHub, every mistake in the file is collected
//! before anything is reported. Every `${{ }}` is parsed where it is written, with the named
//! values GitHub's context-availability table allows at that key, so `matrix` in a job without a
//! strategy or `secrets` in a step's `if` fail at load time rather than mid-run.

use indexmap::IndexMap;
use kiln_expr::{FunctionSig, ParseOptions, Template, WORKFLOW_FUNCTIONS};
use kiln_spec::diag::{Code, Diagnostic, Diagnostics};
use kiln_spec::source::Span;
use kiln_spec::suggest::closest;
use kiln_spec::yaml::{Key, Node, Value as Y};

use crate::condition;
use crate::workflow::{
    Access, ActionRef, Call, CallOutput, CallSecrets, CompositeAction, Concurrency, Env,
    Environment, Input, InputType, Job, JobBody, Mapping, Matrix, MatrixTable, Name, NodeRuns,
    Permissions, RunDefaults, RunsOn, Step, StepAction, Strategy, Text, TextMap, Trigger, Vector,
    resolve_action,
};

/// Where an expression is written decides which named values and functions it may use.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    names: Vec<&'static str>,
    functions: &'static [FunctionSig],
}

const STATUS_AND_HASH: &[FunctionSig] = WORKFLOW_FUNCTIONS;
const NO_FUNCTIONS: &[FunctionSig] = &[];

fn status_only() -> &'static [FunctionSig] {
    WORKFLOW_FUNCTIONS
        .iter()
        .position(|f| f.name == "hashFiles")
        .map_or(WORKFLOW_FUNCTIONS, |i| &WORKFLOW_FUNCTIONS[..i])
}

fn hash_only() -> &'static [FunctionSig] {
    WORKFLOW_FUNCTIONS
        .iter()
        .position(|f| f.name == "hashFiles")
        .map_or(NO_FUNCTIONS, |i| &WORKFLOW_FUNCTIONS[i..])
}

impl Scope {
    fn new(names: &[&'static str], functions: &'static [FunctionSig]) -> Scope {
        Scope {
            names: names.to_vec(),
            functions,
        }
    }

    fn options(&self) -> ParseOptions<'_> {
        ParseOptions {
            named_values: &self.names,
            extra_functions: self.functions,
        }
    }
}

// GitHub's context availability table, one row per key kiln evaluates.
const RUN_NAME: &[&str] = &["github", "inputs", "vars"];
const WORKFLOW_ENV: &[&str] = &["github", "secrets", "inputs", "vars"];
const JOB_IF: &[&str] = &["github", "needs", "vars", "inputs"];
const JOB_PLAIN: &[&str] = &["github", "needs", "strategy", "matrix", "vars", "inputs"];
const JOB_ENV: &[&str] = &[
    "github", "needs", "strategy", "matrix", "vars", "secrets", "inputs",
];
const JOB_DEFAULTS: &[&str] = &[
    "github", "needs", "strategy", "matrix", "env", "vars", "inputs",
];
const STEP_ALL: &[&str] = &[
    "github", "needs", "strategy", "matrix", "job", "runner", "env", "vars", "secrets", "steps",
    "inputs",
];
const STEP_IF: &[&str] = &[
    "github", "needs", "strategy", "matrix", "job", "runner", "env", "vars", "steps", "inputs",
];
const STRATEGY: &[&str] = &["github", "needs", "vars", "inputs"];
const CALL_SECRETS: &[&str] = &[
    "github", "needs", "strategy", "matrix", "secrets", "inputs", "vars",
];
const CALL_INPUT_DEFAULT: &[&str] = &["github", "inputs", "vars"];
// The runner's action schema (`input-default-context`), with `hashFiles`.
const ACTION_INPUT_DEFAULT: &[&str] = &["github", "strategy", "matrix", "job", "runner"];

/// Whose inputs are being read: each has its own keys, types and default contexts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InputsOf {
    /// `on.workflow_dispatch.inputs`.
    Dispatch,
    /// `on.workflow_call.inputs` (`type` required).
    Call,
    /// An `action.yml`'s `inputs`: the runner reads `default` and takes any other key.
    Action,
}
const CALL_OUTPUT: &[&str] = &["github", "jobs", "vars", "inputs"];
// Composite actions see no `secrets` and no `needs`.
const COMPOSITE_STEP: &[&str] = &[
    "github", "strategy", "matrix", "job", "runner", "env", "vars", "steps", "inputs",
];

const WORKFLOW_KEYS: &[&str] = &[
    "name",
    // GitHub's workflow schema (workflow-v1.0) takes a `description` of the workflow.
    "description",
    "run-name",
    "on",
    "env",
    "defaults",
    "permissions",
    "concurrency",
    "jobs",
];
const JOB_KEYS: &[&str] = &[
    "name",
    "needs",
    "if",
    "runs-on",
    "env",
    "defaults",
    "outputs",
    "timeout-minutes",
    "continue-on-error",
    "strategy",
    "steps",
    "uses",
    "with",
    "secrets",
    "permissions",
    "concurrency",
    "environment",
    "services",
    "container",
    // GitHub's schema (`job-factory`) also takes these two; neither changes what runs on a
    // host: `snapshot` images the runner after the job for later jobs to start from.
    "snapshot",
    "cancel-timeout-minutes",
];
const CALL_JOB_KEYS: &[&str] = &[
    "name",
    "needs",
    "if",
    "uses",
    "with",
    "secrets",
    "permissions",
    "concurrency",
    "strategy",
];
const STEP_KEYS: &[&str] = &[
    "id",
    "name",
    "if",
    "run",
    "uses",
    "with",
    "env",
    "shell",
    "working-directory",
    "continue-on-error",
    "timeout-minutes",
];
/// A workflow's step keys: [`STEP_KEYS`] and those of GitHub's parallel steps (changelog
/// 2026-06-25), which a composite action's steps may not use.
static WORKFLOW_STEP_KEYS: std::sync::LazyLock<Vec<&str>> = std::sync::LazyLock::new(|| {
    STEP_KEYS
        .iter()
        .chain(PARALLEL_STEP_KEYS)
        .copied()
        .collect()
});
/// The keys of GitHub's parallel steps: a step in the background, and the steps that wait for,
/// cancel or group such steps.
const PARALLEL_STEP_KEYS: &[&str] = &["background", "wait", "wait-all", "cancel", "parallel"];
/// The keys that make a step a control step (see [`StepAction::is_control`]).
const CONTROL_STEP_KEYS: &[&str] = &["wait", "wait-all", "cancel", "parallel"];
/// The `GITHUB_TOKEN` scopes GitHub documents for `permissions`, as its workflow schema
/// (`permissions-mapping`) lists them.
const PERMISSION_SCOPES: &[&str] = &[
    "actions",
    "artifact-metadata",
    "attestations",
    "checks",
    "contents",
    "copilot-requests",
    "deployments",
    "discussions",
    "id-token",
    "issues",
    "models",
    "packages",
    "pages",
    "pull-requests",
    "repository-projects",
    "security-events",
    "statuses",
    "vulnerability-alerts",
];

/// The access levels a scope takes: most take all three; a few only two (GitHub refuses
/// `id-token: read` with "Unexpected value 'read'").
fn access_levels(scope: &str) -> &'static [&'static str] {
    match scope {
        "id-token" | "copilot-requests" => &["write", "none"],
        "models" | "vulnerability-alerts" => &["read", "none"],
        _ => &["read", "write", "none"],
    }
}
const EVENTS: &[&str] = &[
    "branch_protection_rule",
    "check_run",
    "check_suite",
    "create",
    "delete",
    "deployment",
    "deployment_status",
    "discussion",
    "discussion_comment",
    "fork",
    "gollum",
    "image_version",
    "issue_comment",
    "issues",
    "label",
    "merge_group",
    "milestone",
    "page_build",
    "project",
    "project_card",
    "project_column",
    "public",
    "pull_request",
    "pull_request_comment",
    "pull_request_review",
    "pull_request_review_comment",
    "pull_request_target",
    "push",
    "registry_package",
    "release",
    "repository_dispatch",
    "schedule",
    "status",
    "watch",
    "workflow_call",
    "workflow_dispatch",
    "workflow_run",
];

/// Whether `uses` names another repository's reusable workflow, as GitHub's workflow syntax
/// writes one: `{owner}/{repo}/.github/workflows/{file}.yml@{ref}` (or `.yaml`).
fn remote_workflow(uses: &str) -> bool {
    let Some((path, reference)) = uses.split_once('@') else {
        return false;
    };
    let mut parts = path.splitn(3, '/');
    let (Some(owner), Some(repo), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !owner.is_empty()
        && !repo.is_empty()
        && !reference.is_empty()
        && file
            .strip_prefix(".github/workflows/")
            .is_some_and(|f| !f.contains('/') && (f.ends_with(".yml") || f.ends_with(".yaml")))
}

/// Collects diagnostics while decoding one file.
pub(crate) struct Decoder<'a> {
    pub(crate) source: &'a str,
    pub(crate) diags: &'a mut Diagnostics,
    /// Findings that do not stop the workflow (injection risks), reported beside it.
    pub(crate) warnings: Vec<Diagnostic>,
    /// The unknown actions of the job being decoded: they refuse the runs that include it.
    pub(crate) step_refusals: Vec<Diagnostic>,
}

/// The decoded top level of a workflow (the path is filled in by the loader).
pub(crate) struct WorkflowParts {
    pub name: Option<String>,
    pub run_name: Option<Text>,
    pub on: IndexMap<String, Trigger>,
    pub env: Env,
    pub defaults: RunDefaults,
    pub permissions: Option<Permissions>,
    pub concurrency: Option<Concurrency>,
    pub jobs: IndexMap<String, Job>,
}

impl Decoder<'_> {
    fn emit(&mut self, code: Code, span: Span, path: &str, message: impl Into<String>) {
        self.diags.push(Diagnostic::new(code, span, path, message));
    }

    fn wrong_type(&mut self, node: &Node, path: &str, expected: &str) {
        self.diags.push(
            Diagnostic::new(
                Code::WrongType,
                node.span,
                path,
                format!(
                    "`{path}` must be {expected}, found {}",
                    node.value.type_name()
                ),
            )
            .label(format!("expected {expected}")),
        );
    }

    fn map<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [(Key, Node)]> {
        match &node.value {
            Y::Map(entries) => Some(entries),
            _ => {
                self.wrong_type(node, path, "a mapping");
                None
            }
        }
    }

    /// Reports keys outside `allowed`, each with the closest allowed key as a suggestion.
    fn check_keys(&mut self, entries: &[(Key, Node)], allowed: &[&str], path: &str) {
        for (key, _) in entries {
            if allowed.contains(&key.text.as_str()) {
                continue;
            }
            let key_path = join(path, &key.text);
            let mut d = Diagnostic::new(
                Code::UnknownKey,
                key.span,
                key_path,
                format!("unknown key `{}` in `{}`", key.text, display_path(path)),
            )
            .label("not allowed here");
            d = match closest(&key.text, allowed.iter().copied()) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.help(format!("allowed keys: {}", allowed.join(", "))),
            };
            self.diags.push(d);
        }
    }

    fn scalar_text(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Y::String { text, .. } => Some(text.clone()),
            Y::Bool(b) => Some(b.to_string()),
            // GitHub reads the number and prints it back (`go-version: 1.20` gives "1.2",
            // `0x1F` gives "31"), as it does for a number in an expression.
            Y::Number(n) => Some(kiln_expr::Value::Number(*n).to_display_string()),
            _ => {
                self.wrong_type(node, path, "a string");
                None
            }
        }
    }

    /// A `timeout-minutes`: a number or a `${{ }}` expression, as the workflow schema's
    /// `number-strategy-context` / `number-steps-context` allow. GitHub refuses a quoted `'10'`
    /// ("Unexpected value '10'"); an expression giving a string is refused when it runs.
    fn minutes(&mut self, node: &Node, path: &str, scope: &Scope) -> Option<Text> {
        match &node.value {
            Y::Number(_) => self.text(node, path, scope),
            Y::String { text, .. } if text.contains("${{") => self.text(node, path, scope),
            Y::String { text, .. } => {
                self.diags.push(
                    Diagnostic::new(
                        Code::WrongType,
                        node.span,
                        path,
                        format!("`{path}` must be a number, found the string '{text}'"),
                    )
                    .label("GitHub refuses this: Unexpected value")
                    .help(match text.trim().parse::<f64>() {
                        Ok(_) => format!("write it without quotes: `timeout-minutes: {}`", text.trim()),
                        Err(_) => "write a number of minutes, or `${{ fromJSON(...) }}` to read one from a string".to_owned(),
                    }),
                );
                None
            }
            _ => {
                self.wrong_type(node, path, "a number");
                None
            }
        }
    }

    fn plain_string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Y::String { text, .. } => Some(text.clone()),
            _ => {
                self.wrong_type(node, path, "a string");
                None
            }
        }
    }

    /// A plain string key (a `description`): null reads as '', as in [`Self::string_text`].
    fn string_value(&mut self, node: &Node, path: &str) -> Option<String> {
        match node.value {
            Y::Null => Some(String::new()),
            _ => self.scalar_text(node, path),
        }
    }

    /// A key whose schema type is a string (`run`, a job's or step's `name`): a null value (the
    /// key with nothing after it, or only a comment) reads as '', as GitHub's template reader
    /// converts a null literal wherever a string is allowed. Keys typed boolean or number refuse
    /// it, so those keep [`Self::text`].
    fn string_text(&mut self, node: &Node, path: &str, scope: &Scope) -> Option<Text> {
        if matches!(node.value, Y::Null) {
            return Some(Text {
                text: String::new(),
                span: node.span,
            });
        }
        self.text(node, path, scope)
    }

    /// A value that may hold `${{ }}`, checked against `scope`.
    pub(crate) fn text(&mut self, node: &Node, path: &str, scope: &Scope) -> Option<Text> {
        let text = self.scalar_text(node, path)?;
        let text = Text {
            text,
            span: node.span,
        };
        self.check_template(&text, path, scope);
        Some(text)
    }

    fn check_template(&mut self, text: &Text, path: &str, scope: &Scope) {
        if let Err(e) = Template::parse(&text.text, &scope.options()) {
            self.bad_expression(text, path, &e.message, e.offset);
        }
    }

    /// An `if`: an expression with or without `${{ }}`; a null one is '' (then `success()`).
    fn condition(&mut self, node: &Node, path: &str, scope: &Scope) -> Option<Text> {
        let text = match node.value {
            Y::Null => String::new(),
            _ => self.scalar_text(node, path)?,
        };
        let text = Text {
            text,
            span: node.span,
        };
        if let Err((message, offset)) = condition::check(&text.text, &scope.options()) {
            self.bad_expression(&text, path, &message, offset);
        }
        Some(text)
    }

    fn bad_expression(&mut self, text: &Text, path: &str, message: &str, offset: usize) {
        let unknown = message.starts_with("Unrecognized named-value");
        let code = if unknown {
            Code::UnknownReference
        } else {
            Code::BadExpression
        };
        // Offsets are exact for plain scalars; quoted ones shift by the quote, so clamp.
        let span = text.span.sub(offset, 1);
        let mut d = Diagnostic::new(code, span, path, format!("invalid expression: {message}"))
            .label("here");
        if unknown && message.contains("'matrix'") {
            d = d.help("`matrix` is not available in a job's `if`, which GitHub evaluates before expanding the matrix");
        } else if unknown {
            d = d.help(
                "GitHub's context availability table decides which contexts each key may read",
            );
        }
        self.diags.push(d);
    }

    fn text_map(&mut self, node: &Node, path: &str, scope: &Scope) -> TextMap {
        let mut out = TextMap::new();
        if matches!(node.value, Y::Null) {
            return out;
        }
        let Some(entries) = self.map(node, path) else {
            return out;
        };
        for (key, value) in entries {
            let key_path = join(path, &key.text);
            let text = match &value.value {
                Y::Null => Some(Text {
                    text: String::new(),
                    span: value.span,
                }),
                _ => self.text(value, &key_path, scope),
            };
            if let Some(text) = text {
                out.insert(key.text.clone(), text);
            }
        }
        out
    }

    /// An `env:` or a step's `with:` block: a mapping, or one `${{ }}` expression standing for
    /// the whole mapping (GitHub's schema allows expressions at these mappings themselves).
    fn mapping(&mut self, node: &Node, path: &str, scope: &Scope) -> Mapping {
        if let Y::String { text, .. } = &node.value
            && condition::lone_expression(text.trim()).is_some()
        {
            return Mapping {
                entries: TextMap::new(),
                expression: self.text(node, path, scope),
            };
        }
        Mapping {
            entries: self.text_map(node, path, scope),
            expression: None,
        }
    }

    fn string_list(&mut self, node: &Node, path: &str) -> Vec<String> {
        match &node.value {
            Y::Seq(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, n)| self.scalar_text(n, &format!("{path}[{i}]")))
                .collect(),
            Y::Null => Vec::new(),
            _ => self.scalar_text(node, path).into_iter().collect(),
        }
    }

    fn boolean(&mut self, node: &Node, path: &str) -> bool {
        match &node.value {
            Y::Bool(b) => *b,
            _ => {
                self.wrong_type(node, path, "a boolean");
                false
            }
        }
    }

    /// The whole workflow file.
    pub(crate) fn workflow(&mut self, root: &Node) -> Option<WorkflowParts> {
        if matches!(root.value, Y::Null) {
            // An empty file or one of comments only: say so rather than "`` must be a mapping".
            self.diags.push(
                Diagnostic::new(
                    Code::WrongType,
                    root.span,
                    "",
                    "the workflow file is empty: it holds no `on` and no `jobs`",
                )
                .label("no workflow here")
                .help("write the workflow, or remove the file (GitHub reports it as an invalid workflow)"),
            );
            return None;
        }
        let entries = self.map(root, "")?;
        self.check_keys(entries, WORKFLOW_KEYS, "");
        let mut parts = WorkflowParts {
            name: None,
            run_name: None,
            on: IndexMap::new(),
            env: Env::default(),
            defaults: RunDefaults::default(),
            permissions: None,
            concurrency: None,
            jobs: IndexMap::new(),
        };
        let mut seen_on = false;
        let mut seen_jobs = false;
        for (key, value) in entries {
            match key.text.as_str() {
                // An empty name (or none after the key) shows the file, as no name.
                "name" => {
                    parts.name = self.string_value(value, "name").filter(|n| !n.is_empty());
                }
                "run-name" => {
                    parts.run_name = self.text(value, "run-name", &Scope::new(RUN_NAME, &[]));
                }
                "on" => {
                    seen_on = true;
                    parts.on = self.triggers(value);
                }
                "env" => parts.env = self.mapping(value, "env", &Scope::new(WORKFLOW_ENV, &[])),
                "defaults" => {
                    parts.defaults = self.defaults(value, "defaults", &Scope::new(JOB_IF, &[]));
                }
                "jobs" => {
                    seen_jobs = true;
                    parts.jobs = self.jobs(value, &parts.on);
                }
                "permissions" => parts.permissions = self.permissions(value, "permissions"),
                "concurrency" => {
                    parts.concurrency =
                        self.concurrency(value, "concurrency", &Scope::new(RUN_NAME, &[]));
                }
                _ => {}
            }
        }
        if !seen_on {
            self.missing(root.span, "", "on", "the events that trigger the workflow");
        }
        if !seen_jobs {
            self.missing(root.span, "", "jobs", "at least one job");
        }
        Some(parts)
    }

    fn missing(&mut self, span: Span, path: &str, key: &str, what: &str) {
        let span = Span::new(span.file, span.start, span.start);
        self.diags.push(
            Diagnostic::new(
                Code::MissingKey,
                span,
                path,
                format!("`{}` is missing `{key}`", display_path(path)),
            )
            .label(format!("add `{key}:` here"))
            .help(format!("`{key}` holds {what}")),
        );
    }

    fn triggers(&mut self, node: &Node) -> IndexMap<String, Trigger> {
        let mut out = IndexMap::new();
        match &node.value {
            Y::String { .. } => {
                if let Some(name) = self.event_name(node, "on") {
                    out.insert(name, Trigger::default());
                }
            }
            Y::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(name) = self.event_name(item, &format!("on[{i}]")) {
                        out.insert(name, Trigger::default());
                    }
                }
            }
            Y::Map(entries) => {
                for (key, value) in entries {
                    let path = format!("on.{}", key.text);
                    if !self.known_event(&key.text, key.span, &path) {
                        continue;
                    }
                    let trigger = self.trigger(&key.text, value, &path);
                    out.insert(key.text.clone(), trigger);
                }
            }
            _ => self.wrong_type(node, "on", "an event name, a list or a mapping"),
        }
        out
    }

    fn event_name(&mut self, node: &Node, path: &str) -> Option<String> {
        let name = self.plain_string(node, path)?;
        self.known_event(&name, node.span, path).then_some(name)
    }

    fn known_event(&mut self, name: &str, span: Span, path: &str) -> bool {
        if EVENTS.contains(&name) {
            return true;
        }
        let mut d = Diagnostic::new(
            Code::InvalidValue,
            span,
            path,
            format!("unknown event `{name}`"),
        )
        .label("not a GitHub Actions event");
        if let Some(s) = closest(name, EVENTS.iter().copied()) {
            d = d.help(format!("did you mean `{s}`?"));
        }
        self.diags.push(d);
        false
    }

    fn trigger(&mut self, event: &str, node: &Node, path: &str) -> Trigger {
        let mut trigger = Trigger::default();
        if event == "schedule" {
            return self.schedule(node, path);
        }
        if matches!(node.value, Y::Null) {
            return trigger;
        }
        let Some(entries) = self.map(node, path) else {
            return trigger;
        };
        let allowed: &[&str] = match event {
            "push" => &[
                "branches",
                "branches-ignore",
                "tags",
                "tags-ignore",
                "paths",
                "paths-ignore",
            ],
            "pull_request" | "pull_request_target" => &[
                "types",
                "branches",
                "branches-ignore",
                "paths",
                "paths-ignore",
            ],
            "merge_group" => &["types", "branches", "branches-ignore"],
            "image_version" => &["types", "names", "versions"],
            "workflow_dispatch" => &["inputs"],
            "workflow_call" => &["inputs", "outputs", "secrets"],
            "workflow_run" => &["workflows", "types", "branches", "branches-ignore"],
            _ => &["types"],
        };
        self.ignored_trigger_keys(entries, allowed, event, path);
        for (key, value) in entries {
            if !allowed.contains(&key.text.as_str()) {
                continue;
            }
            let p = join(path, &key.text);
            match key.text.as_str() {
                "branches" => trigger.branches = self.string_list(value, &p),
                "branches-ignore" => trigger.branches_ignore = self.string_list(value, &p),
                "tags" => trigger.tags = self.string_list(value, &p),
                "tags-ignore" => trigger.tags_ignore = self.string_list(value, &p),
                "paths" => trigger.paths = self.string_list(value, &p),
                "paths-ignore" => trigger.paths_ignore = self.string_list(value, &p),
                "types" => trigger.types = self.string_list(value, &p),
                "workflows" => trigger.workflows = self.string_list(value, &p),
                "inputs" => {
                    let of = if event == "workflow_call" {
                        InputsOf::Call
                    } else {
                        InputsOf::Dispatch
                    };
                    trigger.inputs = self.inputs(value, &p, of);
                }
                "outputs" => trigger.outputs = self.call_outputs(value, &p, CALL_OUTPUT, true),
                "secrets" => trigger.secrets = self.call_secrets_decl(value, &p),
                _ => {}
            }
        }
        for (a, b) in [
            ("branches", "branches-ignore"),
            ("tags", "tags-ignore"),
            ("paths", "paths-ignore"),
        ] {
            let both = entries.iter().any(|(k, _)| k.text == a)
                && entries.iter().any(|(k, _)| k.text == b);
            if both {
                self.emit(
                    Code::InvalidValue,
                    node.span,
                    path,
                    format!("`{a}` and `{b}` cannot be used together for the same event"),
                );
            }
        }
        trigger
    }

    /// Keys of an event's mapping that GitHub does not read. GitHub loads such a workflow
    /// and ignores them (a misspelt `branch:` makes a push workflow run for every branch; path
    /// filters on `merge_group` never filter), so they are warnings that say so, not errors.
    fn ignored_trigger_keys(
        &mut self,
        entries: &[(Key, Node)],
        allowed: &[&str],
        event: &str,
        path: &str,
    ) {
        for (key, _) in entries {
            if allowed.contains(&key.text.as_str()) {
                continue;
            }
            let mut d = Diagnostic::new(
                Code::UnknownKey,
                key.span,
                join(path, &key.text),
                format!(
                    "`{}` is not a setting of the `{event}` event: GitHub ignores it",
                    key.text
                ),
            )
            .label("ignored");
            d = if event == "merge_group" && key.text.starts_with("paths") {
                d.help("GitHub runs the workflow for every merge group: filter by paths in a job's `if` or a step instead")
            } else {
                match closest(&key.text, allowed.iter().copied()) {
                    Some(s) => d.help(format!("did you mean `{s}`?")),
                    None => d.help(format!("`{event}` takes: {}", allowed.join(", "))),
                }
            };
            self.warnings.push(d);
        }
    }

    fn schedule(&mut self, node: &Node, path: &str) -> Trigger {
        let mut trigger = Trigger::default();
        let Y::Seq(items) = &node.value else {
            self.wrong_type(node, path, "a list of `- cron:` entries");
            return trigger;
        };
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let Some(entries) = self.map(item, &p) else {
                continue;
            };
            self.check_keys(entries, &["cron"], &p);
            for (key, value) in entries {
                if key.text == "cron"
                    && let Some(cron) = self.plain_string(value, &join(&p, "cron"))
                {
                    if let Err(why) = crate::cron::check(&cron) {
                        self.emit(
                            Code::InvalidValue,
                            value.span,
                            &p,
                            format!("`{cron}` is not a valid cron expression: {why}"),
                        );
                    }
                    trigger.cron.push(cron);
                }
            }
        }
        trigger
    }

    pub(crate) fn inputs(
        &mut self,
        node: &Node,
        path: &str,
        of: InputsOf,
    ) -> IndexMap<String, Input> {
        let mut out = IndexMap::new();
        if matches!(node.value, Y::Null) {
            return out;
        }
        let Some(entries) = self.map(node, path) else {
            return out;
        };
        for (key, value) in entries {
            let p = join(path, &key.text);
            if let Some(input) = self.input(value, &p, of, key.span) {
                out.insert(key.text.clone(), input);
            }
        }
        out
    }

    fn input(&mut self, node: &Node, path: &str, of: InputsOf, span: Span) -> Option<Input> {
        let call = of == InputsOf::Call;
        let mut input = Input {
            description: None,
            required: false,
            default: None,
            kind: InputType::String,
            deprecation_message: None,
            span,
        };
        if matches!(node.value, Y::Null) {
            return Some(input);
        }
        let entries = self.map(node, path)?;
        if of == InputsOf::Action {
            return Some(self.action_input(entries, path, input));
        }
        let allowed: &[&str] = if call {
            &["description", "required", "default", "type"]
        } else {
            &["description", "required", "default", "type", "options"]
        };
        self.check_keys(entries, allowed, path);
        let mut options = Vec::new();
        let mut type_name = None;
        let mut default_span = None;
        for (key, value) in entries {
            let p = join(path, &key.text);
            match key.text.as_str() {
                "description" => input.description = self.string_value(value, &p),
                "required" => input.required = self.boolean(value, &p),
                "default" => {
                    input.default =
                        self.string_text(value, &p, &Scope::new(CALL_INPUT_DEFAULT, &[]));
                    default_span = Some(value.span);
                }
                "options" => options = self.string_list(value, &p),
                "type" => type_name = self.plain_string(value, &p).map(|t| (t, value.span)),
                _ => {}
            }
        }
        let types: &[&str] = if call {
            &["string", "boolean", "number"]
        } else {
            &["string", "boolean", "number", "choice", "environment"]
        };
        match type_name {
            None if call => {
                self.missing(node.span, path, "type", "`string`, `boolean` or `number`")
            }
            None => {}
            Some((t, span)) => {
                input.kind = match t.as_str() {
                    "string" => InputType::String,
                    "boolean" => InputType::Boolean,
                    "number" => InputType::Number,
                    "choice" if !call => InputType::Choice(options),
                    "environment" if !call => InputType::Environment,
                    _ => {
                        self.emit(
                            Code::InvalidValue,
                            span,
                            path,
                            format!("input type `{t}` is not one of {}", types.join(", ")),
                        );
                        InputType::String
                    }
                };
            }
        }
        if !call {
            self.check_dispatch_input(&input, node.span, default_span, path);
        }
        Some(input)
    }

    /// A dispatch input whose default its own type refuses, or a `choice` without options:
    /// the dispatch form could not offer or send it. Warnings: a run from the command line
    /// gives its own values.
    fn check_dispatch_input(
        &mut self,
        input: &Input,
        span: Span,
        default_span: Option<Span>,
        path: &str,
    ) {
        if let InputType::Choice(options) = &input.kind
            && options.is_empty()
        {
            self.warnings.push(
                Diagnostic::new(
                    Code::InvalidValue,
                    span,
                    path,
                    "a `choice` input has no `options` to choose from",
                )
                .help("list the values under `options:`"),
            );
        }
        let Some(default) = &input.default else {
            return;
        };
        let value = default.text.trim();
        let why = match &input.kind {
            InputType::Choice(options)
                if !options.is_empty() && !options.iter().any(|o| o == value) =>
            {
                Some(format!(
                    "is not one of its options ({})",
                    options.join(", ")
                ))
            }
            InputType::Boolean if value != "true" && value != "false" => {
                Some("is not a boolean (true or false)".to_owned())
            }
            InputType::Number if value.parse::<f64>().is_err() => {
                Some("is not a number".to_owned())
            }
            _ => None,
        };
        if let Some(why) = why {
            self.warnings.push(Diagnostic::new(
                Code::InvalidValue,
                default_span.unwrap_or(span),
                join(path, "default"),
                format!("the default `{value}` {why}"),
            ));
        }
    }

    /// An action's input as the runner reads it (action metadata syntax, `inputs`):
    /// `description`, `required` (GitHub does not enforce it; `'true'` quoted is common),
    /// `default` over the action's default contexts, `deprecationMessage`, and any other key.
    fn action_input(&mut self, entries: &[(Key, Node)], path: &str, mut input: Input) -> Input {
        for (key, value) in entries {
            let p = join(path, &key.text);
            match key.text.as_str() {
                "description" => input.description = self.string_value(value, &p),
                "required" => {
                    input.required = match &value.value {
                        Y::Bool(b) => *b,
                        Y::String { text, .. } => text.trim().eq_ignore_ascii_case("true"),
                        _ => self.boolean(value, &p),
                    };
                }
                "default" => {
                    let scope = Scope::new(ACTION_INPUT_DEFAULT, hash_only());
                    input.default = self.string_text(value, &p, &scope);
                }
                "deprecationMessage" => input.deprecation_message = self.string_value(value, &p),
                _ => {}
            }
        }
        input
    }

    pub(crate) fn call_outputs(
        &mut self,
        node: &Node,
        path: &str,
        names: &[&'static str],
        value_required: bool,
    ) -> IndexMap<String, CallOutput> {
        let mut out = IndexMap::new();
        let Some(entries) = self.map(node, path) else {
            return out;
        };
        for (key, value) in entries {
            let p = join(path, &key.text);
            let Some(fields) = self.map(value, &p) else {
                continue;
            };
            self.check_keys(fields, &["description", "value"], &p);
            let mut description = None;
            let mut text = None;
            for (k, v) in fields {
                match k.text.as_str() {
                    "description" => description = self.string_value(v, &join(&p, "description")),
                    "value" => text = self.text(v, &join(&p, "value"), &Scope::new(names, &[])),
                    _ => {}
                }
            }
            match text {
                Some(value) => {
                    out.insert(key.text.clone(), CallOutput { description, value });
                }
                None if value_required => {
                    self.missing(value.span, &p, "value", "the output's expression");
                }
                // A JavaScript action sets its outputs itself; it only describes them.
                None => {}
            }
        }
        out
    }

    fn call_secrets_decl(&mut self, node: &Node, path: &str) -> IndexMap<String, bool> {
        let mut out = IndexMap::new();
        let Some(entries) = self.map(node, path) else {
            return out;
        };
        for (key, value) in entries {
            let p = join(path, &key.text);
            let mut required = false;
            if let Y::Map(fields) = &value.value {
                self.check_keys(fields, &["description", "required"], &p);
                for (k, v) in fields {
                    if k.text == "required" {
                        required = self.boolean(v, &join(&p, "required"));
                    }
                }
            } else if !matches!(value.value, Y::Null) {
                self.wrong_type(value, &p, "a mapping");
            }
            out.insert(key.text.clone(), required);
        }
        out
    }

    fn defaults(&mut self, node: &Node, path: &str, scope: &Scope) -> RunDefaults {
        let mut out = RunDefaults::default();
        let Some(entries) = self.map(node, path) else {
            return out;
        };
        self.check_keys(entries, &["run"], path);
        for (key, value) in entries {
            let p = join(path, &key.text);
            let Some(run) = self.map(value, &p) else {
                continue;
            };
            self.check_keys(run, &["shell", "working-directory"], &p);
            for (k, v) in run {
                let pp = join(&p, &k.text);
                match k.text.as_str() {
                    "shell" => out.shell = self.text(v, &pp, scope),
                    "working-directory" => out.working_directory = self.text(v, &pp, scope),
                    _ => {}
                }
            }
        }
        out
    }

    fn jobs(&mut self, node: &Node, on: &IndexMap<String, Trigger>) -> IndexMap<String, Job> {
        let mut out = IndexMap::new();
        let Some(entries) = self.map(node, "jobs") else {
            return out;
        };
        if entries.is_empty() {
            self.emit(
                Code::InvalidValue,
                node.span,
                "jobs",
                "a workflow needs at least one job",
            );
        }
        let _ = on;
        for (key, value) in entries {
            self.job_id(key);
            if let Some(job) = self.job(key, value) {
                out.insert(key.text.clone(), job);
            }
        }
        out
    }

    fn job_id(&mut self, key: &Key) {
        let ok = key
            .text
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key
                .text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            self.diags.push(
                Diagnostic::new(
                    Code::InvalidValue,
                    key.span,
                    format!("jobs.{}", key.text),
                    format!("invalid job id `{}`", key.text),
                )
                .help("a job id starts with a letter or `_` and holds only letters, digits, `-` and `_`"),
            );
        }
    }

    fn job(&mut self, key: &Key, node: &Node) -> Option<Job> {
        let path = format!("jobs.{}", key.text);
        let entries = self.map(node, &path)?;
        let get = |name: &str| entries.iter().find(|(k, _)| k.text == name).map(|(_, v)| v);
        let is_call = get("uses").is_some();
        self.check_keys(
            entries,
            if is_call { CALL_JOB_KEYS } else { JOB_KEYS },
            &path,
        );
        // `matrix` stays available without a strategy: GitHub gives it `null` there, and
        // `strategy` its defaults (actions/languageservices#235 follows the runner).
        let sc = Scope::new;
        let mut job = Job {
            id: Name {
                name: key.text.clone(),
                span: key.span,
            },
            name: None,
            needs: Vec::new(),
            condition: None,
            env: Env::default(),
            defaults: RunDefaults::default(),
            outputs: TextMap::new(),
            timeout_minutes: None,
            continue_on_error: None,
            strategy: None,
            runs_on: RunsOn::default(),
            permissions: None,
            concurrency: None,
            environment: None,
            container: None,
            refused: Vec::new(),
            body: JobBody::Steps(Vec::new()),
        };
        let mut steps = None;
        for (k, v) in entries {
            let p = join(&path, &k.text);
            match k.text.as_str() {
                // An empty name (`name: ''` or null) shows the job's key, as GitHub's converter does.
                "name" => {
                    job.name = self
                        .string_text(v, &p, &sc(JOB_PLAIN, &[]))
                        .filter(|t| !t.text.is_empty());
                }
                "needs" => job.needs = self.needs(v, &p),
                "if" => job.condition = self.condition(v, &p, &sc(JOB_IF, status_only())),
                "runs-on" => job.runs_on = self.runs_on(v, &p, &sc(JOB_PLAIN, &[])),
                "env" => job.env = self.mapping(v, &p, &sc(JOB_ENV, &[])),
                "defaults" => job.defaults = self.defaults(v, &p, &sc(JOB_DEFAULTS, &[])),
                "outputs" => job.outputs = self.text_map(v, &p, &sc(STEP_ALL, &[])),
                "timeout-minutes" => {
                    job.timeout_minutes = self.minutes(v, &p, &sc(JOB_PLAIN, &[]));
                }
                "continue-on-error" => {
                    job.continue_on_error = self.text(v, &p, &sc(JOB_PLAIN, &[]));
                }
                "cancel-timeout-minutes" => {
                    let _ = self.minutes(v, &p, &sc(JOB_PLAIN, &[]));
                }
                "snapshot" => self.snapshot(v, &p),
                "strategy" => job.strategy = self.strategy(v, &p),
                "permissions" => job.permissions = self.permissions(v, &p),
                "concurrency" => job.concurrency = self.concurrency(v, &p, &sc(JOB_PLAIN, &[])),
                "environment" => job.environment = self.environment(v, &p, &sc(JOB_PLAIN, &[])),
                "steps" => steps = Some(self.steps(v, &p, &sc(STEP_ALL, hash_only()), &sc(STEP_IF, STATUS_AND_HASH))),
                // `container: ${{ matrix.container || null }}` (cargo-dist's release
                // workflow) names no container in most legs: decided per instance at run time.
                "container" if matches!(&v.value, Y::String { text, .. } if text.contains("${{")) => {
                    job.container = self.text(v, &p, &sc(JOB_PLAIN, &[]));
                }
                // Refused only for runs that include this job (`kiln ci run --job other` runs).
                "services" | "container" => job.refused.push(
                    Diagnostic::new(
                        Code::Unsupported,
                        k.span,
                        p.clone(),
                        format!(
                            "job `{}`: `{}` is not supported without a container engine",
                            key.text, k.text
                        ),
                    )
                    .label("needs Docker")
                    .help("kiln runs jobs on the host; start the service as a step, or run it as a kiln service; `kiln ci run --job J` runs a job that needs neither"),
                ),
                _ => {}
            }
        }
        if let Some(uses) = get("uses") {
            job.body = JobBody::Call(self.call(uses, get("with"), get("secrets"), &path)?);
        } else {
            if get("runs-on").is_none() {
                self.missing(
                    node.span,
                    &path,
                    "runs-on",
                    "the runner label (any value runs on the host)",
                );
            }
            match steps {
                Some(steps) => job.body = JobBody::Steps(steps),
                None => self.missing(node.span, &path, "steps", "the job's steps"),
            }
        }
        // Actions kiln cannot run refuse only the runs that include this job, as `services`.
        job.refused.append(&mut self.step_refusals);
        Some(job)
    }

    /// `concurrency`: a group name, or `{ group, cancel-in-progress }`.
    fn concurrency(&mut self, node: &Node, path: &str, scope: &Scope) -> Option<Concurrency> {
        if !matches!(node.value, Y::Map(_)) {
            let group = self.text(node, path, scope)?;
            return Some(Concurrency {
                group,
                cancel_in_progress: None,
                queue: None,
            });
        }
        let entries = self.map(node, path)?;
        self.check_keys(entries, &["group", "cancel-in-progress", "queue"], path);
        let mut group = None;
        let mut cancel_in_progress = None;
        let mut queue = None;
        for (k, v) in entries {
            let p = join(path, &k.text);
            match k.text.as_str() {
                "group" => group = self.text(v, &p, scope),
                "cancel-in-progress" => cancel_in_progress = self.text(v, &p, scope),
                "queue" => {
                    queue = self.text(v, &p, scope);
                    if let Some(text) = &queue
                        && !text.text.contains("${{")
                        && !matches!(text.text.as_str(), "single" | "max")
                    {
                        self.diags.push(
                            Diagnostic::new(
                                Code::InvalidValue,
                                text.span,
                                p.clone(),
                                format!("`{}` is not a concurrency queue mode", text.text),
                            )
                            .label("expected single or max"),
                        );
                    }
                }
                _ => {}
            }
        }
        match group {
            Some(group) => Some(Concurrency {
                group,
                cancel_in_progress,
                queue,
            }),
            None => {
                self.missing(
                    node.span,
                    path,
                    "group",
                    "the name of the concurrency group",
                );
                None
            }
        }
    }

    /// A job's `snapshot`: an image name, or `{ image-name, if, version }` (GitHub's custom
    /// images). Checked as GitHub checks it; a host takes no snapshot.
    fn snapshot(&mut self, node: &Node, path: &str) {
        if !matches!(node.value, Y::Map(_)) {
            if let Some(name) = self.plain_string(node, path)
                && name.is_empty()
            {
                self.emit(
                    Code::InvalidValue,
                    node.span,
                    path,
                    "`snapshot` needs an image name",
                );
            }
            return;
        }
        let Some(entries) = self.map(node, path) else {
            return;
        };
        self.check_keys(entries, &["image-name", "if", "version"], path);
        let mut named = false;
        for (k, v) in entries {
            let p = join(path, &k.text);
            match k.text.as_str() {
                "image-name" => named = self.plain_string(v, &p).is_some(),
                "if" => {
                    let _ = self.condition(v, &p, &Scope::new(JOB_PLAIN, &[]));
                }
                "version" => {
                    let _ = self.plain_string(v, &p);
                }
                _ => {}
            }
        }
        if !named {
            self.missing(
                node.span,
                path,
                "image-name",
                "the name of the custom image",
            );
        }
    }

    /// `environment`: a name, or `{ name, url }`.
    fn environment(&mut self, node: &Node, path: &str, scope: &Scope) -> Option<Environment> {
        if !matches!(node.value, Y::Map(_)) {
            let name = self.text(node, path, scope)?;
            return Some(Environment { name, url: None });
        }
        let entries = self.map(node, path)?;
        self.check_keys(entries, &["name", "url", "deployment"], path);
        let mut name = None;
        let mut url = None;
        for (k, v) in entries {
            let p = join(path, &k.text);
            match k.text.as_str() {
                "name" => name = self.text(v, &p, scope),
                // GitHub evaluates `url` after the job, with `steps` and `job` too.
                "url" => url = self.text(v, &p, &Scope::new(STEP_ALL, &[])),
                "deployment" => {
                    self.boolean(v, &p);
                }
                _ => {}
            }
        }
        match name {
            Some(name) => Some(Environment { name, url }),
            None => {
                self.missing(node.span, path, "name", "the environment's name");
                None
            }
        }
    }

    /// `permissions`: `read-all`, `write-all`, or scopes mapped to `read`, `write` or `none`.
    fn permissions(&mut self, node: &Node, path: &str) -> Option<Permissions> {
        if !matches!(node.value, Y::Map(_)) {
            let text = self.plain_string(node, path)?;
            return match text.as_str() {
                "read-all" => Some(Permissions::ReadAll),
                "write-all" => Some(Permissions::WriteAll),
                _ => {
                    self.diags.push(
                        Diagnostic::new(
                            Code::InvalidValue,
                            node.span,
                            path,
                            format!("`{text}` is not a permissions value"),
                        )
                        .label("expected read-all, write-all or a mapping of scopes")
                        .help("e.g. `permissions: { contents: read }`"),
                    );
                    None
                }
            };
        }
        let entries = self.map(node, path)?;
        self.check_keys(entries, PERMISSION_SCOPES, path);
        let mut scopes = IndexMap::new();
        for (k, v) in entries {
            let p = join(path, &k.text);
            let Some(text) = self.plain_string(v, &p) else {
                continue;
            };
            let levels = access_levels(&k.text);
            let access = match text.as_str() {
                "read" if levels.contains(&"read") => Access::Read,
                "write" if levels.contains(&"write") => Access::Write,
                "none" => Access::None,
                _ => {
                    let allowed = match levels {
                        [a, b] => format!("{a} or {b}"),
                        _ => "read, write or none".to_owned(),
                    };
                    self.diags.push(
                        Diagnostic::new(
                            Code::InvalidValue,
                            v.span,
                            p.clone(),
                            format!("`{text}` is not an access level for `{}`", k.text),
                        )
                        .label(format!("expected {allowed}")),
                    );
                    continue;
                }
            };
            if PERMISSION_SCOPES.contains(&k.text.as_str()) {
                scopes.insert(k.text.clone(), access);
            }
        }
        Some(Permissions::Scopes(scopes))
    }

    fn runs_on(&mut self, node: &Node, path: &str, scope: &Scope) -> RunsOn {
        // Accepted in any shape GitHub accepts; the runner decides whether this host matches.
        let mut out = RunsOn::default();
        match &node.value {
            Y::String { .. } => out.labels.extend(self.text(node, path, scope)),
            Y::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    out.labels
                        .extend(self.text(item, &format!("{path}[{i}]"), scope));
                }
            }
            Y::Map(entries) => {
                self.check_keys(entries, &["group", "labels"], path);
                for (k, v) in entries {
                    let p = join(path, &k.text);
                    match k.text.as_str() {
                        "group" => out.group = self.text(v, &p, scope),
                        "labels" => out.labels = self.runs_on(v, &p, scope).labels,
                        _ => {}
                    }
                }
            }
            _ => self.wrong_type(node, path, "a label, a list of labels or a mapping"),
        }
        out
    }

    fn needs(&mut self, node: &Node, path: &str) -> Vec<Name> {
        let items: Vec<&Node> = match &node.value {
            Y::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        items
            .into_iter()
            .filter_map(|n| {
                let name = self.plain_string(n, path)?;
                Some(Name { name, span: n.span })
            })
            .collect()
    }

    fn call(
        &mut self,
        uses: &Node,
        with: Option<&Node>,
        secrets: Option<&Node>,
        path: &str,
    ) -> Option<Call> {
        let uses = self.text(uses, &join(path, "uses"), &Scope::new(&[], &[]))?;
        if !uses.text.starts_with("./")
            || !(uses.text.ends_with(".yml") || uses.text.ends_with(".yaml"))
        {
            let diagnostic = Diagnostic::new(
                Code::Unsupported,
                uses.span,
                join(path, "uses"),
                format!(
                    "reusable workflow `{}` is not a local workflow file",
                    uses.text
                ),
            );
            // Another repository's workflow (`{owner}/{repo}/.github/workflows/{file}@{ref}`)
            // is valid on GitHub: like a remote action it refuses only the runs that include
            // its job, so `kiln ci run --job other` runs the rest.
            if remote_workflow(&uses.text) {
                self.step_refusals.push(
                    diagnostic
                        .label("another repository's workflow: kiln downloads nothing")
                        .help("copy it into `.github/workflows/` and call it as `./.github/workflows/<file>.yml`; `kiln ci run --job J` runs the other jobs"),
                );
            } else {
                self.diags.push(
                    diagnostic
                        .label("kiln runs local reusable workflows only")
                        .help("use `./.github/workflows/<file>.yml`"),
                );
            }
        }
        let with = match with {
            Some(n) => self.text_map(n, &join(path, "with"), &Scope::new(JOB_PLAIN, &[])),
            None => TextMap::new(),
        };
        let secrets = match secrets {
            None => CallSecrets::Map(TextMap::new()),
            Some(n) if matches!(&n.value, Y::String { text, .. } if text == "inherit") => {
                CallSecrets::Inherit
            }
            Some(n) => CallSecrets::Map(self.text_map(
                n,
                &join(path, "secrets"),
                &Scope::new(CALL_SECRETS, &[]),
            )),
        };
        Some(Call {
            uses,
            with,
            secrets,
        })
    }

    fn strategy(&mut self, node: &Node, path: &str) -> Option<Strategy> {
        let entries = self.map(node, path)?;
        self.check_keys(entries, &["matrix", "fail-fast", "max-parallel"], path);
        let scope = Scope::new(STRATEGY, &[]);
        let mut matrix = None;
        let mut fail_fast = None;
        let mut max_parallel = None;
        for (k, v) in entries {
            let p = join(path, &k.text);
            match k.text.as_str() {
                "matrix" => matrix = self.matrix(v, &p, &scope),
                "fail-fast" => fail_fast = self.text(v, &p, &scope),
                "max-parallel" => max_parallel = self.text(v, &p, &scope),
                _ => {}
            }
        }
        // GitHub requires none of the three keys: `strategy: { fail-fast: true }` alone is a
        // valid single-instance job (workflow syntax, `jobs.<job_id>.strategy`).
        if matrix.is_none() && entries.iter().any(|(k, _)| k.text == "matrix") {
            return None;
        }
        Some(Strategy {
            matrix,
            fail_fast,
            max_parallel,
            span: node.span,
        })
    }

    fn matrix(&mut self, node: &Node, path: &str, scope: &Scope) -> Option<Matrix> {
        if let Y::String { .. } = node.value {
            let text = self.text(node, path, scope)?;
            if !text.text.contains("${{") {
                self.wrong_type(node, path, "a mapping or an expression");
                return None;
            }
            return Some(Matrix::Expr(text));
        }
        let entries = self.map(node, path)?;
        let mut table = MatrixTable::default();
        for (key, value) in entries {
            let p = join(path, &key.text);
            let vector = self.vector(
                value,
                &p,
                scope,
                key.text == "include" || key.text == "exclude",
            );
            match (key.text.as_str(), vector) {
                ("include", v) => table.include = v,
                ("exclude", v) => table.exclude = v,
                (_, Some(v)) => {
                    table.vectors.insert(key.text.clone(), v);
                }
                _ => {}
            }
        }
        let has_include = matches!(&table.include, Some(Vector::List(l, _)) if !l.is_empty())
            || matches!(table.include, Some(Vector::Expr(_)));
        if table.vectors.is_empty()
            && !has_include
            && entries
                .iter()
                .all(|(k, _)| k.text == "include" || k.text == "exclude")
        {
            self.diags.push(
                Diagnostic::new(
                    Code::InvalidValue,
                    node.span,
                    path,
                    "matrix must define at least one vector",
                )
                .label("empty matrix")
                .help("add a key with a list of values, e.g. `os: [linux]`, or an `include` entry"),
            );
        }
        self.check_exclude_keys(&table, path);
        Some(Matrix::Table(table))
    }

    fn vector(&mut self, node: &Node, path: &str, scope: &Scope, objects: bool) -> Option<Vector> {
        match &node.value {
            Y::String { .. } => {
                let text = self.text(node, path, scope)?;
                if text.text.contains("${{") {
                    return Some(Vector::Expr(text));
                }
                self.wrong_type(node, path, "a list or an expression");
                None
            }
            Y::Seq(items) => {
                if items.is_empty() && !objects {
                    self.diags.push(
                        Diagnostic::new(
                            Code::InvalidValue,
                            node.span,
                            path,
                            format!("matrix vector `{}` does not contain any values", last(path)),
                        )
                        .label("empty list"),
                    );
                    return None;
                }
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    if objects && !matches!(item.value, Y::Map(_)) {
                        self.wrong_type(item, &p, "a mapping of matrix keys to values");
                    }
                    self.check_json_expressions(item, &p, scope);
                }
                Some(Vector::List(
                    items.iter().map(Node::to_json).collect(),
                    node.span,
                ))
            }
            _ => {
                self.wrong_type(node, path, "a list");
                None
            }
        }
    }

    fn check_json_expressions(&mut self, node: &Node, path: &str, scope: &Scope) {
        match &node.value {
            Y::String { text, .. } if text.contains("${{") => {
                let _ = self.text(node, path, scope);
            }
            Y::Seq(items) => {
                for item in items {
                    self.check_json_expressions(item, path, scope);
                }
            }
            Y::Map(entries) => {
                for (k, v) in entries {
                    self.check_json_expressions(v, &join(path, &k.text), scope);
                }
            }
            _ => {}
        }
    }

    /// GitHub rejects an `exclude` entry naming a key the matrix does not define.
    fn check_exclude_keys(&mut self, table: &MatrixTable, path: &str) {
        let Some(Vector::List(items, span)) = &table.exclude else {
            return;
        };
        if table.vectors.values().any(|v| matches!(v, Vector::Expr(_))) {
            return;
        }
        for item in items {
            let Some(object) = item.as_object() else {
                continue;
            };
            for key in object.keys() {
                if !table.vectors.contains_key(key) {
                    self.diags.push(
                        Diagnostic::new(
                            Code::InvalidValue,
                            *span,
                            join(path, "exclude"),
                            format!("matrix exclude key `{key}` does not match any key within the matrix"),
                        )
                        .label("in this exclude list"),
                    );
                }
            }
        }
    }

    fn steps(&mut self, node: &Node, path: &str, scope: &Scope, if_scope: &Scope) -> Vec<Step> {
        let Y::Seq(items) = &node.value else {
            self.wrong_type(node, path, "a list of steps");
            return Vec::new();
        };
        if items.is_empty() {
            self.emit(
                Code::InvalidValue,
                node.span,
                path,
                "a job needs at least one step",
            );
        }
        let steps: Vec<Step> = items
            .iter()
            .enumerate()
            .filter_map(|(i, n)| self.step(n, &format!("{path}[{i}]"), scope, if_scope, false))
            .collect();
        self.unique_step_ids(&steps, path);
        self.control_targets(&steps, path);
        steps
    }

    /// The steps a `wait` or `cancel` names must be written before it, by `id`, in the same
    /// list (a `parallel` group's steps are not named from outside it), as GitHub's workflow
    /// parser requires.
    fn control_targets(&mut self, steps: &[Step], path: &str) {
        let mut known: Vec<&str> = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let (key, targets): (&str, &[Name]) = match &step.action {
                StepAction::Wait(targets) => ("wait", targets),
                StepAction::Cancel(target) => ("cancel", std::slice::from_ref(target)),
                _ => ("", &[]),
            };
            for target in targets {
                let (message, help) = if target.name.starts_with("__") {
                    (
                        format!(
                            "The identifier '{}' is invalid. IDs starting with '__' are reserved.",
                            target.name
                        ),
                        "give the background step an `id` of your own and name that".to_owned(),
                    )
                } else if step
                    .id
                    .as_ref()
                    .is_some_and(|own| own.name.eq_ignore_ascii_case(&target.name))
                {
                    (
                        format!("Step '{}' cannot reference itself", target.name),
                        "name the `id` of the background step written before this one".to_owned(),
                    )
                } else if !known.contains(&target.name.as_str()) {
                    let help = match closest(&target.name, known.iter().copied()) {
                        Some(near) => format!("did you mean `{near}`?"),
                        None => "name the `id` of a step written before this one in the same list"
                            .to_owned(),
                    };
                    (
                        format!("Step references unknown step ID '{}'", target.name),
                        help,
                    )
                } else {
                    continue;
                };
                let key_path = format!("{path}[{i}].{key}");
                self.diags.push(
                    Diagnostic::new(Code::UnknownReference, target.span, key_path, message)
                        .label("no such step before this one")
                        .help(help),
                );
            }
            known.extend(step.id.as_ref().map(|id| id.name.as_str()));
        }
    }

    fn unique_step_ids(&mut self, steps: &[Step], path: &str) {
        for (i, step) in steps.iter().enumerate() {
            let Some(id) = &step.id else { continue };
            if let Some(first) = steps[..i]
                .iter()
                .filter_map(|s| s.id.as_ref())
                .find(|f| f.name == id.name)
            {
                self.diags.push(
                    Diagnostic::new(
                        Code::DuplicateName,
                        id.span,
                        path,
                        format!("the step id `{}` is used twice", id.name),
                    )
                    .label("second use")
                    .related(first.span, "first use"),
                );
            }
        }
    }

    /// One step; `composite` steps must name their `shell` (GitHub requires it there).
    pub(crate) fn step(
        &mut self,
        node: &Node,
        path: &str,
        scope: &Scope,
        if_scope: &Scope,
        composite: bool,
    ) -> Option<Step> {
        let entries = self.map(node, path)?;
        if composite {
            self.no_parallel_steps_in_action(entries, path);
            let others: Vec<(Key, Node)> = entries
                .iter()
                .filter(|(k, _)| !PARALLEL_STEP_KEYS.contains(&k.text.as_str()))
                .cloned()
                .collect();
            self.check_keys(&others, STEP_KEYS, path);
        } else {
            self.check_keys(entries, &WORKFLOW_STEP_KEYS, path);
            if let Some(control) = self.control_step(node, entries, path, scope, if_scope) {
                return control;
            }
        }
        let mut step = bare_step(
            node.span,
            StepAction::Run(Text {
                text: String::new(),
                span: node.span,
            }),
        );
        let mut run = None;
        let mut uses = None;
        let mut with = None;
        for (k, v) in entries {
            let p = join(path, &k.text);
            match k.text.as_str() {
                "id" => step.id = self.step_id(v, &p),
                "name" => {
                    step.name = self
                        .string_text(v, &p, scope)
                        .filter(|t| !t.text.is_empty())
                }
                "if" => step.condition = self.condition(v, &p, if_scope),
                "run" => {
                    run = self.string_text(v, &p, scope);
                    if let Some(text) = &run {
                        self.warnings.extend(crate::injection::check(
                            text,
                            &p,
                            self.source,
                            &scope.options(),
                        ));
                    }
                }
                "uses" => uses = self.uses(v, &p, !composite),
                "with" => with = Some(self.mapping(v, &p, scope)),
                "env" => step.env = self.mapping(v, &p, scope),
                // No shell after the key is the default shell, as no key.
                "shell" if matches!(v.value, Y::Null) => {}
                "shell" => step.shell = self.text(v, &p, scope),
                // `working-directory:` with no value is the workspace itself: the runner
                // applies `defaults.run` only to a step without the key (ruby's Windows
                // workflow makes its build directory this way before the steps that run in it).
                "working-directory" if matches!(v.value, Y::Null) => {
                    step.working_directory = Some(Text {
                        text: String::new(),
                        span: v.span,
                    });
                }
                "working-directory" => step.working_directory = self.text(v, &p, scope),
                "continue-on-error" => step.continue_on_error = self.text(v, &p, scope),
                "timeout-minutes" => step.timeout_minutes = self.minutes(v, &p, scope),
                // `step-background` is a plain boolean: GitHub takes no expression there.
                "background" if !composite => step.background = self.boolean(v, &p),
                _ => {}
            }
        }
        match (run, uses) {
            (Some(_), Some((_, text))) => {
                self.emit(
                    Code::InvalidValue,
                    text.span,
                    path,
                    "a step has either `run` or `uses`, not both",
                );
                return None;
            }
            (Some(run), None) => {
                if with.is_some() {
                    self.emit(
                        Code::InvalidValue,
                        node.span,
                        path,
                        "`with` is only allowed with `uses`",
                    );
                }
                if composite && step.shell.is_none() {
                    self.missing(
                        node.span,
                        path,
                        "shell",
                        "the shell (required for `run` steps in composite actions)",
                    );
                }
                step.action = StepAction::Run(run);
            }
            (None, Some((action, uses))) => {
                let with = with.unwrap_or_default();
                step.action = StepAction::Uses { action, uses, with };
            }
            (None, None) => {
                if !entries
                    .iter()
                    .any(|(k, _)| k.text == "run" || k.text == "uses")
                {
                    self.missing(
                        node.span,
                        path,
                        "run",
                        "the command to run (or `uses:` an action)",
                    );
                }
                return None;
            }
        }
        Some(step)
    }

    /// GitHub's note on `background`: a composite action may itself run in the background, but
    /// its own steps may not be background, wait, cancel or parallel steps.
    fn no_parallel_steps_in_action(&mut self, entries: &[(Key, Node)], path: &str) {
        for (k, _) in entries {
            if PARALLEL_STEP_KEYS.contains(&k.text.as_str()) {
                self.diags.push(
                    Diagnostic::new(
                        Code::UnknownKey,
                        k.span,
                        join(path, &k.text),
                        format!("`{}` is not allowed in a composite action's steps", k.text),
                    )
                    .label("only a workflow's job steps run in the background")
                    .help("run the action itself as a background step of the workflow's job (`background: true` on its `uses:` step)"),
                );
            }
        }
    }

    /// A `wait`, `wait-all`, `cancel` or `parallel` step (`None` for any other step), with the
    /// keys GitHub's workflow schema gives each: `id`, `name` and `continue-on-error` beside
    /// the first three, nothing beside `parallel`.
    fn control_step(
        &mut self,
        node: &Node,
        entries: &[(Key, Node)],
        path: &str,
        scope: &Scope,
        if_scope: &Scope,
    ) -> Option<Option<Step>> {
        let mut controls = entries
            .iter()
            .filter(|(k, _)| CONTROL_STEP_KEYS.contains(&k.text.as_str()));
        let (kind_key, value) = controls.next()?;
        let kind = kind_key.text.as_str();
        if let Some((second, _)) = controls.next() {
            self.diags.push(
                Diagnostic::new(
                    Code::InvalidValue,
                    second.span,
                    join(path, &second.text),
                    format!("a step is one `wait`, `wait-all`, `cancel` or `parallel` step, not both `{kind}` and `{}`", second.text),
                )
                .label("second kind of step")
                .help("write them as two steps"),
            );
            return Some(None);
        }
        let allowed: &[&str] = if kind == "parallel" {
            &["parallel"]
        } else {
            &["id", "name", "continue-on-error", kind]
        };
        // Each refused key is an error, and the step is still read so that what it names is
        // checked too (all mistakes at once).
        for (k, _) in entries
            .iter()
            .filter(|(k, _)| !allowed.contains(&k.text.as_str()))
        {
            if !WORKFLOW_STEP_KEYS.contains(&k.text.as_str()) {
                continue; // reported by `check_keys`
            }
            let (message, help) = match (kind, k.text.as_str()) {
                (_, "if") if kind != "parallel" => (
                    format!("a `{kind}` step always runs: it takes no `if`"),
                    format!("put the condition on the background steps the `{kind}` step names"),
                ),
                ("parallel", other) => (
                    format!("a `parallel` step holds only its list of steps, not `{other}`"),
                    format!("put `{other}` on the steps inside the group"),
                ),
                (_, other) => (
                    format!("`{other}` is not allowed on a `{kind}` step"),
                    format!("a `{kind}` step takes only `id`, `name` and `continue-on-error`"),
                ),
            };
            self.diags.push(
                Diagnostic::new(Code::InvalidValue, k.span, join(path, &k.text), message)
                    .label("not allowed here")
                    .help(help),
            );
        }
        let mut step = bare_step(node.span, StepAction::WaitAll);
        let p = join(path, kind);
        for (k, v) in entries {
            let p = join(path, &k.text);
            match k.text.as_str() {
                "id" if kind != "parallel" => step.id = self.step_id(v, &p),
                "name" if kind != "parallel" => {
                    step.name = self
                        .string_text(v, &p, scope)
                        .filter(|t| !t.text.is_empty());
                }
                "continue-on-error" if kind != "parallel" => {
                    step.continue_on_error = self.text(v, &p, scope);
                }
                _ => {}
            }
        }
        let action = match kind {
            "wait" => self.wait_targets(value, &p).map(StepAction::Wait),
            "cancel" => self.target(value, &p).map(StepAction::Cancel),
            "wait-all" => match &value.value {
                Y::Null | Y::Bool(true) => Some(StepAction::WaitAll),
                Y::Bool(false) => {
                    self.diags.push(
                        Diagnostic::new(
                            Code::InvalidValue,
                            value.span,
                            &p,
                            "The value of 'wait-all' must be true or omitted",
                        )
                        .label("false")
                        .help("write `wait-all:` with no value, or remove the step"),
                    );
                    None
                }
                _ => {
                    self.wrong_type(value, &p, "empty or `true`");
                    None
                }
            },
            _ => self
                .parallel_members(value, &p, scope, if_scope)
                .map(StepAction::Parallel),
        };
        let Some(action) = action else {
            return Some(None);
        };
        step.action = action;
        Some(Some(step))
    }

    /// `wait`: one step id, or a list of them.
    fn wait_targets(&mut self, node: &Node, path: &str) -> Option<Vec<Name>> {
        match &node.value {
            Y::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.target(item, &format!("{path}[{i}]")))
                .collect(),
            Y::String { .. } => self.target(node, path).map(|t| vec![t]),
            _ => {
                self.wrong_type(node, path, "a step id or a list of step ids");
                None
            }
        }
    }

    /// The id of a background step a `wait` or `cancel` names (checked against the steps
    /// before it by [`Self::control_targets`]).
    fn target(&mut self, node: &Node, path: &str) -> Option<Name> {
        let name = self.plain_string(node, path)?;
        if name.is_empty() {
            self.emit(
                Code::InvalidValue,
                node.span,
                path,
                "a step id cannot be empty",
            );
            return None;
        }
        Some(Name {
            name,
            span: node.span,
        })
    }

    /// The steps of a `parallel` group: `run` and `uses` steps only, as GitHub's parser
    /// checks them (in its words), with ids of their own scope.
    fn parallel_members(
        &mut self,
        node: &Node,
        path: &str,
        scope: &Scope,
        if_scope: &Scope,
    ) -> Option<Vec<Step>> {
        let Y::Seq(items) = &node.value else {
            self.wrong_type(node, path, "a list of steps");
            return None;
        };
        let mut members = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            if let Y::Map(entries) = &item.value {
                let mut refused = false;
                for (k, _) in entries {
                    let message = match k.text.as_str() {
                        "background" => {
                            "'background' is not allowed inside a parallel block. Steps in a parallel block are automatically run as background steps."
                        }
                        "wait" => "'wait' is not allowed inside a parallel block.",
                        "wait-all" => "'wait-all' is not allowed inside a parallel block.",
                        "cancel" => "'cancel' is not allowed inside a parallel block.",
                        "parallel" => "Nested 'parallel' blocks are not allowed.",
                        _ => continue,
                    };
                    refused = true;
                    self.diags.push(
                        Diagnostic::new(Code::InvalidValue, k.span, join(&p, &k.text), message)
                            .label("not allowed in a `parallel` group")
                            .help("a `parallel` group holds `run` and `uses` steps; write this step after the group"),
                    );
                }
                if refused {
                    continue;
                }
            }
            members.extend(self.step(item, &p, scope, if_scope, false));
        }
        self.unique_step_ids(&members, path);
        Some(members)
    }

    fn step_id(&mut self, node: &Node, path: &str) -> Option<Name> {
        let name = self.plain_string(node, path)?;
        let ok = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            self.emit(
                Code::InvalidValue,
                node.span,
                path,
                format!("invalid step id `{name}`: start with a letter or `_`, then letters, digits, `-` or `_`"),
            );
        } else if name.starts_with("__") {
            // GitHub names steps without an id `__run`, `__wait`, ... itself.
            self.emit(
                Code::InvalidValue,
                node.span,
                path,
                format!("The identifier '{name}' is invalid. IDs starting with '__' are reserved."),
            );
        }
        Some(Name {
            name,
            span: node.span,
        })
    }

    /// A step's `uses`. An action kiln cannot run is a refusal of the workflow job (its runs
    /// only) or, in a composite action (`refusable` false), a mistake of the action. A built-in
    /// action at a version GitHub no longer runs is a warning.
    fn uses(&mut self, node: &Node, path: &str, refusable: bool) -> Option<(ActionRef, Text)> {
        let text = self.plain_string(node, path)?;
        let text = Text {
            text,
            span: node.span,
        };
        // GitHub accepts the file and fails the job as it is set up; kiln's own implementation
        // of the action does not depend on the service GitHub retired, so the step runs, and
        // the warning says what GitHub would do.
        if let Some(message) = crate::workflow::deprecated_builtin(&text.text) {
            self.warnings.push(
                Diagnostic::new(Code::Unsupported, node.span, path, message)
                    .label("GitHub fails the job as it is set up; kiln runs it")
                    .help(
                        "use a current release: actions/upload-artifact and actions/download-artifact @v4 or later, actions/cache @v4 (v4.2.0 or later)",
                    ),
            );
        }
        match resolve_action(&text.text) {
            Some(action) => Some((action, text)),
            None => {
                let builtins: Vec<&str> = crate::workflow::Builtin::ALL
                    .iter()
                    .map(|(n, _)| *n)
                    .collect();
                let (label, help) = if text.text.starts_with("docker://") {
                    (
                        "a container action: kiln runs steps on the host, without a container engine",
                        "install the tool on the host and call it from a `run:` step".to_owned(),
                    )
                } else {
                    (
                        "kiln runs no remote action: it downloads nothing",
                        format!(
                            "copy the action into the repository and use it as `./path`, or use a built-in (with `@<version>`): {}",
                            builtins.join(", ")
                        ),
                    )
                };
                let diagnostic = Diagnostic::new(
                    Code::Unsupported,
                    node.span,
                    path,
                    format!("unknown action `{}`", text.text),
                )
                .label(label)
                .help(help);
                if refusable {
                    self.step_refusals.push(diagnostic);
                    Some((ActionRef::Remote(text.text.clone()), text))
                } else {
                    self.diags.push(diagnostic);
                    None
                }
            }
        }
    }

    /// A composite `action.yml`.
    pub(crate) fn composite(&mut self, root: &Node) -> Option<CompositeAction> {
        let entries = self.map(root, "")?;
        // The runner's action schema takes any other top-level key (`loose-key-type`).
        let mut action = CompositeAction {
            name: String::new(),
            inputs: IndexMap::new(),
            outputs: IndexMap::new(),
            steps: Vec::new(),
            node: None,
            warnings: Vec::new(),
        };
        let mut runs = None;
        for (k, v) in entries {
            match k.text.as_str() {
                "name" => action.name = self.scalar_text(v, "name").unwrap_or_default(),
                "inputs" => action.inputs = self.inputs(v, "inputs", InputsOf::Action),
                "outputs" => {
                    // Metadata syntax: `outputs.<id>.value` is required for composite actions
                    // only; a JavaScript action's outputs carry just a description.
                    let composite = !is_node_action(entries);
                    action.outputs = self.call_outputs(v, "outputs", COMPOSITE_STEP, composite);
                }
                "runs" => runs = Some(v),
                _ => {}
            }
        }
        let Some(runs) = runs else {
            self.missing(root.span, "", "runs", "`using: composite` and the steps");
            return None;
        };
        match self.composite_runs(runs)? {
            Runs::Steps(steps) => action.steps = steps,
            Runs::Node(node) => action.node = Some(node),
        }
        Some(action)
    }

    fn composite_runs(&mut self, node: &Node) -> Option<Runs> {
        let entries = self.map(node, "runs")?;
        let using = entries.iter().find(|(k, _)| k.text == "using");
        match using.map(|(_, v)| (self.plain_string(v, "runs.using"), v.span)) {
            Some((Some(u), _)) if u == "composite" => {}
            Some((Some(u), _)) if NODE_VERSIONS.contains(&u.as_str()) => {
                return self.node_runs(entries, u, node);
            }
            Some((Some(u), span)) => {
                self.diags.push(
                    Diagnostic::new(
                        Code::Unsupported,
                        span,
                        "runs.using",
                        format!("`using: {u}` actions are not supported"),
                    )
                    .label(if u == "docker" {
                        "needs Docker"
                    } else {
                        "unknown runtime"
                    })
                    .help(format!(
                        "kiln runs composite actions and JavaScript actions ({})",
                        NODE_VERSIONS.join(", ")
                    )),
                );
                return None;
            }
            _ => {
                self.missing(node.span, "runs", "using", "`composite`");
                return None;
            }
        }
        self.check_keys(entries, &["using", "steps"], "runs");
        let scope = Scope::new(COMPOSITE_STEP, hash_only());
        let if_scope = Scope::new(COMPOSITE_STEP, STATUS_AND_HASH);
        let steps_node = entries
            .iter()
            .find(|(k, _)| k.text == "steps")
            .map(|(_, v)| v)?;
        let Y::Seq(items) = &steps_node.value else {
            self.wrong_type(steps_node, "runs.steps", "a list of steps");
            return None;
        };
        let steps: Vec<Step> = items
            .iter()
            .enumerate()
            .filter_map(|(i, n)| self.step(n, &format!("runs.steps[{i}]"), &scope, &if_scope, true))
            .collect();
        self.unique_step_ids(&steps, "runs.steps");
        Some(Runs::Steps(steps))
    }

    fn node_runs(&mut self, entries: &[(Key, Node)], using: String, node: &Node) -> Option<Runs> {
        self.check_keys(
            entries,
            &["using", "main", "pre", "pre-if", "post", "post-if"],
            "runs",
        );
        let if_scope = Scope::new(COMPOSITE_STEP, STATUS_AND_HASH);
        let mut runs = NodeRuns {
            using,
            main: String::new(),
            pre: None,
            pre_if: None,
            post: None,
            post_if: None,
        };
        let mut main = None;
        for (k, v) in entries {
            let p = join("runs", &k.text);
            match k.text.as_str() {
                "main" => main = self.plain_string(v, &p),
                "pre" => runs.pre = self.plain_string(v, &p),
                "post" => runs.post = self.plain_string(v, &p),
                "pre-if" => runs.pre_if = self.condition(v, &p, &if_scope),
                "post-if" => runs.post_if = self.condition(v, &p, &if_scope),
                _ => {}
            }
        }
        match main {
            Some(m) => runs.main = m,
            None => {
                self.missing(
                    node.span,
                    "runs",
                    "main",
                    "the script `node` runs, e.g. `index.js`",
                );
                return None;
            }
        }
        Some(Runs::Node(runs))
    }
}

/// What an action's `runs` holds.
enum Runs {
    Steps(Vec<Step>),
    Node(NodeRuns),
}

/// The `using:` values of JavaScript actions; all run on the host's `node`.
const NODE_VERSIONS: &[&str] = &["node12", "node16", "node20", "node24"];

/// Whether an `action.yml`'s top level says `runs.using: nodeNN`.
fn is_node_action(entries: &[(Key, Node)]) -> bool {
    let Some((_, runs)) = entries.iter().find(|(k, _)| k.text == "runs") else {
        return false;
    };
    let Y::Map(fields) = &runs.value else {
        return false;
    };
    fields.iter().any(|(k, v)| {
        k.text == "using"
            && matches!(&v.value, Y::String { text, .. } if NODE_VERSIONS.contains(&text.as_str()))
    })
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn last(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

fn display_path(path: &str) -> &str {
    if path.is_empty() {
        "the workflow"
    } else {
        path
    }
}

/// A step written at `span` that does `action`, its keys not yet read.
fn bare_step(span: Span, action: StepAction) -> Step {
    Step {
        span,
        id: None,
        name: None,
        condition: None,
        action,
        env: Env::default(),
        shell: None,
        working_directory: None,
        continue_on_error: None,
        timeout_minutes: None,
        background: false,
    }
}
