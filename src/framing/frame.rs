//! One binary framing rule applied to a byte stream: reading and judging
//! headers and payloads, cutting frames by length and resynchronising after
//! a damaged one (see the [module docs](super) for the rules).

use memchr::memmem;

use super::{Malformed, MalformedKind, HEADER_LEN, MAX_PAYLOAD};
use crate::record;

/// How many bytes a resynchronisation scan copies at a time across reads.
const SCAN_BLOCK: usize = 4096;
/// How many payload bytes a report quotes (and a payload is judged by before
/// it is complete).
const SHOWN_PAYLOAD: usize = 24;

/// `struct audit_dispatcher_header`, read in host byte order.
#[derive(Debug, Clone, Copy)]
pub(super) struct Header {
    /// Protocol version: 0 (raw kernel text) or 1 (formatted line).
    pub(super) ver: u32,
    /// Header length, always 16.
    hlen: u32,
    /// Record type number.
    pub(super) rtype: u32,
    /// Payload length.
    pub(super) size: u32,
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
    pub(super) fn payload_len(&self) -> usize {
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
pub(super) fn trim_nuls(payload: &[u8]) -> &[u8] {
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

/// Where a V1 payload shows that its frame was cut short (a short write):
/// the next frame's header, which starts `01 00 00 00 10 00 00 00` (V1) or
/// `00 00 00 00 10 00 00 00` (V0), begins inside it. A V1 record's text
/// holds no NUL byte and ends in a printable one; auditd's only NUL is the
/// single one that ends an 8970-byte payload. So a NUL followed by more
/// data, a payload ending in NULs other than that one, or text ending in the
/// byte 0x01 is a header's first bytes. Returns the payload offset of the
/// evidence. An incomplete payload is judged by what has arrived (a NUL
/// followed by more data); its end is judged once complete.
fn cut_short(h: &Header, avail: &[u8], complete: bool) -> Option<usize> {
    if h.ver != 1 {
        return None;
    }
    let text_end = avail.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if let Some(i) = memchr::memchr(0, &avail[..text_end]) {
        return Some(i);
    }
    if !complete {
        return None;
    }
    let trailing = avail.len() - text_end;
    if avail[..text_end].last() == Some(&1) {
        return Some(text_end - 1);
    }
    let auditds_nul = trailing == 1 && avail.len() == MAX_PAYLOAD;
    (trailing > 0 && !auditds_nul).then_some(text_end)
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

/// Where a framing expects frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
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
pub(super) enum State {
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
pub(super) enum Event<'a> {
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
pub(super) struct Progress {
    /// Bytes consumed; the rest must be presented again with more data.
    pub(super) consumed: usize,
    /// `Common` layout only: the padding the padded framing would skip after
    /// the frame just delivered, which is shorter than 8970 bytes.
    pub(super) diverged: Option<usize>,
}

/// One framing rule applied to a stream.
#[derive(Debug)]
pub(super) struct Framer {
    /// The frame layout.
    layout: Layout,
    /// Judge frames by the strict test (while guessing the framing).
    pub(super) strict: bool,
    /// Position in the stream.
    state: State,
    /// Damaged frames met so far (saturating).
    pub(super) breaks: u64,
    /// Frames delivered so far (saturating).
    pub(super) frames: u64,
}

impl Framer {
    /// A framer at a frame boundary.
    pub(super) fn new(layout: Layout, strict: bool, state: State) -> Self {
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
    pub(super) fn step(
        &mut self,
        data: &[u8],
        base: u64,
        sink: &mut dyn FnMut(Event<'_>),
    ) -> Progress {
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
                    if let Some(i) = cut_short(&h, avail, complete) {
                        let detail = format!(
                            "header ver={} type={} size={}: byte {i} of the payload is where \
                             the next frame's header starts (a frame cut short), \
                             resynchronising on that header",
                            h.ver, h.rtype, h.size
                        );
                        self.broken(MalformedKind::Truncated, at, detail);
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
    pub(super) fn want(&self, data: &[u8]) -> usize {
        match Header::read(data) {
            Some(h) if h.is_valid() => HEADER_LEN + h.payload_len(),
            Some(_) => data.len() + SCAN_BLOCK,
            None if matches!(self.state, State::Resync(_)) => data.len() + SCAN_BLOCK,
            None => HEADER_LEN,
        }
    }

    /// Whether the framing sits exactly at a frame boundary with `left`
    /// unconsumed bytes.
    pub(super) fn at_boundary(&self, left: usize) -> bool {
        matches!(self.state, State::Frame) && left == 0
    }

    /// Ends the stream, `rest` being what `step` left unconsumed at stream
    /// offset `base`; returns the report of what is incomplete.
    pub(super) fn finish(&mut self, rest: &[u8], base: u64) -> Option<Malformed> {
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
