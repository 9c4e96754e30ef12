//! Native delivery: the dispatcher's side of [`crate::protocol`] on one
//! connection, after the plugin's `HELLO`.
//!
//! Records (or whole events, in events mode) go out in `RECORDS` messages
//! of at most the size the plugin accepts, up to [`WINDOW`] messages ahead
//! of the plugin's cumulative `ACK`s (the parts of one event split over
//! several messages count as one: its id is acknowledged only once the
//! plugin has the last part). Each message carries the cursor
//! position its acknowledgement reaches; in events mode that position
//! restarts reading where the events still being assembled began, so that a
//! reconnect rebuilds them. An event too big for one message is split, its
//! last record flagged `EVENT_COMPLETE`. A plugin with a filter expression
//! gets whole events decided by it (`filtering`); in records mode their
//! records then go out one by one as in events mode, each acknowledged by
//! its event's id, so that reading resumes where undecided events began. The plugin's `STATS` requests and
//! `COMMAND`s are answered through the sender ([`Host`]).

use std::borrow::Cow;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket;

use super::filtering::{Decisions, EventFilter};
use super::inflight::Inflight;
use super::{Delivery, Host};
use crate::engine::cursor::Position;
use crate::engine::events::{Assembler, Event};
use crate::engine::routes::{Lookup, Routes};
use crate::engine::settings::{FilterRule, InputSelection};
use crate::engine::subscription::Subscription;
use crate::format::drop_fields::DropFields;
use crate::journal::entry::flags;
use crate::journal::{EntryRef, JournalId, ReadOutcome, Step};
use crate::protocol::{
    self, record_flags, FromPlugin, Hello, Mode, RecordOrigin, RecordsBuilder, Role, Welcome,
};
use crate::uds;

/// Native messages in flight before the sender waits for acknowledgements:
/// twice what a plugin takes in at once (`sdk`'s `COALESCE`), so that the
/// next messages are on their way while a plugin handles the last ones.
/// The messages of one event split over several count once (see
/// [`Inflight::awaiting`]): the plugin cannot acknowledge any of them before
/// the last, and an event bigger than the window must still get through;
/// the socket's buffer bounds what is queued meanwhile.
pub(super) const WINDOW: usize = 32;
/// Largest message read from a plugin (acknowledgements, stats requests,
/// commands).
const RECEIVE_BUFFER: usize = 64 * 1024;
/// Reads from the journal take at least this many bytes, even when the
/// message being built has less room left.
const MIN_READ: usize = 4096;

/// What the dispatcher tells a plugin in its `WELCOME`, and what the
/// plugin's `HELLO` is checked against.
pub(super) struct Greeting<'a> {
    /// The plugin's configured name (for logs).
    pub name: &'a str,
    /// Record types the admin lets through (empty: all).
    pub include: &'a [u32],
    /// Record types the admin keeps back.
    pub exclude: &'a [u32],
    /// The inputs the admin chose (`None`: the plugin's default).
    pub inputs: Option<&'a InputSelection>,
    /// Inputs by index.
    pub lookup: &'a Lookup,
    /// Fields removed from its records.
    pub drop_fields: &'a [String],
    /// Its filter expression, if it has one.
    pub filter: Option<&'a FilterRule>,
    /// Decisions shared with the other plugins of its expression.
    pub decisions: &'a Decisions,
    /// The configured delivery mode; the plugin may ask for the other.
    pub mode: Mode,
    /// The plugin's cursor: everything up to here is handled.
    pub acked: u64,
    /// The journal the records come from.
    pub journal_id: JournalId,
    /// The journal's next sequence number.
    pub journal_end: u64,
    /// Name and version of the dispatcher.
    pub server: &'a str,
}

/// A record or a whole event waiting for room in the next message.
struct Carry {
    event: Event,
    /// Index of the first record not yet sent.
    next: usize,
    first_seq: u64,
}

/// The `RECORDS` message being built.
#[derive(Default)]
struct Message {
    /// The id that acknowledges everything in it so far.
    last_ack: Option<u64>,
    /// Records in it.
    records: u64,
    /// No more fits.
    full: bool,
}

/// One native connection after the handshake.
pub(super) struct Native {
    /// The plugin's name, for logs.
    name: String,
    sock: OwnedFd,
    mode: Mode,
    subscription: Subscription,
    /// The inputs whose records it gets.
    routes: Routes,
    /// It asked for each record's origin (`RECORDS_ORIGIN`).
    origin: bool,
    /// Fields removed from its records (`None`: none).
    drop: Option<DropFields>,
    /// Its filter, deciding per event (`None`: every event passes).
    filter: Option<EventFilter>,
    /// Records and events up to here are already with the plugin: its
    /// cursor's `acked`, or further if the plugin said it has more (the
    /// resume point of its `HELLO`).
    skip_upto: u64,
    inflight: Inflight,
    builder: RecordsBuilder,
    /// A message the socket had no room for; it goes before anything else.
    unsent: Option<Vec<u8>>,
    assembler: Assembler,
    carry: Option<Carry>,
    /// For the plugin's messages.
    buf: Vec<u8>,
}

/// Takes the plugin's `HELLO` if it has arrived: Ok(None) while it has not.
pub(super) fn read_hello(sock: &OwnedFd, buf: &mut [u8]) -> Result<Option<Hello>, String> {
    match uds::recv_message(sock, buf) {
        Ok(Some(0)) => Err("connection closed before HELLO".into()),
        Ok(Some(n)) => match protocol::decode_from_plugin(&buf[..n]) {
            Ok(FromPlugin::Hello(h)) => Ok(Some(h)),
            Ok(other) => Err(format!("expected HELLO, got {other:?}")),
            Err(e) => Err(format!("bad HELLO: {e}")),
        },
        Ok(None) => Ok(None),
        Err(e) => Err(format!("receiving HELLO: {e}")),
    }
}

impl Native {
    /// Answers the plugin's `HELLO`: checks it, settles the subscription,
    /// mode, message size and where delivery starts, and sends `WELCOME`
    /// (or `REJECT`, and the error).
    pub(super) fn welcome(sock: OwnedFd, hello: Hello, g: &Greeting<'_>) -> Result<Native, String> {
        let reject = |why: String| {
            let _ = uds::send_nowait(&sock, &protocol::encode_reject(&why));
            Err(why)
        };
        if hello.role != Role::Output {
            return reject("this socket is for output plugins; inputs connect to the dispatcher's input socket".into());
        }
        let Some(version) = protocol::negotiate(&hello) else {
            return reject(format!(
                "protocol versions {}..{} not supported; this dispatcher speaks {}",
                hello.min_version,
                hello.max_version,
                protocol::VERSION
            ));
        };
        if hello.name != g.name {
            tracing::debug!(plugin = %g.name, hello = %hello.name, "plugin {} calls itself {} in its hello",
                g.name,
                hello.name);
        }
        let mut skip = g.acked;
        if let Some((id, seq)) = hello.resume {
            if id == g.journal_id.0 {
                skip = skip.max(seq.min(g.journal_end - 1));
            } else {
                tracing::info!(
                    plugin = %g.name,
                    "plugin {}: its resume point belongs to another journal; ignoring it",
                g.name
                );
            }
        }
        let mode = hello.mode.unwrap_or(g.mode);
        let max = hello.max_message.map_or(protocol::MAX_MESSAGE, |m| {
            (m as usize).clamp(MIN_READ, protocol::MAX_MESSAGE)
        });
        // Room for half the window of whole messages, so a plugin that takes
        // several waiting messages at once (one fsync for all of them in a
        // durable plugin) finds them there while the rest are on the way.
        // The kernel caps this at net.core.wmem_max; one message always fits
        // the default.
        let _ = socket::setsockopt(
            &sock,
            socket::sockopt::SndBuf,
            &(WINDOW / 2 * protocol::MAX_MESSAGE),
        );
        let welcome = Welcome {
            version,
            journal_id: Some(g.journal_id.0),
            start_after: skip,
            mode: Some(mode),
            max_message: max as u32,
            server: g.server.to_string(),
            origin: hello.origin,
            stream: false,
        };
        match uds::send_nowait(&sock, &protocol::encode_welcome(&welcome)) {
            Ok(Some(_)) => {}
            Ok(None) => return Err("plugin's socket is full during the handshake".into()),
            Err(e) => return Err(format!("sending WELCOME: {e}")),
        }
        Ok(Native {
            name: g.name.to_string(),
            sock,
            mode,
            subscription: Subscription::new(g.include, g.exclude, &hello.include, &hello.exclude),
            routes: Routes::new(g.inputs, hello.local_only, g.lookup.clone()),
            origin: hello.origin,
            drop: DropFields::of(g.drop_fields),
            filter: EventFilter::of(g.filter, g.decisions),
            skip_upto: skip,
            inflight: Inflight::default(),
            builder: if hello.origin {
                RecordsBuilder::output_origin(max)
            } else {
                RecordsBuilder::output(max)
            },
            unsent: None,
            assembler: Assembler::new(),
            carry: None,
            buf: vec![0; RECEIVE_BUFFER],
        })
    }

    /// Takes one journal entry into the message being built; says what the
    /// reader does next.
    fn take(&mut self, e: EntryRef<'_>, m: &mut Message) -> Step {
        match self.mode {
            Mode::Records if self.filter.is_none() => {
                if e.is_control()
                    || e.seq <= self.skip_upto
                    || !self.subscription.records.wants(e.rtype)
                    || !self.routes.wants(e.source)
                {
                    return Step::Next;
                }
                let text = match &mut self.drop {
                    Some(d) => d.apply(e.text),
                    None => Cow::Borrowed(e.text),
                };
                let origin = self.origin.then(|| RecordOrigin {
                    input: e.source,
                    name: self.routes.name(e.source),
                    first: e.origin,
                });
                let r = protocol::Record {
                    seq: e.seq,
                    ack_id: e.seq,
                    rtype: e.rtype,
                    flags: wire_flags(e.flags),
                    text: &text,
                    origin,
                };
                if !self.builder.push(&r) {
                    m.full = true;
                    return Step::StopBefore;
                }
                m.last_ack = Some(e.seq);
                m.records += 1;
                Step::Next
            }
            // Whole events: events mode, and records mode with a filter
            // (which decides per event; see `filtering`).
            _ => {
                let Some(mut event) = self.assembler.push(&e) else {
                    return Step::Next;
                };
                if !self.goes(&mut event) {
                    self.assembler.recycle(event);
                    return Step::Next;
                }
                let first_seq = event
                    .records()
                    .next()
                    .map_or(event.close_seq, |(r, _)| r.seq);
                let c = Carry {
                    event,
                    next: 0,
                    first_seq,
                };
                if !self.builder.is_empty() && !fits_whole(&self.builder, &c.event) {
                    self.carry = Some(c);
                    m.full = true;
                    return Step::Stop;
                }
                self.put_event(c, m);
                if m.full {
                    return Step::Stop;
                }
                Step::Next
            }
        }
    }

    /// Whether a whole event the journal says ended goes to the plugin:
    /// from its inputs, not already handled, of the types it wants and
    /// passed by its filter; `event` keeps the records it gets. A withheld
    /// event is counted.
    fn goes(&mut self, event: &mut Event) -> bool {
        let routes = &mut self.routes;
        event.retain(|r| routes.wants(r.source));
        if event.close_seq <= self.skip_upto || event.is_empty() {
            return false;
        }
        let passes = self.filter.as_mut().is_none_or(|f| f.passes(event));
        let sub = &self.subscription;
        match self.mode {
            Mode::Records => event.retain(|r| sub.records.wants(r.rtype)),
            Mode::Events => {
                if !event.records().any(|(r, _)| sub.select.wants(r.rtype)) {
                    return false;
                }
                event.retain(|r| sub.keep.wants(r.rtype));
            }
        }
        if event.is_empty() {
            return false;
        }
        if !passes {
            if let Some(f) = &mut self.filter {
                f.withhold(event.close_seq, event.len());
            }
            return false;
        }
        true
    }

    /// Puts as much of an event as fits; what does not fit waits in
    /// `carry` and the message is full.
    fn put_event(&mut self, mut c: Carry, m: &mut Message) {
        let ack = c.event.close_seq;
        let total = c.event.len();
        let mut put = 0;
        while let Some((r, text)) = c.event.record(c.next + put) {
            let last = c.next + put + 1 == total;
            let mut fl = wire_flags(r.flags);
            match self.mode {
                Mode::Events if last => fl |= record_flags::EVENT_COMPLETE,
                // A filtered records-mode plugin: the event's records share
                // its ack id and may span messages.
                Mode::Records if !last => fl |= record_flags::ACK_FOLLOWS,
                _ => {}
            }
            let text = match &mut self.drop {
                Some(d) => d.apply(text),
                None => Cow::Borrowed(text),
            };
            let origin = self.origin.then(|| RecordOrigin {
                input: r.source,
                name: self.routes.name(r.source),
                first: r.origin,
            });
            if !self.builder.push(&protocol::Record {
                seq: r.seq,
                ack_id: ack,
                rtype: r.rtype,
                flags: fl,
                text: &text,
                origin,
            }) {
                break;
            }
            put += 1;
        }
        c.next += put;
        m.last_ack = Some(ack);
        m.records += put as u64;
        if c.next < total {
            self.carry = Some(c);
            m.full = true;
        } else {
            self.assembler.recycle(c.event);
        }
    }

    /// The cursor once everything read so far (up to `next`) is
    /// acknowledged.
    fn position_after(&mut self, next: u64) -> Position {
        match &self.carry {
            Some(c) => Position {
                acked: c.event.close_seq - 1,
                replay_from: c.first_seq.min(self.assembler.replay_point(next)),
            },
            None => Position {
                acked: next - 1,
                replay_from: match self.mode {
                    Mode::Records if self.filter.is_none() => next,
                    _ => self.assembler.replay_point(next),
                },
            },
        }
    }

    fn settle(&mut self, acked: Option<u64>, host: &mut dyn Host) {
        if let Some(s) = self.inflight.settle(acked) {
            host.settled(s.position, s.records);
        }
    }

    /// Handles every message the plugin sent.
    fn receive(&mut self, host: &mut dyn Host) -> Result<(), String> {
        loop {
            let n = match uds::recv_message(&self.sock, &mut self.buf) {
                Ok(Some(0)) => return Err("the plugin closed the connection".into()),
                Ok(Some(n)) => n,
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("receive: {e}")),
            };
            match protocol::decode_from_plugin(&self.buf[..n]) {
                Ok(FromPlugin::Ack(id)) => {
                    if let Some(s) = self.inflight.settle(Some(id)) {
                        host.settled(s.position, s.records);
                    }
                }
                Ok(FromPlugin::StatsRequest(id)) => {
                    let json = host.stats();
                    if !matches!(
                        uds::send_nowait(&self.sock, &protocol::encode_stats(id, &json)),
                        Ok(Some(_))
                    ) {
                        tracing::debug!(plugin = %self.name, "plugin {}: stats answer not sent: socket full", self.name);
                    }
                }
                Ok(FromPlugin::Command { id, name, args }) => {
                    let (status, message) = host.command(&name, &args);
                    let _ = uds::send_nowait(
                        &self.sock,
                        &protocol::encode_command_result(id, status, &message),
                    );
                }
                Ok(FromPlugin::Notify(notice)) => host.notify(notice),
                Ok(other) => {
                    return Err(format!(
                        "protocol error: unexpected {} from an output plugin",
                        message_name(&other)
                    ))
                }
                Err(e) => return Err(format!("protocol error: {e}")),
            }
        }
    }
}

impl Delivery for Native {
    fn socket(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    fn fill(&mut self, host: &mut dyn Host) -> Result<(), String> {
        if let Some(msg) = self.unsent.take() {
            match uds::send_nowait(&self.sock, &msg) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    self.unsent = Some(msg);
                    return Ok(());
                }
                Err(e) => return Err(format!("send: {e}")),
            }
        }
        while self.inflight.awaiting() < WINDOW {
            if host.reader().caught_up() && self.carry.is_none() {
                break;
            }
            self.builder.clear();
            let mut m = Message::default();
            if let Some(c) = self.carry.take() {
                self.put_event(c, &mut m);
            }
            if let Some(f) = &mut self.filter {
                f.begin(host);
            }
            while !m.full && !host.reader().caught_up() {
                let room = protocol::MAX_MESSAGE.saturating_sub(self.builder.bytes());
                let outcome = host
                    .reader()
                    .read(room.max(MIN_READ), &mut |e| self.take(e, &mut m))
                    .map_err(|e| format!("reading the journal: {e}"))?;
                if let ReadOutcome::Lost { from, to, reason } = &outcome {
                    host.lost(*from, *to, reason);
                    self.forget_partial();
                }
                if outcome == ReadOutcome::CaughtUp {
                    break;
                }
                if room < MIN_READ {
                    m.full = true;
                }
            }
            if let Some(f) = &mut self.filter {
                f.report(host);
            }
            let next = host.reader().next_seq();
            let position = self.position_after(next);
            if self.builder.is_empty() {
                self.inflight.push(None, position, 0);
                self.settle(None, host);
                if !m.full {
                    break;
                }
                continue;
            }
            host.delivered(m.records);
            self.inflight.push(m.last_ack, position, m.records);
            let msg = self.builder.message();
            match uds::send_nowait(&self.sock, msg) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    self.unsent = Some(msg.to_vec());
                    break;
                }
                Err(e) => return Err(format!("send: {e}")),
            }
        }
        Ok(())
    }

    fn has_unsent(&self) -> bool {
        self.unsent.is_some()
    }

    fn window_full(&self) -> bool {
        self.inflight.awaiting() >= WINDOW
    }

    fn patience(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn heard(&mut self, readable: bool, host: &mut dyn Host) -> Result<(), String> {
        if readable {
            self.receive(host)
        } else {
            Ok(())
        }
    }

    fn salvage(&mut self, host: &mut dyn Host) {
        // Acknowledgements the plugin sent before it went away.
        let _ = self.receive(host);
    }

    fn forget_partial(&mut self) {
        self.assembler = Assembler::new();
        self.carry = None;
    }
}

fn fits_whole(builder: &RecordsBuilder, event: &Event) -> bool {
    let need: usize = event
        .records()
        .map(|(_, t)| protocol::RECORD_HEADER + t.len())
        .sum();
    builder.bytes() + need <= protocol::MAX_MESSAGE
        && builder.len() + event.len() < u16::MAX as usize
}

fn wire_flags(journal_flags: u16) -> u16 {
    let mut f = 0;
    if journal_flags & flags::ENDS_EVENT != 0 {
        f |= record_flags::ENDS_EVENT;
    }
    if journal_flags & flags::UNPARSED != 0 {
        f |= record_flags::UNPARSED;
    }
    f
}

fn message_name(m: &FromPlugin<'_>) -> &'static str {
    match m {
        FromPlugin::Hello(_) => "HELLO",
        FromPlugin::Ack(_) => "ACK",
        FromPlugin::StatsRequest(_) => "STATS_REQUEST",
        FromPlugin::Command { .. } => "COMMAND",
        FromPlugin::RecordsIn(_) => "RECORDS_IN",
        FromPlugin::Notify(_) => "NOTIFY",
        FromPlugin::Stream { .. } => "STREAM",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plugin::testing::{append, journal, pair, TestHost};
    use crate::journal::Journal;
    use crate::protocol::{CommandStatus, FromDispatcher};
    use nix::sys::socket::SockType;
    use std::sync::Arc;

    /// One record as the plugin received it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Got {
        seq: u64,
        ack_id: u64,
        flags: u16,
    }

    /// A plugin's hello asking for `mode` and 4096-byte messages (three
    /// records of 1000 bytes each).
    fn hello(mode: Mode) -> Hello {
        Hello {
            mode: Some(mode),
            max_message: Some(4096),
            ..Hello::output("t")
        }
    }

    /// Connects a plugin saying `hello` to a host at its cursor; returns
    /// the delivery, the plugin's end and the dispatcher's welcome.
    fn connect(j: &Journal, host: &TestHost, hello: Hello) -> (Native, OwnedFd, Welcome) {
        let (ours, theirs) = pair(SockType::SeqPacket);
        let g = Greeting {
            name: "t",
            include: &[],
            exclude: &[],
            inputs: None,
            lookup: &(Arc::new(|_| None) as Lookup),
            drop_fields: &[],
            filter: None,
            decisions: &Decisions::default(),
            mode: Mode::Records,
            acked: host.position.acked,
            journal_id: j.id(),
            journal_end: j.end(),
            server: "test",
        };
        let native = Native::welcome(ours, hello, &g).expect("welcome");
        let mut buf = vec![0; protocol::MAX_MESSAGE];
        let n = uds::recv_message(&theirs, &mut buf)
            .unwrap()
            .expect("a WELCOME");
        let Ok(FromDispatcher::Welcome(w)) = protocol::decode_from_dispatcher(&buf[..n]) else {
            panic!("expected WELCOME");
        };
        (native, theirs, w)
    }

    /// Every `RECORDS` message waiting at the plugin's end.
    fn messages(peer: &OwnedFd) -> Vec<Vec<Got>> {
        let mut buf = vec![0; protocol::MAX_MESSAGE];
        let mut out = Vec::new();
        while let Some(n) = uds::recv_message(peer, &mut buf).unwrap() {
            let Ok(FromDispatcher::Records(rs)) = protocol::decode_from_dispatcher(&buf[..n])
            else {
                panic!("expected RECORDS");
            };
            out.push(
                rs.iter()
                    .map(|r| Got {
                        seq: r.seq,
                        ack_id: r.ack_id,
                        flags: r.flags,
                    })
                    .collect(),
            );
        }
        out
    }

    fn seqs(msgs: &[Vec<Got>]) -> Vec<u64> {
        msgs.iter().flatten().map(|g| g.seq).collect()
    }

    /// A plugin in records mode with 4096-byte messages, connected at the
    /// start of a journal of `records` records of 1000 bytes.
    fn records_mode(records: u64) -> (tempfile::TempDir, Journal, TestHost, Native, OwnedFd) {
        let (dir, j) = journal();
        let host = TestHost::at_end(&j);
        append(&j, records, 1, 1000);
        let (n, peer, _) = connect(&j, &host, hello(Mode::Records));
        (dir, j, host, n, peer)
    }

    fn ack(peer: &OwnedFd, id: u64) {
        uds::send_nowait(peer, &protocol::encode_ack(id))
            .unwrap()
            .expect("room for an ACK");
    }

    #[test]
    fn the_window_holds_its_messages_until_the_plugin_acknowledges() {
        let (_dir, _, mut host, mut n, peer) = records_mode(200);
        n.fill(&mut host).unwrap();
        let first = messages(&peer);
        assert_eq!(first.len(), WINDOW, "a window of messages went out");
        assert!(
            first.iter().all(|m| m.len() == 3),
            "three records a message"
        );
        assert!(n.window_full());
        assert!(!n.has_unsent());
        n.fill(&mut host).unwrap();
        assert!(messages(&peer).is_empty(), "nothing beyond the window");
        let sent = seqs(&first);
        assert_eq!(sent, (1..=sent.len() as u64).collect::<Vec<_>>());
        assert_eq!(host.delivered, sent.len() as u64);
        assert_eq!(host.handled, 0, "nothing handled before an ACK");

        ack(&peer, first[0][2].seq);
        n.heard(true, &mut host).unwrap();
        assert!(!n.window_full());
        n.fill(&mut host).unwrap();
        let next = messages(&peer);
        assert_eq!(next.len(), 1, "one acknowledged message makes room for one");
        assert_eq!(next[0][0].seq, sent[sent.len() - 1] + 1);
    }

    #[test]
    fn a_partial_ack_settles_only_the_messages_it_covers() {
        let (_dir, _, mut host, mut n, peer) = records_mode(9);
        n.fill(&mut host).unwrap();
        let msgs = messages(&peer);
        assert_eq!(seqs(&msgs), (1..=9).collect::<Vec<_>>());
        assert_eq!(msgs.len(), 3);

        // The first record of the second message: the first message is
        // handled, the second is not.
        ack(&peer, msgs[1][0].seq);
        n.heard(true, &mut host).unwrap();
        assert_eq!(host.position.acked, msgs[0][2].seq);
        assert_eq!(host.position.replay_from, msgs[0][2].seq + 1);
        assert_eq!(host.handled, 3);

        ack(&peer, msgs[1][2].seq);
        n.heard(true, &mut host).unwrap();
        assert_eq!(host.position.acked, msgs[1][2].seq);
        assert_eq!(host.handled, 6);
    }

    #[test]
    fn a_reconnect_resends_what_was_not_acknowledged() {
        let (_dir, j, mut host, mut n, peer) = records_mode(30);
        n.fill(&mut host).unwrap();
        let msgs = messages(&peer);
        assert_eq!(seqs(&msgs), (1..=30).collect::<Vec<_>>());
        ack(&peer, msgs[3][2].seq);
        // The plugin goes away after acknowledging; the delivery takes the
        // acknowledgement still queued.
        drop(peer);
        n.salvage(&mut host);
        drop(n);
        assert_eq!(host.position.acked, 12);

        // The sender reads again from the cursor and reconnects.
        host.reader.seek(host.position.replay_from);
        let (mut n, peer, w) = connect(&j, &host, hello(Mode::Records));
        assert_eq!(w.start_after, 12);
        n.fill(&mut host).unwrap();
        assert_eq!(seqs(&messages(&peer)), (13..=30).collect::<Vec<_>>());
    }

    #[test]
    fn the_plugin_resume_point_skips_what_it_already_has() {
        let (_dir, j) = journal();
        let mut host = TestHost::at_end(&j);
        append(&j, 10, 1, 100);
        let mut h = hello(Mode::Records);
        h.resume = Some((j.id().0, 6));
        let (mut n, peer, w) = connect(&j, &host, h);
        assert_eq!(w.start_after, 6);
        n.fill(&mut host).unwrap();
        assert_eq!(seqs(&messages(&peer)), (7..=10).collect::<Vec<_>>());

        // A resume point from another journal is ignored.
        let mut host = TestHost::at_end(&j);
        host.reader.seek(1);
        host.position = Position {
            acked: 0,
            replay_from: 1,
        };
        let mut h = hello(Mode::Records);
        h.resume = Some(([9; 16], 6));
        let (mut n, peer, w) = connect(&j, &host, h);
        assert_eq!(w.start_after, 0);
        n.fill(&mut host).unwrap();
        assert_eq!(seqs(&messages(&peer)), (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn an_event_too_big_for_a_message_is_split_and_completed_at_its_end() {
        let (_dir, j) = journal();
        let mut host = TestHost::at_end(&j);
        let big = append(&j, 1, 10, 1000).remove(0);
        let small = append(&j, 1, 1, 100).remove(0);
        let (mut n, peer, w) = connect(&j, &host, hello(Mode::Events));
        assert_eq!(w.mode, Some(Mode::Events));
        n.fill(&mut host).unwrap();
        let msgs = messages(&peer);
        assert!(msgs.len() >= 4, "ten 1000-byte records need four messages");
        let got: Vec<Got> = msgs.into_iter().flatten().collect();
        let close = big[9];
        assert_eq!(got.len(), 11);
        for (g, seq) in got.iter().zip(&big) {
            assert_eq!(g.seq, *seq);
            assert_eq!(
                g.ack_id, close,
                "every part is acknowledged by the event's id"
            );
            let complete = g.flags & record_flags::EVENT_COMPLETE != 0;
            assert_eq!(complete, *seq == close, "only the last record completes it");
        }
        assert_eq!(got[10].seq, small[0]);
        assert_ne!(got[10].flags & record_flags::EVENT_COMPLETE, 0);

        // Acknowledgements settle whole messages: the event's last part
        // shares its message with the next event, so the cursor stays
        // before the event's id until that message is acknowledged too.
        ack(&peer, close);
        n.heard(true, &mut host).unwrap();
        assert_eq!(host.position.acked, close - 1);
        assert_eq!(host.position.replay_from, big[0]);
        assert_eq!(host.handled, 9);
        ack(&peer, small[0]);
        n.heard(true, &mut host).unwrap();
        assert_eq!(host.position.acked, small[0]);
        assert_eq!(host.position.replay_from, small[0] + 1);
        assert_eq!(host.handled, 11);
    }

    #[test]
    fn an_event_split_over_more_messages_than_the_window_gets_through() {
        // Three 1000-byte records a 4096-byte message: an event of this many
        // records takes more messages than the window, and the plugin can
        // acknowledge none of them before it has the last. (A filtered
        // records-mode plugin is in the same position: its records carry
        // the event's id, `ACK_FOLLOWS` but the last.)
        let records = 3 * WINDOW as u64 + 10;
        let (_dir, j) = journal();
        let mut host = TestHost::at_end(&j);
        let big = append(&j, 1, records, 1000).remove(0);
        let close = big[big.len() - 1];
        let (mut n, peer, _) = connect(&j, &host, hello(Mode::Events));
        let mut got = Vec::new();
        // Each round sends what the window and the socket allow; the plugin
        // reads it all without acknowledging.
        for _ in 0..records {
            n.fill(&mut host).unwrap();
            let more: Vec<Got> = messages(&peer).into_iter().flatten().collect();
            if more.is_empty() {
                break;
            }
            got.extend(more);
        }
        let seqs: Vec<u64> = got.iter().map(|g| g.seq).collect();
        assert_eq!(
            seqs, big,
            "the whole event arrives before any acknowledgement"
        );
        assert!(got.iter().all(|g| g.ack_id == close));
        ack(&peer, close);
        n.heard(true, &mut host).unwrap();
        assert_eq!(host.position.acked, close);
        assert_eq!(host.handled, records);
        assert!(!n.window_full());
    }

    #[test]
    fn events_still_being_assembled_are_read_again_after_a_reconnect() {
        let (_dir, j) = journal();
        let mut host = TestHost::at_end(&j);
        let done = append(&j, 1, 1, 100).remove(0)[0];
        // Two records of an event whose end has not arrived.
        let texts = [b"type=PATH msg=audit(1.0:2): a".to_vec(), b"b".to_vec()];
        let open: Vec<NewEntryText> = texts.iter().map(|t| (77, 0, t.as_slice())).collect();
        let open_seqs = append_raw(&j, &open);
        let (mut n, peer, _) = connect(&j, &host, hello(Mode::Events));
        n.fill(&mut host).unwrap();
        let msgs = messages(&peer);
        assert_eq!(seqs(&msgs), vec![done]);
        ack(&peer, done);
        n.heard(true, &mut host).unwrap();
        assert_eq!(
            host.position.replay_from, open_seqs[0],
            "reading restarts where the open event began"
        );
        drop((n, peer));

        let end = append_raw(&j, &[(77, flags::ENDS_EVENT, b"c")])[0];
        host.reader.seek(host.position.replay_from);
        let (mut n, peer, _) = connect(&j, &host, hello(Mode::Events));
        n.fill(&mut host).unwrap();
        let got: Vec<Got> = messages(&peer).into_iter().flatten().collect();
        let got_seqs: Vec<u64> = got.iter().map(|g| g.seq).collect();
        assert_eq!(
            got_seqs,
            vec![open_seqs[0], open_seqs[1], end],
            "the whole event, once"
        );
        assert!(got.iter().all(|g| g.ack_id == end));
    }

    /// (event id, journal flags, text) of an entry to append.
    type NewEntryText<'a> = (u64, u16, &'a [u8]);

    fn append_raw(j: &Journal, entries: &[NewEntryText<'_>]) -> Vec<u64> {
        let es: Vec<crate::journal::NewEntry<'_>> = entries
            .iter()
            .map(|&(event, flags, text)| crate::journal::NewEntry {
                event,
                source_seq: 0,
                rtype: 1302,
                source: 1,
                flags,
                origin: None,
                text: text.into(),
            })
            .collect();
        j.append(&es).unwrap().seqs.collect()
    }

    #[test]
    fn a_message_the_socket_has_no_room_for_goes_first_when_there_is_room() {
        let (_dir, _, mut host, mut n, peer) = records_mode(60);
        socket::setsockopt(&n.sock, socket::sockopt::SndBuf, &4096).unwrap();
        n.fill(&mut host).unwrap();
        assert!(n.has_unsent(), "the socket filled up before the window");
        let mut got = Vec::new();
        let mut rounds = 0;
        while n.has_unsent() || !host.reader.caught_up() {
            let msgs = messages(&peer);
            assert!(!msgs.is_empty(), "the socket took something each round");
            for m in &msgs {
                ack(&peer, m[m.len() - 1].seq);
            }
            got.extend(seqs(&msgs));
            n.heard(true, &mut host).unwrap();
            n.fill(&mut host).unwrap();
            rounds += 1;
            assert!(rounds < 100);
        }
        got.extend(seqs(&messages(&peer)));
        assert_eq!(
            got,
            (1..=60).collect::<Vec<_>>(),
            "every record once, in order"
        );
        assert!(rounds > 1);
    }

    #[test]
    fn commands_and_stats_requests_are_answered() {
        let (_dir, j) = journal();
        let mut host = TestHost::at_end(&j);
        let (mut n, peer, _) = connect(&j, &host, hello(Mode::Records));
        uds::send_nowait(
            &peer,
            &protocol::encode_command(7, "disk-full", &["/var"]).unwrap(),
        )
        .unwrap();
        uds::send_nowait(&peer, &protocol::encode_stats_request(9)).unwrap();
        n.heard(true, &mut host).unwrap();
        assert_eq!(
            host.commands,
            vec![("disk-full".to_string(), vec!["/var".to_string()])]
        );
        let mut buf = vec![0; protocol::MAX_MESSAGE];
        let k = uds::recv_message(&peer, &mut buf).unwrap().unwrap();
        assert_eq!(
            protocol::decode_from_dispatcher(&buf[..k]).unwrap(),
            FromDispatcher::CommandResult {
                id: 7,
                status: CommandStatus::Done,
                message: "disk-full done".into()
            }
        );
        let k = uds::recv_message(&peer, &mut buf).unwrap().unwrap();
        assert_eq!(
            protocol::decode_from_dispatcher(&buf[..k]).unwrap(),
            FromDispatcher::Stats {
                id: 9,
                json: b"{\"test\":true}"
            }
        );
    }

    #[test]
    fn notices_go_to_the_host_without_an_answer() {
        let (_dir, j) = journal();
        let mut host = TestHost::at_end(&j);
        let (mut n, peer, _) = connect(&j, &host, hello(Mode::Events));
        let notice = protocol::Notice {
            rule: "root-shell".into(),
            event: "audit(1700000000.100:101)".into(),
            summary: "uid 0 ran bash".into(),
            suppressed: 2,
        };
        uds::send_nowait(&peer, &protocol::encode_notify(&notice).unwrap()).unwrap();
        n.heard(true, &mut host).unwrap();
        assert_eq!(host.notices, vec![notice]);
        let mut buf = vec![0; protocol::MAX_MESSAGE];
        assert_eq!(uds::recv_message(&peer, &mut buf).unwrap(), None);
    }

    #[test]
    fn a_plugin_that_asks_is_told_each_records_input_and_first_origin() {
        let (_dir, j) = journal();
        let mut host = TestHost::at_end(&j);
        let first = crate::journal::Origin {
            journal: [6; 16],
            seq: 31,
        };
        let entries: Vec<crate::journal::NewEntry<'_>> = [(1, None), (2, Some(first)), (1, None)]
            .into_iter()
            .map(|(source, origin)| crate::journal::NewEntry {
                event: 0,
                source_seq: 0,
                rtype: 1320,
                source,
                flags: flags::ENDS_EVENT,
                origin,
                text: b"type=EOE msg=audit(1.0:1): "[..].into(),
            })
            .collect();
        let seqs: Vec<u64> = j.append(&entries).unwrap().seqs.collect();
        let lookup: Lookup = Arc::new(|s| match s {
            1 => Some((crate::engine::ingest::STDIN.to_string(), false)),
            2 => Some(("remote".to_string(), true)),
            _ => None,
        });
        for asks in [false, true] {
            host.reader.seek(seqs[0]);
            let (ours, theirs) = pair(SockType::SeqPacket);
            let g = Greeting {
                name: "t",
                include: &[],
                exclude: &[],
                inputs: None,
                lookup: &lookup,
                drop_fields: &[],
                filter: None,
                decisions: &Decisions::default(),
                mode: Mode::Records,
                acked: 0,
                journal_id: j.id(),
                journal_end: j.end(),
                server: "test",
            };
            let hello = Hello {
                origin: asks,
                ..hello(Mode::Records)
            };
            let mut n = Native::welcome(ours, hello, &g).expect("welcome");
            let mut buf = vec![0; protocol::MAX_MESSAGE];
            let k = uds::recv_message(&theirs, &mut buf).unwrap().unwrap();
            let Ok(FromDispatcher::Welcome(w)) = protocol::decode_from_dispatcher(&buf[..k]) else {
                panic!("expected WELCOME");
            };
            assert_eq!(w.origin, asks);
            n.fill(&mut host).unwrap();
            let k = uds::recv_message(&theirs, &mut buf).unwrap().unwrap();
            let want_kind = if asks {
                protocol::kind::RECORDS_ORIGIN
            } else {
                protocol::kind::RECORDS
            };
            assert_eq!(buf[0], want_kind, "a plugin that does not ask gets RECORDS");
            let Ok(FromDispatcher::Records(rs)) = protocol::decode_from_dispatcher(&buf[..k])
            else {
                panic!("expected records");
            };
            let got: Vec<_> = rs.iter().map(|r| (r.seq, r.origin)).collect();
            let origin = |input, name, first| asks.then_some(RecordOrigin { input, name, first });
            assert_eq!(
                got,
                vec![
                    (seqs[0], origin(1, "auditd", None)),
                    (seqs[1], origin(2, "remote", Some(first))),
                    (seqs[2], origin(1, "auditd", None)),
                ]
            );
        }
    }

    #[test]
    fn a_second_hello_ends_the_connection() {
        let (_dir, j) = journal();
        let mut host = TestHost::at_end(&j);
        let (mut n, peer, _) = connect(&j, &host, hello(Mode::Records));
        uds::send_nowait(&peer, &protocol::encode_hello(&Hello::output("t"))).unwrap();
        let e = n.heard(true, &mut host).unwrap_err();
        assert!(e.contains("unexpected HELLO"), "{e}");
    }

    #[test]
    fn an_input_is_rejected_with_the_reason() {
        let (_dir, j) = journal();
        let (ours, theirs) = pair(SockType::SeqPacket);
        let g = Greeting {
            name: "t",
            include: &[],
            exclude: &[],
            inputs: None,
            lookup: &(Arc::new(|_| None) as Lookup),
            drop_fields: &[],
            filter: None,
            decisions: &Decisions::default(),
            mode: Mode::Records,
            acked: 0,
            journal_id: j.id(),
            journal_end: j.end(),
            server: "test",
        };
        let Err(why) = Native::welcome(ours, Hello::input("t", [1; 16]), &g) else {
            panic!("an input was welcomed");
        };
        assert!(why.contains("output plugins"), "{why}");
        let mut buf = vec![0; 4096];
        let k = uds::recv_message(&theirs, &mut buf).unwrap().unwrap();
        assert_eq!(
            protocol::decode_from_dispatcher(&buf[..k]).unwrap(),
            FromDispatcher::Reject(why)
        );
    }
}
