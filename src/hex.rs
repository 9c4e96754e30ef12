//! Bytes as lower-case hex text, and back: the one encoder and the one strict
//! decoder behind every identity, fingerprint and byte string audisp writes
//! into a state file, a log line or a greeting.

use std::fmt;

/// Why a text is not the hex spelling of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HexError {
    /// An odd number of digits, or not the length expected.
    Length {
        /// Digits expected (`None`: any even number).
        expected: Option<usize>,
        /// Characters found.
        found: usize,
    },
    /// A character that is not a hex digit (signs and spaces included).
    Digit {
        /// Its byte offset in the text.
        at: usize,
    },
}

impl fmt::Display for HexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HexError::Length {
                expected: Some(n),
                found,
            } => write!(f, "{found} characters where {n} hex digits belong"),
            HexError::Length {
                expected: None,
                found,
            } => write!(f, "an odd number ({found}) of hex digits"),
            HexError::Digit { at } => write!(f, "not a hex digit at character {}", at + 1),
        }
    }
}

impl std::error::Error for HexError {}

/// `bytes` as lower-case hex, two digits a byte.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(2 * bytes.len());
    for &b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    text
}

/// The bytes `text` spells: an even number of hex digits (either case),
/// nothing else.
pub fn decode(text: &str) -> Result<Vec<u8>, HexError> {
    if text.len() % 2 != 0 {
        return Err(HexError::Length {
            expected: None,
            found: text.len(),
        });
    }
    let mut bytes = vec![0; text.len() / 2];
    decode_into(text, &mut bytes)?;
    Ok(bytes)
}

/// Fills `out` with the bytes `text` spells; `text` must be exactly two hex
/// digits for each byte of `out`.
pub fn decode_into(text: &str, out: &mut [u8]) -> Result<(), HexError> {
    let digits = text.as_bytes();
    if digits.len() != 2 * out.len() {
        return Err(HexError::Length {
            expected: Some(2 * out.len()),
            found: digits.len(),
        });
    }
    let value = |at: usize| -> Result<u8, HexError> {
        let d = digits[at];
        match d {
            b'0'..=b'9' => Ok(d - b'0'),
            b'a'..=b'f' => Ok(d - b'a' + 10),
            b'A'..=b'F' => Ok(d - b'A' + 10),
            _ => Err(HexError::Digit { at }),
        }
    };
    for (i, o) in out.iter_mut().enumerate() {
        *o = value(2 * i)? << 4 | value(2 * i + 1)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let all: Vec<u8> = (0..=255).collect();
        let text = encode(&all);
        assert_eq!(text.len(), 512);
        assert!(text.starts_with("000102") && text.ends_with("fdfeff"));
        assert_eq!(decode(&text), Ok(all));
        assert_eq!(encode(&[]), "");
        assert_eq!(decode(""), Ok(Vec::new()));
        assert_eq!(decode("ABcd"), Ok(vec![0xab, 0xcd]), "either case");
    }

    #[test]
    fn bad_text_is_an_error() {
        assert_eq!(
            decode("abc"),
            Err(HexError::Length {
                expected: None,
                found: 3
            })
        );
        // What `u8::from_str_radix` would take for a byte, and more.
        for (text, at) in [
            ("+f00", 0),
            ("0+", 1),
            ("0g", 1),
            (" 0", 0),
            ("00-1", 2),
            ("é", 0),
        ] {
            assert_eq!(decode(text), Err(HexError::Digit { at }), "{text:?}");
        }
        let mut four = [0; 2];
        assert_eq!(
            decode_into("abcdef", &mut four),
            Err(HexError::Length {
                expected: Some(4),
                found: 6
            })
        );
        assert_eq!(decode_into("abcd", &mut four), Ok(()));
        assert_eq!(four, [0xab, 0xcd]);
        assert_eq!(
            HexError::Digit { at: 2 }.to_string(),
            "not a hex digit at character 3"
        );
    }
}
