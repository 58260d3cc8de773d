//! Terminal rendering of diagnostics, in the style of rustc, nextest and just: the place, the
//! source line with a caret under the mistake, the key path, and the fix.

use std::fmt::Write as _;

use kiln_spec::diag::Diagnostic;
use kiln_spec::source::{SourceMap, Span};

/// Renders every diagnostic, then a count line.
pub fn diagnostics(sources: &SourceMap, list: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in list {
        out.push_str(&diagnostic(sources, d));
        out.push('\n');
    }
    let n = list.len();
    let _ = writeln!(
        out,
        "{n} {} found; nothing was changed",
        if n == 1 { "mistake" } else { "mistakes" }
    );
    out
}

/// Renders one diagnostic.
pub fn diagnostic(sources: &SourceMap, d: &Diagnostic) -> String {
    diagnostic_as(sources, d, "error")
}

/// Renders one finding that does not stop anything (`warning[code]: ...`).
pub fn warning(sources: &SourceMap, d: &Diagnostic) -> String {
    diagnostic_as(sources, d, "warning")
}

fn diagnostic_as(sources: &SourceMap, d: &Diagnostic, severity: &str) -> String {
    let code = serde_json::to_value(d.code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut out = format!("{severity}[{code}]: {}\n", d.message);
    if let Some(span) = d.span {
        snippet(&mut out, sources, span, &d.label);
    }
    for related in &d.related {
        snippet(&mut out, sources, related.span, &related.message);
    }
    if !d.key_path.is_empty() {
        let _ = writeln!(out, "   = key: {}", d.key_path);
    }
    if let Some(help) = &d.help {
        let _ = writeln!(out, "   = help: {help}");
    }
    out
}

fn snippet(out: &mut String, sources: &SourceMap, span: Span, label: &str) {
    let file = sources.file(span.file);
    let (line, column) = file.line_col(span.start);
    let _ = writeln!(out, "  --> {}:{line}:{column}", file.path.display());
    let text = file.text.lines().nth(line - 1).unwrap_or("");
    let width = line.to_string().len().max(2);
    let _ = writeln!(out, "{:>width$} |", "");
    let _ = writeln!(out, "{line:>width$} | {}", text.replace('\t', " "));
    let line_chars = text.chars().count();
    let (end_line, end_column) = file.line_col(span.end);
    let carets = if end_line == line && end_column > column {
        end_column - column
    } else {
        line_chars.saturating_sub(column - 1).max(1)
    };
    let _ = writeln!(
        out,
        "{:>width$} | {}{} {label}",
        "",
        " ".repeat(column - 1),
        "^".repeat(carets.max(1))
    );
}

/// A diagnostic as JSON (for `--json`).
pub fn diagnostic_json(sources: &SourceMap, d: &Diagnostic) -> serde_json::Value {
    let place = |span: Span| {
        let file = sources.file(span.file);
        let (line, column) = file.line_col(span.start);
        serde_json::json!({ "file": file.path, "line": line, "column": column })
    };
    serde_json::json!({
        "code": d.code,
        "message": d.message,
        "location": d.span.map(place),
        "key_path": d.key_path,
        "label": d.label,
        "help": d.help,
        "related": d.related.iter().map(|r| serde_json::json!({ "message": r.message, "location": place(r.span) })).collect::<Vec<_>>(),
    })
}
