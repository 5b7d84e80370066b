//! Why RE2 refuses a pattern, in RE2's own words (`RegexpStatus::Text`).

use std::{fmt, ops::Range};

/// What RE2's parser objects to (`RegexpStatusCode`), displayed as RE2 says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// `\q`, `\8`, `\x{100}` in Latin-1, ...
    BadEscape,
    /// `[z-a]`, an unknown `\p{...}` or `[:name:]`.
    BadCharRange,
    /// A class without its `]`.
    MissingBracket,
    /// A group without its `)`.
    MissingParen,
    /// A `)` without its group.
    UnexpectedParen,
    /// A `\` at the very end.
    TrailingBackslash,
    /// `*`, `+`, `?` or `{n}` with nothing before it.
    RepeatArgument,
    /// `{n,m}` with `m < n`, or a count above 1000 (alone or multiplied by nesting).
    RepeatSize,
    /// Two repetition operators in a row, e.g. `a**`.
    RepeatOp,
    /// `(?` followed by what RE2 does not support: look-around, unknown flags.
    BadPerlOp,
    /// What RE2 reports when a pattern ends inside `\x{`.
    BadUtf8,
    /// `(?P<name>` with a bad or missing name.
    BadNamedCapture,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorCode::BadEscape => "invalid escape sequence",
            ErrorCode::BadCharRange => "invalid character class range",
            ErrorCode::MissingBracket => "missing ]",
            ErrorCode::MissingParen => "missing )",
            ErrorCode::UnexpectedParen => "unexpected )",
            ErrorCode::TrailingBackslash => "trailing \\",
            ErrorCode::RepeatArgument => "no argument for repetition operator",
            ErrorCode::RepeatSize => "invalid repetition size",
            ErrorCode::RepeatOp => "bad repetition operator",
            ErrorCode::BadPerlOp => "invalid perl operator",
            ErrorCode::BadUtf8 => "invalid UTF-8",
            ErrorCode::BadNamedCapture => "invalid named capture group",
        })
    }
}

/// A pattern RE2 cannot parse: what is wrong and the part of the pattern at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct SyntaxError {
    /// What is wrong.
    pub code: ErrorCode,
    /// The part of the pattern at fault (empty when RE2 names none).
    pub arg: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.arg.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.arg)
        }
    }
}

/// A syntax error while parsing: the code and the span of the pattern it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ParseError {
    pub(crate) code: ErrorCode,
    pub(crate) span: Range<usize>,
}

impl ParseError {
    pub(crate) fn new(code: ErrorCode, span: Range<usize>) -> ParseError {
        ParseError { code, span }
    }

    /// The error in the user's terms: the span is of the pattern's bytes, which Latin-1
    /// RE2 reads one character each. A span that cuts a UTF-8 character is shown as RE2
    /// shows it, byte by byte.
    pub(crate) fn describe(self, pattern: &str) -> SyntaxError {
        let bytes = pattern.as_bytes();
        let span = &bytes[self.span.start.min(bytes.len())..self.span.end.min(bytes.len())];
        let arg = match std::str::from_utf8(span) {
            Ok(text) => text.to_owned(),
            Err(_) => span.iter().map(|&b| char::from(b)).collect(),
        };
        SyntaxError {
            code: self.code,
            arg,
        }
    }
}

/// What parsing returns.
pub(crate) type ParseResult<T> = Result<T, ParseError>;
