//! The provider contract: how the engine reads, creates, updates and deletes one family of
//! resource kinds.
//!
//! A provider never decides *whether* to change a resource: the pure planner does that from
//! the declared attributes, the recorded state and the provider's [`Observation`]. A provider
//! only observes what exists and carries out the change it is handed.
//!
//! Attribute values reach a provider fully evaluated: every `${{ }}` expression has been
//! resolved, sensitive values are in clear text (the engine hashes them before they are
//! recorded), durations and sizes are normalised by the spec crate (durations in milliseconds,
//! sizes in bytes, both as JSON numbers).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

/// Attribute map of one resource, in declaration order.
pub type Attributes = serde_json::Map<String, serde_json::Value>;

/// A boxed future returned by provider operations, so providers can be used as trait objects.
pub type ProviderFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, ProviderError>> + Send + 'a>>;

/// What the engine knows of the world a provider acts in.
#[derive(Debug, Clone)]
pub struct ProviderContext {
    /// Directory of the stack's root file; relative paths in attributes are resolved against it.
    pub root: PathBuf,
    /// The stack's name (`name:` in kiln.yaml).
    pub stack: String,
    /// Set by the executor during an apply: where a provider says that a resource it is still
    /// creating has started (see [`Started`]).
    pub started: Option<Started>,
}

impl ProviderContext {
    /// A context outside any apply.
    pub fn new(root: PathBuf, stack: String) -> ProviderContext {
        ProviderContext {
            root,
            stack,
            started: None,
        }
    }

    /// Tells the executor that `address` has started, with the outputs already known, so that
    /// what waits on it with `condition: started` may go ahead before it is ready. Outside an
    /// apply, and for anything nobody waits on, it does nothing.
    pub fn report_started(&self, address: &str, outputs: Attributes) {
        if let Some(started) = &self.started {
            let _ = started.0.send((address.to_owned(), outputs));
        }
    }
}

/// The executor's end of the "started" reports of one apply.
#[derive(Debug, Clone)]
pub struct Started(pub(crate) tokio::sync::mpsc::UnboundedSender<(String, Attributes)>);

/// A resource as the state store recorded it after its last successful apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    /// Full address, e.g. `resources.motd` or `modules.db.resources.server`.
    pub address: String,
    /// Resource kind, e.g. `file`.
    pub kind: String,
    /// The attributes that were applied. Sensitive values appear as `sha256:<hex>` digests.
    pub attributes: Attributes,
    /// Values other resources may reference as `${{ <address>.outputs.<name> }}`.
    pub outputs: Attributes,
    /// Provider-private bookkeeping (e.g. a content digest), opaque to the engine.
    #[serde(default)]
    pub private: serde_json::Value,
}

/// What a provider found when it looked at a recorded resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Observation {
    /// The resource no longer exists (deleted outside kiln).
    Absent,
    /// The resource exists; `drift` lists what differs from the recorded state.
    Present {
        /// Attribute-level differences between what exists and what was recorded.
        drift: Vec<Drift>,
    },
}

/// One attribute that changed outside kiln.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// The attribute name, e.g. `content`.
    pub attribute: String,
    /// A human sentence, e.g. "content changed outside kiln".
    pub reason: String,
}

/// The result of a create or an update.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Applied {
    /// Outputs other resources may reference.
    pub outputs: Attributes,
    /// Provider-private bookkeeping to record, handed back in [`Recorded::private`].
    pub private: serde_json::Value,
}

/// A provider operation failed. The message is shown to the user as it is.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ProviderError {
    /// The operation failed; nothing was changed (or the change was rolled back).
    #[error("{message}")]
    Failed {
        /// Why, in one or more human sentences.
        message: String,
    },
    /// The operation failed after it changed something; what exists is unknown until observed.
    #[error("{message} (the resource may be partially changed)")]
    Partial {
        /// Why, in one or more human sentences.
        message: String,
    },
    /// The provider does not handle this kind.
    #[error("no provider handles resource kind `{kind}`")]
    UnknownKind {
        /// The kind that was asked for.
        kind: String,
    },
}

/// One family of resource kinds.
///
/// Implementations must be idempotent where the operation allows it: the engine may call
/// `create` again for a resource whose previous create was interrupted by a crash, and `delete`
/// for a resource that is already gone (which must succeed).
pub trait Provider: Send + Sync + 'static {
    /// The kinds this provider owns, e.g. `["file"]`.
    fn kinds(&self) -> &'static [&'static str];

    /// Looks at what exists for a recorded resource.
    fn observe<'a>(
        &'a self,
        ctx: &'a ProviderContext,
        recorded: &'a Recorded,
    ) -> ProviderFuture<'a, Observation>;

    /// Creates a resource from its desired attributes.
    fn create<'a>(
        &'a self,
        ctx: &'a ProviderContext,
        kind: &'a str,
        address: &'a str,
        desired: &'a Attributes,
    ) -> ProviderFuture<'a, Applied>;

    /// Updates a resource in place. `previous` is what was recorded before this change.
    fn update<'a>(
        &'a self,
        ctx: &'a ProviderContext,
        previous: &'a Recorded,
        desired: &'a Attributes,
    ) -> ProviderFuture<'a, Applied>;

    /// Deletes a resource. Deleting what is already gone succeeds.
    fn delete<'a>(
        &'a self,
        ctx: &'a ProviderContext,
        recorded: &'a Recorded,
    ) -> ProviderFuture<'a, ()>;
}
