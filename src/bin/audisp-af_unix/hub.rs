//! The readers: accepting them, a bounded buffer each, and writing to them
//! without ever blocking.
//!
//! One thread ([`Hub::run`]) owns the listening sockets and every reader's
//! connection. The plugin's handler hands it each batch, already encoded,
//! as a shared [`Chunk`] and returns at once, so audispd is acknowledged
//! whatever the readers do. Each reader has its own queue of pieces of those
//! chunks, bounded in bytes: a reader that lets it fill up is disconnected
//! ([`SlowReader::Disconnect`]) or misses records, then gets a gap marker
//! saying how many ([`SlowReader::Skip`]). Readers only ever get whole
//! records, from the first batch after they connected. A gap marker waits
//! for room in the reader's buffer and goes out before the next record or,
//! when records pause, within [`GAP_NOTICE`], so a reader learns of a loss
//! even when nothing follows it.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::EventFd;
use nix::sys::socket::{self, sockopt, MsgFlags};

use crate::encode::{gap_marker, Chunk, Format};

/// How soon after records stop arriving a reader that missed some is told.
pub const GAP_NOTICE: Duration = Duration::from_secs(1);

/// What happens to a reader whose buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowReader {
    /// It is disconnected (and may reconnect).
    Disconnect,
    /// It misses the records that do not fit, then gets a gap marker.
    Skip,
}

/// The hub's settings.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes a reader may have waiting.
    pub buffer: usize,
    /// Readers connected at once.
    pub max_readers: usize,
    /// What to do with a reader that falls behind.
    pub slow: SlowReader,
    /// The format (for gap markers).
    pub format: Format,
    /// How long to keep writing to readers after the plugin stops.
    pub drain: Duration,
}

/// A part of a chunk a reader still has to get.
struct Piece {
    chunk: Arc<Chunk>,
    start: usize,
    end: usize,
}

/// One connected reader.
struct Reader {
    fd: OwnedFd,
    id: u64,
    peer: String,
    queue: VecDeque<Piece>,
    /// Bytes in `queue` not yet written.
    queued: usize,
    /// Records handed to it.
    records: u64,
    /// Records it missed since the last gap marker.
    skipping: u64,
    /// Records it missed in all.
    skipped: u64,
    /// Gap markers it got.
    gaps: u64,
}

impl Reader {
    fn new(fd: OwnedFd, id: u64, peer: String) -> Reader {
        Reader {
            fd,
            id,
            peer,
            queue: VecDeque::new(),
            queued: 0,
            records: 0,
            skipping: 0,
            skipped: 0,
            gaps: 0,
        }
    }

    fn push(&mut self, chunk: &Arc<Chunk>, start: usize, end: usize, records: usize) {
        if end > start {
            self.queue.push_back(Piece {
                chunk: chunk.clone(),
                start,
                end,
            });
            self.queued += end - start;
            self.records += records as u64;
        }
    }

    /// Queues `chunk`, or as much of it as `limits` allow. Returns why the
    /// reader must go, if it must.
    fn offer(&mut self, chunk: &Arc<Chunk>, limits: &Limits) -> Option<String> {
        match limits.slow {
            SlowReader::Disconnect => {
                if self.queued + chunk.bytes.len() > limits.buffer {
                    return Some(format!(
                        "fell behind: {} bytes waiting and {} more arrived, over its {}-byte buffer",
                        self.queued,
                        chunk.bytes.len(),
                        limits.buffer
                    ));
                }
                self.push(chunk, 0, chunk.bytes.len(), chunk.records());
            }
            SlowReader::Skip => {
                if !self.mark_gap(limits, false) {
                    self.skipping += chunk.records() as u64;
                    self.skipped += chunk.records() as u64;
                    return None;
                }
                let room = limits.buffer.saturating_sub(self.queued);
                let fit = chunk.ends.partition_point(|&e| e <= room);
                let end = if fit == 0 { 0 } else { chunk.ends[fit - 1] };
                self.push(chunk, 0, end, fit);
                let missed = (chunk.records() - fit) as u64;
                self.skipping += missed;
                self.skipped += missed;
            }
        }
        None
    }

    /// Queues the gap marker for the records missed so far, if any, and if
    /// it fits in the buffer (or `anyway`). False: records are still
    /// missing and unannounced.
    fn mark_gap(&mut self, limits: &Limits, anyway: bool) -> bool {
        if self.skipping == 0 {
            return true;
        }
        let marker = Arc::new(gap_marker(limits.format, self.skipping, now()));
        if !anyway && self.queued + marker.bytes.len() > limits.buffer {
            return false;
        }
        self.push(&marker, 0, marker.bytes.len(), 0);
        self.gaps += 1;
        self.skipping = 0;
        true
    }

    /// Writes what it can without blocking. Err: the reader is gone.
    fn write(&mut self) -> Result<(), String> {
        while let Some(p) = self.queue.front_mut() {
            let data = &p.chunk.bytes[p.start..p.end];
            match socket::send(
                self.fd.as_raw_fd(),
                data,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(n) => {
                    p.start += n;
                    self.queued -= n;
                    if p.start == p.end {
                        self.queue.pop_front();
                    }
                }
                Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(format!("write failed ({e})")),
            }
        }
        Ok(())
    }

    /// Reads and discards what the reader sent. Err: it hung up.
    fn drain_input(&mut self, scratch: &mut [u8]) -> Result<(), String> {
        loop {
            match socket::recv(self.fd.as_raw_fd(), scratch, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return Err("hung up".into()),
                Ok(_) => {}
                Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(format!("hung up ({e})")),
            }
        }
    }
}

/// Seconds and milliseconds since the epoch.
fn now() -> (u64, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs(), d.subsec_millis())
}

/// `pid 123 uid 0 gid 0 (python3)`: who a reader is, from SO_PEERCRED.
fn describe_peer(fd: &OwnedFd) -> String {
    match socket::getsockopt(fd, sockopt::PeerCredentials) {
        Ok(c) => {
            let comm = std::fs::read_to_string(format!("/proc/{}/comm", c.pid()))
                .map(|s| format!(" ({})", s.trim()))
                .unwrap_or_default();
            format!("pid {} uid {} gid {}{comm}", c.pid(), c.uid(), c.gid())
        }
        Err(e) => format!("unknown peer ({e})"),
    }
}

/// The reader side of the plugin, run on a thread of its own.
pub struct Hub {
    listeners: Vec<OwnedFd>,
    readers: Vec<Reader>,
    limits: Limits,
    chunks: Receiver<Arc<Chunk>>,
    wake: Arc<EventFd>,
    connected: Arc<AtomicUsize>,
    next_id: u64,
    refused: u64,
    last_refusal_log: Option<Instant>,
}

impl Hub {
    /// A hub serving `listeners`, fed by `chunks` (with a write to `wake`
    /// after each send), keeping `connected` up to date.
    pub fn new(
        listeners: Vec<OwnedFd>,
        limits: Limits,
        chunks: Receiver<Arc<Chunk>>,
        wake: Arc<EventFd>,
        connected: Arc<AtomicUsize>,
    ) -> Hub {
        Hub {
            listeners,
            readers: Vec::new(),
            limits,
            chunks,
            wake,
            connected,
            next_id: 1,
            refused: 0,
            last_refusal_log: None,
        }
    }

    /// Serves readers until the sending side is gone, then keeps writing
    /// what they have waiting for at most the drain time.
    pub fn run(mut self) -> io::Result<()> {
        for l in &self.listeners {
            audisp::uds::set_nonblocking(l)?;
        }
        let mut scratch = vec![0u8; 4096];
        let mut stopping: Option<Instant> = None;
        let mut last_chunk = Instant::now();
        loop {
            if let Some(since) = stopping {
                if self.readers.iter().all(|r| r.queue.is_empty())
                    || since.elapsed() >= self.limits.drain
                {
                    for r in std::mem::take(&mut self.readers) {
                        self.closed(r, "the plugin stopped");
                    }
                    return Ok(());
                }
            }
            let (ready_wake, ready_listeners, ready_readers) = self.poll(stopping.is_some())?;
            // Readers first: the indexes poll returned hold only until
            // readers are added or removed.
            let mut gone = Vec::new();
            for (i, events) in ready_readers {
                let r = &mut self.readers[i];
                let mut result = Ok(());
                if events.intersects(PollFlags::POLLIN) {
                    result = r.drain_input(&mut scratch);
                }
                if result.is_ok() && events.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                    result = Err("hung up".into());
                }
                if result.is_ok() {
                    result = r.write();
                }
                if let Err(why) = result {
                    gone.push((i, why));
                }
            }
            self.remove(gone);
            if ready_wake {
                let _ = self.wake.read();
                loop {
                    match self.chunks.try_recv() {
                        Ok(chunk) => {
                            last_chunk = Instant::now();
                            self.distribute(&chunk)
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            if stopping.is_none() {
                                stopping = Some(Instant::now());
                                self.last_gap_markers();
                            }
                            break;
                        }
                    }
                }
            }
            if last_chunk.elapsed() >= GAP_NOTICE {
                self.pending_gap_markers();
            }
            for i in ready_listeners {
                self.accept(i);
            }
        }
    }

    /// Waits for something to do: which of the wake-up, the listeners and
    /// the readers are ready.
    #[allow(clippy::type_complexity)]
    fn poll(&self, stopping: bool) -> io::Result<(bool, Vec<usize>, Vec<(usize, PollFlags)>)> {
        let mut fds = Vec::with_capacity(1 + self.listeners.len() + self.readers.len());
        fds.push(PollFd::new(self.wake.as_fd(), PollFlags::POLLIN));
        for l in &self.listeners {
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
        }
        for r in &self.readers {
            let mut ev = PollFlags::POLLIN;
            if !r.queue.is_empty() {
                ev |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(r.fd.as_fd(), ev));
        }
        let timeout = if stopping { 100u16 } else { 500 };
        match nix::poll::poll(&mut fds, PollTimeout::from(timeout)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let ready = |fd: &PollFd| fd.revents().unwrap_or(PollFlags::empty());
        let wake = !ready(&fds[0]).is_empty();
        let n = self.listeners.len();
        let listeners = (0..n).filter(|&i| !ready(&fds[1 + i]).is_empty()).collect();
        let readers = fds[1 + n..]
            .iter()
            .enumerate()
            .filter_map(|(i, fd)| {
                let ev = ready(fd);
                (!ev.is_empty()).then_some((i, ev))
            })
            .collect();
        Ok((wake, listeners, readers))
    }

    /// Queues `chunk` for every reader and writes what each can take now.
    fn distribute(&mut self, chunk: &Arc<Chunk>) {
        let mut gone = Vec::new();
        for (i, r) in self.readers.iter_mut().enumerate() {
            if let Some(why) = r.offer(chunk, &self.limits) {
                gone.push((i, why));
            } else if let Err(why) = r.write() {
                gone.push((i, why));
            }
        }
        self.remove(gone);
    }

    /// No more records will come: a reader still missing records gets its
    /// gap marker now, beyond its buffer if need be, so that it learns of
    /// every record it missed before the end of the stream.
    fn last_gap_markers(&mut self) {
        for r in &mut self.readers {
            r.mark_gap(&self.limits, true);
        }
    }

    /// Records have paused: readers with room get their gap markers.
    fn pending_gap_markers(&mut self) {
        let mut gone = Vec::new();
        for (i, r) in self.readers.iter_mut().enumerate() {
            if r.skipping > 0 && r.mark_gap(&self.limits, false) {
                if let Err(why) = r.write() {
                    gone.push((i, why));
                }
            }
        }
        self.remove(gone);
    }

    /// Takes the connections waiting on listener `i`.
    fn accept(&mut self, i: usize) {
        loop {
            let fd = match audisp::uds::accept(&self.listeners[i]) {
                Ok(Some(fd)) => fd,
                Ok(None) => return,
                Err(e) => {
                    eprintln!("audisp-af_unix: accepting a reader failed: {e}");
                    return;
                }
            };
            let peer = describe_peer(&fd);
            if self.readers.len() >= self.limits.max_readers {
                self.refused += 1;
                let quiet = self
                    .last_refusal_log
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(10));
                if !quiet {
                    eprintln!(
                        "audisp-af_unix: refused reader {peer}: {} readers are connected, the most allowed (--max-readers); {} refused so far",
                        self.readers.len(),
                        self.refused
                    );
                    self.last_refusal_log = Some(Instant::now());
                }
                continue;
            }
            if let Err(e) = audisp::uds::set_nonblocking(&fd) {
                eprintln!("audisp-af_unix: reader {peer}: {e}");
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            eprintln!("audisp-af_unix: reader {id} connected: {peer}");
            self.readers.push(Reader::new(fd, id, peer));
            self.connected.store(self.readers.len(), Ordering::Relaxed);
        }
    }

    /// Removes the readers at the given indexes, saying why.
    fn remove(&mut self, mut gone: Vec<(usize, String)>) {
        gone.sort_by_key(|g| std::cmp::Reverse(g.0));
        for (i, why) in gone {
            let r = self.readers.swap_remove(i);
            self.closed(r, &why);
        }
        self.connected.store(self.readers.len(), Ordering::Relaxed);
    }

    fn closed(&self, r: Reader, why: &str) {
        eprintln!(
            "audisp-af_unix: reader {} ({}) disconnected: {why}; {} records queued for it, {} skipped ({} gap markers), {} bytes unsent",
            r.id, r.peer, r.records, r.skipped, r.gaps, r.queued
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::Format;

    fn reader() -> (Reader, OwnedFd) {
        let (a, b) = socket::socketpair(
            socket::AddressFamily::Unix,
            socket::SockType::Stream,
            None,
            socket::SockFlag::SOCK_CLOEXEC | socket::SockFlag::SOCK_NONBLOCK,
        )
        .unwrap();
        (Reader::new(a, 1, "test".into()), b)
    }

    fn limits(slow: SlowReader, buffer: usize) -> Limits {
        Limits {
            buffer,
            max_readers: 1,
            slow,
            format: Format::String,
            drain: Duration::ZERO,
        }
    }

    /// A chunk of `n` records of 10 bytes each.
    fn chunk(n: usize) -> Arc<Chunk> {
        let mut c = Chunk::default();
        for _ in 0..n {
            c.push(Format::String, 1005, b"123456789");
        }
        Arc::new(c)
    }

    #[test]
    fn a_full_buffer_disconnects() {
        let (mut r, _peer) = reader();
        let l = limits(SlowReader::Disconnect, 100);
        assert_eq!(r.offer(&chunk(10), &l), None);
        let why = r.offer(&chunk(1), &l).unwrap();
        assert!(why.starts_with("fell behind: 100 bytes waiting"), "{why}");
        assert_eq!(r.records, 10);
    }

    #[test]
    fn skipping_counts_every_missed_record_and_marks_the_gap() {
        let (mut r, _peer) = reader();
        let l = limits(SlowReader::Skip, 200);
        assert_eq!(r.offer(&chunk(15), &l), None);
        assert_eq!((r.records, r.skipping, r.queued), (15, 0, 150));
        // 5 fit, 10 are missed.
        r.offer(&chunk(15), &l);
        assert_eq!((r.records, r.skipping, r.queued), (20, 10, 200));
        // No room for the marker: all missed.
        r.offer(&chunk(3), &l);
        assert_eq!((r.skipping, r.gaps), (13, 0));
        // Room again: the marker, then what fits.
        r.queue.clear();
        r.queued = 0;
        r.offer(&chunk(3), &l);
        assert_eq!((r.skipping, r.skipped, r.gaps, r.records), (0, 13, 1, 23));
        let marker = &r.queue[0];
        let text = &marker.chunk.bytes[marker.start..marker.end];
        assert!(
            std::str::from_utf8(text).unwrap().contains(" skipped=13 "),
            "{text:?}"
        );
    }

    #[test]
    fn writes_stop_when_the_socket_is_full_and_resume_in_place() {
        let (mut r, peer) = reader();
        let l = limits(SlowReader::Disconnect, 64 << 20);
        let big = {
            let mut c = Chunk::default();
            for i in 0..100_000u32 {
                c.push(Format::String, 1005, format!("record {i:08}").as_bytes());
            }
            Arc::new(c)
        };
        r.offer(&big, &l);
        r.write().unwrap();
        assert!(r.queued > 0, "a socket buffer holds less than 1.6 MB");
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while r.queued > 0 || got.len() < big.bytes.len() {
            match socket::recv(peer.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(Errno::EAGAIN) => r.write().unwrap(),
                Err(e) => panic!("{e}"),
            }
        }
        assert!(got == big.bytes);
        drop(peer);
        assert!(r.write().is_ok(), "nothing left to write");
        r.offer(&chunk(1), &l);
        assert!(r.write().is_err(), "the reader hung up");
    }
}
