//! Feeding plugins: one sender thread per plugin, reading from the plugin's
//! journal cursor, whatever the plugin is and however it behaves.
//!
//! The thread connects to the plugin (or starts it), sends it the records it
//! subscribed to, tracks what the plugin handled, and moves the plugin's
//! cursor; when the plugin goes away it reconnects (or restarts it) with
//! back-off and resends everything not handled. Nothing it does can block
//! another plugin or the input: all socket I/O is non-blocking and the
//! records come from the journal, not from a shared queue.
//!
//! Two kinds of delivery, one per connection:
//!
//! * native plugins speak [`crate::protocol`] over `SOCK_SEQPACKET`: batched
//!   `RECORDS` messages, cumulative `ACK`s, commands and stats requests
//!   (`native.rs`);
//! * stock auditd plugins get auditd's string or binary format on a stream
//!   socket (their standard input, or a socket-activated unit's), or whole
//!   events as JSON lines (`stock_json.rs`). They never
//!   acknowledge; a record counts as handled once the plugin has read it off
//!   the socket (the socket's send queue, `SIOCOUTQ`, has drained past it),
//!   so a stock plugin that dies loses nothing that was still in the socket
//!   (`stock.rs`).
//!
//! Either kind may be a program the dispatcher starts itself (`exec`).
//!
//! A stock sender that has written everything and waits for records lends
//! its next round (read the journal, encode, write, measure what the plugin
//! read) to whichever input thread appends them (`sender::Lent`,
//! [`crate::journal::HandOff`]): that thread does it with the same
//! non-blocking writes once it holds no lock, instead of waking the sender,
//! and wakes it only when the plugin's socket is full or the write fails.
//! Under load this saves a thread wake-up per batch and plugin, the dearest
//! part of a round on a virtual machine (`benches/README.md`).
//!
//! What lives where: this file holds the [`SenderHandle`] the engine keeps
//! for each running sender and the two small interfaces between the sender
//! and a delivery (`Delivery`, what the sender asks of a connection;
//! `Host`, what a delivery asks of its sender); `filtering.rs` applies a
//! plugin's filter expression to whole events; `sender.rs` is the thread
//! (connecting, reconnecting with back-off, the overflow policy, the
//! cursor); `inflight.rs` is the queue of batches sent and not yet handled
//! that both deliveries keep.

mod filtering;
pub use filtering::Decisions;
mod inflight;
mod native;
mod sender;
mod stock;
mod stock_json;

use std::collections::HashMap;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::actions::Actions;
use super::cursor::{CursorFile, Position};
use super::liveness::Heartbeat;
use super::notices::Notices;
use super::routes::Lookup;
use super::settings::PluginSettings;
use super::stats::{self, PluginCounters, PluginSnapshot, Snapshot};
use crate::journal::{Journal, LostReason, Reader, Wakeup};
use crate::protocol::{CommandStatus, Notice};

/// What the plugin's sender is doing, for stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Connecting, starting the program, or waiting to retry.
    Connecting = 0,
    /// Connected and delivering.
    Connected = 1,
    /// Suspended by its overflow policy, an action or the admin.
    Suspended = 2,
    /// Stopped (removed from the configuration, or shutting down).
    Stopped = 3,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::Suspended => "suspended",
            State::Stopped => "stopped",
        }
    }

    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Connected,
            2 => State::Suspended,
            3 => State::Stopped,
            _ => State::Connecting,
        }
    }
}

/// How a sender is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Deliver everything before journal position `until` (or give up at
    /// `deadline`), then stop.
    Drain {
        /// Journal position to reach.
        until: u64,
        /// When to give up.
        deadline: Instant,
    },
    /// Stop now.
    Now,
}

/// Requests from the engine to the sender thread.
#[derive(Debug, Default)]
struct Control {
    stop: Option<Stop>,
    suspended: bool,
    config: Option<PluginSettings>,
}

/// The handle the engine keeps for a running sender: the plugin's name,
/// configuration, counters and cursor position, shared with the sender
/// thread, and the means to stop, suspend or reconfigure it.
pub struct SenderHandle {
    name: String,
    config: Mutex<PluginSettings>,
    counters: PluginCounters,
    position: Mutex<Position>,
    control: Mutex<Control>,
    /// Signalled when the sender takes a changed configuration.
    taken: Condvar,
    wake: Arc<Wakeup>,
    state: AtomicU8,
    /// Journal position the sender's reader is at (for `spooled`).
    reading: AtomicU64,
    heartbeat: Heartbeat,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SenderHandle {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration the sender runs with.
    pub fn config(&self) -> PluginSettings {
        lock(&self.config).clone()
    }

    /// Where the plugin is in the journal.
    pub fn position(&self) -> Position {
        *lock(&self.position)
    }

    /// The sender's liveness.
    pub fn heartbeat(&self) -> &Heartbeat {
        &self.heartbeat
    }

    /// Asks the sender to stop.
    pub fn stop(&self, how: Stop) {
        lock(&self.control).stop = Some(how);
        self.wake.wake();
    }

    /// Suspends or resumes delivery.
    pub fn set_suspended(&self, suspended: bool) {
        lock(&self.control).suspended = suspended;
        self.wake.wake();
    }

    /// Whether the plugin is suspended.
    pub fn is_suspended(&self) -> bool {
        lock(&self.control).suspended
    }

    /// Hands the sender a changed configuration: it reconnects with it and
    /// resends what the plugin had not acknowledged.
    pub fn reconfigure(&self, config: PluginSettings) {
        lock(&self.control).config = Some(config);
        self.wake.wake();
    }

    /// Waits (until `deadline` at most) for the sender to take the
    /// configuration handed over by [`SenderHandle::reconfigure`], so that a
    /// reload that reports itself done has changed what the plugin receives
    /// from then on. Returns whether it was taken.
    pub fn wait_reconfigured(&self, deadline: Instant) -> bool {
        let mut c = lock(&self.control);
        while c.config.is_some() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            c = self
                .taken
                .wait_timeout(c, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// The plugin's counters as of now.
    pub fn snapshot(&self, journal: &Journal) -> PluginSnapshot {
        let pos = self.position();
        let end = journal.end();
        let queued = end
            .saturating_sub(pos.acked + 1)
            .min(end.saturating_sub(journal.start()));
        let ring = journal.memory_start();
        let reading = self.reading.load(Ordering::Relaxed).max(pos.replay_from);
        let spooled = ring.saturating_sub(reading).min(queued);
        let c = &self.counters;
        PluginSnapshot {
            name: self.name.clone(),
            state: State::from_u8(self.state.load(Ordering::Relaxed))
                .name()
                .to_string(),
            queued,
            spooled,
            acked_seq: pos.acked,
            delivered: stats::get(&c.delivered),
            acked: stats::get(&c.acked),
            dropped: stats::get(&c.dropped),
            dropped_by_reason: c.dropped_by_reason(),
            connects: stats::get(&c.connects),
            reconnects: stats::get(&c.reconnects),
            restarts: stats::get(&c.restarts),
            commands: stats::get(&c.commands),
            filtered: stats::get(&c.filtered),
        }
    }

    fn set_state(&self, s: State) {
        self.state.store(s as u8, Ordering::Relaxed);
    }
}

/// What every sender shares.
#[derive(Clone)]
pub struct Services {
    /// The journal.
    pub journal: Journal,
    /// Runs actions.
    pub actions: Arc<Actions>,
    /// Produces a stats snapshot for `STATS` requests.
    pub snapshot: Arc<dyn Fn() -> Snapshot + Send + Sync>,
    /// Name and version sent in `WELCOME`.
    pub server: String,
    /// Inputs by index, for routing by origin.
    pub inputs: Lookup,
    /// Connectors of in-process consumers (`Transport::Internal`), by plugin
    /// name.
    pub internal: Arc<Mutex<HashMap<String, Connector>>>,
    /// Announces plugins' notices (`NOTIFY`).
    pub notices: Arc<Notices>,
    /// Filter decisions shared by the plugins of one expression.
    pub decisions: Arc<Decisions>,
}

/// Hands an in-process consumer its end of a new connection.
pub type Connector = Arc<dyn Fn(OwnedFd) + Send + Sync>;

/// Starts a sender for `config`, resuming from the plugin's stored cursor
/// (or the end of the journal for a plugin never seen before).
pub fn start(
    config: PluginSettings,
    services: Services,
    cursor_dir: &Path,
    heartbeat: Heartbeat,
) -> io::Result<(Arc<SenderHandle>, std::thread::JoinHandle<()>)> {
    let journal = &services.journal;
    let (cursor, stored) = CursorFile::open(cursor_dir, &config.name, journal.id())?;
    let position = match stored {
        Some(p) => p,
        None => {
            let end = journal.end();
            let p = Position {
                acked: end - 1,
                replay_from: end,
            };
            cursor.store(p)?;
            p
        }
    };
    let wake = journal.wakeup()?;
    let handle = Arc::new(SenderHandle {
        name: config.name.clone(),
        config: Mutex::new(config),
        counters: PluginCounters::default(),
        position: Mutex::new(position),
        control: Mutex::new(Control::default()),
        taken: Condvar::new(),
        wake,
        state: AtomicU8::new(State::Connecting as u8),
        reading: AtomicU64::new(position.replay_from),
        heartbeat,
    });
    let h = handle.clone();
    let thread = std::thread::Builder::new()
        .name(format!("plugin-{}", handle.name))
        .spawn(move || sender::Sender::new(h, services, cursor).run())?;
    Ok((handle, thread))
}

/// One connection's delivery, native or stock: what the sender's loop asks
/// of it. The delivery owns the connection's socket.
trait Delivery: Send {
    /// The socket, to wait on.
    fn socket(&self) -> BorrowedFd<'_>;

    /// Reads on from the journal and hands the plugin what the socket (and
    /// a native plugin's window) takes. An error means the connection
    /// failed.
    fn fill(&mut self, host: &mut dyn Host) -> Result<(), String>;

    /// Whether output waits for room in the socket.
    fn has_unsent(&self) -> bool;

    /// Whether nothing more may go out before the plugin acknowledges.
    fn window_full(&self) -> bool;

    /// Longest wait on the socket before looking again.
    fn patience(&self) -> Duration;

    /// After each wait: takes what the plugin said (`readable`: its socket
    /// has messages) or what can be measured of its progress. An error
    /// means the connection must end.
    fn heard(&mut self, readable: bool, host: &mut dyn Host) -> Result<(), String>;

    /// The connection is ending: takes the last of what the plugin is
    /// known to have handled, so that less is sent again.
    fn salvage(&mut self, host: &mut dyn Host);

    /// The sender skipped records (overflow): events the delivery was
    /// assembling lost their beginning.
    fn forget_partial(&mut self);

    /// Whether an appender may fill the plugin in the sender's place while
    /// the sender waits for records (`sender::Lent`): true where filling is
    /// all a round does, the plugin saying nothing back.
    fn lendable(&self) -> bool {
        false
    }
}

/// What a delivery asks of the sender that runs it: the journal reader,
/// somewhere to count and to move the cursor, and answers to a plugin's
/// requests.
trait Host {
    /// The sender's journal reader (positioned where delivery continues).
    fn reader(&mut self) -> &mut Reader;

    /// `records` records went out to the plugin.
    fn delivered(&mut self, records: u64);

    /// The plugin has handled everything up to `position`; `records` of
    /// them are newly handled.
    fn settled(&mut self, position: Position, records: u64);

    /// The close sequence number of the last event whose withheld records
    /// are counted (see `filtering`).
    fn filtered_upto(&self) -> u64;

    /// The plugin's filter withheld `records` more records, of events
    /// ending up to `upto`.
    fn filtered(&mut self, upto: u64, records: u64);

    /// Journal entries `[from, to)` were gone before the reader got to them.
    fn lost(&mut self, from: u64, to: u64, reason: &LostReason);

    /// The counters as JSON, for a plugin's `STATS` request.
    fn stats(&mut self) -> Vec<u8>;

    /// Runs the action a plugin asked for by `COMMAND`.
    fn command(&mut self, name: &str, args: &[String]) -> (CommandStatus, String);

    /// Announces what a plugin said by `NOTIFY`.
    fn notify(&mut self, notice: Notice);
}

#[cfg(test)]
mod testing;
