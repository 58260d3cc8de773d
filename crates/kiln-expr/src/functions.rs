//! The built-in functions every expression may call.
//!
//! Host-specific functions (`hashFiles`, `success()` and the other status functions) are not
//! here: they need I/O or job state, so they go through [`crate::Host::call`]. `case` is listed
//! for parsing but evaluated by the evaluator itself, because it evaluates its arguments lazily.

use crate::compare::{Val, values_eq};
use crate::parser::FunctionSig;
use crate::value::{Value, fold_case};

/// A built-in function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builtin {
    Case,
    Contains,
    EndsWith,
    Format,
    FromJson,
    Join,
    StartsWith,
    ToJson,
}

/// GitHub's limit on the number of function arguments.
const MAX_ARGS: usize = 255;

const BUILTINS: &[(Builtin, FunctionSig)] = &[
    (
        Builtin::Case,
        FunctionSig {
            name: "case",
            min_args: 3,
            max_args: MAX_ARGS,
        },
    ),
    (
        Builtin::Contains,
        FunctionSig {
            name: "contains",
            min_args: 2,
            max_args: 2,
        },
    ),
    (
        Builtin::EndsWith,
        FunctionSig {
            name: "endsWith",
            min_args: 2,
            max_args: 2,
        },
    ),
    (
        Builtin::Format,
        FunctionSig {
            name: "format",
            min_args: 1,
            max_args: MAX_ARGS,
        },
    ),
    (
        Builtin::FromJson,
        FunctionSig {
            name: "fromJSON",
            min_args: 1,
            max_args: 1,
        },
    ),
    (
        Builtin::Join,
        FunctionSig {
            name: "join",
            min_args: 1,
            max_args: 2,
        },
    ),
    (
        Builtin::StartsWith,
        FunctionSig {
            name: "startsWith",
            min_args: 2,
            max_args: 2,
        },
    ),
    (
        Builtin::ToJson,
        FunctionSig {
            name: "toJSON",
            min_args: 1,
            max_args: 1,
        },
    ),
];

/// Finds a built-in by name, ignoring case.
pub(crate) fn lookup(name: &str) -> Option<(Builtin, FunctionSig)> {
    BUILTINS
        .iter()
        .copied()
        .find(|(_, sig)| sig.name.eq_ignore_ascii_case(name))
}

/// GitHub's message when an evaluation outgrows its memory budget.
pub(crate) const MEMORY_EXCEEDED: &str = "The maximum allowed memory size was exceeded";

/// Calls an eagerly evaluated built-in. The error is the message; the caller adds the span.
/// `max_len` bounds the bytes a string result may take: `format` and `join` check it while
/// building, so a large context value repeated many times fails before it is allocated.
/// `case` never reaches here.
pub(crate) fn call(builtin: Builtin, args: &[Val], max_len: usize) -> Result<Value, String> {
    let arg = |i: usize| args.get(i).map_or(&Value::Null, |a| &a.value);
    match builtin {
        Builtin::Contains => Ok(Value::Bool(contains(args))),
        Builtin::StartsWith => Ok(Value::Bool(affix(arg(0), arg(1), |s, p| s.starts_with(p)))),
        Builtin::EndsWith => Ok(Value::Bool(affix(arg(0), arg(1), |s, p| s.ends_with(p)))),
        Builtin::Format => format(args, max_len).map(Value::String),
        Builtin::Join => join(arg(0), args.get(1).map(|a| &a.value), max_len).map(Value::String),
        Builtin::ToJson => Ok(Value::String(arg(0).to_json_pretty())),
        Builtin::FromJson => from_json(arg(0)),
        Builtin::Case => Err("case is evaluated by the evaluator".to_owned()),
    }
}

/// `contains(search, item)`: a case-insensitive substring test for scalars, an element test
/// (with `==` semantics) for arrays, false otherwise.
fn contains(args: &[Val]) -> bool {
    let (Some(search), Some(item)) = (args.first(), args.get(1)) else {
        return false;
    };
    match &search.value {
        Value::Array(items) => items.iter().enumerate().any(|(i, element)| {
            let element_id = search.child_ident(&i.to_string());
            values_eq(
                &item.value,
                item.ident.as_deref(),
                element,
                element_id.as_deref(),
            )
        }),
        s if s.is_primitive() && item.value.is_primitive() => {
            fold_case(&s.to_display_string()).contains(&fold_case(&item.value.to_display_string()))
        }
        _ => false,
    }
}

/// `startsWith`/`endsWith`: case-insensitive, scalars only.
fn affix(subject: &Value, part: &Value, test: fn(&str, &str) -> bool) -> bool {
    subject.is_primitive()
        && part.is_primitive()
        && test(
            &fold_case(&subject.to_display_string()),
            &fold_case(&part.to_display_string()),
        )
}

/// `format('{0} and {1}', a, b)`; `{{` and `}}` stand for literal braces.
fn format(args: &[Val], max_len: usize) -> Result<String, String> {
    let fs = args
        .first()
        .map(|a| a.value.to_display_string())
        .unwrap_or_default();
    let invalid = || format!("The following format string is invalid: {fs}");
    let bytes = fs.as_bytes();
    let mut out = String::with_capacity(fs.len());
    let mut i = 0;
    while let Some(offset) = fs[i..].find(['{', '}']) {
        let brace = i + offset;
        out.push_str(&fs[i..brace]);
        let next = bytes.get(brace + 1).copied();
        if next == Some(bytes[brace]) {
            // `{{` or `}}`: an escaped brace.
            out.push(char::from(bytes[brace]));
            i = brace + 2;
            continue;
        }
        if bytes[brace] == b'}' {
            return Err(invalid());
        }
        let digits = fs[brace + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        let close = brace + 1 + digits;
        if digits == 0 || bytes.get(close) != Some(&b'}') {
            return Err(invalid());
        }
        let index = fs[brace + 1..close]
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_add(1));
        let Some(value) = index.and_then(|n| args.get(n)) else {
            return Err(format!(
                "The following format string references more arguments than were supplied: {fs}"
            ));
        };
        out.push_str(&value.value.to_display_string());
        if out.len() > max_len {
            return Err(MEMORY_EXCEEDED.to_owned());
        }
        i = close + 1;
    }
    out.push_str(&fs[i..]);
    Ok(out)
}

/// `join(array, separator = ',')`. A scalar joins to itself; an object to nothing.
fn join(items: &Value, separator: Option<&Value>, max_len: usize) -> Result<String, String> {
    let separator = match separator {
        Some(s) if s.is_primitive() => s.to_display_string(),
        _ => ",".to_owned(),
    };
    let items = match items {
        Value::Array(items) => items,
        Value::Object(_) => return Ok(String::new()),
        scalar => return Ok(scalar.to_display_string()),
    };
    let texts: Vec<String> = items.iter().map(Value::to_display_string).collect();
    let separators = separator
        .len()
        .saturating_mul(texts.len().saturating_sub(1));
    let total = texts
        .iter()
        .map(String::len)
        .fold(separators, usize::saturating_add);
    if total > max_len {
        return Err(MEMORY_EXCEEDED.to_owned());
    }
    Ok(texts.join(&separator))
}

fn from_json(text: &Value) -> Result<Value, String> {
    let text = text.to_display_string();
    serde_json::from_str::<serde_json::Value>(&text)
        .map(|json| Value::from_json(&json))
        .map_err(|e| format!("Error parsing fromJson: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(values: &[Value]) -> Vec<Val> {
        values.iter().cloned().map(Val::plain).collect()
    }

    fn fmt(args: &[Value]) -> Result<String, String> {
        format(&vals(args), usize::MAX)
    }

    #[test]
    fn format_substitutes_and_escapes() {
        assert_eq!(
            fmt(&["{0}-{1}-{0}".into(), "a".into(), Value::Number(2.0)]),
            Ok("a-2-a".into())
        );
        assert_eq!(fmt(&["{{0}} }}{{".into(), "a".into()]), Ok("{0} }{".into()));
        assert!(
            fmt(&["{0".into(), "a".into()])
                .unwrap_err()
                .contains("is invalid")
        );
        assert!(
            fmt(&["{0}}".into(), "a".into()])
                .unwrap_err()
                .contains("is invalid")
        );
        assert!(
            fmt(&["{1}".into(), "a".into()])
                .unwrap_err()
                .contains("more arguments")
        );
        assert!(
            fmt(&["{99999999999999999999999}".into()])
                .unwrap_err()
                .contains("more arguments")
        );
        assert_eq!(fmt(&["é{0}ü".into(), "ö".into()]), Ok("éöü".into()));
    }

    #[test]
    fn join_and_contains() {
        let list = Value::Array(vec!["a".into(), Value::Null, Value::Number(1.5)]);
        assert_eq!(join(&list, None, 100), Ok("a,,1.5".into()));
        assert_eq!(
            join(&list, Some(&" | ".into()), 100),
            Ok("a |  | 1.5".into())
        );
        assert_eq!(
            join(&list, Some(&" | ".into()), 9),
            Err(MEMORY_EXCEEDED.into())
        );
        assert_eq!(
            format(&vals(&["{0}{0}".into(), "abc".into()]), 5),
            Err(MEMORY_EXCEEDED.into())
        );
        assert!(contains(&vals(&["Hello".into(), "ELL".into()])));
        assert!(contains(&vals(&[list, Value::Number(1.5)])));
        assert!(!contains(&vals(&[
            Value::Object(Default::default()),
            "x".into()
        ])));
    }

    #[test]
    fn json_functions() {
        assert_eq!(
            from_json(&"[1]".into()),
            Ok(Value::Array(vec![Value::Number(1.0)]))
        );
        assert!(from_json(&"{".into()).is_err());
        assert!(lookup("TOJSON").is_some());
        assert!(lookup("nope").is_none());
    }
}
