//! Evaluation of a parsed expression against a [`Host`].
//!
//! The walk is recursive; the parser's depth limit bounds it. Values are owned: a context is
//! fetched from the host once per access and dereferencing moves the child out, so nothing
//! deeper than what an expression touches is copied twice.

use std::cmp::Ordering;

use indexmap::IndexMap;

use crate::ast::{Accessor, CompareOp, Expr, Node, NodeKind};
use crate::compare::{Val, loose_cmp, loose_eq};
use crate::error::EvalError;
use crate::functions::{self, Builtin};
use crate::value::{Value, find_key, fold_case};

/// GitHub's cap on the memory one evaluation may build (1 MiB), counted over the strings
/// built by functions at two bytes a character as GitHub (.NET) stores them. It stops
/// `format`/`join` chains from blowing up a small input into gigabytes.
pub const MAX_MEMORY_BYTES: usize = 1024 * 1024;

/// What an evaluation may read: contexts and host functions.
pub trait Host {
    /// The named value (context) `name`, matched case-insensitively; `None` reads as null.
    fn named_value(&self, name: &str) -> Option<Value>;

    /// Calls a host function (`hashFiles`, `success`, ...). `name` is spelled as in the
    /// [`crate::FunctionSig`] it was parsed with. `None` means the host does not know it.
    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, EvalError>> {
        let _ = (name, args);
        None
    }
}

/// A [`Host`] over a map of named values, matched case-insensitively; it has no functions.
/// The map is public so callers can build it directly: `MapHost(map)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MapHost(pub IndexMap<String, Value>);

impl MapHost {
    pub fn new() -> Self {
        MapHost::default()
    }

    /// Adds or replaces a named value.
    pub fn insert(&mut self, name: impl Into<String>, value: Value) -> &mut Self {
        self.0.insert(name.into(), value);
        self
    }
}

impl From<IndexMap<String, Value>> for MapHost {
    fn from(values: IndexMap<String, Value>) -> Self {
        MapHost(values)
    }
}

impl Host for MapHost {
    fn named_value(&self, name: &str) -> Option<Value> {
        let index = find_key(&self.0, name)?;
        self.0.get_index(index).map(|(_, v)| v.clone())
    }
}

/// Evaluates `expr`. An empty expression is null.
pub fn evaluate(expr: &Expr, host: &dyn Host) -> Result<Value, EvalError> {
    let Some(root) = &expr.root else {
        return Ok(Value::Null);
    };
    let mut evaluator = Evaluator {
        host,
        memory: 0,
        fresh: 0,
    };
    evaluator.eval(root).map(|v| v.value)
}

struct Evaluator<'h> {
    host: &'h dyn Host,
    /// Bytes of strings built so far, against [`MAX_MEMORY_BYTES`].
    memory: usize,
    /// Counter for identities of values built during evaluation.
    fresh: u64,
}

/// An index as GitHub interprets it: as a property name if it is a scalar, and as an array
/// position if it converts to a finite non-negative number (floored).
struct Key {
    name: Option<String>,
    position: Option<usize>,
}

impl Key {
    fn of(value: &Value) -> Key {
        let name = value.is_primitive().then(|| value.to_display_string());
        let n = value.to_number();
        // Saturating float-to-int cast; positions beyond any array simply miss.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let position = (n.is_finite() && n >= 0.0).then(|| n.floor() as usize);
        Key { name, position }
    }
}

impl Evaluator<'_> {
    fn eval(&mut self, node: &Node) -> Result<Val, EvalError> {
        match &node.kind {
            NodeKind::Literal(v) => Ok(Val::plain(v.clone())),
            NodeKind::NamedValue(name) => {
                let value = self.host.named_value(name).unwrap_or(Value::Null);
                Ok(Val {
                    value,
                    filtered: false,
                    ident: Some(fold_case(name)),
                })
            }
            NodeKind::Group(inner) => self.eval(inner),
            NodeKind::Not(inner) => Ok(Val::plain(Value::Bool(
                !self.eval(inner)?.value.is_truthy(),
            ))),
            NodeKind::Compare { op, left, right } => {
                let (l, r) = (self.eval(left)?, self.eval(right)?);
                Ok(Val::plain(Value::Bool(compare(*op, &l, &r))))
            }
            NodeKind::And(items) => self.logical(items, false),
            NodeKind::Or(items) => self.logical(items, true),
            NodeKind::Index { target, accessor } => self.index(target, accessor),
            NodeKind::Call {
                name,
                builtin,
                args,
            } => self.call(node, name, *builtin, args),
        }
    }

    /// `&&` stops at the first falsy operand and `||` at the first truthy one; either returns
    /// that operand itself (or the last), not a boolean.
    fn logical(&mut self, items: &[Node], stop_when: bool) -> Result<Val, EvalError> {
        let mut last = Val::plain(Value::Null);
        for item in items {
            last = self.eval(item)?;
            if last.value.is_truthy() == stop_when {
                break;
            }
        }
        Ok(last)
    }

    fn index(&mut self, target: &Node, accessor: &Accessor) -> Result<Val, EvalError> {
        let base = self.eval(target)?;
        let key = match accessor {
            Accessor::Star => None,
            Accessor::Property(name) => Some(Key {
                name: Some(name.clone()),
                position: None,
            }),
            Accessor::Expr(index) => Some(Key::of(&self.eval(index)?.value)),
        };
        Ok(match key {
            None => self.star(base),
            Some(key) if base.filtered => self.filtered_lookup(base, &key),
            Some(key) => lookup(base, &key),
        })
    }

    /// `x.*`: the elements of an array or the values of an object, as a filter; any other
    /// value gives an empty filter.
    fn star(&mut self, base: Val) -> Val {
        let items = match base.value {
            Value::Array(items) if base.filtered => items.into_iter().flat_map(children).collect(),
            Value::Array(items) => items,
            Value::Object(map) => map.into_values().collect(),
            _ => Vec::new(),
        };
        self.filter(items)
    }

    /// An accessor after a filter applies to every element, dropping misses.
    fn filtered_lookup(&mut self, base: Val, key: &Key) -> Val {
        let Value::Array(items) = base.value else {
            return self.filter(Vec::new());
        };
        let picked = items
            .into_iter()
            .filter_map(|item| match item {
                Value::Object(mut map) => {
                    let i = find_key(&map, key.name.as_deref()?)?;
                    map.swap_remove_index(i).map(|(_, v)| v)
                }
                Value::Array(mut list) => {
                    let i = key.position?;
                    (i < list.len()).then(|| list.swap_remove(i))
                }
                _ => None,
            })
            .collect();
        self.filter(picked)
    }

    fn filter(&mut self, items: Vec<Value>) -> Val {
        let ident = Some(self.fresh_ident());
        Val {
            value: Value::Array(items),
            filtered: true,
            ident,
        }
    }

    fn fresh_ident(&mut self) -> String {
        self.fresh += 1;
        // `#` cannot start a context name, so these never collide with paths.
        format!("#{}", self.fresh)
    }

    fn call(
        &mut self,
        node: &Node,
        name: &str,
        builtin: Option<Builtin>,
        args: &[Node],
    ) -> Result<Val, EvalError> {
        if builtin == Some(Builtin::Case) {
            return self.case(args);
        }
        let values = args
            .iter()
            .map(|a| self.eval(a))
            .collect::<Result<Vec<_>, _>>()?;
        let span_error =
            |message: String| EvalError::new(message, node.start, node.end - node.start);
        let value = match builtin {
            Some(builtin) => {
                let max_len = MAX_MEMORY_BYTES.saturating_sub(self.memory) / 2;
                functions::call(builtin, &values, max_len).map_err(span_error)?
            }
            None => self
                .host_call(name, values)
                .map_err(|e| span_error(e.message))?,
        };
        if let Value::String(s) = &value {
            self.charge(s.len() * 2, node)?;
        }
        let ident = (!value.is_primitive()).then(|| self.fresh_ident());
        Ok(Val {
            value,
            filtered: false,
            ident,
        })
    }

    fn host_call(&self, name: &str, args: Vec<Val>) -> Result<Value, EvalError> {
        let args: Vec<Value> = args.into_iter().map(|a| a.value).collect();
        match self.host.call(name, &args) {
            Some(result) => result,
            None => Err(EvalError::new(
                format!("Unrecognized function: '{name}'"),
                0,
                0,
            )),
        }
    }

    /// `case(pred1, value1, pred2, value2, ..., default)`: predicates must be booleans and
    /// are evaluated in order, only as far as needed.
    fn case(&mut self, args: &[Node]) -> Result<Val, EvalError> {
        let Some((default, pairs)) = args.split_last() else {
            return Ok(Val::plain(Value::Null));
        };
        for pair in pairs.chunks(2) {
            let [predicate, value] = pair else { break };
            match self.eval(predicate)?.value {
                Value::Bool(true) => return self.eval(value),
                Value::Bool(false) => {}
                _ => {
                    let message = "case predicate must evaluate to a boolean value";
                    return Err(EvalError::new(
                        message,
                        predicate.start,
                        predicate.end - predicate.start,
                    ));
                }
            }
        }
        self.eval(default)
    }

    fn charge(&mut self, bytes: usize, node: &Node) -> Result<(), EvalError> {
        self.memory = self.memory.saturating_add(bytes);
        if self.memory > MAX_MEMORY_BYTES {
            let message = functions::MEMORY_EXCEEDED;
            return Err(EvalError::new(message, node.start, node.end - node.start));
        }
        Ok(())
    }
}

/// The children of a filtered element for a nested `*`: array elements or object values.
fn children(item: Value) -> Vec<Value> {
    match item {
        Value::Array(items) => items,
        Value::Object(map) => map.into_values().collect(),
        _ => Vec::new(),
    }
}

/// A plain (unfiltered) lookup: null when missing or when the value cannot be indexed.
fn lookup(base: Val, key: &Key) -> Val {
    let (found, child_key) = match base.value {
        Value::Object(mut map) => {
            let hit = key.name.as_deref().and_then(|name| find_key(&map, name));
            match hit.and_then(|i| map.swap_remove_index(i)) {
                Some((k, v)) => (v, fold_case(&k)),
                None => return Val::plain(Value::Null),
            }
        }
        Value::Array(mut items) => match key.position {
            Some(i) if i < items.len() => (items.swap_remove(i), i.to_string()),
            _ => return Val::plain(Value::Null),
        },
        _ => return Val::plain(Value::Null),
    };
    let ident = base.ident.map(|id| format!("{id}\u{1}{child_key}"));
    Val {
        value: found,
        filtered: false,
        ident,
    }
}

fn compare(op: CompareOp, l: &Val, r: &Val) -> bool {
    match op {
        CompareOp::Eq => loose_eq(l, r),
        CompareOp::Ne => !loose_eq(l, r),
        CompareOp::Lt => loose_cmp(l, r) == Some(Ordering::Less),
        CompareOp::Gt => loose_cmp(l, r) == Some(Ordering::Greater),
        CompareOp::Le => loose_eq(l, r) || loose_cmp(l, r) == Some(Ordering::Less),
        CompareOp::Ge => loose_eq(l, r) || loose_cmp(l, r) == Some(Ordering::Greater),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::{ParseOptions, WORKFLOW_FUNCTIONS, parse};

    fn host() -> MapHost {
        let mut host = MapHost::new();
        host.insert(
            "github",
            Value::from_json(&serde_json::json!({
                "event": {"labels": [{"name": "bug"}, {"name": "docs"}]},
                "ref": "refs/heads/main",
            })),
        );
        host
    }

    fn eval(src: &str) -> Result<Value, EvalError> {
        evaluate(&parse(src, &ParseOptions::default()).unwrap(), &host())
    }

    #[test]
    fn logical_operators_return_operands() {
        assert_eq!(eval("'' || 'fallback'"), Ok("fallback".into()));
        assert_eq!(eval("1 && 'x'"), Ok("x".into()));
        assert_eq!(eval("0 && github.x"), Ok(Value::Number(0.0)));
    }

    #[test]
    fn dereferencing() {
        assert_eq!(eval("GITHUB.Ref"), Ok("refs/heads/main".into()));
        assert_eq!(eval("github['event'].labels[1].name"), Ok("docs".into()));
        assert_eq!(
            eval("github.event.labels.*.name"),
            Ok(Value::Array(vec!["bug".into(), "docs".into()]))
        );
        assert_eq!(eval("github.nope.deeper"), Ok(Value::Null));
        assert_eq!(eval("github.event == github.event"), Ok(Value::Bool(true)));
        assert_eq!(
            eval("github.event.* == github.event.*"),
            Ok(Value::Bool(false))
        );
    }

    struct Jobs;

    impl Host for Jobs {
        fn named_value(&self, _: &str) -> Option<Value> {
            None
        }

        fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, EvalError>> {
            match name {
                "success" => Some(Ok(Value::Bool(true))),
                "hashFiles" => Some(Ok(Value::String(format!("hash:{}", args.len())))),
                _ => None,
            }
        }
    }

    #[test]
    fn host_functions() {
        let opts = ParseOptions {
            named_values: &[],
            extra_functions: WORKFLOW_FUNCTIONS,
        };
        let expr = parse("SUCCESS() && hashfiles('a', 'b')", &opts).unwrap();
        assert_eq!(evaluate(&expr, &Jobs), Ok("hash:2".into()));
        let expr = parse("failure()", &opts).unwrap();
        let err = evaluate(&expr, &Jobs).unwrap_err();
        assert_eq!((err.offset, err.len), (0, 9));
    }

    #[test]
    fn memory_limit() {
        let mut host = MapHost::new();
        host.insert("big", Value::String("x".repeat(20_000)));
        let run = |src: &str| evaluate(&parse(src, &ParseOptions::default()).unwrap(), &host);
        let small = format!("format('{}', big)", "{0}".repeat(20));
        assert!(run(&small).is_ok());
        let large = format!("format('{}', big)", "{0}".repeat(30));
        let err = run(&large).unwrap_err();
        assert!(err.message.contains("memory"), "{err}");
    }
}
