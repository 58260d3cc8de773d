//! The value model shared by expressions, contexts and results, and GitHub's coercions on it.
//!
//! Values are plain JSON-like data. Object keys keep their original case and insertion order
//! (GitHub shows them in order in `toJSON`), while lookups ignore case as GitHub's do.

use indexmap::IndexMap;

use crate::number::{format_number, parse_number};

/// A value an expression reads or produces.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Value>),
    Object(IndexMap<String, Value>),
}

impl Value {
    /// GitHub's truthiness: null, false, 0, NaN and `''` are false; everything else is true.
    pub fn is_truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => !(*n == 0.0 || n.is_nan()),
            Value::String(s) => !s.is_empty(),
            Value::Array(_) | Value::Object(_) => true,
        }
    }

    /// Whether this is a scalar (not an array or object); GitHub calls these primitives.
    pub fn is_primitive(&self) -> bool {
        !matches!(self, Value::Array(_) | Value::Object(_))
    }

    /// GitHub's conversion to a string, as used by `format`, `join` and string interpolation.
    pub fn to_display_string(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => format_number(*n),
            Value::String(s) => s.clone(),
            Value::Array(_) => "Array".to_owned(),
            Value::Object(_) => "Object".to_owned(),
        }
    }

    /// GitHub's conversion to a number for comparisons: null 0, booleans 1/0, strings as
    /// JavaScript's `Number()`, arrays and objects NaN.
    pub fn to_number(&self) -> f64 {
        match self {
            Value::Null => 0.0,
            Value::Bool(b) => f64::from(u8::from(*b)),
            Value::Number(n) => *n,
            Value::String(s) => parse_number(s),
            Value::Array(_) | Value::Object(_) => f64::NAN,
        }
    }

    /// What `toJSON` returns: JSON indented by two spaces, like GitHub's.
    pub fn to_json_pretty(&self) -> String {
        let mut out = String::new();
        crate::json::write_pretty(self, 0, &mut out);
        out
    }

    /// Converts parsed JSON into a value (numbers become `f64`).
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::String(s) => Value::String(s.clone()),
            serde_json::Value::Array(items) => {
                Value::Array(items.iter().map(Value::from_json).collect())
            }
            serde_json::Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// Converts to JSON. Whole numbers become JSON integers so they print without `.0`; NaN and
    /// the infinities, which JSON cannot hold, become `null`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => number_to_json(*n),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(Value::to_json).collect())
            }
            Value::Object(map) => serde_json::Value::Object(
                map.iter().map(|(k, v)| (k.clone(), v.to_json())).collect(),
            ),
        }
    }

    /// Case-insensitive lookup of an object property; `None` for non-objects.
    pub fn get_property(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Object(map) => find_key(map, name)
                .and_then(|i| map.get_index(i))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The kind name GitHub uses in its test data and messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "Null",
            Value::Bool(_) => "Boolean",
            Value::Number(_) => "Number",
            Value::String(_) => "String",
            Value::Array(_) => "Array",
            Value::Object(_) => "Object",
        }
    }
}

impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Self {
        Value::from_json(&v)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<f64> for Value {
    fn from(n: f64) -> Self {
        Value::Number(n)
    }
}

fn number_to_json(n: f64) -> serde_json::Value {
    // 2^53: beyond it not every integer is exact, so keep the float form.
    const EXACT_INT_LIMIT: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() <= EXACT_INT_LIMIT {
        // The range check above keeps this cast exact.
        #[allow(clippy::cast_possible_truncation)]
        return serde_json::Value::from(n as i64);
    }
    serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// Index of the first key equal to `name` ignoring case. An exact match wins over a
/// case-insensitive one so that objects with keys differing only in case stay addressable.
pub(crate) fn find_key(map: &IndexMap<String, Value>, name: &str) -> Option<usize> {
    map.get_index_of(name)
        .or_else(|| map.keys().position(|k| eq_ignore_case(k, name)))
}

/// GitHub's case folding for comparisons: simple per-character upper-casing (like .NET's
/// `OrdinalIgnoreCase`), except that the dotless `ı` is left alone as GitHub does.
pub(crate) fn fold_case(s: &str) -> String {
    s.chars().map(fold_char).collect()
}

fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_uppercase();
    }
    if c == 'ı' {
        return c;
    }
    let mut upper = c.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(u), None) => u,
        // Multi-character upper cases (like `ß`) have no single-character form: keep the char.
        _ => c,
    }
}

/// Case-insensitive string equality with GitHub's folding.
pub(crate) fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.eq_ignore_ascii_case(b)
        || a.chars().map(fold_char).eq(b.chars().map(fold_char))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthiness() {
        assert!(!Value::Null.is_truthy());
        assert!(!Value::Number(f64::NAN).is_truthy());
        assert!(!Value::Number(-0.0).is_truthy());
        assert!(!Value::from("").is_truthy());
        assert!(Value::from("false").is_truthy());
        assert!(Value::Array(vec![]).is_truthy());
    }

    #[test]
    fn display_strings() {
        assert_eq!(Value::Null.to_display_string(), "");
        assert_eq!(Value::Number(1.0).to_display_string(), "1");
        assert_eq!(Value::Array(vec![]).to_display_string(), "Array");
        assert_eq!(Value::Object(IndexMap::new()).to_display_string(), "Object");
    }

    #[test]
    fn json_round_trip_and_lookup() {
        let json = serde_json::json!({"Name": "x", "n": 2, "list": [1.5, null, true]});
        let value = Value::from_json(&json);
        assert_eq!(value.to_json(), json);
        assert_eq!(value.get_property("NAME"), Some(&Value::from("x")));
        assert_eq!(value.get_property("missing"), None);
        assert_eq!(value.kind_name(), "Object");
    }

    #[test]
    fn case_folding() {
        assert!(eq_ignore_case("ÄbC", "äBc"));
        assert!(!eq_ignore_case("ı", "I"));
        assert!(!eq_ignore_case("a", "b"));
    }
}
