//! GitHub's loose comparison rules and the evaluation-time value wrapper they need.
//!
//! Comparison follows JavaScript's abstract equality with GitHub's changes: strings compare
//! ignoring case, null and booleans become numbers, a number against a string compares
//! numerically, NaN equals nothing, and arrays/objects are equal only to *the same* array or
//! object. Values here are owned copies, so "the same" is tracked with an identity: the path
//! the value was read from (`github\u{1}event`), or a fresh token for values built during
//! evaluation (`fromJSON`, `*` filters).

use std::cmp::Ordering;

use crate::value::{Value, fold_case};

/// A value during evaluation.
#[derive(Debug, Clone)]
pub(crate) struct Val {
    pub value: Value,
    /// Produced by a `*` filter: further accessors apply to each element.
    pub filtered: bool,
    /// Identity for reference equality of arrays and objects; `None` equals nothing.
    pub ident: Option<String>,
}

impl Val {
    pub fn plain(value: Value) -> Self {
        Val {
            value,
            filtered: false,
            ident: None,
        }
    }

    /// Identity of the element at `key` inside this value.
    pub fn child_ident(&self, key: &str) -> Option<String> {
        self.ident.as_ref().map(|id| format!("{id}\u{1}{key}"))
    }
}

/// A value reduced for comparison, borrowing from the operands.
#[derive(Debug, Clone, Copy)]
enum Operand<'a> {
    Null,
    Bool(bool),
    Number(f64),
    String(&'a str),
    /// Arrays and objects, by identity. The flag tells arrays from objects.
    Composite {
        is_array: bool,
        ident: Option<&'a str>,
    },
}

impl<'a> Operand<'a> {
    fn new(value: &'a Value, ident: Option<&'a str>) -> Self {
        match value {
            Value::Null => Operand::Null,
            Value::Bool(b) => Operand::Bool(*b),
            Value::Number(n) => Operand::Number(*n),
            Value::String(s) => Operand::String(s),
            Value::Array(_) => Operand::Composite {
                is_array: true,
                ident,
            },
            Value::Object(_) => Operand::Composite {
                is_array: false,
                ident,
            },
        }
    }

    fn rank(self) -> u8 {
        match self {
            Operand::Null => 0,
            Operand::Bool(_) => 1,
            Operand::Number(_) => 2,
            Operand::String(_) => 3,
            Operand::Composite { is_array: true, .. } => 4,
            Operand::Composite {
                is_array: false, ..
            } => 5,
        }
    }

    fn to_number(self) -> f64 {
        match self {
            Operand::Null => 0.0,
            Operand::Bool(b) => f64::from(u8::from(b)),
            Operand::Number(n) => n,
            Operand::String(s) => Value::String(s.to_owned()).to_number(),
            Operand::Composite { .. } => f64::NAN,
        }
    }
}

/// Brings both sides to a common kind where GitHub does; otherwise leaves them apart.
fn coerce<'a>(left: Operand<'a>, right: Operand<'a>) -> (Operand<'a>, Operand<'a>) {
    use Operand as O;
    match (left, right) {
        _ if left.rank() == right.rank() => (left, right),
        (O::Number(_), O::String(_)) => (left, O::Number(right.to_number())),
        (O::String(_), O::Number(_)) => (O::Number(left.to_number()), right),
        (O::Null | O::Bool(_), _) => coerce(O::Number(left.to_number()), right),
        (_, O::Null | O::Bool(_)) => coerce(left, O::Number(right.to_number())),
        _ => (left, right),
    }
}

/// GitHub's `==`.
pub(crate) fn loose_eq(a: &Val, b: &Val) -> bool {
    values_eq(&a.value, a.ident.as_deref(), &b.value, b.ident.as_deref())
}

/// `==` on raw values with explicit identities (used by `contains` on array elements).
pub(crate) fn values_eq(a: &Value, a_id: Option<&str>, b: &Value, b_id: Option<&str>) -> bool {
    use Operand as O;
    match coerce(Operand::new(a, a_id), Operand::new(b, b_id)) {
        (O::Null, O::Null) => true,
        (O::Bool(l), O::Bool(r)) => l == r,
        // NaN is never equal, which `==` on f64 already gives.
        (O::Number(l), O::Number(r)) => l == r,
        (O::String(l), O::String(r)) => crate::value::eq_ignore_case(l, r),
        (
            O::Composite {
                is_array: la,
                ident: Some(l),
            },
            O::Composite {
                is_array: ra,
                ident: Some(r),
            },
        ) => la == ra && l == r,
        _ => false,
    }
}

/// GitHub's ordering for `<` and `>`: `None` when the operands are not comparable (different
/// kinds after coercion, NaN, arrays, objects), which makes both `<` and `>` false.
pub(crate) fn loose_cmp(a: &Val, b: &Val) -> Option<Ordering> {
    use Operand as O;
    let left = Operand::new(&a.value, None);
    let right = Operand::new(&b.value, None);
    match coerce(left, right) {
        (O::Number(l), O::Number(r)) => l.partial_cmp(&r),
        // Ordinal comparison after upper-casing, in UTF-16 code units as GitHub compares.
        (O::String(l), O::String(r)) => {
            Some(fold_case(l).encode_utf16().cmp(fold_case(r).encode_utf16()))
        }
        (O::Bool(l), O::Bool(r)) => Some(l.cmp(&r)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(value: Value) -> Val {
        Val::plain(value)
    }

    #[test]
    fn coercing_equality() {
        assert!(loose_eq(&v(Value::Null), &v(Value::Number(0.0))));
        assert!(loose_eq(&v(Value::Bool(true)), &v(Value::from(" 1 "))));
        assert!(loose_eq(&v(Value::from("ABC")), &v(Value::from("abc"))));
        assert!(!loose_eq(
            &v(Value::Number(f64::NAN)),
            &v(Value::Number(f64::NAN))
        ));
        assert!(!loose_eq(&v(Value::Null), &v(Value::from("null"))));
        assert!(loose_eq(&v(Value::Null), &v(Value::from(""))));
    }

    #[test]
    fn composites_compare_by_identity() {
        let a = Val {
            value: Value::Array(vec![]),
            filtered: false,
            ident: Some("x".into()),
        };
        let b = Val {
            ident: Some("y".into()),
            ..a.clone()
        };
        assert!(loose_eq(&a, &a));
        assert!(!loose_eq(&a, &b));
        assert!(!loose_eq(
            &v(Value::Array(vec![])),
            &v(Value::Array(vec![]))
        ));
    }

    #[test]
    fn ordering() {
        assert_eq!(
            loose_cmp(&v(Value::from("a")), &v(Value::from("B"))),
            Some(Ordering::Less)
        );
        assert_eq!(
            loose_cmp(&v(Value::Bool(true)), &v(Value::Number(0.5))),
            Some(Ordering::Greater)
        );
        assert_eq!(
            loose_cmp(&v(Value::Number(f64::NAN)), &v(Value::Number(1.0))),
            None
        );
    }
}
