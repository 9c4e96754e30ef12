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
