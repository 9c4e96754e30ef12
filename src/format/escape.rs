//! JSON strings from arbitrary bytes: always valid UTF-8, reversibly.
//!
//! Audit values are bytes, not text: file names, arguments and user messages
//! may hold anything, including bytes that are not UTF-8. A JSON string must
//! be UTF-8, so [`write_str`] writes every valid UTF-8 sequence as itself
//! (with JSON's own escapes for `"`, `\` and control characters) and every
//! byte that is not part of a valid UTF-8 sequence as `%XX` (two upper-case
//! hex digits). So that this cannot be confused with text, a `%` that is
//! followed by two hex digits is itself written `%25`; any other `%` stays.
//!
//! [`unescape`] reverses it: after JSON decoding, replace every `%` followed by
//! two hex digits (either case) with the byte they name. Strings that were
//! valid UTF-8 without a `%XX`-like sequence (nearly all of them) come out
//! exactly as they went in.

/// Whether a byte can be copied into a JSON string without a closer look:
/// printable ASCII other than `"`, `\` and `%`.
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        t[b] = b != b'"' as usize && b != b'\\' as usize && b != b'%' as usize;
        b += 1;
    }
    t[0x7f] = true;
    t
};

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// The value of an ASCII hex digit (either case).
pub(crate) fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The length of the UTF-8 sequence a lead byte starts (0 if it cannot
/// start one).
fn utf8_width(b: u8) -> usize {
    match b {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 0,
    }
}

/// Appends `s` to `out` as a JSON string literal, quotes included, escaping
/// as the module documentation describes.
pub fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    write_str_body(out, s);
    out.push(b'"');
}

/// Like [`write_str`] without the surrounding quotes (to build one string
/// from several pieces).
pub fn write_str_body(out: &mut Vec<u8>, s: &[u8]) {
    let mut i = 0;
    let n = s.len();
    while i < n {
        // Copy the longest run of plain bytes at once.
        let run = i;
        while i < n && PLAIN[s[i] as usize] {
            i += 1;
        }
        out.extend_from_slice(&s[run..i]);
        if i == n {
            break;
        }
        let b = s[i];
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'%' => {
                let escaped =
                    i + 2 < n && hex_value(s[i + 1]).is_some() && hex_value(s[i + 2]).is_some();
                if escaped {
                    out.extend_from_slice(b"%25");
                } else {
                    out.push(b'%');
                }
            }
            0x00..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX_UPPER[(b >> 4) as usize]);
                out.push(HEX_UPPER[(b & 15) as usize]);
            }
            _ => {
                let w = utf8_width(b);
                if w > 1 && i + w <= n && std::str::from_utf8(&s[i..i + w]).is_ok() {
                    out.extend_from_slice(&s[i..i + w]);
                    i += w;
                    continue;
                }
                out.push(b'%');
                out.push(HEX_UPPER[(b >> 4) as usize]);
                out.push(HEX_UPPER[(b & 15) as usize]);
            }
        }
        i += 1;
    }
}

/// Reverses the `%XX` escape of [`write_str`] on an already JSON-decoded
/// string, giving back the original bytes.
pub fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex_value(b[i + 1]), hex_value(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &[u8]) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).expect("always UTF-8")
    }

    fn round_trip(s: &[u8]) {
        let j = json(s);
        let decoded: String = serde_json::from_str(&j).expect("valid JSON");
        assert_eq!(unescape(&decoded), s, "{j}");
    }

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(json(b"/usr/bin/cat"), "\"/usr/bin/cat\"");
        assert_eq!(json("ünïcødé".as_bytes()), "\"ünïcødé\"");
        assert_eq!(json(b"100% sure, %s"), "\"100% sure, %s\"");
    }

    #[test]
    fn json_escapes() {
        assert_eq!(
            json(b"a\"b\\c\nd\te\x01\x7f"),
            "\"a\\\"b\\\\c\\nd\\te\\u0001\x7f\""
        );
        assert_eq!(json(b"nul\0"), "\"nul\\u0000\"");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_percent_escaped() {
        assert_eq!(json(b"caf\xe9"), "\"caf%E9\"");
        assert_eq!(json(b"\xff\xfe"), "\"%FF%FE\"");
        // A truncated sequence at the end, an overlong form, a surrogate.
        assert_eq!(json(b"x\xe2\x82"), "\"x%E2%82\"");
        assert_eq!(json(b"\xc0\xaf"), "\"%C0%AF\"");
        assert_eq!(json(b"\xed\xa0\x80"), "\"%ED%A0%80\"");
        // A percent sign that would read as an escape is escaped itself.
        assert_eq!(json(b"%41 and %4"), "\"%2541 and %4\"");
    }

    #[test]
    fn everything_round_trips() {
        for s in [
            &b""[..],
            b"plain",
            b"%",
            b"%%",
            b"%2",
            b"%25",
            b"%zz%41%e9",
            b"\xff%FF",
            "ünï\u{1F600}".as_bytes(),
            b"\xf0\x9f\x98",
            b"tab\there\r\n",
        ] {
            round_trip(s);
        }
        let all: Vec<u8> = (0..=255u8).collect();
        round_trip(&all);
        let mut rev = all.clone();
        rev.reverse();
        round_trip(&rev);
    }
}
