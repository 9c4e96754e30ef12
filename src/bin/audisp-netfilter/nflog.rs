//! The kernel's packet log (`nfnetlink_log`, `NETLINK_NETFILTER`): binding
//! log groups and reading the packets logged to them.
//!
//! Messages are built and parsed with `netlink-packet-netfilter` (the
//! rust-netlink project's typed NFLOG messages, released and maintained with
//! `netlink-packet-core`; `neli` only has the NFLOG constants, and a parser
//! of our own was not wanted). Two values it parses but does not expose — the
//! hook in the packet header and the kernel's time stamp — are read back
//! from their wire form through the crate's public `Nla::emit_value`.
//! The socket itself comes from `nix`.
//!
//! How each group is set up, so that a flood stays bounded and is counted:
//!
//! * copy mode `packet` with a copy range of `--copy-range` bytes (default
//!   256): enough for an IPv6 header with extension headers and the ports,
//!   never the whole packet;
//! * the kernel batches up to `--queue-threshold` packets (default 64) in one
//!   message of at most 128 KiB, flushed after at most 20 ms: far fewer
//!   messages under load, little delay when idle;
//! * `NFULNL_CFG_F_SEQ`: the kernel numbers each group's packets, so packets
//!   it could not hand us (our socket buffer full: `ENOBUFS`) show up as gaps
//!   and are counted exactly, once a later packet arrives;
//! * the socket's receive buffer is forced to 32 MiB (`SO_RCVBUFFORCE`, which
//!   `CAP_NET_ADMIN` allows), so that a burst waits in the kernel, not lost.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, Nla, NLMSG_ALIGNTO};
use netlink_packet_netfilter::nflog::{
    config_request, ConfigCmd, ConfigFlags, ConfigMode, ConfigNla, PacketNla, Timeout, ULogMessage,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

use crate::record::Packet;

/// Bytes the kernel may put in one batch message.
const BATCH_BUFFER: u32 = 128 << 10;
/// Longest the kernel holds a batch that is not full, in 1/100 s.
const FLUSH_HUNDREDTHS: u32 = 2;
/// Receive buffer asked for.
const RECEIVE_BUFFER: usize = 32 << 20;
/// How long the kernel may take to answer a configuration request.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// How groups are set up.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// Bytes of each packet copied (from the network header on).
    pub copy_range: u32,
    /// Packets the kernel batches before sending.
    pub queue_threshold: u32,
}

/// What one receive brought.
pub enum Received {
    /// Messages were read; packets went to the callback.
    Read,
    /// Nothing waiting.
    Empty,
    /// The socket's buffer overflowed: the kernel dropped messages for us
    /// (the sequence gaps say how many packets).
    Overflow,
}

/// A netfilter log socket bound to some groups.
pub struct NflogSocket {
    fd: OwnedFd,
    seq: u32,
    /// The next sequence number expected per group.
    expected: HashMap<u16, u32>,
    /// Packets the kernel numbered but never delivered.
    pub missed: u64,
    buf: Vec<u8>,
}

impl NflogSocket {
    /// Opens the socket and binds `groups`. Needs `CAP_NET_ADMIN`.
    pub fn bind(groups: &[u16], setup: Setup) -> Result<(NflogSocket, usize), String> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(|e| format!("cannot open a netfilter netlink socket: {e}"))?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))
            .map_err(|e| format!("cannot bind the netfilter netlink socket: {e}"))?;
        if socket::setsockopt(&fd, socket::sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
            let _ = socket::setsockopt(&fd, socket::sockopt::RcvBuf, &RECEIVE_BUFFER);
        }
        let granted = socket::getsockopt(&fd, socket::sockopt::RcvBuf).unwrap_or(0);
        let mut s = NflogSocket {
            fd,
            seq: 0,
            expected: HashMap::new(),
            missed: 0,
            buf: vec![0u8; 2 * BATCH_BUFFER as usize],
        };
        for &group in groups {
            s.configure(
                group,
                vec![
                    ConfigNla::Cmd(ConfigCmd::Bind),
                    ConfigNla::Mode(ConfigMode::new_packet(setup.copy_range)),
                    ConfigNla::NlBufSiz(BATCH_BUFFER),
                    ConfigNla::QThresh(setup.queue_threshold),
                    ConfigNla::Timeout(Timeout::new(FLUSH_HUNDREDTHS)),
                    ConfigNla::Flags(ConfigFlags::SEQ),
                ],
            )
            .map_err(|e| match e {
                Errno::EBUSY => format!(
                    "log group {group} is already taken by another program (one reader per \
                     group and network namespace)"
                ),
                Errno::EPERM => {
                    format!(
                        "cannot bind log group {group}: permission denied (it needs CAP_NET_ADMIN)"
                    )
                }
                e => format!("cannot bind log group {group}: {e}"),
            })?;
        }
        Ok((s, granted))
    }

    /// The descriptor, to poll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Sends a configuration request for `group` and waits for the ack.
    fn configure(&mut self, group: u16, nlas: Vec<ConfigNla>) -> Result<(), Errno> {
        let mut msg = config_request(NetfilterProtoFamily::Unspec, group, nlas);
        self.seq += 1;
        msg.header.sequence_number = self.seq;
        let mut bytes = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut bytes);
        socket::sendto(
            self.fd.as_raw_fd(),
            &bytes,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let n = match socket::recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Errno::ETIMEDOUT);
                    }
                    let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
                    let _ = nix::poll::poll(
                        &mut fds,
                        PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
                    );
                    continue;
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
            };
            let Ok(reply) = NetlinkMessage::<NetfilterMessage>::deserialize(&self.buf[..n]) else {
                continue;
            };
            if reply.header.sequence_number != self.seq {
                continue;
            }
            if let NetlinkPayload::Error(e) = reply.payload {
                return match e.code {
                    None => Ok(()),
                    Some(c) => Err(Errno::from_raw(-c.get())),
                };
            }
        }
    }

    /// Reads one datagram (a batch of packets) without waiting; hands each
    /// packet to `on_packet`.
    pub fn recv(
        &mut self,
        names: &mut dyn FnMut(u32) -> Option<Vec<u8>>,
        on_packet: &mut dyn FnMut(Packet),
    ) -> Result<Received, String> {
        let n = loop {
            match socket::recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => break n,
                Err(Errno::EAGAIN) => return Ok(Received::Empty),
                Err(Errno::EINTR) => continue,
                Err(Errno::ENOBUFS) => return Ok(Received::Overflow),
                Err(e) => return Err(format!("receiving from the kernel: {e}")),
            }
        };
        let mut at = 0;
        while at + 16 <= n {
            let msg = match NetlinkMessage::<NetfilterMessage>::deserialize(&self.buf[at..n]) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(
                        message_id = audisp::log_ids::INPUT_MALFORMED,
                        "a netfilter message the parser refused ({e}); the rest of its batch is skipped"
                    );
                    break;
                }
            };
            let len = msg.header.length as usize;
            if let NetlinkPayload::InnerMessage(NetfilterMessage {
                header,
                inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
                ..
            }) = msg.payload
            {
                let (packet, seq) = packet(header.res_id, nlas, names);
                if let Some(seq) = seq {
                    self.count(header.res_id, seq);
                }
                on_packet(packet);
            }
            if len == 0 {
                break;
            }
            let align = usize::from(NLMSG_ALIGNTO);
            at += len.div_ceil(align) * align;
        }
        Ok(Received::Read)
    }

    /// Counts the packets between the last sequence number seen in `group`
    /// and `seq` as missed.
    fn count(&mut self, group: u16, seq: u32) {
        if let Some(want) = self.expected.get(&group) {
            self.missed += u64::from(seq.wrapping_sub(*want));
        } else if seq != 0 {
            // The kernel numbers from 0 when the group is bound.
            self.missed += u64::from(seq);
        }
        self.expected.insert(group, seq.wrapping_add(1));
    }
}

/// Gathers a packet's attributes; returns it with its sequence number.
fn packet(
    group: u16,
    nlas: Vec<PacketNla>,
    names: &mut dyn FnMut(u32) -> Option<Vec<u8>>,
) -> (Packet, Option<u32>) {
    let mut p = Packet {
        group,
        ..Packet::default()
    };
    let mut seq = None;
    for nla in nlas {
        match nla {
            PacketNla::PacketHdr(h) => {
                // struct nfulnl_msg_packet_hdr: hw_protocol (be16), hook, pad.
                let mut b = [0u8; 4];
                h.emit_value(&mut b);
                p.hw_protocol = u16::from_be_bytes([b[0], b[1]]);
                p.hook = b[2];
            }
            PacketNla::Timestamp(t) => {
                // struct nfulnl_msg_packet_timestamp: sec, usec (be64).
                let mut b = [0u8; 16];
                t.emit_value(&mut b);
                let word = |r: std::ops::Range<usize>| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(&b[r]);
                    u64::from_be_bytes(w)
                };
                p.timestamp = Some((word(0..8), word(8..16)));
            }
            PacketNla::Mark(m) => p.mark = m,
            PacketNla::IfIndexInDev(i) => p.iif = names(i),
            PacketNla::IfIndexOutDev(i) => p.oif = names(i),
            PacketNla::Uid(u) => p.uid = Some(u),
            PacketNla::Gid(g) => p.gid = Some(g),
            PacketNla::Prefix(s) => p.prefix = Some(s.into_bytes()),
            PacketNla::Payload(b) => p.payload = b,
            PacketNla::Seq(s) => seq = Some(s),
            _ => {}
        }
    }
    (p, seq)
}
