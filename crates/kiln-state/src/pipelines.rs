//! Recorded CI runs: `kiln ci run` keeps each workflow run, its jobs and their steps here.
//!
//! The store knows nothing of kiln-pipelines: statuses are the short strings GitHub uses
//! (`success`, `failure`, `cancelled`, `skipped`, plus `running`, `error` and `interrupted` for a
//! run that is under way, could not start, or whose process died), outputs and summaries are JSON. Log lines are *not* kept in
//! SQLite: a busy workflow writes megabytes of output, so the binary writes them to files under
//! `.kiln/ci/<run>/` and the database holds only the structure.

use rusqlite::Row;
use serde::{Deserialize, Serialize};

use crate::codec::{from_json, limit_to_sql, now, serial_from_sql, serial_to_sql, to_json};
use crate::error::{SqlContext, StateError};
use crate::store::Store;

/// Data to start a pipeline run with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPipelineRun {
    /// The workflow's name (or its path when it has none).
    pub workflow: String,
    /// The workflow file, relative to the repository.
    pub workflow_path: String,
    /// The event name (`push`, `workflow_dispatch`, ...).
    pub event: String,
    /// The revision asked for (`HEAD`, a branch, a sha).
    pub rev: String,
    /// The full commit sha it resolved to.
    pub commit: String,
    /// The process running it, so a run whose process died can be told from one under way.
    pub pid: u32,
}

/// One recorded run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineRun {
    /// Run id (also `GITHUB_RUN_ID`).
    pub id: u64,
    /// The workflow's name.
    pub workflow: String,
    /// The workflow file.
    pub workflow_path: String,
    /// The event name.
    pub event: String,
    /// The revision asked for.
    pub rev: String,
    /// The commit sha.
    pub commit: String,
    /// The process that ran it.
    pub pid: u32,
    /// `running`, `success`, `failure`, `cancelled`, `skipped` or `error`.
    pub status: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// RFC 3339, UTC; `None` while running.
    pub finished_at: Option<String>,
    /// Free-form JSON written when the run finished (job conclusions, duration, error).
    pub summary: serde_json::Value,
}

/// One finished step, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineStep {
    /// Display name.
    pub name: String,
    /// The step's `id`, when it has one.
    pub step_id: Option<String>,
    /// Result before `continue-on-error`.
    pub outcome: String,
    /// Result after `continue-on-error`.
    pub conclusion: String,
    /// Exit code of its process, when one ran and exited.
    pub exit_code: Option<i32>,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// RFC 3339, UTC.
    pub finished_at: String,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// One finished job instance with its steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineJob {
    /// The job id in its workflow.
    pub job_id: String,
    /// Display name (`test (api)` for a matrix instance).
    pub name: String,
    /// Result.
    pub status: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// RFC 3339, UTC.
    pub finished_at: String,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Job outputs (JSON object).
    pub outputs: serde_json::Value,
    /// Markdown written to `GITHUB_STEP_SUMMARY`.
    pub summary: String,
    /// Annotations (JSON list of objects: `level`, `message`, optional `title`, `file`,
    /// `line`, `end_line`, `col`, `end_column`).
    #[serde(default)]
    pub annotations: serde_json::Value,
    /// Steps in order.
    pub steps: Vec<PipelineStep>,
}

impl Store {
    /// Records the start of a run; returns its id (ids are never reused).
    pub fn begin_pipeline_run(&mut self, run: &NewPipelineRun) -> Result<u64, StateError> {
        self.conn
            .prepare_cached(
                "INSERT INTO pipeline_runs
                 (workflow, workflow_path, event, rev, commit_sha, pid, status, started_at,
                  summary)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', ?7, '{}')",
            )
            .and_then(|mut st| {
                st.execute((
                    &run.workflow,
                    &run.workflow_path,
                    &run.event,
                    &run.rev,
                    &run.commit,
                    run.pid,
                    now(),
                ))
            })
            .ctx("recording pipeline run")?;
        serial_from_sql(self.conn.last_insert_rowid(), "pipeline_runs")
    }

    /// Records a finished job instance and its steps in one transaction.
    pub fn record_pipeline_job(
        &mut self,
        run_id: u64,
        job: &PipelineJob,
    ) -> Result<(), StateError> {
        let run = serial_to_sql(run_id)?;
        let outputs = to_json(&job.outputs)?;
        let annotations = if job.annotations.is_null() {
            "[]".to_owned()
        } else {
            to_json(&job.annotations)?
        };
        let duration = i64::try_from(job.duration_ms).unwrap_or(i64::MAX);
        let tx = self.write_tx("recording pipeline job")?;
        tx.prepare_cached(
            "INSERT INTO pipeline_jobs
             (run_id, job_id, name, status, started_at, finished_at, duration_ms, outputs, summary,
              annotations)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .and_then(|mut st| {
            st.execute((
                run,
                &job.job_id,
                &job.name,
                &job.status,
                &job.started_at,
                &job.finished_at,
                duration,
                outputs,
                &job.summary,
                annotations,
            ))
        })
        .ctx("recording pipeline job")?;
        let job_row = tx.last_insert_rowid();
        for (position, step) in (0_i64..).zip(&job.steps) {
            tx.prepare_cached(
                "INSERT INTO pipeline_steps
                 (job, position, name, step_id, outcome, conclusion, exit_code,
                  started_at, finished_at, duration_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .and_then(|mut st| {
                st.execute((
                    job_row,
                    position,
                    &step.name,
                    &step.step_id,
                    &step.outcome,
                    &step.conclusion,
                    step.exit_code,
                    &step.started_at,
                    &step.finished_at,
                    i64::try_from(step.duration_ms).unwrap_or(i64::MAX),
                ))
            })
            .ctx("recording pipeline step")?;
        }
        tx.commit().ctx("recording pipeline job")
    }

    /// Records the end of a run.
    pub fn finish_pipeline_run(
        &mut self,
        run_id: u64,
        status: &str,
        summary: &serde_json::Value,
    ) -> Result<(), StateError> {
        let (id, summary) = (serial_to_sql(run_id)?, to_json(summary)?);
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE pipeline_runs SET status = ?2, finished_at = ?3, summary = ?4 WHERE id = ?1",
            )
            .and_then(|mut st| st.execute((id, status, now(), summary)))
            .ctx("finishing pipeline run")?;
        if changed == 0 {
            return Err(StateError::Invalid(format!("no pipeline run {run_id}")));
        }
        Ok(())
    }

    /// Marks `running` runs whose process is gone (`alive(pid)` is false) as `interrupted`, so
    /// the state never shows a run under way that nobody runs; returns their ids.
    pub fn mark_interrupted_pipeline_runs(
        &mut self,
        alive: impl Fn(u32) -> bool,
    ) -> Result<Vec<u64>, StateError> {
        let tx = self.write_tx("marking interrupted pipeline runs")?;
        let running: Vec<(i64, u32)> = tx
            .prepare_cached("SELECT id, pid FROM pipeline_runs WHERE status = 'running'")
            .and_then(|mut st| {
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            })
            .ctx("reading running pipeline runs")?;
        let mut marked = Vec::new();
        for (id, _) in running.into_iter().filter(|(_, pid)| !alive(*pid)) {
            tx.prepare_cached(
                "UPDATE pipeline_runs SET status = 'interrupted', finished_at = ?2,
                 summary = '{\"error\":\"its process ended before the run finished\"}'
                 WHERE id = ?1",
            )
            .and_then(|mut st| st.execute((id, now())))
            .ctx("marking interrupted pipeline runs")?;
            marked.push(serial_from_sql(id, "pipeline_runs")?);
        }
        tx.commit().ctx("marking interrupted pipeline runs")?;
        Ok(marked)
    }

    /// Runs, newest first, at most `limit`.
    pub fn pipeline_runs(&self, limit: usize) -> Result<Vec<PipelineRun>, StateError> {
        let mut st = self
            .conn
            .prepare_cached(&format!("{RUN_COLUMNS} ORDER BY id DESC LIMIT ?1"))
            .ctx("reading pipeline runs")?;
        let rows = st
            .query_map([limit_to_sql(limit)], RawRun::from_row)
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .ctx("reading pipeline runs")?;
        rows.into_iter().map(RawRun::decode).collect()
    }

    /// `github.run_number` of a run: its position among the runs of its workflow file (1 for
    /// the first), as GitHub numbers each workflow's runs on its own.
    pub fn pipeline_run_number(&self, run_id: u64) -> Result<u64, StateError> {
        let id = serial_to_sql(run_id)?;
        let count: i64 = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FROM pipeline_runs WHERE id <= ?1 AND workflow_path = \
                 (SELECT workflow_path FROM pipeline_runs WHERE id = ?1)",
            )
            .and_then(|mut st| st.query_row([id], |row| row.get(0)))
            .ctx("numbering the pipeline run")?;
        serial_from_sql(count, "pipeline_runs")
    }

    /// One run by id.
    pub fn pipeline_run(&self, run_id: u64) -> Result<Option<PipelineRun>, StateError> {
        let mut st = self
            .conn
            .prepare_cached(&format!("{RUN_COLUMNS} WHERE id = ?1"))
            .ctx("reading pipeline run")?;
        let rows = st
            .query_map([serial_to_sql(run_id)?], RawRun::from_row)
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .ctx("reading pipeline run")?;
        rows.into_iter().next().map(RawRun::decode).transpose()
    }

    /// The jobs of a run with their steps, in the order they finished.
    pub fn pipeline_jobs(&self, run_id: u64) -> Result<Vec<PipelineJob>, StateError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, job_id, name, status, started_at, finished_at, duration_ms, outputs,
                        summary, annotations
                 FROM pipeline_jobs WHERE run_id = ?1 ORDER BY id",
            )
            .ctx("reading pipeline jobs")?;
        let rows = st
            .query_map([serial_to_sql(run_id)?], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, String>(8)?,
                    r.get::<_, String>(9)?,
                ))
            })
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .ctx("reading pipeline jobs")?;
        let mut jobs = Vec::with_capacity(rows.len());
        for (
            row,
            job_id,
            name,
            status,
            started_at,
            finished_at,
            duration,
            outputs,
            summary,
            notes,
        ) in rows
        {
            jobs.push(PipelineJob {
                outputs: from_json(&outputs, "pipeline_jobs", &row, "outputs")?,
                annotations: from_json(&notes, "pipeline_jobs", &row, "annotations")?,
                steps: self.pipeline_steps(row)?,
                job_id,
                name,
                status,
                started_at,
                finished_at,
                duration_ms: u64::try_from(duration).unwrap_or(0),
                summary,
            });
        }
        Ok(jobs)
    }

    fn pipeline_steps(&self, job_row: i64) -> Result<Vec<PipelineStep>, StateError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT name, step_id, outcome, conclusion, exit_code, started_at, finished_at,
                        duration_ms
                 FROM pipeline_steps WHERE job = ?1 ORDER BY position",
            )
            .ctx("reading pipeline steps")?;
        st.query_map([job_row], |r| {
            Ok(PipelineStep {
                name: r.get(0)?,
                step_id: r.get(1)?,
                outcome: r.get(2)?,
                conclusion: r.get(3)?,
                exit_code: r.get(4)?,
                started_at: r.get(5)?,
                finished_at: r.get(6)?,
                duration_ms: u64::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
            })
        })
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .ctx("reading pipeline steps")
    }
}

const RUN_COLUMNS: &str = "SELECT id, workflow, workflow_path, event, rev, commit_sha, pid,
        status, started_at, finished_at, summary FROM pipeline_runs";

/// A pipeline_runs row before its id and JSON are checked.
struct RawRun {
    id: i64,
    run: PipelineRun,
    summary: String,
}

impl RawRun {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<RawRun> {
        Ok(RawRun {
            id: r.get(0)?,
            run: PipelineRun {
                id: 0,
                workflow: r.get(1)?,
                workflow_path: r.get(2)?,
                event: r.get(3)?,
                rev: r.get(4)?,
                commit: r.get(5)?,
                pid: r.get(6)?,
                status: r.get(7)?,
                started_at: r.get(8)?,
                finished_at: r.get(9)?,
                summary: serde_json::Value::Null,
            },
            summary: r.get(10)?,
        })
    }

    fn decode(self) -> Result<PipelineRun, StateError> {
        let id = serial_from_sql(self.id, "pipeline_runs")?;
        Ok(PipelineRun {
            id,
            summary: from_json(&self.summary, "pipeline_runs", &id, "summary")?,
            ..self.run
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, conclusion: &str, exit_code: Option<i32>) -> PipelineStep {
        PipelineStep {
            name: name.into(),
            step_id: None,
            outcome: conclusion.into(),
            conclusion: conclusion.into(),
            exit_code,
            started_at: now(),
            finished_at: now(),
            duration_ms: 5,
        }
    }

    /// Each workflow file numbers its own runs, as `github.run_number` does.
    #[test]
    fn runs_are_numbered_per_workflow() -> Result<(), StateError> {
        let mut store = Store::open_in_memory()?;
        let new = |path: &str| NewPipelineRun {
            workflow: "ci".into(),
            workflow_path: path.into(),
            event: "push".into(),
            rev: "HEAD".into(),
            commit: "abc".into(),
            pid: 42,
        };
        let first = store.begin_pipeline_run(&new("ci.yml"))?;
        let other = store.begin_pipeline_run(&new("other.yml"))?;
        let second = store.begin_pipeline_run(&new("ci.yml"))?;
        assert_eq!(store.pipeline_run_number(first)?, 1);
        assert_eq!(store.pipeline_run_number(other)?, 1);
        assert_eq!(store.pipeline_run_number(second)?, 2);
        Ok(())
    }

    #[test]
    fn runs_jobs_and_steps_round_trip_newest_first() -> Result<(), StateError> {
        let mut store = Store::open_in_memory()?;
        let new = NewPipelineRun {
            workflow: "ci".into(),
            workflow_path: ".github/workflows/ci.yml".into(),
            event: "push".into(),
            rev: "HEAD".into(),
            commit: "abc".into(),
            pid: 42,
        };
        let first = store.begin_pipeline_run(&new)?;
        let second = store.begin_pipeline_run(&new)?;
        assert!(second > first);
        let job = PipelineJob {
            job_id: "build".into(),
            name: "build (a)".into(),
            status: "failure".into(),
            started_at: now(),
            finished_at: now(),
            duration_ms: 10,
            outputs: serde_json::json!({"x": "1"}),
            summary: String::new(),
            annotations: serde_json::json!([{ "level": "error", "message": "boom" }]),
            steps: vec![
                step("one", "success", Some(0)),
                step("two", "failure", Some(3)),
            ],
        };
        store.record_pipeline_job(first, &job)?;
        store.finish_pipeline_run(first, "failure", &serde_json::json!({"jobs": 1}))?;
        let runs = store.pipeline_runs(10)?;
        assert_eq!(
            runs.iter().map(|r| r.id).collect::<Vec<_>>(),
            [second, first]
        );
        assert_eq!(runs[0].status, "running");
        let run = store.pipeline_run(first)?;
        assert_eq!(run.as_ref().map(|r| r.status.as_str()), Some("failure"));
        assert!(run.is_some_and(|r| r.finished_at.is_some() && r.summary["jobs"] == 1));
        assert_eq!(store.pipeline_jobs(first)?, vec![job]);
        assert!(store.pipeline_jobs(second)?.is_empty());
        assert!(store.pipeline_run(99)?.is_none());
        // The second run's process is gone: it is marked once, the finished one is left alone.
        assert_eq!(
            store.mark_interrupted_pipeline_runs(|pid| pid == 42)?,
            Vec::<u64>::new()
        );
        assert_eq!(
            store.mark_interrupted_pipeline_runs(|_| false)?,
            vec![second]
        );
        assert_eq!(
            store.mark_interrupted_pipeline_runs(|_| false)?,
            Vec::<u64>::new()
        );
        let second_run = store.pipeline_run(second)?;
        assert_eq!(second_run.map(|r| r.status), Some("interrupted".to_owned()));
        assert!(
            store
                .finish_pipeline_run(99, "success", &serde_json::json!({}))
                .is_err()
        );
        Ok(())
    }
}
