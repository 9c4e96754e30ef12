//! Reading an expression: auparse's grammar, by recursive descent.
//!
//! ```text
//! or-expression:   and-expression { "||" and-expression }
//! and-expression:  primary { "&&" primary }
//! primary:         "!" primary | "(" or-expression ")" | comparison
//! comparison:      field operator value
//!                | "\" "regexp" ( string | regexp )
//! field:           string | "\" string        (a virtual field)
//! ```
//!
//! `!` applies to the primary that follows it: `! a r= b && c r= d` is
//! `(!(a r= b)) && (c r= d)`. Values are checked against their field here,
//! so that a filter that parses never fails when it is evaluated: a value
//! operator (`==`, `<`…) needs a field that has values (a uid or gid field,
//! `\timestamp`, `\timestamp_ex`, `\record_type`), a timestamp must read
//! `ts:SECONDS.MILLI[:SERIAL]`, a record type must be known, a regexp must
//! compile.

use super::ast::{Comparison, Expr, Field, Operand, Operator, Pattern};
use super::error::ParseError;
use super::interpret;
use super::lexer::{Lexer, Spanned, Token};
use crate::record_types;

/// How deeply `(` and `!` may nest: enough for any hand-written expression,
/// and a bound on the recursion a hostile one can cause.
pub const MAX_DEPTH: usize = 100;

/// The table of field names an expression refers to; a name's index is its
/// slot (see [`Field::Named`]).
#[derive(Debug, Default, Clone)]
pub(crate) struct Names {
    /// The names, in order of first use.
    pub names: Vec<String>,
}

impl Names {
    fn slot(&mut self, name: &str) -> usize {
        match self.names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                self.names.push(name.to_string());
                self.names.len() - 1
            }
        }
    }
}

/// Parses one expression, adding the field names it uses to `names`.
pub(crate) fn parse(src: &str, names: &mut Names) -> Result<Expr, ParseError> {
    let mut lexer = Lexer::new(src);
    let current = lexer.next_token()?;
    let mut p = Parser {
        lexer,
        current,
        names,
        depth: 0,
    };
    let e = p.or()?;
    if p.current.token != Token::End {
        return Err(p.error_here(format!(
            "expected '&&', '||' or the end of the expression, found {}",
            p.current.token.describe()
        )));
    }
    Ok(e)
}

struct Parser<'s, 'n> {
    lexer: Lexer<'s>,
    current: Spanned,
    names: &'n mut Names,
    depth: usize,
}

impl Parser<'_, '_> {
    fn advance(&mut self) -> Result<Spanned, ParseError> {
        let next = self.lexer.next_token()?;
        Ok(std::mem::replace(&mut self.current, next))
    }

    fn error_at(&self, at: usize, message: String) -> ParseError {
        ParseError::new(self.lexer.source(), at, message)
    }

    fn error_here(&self, message: String) -> ParseError {
        self.error_at(self.current.at, message)
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let first = self.and()?;
        if self.current.token != Token::Or {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.current.token == Token::Or {
            self.advance()?;
            items.push(self.and()?);
        }
        Ok(Expr::Any(items))
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let first = self.primary()?;
        if self.current.token != Token::And {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.current.token == Token::And {
            self.advance()?;
            items.push(self.primary()?);
        }
        Ok(Expr::All(items))
    }

    fn nest(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_here(format!(
                "the expression nests '(' and '!' more than {MAX_DEPTH} levels deep"
            )));
        }
        Ok(())
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        match self.current.token {
            Token::Not => {
                self.nest()?;
                self.advance()?;
                let e = self.primary()?;
                self.depth -= 1;
                Ok(Expr::Not(Box::new(e)))
            }
            Token::LeftParen => {
                self.nest()?;
                let open = self.advance()?;
                let e = self.or()?;
                if self.current.token != Token::RightParen {
                    let o = self.error_at(open.at, String::new());
                    let here = self.error_here(String::new());
                    let place = if o.line == here.line {
                        format!("column {}", o.column)
                    } else {
                        format!("{}:{}", o.line, o.column)
                    };
                    let mut e = self.error_here(format!(
                        "expected ')' to close the '(' at {place}, found {}",
                        self.current.token.describe()
                    ));
                    e.opening = Some(open.at);
                    return Err(e);
                }
                self.advance()?;
                self.depth -= 1;
                Ok(e)
            }
            Token::Escape => self.escaped(),
            Token::Str(_) => self.named(),
            _ => Err(self.error_here(format!(
                "expected a comparison (FIELD OPERATOR VALUE), '\\regexp', '!' or '(', found {}",
                self.current.token.describe()
            ))),
        }
    }

    /// `\regexp …` or a comparison of a virtual field.
    fn escaped(&mut self) -> Result<Expr, ParseError> {
        let escape = self.advance()?;
        let Token::Str(name) = &self.current.token else {
            return Err(self.error_here(format!(
                "expected a field name after '\\' (regexp, timestamp, timestamp_ex or record_type), found {}",
                self.current.token.describe()
            )));
        };
        let name = name.clone();
        let field = match name.as_str() {
            "regexp" => return self.regexp(),
            "timestamp" => Field::Timestamp,
            "timestamp_ex" => Field::TimestampEx,
            "record_type" => Field::RecordType,
            other => {
                return Err(self.error_at(
                    escape.at,
                    format!(
                        "unknown field '\\{other}': expected \\regexp, \\timestamp, \\timestamp_ex or \\record_type"
                    ),
                ))
            }
        };
        self.advance()?;
        let op = self.operator(&field)?;
        let value = match (&field, op.is_value()) {
            (_, false) => {
                self.advance()?;
                self.text(op)?
            }
            (Field::RecordType, true) => {
                self.advance()?;
                self.record_type()?
            }
            (_, true) => {
                // auparse reads the timestamp from the characters after the
                // operator, not as a token: `ts:1.5` is not one word.
                let serial = field == Field::TimestampEx;
                let (_, [sec, milli, serial]) = self.lexer.timestamp(serial)?;
                self.current = self.lexer.next_token()?;
                Operand::Timestamp {
                    sec,
                    milli: milli as u32,
                    serial,
                }
            }
        };
        Ok(Expr::Compare(Comparison { field, op, value }))
    }

    /// `name op value`.
    fn named(&mut self) -> Result<Expr, ParseError> {
        let Token::Str(name) = self.advance()?.token else {
            return Err(self.error_here("expected a field name".into()));
        };
        let field = Field::Named {
            slot: self.names.slot(&name),
            name,
        };
        let op = self.operator(&field)?;
        self.advance()?;
        let value = if op.is_value() {
            self.id_number(&field)?
        } else {
            self.text(op)?
        };
        Ok(Expr::Compare(Comparison { field, op, value }))
    }

    /// The operator after `field` (the current token, left current); a
    /// value operator only if the field has values.
    fn operator(&mut self, field: &Field) -> Result<Operator, ParseError> {
        let shown = match field {
            Field::Named { name, .. } => format!("{name:?}"),
            Field::Timestamp => "\\timestamp".into(),
            Field::TimestampEx => "\\timestamp_ex".into(),
            Field::RecordType => "\\record_type".into(),
        };
        let Token::Op(op) = self.current.token else {
            return Err(self.error_here(format!(
                "expected an operator after {shown} (r= r!= i= i!= == !== < <= > >=), found {}",
                self.current.token.describe()
            )));
        };
        if let Field::Named { name, .. } = field {
            if op.is_value() && !interpret::has_value(name) {
                return Err(self.error_here(format!(
                    "field {shown} cannot be compared with '{}': only uid and gid fields (auid, uid, gid, euid…), \\timestamp, \\timestamp_ex and \\record_type have values; compare text with r= r!= (as written) or i= i!= (interpreted)",
                    op.as_str()
                )));
            }
        }
        Ok(op)
    }

    /// The string after `r=`, `r!=`, `i=` or `i!=`.
    fn text(&mut self, op: Operator) -> Result<Operand, ParseError> {
        match &self.current.token {
            Token::Str(s) => {
                let s = s.clone();
                self.advance()?;
                Ok(Operand::Text(s))
            }
            other => Err(self.error_here(format!(
                "expected a value after '{}' (a word of letters, digits, '_' and '-', or a \"quoted string\"), found {}",
                op.as_str(),
                other.describe()
            ))),
        }
    }

    /// The number a uid or gid field is compared with.
    fn id_number(&mut self, field: &Field) -> Result<Operand, ParseError> {
        let n = match &self.current.token {
            Token::Str(s) if s.bytes().all(|b| b.is_ascii_digit()) => s.parse::<u32>().ok(),
            _ => None,
        };
        let Some(n) = n else {
            let name = match field {
                Field::Named { name, .. } => name.as_str(),
                _ => "",
            };
            return Err(self.error_here(format!(
                "expected a number from 0 to 4294967295 to compare {name:?} with, found {}",
                self.current.token.describe()
            )));
        };
        self.advance()?;
        Ok(Operand::Number(n))
    }

    /// The type a `\record_type` is compared with: a name or a number.
    fn record_type(&mut self) -> Result<Operand, ParseError> {
        let n = match &self.current.token {
            Token::Str(s) => record_types::parse_admin(s),
            _ => None,
        };
        let Some(n) = n else {
            return Err(self.error_here(format!(
                "expected a record type (a name such as SYSCALL or USER_LOGIN, \"UNKNOWN[n]\", or a number), found {}",
                self.current.token.describe()
            )));
        };
        self.advance()?;
        Ok(Operand::RecordType(n))
    }

    /// `\regexp` has been read; its pattern follows.
    fn regexp(&mut self) -> Result<Expr, ParseError> {
        self.advance()?;
        let at = self.current.at;
        let source = match &self.current.token {
            Token::Str(s) | Token::Regexp(s) => s.clone(),
            other => {
                return Err(self.error_here(format!(
                    "expected a regexp after \\regexp (/re/ or \"re\"), found {}",
                    other.describe()
                )))
            }
        };
        let regex = regex::bytes::RegexBuilder::new(&source)
            .unicode(false)
            .build()
            .map_err(|e| {
                let why = e.to_string();
                let why = why
                    .lines()
                    .find_map(|l| l.strip_prefix("error: "))
                    .unwrap_or(why.trim());
                self.error_at(at, format!("invalid regexp {source:?}: {why}"))
            })?;
        self.advance()?;
        Ok(Expr::Regexp(Pattern { source, regex }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(src: &str) -> String {
        parse(src, &mut Names::default())
            .map(|e| e.to_string())
            .unwrap_or_else(|e| format!("error {e}"))
    }

    #[test]
    fn precedence_and_chains() {
        assert_eq!(
            shown("a r= 1 || b r= 2 && c r= 3 || !d i= x && e i!= y"),
            r#"("a" r= "1" || ("b" r= "2" && "c" r= "3") || (!"d" i= "x" && "e" i!= "y"))"#
        );
        assert_eq!(
            shown("!(a r= 1 || b r= 2) && ((c r= 3))"),
            r#"(!("a" r= "1" || "b" r= "2") && "c" r= "3")"#
        );
        assert_eq!(shown("!!a r= 1"), r#"!!"a" r= "1""#);
    }

    #[test]
    fn virtual_fields() {
        assert_eq!(
            shown(r"\record_type >= 1100 && \record_type <= USER_LOGIN && \record_type !== avc"),
            r"(\record_type >= 1100 && \record_type <= 1112 && \record_type !== 1400)"
        );
        assert_eq!(
            shown(r#"\record_type == "UNKNOWN[1338]""#),
            r"\record_type == 1338"
        );
        assert_eq!(
            shown(r"\timestamp > ts:1700000000.5 || \timestamp_ex == ts:1.002:99"),
            r"(\timestamp > ts:1700000000.005 || \timestamp_ex == ts:1.002:99)"
        );
        assert_eq!(
            shown(r#"\record_type r= "SYSCALL""#),
            r#"\record_type r= "SYSCALL""#
        );
        assert_eq!(
            shown(r#"\regexp "a\"b" || \regexp /x\/y/"#),
            r#"(\regexp /a"b/ || \regexp /x\/y/)"#
        );
        assert_eq!(
            shown("auid >= 1000 && gid !== 0"),
            r#"("auid" >= 1000 && "gid" !== 0)"#
        );
    }

    #[test]
    fn names_share_slots() {
        let mut names = Names::default();
        let e = parse("a r= 1 && b r= 2 || a i= 3", &mut names).unwrap();
        assert_eq!(names.names, ["a", "b"]);
        let Expr::Any(items) = e else { panic!("{e}") };
        let Expr::Compare(c) = &items[1] else {
            panic!()
        };
        assert_eq!(
            c.field,
            Field::Named {
                name: "a".into(),
                slot: 0
            }
        );
    }

    #[test]
    fn errors_say_where_and_what() {
        for (src, want) in [
            ("", "1:1: expected a comparison (FIELD OPERATOR VALUE), '\\regexp', '!' or '(', found the end of the expression"),
            ("comm", "1:5: expected an operator after \"comm\" (r= r!= i= i!= == !== < <= > >=), found the end of the expression"),
            ("comm = x", "1:6: expected an operator after \"comm\""),
            ("comm r= /x/", "1:9: expected a value after 'r=' (a word of letters, digits, '_' and '-', or a \"quoted string\"), found /x/"),
            ("cwd r= /tmp", "1:8: '/' starts a regexp (/re/), which has no closing '/' here; a path is a value in quotes: \"/tmp\""),
            ("cwd r= /tmp/", "1:8: expected a value after 'r=' (a word of letters, digits, '_' and '-', or a \"quoted string\"), found /tmp/"),
            ("comm >= 5", "1:6: field \"comm\" cannot be compared with '>='"),
            ("auid >= x", "1:9: expected a number from 0 to 4294967295 to compare \"auid\" with, found \"x\""),
            ("auid >= 4294967296", "1:9: expected a number"),
            ("a r= b c", "1:8: expected '&&', '||' or the end of the expression, found \"c\""),
            ("a r= b )", "1:8: expected '&&', '||' or the end"),
            ("(a r= b", "1:8: expected ')' to close the '(' at column 1, found the end of the expression"),
            ("(\na r= b", "2:7: expected ')' to close the '(' at 1:1"),
            ("a r= b &", "1:8: expected '&&', '||' or the end of the expression, found '&'"),
            ("a r= b && ", "1:11: expected a comparison"),
            ("\\foo == 1", "1:1: unknown field '\\foo': expected \\regexp, \\timestamp, \\timestamp_ex or \\record_type"),
            ("\\ (", "1:3: expected a field name after '\\'"),
            ("\\record_type == NOPE", "1:17: expected a record type"),
            ("\\timestamp >= 5", "1:15: found \"5\": expected a timestamp ts:SECONDS.MILLI"),
            ("\\timestamp_ex < ts:1.2", "1:17: found \"ts:1.2\" without a serial"),
            ("\\regexp (", "1:9: expected a regexp after \\regexp"),
            ("\\regexp /a{/", "1:9: invalid regexp \"a{\": "),
            ("x r= \"\\d\"", "1:7: unknown escape"),
            ("a r= b &&\n  é", "2:3: expected a comparison (FIELD OPERATOR VALUE), '\\regexp', '!' or '(', found 'é'"),
        ] {
            let got = shown(src);
            assert!(got.starts_with(&format!("error {want}")), "{src:?}: {got}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}a r= b{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(parse(&deep, &mut Names::default()).is_ok());
        let deeper = format!(
            "{}a r= b{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        let e = parse(&deeper, &mut Names::default()).unwrap_err();
        assert!(e.message.contains("more than 100 levels"), "{e}");
        let nots = format!("{}a r= b", "!".repeat(100_000));
        assert!(parse(&nots, &mut Names::default()).is_err());
        // Long chains are flat, not deep.
        let chain = vec!["a r= b"; 10_000].join(" || ");
        let Expr::Any(items) = parse(&chain, &mut Names::default()).unwrap() else {
            panic!()
        };
        assert_eq!(items.len(), 10_000);
    }

    #[test]
    fn display_parses_back_to_itself() {
        for src in [
            r#"(type r= SYSCALL && syscall i= openat && success r= no)"#,
            r#"!(a r= "q\"uo\\te" || \regexp /x\/y"z/) && uid <= 0"#,
            r"\timestamp_ex >= ts:1700000000.000:5 || \record_type == 1300",
        ] {
            let once = shown(src);
            assert_eq!(shown(&once), once, "{src}");
        }
    }
}
