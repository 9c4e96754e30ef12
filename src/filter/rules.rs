//! Rule files as auditd's `audisp-filter` reads them: one expression per
//! line, the lines ORed; blank lines and lines whose first non-blank
//! character is `#` are skipped.

use super::error::ParseError;
use super::eval::Filter;
use super::parser::{self, Names};
use crate::filter::ast::Expr;

/// Parses a rule file's text into one filter that matches a record when
/// any line's expression does. Every line is checked: the errors of all bad
/// lines are returned, each with its line number in the file. A file
/// without expressions gives a filter that matches nothing.
pub fn parse_rules(text: &str) -> Result<Filter, Vec<ParseError>> {
    let mut names = Names::default();
    let mut exprs = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match parser::parse(line, &mut names) {
            Ok(e) => exprs.push(e),
            Err(mut e) => {
                e.line = i + 1;
                errors.push(e);
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let rules = exprs.len();
    let expr = match exprs.len() {
        0 => None,
        1 => exprs.pop(),
        _ => Some(Expr::Any(exprs)),
    };
    Ok(Filter::build(expr, names, rules))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_ored_and_comments_skipped() {
        let f = parse_rules(
            "# comment\n\n   # indented comment\ntype r= SYSCALL\r\n\t\\record_type == 1100\n",
        )
        .unwrap();
        assert_eq!(f.rules(), 2);
        assert_eq!(
            f.to_string(),
            r#"("type" r= "SYSCALL" || \record_type == 1100)"#
        );
        let one = parse_rules("a r= b").unwrap();
        assert_eq!(
            (one.rules(), one.to_string()),
            (1, r#""a" r= "b""#.to_string())
        );
        let none = parse_rules("# nothing\n\n").unwrap();
        assert_eq!((none.rules(), none.to_string()), (0, "false".to_string()));
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let errs = parse_rules("ok r= 1\n  bad r=\nok r= 2\n(x r= 1\n").unwrap_err();
        let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 2);
        assert!(
            shown[0].starts_with("2:9: expected a value after 'r='"),
            "{shown:?}"
        );
        assert!(
            shown[1].starts_with("4:8: expected ')' to close the '(' at column 1"),
            "{shown:?}"
        );
    }
}
