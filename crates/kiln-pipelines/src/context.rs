//! The expression host of a job or step: the contexts (`github`, `env`, `matrix`, `steps`, ...)
//! as values, the status functions and `hashFiles` over the workspace.

use std::path::PathBuf;
use std::sync::Arc;

use indexmap::IndexMap;
use kiln_expr::{EvalError, Host, ParseOptions, Template, Value, WORKFLOW_FUNCTIONS};

use crate::condition::{self, Condition};
use crate::glob;
use crate::workflow::Text;

/// Every named value; validation already narrowed each place to GitHub's table.
pub(crate) const ALL_NAMES: &[&str] = &[
    "github", "env", "vars", "secrets", "inputs", "matrix", "strategy", "needs", "steps", "job",
    "runner", "jobs",
];

pub(crate) fn all_options() -> ParseOptions<'static> {
    ParseOptions {
        named_values: ALL_NAMES,
        extra_functions: WORKFLOW_FUNCTIONS,
    }
}

/// What the status functions return in one place.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Flags {
    /// Something before failed (a step in this job, or an ancestor job): `failure()`.
    pub failed: bool,
    /// The job or run is being cancelled.
    pub cancelled: bool,
    /// A job's `if` only: an ancestor job, direct or not, ended neither in success nor in
    /// failure (it was skipped or cancelled), so `success()` is false while `failure()` is not
    /// true. GitHub evaluates a job's status functions over every job it depends on, not only
    /// those it names (actions/runner#2205: a job after one that ran with `always()` past a
    /// skipped job is skipped too).
    pub unfinished: bool,
}

impl Flags {
    /// What `success()` returns.
    pub fn success(&self) -> bool {
        !self.failed && !self.cancelled && !self.unfinished
    }
}

/// Contexts plus status flags.
///
/// Each step starts from a copy of its job's context: the values are shared, not copied (the
/// `github` context holds the whole event payload, and copying it was a fifth of a trivial
/// step's instructions in kiln; docs/benchmarks.md, "Session 12").
#[derive(Debug, Clone, Default)]
pub(crate) struct Ctx {
    values: IndexMap<String, Arc<Value>>,
    /// Properties of the running step laid over the `github` context when it is read
    /// (`github.action`, its files `github.env`, `path`, `output`, `state`, `step_summary`, and
    /// in a composite action `action_path` and `action_status`), in this order, so the shared
    /// `github` value is not copied for every step.
    pub github_step: Vec<(&'static str, String)>,
    pub flags: Flags,
    pub workspace: PathBuf,
}

impl Ctx {
    pub fn set(&mut self, name: &str, value: Value) {
        self.values.insert(name.to_owned(), Arc::new(value));
    }

    /// The value of a context as set (without the step's `github` properties).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name).map(|v| &**v)
    }

    /// Renders a value that may hold `${{ }}`, keeping the type of a lone expression.
    pub fn value(&self, text: &Text) -> Result<Value, String> {
        let template = Template::parse(&text.text, &all_options()).map_err(|e| e.message)?;
        template.render(self).map_err(|e| e.message)
    }

    /// Renders to a string, as GitHub interpolates.
    pub fn string(&self, text: &Text) -> Result<String, String> {
        self.value(text).map(|v| v.to_display_string())
    }

    /// Evaluates an `if`.
    pub fn condition(&self, text: &Text) -> Result<bool, String> {
        let cond: Condition = condition::parse(&text.text, &all_options()).map_err(|(m, _)| m)?;
        cond.evaluate(self, self.flags.success())
            .map_err(|e| e.message)
    }

    /// A boolean setting such as `continue-on-error` (`true`, or an expression).
    pub fn flag(&self, text: Option<&Text>) -> Result<bool, String> {
        let Some(text) = text else { return Ok(false) };
        Ok(match self.value(text)? {
            Value::String(s) => s == "true",
            v => v.is_truthy(),
        })
    }

    /// A `timeout-minutes` as the runner reads it (`WorkflowTemplateConverter.ConvertToJobTimeout`
    /// and `ConvertToStepTimeout`: `(Int32)numberToken.Value`): the value must be a number, not
    /// a string that holds one (`${{ fromJSON(inputs.t) }}` converts one), and a fraction is
    /// cut toward zero, so `1.9` is one minute and `0.5` none. `None` when it is not set or
    /// comes to no whole minute; the error is the runner's "Unexpected value '…'".
    pub fn minutes(&self, text: Option<&Text>) -> Result<Option<u64>, String> {
        let Some(text) = text else { return Ok(None) };
        // Validation let through only numbers and expressions: a literal is a number's text.
        let value = match text.text.contains("${{") {
            true => self.value(text)?,
            false => text
                .text
                .trim()
                .parse::<f64>()
                .map_or_else(|_| Value::String(text.text.clone()), Value::Number),
        };
        match value {
            Value::Number(n) if n.trunc() >= 1.0 => Ok(Some(n.trunc().min(u32::MAX as f64) as u64)),
            Value::Number(_) => Ok(None),
            other => Err(format!("Unexpected value '{}'", other.to_display_string())),
        }
    }

    /// A number setting such as `max-parallel`.
    pub fn number(&self, text: Option<&Text>) -> Result<Option<f64>, String> {
        let Some(text) = text else { return Ok(None) };
        let n = self.value(text)?.to_number();
        if n.is_nan() || n < 0.0 {
            return Err(format!("`{}` is not a non-negative number", text.text));
        }
        Ok(Some(n))
    }
}

impl Host for Ctx {
    fn named_value(&self, name: &str) -> Option<Value> {
        let (key, value) = self
            .values
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))?;
        let mut value = Value::clone(value);
        if key == "github"
            && let Value::Object(github) = &mut value
        {
            for (k, v) in &self.github_step {
                github.insert((*k).to_owned(), Value::String(v.clone()));
            }
        }
        Some(value)
    }

    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, EvalError>> {
        Some(Ok(match name {
            "success" => Value::Bool(self.flags.success()),
            "always" => Value::Bool(true),
            "failure" => Value::Bool(self.flags.failed && !self.flags.cancelled),
            "cancelled" => Value::Bool(self.flags.cancelled),
            "hashFiles" => {
                let patterns: Vec<String> = args.iter().map(Value::to_display_string).collect();
                return Some(
                    glob::hash_files(&self.workspace, &patterns)
                        .map(Value::String)
                        .map_err(|e| EvalError::new(format!("hashFiles failed: {e}"), 0, 0)),
                );
            }
            _ => return None,
        }))
    }
}

/// A string map as an object value.
pub(crate) fn object(map: &IndexMap<String, String>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}
