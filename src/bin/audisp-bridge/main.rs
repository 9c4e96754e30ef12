//! `audisp-bridge`: the link from auditd to a dispatcher that systemd runs.
//!
//! auditd starts its plugins itself and feeds them on standard input, so a
//! dispatcher started by auditd cannot be a systemd service (no socket
//! activation, no watchdog, no restart policy of its own). The bridge is the
//! small auditd plugin in between: auditd starts it (an
//! `/etc/audit/plugins.d/audisp-bridge.conf`), it reads auditd's stream
//! continuously — every record goes into its own buffer, never waiting for
//! the dispatcher, so auditd is never blocked — and relays the records to
//! `audisp.service`'s input socket as an input plugin. The buffer and the
//! relaying are [`audisp::sdk::Relay`]'s: the newest records in memory, all
//! of them on disk (`--state-dir`), kept until the dispatcher acknowledges
//! them, so a dispatcher restart (or the bridge's own) loses nothing and the
//! dispatcher stores each record once. While records come quickly it reads
//! them in batches ([`audisp::framing::coalesce`]), so one buffer write and
//! one send carry many records.
//!
//! With string format and auditd's socket on standard input the bridge
//! hands the stream itself to a dispatcher that takes it (unless
//! `--no-hand-over`), once the dispatcher has acknowledged everything the
//! bridge buffered: the dispatcher reads auditd's records once, and the
//! bridge only removes from the socket what the dispatcher journaled, and
//! reads it again when the dispatcher goes or stalls — leaves bytes
//! unacknowledged for `--stall-limit` — so that auditd never waits for a
//! hung dispatcher ([`Relay::offer_stream`]).

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use audisp::framing::{coalesce, BinaryFraming, Coalescer, Decoder, InputFormat, Item};
use audisp::sdk::{
    flag_value, stop_signals, Offer, Relay, RelayOptions, Returned, DEFAULT_STALL_LIMIT,
};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signalfd::SignalFd;

/// Help text; the shared options come from [`RelayOptions::help`].
const USAGE: &str = "\
Usage: audisp-bridge [OPTIONS]

Started by auditd as a plugin: reads auditd's records on standard input and
relays them to the audisp dispatcher's input socket, keeping every record
(in memory, then on disk) until the dispatcher has acknowledged it.

Options:
  --format FORMAT     what auditd writes: string (default) or binary
  --framing F         binary frames: auto (default), padded (auditd <= 4.1.0), exact
  --no-hand-over      always relay the records; by default (--hand-over) the
                      bridge hands auditd's socket to a dispatcher that takes
                      it (string format): it reads the records itself, each
                      once; the bridge takes the socket back when the
                      dispatcher goes or stalls
  --stall-limit MS    how long a dispatcher holding auditd's socket may leave
                      records unacknowledged before the bridge takes the
                      socket back (default {stall})
{relay}  --version           print the version
  -h, --help          print this help

At the end of input (auditd stopping) or on SIGTERM it keeps sending for up
to 5 seconds; whatever is still unacknowledged is sent at the next start.
";

/// How long the bridge goes on sending after its input ended.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);
/// How long the bridge stops reading while it offers the dispatcher its
/// stream (until the dispatcher has acknowledged the buffer).
const OFFER_WAIT: Duration = Duration::from_millis(200);
/// How long after a declined offer, or after the dispatcher handed the
/// stream back (the end of auditd's stream, the dispatcher stopping), the
/// bridge offers again.
const OFFER_AGAIN: Duration = Duration::from_secs(1);
/// How long after taking the stream back from a stalled dispatcher (or one
/// whose connection ended) the bridge offers it again: while the bridge
/// relays, every record costs a second copy and a longer path. Twice as
/// long after each take-back in a row, up to [`OFFER_AGAIN`].
const REOFFER: Duration = Duration::from_millis(50);
/// How often the bridge looks again when an offer is due but the
/// dispatcher cannot take the stream yet (not connected, or more than
/// [`OFFER_BACKLOG`] records behind).
const OFFER_RECHECK: Duration = Duration::from_millis(25);
/// How long the input must be quiet before the decoder may hand on a record
/// it holds (one not yet known to be complete).
const QUIET: Duration = Duration::from_secs(1);
/// A hand-over that lasted this long ends a run of take-backs: the next
/// one is offered again after [`REOFFER`].
const SETTLED: Duration = Duration::from_secs(10);
/// The stream is offered only while the dispatcher lacks at most this many
/// records (a batch or two in flight): a backlog would take longer to send
/// than [`OFFER_WAIT`], and the bridge would stop reading for nothing.
const OFFER_BACKLOG: u64 = 2000;

struct Args {
    relay: RelayOptions,
    format: InputFormat,
    /// `--hand-over` was asked for explicitly.
    hand_over_asked: bool,
}

fn relay_options() -> RelayOptions {
    let mut o = RelayOptions::new(
        "auditd",
        "AUDISP_BRIDGE_STATE_DIR",
        "/var/lib/audisp-bridge",
        1024 << 20,
    );
    // Hand-over is the bridge's default (`--no-hand-over`).
    o.stream = true;
    o
}

fn usage() -> String {
    USAGE
        .replace("{relay}", &relay_options().help())
        .replace("{stall}", &DEFAULT_STALL_LIMIT.as_millis().to_string())
}

fn parse_args() -> Result<Option<Args>, String> {
    use lexopt::prelude::*;
    let mut a = Args {
        relay: relay_options(),
        format: InputFormat::String,
        hand_over_asked: false,
    };
    let mut binary = false;
    let mut framing = BinaryFraming::Auto;
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long(flag) if RelayOptions::FLAGS.contains(&flag) => {
                let flag = flag.to_owned();
                a.relay.take(&flag, &mut p)?;
            }
            Long("format") => {
                binary = match flag_value(&mut p)?.as_str() {
                    "string" => false,
                    "binary" => true,
                    other => return Err(format!("--format {other:?}: string or binary")),
                }
            }
            Long("framing") => {
                framing = match flag_value(&mut p)?.as_str() {
                    "auto" => BinaryFraming::Auto,
                    "padded" => BinaryFraming::Padded,
                    "exact" => BinaryFraming::Exact,
                    other => return Err(format!("--framing {other:?}: auto, padded or exact")),
                }
            }
            Long("hand-over") => {
                a.relay.stream = true;
                a.hand_over_asked = true;
            }
            Long("no-hand-over") => a.relay.stream = false,
            Long("stall-limit") => {
                let v = flag_value(&mut p)?;
                a.relay.stall_limit = match v.parse::<u64>() {
                    Ok(ms) if (1..=60_000).contains(&ms) => Duration::from_millis(ms),
                    _ => {
                        return Err(format!(
                            "--stall-limit {v:?}: milliseconds, from 1 to 60000"
                        ))
                    }
                }
            }
            Long("version") => {
                println!("audisp-bridge {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            Short('h') | Long("help") => {
                print!("{}", usage());
                return Ok(None);
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    if binary {
        a.format = InputFormat::Binary(framing);
    }
    Ok(Some(a))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("audisp-bridge: {e}\n\n{}", usage());
            return ExitCode::from(2);
        }
    };
    audisp::systemd::logging::init("audisp-bridge", "info");
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    // SIGTERM/SIGINT from a signalfd, polled with standard input.
    let sfd = stop_signals()?;
    let mut relay_options = args.relay;
    if relay_options.stream {
        if args.format != InputFormat::String {
            if args.hand_over_asked {
                tracing::warn!("--hand-over is for --format string; relaying the records");
            }
            relay_options.stream = false;
        } else if !is_stream_socket(std::io::stdin().as_fd()) {
            tracing::info!(
                "standard input is not a stream socket (auditd's); relaying the records"
            );
            relay_options.stream = false;
        }
    }
    let hand_over = relay_options.stream;
    let relay = relay_options.start(FLUSH_LIMIT)?;
    read_input(&relay, args.format, hand_over, &sfd);
    relay.finish().map(|_| ())
}

/// Whether `fd` is an `AF_UNIX` stream socket (as auditd gives its
/// plugins), which the dispatcher can read by peeking.
fn is_stream_socket(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    use nix::sys::socket::{
        getsockname, getsockopt, sockopt, AddressFamily, SockaddrLike, SockaddrStorage,
    };
    let stream =
        getsockopt(&fd, sockopt::SockType).is_ok_and(|t| t == nix::sys::socket::SockType::Stream);
    stream
        && getsockname::<SockaddrStorage>(std::os::fd::AsRawFd::as_raw_fd(&fd))
            .is_ok_and(|a| a.family() == Some(AddressFamily::Unix))
}

/// While the dispatcher reads the stream: waits for it to come back (how
/// it came back), noting a stop request; None when the stop deadline
/// passed first.
fn wait_stream_back(
    relay: &Relay,
    sfd: &SignalFd,
    stop_at: &mut Option<Instant>,
) -> Option<Returned> {
    loop {
        if let Some(how) = relay.stream_back(Duration::from_millis(100)) {
            return Some(how);
        }
        if let Ok(Some(_)) = sfd.read_signal() {
            while let Ok(Some(_)) = sfd.read_signal() {}
            if stop_at.is_none() {
                tracing::info!("asked to stop; the dispatcher reads what auditd already wrote");
                *stop_at = Some(Instant::now() + Duration::from_secs(2));
            }
        }
        if stop_at.is_some_and(|t| Instant::now() >= t) {
            return None;
        }
    }
}

/// How long to wait before offering the stream again after it came back
/// `how` from a hand-over that lasted `held`; `reoffer`: the wait after the
/// next take-back.
fn next_offer(how: Returned, held: Duration, reoffer: &mut Duration) -> Duration {
    match how {
        // Read what the dispatcher left (the end of the stream) before
        // offering again.
        Returned::Released => {
            *reoffer = REOFFER;
            OFFER_AGAIN
        }
        Returned::TakenBack => {
            if held >= SETTLED {
                *reoffer = REOFFER;
            }
            let wait = *reoffer;
            *reoffer = (wait * 2).min(OFFER_AGAIN);
            wait
        }
    }
}

/// Reads auditd's stream into the buffer until it ends or a stop signal
/// comes (then what auditd already wrote is still read, for a moment).
fn read_input(relay: &Relay, format: InputFormat, hand_over: bool, sfd: &SignalFd) {
    let stdin = std::io::stdin();
    let fd = stdin.as_fd();
    let mut decoder = Decoder::new(format);
    coalesce::grow_pipe(fd);
    let mut coalescer = Coalescer::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut batch = Batch::default();
    let mut malformed = 0u64;
    let mut stop_at: Option<Instant> = None;
    // Bytes read since the decoder started, and when to offer the stream.
    let mut consumed = 0u64;
    let mut offer_at = Instant::now();
    let mut reoffer = REOFFER;
    let mut last_read = Instant::now();
    let mut on_item = |item: Item<'_>, batch: &mut Batch| match item {
        Item::Record { text, type_hint } => batch.push(type_hint.unwrap_or(0), text),
        Item::Malformed(m) => {
            malformed += 1;
            tracing::warn!(
                message_id = audisp::log_ids::INPUT_MALFORMED,
                "standard input: {m}; skipped ({malformed} so far)"
            );
        }
    };
    loop {
        if stop_at.is_some_and(|t| Instant::now() >= t) {
            tracing::warn!(
                "stopping with standard input still open; unread records stay with auditd"
            );
            break;
        }
        // Everything read is stored and the decoder holds nothing: the
        // dispatcher could read on from here (once the offer is due).
        let could_offer = hand_over
            && stop_at.is_none()
            && batch.records.is_empty()
            && relay.stream_possible()
            && relay.unacknowledged() <= OFFER_BACKLOG
            && decoder.resume_offset() == Some(consumed);
        if could_offer && Instant::now() >= offer_at {
            match relay.offer_stream(&fd, OFFER_WAIT) {
                Offer::HandedOver => {
                    let handed = Instant::now();
                    let Some(how) = wait_stream_back(relay, sfd, &mut stop_at) else {
                        return;
                    };
                    decoder = Decoder::new(format);
                    consumed = 0;
                    offer_at = Instant::now() + next_offer(how, handed.elapsed(), &mut reoffer);
                    continue;
                }
                Offer::Declined => offer_at = Instant::now() + OFFER_AGAIN,
            }
        }
        let mut fds = [
            PollFd::new(fd, PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        // After a stop request only a quiet input ends the wait early. An
        // offer falling due ends it too; one due that the dispatcher cannot
        // take yet (away, or behind) is looked at again every
        // OFFER_RECHECK, not in a tight loop.
        let now = Instant::now();
        let mut wait = if stop_at.is_some() {
            Duration::from_millis(100)
        } else {
            QUIET
        };
        if hand_over && stop_at.is_none() {
            let due_in = offer_at.saturating_duration_since(now);
            let offer_in = if could_offer || !due_in.is_zero() {
                due_in
            } else {
                OFFER_RECHECK
            };
            wait = wait.min(offer_in + Duration::from_millis(1));
        }
        let wait_ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        match nix::poll::poll(&mut fds, PollTimeout::from(wait_ms)) {
            Ok(0) if stop_at.is_some() => break,
            Ok(0) => {
                // Quiet long enough: the decoder may hand on what it holds.
                if last_read.elapsed() >= QUIET {
                    decoder.input_idle(&mut |i| on_item(i, &mut batch));
                    batch.store(relay);
                }
                continue;
            }
            Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::error!("poll: {e}");
                break;
            }
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            while let Ok(Some(_)) = sfd.read_signal() {}
            if stop_at.is_none() {
                tracing::info!("asked to stop; reading what auditd already wrote");
                stop_at = Some(Instant::now() + Duration::from_secs(2));
            }
        }
        if fds[0].revents().is_none_or(|r| r.is_empty()) {
            continue;
        }
        let n = match nix::unistd::read(fd, &mut buf) {
            Ok(n) => n,
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            Err(e) => {
                tracing::error!("reading standard input: {e}; treating it as closed");
                0
            }
        };
        if n == 0 {
            decoder.finish(&mut |i| on_item(i, &mut batch));
            batch.store(relay);
            tracing::info!("standard input closed");
            return;
        }
        consumed += n as u64;
        last_read = Instant::now();
        let before = batch.records.len();
        decoder.feed(&buf[..n], &mut |i| on_item(i, &mut batch));
        let writes = batch.records.len() - before;
        batch.store(relay);
        coalescer.after_read(n, writes);
    }
    decoder.input_idle(&mut |i| on_item(i, &mut batch));
    batch.store(relay);
}

/// Records read and not yet in the relay's buffer: their texts in one
/// reused buffer (no allocation per record), kept until the buffer takes them.
#[derive(Default)]
struct Batch {
    texts: Vec<u8>,
    /// (type, offset, length) of each record in `texts`.
    records: Vec<(u32, usize, usize)>,
}

impl Batch {
    fn push(&mut self, rtype: u32, text: &[u8]) {
        self.records.push((rtype, self.texts.len(), text.len()));
        self.texts.extend_from_slice(text);
    }

    /// Hands the records to `relay`; on a disk error they stay for the next try.
    fn store(&mut self, relay: &Relay) {
        let records: Vec<(u32, &[u8])> = self
            .records
            .iter()
            .map(|&(t, at, len)| (t, &self.texts[at..at + len]))
            .collect();
        if relay.store_slices(&records) {
            self.texts.clear();
            self.records.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_back_streams_are_offered_again_soon_and_later_each_time_in_a_row() {
        let mut reoffer = REOFFER;
        let short = Duration::from_millis(300);
        let mut waits = Vec::new();
        for _ in 0..6 {
            waits.push(next_offer(Returned::TakenBack, short, &mut reoffer));
        }
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [50, 100, 200, 400, 800, 1000]);
        // A hand-over that lasted ends the run of take-backs.
        assert_eq!(
            next_offer(Returned::TakenBack, SETTLED, &mut reoffer).as_millis(),
            50
        );
        // A stream the dispatcher handed back (its end) waits the full
        // second, and the next take-back starts afresh.
        assert_eq!(
            next_offer(Returned::TakenBack, short, &mut reoffer).as_millis(),
            100
        );
        assert_eq!(
            next_offer(Returned::Released, short, &mut reoffer).as_millis(),
            1000
        );
        assert_eq!(
            next_offer(Returned::TakenBack, short, &mut reoffer).as_millis(),
            50
        );
    }
}
