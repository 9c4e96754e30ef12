//! One record as expressions see it: libauparse's list of the record's
//! fields, looked up by name, lazily, without building the list.
//!
//! Expressions are defined on libauparse's view of a record
//! (`ausearch-expression(5)`: "the first field with that name within the
//! current audit record"), and that view is not a parse of `key=value`
//! syntax: libauparse cuts the record (up to the 0x1D byte that starts
//! auditd's enrichment) at every space, quotes or not, and each piece that
//! holds a `=` is a field named by what precedes the first `=`. So:
//!
//! * `node` (when the record has a `node=` prefix) and `type` come first,
//!   from the header; `msg=audit(…):` is not a field;
//! * a value is what follows the `=` up to the next space — quotes kept
//!   (`comm="cat"` is `"cat"`), a quoted value holding a space cut there —
//!   less one trailing `:`, `,`, `'` and `)` (but `(none)` and `(null)`
//!   stay whole); a field with an empty value is skipped;
//! * a piece starting `msg='` (a user-space record's message) is a field
//!   named by what follows the quote: `msg='op=login …` gives `op`, so the
//!   message's fields are fields of the record; any other piece starting
//!   `msg=a` is skipped, and a leading `(` of a name is dropped;
//! * `key` holding hex text is several keys separated by 0x01; the first
//!   one is the field, written in quotes (in hex if it is not printable);
//! * in a kernel `AVC` record the words before the fields give `seresult`
//!   (`denied`) and `seperms` (`read,write`, comma-separated);
//! * the enrichment holds no fields of the record; it supplies
//!   interpretations ([`View::enriched`], [`super::interpret`]).
//!
//! Because fields are plain text runs, the first field of a name is found by
//! searching the record for `name=` where a piece starts — a few
//! nanoseconds, however long the record — rather than by parsing all of it
//! (the `key=value` parser of [`crate::format::fields`] follows quotes and
//! free text for JSON, a different and much costlier model).
//! `tests/filter_auparse.rs` checks the result against libauparse itself.

use memchr::memmem::Finder;

use crate::format::fields::{decode_hex, is_hex};
use crate::record::{self, Parts};
use crate::record_types;

use super::interpret;

/// A field name compiled for searching: `name=` in the body, `NAME=` in
/// the enrichment.
#[derive(Debug, Clone)]
pub(crate) struct Name {
    /// The name.
    pub text: String,
    raw: Finder<'static>,
    enriched: Finder<'static>,
}

impl Name {
    /// Compiles `name`.
    pub(crate) fn new(name: &str) -> Name {
        Name {
            text: name.to_string(),
            raw: Finder::new(format!("{name}=").as_bytes()).into_owned(),
            enriched: Finder::new(format!("{}=", name.to_ascii_uppercase()).as_bytes())
                .into_owned(),
        }
    }
}

/// Where a field was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// Not in the record.
    Missing,
    /// The header's `type=` name.
    Type,
    /// The header's `node=` name.
    Node,
    /// A value of the body, `start..end` (after auparse's trimming).
    Value(usize, usize),
    /// A value built in the view's text buffer (`seperms`, a `key` list).
    Built,
    /// A field whose value auparse could not read (a `key` that is neither
    /// quoted, `(null)` nor hex): present, but every comparison is false.
    Unreadable,
}

/// The reusable buffers behind [`View`].
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    /// Decoded keys; interpreted values.
    text: Vec<u8>,
    /// Values built from several pieces (`seperms`, a key list).
    built: Vec<u8>,
    /// Interpreted values with control characters escaped.
    escaped: Vec<u8>,
    /// Which record is being evaluated (a count), so that `found` needs no
    /// clearing between records.
    record: u64,
    /// What [`View::find`] found, by slot, and for which record.
    found: Vec<(u64, Found)>,
}

/// A record being evaluated.
pub(crate) struct View<'r, 'b> {
    record: &'r [u8],
    split: Option<(&'r [u8], Option<&'r [u8]>)>,
    header: Option<Option<Parts<'r>>>,
    b: &'b mut Buffers,
}

impl<'r, 'b> View<'r, 'b> {
    /// A view of `record` (canonical text, enrichment included).
    pub(crate) fn new(record: &'r [u8], b: &'b mut Buffers) -> View<'r, 'b> {
        b.record = b.record.wrapping_add(1);
        View {
            record,
            split: None,
            header: None,
            b,
        }
    }

    fn split(&mut self) -> (&'r [u8], Option<&'r [u8]>) {
        let record = self.record;
        *self
            .split
            .get_or_insert_with(|| record::split_enrichment(record))
    }

    /// The record up to its enrichment.
    pub(crate) fn raw(&mut self) -> &'r [u8] {
        self.split().0
    }

    /// The header, if it can be read.
    pub(crate) fn header(&mut self) -> Option<Parts<'r>> {
        let record = self.record;
        *self
            .header
            .get_or_insert_with(|| record::parse_parts(record))
    }

    /// The record type number, if the header can be read and names a type.
    pub(crate) fn rtype(&mut self) -> Option<u32> {
        record_types::number(self.header()?.type_name)
    }

    /// The fields after the header (up to the enrichment).
    fn body(&mut self) -> &'r [u8] {
        let Some(h) = self.header() else {
            return b"";
        };
        self.raw().get(h.after_stamp..).unwrap_or(b"")
    }

    /// The first field named `name`, the filter's name number `slot`:
    /// looked for once per record (a value built in the buffer, which a
    /// later lookup may overwrite, is looked for again).
    pub(crate) fn find_slot(&mut self, slot: usize, name: &Name) -> Found {
        let record = self.b.record;
        if let Some(&(r, found)) = self.b.found.get(slot) {
            if r == record {
                return found;
            }
        }
        let found = self.find(name);
        if found != Found::Built {
            if self.b.found.len() <= slot {
                self.b.found.resize(slot + 1, (0, Found::Missing));
            }
            self.b.found[slot] = (record, found);
        }
        found
    }

    /// The first field named `name`.
    fn find(&mut self, name: &Name) -> Found {
        match name.text.as_str() {
            "type" => return Found::Type,
            "node" if self.header().is_some_and(|h| h.node.is_some()) => return Found::Node,
            "seresult" | "seperms" if self.rtype() == Some(record_types::AVC) => {
                return self.avc_words(name.text == "seperms")
            }
            _ => {}
        }
        let body = self.body();
        for at in name.raw.find_iter(body) {
            if !starts_field(body, at) {
                continue;
            }
            let start = at + name.text.len() + 1;
            let end = memchr::memchr(b' ', &body[start..]).map_or(body.len(), |p| start + p);
            if name.text == "msg" && matches!(body.get(start), Some(b'a' | b'\'')) {
                continue;
            }
            let (start, end) = trimmed(body, start, end);
            if start == end {
                continue;
            }
            if name.text == "key" {
                return self.key(&body[start..end], (start, end));
            }
            return Found::Value(start, end);
        }
        Found::Missing
    }

    /// `seresult` or `seperms` of a kernel AVC record: `avc:  denied  {
    /// read write } for …` gives `denied` and `read,write`.
    fn avc_words(&mut self, perms: bool) -> Found {
        let body = self.body();
        let mut words = body.split(|&c| c == b' ').filter(|w| !w.is_empty());
        let mut result = words.next();
        if result.is_some_and(|w| w.starts_with(b"avc")) {
            result = words.next();
        }
        let Some(result) = result.filter(|w| !w.contains(&b'=')) else {
            return Found::Missing;
        };
        if !perms {
            let start = result.as_ptr() as usize - body.as_ptr() as usize;
            return Found::Value(start, start + result.len());
        }
        if words.next() != Some(b"{") {
            return Found::Missing;
        }
        let built = &mut self.b.built;
        built.clear();
        for w in words.take_while(|&w| w != b"}") {
            if !built.is_empty() {
                built.push(b',');
            }
            built.extend_from_slice(w);
        }
        Found::Built
    }

    /// A `key` value: quoted or `(null)` as written; hex text is a list of
    /// keys, of which the first is the field.
    fn key(&mut self, v: &[u8], at: (usize, usize)) -> Found {
        if v.starts_with(b"\"") || v.starts_with(b"(") {
            return Found::Value(at.0, at.1);
        }
        if !is_hex(v) {
            return Found::Unreadable;
        }
        let decoded = &mut self.b.text;
        decoded.clear();
        decode_hex(v, decoded);
        let first = decoded.split(|&c| c == 1).next().unwrap_or(&[]);
        let built = &mut self.b.built;
        built.clear();
        // auparse writes the key back as the kernel would: quoted if
        // printable, hex otherwise.
        if first.iter().all(|&c| c > 0x20 && c < 0x7f && c != b'"') {
            built.push(b'"');
            built.extend_from_slice(first);
            built.push(b'"');
        } else {
            for &c in first {
                built.extend_from_slice(format!("{c:02X}").as_bytes());
            }
        }
        Found::Built
    }

    /// The value of `found` as written (`r=`); `None` if it has none.
    pub(crate) fn written(&mut self, found: Found) -> Option<&[u8]> {
        Some(match found {
            Found::Missing | Found::Unreadable => return None,
            Found::Type => self.header()?.type_name,
            Found::Node => self.header()?.node?,
            Found::Value(start, end) => &self.body()[start..end],
            Found::Built => &self.b.built,
        })
    }

    /// The interpreted value of `found`, the field `name` (`i=`); `None`
    /// if it has none.
    pub(crate) fn interpreted(&mut self, found: Found, name: &Name) -> Option<&[u8]> {
        let kind = interpret::kind(self.rtype().unwrap_or(0), name.text.as_bytes());
        let enriched = self.enriched(name);
        let written: &'r [u8] = match found {
            Found::Missing | Found::Unreadable => return None,
            Found::Type => self.header()?.type_name,
            Found::Node => self.header()?.node?,
            Found::Value(start, end) => &self.body()[start..end],
            Found::Built => b"",
        };
        let Buffers {
            text,
            built,
            escaped,
            ..
        } = &mut *self.b;
        let raw = if found == Found::Built {
            &built[..]
        } else {
            written
        };
        Some(interpret::interpret(kind, raw, enriched, text, escaped))
    }

    /// What auditd's enrichment says about the field `name`: the value of
    /// its upper-case name after the 0x1D byte, as libauparse reads it (cut
    /// at a space, except a socket address in braces).
    fn enriched(&mut self, name: &Name) -> Option<&'r [u8]> {
        let enrichment = self.split().1?;
        for at in name.enriched.find_iter(enrichment) {
            if at > 0 && enrichment[at - 1] != b' ' {
                continue;
            }
            let start = at + name.text.len() + 1;
            let rest = &enrichment[start..];
            if at == 0 && name.text == "saddr" && rest.starts_with(b"{") {
                return Some(rest);
            }
            let end = memchr::memchr(b' ', rest).unwrap_or(rest.len());
            return Some(&rest[..end]);
        }
        None
    }
}

/// Whether `name=` at `at` starts a field: at the start of a space-separated
/// piece, after a leading `(`, or right after a piece's `msg='`.
fn starts_field(body: &[u8], at: usize) -> bool {
    let piece_start = |i: usize| i == 0 || body[i - 1] == b' ';
    piece_start(at)
        || (at >= 1 && body[at - 1] == b'(' && piece_start(at - 1))
        || (at >= 5 && &body[at - 5..at] == b"msg='" && piece_start(at - 5))
}

/// The value `start..end` as auparse keeps it: one trailing `:`, then `,`,
/// then `'`, then `)` removed, in that order, but `(none)` and `(null)`
/// whole.
fn trimmed(body: &[u8], start: usize, mut end: usize) -> (usize, usize) {
    for c in [b':', b',', b'\'', b')'] {
        let v = &body[start..end];
        if v.last() == Some(&c) && !(c == b')' && (v == b"(none)" || v == b"(null)")) {
            end -= 1;
        }
    }
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(record: &str, name: &str) -> Option<String> {
        let mut b = Buffers::default();
        let mut v = View::new(record.as_bytes(), &mut b);
        let found = v.find(&Name::new(name));
        v.written(found)
            .map(|w| String::from_utf8_lossy(w).into_owned())
    }

    const USER: &str = "type=USER_LOGIN msg=audit(1.000:1): pid=9 uid=0 msg='op=login acct=\"al ice\" exe=\"/usr/sbin/sshd\" res=success'\u{1d}UID=\"root\"";

    #[test]
    fn fields_as_libauparse_lists_them() {
        assert_eq!(find(USER, "type").as_deref(), Some("USER_LOGIN"));
        assert_eq!(find(USER, "node"), None);
        assert_eq!(find(USER, "pid").as_deref(), Some("9"));
        assert_eq!(find(USER, "op").as_deref(), Some("login"));
        // Quotes kept, cut at the space, trailing quote of the message gone.
        assert_eq!(find(USER, "acct").as_deref(), Some("\"al"));
        assert_eq!(find(USER, "exe").as_deref(), Some("\"/usr/sbin/sshd\""));
        assert_eq!(find(USER, "res").as_deref(), Some("success"));
        assert_eq!(find(USER, "msg"), None);
        // The enrichment is not part of the record's fields.
        assert_eq!(find(USER, "UID"), None);
        // Only where a piece starts: "uid" is not found inside "auid=".
        let r = "type=SYSCALL msg=audit(1.000:2): auid=5 xuid=6 uid=7 a=uid=8";
        assert_eq!(find(r, "uid").as_deref(), Some("7"));
        assert_eq!(find(r, "a").as_deref(), Some("uid=8"));
    }

    #[test]
    fn values_are_trimmed_and_empty_ones_skipped() {
        let r = "node=h type=AVC msg=audit(1.000:3): a= a=1, b=(none) c=(x) d=e:, (f=g";
        assert_eq!(find(r, "node").as_deref(), Some("h"));
        assert_eq!(find(r, "a").as_deref(), Some("1"));
        assert_eq!(find(r, "b").as_deref(), Some("(none)"));
        assert_eq!(find(r, "c").as_deref(), Some("(x"));
        assert_eq!(find(r, "d").as_deref(), Some("e:"));
        assert_eq!(find(r, "f").as_deref(), Some("g"));
    }

    #[test]
    fn avc_words_and_keys() {
        let avc = "type=AVC msg=audit(1.000:4): avc:  denied  { read write } for  pid=1 comm=\"x\"";
        assert_eq!(find(avc, "seresult").as_deref(), Some("denied"));
        assert_eq!(find(avc, "seperms").as_deref(), Some("read,write"));
        assert_eq!(find(avc, "pid").as_deref(), Some("1"));
        let other = "type=SYSCALL msg=audit(1.000:5): seresult=x";
        assert_eq!(find(other, "seresult").as_deref(), Some("x"));
        let keys = "type=SYSCALL msg=audit(1.000:6): key=6F6E650174776F";
        assert_eq!(find(keys, "key").as_deref(), Some("\"one\""));
        let spaced = "type=SYSCALL msg=audit(1.000:6): key=6120620162";
        assert_eq!(find(spaced, "key").as_deref(), Some("612062"));
        assert_eq!(
            find("type=SYSCALL msg=audit(1.000:7): key=(null)", "key").as_deref(),
            Some("(null)")
        );
        assert_eq!(
            find("type=SYSCALL msg=audit(1.000:8): key=xyz", "key"),
            None
        );
    }

    #[test]
    fn enrichment_by_upper_case_name() {
        let mut b = Buffers::default();
        let mut v = View::new(USER.as_bytes(), &mut b);
        assert_eq!(v.enriched(&Name::new("uid")), Some(&b"\"root\""[..]));
        assert_eq!(v.enriched(&Name::new("auid")), None);
        let name = Name::new("uid");
        let found = v.find(&name);
        assert_eq!(v.interpreted(found, &name), Some(&b"root"[..]));
        let sock =
            "type=SOCKADDR msg=audit(1.000:9): saddr=01\u{1d}SADDR={ saddr_fam=local path=/x }";
        let mut v = View::new(sock.as_bytes(), &mut b);
        let name = Name::new("saddr");
        let found = v.find(&name);
        assert_eq!(v.written(found), Some(&b"01"[..]));
        assert_eq!(
            v.interpreted(found, &name),
            Some(&b"{ saddr_fam=local path=/x }"[..])
        );
    }
}
