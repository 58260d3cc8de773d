//! `if:` conditions, read as GitHub reads them.
//!
//! An `if` is an expression with or without the `${{ }}` wrapper. Unless it calls one of the
//! status functions (`success()`, `always()`, `failure()`, `cancelled()`), GitHub evaluates it as
//! `success() && (<if>)`; that implicit check is why a failed step skips the rest of the job.

use kiln_expr::{
    EvalError, Expr, Host, ParseOptions, Template, Value, evaluate, parse as parse_expr,
};

/// A parsed `if`.
#[derive(Debug, Clone)]
pub enum Condition {
    /// An expression; `has_status` when it calls a status function itself.
    Expr {
        /// The parsed expression.
        expr: Expr,
        /// Whether the implicit `success() &&` is dropped.
        has_status: bool,
    },
    /// Text mixing literals and `${{ }}` (it renders to a string, true when non-empty).
    Template(Template),
}

/// The inside of `${{ expr }}` when `trimmed` is that one expression and nothing else.
pub(crate) fn lone_expression(trimmed: &str) -> Option<&str> {
    trimmed
        .strip_prefix("${{")
        .and_then(|s| s.strip_suffix("}}"))
        .filter(|s| !s.contains("${{"))
}

/// Parses an `if`; on failure the message and the byte offset in `text`.
pub fn parse(text: &str, opts: &ParseOptions) -> Result<Condition, (String, usize)> {
    let trimmed = text.trim();
    // An empty `if` (`if: ''`, or `if:` with no value, which GitHub reads as '') is the
    // default, `success()`, as GitHub's converter makes it.
    if trimmed.is_empty() {
        return parse("success()", opts);
    }
    let lead = text.len() - text.trim_start().len();
    if let Some(inner) = lone_expression(trimmed) {
        let base = lead + 3;
        return parse_expr(inner, opts)
            .map(|expr| Condition::Expr {
                has_status: calls_status_function(inner),
                expr,
            })
            .map_err(|e| (e.message, base + e.offset));
    }
    if trimmed.contains("${{") {
        return Template::parse(text, opts)
            .map(Condition::Template)
            .map_err(|e| (e.message, e.offset));
    }
    parse_expr(text, opts)
        .map(|expr| Condition::Expr {
            has_status: calls_status_function(text),
            expr,
        })
        .map_err(|e| (e.message, e.offset))
}

/// Checks an `if` without keeping it.
pub fn check(text: &str, opts: &ParseOptions) -> Result<(), (String, usize)> {
    parse(text, opts).map(|_| ())
}

impl Condition {
    /// Evaluates the condition; `success` is what `success()` returns in this place.
    pub fn evaluate(&self, host: &dyn Host, success: bool) -> Result<bool, EvalError> {
        match self {
            Condition::Expr { expr, has_status } => {
                if !*has_status && !success {
                    return Ok(false);
                }
                Ok(evaluate(expr, host)?.is_truthy())
            }
            Condition::Template(t) => {
                if !success {
                    return Ok(false);
                }
                Ok(t.render(host)?.is_truthy())
            }
        }
    }
}

/// True when the expression calls a status function (outside string literals).
fn calls_status_function(src: &str) -> bool {
    let bytes = src.as_bytes();
    let mut i = 0;
    let mut in_string = false;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\'' {
            in_string = !in_string;
            i += 1;
            continue;
        }
        if in_string || !(c.is_ascii_alphabetic() || c == b'_') {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len()
            && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'-'))
        {
            i += 1;
        }
        let word = &src[start..i];
        let preceded_by_dot = start > 0 && bytes[start - 1] == b'.';
        let rest = src[i..].trim_start();
        if !preceded_by_dot
            && rest.starts_with('(')
            && ["success", "always", "failure", "cancelled"]
                .iter()
                .any(|f| f.eq_ignore_ascii_case(word))
        {
            return true;
        }
    }
    false
}

/// A value for `if` results in messages.
pub fn describe(value: &Value) -> String {
    value.to_display_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_expr::{MapHost, WORKFLOW_FUNCTIONS};

    fn opts() -> ParseOptions<'static> {
        ParseOptions {
            named_values: &["github"],
            extra_functions: WORKFLOW_FUNCTIONS,
        }
    }

    #[test]
    fn status_functions_are_detected_outside_strings() {
        assert!(calls_status_function("always()"));
        assert!(calls_status_function("github.x && FAILURE ( )"));
        assert!(!calls_status_function("'always()' == github.x"));
        assert!(!calls_status_function("github.success"));
    }

    #[test]
    fn wrapper_is_optional_and_success_is_implicit() {
        let host = MapHost::new();
        let c = parse("${{ true }}", &opts()).unwrap();
        assert!(c.evaluate(&host, true).unwrap());
        assert!(!c.evaluate(&host, false).unwrap());
        let c = parse("1 == 1", &opts()).unwrap();
        assert!(c.evaluate(&host, true).unwrap());
        assert!(parse("${{ nope.x }}", &opts()).is_err());
    }
}
