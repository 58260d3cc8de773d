//! The error type of the state store.
//!
//! Every failure carries enough context for an operator to act on it: the
//! SQLite variant names what the store was doing, and `Locked` tells who holds
//! the lock and how to break it if that process is gone.

use std::path::PathBuf;

use crate::types::LockInfo;

/// Everything that can go wrong in the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite refused or failed; `context` says what the store was doing.
    #[error("state store: {context}: {source}")]
    Sqlite {
        /// What the store was doing, e.g. "reading resources".
        context: &'static str,
        /// The underlying SQLite error.
        #[source]
        source: rusqlite::Error,
    },

    /// Another process (or an earlier crashed one) holds the state lock.
    #[error(
        "state is locked by {who} (pid {pid}) running `{operation}` since {created_at} (lock id {id}); \
         if that process is gone, run `kiln force-unlock {id}`",
        who = holder.who,
        pid = holder.pid,
        operation = holder.operation,
        created_at = holder.created_at,
        id = holder.id
    )]
    Locked {
        /// The current holder of the lock.
        holder: LockInfo,
    },

    /// Unlocking with an id that is not the current lock (or there is no lock).
    #[error("{}", no_such_lock_message(.id, .current.as_deref()))]
    NoSuchLock {
        /// The id the caller asked to release.
        id: String,
        /// The id of the lock actually held, if any.
        current: Option<String>,
    },

    /// The database was written by a newer kiln than this one.
    #[error(
        "state database has schema version {found} but this kiln supports up to {supported}; \
         upgrade kiln to use this state"
    )]
    SchemaTooNew {
        /// Highest schema version recorded in the database.
        found: i64,
        /// Highest schema version this binary knows.
        supported: i64,
    },

    /// A row holds something this binary cannot decode (bad JSON, unknown enum).
    #[error("state database is corrupt: {0}")]
    Corrupt(String),

    /// A revision, operation or resource named by the caller does not exist.
    #[error("no such {what}: {key}")]
    NotFound {
        /// Kind of thing: "revision", "pending operation", "resource".
        what: &'static str,
        /// The key the caller gave.
        key: String,
    },

    /// The request contradicts the state (e.g. finishing a finished revision).
    #[error("invalid state request: {0}")]
    Invalid(String),

    /// The store's thread is gone (all work after that fails with this).
    #[error("state store thread has stopped")]
    Closed,

    /// A closure run on the store's thread panicked; the store itself survives.
    #[error("a state store task panicked")]
    TaskPanicked,

    /// Filesystem trouble creating the state directory.
    #[error("state store: {path}: {source}")]
    Io {
        /// The path being created or opened.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn no_such_lock_message(id: &str, current: Option<&str>) -> String {
    match current {
        Some(current) => format!("lock {id} is not held; the current lock is {current}"),
        None => format!("lock {id} is not held; the state is not locked"),
    }
}

/// Attaches "what was being done" to rusqlite results.
pub(crate) trait SqlContext<T> {
    /// Wraps an SQLite error with the given context.
    fn ctx(self, context: &'static str) -> Result<T, StateError>;
}

impl<T> SqlContext<T> for Result<T, rusqlite::Error> {
    fn ctx(self, context: &'static str) -> Result<T, StateError> {
        self.map_err(|source| StateError::Sqlite { context, source })
    }
}
