//! Plain data types of the state store's API.
//!
//! They are independent of SQLite: enums map to short lowercase strings in the
//! database (`as_str` / `parse`), so the on-disk format stays readable with the
//! `sqlite3` shell and stable across Rust renames.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::StateError;

/// Who wants the state lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// `user@host` of the process taking the lock.
    pub who: String,
    /// Process id, so an operator can check whether the holder still runs.
    pub pid: u32,
    /// What the holder is doing, e.g. "apply".
    pub operation: String,
}

/// A held lock, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Lock id (UUID v7); needed to release or force-unlock.
    pub id: String,
    /// `user@host` of the holder.
    pub who: String,
    /// Holder's process id.
    pub pid: u32,
    /// What the holder is doing.
    pub operation: String,
    /// When the lock was taken (RFC 3339, UTC).
    pub created_at: String,
}

/// Outcome of a revision (one apply/destroy/imperative command).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevisionStatus {
    /// Started, not finished (or its process died: see `mark_interrupted_revisions`).
    InProgress,
    /// Finished successfully.
    Applied,
    /// Finished with errors.
    Failed,
    /// Its process stopped before finishing it.
    Interrupted,
}

/// Data to start a revision with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRevision {
    /// Who runs the command.
    pub user: String,
    /// "apply", "destroy", "scale", ...
    pub command: String,
    /// Digest of the stack's files the plan was made from.
    pub files_digest: String,
    /// The plan being carried out.
    pub plan: Value,
}

/// A recorded revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    /// 1, 2, 3 ... within the lineage.
    pub serial: u64,
    /// The store's lineage (same for every revision of one state).
    pub lineage: String,
    /// RFC 3339 UTC.
    pub started_at: String,
    /// RFC 3339 UTC, once finished.
    pub finished_at: Option<String>,
    /// Who ran it.
    pub user: String,
    /// The command.
    pub command: String,
    /// Digest of the stack files.
    pub files_digest: String,
    /// The plan.
    pub plan: Value,
    /// Where it stands.
    pub status: RevisionStatus,
    /// Free-form summary given at finish (`null` until then).
    pub summary: Value,
}

/// Health of a recorded resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceStatus {
    /// Recorded attributes match what the last operation produced.
    Ready,
    /// An operation on it may have half-happened: the next plan must
    /// re-observe or replace it.
    Tainted,
}

/// A resource as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceRecord {
    /// Unique address, e.g. `service.web`.
    pub address: String,
    /// Provider kind, e.g. `docker.container`.
    pub kind: String,
    /// Attributes as last written (a JSON object).
    pub attributes: Value,
    /// Outputs as last written (a JSON object).
    pub outputs: Value,
    /// Provider-private data, opaque to everyone else.
    pub private: Value,
    /// Addresses this resource depends on.
    pub dependencies: Vec<String>,
    /// Ready or Tainted.
    pub status: ResourceStatus,
    /// Revision that last wrote it.
    pub serial: u64,
    /// RFC 3339 UTC of the last write.
    pub updated_at: String,
}

/// What a successful create/update/replace wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceRecordInput {
    /// Unique address.
    pub address: String,
    /// Provider kind.
    pub kind: String,
    /// Attributes (a JSON object).
    pub attributes: Value,
    /// Outputs (a JSON object).
    pub outputs: Value,
    /// Provider-private data.
    pub private: Value,
    /// Addresses it depends on.
    pub dependencies: Vec<String>,
}

/// The kind of change an operation makes to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Make a new resource.
    Create,
    /// Change one in place.
    Update,
    /// Destroy and re-create.
    Replace,
    /// Destroy.
    Delete,
}

/// How an operation ended.
// Not boxed: outcomes are built once and moved into the store, and callers
// match on `Written(input)` directly.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationOutcome {
    /// The resource now exists with this content.
    Written(ResourceRecordInput),
    /// The resource is gone.
    Deleted,
    /// It failed; `changed` says the real resource may have been altered
    /// anyway, which taints its record.
    Failed {
        /// The provider's error message.
        message: String,
        /// Whether the failure may have left a partial change behind.
        changed: bool,
    },
}

/// An operation whose intent was recorded but whose outcome was not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOperation {
    /// Operation id returned by `begin_operation`.
    pub id: i64,
    /// Revision it belongs to.
    pub serial: u64,
    /// Resource address.
    pub address: String,
    /// Resource kind (used to create a Tainted record if none exists).
    pub kind: String,
    /// What it was doing.
    pub operation: Operation,
    /// RFC 3339 UTC.
    pub started_at: String,
}

/// An event to append to the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Dotted kind: "apply.started", "resource.created", "drift.detected" ...
    pub kind: String,
    /// Resource concerned, if any.
    pub address: Option<String>,
    /// Revision concerned, if any.
    pub serial: Option<u64>,
    /// Human-readable line.
    pub message: String,
    /// Structured detail.
    pub data: Value,
}

/// A logged event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Increasing id; use as a cursor (`EventQuery::after_id`).
    pub id: i64,
    /// RFC 3339 UTC.
    pub time: String,
    /// Dotted kind.
    pub kind: String,
    /// Resource concerned, if any.
    pub address: Option<String>,
    /// Revision concerned, if any.
    pub serial: Option<u64>,
    /// Human-readable line.
    pub message: String,
    /// Structured detail.
    pub data: Value,
}

/// Which events to read.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EventQuery {
    /// Only events with a larger id (`None`: from the start).
    pub after_id: Option<i64>,
    /// Only events about this address.
    pub address: Option<String>,
    /// At most this many (oldest first).
    pub limit: usize,
}

/// Implements the database string form of a fieldless enum.
macro_rules! db_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// The string stored in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            /// Parses the database string; anything else means a corrupt row.
            pub fn parse(text: &str) -> Result<Self, StateError> {
                match text {
                    $($text => Ok(Self::$variant),)+
                    other => Err(StateError::Corrupt(format!(
                        concat!("unknown ", $what, " {:?}"),
                        other
                    ))),
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

db_enum!(RevisionStatus, "revision status", {
    InProgress => "in_progress",
    Applied => "applied",
    Failed => "failed",
    Interrupted => "interrupted",
});

db_enum!(ResourceStatus, "resource status", {
    Ready => "ready",
    Tainted => "tainted",
});

db_enum!(Operation, "operation", {
    Create => "create",
    Update => "update",
    Replace => "replace",
    Delete => "delete",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_through_their_db_strings() {
        for s in [
            RevisionStatus::InProgress,
            RevisionStatus::Applied,
            RevisionStatus::Failed,
            RevisionStatus::Interrupted,
        ] {
            assert_eq!(RevisionStatus::parse(s.as_str()).ok(), Some(s));
        }
        for s in [ResourceStatus::Ready, ResourceStatus::Tainted] {
            assert_eq!(ResourceStatus::parse(s.as_str()).ok(), Some(s));
        }
        for o in [
            Operation::Create,
            Operation::Update,
            Operation::Replace,
            Operation::Delete,
        ] {
            assert_eq!(Operation::parse(&o.to_string()).ok(), Some(o));
        }
    }

    #[test]
    fn unknown_db_strings_are_corrupt_not_panics() {
        assert!(matches!(
            ResourceStatus::parse("melted"),
            Err(StateError::Corrupt(m)) if m.contains("melted")
        ));
        assert!(Operation::parse("").is_err());
        assert!(RevisionStatus::parse("APPLIED").is_err());
    }
}
