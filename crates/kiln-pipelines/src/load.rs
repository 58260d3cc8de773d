//! Loading workflow files and composite actions: YAML → typed model → graph checks, with every
//! mistake collected first and reported together.
//!
//! [`parse_workflow`] is pure (text in, model or diagnostics out); [`load`] reads the workflow and
//! the local reusable workflows it calls from a repository checkout ([`load_with`]: from
//! wherever a reader finds them).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use kiln_spec::diag::{Code, Diagnostic, Diagnostics};
use kiln_spec::source::{FileId, SourceMap, Span};
use kiln_spec::suggest::closest;

use crate::decode::Decoder;
use crate::workflow::{CallSecrets, CompositeAction, JobBody, Workflow};

/// GitHub allows reusable workflows to nest this deep (caller included).
const MAX_CALL_DEPTH: usize = 10;

/// Loading failed: every mistake, and the files they point into.
#[derive(Debug, thiserror::Error)]
#[error("{}", render(sources, diagnostics))]
pub struct LoadError {
    /// The files read.
    pub sources: SourceMap,
    /// Every mistake, in file and position order.
    pub diagnostics: Vec<Diagnostic>,
}

/// A workflow with the local reusable workflows it calls, all validated.
#[derive(Debug, Clone)]
pub struct WorkflowSet {
    /// The files read, for positions.
    pub sources: SourceMap,
    /// The workflow to run.
    pub root: Workflow,
    /// Called workflows by their `uses` path without `./` (e.g. `.github/workflows/b.yml`).
    pub called: IndexMap<String, Workflow>,
}

impl WorkflowSet {
    /// What kiln cannot run among the root workflow's jobs and the workflows they call,
    /// transitively: their `services` and literal `container` keys, in file order. `kiln ci
    /// validate` reports them as errors; [`crate::run`] refuses a run that includes any.
    pub fn refused(&self) -> Vec<&Diagnostic> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![&self.root];
        while let Some(workflow) = stack.pop() {
            for job in workflow.jobs.values() {
                out.extend(&job.refused);
                if let JobBody::Call(call) = &job.body {
                    let key = call.uses.text.trim_start_matches("./");
                    if seen.insert(key)
                        && let Some(child) = self.called.get(key)
                    {
                        stack.push(child);
                    }
                }
            }
        }
        out
    }

    /// Why a run of these jobs cannot start (each refused key with its job and
    /// `file:line:col`), or `None` when it can.
    pub fn refusal(&self) -> Option<String> {
        let refused: Vec<Diagnostic> = self.refused().into_iter().cloned().collect();
        if refused.is_empty() {
            return None;
        }
        Some(render(&self.sources, &refused))
    }
}

/// Renders diagnostics as `path:line:col: error: message` lines with labels and help.
pub fn render(sources: &SourceMap, diagnostics: &[Diagnostic]) -> String {
    render_as(sources, diagnostics, "error")
}

/// Renders diagnostics as `path:line:col: SEVERITY: message` lines with labels and help.
pub fn render_as(sources: &SourceMap, diagnostics: &[Diagnostic], severity: &str) -> String {
    let mut out = String::new();
    for d in diagnostics {
        let place = d
            .span
            .map(|s| sources.location(s))
            .unwrap_or_else(|| "<workflow>".to_owned());
        let _ = write!(out, "{place}: {severity}: {}", d.message);
        if !d.key_path.is_empty() {
            let _ = write!(out, " (at `{}`)", d.key_path);
        }
        for related in &d.related {
            let _ = write!(
                out,
                "; {}: {}",
                sources.location(related.span),
                related.message
            );
        }
        if let Some(help) = &d.help {
            let _ = write!(out, "\n  help: {help}");
        }
        out.push('\n');
    }
    out
}

/// Parses and validates one workflow file's text (reusable-workflow calls are not followed).
pub fn parse_workflow(path: &Path, text: &str) -> Result<(Workflow, SourceMap), Box<LoadError>> {
    let mut sources = SourceMap::default();
    let file = sources.add(path.to_path_buf(), text.to_owned());
    let mut diags = Diagnostics::default();
    let workflow = decode_workflow(file, path, text, &mut diags);
    finish(sources, diags, workflow)
}

fn finish<T>(
    sources: SourceMap,
    diags: Diagnostics,
    value: Option<T>,
) -> Result<(T, SourceMap), Box<LoadError>> {
    match value {
        Some(v) if diags.is_empty() => Ok((v, sources)),
        _ => {
            let mut diagnostics = diags.into_sorted();
            if diagnostics.is_empty() {
                diagnostics.push(Diagnostic::unplaced(
                    Code::InvalidValue,
                    "the workflow could not be read",
                ));
            }
            Err(Box::new(LoadError {
                sources,
                diagnostics,
            }))
        }
    }
}

fn decode_workflow(
    file: FileId,
    path: &Path,
    text: &str,
    diags: &mut Diagnostics,
) -> Option<Workflow> {
    let root = kiln_spec::yaml::parse_as(file, text, diags, kiln_spec::yaml::Dialect::WORKFLOW)?;
    let mut decoder = Decoder {
        source: text,
        diags,
        warnings: Vec::new(),
        step_refusals: Vec::new(),
    };
    let parts = decoder.workflow(&root)?;
    let warnings = decoder.warnings;
    let workflow = Workflow {
        path: path.to_path_buf(),
        name: parts.name,
        run_name: parts.run_name,
        on: parts.on,
        env: parts.env,
        defaults: parts.defaults,
        permissions: parts.permissions,
        concurrency: parts.concurrency,
        jobs: parts.jobs,
        warnings,
    };
    check_graph(&workflow, file, diags);
    // A workflow that does not load reports what kiln would refuse to run (`services`,
    // `container`) with its other mistakes, so that one pass shows them all; one that loads
    // carries them on its jobs instead, and refuses only the runs that include them.
    if !diags.is_empty() {
        for job in workflow.jobs.values() {
            job.refused.iter().for_each(|d| diags.push(d.clone()));
        }
    }
    Some(workflow)
}

/// Loads `workflow_path` (relative to `repo`) and every local reusable workflow it calls.
pub fn load(repo: &Path, workflow_path: &str) -> Result<WorkflowSet, Box<LoadError>> {
    load_with(
        &mut |rel| std::fs::read_to_string(repo.join(rel)),
        workflow_path,
    )
}

/// [`load`] with the files read by `read` (a path relative to the repository in, the file's
/// text out): `kiln ci run` reads them from a commit's objects rather than from a checkout.
pub fn load_with(
    read: &mut dyn FnMut(&str) -> std::io::Result<String>,
    workflow_path: &str,
) -> Result<WorkflowSet, Box<LoadError>> {
    let mut sources = SourceMap::default();
    let mut diags = Diagnostics::default();
    let mut called = IndexMap::new();
    let root = read_and_decode(read, workflow_path, None, &mut sources, &mut diags);
    if let Some((root, _)) = &root {
        follow_calls(read, root, 1, &mut called, &mut sources, &mut diags);
    }
    let root = root.map(|(w, _)| w);
    let (root, sources) = finish(sources, diags, root)?;
    Ok(WorkflowSet {
        sources,
        root,
        called,
    })
}

fn read_and_decode(
    read: &mut dyn FnMut(&str) -> std::io::Result<String>,
    rel: &str,
    from: Option<(Span, &str)>,
    sources: &mut SourceMap,
    diags: &mut Diagnostics,
) -> Option<(Workflow, FileId)> {
    let text = match read(rel) {
        Ok(t) => t,
        Err(e) => {
            let message = format!("cannot read workflow `{rel}`: {e}");
            match from {
                Some((span, key)) => {
                    diags.push(Diagnostic::new(Code::BadSource, span, key, message))
                }
                None => diags.push(Diagnostic::unplaced(Code::Io, message)),
            }
            return None;
        }
    };
    let file = sources.add(PathBuf::from(rel), text.clone());
    decode_workflow(file, Path::new(rel), &text, diags).map(|w| (w, file))
}

fn follow_calls(
    read: &mut dyn FnMut(&str) -> std::io::Result<String>,
    workflow: &Workflow,
    depth: usize,
    called: &mut IndexMap<String, Workflow>,
    sources: &mut SourceMap,
    diags: &mut Diagnostics,
) {
    for (id, job) in &workflow.jobs {
        let JobBody::Call(call) = &job.body else {
            continue;
        };
        let Some(rel) = call.uses.text.strip_prefix("./") else {
            continue;
        };
        let key = format!("jobs.{id}.uses");
        if depth >= MAX_CALL_DEPTH {
            diags.push(Diagnostic::new(
                Code::Cycle,
                call.uses.span,
                key,
                format!(
                    "reusable workflows nest deeper than {MAX_CALL_DEPTH} levels (a call cycle?)"
                ),
            ));
            continue;
        }
        if !called.contains_key(rel) {
            let Some((child, _)) =
                read_and_decode(read, rel, Some((call.uses.span, &key)), sources, diags)
            else {
                continue;
            };
            called.insert(rel.to_owned(), child.clone());
            follow_calls(read, &child, depth + 1, called, sources, diags);
        }
        if let Some(child) = called.get(rel) {
            check_call(job, call, child, diags);
        }
    }
}

/// A call must target a `workflow_call` workflow and pass the inputs and secrets it declares.
fn check_call(
    job: &crate::workflow::Job,
    call: &crate::workflow::Call,
    child: &Workflow,
    diags: &mut Diagnostics,
) {
    let path = format!("jobs.{}", job.id.name);
    let Some(trigger) = child.workflow_call() else {
        diags.push(
            Diagnostic::new(
                Code::InvalidValue,
                call.uses.span,
                format!("{path}.uses"),
                format!("`{}` is not a reusable workflow", call.uses.text),
            )
            .help("add `on: workflow_call` to the called workflow"),
        );
        return;
    };
    for (name, value) in &call.with {
        if !trigger.inputs.contains_key(name) {
            let mut d = Diagnostic::new(
                Code::UnknownKey,
                value.span,
                format!("{path}.with.{name}"),
                format!("`{}` has no input `{name}`", call.uses.text),
            );
            if let Some(s) = closest(name, trigger.inputs.keys().map(String::as_str)) {
                d = d.help(format!("did you mean `{s}`?"));
            }
            diags.push(d);
        }
    }
    for (name, input) in &trigger.inputs {
        if input.required && input.default.is_none() && !call.with.contains_key(name) {
            diags.push(Diagnostic::new(
                Code::MissingKey,
                job.id.span,
                format!("{path}.with"),
                format!("input `{name}` is required by `{}`", call.uses.text),
            ));
        }
    }
    if let CallSecrets::Map(secrets) = &call.secrets {
        for (name, value) in secrets {
            if !trigger.secrets.contains_key(name) {
                diags.push(Diagnostic::new(
                    Code::UnknownKey,
                    value.span,
                    format!("{path}.secrets.{name}"),
                    format!("`{}` declares no secret `{name}`", call.uses.text),
                ));
            }
        }
        for (name, required) in &trigger.secrets {
            if *required && !secrets.contains_key(name) {
                diags.push(Diagnostic::new(
                    Code::MissingKey,
                    job.id.span,
                    format!("{path}.secrets"),
                    format!("secret `{name}` is required by `{}`", call.uses.text),
                ));
            }
        }
    }
}

/// `needs` must name existing jobs and must not loop.
fn check_graph(workflow: &Workflow, file: FileId, diags: &mut Diagnostics) {
    let _ = file;
    for job in workflow.jobs.values() {
        for need in &job.needs {
            if workflow.jobs.contains_key(&need.name) {
                continue;
            }
            let others = workflow
                .jobs
                .keys()
                .filter(|k| **k != job.id.name)
                .map(String::as_str);
            let mut d = Diagnostic::new(
                Code::UnknownReference,
                need.span,
                format!("jobs.{}.needs", job.id.name),
                format!(
                    "job `{}` needs `{}`, which is not a job in this workflow",
                    job.id.name, need.name
                ),
            )
            .label("unknown job");
            if let Some(s) = closest(&need.name, others) {
                d = d.help(format!("did you mean `{s}`?"));
            }
            diags.push(d);
        }
    }
    for cycle in find_cycles(workflow) {
        let Some(first) = cycle.first().and_then(|id| workflow.jobs.get(id)) else {
            continue;
        };
        let mut path = cycle.clone();
        path.push(cycle[0].clone());
        diags.push(
            Diagnostic::new(
                Code::Cycle,
                first.id.span,
                format!("jobs.{}.needs", first.id.name),
                format!(
                    "jobs depend on each other in a cycle: {}",
                    path.join(" -> ")
                ),
            )
            .label("part of the cycle")
            .help("remove one of the `needs` entries in the cycle"),
        );
    }
}

/// Every elementary cycle found by depth-first search, each reported once.
fn find_cycles(workflow: &Workflow) -> Vec<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit(
        id: &str,
        workflow: &Workflow,
        marks: &mut IndexMap<String, Mark>,
        stack: &mut Vec<String>,
        out: &mut Vec<Vec<String>>,
    ) {
        marks.insert(id.to_owned(), Mark::Active);
        stack.push(id.to_owned());
        if let Some(job) = workflow.jobs.get(id) {
            for need in &job.needs {
                match marks.get(&need.name).copied() {
                    Some(Mark::New) => visit(&need.name, workflow, marks, stack, out),
                    Some(Mark::Active) => {
                        if let Some(pos) = stack.iter().position(|s| *s == need.name) {
                            let mut cycle: Vec<String> = stack[pos..].to_vec();
                            // `needs` points backwards; print in execution order.
                            cycle.reverse();
                            // Start at the job written first, so the message is stable.
                            let first = (0..cycle.len())
                                .min_by_key(|&i| workflow.jobs.get_index_of(&cycle[i]))
                                .unwrap_or(0);
                            cycle.rotate_left(first);
                            out.push(cycle);
                        }
                    }
                    _ => {}
                }
            }
        }
        stack.pop();
        marks.insert(id.to_owned(), Mark::Done);
    }
    let mut marks: IndexMap<String, Mark> = workflow
        .jobs
        .keys()
        .map(|k| (k.clone(), Mark::New))
        .collect();
    let mut out = Vec::new();
    let ids: Vec<String> = workflow.jobs.keys().cloned().collect();
    for id in ids {
        if marks.get(&id) == Some(&Mark::New) {
            visit(&id, workflow, &mut marks, &mut Vec::new(), &mut out);
        }
    }
    out
}

/// Loads the composite action in `dir` (`action.yml` or `action.yaml`).
pub fn load_action(dir: &Path) -> Result<CompositeAction, Box<LoadError>> {
    let mut sources = SourceMap::default();
    let mut diags = Diagnostics::default();
    let candidates = [dir.join("action.yml"), dir.join("action.yaml")];
    let Some((path, text)) = candidates
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok().map(|t| (p.clone(), t)))
    else {
        // The runner's words (`ActionManager`), Dockerfile included: kiln runs no container
        // action, but the hint about the checkout is what the user needs.
        diags.push(Diagnostic::unplaced(
            Code::Io,
            format!(
                "Can't find 'action.yml', 'action.yaml' or 'Dockerfile' under '{}'. Did you forget to run actions/checkout before running your local action?",
                dir.display()
            ),
        ));
        return finish(sources, diags, None).map(|(a, _)| a);
    };
    let file = sources.add(path, text.clone());
    let mut warnings = Vec::new();
    let action =
        kiln_spec::yaml::parse_as(file, &text, &mut diags, kiln_spec::yaml::Dialect::ACTION)
            .and_then(|root| {
                let mut decoder = Decoder {
                    source: &text,
                    diags: &mut diags,
                    warnings: Vec::new(),
                    step_refusals: Vec::new(),
                };
                let action = decoder.composite(&root);
                warnings = decoder.warnings;
                action
            });
    let action = action.map(|mut action| {
        action.warnings = render_as(&sources, &warnings, "warning")
            .lines()
            .map(str::to_owned)
            .collect();
        action
    });
    finish(sources, diags, action).map(|(a, _)| a)
}
