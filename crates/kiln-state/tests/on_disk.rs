//! On-disk behaviour that needs real files: two processes' worth of stores on
//! one database, crash recovery across a reopen, and schema migrations.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};

use kiln_state::{
    LockHolder, NewRevision, Operation, OperationOutcome, ResourceRecordInput, ResourceStatus,
    RevisionStatus, StateError, Store, schema,
};
use serde_json::{Value, json};

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join(".kiln").join("state.db")
}

fn holder(who: &str, operation: &str) -> LockHolder {
    LockHolder {
        who: who.into(),
        pid: std::process::id(),
        operation: operation.into(),
    }
}

fn new_rev() -> NewRevision {
    NewRevision {
        user: "ann".into(),
        command: "apply".into(),
        files_digest: "sha256:0".into(),
        plan: json!({}),
    }
}

#[test]
fn second_store_sees_the_lock_and_force_unlock_lets_it_in() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let mut first = Store::open(&path).unwrap();
    let mut second = Store::open(&path).unwrap();
    assert_eq!(first.lineage().unwrap(), second.lineage().unwrap());

    let held = first.acquire_lock(&holder("ann@laptop", "apply")).unwrap();
    let err = second
        .acquire_lock(&holder("bob@ci", "destroy"))
        .unwrap_err();
    let message = err.to_string();
    match &err {
        StateError::Locked { holder } => assert_eq!(holder, &held),
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(message.contains("ann@laptop"), "{message}");
    assert!(message.contains("`apply`"), "{message}");
    assert!(message.contains(&held.created_at), "{message}");
    assert!(
        message.contains(&format!("run `kiln force-unlock {}`", held.id)),
        "{message}"
    );
    assert_eq!(second.current_lock().unwrap(), Some(held.clone()));

    // `first` "died": its holder never releases.
    drop(first);
    let forced = second.force_unlock(&held.id).unwrap();
    assert_eq!(forced, held);
    let mine = second.acquire_lock(&holder("bob@ci", "destroy")).unwrap();
    assert_eq!(mine.who, "bob@ci");
    second.release_lock(&mine.id).unwrap();
}

#[test]
fn a_lock_outlives_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let held = Store::open(&path)
        .unwrap()
        .acquire_lock(&holder("ann@laptop", "apply"))
        .unwrap();
    let mut reopened = Store::open(&path).unwrap();
    assert_eq!(reopened.current_lock().unwrap(), Some(held.clone()));
    assert!(matches!(
        reopened.acquire_lock(&holder("x", "apply")),
        Err(StateError::Locked { .. })
    ));
}

#[test]
fn concurrent_acquires_from_threads_admit_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    Store::open(&path).unwrap();
    let winners: Vec<bool> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let path = path.clone();
                scope.spawn(move || {
                    let mut s = Store::open(&path).unwrap();
                    match s.acquire_lock(&holder(&format!("t{i}"), "apply")) {
                        Ok(_) => true,
                        Err(StateError::Locked { .. }) => false,
                        Err(other) => panic!("unexpected {other}"),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(winners.iter().filter(|w| **w).count(), 1);
}

#[test]
fn crash_between_intent_and_outcome_is_recovered_as_tainted() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let (serial, op_id) = {
        let mut s = Store::open(&path).unwrap();
        let serial = s.begin_revision(&new_rev()).unwrap().serial;
        let done = s
            .begin_operation(serial, "db.main", "postgres.database", Operation::Create)
            .unwrap();
        s.complete_operation(
            done,
            OperationOutcome::Written(ResourceRecordInput {
                address: "db.main".into(),
                kind: "postgres.database".into(),
                attributes: json!({"name": "main"}),
                outputs: json!({}),
                private: Value::Null,
                dependencies: vec![],
            }),
        )
        .unwrap();
        let a = s
            .begin_operation(serial, "db.main", "postgres.database", Operation::Update)
            .unwrap();
        s.begin_operation(serial, "svc.api", "docker.container", Operation::Create)
            .unwrap();
        (serial, a)
        // Dropped here without completing: the "crash".
    };

    let mut s = Store::open(&path).unwrap();
    let pending = s.pending_operations().unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].id, op_id);
    assert_eq!(pending[0].operation, Operation::Update);
    assert_eq!(pending[1].address, "svc.api");
    assert_eq!(pending[1].serial, serial);

    assert_eq!(s.mark_interrupted_revisions().unwrap(), vec![serial]);
    let recovered = s.recover_pending().unwrap();
    assert_eq!(recovered, pending);
    assert!(s.pending_operations().unwrap().is_empty());

    let main = s.resource("db.main").unwrap().unwrap();
    assert_eq!(main.status, ResourceStatus::Tainted);
    assert_eq!(main.attributes, json!({"name": "main"}));
    let api = s.resource("svc.api").unwrap().unwrap();
    assert_eq!(api.status, ResourceStatus::Tainted);
    assert_eq!(api.kind, "docker.container");
    assert_eq!(
        s.revision(serial).unwrap().unwrap().status,
        RevisionStatus::Interrupted
    );
}

#[test]
fn opening_twice_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let lineage = {
        let mut s = Store::open(&path).unwrap();
        s.begin_revision(&new_rev()).unwrap();
        s.lineage().unwrap()
    };
    let s = Store::open(&path).unwrap();
    assert_eq!(s.lineage().unwrap(), lineage);
    assert_eq!(s.serial().unwrap(), 1);
    assert_eq!(s.schema_version().unwrap(), schema::supported_version());
    assert_eq!(migration_rows(&path), schema::MIGRATIONS.len());
}

#[test]
fn a_database_from_a_newer_kiln_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    drop(Store::open(&path).unwrap());
    let future = schema::supported_version() + 1;
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, 'later')",
            [future],
        )
        .unwrap();
    match Store::open(&path) {
        Err(StateError::SchemaTooNew { found, supported }) => {
            assert_eq!(found, future);
            assert_eq!(supported, schema::supported_version());
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[test]
fn garbage_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"this is not a database, just some bytes .........").unwrap();
    assert!(matches!(Store::open(&path), Err(StateError::Sqlite { .. })));
}

fn migration_rows(path: &Path) -> usize {
    let conn = rusqlite::Connection::open(path).unwrap();
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
        .unwrap();
    usize::try_from(n).unwrap()
}

#[test]
fn simultaneous_first_opens_agree_on_one_lineage() {
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        let lineages: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let path = path.clone();
                    scope.spawn(move || Store::open(&path).unwrap().lineage().unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(lineages.windows(2).all(|w| w[0] == w[1]), "{lineages:?}");
        assert_eq!(migration_rows(&path), schema::MIGRATIONS.len());
    }
}
