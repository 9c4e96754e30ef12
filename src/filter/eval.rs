//! A compiled filter and its evaluation against one record.
//!
//! [`Filter`] is immutable, cheap to clone (one reference count) and shared
//! between threads; each thread evaluates with its own [`Scratch`], whose
//! buffers are reused from record to record, so that evaluation does not
//! allocate once they have grown to fit (the first few records).
//!
//! Evaluation never fails: a comparison whose field the record lacks is
//! false (so its `!` is true), as are `r=`/`i=` on the virtual fields
//! (which have no text); an `EOE` record and a record whose header cannot
//! be read match nothing, as in libauparse, which never shows them to an
//! expression.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use super::ast::{Comparison, Expr, Field, Operand, Operator};
use super::error::ParseError;
use super::interpret::parse_id;
use super::parser::{self, Names};
use super::view::{Buffers, Name, View};
use crate::record_types;

/// A parsed filter expression, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Filter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `None`: a rule file without rules, which matches nothing.
    expr: Option<Expr>,
    /// The field names the expression uses, by slot, ready to search for.
    names: Vec<Name>,
    rules: usize,
    /// The record type a record must have for the expression to be true
    /// (a `type r= NAME` or `\record_type == N` that the whole expression
    /// requires), if there is one: a record of another type is decided by
    /// its type number alone ([`Filter::matches_typed`]).
    required_type: Option<u32>,
}

/// Per-thread buffers for [`Filter::matches`].
#[derive(Debug, Default)]
pub struct Scratch {
    buffers: Buffers,
}

impl Scratch {
    /// Empty buffers; they grow to fit the records evaluated.
    pub fn new() -> Scratch {
        Scratch::default()
    }
}

impl Filter {
    /// Parses one expression in auparse's syntax (`ausearch-expression(5)`).
    /// Errors carry the line and column (see [`ParseError`]).
    pub fn parse(src: &str) -> Result<Filter, ParseError> {
        let mut names = Names::default();
        let expr = parser::parse(src, &mut names)?;
        Ok(Filter::build(Some(expr), names, 1))
    }

    /// A filter from the expressions of a rule file, ORed (see
    /// [`super::rules`]); no expression at all matches nothing.
    pub(crate) fn build(expr: Option<Expr>, names: Names, rules: usize) -> Filter {
        Filter {
            inner: Arc::new(Inner {
                required_type: expr.as_ref().and_then(required_type),
                expr,
                names: names.names.iter().map(|n| Name::new(n)).collect(),
                rules,
            }),
        }
    }

    /// The expression; `None` for a rule file without rules.
    pub fn expr(&self) -> Option<&Expr> {
        self.inner.expr.as_ref()
    }

    /// How many expressions (rule-file lines) were ORed into this filter.
    pub fn rules(&self) -> usize {
        self.inner.rules
    }

    /// Whether the expression is true for `record`, a record in audisp's
    /// canonical text form (`[node=…] type=… msg=audit(…): fields`, with
    /// auditd's ENRICHED part after a 0x1D byte if it has one, without a
    /// newline). An `EOE` record, or a record whose header cannot be read,
    /// is never a match: libauparse drops them before expressions see an
    /// event, so they follow their event's decision (see
    /// [`super::WholeEvents`]).
    pub fn matches(&self, record: &[u8], scratch: &mut Scratch) -> bool {
        let Some(expr) = &self.inner.expr else {
            return false;
        };
        let mut e = Evaluation {
            names: &self.inner.names,
            view: View::new(record, &mut scratch.buffers),
        };
        // libauparse drops EOE records, and records it cannot read the type
        // of: no expression ever sees them. They go with their event.
        match e.view.header() {
            Some(h) if h.type_name != b"EOE" => {}
            _ => return false,
        }
        e.eval(expr)
    }
}

impl Filter {
    /// [`Filter::matches`] for a record whose type number `rtype` was read
    /// from its own header (`None`: unknown, e.g. a record whose header did
    /// not parse): a record of a type the expression excludes, and an
    /// `EOE`, are decided without reading the record again.
    pub fn matches_typed(&self, record: &[u8], rtype: Option<u32>, scratch: &mut Scratch) -> bool {
        if let Some(t) = rtype {
            if t == record_types::EOE || self.inner.required_type.is_some_and(|want| want != t) {
                return false;
            }
        }
        self.matches(record, scratch)
    }
}

/// The record type `e` requires: `type r= NAME` (a name with a number:
/// `type=NAME` in a header always has that number) or `\record_type == N`,
/// alone or as one of the clauses of an `&&`.
fn required_type(e: &Expr) -> Option<u32> {
    match e {
        Expr::Compare(c) => match (&c.field, c.op, &c.value) {
            (Field::Named { name, .. }, Operator::RawEq, Operand::Text(t)) if name == "type" => {
                record_types::number(t.as_bytes())
            }
            (Field::RecordType, Operator::Eq, Operand::RecordType(n)) => Some(*n),
            _ => None,
        },
        Expr::All(items) => items.iter().find_map(required_type),
        _ => None,
    }
}

impl fmt::Display for Filter {
    /// The expression, fully parenthesised (`false` for an empty rule file).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.expr {
            Some(e) => write!(f, "{e}"),
            None => write!(f, "false"),
        }
    }
}

impl std::str::FromStr for Filter {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Filter, ParseError> {
        Filter::parse(s)
    }
}

struct Evaluation<'f, 'r, 'b> {
    names: &'f [Name],
    view: View<'r, 'b>,
}

impl Evaluation<'_, '_, '_> {
    fn eval(&mut self, e: &Expr) -> bool {
        match e {
            Expr::Not(inner) => !self.eval(inner),
            Expr::All(items) => {
                for item in items {
                    if !self.eval(item) {
                        return false;
                    }
                }
                true
            }
            Expr::Any(items) => {
                for item in items {
                    if self.eval(item) {
                        return true;
                    }
                }
                false
            }
            Expr::Regexp(p) => p.regex.is_match(self.view.raw()),
            Expr::Compare(c) => self.compare(c),
        }
    }

    fn compare(&mut self, c: &Comparison) -> bool {
        let ord = match (&c.field, &c.value) {
            (Field::Named { slot, .. }, Operand::Text(want)) => {
                let name = &self.names[*slot];
                let found = self.view.find_slot(*slot, name);
                let got = match c.op {
                    Operator::RawEq | Operator::RawNe => self.view.written(found),
                    _ => self.view.interpreted(found, name),
                };
                // A missing field (or one without a value) makes every
                // comparison false.
                let Some(got) = got else { return false };
                if got == want.as_bytes() {
                    Ordering::Equal
                } else {
                    Ordering::Less
                }
            }
            (Field::Named { slot, .. }, Operand::Number(want)) => {
                let found = self.view.find_slot(*slot, &self.names[*slot]);
                let Some(got) = self.view.written(found) else {
                    return false;
                };
                // auparse reads the value with strtoul: no digits is 0.
                parse_id(got).unwrap_or(0).cmp(want)
            }
            (Field::RecordType, Operand::RecordType(want)) => match self.view.rtype() {
                Some(t) => t.cmp(want),
                None => return false,
            },
            (Field::Timestamp, Operand::Timestamp { sec, milli, .. }) => {
                let Some(h) = self.view.header() else {
                    return false;
                };
                (h.time.sec, h.time.msec).cmp(&(*sec, *milli))
            }
            (Field::TimestampEx, Operand::Timestamp { sec, milli, serial }) => {
                let Some(h) = self.view.header() else {
                    return false;
                };
                (h.time.sec, h.time.msec, h.serial).cmp(&(*sec, *milli, *serial))
            }
            // Text comparisons of virtual fields: they have no text.
            _ => return false,
        };
        c.op.holds(ord)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record;

    #[test]
    fn a_type_the_expression_requires_is_found_in_every_form() {
        let required = |src: &str| Filter::parse(src).unwrap().inner.required_type;
        assert_eq!(required("type r= SYSCALL"), Some(record_types::SYSCALL));
        assert_eq!(
            required("uid r= 0 && (a r= 1 || b r= 2) && type r= PATH"),
            Some(1302)
        );
        assert_eq!(required(r"\record_type == EXECVE && a0 r= x"), Some(1309));
        // Not required: an alternative, a negation, another operator, a
        // name with no number.
        for src in [
            "type r= SYSCALL || type r= PATH",
            "!type r= SYSCALL",
            "type r!= SYSCALL",
            "type i= SYSCALL",
            r"\record_type >= 1300",
            "type r= syscall",
        ] {
            assert_eq!(required(src), None, "{src}");
        }
    }

    /// Deciding by the journal's type number gives what reading the record
    /// gives, for every record of the sample.
    #[test]
    fn matches_typed_agrees_with_matches_on_the_sample() {
        let data = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/sample.log"
        ))
        .expect("tests/data/sample.log");
        let mut scratch = Scratch::new();
        for src in [
            "type r= SYSCALL && syscall i= unlinkat && success r= yes",
            r#"type r= SYSCALL && (syscall i= openat || exe i= "/usr/bin/rm")"#,
            r"\record_type == PATH && nametype r= CREATE",
            "type r= EOE || type r= CWD",
            r#"\regexp "a""#,
        ] {
            let f = Filter::parse(src).unwrap();
            let mut matched = 0;
            for r in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let rtype = record::parse(r).map(|i| i.rtype);
                let want = f.matches(r, &mut scratch);
                assert_eq!(
                    f.matches_typed(r, rtype, &mut scratch),
                    want,
                    "{src}: {}",
                    String::from_utf8_lossy(r)
                );
                matched += usize::from(want);
            }
            assert!(matched > 0, "{src} matches some record of the sample");
        }
        // Another type, and EOE, are decided without the text.
        let f = Filter::parse("type r= SYSCALL").unwrap();
        assert!(!f.matches_typed(b"type=SYSCALL garbage", Some(1302), &mut scratch));
        assert!(!f.matches_typed(
            b"type=SYSCALL garbage",
            Some(record_types::EOE),
            &mut scratch
        ));
    }
}
