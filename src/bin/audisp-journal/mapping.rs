//! Audit records (or whole events) as journal entries: which fields an entry
//! gets, what they are named, and at which priority it is logged.
//!
//! Always: `MESSAGE` (the record text; an event's records one per line;
//! auditd's 0x1D enrichment separator written as a space, so journal tools
//! show it as text), `PRIORITY`, `SYSLOG_IDENTIFIER`, `AUDIT_TYPE` (number)
//! and `AUDIT_TYPE_NAME` (per record; journald keeps each distinct value
//! once per entry), `AUDIT_ID`
//! (`SEC.MSEC:SERIAL`), `AUDIT_SERIAL`, `AUDIT_TIMESTAMP` (`SEC.MSEC`),
//! `AUDIT_NODE` (with `node=`), `AUDIT_KEY` (one value per audit rule key,
//! hex-decoded) and `AUDISP_SEQ` (the dispatcher's sequence number of the
//! record, or the event's id — gaps show loss).
//!
//! With every field (`--fields all`): each `key=value` of a record as
//! `AUDIT_FIELD_<KEY>` (the name journald's own audit transport uses, minus
//! its leading underscore): upper-cased, every character outside `A-Z0-9_`
//! written `_`; the fields inside a user message `msg='…'` the same way;
//! auditd's ENRICHED fields as `AUDIT_ENRICHED_<KEY>`; hex-encoded values
//! decoded; `(null)` values left out; `EXECVE` arguments as
//! `AUDIT_EXECVE_A<n>` (not `AUDIT_FIELD_A<n>`, which in an event would mix
//! them with the syscall's `a0`…`a3`), split arguments rejoined (in records
//! mode, each record's own pieces). Fields of different records of an event
//! that share a name become values of one field. Names longer than journald allows, and fields
//! beyond the per-entry field limit, are left out and counted.

use audisp::format::fields::{decode_hex, Argv, Field, Fields, Part, Value};
use audisp::record::{self, ENRICHMENT_SEPARATOR};
use audisp::record_types;

use audisp::systemd::journald::{Entry, MAX_FIELDS, MAX_NAME};

/// The syslog priority of a record type unless configured otherwise:
/// warning (4) for SELinux/AppArmor denials and errors, kernel and
/// user-space anomalies and responses to them; info (6) for the rest.
pub fn default_priority(rtype: u32) -> u8 {
    match rtype {
        1107 | 1400 | 1401 | 1420 => 4, // USER_AVC, AVC, SELINUX_ERR, USER_SELINUX_ERR
        1700..=1799 | 2100..=2299 => 4, // ANOM_* (kernel and user), RESP_*
        _ => 6,
    }
}

/// How records are mapped.
#[derive(Debug, Clone)]
pub struct MapOptions {
    /// `SYSLOG_IDENTIFIER`.
    pub identifier: String,
    /// Every `key=value` as its own field.
    pub all_fields: bool,
    /// Priority overrides: (type, priority).
    pub priorities: Vec<(u32, u8)>,
}

/// Builds entries; keep one and reuse it (its buffers are reused).
pub struct Mapper {
    o: MapOptions,
    fields: Fields,
    nested: Fields,
    argv: Argv,
    scratch: Vec<u8>,
    name: Vec<u8>,
    message: Vec<u8>,
    /// Fields left out so far (too long a name, or too many fields).
    pub omitted: u64,
}

impl Mapper {
    /// A mapper with these options.
    pub fn new(o: MapOptions) -> Mapper {
        Mapper {
            o,
            fields: Fields::new(),
            nested: Fields::new(),
            argv: Argv::default(),
            scratch: Vec::new(),
            name: Vec::new(),
            message: Vec::new(),
            omitted: 0,
        }
    }

    fn priority(&self, rtype: u32) -> u8 {
        self.o
            .priorities
            .iter()
            .find(|p| p.0 == rtype)
            .map_or_else(|| default_priority(rtype), |p| p.1)
    }

    /// Fills `entry` with the entry for `records` (one record, or the
    /// records of one event), identified by `seq`.
    pub fn build(&mut self, seq: u64, records: &[(u32, &[u8])], entry: &mut Entry) {
        entry.clear();
        self.message.clear();
        for (i, (_, text)) in records.iter().enumerate() {
            if i > 0 {
                self.message.push(b'\n');
            }
            let start = self.message.len();
            self.message.extend_from_slice(text);
            for b in &mut self.message[start..] {
                if *b == ENRICHMENT_SEPARATOR {
                    *b = b' ';
                }
            }
        }
        entry.add(b"MESSAGE", &self.message);
        let prio = records
            .iter()
            .map(|r| self.priority(r.0))
            .min()
            .unwrap_or(6);
        entry.add(b"PRIORITY", &[b'0' + prio]);
        entry.add(b"SYSLOG_IDENTIFIER", self.o.identifier.as_bytes());
        entry.add(b"AUDISP_SEQ", seq.to_string().as_bytes());
        let mut header_done = false;
        for &(rtype, text) in records {
            entry.add(b"AUDIT_TYPE", rtype.to_string().as_bytes());
            entry.add(b"AUDIT_TYPE_NAME", record_types::display(rtype).as_bytes());
            if !header_done {
                if let Some(info) = record::parse(text) {
                    let ts = format!("{}.{:03}", info.time.sec, info.time.msec);
                    entry.add(b"AUDIT_ID", format!("{ts}:{}", info.serial).as_bytes());
                    entry.add(b"AUDIT_SERIAL", info.serial.to_string().as_bytes());
                    entry.add(b"AUDIT_TIMESTAMP", ts.as_bytes());
                    if let Some(node) = info.node {
                        entry.add(b"AUDIT_NODE", node);
                    }
                    header_done = true;
                }
            }
        }
        // EXECVE arguments of the whole entry, rejoined.
        self.argv.clear();
        let mut execve = 0;
        for &(rtype, text) in records {
            let (raw, enrichment) = record::split_enrichment(text);
            let Some(body) = record::body(raw) else {
                continue;
            };
            let (fields, _) = self.fields.parse(rtype, body, Part::Raw);
            if rtype == record_types::EXECVE {
                self.argv.add(execve, body, fields);
                execve += 1;
            }
            for f in fields {
                if f.key.bytes(body) == b"key" {
                    add_keys(entry, body, f, &mut self.scratch);
                }
            }
            if !self.o.all_fields {
                continue;
            }
            for f in fields {
                let key = f.key.bytes(body);
                if rtype == record_types::EXECVE && key != b"argc" {
                    continue;
                }
                if let Value::Nested(s) = f.value {
                    let inner = s.of(body);
                    let (inner_fields, pairs) = self.nested.parse(rtype, inner, Part::Message);
                    if pairs {
                        for g in inner_fields {
                            self.omitted += add_field(
                                entry,
                                b"AUDIT_FIELD_",
                                inner,
                                g,
                                &mut self.name,
                                &mut self.scratch,
                            );
                        }
                        continue;
                    }
                }
                self.omitted += add_field(
                    entry,
                    b"AUDIT_FIELD_",
                    body,
                    f,
                    &mut self.name,
                    &mut self.scratch,
                );
            }
            if let Some(enr) = enrichment {
                let (fields, _) = self.nested.parse(rtype, enr, Part::Enrichment);
                for f in fields {
                    self.omitted += add_field(
                        entry,
                        b"AUDIT_ENRICHED_",
                        enr,
                        f,
                        &mut self.name,
                        &mut self.scratch,
                    );
                }
            }
        }
        if self.o.all_fields && execve > 0 {
            for (n, arg) in self.argv.args().enumerate() {
                let Some(arg) = arg else { continue };
                if entry.fields() >= MAX_FIELDS {
                    self.omitted += 1;
                    continue;
                }
                self.name.clear();
                self.name.extend_from_slice(b"AUDIT_EXECVE_A");
                self.name.extend_from_slice(n.to_string().as_bytes());
                entry.add(&self.name, arg);
            }
        }
    }
}

/// `key=` of a syscall record: one `AUDIT_KEY` per rule key (the kernel
/// joins several keys with 0x01 and then hex-encodes them).
fn add_keys(entry: &mut Entry, body: &[u8], f: &Field, scratch: &mut Vec<u8>) {
    scratch.clear();
    match f.value {
        Value::Hex(s) => decode_hex(s.of(body), scratch),
        Value::Str(s) => scratch.extend_from_slice(s.of(body)),
        _ => return,
    }
    for k in scratch.split(|&b| b == 1).filter(|k| !k.is_empty()) {
        entry.add(b"AUDIT_KEY", k);
    }
}

/// Adds `PREFIX<KEY>=value`; returns 1 if the field had to be left out.
fn add_field(
    entry: &mut Entry,
    prefix: &[u8],
    text: &[u8],
    f: &Field,
    name: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> u64 {
    if f.value == Value::Null {
        return 0;
    }
    let key = f.key.bytes(text);
    name.clear();
    name.extend_from_slice(prefix);
    name.extend(key.iter().map(|&b| match b {
        b'a'..=b'z' => b.to_ascii_uppercase(),
        b'A'..=b'Z' | b'0'..=b'9' | b'_' => b,
        _ => b'_',
    }));
    if name.len() > MAX_NAME || entry.fields() >= MAX_FIELDS {
        return 1;
    }
    match f.value {
        Value::Hex(s) => {
            scratch.clear();
            decode_hex(s.of(text), scratch);
            entry.add(name, scratch);
        }
        Value::Str(s) | Value::Number(s) | Value::Words(s) | Value::Nested(s) => {
            entry.add(name, s.of(text))
        }
        Value::Null => {}
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entry's fields as (name, value) pairs, parsed back.
    fn parse(entry: &Entry) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let b = entry.bytes();
        let mut i = 0;
        while i < b.len() {
            let end = i + b[i..]
                .iter()
                .position(|&c| c == b'\n' || c == b'=')
                .unwrap();
            let name = String::from_utf8(b[i..end].to_vec()).unwrap();
            if b[end] == b'=' {
                let nl = end + 1 + b[end + 1..].iter().position(|&c| c == b'\n').unwrap();
                out.push((name, b[end + 1..nl].to_vec()));
                i = nl + 1;
            } else {
                let len = u64::from_le_bytes(b[end + 1..end + 9].try_into().unwrap()) as usize;
                out.push((name, b[end + 9..end + 9 + len].to_vec()));
                i = end + 9 + len + 1;
            }
        }
        out
    }

    fn get<'a>(f: &'a [(String, Vec<u8>)], name: &str) -> Vec<&'a [u8]> {
        f.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| &v[..])
            .collect()
    }

    fn mapper(all: bool) -> Mapper {
        Mapper::new(MapOptions {
            identifier: "audisp".into(),
            all_fields: all,
            priorities: vec![(1300, 5)],
        })
    }

    #[test]
    fn a_syscall_record() {
        let text = b"type=SYSCALL msg=audit(1795422202.370:400178): arch=c000003e syscall=257 success=yes key=66696C657301657874726173 comm=\"bash\" exe=2F746D702F612062\x1dARCH=x86_64 AUID=\"nobody\"";
        let mut e = Entry::default();
        let mut m = mapper(true);
        m.build(42, &[(1300, &text[..])], &mut e);
        let f = parse(&e);
        assert_eq!(get(&f, "PRIORITY"), [b"5"]);
        assert_eq!(get(&f, "AUDIT_TYPE_NAME"), [b"SYSCALL"]);
        assert_eq!(get(&f, "AUDIT_ID"), [b"1795422202.370:400178"]);
        assert_eq!(get(&f, "AUDIT_KEY"), [&b"files"[..], b"extras"]);
        assert_eq!(get(&f, "AUDIT_FIELD_EXE"), [b"/tmp/a b"]);
        assert_eq!(get(&f, "AUDIT_FIELD_SYSCALL"), [b"257"]);
        assert_eq!(get(&f, "AUDIT_ENRICHED_AUID"), [b"nobody"]);
        assert_eq!(get(&f, "AUDISP_SEQ"), [b"42"]);
        let msg = get(&f, "MESSAGE")[0];
        assert!(!msg.contains(&0x1d) && msg.ends_with(b" ARCH=x86_64 AUID=\"nobody\""));
        // Without --fields all: only the fixed fields.
        let mut m = mapper(false);
        m.build(42, &[(1300, &text[..])], &mut e);
        let f = parse(&e);
        assert!(get(&f, "AUDIT_FIELD_EXE").is_empty());
        assert_eq!(get(&f, "AUDIT_KEY").len(), 2);
    }

    #[test]
    fn an_event_with_split_arguments_and_a_user_message() {
        let recs: Vec<(u32, &[u8])> = vec![
            (
                1300,
                b"type=SYSCALL msg=audit(1.000:7): syscall=59 key=(null)",
            ),
            (
                1309,
                b"type=EXECVE msg=audit(1.000:7): argc=2 a0=\"echo\" a1_len=8 a1[0]=61206220",
            ),
            (1309, b"type=EXECVE msg=audit(1.000:7):  a1[1]=630A6420"),
            (
                1400,
                b"type=AVC msg=audit(1.000:7): avc:  denied  { read } for pid=1",
            ),
        ];
        let mut e = Entry::default();
        let mut m = mapper(true);
        m.build(9, &recs, &mut e);
        let f = parse(&e);
        assert_eq!(get(&f, "PRIORITY"), [b"4"], "the AVC raises it");
        assert_eq!(get(&f, "AUDIT_TYPE_NAME").len(), 4);
        assert_eq!(get(&f, "AUDIT_EXECVE_A1"), [b"a b c\nd "]);
        assert_eq!(get(&f, "AUDIT_FIELD_ARGC"), [b"2"]);
        assert_eq!(get(&f, "AUDIT_FIELD_SEPERMS"), [b"read"]);
        assert!(get(&f, "AUDIT_KEY").is_empty());
        let user =
            b"type=USER msg=audit(1.000:8): pid=1 msg='text=it's \"x\" exe=\"/bin/a\" res=success'";
        m.build(10, &[(1005, &user[..])], &mut e);
        let f = parse(&e);
        assert_eq!(get(&f, "AUDIT_FIELD_TEXT"), [&b"it's \"x\""[..]]);
        assert_eq!(get(&f, "AUDIT_FIELD_RES"), [b"success"]);
        assert_eq!(get(&f, "PRIORITY"), [b"6"]);
    }

    #[test]
    fn node_and_defaults() {
        let text = b"node=web1 type=ANOM_ABEND msg=audit(5.006:7): auid=1 pid=2 sig=11";
        let mut e = Entry::default();
        let mut m = mapper(false);
        m.build(3, &[(1701, &text[..])], &mut e);
        let f = parse(&e);
        assert_eq!(get(&f, "AUDIT_NODE"), [b"web1"]);
        assert_eq!(get(&f, "AUDIT_TIMESTAMP"), [b"5.006"]);
        assert_eq!(get(&f, "AUDIT_SERIAL"), [b"7"]);
        assert_eq!(get(&f, "PRIORITY"), [b"4"], "anomalies are warnings");
        assert_eq!(get(&f, "SYSLOG_IDENTIFIER"), [b"audisp"]);
    }

    #[test]
    fn field_limit_is_respected() {
        let mut text = b"type=EXECVE msg=audit(1.000:7): argc=3000".to_vec();
        for i in 0..3000 {
            text.extend_from_slice(format!(" a{i}=\"{i}\"").as_bytes());
        }
        let mut e = Entry::default();
        let mut m = mapper(true);
        m.build(1, &[(1309, &text[..])], &mut e);
        assert!(e.fields() <= MAX_FIELDS);
        assert!(m.omitted >= 2000);
        let f = parse(&e);
        assert_eq!(get(&f, "MESSAGE")[0], &text[..], "the message is whole");
    }
}
