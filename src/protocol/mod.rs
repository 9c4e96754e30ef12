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
//!
//! What lives where: this file holds the constants, message kinds, flags
//! and field tags; `messages.rs` the messages as Rust values; `encode.rs`
//! turns them into bytes (and builds the record batches); `decode.rs` reads
//! and validates received bytes.

mod decode;
mod encode;
mod messages;

pub use crate::journal_id::Origin;
pub use decode::{decode_from_dispatcher, decode_from_plugin, InputRecords, Records};
pub use encode::{
    encode_ack, encode_command, encode_command_result, encode_hello, encode_input_ack,
    encode_notify, encode_reject, encode_stats, encode_stats_request, encode_stream,
    encode_stream_ack, encode_welcome, RecordsBuilder,
};
pub use messages::{
    CommandStatus, FromDispatcher, FromPlugin, Hello, InputRecord, Mode, Notice, ProtocolError,
    Record, RecordOrigin, Role, StreamAck, Welcome,
};

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
/// Longest event id in a `NOTIFY` (`audit(SECS.MSEC:SERIAL)` with a node
/// name before it fits with room to spare).
pub const MAX_NOTICE_EVENT: usize = 256;
/// Longest summary in a `NOTIFY`.
pub const MAX_NOTICE_SUMMARY: usize = 1024;
/// Bytes of one record's header in a `RECORDS` message.
pub const RECORD_HEADER: usize = 8 + 8 + 4 + 2 + 4;
/// Bytes of one record's header in a `RECORDS_IN` message.
pub const INPUT_RECORD_HEADER: usize = 8 + 4 + 4;
/// Bytes of one record's header in a `RECORDS_ORIGIN` message: a `RECORDS`
/// header and the input index (the first origin, when flagged, follows).
pub const ORIGIN_RECORD_HEADER: usize = RECORD_HEADER + 2;
/// Bytes of one record's header in a `RECORDS_IN_ORIGIN` message: a
/// `RECORDS_IN` header and the first origin (journal id, `u64` seq).
pub const INPUT_ORIGIN_RECORD_HEADER: usize = INPUT_RECORD_HEADER + Origin::LEN;

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
    /// output plugin → dispatcher: an event matched one of the plugin's
    /// rules (no answer).
    pub const NOTIFY: u8 = 0x06;
    /// input → dispatcher: records with their first origin (only once the
    /// `WELCOME` said `origin`).
    pub const RECORDS_IN_ORIGIN: u8 = 0x07;
    /// input → dispatcher: hands over the stream the input reads (its
    /// descriptor rides along as `SCM_RIGHTS`; only once the `WELCOME`
    /// said `stream`).
    pub const STREAM: u8 = 0x08;
    /// dispatcher → plugin: handshake accepted.
    pub const WELCOME: u8 = 0x81;
    /// dispatcher → plugin: handshake refused (the connection closes).
    pub const REJECT: u8 = 0x82;
    /// dispatcher → plugin: records (or the records of whole events).
    pub const RECORDS: u8 = 0x83;
    /// dispatcher → plugin: records with their origin (to a plugin whose
    /// `HELLO` asked for `origin`).
    pub const RECORDS_ORIGIN: u8 = 0x84;
    /// dispatcher → plugin: the answer to a stats request.
    pub const STATS: u8 = 0x85;
    /// dispatcher → plugin: the outcome of a command.
    pub const COMMAND_RESULT: u8 = 0x86;
    /// dispatcher → input: records stored, up to a source sequence number.
    pub const INPUT_ACK: u8 = 0x87;
    /// dispatcher → input: records of a handed-over stream journaled up to
    /// a stream offset and sequence number.
    pub const STREAM_ACK: u8 = 0x88;
}

/// Bits of a delivered record's flags.
pub mod record_flags {
    /// The record ends its event in the journal (EOE, PROCTITLE, one-record types).
    pub const ENDS_EVENT: u16 = 0x0001;
    /// The dispatcher could not parse the record's type, time or serial.
    pub const UNPARSED: u16 = 0x0004;
    /// `RECORDS_ORIGIN`: the record's first origin (it was forwarded from
    /// another dispatcher's journal) follows its input index.
    pub const FIRST_ORIGIN: u16 = 0x0010;
    /// Records mode with a plugins.d `filter`: more records with this
    /// record's ack id follow (the records of one event share its ack id);
    /// the plugin acknowledges that id only once it has the last of them.
    pub const ACK_FOLLOWS: u16 = 0x0020;
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
    pub const RELAYED: u16 = 9;
    pub const LOCAL_ONLY: u16 = 10;
    pub const ORIGIN: u16 = 11;
    pub const STREAM: u16 = 12;

    pub const W_JOURNAL_ID: u16 = 1;
    pub const W_START_AFTER: u16 = 2;
    pub const W_MODE: u16 = 3;
    pub const W_MAX_MESSAGE: u16 = 4;
    pub const W_SERVER: u16 = 5;
    pub const W_ORIGIN: u16 = 6;
    pub const W_STREAM: u16 = 7;
}

/// Whether `s` is acceptable as a plugin or input name.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Whether `s` is acceptable as an action name.
pub fn valid_action_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Picks the version both sides speak, if any.
pub fn negotiate(h: &Hello) -> Option<u16> {
    (h.min_version..=h.max_version)
        .rev()
        .find(|&v| v == VERSION)
}
