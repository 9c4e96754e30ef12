//! Fewer wake-ups per record under load.
//!
//! auditd writes every record with its own `write()`, so a reader that reads
//! as soon as its descriptor is readable wakes once per record and pays a
//! full round of system calls downstream (journal write, send, ack) for each.
//! [`Coalescer`] lets records pile up briefly between reads while they come
//! quickly: after a read that followed the previous one within [`BUSY_GAP`]
//! and brought less than [`NAP_BYTES`], the reader naps (at most [`NAP`],
//! less when bytes or writes come fast: see [`NAP_BYTES`] and
//! [`NAP_WRITES`]) before reading again, so the next read carries
//! everything written meanwhile. A
//! record after a quiet spell is read at once (its read is not "busy"), so at
//! low rates nothing is delayed; under load a record waits at most [`NAP`]
//! (and [`NAP_SLACK`]) longer.
//! [`grow_pipe`] makes room for what accumulates, so that auditd's writes do
//! not find a full pipe meanwhile (binary frames are 8,986 bytes each).
//!
//! A reader may also hold what it read back across reads
//! ([`Coalescer::step`]): auditd's socket holds only ~21 padded binary
//! frames, so binary input must be read several times as often as string
//! input, but its records can still go downstream (journal write, sender
//! wake, plugin write) a few reads at a time, up to [`HOLD_BYTES`] and
//! [`HOLD_TIME`]. audispd's standard input does; a string stream is then
//! handed on at every read after a nap, as before.
//!
//! Naps are the dearest part of this on a virtual machine: a timer wake-up
//! cost the sleeping thread 15–22 µs of CPU on the 2-vCPU KVM guests the
//! benchmarks run on, against ~2 µs for a wake-up by a writer. A padded
//! binary stream (auditd ≤ 4.1.0), 21 frames to auditd's socket, needs a nap
//! per ~20 records at auditd's full rate, a string stream one per ~60: most
//! of what padded binary input still costs over string (benches/README.md,
//! "Binary input: what is left is timer wake-ups", also for what was tried
//! instead). auditd ≥ 4.1.1 writes exact frames, which nap as often as
//! string records and cost the same ("Binary input with auditd ≥ 4.1.1").

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

/// How long a busy reader lets records accumulate before its next read.
/// Every round downstream (journal write, sender wake, plugin write,
/// acknowledgement) costs the same whatever it carries, so the nap sets the
/// CPU spent per record under load; it also adds its length to a record's
/// latency. On the 2-vCPU VMs the benchmarks run on, behind a real auditd
/// (`benches/live.sh`, benches/README.md "The nap, measured"): 400 µs gave
/// bridge + audispd 2.38 µs per record at auditd's full rate and p99 0.73 ms
/// from auditd's write at 50,000 records/s; 1 ms gives 1.77 µs and p99
/// 1.44–1.48 ms (p50 0.75), inside the 2 ms the latency goal allows, with
/// ~50 records per nap at 50,000 records/s. At higher rates [`NAP_WRITES`]
/// shortens it.
pub const NAP: Duration = Duration::from_millis(1);

/// Most writes of auditd's a nap lets pile up, at the rate the last read
/// shows: auditd writes each record with its own `write()`, and the kernel
/// charges a stream socket ~1 KiB per write on top of its bytes, so its
/// socket to a plugin (the default 208 KiB send buffer) holds only ~167
/// string records of ~300 bytes. A nap that let more than half of that
/// pile up would make auditd wait once a faster machine writes more than
/// ~80,000 records/s (a 1 ms [`NAP`] carries ~70 at 70,000/s).
pub const NAP_WRITES: usize = 80;

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

/// Most bytes a holding reader ([`Coalescer::step`]) keeps back across reads
/// before it hands them on: a few of auditd's socket-fulls of padded binary
/// frames (~58 frames), more than auditd writes in [`HOLD_TIME`] at its full
/// rate, so that the time bound decides.
pub const HOLD_BYTES: usize = 512 << 10;

/// Longest a holding reader lets the oldest record it holds wait, counted
/// from the start of the nap before the read that brought it: no longer
/// than a record of a string stream waits in the socket during one [`NAP`].
pub const HOLD_TIME: Duration = NAP;

/// Tracks one reader's reads and naps between them while the input is busy.
#[derive(Debug, Default)]
pub struct Coalescer {
    last_read: Option<Instant>,
    /// The nap [`Coalescer::step`] last asked for (zero: none).
    last_nap: Duration,
    /// Since when the oldest record a holding reader keeps back may have
    /// waited (`None`: it holds nothing).
    held_since: Option<Instant>,
}

/// What a reader that holds records back across reads does after a read
/// ([`Coalescer::step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Hand on everything held now; `false`: keep it and read again.
    pub hand_on: bool,
    /// How long to nap before the next read (`None`: read at once).
    pub nap: Option<Duration>,
}

/// How busy the input looks after a read.
enum Pace {
    /// The first read, or one after a quiet spell.
    Quiet,
    /// A read soon after the previous one; nap this long (zero: read again
    /// at once, records queue up faster than a nap would add).
    Busy(Duration),
}

impl Coalescer {
    /// A reader that has not read yet.
    pub fn new() -> Coalescer {
        Coalescer::default()
    }

    /// How long the reader should nap after handling a read of `got` bytes
    /// that completed `writes` records (auditd's writes) at `now` (`None`:
    /// read again at once, the input is not busy). The nap is [`NAP`] at
    /// most, and shorter when bytes or writes come fast: at the rate the last
    /// read shows, no more than [`NAP_BYTES`] nor [`NAP_WRITES`] should pile
    /// up meanwhile (padded binary frames fill auditd's socket in well under
    /// [`NAP`] at its full rate, and string records would on a machine fast
    /// enough; a nap that long would make auditd wait).
    pub fn nap(&mut self, got: usize, writes: usize, now: Instant) -> Option<Duration> {
        match self.pace(got, writes, now, got >= NAP_BYTES) {
            Pace::Busy(nap) => (!nap.is_zero()).then_some(nap),
            Pace::Quiet => None,
        }
    }

    /// How busy the input is after a read of `got` bytes (`writes` records)
    /// at `now`; `backlog`: records queue up faster than a nap would add,
    /// read again at once if busy.
    fn pace(&mut self, got: usize, writes: usize, now: Instant, backlog: bool) -> Pace {
        let since = self.last_read.map(|t| now.saturating_duration_since(t));
        self.last_read = Some(now);
        let Some(since) = since.filter(|d| *d < BUSY_GAP) else {
            return Pace::Quiet;
        };
        if backlog {
            return Pace::Busy(Duration::ZERO);
        }
        // `got` bytes and `writes` writes came in `since`: NAP_BYTES and
        // NAP_WRITES take this long at that rate.
        let at_rate = |limit: usize, came: usize| {
            let ns = since.as_nanos() * limit as u128 / came.max(1) as u128;
            Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
        };
        Pace::Busy(
            NAP.min(at_rate(NAP_BYTES, got))
                .min(at_rate(NAP_WRITES, writes)),
        )
    }

    /// For a reader that may hold records back across reads, so that one
    /// round downstream (journal write, sender wake, plugin write) carries
    /// several reads' worth: what to do after a read of `got` bytes
    /// (`writes` records) of the `room` it asked for at `now`, `held` bytes
    /// being held in all (this read's included).
    ///
    /// The nap is [`Coalescer::nap`]'s, which keeps auditd's socket from
    /// filling, except after a large read that did not fill `room`: that
    /// read emptied the input, so it is followed by a nap as long as
    /// [`NAP_BYTES`] take to come at the rate it shows (auditd's socket of
    /// padded frames is then read every [`NAP_BYTES`] or so instead of large
    /// read, empty wait, one-frame read). A read that filled `room` is a
    /// backlog: handed on at once, no nap. The records are kept back while
    /// the input is busy, fewer than [`HOLD_BYTES`] are held, and the oldest of them will not have
    /// waited longer than [`HOLD_TIME`] by the end of the next nap (counted
    /// from the start of the nap before the read that brought it). Padded
    /// binary frames, which fill auditd's socket in a few naps, are thus
    /// handed on a few reads at a time; a string stream, whose nap is
    /// [`NAP`] already, at every read, as with [`Coalescer::nap`]. A record
    /// after a quiet spell is handed on at once.
    pub fn step(
        &mut self,
        got: usize,
        writes: usize,
        room: usize,
        held: usize,
        now: Instant,
    ) -> Step {
        let napped = std::mem::take(&mut self.last_nap);
        let since = *self
            .held_since
            .get_or_insert_with(|| now.checked_sub(napped).unwrap_or(now));
        let nap = match self.pace(got, writes, now, got >= room) {
            Pace::Quiet => None,
            Pace::Busy(d) => Some(d),
        };
        // A backlog (no nap) gains nothing from holding: its reads are as
        // large as they come.
        let keep = nap.is_some_and(|d| {
            !d.is_zero()
                && held < HOLD_BYTES
                && (now + d).saturating_duration_since(since) <= HOLD_TIME
        });
        if !keep {
            self.held_since = None;
        }
        let nap = nap.filter(|d| !d.is_zero());
        self.last_nap = nap.unwrap_or_default();
        Step {
            hand_on: !keep,
            nap,
        }
    }

    /// Tells a holding reader's coalescer that what it held was handed on
    /// although [`Coalescer::step`] said keep it (nothing more came).
    pub fn handed_on(&mut self) {
        self.held_since = None;
        self.last_nap = Duration::ZERO;
    }

    /// Call after handling a read of `got` bytes (`writes` records): naps as
    /// long as [`Coalescer::nap`] says.
    pub fn after_read(&mut self, got: usize, writes: usize) {
        if let Some(d) = self.nap(got, writes, Instant::now()) {
            nap_for(d);
        }
    }
}

/// Sleeps `d`, ending within [`NAP_SLACK`]: the first nap of a thread sets
/// its timer slack (where that fails, the default stays).
pub fn nap_for(d: Duration) {
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

    /// What a reader asks for per read.
    const READ: usize = 256 << 10;

    #[test]
    fn naps_only_while_busy() {
        let mut c = Coalescer::new();
        let t0 = Instant::now();
        // The first read, and one after a quiet spell, are never delayed.
        assert_eq!(c.nap(100, 1, t0), None);
        assert_eq!(
            c.nap(100, 1, t0 + BUSY_GAP + Duration::from_millis(1)),
            None
        );
        // A read soon after the previous one: busy, nap.
        let t1 = t0 + BUSY_GAP + Duration::from_millis(2);
        assert_eq!(c.nap(100, 1, t1), Some(NAP));
    }

    #[test]
    fn naps_shorter_when_bytes_come_fast() {
        let mut c = Coalescer::new();
        let t0 = Instant::now();
        assert_eq!(c.nap(9_000, 1, t0), None);
        // Four padded binary frames (36,000 bytes) 100 µs after the last
        // read: NAP_BYTES pile up in 182 µs at that rate, not NAP.
        let d = c.nap(36_000, 4, t0 + Duration::from_micros(100));
        let at_rate = Duration::from_nanos(100_000 * NAP_BYTES as u64 / 36_000);
        assert_eq!(d, Some(at_rate));
        // NAP_BYTES or more: read again at once.
        let d = c.nap(2 * NAP_BYTES, 15, t0 + Duration::from_micros(300));
        assert_eq!(d, None);
        // String records, 3 KB in 1 ms: the whole nap.
        let d = c.nap(3_000, 10, t0 + Duration::from_micros(1_300));
        assert_eq!(d, Some(NAP));
    }

    #[test]
    fn naps_shorter_when_writes_come_fast() {
        let mut c = Coalescer::new();
        let t0 = Instant::now();
        assert_eq!(c.nap(300, 1, t0), None);
        // String records at 150,000/s: 150 of ~300 bytes in 1 ms. Their
        // 45 KB are under NAP_BYTES, but NAP_WRITES of them come in 533 µs,
        // and a whole NAP would fill auditd's socket (~167 such writes).
        let d = c.nap(45_000, 150, t0 + Duration::from_millis(1));
        let at_rate = Duration::from_nanos(1_000_000 * NAP_WRITES as u64 / 150);
        assert_eq!(d, Some(at_rate));
        assert!(at_rate < NAP && 45_000 < NAP_BYTES);
        // At 50,000/s a whole nap carries ~50: NAP stands.
        let d = c.nap(15_000, 50, t0 + Duration::from_millis(2));
        assert_eq!(d, Some(NAP));
    }

    #[test]
    fn a_holding_reader_hands_on_at_once_when_quiet_and_each_nap_of_a_string_stream() {
        let mut c = Coalescer::new();
        let t0 = Instant::now();
        let lone = Step {
            hand_on: true,
            nap: None,
        };
        assert_eq!(c.step(300, 1, READ, 300, t0), lone);
        let t1 = t0 + BUSY_GAP + Duration::from_millis(1);
        assert_eq!(c.step(300, 1, READ, 300, t1), lone);
        // String records, 20 (6 KB) per read. The first busy read is held
        // for one nap, as long as HOLD_TIME allows...
        let t2 = t1 + Duration::from_micros(400);
        let held = c.step(6_000, 20, READ, 6_000, t2);
        assert_eq!((held.hand_on, held.nap), (false, Some(NAP)));
        // ...then, its records having waited a nap already, handed on,
        // and so at every read after a nap: no later than without holding.
        let t3 = t2 + NAP;
        let step = c.step(6_000, 20, READ, 12_000, t3);
        assert_eq!((step.hand_on, step.nap), (true, Some(NAP)));
        let step = c.step(6_000, 20, READ, 6_000, t3 + NAP);
        assert_eq!((step.hand_on, step.nap), (true, Some(NAP)));
    }

    #[test]
    fn a_holding_reader_keeps_padded_frames_until_hold_bytes() {
        let mut c = Coalescer::new();
        let t0 = Instant::now();
        assert!(c.step(9_000, 1, READ, 9_000, t0).hand_on);
        // auditd's socket full of padded frames (22), read 50 µs after the
        // last read. The large read emptied the socket: nap as long as
        // NAP_BYTES take at that rate, and hold what came.
        let frames = 22 * 8_986;
        let gap = Duration::from_micros(50);
        let t1 = t0 + gap;
        let step = c.step(frames, 22, READ, frames, t1);
        let by_rate = Duration::from_nanos(50_000 * NAP_BYTES as u64 / frames as u64);
        assert_eq!((step.hand_on, step.nap), (false, Some(by_rate)));
        let step = c.step(frames, 22, READ, 2 * frames, t1 + gap);
        assert!(!step.hand_on);
        // HOLD_BYTES reached: handed on, and the next read starts afresh.
        assert!(2 * frames < HOLD_BYTES && 3 * frames >= HOLD_BYTES);
        let step = c.step(frames, 22, READ, 3 * frames, t1 + 2 * gap);
        assert_eq!((step.hand_on, step.nap), (true, Some(by_rate)));
        let step = c.step(frames, 22, READ, frames, t1 + 3 * gap);
        assert!(!step.hand_on);
    }

    #[test]
    fn a_holding_reader_lets_no_record_wait_longer_than_hold_time() {
        let mut c = Coalescer::new();
        let t0 = Instant::now();
        assert!(c.step(9_000, 1, READ, 9_000, t0).hand_on);
        // A frame every 20 µs, read with no nap before the first read of
        // the batch: its records are held while they will not have waited
        // longer than HOLD_TIME by the end of the next nap.
        let first = t0 + Duration::from_micros(20);
        let mut now = first;
        let mut last = t0;
        let mut held = 0;
        let step = loop {
            let frames = usize::try_from((now - last).as_micros() / 20).expect("frames");
            let got = 9_000 * frames;
            held += got;
            last = now;
            let step = c.step(got, frames, READ, held, now);
            let nap = step.nap.expect("a busy reader naps");
            if step.hand_on {
                break step;
            }
            assert!(now + nap - first <= HOLD_TIME);
            now += nap;
        };
        assert!(now + step.nap.expect("nap") - first > HOLD_TIME);
        assert!(held < HOLD_BYTES, "handed on for its time, not its bytes");
        // Told that what it held was handed on, it starts a new batch.
        c.handed_on();
        let step = c.step(9_000, 1, READ, 9_000, now + Duration::from_micros(20));
        assert!(!step.hand_on);
    }

    #[test]
    fn a_holding_reader_hands_on_a_backlog_at_once_without_napping() {
        let mut c = Coalescer::new();
        let t0 = Instant::now();
        let at_once = Step {
            hand_on: true,
            nap: None,
        };
        assert_eq!(c.step(READ, 29, READ, READ, t0), at_once);
        // Reads that fill the room they asked for, small or large.
        let t1 = t0 + Duration::from_micros(50);
        assert_eq!(c.step(READ, 29, READ, READ, t1), at_once);
        let t2 = t1 + Duration::from_micros(50);
        assert_eq!(c.step(1_000, 3, 1_000, 1_000, t2), at_once);
        // Less than the room: a nap, and held.
        let t3 = t2 + Duration::from_micros(50);
        let step = c.step(1_000, 3, READ, 1_000, t3);
        assert_eq!((step.hand_on, step.nap), (false, Some(NAP)));
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
