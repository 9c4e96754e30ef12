//! audisp-receive's connections: accepting (within the limits of
//! [`super::slots`]), speaking the managed, ASCII and fast protocols,
//! acknowledging only what is durable, and closing connections that send
//! garbage, stay silent past the handshake timeout or idle past the idle
//! timeout. One thread per connection; the store's group commit lets their
//! fsyncs coincide.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;

use super::slots::{Cut, LogLimit, Sender, Slot, SlotLimits, Slots};
use super::store::{FastClaim, SenderKey, Store, Stored};
use super::wire::{self, types, Decoder, Frame, WireError};
use crate::journal_id::Origin;

/// A connection's byte stream: plain TCP, or TLS over it.
pub trait Transport: Read + Write + Send {
    /// Client identity established by the transport (TLS certificate
    /// subject), for the log.
    fn identity(&self) -> Option<String> {
        None
    }

    /// The verified client certificate's fingerprint (`sha256:HEX`), which
    /// fast-mode spool identities are bound to; None on plain TCP.
    fn certificate(&self) -> Option<String> {
        None
    }
}

impl Transport for TcpStream {}

/// Makes a transport out of an accepted TCP connection (plain, or a TLS
/// handshake); an error refuses the client (already logged by the caller).
pub type Wrap = dyn Fn(TcpStream) -> io::Result<Box<dyn Transport>> + Send + Sync;

/// Settings of the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Connections still in their handshake, and stock-protocol senders,
    /// allowed from one address ([`super::slots`]).
    pub max_per_addr: usize,
    /// Concurrent connections in all.
    pub max_connections: usize,
    /// Close a connection that has not shown it is a sender (TLS handshake
    /// and first message) within this long (None: never).
    pub handshake_timeout: Option<Duration>,
    /// Close a connection that sent nothing for this long (None: never),
    /// telling it `ENDING` first.
    pub idle_timeout: Option<Duration>,
    /// Free space on the store's filesystem below which replies are
    /// `DISKLOW` instead of `ACK`.
    pub space_left: u64,
    /// The store's directory (for the free-space check).
    pub dir: PathBuf,
}

/// Counters, for the log and the tests.
#[derive(Debug, Default)]
pub struct Counters {
    /// Records stored.
    pub stored: AtomicU64,
    /// Resends recognised and not stored again.
    pub duplicates: AtomicU64,
    /// Connections refused (limits, TLS) or closed for garbage.
    pub refused: AtomicU64,
}

/// State shared by the accept loop and the connections.
pub struct Shared {
    /// The store.
    pub store: Arc<Store>,
    /// Settings.
    pub cfg: ServerConfig,
    /// Set on shutdown: every connection sends `ENDING` and closes.
    pub stop: AtomicBool,
    /// Counters.
    pub counters: Counters,
    /// Which connections hold the limited places.
    pub slots: Slots,
    /// One refusal logged a second.
    refusals: LogLimit,
    /// One connection closed by the slots logged a second.
    cuts: LogLimit,
    /// Fast senders (by index) with a live connection, and who that is.
    live: Mutex<HashMap<u16, String>>,
    disk: Mutex<(Instant, bool)>,
}

impl Shared {
    /// Shared state for a server on `store`.
    pub fn new(store: Arc<Store>, cfg: ServerConfig) -> Shared {
        let slots = Slots::new(
            SlotLimits {
                max_connections: cfg.max_connections,
                max_per_addr: cfg.max_per_addr,
                handshake_timeout: cfg.handshake_timeout,
            },
            store.peer_addresses(),
            Some(cfg.dir.join("known-addresses")),
        );
        Shared {
            store,
            cfg,
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            slots,
            refusals: LogLimit::default(),
            cuts: LogLimit::default(),
            live: Mutex::new(HashMap::new()),
            disk: Mutex::new((Instant::now() - Duration::from_secs(10), false)),
        }
    }

    /// Whether free space is below `space_left` (checked at most once a
    /// second).
    fn disk_low(&self) -> bool {
        let mut d = self.disk.lock().unwrap_or_else(|p| p.into_inner());
        if d.0.elapsed() >= Duration::from_secs(1) {
            let low = nix::sys::statvfs::statvfs(&self.cfg.dir)
                .map(|s| {
                    s.blocks_available().saturating_mul(s.fragment_size()) < self.cfg.space_left
                })
                .unwrap_or(false);
            if low && !d.1 {
                tracing::warn!(
                    "free space in {} below {} bytes: answering DISKLOW",
                    self.cfg.dir.display(),
                    self.cfg.space_left
                );
            }
            *d = (Instant::now(), low);
        }
        d.1
    }

    /// Counts and logs (at most once a second) a connection refused.
    fn refuse(&self, peer: SocketAddr, why: &str) {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(held) = self.refusals.allow() {
            tracing::warn!("refusing {peer}: {why}{}", more(held, "refused"));
        }
    }

    /// Counts and logs (at most once a second) a connection the slots
    /// closed.
    fn cut(&self, who: &str, cut: Cut) {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(held) = self.cuts.allow() {
            let why = match cut {
                Cut::PushedOut => "its place went to a newer connection (it had not shown \
                                   it is a sender, and connection limits were reached)"
                    .to_string(),
                Cut::HandshakeTimeout => format!(
                    "no handshake and first message within {:?}",
                    self.cfg.handshake_timeout.unwrap_or_default()
                ),
            };
            tracing::info!("{who}: closing: {why}{}", more(held, "closed so"));
        }
    }

    /// Marks fast sender `idx` as served by connection `who`; if another
    /// live connection already serves it, returns that one instead.
    fn claim(&self, idx: u16, who: &str) -> Option<String> {
        let mut m = self.live.lock().unwrap_or_else(|p| p.into_inner());
        match m.get(&idx) {
            Some(other) => Some(other.clone()),
            None => {
                m.insert(idx, who.to_string());
                None
            }
        }
    }

    fn release(&self, idx: u16) {
        let mut m = self.live.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(&idx);
    }
}

/// The tail of a rate-limited log line: how many like it were held back.
fn more(held: u64, what: &str) -> String {
    if held == 0 {
        String::new()
    } else {
        format!(" ({held} more {what} in the last second, not logged)")
    }
}

/// Accepts connections on `listeners` until `shared.stop`; each accepted
/// client is served on its own thread. Returns once every connection has
/// said `ENDING` and closed.
pub fn serve(
    listeners: Vec<TcpListener>,
    shared: Arc<Shared>,
    wrap: Arc<Wrap>,
    beat: crate::engine::liveness::Heartbeat,
) -> io::Result<()> {
    for l in &listeners {
        l.set_nonblocking(true)?;
    }
    let mut threads: Vec<std::thread::JoinHandle<()>> = Vec::new();
    while !shared.stop.load(Ordering::Acquire) {
        // At least every 250 ms: the watchdog's proof that clients are
        // still being accepted, and the end of silent connections' time.
        beat.beat();
        shared.slots.expire();
        let mut fds: Vec<nix::poll::PollFd<'_>> = listeners
            .iter()
            .map(|l| nix::poll::PollFd::new(l.as_fd(), PollFlags::POLLIN))
            .collect();
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(250u16)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        threads.retain(|t| !t.is_finished());
        for l in &listeners {
            loop {
                let (stream, peer) = match l.accept() {
                    Ok(x) => x,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::warn!("accept: {e}");
                        break;
                    }
                };
                let admitted = stream
                    .try_clone()
                    .map_err(|e| format!("cannot keep a handle on it: {e}"))
                    .and_then(|handle| shared.slots.admit(canonical(peer.ip()), handle));
                let slot = match admitted {
                    Ok(slot) => slot,
                    Err(why) => {
                        shared.refuse(peer, &why);
                        continue;
                    }
                };
                let shared2 = shared.clone();
                let wrap = wrap.clone();
                threads.push(std::thread::spawn(move || {
                    if let Err(e) = setup(&stream) {
                        tracing::warn!("{peer}: {e}");
                    } else {
                        match wrap(stream) {
                            Ok(t) => Connection::new(t, peer, &shared2, Some(&slot)).run(),
                            Err(e) => match slot.cut() {
                                Some(cut) => shared2.cut(&peer.to_string(), cut),
                                None => {
                                    shared2.counters.refused.fetch_add(1, Ordering::Relaxed);
                                    tracing::warn!("refusing {peer}: {e}");
                                }
                            },
                        }
                    }
                    shared2.slots.leave(&slot);
                }));
            }
        }
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Serves one client on `io` until it closes the connection, sends
/// something that is not the protocol, stays idle too long or the server
/// stops: everything a connection does after the accept loop's limits let
/// it in (the fuzz target `remote_session` drives it with arbitrary bytes).
pub fn serve_connection(io: Box<dyn Transport>, peer: SocketAddr, shared: &Shared) {
    Connection::new(io, peer, shared, None).run()
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn setup(s: &TcpStream) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_millis(250)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::KeepAlive, &true)?;
    // A peer gone without FIN or RST (host crashed, link cut) is found
    // within about two minutes rather than the kernel's default two hours:
    // until then its fast-mode identity stays taken (see `hello`).
    nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::TcpKeepIdle, &60)?;
    nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::TcpKeepInterval, &10)?;
    nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::TcpKeepCount, &6)?;
    nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::RcvBuf, &(4 << 20))?;
    Ok(())
}

/// Read size for fast-mode connections (others: 256 KiB).
const FAST_CHUNK: usize = 1 << 20;

enum Mode {
    /// Nothing but records or heartbeats yet: a stock client (or ours
    /// talking stock).
    Stock,
    /// Our hello arrived; the next heartbeat gets `FAST_OK`.
    FastPending(u16),
    /// Fast mode with this sender.
    Fast(u16),
}

enum Reply {
    /// A record (or heartbeat) with this seq was handled: ACK (or DISKLOW).
    Stored(u32),
    /// Heartbeat: plain ACK.
    Ack(u32),
    /// Fast mode accepted; highest seq held.
    FastOk(u32, u64),
    /// Cumulative fast acknowledgement.
    FastAck(u64),
    /// Could not store.
    Failed(u32, bool),
}

struct Connection<'s> {
    io: Box<dyn Transport>,
    peer: SocketAddr,
    who: String,
    shared: &'s Shared,
    buf: Vec<u8>,
    mode: Mode,
    stock_index: Option<u16>,
    /// The fast sender this connection holds in `Shared::live`.
    claimed: Option<u16>,
    last_data: Instant,
    /// Its place among the accepted connections (None: served outside the
    /// accept loop, as the fuzz target does).
    slot: Option<&'s Slot>,
    /// It has shown it is a sender.
    proven: bool,
}

impl Drop for Connection<'_> {
    fn drop(&mut self) {
        if let Some(idx) = self.claimed.take() {
            self.shared.release(idx);
        }
    }
}

/// Why a connection ends.
enum End {
    Closed,
    Garbage(WireError),
    Shutdown,
    Idle,
    Error(io::Error),
    DiskFailed,
    /// A fast-mode hello this connection may not make (why, for the log).
    Refused(String),
}

impl<'s> Connection<'s> {
    fn new(
        io: Box<dyn Transport>,
        peer: SocketAddr,
        shared: &'s Shared,
        slot: Option<&'s Slot>,
    ) -> Self {
        let who = match io.identity() {
            Some(id) => format!("{peer} ({id})"),
            None => peer.to_string(),
        };
        Connection {
            io,
            peer,
            who,
            shared,
            buf: Vec::with_capacity(wire::MAX_MESSAGE + (256 << 10)),
            mode: Mode::Stock,
            stock_index: None,
            claimed: None,
            last_data: Instant::now(),
            slot,
            proven: false,
        }
    }

    /// Takes the connection out of the pending ones: it showed itself to be
    /// `sender`. Refused beyond the per-address limit of stock senders.
    fn proven(&mut self, sender: Sender) -> Result<(), End> {
        if self.proven {
            return Ok(());
        }
        if let Some(slot) = self.slot {
            self.shared
                .slots
                .prove(slot, sender)
                .map_err(End::Refused)?;
        }
        self.proven = true;
        Ok(())
    }

    /// A stock-protocol message arrived: the connection is a stock sender,
    /// known if the store knows its address.
    fn proven_stock(&mut self) -> Result<(), End> {
        if self.proven {
            return Ok(());
        }
        let known = self
            .shared
            .store
            .knows(&SenderKey::Peer(canonical(self.peer.ip())));
        self.proven(Sender::Stock { known })
    }

    fn run(mut self) {
        tracing::info!("{}: connected", self.who);
        let end = self.serve();
        if let Some(cut) = self.slot.and_then(Slot::cut) {
            return self.shared.cut(&self.who, cut);
        }
        match &end {
            End::Closed => tracing::info!("{}: closed by the client", self.who),
            End::Garbage(e) => {
                self.shared.counters.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("{}: closing: protocol error: {e}", self.who);
            }
            End::Shutdown => {
                let mut m = Vec::new();
                let _ = wire::encode(&mut m, types::ENDING, 0, b"");
                let _ = self.io.write_all(&m).and_then(|_| self.io.flush());
                tracing::info!("{}: sent ENDING", self.who);
            }
            End::Idle => {
                // A stock audisp-remote reconnects at its next record after
                // ENDING; after a bare close it would wait for a heartbeat.
                let mut m = Vec::new();
                let _ = wire::encode(&mut m, types::ENDING, 0, b"");
                let _ = self.io.write_all(&m).and_then(|_| self.io.flush());
                tracing::info!("{}: closing: idle (sent ENDING)", self.who)
            }
            End::Error(e) => tracing::info!("{}: closing: {e}", self.who),
            End::DiskFailed => tracing::warn!("{}: closing after a failed store write", self.who),
            End::Refused(why) => {
                self.shared.counters.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("{}: closing: {why}", self.who);
            }
        }
    }

    fn serve(&mut self) -> End {
        let mut chunk = vec![0u8; 256 << 10];
        loop {
            if self.shared.stop.load(Ordering::Acquire) {
                return End::Shutdown;
            }
            if matches!(self.mode, Mode::Fast(_)) && chunk.len() < FAST_CHUNK {
                // Fast senders keep megabytes in flight: take more per read,
                // and so per group commit.
                chunk.resize(FAST_CHUNK, 0);
            }
            match self.io.read(&mut chunk) {
                Ok(0) => return End::Closed,
                Ok(n) => {
                    self.last_data = Instant::now();
                    self.buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = self.process() {
                        return end;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if let Some(idle) = self.shared.cfg.idle_timeout {
                        if self.last_data.elapsed() >= idle {
                            return End::Idle;
                        }
                    }
                }
                Err(e) => return End::Error(e),
            }
        }
    }

    fn stock_index(&mut self) -> io::Result<u16> {
        if let Some(i) = self.stock_index {
            return Ok(i);
        }
        let i = self
            .shared
            .store
            .sender(&SenderKey::Peer(canonical(self.peer.ip())))?;
        self.stock_index = Some(i);
        Ok(i)
    }

    /// Stores a stock record (managed payload or ASCII line `raw`, sequence
    /// number `seq`): the connection's end if it is not a record or the
    /// connection may not be a stock sender, else what storing gave.
    fn stock_record(
        &mut self,
        store: &Store,
        seq: u32,
        raw: &[u8],
    ) -> Result<io::Result<Stored>, End> {
        let text = wire::record_text(stock_payload(raw)).map_err(End::Garbage)?;
        self.proven_stock()?;
        Ok(self
            .stock_index()
            .and_then(|i| store.store_stock(i, seq, &text)))
    }

    /// Handles every complete message in the buffer, makes what they stored
    /// durable with one sync, then replies. `Some` ends the connection.
    fn process(&mut self) -> Option<End> {
        let buf = std::mem::take(&mut self.buf);
        let mut replies = Vec::new();
        let mut sync_to = 0u64;
        let mut consumed = 0;
        let mut end = None;
        let store = self.shared.store.clone();
        while end.is_none() {
            let (frame, n) = match Decoder.next(&buf[consumed..]) {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(e) => {
                    end = Some(End::Garbage(e));
                    break;
                }
            };
            consumed += n;
            let result: Result<Option<Reply>, End> = match (frame, &self.mode) {
                (Frame::Managed(h, _), Mode::FastPending(idx)) if h.mtype == types::HEARTBEAT => {
                    let idx = *idx;
                    self.mode = Mode::Fast(idx);
                    let last = store.last_seq(idx);
                    tracing::info!("{}: fast mode, resuming after {last}", self.who);
                    Ok(Some(Reply::FastOk(h.seq, last)))
                }
                (Frame::Managed(h, _), _) if h.mtype == types::HEARTBEAT => {
                    self.proven_stock().map(|()| Some(Reply::Ack(h.seq)))
                }
                (Frame::Managed(h, p), Mode::Stock) if h.mtype == types::MESSAGE => {
                    match self.stock_record(&store, h.seq, p) {
                        Err(end) => Err(end),
                        Ok(Ok(s)) => {
                            self.count(s.new, s.duplicates);
                            sync_to = sync_to.max(s.sync_to);
                            Ok(Some(Reply::Stored(h.seq)))
                        }
                        Ok(Err(e)) => {
                            tracing::error!("{}: storing failed: {e}", self.who);
                            Ok(Some(Reply::Failed(h.seq, is_full(&e))))
                        }
                    }
                }
                (Frame::Managed(h, p), Mode::Fast(idx))
                    if h.mtype == types::FAST_BATCH || h.mtype == types::FAST_BATCH_ORIGIN =>
                {
                    let idx = *idx;
                    // Every record of the batch passes, or none is stored.
                    let parsed = if h.mtype == types::FAST_BATCH_ORIGIN {
                        wire::parse_batch_origin(p)
                    } else {
                        wire::parse_batch(p)
                            .map(|(f, recs)| (f, recs.into_iter().map(|t| (None, t)).collect()))
                    };
                    let texts = parsed.and_then(|(first, recs)| {
                        let texts = recs
                            .into_iter()
                            .map(|(o, t)| wire::record_text(t).map(|t| (o, t)))
                            .collect::<Result<Vec<_>, _>>()?;
                        Ok((first, texts))
                    });
                    match texts {
                        Err(e) => Err(End::Garbage(e)),
                        Ok((first, texts)) => {
                            let recs: Vec<(Option<Origin>, &[u8])> =
                                texts.iter().map(|(o, t)| (*o, &t[..])).collect();
                            match store.store_fast_origin(idx, first, &recs) {
                                Ok(s) => {
                                    self.count(s.new, s.duplicates);
                                    sync_to = sync_to.max(s.sync_to);
                                    Ok(Some(Reply::FastAck(s.last_seq)))
                                }
                                Err(e) => {
                                    tracing::error!("{}: storing failed: {e}", self.who);
                                    Ok(Some(Reply::Failed(0, is_full(&e))))
                                }
                            }
                        }
                    }
                }
                (Frame::Managed(h, _), _) => Err(End::Garbage(WireError::BadType(h.mtype))),
                (Frame::Line(l), Mode::Stock) => {
                    if let Some(id) = wire::parse_hello(l) {
                        self.hello(&store, id).map(|()| None)
                    } else {
                        // ASCII format: no acknowledgement.
                        match self.stock_record(&store, 0, l) {
                            Err(end) => Err(end),
                            Ok(Ok(s)) => {
                                self.count(s.new, s.duplicates);
                                sync_to = sync_to.max(s.sync_to);
                                Ok(None)
                            }
                            Ok(Err(e)) => {
                                tracing::error!(
                                    "{}: storing failed (ASCII, no way to tell the client): {e}",
                                    self.who
                                );
                                Err(End::DiskFailed)
                            }
                        }
                    }
                }
                (Frame::Line(_), _) => {
                    Err(End::Garbage(WireError::BadLine("text line in fast mode")))
                }
            };
            match result {
                Ok(Some(r)) => {
                    let failed = matches!(r, Reply::Failed(..));
                    replies.push(r);
                    if failed {
                        break;
                    }
                }
                Ok(None) => {}
                Err(e) => end = Some(e),
            }
        }
        self.buf = buf;
        self.buf.drain(..consumed);
        if sync_to > 0 {
            if let Err(e) = store.journal().sync_upto(sync_to) {
                tracing::error!("{}: fsync failed: {e}", self.who);
                let full = is_full(&e);
                for r in replies.iter_mut() {
                    match r {
                        Reply::Stored(seq) => *r = Reply::Failed(*seq, full),
                        Reply::FastAck(_) => *r = Reply::Failed(0, full),
                        _ => {}
                    }
                }
            }
        }
        let low = replies.iter().any(|r| matches!(r, Reply::Stored(_))) && self.shared.disk_low();
        let mut out = Vec::new();
        let mut failed = false;
        for r in &replies {
            let _ = match *r {
                Reply::Stored(seq) => wire::encode(
                    &mut out,
                    if low { types::DISKLOW } else { types::ACK },
                    seq,
                    b"",
                ),
                Reply::Ack(seq) => wire::encode(&mut out, types::ACK, seq, b""),
                Reply::FastOk(seq, last) => {
                    wire::encode(&mut out, types::FAST_OK, seq, &last.to_le_bytes())
                        // Then: this receiver takes records' first origins.
                        .and_then(|()| wire::encode(&mut out, types::FAST_ORIGINS, 0, b""))
                }
                Reply::FastAck(last) => {
                    wire::encode(&mut out, types::FAST_ACK, 0, &last.to_le_bytes())
                }
                Reply::Failed(seq, full) => {
                    failed = true;
                    if full {
                        wire::encode(&mut out, types::DISKFULL, seq, wire::DISKFULL_TEXT)
                    } else {
                        wire::encode(&mut out, types::DISKERROR, seq, wire::DISKERROR_TEXT)
                    }
                }
            };
        }
        if !out.is_empty() {
            if let Err(e) = self.io.write_all(&out).and_then(|_| self.io.flush()) {
                return Some(End::Error(e));
            }
        }
        if end.is_none() && failed && matches!(self.mode, Mode::Fast(_)) {
            // A fast sender resends from its last acknowledged record on a
            // new connection, after a pause.
            return Some(End::DiskFailed);
        }
        end
    }

    /// A fast-mode hello claiming spool identity `id`: fast mode follows
    /// unless the identity is bound to another certificate or in use by
    /// another live connection. A refusal ends the connection before
    /// anything after the hello is read, so nothing of it is stored or
    /// acknowledged.
    fn hello(&mut self, store: &Store, id: [u8; 16]) -> Result<(), End> {
        let hex = crate::journal::JournalId(id);
        let cert = self.io.certificate();
        let known = store.knows(&SenderKey::Fast(id));
        let idx = match store.fast_sender(id, cert.as_deref()) {
            Ok(FastClaim::Granted(idx)) => idx,
            Ok(FastClaim::Foreign { idx, bound }) => {
                let cert = cert.unwrap_or_default();
                return Err(End::Refused(format!(
                    "refused fast-mode sender {hex}: that spool identity belongs to the \
                     client certificate {bound}, this client presents {cert}; nothing from \
                     it is stored or acknowledged. A cloned host (copied spool) needs its own \
                     spool; if the sender's certificate was replaced, stop audisp-receive and \
                     append the line \"{idx} bind {cert}\" to {} (audisp-receive(8), \
                     SENDER IDENTITY)",
                    store.table_path().display()
                )));
            }
            Err(e) => {
                tracing::error!("{}: cannot register sender: {e}", self.who);
                return Err(End::DiskFailed);
            }
        };
        // Two connections under one identity would interleave two streams
        // of sequence numbers, and one's records would be taken for the
        // other's resends. The connection already there wins: the one
        // place where the newer one might deserve to is a sender
        // reconnecting before its old connection was seen to end, and
        // nothing here can prove the old one gone (a peer that vanished
        // without FIN or RST looks exactly like a live, quiet one until
        // keepalive or --idle-timeout ends it). Taking over could let a
        // clone push the real sender out; refusing costs the real sender
        // only its retry back-off, and it retries until the old
        // connection is gone.
        if let Some(other) = self.shared.claim(idx, &self.who) {
            return Err(End::Refused(format!(
                "refused fast-mode sender {hex}: that spool identity is in use by the live \
                 connection {other}; nothing from this one is stored or acknowledged. A \
                 sender reconnecting before its old connection ended gets in on a retry; if \
                 this keeps happening, two hosts share one spool (a cloned host needs its \
                 own: audisp-receive(8), SENDER IDENTITY)"
            )));
        }
        self.claimed = Some(idx);
        self.proven(Sender::Fast { known })?;
        self.mode = Mode::FastPending(idx);
        Ok(())
    }

    fn count(&self, new: usize, dup: usize) {
        let c = &self.shared.counters;
        c.stored.fetch_add(new as u64, Ordering::Relaxed);
        if dup > 0 {
            c.duplicates.fetch_add(dup as u64, Ordering::Relaxed);
            tracing::info!(
                "{}: {dup} resent record(s) already stored, acknowledged again",
                self.who
            );
        }
    }
}

fn is_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == io::ErrorKind::StorageFull
}

/// A stock record's text as auditd's listener unwraps it: cut at the first
/// NUL, one trailing `\n` removed ([`wire::record_text`] then judges it).
fn stock_payload(p: &[u8]) -> &[u8] {
    let p = &p[..memchr::memchr(0, p).unwrap_or(p.len())];
    p.strip_suffix(b"\n").unwrap_or(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Limits, ReadOutcome, Step};

    /// A client that sends `input` in one piece, then closes.
    struct Client {
        input: io::Cursor<Vec<u8>>,
        out: Arc<Mutex<Vec<u8>>>,
        cert: Option<String>,
    }

    impl Read for Client {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Client {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.out.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Transport for Client {
        fn certificate(&self) -> Option<String> {
            self.cert.clone()
        }
    }

    fn shared(dir: &std::path::Path) -> Shared {
        let limits = Limits {
            segment_size: 1 << 20,
            max_size: 1 << 30,
            memory: 1 << 20,
        };
        let store = Arc::new(Store::open(dir, limits).unwrap());
        Shared::new(
            store,
            ServerConfig {
                max_per_addr: 1,
                max_connections: 1,
                handshake_timeout: Some(Duration::from_secs(10)),
                idle_timeout: None,
                space_left: 0,
                dir: dir.to_path_buf(),
            },
        )
    }

    /// Serves one connection that sends `input` (with client certificate
    /// `cert`) on `shared`; returns the replies.
    fn connect(shared: &Shared, cert: Option<&str>, input: Vec<u8>) -> Vec<u8> {
        let out = Arc::new(Mutex::new(Vec::new()));
        let client = Client {
            input: io::Cursor::new(input),
            out: out.clone(),
            cert: cert.map(str::to_string),
        };
        serve_connection(Box::new(client), "192.0.2.1:1".parse().unwrap(), shared);
        let replies = out.lock().unwrap().clone();
        replies
    }

    /// Every record the store holds.
    fn held(store: &Store) -> Vec<Vec<u8>> {
        let mut held = Vec::new();
        let mut reader = store.journal().reader(1);
        while let ReadOutcome::Entries(_) = reader
            .read(1 << 20, &mut |e| {
                held.push(e.text.to_vec());
                Step::Next
            })
            .unwrap()
        {}
        held
    }

    /// Serves one connection that sends `input` to a new store; returns the
    /// replies and the records the store holds.
    fn session(input: Vec<u8>) -> (Vec<u8>, Vec<Vec<u8>>) {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let replies = connect(&shared, None, input);
        (replies, held(&shared.store))
    }

    fn fast_batch(first: u64, recs: &[&[u8]]) -> Vec<u8> {
        fast_batch_from([9; 16], first, recs)
    }

    fn fast_batch_from(id: [u8; 16], first: u64, recs: &[&[u8]]) -> Vec<u8> {
        let mut b = wire::BatchBuilder::default();
        b.start(first);
        for r in recs {
            assert!(b.push(r, None));
        }
        let mut m = wire::hello_line(id);
        wire::encode(&mut m, types::HEARTBEAT, 1, b"").unwrap();
        wire::encode(&mut m, types::FAST_BATCH, 0, b.payload()).unwrap();
        m
    }

    /// Found by the fuzz target `remote_session`: a fast-mode record with a
    /// newline inside was stored as it came, and so written to the log as
    /// two lines, the second one forged by the client.
    #[test]
    fn fast_records_with_newlines_are_stored_as_one_line() {
        let input = fast_batch(
            1,
            &[
                b"type=USER msg=audit(1.000:1): a\ntype=DAEMON_END msg=audit(1.000:2): forged",
                b"type=USER msg=audit(1.000:3): b",
            ],
        );
        let (replies, held) = session(input);
        assert_eq!(
            held,
            vec![
                b"type=USER msg=audit(1.000:1): a type=DAEMON_END msg=audit(1.000:2): forged"
                    .to_vec(),
                b"type=USER msg=audit(1.000:3): b".to_vec(),
            ]
        );
        assert_eq!(replies, fast_replies(0, 2));
    }

    /// `FAST_OK` (with `FAST_ORIGINS`, 40 bytes) and a `FAST_ACK`.
    fn fast_replies(last_ok: u64, acked: u64) -> Vec<u8> {
        let mut want = Vec::new();
        wire::encode(&mut want, types::FAST_OK, 1, &last_ok.to_le_bytes()).unwrap();
        wire::encode(&mut want, types::FAST_ORIGINS, 0, b"").unwrap();
        wire::encode(&mut want, types::FAST_ACK, 0, &acked.to_le_bytes()).unwrap();
        want
    }

    /// Found by review: any client could claim another sender's spool
    /// identity, raise its "highest held" number and so have the real
    /// sender's later records acknowledged and dropped.
    #[test]
    fn a_spool_identity_bound_to_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Some("sha256:aa"), Some("sha256:bb"));
        {
            let shared = shared(dir.path());
            let r = connect(&shared, a, fast_batch_from([1; 16], 1, &[b"type=A 1"]));
            assert_eq!(r, fast_replies(0, 1));
            // B claims A's identity, far ahead: no reply, nothing stored.
            let r = connect(&shared, b, fast_batch_from([1; 16], 1000, &[b"type=B x"]));
            assert_eq!(r, b"");
            assert_eq!(shared.counters.refused.load(Ordering::Relaxed), 1);
            // B under its own identity is served.
            let r = connect(&shared, b, fast_batch_from([2; 16], 1, &[b"type=B 1"]));
            assert_eq!(r, fast_replies(0, 1));
        }
        // The binding survives a restart; A resumes where it was.
        let shared = shared(dir.path());
        let r = connect(&shared, b, fast_batch_from([1; 16], 1000, &[b"type=B x"]));
        assert_eq!(r, b"");
        let r = connect(&shared, a, fast_batch_from([1; 16], 2, &[b"type=A 2"]));
        assert_eq!(r, fast_replies(1, 2));
        assert_eq!(
            held(&shared.store),
            vec![
                b"type=A 1".to_vec(),
                b"type=B 1".to_vec(),
                b"type=A 2".to_vec()
            ]
        );
    }

    #[test]
    fn a_spool_identity_in_use_by_a_live_connection_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let r = connect(&shared, None, fast_batch_from([1; 16], 1, &[b"type=A 1"]));
        assert_eq!(r, fast_replies(0, 1));
        // Another connection is live under that identity (index 1).
        assert_eq!(shared.claim(1, "192.0.2.9:9"), None);
        let r = connect(&shared, None, fast_batch_from([1; 16], 2, &[b"type=A 2"]));
        assert_eq!(r, b"");
        assert_eq!(held(&shared.store), vec![b"type=A 1".to_vec()]);
        // Once it ended, the identity is free again, and a connection that
        // ended gave it back.
        shared.release(1);
        let r = connect(&shared, None, fast_batch_from([1; 16], 2, &[b"type=A 2"]));
        assert_eq!(r, fast_replies(1, 2));
        let r = connect(&shared, None, fast_batch_from([1; 16], 3, &[b"type=A 3"]));
        assert_eq!(r, fast_replies(2, 3));
        assert_eq!(held(&shared.store).len(), 3);
    }

    /// Found by attack (issue 10): fast mode acknowledged and stored
    /// non-records, which went on to the log; the stock path now follows
    /// the same rule (`wire::record_text`) in its managed form too. A batch
    /// holding one is refused whole: nothing of it is stored or
    /// acknowledged, and the connection is closed.
    #[test]
    fn non_records_are_refused_on_every_path() {
        let good = b"type=USER msg=audit(1.000:1): ok";
        for bad in [&b"\x00\x00binary"[..], b"\x1b[2J\x1b[Hgotcha"] {
            let (replies, held) = session(fast_batch(1, &[good, bad]));
            assert_eq!(replies, fast_replies(0, 0)[..40], "only FAST_OK");
            assert!(held.is_empty(), "{held:?}");

            let mut input = Vec::new();
            wire::encode(&mut input, types::MESSAGE, 2, good).unwrap();
            wire::encode(&mut input, types::MESSAGE, 3, bad).unwrap();
            let (replies, held) = session(input);
            let mut want = Vec::new();
            wire::encode(&mut want, types::ACK, 2, b"").unwrap();
            assert_eq!(replies, want, "only the record is acknowledged");
            assert_eq!(held, vec![good.to_vec()]);

            let input = [&good[..], b"\n", bad, b"\n"].concat();
            let (replies, held) = session(input);
            assert!(replies.is_empty());
            assert_eq!(held, vec![good.to_vec()]);
        }
        // Inside a record, control bytes become spaces on every path.
        let (_, held) = session(fast_batch(1, &[b"type=USER msg=audit(1.000:1): \x1b[2J"]));
        assert_eq!(held, vec![b"type=USER msg=audit(1.000:1):  [2J".to_vec()]);
        let mut input = Vec::new();
        wire::encode(&mut input, types::MESSAGE, 2, b"type=USER \x1b[2J\n").unwrap();
        assert_eq!(session(input).1, vec![b"type=USER  [2J".to_vec()]);
    }

    #[test]
    fn stock_records_are_cut_at_nul_and_made_one_line() {
        let mut input = Vec::new();
        wire::encode(&mut input, types::MESSAGE, 5, b"type=USER a\nb\n\0junk").unwrap();
        input.extend_from_slice(b"type=USER c\n");
        let (replies, held) = session(input);
        assert_eq!(
            held,
            vec![b"type=USER a b".to_vec(), b"type=USER c".to_vec()]
        );
        let mut want = Vec::new();
        wire::encode(&mut want, types::ACK, 5, b"").unwrap();
        assert_eq!(replies, want);
    }
}
