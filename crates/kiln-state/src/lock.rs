//! The state lock: one writer at a time, across processes.
//!
//! The lock is a row in `state_lock`, not an OS file lock, so it survives a
//! crash of its holder on purpose: a half-finished apply must be looked at by
//! a human before the next one starts, and `force-unlock` is how they say so.

use rusqlite::{OptionalExtension, Row};

use crate::codec::now;
use crate::error::{SqlContext, StateError};
use crate::events::insert_event;
use crate::store::Store;
use crate::types::{LockHolder, LockInfo, NewEvent};

impl Store {
    /// Takes the lock for `holder`, or fails with `StateError::Locked`
    /// naming whoever has it.
    pub fn acquire_lock(&mut self, holder: &LockHolder) -> Result<LockInfo, StateError> {
        let tx = self.write_tx("taking the state lock")?;
        if let Some(current) = read_lock(&tx)? {
            return Err(StateError::Locked { holder: current });
        }
        let info = LockInfo {
            id: uuid::Uuid::now_v7().to_string(),
            who: holder.who.clone(),
            pid: holder.pid,
            operation: holder.operation.clone(),
            created_at: now(),
        };
        tx.execute(
            "INSERT INTO state_lock (singleton, id, who, pid, operation, created_at)
             VALUES (1, ?1, ?2, ?3, ?4, ?5)",
            (
                &info.id,
                &info.who,
                info.pid,
                &info.operation,
                &info.created_at,
            ),
        )
        .ctx("taking the state lock")?;
        tx.commit().ctx("taking the state lock")?;
        Ok(info)
    }

    /// Releases the lock `lock_id`; fails with `NoSuchLock` if that is not
    /// the lock currently held.
    pub fn release_lock(&mut self, lock_id: &str) -> Result<(), StateError> {
        let tx = self.write_tx("releasing the state lock")?;
        take_lock(&tx, lock_id)?;
        tx.commit().ctx("releasing the state lock")
    }

    /// The lock currently held, if any.
    pub fn current_lock(&self) -> Result<Option<LockInfo>, StateError> {
        read_lock(&self.conn)
    }

    /// Breaks the lock `lock_id` held by another (presumably dead) process.
    /// Requires the exact id so an operator cannot break a lock that was
    /// re-taken meanwhile. Logs a `lock.forced` event.
    pub fn force_unlock(&mut self, lock_id: &str) -> Result<LockInfo, StateError> {
        let tx = self.write_tx("forcing the state lock")?;
        let info = take_lock(&tx, lock_id)?;
        let data = serde_json::to_value(&info)
            .map_err(|e| StateError::Invalid(format!("encoding lock: {e}")))?;
        insert_event(
            &tx,
            &NewEvent {
                kind: "lock.forced".into(),
                address: None,
                serial: None,
                message: format!(
                    "lock {} of {} (pid {}, {}) was forced open",
                    info.id, info.who, info.pid, info.operation
                ),
                data,
            },
        )?;
        tx.commit().ctx("forcing the state lock")?;
        Ok(info)
    }
}

/// Deletes the lock if its id is `lock_id`, returning what it was.
fn take_lock(conn: &rusqlite::Connection, lock_id: &str) -> Result<LockInfo, StateError> {
    match read_lock(conn)? {
        Some(info) if info.id == lock_id => {
            conn.execute("DELETE FROM state_lock WHERE id = ?1", [lock_id])
                .ctx("deleting the state lock")?;
            Ok(info)
        }
        current => Err(StateError::NoSuchLock {
            id: lock_id.to_string(),
            current: current.map(|c| c.id),
        }),
    }
}

fn read_lock(conn: &rusqlite::Connection) -> Result<Option<LockInfo>, StateError> {
    conn.prepare_cached("SELECT id, who, pid, operation, created_at FROM state_lock")
        .and_then(|mut st| st.query_row([], lock_from_row).optional())
        .ctx("reading the state lock")
}

fn lock_from_row(row: &Row<'_>) -> rusqlite::Result<LockInfo> {
    Ok(LockInfo {
        id: row.get(0)?,
        who: row.get(1)?,
        pid: row.get(2)?,
        operation: row.get(3)?,
        created_at: row.get(4)?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use crate::types::EventQuery;

    fn holder(who: &str) -> LockHolder {
        LockHolder {
            who: who.into(),
            pid: 4242,
            operation: "apply".into(),
        }
    }

    #[test]
    fn acquire_release_cycle() {
        let mut s = Store::open_in_memory().unwrap();
        assert_eq!(s.current_lock().unwrap(), None);
        let l = s.acquire_lock(&holder("ann@box")).unwrap();
        assert_eq!(s.current_lock().unwrap(), Some(l.clone()));
        assert_eq!(l.who, "ann@box");
        assert_eq!(l.pid, 4242);
        s.release_lock(&l.id).unwrap();
        assert_eq!(s.current_lock().unwrap(), None);
        let again = s.acquire_lock(&holder("bob@box")).unwrap();
        assert_ne!(again.id, l.id);
    }

    #[test]
    fn second_acquire_is_locked_with_a_helpful_message() {
        let mut s = Store::open_in_memory().unwrap();
        let l = s.acquire_lock(&holder("ann@box")).unwrap();
        let err = s.acquire_lock(&holder("bob@box")).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StateError::Locked { ref holder } if *holder == l));
        for needle in [
            "ann@box",
            "apply",
            l.created_at.as_str(),
            l.id.as_str(),
            "if that process is gone",
        ] {
            assert!(msg.contains(needle), "{needle:?} missing in {msg}");
        }
        assert!(
            msg.contains(&format!("kiln force-unlock {}", l.id)),
            "{msg}"
        );
    }

    #[test]
    fn release_with_wrong_id_fails_and_keeps_the_lock() {
        let mut s = Store::open_in_memory().unwrap();
        assert!(matches!(
            s.release_lock("nope"),
            Err(StateError::NoSuchLock { current: None, .. })
        ));
        let l = s.acquire_lock(&holder("ann@box")).unwrap();
        match s.release_lock("nope") {
            Err(StateError::NoSuchLock { current, .. }) => assert_eq!(current, Some(l.id.clone())),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.current_lock().unwrap(), Some(l));
    }

    #[test]
    fn force_unlock_requires_the_exact_id_and_logs_an_event() {
        let mut s = Store::open_in_memory().unwrap();
        assert!(s.force_unlock("x").is_err());
        let l = s.acquire_lock(&holder("ann@box")).unwrap();
        assert!(s.force_unlock("x").is_err());
        assert_eq!(s.force_unlock(&l.id).unwrap(), l);
        assert_eq!(s.current_lock().unwrap(), None);
        let evs = s
            .events(&EventQuery {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].kind, "lock.forced");
        assert!(evs[0].message.contains(&l.id));
    }
}
