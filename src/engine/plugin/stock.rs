//! Stock delivery: auditd's own plugin formats on a stream socket, for
//! plugins written for auditd, and JSON lines for plugins written for
//! anything that reads standard input.
//!
//! The string format is one record per line; the binary format is auditd's
//! 16-byte host-endian header (version 1, header size, record type, text
//! length) and the text; the JSON format is one whole event per line
//! (`stock_json.rs`), and what is said here of a record holds for its
//! line. Records are encoded into an output buffer of about
//! [`STOCK_BUFFER`] bytes and written as the socket takes them; a short
//! write leaves the rest of the buffer for the next, so the plugin always
//! reads whole records in order. A connection audispd ends itself (reload,
//! suspension, stop) first completes the record it was writing.
//!
//! A stock plugin never acknowledges. A record counts as handled once the
//! plugin has read past its last byte, so that after a connection ends the
//! plugin gets again only the records it had not read (whole):
//!
//! * for a program audispd started (`exec`), audispd keeps a hold on the
//!   program's end of the socket pair, so the bytes it has not read stay
//!   there and are counted exactly (`FIONREAD`), also after it exits or
//!   dies; and a connection audispd ends is measured once the program has
//!   read on to the end and exited;
//! * for a plugin on a socket, the measure is bytes written minus what is
//!   still in our send queue (`SIOCOUTQ`, which counts kernel overhead too,
//!   so it errs towards sending a few records again). The kernel frees what
//!   a plugin left unread when it closes its end, which makes the queue look
//!   drained, so a measure is trusted only while the plugin is still
//!   connected: a plugin that dies gets again what it had not been seen to
//!   read (at most [`WATCH_READING`] of reading), rather than losing what
//!   was still in the socket. A connection audispd ends waits (up to
//!   [`CLOSE_LIMIT`]) for the plugin to read what it was given.

use std::borrow::Cow;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;

use super::filtering::EventFilter;
use super::inflight::Inflight;
use super::stock_json::JsonEvents;
use super::{Delivery, Host};
use crate::engine::cursor::Position;
use crate::engine::events::Assembler;
use crate::engine::routes::Routes;
use crate::engine::subscription::{Filter, Subscription};
use crate::format::drop_fields::DropFields;
use crate::journal::{ReadOutcome, Step};
use crate::uds;

/// Bytes of stock-format output buffered before the sender waits.
const STOCK_BUFFER: usize = 256 * 1024;
/// How often a plugin with unread bytes in its socket is looked at.
const WATCH_READING: Duration = Duration::from_millis(100);
/// Longest a connection audispd ends waits for the plugin to read.
pub(super) const CLOSE_LIMIT: Duration = Duration::from_secs(1);
/// Length of auditd's binary record header.
const BINARY_HEADER: usize = 16;

/// Which of auditd's formats the plugin reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    /// One record per line.
    String,
    /// auditd's binary frames (header and text).
    Binary,
    /// One whole event per line, as JSON.
    Json,
}

/// One stock connection.
pub(super) struct Stock {
    sock: OwnedFd,
    /// The plugin's end of the socket, when audispd started the plugin: its
    /// unread bytes can be counted there, even once it is gone.
    peer: Option<OwnedFd>,
    encoding: Encoding,
    /// The records the plugin gets (string and binary).
    records: Filter,
    /// Events being built, for the JSON format.
    events: Option<JsonEvents>,
    /// The inputs whose records it gets.
    routes: Routes,
    /// Fields removed from its records (`None`: none).
    drop: Option<DropFields>,
    /// Records up to here are already handled: the cursor's `acked`, which
    /// is ahead of where reading restarts when events were being built
    /// (native events mode or JSON: the events that ended up to here are
    /// handled, those still open are read again).
    skip_upto: u64,
    /// One batch per record, settled by the byte offset of its end.
    inflight: Inflight,
    /// Encoded records not yet written, from `out_pos` on. `out` starts with
    /// a whole record.
    out: Vec<u8>,
    out_pos: usize,
    /// Bytes written to the socket on this connection.
    written: u64,
    /// What the last measure ([`Stock::track`]) found the plugin had read:
    /// enough to tell how long to wait, without measuring again.
    last_consumed: Option<u64>,
    /// The plugin's filter (`None`: every record goes); with one, records
    /// go by whole events as they end (see `filtering`).
    filter: Option<EventFilter>,
    assembler: Assembler,
}

impl Stock {
    /// Starts feeding a connected stock plugin; records up to `skip_upto`
    /// are not sent. `peer` is the plugin's end of the socket, if audispd
    /// holds it.
    pub(super) fn new(
        sock: OwnedFd,
        peer: Option<OwnedFd>,
        encoding: Encoding,
        subscription: Subscription,
        routes: Routes,
        drop: Option<DropFields>,
        skip_upto: u64,
    ) -> Stock {
        Stock {
            sock,
            peer,
            encoding,
            events: (encoding == Encoding::Json).then(|| JsonEvents::new(&subscription)),
            records: subscription.records,
            routes,
            drop,
            skip_upto,
            inflight: Inflight::default(),
            out: Vec::new(),
            out_pos: 0,
            written: 0,
            last_consumed: None,
            filter: None,
            assembler: Assembler::new(),
        }
    }

    /// Gives the connection the plugin's filter.
    pub(super) fn with_filter(mut self, filter: Option<EventFilter>) -> Stock {
        self.filter = filter;
        self
    }

    /// Writes what the socket takes of the output buffer; Ok(false) while
    /// some is left.
    fn flush(&mut self) -> Result<bool, String> {
        if self.out_pos == self.out.len() {
            return Ok(true);
        }
        match uds::send_nowait(&self.sock, &self.out[self.out_pos..]) {
            Ok(None) => Ok(false),
            Ok(Some(n)) => {
                self.out_pos += n;
                self.written += n as u64;
                if self.out_pos == self.out.len() {
                    self.out.clear();
                    self.out_pos = 0;
                    Ok(true)
                } else {
                    Ok(false)
                }
            }
            Err(e) => Err(format!("write: {e}")),
        }
    }

    /// Encodes about a buffer's worth of journal entries into the output
    /// buffer, each record (JSON: each event's line) a batch in flight;
    /// returns the records taken.
    fn encode(&mut self, host: &mut dyn Host) -> Result<u64, String> {
        let mut taken = 0u64;
        // Connection offset of `out[0]`.
        let base = self.written - self.out_pos as u64;
        if let Some(f) = &mut self.filter {
            f.begin(host);
        }
        let Stock {
            encoding,
            records,
            events,
            routes,
            drop,
            skip_upto,
            inflight,
            out,
            filter,
            assembler,
            ..
        } = self;
        let outcome = host
            .reader()
            .read(STOCK_BUFFER, &mut |e| {
                if let Some(events) = events {
                    if let Some(w) = events.take(&e, routes, drop, filter.as_mut(), *skip_upto, out)
                    {
                        inflight.push(Some(base + out.len() as u64), w.position, w.records);
                        taken += w.records;
                    }
                    return Step::Next;
                }
                if let Some(f) = filter {
                    // Whole events, each one batch: a plugin that stops
                    // in the middle of one gets it again whole.
                    let Some(mut event) = assembler.push(&e) else {
                        return Step::Next;
                    };
                    event.retain(|r| routes.wants(r.source));
                    let skip = event.close_seq <= *skip_upto || event.is_empty();
                    let passes = !skip && f.passes(&event);
                    event.retain(|r| records.wants(r.rtype));
                    if skip || event.is_empty() || !passes {
                        if !skip && !event.is_empty() {
                            f.withhold(event.close_seq, event.len());
                        }
                        assembler.recycle(event);
                        return Step::Next;
                    }
                    for (r, text) in event.records() {
                        let text = match drop {
                            Some(d) => d.apply(text),
                            None => Cow::Borrowed(text),
                        };
                        put(out, *encoding, r.rtype, &text);
                    }
                    inflight.push(
                        Some(base + out.len() as u64),
                        Position {
                            acked: e.seq,
                            replay_from: assembler.replay_point(e.seq + 1),
                        },
                        event.len() as u64,
                    );
                    taken += event.len() as u64;
                    assembler.recycle(event);
                    return Step::Next;
                }
                if e.is_control()
                    || e.seq <= *skip_upto
                    || !records.wants(e.rtype)
                    || !routes.wants(e.source)
                {
                    return Step::Next;
                }
                let text = match drop {
                    Some(d) => d.apply(e.text),
                    None => Cow::Borrowed(e.text),
                };
                put(out, *encoding, e.rtype, &text);
                inflight.push(
                    Some(base + out.len() as u64),
                    Position {
                        acked: e.seq,
                        replay_from: e.seq + 1,
                    },
                    1,
                );
                taken += 1;
                Step::Next
            })
            .map_err(|e| format!("reading the journal: {e}"))?;
        if let Some(f) = &mut self.filter {
            f.report(host);
        }
        if let ReadOutcome::Lost { from, to, reason } = &outcome {
            host.lost(*from, *to, reason);
            self.forget_partial();
        }
        Ok(taken)
    }

    /// Bytes the plugin has certainly read (see the module docs). None once
    /// a plugin on a socket has closed its end.
    fn consumed_floor(&self) -> Option<u64> {
        if let Some(peer) = &self.peer {
            return unread(peer).map(|n| self.written.saturating_sub(n));
        }
        let queued = outq(&self.sock);
        // The kernel marks our end hung up before it frees the bytes the
        // plugin left unread, so a measure taken before this check is only
        // trusted if the plugin was still there after it.
        if peer_closed(&self.sock) {
            return None;
        }
        Some(self.written.saturating_sub(queued))
    }

    /// Settles the records the plugin has read past.
    fn track(&mut self, host: &mut dyn Host) {
        let consumed = self.consumed_floor();
        self.last_consumed = consumed;
        if let Some(s) = self.inflight.settle(consumed) {
            host.settled(s.position, s.records);
        }
    }

    /// Where the record being written ends in `out` (`out_pos` when no
    /// record is cut).
    fn record_end(&self) -> usize {
        let (out, at) = (&self.out, self.out_pos);
        if at == 0 || at == out.len() {
            return at;
        }
        match self.encoding {
            Encoding::String | Encoding::Json if out[at - 1] == b'\n' => at,
            Encoding::String | Encoding::Json => {
                memchr::memchr(b'\n', &out[at..]).map_or(out.len(), |i| at + i + 1)
            }
            Encoding::Binary => {
                let mut end = 0;
                while end < at {
                    let len = out
                        .get(end + 12..end + BINARY_HEADER)
                        .and_then(|b| b.try_into().ok())
                        .map_or(0, u32::from_ne_bytes);
                    end += BINARY_HEADER + len as usize;
                }
                end.min(out.len())
            }
        }
    }

    /// The connection is ending on audispd's side (reload, suspension,
    /// stop) and the plugin is still there: completes the record it was
    /// being given, and, for a plugin on a socket, waits (up to
    /// [`CLOSE_LIMIT`]) for it to read what it was given, so that it is not
    /// sent again. Returns false if the plugin did not read the end of its
    /// last record in time (it is cut short).
    pub(super) fn close(&mut self, host: &mut dyn Host) -> bool {
        let deadline = Instant::now() + CLOSE_LIMIT;
        let end = self.record_end();
        while self.out_pos < end {
            match uds::send_nowait(&self.sock, &self.out[self.out_pos..end]) {
                Ok(Some(n)) => {
                    self.out_pos += n;
                    self.written += n as u64;
                }
                Ok(None) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    let _ = uds::wait(&self.sock, PollFlags::POLLOUT, left);
                }
                // Gone: nothing can be cut any more.
                Err(_) => return true,
            }
        }
        if self.peer.is_none() {
            loop {
                self.track(host);
                let reading = self.consumed_floor().is_some_and(|c| c < self.written);
                if !reading || Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.track(host);
        let _ =
            nix::sys::socket::shutdown(self.sock.as_raw_fd(), nix::sys::socket::Shutdown::Write);
        true
    }
}

impl Delivery for Stock {
    fn socket(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Measures what the plugin has read once, on the way out (a system
    /// call per measure; each round of the sender also measures once when
    /// it wakes, [`Delivery::heard`]).
    fn fill(&mut self, host: &mut dyn Host) -> Result<(), String> {
        loop {
            if !self.flush()? {
                self.track(host);
                return Ok(());
            }
            if host.reader().caught_up() || self.out.len() >= STOCK_BUFFER {
                self.track(host);
                return Ok(());
            }
            let taken = self.encode(host)?;
            host.delivered(taken);
            // Entries the plugin does not get after the last record: passed
            // once every record before them is read (but not the records of
            // events a filter has not decided yet).
            let next = host.reader().next_seq();
            let position = match (&mut self.events, &self.filter) {
                (Some(events), _) => events.position_after(next),
                (None, Some(_)) => Position {
                    acked: next - 1,
                    replay_from: self.assembler.replay_point(next),
                },
                (None, None) => Position {
                    acked: next - 1,
                    replay_from: next,
                },
            };
            self.inflight.push(None, position, 0);
        }
    }

    fn has_unsent(&self) -> bool {
        self.out_pos < self.out.len()
    }

    fn window_full(&self) -> bool {
        false
    }

    fn patience(&self) -> Duration {
        // Measured on the way out of `fill`, just before.
        if self.last_consumed.is_some_and(|c| self.written > c) {
            // Watch the plugin read what it was given.
            WATCH_READING
        } else {
            Duration::from_secs(1)
        }
    }

    fn heard(&mut self, _readable: bool, host: &mut dyn Host) -> Result<(), String> {
        self.track(host);
        Ok(())
    }

    fn salvage(&mut self, host: &mut dyn Host) {
        self.track(host);
    }

    fn lendable(&self) -> bool {
        true
    }

    fn forget_partial(&mut self) {
        if let Some(events) = &mut self.events {
            events.forget_partial();
        }
        self.assembler = Assembler::new();
    }
}

/// Appends one record in the plugin's encoding (JSON is written by events).
fn put(out: &mut Vec<u8>, encoding: Encoding, rtype: u32, text: &[u8]) {
    match encoding {
        Encoding::Binary => {
            out.extend_from_slice(&1u32.to_ne_bytes());
            out.extend_from_slice(&(BINARY_HEADER as u32).to_ne_bytes());
            out.extend_from_slice(&rtype.to_ne_bytes());
            out.extend_from_slice(&(text.len() as u32).to_ne_bytes());
            out.extend_from_slice(text);
        }
        Encoding::String | Encoding::Json => {
            out.extend_from_slice(text);
            out.push(b'\n');
        }
    }
}

/// Bytes (with kernel overhead) still in the socket, not yet read by the peer.
fn outq(fd: &OwnedFd) -> u64 {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int to the pointer we pass.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if r < 0 {
        0
    } else {
        n.max(0) as u64
    }
}

/// Bytes waiting to be read at the plugin's end of the socket (None if
/// that cannot be told: nothing then counts as read).
fn unread(peer: &OwnedFd) -> Option<u64> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD (SIOCINQ) writes one int to the pointer we pass.
    let r = unsafe { libc::ioctl(peer.as_raw_fd(), libc::FIONREAD, &mut n) };
    (r >= 0).then(|| n.max(0) as u64)
}

/// Whether the peer has closed its end of a stream socket.
fn peer_closed(fd: &OwnedFd) -> bool {
    uds::wait(fd, PollFlags::empty(), Duration::ZERO)
        .is_ok_and(|ev| ev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plugin::testing::{append, journal, pair, text, TestHost};
    use nix::sys::socket::{self, SockType};
    use std::sync::Arc;

    /// Routes that let every input's records through.
    fn all_inputs() -> Routes {
        Routes::new(None, false, Arc::new(|_| None))
    }

    fn stock(encoding: Encoding, host: &TestHost) -> (Stock, OwnedFd) {
        let (ours, theirs) = pair(SockType::Stream);
        let s = Stock::new(
            ours,
            None,
            encoding,
            Subscription::new(&[], &[], &[], &[]),
            all_inputs(),
            None,
            host.position.acked,
        );
        (s, theirs)
    }

    /// A stock delivery to a plugin whose end audispd holds too, as for a
    /// program it started.
    fn held(host: &TestHost) -> (Stock, OwnedFd) {
        let (ours, theirs) = pair(SockType::Stream);
        let peer = theirs.try_clone().unwrap();
        let s = Stock::new(
            ours,
            Some(peer),
            Encoding::String,
            Subscription::new(&[], &[], &[], &[]),
            all_inputs(),
            None,
            host.position.acked,
        );
        (s, theirs)
    }

    /// Reads what is waiting at the plugin's end; returns the bytes read.
    fn read_some(peer: &OwnedFd, into: &mut Vec<u8>) -> usize {
        let mut buf = vec![0; 64 * 1024];
        let mut total = 0;
        loop {
            match nix::unistd::read(peer, &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EAGAIN) => return total,
                Ok(n) => {
                    into.extend_from_slice(&buf[..n]);
                    total += n;
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn lines(seqs: std::ops::RangeInclusive<u64>, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in seqs {
            out.extend_from_slice(&text(i, len));
            out.push(b'\n');
        }
        out
    }

    #[test]
    fn short_writes_keep_whole_records_in_order() {
        let (_dir, j) = journal();
        let mut host = TestHost::at_end(&j);
        append(&j, 300, 1, 700);
        let (mut s, peer) = stock(Encoding::String, &host);
        socket::setsockopt(&s.sock, socket::sockopt::SndBuf, &4096).unwrap();
        let mut got = Vec::new();
        let mut short = 0;
        let mut rounds = 0;
        loop {
            s.fill(&mut host).unwrap();
            if s.has_unsent() {
                short += 1;
            } else if host.reader.caught_up() {
                break;
            }
            assert!(read_some(&peer, &mut got) > 0, "the plugin got something");
            rounds += 1;
            assert!(rounds < 10_000);
        }
        read_some(&peer, &mut got);
        assert!(short > 1, "the socket took the output in pieces");
        assert_eq!(
            got,
            lines(1..=300, 700),
            "every record whole, once, in order"
        );
        assert_eq!(host.delivered, 300);
    }

    #[test]
    fn binary_frames_carry_auditds_header() {
        let (_dir, j) = journal();
        let mut host = TestHost::at_end(&j);
        append(&j, 2, 1, 50);
        let (mut s, peer) = stock(Encoding::Binary, &host);
        s.fill(&mut host).unwrap();
        let mut got = Vec::new();
        read_some(&peer, &mut got);
        let mut want = Vec::new();
        for i in 1..=2 {
            let t = text(i, 50);
            for word in [1u32, 16, 1300, t.len() as u32] {
                want.extend_from_slice(&word.to_ne_bytes());
            }
            want.extend_from_slice(&t);
        }
        assert_eq!(got, want);
    }

    #[test]
    fn records_settle_once_the_plugin_has_read_them() {
        let (_dir, j) = journal();
        let mut host = TestHost::at_end(&j);
        append(&j, 20, 1, 500);
        let (mut s, peer) = stock(Encoding::String, &host);
        s.fill(&mut host).unwrap();
        assert!(!s.has_unsent());
        assert_eq!(host.delivered, 20);
        assert_eq!(host.position.acked, 0, "nothing read yet");
        assert_eq!(s.patience(), WATCH_READING, "unread bytes are watched");

        // Half read: the kernel's count of what is left includes its own
        // overhead, so at most the records wholly read are handled.
        let mut got = Vec::new();
        let mut buf = vec![0; s.written as usize / 2];
        let n = nix::unistd::read(&peer, &mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
        s.heard(false, &mut host).unwrap();
        assert!(host.position.acked <= 10, "{:?}", host.position);

        read_some(&peer, &mut got);
        s.heard(false, &mut host).unwrap();
        assert_eq!(host.position.acked, 20);
        assert_eq!(host.position.replay_from, 21);
        assert_eq!(host.handled, 20);
        assert_eq!(s.patience(), Duration::from_secs(1));
        assert_eq!(got, lines(1..=20, 500));
    }

    #[test]
    fn a_program_is_measured_record_by_record_even_once_gone() {
        let (_dir, j) = journal();
        let mut host = TestHost::at_end(&j);
        append(&j, 20, 1, 500);
        let (mut s, plugin) = held(&host);
        s.fill(&mut host).unwrap();
        let line = lines(1..=1, 500).len();
        // The program reads seven and a half records and dies.
        let mut buf = vec![0; line * 15 / 2];
        assert_eq!(nix::unistd::read(&plugin, &mut buf).unwrap(), buf.len());
        s.heard(false, &mut host).unwrap();
        assert_eq!(host.position.acked, 7, "the records wholly read");
        drop(plugin);
        s.salvage(&mut host);
        assert_eq!(
            (host.position.acked, host.handled),
            (7, 7),
            "what it left unread is still counted as unread"
        );

        // The next program gets the rest, the record it had begun whole.
        host.reader.seek(host.position.replay_from);
        let (mut s, plugin) = held(&host);
        s.fill(&mut host).unwrap();
        let mut got = Vec::new();
        read_some(&plugin, &mut got);
        assert_eq!(got, lines(8..=20, 500));
        s.heard(false, &mut host).unwrap();
        assert_eq!((host.position.acked, host.handled), (20, 20));
    }

    #[test]
    fn a_connection_audispd_ends_completes_the_record_it_was_writing() {
        for encoding in [Encoding::String, Encoding::Binary, Encoding::Json] {
            let (_dir, j) = journal();
            let mut host = TestHost::at_end(&j);
            append(&j, 50, 1, 3000);
            let (mut s, peer) = stock(encoding, &host);
            socket::setsockopt(&s.sock, socket::sockopt::SndBuf, &4096).unwrap();
            s.fill(&mut host).unwrap();
            assert!(s.has_unsent(), "the socket took part of the output");
            let cut = s.record_end() != s.out_pos;
            assert!(cut, "a record is cut ({encoding:?})");
            // The plugin reads on while the connection is closed.
            let reader = std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut buf = vec![0; 4096];
                loop {
                    let _ = uds::wait(&peer, PollFlags::POLLIN, Duration::from_secs(5));
                    match nix::unistd::read(&peer, &mut buf) {
                        Ok(0) => return got,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(nix::errno::Errno::EAGAIN) => {}
                        Err(e) => panic!("read: {e}"),
                    }
                }
            });
            assert!(s.close(&mut host));
            drop(s);
            let got = reader.join().unwrap();
            let whole = match encoding {
                Encoding::String => {
                    let n = got.iter().filter(|&&b| b == b'\n').count() as u64;
                    assert_eq!(got, lines(1..=n, 3000), "whole lines only");
                    n
                }
                Encoding::Json => {
                    let n = got.iter().filter(|&&b| b == b'\n').count() as u64;
                    assert_eq!(got.last(), Some(&b'\n'), "whole lines only");
                    for l in got.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                        serde_json::from_slice::<serde_json::Value>(l).expect("whole JSON");
                    }
                    n
                }
                Encoding::Binary => {
                    let mut at = 0;
                    let mut n = 0;
                    while at < got.len() {
                        let len = u32::from_ne_bytes(got[at + 12..at + 16].try_into().unwrap());
                        at += 16 + len as usize;
                        n += 1;
                    }
                    assert_eq!(at, got.len(), "whole frames only");
                    n
                }
            };
            assert!(whole > 0);
            assert_eq!(
                host.position.acked, whole,
                "what it read is handled, not sent again ({encoding:?})"
            );
        }
    }

    #[test]
    fn a_plugin_that_closes_its_end_has_not_read_what_was_left() {
        let (_dir, j) = journal();
        let mut host = TestHost::at_end(&j);
        append(&j, 20, 1, 500);
        let (mut s, peer) = stock(Encoding::String, &host);
        s.fill(&mut host).unwrap();
        // The plugin reads a little and dies: the kernel frees the rest,
        // and the socket's send queue looks empty.
        let mut buf = vec![0; 100];
        nix::unistd::read(&peer, &mut buf).unwrap();
        drop(peer);
        assert_eq!(outq(&s.sock), 0, "the kernel freed what was unread");
        s.salvage(&mut host);
        assert_eq!(host.position.acked, 0, "nothing counted as read");
        assert_eq!(host.handled, 0);

        // The next connection gets every record again, whole.
        host.reader.seek(host.position.replay_from);
        let (mut s, peer) = stock(Encoding::String, &host);
        s.fill(&mut host).unwrap();
        let mut got = Vec::new();
        read_some(&peer, &mut got);
        assert_eq!(got, lines(1..=20, 500));
    }

    #[test]
    fn records_already_handled_are_not_sent_again() {
        let (_dir, j) = journal();
        append(&j, 10, 1, 100);
        // A native plugin in events mode left the cursor: handled up to 6,
        // reading restarts at 4 (an event that began there was open).
        let mut host = TestHost::at(
            &j,
            Position {
                acked: 6,
                replay_from: 4,
            },
        );
        let (mut s, peer) = stock(Encoding::String, &host);
        s.fill(&mut host).unwrap();
        let mut got = Vec::new();
        read_some(&peer, &mut got);
        assert_eq!(got, lines(7..=10, 100));
        s.heard(false, &mut host).unwrap();
        assert_eq!(host.position.acked, 10);
        assert_eq!(host.delivered, 4);
    }
}
