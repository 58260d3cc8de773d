//! Hand-written schema migrations.
//!
//! `MIGRATIONS` is append-only: a released migration is never edited, a
//! change is a new entry. Each one runs in its own IMMEDIATE transaction that
//! re-reads the current version first, so two processes opening a fresh state
//! at once cannot both apply the same step.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::codec::now;
use crate::error::{SqlContext, StateError};

/// Ordered `(version, sql)` steps; versions strictly increase from 1.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (1, V1),
    (2, V2),
    (3, V3),
    (4, V4),
    (5, V5),
    (6, PIPELINE_ANNOTATIONS),
    (7, INCIDENTS),
    (8, PROMOTIONS),
    (9, RUNBOOKS),
    (10, PROMOTION_STATUS),
    (11, KEPT_SETS),
    (12, ALERT_STATE),
    (13, MAINTENANCE),
];

/// The newest schema version this binary understands.
pub fn supported_version() -> i64 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}

const V1: &str = r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- At most one row: the singleton check makes a second INSERT fail, which is
-- what serialises writers across processes.
CREATE TABLE state_lock (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    id         TEXT NOT NULL,
    who        TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    operation  TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE revisions (
    serial       INTEGER PRIMARY KEY,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    user         TEXT NOT NULL,
    command      TEXT NOT NULL,
    files_digest TEXT NOT NULL,
    plan         TEXT NOT NULL,
    status       TEXT NOT NULL,
    summary      TEXT NOT NULL
);
CREATE INDEX revisions_in_progress ON revisions (status) WHERE status = 'in_progress';

CREATE TABLE resources (
    address      TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    attributes   TEXT NOT NULL,
    outputs      TEXT NOT NULL,
    private      TEXT NOT NULL,
    dependencies TEXT NOT NULL,
    status       TEXT NOT NULL,
    serial       INTEGER NOT NULL REFERENCES revisions (serial),
    updated_at   TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE pending_operations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    serial     INTEGER NOT NULL REFERENCES revisions (serial),
    address    TEXT NOT NULL,
    kind       TEXT NOT NULL,
    operation  TEXT NOT NULL,
    started_at TEXT NOT NULL
);

-- AUTOINCREMENT so ids are never reused: they are cursors for followers.
CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    time    TEXT NOT NULL,
    kind    TEXT NOT NULL,
    address TEXT,
    serial  INTEGER,
    message TEXT NOT NULL,
    data    TEXT NOT NULL
);
CREATE INDEX events_by_address ON events (address, id) WHERE address IS NOT NULL;
"#;

/// CI runs recorded by `kiln ci run` (see `pipelines.rs`); log lines live in files under
/// `.kiln/ci/<run>/`, not here, because of their volume.
const V2: &str = r#"
CREATE TABLE pipeline_runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow      TEXT NOT NULL,
    workflow_path TEXT NOT NULL,
    event         TEXT NOT NULL,
    rev           TEXT NOT NULL,
    commit_sha    TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    status        TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    summary       TEXT NOT NULL
);

CREATE INDEX pipeline_runs_running ON pipeline_runs (status) WHERE status = 'running';

CREATE TABLE pipeline_jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      INTEGER NOT NULL REFERENCES pipeline_runs (id),
    job_id      TEXT NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    outputs     TEXT NOT NULL,
    summary     TEXT NOT NULL
);
CREATE INDEX pipeline_jobs_by_run ON pipeline_jobs (run_id, id);

CREATE TABLE pipeline_steps (
    job         INTEGER NOT NULL REFERENCES pipeline_jobs (id),
    position    INTEGER NOT NULL,
    name        TEXT NOT NULL,
    step_id     TEXT,
    outcome     TEXT NOT NULL,
    conclusion  TEXT NOT NULL,
    exit_code   INTEGER,
    started_at  TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (job, position)
) WITHOUT ROWID;
"#;

/// Releases (immutable, content-addressed versions of a service's code; the files live under
/// `.kiln/releases/<digest>/`) and the deploys between them (see `deploys.rs`).
const V3: &str = r#"
CREATE TABLE releases (
    service     TEXT NOT NULL,
    digest      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    source      TEXT NOT NULL,
    commit_sha  TEXT,
    run_id      INTEGER,
    files       INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    PRIMARY KEY (service, digest)
) WITHOUT ROWID;

CREATE TABLE deploys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    service      TEXT NOT NULL,
    from_release TEXT,
    to_release   TEXT NOT NULL,
    strategy     TEXT NOT NULL,
    trigger      TEXT NOT NULL,
    user         TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    finished_at  TEXT NOT NULL,
    duration_ms  INTEGER NOT NULL,
    result       TEXT NOT NULL,
    detail       TEXT NOT NULL
);
CREATE INDEX deploys_by_service ON deploys (service, id);
"#;

/// When a release's commit was made (`git show -s --format=%cI`), recorded at release time so
/// lead times survive a rewritten repository (DORA's lead time for changes).
const V4: &str = r#"
ALTER TABLE releases ADD COLUMN committed_at TEXT;
"#;

/// Alert silences (`kiln silence add`, see `silences.rs`): matchers as JSON, times in ms.
/// (Written as migration 4 on the alerts branch; 4 went to `committed_at` first.)
const V5: &str = r#"
CREATE TABLE silences (
    id          TEXT PRIMARY KEY,
    matchers    TEXT NOT NULL,
    starts_at   INTEGER NOT NULL,
    ends_at     INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    comment     TEXT NOT NULL
) WITHOUT ROWID;
"#;

/// The `::error::`/`::warning::`/`::notice::` annotations of each job (JSON list), so that
/// `kiln ci show` and the dashboard show them after the run, as GitHub's run page does.
const PIPELINE_ANNOTATIONS: &str = r#"
ALTER TABLE pipeline_jobs ADD COLUMN annotations TEXT NOT NULL DEFAULT '[]';
"#;

/// Incidents (`incidents.rs`): one row each, milestones and alerts as JSON, times in ms; and
/// their timelines, one row per entry. (Written as migration 6 on the incidents branch.)
const INCIDENTS: &str = r#"
CREATE TABLE incidents (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    service     TEXT NOT NULL,
    title       TEXT NOT NULL,
    state       TEXT NOT NULL,
    detected_at INTEGER NOT NULL,
    milestones  TEXT NOT NULL,
    alerts      TEXT NOT NULL
);
CREATE INDEX incidents_open ON incidents (service) WHERE state <> 'resolved';

CREATE TABLE incident_timeline (
    incident INTEGER NOT NULL REFERENCES incidents (id),
    position INTEGER NOT NULL,
    at       INTEGER NOT NULL,
    actor    TEXT NOT NULL,
    kind     TEXT NOT NULL,
    text     TEXT NOT NULL,
    PRIMARY KEY (incident, position)
) WITHOUT ROWID;
"#;

/// Environments (see `promotions.rs`): the releases promoted to an environment (its services
/// run the newest one; `service` is the root service's name, `environment` the target) and the
/// approvals `kiln approve` records. Times are ms since the epoch. (Written as migration 6 on the
/// environments branch.)
const PROMOTIONS: &str = r#"
CREATE TABLE promotions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    service     TEXT NOT NULL,
    environment TEXT NOT NULL,
    from_env    TEXT NOT NULL,
    release     TEXT NOT NULL,
    promoted_by TEXT NOT NULL,
    promoted_at INTEGER NOT NULL,
    gates       TEXT NOT NULL
);
CREATE INDEX promotions_by_target ON promotions (service, environment, id);

CREATE TABLE approvals (
    service     TEXT NOT NULL,
    environment TEXT NOT NULL,
    release     TEXT NOT NULL,
    approved_by TEXT NOT NULL,
    approved_at INTEGER NOT NULL,
    PRIMARY KEY (service, environment, release, approved_by)
) WITHOUT ROWID;
"#;

/// Runbook runs and their steps (`kiln runbook show`, see `runbooks.rs`): the audit of who or
/// what started each run, its parameters, each attempt of each step with its times and result.
/// Times in ms. (Written as migration 6 on the runbooks branch.)
const RUNBOOKS: &str = r#"
CREATE TABLE runbook_runs (
    id              TEXT PRIMARY KEY,
    runbook         TEXT NOT NULL,
    target          TEXT NOT NULL,
    trigger         TEXT NOT NULL,
    triggered_by    TEXT NOT NULL,
    idempotency_key TEXT,
    params          TEXT NOT NULL,
    dry_run         INTEGER NOT NULL,
    status          TEXT NOT NULL,
    detail          TEXT NOT NULL,
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER
) WITHOUT ROWID;
CREATE INDEX runbook_runs_by_start ON runbook_runs (started_at);
CREATE TABLE runbook_steps (
    run_id      TEXT NOT NULL REFERENCES runbook_runs (id),
    seq         INTEGER NOT NULL,
    path        TEXT NOT NULL,
    name        TEXT NOT NULL,
    action      TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    detail      TEXT NOT NULL,
    status      TEXT NOT NULL,
    output      TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
"#;

/// A promotion is recorded before its apply (the apply loads the promoted release from it)
/// and marked `applied` or `failed` after; a failed one no longer says what the environment
/// runs. Promotions recorded before this migration were applied.
const PROMOTION_STATUS: &str = r#"
ALTER TABLE promotions ADD COLUMN status TEXT NOT NULL DEFAULT 'applied';
"#;

/// Blue-green sets kept idle for an instant switch back (the deployer's JSON record, with
/// the spec and instances needed to adopt them after a restart).
const KEPT_SETS: &str = r#"
CREATE TABLE kept_sets (
    service     TEXT NOT NULL,
    set_name    TEXT NOT NULL,
    record      TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (service, set_name)
) WITHOUT ROWID;
"#;

/// Routes in maintenance (see `maintenance.rs`): the page each answers with and when it ends
/// (ms since the epoch; NULL: until turned off), so a restarted control plane keeps serving it.
const MAINTENANCE: &str = r#"
CREATE TABLE maintenance (
    route          TEXT PRIMARY KEY,
    service        TEXT NOT NULL,
    status         INTEGER NOT NULL,
    message        TEXT NOT NULL,
    retry_after_ms INTEGER,
    started_at_ms  INTEGER NOT NULL,
    ends_at_ms     INTEGER,
    actor          TEXT NOT NULL
) WITHOUT ROWID;
"#;

/// The alert evaluator's memory across restarts (see `alert_state.rs`): each alert instance's
/// lifecycle (keyed by its rule's identity and its label fingerprint), the notification log
/// per receiver and group (what was last sent and when, as Alertmanager's nflog), and when the
/// evaluator last ran, from which a restart measures its downtime. Times in ms.
const ALERT_STATE: &str = r#"
CREATE TABLE alert_instances (
    rule              TEXT NOT NULL,
    fingerprint       TEXT NOT NULL,
    name              TEXT NOT NULL,
    labels            TEXT NOT NULL,
    annotations       TEXT NOT NULL,
    state             TEXT NOT NULL,
    active_since      INTEGER NOT NULL,
    fired_at          INTEGER,
    keep_firing_since INTEGER,
    resolved_at       INTEGER,
    value             REAL NOT NULL,
    PRIMARY KEY (rule, fingerprint)
) WITHOUT ROWID;
CREATE TABLE alert_notification_log (
    receiver      TEXT NOT NULL,
    group_key     TEXT NOT NULL,
    group_labels  TEXT NOT NULL,
    status        TEXT NOT NULL,
    notified_at   INTEGER NOT NULL,
    firing        TEXT NOT NULL,
    resolved_sent TEXT NOT NULL,
    PRIMARY KEY (receiver, group_key)
) WITHOUT ROWID;
CREATE TABLE alert_evaluator (
    singleton    INTEGER PRIMARY KEY CHECK (singleton = 1),
    evaluated_at INTEGER NOT NULL
);
"#;

/// Brings the database up to `supported_version()`, or refuses a newer one.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StateError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             applied_at TEXT NOT NULL
         );",
    )
    .ctx("creating schema_migrations")?;
    check_not_too_new(conn)?;
    for (version, sql) in MIGRATIONS {
        apply_one(conn, *version, sql)?;
    }
    Ok(())
}

/// The highest applied version (0 on a fresh database).
pub(crate) fn current_version(conn: &Connection) -> Result<i64, StateError> {
    conn.query_row("SELECT MAX(version) FROM schema_migrations", [], |row| {
        row.get::<_, Option<i64>>(0)
    })
    .optional()
    .ctx("reading schema version")
    .map(|v| v.flatten().unwrap_or(0))
}

fn check_not_too_new(conn: &Connection) -> Result<(), StateError> {
    let found = current_version(conn)?;
    let supported = supported_version();
    if found > supported {
        return Err(StateError::SchemaTooNew { found, supported });
    }
    Ok(())
}

fn apply_one(conn: &mut Connection, version: i64, sql: &str) -> Result<(), StateError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx("starting migration")?;
    // Re-read inside the write transaction: another process may have just
    // applied this step.
    if current_version(&tx)? >= version {
        return Ok(());
    }
    tx.execute_batch(sql).ctx("applying migration")?;
    tx.execute(
        "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
        (version, now()),
    )
    .ctx("recording migration")?;
    tx.commit().ctx("committing migration")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_strictly_increase_from_one() {
        for (expected, (v, _)) in (1..).zip(MIGRATIONS) {
            assert_eq!(*v, expected);
        }
    }

    #[test]
    fn migrate_is_idempotent_on_one_connection() -> Result<(), StateError> {
        let mut conn = Connection::open_in_memory().ctx("open")?;
        migrate(&mut conn)?;
        migrate(&mut conn)?;
        assert_eq!(current_version(&conn)?, supported_version());
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .ctx("count")?;
        assert_eq!(rows, i64::try_from(MIGRATIONS.len()).unwrap_or(-1));
        Ok(())
    }

    #[test]
    fn newer_schema_is_refused() -> Result<(), StateError> {
        let mut conn = Connection::open_in_memory().ctx("open")?;
        migrate(&mut conn)?;
        conn.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, 'x')",
            [supported_version() + 5],
        )
        .ctx("insert")?;
        match migrate(&mut conn) {
            Err(StateError::SchemaTooNew { found, supported }) => {
                assert_eq!(found, supported_version() + 5);
                assert_eq!(supported, supported_version());
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
        Ok(())
    }
}
