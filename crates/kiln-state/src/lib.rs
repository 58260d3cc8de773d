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
//! - an append-only **event log**;
//! - recorded **CI runs** (`kiln ci run`): runs, jobs and steps;
//! - alert **silences** (`kiln silence`), and the alert evaluator's **alert instances and
//!   notification log**, so a restart neither re-fires nor re-notifies;
//! - **incidents** and their timelines (`kiln incident`).
//! - **runbook runs** and their steps (`kiln runbook show`), the remediation audit;
//! - the blue-green sets **kept** idle for an instant switch back (`kept.rs`).
//!
//! The crate knows nothing of kiln's other crates. [`Store`] is synchronous;
//! [`StateHandle`] runs one on its own thread for async callers.
//!
//! An apply, in outline:
//!
//! ```
//! use kiln_state::*;
//! use serde_json::json;
//!
//! # fn main() -> Result<(), StateError> {
//! let mut store = Store::open_in_memory()?; // Store::open_in_stack(dir) for real
//! let lock = store.acquire_lock(&LockHolder {
//!     who: "ann@laptop".into(),
//!     pid: std::process::id(),
//!     operation: "apply".into(),
//! })?;
//! store.recover_pending()?; // taint whatever a crashed run left half-done
//! let rev = store.begin_revision(&NewRevision {
//!     user: "ann".into(),
//!     command: "apply".into(),
//!     files_digest: "sha256:...".into(),
//!     plan: json!({}),
//! })?;
//! // Intent first (committed before the real change is made) ...
//! let ids = store.begin_operations(rev.serial, &[("svc.web", "docker.container", Operation::Create)])?;
//! // ... then the outcome, with its event, in one transaction.
//! store.complete_operations(vec![(
//!     ids[0],
//!     OperationOutcome::Written(ResourceRecordInput {
//!         address: "svc.web".into(),
//!         kind: "docker.container".into(),
//!         attributes: json!({"image": "nginx"}),
//!         outputs: json!({"id": "c0ffee"}),
//!         private: json!(null),
//!         dependencies: vec![],
//!     }),
//! )])?;
//! store.finish_revision(rev.serial, RevisionStatus::Applied, json!({"created": 1}))?;
//! store.release_lock(&lock.id)?;
//! assert_eq!(store.resources()?.len(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! Prefer the batched `begin_operations` / `complete_operations`: each call is
//! one transaction, and 10,000 single-resource calls cost over a second where
//! one batch of 10,000 costs about a tenth of that.

mod alert_state;
mod codec;
mod deploys;
mod error;
mod events;
mod handle;
mod incidents;
mod kept;
mod lock;
mod maintenance;
mod operations;
mod pipelines;
mod promotions;
mod resources;
mod revisions;
mod runbooks;
pub mod schema;
mod silences;
mod store;
mod types;

pub use alert_state::{AlertInstanceRecord, NotificationLogRecord};
pub use deploys::{DeployRecord, NewDeploy, ReleaseRecord};
pub use error::StateError;
pub use handle::StateHandle;
pub use incidents::{IncidentRecord, TimelineRecord};
pub use kept::KeptSetRecord;
pub use maintenance::MaintenanceRecord;
pub use pipelines::{NewPipelineRun, PipelineJob, PipelineRun, PipelineStep};
pub use promotions::{ApprovalRecord, PromotionRecord};
pub use runbooks::{RunbookRun, RunbookStep};
pub use silences::SilenceRecord;
pub use store::Store;
pub use types::{
    Event, EventQuery, LockHolder, LockInfo, NewEvent, NewRevision, Operation, OperationOutcome,
    PendingOperation, ResourceRecord, ResourceRecordInput, ResourceStatus, Revision,
    RevisionStatus,
};

/// Where a stack keeps its state database, relative to the stack directory.
pub const STATE_DB_PATH: &str = ".kiln/state.db";
