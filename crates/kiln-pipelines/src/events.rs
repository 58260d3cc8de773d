//! What a run reports while it runs ([`RunEvent`], over a tokio channel) and what it leaves
//! behind ([`RunRecord`], handed to a [`RunStore`] so kiln-state can keep it).

use std::sync::Mutex;
use std::time::Duration;

use indexmap::IndexMap;

/// The result of a job or step, named as GitHub names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Ran and succeeded.
    Success,
    /// Ran and failed.
    Failure,
    /// Stopped by cancellation (fail-fast, timeout of the run, or the user).
    Cancelled,
    /// Not run: its `if` was false.
    Skipped,
}

impl Status {
    /// `success`, `failure`, `cancelled` or `skipped`, as in `needs.<job>.result`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failure => "failure",
            Status::Cancelled => "cancelled",
            Status::Skipped => "skipped",
        }
    }
}

/// Severity of a `::error::`/`::warning::`/`::notice::` annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// `::error::`.
    Error,
    /// `::warning::`.
    Warning,
    /// `::notice::`.
    Notice,
}

/// An `::error::`/`::warning::`/`::notice::` annotation, or one the runner makes itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Annotation {
    /// Severity.
    pub level: Level,
    /// The message (already masked).
    pub message: String,
    /// `title=`.
    pub title: Option<String>,
    /// Where it points (`file=`, `line=`, `endLine=`, `col=`, `endColumn=`), when it does.
    pub location: Option<SourceLocation>,
}

impl Annotation {
    /// An annotation without a title or location.
    pub fn new(level: Level, message: String) -> Annotation {
        Annotation {
            level,
            message,
            title: None,
            location: None,
        }
    }
}

/// A place in a file of the repository, as workflow commands give it (1-based).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceLocation {
    pub file: String,
    pub line: Option<u32>,
    pub end_line: Option<u32>,
    pub col: Option<u32>,
    pub end_column: Option<u32>,
}

impl std::fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.col {
                write!(f, ":{col}")?;
            }
        }
        Ok(())
    }
}

/// Something that happened during a run, in order per job.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// The run began.
    RunStarted {
        /// The run id.
        run_id: u64,
        /// The workflow's name.
        workflow: String,
        /// `run-name`, evaluated; None without one (or when it does not evaluate: GitHub then
        /// shows the default title).
        title: Option<String>,
    },
    /// A job instance started.
    JobStarted {
        /// Display name, e.g. `test (api)`.
        job: String,
    },
    /// A step started.
    StepStarted {
        /// Job display name.
        job: String,
        /// Step display name.
        step: String,
    },
    /// One line of output (already masked), prefixed by its job.
    Log {
        /// Job display name.
        job: String,
        /// The line, without its newline.
        line: String,
    },
    /// An annotation from a workflow command (already masked).
    Annotation {
        /// Job display name.
        job: String,
        /// What it says and where it points.
        annotation: Annotation,
    },
    /// A step finished.
    StepFinished {
        /// Job display name.
        job: String,
        /// Step display name.
        step: String,
        /// Conclusion (after `continue-on-error`).
        status: Status,
        /// Exit code of the step's process, when it ran one and it exited.
        exit_code: Option<i32>,
        /// Wall time.
        duration: Duration,
    },
    /// A job instance finished.
    JobFinished {
        /// Job display name.
        job: String,
        /// Its result.
        status: Status,
        /// Wall time.
        duration: Duration,
    },
    /// The run finished.
    RunFinished {
        /// Its conclusion.
        status: Status,
        /// Wall time.
        duration: Duration,
    },
}

/// One finished step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// Display name.
    pub name: String,
    /// `id`, when given.
    pub id: Option<String>,
    /// Result before `continue-on-error`.
    pub outcome: Status,
    /// Result after `continue-on-error`.
    pub conclusion: Status,
    /// Exit code when a process exited.
    pub exit_code: Option<i32>,
    /// Outputs set by the step.
    pub outputs: IndexMap<String, String>,
    /// Wall time.
    pub duration: Duration,
}

/// One finished job instance.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// The job id in its workflow (reusable-workflow jobs as `caller/callee`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Result.
    pub status: Status,
    /// Job outputs.
    pub outputs: IndexMap<String, String>,
    /// Steps, in order (skipped ones included).
    pub steps: Vec<StepRecord>,
    /// Markdown written to `GITHUB_STEP_SUMMARY`, concatenated over steps.
    pub summary: String,
    /// Annotations, in the order they were made.
    pub annotations: Vec<Annotation>,
    /// Wall time.
    pub duration: Duration,
}

/// One finished run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// The run id.
    pub run_id: u64,
    /// The workflow's name.
    pub workflow: String,
    /// `run-name`, rendered (masked), when the workflow has one.
    pub title: Option<String>,
    /// Conclusion.
    pub status: Status,
    /// Every job instance, in finishing order.
    pub jobs: Vec<JobRecord>,
    /// Wall time.
    pub duration: Duration,
}

/// Receives results as they are final; kiln-state implements it over SQLite.
pub trait RunStore: Send + Sync {
    /// A job instance finished.
    fn job_finished(&self, run_id: u64, job: &JobRecord);
    /// The run finished.
    fn run_finished(&self, run: &RunRecord);
}

/// A [`RunStore`] in memory, for tests and one-shot runs.
#[derive(Debug, Default)]
pub struct MemoryStore {
    jobs: Mutex<Vec<(u64, JobRecord)>>,
    runs: Mutex<Vec<RunRecord>>,
}

impl MemoryStore {
    /// Jobs recorded so far.
    pub fn jobs(&self) -> Vec<(u64, JobRecord)> {
        self.jobs.lock().map(|j| j.clone()).unwrap_or_default()
    }

    /// Runs recorded so far.
    pub fn runs(&self) -> Vec<RunRecord> {
        self.runs.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl RunStore for MemoryStore {
    fn job_finished(&self, run_id: u64, job: &JobRecord) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.push((run_id, job.clone()));
        }
    }

    fn run_finished(&self, run: &RunRecord) {
        if let Ok(mut runs) = self.runs.lock() {
            runs.push(run.clone());
        }
    }
}
