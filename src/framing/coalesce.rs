//! Fewer wake-ups per record under load.
//!
//! auditd writes every record with its own `write()`, so a reader that reads
//! as soon as its descriptor is readable wakes once per record and pays a
//! full round of system calls downstream (journal write, send, ack) for each.
//! [`Coalescer`] lets records pile up briefly between reads while they come
//! quickly: after a read that followed the previous one within [`BUSY_GAP`]
//! and brought less than [`NAP_BYTES`], the reader naps (at most [`NAP`], less when bytes come fast) before
//! reading again, so the next read carries everything written meanwhile. A
//! record after a quiet spell is read at once (its read is not "busy"), so at
//! low rates nothing is delayed; under load a record waits at most [`NAP`]
//! (and [`NAP_SLACK`]) longer.
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

/// Most bytes a nap lets pile up, at the byte rate the last read shows:
/// auditd's socket to a plugin holds only ~190 KiB (21 padded binary
/// frames), and napping with it nearly full would make auditd wait. A read
/// this large or larger is followed by no nap: records queue up faster than
/// a nap would add (a nap after each such read cost bulk reading a backlog
/// ~17 % of its rate, and auditd's binary rate 111 → 98 % of cat-only).
pub const NAP_BYTES: usize = 64 << 10;

/// How late a nap may end: the timer slack a napping thread asks for (the
/// default, 50 µs, would lengthen every nap by up to that much).
pub const NAP_SLACK: Duration = Duration::from_micros(5);

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

    /// How long the reader should nap after handling a read of `got` bytes
    /// at `now` (`None`: read again at once, the input is not busy). The nap
    /// is [`NAP`] at most, and shorter when bytes come fast: at the byte rate
    /// the last read shows, no more than [`NAP_BYTES`] should pile up
    /// meanwhile (padded binary frames fill auditd's socket in well under
    /// [`NAP`] at its full rate; a nap that long would make auditd wait).
    pub fn nap(&mut self, got: usize, now: Instant) -> Option<Duration> {
        let since = self.last_read.map(|t| now.saturating_duration_since(t));
        self.last_read = Some(now);
        let since = since.filter(|d| *d < BUSY_GAP)?;
        if got >= NAP_BYTES {
            // Records queue up faster than a nap would add (a backlog, or
            // auditd's socket nearly full): read again at once.
            return None;
        }
        // `got` bytes came in `since`: NAP_BYTES take this long at that rate.
        let ns = since.as_nanos() * NAP_BYTES as u128 / got.max(1) as u128;
        let by_rate = Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX));
        let nap = NAP.min(by_rate);
        (!nap.is_zero()).then_some(nap)
    }

    /// Call after handling a read of `got` bytes: naps as long as
    /// [`Coalescer::nap`] says.
    pub fn after_read(&mut self, got: usize) {
        if let Some(d) = self.nap(got, Instant::now()) {
            nap_for(d);
        }
    }
}

/// Sleeps `d`, ending within [`NAP_SLACK`]: the first nap of a thread sets
/// its timer slack (where that fails, the default stays).
fn nap_for(d: Duration) {
    thread_local! {
        static SLACK_SET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if !SLACK_SET.get() {
        let ns = libc::c_ulong::try_from(NAP_SLACK.as_nanos()).unwrap_or(libc::c_ulong::MAX);
        let _ = nix::sys::prctl::set_timerslack(ns);
        SLACK_SET.set(true);
    }
    std::thread::sleep(d);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naps_only_while_busy() {
        let mut c = Coalescer::new();
        let t0 = Instant::now();
        // The first read, and one after a quiet spell, are never delayed.
        assert_eq!(c.nap(100, t0), None);
        assert_eq!(c.nap(100, t0 + BUSY_GAP + Duration::from_millis(1)), None);
        // A read soon after the previous one: busy, nap.
        let t1 = t0 + BUSY_GAP + Duration::from_millis(2);
        assert_eq!(c.nap(100, t1), Some(NAP));
    }

    #[test]
    fn naps_shorter_when_bytes_come_fast() {
        let mut c = Coalescer::new();
        let t0 = Instant::now();
        assert_eq!(c.nap(9_000, t0), None);
        // Four padded binary frames (36,000 bytes) 100 µs after the last
        // read: NAP_BYTES pile up in 182 µs at that rate, not 400.
        let d = c.nap(36_000, t0 + Duration::from_micros(100));
        let at_rate = Duration::from_nanos(100_000 * NAP_BYTES as u64 / 36_000);
        assert_eq!(d, Some(at_rate));
        // NAP_BYTES or more: read again at once.
        let d = c.nap(2 * NAP_BYTES, t0 + Duration::from_micros(300));
        assert_eq!(d, None);
        // String records, 3 KB in 1 ms: the whole nap.
        let d = c.nap(3_000, t0 + Duration::from_micros(1_300));
        assert_eq!(d, Some(NAP));
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
