//! Records in the bytes auditd's `audisp-af_unix` writes to its readers:
//! `string` (one `\n`-terminated line per record) or `binary` (auditd's
//! dispatcher frames, padded or exact), and the gap marker that tells a
//! reader how many records it missed.
//!
//! Binary frames carry protocol version 1 (preformatted text), as auditd
//! writes every record when its `log_format` is `ENRICHED` (its default) or
//! records carry a node name: header `{ver = 1, hlen = 16, type, size}` in
//! host byte order, then `size` bytes of the record's text without a
//! newline. A text longer than auditd's largest payload (8970 bytes) is cut
//! to 8969 bytes and a NUL, with `size = 8970`, as auditd cuts long records.

use audisp::framing::{HEADER_LEN, MAX_PAYLOAD, PADDED_FRAME_LEN};

/// What readers get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One record per line, as auditd's `format = string` plugins get it.
    String,
    /// auditd's binary dispatcher frames.
    Binary(Framing),
}

/// How binary frames are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// 16 + `size` bytes: auditd ≥ 4.1.1, and readers that trust `size`.
    Exact,
    /// Every frame 16 + 8970 bytes, zero-filled after the payload: what
    /// auditd ≤ 4.1.0 wrote, for readers that read fixed-size frames.
    Padded,
}

/// The type number of the gap marker (`DAEMON_ERR`): an auditd daemon
/// record, which every audit parser knows, saying that records are missing.
pub const GAP_TYPE: u32 = 1209;

/// Records encoded for readers, with the end of each record, so a reader
/// can be given whole records only.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The encoded records, one after the other.
    pub bytes: Vec<u8>,
    /// The offset just past each record in `bytes`.
    pub ends: Vec<usize>,
}

impl Chunk {
    /// Number of records.
    pub fn records(&self) -> usize {
        self.ends.len()
    }

    /// Appends one record of type `rtype` with text `text` (canonical, no
    /// newline) in `format`.
    pub fn push(&mut self, format: Format, rtype: u32, text: &[u8]) {
        match format {
            Format::String => {
                self.bytes.extend_from_slice(text);
                self.bytes.push(b'\n');
            }
            Format::Binary(framing) => {
                let start = self.bytes.len();
                let (payload, nul) = if text.len() > MAX_PAYLOAD {
                    (&text[..MAX_PAYLOAD - 1], true)
                } else {
                    (text, false)
                };
                let size = payload.len() + usize::from(nul);
                for v in [1u32, HEADER_LEN as u32, rtype, size as u32] {
                    self.bytes.extend_from_slice(&v.to_ne_bytes());
                }
                self.bytes.extend_from_slice(payload);
                if nul {
                    self.bytes.push(0);
                }
                if framing == Framing::Padded {
                    self.bytes.resize(start + PADDED_FRAME_LEN, 0);
                }
            }
        }
        self.ends.push(self.bytes.len());
    }
}

/// The record that stands where a reader missed `skipped` records, stamped
/// `now` (seconds and milliseconds since the epoch):
/// `type=DAEMON_ERR msg=audit(SEC.MSEC:0): op=reader-gap skipped=N res=failed`,
/// in `format`. Serial 0 is never a kernel serial, so the marker is its own
/// event.
pub fn gap_marker(format: Format, skipped: u64, now: (u64, u32)) -> Chunk {
    let text = format!(
        "type=DAEMON_ERR msg=audit({}.{:03}:0): op=reader-gap skipped={skipped} res=failed",
        now.0, now.1
    );
    let mut c = Chunk::default();
    c.push(format, GAP_TYPE, text.as_bytes());
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    const REC: &[u8] = b"type=USER msg=audit(1721000000.789:44): pid=1 uid=0 msg='x'";

    fn header(b: &[u8]) -> [u32; 4] {
        let mut h = [0u32; 4];
        for (i, v) in h.iter_mut().enumerate() {
            *v = u32::from_ne_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
        }
        h
    }

    #[test]
    fn string_is_the_line_and_a_newline() {
        let mut c = Chunk::default();
        c.push(Format::String, 1005, REC);
        c.push(Format::String, 1005, REC);
        let mut want = REC.to_vec();
        want.push(b'\n');
        assert_eq!(c.ends, [want.len(), 2 * want.len()]);
        assert_eq!(&c.bytes[..want.len()], &want[..]);
    }

    #[test]
    fn exact_frames_are_header_and_payload() {
        let mut c = Chunk::default();
        c.push(Format::Binary(Framing::Exact), 1005, REC);
        assert_eq!(c.bytes.len(), 16 + REC.len());
        assert_eq!(header(&c.bytes), [1, 16, 1005, REC.len() as u32]);
        assert_eq!(&c.bytes[16..], REC);
        assert_eq!(c.ends, [16 + REC.len()]);
    }

    #[test]
    fn padded_frames_are_zero_filled_to_8986() {
        let mut c = Chunk::default();
        c.push(Format::Binary(Framing::Padded), 1005, REC);
        c.push(Format::Binary(Framing::Padded), 1300, REC);
        assert_eq!(c.ends, [8986, 2 * 8986]);
        assert_eq!(header(&c.bytes[8986..]), [1, 16, 1300, REC.len() as u32]);
        assert_eq!(&c.bytes[16..16 + REC.len()], REC);
        assert!(c.bytes[16 + REC.len()..8986].iter().all(|&b| b == 0));
    }

    #[test]
    fn long_records_are_cut_as_auditd_cuts_them() {
        let long = vec![b'a'; 9500];
        for framing in [Framing::Exact, Framing::Padded] {
            let mut c = Chunk::default();
            c.push(Format::Binary(framing), 1309, &long);
            assert_eq!(c.bytes.len(), 8986);
            assert_eq!(header(&c.bytes)[3], 8970);
            assert_eq!(c.bytes[16 + 8968], b'a');
            assert_eq!(c.bytes[16 + 8969], 0);
        }
    }

    #[test]
    fn the_gap_marker_is_an_audit_record() {
        let c = gap_marker(Format::String, 17, (1795422202, 66));
        assert_eq!(
            c.bytes,
            b"type=DAEMON_ERR msg=audit(1795422202.066:0): op=reader-gap skipped=17 res=failed\n"
        );
        let text = &c.bytes[..c.bytes.len() - 1];
        let info = audisp::record::parse(text).expect("parses as a record");
        assert_eq!(info.rtype, GAP_TYPE);
        let b = gap_marker(Format::Binary(Framing::Exact), 17, (1795422202, 66));
        assert_eq!(header(&b.bytes), [1, 16, GAP_TYPE, text.len() as u32]);
        assert_eq!(&b.bytes[16..], text);
    }
}
