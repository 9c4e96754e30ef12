//! Stock delivery: auditd's own plugin formats on a stream socket, for
//! plugins written for auditd.
//!
//! The string format is one record per line; the binary format is auditd's
//! 16-byte host-endian header (version 1, header size, record type, text
//! length) and the text. Records are encoded into an output buffer of about
//! [`STOCK_BUFFER`] bytes and written as the socket takes them; a short
//! write leaves the rest of the buffer for the next, so the plugin always
//! reads whole records in order.
//!
//! A stock plugin never acknowledges. A batch counts as handled once the
//! plugin has read past its last byte: bytes written minus bytes still in
//! the socket's send queue (`SIOCOUTQ`). The kernel frees what a plugin
//! left unread when it closes its end, which makes the queue look drained,
//! so a measure is trusted only while the plugin is still connected: a
//! plugin that dies loses nothing that was still in the socket.

use std::borrow::Cow;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::poll::PollFlags;

use super::inflight::Inflight;
use super::{Delivery, Host};
use crate::engine::cursor::Position;
use crate::engine::routes::Routes;
use crate::engine::subscription::Filter;
use crate::format::drop_fields::DropFields;
use crate::journal::{ReadOutcome, Step};
use crate::uds;

/// Bytes of stock-format output buffered before the sender waits.
const STOCK_BUFFER: usize = 256 * 1024;
/// How often a plugin with unread bytes in its socket is looked at.
const WATCH_READING: Duration = Duration::from_millis(100);

/// Which of auditd's formats the plugin reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    /// One record per line.
    String,
    /// auditd's binary frames (header and text).
    Binary,
}

/// One stock connection.
pub(super) struct Stock {
    sock: OwnedFd,
    encoding: Encoding,
    /// The records the plugin gets.
    records: Filter,
    /// The inputs whose records it gets.
    routes: Routes,
    /// Fields removed from its records (`None`: none).
    drop: Option<DropFields>,
    /// Records up to here are already handled: the cursor's `acked`, which
    /// is ahead of where reading restarts only when a native plugin in
    /// events mode left the cursor (its configuration changed to a stock
    /// format).
    skip_upto: u64,
    inflight: Inflight,
    /// Encoded records not yet written, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    /// Bytes written to the socket on this connection.
    written: u64,
}

impl Stock {
    /// Starts feeding a connected stock plugin; records up to `skip_upto`
    /// are not sent.
    pub(super) fn new(
        sock: OwnedFd,
        encoding: Encoding,
        records: Filter,
        routes: Routes,
        drop: Option<DropFields>,
        skip_upto: u64,
    ) -> Stock {
        Stock {
            sock,
            encoding,
            records,
            routes,
            drop,
            skip_upto,
            inflight: Inflight::default(),
            out: Vec::new(),
            out_pos: 0,
            written: 0,
        }
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
    /// buffer; returns the records taken.
    fn encode(&mut self, host: &mut dyn Host) -> Result<u64, String> {
        let mut taken = 0u64;
        let outcome = host
            .reader()
            .read(STOCK_BUFFER, &mut |e| {
                if e.is_control()
                    || e.seq <= self.skip_upto
                    || !self.records.wants(e.rtype)
                    || !self.routes.wants(e.source)
                {
                    return Step::Next;
                }
                let text = match &mut self.drop {
                    Some(d) => d.apply(e.text),
                    None => Cow::Borrowed(e.text),
                };
                let out = &mut self.out;
                match self.encoding {
                    Encoding::Binary => {
                        out.extend_from_slice(&1u32.to_ne_bytes());
                        out.extend_from_slice(&16u32.to_ne_bytes());
                        out.extend_from_slice(&e.rtype.to_ne_bytes());
                        out.extend_from_slice(&(text.len() as u32).to_ne_bytes());
                        out.extend_from_slice(&text);
                    }
                    Encoding::String => {
                        out.extend_from_slice(&text);
                        out.push(b'\n');
                    }
                }
                taken += 1;
                Step::Next
            })
            .map_err(|e| format!("reading the journal: {e}"))?;
        if let ReadOutcome::Lost { from, to, reason } = &outcome {
            host.lost(*from, *to, reason);
        }
        Ok(taken)
    }

    /// Bytes the plugin has certainly read (written minus what is still in
    /// the socket; the kernel counts buffer overhead too, so this errs on the
    /// side of resending). None once the plugin has closed its end.
    fn consumed_floor(&self) -> Option<u64> {
        let queued = outq(&self.sock);
        // The kernel marks our end hung up before it frees the bytes the
        // plugin left unread, so a measure taken before this check is only
        // trusted if the plugin was still there after it.
        if peer_closed(&self.sock) {
            return None;
        }
        Some(self.written.saturating_sub(queued))
    }

    /// Settles the batches the plugin has read past.
    fn track(&mut self, host: &mut dyn Host) {
        let consumed = self.consumed_floor();
        if let Some(s) = self.inflight.settle(consumed) {
            host.settled(s.position, s.records);
        }
    }
}

impl Delivery for Stock {
    fn socket(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    fn fill(&mut self, host: &mut dyn Host) -> Result<(), String> {
        loop {
            if !self.flush()? {
                return Ok(());
            }
            if host.reader().caught_up() || self.out.len() >= STOCK_BUFFER {
                self.track(host);
                return Ok(());
            }
            let taken = self.encode(host)?;
            let end = self.written + (self.out.len() - self.out_pos) as u64;
            host.delivered(taken);
            let next = host.reader().next_seq();
            self.inflight.push(
                (taken > 0).then_some(end),
                Position {
                    acked: next - 1,
                    replay_from: next,
                },
                taken,
            );
            self.track(host);
        }
    }

    fn has_unsent(&self) -> bool {
        self.out_pos < self.out.len()
    }

    fn window_full(&self) -> bool {
        false
    }

    fn patience(&self) -> Duration {
        if self.consumed_floor().is_some_and(|c| self.written > c) {
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

    fn forget_partial(&mut self) {}
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

    fn stock(encoding: Encoding, host: &TestHost) -> (Stock, OwnedFd) {
        let (ours, theirs) = pair(SockType::Stream);
        let routes = Routes::new(None, false, Arc::new(|_| None));
        let s = Stock::new(
            ours,
            encoding,
            Filter::all(),
            routes,
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

        // Half read: the batch is not handled until its last byte is.
        let mut got = Vec::new();
        let mut buf = vec![0; s.written as usize / 2];
        let n = nix::unistd::read(&peer, &mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
        s.heard(false, &mut host).unwrap();
        assert_eq!(host.position.acked, 0, "half a batch is not handled");

        read_some(&peer, &mut got);
        s.heard(false, &mut host).unwrap();
        assert_eq!(host.position.acked, 20);
        assert_eq!(host.position.replay_from, 21);
        assert_eq!(host.handled, 20);
        assert_eq!(s.patience(), Duration::from_secs(1));
        assert_eq!(got, lines(1..=20, 500));
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
