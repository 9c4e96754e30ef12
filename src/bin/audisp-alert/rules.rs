//! The admin's rules: a filter expression, a summary template and a rate
//! limit each (`[rule.NAME]` in the option file).

use std::time::{Duration, Instant};

use audisp::filter::Filter;

use crate::event::EventFields;

/// One `[rule.NAME]`.
pub struct Rule {
    /// Its name: in the journal entry (`AUDISP_RULE=`) and the `Match`
    /// signal.
    pub name: String,
    /// Which events match: an event matches when any of its records does.
    pub filter: Filter,
    /// What the notice says.
    pub summary: Template,
    /// How many notices it may give.
    pub limit: RateLimit,
}

/// A summary with `{field}` places filled from the matching event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(String),
}

/// The summary of a rule that sets none.
pub const DEFAULT_SUMMARY: &str = "{types} event";

/// Longest value put in a summary for one `{field}`.
const MAX_PLACE: usize = 256;

impl Template {
    /// Parses `{name}` places (`{{` and `}}` for literal braces). Names are
    /// an event field (`{exe}`, `{AUID}` for auditd's interpretation) or
    /// one of `{rule}`, `{event}`, `{types}`, `{node}`.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '-' => {
                                name.push(c)
                            }
                            _ => return Err(
                                "has a '{' not closed by '}' around a field name (letters, digits, '_', '-'); write {{ for a brace"
                                    .into(),
                            ),
                        }
                    }
                    if name.is_empty() {
                        return Err("has an empty {}; name a field, such as {exe}".into());
                    }
                    if !lit.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut lit)));
                    }
                    pieces.push(Piece::Field(name));
                }
                '}' => return Err("has a '}' without '{'; write }} for a brace".into()),
                c if c.is_control() => {
                    return Err("holds a control character; a summary is one line".into())
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            pieces.push(Piece::Text(lit));
        }
        Ok(Template(pieces))
    }

    /// The summary for `event`, matched by `rule`; a field the event does
    /// not have is shown as `?`.
    pub fn render(&self, rule: &str, event: &EventFields) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(name) => {
                    let v = match name.as_str() {
                        "rule" => rule.to_string(),
                        "event" => event.id.clone(),
                        "types" => event.types.join(" "),
                        "node" => event.node.clone().unwrap_or_else(|| "?".into()),
                        field => event.first(field).map_or_else(
                            || "?".into(),
                            |v| String::from_utf8_lossy(v).into_owned(),
                        ),
                    };
                    push_one_line(&mut out, &v);
                }
            }
        }
        out
    }
}

/// Appends `v` (at most [`MAX_PLACE`] bytes of it), control characters
/// written as `?` so that a summary stays one line.
fn push_one_line(out: &mut String, v: &str) {
    let mut used = 0;
    for c in v.chars() {
        used += c.len_utf8();
        if used > MAX_PLACE {
            out.push('…');
            return;
        }
        out.push(if c.is_control() { '?' } else { c });
    }
}

/// At most `max` notices per `per` (a window that starts with the first
/// match after the last one ended); matches over the limit are counted and
/// the count goes with the next notice.
#[derive(Debug, Clone)]
pub struct RateLimit {
    max: u32,
    per: Duration,
    window: Option<Instant>,
    sent: u32,
    pending: u64,
}

impl RateLimit {
    /// `max` notices (at least 1) per `per`.
    pub fn new(max: u32, per: Duration) -> RateLimit {
        RateLimit {
            max: max.max(1),
            per,
            window: None,
            sent: 0,
            pending: 0,
        }
    }

    /// A match at `now`: `Some(suppressed)` when it may be announced, with
    /// the number of matches suppressed since the last notice; `None` when
    /// it is over the limit (it is counted).
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if self
            .window
            .is_none_or(|start| now.duration_since(start) >= self.per)
        {
            self.window = Some(now);
            self.sent = 0;
        }
        if self.sent >= self.max {
            self.pending += 1;
            return None;
        }
        self.sent += 1;
        Some(std::mem::take(&mut self.pending))
    }

    /// Matches suppressed and not yet reported.
    pub fn pending(&self) -> u64 {
        self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> EventFields {
        let mut e = EventFields::default();
        e.collect(&[(
            1300,
            &b"node=h1 type=SYSCALL msg=audit(1700000000.100:101): arch=c000003e syscall=59 success=yes exe=\"/usr/bin/bash\" uid=0 comm=2F62696E0A\x1dUID=\"root\""[..],
        )]);
        e
    }

    #[test]
    fn templates_fill_fields_and_specials() {
        let t = Template::parse(
            "{{x}} {exe} as {UID} ({uid}) on {node}: {types} {event} {rule} {nope} {comm}",
        )
        .unwrap();
        assert_eq!(
            t.render("r1", &event()),
            "{x} /usr/bin/bash as root (0) on h1: SYSCALL audit(1700000000.100:101) r1 ? /bin?"
        );
        for bad in ["{", "{exe", "a}", "{}", "{a b}", "x\ny"] {
            assert!(Template::parse(bad).is_err(), "{bad:?}");
        }
        let long = "x".repeat(1000);
        let mut out = String::new();
        push_one_line(&mut out, &long);
        assert_eq!(out.len(), MAX_PLACE + '…'.len_utf8());
    }

    #[test]
    fn over_the_limit_matches_are_counted_into_the_next_notice() {
        let t0 = Instant::now();
        let mut l = RateLimit::new(2, Duration::from_secs(60));
        assert_eq!(l.admit(t0), Some(0));
        assert_eq!(l.admit(t0), Some(0));
        assert_eq!(l.admit(t0 + Duration::from_secs(1)), None);
        assert_eq!(l.admit(t0 + Duration::from_secs(59)), None);
        assert_eq!(l.pending(), 2);
        assert_eq!(l.admit(t0 + Duration::from_secs(60)), Some(2));
        assert_eq!(l.pending(), 0);
        assert_eq!(l.admit(t0 + Duration::from_secs(61)), Some(0));
        assert_eq!(l.admit(t0 + Duration::from_secs(62)), None);
    }
}
