//! Strings with embedded `${{ expr }}`, as found in kiln.yaml and workflow files.
//!
//! A template that is exactly one expression (whitespace around it allowed) evaluates to the
//! expression's value with its type, so `${{ fromJSON('[1]') }}` is an array; anything else
//! becomes a string, each value converted as GitHub converts for interpolation.

use crate::ast::{Expr, Reference};
use crate::error::{EvalError, TemplateError};
use crate::eval::{Host, evaluate};
use crate::parser::{ParseOptions, parse};
use crate::value::Value;

const OPEN: &str = "${{";
const CLOSE: &str = "}}";

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<TemplatePart>,
    /// For each expression part, in order: the byte offset of its (trimmed) expression text in
    /// the template, to translate expression offsets into template offsets.
    bases: Vec<usize>,
}

/// A piece of a template.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplatePart {
    Literal(String),
    Expr {
        expr: Expr,
        /// Byte offset of `${{` in the template.
        offset: usize,
        /// Byte length up to and including `}}`.
        len: usize,
    },
}

impl Template {
    /// Splits `s` into literals and expressions and parses each expression.
    pub fn parse(s: &str, opts: &ParseOptions) -> Result<Template, TemplateError> {
        let mut template = Template {
            parts: Vec::new(),
            bases: Vec::new(),
        };
        let mut pos = 0;
        while let Some(found) = s[pos..].find(OPEN) {
            let open = pos + found;
            if open > pos {
                template
                    .parts
                    .push(TemplatePart::Literal(s[pos..open].to_owned()));
            }
            pos = template.push_expr(s, open, opts)?;
        }
        if pos < s.len() || template.parts.is_empty() {
            template
                .parts
                .push(TemplatePart::Literal(s[pos..].to_owned()));
        }
        Ok(template)
    }

    /// Parses the expression opening at `open`; returns the offset just past its `}}`.
    fn push_expr(
        &mut self,
        s: &str,
        open: usize,
        opts: &ParseOptions,
    ) -> Result<usize, TemplateError> {
        let inner_start = open + OPEN.len();
        let Some(close) = find_close(s, inner_start) else {
            return Err(TemplateError {
                message: format!(
                    "The expression is not closed. An unescaped ${{{{ sequence was found, but the closing }}}} sequence was not found: {}",
                    &s[open..]
                ),
                offset: open,
                len: s.len() - open,
            });
        };
        let inner = &s[inner_start..close];
        let base = inner_start + (inner.len() - inner.trim_start().len());
        // GitHub refuses a workflow with an empty `${{ }}` anywhere in a value, even inside a
        // shell comment of a `run:` script, with this message.
        if inner.trim().is_empty() {
            return Err(TemplateError {
                message: "An expression was expected".to_owned(),
                offset: open,
                len: close + CLOSE.len() - open,
            });
        }
        let expr = parse(inner.trim(), opts).map_err(|e| TemplateError {
            message: e.message,
            offset: base + e.offset,
            len: e.len,
        })?;
        let end = close + CLOSE.len();
        self.parts.push(TemplatePart::Expr {
            expr,
            offset: open,
            len: end - open,
        });
        self.bases.push(base);
        Ok(end)
    }

    pub fn parts(&self) -> &[TemplatePart] {
        &self.parts
    }

    /// Whether the template has no expressions.
    pub fn is_literal(&self) -> bool {
        self.bases.is_empty()
    }

    /// The references of every expression, with offsets into the whole template.
    pub fn references(&self) -> Vec<Reference> {
        self.exprs()
            .flat_map(|(expr, base)| {
                expr.references().into_iter().map(move |r| Reference {
                    offset: r.offset + base,
                    ..r
                })
            })
            .collect()
    }

    /// Evaluates the template: a lone expression keeps its type, otherwise a string.
    pub fn render(&self, host: &dyn Host) -> Result<Value, EvalError> {
        if let Some((expr, base)) = self.single_expr() {
            return evaluate(expr, host).map_err(|e| shift(e, base));
        }
        let mut out = String::new();
        let mut exprs = self.bases.iter();
        for part in &self.parts {
            match part {
                TemplatePart::Literal(text) => out.push_str(text),
                TemplatePart::Expr { expr, .. } => {
                    let base = exprs.next().copied().unwrap_or(0);
                    let value = evaluate(expr, host).map_err(|e| shift(e, base))?;
                    out.push_str(&value.to_display_string());
                }
            }
        }
        Ok(Value::String(out))
    }

    fn exprs(&self) -> impl Iterator<Item = (&Expr, usize)> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                TemplatePart::Expr { expr, .. } => Some(expr),
                TemplatePart::Literal(_) => None,
            })
            .zip(self.bases.iter().copied())
    }

    /// The only expression, when everything else is whitespace.
    fn single_expr(&self) -> Option<(&Expr, usize)> {
        let only_whitespace = self.parts.iter().all(|p| match p {
            TemplatePart::Literal(text) => text.trim().is_empty(),
            TemplatePart::Expr { .. } => true,
        });
        let mut exprs = self.exprs();
        match (exprs.next(), exprs.next()) {
            (Some(single), None) if only_whitespace => Some(single),
            _ => None,
        }
    }
}

/// Finds the `}}` that closes an expression starting at `from`, skipping string literals so
/// `${{ '}}' }}` closes at the second pair. (`''` inside a string toggles twice, harmlessly.)
fn find_close(s: &str, from: usize) -> Option<usize> {
    let mut in_string = false;
    for (i, c) in s[from..].char_indices() {
        if c == '\'' {
            in_string = !in_string;
        } else if !in_string && s[from + i..].starts_with(CLOSE) {
            return Some(from + i);
        }
    }
    None
}

fn shift(e: EvalError, base: usize) -> EvalError {
    EvalError {
        offset: e.offset + base,
        ..e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::MapHost;

    fn host() -> MapHost {
        let mut host = MapHost::new();
        host.insert(
            "vars",
            Value::from_json(&serde_json::json!({"n": 3, "name": "api"})),
        );
        host
    }

    fn tpl(s: &str) -> Template {
        Template::parse(s, &ParseOptions::default()).unwrap()
    }

    #[test]
    fn literal_only() {
        let t = tpl("plain text }} ${ {");
        assert!(t.is_literal());
        assert_eq!(t.render(&host()), Ok("plain text }} ${ {".into()));
        assert_eq!(tpl("").parts(), &[TemplatePart::Literal(String::new())]);
    }

    #[test]
    fn single_expression_keeps_type() {
        assert_eq!(
            tpl("  ${{ vars.n }} ").render(&host()),
            Ok(Value::Number(3.0))
        );
        assert_eq!(tpl("n=${{ vars.n }}").render(&host()), Ok("n=3".into()));
        assert_eq!(
            tpl("${{ vars.name }}-${{ vars }}").render(&host()),
            Ok("api-Object".into())
        );
    }

    #[test]
    fn closing_braces_inside_strings() {
        let t = tpl("a ${{ format('}}{0}', vars.n) }} b");
        assert_eq!(t.render(&host()), Ok("a }3 b".into()));
        let TemplatePart::Expr { offset, len, .. } = &t.parts()[1] else {
            panic!()
        };
        assert_eq!((*offset, *len), (2, 30));
    }

    /// GitHub refuses an empty `${{ }}` wherever it stands ("An expression was expected"),
    /// even in what a `run:` script would read as a comment.
    #[test]
    fn an_empty_expression_is_refused() {
        for text in ["${{ }}", "# never ${{}} here", "a ${{ \n }} b"] {
            let err = Template::parse(text, &ParseOptions::default()).unwrap_err();
            assert_eq!(err.message, "An expression was expected", "{text}");
            assert_eq!(&text[err.offset..err.offset + 3], "${{", "{text}");
        }
    }

    #[test]
    fn errors_point_into_the_template() {
        let err = Template::parse("abc ${{ vars.n", &ParseOptions::default()).unwrap_err();
        assert_eq!(err.offset, 4);
        let err = Template::parse("x ${{  1 2 }}", &ParseOptions::default()).unwrap_err();
        assert_eq!((err.offset, err.len), (9, 1));
        let err = tpl("x ${{ fromJSON('{') }}").render(&host()).unwrap_err();
        assert_eq!(err.offset, 6);
    }

    #[test]
    fn references_are_template_relative() {
        let refs = tpl("x ${{ vars.name }} ${{vars['n']}}").references();
        assert_eq!(refs[0].path, vec!["vars", "name"]);
        assert_eq!((refs[0].offset, refs[0].len), (6, 9));
        assert_eq!((refs[1].offset, refs[1].len), (22, 9));
    }
}
