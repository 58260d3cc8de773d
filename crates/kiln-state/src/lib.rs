//! kiln's state store: what kiln believes exists, and how it got there.
//!
//! One SQLite database per stack (`.kiln/state.db`, WAL mode) holds:
//! - the **lineage** (a UUID v7 made on first open) and **revisions** with an
//!   increasing **serial**, one per apply/destroy/imperative command;
//! - the **lock** that lets one writer at a time change the state, with a
//!   holder message and `force_unlock` for locks left by dead processes;
//! - the **resources**: address, kind and JSON attributes/outputs, written
//!   only through a crash-safe intent/outcome protocol (`begin_operation`,
//!   `complete_operation`, `recover_pending`);
//! - an append-only **event log**.
//!
//! The crate knows nothing of kiln's other crates. [`Store`] is synchronous;
//! [`StateHandle`] runs one on its own thread for async callers.

mod codec;
mod error;
mod events;
mod handle;
mod lock;
mod operations;
mod resources;
mod revisions;
pub mod schema;
mod store;
mod types;

pub use error::StateError;
pub use handle::StateHandle;
pub use store::Store;
pub use types::{
    Event, EventQuery, LockHolder, LockInfo, NewEvent, NewRevision, Operation, OperationOutcome,
    PendingOperation, ResourceRecord, ResourceRecordInput, ResourceStatus, Revision,
    RevisionStatus,
};

/// Where a stack keeps its state database, relative to the stack directory.
pub const STATE_DB_PATH: &str = ".kiln/state.db";
