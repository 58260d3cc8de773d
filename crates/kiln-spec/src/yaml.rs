//! YAML to a positioned node tree.
//!
//! This is the only module that touches the YAML parser. It builds a small tree in which every
//! node and every mapping key carries its [`Span`], so later passes can report any number of
//! mistakes with exact places. Duplicate keys are reported with both places and the tree keeps
//! the first; `<<` merge keys and custom tags are refused (GitHub refuses them too), aliases are
//! expanded with a budget so that a "billion laughs" document cannot exhaust memory. The YAML
//! 1.2 core schema's own tags (`!!str`, `!!int`, `!!float`, `!!bool`, `!!null`, `!!map`, `!!seq`)
//! are read as GitHub's runner reads them: `!!str` makes any scalar a string, the others must
//! be plain scalars of their type.
//!
//! A refused merge key still has its mapping(s) merged into the tree (YAML 1.1's rule: keys
//! written in the mapping win, then the merged mappings in order), so the one real mistake is
//! reported and not a trail of "missing key" errors for keys the author did write.

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Span as YamlSpan, Tag};

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::source::{FileId, Span};

/// Most nodes one file may expand to (aliases included).
const NODE_BUDGET: usize = 1_000_000;
/// Deepest nesting accepted.
const MAX_DEPTH: usize = 128;

/// A YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where the node is written.
    pub span: Span,
}

/// A mapping key with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key text.
    pub text: String,
    /// Where the key is written.
    pub span: Span,
}

/// The value of a node, with YAML 1.2 core-schema scalar resolution.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or empty.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer or float.
    Number(f64),
    /// Any other scalar; `quoted` when written in quotes or as a block scalar.
    String {
        /// The text after escape processing.
        text: String,
        /// True when the author quoted it (so `"1"` stays a string).
        quoted: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order, without duplicate keys.
    Map(Vec<(Key, Node)>),
}

impl Value {
    /// What a user would call this type, for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String { .. } => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    /// The node as a JSON value (positions dropped).
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => number_to_json(*n),
            Value::String { text, .. } => serde_json::Value::String(text.clone()),
            Value::Seq(items) => {
                serde_json::Value::Array(items.iter().map(Node::to_json).collect())
            }
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.text.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Integral numbers become JSON integers so that `replicas: 2` does not print as `2.0`.
pub fn number_to_json(n: f64) -> serde_json::Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        serde_json::Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

/// What kind of file is parsed, for the words of the diagnostics that name the file or the
/// command that checks it: a workflow's error must not send its user to `kiln validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    /// The command that checks such a file, as a user types it.
    pub validate: &'static str,
    /// The file, as a diagnostic names it ("a stack file").
    pub file: &'static str,
    /// The help for a second YAML document in the file.
    pub second_document: &'static str,
}

impl Dialect {
    /// A stack file (`kiln.yaml` and its includes).
    pub const STACK: Dialect = Dialect {
        validate: "kiln validate",
        file: "a stack file",
        second_document: "split stacks with `include:` instead of `---`",
    };
    /// A GitHub Actions workflow under `.github/workflows`.
    pub const WORKFLOW: Dialect = Dialect {
        validate: "kiln ci validate",
        file: "a workflow file",
        second_document: "put each workflow in its own file under `.github/workflows`",
    };
    /// A local action's `action.yml`.
    pub const ACTION: Dialect = Dialect {
        validate: "kiln ci validate",
        file: "an action's metadata file",
        second_document: "keep one action per directory, in one `action.yml`",
    };
}

/// Parses one YAML document of a stack file. Returns `None` (with diagnostics) when the YAML
/// is malformed.
pub fn parse(file: FileId, text: &str, diags: &mut Diagnostics) -> Option<Node> {
    parse_as(file, text, diags, Dialect::STACK)
}

/// Parses one YAML document of the kind of file `dialect` says, whose diagnostics name that
/// file and the command that checks it.
pub fn parse_as(
    file: FileId,
    text: &str,
    diags: &mut Diagnostics,
    dialect: Dialect,
) -> Option<Node> {
    let mut builder = Builder {
        file,
        text,
        diags,
        anchors: Vec::new(),
        budget: NODE_BUDGET,
        dialect,
    };
    builder.document()
}

enum Frame {
    Seq {
        start: usize,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        start: usize,
        anchor: usize,
        entries: Vec<(Key, Node)>,
        pending_key: Option<Key>,
        /// The values of refused `<<` keys, merged in when the mapping closes.
        merges: Vec<Node>,
    },
}

struct Builder<'a> {
    file: FileId,
    text: &'a str,
    diags: &'a mut Diagnostics,
    anchors: Vec<(usize, Node)>,
    budget: usize,
    dialect: Dialect,
}

impl Builder<'_> {
    fn span(&self, s: &YamlSpan) -> Span {
        let start = s.start.byte_offset().unwrap_or(0);
        let end = s.end.byte_offset().unwrap_or(start);
        Span::new(self.file, start, end)
    }

    fn syntax_error(&mut self, offset: usize, message: String) {
        let span = Span::new(self.file, offset, offset);
        self.diags.push(
            Diagnostic::new(
                Code::YamlSyntax,
                span,
                "",
                format!("invalid YAML: {message}"),
            )
            .label("here")
            .help(format!(
                "check indentation and quoting around this place; `{}` reads YAML 1.2",
                self.dialect.validate
            )),
        );
    }

    fn document(&mut self) -> Option<Node> {
        let mut parser = Parser::new_from_str(self.text);
        let mut stack: Vec<Frame> = Vec::new();
        let mut root: Option<Node> = None;
        let mut documents = 0usize;
        loop {
            let (event, yspan) = match parser.next_event() {
                None => break,
                Some(Ok(ev)) => ev,
                Some(Err(err)) => {
                    let offset = err.marker().byte_offset().unwrap_or(0);
                    self.syntax_error(offset, err.info());
                    return None;
                }
            };
            let span = self.span(&yspan);
            let node = match event {
                Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => continue,
                Event::DocumentStart(..) => {
                    documents += 1;
                    if documents > 1 {
                        self.diags.push(
                            Diagnostic::new(
                                Code::Unsupported,
                                span,
                                "",
                                format!("{} holds one YAML document", self.dialect.file),
                            )
                            .label("a second document starts here")
                            .help(self.dialect.second_document),
                        );
                        return None;
                    }
                    continue;
                }
                Event::Alias(id) => self.alias(id, span)?,
                Event::Scalar(text, style, anchor, tag) => {
                    let value = match tag {
                        None => resolve_scalar(&text, style),
                        Some(tag) => self.tagged_scalar(&text, style, &tag, span),
                    };
                    let node = Node { value, span };
                    self.remember(anchor, &node);
                    node
                }
                Event::SequenceStart(_, anchor, tag) => {
                    if let Some(tag) = tag {
                        self.collection_tag(&tag, "seq", span);
                    }
                    if !self.push_frame(&stack, span) {
                        return None;
                    }
                    stack.push(Frame::Seq {
                        start: span.start,
                        anchor,
                        items: Vec::new(),
                    });
                    continue;
                }
                Event::MappingStart(_, anchor, tag) => {
                    if let Some(tag) = tag {
                        self.collection_tag(&tag, "map", span);
                    }
                    if !self.push_frame(&stack, span) {
                        return None;
                    }
                    stack.push(Frame::Map {
                        start: span.start,
                        anchor,
                        entries: Vec::new(),
                        pending_key: None,
                        merges: Vec::new(),
                    });
                    continue;
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let Some(frame) = stack.pop() else { continue };
                    self.close(frame, span.end)
                }
                _ => continue,
            };
            if !self.spend() {
                return None;
            }
            match stack.last_mut() {
                None => root = Some(node),
                Some(frame) => self.add_child(frame, node),
            }
        }
        Some(root.unwrap_or(Node {
            value: Value::Null,
            span: Span::new(self.file, 0, 0),
        }))
    }

    fn push_frame(&mut self, stack: &[Frame], span: Span) -> bool {
        if stack.len() >= MAX_DEPTH {
            self.diags.push(
                Diagnostic::new(
                    Code::Unsupported,
                    span,
                    "",
                    format!("nesting deeper than {MAX_DEPTH} levels"),
                )
                .label("too deep"),
            );
            return false;
        }
        true
    }

    fn spend(&mut self) -> bool {
        if self.budget == 0 {
            self.diags.push(Diagnostic::new(
                Code::Unsupported,
                Span::new(self.file, 0, 0),
                "",
                format!("the document expands to more than {NODE_BUDGET} nodes (alias bomb?)"),
            ));
            return false;
        }
        self.budget -= 1;
        true
    }

    fn refuse_tag(&mut self, tag: &Tag, span: Span) {
        self.diags.push(
            Diagnostic::new(
                Code::Unsupported,
                span,
                "",
                format!("the YAML tag `{}` is not supported", tag_text(tag)),
            )
            .label("tagged node")
            .help(
                "only the core schema's tags (`!!str`, `!!int`, `!!float`, `!!bool`, `!!null`) \
                 are read; remove the tag and write the value plainly",
            ),
        );
    }

    /// `!!map` on a mapping and `!!seq` on a sequence say what the node already is.
    fn collection_tag(&mut self, tag: &Tag, kind: &str, span: Span) {
        match tag.core_suffix() {
            Some(core) if core == kind => {}
            Some(core) => {
                let what = if kind == "map" { "a mapping" } else { "a list" };
                self.diags.push(
                    Diagnostic::new(
                        Code::InvalidValue,
                        span,
                        "",
                        format!("`!!{core}` tags {what}"),
                    )
                    .label(format!("this is {what}"))
                    .help(format!("remove the tag, or write `!!{kind}`")),
                );
            }
            None => self.refuse_tag(tag, span),
        }
    }

    /// A core-schema tag on a scalar, as GitHub's runner reads it (its `YamlObjectReader`):
    /// `!!str` makes any scalar a string; `!!int`, `!!float`, `!!bool` and `!!null` take a plain
    /// scalar that is written as a value of that type.
    fn tagged_scalar(&mut self, text: &str, style: ScalarStyle, tag: &Tag, span: Span) -> Value {
        let fallback = || resolve_scalar(text, style);
        let Some(kind) = tag.core_suffix() else {
            self.refuse_tag(tag, span);
            return fallback();
        };
        if kind == "str" {
            return Value::String {
                text: text.to_owned(),
                quoted: true,
            };
        }
        let resolved = resolve_scalar(text, ScalarStyle::Plain);
        let fits = style == ScalarStyle::Plain
            && match kind {
                "int" => is_core_int(text),
                "float" => matches!(resolved, Value::Number(_)),
                "bool" => matches!(resolved, Value::Bool(_)),
                "null" => matches!(resolved, Value::Null),
                _ => false,
            };
        if fits {
            return resolved;
        }
        let expected = match kind {
            "int" => "an integer such as `3`, `-7` or `0x1F`",
            "float" => "a number such as `1.5`, `2e3` or `.inf`",
            "bool" => "`true` or `false`",
            "null" => "`null`, `~` or nothing",
            _ => "a scalar (`!!map` and `!!seq` tag mappings and lists)",
        };
        let written = if style == ScalarStyle::Plain {
            format!("`{text}`")
        } else {
            format!("the quoted `{text}`")
        };
        self.diags.push(
            Diagnostic::new(
                Code::InvalidValue,
                span,
                "",
                format!("{written} is not a valid `!!{kind}`"),
            )
            .label(format!("expected {expected}, unquoted"))
            .help(format!(
                "write the value as {expected}, or use `!!str` (or quotes) for a string"
            )),
        );
        fallback()
    }

    fn remember(&mut self, anchor: usize, node: &Node) {
        if anchor != 0 {
            self.anchors.push((anchor, node.clone()));
        }
    }

    fn alias(&mut self, id: usize, span: Span) -> Option<Node> {
        let found = self
            .anchors
            .iter()
            .rev()
            .find(|(a, _)| *a == id)
            .map(|(_, n)| n.clone());
        let Some(node) = found else {
            self.diags.push(
                Diagnostic::new(Code::YamlSyntax, span, "", "alias to an unknown anchor")
                    .label("unknown anchor"),
            );
            return None;
        };
        let size = count_nodes(&node);
        if size > self.budget {
            self.budget = 0;
            self.spend();
            return None;
        }
        self.budget -= size.saturating_sub(1);
        Some(node)
    }

    fn close(&mut self, frame: Frame, end: usize) -> Node {
        match frame {
            Frame::Seq {
                start,
                anchor,
                items,
            } => {
                let node = Node {
                    value: Value::Seq(items),
                    span: Span::new(self.file, start, end),
                };
                self.remember(anchor, &node);
                node
            }
            Frame::Map {
                start,
                anchor,
                mut entries,
                merges,
                ..
            } => {
                merge_into(&mut entries, merges);
                let node = Node {
                    value: Value::Map(entries),
                    span: Span::new(self.file, start, end),
                };
                self.remember(anchor, &node);
                node
            }
        }
    }

    fn add_child(&mut self, frame: &mut Frame, node: Node) {
        match frame {
            Frame::Seq { items, .. } => items.push(node),
            Frame::Map {
                entries,
                pending_key,
                merges,
                ..
            } => match pending_key.take() {
                None => *pending_key = Some(self.key(node)),
                Some(key) if key.text == "<<" => {
                    self.refuse_merge_key(&key);
                    merges.push(node);
                }
                Some(key) => self.insert(entries, key, node),
            },
        }
    }

    fn key(&mut self, node: Node) -> Key {
        let text = match &node.value {
            Value::String { text, .. } => text.clone(),
            Value::Null => "null".to_owned(),
            Value::Bool(b) => b.to_string(),
            Value::Number(_) => self
                .text
                .get(node.span.start..node.span.end)
                .unwrap_or("")
                .trim()
                .to_owned(),
            Value::Seq(_) | Value::Map(_) => {
                self.diags.push(
                    Diagnostic::new(
                        Code::Unsupported,
                        node.span,
                        "",
                        "mapping keys must be plain strings",
                    )
                    .label("complex key"),
                );
                String::new()
            }
        };
        Key {
            text,
            span: node.span,
        }
    }

    /// GitHub refuses merge keys too (anchors and aliases, yes; `<<`, no).
    fn refuse_merge_key(&mut self, key: &Key) {
        self.diags.push(
            Diagnostic::new(
                Code::Unsupported,
                key.span,
                "",
                "YAML merge keys (`<<`) are not supported",
            )
            .label("merge key")
            .help(
                "write the keys out in this mapping; an alias (`*name`) may stand for a whole \
                 value, but cannot be merged into a mapping",
            ),
        );
    }

    fn insert(&mut self, entries: &mut Vec<(Key, Node)>, key: Key, node: Node) {
        if let Some((first, _)) = entries.iter().find(|(k, _)| k.text == key.text) {
            let first_span = first.span;
            self.diags.push(
                Diagnostic::new(
                    Code::DuplicateKey,
                    key.span,
                    key.text.clone(),
                    format!("duplicate key `{}`", key.text),
                )
                .label("defined again here")
                .related(first_span, "first defined here")
                .help("remove one of the two; YAML keeps only one value per key"),
            );
            return;
        }
        entries.push((key, node));
    }
}

/// YAML 1.1's merge: keys written in the mapping win, then each merged mapping in order. Only
/// used so that a refused merge key leaves the tree as its author meant it.
fn merge_into(entries: &mut Vec<(Key, Node)>, merges: Vec<Node>) {
    let sources = merges.into_iter().flat_map(|node| match node.value {
        Value::Seq(items) => items,
        _ => vec![node],
    });
    for source in sources {
        let Value::Map(merged) = source.value else {
            continue;
        };
        for (key, value) in merged {
            if !entries.iter().any(|(k, _)| k.text == key.text) {
                entries.push((key, value));
            }
        }
    }
}

/// The core schema's integers: `[-+]?[0-9]+`, `0o[0-7]+`, `0x[0-9a-fA-F]+`.
fn is_core_int(text: &str) -> bool {
    let all =
        |digits: &str, radix: u32| !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix));
    if let Some(hex) = text.strip_prefix("0x") {
        return all(hex, 16);
    }
    if let Some(oct) = text.strip_prefix("0o") {
        return all(oct, 8);
    }
    all(text.strip_prefix(['-', '+']).unwrap_or(text), 10)
}

/// A tag as its author wrote it: `!!int`, `!custom`, `!<tag:example.com:x>`.
fn tag_text(tag: &Tag) -> String {
    match tag.core_suffix() {
        Some(kind) => format!("!!{kind}"),
        None if tag.original_handle().is_empty() => format!("!<{}>", tag.suffix()),
        None => format!("{}{}", tag.original_handle(), tag.suffix()),
    }
}

fn count_nodes(node: &Node) -> usize {
    match &node.value {
        Value::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|(_, v)| 1 + count_nodes(v))
                .sum::<usize>()
        }
        _ => 1,
    }
}

/// YAML 1.2 core schema: plain scalars may be null, booleans or numbers; quoted ones are strings.
fn resolve_scalar(text: &str, style: ScalarStyle) -> Value {
    if style != ScalarStyle::Plain {
        return Value::String {
            text: text.to_owned(),
            quoted: true,
        };
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Some(n) = parse_number(text) {
        return Value::Number(n);
    }
    Value::String {
        text: text.to_owned(),
        quoted: false,
    }
}

fn parse_number(text: &str) -> Option<f64> {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if let Some(hex) = digits.strip_prefix("0x") {
        let v = i64::from_str_radix(hex, 16).ok()? as f64;
        return Some(if text.starts_with('-') { -v } else { v });
    }
    if let Some(oct) = digits.strip_prefix("0o") {
        let v = i64::from_str_radix(oct, 8).ok()? as f64;
        return Some(if text.starts_with('-') { -v } else { v });
    }
    match digits {
        ".inf" | ".Inf" | ".INF" => {
            return Some(if text.starts_with('-') {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            });
        }
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    let first = digits.chars().next()?;
    if !(first.is_ascii_digit() || first == '.') {
        return None;
    }
    if !digits
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
    {
        return None;
    }
    text.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Node {
        let mut d = Diagnostics::default();
        let node = parse(FileId(0), text, &mut d).unwrap();
        assert!(d.is_empty(), "{:?}", d.into_sorted());
        node
    }

    /// A stack file's YAML mistakes point to `kiln validate` and name a stack file.
    #[test]
    fn stack_files_point_to_kiln_validate() {
        let mut d = Diagnostics::default();
        assert!(parse(FileId(0), "a: [1, 2\n", &mut d).is_none());
        assert!(parse(FileId(0), "a: 1\n---\nb: 2\n", &mut d).is_none());
        let helps: Vec<String> = d
            .into_sorted()
            .into_iter()
            .map(|d| format!("{} / {}", d.message, d.help.unwrap_or_default()))
            .collect();
        assert_eq!(helps.len(), 2, "{helps:?}");
        assert!(
            helps[0].ends_with("`kiln validate` reads YAML 1.2"),
            "{helps:?}"
        );
        assert_eq!(
            helps[1],
            "a stack file holds one YAML document / split stacks with `include:` instead of `---`"
        );
    }

    #[test]
    fn scalars_resolve_by_core_schema() {
        let n = parse_ok("a: 1\nb: '1'\nc: true\nd: ~\ne: hello\nf: 1.5\ng: 0x1f\n");
        let json = n.to_json();
        assert_eq!(
            json,
            serde_json::json!({"a":1,"b":"1","c":true,"d":null,"e":"hello","f":1.5,"g":31})
        );
    }

    #[test]
    fn spans_point_at_values_and_keys() {
        let text = "top:\n  inner: value\n";
        let n = parse_ok(text);
        let Value::Map(entries) = &n.value else {
            panic!()
        };
        let Value::Map(inner) = &entries[0].1.value else {
            panic!()
        };
        let (k, v) = &inner[0];
        assert_eq!(&text[k.span.start..k.span.end], "inner");
        assert_eq!(&text[v.span.start..v.span.end], "value");
    }

    #[test]
    fn duplicate_keys_report_both_places() {
        let mut d = Diagnostics::default();
        parse(FileId(0), "a: 1\nb: 2\na: 3\n", &mut d);
        let list = d.into_sorted();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].code, Code::DuplicateKey);
        assert_eq!(list[0].related.len(), 1);
    }

    #[test]
    fn aliases_expand_and_bombs_are_refused() {
        let n = parse_ok("a: &x [1, 2]\nb: *x\n");
        assert_eq!(n.to_json(), serde_json::json!({"a":[1,2],"b":[1,2]}));
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            bomb.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n", p = i - 1));
        }
        let mut d = Diagnostics::default();
        assert!(parse(FileId(0), &bomb, &mut d).is_none());
        assert!(!d.is_empty());
    }

    /// GitHub's runner reads the core schema's tags (its `YamlObjectReader`): `!!str` makes any
    /// scalar a string, the others take a plain scalar of their type.
    #[test]
    fn core_schema_tags_are_read_as_github_reads_them() {
        let n = parse_ok(
            "a: !!str 1.10\nb: !!str true\nc: !!int 0x1E\nd: !!float 1.5\ne: !!bool false\nf: !!null ~\ng: !!str 'q'\nh: !!map { x: 1 }\ni: !!seq [1]\nj: !<tag:yaml.org,2002:str> 0x1F\n",
        );
        assert_eq!(
            n.to_json(),
            serde_json::json!({"a":"1.10","b":"true","c":30,"d":1.5,"e":false,"f":null,"g":"q","h":{"x":1},"i":[1],"j":"0x1F"})
        );
        let Value::Map(entries) = &n.value else {
            panic!()
        };
        assert!(matches!(
            entries[0].1.value,
            Value::String { quoted: true, .. }
        ));
    }

    #[test]
    fn tags_that_do_not_fit_their_value_or_are_custom_are_refused() {
        let text = "a: !!int 1.5\nb: !!bool 'true'\nc: !custom x\nd: !!seq { x: 1 }\ne: !!null 0\n";
        let mut d = Diagnostics::default();
        parse(FileId(0), text, &mut d);
        let messages: Vec<String> = d.into_sorted().into_iter().map(|d| d.message).collect();
        assert_eq!(
            messages,
            [
                "`1.5` is not a valid `!!int`",
                "the quoted `true` is not a valid `!!bool`",
                "the YAML tag `!custom` is not supported",
                "`!!seq` tags a mapping",
                "`0` is not a valid `!!null`",
            ]
        );
    }

    /// A refused merge key is the one mistake reported: the merged keys are in the tree, so
    /// nothing downstream misses them. Keys written in the mapping win, then sources in order.
    #[test]
    fn a_merge_key_is_refused_once_and_its_keys_are_kept() {
        let text = "base: &b { kind: file, mode: '0644' }\nother: &o { mode: '0600', path: x }\nr:\n  mode: '0700'\n  <<: [*b, *o]\n";
        let mut d = Diagnostics::default();
        let n = parse(FileId(0), text, &mut d).unwrap();
        let list = d.into_sorted();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].message, "YAML merge keys (`<<`) are not supported");
        assert_eq!(
            n.to_json()["r"],
            serde_json::json!({"mode":"0700","kind":"file","path":"x"})
        );
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let mut d = Diagnostics::default();
        assert!(parse(FileId(0), "a: [1, 2\nb: 3\n", &mut d).is_none());
        let list = d.into_sorted();
        assert_eq!(list[0].code, Code::YamlSyntax);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,200}") {
            let mut d = Diagnostics::default();
            let _ = parse(FileId(0), &text, &mut d);
        }
    }
}
