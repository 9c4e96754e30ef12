//! The parsed form of an expression.
//!
//! An [`Expr`] is a tree of `!`, `&&`, `||`, comparisons and `\regexp`
//! searches. `&&` and `||` hold all the operands of a chain (`a && b && c`
//! is one [`Expr::All`] of three), so that a long chain, or a rule file of
//! thousands of lines, is evaluated by a loop rather than by deep
//! recursion. [`fmt::Display`] writes an expression back in the syntax it
//! was read from, fully parenthesised and with every string quoted; parsing
//! that text gives the same tree.

use std::fmt;

/// An expression.
#[derive(Debug, Clone)]
pub enum Expr {
    /// `! E`: true when `E` is false (including when `E` is a comparison
    /// with a missing field).
    Not(Box<Expr>),
    /// `E1 && E2 && …`: true when every operand is; evaluated left to right,
    /// stopping at the first false one.
    All(Vec<Expr>),
    /// `E1 || E2 || …`: true when any operand is; evaluated left to right,
    /// stopping at the first true one.
    Any(Vec<Expr>),
    /// `field op value`.
    Compare(Comparison),
    /// `\regexp "re"` or `\regexp /re/`: the regular expression is found
    /// somewhere in the record's text.
    Regexp(Pattern),
}

/// `field op value`.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// What is compared.
    pub field: Field,
    /// How.
    pub op: Operator,
    /// With what.
    pub value: Operand,
}

/// The left side of a comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// A field of the record, by name: the first one of that name.
    Named {
        /// The name as written.
        name: String,
        /// Its index in the filter's table of names (each name is looked up
        /// once per record, however often the expression uses it).
        slot: usize,
    },
    /// `\timestamp`: the event's time.
    Timestamp,
    /// `\timestamp_ex`: the event's time and serial.
    TimestampEx,
    /// `\record_type`: the record's type number.
    RecordType,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `r=`: the value as written in the record equals the string.
    RawEq,
    /// `r!=`: the value as written differs from the string.
    RawNe,
    /// `i=`: the interpreted value equals the string.
    InterpretedEq,
    /// `i!=`: the interpreted value differs from the string.
    InterpretedNe,
    /// `==`
    Eq,
    /// `!==`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Operator {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::RawEq => "r=",
            Operator::RawNe => "r!=",
            Operator::InterpretedEq => "i=",
            Operator::InterpretedNe => "i!=",
            Operator::Eq => "==",
            Operator::Ne => "!==",
            Operator::Lt => "<",
            Operator::Le => "<=",
            Operator::Gt => ">",
            Operator::Ge => ">=",
        }
    }

    /// Whether this is one of `==` `!==` `<` `<=` `>` `>=`, which compare
    /// values (numbers, times, types) rather than strings.
    pub fn is_value(self) -> bool {
        !matches!(
            self,
            Operator::RawEq | Operator::RawNe | Operator::InterpretedEq | Operator::InterpretedNe
        )
    }

    /// Applies a value operator to the result of comparing the record's
    /// value with the expression's (`Less` means the record's is smaller).
    pub(crate) fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Operator::Eq | Operator::RawEq | Operator::InterpretedEq => ord == Equal,
            Operator::Ne | Operator::RawNe | Operator::InterpretedNe => ord != Equal,
            Operator::Lt => ord == Less,
            Operator::Le => ord != Greater,
            Operator::Gt => ord == Greater,
            Operator::Ge => ord != Less,
        }
    }
}

/// The right side of a comparison, already converted for its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    /// A string (`r=`, `r!=`, `i=`, `i!=`).
    Text(String),
    /// A number (value comparison of a uid or gid field).
    Number(u32),
    /// A record type number (`\record_type`).
    RecordType(u32),
    /// `ts:SEC.MILLI[:SERIAL]` (`\timestamp`, `\timestamp_ex`).
    Timestamp {
        /// Seconds.
        sec: u64,
        /// Milliseconds, 0 to 999.
        milli: u32,
        /// Serial (`\timestamp_ex` only).
        serial: u64,
    },
}

/// A compiled `\regexp` and its source.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// The regular expression as written (escapes of the string resolved).
    pub source: String,
    /// It compiled, for bytes.
    pub regex: regex::bytes::Regex,
}

/// Writes `s` as a quoted string of the expression syntax.
fn quoted(f: &mut fmt::Formatter<'_>, s: &str, delimiter: char) -> fmt::Result {
    write!(f, "{delimiter}")?;
    for c in s.chars() {
        if c == '\\' || c == delimiter {
            write!(f, "\\")?;
        }
        write!(f, "{c}")?;
    }
    write!(f, "{delimiter}")
}

fn join(f: &mut fmt::Formatter<'_>, items: &[Expr], sep: &str) -> fmt::Result {
    write!(f, "(")?;
    for (i, e) in items.iter().enumerate() {
        if i > 0 {
            write!(f, " {sep} ")?;
        }
        write!(f, "{e}")?;
    }
    write!(f, ")")
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Not(e) => write!(f, "!{e}"),
            Expr::All(items) => join(f, items, "&&"),
            Expr::Any(items) => join(f, items, "||"),
            Expr::Compare(c) => write!(f, "{c}"),
            Expr::Regexp(p) => {
                write!(f, "\\regexp ")?;
                quoted(f, &p.source, '/')
            }
        }
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Field::Named { name, .. } => quoted(f, name, '"')?,
            Field::Timestamp => write!(f, "\\timestamp")?,
            Field::TimestampEx => write!(f, "\\timestamp_ex")?,
            Field::RecordType => write!(f, "\\record_type")?,
        }
        write!(f, " {} ", self.op.as_str())?;
        match &self.value {
            Operand::Text(s) => quoted(f, s, '"'),
            Operand::Number(n) | Operand::RecordType(n) => write!(f, "{n}"),
            Operand::Timestamp { sec, milli, serial } => {
                write!(f, "ts:{sec}.{milli:03}")?;
                if self.field == Field::TimestampEx {
                    write!(f, ":{serial}")?;
                }
                Ok(())
            }
        }
    }
}
