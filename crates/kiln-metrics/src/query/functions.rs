//! PromQL functions: counters (`rate`, `irate`, `increase`, `delta`), `*_over_time`,
//! `histogram_quantile`, `absent`, `scalar`, `vector`, `time` and element-wise math.

use std::collections::BTreeMap;

use promql_parser::parser::{Call, Expr};

use super::QueryError;
use super::Source;
use super::eval::{Derivation, Elem, Evaluator, Val, Windows, ms};
use super::identity_hash::IdentityMap;
use crate::chunk::Sample;
use crate::labels::{Labels, METRIC_NAME};
use crate::matcher::MatchOp;

pub fn eval<S: Source>(ev: &mut Evaluator<'_, S>, call: &Call, t: i64) -> Result<Val, QueryError> {
    let name = call.func.name;
    let args = &call.args.args;
    match name {
        "time" => Ok(Val::Scalar(t as f64 / 1000.0)),
        "vector" => Ok(Val::Vector(vec![Elem {
            labels: Labels::default(),
            v: ev.scalar(arg(args, 0)?, t)?,
        }])),
        "scalar" => {
            let v = ev.vector(arg(args, 0)?, t)?;
            Ok(Val::Scalar(if v.len() == 1 { v[0].v } else { f64::NAN }))
        }
        "absent" => absent(ev, arg(args, 0)?, t),
        "rate" | "increase" | "delta" | "irate" | "idelta" => {
            let ((lo, hi), series) = matrix_arg(ev, arg(args, 0)?, t)?;
            let f = |s: &[Sample]| match name {
                "rate" => extrapolated_rate(s, lo, hi, true, true),
                "increase" => extrapolated_rate(s, lo, hi, true, false),
                "delta" => extrapolated_rate(s, lo, hi, false, false),
                "irate" => instant_delta(s, true),
                _ => instant_delta(s, false),
            };
            Ok(Val::Vector(over_series(ev, &series, f, true)))
        }
        n if n.ends_with("_over_time") => over_time(ev, n, args, t),
        "histogram_quantile" => {
            let q = ev.scalar(arg(args, 0)?, t)?;
            let buckets = ev.vector(arg(args, 1)?, t)?;
            Ok(Val::Vector(histogram_quantile(ev, q, buckets)))
        }
        "clamp_min" | "clamp_max" => {
            let v = ev.vector(arg(args, 0)?, t)?;
            let bound = ev.scalar(arg(args, 1)?, t)?;
            let max = name == "clamp_max";
            Ok(map(
                ev,
                v,
                |x| if max { x.min(bound) } else { x.max(bound) },
            ))
        }
        "clamp" => {
            let v = ev.vector(arg(args, 0)?, t)?;
            let (lo, hi) = (ev.scalar(arg(args, 1)?, t)?, ev.scalar(arg(args, 2)?, t)?);
            if lo > hi {
                return Ok(Val::Vector(Vec::new()));
            }
            Ok(map(ev, v, |x| x.max(lo).min(hi)))
        }
        "round" => {
            let v = ev.vector(arg(args, 0)?, t)?;
            let to = match args.get(1) {
                Some(e) => ev.scalar(e, t)?,
                None => 1.0,
            };
            // Prometheus rounds half up, via the inverse to keep precision for fractions.
            let inv = 1.0 / to;
            Ok(map(ev, v, |x| (x * inv + 0.5).floor() / inv))
        }
        "abs" | "ceil" | "floor" | "sqrt" | "exp" | "ln" | "log2" | "log10" => {
            let f: fn(f64) -> f64 = match name {
                "abs" => f64::abs,
                "ceil" => f64::ceil,
                "floor" => f64::floor,
                "sqrt" => f64::sqrt,
                "exp" => f64::exp,
                "ln" => f64::ln,
                "log2" => f64::log2,
                _ => f64::log10,
            };
            let v = ev.vector(arg(args, 0)?, t)?;
            Ok(map(ev, v, f))
        }
        other => Err(QueryError::Unsupported(format!("function {other}()"))),
    }
}

fn arg(args: &[Box<Expr>], i: usize) -> Result<&Expr, QueryError> {
    args.get(i)
        .map(|b| &**b)
        .ok_or_else(|| QueryError::Eval(format!("missing argument {}", i + 1)))
}

/// Applies `f` to every element, dropping the metric name (the value's meaning changed).
fn map<S: Source>(ev: &mut Evaluator<'_, S>, v: Vec<Elem>, f: impl Fn(f64) -> f64) -> Val {
    Val::Vector(
        v.into_iter()
            .map(|e| Elem {
                labels: ev.drop_name(&e.labels),
                v: f(e.v),
            })
            .collect(),
    )
}

/// A range-vector argument with its window `(start, end)` after `@` and `offset`.
fn matrix_arg<S: Source>(
    ev: &mut Evaluator<'_, S>,
    e: &Expr,
    t: i64,
) -> Result<((i64, i64), Windows), QueryError> {
    match e {
        Expr::MatrixSelector(m) => {
            let range = ms(&m.range);
            let end = ev.ref_time(&m.vs, t);
            Ok(((end - range, end), ev.windows(&m.vs, range, t)?))
        }
        Expr::Paren(p) => matrix_arg(ev, &p.expr, t),
        Expr::Subquery(_) => Err(QueryError::Unsupported("subqueries".into())),
        _ => Err(QueryError::Eval("expected a range vector argument".into())),
    }
}

fn over_series<S: Source>(
    ev: &mut Evaluator<'_, S>,
    windows: &Windows,
    f: impl Fn(&[Sample]) -> Option<f64>,
    drop_name: bool,
) -> Vec<Elem> {
    if !drop_name {
        return windows
            .iter()
            .filter_map(|(labels, samples)| {
                Some(Elem {
                    labels: labels.clone(),
                    v: f(samples)?,
                })
            })
            .collect();
    }
    let unnamed = ev.unnamed(windows);
    windows
        .iter_indexed()
        .filter_map(|(i, _, samples)| {
            Some(Elem {
                labels: unnamed.get(i)?.clone(),
                v: f(samples)?,
            })
        })
        .collect()
}

/// Prometheus's `extrapolatedRate`: the increase between the first and last sample (adding
/// back counter resets), extrapolated to the range boundaries unless a boundary is further
/// than 1.1 average intervals away (then by half an interval), and for counters never back
/// past the point where the counter would have been zero.
fn extrapolated_rate(
    s: &[Sample],
    range_start: i64,
    range_end: i64,
    counter: bool,
    rate: bool,
) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let (first, last) = (s[0], s[s.len() - 1]);
    let mut result = last.v - first.v;
    if counter {
        let mut prev = first.v;
        for x in &s[1..] {
            if x.v < prev {
                result += prev;
            }
            prev = x.v;
        }
    }
    let mut to_start = (first.t - range_start) as f64 / 1000.0;
    let to_end = (range_end - last.t) as f64 / 1000.0;
    let sampled = (last.t - first.t) as f64 / 1000.0;
    let avg = sampled / (s.len() - 1) as f64;
    if counter && result > 0.0 && first.v >= 0.0 {
        let to_zero = sampled * (first.v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = avg * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        avg / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        avg / 2.0
    };
    // One combined factor, in this order, to round exactly like Prometheus 2.x.
    let mut factor = interval / sampled;
    if rate {
        factor /= (range_end - range_start) as f64 / 1000.0;
    }
    Some(result * factor)
}

/// `irate`/`idelta`: from the last two samples only.
fn instant_delta(s: &[Sample], rate: bool) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let (prev, last) = (s[s.len() - 2], s[s.len() - 1]);
    let mut result = last.v - prev.v;
    if rate && last.v < prev.v {
        // A reset: the counter restarted from zero.
        result = last.v;
    }
    let dt = last.t - prev.t;
    if dt == 0 {
        return None;
    }
    if rate {
        result /= dt as f64 / 1000.0;
    }
    Some(result)
}

fn over_time<S: Source>(
    ev: &mut Evaluator<'_, S>,
    name: &str,
    args: &[Box<Expr>],
    t: i64,
) -> Result<Val, QueryError> {
    if name == "quantile_over_time" {
        let q = ev.scalar(arg(args, 0)?, t)?;
        let (_, series) = matrix_arg(ev, arg(args, 1)?, t)?;
        let f = |s: &[Sample]| Some(quantile(q, s.iter().map(|x| x.v).collect()));
        return Ok(Val::Vector(over_series(ev, &series, f, true)));
    }
    let (_, series) = matrix_arg(ev, arg(args, 0)?, t)?;
    let f: fn(&[Sample]) -> Option<f64> = match name {
        "avg_over_time" => |s| Some(kahan_mean(s)),
        "min_over_time" => |s| {
            s.iter()
                .map(|x| x.v)
                .reduce(|a, b| if b < a || a.is_nan() { b } else { a })
        },
        "max_over_time" => |s| {
            s.iter()
                .map(|x| x.v)
                .reduce(|a, b| if b > a || a.is_nan() { b } else { a })
        },
        "sum_over_time" => |s| Some(kahan_sum(s.iter().map(|x| x.v))),
        "count_over_time" => |s| Some(s.len() as f64),
        "last_over_time" => |s| s.last().map(|x| x.v),
        other => return Err(QueryError::Unsupported(format!("function {other}()"))),
    };
    // last_over_time keeps the metric name: the value is still the metric's own.
    Ok(Val::Vector(over_series(
        ev,
        &series,
        f,
        name != "last_over_time",
    )))
}

/// One step of Kahan–Neumaier compensated summation: returns the new sum and compensation.
fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Compensated sum, as Prometheus computes `sum_over_time`.
fn kahan_sum(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut c) = (0.0, 0.0);
    for v in values {
        (sum, c) = kahan_inc(v, sum, c);
    }
    if sum.is_infinite() { sum } else { sum + c }
}

/// Compensated running mean, as Prometheus computes `avg_over_time`.
fn kahan_mean(s: &[Sample]) -> f64 {
    let (mut mean, mut c, mut count) = (0.0f64, 0.0, 0.0);
    for x in s {
        count += 1.0;
        if mean.is_infinite() {
            if x.v.is_infinite() && (mean > 0.0) == (x.v > 0.0) {
                continue;
            }
            if !x.v.is_infinite() && !x.v.is_nan() {
                continue;
            }
        }
        (mean, c) = kahan_inc(x.v / count - mean / count, mean, c);
    }
    if mean.is_infinite() { mean } else { mean + c }
}

/// The running mean Prometheus uses (robust against overflow for huge values).
pub fn incremental_mean(values: impl Iterator<Item = f64>) -> f64 {
    let mut mean = 0.0;
    let mut count = 0.0;
    for v in values {
        count += 1.0;
        if count == 1.0 {
            mean = v;
            continue;
        }
        if mean.is_infinite() {
            if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                continue;
            }
            if !v.is_infinite() && !v.is_nan() {
                continue;
            }
        }
        mean += v / count - mean / count;
    }
    mean
}

/// φ-quantile with linear interpolation between closest ranks, as Prometheus computes it.
pub fn quantile(q: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

fn absent<S: Source>(ev: &mut Evaluator<'_, S>, e: &Expr, t: i64) -> Result<Val, QueryError> {
    if !ev.vector(e, t)?.is_empty() {
        return Ok(Val::Vector(Vec::new()));
    }
    // Labels come from the selector's equality matchers, as in Prometheus.
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Expr::VectorSelector(vs) = e {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for m in super::eval::matchers_of(vs)? {
            *seen.entry(m.name.clone()).or_default() += 1;
            if m.op == MatchOp::Eq && m.name != METRIC_NAME {
                pairs.push((m.name, m.value));
            }
        }
        pairs.retain(|(n, _)| seen.get(n) == Some(&1));
    }
    Ok(Val::Vector(vec![Elem {
        labels: Labels::new(pairs),
        v: 1.0,
    }]))
}

/// Classic-bucket `histogram_quantile`: groups by labels without `le`, interpolates linearly
/// inside the bucket holding the rank.
fn histogram_quantile<S: Source>(ev: &mut Evaluator<'_, S>, q: f64, v: Vec<Elem>) -> Vec<Elem> {
    // Bucket groups from `derive` are shared copies: found by identity, sorted by labels
    // at the end (the order Prometheus returns them in).
    let mut index: IdentityMap<usize, usize> = IdentityMap::default();
    let mut groups: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
    for e in v {
        let Some(le) = e.labels.get("le").and_then(parse_le) else {
            continue;
        };
        let key = ev.derive(0, Derivation::BucketGroup, &e.labels, |l| {
            l.without(&["le", METRIC_NAME])
        });
        let i = *index.entry(key.identity()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push((le, e.v));
    }
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    groups
        .into_iter()
        .map(|(labels, buckets)| Elem {
            labels,
            v: bucket_quantile(q, buckets),
        })
        .collect()
}

fn parse_le(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        _ => s.parse().ok(),
    }
}

fn bucket_quantile(q: f64, mut b: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    if b.len() < 2 || b.last().is_none_or(|l| l.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Scrapes are not atomic: force counts to be monotonic, as Prometheus does.
    for i in 1..b.len() {
        if b[i].1 < b[i - 1].1 {
            b[i].1 = b[i - 1].1;
        }
    }
    let total = b[b.len() - 1].1;
    if total == 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let i = b.partition_point(|x| x.1 < rank).min(b.len() - 1);
    if i == b.len() - 1 {
        return b[b.len() - 2].0;
    }
    if i == 0 && b[0].0 <= 0.0 {
        return b[0].0;
    }
    let (start, count_before) = if i == 0 {
        (0.0, 0.0)
    } else {
        (b[i - 1].0, b[i - 1].1)
    };
    let (end, count) = (b[i].0, b[i].1 - count_before);
    start + (end - start) * ((rank - count_before) / count)
}
