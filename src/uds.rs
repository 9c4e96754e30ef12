//! `AF_UNIX` socket plumbing shared by the engine and the SDK: connecting,
//! listening with exact permissions, and sending and receiving whole
//! messages without blocking.
//!
//! Every descriptor is created close-on-exec. Sends never raise SIGPIPE.
//! [`recv_message`] refuses a `SOCK_SEQPACKET` message larger than the
//! buffer instead of silently cutting it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, MsgFlags, SockType};

fn with_path(e: impl Into<io::Error>, what: &str, path: &Path) -> io::Error {
    let e: io::Error = e.into();
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Connects to the socket at `path`.
pub fn connect(path: &Path, ty: SockType) -> io::Result<OwnedFd> {
    let fd = socket::socket(
        socket::AddressFamily::Unix,
        ty,
        socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = socket::UnixAddr::new(path).map_err(|e| with_path(e, "address", path))?;
    socket::connect(fd.as_raw_fd(), &addr).map_err(|e| with_path(e, "connect", path))?;
    Ok(fd)
}

/// Creates a listening socket at `path` with exactly `mode`, replacing a
/// stale socket file (never another kind of file).
pub fn listen(path: &Path, ty: SockType, mode: u32, backlog: i32) -> io::Result<OwnedFd> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| with_path(e, "create", dir))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|e| with_path(e, "remove stale socket", path))?
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                ),
            ))
        }
        Err(_) => {}
    }
    let fd = socket::socket(
        socket::AddressFamily::Unix,
        ty,
        socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = socket::UnixAddr::new(path).map_err(|e| with_path(e, "address", path))?;
    // Bind under a tight umask, then open up to exactly `mode`: the socket
    // is never reachable by more peers than configured.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = socket::bind(fd.as_raw_fd(), &addr);
    nix::sys::stat::umask(old);
    bound.map_err(|e| with_path(e, "bind", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| with_path(e, "chmod", path))?;
    socket::listen(
        &fd,
        socket::Backlog::new(backlog).unwrap_or(socket::Backlog::MAXCONN),
    )?;
    Ok(fd)
}

/// Accepts a connection, close-on-exec. None if none is pending.
pub fn accept(listener: &OwnedFd) -> io::Result<Option<OwnedFd>> {
    match socket::accept4(listener.as_raw_fd(), socket::SockFlag::SOCK_CLOEXEC) {
        // SAFETY: accept4 returned a new descriptor that we now own.
        Ok(fd) => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
        Err(Errno::EINTR) | Err(Errno::EAGAIN) | Err(Errno::ECONNABORTED) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Puts a descriptor in non-blocking mode.
pub fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Sends without blocking: Some(bytes sent), or None when the socket is
/// full. A message socket sends a message whole or not at all.
pub fn send_nowait(fd: &OwnedFd, data: &[u8]) -> io::Result<Option<usize>> {
    loop {
        match socket::send(
            fd.as_raw_fd(),
            data,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(n) => return Ok(Some(n)),
            Err(Errno::EAGAIN) => return Ok(None),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends a message, waiting up to `limit` for room.
pub fn send_within(fd: &OwnedFd, msg: &[u8], limit: Duration) -> io::Result<()> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if send_nowait(fd, msg)?.is_some() {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer is not reading",
            ));
        }
        wait(fd, PollFlags::POLLOUT, left.min(Duration::from_millis(500)))?;
    }
}

/// Bytes waiting to be read in a stream socket (`SIOCINQ`), whoever peeked
/// at them: how an input that handed its stream over sees what the
/// dispatcher has not acknowledged yet.
pub fn unread(fd: &impl AsRawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD (SIOCINQ) writes one int into `n`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n as *mut libc::c_int) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// One `recv(2)` with `flags` that does not block: Some(bytes) (0 at the
/// end of a stream), None when nothing is waiting; retried on EINTR. The
/// one place the crate calls `recv` on its own sockets and streams.
pub fn recv_nowait(
    fd: &impl AsRawFd,
    buf: &mut [u8],
    flags: libc::c_int,
) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: recv writes at most buf.len() bytes into buf (with
        // MSG_TRUNC it may return more, the message's real length, but
        // still writes at most buf.len()).
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        match Errno::last() {
            Errno::EAGAIN => return Ok(None),
            Errno::EINTR => continue,
            e => return Err(e.into()),
        }
    }
}

/// Receives one `SOCK_SEQPACKET` message without blocking: Some(length)
/// (0: the peer closed), or None when none is waiting. A message larger
/// than `buf` is an error (it is discarded, never cut).
pub fn recv_message(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    match recv_nowait(fd, buf, libc::MSG_TRUNC) {
        Ok(Some(n)) if n > buf.len() => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "a message of {n} bytes, larger than the {}-byte limit",
                buf.len()
            ),
        )),
        Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => Ok(Some(0)),
        other => other,
    }
}

/// Sends one message carrying a descriptor (`SCM_RIGHTS`), waiting up to
/// `limit` for room: how an input hands the dispatcher the stream it reads.
pub fn send_with_fd(
    fd: &OwnedFd,
    msg: &[u8],
    passed: std::os::fd::BorrowedFd<'_>,
    limit: Duration,
) -> io::Result<()> {
    let deadline = std::time::Instant::now() + limit;
    let fds = [passed.as_raw_fd()];
    loop {
        let iov = [io::IoSlice::new(msg)];
        let cmsg = [socket::ControlMessage::ScmRights(&fds)];
        match socket::sendmsg::<()>(
            fd.as_raw_fd(),
            &iov,
            &cmsg,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => {}
            Err(e) => return Err(e.into()),
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer is not reading",
            ));
        }
        wait(fd, PollFlags::POLLOUT, left.min(Duration::from_millis(500)))?;
    }
}

/// [`recv_message`] that also takes a descriptor sent with the message
/// ([`send_with_fd`]); descriptors beyond the first are closed.
pub fn recv_message_fd(
    fd: &OwnedFd,
    buf: &mut [u8],
) -> io::Result<Option<(usize, Option<OwnedFd>)>> {
    loop {
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
        let mut iov = [io::IoSliceMut::new(buf)];
        let got = socket::recvmsg::<()>(
            fd.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        );
        let msg = match got {
            Ok(m) => m,
            Err(Errno::EAGAIN) => return Ok(None),
            Err(Errno::EINTR) => continue,
            Err(Errno::ECONNRESET) => return Ok(Some((0, None))),
            Err(e) => return Err(e.into()),
        };
        let mut passed = None;
        for c in msg.cmsgs()? {
            if let socket::ControlMessageOwned::ScmRights(fds) = c {
                for raw in fds {
                    // SAFETY: the kernel just installed `raw` in this
                    // process for us; nothing else owns it.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    if passed.is_none() {
                        passed = Some(owned);
                    }
                }
            }
        }
        if msg.flags.contains(MsgFlags::MSG_TRUNC) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a message larger than the {}-byte limit", buf.len()),
            ));
        }
        return Ok(Some((msg.bytes, passed)));
    }
}

/// Waits up to `limit` for `events` on `fd`; returns what happened (empty
/// on timeout).
pub fn wait(fd: &impl AsFd, events: PollFlags, limit: Duration) -> io::Result<PollFlags> {
    let mut fds = [PollFd::new(fd.as_fd(), events)];
    let ms = limit.as_millis().min(i32::MAX as u128) as i32;
    match nix::poll::poll(
        &mut fds,
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
    ) {
        Ok(_) | Err(Errno::EINTR) => Ok(fds[0].revents().unwrap_or(PollFlags::empty())),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
        socket::socketpair(
            socket::AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            socket::SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    #[test]
    fn a_descriptor_rides_along_with_its_message() {
        let (a, b) = seqpacket_pair();
        let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        send_with_fd(&a, b"take", theirs.as_fd(), Duration::from_secs(1)).unwrap();
        drop(theirs);
        send_nowait(&a, b"plain").unwrap();
        let mut buf = [0u8; 16];
        let (n, fd) = recv_message_fd(&b, &mut buf).unwrap().unwrap();
        assert_eq!(&buf[..n], b"take");
        let passed = std::os::unix::net::UnixStream::from(fd.expect("a descriptor"));
        std::io::Write::write_all(&mut ours, b"x").unwrap();
        let mut got = [0u8; 1];
        std::io::Read::read_exact(&mut &passed, &mut got).unwrap();
        assert_eq!(&got, b"x", "the same socket");
        let (n, fd) = recv_message_fd(&b, &mut buf).unwrap().unwrap();
        assert_eq!((&buf[..n], fd.is_none()), (&b"plain"[..], true));
        assert!(recv_message_fd(&b, &mut buf).unwrap().is_none());
    }

    #[test]
    fn unread_counts_bytes_peeked_but_not_those_read() {
        let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(unread(&theirs).unwrap(), 0);
        std::io::Write::write_all(&mut ours, b"0123456789").unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(
            recv_nowait(&theirs, &mut buf, libc::MSG_PEEK).unwrap(),
            Some(4)
        );
        assert_eq!(unread(&theirs).unwrap(), 10, "a peek takes nothing");
        assert_eq!(recv_nowait(&theirs, &mut buf[..3], 0).unwrap(), Some(3));
        assert_eq!(unread(&theirs).unwrap(), 7);
    }

    #[test]
    fn oversize_messages_are_refused_not_cut() {
        let (a, b) = seqpacket_pair();
        let mut buf = [0u8; 16];
        assert_eq!(recv_message(&b, &mut buf).unwrap(), None);
        send_nowait(&a, &[1; 16]).unwrap();
        send_nowait(&a, &[2; 17]).unwrap();
        send_nowait(&a, &[3; 3]).unwrap();
        assert_eq!(recv_message(&b, &mut buf).unwrap(), Some(16));
        let e = recv_message(&b, &mut buf).unwrap_err();
        assert!(e.to_string().contains("17 bytes"), "{e}");
        assert_eq!(
            recv_message(&b, &mut buf).unwrap(),
            Some(3),
            "the next message is intact"
        );
        drop(a);
        assert_eq!(recv_message(&b, &mut buf).unwrap(), Some(0));
    }

    #[test]
    fn listen_sets_the_exact_mode_and_replaces_only_sockets() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.sock");
        let l = listen(&p, SockType::SeqPacket, 0o660, 4).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o660
        );
        drop(l);
        // A stale socket is replaced.
        let _l = listen(&p, SockType::SeqPacket, 0o600, 4).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let c = connect(&p, SockType::SeqPacket).unwrap();
        send_nowait(&c, b"hi").unwrap();
        let f = dir.path().join("file");
        std::fs::write(&f, "x").unwrap();
        assert!(
            listen(&f, SockType::SeqPacket, 0o600, 4).is_err(),
            "a regular file is never replaced"
        );
    }
}
