//! Where a byte of a TOML string's value is in the file: the string as
//! written has quotes, perhaps a trimmed first newline and escapes, so a
//! position inside the value (where a filter expression is wrong) is not
//! the same distance from the opening quote in the file.

/// The byte offset within `raw` (a TOML string exactly as written, quotes
/// included: `'…'`, `"…"`, `'''…'''` or `"""…"""`) of byte `at` of its
/// value. An offset at or past the end of the value gives the closing
/// quote's position.
pub(super) fn raw_offset(raw: &str, at: usize) -> usize {
    let b = raw.as_bytes();
    let (quote, multi) = match b {
        [q @ (b'\'' | b'"'), r, s, ..] if r == q && s == q && b.len() >= 6 => (*q, true),
        [q @ (b'\'' | b'"'), ..] => (*q, false),
        _ => return at.min(raw.len()),
    };
    let mut i = if multi { 3 } else { 1 };
    let end = raw.len().saturating_sub(i);
    if multi {
        // A newline right after the opening quotes is not part of the value.
        if raw[i..].starts_with("\r\n") {
            i += 2;
        } else if raw[i..].starts_with('\n') {
            i += 1;
        }
    }
    let mut value = 0;
    while i < end {
        if quote == b'"' && b[i] == b'\\' {
            let (written, decoded) = escape(&raw[i..end], multi);
            if value + decoded > at {
                return i;
            }
            value += decoded;
            i += written;
            continue;
        }
        if value >= at {
            return i;
        }
        let len = raw[i..].chars().next().map_or(1, char::len_utf8);
        value += len;
        i += len;
    }
    end
}

/// The escape at the start of `s` (which starts with a backslash): how many
/// bytes it takes in the file and how many its value has.
fn escape(s: &str, multi: bool) -> (usize, usize) {
    let b = s.as_bytes();
    match b.get(1) {
        Some(b'u') => (6, hex_char(s.get(2..6)).map_or(1, char::len_utf8)),
        Some(b'U') => (10, hex_char(s.get(2..10)).map_or(1, char::len_utf8)),
        // A backslash at the end of a line in a multi-line string: the
        // line break and the blanks after it are not part of the value.
        Some(b' ' | b'\t' | b'\r' | b'\n') if multi => {
            let skipped = s[1..]
                .bytes()
                .take_while(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
                .count();
            (1 + skipped, 0)
        }
        Some(_) => (2, 1),
        None => (1, 1),
    }
}

fn hex_char(hex: Option<&str>) -> Option<char> {
    u32::from_str_radix(hex?, 16).ok().and_then(char::from_u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `raw` (parsed by the toml crate) and, for each byte of
    /// it that starts a character, the file offset must hold the same
    /// character.
    fn check(raw: &str) {
        let doc = format!("k = {raw}\n");
        let table = toml::de::DeTable::parse(&doc).unwrap().into_inner();
        let toml::de::DeValue::String(value) = table.get("k").unwrap().get_ref() else {
            panic!("{raw} is not a string");
        };
        for (at, c) in value.char_indices() {
            let i = raw_offset(raw, at);
            let shown = raw[i..].chars().next().unwrap();
            if shown != '\\' {
                assert_eq!(shown, c, "{raw:?} at {at}");
            }
        }
        let closing = if raw.starts_with("'''") || raw.starts_with("\"\"\"") {
            3
        } else {
            1
        };
        assert_eq!(raw_offset(raw, value.len()), raw.len() - closing);
    }

    #[test]
    fn every_kind_of_string() {
        check("'type r= SYSCALL && (x'");
        check("\"type r= \\\"a\\\" \\t é \\u00e9 x\"");
        check("'''\ntype r= SYSCALL &&\n  (auid >= 1000'''");
        check("\"\"\"\ntype r= \\\n   SYSCALL \\\"q\\\" é\"\"\"");
        check("'é'");
    }

    #[test]
    fn escapes_point_at_their_backslash() {
        // The value "a\"b": the quote (value byte 1) is the escape at 2.
        assert_eq!(raw_offset(r#""a\"b""#, 1), 2);
        assert_eq!(raw_offset(r#""a\"b""#, 2), 4);
        assert_eq!(raw_offset("'abc'", 10), 4);
    }
}
