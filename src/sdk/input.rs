//! Input plugins: feed records into the dispatcher.
//!
//! An input numbers its records from 1 within an *epoch* (16 bytes of its
//! choosing, kept as long as it keeps its numbering, e.g. stored with its
//! spool). The dispatcher tells it at connect time which number it already
//! has, acknowledges batches as they become durable, and drops anything
//! resent; so an input that keeps every record until acknowledged and
//! resends after reconnecting delivers each record exactly once.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket;

use super::plugin::{handshake, recv_wait, send_blocking};
use super::Error;
use crate::protocol::{
    self, FromDispatcher, Hello, InputRecord, Origin, RecordsBuilder, StreamAck,
};
use crate::uds;

/// A connection to the dispatcher's input socket.
pub struct InputClient {
    conn: OwnedFd,
    builder: RecordsBuilder,
    acked: u64,
    journal: [u8; 16],
    buf: Vec<u8>,
    /// The dispatcher takes the input's stream ([`InputClient::hand_over`]).
    takes_stream: bool,
}

impl InputClient {
    /// Connects to the input socket at `path` as input `name` with `epoch`.
    /// Returns the client and the highest sequence number the dispatcher
    /// already stored for this name and epoch (send what follows it).
    pub fn connect(path: &Path, name: &str, epoch: [u8; 16]) -> Result<(InputClient, u64), Error> {
        InputClient::open(path, &Hello::input(name, epoch))
    }

    /// [`InputClient::connect`] for an input whose records originated on
    /// other hosts (a receiver of forwarded records): plugins that forward
    /// only this host's records (audisp-remote) leave them out, so that
    /// forwarding never loops. It offers records' first origins
    /// ([`InputClient::send_with_origin`]), the dispatcher's loop guard.
    pub fn connect_relayed(
        path: &Path,
        name: &str,
        epoch: [u8; 16],
    ) -> Result<(InputClient, u64), Error> {
        InputClient::open(
            path,
            &Hello {
                relayed: true,
                origin: true,
                ..Hello::input(name, epoch)
            },
        )
    }

    /// [`InputClient::connect`] for an input that reads a stream socket
    /// (auditd's) and offers to hand it over: a dispatcher that takes it
    /// says so ([`InputClient::takes_stream`]).
    pub fn connect_stream(
        path: &Path,
        name: &str,
        epoch: [u8; 16],
    ) -> Result<(InputClient, u64), Error> {
        InputClient::open(
            path,
            &Hello {
                stream: true,
                ..Hello::input(name, epoch)
            },
        )
    }

    fn open(path: &Path, hello: &Hello) -> Result<(InputClient, u64), Error> {
        let fd = uds::connect(path, socket::SockType::SeqPacket)
            .map_err(|e| Error::Connection(e.to_string()))?;
        let mut buf = vec![0u8; protocol::MAX_MESSAGE];
        let welcome = handshake(&fd, hello, &mut buf)?.ok_or_else(|| {
            Error::Connection("the dispatcher closed the connection instead of a WELCOME".into())
        })?;
        let max = (welcome.max_message as usize).clamp(4096, protocol::MAX_MESSAGE);
        Ok((
            InputClient {
                conn: fd,
                builder: if welcome.origin {
                    RecordsBuilder::input_origin(max)
                } else {
                    RecordsBuilder::input(max)
                },
                acked: welcome.start_after,
                journal: welcome.journal_id.unwrap_or([0; 16]),
                buf,
                takes_stream: welcome.stream,
            },
            welcome.start_after,
        ))
    }

    /// The dispatcher's journal id.
    pub fn journal_id(&self) -> [u8; 16] {
        self.journal
    }

    /// Whether the dispatcher takes the input's stream.
    pub fn takes_stream(&self) -> bool {
        self.takes_stream
    }

    /// Hands the dispatcher `stream` (a `format = string` stream socket),
    /// positioned at a record's start, whose next record is number
    /// `next_seq`: every record before it must be acknowledged. The
    /// dispatcher then reads it, peeking only, and says with
    /// [`InputClient::wait_stream_ack`] which bytes the input may remove.
    pub fn hand_over(&mut self, stream: BorrowedFd<'_>, next_seq: u64) -> Result<(), Error> {
        uds::send_with_fd(
            &self.conn,
            &protocol::encode_stream(next_seq),
            stream,
            Duration::from_secs(10),
        )
        .map_err(|e| Error::Connection(format!("handing over the stream: {e}")))
    }

    /// Ends the connection in both directions at once (the descriptor stays
    /// open): a dispatcher reading the handed-over stream sees it ended
    /// before it journals anything it peeks next, so the input may read the
    /// stream itself from the last acknowledged byte. Acknowledgements the
    /// dispatcher sent before can still be received.
    pub fn shut_down(&self) -> Result<(), Error> {
        socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&self.conn),
            socket::Shutdown::Both,
        )
        .map_err(|e| Error::Connection(format!("shutdown: {e}")))
    }

    /// Waits up to `limit` for the dispatcher's word on a handed-over
    /// stream (None: nothing yet).
    pub fn wait_stream_ack(&mut self, limit: Duration) -> Result<Option<StreamAck>, Error> {
        match recv_wait(&self.conn, &mut self.buf, limit)? {
            None => Ok(None),
            Some(0) => Err(Error::Connection(
                "the dispatcher closed the connection".into(),
            )),
            Some(n) => match protocol::decode_from_dispatcher(&self.buf[..n]) {
                Ok(FromDispatcher::StreamAck(a)) => {
                    self.acked = self.acked.max(a.seq);
                    Ok(Some(a))
                }
                Ok(FromDispatcher::Reject(why)) => Err(Error::Rejected(why)),
                Ok(_) => Ok(None),
                Err(e) => Err(Error::Connection(format!("protocol error: {e}"))),
            },
        }
    }

    /// [`InputClient::wait_stream_ack`] that also ends (None) as soon as
    /// `stream`, the stream handed over, is readable: an input whose stream
    /// is empty sleeps until bytes come instead of checking it every few
    /// milliseconds.
    pub fn wait_stream_ack_or_input(
        &mut self,
        stream: BorrowedFd<'_>,
        limit: Duration,
    ) -> Result<Option<StreamAck>, Error> {
        use std::os::fd::AsFd;
        let mut fds = [
            PollFd::new(self.conn.as_fd(), PollFlags::POLLIN),
            PollFd::new(stream, PollFlags::POLLIN),
        ];
        let ms = i32::try_from(limit.as_millis()).unwrap_or(i32::MAX);
        match nix::poll::poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::Connection(format!("poll: {e}"))),
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            return self.wait_stream_ack(Duration::ZERO);
        }
        Ok(None)
    }

    /// Highest sequence number acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Sends records (`source_seq`, type if known or 0, text), batched into
    /// as few messages as fit. Records must be numbered in increasing order.
    pub fn send<'a>(
        &mut self,
        records: impl IntoIterator<Item = (u64, u32, &'a [u8])>,
    ) -> Result<(), Error> {
        self.send_with_origin(records.into_iter().map(|(s, t, x)| (s, t, x, None)))
    }

    /// [`InputClient::send`] with each record's first origin, where known
    /// (records forwarded from a dispatcher). A dispatcher that did not
    /// grant `origin` (older versions) gets the records without it.
    pub fn send_with_origin<'a>(
        &mut self,
        records: impl IntoIterator<Item = (u64, u32, &'a [u8], Option<Origin>)>,
    ) -> Result<(), Error> {
        self.builder.clear();
        for (source_seq, rtype, text, origin) in records {
            let r = InputRecord {
                source_seq,
                rtype,
                text,
                origin,
            };
            if !self.builder.push_input(&r) {
                if self.builder.is_empty() {
                    return Err(Error::Setup(format!(
                        "record {source_seq} is {} bytes, larger than a message",
                        text.len()
                    )));
                }
                send_blocking(&self.conn, self.builder.message())?;
                self.builder.clear();
                if !self.builder.push_input(&r) {
                    return Err(Error::Setup(format!("record {source_seq} is too large")));
                }
            }
        }
        if !self.builder.is_empty() {
            send_blocking(&self.conn, self.builder.message())?;
        }
        Ok(())
    }

    /// Waits up to `limit` for acknowledgements; returns the highest
    /// acknowledged sequence number.
    pub fn wait_ack(&mut self, limit: Duration) -> Result<u64, Error> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let got = recv_wait(&self.conn, &mut self.buf, left)?;
            match got {
                None => return Ok(self.acked),
                Some(0) => {
                    return Err(Error::Connection(
                        "the dispatcher closed the connection".into(),
                    ))
                }
                Some(n) => match protocol::decode_from_dispatcher(&self.buf[..n]) {
                    Ok(FromDispatcher::InputAck(s)) => {
                        self.acked = self.acked.max(s);
                        return Ok(self.acked);
                    }
                    Ok(FromDispatcher::Reject(why)) => return Err(Error::Rejected(why)),
                    Ok(_) => {}
                    Err(e) => return Err(Error::Connection(format!("protocol error: {e}"))),
                },
            }
            if left.is_zero() {
                return Ok(self.acked);
            }
        }
    }

    /// Sends and waits until everything up to `last` is acknowledged.
    pub fn wait_acked(&mut self, last: u64, limit: Duration) -> Result<(), Error> {
        let deadline = std::time::Instant::now() + limit;
        while self.acked < last {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(Error::Connection(format!(
                    "records up to {last} not acknowledged within {limit:?} (acknowledged: {})",
                    self.acked
                )));
            }
            self.wait_ack(left)?;
        }
        Ok(())
    }
}
