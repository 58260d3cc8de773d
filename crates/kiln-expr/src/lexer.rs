//! Splits an expression into tokens, following GitHub's lexical rules.
//!
//! GitHub reads "words" greedily up to a boundary character and only then decides whether the
//! word is legal, so `0x01p2`, `b@r` or `..github/workflow.md` are rejected as one symbol. The same
//! greedy reading is reproduced here so error positions and symbols match GitHub's.

use crate::error::{ParseError, ParseErrorKind};
use crate::number::parse_number;

/// What a token is. Literal payloads are decoded here so the parser does not re-scan.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TokenKind {
    LeftParen,
    RightParen,
    LeftBracket,
    RightBracket,
    Comma,
    Dot,
    Bang,
    BangEqual,
    EqualEqual,
    Greater,
    GreaterEqual,
    Less,
    LessEqual,
    And,
    Or,
    Star,
    Number(f64),
    String(String),
    Identifier,
    True,
    False,
    Null,
}

/// One token: its kind and byte span in the source.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub kind: TokenKind,
    pub start: usize,
    pub end: usize,
}

impl Token {
    /// The token's source text.
    pub fn text<'s>(&self, src: &'s str) -> &'s str {
        src.get(self.start..self.end).unwrap_or("")
    }

    /// How GitHub names the token in error messages: string literals by their value.
    pub fn describe(&self, src: &str) -> String {
        match &self.kind {
            TokenKind::String(value) => value.clone(),
            _ => self.text(src).to_owned(),
        }
    }
}

/// Tokenizes the whole of `src`.
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, ParseError> {
    Lexer {
        src,
        pos: 0,
        tokens: Vec::new(),
    }
    .run()
}

struct Lexer<'s> {
    src: &'s str,
    pos: usize,
    tokens: Vec<Token>,
}

impl Lexer<'_> {
    fn run(mut self) -> Result<Vec<Token>, ParseError> {
        while let Some(c) = self.peek() {
            let start = self.pos;
            self.pos += c.len_utf8();
            self.lex_one(c, start)?;
        }
        Ok(self.tokens)
    }

    /// Lexes the token whose first character `c` (at `start`) was just consumed.
    fn lex_one(&mut self, c: char, start: usize) -> Result<(), ParseError> {
        let simple = match c {
            '(' => TokenKind::LeftParen,
            ')' => TokenKind::RightParen,
            '[' => TokenKind::LeftBracket,
            ']' => TokenKind::RightBracket,
            ',' => TokenKind::Comma,
            '*' => TokenKind::Star,
            '!' => self.pick('=', TokenKind::BangEqual, TokenKind::Bang),
            '<' => self.pick('=', TokenKind::LessEqual, TokenKind::Less),
            '>' => self.pick('=', TokenKind::GreaterEqual, TokenKind::Greater),
            '=' | '&' | '|' => return self.double_operator(c, start),
            '.' if self.dot_is_accessor() => TokenKind::Dot,
            '.' | '-' | '+' | '0'..='9' => return self.number(start),
            ' ' | '\t' | '\r' | '\n' => return Ok(()),
            '\'' => return self.string(start),
            _ => return self.word(start),
        };
        self.push(simple, start);
        Ok(())
    }

    fn peek(&self) -> Option<char> {
        self.src
            .get(self.pos..)
            .and_then(|rest| rest.chars().next())
    }

    fn push(&mut self, kind: TokenKind, start: usize) {
        self.tokens.push(Token {
            kind,
            start,
            end: self.pos,
        });
    }

    /// Consumes `next` if it follows, choosing between a two- and a one-character operator.
    fn pick(&mut self, next: char, double: TokenKind, single: TokenKind) -> TokenKind {
        if self.peek() == Some(next) {
            self.pos += next.len_utf8();
            double
        } else {
            single
        }
    }

    /// `==`, `&&`, `||`. A lone `=`, `&` or `|` is illegal; GitHub reports it together with the
    /// rest of the word it starts (`=2`).
    fn double_operator(&mut self, c: char, start: usize) -> Result<(), ParseError> {
        if self.peek() == Some(c) {
            self.pos += 1;
            let kind = match c {
                '=' => TokenKind::EqualEqual,
                '&' => TokenKind::And,
                _ => TokenKind::Or,
            };
            self.push(kind, start);
            return Ok(());
        }
        self.skip_word(false);
        Err(self.unexpected(start))
    }

    /// A `.` is a property accessor only right after something that can be dereferenced;
    /// elsewhere it starts a number such as `.5`.
    fn dot_is_accessor(&self) -> bool {
        matches!(
            self.tokens.last().map(|t| &t.kind),
            Some(
                TokenKind::Identifier
                    | TokenKind::RightBracket
                    | TokenKind::RightParen
                    | TokenKind::Star
            )
        )
    }

    fn number(&mut self, start: usize) -> Result<(), ParseError> {
        self.skip_word(true);
        let value = parse_number(&self.src[start..self.pos]);
        if value.is_nan() {
            return Err(self.unexpected(start));
        }
        self.push(TokenKind::Number(value), start);
        Ok(())
    }

    /// A single-quoted string; `''` inside stands for one quote.
    fn string(&mut self, start: usize) -> Result<(), ParseError> {
        let mut value = String::new();
        let mut rest = self.src[self.pos..].char_indices().peekable();
        while let Some((i, c)) = rest.next() {
            if c != '\'' {
                value.push(c);
                continue;
            }
            if rest.peek().map(|&(_, n)| n) == Some('\'') {
                rest.next();
                value.push('\'');
                continue;
            }
            self.pos += i + 1;
            self.push(TokenKind::String(value), start);
            return Ok(());
        }
        // Unterminated: GitHub reports everything from the opening quote.
        self.pos = self.src.len();
        Err(self.unexpected(start))
    }

    /// Identifiers and keywords. After a `.`, keywords are plain property names (`foo.null`).
    fn word(&mut self, start: usize) -> Result<(), ParseError> {
        self.skip_word(false);
        let text = &self.src[start..self.pos];
        if !is_legal_identifier(text) {
            return Err(self.unexpected(start));
        }
        let after_dot = matches!(self.tokens.last().map(|t| &t.kind), Some(TokenKind::Dot));
        let kind = match text {
            _ if after_dot => TokenKind::Identifier,
            "true" => TokenKind::True,
            "false" => TokenKind::False,
            "null" => TokenKind::Null,
            "NaN" => TokenKind::Number(f64::NAN),
            "Infinity" => TokenKind::Number(f64::INFINITY),
            _ => TokenKind::Identifier,
        };
        self.push(kind, start);
        Ok(())
    }

    /// Advances to the next boundary character; numbers may also contain dots.
    fn skip_word(&mut self, allow_dot: bool) {
        while let Some(c) = self.peek() {
            if is_boundary(c) && !(allow_dot && c == '.') {
                break;
            }
            self.pos += c.len_utf8();
        }
    }

    fn unexpected(&self, start: usize) -> ParseError {
        let symbol = &self.src[start..self.pos];
        ParseError::located(
            ParseErrorKind::Lexing,
            "Unexpected symbol",
            symbol,
            self.src,
            start,
            self.pos - start,
        )
    }
}

fn is_boundary(c: char) -> bool {
    matches!(
        c,
        '(' | '[' | ')' | ']' | ',' | '.' | '!' | '>' | '<' | '=' | '&' | '|'
    ) || crate::number::is_js_whitespace(c)
}

/// `[A-Za-z_][A-Za-z0-9_-]*`
fn is_legal_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<TokenKind> {
        tokenize(src).unwrap().into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn operators_and_literals() {
        use TokenKind as K;
        assert_eq!(
            kinds("a.b[*] != 'it''s' && !(1 <= .5)"),
            vec![
                K::Identifier,
                K::Dot,
                K::Identifier,
                K::LeftBracket,
                K::Star,
                K::RightBracket,
                K::BangEqual,
                K::String("it's".into()),
                K::And,
                K::Bang,
                K::LeftParen,
                K::Number(1.0),
                K::LessEqual,
                K::Number(0.5),
                K::RightParen,
            ]
        );
    }

    #[test]
    fn keywords_after_dot_are_identifiers() {
        assert_eq!(kinds("x.true")[2], TokenKind::Identifier);
        assert_eq!(kinds("true"), vec![TokenKind::True]);
    }

    #[test]
    fn rejects_whole_symbols() {
        let err = tokenize("1 =2 =3").unwrap_err();
        assert_eq!((err.offset, err.len), (2, 2));
        assert!(
            err.message
                .starts_with("Unexpected symbol: '=2'. Located at position 3")
        );
        let err = tokenize("'foo").unwrap_err();
        assert_eq!(err.len, 4);
        assert!(tokenize("foo.b@r").is_err());
        assert!(tokenize("😊 x").is_err());
    }
}
