//! What a message on the stream is: its subject (from the template), its
//! `Nats-Msg-Id` (the publisher's identity and the places in audispd's
//! journal of its first and last record, so a resend cut the same way is
//! recognised by JetStream), its `Audisp-Origin` and `Audisp-Seqs` headers
//! (the identity and journal place of every record, so a consumer stores a
//! record once even when it comes again in a message cut differently), its
//! payload (auditd's text or the suite's JSON, records one per line), and on
//! the consuming side which payloads are audit records at all.

use std::borrow::Cow;

use async_nats::HeaderMap;

use audisp::format::JsonWriter;
use audisp::record;
use audisp::record_types;

use crate::ledger::Places;
use crate::settings::Format;

/// The identity of one publisher's numbering: the host and audispd's
/// journal, whose sequence numbers never repeat. Hashed to a short key so
/// the id JetStream keeps for its duplicate window stays small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    key: String,
}

impl Origin {
    /// The origin of records numbered by journal `journal` on host
    /// `host_id`.
    pub fn new(host_id: &str, journal: [u8; 16]) -> Origin {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(host_id.as_bytes());
        ctx.update(&[0]);
        ctx.update(&journal);
        let digest = ctx.finish();
        let key = digest.as_ref()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Origin { key }
    }

    /// The `Nats-Msg-Id` of the message whose records run from journal
    /// place `first` to `last`. Messages are whole runs of what audispd
    /// delivers in order, so these two places say which records it holds.
    pub fn msg_id(&self, first: u64, last: u64) -> String {
        format!("{}-{first}-{last}", self.key)
    }

    /// The key (the `Audisp-Origin` header).
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// The header naming a message's [`Origin`].
pub const ORIGIN_HEADER: &str = "Audisp-Origin";
/// The header listing its records' journal places, in payload order.
pub const SEQS_HEADER: &str = "Audisp-Seqs";

/// `seqs` (in payload order) as `Audisp-Seqs` writes them: runs `a-b` of
/// consecutive numbers and single numbers, comma-separated (`"5-9,12"`).
pub fn write_seqs(seqs: &[u64]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < seqs.len() {
        let mut j = i;
        while j + 1 < seqs.len() && seqs[j + 1] == seqs[j] + 1 {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if j == i {
            out.push_str(&seqs[i].to_string());
        } else {
            out.push_str(&format!("{}-{}", seqs[i], seqs[j]));
        }
        i = j + 1;
    }
    out
}

/// The journal places an `Audisp-Seqs` value lists, if it is well formed
/// (at most `limit` of them).
pub fn read_seqs(v: &str, limit: usize) -> Option<Vec<u64>> {
    let mut out: Vec<u64> = Vec::new();
    for run in v.split(',') {
        let (a, b): (u64, u64) = match run.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let a: u64 = run.trim().parse().ok()?;
                (a, a)
            }
        };
        if a > b || b - a >= (limit - out.len()) as u64 {
            return None;
        }
        out.extend(a..=b);
    }
    Some(out)
}

/// The subject template split into literal text and placeholders.
#[derive(Debug, Clone)]
pub struct Subjects {
    parts: Vec<Part>,
    host: String,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Host,
    Node,
    Type,
}

impl Subjects {
    /// `template` (checked by the settings) for this host.
    pub fn new(template: &str, host: &str) -> Subjects {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(i) = rest.find('{') {
            if i > 0 {
                parts.push(Part::Text(rest[..i].to_string()));
            }
            let end = rest[i..].find('}').map_or(rest.len(), |e| i + e);
            parts.push(match &rest[i + 1..end] {
                "host" => Part::Host,
                "node" => Part::Node,
                _ => Part::Type,
            });
            rest = rest.get(end + 1..).unwrap_or("");
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Subjects {
            parts,
            host: token(host.as_bytes()).into_owned(),
        }
    }

    /// The subject of a message whose (first) record is `text`.
    pub fn of(&self, text: &[u8], rtype: u32, out: &mut String) {
        out.clear();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Host => out.push_str(&self.host),
                Part::Node => match record::parse(text).and_then(|r| r.node) {
                    Some(n) => out.push_str(&token(n)),
                    None => out.push_str(&self.host),
                },
                Part::Type => out.push_str(&token(record_types::display(rtype).as_bytes())),
            }
        }
    }
}

/// `raw` as one subject token: bytes a subject cannot hold inside a token
/// (`.`, `*`, `>`, white space, control and non-ASCII bytes) become `_`.
fn token(raw: &[u8]) -> Cow<'_, str> {
    let ok = |b: u8| b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>');
    if !raw.is_empty() && raw.iter().all(|&b| ok(b)) {
        // All ASCII: valid UTF-8.
        return Cow::Borrowed(std::str::from_utf8(raw).unwrap_or("_"));
    }
    if raw.is_empty() {
        return Cow::Borrowed("_");
    }
    Cow::Owned(
        raw.iter()
            .map(|&b| if ok(b) { b as char } else { '_' })
            .collect(),
    )
}

/// Writes message payloads in the configured format.
pub struct Payloads {
    format: Format,
    json: JsonWriter,
}

impl Payloads {
    /// A writer for `format`.
    pub fn new(format: Format) -> Payloads {
        Payloads {
            format,
            json: JsonWriter::new(),
        }
    }

    /// The payload of one message holding `records`, whose events (or, in
    /// records mode, single records) start at the indexes `starts`: text
    /// has a line per record; JSON a line per event (or record).
    pub fn write(&mut self, records: &[&[u8]], starts: &[usize], out: &mut Vec<u8>) {
        out.clear();
        match self.format {
            Format::Text => {
                for (i, r) in records.iter().enumerate() {
                    if i > 0 {
                        out.push(b'\n');
                    }
                    out.extend_from_slice(r);
                }
            }
            Format::Json => {
                for (k, &a) in starts.iter().enumerate() {
                    let b = starts.get(k + 1).copied().unwrap_or(records.len());
                    if k > 0 {
                        out.push(b'\n');
                    }
                    match &records[a..b] {
                        [one] => self.json.write_record(one, out),
                        group => self.json.write_event(group, out),
                    }
                }
            }
        }
    }
}

/// Why a message cannot be fed to audispd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAudit {
    /// Nothing in it.
    Empty,
    /// JSON: for other consumers (audispd takes auditd's text).
    Json,
    /// A line that is not an audit record (its number, from 1).
    Line(usize),
    /// `Audisp-Origin` without an `Audisp-Seqs` listing one journal place
    /// per record.
    Places,
}

impl std::fmt::Display for NotAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotAudit::Empty => write!(f, "it is empty"),
            NotAudit::Json => write!(
                f,
                "it is JSON (audispd takes auditd's text: publish with --format text for consumers)"
            ),
            NotAudit::Line(n) => write!(
                f,
                "line {n} is not an audit record (type=NAME msg=audit(SEC.MSEC:SERIAL): ...)"
            ),
            NotAudit::Places => write!(
                f,
                "its {SEQS_HEADER} header does not list one journal place per record"
            ),
        }
    }
}

/// The records a message holds (a record, or an event's records one per
/// line), each without its newline; or why it holds none audispd could
/// take.
pub fn records(payload: &[u8]) -> Result<Vec<&[u8]>, NotAudit> {
    let body = payload.strip_suffix(b"\n").unwrap_or(payload);
    if body.is_empty() {
        return Err(NotAudit::Empty);
    }
    if body.first() == Some(&b'{') {
        return Err(NotAudit::Json);
    }
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    for (i, l) in lines.iter().enumerate() {
        if record::body(l).is_none() || l.len() > record::MAX_RECORD_LEN {
            return Err(NotAudit::Line(i + 1));
        }
    }
    Ok(lines)
}

/// The journal places of a message's `count` records, from its headers; none
/// if it does not say (a message from elsewhere, or from an older publisher).
pub fn places(headers: Option<&HeaderMap>, count: usize) -> Result<Option<Places>, NotAudit> {
    let Some(h) = headers else {
        return Ok(None);
    };
    let Some(origin) = h.get(ORIGIN_HEADER) else {
        return Ok(None);
    };
    let origin = origin.as_str();
    let seqs = h
        .get(SEQS_HEADER)
        .and_then(|v| read_seqs(v.as_str(), count))
        .filter(|s| s.len() == count)
        .ok_or(NotAudit::Places)?;
    // The key is one word of the ledger.
    if origin.is_empty() || !origin.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(NotAudit::Places);
    }
    Ok(Some(Places {
        origin: origin.to_string(),
        seqs,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSCALL: &[u8] =
        b"type=SYSCALL msg=audit(1700000000.123:42): arch=c000003e syscall=59 success=yes";
    const EOE: &[u8] = b"type=EOE msg=audit(1700000000.123:42): ";

    #[test]
    fn ids_name_host_journal_and_sequence() {
        let a = Origin::new("host-a", [1; 16]);
        assert_eq!(a.msg_id(7, 9), a.msg_id(7, 9));
        assert_ne!(a.msg_id(7, 9), a.msg_id(7, 8));
        assert_ne!(a.msg_id(7, 9), a.msg_id(8, 9));
        assert_ne!(a.msg_id(7, 9), Origin::new("host-b", [1; 16]).msg_id(7, 9));
        assert_ne!(a.msg_id(7, 9), Origin::new("host-a", [2; 16]).msg_id(7, 9));
        assert!(a.msg_id(7, 9).ends_with("-7-9"));
        assert_eq!(a.msg_id(7, 9).len(), 24 + 4);
        assert_eq!(a.key().len(), 24);
    }

    #[test]
    fn seqs_round_trip_as_runs() {
        let seqs = [5, 6, 7, 9, 12, 13];
        assert_eq!(write_seqs(&seqs), "5-7,9,12-13");
        assert_eq!(read_seqs("5-7,9,12-13", 100).unwrap(), seqs);
        assert_eq!(write_seqs(&[42]), "42");
        assert_eq!(read_seqs("42", 1).unwrap(), [42]);
        // Events mode: an event's records may interleave with another's.
        assert_eq!(write_seqs(&[3, 1, 2]), "3,1-2");
        assert_eq!(read_seqs("3,1-2", 3).unwrap(), [3, 1, 2]);
        // Reversed, too many, not numbers: refused.
        assert_eq!(read_seqs("9-5", 10), None);
        assert_eq!(read_seqs("1-10", 9), None);
        assert_eq!(read_seqs("1-x", 9), None);
        assert_eq!(read_seqs("", 9), None);
    }

    #[test]
    fn subjects_from_the_template() {
        let s = Subjects::new("audit.{host}.{type}", "web1.example");
        let mut out = String::new();
        s.of(SYSCALL, 1300, &mut out);
        assert_eq!(out, "audit.web1_example.SYSCALL");
        let s = Subjects::new("x.{node}-{type}", "h");
        s.of(b"node=db.2 type=AVC msg=audit(1.000:1): x", 1400, &mut out);
        assert_eq!(out, "x.db_2-AVC");
        s.of(SYSCALL, 1300, &mut out);
        assert_eq!(out, "x.h-SYSCALL");
        s.of(b"type=UNKNOWN[1234] msg=audit(1.000:1): x", 1234, &mut out);
        assert_eq!(out, "x.h-UNKNOWN[1234]");
    }

    #[test]
    fn payloads_text_and_json() {
        let mut p = Payloads::new(Format::Text);
        let mut out = Vec::new();
        p.write(&[SYSCALL, EOE], &[0], &mut out);
        assert_eq!(out, [SYSCALL, b"\n", EOE].concat());
        let mut p = Payloads::new(Format::Json);
        p.write(&[SYSCALL], &[0], &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v.is_object(), "{v}");
        // A line per record (records mode) or per event.
        p.write(&[SYSCALL, EOE, SYSCALL], &[0, 1, 2], &mut out);
        assert_eq!(out.split(|&b| b == b'\n').count(), 3);
        p.write(&[SYSCALL, EOE, SYSCALL], &[0, 2], &mut out);
        let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
        assert_eq!(lines.len(), 2);
        for l in lines {
            let v: serde_json::Value = serde_json::from_slice(l).unwrap();
            assert!(v.is_object(), "{v}");
        }
    }

    #[test]
    fn only_audit_text_is_taken() {
        assert_eq!(records(SYSCALL).unwrap(), [SYSCALL]);
        let event = [SYSCALL, b"\n", EOE, b"\n"].concat();
        assert_eq!(records(&event).unwrap(), [SYSCALL, EOE]);
        assert_eq!(records(b""), Err(NotAudit::Empty));
        assert_eq!(records(b"{\"a\":1}"), Err(NotAudit::Json));
        assert_eq!(records(b"hello"), Err(NotAudit::Line(1)));
        let bad = [SYSCALL, b"\nnot a record"].concat();
        assert_eq!(records(&bad), Err(NotAudit::Line(2)));
    }

    #[test]
    fn places_come_from_the_headers() {
        assert_eq!(places(None, 2), Ok(None));
        let mut h = HeaderMap::new();
        assert_eq!(places(Some(&h), 2), Ok(None));
        h.insert(ORIGIN_HEADER, "abc");
        assert_eq!(places(Some(&h), 2), Err(NotAudit::Places));
        h.insert(SEQS_HEADER, "7-8");
        let want = Places {
            origin: "abc".into(),
            seqs: vec![7, 8],
        };
        assert_eq!(places(Some(&h), 2), Ok(Some(want)));
        assert_eq!(places(Some(&h), 3), Err(NotAudit::Places));
        assert_eq!(places(Some(&h), 1), Err(NotAudit::Places));
    }
}
