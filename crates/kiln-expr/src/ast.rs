//! The syntax tree of a parsed expression, the public `Expr` wrapper around it, and the
//! static analysis callers need from it: references for dependency edges and a canonical
//! printed form.

use std::fmt::{self, Write as _};

use crate::functions::Builtin;
use crate::value::Value;

/// A parsed expression: its source text and syntax tree (none for an empty expression).
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub(crate) source: String,
    pub(crate) root: Option<Node>,
}

/// A context access followed by static property accesses, e.g. `needs.build.outputs.sha`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The names as written: the named value, then each property.
    pub path: Vec<String>,
    /// Byte span of the accesses that make up `path`.
    pub offset: usize,
    pub len: usize,
}

impl Expr {
    /// The expression's source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every named-value access with the static property path that follows it, in source
    /// order. The path stops before a dynamic index, a numeric index or a `*` filter.
    pub fn references(&self) -> Vec<Reference> {
        let mut out = Vec::new();
        if let Some(root) = &self.root {
            collect_references(root, &mut out);
        }
        out
    }

    /// Whether the expression is empty (evaluates to null).
    pub fn is_empty(&self) -> bool {
        self.root.is_none()
    }
}

/// Prints a canonical form that parses back to an equivalent tree.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.root {
            Some(root) => write!(f, "{root}"),
            None => Ok(()),
        }
    }
}

/// One node and its byte span in the source.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub kind: NodeKind,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NodeKind {
    Literal(Value),
    /// A context such as `github`, as written.
    NamedValue(String),
    Index {
        target: Box<Node>,
        accessor: Accessor,
    },
    Not(Box<Node>),
    Compare {
        op: CompareOp,
        left: Box<Node>,
        right: Box<Node>,
    },
    /// `a && b && c`, kept flat so long chains do not nest.
    And(Vec<Node>),
    Or(Vec<Node>),
    Call {
        /// Canonical name (the built-in's or the host signature's spelling).
        name: String,
        builtin: Option<Builtin>,
        args: Vec<Node>,
    },
    /// Parentheses; kept so printing preserves them and only these can be indexed.
    Group(Box<Node>),
}

/// What follows a value in `a.b`, `a[*]`, `a.*` or `a[expr]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Accessor {
    Star,
    Property(String),
    Expr(Box<Node>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CompareOp {
    fn symbol(self) -> &'static str {
        match self {
            CompareOp::Eq => "==",
            CompareOp::Ne => "!=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        }
    }
}

fn collect_references(node: &Node, out: &mut Vec<Reference>) {
    match &node.kind {
        NodeKind::NamedValue(_) | NodeKind::Index { .. } => collect_chain(node, out),
        NodeKind::Literal(_) => {}
        NodeKind::Not(inner) | NodeKind::Group(inner) => collect_references(inner, out),
        NodeKind::Compare { left, right, .. } => {
            collect_references(left, out);
            collect_references(right, out);
        }
        NodeKind::And(items) | NodeKind::Or(items) | NodeKind::Call { args: items, .. } => {
            items.iter().for_each(|n| collect_references(n, out));
        }
    }
}

/// Handles a maximal accessor chain `root accessor*`: one reference for a named-value root,
/// then whatever the root and the dynamic index expressions reference themselves.
fn collect_chain(top: &Node, out: &mut Vec<Reference>) {
    let mut links = Vec::new();
    let mut root = top;
    while let NodeKind::Index { target, accessor } = &root.kind {
        links.push((accessor, root.end));
        root = target;
    }
    links.reverse();
    if let NodeKind::NamedValue(name) = &root.kind {
        let mut path = vec![name.clone()];
        let mut end = root.end;
        for (accessor, link_end) in &links {
            match static_name(accessor) {
                Some(p) => path.push(p.to_owned()),
                None => break,
            }
            end = *link_end;
        }
        out.push(Reference {
            path,
            offset: root.start,
            len: end - root.start,
        });
    } else {
        collect_references(root, out);
    }
    for (accessor, _) in links {
        if let Accessor::Expr(index) = accessor {
            collect_references(index, out);
        }
    }
}

fn static_name(accessor: &Accessor) -> Option<&str> {
    match accessor {
        Accessor::Property(p) => Some(p),
        Accessor::Expr(node) => match &node.kind {
            NodeKind::Literal(Value::String(s)) => Some(s),
            _ => None,
        },
        Accessor::Star => None,
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            NodeKind::Literal(v) => write_literal(v, f),
            NodeKind::NamedValue(name) => f.write_str(name),
            NodeKind::Index { target, accessor } => {
                write!(f, "{target}")?;
                match accessor {
                    Accessor::Star => f.write_str("[*]"),
                    Accessor::Property(p) => write!(f, ".{p}"),
                    Accessor::Expr(index) => write!(f, "[{index}]"),
                }
            }
            NodeKind::Not(inner) => {
                f.write_char('!')?;
                write_operand(inner, f)
            }
            NodeKind::Compare { op, left, right } => {
                write_operand(left, f)?;
                write!(f, " {} ", op.symbol())?;
                write_operand(right, f)
            }
            NodeKind::And(items) => write_joined(items, " && ", f),
            NodeKind::Or(items) => write_joined(items, " || ", f),
            NodeKind::Call { name, args, .. } => {
                write!(f, "{name}(")?;
                for (i, arg) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{arg}")?;
                }
                f.write_char(')')
            }
            NodeKind::Group(inner) => write!(f, "({inner})"),
        }
    }
}

/// Operators bind differently, so nested operator nodes are parenthesised to keep the tree.
fn write_operand(node: &Node, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match node.kind {
        NodeKind::Compare { .. } | NodeKind::And(_) | NodeKind::Or(_) => write!(f, "({node})"),
        _ => write!(f, "{node}"),
    }
}

fn write_joined(items: &[Node], sep: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        write_operand(item, f)?;
    }
    Ok(())
}

fn write_literal(value: &Value, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match value {
        Value::String(s) => write!(f, "'{}'", s.replace('\'', "''")),
        // Rust's shortest round-trip form never uses an exponent, so the lexer reads it back.
        Value::Number(n) if n.is_nan() => f.write_str("NaN"),
        Value::Number(n) if n.is_infinite() => {
            f.write_str(if *n > 0.0 { "Infinity" } else { "-Infinity" })
        }
        Value::Number(n) => write!(f, "{n}"),
        Value::Bool(b) => write!(f, "{b}"),
        // Only scalars appear as literals; anything else prints as null.
        _ => f.write_str("null"),
    }
}
