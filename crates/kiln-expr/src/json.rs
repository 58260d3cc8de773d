//! `toJSON`'s output format: two-space indented JSON as GitHub prints it.
//!
//! Written by hand rather than through `serde_json::to_string_pretty` because numbers must use
//! GitHub's number formatting (`1` not `1.0`, `1E+15`), and NaN/Infinity must not fail.

use crate::number::format_number;
use crate::value::Value;

const INDENT: &str = "  ";

/// Appends `value` as pretty JSON at nesting level `level` to `out`.
pub(crate) fn write_pretty(value: &Value, level: usize, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&json_number(*n)),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            write_container(out, level, ('[', ']'), items.iter().map(|v| (None, v)));
        }
        Value::Object(map) => {
            write_container(
                out,
                level,
                ('{', '}'),
                map.iter().map(|(k, v)| (Some(k.as_str()), v)),
            );
        }
    }
}

fn write_container<'a>(
    out: &mut String,
    level: usize,
    (open, close): (char, char),
    entries: impl ExactSizeIterator<Item = (Option<&'a str>, &'a Value)>,
) {
    out.push(open);
    if entries.len() == 0 {
        out.push(close);
        return;
    }
    for (i, (key, value)) in entries.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('\n');
        push_indent(out, level + 1);
        if let Some(key) = key {
            write_string(key, out);
            out.push_str(": ");
        }
        write_pretty(value, level + 1, out);
    }
    out.push('\n');
    push_indent(out, level);
    out.push(close);
}

fn push_indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str(INDENT);
    }
}

/// Finite numbers use GitHub's formatting (valid JSON, `1E+15` included); JSON has no NaN or
/// infinity, so those become `null` as JavaScript's `JSON.stringify` does.
fn json_number(n: f64) -> String {
    if n.is_finite() {
        format_number(n)
    } else {
        "null".to_owned()
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_prints_nested_values() {
        let value = Value::from_json(&serde_json::json!({"a": [1, "x\"y", {}], "b": null}));
        assert_eq!(
            value.to_json_pretty(),
            "{\n  \"a\": [\n    1,\n    \"x\\\"y\",\n    {}\n  ],\n  \"b\": null\n}"
        );
    }

    #[test]
    fn scalars() {
        assert_eq!(Value::Number(-0.0).to_json_pretty(), "0");
        assert_eq!(Value::Number(f64::NAN).to_json_pretty(), "null");
        assert_eq!(Value::from("\u{1}").to_json_pretty(), "\"\\u0001\"");
        assert_eq!(Value::Array(vec![]).to_json_pretty(), "[]");
    }
}
