//! kiln-metrics: an embedded time-series store with a PromQL subset.
//!
//! - [`chunk`]: the Gorilla codec (delta-of-delta timestamps, XOR values), 120 samples a chunk.
//! - [`Labels`]: sorted label sets, the identity of a series.

pub mod chunk;
mod labels;

pub use labels::{Label, Labels, METRIC_NAME};
