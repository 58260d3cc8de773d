//! kiln-pipelines: runs GitHub Actions workflow files on the host, without Docker.
//!
//! The path is the same for every run:
//! 1. [`load`] reads a workflow (and the local reusable workflows it calls) into the typed model
//!    of [`workflow`], strictly and with every mistake reported at once (pure apart from reading
//!    the files);
//! 2. [`plan`] expands matrices into job instances and their dependency graph (pure);
//! 3. [`runner`] executes the graph: processes, environment files, workflow commands, masking,
//!    the built-in actions, caches and artifacts, reporting [`events`] and results to a
//!    [`events::RunStore`].
//!
//! What a local run cannot know of GitHub: `github.actor`/`GITHUB_ACTOR` (`kiln` by default),
//! `actor_id`, `repository_id` and `repository_owner_id` (and their `GITHUB_*_ID` variables)
//! are read from the event payload's `sender` and `repository` when it has them (a webhook, or
//! `kiln ci run --event-file`), and are '' otherwise. There is no installation token:
//! `github.token` and `secrets.GITHUB_TOKEN` are both the `GITHUB_TOKEN` secret the run is
//! given (`--secret GITHUB_TOKEN=...`, masked), '' without one; as on GitHub, no step sees a
//! `GITHUB_TOKEN` variable unless the workflow's `env` sets it.
//!
//! A job whose `timeout-minutes` expires is cancelled, as GitHub cancels it: its status and
//! `needs.<id>.result` are `cancelled`, and only `always()`/`cancelled()` steps and post steps
//! still run, within GitHub's 5-minute cancel timeout. `timeout-minutes` counts whole minutes,
//! as the runner reads it: a number (a fraction is cut, `1.9` is one minute, `0.5` none) or an
//! expression giving one; a string is refused (`${{ fromJSON(...) }}` converts one).
//!
//! A matrix leg is named as GitHub names it: `job (values)`, object and list values written
//! out depth first without their keys, what `include` adds to a leg of the product left out,
//! cut to 100 characters ([`plan::display_name`]).
//!
//! **Architecture invariant:** expressions are kiln-expr's; YAML positions and diagnostics are
//! kiln-spec's. This crate never re-implements either.

pub mod builtins;
mod cache;
pub mod commands;
mod concurrency;
pub mod condition;
mod context;
mod cron;
mod decode;
pub mod events;
pub mod filter;
pub mod glob;
mod injection;
mod job;
pub mod load;
pub mod matchers;
pub mod plan;
mod process;
pub mod runner;
mod version_files;
pub mod workflow;

pub use builtins::version_satisfies;

/// Writes the files of artifact `name` uploaded by run `run_id` into `dest`; returns the
/// artifact's name (for the control plane, which makes releases of artifacts).
pub fn download_artifact(
    artifacts_dir: &std::path::Path,
    run_id: u64,
    name: &str,
    dest: &std::path::Path,
) -> Result<(), String> {
    let which = cache::Download {
        name: Some(name),
        ..cache::Download::default()
    };
    cache::download(artifacts_dir, run_id, &which, dest).map(|_| ())
}
pub use commands::{
    Command, EnvFileError, Masker, parse_command, parse_env_file, parse_legacy_command,
};
pub use events::{
    Annotation, JobRecord, Level, MemoryStore, RunEvent, RunRecord, RunStore, SourceLocation,
    Status, StepRecord,
};
pub use filter::{Push, PushSkip, commit_skips_workflows, push_runs};
pub use glob::hash_files;
pub use load::{LoadError, WorkflowSet, load, load_with, parse_workflow};
pub use runner::{EnvironmentScope, RunError, RunOptions, RunResult, run};
