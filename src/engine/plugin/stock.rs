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

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::poll::PollFlags;

use super::inflight::Inflight;
use super::{Delivery, Host};
use crate::engine::cursor::Position;
use crate::engine::subscription::Filter;
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
    pub(super) fn new(sock: OwnedFd, encoding: Encoding, records: Filter, skip_upto: u64) -> Stock {
        Stock {
            sock,
            encoding,
            records,
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
                if e.is_control() || e.seq <= self.skip_upto || !self.records.wants(e.rtype) {
                    return Step::Next;
                }
                let out = &mut self.out;
                match self.encoding {
                    Encoding::Binary => {
                        out.extend_from_slice(&1u32.to_ne_bytes());
                        out.extend_from_slice(&16u32.to_ne_bytes());
                        out.extend_from_slice(&e.rtype.to_ne_bytes());
                        out.extend_from_slice(&(e.text.len() as u32).to_ne_bytes());
                        out.extend_from_slice(e.text);
                    }
                    Encoding::String => {
                        out.extend_from_slice(e.text);
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
