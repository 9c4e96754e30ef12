//! The journal's entry format: how one record (or one control marker) is laid
//! out on disk and in the in-memory tail.
//!
//! Entries are length-prefixed and checksummed so that a torn write at the
//! end of a segment (a crash or power loss mid-write) is detected and cut off
//! on recovery, and so that a reader can walk a block without an index.
//!
//! ```text
//! offset size field
//!      0    4 len         whole entry, header included (u32 LE)
//!      4    4 crc32c      of bytes [8, len)
//!      8    8 seq         journal sequence number, dense, starts at 1
//!     16    8 event       event id the record belongs to (0: none)
//!     24    8 source_seq  the input's own sequence number (0: none)
//!     32    4 rtype       record type number (0 for markers and unparsed records)
//!     36    2 source      input index (see `journal::sources`), 0 = none
//!     38    2 flags       `flags::*`
//!     40   24 origin      only with `flags::ORIGIN`: the record's first
//!                         journal id (16) and sequence number there (u64 LE)
//!      …    …  text        canonical record text, no trailing newline
//! ```

use std::borrow::Cow;

pub use crate::journal_id::Origin;

/// Size of the fixed entry header.
pub const HEADER_LEN: usize = 40;

/// Bits of an entry's `flags` field.
pub mod flags {
    /// This record is the last of its event (EOE, PROCTITLE, a one-record type).
    pub const ENDS_EVENT: u16 = 1;
    /// A control entry without text that closes event `event` (timeout, too
    /// many open events, shutdown).
    pub const CLOSE_MARKER: u16 = 2;
    /// The record's text did not parse (no type, time or serial); it is
    /// delivered as it is and forms an event of its own.
    pub const UNPARSED: u16 = 4;
    /// The entry carries the record's first origin (a record forwarded
    /// from another dispatcher's journal), 24 bytes before its text.
    pub const ORIGIN: u16 = 8;
    /// This record is the first of its event: a reader that saw it has every
    /// record of the event (filter decisions on whole events are shared only
    /// then). Journals written before this flag existed lack it.
    pub const STARTS_EVENT: u16 = 16;
    /// Mask of the flags that mark control entries, which are never delivered
    /// to plugins as records.
    pub const CONTROL: u16 = CLOSE_MARKER;
}

/// One entry to be appended: everything but the sequence number, which the
/// journal assigns. The one shape of an entry before it is stored, whether it
/// is appended at once (its text borrowed from the input) or waits in memory
/// for the journal to become writable (`NewEntry<'static>`, its text owned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry<'a> {
    /// Event id assigned by the ingest grouper.
    pub event: u64,
    /// The input's own sequence number, for de-duplication after a resend.
    pub source_seq: u64,
    /// Record type number.
    pub rtype: u32,
    /// Input index.
    pub source: u16,
    /// `flags::*` (`ORIGIN` is set by the encoder from `origin`).
    pub flags: u16,
    /// Where the record was first journaled, if that was another journal.
    pub origin: Option<Origin>,
    /// Canonical record text.
    pub text: Cow<'a, [u8]>,
}

impl NewEntry<'_> {
    /// A control entry closing `event` (see [`flags::CLOSE_MARKER`]).
    pub fn close_marker(event: u64, source: u16) -> NewEntry<'static> {
        NewEntry {
            event,
            source_seq: 0,
            rtype: 0,
            source,
            flags: flags::CLOSE_MARKER,
            origin: None,
            text: Cow::Borrowed(&[]),
        }
    }

    /// The same entry owning its text, to be kept beyond the input's buffer.
    pub fn into_owned(self) -> NewEntry<'static> {
        NewEntry {
            event: self.event,
            source_seq: self.source_seq,
            rtype: self.rtype,
            source: self.source,
            flags: self.flags,
            origin: self.origin,
            text: Cow::Owned(self.text.into_owned()),
        }
    }

    /// Bytes of the encoded entry.
    pub fn stored_len(&self) -> usize {
        HEADER_LEN + self.origin.map_or(0, |_| Origin::LEN) + self.text.len()
    }
}

/// A decoded view of one entry, borrowing its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// Journal sequence number.
    pub seq: u64,
    /// Event id (0: none).
    pub event: u64,
    /// The input's sequence number (0: none).
    pub source_seq: u64,
    /// Record type number.
    pub rtype: u32,
    /// Input index.
    pub source: u16,
    /// `flags::*`.
    pub flags: u16,
    /// Where the record was first journaled, if that was another journal.
    pub origin: Option<Origin>,
    /// Canonical record text.
    pub text: &'a [u8],
}

impl EntryRef<'_> {
    /// Whether this is a control entry rather than a record.
    pub fn is_control(&self) -> bool {
        self.flags & flags::CONTROL != 0
    }

    /// Bytes of the encoded entry.
    pub fn stored_len(&self) -> usize {
        HEADER_LEN + self.origin.map_or(0, |_| Origin::LEN) + self.text.len()
    }
}

/// Appends the encoding of `entry` with sequence number `seq` to `out`.
pub fn encode(out: &mut Vec<u8>, seq: u64, entry: &NewEntry<'_>) {
    let len = entry.stored_len();
    let fl = match entry.origin {
        Some(_) => entry.flags | flags::ORIGIN,
        None => entry.flags & !flags::ORIGIN,
    };
    let start = out.len();
    out.reserve(len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&entry.event.to_le_bytes());
    out.extend_from_slice(&entry.source_seq.to_le_bytes());
    out.extend_from_slice(&entry.rtype.to_le_bytes());
    out.extend_from_slice(&entry.source.to_le_bytes());
    out.extend_from_slice(&fl.to_le_bytes());
    if let Some(o) = entry.origin {
        o.put(out);
    }
    out.extend_from_slice(&entry.text);
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Why bytes could not be decoded as an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the entry needs: the end of what was written so far
    /// (or a write torn by a crash).
    Incomplete,
    /// The length field is impossible.
    BadLength(u32),
    /// The checksum does not match: the bytes were damaged.
    BadChecksum,
}

/// Decodes the entry at the start of `buf`, returning it and its length.
pub fn decode(buf: &[u8]) -> Result<(EntryRef<'_>, usize), DecodeError> {
    if buf.len() < HEADER_LEN {
        return Err(DecodeError::Incomplete);
    }
    let len = u32_at(buf, 0);
    if (len as usize) < HEADER_LEN || len as usize > MAX_ENTRY_LEN {
        return Err(DecodeError::BadLength(len));
    }
    let len = len as usize;
    if buf.len() < len {
        return Err(DecodeError::Incomplete);
    }
    if crc32c::crc32c(&buf[8..len]) != u32_at(buf, 4) {
        return Err(DecodeError::BadChecksum);
    }
    let fl = u16::from_le_bytes([buf[38], buf[39]]);
    if fl & flags::ORIGIN != 0 && len < HEADER_LEN + Origin::LEN {
        return Err(DecodeError::BadLength(len as u32));
    }
    Ok((decode_unchecked(&buf[..len]), len))
}

/// Decodes an entry already known to be whole and valid (from a block this
/// process built or verified).
pub(crate) fn decode_unchecked(buf: &[u8]) -> EntryRef<'_> {
    let fl = u16::from_le_bytes([buf[38], buf[39]]);
    let (origin, text) = if fl & flags::ORIGIN != 0 {
        (
            Origin::read(&buf[HEADER_LEN..]),
            &buf[HEADER_LEN + Origin::LEN..],
        )
    } else {
        (None, &buf[HEADER_LEN..])
    };
    EntryRef {
        seq: u64_at(buf, 8),
        event: u64_at(buf, 16),
        source_seq: u64_at(buf, 24),
        rtype: u32_at(buf, 32),
        source: u16::from_le_bytes([buf[36], buf[37]]),
        flags: fl,
        origin,
        text,
    }
}

/// The largest entry the journal accepts: the longest record text plus header.
pub const MAX_ENTRY_LEN: usize = HEADER_LEN + Origin::LEN + crate::record::MAX_RECORD_LEN;

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &[u8]) -> NewEntry<'_> {
        NewEntry {
            event: 7,
            source_seq: 99,
            rtype: 1300,
            source: 2,
            flags: flags::ENDS_EVENT,
            origin: None,
            text: text.into(),
        }
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        encode(&mut buf, 42, &sample(b"type=SYSCALL msg=audit(1.2:3): x=1"));
        encode(&mut buf, 43, &sample(b""));
        let (e, n) = decode(&buf).unwrap();
        assert_eq!(e.seq, 42);
        assert_eq!(e.event, 7);
        assert_eq!(e.source_seq, 99);
        assert_eq!(e.rtype, 1300);
        assert_eq!(e.source, 2);
        assert_eq!(e.flags, flags::ENDS_EVENT);
        assert_eq!(e.text, b"type=SYSCALL msg=audit(1.2:3): x=1");
        let (e2, n2) = decode(&buf[n..]).unwrap();
        assert_eq!((e2.seq, e2.text), (43, &b""[..]));
        assert_eq!(n + n2, buf.len());
        assert_eq!(e.origin, None);
    }

    #[test]
    fn an_origin_round_trips_before_the_text() {
        let o = Origin {
            journal: [5; 16],
            seq: 77,
        };
        let mut buf = Vec::new();
        let mut s = sample(b"type=EOE msg=audit(1.2:3): ");
        s.origin = Some(o);
        encode(&mut buf, 9, &s);
        assert_eq!(buf.len(), s.stored_len());
        let (e, n) = decode(&buf).unwrap();
        assert_eq!(n, buf.len());
        assert_eq!(e.origin, Some(o));
        assert_eq!(e.flags, flags::ENDS_EVENT | flags::ORIGIN);
        assert_eq!(e.text, b"type=EOE msg=audit(1.2:3): ");
        assert_eq!(e.stored_len(), n);
    }

    #[test]
    fn detects_torn_and_damaged_entries() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, &sample(b"type=EOE msg=audit(1.2:3): "));
        for cut in 0..buf.len() {
            assert_eq!(
                decode(&buf[..cut]).unwrap_err(),
                DecodeError::Incomplete,
                "{cut}"
            );
        }
        for i in 8..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert_eq!(decode(&bad).unwrap_err(), DecodeError::BadChecksum, "{i}");
        }
        let mut bad = buf.clone();
        bad[0..4].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(decode(&bad).unwrap_err(), DecodeError::BadLength(3));
    }
}
