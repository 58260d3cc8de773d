//! The crash-safe write protocol for resources.
//!
//! Before touching a real resource the engine records its intent
//! (`begin_operation`, one committed row in `pending_operations`); afterwards
//! it records the outcome (`complete_operation`), which updates the resource,
//! removes the intent and logs an event in one transaction. If the process
//! dies in between, the intent is still there on the next start and
//! `recover_pending` taints the resource, because the change may or may not
//! have happened.

use rusqlite::{Connection, OptionalExtension, Row};
use serde_json::json;

use crate::codec::{now, serial_from_sql, serial_to_sql};
use crate::error::{SqlContext, StateError};
use crate::events::insert_event;
use crate::resources::{delete_resource, taint_resource, upsert_resource};
use crate::revisions::require_in_progress;
use crate::store::Store;
use crate::types::{NewEvent, Operation, OperationOutcome, PendingOperation};

impl Store {
    /// Records the intent to run `op` on `address` (of `kind`) within the
    /// InProgress revision `serial`; returns the operation id.
    pub fn begin_operation(
        &mut self,
        serial: u64,
        address: &str,
        kind: &str,
        op: Operation,
    ) -> Result<i64, StateError> {
        let ids = self.begin_operations(serial, &[(address, kind, op)])?;
        ids.into_iter()
            .next()
            .ok_or_else(|| StateError::Invalid("no operation id was returned".into()))
    }

    /// Records many intents in one transaction; ids are in input order.
    pub fn begin_operations<A, K>(
        &mut self,
        serial: u64,
        ops: &[(A, K, Operation)],
    ) -> Result<Vec<i64>, StateError>
    where
        A: AsRef<str>,
        K: AsRef<str>,
    {
        let serial_sql = serial_to_sql(serial)?;
        let at = now();
        let tx = self.write_tx("recording operations")?;
        require_in_progress(&tx, serial)?;
        let mut ids = Vec::with_capacity(ops.len());
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO pending_operations (serial, address, kind, operation, started_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .ctx("recording operations")?;
            for (address, kind, op) in ops {
                st.execute((
                    serial_sql,
                    address.as_ref(),
                    kind.as_ref(),
                    op.as_str(),
                    &at,
                ))
                .ctx("recording operations")?;
                ids.push(tx.last_insert_rowid());
            }
        }
        tx.commit().ctx("recording operations")?;
        Ok(ids)
    }

    /// Records how operation `op_id` ended (see `OperationOutcome`), in one
    /// transaction with its event.
    pub fn complete_operation(
        &mut self,
        op_id: i64,
        outcome: OperationOutcome,
    ) -> Result<(), StateError> {
        self.complete_operations(vec![(op_id, outcome)])
    }

    /// Records many outcomes in one transaction: all or none.
    pub fn complete_operations(
        &mut self,
        outcomes: Vec<(i64, OperationOutcome)>,
    ) -> Result<(), StateError> {
        let at = now();
        let tx = self.write_tx("completing operations")?;
        for (op_id, outcome) in outcomes {
            complete_one(&tx, op_id, outcome, &at)?;
        }
        tx.commit().ctx("completing operations")
    }

    /// Operations begun but never completed (left by a crash), oldest first.
    pub fn pending_operations(&self) -> Result<Vec<PendingOperation>, StateError> {
        read_pending(&self.conn)
    }

    /// Taints the resource of every pending operation (creating a Tainted
    /// record where none exists), removes the pending rows and logs a
    /// `resource.recovered` event per operation. Returns what was recovered.
    pub fn recover_pending(&mut self) -> Result<Vec<PendingOperation>, StateError> {
        let at = now();
        let tx = self.write_tx("recovering pending operations")?;
        let pending = read_pending(&tx)?;
        for op in &pending {
            taint_resource(&tx, &op.address, &op.kind, op.serial, &at)?;
            delete_pending(&tx, op.id)?;
            insert_event(
                &tx,
                &NewEvent {
                    kind: "resource.recovered".into(),
                    address: Some(op.address.clone()),
                    serial: Some(op.serial),
                    message: format!(
                        "{} of {} was interrupted; marked tainted",
                        op.operation, op.address
                    ),
                    data: json!({ "operation": op.operation.as_str(), "operation_id": op.id }),
                },
            )?;
        }
        tx.commit().ctx("recovering pending operations")?;
        Ok(pending)
    }
}

/// Applies one outcome inside an open transaction.
fn complete_one(
    conn: &Connection,
    op_id: i64,
    outcome: OperationOutcome,
    at: &str,
) -> Result<(), StateError> {
    let op = read_one_pending(conn, op_id)?.ok_or_else(|| StateError::NotFound {
        what: "pending operation",
        key: op_id.to_string(),
    })?;
    let event = match outcome {
        OperationOutcome::Written(input) => {
            if input.address != op.address {
                return Err(StateError::Invalid(format!(
                    "operation {op_id} is on {} but wrote {}",
                    op.address, input.address
                )));
            }
            upsert_resource(conn, &input, op.serial, at)?;
            written_event(&op)
        }
        OperationOutcome::Deleted => {
            delete_resource(conn, &op.address)?;
            outcome_event(&op, "resource.deleted", format!("deleted {}", op.address))
        }
        OperationOutcome::Failed { message, changed } => {
            if changed {
                taint_resource(conn, &op.address, &op.kind, op.serial, at)?;
            }
            failed_event(&op, message, changed)
        }
    };
    delete_pending(conn, op_id)?;
    insert_event(conn, &event)?;
    Ok(())
}

fn written_event(op: &PendingOperation) -> NewEvent {
    let (kind, verb) = match op.operation {
        Operation::Create => ("resource.created", "created"),
        Operation::Update => ("resource.updated", "updated"),
        Operation::Replace => ("resource.replaced", "replaced"),
        // A delete that reports a write: odd but possible (e.g. a provider
        // that could only orphan it); log it as a write.
        Operation::Delete => ("resource.written", "wrote"),
    };
    outcome_event(op, kind, format!("{verb} {}", op.address))
}

fn failed_event(op: &PendingOperation, message: String, changed: bool) -> NewEvent {
    let text = if changed {
        format!(
            "{} of {} failed and may have half-happened (tainted): {message}",
            op.operation, op.address
        )
    } else {
        format!("{} of {} failed: {message}", op.operation, op.address)
    };
    let mut ev = outcome_event(op, "resource.failed", text);
    ev.data = json!({ "operation": op.operation.as_str(), "changed": changed, "error": message });
    ev
}

fn outcome_event(op: &PendingOperation, kind: &str, message: String) -> NewEvent {
    NewEvent {
        kind: kind.to_string(),
        address: Some(op.address.clone()),
        serial: Some(op.serial),
        message,
        data: json!({ "operation": op.operation.as_str(), "kind": op.kind }),
    }
}

fn delete_pending(conn: &Connection, op_id: i64) -> Result<(), StateError> {
    conn.prepare_cached("DELETE FROM pending_operations WHERE id = ?1")
        .and_then(|mut st| st.execute([op_id]))
        .ctx("removing pending operation")?;
    Ok(())
}

fn read_one_pending(conn: &Connection, op_id: i64) -> Result<Option<PendingOperation>, StateError> {
    let raw = conn
        .prepare_cached(
            "SELECT id, serial, address, kind, operation, started_at
             FROM pending_operations WHERE id = ?1",
        )
        .and_then(|mut st| st.query_row([op_id], RawPending::from_row).optional())
        .ctx("reading pending operation")?;
    raw.map(RawPending::decode).transpose()
}

fn read_pending(conn: &Connection) -> Result<Vec<PendingOperation>, StateError> {
    let raws = conn
        .prepare_cached(
            "SELECT id, serial, address, kind, operation, started_at
             FROM pending_operations ORDER BY id",
        )
        .and_then(|mut st| {
            st.query_map([], RawPending::from_row)
                .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        })
        .ctx("reading pending operations")?;
    raws.into_iter().map(RawPending::decode).collect()
}

/// A pending_operations row before its enum and serial are checked.
struct RawPending {
    id: i64,
    serial: i64,
    address: String,
    kind: String,
    operation: String,
    started_at: String,
}

impl RawPending {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawPending {
            id: row.get(0)?,
            serial: row.get(1)?,
            address: row.get(2)?,
            kind: row.get(3)?,
            operation: row.get(4)?,
            started_at: row.get(5)?,
        })
    }

    fn decode(self) -> Result<PendingOperation, StateError> {
        Ok(PendingOperation {
            id: self.id,
            serial: serial_from_sql(self.serial, "pending_operations")?,
            operation: Operation::parse(&self.operation)?,
            address: self.address,
            kind: self.kind,
            started_at: self.started_at,
        })
    }
}
