//! Output plugins: connection, handshake, batches, acknowledgements,
//! exactly-once delivery to the plugin's code.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket;
use signal_hook::consts::{SIGINT, SIGTERM};

use super::batch::{Batch, Meta, Store, Upto};
use super::Error;
use crate::journal_id::JournalId;
use crate::protocol::{self, record_flags, CommandStatus, FromDispatcher, Hello, Mode};
use crate::record_types;
use crate::uds;

/// An output plugin, configured builder-style and then [`Plugin::run`].
#[derive(Debug, Clone)]
pub struct Plugin {
    name: String,
    mode: Mode,
    include: Vec<String>,
    exclude: Vec<String>,
    resume: Option<([u8; 16], u64)>,
    /// Of an ack id past `resume`, the records held up to this seq.
    resume_partial: Option<(u64, u64)>,
    checkpoint: Option<PathBuf>,
    listen: Option<PathBuf>,
    commands: Option<CommandQueue>,
    tick: Option<Duration>,
    local_only: bool,
    origin: bool,
}

/// A command for the dispatcher from a thread of the plugin other than the
/// handler's — a sender thread that lost its network, say — so that the
/// admin's action runs when the condition arises, not with the next batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The action's name, as configured under `[actions.NAME]` in the
    /// plugin's plugins.d file.
    pub name: String,
    /// Arguments passed along to the action.
    pub args: Vec<String>,
}

/// The receiving end of [`Plugin::commands`], shared by clones of the
/// plugin.
#[derive(Clone)]
struct CommandQueue(Arc<Mutex<mpsc::Receiver<Command>>>);

impl std::fmt::Debug for CommandQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommandQueue")
    }
}

impl CommandQueue {
    /// The commands waiting now.
    fn waiting(&self) -> Vec<Command> {
        match self.0.lock() {
            Ok(rx) => rx.try_iter().collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// The answer to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandReply {
    /// Done, refused (not configured) or failed.
    pub status: CommandStatus,
    /// The dispatcher's explanation.
    pub message: String,
}

/// What the handler can do besides handling records.
pub struct Context<'c> {
    conn: &'c OwnedFd,
    stash: &'c mut VecDeque<Vec<u8>>,
    next_id: &'c mut u32,
    journal: [u8; 16],
    plugin: &'c Plugin,
}

impl Context<'_> {
    /// The journal the sequence numbers belong to (store it with them).
    pub fn journal_id(&self) -> [u8; 16] {
        self.journal
    }

    /// Asks the dispatcher for the action the admin configured under `name`
    /// for this plugin, with `args`. Waits up to 30 seconds for the answer.
    pub fn command(&mut self, name: &str, args: &[&str]) -> Result<CommandReply, Error> {
        *self.next_id = self.next_id.wrapping_add(1);
        let id = *self.next_id;
        let msg =
            protocol::encode_command(id, name, args).map_err(|e| Error::Setup(e.to_string()))?;
        send_blocking(self.conn, &msg)?;
        let reply = self.await_reply(|m| match m {
            FromDispatcher::CommandResult {
                id: got,
                status,
                message,
            } if got == id => Some(CommandReply { status, message }),
            _ => None,
        })?;
        Ok(reply)
    }

    /// Tells the dispatcher that an event matched one of this plugin's
    /// rules (`NOTIFY`; audispd announces it as the D-Bus `Match` signal).
    /// No answer comes; the dispatcher limits how many it announces per
    /// second. A summary longer than the protocol allows is cut at a
    /// character boundary.
    pub fn notify(&mut self, notice: &protocol::Notice) -> Result<(), Error> {
        let mut n = notice.clone();
        n.fit();
        let msg = protocol::encode_notify(&n).map_err(|e| Error::Setup(e.to_string()))?;
        send_blocking(self.conn, &msg)
    }

    /// For a handler that waits on purpose — for room in its own storage,
    /// say — instead of returning: sleeps for `d` while the watchdog keeps
    /// being fed and [`Plugin::commands`] keep going out, so neither
    /// systemd nor the admin's actions wait for the handler.
    pub fn idle(&mut self, d: Duration) -> Result<(), Error> {
        let end = Instant::now() + d;
        loop {
            super::supervise::alive();
            self.send_queued()?;
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() || TERMINATE.load(Ordering::SeqCst) {
                return Ok(());
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }

    /// Whether the plugin was told to stop (SIGTERM, SIGINT): a handler
    /// that retries on purpose gives up its batch (unacknowledged, so the
    /// dispatcher keeps it) instead of retrying on.
    pub fn terminating(&self) -> bool {
        TERMINATE.load(Ordering::SeqCst)
    }

    /// Sends the commands other threads queued ([`Plugin::commands`]).
    fn send_queued(&mut self) -> Result<(), Error> {
        let Some(q) = &self.plugin.commands else {
            return Ok(());
        };
        for c in q.waiting() {
            let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
            match self.command(&c.name, &args) {
                Ok(r) => eprintln!(
                    "{}: action {:?}: {:?}: {}",
                    self.plugin.name, c.name, r.status, r.message
                ),
                Err(e) => {
                    eprintln!(
                        "{}: action {:?} not delivered: {e}",
                        self.plugin.name, c.name
                    );
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Asks the dispatcher for its counters (a JSON object).
    pub fn stats(&mut self) -> Result<serde_json::Value, Error> {
        *self.next_id = self.next_id.wrapping_add(1);
        let id = *self.next_id;
        send_blocking(self.conn, &protocol::encode_stats_request(id))?;
        self.await_reply(|m| match m {
            FromDispatcher::Stats { id: got, json } if got == id => {
                Some(serde_json::from_slice(json).unwrap_or(serde_json::Value::Null))
            }
            _ => None,
        })
    }

    fn await_reply<T>(
        &mut self,
        mut want: impl FnMut(FromDispatcher<'_>) -> Option<T>,
    ) -> Result<T, Error> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = vec![0u8; protocol::MAX_MESSAGE];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Connection(
                    "no answer from the dispatcher within 30s".into(),
                ));
            }
            let n = match recv_wait(self.conn, &mut buf, left)? {
                None => continue,
                Some(0) => {
                    return Err(Error::Connection(
                        "the dispatcher closed the connection".into(),
                    ))
                }
                Some(n) => n,
            };
            let msg = &buf[..n];
            match protocol::decode_from_dispatcher(msg) {
                Ok(m) => {
                    if let FromDispatcher::Records(_) = m {
                        // Handled after the current batch.
                        self.stash.push_back(msg.to_vec());
                        continue;
                    }
                    if let Some(t) = want(m) {
                        return Ok(t);
                    }
                }
                Err(e) => return Err(Error::Connection(format!("protocol error: {e}"))),
            }
        }
    }
}

/// Set by SIGTERM or SIGINT once [`Plugin::run`] registered for them.
static TERMINATE: AtomicBool = AtomicBool::new(false);

/// Adds, once per process, an action to SIGTERM and SIGINT that sets
/// [`TERMINATE`]. signal-hook chains: a handler the program installed
/// before runs too, and neither signal kills the process any more (the
/// plugin stops instead).
fn register_terminate() -> Result<(), Error> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            for sig in [SIGTERM, SIGINT] {
                signal_hook::flag::register(sig, &TERMINATE)
                    .map_err(|e| format!("cannot handle signal {sig}: {e}"))?;
            }
            Ok(())
        })
        .clone()
        .map_err(Error::Setup)
}

/// The socket that leads to the dispatcher: one connection already made,
/// or a listener the dispatcher connects to.
enum DispatcherSocket {
    /// A connected socket (started by audispd).
    Connected(OwnedFd),
    /// A listening socket (systemd socket activation, or `listen`).
    Listening(OwnedFd),
}

/// Progress that outlives one connection.
struct Progress {
    journal: Option<[u8; 16]>,
    /// Records mode: `partial` is an event of a filtered plugin split over
    /// messages (`ACK_FOLLOWS`), sent again whole after a reconnect.
    upto: Upto,
    checkpoint: Option<std::fs::File>,
    /// One process per checkpoint file.
    _lock: Option<crate::statelock::StateLock>,
}

impl Progress {
    /// Whether a record with `ack` and `seq` was handled already.
    fn seen(&self, ack: u64, seq: u64) -> bool {
        self.upto.covers(ack, seq)
    }

    /// After the handler took `metas`: the highest ack id all of whose
    /// records it has, and where a partly handled one stands.
    fn advance(&mut self, metas: &[Meta]) {
        for m in metas {
            self.upto = self
                .upto
                .handled(m.ack, m.seq, m.flags & record_flags::ACK_FOLLOWS != 0);
        }
    }

    /// Writes the checkpoint: `JOURNAL LAST`, and `ACK SEQ` of a partly
    /// handled ack id, so that a restart does not hand over again the
    /// records of it already handled (the dispatcher sends it again whole).
    fn store(&mut self) -> Result<(), Error> {
        if let (Some(f), Some(j)) = (&self.checkpoint, self.journal) {
            let mut line = format!("{} {}", JournalId(j), self.upto.done);
            if let Some((ack, seq)) = self.upto.partial {
                line += &format!(" {ack} {seq}");
            }
            line.push('\n');
            let mut line = line.into_bytes();
            line.resize(CHECKPOINT_LINE, b' ');
            f.write_all_at(&line, 0)
                .map_err(|e| Error::Setup(format!("cannot write the checkpoint file: {e}")))?;
        }
        Ok(())
    }
}

/// Length a checkpoint line is padded to, so a shorter one overwrites a
/// longer one whole (the longest, four numbers at their largest, is 96
/// bytes; an earlier version, without a partly handled ack id, padded to
/// 64).
const CHECKPOINT_LINE: usize = 128;

/// Most messages joined into one records-mode batch: half the dispatcher's
/// window of messages in flight, so the other half keeps arriving meanwhile.
const COALESCE: usize = 16;

/// What a served connection ended with.
enum Ended {
    Closed,
    Terminated,
}

impl Plugin {
    /// A plugin named `name` (letters, digits, `_.-`), in records mode,
    /// receiving every record type.
    pub fn new(name: &str) -> Plugin {
        Plugin {
            name: name.to_string(),
            mode: Mode::Records,
            include: Vec::new(),
            exclude: Vec::new(),
            resume: None,
            resume_partial: None,
            checkpoint: None,
            listen: None,
            commands: None,
            tick: None,
            local_only: false,
            origin: false,
        }
    }

    /// Be told each record's origin: the input it arrived on
    /// ([`super::Record::origin`]) and, for a record forwarded from another
    /// dispatcher, where it was first journaled
    /// ([`super::Record::first_origin`]). A dispatcher too old to tell
    /// leaves both `None`.
    pub fn origin(mut self) -> Plugin {
        self.origin = true;
        self
    }

    /// Unless the admin names the inputs this plugin gets (plugins.d
    /// `inputs`, `exclude_inputs`), receive only records that originated on
    /// this host, none that an input relayed from other hosts: what a
    /// plugin that forwards records elsewhere asks for, so that forwarding
    /// cannot loop.
    pub fn local_only(mut self) -> Plugin {
        self.local_only = true;
        self
    }

    /// Receive whole events instead of single records.
    pub fn events(mut self) -> Plugin {
        self.mode = Mode::Events;
        self
    }

    /// Receive only these record types (names like `AVC`, or numbers); in
    /// events mode, only events containing one of them.
    pub fn include(mut self, types: &[&str]) -> Plugin {
        self.include.extend(types.iter().map(|s| s.to_string()));
        self
    }

    /// Never receive these record types.
    pub fn exclude(mut self, types: &[&str]) -> Plugin {
        self.exclude.extend(types.iter().map(|s| s.to_string()));
        self
    }

    /// The plugin already has everything up to `seq` of journal `journal`
    /// (from its own storage): nothing up to there is delivered again.
    /// `seq` is an ack id ([`crate::sdk::Record::ack`], or
    /// [`crate::sdk::Event::id`]), which for a filtered records-mode plugin
    /// is not its last record's `seq`: stored after a record that
    /// [completes it](crate::sdk::Record::completes_ack).
    pub fn resume_after(mut self, journal: [u8; 16], seq: u64) -> Plugin {
        self.resume = Some((journal, seq));
        self
    }

    /// With [`Plugin::resume_after`]: of ack id `ack`, past that point, the
    /// plugin already has the records up to `seq` — it stopped within an
    /// event that went on in the next message (its last record did not
    /// [complete its ack id](crate::sdk::Record::completes_ack)). The event
    /// comes again whole; the records it has are not handed over again.
    pub fn resume_within(mut self, ack: u64, seq: u64) -> Plugin {
        self.resume_partial = Some((ack, seq));
        self
    }

    /// Let the SDK remember in `path` how far the plugin got, so a restarted
    /// plugin does not see records again. The file is updated after each
    /// handled batch, before it is acknowledged, with the records handled of
    /// an event that goes on in the next message (which comes again whole
    /// after a restart); a crash between the handler returning and that
    /// update can still repeat one batch. It is locked
    /// (`PATH.lock`, [`crate::statelock`]) while the plugin runs: a second
    /// process given the same file stops with [`Error::Setup`] naming the
    /// first one's pid.
    /// Plugins that need strictly exactly-once store the position with their
    /// own output and use [`Plugin::resume_after`].
    pub fn checkpoint_file(mut self, path: impl Into<PathBuf>) -> Plugin {
        self.checkpoint = Some(path.into());
        self
    }

    /// When neither started by audispd nor socket-activated, listen on this
    /// socket path for the dispatcher (default: `$AUDISP_PLUGIN_SOCKET`).
    pub fn listen(mut self, path: impl Into<PathBuf>) -> Plugin {
        self.listen = Some(path.into());
        self
    }

    /// Sends every [`Command`] arriving on `rx` to the dispatcher while
    /// connected: between batches, and within half a second when idle.
    /// Commands queued while no dispatcher is connected go out once one
    /// is. Each outcome is written to standard error (the journal under
    /// systemd), since the thread that queued it has moved on.
    pub fn commands(mut self, rx: mpsc::Receiver<Command>) -> Plugin {
        self.commands = Some(CommandQueue(Arc::new(Mutex::new(rx))));
        self
    }

    /// Also call the handler with an empty batch whenever `every` has
    /// passed since it was last called, so that a plugin that reports at
    /// intervals (counters it sends on, asking [`Context::stats`]) does so
    /// while no records arrive. Without it the handler only ever sees
    /// batches with records.
    pub fn tick(mut self, every: Duration) -> Plugin {
        self.tick = Some(every);
        self
    }

    fn types(names: &[String]) -> Result<Vec<u32>, Error> {
        names
            .iter()
            .map(|n| {
                record_types::parse_admin(n)
                    .ok_or_else(|| Error::Setup(format!("unknown record type {n:?}")))
            })
            .collect()
    }

    fn dispatcher_socket(&self) -> Result<DispatcherSocket, Error> {
        // Started by audispd: a connected SEQPACKET socket on stdin.
        if is_seqpacket(0) && !is_listening(0) {
            let fd = nix::fcntl::fcntl(std::io::stdin(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
                .map_err(io::Error::from)?;
            // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor we own.
            return Ok(DispatcherSocket::Connected(unsafe {
                OwnedFd::from_raw_fd(fd)
            }));
        }
        // Socket activation.
        if let Some(fd) = listen_fd() {
            return Ok(DispatcherSocket::Listening(fd));
        }
        let path = self
            .listen
            .clone()
            .or_else(|| std::env::var_os("AUDISP_PLUGIN_SOCKET").map(PathBuf::from))
            .ok_or_else(|| {
                Error::Setup(
                    "no connection to a dispatcher: start this plugin from audispd (exec = [...] in plugins.d), \
                     from a systemd socket unit (ListenSequentialPacket=), or give it a socket path \
                     (Plugin::listen or AUDISP_PLUGIN_SOCKET)"
                        .into(),
                )
            })?;
        Ok(DispatcherSocket::Listening(bind_listener(&path)?))
    }

    /// Serves one connection the caller already holds — the socket an
    /// in-process consumer's connector is handed by
    /// `Engine::attach_internal` — until the dispatcher closes it. Installs
    /// no signal handler: the embedding process owns its signals.
    pub fn run_on<F>(self, conn: OwnedFd, mut handler: F) -> Result<(), Error>
    where
        F: FnMut(
            &Batch<'_>,
            &mut Context<'_>,
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>,
    {
        let include = Plugin::types(&self.include)?;
        let exclude = Plugin::types(&self.exclude)?;
        let mut progress = self.load_progress()?;
        self.serve(&conn, &include, &exclude, &mut progress, &mut handler)?;
        Ok(())
    }

    /// Connects and hands every batch to `handler` until the dispatcher
    /// closes the connection (started by audispd) or the plugin is told to
    /// terminate (SIGTERM, SIGINT). A handler error stops the plugin
    /// without acknowledging the failed batch.
    ///
    /// Signals: from the first `run` on, for the rest of the process,
    /// SIGTERM and SIGINT ask the plugin to stop: `run` returns `Ok` after
    /// the batch in hand (acknowledged if the handler finished it) instead
    /// of the process being killed. The SDK adds its action with
    /// signal-hook, which keeps a handler the program installed before
    /// (it still runs); a handler installed after `run` started replaces
    /// the SDK's. [`Plugin::run_on`] touches no signal. SIGHUP, SIGUSR1 and
    /// SIGUSR2 are the program's own: they keep their default action
    /// (terminate) unless it handles them, and a program that does should
    /// block them first thing in `main` with [`crate::signals::hold`], so
    /// one sent while it starts waits for its handler instead of killing it.
    pub fn run<F>(self, mut handler: F) -> Result<(), Error>
    where
        F: FnMut(
            &Batch<'_>,
            &mut Context<'_>,
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>,
    {
        let include = Plugin::types(&self.include)?;
        let exclude = Plugin::types(&self.exclude)?;
        let mut progress = self.load_progress()?;
        register_terminate()?;
        let socket = self.dispatcher_socket()?;
        super::supervise::ready(&self.name);
        match socket {
            DispatcherSocket::Connected(conn) => {
                self.serve(&conn, &include, &exclude, &mut progress, &mut handler)?;
                Ok(())
            }
            DispatcherSocket::Listening(listener) => {
                loop {
                    super::supervise::alive();
                    if TERMINATE.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
                    match nix::poll::poll(&mut fds, PollTimeout::from(500u16)) {
                        Ok(0) | Err(Errno::EINTR) => continue,
                        Ok(_) => {}
                        Err(e) => return Err(Error::Connection(format!("poll: {e}"))),
                    }
                    let conn = match uds::accept(&listener) {
                        Ok(Some(c)) => c,
                        Ok(None) => continue,
                        Err(e) => return Err(Error::Connection(format!("accept: {e}"))),
                    };
                    match self.serve(&conn, &include, &exclude, &mut progress, &mut handler) {
                        Ok(Ended::Terminated) => return Ok(()),
                        Ok(Ended::Closed) => {}
                        Err(Error::Connection(e)) => {
                            eprintln!("{}: connection lost ({e}); waiting for the dispatcher to reconnect", self.name)
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    fn load_progress(&self) -> Result<Progress, Error> {
        let mut p = Progress {
            journal: None,
            upto: Upto::default(),
            checkpoint: None,
            _lock: None,
        };
        if let Some((j, s)) = self.resume {
            p.journal = Some(j);
            p.upto = Upto {
                done: s,
                partial: self.resume_partial.filter(|&(ack, _)| ack > s),
            };
        }
        if let Some(path) = &self.checkpoint {
            p._lock = Some(crate::statelock::StateLock::file(path).map_err(Error::Setup)?);
            let f = crate::statefile::open(
                crate::statefile::options()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false),
                path,
            )
            .map_err(|e| Error::Setup(format!("checkpoint file: {e}")))?;
            let mut buf = [0u8; CHECKPOINT_LINE];
            let n = f.read_at(&mut buf, 0).unwrap_or(0);
            let text = String::from_utf8_lossy(&buf[..n]);
            let mut it = text.split_whitespace();
            let journal = it.next().and_then(|s| s.parse::<JournalId>().ok());
            let mut num = || it.next().and_then(|s| s.parse::<u64>().ok());
            if let (Some(JournalId(j)), Some(s)) = (journal, num()) {
                if p.journal.is_none_or(|pj| pj == j) {
                    p.journal = Some(j);
                    let done = p.upto.done.max(s);
                    let mut partial = p.upto.partial;
                    if let (Some(ack), Some(seq)) = (num(), num()) {
                        partial = partial.max(Some((ack, seq)));
                    }
                    p.upto = Upto {
                        done,
                        partial: partial.filter(|&(ack, _)| ack > done),
                    };
                }
            }
            p.checkpoint = Some(f);
        }
        Ok(p)
    }

    fn serve<F>(
        &self,
        conn: &OwnedFd,
        include: &[u32],
        exclude: &[u32],
        progress: &mut Progress,
        handler: &mut F,
    ) -> Result<Ended, Error>
    where
        F: FnMut(
            &Batch<'_>,
            &mut Context<'_>,
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut hello = Hello::output(&self.name);
        hello.mode = Some(self.mode);
        hello.include = include.to_vec();
        hello.exclude = exclude.to_vec();
        hello.local_only = self.local_only;
        hello.origin = self.origin;
        hello.resume = progress.journal.map(|j| (j, progress.upto.done));
        let mut buf = vec![0u8; protocol::MAX_MESSAGE];
        let Some(welcome) = handshake(conn, &hello, &mut buf)? else {
            return Ok(Ended::Closed);
        };
        let journal = welcome.journal_id.unwrap_or([0; 16]);
        if progress.journal != Some(journal) {
            progress.journal = Some(journal);
            progress.upto = Upto {
                done: welcome.start_after,
                partial: None,
            };
        } else {
            progress.upto = progress.upto.handled(welcome.start_after, 0, false);
        }
        let events = welcome.mode == Some(Mode::Events);
        // Records mode: where the batch's records are in `arena`.
        let mut lent: Vec<Meta> = Vec::new();
        // Events mode: whole events, and the one still arriving.
        let mut ready = Store::default();
        let mut partial = Store::default();
        let mut stash: VecDeque<Vec<u8>> = VecDeque::new();
        let mut next_id = 0u32;
        // The batch's messages, received one after the other into this one
        // buffer (room for the first and COALESCE more), so that a records
        // mode batch of several messages is lent from where they arrived,
        // not copied.
        let mut arena = vec![0u8; (COALESCE + 1) * protocol::MAX_MESSAGE];
        let mut last_call = Instant::now();
        loop {
            super::supervise::alive();
            if TERMINATE.load(Ordering::SeqCst) {
                return Ok(Ended::Terminated);
            }
            let mut ctx = Context {
                conn,
                stash: &mut stash,
                next_id: &mut next_id,
                journal,
                plugin: self,
            };
            ctx.send_queued()?;
            let mut wait = Duration::from_millis(500);
            if let Some(every) = self.tick {
                let due = every.saturating_sub(last_call.elapsed());
                if due.is_zero() {
                    let nothing = Batch {
                        metas: &[],
                        data: &[],
                    };
                    handler(&nothing, &mut ctx).map_err(Error::Handler)?;
                    last_call = Instant::now();
                    continue;
                }
                wait = wait.min(due);
            }
            let first = match stash.pop_front() {
                Some(m) => {
                    arena[..m.len()].copy_from_slice(&m);
                    m.len()
                }
                None => match recv_wait(conn, &mut arena[..protocol::MAX_MESSAGE], wait)? {
                    None => continue,
                    Some(0) => return Ok(Ended::Closed),
                    Some(n) => n,
                },
            };
            let records = match protocol::decode_from_dispatcher(&arena[..first]) {
                Ok(FromDispatcher::Records(rs)) => rs,
                Ok(_) => continue,
                Err(e) => return Err(Error::Connection(format!("protocol error: {e}"))),
            };
            lent.clear();
            ready.clear();
            let mut newest = None;
            for r in records.iter() {
                newest = Some(r.ack_id);
                if progress.seen(r.ack_id, r.seq) {
                    continue;
                }
                if !events {
                    lent.push(meta_at(&r, &arena));
                    continue;
                }
                partial.push(&r);
                if r.flags & record_flags::EVENT_COMPLETE != 0 {
                    ready.append(&mut partial);
                }
            }
            // Records mode: messages already waiting join this batch (the
            // dispatcher keeps several in flight), so that one handler call
            // — one fsync in a durable plugin — covers them all. Each is
            // received right after the last one in `arena`.
            let mut closed = false;
            let mut end = first;
            if !events && !lent.is_empty() {
                for _ in 0..COALESCE {
                    let room = &mut arena[end..end + protocol::MAX_MESSAGE];
                    // Messages set aside while waiting for a command's
                    // answer came first: take them before the socket's.
                    let waiting = match stash.pop_front() {
                        Some(m) => {
                            room[..m.len()].copy_from_slice(&m);
                            Some(m.len())
                        }
                        None => recv_wait(conn, room, Duration::ZERO)?,
                    };
                    let n = match waiting {
                        None => break,
                        Some(0) => {
                            closed = true;
                            break;
                        }
                        Some(n) => n,
                    };
                    let extra = match protocol::decode_from_dispatcher(&arena[end..end + n]) {
                        Ok(FromDispatcher::Records(rs)) => rs,
                        Ok(_) => {
                            stash.push_front(arena[end..end + n].to_vec());
                            break;
                        }
                        Err(e) => return Err(Error::Connection(format!("protocol error: {e}"))),
                    };
                    for r in extra.iter() {
                        if !progress.seen(r.ack_id, r.seq) {
                            lent.push(meta_at(&r, &arena));
                        }
                    }
                    end += n;
                }
            }
            let batch = if events {
                Batch {
                    metas: &ready.metas,
                    data: &ready.arena,
                }
            } else {
                Batch {
                    metas: &lent,
                    data: &arena[..end],
                }
            };
            if !batch.is_empty() {
                let mut ctx = Context {
                    conn,
                    stash: &mut stash,
                    next_id: &mut next_id,
                    journal,
                    plugin: self,
                };
                handler(&batch, &mut ctx).map_err(Error::Handler)?;
                last_call = Instant::now();
                progress.advance(batch.metas);
                progress.store()?;
                send_blocking(conn, &protocol::encode_ack(progress.upto.done))?;
                if closed {
                    return Ok(Ended::Closed);
                }
            } else if partial.metas.is_empty() {
                // Only records already handled (a resend): acknowledge them
                // so the dispatcher moves on.
                if newest.is_some() {
                    send_blocking(conn, &protocol::encode_ack(progress.upto.done))?;
                }
            }
        }
    }
}

fn is_seqpacket(fd: RawFd) -> bool {
    // SAFETY: fd 0 may or may not be open; getsockopt only reads it.
    let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    matches!(
        socket::getsockopt(&b, socket::sockopt::SockType),
        Ok(socket::SockType::SeqPacket)
    )
}

fn is_listening(fd: RawFd) -> bool {
    // SAFETY: as above.
    let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    socket::getsockopt(&b, socket::sockopt::AcceptConn).unwrap_or(false)
}

/// The listening socket systemd passed, if it passed one to us.
fn listen_fd() -> Option<OwnedFd> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    if pid != std::process::id() {
        return None;
    }
    let n: i32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if n < 1 {
        return None;
    }
    // The first descriptor that is a listening seqpacket socket.
    (3..3 + n)
        .find(|&fd| is_seqpacket(fd) && is_listening(fd))
        // SAFETY: systemd handed this descriptor to this process.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind_listener(path: &Path) -> Result<OwnedFd, Error> {
    uds::listen(path, socket::SockType::SeqPacket, 0o600, 4)
        .map_err(|e| Error::Setup(e.to_string()))
}

/// Sends `hello` and waits for the dispatcher's answer: its WELCOME, or
/// `None` when it closed the connection instead. A REJECT, anything else or
/// silence for 30 s is an error.
pub(super) fn handshake(
    conn: &OwnedFd,
    hello: &Hello,
    buf: &mut [u8],
) -> Result<Option<protocol::Welcome>, Error> {
    if let Err(e) = send_blocking(conn, &protocol::encode_hello(hello)) {
        return Err(left_reject(conn, buf).unwrap_or(e));
    }
    let n = match recv_wait(conn, buf, Duration::from_secs(30))? {
        None => return Err(Error::Connection("no WELCOME within 30s".into())),
        Some(0) => return left_reject(conn, buf).map_or(Ok(None), Err),
        Some(n) => n,
    };
    match protocol::decode_from_dispatcher(&buf[..n]) {
        Ok(FromDispatcher::Welcome(w)) => Ok(Some(w)),
        Ok(FromDispatcher::Reject(why)) => Err(Error::Rejected(why)),
        Ok(other) => Err(Error::Connection(format!(
            "expected WELCOME, got {other:?}"
        ))),
        Err(e) => Err(Error::Connection(format!("protocol error: {e}"))),
    }
}

/// The REJECT a dispatcher that turned this connection away at once left
/// behind before closing it (the connection may already be reset or shut
/// when it is read).
fn left_reject(conn: &OwnedFd, buf: &mut [u8]) -> Option<Error> {
    for _ in 0..2 {
        match uds::recv_message(conn, buf) {
            Ok(Some(0)) => continue,
            Ok(Some(n)) => {
                return match protocol::decode_from_dispatcher(&buf[..n]) {
                    Ok(FromDispatcher::Reject(why)) => Some(Error::Rejected(why)),
                    _ => None,
                }
            }
            _ => return None,
        }
    }
    None
}

pub(super) fn send_blocking(fd: &OwnedFd, msg: &[u8]) -> Result<(), Error> {
    loop {
        match uds::send_nowait(fd, msg) {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {
                uds::wait(fd, PollFlags::POLLOUT, Duration::from_secs(1))
                    .map_err(|e| Error::Connection(format!("poll: {e}")))?;
            }
            Err(e) => return Err(Error::Connection(format!("send: {e}"))),
        }
    }
}

/// Waits up to `limit` for a message; None if none came. A message already
/// waiting is taken without a `poll` first (one system call, not two, per
/// message while the dispatcher keeps several in flight).
pub(super) fn recv_wait(
    fd: &OwnedFd,
    buf: &mut [u8],
    limit: Duration,
) -> Result<Option<usize>, Error> {
    let receive = |buf: &mut [u8]| {
        uds::recv_message(fd, buf).map_err(|e| Error::Connection(format!("receive: {e}")))
    };
    if let Some(n) = receive(buf)? {
        return Ok(Some(n));
    }
    if limit.is_zero() {
        return Ok(None);
    }
    let ready = uds::wait(fd, PollFlags::POLLIN, limit)
        .map_err(|e| Error::Connection(format!("poll: {e}")))?;
    if ready.is_empty() {
        return Ok(None);
    }
    receive(buf)
}

/// Where record `r`, decoded from a message received into `arena`, is in
/// it: the record lent to the handler from there.
fn meta_at(r: &protocol::Record<'_>, arena: &[u8]) -> Meta {
    let at = |b: &[u8]| b.as_ptr() as usize - arena.as_ptr() as usize;
    Meta {
        seq: r.seq,
        ack: r.ack_id,
        rtype: r.rtype,
        flags: r.flags,
        start: at(r.text),
        len: r.text.len(),
        origin: r.origin.map(|o| (at(o.name.as_bytes()), o.name.len())),
        first: r.origin.and_then(|o| o.first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FromPlugin;

    /// A `RECORDS` message of `(seq, text)` records, each its own ack id.
    fn records(recs: &[(u64, &str)]) -> Vec<u8> {
        let mut b = protocol::RecordsBuilder::output(protocol::MAX_MESSAGE);
        for &(seq, text) in recs {
            assert!(b.push(&protocol::Record {
                seq,
                ack_id: seq,
                rtype: 1300,
                flags: 0,
                text: text.as_bytes(),
                origin: None,
            }));
        }
        b.message().to_vec()
    }

    /// Messages already waiting when a batch starts are joined into it,
    /// lent from where they were received: every record once, in order,
    /// with its own text (records the plugin already has left out), up to
    /// a message that is not records, which the next batch follows.
    #[test]
    fn waiting_messages_join_one_batch_with_every_record_intact() {
        let (plugin, dispatcher) = socket::socketpair(
            socket::AddressFamily::Unix,
            socket::SockType::SeqPacket,
            None,
            socket::SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let welcome = protocol::Welcome {
            version: protocol::VERSION,
            journal_id: Some([7; 16]),
            start_after: 1,
            mode: Some(Mode::Records),
            max_message: protocol::MAX_MESSAGE as u32,
            server: "test".into(),
            origin: false,
            stream: false,
        };
        let long = "x".repeat(9000);
        // All queued before the plugin reads anything.
        for msg in [
            protocol::encode_welcome(&welcome),
            records(&[(1, "one"), (2, "two")]),
            records(&[(3, &long), (4, "four")]),
            records(&[(5, "five")]),
            protocol::encode_stats(1, b"{}"),
            records(&[(6, "six")]),
        ] {
            uds::send_nowait(&dispatcher, &msg).unwrap().unwrap();
        }
        // The dispatcher's side: takes the HELLO and the acks, and closes
        // the connection once everything is acknowledged.
        let acks = std::thread::spawn(move || {
            let mut buf = vec![0u8; protocol::MAX_MESSAGE];
            let mut acks = Vec::new();
            while acks.last() != Some(&6) {
                let n = recv_wait(&dispatcher, &mut buf, Duration::from_secs(10))
                    .unwrap()
                    .expect("the plugin's next message");
                if let Ok(FromPlugin::Ack(id)) = protocol::decode_from_plugin(&buf[..n]) {
                    acks.push(id);
                }
            }
            acks
        });
        let mut batches: Vec<Vec<(u64, String)>> = Vec::new();
        Plugin::new("t")
            .run_on(plugin, |batch, _| {
                batches.push(
                    batch
                        .records()
                        .map(|r| (r.seq, r.text_lossy().into_owned()))
                        .collect(),
                );
                Ok(())
            })
            .unwrap();
        let want = |recs: &[(u64, &str)]| -> Vec<(u64, String)> {
            recs.iter().map(|&(s, t)| (s, t.to_string())).collect()
        };
        assert_eq!(
            batches,
            [
                want(&[(2, "two"), (3, &long), (4, "four"), (5, "five")]),
                want(&[(6, "six")]),
            ]
        );
        assert_eq!(acks.join().unwrap(), [5, 6]);
    }

    fn meta(ack: u64, seq: u64, flags: u16) -> Meta {
        Meta {
            seq,
            ack,
            rtype: 1302,
            flags,
            start: 0,
            len: 0,
            origin: None,
            first: None,
        }
    }

    /// A restart from the checkpoint within an event split over messages
    /// (`ACK_FOLLOWS`) skips the records of it already handled, not only
    /// the ack ids completed; a checkpoint without them (an earlier
    /// version's) resumes after its ack id.
    #[test]
    fn the_checkpoint_keeps_a_partly_handled_ack_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        let plugin = Plugin::new("t").checkpoint_file(&path);
        let mut p = plugin.load_progress().unwrap();
        p.journal = Some([3; 16]);
        let follows = record_flags::ACK_FOLLOWS;
        p.advance(&[meta(5, 5, 0), meta(9, 6, follows), meta(9, 7, follows)]);
        p.store().unwrap();
        drop(p);
        let p = plugin.load_progress().unwrap();
        assert_eq!(
            (p.journal, p.upto.done, p.upto.partial),
            (Some([3; 16]), 5, Some((9, 7)))
        );
        assert!(p.seen(9, 7) && !p.seen(9, 8) && !p.seen(10, 10));
        drop(p);
        std::fs::write(&path, format!("{} 5\n", JournalId([3; 16]))).unwrap();
        let p = plugin.load_progress().unwrap();
        assert_eq!((p.upto.done, p.upto.partial), (5, None));
        assert!(!p.seen(9, 6));
    }
}
