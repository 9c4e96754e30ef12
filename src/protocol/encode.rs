//! Messages into bytes: one function per message kind, and
//! [`RecordsBuilder`] for the batches of records both sides send.

use super::messages::{
    err, CommandStatus, Hello, InputRecord, Mode, Notice, ProtocolError, Record, Role, StreamAck,
    Welcome,
};
use super::{
    kind, record_flags, tag, valid_action_name, valid_name, INPUT_ORIGIN_RECORD_HEADER,
    INPUT_RECORD_HEADER, MAGIC, MAX_COMMAND_ARG, MAX_COMMAND_ARGS, MAX_MESSAGE, MAX_NAME,
    MAX_NOTICE_EVENT, MAX_NOTICE_SUMMARY, ORIGIN_RECORD_HEADER, RECORD_HEADER,
};
use crate::journal_id::Origin;

pub(super) fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub(super) fn put_field(out: &mut Vec<u8>, tag: u16, value: &[u8]) {
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

fn mode_byte(m: Mode) -> u8 {
    match m {
        Mode::Records => 0,
        Mode::Events => 1,
    }
}

fn types_bytes(types: &[u32]) -> Vec<u8> {
    types.iter().flat_map(|t| t.to_le_bytes()).collect()
}

/// Encodes a `HELLO`.
pub fn encode_hello(h: &Hello) -> Vec<u8> {
    let mut out = vec![kind::HELLO];
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&h.min_version.to_le_bytes());
    out.extend_from_slice(&h.max_version.to_le_bytes());
    put_field(&mut out, tag::NAME, h.name.as_bytes());
    put_field(
        &mut out,
        tag::ROLE,
        &[match h.role {
            Role::Output => 0,
            Role::Input => 1,
        }],
    );
    if let Some((id, seq)) = h.resume {
        let mut v = id.to_vec();
        v.extend_from_slice(&seq.to_le_bytes());
        put_field(&mut out, tag::RESUME, &v);
    }
    if let Some(m) = h.mode {
        put_field(&mut out, tag::MODE, &[mode_byte(m)]);
    }
    if !h.include.is_empty() {
        put_field(&mut out, tag::INCLUDE, &types_bytes(&h.include));
    }
    if !h.exclude.is_empty() {
        put_field(&mut out, tag::EXCLUDE, &types_bytes(&h.exclude));
    }
    if let Some(e) = h.source_epoch {
        put_field(&mut out, tag::SOURCE_EPOCH, &e);
    }
    if let Some(m) = h.max_message {
        put_field(&mut out, tag::MAX_MESSAGE, &m.to_le_bytes());
    }
    if h.relayed {
        put_field(&mut out, tag::RELAYED, &[1]);
    }
    if h.local_only {
        put_field(&mut out, tag::LOCAL_ONLY, &[1]);
    }
    if h.origin {
        put_field(&mut out, tag::ORIGIN, &[1]);
    }
    if h.stream {
        put_field(&mut out, tag::STREAM, &[1]);
    }
    out
}

/// Encodes a `WELCOME`.
pub fn encode_welcome(w: &Welcome) -> Vec<u8> {
    let mut out = vec![kind::WELCOME];
    out.extend_from_slice(&w.version.to_le_bytes());
    if let Some(id) = w.journal_id {
        put_field(&mut out, tag::W_JOURNAL_ID, &id);
    }
    put_field(&mut out, tag::W_START_AFTER, &w.start_after.to_le_bytes());
    if let Some(m) = w.mode {
        put_field(&mut out, tag::W_MODE, &[mode_byte(m)]);
    }
    put_field(&mut out, tag::W_MAX_MESSAGE, &w.max_message.to_le_bytes());
    put_field(&mut out, tag::W_SERVER, w.server.as_bytes());
    if w.origin {
        put_field(&mut out, tag::W_ORIGIN, &[1]);
    }
    if w.stream {
        put_field(&mut out, tag::W_STREAM, &[1]);
    }
    out
}

/// Encodes a `REJECT`.
pub fn encode_reject(reason: &str) -> Vec<u8> {
    let mut out = vec![kind::REJECT];
    let reason = truncate_str(reason, 1024);
    put_str(&mut out, reason);
    out
}

fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Encodes an `ACK`.
pub fn encode_ack(id: u64) -> [u8; 9] {
    let mut out = [0; 9];
    out[0] = kind::ACK;
    out[1..].copy_from_slice(&id.to_le_bytes());
    out
}

/// Encodes an `INPUT_ACK`.
pub fn encode_input_ack(source_seq: u64) -> [u8; 9] {
    let mut out = [0; 9];
    out[0] = kind::INPUT_ACK;
    out[1..].copy_from_slice(&source_seq.to_le_bytes());
    out
}

/// Encodes a `STREAM` (send it with the descriptor, see
/// [`crate::uds::send_with_fd`]).
pub fn encode_stream(next_seq: u64) -> [u8; 9] {
    let mut out = [0; 9];
    out[0] = kind::STREAM;
    out[1..].copy_from_slice(&next_seq.to_le_bytes());
    out
}

/// Encodes a `STREAM_ACK`.
pub fn encode_stream_ack(a: &StreamAck) -> [u8; 18] {
    let mut out = [0; 18];
    out[0] = kind::STREAM_ACK;
    out[1..9].copy_from_slice(&a.offset.to_le_bytes());
    out[9..17].copy_from_slice(&a.seq.to_le_bytes());
    out[17] = u8::from(a.released);
    out
}

/// Encodes a `STATS_REQUEST`.
pub fn encode_stats_request(id: u32) -> [u8; 5] {
    let mut out = [0; 5];
    out[0] = kind::STATS_REQUEST;
    out[1..].copy_from_slice(&id.to_le_bytes());
    out
}

/// Encodes a `STATS` answer.
pub fn encode_stats(id: u32, json: &[u8]) -> Vec<u8> {
    let mut out = vec![kind::STATS];
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(json);
    out
}

/// Encodes a `COMMAND`. Fails if the name or arguments exceed the limits.
pub fn encode_command(id: u32, name: &str, args: &[&str]) -> Result<Vec<u8>, ProtocolError> {
    if !valid_action_name(name) {
        return err(format!(
            "command name {name:?}: use 1 to {MAX_NAME} characters of [a-z0-9_-]"
        ));
    }
    if args.len() > MAX_COMMAND_ARGS
        || args
            .iter()
            .any(|a| a.len() > MAX_COMMAND_ARG || a.contains('\0'))
    {
        return err(format!(
            "command {name}: at most {MAX_COMMAND_ARGS} arguments of at most {MAX_COMMAND_ARG} bytes, no NUL"
        ));
    }
    let mut out = vec![kind::COMMAND];
    out.extend_from_slice(&id.to_le_bytes());
    put_str(&mut out, name);
    out.extend_from_slice(&(args.len() as u16).to_le_bytes());
    for a in args {
        put_str(&mut out, a);
    }
    Ok(out)
}

/// Encodes a `NOTIFY`. Fails if the rule is not a valid name or the event
/// id or summary is longer than the protocol allows (the caller shortens
/// a summary first).
pub fn encode_notify(n: &Notice) -> Result<Vec<u8>, ProtocolError> {
    if !valid_name(&n.rule) {
        return err(format!(
            "rule name {:?}: use 1 to {MAX_NAME} characters of [A-Za-z0-9_.-]",
            n.rule
        ));
    }
    if n.event.len() > MAX_NOTICE_EVENT || n.summary.len() > MAX_NOTICE_SUMMARY {
        return err(format!(
            "notice of rule {}: event id at most {MAX_NOTICE_EVENT} bytes, summary at most {MAX_NOTICE_SUMMARY}",
            n.rule
        ));
    }
    let mut out = vec![kind::NOTIFY];
    put_str(&mut out, &n.rule);
    put_str(&mut out, &n.event);
    put_str(&mut out, &n.summary);
    out.extend_from_slice(&n.suppressed.to_le_bytes());
    Ok(out)
}

/// Encodes a `COMMAND_RESULT`.
pub fn encode_command_result(id: u32, status: CommandStatus, message: &str) -> Vec<u8> {
    let mut out = vec![kind::COMMAND_RESULT];
    out.extend_from_slice(&id.to_le_bytes());
    out.push(match status {
        CommandStatus::Done => 0,
        CommandStatus::Refused => 1,
        CommandStatus::Failed => 2,
    });
    put_str(&mut out, truncate_str(message, 4096));
    out
}

/// Builds `RECORDS` or `RECORDS_ORIGIN` (dispatcher → plugin), or
/// `RECORDS_IN` or `RECORDS_IN_ORIGIN` (input → dispatcher) messages:
/// records are added until the next would not fit.
#[derive(Debug)]
pub struct RecordsBuilder {
    buf: Vec<u8>,
    count: u16,
    max: usize,
    kind: u8,
    /// `RECORDS_ORIGIN`: the inputs its records name, written after them.
    names: Vec<(u16, String)>,
    /// Bytes the names will take (their count included).
    names_bytes: usize,
    /// Where the records end in `buf` (the names follow once finished).
    records_end: usize,
}

impl RecordsBuilder {
    /// A builder for `RECORDS` messages of at most `max` bytes.
    pub fn output(max: usize) -> RecordsBuilder {
        RecordsBuilder::new(kind::RECORDS, max)
    }

    /// A builder for `RECORDS_ORIGIN` messages of at most `max` bytes.
    pub fn output_origin(max: usize) -> RecordsBuilder {
        RecordsBuilder::new(kind::RECORDS_ORIGIN, max)
    }

    /// A builder for `RECORDS_IN` messages of at most `max` bytes.
    pub fn input(max: usize) -> RecordsBuilder {
        RecordsBuilder::new(kind::RECORDS_IN, max)
    }

    /// A builder for `RECORDS_IN_ORIGIN` messages of at most `max` bytes.
    pub fn input_origin(max: usize) -> RecordsBuilder {
        RecordsBuilder::new(kind::RECORDS_IN_ORIGIN, max)
    }

    fn new(k: u8, max: usize) -> RecordsBuilder {
        let mut buf = Vec::with_capacity(max.min(MAX_MESSAGE));
        buf.push(k);
        buf.extend_from_slice(&[0, 0]);
        RecordsBuilder {
            buf,
            count: 0,
            max,
            kind: k,
            names: Vec::new(),
            names_bytes: if k == kind::RECORDS_ORIGIN { 2 } else { 0 },
            records_end: 3,
        }
    }

    /// Number of records in the message so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the message holds no record yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the message so far.
    pub fn bytes(&self) -> usize {
        self.records_end + self.names_bytes
    }

    /// Whether a record of `text_len` bytes (and `extra` bytes more of
    /// origin) still fits.
    fn fits_with(&self, text_len: usize, extra: usize) -> bool {
        let head = match self.kind {
            kind::RECORDS_IN => INPUT_RECORD_HEADER,
            kind::RECORDS_IN_ORIGIN => INPUT_ORIGIN_RECORD_HEADER,
            kind::RECORDS_ORIGIN => ORIGIN_RECORD_HEADER,
            _ => RECORD_HEADER,
        };
        self.count < u16::MAX && self.bytes() + head + extra + text_len <= self.max
    }

    /// Whether a record of `text_len` bytes still fits.
    pub fn fits(&self, text_len: usize) -> bool {
        self.fits_with(text_len, 0)
    }

    /// Adds a record to a `RECORDS` or `RECORDS_ORIGIN` message; false if
    /// it does not fit. In `RECORDS_ORIGIN`, a record without an origin is
    /// written as one of input 0 (`""`).
    pub fn push(&mut self, r: &Record<'_>) -> bool {
        debug_assert!(self.kind == kind::RECORDS || self.kind == kind::RECORDS_ORIGIN);
        let origin = self.kind == kind::RECORDS_ORIGIN;
        let (input, name, first) = match r.origin {
            Some(o) => (o.input, o.name, o.first),
            None => (0, "", None),
        };
        let mut extra = 0;
        let new_name = origin && !self.names.iter().any(|(i, _)| *i == input);
        if new_name {
            extra += 4 + name.len();
        }
        if origin && first.is_some() {
            extra += Origin::LEN;
        }
        if !self.fits_with(r.text.len(), extra) {
            return false;
        }
        let mut fl = r.flags;
        if origin {
            fl &= !record_flags::FIRST_ORIGIN;
            if first.is_some() {
                fl |= record_flags::FIRST_ORIGIN;
            }
        }
        self.buf.truncate(self.records_end);
        self.buf.extend_from_slice(&r.seq.to_le_bytes());
        self.buf.extend_from_slice(&r.ack_id.to_le_bytes());
        self.buf.extend_from_slice(&r.rtype.to_le_bytes());
        self.buf.extend_from_slice(&fl.to_le_bytes());
        self.buf
            .extend_from_slice(&(r.text.len() as u32).to_le_bytes());
        if origin {
            self.buf.extend_from_slice(&input.to_le_bytes());
            if let Some(f) = first {
                f.put(&mut self.buf);
            }
            if new_name {
                self.names.push((input, name.to_string()));
                self.names_bytes += 4 + name.len();
            }
        }
        self.buf.extend_from_slice(r.text);
        self.records_end = self.buf.len();
        self.count += 1;
        true
    }

    /// Adds a record to a `RECORDS_IN` or `RECORDS_IN_ORIGIN` message;
    /// false if it does not fit. In `RECORDS_IN_ORIGIN`, a record without
    /// an origin is written with an all-zero one.
    pub fn push_input(&mut self, r: &InputRecord<'_>) -> bool {
        debug_assert!(self.kind == kind::RECORDS_IN || self.kind == kind::RECORDS_IN_ORIGIN);
        if !self.fits(r.text.len()) {
            return false;
        }
        self.buf.extend_from_slice(&r.source_seq.to_le_bytes());
        self.buf.extend_from_slice(&r.rtype.to_le_bytes());
        self.buf
            .extend_from_slice(&(r.text.len() as u32).to_le_bytes());
        if self.kind == kind::RECORDS_IN_ORIGIN {
            let o = r.origin.unwrap_or(Origin {
                journal: [0; 16],
                seq: 0,
            });
            o.put(&mut self.buf);
        }
        self.buf.extend_from_slice(r.text);
        self.records_end = self.buf.len();
        self.count += 1;
        true
    }

    /// The finished message.
    pub fn message(&mut self) -> &[u8] {
        let c = self.count.to_le_bytes();
        self.buf[1] = c[0];
        self.buf[2] = c[1];
        if self.kind == kind::RECORDS_ORIGIN {
            self.buf.truncate(self.records_end);
            self.buf
                .extend_from_slice(&(self.names.len() as u16).to_le_bytes());
            for (i, n) in &self.names {
                self.buf.extend_from_slice(&i.to_le_bytes());
                put_str(&mut self.buf, n);
            }
        }
        &self.buf
    }

    /// Empties the builder for the next message.
    pub fn clear(&mut self) {
        self.buf.truncate(3);
        self.records_end = 3;
        self.count = 0;
        self.names.clear();
        self.names_bytes = if self.kind == kind::RECORDS_ORIGIN {
            2
        } else {
            0
        };
    }
}

#[cfg(test)]
mod tests {
    use super::super::decode::{decode_from_dispatcher, decode_from_plugin};
    use super::super::messages::{FromDispatcher, FromPlugin};
    use super::super::RecordOrigin;
    use super::*;

    #[test]
    fn records_fill_up_to_the_limit_and_round_trip() {
        let mut b = RecordsBuilder::output(200);
        let texts: Vec<Vec<u8>> = (0..10)
            .map(|i| format!("type=EOE msg=audit(1.2:{i}): ").into_bytes())
            .collect();
        let mut pushed = 0;
        for (i, t) in texts.iter().enumerate() {
            if !b.push(&Record {
                seq: i as u64 + 1,
                ack_id: i as u64 + 1,
                rtype: 1320,
                flags: record_flags::ENDS_EVENT,
                text: t,
                origin: None,
            }) {
                break;
            }
            pushed += 1;
        }
        assert!(pushed > 0 && pushed < 10);
        let msg = b.message().to_vec();
        assert!(msg.len() <= 200);
        let FromDispatcher::Records(rs) = decode_from_dispatcher(&msg).unwrap() else {
            panic!()
        };
        let got: Vec<_> = rs.iter().collect();
        assert_eq!(got.len(), pushed);
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r.seq, i as u64 + 1);
            assert_eq!(r.text, &texts[i][..]);
        }
        // Every truncation of a valid message is rejected, never misread.
        for cut in 1..msg.len() {
            assert!(decode_from_dispatcher(&msg[..cut]).is_err(), "{cut}");
        }
        b.clear();
        assert!(b.is_empty());
    }

    #[test]
    fn input_records_round_trip() {
        let mut b = RecordsBuilder::input(MAX_MESSAGE);
        assert!(b.push_input(&InputRecord {
            source_seq: 5,
            rtype: 0,
            text: b"type=USER msg=audit(1.2:3): x",
            origin: None,
        }));
        let msg = b.message().to_vec();
        let FromPlugin::RecordsIn(rs) = decode_from_plugin(&msg).unwrap() else {
            panic!()
        };
        let v: Vec<_> = rs.iter().collect();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].source_seq, 5);
        assert_eq!(v[0].text, b"type=USER msg=audit(1.2:3): x");
    }

    #[test]
    fn records_with_origin_round_trip_and_name_each_input_once() {
        let first = Origin {
            journal: [4; 16],
            seq: 900,
        };
        let mut b = RecordsBuilder::output_origin(MAX_MESSAGE);
        let texts = [&b"type=EOE msg=audit(1.2:1): "[..], b"b", b"c"];
        let origins = [
            RecordOrigin {
                input: 1,
                name: "auditd",
                first: None,
            },
            RecordOrigin {
                input: 3,
                name: "remote",
                first: Some(first),
            },
            RecordOrigin {
                input: 1,
                name: "auditd",
                first: None,
            },
        ];
        for (i, (t, o)) in texts.iter().zip(origins).enumerate() {
            assert!(b.push(&Record {
                seq: i as u64 + 1,
                ack_id: i as u64 + 1,
                rtype: 1320,
                flags: record_flags::ENDS_EVENT,
                text: t,
                origin: Some(o),
            }));
        }
        let msg = b.message().to_vec();
        assert_eq!(msg.len(), b.bytes(), "the size counted is the size sent");
        assert_eq!(b.message(), &msg[..], "finishing twice changes nothing");
        let FromDispatcher::Records(rs) = decode_from_dispatcher(&msg).unwrap() else {
            panic!()
        };
        let got: Vec<_> = rs.iter().collect();
        assert_eq!(got.len(), 3);
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r.text, texts[i]);
            assert_eq!(r.origin, Some(origins[i]));
            assert_eq!(r.flags, record_flags::ENDS_EVENT);
        }
        for cut in 1..msg.len() {
            assert!(decode_from_dispatcher(&msg[..cut]).is_err(), "{cut}");
        }
        // Input records with their first origin.
        let mut b = RecordsBuilder::input_origin(MAX_MESSAGE);
        assert!(b.push_input(&InputRecord {
            source_seq: 5,
            rtype: 0,
            text: b"type=USER msg=audit(1.2:3): x",
            origin: Some(first),
        }));
        assert!(b.push_input(&InputRecord {
            source_seq: 6,
            rtype: 0,
            text: b"type=USER msg=audit(1.2:4): x",
            origin: None,
        }));
        let msg = b.message().to_vec();
        let FromPlugin::RecordsIn(rs) = decode_from_plugin(&msg).unwrap() else {
            panic!()
        };
        let v: Vec<_> = rs.iter().collect();
        assert_eq!((v[0].source_seq, v[0].origin), (5, Some(first)));
        assert_eq!((v[1].source_seq, v[1].origin), (6, None));
    }

    #[test]
    fn oversize_records_are_refused() {
        let mut msg = vec![kind::RECORDS_IN, 1, 0];
        msg.extend_from_slice(&1u64.to_le_bytes());
        msg.extend_from_slice(&0u32.to_le_bytes());
        msg.extend_from_slice(&(1u32 << 20).to_le_bytes());
        msg.resize(msg.len() + (1 << 20), b'a');
        assert!(decode_from_plugin(&msg)
            .unwrap_err()
            .0
            .contains("more than"));
    }
}
