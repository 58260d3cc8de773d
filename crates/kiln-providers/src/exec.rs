//! The `exec` provider: local commands run on create, update and destroy.
//!
//! A command is either a string run with `sh -c` or a list of strings run as an argv without a
//! shell. Commands see the parent environment plus the `env` attribute plus `KILN_ADDRESS`,
//! `KILN_STACK`, `KILN_INPUT` (JSON of `input`) and, on update and destroy, `KILN_OUTPUTS`
//! (JSON of the outputs recorded so far). A command's stdout becomes the resource's outputs:
//! its keys if it is a JSON object, otherwise `{ "stdout": <trimmed text> }`.
//!
//! Error classes, since the engine treats them differently:
//! - a command that could not be started changed nothing: [`ProviderError::Failed`];
//! - a create or update command that started and then failed (non-zero exit, timeout) may
//!   have done half its work: [`ProviderError::Partial`];
//! - a failed destroy on delete is [`ProviderError::Failed`], so the resource stays recorded
//!   and the delete is retried.
//!
//! What `delete` needs (the destroy command and its settings) is copied into `private`:
//! recorded attributes hold digests in place of sensitive values, which cannot be run.

use std::path::PathBuf;
use std::time::Duration;

use kiln_engine::provider::{
    Applied, Attributes, Observation, Provider, ProviderContext, ProviderError, ProviderFuture,
    Recorded,
};
use serde_json::Value;

use crate::attrs::{
    failed, is_digest, optional_str, optional_u64, partial, resolve_path, type_name,
};
use crate::process::{self, Captured, CommandLine, Finished, RunError, RunRequest};

/// Timeout when the `timeout` attribute is absent: ten minutes.
const DEFAULT_TIMEOUT_MS: u64 = 600_000;

/// How many lines of output a failure message quotes.
const TAIL_LINES: usize = 20;

/// Attributes `delete` needs, copied into `private` under [`DESTROY_WITH`].
const DESTROY_KEYS: [&str; 5] = ["destroy", "env", "workdir", "timeout", "input"];

/// Key in `private` of the attributes copied for `delete`.
const DESTROY_WITH: &str = "destroy_with";

/// Provider for the `exec` kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExecProvider;

impl ExecProvider {
    /// A new `exec` provider; it holds no state.
    pub fn new() -> Self {
        Self
    }
}

impl Provider for ExecProvider {
    fn kinds(&self) -> &'static [&'static str] {
        &["exec"]
    }

    fn observe<'a>(
        &'a self,
        _ctx: &'a ProviderContext,
        _recorded: &'a Recorded,
    ) -> ProviderFuture<'a, Observation> {
        // What a command did cannot be looked at; the resource is what was recorded.
        Box::pin(async { Ok(Observation::Present { drift: Vec::new() }) })
    }

    fn create<'a>(
        &'a self,
        ctx: &'a ProviderContext,
        kind: &'a str,
        address: &'a str,
        desired: &'a Attributes,
    ) -> ProviderFuture<'a, Applied> {
        Box::pin(async move {
            if kind != "exec" {
                return Err(ProviderError::UnknownKind { kind: kind.into() });
            }
            let create = required_command(desired, "create")?;
            let settings = Settings::from_attributes(ctx, desired)?;
            let step = Step::new(ctx, address, &create, &settings, None);
            let finished = step.run(Stakes::CREATE).await?;
            Ok(applied(&finished, desired))
        })
    }

    fn update<'a>(
        &'a self,
        ctx: &'a ProviderContext,
        previous: &'a Recorded,
        desired: &'a Attributes,
    ) -> ProviderFuture<'a, Applied> {
        Box::pin(async move {
            let settings = Settings::from_attributes(ctx, desired)?;
            let address = previous.address.as_str();
            if let Some(update) = optional_command(desired, "update")? {
                let step = Step::new(ctx, address, &update, &settings, Some(&previous.outputs));
                let finished = step.run(Stakes::CREATE).await?;
                return Ok(applied(&finished, desired));
            }
            // No update command: replace in place by destroying the old run, then creating.
            let create = required_command(desired, "create")?;
            let destroyed = destroy(ctx, previous, Stakes::CREATE).await?;
            let stakes = if destroyed {
                Stakes::AFTER_CHANGE
            } else {
                Stakes::CREATE
            };
            let step = Step::new(ctx, address, &create, &settings, None);
            let finished = step.run(stakes).await?;
            Ok(applied(&finished, desired))
        })
    }

    fn delete<'a>(
        &'a self,
        ctx: &'a ProviderContext,
        recorded: &'a Recorded,
    ) -> ProviderFuture<'a, ()> {
        Box::pin(async move {
            destroy(ctx, recorded, Stakes::DELETE).await?;
            Ok(())
        })
    }
}

/// Runs the recorded resource's destroy command, if it has one; returns whether one ran.
async fn destroy(
    ctx: &ProviderContext,
    recorded: &Recorded,
    stakes: Stakes,
) -> Result<bool, ProviderError> {
    // Prefer the clear-text copy in `private`; fall back to the attributes for state that has
    // none (they are the same unless something was sensitive).
    let source = recorded
        .private
        .get(DESTROY_WITH)
        .and_then(Value::as_object)
        .unwrap_or(&recorded.attributes);
    let Some(command) = optional_command(source, "destroy")? else {
        return Ok(false);
    };
    let settings = Settings::from_attributes(ctx, source)?;
    let step = Step::new(
        ctx,
        &recorded.address,
        &command,
        &settings,
        Some(&recorded.outputs),
    );
    step.run(stakes).await?;
    Ok(true)
}

/// Outputs and private data of a successful create or update.
fn applied(finished: &Finished, desired: &Attributes) -> Applied {
    let destroy_with: Attributes = DESTROY_KEYS
        .iter()
        .filter_map(|key| desired.get(*key).map(|v| ((*key).to_owned(), v.clone())))
        .collect();
    let mut private = Attributes::new();
    private.insert(DESTROY_WITH.into(), Value::Object(destroy_with));
    Applied {
        outputs: outputs_from(&finished.stdout),
        private: Value::Object(private),
    }
}

/// A JSON object on stdout becomes the outputs; anything else is the `stdout` output.
fn outputs_from(stdout: &Captured) -> Attributes {
    let text = stdout.text();
    let trimmed = text.trim();
    if let Ok(Value::Object(outputs)) = serde_json::from_str::<Value>(trimmed) {
        return outputs;
    }
    let mut outputs = Attributes::new();
    outputs.insert("stdout".into(), Value::from(trimmed));
    outputs
}

/// How to classify a failure, depending on what had already happened.
#[derive(Debug, Clone, Copy)]
struct Stakes {
    /// The command could not be started.
    not_started: fn(String) -> ProviderError,
    /// The command started and then failed or timed out.
    after_start: fn(String) -> ProviderError,
}

impl Stakes {
    /// Creating or updating: a started command may have half-done its work.
    const CREATE: Self = Self {
        not_started: failed::<String>,
        after_start: partial::<String>,
    };
    /// Something was already changed (the old run destroyed) before this command.
    const AFTER_CHANGE: Self = Self {
        not_started: partial::<String>,
        after_start: partial::<String>,
    };
    /// Deleting: a failure leaves the resource recorded, to be deleted again later.
    const DELETE: Self = Self {
        not_started: failed::<String>,
        after_start: failed::<String>,
    };
}

/// Settings shared by all of a resource's commands.
#[derive(Debug)]
struct Settings {
    env: Vec<(String, String)>,
    input: Value,
    workdir: PathBuf,
    timeout: Duration,
}

impl Settings {
    fn from_attributes(ctx: &ProviderContext, attrs: &Attributes) -> Result<Self, ProviderError> {
        let workdir = match optional_str(attrs, "workdir")? {
            Some(dir) => resolve_path(&ctx.root, dir),
            None => ctx.root.clone(),
        };
        let timeout_ms = optional_u64(attrs, "timeout")?.unwrap_or(DEFAULT_TIMEOUT_MS);
        Ok(Self {
            env: parse_env(attrs)?,
            input: attrs.get("input").cloned().unwrap_or(Value::Null),
            workdir,
            timeout: Duration::from_millis(timeout_ms),
        })
    }
}

/// The `env` attribute as name/value pairs. Numbers and booleans are accepted and passed as
/// their JSON text, since an expression may well evaluate to one.
fn parse_env(attrs: &Attributes) -> Result<Vec<(String, String)>, ProviderError> {
    let map = match attrs.get("env") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(failed(format!(
                "attribute `env` must be a map of strings, not {}",
                type_name(other)
            )));
        }
    };
    map.iter()
        .map(|(name, value)| match value {
            Value::String(s) => Ok((name.clone(), s.clone())),
            Value::Number(_) | Value::Bool(_) => Ok((name.clone(), value.to_string())),
            other => Err(failed(format!(
                "attribute `env.{name}` must be a string, not {}",
                type_name(other)
            ))),
        })
        .collect()
}

fn required_command(attrs: &Attributes, name: &str) -> Result<CommandLine, ProviderError> {
    optional_command(attrs, name)?.ok_or_else(|| failed(format!("attribute `{name}` is required")))
}

/// A command attribute: a string for `sh -c`, or a non-empty list of strings for an argv.
fn optional_command(attrs: &Attributes, name: &str) -> Result<Option<CommandLine>, ProviderError> {
    let shape_error = || {
        failed(format!(
            "attribute `{name}` must be a string or a non-empty list of strings"
        ))
    };
    match attrs.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(script)) if is_digest(script) => Err(failed(format!(
            "attribute `{name}` was recorded only as a digest of a sensitive value, so the \
             command cannot be run"
        ))),
        Some(Value::String(script)) => Ok(Some(CommandLine::Shell(script.clone()))),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(shape_error))
            .collect::<Result<Vec<_>, _>>()
            .map(|argv| Some(CommandLine::Argv(argv))),
        Some(_) => Err(shape_error()),
    }
}

/// One command run on behalf of one resource.
#[derive(Debug)]
struct Step<'a> {
    ctx: &'a ProviderContext,
    address: &'a str,
    command: &'a CommandLine,
    settings: &'a Settings,
    /// Outputs recorded so far, exposed as `KILN_OUTPUTS` (update and destroy only).
    outputs: Option<&'a Attributes>,
}

impl<'a> Step<'a> {
    fn new(
        ctx: &'a ProviderContext,
        address: &'a str,
        command: &'a CommandLine,
        settings: &'a Settings,
        outputs: Option<&'a Attributes>,
    ) -> Self {
        Self {
            ctx,
            address,
            command,
            settings,
            outputs,
        }
    }

    /// Runs the command; a non-zero exit is an error classified by `stakes`.
    async fn run(&self, stakes: Stakes) -> Result<Finished, ProviderError> {
        let request = RunRequest {
            command: self.command,
            workdir: &self.settings.workdir,
            env: self.environment(),
            timeout: self.settings.timeout,
        };
        let finished = match process::run(request).await {
            Ok(finished) => finished,
            Err(error @ RunError::Spawn { .. }) => {
                return Err((stakes.not_started)(error.to_string()));
            }
            Err(error) => return Err((stakes.after_start)(run_error_message(&error))),
        };
        if finished.status.success() {
            return Ok(finished);
        }
        let message = format!(
            "`{}` failed with {}{}",
            self.command,
            process::describe_status(finished.status),
            output_tail(&finished.stdout, &finished.stderr)
        );
        Err((stakes.after_start)(message))
    }

    /// The variables added to the inherited environment; kiln's own win over `env`.
    fn environment(&self) -> Vec<(String, String)> {
        let mut env = self.settings.env.clone();
        env.push(("KILN_ADDRESS".into(), self.address.to_owned()));
        env.push(("KILN_STACK".into(), self.ctx.stack.clone()));
        env.push(("KILN_INPUT".into(), self.settings.input.to_string()));
        if let Some(outputs) = self.outputs {
            env.push((
                "KILN_OUTPUTS".into(),
                Value::Object(outputs.clone()).to_string(),
            ));
        }
        env
    }
}

fn run_error_message(error: &RunError) -> String {
    match error {
        RunError::TimedOut { stdout, stderr, .. } => {
            format!("{error}{}", output_tail(stdout, stderr))
        }
        _ => error.to_string(),
    }
}

/// The last lines of stderr, or of stdout when stderr is empty, for a failure message.
fn output_tail(stdout: &Captured, stderr: &Captured) -> String {
    let (name, text) = match stderr.text() {
        text if !text.trim().is_empty() => ("stderr", text),
        _ => ("stdout", stdout.text()),
    };
    let tail = process::last_lines(&text, TAIL_LINES);
    if tail.trim().is_empty() {
        return String::new();
    }
    format!("\n{name} (last {TAIL_LINES} lines):\n{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(value: Value) -> Attributes {
        match value {
            Value::Object(map) => map,
            _ => Attributes::new(),
        }
    }

    #[test]
    fn commands_parse_from_string_or_list() {
        let a = attrs(json!({ "s": "echo hi", "l": ["echo", "hi"], "e": [], "n": 3 }));
        assert_eq!(
            optional_command(&a, "s").ok().flatten(),
            Some(CommandLine::Shell("echo hi".into()))
        );
        assert_eq!(
            optional_command(&a, "l").ok().flatten(),
            Some(CommandLine::Argv(vec!["echo".into(), "hi".into()]))
        );
        assert!(optional_command(&a, "e").is_err());
        assert!(optional_command(&a, "n").is_err());
        assert_eq!(optional_command(&a, "missing").ok().flatten(), None);
    }

    #[test]
    fn stdout_becomes_outputs() {
        let json_out = Captured {
            bytes: b"  {\"id\": 7}\n".to_vec(),
            truncated: false,
        };
        assert_eq!(Value::Object(outputs_from(&json_out)), json!({ "id": 7 }));
        let plain = Captured {
            bytes: b"hello\n".to_vec(),
            truncated: false,
        };
        assert_eq!(
            Value::Object(outputs_from(&plain)),
            json!({ "stdout": "hello" })
        );
        let array = Captured {
            bytes: b"[1]".to_vec(),
            truncated: false,
        };
        assert_eq!(
            Value::Object(outputs_from(&array)),
            json!({ "stdout": "[1]" })
        );
    }
}
