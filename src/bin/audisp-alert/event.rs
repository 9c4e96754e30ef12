//! A matching event taken apart for its notice: its id as auditd prints
//! it, its record types, node and fields; and the journal entry made of
//! them.

use audisp::format::fields::{decode_hex, Field, Fields, Part, Value};
use audisp::protocol::Notice;
use audisp::record;
use audisp::record_types;
use audisp::systemd::journald::{Entry, MAX_FIELDS, MAX_NAME};

/// Most fields taken from one event (for the summary and the entry).
const MAX_COLLECT: usize = 1024;
/// Longest field value kept (longer ones are cut).
const MAX_VALUE: usize = 2048;

/// The event's fields, in record order.
#[derive(Debug, Default)]
pub struct EventFields {
    /// `audit(SECS.MSEC:SERIAL)`, or `audit(?)` when no record has a
    /// header audisp can read.
    pub id: String,
    /// `SECS.MSEC:SERIAL` (`AUDIT_ID=`, as audisp-journal writes it).
    pub audit_id: Option<String>,
    /// The `node=` the records came from.
    pub node: Option<String>,
    /// Record type names, in order.
    pub types: Vec<String>,
    /// (journal prefix, key as written, value): raw fields as
    /// `AUDIT_FIELD_`, `EXECVE` arguments as `AUDIT_EXECVE_`, auditd's
    /// interpretations as `AUDIT_ENRICHED_`.
    fields: Vec<(&'static str, String, Vec<u8>)>,
    /// Fields left out (over [`MAX_COLLECT`]).
    omitted: usize,
    parser: Fields,
    nested: Fields,
}

impl EventFields {
    /// Takes the event's records apart (replacing what was there).
    pub fn collect(&mut self, records: &[(u32, &[u8])]) {
        self.fields.clear();
        self.types.clear();
        self.omitted = 0;
        self.audit_id = None;
        self.node = None;
        for &(rtype, text) in records {
            self.types.push(record_types::display(rtype).into_owned());
            if self.audit_id.is_none() {
                if let Some(info) = record::parse(text) {
                    self.audit_id = Some(format!(
                        "{}.{:03}:{}",
                        info.time.sec, info.time.msec, info.serial
                    ));
                    self.node = info.node.map(|n| String::from_utf8_lossy(n).into_owned());
                }
            }
            let (raw, enrichment) = record::split_enrichment(text);
            let Some(body) = record::body(raw) else {
                continue;
            };
            let prefix = if rtype == record_types::EXECVE {
                "AUDIT_EXECVE_"
            } else {
                "AUDIT_FIELD_"
            };
            let mut found = Vec::new();
            let (fields, _) = self.parser.parse(rtype, body, Part::Raw);
            for f in fields {
                if let Value::Nested(s) = f.value {
                    let inner = s.of(body);
                    let (inner_fields, pairs) = self.nested.parse(rtype, inner, Part::Message);
                    if pairs {
                        for g in inner_fields {
                            found.extend(pair(prefix, inner, g));
                        }
                        continue;
                    }
                }
                found.extend(pair(prefix, body, f));
            }
            if let Some(enr) = enrichment {
                let (fields, _) = self.nested.parse(rtype, enr, Part::Enrichment);
                for f in fields {
                    found.extend(pair("AUDIT_ENRICHED_", enr, f));
                }
            }
            for f in found {
                if self.fields.len() < MAX_COLLECT {
                    self.fields.push(f);
                } else {
                    self.omitted += 1;
                }
            }
        }
        self.id = match &self.audit_id {
            Some(a) => format!("audit({a})"),
            None => "audit(?)".into(),
        };
    }

    /// The first value of field `key` (as written in the record:
    /// `exe`, or `AUID` for auditd's interpretation).
    pub fn first(&self, key: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(_, k, _)| k == key)
            .map(|(_, _, v)| v.as_slice())
    }

    /// Fills `entry` with the journal entry for `notice` of this event:
    /// `MESSAGE`, `MESSAGE_ID`, the rule, the event's id, summary and
    /// suppressed count, its record types and at most `max_fields` of its
    /// fields (the number left out in `AUDISP_FIELDS_OMITTED`).
    pub fn entry(&self, notice: &Notice, max_fields: usize, entry: &mut Entry) {
        entry.clear();
        let mut message = format!(
            "rule {} matched {}: {}",
            notice.rule, notice.event, notice.summary
        );
        if notice.suppressed > 0 {
            message.push_str(&format!(
                " ({} earlier matches not announced: rate limit)",
                notice.suppressed
            ));
        }
        head(entry, &message, notice);
        entry.add(b"AUDISP_EVENT", notice.event.as_bytes());
        entry.add(b"AUDISP_SUMMARY", notice.summary.as_bytes());
        if let Some(a) = &self.audit_id {
            entry.add(b"AUDIT_ID", a.as_bytes());
        }
        if let Some(n) = &self.node {
            entry.add(b"AUDIT_NODE", n.as_bytes());
        }
        for t in &self.types {
            entry.add(b"AUDIT_TYPE_NAME", t.as_bytes());
        }
        let mut omitted = self.omitted;
        let mut added = 0;
        let mut name = Vec::new();
        for (prefix, key, value) in &self.fields {
            name.clear();
            name.extend_from_slice(prefix.as_bytes());
            name.extend(key.bytes().map(|b| match b {
                b'a'..=b'z' => b.to_ascii_uppercase(),
                b'A'..=b'Z' | b'0'..=b'9' | b'_' => b,
                _ => b'_',
            }));
            if added >= max_fields || name.len() > MAX_NAME || entry.fields() + 1 >= MAX_FIELDS {
                omitted += 1;
                continue;
            }
            entry.add(&name, value);
            added += 1;
        }
        if omitted > 0 {
            entry.add(b"AUDISP_FIELDS_OMITTED", omitted.to_string().as_bytes());
        }
    }
}

/// The fields every entry of audisp-alert starts with.
fn head(entry: &mut Entry, message: &str, notice: &Notice) {
    entry.add(b"MESSAGE", message.as_bytes());
    entry.add(b"MESSAGE_ID", audisp::log_ids::ALERT_MATCH.as_bytes());
    entry.add(b"PRIORITY", b"4");
    entry.add(b"SYSLOG_IDENTIFIER", b"audisp-alert");
    entry.add(b"AUDISP_RULE", notice.rule.as_bytes());
    entry.add(
        b"AUDISP_SUPPRESSED",
        notice.suppressed.to_string().as_bytes(),
    );
}

/// The entry that reports, when audisp-alert stops, the matches of `rule`
/// its rate limit kept back since its last notice.
pub fn suppressed_entry(rule: &str, suppressed: u64, entry: &mut Entry) {
    entry.clear();
    let notice = Notice {
        rule: rule.to_string(),
        event: String::new(),
        summary: String::new(),
        suppressed,
    };
    let message = format!(
        "rule {rule}: {suppressed} matches not announced (rate limit) before audisp-alert stopped"
    );
    head(entry, &message, &notice);
}

/// One field as (prefix, key, value), hex decoded and cut to
/// [`MAX_VALUE`]; `(null)` values are left out.
fn pair(prefix: &'static str, text: &[u8], f: &Field) -> Option<(&'static str, String, Vec<u8>)> {
    let mut v = match f.value {
        Value::Null => return None,
        Value::Hex(s) => {
            let mut out = Vec::new();
            decode_hex(s.of(text), &mut out);
            out
        }
        Value::Str(s) | Value::Number(s) | Value::Words(s) | Value::Nested(s) => {
            s.of(text).to_vec()
        }
    };
    v.truncate(MAX_VALUE);
    let key = String::from_utf8_lossy(f.key.bytes(text)).into_owned();
    Some((prefix, key, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(entry: &Entry, name: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(entry.bytes()).into_owned();
        text.lines()
            .filter_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn entries_carry_the_notice_and_bounded_fields() {
        let mut e = EventFields::default();
        e.collect(&[
            (1112, &b"type=USER_LOGIN msg=audit(1700000000.300:103): pid=369 uid=0 auid=65534 ses=54 msg='op=login acct=\"mallory\" exe=\"/usr/sbin/sshd\" addr=198.51.100.7 res=failed'\x1dUID=\"root\""[..]),
        ]);
        assert_eq!(e.id, "audit(1700000000.300:103)");
        assert_eq!(e.first("acct"), Some(&b"mallory"[..]));
        let n = Notice {
            rule: "failed-login".into(),
            event: e.id.clone(),
            summary: "mallory failed".into(),
            suppressed: 3,
        };
        let mut entry = Entry::default();
        e.entry(&n, 100, &mut entry);
        assert_eq!(get(&entry, "MESSAGE_ID"), [audisp::log_ids::ALERT_MATCH]);
        assert_eq!(get(&entry, "AUDISP_RULE"), ["failed-login"]);
        assert_eq!(get(&entry, "AUDIT_ID"), ["1700000000.300:103"]);
        assert_eq!(get(&entry, "AUDISP_SUPPRESSED"), ["3"]);
        assert_eq!(get(&entry, "AUDIT_FIELD_ACCT"), ["mallory"]);
        assert_eq!(get(&entry, "AUDIT_FIELD_RES"), ["failed"]);
        assert_eq!(get(&entry, "AUDIT_ENRICHED_UID"), ["root"]);
        assert_eq!(get(&entry, "AUDIT_TYPE_NAME"), ["USER_LOGIN"]);
        assert!(get(&entry, "MESSAGE")[0].contains("3 earlier matches"));
        assert!(get(&entry, "AUDISP_FIELDS_OMITTED").is_empty());
        // At most max_fields of the event's fields; the rest counted.
        e.entry(&n, 2, &mut entry);
        assert_eq!(get(&entry, "AUDIT_FIELD_PID"), ["369"]);
        assert_eq!(get(&entry, "AUDIT_FIELD_UID"), ["0"]);
        assert!(get(&entry, "AUDIT_FIELD_AUID").is_empty());
        assert_eq!(get(&entry, "AUDISP_FIELDS_OMITTED"), ["8"]);
    }
}
