//! Runbooks as values and one executor: the parameters of a run (`params.rs`), the run's
//! state machine with one step function (`run.rs`), the guards that keep automatic
//! remediation from looping — a lock per target, a rate limit that escalates, a blast-radius
//! limit and an idempotency key — as pure functions of a ledger and the time (`guard.rs`),
//! and the executor that drives a run through the [`Actions`] trait with per-step timeouts,
//! retries and `on_failure` (`execute.rs`).
//!
//! **Architecture invariant:** no sockets, processes or state store here: the binary
//! implements [`Actions`] over the control plane and records the [`Progress`] it is sent.
//! Time is a parameter of the guards; the executor only uses tokio's timers.

mod execute;
pub mod guard;
mod params;
pub mod run;

pub use execute::{ActionFuture, Actions, Progress, RunContext, StepResult, execute};
pub use guard::{Admission, Ledger, Request};
pub use params::{ParamError, resolve_params, target_of};
pub use run::Phase;
