//! audisp-remote's sending side: from the durable spool to the aggregator.
//!
//! The spool is a [`Journal`] whose entries are the records the dispatcher
//! handed over; this module sends them in order, on one connection at a
//! time, and moves its acknowledged position as replies come:
//!
//! * at connect it offers fast mode ([`wire::hello_line`] + `HEARTBEAT`);
//!   audisp-receive answers `FAST_OK` with the last record it holds from this
//!   spool and the sender streams batches from there, up to `window` bytes
//!   unacknowledged; stock auditd answers `ACK` and gets the stock protocol:
//!   one `MESSAGE` at a time, each waiting for its reply (EOE records, which
//!   auditd does not acknowledge, are not sent to it);
//! * `HEARTBEAT` after `heartbeat` of silence; replies late by more than
//!   `reply_timeout` end the connection;
//! * a failed or ended connection is retried with exponential backoff;
//! * network failure, DISKLOW, DISKFULL, DISKERROR and ENDING each run the
//!   action configured for them ([`Action`]).

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender as Tx;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::journal::{Journal, ReadOutcome, Step};
use crate::record_types;
use crate::sdk::Command;

use super::link::Link;
use super::tls;
use super::wire::{self, types, BatchBuilder, Decoder, Frame};

/// What to do when something goes wrong (per case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    Ignore,
    /// A log line (the default for all but remote ending).
    Log,
    /// Log, then reconnect after the backoff (the default for remote
    /// ending).
    Reconnect,
    /// Stop sending until SIGUSR2 (records keep being spooled).
    Suspend,
    /// Ask the dispatcher to run the action the admin configured under this
    /// name for this plugin (exec, suspend, system-level actions).
    Dispatcher(String),
}

impl Action {
    /// Parses `ignore`, `log`/`syslog`, `reconnect`, `suspend` or
    /// `dispatcher:NAME`.
    pub fn parse(s: &str) -> Result<Action, String> {
        Ok(match s {
            "ignore" => Action::Ignore,
            "log" | "syslog" => Action::Log,
            "reconnect" => Action::Reconnect,
            "suspend" => Action::Suspend,
            _ => match s.strip_prefix("dispatcher:") {
                Some(n)
                    if !n.is_empty()
                        && n.bytes().all(|b| {
                            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                        }) =>
                {
                    Action::Dispatcher(n.to_string())
                }
                _ => {
                    return Err(format!(
                    "unknown action {s:?}: use ignore, log, reconnect, suspend or dispatcher:NAME"
                ))
                }
            },
        })
    }
}

/// The failure cases with an action of their own.
#[derive(Debug, Clone)]
pub struct Actions {
    /// The aggregator cannot be reached (after the first failed attempt of
    /// an outage).
    pub network_failure: Action,
    /// DISKLOW received.
    pub disk_low: Action,
    /// DISKFULL received.
    pub disk_full: Action,
    /// DISKERROR received.
    pub disk_error: Action,
    /// ENDING received.
    pub remote_ending: Action,
}

impl Default for Actions {
    fn default() -> Self {
        Actions {
            network_failure: Action::Log,
            disk_low: Action::Log,
            disk_full: Action::Log,
            disk_error: Action::Log,
            remote_ending: Action::Reconnect,
        }
    }
}

/// Sender settings.
#[derive(Clone)]
pub struct SenderConfig {
    /// `host:port` of the aggregator.
    pub server: String,
    /// Offer fast mode (off: always speak the stock protocol).
    pub fast: bool,
    /// Unacknowledged bytes allowed in fast mode.
    pub window: usize,
    /// Silence after which a HEARTBEAT is sent (None: never).
    pub heartbeat: Option<Duration>,
    /// How long a reply may take.
    pub reply_timeout: Duration,
    /// First and largest pause between connection attempts.
    pub backoff: (Duration, Duration),
    /// Actions per failure case.
    pub actions: Actions,
    /// TLS, if configured.
    pub tls: Option<tls::Client>,
    /// Where the stock-mode position is kept.
    pub state_dir: PathBuf,
}

/// Shared between the sender thread and the plugin side.
#[derive(Default)]
pub struct SenderState {
    /// Everything before this spool position is acknowledged.
    pub acked: AtomicU64,
    /// Set on shutdown.
    pub stop: AtomicBool,
    /// Set by `suspend`, cleared by SIGUSR2.
    pub suspended: AtomicBool,
}

enum Outcome {
    /// Stop asked.
    Stopped,
    /// Connection failed or ended; the string says why.
    Failed(String),
    /// The aggregator asked to pause (ENDING, disk errors).
    Remote(String),
}

/// The sending loop: runs until `state.stop`.
pub struct SenderLoop {
    cfg: SenderConfig,
    spool: Journal,
    id: [u8; 16],
    state: Arc<SenderState>,
    actions: Tx<Command>,
    stock_seq: u32,
    pos_file: PathBuf,
}

impl SenderLoop {
    /// A sender for `spool`, whose identity is the spool's journal id.
    pub fn new(
        cfg: SenderConfig,
        spool: Journal,
        state: Arc<SenderState>,
        actions: Tx<Command>,
    ) -> SenderLoop {
        let pos_file = cfg.state_dir.join("sent.pos");
        let acked = std::fs::read_to_string(&pos_file)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(1)
            .max(spool.start());
        state.acked.store(acked, Ordering::Release);
        SenderLoop {
            id: spool.id().0,
            cfg,
            spool,
            state,
            actions,
            stock_seq: 1,
            pos_file,
        }
    }

    fn act(&self, action: &Action, what: &str) {
        match action {
            Action::Ignore => {}
            Action::Log | Action::Reconnect => tracing::warn!("{what}"),
            Action::Suspend => {
                tracing::warn!("{what}: suspending sending until SIGUSR2");
                self.state.suspended.store(true, Ordering::Release);
            }
            Action::Dispatcher(name) => {
                tracing::warn!("{what}: asking audispd for action {name:?}");
                let _ = self.actions.send(Command {
                    name: name.clone(),
                    args: vec![what.to_string()],
                });
            }
        }
    }

    /// Records the acknowledged position: one fixed-width overwrite in
    /// place, so a crash at any moment leaves either the old or the new
    /// number, never an empty file.
    fn save_pos(&self, acked: u64) {
        use std::os::unix::fs::FileExt;
        self.state.acked.store(acked, Ordering::Release);
        let r = crate::statefile::open(
            crate::statefile::options()
                .create(true)
                .write(true)
                .truncate(false),
            &self.pos_file,
        )
        .and_then(|f| f.write_all_at(format!("{acked:020}\n").as_bytes(), 0));
        if let Err(e) = r {
            tracing::warn!("{}: {e}", self.pos_file.display());
        }
    }

    /// Runs until stopped.
    pub fn run(mut self) {
        let mut backoff = self.cfg.backoff.0;
        let mut outage: Option<Instant> = None;
        let mut last_trim = Instant::now();
        while !self.state.stop.load(Ordering::Acquire) {
            if self.state.suspended.load(Ordering::Acquire)
                || self.spool.end() <= self.state.acked.load(Ordering::Acquire)
            {
                // Nothing to send (connect lazily, as audisp-remote does) or
                // suspended.
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let outcome = match self.connect() {
                Ok(link) => {
                    if outage.take().is_some() {
                        tracing::info!("connected to {} again", self.cfg.server);
                    }
                    backoff = self.cfg.backoff.0;
                    self.session(link)
                }
                Err(e) => Outcome::Failed(format!("cannot connect to {}: {e}", self.cfg.server)),
            };
            let acked = self.state.acked.load(Ordering::Acquire);
            if last_trim.elapsed() > Duration::from_secs(2) {
                let _ = self.spool.retain_from(acked);
                last_trim = Instant::now();
            }
            match outcome {
                Outcome::Stopped => break,
                Outcome::Failed(why) => {
                    if outage.is_none() {
                        outage = Some(Instant::now());
                        let a = self.cfg.actions.network_failure.clone();
                        self.act(&a, &format!("network failure: {why}"));
                    } else {
                        tracing::debug!("{why}");
                    }
                }
                Outcome::Remote(why) => tracing::info!("pausing before reconnecting: {why}"),
            }
            self.pause(backoff);
            backoff = (backoff * 2).min(self.cfg.backoff.1);
        }
        let acked = self.state.acked.load(Ordering::Acquire);
        self.save_pos(acked);
    }

    fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until && !self.state.stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn connect(&self) -> io::Result<Link> {
        let addrs: Vec<_> = self.cfg.server.to_socket_addrs()?.collect();
        let mut last = io::Error::other("no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.cfg.reply_timeout) {
                Ok(s) => {
                    s.set_nodelay(true)?;
                    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::KeepAlive, &true)?;
                    s.set_read_timeout(Some(self.cfg.reply_timeout))?;
                    s.set_write_timeout(Some(self.cfg.reply_timeout))?;
                    return match &self.cfg.tls {
                        Some(t) => Link::tls(t.connect(s)?),
                        None => Link::plain(s),
                    };
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Reads until one whole reply is there (or the deadline passes).
    /// `opening`: the reply to the opening heartbeat (and hello) is awaited.
    fn reply(
        &self,
        link: &mut Link,
        buf: &mut Vec<u8>,
        deadline: Instant,
        opening: bool,
    ) -> Result<(wire::Header, Vec<u8>), Outcome> {
        loop {
            match Decoder.next(buf) {
                Ok(Some((Frame::Managed(h, p), n))) => {
                    let p = p.to_vec();
                    buf.drain(..n);
                    return Ok((h, p));
                }
                Ok(Some((Frame::Line(_), _))) | Err(_) => {
                    return Err(Outcome::Failed("garbage from the aggregator".into()))
                }
                Ok(None) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Outcome::Failed(format!(
                    "no reply from {} within {:?}",
                    self.cfg.server, self.cfg.reply_timeout
                )));
            }
            if self.state.stop.load(Ordering::Acquire) {
                return Err(Outcome::Stopped);
            }
            link.flush_some()
                .map_err(|e| Outcome::Failed(e.to_string()))?;
            link.wait(None, left.min(Duration::from_millis(200)))
                .map_err(|e| Outcome::Failed(e.to_string()))?;
            let closed = match link.read_some(buf) {
                Ok(true) => continue,
                Ok(false) => "connection closed by the aggregator".to_string(),
                // TLS without close_notify, or unread data at the close.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    e.to_string()
                }
                Err(e) => return Err(Outcome::Failed(e.to_string())),
            };
            if opening && self.cfg.fast {
                // The protocol has no refusal message: audisp-receive just
                // closes, and its log says why (how it closed says nothing
                // more: TLS without close_notify, or a reset).
                return Err(Outcome::Failed(format!(
                    "{} closed the connection without answering the opening heartbeat; \
                     audisp-receive does that when it refuses this sender's \
                     spool identity (in use by another connection, or bound to another \
                     client certificate): its log says which",
                    self.cfg.server
                )));
            }
            return Err(Outcome::Failed(closed));
        }
    }

    /// Handles a reply that is not the plain acknowledgement expected.
    fn remote_reply(&self, h: &wire::Header, p: &[u8]) -> Option<Outcome> {
        let text = String::from_utf8_lossy(p);
        match h.mtype {
            types::ENDING => {
                let a = self.cfg.actions.remote_ending.clone();
                self.act(
                    &a,
                    &format!("{} is shutting down (ENDING)", self.cfg.server),
                );
                Some(Outcome::Remote("ending".into()))
            }
            types::DISKLOW => {
                let a = self.cfg.actions.disk_low.clone();
                self.act(&a, &format!("{}: disk low", self.cfg.server));
                None
            }
            types::DISKFULL => {
                let a = self.cfg.actions.disk_full.clone();
                self.act(&a, &format!("{}: disk full ({text})", self.cfg.server));
                Some(Outcome::Remote("disk full".into()))
            }
            t if t & types::FATAL_MASK != 0 => {
                let a = self.cfg.actions.disk_error.clone();
                self.act(&a, &format!("{}: disk error ({text})", self.cfg.server));
                Some(Outcome::Remote("disk error".into()))
            }
            t if t & types::WARN_MASK != 0 => {
                tracing::warn!("{}: warning {t:#x} ({text})", self.cfg.server);
                None
            }
            _ => None,
        }
    }

    fn session(&mut self, mut link: Link) -> Outcome {
        let mut buf = Vec::new();
        let mut hello = Vec::new();
        if self.cfg.fast {
            hello.extend_from_slice(&wire::hello_line(self.id));
        }
        self.stock_seq = self.stock_seq.wrapping_add(1);
        let seq = self.stock_seq;
        let _ = wire::encode(&mut hello, types::HEARTBEAT, seq, b"");
        if let Err(e) = link.queue(&hello) {
            return Outcome::Failed(e.to_string());
        }
        let deadline = Instant::now() + self.cfg.reply_timeout;
        let (h, p) = match self.reply(&mut link, &mut buf, deadline, true) {
            Ok(x) => x,
            Err(o) => return o,
        };
        match h.mtype {
            types::FAST_OK if h.seq == seq => {
                let last = wire::parse_u64(&p).unwrap_or(0);
                let acked = self.state.acked.load(Ordering::Acquire);
                // The receiver is authoritative for what it holds; if it
                // holds less than we think (its store was wiped), resend what
                // the spool still has.
                let next = (last + 1).max(self.spool.start());
                if next != acked {
                    tracing::info!("aggregator holds up to {last}; sending from {next}");
                }
                self.save_pos(next);
                self.fast(link, buf)
            }
            types::ACK if h.seq == seq => {
                tracing::info!("{} speaks the stock protocol", self.cfg.server);
                self.stock(link, buf)
            }
            _ => self.remote_reply(&h, &p).unwrap_or_else(|| {
                Outcome::Failed(format!(
                    "unexpected reply {:#x} to the opening heartbeat",
                    h.mtype
                ))
            }),
        }
    }

    fn stock(&mut self, mut link: Link, mut buf: Vec<u8>) -> Outcome {
        let mut last_send = Instant::now();
        let mut msg = Vec::with_capacity(wire::MAX_RECORD + wire::HEADER_LEN);
        let mut reader = self.spool.reader(self.state.acked.load(Ordering::Acquire));
        let mut last_trim = Instant::now();
        loop {
            if self.state.stop.load(Ordering::Acquire) {
                return Outcome::Stopped;
            }
            if self.state.suspended.load(Ordering::Acquire) {
                return Outcome::Remote("suspended".into());
            }
            if last_trim.elapsed() > Duration::from_secs(2) {
                let _ = self
                    .spool
                    .retain_from(self.state.acked.load(Ordering::Acquire));
                last_trim = Instant::now();
            }
            let mut rec: Option<(u64, Vec<u8>, u32)> = None;
            let got = reader.read(1, &mut |e| {
                rec = Some((e.seq, e.text.to_vec(), e.rtype));
                Step::Stop
            });
            match got {
                Ok(ReadOutcome::Lost { from, to, .. }) => {
                    tracing::error!("spool entries {from}..{to} lost before they were sent");
                    self.save_pos(to);
                    continue;
                }
                Err(e) => return Outcome::Failed(format!("spool: {e}")),
                _ => {}
            }
            let Some((seq, text, rtype)) = rec else {
                if let Some(hb) = self.cfg.heartbeat {
                    if last_send.elapsed() >= hb {
                        if let Some(o) = self.stock_exchange(
                            &mut link,
                            &mut buf,
                            &mut msg,
                            types::HEARTBEAT,
                            b"",
                        ) {
                            return o;
                        }
                        last_send = Instant::now();
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            // auditd does not acknowledge EOE records: never send them.
            if rtype != record_types::EOE {
                let mut payload = text;
                payload.truncate(wire::MAX_STOCK_PAYLOAD - 1);
                payload.push(b'\n');
                if let Some(o) =
                    self.stock_exchange(&mut link, &mut buf, &mut msg, types::MESSAGE, &payload)
                {
                    return o;
                }
                last_send = Instant::now();
            }
            // Saved after every acknowledgement (a page-cache write, cheap
            // next to the round trip): a restarted sender resends at most the
            // one record in flight, which is what a receiver can recognise.
            self.save_pos(seq + 1);
        }
    }

    /// One request/reply in the stock protocol, retried on the same
    /// sequence number by the caller's reconnect. `None`: acknowledged.
    fn stock_exchange(
        &mut self,
        link: &mut Link,
        buf: &mut Vec<u8>,
        msg: &mut Vec<u8>,
        mtype: u32,
        payload: &[u8],
    ) -> Option<Outcome> {
        self.stock_seq = self.stock_seq.wrapping_add(1).max(2);
        let seq = self.stock_seq;
        msg.clear();
        let _ = wire::encode(msg, mtype, seq, payload);
        if let Err(e) = link.queue(msg) {
            return Some(Outcome::Failed(e.to_string()));
        }
        let deadline = Instant::now() + self.cfg.reply_timeout;
        let (h, p) = match self.reply(link, buf, deadline, false) {
            Ok(x) => x,
            Err(o) => return Some(o),
        };
        if h.mtype == types::ENDING {
            return self.remote_reply(&h, &p);
        }
        if h.seq != seq {
            return Some(Outcome::Failed(format!(
                "reply for seq {} while waiting for {seq}",
                h.seq
            )));
        }
        match h.mtype {
            types::ACK => None,
            _ => self.remote_reply(&h, &p),
        }
    }

    fn fast(&mut self, mut link: Link, mut buf: Vec<u8>) -> Outcome {
        let wake = match self.spool.wakeup() {
            Ok(w) => w,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let acked0 = self.state.acked.load(Ordering::Acquire);
        let mut reader = self.spool.reader(acked0);
        let mut batch = BatchBuilder::default();
        // The receiver writes FAST_ORIGINS with its FAST_OK: if it came
        // along, the first batch already carries origins.
        if let Ok(Some((Frame::Managed(h, _), n))) = Decoder.next(&buf) {
            if h.mtype == types::FAST_ORIGINS {
                batch.with_origin = true;
                buf.drain(..n);
            }
        }
        let mut msg = Vec::with_capacity(wire::MAX_MESSAGE);
        // (end seq of batch, bytes) of batches in flight.
        let mut inflight: std::collections::VecDeque<(u64, usize)> = Default::default();
        let mut inflight_bytes = 0usize;
        let mut last_io = Instant::now();
        let mut heartbeat_seq: Option<(u32, Instant)> = None;
        let mut last_save = Instant::now();
        loop {
            if self.state.stop.load(Ordering::Acquire) {
                return Outcome::Stopped;
            }
            if self.state.suspended.load(Ordering::Acquire) {
                return Outcome::Remote("suspended".into());
            }
            // Fill the window.
            while inflight_bytes < self.cfg.window && !link.pending() {
                batch.start(reader.next_seq());
                let got = reader.read(wire::MAX_BATCH, &mut |e| {
                    if !wire::is_record_line(e.text) {
                        // audisp-receive refuses a batch holding a
                        // non-record, so one is never sent: the batch ends
                        // before it, and the next one starts after it.
                        if batch.count() > 0 {
                            return Step::StopBefore;
                        }
                        tracing::error!(
                            "spool entry {} is not an audit record (it does not start with \
                             type= or node=): not sent",
                            e.seq
                        );
                        batch.start(e.seq + 1);
                        return Step::Next;
                    }
                    if batch.push(e.text, e.origin) {
                        Step::Next
                    } else {
                        Step::StopBefore
                    }
                });
                match got {
                    Ok(ReadOutcome::Entries(_)) if batch.count() > 0 => {}
                    Ok(ReadOutcome::Lost { from, to, .. }) => {
                        tracing::error!("spool entries {from}..{to} lost before they were sent");
                        continue;
                    }
                    Ok(other) => {
                        tracing::trace!("spool read at {}: {other:?}", reader.next_seq());
                        break;
                    }
                    Err(e) => return Outcome::Failed(format!("spool: {e}")),
                }
                msg.clear();
                let kind = if batch.with_origin {
                    types::FAST_BATCH_ORIGIN
                } else {
                    types::FAST_BATCH
                };
                let _ = wire::encode(&mut msg, kind, 0, batch.payload());
                if let Err(e) = link.queue(&msg) {
                    return Outcome::Failed(e.to_string());
                }
                tracing::trace!(
                    "batch {}..{} queued",
                    batch_first(&batch),
                    reader.next_seq()
                );
                inflight.push_back((reader.next_seq(), msg.len()));
                inflight_bytes += msg.len();
                last_io = Instant::now();
                if let Err(e) = link.flush_some() {
                    return Outcome::Failed(e.to_string());
                }
            }
            if let Err(e) = link.flush_some() {
                return Outcome::Failed(e.to_string());
            }
            // Heartbeat when idle; an unanswered one ends the connection.
            if let Some(hb) = self.cfg.heartbeat {
                if heartbeat_seq.is_none() && inflight.is_empty() && last_io.elapsed() >= hb {
                    self.stock_seq = self.stock_seq.wrapping_add(1);
                    msg.clear();
                    let _ = wire::encode(&mut msg, types::HEARTBEAT, self.stock_seq, b"");
                    if let Err(e) = link.queue(&msg) {
                        return Outcome::Failed(e.to_string());
                    }
                    heartbeat_seq = Some((self.stock_seq, Instant::now()));
                    last_io = Instant::now();
                }
            }
            if let Some((_, since)) = heartbeat_seq {
                if since.elapsed() > self.cfg.reply_timeout {
                    return Outcome::Failed("heartbeat not answered".into());
                }
            }
            if let Some(&(_, _)) = inflight.front() {
                if last_io.elapsed() > self.cfg.reply_timeout.max(Duration::from_secs(1)) * 4 {
                    return Outcome::Failed(format!(
                        "no acknowledgement from {} for {:?}",
                        self.cfg.server,
                        last_io.elapsed()
                    ));
                }
            }
            wake.arm();
            let idle = reader.caught_up() || inflight_bytes >= self.cfg.window;
            let fired = if idle || link.pending() {
                match link.wait(Some(wake.fd()), Duration::from_millis(200)) {
                    Ok(f) => f,
                    Err(e) => return Outcome::Failed(e.to_string()),
                }
            } else {
                false
            };
            if fired {
                wake.clear();
            }
            match link.read_some(&mut buf) {
                Ok(true) => {}
                Ok(false) => return Outcome::Failed("connection closed by the aggregator".into()),
                Err(e) => return Outcome::Failed(e.to_string()),
            }
            loop {
                let (h, p, n) = match Decoder.next(&buf) {
                    Ok(Some((Frame::Managed(h, p), n))) => (h, p.to_vec(), n),
                    Ok(None) => break,
                    _ => return Outcome::Failed("garbage from the aggregator".into()),
                };
                buf.drain(..n);
                last_io = Instant::now();
                match h.mtype {
                    types::FAST_ACK => {
                        let Some(upto) = wire::parse_u64(&p) else {
                            return Outcome::Failed("bad FAST_ACK".into());
                        };
                        while inflight.front().is_some_and(|&(end, _)| end <= upto + 1) {
                            if let Some((_, b)) = inflight.pop_front() {
                                inflight_bytes -= b;
                            }
                        }
                        self.state.acked.store(upto + 1, Ordering::Release);
                        if last_save.elapsed() > Duration::from_millis(500) {
                            self.save_pos(upto + 1);
                            let _ = self.spool.retain_from(upto + 1);
                            last_save = Instant::now();
                        }
                    }
                    types::ACK if heartbeat_seq.is_some_and(|(s, _)| s == h.seq) => {
                        heartbeat_seq = None
                    }
                    // The receiver takes records' first origins: batches
                    // from the next one on carry them (its loop guard).
                    types::FAST_ORIGINS => batch.with_origin = true,
                    _ => {
                        if let Some(o) = self.remote_reply(&h, &p) {
                            return o;
                        }
                    }
                }
            }
        }
    }
}

fn batch_first(b: &BatchBuilder) -> u64 {
    b.payload()
        .get(..8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}
