//! One record as expressions see it: its header fields, the first field of
//! each name the filter uses, and the enrichment auditd appended, all found
//! lazily and at most once per record, in buffers that are reused.
//!
//! Fields are found with the project's own field parser
//! ([`crate::format::fields`]), arranged the way libauparse lists a record's
//! fields, since "the first field with that name" depends on it:
//!
//! * `node` (when the record has a `node=` prefix) and `type` come first,
//!   from the header; `msg=audit(…)` is not a field;
//! * then the body's fields in order, where the `key=value` text inside a
//!   user-space record's `msg='…'` takes the place of `msg` (so `res`,
//!   `exe`, `op` of a `USER_LOGIN` are fields of the record);
//! * an SELinux `avc:  denied  { read write } for` prefix gives `seresult`
//!   (`denied`) and `seperms` (`read,write`, comma-separated as auparse
//!   writes it);
//! * the enrichment after the 0x1D byte holds no fields of the record: it
//!   only supplies interpretations (see [`super::interpret`]).
//!
//! The value "as written" (`r=`) is auparse's: quotes kept (`comm="cat"`
//! is `"cat"`), cut at the first space (auparse splits records at every
//! space, inside quotes too), and a trailing `:`, `,`, `'` or `)` dropped
//! (except in `(none)` and `(null)`).

use crate::format::fields::{Field, Fields, Key, Part, Span, Value};
use crate::record::{self, Parts};
use crate::record_types;

use super::interpret::Written;

/// Where the first field of a name was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// Not looked for yet, or not in the record.
    Missing,
    /// The header's `type=` name.
    Type,
    /// The header's `node=` name.
    Node,
    /// A field of the body (spans are offsets into the body).
    Field {
        /// The value, classified.
        value: Value,
        /// The value as written, quotes included.
        written: Span,
        /// Whether the value is in quotes.
        quoted: bool,
    },
}

/// The reusable buffers behind [`View`].
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    outer: Fields,
    nested: Fields,
    enrichment: Fields,
    slots: Vec<Found>,
    enriched: Vec<Option<(Span, bool)>>,
    /// Interpreted values and joined permission lists are built here.
    pub text: Vec<u8>,
}

/// A record being evaluated.
pub(crate) struct View<'r, 'b> {
    /// The record as given.
    pub raw: &'r [u8],
    enrichment: Option<&'r [u8]>,
    header: Option<Option<Parts<'r>>>,
    fields_found: bool,
    enrichment_found: bool,
    b: &'b mut Buffers,
}

impl<'r, 'b> View<'r, 'b> {
    /// A view of `record` (canonical text, enrichment included) for a filter
    /// that uses `slots` field names.
    pub(crate) fn new(record: &'r [u8], slots: usize, b: &'b mut Buffers) -> View<'r, 'b> {
        let (raw, enrichment) = record::split_enrichment(record);
        if b.slots.len() < slots {
            b.slots.resize(slots, Found::Missing);
            b.enriched.resize(slots, None);
        }
        View {
            raw,
            enrichment,
            header: None,
            fields_found: false,
            enrichment_found: false,
            b,
        }
    }

    /// The header, if it can be read.
    pub(crate) fn header(&mut self) -> Option<Parts<'r>> {
        *self
            .header
            .get_or_insert_with(|| record::parse_parts(self.raw))
    }

    /// The record type number, if the header can be read and names a type.
    pub(crate) fn rtype(&mut self) -> Option<u32> {
        record_types::number(self.header()?.type_name)
    }

    fn body(&mut self) -> &'r [u8] {
        match self.header() {
            Some(h) => {
                let rest = &self.raw[h.after_stamp..];
                rest.strip_prefix(b" ").unwrap_or(rest)
            }
            None => b"",
        }
    }

    /// Where the first field named `names[slot]` is.
    pub(crate) fn find(&mut self, slot: usize, names: &[String]) -> Found {
        if !self.fields_found {
            self.find_fields(names);
        }
        self.b.slots[slot]
    }

    fn find_fields(&mut self, names: &[String]) {
        self.fields_found = true;
        let header = self.header();
        let body = self.body();
        let Buffers {
            outer,
            nested,
            slots,
            ..
        } = &mut *self.b;
        let slots = &mut slots[..names.len()];
        slots.fill(Found::Missing);
        let Some(h) = header else { return };
        let mut left = names.len();
        for (slot, name) in slots.iter_mut().zip(names) {
            let found = match name.as_str() {
                "type" => Found::Type,
                "node" if h.node.is_some() => Found::Node,
                _ => continue,
            };
            *slot = found;
            left -= 1;
        }
        let rtype = record_types::number(h.type_name).unwrap_or(0);
        let (fields, _) = outer.parse(rtype, body, Part::Raw);
        for f in fields {
            if left == 0 {
                return;
            }
            match (f.key, f.value) {
                (Key::Text(k), Value::Nested(inner)) if k.of(body) == b"msg" => {
                    let text = inner.of(body);
                    for g in nested.parse(rtype, text, Part::Message).0 {
                        offer(body, g, inner.start, names, slots, &mut left);
                    }
                }
                _ => offer(body, f, 0, names, slots, &mut left),
            }
        }
    }

    /// The value of `found` as written (`r=`).
    pub(crate) fn written(&mut self, found: Found) -> &[u8] {
        match found {
            Found::Missing => b"",
            Found::Type => self.header().map_or(&b""[..], |h| h.type_name),
            Found::Node => self.header().and_then(|h| h.node).unwrap_or(b""),
            Found::Field { value, written, .. } => {
                let body = self.body();
                match value {
                    Value::Null => b"(null)",
                    Value::Words(s) => {
                        // auparse lists SELinux permissions comma-separated.
                        let t = &mut self.b.text;
                        t.clear();
                        for (i, w) in s.of(body).split(|&c| c == b' ').enumerate() {
                            if i > 0 {
                                t.push(b',');
                            }
                            t.extend_from_slice(w);
                        }
                        t
                    }
                    _ => written.of(body),
                }
            }
        }
    }

    /// The value of `found` for interpretation: without its quotes. `None`
    /// for a permission list, which is interpreted as written.
    pub(crate) fn unquoted(&mut self, found: Found) -> Option<Written<'r>> {
        let body = self.body();
        let (text, quoted) = match found {
            Found::Missing => (&b""[..], false),
            Found::Type => (self.header().map_or(&b""[..], |h| h.type_name), false),
            Found::Node => (self.header().and_then(|h| h.node).unwrap_or(b""), false),
            Found::Field {
                value,
                written,
                quoted,
            } => match value {
                Value::Words(_) => return None,
                Value::Null => (&b"(null)"[..], false),
                _ if quoted => {
                    let w = written.of(body);
                    let inner = &w[1..];
                    match inner.last() {
                        Some(&q) if q == w[0] => (&inner[..inner.len() - 1], true),
                        _ => (inner, true),
                    }
                }
                _ => (written.of(body), false),
            },
        };
        Some(Written { text, quoted })
    }

    /// What auditd's enrichment says about the field `names[slot]`: the
    /// value of its upper-case name after the 0x1D byte.
    pub(crate) fn enriched(&mut self, slot: usize, names: &[String]) -> Option<Written<'r>> {
        let enrichment = self.enrichment?;
        if !self.enrichment_found {
            self.enrichment_found = true;
            let rtype = self.rtype().unwrap_or(0);
            let found = &mut self.b.enriched[..names.len()];
            found.fill(None);
            let (fields, _) = self.b.enrichment.parse(rtype, enrichment, Part::Enrichment);
            for f in fields {
                let (Key::Text(k), Value::Str(v)) = (f.key, f.value) else {
                    continue;
                };
                let key = k.of(enrichment);
                for (slot, name) in found.iter_mut().zip(names) {
                    let same = name.len() == key.len()
                        && key
                            .iter()
                            .zip(name.bytes())
                            .all(|(a, b)| a.to_ascii_lowercase() == b);
                    if same && slot.is_none() {
                        *slot = Some((v, v.start == k.end + 2));
                    }
                }
            }
        }
        let (span, quoted) = self.b.enriched[slot]?;
        let mut text = span.of(enrichment);
        // auparse cuts these values at a space too, except a socket address.
        if !text.starts_with(b"{") {
            if let Some(p) = memchr::memchr(b' ', text) {
                text = &text[..p];
            }
        }
        Some(Written { text, quoted })
    }

    /// The buffer interpreted values are built in.
    pub(crate) fn text_buffer(&mut self) -> &mut Vec<u8> {
        &mut self.b.text
    }
}

/// Records `f` (a field of `body`, or of the text at `base` in it) as the
/// first field of its name for every slot that wants that name and has none.
fn offer(
    body: &[u8],
    f: &Field,
    base: usize,
    names: &[String],
    slots: &mut [Found],
    left: &mut usize,
) {
    let text = &body[base..];
    let (key, key_end) = match f.key {
        Key::Text(k) => (k.of(text), Some(base + k.end)),
        Key::Named("TEXT") => return,
        Key::Named(n) => (n.as_bytes(), None),
    };
    for (slot, name) in slots.iter_mut().zip(names) {
        if *slot != Found::Missing || name.as_bytes() != key {
            continue;
        }
        let (value, span) = shift(f.value, base);
        let quoted = key_end.is_some_and(|e| span.start == e + 2);
        let mut written = span;
        if quoted {
            written.start -= 1;
            if span.end < body.len() && body[span.end] == body[written.start] {
                written.end += 1;
            }
        }
        // auparse cuts records at every space, quotes or not.
        if let Some(p) = memchr::memchr(b' ', written.of(body)) {
            written.end = written.start + p;
        }
        let written = trimmed(body, written);
        *slot = Found::Field {
            value,
            written,
            quoted,
        };
        *left -= 1;
    }
}

/// `value` with its span moved `base` bytes on, and that span (empty for
/// `(null)`).
fn shift(value: Value, base: usize) -> (Value, Span) {
    let by = |s: Span| Span {
        start: s.start + base,
        end: s.end + base,
    };
    match value {
        Value::Null => (Value::Null, Span { start: 0, end: 0 }),
        Value::Str(s) => (Value::Str(by(s)), by(s)),
        Value::Hex(s) => (Value::Hex(by(s)), by(s)),
        Value::Number(s) => (Value::Number(by(s)), by(s)),
        Value::Words(s) => (Value::Words(by(s)), by(s)),
        Value::Nested(s) => (Value::Nested(by(s)), by(s)),
    }
}

/// A value as auparse keeps it: one trailing `:`, then `,`, then `'`, then
/// `)` removed, in that order, but `(none)` and `(null)` whole.
fn trimmed(body: &[u8], mut span: Span) -> Span {
    for c in [b':', b',', b'\'', b')'] {
        let v = span.of(body);
        if v.last() == Some(&c) && !(c == b')' && (v == b"(none)" || v == b"(null)")) {
            span.end -= 1;
        }
    }
    span
}
