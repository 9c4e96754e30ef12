//! Turning auditd's plugin byte stream into records.
//!
//! auditd writes to each plugin either `format = string` (one record per
//! `\n`-terminated line) or `format = binary` (a 16-byte host-endian header
//! `{ver, hlen, type, size}` followed by the payload). A [`Decoder`] is fed
//! whatever chunks the reads return, split at any byte, and hands out every
//! record in audisp's canonical text form: the line `format = string` would
//! have carried, without its newline. A record that lies wholly inside a chunk
//! is lent straight from that chunk; only a partial tail is copied and carried
//! over to the next [`Decoder::feed`]. (Binary records that must be rewritten —
//! protocol V0, or text with a newline — are built in one reused buffer, and
//! `Auto` copies the stream while it is still deciding.)
//!
//! # Canonical text of binary records
//!
//! * Protocol V1 (`ver = 1`): the payload as is, less trailing NUL bytes
//!   (auditd pads an 8970-byte record with one).
//! * Protocol V0 (`ver = 0`): `type=NAME msg=` + the payload up to its first
//!   NUL, NAME from [`record_types::display`] (`UNKNOWN[n]` for numbers without
//!   a name) — what auditd's string format writes. The kernel's trailing space
//!   (an EOE's `audit(…): `) is kept, as auditd keeps it.
//! * In both, every `\n` is replaced by a space, as auditd does for every
//!   newline but the terminating one.
//!
//! # Binary framing and resynchronisation
//!
//! Frames are cut by length and never by looking for headers: auditd ≤ 4.1.0
//! (Debian's 3.0.9 included) writes every frame as 16 + 8970 bytes, the bytes
//! after the payload being stale heap that can hold anything, including
//! header-like bytes and whole old frames ([`BinaryFraming::Padded`]); 4.1.1
//! and later write exactly 16 + `size` bytes ([`BinaryFraming::Exact`]).
//!
//! A header is valid when `ver` is 0 or 1, `hlen` is 16 and `size` is 1..=8970;
//! a payload is plausible when a V1 payload starts with `type=` or `node=` and
//! a V0 payload with `audit(`. A frame that fails either test is reported once
//! ([`MalformedKind::BadHeader`], [`MalformedKind::BadPayload`]) with its
//! offset, its field values and, once known, how many bytes were skipped; the
//! decoder then scans forward for the next *strictly plausible* frame — valid
//! header, payload complete, no NUL byte before its trailing NULs, and a
//! payload that reads `[node=X ]type=NAME msg=audit(S.MMM:N):` (V1) or
//! `audit(S.MMM:N):` (V0) — and carries on framing from there. Only that scan
//! ever looks for headers, so every frame after a damaged one is still found.
//! In a padded stream the scan can stop at a fake frame in the damaged
//! frame's padding and deliver it; framing is back in step at the first real
//! frame a later scan finds (a padded stream is only damaged by a short
//! write, which auditd does not do in practice).
//!
//! A frame cut short (a short write: `size` promises more payload than was
//! written) would otherwise swallow the start of the next frame. Its V1
//! payload gives it away: a V1 record holds no NUL byte (auditd's only NUL
//! ends an 8970-byte payload) and never ends in 0x01, while every header
//! starts `01 00 00 00` or `00 00 00 00`. Such a payload is reported as
//! [`MalformedKind::Truncated`] and not delivered, and the scan above finds
//! the next frame at its real start, so only the cut record is lost.
//!
//! # Auto-detection of the padding ([`BinaryFraming::Auto`])
//!
//! The header does not say which framing auditd uses, so `Auto` works it out
//! from the stream:
//!
//! 1. Frames of size 8970 are framed identically by both rules; they and the
//!    first frame of any other size (call it D) are delivered at once.
//! 2. After D the two rules disagree: *exact* puts the next frame right after
//!    D's payload, *padded* 8986 bytes after D's start. The decoder buffers the
//!    stream from there and runs both framings side by side over it, each with
//!    the strict plausibility test above and the usual resynchronisation,
//!    counting the frames each finds damaged ("breaks").
//! 3. It decides as soon as one framing has no break and has delivered at
//!    least one frame while the other has broken, or when both have broken and
//!    one has broken at least twice more than the other. It then delivers what
//!    the chosen framing found in the buffer, in order, and frames the rest of
//!    the stream with it (lenient plausibility test again, no more buffering).
//!    Nothing is delivered from the buffer before the decision, so there are
//!    no duplicates and nothing from the other framing's view of the stream.
//! 4. If neither has decided after [`AUTO_LOOKAHEAD`] bytes (8 padded frames,
//!    70 KiB) have been buffered, the framing with fewer breaks is chosen,
//!    exact on a tie, and a [`MalformedKind::AmbiguousFraming`] item says so
//!    (unless both found the very same frames, when the choice changes
//!    nothing).
//! 5. At the end of the stream ([`Decoder::finish`]) a framing that would
//!    leave the stream inside a frame counts one more break, and fewer breaks
//!    wins. On a tie: if both found the same frames, exact (nothing differs);
//!    else if both have broken, the framing that found more frames; otherwise
//!    exact, again with an `AmbiguousFraming` item.
//! 6. [`Decoder::input_idle`] lets the caller say that no more input is
//!    coming for now. auditd ≤ 4.1.0 writes each 8986-byte frame with one
//!    `writev`, which an AF_UNIX stream socket queues whole (one skb with the
//!    default 208 KiB send buffer), so a padded stream only pauses at a padded
//!    frame boundary. If the buffer then ends at an exact frame boundary and
//!    not at a padded one, padding is impossible and exact is chosen.
//!
//! When it can be trusted: a real padded stream is recognised as soon as the
//! frame after D arrives, because the byte after D's payload is stale heap and
//! the exact rule breaks there, unless that heap holds a strictly plausible
//! frame. A real exact stream is recognised once the padded rule looks 8986
//! bytes past D (about 9 KiB of records later, or at once with
//! `input_idle`): there the padded rule lands inside a record and breaks,
//! unless a record boundary falls exactly there — then it checks again 8986
//! bytes further on. A stream corrupted in one place still yields a decision
//! through the break counts.
//!
//! When it cannot: the two framings are indistinguishable if, for 8 padded
//! frames in a row, the stale padding holds chains of strictly plausible fake
//! frames that end exactly at the next padded boundary, or an exact stream has
//! a record boundary at every multiple of 8986 bytes after D. Neither happens
//! by chance (each needs byte-exact coincidences 8 times over); both would need
//! an attacker who controls auditd's heap or the exact length of every record
//! in the stream. Exact is then chosen because, of the two framings, it is the
//! one that delivers every frame the other delivers (it can only add
//! padding frames, never drop a record), and the `AmbiguousFraming` item tells
//! the operator to set the framing explicitly. Records after D may be held
//! back until the decision; without `input_idle` on a quiet exact stream that
//! lasts until about 9 KiB of records have arrived.
//!
//! Recommendation: on a host whose auditd version is known set `Padded`
//! (≤ 4.1.0) or `Exact` (≥ 4.1.1); `Auto` is the right default when it is not
//! known, and `format = string` avoids the question altogether.

mod binary;
pub mod coalesce;
mod detect;
mod frame;
mod string;
#[cfg(test)]
mod test_support;

use std::fmt;

#[cfg(doc)]
use crate::{
    record::{self, MAX_RECORD_LEN},
    record_types,
};

use binary::BinaryDecoder;
pub use coalesce::Coalescer;
use string::StringDecoder;

/// The size of auditd's binary dispatcher header (`hlen`).
pub const HEADER_LEN: usize = 16;
/// The largest payload auditd sends (`MAX_AUDIT_MESSAGE_LENGTH`).
pub const MAX_PAYLOAD: usize = 8970;
/// The size of every frame auditd ≤ 4.1.0 writes: header plus a payload
/// padded to [`MAX_PAYLOAD`].
pub const PADDED_FRAME_LEN: usize = HEADER_LEN + MAX_PAYLOAD;
/// How many bytes [`BinaryFraming::Auto`] buffers at most, after the first
/// frame where the framings disagree, before it decides without clear evidence.
pub const AUTO_LOOKAHEAD: usize = 8 * PADDED_FRAME_LEN;

/// Which of auditd's plugin formats the input uses (`format =` in the plugin's
/// auditd configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// `format = string`: one `\n`-terminated record per line.
    String,
    /// `format = binary`: header + payload frames, framed as given.
    Binary(BinaryFraming),
}

/// How binary frames are laid out, which depends on auditd's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryFraming {
    /// Work it out from the stream (see the module documentation).
    Auto,
    /// auditd ≤ 4.1.0: every frame is 16 + 8970 bytes, padding ignored.
    Padded,
    /// auditd ≥ 4.1.1: every frame is 16 + `size` bytes.
    Exact,
}

/// What a decoder hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item<'a> {
    /// One record in canonical text form (at most [`MAX_RECORD_LEN`] bytes).
    /// It is delivered even if [`record::parse`] does not accept it.
    Record {
        /// The record text, without a newline.
        text: &'a [u8],
        /// The type from the binary header; `None` for string input and for
        /// forwarded records whose type auditd could not parse.
        type_hint: Option<u32>,
    },
    /// Input that could not be turned into a record, reported once.
    Malformed(Malformed),
}

/// A stretch of input that was not a record, with enough detail to find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// What was wrong.
    pub kind: MalformedKind,
    /// Stream byte offset where the problem starts.
    pub offset: u64,
    /// How many input bytes were discarded because of it.
    pub skipped: u64,
    /// The specifics: lengths, header field values, what was expected.
    pub detail: String,
}

/// The kinds of [`Malformed`] input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MalformedKind {
    /// An empty line in string input.
    Empty,
    /// A line longer than [`MAX_RECORD_LEN`] in string input.
    Oversize,
    /// A record or frame cut short: the stream ended inside it, or (binary)
    /// the next frame's header starts inside its payload.
    Truncated,
    /// A binary header with impossible field values.
    BadHeader,
    /// A valid binary header whose payload is not an audit record.
    BadPayload,
    /// Auto-detection had to choose a binary framing without clear evidence.
    AmbiguousFraming,
}

impl MalformedKind {
    /// A short description for log messages.
    pub fn describe(self) -> &'static str {
        match self {
            MalformedKind::Empty => "empty line",
            MalformedKind::Oversize => "oversize record",
            MalformedKind::Truncated => "truncated record",
            MalformedKind::BadHeader => "invalid binary frame header",
            MalformedKind::BadPayload => "binary frame without an audit record",
            MalformedKind::AmbiguousFraming => "binary framing guessed",
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at byte {}: {}",
            self.kind.describe(),
            self.offset,
            self.detail
        )
    }
}

/// A streaming decoder for one input stream.
#[derive(Debug)]
pub struct Decoder {
    /// The format-specific state.
    inner: Inner,
}

/// The format-specific decoders.
#[derive(Debug)]
enum Inner {
    /// `format = string`.
    String(StringDecoder),
    /// `format = binary`.
    Binary(BinaryDecoder),
}

impl Decoder {
    /// A decoder for a stream in `format`, positioned at its first byte.
    pub fn new(format: InputFormat) -> Self {
        let inner = match format {
            InputFormat::String => Inner::String(StringDecoder::default()),
            InputFormat::Binary(framing) => Inner::Binary(BinaryDecoder::new(framing)),
        };
        Decoder { inner }
    }

    /// Decodes the next `chunk` of the stream, calling `out` for every item it
    /// completes. Chunks may be split anywhere; the output does not depend on
    /// how the stream was split.
    pub fn feed(&mut self, chunk: &[u8], out: &mut dyn FnMut(Item<'_>)) {
        match &mut self.inner {
            Inner::String(d) => d.feed(chunk, out),
            Inner::Binary(d) => d.feed(chunk, out),
        }
    }

    /// Ends the stream: delivers or reports what is left. A binary `Auto`
    /// stream that had not decided decides now (see the module docs). The
    /// decoder is then empty; [`Decoder::detected_framing`] still tells how
    /// the stream was framed, and feeding it again starts a new stream.
    pub fn finish(&mut self, out: &mut dyn FnMut(Item<'_>)) {
        match &mut self.inner {
            Inner::String(d) => d.finish(out),
            Inner::Binary(d) => d.finish(out),
        }
    }

    /// How many bytes from the start of the stream this decoder has turned
    /// into records (or skipped), when a fresh decoder could take over from
    /// there and decode the rest exactly as this one would: so the input can
    /// be handed to another reader at that byte (`format = string` only).
    pub fn resume_offset(&self) -> Option<u64> {
        match &self.inner {
            Inner::String(d) => d.resume_offset(),
            Inner::Binary(_) => None,
        }
    }

    /// Tells the decoder that the input has been quiet for a while (the
    /// caller's read would block and nothing arrived for, say, a second).
    /// Only an undecided binary `Auto` stream uses this, to stop holding back
    /// records of an exact stream (see the module docs); otherwise it does
    /// nothing.
    pub fn input_idle(&mut self, out: &mut dyn FnMut(Item<'_>)) {
        if let Inner::Binary(d) = &mut self.inner {
            d.idle(out);
        }
    }

    /// The binary framing in use: the configured one, or what `Auto` decided
    /// (`None` while undecided, and for string input).
    pub fn detected_framing(&self) -> Option<BinaryFraming> {
        match &self.inner {
            Inner::String(_) => None,
            Inner::Binary(d) => d.framing(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn feeding_after_finish_starts_a_new_stream() {
        for format in [STRING, EXACT] {
            let input = if format == STRING {
                b"\n".to_vec()
            } else {
                vec![9; 16]
            };
            let mut d = Decoder::new(format);
            let mut outs = Vec::new();
            d.feed(&input, &mut |i| outs.push(own(i)));
            d.finish(&mut |i| outs.push(own(i)));
            d.feed(&input, &mut |i| outs.push(own(i)));
            d.finish(&mut |i| outs.push(own(i)));
            let bad = bads(&outs);
            assert_eq!(bad.len(), 2);
            assert_eq!(bad[0], bad[1], "the second stream starts at offset 0 again");
        }
    }

    #[test]
    fn random_streams_in_every_framing() {
        let mut rng = Rng(0x5EED);
        for round in 0..12 {
            let mut frames = Vec::new();
            for i in 0..rng.below(40) + 1 {
                let len = match rng.below(4) {
                    0 => MAX_PAYLOAD,
                    1 => 80 + rng.below(200),
                    _ => 80 + rng.below(MAX_PAYLOAD - 80),
                };
                let r = v1_record(i as u64, len);
                frames.push((1, 1005, r.clone(), rec(&r, Some(1005))));
            }
            let want = expected(&frames);
            let exact = exact_stream(&frames);
            let fill: Vec<u8> = (0..500).map(|_| rng.next() as u8).collect();
            let padded = padded_stream(&frames, &fill);
            random_chunkings(EXACT, &exact, &want, 5);
            random_chunkings(PADDED, &padded, &want, 5);
            random_chunkings(AUTO, &exact, &want, 5);
            random_chunkings(AUTO, &padded, &want, 5);
            let (_, f) = decode(AUTO, &[&padded]);
            let all_full = frames.iter().all(|f| f.2.len() == MAX_PAYLOAD);
            assert_eq!(
                f,
                (!all_full).then_some(BinaryFraming::Padded),
                "round {round}"
            );
        }
    }
}
