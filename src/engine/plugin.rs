//! One plugin's sender: a thread that feeds one plugin from its journal
//! cursor, whatever the plugin is and however it behaves.
//!
//! The thread connects to the plugin (or starts it), sends it the records it
//! subscribed to, tracks what the plugin acknowledged, and moves the plugin's
//! cursor; when the plugin goes away it reconnects (or restarts it) with
//! back-off and resends everything not acknowledged. Nothing it does can
//! block another plugin or the input: all socket I/O is non-blocking and the
//! records come from the journal, not from a shared queue.
//!
//! Three kinds of plugin are fed:
//!
//! * native plugins speak [`crate::protocol`] over `SOCK_SEQPACKET`: batched
//!   `RECORDS` messages, cumulative `ACK`s, commands and stats requests;
//! * stock auditd plugins get auditd's string or binary format on a stream
//!   socket (their standard input, or a socket-activated unit's). They never
//!   acknowledge; a record counts as handled once the plugin has read it off
//!   the socket (the socket's send queue, `SIOCOUTQ`, has drained past it),
//!   so a stock plugin that dies loses nothing that was still in the socket;
//! * either kind may be a program the dispatcher starts itself (`exec`).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket;

use super::actions::{Actions, Effect};
use super::child::{self, Running, StdinSocket};
use super::cursor::{CursorFile, Position};
use super::liveness::Heartbeat;
use super::settings::{DeliveryMode, Overflow, PluginFormat, PluginSettings, Transport};
use super::stats::{self, PluginCounters, PluginSnapshot, Snapshot};
use crate::engine::events::{Assembler, Event, EventRecord};
use crate::engine::subscription::Subscription;
use crate::journal::entry::flags;
use crate::journal::{EntryRef, Journal, ReadOutcome, Reader, Step, Wakeup};
use crate::protocol::{self, record_flags, FromPlugin, Mode, RecordsBuilder, Role, Welcome};
use crate::uds;

/// Native messages in flight before the sender waits for acknowledgements:
/// twice what a plugin takes in at once (`sdk`'s `COALESCE`), so that the
/// next messages are on their way while a plugin handles the last ones.
const WINDOW: usize = 32;
/// How long a freshly connected plugin has to say hello (a socket-activated
/// unit may still be starting).
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of stock-format output buffered before the sender waits.
const LEGACY_BUFFER: usize = 256 * 1024;
/// A plugin that stayed connected this long gets its back-off reset.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

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

#[derive(Debug, Default)]
struct Control {
    stop: Option<Stop>,
    suspended: bool,
    config: Option<PluginSettings>,
}

/// The part of a plugin's sender the rest of the engine sees.
pub struct Plugin {
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

impl Plugin {
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
    /// configuration handed over by [`Plugin::reconfigure`], so that a reload
    /// that reports itself done has changed what the plugin receives from
    /// then on. Returns whether it was taken.
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
            connects: stats::get(&c.connects),
            reconnects: stats::get(&c.reconnects),
            restarts: stats::get(&c.restarts),
            commands: stats::get(&c.commands),
        }
    }

    fn set_state(&self, s: State) {
        self.state.store(s as u8, Ordering::Relaxed);
    }
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Connected,
            2 => State::Suspended,
            3 => State::Stopped,
            _ => State::Connecting,
        }
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
    /// Connectors of in-process consumers (`Transport::Internal`), by plugin
    /// name.
    pub internal: Arc<Mutex<HashMap<String, Connector>>>,
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
) -> io::Result<(Arc<Plugin>, std::thread::JoinHandle<()>)> {
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
    let suspended = false;
    let plugin = Arc::new(Plugin {
        name: config.name.clone(),
        config: Mutex::new(config),
        counters: PluginCounters::default(),
        position: Mutex::new(position),
        control: Mutex::new(Control {
            suspended,
            ..Control::default()
        }),
        taken: Condvar::new(),
        wake,
        state: AtomicU8::new(State::Connecting as u8),
        reading: AtomicU64::new(position.replay_from),
        heartbeat,
    });
    let p = plugin.clone();
    let thread = std::thread::Builder::new()
        .name(format!("plugin-{}", plugin.name))
        .spawn(move || Sender::new(p, services, cursor).run())?;
    Ok((plugin, thread))
}

/// Why a session ended.
enum End {
    /// The sender must stop (drained, stopped, or shut down).
    Stop,
    /// Suspended: disconnect and wait.
    Suspend,
    /// New configuration: reconnect at once.
    Reconfigure,
    /// The plugin went away or misbehaved; reconnect after back-off.
    Lost(String),
}

/// A record or a whole event waiting for room in the next message.
struct Carry {
    event: Event,
    /// Index of the first record not yet sent.
    next: usize,
    first_seq: u64,
}

/// One message (native) or write batch (stock formats) not yet acknowledged.
#[derive(Debug, Clone, Copy)]
struct Inflight {
    /// Id that acknowledges it (native: record or event id; stock formats:
    /// byte offset); None for a batch that held only skipped entries.
    ack: Option<u64>,
    /// The cursor once it is acknowledged.
    position: Position,
    records: u64,
}

struct Sender {
    plugin: Arc<Plugin>,
    services: Services,
    cursor: CursorFile,
    reader: Reader,
    config: PluginSettings,
    outage_reported: bool,
    loss_reported: bool,
}

/// The per-connection state.
struct Session {
    sock: OwnedFd,
    child: Option<Running>,
    native: bool,
    binary: bool,
    mode: Mode,
    subscription: Subscription,
    /// Native: records and events up to here are already with the plugin.
    skip_upto: u64,
    inflight: VecDeque<Inflight>,
    builder: RecordsBuilder,
    unsent: Option<Vec<u8>>,
    assembler: Assembler,
    carry: Option<Carry>,
    /// Stock formats: bytes waiting to be written, and counters of bytes.
    out: Vec<u8>,
    out_pos: usize,
    queued_bytes: u64,
    written_bytes: u64,
    started: Instant,
}

impl Sender {
    fn new(plugin: Arc<Plugin>, services: Services, cursor: CursorFile) -> Sender {
        let pos = plugin.position();
        let reader = services.journal.reader(pos.replay_from);
        let config = plugin.config();
        Sender {
            plugin,
            services,
            cursor,
            reader,
            config,
            outage_reported: false,
            loss_reported: false,
        }
    }

    fn run(mut self) {
        let mut backoff = self.config.restart.initial;
        loop {
            self.plugin.heartbeat.beat();
            match self.control() {
                Some(End::Stop) => break,
                Some(End::Suspend) => {
                    self.suspended();
                    continue;
                }
                Some(End::Reconfigure) => backoff = self.config.restart.initial,
                _ => {}
            }
            if let Some(End::Stop) = self.drained() {
                break;
            }
            self.plugin.set_state(State::Connecting);
            let end = match self.connect() {
                Ok(mut session) => {
                    stats::add(&self.plugin.counters.connects, 1);
                    if self.outage_reported {
                        tracing::info!(plugin = %self.plugin.name, "plugin is back; resending what it had not acknowledged");
                        self.outage_reported = false;
                    }
                    let end = self.session(&mut session);
                    if session.started.elapsed() >= HEALTHY_AFTER {
                        backoff = self.config.restart.initial;
                    }
                    self.close(session);
                    end
                }
                Err(e) => End::Lost(e),
            };
            // Whatever was not acknowledged is sent again next time.
            let pos = self.plugin.position();
            self.reader.seek(pos.replay_from);
            match end {
                End::Stop => break,
                End::Suspend | End::Reconfigure => continue,
                End::Lost(why) if lock(&self.plugin.control).stop.is_some() => {
                    // Stopping, and the plugin is gone: what it has not
                    // acknowledged stays in the journal for next time.
                    tracing::info!(
                        plugin = %self.plugin.name,
                        "plugin unavailable while stopping ({why}); its records stay in the journal"
                    );
                    break;
                }
                End::Lost(why) => {
                    stats::add(&self.plugin.counters.reconnects, 1);
                    if !self.outage_reported {
                        tracing::warn!(
                            message_id = crate::log_ids::PLUGIN_LOST,
                            plugin = %self.plugin.name,
                            "plugin {} unavailable: {why}; retrying with back-off (records wait in the journal)",
                            self.plugin.name
                        );
                        self.outage_reported = true;
                    } else {
                        tracing::debug!(plugin = %self.plugin.name, "still unavailable: {why}");
                    }
                    self.wait(backoff);
                    backoff = (backoff * 2).min(self.config.restart.max);
                }
            }
        }
        self.plugin.set_state(State::Stopped);
        let _ = self.cursor.sync();
    }

    /// Applies control requests. Returns how the current activity must end.
    fn control(&mut self) -> Option<End> {
        let mut c = lock(&self.plugin.control);
        if let Some(cfg) = c.config.take() {
            self.plugin.taken.notify_all();
            *lock(&self.plugin.config) = cfg.clone();
            self.config = cfg;
            return Some(End::Reconfigure);
        }
        match c.stop {
            Some(Stop::Now) => return Some(End::Stop),
            // A suspended plugin receives nothing: there is nothing to drain.
            Some(Stop::Drain { .. }) if c.suspended => return Some(End::Stop),
            _ => {}
        }
        if c.suspended {
            return Some(End::Suspend);
        }
        None
    }

    /// Whether a drain request is satisfied (or timed out).
    fn drained(&self) -> Option<End> {
        let stop = lock(&self.plugin.control).stop;
        match stop {
            Some(Stop::Drain { until, deadline }) => {
                let pos = self.plugin.position();
                if pos.acked + 1 >= until || Instant::now() >= deadline {
                    Some(End::Stop)
                } else {
                    None
                }
            }
            Some(Stop::Now) => Some(End::Stop),
            None => None,
        }
    }

    /// Sleeps for `d`, waking early for control requests.
    fn wait(&self, d: Duration) {
        let deadline = Instant::now() + d;
        loop {
            self.plugin.heartbeat.beat();
            {
                // Any stop request ends the back-off: one more attempt is
                // made, and a plugin still unreachable then is left behind.
                let c = lock(&self.plugin.control);
                if c.stop.is_some() || c.config.is_some() {
                    return;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let mut fds = [PollFd::new(self.plugin.wake.fd(), PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, timeout(left.min(Duration::from_secs(1))));
            self.plugin.wake.clear();
        }
    }

    /// Suspended: deliver nothing, hold nothing back.
    fn suspended(&mut self) {
        self.plugin.set_state(State::Suspended);
        tracing::warn!(
            message_id = crate::log_ids::PLUGIN_SUSPENDED,
            plugin = %self.plugin.name,
            "plugin {} suspended: it receives nothing until resumed (audispctl resume {0}); its records are counted as dropped",
            self.plugin.name
        );
        loop {
            self.skip_to(self.services.journal.end(), "suspended");
            self.plugin.heartbeat.beat();
            let c = lock(&self.plugin.control);
            if c.stop.is_some() {
                return;
            }
            if !c.suspended {
                break;
            }
            drop(c);
            let mut fds = [PollFd::new(self.plugin.wake.fd(), PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, timeout(Duration::from_secs(1)));
            self.plugin.wake.clear();
        }
        tracing::info!(
            message_id = crate::log_ids::PLUGIN_SUSPENDED,
            plugin = %self.plugin.name,
            "plugin {} resumed",
            self.plugin.name
        );
    }

    /// Moves the cursor forward to `to`, counting what the plugin will never
    /// get.
    fn skip_to(&mut self, to: u64, why: &str) {
        let mut pos = lock(&self.plugin.position);
        if to <= pos.replay_from {
            return;
        }
        let skipped = to - pos.replay_from;
        *pos = Position {
            acked: to - 1,
            replay_from: to,
        };
        let p = *pos;
        drop(pos);
        stats::add(&self.plugin.counters.dropped, skipped);
        if why != "suspended" {
            tracing::warn!(
                message_id = crate::log_ids::RECORD_LOSS,
                plugin = %self.plugin.name,
                skipped,
                "plugin {}: {skipped} journal records skipped ({why})",
                self.plugin.name
            );
        }
        self.store(p);
        if self.reader.next_seq() < to {
            self.reader.seek(to);
        }
    }

    fn store(&self, p: Position) {
        if let Err(e) = self.cursor.store(p) {
            tracing::error!(plugin = %self.plugin.name, "cannot store the plugin's cursor: {e}");
        }
    }

    fn connect(&mut self) -> Result<Session, String> {
        let cfg = &self.config;
        let native = cfg.format == PluginFormat::Native;
        let (sock, child) = match &cfg.transport {
            Transport::Socket(path) => {
                let ty = if native {
                    socket::SockType::SeqPacket
                } else {
                    socket::SockType::Stream
                };
                (uds::connect(path, ty).map_err(|e| e.to_string())?, None)
            }
            Transport::Internal => {
                let connector = lock(&self.services.internal)
                    .get(&self.plugin.name)
                    .cloned()
                    .ok_or("no in-process consumer is attached under this name")?;
                let (ours, theirs) = socket::socketpair(
                    socket::AddressFamily::Unix,
                    socket::SockType::SeqPacket,
                    None,
                    socket::SockFlag::SOCK_CLOEXEC,
                )
                .map_err(|e| format!("socketpair: {e}"))?;
                connector(theirs);
                (ours, None)
            }
            Transport::Exec(argv) => {
                let kind = if native {
                    StdinSocket::Seqpacket
                } else {
                    StdinSocket::Stream
                };
                let (running, sock) = child::spawn_plugin(argv, kind).map_err(|e| e.to_string())?;
                if stats::get(&self.plugin.counters.connects) > 0
                    || stats::get(&self.plugin.counters.reconnects) > 0
                {
                    stats::add(&self.plugin.counters.restarts, 1);
                }
                tracing::info!(plugin = %self.plugin.name, pid = running.pid(), "started plugin program");
                (sock, Some(running))
            }
        };
        uds::set_nonblocking(&sock).map_err(|e| e.to_string())?;
        if native {
            // Room for half the window of whole messages, so a plugin that
            // takes several waiting messages at once (one fsync for all of
            // them in a durable plugin) finds them there while the rest are
            // on the way. The kernel caps this at net.core.wmem_max; one
            // message always fits the default.
            let _ = socket::setsockopt(
                &sock,
                socket::sockopt::SndBuf,
                &(WINDOW / 2 * protocol::MAX_MESSAGE),
            );
        }
        let mut session = Session {
            sock,
            child,
            native,
            binary: cfg.format == PluginFormat::Binary,
            mode: match cfg.mode {
                DeliveryMode::Records => Mode::Records,
                DeliveryMode::Events => Mode::Events,
            },
            subscription: Subscription::new(&cfg.include, &cfg.exclude, &[], &[]),
            skip_upto: 0,
            inflight: VecDeque::new(),
            builder: RecordsBuilder::output(protocol::MAX_MESSAGE),
            unsent: None,
            assembler: Assembler::new(),
            carry: None,
            out: Vec::new(),
            out_pos: 0,
            queued_bytes: 0,
            written_bytes: 0,
            started: Instant::now(),
        };
        if native {
            if let Err(e) = self.handshake(&mut session) {
                self.close(session);
                return Err(e);
            }
        }
        let pos = self.plugin.position();
        self.reader.seek(pos.replay_from);
        if !native {
            session.skip_upto = pos.acked;
        }
        self.plugin.set_state(State::Connected);
        tracing::info!(
            plugin = %self.plugin.name,
            from = pos.replay_from,
            "plugin connected; delivering from journal position {}",
            pos.replay_from
        );
        Ok(session)
    }

    fn handshake(&mut self, s: &mut Session) -> Result<(), String> {
        let deadline = Instant::now() + HELLO_TIMEOUT;
        let mut buf = vec![0u8; protocol::MAX_MESSAGE];
        let hello = loop {
            self.plugin.heartbeat.beat();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no HELLO within {}s", HELLO_TIMEOUT.as_secs()));
            }
            let mut fds = vec![PollFd::new(s.sock.as_fd(), PollFlags::POLLIN)];
            if let Some(c) = &s.child {
                fds.push(PollFd::new(c.pidfd(), PollFlags::POLLIN));
            }
            let _ = nix::poll::poll(&mut fds, timeout(left.min(Duration::from_secs(1))));
            if fds
                .get(1)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
            {
                return Err("the plugin program exited before saying hello".into());
            }
            match uds::recv_message(&s.sock, &mut buf) {
                Ok(Some(0)) => return Err("connection closed before HELLO".into()),
                Ok(Some(n)) => match protocol::decode_from_plugin(&buf[..n]) {
                    Ok(FromPlugin::Hello(h)) => break h,
                    Ok(other) => return Err(format!("expected HELLO, got {other:?}")),
                    Err(e) => return Err(format!("bad HELLO: {e}")),
                },
                Ok(None) => continue,
                Err(e) => return Err(format!("receiving HELLO: {e}")),
            }
        };
        let reject = |s: &Session, why: String| {
            let _ = uds::send_nowait(&s.sock, &protocol::encode_reject(&why));
            Err(why)
        };
        if hello.role != Role::Output {
            return reject(s, "this socket is for output plugins; inputs connect to the dispatcher's input socket".into());
        }
        let Some(version) = protocol::negotiate(&hello) else {
            return reject(
                s,
                format!(
                    "protocol versions {}..{} not supported; this dispatcher speaks {}",
                    hello.min_version,
                    hello.max_version,
                    protocol::VERSION
                ),
            );
        };
        if hello.name != self.plugin.name {
            tracing::debug!(plugin = %self.plugin.name, hello = %hello.name, "plugin calls itself by another name");
        }
        let cfg = &self.config;
        s.mode = hello.mode.unwrap_or(s.mode);
        s.subscription =
            Subscription::new(&cfg.include, &cfg.exclude, &hello.include, &hello.exclude);
        let pos = self.plugin.position();
        let journal = &self.services.journal;
        let mut skip = pos.acked;
        if let Some((id, seq)) = hello.resume {
            if id == journal.id().0 {
                skip = skip.max(seq.min(journal.end() - 1));
            } else {
                tracing::info!(
                    plugin = %self.plugin.name,
                    "plugin's resume point belongs to another journal; ignoring it"
                );
            }
        }
        s.skip_upto = skip;
        let max = hello.max_message.map_or(protocol::MAX_MESSAGE, |m| {
            (m as usize).clamp(4096, protocol::MAX_MESSAGE)
        });
        s.builder = RecordsBuilder::output(max);
        let welcome = Welcome {
            version,
            journal_id: Some(journal.id().0),
            start_after: skip,
            mode: Some(s.mode),
            max_message: max as u32,
            server: self.services.server.clone(),
        };
        match uds::send_nowait(&s.sock, &protocol::encode_welcome(&welcome)) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("plugin's socket is full during the handshake".into()),
            Err(e) => Err(format!("sending WELCOME: {e}")),
        }
    }

    fn close(&mut self, s: Session) {
        let Session { sock, child, .. } = s;
        drop(sock);
        if let Some(c) = child {
            let hb = &self.plugin.heartbeat;
            match c.stop_with(Duration::from_secs(2), &mut || hb.beat()) {
                Ok(status) => {
                    tracing::info!(plugin = %self.plugin.name, "plugin program ended: {status}")
                }
                Err(e) => {
                    tracing::warn!(plugin = %self.plugin.name, "stopping plugin program: {e}")
                }
            }
        }
    }

    /// Delivers until the session ends.
    fn session(&mut self, s: &mut Session) -> End {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            self.plugin.heartbeat.beat();
            if let Some(end) = self.control() {
                return end;
            }
            if let Some(end) = self.drained() {
                return end;
            }
            if let Some(end) = self.overflow(s) {
                return end;
            }
            let fill = if s.native {
                self.fill_native(s)
            } else {
                self.fill_legacy(s)
            };
            if let Err(e) = fill {
                if s.native {
                    // A plugin that went away may have acknowledged more
                    // first: take that, so less is sent again.
                    let _ = self.receive(s, &mut buf);
                }
                return End::Lost(e);
            }
            if let Some(end) = self.drained() {
                return end;
            }
            let want_out = if s.native {
                s.unsent.is_some()
            } else {
                s.out_pos < s.out.len()
            };
            let window_full =
                s.native && s.inflight.iter().filter(|i| i.ack.is_some()).count() >= WINDOW;
            let mut wait = Duration::from_secs(1);
            if !want_out && !window_full {
                self.plugin.wake.arm();
                if !self.reader.caught_up() {
                    continue;
                }
            }
            if !s.native && s.written_bytes > self.consumed_floor(s) {
                // Watch the plugin read what it was given.
                wait = Duration::from_millis(100);
            }
            let mut fds = vec![
                PollFd::new(
                    s.sock.as_fd(),
                    if want_out {
                        PollFlags::POLLIN | PollFlags::POLLOUT
                    } else {
                        PollFlags::POLLIN
                    },
                ),
                PollFd::new(self.plugin.wake.fd(), PollFlags::POLLIN),
            ];
            if let Some(c) = &s.child {
                fds.push(PollFd::new(c.pidfd(), PollFlags::POLLIN));
            }
            match nix::poll::poll(&mut fds, timeout(wait)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return End::Lost(format!("poll: {e}")),
            }
            let sock_ev = fds[0].revents().unwrap_or(PollFlags::empty());
            let wake_ev = fds[1].revents().unwrap_or(PollFlags::empty());
            let child_ev = fds
                .get(2)
                .and_then(|f| f.revents())
                .unwrap_or(PollFlags::empty());
            if !wake_ev.is_empty() {
                self.plugin.wake.clear();
            }
            if sock_ev.contains(PollFlags::POLLIN) && s.native {
                if let Err(end) = self.receive(s, &mut buf) {
                    return end;
                }
            }
            if !s.native {
                self.track_consumption(s);
            }
            if sock_ev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                if s.native {
                    // Take the acknowledgements still queued before leaving.
                    let _ = self.receive(s, &mut buf);
                }
                return End::Lost("the plugin closed the connection".into());
            }
            if !child_ev.is_empty() {
                let status = s.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                if !s.native {
                    self.track_consumption(s);
                }
                return End::Lost(match status {
                    Some(st) => format!("plugin program exited ({st})"),
                    None => "plugin program exited".into(),
                });
            }
        }
    }

    /// Applies the overflow policy if the plugin is further behind than
    /// allowed.
    fn overflow(&mut self, s: &mut Session) -> Option<End> {
        let journal = &self.services.journal;
        let pos = self.plugin.position();
        let end = journal.end();
        let backlog = end.saturating_sub(pos.acked + 1);
        let cfg = &self.config;
        match cfg.overflow {
            Overflow::Spool => {
                if journal.bytes_behind(pos.replay_from) > cfg.spool_max {
                    let to = journal.position_within(cfg.spool_max);
                    self.overflowed(
                        s,
                        to,
                        "its spool_max was exceeded: the oldest records were skipped",
                    );
                }
                None
            }
            Overflow::Drop if backlog > cfg.queue_size => {
                let to = end - cfg.queue_size;
                self.overflowed(s, to, "its queue_size was exceeded (overflow = drop): the oldest records were skipped");
                None
            }
            Overflow::Suspend if backlog > cfg.queue_size => {
                tracing::warn!(
                    message_id = crate::log_ids::PLUGIN_OVERFLOW,
                    plugin = %self.plugin.name,
                    backlog,
                    "plugin {} is {backlog} records behind, more than its queue_size {}; suspending it (overflow = suspend)",
                    self.plugin.name,
                    cfg.queue_size
                );
                lock(&self.plugin.control).suspended = true;
                Some(End::Suspend)
            }
            _ => None,
        }
    }

    fn overflowed(&mut self, s: &mut Session, to: u64, why: &str) {
        if !self.loss_reported {
            tracing::warn!(
                message_id = crate::log_ids::PLUGIN_OVERFLOW,
                plugin = %self.plugin.name,
                "plugin {} overflowed: {why}",
                self.plugin.name
            );
            self.loss_reported = true;
        }
        self.skip_to(to, why);
        // Events in progress lost their beginning; start assembling afresh.
        if self.reader.next_seq() <= to {
            s.assembler = Assembler::new();
            s.carry = None;
        }
    }

    fn advance(&mut self, p: Position, records: u64) {
        let mut pos = lock(&self.plugin.position);
        let next = Position {
            acked: pos.acked.max(p.acked),
            replay_from: pos.replay_from.max(p.replay_from),
        };
        let changed = next != *pos;
        *pos = next;
        drop(pos);
        stats::add(&self.plugin.counters.acked, records);
        if changed {
            self.store(next);
        }
    }

    /// Pops acknowledged (and skipped-only) batches and moves the cursor.
    fn settle(&mut self, s: &mut Session, acked: Option<u64>) {
        let mut last = None;
        let mut records = 0;
        while let Some(front) = s.inflight.front() {
            let done = match front.ack {
                None => true,
                Some(a) => acked.is_some_and(|x| a <= x),
            };
            if !done {
                break;
            }
            records += front.records;
            last = Some(front.position);
            s.inflight.pop_front();
        }
        if let Some(p) = last {
            self.advance(p, records);
        }
    }

    fn reading_done(&self) {
        self.plugin
            .reading
            .store(self.reader.next_seq(), Ordering::Relaxed);
    }

    fn note_loss(&mut self, outcome: &ReadOutcome) {
        if let ReadOutcome::Lost { from, to, reason } = outcome {
            stats::add(&self.plugin.counters.dropped, to - from);
            tracing::error!(
                message_id = crate::log_ids::RECORD_LOSS,
                plugin = %self.plugin.name,
                from,
                to,
                "plugin {}: journal entries {from}..{to} are gone before it read them ({reason:?})",
                self.plugin.name
            );
        }
    }

    fn fill_native(&mut self, s: &mut Session) -> Result<(), String> {
        if let Some(msg) = s.unsent.take() {
            match uds::send_nowait(&s.sock, &msg) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    s.unsent = Some(msg);
                    return Ok(());
                }
                Err(e) => return Err(format!("send: {e}")),
            }
        }
        while s.inflight.iter().filter(|i| i.ack.is_some()).count() < WINDOW {
            if self.reader.caught_up() && s.carry.is_none() {
                break;
            }
            s.builder.clear();
            let mut last_ack = None;
            let mut delivered = 0u64;
            let mut full = false;
            if let Some(c) = s.carry.take() {
                let (ack, n, rest) = put_event(&mut s.builder, c);
                last_ack = Some(ack);
                delivered += n;
                full = rest.is_some();
                s.carry = rest;
            }
            while !full && !self.reader.caught_up() {
                let room = protocol::MAX_MESSAGE.saturating_sub(s.builder.bytes());
                let Session {
                    builder,
                    assembler,
                    carry,
                    subscription,
                    mode,
                    skip_upto,
                    ..
                } = s;
                let outcome = self
                    .reader
                    .read(room.max(4096), &mut |e| {
                        take_entry(
                            e,
                            *mode,
                            subscription,
                            *skip_upto,
                            builder,
                            assembler,
                            carry,
                            &mut last_ack,
                            &mut delivered,
                            &mut full,
                        )
                    })
                    .map_err(|e| format!("reading the journal: {e}"))?;
                if let ReadOutcome::Lost { .. } = outcome {
                    self.note_loss(&outcome);
                    s.assembler = Assembler::new();
                    s.carry = None;
                }
                if outcome == ReadOutcome::CaughtUp {
                    break;
                }
                if room < 4096 {
                    full = true;
                }
            }
            self.reading_done();
            let position = match &s.carry {
                Some(c) => Position {
                    acked: c.event.close_seq - 1,
                    replay_from: c
                        .first_seq
                        .min(s.assembler.replay_point(self.reader.next_seq())),
                },
                None => {
                    let next = self.reader.next_seq();
                    Position {
                        acked: next - 1,
                        replay_from: match s.mode {
                            Mode::Records => next,
                            Mode::Events => s.assembler.replay_point(next),
                        },
                    }
                }
            };
            if s.builder.is_empty() {
                s.inflight.push_back(Inflight {
                    ack: None,
                    position,
                    records: 0,
                });
                self.settle(s, None);
                if !full {
                    break;
                }
                continue;
            }
            stats::add(&self.plugin.counters.delivered, delivered);
            s.inflight.push_back(Inflight {
                ack: last_ack,
                position,
                records: delivered,
            });
            let msg = s.builder.message();
            match uds::send_nowait(&s.sock, msg) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    s.unsent = Some(msg.to_vec());
                    break;
                }
                Err(e) => return Err(format!("send: {e}")),
            }
        }
        Ok(())
    }

    fn receive(&mut self, s: &mut Session, buf: &mut [u8]) -> Result<(), End> {
        loop {
            let n = match uds::recv_message(&s.sock, buf) {
                Ok(Some(0)) => return Err(End::Lost("the plugin closed the connection".into())),
                Ok(Some(n)) => n,
                Ok(None) => return Ok(()),
                Err(e) => return Err(End::Lost(format!("receive: {e}"))),
            };
            match protocol::decode_from_plugin(&buf[..n]) {
                Ok(FromPlugin::Ack(id)) => self.settle(s, Some(id)),
                Ok(FromPlugin::StatsRequest(id)) => {
                    let snap = (self.services.snapshot)();
                    let json = serde_json::to_vec(&snap).unwrap_or_default();
                    if !matches!(
                        uds::send_nowait(&s.sock, &protocol::encode_stats(id, &json)),
                        Ok(Some(_))
                    ) {
                        tracing::debug!(plugin = %self.plugin.name, "stats answer not sent: socket full");
                    }
                }
                Ok(FromPlugin::Command { id, name, args }) => {
                    stats::add(&self.plugin.counters.commands, 1);
                    let outcome = self.services.actions.run(
                        &self.plugin.name,
                        &name,
                        self.config.actions.get(&name),
                        &args,
                    );
                    let _ = uds::send_nowait(
                        &s.sock,
                        &protocol::encode_command_result(id, outcome.status, &outcome.message),
                    );
                    if outcome.effect == Effect::SuspendPlugin {
                        lock(&self.plugin.control).suspended = true;
                    }
                }
                Ok(other) => {
                    return Err(End::Lost(format!(
                        "protocol error: unexpected {} from an output plugin",
                        message_name(&other)
                    )))
                }
                Err(e) => return Err(End::Lost(format!("protocol error: {e}"))),
            }
        }
    }

    fn fill_legacy(&mut self, s: &mut Session) -> Result<(), String> {
        loop {
            if s.out_pos < s.out.len() {
                match uds::send_nowait(&s.sock, &s.out[s.out_pos..]) {
                    Ok(None) => return Ok(()),
                    Ok(Some(n)) => {
                        s.out_pos += n;
                        s.written_bytes += n as u64;
                        if s.out_pos == s.out.len() {
                            s.out.clear();
                            s.out_pos = 0;
                        } else {
                            return Ok(());
                        }
                    }
                    Err(e) => return Err(format!("write: {e}")),
                }
            }
            if self.reader.caught_up() || s.out.len() >= LEGACY_BUFFER {
                self.track_consumption(s);
                return Ok(());
            }
            let mut delivered = 0u64;
            let Session {
                out,
                subscription,
                binary,
                skip_upto,
                ..
            } = s;
            let outcome = self
                .reader
                .read(LEGACY_BUFFER, &mut |e| {
                    if e.is_control() || e.seq <= *skip_upto || !subscription.records.wants(e.rtype)
                    {
                        return Step::Next;
                    }
                    if *binary {
                        out.extend_from_slice(&1u32.to_ne_bytes());
                        out.extend_from_slice(&16u32.to_ne_bytes());
                        out.extend_from_slice(&e.rtype.to_ne_bytes());
                        out.extend_from_slice(&(e.text.len() as u32).to_ne_bytes());
                        out.extend_from_slice(e.text);
                    } else {
                        out.extend_from_slice(e.text);
                        out.push(b'\n');
                    }
                    delivered += 1;
                    Step::Next
                })
                .map_err(|e| format!("reading the journal: {e}"))?;
            self.note_loss(&outcome);
            self.reading_done();
            let queued_now = s.written_bytes + (s.out.len() - s.out_pos) as u64;
            s.queued_bytes = queued_now;
            stats::add(&self.plugin.counters.delivered, delivered);
            let next = self.reader.next_seq();
            s.inflight.push_back(Inflight {
                ack: if delivered > 0 {
                    Some(queued_now)
                } else {
                    None
                },
                position: Position {
                    acked: next - 1,
                    replay_from: next,
                },
                records: delivered,
            });
            self.settle_legacy(s);
        }
    }

    /// Bytes the plugin has certainly read (written minus what is still in
    /// the socket; the kernel counts buffer overhead too, so this errs on the
    /// side of resending).
    fn consumed_floor(&self, s: &Session) -> u64 {
        s.written_bytes.saturating_sub(outq(&s.sock))
    }

    fn settle_legacy(&mut self, s: &mut Session) {
        let consumed = self.consumed_floor(s);
        self.settle(s, Some(consumed));
    }

    fn track_consumption(&mut self, s: &mut Session) {
        self.settle_legacy(s);
    }
}

/// Takes one journal entry into the message being built. Returns what the
/// reader should do next.
#[allow(clippy::too_many_arguments)]
fn take_entry(
    e: EntryRef<'_>,
    mode: Mode,
    sub: &Subscription,
    skip_upto: u64,
    builder: &mut RecordsBuilder,
    assembler: &mut Assembler,
    carry: &mut Option<Carry>,
    last_ack: &mut Option<u64>,
    delivered: &mut u64,
    full: &mut bool,
) -> Step {
    match mode {
        Mode::Records => {
            if e.is_control() || e.seq <= skip_upto || !sub.records.wants(e.rtype) {
                return Step::Next;
            }
            let r = protocol::Record {
                seq: e.seq,
                ack_id: e.seq,
                rtype: e.rtype,
                flags: wire_flags(e.flags),
                text: e.text,
            };
            if !builder.push(&r) {
                *full = true;
                return Step::StopBefore;
            }
            *last_ack = Some(e.seq);
            *delivered += 1;
            Step::Next
        }
        Mode::Events => {
            let Some(mut event) = assembler.push(&e) else {
                return Step::Next;
            };
            if event.close_seq <= skip_upto
                || event.is_empty()
                || !event.records().any(|(r, _)| sub.select.wants(r.rtype))
            {
                return Step::Next;
            }
            event.retain(|r| sub.keep.wants(r.rtype));
            if event.is_empty() {
                return Step::Next;
            }
            let first_seq = event
                .records()
                .next()
                .map_or(event.close_seq, |(r, _)| r.seq);
            let c = Carry {
                event,
                next: 0,
                first_seq,
            };
            if !builder.is_empty() && !fits_whole(builder, &c.event) {
                *carry = Some(c);
                *full = true;
                return Step::Stop;
            }
            let (ack, n, rest) = put_event(builder, c);
            *last_ack = Some(ack);
            *delivered += n;
            if rest.is_some() {
                *carry = rest;
                *full = true;
                return Step::Stop;
            }
            Step::Next
        }
    }
}

fn fits_whole(builder: &RecordsBuilder, event: &Event) -> bool {
    let need: usize = event
        .records()
        .map(|(_, t)| protocol::RECORD_HEADER + t.len())
        .sum();
    builder.bytes() + need <= protocol::MAX_MESSAGE
        && builder.len() + event.len() < u16::MAX as usize
}

/// Puts as much of an event as fits; returns its ack id, the records put,
/// and what is left if it did not fit.
fn put_event(builder: &mut RecordsBuilder, mut c: Carry) -> (u64, u64, Option<Carry>) {
    let ack = c.event.close_seq;
    let total = c.event.len();
    let mut put = 0;
    let records: Vec<(EventRecord, &[u8])> = c.event.records().skip(c.next).collect();
    for (i, (r, text)) in records.iter().enumerate() {
        let last = c.next + i + 1 == total;
        let mut fl = wire_flags(r.flags);
        if last {
            fl |= record_flags::EVENT_COMPLETE;
        }
        if !builder.push(&protocol::Record {
            seq: r.seq,
            ack_id: ack,
            rtype: r.rtype,
            flags: fl,
            text,
        }) {
            break;
        }
        put += 1;
    }
    c.next += put;
    let rest = if c.next < total { Some(c) } else { None };
    (ack, put as u64, rest)
}

fn wire_flags(journal_flags: u16) -> u16 {
    let mut f = 0;
    if journal_flags & flags::ENDS_EVENT != 0 {
        f |= record_flags::ENDS_EVENT;
    }
    if journal_flags & flags::UNPARSED != 0 {
        f |= record_flags::UNPARSED;
    }
    f
}

fn message_name(m: &FromPlugin<'_>) -> &'static str {
    match m {
        FromPlugin::Hello(_) => "HELLO",
        FromPlugin::Ack(_) => "ACK",
        FromPlugin::StatsRequest(_) => "STATS_REQUEST",
        FromPlugin::Command { .. } => "COMMAND",
        FromPlugin::RecordsIn(_) => "RECORDS_IN",
    }
}

fn timeout(d: Duration) -> PollTimeout {
    PollTimeout::try_from(d.as_millis().min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
}

/// Bytes (with kernel overhead) still in the socket, not yet read by the peer.
fn outq(fd: &OwnedFd) -> u64 {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int to the pointer we pass.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if r < 0 {
        0
    } else {
        n.max(0) as u64
    }
}
