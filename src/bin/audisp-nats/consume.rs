//! `audisp-nats consume`: a durable JetStream pull consumer that feeds a
//! local audispd's input socket (the acknowledged input protocol).
//!
//! Two halves, so that fetching the next messages overlaps with audispd
//! making the last ones durable:
//!
//! * the NATS side (async, on a small tokio runtime) pulls messages,
//!   terminates those that are not audit records (counted and logged,
//!   never fed, so the consumer does not stall on them), gathers the rest
//!   into batches, and acknowledges each message to JetStream only once the
//!   feeder says audispd has it;
//! * the feeder (a thread: the SDK's input client is blocking) owns the
//!   [`Ledger`]: it releases at once what audispd already holds — a stream
//!   message it stored, or a record (by origin and journal place) that came
//!   in another message before or is being fed in one now — numbers the
//!   other records, writes the ledger to stable storage, sends them to
//!   audispd and waits for its acknowledgement (durable, with
//!   `sync = "batch"`).
//!
//! Several processes may share one durable (each gets other messages);
//! each feeds its own input name with its own ledger.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::message::Acker;
use async_nats::jetstream::{self, AckKind, Context as JetStream};
use audisp::sdk::InputClient;
use audisp::systemd::notify::Notifier;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use crate::connect::{self, Link};
use crate::ledger::{Ledger, Places};
use crate::message::{self, NotAudit};
use crate::settings::{Consume, Opts};

/// A message to feed: its stream sequence number, its records and, if it
/// says, their journal places.
struct Fed {
    stream_seq: u64,
    records: Vec<Vec<u8>>,
    places: Option<Places>,
}

/// What the NATS side hands the feeder.
enum Work {
    /// Messages to feed, in the order received.
    Feed(Vec<Fed>),
    /// JetStream's acknowledgement floor, as just polled.
    Floor(u64),
}

/// What the feeder tells the NATS side.
enum Fedback {
    /// audispd holds these stream messages (`duplicates` of them it held
    /// before they came again, and `again` records of the others came in
    /// other messages): acknowledge them.
    Stored {
        seqs: Vec<u64>,
        records: u64,
        duplicates: u64,
        again: u64,
    },
    /// Connected to audispd.
    Connected,
}

/// Milliseconds since start of the feeder's last sign of life.
type Beat = Arc<AtomicU64>;

/// The feeder: owns the ledger and the connection to audispd.
struct Feeder {
    ledger: Ledger,
    socket: PathBuf,
    name: String,
    client: Option<InputClient>,
    /// The messages being fed, by stream sequence, until audispd has them
    /// (their records not already held).
    held: HashMap<u64, Fed>,
    /// The journal places of the records being fed, per origin.
    feeding: HashMap<String, HashSet<u64>>,
    /// Fed and not yet released, in order.
    queue: Vec<u64>,
    /// The floor polled before the last one.
    floor: u64,
    back: UnboundedSender<Fedback>,
    beat: Beat,
    origin: Instant,
    warned: bool,
}

impl Feeder {
    fn alive(&self) {
        self.beat
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Connects if not connected, and resolves what was pending: what
    /// audispd holds is released, the rest is fed again. False while
    /// audispd cannot be reached.
    fn connect(&mut self) -> Result<bool, String> {
        if self.client.is_some() {
            return Ok(true);
        }
        match InputClient::connect_relayed(&self.socket, &self.name, self.ledger.epoch) {
            Ok((client, have)) => {
                tracing::info!(
                    "feeding audispd at {} as input {:?} (it holds up to {have})",
                    self.socket.display(),
                    self.name
                );
                self.warned = false;
                self.client = Some(client);
                let (stored, again) = self.ledger.reconcile(have);
                self.ledger.save()?;
                self.release(stored, 0, 0);
                // Fed again first, in their order, before anything newer,
                // without the leading records audispd took already.
                for &(s, held) in again.iter().filter(|&&(_, held)| held > 0) {
                    tracing::info!(
                        "audispd holds the first {held} records of stream message {s} as fed; the rest is fed again"
                    );
                }
                let again: Vec<u64> = again
                    .into_iter()
                    .filter(|&(s, held)| self.trim(s, held))
                    .map(|(s, _)| s)
                    .collect();
                self.queue.retain(|s| !again.contains(s));
                self.queue.splice(0..0, again);
                let _ = self.back.send(Fedback::Connected);
                Ok(true)
            }
            Err(e) => {
                if !self.warned {
                    tracing::warn!(
                        "cannot reach audispd at {}: {e}; retrying",
                        self.socket.display()
                    );
                    self.warned = true;
                }
                Ok(false)
            }
        }
    }

    /// audispd holds the first `held` records of message `seq` as fed: they
    /// are left out of it. False if the message is not held here.
    fn trim(&mut self, seq: u64, held: u64) -> bool {
        let Some(f) = self.held.get_mut(&seq) else {
            return false;
        };
        let n = (held as usize).min(f.records.len());
        f.records.drain(..n);
        if let Some(pl) = &mut f.places {
            let taken: Vec<u64> = pl.seqs.drain(..n.min(pl.seqs.len())).collect();
            if let Some(set) = self.feeding.get_mut(&pl.origin) {
                for p in &taken {
                    set.remove(p);
                }
            }
        }
        true
    }

    /// audispd holds `seqs`: forget their records, have them acknowledged.
    fn release(&mut self, seqs: Vec<u64>, duplicates: u64, again: u64) {
        if seqs.is_empty() && again == 0 {
            return;
        }
        let mut records = 0;
        for s in &seqs {
            if let Some(f) = self.held.remove(s) {
                records += f.records.len() as u64;
                if let Some(pl) = f.places {
                    if let Some(set) = self.feeding.get_mut(&pl.origin) {
                        for p in &pl.seqs {
                            set.remove(p);
                        }
                        if set.is_empty() {
                            self.feeding.remove(&pl.origin);
                        }
                    }
                }
            }
        }
        let _ = self.back.send(Fedback::Stored {
            seqs,
            records,
            duplicates,
            again,
        });
    }

    /// Takes new messages: those audispd holds already are released at once,
    /// those being fed are not taken twice; of the others, records audispd
    /// holds or that are being fed in another message are left out.
    fn take(&mut self, batch: Vec<Fed>) {
        let mut dups = Vec::new();
        let mut again = 0;
        for mut f in batch {
            if self.ledger.is_stored(f.stream_seq) {
                dups.push(f.stream_seq);
                continue;
            }
            if self.held.contains_key(&f.stream_seq) {
                continue;
            }
            if f.places.is_none() {
                // audispd holds its leading records (a crash cut it).
                let n = (self.ledger.held_part(f.stream_seq) as usize).min(f.records.len());
                f.records.drain(..n);
                again += n as u64;
                if f.records.is_empty() {
                    dups.push(f.stream_seq);
                    continue;
                }
            }
            if let Some(pl) = &mut f.places {
                let stored = self.ledger.has_records(&pl.origin, &pl.seqs);
                let feeding = self.feeding.entry(pl.origin.clone()).or_default();
                let keep: Vec<bool> = (pl.seqs.iter().zip(stored))
                    .map(|(&s, stored)| !stored && feeding.insert(s))
                    .collect();
                if keep.iter().any(|k| !k) {
                    let mut k = keep.iter();
                    f.records.retain(|_| k.next().copied().unwrap_or(false));
                    let mut k = keep.iter();
                    pl.seqs.retain(|_| k.next().copied().unwrap_or(false));
                    again += (keep.len() - pl.seqs.len()) as u64;
                }
                if f.records.is_empty() {
                    dups.push(f.stream_seq);
                    continue;
                }
            }
            self.queue.push(f.stream_seq);
            self.held.insert(f.stream_seq, f);
        }
        let n = dups.len() as u64;
        self.release(dups, n, again);
    }

    /// Feeds the queue to audispd and waits until it has it; an error
    /// keeps it queued (and pending in the ledger) for the next connection.
    fn feed(&mut self) -> Result<(), String> {
        let mut numbered: Vec<(u64, &[u8])> = Vec::new();
        for s in &self.queue {
            let Some(f) = self.held.get(s) else {
                continue;
            };
            let first = self
                .ledger
                .number(*s, f.records.len() as u64, f.places.clone());
            for (k, r) in f.records.iter().enumerate() {
                numbered.push((first + k as u64, r));
            }
        }
        let Some(&(last, _)) = numbered.last() else {
            self.queue.clear();
            return Ok(());
        };
        // On stable storage before audispd sees a record.
        self.ledger.save()?;
        let Some(client) = self.client.as_mut() else {
            return Err("not connected to audispd".into());
        };
        let sent = client
            .send(numbered.iter().map(|&(n, t)| (n, 0, t)))
            .and_then(|()| client.wait_acked(last, Duration::from_secs(60)));
        if let Err(e) = sent {
            self.client = None;
            return Err(format!("audispd input connection lost: {e}"));
        }
        self.queue.clear();
        let stored = self.ledger.stored_upto(last);
        self.release(stored, 0, 0);
        Ok(())
    }

    fn run(mut self, rx: mpsc::Receiver<Work>) -> Result<(), String> {
        let mut open = true;
        loop {
            self.alive();
            if !self.connect()? {
                if !open {
                    break;
                }
                // Meanwhile take what arrives (duplicates are released).
                while let Ok(w) = rx.try_recv() {
                    self.work(w);
                }
                std::thread::sleep(Duration::from_millis(250));
                continue;
            }
            if self.queue.is_empty() {
                if !open {
                    break;
                }
                match rx.recv_timeout(Duration::from_millis(250)) {
                    Ok(w) => self.work(w),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => open = false,
                }
                // Whatever else is waiting joins this batch.
                while let Ok(w) = rx.try_recv() {
                    self.work(w);
                }
                continue;
            }
            if let Err(e) = self.feed() {
                tracing::warn!("{e}; reconnecting");
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        self.ledger.save()
    }

    fn work(&mut self, w: Work) {
        match w {
            Work::Feed(batch) => self.take(batch),
            Work::Floor(f) => {
                self.ledger.forget_upto(self.floor);
                self.floor = f;
            }
        }
    }
}

/// Counters, shown in the log and the service status.
#[derive(Default)]
struct Counts {
    messages: u64,
    records: u64,
    duplicates: u64,
    skipped: u64,
    again: u64,
}

impl Counts {
    fn status(&self) -> String {
        format!(
            "fed {} records of {} messages; {} duplicates, {} skipped (not audit records), {} records left out (stored from another message)",
            self.records, self.messages, self.duplicates, self.skipped, self.again
        )
    }

    fn stored(&mut self, seqs: usize, records: u64, duplicates: u64, again: u64) {
        self.messages += seqs as u64 - duplicates;
        self.records += records;
        self.duplicates += duplicates;
        self.again += again;
    }
}

/// The stream's identity: its name and creation time (a stream deleted and
/// made again numbers from 1 again).
async fn stream_identity(js: &JetStream, name: &str, retry_max: Duration) -> String {
    let mut attempt = 0;
    loop {
        match js.get_stream(name).await {
            Ok(mut s) => match s.info().await {
                Ok(info) => return format!("{name}@{}", info.created.unix_timestamp_nanos()),
                Err(e) => tracing::warn!("stream {name:?}: {e}"),
            },
            Err(e) => {
                if attempt == 0 {
                    tracing::warn!("stream {name:?} not available ({e}); waiting for it");
                }
            }
        }
        attempt += 1;
        tokio::time::sleep(connect::backoff(attempt, retry_max)).await;
    }
}

/// The durable pull consumer, made if it does not exist; retried with
/// back-off while the servers cannot answer (a cluster electing leaders).
async fn durable(js: &JetStream, o: &Opts) -> Result<PullConsumer, String> {
    let mut attempt = 0;
    loop {
        match try_durable(js, o).await {
            Ok(c) => return Ok(c),
            Err(Fatal(e)) => return Err(e),
            Err(Passing(e)) => {
                if attempt == 0 {
                    tracing::warn!("{e}; retrying");
                }
            }
        }
        attempt += 1;
        tokio::time::sleep(connect::backoff(attempt, o.connection.retry_max)).await;
    }
}

/// Why the durable is not there yet.
enum Setback {
    /// Worth trying again.
    Passing(String),
    /// Not: the durable exists with settings that would lose messages.
    Fatal(String),
}
use Setback::{Fatal, Passing};

async fn try_durable(js: &JetStream, o: &Opts) -> Result<PullConsumer, Setback> {
    let c = &o.consume;
    let stream = js
        .get_stream(&o.connection.stream)
        .await
        .map_err(|e| Passing(format!("stream {:?}: {e}", o.connection.stream)))?;
    let config = pull::Config {
        durable_name: Some(c.durable.clone()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: c.ack_wait,
        max_ack_pending: i64::try_from(c.batch.saturating_mul(8)).unwrap_or(i64::MAX),
        filter_subject: c.filter.clone().unwrap_or_default(),
        ..Default::default()
    };
    let mut consumer = stream
        .get_or_create_consumer(&c.durable, config)
        .await
        .map_err(|e| Passing(format!("durable consumer {:?}: {e}", c.durable)))?;
    let info = consumer
        .info()
        .await
        .map_err(|e| Passing(format!("durable consumer {:?}: {e}", c.durable)))?;
    if info.config.ack_policy != AckPolicy::Explicit {
        return Err(Fatal(format!(
            "durable consumer {:?} acknowledges {:?}, not each message on its own: a message could be dropped before audispd has it; use another --durable",
            c.durable, info.config.ack_policy
        )));
    }
    tracing::info!(
        "durable consumer {:?} on stream {:?}: {} messages waiting, {} delivered and not acknowledged",
        c.durable,
        o.connection.stream,
        info.num_pending,
        info.num_ack_pending
    );
    Ok(consumer)
}

/// The most bytes one pull asks for: with many records per message, `batch`
/// messages could be hundreds of megabytes.
const PULL_BYTES: usize = 8 << 20;

/// Messages from the durable, pulled `batch` at a time ahead of need;
/// retried with back-off until the servers serve them.
async fn pull_messages(consumer: &PullConsumer, batch: usize, retry_max: Duration) -> pull::Stream {
    let mut attempt = 0;
    loop {
        match consumer
            .stream()
            .max_messages_per_batch(batch)
            .max_bytes_per_batch(PULL_BYTES)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
        {
            Ok(m) => return m,
            Err(e) => {
                if attempt == 0 {
                    tracing::warn!("cannot pull messages: {e}; retrying");
                }
            }
        }
        attempt += 1;
        tokio::time::sleep(connect::backoff(attempt, retry_max)).await;
    }
}

/// The messages handed to the feeder and not yet acknowledged to
/// JetStream: their ackers, and how many records they hold in all.
#[derive(Default)]
struct Unacked {
    ackers: HashMap<u64, (Acker, usize)>,
    records: usize,
}

impl Unacked {
    fn insert(&mut self, seq: u64, acker: Acker, records: usize) {
        self.records += records;
        if let Some((_, was)) = self.ackers.insert(seq, (acker, records)) {
            self.records -= was;
        }
    }
}

/// Acknowledges `seqs` to JetStream (their ackers are in `acks`).
async fn ack_all(acks: &mut Unacked, seqs: &[u64]) {
    for s in seqs {
        if let Some((a, n)) = acks.ackers.remove(s) {
            acks.records -= n;
            if let Err(e) = a.ack().await {
                tracing::debug!("acknowledging stream message {s}: {e}");
            }
        }
    }
}

/// Logs a message that is not an audit record (the first ten, then every
/// thousandth).
fn log_skipped(n: u64, seq: u64, why: &NotAudit) {
    if n <= 10 || n % 1000 == 0 {
        tracing::warn!("stream message {seq} skipped, the {n}th so far: {why}");
    }
}

/// Runs the consumer until SIGTERM or SIGINT.
pub fn run(o: Opts) -> Result<(), String> {
    let c: &Consume = &o.consume;
    audisp::statefile::private_dir(&c.state_dir).map_err(|e| e.to_string())?;
    let ledger_path = c.state_dir.join(format!("consume-{}.ledger", c.input_name));
    let ledger = Ledger::open(&ledger_path)?;
    tracing::info!("ledger {}", ledger_path.display());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the NATS client's runtime: {e}"))?;
    rt.block_on(consume(&o, ledger))
}

async fn consume(o: &Opts, mut ledger: Ledger) -> Result<(), String> {
    let c = &o.consume;
    let (link_tx, mut link_rx) = unbounded_channel();
    let options = connect::options(
        &o.connection,
        &format!("audisp-nats consume {}", c.durable),
        true,
        link_tx,
    )?;
    let client = connect::connect(&o.connection, options).await?;
    let js = jetstream::new(client.clone());
    let identity = stream_identity(&js, &o.connection.stream, o.connection.retry_max).await;
    if ledger.bind_stream(&identity) {
        tracing::warn!(
            "stream {:?} was created anew ({identity}): the ledger's stream positions are forgotten",
            o.connection.stream
        );
    }
    ledger.save()?;
    let mut consumer = durable(&js, o).await?;

    let (work_tx, work_rx) = mpsc::channel::<Work>();
    let (back_tx, mut back_rx) = unbounded_channel::<Fedback>();
    let beat: Beat = Arc::new(AtomicU64::new(0));
    let origin = Instant::now();
    let feeder = Feeder {
        ledger,
        socket: c.socket.clone(),
        name: c.input_name.clone(),
        client: None,
        held: HashMap::new(),
        feeding: HashMap::new(),
        queue: Vec::new(),
        floor: 0,
        back: back_tx,
        beat: beat.clone(),
        origin,
        warned: false,
    };
    let feeder = std::thread::spawn(move || feeder.run(work_rx));

    let mut messages = pull_messages(&consumer, c.batch, o.connection.retry_max).await;
    let notify = Notifier::from_env();
    let mut ready = false;
    let mut counts = Counts::default();
    let mut acks = Unacked::default();
    // Records fed and not yet acknowledged: pulling waits beyond this many.
    let most = c.batch.saturating_mul(8);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("signal: {e}"))?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| format!("signal: {e}"))?;
    let tick = notify.watchdog().map_or(Duration::from_secs(5), |w| {
        (w / 4).max(Duration::from_millis(50))
    });
    let mut ticker = tokio::time::interval(tick);
    let mut last_poll = Instant::now();
    let mut stalled = false;
    loop {
        tokio::select! {
            m = messages.next(), if acks.records < most => {
                let Some(m) = m else {
                    tracing::warn!("the pull subscription ended; pulling again");
                    messages = pull_messages(&consumer, c.batch, o.connection.retry_max).await;
                    continue;
                };
                let mut batch = Vec::new();
                let mut next = Some(m);
                while let Some(m) = next.take() {
                    match m {
                        Ok(m) => {
                            let Some(seq) = m.info().ok().map(|i| i.stream_sequence) else {
                                tracing::warn!("a message without JetStream metadata: skipped");
                                continue;
                            };
                            let (msg, acker) = m.split();
                            let read = message::records(&msg.payload).and_then(|r| {
                                let places = message::places(msg.headers.as_ref(), r.len())?;
                                Ok((r, places))
                            });
                            match read {
                                Ok((records, places)) => {
                                    let n = records.len();
                                    batch.push(Fed {
                                        stream_seq: seq,
                                        records: records.into_iter().map(<[u8]>::to_vec).collect(),
                                        places,
                                    });
                                    acks.insert(seq, acker, n);
                                }
                                Err(why) => {
                                    counts.skipped += 1;
                                    log_skipped(counts.skipped, seq, &why);
                                    if let Err(e) = acker.ack_with(AckKind::Term).await {
                                        tracing::debug!("terminating stream message {seq}: {e}");
                                    }
                                }
                            }
                        }
                        Err(e) => tracing::warn!("pulling messages: {e}"),
                    }
                    if batch.len() < c.batch && acks.records < most {
                        next = messages.next().now_or_never().flatten();
                    }
                }
                if !batch.is_empty() && work_tx.send(Work::Feed(batch)).is_err() {
                    break;
                }
            }
            b = back_rx.recv() => match b {
                Some(Fedback::Stored { seqs, records, duplicates, again }) => {
                    counts.stored(seqs.len(), records, duplicates, again);
                    ack_all(&mut acks, &seqs).await;
                }
                Some(Fedback::Connected) => {
                    if !ready {
                        let _ = notify.ready(&counts.status());
                        ready = true;
                    }
                }
                None => break,
            },
            l = link_rx.recv() => match l {
                Some(Link::Down(why)) => tracing::warn!("{why}"),
                Some(Link::Up) => tracing::info!("connected to NATS"),
                None => {}
            },
            _ = ticker.tick() => {
                let age = origin.elapsed().as_millis() as u64 - beat.load(Ordering::Relaxed);
                if let Some(w) = notify.watchdog() {
                    if Duration::from_millis(age) < (w / 2).max(Duration::from_millis(1500)) {
                        stalled = false;
                        let _ = notify.watchdog_ping();
                    } else if !stalled {
                        tracing::error!("not feeding the watchdog: the feeder shows no progress for {age} ms");
                        stalled = true;
                    }
                }
                let _ = notify.status(&counts.status());
                if last_poll.elapsed() >= Duration::from_secs(30) {
                    last_poll = Instant::now();
                    if let Ok(info) = consumer.info().await {
                        let _ = work_tx.send(Work::Floor(info.ack_floor.stream_sequence));
                    }
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("stopping: finishing the batch audispd is storing");
    let _ = notify.stopping();
    drop(work_tx);
    drop(messages);
    while let Some(b) = back_rx.recv().await {
        if let Fedback::Stored {
            seqs,
            records,
            duplicates,
            again,
        } = b
        {
            counts.stored(seqs.len(), records, duplicates, again);
            ack_all(&mut acks, &seqs).await;
        }
    }
    let _ = client.flush().await;
    let fed = feeder
        .join()
        .map_err(|_| "the feeder thread panicked".to_string())?;
    tracing::info!("stopped: {}", counts.status());
    fed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(stream_seq: u64, origin: &str, seqs: &[u64]) -> Fed {
        Fed {
            stream_seq,
            records: seqs.iter().map(|s| format!("r{s}").into_bytes()).collect(),
            places: Some(Places {
                origin: origin.into(),
                seqs: seqs.to_vec(),
            }),
        }
    }

    fn feeder(dir: &std::path::Path) -> (Feeder, tokio::sync::mpsc::UnboundedReceiver<Fedback>) {
        let ledger = Ledger::open(&dir.join("l")).unwrap();
        let (back, rx) = unbounded_channel();
        let f = Feeder {
            ledger,
            socket: dir.join("none"),
            name: "t".into(),
            client: None,
            held: HashMap::new(),
            feeding: HashMap::new(),
            queue: Vec::new(),
            floor: 0,
            back,
            beat: Arc::new(AtomicU64::new(0)),
            origin: Instant::now(),
            warned: false,
        };
        (f, rx)
    }

    #[test]
    fn a_message_audispd_took_in_part_is_fed_without_that_part() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, _rx) = feeder(dir.path());
        let bare = |seq: u64, n: u64| Fed {
            stream_seq: seq,
            records: (0..n).map(|k| format!("m{seq}r{k}").into_bytes()).collect(),
            places: None,
        };
        // Held here: message 1 (with places) and 2 (without), fed as
        // inputs 1-3 and 4-6; audispd holds inputs up to 5.
        f.take(vec![fed(1, "a", &[7, 8, 9]), bare(2, 3)]);
        let places = f.held[&1].places.clone();
        f.ledger.number(1, 3, places);
        f.ledger.number(2, 3, None);
        let (stored, again) = f.ledger.reconcile(5);
        assert_eq!((stored, again.clone()), (vec![1], vec![(2, 2)]));
        assert!(again.iter().all(|&(s, held)| f.trim(s, held)));
        assert_eq!(f.held[&2].records, [b"m2r2".to_vec()]);
        // After a crash, JetStream delivers message 2 whole again.
        f.held.clear();
        f.queue.clear();
        f.take(vec![bare(2, 3)]);
        assert_eq!(f.held[&2].records, [b"m2r2".to_vec()]);
    }

    #[test]
    fn a_record_in_two_messages_cut_differently_is_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, mut rx) = feeder(dir.path());
        // Places 2 and 3 come in messages 1 and 2; another origin's 2 is
        // another record.
        f.take(vec![
            fed(1, "a", &[1, 2, 3]),
            fed(2, "a", &[2, 3, 4, 5]),
            fed(3, "b", &[2]),
        ]);
        assert_eq!(f.queue, [1, 2, 3]);
        let second = &f.held[&2];
        assert_eq!(second.records, [b"r4".to_vec(), b"r5".to_vec()]);
        assert_eq!(second.places.as_ref().unwrap().seqs, [4, 5]);
        match rx.try_recv() {
            Ok(Fedback::Stored {
                seqs,
                duplicates,
                again,
                ..
            }) => assert_eq!((seqs, duplicates, again), (vec![], 0, 2)),
            _ => panic!("left out records are counted"),
        }
        // Message 1 stored: a message of only its places is a duplicate.
        let places = f.held[&1].places.clone();
        let first = f.ledger.number(1, 3, places);
        assert_eq!(f.ledger.stored_upto(first + 2), [1]);
        f.release(vec![1], 0, 0);
        assert!(!f.feeding["a"].contains(&1));
        f.take(vec![fed(4, "a", &[1, 3])]);
        assert!(!f.held.contains_key(&4));
        let last = std::iter::from_fn(|| rx.try_recv().ok()).last();
        match last {
            Some(Fedback::Stored {
                seqs,
                duplicates,
                again,
                ..
            }) => assert_eq!((seqs, duplicates, again), (vec![4], 1, 2)),
            _ => panic!("message 4 released as a duplicate"),
        }
    }
}
