//! Sockets handed over by the service manager (socket activation).
//!
//! With a `.socket` unit, systemd creates the listening sockets itself (so
//! they exist before the daemon runs, survive its restarts, and a connection
//! starts it) and passes them as descriptors 3, 4, … with `LISTEN_PID`,
//! `LISTEN_FDS` and `LISTEN_FDNAMES` (each socket unit's
//! `FileDescriptorName=`). Under real systemd their order does not follow
//! `Sockets=`, so they are always looked up by name, never by position.
//!
//! [`Passed::from_env`] takes them and clears the variables, so programs
//! the daemon starts never believe the sockets are theirs.
//!
//! Not `sd-notify`'s `listen_fds_with_names`: its errors do not name the
//! bad value, and the socket family/type/listening checks stay here anyway.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{self, sockopt, SockType, SockaddrLike};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// Descriptors passed by the service manager, by name.
#[derive(Debug, Default)]
pub struct Passed {
    fds: Vec<(String, OwnedFd)>,
}

/// Which descriptors the variables describe, if they are meant for `pid`:
/// `(fd, name)` pairs. Names default to `unknown` as systemd's do.
pub fn parse(
    pid: u32,
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    names: Option<&str>,
) -> Result<Vec<(RawFd, String)>, String> {
    let Some(listen_pid) = listen_pid else {
        return Ok(Vec::new());
    };
    let listen_pid: u32 = listen_pid
        .trim()
        .parse()
        .map_err(|_| format!("LISTEN_PID={listen_pid:?} is not a process id"))?;
    if listen_pid != pid {
        // Meant for another process (we inherited the environment).
        return Ok(Vec::new());
    }
    let n: usize = match listen_fds {
        None => return Ok(Vec::new()),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("LISTEN_FDS={v:?} is not a number"))?,
    };
    if n > 1024 {
        return Err(format!("LISTEN_FDS={n} is implausibly large"));
    }
    let names: Vec<String> = match names {
        Some(v) if !v.is_empty() => v.split(':').map(str::to_string).collect(),
        _ => Vec::new(),
    };
    if !names.is_empty() && names.len() != n {
        return Err(format!(
            "LISTEN_FDNAMES has {} names for LISTEN_FDS={n} sockets",
            names.len()
        ));
    }
    Ok((0..n)
        .map(|i| {
            let name = names.get(i).cloned().unwrap_or_else(|| "unknown".into());
            (FIRST_FD + i as RawFd, name)
        })
        .collect())
}

impl Passed {
    /// Takes the descriptors passed to this process (none when not socket
    /// activated), marks them close-on-exec and removes `LISTEN_PID`,
    /// `LISTEN_FDS` and `LISTEN_FDNAMES` from the environment. Call it once,
    /// before any thread is started.
    pub fn from_env() -> Result<Passed, String> {
        let var = |k: &str| std::env::var(k).ok();
        let parsed = parse(
            std::process::id(),
            var("LISTEN_PID").as_deref(),
            var("LISTEN_FDS").as_deref(),
            var("LISTEN_FDNAMES").as_deref(),
        );
        // SAFETY: called at start-up, before any thread exists.
        unsafe {
            std::env::remove_var("LISTEN_PID");
            std::env::remove_var("LISTEN_FDS");
            std::env::remove_var("LISTEN_FDNAMES");
        }
        let mut fds = Vec::new();
        for (fd, name) in parsed? {
            // A descriptor that is not open was never passed: refuse rather
            // than adopt (and later close) something that is not ours.
            let flags = nix::fcntl::fcntl(
                // SAFETY: only inspected; ownership is taken below.
                unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
                nix::fcntl::FcntlArg::F_GETFD,
            )
            .map_err(|e| format!("passed descriptor {fd} ({name}): {e}"))?;
            let flags =
                nix::fcntl::FdFlag::from_bits_truncate(flags) | nix::fcntl::FdFlag::FD_CLOEXEC;
            // SAFETY: as above.
            let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_SETFD(flags))
                .map_err(|e| format!("passed descriptor {fd} ({name}): {e}"))?;
            // SAFETY: systemd passed this descriptor to this process (LISTEN_PID
            // is ours) and nothing else in the process owns it.
            fds.push((name, unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        Ok(Passed { fds })
    }

    /// Whether any descriptor was passed.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// Takes the descriptor named `name`, checking that it is a listening
    /// `AF_UNIX` socket of type `ty`. Ok(None) if none has that name.
    pub fn take_listener(&mut self, name: &str, ty: SockType) -> Result<Option<OwnedFd>, String> {
        let Some(i) = self.fds.iter().position(|(n, _)| n == name) else {
            return Ok(None);
        };
        let (_, fd) = self.fds.remove(i);
        check_listener(&fd, ty).map_err(|why| {
            format!(
                "the socket passed as {name:?} (fd {}) {why}",
                fd.as_raw_fd()
            )
        })?;
        Ok(Some(fd))
    }

    /// Takes the descriptor named `name`, checking that it is a listening
    /// stream socket, TCP (IPv4 or IPv6) or `AF_UNIX`: for an endpoint the
    /// admin may put on a port or on a path. Ok(None) if none has that name.
    pub fn take_stream_listener(&mut self, name: &str) -> Result<Option<OwnedFd>, String> {
        let Some(i) = self.fds.iter().position(|(n, _)| n == name) else {
            return Ok(None);
        };
        let (_, fd) = self.fds.remove(i);
        check_tcp_listener(&fd)
            .or_else(|_| check_listener(&fd, SockType::Stream))
            .map_err(|why| {
                format!(
                    "the socket passed as {name:?} (fd {}) {why}",
                    fd.as_raw_fd()
                )
            })?;
        Ok(Some(fd))
    }

    /// Takes every passed descriptor, checking that each is a listening TCP
    /// socket (IPv4 or IPv6): for network services whose socket unit lists
    /// any number of `ListenStream=` addresses, whatever their names.
    pub fn take_tcp_listeners(&mut self) -> Result<Vec<OwnedFd>, String> {
        let mut out = Vec::new();
        for (name, fd) in std::mem::take(&mut self.fds) {
            check_tcp_listener(&fd).map_err(|why| {
                format!(
                    "the socket passed as {name:?} (fd {}) {why}",
                    fd.as_raw_fd()
                )
            })?;
            out.push(fd);
        }
        Ok(out)
    }

    /// Names of the descriptors nobody took (closed when dropped).
    pub fn leftover(&self) -> Vec<String> {
        self.fds.iter().map(|(n, _)| n.clone()).collect()
    }
}

/// Checks that `fd` is a listening TCP socket.
fn check_tcp_listener(fd: &OwnedFd) -> Result<(), String> {
    let actual =
        socket::getsockopt(fd, sockopt::SockType).map_err(|e| format!("is not a socket ({e})"))?;
    if actual != SockType::Stream {
        return Err(format!("is a {actual:?} socket, not a TCP stream socket"));
    }
    let domain = socket::getsockname::<socket::SockaddrStorage>(fd.as_raw_fd())
        .map_err(|e| format!("has no address ({e})"))?
        .family();
    if !matches!(
        domain,
        Some(socket::AddressFamily::Inet | socket::AddressFamily::Inet6)
    ) {
        return Err(format!("is a {domain:?} socket, not TCP"));
    }
    if !socket::getsockopt(fd, sockopt::AcceptConn).unwrap_or(false) {
        return Err("is not listening (an accepted connection? use Accept=no)".into());
    }
    Ok(())
}

/// Checks that `fd` is a listening `AF_UNIX` socket of type `ty`.
pub fn check_listener(fd: &OwnedFd, ty: SockType) -> Result<(), String> {
    let actual =
        socket::getsockopt(fd, sockopt::SockType).map_err(|e| format!("is not a socket ({e})"))?;
    if actual != ty {
        return Err(format!("is a {actual:?} socket, not {ty:?}"));
    }
    let domain = socket::getsockname::<socket::SockaddrStorage>(fd.as_raw_fd())
        .map_err(|e| format!("has no address ({e})"))?
        .family();
    if domain != Some(socket::AddressFamily::Unix) {
        return Err(format!("is a {domain:?} socket, not AF_UNIX"));
    }
    if !socket::getsockopt(fd, sockopt::AcceptConn).unwrap_or(false) {
        return Err("is not listening (an accepted connection? use Accept=no)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_for_another_process_are_ignored() {
        assert_eq!(parse(10, Some("11"), Some("1"), Some("input")), Ok(vec![]));
        assert_eq!(parse(10, None, Some("1"), Some("input")), Ok(vec![]));
    }

    #[test]
    fn names_follow_descriptors() {
        assert_eq!(
            parse(10, Some("10"), Some("2"), Some("ctl:input")),
            Ok(vec![(3, "ctl".to_string()), (4, "input".to_string())])
        );
        assert_eq!(
            parse(10, Some("10"), Some("1"), None),
            Ok(vec![(3, "unknown".to_string())])
        );
    }

    #[test]
    fn inconsistent_variables_are_errors() {
        assert!(parse(10, Some("10"), Some("2"), Some("input"))
            .unwrap_err()
            .contains("1 names for LISTEN_FDS=2"));
        assert!(parse(10, Some("x"), Some("1"), None)
            .unwrap_err()
            .contains("LISTEN_PID"));
        assert!(parse(10, Some("10"), Some("-1"), None)
            .unwrap_err()
            .contains("LISTEN_FDS"));
    }

    #[test]
    fn listener_checks_type_and_state() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let l = crate::uds::listen(&p, SockType::SeqPacket, 0o600, 4).unwrap();
        assert_eq!(check_listener(&l, SockType::SeqPacket), Ok(()));
        assert!(check_listener(&l, SockType::Stream)
            .unwrap_err()
            .contains("not Stream"));
        let c = crate::uds::connect(&p, SockType::SeqPacket).unwrap();
        assert!(check_listener(&c, SockType::SeqPacket)
            .unwrap_err()
            .contains("not listening"));
    }

    #[test]
    fn a_stream_listener_is_taken_by_name_on_a_port_or_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let unix = crate::uds::listen(&dir.path().join("m"), SockType::Stream, 0o600, 4).unwrap();
        let seq = crate::uds::listen(&dir.path().join("s"), SockType::SeqPacket, 0o600, 4).unwrap();
        let mut passed = Passed {
            fds: vec![
                ("input".into(), seq),
                ("metrics".into(), OwnedFd::from(tcp)),
                ("other".into(), unix),
            ],
        };
        assert!(passed.take_stream_listener("metrics").unwrap().is_some());
        assert!(passed.take_stream_listener("other").unwrap().is_some());
        assert!(passed.take_stream_listener("metrics").unwrap().is_none());
        let err = passed.take_stream_listener("input").unwrap_err();
        assert!(
            err.contains("\"input\"") && err.contains("SeqPacket socket, not Stream"),
            "{err}"
        );
    }

    #[test]
    fn tcp_listeners_are_taken_whatever_their_names_and_nothing_else() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut passed = Passed {
            fds: vec![("x".into(), OwnedFd::from(tcp))],
        };
        assert_eq!(passed.take_tcp_listeners().unwrap().len(), 1);
        assert!(passed.is_empty());

        let dir = tempfile::tempdir().unwrap();
        let unix = crate::uds::listen(&dir.path().join("s"), SockType::Stream, 0o600, 4).unwrap();
        let mut passed = Passed {
            fds: vec![("remote".into(), unix)],
        };
        let err = passed.take_tcp_listeners().unwrap_err();
        assert!(
            err.contains("\"remote\"") && err.contains("not TCP"),
            "{err}"
        );
    }
}
