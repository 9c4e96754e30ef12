//! A stream an input handed over: the dispatcher reads auditd's socket in
//! the input's place (`STREAM`, see `docs/protocol.md`), so each record is
//! read once, not read, buffered and relayed by `audisp-bridge` first.
//!
//! Nothing the dispatcher has not journaled ever leaves the socket: it only
//! *peeks* (`MSG_PEEK` with `SO_PEEK_OFF`, which the kernel moves back as
//! bytes are removed), journals the records as the input's, numbered as the
//! input would have numbered them, and acknowledges "journaled through stream
//! offset O, sequence S" (`STREAM_ACK`); the input then removes exactly
//! those bytes. When the dispatcher dies the input reads on from the last
//! acknowledged byte with the next number, and what was journaled but not
//! acknowledged comes again and is dropped as already stored (the input's
//! ledger in [`super::ingest`]). This module's loop and the connection are
//! one thread, so the stream is never peeked once the connection is gone.
//!
//! The input also takes the stream back from a dispatcher that is alive but
//! stalled (stopped, its disk hung: bytes wait unacknowledged for the
//! input's stall limit), so that auditd never waits for it. It shuts the
//! connection down *first* and only then removes bytes beyond the last
//! acknowledgement; from then on the kernel's peek offset no longer matches
//! this reader's idea of the stream offset, and a later peek would number
//! other bytes as the records it expects. So after every peek, and before
//! decoding or journaling what it returned, the reader checks the
//! connection without blocking ([`connection_quiet`]); if it ended, the
//! peeked bytes are dropped and the reader stops. A peek followed by a
//! check that finds the connection open happened before the input's
//! shutdown, hence before the input removed any unacknowledged byte, so its
//! offsets and numbers are right. (This needs no cooperation of the
//! scheduler: a reader stopped between the check and the journal write
//! journals, when it goes on, records the input also reads and numbers
//! alike.) Records journaled after the input took the stream back carry
//! the numbers the input gives the same records, and the input's ledger
//! drops whichever copy comes second: [`super::ingest::Ingest::connect`]
//! refuses a second connection of an input name while one is connected,
//! and this reader runs in its connection's thread, which marks the input
//! disconnected only after this loop returned; so the input's next
//! connection is accepted only once this reader journals no more, its
//! `WELCOME` counts what was journaled here (the input sends from the next
//! number), and anything sent again is dropped as already placed. A stop timed
//! to land between the check and the journal write cannot be produced by a
//! test without a hook in this loop; the argument above is why none is
//! needed.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::time::TimeSpec;

use super::ingest::{Incoming, SourceId, Submitted};
use super::inputs::InputContext;
use super::liveness::Heartbeat;
use crate::framing::{Coalescer, Decoder, InputFormat, Item};
use crate::protocol::{self, StreamAck};
use crate::uds;

/// Bytes peeked at a time.
const PEEK_CHUNK: usize = 256 << 10;

/// While bytes already journaled wait to be removed by the input, the
/// socket stays readable; the reader checks again this soon instead of
/// waiting for it (the input removes them within microseconds of the ack),
/// twice as late each time nothing changed, up to [`REMOVAL_CHECK_MAX`] (an
/// input that does not remove them costs little).
const REMOVAL_CHECK: Duration = Duration::from_micros(200);
/// The longest wait between two checks for removed bytes.
const REMOVAL_CHECK_MAX: Duration = Duration::from_millis(5);

/// An acknowledgement wakes the input, which removes the bytes it covers:
/// one per read would wake it every nap while records come. It is sent once
/// this many bytes are journaled and not yet acknowledged (auditd's socket
/// holds ~50 KB of string records), ...
const ACK_BYTES: u64 = 16 << 10;
/// ... once the last one is this old (far below any stall limit), and
/// always before the reader waits for more of the stream.
const ACK_TIME: Duration = Duration::from_millis(1);

/// Records decoded from one peek, their texts either in the peeked chunk or
/// copied (a record that began in an earlier peek).
#[derive(Default)]
struct Decoded {
    copied: Vec<u8>,
    /// (in the chunk, start, length) of each record.
    spans: Vec<(bool, usize, usize)>,
}

impl Decoded {
    fn push(&mut self, chunk: &[u8], text: &[u8]) {
        let base = chunk.as_ptr() as usize;
        let at = text.as_ptr() as usize;
        if at >= base && at + text.len() <= base + chunk.len() {
            self.spans.push((true, at - base, text.len()));
        } else {
            self.spans.push((false, self.copied.len(), text.len()));
            self.copied.extend_from_slice(text);
        }
    }

    /// The records as the input's, numbered from `first`.
    fn incoming<'a>(&'a self, chunk: &'a [u8], first: u64) -> Vec<Incoming<'a>> {
        self.spans
            .iter()
            .zip(first..)
            .map(|(&(in_chunk, at, len), seq)| Incoming {
                source_seq: seq,
                type_hint: None,
                origin: None,
                text: if in_chunk {
                    &chunk[at..at + len]
                } else {
                    &self.copied[at..at + len]
                },
            })
            .collect()
    }

    fn clear(&mut self) {
        self.copied.clear();
        self.spans.clear();
    }
}

/// Where the reader is: the input's last number given, what is journaled
/// and acknowledged.
struct Position {
    /// The sequence number of the last record numbered.
    seq: u64,
    /// The stream offset and sequence number journaled through, at a
    /// record's end: what the next acknowledgement says.
    acked: (u64, u64),
    /// What the last acknowledgement sent said, and when it was sent.
    sent: (u64, u64),
    sent_at: Instant,
}

/// Reads the stream `stream` of input `id` (`name`), whose next record is
/// number `next_seq`, until it ends or the dispatcher stops: Ok, the stream
/// is released and the connection goes on. Err: the connection or the
/// journal failed, or the input sent something while its stream is handed
/// over (the connection ends; the input reads on from what was
/// acknowledged).
#[allow(clippy::too_many_arguments)]
pub fn serve_stream(
    ctx: &InputContext,
    conn: &OwnedFd,
    id: SourceId,
    name: &str,
    stream: OwnedFd,
    next_seq: u64,
    buf: &mut [u8],
    hb: &Heartbeat,
) -> Result<(), String> {
    let mut pos = Position {
        seq: next_seq.saturating_sub(1),
        acked: (0, next_seq.saturating_sub(1)),
        sent: (0, next_seq.saturating_sub(1)),
        sent_at: Instant::now(),
    };
    let is_stream = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::SockType)
        .is_ok_and(|t| t == nix::sys::socket::SockType::Stream);
    if !is_stream {
        tracing::warn!(
            input = name,
            "input {name}: what it handed over is not a stream socket; handing it back"
        );
        return release(conn, &mut pos);
    }
    if let Err(e) = set_peek_offset(&stream, 0) {
        tracing::warn!(
            input = name,
            "input {name}: its stream cannot be peeked at ({e}); handing it back"
        );
        return release(conn, &mut pos);
    }
    tracing::info!(
        input = name,
        "input {name} handed over its stream; reading it from record {next_seq}"
    );
    let counters = ctx.ingest.counters(id);
    let mut decoder = Decoder::new(InputFormat::String);
    let mut coalescer = Coalescer::new();
    let mut chunk = vec![0u8; PEEK_CHUNK];
    let mut decoded = Decoded::default();
    // Bytes peeked since the hand-over.
    let mut peeked = 0u64;
    let mut patience = REMOVAL_CHECK;
    loop {
        hb.beat();
        if ctx.stopping.load(Ordering::Relaxed) {
            tracing::info!(
                input = name,
                "input {name}: stopping; handing its stream back"
            );
            return release(conn, &mut pos);
        }
        let n = match peek(&stream, &mut chunk) {
            Ok(Some(n)) => n,
            Ok(None) => {
                // The input removes what is journaled before the reader
                // sleeps.
                if pos.sent != pos.acked {
                    send(conn, &mut pos, false)?;
                }
                wait(ctx, conn, &stream, buf, &mut patience)?;
                continue;
            }
            Err(e) => {
                tracing::error!(input = name, "input {name}: reading its stream: {e}");
                return release(conn, &mut pos);
            }
        };
        // What was peeked is journaled only if the input has not taken the
        // stream back since (see the module docs).
        connection_quiet(conn, buf)?;
        patience = REMOVAL_CHECK;
        let got = &chunk[..n];
        if n == 0 {
            decoder.finish(&mut |item| take(item, got, &mut decoded, &counters));
        } else {
            decoder.feed(got, &mut |item| take(item, got, &mut decoded, &counters));
        }
        let writes = decoded.spans.len();
        journal(ctx, id, got, &mut decoded, &mut pos)?;
        peeked += n as u64;
        // Every record numbered ends before the resume offset (at the end
        // of the stream: every byte). An oversize line being skipped has no
        // place to resume from yet: acknowledge once it is over.
        let resume = if n == 0 {
            Some(peeked)
        } else {
            decoder.resume_offset()
        };
        if let Some(offset) = resume.filter(|&o| o > pos.acked.0 || n == 0) {
            pos.acked = (offset, pos.seq);
        }
        if n > 0
            && pos.acked != pos.sent
            && (pos.acked.0 - pos.sent.0 >= ACK_BYTES || pos.sent_at.elapsed() >= ACK_TIME)
        {
            send(conn, &mut pos, false)?;
        }
        if n == 0 {
            tracing::info!(
                input = name,
                "input {name}: its stream ended; handing it back"
            );
            return release(conn, &mut pos);
        }
        coalescer.after_read(n, writes);
    }
}

/// Takes one decoded item: records are kept for the journal, malformed
/// input is counted (and logged by the input when it reads itself).
fn take(
    item: Item<'_>,
    chunk: &[u8],
    decoded: &mut Decoded,
    counters: &super::stats::InputCounters,
) {
    match item {
        Item::Record { text, .. } => decoded.push(chunk, text),
        Item::Malformed(_) => super::stats::add(&counters.malformed, 1),
    }
}

/// Journals the records decoded (made durable first when acknowledgements
/// wait for it), numbering them on from `pos.seq`.
fn journal(
    ctx: &InputContext,
    id: SourceId,
    chunk: &[u8],
    decoded: &mut Decoded,
    pos: &mut Position,
) -> Result<(), String> {
    if decoded.spans.is_empty() {
        return Ok(());
    }
    let first = pos.seq + 1;
    let incoming = decoded.incoming(chunk, first);
    let last = first + incoming.len() as u64 - 1;
    let Submitted { pending, .. } = ctx.ingest.submit(id, &incoming, false);
    drop(incoming);
    decoded.clear();
    if pending {
        return Err("the journal cannot be written; the input reads its stream again".into());
    }
    // No sync before the acknowledgement, whatever `sync` says: this is
    // auditd's stream, which keeps nothing once a plugin has read it, so it
    // is as durable here as on standard input (synced every
    // `sync_interval`) or in the bridge's own buffer (synced every second).
    pos.seq = last;
    Ok(())
}

/// Waits for more of the stream or a stop request; Err when the input
/// closes the connection or sends anything (it has nothing to say while its
/// stream is handed over).
fn wait(
    ctx: &InputContext,
    conn: &OwnedFd,
    stream: &OwnedFd,
    buf: &mut [u8],
    patience: &mut Duration,
) -> Result<(), String> {
    // Bytes still in the socket that were peeked already keep it readable:
    // until the input has removed them, look again shortly.
    let removing = peek_offset(stream).map_err(|e| format!("SO_PEEK_OFF: {e}"))? > 0;
    let mut fds = [
        PollFd::new(conn.as_fd(), PollFlags::POLLIN),
        PollFd::new(ctx.stop_wake.fd(), PollFlags::POLLIN),
        PollFd::new(stream.as_fd(), PollFlags::POLLIN),
    ];
    let limit = if removing {
        let wait = *patience;
        *patience = (wait * 2).min(REMOVAL_CHECK_MAX);
        TimeSpec::from_duration(wait)
    } else {
        TimeSpec::from_duration(Duration::from_secs(1))
    };
    let nfds = if removing { 2 } else { 3 };
    match nix::poll::ppoll(&mut fds[..nfds], Some(limit), None) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(e) => return Err(format!("poll: {e}")),
    }
    if fds[0].revents().is_none_or(|r| r.is_empty()) {
        return Ok(());
    }
    connection_quiet(conn, buf)
}

/// Ok while the input's connection is open and the input silent, as it is
/// while its stream is handed over; Err when it ended or the input sent
/// anything. One `recv` that does not block: it sees the end of the
/// connection (an input shuts it down before it reads the stream itself)
/// and takes any message in one call.
fn connection_quiet(conn: &OwnedFd, buf: &mut [u8]) -> Result<(), String> {
    match uds::recv_message(conn, buf) {
        Ok(Some(0)) => Err("the input closed the connection".into()),
        Ok(Some(n)) => Err(format!(
            "a message (kind 0x{:02x}) while its stream is handed over",
            buf[..n].first().copied().unwrap_or(0)
        )),
        Ok(None) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Acknowledges what is journaled (`pos.acked`).
fn send(conn: &OwnedFd, pos: &mut Position, released: bool) -> Result<(), String> {
    let ack = StreamAck {
        offset: pos.acked.0,
        seq: pos.acked.1,
        released,
    };
    uds::send_within(
        conn,
        &protocol::encode_stream_ack(&ack),
        Duration::from_secs(10),
    )
    .map_err(|e| e.to_string())?;
    pos.sent = pos.acked;
    pos.sent_at = Instant::now();
    Ok(())
}

/// Hands the stream back: the input reads on from the last acknowledged
/// byte (records numbered but not acknowledged come again and are dropped
/// as stored).
fn release(conn: &OwnedFd, pos: &mut Position) -> Result<(), String> {
    send(conn, pos, true)
}

/// Peeks at what follows the peek offset: Some(0) at the end of the
/// stream, None when nothing more is there yet.
fn peek(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    uds::recv_nowait(fd, buf, libc::MSG_PEEK)
}

fn set_peek_offset(fd: &OwnedFd, off: i32) -> io::Result<()> {
    // SAFETY: setsockopt reads an int from `off`.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEEK_OFF,
            (&off as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn peek_offset(fd: &OwnedFd) -> io::Result<i32> {
    let mut off: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `off`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEEK_OFF,
            (&mut off as *mut i32).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(off)
}
