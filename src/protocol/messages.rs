//! The protocol's messages as Rust values: what each side sends, decoded.

use std::fmt;

use super::decode::{InputRecords, Records};
use super::{Origin, VERSION};

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
    /// Input: the records it sends originated on other hosts (a receiver
    /// of forwarded records), so plugins that forward only this host's
    /// records leave them out and forwarding cannot loop.
    pub relayed: bool,
    /// Output: unless the admin names the inputs it gets (`inputs`,
    /// `exclude_inputs`), give it only records that originated on this
    /// host, none from relayed inputs (what a forwarder asks for).
    pub local_only: bool,
    /// Output: send each record's origin (`RECORDS_ORIGIN`). Input: it
    /// would send records' first origins (`RECORDS_IN_ORIGIN`).
    pub origin: bool,
    /// Input: it reads a stream socket (auditd's) that it can hand over
    /// (`STREAM`) for the dispatcher to read in its place.
    pub stream: bool,
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
            relayed: false,
            local_only: false,
            origin: false,
            stream: false,
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
    /// The dispatcher grants the plugin's `origin`: records come as
    /// `RECORDS_ORIGIN` (output), or may be sent as `RECORDS_IN_ORIGIN`
    /// (input).
    pub origin: bool,
    /// The dispatcher takes the input's stream (`STREAM`), as the input's
    /// `HELLO` offered.
    pub stream: bool,
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
    /// Where it came from (`RECORDS_ORIGIN` only).
    pub origin: Option<RecordOrigin<'a>>,
}

/// A delivered record's origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordOrigin<'a> {
    /// The dispatcher's index of the input the record arrived on.
    pub input: u16,
    /// That input's name (`auditd` for standard input).
    pub name: &'a str,
    /// Where the record was first journaled, if it was forwarded from
    /// another dispatcher (`None`: in this dispatcher's journal, at `seq`).
    pub first: Option<Origin>,
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
    /// Where it was first journaled, if the input knows (`RECORDS_IN_ORIGIN`).
    pub origin: Option<Origin>,
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
    /// An event matched a rule of the plugin (`audisp-alert`).
    Notify(Notice),
    /// The input hands over its stream (the descriptor came with the
    /// message): `format = string` records from its current position, the
    /// first to be numbered `next_seq`.
    Stream {
        /// The sequence number of the stream's next record.
        next_seq: u64,
    },
}

/// A plugin's word that an event matched one of its rules, for the
/// dispatcher to announce (audispd: the D-Bus `Match` signal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The rule's name (a plugin name's characters, at most
    /// [`super::MAX_NAME`]).
    pub rule: String,
    /// The event, as auditd prints it: `audit(SECS.MSEC:SERIAL)` (at most
    /// [`super::MAX_NOTICE_EVENT`] bytes).
    pub event: String,
    /// One line saying what happened (at most
    /// [`super::MAX_NOTICE_SUMMARY`] bytes).
    pub summary: String,
    /// Matches of this rule left unannounced (rate limit) since its last
    /// notice.
    pub suppressed: u64,
}

impl Notice {
    /// Cuts the summary to [`super::MAX_NOTICE_SUMMARY`] bytes, at a
    /// character boundary, so that the notice can be sent.
    pub fn fit(&mut self) {
        let max = super::MAX_NOTICE_SUMMARY;
        if self.summary.len() > max {
            let mut end = max;
            while !self.summary.is_char_boundary(end) {
                end -= 1;
            }
            self.summary.truncate(end);
        }
    }
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
    /// Records of a handed-over stream journaled.
    StreamAck(StreamAck),
}

/// How far the dispatcher has journaled a handed-over stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamAck {
    /// Bytes of the stream, from where it was handed over, whose records
    /// are all journaled: the input may remove them from the socket.
    pub offset: u64,
    /// The sequence number of the last of those records.
    pub seq: u64,
    /// The dispatcher no longer reads the stream (it ended, or the
    /// dispatcher stops): the input reads it again from `offset`.
    pub released: bool,
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

pub(super) fn err<T>(what: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(what.into()))
}
