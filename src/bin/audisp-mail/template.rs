//! Subject and body templates: text with `{name}` placeholders filled from
//! an audit event (or a digest), `{{` and `}}` for literal braces.
//!
//! Names ([`EventView::value`]): `host` (this machine), `id`
//! (`SEC.MSEC:SERIAL`), `time` (the event's time, UTC), `node`, `type` (of
//! the event's first record), `types` (every type, in order), `count` (its
//! records), `records` (auditd's text of every record, one per line, the
//! 0x1D byte before auditd's interpretations shown as a space),
//! `json` (the event as audisp's JSON); any other name is a field of the
//! event's records, decoded as in the JSON (`exe`, `auid`, `AUID`, `key`…):
//! `TYPE.field` takes it from records of that type (`SYSCALL.exe`),
//! `field` from the first record that has it, looking inside the `msg='…'`
//! of user-space records too (`acct`, `op`). A name the event does not
//! have is written `-`.

use std::fmt::Write as _;

use serde_json::Value;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Name(String),
}

impl Template {
    /// Parses `text`; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let rest = &text[i + 1..];
                    let end = rest.find('}').ok_or_else(|| {
                        format!("has a '{{' at character {} that is never closed (write {{{{ for a brace)", i + 1)
                    })?;
                    let name = &rest[..end];
                    let ok = !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
                    if !ok {
                        return Err(format!(
                            "has {{{name}}} at character {}, which is not a name (letters, digits, '_', '.', '-'; {{{{ for a brace)",
                            i + 1
                        ));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Name(name.to_string()));
                    for _ in 0..=end {
                        chars.next();
                    }
                }
                '}' => {
                    return Err(format!(
                        "has a '}}' at character {} without its '{{' (write }}}} for a brace)",
                        i + 1
                    ))
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Template(parts))
    }

    /// The text with every name replaced by `value(name)`.
    pub fn render(&self, value: &dyn Fn(&str) -> String) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Name(n) => out.push_str(&value(n)),
            }
        }
        out
    }
}

/// One audit event, as templates see it.
pub struct EventView {
    /// This machine's name.
    pub host: String,
    /// The event's records, auditd's text.
    pub records: Vec<String>,
    /// The event as audisp's JSON.
    pub json: Value,
}

impl EventView {
    /// The event's `SEC.MSEC:SERIAL`, or `-`.
    pub fn id(&self) -> String {
        self.json["ID"].as_str().unwrap_or("-").to_string()
    }

    /// The event's time as seconds since the epoch, if it has one.
    pub fn epoch(&self) -> Option<u64> {
        self.json["ID"].as_str()?.split('.').next()?.parse().ok()
    }

    /// The event's time, UTC (`2026-12-06 22:56:11.858 UTC`).
    pub fn time(&self) -> String {
        let Some(id) = self.json["ID"].as_str() else {
            return "-".into();
        };
        let ms = id
            .split_once('.')
            .and_then(|(_, r)| r.split(':').next())
            .unwrap_or("000");
        match self.epoch() {
            Some(s) => format!("{}.{ms} UTC", utc(s)),
            None => "-".into(),
        }
    }

    /// The record type names, in order of first appearance.
    fn types(&self) -> Vec<&str> {
        let mut v: Vec<&str> = Vec::new();
        for r in &self.records {
            let t = r
                .split("type=")
                .nth(1)
                .and_then(|t| t.split(' ').next())
                .unwrap_or("-");
            if !v.contains(&t) {
                v.push(t);
            }
        }
        v
    }

    /// The value of placeholder `name` (see the module documentation).
    pub fn value(&self, name: &str) -> String {
        match name {
            "host" => self.host.clone(),
            "id" => self.id(),
            "time" => self.time(),
            "node" => self.json["NODE"].as_str().unwrap_or("-").to_string(),
            "type" => self.types().first().copied().unwrap_or("-").to_string(),
            "types" => self.types().join(","),
            "count" => self.records.len().to_string(),
            "records" => self.records.join("\n").replace('\x1d', " "),
            "json" => self.json.to_string(),
            _ => self.field(name).unwrap_or_else(|| "-".into()),
        }
    }

    /// A field of the event's records: `TYPE.field` or `field`.
    fn field(&self, name: &str) -> Option<String> {
        let obj = self.json.as_object()?;
        // A user-space record's `msg='…'` is an object of its own fields.
        let in_record = |rec: &Value, key: &str| {
            rec.get(key)
                .or_else(|| rec.get("msg").and_then(|m| m.as_object()?.get(key)))
                .map(show)
        };
        let in_type = |v: &Value, key: &str| match v {
            Value::Array(items) => items.iter().find_map(|r| in_record(r, key)),
            other => in_record(other, key),
        };
        if let Some((ty, key)) = name.split_once('.') {
            return in_type(obj.get(ty)?, key);
        }
        obj.iter()
            .filter(|(k, _)| *k != "ID" && *k != "NODE")
            .find_map(|(_, v)| in_type(v, name))
    }
}

/// A JSON value as text in a mail: strings bare, arrays space-separated,
/// `null` as `(null)`.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "(null)".into(),
        Value::Array(items) => {
            let mut out = String::new();
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(&show(it));
            }
            out
        }
        other => other.to_string(),
    }
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let mut s = String::new();
    let _ = write!(
        s,
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> EventView {
        let records = [
            "type=SYSCALL msg=audit(1795422202.066:399895): arch=c000003e syscall=59 success=yes exit=0 auid=65534 uid=0 comm=\"id\" exe=\"/usr/bin/id\" key=\"exec\"\x1dAUID=\"nobody\" UID=\"root\"",
            "type=EXECVE msg=audit(1795422202.066:399895): argc=2 a0=\"id\" a1=\"-u\"",
            "type=PATH msg=audit(1795422202.066:399895): item=0 name=\"/usr/bin/id\"",
            "type=PATH msg=audit(1795422202.066:399895): item=1 name=\"/lib64/ld-linux-x86-64.so.2\"",
        ];
        let mut w = audisp::format::JsonWriter::new();
        let mut out = Vec::new();
        let recs: Vec<&[u8]> = records.iter().map(|r| r.as_bytes()).collect();
        w.write_event(&recs, &mut out);
        EventView {
            host: "h1".into(),
            records: records.iter().map(|r| r.to_string()).collect(),
            json: serde_json::from_slice(&out).unwrap(),
        }
    }

    #[test]
    fn names_are_filled_from_the_event() {
        let v = view();
        let t = Template::parse(
            "{type} on {host}: {exe} by {AUID} ({auid}) {{ {SYSCALL.key} {PATH.name} {EXECVE.ARGV} {nope} }} {count} {types}",
        )
        .unwrap();
        assert_eq!(
            t.render(&|n| v.value(n)),
            "SYSCALL on h1: /usr/bin/id by nobody (65534) { exec /usr/bin/id id -u - } 4 SYSCALL,EXECVE,PATH"
        );
        assert_eq!(v.value("time"), "2026-11-23 08:23:22.066 UTC");
        assert_eq!(v.value("id"), "1795422202.066:399895");
        assert_eq!(v.value("records").lines().count(), 4);
    }

    #[test]
    fn fields_inside_a_user_message_are_found() {
        let rec = "type=USER_AUTH msg=audit(1795422202.594:400565): pid=369 uid=0 auid=65534 ses=54 msg='op=PAM:authentication acct=\"alice\" exe=\"/usr/bin/sudo\" res=success'";
        let mut out = Vec::new();
        audisp::format::JsonWriter::new().write_event(&[rec.as_bytes()], &mut out);
        let v = EventView {
            host: "h".into(),
            records: vec![rec.into()],
            json: serde_json::from_slice(&out).unwrap(),
        };
        assert_eq!(v.value("acct"), "alice");
        assert_eq!(v.value("USER_AUTH.exe"), "/usr/bin/sudo");
        assert_eq!(v.value("pid"), "369");
    }

    #[test]
    fn mistakes_are_explained() {
        for (text, needle) in [
            ("a {type", "never closed"),
            ("a } b", "without its '{'"),
            ("a {} b", "is not a name"),
            ("a {x y} b", "is not a name"),
        ] {
            let e = Template::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(4_102_444_799), "2099-12-31 23:59:59");
    }
}
