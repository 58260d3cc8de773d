//! kiln-metrics: an embedded time-series store with a PromQL subset.
//!
//! - [`chunk`]: the Gorilla codec (delta-of-delta timestamps, XOR values), 120 samples a chunk,
//!   and on disk the decimal encoding (bit-packed integers) for chunks of decimal values.
//! - [`Labels`] and [`Matcher`]: series identity and selection (regexes anchored).
//! - [`Store`]: head + write-ahead log + immutable segments, retention and compaction.
//! - [`exposition`]: Prometheus text and OpenMetrics parsing, for scraping.
//! - [`scrape::TargetCache`]: a scrape target's series by their raw text, and staleness.
//! - [`query::Engine`]: PromQL instant and range queries over a [`query::Source`] (the store).

pub mod chunk;
pub mod exposition;
mod labels;
mod matcher;
pub mod query;
pub mod scrape;
pub mod store;

pub use chunk::Sample;
pub use labels::{Label, Labels, METRIC_NAME};
pub use matcher::{BadRegex, MatchOp, Matcher};
pub use store::{AppendStats, Options, SelectLimits, Series, SeriesRef, Stats, Store, StoreError};
