//! PromQL (a subset) over any [`Source`] of series, with Prometheus's semantics.
//!
//! Parsing is `promql-parser`'s; evaluation is ours and pure: it takes series from a
//! [`Source`] and returns [`Value`]s. Semantics follow Prometheus 2.x (the version Debian ships
//! `promtool` from, which the conformance test runs against): range selectors and the 5-minute
//! lookback include both ends, a series whose last sample in the lookback window is older than
//! it (or is a staleness marker) is absent, and `rate`/`increase` extrapolate as Prometheus
//! documents.
//!
//! Unsupported constructs (subqueries, `or` in selectors, other functions and aggregations)
//! fail with [`QueryError::Unsupported`] naming them. Every query is bounded by
//! [`Limits::max_series`] and [`Limits::max_samples`].

mod aggregate;
mod binary;
mod eval;
pub use eval::{STALE_NAN_BITS, is_stale};
mod functions;
mod identity_hash;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::time::Duration;

use crate::labels::Labels;
use crate::matcher::Matcher;
use crate::store::{SelectLimits, Series, Store, StoreError};

/// Where queries read series from.
pub trait Source {
    /// Series matching all matchers with their samples in `[start, end]` (ms, inclusive).
    fn select(&self, matchers: &[Matcher], start: i64, end: i64)
    -> Result<Vec<Series>, StoreError>;

    /// Like `select`, but may fail early with [`StoreError::TooMany`] past `limits` (the
    /// engine checks its limits after every selection either way).
    fn select_limited(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
        limits: SelectLimits,
    ) -> Result<Vec<Series>, StoreError> {
        let _ = limits;
        self.select(matchers, start, end)
    }
}

impl Source for Store {
    fn select(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<Series>, StoreError> {
        Store::select(self, matchers, start, end)
    }

    fn select_limited(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
        limits: SelectLimits,
    ) -> Result<Vec<Series>, StoreError> {
        Store::select_limited(self, matchers, start, end, limits)
    }
}

/// The matchers of a series selector (`up{job="api"}`), as `/api/v1/series` takes them.
pub fn parse_selector(text: &str) -> Result<Vec<Matcher>, QueryError> {
    match promql_parser::parser::parse(text).map_err(QueryError::Parse)? {
        promql_parser::parser::Expr::VectorSelector(vs) => eval::matchers_of(&vs),
        _ => Err(QueryError::Parse(format!(
            "{text:?} is not a series selector"
        ))),
    }
}

/// Bounds that keep one query from exhausting the process.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most series one query may select (default 200,000: a histogram over 100 targets is
    /// already 12,000; the sample limit is what bounds memory).
    pub max_series: usize,
    /// Most samples one query may load or produce (default 50 million, like Prometheus).
    pub max_samples: usize,
    /// How far back an instant selector looks for a sample (default 5 minutes).
    pub lookback: Duration,
    /// Most steps of a range query (default 11,000, like Prometheus).
    pub max_steps: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_series: 200_000,
            max_samples: 50_000_000,
            lookback: Duration::from_secs(300),
            max_steps: 11_000,
        }
    }
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct InstantSample {
    /// The series' labels.
    pub labels: Labels,
    /// Evaluation time (ms).
    pub t: i64,
    /// The value.
    pub v: f64,
}

/// A query result, shaped like Prometheus's API results.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number at a time (ms).
    Scalar {
        /// Evaluation time (ms).
        t: i64,
        /// The value.
        v: f64,
    },
    /// A string at a time (ms).
    String {
        /// Evaluation time (ms).
        t: i64,
        /// The value.
        v: String,
    },
    /// An instant vector.
    Vector(Vec<InstantSample>),
    /// A range vector, or the result of a range query; sorted by labels.
    Matrix(Vec<Series>),
}

impl Value {
    /// Prometheus's `resultType` name.
    pub fn result_type(&self) -> &'static str {
        match self {
            Value::Scalar { .. } => "scalar",
            Value::String { .. } => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

/// Query failures.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The expression does not parse.
    #[error("parse error: {0}")]
    Parse(String),
    /// Valid PromQL this evaluator does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A limit was reached.
    #[error("query limit exceeded: {0}")]
    Limit(String),
    /// Evaluation failed (for example, ambiguous vector matching).
    #[error("{0}")]
    Eval(String),
    /// Reading series failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for QueryError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TooMany { .. } => QueryError::Limit(e.to_string()),
            other => QueryError::Store(other),
        }
    }
}

/// Evaluates PromQL against a [`Source`].
#[derive(Debug)]
pub struct Engine<'a, S: Source> {
    source: &'a S,
    limits: Limits,
}

impl<'a, S: Source> Engine<'a, S> {
    /// An engine with default limits.
    pub fn new(source: &'a S) -> Self {
        Self::with_limits(source, Limits::default())
    }

    /// An engine with explicit limits.
    pub fn with_limits(source: &'a S, limits: Limits) -> Self {
        Engine { source, limits }
    }

    /// Evaluates `expr` at time `t` (ms).
    pub fn query(&self, expr: &str, t: i64) -> Result<Value, QueryError> {
        let ast = promql_parser::parser::parse(expr).map_err(QueryError::Parse)?;
        let mut ev = eval::Evaluator::new(self.source, &self.limits, t, t, 0);
        ev.instant(&ast, t)
    }

    /// Evaluates `expr` at every `step` from `start` to `end` (ms); the result is a matrix.
    pub fn query_range(
        &self,
        expr: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Value, QueryError> {
        if step <= 0 || end < start {
            return Err(QueryError::Eval(
                "range query needs step > 0 and end >= start".into(),
            ));
        }
        let steps = ((end - start) / step + 1) as usize;
        if steps > self.limits.max_steps {
            return Err(QueryError::Limit(format!(
                "{steps} steps (max {})",
                self.limits.max_steps
            )));
        }
        let ast = promql_parser::parser::parse(expr).map_err(QueryError::Parse)?;
        let mut ev = eval::Evaluator::new(self.source, &self.limits, start, end, step);
        ev.range(&ast)
    }
}
