//! Diagnostics: what is wrong in a stack file, where, what was expected and how to fix it.
//!
//! The spec crate only produces these values; the `kiln` binary renders them.

use crate::source::Span;

/// A stable, machine-readable name for each kind of mistake (shown in `--json` output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    /// The file could not be read.
    Io,
    /// The YAML itself is malformed.
    YamlSyntax,
    /// A mapping has the same key twice.
    DuplicateKey,
    /// A key that the schema does not know.
    UnknownKey,
    /// A required key is absent.
    MissingKey,
    /// A value of the wrong type.
    WrongType,
    /// A value of the right type that is not allowed.
    InvalidValue,
    /// A duration, size or percentage that does not parse.
    BadUnit,
    /// A `${{ }}` expression that does not parse.
    BadExpression,
    /// An expression names something that does not exist.
    UnknownReference,
    /// Resources depend on each other in a loop.
    Cycle,
    /// Two things share a name.
    DuplicateName,
    /// A module input is missing, unknown or of the wrong type.
    ModuleInput,
    /// A module or include source cannot be loaded.
    BadSource,
    /// A YAML feature kiln refuses (merge keys, tags, several documents).
    Unsupported,
    /// Untrusted input (a commit message, a branch name, a PR title) expanded into a shell
    /// script, where it could run commands.
    InjectionRisk,
}

/// A secondary location with its own note, e.g. the first definition of a duplicate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// Where.
    pub span: Span,
    /// What this place is.
    pub message: String,
}

/// One mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// What kind of mistake.
    pub code: Code,
    /// One sentence saying what is wrong.
    pub message: String,
    /// The place of the mistake; `None` only for errors without a file (e.g. a missing root file).
    pub span: Option<Span>,
    /// What the primary label under the span says (usually what was expected).
    pub label: String,
    /// The key path, e.g. `resources.motd.mode`.
    pub key_path: String,
    /// Other places that matter.
    pub related: Vec<Label>,
    /// How to fix it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic at `span` for `key_path`.
    pub fn new(
        code: Code,
        span: Span,
        key_path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            code,
            message: message.into(),
            span: Some(span),
            label: String::new(),
            key_path: key_path.into(),
            related: Vec::new(),
            help: None,
        }
    }

    /// A diagnostic with no position.
    pub fn unplaced(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            message: message.into(),
            span: None,
            label: String::new(),
            key_path: String::new(),
            related: Vec::new(),
            help: None,
        }
    }

    /// Sets the label under the primary span.
    #[must_use]
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Sets the fix suggestion.
    #[must_use]
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds a related place.
    #[must_use]
    pub fn related(mut self, span: Span, message: impl Into<String>) -> Self {
        self.related.push(Label {
            span,
            message: message.into(),
        });
        self
    }
}

/// Collects diagnostics during one load; nothing stops at the first mistake.
#[derive(Debug, Default)]
pub struct Diagnostics {
    list: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Records a mistake.
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.list.push(diagnostic);
    }

    /// Records a mistake and returns it for further decoration.
    pub fn push_mut(&mut self, diagnostic: Diagnostic) -> &mut Diagnostic {
        self.list.push(diagnostic);
        let last = self.list.len() - 1;
        &mut self.list[last]
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Number recorded so far.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Forgets what was recorded after the first `len` except what `keep` says of its place.
    pub(crate) fn retain_after(&mut self, len: usize, keep: impl Fn(Option<Span>) -> bool) {
        let mut index = 0;
        self.list.retain(|d| {
            index += 1;
            index <= len || keep(d.span)
        });
    }

    /// Rewrites key paths starting with `from` to start with `to` instead, for the
    /// diagnostics whose place `applies`.
    pub(crate) fn rewrite_key_prefix(
        &mut self,
        from: &str,
        to: &str,
        applies: impl Fn(Option<Span>) -> bool,
    ) {
        for d in &mut self.list {
            if !applies(d.span) {
                continue;
            }
            if let Some(rest) = d.key_path.strip_prefix(from) {
                d.key_path = format!("{to}{rest}");
            }
        }
    }

    /// Everything recorded, in file then position order (stable for snapshots).
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.list
            .sort_by_key(|d| d.span.map(|s| (s.file, s.start, s.end)));
        self.list.dedup();
        self.list
    }
}
