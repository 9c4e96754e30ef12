//! The journal: every record audisp accepts, in the order it accepted them.
//!
//! The journal is what lets audisp promise that no record is lost whatever a
//! plugin does and whatever happens to the dispatcher itself:
//!
//! * every input record is appended once, in checksummed entries
//!   ([`entry`]), to segment files on disk, and gets a dense sequence number
//!   (`seq`) that never changes, across restarts and crashes alike;
//! * the newest part of the journal also stays in memory as a ring of
//!   immutable [`Block`]s (the very bytes written to disk), so plugins that
//!   keep up are fed from memory without touching the disk. A block the
//!   ring drops is refilled by a later append once no reader holds it
//!   (`BlockPool`), so appending does not take fresh memory pages;
//! * each plugin is only a cursor into the journal ([`Reader`]). A slow or
//!   absent plugin simply falls behind the in-memory ring and is then fed from
//!   the segment files: that is the on-disk spool, and memory stays bounded by
//!   the ring whatever the plugins do;
//! * segments are deleted once every cursor has passed them
//!   ([`Journal::retain_from`]) or, as a last resort, when the journal exceeds
//!   its size limit ([`Journal::append`] reports what that costs).
//!
//! Durability is a policy of the caller: [`Journal::sync_upto`] makes
//! everything up to a sequence number durable with one `fdatasync` shared by
//! all callers waiting at that moment (group commit). Appending never waits
//! for the disk, not even at a segment change: the new segment's header and
//! name become durable with the next sync, which syncs the segments written
//! since the last one and then, after a segment change, the directory;
//! recovery removes the segments a crash left without their header (they
//! held nothing synced).

pub mod entry;
mod reader;
mod segment;
mod wakeup;

pub use crate::journal_id::JournalId;
pub use entry::{EntryRef, NewEntry, Origin};
pub use reader::{LostReason, ReadOutcome, Reader, Step};
pub use wakeup::{Deferred, HandOff, Wakeup, HANDOFF_BYTES};

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};

use segment::SegmentInfo;

/// A new journal's id: random.
fn generate_id() -> io::Result<JournalId> {
    let mut b = [0; 16];
    getrandom::fill(&mut b).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    Ok(JournalId(b))
}

/// Sizes that bound the journal.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Start a new segment file once the current one reaches this size.
    pub segment_size: u64,
    /// Delete the oldest segments, even unread ones, beyond this total.
    pub max_size: u64,
    /// Memory the newest blocks kept in memory may take (their buffers).
    pub memory: u64,
}

/// A run of entries appended together, immutable once published. The same
/// bytes are in the segment file.
#[derive(Debug)]
pub struct Block {
    first_seq: u64,
    bytes: Vec<u8>,
    offsets: Vec<u32>,
}

impl Block {
    /// Sequence number of the first entry.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Sequence number after the last entry.
    pub fn end_seq(&self) -> u64 {
        self.first_seq + self.offsets.len() as u64
    }

    /// The entry with sequence number `seq`, which must be in this block.
    fn entry(&self, seq: u64) -> EntryRef<'_> {
        let i = (seq - self.first_seq) as usize;
        let start = self.offsets[i] as usize;
        let end = self
            .offsets
            .get(i + 1)
            .map_or(self.bytes.len(), |&o| o as usize);
        entry::decode_unchecked(&self.bytes[start..end])
    }

    /// Memory the block takes, counted against [`Limits::memory`]: its
    /// buffers' capacity, which may exceed the entries' bytes (a buffer
    /// refilled with a smaller append, or allocated with room to spare).
    fn memory(&self) -> u64 {
        (self.bytes.capacity() + self.offsets.capacity() * std::mem::size_of::<u32>()) as u64
    }

    /// Bytes from the entry `seq` to the end of the block.
    fn bytes_from(&self, seq: u64) -> usize {
        self.bytes.len() - self.offsets[(seq - self.first_seq) as usize] as usize
    }
}

/// What an append did beyond storing the entries.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Sequence numbers given to the entries.
    pub seqs: std::ops::Range<u64>,
    /// When the size limit forced segments out before every reader had read
    /// them: the entries `[1 or older start, lost_before)` are gone.
    pub evicted_before: Option<u64>,
    /// Bytes the entries take in the journal (headers included).
    pub bytes: u64,
}

struct Writer {
    file: Arc<File>,
    size: u64,
    next_seq: u64,
    /// Older segments written since the last sync (first seq, file).
    unsynced: Vec<(u64, Arc<File>)>,
    /// A segment was created since the last sync: its name is durable only
    /// once the directory is synced.
    dir_unsynced: bool,
    /// Blocks the ring evicted that no reader held, kept to be filled again
    /// (see [`BlockPool`]).
    pool: BlockPool,
}

/// Buffers of blocks the ring let go, for the next appends to fill again.
///
/// Without it every append allocates a new buffer the size of its block
/// (~300 KiB for a full 256 KiB read of standard input), and the allocator
/// returns the memory of evicted ones to the kernel (blocks above its mmap
/// threshold are unmapped, trimmed heap is released): each append then took
/// fresh pages, which the kernel zeroes on the first touch, ~18,000 page
/// faults per million records in `benches/dispatch.sh`. A block is put here
/// only when the ring dropped it and no reader holds it any more
/// (`Arc::try_unwrap`), so no reader can ever see a block being refilled.
struct BlockPool {
    /// Newest last.
    spare: VecDeque<Block>,
    /// Most memory the spare blocks may take ([`Block::memory`]): an eighth
    /// of the in-memory ring's size, beside the ring.
    max_bytes: u64,
}

impl BlockPool {
    /// Blocks kept at most; an append evicts about one block, so two would
    /// do at a steady rate.
    const MAX_BLOCKS: usize = 4;

    /// An empty pool for a journal whose ring may take `memory` bytes.
    fn new(memory: u64) -> BlockPool {
        BlockPool {
            spare: VecDeque::new(),
            max_bytes: memory / 8,
        }
    }

    /// An empty block with room for `len` bytes: a spare one whose buffer is
    /// at least that large and at most twice as large, or a new one with an
    /// eighth more room than asked, so that the next appends of about the
    /// same size fit in it when it comes back.
    fn take(&mut self, len: usize, entries: usize) -> Block {
        let fits = |b: &Block| b.bytes.capacity() >= len && b.bytes.capacity() <= 2 * len;
        if let Some(i) = self.spare.iter().rposition(fits) {
            if let Some(mut b) = self.spare.remove(i) {
                b.bytes.clear();
                b.offsets.clear();
                b.offsets.reserve(entries);
                return b;
            }
        }
        Block {
            first_seq: 0,
            bytes: Vec::with_capacity(len + len / 8),
            offsets: Vec::with_capacity(entries + entries / 8),
        }
    }

    /// Keeps `block` for a later append, dropping the oldest spares beyond
    /// `MAX_BLOCKS` or `max_bytes`.
    fn put(&mut self, block: Block) {
        self.spare.push_back(block);
        while self.spare.len() > Self::MAX_BLOCKS
            || self.spare.iter().map(Block::memory).sum::<u64>() > self.max_bytes
        {
            self.spare.pop_front();
        }
    }
}

struct Shared {
    dir: PathBuf,
    id: JournalId,
    limits: Limits,
    writer: Mutex<Writer>,
    segments: RwLock<Vec<SegmentInfo>>,
    ring: RwLock<Ring>,
    /// Sequence number after the last published entry.
    end: AtomicU64,
    /// Oldest sequence number still stored.
    start: AtomicU64,
    synced: Mutex<u64>,
    wakeups: Mutex<Vec<Weak<Wakeup>>>,
}

#[derive(Default)]
struct Ring {
    blocks: VecDeque<Arc<Block>>,
    bytes: u64,
}

/// The journal: one writer, any number of [`Reader`]s. Cheap to clone.
#[derive(Clone)]
pub struct Journal {
    shared: Arc<Shared>,
}

impl Journal {
    /// Opens the journal in `dir`, creating it if needed, and recovers from
    /// whatever a crash left: a torn entry at the end is cut off.
    pub fn open(dir: &Path, limits: Limits) -> io::Result<Journal> {
        crate::statefile::private_dir(dir)?;
        let found = segment::scan_dir(dir)?;
        let (id, segments, writer) = match found {
            Some(found) => {
                let file = segment::open_append(&found.last_path)?;
                let size = found.last_size;
                (
                    found.id,
                    found.segments,
                    Writer {
                        file: Arc::new(file),
                        size,
                        next_seq: found.next_seq,
                        unsynced: Vec::new(),
                        dir_unsynced: false,
                        pool: BlockPool::new(limits.memory),
                    },
                )
            }
            None => {
                let id = generate_id()?;
                let (info, file) = segment::create_synced(dir, id, 1)?;
                let size = info.bytes;
                (
                    id,
                    vec![info],
                    Writer {
                        file: Arc::new(file),
                        size,
                        next_seq: 1,
                        unsynced: Vec::new(),
                        dir_unsynced: false,
                        pool: BlockPool::new(limits.memory),
                    },
                )
            }
        };
        let start = segments.first().map_or(1, |s| s.first_seq);
        let end = writer.next_seq;
        Ok(Journal {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                id,
                limits,
                writer: Mutex::new(writer),
                segments: RwLock::new(segments),
                ring: RwLock::new(Ring::default()),
                end: AtomicU64::new(end),
                start: AtomicU64::new(start),
                synced: Mutex::new(end),
                wakeups: Mutex::new(Vec::new()),
            }),
        })
    }

    /// This journal's identity.
    pub fn id(&self) -> JournalId {
        self.shared.id
    }

    /// Sequence number the next appended entry will get.
    pub fn end(&self) -> u64 {
        self.shared.end.load(Ordering::Acquire)
    }

    /// Oldest sequence number still stored.
    pub fn start(&self) -> u64 {
        self.shared.start.load(Ordering::Acquire)
    }

    /// Directory holding the segment files.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Bytes stored on disk.
    pub fn disk_bytes(&self) -> u64 {
        read_lock(&self.shared.segments)
            .iter()
            .map(|s| s.bytes)
            .sum()
    }

    /// First sequence number still held in memory (the end when none is).
    pub fn memory_start(&self) -> u64 {
        self.ring_start().unwrap_or_else(|| self.end())
    }

    /// The oldest position a reader may be at and still have at most
    /// `max_bytes` to read (at segment precision).
    pub fn position_within(&self, max_bytes: u64) -> u64 {
        let segments = read_lock(&self.shared.segments);
        let mut total = 0;
        let mut pos = self.end();
        for s in segments.iter().rev() {
            total += s.bytes;
            if total > max_bytes {
                break;
            }
            pos = s.first_seq;
        }
        pos
    }

    /// Bytes between `seq` and the end of the journal, at segment precision:
    /// how much a reader at `seq` still has to read.
    pub fn bytes_behind(&self, seq: u64) -> u64 {
        let segments = read_lock(&self.shared.segments);
        let i = segments
            .partition_point(|s| s.first_seq <= seq)
            .saturating_sub(1);
        segments[i..].iter().map(|s| s.bytes).sum()
    }

    /// Appends entries and publishes them to readers. Returns the sequence
    /// numbers they got. On a write error nothing is appended.
    pub fn append(&self, entries: &[NewEntry<'_>]) -> io::Result<Appended> {
        let appended = self.append_quietly(entries)?;
        if !appended.seqs.is_empty() {
            self.wake_readers(None);
        }
        Ok(appended)
    }

    /// [`Journal::append`], but a small batch's waiting readers that lent
    /// their owners' work are not woken: the caller does their work with
    /// [`Deferred::run`] once it holds no lock of its own (see [`HandOff`]).
    pub fn append_deferring(&self, entries: &[NewEntry<'_>]) -> io::Result<(Appended, Deferred)> {
        let appended = self.append_quietly(entries)?;
        let mut deferred = Deferred::default();
        if !appended.seqs.is_empty() {
            let small = appended.bytes <= HANDOFF_BYTES;
            self.wake_readers(small.then_some(&mut deferred));
        }
        Ok((appended, deferred))
    }

    /// Appends entries without waking anyone.
    fn append_quietly(&self, entries: &[NewEntry<'_>]) -> io::Result<Appended> {
        if entries.is_empty() {
            let end = self.end();
            return Ok(Appended {
                seqs: end..end,
                evicted_before: None,
                bytes: 0,
            });
        }
        let mut writer = lock(&self.shared.writer);
        let first_seq = writer.next_seq;
        let len = entries.iter().map(|e| e.stored_len()).sum();
        let mut block = writer.pool.take(len, entries.len());
        block.first_seq = first_seq;
        for (i, e) in entries.iter().enumerate() {
            block.offsets.push(block.bytes.len() as u32);
            entry::encode(&mut block.bytes, first_seq + i as u64, e);
        }
        let bytes = &block.bytes;
        let mut evicted_before = None;
        if writer.size > segment::HEADER_LEN as u64
            && writer.size + bytes.len() as u64 > self.shared.limits.segment_size
        {
            evicted_before = self.rotate(&mut writer)?;
        }
        if let Err(e) = write_all_at_end(&writer.file, bytes) {
            // Leave the segment as it was, so that it stays a clean sequence
            // of whole entries; the caller keeps the records and retries.
            let _ = writer.file.set_len(writer.size);
            writer.pool.put(block);
            return Err(e);
        }
        writer.size += bytes.len() as u64;
        let end_seq = first_seq + entries.len() as u64;
        writer.next_seq = end_seq;
        {
            let mut segments = write_lock(&self.shared.segments);
            if let Some(last) = segments.last_mut() {
                last.bytes = writer.size;
            }
        }
        let written = bytes.len() as u64;
        let block = Arc::new(block);
        {
            let mut ring = write_lock(&self.shared.ring);
            ring.bytes += block.memory();
            ring.blocks.push_back(block);
            while ring.bytes > self.shared.limits.memory && ring.blocks.len() > 1 {
                if let Some(old) = ring.blocks.pop_front() {
                    ring.bytes -= old.memory();
                    // A block a reader still holds is freed when the last
                    // reader drops it; only one nobody can see is refilled.
                    if let Ok(old) = Arc::try_unwrap(old) {
                        writer.pool.put(old);
                    }
                }
            }
        }
        self.shared.end.store(end_seq, Ordering::Release);
        drop(writer);
        Ok(Appended {
            seqs: first_seq..end_seq,
            evicted_before,
            bytes: written,
        })
    }

    fn rotate(&self, writer: &mut MutexGuard<'_, Writer>) -> io::Result<Option<u64>> {
        let (info, file) = segment::create(&self.shared.dir, self.shared.id, writer.next_seq)?;
        writer.size = info.bytes;
        // The old segment, the new one's header and its name (the directory)
        // are synced by the next `sync_upto`, not here: the appending thread
        // never waits for the disk (a file's and a directory's fsync took
        // 1–9 ms each on the benchmarks' disk, the input stalled meanwhile).
        writer.dir_unsynced = true;
        let old = std::mem::replace(&mut writer.file, Arc::new(file));
        let old_first = read_lock(&self.shared.segments)
            .last()
            .map_or(0, |s| s.first_seq);
        writer.unsynced.push((old_first, old));
        let mut segments = write_lock(&self.shared.segments);
        segments.push(info);
        // Enforce the size limit, oldest segments first, never the new one.
        let mut evicted = None;
        let mut total: u64 = segments.iter().map(|s| s.bytes).sum();
        while total > self.shared.limits.max_size && segments.len() > 1 {
            let old = segments.remove(0);
            total -= old.bytes;
            segment::remove(&old)?;
            evicted = Some(segments[0].first_seq);
        }
        if let Some(start) = evicted {
            self.shared.start.store(start, Ordering::Release);
        }
        Ok(evicted)
    }

    /// Deletes the segments that hold only entries before `seq`: every reader
    /// that matters is past them.
    ///
    /// The files are deleted, and closed, outside the locks the appending
    /// thread takes: freeing a segment's pages and blocks when its last
    /// descriptor closes takes milliseconds (tens on a busy machine), and an
    /// input waiting that long makes its source wait (auditd, a handed-over
    /// stream whose input takes it back).
    pub fn retain_from(&self, seq: u64) -> io::Result<()> {
        let (removed, start) = {
            let mut segments = write_lock(&self.shared.segments);
            let mut removed = Vec::new();
            while segments.len() > 1 && segments[1].first_seq <= seq {
                removed.push(segments.remove(0));
                self.shared
                    .start
                    .store(segments[0].first_seq, Ordering::Release);
            }
            (removed, segments[0].first_seq)
        };
        if removed.is_empty() {
            return Ok(());
        }
        // A deleted segment is never synced: its pages are dropped, not
        // written back. Its descriptor is closed below, after the lock.
        let closed: Vec<(u64, Arc<File>)> = {
            let mut writer = lock(&self.shared.writer);
            let (keep, closed) = std::mem::take(&mut writer.unsynced)
                .into_iter()
                .partition(|(first, _)| *first >= start);
            writer.unsynced = keep;
            closed
        };
        let mut result = Ok(());
        for old in &removed {
            if let Err(e) = segment::remove(old) {
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        drop(closed);
        result
    }

    /// Moves the end forward to `seq` (when it is before it), leaving the
    /// numbers in between unused: an input whose records up to `seq - 1`
    /// were stored by someone else (its stream handed over) numbers on from
    /// there. Only for a journal whose entries are all delivered: the
    /// segments before `seq` are deleted.
    pub fn skip_to(&self, seq: u64) -> io::Result<()> {
        {
            let mut writer = lock(&self.shared.writer);
            if seq <= writer.next_seq {
                return Ok(());
            }
            writer.next_seq = seq;
            self.rotate(&mut writer)?;
            self.shared.end.store(seq, Ordering::Release);
        }
        self.retain_from(seq)?;
        self.sync_upto(seq)
    }

    /// Deletes every segment in `dir`, so that the next [`Journal::open`]
    /// starts a new journal (a new id: an input's new epoch).
    pub fn remove_all(dir: &Path) -> io::Result<()> {
        segment::remove_all(dir)
    }

    /// Makes every entry before `seq` durable. Callers that arrive while a
    /// sync is running share the next one (group commit).
    pub fn sync_upto(&self, seq: u64) -> io::Result<()> {
        let mut synced = lock(&self.shared.synced);
        if *synced >= seq {
            return Ok(());
        }
        let (older, file, end, dir) = {
            let mut writer = lock(&self.shared.writer);
            (
                std::mem::take(&mut writer.unsynced),
                writer.file.clone(),
                writer.next_seq,
                std::mem::take(&mut writer.dir_unsynced),
            )
        };
        let keep_for_next = |older: &[(u64, Arc<File>)]| {
            let mut writer = lock(&self.shared.writer);
            writer.unsynced.extend(older.iter().cloned());
            writer.dir_unsynced |= dir;
        };
        for (i, (_, f)) in older.iter().enumerate() {
            if let Err(e) = f.sync_data() {
                // Keep what is not synced yet for the next attempt.
                keep_for_next(&older[i..]);
                return Err(e);
            }
        }
        let rest = file.sync_data().and_then(|()| {
            if dir {
                segment::sync_dir(&self.shared.dir)
            } else {
                Ok(())
            }
        });
        if let Err(e) = rest {
            keep_for_next(&[]);
            return Err(e);
        }
        *synced = (*synced).max(end);
        // Older segments deleted meanwhile are closed for good here, which
        // frees their pages: not while callers wait for `synced`.
        drop(synced);
        drop(older);
        Ok(())
    }

    /// Sequence number before which everything is durable.
    pub fn synced(&self) -> u64 {
        *lock(&self.shared.synced)
    }

    /// A new reader positioned at `next`.
    pub fn reader(&self, next: u64) -> Reader {
        Reader::new(self.clone(), next)
    }

    /// Registers a wake-up that fires (when armed) after each append.
    pub fn wakeup(&self) -> io::Result<Arc<Wakeup>> {
        let w = Arc::new(Wakeup::new()?);
        let mut list = lock(&self.shared.wakeups);
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&w));
        Ok(w)
    }

    /// Wakes the readers' owners that wait for entries, or hands them to
    /// `deferred` when they lent their work (see [`wakeup`]).
    fn wake_readers(&self, mut deferred: Option<&mut Deferred>) {
        let list = lock(&self.shared.wakeups);
        for w in list.iter().filter_map(Weak::upgrade) {
            w.wake_if_armed(deferred.as_deref_mut());
        }
    }

    /// Blocks of the in-memory ring from the one holding `seq`, up to about
    /// `max_bytes`. Empty when `seq` is not in memory (older, or not yet
    /// written).
    fn ring_blocks(&self, seq: u64, max_bytes: usize) -> Vec<Arc<Block>> {
        let ring = read_lock(&self.shared.ring);
        let blocks = &ring.blocks;
        let Some(front) = blocks.front() else {
            return Vec::new();
        };
        if seq < front.first_seq {
            return Vec::new();
        }
        let i = blocks.partition_point(|b| b.end_seq() <= seq);
        let mut out = Vec::new();
        let mut bytes = 0;
        for b in blocks.range(i..) {
            bytes += if out.is_empty() {
                b.bytes_from(seq)
            } else {
                b.bytes.len()
            };
            out.push(b.clone());
            if bytes >= max_bytes {
                break;
            }
        }
        out
    }

    /// First sequence number held in memory, if any.
    fn ring_start(&self) -> Option<u64> {
        read_lock(&self.shared.ring)
            .blocks
            .front()
            .map(|b| b.first_seq)
    }

    fn segment_for(&self, seq: u64) -> Option<SegmentInfo> {
        let segments = read_lock(&self.shared.segments);
        let i = segments.partition_point(|s| s.first_seq <= seq);
        if i == 0 {
            return None;
        }
        Some(segments[i - 1].clone())
    }

    fn next_segment(&self, after_first_seq: u64) -> Option<SegmentInfo> {
        let segments = read_lock(&self.shared.segments);
        segments
            .iter()
            .find(|s| s.first_seq > after_first_seq)
            .cloned()
    }
}

fn write_all_at_end(file: &File, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f: &File = file;
    f.write_all(bytes)
}

pub(crate) fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (every
    // critical section either completes or changes nothing), so poisoning is
    // not a reason to stop dispatching.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
