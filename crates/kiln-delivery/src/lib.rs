//! Continuous delivery's pure logic, kept apart from the control plane that uses it
//! (`kiln/src/delivery.rs` follows repositories, serves webhooks and runs pipelines;
//! `kiln/src/dora.rs` prints the metrics):
//!
//! - [`webhook`]: GitHub push webhooks — the `X-Hub-Signature-256` check (HMAC-SHA256,
//!   constant-time), the push payload, stale deliveries and a bounded memory of delivery ids;
//! - [`queue`]: pushes waiting for their pipelines, collapsed per branch to the newest;
//! - [`dora`]: the four DORA metrics and their 2024 performance levels from deploy records;
//! - [`gates`]: whether a release may be promoted to the next environment, each gate with its
//!   verdict and reason.
//!
//! **Architecture invariant:** no I/O, no clock (times are arguments), no randomness.

pub mod dora;
pub mod gates;
pub mod queue;
pub mod webhook;

/// A new head of a followed branch, from wherever it was seen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Push {
    /// `refs/heads/<branch>`.
    pub git_ref: String,
    /// The previous head (`None` when the branch is new or the head was unknown).
    pub before: Option<String>,
    /// The new head.
    pub after: String,
    /// The changed files, when the source knows them (a webhook's payload); `None`: ask git.
    pub changed: Option<Vec<String>>,
    /// Where it came from: `poll`, `hook`, `webhook`.
    pub source: String,
}

impl Push {
    /// The branch's short name, when the ref is a branch.
    pub fn branch(&self) -> Option<&str> {
        self.git_ref.strip_prefix("refs/heads/")
    }
}
