//! Audit events and records as JSON objects (the format is described in
//! [`crate::format`]).

use crate::format::escape::{write_str, write_str_body};
use crate::format::fields::{decode_hex, Argv, Field, Fields, Part, Span, Value};
use crate::record::{self, AuditTime};
use crate::record_types;

/// Converts records and events to JSON. Keep one per thread and reuse it:
/// its buffers make conversion allocation-free once warm.
#[derive(Debug, Default)]
pub struct JsonWriter {
    fields: Fields,
    nested: Fields,
    enrichment: Fields,
    argv: Argv,
    scratch: Vec<u8>,
    records: Vec<Rec>,
    groups: Vec<Group>,
    keys: Keys,
}

/// One record of the event being written.
#[derive(Debug, Clone, Copy)]
struct Rec {
    /// Index into the caller's records.
    index: usize,
    rtype: Option<u32>,
    name: Span,
    body: Span,
}

/// The records of one type, in order (by index into `records`).
#[derive(Debug, Default)]
struct Group {
    first: usize,
    members: Vec<usize>,
}

/// The keys already written in the current object, to keep them unique.
#[derive(Debug, Default)]
struct Keys {
    bytes: Vec<u8>,
    spans: Vec<(u32, u32)>,
    bloom: u64,
}

impl Keys {
    fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
        self.bloom = 0;
    }

    /// Records `key`; returns how many times it was seen before.
    fn add(&mut self, key: &[u8]) -> usize {
        let bit = 1u64
            << ((key.len() as u64)
                .wrapping_mul(31)
                .wrapping_add(u64::from(key.first().copied().unwrap_or(0)))
                .wrapping_add(u64::from(key.last().copied().unwrap_or(0)) * 7)
                % 64);
        let mut seen = 0;
        if self.bloom & bit != 0 {
            for &(s, e) in &self.spans {
                if &self.bytes[s as usize..e as usize] == key {
                    seen += 1;
                }
            }
        }
        self.bloom |= bit;
        let s = self.bytes.len() as u32;
        self.bytes.extend_from_slice(key);
        self.spans.push((s, self.bytes.len() as u32));
        seen
    }
}

/// Types that occur at most once in an event, written as one object; every
/// other type is an array of objects.
fn is_single(rtype: Option<u32>) -> bool {
    let Some(t) = rtype else { return false };
    matches!(
        t,
        record_types::SYSCALL
            | 1303 // IPC
            | 1304 // SOCKETCALL
            | 1306 // SOCKADDR
            | 1307 // CWD
            | record_types::EXECVE
            | 1311..=1315 // IPC_SET_PERM, MQ_*
            | 1317 // FD_PAIR
            | 1321..=1323 // BPRM_FCAPS, CAPSET, MMAP
            | record_types::PROCTITLE
            | 1330 // KERN_MODULE
            | 1332 | 1333 // TIME_*
            | 1336 | 1337 // URINGOP, OPENAT2
            | 1700..=1703 // ANOM_PROMISCUOUS, ANOM_ABEND, ANOM_LINK, ANOM_CREAT
    ) || (t != record_types::EOE && record_types::ends_event(t))
}

/// Appends the decimal digits of `v`.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends an event id as audit writes it: `SEC.MSEC:SERIAL`.
pub(crate) fn push_event_id(out: &mut Vec<u8>, time: AuditTime, serial: u64) {
    push_u64(out, time.sec);
    out.push(b'.');
    let ms = time.msec.min(999);
    out.push(b'0' + (ms / 100) as u8);
    out.push(b'0' + (ms / 10 % 10) as u8);
    out.push(b'0' + (ms % 10) as u8);
    out.push(b':');
    push_u64(out, serial);
}

impl JsonWriter {
    /// A writer with empty buffers.
    pub fn new() -> JsonWriter {
        JsonWriter::default()
    }

    /// Appends one JSON object (no newline) for the event made of `records`
    /// (each in auditd's string format, without newline): `EXECVE` records
    /// are joined into one command line, `EOE` records are left out unless
    /// they are all there is.
    pub fn write_event(&mut self, records: &[&[u8]], out: &mut Vec<u8>) {
        self.write(records, true, None, out);
    }

    /// [`JsonWriter::write_event`] with the name of the dispatcher input
    /// the event arrived on, as `"ORIGIN"` after `"ID"` and `"NODE"`.
    pub fn write_event_from(&mut self, records: &[&[u8]], origin: Option<&str>, out: &mut Vec<u8>) {
        self.write(records, true, origin, out);
    }

    /// [`JsonWriter::write_record`] with the name of the dispatcher input
    /// the record arrived on (`"ORIGIN"`).
    pub fn write_record_from(&mut self, record: &[u8], origin: Option<&str>, out: &mut Vec<u8>) {
        self.write(&[record], false, origin, out);
    }

    /// Appends one JSON object (no newline) for a single record; an `EXECVE`
    /// record keeps its `aN`/`aN[i]` fields (its command line may continue
    /// in other records).
    pub fn write_record(&mut self, record: &[u8], out: &mut Vec<u8>) {
        self.write(&[record], false, None, out);
    }

    fn write(&mut self, records: &[&[u8]], event: bool, origin: Option<&str>, out: &mut Vec<u8>) {
        self.records.clear();
        let mut unparsed: Vec<usize> = Vec::new();
        let mut id: Option<(AuditTime, u64, Option<&[u8]>)> = None;
        let mut only_eoe = true;
        for (index, text) in records.iter().enumerate() {
            let raw = record::split_enrichment(text).0;
            let Some(p) = record::parse_parts(raw) else {
                unparsed.push(index);
                continue;
            };
            if id.is_none() {
                id = Some((p.time, p.serial, p.node));
            }
            let rtype = record_types::number(p.type_name);
            only_eoe &= rtype == Some(record_types::EOE);
            let name_start = p.type_name.as_ptr() as usize - text.as_ptr() as usize;
            let mut body = p.after_stamp;
            if raw.get(body) == Some(&b' ') {
                body += 1;
            }
            self.records.push(Rec {
                index,
                rtype,
                name: Span {
                    start: name_start,
                    end: name_start + p.type_name.len(),
                },
                body: Span {
                    start: body,
                    end: raw.len(),
                },
            });
        }
        // Group by type name, in order of first appearance.
        let mut ngroups = 0;
        for (ri, r) in self.records.iter().enumerate() {
            if r.rtype == Some(record_types::EOE) && !only_eoe {
                continue;
            }
            let name = r.name.of(records[r.index]);
            let found = self.groups[..ngroups].iter().position(|g| {
                let f = &self.records[g.first];
                f.name.of(records[f.index]) == name
            });
            match found {
                Some(g) => self.groups[g].members.push(ri),
                None => {
                    if ngroups == self.groups.len() {
                        self.groups.push(Group::default());
                    }
                    let g = &mut self.groups[ngroups];
                    g.first = ri;
                    g.members.clear();
                    g.members.push(ri);
                    ngroups += 1;
                }
            }
        }

        out.push(b'{');
        let mut first = true;
        if let Some((time, serial, node)) = id {
            out.extend_from_slice(b"\"ID\":\"");
            push_event_id(out, time, serial);
            out.push(b'"');
            if let Some(node) = node {
                out.extend_from_slice(b",\"NODE\":");
                write_str(out, node);
            }
            first = false;
        }
        if let Some(origin) = origin {
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(b"\"ORIGIN\":");
            write_str(out, origin.as_bytes());
            first = false;
        }
        for gi in 0..ngroups {
            let lead = self.records[self.groups[gi].first];
            let text = records[lead.index];
            let name = lead.name.of(text);
            if !first {
                out.push(b',');
            }
            first = false;
            write_str(out, name);
            out.push(b':');
            if event && lead.rtype == Some(record_types::EXECVE) {
                self.write_execve(records, gi, out);
                continue;
            }
            let members = std::mem::take(&mut self.groups[gi].members);
            if is_single(lead.rtype) {
                for (k, &ri) in members.iter().enumerate() {
                    if k > 0 {
                        // Never produced by auditd: keep it under NAME#k.
                        out.push(b',');
                        out.push(b'"');
                        write_str_body(out, name);
                        out.push(b'#');
                        push_u64(out, k as u64 + 1);
                        out.extend_from_slice(b"\":");
                    }
                    let r = self.records[ri];
                    self.write_record_object(records[r.index], r, out);
                }
            } else {
                out.push(b'[');
                for (k, &ri) in members.iter().enumerate() {
                    if k > 0 {
                        out.push(b',');
                    }
                    let r = self.records[ri];
                    self.write_record_object(records[r.index], r, out);
                }
                out.push(b']');
            }
            self.groups[gi].members = members;
        }
        if !unparsed.is_empty() {
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(b"\"UNPARSED\":[");
            for (k, &i) in unparsed.iter().enumerate() {
                if k > 0 {
                    out.push(b',');
                }
                write_str(out, records[i]);
            }
            out.push(b']');
        }
        out.push(b'}');
    }

    /// `{"argc":N,"ARGV":[...]}` from every EXECVE record of the group.
    fn write_execve(&mut self, records: &[&[u8]], gi: usize, out: &mut Vec<u8>) {
        self.argv.clear();
        let members = std::mem::take(&mut self.groups[gi].members);
        for (k, &ri) in members.iter().enumerate() {
            let r = self.records[ri];
            let body = r.body.of(records[r.index]);
            let (fields, _) = self.fields.parse(record_types::EXECVE, body, Part::Raw);
            self.argv.add(k, body, fields);
        }
        out.push(b'{');
        if let Some((k, span)) = self.argv.argc() {
            let r = self.records[members[k]];
            let body = r.body.of(records[r.index]);
            out.extend_from_slice(b"\"argc\":");
            let v = span.of(body);
            if crate::format::fields::is_exact_decimal(v) {
                out.extend_from_slice(v);
            } else {
                write_str(out, v);
            }
            out.push(b',');
        }
        out.extend_from_slice(b"\"ARGV\":[");
        for (i, a) in self.argv.args().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match a {
                Some(a) => write_str(out, a),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.extend_from_slice(b"]}");
        self.groups[gi].members = members;
    }

    /// One record's fields (raw, then enrichment) as an object.
    fn write_record_object(&mut self, text: &[u8], r: Rec, out: &mut Vec<u8>) {
        let rtype = r.rtype.unwrap_or(0);
        let body = r.body.of(text);
        self.keys.clear();
        out.push(b'{');
        let mut first = true;
        let (fields, _) = self.fields.parse(rtype, body, Part::Raw);
        for f in fields {
            write_field(
                rtype,
                body,
                f,
                &mut self.nested,
                &mut self.keys,
                &mut self.scratch,
                &mut first,
                out,
            );
        }
        if let (_, Some(enr)) = record::split_enrichment(text) {
            let (fields, _) = self.enrichment.parse(rtype, enr, Part::Enrichment);
            for f in fields {
                write_field(
                    rtype,
                    enr,
                    f,
                    &mut self.nested,
                    &mut self.keys,
                    &mut self.scratch,
                    &mut first,
                    out,
                );
            }
        }
        out.push(b'}');
    }
}

/// Writes `"key":value` (with a leading comma unless first).
#[allow(clippy::too_many_arguments)]
fn write_field(
    rtype: u32,
    text: &[u8],
    f: &Field,
    nested: &mut Fields,
    keys: &mut Keys,
    scratch: &mut Vec<u8>,
    first: &mut bool,
    out: &mut Vec<u8>,
) {
    let mut key = f.key.bytes(text);
    let proctitle = rtype == record_types::PROCTITLE && key == b"proctitle";
    if proctitle {
        key = b"ARGV";
    }
    write_key(key, keys, first, out);
    match f.value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Number(s) => out.extend_from_slice(s.of(text)),
        Value::Str(s) if proctitle => {
            out.push(b'[');
            write_str(out, s.of(text));
            out.push(b']');
        }
        Value::Str(s) => write_str(out, s.of(text)),
        Value::Hex(s) => {
            scratch.clear();
            decode_hex(s.of(text), scratch);
            if proctitle {
                out.push(b'[');
                for (i, arg) in scratch.split(|&b| b == 0).enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_str(out, arg);
                }
                out.push(b']');
            } else {
                write_str(out, scratch);
            }
        }
        Value::Words(s) => {
            out.push(b'[');
            let words = s.of(text).split(|&b| b == b' ').filter(|w| !w.is_empty());
            for (i, w) in words.enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, w);
            }
            out.push(b']');
        }
        Value::Nested(s) => {
            let inner = s.of(text);
            let (fields, pairs) = nested.parse(rtype, inner, Part::Message);
            if !pairs {
                write_str(out, inner);
                return;
            }
            let mut inner_keys = Keys::default();
            let mut inner_first = true;
            out.push(b'{');
            for f in fields {
                write_key(f.key.bytes(inner), &mut inner_keys, &mut inner_first, out);
                match f.value {
                    Value::Null => out.extend_from_slice(b"null"),
                    Value::Number(s) => out.extend_from_slice(s.of(inner)),
                    Value::Hex(s) => {
                        scratch.clear();
                        decode_hex(s.of(inner), scratch);
                        write_str(out, scratch);
                    }
                    Value::Words(s) => {
                        out.push(b'[');
                        let words = s.of(inner).split(|&b| b == b' ').filter(|w| !w.is_empty());
                        for (i, w) in words.enumerate() {
                            if i > 0 {
                                out.push(b',');
                            }
                            write_str(out, w);
                        }
                        out.push(b']');
                    }
                    Value::Str(s) | Value::Nested(s) => write_str(out, s.of(inner)),
                }
            }
            out.push(b'}');
        }
    }
}

fn write_key(key: &[u8], keys: &mut Keys, first: &mut bool, out: &mut Vec<u8>) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    let seen = keys.add(key);
    out.push(b'"');
    write_str_body(out, key);
    if seen > 0 {
        out.push(b'#');
        push_u64(out, seen as u64 + 1);
    }
    out.extend_from_slice(b"\":");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(records: &[&str]) -> serde_json::Value {
        let recs: Vec<&[u8]> = records.iter().map(|r| r.as_bytes()).collect();
        let mut out = Vec::new();
        JsonWriter::new().write_event(&recs, &mut out);
        serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
    }

    #[test]
    fn syscall_event() {
        let v = event(&[
            "type=SYSCALL msg=audit(1795422202.066:399895): arch=c000003e syscall=44 success=yes exit=60 a0=3 items=2 ses=4294967295 comm=\"auditd\" key=(null)\u{1d}ARCH=x86_64 SYSCALL=sendto AUID=\"unset\"",
            "type=CWD msg=audit(1795422202.066:399895): cwd=2F746D702F6120622763",
            "type=PATH msg=audit(1795422202.066:399895): item=0 name=\"/etc\" inode=12 mode=040755",
            "type=PATH msg=audit(1795422202.066:399895): item=1 name=(null) inode=13 mode=0100644",
            "type=PROCTITLE msg=audit(1795422202.066:399895): proctitle=617564697464002D6E",
            "type=EOE msg=audit(1795422202.066:399895):",
        ]);
        assert_eq!(v["ID"], "1795422202.066:399895");
        assert_eq!(v["SYSCALL"]["syscall"], 44);
        assert_eq!(v["SYSCALL"]["a0"], "3");
        assert_eq!(v["SYSCALL"]["ses"], 4294967295u64);
        assert_eq!(v["SYSCALL"]["key"], serde_json::Value::Null);
        assert_eq!(v["SYSCALL"]["SYSCALL"], "sendto");
        assert_eq!(v["SYSCALL"]["AUID"], "unset");
        assert_eq!(v["CWD"]["cwd"], "/tmp/a b'c");
        assert_eq!(v["PATH"][1]["mode"], "0100644");
        assert_eq!(v["PATH"][1]["name"], serde_json::Value::Null);
        assert_eq!(v["PROCTITLE"]["ARGV"], serde_json::json!(["auditd", "-n"]));
        assert!(v.get("EOE").is_none());
    }

    #[test]
    fn execve_split_over_records_is_joined() {
        let v = event(&[
            "type=SYSCALL msg=audit(1.000:7): syscall=59",
            "type=EXECVE msg=audit(1.000:7): argc=3 a0=\"echo\" a1_len=8 a1[0]=61206220",
            "type=EXECVE msg=audit(1.000:7): a1[1]=FF206420 a2=\"last\"",
        ]);
        assert_eq!(v["EXECVE"]["argc"], 3);
        assert_eq!(
            v["EXECVE"]["ARGV"],
            serde_json::json!(["echo", "a b %FF d ", "last"])
        );
    }

    #[test]
    fn records_mode_keeps_pieces() {
        let mut out = Vec::new();
        JsonWriter::new().write_record(
            b"type=EXECVE msg=audit(1.000:7): argc=3 a0=\"echo\" a1_len=8 a1[0]=61206220",
            &mut out,
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["EXECVE"]["a1[0]"], "a b ");
        assert_eq!(v["EXECVE"]["a1_len"], 8);
    }

    #[test]
    fn duplicates_and_oddities_stay_valid() {
        let v = event(&[
            "node=web type=USER msg=audit(1.000:9): pid=1 pid=2 msg='free text only'",
            "garbage line",
        ]);
        assert_eq!(v["NODE"], "web");
        assert_eq!(v["USER"]["pid"], 1);
        assert_eq!(v["USER"]["pid#2"], 2);
        assert_eq!(v["USER"]["msg"], "free text only");
        assert_eq!(v["UNPARSED"][0], "garbage line");
        let v = event(&[
            "type=SYSCALL msg=audit(1.000:9): a=1",
            "type=SYSCALL msg=audit(1.000:9): a=2",
        ]);
        assert_eq!(v["SYSCALL#2"]["a"], 2);
    }

    #[test]
    fn user_records() {
        let v = event(&["type=USER_AUTH msg=audit(1.000:9): pid=900 uid=0 auid=1000 ses=2 msg='op=PAM:authentication grantors=pam_unix acct=\"alice\" exe=\"/usr/bin/sudo\" hostname=? addr=? terminal=/dev/pts/0 res=success'\u{1d}UID=\"root\" AUID=\"alice\""]);
        assert_eq!(v["USER_AUTH"]["msg"]["acct"], "alice");
        assert_eq!(v["USER_AUTH"]["msg"]["res"], "success");
        assert_eq!(v["USER_AUTH"]["AUID"], "alice");
    }
}
