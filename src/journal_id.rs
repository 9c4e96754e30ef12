//! The 16-byte identity of a journal, and its one text form.
//!
//! A journal gets a random id when it is created and keeps it for life. The
//! same id also names a numbering: an input's epoch is the id of the journal
//! (spool) its sequence numbers come from, and an `audisp-remote` sender is
//! known to the receiver by its spool's id. Wherever one of these is written
//! as text (checkpoints, state files, the remote greeting, log lines) it is
//! this type's [`Display`](fmt::Display) form, 32 lower-case hex digits, and
//! read back with [`FromStr`], which refuses anything else.

use std::fmt;
use std::str::FromStr;

use crate::hex::{self, HexError};

/// Where a record was first journaled on any host: that journal's id and
/// the sequence number the record got there. It travels with a record that
/// is forwarded (audisp-remote → audisp-receive → audispd, and onward), so
/// that a dispatcher recognises its own records when a forwarding loop
/// brings them back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The id of the journal the record was first stored in.
    pub journal: [u8; 16],
    /// Its sequence number in that journal.
    pub seq: u64,
}

impl Origin {
    /// Bytes of an origin on the wire and in the journal: the id, then the
    /// sequence number (little-endian).
    pub const LEN: usize = 24;

    /// Appends the origin's 24 bytes to `out`.
    pub fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.journal);
        out.extend_from_slice(&self.seq.to_le_bytes());
    }

    /// Reads an origin from the first 24 bytes of `b` (`None` if shorter).
    pub fn read(b: &[u8]) -> Option<Origin> {
        let journal: [u8; 16] = b.get(..16)?.try_into().ok()?;
        let seq: [u8; 8] = b.get(16..24)?.try_into().ok()?;
        Some(Origin {
            journal,
            seq: u64::from_le_bytes(seq),
        })
    }
}

/// Identifies one journal for the whole of its life. Plugins store it next to
/// the sequence number they have reached: if the journal is ever recreated
/// (its state directory wiped), the id changes and old positions are void.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JournalId(pub [u8; 16]);

impl fmt::Display for JournalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl FromStr for JournalId {
    type Err = HexError;

    /// Exactly 32 hex digits; no sign, space or other character.
    fn from_str(text: &str) -> Result<Self, HexError> {
        let mut id = [0; 16];
        hex::decode_into(text, &mut id)?;
        Ok(JournalId(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        let id = JournalId(*b"\x00\x01\x02\x7f\x80\xfe\xffaudisp!!!");
        let text = id.to_string();
        assert_eq!(text, "0001027f80feff617564697370212121");
        assert_eq!(text.parse(), Ok(id));
        assert_eq!("0001027F80FEFF617564697370212121".parse(), Ok(id));
    }

    #[test]
    fn anything_but_32_hex_digits_is_refused() {
        let good = "0123456789abcdef0123456789abcdef";
        let mut bad = vec![
            String::new(),
            good[..30].to_string(),
            format!("{good}00"),
            format!(" {}", &good[1..]),
            format!("{}\n", &good[1..]),
        ];
        // A sign, which `u8::from_str_radix` accepts, in every byte position.
        for i in 0..16 {
            let mut s = good.to_string();
            s.replace_range(2 * i..2 * i + 1, "+");
            bad.push(s);
        }
        bad.push(good.replace('a', "g"));
        for text in bad {
            assert!(text.parse::<JournalId>().is_err(), "{text:?} taken");
        }
        assert_eq!(
            "00".parse::<JournalId>(),
            Err(HexError::Length {
                expected: Some(32),
                found: 2
            })
        );
    }
}
