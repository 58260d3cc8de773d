//! `on.push` filters: whether a push (a ref and the paths it changed) triggers a workflow, as
//! GitHub documents it ("Workflow syntax: on.push.<branches|tags|paths>" and the "Filter
//! pattern cheat sheet"). Pure: the caller computes the changed paths.
//!
//! The pattern language is GitHub's filter language, not the glob of `hashFiles`:
//! `*` matches any characters but `/`; `**` any characters; `**/` also matches nothing (so
//! `**/README.md` matches `README.md`); `?` and `+` make the *preceding* character (or
//! bracket class) optional or repeatable, as in a regular expression; `[a-z0-9]` is one
//! character of the class; `\` escapes the next character. A list is read in order and the
//! last pattern that matches decides: `!p` excludes what earlier patterns included, a later
//! positive pattern includes it again.

use indexmap::IndexMap;

use crate::workflow::Trigger;

/// One compiled filter pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// `!` at the start: a match excludes.
    pub negated: bool,
    atoms: Vec<Atom>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom {
    /// One character (or class), with its quantifier.
    One(Class, Repeat),
    /// `*`: any run of characters without `/`.
    Star,
    /// `**`: any run of characters.
    DoubleStar,
    /// `**/`: nothing, or any run of characters ending in `/`.
    DirPrefix,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Class {
    Char(char),
    /// Listed characters and inclusive ranges.
    Set(Vec<(char, char)>),
}

impl Class {
    fn matches(&self, c: char) -> bool {
        match self {
            Class::Char(x) => *x == c,
            Class::Set(ranges) => ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    Once,
    /// `?`: zero or one.
    Optional,
    /// `+`: one or more.
    OneOrMore,
}

impl Pattern {
    /// Compiles a pattern. Every text is a pattern: a `[` without its `]` is a literal `[`, a
    /// `?` or `+` with nothing before it is literal too.
    pub fn new(text: &str) -> Pattern {
        let (negated, body) = match text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let chars: Vec<char> = body.chars().collect();
        let mut atoms: Vec<Atom> = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            match c {
                '*' if chars.get(i + 1) == Some(&'*') => {
                    i += 2;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                        atoms.push(Atom::DirPrefix);
                    } else {
                        atoms.push(Atom::DoubleStar);
                    }
                    continue;
                }
                '*' => atoms.push(Atom::Star),
                '?' | '+' => match atoms.last_mut() {
                    Some(Atom::One(_, repeat @ Repeat::Once)) => {
                        *repeat = if c == '?' {
                            Repeat::Optional
                        } else {
                            Repeat::OneOrMore
                        };
                    }
                    // After a wildcard, "zero or one / one or more of it" changes nothing.
                    Some(Atom::Star | Atom::DoubleStar | Atom::DirPrefix) => {}
                    _ => atoms.push(Atom::One(Class::Char(c), Repeat::Once)),
                },
                '\\' if i + 1 < chars.len() => {
                    i += 1;
                    atoms.push(Atom::One(Class::Char(chars[i]), Repeat::Once));
                }
                '[' => match class(&chars[i + 1..]) {
                    Some((set, used)) => {
                        atoms.push(Atom::One(Class::Set(set), Repeat::Once));
                        i += used;
                    }
                    None => atoms.push(Atom::One(Class::Char('['), Repeat::Once)),
                },
                _ => atoms.push(Atom::One(Class::Char(c), Repeat::Once)),
            }
            i += 1;
        }
        Pattern { negated, atoms }
    }

    /// Whether the whole of `text` matches (the `!` is not applied here).
    pub fn matches(&self, text: &str) -> bool {
        let s: Vec<char> = text.chars().collect();
        let n = s.len();
        // next[j]: the atoms after the current one match s[j..]. Computed from the last atom
        // back, so matching is O(atoms × length) whatever the pattern (no backtracking).
        let mut next: Vec<bool> = (0..=n).map(|j| j == n).collect();
        let mut cur = vec![false; n + 1];
        for atom in self.atoms.iter().rev() {
            let mut slash_ahead = false;
            for j in (0..=n).rev() {
                let ch = s.get(j).copied();
                cur[j] = match atom {
                    Atom::One(class, repeat) => {
                        let here = ch.is_some_and(|c| class.matches(c));
                        match repeat {
                            Repeat::Once => here && next[j + 1],
                            Repeat::Optional => next[j] || (here && next[j + 1]),
                            Repeat::OneOrMore => here && (next[j + 1] || cur[j + 1]),
                        }
                    }
                    Atom::Star => next[j] || (ch.is_some_and(|c| c != '/') && cur[j + 1]),
                    Atom::DoubleStar => next[j] || (ch.is_some() && cur[j + 1]),
                    Atom::DirPrefix => {
                        slash_ahead |= ch == Some('/') && next[j + 1];
                        next[j] || slash_ahead
                    }
                };
            }
            std::mem::swap(&mut next, &mut cur);
        }
        next[0]
    }
}

/// `[...]` after the `[`: the ranges and how many characters were used (through the `]`).
fn class(chars: &[char]) -> Option<(Vec<(char, char)>, usize)> {
    let end = chars.iter().position(|c| *c == ']')?;
    if end == 0 {
        return None;
    }
    let body = &chars[..end];
    let mut set = Vec::new();
    let mut i = 0;
    while i < body.len() {
        if i + 2 < body.len() && body[i + 1] == '-' {
            set.push((body[i], body[i + 2]));
            i += 3;
        } else {
            set.push((body[i], body[i]));
            i += 1;
        }
    }
    Some((set, end + 1))
}

/// Whether `text` is selected by the ordered `patterns`: the last matching pattern decides.
pub fn selected(patterns: &[Pattern], text: &str) -> bool {
    let mut selected = false;
    for p in patterns {
        if p.negated == selected && p.matches(text) {
            selected = !p.negated;
        }
    }
    selected
}

fn compile(list: &[String]) -> Vec<Pattern> {
    list.iter().map(|p| Pattern::new(p)).collect()
}

/// A push: the full ref pushed and the paths the push changed (relative, `/`-separated).
#[derive(Debug, Clone, Copy)]
pub struct Push<'a> {
    /// `refs/heads/<branch>` or `refs/tags/<tag>`.
    pub git_ref: &'a str,
    /// The changed files; path filters are not evaluated for tags.
    pub changed: &'a [String],
}

/// Why a push does not trigger the workflow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushSkip {
    /// `on` has no `push`.
    #[error("the workflow has no `on: push` trigger")]
    NoTrigger,
    /// The ref is neither a branch nor a tag.
    #[error("`{0}` is neither a branch (refs/heads/) nor a tag (refs/tags/)")]
    NotBranchOrTag(String),
    /// Only tag filters are declared, and a branch was pushed (or the reverse).
    #[error("on.push filters only {declared}, and {kind} `{name}` was pushed")]
    OtherRefKind {
        /// `branches` or `tags`.
        declared: &'static str,
        /// `branch` or `tag`.
        kind: &'static str,
        /// The short name.
        name: String,
    },
    /// The branch or tag name is not selected by `branches`/`tags`.
    #[error("{kind} `{name}` is not selected by on.push.{key}")]
    NotSelected {
        /// `branch` or `tag`.
        kind: &'static str,
        /// The short name.
        name: String,
        /// `branches` or `tags`.
        key: &'static str,
    },
    /// The name is selected by `branches-ignore`/`tags-ignore`.
    #[error("{kind} `{name}` is ignored by on.push.{key}")]
    Ignored {
        /// `branch` or `tag`.
        kind: &'static str,
        /// The short name.
        name: String,
        /// `branches-ignore` or `tags-ignore`.
        key: &'static str,
    },
    /// No changed path is selected by `paths` (or every one is ignored by `paths-ignore`).
    #[error("no changed file is selected by on.push.{0}")]
    Paths(&'static str),
}

/// Whether a push triggers the workflow whose `on` is given; `Err` says why not.
///
/// GitHub's rules: with neither branch nor tag filters, every branch and tag push runs; with
/// only one kind declared, pushes of the other kind do not run. `branches` selects by the
/// ordered patterns, `branches-ignore` skips what it selects (the same for tags). Path
/// filters apply to branch pushes only; `paths` needs one changed file it selects,
/// `paths-ignore` needs one changed file it does not. Both the ref and the path filters must
/// pass.
pub fn push_runs(on: &IndexMap<String, Trigger>, push: &Push<'_>) -> Result<(), PushSkip> {
    let trigger = on.get("push").ok_or(PushSkip::NoTrigger)?;
    let (kind, name, includes, ignores, keys) =
        if let Some(name) = push.git_ref.strip_prefix("refs/heads/") {
            (
                "branch",
                name,
                &trigger.branches,
                &trigger.branches_ignore,
                ("branches", "branches-ignore"),
            )
        } else if let Some(name) = push.git_ref.strip_prefix("refs/tags/") {
            (
                "tag",
                name,
                &trigger.tags,
                &trigger.tags_ignore,
                ("tags", "tags-ignore"),
            )
        } else {
            return Err(PushSkip::NotBranchOrTag(push.git_ref.to_owned()));
        };
    let branch_filters = !trigger.branches.is_empty() || !trigger.branches_ignore.is_empty();
    let tag_filters = !trigger.tags.is_empty() || !trigger.tags_ignore.is_empty();
    let this_kind_filtered = if kind == "branch" {
        branch_filters
    } else {
        tag_filters
    };
    if !this_kind_filtered && (branch_filters || tag_filters) {
        return Err(PushSkip::OtherRefKind {
            declared: if branch_filters { "branches" } else { "tags" },
            kind,
            name: name.to_owned(),
        });
    }
    if !includes.is_empty() && !selected(&compile(includes), name) {
        return Err(PushSkip::NotSelected {
            kind,
            name: name.to_owned(),
            key: keys.0,
        });
    }
    if !ignores.is_empty() && selected(&compile(ignores), name) {
        return Err(PushSkip::Ignored {
            kind,
            name: name.to_owned(),
            key: keys.1,
        });
    }
    if kind == "tag" {
        return Ok(());
    }
    if !trigger.paths.is_empty() {
        let paths = compile(&trigger.paths);
        if !push.changed.iter().any(|f| selected(&paths, f)) {
            return Err(PushSkip::Paths("paths"));
        }
    }
    if !trigger.paths_ignore.is_empty() {
        let ignored = compile(&trigger.paths_ignore);
        if push.changed.iter().all(|f| selected(&ignored, f)) {
            return Err(PushSkip::Paths("paths-ignore"));
        }
    }
    Ok(())
}

/// The strings that keep a commit from triggering `push` and `pull_request` workflows when its
/// message contains one ("Skipping workflow runs").
pub const SKIP_MARKERS: [&str; 5] = [
    "[skip ci]",
    "[ci skip]",
    "[no ci]",
    "[skip actions]",
    "[actions skip]",
];

/// Why GitHub would not start `push` or `pull_request` workflows for a head commit with this
/// message: one of [`SKIP_MARKERS`] anywhere in it, or a `skip-checks:true` (or
/// `skip-checks: true`) trailer, the last line of a paragraph after the subject. `None` when
/// the message asks for nothing.
pub fn commit_skips_workflows(message: &str) -> Option<&'static str> {
    if let Some(marker) = SKIP_MARKERS.iter().find(|m| message.contains(*m)) {
        return Some(marker);
    }
    let mut lines = message.trim_end().lines();
    let last = lines.next_back()?.trim_end();
    let after_subject = lines.clone().any(|l| l.trim().is_empty());
    (after_subject && (last == "skip-checks:true" || last == "skip-checks: true"))
        .then_some("the skip-checks trailer")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_markers_and_the_skip_checks_trailer_skip_a_commit() {
        assert_eq!(
            commit_skips_workflows("docs: typo [skip ci]"),
            Some("[skip ci]")
        );
        assert_eq!(
            commit_skips_workflows("bump\n\nrelease notes [actions skip] here"),
            Some("[actions skip]")
        );
        for marker in SKIP_MARKERS {
            assert_eq!(commit_skips_workflows(&format!("x {marker}")), Some(marker));
        }
        assert_eq!(
            commit_skips_workflows("fix\n\nbody\n\nskip-checks: true\n"),
            Some("the skip-checks trailer")
        );
        assert_eq!(
            commit_skips_workflows("fix\n\nskip-checks:true"),
            Some("the skip-checks trailer")
        );
        // Not a trailer: the subject itself, not the last line, or another value.
        assert_eq!(commit_skips_workflows("skip-checks: true"), None);
        assert_eq!(
            commit_skips_workflows("fix\n\nskip-checks: true\nSigned-off-by: a"),
            None
        );
        assert_eq!(commit_skips_workflows("fix\n\nskip-checks: false"), None);
        assert_eq!(commit_skips_workflows("skip ci please"), None);
        assert_eq!(commit_skips_workflows(""), None);
    }

    /// GitHub's "Patterns to match branches and tags" and "Patterns to match file paths"
    /// tables: (pattern, matches, does not match).
    const CHEAT_SHEET: &[(&str, &[&str], &[&str])] = &[
        (
            "feature/*",
            &["feature/my-branch", "feature/your-branch"],
            &["feature/a/b", "feature"],
        ),
        (
            "feature/**",
            &[
                "feature/beta-a/my-branch",
                "feature/your-branch",
                "feature/mona/the/octocat",
            ],
            &["features/x"],
        ),
        (
            "main",
            &["main"],
            &["main2", "xmain", "releases/mona-the-octocat"],
        ),
        (
            "releases/mona-the-octocat",
            &["releases/mona-the-octocat"],
            &["releases/mona"],
        ),
        (
            "*",
            &["main", "releases", "README.md", "server.rb"],
            &["a/b"],
        ),
        (
            "**",
            &["all/the/branches", "every/tag", "all/the/files.md"],
            &[],
        ),
        (
            "*feature",
            &["mona-feature", "feature", "ver-10-feature"],
            &["feature-x", "a/feature"],
        ),
        ("v2*", &["v2", "v2.0", "v2.9"], &["v1", "v20/x"]),
        (
            "v[12].[0-9]+.[0-9]+",
            &["v1.10.1", "v2.0.0"],
            &["v3.0.0", "v1.x.1", "v1..1"],
        ),
        (
            "*.jsx?",
            &["page.js", "page.jsx"],
            &["page.jsxx", "a/page.js"],
        ),
        ("*.js", &["app.js", "index.js"], &["js/index.js"]),
        (
            "**.js",
            &["index.js", "js/index.js", "src/js/app.js"],
            &["index.ts"],
        ),
        (
            "docs/*",
            &["docs/README.md", "docs/file.txt"],
            &["docs/a/b.md"],
        ),
        (
            "docs/**",
            &["docs/README.md", "docs/mona/octocat.txt"],
            &["doc/x"],
        ),
        (
            "docs/**/*.md",
            &[
                "docs/README.md",
                "docs/mona/hello-world.md",
                "docs/a/markdown/file.md",
            ],
            &["docs/a.txt"],
        ),
        (
            "**/docs/**",
            &[
                "docs/hello.md",
                "dir/docs/my-file.txt",
                "space/docs/plan/space.doc",
            ],
            &["mydocs/x"],
        ),
        (
            "**/README.md",
            &["README.md", "js/README.md"],
            &["README.mdx", "xREADME.md"],
        ),
        (
            "**/*src/**",
            &["a/src/app.js", "my-src/code/js/app.js"],
            &["src"],
        ),
        (
            "**/*-post.md",
            &["my-post.md", "path/their-post.md"],
            &["post.md"],
        ),
        (
            "**/migrate-*.sql",
            &[
                "migrate-10909.sql",
                "db/migrate-v1.0.sql",
                "db/sept/migrate-v1.sql",
            ],
            &["migrate.sql"],
        ),
        ("[CB]at", &["Cat", "Bat"], &["Rat", "at"]),
        ("[1-2]00", &["100", "200"], &["300"]),
        (r"\*star", &["*star"], &["xstar"]),
        ("a[b", &["a[b"], &["ab"]),
    ];

    #[test]
    fn the_cheat_sheet() {
        for (pattern, yes, no) in CHEAT_SHEET {
            let p = Pattern::new(pattern);
            for s in *yes {
                assert!(p.matches(s), "`{pattern}` should match `{s}`");
            }
            for s in *no {
                assert!(!p.matches(s), "`{pattern}` should not match `{s}`");
            }
        }
    }

    #[test]
    fn negation_order() {
        // GitHub's examples: `*.md` then `!README.md`; then `README*` includes again.
        let two = compile(&["*.md".into(), "!README.md".into()]);
        assert!(selected(&two, "hello.md"));
        assert!(!selected(&two, "README.md"));
        assert!(!selected(&two, "docs/hello.md"));
        let three = compile(&["*.md".into(), "!README.md".into(), "README*".into()]);
        for s in ["hello.md", "README.md", "README.doc"] {
            assert!(selected(&three, s), "{s}");
        }
        // A negative pattern first excludes nothing (nothing was included yet).
        assert!(!selected(&compile(&["!main".into()]), "dev"));
        // `!` is special only at the start.
        assert!(Pattern::new("a!b").matches("a!b"));
    }

    fn trigger(f: impl FnOnce(&mut Trigger)) -> IndexMap<String, Trigger> {
        let mut t = Trigger::default();
        f(&mut t);
        IndexMap::from([("push".to_owned(), t)])
    }

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    type Case = (
        &'static str,
        fn(&mut Trigger),
        &'static str,
        &'static [&'static str],
        bool,
    );

    /// (what, trigger, ref, changed, runs) — GitHub's documented examples for on.push.
    const PUSH_CASES: &[Case] = &[
        ("no filters: branch", |_| {}, "refs/heads/x", &[], true),
        ("no filters: tag", |_| {}, "refs/tags/v1", &[], true),
        (
            "branches: main matches",
            |t| t.branches = v(&["main", "mona/octocat", "releases/**"]),
            "refs/heads/releases/10",
            &["a"],
            true,
        ),
        (
            "branches: other branch",
            |t| t.branches = v(&["main", "mona/octocat", "releases/**"]),
            "refs/heads/dev",
            &["a"],
            false,
        ),
        (
            "only branches declared: a tag push does not run",
            |t| t.branches = v(&["**"]),
            "refs/tags/v1",
            &[],
            false,
        ),
        (
            "only tags declared: a branch push does not run",
            |t| t.tags = v(&["v2", "v1.*"]),
            "refs/heads/main",
            &["a"],
            false,
        ),
        (
            "tags: v1.* matches",
            |t| t.tags = v(&["v2", "v1.*"]),
            "refs/tags/v1.9",
            &[],
            true,
        ),
        (
            "branches-ignore: mona/octocat is ignored",
            |t| t.branches_ignore = v(&["mona/octocat", "releases/**-alpha"]),
            "refs/heads/mona/octocat",
            &["a"],
            false,
        ),
        (
            "branches-ignore: releases/beta/3-alpha is ignored",
            |t| t.branches_ignore = v(&["mona/octocat", "releases/**-alpha"]),
            "refs/heads/releases/beta/3-alpha",
            &["a"],
            false,
        ),
        (
            "branches-ignore: releases/10 runs",
            |t| t.branches_ignore = v(&["mona/octocat", "releases/**-alpha"]),
            "refs/heads/releases/10",
            &["a"],
            true,
        ),
        (
            "branches with negation: releases/10-alpha is excluded",
            |t| t.branches = v(&["releases/**", "!releases/**-alpha"]),
            "refs/heads/releases/10-alpha",
            &["a"],
            false,
        ),
        (
            "branches with negation: releases/10 runs",
            |t| t.branches = v(&["releases/**", "!releases/**-alpha"]),
            "refs/heads/releases/10",
            &["a"],
            true,
        ),
        (
            "both kinds declared: a tag push runs by the tag filter",
            |t| {
                t.branches = v(&["main"]);
                t.tags = v(&["v*"]);
            },
            "refs/tags/v1",
            &[],
            true,
        ),
        (
            "paths: a JavaScript file changed",
            |t| t.paths = v(&["**.js"]),
            "refs/heads/main",
            &["README.md", "app/app.js"],
            true,
        ),
        (
            "paths: nothing selected",
            |t| t.paths = v(&["**.js"]),
            "refs/heads/main",
            &["README.md"],
            false,
        ),
        (
            "paths-ignore: only docs changed",
            |t| t.paths_ignore = v(&["docs/**"]),
            "refs/heads/main",
            &["docs/a.md", "docs/b/c.md"],
            false,
        ),
        (
            "paths-ignore: something outside docs changed",
            |t| t.paths_ignore = v(&["docs/**"]),
            "refs/heads/main",
            &["docs/a.md", "src/x.rs"],
            true,
        ),
        (
            "paths with negation: only sub-project docs changed",
            |t| t.paths = v(&["sub-project/**", "!sub-project/docs/**"]),
            "refs/heads/main",
            &["sub-project/docs/a.md"],
            false,
        ),
        (
            "paths with negation: sub-project code changed",
            |t| t.paths = v(&["sub-project/**", "!sub-project/docs/**"]),
            "refs/heads/main",
            &["sub-project/docs/a.md", "sub-project/src/x"],
            true,
        ),
        (
            "branch and path filters must both pass",
            |t| {
                t.branches = v(&["main"]);
                t.paths = v(&["src/**"]);
            },
            "refs/heads/dev",
            &["src/a"],
            false,
        ),
        (
            "path filters are not evaluated for tags",
            |t| {
                t.tags = v(&["v*"]);
                t.paths = v(&["src/**"]);
            },
            "refs/tags/v1",
            &["docs/a"],
            true,
        ),
    ];

    #[test]
    fn push_filters() {
        for (what, f, git_ref, changed, runs) in PUSH_CASES {
            let on = trigger(*f);
            let changed: Vec<String> = changed.iter().map(|s| (*s).to_owned()).collect();
            let got = push_runs(
                &on,
                &Push {
                    git_ref,
                    changed: &changed,
                },
            );
            assert_eq!(got.is_ok(), *runs, "{what}: {got:?}");
        }
        let none = IndexMap::new();
        assert_eq!(
            push_runs(
                &none,
                &Push {
                    git_ref: "refs/heads/main",
                    changed: &[]
                }
            ),
            Err(PushSkip::NoTrigger)
        );
    }
}
