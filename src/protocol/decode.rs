//! Bytes into messages: every received message is validated whole before
//! anything of it is used, so the iterators over its records index without
//! further checks.

use super::messages::{
    err, CommandStatus, FromDispatcher, FromPlugin, Hello, InputRecord, Mode, Notice,
    ProtocolError, Record, RecordOrigin, Role, StreamAck, Welcome,
};
use super::{
    kind, record_flags, tag, valid_action_name, valid_name, INPUT_ORIGIN_RECORD_HEADER,
    INPUT_RECORD_HEADER, MAGIC, MAX_COMMAND_ARG, MAX_COMMAND_ARGS, MAX_MESSAGE, MAX_NAME,
    MAX_NOTICE_EVENT, MAX_NOTICE_SUMMARY, ORIGIN_RECORD_HEADER, RECORD_HEADER,
};
use crate::journal_id::Origin;

/// A cursor over a received message.
struct In<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.buf.len() < n {
            return err(format!(
                "{}: message ends early (needed {n} more bytes, {} left)",
                self.what,
                self.buf.len()
            ));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ProtocolError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, ProtocolError> {
        let mut a = [0; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, ProtocolError> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn str(&mut self, max: usize) -> Result<String, ProtocolError> {
        let n = self.u16()? as usize;
        if n > max {
            return err(format!(
                "{}: string of {n} bytes, at most {max} allowed",
                self.what
            ));
        }
        let b = self.take(n)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => err(format!("{}: string is not UTF-8", self.what)),
        }
    }
    fn end(&self) -> Result<(), ProtocolError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            err(format!(
                "{}: {} unexpected bytes at the end",
                self.what,
                self.buf.len()
            ))
        }
    }
    fn fields(&mut self) -> Result<Vec<(u16, &'a [u8])>, ProtocolError> {
        let mut out = Vec::new();
        while !self.buf.is_empty() {
            let t = self.u16()?;
            let n = self.u32()? as usize;
            out.push((t, self.take(n)?));
        }
        Ok(out)
    }
}

fn mode_of(v: &[u8], what: &str) -> Result<Mode, ProtocolError> {
    match v {
        [0] => Ok(Mode::Records),
        [1] => Ok(Mode::Events),
        _ => err(format!(
            "{what}: mode must be one byte, 0 (records) or 1 (events)"
        )),
    }
}

fn types_of(v: &[u8], what: &str) -> Result<Vec<u32>, ProtocolError> {
    if v.len() % 4 != 0 || v.len() > 4 * 4096 {
        return err(format!(
            "{what}: a type list is a multiple of 4 bytes, at most 4096 types"
        ));
    }
    Ok(v.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn flag_of(v: &[u8], what: &str) -> Result<bool, ProtocolError> {
    match v {
        [0] => Ok(false),
        [1] => Ok(true),
        _ => err(format!("{what} must be one byte, 0 or 1")),
    }
}

fn decode_hello(r: &mut In<'_>) -> Result<Hello, ProtocolError> {
    if r.take(4)? != MAGIC {
        return err("HELLO: bad magic; this is not an audisp plugin speaking the native protocol");
    }
    let min_version = r.u16()?;
    let max_version = r.u16()?;
    let mut h = Hello {
        min_version,
        max_version,
        ..Hello::output("")
    };
    let mut role = None;
    for (t, v) in r.fields()? {
        match t {
            tag::NAME => {
                h.name = match std::str::from_utf8(v) {
                    Ok(s) if valid_name(s) => s.to_string(),
                    _ => {
                        return err(format!(
                            "HELLO: name must be 1 to {MAX_NAME} characters of [A-Za-z0-9_.-]"
                        ))
                    }
                }
            }
            tag::ROLE => {
                role = Some(match v {
                    [0] => Role::Output,
                    [1] => Role::Input,
                    _ => return err("HELLO: role must be 0 (output) or 1 (input)"),
                })
            }
            tag::RESUME => {
                if v.len() != 24 {
                    return err("HELLO: resume is a 16-byte journal id and a u64");
                }
                let mut id = [0; 16];
                id.copy_from_slice(&v[..16]);
                let mut s = [0; 8];
                s.copy_from_slice(&v[16..]);
                h.resume = Some((id, u64::from_le_bytes(s)));
            }
            tag::MODE => h.mode = Some(mode_of(v, "HELLO")?),
            tag::INCLUDE => h.include = types_of(v, "HELLO include")?,
            tag::EXCLUDE => h.exclude = types_of(v, "HELLO exclude")?,
            tag::SOURCE_EPOCH => {
                let a: [u8; 16] = v
                    .try_into()
                    .map_err(|_| ProtocolError("HELLO: source epoch is 16 bytes".into()))?;
                h.source_epoch = Some(a);
            }
            tag::MAX_MESSAGE => {
                let a: [u8; 4] = v
                    .try_into()
                    .map_err(|_| ProtocolError("HELLO: max message is a u32".into()))?;
                h.max_message = Some(u32::from_le_bytes(a));
            }
            tag::RELAYED => h.relayed = flag_of(v, "HELLO relayed")?,
            tag::LOCAL_ONLY => h.local_only = flag_of(v, "HELLO local only")?,
            tag::ORIGIN => h.origin = flag_of(v, "HELLO origin")?,
            tag::STREAM => h.stream = flag_of(v, "HELLO stream")?,
            _ => {}
        }
    }
    if h.name.is_empty() {
        return err("HELLO: no name");
    }
    h.role = role.ok_or_else(|| ProtocolError("HELLO: no role".into()))?;
    if h.role == Role::Input && h.source_epoch.is_none() {
        return err("HELLO: an input must send its source epoch");
    }
    Ok(h)
}

fn decode_welcome(r: &mut In<'_>) -> Result<Welcome, ProtocolError> {
    let mut w = Welcome {
        version: r.u16()?,
        journal_id: None,
        start_after: 0,
        mode: None,
        max_message: MAX_MESSAGE as u32,
        server: String::new(),
        origin: false,
        stream: false,
    };
    for (t, v) in r.fields()? {
        match t {
            tag::W_JOURNAL_ID => {
                w.journal_id = Some(
                    v.try_into()
                        .map_err(|_| ProtocolError("WELCOME: journal id is 16 bytes".into()))?,
                )
            }
            tag::W_START_AFTER => {
                let a: [u8; 8] = v
                    .try_into()
                    .map_err(|_| ProtocolError("WELCOME: start_after is a u64".into()))?;
                w.start_after = u64::from_le_bytes(a);
            }
            tag::W_MODE => w.mode = Some(mode_of(v, "WELCOME")?),
            tag::W_MAX_MESSAGE => {
                let a: [u8; 4] = v
                    .try_into()
                    .map_err(|_| ProtocolError("WELCOME: max message is a u32".into()))?;
                w.max_message = u32::from_le_bytes(a);
            }
            tag::W_SERVER => w.server = String::from_utf8_lossy(v).into_owned(),
            tag::W_ORIGIN => w.origin = flag_of(v, "WELCOME origin")?,
            tag::W_STREAM => w.stream = flag_of(v, "WELCOME stream")?,
            _ => {}
        }
    }
    Ok(w)
}

/// The records of a validated `RECORDS` or `RECORDS_ORIGIN` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Records<'a> {
    body: &'a [u8],
    count: u16,
    /// `RECORDS_ORIGIN`: the names of the inputs its records name
    /// (`u16 index`, `str name`, each; validated). `None`: `RECORDS`.
    names: Option<&'a [u8]>,
}

impl<'a> Records<'a> {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The records, in order.
    pub fn iter(&self) -> impl Iterator<Item = Record<'a>> + 'a {
        let mut body = self.body;
        let names = self.names;
        (0..self.count).map(move |_| {
            let (r, rest) = split_record(body, names);
            body = rest;
            r
        })
    }
}

/// The name of input `index` in a validated name list.
fn name_of(mut names: &[u8], index: u16) -> &str {
    while names.len() >= 4 {
        let i = u16::from_le_bytes([names[0], names[1]]);
        let n = u16::from_le_bytes([names[2], names[3]]) as usize;
        let name = &names[4..4 + n];
        if i == index {
            return std::str::from_utf8(name).unwrap_or("");
        }
        names = &names[4 + n..];
    }
    ""
}

fn split_record<'a>(b: &'a [u8], names: Option<&'a [u8]>) -> (Record<'a>, &'a [u8]) {
    let u64_at = |i: usize| {
        let mut a = [0; 8];
        a.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(a)
    };
    let len = u32::from_le_bytes([b[22], b[23], b[24], b[25]]) as usize;
    let mut flags = u16::from_le_bytes([b[20], b[21]]);
    let (origin, head) = match names {
        None => (None, RECORD_HEADER),
        Some(names) => {
            let input = u16::from_le_bytes([b[26], b[27]]);
            let (first, head) = if flags & record_flags::FIRST_ORIGIN != 0 {
                (
                    Origin::read(&b[ORIGIN_RECORD_HEADER..]),
                    ORIGIN_RECORD_HEADER + Origin::LEN,
                )
            } else {
                (None, ORIGIN_RECORD_HEADER)
            };
            let o = RecordOrigin {
                input,
                name: name_of(names, input),
                first,
            };
            flags &= !record_flags::FIRST_ORIGIN;
            (Some(o), head)
        }
    };
    let r = Record {
        seq: u64_at(0),
        ack_id: u64_at(8),
        rtype: u32::from_le_bytes([b[16], b[17], b[18], b[19]]),
        flags,
        text: &b[head..head + len],
        origin,
    };
    (r, &b[head + len..])
}

/// Checks a `RECORDS_ORIGIN` message's records (whose headers vary with
/// their `FIRST_ORIGIN` flag) and the input names that follow them, each
/// index a record uses named once; returns the record count, the bytes the
/// records take and the names' bytes.
fn validate_origin_records<'a>(r: &mut In<'a>) -> Result<(u16, usize, &'a [u8]), ProtocolError> {
    let count = r.u16()?;
    let body = r.buf;
    let mut pos = 0;
    let mut used: Vec<u16> = Vec::new();
    for i in 0..count {
        let short = || {
            err(format!(
                "RECORDS_ORIGIN: record {i} of {count} is cut short"
            ))
        };
        if body.len() - pos < ORIGIN_RECORD_HEADER {
            return short();
        }
        let b = &body[pos..];
        let len = u32::from_le_bytes([b[22], b[23], b[24], b[25]]) as usize;
        if len > crate::record::MAX_RECORD_LEN {
            return err(format!(
                "RECORDS_ORIGIN: record {i} is {len} bytes, more than the {} allowed",
                crate::record::MAX_RECORD_LEN
            ));
        }
        let flags = u16::from_le_bytes([b[20], b[21]]);
        let head = ORIGIN_RECORD_HEADER
            + if flags & record_flags::FIRST_ORIGIN != 0 {
                Origin::LEN
            } else {
                0
            };
        if b.len() < head + len {
            return short();
        }
        let input = u16::from_le_bytes([b[26], b[27]]);
        if !used.contains(&input) {
            used.push(input);
        }
        pos += head + len;
    }
    let mut names = In {
        buf: &body[pos..],
        what: "RECORDS_ORIGIN names",
    };
    let start = names.buf;
    let n = names.u16()?;
    let mut named: Vec<u16> = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let index = names.u16()?;
        let name = names.str(MAX_NAME)?;
        if !name.is_empty() && !valid_name(&name) {
            return err(format!("RECORDS_ORIGIN: input name {name:?} is not valid"));
        }
        if named.contains(&index) {
            return err(format!("RECORDS_ORIGIN: input {index} named twice"));
        }
        named.push(index);
    }
    if let Some(missing) = used.iter().find(|i| !named.contains(i)) {
        return err(format!("RECORDS_ORIGIN: input {missing} is not named"));
    }
    let names_len = start.len() - names.buf.len();
    r.buf = names.buf;
    Ok((count, pos, &start[2..names_len]))
}

fn validate_records(
    r: &mut In<'_>,
    header: usize,
    len_at: usize,
) -> Result<(u16, usize), ProtocolError> {
    let count = r.u16()?;
    let body = r.buf;
    let mut pos = 0;
    for i in 0..count {
        if body.len() - pos < header {
            return err(format!("{}: record {i} of {count} is cut short", r.what));
        }
        let l = &body[pos + len_at..pos + len_at + 4];
        let len = u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
        if len > crate::record::MAX_RECORD_LEN {
            return err(format!(
                "{}: record {i} is {len} bytes, more than the {} allowed",
                r.what,
                crate::record::MAX_RECORD_LEN
            ));
        }
        if body.len() - pos - header < len {
            return err(format!("{}: record {i} of {count} is cut short", r.what));
        }
        pos += header + len;
    }
    Ok((count, pos))
}

/// The records of a validated `RECORDS_IN` or `RECORDS_IN_ORIGIN` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputRecords<'a> {
    body: &'a [u8],
    count: u16,
    /// `RECORDS_IN_ORIGIN`: every record carries its first origin.
    origin: bool,
}

impl<'a> InputRecords<'a> {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The records, in order.
    pub fn iter(&self) -> impl Iterator<Item = InputRecord<'a>> + 'a {
        let mut b = self.body;
        let with_origin = self.origin;
        (0..self.count).map(move |_| {
            let mut s = [0; 8];
            s.copy_from_slice(&b[..8]);
            let len = u32::from_le_bytes([b[12], b[13], b[14], b[15]]) as usize;
            let (origin, head) = if with_origin {
                // All zero: the input does not know the origin.
                let o = Origin::read(&b[INPUT_RECORD_HEADER..])
                    .filter(|o| o.journal != [0; 16] || o.seq != 0);
                (o, INPUT_ORIGIN_RECORD_HEADER)
            } else {
                (None, INPUT_RECORD_HEADER)
            };
            let r = InputRecord {
                source_seq: u64::from_le_bytes(s),
                rtype: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
                text: &b[head..head + len],
                origin,
            };
            b = &b[head + len..];
            r
        })
    }
}

/// Decodes a message from a plugin or input.
pub fn decode_from_plugin(msg: &[u8]) -> Result<FromPlugin<'_>, ProtocolError> {
    let (&k, rest) = msg
        .split_first()
        .ok_or_else(|| ProtocolError("empty message".into()))?;
    let mut r = In {
        buf: rest,
        what: "",
    };
    let m = match k {
        kind::HELLO => {
            r.what = "HELLO";
            FromPlugin::Hello(decode_hello(&mut r)?)
        }
        kind::ACK => {
            r.what = "ACK";
            FromPlugin::Ack(r.u64()?)
        }
        kind::STATS_REQUEST => {
            r.what = "STATS_REQUEST";
            FromPlugin::StatsRequest(r.u32()?)
        }
        kind::COMMAND => {
            r.what = "COMMAND";
            let id = r.u32()?;
            let name = r.str(MAX_NAME)?;
            if !valid_action_name(&name) {
                return err(format!("COMMAND: action name {name:?} is not [a-z0-9_-]+"));
            }
            let argc = r.u16()? as usize;
            if argc > MAX_COMMAND_ARGS {
                return err(format!(
                    "COMMAND: {argc} arguments, at most {MAX_COMMAND_ARGS}"
                ));
            }
            let mut args = Vec::with_capacity(argc);
            for _ in 0..argc {
                let a = r.str(MAX_COMMAND_ARG)?;
                if a.contains('\0') {
                    return err("COMMAND: an argument contains a NUL byte");
                }
                args.push(a);
            }
            FromPlugin::Command { id, name, args }
        }
        kind::RECORDS_IN | kind::RECORDS_IN_ORIGIN => {
            let origin = k == kind::RECORDS_IN_ORIGIN;
            let header = if origin {
                r.what = "RECORDS_IN_ORIGIN";
                INPUT_ORIGIN_RECORD_HEADER
            } else {
                r.what = "RECORDS_IN";
                INPUT_RECORD_HEADER
            };
            let (count, used) = validate_records(&mut r, header, 12)?;
            let body = &r.buf[..used];
            r.buf = &r.buf[used..];
            FromPlugin::RecordsIn(InputRecords {
                body,
                count,
                origin,
            })
        }
        kind::NOTIFY => {
            r.what = "NOTIFY";
            let rule = r.str(MAX_NAME)?;
            if !valid_name(&rule) {
                return err(format!("NOTIFY: rule name {rule:?} is not [A-Za-z0-9_.-]+"));
            }
            FromPlugin::Notify(Notice {
                rule,
                event: r.str(MAX_NOTICE_EVENT)?,
                summary: r.str(MAX_NOTICE_SUMMARY)?,
                suppressed: r.u64()?,
            })
        }
        kind::STREAM => {
            r.what = "STREAM";
            FromPlugin::Stream { next_seq: r.u64()? }
        }
        other => return err(format!("unknown message kind 0x{other:02x}")),
    };
    r.end()?;
    Ok(m)
}

/// Decodes a message from the dispatcher.
pub fn decode_from_dispatcher(msg: &[u8]) -> Result<FromDispatcher<'_>, ProtocolError> {
    let (&k, rest) = msg
        .split_first()
        .ok_or_else(|| ProtocolError("empty message".into()))?;
    let mut r = In {
        buf: rest,
        what: "",
    };
    let m = match k {
        kind::WELCOME => {
            r.what = "WELCOME";
            FromDispatcher::Welcome(decode_welcome(&mut r)?)
        }
        kind::REJECT => {
            r.what = "REJECT";
            FromDispatcher::Reject(r.str(u16::MAX as usize)?)
        }
        kind::RECORDS => {
            r.what = "RECORDS";
            let (count, used) = validate_records(&mut r, RECORD_HEADER, 22)?;
            let body = &r.buf[..used];
            r.buf = &r.buf[used..];
            FromDispatcher::Records(Records {
                body,
                count,
                names: None,
            })
        }
        kind::RECORDS_ORIGIN => {
            r.what = "RECORDS_ORIGIN";
            let start = r.buf;
            let (count, used, names) = validate_origin_records(&mut r)?;
            FromDispatcher::Records(Records {
                body: &start[2..2 + used],
                count,
                names: Some(names),
            })
        }
        kind::STATS => {
            r.what = "STATS";
            let id = r.u32()?;
            let n = r.u32()? as usize;
            FromDispatcher::Stats {
                id,
                json: r.take(n)?,
            }
        }
        kind::COMMAND_RESULT => {
            r.what = "COMMAND_RESULT";
            let id = r.u32()?;
            let status = match r.u8()? {
                0 => CommandStatus::Done,
                1 => CommandStatus::Refused,
                2 => CommandStatus::Failed,
                s => return err(format!("COMMAND_RESULT: unknown status {s}")),
            };
            FromDispatcher::CommandResult {
                id,
                status,
                message: r.str(u16::MAX as usize)?,
            }
        }
        kind::INPUT_ACK => {
            r.what = "INPUT_ACK";
            FromDispatcher::InputAck(r.u64()?)
        }
        kind::STREAM_ACK => {
            r.what = "STREAM_ACK";
            FromDispatcher::StreamAck(StreamAck {
                offset: r.u64()?,
                seq: r.u64()?,
                released: flag_of(r.take(1)?, "STREAM_ACK released")?,
            })
        }
        other => return err(format!("unknown message kind 0x{other:02x}")),
    };
    r.end()?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::super::encode::{
        encode_command, encode_command_result, encode_hello, encode_stream, encode_stream_ack,
        encode_welcome, put_field,
    };
    use super::*;

    #[test]
    fn notify_round_trips_and_is_bounded() {
        let n = Notice {
            rule: "sudo-root".into(),
            event: "audit(1700000000.123:456)".into(),
            summary: "alice ran sudo".into(),
            suppressed: 7,
        };
        let m = super::super::encode::encode_notify(&n).unwrap();
        assert_eq!(
            decode_from_plugin(&m).unwrap(),
            FromPlugin::Notify(n.clone())
        );
        let long = Notice {
            summary: "x".repeat(MAX_NOTICE_SUMMARY + 1),
            ..n.clone()
        };
        assert!(super::super::encode::encode_notify(&long).is_err());
        // fit() cuts at a character boundary, within the limit.
        let mut wide = Notice {
            summary: "é".repeat(MAX_NOTICE_SUMMARY),
            ..n.clone()
        };
        wide.fit();
        assert_eq!(wide.summary.len(), MAX_NOTICE_SUMMARY);
        assert!(super::super::encode::encode_notify(&wide).is_ok());
        let bad = Notice {
            rule: "no spaces".into(),
            ..n.clone()
        };
        assert!(super::super::encode::encode_notify(&bad).is_err());
        // A summary over the limit is refused on receipt too.
        let mut raw = vec![kind::NOTIFY];
        super::super::encode::put_str(&mut raw, "r");
        super::super::encode::put_str(&mut raw, "e");
        super::super::encode::put_str(&mut raw, &long.summary);
        raw.extend_from_slice(&0u64.to_le_bytes());
        assert!(decode_from_plugin(&raw).is_err());
        // Trailing bytes are refused.
        let mut m = super::super::encode::encode_notify(&n).unwrap();
        m.push(0);
        assert!(decode_from_plugin(&m).is_err());
    }

    #[test]
    fn hello_round_trips() {
        let mut h = Hello::output("json-log");
        h.resume = Some(([7; 16], 12345));
        h.mode = Some(Mode::Events);
        h.include = vec![1400, 1107];
        h.exclude = vec![1320];
        h.max_message = Some(65536);
        h.local_only = true;
        h.origin = true;
        let m = encode_hello(&h);
        assert_eq!(decode_from_plugin(&m).unwrap(), FromPlugin::Hello(h));
        let mut i = Hello::input("bridge", [9; 16]);
        i.relayed = true;
        assert_eq!(
            decode_from_plugin(&encode_hello(&i)).unwrap(),
            FromPlugin::Hello(i)
        );
    }

    #[test]
    fn hello_skips_unknown_fields_and_rejects_bad_ones() {
        let mut m = encode_hello(&Hello::output("p"));
        put_field(&mut m, 999, b"future");
        assert!(matches!(decode_from_plugin(&m), Ok(FromPlugin::Hello(_))));
        let mut bad = encode_hello(&Hello::output("p"));
        bad[1] = b'X';
        assert!(decode_from_plugin(&bad).unwrap_err().0.contains("magic"));
        let mut noname = vec![kind::HELLO];
        noname.extend_from_slice(&MAGIC);
        noname.extend_from_slice(&[1, 0, 1, 0]);
        put_field(&mut noname, tag::ROLE, &[0]);
        assert!(decode_from_plugin(&noname)
            .unwrap_err()
            .0
            .contains("no name"));
        let mut badname = encode_hello(&Hello::output("p"));
        badname.truncate(9);
        put_field(&mut badname, tag::NAME, b"../etc");
        assert!(decode_from_plugin(&badname).is_err());
    }

    #[test]
    fn welcome_round_trips() {
        let w = Welcome {
            version: 1,
            journal_id: Some([3; 16]),
            start_after: 99,
            mode: Some(Mode::Records),
            max_message: 1000,
            server: "audispd 0.1".into(),
            origin: true,
            stream: true,
        };
        assert_eq!(
            decode_from_dispatcher(&encode_welcome(&w)).unwrap(),
            FromDispatcher::Welcome(w)
        );
    }

    #[test]
    fn stream_hand_over_round_trips() {
        let mut h = Hello::input("auditd", [1; 16]);
        h.stream = true;
        assert_eq!(
            decode_from_plugin(&encode_hello(&h)).unwrap(),
            FromPlugin::Hello(h)
        );
        assert_eq!(
            decode_from_plugin(&encode_stream(77)).unwrap(),
            FromPlugin::Stream { next_seq: 77 }
        );
        let a = StreamAck {
            offset: 4096,
            seq: 76,
            released: true,
        };
        assert_eq!(
            decode_from_dispatcher(&encode_stream_ack(&a)).unwrap(),
            FromDispatcher::StreamAck(a)
        );
        let mut bad = encode_stream_ack(&a);
        bad[17] = 2;
        assert!(decode_from_dispatcher(&bad).is_err());
    }

    #[test]
    fn commands_round_trip_and_are_bounded() {
        let m = encode_command(4, "block-address", &["192.0.2.1", "3600"]).unwrap();
        assert_eq!(
            decode_from_plugin(&m).unwrap(),
            FromPlugin::Command {
                id: 4,
                name: "block-address".into(),
                args: vec!["192.0.2.1".into(), "3600".into()]
            }
        );
        assert!(encode_command(1, "Rm -rf", &[]).is_err());
        assert!(encode_command(1, "x", &["a\0b"]).is_err());
        let r = encode_command_result(4, CommandStatus::Refused, "not configured");
        assert_eq!(
            decode_from_dispatcher(&r).unwrap(),
            FromDispatcher::CommandResult {
                id: 4,
                status: CommandStatus::Refused,
                message: "not configured".into()
            }
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for msg in [
            &b""[..],
            b"\x00",
            b"\x02\x01",
            b"\xff\xff\xff",
            b"\x83\x05\x00",
        ] {
            assert!(decode_from_plugin(msg).is_err() || decode_from_dispatcher(msg).is_err());
        }
        assert!(decode_from_plugin(&[kind::ACK, 1, 2, 3, 4, 5, 6, 7, 8, 9]).is_err());
    }
}
