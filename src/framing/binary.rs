//! `format = binary` input: frames cut by the configured framing (or by
//! `Auto` once it has decided), delivered as canonical record text.

use super::detect::{Detection, Pending, Trigger};
use super::frame::{trim_nuls, Event, Framer, Layout, State};
use super::{BinaryFraming, Item, HEADER_LEN};
use crate::record_types;

/// The header type auditd sends when it could not parse a forwarded record's type.
pub(super) const TYPE_UNPARSED: u32 = u32::MAX;

/// Decodes `format = binary` input.
#[derive(Debug)]
pub(super) struct BinaryDecoder {
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

impl BinaryDecoder {
    /// A decoder at the start of a stream.
    pub(super) fn new(configured: BinaryFraming) -> Self {
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
    pub(super) fn framing(&self) -> Option<BinaryFraming> {
        match self.configured {
            BinaryFraming::Auto => self.decided,
            fixed => Some(fixed),
        }
    }

    /// Decodes one chunk.
    pub(super) fn feed(&mut self, chunk: &[u8], out: &mut dyn FnMut(Item<'_>)) {
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
    pub(super) fn idle(&mut self, out: &mut dyn FnMut(Item<'_>)) {
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
    pub(super) fn finish(&mut self, out: &mut dyn FnMut(Item<'_>)) {
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

#[cfg(test)]
mod tests {
    use super::TYPE_UNPARSED;
    use crate::framing::test_support::*;
    use crate::framing::*;

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
        assert_one_record_lent_from_the_chunk(EXACT, &frame(1, 1302, PATH_V1));
    }

    /// Padding made of everything that looks like frames: valid headers with
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

    /// Found by attack (issue 10): an exact frame cut short delivered its
    /// payload glued to the next frame's header, and the next record was
    /// lost. Now the cut frame alone is reported and every other record
    /// arrives, however short the cut and with either protocol version after
    /// it.
    #[test]
    fn an_exact_frame_cut_short_costs_that_record_only() {
        let long = v1_record(9, MAX_PAYLOAD - 1);
        let mut max = long.clone();
        max.push(0);
        for (cut_payload, next) in [
            (PATH_V1, frame(1, 1112, LOGIN_V1)),
            (PATH_V1, frame(0, 1320, EOE_V0)),
            (&max[..], frame(1, 1112, LOGIN_V1)),
        ] {
            let whole = frame(1, 1302, cut_payload);
            let next_text = if next[0] == 1 {
                LOGIN_V1.to_vec()
            } else {
                b"type=EOE msg=audit(1721000000.123:42): ".to_vec()
            };
            // Down to "type=": a shorter rest is reported as not a record.
            for k in [1, 2, 3, 4, 5, 15, 16, 17, 40, cut_payload.len() - 5] {
                let mut input = frame(1, 1300, SYSCALL_V1);
                let at = input.len() as u64;
                input.extend_from_slice(&whole[..whole.len() - k]);
                input.extend_from_slice(&next);
                input.extend_from_slice(&frame(1, 1307, b"type=CWD msg=audit(1.000:1): cwd=\"/\""));
                let outs = one_shot(EXACT, &input);
                random_chunkings(EXACT, &input, &outs, 200);
                let want = vec![
                    SYSCALL_V1.to_vec(),
                    next_text.clone(),
                    b"type=CWD msg=audit(1.000:1): cwd=\"/\"".to_vec(),
                ];
                let size = cut_payload.len();
                assert_eq!(records(&outs), want, "size {size} cut by {k}");
                let bad = bads(&outs);
                assert_eq!(bad.len(), 1, "size {size} cut by {k}: {bad:?}");
                assert_eq!(bad[0].kind, MalformedKind::Truncated);
                assert_eq!(
                    (bad[0].offset, bad[0].skipped),
                    (at, (whole.len() - k) as u64),
                    "size {size} cut by {k}"
                );
                assert!(bad[0].detail.contains("a frame cut short"), "{bad:?}");
            }
        }
        // An 8970-byte record with auditd's trailing NUL is whole.
        let outs = one_shot(
            EXACT,
            &[frame(1, 1300, &max), frame(1, 1112, LOGIN_V1)].concat(),
        );
        assert_eq!(records(&outs), vec![long, LOGIN_V1.to_vec()]);
        assert!(bads(&outs).is_empty());
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
}
