//! Fewer wake-ups per record under load.
//!
//! auditd writes every record with its own `write()`, so a reader that reads
//! as soon as its descriptor is readable wakes once per record and pays a
//! full round of system calls downstream (journal write, send, ack) for each.
//! [`Coalescer`] lets records pile up briefly between reads while they come
//! quickly: after a read that followed the previous one within [`BUSY_GAP`]
//! and brought less than [`NAP_BELOW`], the reader naps [`NAP`] before reading again,
//! so the next read carries everything written meanwhile. A record after a
//! quiet spell is read at once (its read is not "busy"), so at low rates
//! nothing is delayed; under load a record waits at most [`NAP`] longer.
//! [`grow_pipe`] makes room for what accumulates, so that auditd's writes do
//! not find a full pipe meanwhile (binary frames are 8,986 bytes each).

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// Pipe capacity a coalescing reader asks for: ~110 padded binary frames or
/// thousands of string records, many naps' worth at auditd's full rate.
pub const PIPE_SIZE: i32 = 1 << 20;

/// Enlarges the pipe `fd` reads from to [`PIPE_SIZE`] when it is a pipe and
/// the system allows it; otherwise leaves it as it is (a smaller pipe only
/// means fewer records per read).
pub fn grow_pipe(fd: impl AsFd) {
    let fd = fd.as_fd();
    if let Ok(size) = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETPIPE_SZ) {
        if size < PIPE_SIZE {
            let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
        }
    }
}

/// Reads closer together than this count as a busy input.
pub const BUSY_GAP: Duration = Duration::from_millis(2);

/// How long a busy reader lets records accumulate before its next read:
/// short enough that the latency it adds stays well under a millisecond,
/// long enough to carry ~20 records at 50,000 records/s.
pub const NAP: Duration = Duration::from_micros(400);

/// A read at least this large means records queue up faster than a nap
/// would add: read again at once. (auditd's socket to a plugin holds only
/// ~200 KiB, about 20 padded binary frames; napping with it nearly full
/// would make auditd wait.)
pub const NAP_BELOW: usize = 64 << 10;

/// Tracks one reader's reads and naps between them while the input is busy.
#[derive(Debug, Default)]
pub struct Coalescer {
    last_read: Option<Instant>,
}

impl Coalescer {
    /// A reader that has not read yet.
    pub fn new() -> Coalescer {
        Coalescer::default()
    }

    /// Whether the reader should nap after a read of `got` bytes at `now`:
    /// the input is busy and the read was small (see [`NAP_BELOW`]).
    pub fn should_nap(&mut self, got: usize, now: Instant) -> bool {
        let busy = self
            .last_read
            .is_some_and(|t| now.saturating_duration_since(t) < BUSY_GAP);
        self.last_read = Some(now);
        busy && got < NAP_BELOW
    }

    /// Call after handling a read of `got` bytes: naps [`NAP`] when
    /// [`Coalescer::should_nap`] says so.
    pub fn after_read(&mut self, got: usize) {
        if self.should_nap(got, Instant::now()) {
            std::thread::sleep(NAP);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naps_only_between_close_partial_reads() {
        let mut c = Coalescer::new();
        let t0 = Instant::now();
        // The first read, and one after a quiet spell, are never delayed.
        assert!(!c.should_nap(100, t0));
        assert!(!c.should_nap(100, t0 + BUSY_GAP + Duration::from_millis(1)));
        // A read soon after the previous one: busy, nap.
        let t1 = t0 + BUSY_GAP + Duration::from_millis(2);
        assert!(c.should_nap(100, t1));
        // A large read: records are already waiting.
        assert!(!c.should_nap(NAP_BELOW, t1 + NAP));
    }

    #[test]
    fn grows_a_pipe_and_leaves_other_descriptors_alone() {
        let (r, _w) = nix::unistd::pipe().expect("pipe");
        grow_pipe(&r);
        let size = nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_GETPIPE_SZ).expect("size");
        // Unprivileged users may be held to fs.pipe-max-size (1 MiB by default).
        assert!(size >= 64 << 10);
        if nix::unistd::geteuid().is_root() {
            assert_eq!(size, PIPE_SIZE);
        }
        let file = tempfile::tempfile().expect("tempfile");
        grow_pipe(&file);
    }
}
