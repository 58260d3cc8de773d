//! What each resource kind accepts: attribute names, types, which are required, which force a
//! replacement and which are sensitive. The planner reads the same table, so a kind's schema is
//! written once.

/// The type an attribute's value must have after evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    /// Any string.
    String,
    /// A path relative to the stack file's directory.
    Path,
    /// A path to a template file whose text is rendered with `${{ }}` into another attribute.
    TemplateFile,
    /// A file mode in octal, written as a string (`"0644"`).
    FileMode,
    /// A duration (`30s`); normalised to milliseconds.
    Duration,
    /// A command: a string run by `sh -c`, or a list of strings run without a shell.
    Command,
    /// A list of anything.
    List,
    /// A mapping of strings to strings.
    StringMap,
    /// Any value.
    Any,
}

impl AttrType {
    /// How an "expected …" message names the type.
    pub fn describe(self) -> &'static str {
        match self {
            AttrType::String => "a string",
            AttrType::Path | AttrType::TemplateFile => "a path (a string)",
            AttrType::FileMode => "an octal file mode as a quoted string, like \"0644\"",
            AttrType::Duration => "a duration, like `30s` or `5m`",
            AttrType::Command => "a command: a string (run with sh -c) or a list of strings (argv)",
            AttrType::List => "a list",
            AttrType::StringMap => "a mapping of names to strings",
            AttrType::Any => "any value",
        }
    }
}

/// One attribute of a kind.
#[derive(Debug, Clone, Copy)]
pub struct AttrSchema {
    /// The key in the stack file.
    pub name: &'static str,
    /// Its type.
    pub ty: AttrType,
    /// Must be given.
    pub required: bool,
    /// A change replaces the resource instead of updating it in place.
    pub force_new: bool,
    /// What the attribute is for, shown in help text.
    pub doc: &'static str,
}

/// Everything about one kind.
#[derive(Debug, Clone, Copy)]
pub struct KindSchema {
    /// The `kind:` value.
    pub kind: &'static str,
    /// Its attributes.
    pub attrs: &'static [AttrSchema],
    /// Groups of attributes of which exactly one must be given.
    pub one_of: &'static [&'static [&'static str]],
    /// When set, changes can only be made in place if this attribute is given (an `exec`
    /// without an `update` command is replaced on any change).
    pub in_place_requires: Option<&'static str>,
}

impl KindSchema {
    /// The schema of one attribute.
    pub fn attr(&self, name: &str) -> Option<&AttrSchema> {
        self.attrs.iter().find(|a| a.name == name)
    }
}

const fn attr(name: &'static str, ty: AttrType, doc: &'static str) -> AttrSchema {
    AttrSchema {
        name,
        ty,
        required: false,
        force_new: false,
        doc,
    }
}

const fn required(mut a: AttrSchema) -> AttrSchema {
    a.required = true;
    a
}

const fn force_new(mut a: AttrSchema) -> AttrSchema {
    a.force_new = true;
    a
}

/// `file`: a file on disk, written atomically; drift when edited or deleted outside kiln.
pub const FILE: KindSchema = KindSchema {
    kind: "file",
    attrs: &[
        required(force_new(attr(
            "path",
            AttrType::Path,
            "where the file is written",
        ))),
        attr("content", AttrType::String, "the file's text"),
        attr(
            "template",
            AttrType::TemplateFile,
            "a file whose text, with ${{ }} rendered, becomes the content",
        ),
        attr(
            "mode",
            AttrType::FileMode,
            "permission bits, default \"0644\"",
        ),
    ],
    one_of: &[&["content", "template"]],
    in_place_requires: None,
};

/// `exec`: commands run on create, update and destroy; outputs read from JSON on stdout.
pub const EXEC: KindSchema = KindSchema {
    kind: "exec",
    attrs: &[
        required(force_new(attr(
            "create",
            AttrType::Command,
            "run when the resource is created",
        ))),
        attr(
            "update",
            AttrType::Command,
            "run when `input` or `env` change; without it they replace",
        ),
        attr(
            "destroy",
            AttrType::Command,
            "run when the resource is destroyed",
        ),
        force_new(attr(
            "triggers",
            AttrType::List,
            "values whose change re-runs create",
        )),
        attr(
            "input",
            AttrType::Any,
            "a value passed to the commands as KILN_INPUT (JSON)",
        ),
        attr(
            "env",
            AttrType::StringMap,
            "environment variables for the commands",
        ),
        attr(
            "workdir",
            AttrType::Path,
            "working directory, default the stack's directory",
        ),
        attr(
            "timeout",
            AttrType::Duration,
            "how long a command may run, default 10m",
        ),
    ],
    one_of: &[],
    in_place_requires: Some("update"),
};

/// Every kind that may appear under `resources:`.
pub const KINDS: &[KindSchema] = &[FILE, EXEC];

/// The schema of a kind by name.
pub fn kind(name: &str) -> Option<&'static KindSchema> {
    KINDS.iter().find(|k| k.kind == name)
}

/// Keys every resource accepts besides its kind's attributes.
pub const META_KEYS: &[&str] = &[
    "kind",
    "depends_on",
    "lifecycle",
    "reconcile",
    "description",
];
