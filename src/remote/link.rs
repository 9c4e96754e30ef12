//! A non-blocking byte pipe to the aggregator, plain TCP or TLS, driven by
//! `poll(2)`: the sender queues bytes, writes when the socket takes them and
//! reads replies as they come, on one thread, so many records can be in
//! flight while acknowledgements arrive.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use rustls::ClientConnection;

/// The connection.
pub enum Link {
    /// Plain TCP with our own output buffer.
    Plain {
        /// The socket (non-blocking).
        sock: TcpStream,
        /// Bytes queued, not yet written.
        out: Vec<u8>,
    },
    /// TLS: rustls buffers the output.
    Tls {
        /// TLS state.
        conn: Box<ClientConnection>,
        /// The socket (non-blocking).
        sock: TcpStream,
    },
}

impl Link {
    /// Wraps a connected socket (handshake, if any, already done).
    pub fn plain(sock: TcpStream) -> io::Result<Link> {
        sock.set_nonblocking(true)?;
        Ok(Link::Plain {
            sock,
            out: Vec::new(),
        })
    }

    /// Wraps a TLS stream whose handshake is done.
    pub fn tls(stream: super::tls::ClientStream) -> io::Result<Link> {
        let (conn, sock) = stream.into_parts();
        sock.set_nonblocking(true)?;
        Ok(Link::Tls {
            conn: Box::new(conn),
            sock,
        })
    }

    /// Queues bytes to send.
    pub fn queue(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Link::Plain { out, .. } => {
                out.extend_from_slice(bytes);
                Ok(())
            }
            Link::Tls { conn, .. } => conn.writer().write_all(bytes),
        }
    }

    /// Bytes queued and not yet handed to the kernel.
    pub fn pending(&self) -> bool {
        match self {
            Link::Plain { out, .. } => !out.is_empty(),
            Link::Tls { conn, .. } => conn.wants_write(),
        }
    }

    fn sock(&self) -> &TcpStream {
        match self {
            Link::Plain { sock, .. } | Link::Tls { sock, .. } => sock,
        }
    }

    /// Writes as much as the socket takes now.
    pub fn flush_some(&mut self) -> io::Result<()> {
        match self {
            Link::Plain { sock, out } => {
                while !out.is_empty() {
                    match sock.write(out) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => {
                            out.drain(..n);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Link::Tls { conn, sock } => {
                while conn.wants_write() {
                    match conn.write_tls(sock) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
        }
    }

    /// Reads what has arrived into `into`. `Ok(false)`: the peer closed.
    pub fn read_some(&mut self, into: &mut Vec<u8>) -> io::Result<bool> {
        let mut chunk = [0u8; 16 << 10];
        match self {
            Link::Plain { sock, .. } => loop {
                match sock.read(&mut chunk) {
                    Ok(0) => return Ok(false),
                    Ok(n) => into.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            },
            Link::Tls { conn, sock } => {
                let mut open = true;
                loop {
                    match conn.read_tls(sock) {
                        Ok(0) => {
                            open = false;
                            break;
                        }
                        Ok(_) => {
                            conn.process_new_packets().map_err(|e| {
                                io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
                            })?;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                loop {
                    match conn.reader().read(&mut chunk) {
                        Ok(0) => return Ok(false),
                        Ok(n) => into.extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(open),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// Waits up to `limit` for the socket to be readable (or writable when
    /// output is pending) or for `extra` to be readable. Returns whether
    /// `extra` fired.
    pub fn wait(
        &self,
        extra: Option<std::os::fd::BorrowedFd<'_>>,
        limit: Duration,
    ) -> io::Result<bool> {
        let mut flags = PollFlags::POLLIN;
        if self.pending() {
            flags |= PollFlags::POLLOUT;
        }
        let mut fds = vec![PollFd::new(self.sock().as_fd(), flags)];
        if let Some(e) = extra {
            fds.push(PollFd::new(e, PollFlags::POLLIN));
        }
        let ms = limit.as_millis().min(i32::MAX as u128) as i32;
        match nix::poll::poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(fds
            .get(1)
            .and_then(|f| f.revents())
            .is_some_and(|r| r.intersects(PollFlags::POLLIN)))
    }
}
