//! Ingest: everything that puts records into the journal.
//!
//! Records come from auditd on standard input and from input plugins on the
//! input socket (the auditd bridge, the remote receiver…). For each batch the
//! ingest stage, under one lock so that the journal order is one order:
//!
//! 1. drops records an input sends again after a reconnect (each input
//!    numbers its records; the highest number stored is remembered per input
//!    and survives restarts and crashes, see [`Checkpoint`]);
//! 2. withholds the records the input's filter (`[input.NAME] filter`)
//!    does not let through: they count as accepted (the input gets them
//!    acknowledged) and as `filtered`, and are never journaled;
//! 3. parses just enough of each record to route it (type, time, serial,
//!    node) and lets the [`Grouper`] place it in an event;
//! 4. appends records and close markers to the journal, which wakes the
//!    plugin senders.
//!
//! If the journal cannot be written (disk full, I/O error), records wait in a
//! bounded memory queue, in order, and are retried; inputs are not
//! acknowledged meanwhile, so they keep their copies. Only standard input,
//! which cannot be pushed back without stalling auditd, can lose records:
//! once that queue is full, and at stop what still waits in it. Every record
//! read is stored, waiting (counted as `waiting`) or counted as `lost`, and
//! every loss is logged ([`super::loss`]).
//!
//! A [`Checkpoint`] (grouper state and per-input high-water marks at a journal
//! position) is written every few seconds; recovery loads it and replays the
//! journal entries written after it, so the restored state is exact. It
//! always describes the journal, never records waiting in memory: while some
//! wait, its grouper state is worked out from the previous checkpoint and
//! the journal. Since the journal keeps every segment from the checkpoint
//! on, a checkpoint must also be writable on a full disk, or nothing could
//! be deleted to make room: a little space is kept for it (`ingest.reserve`)
//! and given up when the disk is full.
//!
//! A checkpoint is *taken* under the state lock (a consistent snapshot,
//! numbered) but *written* outside it, under a lock of its own: writing it
//! syncs the file and its directory, 10–60 ms on a busy disk, and every
//! input's [`Ingest::submit`] needs the state lock (a reader held up that
//! long makes auditd wait, and a stream handed over is taken back). A
//! snapshot older than the one on disk is not written; the last written one
//! alone sets the retention floor.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::loop_guard::{self, Forwarders};
use super::loss::{Loss, LossLog};
use super::routes::AUDITD;
use super::settings::FilterRule;
use super::stats::{self, InputCounters, InputSnapshot};
use crate::engine::events::{Grouper, GrouperState};
use crate::filter::Scratch;
use crate::journal::entry::{flags, Origin};
use crate::journal::{Deferred, Journal, JournalId, NewEntry, ReadOutcome, Step};
use crate::record;

/// Name of the standard-input source.
pub const STDIN: &str = "stdin";

/// One record offered to [`Ingest::submit`].
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The input's own sequence number (0: the input does not number its
    /// records, as with standard input).
    pub source_seq: u64,
    /// Type from a binary header or the input, used when the text does not
    /// parse.
    pub type_hint: Option<u32>,
    /// Record text, without newline.
    pub text: &'a [u8],
    /// Where the record was first journaled, if the input knows (a record
    /// forwarded from a dispatcher): kept with it, and the loop guard's
    /// clue ([`super::loop_guard`]).
    pub origin: Option<Origin>,
}

/// An input known to the ingest stage.
#[derive(Debug)]
struct KnownInput {
    name: String,
    epoch: JournalId,
    /// Highest source sequence number placed (in the journal or pending).
    placed: u64,
    /// Highest source sequence number in the journal.
    committed: u64,
    connected: bool,
    /// Its records originated on other hosts (it said so in its `HELLO`).
    relayed: bool,
    counters: Arc<InputCounters>,
    loss: LossLog,
    /// When to warn of records that came back ([`super::loop_guard`]).
    loops: LossLog,
}

/// What a checkpoint stores.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checkpoint {
    /// The journal this belongs to.
    #[serde(with = "id_text")]
    pub journal: JournalId,
    /// Journal position the state corresponds to (entries before it).
    pub seq: u64,
    /// Event grouping state.
    pub grouper: GrouperState,
    /// Inputs by index (index 0 is unused).
    pub sources: Vec<InputCheckpoint>,
}

/// One input in a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InputCheckpoint {
    /// Input name.
    pub name: String,
    /// Its sequence-number space.
    #[serde(with = "id_text")]
    pub epoch: JournalId,
    /// Highest source sequence number stored.
    pub committed: u64,
    /// Its records originated on other hosts (absent in checkpoints of
    /// older versions: local).
    #[serde(default)]
    pub relayed: bool,
}

struct State {
    grouper: Grouper,
    /// Inputs by their index, the journal entries' `source` (0 is unused).
    sources: Vec<KnownInput>,
    /// Entries that could not be written yet, in order.
    pending: VecDeque<NewEntry<'static>>,
    pending_bytes: usize,
    /// The checkpoint last written.
    last: Checkpoint,
    /// The number of `last`, and of the last snapshot taken.
    last_taken: (u64, u64),
    /// Records the grouper placed were lost: once nothing waits any more,
    /// the grouper is rebuilt from the journal, so that events whose end
    /// was lost are still open (and closed in time).
    resync: bool,
    last_error: Option<String>,
    /// Input filters by input name (`auditd`: standard input); records
    /// they withhold are acknowledged and counted, never journaled.
    filters: BTreeMap<String, FilterRule>,
    scratch: Scratch,
}

/// The checkpoint file's side, kept apart from the state so that writing
/// it holds up no input.
struct CheckpointIo {
    /// The number of the snapshot on disk.
    written: u64,
    /// Bytes set aside for the checkpoint (see the module docs).
    reserve_len: u64,
}

/// What became of a submitted batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    /// Highest source sequence number now in the journal (what may be
    /// acknowledged once synced).
    pub committed: u64,
    /// Journal position after the batch (sync up to here before acking).
    pub journal_end: u64,
    /// Whether the batch is waiting in memory because the journal could not
    /// be written.
    pub pending: bool,
}

/// The ingest stage. Shared by the stdin reader, the input connections and
/// the control loop.
pub struct Ingest {
    journal: Journal,
    state: Mutex<State>,
    /// Held while a checkpoint is written (see the module docs).
    checkpoint_io: Mutex<CheckpointIo>,
    checkpoint_path: PathBuf,
    reserve_path: PathBuf,
    pending_max: usize,
    event_timeout: Duration,
    max_open: usize,
    /// Names the plugins that forward an input's records, for the loop
    /// guard's warning.
    forwarders: OnceLock<Forwarders>,
}

/// Index of an input in the ingest stage.
pub type SourceId = u16;

/// Most inputs the journal can tell apart.
const MAX_SOURCES: usize = u16::MAX as usize;

impl Ingest {
    /// Opens the ingest stage over `journal`, restoring its state from the
    /// checkpoint in `state_dir` and the journal entries written after it.
    pub fn open(
        journal: Journal,
        state_dir: &Path,
        event_timeout: Duration,
        max_open: usize,
        pending_max: usize,
    ) -> io::Result<Ingest> {
        let checkpoint_path = state_dir.join("ingest.json");
        let now = Instant::now();
        let cp = match std::fs::read(&checkpoint_path) {
            Ok(bytes) => match serde_json::from_slice::<Checkpoint>(&bytes) {
                Ok(cp) if cp.journal == journal.id() => Some(cp),
                Ok(_) => {
                    tracing::warn!(
                        file = %checkpoint_path.display(),
                        "ingest checkpoint belongs to another journal; rebuilding state from the journal"
                    );
                    None
                }
                Err(e) => {
                    tracing::warn!(
                        file = %checkpoint_path.display(),
                        "ingest checkpoint unreadable ({e}); rebuilding state from the journal"
                    );
                    None
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(crate::journal::with_path(e, &checkpoint_path)),
        };
        let (mut grouper, mut sources, from) = match &cp {
            Some(cp) => (
                Grouper::restore(event_timeout, max_open, &cp.grouper, now),
                cp.sources
                    .iter()
                    .map(|s| KnownInput {
                        name: s.name.clone(),
                        epoch: s.epoch,
                        placed: s.committed,
                        committed: s.committed,
                        connected: false,
                        relayed: s.relayed,
                        counters: Arc::default(),
                        loss: LossLog::default(),
                        loops: LossLog::default(),
                    })
                    .collect(),
                cp.seq.max(journal.start()),
            ),
            None => (
                Grouper::new(event_timeout, max_open),
                Vec::new(),
                journal.start(),
            ),
        };
        if sources.is_empty() {
            sources.push(placeholder());
        }
        // Replay what was written after the checkpoint.
        let replayed = replay(&journal, from, &mut grouper, &mut sources, now)?;
        if replayed > 0 {
            tracing::info!(
                replayed,
                from,
                "ingest state recovered from the journal after the last checkpoint"
            );
        }
        let reserve_path = state_dir.join("ingest.reserve");
        let reserve_len = std::fs::metadata(&reserve_path).map_or(0, |m| m.len());
        let first = checkpoint_of(&journal, grouper.state(), &sources);
        let ingest = Ingest {
            journal,
            state: Mutex::new(State {
                grouper,
                sources,
                pending: VecDeque::new(),
                pending_bytes: 0,
                last: first.clone(),
                last_taken: (0, 0),
                resync: false,
                last_error: None,
                filters: BTreeMap::new(),
                scratch: Scratch::new(),
            }),
            checkpoint_io: Mutex::new(CheckpointIo {
                written: 0,
                reserve_len,
            }),
            checkpoint_path,
            reserve_path,
            pending_max,
            event_timeout,
            max_open,
            forwarders: OnceLock::new(),
        };
        {
            let mut st = ingest.lock();
            st.last_taken.1 += 1;
            let n = st.last_taken.1;
            ingest.store_checkpoint(&mut st, n, first)?;
        }
        Ok(ingest)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The journal records go into.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Sets the input filters (by input name, `auditd` for standard input)
    /// that records pass before they are journaled, for every batch from
    /// now on.
    pub fn set_filters(&self, filters: &BTreeMap<String, FilterRule>) {
        self.lock().filters = filters.clone();
    }

    /// Registers an input by name and epoch; `relayed`: its records
    /// originated on other hosts. Returns its id and the highest source
    /// sequence number already stored for it (0 for a new epoch). Fails if
    /// an input of that name is already connected.
    pub fn connect(
        &self,
        name: &str,
        epoch: [u8; 16],
        relayed: bool,
    ) -> io::Result<(SourceId, u64)> {
        let epoch = JournalId(epoch);
        let mut st = self.lock();
        let found = st.sources.iter().position(|s| s.name == name);
        let mut relay_changed = false;
        let id = match found {
            Some(i) => {
                let s = &mut st.sources[i];
                relay_changed = s.relayed != relayed;
                s.relayed = relayed;
                if s.connected {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("an input named {name} is already connected"),
                    ));
                }
                if s.epoch != epoch {
                    if s.committed > 0 {
                        tracing::info!(
                            input = name,
                            "input {name} started a new sequence (its spool was reset); earlier numbers no longer de-duplicate"
                        );
                    }
                    s.epoch = epoch;
                    s.placed = 0;
                    s.committed = 0;
                }
                s.connected = true;
                i
            }
            None => {
                if st.sources.len() >= MAX_SOURCES {
                    return Err(io::Error::other("too many distinct inputs"));
                }
                st.sources.push(KnownInput {
                    name: name.to_string(),
                    epoch,
                    placed: 0,
                    committed: 0,
                    connected: true,
                    relayed,
                    counters: Arc::default(),
                    loss: LossLog::default(),
                    loops: LossLog::default(),
                });
                st.sources.len() - 1
            }
        };
        let committed = st.sources[id].committed;
        let needs_checkpoint = found.is_none() || committed == 0 || relay_changed;
        drop(st);
        if needs_checkpoint {
            // A new input index (or epoch) must be on disk before any entry
            // refers to it.
            self.checkpoint()?;
        }
        Ok((id as SourceId, committed))
    }

    /// The name of input `id` and whether its records originated on other
    /// hosts (`None` for an index no input has).
    pub fn input_origin(&self, id: SourceId) -> Option<(String, bool)> {
        self.lock()
            .sources
            .get(id as usize)
            .filter(|s| !s.name.is_empty())
            .map(|s| (s.name.clone(), s.relayed))
    }

    /// Sets how the loop guard's warning finds the plugins that forward an
    /// input's records (once; the engine does it at start).
    pub fn set_forwarders(&self, f: Forwarders) {
        let _ = self.forwarders.set(f);
    }

    /// Marks an input as gone.
    pub fn disconnect(&self, id: SourceId) {
        if let Some(s) = self.lock().sources.get_mut(id as usize) {
            s.connected = false;
        }
    }

    /// Counters of an input.
    pub fn counters(&self, id: SourceId) -> Arc<InputCounters> {
        self.lock()
            .sources
            .get(id as usize)
            .map(|s| s.counters.clone())
            .unwrap_or_default()
    }

    /// Puts records into the journal (see the module docs). `must_keep`
    /// says whether records that cannot be stored may be refused (inputs
    /// that keep their copies until acknowledged) or must be queued
    /// (standard input).
    pub fn submit(&self, id: SourceId, records: &[Incoming<'_>], must_keep: bool) -> Submitted {
        let now = Instant::now();
        let mut st = self.lock();
        if !st.pending.is_empty() {
            self.flush_pending(&mut st);
        }
        let blocked = !st.pending.is_empty();
        let State {
            grouper,
            sources,
            filters,
            scratch,
            ..
        } = &mut *st;
        let Some(src) = sources.get_mut(id as usize) else {
            return Submitted {
                committed: 0,
                journal_end: self.journal.end(),
                pending: false,
            };
        };
        let counters = src.counters.clone();
        if blocked && !must_keep {
            // Let the input keep its records; it will resend them.
            return Submitted {
                committed: src.committed,
                journal_end: self.journal.end(),
                pending: true,
            };
        }
        let mut entries: Vec<NewEntry<'_>> = Vec::with_capacity(records.len() * 2);
        let mut closes = Vec::new();
        let mut bytes = 0u64;
        let mut duplicates = 0u64;
        let mut unparsed = 0u64;
        let mut looped = 0u64;
        let own = self.journal.id().0;
        let mut filtered = 0u64;
        let filter = filters.get(if src.name == STDIN { AUDITD } else { &src.name });
        let mut top = src.placed;
        for r in records {
            if r.source_seq != 0 && r.source_seq <= top {
                duplicates += 1;
                continue;
            }
            top = top.max(r.source_seq);
            if r.origin.is_some_and(|o| o.journal == own) {
                looped += 1;
                continue;
            }
            let text = sanitize(r.text);
            if let Some(f) = filter {
                if !f.action.passes(f.filter.matches(&text, scratch)) {
                    filtered += 1;
                    continue;
                }
            }
            let info = record::parse(&text);
            let rtype = info.as_ref().map(|i| i.rtype).or(r.type_hint).unwrap_or(0);
            let mut fl = 0;
            if info.is_none() {
                fl |= flags::UNPARSED;
                unparsed += 1;
            }
            let placement = grouper.place(info.as_ref(), now, &mut closes);
            for c in closes.drain(..) {
                entries.push(NewEntry::close_marker(c, id));
            }
            if placement.ends {
                fl |= flags::ENDS_EVENT;
            }
            if placement.starts {
                fl |= flags::STARTS_EVENT;
            }
            bytes += text.len() as u64;
            entries.push(NewEntry {
                event: placement.event,
                source_seq: r.source_seq,
                rtype,
                source: id,
                flags: fl,
                origin: r.origin,
                text,
            });
        }
        src.placed = top;
        let mut loop_warning = None;
        if looped > 0 {
            stats::add(&counters.looped, looped);
            let total = stats::get(&counters.looped);
            loop_warning = src
                .loops
                .lost(looped, "", total, now)
                .map(|l| (src.name.clone(), l));
        }
        stats::add(&counters.duplicates, duplicates);
        stats::add(&counters.unparsed, unparsed);
        stats::add(&counters.filtered, filtered);
        let accepted = entries
            .iter()
            .filter(|e| e.flags & flags::CONTROL == 0)
            .count() as u64;
        // Counted as read before they are stored, waiting or lost, so that
        // the counters never show more stored than read.
        stats::add(&counters.records, accepted);
        stats::add(&counters.bytes, bytes);
        // Plugins waiting for records whose work this thread does itself,
        // once it holds no lock (`journal::wakeup`).
        let mut deferred = Deferred::default();
        if blocked {
            self.queue(&mut st, id, entries, now);
        } else {
            match self.journal.append_deferring(&entries) {
                Err(e) => {
                    self.report_error(&mut st, &e);
                    self.queue(&mut st, id, entries, now);
                }
                Ok((_, owners)) => {
                    deferred = owners;
                    let src = &mut st.sources[id as usize];
                    src.committed = src.committed.max(top);
                }
            }
        }
        let src = &st.sources[id as usize];
        let submitted = Submitted {
            committed: src.committed,
            journal_end: self.journal.end(),
            pending: !st.pending.is_empty(),
        };
        drop(st);
        deferred.run();
        if let Some((input, l)) = loop_warning {
            // Outside the lock: naming the plugins takes the engine's.
            let forwarders = self.forwarders.get().map_or_else(Vec::new, |f| f(&input));
            loop_guard::warn(&input, l.since_last, l.total, &forwarders);
        }
        submitted
    }

    fn report_error(&self, st: &mut State, e: &io::Error) {
        let msg = e.to_string();
        if st.last_error.as_deref() != Some(&msg) {
            tracing::error!(
                message_id = crate::log_ids::JOURNAL_ERROR,
                "cannot write the journal: {msg}; records are kept in memory and retried (free space in {} or fix the error)",
                self.journal.dir().display()
            );
            st.last_error = Some(msg);
        }
    }

    /// Keeps `entries` of input `id` in memory for a later append, as far
    /// as the queue's size allows (control entries always), and counts and
    /// logs what does not fit as lost.
    fn queue(&self, st: &mut State, id: SourceId, entries: Vec<NewEntry<'_>>, now: Instant) {
        let mut lost = 0u64;
        let mut kept = 0u64;
        for e in entries {
            let control = e.flags & flags::CONTROL != 0;
            if !control && st.pending_bytes + e.text.len() > self.pending_max {
                lost += 1;
                continue;
            }
            kept += u64::from(!control);
            st.pending_bytes += e.text.len();
            st.pending.push_back(e.into_owned());
        }
        if let Some(src) = st.sources.get_mut(id as usize) {
            stats::add(&src.counters.waiting, kept);
        }
        if lost > 0 {
            st.resync = true;
            count_lost(
                st,
                id,
                lost,
                "the journal cannot be written and the memory queue for records waiting on it is full",
                now,
            );
        }
    }

    fn flush_pending(&self, st: &mut State) {
        while !st.pending.is_empty() {
            let n = st.pending.len().min(4096);
            if let Err(e) = self.journal.append(&st.pending.make_contiguous()[..n]) {
                self.report_error(st, &e);
                return;
            }
            let State {
                pending,
                pending_bytes,
                sources,
                ..
            } = &mut *st;
            for p in pending.drain(..n) {
                *pending_bytes -= p.text.len();
                if let Some(s) = sources.get_mut(p.source as usize) {
                    s.committed = s.committed.max(p.source_seq);
                    if p.flags & flags::CONTROL == 0 {
                        stats::sub(&s.counters.waiting, 1);
                    }
                }
            }
        }
        if st.resync {
            self.resync(st);
        }
        if st.last_error.take().is_some() {
            tracing::info!("journal writable again; records kept in memory were stored");
        }
    }

    /// Rebuilds the grouper from the journal (nothing waits in memory): it
    /// placed records that were lost, and the journal does not have them.
    fn resync(&self, st: &mut State) {
        match self.grouper_of_journal(&st.last) {
            Ok(g) => {
                st.grouper = g;
                st.resync = false;
            }
            Err(e) => tracing::error!(
                message_id = crate::log_ids::JOURNAL_ERROR,
                "cannot read the journal back to regroup events after record loss: {e}"
            ),
        }
    }

    /// The grouper as the journal alone leaves it: the one of checkpoint
    /// `last`, and the journal entries after it.
    fn grouper_of_journal(&self, last: &Checkpoint) -> io::Result<Grouper> {
        let now = Instant::now();
        let mut g = Grouper::restore(self.event_timeout, self.max_open, &last.grouper, now);
        replay(&self.journal, last.seq, &mut g, &mut [], now)?;
        Ok(g)
    }

    /// Periodic work: ends events idle for the timeout, retries pending
    /// records, writes a checkpoint if anything changed, logs loss still
    /// owed.
    pub fn tick(&self, now: Instant) -> io::Result<()> {
        let mut st = self.lock();
        if !st.pending.is_empty() {
            self.flush_pending(&mut st);
        }
        let mut closes = Vec::new();
        st.grouper.expire_idle(now, &mut closes);
        if !closes.is_empty() {
            self.write_markers(&mut st, &closes);
        }
        report_owed_loss(&mut st, now, false);
        if self.journal.end() == st.last.seq {
            return Ok(());
        }
        let snapshot = self.snapshot_locked(&mut st)?;
        drop(st);
        self.write_snapshot(snapshot)
    }

    fn write_markers(&self, st: &mut State, closes: &[u64]) {
        let entries: Vec<NewEntry<'_>> = closes
            .iter()
            .map(|&c| NewEntry::close_marker(c, 0))
            .collect();
        let now = Instant::now();
        if !st.pending.is_empty() {
            self.queue(st, 0, entries, now);
        } else if let Err(e) = self.journal.append(&entries) {
            self.report_error(st, &e);
            self.queue(st, 0, entries, now);
        }
    }

    /// Ends every event still open (the inputs have stopped: nothing more
    /// will join them), so that events-mode plugins get them now.
    pub fn close_all_events(&self) {
        let mut st = self.lock();
        let mut closes = Vec::new();
        st.grouper.close_all(&mut closes);
        if !closes.is_empty() {
            self.write_markers(&mut st, &closes);
        }
    }

    /// The last step of a stop, once the inputs have stopped and plugins
    /// have had their chance to free space: stores what still waits in
    /// memory if the journal takes it now. Standard input's records it does
    /// not take are lost, counted and logged; an input plugin's are handed
    /// back (it sends them again after a restart, as they were never
    /// acknowledged). Then every loss still owed is logged, and the
    /// checkpoint written.
    pub fn finish(&self) -> io::Result<()> {
        let mut st = self.lock();
        let now = Instant::now();
        if !st.pending.is_empty() {
            self.flush_pending(&mut st);
        }
        if !st.pending.is_empty() {
            let waiting = std::mem::take(&mut st.pending);
            st.pending_bytes = 0;
            let mut lost = vec![0u64; st.sources.len()];
            let mut handed_back = vec![0u64; st.sources.len()];
            for e in waiting.iter().filter(|e| e.flags & flags::CONTROL == 0) {
                let i = e.source as usize;
                if let Some(n) = if e.source_seq == 0 {
                    lost.get_mut(i)
                } else {
                    handed_back.get_mut(i)
                } {
                    *n += 1;
                }
            }
            for (i, (&lost, &back)) in lost.iter().zip(&handed_back).enumerate() {
                let src = &st.sources[i];
                stats::sub(&src.counters.waiting, lost + back);
                if back > 0 {
                    stats::sub(&src.counters.records, back);
                    tracing::warn!(
                        input = %src.name,
                        records = back,
                        "input {}: {back} records not stored at stop (the journal cannot be written); never acknowledged, they are sent again after a restart",
                        src.name
                    );
                }
                count_lost(
                    &mut st,
                    i as SourceId,
                    lost,
                    "they were still waiting in memory for the journal at stop",
                    now,
                );
            }
            st.resync = true;
        }
        if st.resync {
            self.resync(&mut st);
        }
        report_owed_loss(&mut st, now, true);
        self.checkpoint_locked(&mut st)
    }

    /// Writes the checkpoint now (taken now, written without holding up the
    /// inputs).
    pub fn checkpoint(&self) -> io::Result<()> {
        let snapshot = self.snapshot_locked(&mut self.lock())?;
        self.write_snapshot(snapshot)
    }

    /// Takes and writes the checkpoint while the caller holds the state.
    fn checkpoint_locked(&self, st: &mut State) -> io::Result<()> {
        let (n, cp) = self.snapshot_locked(st)?;
        self.store_checkpoint(st, n, cp)
    }

    /// Takes a checkpoint of the state, numbered.
    fn snapshot_locked(&self, st: &mut State) -> io::Result<(u64, Checkpoint)> {
        // While records wait in memory the grouper has placed more than the
        // journal holds; the checkpoint describes the journal.
        let grouper = if st.pending.is_empty() {
            st.grouper.state()
        } else {
            self.grouper_of_journal(&st.last)?.state()
        };
        st.last_taken.1 += 1;
        Ok((
            st.last_taken.1,
            checkpoint_of(&self.journal, grouper, &st.sources),
        ))
    }

    /// Writes snapshot `n` (unless a later one is on disk already) without
    /// the state lock, then makes it the last checkpoint if no later one is.
    fn write_snapshot(&self, (n, cp): (u64, Checkpoint)) -> io::Result<()> {
        if !self.write_file(n, &cp)? {
            return Ok(());
        }
        let mut st = self.lock();
        if n > st.last_taken.0 {
            st.last = cp;
            st.last_taken.0 = n;
        }
        Ok(())
    }

    /// Writes snapshot `n` while the caller holds the state (at start and
    /// at stop).
    fn store_checkpoint(&self, st: &mut State, n: u64, cp: Checkpoint) -> io::Result<()> {
        self.write_file(n, &cp)?;
        if n > st.last_taken.0 {
            st.last = cp;
            st.last_taken.0 = n;
        }
        Ok(())
    }

    /// Writes `cp`, snapshot `n`, with the reserved space if the disk is
    /// full, and sets space aside again for next time; false (nothing
    /// written) when a later snapshot is on disk already.
    fn write_file(&self, n: u64, cp: &Checkpoint) -> io::Result<bool> {
        let mut io = self.checkpoint_io.lock().unwrap_or_else(|p| p.into_inner());
        if io.written >= n {
            return Ok(false);
        }
        let json = serde_json::to_vec(cp).map_err(io::Error::other)?;
        match crate::statefile::write_atomically(&self.checkpoint_path, &json) {
            Err(e) if e.kind() == io::ErrorKind::StorageFull && io.reserve_len > 0 => {
                // What the reserve is for: without a new checkpoint, no
                // segment written since the last one could be deleted.
                std::fs::remove_file(&self.reserve_path)
                    .map_err(|e| crate::journal::with_path(e, &self.reserve_path))?;
                io.reserve_len = 0;
                tracing::warn!(
                    "the disk holding {} is full; the space kept for the ingest checkpoint was used",
                    self.checkpoint_path.display()
                );
                crate::statefile::write_atomically(&self.checkpoint_path, &json)?;
            }
            other => other?,
        }
        io.written = n;
        let want = reserve_for(json.len());
        if io.reserve_len < want {
            match reserve(&self.reserve_path, want) {
                Ok(()) => io.reserve_len = want,
                Err(e) => tracing::debug!("cannot set space aside for the checkpoint yet: {e}"),
            }
        }
        Ok(true)
    }

    /// Journal entries before this position are no longer needed for
    /// recovery.
    pub fn retention_floor(&self) -> u64 {
        self.lock().last.seq
    }

    /// Events still being grouped.
    pub fn open_events(&self) -> usize {
        self.lock().grouper.open_events()
    }

    /// Counters of every input.
    pub fn snapshot(&self) -> Vec<InputSnapshot> {
        self.lock()
            .sources
            .iter()
            .skip(1)
            .map(|s| InputSnapshot::of(&s.name, s.connected, &s.counters))
            .collect()
    }
}

/// Replays journal entries from `from` on into `grouper` and the inputs'
/// high-water marks; returns how many there were.
fn replay(
    journal: &Journal,
    from: u64,
    grouper: &mut Grouper,
    sources: &mut [KnownInput],
    now: Instant,
) -> io::Result<u64> {
    let mut reader = journal.reader(from);
    let mut replayed = 0u64;
    loop {
        let outcome = reader.read(4 << 20, &mut |e| {
            let info = if e.is_control() {
                None
            } else {
                record::parse(e.text)
            };
            grouper.replay(&e, info.as_ref(), now);
            if let Some(s) = sources.get_mut(e.source as usize) {
                s.committed = s.committed.max(e.source_seq);
                s.placed = s.committed;
            }
            replayed += 1;
            Step::Next
        })?;
        match outcome {
            ReadOutcome::CaughtUp => return Ok(replayed),
            ReadOutcome::Entries(_) => {}
            ReadOutcome::Lost { from, to, reason } => tracing::warn!(
                from,
                to,
                ?reason,
                "ingest state: journal entries unreadable; their inputs' high-water marks may be low, so a resend could be stored twice"
            ),
        }
    }
}

/// The checkpoint of the journal as it ends now, with `grouper` the
/// grouper's state there.
fn checkpoint_of(journal: &Journal, grouper: GrouperState, sources: &[KnownInput]) -> Checkpoint {
    Checkpoint {
        journal: journal.id(),
        seq: journal.end(),
        grouper,
        // `committed` only counts what is in the journal.
        sources: sources
            .iter()
            .map(|s| InputCheckpoint {
                name: s.name.clone(),
                epoch: s.epoch,
                committed: s.committed,
                relayed: s.relayed,
            })
            .collect(),
    }
}

/// Bytes to keep for a checkpoint of `len` bytes: room for it twice over,
/// in 64 KiB steps.
fn reserve_for(len: usize) -> u64 {
    const STEP: u64 = 64 << 10;
    (len as u64 * 2).div_ceil(STEP).max(1) * STEP
}

/// Sets `len` bytes of disk aside in the file `path`.
fn reserve(path: &Path, len: u64) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| crate::journal::with_path(e, path))?;
    if let Err(e) = nix::fcntl::posix_fallocate(&f, 0, len as libc::off_t) {
        // Half a reserve would only be mistaken for a whole one.
        drop(f);
        let _ = std::fs::remove_file(path);
        return Err(crate::journal::with_path(e.into(), path));
    }
    f.sync_all().map_err(|e| crate::journal::with_path(e, path))
}

/// Counts `n` records of input `id` as lost and logs them (see
/// [`super::loss`]).
fn count_lost(st: &mut State, id: SourceId, n: u64, why: &'static str, now: Instant) {
    let Some(src) = st.sources.get_mut(id as usize) else {
        return;
    };
    stats::add(&src.counters.lost, n);
    let total = stats::get(&src.counters.lost);
    if let Some(loss) = src.loss.lost(n, why, total, now) {
        log_loss(&src.name, loss);
    }
}

/// Logs the loss lines due (all of them with `now_anyway`).
fn report_owed_loss(st: &mut State, now: Instant, now_anyway: bool) {
    for src in &mut st.sources {
        let total = stats::get(&src.counters.lost);
        if let Some(loss) = src.loss.flush(total, now, now_anyway) {
            log_loss(&src.name, loss);
        }
    }
}

fn log_loss(input: &str, loss: Loss) {
    tracing::error!(
        message_id = crate::log_ids::RECORD_LOSS,
        input,
        lost = loss.since_last,
        total = loss.total,
        "input {input}: {} records LOST, {} in all: {}",
        loss.since_last,
        loss.total,
        loss.why
    );
}

fn placeholder() -> KnownInput {
    KnownInput {
        name: String::new(),
        epoch: JournalId([0; 16]),
        placed: 0,
        committed: 0,
        connected: false,
        relayed: false,
        counters: Arc::default(),
        loss: LossLog::default(),
        loops: LossLog::default(),
    }
}

/// Record text never contains a newline: stock plugins read one record per
/// line. auditd replaces embedded newlines with spaces; so do we.
fn sanitize(text: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memchr(b'\n', text).is_none() {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(
            text.iter()
                .map(|&b| if b == b'\n' { b' ' } else { b })
                .collect(),
        )
    }
}

/// A [`JournalId`] in a checkpoint: its hex text; anything else makes the
/// checkpoint unreadable (and the state is rebuilt from the journal).
mod id_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::journal::JournalId;

    pub fn serialize<S: Serializer>(id: &JournalId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<JournalId, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Limits;

    /// A SYSCALL record: it opens an event that a later one closes (with
    /// `max_open = 1`), so batches carry close markers too.
    fn rec(serial: u64) -> Vec<u8> {
        format!(
            "type=SYSCALL msg=audit(1700000000.000:{serial}): arch=c000003e syscall=59 success=yes"
        )
        .into_bytes()
    }

    fn batch(
        serials: std::ops::RangeInclusive<u64>,
        texts: &mut Vec<Vec<u8>>,
    ) -> Vec<Incoming<'_>> {
        *texts = serials.clone().map(rec).collect();
        serials
            .zip(texts.iter())
            .map(|(s, text)| Incoming {
                source_seq: s,
                type_hint: None,
                text,
                origin: None,
            })
            .collect()
    }

    /// Every entry in the journal: (seq, event, source_seq, rtype, source,
    /// flags, text).
    type Stored = (u64, u64, u64, u32, u16, u16, Vec<u8>);

    fn stored(journal: &Journal) -> Vec<Stored> {
        let mut got = Vec::new();
        let mut reader = journal.reader(1);
        loop {
            let outcome = reader
                .read(1 << 20, &mut |e| {
                    got.push((
                        e.seq,
                        e.event,
                        e.source_seq,
                        e.rtype,
                        e.source,
                        e.flags,
                        e.text.to_vec(),
                    ));
                    Step::Next
                })
                .unwrap();
            match outcome {
                ReadOutcome::CaughtUp => return got,
                ReadOutcome::Entries(_) => {}
                lost @ ReadOutcome::Lost { .. } => panic!("{lost:?}"),
            }
        }
    }

    /// An ingest stage over a new journal in `dir` (1 MiB segments, one
    /// open event, a 1 MiB memory queue).
    fn open_in(dir: &Path) -> Ingest {
        let limits = Limits {
            segment_size: 1 << 20,
            max_size: 1 << 30,
            memory: 1 << 20,
        };
        let journal = Journal::open(&dir.join("journal"), limits).unwrap();
        Ingest::open(journal, dir, Duration::from_secs(600), 1, 1 << 20).unwrap()
    }

    /// Three batches (the third resending two records of the second), the
    /// journal unwritable from the second batch to a `tick` if `fail`.
    /// Returns what each submit answered and the journal's entries.
    fn run(fail: bool, pending_max: usize) -> (Vec<Submitted>, u64, Vec<Stored>) {
        let dir = tempfile::tempdir().unwrap();
        let (live, away) = (dir.path().join("journal"), dir.path().join("away"));
        // Every append after the first opens a new segment file, so an
        // append fails while the journal's directory is gone.
        let limits = Limits {
            segment_size: 1,
            max_size: 1 << 30,
            memory: 1 << 20,
        };
        let journal = Journal::open(&live, limits).unwrap();
        let ingest = Ingest::open(
            journal,
            dir.path(),
            Duration::from_secs(600),
            1,
            pending_max,
        )
        .unwrap();
        let (id, committed) = ingest.connect("in", [7; 16], false).unwrap();
        assert_eq!(committed, 0);
        let mut texts = Vec::new();
        let mut answers = vec![ingest.submit(id, &batch(1..=3, &mut texts), false)];
        if fail {
            std::fs::rename(&live, &away).unwrap();
        }
        answers.push(ingest.submit(id, &batch(4..=6, &mut texts), true));
        answers.push(ingest.submit(id, &batch(5..=8, &mut texts), false));
        if fail {
            std::fs::rename(&away, &live).unwrap();
        }
        ingest.tick(Instant::now()).unwrap();
        answers.push(ingest.submit(id, &batch(5..=8, &mut texts), false));
        let lost = stats::get(&ingest.counters(id).lost);
        (answers, lost, stored(ingest.journal()))
    }

    #[test]
    fn records_kept_in_memory_while_the_journal_fails_are_stored_in_order_once() {
        let (direct, lost, want) = run(false, 1 << 20);
        assert_eq!(lost, 0);
        assert!(direct.iter().all(|s| !s.pending));
        let texts: Vec<&[u8]> = want
            .iter()
            .filter(|e| e.5 & flags::CONTROL == 0)
            .map(|e| e.6.as_slice())
            .collect();
        let all: Vec<Vec<u8>> = (1..=8).map(rec).collect();
        assert_eq!(texts, all.iter().map(|t| t.as_slice()).collect::<Vec<_>>());
        assert!(want.iter().any(|e| e.5 & flags::CLOSE_MARKER != 0));

        let (answers, lost, got) = run(true, 1 << 20);
        assert_eq!(lost, 0);
        let seen: Vec<(u64, bool)> = answers.iter().map(|s| (s.committed, s.pending)).collect();
        // Stored; kept in memory (standard input); refused while blocked (the
        // input keeps it); stored after the journal came back.
        assert_eq!(seen, [(3, false), (3, true), (3, true), (8, false)]);
        assert_eq!(got, want, "the same journal as without the failure");
    }

    #[test]
    fn records_beyond_the_memory_queue_are_counted_lost() {
        let (answers, lost, got) = run(true, 1);
        assert_eq!(lost, 3, "records 4..=6 did not fit");
        assert_eq!(answers.last().map(|s| s.committed), Some(8));
        let serials: Vec<u64> = got
            .iter()
            .filter(|e| e.5 & flags::CONTROL == 0)
            .map(|e| e.2)
            .collect();
        assert_eq!(
            serials,
            [1, 2, 3, 7, 8],
            "nothing stored twice, the lost ones never"
        );
    }

    #[test]
    fn records_of_this_journal_coming_back_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let ingest = open_in(dir.path());
        let own = ingest.journal().id().0;
        let (id, _) = ingest.connect("remote", [7; 16], true).unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let seen = asked.clone();
        ingest.set_forwarders(Arc::new(move |input| {
            seen.lock().unwrap().push(input.to_string());
            vec!["remote".to_string()]
        }));
        let mut texts = Vec::new();
        let mut records = batch(1..=4, &mut texts);
        let other = Origin {
            journal: [9; 16],
            seq: 5,
        };
        let origins = [
            Some(Origin {
                journal: own,
                seq: 1,
            }),
            Some(other),
            None,
            Some(Origin {
                journal: own,
                seq: 2,
            }),
        ];
        for (r, o) in records.iter_mut().zip(origins) {
            r.origin = o;
        }
        let s = ingest.submit(id, &records, false);
        assert_eq!(s.committed, 4, "looped records are acknowledged too");
        let c = ingest.counters(id);
        assert_eq!(stats::get(&c.looped), 2);
        assert_eq!(stats::get(&c.records), 2);
        let kept: Vec<(u64, Option<Origin>)> = {
            let mut got = Vec::new();
            let mut reader = ingest.journal().reader(1);
            reader
                .read(1 << 20, &mut |e| {
                    if !e.is_control() {
                        got.push((e.source_seq, e.origin));
                    }
                    Step::Next
                })
                .unwrap();
            got
        };
        assert_eq!(
            kept,
            [(2, Some(other)), (3, None)],
            "other hosts' records pass"
        );
        assert_eq!(*asked.lock().unwrap(), ["remote"], "the warning named them");
        // Sent again after a reconnect: duplicates, not loops.
        let s = ingest.submit(id, &records, false);
        assert_eq!(s.committed, 4);
        assert_eq!(stats::get(&c.looped), 2);
    }

    #[test]
    fn a_checkpoint_is_written_without_the_state_lock_and_never_over_a_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let ingest = open_in(dir.path());
        let (id, _) = ingest.connect("remote", [7; 16], false).unwrap();
        let mut texts = Vec::new();
        ingest.submit(id, &batch(1..=2, &mut texts), false);
        let older = ingest.snapshot_locked(&mut ingest.lock()).unwrap();
        let mut texts = Vec::new();
        ingest.submit(id, &batch(3..=4, &mut texts), false);
        let newer = ingest.snapshot_locked(&mut ingest.lock()).unwrap();
        assert!(newer.1.seq > older.1.seq);
        let on_disk = || -> Checkpoint {
            serde_json::from_slice(&std::fs::read(dir.path().join("ingest.json")).unwrap()).unwrap()
        };
        {
            // While a checkpoint is being written, inputs are served.
            let _writing = ingest.checkpoint_io.lock().unwrap();
            let mut texts = Vec::new();
            let s = ingest.submit(id, &batch(5..=5, &mut texts), false);
            assert_eq!(s.committed, 5);
        }
        let newer_seq = newer.1.seq;
        ingest.write_snapshot(newer).unwrap();
        assert_eq!(on_disk().seq, newer_seq);
        assert_eq!(ingest.retention_floor(), newer_seq);
        // The older snapshot, written late, changes nothing.
        ingest.write_snapshot(older).unwrap();
        assert_eq!(on_disk().seq, newer_seq);
        assert_eq!(ingest.retention_floor(), newer_seq);
        // A checkpoint taken now is written over both.
        ingest.checkpoint().unwrap();
        assert!(on_disk().seq > newer_seq);
        assert_eq!(ingest.retention_floor(), on_disk().seq);
    }

    #[test]
    fn checkpoint_ids_are_hex_text_and_a_bad_one_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let open = || open_in(dir.path());
        // An epoch of zeros: a reader that turned bad digits into zeros
        // would take a damaged epoch for this one.
        let epoch = [0; 16];
        let ingest = open();
        let (id, _) = ingest.connect("in", epoch, true).unwrap();
        let mut texts = Vec::new();
        ingest.submit(id, &batch(1..=3, &mut texts), false);
        ingest.checkpoint().unwrap();
        let journal = ingest.journal().id().to_string();
        drop(ingest);
        let path = dir.path().join("ingest.json");
        let json = std::fs::read_to_string(&path).unwrap();
        let epoch_field = format!("\"epoch\":\"{}\"", "0".repeat(32));
        assert!(
            json.contains(&format!("\"journal\":\"{journal}\"")),
            "{json}"
        );
        assert!(json.contains(&epoch_field), "{json}");
        // Read back: the input's numbers still de-duplicate, and its
        // records are still known as relayed before it reconnects.
        let ingest = open();
        assert_eq!(ingest.input_origin(1), Some(("in".to_string(), true)));
        assert_eq!(ingest.input_origin(0), None);
        assert_eq!(ingest.connect("in", epoch, true).unwrap(), (1, 3));
        drop(ingest);
        // Damaged: the checkpoint is unreadable (the state is rebuilt from
        // the journal, which does not name inputs), not read as zeros.
        let damaged = format!("\"epoch\":\"zz{}\"", "0".repeat(30));
        std::fs::write(&path, json.replace(&epoch_field, &damaged)).unwrap();
        let ingest = open();
        assert_eq!(ingest.connect("in", epoch, false).unwrap(), (1, 0));
    }
}
