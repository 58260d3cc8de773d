//! Aggregation operators: `sum`, `avg`, `min`, `max`, `count`, `topk`, `bottomk`, `quantile`,
//! grouped `by` or `without` labels.

use std::collections::hash_map::Entry;

use promql_parser::parser::token::{
    T_AVG, T_BOTTOMK, T_COUNT, T_MAX, T_MIN, T_QUANTILE, T_SUM, T_TOPK,
};
use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::eval::{Derivation, Elem, Evaluator, Val, node_id};
use super::functions::{incremental_mean, quantile};
use super::identity_hash::IdentityMap;
use super::{QueryError, Source};
use crate::labels::{Labels, METRIC_NAME};

pub fn eval<S: Source>(
    ev: &mut Evaluator<'_, S>,
    a: &AggregateExpr,
    t: i64,
) -> Result<Val, QueryError> {
    let op = a.op.id();
    let param = match &a.param {
        Some(p) if matches!(op, T_TOPK | T_BOTTOMK | T_QUANTILE) => Some(ev.scalar(p, t)?),
        _ => None,
    };
    if !matches!(
        op,
        T_SUM | T_AVG | T_MIN | T_MAX | T_COUNT | T_TOPK | T_BOTTOMK | T_QUANTILE
    ) {
        return Err(QueryError::Unsupported(format!("aggregation {}", a.op)));
    }
    let input = ev.vector(&a.expr, t)?;
    let groups = group(ev, a, input);
    let mut out = Vec::new();
    for (key, members) in groups {
        match op {
            T_TOPK | T_BOTTOMK => out.extend(top(members, param.unwrap_or(0.0), op == T_TOPK)),
            _ => out.push(Elem {
                labels: key,
                v: reduce(op, &members, param),
            }),
        }
    }
    Ok(Val::Vector(out))
}

/// Groups elements by their output labels, keeping first-seen order. Group keys come from
/// [`Evaluator::derive`] (once per series and query), so equal keys are one shared copy and
/// groups are found by identity.
fn group<S: Source>(
    ev: &mut Evaluator<'_, S>,
    a: &AggregateExpr,
    input: Vec<Elem>,
) -> Vec<(Labels, Vec<Elem>)> {
    let mut index: IdentityMap<usize, usize> = IdentityMap::default();
    let mut groups: Vec<(Labels, Vec<Elem>)> = Vec::new();
    for e in input {
        let key = ev.derive(node_id(a), Derivation::GroupKey, &e.labels, |labels| {
            group_key(labels, a.modifier.as_ref())
        });
        match index.entry(key.identity()) {
            Entry::Occupied(i) => groups[*i.get()].1.push(e),
            Entry::Vacant(i) => {
                i.insert(groups.len());
                groups.push((key, vec![e]));
            }
        }
    }
    groups
}

fn group_key(labels: &Labels, modifier: Option<&LabelModifier>) -> Labels {
    match modifier {
        None => Labels::default(),
        Some(LabelModifier::Include(l)) => {
            labels.only(&l.labels.iter().map(String::as_str).collect::<Vec<_>>())
        }
        Some(LabelModifier::Exclude(l)) => {
            let mut names: Vec<&str> = l.labels.iter().map(String::as_str).collect();
            names.push(METRIC_NAME);
            labels.without(&names)
        }
    }
}

fn reduce(op: u16, members: &[Elem], param: Option<f64>) -> f64 {
    let values = members.iter().map(|e| e.v);
    match op {
        // Sequential addition in input order, like Prometheus 2.x.
        T_SUM => values.reduce(|a, b| a + b).unwrap_or(0.0),
        T_AVG => incremental_mean(values),
        T_COUNT => members.len() as f64,
        T_MAX => values
            .reduce(|a, b| if a < b || a.is_nan() { b } else { a })
            .unwrap_or(f64::NAN),
        T_MIN => values
            .reduce(|a, b| if a > b || a.is_nan() { b } else { a })
            .unwrap_or(f64::NAN),
        _ => quantile(param.unwrap_or(f64::NAN), values.collect()),
    }
}

/// `topk`/`bottomk`: the k largest (smallest) elements with their own labels; NaN sorts last.
fn top(mut members: Vec<Elem>, k: f64, largest: bool) -> Vec<Elem> {
    if k.is_nan() || k < 1.0 {
        return Vec::new();
    }
    let k = if k >= members.len() as f64 {
        members.len()
    } else {
        k as usize
    };
    members.sort_by(|a, b| {
        let ord = match (a.v.is_nan(), b.v.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => return std::cmp::Ordering::Greater,
            (false, true) => return std::cmp::Ordering::Less,
            _ => a.v.total_cmp(&b.v),
        };
        if largest { ord.reverse() } else { ord }
    });
    members.truncate(k);
    members
}
