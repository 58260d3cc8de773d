//! The `Store`: one SQLite connection to a stack's `.kiln/state.db`.
//!
//! Opening sets the connection up (WAL, foreign keys, busy timeout), runs the
//! migrations and makes sure the state has a lineage. The other modules add
//! the lock, revision, resource and event methods to `Store`.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::codec::serial_from_sql;
use crate::error::{SqlContext, StateError};
use crate::schema;

/// How long a statement waits for another process's write to finish before
/// failing with "database is locked". Writes are short, so this is generous.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Prepared statements kept per connection; the store uses about twenty.
const STATEMENT_CACHE: usize = 64;

/// kiln's state store. Synchronous; owns one connection; `Send`, not `Sync`.
///
/// For use from async code, wrap it in a [`crate::StateHandle`].
#[derive(Debug)]
pub struct Store {
    pub(crate) conn: Connection,
    pub(crate) lineage: String,
}

impl Store {
    /// Opens (creating if needed) the state database at `path`, creating its
    /// parent directory, applying migrations and creating the lineage.
    ///
    /// A new database file is created owner-only (0600); SQLite gives its `-wal` and `-shm`
    /// files the database's mode, so the state stays private even in a directory others may
    /// traverse (`.kiln` is 0711 so that `user:` services can reach their release).
    pub fn open(path: &Path) -> Result<Store, StateError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StateError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        create_private(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).ctx("opening state database")?;
        Self::init(conn, true)
    }

    /// Opens the state of the stack in `stack_dir` (its `.kiln/state.db`). `.kiln` gets a
    /// `.gitignore` that ignores all of it, so that `git add -A` in the stack's repository does
    /// not commit the state database, logs and releases (a tool's own cache directory does the
    /// same); one already there is left as it is.
    pub fn open_in_stack(stack_dir: &Path) -> Result<Store, StateError> {
        let path = stack_dir.join(crate::STATE_DB_PATH);
        let store = Self::open(&path)?;
        if let Some(dir) = path.parent() {
            let ignore = dir.join(".gitignore");
            if !ignore.exists() {
                std::fs::write(
                    &ignore,
                    "# kiln's state, logs and releases: never committed.\n*\n",
                )
                .map_err(|source| StateError::Io {
                    path: ignore.clone(),
                    source,
                })?;
            }
        }
        Ok(store)
    }

    /// A private in-memory store, for tests.
    pub fn open_in_memory() -> Result<Store, StateError> {
        let conn = Connection::open_in_memory().ctx("opening in-memory state")?;
        Self::init(conn, false)
    }

    fn init(mut conn: Connection, on_disk: bool) -> Result<Store, StateError> {
        configure(&conn, on_disk)?;
        schema::migrate(&mut conn)?;
        let lineage = ensure_lineage(&mut conn)?;
        Ok(Store { conn, lineage })
    }

    /// The state's lineage: a UUID v7 made when the state was first created.
    /// Two states with different lineages are unrelated histories.
    pub fn lineage(&self) -> Result<String, StateError> {
        Ok(self.lineage.clone())
    }

    /// Serial of the newest revision (whatever its status); 0 when none.
    pub fn serial(&self) -> Result<u64, StateError> {
        let max: Option<i64> = self
            .conn
            .prepare_cached("SELECT MAX(serial) FROM revisions")
            .and_then(|mut st| st.query_row([], |r| r.get(0)))
            .ctx("reading serial")?;
        max.map_or(Ok(0), |v| serial_from_sql(v, "revisions"))
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StateError> {
        schema::current_version(&self.conn)
    }

    /// Starts an IMMEDIATE transaction: it takes SQLite's write lock up
    /// front, so read-then-write sequences cannot be interleaved by another
    /// process (a DEFERRED one could fail half-way with SQLITE_BUSY).
    pub(crate) fn write_tx(
        &mut self,
        context: &'static str,
    ) -> Result<rusqlite::Transaction<'_>, StateError> {
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(context)
    }
}

fn configure(conn: &Connection, on_disk: bool) -> Result<(), StateError> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .ctx("setting busy timeout")?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    if on_disk {
        let mode = enable_wal(conn)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StateError::Invalid(format!(
                "state database refused WAL mode (got {mode}); is it on a network filesystem?"
            )));
        }
    }
    // NORMAL in WAL mode: a crash of the process never loses or corrupts a
    // committed transaction; only a power loss can drop the last few commits.
    // FULL would fsync on every operation and make a 10,000-resource apply
    // take minutes.
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
        .ctx("setting pragmas")
}

/// Switches the database to WAL (readers, e.g. `kiln status`, then never
/// block the writer) and returns the journal mode now in force.
///
/// Switching needs an exclusive lock and SQLite reports BUSY at once, without
/// calling the busy handler, when another process is opening the same fresh
/// file; so retry here until `BUSY_TIMEOUT`. WAL is persistent, so only the
/// very first open of a state ever contends.
fn enable_wal(conn: &Connection) -> Result<String, StateError> {
    let started = std::time::Instant::now();
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other.ctx("enabling WAL"),
        }
    }
}

fn ensure_lineage(conn: &mut Connection) -> Result<String, StateError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx("creating lineage")?;
    // INSERT OR IGNORE then SELECT: whoever creates the state first wins, the
    // others read that lineage.
    tx.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('lineage', ?1)",
        [uuid::Uuid::now_v7().to_string()],
    )
    .ctx("creating lineage")?;
    let lineage: String = tx
        .query_row("SELECT value FROM meta WHERE key = 'lineage'", [], |r| {
            r.get(0)
        })
        .ctx("reading lineage")?;
    tx.commit().ctx("creating lineage")?;
    Ok(lineage)
}

/// Creates `path` as an empty owner-only file unless something is there already (an existing
/// database keeps its mode).
fn create_private(path: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::OpenOptionsExt;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StateError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_creates_parent_dir_and_file() -> Result<(), StateError> {
        let dir = tempfile::tempdir().map_err(|source| StateError::Io {
            path: "tmp".into(),
            source,
        })?;
        let path = dir.path().join("stack/.kiln/state.db");
        let store = Store::open_in_stack(&dir.path().join("stack"))?;
        assert!(path.exists());
        for file in [path.clone(), path.with_extension("db-wal")] {
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&file)
                    .map_err(|source| StateError::Io {
                        path: file.clone(),
                        source,
                    })?
                    .permissions(),
            );
            assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        }
        assert_eq!(store.serial()?, 0);
        assert_eq!(store.schema_version()?, schema::supported_version());
        // `.kiln` ignores itself; a `.gitignore` of the user's own is kept.
        let ignore = dir.path().join("stack/.kiln/.gitignore");
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        assert!(read(&ignore).lines().any(|l| l == "*"), "{}", read(&ignore));
        std::fs::write(&ignore, "state.db\n").map_err(|source| StateError::Io {
            path: ignore.clone(),
            source,
        })?;
        drop(store);
        Store::open_in_stack(&dir.path().join("stack"))?;
        assert_eq!(read(&ignore), "state.db\n");
        Ok(())
    }

    #[test]
    fn lineage_is_a_uuid_v7_and_survives_reopen() -> Result<(), StateError> {
        let dir = tempfile::tempdir().map_err(|source| StateError::Io {
            path: "tmp".into(),
            source,
        })?;
        let path = dir.path().join("state.db");
        let first = Store::open(&path)?.lineage()?;
        let again = Store::open(&path)?.lineage()?;
        assert_eq!(first, again);
        let parsed =
            uuid::Uuid::parse_str(&first).map_err(|e| StateError::Corrupt(e.to_string()))?;
        assert_eq!(parsed.get_version_num(), 7);
        Ok(())
    }

    #[test]
    fn in_memory_stores_have_distinct_lineages() -> Result<(), StateError> {
        let a = Store::open_in_memory()?;
        let b = Store::open_in_memory()?;
        assert_ne!(a.lineage()?, b.lineage()?);
        Ok(())
    }

    #[test]
    fn open_on_a_directory_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir();
        if let Ok(dir) = dir {
            assert!(Store::open(dir.path()).is_err());
        }
    }

    #[test]
    fn store_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Store>();
    }
}
