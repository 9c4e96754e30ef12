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

use std::fmt;

use memchr::memmem;

use crate::record::{self, MAX_RECORD_LEN};
use crate::record_types;

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

/// The header type auditd sends when it could not parse a forwarded record's type.
const TYPE_UNPARSED: u32 = u32::MAX;
/// How many bytes a resynchronisation scan copies at a time across reads.
const SCAN_BLOCK: usize = 4096;
/// How many payload bytes a report quotes (and a payload is judged by before
/// it is complete).
const SHOWN_PAYLOAD: usize = 24;

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
    /// The stream ended inside a record or frame.
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

// ---------------------------------------------------------------------------
// String input

/// Splits `format = string` input into lines.
#[derive(Debug, Default)]
struct StringDecoder {
    /// The start of a line whose newline has not arrived yet.
    line: Vec<u8>,
    /// Length so far of an oversize line being skipped (its bytes are not kept).
    skipping: Option<u64>,
    /// Stream offset of the pending (or skipped) line.
    line_start: u64,
    /// Stream offset of the next byte fed.
    offset: u64,
    /// Set by `finish`: the next feed starts a new stream.
    ended: bool,
}

impl StringDecoder {
    /// Decodes one chunk.
    fn feed(&mut self, chunk: &[u8], out: &mut dyn FnMut(Item<'_>)) {
        if self.ended {
            *self = StringDecoder::default();
        }
        let mut rest = chunk;
        if self.skipping.is_some() || !self.line.is_empty() {
            let Some(nl) = memchr::memchr(b'\n', rest) else {
                self.extend_pending(rest);
                self.offset += rest.len() as u64;
                return;
            };
            if let Some(len) = self.skipping.take() {
                out(Item::Malformed(oversize(
                    self.line_start,
                    len + nl as u64,
                    true,
                )));
            } else if self.line.len() + nl > MAX_RECORD_LEN {
                let len = (self.line.len() + nl) as u64;
                out(Item::Malformed(oversize(self.line_start, len, true)));
                self.line.clear();
            } else {
                self.line.extend_from_slice(&rest[..nl]);
                out(Item::Record {
                    text: &self.line,
                    type_hint: None,
                });
                self.line.clear();
            }
            rest = &rest[nl + 1..];
            self.offset += nl as u64 + 1;
        }
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            let line = &rest[..nl];
            if line.is_empty() {
                out(Item::Malformed(Malformed {
                    kind: MalformedKind::Empty,
                    offset: self.offset,
                    skipped: 1,
                    detail: "empty line".into(),
                }));
            } else if line.len() > MAX_RECORD_LEN {
                out(Item::Malformed(oversize(
                    self.offset,
                    line.len() as u64,
                    true,
                )));
            } else {
                out(Item::Record {
                    text: line,
                    type_hint: None,
                });
            }
            rest = &rest[nl + 1..];
            self.offset += nl as u64 + 1;
        }
        self.line_start = self.offset;
        self.extend_pending(rest);
        self.offset += rest.len() as u64;
    }

    /// Adds bytes of a line whose newline has not arrived, switching to
    /// skipping once the line is too long to be a record.
    fn extend_pending(&mut self, bytes: &[u8]) {
        if let Some(len) = &mut self.skipping {
            *len += bytes.len() as u64;
        } else if self.line.len() + bytes.len() > MAX_RECORD_LEN {
            self.skipping = Some((self.line.len() + bytes.len()) as u64);
            self.line.clear();
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    /// Ends the stream.
    fn finish(&mut self, out: &mut dyn FnMut(Item<'_>)) {
        if let Some(len) = self.skipping.take() {
            out(Item::Malformed(oversize(self.line_start, len, false)));
        } else if !self.line.is_empty() {
            if record::parse(&self.line).is_some() {
                out(Item::Record {
                    text: &self.line,
                    type_hint: None,
                });
            } else {
                out(Item::Malformed(Malformed {
                    kind: MalformedKind::Truncated,
                    offset: self.line_start,
                    skipped: self.line.len() as u64,
                    detail: format!(
                        "the stream ended inside a line of {} bytes that has no newline and is not a complete record",
                        self.line.len()
                    ),
                }));
            }
        }
        self.line.clear();
        self.ended = true;
    }
}

/// The report for a line of `len` bytes (without newline) that is too long.
fn oversize(offset: u64, len: u64, newline: bool) -> Malformed {
    Malformed {
        kind: MalformedKind::Oversize,
        offset,
        skipped: len + u64::from(newline),
        detail: format!(
            "a line of {len} bytes{} is longer than the {MAX_RECORD_LEN} bytes a record may have",
            if newline {
                ""
            } else {
                " (cut short by the end of the stream)"
            }
        ),
    }
}

// ---------------------------------------------------------------------------
// Binary input: headers and payload checks

/// `struct audit_dispatcher_header`, read in host byte order.
#[derive(Debug, Clone, Copy)]
struct Header {
    /// Protocol version: 0 (raw kernel text) or 1 (formatted line).
    ver: u32,
    /// Header length, always 16.
    hlen: u32,
    /// Record type number.
    rtype: u32,
    /// Payload length.
    size: u32,
}

impl Header {
    /// Reads the header at the start of `b`, if 16 bytes are there.
    fn read(b: &[u8]) -> Option<Header> {
        let word = |i: usize| -> Option<u32> {
            let bytes: [u8; 4] = b.get(i..i + 4)?.try_into().ok()?;
            Some(u32::from_ne_bytes(bytes))
        };
        Some(Header {
            ver: word(0)?,
            hlen: word(4)?,
            rtype: word(8)?,
            size: word(12)?,
        })
    }

    /// Whether every field has a value auditd can write.
    fn is_valid(&self) -> bool {
        self.ver <= 1
            && self.hlen == HEADER_LEN as u32
            && self.size >= 1
            && self.size as usize <= MAX_PAYLOAD
    }

    /// The report of an invalid header: every field, and what is wrong.
    fn problem(&self) -> String {
        let mut wrong = Vec::new();
        if self.ver > 1 {
            wrong.push("ver is not 0 or 1");
        }
        if self.hlen != HEADER_LEN as u32 {
            wrong.push("hlen is not 16");
        }
        if self.size == 0 {
            wrong.push("size is 0");
        }
        if self.size as usize > MAX_PAYLOAD {
            wrong.push("size exceeds 8970");
        }
        format!(
            "header ver={} hlen={} type={} size={}: {}",
            self.ver,
            self.hlen,
            self.rtype,
            self.size,
            wrong.join(", ")
        )
    }

    /// The payload length.
    fn payload_len(&self) -> usize {
        self.size as usize
    }
}

/// What a payload must start with, by protocol version.
fn prefixes(ver: u32) -> &'static [&'static [u8]] {
    if ver == 0 {
        &[b"audit("]
    } else {
        &[b"type=", b"node="]
    }
}

/// Whether the available start of a payload (all of it if `complete`) can be
/// the start of a record of protocol `ver`.
fn prefix_ok(ver: u32, avail: &[u8], complete: bool) -> bool {
    prefixes(ver).iter().any(|p| {
        if avail.len() >= p.len() {
            avail.starts_with(p)
        } else {
            !complete && p.starts_with(avail)
        }
    })
}

/// The payload without its trailing NUL bytes.
fn trim_nuls(payload: &[u8]) -> &[u8] {
    let end = payload.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &payload[..end]
}

/// The strict test used when guessing where frames are: no NUL before the
/// trailing ones, and a record header (type name not looked up).
fn strictly_plausible(ver: u32, payload: &[u8]) -> bool {
    let text = trim_nuls(payload);
    if memchr::memchr(0, text).is_some() {
        return false;
    }
    if ver == 0 {
        record::parse_stamp(text).is_some()
    } else {
        record::parse_parts(text).is_some()
    }
}

/// The report of a payload that is not a record of protocol `ver`.
fn payload_problem(h: &Header, avail: &[u8], strict: bool) -> String {
    let shown = &avail[..avail.len().min(SHOWN_PAYLOAD)];
    let expected = if h.ver == 0 {
        "audit("
    } else {
        "type= or node="
    };
    let what = if strict {
        "does not read as an audit record"
    } else {
        "does not start with"
    };
    format!(
        "header ver={} type={} size={}, payload \"{}\" {what}{}",
        h.ver,
        h.rtype,
        h.size,
        shown.escape_ascii(),
        if strict {
            String::new()
        } else {
            format!(" {expected}")
        }
    )
}

/// Result of scanning for the next strictly plausible frame.
enum Scan {
    /// A frame starts at this index.
    Found(usize),
    /// None before this index; scan again from here with more data.
    NeedMore(usize),
}

/// Looks for the first strictly plausible frame in `w`.
fn scan(w: &[u8]) -> Scan {
    let hlen = (HEADER_LEN as u32).to_ne_bytes();
    for m in memmem::find_iter(w, &hlen) {
        let Some(c) = m.checked_sub(4) else { continue };
        let Some(h) = Header::read(&w[c..]) else {
            return Scan::NeedMore(c.min(w.len().saturating_sub(HEADER_LEN - 1)));
        };
        if !h.is_valid() {
            continue;
        }
        let start = c + HEADER_LEN;
        let end = start + h.payload_len();
        if end > w.len() {
            if prefix_ok(h.ver, &w[start..], false) {
                return Scan::NeedMore(c);
            }
            continue;
        }
        if strictly_plausible(h.ver, &w[start..end]) {
            return Scan::Found(c);
        }
    }
    Scan::NeedMore(w.len().saturating_sub(HEADER_LEN - 1))
}

// ---------------------------------------------------------------------------
// Binary input: one framing over a byte stream

/// Where a framing expects frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// 16 + size.
    Exact,
    /// 16 + 8970.
    Padded,
    /// Before `Auto` has seen a frame shorter than 8970: like `Exact`, but
    /// stops at the first such frame (where the two framings part).
    Common,
}

/// Where a framing is in the stream.
#[derive(Debug)]
enum State {
    /// At the start of a frame.
    Frame,
    /// Skipping the padding of a frame whose record was delivered.
    Padding {
        /// Padding bytes still to skip.
        left: usize,
    },
    /// Scanning for a plausible frame after a damaged one, whose report is
    /// held until the number of skipped bytes is known.
    Resync(Malformed),
}

/// What a framing produces.
enum Event<'a> {
    /// A complete frame.
    Frame {
        /// Index of the frame's first header byte in the data stepped over.
        at: usize,
        /// The frame's header.
        header: Header,
        /// The frame's payload.
        payload: &'a [u8],
    },
    /// A damaged or truncated stretch.
    Malformed(Malformed),
}

/// The result of [`Framer::step`].
struct Progress {
    /// Bytes consumed; the rest must be presented again with more data.
    consumed: usize,
    /// `Common` layout only: the padding the padded framing would skip after
    /// the frame just delivered, which is shorter than 8970 bytes.
    diverged: Option<usize>,
}

/// One framing rule applied to a stream.
#[derive(Debug)]
struct Framer {
    /// The frame layout.
    layout: Layout,
    /// Judge frames by the strict test (while guessing the framing).
    strict: bool,
    /// Position in the stream.
    state: State,
    /// Damaged frames met so far (saturating).
    breaks: u64,
    /// Frames delivered so far (saturating).
    frames: u64,
}

impl Framer {
    /// A framer at a frame boundary.
    fn new(layout: Layout, strict: bool, state: State) -> Self {
        Framer {
            layout,
            strict,
            state,
            breaks: 0,
            frames: 0,
        }
    }

    /// Reports the frame at stream offset `at` as damaged and starts scanning.
    fn broken(&mut self, kind: MalformedKind, at: u64, detail: String) {
        self.breaks = self.breaks.saturating_add(1);
        self.state = State::Resync(Malformed {
            kind,
            offset: at,
            skipped: 0,
            detail,
        });
    }

    /// Frames as much of `data` (which starts at stream offset `base`) as it
    /// can, calling `sink` for every frame and report.
    fn step(&mut self, data: &[u8], base: u64, sink: &mut dyn FnMut(Event<'_>)) -> Progress {
        let mut pos = 0;
        let need = |consumed| Progress {
            consumed,
            diverged: None,
        };
        loop {
            match &mut self.state {
                State::Padding { left } => {
                    let n = (*left).min(data.len() - pos);
                    pos += n;
                    *left -= n;
                    if *left > 0 {
                        return need(pos);
                    }
                    self.state = State::Frame;
                }
                State::Frame => {
                    let rest = &data[pos..];
                    let Some(h) = Header::read(rest) else {
                        return need(pos);
                    };
                    let at = base + pos as u64;
                    if !h.is_valid() {
                        self.broken(MalformedKind::BadHeader, at, h.problem());
                        pos += 1;
                        continue;
                    }
                    let size = h.payload_len();
                    let avail = &rest[HEADER_LEN..rest.len().min(HEADER_LEN + size)];
                    let complete = avail.len() == size;
                    if avail.len() < size.min(SHOWN_PAYLOAD) {
                        // Judge (and quote) the same bytes however the
                        // stream was split.
                        return need(pos);
                    }
                    let plausible = prefix_ok(h.ver, avail, complete)
                        && !(self.strict && complete && !strictly_plausible(h.ver, avail));
                    if !plausible {
                        let detail = payload_problem(&h, avail, self.strict);
                        self.broken(MalformedKind::BadPayload, at, detail);
                        pos += 1;
                        continue;
                    }
                    if !complete {
                        return need(pos);
                    }
                    sink(Event::Frame {
                        at: pos,
                        header: h,
                        payload: avail,
                    });
                    self.frames = self.frames.saturating_add(1);
                    pos += HEADER_LEN + size;
                    let padding = MAX_PAYLOAD - size;
                    match self.layout {
                        Layout::Exact => {}
                        Layout::Padded => {
                            if padding > 0 {
                                self.state = State::Padding { left: padding };
                            }
                        }
                        Layout::Common => {
                            if padding > 0 {
                                return Progress {
                                    consumed: pos,
                                    diverged: Some(padding),
                                };
                            }
                        }
                    }
                }
                State::Resync(report) => match scan(&data[pos..]) {
                    Scan::Found(i) => {
                        pos += i;
                        report.skipped = base + pos as u64 - report.offset;
                        let report = std::mem::replace(&mut self.state, State::Frame);
                        if let State::Resync(m) = report {
                            sink(Event::Malformed(m));
                        }
                    }
                    Scan::NeedMore(i) => return need(pos + i),
                },
            }
        }
    }

    /// How many contiguous bytes, counted from the start of `data` (what
    /// `step` left unconsumed), it needs to make progress.
    fn want(&self, data: &[u8]) -> usize {
        match Header::read(data) {
            Some(h) if h.is_valid() => HEADER_LEN + h.payload_len(),
            Some(_) => data.len() + SCAN_BLOCK,
            None if matches!(self.state, State::Resync(_)) => data.len() + SCAN_BLOCK,
            None => HEADER_LEN,
        }
    }

    /// Whether the framing sits exactly at a frame boundary with `left`
    /// unconsumed bytes.
    fn at_boundary(&self, left: usize) -> bool {
        matches!(self.state, State::Frame) && left == 0
    }

    /// Ends the stream, `rest` being what `step` left unconsumed at stream
    /// offset `base`; returns the report of what is incomplete.
    fn finish(&mut self, rest: &[u8], base: u64) -> Option<Malformed> {
        let state = std::mem::replace(&mut self.state, State::Frame);
        match state {
            State::Frame if rest.is_empty() => None,
            State::Frame => Some(Malformed {
                kind: MalformedKind::Truncated,
                offset: base,
                skipped: rest.len() as u64,
                detail: match Header::read(rest) {
                    None => format!(
                        "the stream ended {} bytes into a frame header",
                        rest.len()
                    ),
                    Some(h) => format!(
                        "the stream ended after {} of the {} payload bytes of a frame (ver={} type={})",
                        rest.len() - HEADER_LEN,
                        h.size,
                        h.ver,
                        h.rtype
                    ),
                },
            }),
            State::Padding { left } => Some(Malformed {
                kind: MalformedKind::Truncated,
                offset: base,
                skipped: 0,
                detail: format!(
                    "the stream ended {left} bytes before the end of a padded frame (its record was delivered)"
                ),
            }),
            State::Resync(mut m) => {
                m.skipped = base + rest.len() as u64 - m.offset;
                m.detail.push_str("; no plausible frame followed before the end of the stream");
                Some(m)
            }
        }
    }
}

/// Hands out a framing event: a frame as its canonical record text.
fn deliver(ev: Event<'_>, scratch: &mut Vec<u8>, out: &mut dyn FnMut(Item<'_>)) {
    let (header, payload) = match ev {
        Event::Frame {
            header, payload, ..
        } => (header, payload),
        Event::Malformed(m) => return out(Item::Malformed(m)),
    };
    let type_hint = (header.rtype != TYPE_UNPARSED).then_some(header.rtype);
    let text: &[u8] = if header.ver == 0 {
        let end = memchr::memchr(0, payload).unwrap_or(payload.len());
        scratch.clear();
        scratch.extend_from_slice(b"type=");
        scratch.extend_from_slice(record_types::display(header.rtype).as_bytes());
        scratch.extend_from_slice(b" msg=");
        let start = scratch.len();
        scratch.extend_from_slice(&payload[..end]);
        replace_newlines(&mut scratch[start..]);
        scratch
    } else {
        let text = trim_nuls(payload);
        if memchr::memchr(b'\n', text).is_some() {
            scratch.clear();
            scratch.extend_from_slice(text);
            replace_newlines(scratch);
            scratch
        } else {
            text
        }
    };
    out(Item::Record { text, type_hint });
}

/// Replaces every `\n` by a space, as auditd's string format does.
fn replace_newlines(text: &mut [u8]) {
    for b in text.iter_mut().filter(|b| **b == b'\n') {
        *b = b' ';
    }
}

// ---------------------------------------------------------------------------
// Binary input: the decoder

/// Decodes `format = binary` input.
#[derive(Debug)]
struct BinaryDecoder {
    /// The configured framing.
    configured: BinaryFraming,
    /// What `Auto` decided.
    decided: Option<BinaryFraming>,
    /// Framing or still guessing.
    phase: Phase,
    /// Stream offset of `carry[0]` (of the next byte fed when it is empty).
    offset: u64,
    /// The unconsumed tail of earlier chunks (a partial frame).
    carry: Vec<u8>,
    /// Where records that need rewriting are built.
    scratch: Vec<u8>,
    /// Set by `finish`: the next feed starts a new stream.
    ended: bool,
}

/// Whether the framing is known.
#[derive(Debug)]
enum Phase {
    /// One framing in use (for `Auto`, possibly the `Common` layout).
    Framed(Framer),
    /// `Auto` comparing both framings.
    Detecting(Box<Detection>),
}

/// `Auto`'s side-by-side run of both framings over a buffered stretch.
#[derive(Debug)]
struct Detection {
    /// The stream from the end of the first frame where they part.
    buf: Vec<u8>,
    /// Stream offset of `buf[0]`.
    base: u64,
    /// The exact framing's view.
    exact: Chain,
    /// The padded framing's view.
    padded: Chain,
}

/// One framing's view of the buffered stretch.
#[derive(Debug)]
struct Chain {
    /// The framing.
    framer: Framer,
    /// How far into the buffer it got.
    pos: usize,
    /// What it would deliver, in order.
    events: Vec<Pending>,
}

/// An item held back until the framing is decided.
#[derive(Debug)]
enum Pending {
    /// A frame in the buffer.
    Frame {
        /// Index of the payload in the buffer.
        at: usize,
        /// The frame header.
        header: Header,
    },
    /// A report.
    Malformed(Malformed),
}

impl Chain {
    /// A framing starting at the buffer's first byte in `state`.
    fn new(layout: Layout, state: State) -> Self {
        Chain {
            framer: Framer::new(layout, true, state),
            pos: 0,
            events: Vec::new(),
        }
    }

    /// Frames the buffer from where it stopped.
    fn advance(&mut self, buf: &[u8], base: u64) {
        let Chain {
            framer,
            pos,
            events,
        } = self;
        let start = *pos;
        let progress = framer.step(&buf[start..], base + start as u64, &mut |ev| {
            events.push(match ev {
                Event::Frame { at, header, .. } => Pending::Frame {
                    at: start + at + HEADER_LEN,
                    header,
                },
                Event::Malformed(m) => Pending::Malformed(m),
            })
        });
        *pos += progress.consumed;
    }

    /// Whether this framing would leave the buffer mid-frame.
    fn ends_inside(&self, buf_len: usize) -> bool {
        !self.framer.at_boundary(buf_len - self.pos)
    }
}

/// What prompts a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// More data arrived.
    Data,
    /// The caller says the input is quiet.
    Idle,
    /// The stream ended.
    End,
}

/// A decision: the framing, and the report if it was a guess.
type Decision = (BinaryFraming, Option<Malformed>);

impl Detection {
    /// Starts comparing at stream offset `base`, the padded framing having
    /// `padding` bytes to skip first.
    fn new(base: u64, padding: usize) -> Self {
        Detection {
            buf: Vec::new(),
            base,
            exact: Chain::new(Layout::Exact, State::Frame),
            padded: Chain::new(Layout::Padded, State::Padding { left: padding }),
        }
    }

    /// Runs both framings over the buffer, one padded frame's worth at a
    /// time so that a clear case is decided early, and decides if it can.
    fn evaluate(&mut self, trigger: Trigger) -> Option<Decision> {
        loop {
            let seen = self.exact.pos.max(self.padded.pos);
            let upto = (seen + PADDED_FRAME_LEN).min(self.buf.len());
            self.exact.advance(&self.buf[..upto], self.base);
            self.padded.advance(&self.buf[..upto], self.base);
            if let Some(decision) = self.evident() {
                return Some(decision);
            }
            if upto >= AUTO_LOOKAHEAD {
                if self.same_frames() {
                    return Some((BinaryFraming::Exact, None));
                }
                let (e, p) = (&self.exact.framer, &self.padded.framer);
                return Some(self.guess(
                    e.breaks,
                    p.breaks,
                    format!("after {upto} bytes both framings still fit the stream"),
                ));
            }
            if upto == self.buf.len() {
                break;
            }
        }
        let len = self.buf.len();
        let (e, p) = (&self.exact.framer, &self.padded.framer);
        match trigger {
            Trigger::Data => None,
            Trigger::Idle => {
                let exact_fits = e.breaks <= p.breaks && !self.exact.ends_inside(len);
                (exact_fits && self.padded.ends_inside(len)).then_some((BinaryFraming::Exact, None))
            }
            Trigger::End => {
                let e_score = e.breaks + u64::from(self.exact.ends_inside(len));
                let p_score = p.breaks + u64::from(self.padded.ends_inside(len));
                if e_score != p_score {
                    return Some((fewer_breaks(e_score, p_score), None));
                }
                if self.same_frames() {
                    // Either way the same records come out.
                    return Some((BinaryFraming::Exact, None));
                }
                if e_score > 0 && e.frames != p.frames {
                    // Both are equally broken; trust the one that found more.
                    let framing = if e.frames > p.frames {
                        BinaryFraming::Exact
                    } else {
                        BinaryFraming::Padded
                    };
                    return Some((framing, None));
                }
                Some(self.guess(
                    e.breaks,
                    p.breaks,
                    format!("the stream ended after {len} bytes that both framings fit"),
                ))
            }
        }
    }

    /// The decision the breaks so far make clear, if any.
    fn evident(&self) -> Option<Decision> {
        let (e, p) = (&self.exact.framer, &self.padded.framer);
        if e.breaks == 0 && p.breaks > 0 && e.frames > 0 {
            return Some((BinaryFraming::Exact, None));
        }
        if p.breaks == 0 && e.breaks > 0 && p.frames > 0 {
            return Some((BinaryFraming::Padded, None));
        }
        if e.breaks > 0 && p.breaks > 0 && e.breaks.abs_diff(p.breaks) >= 2 {
            return Some((fewer_breaks(e.breaks, p.breaks), None));
        }
        None
    }

    /// Whether both framings found the same frames (so the choice between
    /// them changes no record).
    fn same_frames(&self) -> bool {
        let frames = |c: &Chain| -> Vec<usize> {
            c.events
                .iter()
                .filter_map(|ev| match ev {
                    Pending::Frame { at, .. } => Some(*at),
                    Pending::Malformed(_) => None,
                })
                .collect()
        };
        frames(&self.exact) == frames(&self.padded)
    }

    /// Chooses without clear evidence, and says so.
    fn guess(&self, e_breaks: u64, p_breaks: u64, why: String) -> Decision {
        let framing = fewer_breaks(e_breaks, p_breaks);
        let report = Malformed {
            kind: MalformedKind::AmbiguousFraming,
            offset: self.base,
            skipped: 0,
            detail: format!(
                "{why} (damaged frames: {e_breaks} if exact, {p_breaks} if padded); assuming {} framing — set the binary framing explicitly (padded for auditd <= 4.1.0, exact for >= 4.1.1)",
                if framing == BinaryFraming::Exact { "exact" } else { "padded" }
            ),
        };
        (framing, Some(report))
    }
}

/// The framing with fewer breaks, exact on a tie.
fn fewer_breaks(exact: u64, padded: u64) -> BinaryFraming {
    if padded < exact {
        BinaryFraming::Padded
    } else {
        BinaryFraming::Exact
    }
}

impl BinaryDecoder {
    /// A decoder at the start of a stream.
    fn new(configured: BinaryFraming) -> Self {
        let layout = match configured {
            BinaryFraming::Auto => Layout::Common,
            BinaryFraming::Padded => Layout::Padded,
            BinaryFraming::Exact => Layout::Exact,
        };
        BinaryDecoder {
            configured,
            decided: None,
            phase: Phase::Framed(Framer::new(layout, false, State::Frame)),
            offset: 0,
            carry: Vec::new(),
            scratch: Vec::new(),
            ended: false,
        }
    }

    /// The framing in use, if known.
    fn framing(&self) -> Option<BinaryFraming> {
        match self.configured {
            BinaryFraming::Auto => self.decided,
            fixed => Some(fixed),
        }
    }

    /// Decodes one chunk.
    fn feed(&mut self, chunk: &[u8], out: &mut dyn FnMut(Item<'_>)) {
        if self.ended {
            *self = BinaryDecoder::new(self.configured);
        }
        let mut input = chunk;
        if let Phase::Framed(framer) = &mut self.phase {
            let scratch = &mut self.scratch;
            let mut sink = |ev: Event<'_>| deliver(ev, scratch, out);
            let mut diverged = None;
            // Complete the carried-over partial frame with as few bytes of
            // the chunk as it needs, then frame the chunk in place.
            while !self.carry.is_empty() && !input.is_empty() && diverged.is_none() {
                let kept = self.carry.len();
                let take = framer
                    .want(&self.carry)
                    .saturating_sub(kept)
                    .clamp(1, input.len());
                self.carry.extend_from_slice(&input[..take]);
                let progress = framer.step(&self.carry, self.offset, &mut sink);
                self.offset += progress.consumed as u64;
                diverged = progress.diverged;
                if progress.consumed >= kept {
                    input = &input[progress.consumed - kept..];
                    self.carry.clear();
                } else {
                    if progress.consumed > 0 {
                        self.carry.drain(..progress.consumed);
                    }
                    input = &input[take..];
                }
            }
            if self.carry.is_empty() && diverged.is_none() {
                let progress = framer.step(input, self.offset, &mut sink);
                self.offset += progress.consumed as u64;
                input = &input[progress.consumed..];
                diverged = progress.diverged;
            }
            match diverged {
                None => {
                    self.carry.extend_from_slice(input);
                    return;
                }
                Some(padding) => {
                    let mut detection = Detection::new(self.offset, padding);
                    detection.buf.append(&mut self.carry);
                    self.phase = Phase::Detecting(Box::new(detection));
                }
            }
        }
        if let Phase::Detecting(detection) = &mut self.phase {
            detection.buf.extend_from_slice(input);
        }
        self.detect(Trigger::Data, out);
    }

    /// Lets an undecided `Auto` stream decide from the input being quiet.
    fn idle(&mut self, out: &mut dyn FnMut(Item<'_>)) {
        self.detect(Trigger::Idle, out);
    }

    /// If detecting, tries to decide; on a decision delivers what the chosen
    /// framing found and continues with it.
    fn detect(&mut self, trigger: Trigger, out: &mut dyn FnMut(Item<'_>)) {
        let Phase::Detecting(detection) = &mut self.phase else {
            return;
        };
        let Some((framing, report)) = detection.evaluate(trigger) else {
            return;
        };
        if let Some(m) = report {
            out(Item::Malformed(m));
        }
        let Detection {
            buf,
            base,
            exact,
            padded,
        } = std::mem::replace(detection.as_mut(), Detection::new(0, 0));
        let chosen = if framing == BinaryFraming::Exact {
            exact
        } else {
            padded
        };
        for pending in chosen.events {
            let ev = match pending {
                Pending::Frame { at, header } => Event::Frame {
                    at: at - HEADER_LEN,
                    header,
                    payload: &buf[at..at + header.payload_len()],
                },
                Pending::Malformed(m) => Event::Malformed(m),
            };
            deliver(ev, &mut self.scratch, out);
        }
        let mut framer = chosen.framer;
        framer.strict = false;
        // Frame what the comparison had not looked at yet.
        let rest = &buf[chosen.pos..];
        let scratch = &mut self.scratch;
        let progress = framer.step(rest, base + chosen.pos as u64, &mut |ev| {
            deliver(ev, scratch, out)
        });
        self.carry.clear();
        self.carry.extend_from_slice(&rest[progress.consumed..]);
        self.offset = base + (chosen.pos + progress.consumed) as u64;
        self.phase = Phase::Framed(framer);
        self.decided = Some(framing);
    }

    /// Ends the stream.
    fn finish(&mut self, out: &mut dyn FnMut(Item<'_>)) {
        if self.ended {
            return;
        }
        self.detect(Trigger::End, out);
        if let Phase::Framed(framer) = &mut self.phase {
            if let Some(m) = framer.finish(&self.carry, self.offset) {
                out(Item::Malformed(m));
            }
        }
        self.offset += self.carry.len() as u64;
        self.carry.clear();
        self.ended = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An item with its borrow ended, for comparing outputs.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Out {
        Rec(Vec<u8>, Option<u32>),
        Bad(Malformed),
    }

    fn own(item: Item<'_>) -> Out {
        match item {
            Item::Record { text, type_hint } => {
                assert!(text.len() <= MAX_RECORD_LEN);
                Out::Rec(text.to_vec(), type_hint)
            }
            Item::Malformed(m) => Out::Bad(m),
        }
    }

    /// Decodes `chunks` as one stream, then finishes it.
    fn decode(format: InputFormat, chunks: &[&[u8]]) -> (Vec<Out>, Option<BinaryFraming>) {
        let mut d = Decoder::new(format);
        let mut outs = Vec::new();
        for c in chunks {
            d.feed(c, &mut |i| outs.push(own(i)));
        }
        d.finish(&mut |i| outs.push(own(i)));
        (outs, d.detected_framing())
    }

    fn one_shot(format: InputFormat, input: &[u8]) -> Vec<Out> {
        decode(format, &[input]).0
    }

    /// Decodes `input` split at every byte offset, byte by byte and in random
    /// chunkings, asserting every way gives the one-shot output; returns it.
    fn every_split(format: InputFormat, input: &[u8]) -> Vec<Out> {
        let (whole, framing) = decode(format, &[input]);
        for at in 0..=input.len() {
            let (split, f) = decode(format, &[&input[..at], &input[at..]]);
            assert_eq!(split, whole, "split at {at}");
            assert_eq!(f, framing, "split at {at}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(decode(format, &bytes).0, whole, "byte by byte");
        random_chunkings(format, input, &whole, 30);
        whole
    }

    /// A small deterministic PRNG (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn random_chunkings(format: InputFormat, input: &[u8], whole: &[Out], rounds: u64) {
        for seed in 1..=rounds {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut chunks = Vec::new();
            let mut rest = input;
            while !rest.is_empty() {
                let max = [3, 17, 600, 9000, 70000][rng.below(5)];
                let n = (rng.below(max) + 1).min(rest.len());
                chunks.push(&rest[..n]);
                rest = &rest[n..];
            }
            assert_eq!(decode(format, &chunks).0, whole, "chunking seed {seed}");
        }
    }

    fn rec(text: &[u8], hint: Option<u32>) -> Out {
        Out::Rec(text.to_vec(), hint)
    }

    fn records(outs: &[Out]) -> Vec<Vec<u8>> {
        outs.iter()
            .filter_map(|o| match o {
                Out::Rec(t, _) => Some(t.clone()),
                Out::Bad(_) => None,
            })
            .collect()
    }

    fn bads(outs: &[Out]) -> Vec<Malformed> {
        outs.iter()
            .filter_map(|o| match o {
                Out::Bad(m) => Some(m.clone()),
                Out::Rec(..) => None,
            })
            .collect()
    }

    const STRING: InputFormat = InputFormat::String;
    const EXACT: InputFormat = InputFormat::Binary(BinaryFraming::Exact);
    const PADDED: InputFormat = InputFormat::Binary(BinaryFraming::Padded);
    const AUTO: InputFormat = InputFormat::Binary(BinaryFraming::Auto);

    const SYSCALL_V1: &[u8] = b"type=SYSCALL msg=audit(1721000000.123:42): arch=c000003e syscall=257 \
success=yes exit=3 a0=ffffff9c a1=7ffd2b1c a2=0 a3=0 items=1 ppid=1001 pid=1234 auid=1000 uid=0 \
gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 ses=3 comm=\"cat\" exe=\"/usr/bin/cat\" \
key=\"shadow\"\x1dARCH=x86_64 SYSCALL=openat AUID=\"alice\" UID=\"root\" GID=\"root\" EUID=\"root\"";
    const PATH_V1: &[u8] = b"type=PATH msg=audit(1721000000.123:42): item=0 name=\"/etc/shadow\" \
inode=1311 dev=08:01 mode=0100640 ouid=0 ogid=42 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 \
cap_fe=0 cap_fver=0 cap_frootid=0\x1dOUID=\"root\" OGID=\"shadow\"";
    const LOGIN_V1: &[u8] = b"node=web-01 type=USER_LOGIN msg=audit(1721000001.007:99): pid=812 \
uid=0 auid=1000 ses=4 msg='op=login id=1000 exe=\"/usr/sbin/sshd\" hostname=? addr=10.0.0.5 \
terminal=ssh res=success'\x1dUID=\"root\" AUID=\"alice\" ID=\"alice\"";
    const PROCTITLE_V0: &[u8] =
        b"audit(1721000000.123:42): proctitle=636174002F6574632F736861646F77";
    const EOE_V0: &[u8] = b"audit(1721000000.123:42): ";
    const AVC_V0: &[u8] = b"audit(1721000003.500:77): avc:  denied  { read } for  pid=2001 \
comm=\"httpd\"\nname=\"index.html\" dev=\"sda1\" ino=4242\n";

    /// A V1 record of exactly `len` bytes (at least 60).
    fn v1_record(serial: u64, len: usize) -> Vec<u8> {
        let mut r =
            format!("type=USER msg=audit(1721000100.250:{serial}): pid=77 uid=0 msg='data=")
                .into_bytes();
        assert!(r.len() + 1 < len);
        r.resize(len - 1, b'x');
        r.push(b'\'');
        r
    }

    fn header(ver: u32, hlen: u32, rtype: u32, size: u32) -> Vec<u8> {
        [ver, hlen, rtype, size]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect()
    }

    /// An exact frame (auditd >= 4.1.1).
    fn frame(ver: u32, rtype: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = header(ver, 16, rtype, payload.len() as u32);
        f.extend_from_slice(payload);
        f
    }

    /// A padded frame (auditd <= 4.1.0) whose padding is `fill` repeated.
    fn padded(ver: u32, rtype: u32, payload: &[u8], fill: &[u8]) -> Vec<u8> {
        let mut f = frame(ver, rtype, payload);
        while f.len() < PADDED_FRAME_LEN {
            let n = fill.len().min(PADDED_FRAME_LEN - f.len());
            f.extend_from_slice(&fill[..n]);
        }
        f
    }

    /// The test stream's frames: (ver, type, payload) and the canonical text.
    fn sample() -> Vec<(u32, u32, Vec<u8>, Out)> {
        let mut big = v1_record(500, MAX_PAYLOAD - 1);
        big.push(0);
        vec![
            (1, 1300, SYSCALL_V1.to_vec(), rec(SYSCALL_V1, Some(1300))),
            (1, 1302, PATH_V1.to_vec(), rec(PATH_V1, Some(1302))),
            (
                0,
                1327,
                PROCTITLE_V0.to_vec(),
                rec(
                    b"type=PROCTITLE msg=audit(1721000000.123:42): proctitle=636174002F6574632F736861646F77",
                    Some(1327),
                ),
            ),
            (
                0,
                1320,
                EOE_V0.to_vec(),
                rec(b"type=EOE msg=audit(1721000000.123:42): ", Some(1320)),
            ),
            (
                0,
                1400,
                AVC_V0.to_vec(),
                rec(
                    b"type=AVC msg=audit(1721000003.500:77): avc:  denied  { read } for  pid=2001 \
comm=\"httpd\" name=\"index.html\" dev=\"sda1\" ino=4242 ",
                    Some(1400),
                ),
            ),
            (
                0,
                1999,
                b"audit(1721000004.000:78): op=test\nres=1".to_vec(),
                rec(b"type=UNKNOWN[1999] msg=audit(1721000004.000:78): op=test res=1", Some(1999)),
            ),
            (1, 1112, LOGIN_V1.to_vec(), rec(LOGIN_V1, Some(1112))),
            (
                1,
                TYPE_UNPARSED,
                b"node=remote type=USER_CMD msg=audit(1721000005.001:80): cmd=6C73\ncwd=\"/\"".to_vec(),
                rec(b"node=remote type=USER_CMD msg=audit(1721000005.001:80): cmd=6C73 cwd=\"/\"", None),
            ),
            (1, 1005, big.clone(), rec(&big[..MAX_PAYLOAD - 1], Some(1005))),
            (1, 1005, v1_record(501, 300), rec(&v1_record(501, 300), Some(1005))),
        ]
    }

    fn exact_stream(frames: &[(u32, u32, Vec<u8>, Out)]) -> Vec<u8> {
        frames
            .iter()
            .flat_map(|(v, t, p, _)| frame(*v, *t, p))
            .collect()
    }

    fn padded_stream(frames: &[(u32, u32, Vec<u8>, Out)], fill: &[u8]) -> Vec<u8> {
        frames
            .iter()
            .flat_map(|(v, t, p, _)| padded(*v, *t, p, fill))
            .collect()
    }

    fn expected(frames: &[(u32, u32, Vec<u8>, Out)]) -> Vec<Out> {
        frames.iter().map(|f| f.3.clone()).collect()
    }

    /// Stale heap as auditd <= 4.1.0 leaves it: bits of old records.
    const STALE: &[u8] = b"ppid=1 pid=4321 auid=4294967295 uid=0 gid=0 comm=\"systemd\" exe=\"/usr/lib/systemd/systemd\" ";

    /// A fake frame: a valid header and a record that was never sent.
    fn fake_frame(serial: u64, len: usize) -> Vec<u8> {
        frame(1, 1005, &v1_record(serial, len - HEADER_LEN))
    }

    // ----- string input

    #[test]
    fn string_lines_split_anywhere() {
        let mut input = Vec::new();
        for line in [
            SYSCALL_V1,
            PATH_V1,
            b"type=EOE msg=audit(1721000000.123:42): ",
            LOGIN_V1,
        ] {
            input.extend_from_slice(line);
            input.push(b'\n');
        }
        let empty_at = input.len() as u64;
        input.extend_from_slice(b"\nnot a record\ntype=USER msg=audit(1721000009.000:5): a=\0b\n");
        input.extend_from_slice(b"type=USER msg=audit(1721000009.000:6): last");
        let outs = every_split(STRING, &input);
        assert_eq!(
            outs,
            vec![
                rec(SYSCALL_V1, None),
                rec(PATH_V1, None),
                rec(b"type=EOE msg=audit(1721000000.123:42): ", None),
                rec(LOGIN_V1, None),
                Out::Bad(Malformed {
                    kind: MalformedKind::Empty,
                    offset: empty_at,
                    skipped: 1,
                    detail: "empty line".into()
                }),
                rec(b"not a record", None),
                rec(b"type=USER msg=audit(1721000009.000:5): a=\0b", None),
                rec(b"type=USER msg=audit(1721000009.000:6): last", None),
            ]
        );
    }

    #[test]
    fn string_oversize_line_is_skipped_once() {
        let mut long = b"type=USER msg=audit(1721000009.000:5): msg='".to_vec();
        long.resize(MAX_RECORD_LEN + 1, b'y');
        let mut longest = b"type=USER msg=audit(1721000009.000:6): msg='".to_vec();
        longest.resize(MAX_RECORD_LEN, b'z');
        let mut input = long.clone();
        input.push(b'\n');
        input.extend_from_slice(PATH_V1);
        input.push(b'\n');
        input.extend_from_slice(&longest);
        input.push(b'\n');
        input.extend_from_slice(&long);
        input.extend_from_slice(&long);
        input.push(b'\n');
        input.extend_from_slice(SYSCALL_V1);
        input.push(b'\n');
        let outs = every_split(STRING, &input);
        assert_eq!(
            records(&outs),
            vec![PATH_V1.to_vec(), longest.clone(), SYSCALL_V1.to_vec()]
        );
        let bad = bads(&outs);
        assert_eq!(bad.len(), 2);
        assert_eq!(bad[0].kind, MalformedKind::Oversize);
        assert_eq!(
            (bad[0].offset, bad[0].skipped),
            (0, MAX_RECORD_LEN as u64 + 2)
        );
        assert!(bad[0].detail.contains("10241 bytes"), "{}", bad[0].detail);
        let second = (long.len() + PATH_V1.len() + longest.len() + 3) as u64;
        assert_eq!(
            (bad[1].offset, bad[1].skipped),
            (second, 2 * long.len() as u64 + 1)
        );
        assert!(outs[1] == rec(PATH_V1, None) && outs[4] == rec(SYSCALL_V1, None));
    }

    #[test]
    fn string_final_line_without_newline() {
        // A complete record is delivered...
        let outs = one_shot(STRING, SYSCALL_V1);
        assert_eq!(outs, vec![rec(SYSCALL_V1, None)]);
        // ...a cut-off one is reported.
        let mut input = PATH_V1.to_vec();
        input.extend_from_slice(b"\ntype=SYSC");
        let outs = every_split(STRING, &input);
        assert_eq!(outs[0], rec(PATH_V1, None));
        let bad = bads(&outs);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].kind, MalformedKind::Truncated);
        assert_eq!(
            (bad[0].offset, bad[0].skipped),
            (PATH_V1.len() as u64 + 1, 9)
        );
        // An oversize final line is reported as oversize.
        let long = vec![b'q'; MAX_RECORD_LEN + 5];
        let bad = bads(&one_shot(STRING, &long));
        assert_eq!(bad.len(), 1);
        assert_eq!(
            (bad[0].kind, bad[0].skipped),
            (MalformedKind::Oversize, MAX_RECORD_LEN as u64 + 5)
        );
        assert!(bad[0].detail.contains("end of the stream"));
    }

    #[test]
    fn string_empty_lines_are_counted() {
        let mut input = b"\n\n".to_vec();
        input.extend_from_slice(PATH_V1);
        input.extend_from_slice(b"\n\n");
        let outs = every_split(STRING, &input);
        let offsets: Vec<(MalformedKind, u64)> =
            bads(&outs).iter().map(|m| (m.kind, m.offset)).collect();
        let last = PATH_V1.len() as u64 + 3;
        assert_eq!(
            offsets,
            vec![
                (MalformedKind::Empty, 0),
                (MalformedKind::Empty, 1),
                (MalformedKind::Empty, last)
            ]
        );
        assert_eq!(records(&outs), vec![PATH_V1.to_vec()]);
    }

    #[test]
    fn string_records_inside_a_chunk_are_borrowed() {
        let mut input = SYSCALL_V1.to_vec();
        input.push(b'\n');
        let mut d = Decoder::new(STRING);
        let range = input.as_ptr_range();
        let mut seen = 0;
        d.feed(&input, &mut |item| {
            if let Item::Record { text, .. } = item {
                assert!(range.contains(&text.as_ptr()));
                seen += 1;
            }
        });
        assert_eq!(seen, 1);
    }

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

    // ----- binary input: framing

    #[test]
    fn exact_frames_split_anywhere() {
        let frames = sample();
        let input = exact_stream(&frames);
        assert_eq!(every_split(EXACT, &input), expected(&frames));
    }

    #[test]
    fn padded_frames_split_anywhere() {
        let frames = sample();
        for fill in [STALE, &[0u8][..]] {
            let input = padded_stream(&frames, fill);
            assert_eq!(every_split(PADDED, &input), expected(&frames));
        }
    }

    #[test]
    fn exact_records_inside_a_chunk_are_borrowed() {
        let input = frame(1, 1302, PATH_V1);
        let range = input.as_ptr_range();
        let mut d = Decoder::new(EXACT);
        let mut seen = 0;
        d.feed(&input, &mut |item| {
            if let Item::Record { text, .. } = item {
                assert!(range.contains(&text.as_ptr()));
                seen += 1;
            }
        });
        assert_eq!(seen, 1);
    }

    /// Padding made of everything that looks like frames: valid headers with
    /// and without records, and whole fake frames at every few bytes.
    fn adversarial_fill() -> Vec<u8> {
        let mut fill = Vec::new();
        fill.extend_from_slice(&fake_frame(900, 120));
        fill.extend_from_slice(&header(0, 16, 1300, 40));
        fill.extend_from_slice(b"audit(1721000000.000:901): fake");
        fill.extend_from_slice(&header(1, 16, 1005, 8970));
        fill.extend_from_slice(&fake_frame(902, 200));
        fill.extend_from_slice(STALE);
        fill
    }

    #[test]
    fn padded_never_emits_what_the_padding_holds() {
        let frames = sample();
        // The fake frames also start right after each payload.
        let input = padded_stream(&frames, &adversarial_fill());
        let outs = every_split(PADDED, &input);
        assert_eq!(outs, expected(&frames));
        for r in records(&outs) {
            assert!(!r.windows(4).any(|w| w == b":90"), "fake record delivered");
        }
    }

    #[test]
    fn v1_record_of_8970_bytes_loses_its_trailing_nul() {
        let mut payload = v1_record(7, MAX_PAYLOAD - 1);
        payload.push(0);
        for format in [EXACT, PADDED, AUTO] {
            let outs = one_shot(format, &frame(1, 1005, &payload));
            assert_eq!(outs, vec![rec(&payload[..MAX_PAYLOAD - 1], Some(1005))]);
        }
    }

    #[test]
    fn v0_records_read_as_auditd_string_format_writes_them() {
        let cases: [(u32, &[u8], &[u8]); 5] = [
            (1320, EOE_V0, b"type=EOE msg=audit(1721000000.123:42): "),
            (
                2000,
                b"audit(1721000006.100:3): state=initialized audit_enabled=1 res=1\n",
                b"type=KERNEL msg=audit(1721000006.100:3): state=initialized audit_enabled=1 res=1 ",
            ),
            (4242, b"audit(1721000006.100:4): a\n\nb", b"type=UNKNOWN[4242] msg=audit(1721000006.100:4): a  b"),
            (
                1305,
                b"audit(1721000006.100:5): op=add_rule key=\"x\" res=1\0\0stale",
                b"type=CONFIG_CHANGE msg=audit(1721000006.100:5): op=add_rule key=\"x\" res=1",
            ),
            (
                TYPE_UNPARSED,
                b"audit(1721000006.100:6): x=1",
                b"type=UNKNOWN[4294967295] msg=audit(1721000006.100:6): x=1",
            ),
        ];
        for (rtype, payload, text) in cases {
            let outs = one_shot(EXACT, &frame(0, rtype, payload));
            let hint = (rtype != TYPE_UNPARSED).then_some(rtype);
            assert_eq!(outs, vec![rec(text, hint)]);
            // Same text as a line of auditd's string format.
            let mut line = text.to_vec();
            line.push(b'\n');
            assert_eq!(records(&one_shot(STRING, &line)), vec![text.to_vec()]);
        }
    }

    #[test]
    fn invalid_headers_are_reported_with_their_fields() {
        let cases: [(Vec<u8>, &str); 4] = [
            (
                header(2, 16, 1300, 100),
                "ver=2 hlen=16 type=1300 size=100: ver is not 0 or 1",
            ),
            (
                header(1, 20, 1300, 100),
                "hlen=20 type=1300 size=100: hlen is not 16",
            ),
            (header(1, 16, 1300, 0), "size=0: size is 0"),
            (header(0, 16, 1300, 9000), "size=9000: size exceeds 8970"),
        ];
        for (bad, detail) in cases {
            let mut input = frame(1, 1302, PATH_V1);
            let at = input.len() as u64;
            input.extend_from_slice(&bad);
            input.extend_from_slice(b"type=SYSCALL msg=audit(1.000:1): junk");
            input.extend_from_slice(&frame(1, 1112, LOGIN_V1));
            let outs = every_split(EXACT, &input);
            assert_eq!(records(&outs), vec![PATH_V1.to_vec(), LOGIN_V1.to_vec()]);
            let bad_items = bads(&outs);
            assert_eq!(bad_items.len(), 1, "{detail}");
            assert_eq!(bad_items[0].kind, MalformedKind::BadHeader);
            assert_eq!((bad_items[0].offset, bad_items[0].skipped), (at, 16 + 37));
            assert!(
                bad_items[0].detail.contains(detail),
                "{}",
                bad_items[0].detail
            );
            assert!(bad_items[0].to_string().starts_with(&format!(
                "invalid binary frame header at byte {at}: header ver="
            )));
        }
    }

    #[test]
    fn implausible_payloads_are_reported() {
        let cases: [(u32, &[u8], &str); 2] = [
            (
                1,
                b"hello, not a record",
                "payload \"hello, not a record\" does not start with type= or node=",
            ),
            (
                0,
                b"type=USER msg=audit(1.000:2): v1 text in a v0 frame",
                "payload \"type=USER msg=audit(1.00\" does not start with audit(",
            ),
        ];
        for (ver, payload, detail) in cases {
            let mut input = frame(1, 1302, PATH_V1);
            let at = input.len() as u64;
            let bad_frame = frame(ver, 1005, payload);
            input.extend_from_slice(&bad_frame);
            input.extend_from_slice(&frame(1, 1112, LOGIN_V1));
            let outs = every_split(EXACT, &input);
            assert_eq!(records(&outs), vec![PATH_V1.to_vec(), LOGIN_V1.to_vec()]);
            let bad = bads(&outs);
            assert_eq!(bad.len(), 1);
            assert_eq!(bad[0].kind, MalformedKind::BadPayload);
            assert!(bad[0].detail.contains(detail), "{}", bad[0].detail);
            assert_eq!(
                (bad[0].offset, bad[0].skipped),
                (at, bad_frame.len() as u64)
            );
        }
        // Two damaged frames in a row are one stretch, reported once.
        let mut input = frame(1, 1005, b"hello");
        input.extend_from_slice(&frame(1, 1005, b"world"));
        input.extend_from_slice(&frame(1, 1302, PATH_V1));
        let outs = one_shot(EXACT, &input);
        assert_eq!(records(&outs), vec![PATH_V1.to_vec()]);
        assert_eq!(bads(&outs).len(), 1);
        assert_eq!(bads(&outs)[0].skipped, 42);
    }

    #[test]
    fn garbage_between_frames_is_skipped_and_later_records_arrive() {
        let frames = sample();
        let mut junk = b"\x07\x00\x00\x00garbage".to_vec();
        junk.extend_from_slice(&header(1, 16, 1005, 500)); // a header with no record after it
        junk.extend_from_slice(b"leftover bytes");
        let mut input = exact_stream(&frames[..3]);
        let at = input.len() as u64;
        input.extend_from_slice(&junk);
        input.extend_from_slice(&exact_stream(&frames[3..]));
        let outs = every_split(EXACT, &input);
        assert_eq!(records(&outs), records(&expected(&frames)));
        let bad = bads(&outs);
        assert_eq!(bad.len(), 1);
        assert_eq!(
            (bad[0].kind, bad[0].offset, bad[0].skipped),
            (MalformedKind::BadHeader, at, junk.len() as u64)
        );

        // Padded: a damaged header costs that frame only.
        let frames = &frames[..4];
        let mut input = padded_stream(frames, STALE);
        let at = 2 * PADDED_FRAME_LEN;
        input[at..at + 4].copy_from_slice(&7u32.to_ne_bytes());
        let outs = every_split(PADDED, &input);
        let mut want = records(&expected(frames));
        want.remove(2);
        assert_eq!(records(&outs), want);
        let bad = bads(&outs);
        assert_eq!(bad.len(), 1);
        assert_eq!(
            (bad[0].offset, bad[0].skipped),
            (at as u64, PADDED_FRAME_LEN as u64)
        );
    }

    #[test]
    fn truncated_final_frames_are_reported() {
        let whole = frame(1, 1302, PATH_V1);
        for cut in [1, 15, 16, 17, whole.len() - 1] {
            let mut input = frame(1, 1300, SYSCALL_V1);
            input.extend_from_slice(&whole[..cut]);
            for format in [EXACT, PADDED, AUTO] {
                let mut input = input.clone();
                if format == PADDED {
                    input = padded(1, 1300, SYSCALL_V1, STALE);
                    input.extend_from_slice(&whole[..cut]);
                }
                let outs = every_split(format, &input);
                assert_eq!(
                    records(&outs),
                    vec![SYSCALL_V1.to_vec()],
                    "{format:?} cut {cut}"
                );
                let bad = bads(&outs);
                assert_eq!(bad.len(), 1, "{format:?} cut {cut}: {bad:?}");
                assert_eq!(bad[0].kind, MalformedKind::Truncated);
                assert_eq!(bad[0].skipped, cut as u64);
                assert_eq!(bad[0].offset, (input.len() - cut) as u64);
                if cut > 16 {
                    assert!(bad[0].detail.contains(&format!(
                        "{} of the {} payload bytes",
                        cut - 16,
                        PATH_V1.len()
                    )));
                }
            }
        }
        // A padded frame cut inside its padding: the record was delivered.
        let input = padded(1, 1302, PATH_V1, STALE);
        let outs = one_shot(PADDED, &input[..PATH_V1.len() + 100]);
        assert_eq!(records(&outs), vec![PATH_V1.to_vec()]);
        let bad = bads(&outs);
        assert_eq!(bad.len(), 1);
        assert!(bad[0].detail.contains("its record was delivered"));
    }

    // ----- binary input: auto-detection

    #[test]
    fn auto_detects_exact_streams() {
        let frames = sample();
        let input = exact_stream(&frames);
        let (outs, framing) = decode(AUTO, &[&input]);
        assert_eq!(outs, expected(&frames));
        assert_eq!(framing, Some(BinaryFraming::Exact));
        assert_eq!(every_split(AUTO, &input), expected(&frames));
    }

    #[test]
    fn auto_detects_padded_streams() {
        let frames = sample();
        for fill in [STALE.to_vec(), vec![0], adversarial_fill()] {
            let input = padded_stream(&frames, &fill);
            let (outs, framing) = decode(AUTO, &[&input]);
            assert_eq!(framing, Some(BinaryFraming::Padded));
            assert_eq!(outs, expected(&frames));
            random_chunkings(AUTO, &input, &outs, 10);
            // Every split of a shorter stream (debug builds are slow): V0
            // with newlines, then an 8970-byte frame.
            let short = [4, 8].map(|i| frames[i].clone());
            let input = padded_stream(&short, &fill);
            assert_eq!(every_split(AUTO, &input), expected(&short));
        }
    }

    #[test]
    fn auto_decides_padded_before_the_stream_ends() {
        let frames = sample();
        let input = padded_stream(&frames[..3], &adversarial_fill());
        let mut d = Decoder::new(AUTO);
        let mut outs = Vec::new();
        d.feed(&input[..PADDED_FRAME_LEN], &mut |i| outs.push(own(i)));
        // The first frame is the same in both framings.
        assert_eq!(outs, expected(&frames[..1]));
        assert_eq!(d.detected_framing(), None);
        d.feed(&input[PADDED_FRAME_LEN..2 * PADDED_FRAME_LEN], &mut |i| {
            outs.push(own(i))
        });
        assert_eq!(d.detected_framing(), Some(BinaryFraming::Padded));
        assert_eq!(outs, expected(&frames[..2]));
    }

    #[test]
    fn auto_on_one_frame_streams() {
        let exact = frame(1, 1302, PATH_V1);
        let (outs, framing) = decode(AUTO, &[&exact]);
        assert_eq!(
            (outs, framing),
            (vec![rec(PATH_V1, Some(1302))], Some(BinaryFraming::Exact))
        );
        for fill in [STALE, &[0][..]] {
            let input = padded(1, 1302, PATH_V1, fill);
            let (outs, framing) = decode(AUTO, &[&input]);
            assert_eq!(
                (outs, framing),
                (vec![rec(PATH_V1, Some(1302))], Some(BinaryFraming::Padded))
            );
        }
        // A one-frame padded stream whose padding starts with a fake frame.
        let input = padded(1, 1302, PATH_V1, &adversarial_fill());
        let (outs, framing) = decode(AUTO, &[&input]);
        assert_eq!(
            (outs, framing),
            (vec![rec(PATH_V1, Some(1302))], Some(BinaryFraming::Padded))
        );
    }

    /// Exact frames from `serial` on whose lengths add up to `total` bytes.
    fn exact_filler(serial: u64, total: usize, count: usize) -> Vec<(u32, u32, Vec<u8>, Out)> {
        let each = total / count;
        (0..count)
            .map(|i| {
                let len = if i + 1 == count {
                    total - each * (count - 1)
                } else {
                    each
                };
                let r = v1_record(serial + i as u64, len - HEADER_LEN);
                (1, 1005, r.clone(), rec(&r, Some(1005)))
            })
            .collect()
    }

    #[test]
    fn auto_on_exact_stream_with_a_boundary_at_8986() {
        // D, then frames ending exactly 8986 bytes after D's start.
        let mut frames = vec![(1, 1302, PATH_V1.to_vec(), rec(PATH_V1, Some(1302)))];
        let d_len = HEADER_LEN + PATH_V1.len();
        frames.extend(exact_filler(10, PADDED_FRAME_LEN - d_len, 10));
        assert_eq!(exact_stream(&frames).len(), PADDED_FRAME_LEN);
        frames.extend(exact_filler(30, 700, 2));
        // The stream ends just after the frame at 8986: padded would need
        // more padding, exact fits.
        let input = exact_stream(&frames);
        let (outs, framing) = decode(AUTO, &[&input]);
        assert_eq!(
            (outs, framing),
            (expected(&frames), Some(BinaryFraming::Exact))
        );
        // A longer stream: padded breaks 17972 bytes after D.
        frames.extend(exact_filler(40, 12_000, 30));
        let input = exact_stream(&frames);
        let mut d = Decoder::new(AUTO);
        let mut outs = Vec::new();
        d.feed(&input, &mut |i| outs.push(own(i)));
        assert_eq!(d.detected_framing(), Some(BinaryFraming::Exact));
        d.finish(&mut |i| outs.push(own(i)));
        assert_eq!(outs, expected(&frames));
        assert_eq!(every_split(AUTO, &input), expected(&frames));
    }

    #[test]
    fn auto_resynchronises_a_damaged_exact_stream() {
        let mut frames = vec![(1, 1302, PATH_V1.to_vec(), rec(PATH_V1, Some(1302)))];
        frames.extend(exact_filler(10, 60_000, 150));
        let mut input = exact_stream(&frames[..3]);
        let at = input.len() as u64;
        let junk = b"\x05\x00\x00\x00 something else entirely";
        input.extend_from_slice(junk);
        input.extend_from_slice(&exact_stream(&frames[3..]));
        let (outs, framing) = decode(AUTO, &[&input]);
        assert_eq!(framing, Some(BinaryFraming::Exact));
        assert_eq!(records(&outs), records(&expected(&frames)));
        let bad = bads(&outs);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert_eq!(
            (bad[0].kind, bad[0].offset, bad[0].skipped),
            (MalformedKind::BadHeader, at, junk.len() as u64)
        );
    }

    /// A padded stream whose every padding is one fake frame filling it
    /// exactly: both framings fit it perfectly.
    fn perfectly_ambiguous(count: usize) -> (Vec<u8>, Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let (mut input, mut real, mut all) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..count as u64 {
            let r = v1_record(100 + i, 400);
            let fake = v1_record(900 + i, MAX_PAYLOAD - 400 - HEADER_LEN);
            input.extend_from_slice(&frame(1, 1005, &r));
            input.extend_from_slice(&frame(1, 1005, &fake));
            real.push(r.clone());
            all.push(r);
            all.push(fake);
        }
        (input, real, all)
    }

    #[test]
    fn auto_reports_when_it_cannot_tell() {
        // Longer than the lookahead: decided (exact) at the bound, reported.
        let (input, _real, all) = perfectly_ambiguous(12);
        let (outs, framing) = decode(AUTO, &[&input]);
        assert_eq!(framing, Some(BinaryFraming::Exact));
        assert_eq!(records(&outs), all);
        let bad = bads(&outs);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].kind, MalformedKind::AmbiguousFraming);
        assert_eq!(bad[0].offset, 416);
        assert!(bad[0].detail.contains("set the binary framing explicitly"));
        // The explicit settings frame it their way without complaint.
        let (outs, _) = decode(PADDED, &[&input]);
        assert_eq!(records(&outs).len(), 12);
        assert!(bads(&outs).is_empty());
        // A short stream ends before the bound: same guess, same report.
        let (input, _real, all) = perfectly_ambiguous(2);
        let (outs, framing) = decode(AUTO, &[&input]);
        assert_eq!(framing, Some(BinaryFraming::Exact));
        assert_eq!(records(&outs), all);
        assert_eq!(bads(&outs).len(), 1);
        assert!(bads(&outs)[0].detail.contains("the stream ended"));
    }

    #[test]
    fn auto_holds_records_until_decided_and_idle_decides_exact() {
        let frames = sample();
        let input = exact_stream(&frames[..4]);
        let mut d = Decoder::new(AUTO);
        let mut outs = Vec::new();
        d.feed(&input, &mut |i| outs.push(own(i)));
        // Only the first frame is certain; the rest waits.
        assert_eq!(outs, expected(&frames[..1]));
        assert_eq!(d.detected_framing(), None);
        d.input_idle(&mut |i| outs.push(own(i)));
        assert_eq!(d.detected_framing(), Some(BinaryFraming::Exact));
        assert_eq!(outs, expected(&frames[..4]));
        // From now on records come out as soon as they are complete.
        let more = exact_stream(&frames[4..6]);
        d.feed(&more, &mut |i| outs.push(own(i)));
        assert_eq!(outs, expected(&frames[..6]));

        // Idle in the middle of an exact frame proves nothing.
        let mut d = Decoder::new(AUTO);
        let mut outs = Vec::new();
        d.feed(&input[..input.len() - 3], &mut |i| outs.push(own(i)));
        d.input_idle(&mut |i| outs.push(own(i)));
        assert_eq!(d.detected_framing(), None);

        // Idle after a whole padded frame does not pick exact.
        let input = padded_stream(&frames[..1], STALE);
        let mut d = Decoder::new(AUTO);
        let mut outs = Vec::new();
        d.feed(&input, &mut |i| outs.push(own(i)));
        d.input_idle(&mut |i| outs.push(own(i)));
        assert_eq!(d.detected_framing(), None);
        assert_eq!(outs, expected(&frames[..1]));
    }

    #[test]
    fn auto_passes_full_size_frames_through_undecided() {
        let mut big = v1_record(1, MAX_PAYLOAD - 1);
        big.push(0);
        let input: Vec<u8> = (0..3).flat_map(|_| frame(1, 1005, &big)).collect();
        let mut d = Decoder::new(AUTO);
        let mut n = 0;
        d.feed(&input, &mut |i| {
            assert!(matches!(i, Item::Record { .. }));
            n += 1;
        });
        assert_eq!(n, 3);
        assert_eq!(d.detected_framing(), None);
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
