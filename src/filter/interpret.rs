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
//!      `proctitle`, `EXECVE` arguments, `key`…): decoded when hex, without
//!      quotes when quoted; `proctitle`'s NUL separators become spaces and a
//!      `key` holding several keys (separated by 0x01) gives the first;
//!    * any other field: the value as written, without its quotes. auparse
//!      would translate more (errno names for `exit`, permission and mode
//!      bits, syscall arguments, capability sets…); this filter does not,
//!      so `i=` on those fields compares the written value.

use crate::format::fields::{decode_hex, is_escaped, is_hex};

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

/// A value as the record holds it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written<'a> {
    /// The value without its quotes.
    pub text: &'a [u8],
    /// Whether it was quoted.
    pub quoted: bool,
}

/// The interpreted value of a field of kind `kind` written as `raw`, given
/// what auditd's enrichment says about it (`enriched`). The result borrows
/// from the inputs or from `buf`.
pub(crate) fn interpret<'a>(
    kind: Kind,
    raw: Written<'a>,
    enriched: Option<Written<'a>>,
    buf: &'a mut Vec<u8>,
) -> &'a [u8] {
    if let Some(e) = enriched.filter(|e| !e.text.starts_with(b"unknown-")) {
        return if kind == Kind::Id {
            unescape(e, buf)
        } else {
            e.text
        };
    }
    let v = raw.text;
    match kind {
        Kind::Id => match parse_id(v) {
            Some(u32::MAX) => b"unset",
            Some(0) => b"root",
            _ => v,
        },
        Kind::Session if v == b"4294967295" => b"unset",
        Kind::Success if v.first().is_some_and(u8::is_ascii_digit) => match parse_id(v) {
            Some(1) => b"yes",
            Some(0) => b"no",
            _ => b"unset",
        },
        Kind::Escaped => unescape(raw, buf),
        Kind::Proctitle => {
            if !decode(raw, buf) {
                return v;
            }
            for b in buf.iter_mut().filter(|b| **b == 0) {
                *b = b' ';
            }
            buf
        }
        Kind::Key => {
            let decoded = unescape(raw, buf);
            match memchr::memchr(1, decoded) {
                Some(i) => &decoded[..i],
                None => decoded,
            }
        }
        Kind::Session | Kind::Success | Kind::Plain => v,
    }
}

/// auparse's `print_escaped`: a quoted value without its quotes, hex decoded
/// (a leading `00`, the NUL of an abstract socket name, skipped), anything
/// else as written.
fn unescape<'a>(v: Written<'a>, buf: &'a mut Vec<u8>) -> &'a [u8] {
    if decode(v, buf) {
        buf
    } else {
        v.text
    }
}

/// Decodes `v` into `buf` if it is hex (and not quoted); false if it is not.
fn decode(v: Written<'_>, buf: &mut Vec<u8>) -> bool {
    if v.quoted || !is_hex(v.text) {
        return false;
    }
    let hex = v.text.strip_prefix(b"00").unwrap_or(v.text);
    buf.clear();
    decode_hex(hex, buf);
    true
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

    fn w(text: &str, quoted: bool) -> Written<'_> {
        Written {
            text: text.as_bytes(),
            quoted,
        }
    }

    fn interp(kind: Kind, raw: Written<'_>, enriched: Option<Written<'_>>) -> String {
        let mut buf = Vec::new();
        String::from_utf8_lossy(interpret(kind, raw, enriched, &mut buf)).into_owned()
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
        assert_eq!(
            interp(Kind::Id, w("1000", false), Some(w("alice", true))),
            "alice"
        );
        // A user name auditd had to hex-encode.
        assert_eq!(
            interp(
                Kind::Id,
                w("1000", false),
                Some(w("6A6F686E20646F65", false))
            ),
            "john doe"
        );
        assert_eq!(
            interp(Kind::Plain, w("101", false), Some(w("openat", false))),
            "openat"
        );
        // auditd did not know it then: interpret here.
        assert_eq!(
            interp(Kind::Id, w("0", false), Some(w("unknown-uid(0)", false))),
            "root"
        );
    }

    #[test]
    fn local_interpretations() {
        assert_eq!(interp(Kind::Id, w("4294967295", false), None), "unset");
        assert_eq!(interp(Kind::Id, w("-1", false), None), "unset");
        assert_eq!(interp(Kind::Id, w("0", false), None), "root");
        assert_eq!(interp(Kind::Id, w("1000", false), None), "1000");
        assert_eq!(interp(Kind::Session, w("4294967295", false), None), "unset");
        assert_eq!(interp(Kind::Session, w("3", false), None), "3");
        assert_eq!(interp(Kind::Success, w("1", false), None), "yes");
        assert_eq!(interp(Kind::Success, w("0", false), None), "no");
        assert_eq!(interp(Kind::Success, w("7", false), None), "unset");
        assert_eq!(interp(Kind::Success, w("success", false), None), "success");
        assert_eq!(
            interp(Kind::Escaped, w("/usr/bin/cat", true), None),
            "/usr/bin/cat"
        );
        assert_eq!(
            interp(Kind::Escaped, w("2F746D702F612062", false), None),
            "/tmp/a b"
        );
        assert_eq!(interp(Kind::Escaped, w("(null)", false), None), "(null)");
        assert_eq!(interp(Kind::Escaped, w("00616263", false), None), "abc");
        assert_eq!(
            interp(
                Kind::Proctitle,
                w("636174002F6574632F706173737764", false),
                None
            ),
            "cat /etc/passwd"
        );
        assert_eq!(interp(Kind::Proctitle, w("bash", true), None), "bash");
        assert_eq!(interp(Kind::Key, w("6F6E650174776F", false), None), "one");
        assert_eq!(interp(Kind::Key, w("exec", true), None), "exec");
        assert_eq!(interp(Kind::Plain, w("(none)", false), None), "(none)");
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
