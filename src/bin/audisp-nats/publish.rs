//! `audisp-nats publish`: an audispd output plugin (built on the SDK) that
//! publishes records, or whole events, into a JetStream stream, many to a
//! message, each exactly once.
//!
//! * A message holds a run of up to `records_per_message` records (whole
//!   events in events mode), cut from the start of audispd's batch. Its
//!   `Nats-Msg-Id` is made of the host's identity, audispd's journal id
//!   ([`Origin`]) and the journal places of its first and last record:
//!   whatever is sent again cut the same way — after this plugin, audispd or
//!   a server crashed — is recognised by the stream within its duplicate
//!   window and not stored twice. A resend cut differently (audispd's batch
//!   after a restart ends elsewhere) is stored as another message; its
//!   `Audisp-Origin` and `Audisp-Seqs` headers name every record, so
//!   `audisp-nats consume` stores each record once all the same.
//! * A batch is acknowledged to audispd only when every one of its messages
//!   has its PubAck (stored, and replicated as the stream says). All of a
//!   batch's messages are in flight at once (up to `max_pending`), so a
//!   batch costs about one round trip.
//! * A message that gets no PubAck (a server gone, a leader being elected,
//!   the stream full or refusing) is sent again, with back-off, with the
//!   same id, until it is stored; the first failure of each kind in a row
//!   runs its failure action, as audisp-remote's do. Meanwhile audispd
//!   keeps the records in its journal.
//! * Messages carry `Nats-Expected-Stream`: a subject that some other
//!   stream captures is refused rather than stored in the wrong place.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use async_nats::jetstream::{self, Context as JetStream};
use audisp::remote::sender::Action;
use audisp::sdk::{Batch, Command, Context, Plugin, Record};
use bytes::Bytes;
use tokio::runtime::Runtime;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::connect::{self, Link};
use crate::message::{self, Origin, Payloads, Subjects};
use crate::pubacks::{self, Failed, Item};
use crate::settings::{Failure, Opts};

/// Why messages of a batch are not stored yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trouble {
    /// No PubAck in time, or no connection.
    Network,
    /// The stream is at a limit or out of space.
    Full,
    /// The servers refuse (no stream, no JetStream, not permitted).
    Refused,
}

/// The handler was told to stop while records of its batch were not yet
/// stored; audispd keeps and resends them.
#[derive(Debug)]
struct Stopping(usize);

impl std::fmt::Display for Stopping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stopping with {} messages of the batch not acknowledged by JetStream (audispd keeps them)",
            self.0
        )
    }
}

impl std::error::Error for Stopping {}

static RESUME: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr2(_: libc::c_int) {
    RESUME.store(true, Ordering::SeqCst);
}

/// Failure actions, each run once per spell of its kind of trouble.
struct Actions {
    failure: Failure,
    commands: mpsc::Sender<Command>,
    /// The trouble of the current spell, if any.
    spell: Option<Trouble>,
    suspended: Arc<AtomicBool>,
}

impl Actions {
    fn run(&mut self, action: &Action, what: &str) {
        match action {
            Action::Ignore => {}
            Action::Log | Action::Reconnect => tracing::warn!("{what}"),
            Action::Suspend => {
                tracing::warn!("{what}: suspending publishing until SIGUSR2");
                self.suspended.store(true, Ordering::Release);
            }
            Action::Dispatcher(name) => {
                tracing::warn!("{what}: asking audispd for action {name:?}");
                let _ = self.commands.send(Command {
                    name: name.clone(),
                    args: vec![what.to_string()],
                });
            }
        }
    }

    /// Trouble of `kind`: its action, unless this spell already ran it.
    fn trouble(&mut self, kind: Trouble, what: &str) {
        if self.spell == Some(kind) {
            tracing::debug!("{what}");
            return;
        }
        self.spell = Some(kind);
        let action = match kind {
            Trouble::Network => self.failure.network_failure.clone(),
            Trouble::Full => self.failure.stream_full.clone(),
            Trouble::Refused => self.failure.refused.clone(),
        };
        self.run(&action, what);
    }

    /// Everything stored again.
    fn recovered(&mut self) {
        if self.spell.take().is_some() {
            tracing::info!("JetStream stores records again");
        }
    }
}

/// Sorts a failed round into its kind of trouble.
fn classify(f: &Failed) -> Trouble {
    match f {
        Failed::NoAck(_) => Trouble::Network,
        Failed::NoResponders => Trouble::Refused,
        Failed::Stream(d) => {
            let d = d.to_lowercase();
            if d.contains("maximum") || d.contains("insufficient") || d.contains("storage") {
                Trouble::Full
            } else {
                Trouble::Refused
            }
        }
    }
}

/// The host's name (for `{host}`) and identity (for message ids).
fn host_names(o: &Opts) -> (String, String) {
    let host = o.publish.host.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into())
    });
    let id = o.publish.host_id.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/etc/machine-id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| host.clone())
    });
    (host, id)
}

/// Logs how the stream is set up, and what in it weakens exactly-once.
async fn check_stream(js: JetStream, name: String) {
    let mut stream = match js.get_stream(&name).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(
                "stream {name:?} not found ({e}): records wait in audispd until it exists (audisp-nats create-stream)"
            );
            return;
        }
    };
    match stream.info().await {
        Ok(info) => {
            let c = &info.config;
            tracing::info!(
                "stream {name:?}: subjects {:?}, {:?} storage, {} replicas, duplicate window {:?}",
                c.subjects,
                c.storage,
                c.num_replicas,
                c.duplicate_window
            );
            if c.duplicate_window < Duration::from_secs(60) {
                tracing::warn!(
                    "stream {name:?} has a duplicate window of {:?}: a record sent again after a longer outage is stored twice",
                    c.duplicate_window
                );
            }
        }
        Err(e) => tracing::warn!("stream {name:?}: {e}"),
    }
}

/// Turns connection events into failure actions (via `tx`) and log lines.
async fn watch_link(mut rx: UnboundedReceiver<Link>, tx: mpsc::Sender<(Trouble, String)>) {
    let mut down = false;
    while let Some(l) = rx.recv().await {
        match l {
            Link::Up => {
                if down {
                    tracing::info!("connected to NATS again");
                }
                down = false;
            }
            Link::Down(why) => {
                if !down {
                    let _ = tx.send((Trouble::Network, format!("network failure: {why}")));
                }
                down = true;
            }
        }
    }
}

/// The most payload bytes a message gets (unless one record or event is
/// larger): well below NATS's default limit of 1 MiB.
const MESSAGE_BYTES: usize = 256 * 1024;

/// Records gathered for the next message.
#[derive(Default)]
struct Chunk<'a> {
    records: Vec<Record<'a>>,
    /// Where each event (or record) starts in `records`.
    starts: Vec<usize>,
    bytes: usize,
}

/// The plugin's state between batches.
struct Publisher {
    rt: Runtime,
    out: pubacks::Publisher,
    max_pending: usize,
    stream: String,
    subjects: Subjects,
    payloads: Payloads,
    /// The payload being written (kept for its capacity).
    payload: Vec<u8>,
    records_per_message: usize,
    host_id: String,
    origin: Option<([u8; 16], Origin)>,
    retry_max: Duration,
    actions: Actions,
    link: mpsc::Receiver<(Trouble, String)>,
    stored: u64,
    duplicates: u64,
}

impl Publisher {
    /// The messages of a batch: runs of up to `records_per_message` records
    /// (whole events in events mode; an event larger than that is a message
    /// of its own) and [`MESSAGE_BYTES`], cut from the batch's start, so a
    /// batch sent again after a crash is cut the same way as far as it is
    /// the same.
    fn items(&mut self, batch: &Batch<'_>, events: bool, journal: [u8; 16]) -> Vec<Item> {
        let origin = match &self.origin {
            Some((j, o)) if *j == journal => o.clone(),
            _ => {
                let o = Origin::new(&self.host_id, journal);
                self.origin = Some((journal, o.clone()));
                o
            }
        };
        let mut out = Vec::new();
        let mut chunk = Chunk::default();
        if events {
            let mut group: Vec<Record<'_>> = Vec::new();
            for e in batch.events() {
                group.clear();
                group.extend(e.records());
                self.add(&origin, &mut chunk, &group, &mut out);
            }
        } else {
            for r in batch.records() {
                self.add(&origin, &mut chunk, std::slice::from_ref(&r), &mut out);
            }
        }
        if !chunk.records.is_empty() {
            out.push(self.message(&origin, &mut chunk));
        }
        out
    }

    /// Adds `group` (an event, or a record) to `chunk`, first making the
    /// chunk a message of `out` if the group would not fit in it.
    fn add<'a>(
        &mut self,
        origin: &Origin,
        chunk: &mut Chunk<'a>,
        group: &[Record<'a>],
        out: &mut Vec<Item>,
    ) {
        if group.is_empty() {
            return;
        }
        let bytes: usize = group.iter().map(|r| r.text.len() + 1).sum();
        if !chunk.records.is_empty()
            && (chunk.records.len() + group.len() > self.records_per_message
                || chunk.bytes + bytes > MESSAGE_BYTES)
        {
            out.push(self.message(origin, chunk));
        }
        chunk.starts.push(chunk.records.len());
        chunk.records.extend_from_slice(group);
        chunk.bytes += bytes;
    }

    /// The message holding `chunk`, which is emptied.
    fn message(&mut self, origin: &Origin, chunk: &mut Chunk<'_>) -> Item {
        let mut subject = String::new();
        let first = chunk.records[0];
        self.subjects.of(first.text, first.rtype, &mut subject);
        let seqs: Vec<u64> = chunk.records.iter().map(|r| r.seq).collect();
        let texts: Vec<&[u8]> = chunk.records.iter().map(|r| r.text).collect();
        self.payloads
            .write(&texts, &chunk.starts, &mut self.payload);
        let last = chunk.records[chunk.records.len() - 1].seq;
        let item = Item {
            subject,
            id: origin.msg_id(first.seq, last),
            origin: origin.key().to_string(),
            seqs: message::write_seqs(&seqs),
            payload: Bytes::copy_from_slice(&self.payload),
        };
        chunk.records.clear();
        chunk.starts.clear();
        chunk.bytes = 0;
        item
    }

    /// Publishes a batch until every message is stored.
    fn handle(
        &mut self,
        batch: &Batch<'_>,
        events: bool,
        ctx: &mut Context<'_>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let items = self.items(batch, events, ctx.journal_id());
        let mut todo: Vec<usize> = (0..items.len()).collect();
        let mut attempt = 0usize;
        loop {
            while let Ok((kind, what)) = self.link.try_recv() {
                self.actions.trouble(kind, &what);
            }
            while self.actions.suspended.load(Ordering::Acquire) {
                if RESUME.swap(false, Ordering::SeqCst) {
                    self.actions.suspended.store(false, Ordering::Release);
                    tracing::info!("SIGUSR2: publishing again");
                    break;
                }
                if ctx.terminating() {
                    return Err(Box::new(Stopping(todo.len())));
                }
                ctx.idle(Duration::from_millis(100))?;
            }
            let (dups, left, err) = self.rt.block_on(async {
                let mut dups = 0;
                let mut left = Vec::new();
                let mut err = None;
                for window in todo.chunks(self.max_pending) {
                    let r = self.out.round(&items, window).await;
                    dups += r.duplicates;
                    left.extend(r.left);
                    err = err.or(r.failure);
                }
                (dups, left, err)
            });
            self.stored += (todo.len() - left.len()) as u64;
            self.duplicates += dups as u64;
            if dups > 0 {
                tracing::info!(
                    "{dups} messages were already in the stream (sent again after a restart or an unanswered publish): not stored twice"
                );
            }
            let Some(err) = err else {
                self.actions.recovered();
                return Ok(());
            };
            let kind = classify(&err);
            self.actions.trouble(
                kind,
                &format!(
                    "{} of {} messages not stored in stream {:?}: {err}",
                    left.len(),
                    items.len(),
                    self.stream
                ),
            );
            todo = left;
            attempt += 1;
            if ctx.terminating() {
                return Err(Box::new(Stopping(todo.len())));
            }
            ctx.idle(connect::backoff(attempt, self.retry_max))?;
        }
    }
}

/// Runs the plugin until audispd closes the connection it was started on or
/// SIGTERM. `usr2_held`: SIGUSR2, blocked since `main` began, released once
/// its handler is in place.
pub fn run(o: Opts, usr2_held: audisp::signals::Held) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the NATS client's runtime: {e}"))?;
    let (host, host_id) = host_names(&o);
    let (link_tx, link_rx) = tokio::sync::mpsc::unbounded_channel();
    let options = connect::options(
        &o.connection,
        &format!("audisp-nats publish {host}"),
        true,
        link_tx,
    )?;
    let client = rt.block_on(connect::connect(&o.connection, options))?;
    // The context spawns its acknowledgement task on the runtime.
    let guard = rt.enter();
    let js = jetstream::new(client.clone());
    drop(guard);
    rt.spawn(check_stream(js, o.connection.stream.clone()));
    let out = rt.block_on(pubacks::Publisher::new(
        client,
        &o.connection.stream,
        o.publish.ack_timeout,
    ))?;
    let (trouble_tx, trouble_rx) = mpsc::channel();
    rt.spawn(watch_link(link_rx, trouble_tx));
    {
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
        let act = SigAction::new(
            SigHandler::Handler(on_usr2),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(Signal::SIGUSR2, &act) }.map_err(|e| format!("sigaction: {e}"))?;
        usr2_held.release()?;
    }
    let (cmd_tx, cmd_rx) = mpsc::channel();
    let p = &o.publish;
    let mut plugin = Plugin::new(&p.name).commands(cmd_rx).local_only();
    if p.events {
        plugin = plugin.events();
    }
    if let Some(l) = &p.listen {
        plugin = plugin.listen(l);
    }
    let mut publisher = Publisher {
        rt,
        out,
        max_pending: o.publish.max_pending,
        stream: o.connection.stream.clone(),
        subjects: Subjects::new(&p.subject, &host),
        payloads: Payloads::new(p.format),
        payload: Vec::new(),
        records_per_message: p.records_per_message,
        host_id,
        origin: None,
        retry_max: o.connection.retry_max,
        actions: Actions {
            failure: p.failure.clone(),
            commands: cmd_tx,
            spell: None,
            suspended: Arc::new(AtomicBool::new(false)),
        },
        link: trouble_rx,
        stored: 0,
        duplicates: 0,
    };
    tracing::info!(
        "publishing to stream {:?} on {} as {:?}",
        o.connection.stream,
        o.connection.servers.join(", "),
        p.subject
    );
    let events = p.events;
    let result = plugin.run(|batch, ctx| publisher.handle(batch, events, ctx));
    tracing::info!(
        "stopped: {} messages stored, {} already there",
        publisher.stored,
        publisher.duplicates
    );
    match result {
        Ok(()) => Ok(()),
        Err(audisp::sdk::Error::Handler(e)) if e.is::<Stopping>() => {
            tracing::info!("{e}");
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_sort_into_cases() {
        assert_eq!(classify(&Failed::NoResponders), Trouble::Refused);
        assert_eq!(classify(&Failed::NoAck("x".into())), Trouble::Network);
        let full = Failed::Stream("maximum messages exceeded".into());
        assert_eq!(classify(&full), Trouble::Full);
        let other = Failed::Stream("expected stream does not match".into());
        assert_eq!(classify(&other), Trouble::Refused);
    }
}
