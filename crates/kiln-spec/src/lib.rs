//! kiln's stack file: loading `kiln.yaml` (with its includes and modules) into a typed model,
//! with every mistake reported at once, each with its place, the key path, what was expected
//! and a fix.
//!
//! **Architecture invariant:** this crate does no I/O of its own. Files are read through the
//! [`load::FileSystem`] trait that the caller passes in, so that validation is pure and tests
//! run on in-memory trees.

pub mod alerting;
pub mod compile;
pub mod diag;
pub mod environments;
pub mod eval;
pub mod load;
pub mod model;
mod pem;
mod resolve;
pub mod runbooks;
pub mod schema;
pub mod source;
pub mod suggest;
pub mod units;
pub mod words;
pub mod yaml;

pub use compile::{LoadFailure, load};
pub use diag::{Code, Diagnostic};
pub use load::{FileSystem, MemoryFs};
pub use model::{IngressLimits, IngressTls, Resource, Stack, Value, ValueKind};
