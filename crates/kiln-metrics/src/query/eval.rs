//! The evaluator: walks the AST at one timestamp at a time.
//!
//! Each selector's series are loaded once per query, for the whole time window every step
//! needs, and cached by the selector's address in the AST; each step then finds its windows by
//! seeking forward from the previous step's ([`seek`]).
//!
//! Label sets derived from a series' labels (a group key, a matching signature, the labels
//! without the metric name) are computed once per query and series, not at every step: the
//! evaluator remembers them by AST node and source identity ([`Evaluator::derive`]) and shares
//! one copy of equal results, so operators can group and match by identity.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{AtModifier, Expr, Offset, VectorSelector};

use super::identity_hash::IdentityMap;
use super::{InstantSample, Limits, QueryError, Source, Value};
use crate::chunk::Sample;
use crate::labels::{Labels, METRIC_NAME};
use crate::matcher::{MatchOp, Matcher};
use crate::store::Series;

/// Prometheus's staleness marker: a NaN with this exact bit pattern ends a series.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// True for the staleness marker.
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// An instant vector element during evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Elem {
    pub labels: Labels,
    pub v: f64,
}

/// Intermediate values.
#[derive(Debug, Clone)]
pub enum Val {
    Scalar(f64),
    Str(String),
    Vector(Vec<Elem>),
    Matrix(Vec<Series>),
}

impl Val {
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Scalar(_) => "scalar",
            Val::Str(_) => "string",
            Val::Vector(_) => "vector",
            Val::Matrix(_) => "matrix",
        }
    }
}

pub fn ms(d: &Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => ms(d),
        Some(Offset::Neg(d)) => -ms(d),
    }
}

fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => ms(&d),
        Err(e) => -ms(&e.duration()),
    }
}

/// Converts the parser's matchers (plus the metric name) into store matchers.
pub fn matchers_of(vs: &VectorSelector) -> Result<Vec<Matcher>, QueryError> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err(QueryError::Unsupported("`or` inside label matchers".into()));
    }
    let mut out = Vec::new();
    if let Some(name) = &vs.name {
        out.push(Matcher::eq(METRIC_NAME, name.clone()));
    }
    for m in &vs.matchers.matchers {
        let op = match m.op {
            PMatchOp::Equal => MatchOp::Eq,
            PMatchOp::NotEqual => MatchOp::Ne,
            PMatchOp::Re(_) => MatchOp::Re,
            PMatchOp::NotRe(_) => MatchOp::Nre,
        };
        out.push(Matcher::new(m.name.clone(), op, m.value.clone()));
    }
    Ok(out)
}

/// The non-empty windows of a range vector at one step: (series, start, end) into the
/// evaluator's loaded series.
pub struct Windows {
    series: Rc<Vec<Series>>,
    spans: Vec<(usize, usize, usize)>,
}

impl Windows {
    /// Each series' labels and its samples in the window, in load order.
    pub fn iter(&self) -> impl Iterator<Item = (&Labels, &[Sample])> {
        self.spans.iter().map(|&(i, lo, hi)| {
            let s = &self.series[i];
            (&s.labels, &s.samples[lo..hi])
        })
    }

    /// As [`Windows::iter`], with each series' position in its load.
    pub fn iter_indexed(&self) -> impl Iterator<Item = (usize, &Labels, &[Sample])> {
        self.spans.iter().map(|&(i, lo, hi)| {
            let s = &self.series[i];
            (i, &s.labels, &s.samples[lo..hi])
        })
    }
}

/// How many derived label sets per loaded series (plus [`DERIVED_SLACK`]) a range query keeps
/// between steps: a query derives a few per series and node, so more means labels built
/// afresh at every step, which would otherwise pile up for the whole query.
const DERIVED_PER_SERIES: usize = 16;
const DERIVED_SLACK: usize = 1_000;

/// Identifies an AST node for [`Evaluator::derive`] while the query runs: its address.
pub fn node_id<T>(node: &T) -> usize {
    std::ptr::from_ref(node).cast::<()>() as usize
}

/// What a derived label set is, for [`Evaluator::derive`]: one AST node may derive several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Derivation {
    /// The labels without `__name__`.
    DropName,
    /// An aggregation's group key.
    GroupKey,
    /// A binary operation's matching signature.
    Signature,
    /// A one-to-one binary operation's result labels (they depend on one side only).
    MatchResult,
    /// `histogram_quantile`'s bucket group (without `le` and `__name__`).
    BucketGroup,
}

/// The windows of one selector's loaded series at the last time asked: steps move forward,
/// so the next step's windows are found by seeking forward from these.
struct Cursor {
    /// The reference time of `bounds`.
    at: i64,
    /// Per loaded series: (first sample in the window, one past the last).
    bounds: Vec<(usize, usize)>,
}

impl Cursor {
    /// The cursor for `key` moved to reference time `at`, for `len` series.
    fn at(
        cursors: &mut IdentityMap<(usize, i64, bool), Cursor>,
        key: (usize, i64, bool),
        len: usize,
        at: i64,
    ) -> &mut Cursor {
        let c = cursors.entry(key).or_insert_with(|| Cursor {
            at,
            bounds: vec![(0, 0); len],
        });
        if at < c.at {
            // Steps only move forward, but `seek` must never start past the answer.
            c.bounds.fill((0, 0));
        }
        c.at = at;
        c
    }
}

/// `s.partition_point(before)`, given that every sample before `from` is `before`: gallops
/// forward from `from`, so a window moving a few samples per step costs a few comparisons
/// near samples just read, not a binary search over the whole series.
pub fn seek(s: &[Sample], from: usize, before: impl Fn(&Sample) -> bool) -> usize {
    let mut lo = from.min(s.len());
    let mut stride = 1;
    // Every sample before `lo` is `before`.
    while lo < s.len() && before(&s[lo]) {
        let probe = (lo + stride).min(s.len());
        if before(&s[probe - 1]) {
            lo = probe;
            stride *= 2;
        } else {
            return lo + 1 + s[lo + 1..probe - 1].partition_point(&before);
        }
    }
    lo
}

pub struct Evaluator<'a, S: Source> {
    source: &'a S,
    pub limits: &'a Limits,
    start: i64,
    end: i64,
    step: i64,
    /// Loaded series by (selector node, window, stale markers stripped).
    cache: HashMap<(usize, i64, bool), Rc<Vec<Series>>>,
    /// Where each loaded series' window was at the previous step, by the same key.
    cursors: IdentityMap<(usize, i64, bool), Cursor>,
    /// Per loaded list of series (by its address, which the entry keeps alive), their labels
    /// without `__name__`, by position: a function over ranges names its results so at every
    /// step, and a lookup by position costs less than one in `derived`.
    unnamed: IdentityMap<usize, (Rc<Vec<Series>>, Vec<Labels>)>,
    /// Derived labels by (AST node, derivation, source identity); each entry holds its source,
    /// so no other label set takes that identity while the query runs.
    derived: IdentityMap<(usize, Derivation, usize), (Labels, Labels)>,
    /// The one shared copy of every derived label set.
    interned: HashSet<Labels>,
    series_loaded: usize,
    samples_loaded: usize,
}

impl<'a, S: Source> Evaluator<'a, S> {
    pub fn new(source: &'a S, limits: &'a Limits, start: i64, end: i64, step: i64) -> Self {
        Evaluator {
            source,
            limits,
            start,
            end,
            step,
            cache: HashMap::new(),
            cursors: IdentityMap::default(),
            unnamed: IdentityMap::default(),
            derived: IdentityMap::default(),
            interned: HashSet::new(),
            series_loaded: 0,
            samples_loaded: 0,
        }
    }

    /// Evaluates an instant query.
    pub fn instant(&mut self, e: &Expr, t: i64) -> Result<Value, QueryError> {
        Ok(match self.eval(e, t)? {
            Val::Scalar(v) => Value::Scalar { t, v },
            Val::Str(v) => Value::String { t, v },
            Val::Vector(els) => Value::Vector(
                els.into_iter()
                    .map(|e| InstantSample {
                        labels: e.labels,
                        t,
                        v: e.v,
                    })
                    .collect(),
            ),
            Val::Matrix(m) => Value::Matrix(m),
        })
    }

    /// Evaluates a range query: every step, collected into series.
    pub fn range(&mut self, e: &Expr) -> Result<Value, QueryError> {
        if !matches!(e.value_type(), ValueType::Scalar | ValueType::Vector) {
            return Err(QueryError::Eval(format!(
                "range queries need a scalar or instant vector expression, got {}",
                e.value_type()
            )));
        }
        let mut out: BTreeMap<Labels, Vec<Sample>> = BTreeMap::new();
        let mut points = 0usize;
        let mut t = self.start;
        while t <= self.end {
            match self.eval(e, t)? {
                Val::Scalar(v) => out
                    .entry(Labels::default())
                    .or_default()
                    .push(Sample { t, v }),
                Val::Vector(els) => {
                    points += els.len();
                    for el in els {
                        out.entry(el.labels)
                            .or_default()
                            .push(Sample { t, v: el.v });
                    }
                }
                other => {
                    return Err(QueryError::Eval(format!(
                        "unexpected {}",
                        other.type_name()
                    )));
                }
            }
            self.check_samples(points)?;
            self.bound_derived();
            t += self.step;
        }
        Ok(Value::Matrix(
            out.into_iter()
                .map(|(labels, samples)| Series { labels, samples })
                .collect(),
        ))
    }

    fn check_samples(&self, extra: usize) -> Result<(), QueryError> {
        if self.samples_loaded + extra > self.limits.max_samples {
            return Err(QueryError::Limit(format!(
                "more than {} samples (max_samples)",
                self.limits.max_samples
            )));
        }
        Ok(())
    }

    pub fn eval(&mut self, e: &Expr, t: i64) -> Result<Val, QueryError> {
        match e {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Val::Str(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => Ok(match self.eval(&u.expr, t)? {
                Val::Scalar(v) => Val::Scalar(-v),
                Val::Vector(els) => Val::Vector(
                    els.into_iter()
                        .map(|e| Elem {
                            labels: self.drop_name(&e.labels),
                            v: -e.v,
                        })
                        .collect(),
                ),
                other => {
                    return Err(QueryError::Eval(format!(
                        "cannot negate a {}",
                        other.type_name()
                    )));
                }
            }),
            Expr::VectorSelector(vs) => self.vector_selector(vs, t).map(Val::Vector),
            Expr::MatrixSelector(m) => self
                .matrix_selector(&m.vs, ms(&m.range), t)
                .map(Val::Matrix),
            Expr::Binary(b) => super::binary::eval(self, b, t),
            Expr::Aggregate(a) => super::aggregate::eval(self, a, t),
            Expr::Call(c) => super::functions::eval(self, c, t),
            Expr::Subquery(_) => Err(QueryError::Unsupported("subqueries".into())),
            Expr::Extension(_) => Err(QueryError::Unsupported("extension expressions".into())),
        }
    }

    /// `derive(labels)`, computed once per query for each `node` (see [`node_id`]), `what`
    /// and source labels. Equal results are one shared copy, so two results are equal exactly
    /// when their [`Labels::identity`] is (callers group and match by it).
    pub fn derive(
        &mut self,
        node: usize,
        what: Derivation,
        labels: &Labels,
        derive: impl FnOnce(&Labels) -> Labels,
    ) -> Labels {
        let key = (node, what, labels.identity());
        match self.derived.entry(key) {
            Entry::Occupied(e) => e.get().1.clone(),
            Entry::Vacant(e) => {
                let fresh = derive(labels);
                let shared = match self.interned.get(&fresh) {
                    Some(existing) => existing.clone(),
                    None => {
                        self.interned.insert(fresh.clone());
                        fresh
                    }
                };
                e.insert((labels.clone(), shared.clone()));
                shared
            }
        }
    }

    /// Forgets every derived label set once there are far more than the loaded series could
    /// need (labels built afresh at every step, like `group_left`'s results, are each a new
    /// source). Only between steps: within one, equal results must stay one copy.
    fn bound_derived(&mut self) {
        if self.derived.len() > DERIVED_PER_SERIES * self.series_loaded + DERIVED_SLACK {
            self.derived.clear();
            self.interned.clear();
            self.unnamed.clear();
        }
    }

    /// The labels without `__name__` (the same wherever they are needed, so not per node).
    pub fn drop_name(&mut self, labels: &Labels) -> Labels {
        self.derive(0, Derivation::DropName, labels, |l| {
            l.without(&[METRIC_NAME])
        })
    }

    /// The labels without `__name__` of the series of `windows`, by position in their load
    /// (the same shared sets [`Evaluator::drop_name`] returns), computed once per load.
    pub fn unnamed(&mut self, windows: &Windows) -> &[Labels] {
        let key = Rc::as_ptr(&windows.series) as usize;
        if !self.unnamed.contains_key(&key) {
            let labels = windows
                .series
                .iter()
                .map(|s| self.drop_name(&s.labels))
                .collect();
            self.unnamed
                .insert(key, (Rc::clone(&windows.series), labels));
        }
        self.unnamed.get(&key).map_or(&[], |(_, labels)| labels)
    }

    /// Reference time of a selector evaluated at `t`, after `@` and `offset`.
    pub fn ref_time(&self, vs: &VectorSelector, t: i64) -> i64 {
        let base = match &vs.at {
            None => t,
            Some(AtModifier::Start) => self.start,
            Some(AtModifier::End) => self.end,
            Some(AtModifier::At(st)) => system_time_ms(st),
        };
        base - offset_ms(&vs.offset)
    }

    /// Loads (once) the series a selector needs for every step; `window` is range or lookback.
    /// Range windows drop staleness markers, so they are dropped here once rather than from
    /// every step's window; an instant selector needs them (a stale last sample hides it).
    fn load(
        &mut self,
        vs: &VectorSelector,
        window: i64,
        strip_stale: bool,
    ) -> Result<Rc<Vec<Series>>, QueryError> {
        let key = (std::ptr::from_ref(vs) as usize, window, strip_stale);
        if let Some(s) = self.cache.get(&key) {
            return Ok(Rc::clone(s));
        }
        let (lo, hi) = if vs.at.is_some() {
            let r = self.ref_time(vs, self.start);
            (r, r)
        } else {
            (self.ref_time(vs, self.start), self.ref_time(vs, self.end))
        };
        let budget = crate::store::SelectLimits {
            max_series: self.limits.max_series.saturating_sub(self.series_loaded),
            max_samples: self.limits.max_samples.saturating_sub(self.samples_loaded),
        };
        let mut series =
            self.source
                .select_limited(&matchers_of(vs)?, lo.saturating_sub(window), hi, budget)?;
        if strip_stale {
            for s in &mut series {
                if s.samples.iter().any(|x| is_stale(x.v)) {
                    s.samples.retain(|x| !is_stale(x.v));
                }
            }
        }
        self.series_loaded += series.len();
        if self.series_loaded > self.limits.max_series {
            return Err(QueryError::Limit(format!(
                "more than {} series (max_series)",
                self.limits.max_series
            )));
        }
        self.samples_loaded += series.iter().map(|s| s.samples.len()).sum::<usize>();
        self.check_samples(0)?;
        let rc = Rc::new(series);
        self.cache.insert(key, Rc::clone(&rc));
        Ok(rc)
    }

    pub fn vector_selector(
        &mut self,
        vs: &VectorSelector,
        t: i64,
    ) -> Result<Vec<Elem>, QueryError> {
        let lookback = ms(&self.limits.lookback);
        let series = self.load(vs, lookback, false)?;
        let r = self.ref_time(vs, t);
        let key = (node_id(vs), lookback, false);
        let cursor = Cursor::at(&mut self.cursors, key, series.len(), r);
        let mut out = Vec::new();
        for (s, (_, end)) in series.iter().zip(&mut cursor.bounds) {
            *end = seek(&s.samples, *end, |x| x.t <= r);
            let Some(last) = end.checked_sub(1).map(|i| s.samples[i]) else {
                continue;
            };
            if last.t >= r - lookback && !is_stale(last.v) {
                out.push(Elem {
                    labels: s.labels.clone(),
                    v: last.v,
                });
            }
        }
        Ok(out)
    }

    /// A range vector at `t`, as owned series (the result of a bare `metric[5m]` query).
    pub fn matrix_selector(
        &mut self,
        vs: &VectorSelector,
        range: i64,
        t: i64,
    ) -> Result<Vec<Series>, QueryError> {
        let windows = self.windows(vs, range, t)?;
        Ok(windows
            .iter()
            .map(|(labels, samples)| Series {
                labels: labels.clone(),
                samples: samples.to_vec(),
            })
            .collect())
    }

    /// A range vector at `t`, borrowing the loaded samples: functions over ranges read each
    /// window in place instead of copying it at every step.
    pub fn windows(
        &mut self,
        vs: &VectorSelector,
        range: i64,
        t: i64,
    ) -> Result<Windows, QueryError> {
        let series = self.load(vs, range, true)?;
        let r = self.ref_time(vs, t);
        let key = (node_id(vs), range, true);
        let cursor = Cursor::at(&mut self.cursors, key, series.len(), r);
        let spans = series
            .iter()
            .zip(&mut cursor.bounds)
            .enumerate()
            .filter_map(|(i, (s, (lo, hi)))| {
                *lo = seek(&s.samples, *lo, |x| x.t < r - range);
                *hi = seek(&s.samples, (*hi).max(*lo), |x| x.t <= r);
                (*hi > *lo).then_some((i, *lo, *hi))
            })
            .collect();
        Ok(Windows { series, spans })
    }

    /// Evaluates to an instant vector or fails with the expected-type message.
    pub fn vector(&mut self, e: &Expr, t: i64) -> Result<Vec<Elem>, QueryError> {
        match self.eval(e, t)? {
            Val::Vector(v) => Ok(v),
            other => Err(QueryError::Eval(format!(
                "expected instant vector, got {}",
                other.type_name()
            ))),
        }
    }

    /// Evaluates to a scalar or fails.
    pub fn scalar(&mut self, e: &Expr, t: i64) -> Result<f64, QueryError> {
        match self.eval(e, t)? {
            Val::Scalar(v) => Ok(v),
            other => Err(QueryError::Eval(format!(
                "expected scalar, got {}",
                other.type_name()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::MemSource;
    use super::*;

    /// `group_left` builds its result labels afresh at every step, and each is a new source
    /// for the aggregation above it: the evaluator must not keep them all until the end.
    #[test]
    fn labels_built_at_every_step_do_not_pile_up() {
        let series = |name: &str, pairs: &[(&str, &str)]| Series {
            labels: Labels::new(
                pairs
                    .iter()
                    .map(|&(n, v)| (n, v.to_owned()))
                    .chain([(METRIC_NAME, name.to_owned())]),
            ),
            samples: (0..=2000)
                .map(|i| Sample {
                    t: i * 1000,
                    v: i as f64,
                })
                .collect(),
        };
        let src = MemSource(vec![
            series("a", &[("y", "1"), ("x", "p")]),
            series("a", &[("y", "1"), ("x", "q")]),
            series("b", &[("y", "1"), ("z", "w")]),
        ]);
        let limits = Limits::default();
        let query = "sum by (z) (a * on (y) group_left (z) b)";
        let ast = promql_parser::parser::parse(query).unwrap();
        let mut ev = Evaluator::new(&src, &limits, 0, 2_000_000, 1000);
        let Value::Matrix(m) = ev.range(&ast).unwrap() else {
            panic!("{query}: not a matrix");
        };
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].samples.len(), 2001);
        // 2,001 steps × 2 fresh result label sets would be 4,002 entries at least; the bound
        // for 3 series is 16 × 3 + 1,000.
        assert!(
            ev.derived.len() <= 1048,
            "{} derived kept",
            ev.derived.len()
        );
    }
}
