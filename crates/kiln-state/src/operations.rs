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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use crate::types::{
        EventQuery, NewRevision, ResourceRecordInput, ResourceStatus, RevisionStatus,
    };
    use serde_json::{Value, json};

    fn store_with_revision() -> (Store, u64) {
        let mut s = Store::open_in_memory().unwrap();
        let r = s
            .begin_revision(&NewRevision {
                user: "ann".into(),
                command: "apply".into(),
                files_digest: "d".into(),
                plan: Value::Null,
            })
            .unwrap();
        (s, r.serial)
    }

    fn input(address: &str, n: i64) -> ResourceRecordInput {
        ResourceRecordInput {
            address: address.into(),
            kind: "docker.container".into(),
            attributes: json!({"image": "nginx", "n": n}),
            outputs: json!({"id": format!("c-{n}")}),
            private: json!({"etag": n}),
            dependencies: vec!["net.default".into()],
        }
    }

    fn event_kinds(s: &Store) -> Vec<String> {
        s.events(&EventQuery {
            limit: 1000,
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
    }

    #[test]
    fn create_then_read_back() {
        let (mut s, serial) = store_with_revision();
        let op = s
            .begin_operation(serial, "svc.web", "docker.container", Operation::Create)
            .unwrap();
        assert_eq!(s.pending_operations().unwrap().len(), 1);
        assert_eq!(s.resource("svc.web").unwrap(), None);
        s.complete_operation(op, OperationOutcome::Written(input("svc.web", 1)))
            .unwrap();
        assert!(s.pending_operations().unwrap().is_empty());
        let r = s.resource("svc.web").unwrap().unwrap();
        assert_eq!(r.kind, "docker.container");
        assert_eq!(r.attributes, json!({"image": "nginx", "n": 1}));
        assert_eq!(r.outputs, json!({"id": "c-1"}));
        assert_eq!(r.private, json!({"etag": 1}));
        assert_eq!(r.dependencies, vec!["net.default".to_string()]);
        assert_eq!(r.status, ResourceStatus::Ready);
        assert_eq!(r.serial, serial);
        assert_eq!(s.resources().unwrap(), vec![r]);
        assert_eq!(s.resource_count().unwrap(), 1);
        assert_eq!(event_kinds(&s), vec!["resource.created"]);
    }

    #[test]
    fn update_replace_delete() {
        let (mut s, serial) = store_with_revision();
        let op = s
            .begin_operation(serial, "a", "k", Operation::Create)
            .unwrap();
        s.complete_operation(op, OperationOutcome::Written(input("a", 1)))
            .unwrap();
        s.finish_revision(serial, RevisionStatus::Applied, Value::Null)
            .unwrap();
        let s2 = s
            .begin_revision(&NewRevision {
                user: "bob".into(),
                command: "apply".into(),
                files_digest: "d2".into(),
                plan: Value::Null,
            })
            .unwrap()
            .serial;
        let op = s.begin_operation(s2, "a", "k", Operation::Update).unwrap();
        s.complete_operation(op, OperationOutcome::Written(input("a", 2)))
            .unwrap();
        let r = s.resource("a").unwrap().unwrap();
        assert_eq!((r.attributes["n"].clone(), r.serial), (json!(2), s2));
        let op = s.begin_operation(s2, "a", "k", Operation::Replace).unwrap();
        s.complete_operation(op, OperationOutcome::Written(input("a", 3)))
            .unwrap();
        let op = s.begin_operation(s2, "a", "k", Operation::Delete).unwrap();
        s.complete_operation(op, OperationOutcome::Deleted).unwrap();
        assert_eq!(s.resource("a").unwrap(), None);
        assert_eq!(
            event_kinds(&s),
            vec![
                "resource.created",
                "resource.updated",
                "resource.replaced",
                "resource.deleted"
            ]
        );
    }

    #[test]
    fn failure_without_change_leaves_resource_alone() {
        let (mut s, serial) = store_with_revision();
        let op = s
            .begin_operation(serial, "a", "k", Operation::Create)
            .unwrap();
        s.complete_operation(op, OperationOutcome::Written(input("a", 1)))
            .unwrap();
        let before = s.resource("a").unwrap();
        let op = s
            .begin_operation(serial, "a", "k", Operation::Update)
            .unwrap();
        s.complete_operation(
            op,
            OperationOutcome::Failed {
                message: "quota".into(),
                changed: false,
            },
        )
        .unwrap();
        assert_eq!(s.resource("a").unwrap(), before);
        let op = s
            .begin_operation(serial, "new", "k", Operation::Create)
            .unwrap();
        s.complete_operation(
            op,
            OperationOutcome::Failed {
                message: "no".into(),
                changed: false,
            },
        )
        .unwrap();
        assert_eq!(s.resource("new").unwrap(), None);
        assert!(s.pending_operations().unwrap().is_empty());
        let evs = s
            .events(&EventQuery {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(evs[1].kind, "resource.failed");
        assert_eq!(evs[1].data["changed"], json!(false));
        assert!(evs[1].message.contains("quota"));
    }

    #[test]
    fn failure_with_change_taints_existing_or_new() {
        let (mut s, serial) = store_with_revision();
        let op = s
            .begin_operation(serial, "a", "k", Operation::Create)
            .unwrap();
        s.complete_operation(op, OperationOutcome::Written(input("a", 1)))
            .unwrap();
        let op = s
            .begin_operation(serial, "a", "k", Operation::Update)
            .unwrap();
        s.complete_operation(
            op,
            OperationOutcome::Failed {
                message: "half".into(),
                changed: true,
            },
        )
        .unwrap();
        let a = s.resource("a").unwrap().unwrap();
        assert_eq!(a.status, ResourceStatus::Tainted);
        assert_eq!(
            a.attributes,
            json!({"image": "nginx", "n": 1}),
            "attributes kept for re-observe"
        );
        let op = s
            .begin_operation(serial, "b", "kind.b", Operation::Create)
            .unwrap();
        s.complete_operation(
            op,
            OperationOutcome::Failed {
                message: "half".into(),
                changed: true,
            },
        )
        .unwrap();
        let b = s.resource("b").unwrap().unwrap();
        assert_eq!(
            (b.status, b.kind.as_str()),
            (ResourceStatus::Tainted, "kind.b")
        );
        assert_eq!(b.attributes, json!({}));
        // A later successful write clears the taint.
        let op = s
            .begin_operation(serial, "b", "kind.b", Operation::Replace)
            .unwrap();
        s.complete_operation(op, OperationOutcome::Written(input("b", 5)))
            .unwrap();
        assert_eq!(
            s.resource("b").unwrap().unwrap().status,
            ResourceStatus::Ready
        );
    }

    #[test]
    fn protocol_misuse_is_rejected_without_side_effects() {
        let (mut s, serial) = store_with_revision();
        assert!(matches!(
            s.complete_operation(99, OperationOutcome::Deleted),
            Err(StateError::NotFound {
                what: "pending operation",
                ..
            })
        ));
        assert!(matches!(
            s.begin_operation(serial + 1, "a", "k", Operation::Create),
            Err(StateError::NotFound {
                what: "revision",
                ..
            })
        ));
        let op = s
            .begin_operation(serial, "a", "k", Operation::Create)
            .unwrap();
        assert!(matches!(
            s.complete_operation(op, OperationOutcome::Written(input("other", 1))),
            Err(StateError::Invalid(_))
        ));
        assert_eq!(s.pending_operations().unwrap().len(), 1, "rolled back");
        s.complete_operation(op, OperationOutcome::Deleted).unwrap();
        assert!(
            s.complete_operation(op, OperationOutcome::Deleted).is_err(),
            "twice"
        );
        s.finish_revision(serial, RevisionStatus::Applied, Value::Null)
            .unwrap();
        assert!(matches!(
            s.begin_operation(serial, "a", "k", Operation::Create),
            Err(StateError::Invalid(_))
        ));
    }

    #[test]
    fn batches_are_all_or_nothing() {
        let (mut s, serial) = store_with_revision();
        let ids = s
            .begin_operations(
                serial,
                &[("a", "k", Operation::Create), ("b", "k", Operation::Create)],
            )
            .unwrap();
        assert_eq!(ids.len(), 2);
        assert!(ids[0] < ids[1]);
        let bad = vec![
            (ids[0], OperationOutcome::Written(input("a", 1))),
            (12345, OperationOutcome::Deleted),
        ];
        assert!(s.complete_operations(bad).is_err());
        assert_eq!(s.resources().unwrap(), vec![]);
        assert_eq!(s.pending_operations().unwrap().len(), 2);
        let good = vec![
            (ids[1], OperationOutcome::Written(input("b", 2))),
            (ids[0], OperationOutcome::Written(input("a", 1))),
        ];
        s.complete_operations(good).unwrap();
        let addrs: Vec<_> = s
            .resources()
            .unwrap()
            .into_iter()
            .map(|r| r.address)
            .collect();
        assert_eq!(addrs, vec!["a", "b"]);
        assert!(
            s.begin_operations::<&str, &str>(serial, &[])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn recover_pending_taints_and_clears() {
        let (mut s, serial) = store_with_revision();
        let op = s
            .begin_operation(serial, "a", "k", Operation::Create)
            .unwrap();
        s.complete_operation(op, OperationOutcome::Written(input("a", 1)))
            .unwrap();
        s.begin_operations(
            serial,
            &[
                ("a", "k", Operation::Delete),
                ("new", "kn", Operation::Create),
            ],
        )
        .unwrap();
        let recovered = s.recover_pending().unwrap();
        assert_eq!(recovered.len(), 2);
        assert_eq!(recovered[1].operation, Operation::Create);
        assert!(s.pending_operations().unwrap().is_empty());
        let all = s.resources().unwrap();
        assert!(all.iter().all(|r| r.status == ResourceStatus::Tainted));
        assert_eq!(all[1].kind, "kn");
        assert_eq!(s.recover_pending().unwrap(), vec![]);
        let kinds = event_kinds(&s);
        assert_eq!(
            kinds.iter().filter(|k| *k == "resource.recovered").count(),
            2
        );
    }

    #[test]
    fn set_resource_status_by_hand() {
        let (mut s, serial) = store_with_revision();
        assert!(matches!(
            s.set_resource_status("a", ResourceStatus::Tainted),
            Err(StateError::NotFound {
                what: "resource",
                ..
            })
        ));
        let op = s
            .begin_operation(serial, "a", "k", Operation::Create)
            .unwrap();
        s.complete_operation(op, OperationOutcome::Written(input("a", 1)))
            .unwrap();
        s.set_resource_status("a", ResourceStatus::Tainted).unwrap();
        assert_eq!(
            s.resource("a").unwrap().unwrap().status,
            ResourceStatus::Tainted
        );
        s.set_resource_status("a", ResourceStatus::Ready).unwrap();
        assert_eq!(
            s.resource("a").unwrap().unwrap().status,
            ResourceStatus::Ready
        );
        let kinds = event_kinds(&s);
        assert_eq!(&kinds[1..], ["resource.tainted", "resource.ready"]);
    }

    #[test]
    fn corrupt_resource_rows_are_errors() {
        let (mut s, serial) = store_with_revision();
        let op = s
            .begin_operation(serial, "a", "k", Operation::Create)
            .unwrap();
        s.complete_operation(op, OperationOutcome::Written(input("a", 1)))
            .unwrap();
        s.conn
            .execute("UPDATE resources SET dependencies = '{\"x\":1}'", [])
            .unwrap();
        assert!(matches!(s.resources(), Err(StateError::Corrupt(_))));
        s.conn
            .execute(
                "UPDATE resources SET dependencies = '[]', status = 'gone'",
                [],
            )
            .unwrap();
        assert!(matches!(s.resource("a"), Err(StateError::Corrupt(_))));
        s.begin_operation(serial, "b", "k", Operation::Create)
            .unwrap();
        s.conn
            .execute("UPDATE pending_operations SET operation = 'explode'", [])
            .unwrap();
        assert!(matches!(
            s.pending_operations(),
            Err(StateError::Corrupt(_))
        ));
    }
}
