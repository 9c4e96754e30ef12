//! The sender thread of one plugin: connects to the plugin (or starts its
//! program), hands the connection to the delivery its format needs
//! ([`Native`] or [`Stock`]), and keeps everything that outlives a
//! connection: reconnecting with back-off, the overflow policy, suspension,
//! stop and drain requests, and the plugin's cursor.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket;

use super::filtering::EventFilter;
use super::native::{self, Greeting, Native};
use super::stock::{self, Encoding, Stock};
use super::{lock, Delivery, Host, SenderHandle, Services, State, Stop};
use crate::engine::actions::Effect;
use crate::engine::child::{self, Running, StdinSocket};
use crate::engine::cursor::{CursorFile, Position};
use crate::engine::loss::{Loss, LossLog};
use crate::engine::routes::Routes;
use crate::engine::settings::{DeliveryMode, Overflow, PluginFormat, PluginSettings, Transport};
use crate::engine::stats::{self, DropReason};
use crate::engine::subscription::Subscription;
use crate::format::drop_fields::DropFields;
use crate::journal::{HandOff, LostReason, Reader};
use crate::protocol::{self, CommandStatus, Hello, Mode, Notice};
use crate::uds;

/// How long a freshly connected plugin has to say hello (a socket-activated
/// unit may still be starting).
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// A plugin that stayed connected this long gets its back-off reset.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// What the log says of records a plugin will never get for `reason`.
fn dropped_because(reason: DropReason) -> &'static str {
    match reason {
        DropReason::Overflow => {
            "its queue_size was exceeded (overflow = drop): the oldest records were skipped"
        }
        DropReason::SpoolMax => "its spool_max was exceeded: the oldest records were skipped",
        // Logged as a suspension, not record by record.
        DropReason::Suspended => "suspended",
        DropReason::JournalLimit => {
            "the journal reached its max_size and deleted them before the plugin had them"
        }
        DropReason::Damaged => "a damaged journal segment could not be read",
    }
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

/// The thread's state across connections.
pub(super) struct Sender {
    handle: Arc<SenderHandle>,
    services: Services,
    cursor: CursorFile,
    reader: Reader,
    config: PluginSettings,
    outage_reported: bool,
    loss_reported: bool,
    loss: LossLog,
    /// Close sequence number of the last event whose filtered records are
    /// counted: events decided again after a resend are not counted twice.
    filtered_upto: u64,
}

impl Sender {
    pub(super) fn new(handle: Arc<SenderHandle>, services: Services, cursor: CursorFile) -> Sender {
        let pos = handle.position();
        let reader = services.journal.reader(pos.replay_from);
        let config = handle.config();
        Sender {
            handle,
            services,
            cursor,
            reader,
            config,
            outage_reported: false,
            loss_reported: false,
            loss: LossLog::default(),
            filtered_upto: 0,
        }
    }

    /// Feeds the plugin until asked to stop.
    pub(super) fn run(mut self) {
        let mut backoff = self.config.restart.initial;
        loop {
            self.handle.heartbeat.beat();
            self.evicted();
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
            self.handle.set_state(State::Connecting);
            let end = self.attempt(&mut backoff);
            // Whatever was not acknowledged is sent again next time.
            let pos = self.handle.position();
            self.reader.seek(pos.replay_from);
            match end {
                End::Stop => break,
                End::Suspend | End::Reconfigure => continue,
                End::Lost(why) if lock(&self.handle.control).stop.is_some() => {
                    // Stopping, and the plugin is gone: what it has not
                    // acknowledged stays in the journal for next time.
                    tracing::info!(
                        plugin = %self.handle.name,
                        "plugin {} unavailable while stopping ({why}); its records stay in the journal",
                        self.handle.name
                    );
                    break;
                }
                End::Lost(why) => {
                    stats::add(&self.handle.counters.reconnects, 1);
                    if !self.outage_reported {
                        tracing::warn!(
                            message_id = crate::log_ids::PLUGIN_LOST,
                            plugin = %self.handle.name,
                            "plugin {} unavailable: {why}; retrying with back-off (records wait in the journal)",
                            self.handle.name
                        );
                        self.outage_reported = true;
                    } else {
                        tracing::debug!(
                            plugin = %self.handle.name,
                            "plugin {} still unavailable: {why}",
                            self.handle.name
                        );
                    }
                    self.wait(backoff);
                    backoff = (backoff * 2).min(self.config.restart.max);
                }
            }
        }
        self.handle.set_state(State::Stopped);
        self.report_owed_loss(true);
        let _ = self.cursor.sync();
    }

    /// Applies control requests. Returns how the current activity must end.
    fn control(&mut self) -> Option<End> {
        let mut c = lock(&self.handle.control);
        if let Some(cfg) = c.config.take() {
            self.handle.taken.notify_all();
            *lock(&self.handle.config) = cfg.clone();
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

    /// Whether a control request waits for the sender's own loop.
    fn requested(&self) -> bool {
        let c = lock(&self.handle.control);
        c.stop.is_some() || c.suspended || c.config.is_some()
    }

    /// Whether a drain request is satisfied (or timed out).
    fn drained(&self) -> Option<End> {
        let stop = lock(&self.handle.control).stop;
        match stop {
            Some(Stop::Drain { until, deadline }) => {
                let pos = self.handle.position();
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

    /// Sleeps for `d`, waking early for control requests (and at least
    /// once a second to count what the journal's size limit deletes).
    fn wait(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        loop {
            self.handle.heartbeat.beat();
            self.evicted();
            self.report_owed_loss(false);
            {
                // Any stop request ends the back-off: one more attempt is
                // made, and a plugin still unreachable then is left behind.
                let c = lock(&self.handle.control);
                if c.stop.is_some() || c.config.is_some() {
                    return;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let mut fds = [PollFd::new(self.handle.wake.fd(), PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, timeout(left.min(Duration::from_secs(1))));
            self.handle.wake.clear();
        }
    }

    /// Suspended: deliver nothing, hold nothing back.
    fn suspended(&mut self) {
        self.handle.set_state(State::Suspended);
        tracing::warn!(
            message_id = crate::log_ids::PLUGIN_SUSPENDED,
            plugin = %self.handle.name,
            "plugin {} suspended: it receives nothing until resumed (audispctl resume {0}); its records are counted as dropped",
            self.handle.name
        );
        loop {
            self.skip_to(self.services.journal.end(), DropReason::Suspended);
            self.handle.heartbeat.beat();
            self.report_owed_loss(false);
            let c = lock(&self.handle.control);
            if c.stop.is_some() {
                return;
            }
            if !c.suspended {
                break;
            }
            drop(c);
            let mut fds = [PollFd::new(self.handle.wake.fd(), PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, timeout(Duration::from_secs(1)));
            self.handle.wake.clear();
        }
        tracing::info!(
            message_id = crate::log_ids::PLUGIN_SUSPENDED,
            plugin = %self.handle.name,
            "plugin {} resumed",
            self.handle.name
        );
    }

    /// Moves the cursor forward to `to`, counting what the plugin will never
    /// get under `reason`, and logging it unless the plugin is suspended
    /// (which is logged as such).
    fn skip_to(&mut self, to: u64, reason: DropReason) {
        let mut pos = lock(&self.handle.position);
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
        if reason == DropReason::Suspended {
            self.handle.counters.drop_records(reason, skipped);
        } else {
            self.count_dropped(skipped, reason);
        }
        self.store(p);
        if self.reader.next_seq() < to {
            self.reader.seek(to);
        }
    }

    /// Skips what the journal's size limit deleted before the plugin had
    /// it, as soon as it happens (whether or not the plugin is connected
    /// and reading). Returns where the journal now starts if it did.
    fn evicted(&mut self) -> Option<u64> {
        let start = self.services.journal.start();
        if self.handle.position().replay_from >= start {
            return None;
        }
        self.skip_to(start, DropReason::JournalLimit);
        Some(start)
    }

    /// Counts `n` records the plugin will never get and logs them (see
    /// [`crate::engine::loss`]).
    fn count_dropped(&mut self, n: u64, reason: DropReason) {
        self.handle.counters.drop_records(reason, n);
        let total = stats::get(&self.handle.counters.dropped);
        if let Some(loss) = self
            .loss
            .lost(n, dropped_because(reason), total, Instant::now())
        {
            self.log_loss(loss);
        }
    }

    /// Logs the loss line due, if any (any owed with `now_anyway`).
    fn report_owed_loss(&mut self, now_anyway: bool) {
        let total = stats::get(&self.handle.counters.dropped);
        if let Some(loss) = self.loss.flush(total, Instant::now(), now_anyway) {
            self.log_loss(loss);
        }
    }

    fn log_loss(&self, loss: Loss) {
        tracing::warn!(
            message_id = crate::log_ids::RECORD_LOSS,
            plugin = %self.handle.name,
            skipped = loss.since_last,
            dropped = loss.total,
            "plugin {}: {} journal records skipped, {} dropped in all: {}",
            self.handle.name,
            loss.since_last,
            loss.total,
            loss.why
        );
    }

    fn store(&self, p: Position) {
        if let Err(e) = self.cursor.store(p) {
            tracing::error!(
                plugin = %self.handle.name,
                "cannot store the cursor of plugin {}: {e}",
                self.handle.name
            );
        }
    }

    /// Opens a connection: connects to the plugin's socket, makes the
    /// in-process consumer's socket pair, or starts the program.
    fn connect(&mut self) -> Result<(OwnedFd, Option<Running>), String> {
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
                    .get(&self.handle.name)
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
                if stats::get(&self.handle.counters.connects) > 0
                    || stats::get(&self.handle.counters.reconnects) > 0
                {
                    stats::add(&self.handle.counters.restarts, 1);
                }
                tracing::info!(
                    plugin = %self.handle.name,
                    pid = running.pid(),
                    "started the program of plugin {} (pid {})",
                    self.handle.name,
                    running.pid()
                );
                (sock, Some(running))
            }
        };
        uds::set_nonblocking(&sock).map_err(|e| e.to_string())?;
        Ok((sock, child))
    }

    /// One connection: connects, sets up the delivery the plugin's format
    /// needs and delivers until the connection ends.
    fn attempt(&mut self, backoff: &mut Duration) -> End {
        let (sock, mut child) = match self.connect() {
            Ok(c) => c,
            Err(e) => return End::Lost(e),
        };
        let started = Instant::now();
        let encoding = match self.config.format {
            PluginFormat::Native => None,
            PluginFormat::String => Some(Encoding::String),
            PluginFormat::Binary => Some(Encoding::Binary),
            PluginFormat::Json => Some(Encoding::Json),
        };
        // Only a stock plugin's end is worth holding (see `stock`).
        let peer = child.as_mut().and_then(Running::take_stdin);
        let end = match encoding {
            Some(encoding) => {
                let cfg = &self.config;
                let subscription = Subscription::new(&cfg.include, &cfg.exclude, &[], &[]);
                let routes = Routes::new(cfg.inputs.as_ref(), false, self.services.inputs.clone());
                let drop = DropFields::of(&cfg.drop_fields);
                let acked = self.handle.position().acked;
                let mut stock = Stock::new(sock, peer, encoding, subscription, routes, drop, acked)
                    .with_filter(EventFilter::of(
                        cfg.filter.as_ref(),
                        &self.services.decisions,
                    ));
                let end = self.session(&mut stock, &mut child);
                if !matches!(end, End::Lost(_)) && !stock.close(self) {
                    tracing::warn!(
                        plugin = %self.handle.name,
                        "plugin {} did not read for {:?}: the last record it was given is cut short",
                        self.handle.name,
                        stock::CLOSE_LIMIT
                    );
                }
                // A program reads on to the end of what it was given and
                // exits; only then is what it read known for sure.
                self.stop_program(child.take());
                stock.salvage(self);
                end
            }
            None => {
                drop(peer);
                match self.handshake(sock, child.as_ref()) {
                    Ok(mut native) => self.session(&mut native, &mut child),
                    Err(e) => {
                        self.stop_program(child);
                        return End::Lost(e);
                    }
                }
            }
        };
        if started.elapsed() >= HEALTHY_AFTER {
            *backoff = self.config.restart.initial;
        }
        self.stop_program(child);
        end
    }

    /// Waits for the plugin's `HELLO` and answers it.
    fn handshake(&mut self, sock: OwnedFd, child: Option<&Running>) -> Result<Native, String> {
        let hello = self.await_hello(&sock, child)?;
        let cfg = &self.config;
        let journal = &self.services.journal;
        let greeting = Greeting {
            name: &self.handle.name,
            include: &cfg.include,
            exclude: &cfg.exclude,
            inputs: cfg.inputs.as_ref(),
            lookup: &self.services.inputs,
            drop_fields: &cfg.drop_fields,
            filter: cfg.filter.as_ref(),
            decisions: &self.services.decisions,
            mode: match cfg.mode {
                DeliveryMode::Records => Mode::Records,
                DeliveryMode::Events => Mode::Events,
            },
            acked: self.handle.position().acked,
            journal_id: journal.id(),
            journal_end: journal.end(),
            server: &self.services.server,
        };
        Native::welcome(sock, hello, &greeting)
    }

    fn await_hello(&self, sock: &OwnedFd, child: Option<&Running>) -> Result<Hello, String> {
        let deadline = Instant::now() + HELLO_TIMEOUT;
        let mut buf = vec![0u8; protocol::MAX_MESSAGE];
        loop {
            self.handle.heartbeat.beat();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no HELLO within {}s", HELLO_TIMEOUT.as_secs()));
            }
            let mut fds = vec![PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
            if let Some(c) = child {
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
            if let Some(hello) = native::read_hello(sock, &mut buf)? {
                return Ok(hello);
            }
        }
    }

    /// Stops the program at the other end of a closed connection, if the
    /// dispatcher started one.
    fn stop_program(&mut self, child: Option<Running>) {
        if let Some(c) = child {
            let hb = &self.handle.heartbeat;
            match c.stop_with(Duration::from_secs(2), &mut || hb.beat()) {
                Ok(status) => tracing::info!(
                    plugin = %self.handle.name,
                    "the program of plugin {} ended: {status}",
                    self.handle.name
                ),
                Err(e) => tracing::warn!(
                    plugin = %self.handle.name,
                    "stopping the program of plugin {}: {e}",
                    self.handle.name
                ),
            }
        }
    }

    /// Delivers through `d` until the connection ends.
    fn session<D: Delivery>(&mut self, d: &mut D, child: &mut Option<Running>) -> End {
        let pos = self.handle.position();
        self.reader.seek(pos.replay_from);
        self.handle.set_state(State::Connected);
        tracing::info!(
            plugin = %self.handle.name,
            from = pos.replay_from,
            "plugin {} connected; delivering from journal position {}",
            self.handle.name,
            pos.replay_from
        );
        stats::add(&self.handle.counters.connects, 1);
        if self.outage_reported {
            tracing::info!(
                plugin = %self.handle.name,
                "plugin {} is back; resending what it had not acknowledged",
                self.handle.name
            );
            self.outage_reported = false;
        }
        self.deliver(d, child)
    }

    fn deliver<D: Delivery>(&mut self, d: &mut D, child: &mut Option<Running>) -> End {
        loop {
            self.handle.heartbeat.beat();
            if let Some(end) = self.control() {
                return end;
            }
            if let Some(end) = self.drained() {
                return end;
            }
            if let Some(end) = self.overflow(d) {
                return end;
            }
            let filled = d.fill(self);
            self.reading_done();
            if let Err(e) = filled {
                // A plugin that went away may have handled more first: take
                // that, so less is sent again.
                d.salvage(self);
                return End::Lost(e);
            }
            if let Some(end) = self.drained() {
                return end;
            }
            let want_out = d.has_unsent();
            if !want_out && !d.window_full() {
                self.handle.wake.arm();
                if !self.reader.caught_up() {
                    continue;
                }
            }
            let wait = d.patience();
            let sock_flags = if want_out {
                PollFlags::POLLIN | PollFlags::POLLOUT
            } else {
                PollFlags::POLLIN
            };
            // While the delivery is lent, its socket is polled by number:
            // the delivery, which owns it, outlives the wait.
            let sock = d.socket().as_raw_fd();
            let handle = self.handle.clone();
            let pidfd = child.as_ref().map(Running::pidfd);
            let wait_for_events = || {
                // SAFETY: `sock` belongs to the delivery, alive and not
                // closed by anyone during this call (an appender it is lent
                // to only writes to it).
                let sock = unsafe { BorrowedFd::borrow_raw(sock) };
                let mut fds = vec![
                    PollFd::new(sock, sock_flags),
                    PollFd::new(handle.wake.fd(), PollFlags::POLLIN),
                ];
                if let Some(p) = pidfd {
                    fds.push(PollFd::new(p, PollFlags::POLLIN));
                }
                let polled = nix::poll::poll(&mut fds, timeout(wait));
                let ev = |i: usize| {
                    fds.get(i)
                        .and_then(PollFd::revents)
                        .unwrap_or(PollFlags::empty())
                };
                (polled, ev(0), ev(1), ev(2))
            };
            let (polled, sock_ev, wake_ev, child_ev) = if d.lendable() && !want_out {
                let mut lent = Lent {
                    sender: self,
                    delivery: d,
                    failed: None,
                };
                let events = handle.wake.while_lent(&mut lent, wait_for_events);
                if let Some(e) = lent.failed {
                    d.salvage(self);
                    return End::Lost(e);
                }
                events
            } else {
                wait_for_events()
            };
            match polled {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return End::Lost(format!("poll: {e}")),
            }
            if !wake_ev.is_empty() {
                self.handle.wake.clear();
            }
            if let Err(e) = d.heard(sock_ev.contains(PollFlags::POLLIN), self) {
                return End::Lost(e);
            }
            if sock_ev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                d.salvage(self);
                return End::Lost("the plugin closed the connection".into());
            }
            if !child_ev.is_empty() {
                let status = child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                d.salvage(self);
                return End::Lost(match status {
                    Some(st) => format!("plugin program exited ({st})"),
                    None => "plugin program exited".into(),
                });
            }
        }
    }

    /// Applies the overflow policy if the plugin is further behind than
    /// allowed, after skipping what the journal's size limit deleted.
    fn overflow(&mut self, d: &mut dyn Delivery) -> Option<End> {
        self.report_owed_loss(false);
        if let Some(start) = self.evicted() {
            if self.reader.next_seq() <= start {
                d.forget_partial();
            }
        }
        let journal = &self.services.journal;
        let pos = self.handle.position();
        let end = journal.end();
        let backlog = end.saturating_sub(pos.acked + 1);
        let cfg = &self.config;
        match cfg.overflow {
            Overflow::Spool => {
                if journal.bytes_behind(pos.replay_from) > cfg.spool_max {
                    let to = journal.position_within(cfg.spool_max);
                    self.overflowed(d, to, DropReason::SpoolMax);
                }
                None
            }
            Overflow::Drop if backlog > cfg.queue_size => {
                let to = end - cfg.queue_size;
                self.overflowed(d, to, DropReason::Overflow);
                None
            }
            Overflow::Suspend if backlog > cfg.queue_size => {
                tracing::warn!(
                    message_id = crate::log_ids::PLUGIN_OVERFLOW,
                    plugin = %self.handle.name,
                    backlog,
                    "plugin {} is {backlog} records behind, more than its queue_size {}; suspending it (overflow = suspend)",
                    self.handle.name,
                    cfg.queue_size
                );
                lock(&self.handle.control).suspended = true;
                Some(End::Suspend)
            }
            _ => None,
        }
    }

    fn overflowed(&mut self, d: &mut dyn Delivery, to: u64, reason: DropReason) {
        if !self.loss_reported {
            tracing::warn!(
                message_id = crate::log_ids::PLUGIN_OVERFLOW,
                plugin = %self.handle.name,
                "plugin {} overflowed: {}",
                self.handle.name,
                dropped_because(reason)
            );
            self.loss_reported = true;
        }
        self.skip_to(to, reason);
        // Events in progress lost their beginning; start assembling afresh.
        if self.reader.next_seq() <= to {
            d.forget_partial();
        }
    }

    fn advance(&mut self, p: Position, records: u64) {
        let mut pos = lock(&self.handle.position);
        let next = Position {
            acked: pos.acked.max(p.acked),
            replay_from: pos.replay_from.max(p.replay_from),
        };
        let changed = next != *pos;
        *pos = next;
        drop(pos);
        stats::add(&self.handle.counters.acked, records);
        if changed {
            self.store(next);
        }
    }

    fn reading_done(&self) {
        self.handle
            .reading
            .store(self.reader.next_seq(), Ordering::Relaxed);
    }
}

/// A round of a stock sender's work (fill the plugin from the journal), lent
/// to appenders while the sender waits for records (`journal::wakeup`), so
/// that an appender of a small batch writes it to the plugin itself rather
/// than waking the sender to do it. The sender is woken when the plugin's
/// socket is full (it must wait to write the rest), when filling fails
/// (kept in `failed`), when more came than the round took, or while a
/// control request waits for it (a drain then sees each round).
struct Lent<'a, D> {
    sender: &'a mut Sender,
    delivery: &'a mut D,
    failed: Option<String>,
}

impl<D: Delivery> HandOff for Lent<'_, D> {
    fn take_over(&mut self) -> bool {
        if self.failed.is_some() {
            return false;
        }
        let filled = self.delivery.fill(&mut *self.sender);
        self.sender.reading_done();
        if let Err(e) = filled {
            self.failed = Some(e);
            return false;
        }
        // A full socket, or a request only the sender carries out (a drain
        // it must see complete, a stop, a suspension, a new configuration).
        if self.delivery.has_unsent() || self.sender.requested() {
            return false;
        }
        self.sender.handle.wake.arm();
        self.sender.reader.caught_up()
    }
}

impl Host for Sender {
    fn reader(&mut self) -> &mut Reader {
        &mut self.reader
    }

    fn delivered(&mut self, records: u64) {
        stats::add(&self.handle.counters.delivered, records);
    }

    fn settled(&mut self, position: Position, records: u64) {
        self.advance(position, records);
    }

    fn filtered_upto(&self) -> u64 {
        self.filtered_upto
    }

    fn filtered(&mut self, upto: u64, records: u64) {
        self.filtered_upto = self.filtered_upto.max(upto);
        stats::add(&self.handle.counters.filtered, records);
    }

    fn lost(&mut self, from: u64, to: u64, reason: &LostReason) {
        match reason {
            // As if seen before reading (`evicted`): the cursor moves on.
            LostReason::Evicted => self.skip_to(to, DropReason::JournalLimit),
            LostReason::Damaged(what) => {
                self.handle
                    .counters
                    .drop_records(DropReason::Damaged, to - from);
                let total = stats::get(&self.handle.counters.dropped);
                tracing::error!(
                    message_id = crate::log_ids::RECORD_LOSS,
                    plugin = %self.handle.name,
                    skipped = to - from,
                    dropped = total,
                    "plugin {}: journal entries {from}..{to} are unreadable ({what}), {total} dropped in all",
                    self.handle.name
                );
            }
        }
    }

    fn stats(&mut self) -> Vec<u8> {
        let snap = (self.services.snapshot)();
        serde_json::to_vec(&snap).unwrap_or_default()
    }

    fn command(&mut self, name: &str, args: &[String]) -> (CommandStatus, String) {
        stats::add(&self.handle.counters.commands, 1);
        let outcome =
            self.services
                .actions
                .run(&self.handle.name, name, self.config.actions.get(name), args);
        if outcome.effect == Effect::SuspendPlugin {
            lock(&self.handle.control).suspended = true;
        }
        (outcome.status, outcome.message)
    }

    fn notify(&mut self, notice: Notice) {
        self.services
            .notices
            .offer(&self.handle.name, notice, Instant::now());
    }
}

fn timeout(d: Duration) -> PollTimeout {
    PollTimeout::try_from(d.as_millis().min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
}
