//! Binary operators: arithmetic, comparisons (filtering or `bool`), set operators, and vector
//! matching with `on`/`ignoring` and `group_left`/`group_right`.

use std::collections::{HashMap, HashSet};

use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD,
    T_MUL, T_NEQ, T_POW, T_SUB,
};
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::eval::{Elem, Evaluator, Val};
use super::{QueryError, Source};
use crate::labels::{Labels, METRIC_NAME};

pub fn eval<S: Source>(
    ev: &mut Evaluator<'_, S>,
    b: &BinaryExpr,
    t: i64,
) -> Result<Val, QueryError> {
    let op = b.op.id();
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    if b.modifier
        .as_ref()
        .is_some_and(|m| m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some())
    {
        return Err(QueryError::Unsupported("fill modifiers".into()));
    }
    let lhs = ev.eval(&b.lhs, t)?;
    let rhs = ev.eval(&b.rhs, t)?;
    let matching = b.modifier.as_ref().and_then(|m| m.matching.as_ref());
    match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => {
            let (v, keep) = elem_op(op, l, r)?;
            Ok(Val::Scalar(if is_comparison(op) {
                f64::from(u8::from(keep))
            } else {
                v
            }))
        }
        (Val::Vector(l), Val::Scalar(r)) => {
            Ok(Val::Vector(vector_scalar(op, l, r, false, return_bool)?))
        }
        (Val::Scalar(l), Val::Vector(r)) => {
            Ok(Val::Vector(vector_scalar(op, r, l, true, return_bool)?))
        }
        (Val::Vector(l), Val::Vector(r)) => {
            let sig = Signature(matching);
            match op {
                T_LAND => Ok(Val::Vector(set_filter(l, &r, &sig, true))),
                T_LUNLESS => Ok(Val::Vector(set_filter(l, &r, &sig, false))),
                T_LOR => Ok(Val::Vector(set_or(l, r, &sig))),
                _ => {
                    let card = b
                        .modifier
                        .as_ref()
                        .map_or(&VectorMatchCardinality::OneToOne, |m| &m.card);
                    vector_vector(op, l, r, &sig, card, return_bool).map(Val::Vector)
                }
            }
        }
        (l, r) => Err(QueryError::Eval(format!(
            "binary operator {} not defined between {} and {}",
            b.op,
            l.type_name(),
            r.type_name()
        ))),
    }
}

fn is_comparison(op: u16) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// Arithmetic results change a value's meaning, so they drop the metric name.
fn drops_name(op: u16) -> bool {
    matches!(op, T_ADD | T_SUB | T_MUL | T_DIV | T_MOD | T_POW | T_ATAN2)
}

/// Applies `op`; comparisons return the left value and whether it compared true.
fn elem_op(op: u16, l: f64, r: f64) -> Result<(f64, bool), QueryError> {
    Ok(match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_MOD => (l % r, true),
        T_POW => (l.powf(r), true),
        T_ATAN2 => (l.atan2(r), true),
        T_EQLC => (l, l == r),
        T_NEQ => (l, l != r),
        T_GTR => (l, l > r),
        T_LSS => (l, l < r),
        T_GTE => (l, l >= r),
        T_LTE => (l, l <= r),
        other => {
            return Err(QueryError::Unsupported(format!(
                "operator {} here",
                promql_parser::parser::token::TokenType::new(other)
            )));
        }
    })
}

/// `vector op scalar` (or `scalar op vector` when `swap`); the vector's value is kept by
/// filtering comparisons either way round.
fn vector_scalar(
    op: u16,
    v: Vec<Elem>,
    s: f64,
    swap: bool,
    return_bool: bool,
) -> Result<Vec<Elem>, QueryError> {
    if matches!(op, T_LAND | T_LOR | T_LUNLESS) {
        return Err(QueryError::Eval(
            "set operators need vectors on both sides".into(),
        ));
    }
    let mut out = Vec::with_capacity(v.len());
    for e in v {
        let (l, r) = if swap { (s, e.v) } else { (e.v, s) };
        let (mut value, keep) = elem_op(op, l, r)?;
        if is_comparison(op) && swap {
            value = r;
        }
        if return_bool {
            value = f64::from(u8::from(keep));
        } else if !keep {
            continue;
        }
        let labels = if drops_name(op) || return_bool {
            e.labels.without(&[METRIC_NAME])
        } else {
            e.labels
        };
        out.push(Elem { labels, v: value });
    }
    Ok(out)
}

/// How two elements are matched: `on(...)`, `ignoring(...)` or all labels but the name.
struct Signature<'a>(Option<&'a LabelModifier>);

impl Signature<'_> {
    fn of(&self, l: &Labels) -> Labels {
        match self.0 {
            Some(LabelModifier::Include(on)) => l.only(&names(on)),
            Some(LabelModifier::Exclude(ign)) => {
                let mut n = names(ign);
                n.push(METRIC_NAME);
                l.without(&n)
            }
            None => l.without(&[METRIC_NAME]),
        }
    }
}

fn names(l: &promql_parser::label::Labels) -> Vec<&str> {
    l.labels.iter().map(String::as_str).collect()
}

fn set_filter(l: Vec<Elem>, r: &[Elem], sig: &Signature<'_>, keep_matching: bool) -> Vec<Elem> {
    let right: HashSet<Labels> = r.iter().map(|e| sig.of(&e.labels)).collect();
    l.into_iter()
        .filter(|e| right.contains(&sig.of(&e.labels)) == keep_matching)
        .collect()
}

fn set_or(l: Vec<Elem>, r: Vec<Elem>, sig: &Signature<'_>) -> Vec<Elem> {
    let left: HashSet<Labels> = l.iter().map(|e| sig.of(&e.labels)).collect();
    let mut out = l;
    out.extend(r.into_iter().filter(|e| !left.contains(&sig.of(&e.labels))));
    out
}

fn vector_vector(
    op: u16,
    lhs: Vec<Elem>,
    rhs: Vec<Elem>,
    sig: &Signature<'_>,
    card: &VectorMatchCardinality,
    return_bool: bool,
) -> Result<Vec<Elem>, QueryError> {
    // group_right makes the right side the "many" side; values keep their original order.
    let (many, one, swapped) = match card {
        VectorMatchCardinality::OneToMany(_) => (rhs, lhs, true),
        _ => (lhs, rhs, false),
    };
    let mut one_by_sig: HashMap<Labels, &Elem> = HashMap::new();
    for e in &one {
        if one_by_sig.insert(sig.of(&e.labels), e).is_some() {
            return Err(QueryError::Eval(format!(
                "found duplicate series for the match group {} on the {} side of the operation; \
                 many-to-many matching not allowed: matching labels must be unique on one side",
                sig.of(&e.labels),
                if swapped { "left" } else { "right" }
            )));
        }
    }
    let include = card.labels().map(names).unwrap_or_default();
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    let mut seen_many: HashSet<Labels> = HashSet::new();
    let mut seen_out: HashSet<Labels> = HashSet::new();
    let mut out = Vec::new();
    for e in &many {
        let key = sig.of(&e.labels);
        let Some(o) = one_by_sig.get(&key) else {
            continue;
        };
        if one_to_one && !seen_many.insert(key.clone()) {
            return Err(QueryError::Eval(format!(
                "multiple matches for labels {key}: many-to-one matching must be explicit (group_left/group_right)"
            )));
        }
        let (l, r) = if swapped { (o.v, e.v) } else { (e.v, o.v) };
        let (mut value, keep) = elem_op(op, l, r)?;
        if return_bool {
            value = f64::from(u8::from(keep));
        } else if !keep {
            continue;
        }
        let labels = result_labels(
            op,
            &e.labels,
            &o.labels,
            sig,
            one_to_one,
            &include,
            return_bool,
        );
        if !one_to_one && !seen_out.insert(labels.clone()) {
            return Err(QueryError::Eval(format!(
                "multiple matches for labels {labels}: grouping labels must ensure unique matches"
            )));
        }
        out.push(Elem { labels, v: value });
    }
    Ok(out)
}

fn result_labels(
    op: u16,
    many: &Labels,
    one: &Labels,
    sig: &Signature<'_>,
    one_to_one: bool,
    include: &[&str],
    return_bool: bool,
) -> Labels {
    let mut l = if drops_name(op) || return_bool {
        many.without(&[METRIC_NAME])
    } else {
        many.clone()
    };
    if one_to_one {
        l = match sig.0 {
            Some(LabelModifier::Include(on)) => l.only(&names(on)),
            Some(LabelModifier::Exclude(ign)) => l.without(&names(ign)),
            None => l,
        };
    }
    for name in include {
        l = l.with(name, one.get(name).unwrap_or(""));
    }
    l
}
