//! Recursive-descent parser with GitHub's precedence and limits.
//!
//! Precedence, loosest first: `||`, `&&`, `==`/`!=`, `<`/`<=`/`>`/`>=`, `!`, then indexing and
//! property access. Names are checked while parsing, as GitHub does: an unknown context or
//! function, or a wrong argument count, is a parse error rather than a runtime surprise.
//!
//! Nesting is limited to GitHub's depth of 50 and the source to 21,000 characters, so hostile
//! input can neither overflow the stack here nor in the (recursive) evaluator.

use crate::ast::{Accessor, CompareOp, Expr, Node, NodeKind};
use crate::error::{ParseError, ParseErrorKind};
use crate::functions::{self, Builtin};
use crate::lexer::{Token, TokenKind, tokenize};
use crate::value::{Value, eq_ignore_case};

/// GitHub's maximum nesting depth.
pub const MAX_DEPTH: usize = 50;
/// GitHub's maximum expression length, in UTF-16 code units.
pub const MAX_LENGTH: usize = 21_000;

/// A function the host provides (for example `hashFiles` or `success`), with its arity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionSig {
    pub name: &'static str,
    pub min_args: usize,
    pub max_args: usize,
}

/// The functions GitHub's workflow runner adds to the built-ins.
pub const WORKFLOW_FUNCTIONS: &[FunctionSig] = &[
    FunctionSig {
        name: "success",
        min_args: 0,
        max_args: 0,
    },
    FunctionSig {
        name: "always",
        min_args: 0,
        max_args: 0,
    },
    FunctionSig {
        name: "cancelled",
        min_args: 0,
        max_args: 0,
    },
    FunctionSig {
        name: "failure",
        min_args: 0,
        max_args: 0,
    },
    FunctionSig {
        name: "hashFiles",
        min_args: 1,
        max_args: 255,
    },
];

/// What an expression may refer to.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParseOptions<'a> {
    /// Allowed context names, case-insensitive; empty allows any name.
    pub named_values: &'a [&'a str],
    /// Host functions beyond the built-ins.
    pub extra_functions: &'a [FunctionSig],
}

/// Parses one expression (the text between `${{` and `}}`).
pub fn parse(src: &str, opts: &ParseOptions) -> Result<Expr, ParseError> {
    if src.len() > MAX_LENGTH && src.encode_utf16().count() > MAX_LENGTH {
        let message = format!("Exceeded max expression length {MAX_LENGTH}");
        return Err(ParseError::new(
            ParseErrorKind::Parsing,
            message,
            0,
            src.len(),
        ));
    }
    let tokens = tokenize(src)?;
    let mut parser = Parser {
        src,
        tokens,
        pos: 0,
        depth: 0,
        opts,
    };
    let root = if parser.tokens.is_empty() {
        None
    } else {
        Some(parser.whole()?)
    };
    Ok(Expr {
        source: src.to_owned(),
        root,
    })
}

/// How a call resolved at parse time.
struct Resolved {
    name: String,
    builtin: Option<Builtin>,
    min_args: usize,
    max_args: usize,
}

struct Parser<'s, 'o> {
    src: &'s str,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    opts: &'o ParseOptions<'o>,
}

type PResult<T> = Result<T, ParseError>;

impl Parser<'_, '_> {
    fn whole(&mut self) -> PResult<Node> {
        let node = self.expression()?;
        match self.peek() {
            Some(_) => Err(self.unexpected()),
            None => Ok(node),
        }
    }

    fn expression(&mut self) -> PResult<Node> {
        self.enter()?;
        let node = self.logical(TokenKind::Or)?;
        self.leave(1);
        Ok(node)
    }

    /// `||` chains of `&&` chains of equalities, each kept flat.
    fn logical(&mut self, op: TokenKind) -> PResult<Node> {
        let operand = |p: &mut Self| match op {
            TokenKind::Or => p.logical(TokenKind::And),
            _ => p.equality(),
        };
        let first = operand(self)?;
        if !self.check(&op) {
            return Ok(first);
        }
        self.enter()?;
        let mut items = vec![first];
        while self.eat(&op) {
            items.push(operand(self)?);
        }
        self.leave(1);
        let (start, end) = (items[0].start, items.last().map_or(0, |n| n.end));
        let kind = if op == TokenKind::Or {
            NodeKind::Or(items)
        } else {
            NodeKind::And(items)
        };
        Ok(Node { kind, start, end })
    }

    fn equality(&mut self) -> PResult<Node> {
        self.binary_chain(Self::comparison, |k| match k {
            TokenKind::EqualEqual => Some(CompareOp::Eq),
            TokenKind::BangEqual => Some(CompareOp::Ne),
            _ => None,
        })
    }

    fn comparison(&mut self) -> PResult<Node> {
        self.binary_chain(Self::unary, |k| match k {
            TokenKind::Less => Some(CompareOp::Lt),
            TokenKind::LessEqual => Some(CompareOp::Le),
            TokenKind::Greater => Some(CompareOp::Gt),
            TokenKind::GreaterEqual => Some(CompareOp::Ge),
            _ => None,
        })
    }

    /// Left-associative chain. Each operator counts towards the depth limit because the tree
    /// it builds nests to the left (GitHub does not count these, but an unbounded chain would
    /// make evaluation recurse without limit).
    fn binary_chain(
        &mut self,
        operand: fn(&mut Self) -> PResult<Node>,
        op_of: fn(&TokenKind) -> Option<CompareOp>,
    ) -> PResult<Node> {
        let mut left = operand(self)?;
        let mut levels = 0;
        while let Some(op) = self.peek().and_then(|t| op_of(&t.kind)) {
            self.pos += 1;
            self.enter()?;
            levels += 1;
            let right = operand(self)?;
            let (start, end) = (left.start, right.end);
            let kind = NodeKind::Compare {
                op,
                left: Box::new(left),
                right: Box::new(right),
            };
            left = Node { kind, start, end };
        }
        self.leave(levels);
        Ok(left)
    }

    fn unary(&mut self) -> PResult<Node> {
        let Some(bang) = self
            .peek()
            .filter(|t| t.kind == TokenKind::Bang)
            .map(|t| t.start)
        else {
            return self.postfix();
        };
        self.pos += 1;
        self.enter()?;
        let operand = self.unary()?;
        self.leave(1);
        let end = operand.end;
        Ok(Node {
            kind: NodeKind::Not(Box::new(operand)),
            start: bang,
            end,
        })
    }

    /// Indexing and property access; only groups, calls and contexts can be dereferenced.
    fn postfix(&mut self) -> PResult<Node> {
        let mut node = self.call()?;
        if !matches!(
            node.kind,
            NodeKind::Group(_) | NodeKind::Call { .. } | NodeKind::NamedValue(_)
        ) {
            return Ok(node);
        }
        let mut levels = 0;
        loop {
            let (accessor, end) = if self.eat(&TokenKind::LeftBracket) {
                self.bracket_accessor()?
            } else if self.eat(&TokenKind::Dot) {
                self.dot_accessor()?
            } else {
                break;
            };
            self.enter()?;
            levels += 1;
            let start = node.start;
            node = Node {
                kind: NodeKind::Index {
                    target: Box::new(node),
                    accessor,
                },
                start,
                end,
            };
        }
        self.leave(levels);
        Ok(node)
    }

    /// After `[`: `*]` or `expr]`.
    fn bracket_accessor(&mut self) -> PResult<(Accessor, usize)> {
        let accessor = if self.eat(&TokenKind::Star) {
            Accessor::Star
        } else {
            Accessor::Expr(Box::new(self.expression()?))
        };
        let end = self.expect(&TokenKind::RightBracket)?;
        Ok((accessor, end))
    }

    /// After `.`: a property name or `*`.
    fn dot_accessor(&mut self) -> PResult<(Accessor, usize)> {
        let Some(token) = self.peek().cloned() else {
            return Err(self.unexpected());
        };
        let accessor = match token.kind {
            TokenKind::Identifier => Accessor::Property(token.text(self.src).to_owned()),
            TokenKind::Star => Accessor::Star,
            _ => return Err(self.unexpected()),
        };
        self.pos += 1;
        Ok((accessor, token.end))
    }

    /// A context name or a function call.
    fn call(&mut self) -> PResult<Node> {
        let Some(ident) = self
            .peek()
            .filter(|t| t.kind == TokenKind::Identifier)
            .cloned()
        else {
            return self.primary();
        };
        self.pos += 1;
        let name = ident.text(self.src);
        if !self.check(&TokenKind::LeftParen) {
            self.check_named_value(&ident)?;
            return Ok(Node {
                kind: NodeKind::NamedValue(name.to_owned()),
                start: ident.start,
                end: ident.end,
            });
        }
        self.pos += 1;
        let mut args = Vec::new();
        let end = match self.eat_end(&TokenKind::RightParen) {
            Some(end) => end,
            // A trailing comma is rejected: after a comma an argument must follow.
            None => loop {
                args.push(self.expression()?);
                if let Some(end) = self.eat_end(&TokenKind::RightParen) {
                    break end;
                }
                self.expect(&TokenKind::Comma)?;
            },
        };
        let resolved = self.resolve_function(&ident, args.len())?;
        let kind = NodeKind::Call {
            name: resolved.name,
            builtin: resolved.builtin,
            args,
        };
        Ok(Node {
            kind,
            start: ident.start,
            end,
        })
    }

    fn check_named_value(&self, ident: &Token) -> PResult<()> {
        let name = ident.text(self.src);
        let allowed = self.opts.named_values;
        if allowed.is_empty() || allowed.iter().any(|n| eq_ignore_case(n, name)) {
            return Ok(());
        }
        Err(self.error_at(ident, "Unrecognized named-value"))
    }

    /// Looks the function up (built-ins first) and checks its argument count.
    fn resolve_function(&self, ident: &Token, argc: usize) -> PResult<Resolved> {
        let name = ident.text(self.src);
        let resolved = if let Some((builtin, sig)) = functions::lookup(name) {
            Resolved {
                name: sig.name.to_owned(),
                builtin: Some(builtin),
                min_args: sig.min_args,
                max_args: sig.max_args,
            }
        } else if let Some(sig) = self
            .opts
            .extra_functions
            .iter()
            .find(|s| eq_ignore_case(s.name, name))
        {
            Resolved {
                name: sig.name.to_owned(),
                builtin: None,
                min_args: sig.min_args,
                max_args: sig.max_args,
            }
        } else {
            return Err(self.error_at(ident, "Unrecognized function"));
        };
        if argc < resolved.min_args {
            return Err(self.error_at(ident, "Too few parameters supplied"));
        }
        if argc > resolved.max_args {
            return Err(self.error_at(ident, "Too many parameters supplied"));
        }
        if resolved.builtin == Some(Builtin::Case) && argc.is_multiple_of(2) {
            let what = "Even number of parameters supplied, requires an odd number of parameters";
            return Err(self.error_at(ident, what));
        }
        Ok(resolved)
    }

    fn primary(&mut self) -> PResult<Node> {
        let Some(token) = self.peek().cloned() else {
            return Err(self.unexpected());
        };
        let literal = match &token.kind {
            TokenKind::True => Value::Bool(true),
            TokenKind::False => Value::Bool(false),
            TokenKind::Null => Value::Null,
            TokenKind::Number(n) => Value::Number(*n),
            TokenKind::String(s) => Value::String(s.clone()),
            TokenKind::LeftParen => return self.group(token.start),
            _ => return Err(self.unexpected()),
        };
        self.pos += 1;
        Ok(Node {
            kind: NodeKind::Literal(literal),
            start: token.start,
            end: token.end,
        })
    }

    fn group(&mut self, start: usize) -> PResult<Node> {
        self.pos += 1;
        let inner = self.expression()?;
        let end = self.expect(&TokenKind::RightParen)?;
        Ok(Node {
            kind: NodeKind::Group(Box::new(inner)),
            start,
            end,
        })
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn check(&self, kind: &TokenKind) -> bool {
        self.peek().is_some_and(|t| &t.kind == kind)
    }

    fn eat(&mut self, kind: &TokenKind) -> bool {
        self.eat_end(kind).is_some()
    }

    /// Consumes a token of `kind`, returning its end offset.
    fn eat_end(&mut self, kind: &TokenKind) -> Option<usize> {
        let end = self.peek().filter(|t| &t.kind == kind)?.end;
        self.pos += 1;
        Some(end)
    }

    fn expect(&mut self, kind: &TokenKind) -> PResult<usize> {
        self.eat_end(kind).ok_or_else(|| self.unexpected())
    }

    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let (offset, len) = self
                .peek()
                .map_or((self.src.len(), 0), |t| (t.start, t.end - t.start));
            let message = format!("Exceeded max expression depth {MAX_DEPTH}");
            return Err(ParseError::new(
                ParseErrorKind::Parsing,
                message,
                offset,
                len,
            ));
        }
        Ok(())
    }

    fn leave(&mut self, levels: usize) {
        self.depth -= levels;
    }

    /// The next token is not what the grammar allows here; at the end of input GitHub names
    /// the last token instead.
    fn unexpected(&self) -> ParseError {
        match self.peek() {
            Some(token) => self.error_at(token, "Unexpected symbol"),
            None => match self.tokens.last() {
                Some(last) => self.error_at(last, "Unexpected end of expression"),
                None => ParseError::new(
                    ParseErrorKind::Parsing,
                    "Unexpected end of expression",
                    0,
                    0,
                ),
            },
        }
    }

    fn error_at(&self, token: &Token, what: &str) -> ParseError {
        let symbol = token.describe(self.src);
        let len = token.end - token.start;
        ParseError::located(
            ParseErrorKind::Parsing,
            what,
            &symbol,
            self.src,
            token.start,
            len,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(src: &str) -> Expr {
        parse(src, &ParseOptions::default()).unwrap()
    }

    fn err(src: &str) -> ParseError {
        parse(src, &ParseOptions::default()).unwrap_err()
    }

    #[test]
    fn precedence_prints_back() {
        assert_eq!(
            ok("a || b && c == d < e").to_string(),
            "a || (b && (c == (d < e)))"
        );
        assert_eq!(ok("!a.b[*].c['d']").to_string(), "!a.b[*].c['d']");
        assert_eq!(ok("(1)").to_string(), "(1)");
        assert_eq!(
            ok("FORMAT('{0}', 'it''s')").to_string(),
            "format('{0}', 'it''s')"
        );
    }

    #[test]
    fn empty_expression() {
        assert!(ok("  ").is_empty());
    }

    #[test]
    fn syntax_errors_name_the_symbol() {
        assert!(
            err("1 2")
                .message
                .starts_with("Unexpected symbol: '2'. Located at position 3")
        );
        assert!(
            err("1 <")
                .message
                .starts_with("Unexpected end of expression: '<'")
        );
        assert!(
            err("f(1)")
                .message
                .starts_with("Unrecognized function: 'f'")
        );
        assert!(
            err("format('a',)")
                .message
                .starts_with("Unexpected symbol: ')'")
        );
        assert!(
            err("join()")
                .message
                .starts_with("Too few parameters supplied: 'join'")
        );
        assert!(
            err("case(true, 1, false, 2)")
                .message
                .starts_with("Even number of parameters")
        );
        assert_eq!(err("a.1").kind, ParseErrorKind::Parsing);
    }

    #[test]
    fn named_values_and_extra_functions_are_checked() {
        let opts = ParseOptions {
            named_values: &["github"],
            extra_functions: WORKFLOW_FUNCTIONS,
        };
        assert!(parse("GitHub.sha && success() && hashFiles('x', 'y')", &opts).is_ok());
        let e = parse("env.X", &opts).unwrap_err();
        assert!(e.message.starts_with("Unrecognized named-value: 'env'"));
        assert!(parse("success(1)", &opts).is_err());
        assert!(parse("success()", &ParseOptions::default()).is_err());
    }

    #[test]
    fn limits() {
        let deep = format!("{}1{}", "(".repeat(60), ")".repeat(60));
        assert!(
            err(&deep)
                .message
                .contains("Exceeded max expression depth 50")
        );
        let chain = vec!["1"; 100].join(" == ");
        assert!(err(&chain).message.contains("depth"));
        // Hostile shapes just under the length limit fail cleanly instead of recursing.
        for hostile in [
            "(".repeat(20_000),
            "!".repeat(20_000),
            "[".repeat(20_000),
            format!("a{}", ".b".repeat(10_000)),
            format!("a{}", "[0]".repeat(6_000)),
            "f(".repeat(10_000),
            vec!["1"; 5_000].join("<"),
        ] {
            assert!(parse(&hostile, &ParseOptions::default()).is_err());
        }
        let long = format!("'{}'", "a".repeat(MAX_LENGTH));
        assert!(err(&long).message.contains("max expression length"));
    }

    #[test]
    fn references_stop_at_dynamic_parts() {
        let e = ok(
            "resources.migrate.outputs.version == services['api'].url && a.b[0].c && x[y.z].w && f.*.g",
        );
        let paths: Vec<Vec<String>> = e.references().into_iter().map(|r| r.path).collect();
        let expected: Vec<Vec<&str>> = vec![
            vec!["resources", "migrate", "outputs", "version"],
            vec!["services", "api", "url"],
            vec!["a", "b"],
            vec!["x"],
            vec!["y", "z"],
            vec!["f"],
        ];
        assert_eq!(paths, expected);
        let r = &ok("  needs.build['out'] ").references()[0];
        assert_eq!((r.offset, r.len), (2, 18));
    }
}
