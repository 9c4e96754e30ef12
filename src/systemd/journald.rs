//! journald's native protocol, client side: entries serialized as journald
//! reads them, sent as one datagram each, or — when an entry is larger than
//! a datagram may be — written to a sealed memfd whose descriptor is sent
//! instead, so that no entry is ever truncated.
//!
//! The protocol (systemd's "Native Journal Protocol"): an entry is a
//! sequence of fields, each `NAME=value\n` when the value holds no newline,
//! otherwise `NAME\n`, the value's length as a little-endian u64, the value
//! and `\n`. Names are upper-case letters, digits and `_`, at most 64
//! characters, not starting with a digit; names starting with `_` are
//! journald's own and may not be sent. journald accepts at most
//! [`MAX_FIELDS`]-odd fields per entry and drops entries with more, so the
//! builder counts them.
//!
//! Used by the plugins that write journal entries of their own
//! (audisp-journal, audisp-alert).

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};

/// journald's socket for native entries.
pub const DEFAULT_SOCKET: &str = "/run/systemd/journal/socket";

/// Fields an entry may hold here: journald refuses whole entries with 1024
/// fields or more (`ENTRY_FIELD_COUNT_MAX`); the margin is for safety.
pub const MAX_FIELDS: usize = 1000;

/// The longest field name journald accepts.
pub const MAX_NAME: usize = 64;

/// One journal entry being built.
#[derive(Debug, Default)]
pub struct Entry {
    buf: Vec<u8>,
    fields: usize,
}

impl Entry {
    /// Empties the entry (keeping its buffer).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.fields = 0;
    }

    /// How many fields it holds.
    pub fn fields(&self) -> usize {
        self.fields
    }

    /// The serialized entry.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Whether `name` is a field name journald accepts from a client.
    pub fn valid_name(name: &[u8]) -> bool {
        !name.is_empty()
            && name.len() <= MAX_NAME
            && !name[0].is_ascii_digit()
            && name[0] != b'_'
            && name
                .iter()
                .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    }

    /// Adds a field. The caller guarantees a valid name (see
    /// [`Entry::valid_name`]); the value may hold any bytes.
    pub fn add(&mut self, name: &[u8], value: &[u8]) {
        debug_assert!(
            Entry::valid_name(name),
            "{:?}",
            String::from_utf8_lossy(name)
        );
        self.buf.extend_from_slice(name);
        if memchr::memchr(b'\n', value).is_some() {
            self.buf.push(b'\n');
            self.buf
                .extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            self.buf.push(b'=');
        }
        self.buf.extend_from_slice(value);
        self.buf.push(b'\n');
        self.fields += 1;
    }
}

/// How an entry went to journald.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// One datagram.
    Datagram,
    /// A sealed memfd (the entry was larger than a datagram may be).
    Memfd,
}

/// A client of journald's native socket (not audisp's own record journal,
/// `audisp::journal::Journal`).
pub struct Journald {
    sock: UnixDatagram,
    path: PathBuf,
    /// How long to keep retrying while journald is not there (restarting).
    patience: Duration,
}

impl Journald {
    /// A client for the socket at `path` (journald need not run yet).
    pub fn new(path: &Path, patience: Duration) -> io::Result<Journald> {
        Ok(Journald {
            sock: UnixDatagram::unbound()?,
            path: path.to_path_buf(),
            patience,
        })
    }

    /// Sends one entry; blocks while journald's queue is full, retries for
    /// `patience` while journald is absent. Errors are what journald (or the
    /// kernel on its behalf) refused.
    pub fn send(&self, entry: &Entry) -> io::Result<Via> {
        let deadline = Instant::now() + self.patience;
        let mut delay = Duration::from_millis(10);
        loop {
            let result = self.try_send(entry.bytes());
            match result {
                Err(ref e) if retryable(e) && Instant::now() < deadline => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
                other => return other,
            }
        }
    }

    fn try_send(&self, data: &[u8]) -> io::Result<Via> {
        match self.sock.send_to(data, &self.path) {
            Ok(n) if n == data.len() => Ok(Via::Datagram),
            Ok(n) => Err(io::Error::other(format!(
                "short datagram: {n} of {} bytes",
                data.len()
            ))),
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => self.send_memfd(data),
            Err(e) => Err(e),
        }
    }

    /// Writes the entry to a memfd, seals it (journald only trusts sealed
    /// memfds with large entries) and sends the descriptor alone.
    fn send_memfd(&self, data: &[u8]) -> io::Result<Via> {
        use nix::fcntl::{fcntl, FcntlArg, SealFlag};
        use nix::sys::memfd::{memfd_create, MFdFlags};
        let fd = memfd_create(
            c"audisp-entry",
            MFdFlags::MFD_ALLOW_SEALING | MFdFlags::MFD_CLOEXEC,
        )?;
        let mut file = std::fs::File::from(fd);
        file.write_all(data)?;
        fcntl(
            &file,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK
                    | SealFlag::F_SEAL_GROW
                    | SealFlag::F_SEAL_WRITE
                    | SealFlag::F_SEAL_SEAL,
            ),
        )?;
        let addr = UnixAddr::new(&self.path)?;
        let fds = [file.as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        sendmsg(
            self.sock.as_raw_fd(),
            &[] as &[io::IoSlice<'_>],
            &cmsg,
            MsgFlags::empty(),
            Some(&addr),
        )?;
        Ok(Via::Memfd)
    }
}

/// Errors that mean "journald is not there right now" or "try again".
fn retryable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::ENOENT | Errno::ECONNREFUSED | Errno::EAGAIN | Errno::ENOBUFS | Errno::EINTR)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialization_follows_the_protocol() {
        let mut e = Entry::default();
        e.add(b"MESSAGE", b"hello");
        e.add(b"BINARY", b"two\nlines");
        assert_eq!(e.fields(), 2);
        let mut want = b"MESSAGE=hello\nBINARY\n".to_vec();
        want.extend_from_slice(&9u64.to_le_bytes());
        want.extend_from_slice(b"two\nlines\n");
        assert_eq!(e.bytes(), &want[..]);
    }

    #[test]
    fn names() {
        assert!(Entry::valid_name(b"AUDIT_FIELD_A0"));
        assert!(!Entry::valid_name(b"_PID"));
        assert!(!Entry::valid_name(b"0ABC"));
        assert!(!Entry::valid_name(b"lower"));
        assert!(!Entry::valid_name(&[b'A'; 65]));
    }

    /// A large entry goes through a sealed memfd, intact.
    #[test]
    fn large_entries_use_a_sealed_memfd() {
        use nix::sys::socket::{recvmsg, ControlMessageOwned};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let server = UnixDatagram::bind(&path).unwrap();
        let j = Journald::new(&path, Duration::from_secs(1)).unwrap();
        let mut e = Entry::default();
        let big = vec![b'x'; 4 << 20];
        e.add(b"MESSAGE", &big);
        assert_eq!(j.send(&e).unwrap(), Via::Memfd);
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut buf = [0u8; 16];
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            server.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .unwrap();
        assert_eq!(msg.bytes, 0);
        let fd = msg
            .cmsgs()
            .unwrap()
            .find_map(|c| match c {
                ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                _ => None,
            })
            .unwrap();
        // SAFETY: the descriptor was just received and is ours.
        let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let seals = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GET_SEALS).unwrap();
        assert_ne!(seals & libc::F_SEAL_WRITE, 0);
        let data = std::fs::read(format!("/proc/self/fd/{fd}")).unwrap();
        assert_eq!(data, e.bytes());
    }
}
