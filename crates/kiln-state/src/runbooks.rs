//! The runbook audit: every run (which runbook, on what, started by whom or by which alert,
//! with which parameters, how it ended) and every attempt of every step (times, what it did
//! or why it failed). Plain strings and JSON, times in ms since the epoch, like the other
//! tables this crate keeps for kiln's engines.

use rusqlite::Row;
use serde::{Deserialize, Serialize};

use crate::codec::{from_json, to_json};
use crate::error::{SqlContext, StateError};
use crate::store::Store;

/// One run, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunbookRun {
    /// A UUID.
    pub id: String,
    /// The runbook.
    pub runbook: String,
    /// What it acts on (a service, or `runbook:NAME`).
    pub target: String,
    /// `manual` or `alert`.
    pub trigger: String,
    /// Who (`user@host`) or what (`alerts.NAME {labels}`).
    pub triggered_by: String,
    /// For runs started by an alert: the occurrence it answers.
    pub idempotency_key: Option<String>,
    /// The parameters' values.
    pub params: serde_json::Value,
    /// Nothing was changed.
    pub dry_run: bool,
    /// `running`, `awaiting_approval`, `succeeded`, `failed`, `aborted`, or `refused` (by a
    /// guard; `detail` says which).
    pub status: String,
    /// Why it ended as it did.
    pub detail: String,
    /// ms since the epoch.
    pub started_at: i64,
    /// ms since the epoch, once over.
    pub finished_at: Option<i64>,
}

/// One attempt of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunbookStep {
    /// Order within the run, from 1.
    pub seq: i64,
    /// The step's place: `2`, `2.1` inside a called runbook, `2!1` in a fallback.
    pub path: String,
    /// Its name.
    pub name: String,
    /// Its action.
    pub action: String,
    /// The attempt, from 1.
    pub attempt: u32,
    /// The action with its parameters.
    pub detail: String,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    /// What it did, or why it failed.
    pub output: String,
    /// ms since the epoch.
    pub started_at: i64,
    /// ms since the epoch.
    pub finished_at: Option<i64>,
}

const RUN_COLUMNS: &str = "SELECT id, runbook, target, trigger, triggered_by, idempotency_key, params, dry_run, status, detail, started_at, finished_at FROM runbook_runs";

impl Store {
    /// Records a run (its status as given: `running`, or `refused` by a guard).
    pub fn add_runbook_run(&mut self, run: &RunbookRun) -> Result<(), StateError> {
        let params = to_json(&run.params)?;
        self.conn
            .prepare_cached(
                "INSERT INTO runbook_runs (id, runbook, target, trigger, triggered_by, idempotency_key, params, dry_run, status, detail, started_at, finished_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )
            .and_then(|mut st| {
                st.execute(rusqlite::params![
                    run.id,
                    run.runbook,
                    run.target,
                    run.trigger,
                    run.triggered_by,
                    run.idempotency_key,
                    params,
                    run.dry_run,
                    run.status,
                    run.detail,
                    run.started_at,
                    run.finished_at
                ])
            })
            .ctx("recording a runbook run")?;
        Ok(())
    }

    /// Sets a run's status; a `finished_at` ends it.
    pub fn set_runbook_status(
        &mut self,
        id: &str,
        status: &str,
        detail: &str,
        finished_at: Option<i64>,
    ) -> Result<(), StateError> {
        self.conn
            .prepare_cached(
                "UPDATE runbook_runs SET status = ?2, detail = ?3, finished_at = ?4 WHERE id = ?1",
            )
            .and_then(|mut st| st.execute(rusqlite::params![id, status, detail, finished_at]))
            .ctx("updating a runbook run")?;
        Ok(())
    }

    /// Ends every run (and step attempt) still unfinished, as `interrupted` at `now`: their
    /// tasks died with the control plane that ran them, and an approval asked for then is no
    /// longer waited for. Returns the ids of the runs ended.
    pub fn interrupt_unfinished_runbook_runs(
        &mut self,
        now: i64,
    ) -> Result<Vec<String>, StateError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .ctx("starting a transaction")?;
        let ids: Vec<String> = tx
            .prepare("SELECT id FROM runbook_runs WHERE finished_at IS NULL ORDER BY started_at")
            .and_then(|mut st| {
                st.query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()
            })
            .ctx("reading unfinished runbook runs")?;
        tx.execute(
            "UPDATE runbook_steps SET status = 'interrupted', finished_at = ?1
             WHERE finished_at IS NULL",
            [now],
        )
        .ctx("ending interrupted runbook steps")?;
        tx.execute(
            "UPDATE runbook_runs SET status = 'interrupted',
               detail = 'the control plane stopped during the run', finished_at = ?1
             WHERE finished_at IS NULL",
            [now],
        )
        .ctx("ending interrupted runbook runs")?;
        tx.commit().ctx("committing")?;
        Ok(ids)
    }

    /// Records the start of a step's attempt; returns its `seq`.
    pub fn add_runbook_step(
        &mut self,
        run_id: &str,
        step: &RunbookStep,
    ) -> Result<i64, StateError> {
        let seq: i64 = self
            .conn
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) + 1 FROM runbook_steps WHERE run_id = ?1")
            .and_then(|mut st| st.query_row([run_id], |r| r.get(0)))
            .ctx("numbering a runbook step")?;
        self.conn
            .prepare_cached(
                "INSERT INTO runbook_steps (run_id, seq, path, name, action, attempt, detail, status, output, started_at, finished_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .and_then(|mut st| {
                st.execute(rusqlite::params![
                    run_id,
                    seq,
                    step.path,
                    step.name,
                    step.action,
                    step.attempt,
                    step.detail,
                    step.status,
                    step.output,
                    step.started_at,
                    step.finished_at
                ])
            })
            .ctx("recording a runbook step")?;
        Ok(seq)
    }

    /// Ends the newest running attempt of the step at `path`.
    pub fn finish_runbook_step(
        &mut self,
        run_id: &str,
        path: &str,
        status: &str,
        output: &str,
        finished_at: i64,
    ) -> Result<(), StateError> {
        self.conn
            .prepare_cached(
                "UPDATE runbook_steps SET status = ?3, output = ?4, finished_at = ?5
                 WHERE run_id = ?1 AND seq = (SELECT MAX(seq) FROM runbook_steps WHERE run_id = ?1 AND path = ?2)",
            )
            .and_then(|mut st| {
                st.execute(rusqlite::params![run_id, path, status, output, finished_at])
            })
            .ctx("finishing a runbook step")?;
        Ok(())
    }

    /// Runs started after `since` (ms), newest first, at most `limit`.
    pub fn runbook_runs(&self, since: i64, limit: u32) -> Result<Vec<RunbookRun>, StateError> {
        self.query_runs(
            "WHERE started_at > ?1 ORDER BY started_at DESC, id DESC LIMIT ?2",
            rusqlite::params![since, limit],
        )
    }

    /// The latest runs of one runbook, newest first, at most `limit`.
    pub fn runbook_runs_of(
        &self,
        runbook: &str,
        limit: u32,
    ) -> Result<Vec<RunbookRun>, StateError> {
        self.query_runs(
            "WHERE runbook = ?1 ORDER BY started_at DESC, id DESC LIMIT ?2",
            rusqlite::params![runbook, limit],
        )
    }

    fn query_runs(
        &self,
        clauses: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<RunbookRun>, StateError> {
        let mut st = self
            .conn
            .prepare_cached(&format!("{RUN_COLUMNS} {clauses}"))
            .ctx("reading runbook runs")?;
        let raw = st
            .query_map(params, raw_run)
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .ctx("reading runbook runs")?;
        raw.into_iter().map(decode_run).collect()
    }

    /// One run and its steps, by id or by a prefix of at least 4 characters.
    pub fn runbook_run(
        &self,
        id: &str,
    ) -> Result<Option<(RunbookRun, Vec<RunbookStep>)>, StateError> {
        let pattern = format!("{}%", id.replace(['%', '_'], ""));
        let raw = self.query_runs(
            "WHERE id = ?1 OR (length(?1) >= 4 AND id LIKE ?2) LIMIT 2",
            rusqlite::params![id, pattern],
        )?;
        if raw.len() > 1 {
            return Err(StateError::Invalid(format!(
                "`{id}` names several runs; give more of the id"
            )));
        }
        let Some(run) = raw.into_iter().next() else {
            return Ok(None);
        };
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT seq, path, name, action, attempt, detail, status, output, started_at, finished_at
                 FROM runbook_steps WHERE run_id = ?1 ORDER BY seq",
            )
            .ctx("reading runbook steps")?;
        let steps = st
            .query_map([&run.id], step_row)
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .ctx("reading runbook steps")?;
        Ok(Some((run, steps)))
    }
}

/// A run as read, its parameters still JSON text.
type RawRun = (RunbookRun, String);

fn raw_run(row: &Row<'_>) -> rusqlite::Result<RawRun> {
    let run = RunbookRun {
        id: row.get(0)?,
        runbook: row.get(1)?,
        target: row.get(2)?,
        trigger: row.get(3)?,
        triggered_by: row.get(4)?,
        idempotency_key: row.get(5)?,
        params: serde_json::Value::Null,
        dry_run: row.get(7)?,
        status: row.get(8)?,
        detail: row.get(9)?,
        started_at: row.get(10)?,
        finished_at: row.get(11)?,
    };
    Ok((run, row.get(6)?))
}

fn decode_run((mut run, params): RawRun) -> Result<RunbookRun, StateError> {
    run.params = from_json(&params, "runbook_runs", &run.id, "params")?;
    Ok(run)
}

fn step_row(row: &Row<'_>) -> rusqlite::Result<RunbookStep> {
    Ok(RunbookStep {
        seq: row.get(0)?,
        path: row.get(1)?,
        name: row.get(2)?,
        action: row.get(3)?,
        attempt: row.get(4)?,
        detail: row.get(5)?,
        status: row.get(6)?,
        output: row.get(7)?,
        started_at: row.get(8)?,
        finished_at: row.get(9)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, started_at: i64) -> RunbookRun {
        RunbookRun {
            id: id.into(),
            runbook: "restart-api".into(),
            target: "api".into(),
            trigger: "alert".into(),
            triggered_by: "alerts.api-down".into(),
            idempotency_key: Some("k".into()),
            params: serde_json::json!({ "service": "api" }),
            dry_run: false,
            status: "running".into(),
            detail: String::new(),
            started_at,
            finished_at: None,
        }
    }

    fn step(path: &str, attempt: u32) -> RunbookStep {
        RunbookStep {
            seq: 0,
            path: path.into(),
            name: "restart".into(),
            action: "restart".into(),
            attempt,
            detail: "restart api".into(),
            status: "running".into(),
            output: String::new(),
            started_at: 10,
            finished_at: None,
        }
    }

    #[test]
    fn unfinished_runs_and_steps_are_ended_as_interrupted() {
        let mut s = Store::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        s.add_runbook_run(&run("0190aaaa-1", 5))
            .unwrap_or_else(|e| panic!("{e}"));
        s.add_runbook_run(&run("0190bbbb-2", 7))
            .unwrap_or_else(|e| panic!("{e}"));
        s.add_runbook_step("0190aaaa-1", &step("1", 1))
            .unwrap_or_else(|e| panic!("{e}"));
        s.set_runbook_status("0190bbbb-2", "succeeded", "", Some(9))
            .unwrap_or_else(|e| panic!("{e}"));
        let ended = s
            .interrupt_unfinished_runbook_runs(50)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ended, ["0190aaaa-1"]);
        let (run, steps) = s
            .runbook_run("0190aaaa")
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("the run is recorded"));
        assert_eq!(
            (run.status.as_str(), run.finished_at),
            ("interrupted", Some(50))
        );
        assert_eq!(steps[0].status, "interrupted");
        let (done, _) = s
            .runbook_run("0190bbbb")
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("the run is recorded"));
        assert_eq!(done.status, "succeeded", "a finished run is left alone");
        let again = s
            .interrupt_unfinished_runbook_runs(60)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(again.is_empty());
    }

    #[test]
    fn runs_and_their_steps_are_recorded_and_read_back() {
        let mut s = Store::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        s.add_runbook_run(&run("0190aaaa-1", 5))
            .unwrap_or_else(|e| panic!("{e}"));
        s.add_runbook_run(&run("0190bbbb-2", 7))
            .unwrap_or_else(|e| panic!("{e}"));
        let a = s.add_runbook_step("0190aaaa-1", &step("1", 1));
        let b = s.add_runbook_step("0190aaaa-1", &step("1", 2));
        assert_eq!((a.ok(), b.ok()), (Some(1), Some(2)));
        s.finish_runbook_step("0190aaaa-1", "1", "succeeded", "restarted", 20)
            .unwrap_or_else(|e| panic!("{e}"));
        s.set_runbook_status("0190aaaa-1", "succeeded", "2 steps", Some(30))
            .unwrap_or_else(|e| panic!("{e}"));
        let (read, steps) = s
            .runbook_run("0190aaaa")
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("the run is recorded"));
        assert_eq!(read.status, "succeeded");
        assert_eq!(read.finished_at, Some(30));
        assert_eq!(read.params["service"], "api");
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].status, "running");
        assert_eq!(steps[1].status, "succeeded");
        assert_eq!(steps[1].output, "restarted");
        assert!(
            s.runbook_run("0190").is_err(),
            "an ambiguous prefix is refused"
        );
        assert!(
            s.runbook_run("nope")
                .unwrap_or_else(|e| panic!("{e}"))
                .is_none()
        );
        let recent = s.runbook_runs(6, 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].id, "0190bbbb-2");
    }

    #[test]
    fn the_runs_of_one_runbook_are_newest_first() {
        let mut s = Store::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        for (id, at) in [("a", 1), ("c", 3), ("b", 2)] {
            s.add_runbook_run(&run(id, at))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let mut other = run("d", 4);
        other.runbook = "scale-api".into();
        s.add_runbook_run(&other).unwrap_or_else(|e| panic!("{e}"));
        let ids = |runs: Vec<RunbookRun>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
        let of = |name, limit| {
            s.runbook_runs_of(name, limit)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(ids(of("restart-api", 2)), ["c", "b"]);
        assert_eq!(ids(of("scale-api", 5)), ["d"]);
        assert!(of("nope", 5).is_empty());
    }
}
