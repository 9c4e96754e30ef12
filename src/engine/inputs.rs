//! The inputs: auditd's stream on standard input, and input plugins on the
//! input socket.
//!
//! Standard input is read continuously, whatever the plugins do, so auditd
//! never blocks on the dispatcher. Input plugins (the auditd bridge, the
//! remote receiver…) connect to a `SOCK_SEQPACKET` socket, say hello with
//! their name and epoch, and send numbered records; each batch is
//! acknowledged once it is in the journal (and on stable storage, with the
//! default `sync = "batch"`), and a resent batch is recognised and stored
//! once. Peers are checked with `SO_PEERCRED` the moment they are accepted:
//! root and the configured users and groups only, each user with its own
//! budget of [`CONNECTIONS_PER_USER`] connections, and [`HELLO_TIMEOUT`] to
//! say HELLO; anyone else is refused at once and holds nothing.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket;

use super::ingest::{Incoming, Ingest, SourceId, Submitted, STDIN};
use super::liveness::Liveness;
use super::stats;
use crate::framing::{coalesce, Coalescer, Decoder, InputFormat, Item, MalformedKind};
use crate::journal::Wakeup;
use crate::protocol::{self, FromPlugin, Role, Welcome};
use crate::uds;

/// When a batch counts as acknowledged-safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckSync {
    /// Sync the journal before acknowledging (group-committed).
    Sync,
    /// Acknowledge once written to the journal file.
    Written,
}

/// What the input threads share.
#[derive(Clone)]
pub struct InputContext {
    /// The ingest stage.
    pub ingest: Arc<Ingest>,
    /// Heartbeats.
    pub liveness: Arc<Liveness>,
    /// Set and woken when inputs must stop.
    pub stopping: Arc<AtomicBool>,
    /// Woken with `stopping`, polled by every input thread.
    pub stop_wake: Arc<Wakeup>,
    /// Durability before an input acknowledgement.
    pub ack_sync: AckSync,
    /// Name and version for `WELCOME`.
    pub server: String,
}

/// Limits log lines about bad input to a few per minute per input.
struct Complaints {
    window_start: Instant,
    in_window: u32,
    suppressed: u64,
}

impl Complaints {
    fn new() -> Complaints {
        Complaints {
            window_start: Instant::now(),
            in_window: 0,
            suppressed: 0,
        }
    }

    fn allow(&mut self) -> bool {
        if self.window_start.elapsed() > Duration::from_secs(60) {
            if self.suppressed > 0 {
                tracing::warn!(
                    message_id = crate::log_ids::INPUT_MALFORMED,
                    suppressed = self.suppressed,
                    "{} more malformed-input reports were suppressed in the last minute",
                    self.suppressed
                );
            }
            self.window_start = Instant::now();
            self.in_window = 0;
            self.suppressed = 0;
        }
        self.in_window += 1;
        if self.in_window > 10 {
            self.suppressed += 1;
            false
        } else {
            true
        }
    }
}

/// Reads auditd's stream from `fd` until end of input or a stop request,
/// in batches while records come quickly ([`crate::framing::coalesce`]).
/// Calls `on_eof` when the stream ends (auditd closed it).
pub fn read_stdin(
    ctx: InputContext,
    fd: OwnedFd,
    format: InputFormat,
    on_eof: impl FnOnce(),
) -> io::Result<()> {
    let hb = ctx.liveness.register("input stdin");
    let (id, _) = ctx.ingest.connect(STDIN, [0; 16], false)?;
    let counters = ctx.ingest.counters(id);
    let mut decoder = Decoder::new(format);
    coalesce::grow_pipe(&fd);
    let mut coalescer = Coalescer::new();
    // Reads land one after another in `buf`; what they bring is held back
    // (`held` bytes) while the coalescer says so, and handed on in one
    // submission: one journal write and one sender wake for several reads.
    let mut buf = vec![0u8; coalesce::HOLD_BYTES + READ_CHUNK];
    let mut held = 0usize;
    // Records that lie wholly in the bytes held are submitted from `buf`
    // directly; only records the decoder had to rebuild or carry over from
    // an earlier read are copied (into `texts`).
    let mut texts: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut spans: Vec<Span> = Vec::new();
    let mut complaints = Complaints::new();
    let mut framing_logged = false;
    let submit = |chunk: &[u8], texts: &mut Vec<u8>, spans: &mut Vec<Span>| {
        if spans.is_empty() {
            return;
        }
        let incoming: Vec<Incoming<'_>> = spans
            .iter()
            .map(|sp| Incoming {
                source_seq: 0,
                origin: None,
                type_hint: sp.type_hint,
                text: if sp.in_chunk {
                    &chunk[sp.start..sp.start + sp.len]
                } else {
                    &texts[sp.start..sp.start + sp.len]
                },
            })
            .collect();
        ctx.ingest.submit(id, &incoming, true);
        texts.clear();
        spans.clear();
    };
    let mut on_item = |item: Item<'_>, chunk: &[u8], texts: &mut Vec<u8>, spans: &mut Vec<Span>| {
        match item {
            Item::Record { text, type_hint } => {
                let base = chunk.as_ptr() as usize;
                let at = text.as_ptr() as usize;
                if at >= base && at + text.len() <= base + chunk.len() {
                    spans.push(Span {
                        in_chunk: true,
                        start: at - base,
                        len: text.len(),
                        type_hint,
                    });
                } else {
                    spans.push(Span {
                        in_chunk: false,
                        start: texts.len(),
                        len: text.len(),
                        type_hint,
                    });
                    texts.extend_from_slice(text);
                }
            }
            Item::Malformed(m) if m.kind == MalformedKind::AmbiguousFraming => {
                // Nothing was skipped: the binary framing had to be guessed.
                tracing::warn!(
                        message_id = crate::log_ids::INPUT_MALFORMED,
                        input = STDIN,
                        "input stdin: {m}; set [input.stdin] binary_framing to \"padded\" (auditd <= 4.1.0) or \"exact\" (>= 4.1.1) to be sure"
                    );
            }
            Item::Malformed(m) => {
                stats::add(&counters.malformed, 1);
                if complaints.allow() {
                    tracing::warn!(
                        message_id = crate::log_ids::INPUT_MALFORMED,
                        input = STDIN,
                        offset = m.offset,
                        skipped = m.skipped,
                        "input stdin: {m}; skipped, later records are unaffected"
                    );
                }
            }
        }
    };
    // When asked to stop, keep reading what auditd already wrote: auditd
    // signals its plugins just before it closes their input, and records
    // still in the socket would otherwise be lost. Stop at end of input, once
    // the input has been quiet for a moment, or at the latest after
    // DRAIN_LIMIT.
    let mut drain_until: Option<Instant> = None;
    // auditd's end is a socket: after a nap (or while holding) records are
    // nearly always waiting, and one recv(MSG_DONTWAIT) replaces poll + read.
    let mut is_socket = true;
    let mut expect_data = false;
    loop {
        hb.beat();
        if drain_until.is_none() && ctx.stopping.load(Ordering::Relaxed) {
            drain_until = Some(Instant::now() + DRAIN_LIMIT);
        }
        if drain_until.is_some_and(|t| Instant::now() >= t) {
            tracing::warn!(
                input = STDIN,
                "input stdin: stopping with standard input still open and busy; unread records stay with auditd"
            );
            break;
        }
        let space = &mut buf[held..held + READ_CHUNK];
        let mut got = None;
        if std::mem::take(&mut expect_data) && is_socket {
            match uds::recv_nowait(&fd, space, 0) {
                Ok(n) => got = n,
                // A pipe (or something else that is not a socket): poll
                // and read from now on.
                Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => is_socket = false,
                // Reported by the read below.
                Err(_) => {}
            }
        }
        let n = match got {
            Some(n) => n,
            None => {
                let draining = drain_until.is_some();
                let mut fds = [
                    PollFd::new(fd.as_fd(), PollFlags::POLLIN),
                    PollFd::new(ctx.stop_wake.fd(), PollFlags::POLLIN),
                ];
                let wait = if held > 0 {
                    // Nothing more came: hand on what is held rather than wait.
                    PollTimeout::ZERO
                } else if draining {
                    PollTimeout::from(DRAIN_QUIET_MS)
                } else {
                    PollTimeout::from(1000u16)
                };
                // While draining, only the input itself matters.
                let nfds = if draining { 1 } else { 2 };
                match nix::poll::poll(&mut fds[..nfds], wait) {
                    Ok(0) if held > 0 => {
                        submit(&buf[..held], &mut texts, &mut spans);
                        held = 0;
                        coalescer.handed_on();
                        continue;
                    }
                    Ok(0) if draining => break,
                    Ok(0) => {
                        // A quiet second: a binary stream still working out its
                        // framing may now decide (see `framing`).
                        decoder.input_idle(&mut |item| on_item(item, &[], &mut texts, &mut spans));
                        submit(&[], &mut texts, &mut spans);
                        continue;
                    }
                    Err(Errno::EINTR) => continue,
                    Ok(_) => {}
                    Err(e) => return Err(e.into()),
                }
                if fds[0].revents().is_none_or(|r| r.is_empty()) {
                    continue;
                }
                match nix::unistd::read(&fd, &mut buf[held..held + READ_CHUNK]) {
                    Ok(n) => n,
                    Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
                    Err(e) => {
                        tracing::error!(
                            input = STDIN,
                            "input stdin: reading standard input: {e}; treating it as closed"
                        );
                        0
                    }
                }
            }
        };
        if n == 0 {
            decoder.finish(&mut |item| on_item(item, &[], &mut texts, &mut spans));
            submit(&buf[..held], &mut texts, &mut spans);
            ctx.ingest.disconnect(id);
            tracing::info!(input = STDIN, "input stdin: standard input closed");
            on_eof();
            return Ok(());
        }
        let end = held + n;
        let all = &buf[..end];
        let before = spans.len();
        decoder.feed(&all[held..], &mut |item| {
            on_item(item, all, &mut texts, &mut spans)
        });
        held = end;
        if !framing_logged {
            if let Some(f) = decoder.detected_framing() {
                tracing::info!(
                    input = STDIN,
                    "input stdin: binary input, detected {f:?} framing"
                );
                framing_logged = true;
            }
        }
        let writes = spans.len() - before;
        let step = coalescer.step(n, writes, READ_CHUNK, held, Instant::now());
        if step.hand_on {
            submit(&buf[..held], &mut texts, &mut spans);
            held = 0;
        }
        if let Some(d) = step.nap {
            coalesce::nap_for(d);
        }
        expect_data = step.nap.is_some() || held > 0;
    }
    decoder.input_idle(&mut |item| on_item(item, &[], &mut texts, &mut spans));
    submit(&buf[..held], &mut texts, &mut spans);
    ctx.ingest.disconnect(id);
    Ok(())
}

/// Bytes read from standard input at a time (at most; reads held back
/// follow one another in a buffer of [`coalesce::HOLD_BYTES`] more): large
/// enough for few system calls, small enough to stay in the CPU cache while
/// its records are parsed and journaled.
const READ_CHUNK: usize = 256 << 10;

/// Where a decoded record's text is: in the bytes read and held, or copied.
struct Span {
    in_chunk: bool,
    start: usize,
    len: usize,
    type_hint: Option<u32>,
}

/// Longest time the stdin reader keeps reading after a stop request.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// Input quiet this long (milliseconds) after a stop request counts as done.
const DRAIN_QUIET_MS: u16 = 100;

/// Creates the input socket at `path` (replacing a stale one) with `mode`.
pub fn bind_input_socket(path: &Path, mode: u32) -> io::Result<OwnedFd> {
    uds::listen(path, socket::SockType::SeqPacket, mode, 64)
}

/// Who may connect to the input socket besides root.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    /// Allowed user ids.
    pub uids: Vec<u32>,
    /// Allowed group ids (primary or supplementary).
    pub gids: Vec<u32>,
}

/// A connected peer, from `SO_PEERCRED`.
struct Peer {
    uid: u32,
    /// `pid 123 uid 0 gid 0`, for the log.
    who: String,
}

impl PeerPolicy {
    /// Who the peer is, or why that cannot be told; and whether it may
    /// connect.
    fn check(&self, fd: &OwnedFd) -> Result<Peer, (Option<u32>, String)> {
        let cred = socket::getsockopt(fd, socket::sockopt::PeerCredentials)
            .map_err(|e| (None, format!("cannot read peer credentials: {e}")))?;
        let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid());
        let who = format!("pid {pid} uid {uid} gid {gid}");
        let allowed = uid == 0
            || self.uids.contains(&uid)
            || self.gids.contains(&gid)
            || peer_groups(fd).iter().any(|g| self.gids.contains(g));
        if !allowed {
            return Err((
                Some(uid),
                format!(
                    "{who} is not allowed (root, allow_users and allow_groups of [input.socket] are)"
                ),
            ));
        }
        Ok(Peer { uid, who })
    }
}

fn peer_groups(fd: &OwnedFd) -> Vec<u32> {
    let mut groups = vec![0 as libc::gid_t; 256];
    let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `groups`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERGROUPS,
            groups.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Vec::new();
    }
    groups.truncate(len as usize / std::mem::size_of::<libc::gid_t>());
    groups
}

/// Most connections one user may hold on the input socket at once. An
/// input program holds one; the rest is room for restarts. Users have
/// separate budgets, so no user can take another's (root's included).
pub const CONNECTIONS_PER_USER: usize = 16;

/// A connection that has not said HELLO within this long is closed. After
/// HELLO a connection may stay quiet as long as it likes (an input on a
/// quiet host has nothing to send); it only ever holds a slot of its own
/// user's budget.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Logs refused connections: the first of each user every minute, then how
/// many more there were, so a flood cannot fill the log.
#[derive(Default)]
struct RefusalLog {
    /// Per uid (None: unknown): when its last line was logged, and the
    /// refusals since then not logged.
    by_uid: std::collections::HashMap<Option<u32>, (Instant, u64)>,
}

impl RefusalLog {
    fn note(&mut self, uid: Option<u32>, why: &str) {
        let now = Instant::now();
        let minute = Duration::from_secs(60);
        self.by_uid
            .retain(|_, (at, n)| *n > 0 || now.duration_since(*at) < minute);
        match self.by_uid.get_mut(&uid) {
            Some((at, n)) if now.duration_since(*at) < minute => *n += 1,
            Some((at, n)) => {
                tracing::warn!(
                    "input socket: refused {why} ({} more refused from this user in the last minute)",
                    *n
                );
                *at = now;
                *n = 0;
            }
            None => {
                tracing::warn!("input socket: refused {why}");
                self.by_uid.insert(uid, (now, 0));
            }
        }
    }
}

/// Turns a peer away at once: reads what it may already have sent (closing
/// a socket with unread data would reset the connection before the peer
/// could read the answer), answers REJECT and closes.
fn refuse(conn: OwnedFd, why: &str) {
    let mut scrap = [0u8; 512];
    for _ in 0..4 {
        match uds::recv_message(&conn, &mut scrap) {
            Ok(Some(n)) if n > 0 => {}
            // Nothing (more) waiting, the peer gone, or a message larger
            // than `scrap` (discarded all the same).
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {}
            _ => break,
        }
    }
    let _ = uds::send_nowait(&conn, &protocol::encode_reject(why));
}

/// Accepts input plugins on `listener` until stopped; one thread per
/// connection. Peers are checked as soon as they are accepted: anyone not
/// allowed, or a user already holding [`CONNECTIONS_PER_USER`]
/// connections, is refused at once and holds nothing.
pub fn serve_inputs(ctx: InputContext, listener: OwnedFd, policy: PeerPolicy) {
    let hb = ctx.liveness.register("input socket");
    let mut threads: Vec<(u32, std::thread::JoinHandle<()>)> = Vec::new();
    let mut refusals = RefusalLog::default();
    loop {
        hb.beat();
        threads.retain(|(_, t)| !t.is_finished());
        if ctx.stopping.load(Ordering::Relaxed) {
            break;
        }
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(ctx.stop_wake.fd(), PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::error!("input socket: poll failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        if fds[0].revents().is_none_or(|r| r.is_empty()) {
            continue;
        }
        let conn = match uds::accept(&listener) {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!("input socket: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let peer = match policy.check(&conn) {
            Ok(p) => p,
            Err((uid, why)) => {
                refusals.note(uid, &why);
                refuse(conn, &why);
                continue;
            }
        };
        threads.retain(|(_, t)| !t.is_finished());
        let held = threads.iter().filter(|(uid, _)| *uid == peer.uid).count();
        if held >= CONNECTIONS_PER_USER {
            let why = format!(
                "{}: uid {} already holds {held} connections, the most one user may hold",
                peer.who, peer.uid
            );
            refusals.note(Some(peer.uid), &why);
            refuse(conn, &why);
            continue;
        }
        let c = ctx.clone();
        let uid = peer.uid;
        match std::thread::Builder::new()
            .name("input-conn".into())
            .spawn(move || input_connection(c, conn, peer))
        {
            Ok(t) => threads.push((uid, t)),
            Err(e) => tracing::error!("input socket: cannot start a connection thread: {e}"),
        }
    }
    for (_, t) in threads {
        let _ = t.join();
    }
}

fn send_msg(fd: &OwnedFd, msg: &[u8]) -> io::Result<()> {
    // Acks and answers are small; a peer that lets its receive queue fill up
    // with them is not reading and is dropped after a while.
    uds::send_within(fd, msg, Duration::from_secs(10))
}

fn input_connection(ctx: InputContext, conn: OwnedFd, peer: Peer) {
    let who = peer.who;
    let mut buf = vec![0u8; protocol::MAX_MESSAGE];
    let hello = {
        let deadline = Instant::now() + HELLO_TIMEOUT;
        loop {
            if Instant::now() >= deadline || ctx.stopping.load(Ordering::Relaxed) {
                tracing::warn!(
                    "input socket: {who} sent no HELLO within {HELLO_TIMEOUT:?}; closing"
                );
                return;
            }
            let mut fds = [PollFd::new(conn.as_fd(), PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, PollTimeout::from(500u16));
            match uds::recv_message(&conn, &mut buf) {
                Ok(Some(0)) => return,
                Err(e) => {
                    tracing::warn!("input socket: {who}: {e}");
                    let _ = send_msg(&conn, &protocol::encode_reject(&e.to_string()));
                    return;
                }
                Ok(Some(n)) => match protocol::decode_from_plugin(&buf[..n]) {
                    Ok(FromPlugin::Hello(h)) => break h,
                    Ok(_) => {
                        let _ = send_msg(
                            &conn,
                            &protocol::encode_reject("the first message must be HELLO"),
                        );
                        return;
                    }
                    Err(e) => {
                        tracing::warn!("input socket: {who}: bad HELLO: {e}");
                        let _ =
                            send_msg(&conn, &protocol::encode_reject(&format!("bad HELLO: {e}")));
                        return;
                    }
                },
                Ok(None) => continue,
            }
        }
    };
    let reject = |why: String| {
        tracing::warn!("input socket: {who}: {why}");
        let _ = send_msg(&conn, &protocol::encode_reject(&why));
    };
    if hello.role != Role::Input {
        return reject(
            "this is the input socket; output plugins are connected to by the dispatcher".into(),
        );
    }
    let Some(version) = protocol::negotiate(&hello) else {
        return reject(format!(
            "protocol versions {}..{} not supported",
            hello.min_version, hello.max_version
        ));
    };
    let Some(epoch) = hello.source_epoch else {
        return reject("no source epoch".into());
    };
    let (id, committed) = match ctx.ingest.connect(&hello.name, epoch, hello.relayed) {
        Ok(x) => x,
        Err(e) => return reject(e.to_string()),
    };
    let welcome = Welcome {
        version,
        journal_id: Some(ctx.ingest.journal().id().0),
        start_after: committed,
        mode: None,
        max_message: protocol::MAX_MESSAGE as u32,
        server: ctx.server.clone(),
        origin: hello.origin,
        stream: hello.stream,
    };
    if send_msg(&conn, &protocol::encode_welcome(&welcome)).is_err() {
        ctx.ingest.disconnect(id);
        return;
    }
    tracing::info!(input = %hello.name, "input {} connected ({who}); it resumes after its record {committed}", hello.name);
    let hb = ctx.liveness.register(&format!("input {}", hello.name));
    let end = serve_input(
        &ctx,
        &conn,
        (id, &hello.name, hello.stream),
        committed,
        &mut buf,
        &hb,
    );
    ctx.ingest.disconnect(id);
    match end {
        Ok(()) => tracing::info!(input = %hello.name, "input {} disconnected", hello.name),
        Err(why) => {
            tracing::warn!(input = %hello.name, "input {} connection closed: {why}", hello.name)
        }
    }
}

/// Most messages already queued on an input connection that are journaled
/// together and share one sync and one acknowledgement.
const MESSAGES_PER_ACK: usize = 64;

/// Serves one input after its handshake: `input` is its id, its name and
/// whether it offered its stream (`STREAM`).
fn serve_input(
    ctx: &InputContext,
    conn: &OwnedFd,
    input: (SourceId, &str, bool),
    mut acked: u64,
    buf: &mut [u8],
    hb: &super::liveness::Heartbeat,
) -> Result<(), String> {
    let (id, name, offered_stream) = input;
    let counters = ctx.ingest.counters(id);
    let mut coalescer = Coalescer::new();
    loop {
        hb.beat();
        if ctx.stopping.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut fds = [
            PollFd::new(conn.as_fd(), PollFlags::POLLIN),
            PollFd::new(ctx.stop_wake.fd(), PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        let ev = fds[0].revents().unwrap_or(PollFlags::empty());
        if ev.is_empty() {
            continue;
        }
        let n = match receive(conn, buf, &counters)? {
            Some((0, _)) => return Ok(()),
            Some((n, None)) => n,
            Some((n, Some(stream))) => {
                // Only a STREAM carries a descriptor.
                let Ok(FromPlugin::Stream { next_seq }) = protocol::decode_from_plugin(&buf[..n])
                else {
                    return Err(
                        "protocol error: a descriptor with a message other than STREAM".into(),
                    );
                };
                if !offered_stream {
                    return Err("protocol error: STREAM, but its HELLO did not offer one".into());
                }
                super::stream::serve_stream(ctx, conn, id, name, stream, next_seq, buf, hb)?;
                continue;
            }
            None => {
                if ev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                    return Ok(());
                }
                continue;
            }
        };
        let mut stored = handle_message(ctx, conn, id, name, &counters, &buf[..n])?;
        // Batches the input sends while we are busy, or (under load) within
        // a short nap, share one journal sync and one (cumulative)
        // acknowledgement.
        if stored.is_some() {
            // One message is one write of the input's.
            coalescer.after_read(n, 1);
        }
        let mut more = 0;
        while stored.is_some() && more < MESSAGES_PER_ACK {
            let n = match receive(conn, buf, &counters)? {
                Some((0, _)) | None => break,
                Some((n, None)) => n,
                Some((_, Some(_))) => {
                    return Err("protocol error: a descriptor with a batch of records".into())
                }
            };
            more += 1;
            if let Some(next) = handle_message(ctx, conn, id, name, &counters, &buf[..n])? {
                stored = stored.map(|(c, e)| (c.max(next.0), e.max(next.1)));
            }
        }
        let Some((committed, journal_end)) = stored else {
            continue;
        };
        if ctx.ack_sync == AckSync::Sync {
            if let Err(e) = ctx.ingest.journal().sync_upto(journal_end) {
                return Err(format!(
                    "cannot make the journal durable: {e}; not acknowledging"
                ));
            }
        }
        if committed > acked {
            send_msg(conn, &protocol::encode_input_ack(committed)).map_err(|e| e.to_string())?;
            acked = committed;
        }
    }
}

/// One message from an input connection without waiting, with the
/// descriptor it carried if any: length 0 when it closed, `None` when
/// nothing is there.
fn receive(
    conn: &OwnedFd,
    buf: &mut [u8],
    counters: &stats::InputCounters,
) -> Result<Option<(usize, Option<OwnedFd>)>, String> {
    match uds::recv_message_fd(conn, buf) {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            stats::add(&counters.malformed, 1);
            Err(format!("protocol error: {e}"))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Handles one message of an input. Records are journaled, not yet synced
/// or acknowledged: returns the highest source sequence number stored and
/// the journal position to sync up to before acknowledging it.
fn handle_message(
    ctx: &InputContext,
    conn: &OwnedFd,
    id: SourceId,
    name: &str,
    counters: &stats::InputCounters,
    msg: &[u8],
) -> Result<Option<(u64, u64)>, String> {
    match protocol::decode_from_plugin(msg) {
        Ok(FromPlugin::RecordsIn(rs)) => {
            let incoming: Vec<Incoming<'_>> = rs
                .iter()
                .map(|r| Incoming {
                    source_seq: r.source_seq,
                    type_hint: (r.rtype != 0).then_some(r.rtype),
                    text: r.text,
                    origin: r.origin,
                })
                .collect();
            if incoming.iter().any(|r| r.source_seq == 0) {
                stats::add(&counters.malformed, 1);
                return Err(
                    "a record without a sequence number (inputs number their records from 1)"
                        .into(),
                );
            }
            let Submitted {
                committed,
                journal_end,
                pending,
            } = ctx.ingest.submit(id, &incoming, false);
            if pending {
                // The journal cannot take records now; the input keeps
                // them and resends after reconnecting.
                return Err("the journal cannot be written; the input will resend".into());
            }
            Ok(Some((committed, journal_end)))
        }
        Ok(FromPlugin::StatsRequest(req)) => {
            let json = serde_json::to_vec(&ctx.ingest.snapshot()).unwrap_or_default();
            send_msg(conn, &protocol::encode_stats(req, &json)).map_err(|e| e.to_string())?;
            Ok(None)
        }
        Ok(FromPlugin::Command {
            id: req,
            name: action,
            ..
        }) => {
            tracing::warn!(
                input = name,
                action,
                "input {name} asked for action {action}; inputs have none configured"
            );
            send_msg(
                conn,
                &protocol::encode_command_result(
                    req,
                    protocol::CommandStatus::Refused,
                    "actions are configured for output plugins only",
                ),
            )
            .map_err(|e| e.to_string())?;
            Ok(None)
        }
        Ok(other) => Err(format!("protocol error: unexpected {other:?}")),
        Err(e) => {
            stats::add(&counters.malformed, 1);
            Err(format!("protocol error: {e}"))
        }
    }
}
