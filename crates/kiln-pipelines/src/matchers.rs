//! Problem matchers: `::add-matcher::FILE` registers regular expressions that turn matching
//! lines of a step's output into annotations (the way `setup-node` makes `tsc` and ESLint
//! output point at files), as GitHub's runner does it:
//!
//! - a matcher file is `{"problemMatcher": [{"owner", "severity"?, "pattern": [..]}]}`; it is
//!   checked as the runner checks it (an owner, a known default severity, at least one
//!   pattern, group numbers that exist, no property set by two patterns, `loop` only on the
//!   last pattern of several and only with a `message`, a `message` somewhere);
//! - matchers are the job's: they apply to every later line of every later step until removed
//!   (`::remove-matcher owner=NAME::`); the newest first, and one with the same owner
//!   (case-insensitively) replaces the older;
//! - a line is offered to each matcher in turn; the first that completes a match resets the
//!   others' partial multi-line matches, and its problem becomes an annotation if it has a
//!   message and a known severity (`error`, the default, `warning` or `notice`);
//! - a multi-line matcher advances one pattern per line (a line that does not match the next
//!   pattern breaks the running match); a `loop` last pattern keeps matching consecutive lines,
//!   each one a problem carrying the fields the first lines captured;
//! - a problem's `file` is rooted at the directory of its `fromPath` when it has one, else at
//!   the workspace, and kept only when it names an existing file inside the workspace (as a
//!   path relative to it); otherwise the annotation has no location, like GitHub's.
//!
//! The runner's patterns are .NET regular expressions in ECMAScript mode; kiln compiles them
//! with the `regex` crate, so a pattern that needs look-around or back-references is refused
//! when the matcher is added, with the reason (GitHub would accept it).

use std::path::{Component, Path, PathBuf};

use regex::Regex;
use serde::Deserialize;

use crate::events::{Annotation, Level, SourceLocation};
use crate::workflow::Builtin;

/// Why a matcher file or command was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MatcherError {
    #[error("cannot read the problem matcher file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("the problem matcher file {path} is not valid JSON: {reason}")]
    Json { path: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

/// The file's shape (`owner`, `severity`, `pattern` per matcher; fields named as GitHub's).
#[derive(Debug, Deserialize)]
struct FileConfig {
    #[serde(rename = "problemMatcher", default)]
    problem_matcher: Vec<MatcherConfig>,
}

#[derive(Debug, Deserialize)]
struct MatcherConfig {
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    pattern: Vec<PatternConfig>,
}

#[derive(Debug, Deserialize)]
struct PatternConfig {
    #[serde(default)]
    regexp: Option<String>,
    file: Option<i64>,
    line: Option<i64>,
    column: Option<i64>,
    severity: Option<i64>,
    code: Option<i64>,
    message: Option<i64>,
    #[serde(rename = "fromPath")]
    from_path: Option<i64>,
    #[serde(default, rename = "loop")]
    looping: bool,
}

/// The capture group numbers of one pattern, by field.
#[derive(Debug, Clone, Copy, Default)]
struct Groups {
    file: Option<usize>,
    line: Option<usize>,
    column: Option<usize>,
    severity: Option<usize>,
    code: Option<usize>,
    message: Option<usize>,
    from_path: Option<usize>,
}

/// The fields' names, in the order `build` checks them.
const FIELDS: [&str; 7] = [
    "file", "line", "column", "severity", "code", "message", "fromPath",
];

#[derive(Debug, Clone)]
struct Pattern {
    regex: Regex,
    groups: Groups,
    looping: bool,
}

/// What one or more lines captured. `None`: the pattern has no group for the field; an empty
/// string: the group exists but took no part in the match (as .NET reports it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Captured {
    file: Option<String>,
    line: Option<String>,
    column: Option<String>,
    severity: Option<String>,
    code: Option<String>,
    message: Option<String>,
    from_path: Option<String>,
}

impl Captured {
    /// The fields a running match carries win over this line's (the runner's `??`).
    fn new(
        running: Option<&Captured>,
        pattern: &Pattern,
        caps: &regex::Captures<'_>,
        default_severity: Option<&str>,
    ) -> Captured {
        let group = |index: Option<usize>| {
            index.filter(|i| *i < caps.len()).map(|i| {
                caps.get(i)
                    .map_or_else(String::new, |m| m.as_str().to_owned())
            })
        };
        let field = |carried: Option<&Option<String>>, index: Option<usize>| {
            carried.and_then(Clone::clone).or_else(|| group(index))
        };
        let g = pattern.groups;
        let mut captured = Captured {
            file: field(running.map(|r| &r.file), g.file),
            line: field(running.map(|r| &r.line), g.line),
            column: field(running.map(|r| &r.column), g.column),
            severity: field(running.map(|r| &r.severity), g.severity),
            code: field(running.map(|r| &r.code), g.code),
            message: field(running.map(|r| &r.message), g.message),
            from_path: field(running.map(|r| &r.from_path), g.from_path),
        };
        if let Some(default) = default_severity.filter(|d| !d.is_empty())
            && captured.severity.as_deref().is_none_or(str::is_empty)
        {
            captured.severity = Some(default.to_owned());
        }
        captured
    }
}

/// One registered matcher and its partial multi-line match.
#[derive(Debug, Clone)]
struct Matcher {
    owner: String,
    default_severity: String,
    patterns: Vec<Pattern>,
    /// `running[i]`: what patterns `0..=i` captured on consecutive lines so far.
    running: Vec<Option<Captured>>,
}

impl Matcher {
    fn reset(&mut self) {
        self.running = vec![None; self.patterns.len().saturating_sub(1)];
    }

    fn offer(&mut self, line: &str) -> Option<Captured> {
        if let [pattern] = self.patterns.as_slice() {
            let caps = pattern.regex.captures(line)?;
            return Some(Captured::new(
                None,
                pattern,
                &caps,
                Some(&self.default_severity),
            ));
        }
        let last = self.patterns.len() - 1;
        // From the last pattern back, so that one line advances a running match one step.
        for i in (0..=last).rev() {
            let running = if i > 0 {
                self.running[i - 1].clone()
            } else {
                None
            };
            if i > 0 && running.is_none() {
                continue;
            }
            let pattern = &self.patterns[i];
            match pattern.regex.captures(line) {
                Some(caps) if i == last => {
                    let problem = Captured::new(
                        running.as_ref(),
                        pattern,
                        &caps,
                        Some(&self.default_severity),
                    );
                    let looping = pattern.looping;
                    self.reset();
                    if looping {
                        self.running[i - 1] = running;
                    }
                    return Some(problem);
                }
                Some(caps) => {
                    self.running[i] = Some(Captured::new(running.as_ref(), pattern, &caps, None));
                }
                None if i == last => self.running[i - 1] = None,
                None => self.running[i] = None,
            }
        }
        None
    }
}

/// The problem matchers registered in a job, newest first.
#[derive(Debug, Clone, Default)]
pub struct Matchers {
    matchers: Vec<Matcher>,
}

impl Matchers {
    pub fn is_empty(&self) -> bool {
        self.matchers.is_empty()
    }

    /// Registers every matcher of a file's text (checked first: all or nothing).
    pub fn add(&mut self, text: &str, path: &str) -> Result<(), MatcherError> {
        let file: FileConfig = serde_json::from_str(text).map_err(|e| MatcherError::Json {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let mut seen: Vec<String> = Vec::new();
        let mut built = Vec::new();
        for config in file.problem_matcher {
            let matcher = build(config)?;
            if seen.iter().any(|o| o.eq_ignore_ascii_case(&matcher.owner)) {
                return Err(MatcherError::Invalid(format!(
                    "Duplicate owner name '{}'",
                    matcher.owner
                )));
            }
            seen.push(matcher.owner.clone());
            built.push(matcher);
        }
        for matcher in built {
            self.remove(&matcher.owner);
            self.matchers.insert(0, matcher);
        }
        Ok(())
    }

    /// Owners named in a matcher file (for `::remove-matcher::FILE`).
    pub fn owners_in(text: &str, path: &str) -> Result<Vec<String>, MatcherError> {
        let file: FileConfig = serde_json::from_str(text).map_err(|e| MatcherError::Json {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(file
            .problem_matcher
            .into_iter()
            .filter_map(|m| m.owner)
            .collect())
    }

    pub fn remove(&mut self, owner: &str) {
        self.matchers
            .retain(|m| !m.owner.eq_ignore_ascii_case(owner));
    }

    /// Offers an output line to the matchers; an annotation when one of them completes a
    /// match that makes one. `workspace` roots relative file names.
    pub fn scan(&mut self, line: &str, workspace: &Path) -> Option<Annotation> {
        for index in 0..self.matchers.len() {
            let Some(captured) = self.matchers[index].offer(line) else {
                continue;
            };
            for (other, matcher) in self.matchers.iter_mut().enumerate() {
                if other != index {
                    matcher.reset();
                }
            }
            if let Some(annotation) = to_annotation(captured, workspace) {
                return Some(annotation);
            }
        }
        None
    }
}

/// The matchers the real `actions/setup-node` registers (TypeScript's compiler, ESLint's
/// `stylish` and `compact` formats) and `actions/setup-python` (a traceback's last frame and
/// its exception), so that the built-ins leave the job with the same annotations. kiln's own
/// patterns for those tools' documented output formats.
pub fn for_builtin(builtin: Builtin) -> Option<&'static str> {
    match builtin {
        Builtin::SetupNode => Some(SETUP_NODE),
        Builtin::SetupPython => Some(SETUP_PYTHON),
        _ => None,
    }
}

const SETUP_NODE: &str = r#"{"problemMatcher": [
  {"owner": "tsc", "pattern": [{
    "regexp": "^([^\\s].*?)[(:](\\d+)[,:](\\d+)\\)?(?::| -)\\s+(error|warning|info)\\s+(TS\\d+)\\s*:\\s*(.*)$",
    "file": 1, "line": 2, "column": 3, "severity": 4, "code": 5, "message": 6}]},
  {"owner": "eslint-stylish", "pattern": [
    {"regexp": "^(\\S.*)$", "file": 1},
    {"regexp": "^\\s+(\\d+):(\\d+)\\s+(error|warning|info)\\s+(.*?)\\s\\s+(\\S+)$",
     "line": 1, "column": 2, "severity": 3, "message": 4, "code": 5, "loop": true}]},
  {"owner": "eslint-compact", "pattern": [{
    "regexp": "^(.+): line (\\d+), col (\\d+), (Error|Warning|Info) - (.+) \\((.+)\\)$",
    "file": 1, "line": 2, "column": 3, "severity": 4, "message": 5, "code": 6}]}
]}"#;

const SETUP_PYTHON: &str = r#"{"problemMatcher": [
  {"owner": "python", "pattern": [
    {"regexp": "^\\s*File \"(.+)\", line (\\d+), in .+$", "file": 1, "line": 2},
    {"regexp": "^\\s+\\S.*$"},
    {"regexp": "^(([A-Za-z_][\\w.]*): .*)$", "message": 1}]}
]}"#;

fn build(config: MatcherConfig) -> Result<Matcher, MatcherError> {
    let owner = config.owner.unwrap_or_default();
    if owner.is_empty() {
        return Err(MatcherError::Invalid("Owner must not be empty".to_owned()));
    }
    let severity = config.severity.unwrap_or_default();
    if !["", "error", "warning", "notice"]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(&severity))
    {
        return Err(MatcherError::Invalid(format!(
            "Matcher '{owner}' contains unexpected default severity '{severity}'"
        )));
    }
    if config.pattern.is_empty() {
        return Err(MatcherError::Invalid(format!(
            "Matcher '{owner}' does not contain any patterns"
        )));
    }
    let count = config.pattern.len();
    let mut set: [Option<usize>; 7] = [None; 7];
    let mut patterns = Vec::with_capacity(count);
    for (i, p) in config.pattern.into_iter().enumerate() {
        let (first, last) = (i == 0, i == count - 1);
        if p.looping && (first || !last) {
            return Err(MatcherError::Invalid(
                "Only the last pattern in a multiline matcher may set 'loop'".to_owned(),
            ));
        }
        if p.looping && p.message.is_none() {
            return Err(MatcherError::Invalid(
                "The loop pattern must set 'message'".to_owned(),
            ));
        }
        let source = p.regexp.unwrap_or_default();
        let regex = Regex::new(&source).map_err(|e| {
            MatcherError::Invalid(format!(
                "Matcher '{owner}': kiln cannot compile the pattern `{source}` (GitHub's runner uses .NET regular expressions; kiln supports those without look-around or back-references): {e}"
            ))
        })?;
        let groups = regex.captures_len();
        let raw = [
            p.file,
            p.line,
            p.column,
            p.severity,
            p.code,
            p.message,
            p.from_path,
        ];
        let mut indexes = [None; 7];
        for (k, value) in raw.into_iter().enumerate() {
            let Some(value) = value else { continue };
            if set[k].is_some() {
                return Err(MatcherError::Invalid(format!(
                    "The property '{}' is set twice",
                    FIELDS[k]
                )));
            }
            let index = usize::try_from(value)
                .ok()
                .filter(|v| *v < groups)
                .ok_or_else(|| {
                    MatcherError::Invalid(format!(
                        "The property '{}' is set to {value} which is out of range",
                        FIELDS[k]
                    ))
                })?;
            set[k] = Some(index);
            indexes[k] = Some(index);
        }
        let [file, line, column, severity, code, message, from_path] = indexes;
        patterns.push(Pattern {
            regex,
            groups: Groups {
                file,
                line,
                column,
                severity,
                code,
                message,
                from_path,
            },
            looping: p.looping,
        });
    }
    if set[5].is_none() {
        return Err(MatcherError::Invalid(
            "At least one pattern must set 'message'".to_owned(),
        ));
    }
    let mut matcher = Matcher {
        owner,
        default_severity: severity,
        patterns,
        running: Vec::new(),
    };
    matcher.reset();
    Ok(matcher)
}

/// The runner's `ConvertToIssue`: no annotation without a message or with an unknown severity.
fn to_annotation(captured: Captured, workspace: &Path) -> Option<Annotation> {
    let message = captured.message.filter(|m| !m.trim().is_empty())?;
    let level = match captured.severity.as_deref() {
        None | Some("") => Level::Error,
        Some(s) if s.eq_ignore_ascii_case("error") => Level::Error,
        Some(s) if s.eq_ignore_ascii_case("warning") => Level::Warning,
        Some(s) if s.eq_ignore_ascii_case("notice") => Level::Notice,
        Some(_) => return None,
    };
    // Digits only, as .NET's `NumberStyles.None` reads them.
    let number = |s: Option<String>| {
        s.filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u32>().ok())
    };
    let line = number(captured.line);
    let col = number(captured.column);
    let code = captured
        .code
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    let file = captured
        .file
        .filter(|f| !f.trim().is_empty())
        .and_then(|f| repository_file(&f, captured.from_path.as_deref(), workspace));
    let location = file.map(|file| SourceLocation {
        file,
        line,
        end_line: None,
        col,
        end_column: None,
    });
    Some(Annotation {
        level,
        message,
        // GitHub shows a matcher's code as the annotation's title.
        title: code,
        location,
    })
}

/// The file as a path relative to the workspace, when it exists there.
fn repository_file(file: &str, from_path: Option<&str>, workspace: &Path) -> Option<String> {
    let mut path = PathBuf::from(file);
    if let Some(from) = from_path.filter(|f| !f.trim().is_empty())
        && !path.is_absolute()
        && let Some(dir) = Path::new(from).parent()
        && !dir.as_os_str().is_empty()
    {
        path = dir.join(path);
    }
    if !path.is_absolute() {
        path = workspace.join(path);
    }
    let path = normalize(&path);
    if !path.is_file() {
        return None;
    }
    let relative = path.strip_prefix(normalize(workspace)).ok()?;
    let text = relative.to_string_lossy().into_owned();
    (!text.is_empty()).then_some(text)
}

/// `..` and `.` removed without touching the file system (as `Path.GetFullPath` does).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ESLINT_COMPACT: &str = r#"{"problemMatcher": [{"owner": "compact", "pattern": [{
        "regexp": "^(.+):\\sline\\s(\\d+),\\scol\\s(\\d+),\\s(Error|Warning|Info)\\s-\\s(.+)\\s\\((.+)\\)$",
        "file": 1, "line": 2, "column": 3, "severity": 4, "message": 5, "code": 6}]}]}"#;

    const STYLISH: &str = r#"{"problemMatcher": [{"owner": "stylish", "pattern": [
        {"regexp": "^([^\\s].*)$", "file": 1},
        {"regexp": "^\\s+(\\d+):(\\d+)\\s+(error|warning|info)\\s+(.*)\\s\\s+(.*)$",
         "line": 1, "column": 2, "severity": 3, "message": 4, "code": 5, "loop": true}]}]}"#;

    fn workspace() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/app.js"), "x").unwrap();
        dir
    }

    fn scan_all(m: &mut Matchers, lines: &str, ws: &Path) -> Vec<Annotation> {
        lines.lines().filter_map(|l| m.scan(l, ws)).collect()
    }

    #[test]
    fn a_single_line_matcher_makes_an_annotation_with_its_location() {
        let ws = workspace();
        let mut m = Matchers::default();
        m.add(ESLINT_COMPACT, "m.json").unwrap();
        let found = scan_all(
            &mut m,
            "src/app.js: line 50, col 11, Warning - 'x' is unused. (no-unused-vars)\nplain output",
            ws.path(),
        );
        assert_eq!(
            found,
            vec![Annotation {
                level: Level::Warning,
                message: "'x' is unused.".to_owned(),
                title: Some("no-unused-vars".to_owned()),
                location: Some(SourceLocation {
                    file: "src/app.js".to_owned(),
                    line: Some(50),
                    end_line: None,
                    col: Some(11),
                    end_column: None,
                }),
            }]
        );
    }

    #[test]
    fn an_unknown_severity_makes_no_annotation_and_a_missing_file_no_location() {
        let ws = workspace();
        let mut m = Matchers::default();
        m.add(ESLINT_COMPACT, "m.json").unwrap();
        let found = scan_all(
            &mut m,
            "src/app.js: line 1, col 1, Info - note (rule)\ngone.js: line 2, col 3, Error - bad (rule)",
            ws.path(),
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].level, Level::Error);
        assert_eq!(found[0].location, None);
    }

    #[test]
    fn a_loop_keeps_the_file_of_the_first_line_for_each_problem() {
        let ws = workspace();
        let mut m = Matchers::default();
        m.add(STYLISH, "m.json").unwrap();
        let out = "src/app.js\n  1:1   error  Missing semicolon  semi\n  5:10  warning  'a' unused  no-unused\n";
        let found = scan_all(&mut m, out, ws.path());
        let summary: Vec<_> = found
            .iter()
            .map(|a| {
                let loc = a.location.as_ref().unwrap();
                (a.level, loc.file.as_str(), loc.line, a.message.as_str())
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (Level::Error, "src/app.js", Some(1), "Missing semicolon"),
                (Level::Warning, "src/app.js", Some(5), "'a' unused"),
            ]
        );
        // A line that is neither broke the loop: an indented line now matches nothing.
        assert!(m.scan("", ws.path()).is_none());
        assert!(m.scan("  7:1  error  late  rule", ws.path()).is_none());
    }

    #[test]
    fn the_newest_matcher_of_an_owner_replaces_the_older_and_remove_forgets_it() {
        let ws = workspace();
        let mut m = Matchers::default();
        m.add(ESLINT_COMPACT, "a.json").unwrap();
        let warning_default = r#"{"problemMatcher": [{"owner": "COMPACT", "severity": "warning",
            "pattern": [{"regexp": "^oops: (.*)$", "message": 1}]}]}"#;
        m.add(warning_default, "b.json").unwrap();
        assert_eq!(m.matchers.len(), 1);
        let found = scan_all(&mut m, "oops: it broke", ws.path());
        assert_eq!(found[0].level, Level::Warning);
        m.remove("compact");
        assert!(m.is_empty());
    }

    #[test]
    fn invalid_matchers_are_refused_with_the_runners_reasons() {
        let cases = [
            (
                r#"{"problemMatcher": [{"pattern": [{"regexp": "(a)", "message": 1}]}]}"#,
                "Owner must not be empty",
            ),
            (
                r#"{"problemMatcher": [{"owner": "o", "severity": "fatal", "pattern": [{"regexp": "(a)", "message": 1}]}]}"#,
                "unexpected default severity 'fatal'",
            ),
            (
                r#"{"problemMatcher": [{"owner": "o", "pattern": []}]}"#,
                "does not contain any patterns",
            ),
            (
                r#"{"problemMatcher": [{"owner": "o", "pattern": [{"regexp": "(a)", "message": 2}]}]}"#,
                "'message' is set to 2 which is out of range",
            ),
            (
                r#"{"problemMatcher": [{"owner": "o", "pattern": [{"regexp": "(a)", "file": 1}]}]}"#,
                "At least one pattern must set 'message'",
            ),
            (
                r#"{"problemMatcher": [{"owner": "o", "pattern": [{"regexp": "(a)", "message": 1, "loop": true}]}]}"#,
                "Only the last pattern",
            ),
            (
                r#"{"problemMatcher": [{"owner": "o", "pattern": [{"regexp": "(a)", "file": 1}, {"regexp": "(b)", "file": 1, "message": 1}]}]}"#,
                "'file' is set twice",
            ),
            (
                r#"{"problemMatcher": [{"owner": "o", "pattern": [{"regexp": "(a)(?=b)", "message": 1}]}]}"#,
                "look-around",
            ),
            (
                r#"{"problemMatcher": [{"owner": "o", "pattern": [{"regexp": "(a)", "message": 1}]}, {"owner": "O", "pattern": [{"regexp": "(a)", "message": 1}]}]}"#,
                "Duplicate owner name 'O'",
            ),
        ];
        for (text, expected) in cases {
            let mut m = Matchers::default();
            let err = m.add(text, "m.json").unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(m.is_empty(), "nothing is registered when a file is refused");
        }
        let err = Matchers::default().add("{", "m.json").unwrap_err();
        assert!(matches!(err, MatcherError::Json { .. }));
    }

    #[test]
    fn a_match_resets_the_other_matchers_running_matches() {
        let ws = workspace();
        let mut m = Matchers::default();
        m.add(STYLISH, "a.json").unwrap();
        m.add(
            r#"{"problemMatcher": [{"owner": "boom", "pattern": [{"regexp": "^BOOM (.*)$", "message": 1}]}]}"#,
            "b.json",
        )
        .unwrap();
        // `src/app.js` starts a stylish match; `BOOM` (a newer matcher, offered first)
        // matches and resets it, so the next indented line is not a stylish problem.
        let found = scan_all(
            &mut m,
            "src/app.js\nBOOM now\n  1:1  error  after  rule",
            ws.path(),
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].message, "now");
    }

    #[test]
    fn from_path_roots_the_file_at_its_directory() {
        let ws = workspace();
        let mut m = Matchers::default();
        m.add(
            r#"{"problemMatcher": [{"owner": "p", "pattern": [{"regexp": "^(\\S+) (\\S+): (.*)$", "fromPath": 1, "file": 2, "message": 3}]}]}"#,
            "m.json",
        )
        .unwrap();
        let found = scan_all(&mut m, "src/project.json ./app.js: broken", ws.path());
        assert_eq!(found[0].location.as_ref().unwrap().file, "src/app.js");
        let outside = scan_all(&mut m, "x ../../etc/passwd: outside", ws.path());
        assert_eq!(outside[0].location, None);
    }

    #[test]
    fn setup_node_matchers_read_typescript_and_eslint_output() {
        let ws = workspace();
        let mut m = Matchers::default();
        m.add(for_builtin(Builtin::SetupNode).unwrap(), "setup-node")
            .unwrap();
        let out = "src/app.js(3,7): error TS2322: Type 'string' is not assignable to type 'number'.\n\
                   src/app.js:4:1 - warning TS6133: 'y' is declared but never read.\n\
                   src/app.js: line 9, col 2, Warning - Unexpected console statement. (no-console)\n\
                   src/app.js\n  12:5  error  'z' is not defined  no-undef\n";
        let found: Vec<_> = scan_all(&mut m, out, ws.path())
            .into_iter()
            .map(|a| {
                let at = a.location.unwrap();
                (a.level, at.line, at.col, a.title.unwrap(), a.message)
            })
            .collect();
        assert_eq!(
            found,
            vec![
                (
                    Level::Error,
                    Some(3),
                    Some(7),
                    "TS2322".to_owned(),
                    "Type 'string' is not assignable to type 'number'.".to_owned()
                ),
                (
                    Level::Warning,
                    Some(4),
                    Some(1),
                    "TS6133".to_owned(),
                    "'y' is declared but never read.".to_owned()
                ),
                (
                    Level::Warning,
                    Some(9),
                    Some(2),
                    "no-console".to_owned(),
                    "Unexpected console statement.".to_owned()
                ),
                (
                    Level::Error,
                    Some(12),
                    Some(5),
                    "no-undef".to_owned(),
                    "'z' is not defined".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn the_setup_python_matcher_points_at_a_tracebacks_last_frame() {
        let ws = workspace();
        std::fs::write(ws.path().join("src/tool.py"), "x").unwrap();
        let mut m = Matchers::default();
        m.add(for_builtin(Builtin::SetupPython).unwrap(), "setup-python")
            .unwrap();
        let out = "Traceback (most recent call last):\n  File \"src/app.js\", line 3, in <module>\n    main()\n  File \"src/tool.py\", line 7, in main\n    raise ValueError('bad input')\nValueError: bad input\n";
        let found = scan_all(&mut m, out, ws.path());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].message, "ValueError: bad input");
        let at = found[0].location.as_ref().unwrap();
        assert_eq!((at.file.as_str(), at.line), ("src/tool.py", Some(7)));
    }

    proptest::proptest! {
        /// Whatever the lines, scanning never panics and a problem always has a message.
        #[test]
        fn scanning_arbitrary_lines_is_total(lines in proptest::collection::vec(".{0,40}", 0..20)) {
            let ws = workspace();
            let mut m = Matchers::default();
            m.add(STYLISH, "a.json").unwrap();
            m.add(ESLINT_COMPACT, "b.json").unwrap();
            for line in &lines {
                if let Some(p) = m.scan(line, ws.path()) {
                    proptest::prop_assert!(!p.message.trim().is_empty());
                }
            }
        }
    }
}
