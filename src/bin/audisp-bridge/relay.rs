//! The bridge's sending side: relays the buffer (a journal) to the
//! dispatcher's input socket, as many records in flight as the window
//! allows, and forgets records only once the dispatcher acknowledged them.
//! When the dispatcher is away it reconnects with back-off while the buffer
//! grows; after reconnecting it resumes after the last record the
//! dispatcher says it stored (which may be beyond our last ack: an ack lost
//! with the connection), so nothing is sent twice to be stored twice.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use audisp::journal::{Journal, ReadOutcome, Step};
use audisp::sdk::InputClient;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::FLUSH_LIMIT;

/// Most records sent and not yet acknowledged.
const WINDOW: u64 = 20_000;
/// Bytes of records read from the buffer per send.
const SEND_BYTES: usize = 256 << 10;
/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the buffer is flushed to disk.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// Where to relay to.
pub struct Config {
    /// The dispatcher's input socket.
    pub socket: PathBuf,
    /// Our input name there.
    pub name: String,
    /// Highest sequence number the dispatcher acknowledged, for the main
    /// thread's final report.
    pub acked: Arc<AtomicU64>,
}

/// Sending state kept across connections.
struct State {
    /// Highest sequence number the dispatcher acknowledged.
    acked: u64,
    /// When the input ended (then we only flush, for a while).
    done_at: Option<Instant>,
    last_sync: Instant,
}

/// Relays until the input is done and everything is acknowledged, or the
/// flush time after the input ended is up.
pub fn run(cfg: Config, journal: Journal, done: Arc<AtomicBool>) {
    let mut st = State {
        acked: cfg.acked.load(Ordering::SeqCst),
        done_at: None,
        last_sync: Instant::now(),
    };
    let mut backoff = Duration::from_millis(100);
    let mut outage_reported = false;
    loop {
        match session(&cfg, &journal, &done, &mut st, &mut outage_reported) {
            Ok(()) => return,
            Err(e) => {
                if !outage_reported {
                    tracing::warn!(
                        "dispatcher unavailable: {e}; buffering records until it is back"
                    );
                    outage_reported = true;
                } else {
                    tracing::debug!("dispatcher still unavailable: {e}");
                }
            }
        }
        // Wait before the next attempt, unless the flush time is up.
        let until = Instant::now() + backoff;
        loop {
            if flush_over(&done, &mut st) {
                return;
            }
            sync(&journal, &mut st);
            let now = Instant::now();
            if now >= until {
                break;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(100)));
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Whether the input ended more than [`FLUSH_LIMIT`] ago.
fn flush_over(done: &AtomicBool, st: &mut State) -> bool {
    if st.done_at.is_none() && done.load(Ordering::SeqCst) {
        st.done_at = Some(Instant::now());
    }
    st.done_at.is_some_and(|t| t.elapsed() >= FLUSH_LIMIT)
}

/// Flushes the buffer to disk every [`SYNC_EVERY`], so a crash of the
/// machine loses at most that much of what the dispatcher has not taken.
fn sync(journal: &Journal, st: &mut State) {
    if st.last_sync.elapsed() >= SYNC_EVERY {
        st.last_sync = Instant::now();
        if let Err(e) = journal.sync_upto(journal.end()) {
            tracing::error!(
                message_id = audisp::log_ids::JOURNAL_ERROR,
                "cannot sync the buffer: {e}"
            );
        }
    }
}

/// One connection. Ok when everything is sent and acknowledged after the
/// input ended (or the flush time is up); Err when the connection fails.
fn session(
    cfg: &Config,
    journal: &Journal,
    done: &AtomicBool,
    st: &mut State,
    outage_reported: &mut bool,
) -> Result<(), String> {
    let (mut client, after) =
        InputClient::connect(&cfg.socket, &cfg.name, journal.id().0).map_err(|e| e.to_string())?;
    tracing::info!(
        "connected to the dispatcher at {}; it has our records up to {after}, we have up to {}",
        cfg.socket.display(),
        journal.end().saturating_sub(1)
    );
    *outage_reported = false;
    st.acked = after;
    cfg.acked.store(after, Ordering::SeqCst);
    let mut next = after + 1;
    if next < journal.start() {
        tracing::error!(
            message_id = audisp::log_ids::RECORD_LOSS,
            "records {next}..{} are no longer in the buffer (its size limit); they are lost",
            journal.start()
        );
        next = journal.start();
    }
    let mut reader = journal.reader(next);
    let wake = journal.wakeup().map_err(|e| format!("eventfd: {e}"))?;
    let mut batch: Vec<(u64, u32, Vec<u8>)> = Vec::new();
    loop {
        sync(journal, st);
        if flush_over(done, st) {
            return Ok(());
        }
        let inflight = reader.next_seq().saturating_sub(st.acked + 1);
        if inflight < WINDOW && !reader.caught_up() {
            batch.clear();
            let outcome = reader
                .read(SEND_BYTES, &mut |e| {
                    batch.push((e.seq, e.rtype, e.text.to_vec()));
                    Step::Next
                })
                .map_err(|e| format!("reading the buffer: {e}"))?;
            if let ReadOutcome::Lost { from, to, reason } = outcome {
                tracing::error!(
                    message_id = audisp::log_ids::RECORD_LOSS,
                    "records {from}..{to} of the buffer cannot be sent: {reason:?}"
                );
            }
            if !batch.is_empty() {
                client
                    .send(batch.iter().map(|(s, t, x)| (*s, *t, &x[..])))
                    .map_err(|e| e.to_string())?;
            }
            // Take any acknowledgement already there, without waiting.
            ack(cfg, journal, st, client.wait_ack(Duration::ZERO))?;
            continue;
        }
        if inflight > 0 {
            ack(
                cfg,
                journal,
                st,
                client.wait_ack(Duration::from_millis(100)),
            )?;
            continue;
        }
        if st.done_at.is_some() || done.load(Ordering::SeqCst) {
            // Input over, everything acknowledged.
            return Ok(());
        }
        wake.arm();
        if !reader.caught_up() {
            continue;
        }
        let mut fds = [PollFd::new(wake.fd(), PollFlags::POLLIN)];
        let _ = nix::poll::poll(&mut fds, PollTimeout::from(500u16));
        wake.clear();
    }
}

/// Records an acknowledgement and frees what it covers.
fn ack(
    cfg: &Config,
    journal: &Journal,
    st: &mut State,
    got: Result<u64, audisp::sdk::Error>,
) -> Result<(), String> {
    let acked = got.map_err(|e| e.to_string())?;
    if acked > st.acked {
        st.acked = acked;
        cfg.acked.store(acked, Ordering::SeqCst);
        if let Err(e) = journal.retain_from(acked + 1) {
            tracing::warn!("cannot delete sent parts of the buffer: {e}");
        }
    }
    Ok(())
}
