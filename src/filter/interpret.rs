//! Interpreted values, for `i=` and `i!=`, and which fields have numeric
//! values, for `==`, `<`… — the parts of libauparse's interpretation that a
//! filter can reproduce without system lookups.
//!
//! A field's interpreted value is, in this order:
//!
//! 1. what auditd's ENRICHED format put after the record's 0x1D byte under
//!    the field's name in upper case (`AUID="alice"`, `SYSCALL=openat`,
//!    `ARCH=x86_64`, `SADDR={ … }`), unless it starts with `unknown-`; the
//!    quotes of a user or group name are removed and a hex-encoded name is
//!    decoded, as auparse does;
//! 2. otherwise, by the field's kind:
//!    * uid and gid fields: `unset` for 4294967295 (or -1), `root` for 0,
//!      else the number as written — no user database is consulted, so a
//!      record without enrichment (auditd's `log_format = RAW`, records
//!      forwarded from another host) compares by number;
//!    * `ses`: `unset` for 4294967295, else the number;
//!    * `res`, `result`: `yes` for 1, `no` for 0, `unset` for other
//!      numbers, the text as written otherwise (`success`, `failed`);
//!    * fields the kernel hex-encodes (`exe`, `comm`, `name`, `cwd`,
//!      `proctitle`, `EXECVE` arguments, `key`…, the list of
//!      [`crate::format::fields::is_escaped`]): without quotes when quoted,
//!      decoded when hex (up to a NUL byte; `proctitle`'s NUL separators
//!      become spaces);
//!    * any other field: the value as written, quotes included. auparse
//!      would translate more (errno names for `exit`, permission and mode
//!      bits, syscall arguments, capability sets…); this filter does not,
//!      so `i=` on those fields compares the written value.
//!
//! Like auparse (its default `AUPARSE_ESC_TTY`), a locally interpreted value
//! shows control characters as `\ooo` (a tab is `\011`).

use crate::format::fields::{decode_hex, is_escaped};

/// Fields whose value is a user id (auparse's `AUPARSE_TYPE_UID`).
const UID_FIELDS: &[&str] = &[
    "auid",
    "uid",
    "euid",
    "suid",
    "fsuid",
    "ouid",
    "oauid",
    "old-auid",
    "iuid",
    "id",
    "inode_uid",
    "sauid",
    "obj_uid",
];

/// Fields whose value is a group id (auparse's `AUPARSE_TYPE_GID`).
const GID_FIELDS: &[&str] = &[
    "obj_gid",
    "gid",
    "egid",
    "sgid",
    "fsgid",
    "ogid",
    "igid",
    "inode_gid",
    "new_gid",
];

/// Whether a field has a numeric value, so that `==`, `!==`, `<`, `<=`, `>`
/// and `>=` apply to it: auparse allows them on uid and gid fields only.
pub(crate) fn has_value(name: &str) -> bool {
    UID_FIELDS.contains(&name) || GID_FIELDS.contains(&name)
}

/// How a field's value is interpreted when auditd did not enrich it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A uid or gid.
    Id,
    /// `ses`.
    Session,
    /// `res`, `result`.
    Success,
    /// Hex-encoded when it holds unusual bytes.
    Escaped,
    /// `proctitle`: hex-encoded arguments separated by NUL bytes.
    Proctitle,
    /// `key`: hex-encoded when it holds several keys.
    Key,
    /// Anything else: the value as written.
    Plain,
}

/// The kind of field `name` in a record of type `rtype`.
pub(crate) fn kind(rtype: u32, name: &[u8]) -> Kind {
    match name {
        b"ses" => return Kind::Session,
        b"res" | b"result" => return Kind::Success,
        b"proctitle" => return Kind::Proctitle,
        b"key" => return Kind::Key,
        _ => {}
    }
    let text = std::str::from_utf8(name).unwrap_or("");
    if has_value(text) {
        Kind::Id
    } else if is_escaped(rtype, name) {
        Kind::Escaped
    } else {
        Kind::Plain
    }
}

/// The interpreted value of a field of kind `kind` written as `raw` (as
/// written, quotes included), given what auditd's enrichment says about it
/// (`enriched`). The result borrows from the inputs or from the buffers.
pub(crate) fn interpret<'a>(
    kind: Kind,
    raw: &'a [u8],
    enriched: Option<&'a [u8]>,
    buf: &'a mut Vec<u8>,
    escaped: &'a mut Vec<u8>,
) -> &'a [u8] {
    if let Some(e) = enriched.filter(|e| !e.starts_with(b"unknown-")) {
        return if kind == Kind::Id {
            print_escaped(e, buf)
        } else {
            e
        };
    }
    let out: &[u8] = match kind {
        Kind::Id => match parse_id(raw) {
            Some(u32::MAX) => b"unset",
            Some(0) => b"root",
            _ => raw,
        },
        Kind::Session if raw == b"4294967295" => b"unset",
        Kind::Success if raw.first().is_some_and(u8::is_ascii_digit) => match parse_id(raw) {
            Some(1) => b"yes",
            Some(0) => b"no",
            _ => b"unset",
        },
        Kind::Escaped | Kind::Key => until_nul(print_escaped(raw, buf)),
        Kind::Proctitle => match unescape(raw, buf) {
            Some(text) => text,
            None => {
                // The arguments are separated by NUL bytes: show spaces.
                for b in buf.iter_mut().filter(|b| **b == 0) {
                    *b = b' ';
                }
                buf
            }
        },
        Kind::Session | Kind::Success | Kind::Plain => raw,
    };
    tty_escaped(out, escaped)
}

/// auparse's `print_escaped`: a quoted value up to its closing quote (a
/// single space if it has none, as when a space cut it), hex digits
/// decoded (a leading `00`, the NUL of an abstract socket name, skipped),
/// `(null)` and anything else as written.
fn print_escaped<'a>(v: &'a [u8], buf: &'a mut Vec<u8>) -> &'a [u8] {
    match unescape(v, buf) {
        Some(text) => text,
        None => buf,
    }
}

/// [`print_escaped`]'s work: the text to use, or `None` when it decoded
/// hex into `buf`.
fn unescape<'v>(v: &'v [u8], buf: &mut Vec<u8>) -> Option<&'v [u8]> {
    if let Some(rest) = v.strip_prefix(b"\"") {
        return Some(match memchr::memchr(b'"', rest) {
            Some(i) => &rest[..i],
            None => b" ",
        });
    }
    let src = v.strip_prefix(b"00").unwrap_or(v);
    if src.starts_with(b"(") {
        return Some(match memchr::memchr(b')', src) {
            Some(i) => &src[..=i],
            None => v,
        });
    }
    let run = src.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if run < 2 {
        return Some(v);
    }
    buf.clear();
    decode_hex(&src[..run], buf);
    None
}

/// A decoded value as a C string: up to its first NUL byte.
fn until_nul(v: &[u8]) -> &[u8] {
    match memchr::memchr(0, v) {
        Some(i) => &v[..i],
        None => v,
    }
}

/// auparse's default (`AUPARSE_ESC_TTY`) escaping of interpreted values:
/// control characters as `\ooo`.
fn tty_escaped<'a>(v: &'a [u8], out: &'a mut Vec<u8>) -> &'a [u8] {
    if !v.iter().any(|&b| b < 0x20) {
        return v;
    }
    out.clear();
    for &b in v {
        if b < 0x20 {
            out.extend_from_slice(&[
                b'\\',
                b'0' + (b >> 6),
                b'0' + ((b >> 3) & 7),
                b'0' + (b & 7),
            ]);
        } else {
            out.push(b);
        }
    }
    out
}

/// A number as C's `strtoul` reads it and auparse stores it: decimal digits
/// after an optional sign, wrapped to 32 bits (`-1` is 4294967295); `None`
/// when there are no digits.
pub(crate) fn parse_id(v: &[u8]) -> Option<u32> {
    let (negative, digits) = match v.first() {
        Some(b'-') => (true, &v[1..]),
        Some(b'+') => (false, &v[1..]),
        _ => (false, v),
    };
    let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 {
        return None;
    }
    // strtoul saturates at ULONG_MAX, whose low 32 bits are all ones.
    let value = digits[..n].iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    });
    let value = value.unwrap_or(u64::MAX);
    let value = if negative {
        value.wrapping_neg()
    } else {
        value
    };
    Some(value as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interp(kind: Kind, raw: &str, enriched: Option<&str>) -> String {
        let (mut buf, mut esc) = (Vec::new(), Vec::new());
        let out = interpret(
            kind,
            raw.as_bytes(),
            enriched.map(str::as_bytes),
            &mut buf,
            &mut esc,
        );
        String::from_utf8_lossy(out).into_owned()
    }

    #[test]
    fn kinds() {
        assert_eq!(kind(1300, b"auid"), Kind::Id);
        assert_eq!(kind(1300, b"new_gid"), Kind::Id);
        assert_eq!(kind(1300, b"ses"), Kind::Session);
        assert_eq!(kind(1100, b"res"), Kind::Success);
        assert_eq!(kind(1300, b"exe"), Kind::Escaped);
        assert_eq!(kind(1309, b"a1"), Kind::Escaped);
        assert_eq!(kind(1300, b"a1"), Kind::Plain);
        assert_eq!(kind(1327, b"proctitle"), Kind::Proctitle);
        assert_eq!(kind(1300, b"key"), Kind::Key);
        assert_eq!(kind(1300, b"tty"), Kind::Plain);
        assert!(has_value("old-auid") && has_value("gid") && !has_value("pid"));
    }

    #[test]
    fn enrichment_comes_first() {
        assert_eq!(interp(Kind::Id, "1000", Some("\"alice\"")), "alice");
        // A user name auditd had to hex-encode.
        assert_eq!(
            interp(Kind::Id, "1000", Some("6A6F686E20646F65")),
            "john doe"
        );
        assert_eq!(interp(Kind::Plain, "101", Some("openat")), "openat");
        // auditd did not know it then: interpret here.
        assert_eq!(interp(Kind::Id, "0", Some("unknown-uid(0)")), "root");
    }

    #[test]
    fn local_interpretations() {
        assert_eq!(interp(Kind::Id, "4294967295", None), "unset");
        assert_eq!(interp(Kind::Id, "-1", None), "unset");
        assert_eq!(interp(Kind::Id, "0", None), "root");
        assert_eq!(interp(Kind::Id, "1000", None), "1000");
        assert_eq!(interp(Kind::Session, "4294967295", None), "unset");
        assert_eq!(interp(Kind::Session, "3", None), "3");
        assert_eq!(interp(Kind::Success, "1", None), "yes");
        assert_eq!(interp(Kind::Success, "0", None), "no");
        assert_eq!(interp(Kind::Success, "7", None), "unset");
        assert_eq!(interp(Kind::Success, "success", None), "success");
        assert_eq!(
            interp(Kind::Escaped, "\"/usr/bin/cat\"", None),
            "/usr/bin/cat"
        );
        // A quoted value a space cut has no closing quote.
        assert_eq!(interp(Kind::Escaped, "\"/home/al", None), " ");
        assert_eq!(interp(Kind::Escaped, "2F746D702F612062", None), "/tmp/a b");
        assert_eq!(interp(Kind::Escaped, "(null)", None), "(null)");
        assert_eq!(interp(Kind::Escaped, "/usr/bin/x", None), "/usr/bin/x");
        assert_eq!(interp(Kind::Escaped, "00616263", None), "abc");
        assert_eq!(interp(Kind::Escaped, "61006263", None), "a");
        assert_eq!(interp(Kind::Escaped, "6109620A", None), "a\\011b\\012");
        assert_eq!(
            interp(Kind::Proctitle, "636174002F6574632F706173737764", None),
            "cat /etc/passwd"
        );
        assert_eq!(interp(Kind::Proctitle, "\"bash\"", None), "bash");
        assert_eq!(interp(Kind::Key, "\"exec\"", None), "exec");
        assert_eq!(interp(Kind::Plain, "(none)", None), "(none)");
        // auparse keeps the quotes of values it does not interpret.
        assert_eq!(interp(Kind::Plain, "\"x\"", None), "\"x\"");
    }

    #[test]
    fn ids_read_like_strtoul() {
        assert_eq!(parse_id(b"1000"), Some(1000));
        assert_eq!(parse_id(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_id(b"-1"), Some(u32::MAX));
        assert_eq!(parse_id(b"4294967296"), Some(0));
        assert_eq!(parse_id(b"99999999999999999999999"), Some(u32::MAX));
        assert_eq!(parse_id(b"12ab"), Some(12));
        assert_eq!(parse_id(b"(none)"), None);
        assert_eq!(parse_id(b""), None);
    }
}
