//! YAML to a positioned node tree.
//!
//! This is the only module that touches the YAML parser. It builds a small tree in which every
//! node and every mapping key carries its [`Span`], so later passes can report any number of
//! mistakes with exact places. Duplicate keys are reported with both places and the tree keeps
//! the first; `<<` merge keys and custom tags are refused (GitHub refuses them too), aliases are
//! expanded with a budget so that a "billion laughs" document cannot exhaust memory.

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Span as YamlSpan};

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

/// Parses one YAML document. Returns `None` (with diagnostics) when the YAML is malformed.
pub fn parse(file: FileId, text: &str, diags: &mut Diagnostics) -> Option<Node> {
    let mut builder = Builder {
        file,
        text,
        diags,
        anchors: Vec::new(),
        budget: NODE_BUDGET,
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
    },
}

struct Builder<'a> {
    file: FileId,
    text: &'a str,
    diags: &'a mut Diagnostics,
    anchors: Vec<(usize, Node)>,
    budget: usize,
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
            .help(
                "check indentation and quoting around this place; `kiln validate` reads YAML 1.2",
            ),
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
                                "a stack file holds one YAML document",
                            )
                            .label("a second document starts here")
                            .help("split stacks with `include:` instead of `---`"),
                        );
                        return None;
                    }
                    continue;
                }
                Event::Alias(id) => self.alias(id, span)?,
                Event::Scalar(text, style, anchor, tag) => {
                    if tag.is_some() {
                        self.refuse_tag(span);
                    }
                    let node = Node {
                        value: resolve_scalar(&text, style),
                        span,
                    };
                    self.remember(anchor, &node);
                    node
                }
                Event::SequenceStart(_, anchor, tag) => {
                    if tag.is_some() {
                        self.refuse_tag(span);
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
                    if tag.is_some() {
                        self.refuse_tag(span);
                    }
                    if !self.push_frame(&stack, span) {
                        return None;
                    }
                    stack.push(Frame::Map {
                        start: span.start,
                        anchor,
                        entries: Vec::new(),
                        pending_key: None,
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

    fn refuse_tag(&mut self, span: Span) {
        self.diags.push(
            Diagnostic::new(
                Code::Unsupported,
                span,
                "",
                "YAML tags are not supported in stack files",
            )
            .label("tagged node")
            .help("remove the `!tag`; write the value plainly"),
        );
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
                entries,
                ..
            } => {
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
                ..
            } => match pending_key.take() {
                None => *pending_key = Some(self.key(node)),
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

    fn insert(&mut self, entries: &mut Vec<(Key, Node)>, key: Key, node: Node) {
        if key.text == "<<" {
            self.diags.push(
                Diagnostic::new(
                    Code::Unsupported,
                    key.span,
                    "",
                    "YAML merge keys (`<<`) are not supported",
                )
                .label("merge key")
                .help("repeat the keys, or move the shared part into a module"),
            );
            return;
        }
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
