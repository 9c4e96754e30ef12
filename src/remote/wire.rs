//! auditd's remote-logging wire protocol ("managed" format), byte for byte,
//! plus audisp's fast-mode extension.
//!
//! Every message is a 16-byte little-endian header followed by `length`
//! payload bytes:
//!
//! ```text
//! offset size field
//!      0    4 magic           0xff0000fe (bytes fe 00 00 ff)
//!      4    1 header_version  0
//!      5    1 message_version 0
//!      6    4 type            MESSAGE, HEARTBEAT, ACK, ENDING, DISK* …
//!     10    2 length          payload bytes
//!     12    4 sequence        echoed from request to reply
//! ```
//!
//! Stock clients may also send `format = ascii`: bare `\n`-terminated record
//! lines without header or acknowledgement. A [`Decoder`] tells the two apart
//! per message by the leading magic, exactly as auditd's listener does.
//!
//! # Fast mode (audisp-remote ↔ audisp-receive only)
//!
//! Our sender opens a connection with a line auditd's listener silently
//! discards ([`hello_line`]) followed by a `HEARTBEAT`. A stock auditd
//! answers the heartbeat with a plain `ACK` — the sender then speaks the
//! stock protocol. audisp-receive answers with [`types::FAST_OK`] carrying
//! the highest sequence number it durably holds from that sender; from then
//! on the sender streams [`types::FAST_BATCH`] messages (many records each,
//! many in flight) and the receiver acknowledges cumulatively with
//! [`types::FAST_ACK`]. Stock auditd never sees a fast-mode message.

use std::borrow::Cow;

use thiserror::Error;

use crate::journal_id::{JournalId, Origin};

/// The header's first four bytes, as a little-endian u32.
pub const MAGIC: u32 = 0xff00_00fe;
/// The magic as it appears on the wire.
pub const MAGIC_BYTES: [u8; 4] = MAGIC.to_le_bytes();
/// Size of the fixed header.
pub const HEADER_LEN: usize = 16;
/// The only header version auditd knows.
pub const HEADER_VERSION: u8 = 0;
/// auditd's `MAX_AUDIT_MESSAGE_LENGTH`: no record, line or stock payload is
/// longer.
pub const MAX_RECORD: usize = 8970;
/// The largest payload auditd's listener accepts (its read window of 8970
/// bytes includes the header): a sender to stock auditd cuts records here.
pub const MAX_STOCK_PAYLOAD: usize = MAX_RECORD - HEADER_LEN;
/// Largest fast-mode batch payload (the length field is 16 bits).
pub const MAX_BATCH: usize = u16::MAX as usize;

/// Message types (`AUDIT_RMW_TYPE_*`) and their bit masks.
pub mod types {
    /// Set in every server → client reply.
    pub const REPLY_MASK: u32 = 0x4000_0000;
    /// A reply that means the record was not stored.
    pub const FATAL_MASK: u32 = 0x2000_0000;
    /// A reply that warns but means the record was stored.
    pub const WARN_MASK: u32 = 0x1000_0000;
    /// One record (client → server).
    pub const MESSAGE: u32 = 0x0000_0000;
    /// Keep-alive, acknowledged like a record (client → server).
    pub const HEARTBEAT: u32 = 0x0000_0001;
    /// Stored (server → client).
    pub const ACK: u32 = 0x4000_0000;
    /// The server shuts down; sequence 0, unsolicited.
    pub const ENDING: u32 = 0x4000_0001;
    /// Stored, but the server's disk is getting full.
    pub const DISKLOW: u32 = 0x5000_0001;
    /// Not stored: the server's disk is full.
    pub const DISKFULL: u32 = 0x6000_0001;
    /// Not stored: write error or logging suspended.
    pub const DISKERROR: u32 = 0x6000_0002;
    /// audisp extension: a batch of records (client → server, fast mode).
    pub const FAST_BATCH: u32 = 0x0000_0100;
    /// audisp extension: fast mode accepted; payload is the u64 LE highest
    /// sequence number already held from this sender.
    pub const FAST_OK: u32 = 0x4000_0100;
    /// audisp extension: everything up to the u64 LE payload is durable.
    pub const FAST_ACK: u32 = 0x4000_0101;
    /// audisp extension: a batch whose records carry their first origin
    /// (client → server, once the server sent [`FAST_ORIGINS`]).
    pub const FAST_BATCH_ORIGIN: u32 = 0x0000_0102;
    /// audisp extension: sent right after `FAST_OK`, empty: the server
    /// takes [`FAST_BATCH_ORIGIN`]. Older senders ignore it (a reply type
    /// without the fatal or warning bit).
    pub const FAST_ORIGINS: u32 = 0x4000_0102;
}

/// What is wrong with bytes received.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// The header does not start with `fe 00 00 ff`.
    #[error("bad magic {0:02x?}")]
    BadMagic([u8; 4]),
    /// A header version other than 0.
    #[error("unsupported header version {0}")]
    BadVersion(u8),
    /// A type this side does not accept.
    #[error("unexpected message type {0:#010x}")]
    BadType(u32),
    /// A length over the limit for its type.
    #[error("payload length {len} over the limit {max} for type {mtype:#010x}")]
    TooLong {
        /// Message type.
        mtype: u32,
        /// Length announced.
        len: usize,
        /// Limit for that type.
        max: usize,
    },
    /// An ASCII line longer than a record can be, or not a record.
    #[error("not an audit record line ({0})")]
    BadLine(&'static str),
    /// A fast-mode batch whose inner framing does not add up.
    #[error("malformed batch: {0}")]
    BadBatch(&'static str),
    /// A well-framed message (managed record, ASCII line, batch entry) whose
    /// text is not an audit record ([`record_text`]); the first bytes,
    /// escaped.
    #[error("not an audit record (it does not start with type= or node=): \"{0}\"")]
    NotARecord(String),
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Header version (0).
    pub header_version: u8,
    /// Message version (0; nobody checks it).
    pub message_version: u8,
    /// `types::*`.
    pub mtype: u32,
    /// Payload length.
    pub len: u16,
    /// Sequence number.
    pub seq: u32,
}

impl Header {
    /// Parses and validates a header: magic, version, and the length limit
    /// of its type ([`max_payload`]).
    pub fn parse(b: &[u8; HEADER_LEN]) -> Result<Header, WireError> {
        let magic = [b[0], b[1], b[2], b[3]];
        if magic != MAGIC_BYTES {
            return Err(WireError::BadMagic(magic));
        }
        let h = Header {
            header_version: b[4],
            message_version: b[5],
            mtype: u32::from_le_bytes([b[6], b[7], b[8], b[9]]),
            len: u16::from_le_bytes([b[10], b[11]]),
            seq: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        };
        if h.header_version != HEADER_VERSION {
            return Err(WireError::BadVersion(h.header_version));
        }
        let max = max_payload(h.mtype);
        if h.len as usize > max {
            return Err(WireError::TooLong {
                mtype: h.mtype,
                len: h.len as usize,
                max,
            });
        }
        Ok(h)
    }
}

/// The largest payload a message of type `mtype` may carry.
pub fn max_payload(mtype: u32) -> usize {
    match mtype {
        types::FAST_BATCH | types::FAST_BATCH_ORIGIN => MAX_BATCH,
        types::HEARTBEAT | types::ACK | types::ENDING | types::FAST_ORIGINS => 0,
        types::FAST_OK | types::FAST_ACK => 8,
        _ => MAX_RECORD,
    }
}

/// Appends one message to `out`. Fails when the payload is over the limit
/// of its type.
pub fn encode(out: &mut Vec<u8>, mtype: u32, seq: u32, payload: &[u8]) -> Result<(), WireError> {
    let max = max_payload(mtype);
    if payload.len() > max {
        return Err(WireError::TooLong {
            mtype,
            len: payload.len(),
            max,
        });
    }
    out.extend_from_slice(&MAGIC_BYTES);
    out.push(HEADER_VERSION);
    out.push(0);
    out.extend_from_slice(&mtype.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// The payload auditd sends with a `DISKFULL` reply.
pub const DISKFULL_TEXT: &[u8] = b"disk full";
/// The payload auditd sends with a `DISKERROR` reply after a write error.
pub const DISKERROR_TEXT: &[u8] = b"disk write error";

/// One message cut from the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A managed message: header and payload.
    Managed(Header, &'a [u8]),
    /// An ASCII record line, without its `\n`.
    Line(&'a [u8]),
}

/// Cuts a client's byte stream into messages. Holds no buffer itself: the
/// caller keeps the bytes and drops what each call consumed, so memory per
/// connection is bounded by the largest message (16 + 65535 bytes).
#[derive(Debug, Default, Clone, Copy)]
pub struct Decoder;

/// The most bytes a connection may have to buffer to complete one message.
pub const MAX_MESSAGE: usize = HEADER_LEN + MAX_BATCH;

impl Decoder {
    /// The next message at the start of `buf` and the bytes it took, or
    /// `None` when more bytes are needed. Anything that cannot be a message
    /// is an error: the caller closes the connection.
    pub fn next<'a>(&self, buf: &'a [u8]) -> Result<Option<(Frame<'a>, usize)>, WireError> {
        if buf.is_empty() {
            return Ok(None);
        }
        let n = buf.len().min(4);
        if buf[..n] == MAGIC_BYTES[..n] {
            if buf.len() < HEADER_LEN {
                return Ok(None);
            }
            let mut hb = [0u8; HEADER_LEN];
            hb.copy_from_slice(&buf[..HEADER_LEN]);
            let h = Header::parse(&hb)?;
            let end = HEADER_LEN + h.len as usize;
            if buf.len() < end {
                return Ok(None);
            }
            return Ok(Some((Frame::Managed(h, &buf[HEADER_LEN..end]), end)));
        }
        match memchr::memchr(b'\n', buf) {
            Some(i) => {
                if i + 1 > MAX_RECORD {
                    return Err(WireError::BadLine("longer than 8970 bytes"));
                }
                Ok(Some((Frame::Line(&buf[..i]), i + 1)))
            }
            None if buf.len() >= MAX_RECORD => Err(WireError::BadLine("longer than 8970 bytes")),
            None => {
                // Reject obvious garbage early rather than waiting for 8970
                // bytes: a line must start as a record or as our hello.
                let starts = [&b"node="[..], b"type=", HELLO_PREFIX];
                let plausible = starts.iter().any(|p| {
                    let n = p.len().min(buf.len());
                    p[..n] == buf[..n]
                });
                if !plausible {
                    return Err(WireError::BadLine("does not start with node= or type="));
                }
                Ok(None)
            }
        }
    }
}

/// Whether a text starts as an audit record does (`node=` or `type=`).
pub fn is_record_line(line: &[u8]) -> bool {
    line.starts_with(b"type=") || line.starts_with(b"node=")
}

/// How many bytes of a refused text [`WireError::NotARecord`] quotes.
const SHOWN: usize = 32;

/// The one rule for what audisp-receive stores, whichever way a record came
/// (managed `MESSAGE`, ASCII line, fast-mode batch entry; each protocol's own
/// unwrapping done first): it must start as an audit record does (`type=` or
/// `node=`, as the ASCII framing already demands), and it is stored as one
/// line that a terminal shows as text. Every control byte but tab and 0x1d
/// (the separator of auditd's ENRICHED format) becomes a space: a newline
/// would split the record into two log lines, the second one made up by the
/// client, and an escape sequence would act on the terminal of whoever reads
/// the log. Anything else is refused (the connection is closed and nothing of
/// that message is stored or acknowledged).
pub fn record_text(text: &[u8]) -> Result<Cow<'_, [u8]>, WireError> {
    if !is_record_line(text) {
        let shown = &text[..text.len().min(SHOWN)];
        return Err(WireError::NotARecord(shown.escape_ascii().to_string()));
    }
    let control = |b: u8| (b < 0x20 && b != b'\t' && b != 0x1d) || b == 0x7f;
    if !text.iter().any(|&b| control(b)) {
        return Ok(Cow::Borrowed(text));
    }
    Ok(Cow::Owned(
        text.iter()
            .map(|&b| if control(b) { b' ' } else { b })
            .collect(),
    ))
}

/// How our sender's hello line starts.
pub const HELLO_PREFIX: &[u8] = b"audisp-fast/1 sender=";

/// The hello line a fast-mode sender opens with: `sender` identifies its
/// spool for the whole of its life (the receiver keys duplicate suppression
/// on it).
pub fn hello_line(sender: [u8; 16]) -> Vec<u8> {
    let mut v = HELLO_PREFIX.to_vec();
    v.extend_from_slice(JournalId(sender).to_string().as_bytes());
    v.push(b'\n');
    v
}

/// The sender identity in a hello line (without its `\n`), if it is one.
pub fn parse_hello(line: &[u8]) -> Option<[u8; 16]> {
    let hex = std::str::from_utf8(line.strip_prefix(HELLO_PREFIX)?).ok()?;
    Some(hex.parse::<JournalId>().ok()?.0)
}

/// Builds fast-mode batch payloads: `u64 LE first_seq`, then per record
/// `u16 LE length` and its text; in a `FAST_BATCH_ORIGIN` payload the
/// record's first origin (16-byte journal id, `u64 LE` seq; all zero:
/// unknown) sits between the length and the text.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: usize,
    /// Records carry their origin (`FAST_BATCH_ORIGIN`).
    pub with_origin: bool,
}

impl BatchBuilder {
    /// Starts a batch whose first record has sequence number `first_seq`.
    pub fn start(&mut self, first_seq: u64) {
        self.buf.clear();
        self.buf.extend_from_slice(&first_seq.to_le_bytes());
        self.count = 0;
    }

    /// Adds a record; false (and nothing added) when it would not fit.
    /// Records longer than [`MAX_RECORD`] are cut there.
    pub fn push(&mut self, text: &[u8], origin: Option<Origin>) -> bool {
        let text = &text[..text.len().min(MAX_RECORD)];
        let extra = if self.with_origin { Origin::LEN } else { 0 };
        if self.buf.len() + 2 + extra + text.len() > MAX_BATCH {
            return false;
        }
        self.buf
            .extend_from_slice(&(text.len() as u16).to_le_bytes());
        if self.with_origin {
            origin
                .unwrap_or(Origin {
                    journal: [0; 16],
                    seq: 0,
                })
                .put(&mut self.buf);
        }
        self.buf.extend_from_slice(text);
        self.count += 1;
        true
    }

    /// Records in the batch.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.buf
    }
}

/// Decodes a fast-mode batch payload into its first sequence number and
/// records.
pub fn parse_batch(payload: &[u8]) -> Result<(u64, Vec<&[u8]>), WireError> {
    let (first, recs) = parse_any_batch(payload, false)?;
    Ok((first, recs.into_iter().map(|(_, t)| t).collect()))
}

/// Decodes a `FAST_BATCH_ORIGIN` payload into its first sequence number and
/// records with their first origins (where known).
#[allow(clippy::type_complexity)]
pub fn parse_batch_origin(
    payload: &[u8],
) -> Result<(u64, Vec<(Option<Origin>, &[u8])>), WireError> {
    parse_any_batch(payload, true)
}

#[allow(clippy::type_complexity)]
fn parse_any_batch(
    payload: &[u8],
    with_origin: bool,
) -> Result<(u64, Vec<(Option<Origin>, &[u8])>), WireError> {
    let extra = if with_origin { Origin::LEN } else { 0 };
    if payload.len() < 8 {
        return Err(WireError::BadBatch("shorter than its sequence number"));
    }
    let first = u64::from_le_bytes(
        payload[..8]
            .try_into()
            .map_err(|_| WireError::BadBatch("seq"))?,
    );
    if first == 0 {
        return Err(WireError::BadBatch("sequence numbers start at 1"));
    }
    let mut rest = &payload[8..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 2 {
            return Err(WireError::BadBatch("truncated record length"));
        }
        let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        if len == 0 || len > MAX_RECORD {
            return Err(WireError::BadBatch("record length 0 or over 8970"));
        }
        if rest.len() < 2 + extra + len {
            return Err(WireError::BadBatch("truncated record"));
        }
        let origin = if with_origin {
            Origin::read(&rest[2..]).filter(|o| o.journal != [0; 16])
        } else {
            None
        };
        out.push((origin, &rest[2 + extra..2 + extra + len]));
        rest = &rest[2 + extra + len..];
    }
    if out.is_empty() {
        return Err(WireError::BadBatch("no record"));
    }
    if first.checked_add(out.len() as u64 - 1).is_none() {
        return Err(WireError::BadBatch("sequence numbers past 2^64 - 1"));
    }
    Ok((first, out))
}

/// Reads a u64 LE payload (`FAST_OK`, `FAST_ACK`).
pub fn parse_u64(payload: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(payload.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(mtype: u32, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode(&mut v, mtype, seq, payload).unwrap();
        v
    }

    #[test]
    fn encodes_the_reference_examples() {
        let line = [b'x'; 79];
        let m = msg(types::MESSAGE, 2, &line);
        assert_eq!(
            &m[..16],
            &[0xfe, 0, 0, 0xff, 0, 0, 0, 0, 0, 0, 0x4f, 0, 2, 0, 0, 0]
        );
        assert_eq!(
            msg(types::ACK, 2, b""),
            [0xfe, 0, 0, 0xff, 0, 0, 0, 0, 0, 0x40, 0, 0, 2, 0, 0, 0]
        );
        assert_eq!(
            msg(types::HEARTBEAT, 3, b""),
            [0xfe, 0, 0, 0xff, 0, 0, 1, 0, 0, 0, 0, 0, 3, 0, 0, 0]
        );
        let mut full = vec![0xfe, 0, 0, 0xff, 0, 0, 1, 0, 0, 0x60, 9, 0, 7, 0, 0, 0];
        full.extend_from_slice(b"disk full");
        assert_eq!(msg(types::DISKFULL, 7, DISKFULL_TEXT), full);
        assert_eq!(
            msg(types::ENDING, 0, b""),
            [0xfe, 0, 0, 0xff, 0, 0, 1, 0, 0, 0x40, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn decodes_split_at_every_byte() {
        let mut stream = msg(types::MESSAGE, 2, b"type=USER msg=audit(1.000:1): x\n");
        stream.extend_from_slice(b"node=a type=EOE msg=audit(1.000:1): \n");
        stream.extend(msg(types::HEARTBEAT, 3, b""));
        let d = Decoder;
        for cut in 0..stream.len() {
            let (frame, n) = match d.next(&stream[..cut]).unwrap() {
                Some(x) => x,
                None => continue,
            };
            assert!(n <= cut);
            assert!(matches!(frame, Frame::Managed(h, p) if h.seq == 2 && p.ends_with(b"x\n")));
        }
        let mut rest = &stream[..];
        let mut got = Vec::new();
        while let Some((f, n)) = d.next(rest).unwrap() {
            got.push(format!("{f:?}").len());
            rest = &rest[n..];
        }
        assert_eq!(got.len(), 3);
        assert!(rest.is_empty());
    }

    #[test]
    fn rejects_bad_headers() {
        let d = Decoder;
        let mut m = msg(types::MESSAGE, 2, b"type=X");
        m[4] = 1;
        assert_eq!(d.next(&m), Err(WireError::BadVersion(1)));
        let mut m = msg(types::MESSAGE, 2, b"");
        m[10..12].copy_from_slice(&9000u16.to_le_bytes());
        assert!(matches!(
            d.next(&m),
            Err(WireError::TooLong { len: 9000, .. })
        ));
        let mut m = msg(types::HEARTBEAT, 2, b"");
        m[10] = 1;
        assert!(matches!(d.next(&m), Err(WireError::TooLong { .. })));
        assert!(d.next(&[0xfe, 0, 0]).unwrap().is_none());
        assert!(d.next(&[0xfe, 0, 1]).is_err());
        assert!(d.next(b"\x00\x01garbage").is_err());
        assert!(d.next(&vec![b't'; MAX_RECORD]).is_err());
        assert!(d.next(b"type=USER partial").unwrap().is_none());
        assert!(d.next(b"audisp-fast/1 sen").unwrap().is_none());
        assert!(encode(&mut Vec::new(), types::MESSAGE, 1, &[b'a'; MAX_RECORD + 1]).is_err());
    }

    #[test]
    fn batches_round_trip_and_reject_bad_inner_lengths() {
        let mut b = BatchBuilder::default();
        b.start(7);
        assert!(b.push(b"type=A msg=audit(1.0:1): a", None));
        assert!(b.push(b"type=B msg=audit(1.0:1): b", None));
        let (first, recs) = parse_batch(b.payload()).unwrap();
        assert_eq!(first, 7);
        assert_eq!(
            recs,
            vec![
                &b"type=A msg=audit(1.0:1): a"[..],
                b"type=B msg=audit(1.0:1): b"
            ]
        );
        let mut p = b.payload().to_vec();
        p.pop();
        assert!(parse_batch(&p).is_err());
        assert!(parse_batch(&0u64.to_le_bytes()).is_err());
        let big = vec![b'x'; MAX_RECORD];
        b.start(1);
        let mut n = 0;
        while b.push(&big, None) {
            n += 1;
        }
        assert_eq!(n, MAX_BATCH / (MAX_RECORD + 2));
        assert!(b.payload().len() <= MAX_BATCH);
    }

    /// The receiver's store computes the batch's last sequence number
    /// (`first + count - 1`): a batch whose numbers run past `u64::MAX`
    /// overflowed there (a panic with overflow checks, a wrapped "highest
    /// sequence number held" without).
    #[test]
    fn batches_whose_sequence_numbers_overflow_are_rejected() {
        let mut b = BatchBuilder::default();
        b.start(u64::MAX);
        assert!(b.push(b"type=A msg=audit(1.0:1): a", None));
        assert_eq!(parse_batch(b.payload()).unwrap().0, u64::MAX);
        assert!(b.push(b"type=A msg=audit(1.0:1): b", None));
        assert_eq!(
            parse_batch(b.payload()),
            Err(WireError::BadBatch("sequence numbers past 2^64 - 1"))
        );
        b.start(u64::MAX - 1);
        assert!(b.push(b"type=A msg=audit(1.0:1): a", None));
        assert!(b.push(b"type=A msg=audit(1.0:1): b", None));
        assert_eq!(parse_batch(b.payload()).unwrap().1.len(), 2);
    }

    #[test]
    fn batches_with_origins_round_trip_and_cut_ones_are_rejected() {
        let o = Origin {
            journal: [3; 16],
            seq: 41,
        };
        let mut b = BatchBuilder {
            with_origin: true,
            ..BatchBuilder::default()
        };
        b.start(7);
        assert!(b.push(b"type=A msg=audit(1.0:1): a", Some(o)));
        assert!(b.push(b"type=A msg=audit(1.0:1): b", None));
        let (first, recs) = parse_batch_origin(b.payload()).unwrap();
        assert_eq!(first, 7);
        assert_eq!(
            recs,
            vec![
                (Some(o), &b"type=A msg=audit(1.0:1): a"[..]),
                (None, &b"type=A msg=audit(1.0:1): b"[..])
            ]
        );
        let p = b.payload();
        // Cut anywhere but between records, a batch is refused.
        let one = 8 + 2 + Origin::LEN + 26;
        for cut in (9..p.len()).filter(|&c| c != one) {
            assert!(parse_batch_origin(&p[..cut]).is_err(), "{cut}");
        }
    }

    /// Found by attack (issue 10): fast-mode batches stored whatever they
    /// held (`\x00\x00binary`, `\x1b[2J…`), which then went to the log.
    #[test]
    fn only_records_pass_and_control_bytes_in_them_become_spaces() {
        for bad in [
            &b"\x00\x00binary"[..],
            b"\x1b[2J\x1b[Hhello",
            b"",
            b"GET / HTTP/1.0",
            b" type=USER msg=audit(1.000:1): x",
        ] {
            let e = record_text(bad).unwrap_err();
            assert!(matches!(e, WireError::NotARecord(_)), "{e}");
            assert!(!e.to_string().contains('\x1b'), "{e}");
        }
        let plain = b"node=a type=USER msg=audit(1.000:1): x=\"y\"\tz";
        assert!(matches!(record_text(plain), Ok(Cow::Borrowed(t)) if t == plain));
        let enriched = b"type=USER msg=audit(1.000:1): uid=0\x1dUID=\"root\"";
        assert_eq!(record_text(enriched).unwrap(), &enriched[..]);
        assert_eq!(
            record_text(b"type=USER msg=audit(1.000:1): a\nb\r\x1b[2J\x00\x7f").unwrap(),
            &b"type=USER msg=audit(1.000:1): a b  [2J  "[..]
        );
    }

    #[test]
    fn hello_round_trips() {
        let id = [0xab; 16];
        let line = hello_line(id);
        assert!(line.ends_with(b"\n"));
        assert_eq!(parse_hello(&line[..line.len() - 1]), Some(id));
        assert_eq!(parse_hello(b"audisp-fast/1 sender=zz"), None);
        let mut plus = line[..line.len() - 1].to_vec();
        let at = plus.len() - 2;
        plus[at] = b'+';
        assert_eq!(parse_hello(&plus), None, "a sign is not a hex digit");
        assert!(!is_record_line(&line));
    }
}
