//! Input programs' buffer and relay: records wait in a [`Journal`] (the
//! newest in memory, all on disk) until the dispatcher has acknowledged them,
//! and a thread sends them to its input socket, as many in flight as the
//! window allows.
//!
//! Every input program (`audisp-bridge`, `audisp-kernel`,
//! `audisp-netfilter`) reads a source that must never wait for the
//! dispatcher — auditd's pipe, the kernel's audit socket, a netfilter log
//! group — so it stores what it reads with [`Relay::store`] and goes on
//! reading; [`Relay`] does the rest:
//!
//! * when the dispatcher is away it reconnects with back-off while the buffer
//!   grows, up to its size limit (beyond it the oldest unsent records are
//!   dropped and logged);
//! * after reconnecting it resumes after the last record the dispatcher says
//!   it stored (which may be beyond our last ack: an ack lost with the
//!   connection), so nothing is sent twice to be stored twice;
//! * the journal's id is the input's epoch and its sequence numbers are the
//!   input's record numbers, so a restart of the program itself (the buffer is
//!   reopened) resends exactly what the dispatcher lacks;
//! * [`Relay::finish`] goes on sending for a while once the source ended and
//!   says what is left for the next start.
//!
//! * an input that reads a stream socket (auditd's, `audisp-bridge`) may
//!   offer it ([`Relay::offer_stream`]): once everything in the buffer is
//!   acknowledged, the dispatcher gets the descriptor and reads the stream
//!   itself (peeking only), so each record is read once; the relay removes
//!   from the socket exactly the bytes the dispatcher says it journaled, and
//!   takes the stream back when the connection ends, or when the dispatcher
//!   leaves bytes unacknowledged for the stall limit (stopped, its disk
//!   hung: the relay then shuts the connection down before it removes a
//!   single unacknowledged byte, and reconnects), so that the source never
//!   waits for a dispatcher that is alive but stuck (see
//!   `src/engine/stream.rs`). A take-back's warning is rate-limited: one
//!   at once, then at most one a minute naming how many came between
//!   ([`TakeBackLog`]), so a dispatcher stalling again and again does not
//!   flood the journal.
//!
//! One program per buffer directory: its state lock ([`crate::statelock`])
//! refuses a second one, naming the holder's pid.
//! [`RelayOptions`] are the command-line options all these programs share.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::journal::{Journal, Limits, NewEntry, ReadOutcome, Step};
use crate::protocol::StreamAck;
use crate::sdk::InputClient;
use crate::statelock::StateLock;

/// Most records sent and not yet acknowledged.
const WINDOW: u64 = 20_000;
/// Bytes of records read from the buffer per send.
const SEND_BYTES: usize = 256 << 10;
/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the buffer is flushed to disk.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// Longest sleep of the relay while the stream it handed over is empty
/// (it wakes as soon as bytes come).
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// The first wait before reconnecting, and the wait again after a
/// connection that worked.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The wait before reconnecting after the relay took the stream back from a
/// stalled dispatcher: the stall is usually over by then (a dispatcher
/// descheduled for a few tens of milliseconds), and the stream is offered
/// again once the connection stands; a dispatcher whose earlier connection
/// is not over yet refuses, and the usual back-off follows.
const RECLAIM_BACKOFF: Duration = Duration::from_millis(10);
/// How long a dispatcher may leave bytes of a handed-over stream
/// unacknowledged by default: a healthy one acknowledges within about a
/// millisecond, and auditd's queue of 2,000 records lasts 20–40 ms at its
/// full rate.
pub const DEFAULT_STALL_LIMIT: Duration = Duration::from_millis(20);

/// Where to relay to.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The dispatcher's input socket.
    pub socket: PathBuf,
    /// Our input name there.
    pub name: String,
    /// How long [`Relay::finish`] goes on sending after the source ended.
    pub flush_limit: Duration,
    /// Offer the dispatcher the input's stream ([`Relay::offer_stream`]).
    pub stream: bool,
    /// How long the dispatcher may leave bytes of a handed-over stream
    /// unacknowledged before the relay takes the stream back.
    pub stall_limit: Duration,
}

/// What the sending thread needs.
struct Config {
    socket: PathBuf,
    name: String,
    flush_limit: Duration,
    /// Highest sequence number the dispatcher acknowledged, for the final
    /// report.
    acked: Arc<AtomicU64>,
    /// Offer the stream to dispatchers that take it.
    stream: bool,
    stall_limit: Duration,
    slot: Arc<StreamSlot>,
}

/// Marks a buffer whose stream is (or was, when the program died) handed
/// over: the dispatcher may then have stored records with numbers the
/// buffer never gave, so the next start begins a new epoch.
const HANDED_OVER: &str = "stream-handed-over";

/// Where the input's stream is.
enum StreamState {
    /// The program reads it.
    Own,
    /// Offered: the relay hands it over once the buffer is acknowledged.
    Offered(OwnedFd),
    /// The dispatcher reads it.
    HandedOver,
    /// Back: the program reads it again.
    Back(Returned),
}

/// How a handed-over stream came back ([`Relay::stream_back`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    /// The dispatcher handed it back: the end of the stream (auditd
    /// stopping), the dispatcher stopping or failing to read it; or it was
    /// never handed over. The stream's end is best read by the program
    /// itself before it is offered again.
    Released,
    /// The relay took it back: the dispatcher stalled (left bytes
    /// unacknowledged for the stall limit) or its connection ended. The
    /// stream goes on; it is worth offering again soon.
    TakenBack,
}

/// The stream's state, shared by the reading thread and the relay.
struct StreamSlot {
    state: Mutex<StreamState>,
    changed: Condvar,
    /// The current connection's dispatcher takes streams.
    possible: AtomicBool,
    /// Wakes the relay when the stream is offered.
    wake: Mutex<Option<Arc<crate::journal::Wakeup>>>,
}

impl StreamSlot {
    fn set(&self, s: StreamState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = s;
        self.changed.notify_all();
    }
}

/// What came of [`Relay::offer_stream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Not taken (no dispatcher that takes it, or the buffer not
    /// acknowledged in time): go on reading.
    Declined,
    /// The dispatcher reads the stream; wait with [`Relay::stream_back`].
    HandedOver,
}

/// The command-line options every input program shares (`--socket`,
/// `--name`, `--state-dir`, `--max-size`, `--memory`): one parser, so every
/// program spells and applies them the same way; [`RelayOptions::help`]
/// describes them.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// The dispatcher's input socket (`--socket`, `$AUDISP_INPUT_SOCKET`).
    pub socket: PathBuf,
    /// The input's name at the dispatcher (`--name`).
    pub name: String,
    /// Where the buffer lives (`--state-dir`).
    pub state_dir: PathBuf,
    /// Most bytes the buffer may hold (`--max-size`, MiB).
    pub max_size: u64,
    /// Newest part of the buffer also kept in memory (`--memory`, MiB).
    pub memory: u64,
    /// The environment variable naming the default `--state-dir`.
    state_env: String,
    /// Offer the input's stream to the dispatcher ([`Relay::offer_stream`]).
    pub stream: bool,
    /// See [`RelayConfig::stall_limit`].
    pub stall_limit: Duration,
}

impl RelayOptions {
    /// Defaults: input `name`, buffer in `$state_env` or `state_dir`, at
    /// most `max_size` bytes.
    pub fn new(name: &str, state_env: &str, state_dir: &str, max_size: u64) -> RelayOptions {
        let env =
            |k: &str, d: &str| std::env::var_os(k).map_or_else(|| PathBuf::from(d), Into::into);
        RelayOptions {
            socket: env("AUDISP_INPUT_SOCKET", "/run/audisp/input.sock"),
            name: name.into(),
            state_dir: env(state_env, state_dir),
            max_size,
            memory: 8 << 20,
            state_env: state_env.into(),
            stream: false,
            stall_limit: DEFAULT_STALL_LIMIT,
        }
    }

    /// Help text for these options, with the program's defaults.
    pub fn help(&self) -> String {
        format!(
            "  --socket PATH       the dispatcher's input socket [env AUDISP_INPUT_SOCKET,
                      default /run/audisp/input.sock]
  --name NAME         the input's name at the dispatcher (default {name})
  --state-dir DIR     the buffer of unacknowledged records [env {env},
                      default {dir}]
  --max-size MIB      most the buffer may hold, in MiB (default {max}); beyond
                      it the oldest unsent records are dropped and logged
  --memory MIB        newest part of the buffer also kept in memory (default {mem})
",
            name = self.name,
            env = self.state_env,
            dir = self.state_dir.display(),
            max = self.max_size >> 20,
            mem = self.memory >> 20,
        )
    }

    /// The long flags these options answer to (without `--`).
    pub const FLAGS: [&'static str; 5] = ["socket", "name", "state-dir", "max-size", "memory"];

    /// Takes `--flag`, one of [`RelayOptions::FLAGS`], reading its value
    /// from `p`.
    pub fn take(&mut self, flag: &str, p: &mut lexopt::Parser) -> Result<(), String> {
        let mib = |v: String, what: &str| -> Result<u64, String> {
            match v.parse::<u64>() {
                Ok(n) if n > 0 && n < (1 << 40) => Ok(n << 20),
                _ => Err(format!("{what} {v:?}: a whole number of MiB, at least 1")),
            }
        };
        match flag {
            "socket" => self.socket = flag_value(p)?.into(),
            "name" => self.name = flag_value(p)?,
            "state-dir" => self.state_dir = flag_value(p)?.into(),
            "max-size" => self.max_size = mib(flag_value(p)?, "--max-size")?,
            "memory" => self.memory = mib(flag_value(p)?, "--memory")?,
            other => return Err(format!("--{other} is not an input option")),
        }
        Ok(())
    }

    /// Opens the buffer and starts relaying; `flush_limit` as in
    /// [`RelayConfig`].
    pub fn start(self, flush_limit: Duration) -> Result<Relay, String> {
        Relay::start(
            &self.state_dir,
            Limits {
                segment_size: (self.max_size / 16).clamp(64 << 10, 64 << 20),
                max_size: self.max_size,
                memory: self.memory.min(self.max_size),
            },
            RelayConfig {
                socket: self.socket,
                name: self.name,
                flush_limit,
                stream: self.stream,
                stall_limit: self.stall_limit,
            },
        )
    }
}

/// A signalfd for SIGTERM and SIGINT, blocked in every thread started after
/// this: an input program polls it beside its source and stops reading when
/// it is readable.
pub fn stop_signals() -> Result<SignalFd, String> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))
}

/// The value of the option just read, as UTF-8.
pub fn flag_value(p: &mut lexopt::Parser) -> Result<String, String> {
    p.value()
        .map_err(|e| e.to_string())?
        .into_string()
        .map_err(|v| format!("{v:?} is not UTF-8"))
}

/// An input program's buffer and the thread that relays it.
pub struct Relay {
    journal: Journal,
    done: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    sender: JoinHandle<()>,
    flush_limit: Duration,
    slot: Arc<StreamSlot>,
    _lock: StateLock,
}

impl Relay {
    /// Opens (or creates) the buffer in `dir`, locked against a second
    /// program, and starts relaying it as `cfg` says.
    pub fn start(dir: &Path, limits: Limits, cfg: RelayConfig) -> Result<Relay, String> {
        // One program per buffer, until the relay is dropped.
        let lock = StateLock::dir(dir)?;
        let marker = dir.join(HANDED_OVER);
        if marker.exists() {
            // Everything in the buffer was acknowledged when the stream was
            // handed over; the dispatcher may have stored records beyond
            // its end under numbers this buffer would give again.
            tracing::warn!(
                "the stream was handed over to the dispatcher when this program stopped; starting a new buffer (a new epoch)"
            );
            Journal::remove_all(dir)
                .and_then(|()| std::fs::remove_file(&marker))
                .map_err(|e| format!("cannot reset the buffer in {}: {e}", dir.display()))?;
        }
        let journal = Journal::open(dir, limits)
            .map_err(|e| format!("cannot open the buffer in {}: {e}", dir.display()))?;
        tracing::info!(
            "relaying to {} as input {:?}; {} records wait in the buffer {}",
            cfg.socket.display(),
            cfg.name,
            journal.end() - journal.start(),
            dir.display()
        );
        let done = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(journal.start().saturating_sub(1)));
        let slot = Arc::new(StreamSlot {
            state: Mutex::new(StreamState::Own),
            changed: Condvar::new(),
            possible: AtomicBool::new(false),
            wake: Mutex::new(None),
        });
        let sender = {
            let cfg = Config {
                socket: cfg.socket,
                name: cfg.name,
                flush_limit: cfg.flush_limit,
                acked: acked.clone(),
                stream: cfg.stream,
                stall_limit: cfg.stall_limit,
                slot: slot.clone(),
            };
            let journal = journal.clone();
            let done = done.clone();
            std::thread::Builder::new()
                .name("relay".into())
                .spawn(move || run(cfg, journal, done))
                .map_err(|e| format!("cannot start the relay thread: {e}"))?
        };
        Ok(Relay {
            journal,
            done,
            acked,
            sender,
            flush_limit: cfg.flush_limit,
            slot,
            _lock: lock,
        })
    }

    /// Appends records (type or 0, text) to the buffer, where the relay
    /// thread finds them. A record the buffer cannot take (disk error) stays
    /// in `batch` and is retried with the next ones.
    pub fn store(&self, batch: &mut Vec<(u32, Vec<u8>)>) {
        let records: Vec<(u32, &[u8])> = batch.iter().map(|(t, x)| (*t, x.as_slice())).collect();
        if self.store_slices(&records) {
            batch.clear();
        }
    }

    /// [`Relay::store`] for records lent from the caller's own buffers
    /// (no copy per record): true when they are in the buffer; false when
    /// it cannot take them (disk error, logged), and the caller keeps them
    /// to retry with the next ones.
    pub fn store_slices(&self, records: &[(u32, &[u8])]) -> bool {
        if records.is_empty() {
            return true;
        }
        let entries: Vec<NewEntry<'_>> = records
            .iter()
            .map(|&(rtype, text)| NewEntry {
                event: 0,
                source_seq: 0,
                rtype,
                source: 0,
                flags: 0,
                origin: None,
                text: text.into(),
            })
            .collect();
        match self.journal.append(&entries) {
            Ok(a) => {
                if let Some(before) = a.evicted_before {
                    tracing::error!(
                        message_id = crate::log_ids::RECORD_LOSS,
                        "the buffer is full (--max-size): records before {before} were dropped unsent"
                    );
                }
                true
            }
            Err(e) => {
                tracing::error!(
                    message_id = crate::log_ids::JOURNAL_ERROR,
                    "cannot write the buffer: {e}; keeping {} records in memory",
                    records.len()
                );
                false
            }
        }
    }

    /// Whether the dispatcher now connected takes the stream (and the
    /// program offers it).
    pub fn stream_possible(&self) -> bool {
        self.slot.possible.load(Ordering::SeqCst)
    }

    /// Offers the dispatcher `stream`, a `format = string` stream socket
    /// read up to a record's start, everything read from it stored: the
    /// relay hands it over once the dispatcher has acknowledged the whole
    /// buffer, waiting up to `limit` for that. The caller stops reading it
    /// meanwhile, and after [`Offer::HandedOver`] until
    /// [`Relay::stream_back`] says it has it back.
    pub fn offer_stream(&self, stream: &impl AsFd, limit: Duration) -> Offer {
        let Ok(dup) = stream.as_fd().try_clone_to_owned() else {
            return Offer::Declined;
        };
        let mut state = self.slot.state.lock().unwrap_or_else(|p| p.into_inner());
        *state = StreamState::Offered(dup);
        if let Some(w) = &*self.slot.wake.lock().unwrap_or_else(|p| p.into_inner()) {
            w.wake();
        }
        let deadline = Instant::now() + limit;
        loop {
            match &*state {
                StreamState::HandedOver => return Offer::HandedOver,
                StreamState::Back(_) => {
                    *state = StreamState::Own;
                    return Offer::Declined;
                }
                StreamState::Own => return Offer::Declined,
                StreamState::Offered(_) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                // Withdrawn: the relay has not taken it (it would have
                // said HandedOver under this lock).
                *state = StreamState::Own;
                return Offer::Declined;
            }
            state = self
                .slot
                .changed
                .wait_timeout(state, deadline - now)
                .map(|(s, _)| s)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Waits up to `limit` for a handed-over stream to come back: how it
    /// came back when the program reads it again (from a record's start,
    /// with a fresh decoder); None while the dispatcher still reads it.
    pub fn stream_back(&self, limit: Duration) -> Option<Returned> {
        let state = self.slot.state.lock().unwrap_or_else(|p| p.into_inner());
        let (mut state, _) = self
            .slot
            .changed
            .wait_timeout_while(state, limit, |s| matches!(s, StreamState::HandedOver))
            .unwrap_or_else(|p| p.into_inner());
        let returned = match *state {
            StreamState::HandedOver => return None,
            StreamState::Back(how) => how,
            StreamState::Own | StreamState::Offered(_) => Returned::Released,
        };
        *state = StreamState::Own;
        Some(returned)
    }

    /// Records stored and not yet acknowledged by the dispatcher.
    pub fn unacknowledged(&self) -> u64 {
        self.journal
            .end()
            .saturating_sub(self.acked.load(Ordering::SeqCst) + 1)
    }

    /// The source ended: sends for up to the flush limit, makes the buffer
    /// durable and says what is left for the next start. Returns the number
    /// of records the dispatcher has not acknowledged.
    pub fn finish(self) -> Result<u64, String> {
        self.done.store(true, Ordering::SeqCst);
        // The relay stops by itself within the flush limit, unless it is
        // stuck in a send to a dispatcher that does not read (stopped): then
        // leave it.
        let deadline = Instant::now() + self.flush_limit + Duration::from_secs(2);
        while !self.sender.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.sender.is_finished() {
            if self.sender.join().is_err() {
                return Err("the relay thread failed".into());
            }
        } else {
            tracing::warn!("the dispatcher takes no records (stopped?); giving up sending");
        }
        let left = self
            .journal
            .end()
            .saturating_sub(self.acked.load(Ordering::SeqCst) + 1);
        if let Err(e) = self.journal.sync_upto(self.journal.end()) {
            tracing::error!(
                message_id = crate::log_ids::JOURNAL_ERROR,
                "cannot sync the buffer: {e}"
            );
        }
        if left == 0 {
            tracing::info!("input ended; the dispatcher has every record");
        } else {
            tracing::warn!(
                "input ended; {left} records not yet acknowledged stay in {} for the next start",
                self.journal.dir().display()
            );
        }
        Ok(left)
    }
}

/// Take-backs from a stalled dispatcher are logged singly at most this
/// often ([`TakeBackLog`]).
const TAKE_BACK_LOG_EVERY: Duration = Duration::from_secs(60);

/// Rate limit of the take-back warning: a dispatcher that stalls again and
/// again would otherwise fill the journal with a warning per take-back. The
/// first of a series is logged at once; the ones within a minute after it
/// are counted, and the next one logged names how many there were.
#[derive(Debug, Default)]
struct TakeBackLog {
    /// When a take-back was last logged.
    logged: Option<Instant>,
    /// Take-backs since then not logged singly.
    quiet: u64,
}

impl TakeBackLog {
    /// A take-back at `now`: `Some(n)` if it is logged, `n` the take-backs
    /// before it that were not; None if it is only counted.
    fn note(&mut self, now: Instant) -> Option<u64> {
        if self
            .logged
            .is_some_and(|t| now.duration_since(t) < TAKE_BACK_LOG_EVERY)
        {
            self.quiet += 1;
            return None;
        }
        self.logged = Some(now);
        Some(std::mem::take(&mut self.quiet))
    }
}

/// Sending state kept across connections.
struct State {
    /// Highest sequence number the dispatcher acknowledged.
    acked: u64,
    /// When the input ended (then we only flush, for a while).
    done_at: Option<Instant>,
    last_sync: Instant,
    /// The last connection ended with the stream taken back from a stalled
    /// dispatcher: reconnect soon ([`RECLAIM_BACKOFF`]).
    reclaimed: bool,
    /// How take-backs from a stalled dispatcher were logged.
    take_backs: TakeBackLog,
}

/// Relays until the input is done and everything is acknowledged, or the
/// flush time after the input ended is up.
fn run(cfg: Config, journal: Journal, done: Arc<AtomicBool>) {
    let mut st = State {
        acked: cfg.acked.load(Ordering::SeqCst),
        done_at: None,
        last_sync: Instant::now(),
        reclaimed: false,
        take_backs: TakeBackLog::default(),
    };
    let mut backoff = FIRST_BACKOFF;
    let mut outage_reported = false;
    loop {
        let result = session(&cfg, &journal, &done, &mut st, &mut outage_reported);
        cfg.slot.possible.store(false, Ordering::SeqCst);
        if !outage_reported {
            // It connected (or this is the first attempt).
            backoff = FIRST_BACKOFF;
        }
        match result {
            Ok(()) => return,
            Err(e) => {
                if st.reclaimed {
                    // A take-back: its own (rate-limited) warning says it,
                    // and stands for the outage (a reconnect right after
                    // may be refused until the dispatcher saw the end).
                    tracing::debug!("connection ended: {e}");
                    outage_reported = true;
                } else if !outage_reported {
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
        let wait = if std::mem::take(&mut st.reclaimed) {
            RECLAIM_BACKOFF
        } else {
            let wait = backoff;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            wait
        };
        let until = Instant::now() + wait;
        loop {
            if flush_over(&cfg, &done, &mut st) {
                return;
            }
            sync(&journal, &mut st);
            let now = Instant::now();
            if now >= until {
                break;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(100)));
        }
    }
}

/// Whether the input ended more than the flush limit ago.
fn flush_over(cfg: &Config, done: &AtomicBool, st: &mut State) -> bool {
    if st.done_at.is_none() && done.load(Ordering::SeqCst) {
        st.done_at = Some(Instant::now());
    }
    st.done_at.is_some_and(|t| t.elapsed() >= cfg.flush_limit)
}

/// Flushes the buffer to disk every [`SYNC_EVERY`], so a crash of the
/// machine loses at most that much of what the dispatcher has not taken.
fn sync(journal: &Journal, st: &mut State) {
    if st.last_sync.elapsed() >= SYNC_EVERY {
        st.last_sync = Instant::now();
        if let Err(e) = journal.sync_upto(journal.end()) {
            tracing::error!(
                message_id = crate::log_ids::JOURNAL_ERROR,
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
    let (mut client, after) = if cfg.stream {
        InputClient::connect_stream(&cfg.socket, &cfg.name, journal.id().0)
    } else {
        InputClient::connect(&cfg.socket, &cfg.name, journal.id().0)
    }
    .map_err(|e| e.to_string())?;
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
            message_id = crate::log_ids::RECORD_LOSS,
            "records {next}..{} are no longer in the buffer (its size limit); they are lost",
            journal.start()
        );
        next = journal.start();
    }
    let mut reader = journal.reader(next);
    let wake = journal.wakeup().map_err(|e| format!("eventfd: {e}"))?;
    *cfg.slot.wake.lock().unwrap_or_else(|p| p.into_inner()) = Some(wake.clone());
    cfg.slot
        .possible
        .store(client.takes_stream(), Ordering::SeqCst);
    // Records read for one send: (seq, type, offset, length) into `texts`,
    // one buffer reused for every send rather than a copy per record.
    let mut batch: Vec<(u64, u32, usize, usize)> = Vec::new();
    let mut texts: Vec<u8> = Vec::new();
    loop {
        sync(journal, st);
        if flush_over(cfg, done, st) {
            return Ok(());
        }
        let inflight = reader.next_seq().saturating_sub(st.acked + 1);
        if inflight == 0 && reader.caught_up() && client.takes_stream() {
            if let Some(stream) = take_offer(&cfg.slot) {
                let r = stream_session(cfg, journal, done, st, &mut client, stream);
                reader.seek(journal.end());
                r?;
                continue;
            }
        }
        if inflight < WINDOW && !reader.caught_up() {
            batch.clear();
            texts.clear();
            let outcome = reader
                .read(SEND_BYTES, &mut |e| {
                    batch.push((e.seq, e.rtype, texts.len(), e.text.len()));
                    texts.extend_from_slice(e.text);
                    Step::Next
                })
                .map_err(|e| format!("reading the buffer: {e}"))?;
            if let ReadOutcome::Lost { from, to, reason } = outcome {
                tracing::error!(
                    message_id = crate::log_ids::RECORD_LOSS,
                    "records {from}..{to} of the buffer cannot be sent: {reason:?}"
                );
            }
            if !batch.is_empty() {
                client
                    .send(
                        batch
                            .iter()
                            .map(|&(s, t, at, len)| (s, t, &texts[at..at + len])),
                    )
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
    got: Result<u64, crate::sdk::Error>,
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

/// The stream, if it is offered; it is then marked handed over (the
/// reading thread waits for it to come back).
fn take_offer(slot: &StreamSlot) -> Option<OwnedFd> {
    let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
    if !matches!(*state, StreamState::Offered(_)) {
        return None;
    }
    let StreamState::Offered(fd) = std::mem::replace(&mut *state, StreamState::HandedOver) else {
        return None;
    };
    slot.changed.notify_all();
    Some(fd)
}

/// Hands the (offered, fully acknowledged) stream over and removes from it
/// what the dispatcher says it journaled, until the dispatcher releases it
/// (Ok: the connection goes on) or the connection ends (Err); either way
/// the reading thread then has it back, at the first byte not acknowledged,
/// the buffer's next number following the last record acknowledged. If the
/// input ended and the flush time is up, it returns Ok with the stream
/// still handed over, the mark left for the next start (a new epoch).
fn stream_session(
    cfg: &Config,
    journal: &Journal,
    done: &AtomicBool,
    st: &mut State,
    client: &mut InputClient,
    stream: OwnedFd,
) -> Result<(), String> {
    let marker = journal.dir().join(HANDED_OVER);
    let next = journal.end().max(st.acked + 1);
    let marked = crate::statefile::write_atomically(&marker, b"")
        .map_err(|e| format!("cannot mark the buffer: {e}"))
        .and_then(|()| {
            journal
                .skip_to(next)
                .map_err(|e| format!("cannot renumber the buffer: {e}"))
        });
    if let Err(e) = marked {
        tracing::error!(
            message_id = crate::log_ids::JOURNAL_ERROR,
            "{e}; reading the stream ourselves"
        );
        let _ = std::fs::remove_file(&marker);
        cfg.slot.set(StreamState::Back(Returned::Released));
        return Ok(());
    }
    if let Err(e) = client.hand_over(stream.as_fd(), next) {
        take_back(cfg, journal, st, &marker, Returned::TakenBack);
        return Err(e.to_string());
    }
    tracing::info!("handed the stream over to the dispatcher from record {next}");
    // Bytes of the stream removed since the hand-over.
    let mut removed = 0u64;
    let mut scratch = vec![0u8; 64 << 10];
    // When the dispatcher last kept up: an acknowledgement moved on, or
    // nothing waited in the socket.
    let mut last_progress = Instant::now();
    // While bytes wait, wake this often to see whether the dispatcher
    // keeps up; while the socket is empty, sleep until bytes come.
    let nap = (cfg.stall_limit / 4).max(Duration::from_millis(1));
    let mut empty = false;
    loop {
        if flush_over(cfg, done, st) {
            tracing::warn!("stopping with the stream still handed over to the dispatcher");
            return Ok(());
        }
        let woke = Instant::now();
        let got = if empty {
            let got = client.wait_stream_ack_or_input(stream.as_fd(), IDLE_WAIT);
            // Bytes that came while the socket was empty came just now.
            last_progress = Instant::now();
            got
        } else {
            client.wait_stream_ack(nap)
        };
        let ack = match got {
            Ok(None) => {
                let waiting = match crate::uds::unread(&stream) {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::debug!("SIOCINQ on the stream: {e}");
                        empty = false;
                        continue;
                    }
                };
                let now = Instant::now();
                if waiting == 0 {
                    last_progress = now;
                    // Readable and empty: the end of the stream (the
                    // dispatcher releases it soon); go on napping.
                    empty = !(empty && now.duration_since(woke) < IDLE_WAIT);
                    continue;
                }
                empty = false;
                let since = now.duration_since(last_progress);
                if since < cfg.stall_limit {
                    continue;
                }
                // The connection is shut down before a single
                // unacknowledged byte is removed.
                match client.shut_down() {
                    Ok(()) => {
                        // Acknowledgements sent before the shutdown are
                        // good: the bytes they cover were journaled.
                        while let Ok(Some(ack)) = client.wait_stream_ack(Duration::ZERO) {
                            apply_stream_ack(cfg, st, &stream, &mut removed, &ack, &mut scratch);
                        }
                        return reclaim(cfg, journal, st, &marker, (since, waiting));
                    }
                    Err(e) => {
                        // Leave the stream with the dispatcher; it may
                        // still catch up.
                        tracing::error!(
                            "cannot take the stream back from a stalled dispatcher: {e}"
                        );
                        last_progress = Instant::now();
                        continue;
                    }
                }
            }
            Ok(Some(a)) => a,
            Err(e) => {
                take_back(cfg, journal, st, &marker, Returned::TakenBack);
                return Err(e.to_string());
            }
        };
        if apply_stream_ack(cfg, st, &stream, &mut removed, &ack, &mut scratch) {
            last_progress = Instant::now();
        }
        if ack.released {
            take_back(cfg, journal, st, &marker, Returned::Released);
            tracing::info!(
                "the dispatcher handed the stream back after record {}",
                st.acked
            );
            return Ok(());
        }
    }
}

/// Removes from the stream what `ack` says the dispatcher journaled
/// (`removed`: bytes removed so far) and records its last number; true when
/// it moved on.
fn apply_stream_ack(
    cfg: &Config,
    st: &mut State,
    stream: &OwnedFd,
    removed: &mut u64,
    ack: &StreamAck,
    scratch: &mut [u8],
) -> bool {
    if ack.offset <= *removed && ack.seq <= st.acked {
        return false;
    }
    if let Err(e) = remove(stream, ack.offset.saturating_sub(*removed), scratch) {
        // Nobody else reads the socket: this cannot happen short of the
        // kernel losing bytes. Stop handing over.
        tracing::error!(
            message_id = crate::log_ids::RECORD_LOSS,
            "removing journaled bytes from the stream: {e}"
        );
    }
    *removed = (*removed).max(ack.offset);
    if ack.seq > st.acked {
        st.acked = ack.seq;
        cfg.acked.store(ack.seq, Ordering::SeqCst);
    }
    true
}

/// Takes a stream back from a dispatcher that stopped acknowledging it
/// (stopped, its disk stalled), so that auditd's feed never waits for it.
/// The connection is already shut down ([`InputClient::shut_down`]), so the
/// dispatcher journals nothing it peeks from now on (`src/engine/stream.rs`
/// checks the connection after every peek); the caller removed what it
/// acknowledged before, and the reading thread reads on from the first
/// unacknowledged byte. Err: `run` reconnects, and the stream is handed over again once the
/// dispatcher answers.
fn reclaim(
    cfg: &Config,
    journal: &Journal,
    st: &mut State,
    marker: &Path,
    (since, waiting): (Duration, usize),
) -> Result<(), String> {
    let what = format!(
        "the dispatcher left {waiting} bytes of auditd's stream unacknowledged for {} ms (--stall-limit {} ms); reading the stream again from record {}",
        since.as_millis(),
        cfg.stall_limit.as_millis(),
        st.acked + 1
    );
    match st.take_backs.note(Instant::now()) {
        Some(0) => tracing::warn!(
            "{what} (further take-backs within a minute are counted, and logged with the next one after it)"
        ),
        Some(n) => tracing::warn!(
            "{what}; {n} more take-backs since the last one logged, not logged singly"
        ),
        None => tracing::debug!("{what}"),
    }
    take_back(cfg, journal, st, marker, Returned::TakenBack);
    st.reclaimed = true;
    Err("the dispatcher stalled".into())
}

/// The dispatcher no longer reads the stream: the buffer numbers on after
/// the last record it acknowledged, and the reading thread has it back
/// (`how`).
fn take_back(cfg: &Config, journal: &Journal, st: &State, marker: &Path, how: Returned) {
    match journal.skip_to(st.acked + 1) {
        Ok(()) => {
            if let Err(e) = std::fs::remove_file(marker) {
                tracing::warn!("cannot remove {}: {e}", marker.display());
            }
        }
        // The mark stays: the next start begins a new epoch.
        Err(e) => tracing::error!(
            message_id = crate::log_ids::JOURNAL_ERROR,
            "cannot renumber the buffer: {e}"
        ),
    }
    cfg.slot.set(StreamState::Back(how));
}

/// Removes exactly `n` bytes (journaled by the dispatcher) from the front
/// of the stream.
fn remove(stream: &OwnedFd, mut n: u64, scratch: &mut [u8]) -> std::io::Result<()> {
    while n > 0 {
        let want = scratch.len().min(n as usize);
        match crate::uds::recv_nowait(stream, &mut scratch[..want], 0)? {
            None => return Err(std::io::ErrorKind::WouldBlock.into()),
            Some(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the stream ended {n} bytes short"),
                ))
            }
            Some(got) => n -= got as u64,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first take-back is logged at once; the ones within a minute
    /// after it are only counted, and the next one logged says how many.
    #[test]
    fn take_backs_are_logged_first_then_at_most_once_a_minute_with_a_count() {
        let mut log = TakeBackLog::default();
        let t = Instant::now();
        let at = |s: u64| t + Duration::from_secs(s);
        assert_eq!(log.note(t), Some(0));
        for s in 1..=5 {
            assert_eq!(log.note(at(s)), None);
        }
        assert_eq!(log.note(at(60)), Some(5));
        assert_eq!(log.note(at(119)), None);
        assert_eq!(log.note(at(500)), Some(1));
        assert_eq!(log.note(at(1000)), Some(0));
    }
}
