//! Revisions: one row per apply/destroy/imperative command.
//!
//! The serial is the revision's number; it only grows. A revision starts
//! InProgress and is finished exactly once. A control plane that starts up
//! turns revisions left InProgress by a dead process into Interrupted.

use rusqlite::{Connection, OptionalExtension, Row};
use serde_json::Value;

use crate::codec::{from_json, now, serial_from_sql, serial_to_sql, to_json};
use crate::error::{SqlContext, StateError};
use crate::events::insert_event;
use crate::store::Store;
use crate::types::{NewEvent, NewRevision, Revision, RevisionStatus};

const REVISION_COLUMNS: &str =
    "serial, started_at, finished_at, user, command, files_digest, plan, status, summary";

impl Store {
    /// Starts a revision with serial = newest + 1, status InProgress.
    pub fn begin_revision(&mut self, rev: &NewRevision) -> Result<Revision, StateError> {
        let plan = to_json(&rev.plan)?;
        let lineage = self.lineage.clone();
        let tx = self.write_tx("starting revision")?;
        let last: i64 = tx
            .query_row("SELECT COALESCE(MAX(serial), 0) FROM revisions", [], |r| {
                r.get(0)
            })
            .ctx("starting revision")?;
        let serial = last
            .checked_add(1)
            .ok_or_else(|| StateError::Corrupt(format!("revisions: serial {last} overflows")))?;
        let started_at = now();
        tx.execute(
            "INSERT INTO revisions
                 (serial, started_at, finished_at, user, command, files_digest, plan, status, summary)
             VALUES (?1, ?2, NULL, ?3, ?4, ?5, ?6, ?7, 'null')",
            (
                serial,
                &started_at,
                &rev.user,
                &rev.command,
                &rev.files_digest,
                plan,
                RevisionStatus::InProgress.as_str(),
            ),
        )
        .ctx("starting revision")?;
        tx.commit().ctx("starting revision")?;
        Ok(Revision {
            serial: serial_from_sql(serial, "revisions")?,
            lineage,
            started_at,
            finished_at: None,
            user: rev.user.clone(),
            command: rev.command.clone(),
            files_digest: rev.files_digest.clone(),
            plan: rev.plan.clone(),
            status: RevisionStatus::InProgress,
            summary: Value::Null,
        })
    }

    /// Finishes an InProgress revision with a final status and a summary.
    pub fn finish_revision(
        &mut self,
        serial: u64,
        status: RevisionStatus,
        summary: Value,
    ) -> Result<(), StateError> {
        if status == RevisionStatus::InProgress {
            return Err(StateError::Invalid(
                "a revision cannot be finished as in_progress".into(),
            ));
        }
        let summary = to_json(&summary)?;
        let tx = self.write_tx("finishing revision")?;
        require_in_progress(&tx, serial)?;
        tx.execute(
            "UPDATE revisions SET status = ?2, summary = ?3, finished_at = ?4 WHERE serial = ?1",
            (serial_to_sql(serial)?, status.as_str(), summary, now()),
        )
        .ctx("finishing revision")?;
        tx.commit().ctx("finishing revision")
    }

    /// Revisions, newest first, at most `limit` of them.
    pub fn revisions(&self, limit: Option<usize>) -> Result<Vec<Revision>, StateError> {
        // LIMIT -1 means no limit in SQLite.
        let limit = limit.map_or(-1, crate::codec::limit_to_sql);
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {REVISION_COLUMNS} FROM revisions ORDER BY serial DESC LIMIT ?1"
            ))
            .ctx("reading revisions")?;
        let raws = st
            .query_map([limit], RawRevision::from_row)
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .ctx("reading revisions")?;
        raws.into_iter().map(|r| r.decode(&self.lineage)).collect()
    }

    /// One revision by serial.
    pub fn revision(&self, serial: u64) -> Result<Option<Revision>, StateError> {
        let raw = self
            .conn
            .prepare_cached(&format!(
                "SELECT {REVISION_COLUMNS} FROM revisions WHERE serial = ?1"
            ))
            .and_then(|mut st| {
                st.query_row([serial_to_sql(serial).unwrap_or(-1)], RawRevision::from_row)
                    .optional()
            })
            .ctx("reading revision")?;
        raw.map(|r| r.decode(&self.lineage)).transpose()
    }

    /// Marks every InProgress revision Interrupted (call when a control
    /// plane starts: no apply can be running yet). Returns their serials and
    /// logs a `revision.interrupted` event for each.
    pub fn mark_interrupted_revisions(&mut self) -> Result<Vec<u64>, StateError> {
        let tx = self.write_tx("marking interrupted revisions")?;
        let serials: Vec<i64> = tx
            .prepare(
                "UPDATE revisions SET status = ?1, finished_at = ?2 WHERE status = ?3
                 RETURNING serial",
            )
            .and_then(|mut st| {
                st.query_map(
                    (
                        RevisionStatus::Interrupted.as_str(),
                        now(),
                        RevisionStatus::InProgress.as_str(),
                    ),
                    |r| r.get(0),
                )
                .and_then(Iterator::collect)
            })
            .ctx("marking interrupted revisions")?;
        let mut out = Vec::with_capacity(serials.len());
        for s in serials {
            let serial = serial_from_sql(s, "revisions")?;
            insert_event(
                &tx,
                &NewEvent {
                    kind: "revision.interrupted".into(),
                    address: None,
                    serial: Some(serial),
                    message: format!("revision {serial} was interrupted before it finished"),
                    data: Value::Null,
                },
            )?;
            out.push(serial);
        }
        tx.commit().ctx("marking interrupted revisions")?;
        out.sort_unstable();
        Ok(out)
    }
}

/// Fails unless revision `serial` exists and is InProgress.
pub(crate) fn require_in_progress(conn: &Connection, serial: u64) -> Result<(), StateError> {
    let key = serial_to_sql(serial)?;
    let status: Option<String> = conn
        .prepare_cached("SELECT status FROM revisions WHERE serial = ?1")
        .and_then(|mut st| st.query_row([key], |r| r.get(0)).optional())
        .ctx("reading revision status")?;
    let Some(status) = status else {
        return Err(StateError::NotFound {
            what: "revision",
            key: serial.to_string(),
        });
    };
    match RevisionStatus::parse(&status)? {
        RevisionStatus::InProgress => Ok(()),
        other => Err(StateError::Invalid(format!(
            "revision {serial} is already {other}"
        ))),
    }
}

/// A revisions row before its JSON and enums are checked.
struct RawRevision {
    serial: i64,
    started_at: String,
    finished_at: Option<String>,
    user: String,
    command: String,
    files_digest: String,
    plan: String,
    status: String,
    summary: String,
}

impl RawRevision {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawRevision {
            serial: row.get(0)?,
            started_at: row.get(1)?,
            finished_at: row.get(2)?,
            user: row.get(3)?,
            command: row.get(4)?,
            files_digest: row.get(5)?,
            plan: row.get(6)?,
            status: row.get(7)?,
            summary: row.get(8)?,
        })
    }

    fn decode(self, lineage: &str) -> Result<Revision, StateError> {
        let serial = serial_from_sql(self.serial, "revisions")?;
        Ok(Revision {
            serial,
            lineage: lineage.to_string(),
            plan: from_json(&self.plan, "revision", &serial, "plan")?,
            summary: from_json(&self.summary, "revision", &serial, "summary")?,
            status: RevisionStatus::parse(&self.status)?,
            started_at: self.started_at,
            finished_at: self.finished_at,
            user: self.user,
            command: self.command,
            files_digest: self.files_digest,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn new_rev(command: &str) -> NewRevision {
        NewRevision {
            user: "ann".into(),
            command: command.into(),
            files_digest: "sha256:abc".into(),
            plan: json!({"changes": 1}),
        }
    }

    #[test]
    fn serials_count_up_from_one() {
        let mut s = Store::open_in_memory().unwrap();
        assert_eq!(s.serial().unwrap(), 0);
        let r1 = s.begin_revision(&new_rev("apply")).unwrap();
        assert_eq!(r1.serial, 1);
        assert_eq!(r1.status, RevisionStatus::InProgress);
        assert_eq!(r1.lineage, s.lineage().unwrap());
        s.finish_revision(1, RevisionStatus::Applied, json!({"created": 1}))
            .unwrap();
        let r2 = s.begin_revision(&new_rev("destroy")).unwrap();
        assert_eq!(r2.serial, 2);
        assert_eq!(s.serial().unwrap(), 2);
    }

    #[test]
    fn finish_records_status_summary_and_time() {
        let mut s = Store::open_in_memory().unwrap();
        let r = s.begin_revision(&new_rev("apply")).unwrap();
        assert_eq!(s.revision(r.serial).unwrap(), Some(r.clone()));
        s.finish_revision(r.serial, RevisionStatus::Failed, json!({"errors": 2}))
            .unwrap();
        let got = s.revision(r.serial).unwrap().unwrap();
        assert_eq!(got.status, RevisionStatus::Failed);
        assert_eq!(got.summary, json!({"errors": 2}));
        assert!(got.finished_at.is_some());
        assert_eq!(got.plan, json!({"changes": 1}));
        assert_eq!(got.command, "apply");
    }

    #[test]
    fn finish_rejects_unknown_finished_and_in_progress() {
        let mut s = Store::open_in_memory().unwrap();
        assert!(matches!(
            s.finish_revision(9, RevisionStatus::Applied, Value::Null),
            Err(StateError::NotFound {
                what: "revision",
                ..
            })
        ));
        let r = s.begin_revision(&new_rev("apply")).unwrap();
        assert!(matches!(
            s.finish_revision(r.serial, RevisionStatus::InProgress, Value::Null),
            Err(StateError::Invalid(_))
        ));
        s.finish_revision(r.serial, RevisionStatus::Applied, Value::Null)
            .unwrap();
        assert!(matches!(
            s.finish_revision(r.serial, RevisionStatus::Failed, Value::Null),
            Err(StateError::Invalid(_))
        ));
    }

    #[test]
    fn revisions_are_newest_first_and_limited() {
        let mut s = Store::open_in_memory().unwrap();
        for _ in 0..5 {
            let r = s.begin_revision(&new_rev("apply")).unwrap();
            s.finish_revision(r.serial, RevisionStatus::Applied, Value::Null)
                .unwrap();
        }
        let all = s.revisions(None).unwrap();
        assert_eq!(
            all.iter().map(|r| r.serial).collect::<Vec<_>>(),
            vec![5, 4, 3, 2, 1]
        );
        let two = s.revisions(Some(2)).unwrap();
        assert_eq!(two.iter().map(|r| r.serial).collect::<Vec<_>>(), vec![5, 4]);
        assert_eq!(s.revision(42).unwrap(), None);
        assert_eq!(s.revision(u64::MAX).unwrap(), None);
    }

    #[test]
    fn interrupted_revisions_are_marked_once() {
        let mut s = Store::open_in_memory().unwrap();
        let a = s.begin_revision(&new_rev("apply")).unwrap();
        s.finish_revision(a.serial, RevisionStatus::Applied, Value::Null)
            .unwrap();
        let b = s.begin_revision(&new_rev("apply")).unwrap();
        let c = s.begin_revision(&new_rev("scale")).unwrap();
        assert_eq!(
            s.mark_interrupted_revisions().unwrap(),
            vec![b.serial, c.serial]
        );
        assert_eq!(s.mark_interrupted_revisions().unwrap(), Vec::<u64>::new());
        let got = s.revision(b.serial).unwrap().unwrap();
        assert_eq!(got.status, RevisionStatus::Interrupted);
        assert!(got.finished_at.is_some());
        assert_eq!(
            s.revision(a.serial).unwrap().unwrap().status,
            RevisionStatus::Applied
        );
        let evs = s
            .events(&crate::EventQuery {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(evs.len(), 2);
        assert!(evs.iter().all(|e| e.kind == "revision.interrupted"));
    }

    #[test]
    fn corrupt_plan_is_reported() {
        let mut s = Store::open_in_memory().unwrap();
        s.begin_revision(&new_rev("apply")).unwrap();
        s.conn
            .execute("UPDATE revisions SET plan = '{'", [])
            .unwrap();
        assert!(matches!(s.revisions(None), Err(StateError::Corrupt(_))));
        assert!(matches!(s.revision(1), Err(StateError::Corrupt(_))));
        s.conn
            .execute("UPDATE revisions SET plan = '{}', status = 'odd'", [])
            .unwrap();
        assert!(matches!(s.revision(1), Err(StateError::Corrupt(_))));
    }
}
