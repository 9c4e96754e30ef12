//! `Auto`'s detection of the binary framing: both framings run side by side
//! over a buffered stretch of the stream until one is clearly right (see the
//! [module docs](super) for the rules and how far they can be trusted).

use super::frame::{Event, Framer, Header, Layout, State};
use super::{
    BinaryFraming, Malformed, MalformedKind, AUTO_LOOKAHEAD, HEADER_LEN, PADDED_FRAME_LEN,
};

/// `Auto`'s side-by-side run of both framings over a buffered stretch.
#[derive(Debug)]
pub(super) struct Detection {
    /// The stream from the end of the first frame where they part.
    pub(super) buf: Vec<u8>,
    /// Stream offset of `buf[0]`.
    pub(super) base: u64,
    /// The exact framing's view.
    pub(super) exact: Chain,
    /// The padded framing's view.
    pub(super) padded: Chain,
}

/// One framing's view of the buffered stretch.
#[derive(Debug)]
pub(super) struct Chain {
    /// The framing.
    pub(super) framer: Framer,
    /// How far into the buffer it got.
    pub(super) pos: usize,
    /// What it would deliver, in order.
    pub(super) events: Vec<Pending>,
}

/// An item held back until the framing is decided.
#[derive(Debug)]
pub(super) enum Pending {
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
pub(super) enum Trigger {
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
    pub(super) fn new(base: u64, padding: usize) -> Self {
        Detection {
            buf: Vec::new(),
            base,
            exact: Chain::new(Layout::Exact, State::Frame),
            padded: Chain::new(Layout::Padded, State::Padding { left: padding }),
        }
    }

    /// Runs both framings over the buffer, one padded frame's worth at a
    /// time so that a clear case is decided early, and decides if it can.
    pub(super) fn evaluate(&mut self, trigger: Trigger) -> Option<Decision> {
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

#[cfg(test)]
mod tests {
    use crate::framing::test_support::*;
    use crate::framing::*;

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
}
