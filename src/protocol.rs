//! The native plugin protocol, byte for byte (`docs/protocol.md` is the
//! prose version of this module).
//!
//! It runs over an `AF_UNIX` `SOCK_SEQPACKET` connection, so every message
//! arrives whole and on its own: no framing, no partial reads. Output plugins
//! receive records and acknowledge them; input plugins send records and get
//! acknowledgements; both open with the same handshake. The plugin always
//! speaks first (`HELLO`), the dispatcher answers `WELCOME` or `REJECT`.
//!
//! Every message starts with a one-byte kind. Integers are little-endian.
//! Strings are a `u16` length and UTF-8 bytes.

use std::fmt;

/// The protocol version this crate speaks.
pub const VERSION: u16 = 1;
/// First bytes of a `HELLO`, so that a stray client is told apart at once.
pub const MAGIC: [u8; 4] = *b"ADSP";
/// Largest message either side sends. Records are at most 10 KiB each, so a
/// message always has room for at least one; and 128 KiB fits the default
/// socket send buffer (`net.core.wmem_default`, 208 KiB) that a
/// `SOCK_SEQPACKET` message must fit in whole.
pub const MAX_MESSAGE: usize = 128 * 1024;
/// Longest plugin or input name.
pub const MAX_NAME: usize = 64;
/// Most arguments a command may carry, and longest argument.
pub const MAX_COMMAND_ARGS: usize = 32;
/// Longest command argument.
pub const MAX_COMMAND_ARG: usize = 4096;
/// Bytes of one record's header in a `RECORDS` message.
pub const RECORD_HEADER: usize = 8 + 8 + 4 + 2 + 4;
/// Bytes of one record's header in a `RECORDS_IN` message.
pub const INPUT_RECORD_HEADER: usize = 8 + 4 + 4;

/// Message kinds.
pub mod kind {
    /// plugin → dispatcher: opens the conversation.
    pub const HELLO: u8 = 0x01;
    /// plugin → dispatcher: everything up to an id has been handled.
    pub const ACK: u8 = 0x02;
    /// plugin → dispatcher: asks for the dispatcher's counters.
    pub const STATS_REQUEST: u8 = 0x03;
    /// plugin → dispatcher: asks for a named action.
    pub const COMMAND: u8 = 0x04;
    /// input → dispatcher: records to store and dispatch.
    pub const RECORDS_IN: u8 = 0x05;
    /// dispatcher → plugin: handshake accepted.
    pub const WELCOME: u8 = 0x81;
    /// dispatcher → plugin: handshake refused (the connection closes).
    pub const REJECT: u8 = 0x82;
    /// dispatcher → plugin: records (or the records of whole events).
    pub const RECORDS: u8 = 0x83;
    /// dispatcher → plugin: the answer to a stats request.
    pub const STATS: u8 = 0x85;
    /// dispatcher → plugin: the outcome of a command.
    pub const COMMAND_RESULT: u8 = 0x86;
    /// dispatcher → input: records stored, up to a source sequence number.
    pub const INPUT_ACK: u8 = 0x87;
}

/// Bits of a delivered record's flags.
pub mod record_flags {
    /// The record ends its event in the journal (EOE, PROCTITLE, one-record types).
    pub const ENDS_EVENT: u16 = 0x0001;
    /// The dispatcher could not parse the record's type, time or serial.
    pub const UNPARSED: u16 = 0x0004;
    /// Events mode: the last record of the delivered event.
    pub const EVENT_COMPLETE: u16 = 0x8000;
}

/// Field tags of `HELLO` and `WELCOME`. Unknown tags are skipped, so later
/// versions can add fields.
mod tag {
    pub const NAME: u16 = 1;
    pub const ROLE: u16 = 2;
    pub const RESUME: u16 = 3;
    pub const MODE: u16 = 4;
    pub const INCLUDE: u16 = 5;
    pub const EXCLUDE: u16 = 6;
    pub const SOURCE_EPOCH: u16 = 7;
    pub const MAX_MESSAGE: u16 = 8;

    pub const W_JOURNAL_ID: u16 = 1;
    pub const W_START_AFTER: u16 = 2;
    pub const W_MODE: u16 = 3;
    pub const W_MAX_MESSAGE: u16 = 4;
    pub const W_SERVER: u16 = 5;
}

/// What a plugin does on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Receives records.
    Output,
    /// Sends records.
    Input,
}

/// Records one at a time, or whole events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every record as it arrives.
    Records,
    /// Records grouped into whole events.
    Events,
}

/// The plugin's opening message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Lowest protocol version the plugin speaks.
    pub min_version: u16,
    /// Highest protocol version the plugin speaks.
    pub max_version: u16,
    /// The plugin's name (for logs and for inputs' identity).
    pub name: String,
    /// Output or input.
    pub role: Role,
    /// Output: "I already have everything up to this sequence number of this
    /// journal", from the plugin's own storage.
    pub resume: Option<([u8; 16], u64)>,
    /// Output: the delivery the plugin asks for.
    pub mode: Option<Mode>,
    /// Output: record types the plugin wants (empty: all).
    pub include: Vec<u32>,
    /// Output: record types the plugin never wants.
    pub exclude: Vec<u32>,
    /// Input: identifies the input's sequence-number space; a new epoch
    /// means the input starts counting afresh.
    pub source_epoch: Option<[u8; 16]>,
    /// Largest message the plugin accepts.
    pub max_message: Option<u32>,
}

impl Hello {
    /// A hello for an output plugin speaking this crate's version.
    pub fn output(name: &str) -> Hello {
        Hello {
            min_version: VERSION,
            max_version: VERSION,
            name: name.to_string(),
            role: Role::Output,
            resume: None,
            mode: None,
            include: Vec::new(),
            exclude: Vec::new(),
            source_epoch: None,
            max_message: None,
        }
    }

    /// A hello for an input plugin speaking this crate's version.
    pub fn input(name: &str, epoch: [u8; 16]) -> Hello {
        Hello {
            role: Role::Input,
            source_epoch: Some(epoch),
            ..Hello::output(name)
        }
    }
}

/// The dispatcher's answer to an accepted hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// Protocol version both sides now speak.
    pub version: u16,
    /// Output: the journal the sequence numbers belong to.
    pub journal_id: Option<[u8; 16]>,
    /// Output: delivery resumes after this sequence number. Input: the last
    /// source sequence number already stored (resend what follows it).
    pub start_after: u64,
    /// Output: the delivery mode in effect.
    pub mode: Option<Mode>,
    /// Largest message either side may send.
    pub max_message: u32,
    /// The dispatcher's name and version, for logs.
    pub server: String,
}

/// One record in a `RECORDS` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Journal sequence number: the record's identity.
    pub seq: u64,
    /// The id to acknowledge: `seq` in records mode, the sequence number of
    /// the entry that ended the event in events mode.
    pub ack_id: u64,
    /// Record type number.
    pub rtype: u32,
    /// `record_flags::*`.
    pub flags: u16,
    /// Record text in auditd's string format, without the newline.
    pub text: &'a [u8],
}

/// One record in a `RECORDS_IN` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputRecord<'a> {
    /// The input's own sequence number (strictly increasing per epoch).
    pub source_seq: u64,
    /// Record type if the input knows it (0: parse it from the text).
    pub rtype: u32,
    /// Record text in auditd's string format, without the newline.
    pub text: &'a [u8],
}

/// Outcome of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandStatus {
    /// The configured action ran (or was started).
    Done,
    /// No action is configured for that name for this plugin.
    Refused,
    /// The action was configured but failed.
    Failed,
}

/// Messages a plugin sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromPlugin<'a> {
    /// Opens the conversation.
    Hello(Hello),
    /// Everything up to this id was handled.
    Ack(u64),
    /// Asks for counters.
    StatsRequest(u32),
    /// Asks for the action configured under `name`.
    Command {
        /// Echoed in the result.
        id: u32,
        /// Action name, e.g. `disk-full`.
        name: String,
        /// Arguments for the action's program.
        args: Vec<String>,
    },
    /// Records from an input.
    RecordsIn(InputRecords<'a>),
}

/// Messages the dispatcher sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromDispatcher<'a> {
    /// Handshake accepted.
    Welcome(Welcome),
    /// Handshake refused, with the reason.
    Reject(String),
    /// Records to handle.
    Records(Records<'a>),
    /// Counters, as JSON.
    Stats {
        /// The request's id.
        id: u32,
        /// A JSON object.
        json: &'a [u8],
    },
    /// What became of a command.
    CommandResult {
        /// The command's id.
        id: u32,
        /// Done, refused or failed.
        status: CommandStatus,
        /// A human-readable explanation.
        message: String,
    },
    /// Input records stored up to this source sequence number.
    InputAck(u64),
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtocolError {}

fn err<T>(what: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(what.into()))
}

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

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_field(out: &mut Vec<u8>, tag: u16, value: &[u8]) {
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
    out
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

/// Whether `s` is acceptable as a plugin or input name.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
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
    out
}

fn decode_welcome(r: &mut In<'_>) -> Result<Welcome, ProtocolError> {
    let mut w = Welcome {
        version: r.u16()?,
        journal_id: None,
        start_after: 0,
        mode: None,
        max_message: MAX_MESSAGE as u32,
        server: String::new(),
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
            _ => {}
        }
    }
    Ok(w)
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

/// Whether `s` is acceptable as an action name.
pub fn valid_action_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
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

/// Builds `RECORDS` (dispatcher → plugin) or `RECORDS_IN` (input →
/// dispatcher) messages: records are added until the next would not fit.
#[derive(Debug)]
pub struct RecordsBuilder {
    buf: Vec<u8>,
    count: u16,
    max: usize,
    input: bool,
}

impl RecordsBuilder {
    /// A builder for `RECORDS` messages of at most `max` bytes.
    pub fn output(max: usize) -> RecordsBuilder {
        RecordsBuilder::new(kind::RECORDS, max, false)
    }

    /// A builder for `RECORDS_IN` messages of at most `max` bytes.
    pub fn input(max: usize) -> RecordsBuilder {
        RecordsBuilder::new(kind::RECORDS_IN, max, true)
    }

    fn new(k: u8, max: usize, input: bool) -> RecordsBuilder {
        let mut buf = Vec::with_capacity(max.min(MAX_MESSAGE));
        buf.push(k);
        buf.extend_from_slice(&[0, 0]);
        RecordsBuilder {
            buf,
            count: 0,
            max,
            input,
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
        self.buf.len()
    }

    /// Whether a record of `text_len` bytes still fits.
    pub fn fits(&self, text_len: usize) -> bool {
        let head = if self.input {
            INPUT_RECORD_HEADER
        } else {
            RECORD_HEADER
        };
        self.count < u16::MAX && self.buf.len() + head + text_len <= self.max
    }

    /// Adds a record to a `RECORDS` message; false if it does not fit.
    pub fn push(&mut self, r: &Record<'_>) -> bool {
        debug_assert!(!self.input);
        if !self.fits(r.text.len()) {
            return false;
        }
        self.buf.extend_from_slice(&r.seq.to_le_bytes());
        self.buf.extend_from_slice(&r.ack_id.to_le_bytes());
        self.buf.extend_from_slice(&r.rtype.to_le_bytes());
        self.buf.extend_from_slice(&r.flags.to_le_bytes());
        self.buf
            .extend_from_slice(&(r.text.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(r.text);
        self.count += 1;
        true
    }

    /// Adds a record to a `RECORDS_IN` message; false if it does not fit.
    pub fn push_input(&mut self, r: &InputRecord<'_>) -> bool {
        debug_assert!(self.input);
        if !self.fits(r.text.len()) {
            return false;
        }
        self.buf.extend_from_slice(&r.source_seq.to_le_bytes());
        self.buf.extend_from_slice(&r.rtype.to_le_bytes());
        self.buf
            .extend_from_slice(&(r.text.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(r.text);
        self.count += 1;
        true
    }

    /// The finished message.
    pub fn message(&mut self) -> &[u8] {
        let c = self.count.to_le_bytes();
        self.buf[1] = c[0];
        self.buf[2] = c[1];
        &self.buf
    }

    /// Empties the builder for the next message.
    pub fn clear(&mut self) {
        self.buf.truncate(3);
        self.count = 0;
    }
}

/// The records of a validated `RECORDS` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Records<'a> {
    body: &'a [u8],
    count: u16,
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
        (0..self.count).map(move |_| {
            let (r, rest) = split_record(body);
            body = rest;
            r
        })
    }
}

fn split_record(b: &[u8]) -> (Record<'_>, &[u8]) {
    let u64_at = |i: usize| {
        let mut a = [0; 8];
        a.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(a)
    };
    let len = u32::from_le_bytes([b[22], b[23], b[24], b[25]]) as usize;
    let r = Record {
        seq: u64_at(0),
        ack_id: u64_at(8),
        rtype: u32::from_le_bytes([b[16], b[17], b[18], b[19]]),
        flags: u16::from_le_bytes([b[20], b[21]]),
        text: &b[RECORD_HEADER..RECORD_HEADER + len],
    };
    (r, &b[RECORD_HEADER + len..])
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

/// The records of a validated `RECORDS_IN` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputRecords<'a> {
    body: &'a [u8],
    count: u16,
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
        (0..self.count).map(move |_| {
            let mut s = [0; 8];
            s.copy_from_slice(&b[..8]);
            let len = u32::from_le_bytes([b[12], b[13], b[14], b[15]]) as usize;
            let r = InputRecord {
                source_seq: u64::from_le_bytes(s),
                rtype: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
                text: &b[INPUT_RECORD_HEADER..INPUT_RECORD_HEADER + len],
            };
            b = &b[INPUT_RECORD_HEADER + len..];
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
        kind::RECORDS_IN => {
            r.what = "RECORDS_IN";
            let (count, used) = validate_records(&mut r, INPUT_RECORD_HEADER, 12)?;
            let body = &r.buf[..used];
            r.buf = &r.buf[used..];
            FromPlugin::RecordsIn(InputRecords { body, count })
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
            FromDispatcher::Records(Records { body, count })
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
        other => return err(format!("unknown message kind 0x{other:02x}")),
    };
    r.end()?;
    Ok(m)
}

/// Picks the version both sides speak, if any.
pub fn negotiate(h: &Hello) -> Option<u16> {
    (h.min_version..=h.max_version)
        .rev()
        .find(|&v| v == VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips() {
        let mut h = Hello::output("json-log");
        h.resume = Some(([7; 16], 12345));
        h.mode = Some(Mode::Events);
        h.include = vec![1400, 1107];
        h.exclude = vec![1320];
        h.max_message = Some(65536);
        let m = encode_hello(&h);
        assert_eq!(decode_from_plugin(&m).unwrap(), FromPlugin::Hello(h));
        let i = Hello::input("bridge", [9; 16]);
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
        };
        assert_eq!(
            decode_from_dispatcher(&encode_welcome(&w)).unwrap(),
            FromDispatcher::Welcome(w)
        );
    }

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
            text: b"type=USER msg=audit(1.2:3): x"
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
