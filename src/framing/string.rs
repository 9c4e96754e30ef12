//! `format = string` input: one record per `\n`-terminated line.

use super::{Item, Malformed, MalformedKind};
use crate::record::{self, MAX_RECORD_LEN};

/// Splits `format = string` input into lines.
#[derive(Debug, Default)]
pub(super) struct StringDecoder {
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
    pub(super) fn feed(&mut self, chunk: &[u8], out: &mut dyn FnMut(Item<'_>)) {
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

    /// The stream offset of the first byte not yet part of a record, if a
    /// fresh decoder started there decodes what follows as this one does
    /// (not inside an oversize line being skipped).
    pub(super) fn resume_offset(&self) -> Option<u64> {
        self.skipping.is_none().then_some(self.line_start)
    }

    /// Ends the stream.
    pub(super) fn finish(&mut self, out: &mut dyn FnMut(Item<'_>)) {
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

#[cfg(test)]
mod tests {
    use crate::framing::test_support::*;
    use crate::framing::*;
    use crate::record::MAX_RECORD_LEN;

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
    fn string_resume_offset_is_the_start_of_the_pending_line() {
        let mut d = Decoder::new(InputFormat::String);
        let mut n = 0;
        assert_eq!(d.resume_offset(), Some(0));
        d.feed(b"type=EOE msg=audit(1.2:3): \ntype=EO", &mut |_| n += 1);
        assert_eq!((n, d.resume_offset()), (1, Some(28)));
        d.feed(b"E msg=audit(1.2:4): \n", &mut |_| n += 1);
        assert_eq!((n, d.resume_offset()), (2, Some(56)));
        // Inside an oversize line there is no place to resume from.
        d.feed(&vec![b'x'; MAX_RECORD_LEN + 1], &mut |_| {});
        assert_eq!(d.resume_offset(), None);
        d.feed(b"\n", &mut |_| {});
        assert_eq!(d.resume_offset(), Some(56 + MAX_RECORD_LEN as u64 + 2));
        // Binary streams are never handed over.
        let b = Decoder::new(InputFormat::Binary(BinaryFraming::Exact));
        assert_eq!(b.resume_offset(), None);
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
        assert_one_record_lent_from_the_chunk(STRING, &input);
    }
}
