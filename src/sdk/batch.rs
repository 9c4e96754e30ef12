//! What a plugin's handler is given: records and whole events lent from the
//! dispatcher's messages (records mode) or copied into a store (events mode,
//! where an event may span messages). The connection and its bookkeeping are
//! in `plugin.rs`.

use std::borrow::Cow;

use crate::protocol::{self, record_flags, Origin};
use crate::record_types;

/// One record as the plugin sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Journal sequence number: the record's identity, increasing.
    pub seq: u64,
    /// The id that acknowledges it, which is what a plugin storing its
    /// position with its output stores ([`super::Plugin::resume_after`]):
    /// its own `seq`, unless the records of its event are acknowledged
    /// together (events mode, and records mode for a plugin with a filter
    /// expression, whose records go out event by event in the order events
    /// end): then its event's id, the sequence number of the journal entry
    /// that ended the event — past the event's last record when a close
    /// marker ended it. Only once [`Record::completes_ack`] is this id
    /// handled.
    pub ack: u64,
    /// Record type number.
    pub rtype: u32,
    /// `protocol::record_flags`.
    pub flags: u16,
    /// The record in auditd's string format, without the newline.
    pub text: &'a [u8],
    /// The name of the input it arrived on (`auditd`: auditd on the
    /// dispatcher's standard input; an input plugin's name, e.g. `remote`
    /// for audisp-receive), if the plugin asked ([`super::Plugin::origin`]).
    /// The record's node, if auditd names it, is in its text (`node=`).
    pub origin: Option<&'a str>,
    /// Where the record was first journaled, if it was forwarded from
    /// another dispatcher (asked for with [`super::Plugin::origin`]); `None`
    /// for a record first journaled by this plugin's dispatcher, whose
    /// origin is that journal ([`super::Context::journal_id`]) and `seq`.
    pub first_origin: Option<Origin>,
    /// See [`Record::completes_ack`].
    completes: bool,
}

/// How far a plugin's handled records go, in the dispatcher's ack ids: what
/// a plugin stores to resume from ([`super::Plugin::resume_after`] with
/// `done`, [`super::Plugin::resume_within`] with `partial`). A filtered
/// records-mode plugin's records share their event's id, and an event may
/// go on in a later message than it began: `partial` says how far into
/// such an event the records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Upto {
    /// The last ack id all of whose records are handled.
    pub done: u64,
    /// An ack id past `done` whose records are handled up to this seq.
    pub partial: Option<(u64, u64)>,
}

impl Upto {
    /// How far the records go once `r`, the next one, is handled too.
    pub fn after(self, r: &Record<'_>) -> Upto {
        self.handled(r.ack, r.seq, !r.completes_ack())
    }

    /// How far the records go once the record `seq` of ack id `ack` is
    /// handled too; `goes_on`: more records of that ack id follow.
    pub(crate) fn handled(self, ack: u64, seq: u64, goes_on: bool) -> Upto {
        if goes_on {
            return Upto {
                partial: Some((ack, seq)),
                ..self
            };
        }
        let done = self.done.max(ack);
        Upto {
            done,
            partial: self.partial.filter(|&(a, _)| a > done),
        }
    }

    /// Whether the record `seq` of ack id `ack` is among those handled.
    pub(crate) fn covers(&self, ack: u64, seq: u64) -> bool {
        ack <= self.done || self.partial.is_some_and(|(a, s)| a == ack && seq <= s)
    }
}

impl Record<'_> {
    /// The type's name as auditd writes it (`SYSCALL`, `UNKNOWN[1234]`).
    pub fn type_name(&self) -> Cow<'static, str> {
        record_types::display(self.rtype)
    }

    /// The text, with bytes that are not UTF-8 replaced.
    pub fn text_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.text)
    }

    /// Whether this record is the last one its [`Record::ack`] stands for:
    /// the last of its ack id in the batch (or event), and not of an event
    /// that goes on in the next message (`ACK_FOLLOWS`: an event too large
    /// for one message, sent to a filtered records-mode plugin). A resume
    /// point is stored after such a record: stored after any other, it
    /// would skip the rest of its event, which comes again whole after a
    /// reconnect.
    pub fn completes_ack(&self) -> bool {
        self.completes
    }

    /// Whether the dispatcher could not parse this record's type, time or
    /// serial (it is delivered anyway).
    pub fn unparsed(&self) -> bool {
        self.flags & record_flags::UNPARSED != 0
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Meta {
    pub(super) seq: u64,
    pub(super) ack: u64,
    pub(super) rtype: u32,
    pub(super) flags: u16,
    pub(super) start: usize,
    pub(super) len: usize,
    /// Where the input's name is (start, length), beside the text.
    pub(super) origin: Option<(usize, usize)>,
    pub(super) first: Option<Origin>,
}

/// A whole event (events mode).
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    id: u64,
    metas: &'a [Meta],
    arena: &'a [u8],
}

impl<'a> Event<'a> {
    /// The event's id: the journal sequence number of the entry that ended it.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The event's records, in order.
    pub fn records(&self) -> impl ExactSizeIterator<Item = Record<'a>> + 'a {
        let (metas, arena) = (self.metas, self.arena);
        metas
            .iter()
            .enumerate()
            .map(move |(i, m)| record(m, metas.get(i + 1), arena))
    }
}

/// The record of `m`, followed by `next` in its batch or event.
fn record<'a>(m: &Meta, next: Option<&Meta>, arena: &'a [u8]) -> Record<'a> {
    Record {
        seq: m.seq,
        ack: m.ack,
        rtype: m.rtype,
        flags: m.flags,
        text: &arena[m.start..m.start + m.len],
        origin: m
            .origin
            .and_then(|(s, l)| std::str::from_utf8(&arena[s..s + l]).ok()),
        first_origin: m.first,
        completes: m.flags & record_flags::ACK_FOLLOWS == 0 && next.is_none_or(|n| n.ack != m.ack),
    }
}

/// What the handler is given: records (records mode) or whole events
/// (events mode), each seen once. In records mode the records are lent
/// straight from the message the dispatcher sent.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub(super) metas: &'a [Meta],
    pub(super) data: &'a [u8],
}

impl<'a> Batch<'a> {
    /// Every record in the batch, in order.
    pub fn records(&self) -> impl ExactSizeIterator<Item = Record<'a>> + 'a {
        let (metas, data) = (self.metas, self.data);
        metas
            .iter()
            .enumerate()
            .map(move |(i, m)| record(m, metas.get(i + 1), data))
    }

    /// The batch's events (events mode; in records mode, the records that
    /// share an ack id: each record on its own, or for a filtered plugin
    /// the records of one event).
    pub fn events(&self) -> impl Iterator<Item = Event<'a>> + 'a {
        let data = self.data;
        self.metas
            .chunk_by(|a, b| a.ack == b.ack)
            .map(move |metas| Event {
                id: metas[0].ack,
                metas,
                arena: data,
            })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.metas.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }
}

/// Records copied out of messages (events mode: events may span messages).
#[derive(Debug, Default)]
pub(super) struct Store {
    pub(super) metas: Vec<Meta>,
    pub(super) arena: Vec<u8>,
}

impl Store {
    pub(super) fn clear(&mut self) {
        self.metas.clear();
        self.arena.clear();
    }

    pub(super) fn push(&mut self, r: &protocol::Record<'_>) {
        let start = self.arena.len();
        self.arena.extend_from_slice(r.text);
        let origin = r.origin.map(|o| {
            self.arena.extend_from_slice(o.name.as_bytes());
            (start + r.text.len(), o.name.len())
        });
        self.metas.push(Meta {
            seq: r.seq,
            ack: r.ack_id,
            rtype: r.rtype,
            flags: r.flags,
            start,
            len: r.text.len(),
            origin,
            first: r.origin.and_then(|o| o.first),
        });
    }

    /// Moves everything of `other` to the end of this store.
    pub(super) fn append(&mut self, other: &mut Store) {
        let base = self.arena.len();
        self.metas.extend(other.metas.iter().map(|m| Meta {
            start: m.start + base,
            origin: m.origin.map(|(s, l)| (s + base, l)),
            ..*m
        }));
        self.arena.extend_from_slice(&other.arena);
        other.clear();
    }
}
