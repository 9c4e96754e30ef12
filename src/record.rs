//! Minimal parsing of one audit record: just enough to route it.
//!
//! Every record audisp handles is kept in one canonical text form, the line
//! auditd's `format = string` writes, without its newline:
//!
//! ```text
//! [node=NODE ]type=NAME msg=audit(SEC.MSEC:SERIAL): FIELDS[0x1D ENRICHMENT]
//! ```
//!
//! [`parse`] reads the node, the type, the timestamp and the serial from the
//! front of that line and nothing else: it runs on every record at millions of
//! records per second, so it never allocates, never validates UTF-8 and reads
//! only the header, once (plus the type-name lookup). [`body`] and
//! [`split_enrichment`] cut the rest of the line for consumers that need the
//! fields.

use crate::record_types;

/// The longest canonical record text audisp accepts, in bytes.
///
/// auditd never produces more than `type=` + the longest type name + ` msg=` +
/// 8970 payload bytes (about 9 KiB); the margin leaves room for records that
/// were forwarded by other tools, while still bounding every buffer.
pub const MAX_RECORD_LEN: usize = 10 * 1024;

/// The `SEC.MSEC` part of an audit timestamp: when the kernel (or auditd)
/// stamped the record. Together with the serial it identifies an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AuditTime {
    /// Seconds since the Unix epoch.
    pub sec: u64,
    /// Milliseconds within that second (0..=999).
    pub msec: u32,
}

/// What the router needs to know about a record, borrowed from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordInfo<'a> {
    /// The `node=` name the record was prefixed with, if any.
    pub node: Option<&'a [u8]>,
    /// The record type number (`type=SYSCALL` is 1300, `UNKNOWN[n]` is n).
    pub rtype: u32,
    /// The event's timestamp.
    pub time: AuditTime,
    /// The event's serial number; records of one event share time and serial.
    pub serial: u64,
}

/// The header of a record as written, before the type name is looked up.
///
/// The binary framing uses this to judge whether bytes look like a record
/// without depending on the type table (auditd may know names we do not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parts<'a> {
    /// The `node=` name, if present.
    pub node: Option<&'a [u8]>,
    /// The bytes between `type=` and ` msg=`.
    pub type_name: &'a [u8],
    /// The timestamp.
    pub time: AuditTime,
    /// The serial.
    pub serial: u64,
    /// Index of the first byte after `):`.
    pub after_stamp: usize,
}

/// Parses the routing header of a canonical record.
///
/// Accepts `[node=NODE ]type=NAME msg=audit(SEC.MSEC:SERIAL):…` where NAME is
/// a name [`record_types::number`] knows (including `UNKNOWN[n]`), MSEC has
/// exactly three digits, and NODE is a non-empty run of bytes without a
/// space. Returns `None` for anything else; the caller still delivers such
/// records, it just cannot route them by type or event.
pub fn parse(text: &[u8]) -> Option<RecordInfo<'_>> {
    let parts = parse_parts(text)?;
    Some(RecordInfo {
        node: parts.node,
        rtype: record_types::number(parts.type_name)?,
        time: parts.time,
        serial: parts.serial,
    })
}

/// The fields of a record: everything after `msg=audit(…):` and the single
/// space that follows it (the enrichment, if any, included).
///
/// Returns `None` if the header is not well formed; the type name is not
/// checked, so records of types audisp does not know still have a body.
pub fn body(text: &[u8]) -> Option<&[u8]> {
    let rest = &text[parse_parts(text)?.after_stamp..];
    Some(rest.strip_prefix(b" ").unwrap_or(rest))
}

/// The byte auditd puts between a record's raw fields and its enrichment
/// (`AUDIT_INTERP_SEPARATOR`).
pub const ENRICHMENT_SEPARATOR: u8 = 0x1D;

/// Splits a record at its first 0x1D byte into the raw record and the
/// enrichment auditd's ENRICHED log format appended (`AUID="alice" …`), the
/// way libauparse does. Records without enrichment return `(text, None)`.
pub fn split_enrichment(text: &[u8]) -> (&[u8], Option<&[u8]>) {
    match memchr::memchr(ENRICHMENT_SEPARATOR, text) {
        Some(i) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    }
}

/// Parses the header of a record without looking the type name up.
pub(crate) fn parse_parts(text: &[u8]) -> Option<Parts<'_>> {
    let mut i = 0;
    let mut node = None;
    if let Some(rest) = text.strip_prefix(b"node=") {
        let end = rest.iter().position(|&b| b == b' ')?;
        if end == 0 {
            return None;
        }
        node = Some(&rest[..end]);
        i = 5 + end + 1;
    }
    let rest = text[i..].strip_prefix(b"type=")?;
    i += 5;
    let end = rest.iter().position(|&b| b == b' ')?;
    if end == 0 {
        return None;
    }
    let type_name = &rest[..end];
    i += end + 1;
    if !text[i..].starts_with(b"msg=") {
        return None;
    }
    i += 4;
    let (time, serial, len) = parse_stamp(&text[i..])?;
    Some(Parts {
        node,
        type_name,
        time,
        serial,
        after_stamp: i + len,
    })
}

/// Parses `audit(SEC.MSEC:SERIAL):` at the start of `s` (the start of a
/// protocol V0 payload, or what follows `msg=`). Returns the timestamp, the
/// serial and the number of bytes the stamp occupies.
pub(crate) fn parse_stamp(s: &[u8]) -> Option<(AuditTime, u64, usize)> {
    let s0 = s.strip_prefix(b"audit(")?;
    let (sec, n_sec) = digits(s0, 20)?;
    let s1 = s0[n_sec..].strip_prefix(b".")?;
    let (msec, n_msec) = digits(s1, 3)?;
    if n_msec != 3 {
        return None;
    }
    let s2 = s1[n_msec..].strip_prefix(b":")?;
    let (serial, n_serial) = digits(s2, 20)?;
    if !s2[n_serial..].starts_with(b"):") {
        return None;
    }
    let len = 6 + n_sec + 1 + n_msec + 1 + n_serial + 2;
    // msec has exactly three digits, so it is below 1000 and fits a u32.
    let msec = msec as u32;
    Some((AuditTime { sec, msec }, serial, len))
}

/// Reads 1 to `max` leading ASCII digits as a u64; `None` if there are none,
/// more than `max`, or the value overflows.
fn digits(s: &[u8], max: usize) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    let mut n = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            break;
        }
        if n == max {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        n += 1;
    }
    (n > 0).then_some((value, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSCALL: &[u8] = b"type=SYSCALL msg=audit(1721000000.123:42): arch=c000003e syscall=257 \
success=yes exit=3 a0=ffffff9c a1=7ffd2b1c a2=0 a3=0 items=1 ppid=1 pid=1234 auid=1000 uid=0 \
gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 ses=3 comm=\"cat\" exe=\"/usr/bin/cat\" \
key=\"etc\"";

    #[test]
    fn parses_plain_record() {
        let info = parse(SYSCALL).unwrap();
        assert_eq!(info.node, None);
        assert_eq!(info.rtype, record_types::SYSCALL);
        assert_eq!(
            info.time,
            AuditTime {
                sec: 1_721_000_000,
                msec: 123
            }
        );
        assert_eq!(info.serial, 42);
    }

    #[test]
    fn parses_node_prefix() {
        let text =
            b"node=web-01.example.org type=USER_LOGIN msg=audit(1721000001.007:99): pid=812 \
uid=0 auid=1000 ses=4 msg='op=login id=1000 exe=\"/usr/sbin/sshd\" hostname=? addr=10.0.0.5 \
terminal=ssh res=success'";
        let info = parse(text).unwrap();
        assert_eq!(info.node, Some(&b"web-01.example.org"[..]));
        assert_eq!(info.rtype, 1112);
        assert_eq!(info.time.msec, 7);
        assert_eq!(info.serial, 99);
        // An empty node name or a node without a following type is refused.
        assert_eq!(parse(b"node= type=USER msg=audit(1.000:1): x"), None);
        assert_eq!(parse(b"node=host"), None);
        assert_eq!(parse(b"node=host msg=audit(1.000:1): x"), None);
    }

    #[test]
    fn parses_unknown_types() {
        let info = parse(b"type=UNKNOWN[1338] msg=audit(1721000000.500:7): op=x").unwrap();
        assert_eq!(info.rtype, 1338);
        // A name the table does not know is not routable...
        assert_eq!(
            parse(b"type=NOT_A_TYPE msg=audit(1721000000.500:7): op=x"),
            None
        );
        assert_eq!(
            parse(b"type=syscall msg=audit(1721000000.500:7): op=x"),
            None
        );
        // ...but its body can still be read.
        assert_eq!(
            body(b"type=NOT_A_TYPE msg=audit(1721000000.500:7): op=x"),
            Some(&b"op=x"[..])
        );
    }

    #[test]
    fn rejects_missing_or_garbled_timestamps() {
        for bad in [
            &b"type=SYSCALL msg=audit(): x"[..],
            b"type=SYSCALL msg=audit(1721000000:42): x",
            b"type=SYSCALL msg=audit(1721000000.12:42): x",
            b"type=SYSCALL msg=audit(1721000000.1234:42): x",
            b"type=SYSCALL msg=audit(1721000000.123:): x",
            b"type=SYSCALL msg=audit(1721000000.123:42 x",
            b"type=SYSCALL msg=audit(1721000000.123:42)",
            b"type=SYSCALL msg=audit(.123:42): x",
            b"type=SYSCALL msg=audit(17x1000000.123:42): x",
            b"type=SYSCALL msg=audit(99999999999999999999.123:42): x",
            b"type=SYSCALL msg=audit(1721000000.123:123456789012345678901): x",
            b"type=SYSCALL msg=(1721000000.123:42): x",
            b"type=SYSCALL audit(1721000000.123:42): x",
            b"type=SYSCALL  msg=audit(1721000000.123:42): x",
            b"type= msg=audit(1721000000.123:42): x",
            b"type=SYSCALL",
            b"msg=audit(1721000000.123:42): x",
            b"audit(1721000000.123:42): x",
            b"",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        // The largest values that fit are accepted.
        let info =
            parse(b"type=EOE msg=audit(18446744073709551615.999:18446744073709551615):").unwrap();
        assert_eq!(info.time.sec, u64::MAX);
        assert_eq!(info.serial, u64::MAX);
    }

    #[test]
    fn eoe_bodies_are_empty() {
        // V0 EOE converted by auditd keeps the kernel's trailing space.
        let v0 = b"type=EOE msg=audit(1721000000.123:42): ";
        assert_eq!(parse(v0).unwrap().rtype, record_types::EOE);
        assert_eq!(body(v0), Some(&b""[..]));
        let trimmed = b"type=EOE msg=audit(1721000000.123:42):";
        assert_eq!(body(trimmed), Some(&b""[..]));
    }

    #[test]
    fn very_long_inputs() {
        // A long record parses from its header alone.
        let mut text = SYSCALL.to_vec();
        text.extend(std::iter::repeat_n(b'a', 100_000));
        assert_eq!(parse(&text).unwrap().serial, 42);
        // A huge digit run is refused without overflowing.
        let mut text = b"type=SYSCALL msg=audit(".to_vec();
        text.extend(std::iter::repeat_n(b'9', 100_000));
        text.extend(b".123:1): x");
        assert_eq!(parse(&text), None);
        // A huge node name without a space is refused.
        let mut text = b"node=".to_vec();
        text.extend(std::iter::repeat_n(b'n', 100_000));
        assert_eq!(parse(&text), None);
    }

    #[test]
    fn enrichment_is_split_at_the_first_separator() {
        let text = b"type=USER_AUTH msg=audit(1721000002.250:120): pid=900 uid=0 auid=1000 \
ses=2 msg='op=PAM:authentication grantors=pam_unix acct=\"alice\" exe=\"/usr/bin/sudo\" \
hostname=? addr=? terminal=/dev/pts/0 res=success'\x1dUID=\"root\" AUID=\"alice\"";
        let info = parse(text).unwrap();
        assert_eq!(info.rtype, 1100);
        let (raw, enrichment) = split_enrichment(text);
        assert!(raw.ends_with(b"res=success'"));
        assert_eq!(enrichment, Some(&b"UID=\"root\" AUID=\"alice\""[..]));
        let b = body(raw).unwrap();
        assert!(b.starts_with(b"pid=900 "));
        assert!(b.ends_with(b"res=success'"));
        // Only the first separator splits.
        assert_eq!(
            split_enrichment(b"a\x1db\x1dc"),
            (&b"a"[..], Some(&b"b\x1dc"[..]))
        );
        assert_eq!(split_enrichment(SYSCALL), (SYSCALL, None));
        assert_eq!(split_enrichment(b"x\x1d"), (&b"x"[..], Some(&b""[..])));
    }

    #[test]
    fn stamp_lengths_are_exact() {
        let (time, serial, len) = parse_stamp(b"audit(1721000000.123:42): pid=1").unwrap();
        assert_eq!((time.sec, time.msec, serial), (1_721_000_000, 123, 42));
        assert_eq!(len, b"audit(1721000000.123:42):".len());
        let parts = parse_parts(SYSCALL).unwrap();
        assert_eq!(
            &SYSCALL[parts.after_stamp..parts.after_stamp + 6],
            b" arch="
        );
        assert_eq!(parts.type_name, b"SYSCALL");
    }
}
