//! Binary operators: arithmetic, comparisons (filtering or `bool`), set operators, and vector
//! matching with `on`/`ignoring` and `group_left`/`group_right`.

use std::collections::HashSet;

use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD,
    T_MUL, T_NEQ, T_POW, T_SUB,
};
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::eval::{Derivation, Elem, Evaluator, Val, node_id};
use super::identity_hash::{IdentityMap, IdentitySet};
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
        (Val::Vector(l), Val::Scalar(r)) => Ok(Val::Vector(vector_scalar(
            ev,
            op,
            l,
            r,
            false,
            return_bool,
        )?)),
        (Val::Scalar(l), Val::Vector(r)) => {
            Ok(Val::Vector(vector_scalar(ev, op, r, l, true, return_bool)?))
        }
        (Val::Vector(l), Val::Vector(r)) => {
            let sig = Signature(matching);
            let l = Signed::all(ev, node_id(b), &sig, l);
            let r = Signed::all(ev, node_id(b), &sig, r);
            match op {
                T_LAND => Ok(Val::Vector(set_filter(l, &r, true))),
                T_LUNLESS => Ok(Val::Vector(set_filter(l, &r, false))),
                T_LOR => Ok(Val::Vector(set_or(l, r))),
                _ => {
                    let card = b
                        .modifier
                        .as_ref()
                        .map_or(&VectorMatchCardinality::OneToOne, |m| &m.card);
                    let how = Matching {
                        op,
                        sig: &sig,
                        card,
                        return_bool,
                    };
                    vector_vector(ev, b, &how, l, r).map(Val::Vector)
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
fn vector_scalar<S: Source>(
    ev: &mut Evaluator<'_, S>,
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
            ev.drop_name(&e.labels)
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

/// An element with its matching signature, from [`Evaluator::derive`]: equal signatures have
/// one identity.
struct Signed {
    sig: Labels,
    elem: Elem,
}

impl Signed {
    /// Signs every element of `v` for the binary operation at `node`.
    fn all<S: Source>(
        ev: &mut Evaluator<'_, S>,
        node: usize,
        sig: &Signature<'_>,
        v: Vec<Elem>,
    ) -> Vec<Signed> {
        let sign = |ev: &mut Evaluator<'_, S>, elem: Elem| Signed {
            sig: ev.derive(node, Derivation::Signature, &elem.labels, |l| sig.of(l)),
            elem,
        };
        v.into_iter().map(|elem| sign(ev, elem)).collect()
    }
}

fn set_filter(l: Vec<Signed>, r: &[Signed], keep_matching: bool) -> Vec<Elem> {
    let right: IdentitySet<usize> = r.iter().map(|e| e.sig.identity()).collect();
    l.into_iter()
        .filter(|e| right.contains(&e.sig.identity()) == keep_matching)
        .map(|e| e.elem)
        .collect()
}

fn set_or(l: Vec<Signed>, r: Vec<Signed>) -> Vec<Elem> {
    let left: IdentitySet<usize> = l.iter().map(|e| e.sig.identity()).collect();
    let mut out: Vec<Elem> = l.into_iter().map(|e| e.elem).collect();
    out.extend(
        r.into_iter()
            .filter(|e| !left.contains(&e.sig.identity()))
            .map(|e| e.elem),
    );
    out
}

/// What a vector-to-vector operation does, fixed for its AST node.
struct Matching<'a> {
    op: u16,
    sig: &'a Signature<'a>,
    card: &'a VectorMatchCardinality,
    return_bool: bool,
}

fn vector_vector<S: Source>(
    ev: &mut Evaluator<'_, S>,
    b: &BinaryExpr,
    how: &Matching<'_>,
    lhs: Vec<Signed>,
    rhs: Vec<Signed>,
) -> Result<Vec<Elem>, QueryError> {
    // group_right makes the right side the "many" side; values keep their original order.
    let (many, one, swapped) = match how.card {
        VectorMatchCardinality::OneToMany(_) => (rhs, lhs, true),
        _ => (lhs, rhs, false),
    };
    let mut one_by_sig: IdentityMap<usize, &Elem> = IdentityMap::default();
    for e in &one {
        if one_by_sig.insert(e.sig.identity(), &e.elem).is_some() {
            return Err(QueryError::Eval(format!(
                "found duplicate series for the match group {} on the {} side of the operation; \
                 many-to-many matching not allowed: matching labels must be unique on one side",
                e.sig,
                if swapped { "left" } else { "right" }
            )));
        }
    }
    let include = how.card.labels().map(names).unwrap_or_default();
    let one_to_one = matches!(how.card, VectorMatchCardinality::OneToOne);
    let mut seen_many: IdentitySet<usize> = IdentitySet::default();
    let mut seen_out: HashSet<Labels> = HashSet::new();
    let mut out = Vec::new();
    for Signed { sig, elem: e } in &many {
        let Some(o) = one_by_sig.get(&sig.identity()) else {
            continue;
        };
        if one_to_one && !seen_many.insert(sig.identity()) {
            return Err(QueryError::Eval(format!(
                "multiple matches for labels {sig}: many-to-one matching must be explicit (group_left/group_right)"
            )));
        }
        let (l, r) = if swapped { (o.v, e.v) } else { (e.v, o.v) };
        let (mut value, keep) = elem_op(how.op, l, r)?;
        if how.return_bool {
            value = f64::from(u8::from(keep));
        } else if !keep {
            continue;
        }
        let labels = if include.is_empty() {
            // Then the result depends on the many side's labels only.
            ev.derive(node_id(b), Derivation::MatchResult, &e.labels, |many| {
                result_labels(how, many, &Labels::default(), &include)
            })
        } else {
            result_labels(how, &e.labels, &o.labels, &include)
        };
        if !one_to_one && !seen_out.insert(labels.clone()) {
            return Err(QueryError::Eval(format!(
                "multiple matches for labels {labels}: grouping labels must ensure unique matches"
            )));
        }
        out.push(Elem { labels, v: value });
    }
    Ok(out)
}

fn result_labels(how: &Matching<'_>, many: &Labels, one: &Labels, include: &[&str]) -> Labels {
    let mut l = if drops_name(how.op) || how.return_bool {
        many.without(&[METRIC_NAME])
    } else {
        many.clone()
    };
    if matches!(how.card, VectorMatchCardinality::OneToOne) {
        l = match how.sig.0 {
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
