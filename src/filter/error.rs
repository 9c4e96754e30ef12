//! Where an expression is wrong and what was expected there.

use std::fmt;

/// A problem in an expression, with its position.
///
/// Displayed as `LINE:COLUMN: MESSAGE`. Both are 1-based; the column counts
/// characters (not bytes) from the start of the line, so it matches what an
/// editor shows for UTF-8 text. `offset` is the byte offset in the source
/// that was parsed, for callers that place the expression inside a larger
/// file (a TOML string) and compute their own position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Line of the problem, from 1.
    pub line: usize,
    /// Column of the problem in characters, from 1.
    pub column: usize,
    /// Byte offset of the problem in the parsed source.
    pub offset: usize,
    /// What is wrong, and what was expected.
    pub message: String,
    /// The byte offset of an earlier place the message names (the `(` an
    /// error says is not closed, written `at column N` or `at LINE:COLUMN`
    /// in the message), so that a caller placing the expression in a file
    /// can name it in the file's terms.
    pub opening: Option<usize>,
}

impl ParseError {
    /// A problem at byte `offset` of `src`.
    pub(crate) fn new(src: &str, offset: usize, message: String) -> ParseError {
        let offset = offset.min(src.len());
        let before = src.get(..offset).unwrap_or(src);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        ParseError {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            offset,
            message,
            opening: None,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

impl std::error::Error for ParseError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let e = ParseError::new("ab\ncdé f", 8, "x".into());
        assert_eq!((e.line, e.column, e.offset), (2, 5, 8));
        assert_eq!(e.to_string(), "2:5: x");
        let e = ParseError::new("abc", 0, "y".into());
        assert_eq!((e.line, e.column), (1, 1));
        // An offset past the end is clamped to the end.
        let e = ParseError::new("abc", 10, "z".into());
        assert_eq!((e.line, e.column, e.offset), (1, 4, 3));
    }
}
