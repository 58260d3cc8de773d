//! Error types for parsing, evaluating and templating.
//!
//! Every error carries a byte span into the text it came from so callers (kiln's diagnostics,
//! editors) can underline it; the message itself follows GitHub's wording, which embeds a
//! 1-based character position, so users see the same text GitHub would show.

use thiserror::Error;

/// Which stage rejected an expression. GitHub's test data distinguishes the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// An illegal symbol: a bad number, an unterminated string, a stray `=` and so on.
    Lexing,
    /// Legal symbols in an illegal arrangement, an unknown name, or a limit exceeded.
    Parsing,
}

/// An expression that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct ParseError {
    pub message: String,
    /// Byte offset into the parsed source.
    pub offset: usize,
    pub len: usize,
    pub kind: ParseErrorKind,
}

impl ParseError {
    /// An error without GitHub's position suffix (limits, for instance).
    pub(crate) fn new(
        kind: ParseErrorKind,
        message: impl Into<String>,
        offset: usize,
        len: usize,
    ) -> Self {
        ParseError {
            message: message.into(),
            offset,
            len,
            kind,
        }
    }

    /// `"{what}: '{symbol}'. Located at position N within expression: {src}"`, GitHub's shape.
    pub(crate) fn located(
        kind: ParseErrorKind,
        what: &str,
        symbol: &str,
        src: &str,
        offset: usize,
        len: usize,
    ) -> Self {
        let position = char_position(src, offset);
        let message =
            format!("{what}: '{symbol}'. Located at position {position} within expression: {src}");
        ParseError::new(kind, message, offset, len)
    }
}

/// GitHub counts positions in UTF-16 code units from 1.
fn char_position(src: &str, offset: usize) -> usize {
    src.get(..offset).map_or(0, |s| s.encode_utf16().count()) + 1
}

/// An expression that parsed but failed while being evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct EvalError {
    pub message: String,
    /// Byte span of the failing node in the expression source.
    pub offset: usize,
    pub len: usize,
}

impl EvalError {
    pub fn new(message: impl Into<String>, offset: usize, len: usize) -> Self {
        EvalError {
            message: message.into(),
            offset,
            len,
        }
    }
}

/// A template (a string with embedded `${{ }}`) that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct TemplateError {
    pub message: String,
    /// Byte offset into the whole template string.
    pub offset: usize,
    pub len: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_utf16_units() {
        assert_eq!(char_position("abc", 0), 1);
        assert_eq!(char_position("😊 x", 5), 4);
        let e = ParseError::located(
            ParseErrorKind::Parsing,
            "Unexpected symbol",
            "2",
            "1 2",
            2,
            1,
        );
        assert_eq!(
            e.to_string(),
            "Unexpected symbol: '2'. Located at position 3 within expression: 1 2"
        );
    }
}
