//! The kernel's audit netlink socket (`NETLINK_AUDIT`): the read-only
//! multicast group every record is copied to, the unicast stream of the
//! registered audit daemon, and the two requests this program makes
//! (`AUDIT_GET` for the status and its counters, `AUDIT_SET` to register or
//! unregister as the daemon and to switch auditing on).
//!
//! Sockets come from `nix`; netlink headers are read and written with
//! `netlink-packet-core`'s buffers. The audit protocol itself has no
//! attributes to parse: a record is text after the header and the status is
//! one fixed C struct (`struct audit_status`), read here field by field. (The
//! `netlink-packet-audit` crate would decode records into `String`, failing
//! on the non-UTF-8 bytes the kernel passes through verbatim in user
//! messages, and pulls in an async runtime's codec; it was not worth that.)
//!
//! One kernel quirk matters: records sent to the registered daemon carry the
//! payload's length in `nlmsg_len`, not the message's, while multicast copies
//! carry the message's. Every record is a datagram of its own, so the payload
//! is simply what follows the header in the datagram.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use netlink_packet_core::{ErrorBuffer, NetlinkBuffer, NLMSG_ERROR, NLM_F_ACK, NLM_F_REQUEST};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

/// Length of `struct nlmsghdr`.
const HEADER: usize = 16;
/// `AUDIT_GET`: ask for the status.
const AUDIT_GET: u16 = 1000;
/// `AUDIT_SET`: change the fields the mask names.
const AUDIT_SET: u16 = 1001;
/// `AUDIT_NLGRP_READLOG`: the read-only multicast group.
const NLGRP_READLOG: u32 = 1;
/// How long the kernel may take to answer a request.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// `AUDIT_STATUS_*` mask bits for `AUDIT_SET`.
pub mod mask {
    /// `enabled`.
    pub const ENABLED: u32 = 0x1;
    /// `pid`.
    pub const PID: u32 = 0x4;
}

/// The kernel's audit status (`struct audit_status`, as `auditctl -s` shows it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    /// Which fields an `AUDIT_SET` changes.
    pub mask: u32,
    /// 0 off, 1 on, 2 on and locked.
    pub enabled: u32,
    /// What the kernel does when it must lose records (0 silent, 1 printk, 2 panic).
    pub failure: u32,
    /// The registered audit daemon, 0 when none.
    pub pid: u32,
    /// Records per second allowed (0: no limit).
    pub rate_limit: u32,
    /// Records the kernel may queue for the daemon.
    pub backlog_limit: u32,
    /// Records lost since boot.
    pub lost: u32,
    /// Records queued now.
    pub backlog: u32,
}

impl Status {
    /// The struct as the kernel reads it (11 native-endian words; older
    /// kernels read only the first ones).
    fn encode(&self) -> [u8; 44] {
        let mut b = [0u8; 44];
        let words = [
            self.mask,
            self.enabled,
            self.failure,
            self.pid,
            self.rate_limit,
            self.backlog_limit,
            self.lost,
            self.backlog,
        ];
        for (i, w) in words.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        b
    }

    /// Reads the struct from an `AUDIT_GET` reply.
    fn decode(b: &[u8]) -> Option<Status> {
        let word = |i: usize| {
            b.get(i * 4..i * 4 + 4)
                .map(|w| u32::from_ne_bytes([w[0], w[1], w[2], w[3]]))
        };
        Some(Status {
            mask: word(0)?,
            enabled: word(1)?,
            failure: word(2)?,
            pid: word(3)?,
            rate_limit: word(4)?,
            backlog_limit: word(5)?,
            lost: word(6)?,
            backlog: word(7)?,
        })
    }
}

/// What one receive brought.
pub enum Received<'a> {
    /// A message: its type and payload.
    Message(u16, &'a [u8]),
    /// Nothing waiting.
    Empty,
    /// The socket's buffer overflowed: the kernel dropped records for us.
    Overflow,
}

/// An audit netlink socket.
pub struct AuditSocket {
    fd: OwnedFd,
    seq: u32,
}

impl AuditSocket {
    /// A socket in the read-only multicast group: a copy of every record,
    /// beside whatever daemon is registered. Needs `CAP_AUDIT_READ`.
    pub fn multicast() -> Result<AuditSocket, String> {
        Self::open(1 << (NLGRP_READLOG - 1)).map_err(|e| match e {
            Errno::EPERM => "cannot join the kernel's audit multicast group: permission denied \
                             (it needs CAP_AUDIT_READ in the initial user namespace)"
                .to_string(),
            e => format!("cannot join the kernel's audit multicast group: {e}"),
        })
    }

    /// A plain socket: for requests, and for the daemon's record stream once
    /// it registered with [`AuditSocket::set_status`].
    pub fn unicast() -> Result<AuditSocket, String> {
        Self::open(0).map_err(|e| format!("cannot open a kernel audit socket: {e}"))
    }

    fn open(groups: u32) -> Result<AuditSocket, Errno> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkAudit,
        )?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
        Ok(AuditSocket { fd, seq: 0 })
    }

    /// Asks for a receive buffer of `bytes` (the kernel caps it at
    /// `net.core.rmem_max`); returns the size granted.
    pub fn set_receive_buffer(&self, bytes: usize) -> usize {
        let _ = socket::setsockopt(&self.fd, socket::sockopt::RcvBuf, &bytes);
        socket::getsockopt(&self.fd, socket::sockopt::RcvBuf).unwrap_or(0)
    }

    /// The descriptor, to poll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Receives one message into `buf` without waiting.
    pub fn recv<'b>(&self, buf: &'b mut [u8]) -> Result<Received<'b>, String> {
        loop {
            match socket::recv(self.fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) if n >= HEADER => {
                    let rtype = NetlinkBuffer::new(&buf[..n]).message_type();
                    return Ok(Received::Message(rtype, &buf[HEADER..n]));
                }
                // A runt datagram: nothing a record could be.
                Ok(_) => continue,
                Err(Errno::EAGAIN) => return Ok(Received::Empty),
                Err(Errno::EINTR) => continue,
                Err(Errno::ENOBUFS) => return Ok(Received::Overflow),
                Err(e) => return Err(format!("receiving from the kernel: {e}")),
            }
        }
    }

    /// The kernel's audit status. Needs `CAP_AUDIT_CONTROL`.
    pub fn status(&mut self) -> Result<Status, String> {
        // The kernel sends the status from a thread of its own, possibly
        // after the acknowledgement; so no acknowledgement is asked for and
        // the wait ends with the status (or an error, which always comes).
        let seq = self.send(AUDIT_GET, &[], false)?;
        let mut got = None;
        self.wait_reply(seq, &mut |rtype, payload| {
            if rtype == AUDIT_GET {
                got = Status::decode(payload);
            }
            got.is_some()
        })?;
        got.ok_or_else(|| "the kernel sent no audit status".to_string())
    }

    /// Changes the status fields `status.mask` names and waits for the
    /// kernel's answer. Records that arrive meanwhile (on the daemon's own
    /// socket) go to `on_record`. Needs `CAP_AUDIT_CONTROL`.
    pub fn set_status(
        &mut self,
        status: &Status,
        on_record: &mut dyn FnMut(u16, &[u8]),
    ) -> Result<(), String> {
        let seq = self.send(AUDIT_SET, &status.encode(), true)?;
        self.wait_reply(seq, &mut |rtype, payload| {
            on_record(rtype, payload);
            false
        })
    }

    /// Sends a request, asking for an acknowledgement if `ack`; returns its
    /// number.
    fn send(&mut self, rtype: u16, payload: &[u8], ack: bool) -> Result<u32, String> {
        self.seq = self.seq.wrapping_add(1);
        let mut msg = vec![0u8; HEADER + payload.len()];
        {
            let mut b = NetlinkBuffer::new(&mut msg[..]);
            b.set_length((HEADER + payload.len()) as u32);
            b.set_message_type(rtype);
            b.set_flags(if ack {
                NLM_F_REQUEST | NLM_F_ACK
            } else {
                NLM_F_REQUEST
            });
            b.set_sequence_number(self.seq);
            b.set_port_number(0);
        }
        msg[HEADER..].copy_from_slice(payload);
        let to = NetlinkAddr::new(0, 0);
        socket::sendto(self.fd.as_raw_fd(), &msg, &to, MsgFlags::empty())
            .map_err(|e| format!("sending a request to the kernel: {e}"))?;
        Ok(self.seq)
    }

    /// Waits for the acknowledgement (or error) of request `seq`, handing
    /// every other message (a reply to it, or a record) to `other`, which
    /// may end the wait by returning true.
    fn wait_reply(
        &self,
        seq: u32,
        other: &mut dyn FnMut(u16, &[u8]) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let n = match socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err("the kernel did not answer an audit request".into());
                    }
                    let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
                    let _ = nix::poll::poll(
                        &mut fds,
                        PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
                    );
                    continue;
                }
                Err(Errno::EINTR) | Err(Errno::ENOBUFS) => continue,
                Err(e) => return Err(format!("receiving from the kernel: {e}")),
            };
            if n < HEADER {
                continue;
            }
            let msg = NetlinkBuffer::new(&buf[..n]);
            let (rtype, this_seq) = (msg.message_type(), msg.sequence_number());
            if rtype == NLMSG_ERROR && this_seq == seq {
                let code = ErrorBuffer::new_checked(&buf[HEADER..n])
                    .map_err(|e| format!("a bad answer from the kernel: {e}"))?
                    .code();
                return match code {
                    None => Ok(()),
                    Some(c) => Err(Errno::from_raw(-c.get()).desc().to_string()),
                };
            }
            if other(rtype, &buf[HEADER..n]) {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_struct_round_trips_in_kernel_layout() {
        let s = Status {
            mask: mask::PID,
            enabled: 1,
            failure: 1,
            pid: 4242,
            rate_limit: 0,
            backlog_limit: 8192,
            lost: 7,
            backlog: 3,
        };
        let b = s.encode();
        assert_eq!(&b[12..16], &4242u32.to_ne_bytes(), "pid is the fourth word");
        assert_eq!(&b[24..28], &7u32.to_ne_bytes(), "lost is the seventh word");
        assert_eq!(Status::decode(&b), Some(s));
        assert_eq!(Status::decode(&b[..31]), None, "a short reply is refused");
    }
}
