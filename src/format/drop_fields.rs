//! Removing fields from records (a plugin's `drop_fields`), keeping every
//! record well formed.
//!
//! A record is `[node=NODE ]type=TYPE msg=audit(TIME:SERIAL): BODY`,
//! optionally followed by the byte 0x1D and auditd's ENRICHMENT. A *field*
//! is a `name=value` pair, cut as [`crate::format::fields`] cuts it (a bare
//! value runs to the next space; a value may be in double quotes, single
//! quotes or braces):
//!
//! * in BODY, at the top level (`proctitle=…`, `exe="…"`, the `msg='…'` of
//!   user-space records as a whole);
//! * inside the `msg='…'` of user-space records (`acct="root"`,
//!   `exe=…`);
//! * in ENRICHMENT (`AUID="alice"`, `SYSCALL=execve`).
//!
//! Dropping the name `n` removes every field named exactly `n` from BODY and
//! from inside `msg='…'`, and every ENRICHED field named `n` or its
//! upper-case form (auditd writes the interpretation of `auid` as `AUID`,
//! so dropping a raw field also drops what would give its value away).
//! Words that are not pairs (`avc:  denied  { read } for`) are never
//! removed, nor is the header (`node=`, `type=`, `msg=audit(…):`).
//!
//! A removed field takes one of the spaces around it along, so the fields
//! left are still separated by one space as before; a `msg='…'` whose
//! fields all went stays as `msg=''`; an ENRICHMENT with nothing left goes
//! with its 0x1D. A record whose header does not parse is passed on as it
//! is.

use std::borrow::Cow;

use memchr::memmem::Finder;

use crate::format::fields::{tokenize, Span, Token};
use crate::record;

/// A compiled `drop_fields` list. Keep one per plugin: it reuses its
/// buffers.
#[derive(Debug)]
pub struct DropFields {
    /// `name=` for each name: records without any of them are passed on
    /// untouched, unparsed.
    finders: Vec<Finder<'static>>,
    names: Vec<Vec<u8>>,
    upper: Vec<Vec<u8>>,
    tokens: Vec<Token>,
    nested: Vec<Token>,
    cuts: Vec<Span>,
}

impl Clone for DropFields {
    fn clone(&self) -> DropFields {
        DropFields::new(self.names.iter().map(|n| n.as_slice()))
    }
}

impl DropFields {
    /// Drops the fields named in `names`.
    pub fn new<'n>(names: impl IntoIterator<Item = &'n [u8]>) -> DropFields {
        let names: Vec<Vec<u8>> = names.into_iter().map(<[u8]>::to_vec).collect();
        let upper: Vec<Vec<u8>> = names.iter().map(|n| n.to_ascii_uppercase()).collect();
        let mut finders = Vec::new();
        for n in names.iter().chain(&upper) {
            let mut pat = n.clone();
            pat.push(b'=');
            if !finders.iter().any(|f: &Finder<'_>| f.needle() == pat) {
                finders.push(Finder::new(&pat).into_owned());
            }
        }
        DropFields {
            finders,
            names,
            upper,
            tokens: Vec::new(),
            nested: Vec::new(),
            cuts: Vec::new(),
        }
    }

    /// The list for `names`, or `None` when it is empty (nothing would
    /// ever be removed).
    pub fn of(names: &[String]) -> Option<DropFields> {
        (!names.is_empty()).then(|| DropFields::new(names.iter().map(|n| n.as_bytes())))
    }

    /// `text` without the listed fields: borrowed when none of them is in
    /// it.
    pub fn apply<'t>(&mut self, text: &'t [u8]) -> Cow<'t, [u8]> {
        if !self.finders.iter().any(|f| f.find(text).is_some()) {
            return Cow::Borrowed(text);
        }
        let (raw, enrichment) = record::split_enrichment(text);
        let Some(parts) = record::parse_parts(raw) else {
            return Cow::Borrowed(text);
        };
        let mut body = parts.after_stamp;
        if raw.get(body) == Some(&b' ') {
            body += 1;
        }
        self.cuts.clear();
        self.cut_raw(raw, body);
        if let Some(e) = enrichment {
            let before = self.cuts.len();
            if self.cut_enrichment(e, raw.len() + 1) {
                // Nothing left: the separator goes too.
                self.cuts.truncate(before);
                self.cuts.push(Span {
                    start: raw.len(),
                    end: text.len(),
                });
            }
        }
        // Cuts inside a kept message come after the body's cuts that
        // precede it: put them in order.
        self.cuts.sort_unstable_by_key(|c| c.start);
        if self.cuts.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = Vec::with_capacity(text.len());
        let mut pos = 0;
        for c in &self.cuts {
            out.extend_from_slice(&text[pos..c.start]);
            pos = c.end;
        }
        out.extend_from_slice(&text[pos..]);
        Cow::Owned(out)
    }

    /// Cuts in the body of `raw` (from `start`): top-level fields and the
    /// fields inside `msg='…'`.
    fn cut_raw(&mut self, raw: &[u8], start: usize) {
        let body = &raw[start..];
        self.tokens.clear();
        tokenize(body, true, &mut self.tokens);
        let tokens = std::mem::take(&mut self.tokens);
        let names = &self.names;
        let dropped = |t: &Token| !t.word && names.iter().any(|n| n.as_slice() == t.key.of(body));
        cut_part(&tokens, body, start, dropped, &mut self.cuts);
        for t in &tokens {
            // A user-space record's message, when it stays: cut inside it.
            let message = !t.word
                && t.key.of(body) == b"msg"
                && t.value.start > 0
                && body[t.value.start - 1] == b'\''
                && !dropped(t);
            if message {
                let inner = t.value.of(body);
                self.nested.clear();
                tokenize(inner, false, &mut self.nested);
                let dropped =
                    |t: &Token| !t.word && names.iter().any(|n| n.as_slice() == t.key.of(inner));
                cut_part(
                    &self.nested,
                    inner,
                    start + t.value.start,
                    dropped,
                    &mut self.cuts,
                );
            }
        }
        self.tokens = tokens;
    }

    /// Cuts in the enrichment `e`, which starts at `base` in the record.
    /// Returns whether nothing of it is left.
    fn cut_enrichment(&mut self, e: &[u8], base: usize) -> bool {
        self.nested.clear();
        tokenize(e, false, &mut self.nested);
        let (names, upper) = (&self.names, &self.upper);
        let dropped = |t: &Token| {
            let key = t.key.of(e);
            !t.word
                && (names.iter().any(|n| n.as_slice() == key)
                    || upper.iter().any(|n| n.as_slice() == key))
        };
        cut_part(&self.nested, e, base, dropped, &mut self.cuts)
    }
}

/// Adds the cuts that remove the `dropped` tokens of `part` (which starts
/// at `base` in the record), in order. A run of removed tokens takes the
/// spaces after it when a kept token follows, else those before it, so the
/// spacing around what is kept stays as written. Returns whether every
/// token went.
fn cut_part(
    tokens: &[Token],
    part: &[u8],
    base: usize,
    dropped: impl Fn(&Token) -> bool,
    cuts: &mut Vec<Span>,
) -> bool {
    let mut all = true;
    let mut i = 0;
    while i < tokens.len() {
        if !dropped(&tokens[i]) {
            all = false;
            i += 1;
            continue;
        }
        let first = i;
        while i < tokens.len() && dropped(&tokens[i]) {
            i += 1;
        }
        let last = i - 1;
        let (start, end) = if i < tokens.len() {
            (tokens[first].all.start, tokens[i].all.start)
        } else if first > 0 {
            (tokens[first - 1].all.end, tokens[last].all.end)
        } else {
            (tokens[first].all.start, tokens[last].all.end)
        };
        cuts.push(Span {
            start: base + start,
            end: base + end.min(part.len()),
        });
    }
    all && !tokens.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drop(names: &[&str], text: &str) -> String {
        let mut d = DropFields::new(names.iter().map(|n| n.as_bytes()));
        String::from_utf8(d.apply(text.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn top_level_fields_go_with_one_space() {
        let r = "type=SYSCALL msg=audit(1.000:2): arch=c000003e syscall=59 comm=\"ls\" exe=\"/bin/ls\" key=(null)";
        assert_eq!(
            drop(&["comm"], r),
            "type=SYSCALL msg=audit(1.000:2): arch=c000003e syscall=59 exe=\"/bin/ls\" key=(null)"
        );
        assert_eq!(
            drop(&["arch"], r),
            "type=SYSCALL msg=audit(1.000:2): syscall=59 comm=\"ls\" exe=\"/bin/ls\" key=(null)"
        );
        assert_eq!(
            drop(&["key", "arch", "exe"], r),
            "type=SYSCALL msg=audit(1.000:2): syscall=59 comm=\"ls\""
        );
        assert_eq!(
            drop(&["arch", "syscall"], r),
            "type=SYSCALL msg=audit(1.000:2): comm=\"ls\" exe=\"/bin/ls\" key=(null)"
        );
        let p = "node=h type=PROCTITLE msg=audit(1.000:2): proctitle=6C73002D6C";
        assert_eq!(
            drop(&["proctitle"], p),
            "node=h type=PROCTITLE msg=audit(1.000:2): "
        );
        // Nothing listed is there: the record is lent back as it is.
        let mut d = DropFields::new([&b"cwd"[..]]);
        assert!(matches!(d.apply(r.as_bytes()), Cow::Borrowed(_)));
        // `msg=audit(` is the header, not a field; `uid=` inside `auid=`
        // is not `uid`.
        assert_eq!(drop(&["msg", "uid"], p), p);
        let a = "type=SYSCALL msg=audit(1.000:2): auid=1000 uid=0";
        assert_eq!(
            drop(&["uid"], a),
            "type=SYSCALL msg=audit(1.000:2): auid=1000"
        );
    }

    #[test]
    fn user_messages_and_enrichment() {
        let u = "type=USER_LOGIN msg=audit(1.000:7): pid=9 uid=0 auid=1000 msg='op=login acct=\"root\" exe=\"/usr/sbin/sshd\" res=success'\x1dUID=\"root\" AUID=\"alice\"";
        assert_eq!(
            drop(&["acct", "auid"], u),
            "type=USER_LOGIN msg=audit(1.000:7): pid=9 uid=0 msg='op=login exe=\"/usr/sbin/sshd\" res=success'\x1dUID=\"root\""
        );
        assert_eq!(
            drop(&["uid", "auid"], u),
            "type=USER_LOGIN msg=audit(1.000:7): pid=9 msg='op=login acct=\"root\" exe=\"/usr/sbin/sshd\" res=success'"
        );
        assert_eq!(
            drop(&["op", "acct", "exe", "res"], u),
            "type=USER_LOGIN msg=audit(1.000:7): pid=9 uid=0 auid=1000 msg=''\x1dUID=\"root\" AUID=\"alice\""
        );
        // An upper-case name only names the interpretation.
        assert_eq!(
            drop(&["AUID"], u),
            "type=USER_LOGIN msg=audit(1.000:7): pid=9 uid=0 auid=1000 msg='op=login acct=\"root\" exe=\"/usr/sbin/sshd\" res=success'\x1dUID=\"root\""
        );
        let avc = "type=AVC msg=audit(1.000:3): avc:  denied  { read } for  pid=5 comm=\"cat\" name=\"x\"";
        assert_eq!(
            drop(&["comm", "pid"], avc),
            "type=AVC msg=audit(1.000:3): avc:  denied  { read } for  name=\"x\""
        );
        assert_eq!(drop(&["pid"], "not a record pid=1"), "not a record pid=1");
    }

    #[test]
    fn every_record_of_the_sample_stays_well_formed() {
        let data = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/sample.log"
        ))
        .expect("tests/data/sample.log");
        let names = [
            "proctitle",
            "auid",
            "exe",
            "acct",
            "key",
            "a0",
            "name",
            "SYSCALL",
        ];
        let mut d = DropFields::new(names.iter().map(|n| n.as_bytes()));
        let mut fields = crate::format::fields::Fields::new();
        for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let out = d.apply(line);
            let before = record::parse(line);
            assert_eq!(record::parse(&out), before, "header kept");
            assert!(!out.contains(&b'\n'));
            let (raw, _) = record::split_enrichment(&out);
            assert!(
                !raw.ends_with(b"  ")
                    && !raw
                        .windows(2)
                        .skip(1)
                        .any(|w| w == b"  " && !line.windows(2).any(|l| l == b"  "))
            );
            if let Some(info) = before {
                let body = record::body(raw).unwrap_or_default();
                let (fs, _) = fields.parse(info.rtype, body, crate::format::fields::Part::Raw);
                for f in fs {
                    if let crate::format::fields::Key::Text(k) = f.key {
                        assert!(
                            !names.contains(&std::str::from_utf8(k.of(body)).unwrap_or("")),
                            "{}",
                            String::from_utf8_lossy(&out)
                        );
                    }
                }
            }
        }
    }
}
