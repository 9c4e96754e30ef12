//! Cutting an expression into tokens, each with the byte offset where it
//! starts, so that the parser can say where a problem is.
//!
//! The tokens are auparse's (`ausearch-expression(5)`): `(` `)` `\` `!`
//! `&&` `||`, the comparison operators `r=` `r!=` `i=` `i!=` `==` `!==`
//! `<` `<=` `>` `>=`, unquoted strings (ASCII letters, digits, `_` and `-`),
//! `"quoted strings"` and `/regexps/`. In the last two a backslash escapes
//! only itself and the delimiter; any other escape is an error, as in
//! auparse. Spaces, tabs and line ends between tokens are skipped.

use super::ast::Operator;
use super::error::ParseError;

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token {
    /// `(`
    LeftParen,
    /// `)`
    RightParen,
    /// `!` (not followed by `==`)
    Not,
    /// `&&`
    And,
    /// `||`
    Or,
    /// `\`, which starts a virtual field name (`\timestamp`, `\regexp`…).
    Escape,
    /// A comparison operator.
    Op(Operator),
    /// An unquoted or `"quoted"` string, escapes resolved.
    Str(String),
    /// A `/regexp/`, escapes resolved.
    Regexp(String),
    /// A character that starts no token (`=` alone, `&` alone, `.`…).
    Unknown(char),
    /// The end of the expression.
    End,
}

impl Token {
    /// How an error message shows what was found.
    pub(crate) fn describe(&self) -> String {
        match self {
            Token::LeftParen => "'('".into(),
            Token::RightParen => "')'".into(),
            Token::Not => "'!'".into(),
            Token::And => "'&&'".into(),
            Token::Or => "'||'".into(),
            Token::Escape => "'\\'".into(),
            Token::Op(op) => format!("'{}'", op.as_str()),
            Token::Str(s) => format!("{s:?}"),
            Token::Regexp(s) => format!("/{s}/"),
            Token::Unknown(c) => format!("{c:?}"),
            Token::End => "the end of the expression".into(),
        }
    }
}

/// A token and the byte offset of its first character in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spanned {
    /// The token.
    pub token: Token,
    /// Where it starts.
    pub at: usize,
}

/// Reads tokens from an expression on demand.
#[derive(Debug)]
pub(crate) struct Lexer<'s> {
    src: &'s str,
    pos: usize,
}

/// The characters of an unquoted string (auparse accepts `-` as well, though
/// its manual does not say so).
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

impl<'s> Lexer<'s> {
    /// A lexer at the start of `src`.
    pub(crate) fn new(src: &'s str) -> Lexer<'s> {
        Lexer { src, pos: 0 }
    }

    /// The source being read.
    pub(crate) fn source(&self) -> &'s str {
        self.src
    }

    fn bytes(&self) -> &'s [u8] {
        self.src.as_bytes()
    }

    fn peek_at(&self, i: usize) -> Option<u8> {
        self.bytes().get(i).copied()
    }

    fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek_at(self.pos) {
            self.pos += 1;
        }
    }

    /// The next token.
    pub(crate) fn next_token(&mut self) -> Result<Spanned, ParseError> {
        self.skip_space();
        let at = self.pos;
        let Some(b) = self.peek_at(at) else {
            return Ok(Spanned {
                token: Token::End,
                at,
            });
        };
        let two = |s: &Self, second: u8| s.peek_at(at + 1) == Some(second);
        let (token, len) = match b {
            b'(' => (Token::LeftParen, 1),
            b')' => (Token::RightParen, 1),
            b'\\' => (Token::Escape, 1),
            b'!' if two(self, b'=') && self.peek_at(at + 2) == Some(b'=') => {
                (Token::Op(Operator::Ne), 3)
            }
            b'!' => (Token::Not, 1),
            b'&' if two(self, b'&') => (Token::And, 2),
            b'|' if two(self, b'|') => (Token::Or, 2),
            b'=' if two(self, b'=') => (Token::Op(Operator::Eq), 2),
            b'<' if two(self, b'=') => (Token::Op(Operator::Le), 2),
            b'<' => (Token::Op(Operator::Lt), 1),
            b'>' if two(self, b'=') => (Token::Op(Operator::Ge), 2),
            b'>' => (Token::Op(Operator::Gt), 1),
            b'i' | b'r' if two(self, b'=') => (Token::Op(string_op(b, true)), 2),
            b'i' | b'r' if two(self, b'!') && self.peek_at(at + 2) == Some(b'=') => {
                (Token::Op(string_op(b, false)), 3)
            }
            b'"' | b'/' => {
                let text = self.delimited(b)?;
                let token = if b == b'"' {
                    Token::Str(text)
                } else {
                    Token::Regexp(text)
                };
                return Ok(Spanned { token, at });
            }
            _ if is_word(b) => {
                let len = self.bytes()[at..]
                    .iter()
                    .take_while(|&&c| is_word(c))
                    .count();
                (Token::Str(self.src[at..at + len].to_string()), len)
            }
            _ => {
                // Report the whole character, not one byte of it.
                let c = self.src[at..].chars().next().unwrap_or('\u{fffd}');
                (Token::Unknown(c), c.len_utf8())
            }
        };
        self.pos = at + len;
        Ok(Spanned { token, at })
    }

    /// The text of the `"string"` or `/regexp/` starting at the current
    /// position, escapes resolved.
    fn delimited(&mut self, delimiter: u8) -> Result<String, ParseError> {
        let at = self.pos;
        let mut text = String::new();
        let mut i = at + 1;
        loop {
            let rest = &self.src[i..];
            let Some(stop) = rest.find([delimiter as char, '\\']) else {
                let message = if delimiter == b'"' {
                    "this string has no closing '\"': expected one before the end of the expression"
                } else {
                    "'/' starts a regexp (/re/), which has no closing '/' here; a path is a value in quotes: \"/tmp\""
                };
                return Err(ParseError::new(self.src, at, message.into()));
            };
            text.push_str(&rest[..stop]);
            i += stop;
            if self.bytes()[i] == delimiter {
                break;
            }
            // A backslash: it may escape only itself or the delimiter.
            match self.peek_at(i + 1) {
                Some(c) if c == b'\\' || c == delimiter => {
                    text.push(c as char);
                    i += 2;
                }
                _ => {
                    let shown = self.src[i + 1..]
                        .chars()
                        .next()
                        .map_or_else(|| "\\ at the end".to_string(), |c| format!("\\{c}"));
                    return Err(ParseError::new(
                        self.src,
                        i,
                        format!(
                            "unknown escape {shown:?}: expected \\\\ or \\{} (the only escapes auparse defines)",
                            delimiter as char
                        ),
                    ));
                }
            }
        }
        self.pos = i + 1;
        Ok(text)
    }

    /// The value of a `\timestamp` or `\timestamp_ex` comparison, read as
    /// auparse reads it: `ts:SECONDS.MILLI`, then `:SERIAL` when `serial` is
    /// asked for. It may also be written in double quotes. Returns the
    /// offset where it starts and the seconds, milliseconds and serial.
    pub(crate) fn timestamp(&mut self, serial: bool) -> Result<(usize, [u64; 3]), ParseError> {
        self.skip_space();
        let at = self.pos;
        let quoted = self.peek_at(at) == Some(b'"');
        let (text, end) = if quoted {
            let text = self.delimited(b'"')?;
            (text, self.pos)
        } else {
            let len = self.bytes()[at..]
                .iter()
                .take_while(|&&c| is_word(c) || c == b':' || c == b'.')
                .count();
            (self.src[at..at + len].to_string(), at + len)
        };
        let form = if serial {
            "ts:SECONDS.MILLI:SERIAL"
        } else {
            "ts:SECONDS.MILLI"
        };
        let bad = |why: &str| {
            ParseError::new(
                self.src,
                at,
                format!(
                    "{why}: expected a timestamp {form} (e.g. ts:1700000000.250{})",
                    if serial { ":42" } else { "" }
                ),
            )
        };
        let shown = if text.is_empty() {
            "nothing".to_string()
        } else {
            format!("{text:?}")
        };
        let rest = text
            .strip_prefix("ts:")
            .ok_or_else(|| bad(&format!("found {shown}")))?;
        let (sec, rest) = rest
            .split_once('.')
            .ok_or_else(|| bad(&format!("found {shown}")))?;
        let (milli, serial_text) = match (serial, rest.split_once(':')) {
            (true, Some((m, s))) => (m, Some(s)),
            (true, None) => return Err(bad(&format!("found {shown} without a serial"))),
            (false, _) => (rest, None),
        };
        let number = |s: &str, max: u64| -> Option<u64> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse::<u64>().ok().filter(|&n| n <= max)
        };
        let sec = number(sec, u64::MAX).ok_or_else(|| bad(&format!("found {shown}")))?;
        let milli = number(milli, u64::MAX).ok_or_else(|| bad(&format!("found {shown}")))?;
        if milli > 999 {
            return Err(bad(&format!(
                "{milli} milliseconds is out of range (0 to 999)"
            )));
        }
        let serial = match serial_text {
            Some(s) => number(s, u64::MAX).ok_or_else(|| bad(&format!("found {shown}")))?,
            None => 0,
        };
        self.pos = end;
        Ok((at, [sec, milli, serial]))
    }
}

fn string_op(b: u8, eq: bool) -> Operator {
    match (b, eq) {
        (b'r', true) => Operator::RawEq,
        (b'r', false) => Operator::RawNe,
        (_, true) => Operator::InterpretedEq,
        (_, false) => Operator::InterpretedNe,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(src: &str) -> Vec<(Token, usize)> {
        let mut l = Lexer::new(src);
        let mut out = Vec::new();
        loop {
            let t = l.next_token().unwrap();
            let end = t.token == Token::End;
            out.push((t.token, t.at));
            if end {
                return out;
            }
        }
    }

    #[test]
    fn operators_and_words() {
        use Operator::*;
        let got = tokens("uid>=0 && !(r r= \"a\\\"b\" || i!=x)\t!==");
        assert_eq!(
            got,
            vec![
                (Token::Str("uid".into()), 0),
                (Token::Op(Ge), 3),
                (Token::Str("0".into()), 5),
                (Token::And, 7),
                (Token::Not, 10),
                (Token::LeftParen, 11),
                (Token::Str("r".into()), 12),
                (Token::Op(RawEq), 14),
                (Token::Str("a\"b".into()), 17),
                (Token::Or, 24),
                (Token::Op(InterpretedNe), 27),
                (Token::Str("x".into()), 30),
                (Token::RightParen, 31),
                (Token::Op(Ne), 33),
                (Token::End, 36),
            ]
        );
        // A word may hold '-' (old-auid); 'res' and 'items' are words, not
        // operators followed by text.
        assert_eq!(
            tokens("old-auid res items")[..3],
            [
                (Token::Str("old-auid".into()), 0),
                (Token::Str("res".into()), 9),
                (Token::Str("items".into()), 13)
            ]
        );
    }

    #[test]
    fn lone_characters_are_unknown() {
        assert_eq!(tokens("=")[0].0, Token::Unknown('='));
        assert_eq!(tokens("&")[0].0, Token::Unknown('&'));
        assert_eq!(tokens("a|b")[1].0, Token::Unknown('|'));
        assert_eq!(tokens("é")[0].0, Token::Unknown('é'));
        assert_eq!(tokens("é x")[1], (Token::Str("x".into()), 3));
    }

    #[test]
    fn regexps_and_escapes() {
        assert_eq!(tokens(r"/a\/b\\c/")[0].0, Token::Regexp(r"a/b\c".into()));
        let mut l = Lexer::new(r#"  "a\nb""#);
        let err = l.next_token().unwrap_err();
        assert_eq!((err.line, err.column), (1, 5));
        assert!(err.message.contains("unknown escape \"\\\\n\""), "{err}");
        let err = Lexer::new("  \"abc").next_token().unwrap_err();
        assert_eq!(err.column, 3);
        assert!(err.message.contains("no closing '\"'"), "{err}");
        let err = Lexer::new("/ab\\").next_token().unwrap_err();
        assert!(err.message.contains("\\\\ at the end"), "{err}");
    }

    #[test]
    fn timestamps() {
        let mut l = Lexer::new(" ts:1700000000.5 )");
        assert_eq!(l.timestamp(false).unwrap(), (1, [1_700_000_000, 5, 0]));
        assert_eq!(l.next_token().unwrap().token, Token::RightParen);
        let mut l = Lexer::new("\"ts:12.999:7\"");
        assert_eq!(l.timestamp(true).unwrap(), (0, [12, 999, 7]));
        for (src, serial, why) in [
            ("ts:1.1000", false, "out of range"),
            ("ts:1", false, "found \"ts:1\""),
            ("1.2", false, "found \"1.2\""),
            ("ts:1.2", true, "without a serial"),
            ("ts:a.2", false, "found"),
            ("", false, "found nothing"),
        ] {
            let err = Lexer::new(src).timestamp(serial).unwrap_err();
            assert!(err.message.contains(why), "{src}: {err}");
        }
    }
}
